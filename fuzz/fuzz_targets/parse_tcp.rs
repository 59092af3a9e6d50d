//! Any bytes: the checked view never reads out of bounds, and what parses re-emits to
//! bytes that parse to the same repr.
#![no_main]
use libfuzzer_sys::fuzz_target;
use wire::tcp::{TcpPacket, TcpRepr};

fuzz_target!(|data: &[u8]| {
    let Ok(p) = TcpPacket::new_checked(data) else { return };
    let _ = (p.payload(), p.mss(), p.option_iter().count(), p.verify_checksum_v4([1; 4], [2; 4]));
    let Ok(r) = TcpRepr::parse(&p) else { return };
    // Same size as the input: views without a length field take the payload from it.
    let mut buf = vec![0u8; data.len()];
    r.emit(&mut TcpPacket::new_unchecked(&mut buf[..])).expect("emit of a parsed repr");
    let q = TcpPacket::new_checked(&buf[..]).expect("emitted bytes do not parse");
    assert_eq!(TcpRepr::parse(&q).expect("emitted bytes do not parse"), r);
});
