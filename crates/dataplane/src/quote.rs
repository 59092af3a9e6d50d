//! The packet an ICMPv4 error quotes, and rewriting it. Whoever rewrites a flow's address
//! or port on the way out (the edge's address swap, the agent's port blocks) must undo it
//! in the quoted packet of the errors that come back, or the node's stack cannot match the
//! error to its socket: "fragmentation needed" would never reach TCP, and path MTU
//! discovery through NAT would black-hole.

use crate::drops::DropReason;
use core::net::Ipv4Addr;
use wire::checksum;

/// The fields of the packet quoted by an ICMPv4 error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quote {
    pub proto: u8,
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    /// TCP/UDP source port, or the ICMP echo identifier; `None` when not quoted.
    pub src_port: Option<u16>,
    /// TCP/UDP destination port, or the ICMP echo identifier.
    pub dst_port: Option<u16>,
}

const IS_ERROR: [u8; 5] = [3, 4, 5, 11, 12];

/// Offsets inside an ICMPv4 error in the IPv4 packet `ip`: (ICMP start, quote start,
/// quote header length). `None` unless `ip` is an unfragmented ICMP error with a readable
/// quoted IPv4 header.
fn layout(ip: &[u8]) -> Option<(usize, usize, usize)> {
    let hl = ((*ip.first()? & 0x0f) as usize) * 4;
    if ip.len() < hl + 8 + 20 || ip[9] != 1 || u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0 {
        return None;
    }
    if !IS_ERROR.contains(&ip[hl]) {
        return None;
    }
    let q = hl + 8;
    let qhl = ((ip[q] & 0x0f) as usize) * 4;
    (ip[q] >> 4 == 4 && qhl >= 20 && ip.len() >= q + qhl).then_some((hl, q, qhl))
}

/// The quoted packet of the ICMPv4 error `ip`, if it is one.
pub fn quote(ip: &[u8]) -> Option<Quote> {
    let (_, q, qhl) = layout(ip)?;
    let inner = &ip[q..];
    let proto = inner[9];
    let l4 = &inner[qhl..];
    let first = u16::from_be_bytes([inner[6], inner[7]]) & 0x1fff == 0;
    let ports = crate::ports::FlowPorts::of(proto, l4, first);
    let (sp, dp) = (ports.map(|p| p.src), ports.map(|p| p.dst));
    Some(Quote {
        proto,
        src: Ipv4Addr::new(inner[12], inner[13], inner[14], inner[15]),
        dst: Ipv4Addr::new(inner[16], inner[17], inner[18], inner[19]),
        src_port: sp,
        dst_port: dp,
    })
}

/// Rewrites the quoted packet's source address and/or source port (the ICMP echo
/// identifier for a quoted ping), fixing the quoted IP header checksum and the quoted
/// TCP/UDP/ICMP checksum where they are present, then the error's own checksum (verified
/// first, so that corruption is not laundered).
pub fn rewrite_quote(
    ip: &mut [u8],
    new_src: Option<Ipv4Addr>,
    new_src_port: Option<u16>,
) -> Result<(), DropReason> {
    let (hl, q, qhl) = layout(ip).ok_or(DropReason::IcmpBadInner)?;
    let total = (u16::from_be_bytes([ip[2], ip[3]]) as usize).min(ip.len());
    if checksum::checksum(&ip[hl..total]) != 0 {
        return Err(DropReason::IcmpBadChecksum);
    }
    let proto = ip[q + 9];
    let first = u16::from_be_bytes([ip[q + 6], ip[q + 7]]) & 0x1fff == 0;
    let l4 = q + qhl;
    let l4_csum = match proto {
        6 if first && total >= l4 + 18 => Some(l4 + 16),
        17 if first && total >= l4 + 8 && (ip[l4 + 6] | ip[l4 + 7]) != 0 => Some(l4 + 6),
        1 if first && total >= l4 + 6 => Some(l4 + 2),
        _ => None,
    };
    let fix = |ip: &mut [u8], at: usize, old: u16, new: u16| {
        let c = u16::from_be_bytes([ip[at], ip[at + 1]]);
        let mut v = checksum::update(c, old, new);
        if proto == 17 && at == l4 + 6 && v == 0 {
            v = 0xffff;
        }
        ip[at..at + 2].copy_from_slice(&v.to_be_bytes());
    };
    if let Some(src) = new_src {
        let old: [u8; 4] = ip[q + 12..q + 16].try_into().unwrap();
        let (o, n) = (checksum::addr_sum(&old), checksum::addr_sum(&src.octets()));
        ip[q + 12..q + 16].copy_from_slice(&src.octets());
        fix(ip, q + 10, o, n);
        // TCP and UDP checksums cover the address through the pseudo-header; ICMP's not.
        if let Some(at) = l4_csum.filter(|_| proto != 1) {
            fix(ip, at, o, n);
        }
    }
    if let Some(port) = new_src_port {
        let at = match proto {
            6 | 17 if first && total >= l4 + 2 => l4,
            1 if first && total >= l4 + 6 => l4 + 4,
            _ => return Err(DropReason::IcmpBadInner),
        };
        let old = u16::from_be_bytes([ip[at], ip[at + 1]]);
        ip[at..at + 2].copy_from_slice(&port.to_be_bytes());
        if let Some(c) = l4_csum {
            fix(ip, c, old, port);
        }
    }
    ip[hl + 2..hl + 4].fill(0);
    let c = checksum::checksum(&ip[hl..total]);
    ip[hl + 2..hl + 4].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Attacker-controlled errors: reading and rewriting never panic, and a rewrite
        /// that succeeds leaves a valid ICMP checksum.
        #[test]
        fn arbitrary_errors_never_panic(mut b in proptest::collection::vec(any::<u8>(), 0..120),
                                        ty in prop_oneof![Just(3u8), Just(11), Just(12), any::<u8>()]) {
            if b.len() >= 28 {
                b[0] = 0x45;
                b[9] = 1;
                b[6] = 0;
                b[7] = 0;
                b[20] = ty;
                let q = 28.min(b.len() - 1);
                b[q] = 0x45;
                let n = b.len() as u16;
                b[2..4].copy_from_slice(&n.to_be_bytes());
                b[22] = 0;
                b[23] = 0;
                let c = checksum::checksum(&b[20..]);
                b[22..24].copy_from_slice(&c.to_be_bytes());
            }
            let _ = quote(&b);
            if rewrite_quote(&mut b, Some(Ipv4Addr::new(10, 0, 0, 2)), None).is_ok() {
                prop_assert_eq!(checksum::checksum(&b[20..]), 0);
            }
            let _ = rewrite_quote(&mut b, None, Some(4242));
        }
    }
}
