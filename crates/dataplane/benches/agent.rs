//! ns per packet through the whole agent pipeline, both ways, with realistic table sizes:
//! 1,000 networks of 1,000 nodes each pushed as mappings (1M entries), security groups on
//! both nodes with 100k connections tracked on each side, and through the edge pipeline.
//! Run: `cargo bench -p canopy-dataplane --bench agent`.
//!
//! - egress: a 64-byte UDP frame from a VM to a node on another host of the same subnet
//!   (ARP-resolved MAC, mapping cache hit), translated to the substrate.
//! - egress routed: the same to another subnet (TTL decremented into the hop limit).
//! - egress peered: the same to a node of a peered network.
//! - ingress: the substrate packet of that flow arriving at the receiver's host
//!   (anti-spoofing check against the cache, decode, Ethernet header).
//! - edge out / edge in: a NATed TCP segment through an edge, both ways.
//!
//! Each iteration restores the first 160 bytes of the buffer, the only ones the pipeline
//! writes; that copy is part of the numbers.

use core::net::Ipv4Addr;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::agent::{
    Agent, AgentConfig, Change, Mapping, NodeSpec, PortId, RouteTarget, Subnet, Verdict, HEADROOM,
    MIN_BUFFER,
};
use dataplane::edge::{Edge, EdgeChange, EdgeVerdict, Owner};
use dataplane::nat::PortBlock;
use dataplane::rules::{Cidr, Proto, Remote, SecurityGroup, SgRule};
use dataplane::{Instant, PacketBuf};
use model::{Ipv4Cidr, Locator, NetworkId};
use std::hint::black_box;
use wire::checksum;
use wire::ethernet::MacAddr;

const RESTORE: usize = 160;
const NETWORKS: u32 = 1000;
const NODES: u32 = 1000;

fn loc(h: u32) -> Locator {
    format!("fd63:6e73:0:{h:x}::").parse().unwrap()
}

fn mac(n: u32, i: u32) -> MacAddr {
    let a = n.to_be_bytes();
    let b = i.to_be_bytes();
    MacAddr([0x02, a[2], a[3], b[1], b[2], b[3]])
}

/// The address of node `i` (1-based) in a /16: 10.0.x.y, subnets of /24.
fn vip(i: u32) -> Ipv4Addr {
    Ipv4Addr::new(10, 0, (i / 250) as u8, (i % 250 + 2) as u8)
}

const TRACKED: u32 = 100_000;

fn agent(host: u32) -> Agent {
    let mut cfg = AgentConfig::new(loc(host));
    cfg.max_connections_per_node = 2 * TRACKED as usize;
    let mut a = Agent::new(cfg);
    for n in 1..=NETWORKS {
        let id = NetworkId::new(n).unwrap();
        a.apply(Change::Network {
            id,
            cidr: "10.0.0.0/16".parse().unwrap(),
        });
        for s in 0..=(NODES / 250) {
            let cidr = Ipv4Cidr::truncating(Ipv4Addr::new(10, 0, s as u8, 0), 24);
            a.apply(Change::Subnet {
                network: id,
                subnet: Subnet::new(cidr),
            });
        }
        for i in 0..NODES {
            a.apply(Change::Mapping {
                network: id,
                vip: vip(i),
                mapping: Some(Mapping {
                    locator: loc(100 + i % 64),
                    mac: mac(n, i),
                }),
            });
        }
    }
    a
}

