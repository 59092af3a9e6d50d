//! The agent pipeline (the patent's Communication Manager), sans-IO: it takes a frame from
//! a VM's port or a packet from the substrate, with the time, and says where the bytes go
//! now. It answers ARP and DHCP for its nodes, emulates the subnet router (gateway ping,
//! TTL, ICMP errors), keeps the mapping cache of where virtual addresses live, encodes to
//! and decodes from the IPv6 substrate, and refuses substrate packets whose sender is not
//! who its source address claims.
//!
//! The daemon owns the devices and the manager connection; it feeds packets in with
//! [`Agent::from_vm`] and [`Agent::from_substrate`], configuration with [`Agent::apply`]
//! and [`Agent::on_resolved`], the clock with [`Agent::tick`], and drains
//! [`Agent::poll_event`] (resolve requests for the manager) and [`Agent::take_ready`]
//! (packets that were held for a mapping and can go now).
//!
//! Buffers: every packet sits in a [`PacketBuf`] with at least [`HEADROOM`] bytes in
//! front and a buffer of at least [`MIN_BUFFER`] bytes, so that replies (DHCP, ICMP
//! errors) and the IPv6 header can be written in place.

mod arp;
mod dhcp;
mod hold;
mod icmp;
#[cfg(test)]
mod tests;

use crate::buf::PacketBuf;
use crate::conntrack::{Conntrack, Flow, Packet as CtPacket, Timeouts};
use crate::drops::{DropCounters, DropReason};
use crate::nat::{FlowId, NatError, NatTimeouts, PortBlock, SourceNat};
use crate::pool::{FlowKey, Member, Pool, PoolConfig, Selection};
use crate::rules::{
    Acl, AclRule, Direction, Firewall, GroupId, GroupMembers, Policy, SecurityGroup, SgPolicy,
    Verdict as FwVerdict,
};
use crate::siit::{Config as SiitConfig, EncodeMap, Translator};
use crate::time::Instant;
use ahash::{HashMap, HashMapExt, HashSet, HashSetExt};
use core::net::Ipv4Addr;
use hold::{HoldQueue, Origin};
use model::{Ipv4Cidr, Locator, NetworkId};
use std::collections::VecDeque;
use wire::ethernet::{self, EtherType, EthernetFrame, MacAddr};
use wire::ipv4::{self, Ipv4Packet};
use wire::ipv6::Ipv6Packet;
use wire::virtio::VirtioNetHdr;
use wire::IpProtocol;

/// Bytes a caller leaves free in front of every packet.
pub const HEADROOM: usize = crate::siit::HEADROOM;
/// Smallest buffer a packet may come in: room for a DHCP reply or an ICMP error.
pub const MIN_BUFFER: usize = 2048;

/// A VM's port on this host (a TAP device, in the daemon).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortId(pub u32);

/// What the agent is told about itself.
#[derive(Debug, Clone)]
pub struct AgentConfig {
    /// This host's /72 on the substrate.
    pub locator: Locator,
    /// The MAC of the virtual router every subnet's gateway answers with.
    pub router_mac: MacAddr,
    /// The substrate's MTU; the virtual MTU (told to VMs by DHCP) is 20 bytes less.
    pub substrate_mtu: u16,
    /// DHCP lease length.
    pub lease_secs: u32,
    /// DNS servers handed out by DHCP (up to 4).
    pub dns: Vec<Ipv4Addr>,
    /// How long a resolved mapping is used before it is refreshed (it stays in use while
    /// the refresh is outstanding, so forwarding goes on when the manager is away).
    pub mapping_ttl_ms: u64,
    /// How long before an unanswered resolve is asked again.
    pub resolve_retry_ms: u64,
    /// How long a packet waits for its mapping before it is dropped.
    pub hold_timeout_ms: u64,
    /// How many packets may wait for mappings at once, and how many per address.
    pub hold_capacity: usize,
    pub hold_per_address: usize,
    /// Most NAT flows tracked at once, over all nodes.
    pub max_nat_flows: usize,
    /// Connections tracked per node with security groups (preallocated).
    pub max_connections_per_node: usize,
}

impl AgentConfig {
    pub fn new(locator: Locator) -> Self {
        AgentConfig {
            locator,
            router_mac: MacAddr([0x02, 0x63, 0x6e, 0x70, 0x79, 0x01]),
            substrate_mtu: 1500,
            lease_secs: 3600,
            dns: Vec::new(),
            mapping_ttl_ms: 60_000,
            resolve_retry_ms: 1_000,
            hold_timeout_ms: 3_000,
            hold_capacity: 64,
            hold_per_address: 4,
            max_nat_flows: 262_144,
            max_connections_per_node: 16_384,
        }
    }

    /// The MTU inside virtual networks: the substrate's less the 20 bytes the IPv6
    /// header adds over IPv4's.
    pub fn virtual_mtu(&self) -> u16 {
        self.substrate_mtu - 20
    }
}

/// A subnet of a virtual network; its gateway (`.1`) is the virtual router.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Subnet {
    pub cidr: Ipv4Cidr,
    pub gateway: Ipv4Addr,
}

impl Subnet {
    /// The subnet with its gateway at the first host address (`.1`).
    pub fn new(cidr: Ipv4Cidr) -> Self {
        Subnet {
            cidr,
            gateway: cidr.nth(1).unwrap_or(cidr.network()),
        }
    }
}

/// Where a route sends traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RouteTarget {
    /// To a node of the network itself (the network's own CIDR).
    Local,
    /// To an edge pool (the internet, or a VPN-like customer network).
    Pool(u32),
    /// To a peered network.
    Peering(NetworkId),
    /// Dropped, with "net unreachable" back.
    Blackhole,
}

/// A node (VM) attached to one of this host's ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeSpec {
    pub port: PortId,
    pub network: NetworkId,
    pub vip: Ipv4Addr,
    pub mac: MacAddr,
    pub subnet: Subnet,
}

/// Where a virtual address lives: the host's locator and the node's MAC.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mapping {
    pub locator: Locator,
    pub mac: MacAddr,
}

