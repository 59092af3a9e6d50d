//! End to end on a whole lab (root): the real `canopy manager`, `canopy agent` and
//! `canopy edge` processes in network namespaces, unmodified clients in the VMs (busybox
//! udhcpc and arping, iputils ping, iperf3, tcpdump), and the internet namespace's servers.
//!
//! One lab serves every check of `lab_end_to_end` (building one takes seconds): two hosts,
//! two tenants on the same 10.0.0.0/16, a pool of two edges in direct mode; `lab_anycast`
//! builds the same with the pool in anycast mode. Each check runs on
//! its own (a failure is reported and the next check still runs); the test fails if any
//! did. The lab is removed by its guard, also on panic.
//!
//! Checks, in order: DHCP lease; ping (gateway, same host, across hosts); iperf3 TCP and
//! UDP; ARP for an unknown address; TTL expiry at the gateway; tenant isolation (captures);
//! HTTP to the internet with the public address and port block; ping to the internet
//! through NAT; path MTU; a spoofed
//! substrate packet; an elastic IP behind a security group; a network ACL denying egress;
//! security groups between VMs in both directions; a network ACL denying ingress; 200 long-lived
//! flows while an edge is added, one drained and one killed; an agent restart under
//! VM-to-VM flows; two peered networks and an unpeered one (VMs added to the running lab);
//! the manager killed. In anycast mode: flows through the pool, all of one VM's on one
//! edge (the fabric hashes substrate addresses only); ping to the internet.
//!
//! Without root it prints `SKIPPED`; with `CI` set, a missing tool fails it.

mod e2e_lab_common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use e2e_lab_common::{metric, ping3, ready, run_checks, sh, spec, text, Check, T};
use lab::flows::{self, EchoServer, Flows};
use lab::{Capture, Lab, PoolMode};

/// DHCP (done by the lab with busybox udhcpc): the lease is the node's address, /24, the
/// subnet's gateway, MTU 1480 (substrate 1500 - 20), and eth0 is configured so.
fn dhcp_lease(lab: &mut Lab) {
    for v in lab.state.vms.clone() {
        assert_eq!(
            v.address.as_deref(),
            Some(format!("{}/24", v.vip).as_str()),
            "{}",
            v.name
        );
        let (_, link) = sh(lab, &v.name, "ip", &["-o", "link", "show", "dev", "eth0"]);
        assert!(link.contains("mtu 1480"), "{}: {link}", v.name);
        assert!(link.contains(&v.mac), "{}: MAC {} in {link}", v.name, v.mac);
        let (_, route) = sh(lab, &v.name, "ip", &["-4", "route", "show", "default"]);
        assert!(route.contains("via 10.0.0.1"), "{}: {route}", v.name);
    }
    println!(
        "  {} leases with router 10.0.0.1 and MTU 1480",
        lab.state.vms.len()
    );
}

fn ping_vms(lab: &mut Lab) {
    ping3(lab, "a1", "10.0.0.1"); // the gateway the agent emulates
                                  // Same host, another worker: each echo and each reply is handed over once.
    let h1 = lab.state.hosts[0].netns.clone();
    let handed = |dir: &str| {
        metric(
            &h1,
            &format!("canopy_agent_handoffs_total{{direction=\"{dir}\"}}"),
        )
    };
    assert_eq!(metric(&h1, "canopy_agent_workers"), 3);
    let before = handed("in");
    ping3(lab, "a1", "10.0.0.11");
    std::thread::sleep(Duration::from_millis(300)); // the counters are copied on tick
    let after = handed("in");
    assert!(after >= before + 6, "handed over: {before} -> {after}");
    assert_eq!(handed("refused"), 0);
    println!(
        "  a1 -> a2 (same host, two workers): {} packets handed over",
        after - before
    );
    ping3(lab, "a1", "10.0.0.20"); // across hosts
    ping3(lab, "a3", "10.0.0.10");
    ping3(lab, "b4", "10.0.0.10"); // the other tenant, same addresses, its own VMs
}

/// iperf3 between VMs: `server_vm` serves once, `client_vm` sends for 2 s; Gbit/s.
fn iperf(lab: &Lab, client_vm: &str, server_vm: &str, server: &str, udp: bool) -> f64 {
    let ns = lab.state.vm(server_vm).unwrap().netns.clone();
    let mut srv = std::process::Command::new("ip")
        .args(["netns", "exec", &ns, "iperf3", "-s", "-1", "-B", server])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("iperf3 server");
    std::thread::sleep(Duration::from_millis(500));
    let mut args = vec!["-c", server, "-t", "2", "-J"];
    if udp {
        args.extend(["-u", "-b", "20M", "-l", "1200"]);
    }
    let o = lab.vm_exec(client_vm, "iperf3", &args, T).expect("iperf3");
    let _ = srv.kill();
    let _ = srv.wait();
    let v: serde_json::Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("iperf3 {client_vm} -> {server}: {e}: {}", text(&o)));
    assert!(
        o.status.success(),
        "iperf3 {client_vm} -> {server}: {}",
        text(&o)
    );
    let end = &v["end"];
    if udp {
        let s = &end["sum"];
        let lost = s["lost_percent"].as_f64().unwrap_or(100.0);
        let bps = s["bits_per_second"].as_f64().unwrap_or(0.0);
        println!(
            "  iperf3 UDP {client_vm} -> {server_vm}: {:.0} Mbit/s, {lost:.2}% lost",
            bps / 1e6
        );
        assert!(lost < 5.0, "UDP loss {lost}%");
        bps / 1e9
    } else {
        let bps = end["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0);
        let retr = end["sum_sent"]["retransmits"].as_u64().unwrap_or(0);
        println!(
            "  iperf3 TCP {client_vm} -> {server_vm}: {:.2} Gbit/s, {retr} retransmits",
            bps / 1e9
        );
        assert!(bps > 0.0, "no TCP throughput");
        bps / 1e9
    }
}

fn tcp_udp(lab: &mut Lab) {
    iperf(lab, "a1", "a2", "10.0.0.11", false);
    iperf(lab, "a1", "a3", "10.0.0.20", false);
    iperf(lab, "a3", "a1", "10.0.0.10", true);
}

fn arp_unknown(lab: &mut Lab) {
    let (ok, log) = sh(
        lab,
        "a1",
        "busybox",
        &["arping", "-c", "2", "-w", "3", "-I", "eth0", "10.0.0.99"],
    );
    assert!(
        !ok && log.contains("Received 0 response"),
        "arping 10.0.0.99: {log}"
    );
    let (ok, log) = sh(
        lab,
        "a1",
        "busybox",
        &["arping", "-c", "1", "-w", "3", "-I", "eth0", "10.0.0.20"],
    );
    assert!(ok, "arping 10.0.0.20 (a3, on the other host): {log}");
    println!("  arping 10.0.0.99: no answer; 10.0.0.20: answered");
}

