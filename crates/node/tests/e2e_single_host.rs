//! End to end, one host, real packets: an agent loop in this process owns the TAP devices
//! that are `eth0` of two VM namespaces, and unmodified software inside them talks to it:
//! busybox `udhcpc` gets its lease (address, router, MTU), iputils `ping` reaches the
//! gateway the agent emulates and the other VM (local delivery), `arping` for an address
//! no node has gets no answer, and TTL 1 through the gateway gets "time exceeded".
//!
//! Needs root (namespaces, TAP); skipped otherwise. See `common` for the safety rules.

mod common;

use common::{dhcp, drops, ping3, text, AgentThread, Lab, CMD_TIMEOUT};
use dataplane::agent::{Agent, AgentConfig, Change, Mapping, NodeSpec, PortId, Subnet};
use dataplane::DropReason;
use model::{Locator, NetworkId};
use node::tap::WANTED_OFFLOADS;
use std::net::Ipv4Addr;
use wire::ethernet::MacAddr;

#[test]
fn single_host_dhcp_gateway_arp_and_local_delivery() {
    if !common::ready() {
        return;
    }
    let mut lab = Lab::new("a");
    let net = NetworkId::new(1).unwrap();
    let locator: Locator = "fd63:6e73:0:1::".parse().unwrap();
    let subnet = Subnet::new("10.0.0.0/24".parse().unwrap());

    // The host namespace holds the substrate TUN (nothing crosses it in this test).
    let host = lab.netns("h1");
    let tun = lab.substrate_tun("s1", host);
    assert_eq!(tun.offloads(), WANTED_OFFLOADS, "kernel refused offloads");

    let mut agent = Agent::new(AgentConfig::new(locator));
    agent.apply(Change::Network {
        id: net,
        cidr: "10.0.0.0/16".parse().unwrap(),
    });
    agent.apply(Change::Subnet {
        network: net,
        subnet,
    });
    // Two VMs, each with a TAP as eth0, MACs chosen here and told to the agent.
    let mut vms = Vec::new();
    let mut ports = Vec::new();
    let mut directory = Vec::new();
    for i in 1..=2u8 {
        let vip = Ipv4Addr::new(10, 0, 0, 1 + i);
        let mac = MacAddr([0x02, 0x00, 0x00, 0x01, 0x00, 0x10 + i]);
        let ns = lab.netns(&format!("vm{i}"));
        let tap = lab.vm_tap(&format!("t{i}"), ns, mac);
        assert_eq!(tap.offloads(), WANTED_OFFLOADS, "kernel refused offloads");
        let port = PortId(i as u32);
        agent.apply(Change::AttachNode(NodeSpec {
            port,
            network: net,
            vip,
            mac,
            subnet,
        }));
        ports.push((port, tap));
        directory.push((vip, Mapping { locator, mac }));
        vms.push((ns, vip, mac));
    }
    let agent = AgentThread::spawn(agent, tun, ports, directory);
    let script = lab.udhcpc_script();

    // (a) DHCP with a real client: address, router, MTU (the substrate's 1500 less 20).
    for &(ns, vip, _) in &vms {
        dhcp(lab.ns(ns), &script, vip, 24, "10.0.0.1", 1480);
    }
    let vm1 = lab.ns(vms[0].0);

    // (b) The gateway, emulated by the agent, answers ping.
    ping3(vm1, "10.0.0.1");

    // (c) ARP for an address no node has: no answer.
    let out = vm1
        .exec(
            "busybox",
            &["arping", "-c", "2", "-w", "3", "-I", "eth0", "10.0.0.99"],
            CMD_TIMEOUT,
        )
        .unwrap();
    let log = text(&out);
    assert!(
        !out.status.success(),
        "arping 10.0.0.99 was answered: {log}"
    );
    assert!(log.contains("Received 0 response"), "arping: {log}");
    println!("{}: arping 10.0.0.99: no answer", vm1.name());

    // (d) VM to VM on the same host: ARP answered by the agent with the other VM's MAC,
    // then ICMP both ways through the agent (local delivery).
    ping3(vm1, "10.0.0.3");
    let neigh = text(
        &vm1.exec_ok("ip", &["neigh", "show", "10.0.0.3"], CMD_TIMEOUT)
            .unwrap(),
    );
    assert!(neigh.contains(&common::mac_str(vms[1].2)), "{neigh}");

    // (e) TTL expiry at the gateway: a packet routed off the subnet with TTL 1 gets
    // "time exceeded" from 10.0.0.1.
    let out = vm1
        .exec(
            "ping",
            &["-c", "1", "-t", "1", "-W", "2", "10.0.1.5"],
            CMD_TIMEOUT,
        )
        .unwrap();
    let log = text(&out);
    assert!(
        log.contains("From 10.0.0.1") && log.contains("Time to live exceeded"),
        "ping -t 1: {log}"
    );
    println!(
        "{}: ping -t 1 10.0.1.5: time exceeded from 10.0.0.1",
        vm1.name()
    );

    // (f) A VM goes away (its namespace, and with it its TAP, is deleted) before the agent
    // is told: the loop goes on serving the other (no error, no busy loop on the dead
    // descriptor; the daemon removes the port when the manager detaches the node).
    let vm1_idx = vms[0].0;
    lab.delete_netns(vms[1].0);
    let cpu0 = common::cpu_seconds();
    std::thread::sleep(std::time::Duration::from_secs(1));
    let busy = common::cpu_seconds() - cpu0;
    assert!(
        busy < 0.5,
        "the loop spins on the dead port: {busy:.3} s of CPU in 1 s"
    );
    ping3(lab.ns(vm1_idx), "10.0.0.1");

    let r = agent.stop();
    println!("agent: {:?}", r.stats);
    println!("agent drops: {:?}", drops(&r.stats));
    println!("io: {:?}", r.io);
    assert!(
        r.stats.dhcp_offers >= 2 && r.stats.dhcp_acks >= 2,
        "{:?}",
        r.stats
    );
    assert!(
        r.stats.drops.get(DropReason::ArpUnknownTarget) >= 2,
        "{:?}",
        r.stats
    );
    assert!(
        r.asked.contains(&"10.0.0.99".parse().unwrap()),
        "{:?}",
        r.asked
    );
    assert!(r.stats.to_port >= 6, "{:?}", r.stats);
    assert_eq!(r.io.tx_errors, 0, "{:?}", r.io);
    drop(lab);
}
