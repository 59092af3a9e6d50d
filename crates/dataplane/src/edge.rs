//! The edge pipeline (the patent's edge device), sans-IO and without per-flow state.
//!
//! - **Outbound** (substrate -> outside): decode the IPv6 packet an agent sent to this
//!   edge's locator, or to its pool's anycast locator when the pool is in anycast mode
//!   (its destination address carries the final IPv4 destination, no lookup needed),
//!   check that the sending host really hosts the source node, and swap the node's
//!   address for its public one: the elastic IP, or the public address of the port block
//!   its (already rewritten) source port falls in.
//! - **Inbound** (outside -> substrate): find who owns the destination (elastic IP, or
//!   public address and port through the block table the manager pushes), swap the
//!   public address for the node's, and encode to the node's host. The edge answers from
//!   its own locator, also for flows that came to the anycast one: agents accept packets
//!   from any member of a pool their network routes to.
//!
//! Every member of a pool holds the same tables, so any member can carry any packet of
//! any flow in either direction. Unsolicited traffic to an address or port nobody owns is
//! dropped and counted.
//!
//! Both directions take the `virtio_net_hdr` a packet came with, if any (the edge's TUNs
//! with checksum and TCP segmentation offloads): a TCP super-packet crosses the edge as
//! one unit, its header adjusted to the packet's new IP version, and a partial checksum
//! (`NEEDS_CSUM`: the field holds the pseudo-header sum) is moved with the address swap.
//!
//! Agents probe the edge's probe address (its locator's base address, see
//! [`probe`](crate::probe)) with ICMPv6 echo; the edge answers in place.

use crate::buf::PacketBuf;
use crate::conntrack::Flow;
use crate::drops::{DropCounters, DropReason};
use crate::nat::PortBlock;
use crate::ports::FlowPorts;
use crate::rules::{Acl, AclRule, Action, Direction};
use crate::siit::{self, EncodeMap, Translator};
use crate::time::Instant;
use ahash::{HashMap, HashMapExt};
use core::net::Ipv4Addr;
use model::{Locator, NetworkId};
use wire::checksum;
use wire::ipv4::Ipv4Packet;
use wire::virtio::VirtioNetHdr;
use wire::IpProtocol;

/// A node that owns public addresses or ports, and the host it lives on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Owner {
    pub network: NetworkId,
    pub vip: Ipv4Addr,
    pub host: Locator,
}

