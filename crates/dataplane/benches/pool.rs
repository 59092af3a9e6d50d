//! Edge selection from a pool: ns per `Pool::select` with 8 members and 100k pinned flows,
//! for a flow already pinned and for a new flow (hash, Maglev lookup, pin insert), and the
//! Maglev table build for 8 and 64 members. Run: `cargo bench -p canopy-dataplane --bench
//! pool`.
//!
//! - `pinned_hot`: the same pinned flow every time (everything in cache).
//! - `pinned_100k`: walks the 100k pinned flows in turn, so the pin lookups miss the caches
//!   as an agent with many flows would (the pinning table is 131072 slots of 40 bytes).
//! - `new_flow`: flows never seen before, each pinned by the measured `select`; the pins
//!   are ended outside the timing so the table stays at 100k-110k pins (76-84% full).
//! - `unpinned`: the table lookup alone (`lookup_unpinned`), for reference.
//! - `build/N`: a `set_members` that changes one weight, which rebuilds the 65537-slot table.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion};
use dataplane::pool::{FlowKey, Member, MemberState, Pool, PoolConfig};
use dataplane::Instant;
use model::{Locator, NetworkId};
use std::hint::black_box;
use std::net::Ipv4Addr;
use std::time::Duration;

const PINNED: u32 = 100_000;

fn members(n: u32) -> Vec<Member> {
    (1..=n)
        .map(|id| {
            let mut b = [0u8; 9];
            b[0] = 0xfd;
            b[5..9].copy_from_slice(&id.to_be_bytes());
            Member {
                id,
                locator: Locator::from_bytes(b),
                weight: 100,
                state: MemberState::Active,
                load: None,
            }
        })
        .collect()
}

/// The `i`-th flow of network `net`: a host's flows to many destinations and ports.
fn flow(net: u32, i: u32) -> FlowKey {
    FlowKey {
        network: NetworkId::new(net).unwrap(),
        src: Ipv4Addr::new(10, 0, (i >> 24) as u8, 2),
        dst: Ipv4Addr::from(0x1e00_0000 | (i.wrapping_mul(2_654_435_761) >> 8)),
        proto: 6,
        src_port: 1024 + (i & 0x7fff) as u16,
        dst_port: 443,
    }
}

fn pinned_pool() -> Pool {
    let cfg = PoolConfig {
        max_pinned_flows: 114_000,
        ..PoolConfig::default()
    };
    let mut p = Pool::new(cfg, &members(8)).unwrap();
    for i in 0..PINNED {
        p.select(&flow(1, i), 100, Instant::ZERO);
    }
    assert_eq!(p.pinned_flows(), PINNED as usize);
    p
}

fn select(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool_select");
    let mut p = pinned_pool();
    let now = Instant::from_secs(1);
    let hot = flow(1, 12_345);
    g.bench_function("pinned_hot", |b| {
        b.iter(|| black_box(p.select(black_box(&hot), 1500, now)))
    });
    let keys: Vec<FlowKey> = (0..PINNED).map(|i| flow(1, i)).collect();
    let mut i = 0usize;
    g.bench_function("pinned_100k", |b| {
        b.iter(|| {
            i = if i + 1 == keys.len() { 0 } else { i + 1 };
            black_box(p.select(&keys[i], 1500, now))
        })
    });
    let mut next = 0u32;
    g.bench_function("new_flow", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(10_000) as u32;
                let fresh: Vec<FlowKey> = (next..next + n).map(|i| flow(2, i)).collect();
                next = next.wrapping_add(n);
                let t = std::time::Instant::now();
                for k in &fresh {
                    black_box(p.select(k, 1500, now));
                }
                total += t.elapsed();
                for k in &fresh {
                    p.end_flow(k);
                }
                left -= u64::from(n);
            }
            total
        })
    });
    assert_eq!(p.counters().table_full_fallbacks, 0);
    let mut j = 0u32;
    g.bench_function("unpinned", |b| {
        b.iter(|| {
            j = j.wrapping_add(1);
            black_box(p.lookup_unpinned(&flow(3, j)))
        })
    });
    g.finish();
}

fn build(c: &mut Criterion) {
    let mut g = c.benchmark_group("pool_build");
    for n in [8u32, 64] {
        let a = members(n);
        let mut b2 = a.clone();
        b2[0].weight += 1;
        let mut p = Pool::new(PoolConfig::default(), &a).unwrap();
        let mut flip = false;
        g.bench_with_input(BenchmarkId::from_parameter(n), &n, |b, _| {
            b.iter(|| {
                flip = !flip;
                p.set_members(if flip { &b2 } else { &a }, Instant::ZERO)
                    .unwrap();
            })
        });
    }
    g.finish();
}

criterion_group!(benches, select, build);
criterion_main!(benches);