/// A configuration change, as the manager pushes it.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    /// Creates or updates a network; its CIDR routes locally.
    Network {
        id: NetworkId,
        cidr: Ipv4Cidr,
    },
    RemoveNetwork(NetworkId),
    Subnet {
        network: NetworkId,
        subnet: Subnet,
    },
    Route {
        network: NetworkId,
        cidr: Ipv4Cidr,
        target: RouteTarget,
    },
    RemoveRoute {
        network: NetworkId,
        cidr: Ipv4Cidr,
    },
    AttachNode(NodeSpec),
    DetachNode(PortId),
    /// An authoritative mapping (`None`: the address is gone).
    Mapping {
        network: NetworkId,
        vip: Ipv4Addr,
        mapping: Option<Mapping>,
    },
    /// Creates or updates an edge pool: its policy and members.
    Pool {
        id: u32,
        config: PoolConfig,
        members: Vec<Member>,
    },
    RemovePool(u32),
    /// The port blocks of a node that uses a NAT pool (replacing earlier ones).
    PortBlocks {
        network: NetworkId,
        vip: Ipv4Addr,
        blocks: Vec<PortBlock>,
    },
    /// The security groups of the node on a port; from then on its traffic is filtered
    /// both ways, statefully. A node never given groups is not filtered (the manager
    /// always gives one, the network's default group, when it attaches a node).
    SecurityGroups {
        port: PortId,
        groups: Vec<SecurityGroup>,
    },
    /// Adds (or removes) an address to a security group, for rules whose remote is a
    /// group.
    GroupMember {
        group: GroupId,
        network: NetworkId,
        vip: Ipv4Addr,
        member: bool,
    },
    /// The network ACL of a subnet (`None`: no ACL, nothing filtered).
    Acl {
        network: NetworkId,
        subnet: Ipv4Cidr,
        rules: Option<Vec<AclRule>>,
    },
    /// A node's elastic IP (`None`: released). Such a node's traffic through a NAT pool
    /// keeps its ports: the edges map the whole address.
    ElasticIp {
        network: NetworkId,
        vip: Ipv4Addr,
        public: Option<Ipv4Addr>,
    },
}

/// What to do with the packet now in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// An Ethernet frame for this VM port.
    ToPort(PortId),
    /// An IPv6 packet for the substrate.
    ToSubstrate,
    /// An Ethernet frame back out of the port it came from (ARP, DHCP, ICMP from the
    /// gateway).
    Reply,
    /// Kept until its mapping is known; [`Agent::take_ready`] hands it back.
    Held,
    /// Handled, nothing to send (a DHCP release, say).
    Consumed,
    Drop(DropReason),
}

/// Something the daemon must do for the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Ask the manager where `(network, ip)` lives, and call [`Agent::on_resolved`].
    Resolve { network: NetworkId, ip: Ipv4Addr },
    /// A node's port blocks are used up (or it has none): ask the manager for another
    /// and push it with [`Change::PortBlocks`].
    NeedPortBlock { network: NetworkId, vip: Ipv4Addr },
}

/// Counts of what the agent did, beyond drops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStats {
    pub drops: DropCounters,
    pub to_port: u64,
    pub to_substrate: u64,
    pub replies: u64,
    pub held: u64,
    pub arp_replies: u64,
    pub dhcp_offers: u64,
    pub dhcp_acks: u64,
    pub dhcp_naks: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub resolves: u64,
}

#[derive(Debug, Clone)]
struct Network {
    subnets: Vec<Subnet>,
    /// Longest prefix first.
    routes: Vec<(Ipv4Cidr, RouteTarget)>,
}

impl Network {
    fn route(&self, ip: Ipv4Addr) -> Option<RouteTarget> {
        self.routes
            .iter()
            .find(|(c, _)| c.contains(ip))
            .map(|&(_, t)| t)
    }

    fn set_route(&mut self, cidr: Ipv4Cidr, target: RouteTarget) {
        self.routes.retain(|(c, _)| *c != cidr);
        let at = self
            .routes
            .iter()
            .position(|(c, _)| c.prefix_len() < cidr.prefix_len())
            .unwrap_or(self.routes.len());
        self.routes.insert(at, (cidr, target));
    }

    fn is_gateway(&self, ip: Ipv4Addr) -> bool {
        self.subnets.iter().any(|s| s.gateway == ip)
    }

    fn uses_pool(&self, pool: u32) -> bool {
        self.routes
            .iter()
            .any(|&(_, t)| t == RouteTarget::Pool(pool))
    }
}

#[derive(Debug, Clone, Copy)]
struct CacheEntry {
    /// The port of a node of this host with this address: delivered here, whatever the
    /// mapping says. One table for both, so a lookup costs one hash.
    local: Option<PortId>,
    /// `None`: the manager said no node has this address.
    mapping: Option<Mapping>,
    /// Pushed entries are the manager's word and never expire; resolved ones are
    /// refreshed after this, and used meanwhile.
    expires: Option<Instant>,
}

/// The agent's state. One per host (one per worker, with the tables shared read-mostly, in
/// the daemon to come).
pub struct Agent {
    cfg: AgentConfig,
    translator: Translator,
    networks: HashMap<NetworkId, Network>,
    ports: HashMap<PortId, NodeSpec>,
    cache: HashMap<(NetworkId, Ipv4Addr), CacheEntry>,
    /// Resolves asked and not answered, with when they were asked.
    asked: HashMap<(NetworkId, Ipv4Addr), Instant>,
    pools: HashMap<u32, Pool>,
    /// Every pool member's locator, and the pools it serves.
    edge_locators: HashMap<Locator, Vec<u32>>,
    nat: SourceNat,
    eips: HashSet<(NetworkId, Ipv4Addr)>,
    /// Nodes for which a port block was asked, and when.
    asked_blocks: HashMap<(NetworkId, Ipv4Addr), Instant>,
    events: VecDeque<Event>,
    hold: HoldQueue,
    stats: AgentStats,
    /// Security: per node (one connection table each, so that one node's traffic never
    /// opens another's door), group memberships, ACLs per subnet.
    firewalls: HashMap<PortId, NodeSecurity>,
    members: GroupMembers,
    acls: HashMap<(NetworkId, Ipv4Cidr), Acl>,
    /// Member locators per pool, as last configured.
    pool_members: HashMap<u32, Vec<Locator>>,
    /// The latest time seen, for configuration changes that need one.
    now: Instant,
}

/// The result of looking a destination up in the mapping cache.
enum Lookup {
    Local(PortId),
    Remote(Mapping),
    Absent,
    Unknown,
}

