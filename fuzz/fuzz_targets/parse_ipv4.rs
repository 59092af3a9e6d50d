#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::ipv4::{Ipv4Packet, Ipv4Repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Ipv4Packet::new_checked(data) {
        let _ = p.payload();
        let _ = p.verify_checksum();
        let _ = p.has_unexpired_source_route();
        for o in p.option_iter() {
            let _ = o;
        }
        if let Ok(r) = Ipv4Repr::parse(&p) {
            let mut buf = vec![0u8; r.buffer_len()];
            r.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..])).unwrap();
            let q = Ipv4Packet::new_checked(&buf[..]).unwrap();
            assert_eq!(Ipv4Repr::parse(&q).unwrap(), r);
        }
    }
});
