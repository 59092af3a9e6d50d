#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::ipv6::{Ipv6Packet, Ipv6Repr};

fuzz_target!(|data: &[u8]| {
    if let Ok(p) = Ipv6Packet::new_checked(data) {
        let _ = p.payload();
        if let Ok(e) = p.exts() {
            assert!(e.upper_offset <= p.payload().len());
        }
        let r = Ipv6Repr::parse(&p).unwrap();
        let mut buf = vec![0u8; r.buffer_len()];
        r.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(Ipv6Repr::parse(&Ipv6Packet::new_checked(&buf[..]).unwrap()).unwrap(), r);
    }
});
