//! `canopy demo`: the seed's story told with real packets, in one command.
//!
//! Two tenants with the same 10.0.0.0/16 on two hosts and a pool of three edges: VM-to-VM
//! ping across hosts; a tenant that cannot reach the other's VMs, checked with a capture;
//! HTTP from every VM to the internet, with the public address and port block each used
//! (from the server's log and the manager's port blocks); the spread of many flows over the
//! edges in `direct` mode and then, in a second lab, in `anycast` mode; an edge removed
//! while flows keep running. Everything is removed at the end, on failure and on Ctrl-C.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use ::lab::flows::{self, Flows};
use ::lab::{Capture, Lab, PoolMode, Spec, TenantSpec, VmSpec};
use clap::Args;

/// Show Canopy at work: two tenants, two hosts, a pool of edges, real packets (root).
///
/// Builds a lab (see `canopy lab --help`) with two tenants that both use 10.0.0.0/16, shows
/// what happens and removes it. Takes about a minute. Needs root, iproute2, busybox,
/// iperf3, procps and tcpdump.
#[derive(Debug, Args)]
pub struct DemoArgs {
    /// Flows per VM when measuring how flows spread over the edges
    #[arg(long, default_value_t = 20)]
    flows_per_vm: usize,
}

pub fn run(a: DemoArgs) -> ExitCode {
    match demo(&a) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("canopy demo: error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res<T> = Result<T, String>;

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

fn step(n: usize, title: &str) {
    println!("\n== {n}. {title}");
}

fn spec(mode: PoolMode, canopy: &std::path::Path) -> Spec {
    let vm = |name: &str, host: usize, vip: [u8; 4]| VmSpec {
        name: name.into(),
        host,
        vip: Some(Ipv4Addr::from(vip)),
    };
    let mut spec = Spec::simple(2, 0, 3, mode, canopy);
    spec.tenants = vec![
        TenantSpec {
            name: "acme".into(),
            cidr: "10.0.0.0/16".into(),
            subnet: "10.0.0.0/24".into(),
            internet: true,
            vms: vec![
                vm("a1", 0, [10, 0, 0, 10]),
                vm("a2", 1, [10, 0, 0, 20]),
                vm("a3", 1, [10, 0, 0, 30]),
            ],
        },
        TenantSpec {
            name: "globex".into(),
            cidr: "10.0.0.0/16".into(),
            subnet: "10.0.0.0/24".into(),
            internet: true,
            vms: vec![
                vm("b1", 0, [10, 0, 0, 10]),
                vm("b2", 1, [10, 0, 0, 20]),
                vm("b3", 0, [10, 0, 0, 40]),
            ],
        },
    ];
    spec
}

fn demo(a: &DemoArgs) -> Res<()> {
    crate::lab::need_root("canopy demo")?;
    let tcpdump = std::process::Command::new("tcpdump")
        .arg("--version")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status();
    if tcpdump.is_err() {
        return Err("the demo counts flows per edge with tcpdump: apt-get install tcpdump".into());
    }
    crate::lab::install_interrupt_handler();
    let canopy = std::env::current_exe().map_err(|e| format!("finding the canopy binary: {e}"))?;
    let t0 = Instant::now();
    println!("Canopy demo: two tenants on the same 10.0.0.0/16, two hosts, a pool of three edges.");
    step(1, "building the lab (pool mode: direct)");
    let mut lab =
        Lab::up(spec(PoolMode::Direct, &canopy), &mut |l| println!("   {l}")).map_err(s)?;
    print!("{}", indent(&crate::lab::summary(&lab.state)));

    let mut failed = Vec::new();
    step(2, "VM to VM across hosts (acme a1 on h1 -> a2 on h2)");
    note(&mut failed, "VM to VM ping", vm_ping(&lab))?;
    step(
        3,
        "isolation: globex has the same addresses, acme cannot see them",
    );
    note(&mut failed, "isolation", isolation(&lab))?;
    step(
        4,
        "HTTP from every VM to the internet (203.0.113.10) through the pool",
    );
    note(&mut failed, "HTTP to the internet", http_table(&lab))?;
    step(5, "how flows spread over the edges, direct mode");
    let direct = spread(&mut lab, a.flows_per_vm);
    step(6, "an edge removed while flows run");
    note(
        &mut failed,
        "edge removal",
        edge_removal(&mut lab, a.flows_per_vm),
    )?;
    lab.shutdown().map_err(s)?;

    step(
        7,
        "the same flows with the pool in anycast mode (a second lab)",
    );
    let mut lab = Lab::up(spec(PoolMode::Anycast, &canopy), &mut |l| {
        println!("   {l}")
    })
    .map_err(s)?;
    let anycast = spread(&mut lab, a.flows_per_vm);
    lab.shutdown().map_err(s)?;

    println!("\n== summary");
    for (mode, r) in [("direct ", &direct), ("anycast", &anycast)] {
        match r {
            Ok(m) => println!("   {mode}: flows per edge: {}", spread_line(m)),
            Err(e) => println!("   {mode}: FAILED: {e}"),
        }
    }
    if direct.is_err() {
        failed.push("spread, direct mode");
    }
    if anycast.is_err() {
        failed.push("spread, anycast mode");
    }
    println!(
        "   In direct mode each agent spreads its flows over the edges itself; in anycast mode the\n   fabric's ECMP hashes only substrate addresses, so all flows of a VM to one server take one edge."
    );
    println!(
        "\nall lab namespaces and processes removed; {:.0} s in all",
        t0.elapsed().as_secs_f64()
    );
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("these parts failed: {}", failed.join(", ")))
    }
}

