//! ns per packet through connection tracking and the rules. Run:
//! `cargo bench -p canopy-dataplane --bench rules`.
//!
//! - `conntrack/established_100k`: one packet of an established TCP connection, both
//!   directions, with 100k connections tracked, visited in a shuffled order (so the table
//!   does not sit in cache as it would for one hot flow).
//! - `firewall/established_100k_acl50`: the same through the firewall facade, with a
//!   50-rule subnet ACL (matched by its last rule) in front.
//! - `firewall/new_connection`: a SYN that passes the ACL and the security groups and
//!   opens an entry (the entry is removed again after each iteration).
//! - `rules/acl50_sg50_eval`: evaluation alone: a 50-rule ACL and a 50-rule security
//!   group policy, each matched only by its last rule (the worst case for a scan);
//!   `acl50_eval` and `sg50_eval` each on its own.
//! - `conntrack/established_100k_1k_active` and
//!   `firewall/established_100k_1k_active_acl50`: the same with only 1k of the 100k
//!   connections sending, i.e. the cost when their entries are in cache.
//!
//! With 100k connections visited at random, each lookup is one cache miss into a 16 MiB
//! table; that miss, not the code, is most of `established_100k`.

use core::net::Ipv4Addr;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use dataplane::conntrack::{ConnKey, Conntrack, Flow, Packet, Timeouts};
use dataplane::rules::{
    Acl, AclRule, Cidr, Direction, Firewall, GroupMembers, Policy, Proto, Remote, SgPolicy, SgRule,
    ALL_PORTS,
};
use dataplane::Instant;
use model::NetworkId;
use std::hint::black_box;
use std::time::Duration;
use wire::tcp::flags::{ACK, PSH, SYN};

const FLOWS: usize = 100_000;
const NODE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fn net() -> NetworkId {
    NetworkId::new(42).unwrap()
}

/// Flow `i`: the node talking to a different remote address and port each time.
fn flow(i: usize) -> Flow {
    let remote = Ipv4Addr::from(0xC633_0000u32 + (i as u32 >> 4)); // 198.51.0.0/16
    Flow::tcp(
        net(),
        NODE,
        10_000 + (i % 50_000) as u16,
        remote,
        443 + (i & 15) as u16,
    )
}

/// A shuffled sequence of data packets of the first `n` flows, half of them replies.
fn packets(n: usize) -> Vec<Packet> {
    let mut order: Vec<usize> = (0..n).collect();
    let mut x = 0x2545_f491_4f6c_dd1du64;
    for i in (1..n).rev() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        order.swap(i, (x % (i as u64 + 1)) as usize);
    }
    order
        .into_iter()
        .enumerate()
        .map(|(k, i)| {
            let f = if k % 2 == 0 {
                flow(i)
            } else {
                flow(i).reversed()
            };
            Packet::tcp(f, ACK | PSH).with_payload(1400)
        })
        .collect()
}

/// 49 rules that do not match the benchmark's traffic, then one that does.
fn acl50() -> Acl {
    let mut rules: Vec<AclRule> = (0..49u16)
        .map(|i| {
            let cidr = Cidr::new(Ipv4Addr::new(172, 16, i as u8, 0), 24).unwrap();
            AclRule::deny(10 + i, Direction::Egress, Proto::Tcp, 1..=1024, cidr)
        })
        .collect();
    rules.push(AclRule::allow(
        1000,
        Direction::Egress,
        Proto::Any,
        ALL_PORTS,
        Cidr::ANY,
    ));
    let inbound: Vec<AclRule> = rules
        .iter()
        .map(|r| AclRule {
            direction: Direction::Ingress,
            ..r.clone()
        })
        .collect();
    rules.extend(inbound);
    Acl::compile(&rules).unwrap()
}

fn sg50() -> SgPolicy {
    let mut rules: Vec<SgRule> = (0..49u16)
        .map(|i| {
            let cidr = Cidr::new(Ipv4Addr::new(172, 16, i as u8, 0), 24).unwrap();
            SgRule::egress(Proto::Tcp, 8000 + i..=8000 + i, Remote::Cidr(cidr))
        })
        .collect();
    rules.push(SgRule::egress(
        Proto::Tcp,
        443..=65535,
        Remote::Cidr(Cidr::new(Ipv4Addr::new(198, 51, 0, 0), 16).unwrap()),
    ));
    SgPolicy::from_rules(&rules).unwrap()
}