fn ttl_expiry(lab: &mut Lab) {
    let (_, log) = sh(
        lab,
        "a1",
        "ping",
        &["-c", "1", "-t", "1", "-W", "2", "203.0.113.10"],
    );
    assert!(
        log.contains("From 10.0.0.1") && log.contains("Time to live exceeded"),
        "ping -t 1: {log}"
    );
    println!("  ping -t 1 203.0.113.10: time exceeded from 10.0.0.1");
}

/// t1's a1 pings 10.0.0.20 (a3) while captures run on both VMs that have that address:
/// a3 sees the echo requests, t2's b3 sees nothing. 10.0.0.40 exists only in t2.
fn isolation(lab: &mut Lab) {
    let dir = lab.state.dir.clone();
    let a3 = lab.state.vm("a3").unwrap().netns.clone();
    let b3 = lab.state.vm("b3").unwrap().netns.clone();
    let ca = Capture::start(&a3, "eth0", "icmp", &dir.join("iso-a3.txt")).unwrap();
    let cb = Capture::start(&b3, "eth0", "icmp or arp", &dir.join("iso-b3.txt")).unwrap();
    ping3(lab, "a1", "10.0.0.20");
    let (ok, log) = sh(
        lab,
        "a1",
        "ping",
        &["-c", "2", "-i", "0.2", "-W", "1", "10.0.0.40"],
    );
    let got_a = ca.stop();
    let got_b = cb.stop();
    assert!(!ok, "t1 reached t2's 10.0.0.40: {log}");
    assert!(
        got_a.len() >= 6,
        "a3 saw {} ICMP packets: {got_a:?}",
        got_a.len()
    );
    assert!(got_b.is_empty(), "t2's b3 saw t1's packets: {got_b:?}");
    println!(
        "  a1 -> 10.0.0.20: a3 captured {} ICMP packets, t2's b3 captured 0; 10.0.0.40 (t2 only) unreachable",
        got_a.len()
    );
}

/// The pool's public range and each node's port block, from the manager.
fn blocks(lab: &Lab, vm: &str) -> Vec<(Ipv4Addr, u16, u16)> {
    let id = lab.state.vm(vm).unwrap().id.clone();
    let v = lab
        .api()
        .get(&format!("/v1/nodes/{id}/port-blocks"))
        .unwrap();
    v.as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["address"].as_str().unwrap().parse().unwrap(),
                b["port_first"].as_u64().unwrap() as u16,
                b["port_last"].as_u64().unwrap() as u16,
            )
        })
        .collect()
}

fn in_public_range(ip: IpAddr) -> bool {
    matches!(ip, IpAddr::V4(a) if a.octets()[..3] == [198, 51, 100] && a.octets()[3] < 16)
}

fn http_internet(lab: &mut Lab) {
    for v in lab.state.vms.clone() {
        let answer = flows::http_get(&v.netns, lab::http_server(), "/").expect("HTTP GET");
        let seen = answer
            .lines()
            .find_map(|l| l.strip_prefix("you are "))
            .unwrap_or_else(|| panic!("{}: answer {answer:?}", v.name));
        let (ip, port) = seen.split_once(" port ").unwrap();
        let ip: Ipv4Addr = ip.parse().unwrap();
        let port: u16 = port.trim().parse().unwrap();
        assert!(in_public_range(IpAddr::V4(ip)), "{}: seen as {ip}", v.name);
        let b = blocks(lab, &v.name);
        assert!(
            b.iter()
                .any(|&(a, lo, hi)| a == ip && (lo..=hi).contains(&port)),
            "{}: seen as {ip}:{port}, outside its port blocks {b:?}",
            v.name
        );
        println!(
            "  {} ({}): seen as {ip}:{port}, block {b:?}",
            v.name, v.tenant
        );
    }
}

/// ICMP echo to the internet through the pool's NAT: the agent gives the echo identifier a
/// port of the node's block on the way out and takes it back on the reply.
fn ping_internet(lab: &mut Lab) {
    let h1 = lab.state.hosts[0].netns.clone();
    let before = metric(&h1, "canopy_agent_drops_total{reason=\"nat_no_flow\"}");
    let (ok, log) = sh(
        lab,
        "a1",
        "ping",
        &["-c", "3", "-i", "0.3", "-W", "2", "203.0.113.10"],
    );
    let after = metric(&h1, "canopy_agent_drops_total{reason=\"nat_no_flow\"}");
    assert!(
        ok && log.contains("3 received"),
        "ping 203.0.113.10 (agent nat_no_flow drops {before} -> {after}): {log}"
    );
    println!("  a1: ping 203.0.113.10 through NAT: 3/3");
}

/// 200 long-lived flows from the six VMs; an edge added, one drained, one killed with
/// SIGKILL (and withdrawn by the routers): none may fail or pause longer than the bound.
fn flows_through_changes(lab: &mut Lab) {
    const BOUND: Duration = Duration::from_secs(10);
    let nss: Vec<String> = lab.state.vms.iter().map(|v| v.netns.clone()).collect();
    let per = 200usize.div_ceil(nss.len());
    let f = Flows::start(&nss, per, lab::echo_server(), Duration::from_millis(100));
    std::thread::sleep(Duration::from_secs(2));
    let added = lab.add_edge().expect("add an edge");
    println!("  added edge {added}");
    std::thread::sleep(Duration::from_secs(3));
    lab.set_edge_state("e1", "draining").expect("drain e1");
    println!("  e1 draining");
    std::thread::sleep(Duration::from_secs(3));
    lab.signal("edge-e2", lab::SIGKILL).expect("kill -9 e2");
    lab.withdraw_edge("e2").expect("withdraw e2");
    println!("  e2 killed (SIGKILL) and withdrawn from the routers");
    std::thread::sleep(Duration::from_secs(8));
    let results = f.stop();
    println!("  {}", flows::summarize(&results));
    let failed: Vec<_> = results.iter().filter(|r| r.error.is_some()).collect();
    assert!(
        failed.is_empty(),
        "{} flows failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    for r in &results {
        let p = r.public.expect("public address");
        assert!(in_public_range(p.ip()), "flow seen from {p}");
        assert!(
            r.max_gap < BOUND,
            "a flow from {} paused {:?}",
            r.netns,
            r.max_gap
        );
    }
    let log = lab::servers::parse_log(&lab.access_log());
    assert!(log.iter().filter(|(k, _)| k == "echo").count() >= results.len());
    // Each edge runs the lab's 3 workers; the kernel spreads the flows over their queues
    // (the edge keeps no per-flow state, so any worker may carry any packet): on the edge
    // added under load, which saw none of the other edges' history, all 3 carried some.
    let ns = &lab.state.edge(&added).unwrap().netns;
    assert_eq!(metric(ns, "canopy_edge_workers"), 3);
    let per_worker: Vec<u64> = (0..3)
        .map(|i| {
            metric(
                ns,
                &format!("canopy_edge_worker_packets_total{{worker=\"{i}\"}}"),
            )
        })
        .collect();
    println!("  {added}: packets per worker {per_worker:?}");
    assert!(per_worker.iter().all(|&n| n > 0), "{per_worker:?}");
}