/// Prints a part's failure and remembers it; the demo goes on with the next part.
fn note(failed: &mut Vec<&'static str>, part: &'static str, r: Res<()>) -> Res<()> {
    if ::lab::interrupted() {
        return Err("interrupted".into());
    }
    if let Err(e) = r {
        println!("   FAILED: {e}");
        failed.push(part);
    }
    Ok(())
}

fn vm_ping(lab: &Lab) -> Res<()> {
    let out = lab
        .vm_exec(
            "a1",
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "2", "10.0.0.20"],
            Duration::from_secs(15),
        )
        .map_err(s)?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    println!("   {}", ping_summary(&text));
    if !out.status.success() {
        return Err(format!("a1 could not ping a2:\n{text}"));
    }
    Ok(())
}

fn indent(text: &str) -> String {
    text.lines().map(|l| format!("   {l}\n")).collect()
}

fn ping_summary(text: &str) -> String {
    let received = text
        .lines()
        .find(|l| l.contains("received"))
        .unwrap_or("")
        .trim();
    let rtt = text
        .lines()
        .find(|l| l.contains("rtt"))
        .unwrap_or("")
        .trim();
    format!("{received}; {rtt}")
}

fn isolation(lab: &Lab) -> Res<()> {
    let b2 = lab.state.vm("b2").ok_or("no b2")?.netns.clone();
    let a2 = lab.state.vm("a2").ok_or("no a2")?.netns.clone();
    let dir = lab.state.dir.clone();
    let cap_b = Capture::start(&b2, "eth0", "icmp", &dir.join("cap-b2.txt")).map_err(s)?;
    let cap_a = Capture::start(&a2, "eth0", "icmp", &dir.join("cap-a2.txt")).map_err(s)?;
    let out = lab
        .vm_exec(
            "a1",
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "2", "10.0.0.20"],
            Duration::from_secs(15),
        )
        .map_err(s)?;
    let got_b = cap_b.stop();
    let got_a = cap_a.stop();
    println!(
        "   acme a1 pings 10.0.0.20: {}; capture on acme a2: {} ICMP packets, on globex b2 (also 10.0.0.20): {}",
        if out.status.success() { "answered" } else { "NOT answered" },
        got_a.len(),
        got_b.len()
    );
    if !got_b.is_empty() {
        return Err(format!("globex b2 saw acme's packets: {got_b:?}"));
    }
    let out = lab
        .vm_exec(
            "a1",
            "ping",
            &["-c", "2", "-i", "0.2", "-W", "1", "10.0.0.40"],
            Duration::from_secs(15),
        )
        .map_err(s)?;
    println!(
        "   acme a1 pings 10.0.0.40 (only globex b3 has it): {}",
        if out.status.success() {
            "ANSWERED (wrong)"
        } else {
            "no answer, as it should be"
        }
    );
    if out.status.success() {
        return Err("acme reached globex's 10.0.0.40".into());
    }
    Ok(())
}

