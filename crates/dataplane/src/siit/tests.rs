//! Translator tests: packets built byte by byte (with the wire crate's IPv4 repr and
//! hand-written transport headers), translated, and checked field by field and checksum
//! by checksum; plus property tests for the round trip and for arbitrary input.

use super::*;
use core::net::Ipv4Addr;
use proptest::prelude::*;
use wire::ipv4::{Ipv4Options, Ipv4Repr};
use wire::ipv6::Ipv6Exts;

const NET: u32 = 0x00abcd;
const SRC_LOC: &str = "fd63:6e73:0:1::";
const DST_LOC: &str = "fd63:6e73:0:2::";
const A: [u8; 4] = [10, 0, 0, 2];
const B: [u8; 4] = [10, 0, 1, 3];

fn map() -> EncodeMap {
    EncodeMap {
        network: NetworkId::new(NET).unwrap(),
        src: SRC_LOC.parse().unwrap(),
        dst: DST_LOC.parse().unwrap(),
    }
}

fn sub(loc: &str, ip: [u8; 4]) -> [u8; 16] {
    substrate::encode(&loc.parse().unwrap(), NetworkId::new(NET).unwrap(), ip)
}

struct V4 {
    proto: u8,
    src: [u8; 4],
    dst: [u8; 4],
    ttl: u8,
    tos: u8,
    ident: u16,
    df: bool,
    mf: bool,
    offset: u16,
    options: Vec<u8>,
}

impl V4 {
    fn new(proto: u8) -> Self {
        V4 {
            proto,
            src: A,
            dst: B,
            ttl: 64,
            tos: 0,
            ident: 0x1234,
            df: true,
            mf: false,
            offset: 0,
            options: vec![],
        }
    }

    fn build(&self, payload: &[u8]) -> Vec<u8> {
        let repr = Ipv4Repr {
            src: self.src.into(),
            dst: self.dst.into(),
            protocol: IpProtocol(self.proto),
            ttl: self.ttl,
            tos: self.tos,
            ident: self.ident,
            dont_frag: self.df,
            more_frags: self.mf,
            frag_offset: self.offset,
            payload_len: payload.len(),
            options: Ipv4Options::new(&self.options).unwrap(),
        };
        let mut b = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]))
            .unwrap();
        b[repr.header_len()..].copy_from_slice(payload);
        b
    }
}

fn pseudo4(src: [u8; 4], dst: [u8; 4], proto: u8, len: usize) -> u16 {
    checksum::pseudo_v4(src, dst, proto, len as u16)
}

/// A UDP datagram with a correct checksum (or zero when `zero`).
fn udp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, data: &[u8], zero: bool) -> Vec<u8> {
    let mut u = Vec::new();
    u.extend_from_slice(&sport.to_be_bytes());
    u.extend_from_slice(&dport.to_be_bytes());
    u.extend_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&[0, 0]);
    u.extend_from_slice(data);
    if !zero {
        let mut c = checksum::finish(checksum::add(
            pseudo4(src, dst, 17, u.len()),
            checksum::sum(&u),
        ));
        if c == 0 {
            c = 0xffff;
        }
        u[6..8].copy_from_slice(&c.to_be_bytes());
    }
    u
}

/// A TCP segment (20-byte header, ACK|PSH) with a correct checksum.
fn tcp(src: [u8; 4], dst: [u8; 4], sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    t.extend_from_slice(&sport.to_be_bytes());
    t.extend_from_slice(&dport.to_be_bytes());
    t.extend_from_slice(&0x0102_0304u32.to_be_bytes());
    t.extend_from_slice(&0x0a0b_0c0du32.to_be_bytes());
    t.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
    t.extend_from_slice(data);
    let c = checksum::finish(checksum::add(
        pseudo4(src, dst, 6, t.len()),
        checksum::sum(&t),
    ));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    t
}