/// Path MTU: with its MTU raised to 1500, a VM's 1500-byte DF ping gets "fragmentation
/// needed, mtu 1480" from the gateway; at 1480 a DF ping crosses hosts, and TCP (DF) moves
/// data both ways between a VM and the internet.
fn pmtu(lab: &mut Lab) {
    let (ok, log) = sh(
        lab,
        "a2",
        "ip",
        &["link", "set", "dev", "eth0", "mtu", "1500"],
    );
    assert!(ok, "{log}");
    let (_, big) = sh(
        lab,
        "a2",
        "ping",
        &[
            "-c",
            "2",
            "-i",
            "0.3",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1472",
            "10.0.0.20",
        ],
    );
    sh(
        lab,
        "a2",
        "ip",
        &["link", "set", "dev", "eth0", "mtu", "1480"],
    );
    assert!(
        big.contains("mtu = 1480") || big.contains("mtu=1480"),
        "1500-byte DF ping: {big}"
    );
    let (ok_vm, vm) = sh(
        lab,
        "a2",
        "ping",
        &[
            "-c",
            "2",
            "-i",
            "0.3",
            "-W",
            "2",
            "-M",
            "do",
            "-s",
            "1452",
            "10.0.0.20",
        ],
    );
    assert!(ok_vm, "1480-byte DF ping to a3: {vm}");
    for reverse in [false, true] {
        let mut args = vec!["-c", "203.0.113.10", "-t", "2", "-J"];
        if reverse {
            args.push("-R");
        }
        let o = lab.vm_exec("a2", "iperf3", &args, T).expect("iperf3");
        assert!(
            o.status.success(),
            "iperf3 to the internet (reverse {reverse}): {}",
            text(&o)
        );
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).expect("iperf3 JSON");
        let bps = v["end"]["sum_received"]["bits_per_second"]
            .as_f64()
            .unwrap_or(0.0);
        assert!(bps > 1e6, "iperf3 to the internet: {bps} bit/s");
        println!(
            "  iperf3 TCP a2 {} internet through the pool: {:.2} Gbit/s",
            if reverse { "<-" } else { "->" },
            bps / 1e9
        );
    }
    println!(
        "  1500 bytes DF: fragmentation needed (mtu 1480) from the gateway; 1480 bytes DF: through"
    );
}

/// The agent of h1 is restarted (SIGTERM, then started again) under 30 flows from its VMs
/// to an echo server on a3 (h2): they pause, none resets.
fn agent_restart(lab: &mut Lab) {
    let a3 = lab.state.vm("a3").unwrap().netns.clone();
    let server = EchoServer::start(&a3, "10.0.0.20:7".parse().unwrap()).expect("echo server on a3");
    let nss: Vec<String> = ["a1", "a2"]
        .iter()
        .map(|v| lab.state.vm(v).unwrap().netns.clone())
        .collect();
    let f = Flows::start(
        &nss,
        15,
        "10.0.0.20:7".parse().unwrap(),
        Duration::from_millis(100),
    );
    std::thread::sleep(Duration::from_secs(1));
    lab.restart_agent("h1").expect("restart the agent of h1");
    std::thread::sleep(Duration::from_secs(4));
    let results = f.stop();
    server.stop();
    println!("  agent h1 restarted: {}", flows::summarize(&results));
    let failed: Vec<_> = results.iter().filter(|r| r.error.is_some()).collect();
    assert!(
        failed.is_empty(),
        "{} flows failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        results.iter().all(|r| r.round_trips > 10),
        "flows stalled: {results:?}"
    );
}

/// Flows from h1's VMs to the internet (through the pool's NAT) while h1's agent is
/// stopped by `signal` and started again: they pause, none resets or stalls. The NAT
/// table, which only the agent holds, comes back from its state directory: saved on
/// SIGTERM, and every 2 s, which is what is left after a SIGKILL (the flows are older).
fn agent_restart_internet(lab: &mut Lab, signal: i32) {
    let nss: Vec<String> = ["a1", "a2"]
        .iter()
        .map(|v| lab.state.vm(v).unwrap().netns.clone())
        .collect();
    let f = Flows::start(&nss, 10, lab::echo_server(), Duration::from_millis(100));
    // Longer than the agent's save interval (2 s), for the SIGKILL case.
    std::thread::sleep(Duration::from_secs(3));
    // The agent counts the flows it sent to each edge, labelled with the edges' ids.
    let h1 = lab.state.hosts[0].netns.clone();
    let text =
        flows::http_get(&h1, "127.0.0.1:9460".parse().unwrap(), "/metrics").expect("metrics");
    let choices: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("canopy_agent_edge_choices_total{"))
        .collect();
    let total: u64 = choices
        .iter()
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(total >= 20, "edge choices {total} < 20 flows: {choices:?}");
    assert!(
        choices.iter().all(|l| lab
            .state
            .edges
            .iter()
            .any(|e| l.contains(&format!("edge=\"{}\"", e.id)))),
        "{choices:?}"
    );
    lab.signal("agent-h1", signal)
        .expect("stop the agent of h1");
    lab.restart_agent("h1").expect("restart the agent of h1");
    std::thread::sleep(Duration::from_secs(4));
    let results = f.stop();
    println!("  {}; before: {choices:?}", flows::summarize(&results));
    let failed: Vec<_> = results.iter().filter(|r| r.error.is_some()).collect();
    assert!(
        failed.is_empty(),
        "{} flows failed, first: {:?}",
        failed.len(),
        failed.first()
    );
    assert!(
        results.iter().all(|r| r.round_trips > 30),
        "flows stalled: {results:?}"
    );
}