fn http_table(lab: &Lab) -> Res<()> {
    println!(
        "   {:<4} {:<7} {:<11} {:<24} PORT BLOCK (manager)",
        "VM", "TENANT", "VIP", "SERVER SAW"
    );
    for v in lab.state.vms.clone() {
        let answer =
            flows::http_get(&v.netns, ::lab::http_server(), &format!("/{}", v.name)).map_err(s)?;
        let seen = answer
            .lines()
            .find_map(|l| l.strip_prefix("you are "))
            .map(|r| r.replace(" port ", ":"))
            .ok_or_else(|| format!("{}: unexpected answer {answer:?}", v.name))?;
        let blocks = lab
            .api()
            .get(&format!("/v1/nodes/{}/port-blocks", v.id))
            .map_err(s)?;
        let block = blocks
            .as_array()
            .and_then(|b| b.first())
            .map(|b| {
                format!(
                    "{} ports {}-{}",
                    b["address"].as_str().unwrap_or("?"),
                    b["port_first"],
                    b["port_last"]
                )
            })
            .unwrap_or_else(|| "(none)".into());
        println!(
            "   {:<4} {:<7} {:<11} {:<24} {block}",
            v.name, v.tenant, v.vip, seen
        );
    }
    Ok(())
}

/// Starts flows from every VM, counts their SYNs on each edge's link to the internet.
fn spread(lab: &mut Lab, per_vm: usize) -> Res<BTreeMap<String, usize>> {
    let inet = lab.state.internet_ns.clone();
    let dir = lab.state.dir.clone();
    let mut caps = Vec::new();
    for e in lab.state.edges.clone() {
        let filter = format!(
            "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn and dst port {}",
            ::lab::ECHO_PORT
        );
        let c = Capture::start(
            &inet,
            &e.inet_link,
            &filter,
            &dir.join(format!("syn-{}.txt", e.name)),
        )
        .map_err(s)?;
        caps.push((e.name.clone(), c));
    }
    let nss: Vec<String> = lab.state.vms.iter().map(|v| v.netns.clone()).collect();
    let f = Flows::start(
        &nss,
        per_vm,
        ::lab::echo_server(),
        Duration::from_millis(100),
    );
    std::thread::sleep(Duration::from_secs(2));
    let results = f.stop();
    let mut per_edge = BTreeMap::new();
    for (name, c) in caps {
        per_edge.insert(name, c.stop().len());
    }
    println!("   {}", flows::summarize(&results));
    println!(
        "   flows per edge (SYNs on each edge's link to the internet): {}",
        spread_line(&per_edge)
    );
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    if failed > 0 {
        let first = results
            .iter()
            .find_map(|r| r.error.clone())
            .unwrap_or_default();
        return Err(format!(
            "{failed} of {} flows failed (first: {first})",
            results.len()
        ));
    }
    Ok(per_edge)
}

fn spread_line(m: &BTreeMap<String, usize>) -> String {
    m.iter()
        .map(|(e, n)| format!("{e} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn edge_removal(lab: &mut Lab, per_vm: usize) -> Res<()> {
    let nss: Vec<String> = lab.state.vms.iter().map(|v| v.netns.clone()).collect();
    let f = Flows::start(
        &nss,
        per_vm,
        ::lab::echo_server(),
        Duration::from_millis(100),
    );
    println!(
        "   {} flows running; removing edge e1 (manager, routers, daemon)",
        nss.len() * per_vm
    );
    std::thread::sleep(Duration::from_secs(2));
    let r = lab.remove_edge("e1");
    std::thread::sleep(Duration::from_secs(5));
    let results = f.stop();
    r.map_err(s)?;
    println!("   {}", flows::summarize(&results));
    let failed: Vec<_> = results.iter().filter(|r| r.error.is_some()).collect();
    if let Some(f) = failed.first() {
        return Err(format!(
            "{} flows failed, first in {}: {}",
            failed.len(),
            f.netns,
            f.error.as_deref().unwrap_or("")
        ));
    }
    Ok(())
}