fn udp_frame(dst_mac: MacAddr, src_mac: MacAddr, src: Ipv4Addr, dst: Ipv4Addr) -> Vec<u8> {
    let mut f = Vec::new();
    f.extend_from_slice(&dst_mac.octets());
    f.extend_from_slice(&src_mac.octets());
    f.extend_from_slice(&[0x08, 0x00]);
    let mut ip = vec![0x45, 0, 0, 64, 0, 1, 0x40, 0, 64, 17, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    let mut u = vec![0x9c, 0x40, 0x00, 0x35, 0, 44, 0, 0];
    u.extend_from_slice(&[0x5a; 36]);
    let s = checksum::add(
        checksum::pseudo_v4(src.octets(), dst.octets(), 17, 44),
        checksum::sum(&u),
    );
    u[6..8].copy_from_slice(&checksum::finish(s).to_be_bytes());
    f.extend_from_slice(&ip);
    f.extend_from_slice(&u);
    f
}

fn tcp_ip(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[12] = 0x50;
    t[13] = 0x10;
    t.extend_from_slice(&[0u8; 24]);
    let p = checksum::pseudo_v4(src.octets(), dst.octets(), 6, t.len() as u16);
    let c = checksum::finish(checksum::add(p, checksum::sum(&t)));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    let mut ip = vec![0x45, 0, 0, (20 + t.len()) as u8, 0, 1, 0x40, 0, 64, 6, 0, 0];
    ip.extend_from_slice(&src.octets());
    ip.extend_from_slice(&dst.octets());
    let c = checksum::checksum(&ip);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
    ip.extend_from_slice(&t);
    ip
}

/// Runs `f` on a fresh copy of the packet's first bytes each iteration.
fn bench_path(
    c: &mut Criterion,
    name: &str,
    pkt: &[u8],
    mut f: impl FnMut(&mut PacketBuf<'_>) -> bool,
) {
    let mut buf = vec![0u8; HEADROOM + MIN_BUFFER];
    buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
    let end = HEADROOM + pkt.len();
    let restore = RESTORE.min(end);
    let pristine = buf[..restore].to_vec();
    c.benchmark_group("agent")
        .throughput(Throughput::Elements(1))
        .bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                buf[..restore].copy_from_slice(&pristine);
                let mut p = PacketBuf::new(&mut buf, HEADROOM, end);
                assert!(black_box(f(&mut p)));
            })
        });
}