fn agent_term_internet(lab: &mut Lab) {
    agent_restart_internet(lab, lab::SIGTERM);
}

fn agent_kill_internet(lab: &mut Lab) {
    agent_restart_internet(lab, lab::SIGKILL);
}

/// `locator | network id | IPv4`.
fn substrate_addr(locator: &str, vni: u64, ip: Ipv4Addr) -> std::net::Ipv6Addr {
    let loc: std::net::Ipv6Addr = locator.trim_end_matches("/72").parse().unwrap();
    let l = u128::from(loc) & !((1u128 << 56) - 1);
    std::net::Ipv6Addr::from(l | (u128::from(vni) << 32) | u128::from(u32::from(ip)))
}

/// A packet claiming to be a1 (10.0.0.10 of t1) from a locator that is not a1's host,
/// injected at the fabric towards a3 on h2: dropped and counted as spoofed; a3 sees nothing.
fn spoofed_substrate(lab: &mut Lab) {
    let t1 = lab.state.tenant("t1").unwrap().clone();
    let net = lab
        .api()
        .get(&format!("/v1/networks/{}", t1.network_id))
        .unwrap();
    let vni = net["vni"].as_u64().expect("vni");
    let h2 = lab.state.host("h2").unwrap().clone();
    let src = substrate_addr("fd63:6e73:0:0:ff00::/72", vni, Ipv4Addr::new(10, 0, 0, 10));
    let dst = substrate_addr(&h2.locator, vni, Ipv4Addr::new(10, 0, 0, 20));
    let fab = lab.state.fabric_ns.clone();
    let a3 = lab.state.vm("a3").unwrap().netns.clone();
    let before = metric(
        &h2.netns,
        "canopy_agent_drops_total{reason=\"spoofed_source\"}",
    );
    let cap = Capture::start(&a3, "eth0", "icmp", &lab.state.dir.join("spoof-a3.txt")).unwrap();
    let src_s = src.to_string();
    let dst_s = dst.to_string();
    lab::ns_run(
        &fab,
        "ip",
        &["addr", "add", &format!("{src_s}/128"), "dev", "lo", "nodad"],
        T,
    )
    .unwrap();
    let o = lab::ns_run(
        &fab,
        "ping",
        &[
            "-6", "-c", "3", "-i", "0.2", "-W", "1", "-I", &src_s, &dst_s,
        ],
        T,
    )
    .unwrap();
    lab::ns_run(
        &fab,
        "ip",
        &["addr", "del", &format!("{src_s}/128"), "dev", "lo"],
        T,
    )
    .unwrap();
    std::thread::sleep(Duration::from_secs(1));
    let seen = cap.stop();
    let after = metric(
        &h2.netns,
        "canopy_agent_drops_total{reason=\"spoofed_source\"}",
    );
    assert!(
        !o.status.success(),
        "the spoofed ping was answered: {}",
        text(&o)
    );
    assert!(seen.is_empty(), "a3 received spoofed packets: {seen:?}");
    assert!(
        after >= before + 3,
        "spoofed_source drops at h2: {before} -> {after}"
    );
    println!("  {src} -> {dst}: 3 dropped at h2 as spoofed_source, a3 saw nothing");
}