fn icmp4(ty: u8, code: u8, rest: [u8; 4], data: &[u8]) -> Vec<u8> {
    let mut m = vec![ty, code, 0, 0];
    m.extend_from_slice(&rest);
    m.extend_from_slice(data);
    let c = checksum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

fn run(
    t: &mut Translator,
    pkt: &[u8],
    headroom: usize,
    f: impl FnOnce(&mut Translator, &mut PacketBuf<'_>) -> Result<(), DropReason>,
) -> Result<Vec<u8>, DropReason> {
    let mut buf = vec![0xeeu8; headroom + pkt.len() + 64];
    buf[headroom..headroom + pkt.len()].copy_from_slice(pkt);
    let mut p = PacketBuf::new(&mut buf, headroom, headroom + pkt.len());
    f(t, &mut p)?;
    Ok(p.as_slice().to_vec())
}

fn encode(t: &mut Translator, pkt: &[u8]) -> Result<Vec<u8>, DropReason> {
    run(t, pkt, HEADROOM, |t, p| t.encode(&map(), p, None))
}

fn decode(t: &mut Translator, pkt: &[u8]) -> Result<Vec<u8>, DropReason> {
    run(t, pkt, 0, |t, p| t.decode(p, None).map(|_| ()))
}

fn enc(pkt: &[u8]) -> Vec<u8> {
    encode(&mut Translator::default(), pkt).expect("encode")
}

fn dec(pkt: &[u8]) -> Vec<u8> {
    decode(&mut Translator::default(), pkt).expect("decode")
}

/// Verifies the upper-layer checksum of an IPv6 packet (TCP, UDP, ICMPv6).
fn v6_l4_ok(pkt: &[u8]) -> bool {
    let ip = Ipv6Packet::new_checked(pkt).unwrap();
    let e = ip.exts().unwrap();
    let l4 = &ip.payload()[e.upper_offset..];
    let pseudo = checksum::pseudo_v6(ip.src_bytes(), ip.dst_bytes(), e.upper.0, l4.len() as u32);
    checksum::finish(checksum::add(pseudo, checksum::sum(l4))) == 0
}

/// Verifies the IPv4 header checksum and the upper-layer checksum (TCP, UDP with a
/// checksum, ICMP).
fn v4_ok(pkt: &[u8]) -> bool {
    let ip = Ipv4Packet::new_checked(pkt).unwrap();
    if !ip.verify_checksum() {
        return false;
    }
    let l4 = ip.payload();
    match ip.protocol() {
        IpProtocol::ICMP => checksum::checksum(l4) == 0,
        IpProtocol::UDP if l4[6] == 0 && l4[7] == 0 => true,
        IpProtocol::TCP | IpProtocol::UDP => {
            let p = pseudo4(ip.src_bytes(), ip.dst_bytes(), ip.protocol().0, l4.len());
            checksum::finish(checksum::add(p, checksum::sum(l4))) == 0
        }
        _ => true,
    }
}

#[test]
fn udp_encodes_with_substrate_addresses_and_valid_checksum() {
    let mut h = V4::new(17);
    h.tos = 0xb9; // DSCP 46 (EF), ECN 01
    h.ttl = 1;
    let pkt = h.build(&udp(A, B, 5353, 53, b"odd", false));
    let out = enc(&pkt);
    let ip = Ipv6Packet::new_checked(&out[..]).unwrap();
    assert_eq!(out.len(), pkt.len() + 20);
    assert_eq!(ip.src_bytes(), &sub(SRC_LOC, A));
    assert_eq!(ip.dst_bytes(), &sub(DST_LOC, B));
    assert_eq!(ip.src().to_string(), "fd63:6e73:0:1:0:abcd:a00:2");
    assert_eq!(ip.traffic_class(), 0xb9);
    assert_eq!(ip.hop_limit(), 1, "TTL 1 passes unchanged by default");
    assert_eq!(ip.next_header(), IpProtocol::UDP);
    assert_eq!(ip.payload_len() as usize, 8 + 3);
    assert_ne!(ip.flow_label(), 0);
    assert!(v6_l4_ok(&out));
    // Payload untouched but for the checksum.
    assert_eq!(&out[40..46], &pkt[20..26]);
    assert_eq!(&out[48..], &pkt[28..]);
}

#[test]
fn flow_label_follows_the_five_tuple() {
    let l1 =
        Ipv6Packet::new_checked(&enc(&V4::new(17).build(&udp(A, B, 1000, 53, b"x", false)))[..])
            .unwrap()
            .flow_label();
    let l1b =
        Ipv6Packet::new_checked(&enc(&V4::new(17).build(&udp(A, B, 1000, 53, b"yy", false)))[..])
            .unwrap()
            .flow_label();
    let l2 =
        Ipv6Packet::new_checked(&enc(&V4::new(17).build(&udp(A, B, 1001, 53, b"x", false)))[..])
            .unwrap()
            .flow_label();
    assert_eq!(l1, l1b);
    assert_ne!(l1, l2);
}

#[test]
fn ttl_zero_is_never_forwarded_and_bad_header_checksums_are_refused() {
    let mut h = V4::new(17);
    h.ttl = 0;
    let mut t = Translator::default();
    assert_eq!(
        encode(&mut t, &h.build(&udp(A, B, 1, 2, b"", false))),
        Err(DropReason::TtlExceeded)
    );
    let mut pkt = V4::new(17).build(&udp(A, B, 1, 2, b"", false));
    pkt[10] ^= 0x12;
    assert_eq!(encode(&mut t, &pkt), Err(DropReason::BadIpChecksum));
    let mut six = enc(&V4::new(17).build(&udp(A, B, 1, 2, b"", false)));
    six[7] = 0;
    assert_eq!(decode(&mut t, &six), Err(DropReason::TtlExceeded));
}

#[test]
fn ttl_one_is_dropped_when_acting_as_a_router() {
    let mut h = V4::new(17);
    h.ttl = 1;
    let pkt = h.build(&udp(A, B, 1, 2, b"", false));
    let mut t = Translator::new(Config {
        decrement_ttl: true,
        ..Config::default()
    });
    assert_eq!(encode(&mut t, &pkt), Err(DropReason::TtlExceeded));
    h.ttl = 2;
    let out = encode(&mut t, &h.build(&udp(A, B, 1, 2, b"", false))).unwrap();
    assert_eq!(Ipv6Packet::new_checked(&out[..]).unwrap().hop_limit(), 1);
    assert_eq!(t.stats().translated, 1);
    assert_eq!(t.stats().dropped(DropReason::TtlExceeded), 1);
}

#[test]
fn tcp_roundtrip_restores_the_packet() {
    let mut h = V4::new(6);
    h.tos = 0x02;
    let pkt = h.build(&tcp(A, B, 40000, 80, &[7u8; 1001]));
    let out = enc(&pkt);
    assert!(v6_l4_ok(&out));
    let back = dec(&out);
    assert!(v4_ok(&back));
    // Same but for identification (regenerated) and the header checksum.
    assert_eq!(back.len(), pkt.len());
    assert_eq!(&back[..4], &pkt[..4]);
    assert_eq!(&back[8..10], &pkt[8..10]);
    assert_eq!(&back[12..], &pkt[12..]);
    let b = Ipv4Packet::new_checked(&back[..]).unwrap();
    assert!(
        !b.dont_frag(),
        "1041 bytes <= 1260: DF clear (RFC 7915 5.1)"
    );
}

#[test]
fn decode_sets_df_above_1260_bytes() {
    let pkt = V4::new(17).build(&udp(A, B, 1, 2, &[1u8; 1300], false));
    let back = dec(&enc(&pkt));
    assert!(Ipv4Packet::new_checked(&back[..]).unwrap().dont_frag());
    assert!(v4_ok(&back));
}

#[test]
fn small_packets_get_identifications_from_the_seed_on() {
    // Not DF at 1260 bytes or less (no fragment header to take one from): the translator
    // makes up the identification, counting from where it was seeded, so that an edge's
    // workers, which share public addresses, do not repeat each other's.
    let six = enc(&V4::new(17).build(&udp(A, B, 1, 2, &[1u8; 100], false)));
    let ident = |t: &mut Translator| {
        let back = decode(t, &six).expect("decode");
        let b = Ipv4Packet::new_checked(&back[..]).unwrap();
        assert!(!b.dont_frag() && b.verify_checksum());
        b.ident()
    };
    let mut t = Translator::default();
    t.seed_ident(0x8000);
    assert_eq!((ident(&mut t), ident(&mut t)), (0x8001, 0x8002));
    t.seed_ident(u16::MAX);
    assert_eq!(ident(&mut t), 0);
}

#[test]
fn options_are_removed_and_source_routes_dropped() {
    let mut h = V4::new(17);
    h.options = vec![7, 7, 4, 0, 0, 0, 0, 0]; // record route, room for one address
    let pkt = h.build(&udp(A, B, 1, 2, b"hello", false));
    let out = enc(&pkt);
    assert_eq!(out.len(), pkt.len() - 8 + 20);
    assert!(v6_l4_ok(&out));

    h.options = vec![131, 7, 4, 198, 51, 100, 1, 0]; // LSRR with a hop left
    let mut t = Translator::default();
    let pkt = h.build(&udp(A, B, 1, 2, b"hello", false));
    assert_eq!(encode(&mut t, &pkt), Err(DropReason::SourceRoute));
    h.options = vec![131, 7, 8, 198, 51, 100, 1, 0]; // LSRR used up
    assert!(encode(&mut t, &h.build(&udp(A, B, 1, 2, b"hello", false))).is_ok());
}

#[test]
fn fragments_get_a_fragment_header_and_come_back() {
    let whole = udp(A, B, 7, 9, &[3u8; 100], false);
    let mut h = V4::new(17);
    h.df = false;
    h.ident = 0xbeef;
    // First fragment: 48 bytes of the datagram, more to come.
    h.mf = true;
    let first = h.build(&whole[..48]);
    // Last fragment: the rest, at offset 48 / 8 = 6.
    h.mf = false;
    h.offset = 6;
    let last = h.build(&whole[48..]);

    for (frag, off, more) in [(&first, 0u16, true), (&last, 6, false)] {
        let out = enc(frag);
        let ip = Ipv6Packet::new_checked(&out[..]).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::IPV6_FRAG);
        let e = ip.exts().unwrap();
        let (at, f) = e.frag.unwrap();
        assert_eq!(at, 0);
        assert_eq!(
            f,
            FragRepr {
                next_header: IpProtocol::UDP,
                offset: off,
                more_frags: more,
                ident: 0xbeef
            }
        );
        assert_eq!(out.len(), frag.len() + 28);
        let back = dec(&out);
        let b = Ipv4Packet::new_checked(&back[..]).unwrap();
        assert!(b.verify_checksum());
        assert_eq!(
            (b.ident(), b.frag_offset(), b.more_frags(), b.dont_frag()),
            (0xbeef, off, more, false)
        );
        assert_eq!(b.payload(), &frag[20..]);
    }
    // The UDP checksum in the first fragment covers the whole datagram: reassemble the
    // translated payloads and check it over the IPv6 pseudo-header.
    let f1 = enc(&first);
    let f2 = enc(&last);
    let mut l4 = f1[48..].to_vec();
    l4.extend_from_slice(&f2[48..]);
    let pseudo = checksum::pseudo_v6(&sub(SRC_LOC, A), &sub(DST_LOC, B), 17, l4.len() as u32);
    assert_eq!(
        checksum::finish(checksum::add(pseudo, checksum::sum(&l4))),
        0
    );
}

#[test]
fn udp_zero_checksum() {
    let pkt = V4::new(17).build(&udp(A, B, 1, 2, b"abc", true));
    let out = enc(&pkt);
    assert!(v6_l4_ok(&out), "zero checksum computed for IPv6");
    assert_ne!(&out[46..48], &[0, 0]);
    // Back to IPv4 it keeps the (valid) computed checksum.
    assert!(v4_ok(&dec(&out)));

    let mut t = Translator::new(Config {
        udp_zero_checksum: UdpZeroChecksum::Drop,
        ..Config::default()
    });
    assert_eq!(encode(&mut t, &pkt), Err(DropReason::UdpZeroChecksum));

    let mut h = V4::new(17);
    h.mf = true;
    h.df = false;
    let frag = h.build(&udp(A, B, 1, 2, &[0u8; 16], true)[..16]);
    assert_eq!(
        encode(&mut Translator::default(), &frag),
        Err(DropReason::UdpZeroChecksum)
    );
    // IPv6 UDP without checksum is invalid: dropped on decode.
    let mut bad = out.clone();
    bad[46] = 0;
    bad[47] = 0;
    assert_eq!(
        decode(&mut Translator::default(), &bad),
        Err(DropReason::UdpZeroChecksum)
    );
}

#[test]
fn icmp_echo_both_ways() {
    let ping = V4::new(1).build(&icmp4(8, 0, [0x12, 0x34, 0, 1], b"abcdefgh"));
    let out = enc(&ping);
    let ip = Ipv6Packet::new_checked(&out[..]).unwrap();
    assert_eq!(ip.next_header(), IpProtocol::ICMPV6);
    assert_eq!(ip.payload()[0], 128);
    assert!(v6_l4_ok(&out));
    let back = dec(&out);
    assert!(v4_ok(&back));
    assert_eq!(&back[20..], &ping[20..]);
    let reply = V4::new(1).build(&icmp4(0, 0, [0x12, 0x34, 0, 1], b"x"));
    assert_eq!(
        Ipv6Packet::new_checked(&enc(&reply)[..]).unwrap().payload()[0],
        129
    );
}

#[test]
fn untranslatable_icmp_is_dropped_by_reason() {
    let mut t = Translator::default();
    for ty in [4u8, 5, 6, 9, 10, 13, 14, 15, 16, 17, 18, 42] {
        let m = V4::new(1).build(&icmp4(ty, 0, [0; 4], &[0u8; 28]));
        assert_eq!(
            encode(&mut t, &m),
            Err(DropReason::IcmpUntranslatable),
            "type {ty}"
        );
    }
    let mut h = V4::new(1);
    h.mf = true;
    h.df = false;
    let frag = h.build(&icmp4(8, 0, [0; 4], &[0u8; 16]));
    assert_eq!(encode(&mut t, &frag), Err(DropReason::FragmentedIcmp));
    let igmp = V4::new(2).build(&[0x11, 0, 0, 0, 0, 0, 0, 0]);
    assert_eq!(encode(&mut t, &igmp), Err(DropReason::Igmp));
    for proto in [0u8, 43, 44, 58, 60] {
        let p = V4::new(proto).build(&[0u8; 16]);
        assert_eq!(
            encode(&mut t, &p),
            Err(DropReason::ProtocolUntranslatable),
            "{proto}"
        );
    }
}

/// An ICMPv4 error from B about a packet A sent to B: the error goes B -> A.
fn error_about(ty: u8, code: u8, rest: [u8; 4], inner: &[u8]) -> Vec<u8> {
    let mut h = V4::new(1);
    h.src = B;
    h.dst = A;
    h.build(&icmp4(ty, code, rest, inner))
}

fn inner_of_v6(out: &[u8]) -> (Ipv6Packet<&[u8]>, Ipv6Exts) {
    let inner = Ipv6Packet::new_unchecked(&out[48..]);
    let e = Ipv6Exts::walk(inner.next_header(), &out[88..]).unwrap();
    (inner, e)
}

#[test]
fn port_unreachable_carries_the_translated_inner_packet() {
    let orig = V4::new(17).build(&udp(A, B, 5000, 53, b"query", false));
    let err = error_about(3, 3, [0; 4], &orig);
    // Encoded by B's host: outer B -> A, so map.src is B's locator.
    let out = enc(&err);
    assert!(v6_l4_ok(&out));
    let icmp = &out[40..];
    assert_eq!((icmp[0], icmp[1]), (1, 4));
    let (inner, e) = inner_of_v6(&out);
    // The inner packet went A -> B: A lives behind the outer destination's locator.
    assert_eq!(inner.src_bytes(), &sub(DST_LOC, A));
    assert_eq!(inner.dst_bytes(), &sub(SRC_LOC, B));
    assert_eq!(e.upper, IpProtocol::UDP);
    assert_eq!(inner.payload_len() as usize, orig.len() - 20);
    // The inner UDP checksum is right for the inner IPv6 header (the datagram is whole).
    let l4 = &out[88..];
    let pseudo = checksum::pseudo_v6(inner.src_bytes(), inner.dst_bytes(), 17, l4.len() as u32);
    assert_eq!(
        checksum::finish(checksum::add(pseudo, checksum::sum(l4))),
        0
    );

    // And back: the same ICMPv4 error, but for what RFC 7915 regenerates (the outer and
    // inner identification and DF).
    let back = dec(&out);
    assert!(v4_ok(&back));
    assert_eq!(back.len(), err.len());
    assert_eq!(&back[20..28], &err[20..28]);
    assert_eq!(&back[20 + 8 + 20..], &err[20 + 8 + 20..]);
    let inner_back = Ipv4Packet::new_checked(&back[28..]).unwrap();
    let inner_orig = Ipv4Packet::new_checked(&err[28..]).unwrap();
    assert_eq!((inner_back.src_bytes(), inner_back.dst_bytes()), (A, B));
    assert_eq!(
        (inner_back.ttl(), inner_back.tos(), inner_back.total_len()),
        (inner_orig.ttl(), inner_orig.tos(), inner_orig.total_len())
    );
    assert!(inner_back.verify_checksum());
}

#[test]
fn error_code_and_pointer_mapping() {
    let orig = V4::new(6).build(&tcp(A, B, 1, 2, b""));
    type Msg = (u8, u8, [u8; 4]);
    let cases: [(Msg, Option<Msg>); 12] = [
        ((3, 0, [0; 4]), Some((1, 0, [0; 4]))),
        ((3, 1, [0; 4]), Some((1, 0, [0; 4]))),
        ((3, 2, [0; 4]), Some((4, 1, [0, 0, 0, 6]))),
        ((3, 9, [0; 4]), Some((1, 1, [0; 4]))),
        ((3, 13, [0; 4]), Some((1, 1, [0; 4]))),
        ((3, 14, [0; 4]), None),
        ((11, 0, [0; 4]), Some((3, 0, [0; 4]))),
        ((11, 1, [0; 4]), Some((3, 1, [0; 4]))),
        ((12, 0, [9, 0, 0, 0]), Some((4, 0, [0, 0, 0, 6]))),
        ((12, 0, [16, 0, 0, 0]), Some((4, 0, [0, 0, 0, 24]))),
        ((12, 0, [5, 0, 0, 0]), None),
        ((12, 1, [0; 4]), None),
    ];
    for ((ty, code, rest), want) in cases {
        let mut t = Translator::default();
        let got = encode(&mut t, &error_about(ty, code, rest, &orig));
        match want {
            Some((t6, c6, r6)) => {
                let out = got.unwrap_or_else(|e| panic!("{ty}/{code}: {e}"));
                assert_eq!(&out[40..42], &[t6, c6], "{ty}/{code}");
                assert_eq!(&out[44..48], &r6, "{ty}/{code}");
                assert!(v6_l4_ok(&out));
            }
            None => assert_eq!(got, Err(DropReason::IcmpUntranslatable), "{ty}/{code}"),
        }
    }
}

#[test]
fn fragmentation_needed_becomes_packet_too_big() {
    let orig = V4::new(6).build(&tcp(A, B, 1, 2, &[0u8; 1480]));
    let out = enc(&error_about(3, 4, [0, 0, 0x05, 0x78], &orig)); // MTU 1400
    assert_eq!(&out[40..42], &[2, 0]);
    assert_eq!(u32::from_be_bytes(out[44..48].try_into().unwrap()), 1420);
    assert!(out.len() <= 1280, "ICMPv6 error within the minimum MTU");
    assert!(v6_l4_ok(&out));
    // Back again: MTU 1400 once more.
    let back = dec(&out);
    assert!(v4_ok(&back));
    assert_eq!(&back[20..22], &[3, 4]);
    assert_eq!(u16::from_be_bytes([back[26], back[27]]), 1400);
    assert!(back.len() <= 576);

    // A router that predates RFC 1191 says MTU 0: use the plateau below 1500 (1492).
    let out = enc(&error_about(3, 4, [0; 4], &orig));
    assert_eq!(
        u32::from_be_bytes(out[44..48].try_into().unwrap()),
        1492 + 20
    );
    // Capped by the substrate MTU when one is configured.
    let mut t = Translator::new(Config {
        mtu: Some(1300),
        ..Config::default()
    });
    let out = encode(&mut t, &error_about(3, 4, [0, 0, 0x05, 0x78], &orig)).unwrap();
    assert_eq!(u32::from_be_bytes(out[44..48].try_into().unwrap()), 1300);
    assert!(out.len() <= 1300);
}

#[test]
fn errors_about_errors_bad_checksums_and_bad_inners_are_dropped() {
    let orig = V4::new(17).build(&udp(A, B, 1, 2, b"", false));
    let inner_err = error_about(3, 3, [0; 4], &orig);
    let mut t = Translator::default();
    let mut swapped = inner_err.clone();
    swapped[12..16].copy_from_slice(&A);
    swapped[16..20].copy_from_slice(&B);
    assert_eq!(
        encode(&mut t, &error_about(11, 0, [0; 4], &swapped)),
        Err(DropReason::IcmpErrorInError)
    );
    let mut bad = error_about(3, 3, [0; 4], &orig);
    *bad.last_mut().unwrap() ^= 0xff;
    assert_eq!(encode(&mut t, &bad), Err(DropReason::IcmpBadChecksum));
    assert_eq!(
        encode(&mut t, &error_about(3, 3, [0; 4], &[0x45, 0, 0])),
        Err(DropReason::IcmpBadInner)
    );
}

#[test]
fn inner_packet_of_another_network_is_refused_on_decode() {
    let orig = V4::new(17).build(&udp(A, B, 1, 2, b"", false));
    let mut out = enc(&error_about(3, 3, [0; 4], &orig));
    // Rewrite the inner source's network id (and fix the ICMPv6 checksum so that only
    // the network differs).
    out[48 + 8 + 11] ^= 1;
    out[42] = 0;
    out[43] = 0;
    let p = checksum::pseudo_v6(
        out[8..24].try_into().unwrap(),
        out[24..40].try_into().unwrap(),
        58,
        (out.len() - 40) as u32,
    );
    let c = checksum::finish(checksum::add(p, checksum::sum(&out[40..])));
    out[42..44].copy_from_slice(&c.to_be_bytes());
    assert_eq!(
        decode(&mut Translator::default(), &out),
        Err(DropReason::InnerNetworkMismatch)
    );
}

#[test]
fn decode_skips_extension_headers_and_refuses_routing() {
    let pkt = V4::new(17).build(&udp(A, B, 1, 2, b"data", false));
    let out = enc(&pkt);
    // Insert a hop-by-hop header (8 bytes of PadN) after the fixed header.
    let mut with_hbh = out[..40].to_vec();
    with_hbh[6] = 0;
    with_hbh[4..6].copy_from_slice(&((out.len() - 40 + 8) as u16).to_be_bytes());
    with_hbh.extend_from_slice(&[17, 0, 1, 4, 0, 0, 0, 0]);
    with_hbh.extend_from_slice(&out[40..]);
    let back = dec(&with_hbh);
    assert!(v4_ok(&back));
    assert_eq!(&back[20..], &pkt[20..]);

    let mut with_rh = with_hbh.clone();
    with_rh[6] = 43;
    with_rh[40..48].copy_from_slice(&[17, 0, 0, 1, 0, 0, 0, 0]); // segments left 1
    assert_eq!(
        decode(&mut Translator::default(), &with_rh),
        Err(DropReason::RoutingHeader)
    );
    with_rh[43] = 0;
    assert!(decode(&mut Translator::default(), &with_rh).is_ok());
}

#[test]
fn mtu_limit_and_wrong_versions() {
    let mut t = Translator::new(Config {
        mtu: Some(1280),
        ..Config::default()
    });
    let fits = V4::new(17).build(&udp(A, B, 1, 2, &[0u8; 1280 - 48], false));
    assert!(encode(&mut t, &fits).is_ok());
    let big = V4::new(17).build(&udp(A, B, 1, 2, &[0u8; 1280 - 47], false));
    assert_eq!(encode(&mut t, &big), Err(DropReason::TooBig));
    assert_eq!(encode(&mut t, &enc(&fits)), Err(DropReason::NotIpv4));
    assert_eq!(decode(&mut t, &fits), Err(DropReason::NotIpv6));
    assert_eq!(encode(&mut t, &[]), Err(DropReason::NotIpv4));
    assert_eq!(encode(&mut t, &fits[..30]), Err(DropReason::Truncated));
}

#[test]
fn without_headroom_the_payload_moves() {
    let pkt = V4::new(6).build(&tcp(A, B, 1, 2, b"moved"));
    let with = enc(&pkt);
    for headroom in [0, 5, 19, 20] {
        let out = run(&mut Translator::default(), &pkt, headroom, |t, p| {
            t.encode(&map(), p, None)
        });
        assert_eq!(out.unwrap(), with, "headroom {headroom}");
    }
    // No room at all: dropped, not panicked.
    let mut buf = pkt.clone();
    let n = buf.len();
    let mut p = PacketBuf::new(&mut buf, 0, n);
    assert_eq!(
        Translator::default().encode(&map(), &mut p, None),
        Err(DropReason::NoRoom)
    );
}

/// A TCP super-packet as a TAP device with IFF_VNET_HDR hands it over: checksum partial
/// (pseudo-header sum only, including the full TCP length), GSO type TCPV4.
fn gso_tcp(len: usize) -> (Vec<u8>, VirtioNetHdr) {
    let data: Vec<u8> = (0..len).map(|i| i as u8).collect();
    let mut seg = tcp(A, B, 40000, 5201, &data);
    let partial = pseudo4(A, B, 6, seg.len());
    seg[16..18].copy_from_slice(&partial.to_be_bytes());
    let mut h = V4::new(6);
    h.ident = 0;
    let pkt = h.build(&seg);
    let vnet = VirtioNetHdr {
        flags: virtio::FLAG_NEEDS_CSUM,
        gso_type: virtio::GSO_TCPV4 | virtio::GSO_ECN,
        hdr_len: 40,
        gso_size: 1448,
        csum_start: 20,
        csum_offset: 16,
    };
    (pkt, vnet)
}

/// Completes a partial checksum the way the device would, and verifies it.
fn complete_partial_ok(pkt: &[u8], v: &VirtioNetHdr, pseudo_full: impl Fn(&[u8]) -> u16) -> bool {
    let l4 = &pkt[v.csum_start as usize..];
    // The field holds the pseudo-header sum; summing the segment (field included) and
    // inverting gives the checksum the device would write.
    let c = checksum::finish(checksum::sum(l4));
    let mut full = l4.to_vec();
    let at = v.csum_offset as usize;
    full[at..at + 2].copy_from_slice(&c.to_be_bytes());
    checksum::finish(checksum::add(pseudo_full(pkt), checksum::sum(&full))) == 0
}

#[test]
fn gso_super_packet_is_translated_with_its_virtio_header() {
    let (pkt, vnet) = gso_tcp(65535 - 40);
    assert_eq!(pkt.len(), 65535);
    assert!(complete_partial_ok(&pkt, &vnet, |p| pseudo4(
        A,
        B,
        6,
        p.len() - 20
    )));
    let mut v = vnet;
    let out = run(&mut Translator::default(), &pkt, HEADROOM, |t, p| {
        t.encode(&map(), p, Some(&mut v))
    })
    .unwrap();
    assert_eq!(out.len(), 65555);
    assert_eq!(v.gso_type, virtio::GSO_TCPV6 | virtio::GSO_ECN);
    assert_eq!(
        (v.csum_start, v.csum_offset, v.hdr_len, v.gso_size),
        (40, 16, 60, 1448)
    );
    assert_eq!(v.flags, virtio::FLAG_NEEDS_CSUM);
    let ip = Ipv6Packet::new_checked(&out[..]).unwrap();
    assert_eq!(ip.payload_len() as usize, 65535 - 20);
    assert!(complete_partial_ok(&out, &v, |p| checksum::pseudo_v6(
        p[8..24].try_into().unwrap(),
        p[24..40].try_into().unwrap(),
        6,
        (p.len() - 40) as u32
    )));

    // And back to IPv4 with the TCPV4 type and offsets again.
    let back = run(&mut Translator::default(), &out, 0, |t, p| {
        t.decode(p, Some(&mut v)).map(|_| ())
    })
    .unwrap();
    assert_eq!(v, VirtioNetHdr { ..vnet });
    assert_eq!(&back[20..], &pkt[20..]);
}

#[test]
fn offload_headers_that_do_not_match_are_refused() {
    let (pkt, vnet) = gso_tcp(3000);
    let mut t = Translator::default();
    let mut bad = vnet;
    bad.gso_type = virtio::GSO_UDP_L4;
    assert_eq!(
        run(&mut t, &pkt, HEADROOM, |t, p| t.encode(
            &map(),
            p,
            Some(&mut bad)
        )),
        Err(DropReason::OffloadMismatch)
    );
    let mut bad = vnet;
    bad.csum_start = 34; // an Ethernet-relative offset given for an IP packet
    assert_eq!(
        run(&mut t, &pkt, HEADROOM, |t, p| t.encode(
            &map(),
            p,
            Some(&mut bad)
        )),
        Err(DropReason::OffloadMismatch)
    );
    // The MTU does not apply to a super-packet, which the kernel will segment.
    let mut t = Translator::new(Config {
        mtu: Some(1500),
        ..Config::default()
    });
    let mut ok = vnet;
    assert!(run(&mut t, &pkt, HEADROOM, |t, p| t.encode(
        &map(),
        p,
        Some(&mut ok)
    ))
    .is_ok());
}

#[test]
fn checksum_offload_without_gso() {
    // NEEDS_CSUM on a plain UDP packet: the partial sum is adjusted, zero is not special.
    let mut u = udp(A, B, 1, 2, b"abc", true);
    let partial = pseudo4(A, B, 17, u.len());
    u[6..8].copy_from_slice(&partial.to_be_bytes());
    let pkt = V4::new(17).build(&u);
    let mut v = VirtioNetHdr {
        flags: virtio::FLAG_NEEDS_CSUM,
        csum_start: 20,
        csum_offset: 6,
        ..VirtioNetHdr::default()
    };
    let out = run(&mut Translator::default(), &pkt, HEADROOM, |t, p| {
        t.encode(&map(), p, Some(&mut v))
    })
    .unwrap();
    assert_eq!(v.csum_start, 40);
    assert!(complete_partial_ok(&out, &v, |p| checksum::pseudo_v6(
        p[8..24].try_into().unwrap(),
        p[24..40].try_into().unwrap(),
        17,
        (p.len() - 40) as u32
    )));
}

// ---- properties -------------------------------------------------------------------------

#[derive(Debug, Clone)]
enum L4 {
    Udp { zero: bool },
    Tcp,
    Echo,
    Other(u8),
}

prop_compose! {
    fn arb_packet()(
        l4 in prop_oneof![
            any::<bool>().prop_map(|zero| L4::Udp { zero }),
            Just(L4::Tcp),
            Just(L4::Echo),
            prop_oneof![Just(47u8), Just(50), Just(132)].prop_map(L4::Other),
        ],
        src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
        ttl in 1u8.., tos in any::<u8>(), df in any::<bool>(),
        sport in any::<u16>(), dport in any::<u16>(),
        data in proptest::collection::vec(any::<u8>(), 0..1400),
        opt_words in 0usize..=3,
    ) -> (Vec<u8>, L4) {
        let payload = match l4 {
            L4::Udp { zero } => udp(src, dst, sport, dport, &data, zero),
            L4::Tcp => tcp(src, dst, sport, dport, &data),
            L4::Echo => icmp4(8, 0, [0, 1, 0, 2], &data),
            L4::Other(_) => data.clone(),
        };
        let proto = match l4 { L4::Udp { .. } => 17, L4::Tcp => 6, L4::Echo => 1, L4::Other(p) => p };
        let mut h = V4::new(proto);
        h.src = src;
        h.dst = dst;
        h.ttl = ttl;
        h.tos = tos;
        h.df = df;
        h.options = [1u8].repeat(opt_words * 4); // NOPs
        (h.build(&payload), l4)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// decode(encode(p)) == p, modulo what RFC 7915 changes: options removed,
    /// identification and DF regenerated, header checksum recomputed, and a UDP checksum
    /// that was zero computed.
    #[test]
    fn roundtrip(pk in arb_packet()) {
        let (pkt, l4) = pk;
        let out = enc(&pkt);
        prop_assert!(v6_l4_ok(&out) || matches!(l4, L4::Other(_)));
        let back = dec(&out);
        prop_assert!(v4_ok(&back));
        let a = Ipv4Packet::new_checked(&pkt[..]).unwrap();
        let b = Ipv4Packet::new_checked(&back[..]).unwrap();
        prop_assert_eq!(b.header_len(), 20);
        prop_assert_eq!((a.src(), a.dst(), a.ttl(), a.tos(), a.protocol()),
                        (b.src(), b.dst(), b.ttl(), b.tos(), b.protocol()));
        prop_assert_eq!(b.dont_frag(), b.total_len() > 1260);
        match l4 {
            L4::Udp { zero: true } => {
                prop_assert_eq!(&a.payload()[..6], &b.payload()[..6]);
                prop_assert_eq!(&a.payload()[8..], &b.payload()[8..]);
            }
            _ => prop_assert_eq!(a.payload(), b.payload()),
        }
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200), headroom in 0usize..60) {
        let mut t = Translator::default();
        for first in [0x45u8, 0x60] {
            let mut b = bytes.clone();
            if let Some(x) = b.first_mut() { *x = first; }
            let _ = run(&mut t, &b, headroom, |t, p| t.encode(&map(), p, None));
            let _ = run(&mut t, &b, headroom, |t, p| t.decode(p, None).map(|_| ()));
        }
        prop_assert_eq!(t.stats().translated + t.stats().drops.total(), 4);
    }

    /// Arbitrary bytes after a valid IPv4 header and an ICMP error header: the error path
    /// parses attacker-controlled inner packets.
    #[test]
    fn arbitrary_icmp_errors_never_panic(ty in prop_oneof![Just(3u8), Just(11), Just(12)], code in 0u8..16,
                                         rest in any::<[u8; 4]>(), inner in proptest::collection::vec(any::<u8>(), 0..120)) {
        let mut inner = inner;
        if inner.len() > 20 { inner[0] = 0x45; }
        let err = error_about(ty, code, rest, &inner);
        let mut t = Translator::default();
        if let Ok(out) = encode(&mut t, &err) {
            prop_assert!(v6_l4_ok(&out));
            let _ = decode(&mut t, &out);
        }
    }
}

#[test]
fn addresses_decode_to_the_substrate_parts() {
    let pkt = V4::new(17).build(&udp(A, B, 1, 2, b"", false));
    let out = enc(&pkt);
    let mut buf = out.clone();
    let n = buf.len();
    let d = Translator::default()
        .decode(&mut PacketBuf::new(&mut buf, 0, n), None)
        .unwrap();
    assert_eq!(d.src.locator, SRC_LOC.parse().unwrap());
    assert_eq!(d.dst.locator, DST_LOC.parse().unwrap());
    assert_eq!(d.src.network.get(), NET);
    assert_eq!(
        (d.src.vip, d.dst.vip),
        (Ipv4Addr::from(A), Ipv4Addr::from(B))
    );
}

#[test]
fn encode_with_a_peer_network_and_a_routed_hop() {
    let peer = NetworkId::new(NET + 1).unwrap();
    let opts = EncodeOpts {
        dst_network: peer,
        routed: true,
    };
    let with = |t: &mut Translator, pkt: &[u8]| {
        run(t, pkt, HEADROOM, |t, p| {
            t.encode_with(&map(), opts, p, None)
        })
    };
    let mut t = Translator::default();
    let mut h = V4::new(17);
    h.ttl = 9;
    let pkt = h.build(&udp(A, B, 5353, 53, b"peer", false));
    let out = with(&mut t, &pkt).unwrap();
    let ip = Ipv6Packet::new_checked(&out[..]).unwrap();
    assert_eq!(
        ip.src_bytes(),
        &sub(SRC_LOC, A),
        "the source keeps its network"
    );
    assert_eq!(
        ip.dst_bytes(),
        &substrate::encode(&DST_LOC.parse().unwrap(), peer, B),
        "the destination is in the peer network"
    );
    assert_eq!(ip.hop_limit(), 8, "routed: one hop less");
    assert!(v6_l4_ok(&out), "the checksum covers the peer's address");
    // A routed packet with no hop left is not sent.
    h.ttl = 1;
    let pkt = h.build(&udp(A, B, 5353, 53, b"peer", false));
    assert_eq!(with(&mut t, &pkt), Err(DropReason::TtlExceeded));

    // An error about a packet that came across the peering: the quoted packet's source
    // is in the peer network (behind the outer destination), its destination in ours.
    // (B, here, answers A, in the peer network, about A's datagram.)
    let orig = V4::new(17).build(&udp(A, B, 5000, 53, b"query", false));
    let err = error_about(3, 3, [0; 4], &orig);
    let out = with(&mut t, &err).unwrap();
    let (inner, _) = inner_of_v6(&out);
    assert_eq!(
        inner.src_bytes(),
        &substrate::encode(&DST_LOC.parse().unwrap(), peer, A)
    );
    assert_eq!(inner.dst_bytes(), &sub(SRC_LOC, B));
    // The receiving side's decode accepts it: the inner networks are the outer reversed.
    assert!(v4_ok(&dec(&out)));
}
