//! The agent pipeline (the patent's Communication Manager), sans-IO: it takes a frame from
//! a VM's port or a packet from the substrate, with the time, and says where the bytes go
//! now. It answers ARP and DHCP for its nodes, emulates the subnet router (gateway ping,
//! TTL, ICMP errors), keeps the mapping cache of where virtual addresses live, encodes to
//! and decodes from the IPv6 substrate, and refuses substrate packets whose sender is not
//! who its source address claims. Routes are looked up in the sending node's subnet table
//! first, then in its network's; a peering route sends to the peer network's node, and a
//! packet from another network is taken only through a peering route back to it. The
//! members of direct edge pools are probed ([`AgentConfig::probe_interval_ms`]) and left
//! while they do not answer.
//!
//! The daemon owns the devices and the manager connection; it feeds packets in with
//! [`Agent::from_vm`] and [`Agent::from_substrate`], configuration with [`Agent::apply`]
//! and [`Agent::on_resolved`], the clock with [`Agent::tick`], and drains
//! [`Agent::poll_event`] (resolve and port block requests for the manager) and
//! [`Agent::take_ready`] (packets that were held for a mapping or for their node's port
//! block and can go now, and health probes).
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
use crate::nat::{FlowId, ImportReport, NatError, NatTimeouts, PortBlock, SavedNode, SourceNat};
use crate::pool::{
    FlowKey, Member, MemberState, Pool, PoolConfig, PoolCounters, PoolMode, Selection,
};
use crate::ports::FlowPorts;
use crate::probe;
use crate::rules::{
    Acl, AclRule, Direction, Firewall, GroupId, GroupMembers, Policy, SecurityGroup, SgPolicy,
    Verdict as FwVerdict,
};
use crate::siit::{Config as SiitConfig, EncodeMap, EncodeOpts, Translator};
use crate::time::Instant;
use ahash::{HashMap, HashMapExt, HashSet, HashSetExt};
use core::net::Ipv4Addr;
use hold::{HoldQueue, Origin, Wait};
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
    /// How long a packet waits for its mapping, or for its node's port block, before it
    /// is dropped.
    pub hold_timeout_ms: u64,
    /// How many packets may wait at once, and how many per address (a destination being
    /// resolved, or a node waiting for a port block): enough for a VM's first burst of
    /// connections (a browser opens a dozen at once) to wait whole rather than lose its
    /// SYNs to a second's retransmission. Preallocated, `MIN_BUFFER` bytes each.
    pub hold_capacity: usize,
    pub hold_per_address: usize,
    /// Most NAT flows tracked at once, over all nodes.
    pub max_nat_flows: usize,
    /// Connections tracked per node with security groups (preallocated).
    pub max_connections_per_node: usize,
    /// How often every member of the direct pools is probed (0: never). A member that
    /// misses `probe_misses` probes in a row is marked down in this agent's pools (its
    /// flows move, nobody else's) within `probe_interval_ms * (probe_misses + 1)` of its
    /// last answer, and up again at its next answer. Of several workers, only worker 0
    /// probes; it tells the others what it finds ([`Event::EdgeHealth`]), so that a host
    /// probes each member once whatever its number of cores.
    pub probe_interval_ms: u64,
    pub probe_misses: u32,
    /// This agent is worker `worker` of `workers` that share the host's ports (one per
    /// core in the daemon): it keeps the state of the nodes on the ports
    /// [`worker_of`] gives it, and hands packets for the others' nodes over with
    /// [`Verdict::ToWorker`]. Every worker is given the whole configuration.
    pub worker: u16,
    pub workers: u16,
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
            hold_capacity: 256,
            hold_per_address: 32,
            max_nat_flows: 262_144,
            max_connections_per_node: 16_384,
            probe_interval_ms: 100,
            probe_misses: 3,
            worker: 0,
            workers: 1,
        }
    }

    /// The MTU inside virtual networks: the substrate's less the 20 bytes the IPv6
    /// header adds over IPv4's.
    pub fn virtual_mtu(&self) -> u16 {
        self.substrate_mtu - 20
    }
}