impl Agent {
    pub fn new(cfg: AgentConfig) -> Self {
        let translator = Translator::new(SiitConfig {
            mtu: Some(cfg.substrate_mtu),
            ..SiitConfig::default()
        });
        let hold = HoldQueue::new(cfg.hold_capacity, MIN_BUFFER, cfg.hold_per_address);
        let cfg_nat_flows = cfg.max_nat_flows;
        Agent {
            cfg,
            translator,
            networks: HashMap::new(),
            ports: HashMap::new(),
            cache: HashMap::new(),
            asked: HashMap::new(),
            pools: HashMap::new(),
            edge_locators: HashMap::new(),
            nat: SourceNat::new(cfg_nat_flows, NatTimeouts::default()),
            eips: HashSet::new(),
            asked_blocks: HashMap::new(),
            events: VecDeque::with_capacity(64),
            hold,
            stats: AgentStats::default(),
            pool_members: HashMap::new(),
            firewalls: HashMap::new(),
            members: GroupMembers::new(),
            acls: HashMap::new(),
            now: Instant::ZERO,
        }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    pub fn stats(&self) -> &AgentStats {
        &self.stats
    }

    /// The translator's own counters (translated packets, translation drops).
    pub fn translator_stats(&self) -> &crate::siit::Stats {
        self.translator.stats()
    }

    /// Applies a configuration change.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Network { id, cidr } => {
                let n = self.networks.entry(id).or_insert_with(|| Network {
                    subnets: Vec::new(),
                    routes: Vec::new(),
                });
                n.routes.retain(|&(_, t)| t != RouteTarget::Local);
                n.set_route(cidr, RouteTarget::Local);
            }
            Change::RemoveNetwork(id) => {
                self.networks.remove(&id);
                self.cache.retain(|(n, _), e| *n != id || e.local.is_some());
            }
            Change::Subnet { network, subnet } => {
                if let Some(n) = self.networks.get_mut(&network) {
                    n.subnets.retain(|s| s.cidr != subnet.cidr);
                    n.subnets.push(subnet);
                }
            }
            Change::Route {
                network,
                cidr,
                target,
            } => {
                if let Some(n) = self.networks.get_mut(&network) {
                    n.set_route(cidr, target);
                }
            }
            Change::RemoveRoute { network, cidr } => {
                if let Some(n) = self.networks.get_mut(&network) {
                    n.routes.retain(|(c, _)| *c != cidr);
                }
            }
            Change::AttachNode(spec) => {
                if let Some(old) = self.ports.insert(spec.port, spec) {
                    self.unset_local(old.network, old.vip);
                }
                self.cache
                    .entry((spec.network, spec.vip))
                    .or_insert(CacheEntry {
                        local: None,
                        mapping: None,
                        expires: Some(Instant::ZERO),
                    })
                    .local = Some(spec.port);
            }
            Change::DetachNode(port) => {
                self.firewalls.remove(&port);
                if let Some(old) = self.ports.remove(&port) {
                    self.unset_local(old.network, old.vip);
                }
            }
            Change::Mapping {
                network,
                vip,
                mapping,
            } => {
                let local = self.cache.get(&(network, vip)).and_then(|e| e.local);
                self.cache.insert(
                    (network, vip),
                    CacheEntry {
                        local,
                        mapping,
                        expires: None,
                    },
                );
                self.asked.remove(&(network, vip));
                self.hold.release((network, vip));
            }
            Change::Pool {
                id,
                config,
                members,
            } => {
                let now = self.now;
                let updated = match self.pools.get_mut(&id) {
                    Some(p) if *p.config() == config => p.set_members(&members, now).is_ok(),
                    _ => match Pool::new(config, &members) {
                        Ok(p) => {
                            self.pools.insert(id, p);
                            true
                        }
                        Err(_) => false,
                    },
                };
                if updated {
                    self.pool_members
                        .insert(id, members.iter().map(|m| m.locator).collect());
                }
                self.rebuild_edge_locators();
            }
            Change::RemovePool(id) => {
                self.pools.remove(&id);
                self.pool_members.remove(&id);
                self.rebuild_edge_locators();
            }
            Change::PortBlocks {
                network,
                vip,
                blocks,
            } => {
                self.nat.set_blocks(network, vip, &blocks);
                self.asked_blocks.remove(&(network, vip));
            }
            Change::SecurityGroups { port, groups } => {
                // Rules the manager validated compile; if some did not, the node keeps
                // its previous policy rather than opening up.
                if let Ok(sg) = SgPolicy::compile(&groups) {
                    let max = self.cfg.max_connections_per_node;
                    self.firewalls
                        .entry(port)
                        .and_modify(|s| s.sg = sg.clone())
                        .or_insert_with(|| NodeSecurity {
                            sg,
                            fw: Firewall::new(Conntrack::new(Timeouts::default(), max)),
                        });
                }
            }
            Change::GroupMember {
                group,
                network,
                vip,
                member,
            } => {
                if member {
                    self.members.insert(group, network, vip);
                } else {
                    self.members.remove(group, network, vip);
                }
            }
            Change::Acl {
                network,
                subnet,
                rules,
            } => match rules.map(|r| Acl::compile(&r)) {
                Some(Ok(acl)) => {
                    self.acls.insert((network, subnet), acl);
                }
                Some(Err(_)) => {}
                None => {
                    self.acls.remove(&(network, subnet));
                }
            },
            Change::ElasticIp {
                network,
                vip,
                public,
            } => {
                if public.is_some() {
                    self.eips.insert((network, vip));
                } else {
                    self.eips.remove(&(network, vip));
                }
            }
        }
    }

    /// The manager's answer to a [`Event::Resolve`]: `None` means no node has the
    /// address. Packets held for it become ready.
    pub fn on_resolved(
        &mut self,
        network: NetworkId,
        ip: Ipv4Addr,
        mapping: Option<Mapping>,
        now: Instant,
    ) {
        let key = (network, ip);
        let old = self.cache.get(&key).copied();
        let pushed = old.is_some_and(|e| e.expires.is_none());
        if !pushed {
            self.cache.insert(
                key,
                CacheEntry {
                    local: old.and_then(|e| e.local),
                    mapping,
                    expires: Some(now.plus_millis(self.cfg.mapping_ttl_ms)),
                },
            );
        }
        self.asked.remove(&key);
        self.hold.release(key);
    }

    /// The next thing the daemon must do for the agent.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Copies the next held packet whose mapping has arrived into `out` and says where it
    /// came from; the daemon feeds it to [`from_vm`](Self::from_vm) or
    /// [`from_substrate`](Self::from_substrate) again.
    pub fn take_ready(&mut self, out: &mut [u8]) -> Option<(Ready, usize)> {
        self.hold.take_ready(out).map(|(origin, n)| {
            let r = match origin {
                Origin::Vm(p) => Ready::FromVm(p),
                Origin::Substrate => Ready::FromSubstrate,
            };
            (r, n)
        })
    }

    /// Advances time: packets held too long are dropped, unanswered resolves asked again.
    pub fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
        self.nat.expire(now);
        for s in self.firewalls.values_mut() {
            s.fw.expire(now, 4096);
        }
        for p in self.pools.values_mut() {
            p.expire(now);
        }
        let expired = self.hold.expire(now, self.cfg.hold_timeout_ms);
        for _ in 0..expired {
            self.stats.drops.inc(DropReason::HoldTimeout);
        }
        let retry = self.cfg.resolve_retry_ms;
        let mut again = Vec::new();
        for (k, at) in self.asked.iter_mut() {
            if now.since(*at) >= retry {
                *at = now;
                again.push(*k);
            }
        }
        for (network, ip) in again {
            self.push_event(Event::Resolve { network, ip });
        }
    }

    fn push_event(&mut self, e: Event) {
        // Bounded: the `asked` table dedups, and a daemon that stops draining loses only
        // the oldest requests, which `tick` asks again.
        if self.events.len() == self.events.capacity() {
            self.events.pop_front();
        }
        self.events.push_back(e);
        self.stats.resolves += 1;
    }

    /// Asks for `(network, ip)` unless already asked.
    fn ask(&mut self, network: NetworkId, ip: Ipv4Addr, now: Instant) {
        if self.asked.contains_key(&(network, ip)) {
            return;
        }
        self.asked.insert((network, ip), now);
        self.push_event(Event::Resolve { network, ip });
    }

    /// Where `(network, ip)` lives, as far as this host knows; a stale resolved entry is
    /// used and refreshed.
    fn lookup(&mut self, network: NetworkId, ip: Ipv4Addr, now: Instant) -> Lookup {
        match self.cache.get(&(network, ip)).copied() {
            Some(CacheEntry { local: Some(p), .. }) => Lookup::Local(p),
            Some(e) => {
                self.stats.cache_hits += 1;
                if e.expires.is_some_and(|t| now >= t) {
                    self.ask(network, ip, now);
                }
                match e.mapping {
                    Some(m) => Lookup::Remote(m),
                    None => Lookup::Absent,
                }
            }
            None => {
                self.stats.cache_misses += 1;
                self.ask(network, ip, now);
                Lookup::Unknown
            }
        }
    }

    fn count(&mut self, v: Verdict) -> Verdict {
        match v {
            Verdict::ToPort(_) => self.stats.to_port += 1,
            Verdict::ToSubstrate => self.stats.to_substrate += 1,
            Verdict::Reply => self.stats.replies += 1,
            Verdict::Held => self.stats.held += 1,
            Verdict::Consumed => {}
            Verdict::Drop(r) => self.stats.drops.inc(r),
        }
        v
    }

    /// A frame from a VM's port. `vnet`, if the port has offloads, describes the frame
    /// (offsets from the Ethernet header) and is rewritten for what the verdict sends.
    pub fn from_vm(
        &mut self,
        port: PortId,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
        now: Instant,
    ) -> Verdict {
        let v = self.vm_frame(port, pkt, vnet, now);
        self.count(v)
    }

    fn vm_frame(
        &mut self,
        port: PortId,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
        now: Instant,
    ) -> Verdict {
        let Some(node) = self.ports.get(&port).copied() else {
            return Verdict::Drop(DropReason::UnknownPort);
        };
        let eth = match EthernetFrame::new_checked(pkt.as_slice()) {
            Ok(e) => e,
            Err(wire::Error::Unsupported { .. }) => return Verdict::Drop(DropReason::VlanTagged),
            Err(e) => return Verdict::Drop(crate::siit::wire_err(e)),
        };
        if eth.is_tagged() {
            return Verdict::Drop(DropReason::VlanTagged);
        }
        if eth.src() != node.mac {
            return Verdict::Drop(DropReason::PortSpoofedMac);
        }
        let dst_mac = eth.dst();
        match eth.ethertype() {
            EtherType::ARP => arp::handle(self, &node, pkt, now),
            EtherType::IPV4 => self.vm_ipv4(port, &node, dst_mac, pkt, vnet, now),
            _ => Verdict::Drop(DropReason::UnsupportedEthertype),
        }
    }

    fn vm_ipv4(
        &mut self,
        port: PortId,
        node: &NodeSpec,
        dst_mac: MacAddr,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
        now: Instant,
    ) -> Verdict {
        let l3 = &pkt.as_slice()[ethernet::HEADER_LEN..];
        let ip = match Ipv4Packet::new_checked(l3) {
            Ok(ip) => ip,
            Err(e) => return Verdict::Drop(crate::siit::wire_err(e)),
        };
        let (src, dst, proto, total) = (ip.src(), ip.dst(), ip.protocol(), ip.total_len());
        let l4 = ip.payload();
        if proto == IpProtocol::UDP && l4.len() >= 4 && l4[2..4] == [0, 67] {
            return dhcp::handle(self, node, pkt, now);
        }
        if src != node.vip {
            return Verdict::Drop(DropReason::PortSpoofedIp);
        }
        if dst_mac.is_broadcast() {
            return Verdict::Drop(DropReason::Broadcast);
        }
        if dst_mac.is_multicast() {
            return Verdict::Drop(DropReason::Multicast);
        }
        let (ttl, dont_frag, fragment) = (ip.ttl(), ip.dont_frag(), ip.is_fragment());
        // Drop link padding: from here on the packet ends where IPv4 says.
        pkt.truncate(ethernet::HEADER_LEN + total as usize);
        let Some(net) = self.networks.get(&node.network) else {
            return Verdict::Drop(DropReason::NoRoute);
        };
        let routed = dst_mac == self.cfg.router_mac;
        if routed && net.is_gateway(dst) {
            return icmp::to_gateway(self, node, pkt);
        }
        let route = net.route(dst);
        if !routed && !node.subnet.cidr.contains(dst) {
            return Verdict::Drop(DropReason::UnknownDestinationMac);
        }
        if routed && ttl <= 1 {
            return icmp::error(self, node, pkt, icmp::TIME_EXCEEDED, 0, 0);
        }
        let gso = vnet.as_deref().is_some_and(|v| v.is_gso());
        // A fragment travels with an 8-byte fragment header on the substrate.
        let limit = self.cfg.virtual_mtu() - if fragment { 8 } else { 0 };
        if total > limit && !gso {
            if dont_frag {
                let mtu = self.cfg.virtual_mtu();
                let v = icmp::error(self, node, pkt, icmp::DEST_UNREACHABLE, 4, mtu);
                self.stats.drops.inc(DropReason::FragmentationNeeded);
                return v;
            }
            // Too big without DF: fragment as a router would. The first fragment goes on
            // now; the others wait as ready packets for the daemon to feed back in.
            if let Err(r) = self.fragment(port, pkt, now) {
                return Verdict::Drop(r);
            }
            return self.vm_ipv4(port, node, dst_mac, pkt, vnet, now);
        }
        match route {
            Some(RouteTarget::Local) => {}
            Some(RouteTarget::Blackhole) | None => {
                let reason = if route.is_some() {
                    DropReason::Blackhole
                } else {
                    DropReason::NoRoute
                };
                self.stats.drops.inc(reason);
                return icmp::error(self, node, pkt, icmp::DEST_UNREACHABLE, 0, 0);
            }
            Some(RouteTarget::Pool(p)) => return self.forward_to_pool(p, node, pkt, vnet, now),
            Some(RouteTarget::Peering(_)) => {
                return Verdict::Drop(DropReason::RouteTargetUnavailable);
            }
        }

        // A node of the same network: on this host, elsewhere, gone, or not known yet.
        let target = self.lookup(node.network, dst, now);
        let dst_node_mac = match target {
            Lookup::Local(p) => self.ports[&p].mac,
            Lookup::Remote(m) => m.mac,
            Lookup::Absent => {
                if routed {
                    self.stats.drops.inc(DropReason::NoSuchNode);
                    return icmp::error(self, node, pkt, icmp::DEST_UNREACHABLE, 1, 0);
                }
                return Verdict::Drop(DropReason::NoSuchNode);
            }
            Lookup::Unknown => {
                return self.hold_packet(Origin::Vm(port), (node.network, dst), pkt, vnet, now);
            }
        };
        if !routed && dst_mac != dst_node_mac {
            return Verdict::Drop(DropReason::UnknownDestinationMac);
        }
        let ip = &pkt.as_slice()[ethernet::HEADER_LEN..];
        if let Err(r) = self.filter(node, Direction::Egress, ip, now) {
            return Verdict::Drop(r);
        }
        if let Lookup::Local(p) = target {
            let receiver = self.ports[&p];
            if let Err(r) = self.filter(&receiver, Direction::Ingress, ip, now) {
                return Verdict::Drop(r);
            }
        }
        if routed {
            decrement_ttl(&mut pkt.as_mut_slice()[ethernet::HEADER_LEN..]);
        }
        match target {
            Lookup::Local(p) => {
                let src_mac = if routed {
                    self.cfg.router_mac
                } else {
                    node.mac
                };
                write_ethernet(pkt.as_mut_slice(), dst_node_mac, src_mac);
                Verdict::ToPort(p)
            }
            Lookup::Remote(m) => self.encode_out(node.network, m.locator, pkt, vnet),
            Lookup::Absent | Lookup::Unknown => unreachable!("handled above"),
        }
    }

    /// A packet from the substrate (an IPv6 packet, no link header). `vnet` as for
    /// [`from_vm`](Self::from_vm), with offsets from the IPv6 header in and from the
    /// Ethernet header out.
    pub fn from_substrate(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
        now: Instant,
    ) -> Verdict {
        let v = self.substrate_packet(pkt, vnet, now);
        self.count(v)
    }

    fn substrate_packet(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
        now: Instant,
    ) -> Verdict {
        // Check who sent it before translating, so that a packet held for its sender's
        // mapping is still the packet that came.
        let ip6 = match Ipv6Packet::new_checked(pkt.as_slice()) {
            Ok(ip) => ip,
            Err(_) if pkt.as_slice().first().is_some_and(|b| b >> 4 != 6) => {
                return Verdict::Drop(DropReason::NotIpv6)
            }
            Err(e) => return Verdict::Drop(crate::siit::wire_err(e)),
        };
        let src = model::SubstrateAddr::decode(ip6.src_bytes());
        let dst = model::SubstrateAddr::decode(ip6.dst_bytes());
        if dst.locator != self.cfg.locator {
            return Verdict::Drop(DropReason::WrongLocator);
        }
        let Some(port) = self
            .cache
            .get(&(dst.network, dst.vip))
            .and_then(|e| e.local)
        else {
            return Verdict::Drop(DropReason::NoSuchNode);
        };
        let node = self.ports[&port];
        // Edge locators are few: look the sender up there first, the network only then.
        let from_edge = self.edge_locators.get(&src.locator).is_some_and(|pools| {
            self.networks
                .get(&dst.network)
                .is_some_and(|n| pools.iter().any(|p| n.uses_pool(*p)))
        });
        let src_mac = if from_edge {
            self.cfg.router_mac
        } else {
            if src.network != dst.network {
                return Verdict::Drop(DropReason::SpoofedSource);
            }
            let sender = if src.locator == self.cfg.locator {
                // Only this host's own nodes use its locator, and they never send to the
                // substrate for a local destination.
                return Verdict::Drop(DropReason::SpoofedSource);
            } else {
                self.lookup(src.network, src.vip, now)
            };
            match sender {
                Lookup::Remote(m) if m.locator == src.locator => {
                    if node.subnet.cidr.contains(src.vip) {
                        m.mac
                    } else {
                        self.cfg.router_mac
                    }
                }
                Lookup::Unknown => {
                    let key = (src.network, src.vip);
                    return self.hold_packet(Origin::Substrate, key, pkt, vnet, now);
                }
                _ => return Verdict::Drop(DropReason::SpoofedSource),
            }
        };
        let mut vnet = vnet;
        if let Err(r) = self.translator.decode(pkt, vnet.as_deref_mut()) {
            return Verdict::Drop(r);
        }
        if from_edge
            && !self.eips.contains(&(dst.network, dst.vip))
            && self.nat.has_blocks(dst.network, dst.vip)
        {
            let partial = vnet.as_deref().is_some_and(|v| v.needs_csum());
            if let Err(r) = self.unnat(dst.network, dst.vip, pkt.as_mut_slice(), partial, now) {
                return Verdict::Drop(r);
            }
        }
        if let Err(r) = self.filter(&node, Direction::Ingress, pkt.as_slice(), now) {
            return Verdict::Drop(r);
        }
        let Some(hdr) = pkt.push_front(ethernet::HEADER_LEN) else {
            return Verdict::Drop(DropReason::NoRoom);
        };
        hdr[12..14].copy_from_slice(&EtherType::IPV4.0.to_be_bytes());
        write_ethernet(pkt.as_mut_slice(), node.mac, src_mac);
        if let Some(v) = vnet {
            shift_vnet(v, ethernet::HEADER_LEN as isize);
        }
        Verdict::ToPort(port)
    }
}

