//! Health probes between agents and edges: ICMPv6 echo on the substrate, between the
//! **probe addresses** of two locators, which are the locators' base addresses (network 0,
//! IPv4 0.0.0.0). No tenant network has id 0, so a probe never meets a node's traffic.
//!
//! An agent sends an echo request from its probe address to a pool member's; the edge
//! turns it into the echo reply in place ([`answer`]); the agent counts the answers and
//! marks a member that stops answering as down in its own pools.

use model::{substrate, Locator, NetworkId};
use wire::checksum;
use wire::ipv6::HEADER_LEN;

/// ICMPv6 echo request and reply (RFC 4443).
pub const ECHO_REQUEST: u8 = 128;
pub const ECHO_REPLY: u8 = 129;
/// Hop limit of probes and their answers.
const HOP_LIMIT: u8 = 64;
/// Bytes of a probe: IPv6 header, ICMPv6 echo header, 8 bytes of the send time.
pub const LEN: usize = HEADER_LEN + 16;
const ICMPV6: u8 = 58;

/// The probe address of `locator`.
pub fn address(locator: &Locator) -> [u8; 16] {
    substrate::encode(locator, NetworkId::new(0).expect("0 fits"), [0; 4])
}

/// An echo request or reply between probe addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Echo {
    pub ty: u8,
    pub src: Locator,
    pub dst: Locator,
    pub ident: u16,
    pub seq: u16,
}

/// Writes a probe (echo request) from `src`'s probe address to `dst`'s into `out` (at
/// least [`LEN`] bytes); returns its length.
pub fn request(
    out: &mut [u8],
    src: &Locator,
    dst: &Locator,
    ident: u16,
    seq: u16,
    millis: u64,
) -> usize {
    let (s, d) = (address(src), address(dst));
    let icmp_len = LEN - HEADER_LEN;
    out[..LEN].fill(0);
    out[0] = 0x60;
    out[4..6].copy_from_slice(&(icmp_len as u16).to_be_bytes());
    out[6] = ICMPV6;
    out[7] = HOP_LIMIT;
    out[8..24].copy_from_slice(&s);
    out[24..40].copy_from_slice(&d);
    let m = &mut out[HEADER_LEN..LEN];
    m[0] = ECHO_REQUEST;
    m[4..6].copy_from_slice(&ident.to_be_bytes());
    m[6..8].copy_from_slice(&seq.to_be_bytes());
    m[8..16].copy_from_slice(&millis.to_be_bytes());
    let pseudo = checksum::pseudo_v6(&s, &d, ICMPV6, icmp_len as u32);
    let c = checksum::finish(checksum::add(pseudo, checksum::sum(m)));
    m[2..4].copy_from_slice(&c.to_be_bytes());
    LEN
}

/// The echo in `pkt`, if it is an ICMPv6 echo request or reply whose destination is a
/// probe address (network 0, IPv4 0.0.0.0) and whose checksum verifies.
pub fn parse(pkt: &[u8]) -> Option<Echo> {
    if pkt.len() < HEADER_LEN + 8 || pkt[0] >> 4 != 6 || pkt[6] != ICMPV6 {
        return None;
    }
    let plen = u16::from_be_bytes([pkt[4], pkt[5]]) as usize;
    let (s, d): ([u8; 16], [u8; 16]) = (pkt[8..24].try_into().ok()?, pkt[24..40].try_into().ok()?);
    if d[9..] != [0; 7] || s[9..] != [0; 7] || plen < 8 || HEADER_LEN + plen > pkt.len() {
        return None;
    }
    let m = &pkt[HEADER_LEN..HEADER_LEN + plen];
    if !matches!(m[0], ECHO_REQUEST | ECHO_REPLY) || m[1] != 0 {
        return None;
    }
    let pseudo = checksum::pseudo_v6(&s, &d, ICMPV6, plen as u32);
    if checksum::finish(checksum::add(pseudo, checksum::sum(m))) != 0 {
        return None;
    }
    let loc = |a: &[u8; 16]| substrate::SubstrateAddr::decode(a).locator;
    Some(Echo {
        ty: m[0],
        src: loc(&s),
        dst: loc(&d),
        ident: u16::from_be_bytes([m[4], m[5]]),
        seq: u16::from_be_bytes([m[6], m[7]]),
    })
}

/// Turns the echo request in `pkt` (checked by [`parse`]) into its reply, in place:
/// addresses swapped, type changed, checksum fixed incrementally (the pseudo-header sum
/// does not change when the addresses swap).
pub fn answer(pkt: &mut [u8]) {
    let (s, d): ([u8; 16], [u8; 16]) = (
        pkt[8..24].try_into().expect("checked"),
        pkt[24..40].try_into().expect("checked"),
    );
    pkt[8..24].copy_from_slice(&d);
    pkt[24..40].copy_from_slice(&s);
    pkt[7] = HOP_LIMIT;
    let m = &mut pkt[HEADER_LEN..];
    let c = u16::from_be_bytes([m[2], m[3]]);
    let old = u16::from_be_bytes([m[0], m[1]]);
    m[0] = ECHO_REPLY;
    let new = u16::from_be_bytes([m[0], m[1]]);
    m[2..4].copy_from_slice(&checksum::update_word(c, old, new).to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(s: &str) -> Locator {
        s.parse().unwrap()
    }

    #[test]
    fn a_request_parses_and_its_answer_verifies() {
        let (a, e) = (loc("fd63:6e73:0:1::"), loc("fd63:6e73:0:e1::"));
        let mut b = [0u8; LEN];
        let n = request(&mut b, &a, &e, 7, 9, 1234);
        let want = Echo {
            ty: ECHO_REQUEST,
            src: a,
            dst: e,
            ident: 7,
            seq: 9,
        };
        assert_eq!(parse(&b[..n]), Some(want));
        answer(&mut b[..n]);
        let got = parse(&b[..n]).expect("the answer verifies");
        assert_eq!(
            got,
            Echo {
                ty: ECHO_REPLY,
                src: e,
                dst: a,
                ..want
            }
        );
        // A tenant's packet (network 1) or a corrupted probe is not a probe.
        let mut t = b;
        t[11] = 1;
        assert_eq!(parse(&t), None);
        let mut t = b;
        t[LEN - 1] ^= 1;
        assert_eq!(parse(&t), None);
    }
}
