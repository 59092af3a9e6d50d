//! Any bytes: the checked view never reads out of bounds, and what parses re-emits to
//! bytes that parse to the same repr.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::dhcpv4::{DhcpPacket, DhcpRepr};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = DhcpPacket::new_checked(data) else { return };
    let _ = (p.client_mac(), p.message_type(), p.option_iter().count());
    let Ok(r) = DhcpRepr::parse(&p) else { return };
    let mut buf = vec![0u8; r.buffer_len().max(data.len())];
    r.emit(&mut DhcpPacket::new_unchecked(&mut buf[..])).expect("emit of a parsed repr");
    let q = DhcpPacket::new_checked(&buf[..]).expect("emitted bytes do not parse");
    assert_eq!(DhcpRepr::parse(&q).expect("emitted bytes do not parse"), r);
});