/// The worker, of `workers`, that owns a port: reads and writes its device and keeps its
/// node's connection and NAT state. The daemon and every worker's agent must agree on it.
pub fn worker_of(port: PortId, workers: u16) -> u16 {
    let n = u32::from(workers.max(1));
    // A mask where it can be (one worker, or a power of two): no division per packet.
    if n.is_power_of_two() {
        (port.0 & (n - 1)) as u16
    } else {
        (port.0 % n) as u16
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
    /// A route of a network's main table (`subnet: None`) or of one subnet's own table
    /// (`Some(subnet's CIDR)`), which is looked up first for traffic from that subnet's
    /// nodes: longest prefix there, and the network's table only when nothing there
    /// matches. The network's own CIDR is the main table's implicit local route.
    Route {
        network: NetworkId,
        subnet: Option<Ipv4Cidr>,
        cidr: Ipv4Cidr,
        target: RouteTarget,
    },
    RemoveRoute {
        network: NetworkId,
        subnet: Option<Ipv4Cidr>,
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
    /// What the probing worker found of a pool member ([`Event::EdgeHealth`]): dead
    /// (`up: false`) or alive again. The worker that probes ignores it.
    EdgeHealth {
        locator: Locator,
        up: bool,
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
    /// Kept until its mapping is known, or until its node has a port block;
    /// [`Agent::take_ready`] hands it back.
    Held,
    /// Handled, nothing to send (a DHCP release, say).
    Consumed,
    /// An IPv6 packet (as for the substrate) for a node of this host that another worker
    /// owns ([`AgentConfig::worker`]): hand it to that worker's agent, which takes it with
    /// [`Agent::from_worker`] if it came from a VM here, or with
    /// [`Agent::from_substrate`] if it came from the substrate.
    ToWorker(u16),
    Drop(DropReason),
}

/// Something the daemon must do for the agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// Ask the manager where `(network, ip)` lives, and call [`Agent::on_resolved`].
    Resolve { network: NetworkId, ip: Ipv4Addr },
    /// A node's port blocks are used up (or it has none): ask the manager for another
    /// and push it with [`Change::PortBlocks`]. Its packets wait meanwhile (up to the
    /// hold timeout); asked once per node, and again every `resolve_retry_ms` while
    /// packets wait.
    NeedPortBlock { network: NetworkId, vip: Ipv4Addr },
    /// The probing worker (worker 0 of several) found a pool member dead (`up: false`)
    /// or alive again: give it to the other workers as [`Change::EdgeHealth`].
    EdgeHealth { locator: Locator, up: bool },
}

/// Counts of what the agent did, beyond drops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AgentStats {
    pub drops: DropCounters,
    pub to_port: u64,
    pub to_substrate: u64,
    /// Packets handed to another worker ([`Verdict::ToWorker`]).
    pub to_worker: u64,
    pub replies: u64,
    pub held: u64,
    /// Of the held packets, those that waited for their node's port block.
    pub port_block_holds: u64,
    pub arp_replies: u64,
    pub dhcp_offers: u64,
    pub dhcp_acks: u64,
    pub dhcp_naks: u64,
    pub cache_hits: u64,
    pub cache_misses: u64,
    pub resolves: u64,
    /// Health probes sent to pool members, and answers in time.
    pub probes_sent: u64,
    pub probes_answered: u64,
    /// Pool members this agent has marked down for missing probes (now).
    pub members_down: u64,
}

impl AgentStats {
    /// Adds another worker's counts to these. Every worker knows which members are down
    /// (worker 0 finds out, the others are told), so a member down counts once: the most
    /// any worker has marked down.
    pub fn merge(&mut self, o: &AgentStats) {
        self.drops.merge(&o.drops);
        for (a, b) in [
            (&mut self.to_port, o.to_port),
            (&mut self.to_substrate, o.to_substrate),
            (&mut self.to_worker, o.to_worker),
            (&mut self.replies, o.replies),
            (&mut self.held, o.held),
            (&mut self.port_block_holds, o.port_block_holds),
            (&mut self.arp_replies, o.arp_replies),
            (&mut self.dhcp_offers, o.dhcp_offers),
            (&mut self.dhcp_acks, o.dhcp_acks),
            (&mut self.dhcp_naks, o.dhcp_naks),
            (&mut self.cache_hits, o.cache_hits),
            (&mut self.cache_misses, o.cache_misses),
            (&mut self.resolves, o.resolves),
            (&mut self.probes_sent, o.probes_sent),
            (&mut self.probes_answered, o.probes_answered),
        ] {
            *a += b;
        }
        self.members_down = self.members_down.max(o.members_down);
    }
}

/// A route table: longest prefix first, so the first match is the longest.
#[derive(Debug, Clone, Default)]
struct RouteTable(Vec<(Ipv4Cidr, RouteTarget)>);

impl RouteTable {
    fn lookup(&self, ip: Ipv4Addr) -> Option<RouteTarget> {
        self.0.iter().find(|(c, _)| c.contains(ip)).map(|&(_, t)| t)
    }

    fn set(&mut self, cidr: Ipv4Cidr, target: RouteTarget) {
        self.remove(cidr);
        let at = self
            .0
            .iter()
            .position(|(c, _)| c.prefix_len() < cidr.prefix_len())
            .unwrap_or(self.0.len());
        self.0.insert(at, (cidr, target));
    }

    fn remove(&mut self, cidr: Ipv4Cidr) {
        self.0.retain(|(c, _)| *c != cidr);
    }

    fn targets(&self) -> impl Iterator<Item = RouteTarget> + '_ {
        self.0.iter().map(|&(_, t)| t)
    }
}

#[derive(Debug, Clone, Default)]
struct Network {
    subnets: Vec<Subnet>,
    /// The network's main table, with its own CIDR as the local route.
    routes: RouteTable,
    /// Subnets' own tables, looked up before the main one for their nodes' traffic.
    subnet_routes: Vec<(Ipv4Cidr, RouteTable)>,
}

impl Network {
    /// Where traffic from a node of `subnet` to `ip` goes: the subnet's own table first,
    /// then the network's.
    fn route(&self, subnet: Ipv4Cidr, ip: Ipv4Addr) -> Option<RouteTarget> {
        if !self.subnet_routes.is_empty() {
            if let Some(t) = self
                .subnet_routes
                .iter()
                .find(|(s, _)| *s == subnet)
                .and_then(|(_, table)| table.lookup(ip))
            {
                return Some(t);
            }
        }
        self.routes.lookup(ip)
    }

    fn table_mut(&mut self, subnet: Option<Ipv4Cidr>) -> &mut RouteTable {
        let Some(subnet) = subnet else {
            return &mut self.routes;
        };
        let at = match self.subnet_routes.iter().position(|(s, _)| *s == subnet) {
            Some(at) => at,
            None => {
                self.subnet_routes.push((subnet, RouteTable::default()));
                self.subnet_routes.len() - 1
            }
        };
        &mut self.subnet_routes[at].1
    }

    fn set_route(&mut self, subnet: Option<Ipv4Cidr>, cidr: Ipv4Cidr, target: RouteTarget) {
        self.table_mut(subnet).set(cidr, target);
    }

