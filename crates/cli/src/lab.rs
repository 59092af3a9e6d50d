//! `canopy lab up|down|status|exec`: a data center of network namespaces on this machine,
//! left running between commands (see the `lab` crate for what it is made of).

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use ::lab::{Lab, PoolMode, Spec, State, STATE_ROOT};
use clap::{Args, Subcommand, ValueEnum};

const LAB_ABOUT: &str = "\
Build a data center out of network namespaces on this machine, and run Canopy in it.

`canopy lab up` makes, under one per-run prefix (cnl + 4 hex digits):
  - the manager, on a Unix socket in a namespace with no links at all;
  - a fabric router namespace routing each host's and edge's /72 locator (and, for an
    anycast pool, the pool's anycast locator as an ECMP route that hashes the substrate
    addresses only, like the seed's load balancer);
  - host namespaces running `canopy agent`, whose TAPs are the `eth0` of VM namespaces;
    each VM gets its address by DHCP (busybox udhcpc) from its agent;
  - edge namespaces running `canopy edge`, and an \"internet\" namespace with an HTTP server,
    an echo server and iperf3 on 203.0.113.10, routing the pool's public range
    (198.51.100.0/28) back over the edges.
Nothing is linked to the root namespace or to a physical interface. State, logs and the
manager's database are in /run/canopy-lab/<prefix>/. One lab runs at a time.

Needs root, iproute2, busybox, iperf3 and procps (sysctl).

Examples:
  sudo canopy lab up --hosts 2 --vms-per-host 2 --edges 2
  sudo canopy lab exec vm1 -- ping -c 3 10.0.0.3
  sudo canopy lab exec vm1 -- curl -s http://203.0.113.10/
  sudo canopy lab status
  sudo canopy lab down";

/// Build, inspect and remove the lab: namespaces, agents, edges and an internet.
#[derive(Debug, Args)]
#[command(about = "Build, inspect and remove a data center of network namespaces", long_about = LAB_ABOUT)]
pub struct LabCmd {
    #[command(subcommand)]
    cmd: LabVerb,
}

#[derive(Debug, Subcommand)]
enum LabVerb {
    /// Build the lab and leave it running; prints its VMs, hosts, edges and public range.
    ///
    /// Refuses when a lab made by `lab up` still runs. Progress goes to stderr, the
    /// summary to stdout. On failure or Ctrl-C everything made so far is removed.
    Up(UpArgs),
    /// Stop the lab's processes (by pid: SIGTERM, then SIGKILL), delete its namespaces and
    /// its state directory. Idempotent; also cleans up after a crash.
    Down(PrefixArg),
    /// Show the lab: namespaces, whether each daemon runs, each VM's address.
    Status(PrefixArg),
    /// Run a command inside a VM's namespace; its exit code is passed through.
    ///
    /// Example: canopy lab exec vm1 -- ping -c 3 203.0.113.10
    Exec(ExecArgs),
    /// (internal) The internet namespace's HTTP and echo servers.
    #[command(hide = true)]
    Serve(ServeArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Mode {
    /// Agents pick the edge of each flow (consistent hash).
    Direct,
    /// Agents send to the pool's anycast locator; the fabric's ECMP picks.
    Anycast,
}

#[derive(Debug, Args)]
struct UpArgs {
    /// Hosts, each running an agent (1..=50)
    #[arg(long, default_value_t = 2)]
    hosts: usize,
    /// VMs on each host, named vm1, vm2, ... (one tenant, network 10.0.0.0/16)
    #[arg(long, default_value_t = 2)]
    vms_per_host: usize,
    /// Edges in the internet pool (0 for none: no internet)
    #[arg(long, default_value_t = 2)]
    edges: usize,
    /// How agents choose an edge
    #[arg(long, value_enum, default_value_t = Mode::Direct)]
    pool_mode: Mode,
    /// Packet workers per agent (0: one per core)
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    workers: u16,
}

#[derive(Debug, Args)]
struct PrefixArg {
    /// The lab's prefix (cnlXXXX), when several are around (e.g. left by crashed tests)
    #[arg(long)]
    prefix: Option<String>,
}

#[derive(Debug, Args)]
struct ExecArgs {
    /// The VM (see `canopy lab status`)
    vm: String,
    /// The lab's prefix, when several are around
    #[arg(long)]
    prefix: Option<String>,
    /// The command and its arguments, after `--`
    #[arg(last = true, required = true)]
    command: Vec<String>,
}

#[derive(Debug, Args)]
struct ServeArgs {
    #[arg(long)]
    http: std::net::SocketAddr,
    #[arg(long)]
    echo: std::net::SocketAddr,
    #[arg(long)]
    log: PathBuf,
}

pub fn run(cmd: LabCmd) -> ExitCode {
    let r = match cmd.cmd {
        LabVerb::Up(a) => up(a),
        LabVerb::Down(a) => down(a),
        LabVerb::Status(a) => status(a),
        LabVerb::Exec(a) => return exec(a),
        LabVerb::Serve(a) => {
            ::lab::servers::serve(a.http, a.echo, &a.log).map_err(|e| format!("serve: {e}"))
        }
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("canopy lab: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Fails unless we are root.
pub fn need_root(what: &str) -> Result<(), String> {
    if !::lab::is_root() {
        return Err(format!(
            "{what} needs root (it creates network namespaces and TAP devices): run it with sudo"
        ));
    }
    Ok(())
}

/// On Ctrl-C or SIGTERM: ask the lab being built to stop (its guard removes it); a second
/// signal exits at once (`canopy lab down` then cleans up).
pub fn install_interrupt_handler() {
    use tokio::signal::unix::{signal, SignalKind};
    let Ok(rt) = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    else {
        return;
    };
    // Registered here, before any namespace exists; one stream per signal, made once, so
    // that each delivery is seen exactly once.
    let streams = {
        let _guard = rt.enter();
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    let (Ok(mut int), Ok(mut term)) = streams else {
        return;
    };
    std::thread::spawn(move || {
        rt.block_on(async {
            for n in 0.. {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                if n == 0 {
                    eprintln!("\ninterrupted: removing the lab (again to exit at once; `canopy lab down` cleans up then)");
                    ::lab::interrupt();
                } else {
                    std::process::exit(130);
                }
            }
        });
    });
}

fn progress(line: &str) {
    eprintln!("  {line}");
}

fn up(a: UpArgs) -> Result<(), String> {
    need_root("canopy lab up")?;
    let canopy = std::env::current_exe().map_err(|e| format!("finding the canopy binary: {e}"))?;
    let mode = match a.pool_mode {
        Mode::Direct => PoolMode::Direct,
        Mode::Anycast => PoolMode::Anycast,
    };
    let mut spec = Spec::simple(a.hosts, a.vms_per_host, a.edges, mode, &canopy);
    spec.detached = true;
    spec.workers = usize::from(a.workers);
    install_interrupt_handler();
    eprintln!(
        "building a lab: {} host(s), {} VM(s) per host, {} edge(s), pool mode {}",
        a.hosts,
        a.vms_per_host,
        a.edges,
        mode.as_str()
    );
    let lab = Lab::up(spec, &mut progress).map_err(|e| e.to_string())?;
    if ::lab::interrupted() {
        lab.shutdown().map_err(|e| e.to_string())?;
        return Err("interrupted".into());
    }
    let st = lab.detach().map_err(|e| e.to_string())?;
    print!("{}", summary(&st));
    Ok(())
}

/// The lab at a glance: VMs, hosts, edges, the internet.
pub fn summary(st: &State) -> String {
    let mut s = format!(
        "lab {} is up (state in {})\n\n",
        st.prefix,
        st.dir.display()
    );
    s += &format!(
        "{:<10} {:<8} {:<6} {:<18} {}\n",
        "VM", "TENANT", "HOST", "ADDRESS", "MAC"
    );
    for v in &st.vms {
        s += &format!(
            "{:<10} {:<8} {:<6} {:<18} {}\n",
            v.name,
            v.tenant,
            v.host,
            v.address.as_deref().unwrap_or("(no lease)"),
            v.mac
        );
    }
    s += "\nhosts:\n";
    for h in &st.hosts {
        s += &format!("  {:<4} locator {}\n", h.name, h.locator);
    }
    if let Some(p) = &st.pool {
        s += &format!(
            "pool {} ({}), public {}{}\n",
            p.name,
            p.mode.as_str(),
            p.public_ranges.join(", "),
            p.anycast_locator
                .as_ref()
                .map(|a| format!(", anycast locator {a}"))
                .unwrap_or_default()
        );
        for e in &st.edges {
            s += &format!("  {:<4} locator {}\n", e.name, e.locator);
        }
    }
    s += &format!(
        "internet: HTTP http://{}/, echo {}, iperf3 {}:{}\n",
        ::lab::http_server(),
        ::lab::echo_server(),
        ::lab::SERVER_ADDR,
        ::lab::IPERF_PORT
    );
    if let Some(v) = st.vms.first() {
        s += &format!(
            "\ntry: canopy lab exec {} -- curl -s http://{}/\n",
            v.name,
            ::lab::SERVER_ADDR
        );
    }
    s
}

fn down(a: PrefixArg) -> Result<(), String> {
    need_root("canopy lab down")?;
    let removed =
        ::lab::down(Path::new(STATE_ROOT), a.prefix.as_deref()).map_err(|e| e.to_string())?;
    if removed.is_empty() {
        println!("no lab to remove");
    } else {
        println!("removed lab {}", removed.join(", "));
    }
    Ok(())
}

/// The one lab meant: by prefix, else the one `lab up` left running.
fn pick(prefix: Option<&str>) -> Result<State, String> {
    let root = Path::new(STATE_ROOT);
    if let Some(p) = prefix {
        return State::load(&root.join(p)).map_err(|e| e.to_string());
    }
    let labs: Vec<State> = ::lab::find_labs(root)
        .into_iter()
        .filter(|s| s.detached)
        .collect();
    match labs.len() {
        0 => Err("no lab is running (`canopy lab up` builds one)".into()),
        1 => Ok(labs.into_iter().next().expect("one")),
        _ => Err(format!(
            "several labs: {}; choose one with --prefix",
            labs.iter()
                .map(|s| s.prefix.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        )),
    }
}

fn status(a: PrefixArg) -> Result<(), String> {
    need_root("canopy lab status")?;
    let st = pick(a.prefix.as_deref())?;
    println!("lab {} (state in {})", st.prefix, st.dir.display());
    let nss = ::lab::namespaces_of(&st.prefix);
    println!("namespaces: {} ({})", nss.len(), nss.join(" "));
    println!("\n{:<12} {:<8} STATE", "PROCESS", "PID");
    for p in &st.procs {
        let alive = if p.alive() { "running" } else { "NOT RUNNING" };
        println!("{:<12} {:<8} {alive}", p.name, p.pid);
    }
    println!(
        "\n{:<10} {:<8} {:<6} {:<16} eth0",
        "VM", "TENANT", "HOST", "VIP"
    );
    for v in &st.vms {
        let addr = ::lab::ns_run(
            &v.netns,
            "ip",
            &["-4", "-o", "addr", "show", "dev", "eth0"],
            Duration::from_secs(5),
        )
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| {
            String::from_utf8_lossy(&o.stdout)
                .split_whitespace()
                .skip_while(|w| *w != "inet")
                .nth(1)
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "(no address)".into());
        println!(
            "{:<10} {:<8} {:<6} {:<16} {addr}",
            v.name, v.tenant, v.host, v.vip
        );
    }
    Ok(())
}

fn exec(a: ExecArgs) -> ExitCode {
    let r = (|| {
        need_root("canopy lab exec")?;
        let st = pick(a.prefix.as_deref())?;
        let vm = st.vm(&a.vm).ok_or_else(|| {
            format!(
                "no VM {:?} in lab {} (VMs: {})",
                a.vm,
                st.prefix,
                st.vms
                    .iter()
                    .map(|v| v.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        })?;
        std::process::Command::new("ip")
            .args(["netns", "exec", &vm.netns])
            .args(&a.command)
            .status()
            .map_err(|e| format!("running {:?} in {}: {e}", a.command, vm.netns))
    })();
    match r {
        // As a shell reports it: the exit code, or 128 + the signal that ended it.
        Ok(status) => match (status.code(), status.signal()) {
            (Some(c), _) => ExitCode::from(c.clamp(0, 255) as u8),
            (None, Some(sig)) => ExitCode::from((128 + sig).clamp(0, 255) as u8),
            (None, None) => ExitCode::FAILURE,
        },
        Err(e) => {
            eprintln!("canopy lab: error: {e}");
            ExitCode::FAILURE
        }
    }
}
