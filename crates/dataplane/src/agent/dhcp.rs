//! The DHCP server of the agent's nodes (RFC 2131): each node has one address, assigned
//! by the manager, so the server only ever offers that one. DISCOVER gets an OFFER,
//! REQUEST for the node's address an ACK (any other address a NAK), INFORM an ACK without
//! lease, RELEASE and DECLINE nothing. Options: mask, router, lease and renewal times,
//! interface MTU (the virtual MTU, so that nodes never send what the substrate cannot
//! carry), broadcast address, DNS servers when configured.

use super::{Agent, NodeSpec, Verdict};
use crate::buf::PacketBuf;
use crate::drops::DropReason;
use crate::siit::V4Header;
use crate::time::Instant;
use core::net::Ipv4Addr;
use wire::dhcpv4::{DhcpMessageType as T, DhcpPacket, DhcpRepr, DnsServers};
use wire::ethernet::{self, EtherType};
use wire::ipv4::{self, Ipv4Packet};
use wire::udp::{self, UdpPacket, UdpRepr};
use wire::IpProtocol;

const SERVER_PORT: u16 = 67;
const CLIENT_PORT: u16 = 68;
const BOOTREQUEST: u8 = 1;

pub(super) fn handle(
    agent: &mut Agent,
    node: &NodeSpec,
    pkt: &mut PacketBuf<'_>,
    _now: Instant,
) -> Verdict {
    let frame = pkt.as_slice();
    let ip = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
    let Ok(u) = UdpPacket::new_checked(ip.payload()) else {
        return Verdict::Drop(DropReason::DhcpIgnored);
    };
    if u.src_port() != CLIENT_PORT || u.dst_port() != SERVER_PORT {
        return Verdict::Drop(DropReason::DhcpIgnored);
    }
    // The reply is written over the request, and borrows some of its options (client
    // id): read the request from a copy.
    let mut copy = [0u8; 1500];
    let Some(req_bytes) = copy.get_mut(..u.payload().len()) else {
        return Verdict::Drop(DropReason::DhcpIgnored);
    };
    req_bytes.copy_from_slice(u.payload());
    let Ok(d) = DhcpPacket::new_checked(&*req_bytes) else {
        return Verdict::Drop(DropReason::DhcpIgnored);
    };
    if d.op() != BOOTREQUEST {
        return Verdict::Drop(DropReason::DhcpIgnored);
    }
    let Ok(req) = DhcpRepr::parse(&d) else {
        return Verdict::Drop(DropReason::DhcpIgnored);
    };
    if req.client_mac != node.mac {
        return Verdict::Drop(DropReason::PortSpoofedMac);
    }
    let server = node.subnet.gateway;
    let vip = node.vip;
    let (ty, yiaddr) = match req.message_type {
        T::DISCOVER => (T::OFFER, vip),
        T::REQUEST => {
            if req.server_id.is_some_and(|s| s != server) {
                // The client took another server's offer: nothing to say.
                return Verdict::Consumed;
            }
            let wanted = req
                .requested_ip
                .or((!req.ciaddr.is_unspecified()).then_some(req.ciaddr));
            if wanted == Some(vip) {
                (T::ACK, vip)
            } else {
                (T::NAK, Ipv4Addr::UNSPECIFIED)
            }
        }
        T::INFORM => (T::ACK, Ipv4Addr::UNSPECIFIED),
        T::RELEASE | T::DECLINE => return Verdict::Consumed,
        _ => return Verdict::Drop(DropReason::DhcpIgnored),
    };
    let mut rep = req.reply(ty, server);
    rep.yiaddr = yiaddr;
    // RFC 2131 4.3.1/4.3.2: a NAK carries nothing but the message type and server id.
    if ty != T::NAK {
        let lease = agent.cfg.lease_secs;
        rep.ciaddr = req.ciaddr;
        rep.subnet_mask = Some(node.subnet.cidr.netmask());
        rep.router = Some(server);
        rep.broadcast_addr = Some(node.subnet.cidr.broadcast());
        rep.mtu = Some(agent.cfg.virtual_mtu());
        rep.dns_servers =
            DnsServers::new(&agent.cfg.dns[..agent.cfg.dns.len().min(4)]).unwrap_or_default();
        if req.message_type != T::INFORM {
            rep.lease_time = Some(lease);
            rep.renewal_t1 = Some(lease / 2);
            rep.rebinding_t2 = Some(lease / 8 * 7);
        }
    }
    // RFC 2131 4.1: broadcast when the client cannot receive unicast yet or on a NAK,
    // else unicast to the address it has or is given. The frame is unicast to its MAC.
    let dst = if ty == T::NAK || req.broadcast {
        Ipv4Addr::BROADCAST
    } else if !req.ciaddr.is_unspecified() {
        req.ciaddr
    } else {
        yiaddr
    };
    let dhcp_len = rep.buffer_len();
    let udp_len = udp::HEADER_LEN + dhcp_len;
    let total = ethernet::HEADER_LEN + ipv4::HEADER_LEN + udp_len;
    let ident = agent.translator.ident();
    let router_mac = agent.cfg.router_mac;
    let Some(out) = pkt.resize(total) else {
        return Verdict::Drop(DropReason::NoRoom);
    };
    out.fill(0);
    super::write_ethernet(out, node.mac, router_mac);
    out[12..14].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());
    V4Header {
        tos: 0x10,
        total_len: (ipv4::HEADER_LEN + udp_len) as u16,
        ident,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
        ttl: 64,
        protocol: IpProtocol::UDP,
        src: server.octets(),
        dst: dst.octets(),
    }
    .write(&mut out[ethernet::HEADER_LEN..]);
    let udp_at = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
    let mut u = UdpPacket::new_unchecked(&mut out[udp_at..]);
    let emitted = UdpRepr {
        src_port: SERVER_PORT,
        dst_port: CLIENT_PORT,
        payload_len: dhcp_len,
    }
    .emit(&mut u)
    .and_then(|_| {
        rep.emit(&mut DhcpPacket::new_unchecked(
            &mut out[udp_at + udp::HEADER_LEN..],
        ))
    });
    if emitted.is_err() {
        return Verdict::Drop(DropReason::NoRoom);
    }
    UdpPacket::new_unchecked(&mut out[udp_at..]).fill_checksum_v4(server.octets(), dst.octets());
    match ty {
        T::OFFER => agent.stats.dhcp_offers += 1,
        T::NAK => agent.stats.dhcp_naks += 1,
        _ => agent.stats.dhcp_acks += 1,
    }
    Verdict::Reply
}