/// An elastic IP of the pool, associated with a3: the internet reaches a3's server on it
/// once a security group allows the port (and not before: the default group keeps the
/// internet out).
fn elastic_ip(lab: &mut Lab) {
    let pool = lab.state.pool.clone().unwrap();
    let t1 = lab.state.tenant("t1").unwrap().clone();
    let a3 = lab.state.vm("a3").unwrap().clone();
    let eip = lab
        .api()
        .post(
            "/v1/elastic-ips",
            serde_json::json!({"pool_id": pool.id, "tenant_id": t1.id}),
        )
        .expect("allocate an elastic IP");
    let addr: Ipv4Addr = eip["address"].as_str().unwrap().parse().unwrap();
    let id = eip["id"].as_str().unwrap().to_owned();
    lab.tenant_api("t1")
        .unwrap()
        .post(
            &format!("/v1/elastic-ips/{id}/associate"),
            serde_json::json!({"node_id": a3.id}),
        )
        .expect("associate it with a3");
    // Security groups: the default group lets nothing in from outside the network; a
    // group allowing TCP 8080 from anywhere opens it.
    let t1_api = lab.tenant_api("t1").unwrap();
    let sg = t1_api
        .post(
            "/v1/security-groups",
            serde_json::json!({"network_id": t1.network_id, "name": "web", "rules": [
                {"direction": "ingress", "protocol": "tcp", "port_from": 8080, "port_to": 8080,
                 "remote_cidr": "0.0.0.0/0"}
            ]}),
        )
        .expect("create a security group");
    let sg_id = sg["id"].as_str().unwrap().to_owned();
    let attach = |lab: &Lab| {
        lab.tenant_api("t1")
            .unwrap()
            .post(
                &format!("/v1/nodes/{}/security-groups", a3.id),
                serde_json::json!({"group_id": sg_id}),
            )
            .expect("attach the group to a3");
    };
    let (tx, rx) = std::sync::mpsc::channel();
    let server = flows::in_netns(&a3.netns, move || {
        let io = |what: &str, e| lab::Error::io(what.to_owned(), e);
        let l = std::net::TcpListener::bind("0.0.0.0:8080").map_err(|e| io("bind", e))?;
        l.set_nonblocking(true).map_err(|e| io("listener", e))?;
        tx.send(()).ok();
        // Accepts until the client got through (bounded: the test must not hang).
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            match l.accept() {
                Ok((mut s, peer)) => {
                    s.set_nonblocking(false).map_err(|e| io("socket", e))?;
                    std::io::Write::write_all(&mut s, b"hello from a3\n")
                        .map_err(|e| io("write", e))?;
                    return Ok(peer);
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    if std::time::Instant::now() > deadline {
                        return Err(io("accept", e));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => return Err(io("accept", e)),
            }
        }
    });
    rx.recv_timeout(T).expect("server listening");
    // Before the group is attached: the SYN reaches a3's agent and is denied there.
    let h2 = lab.state.host(&a3.host).unwrap().netns.clone();
    let denied_before = metric(&h2, "canopy_agent_drops_total{reason=\"sg_denied\"}");
    // The association reaches the edges through the manager's watch: try until a3's agent
    // has denied a SYN (bounded).
    let mut reached = false;
    let mut denied_after = denied_before;
    for _ in 0..5 {
        let r = flows::in_netns(&lab.state.internet_ns, move || {
            std::net::TcpStream::connect_timeout(&(addr, 8080).into(), Duration::from_secs(2))
                .map_err(|e| lab::Error::io("connect", e))
        })
        .join()
        .unwrap();
        reached |= r.is_ok();
        denied_after = metric(&h2, "canopy_agent_drops_total{reason=\"sg_denied\"}");
        if denied_after > denied_before {
            break;
        }
    }
    assert!(
        !reached,
        "reached a3:8080 before its security group allowed it"
    );
    assert!(
        denied_after > denied_before,
        "sg_denied at {}: {denied_before} -> {denied_after}",
        a3.host
    );
    println!("  without an allowing group: refused, sg_denied {denied_before} -> {denied_after}");
    attach(lab);
    // The association reaches the edges through the manager's watch: try for a while.
    let client = flows::in_netns(&lab.state.internet_ns, move || {
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        loop {
            let sock =
                std::net::TcpStream::connect_timeout(&(addr, 8080).into(), Duration::from_secs(2));
            match sock {
                Ok(mut s) => {
                    let mut got = String::new();
                    std::io::Read::read_to_string(&mut s, &mut got)
                        .map_err(|e| lab::Error::io("read", e))?;
                    return Ok((got, s.local_addr().ok()));
                }
                Err(e) if std::time::Instant::now() > deadline => {
                    return Err(lab::Error::io(format!("connect {addr}:8080"), e));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(200)),
            }
        }
    });
    let (got, local) = match client.join().unwrap() {
        Ok(r) => r,
        Err(e) => {
            let drops: Vec<String> = lab
                .state
                .edges
                .iter()
                .filter(|e| !e.withdrawn)
                .map(|edge| {
                    let n = metric(
                        &edge.netns,
                        "canopy_edge_drops_total{reason=\"unsolicited_inbound\"}",
                    );
                    format!("{} unsolicited_inbound {n}", edge.name)
                })
                .collect();
            panic!("internet -> elastic IP {addr}:8080 (a3): {e}; edges: {drops:?}");
        }
    };
    let peer = server.join().unwrap().expect("a3 accepted");
    assert_eq!(got, "hello from a3\n");
    println!("  internet {local:?} -> {addr}:8080 reached a3 (10.0.0.20), which saw {peer}");
}

/// A network ACL on t2's subnet denies egress TCP to port 80: t2's VMs lose HTTP to the
/// internet but keep other ports; t1 is unaffected; emptying the ACL restores HTTP.
fn acl_egress_deny(lab: &mut Lab) {
    let t2 = lab.state.tenant("t2").unwrap().clone();
    let api = lab.tenant_api("t2").unwrap();
    let rules = serde_json::json!({"rules": [
        {"number": 10, "action": "deny", "direction": "egress", "protocol": "tcp", "port_from": 80, "port_to": 80, "cidr": "0.0.0.0/0"},
        {"number": 20, "action": "allow", "direction": "egress", "protocol": "any", "cidr": "0.0.0.0/0"},
        {"number": 20, "action": "allow", "direction": "ingress", "protocol": "any", "cidr": "0.0.0.0/0"},
    ]});
    api.put(&format!("/v1/subnets/{}/acl", t2.subnet_id), rules)
        .expect("set the ACL");
    std::thread::sleep(Duration::from_secs(1));
    let b1 = lab.state.vm("b1").unwrap().netns.clone();
    let a1 = lab.state.vm("a1").unwrap().netns.clone();
    let denied = flows::http_get(&b1, lab::http_server(), "/");
    let other = Flows::start(
        std::slice::from_ref(&b1),
        1,
        lab::echo_server(),
        Duration::from_millis(100),
    );
    std::thread::sleep(Duration::from_millis(500));
    let other = other.stop();
    let t1_ok = flows::http_get(&a1, lab::http_server(), "/");
    api.put(
        &format!("/v1/subnets/{}/acl", t2.subnet_id),
        serde_json::json!({"rules": []}),
    )
    .expect("empty the ACL");
    std::thread::sleep(Duration::from_secs(1));
    let restored = flows::http_get(&b1, lab::http_server(), "/");
    assert!(
        denied.is_err(),
        "b1 reached port 80 through a deny rule: {denied:?}"
    );
    assert!(
        other[0].error.is_none(),
        "b1's echo flow (port 7): {:?}",
        other[0]
    );
    assert!(t1_ok.is_ok(), "t1's a1 lost HTTP: {t1_ok:?}");
    assert!(
        restored.is_ok(),
        "HTTP after the ACL was emptied: {restored:?}"
    );
}

/// One connection from inside `netns` to `to`: the echo server's first line (`peer
/// <ip>:<port>`, the address it saw), or why there was none within 2 s.
fn echo_hello(netns: &str, to: std::net::SocketAddr) -> Result<String, String> {
    flows::in_netns(netns, move || {
        let io = |what: &str, e| lab::Error::io(format!("{what} {to}"), e);
        let s = std::net::TcpStream::connect_timeout(&to, Duration::from_secs(2))
            .map_err(|e| io("connect", e))?;
        s.set_read_timeout(Some(Duration::from_secs(2)))
            .map_err(|e| io("socket", e))?;
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(s), &mut line)
            .map_err(|e| io("read", e))?;
        Ok(line.trim().to_owned())
    })
    .join()
    .unwrap()
    .map_err(|e| e.to_string())
}

