//! The ports of a flow, read one way everywhere: the agent's NAT and edge selection, the
//! edge's owner lookup and ACLs, the translator's flow label and the quoted packet of an
//! ICMP error all agree on which packets carry ports and which do not.
//!
//! TCP and UDP carry their two ports in the first 4 bytes of their header; an ICMP echo
//! request or reply carries its identifier at bytes 4..6, which serves as both ports (it
//! is what a NAT treats as an ICMP "port", RFC 5508). Only a first fragment (offset 0)
//! holds them. Those bytes are all a reader needs: a shorter header carries no ports, a
//! longer one is not asked for (a rewrite that needs the checksum field checks for it).

use wire::checksum;

/// A flow's ports, and the protocol they belong to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FlowPorts {
    pub src: u16,
    pub dst: u16,
    pub proto: u8,
}

/// Bytes of the upper-layer header that hold the ports.
const TRANSPORT_MIN: usize = 4;
/// Bytes of an ICMP header up to the end of the echo identifier.
const ECHO_MIN: usize = 6;

impl FlowPorts {
    /// The ports in `l4`, the upper-layer bytes of an IPv4 packet of protocol `proto`,
    /// if it is a first fragment (`first_fragment`) that carries them. Always inlined: it
    /// is on every packet's path, and the caller usually knows the protocol already.
    #[inline(always)]
    pub fn of(proto: u8, l4: &[u8], first_fragment: bool) -> Option<FlowPorts> {
        if !first_fragment {
            return None;
        }
        match proto {
            6 | 17 => FlowPorts::transport_word(l4).map(|w| FlowPorts {
                src: (w >> 16) as u16,
                dst: w as u16,
                proto,
            }),
            1 if l4.len() >= ECHO_MIN && matches!(l4[0], 0 | 8) => {
                let id = u16::from_be_bytes([l4[4], l4[5]]);
                Some(FlowPorts {
                    src: id,
                    dst: id,
                    proto,
                })
            }
            _ => None,
        }
    }

    /// The two ports of a TCP or UDP header `l4` as one word, source first (the
    /// translator's flow label hashes them so).
    #[inline(always)]
    pub fn transport_word(l4: &[u8]) -> Option<u32> {
        let p: [u8; TRANSPORT_MIN] = l4.get(..TRANSPORT_MIN)?.try_into().ok()?;
        Some(u32::from_be_bytes(p))
    }

    /// The ports of the IPv4 packet at the start of `ip` (its header already checked).
    #[inline]
    pub fn of_ipv4(ip: &wire::ipv4::Ipv4Packet<&[u8]>) -> Option<FlowPorts> {
        FlowPorts::of(ip.protocol().0, ip.payload(), ip.frag_offset() == 0)
    }

    /// Writes the source port (the echo identifier for ICMP) into `l4` and fixes the
    /// checksum; false, with nothing written, when `l4` is too short to hold the checksum
    /// field (a tiny first fragment), since a port changed without its checksum would
    /// corrupt the packet.
    pub fn rewrite_src(&self, l4: &mut [u8], port: u16, partial: bool) -> bool {
        let at = if self.proto == 1 { 4 } else { 0 };
        self.rewrite(l4, at, port, partial)
    }

    /// As [`rewrite_src`](Self::rewrite_src), for the destination port.
    pub fn rewrite_dst(&self, l4: &mut [u8], port: u16, partial: bool) -> bool {
        let at = if self.proto == 1 { 4 } else { 2 };
        self.rewrite(l4, at, port, partial)
    }

    /// Writes `port` at `at`, fixing the checksum (unless it is the partial sum of an
    /// offloaded packet, which covers the pseudo-header only, or UDP's "no checksum").
    fn rewrite(&self, l4: &mut [u8], at: usize, port: u16, partial: bool) -> bool {
        let c_at = match self.proto {
            6 => 16,
            17 => 6,
            _ => 2,
        };
        if l4.len() < (c_at + 2).max(at + 2) {
            return false;
        }
        let old = u16::from_be_bytes([l4[at], l4[at + 1]]);
        l4[at..at + 2].copy_from_slice(&port.to_be_bytes());
        if partial && self.proto != 1 {
            return true;
        }
        let c = u16::from_be_bytes([l4[c_at], l4[c_at + 1]]);
        if self.proto == 17 && c == 0 {
            return true;
        }
        let mut v = checksum::update_word(c, old, port);
        if self.proto == 17 && v == 0 {
            v = 0xffff;
        }
        l4[c_at..c_at + 2].copy_from_slice(&v.to_be_bytes());
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_need_exactly_the_bytes_that_hold_them() {
        let tcp = [0x9c, 0x40, 0x00, 0x50];
        assert_eq!(
            FlowPorts::of(6, &tcp, true),
            Some(FlowPorts {
                src: 40000,
                dst: 80,
                proto: 6
            })
        );
        assert_eq!(FlowPorts::of(17, &tcp[..3], true), None);
        assert_eq!(FlowPorts::of(6, &tcp, false), None, "not a first fragment");
        let echo = [8, 0, 0, 0, 0x12, 0x34];
        assert_eq!(
            FlowPorts::of(1, &echo, true).map(|p| (p.src, p.dst)),
            Some((0x1234, 0x1234))
        );
        assert_eq!(FlowPorts::transport_word(&tcp), Some(0x9c40_0050));
        assert_eq!(FlowPorts::transport_word(&tcp[..3]), None);
        assert_eq!(FlowPorts::of(1, &echo[..5], true), None);
        let unreachable = [3, 3, 0, 0, 0x12, 0x34];
        assert_eq!(
            FlowPorts::of(1, &unreachable, true),
            None,
            "errors have no ports"
        );
        assert_eq!(FlowPorts::of(47, &tcp, true), None);
    }

    #[test]
    fn a_rewrite_without_room_for_the_checksum_writes_nothing() {
        let p = FlowPorts::of(6, &[0, 1, 0, 2], true).unwrap();
        let mut short = [0u8, 1, 0, 2, 0, 0, 0, 0];
        assert!(!p.rewrite_src(&mut short, 9, false));
        assert_eq!(short, [0, 1, 0, 2, 0, 0, 0, 0]);
        // A full UDP header: the port and its checksum change together.
        let mut udp = [0u8, 1, 0, 2, 0, 8, 0x12, 0x34];
        let u = FlowPorts::of(17, &udp, true).unwrap();
        assert!(u.rewrite_dst(&mut udp, 7, false));
        assert_eq!(&udp[2..4], &[0, 7]);
        assert_eq!(
            u16::from_be_bytes([udp[6], udp[7]]),
            checksum::update_word(0x1234, 2, 7)
        );
    }
}
