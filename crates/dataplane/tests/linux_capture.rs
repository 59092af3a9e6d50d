//! The translator on packets that Linux wrote: `fixtures/linux-traffic.pcap` holds what
//! `fixtures/capture-linux-traffic.sh` captured between network namespaces (pings with
//! odd sizes and DSCP, "time exceeded" and "fragmentation needed" from a router, a port
//! unreachable, fragmented UDP and ICMP, a whole TCP connection with options).
//!
//! Every IPv4 packet goes through encode and decode: what translates must carry valid
//! checksums as IPv6 and come back as the same IPv4 packet, but for the fields RFC 7915
//! regenerates; what does not translate must be dropped for the reason RFC 7915 gives.

use dataplane::siit::{EncodeMap, PacketBuf, Translator, HEADROOM};
use dataplane::DropReason;
use model::{Locator, NetworkId};
use wire::checksum;
use wire::ethernet::{EtherType, EthernetFrame};
use wire::ipv4::Ipv4Packet;
use wire::ipv6::Ipv6Packet;
use wire::IpProtocol;

/// The frames of a little-endian, microsecond pcap file with Ethernet link type.
fn frames(pcap: &[u8]) -> Vec<&[u8]> {
    assert_eq!(&pcap[..4], &[0xd4, 0xc3, 0xb2, 0xa1], "little-endian pcap");
    assert_eq!(
        u32::from_le_bytes(pcap[20..24].try_into().unwrap()),
        1,
        "Ethernet"
    );
    let mut out = vec![];
    let mut at = 24;
    while at + 16 <= pcap.len() {
        let caplen = u32::from_le_bytes(pcap[at + 8..at + 12].try_into().unwrap()) as usize;
        out.push(&pcap[at + 16..at + 16 + caplen]);
        at += 16 + caplen;
    }
    assert_eq!(at, pcap.len());
    out
}

fn l4_ok_v6(pkt: &[u8]) -> bool {
    let ip = Ipv6Packet::new_checked(pkt).unwrap();
    let e = ip.exts().unwrap();
    let l4 = &ip.payload()[e.upper_offset..];
    let pseudo = checksum::pseudo_v6(ip.src_bytes(), ip.dst_bytes(), e.upper.0, l4.len() as u32);
    checksum::finish(checksum::add(pseudo, checksum::sum(l4))) == 0
}

#[test]
fn linux_traffic_translates_and_comes_back() {
    let pcap = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/fixtures/linux-traffic.pcap"
    ))
    .unwrap();
    let map = EncodeMap {
        network: NetworkId::new(4242).unwrap(),
        src: "fd63:6e73:0:a::".parse::<Locator>().unwrap(),
        dst: "fd63:6e73:0:b::".parse::<Locator>().unwrap(),
    };
    let mut t = Translator::default();
    let (mut translated, mut fragmented_icmp, mut errors, mut tcp) = (0, 0, 0, 0);
    for frame in frames(&pcap) {
        let eth = EthernetFrame::new_checked(frame).unwrap();
        assert_eq!(eth.ethertype(), EtherType::IPV4);
        let v4 = Ipv4Packet::new_checked(eth.payload()).unwrap();
        let orig = &eth.payload()[..v4.total_len() as usize];

        let mut buf = vec![0u8; HEADROOM + orig.len()];
        buf[HEADROOM..].copy_from_slice(orig);
        let n = buf.len();
        let mut p = PacketBuf::new(&mut buf, HEADROOM, n);
        match t.encode(&map, &mut p, None) {
            Ok(()) => {}
            Err(DropReason::FragmentedIcmp) => {
                assert!(v4.is_fragment() && v4.protocol() == IpProtocol::ICMP);
                fragmented_icmp += 1;
                continue;
            }
            Err(e) => panic!("{:?} -> {:?} {}: {e}", v4.src(), v4.dst(), v4.protocol()),
        }
        let six = p.as_slice().to_vec();
        let ip6 = Ipv6Packet::new_checked(&six[..]).unwrap();
        assert_eq!(ip6.traffic_class(), v4.tos());
        assert_eq!(ip6.hop_limit(), v4.ttl());
        if !v4.is_fragment() {
            assert!(l4_ok_v6(&six), "bad checksum after encode: {:02x?}", six);
        }
        let icmp_error = v4.protocol() == IpProtocol::ICMP && matches!(v4.payload()[0], 3 | 11);
        errors += icmp_error as usize;
        tcp += (v4.protocol() == IpProtocol::TCP) as usize;

        let mut back = six.clone();
        let n = back.len();
        let mut p = PacketBuf::new(&mut back, 0, n);
        let d = t.decode(&mut p, None).unwrap();
        assert_eq!((d.src.vip, d.dst.vip), (v4.src(), v4.dst()));
        let b = Ipv4Packet::new_checked(p.as_slice()).unwrap();
        assert!(b.verify_checksum());
        assert_eq!(
            (b.src(), b.dst(), b.tos(), b.ttl(), b.protocol()),
            (v4.src(), v4.dst(), v4.tos(), v4.ttl(), v4.protocol())
        );
        assert_eq!(b.is_fragment(), v4.is_fragment());
        if v4.is_fragment() {
            assert_eq!(
                (b.ident(), b.frag_offset(), b.more_frags()),
                (v4.ident(), v4.frag_offset(), v4.more_frags())
            );
        }
        if icmp_error {
            // The ICMP header and the inner packet's payload are the same; the inner IPv4
            // header's identification and DF are regenerated, so only compare the rest.
            let (a, z) = (v4.payload(), b.payload());
            assert_eq!(a.len(), z.len());
            assert_eq!(&a[..8], &z[..8], "ICMP header");
            assert_eq!(&a[8 + 20..], &z[8 + 20..], "inner payload");
            assert_eq!(&a[8 + 12..8 + 20], &z[8 + 12..8 + 20], "inner addresses");
        } else {
            assert_eq!(b.payload(), v4.payload());
        }
        translated += 1;
    }
    assert_eq!(translated + fragmented_icmp, 31);
    assert_eq!(
        fragmented_icmp, 6,
        "3 fragments of an echo request and 3 of its reply"
    );
    assert_eq!(
        errors, 4,
        "time exceeded, fragmentation needed, 2 port unreachable"
    );
    assert_eq!(tcp, 10);
    assert_eq!(t.stats().translated, 2 * translated as u64);
    assert_eq!(t.stats().dropped(DropReason::FragmentedIcmp), 6);
}