/// Tries `from` -> `to` until an attempt is refused and the drop counter `reason` of the
/// agent in `host_ns` has grown (the rules reach the agents through the manager's watch:
/// tried every 200 ms for up to 10 s), then once more, which must be refused too.
fn refused(lab: &Lab, from: &str, to: std::net::SocketAddr, host_ns: &str, reason: &str) {
    let name = format!("canopy_agent_drops_total{{reason=\"{reason}\"}}");
    let ns = lab.state.vm(from).unwrap().netns.clone();
    let before = metric(host_ns, &name);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = echo_hello(&ns, to);
        if r.is_err() && metric(host_ns, &name) > before {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{from} -> {to}: not refused with {reason} counted ({before}); last try: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let again = echo_hello(&ns, to);
    let after = metric(host_ns, &name);
    assert!(again.is_err(), "{from} -> {to} got through: {again:?}");
    println!("  {from} -> {to}: refused, {reason} {before} -> {after}");
}

/// `from` -> `to` connects (tried for up to 10 s while rules travel), and the server saw
/// `from`'s own address.
fn reaches(lab: &Lab, from: &str, to: std::net::SocketAddr) {
    let vm = lab.state.vm(from).unwrap();
    let (ns, own) = (vm.netns.clone(), vm.vip.clone());
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let line = loop {
        match echo_hello(&ns, to) {
            Ok(l) => break l,
            Err(e) if std::time::Instant::now() > deadline => panic!("{from} -> {to}: {e}"),
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    };
    assert!(
        line.starts_with(&format!("peer {own}:")),
        "{from} -> {to}: the server saw {line:?}"
    );
    println!("  {from} -> {to}: connected, the server saw {own}");
}

/// Security groups between VMs, both directions, across hosts. a1 (h1) trades its
/// default group for one that lets only TCP 8080 out and in; a3 (h2) gets the same group
/// beside its default one. a1 -> a3:8080 and a3 -> a1:8080 connect (their answers come
/// back through connection tracking: no rule names them); a1 -> a3:8081 is refused by
/// a1's egress rules and a3 -> a1:8081 by a1's ingress rules, each counted as
/// `sg_denied` by h1's agent. Everything is put back at the end, also after a failure.
fn sg_between_vms(lab: &mut Lab) {
    let t1 = lab.state.tenant("t1").unwrap().clone();
    let (a1, a3) = (
        lab.state.vm("a1").unwrap().clone(),
        lab.state.vm("a3").unwrap().clone(),
    );
    let h1 = lab.state.host(&a1.host).unwrap().netns.clone();
    let api = lab.tenant_api("t1").unwrap();
    let groups = api
        .get(&format!("/v1/security-groups?network_id={}", t1.network_id))
        .expect("list the groups");
    let default = groups
        .as_array()
        .unwrap()
        .iter()
        .find(|g| g["name"] == "default")
        .expect("the network's default group")["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let g = api
        .post(
            "/v1/security-groups",
            serde_json::json!({"network_id": t1.network_id, "name": "only-8080", "rules": [
                {"direction": "egress", "protocol": "tcp", "port_from": 8080, "port_to": 8080,
                 "remote_cidr": "10.0.0.0/8"},
                {"direction": "ingress", "protocol": "tcp", "port_from": 8080, "port_to": 8080,
                 "remote_cidr": "10.0.0.0/8"}
            ]}),
        )
        .expect("create a security group");
    let g = g["id"].as_str().unwrap().to_owned();
    let servers: Vec<EchoServer> = [&a1, &a3]
        .iter()
        .flat_map(|vm| {
            [8080, 8081].map(|port| {
                EchoServer::start(&vm.netns, ([0, 0, 0, 0], port).into()).expect("echo server")
            })
        })
        .collect();
    let at = |vm: &lab::VmRecord, port: u16| -> std::net::SocketAddr {
        (vm.vip.parse::<Ipv4Addr>().unwrap(), port).into()
    };
    let attach = |node: &str, group: &str| {
        api.post(
            &format!("/v1/nodes/{node}/security-groups"),
            serde_json::json!({"group_id": group}),
        )
        .map(|_| ())
    };
    let detach = |node: &str, group: &str| {
        api.delete(&format!("/v1/nodes/{node}/security-groups/{group}"))
            .map(|_| ())
    };
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        attach(&a1.id, &g).expect("attach the group to a1");
        attach(&a3.id, &g).expect("attach the group to a3");
        detach(&a1.id, &default).expect("detach a1's default group");
        // a1's egress: 8081 refused where it leaves, at h1.
        refused(lab, "a1", at(&a3, 8081), &h1, "sg_denied");
        reaches(lab, "a1", at(&a3, 8080));
        // a1's ingress: 8081 refused where it arrives, at h1.
        refused(lab, "a3", at(&a1, 8081), &h1, "sg_denied");
        reaches(lab, "a3", at(&a1, 8080));
    }));
    let undone = [
        attach(&a1.id, &default),
        detach(&a1.id, &g),
        detach(&a3.id, &g),
        api.delete(&format!("/v1/security-groups/{g}")).map(|_| ()),
    ];
    drop(servers);
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
    for u in undone {
        u.expect("put the security groups back");
    }
}

/// A network ACL on t1's subnet denies ingress TCP 8080 from a2 only (stateless, ordered:
/// the deny rule comes before an allow-all): a2 -> a3:8080 is refused at a3's agent (h2)
/// and counted as `acl_denied`, a1 -> a3:8080 still connects; emptying the ACL lets a2
/// in again.
fn acl_ingress_deny(lab: &mut Lab) {
    let t1 = lab.state.tenant("t1").unwrap().clone();
    let (a2, a3) = (
        lab.state.vm("a2").unwrap().clone(),
        lab.state.vm("a3").unwrap().clone(),
    );
    let h2 = lab.state.host(&a3.host).unwrap().netns.clone();
    let api = lab.tenant_api("t1").unwrap();
    // a3 lets 8080 in from its own network, whatever the other checks left attached.
    let g = api
        .post(
            "/v1/security-groups",
            serde_json::json!({"network_id": t1.network_id, "name": "in-8080", "rules": [
                {"direction": "ingress", "protocol": "tcp", "port_from": 8080, "port_to": 8080,
                 "remote_cidr": "10.0.0.0/8"}
            ]}),
        )
        .expect("create a security group");
    let g = g["id"].as_str().unwrap().to_owned();
    let server = EchoServer::start(&a3.netns, ([0, 0, 0, 0], 8080).into()).expect("echo server");
    let to: std::net::SocketAddr = (a3.vip.parse::<Ipv4Addr>().unwrap(), 8080).into();
    let acl = format!("/v1/subnets/{}/acl", t1.subnet_id);
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        api.post(
            &format!("/v1/nodes/{}/security-groups", a3.id),
            serde_json::json!({"group_id": g}),
        )
        .expect("attach the group to a3");
        reaches(lab, "a2", to);
        api.put(
            &acl,
            serde_json::json!({"rules": [
                {"number": 10, "action": "deny", "direction": "ingress", "protocol": "tcp",
                 "port_from": 8080, "port_to": 8080, "cidr": format!("{}/32", a2.vip)},
                {"number": 20, "action": "allow", "direction": "ingress", "protocol": "any", "cidr": "0.0.0.0/0"},
                {"number": 30, "action": "allow", "direction": "egress", "protocol": "any", "cidr": "0.0.0.0/0"},
            ]}),
        )
        .expect("set the ACL");
        refused(lab, "a2", to, &h2, "acl_denied");
        reaches(lab, "a1", to);
        api.put(&acl, serde_json::json!({"rules": []}))
            .expect("empty the ACL");
        reaches(lab, "a2", to);
    }));
    let undone = [
        api.put(&acl, serde_json::json!({"rules": []})).map(|_| ()),
        api.delete(&format!("/v1/nodes/{}/security-groups/{g}", a3.id))
            .map(|_| ()),
        api.delete(&format!("/v1/security-groups/{g}")).map(|_| ()),
    ];
    server.stop();
    if let Err(e) = r {
        std::panic::resume_unwind(e);
    }
    for u in undone {
        u.expect("put the ACL and groups back");
    }
}

