//! ns per packet through the RFC 7915 translator, encode and decode, for a 64-byte UDP
//! packet, a 1500-byte TCP segment and a 64 KiB TCP GSO super-packet with a
//! `virtio_net_hdr` (partial checksum). Run: `cargo bench -p canopy-dataplane --bench siit`.
//!
//! Translation happens in place and only touches the headers and the L4 checksum field,
//! so each iteration restores just the first bytes of the buffer (headroom + headers +
//! transport header) rather than the whole packet; that restore (a copy of up to 128 bytes) is
//! included in the numbers.
//!
//! `copy` is the peer measured beside it: only the copy of the packet into another buffer,
//! the least a translator that does not work in place (reading from one buffer, writing
//! the new header and the payload to another) pays before it translates anything.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use dataplane::siit::{Config, EncodeMap, PacketBuf, Translator, HEADROOM};
use model::{Locator, NetworkId};
use std::hint::black_box;
use wire::checksum;
use wire::virtio::{self, VirtioNetHdr};

const RESTORE: usize = 128;

fn ipv4_packet(proto: u8, l4: &[u8]) -> Vec<u8> {
    let total = 20 + l4.len();
    let mut p = vec![
        0x45,
        0,
        (total >> 8) as u8,
        total as u8,
        0,
        1,
        0x40,
        0,
        64,
        proto,
        0,
        0,
        10,
        0,
        0,
        2,
        10,
        0,
        1,
        3,
    ];
    let c = checksum::checksum(&p);
    p[10..12].copy_from_slice(&c.to_be_bytes());
    p.extend_from_slice(l4);
    p
}

fn udp64() -> Vec<u8> {
    let mut u = vec![0x9c, 0x40, 0x00, 0x35, 0, 44, 0, 0];
    u.extend_from_slice(&[0x5a; 36]);
    let s = checksum::add(
        checksum::pseudo_v4([10, 0, 0, 2], [10, 0, 1, 3], 17, 44),
        checksum::sum(&u),
    );
    u[6..8].copy_from_slice(&checksum::finish(s).to_be_bytes());
    ipv4_packet(17, &u)
}

fn tcp(len: usize, partial: bool) -> Vec<u8> {
    let mut t = vec![
        0x9c, 0x40, 0x14, 0x51, 0, 0, 0, 1, 0, 0, 0, 1, 0x50, 0x10, 0xff, 0xff, 0, 0, 0, 0,
    ];
    t.resize(len - 20, 0xa5);
    let pseudo = checksum::pseudo_v4([10, 0, 0, 2], [10, 0, 1, 3], 6, t.len() as u16);
    let c = if partial {
        pseudo
    } else {
        checksum::finish(checksum::add(pseudo, checksum::sum(&t)))
    };
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4_packet(6, &t)
}

fn gso_vnet() -> VirtioNetHdr {
    VirtioNetHdr {
        flags: virtio::FLAG_NEEDS_CSUM,
        gso_type: virtio::GSO_TCPV4,
        hdr_len: 40,
        gso_size: 1448,
        csum_start: 20,
        csum_offset: 16,
    }
}

fn bench(c: &mut Criterion) {
    let map = EncodeMap {
        network: NetworkId::new(0xabcd).unwrap(),
        src: "fd63:6e73:0:1::".parse::<Locator>().unwrap(),
        dst: "fd63:6e73:0:2::".parse::<Locator>().unwrap(),
    };
    let cases: [(&str, Vec<u8>, Option<VirtioNetHdr>); 3] = [
        ("udp_64B", udp64(), None),
        ("tcp_1500B", tcp(1500, false), None),
        ("tcp_gso_64KiB", tcp(65535, true), Some(gso_vnet())),
    ];
    let mut g = c.benchmark_group("siit");
    for (name, pkt, vnet) in cases {
        g.throughput(Throughput::Elements(1));
        // Encode: the IPv4 packet sits after HEADROOM bytes.
        let mut buf = vec![0u8; HEADROOM + pkt.len()];
        buf[HEADROOM..].copy_from_slice(&pkt);
        let restore = RESTORE.min(buf.len());
        let pristine = buf[..restore].to_vec();
        let mut t = Translator::new(Config::default());
        g.bench_function(BenchmarkId::new("encode", name), |b| {
            b.iter(|| {
                buf[..restore].copy_from_slice(&pristine);
                let n = buf.len();
                let mut p = PacketBuf::new(&mut buf, HEADROOM, n);
                let mut v = vnet;
                black_box(t.encode(&map, &mut p, v.as_mut())).unwrap();
                black_box(p.range());
            })
        });

        let mut dst = vec![0u8; HEADROOM + pkt.len()];
        g.bench_function(BenchmarkId::new("copy", name), |b| {
            b.iter(|| {
                dst[HEADROOM..].copy_from_slice(black_box(&pkt[..]));
                black_box(&dst);
            })
        });

        // Decode: the encoded packet at the start of its buffer.
        buf[..restore].copy_from_slice(&pristine);
        let mut p = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
        let mut v = vnet;
        t.encode(&map, &mut p, v.as_mut()).unwrap();
        let r = p.range();
        let mut buf6 = buf[r].to_vec();
        let restore6 = RESTORE.min(buf6.len());
        let pristine6 = buf6[..restore6].to_vec();
        g.bench_function(BenchmarkId::new("decode", name), |b| {
            b.iter(|| {
                buf6[..restore6].copy_from_slice(&pristine6);
                let n = buf6.len();
                let mut p = PacketBuf::new(&mut buf6, 0, n);
                let mut w = v;
                black_box(t.decode(&mut p, w.as_mut())).unwrap();
                black_box(p.range());
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