struct NodeSecurity {
    sg: SgPolicy,
    fw: Firewall,
}

/// The connection-tracking view of an IPv4 packet (already checked): addresses,
/// protocol, ports or ICMP type and identifier, TCP flags, and the quoted packet of an
/// ICMP error. `None` for a non-first fragment, which carries no ports: the first
/// fragment was filtered, and a later one without it cannot be reassembled.
fn ct_packet(network: NetworkId, ip: &[u8]) -> Option<CtPacket> {
    let p = Ipv4Packet::new_unchecked(ip);
    if p.frag_offset() != 0 {
        return None;
    }
    let (src, dst) = (p.src(), p.dst());
    let l4 = p.payload();
    let port = |i: usize| u16::from_be_bytes([l4[i], l4[i + 1]]);
    Some(match p.protocol().0 {
        6 if l4.len() >= 20 => {
            let doff = ((l4[12] >> 4) as usize * 4).min(l4.len());
            CtPacket::tcp(Flow::tcp(network, src, port(0), dst, port(2)), l4[13])
                .with_payload((l4.len() - doff) as u32)
        }
        17 if l4.len() >= 8 => CtPacket::new(Flow::udp(network, src, port(0), dst, port(2)))
            .with_payload(l4.len() as u32 - 8),
        1 if l4.len() >= 8 => {
            let ty = l4[0];
            if matches!(ty, 3 | 4 | 5 | 11 | 12) {
                let flow = Flow::icmp(network, src, dst, ty, 0);
                match Ipv4Packet::new_checked(&l4[8..]).ok().or_else(|| {
                    // The quoted packet is cut short: its header is what counts.
                    let q = &l4[8..];
                    (q.len() >= 20 && q[0] >> 4 == 4).then(|| Ipv4Packet::new_unchecked(q))
                }) {
                    Some(inner) => {
                        let q = inner.as_bytes();
                        let hl = inner.header_len().min(q.len());
                        let il4 = &q[hl..];
                        let iport = |i: usize| u16::from_be_bytes([il4[i], il4[i + 1]]);
                        let (is, id) = (inner.src(), inner.dst());
                        let inner_flow = match inner.protocol().0 {
                            6 if il4.len() >= 4 => Flow::tcp(network, is, iport(0), id, iport(2)),
                            17 if il4.len() >= 4 => Flow::udp(network, is, iport(0), id, iport(2)),
                            1 if il4.len() >= 6 => Flow::icmp(network, is, id, il4[0], iport(4)),
                            n => Flow::other(network, n, is, id),
                        };
                        CtPacket::icmp_error(flow, inner_flow)
                    }
                    None => CtPacket::new(flow),
                }
            } else {
                let ident = if matches!(ty, 0 | 8 | 13 | 14) {
                    port(4)
                } else {
                    0
                };
                CtPacket::new(Flow::icmp(network, src, dst, ty, ident))
            }
        }
        n => CtPacket::new(Flow::other(network, n, src, dst)),
    })
}