/// Something [`peering`] made, undone at its end in reverse order.
enum Made {
    /// An API object (its path), deleted by tenant t1.
    Object(String),
    /// A VM added to the lab.
    Vm(&'static str),
}

/// Two networks of t1 peered: its 10.0.0.0/16 and a second, 10.1.0.0/16 with p1 on h2,
/// routes both ways; a third, 10.2.0.0/16 with q1 on h1, peered with neither. a1 (h1) and
/// p1 (h2) ping each other across hosts, a3 and p1 on one host; q1 reaches neither and
/// they see none of its packets (nor it theirs). h1 has no node of the second network:
/// its agent routes to p1 and takes p1's answers through what the manager sends it
/// because of the peering. Security groups let 10.0.0.0/8 in everywhere, so that only the
/// peering decides. Everything made here is removed at the end, also after a failure.
fn peering(lab: &mut Lab) {
    let mut made = Vec::new();
    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        peering_steps(lab, &mut made)
    }));
    let api = lab.tenant_api("t1").unwrap();
    let mut undone = Vec::new();
    for m in made.into_iter().rev() {
        let res = match &m {
            Made::Object(path) => api.delete(path).map(drop),
            Made::Vm(name) => lab.remove_vm(name),
        };
        if let Err(e) = res {
            undone.push(e.to_string());
        }
    }
    if let Err(p) = r {
        std::panic::resume_unwind(p);
    }
    assert!(undone.is_empty(), "cleanup: {undone:?}");
}

fn peering_steps(lab: &mut Lab, made: &mut Vec<Made>) {
    let t1 = lab.state.tenant("t1").unwrap().clone();
    let api = lab.tenant_api("t1").unwrap();
    let id = |v: serde_json::Value| v["id"].as_str().unwrap().to_owned();
    let open = serde_json::json!([{"direction": "ingress", "protocol": "any", "remote_cidr": "10.0.0.0/8"}]);
    // The second and third networks, each with a subnet and an open security group.
    let mut nets = Vec::new();
    for (name, cidr, subnet) in [
        ("peer-b", "10.1.0.0/16", "10.1.0.0/24"),
        ("lone-c", "10.2.0.0/16", "10.2.0.0/24"),
    ] {
        let net = id(api
            .post(
                "/v1/networks",
                serde_json::json!({"name": name, "cidr": cidr}),
            )
            .expect("create a network"));
        made.push(Made::Object(format!("/v1/networks/{net}")));
        let sub = id(api
            .post(
                "/v1/subnets",
                serde_json::json!({"network_id": net, "name": "sub", "cidr": subnet}),
            )
            .expect("create a subnet"));
        made.push(Made::Object(format!("/v1/subnets/{sub}")));
        nets.push((net, sub));
    }
    let mut groups = Vec::new();
    for net in [&t1.network_id, &nets[0].0, &nets[1].0] {
        let g = id(api
            .post(
                "/v1/security-groups",
                serde_json::json!({"network_id": net, "name": "from-10", "rules": open}),
            )
            .expect("create a security group"));
        made.push(Made::Object(format!("/v1/security-groups/{g}")));
        groups.push(g);
    }
    for (name, sub, host, vip) in [
        ("p1", &nets[0].1, "h2", Ipv4Addr::new(10, 1, 0, 10)),
        ("q1", &nets[1].1, "h1", Ipv4Addr::new(10, 2, 0, 10)),
    ] {
        lab.add_vm("t1", sub, name, host, Some(vip))
            .unwrap_or_else(|e| panic!("add VM {name}: {e}"));
        made.push(Made::Vm(name));
    }
    for (vm, g) in [("a1", 0), ("a3", 0), ("p1", 1), ("q1", 2)] {
        let node = lab.state.vm(vm).unwrap().id.clone();
        let path = format!("/v1/nodes/{node}/security-groups");
        api.post(&path, serde_json::json!({"group_id": groups[g]}))
            .expect("attach the security group");
        if g == 0 {
            made.push(Made::Object(format!("{path}/{}", groups[g])));
        }
    }
    // Inside one tenant a peering is active at once; a route each way points at it.
    let pe = api
        .post(
            "/v1/peerings",
            serde_json::json!({"network_id": t1.network_id, "peer_network_id": nets[0].0}),
        )
        .expect("peer the networks");
    assert_eq!(pe["state"], "active", "{pe}");
    let pe = id(pe);
    made.push(Made::Object(format!("/v1/peerings/{pe}")));
    for (net, dest) in [(&t1.network_id, "10.1.0.0/16"), (&nets[0].0, "10.0.0.0/16")] {
        let rt = id(api
            .post(
                "/v1/routes",
                serde_json::json!({"network_id": net, "destination": dest,
                                   "target": format!("peering:{pe}")}),
            )
            .expect("route to the peering"));
        made.push(Made::Object(format!("/v1/routes/{rt}")));
    }
    // The routes reach the agents through the manager's watch: wait for the first answer.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !sh(lab, "a1", "ping", &["-c", "1", "-W", "1", "10.1.0.10"]).0 {
        assert!(
            std::time::Instant::now() < deadline,
            "a1 -> p1 (10.1.0.10) never answered"
        );
    }
    ping3(lab, "a1", "10.1.0.10"); // h1 -> h2
    ping3(lab, "p1", "10.0.0.10"); // h2 -> h1
    ping3(lab, "a3", "10.1.0.10"); // both on h2
    ping3(lab, "p1", "10.0.0.20");

    // The unpeered network: no way in or out, and no packet arrives on either side.
    let dir = lab.state.dir.clone();
    let [a1_ns, q1_ns, p1_ns] = ["a1", "q1", "p1"].map(|v| lab.state.vm(v).unwrap().netns.clone());
    let caps = [
        Capture::start(&a1_ns, "eth0", "icmp", &dir.join("peer-a1.txt")).unwrap(),
        Capture::start(&p1_ns, "eth0", "icmp", &dir.join("peer-p1.txt")).unwrap(),
        Capture::start(&q1_ns, "eth0", "icmp", &dir.join("peer-q1.txt")).unwrap(),
    ];
    let mut reached = Vec::new();
    for (from, to) in [
        ("q1", "10.0.0.10"),
        ("q1", "10.1.0.10"),
        ("a1", "10.2.0.10"),
        ("p1", "10.2.0.10"),
    ] {
        let (ok, log) = sh(lab, from, "ping", &["-c", "2", "-i", "0.2", "-W", "1", to]);
        if ok || log.contains(" 0% packet loss") {
            reached.push(format!("{from} -> {to}: {log}"));
        }
    }
    let [a1_seen, p1_seen, q1_seen] = caps.map(Capture::stop);
    assert!(
        reached.is_empty(),
        "the unpeered network reached: {reached:?}"
    );
    let from_q1: Vec<&String> = a1_seen
        .iter()
        .chain(&p1_seen)
        .filter(|l| l.contains("10.2.0.10 >"))
        .collect();
    assert!(from_q1.is_empty(), "q1's packets arrived: {from_q1:?}");
    let to_q1: Vec<&String> = q1_seen
        .iter()
        .filter(|l| l.contains("> 10.2.0.10: ICMP echo request"))
        .collect();
    assert!(to_q1.is_empty(), "packets for q1 arrived: {to_q1:?}");
    println!("  q1 (10.2.0.0/16, not peered): reached neither network, and nothing of it arrived");
}

