//! Any bytes: the checked view never reads out of bounds, and what parses re-emits to
//! bytes that parse to the same repr.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::icmpv6::{Icmpv6Packet, Icmpv6Repr};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Icmpv6Packet::new_checked(data) else { return };
    let _ = (p.payload(), p.verify_checksum(&[0; 16], &[1; 16]), p.mtu(), p.pointer());
    let Ok(r) = Icmpv6Repr::parse(&p) else { return };
    // Same size as the input: views without a length field take the payload from it.
    let mut buf = vec![0u8; data.len()];
    r.emit(&mut Icmpv6Packet::new_unchecked(&mut buf[..])).expect("emit of a parsed repr");
    let q = Icmpv6Packet::new_checked(&buf[..]).expect("emitted bytes do not parse");
    assert_eq!(Icmpv6Repr::parse(&q).expect("emitted bytes do not parse"), r);
});