impl Agent {
    /// Runs the security groups, the subnet's ACL and connection tracking of the node on
    /// `port` over an IPv4 packet, in `dir` as seen from that node.
    fn filter(
        &mut self,
        node: &NodeSpec,
        dir: Direction,
        ip: &[u8],
        now: Instant,
    ) -> Result<(), DropReason> {
        let Some(sec) = self.firewalls.get_mut(&node.port) else {
            return Ok(());
        };
        let network = node.network;
        let Some(pkt) = ct_packet(network, ip) else {
            return Ok(());
        };
        let mut policy = Policy::new(&sec.sg, &self.members);
        if !self.acls.is_empty() {
            if let Some(acl) = self.acls.get(&(network, node.subnet.cidr)) {
                policy = policy.with_acl(acl, None);
            }
        }
        let v = match dir {
            Direction::Egress => sec.fw.egress(&policy, &pkt, now),
            Direction::Ingress => sec.fw.ingress(&policy, &pkt, now),
        };
        match v {
            FwVerdict::Allow(_) => Ok(()),
            FwVerdict::AclDenied => Err(DropReason::AclDenied),
            FwVerdict::SgDenied => Err(DropReason::SgDenied),
            FwVerdict::ConntrackFull => Err(DropReason::ConntrackFull),
            FwVerdict::ConntrackInvalid => Err(DropReason::ConntrackInvalid),
        }
    }