fn bench(c: &mut Criterion) {
    let net = NetworkId::new(NETWORKS / 2).unwrap();
    let (a_i, b_i, c_i) = (10u32, 11u32, 700u32);
    let (a_vip, b_vip, c_vip) = (vip(a_i), vip(b_i), vip(c_i));
    let sub = |i| Subnet::new(Ipv4Cidr::truncating(vip(i), 24));
    let router = AgentConfig::new(loc(1)).router_mac;

    // Host 1 runs node a; b and c are elsewhere (their mappings say so).
    let mut h1 = agent(1);
    h1.apply(Change::AttachNode(NodeSpec {
        port: PortId(1),
        network: net,
        vip: a_vip,
        mac: mac(net.get(), a_i),
        subnet: sub(a_i),
    }));
    // Host 2 runs b; a's mapping must point at host 1 for the anti-spoofing check.
    let mut h2 = agent(2);
    h2.apply(Change::AttachNode(NodeSpec {
        port: PortId(1),
        network: net,
        vip: b_vip,
        mac: mac(net.get(), b_i),
        subnet: sub(b_i),
    }));
    h2.apply(Change::Mapping {
        network: net,
        vip: a_vip,
        mapping: Some(Mapping {
            locator: loc(1),
            mac: mac(net.get(), a_i),
        }),
    });
    h1.apply(Change::Mapping {
        network: net,
        vip: b_vip,
        mapping: Some(Mapping {
            locator: loc(2),
            mac: mac(net.get(), b_i),
        }),
    });

    // Security groups: a may send anything, b accepts UDP from the network; then 100k
    // connections of a to b (distinct source ports) are tracked on both hosts.
    let any: Cidr = "0.0.0.0/0".parse().unwrap();
    let out = SecurityGroup::new(
        1,
        vec![SgRule::egress(Proto::Any, 0..=65535, Remote::Cidr(any))],
    );
    let inb = SecurityGroup::new(
        2,
        vec![SgRule::ingress(Proto::Udp, 0..=65535, Remote::Cidr(any))],
    );
    h1.apply(Change::SecurityGroups {
        port: PortId(1),
        groups: vec![out],
    });
    h2.apply(Change::SecurityGroups {
        port: PortId(1),
        groups: vec![inb],
    });
    let mut scratch = vec![0u8; HEADROOM + MIN_BUFFER];
    for i in 0..TRACKED {
        let mut f = udp_frame(mac(net.get(), b_i), mac(net.get(), a_i), a_vip, b_vip);
        let sport = 1024 + (i % 60000) as u16;
        let dport = 53 + (i / 60000) as u16;
        f[34..36].copy_from_slice(&sport.to_be_bytes());
        f[36..38].copy_from_slice(&dport.to_be_bytes());
        f[40..42].copy_from_slice(&[0, 0]); // UDP without checksum: fine for warming
        scratch[HEADROOM..HEADROOM + f.len()].copy_from_slice(&f);
        let mut p = PacketBuf::new(&mut scratch, HEADROOM, HEADROOM + f.len());
        assert_eq!(
            h1.from_vm(PortId(1), &mut p, None, Instant::ZERO),
            Verdict::ToSubstrate
        );
        assert_eq!(
            h2.from_substrate(&mut p, None, Instant::ZERO),
            Verdict::ToPort(PortId(1))
        );
    }

    let same_subnet = udp_frame(mac(net.get(), b_i), mac(net.get(), a_i), a_vip, b_vip);
    let routed = udp_frame(router, mac(net.get(), a_i), a_vip, c_vip);
    let now = Instant::ZERO;
    bench_path(c, "egress_64B", &same_subnet, |p| {
        h1.from_vm(PortId(1), p, None, now) == Verdict::ToSubstrate
    });
    bench_path(c, "egress_routed_64B", &routed, |p| {
        h1.from_vm(PortId(1), p, None, now) == Verdict::ToSubstrate
    });
    // Across a peering: 10.0.3.0/24 of a's network is routed to the next network (more
    // specific than the local /16), where node 800 (10.0.3.52) lives elsewhere.
    let peer = NetworkId::new(net.get() + 1).unwrap();
    h1.apply(Change::Route {
        network: net,
        subnet: None,
        cidr: "10.0.3.0/24".parse().unwrap(),
        target: RouteTarget::Peering(peer),
    });
    let peered = udp_frame(router, mac(net.get(), a_i), a_vip, vip(800));
    bench_path(c, "egress_peered_64B", &peered, |p| {
        h1.from_vm(PortId(1), p, None, now) == Verdict::ToSubstrate
    });

    // The substrate packet host 2 receives.
    let mut buf = vec![0u8; HEADROOM + MIN_BUFFER];
    buf[HEADROOM..HEADROOM + same_subnet.len()].copy_from_slice(&same_subnet);
    let mut p = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + same_subnet.len());
    assert_eq!(
        h1.from_vm(PortId(1), &mut p, None, now),
        Verdict::ToSubstrate
    );
    let six = p.as_slice().to_vec();
    bench_path(c, "ingress_64B", &six, |p| {
        h2.from_substrate(p, None, now) == Verdict::ToPort(PortId(1))
    });

    // The edge: a NATed flow of node a, out and in.
    let mut edge = Edge::new(loc(0xe1));
    let block = PortBlock {
        public: Ipv4Addr::new(203, 0, 113, 5),
        first: 1024,
        last: 2047,
    };
    for n in 1..=NETWORKS {
        for i in 0..4u32 {
            let public = Ipv4Addr::new(203, 0, 113, (n % 200) as u8);
            let first = 1024 + ((n / 200) * 4 + i) as u16 * 1024 % 60000;
            let b = PortBlock {
                public,
                first,
                last: first + 1023,
            };
            edge.apply(EdgeChange::Block {
                block: b,
                owner: Owner {
                    network: NetworkId::new(n).unwrap(),
                    vip: vip(i),
                    host: loc(100),
                },
            });
        }
    }
    edge.apply(EdgeChange::Block {
        block,
        owner: Owner {
            network: net,
            vip: a_vip,
            host: loc(1),
        },
    });
    let server = Ipv4Addr::new(198, 51, 100, 10);
    let out_v4 = tcp_ip(a_vip, server, 1500, 443);
    let mut e_enc = dataplane::siit::Translator::default();
    let mut buf = vec![0u8; HEADROOM + MIN_BUFFER];
    buf[HEADROOM..HEADROOM + out_v4.len()].copy_from_slice(&out_v4);
    let mut p = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + out_v4.len());
    let map = dataplane::siit::EncodeMap {
        network: net,
        src: loc(1),
        dst: loc(0xe1),
    };
    e_enc.encode(&map, &mut p, None).unwrap();
    let out_v6 = p.as_slice().to_vec();
    bench_path(c, "edge_out_tcp", &out_v6, |p| {
        edge.from_substrate(p) == EdgeVerdict::ToOutside
    });
    let in_v4 = tcp_ip(server, block.public, 443, 1500);
    bench_path(c, "edge_in_tcp", &in_v4, |p| {
        edge.from_outside(p) == EdgeVerdict::ToSubstrate
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
