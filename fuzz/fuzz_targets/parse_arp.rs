//! Any bytes: the checked view never reads out of bounds, and what parses re-emits to
//! bytes that parse to the same repr.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::arp::{ArpPacket, ArpRepr};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = ArpPacket::new_checked(data) else { return };
    let _ = (p.sender_ip(), p.target_mac());
    let Ok(r) = ArpRepr::parse(&p) else { return };
    // Same size as the input: views without a length field take the payload from it.
    let mut buf = vec![0u8; data.len()];
    r.emit(&mut ArpPacket::new_unchecked(&mut buf[..])).expect("emit of a parsed repr");
    let q = ArpPacket::new_checked(&buf[..]).expect("emitted bytes do not parse");
    assert_eq!(ArpRepr::parse(&q).expect("emitted bytes do not parse"), r);
});