    fn remove_route(&mut self, subnet: Option<Ipv4Cidr>, cidr: Ipv4Cidr) {
        self.table_mut(subnet).remove(cidr);
        self.subnet_routes.retain(|(_, t)| !t.0.is_empty());
    }

    /// Every target of every table of the network.
    fn targets(&self) -> impl Iterator<Item = RouteTarget> + '_ {
        self.routes
            .targets()
            .chain(self.subnet_routes.iter().flat_map(|(_, t)| t.targets()))
    }

    fn is_gateway(&self, ip: Ipv4Addr) -> bool {
        self.subnets.iter().any(|s| s.gateway == ip)
    }

    fn uses_pool(&self, pool: u32) -> bool {
        self.targets().any(|t| t == RouteTarget::Pool(pool))
    }

    /// The targets of the tables a node of `subnet` is routed by: its subnet's and the
    /// network's.
    fn node_targets(&self, subnet: Ipv4Cidr) -> impl Iterator<Item = RouteTarget> + '_ {
        self.routes.targets().chain(
            self.subnet_routes
                .iter()
                .filter(move |(s, _)| *s == subnet)
                .flat_map(|(_, t)| t.targets()),
        )
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
    /// Nodes for which a port block was asked, and when: outstanding until the node has
    /// a free port again.
    asked_blocks: HashMap<(NetworkId, Ipv4Addr), Instant>,
    /// Nodes that have asked for a first port block (before any packet, or with one).
    first_block_asked: HashSet<(NetworkId, Ipv4Addr)>,
    /// Nodes running low on ports that asked for another block, and when.
    /// Nodes running low that asked for another block: when, and how long they wait
    /// before asking again if none comes.
    refill_asked: HashMap<(NetworkId, Ipv4Addr), (Instant, u64)>,
    events: VecDeque<Event>,
    hold: HoldQueue,
    stats: AgentStats,
    /// Security: per node (one connection table each, so that one node's traffic never
    /// opens another's door), group memberships, ACLs per subnet.
    firewalls: HashMap<PortId, NodeSecurity>,
    members: GroupMembers,
    acls: HashMap<(NetworkId, Ipv4Cidr), Acl>,
    /// Members per pool, as last configured (health overlaid when applied).
    pool_members: HashMap<u32, Vec<Member>>,
    /// Probing of the direct pools' members: their health, the probes to hand out through
    /// `take_ready`, the round's sequence number and when the next round is due.
    health: HashMap<Locator, Health>,
    probe_queue: VecDeque<Locator>,
    /// What the probing worker has to tell the others ([`Event::EdgeHealth`]): apart
    /// from the resolve and port block requests, so that none pushes it out; at most a
    /// round's worth (every member's state, and what changed since).
    health_news: VecDeque<(Locator, bool)>,
    probe_seq: u16,
    next_probe: Instant,
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
            first_block_asked: HashSet::new(),
            refill_asked: HashMap::new(),
            events: VecDeque::with_capacity(64),
            hold,
            stats: AgentStats::default(),
            pool_members: HashMap::new(),
            health: HashMap::new(),
            probe_queue: VecDeque::new(),
            health_news: VecDeque::new(),
            probe_seq: 0,
            next_probe: Instant::ZERO,
            firewalls: HashMap::new(),
            members: GroupMembers::new(),
            acls: HashMap::new(),
            now: Instant::ZERO,
        }
    }

    pub fn config(&self) -> &AgentConfig {
        &self.cfg
    }

    /// Which worker owns the port (see [`worker_of`]).
    fn owner(&self, port: PortId) -> u16 {
        worker_of(port, self.cfg.workers)
    }

    fn owns(&self, port: PortId) -> bool {
        self.owner(port) == self.cfg.worker
    }

    /// Whether this worker probes the pool members: worker 0 does, for the host.
    fn probes(&self) -> bool {
        self.cfg.worker == 0
    }

    pub fn stats(&self) -> &AgentStats {
        &self.stats
    }

    /// For every pool and member: how many flows this agent sent to that member (see
    /// [`Pool::member_choices`]), as `(pool id, member id, flows)`.
    pub fn edge_choices(&self) -> impl Iterator<Item = (u32, u32, u64)> + '_ {
        self.pools
            .iter()
            .flat_map(|(&pool, p)| p.member_choices().map(move |(m, n)| (pool, m, n)))
    }

    /// A pool's own counters (selections, pins, moves, ...), if the pool exists.
    pub fn pool_counters(&self, pool: u32) -> Option<&PoolCounters> {
        self.pools.get(&pool).map(Pool::counters)
    }

    /// The NAT table as plain data (the port blocks and bound flows of the nodes attached
    /// here), for the daemon to save so that a restarted agent keeps its flows' public
    /// ports (see [`SourceNat::export`]). A node no longer attached is left out, so state
    /// restored for a node deleted meanwhile is not carried on. Allocates; call it off
    /// the packet path.
    pub fn export_nat(&self, now: Instant) -> Vec<SavedNode> {
        // Every worker is given every node's saved flows on a restart, but only a node's
        // owner keeps them up to date: only it saves them.
        let attached: HashSet<(NetworkId, Ipv4Addr)> = self
            .ports
            .values()
            .filter(|n| self.owns(n.port))
            .map(|n| (n.network, n.vip))
            .collect();
        let mut saved = self.nat.export(now);
        saved.retain(|n| attached.contains(&(n.network, n.vip)));
        saved
    }

    /// Binds the flows a previous agent saved again (see [`SourceNat::import`]): call it
    /// before packets flow, with the time of the new clock. The manager's port blocks,
    /// applied before or after, stay the authority.
    pub fn import_nat(&mut self, saved: &[SavedNode], now: Instant) -> ImportReport {
        self.now = self.now.max(now);
        self.nat.import(saved, now)
    }

    /// The translator's own counters (translated packets, translation drops).
    pub fn translator_stats(&self) -> &crate::siit::Stats {
        self.translator.stats()
    }

    /// Applies a configuration change.
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Network { id, cidr } => {
                let n = self.networks.entry(id).or_default();
                n.routes.0.retain(|&(_, t)| t != RouteTarget::Local);
                n.set_route(None, cidr, RouteTarget::Local);
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
                subnet,
                cidr,
                target,
            } => {
                if let Some(n) = self.networks.get_mut(&network) {
                    n.set_route(subnet, cidr, target);
                }
            }
            Change::RemoveRoute {
                network,
                subnet,
                cidr,
            } => {
                if let Some(n) = self.networks.get_mut(&network) {
                    n.remove_route(subnet, cidr);
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
                    self.asked_blocks.remove(&(old.network, old.vip));
                    self.first_block_asked.remove(&(old.network, old.vip));
                    self.refill_asked.remove(&(old.network, old.vip));
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
                self.hold.release(Wait::Mapping(network, vip));
            }
            Change::Pool {
                id,
                config,
                members,
            } => {
                let now = self.now;
                let effective = self.with_health(&members, true);
                let updated = match self.pools.get_mut(&id) {
                    Some(p) if *p.config() == config => p.set_members(&effective, now).is_ok(),
                    _ => match Pool::new(config, &effective) {
                        Ok(p) => {
                            self.pools.insert(id, p);
                            true
                        }
                        Err(_) => false,
                    },
                };
                if updated {
                    self.pool_members.insert(id, members);
                }
                self.rebuild_edge_locators();
            }
            Change::RemovePool(id) => {
                self.pools.remove(&id);
                self.pool_members.remove(&id);
                self.rebuild_edge_locators();
            }
            Change::EdgeHealth { locator, up } => {
                let theirs = !self.probes();
                if let Some(h) = self
                    .health
                    .get_mut(&locator)
                    .filter(|h| theirs && h.down == up)
                {
                    h.down = !up;
                    self.health_changed(locator);
                }
            }
            Change::PortBlocks {
                network,
                vip,
                blocks,
            } => {
                self.nat.set_blocks(network, vip, &blocks);
                self.refill_asked.remove(&(network, vip));
                self.release_port_block_waits(network, vip);
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
                    // Its packets leave with the elastic IP: no block needed.
                    self.asked_blocks.remove(&(network, vip));
                    self.hold.release(Wait::PortBlock(network, vip));
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
        self.hold.release(Wait::Mapping(network, ip));
    }

    /// The next thing the daemon must do for the agent.
    pub fn poll_event(&mut self) -> Option<Event> {
        if let Some((locator, up)) = self.health_news.pop_front() {
            return Some(Event::EdgeHealth { locator, up });
        }
        self.events.pop_front()
    }

    /// Copies the next held packet whose mapping (or port block) has arrived into `out`
    /// and says where it came from; the daemon feeds it to [`from_vm`](Self::from_vm) or
    /// [`from_substrate`](Self::from_substrate) again.
    ///
    /// Health probes come out here too, as packets from the substrate: fed back, they
    /// come out as [`Verdict::ToSubstrate`].
    pub fn take_ready(&mut self, out: &mut [u8]) -> Option<(Ready, usize)> {
        if let Some((origin, n)) = self.hold.take_ready(out) {
            let r = match origin {
                Origin::Vm(p) => Ready::FromVm(p),
                Origin::Substrate => Ready::FromSubstrate,
            };
            return Some((r, n));
        }
        if out.len() < probe::LEN {
            return None;
        }
        while let Some(l) = self.probe_queue.pop_front() {
            let Some(h) = self.health.get_mut(&l) else {
                continue;
            };
            h.awaiting_send = true;
            h.awaiting_reply = true;
            let (seq, at) = (self.probe_seq, self.now.millis());
            let n = probe::request(out, &self.cfg.locator, &l, PROBE_IDENT, seq, at);
            return Some((Ready::FromSubstrate, n));
        }
        None
    }

    /// Advances time: packets held too long are dropped, unanswered resolves and port
    /// block requests asked again.
    pub fn tick(&mut self, now: Instant) {
        self.now = self.now.max(now);
        if self.probes() && self.cfg.probe_interval_ms > 0 && now >= self.next_probe {
            // On a fixed schedule: counted from the daemon's 100 ms ticks, an interval that
            // is not a multiple of them would stretch (250 ms to 300), and the time to
            // find a dead edge with it; after a long stall, from now.
            let interval = self.cfg.probe_interval_ms;
            self.next_probe = self.next_probe.plus_millis(interval);
            if self.next_probe <= now {
                self.next_probe = now.plus_millis(interval);
            }
            self.probe_round();
        }
        self.nat.expire(now);
        for s in self.firewalls.values_mut() {
            s.fw.expire(now, 4096);
        }
        for p in self.pools.values_mut() {
            p.expire(now);
        }
        let expired = self.hold.expire(now, self.cfg.hold_timeout_ms);
        for _ in 0..expired.mappings {
            self.stats.drops.inc(DropReason::HoldTimeout);
        }
        for _ in 0..expired.port_blocks {
            self.stats.drops.inc(DropReason::PortBlockWaitTimeout);
        }
        // After the timeouts: a block is asked again only for packets that still wait.
        self.port_block_waits(now);
        self.ask_first_blocks(now);
        self.refill_blocks(now);
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
            Verdict::ToWorker(_) => self.stats.to_worker += 1,
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
        let route = net.route(node.subnet.cidr, dst);
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
        // The network the destination lives in: this one, or a peer's.
        let dst_net = match route {
            Some(RouteTarget::Local) => node.network,
            Some(RouteTarget::Peering(peer)) if routed => peer,
            Some(RouteTarget::Peering(_)) => {
                return Verdict::Drop(DropReason::UnknownDestinationMac)
            }
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
        };

        // A node of that network: on this host, elsewhere, gone, or not known yet.
        let target = self.lookup(dst_net, dst, now);
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
                let wait = Wait::Mapping(dst_net, dst);
                return self.hold_packet(Origin::Vm(port), wait, pkt, vnet, now);
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
            let owner = self.owner(p);
            if owner != self.cfg.worker {
                // Another worker keeps the receiver's state: it gets the packet as if from
                // a host of its own, and runs the receiver's side (peering, ingress) there.
                let opts = EncodeOpts {
                    dst_network: dst_net,
                    routed,
                };
                return match self.encode_out(node.network, opts, self.cfg.locator, pkt, vnet) {
                    Verdict::ToSubstrate => Verdict::ToWorker(owner),
                    v => v,
                };
            }
            let receiver = self.ports[&p];
            if dst_net != node.network && !self.peered(&receiver, node.network, node.vip) {
                return Verdict::Drop(DropReason::NotPeered);
            }
            if let Err(r) = self.filter(&receiver, Direction::Ingress, ip, now) {
                return Verdict::Drop(r);
            }
        }
        match target {
            Lookup::Local(p) => {
                let src_mac = if routed {
                    decrement_ttl(&mut pkt.as_mut_slice()[ethernet::HEADER_LEN..]);
                    self.cfg.router_mac
                } else {
                    node.mac
                };
                write_ethernet(pkt.as_mut_slice(), dst_node_mac, src_mac);
                Verdict::ToPort(p)
            }
            Lookup::Remote(m) => {
                let opts = EncodeOpts {
                    dst_network: dst_net,
                    routed,
                };
                self.encode_out(node.network, opts, m.locator, pkt, vnet)
            }
            Lookup::Absent | Lookup::Unknown => unreachable!("handled above"),
        }
    }

    /// Does the network of `receiver` take traffic from `(network, vip)` of another
    /// network? Only through a peering route to that network covering the address, in
    /// the table the receiver's answers would be routed by.
    fn peered(&self, receiver: &NodeSpec, network: NetworkId, vip: Ipv4Addr) -> bool {
        self.networks.get(&receiver.network).is_some_and(|n| {
            n.route(receiver.subnet.cidr, vip) == Some(RouteTarget::Peering(network))
        })
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
        let v = self.substrate_packet(pkt, vnet, now, false);
        self.count(v)
    }

    /// A packet another worker of this host handed over ([`Verdict::ToWorker`]) from one
    /// of its VMs: as [`from_substrate`](Self::from_substrate), but sent from this host's
    /// own locator by one of its nodes, whose side (egress filter) that worker has run.
    pub fn from_worker(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
        now: Instant,
    ) -> Verdict {
        let v = self.substrate_packet(pkt, vnet, now, true);
        self.count(v)
    }

    fn substrate_packet(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
        now: Instant,
        from_worker: bool,
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
        // The substrate is unicast; a host's kernel still reports its multicast groups
        // (MLD) into the device as it comes up. No multicast address is this host's
        // locator, so that is looked at only off the main path.
        let multicast = || ip6.dst_bytes()[0] == 0xff;
        if dst.network.get() == 0 {
            if multicast() {
                return Verdict::Drop(DropReason::Multicast);
            }
            return self.probe_packet(pkt.as_slice());
        }
        if dst.locator != self.cfg.locator {
            if multicast() {
                return Verdict::Drop(DropReason::Multicast);
            }
            return Verdict::Drop(DropReason::WrongLocator);
        }
        let Some(port) = self
            .cache
            .get(&(dst.network, dst.vip))
            .and_then(|e| e.local)
        else {
            return Verdict::Drop(DropReason::NoSuchNode);
        };
        let owner = self.owner(port);
        if owner != self.cfg.worker {
            // Untouched: the owner checks it as if it had read it.
            return Verdict::ToWorker(owner);
        }
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
            let peer = src.network != dst.network;
            if peer && !self.peered(&node, src.network, src.vip) {
                return Verdict::Drop(DropReason::NotPeered);
            }
            if (src.locator == self.cfg.locator) != from_worker {
                // Only this host's own nodes use its locator, and they never send to the
                // substrate for a local destination (a worker hands such packets over).
                return Verdict::Drop(DropReason::SpoofedSource);
            }
            let sender_mac = match self.lookup(src.network, src.vip, now) {
                Lookup::Local(p) if from_worker => self.ports[&p].mac,
                Lookup::Remote(m) if !from_worker && m.locator == src.locator => m.mac,
                Lookup::Unknown if !from_worker => {
                    let wait = Wait::Mapping(src.network, src.vip);
                    return self.hold_packet(Origin::Substrate, wait, pkt, vnet, now);
                }
                _ => return Verdict::Drop(DropReason::SpoofedSource),
            };
            if !peer && node.subnet.cidr.contains(src.vip) {
                sender_mac
            } else {
                self.cfg.router_mac
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

/// How long a node running low on ports first waits before asking for another block
/// again; the wait doubles with each request no block answers (the pool is out of
/// blocks, and the manager refuses each request), up to [`REFILL_RETRY_MAX_MS`].
const REFILL_RETRY_MS: u64 = 5_000;
const REFILL_RETRY_MAX_MS: u64 = 80_000;

/// Every this many probe rounds (400 ms at 100 ms), the probing worker tells the others
/// every member's state again, not only what changed.
const RESTATE_ROUNDS: u16 = 4;

/// The echo identifier of this agent's probes (worker 0's: it probes for the host).
const PROBE_IDENT: u16 = 0xca70;

/// What probing has found out about a pool member.
#[derive(Debug, Clone, Copy, Default)]
struct Health {
    /// Probes missed in a row.
    misses: u32,
    /// Marked down in this agent's pools.
    down: bool,
    /// Has answered a probe since this agent learned of it. One that has not (just added
    /// to the pool, or not heard from since the agent started) is marked down at its
    /// first missed probe, not its third: a restarted agent would otherwise keep flows on
    /// an edge that died while it was away for three rounds.
    answered: bool,
    /// Probed out of round, when it joined: its answer may carry the previous round's
    /// number, so the next round does not count it as missed.
    fresh: bool,
    /// This round's probe was handed out and is not answered yet.
    awaiting_reply: bool,
    /// This round's probe was handed out and has not come back through
    /// `from_substrate` on its way out yet.
    awaiting_send: bool,
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

    /// Keeps a packet until what it waits for is there. A held packet comes back without
    /// its `virtio_net_hdr`, so a partial checksum is completed now; a segmentation
    /// super-packet cannot wait (it does not fit a slot) and is dropped, the sender
    /// retransmits once the mapping (or block) is there. A packet that cannot wait is
    /// counted as `hold_queue_full` for a mapping, `port_block_exhausted` for a block.
    fn hold_packet(
        &mut self,
        origin: Origin,
        wait: Wait,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
        now: Instant,
    ) -> Verdict {
        let full = match wait {
            Wait::PortBlock(..) => DropReason::PortBlockExhausted,
            Wait::Mapping(..) | Wait::Nothing => DropReason::HoldQueueFull,
        };
        if let Some(v) = vnet {
            if v.is_gso() || (v.needs_csum() && !complete_checksum(pkt.as_mut_slice(), v)) {
                return Verdict::Drop(full);
            }
        }
        if self.hold.hold(origin, wait, pkt.as_slice(), now) {
            Verdict::Held
        } else {
            Verdict::Drop(full)
        }
    }

    fn rebuild_edge_locators(&mut self) {
        self.edge_locators.clear();
        for (id, ms) in &self.pool_members {
            for m in ms {
                self.edge_locators.entry(m.locator).or_default().push(*id);
            }
        }
        // Probe the members of direct pools, keeping what is known of those that stay.
        let direct: HashSet<Locator> = self
            .pool_members
            .iter()
            .filter(|(id, _)| {
                self.pools
                    .get(id)
                    .is_some_and(|p| p.config().mode == PoolMode::Direct)
            })
            .flat_map(|(_, ms)| ms.iter().map(|m| m.locator))
            .collect();
        self.health.retain(|l, _| direct.contains(l));
        for l in direct {
            if self.health.contains_key(&l) {
                continue;
            }
            // Probed at once, not at the next round: dead, it is found so at that round.
            let probed = self.probes() && self.cfg.probe_interval_ms > 0;
            self.health.insert(
                l,
                Health {
                    fresh: probed,
                    ..Health::default()
                },
            );
            if probed {
                self.probe_queue.push_back(l);
            }
        }
        self.count_down();
    }

    fn count_down(&mut self) {
        self.stats.members_down = self.health.values().filter(|h| h.down).count() as u64;
    }

    /// `members` with those this agent found dead marked down, unless that would leave
    /// no active member: then the probes are more likely lost than every edge dead (a
    /// filter on the way, a host too busy to answer in time), and the pool goes on as
    /// configured rather than dropping everything (fail open, as Envoy's panic
    /// threshold). `keep_load`: pass their reported load on (a new configuration);
    /// otherwise none, so that re-applying the same members does not count their last
    /// report again.
    fn with_health(&self, members: &[Member], keep_load: bool) -> Vec<Member> {
        let dead = |m: &Member| self.health.get(&m.locator).is_some_and(|h| h.down);
        let active = |m: &&Member| m.state == MemberState::Active;
        let fail_open =
            members.iter().any(|m| active(&m)) && members.iter().filter(active).all(dead);
        members
            .iter()
            .map(|m| Member {
                state: if dead(m) && !fail_open {
                    MemberState::Down
                } else {
                    m.state
                },
                load: if keep_load { m.load } else { None },
                ..*m
            })
            .collect()
    }

    /// A member's health changed: every pool that has it learns.
    fn health_changed(&mut self, locator: Locator) {
        let now = self.now;
        let pools = self
            .edge_locators
            .get(&locator)
            .cloned()
            .unwrap_or_default();
        for id in pools {
            let Some(members) = self.pool_members.get(&id) else {
                continue;
            };
            let effective = self.with_health(members, false);
            if let Some(p) = self.pools.get_mut(&id) {
                // The members were accepted before; only states change.
                let _ = p.set_members(&effective, now);
            }
        }
        self.count_down();
    }

    /// The probing worker tells the others what it found of a member, in the place of
    /// what it still had to tell of it (the round's repetition of its state, older).
    fn tell_health(&mut self, locator: Locator, up: bool) {
        if self.cfg.workers > 1 {
            self.health_news.retain(|&(l, _)| l != locator);
            self.health_news.push_back((locator, up));
        }
    }

    /// A probe round: a member whose previous probe went unanswered has missed one (one
    /// that never answered is down at once, see [`Health::answered`]); every member gets
    /// a new probe, handed out by `take_ready`. The other workers are told every member
    /// found down or alive again at once, and every member's state again every
    /// [`RESTATE_ROUNDS`] rounds, so that a message lost to a full queue is made good.
    fn probe_round(&mut self) {
        self.probe_seq = self.probe_seq.wrapping_add(1);
        self.probe_queue.clear();
        let misses = self.cfg.probe_misses.max(1);
        let mut died = Vec::new();
        for (l, h) in self.health.iter_mut() {
            let fresh = std::mem::take(&mut h.fresh);
            if h.awaiting_reply && !fresh {
                h.misses = h.misses.saturating_add(1);
                if (h.misses >= misses || !h.answered) && !h.down {
                    h.down = true;
                    died.push(*l);
                }
            }
            h.awaiting_reply = false;
            h.awaiting_send = false;
            self.probe_queue.push_back(*l);
        }
        for l in died {
            self.health_changed(l);
            self.tell_health(l, false);
        }
        if self.cfg.workers > 1 && self.probe_seq.is_multiple_of(RESTATE_ROUNDS) {
            self.health_news.clear();
            for (&l, h) in &self.health {
                self.health_news.push_back((l, !h.down));
            }
        }
    }

    /// A packet between probe addresses (network 0): a probe of ours on its way out (fed
    /// back from `take_ready`), or an edge's answer. Nothing else is accepted there.
    fn probe_packet(&mut self, bytes: &[u8]) -> Verdict {
        let Some(e) = probe::parse(bytes) else {
            return Verdict::Drop(DropReason::UnexpectedProbe);
        };
        let ours = e.ident == PROBE_IDENT && e.seq == self.probe_seq;
        match e.ty {
            probe::ECHO_REQUEST if ours && e.src == self.cfg.locator => {
                match self.health.get_mut(&e.dst) {
                    Some(h) if h.awaiting_send => {
                        h.awaiting_send = false;
                        self.stats.probes_sent += 1;
                        Verdict::ToSubstrate
                    }
                    _ => Verdict::Drop(DropReason::UnexpectedProbe),
                }
            }
            probe::ECHO_REPLY
                if e.dst == self.cfg.locator && e.ident == PROBE_IDENT && !self.probes() =>
            {
                // Worker 0's probe, whose answer this worker read: it goes back there.
                Verdict::ToWorker(0)
            }
            probe::ECHO_REPLY if e.dst == self.cfg.locator && e.ident == PROBE_IDENT => {
                // A late answer (an earlier round) is consumed without counting.
                if let Some(h) = self
                    .health
                    .get_mut(&e.src)
                    .filter(|h| ours && h.awaiting_reply)
                {
                    h.awaiting_reply = false;
                    h.misses = 0;
                    self.stats.probes_answered += 1;
                    h.answered = true;
                    if h.down {
                        h.down = false;
                        self.health_changed(e.src);
                        self.tell_health(e.src, true);
                    }
                }
                Verdict::Consumed
            }
            _ => Verdict::Drop(DropReason::UnexpectedProbe),
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
                remote_port: nat_remote_port(proto, ports.dst),
            };
            let public = match self.nat.outbound(node.network, node.vip, flow, now) {
                Ok(p) => p,
                Err(NatError::TableFull) => return Verdict::Drop(DropReason::NatTableFull),
                Err(NatError::NoBlock | NatError::Exhausted) => {
                    // The packet waits for the block, unchanged (its port not rewritten
                    // yet), and comes back through `take_ready` as from the VM.
                    self.ask_block(node.network, node.vip, now);
                    let wait = Wait::PortBlock(node.network, node.vip);
                    let v = self.hold_packet(Origin::Vm(node.port), wait, pkt, vnet, now);
                    if v == Verdict::Held {
                        self.stats.port_block_holds += 1;
                    }
                    return v;
                }
            };
            if !ports.rewrite_src(&mut pkt.as_mut_slice()[at..], public, partial) {
                return Verdict::Drop(DropReason::NatNoFlow);
            }
        }
        let bytes = pkt.len();
        let pool = self.pools.get_mut(&pool_id).expect("looked up above");
        let dst_loc = match pool.select(&key, bytes, now) {
            Selection::Member { locator, .. } | Selection::Anycast(locator) => locator,
            Selection::NoMember => return Verdict::Drop(DropReason::NoEdge),
        };
        let opts = EncodeOpts {
            dst_network: node.network,
            routed: true,
        };
        self.encode_out(node.network, opts, dst_loc, pkt, vnet)
    }

    /// Strips the Ethernet header of a frame from a VM and encodes the IPv4 packet to the
    /// substrate, from the sender's network to the destination's (another one across a
    /// peering, `opts`), towards `dst` (a host's or an edge's locator); a routed packet
    /// loses its hop there.
    fn encode_out(
        &mut self,
        network: NetworkId,
        opts: EncodeOpts,
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
        match self.translator.encode_with(&map, opts, pkt, vnet) {
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

    /// Asks the manager for a port block for the node, unless asked less than
    /// `resolve_retry_ms` ago: one outstanding request per node, however many of its
    /// packets wait.
    fn ask_block(&mut self, network: NetworkId, vip: Ipv4Addr, now: Instant) {
        let due = self
            .asked_blocks
            .get(&(network, vip))
            .is_none_or(|at| now.since(*at) >= self.cfg.resolve_retry_ms);
        if due {
            self.asked_blocks.insert((network, vip), now);
            self.first_block_asked.insert((network, vip));
            self.push_block_event(Event::NeedPortBlock { network, vip });
        }
    }

    /// On every tick: a node whose blocks are three quarters used asks for another, so
    /// that its next flows find a port without waiting, and the new block reaches the
    /// edges before they use it. While it stays low with no block coming (the pool may be
    /// out of blocks), it asks again after [`REFILL_RETRY_MS`], then twice as long each
    /// time, up to [`REFILL_RETRY_MAX_MS`]; any change of its blocks starts over.
    fn refill_blocks(&mut self, now: Instant) {
        // Only for nodes of this worker: the others' saved flows, imported by every worker
        // at a restart, are not this worker's to refill.
        let low: Vec<(NetworkId, Ipv4Addr)> = self
            .nat
            .running_low()
            .filter(|k| {
                self.cache
                    .get(k)
                    .and_then(|e| e.local)
                    .is_some_and(|p| self.owns(p))
            })
            .collect();
        for key in low {
            let (due, wait) = match self.refill_asked.get(&key) {
                None => (true, REFILL_RETRY_MS),
                Some(&(at, wait)) => (now.since(at) >= wait, (wait * 2).min(REFILL_RETRY_MAX_MS)),
            };
            if due && !self.asked_blocks.contains_key(&key) {
                self.refill_asked.insert(key, (now, wait));
                self.push_block_event(Event::NeedPortBlock {
                    network: key.0,
                    vip: key.1,
                });
            }
        }
    }

    /// On every tick: a node of this worker routed to a NAT pool, without an elastic IP
    /// and without a port block, asks for its first block once, before it sends. The
    /// block then reaches the pool's edges (over their own watch streams) well before its
    /// first packet does; asked only when that packet comes, the released packets raced
    /// the block to the edges, and lost their SYNs to a second's retransmission where
    /// they won (seen with 20 connections opened at once through an anycast pool).
    fn ask_first_blocks(&mut self, now: Instant) {
        let mut want = Vec::new();
        for n in self.ports.values() {
            let key = (n.network, n.vip);
            if !self.owns(n.port)
                || self.first_block_asked.contains(&key)
                || self.eips.contains(&key)
                || self.nat.has_blocks(n.network, n.vip)
            {
                continue;
            }
            let routed_to_nat = self.networks.get(&n.network).is_some_and(|net| {
                net.node_targets(n.subnet.cidr).any(|t| {
                    matches!(t, RouteTarget::Pool(p)
                        if self.pools.get(&p).is_some_and(|pool| pool.config().nat))
                })
            });
            if routed_to_nat {
                want.push(key);
            }
        }
        for (network, vip) in want {
            // Outstanding as any request (a packet meanwhile does not ask twice); with
            // nothing waiting it is not repeated on a timer.
            self.ask_block(network, vip, now);
        }
    }

    /// Queues a port block request; bounded as [`push_event`](Self::push_event), and not
    /// counted as a resolve.
    fn push_block_event(&mut self, e: Event) {
        if self.events.len() == self.events.capacity() {
            self.events.pop_front();
        }
        self.events.push_back(e);
    }

    /// The node's blocks changed: if it has a free port now, its request is answered and
    /// the packets that waited for a block may go. Otherwise they wait on, and the
    /// request stays outstanding (asked again by `tick`).
    fn release_port_block_waits(&mut self, network: NetworkId, vip: Ipv4Addr) {
        if self.nat.free_ports(network, vip) > 0 {
            self.asked_blocks.remove(&(network, vip));
            self.hold.release(Wait::PortBlock(network, vip));
        }
    }

    /// On every tick, for each node with a port block request outstanding: a node that
    /// has a free port again (flows of its expired, say) lets its packets go; one whose
    /// packets still wait asks again once `resolve_retry_ms` has passed since the last
    /// request. A request with nothing waiting is not repeated: the node's next packet
    /// asks when it is due.
    fn port_block_waits(&mut self, now: Instant) {
        if self.asked_blocks.is_empty() {
            return;
        }
        let retry = self.cfg.resolve_retry_ms;
        let mut again = Vec::new();
        let (nat, hold) = (&self.nat, &mut self.hold);
        self.asked_blocks.retain(|&(network, vip), at| {
            let wait = Wait::PortBlock(network, vip);
            if nat.free_ports(network, vip) > 0 {
                hold.release(wait);
                return false;
            }
            if hold.waiting(wait) && now.since(*at) >= retry {
                *at = now;
                again.push((network, vip));
            }
            true
        });
        for (network, vip) in again {
            self.push_block_event(Event::NeedPortBlock { network, vip });
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
            let remote = (q.dst, nat_remote_port(q.proto, remote_port));
            let own = self
                .nat
                .inbound(network, vip, q.proto, public, remote, now)
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
        let remote = (src, nat_remote_port(proto, ports.src));
        let own = self
            .nat
            .inbound(network, vip, proto, ports.dst, remote, now)
            .ok_or(DropReason::NatNoFlow)?;
        if ports.rewrite_dst(&mut ip[hl..], own, partial) {
            Ok(())
        } else {
            Err(DropReason::NatNoFlow)
        }
    }
}

/// The remote port a NAT flow is told apart by: TCP's and UDP's, or none for an ICMP
/// echo. An echo's one identifier serves as both ports, but it is the node's: the NAT
/// rewrites it on the way out, so the reply carries the public identifier, not the one
/// the flow was bound with; the flow is matched on the remote address alone (RFC 5508,
/// section 3.1).
fn nat_remote_port(proto: u8, port: u16) -> u16 {
    if proto == IpProtocol::ICMP.0 {
        0
    } else {
        port
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