/// A change to an edge's tables, as the manager pushes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EdgeChange {
    Block {
        block: PortBlock,
        owner: Owner,
    },
    RemoveBlock {
        block: PortBlock,
    },
    ElasticIp {
        public: Ipv4Addr,
        owner: Owner,
    },
    RemoveElasticIp {
        public: Ipv4Addr,
    },
    /// The pool's ACL, applied by every member to traffic in both directions (as seen
    /// from the nodes: inbound is ingress); `None` removes it.
    Acl(Option<Vec<AclRule>>),
    /// The anycast locator of the edge's pool (a pool in anycast mode), which the edge
    /// accepts packets to besides its own: the fabric in front of the pool delivers them
    /// to whichever member it picks. `None` removes it.
    Anycast(Option<Locator>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EdgeVerdict {
    /// An IPv4 packet for the outside interface.
    ToOutside,
    /// An IPv6 packet for the substrate (a packet from outside for a node, or the answer
    /// to a health probe).
    ToSubstrate,
    Drop(DropReason),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EdgeStats {
    pub drops: DropCounters,
    pub outbound_packets: u64,
    pub outbound_bytes: u64,
    pub inbound_packets: u64,
    pub inbound_bytes: u64,
    /// Health probes answered.
    pub probes_answered: u64,
}

impl EdgeStats {
    /// Adds another worker's counts to these.
    pub fn merge(&mut self, o: &EdgeStats) {
        self.drops.merge(&o.drops);
        self.outbound_packets += o.outbound_packets;
        self.outbound_bytes += o.outbound_bytes;
        self.inbound_packets += o.inbound_packets;
        self.inbound_bytes += o.inbound_bytes;
        self.probes_answered += o.probes_answered;
    }
}

/// An edge's tables and counters.
pub struct Edge {
    locator: Locator,
    /// The pool's anycast locator, if the pool is in anycast mode.
    anycast: Option<Locator>,
    /// Where agents' health probes come to.
    probe_addr: [u8; 16],
    translator: Translator,
    /// Public address -> blocks on it, sorted by first port.
    blocks: HashMap<Ipv4Addr, Vec<(PortBlock, Owner)>>,
    /// (network, node address) -> its blocks.
    owned: HashMap<(NetworkId, Ipv4Addr), Vec<PortBlock>>,
    eips: HashMap<Ipv4Addr, Owner>,
    eip_of: HashMap<(NetworkId, Ipv4Addr), Ipv4Addr>,
    acl: Option<Acl>,
    stats: EdgeStats,
    /// Bytes per second this edge is sized for, against which load is reported.
    capacity_bps: u64,
    last_report: Option<(Instant, u64)>,
}

/// What an edge tells the manager (and, through it, the agents' pools) about itself.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoadReport {
    /// Bytes per second carried since the last report, both directions.
    pub bytes_per_sec: u64,
    /// That rate against the edge's capacity, 0..=1.
    pub load: f64,
}

/// The transport ports of an IPv4 packet (the ICMP echo identifier as both), if its first
/// fragment carries them.
fn ports(ip: &Ipv4Packet<&[u8]>) -> Option<(u16, u16)> {
    FlowPorts::of_ipv4(ip).map(|p| (p.src, p.dst))
}

/// Rewrites one IPv4 address of the packet at the start of `ip` (source if `src`), fixing
/// the header checksum and the TCP/UDP checksum (whose pseudo-header holds it). `partial`:
/// the checksum is offloaded (`NEEDS_CSUM`), its field holds the pseudo-header sum, which
/// moves with the address sums directly (and a UDP 0 there means nothing special).
fn rewrite_addr(ip: &mut [u8], src: bool, new: Ipv4Addr, partial: bool) {
    let at = if src { 12 } else { 16 };
    let old: [u8; 4] = ip[at..at + 4].try_into().unwrap();
    let new = new.octets();
    let (o, n) = (checksum::addr_sum(&old), checksum::addr_sum(&new));
    ip[at..at + 4].copy_from_slice(&new);
    let c = u16::from_be_bytes([ip[10], ip[11]]);
    ip[10..12].copy_from_slice(&checksum::update(c, o, n).to_be_bytes());
    let hl = ((ip[0] & 0x0f) as usize) * 4;
    let first = u16::from_be_bytes([ip[6], ip[7]]) & 0x1fff == 0;
    let at = match ip[9] {
        6 => 16,
        17 => 6,
        _ => return,
    };
    let l4 = &mut ip[hl..];
    if !first || l4.len() < at + 2 {
        return;
    }
    let c = u16::from_be_bytes([l4[at], l4[at + 1]]);
    if partial {
        l4[at..at + 2].copy_from_slice(&checksum::update_partial(c, o, n).to_be_bytes());
        return;
    }
    if at == 6 && c == 0 {
        return; // UDP without checksum stays without.
    }
    let mut v = checksum::update(c, o, n);
    if at == 6 && v == 0 {
        v = 0xffff;
    }
    l4[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

impl Edge {
    pub fn new(locator: Locator) -> Self {
        Edge {
            locator,
            anycast: None,
            probe_addr: crate::probe::address(&locator),
            translator: Translator::default(),
            blocks: HashMap::new(),
            owned: HashMap::new(),
            eips: HashMap::new(),
            eip_of: HashMap::new(),
            acl: None,
            stats: EdgeStats::default(),
            capacity_bps: 1_250_000_000,
            last_report: None,
        }
    }

    /// Sets the bytes per second the edge is sized for (default 10 Gbit/s).
    pub fn with_capacity(mut self, bytes_per_sec: u64) -> Self {
        self.capacity_bps = bytes_per_sec.max(1);
        self
    }

    /// Where the IPv4 identifications this edge makes up (IPv6 -> IPv4 without a
    /// fragment header) start; an edge's workers each start elsewhere.
    pub fn with_ident_seed(mut self, start: u16) -> Self {
        self.translator.seed_ident(start);
        self
    }

    /// The load since the previous report (the first report covers nothing and says 0).
    pub fn report_load(&mut self, now: Instant) -> LoadReport {
        let total = self.stats.outbound_bytes + self.stats.inbound_bytes;
        let rate = match self.last_report {
            Some((at, bytes)) if now.since(at) > 0 => (total - bytes) * 1000 / now.since(at),
            _ => 0,
        };
        self.last_report = Some((now, total));
        LoadReport {
            bytes_per_sec: rate,
            load: (rate as f64 / self.capacity_bps as f64).min(1.0),
        }
    }

    fn acl_allows(&self, dir: Direction, network: NetworkId, ip: &Ipv4Packet<&[u8]>) -> bool {
        let Some(acl) = &self.acl else { return true };
        let (sp, dp) = ports(ip).unwrap_or((0, 0));
        let flow = Flow {
            network,
            proto: ip.protocol().0,
            src: ip.src(),
            dst: ip.dst(),
            src_port: sp,
            dst_port: if ip.protocol() == IpProtocol::ICMP {
                ip.payload().first().copied().unwrap_or(0) as u16
            } else {
                dp
            },
        };
        acl.evaluate(dir, &flow).action == Action::Allow
    }

    pub fn locator(&self) -> Locator {
        self.locator
    }

    /// The pool's anycast locator this edge also accepts, if any.
    pub fn anycast(&self) -> Option<Locator> {
        self.anycast
    }

    pub fn stats(&self) -> &EdgeStats {
        &self.stats
    }

    pub fn translator_stats(&self) -> &siit::Stats {
        self.translator.stats()
    }

    pub fn apply(&mut self, change: EdgeChange) {
        match change {
            EdgeChange::Block { block, owner } => {
                self.remove_block(block);
                let v = self.blocks.entry(block.public).or_default();
                let at = v.partition_point(|(b, _)| b.first < block.first);
                v.insert(at, (block, owner));
                self.owned
                    .entry((owner.network, owner.vip))
                    .or_default()
                    .push(block);
            }
            EdgeChange::RemoveBlock { block } => self.remove_block(block),
            EdgeChange::ElasticIp { public, owner } => {
                if let Some(old) = self.eips.insert(public, owner) {
                    self.eip_of.remove(&(old.network, old.vip));
                }
                self.eip_of.insert((owner.network, owner.vip), public);
            }
            EdgeChange::RemoveElasticIp { public } => {
                if let Some(old) = self.eips.remove(&public) {
                    self.eip_of.remove(&(old.network, old.vip));
                }
            }
            EdgeChange::Acl(rules) => {
                // An ACL that does not compile leaves the previous one in force.
                match rules.map(|r| Acl::compile(&r)) {
                    Some(Ok(acl)) => self.acl = Some(acl),
                    Some(Err(_)) => {}
                    None => self.acl = None,
                }
            }
            EdgeChange::Anycast(locator) => self.anycast = locator,
        }
    }

    fn remove_block(&mut self, block: PortBlock) {
        if let Some(v) = self.blocks.get_mut(&block.public) {
            if let Some(i) = v.iter().position(|(b, _)| *b == block) {
                let (_, o) = v.remove(i);
                if let Some(mine) = self.owned.get_mut(&(o.network, o.vip)) {
                    mine.retain(|b| *b != block);
                }
            }
        }
    }

    fn owner_of(&self, public: Ipv4Addr, port: Option<u16>) -> Option<Owner> {
        if let Some(o) = self.eips.get(&public) {
            return Some(*o);
        }
        let port = port?;
        let v = self.blocks.get(&public)?;
        let i = v.partition_point(|(b, _)| b.first <= port);
        let (b, o) = v.get(i.checked_sub(1)?)?;
        b.contains(port).then_some(*o)
    }

    /// A packet from the substrate, for the outside; or a health probe, answered in place
    /// back to the substrate.
    pub fn from_substrate(&mut self, pkt: &mut PacketBuf<'_>) -> EdgeVerdict {
        self.from_substrate_with_vnet(pkt, None)
    }

    /// As [`from_substrate`](Self::from_substrate), for a packet that came with a
    /// `virtio_net_hdr` (offsets from the IPv6 packet's start): on `ToOutside` it
    /// describes the IPv4 packet (offsets moved, TCP GSO type now IPv4), on
    /// `ToSubstrate` (a probe's answer, complete) it is plain.
    pub fn from_substrate_with_vnet(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
    ) -> EdgeVerdict {
        let plain = vnet
            .as_deref()
            .is_none_or(|v| !v.needs_csum() && !v.is_gso());
        if plain && self.is_probe(pkt.as_slice()) {
            crate::probe::answer(pkt.as_mut_slice());
            if let Some(v) = vnet {
                *v = VirtioNetHdr::default();
            }
            self.stats.probes_answered += 1;
            return EdgeVerdict::ToSubstrate;
        }
        let v = self.outbound(pkt, vnet);
        match v {
            EdgeVerdict::Drop(r) => self.stats.drops.inc(r),
            _ => {
                self.stats.outbound_packets += 1;
                self.stats.outbound_bytes += pkt.len() as u64;
            }
        }
        v
    }

    /// An echo request to this edge's probe address (checked cheaply first: the next
    /// header and the destination, which no tenant packet has).
    fn is_probe(&self, pkt: &[u8]) -> bool {
        pkt.len() >= wire::ipv6::HEADER_LEN + 8
            && pkt[6] == 58
            && pkt[24..40] == self.probe_addr
            && crate::probe::parse(pkt).is_some_and(|e| e.ty == crate::probe::ECHO_REQUEST)
    }

    fn outbound(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
    ) -> EdgeVerdict {
        // The translator checks the header against the packet and drops a mismatch.
        let partial = vnet.as_deref().is_some_and(|v| v.needs_csum());
        let d = match self.translator.decode(pkt, vnet) {
            Ok(d) => d,
            // The substrate is unicast: this is the host kernel's own (MLD reports).
            Err(_) if is_ipv6_multicast(pkt.as_slice()) => {
                return EdgeVerdict::Drop(DropReason::Multicast)
            }
            Err(r) => return EdgeVerdict::Drop(r),
        };
        if d.dst.locator != self.locator && Some(d.dst.locator) != self.anycast {
            return EdgeVerdict::Drop(DropReason::WrongLocator);
        }
        let ip = Ipv4Packet::new_unchecked(pkt.as_slice());
        let key = (d.src.network, d.src.vip);
        let public = if let Some(&eip) = self.eip_of.get(&key) {
            let o = self.eips[&eip];
            if o.host != d.src.locator {
                return EdgeVerdict::Drop(DropReason::SpoofedSource);
            }
            eip
        } else {
            let Some((sport, _)) = ports(&ip) else {
                // Non-first fragments and port-less protocols cannot be matched to a
                // block without per-flow state.
                return EdgeVerdict::Drop(DropReason::NatNoFlow);
            };
            let Some(b) = self
                .owned
                .get(&key)
                .and_then(|bs| bs.iter().find(|b| b.contains(sport)))
            else {
                return EdgeVerdict::Drop(DropReason::NatNoFlow);
            };
            match self.owner_of(b.public, Some(sport)) {
                Some(o) if o.host == d.src.locator => b.public,
                _ => return EdgeVerdict::Drop(DropReason::SpoofedSource),
            }
        };
        if !self.acl_allows(Direction::Egress, d.src.network, &ip) {
            return EdgeVerdict::Drop(DropReason::AclDenied);
        }
        rewrite_addr(pkt.as_mut_slice(), true, public, partial);
        EdgeVerdict::ToOutside
    }

    /// An IPv4 packet from the outside, for a node.
    pub fn from_outside(&mut self, pkt: &mut PacketBuf<'_>) -> EdgeVerdict {
        self.from_outside_with_vnet(pkt, None)
    }

    /// As [`from_outside`](Self::from_outside), for a packet that came with a
    /// `virtio_net_hdr` (offsets from the IPv4 packet's start): on `ToSubstrate` it
    /// describes the IPv6 packet (offsets moved, TCP GSO type now IPv6).
    pub fn from_outside_with_vnet(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
    ) -> EdgeVerdict {
        let v = self.inbound(pkt, vnet);
        match v {
            EdgeVerdict::Drop(r) => self.stats.drops.inc(r),
            _ => {
                self.stats.inbound_packets += 1;
                self.stats.inbound_bytes += pkt.len() as u64;
            }
        }
        v
    }

    fn inbound(&mut self, pkt: &mut PacketBuf<'_>, vnet: Option<&mut VirtioNetHdr>) -> EdgeVerdict {
        let ip = match Ipv4Packet::new_checked(pkt.as_slice()) {
            Ok(ip) => ip,
            Err(_) if is_ipv6_multicast(pkt.as_slice()) => {
                return EdgeVerdict::Drop(DropReason::Multicast)
            }
            Err(_) if pkt.as_slice().first().is_some_and(|b| b >> 4 != 4) => {
                return EdgeVerdict::Drop(DropReason::NotIpv4)
            }
            Err(e) => return EdgeVerdict::Drop(siit::wire_err(e)),
        };
        let dport = ports(&ip).map(|(_, d)| d);
        // An ICMP error about one of our flows is addressed to the public address and
        // quotes the packet as it left: its owner is the quoted source (and port).
        let quoted = crate::quote::quote(pkt.as_slice()).filter(|q| q.src == ip.dst());
        let owner = match quoted {
            Some(q) => self.owner_of(q.src, q.src_port),
            None => self.owner_of(ip.dst(), dport),
        };
        let Some(owner) = owner else {
            return EdgeVerdict::Drop(DropReason::UnsolicitedInbound);
        };
        if !self.acl_allows(Direction::Ingress, owner.network, &ip) {
            return EdgeVerdict::Drop(DropReason::AclDenied);
        }
        let len = ip.total_len() as usize;
        let offloaded = vnet
            .as_deref()
            .is_some_and(|v| v.needs_csum() || v.is_gso());
        if offloaded && quoted.is_some() {
            // ICMP carries no offload; the translator would drop it after the rewrite.
            return EdgeVerdict::Drop(DropReason::OffloadMismatch);
        }
        // Checked against the packet by the translator below (a mismatch is dropped).
        let partial = vnet.as_deref().is_some_and(|v| v.needs_csum());
        pkt.truncate(len);
        rewrite_addr(pkt.as_mut_slice(), false, owner.vip, partial);
        if quoted.is_some() {
            if let Err(r) = crate::quote::rewrite_quote(pkt.as_mut_slice(), Some(owner.vip), None) {
                return EdgeVerdict::Drop(r);
            }
        }
        let map = EncodeMap {
            network: owner.network,
            src: self.locator,
            dst: owner.host,
        };
        match self.translator.encode(&map, pkt, vnet) {
            Ok(()) => EdgeVerdict::ToSubstrate,
            Err(r) => EdgeVerdict::Drop(r),
        }
    }
}

/// An IPv6 packet to a multicast address (`ff00::/8`).
fn is_ipv6_multicast(pkt: &[u8]) -> bool {
    pkt.len() >= 40 && pkt[0] >> 4 == 6 && pkt[24] == 0xff
}

#[cfg(test)]
mod tests {
    //! The edge with offloads: TCP super-packets with a partial checksum, both ways,
    //! checked as the kernel would finish and cut them.
    use super::*;
    use crate::siit::HEADROOM;
    use model::substrate;
    use wire::virtio;

    const HOST: &str = "fd63:6e73:0:1::";
    const EDGE: &str = "fd63:6e73:0:3::";
    const VIP: [u8; 4] = [10, 0, 0, 2];
    const EIP: [u8; 4] = [203, 0, 113, 10];
    const PEER: [u8; 4] = [198, 51, 100, 10];

    fn net() -> NetworkId {
        NetworkId::new(7).unwrap()
    }

    fn loc(s: &str) -> Locator {
        s.parse().unwrap()
    }

    fn edge() -> Edge {
        let mut e = Edge::new(loc(EDGE));
        e.apply(EdgeChange::ElasticIp {
            public: EIP.into(),
            owner: Owner {
                network: net(),
                vip: VIP.into(),
                host: loc(HOST),
            },
        });
        e
    }

    /// A TCP segment header (20 bytes, ACK|PSH) and `len` bytes of data, checksum field 0.
    fn segment(sport: u16, dport: u16, len: usize) -> Vec<u8> {
        let mut t = Vec::with_capacity(20 + len);
        t.extend_from_slice(&sport.to_be_bytes());
        t.extend_from_slice(&dport.to_be_bytes());
        t.extend_from_slice(&0x0102_0304u32.to_be_bytes());
        t.extend_from_slice(&0x0a0b_0c0du32.to_be_bytes());
        t.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        t.extend((0..len).map(|i| (i * 7) as u8));
        t
    }

    /// Runs `f` on `pkt` placed after the headroom; returns the verdict and the packet.
    fn run(
        pkt: &[u8],
        f: impl FnOnce(&mut PacketBuf<'_>) -> EdgeVerdict,
    ) -> (EdgeVerdict, Vec<u8>) {
        let mut buf = vec![0u8; HEADROOM + pkt.len() + 64];
        buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
        let mut p = PacketBuf::new(&mut buf, HEADROOM, HEADROOM + pkt.len());
        let v = f(&mut p);
        let r = p.range();
        (v, buf[r].to_vec())
    }

    #[test]
    fn the_kernels_own_multicast_on_either_device_is_counted_as_multicast() {
        // An MLDv2 report, as a host's kernel sends it into a device coming up.
        let mut mld = vec![0u8; 76];
        mld[0] = 0x60;
        mld[4..6].copy_from_slice(&36u16.to_be_bytes());
        mld[24..26].copy_from_slice(&[0xff, 0x02]);
        mld[39] = 0x16;
        mld[40..48].copy_from_slice(&[0x3a, 0, 5, 2, 0, 0, 1, 0]);
        mld[48] = 143;
        let mut e = edge();
        let (v, _) = run(&mld, |p| e.from_substrate_with_vnet(p, None));
        assert_eq!(v, EdgeVerdict::Drop(DropReason::Multicast));
        let (v, _) = run(&mld, |p| e.from_outside_with_vnet(p, None));
        assert_eq!(v, EdgeVerdict::Drop(DropReason::Multicast));
        assert_eq!(e.stats().drops.get(DropReason::Multicast), 2);
    }

    /// Finishes the partial checksum at `v`'s offsets as the device would (sum from
    /// `csum_start` to the end, field included, inverted), then checks the whole segment
    /// against `pseudo` (the full pseudo-header sum of the packet as it now is).
    fn finished_ok(pkt: &[u8], v: &VirtioNetHdr, pseudo: u16) -> bool {
        let mut l4 = pkt[v.csum_start as usize..].to_vec();
        let c = checksum::finish(checksum::sum(&l4));
        let at = v.csum_offset as usize;
        l4[at..at + 2].copy_from_slice(&c.to_be_bytes());
        checksum::finish(checksum::add(pseudo, checksum::sum(&l4))) == 0
    }

    /// The super-packet a VM's agent sends towards the internet: IPv6 to the edge's
    /// locator, partial checksum, GSO TCPV6.
    fn outbound_super_packet(len: usize) -> (Vec<u8>, VirtioNetHdr) {
        let src = substrate::encode(&loc(HOST), net(), VIP);
        let dst = substrate::encode(&loc(EDGE), net(), PEER);
        let mut l4 = segment(40000, 5201, len);
        let partial = checksum::pseudo_v6(&src, &dst, 6, l4.len() as u32);
        l4[16..18].copy_from_slice(&partial.to_be_bytes());
        let mut p = vec![0u8; 40];
        p[0] = 0x60;
        p[4..6].copy_from_slice(&(l4.len() as u16).to_be_bytes());
        p[6] = 6;
        p[7] = 64;
        p[8..24].copy_from_slice(&src);
        p[24..40].copy_from_slice(&dst);
        p.extend_from_slice(&l4);
        let v = VirtioNetHdr {
            flags: virtio::FLAG_NEEDS_CSUM,
            gso_type: virtio::GSO_TCPV6,
            hdr_len: 60,
            gso_size: 1428,
            csum_start: 40,
            csum_offset: 16,
        };
        (p, v)
    }

    #[test]
    fn gso_super_packet_goes_out_with_its_header_and_partial_checksum() {
        let mut e = edge();
        let (six, vnet) = outbound_super_packet(60_000);
        let mut v = vnet;
        let (verdict, four) = run(&six, |p| e.from_substrate_with_vnet(p, Some(&mut v)));
        assert_eq!(verdict, EdgeVerdict::ToOutside);
        assert_eq!(
            v,
            VirtioNetHdr {
                gso_type: virtio::GSO_TCPV4,
                hdr_len: 40,
                csum_start: 20,
                ..vnet
            }
        );
        let ip = Ipv4Packet::new_checked(&four[..]).unwrap();
        assert!(ip.verify_checksum());
        assert_eq!((ip.src_bytes(), ip.dst_bytes()), (EIP, PEER));
        assert_eq!(ip.total_len() as usize, four.len());
        assert_eq!(four.len(), 20 + 20 + 60_000);
        let pseudo = checksum::pseudo_v4(EIP, PEER, 6, (four.len() - 20) as u16);
        assert!(finished_ok(&four, &v, pseudo));
        // The field is the pseudo-header sum, not a finished checksum.
        assert_eq!(u16::from_be_bytes([four[36], four[37]]), pseudo);
        assert_eq!(e.stats().outbound_packets, 1);
    }

    #[test]
    fn gso_super_packet_comes_in_with_its_header_and_partial_checksum() {
        let mut e = edge();
        let mut l4 = segment(5201, 40000, 30_000);
        let partial = checksum::pseudo_v4(PEER, EIP, 6, l4.len() as u16);
        l4[16..18].copy_from_slice(&partial.to_be_bytes());
        let total = (20 + l4.len()) as u16;
        let mut four = vec![0x45, 0, 0, 0, 0, 0, 0x40, 0, 63, 6, 0, 0];
        four[2..4].copy_from_slice(&total.to_be_bytes());
        four.extend_from_slice(&PEER);
        four.extend_from_slice(&EIP);
        let c = checksum::checksum(&four);
        four[10..12].copy_from_slice(&c.to_be_bytes());
        four.extend_from_slice(&l4);
        let vnet = VirtioNetHdr {
            flags: virtio::FLAG_NEEDS_CSUM,
            gso_type: virtio::GSO_TCPV4 | virtio::GSO_ECN,
            hdr_len: 40,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut v = vnet;
        let (verdict, six) = run(&four, |p| e.from_outside_with_vnet(p, Some(&mut v)));
        assert_eq!(verdict, EdgeVerdict::ToSubstrate);
        assert_eq!(
            v,
            VirtioNetHdr {
                gso_type: virtio::GSO_TCPV6 | virtio::GSO_ECN,
                hdr_len: 60,
                csum_start: 40,
                ..vnet
            }
        );
        let src: [u8; 16] = six[8..24].try_into().unwrap();
        let dst: [u8; 16] = six[24..40].try_into().unwrap();
        assert_eq!(src, substrate::encode(&loc(EDGE), net(), PEER));
        assert_eq!(dst, substrate::encode(&loc(HOST), net(), VIP));
        assert_eq!(six.len(), 40 + l4.len());
        let pseudo = checksum::pseudo_v6(&src, &dst, 6, l4.len() as u32);
        assert!(finished_ok(&six, &v, pseudo));
        assert_eq!(u16::from_be_bytes([six[56], six[57]]), pseudo);
        assert_eq!(e.stats().inbound_packets, 1);
    }

    #[test]
    fn without_offload_the_checksum_stays_complete() {
        let mut e = edge();
        let (mut six, _) = outbound_super_packet(1000);
        let src: [u8; 16] = six[8..24].try_into().unwrap();
        let dst: [u8; 16] = six[24..40].try_into().unwrap();
        six[56..58].fill(0);
        let pseudo = checksum::pseudo_v6(&src, &dst, 6, (six.len() - 40) as u32);
        let c = checksum::finish(checksum::add(pseudo, checksum::sum(&six[40..])));
        six[56..58].copy_from_slice(&c.to_be_bytes());
        let mut v = VirtioNetHdr::default();
        let (verdict, four) = run(&six, |p| e.from_substrate_with_vnet(p, Some(&mut v)));
        assert_eq!(verdict, EdgeVerdict::ToOutside);
        assert_eq!(v, VirtioNetHdr::default());
        let pseudo = checksum::pseudo_v4(EIP, PEER, 6, (four.len() - 20) as u16);
        assert_eq!(
            checksum::finish(checksum::add(pseudo, checksum::sum(&four[20..]))),
            0
        );
    }

    #[test]
    fn offload_headers_that_do_not_fit_the_packet_are_dropped() {
        let mut e = edge();
        let (six, vnet) = outbound_super_packet(3000);
        let mut v = VirtioNetHdr {
            csum_start: 20,
            ..vnet
        };
        let (verdict, _) = run(&six, |p| e.from_substrate_with_vnet(p, Some(&mut v)));
        assert_eq!(verdict, EdgeVerdict::Drop(DropReason::OffloadMismatch));
        // A probe with an offload header is no probe (and ICMPv6 takes no offload).
        let mut probe = [0u8; crate::probe::LEN];
        crate::probe::request(&mut probe, &loc(HOST), &loc(EDGE), 1, 1, 0);
        let mut v = vnet;
        let (verdict, _) = run(&probe, |p| e.from_substrate_with_vnet(p, Some(&mut v)));
        assert_eq!(verdict, EdgeVerdict::Drop(DropReason::OffloadMismatch));
        let mut v = VirtioNetHdr {
            flags: virtio::FLAG_DATA_VALID,
            ..VirtioNetHdr::default()
        };
        let (verdict, _) = run(&probe, |p| e.from_substrate_with_vnet(p, Some(&mut v)));
        assert_eq!(verdict, EdgeVerdict::ToSubstrate);
        assert_eq!(v, VirtioNetHdr::default());
    }
}
