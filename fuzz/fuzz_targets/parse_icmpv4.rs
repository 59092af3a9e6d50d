//! Any bytes: the checked view never reads out of bounds, and what parses re-emits to
//! bytes that parse to the same repr.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::icmpv4::{Icmpv4Packet, Icmpv4Repr};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = Icmpv4Packet::new_checked(data) else { return };
    let _ = (p.payload(), p.verify_checksum(), p.next_hop_mtu(), p.pointer());
    let Ok(r) = Icmpv4Repr::parse(&p) else { return };
    // Same size as the input: views without a length field take the payload from it.
    let mut buf = vec![0u8; data.len()];
    r.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..])).expect("emit of a parsed repr");
    let q = Icmpv4Packet::new_checked(&buf[..]).expect("emitted bytes do not parse");
    assert_eq!(Icmpv4Repr::parse(&q).expect("emitted bytes do not parse"), r);
});