    /// A node left this host: its address is no longer delivered here. An entry that was
    /// only there for it goes (the next packet asks the manager again).
    fn unset_local(&mut self, network: NetworkId, vip: Ipv4Addr) {
        let key = (network, vip);
        if let Some(e) = self.cache.get_mut(&key) {
            e.local = None;
            if e.mapping.is_none() {
                self.cache.remove(&key);
            }
        }
    }

    /// Keeps a packet until `key` is resolved. A held packet comes back without its
    /// `virtio_net_hdr`, so a partial checksum is completed now; a segmentation
    /// super-packet cannot wait (it does not fit a slot) and is dropped, the sender
    /// retransmits once the mapping is there.
    fn hold_packet(
        &mut self,
        origin: Origin,
        key: (NetworkId, Ipv4Addr),
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
        now: Instant,
    ) -> Verdict {
        if let Some(v) = vnet {
            if v.is_gso() || (v.needs_csum() && !complete_checksum(pkt.as_mut_slice(), v)) {
                return Verdict::Drop(DropReason::HoldQueueFull);
            }
        }
        if self.hold.hold(origin, key, pkt.as_slice(), now) {
            Verdict::Held
        } else {
            Verdict::Drop(DropReason::HoldQueueFull)
        }
    }

    fn rebuild_edge_locators(&mut self) {
        self.edge_locators.clear();
        for (id, ls) in &self.pool_members {
            for l in ls {
                self.edge_locators.entry(*l).or_default().push(*id);
            }
        }
    }