/// The manager is killed: VMs keep talking, across hosts and to the internet.
fn manager_killed(lab: &mut Lab) {
    lab.signal("manager", lab::SIGKILL)
        .expect("kill -9 the manager");
    std::thread::sleep(Duration::from_secs(1));
    ping3(lab, "a1", "10.0.0.20");
    ping3(lab, "b4", "10.0.0.10");
    let answer =
        flows::http_get(&lab.state.vm("a3").unwrap().netns, lab::http_server(), "/").expect("HTTP");
    assert!(answer.contains("you are 198.51.100."), "{answer}");
    println!("  manager gone: VM to VM and VM to internet still work");
}

#[test]
fn lab_end_to_end() {
    if !ready() {
        return;
    }
    let lab =
        Lab::up(spec(PoolMode::Direct), &mut |l| println!("lab: {l}")).expect("build the lab");
    run_checks(
        lab,
        &[
            ("DHCP lease with router and MTU", dhcp_lease as Check),
            ("ping: gateway, same host, across hosts", ping_vms),
            ("TCP and UDP (iperf3) same host and across hosts", tcp_udp),
            ("ARP for an unknown address unanswered", arp_unknown),
            ("TTL expiry from the gateway", ttl_expiry),
            ("two tenants on the same addresses isolated", isolation),
            ("HTTP to the internet through the pool", http_internet),
            ("ping to the internet through NAT", ping_internet),
            (
                "path MTU: fragmentation needed; large DF transfers through",
                pmtu,
            ),
            (
                "spoofed substrate packet dropped and counted",
                spoofed_substrate,
            ),
            ("elastic IP reachable from the internet", elastic_ip),
            ("network ACL denies egress port 80", acl_egress_deny),
            (
                "security groups between VMs, egress and ingress",
                sg_between_vms,
            ),
            ("network ACL denies ingress from one VM", acl_ingress_deny),
            (
                "200 flows through edge add, drain and kill -9",
                flows_through_changes,
            ),
            ("agent restarted: VM-to-VM flows resume", agent_restart),
            (
                "agent restarted (SIGTERM): internet flows resume",
                agent_term_internet,
            ),
            (
                "agent killed (SIGKILL) and restarted: internet flows resume",
                agent_kill_internet,
            ),
            (
                "peered networks reach each other, an unpeered one nothing",
                peering,
            ),
            ("manager killed: traffic continues", manager_killed),
        ],
    );
}

/// Anycast pool: flows get through, and since the fabric hashes only the substrate
/// addresses, all flows of one VM to the server take one edge (seen as SYNs per edge link,
/// grouped by the VM's public address).
fn anycast_spread(lab: &mut Lab) {
    let inet = lab.state.internet_ns.clone();
    let dir = lab.state.dir.clone();
    let filter = format!(
        "tcp[tcpflags] & (tcp-syn|tcp-ack) == tcp-syn and dst port {}",
        lab::ECHO_PORT
    );
    let caps: Vec<(String, Capture)> = lab
        .state
        .edges
        .iter()
        .map(|e| {
            let c = Capture::start(
                &inet,
                &e.inet_link,
                &filter,
                &dir.join(format!("syn-{}.txt", e.name)),
            );
            (e.name.clone(), c.expect("capture"))
        })
        .collect();
    let nss: Vec<String> = lab.state.vms.iter().map(|v| v.netns.clone()).collect();
    let f = Flows::start(&nss, 10, lab::echo_server(), Duration::from_millis(100));
    std::thread::sleep(Duration::from_secs(2));
    let results = f.stop();
    let mut edges_of: std::collections::BTreeMap<String, std::collections::BTreeSet<String>> =
        Default::default();
    for (edge, c) in caps {
        for line in c.stop() {
            // "... IP 198.51.100.1.1025 > 203.0.113.10.7: Flags [S] ..."
            let src = line
                .split_whitespace()
                .skip_while(|w| *w != "IP")
                .nth(1)
                .unwrap_or("");
            let addr = src
                .rsplit_once('.')
                .map(|(a, _)| a)
                .unwrap_or(src)
                .to_owned();
            edges_of.entry(addr).or_default().insert(edge.clone());
        }
    }
    // A node's first flows wait in its agent's hold queue for its first port block.
    let no_block: u64 = lab
        .state
        .hosts
        .iter()
        .map(|h| metric(&h.netns, "canopy_agent_port_block_holds_total"))
        .sum();
    println!(
        "  {}; {no_block} packets waited for a first port block; edges per public address: {edges_of:?}",
        flows::summarize(&results)
    );
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    assert_eq!(failed, 0, "flows failed through the anycast pool");
    assert_eq!(edges_of.len(), lab.state.vms.len(), "{edges_of:?}");
    assert!(edges_of.values().all(|e| e.len() == 1), "{edges_of:?}");
}

/// A second lab, its pool in anycast mode: agents send to the pool's anycast locator, the
/// fabric's ECMP route picks the edge, each edge accepts the anycast locator besides its own
/// and answers from its own.
#[test]
fn lab_anycast() {
    if !ready() {
        return;
    }
    let lab =
        Lab::up(spec(PoolMode::Anycast), &mut |l| println!("lab: {l}")).expect("build the lab");
    run_checks(
        lab,
        &[
            (
                "anycast pool: flows pass, one edge per VM",
                anycast_spread as Check,
            ),
            (
                "ping to the internet through the anycast pool",
                ping_internet,
            ),
        ],
    );
}
