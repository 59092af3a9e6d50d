//! ARP: the agent answers its node's requests for the subnet's gateway (with the router's
//! MAC) and for addresses that exist in the node's subnet (with that node's MAC, as if it
//! had answered itself). Unknown addresses get no answer, as on a real LAN, and ARP never
//! leaves the host. A request for an address not known yet waits for the manager's
//! answer in the hold queue, so that a node's first packets to a peer wait for one
//! resolve, not for its ARP retry (a second on Linux).

use super::hold::{Origin, Wait};
use super::{Agent, Lookup, NodeSpec, Verdict};
use crate::buf::PacketBuf;
use crate::drops::DropReason;
use crate::time::Instant;
use wire::arp::{ArpOp, ArpPacket, ArpRepr};
use wire::ethernet;

pub(super) fn handle(
    agent: &mut Agent,
    node: &NodeSpec,
    pkt: &mut PacketBuf<'_>,
    now: Instant,
) -> Verdict {
    let Ok(arp) = ArpPacket::new_checked(&pkt.as_slice()[ethernet::HEADER_LEN..]) else {
        return Verdict::Drop(DropReason::ArpInvalid);
    };
    let Ok(req) = ArpRepr::parse(&arp) else {
        return Verdict::Drop(DropReason::ArpInvalid);
    };
    if req.sender_mac != node.mac {
        return Verdict::Drop(DropReason::PortSpoofedMac);
    }
    if !req.sender_ip.is_unspecified() && req.sender_ip != node.vip {
        return Verdict::Drop(DropReason::PortSpoofedIp);
    }
    if req.op != ArpOp::Request || req.target_ip == node.vip {
        return Verdict::Drop(DropReason::ArpIgnored);
    }
    let target = req.target_ip;
    let mac = if target == node.subnet.gateway {
        agent.cfg.router_mac
    } else if node.subnet.cidr.contains(target) {
        match agent.lookup(node.network, target, now) {
            Lookup::Local(p) => agent.ports[&p].mac,
            Lookup::Remote(m) => m.mac,
            Lookup::Absent => return Verdict::Drop(DropReason::ArpUnknownTarget),
            // The resolve is asked; the request comes back through `take_ready`.
            Lookup::Unknown => {
                let wait = Wait::Mapping(node.network, target);
                return agent.hold_packet(Origin::Vm(node.port), wait, pkt, None, now);
            }
        }
    } else {
        return Verdict::Drop(DropReason::ArpUnknownTarget);
    };
    let reply = req.reply(mac);
    let frame = pkt.as_mut_slice();
    super::write_ethernet(frame, node.mac, mac);
    let mut out = ArpPacket::new_unchecked(&mut frame[ethernet::HEADER_LEN..]);
    if reply.emit(&mut out).is_err() {
        return Verdict::Drop(DropReason::NoRoom);
    }
    pkt.truncate(ethernet::HEADER_LEN + wire::arp::PACKET_LEN);
    agent.stats.arp_replies += 1;
    Verdict::Reply
}
