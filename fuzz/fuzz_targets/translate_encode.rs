//! IPv4 -> IPv6: any input is translated or dropped with a reason, never a panic; what
//! comes out is a well-formed IPv6 packet that translates back without a parse error.
#![no_main]
use dataplane::siit::{EncodeMap, PacketBuf, Translator, HEADROOM};
use dataplane::DropReason;
use libfuzzer_sys::fuzz_target;
use wire::ipv6::Ipv6Packet;

fuzz_target!(|data: &[u8]| {
    let map = EncodeMap {
        network: model::NetworkId::new(0xabcd).unwrap(),
        src: "fd63:6e73:0:1::".parse().unwrap(),
        dst: "fd63:6e73:0:2::".parse().unwrap(),
    };
    // The first byte picks the headroom, to exercise the path that moves the payload.
    let Some((&h, pkt)) = data.split_first() else { return };
    let headroom = h as usize % (HEADROOM + 1);
    let mut buf = vec![0u8; headroom + pkt.len() + 64];
    buf[headroom..headroom + pkt.len()].copy_from_slice(pkt);
    let mut t = Translator::default();
    let mut p = PacketBuf::new(&mut buf, headroom, headroom + pkt.len());
    if t.encode(&map, &mut p, None).is_ok() {
        let out = p.as_slice().to_vec();
        let ip = Ipv6Packet::new_checked(&out[..]).expect("encode produced a bad IPv6 header");
        assert_eq!(ip.payload_len() as usize + 40, out.len());
        ip.exts().expect("encode produced a bad extension chain");
        let mut back = out.clone();
        let n = back.len();
        let r = t.decode(&mut PacketBuf::new(&mut back, 0, n), None);
        assert!(
            !matches!(r, Err(DropReason::Truncated | DropReason::Malformed | DropReason::NotIpv6)),
            "encoded packet does not decode: {r:?}"
        );
    }
});
