//! IPv6 -> IPv4: any input is translated or dropped with a reason, never a panic; what
//! comes out is a well-formed IPv4 packet with a correct header checksum.
#![no_main]
use dataplane::siit::{PacketBuf, Translator};
use libfuzzer_sys::fuzz_target;
use wire::ipv4::Ipv4Packet;

fuzz_target!(|data: &[u8]| {
    let mut buf = data.to_vec();
    let n = buf.len();
    let mut t = Translator::default();
    let mut p = PacketBuf::new(&mut buf, 0, n);
    if t.decode(&mut p, None).is_ok() {
        let ip = Ipv4Packet::new_checked(p.as_slice()).expect("decode produced a bad IPv4 header");
        assert!(ip.verify_checksum());
        assert_eq!(ip.total_len() as usize, p.len());
    }
});