    /// To the internet (or another pool's destination): NAT the source port from the
    /// node's block when the pool NATs, pick the edge, encode to its locator.
    fn forward_to_pool(
        &mut self,
        pool_id: u32,
        node: &NodeSpec,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
        now: Instant,
    ) -> Verdict {
        let Some(pool) = self.pools.get(&pool_id) else {
            return Verdict::Drop(DropReason::RouteTargetUnavailable);
        };
        let nat = pool.config().nat && !self.eips.contains(&(node.network, node.vip));
        let ip = &pkt.as_slice()[ethernet::HEADER_LEN..];
        if let Err(r) = self.filter(node, Direction::Egress, ip, now) {
            return Verdict::Drop(r);
        }
        let partial = vnet.as_deref().is_some_and(|v| v.needs_csum());
        let ip_bytes = &pkt.as_slice()[ethernet::HEADER_LEN..];
        let ip = Ipv4Packet::new_unchecked(ip_bytes);
        let (dst, proto, hl, first) = (
            ip.dst(),
            ip.protocol().0,
            ip.header_len(),
            ip.frag_offset() == 0,
        );
        let at = ethernet::HEADER_LEN + hl;
        let l4 = FlowPorts::of(proto, &pkt.as_slice()[at..], first);
        let key = FlowKey {
            network: node.network,
            src: node.vip,
            dst,
            proto,
            src_port: l4.map_or(0, |p| p.src),
            dst_port: l4.map_or(0, |p| p.dst),
        };
        if nat {
            let Some(ports) = l4 else {
                return Verdict::Drop(DropReason::NatNoFlow);
            };
            let flow = FlowId {
                proto,
                port: ports.src,
                remote: dst,
                remote_port: ports.dst,
            };
            let public = match self.nat.outbound(node.network, node.vip, flow, now) {
                Ok(p) => p,
                Err(NatError::TableFull) => return Verdict::Drop(DropReason::NatTableFull),
                Err(NatError::NoBlock | NatError::Exhausted) => {
                    self.ask_block(node.network, node.vip, now);
                    return Verdict::Drop(DropReason::PortBlockExhausted);
                }
            };
            ports.rewrite_src(&mut pkt.as_mut_slice()[at..], public, partial);
        }
        let bytes = pkt.len();
        let pool = self.pools.get_mut(&pool_id).expect("looked up above");
        let dst_loc = match pool.select(&key, bytes, now) {
            Selection::Member { locator, .. } | Selection::Anycast(locator) => locator,
            Selection::NoMember => return Verdict::Drop(DropReason::NoEdge),
        };
        decrement_ttl(&mut pkt.as_mut_slice()[ethernet::HEADER_LEN..]);
        self.encode_out(node.network, dst_loc, pkt, vnet)
    }

    /// Strips the Ethernet header of a frame from a VM and encodes the IPv4 packet to the
    /// substrate, towards `dst` (a host's or an edge's locator).
    fn encode_out(
        &mut self,
        network: NetworkId,
        dst: Locator,
        pkt: &mut PacketBuf<'_>,
        mut vnet: Option<&mut VirtioNetHdr>,
    ) -> Verdict {
        pkt.strip_front(ethernet::HEADER_LEN);
        if let Some(v) = vnet.as_deref_mut() {
            shift_vnet(v, -(ethernet::HEADER_LEN as isize));
        }
        let map = EncodeMap {
            network,
            src: self.cfg.locator,
            dst,
        };
        match self.translator.encode(&map, pkt, vnet) {
            Ok(()) => Verdict::ToSubstrate,
            Err(r) => Verdict::Drop(r),
        }
    }

    /// Cuts the IPv4 packet of the frame in `pkt` (larger than the virtual MTU, DF clear)
    /// into fragments that fit (RFC 791): the frame becomes the first fragment, the others
    /// are queued as ready frames of the same port. Options are not repeated in the later
    /// fragments (the substrate drops them anyway).
    fn fragment(
        &mut self,
        port: PortId,
        pkt: &mut PacketBuf<'_>,
        now: Instant,
    ) -> Result<(), DropReason> {
        // Every piece carries a fragment header on the substrate: 8 bytes less room.
        let mtu = self.cfg.virtual_mtu() as usize - 8;
        let frame = pkt.as_slice();
        let ip = Ipv4Packet::new_unchecked(&frame[ethernet::HEADER_LEN..]);
        let (hl, total) = (ip.header_len(), ip.total_len() as usize);
        let base = ip.frag_offset() as usize * 8;
        let more = ip.more_frags();
        let payload = &frame[ethernet::HEADER_LEN + hl..ethernet::HEADER_LEN + total];
        let first = (mtu - hl) / 8 * 8;
        let step = (mtu - ipv4::HEADER_LEN) / 8 * 8;
        let rest = payload.len() - first;
        if self.hold.free_slots() < rest.div_ceil(step) {
            return Err(DropReason::HoldQueueFull);
        }
        let hdr = crate::siit::V4Header {
            tos: ip.tos(),
            total_len: 0,
            ident: ip.ident(),
            dont_frag: false,
            more_frags: true,
            frag_offset: 0,
            ttl: ip.ttl(),
            protocol: ip.protocol(),
            src: ip.src_bytes(),
            dst: ip.dst_bytes(),
        };
        let mut buf = [0u8; MIN_BUFFER];
        buf[..ethernet::HEADER_LEN].copy_from_slice(&frame[..ethernet::HEADER_LEN]);
        let mut off = first;
        while off < payload.len() {
            let len = step.min(payload.len() - off);
            let last = off + len == payload.len();
            crate::siit::V4Header {
                total_len: (ipv4::HEADER_LEN + len) as u16,
                more_frags: !last || more,
                frag_offset: ((base + off) / 8) as u16,
                ..hdr
            }
            .write(&mut buf[ethernet::HEADER_LEN..]);
            let at = ethernet::HEADER_LEN + ipv4::HEADER_LEN;
            buf[at..at + len].copy_from_slice(&payload[off..off + len]);
            self.hold
                .push_ready(Origin::Vm(port), &buf[..at + len], now);
            off += len;
        }
        // The frame itself becomes the first fragment.
        let f = pkt.as_mut_slice();
        let mut ip = Ipv4Packet::new_unchecked(&mut f[ethernet::HEADER_LEN..]);
        ip.set_total_len((hl + first) as u16);
        ip.set_flags_offset(false, true, (base / 8) as u16);
        ip.fill_checksum();
        pkt.truncate(ethernet::HEADER_LEN + hl + first);
        Ok(())
    }

