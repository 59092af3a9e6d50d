//! `canopy agent` and `canopy edge`: flags, runtime and signals around the daemons of
//! `node::agentd` and `node::edged`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

/// Run a host's agent: the VMs' ports (TAP devices), the substrate device (TUN) and the
/// agent pipeline between them, configured by the manager's watch stream.
///
/// The agent connects with its host credential (from `canopy host create`), waits for the
/// manager's snapshot, creates or re-attaches the TUN --substrate-dev, routes its locator
/// /72 into it, and makes one TAP per node of the host: with --vm-netns and that namespace
/// present, inside it as `eth0` with the node's MAC; otherwise in the agent's namespace as
/// `cn<12 hex digits of the node id>`, moved into the VM's namespace within a second of
/// its appearing (a node created before its VM). Devices persist across restarts, so VMs keep their
/// interfaces and their flows only pause; a node's TAP goes when the node is deleted.
/// The NAT table (which public port each flow to the internet has) is saved in
/// --state-dir every 2 s and on SIGTERM, and restored at start, so NATed flows survive too.
/// If the manager goes away, forwarding goes on and the agent reconnects in the background.
///
/// Example: canopy agent --manager unix:/run/canopy/manager.sock --token $CRED --host-id host-1a2b3c4d5e6f --vm-netns /run/netns/vm-{name} --metrics 127.0.0.1:9450
#[derive(Debug, Clone, Args)]
pub struct AgentArgs {
    /// The manager: http://HOST:PORT or unix:/path/to/manager.sock
    #[arg(long, value_name = "URL", env = "CANOPY_MANAGER")]
    pub manager: String,
    /// The host's credential (cnpa_..., returned once by `canopy host create`)
    #[arg(
        long,
        value_name = "TOKEN",
        env = "CANOPY_TOKEN",
        hide_env_values = true
    )]
    pub token: String,
    /// The host's id (host-...)
    #[arg(long, value_name = "ID")]
    pub host_id: String,
    /// Name of the substrate TUN device (created if absent)
    #[arg(long, value_name = "NAME", default_value = "sub0")]
    pub substrate_dev: String,
    /// Path of a VM's network namespace, `{name}` standing for the node's name (e.g.
    /// /run/netns/lab-{name}): the node's TAP is made there as eth0
    #[arg(long, value_name = "TEMPLATE")]
    pub vm_netns: Option<String>,
    /// Serve Prometheus metrics at http://ADDR/metrics
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// MTU of the substrate; VMs get 20 bytes less by DHCP
    #[arg(long, value_name = "BYTES", default_value_t = 1500, value_parser = clap::value_parser!(u16).range(1300..=65000))]
    pub substrate_mtu: u16,
    /// Write this file (with the agent's pid) once the first configuration is applied
    /// and the devices are up
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Directory for what outlives the process: the NAT table (nat.json), saved every 2 s
    /// and on SIGTERM and restored at start, so NATed flows survive a restart
    /// [default: /run/canopy/agent-<host id>]
    #[arg(long, value_name = "DIR")]
    pub state_dir: Option<PathBuf>,
    /// Packet workers: threads that each read their own queue of the substrate device and
    /// their share of the VM ports, keeping those nodes' connections and NAT flows
    /// (0: one per core)
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub workers: u16,
    /// Pin the workers, one per CPU, to these CPUs (a list such as 2-5, 2,4,6 or 2-9:2;
    /// --workers then defaults to their number). Unpinned by default: pin on hosts that
    /// keep cores for the data path, not where the VMs' vCPUs share them
    #[arg(long, value_name = "LIST", value_parser = parse_cpus)]
    pub cpus: Option<CpuList>,
}

/// The CPUs of `--cpus`, in the order given.
#[derive(Debug, Clone)]
pub struct CpuList(Vec<usize>);

fn parse_cpus(s: &str) -> Result<CpuList, String> {
    node::cpus::parse_list(s).map(CpuList)
}