fn bench(c: &mut Criterion) {
    let now = Instant::from_secs(10);
    let pkts = packets(FLOWS);

    let mut ct = Conntrack::new(Timeouts::default(), FLOWS);
    for i in 0..FLOWS {
        ct.track(&Packet::tcp(flow(i), SYN), now);
        ct.track(&Packet::tcp(flow(i).reversed(), SYN | ACK), now);
        ct.track(&Packet::tcp(flow(i), ACK), now);
    }
    assert_eq!(ct.len(), FLOWS);
    let mut g = c.benchmark_group("conntrack");
    g.throughput(Throughput::Elements(1));
    let mut k = 0;
    g.bench_function("established_100k", |b| {
        b.iter(|| {
            let v = ct.track(black_box(&pkts[k]), now);
            k = if k + 1 == pkts.len() { 0 } else { k + 1 };
            black_box(v)
        })
    });
    // The same table, but only 1k of its connections active: the cost without cache misses.
    let hot = packets(1_000);
    let mut k = 0;
    g.bench_function("established_100k_1k_active", |b| {
        b.iter(|| {
            let v = ct.track(black_box(&hot[k]), now);
            k = if k + 1 == hot.len() { 0 } else { k + 1 };
            black_box(v)
        })
    });
    g.finish();
    drop(ct);

    let acl = acl50();
    let sg = sg50();
    let members = GroupMembers::new();
    let policy = Policy::new(&sg, &members).with_acl(&acl, None);
    let mut fw = Firewall::new(Conntrack::new(Timeouts::default(), FLOWS + 10_000));
    for i in 0..FLOWS {
        let f = flow(i);
        assert!(fw.egress(&policy, &Packet::tcp(f, SYN), now).is_allowed());
        let synack = Packet::tcp(f.reversed(), SYN | ACK);
        assert!(fw.ingress(&policy, &synack, now).is_allowed());
        assert!(fw.egress(&policy, &Packet::tcp(f, ACK), now).is_allowed());
    }
    assert!(pkts[..1000].iter().enumerate().all(|(k, p)| {
        let v = if k % 2 == 0 {
            fw.egress(&policy, p, now)
        } else {
            fw.ingress(&policy, p, now)
        };
        v.is_allowed()
    }));
    let mut g = c.benchmark_group("firewall");
    g.throughput(Throughput::Elements(1));
    let mut k = 0;
    g.bench_function("established_100k_acl50", |b| {
        b.iter(|| {
            let p = &pkts[k];
            // Originals go out of the node, replies come in.
            let v = if k % 2 == 0 {
                fw.egress(&policy, black_box(p), now)
            } else {
                fw.ingress(&policy, black_box(p), now)
            };
            k = if k + 1 == pkts.len() { 0 } else { k + 1 };
            black_box(v)
        })
    });
    let hot = packets(1_000);
    let mut k = 0;
    g.bench_function("established_100k_1k_active_acl50", |b| {
        b.iter(|| {
            let p = &hot[k];
            let v = if k % 2 == 0 {
                fw.egress(&policy, black_box(p), now)
            } else {
                fw.ingress(&policy, black_box(p), now)
            };
            k = if k + 1 == hot.len() { 0 } else { k + 1 };
            black_box(v)
        })
    });
    let fresh = Packet::tcp(
        Flow::tcp(net(), NODE, 60_000, Ipv4Addr::new(198, 51, 200, 1), 443),
        SYN,
    );
    let fresh_key = ConnKey::of(&fresh.flow).unwrap().0;
    g.bench_function("new_connection", |b| {
        b.iter(|| {
            let v = fw.egress(&policy, black_box(&fresh), now);
            fw.conntrack_mut().remove(&fresh_key);
            black_box(v)
        })
    });
    g.finish();

    let mut g = c.benchmark_group("rules");
    g.throughput(Throughput::Elements(1));
    let probe = flow(7);
    g.bench_function("acl50_sg50_eval", |b| {
        b.iter(|| {
            let f = black_box(&probe);
            let a = acl.evaluate(Direction::Egress, f);
            let s = sg.allows(Direction::Egress, f, &members);
            black_box((a, s))
        })
    });
    g.bench_function("acl50_eval", |b| {
        b.iter(|| black_box(acl.evaluate(Direction::Egress, black_box(&probe))))
    });
    g.bench_function("sg50_eval", |b| {
        b.iter(|| black_box(sg.allows(Direction::Egress, black_box(&probe), &members)))
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