    fn ask_block(&mut self, network: NetworkId, vip: Ipv4Addr, now: Instant) {
        let due = self
            .asked_blocks
            .get(&(network, vip))
            .is_none_or(|at| now.since(*at) >= self.cfg.resolve_retry_ms);
        if due {
            self.asked_blocks.insert((network, vip), now);
            if self.events.len() == self.events.capacity() {
                self.events.pop_front();
            }
            self.events.push_back(Event::NeedPortBlock { network, vip });
        }
    }

    /// Restores the node's own port on a packet that came back through an edge.
    fn unnat(
        &mut self,
        network: NetworkId,
        vip: Ipv4Addr,
        ip: &mut [u8],
        partial: bool,
        now: Instant,
    ) -> Result<(), DropReason> {
        // An ICMP error about a flow: the quoted packet left with the public port.
        if let Some(q) = crate::quote::quote(ip) {
            let (Some(public), Some(remote_port)) = (q.src_port, q.dst_port) else {
                return Err(DropReason::NatNoFlow);
            };
            let own = self
                .nat
                .inbound(network, vip, q.proto, public, (q.dst, remote_port), now)
                .ok_or(DropReason::NatNoFlow)?;
            return crate::quote::rewrite_quote(ip, None, Some(own));
        }
        let p = Ipv4Packet::new_unchecked(&*ip);
        let (src, proto, hl, first) = (
            p.src(),
            p.protocol().0,
            p.header_len(),
            p.frag_offset() == 0,
        );
        let ports = FlowPorts::of(proto, &ip[hl..], first).ok_or(DropReason::NatNoFlow)?;
        // Inbound, the public port is the destination and the remote the source.
        let own = self
            .nat
            .inbound(network, vip, proto, ports.dst, (src, ports.src), now)
            .ok_or(DropReason::NatNoFlow)?;
        ports.rewrite_dst(&mut ip[hl..], own, partial);
        Ok(())
    }
}

/// The ports of a flow as NAT and pool selection see them: TCP/UDP ports, or the ICMP
/// echo identifier as both (which is what an ICMP "port" is to a NAT, RFC 5508).
#[derive(Debug, Clone, Copy)]
struct FlowPorts {
    src: u16,
    dst: u16,
    proto: u8,
}

impl FlowPorts {
    fn of(proto: u8, l4: &[u8], first_fragment: bool) -> Option<FlowPorts> {
        if !first_fragment {
            return None;
        }
        match proto {
            6 | 17 if l4.len() >= 8 => Some(FlowPorts {
                src: u16::from_be_bytes([l4[0], l4[1]]),
                dst: u16::from_be_bytes([l4[2], l4[3]]),
                proto,
            }),
            1 if l4.len() >= 8 && matches!(l4[0], 0 | 8) => {
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

    fn rewrite_src(&self, l4: &mut [u8], port: u16, partial: bool) {
        let at = if self.proto == 1 { 4 } else { 0 };
        self.rewrite(l4, at, port, partial);
    }

    fn rewrite_dst(&self, l4: &mut [u8], port: u16, partial: bool) {
        let at = if self.proto == 1 { 4 } else { 2 };
        self.rewrite(l4, at, port, partial);
    }

    /// Writes `port` at `at`, fixing the checksum (unless it is the partial sum of an
    /// offloaded packet, which covers the pseudo-header only, or UDP's "no checksum").
    fn rewrite(&self, l4: &mut [u8], at: usize, port: u16, partial: bool) {
        let old = u16::from_be_bytes([l4[at], l4[at + 1]]);
        l4[at..at + 2].copy_from_slice(&port.to_be_bytes());
        let c_at = match self.proto {
            6 => 16,
            17 => 6,
            _ => 2,
        };
        if (partial && self.proto != 1) || l4.len() < c_at + 2 {
            return;
        }
        let c = u16::from_be_bytes([l4[c_at], l4[c_at + 1]]);
        if self.proto == 17 && c == 0 {
            return;
        }
        let mut v = wire::checksum::update_word(c, old, port);
        if self.proto == 17 && v == 0 {
            v = 0xffff;
        }
        l4[c_at..c_at + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// Where a packet handed back by [`Agent::take_ready`] came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ready {
    FromVm(PortId),
    FromSubstrate,
}

/// Writes destination and source MACs over the first 12 bytes of a frame.
#[inline]
fn write_ethernet(frame: &mut [u8], dst: MacAddr, src: MacAddr) {
    frame[..6].copy_from_slice(&dst.octets());
    frame[6..12].copy_from_slice(&src.octets());
}

/// Decrements the TTL of the IPv4 header at the start of `ip`, fixing its checksum
/// incrementally (RFC 1624).
#[inline]
fn decrement_ttl(ip: &mut [u8]) {
    let old = u16::from_be_bytes([ip[8], ip[9]]);
    ip[8] -= 1;
    let new = u16::from_be_bytes([ip[8], ip[9]]);
    let c = u16::from_be_bytes([ip[10], ip[11]]);
    let c = wire::checksum::update_word(c, old, new);
    ip[10..12].copy_from_slice(&c.to_be_bytes());
}

/// Does what a device with checksum offload would: the field at `csum_start +
/// csum_offset` holds the pseudo-header sum, the checksum is the complement of the sum
/// from `csum_start` to the end with that field in. Clears `NEEDS_CSUM`. False if the
/// offsets do not fit the packet.
fn complete_checksum(bytes: &mut [u8], v: &mut VirtioNetHdr) -> bool {
    let start = v.csum_start as usize;
    let at = start + v.csum_offset as usize;
    if at + 2 > bytes.len() {
        return false;
    }
    let mut c = wire::checksum::checksum(&bytes[start..]);
    if c == 0 && v.csum_offset == 6 {
        c = 0xffff; // UDP: a computed zero is sent as all ones
    }
    bytes[at..at + 2].copy_from_slice(&c.to_be_bytes());
    v.flags &= !wire::virtio::FLAG_NEEDS_CSUM;
    true
}

/// Moves a `virtio_net_hdr`'s offsets by `by` bytes (a link header added or removed).
fn shift_vnet(v: &mut VirtioNetHdr, by: isize) {
    let f = |x: u16| (x as isize + by).max(0) as u16;
    if v.needs_csum() {
        v.csum_start = f(v.csum_start);
    }
    if v.is_gso() && v.hdr_len != 0 {
        v.hdr_len = f(v.hdr_len);
    }
}