/// Run an edge of a pool: the stateless NAT / elastic-IP pipeline between the substrate
/// (TUN --substrate-dev, the edge's locator /72 routed into it) and the outside (TUN
/// --outside-dev, the pool's public ranges and elastic IPs routed into it).
///
/// The edge connects with its credential (from `canopy edge create`), learns from the
/// manager who owns which port block and elastic IP, and reports its load every 2 s.
///
/// Example: canopy edge --manager unix:/run/canopy/manager.sock --token $CRED --edge-id edge-1a2b3c4d5e6f --metrics 127.0.0.1:9451
#[derive(Debug, Clone, Args)]
pub struct EdgeArgs {
    /// The manager: http://HOST:PORT or unix:/path/to/manager.sock
    #[arg(long, value_name = "URL", env = "CANOPY_MANAGER")]
    pub manager: String,
    /// The edge's credential (cnpe_..., returned once by `canopy edge create`)
    #[arg(
        long,
        value_name = "TOKEN",
        env = "CANOPY_TOKEN",
        hide_env_values = true
    )]
    pub token: String,
    /// The edge's id (edge-...)
    #[arg(long, value_name = "ID")]
    pub edge_id: String,
    /// Name of the substrate TUN device (created if absent)
    #[arg(long, value_name = "NAME", default_value = "sub0")]
    pub substrate_dev: String,
    /// Name of the outside (IPv4) TUN device (created if absent)
    #[arg(long, value_name = "NAME", default_value = "out0")]
    pub outside_dev: String,
    /// Serve Prometheus metrics at http://ADDR/metrics
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<SocketAddr>,
    /// Capacity the load is reported against, in Mbit/s
    #[arg(long, value_name = "N", default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..))]
    pub capacity_mbps: u64,
    /// MTU of the substrate (the outside device gets 20 bytes less)
    #[arg(long, value_name = "BYTES", default_value_t = 1500, value_parser = clap::value_parser!(u16).range(1300..=65000))]
    pub substrate_mtu: u16,
    /// Write this file (with the edge's pid) once the first configuration is applied
    #[arg(long, value_name = "PATH")]
    pub ready_file: Option<PathBuf>,
    /// Packet workers: threads that each read their own queue of both devices. The edge
    /// keeps no per-flow state, so any worker carries any packet (0: one per core)
    #[arg(long, value_name = "N", default_value_t = 0, value_parser = clap::value_parser!(u16).range(0..=64))]
    pub workers: u16,
}

/// Resolves on SIGTERM or Ctrl-C.
async fn signalled() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}

fn run_daemon<F>(what: &str, fut: F) -> ExitCode
where
    F: std::future::Future<Output = Result<(), node::agentd::DaemonError>>,
{
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("canopy {what}: error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let r = rt.block_on(fut);
    // Requests still in flight to the manager are abandoned: exit promptly.
    rt.shutdown_timeout(Duration::from_millis(500));
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("canopy {what}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

pub fn agent(a: AgentArgs) -> ExitCode {
    let state_dir = a
        .state_dir
        .clone()
        .unwrap_or_else(|| node::agentd::default_state_dir(&a.host_id));
    let opts = node::agentd::AgentOptions {
        manager: a.manager,
        token: a.token,
        host_id: a.host_id,
        substrate_dev: a.substrate_dev,
        vm_netns: a.vm_netns,
        metrics: a.metrics,
        substrate_mtu: a.substrate_mtu,
        ready_file: a.ready_file,
        state_dir,
        workers: usize::from(a.workers),
        cpus: a.cpus.map(|c| c.0),
    };
    run_daemon("agent", node::agentd::run_agent(opts, signalled()))
}

pub fn edge(a: EdgeArgs) -> ExitCode {
    let opts = node::edged::EdgeOptions {
        manager: a.manager,
        token: a.token,
        edge_id: a.edge_id,
        substrate_dev: a.substrate_dev,
        outside_dev: a.outside_dev,
        metrics: a.metrics,
        capacity_mbps: a.capacity_mbps,
        substrate_mtu: a.substrate_mtu,
        ready_file: a.ready_file,
        workers: usize::from(a.workers),
    };
    run_daemon("edge", node::edged::run_edge(opts, signalled()))
}

/// `canopy edge --edge-id ...`: the edge daemon. (`canopy edge create|list|show|...` are
/// the API verbs on edges; the daemon is told apart by its required `--edge-id`.)
#[derive(Debug, clap::Parser)]
#[command(
    name = "canopy edge",
    about = "Run an edge of a pool (see `canopy edge --edge-id ID --help`)"
)]
struct EdgeDaemonCli {
    /// More log output on stderr (-v debug, -vv trace); RUST_LOG overrides
    #[arg(short, long, action = clap::ArgAction::Count)]
    verbose: u8,
    #[command(flatten)]
    args: EdgeArgs,
}

/// Runs the edge daemon if the command line asks for it (`canopy edge` with
/// `--edge-id`); `None` otherwise. `init_logging` gets the verbosity.
pub fn edge_from_args(init_logging: fn(u8)) -> Option<ExitCode> {
    let argv: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let is_edge = argv.get(1).is_some_and(|a| a == "edge");
    let daemon = argv.iter().skip(2).any(|a| {
        let a = a.to_string_lossy();
        a == "--edge-id" || a.starts_with("--edge-id=")
    });
    if !(is_edge && daemon) {
        return None;
    }
    let mut rest = vec![std::ffi::OsString::from("canopy edge")];
    rest.extend(argv.into_iter().skip(2));
    let cli = <EdgeDaemonCli as clap::Parser>::parse_from(rest);
    init_logging(cli.verbose + 1);
    Some(edge(cli.args))
}

#[cfg(test)]
mod tests {
    use super::EdgeDaemonCli;
    use clap::CommandFactory;

    #[test]
    fn edge_daemon_cli_is_consistent() {
        EdgeDaemonCli::command().debug_assert();
    }
}
