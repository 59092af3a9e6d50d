//! ICMP from the virtual router: echo replies from the gateway, and the errors a router
//! sends (time exceeded, destination unreachable, fragmentation needed), always from the
//! gateway of the sender's subnet and back out of the sender's port.

use super::{Agent, NodeSpec, Verdict};
use crate::buf::PacketBuf;
use crate::drops::DropReason;
use crate::siit::V4Header;
use wire::checksum;
use wire::ethernet::{self, EtherType};
use wire::ipv4::{self, Ipv4Packet};
use wire::IpProtocol;

pub const ECHO_REPLY: u8 = 0;
pub const DEST_UNREACHABLE: u8 = 3;
pub const ECHO_REQUEST: u8 = 8;
pub const TIME_EXCEEDED: u8 = 11;
/// Largest ICMP error a router sends (RFC 1812 section 4.3.2.3).
const ERROR_MAX: usize = 576;

/// A packet to one of the router's own addresses: ping is answered, UDP gets "port
/// unreachable", anything else is dropped.
pub(super) fn to_gateway(agent: &mut Agent, node: &NodeSpec, pkt: &mut PacketBuf<'_>) -> Verdict {
    let frame = pkt.as_mut_slice();
    let ip = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
    let (hl, proto, src, dst) = (ip.header_len(), ip.protocol(), ip.src(), ip.dst());
    let icmp_at = ethernet::HEADER_LEN + hl;
    match proto {
        IpProtocol::ICMP if frame.len() >= icmp_at + 8 && frame[icmp_at] == ECHO_REQUEST => {
            // Echo reply in place: addresses swapped, type changed, checksums fixed.
            let (old, new) = (
                u16::from_be_bytes([ECHO_REQUEST, frame[icmp_at + 1]]),
                u16::from_be_bytes([ECHO_REPLY, frame[icmp_at + 1]]),
            );
            frame[icmp_at] = ECHO_REPLY;
            let c = u16::from_be_bytes([frame[icmp_at + 2], frame[icmp_at + 3]]);
            frame[icmp_at + 2..icmp_at + 4]
                .copy_from_slice(&checksum::update_word(c, old, new).to_be_bytes());
            let mut ip = Ipv4Packet::new_unchecked(&mut frame[ethernet::HEADER_LEN..]);
            ip.set_src(dst);
            ip.set_dst(src);
            ip.set_ttl(64);
            ip.fill_checksum();
            super::write_ethernet(frame, node.mac, agent.cfg.router_mac);
            Verdict::Reply
        }
        IpProtocol::UDP => {
            agent.stats.drops.inc(DropReason::GatewayNotServed);
            error_from(agent, node, pkt, dst, DEST_UNREACHABLE, 3, 0)
        }
        _ => Verdict::Drop(DropReason::GatewayNotServed),
    }
}

/// Replaces the frame (Ethernet + IPv4 from `node`) with an ICMP error about it from the
/// gateway of the node's subnet. `mtu` is the next-hop MTU of "fragmentation needed".
pub(super) fn error(
    agent: &mut Agent,
    node: &NodeSpec,
    pkt: &mut PacketBuf<'_>,
    ty: u8,
    code: u8,
    mtu: u16,
) -> Verdict {
    error_from(agent, node, pkt, node.subnet.gateway, ty, code, mtu)
}

fn error_from(
    agent: &mut Agent,
    node: &NodeSpec,
    pkt: &mut PacketBuf<'_>,
    from: core::net::Ipv4Addr,
    ty: u8,
    code: u8,
    mtu: u16,
) -> Verdict {
    let orig = &pkt.as_slice()[ethernet::HEADER_LEN..];
    let ip = Ipv4Packet::new_unchecked(orig);
    // Never an error about an ICMP error (RFC 1122 3.2.2), nor about a fragment other
    // than the first.
    if ip.frag_offset() != 0 {
        return Verdict::Drop(DropReason::FragmentedIcmp);
    }
    let hl = ip.header_len();
    if ip.protocol() == IpProtocol::ICMP
        && orig.len() > hl
        && matches!(orig[hl], 3 | 4 | 5 | 11 | 12)
    {
        return Verdict::Drop(DropReason::IcmpErrorInError);
    }
    let quote = orig.len().min(ERROR_MAX - ipv4::HEADER_LEN - 8);
    let total = ipv4::HEADER_LEN + 8 + quote;
    let mut out = [0u8; ethernet::HEADER_LEN + ERROR_MAX];
    out[12..14].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());
    super::write_ethernet(&mut out, node.mac, agent.cfg.router_mac);
    let ident = agent.translator.ident();
    V4Header {
        tos: 0xc0,
        total_len: total as u16,
        ident,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
        ttl: 64,
        protocol: IpProtocol::ICMP,
        src: from.octets(),
        dst: node.vip.octets(),
    }
    .write(&mut out[ethernet::HEADER_LEN..]);
    let icmp_at = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
    let m = mtu.to_be_bytes();
    out[icmp_at..icmp_at + 8].copy_from_slice(&[ty, code, 0, 0, 0, 0, m[0], m[1]]);
    out[icmp_at + 8..icmp_at + 8 + quote].copy_from_slice(&orig[..quote]);
    let end = icmp_at + 8 + quote;
    let c = checksum::checksum(&out[icmp_at..end]);
    out[icmp_at + 2..icmp_at + 4].copy_from_slice(&c.to_be_bytes());
    match pkt.resize(end) {
        Some(b) => b.copy_from_slice(&out[..end]),
        None => return Verdict::Drop(DropReason::NoRoom),
    }
    Verdict::Reply
}
