//! Security groups (stateful, per node) and network ACLs (stateless, per subnet), compiled
//! into a form that is cheap to evaluate per packet, and the [`Firewall`] that the agent
//! runs for each node on both the sending and the receiving host.
//!
//! **Security groups** are sets of allow rules ([`SgRule`]): direction, protocol, port
//! range (for ICMP: a range of ICMP types) and a remote that is either a CIDR or another
//! group (whose members the caller keeps in [`GroupMembers`]). A node may be in several
//! groups; its rules are the union ([`SgPolicy::compile`]). What no rule allows is denied,
//! in both directions; connection tracking lets the packets of a connection that was
//! allowed when it opened through in both directions.
//!
//! *Default policy.* The data plane fails closed: a node whose policy has no rules (no
//! groups, or [`SgPolicy::deny_all`]) can neither open nor accept a connection. The AWS
//! behaviour, where every node is in its network's default group that allows all egress
//! and all ingress from members of the same group, is an explicit group the control plane
//! attaches: [`SecurityGroup::default_group`].
//!
//! **Network ACLs** ([`AclRule`]) are numbered allow and deny rules per direction,
//! evaluated lowest number first; the first match decides and a packet that matches none
//! is denied. They are stateless: return traffic needs its own rule (typically the
//! ephemeral ports 1024-65535), as in AWS. A subnet without an ACL is not filtered (the
//! AWS default ACL allows everything; [`Acl::allow_all`] spells it out).
//!
//! Rules match the *remote* address (the destination of an egress packet, the source of
//! an ingress one) and the *destination* port of the packet, like AWS.

use crate::conntrack::{
    Admit, Conntrack, CtVerdict, Flow, Opening, Packet, PROTO_ICMP, PROTO_TCP, PROTO_UDP,
};
use crate::time::Instant;
use ahash::RandomState;
use core::fmt;
use core::net::Ipv4Addr;
use core::ops::RangeInclusive;
use core::str::FromStr;
use model::NetworkId;
use std::collections::HashSet;

/// A security group's identifier.
pub type GroupId = u32;

/// Every port (or every ICMP type).
pub const ALL_PORTS: RangeInclusive<u16> = 0..=u16::MAX;

/// Which way a packet goes relative to the node (or, for an ACL, to the subnet).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Direction {
    /// Towards the node (inbound).
    Ingress,
    /// From the node (outbound).
    Egress,
}

impl Direction {
    /// The other direction.
    pub const fn reverse(self) -> Direction {
        match self {
            Direction::Ingress => Direction::Egress,
            Direction::Egress => Direction::Ingress,
        }
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Ingress => "ingress",
            Direction::Egress => "egress",
        })
    }
}

/// The protocol a rule applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    /// Every protocol; the port range is ignored.
    Any,
    /// TCP, with a destination port range.
    Tcp,
    /// UDP, with a destination port range.
    Udp,
    /// ICMP; the port range is a range of ICMP types (`ALL_PORTS` for all of them).
    Icmp,
    /// Any IP protocol by number; the port range is ignored unless the number is TCP,
    /// UDP or ICMP, which mean the same as the variants above.
    Number(u8),
}

impl Proto {
    /// The protocol number this names, `None` for `Any`.
    pub const fn number(self) -> Option<u8> {
        match self {
            Proto::Any => None,
            Proto::Tcp => Some(PROTO_TCP),
            Proto::Udp => Some(PROTO_UDP),
            Proto::Icmp => Some(PROTO_ICMP),
            Proto::Number(n) => Some(n),
        }
    }
}

/// Why a rule set cannot be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    /// A CIDR prefix length above 32.
    #[error("prefix length {0} is longer than 32")]
    PrefixLength(u8),
    /// Text that is not `a.b.c.d/len` or `a.b.c.d`.
    #[error("{0:?} is not an IPv4 CIDR (a.b.c.d/len)")]
    CidrSyntax(String),
    /// A port range whose start is above its end.
    #[error("port range {start}-{end} is empty")]
    EmptyPorts {
        /// The range's start.
        start: u16,
        /// The range's end.
        end: u16,
    },
    /// Two ACL rules with the same number in the same direction.
    #[error("ACL rule number {number} appears twice in the {direction} rules")]
    DuplicateAclNumber {
        /// The repeated number.
        number: u16,
        /// Its direction.
        direction: Direction,
    },
}

/// An IPv4 prefix: an address and a prefix length, host bits clear.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    addr: Ipv4Addr,
    prefix: u8,
}

const fn mask_of(prefix: u8) -> u32 {
    if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - prefix as u32)
    }
}

impl Cidr {
    /// `0.0.0.0/0`: every address.
    pub const ANY: Cidr = Cidr {
        addr: Ipv4Addr::UNSPECIFIED,
        prefix: 0,
    };

    /// The prefix `addr/prefix`; host bits of `addr` are cleared.
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Result<Cidr, RuleError> {
        if prefix > 32 {
            return Err(RuleError::PrefixLength(prefix));
        }
        let addr = Ipv4Addr::from(u32::from(addr) & mask_of(prefix));
        Ok(Cidr { addr, prefix })
    }

    /// The single address `addr/32`.
    pub const fn host(addr: Ipv4Addr) -> Cidr {
        Cidr { addr, prefix: 32 }
    }

    /// The network address.
    pub const fn addr(&self) -> Ipv4Addr {
        self.addr
    }

    /// The prefix length.
    pub const fn prefix(&self) -> u8 {
        self.prefix
    }

    /// The netmask as a number.
    pub const fn mask(&self) -> u32 {
        mask_of(self.prefix)
    }

    /// Whether `ip` is inside.
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Cidr {
    type Err = RuleError;
    /// `a.b.c.d/len`, or a bare address for `/32`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || RuleError::CidrSyntax(s.to_string());
        let (addr, prefix) = match s.trim().split_once('/') {
            Some((a, p)) => (a, p.parse::<u8>().map_err(|_| bad())?),
            None => (s.trim(), 32),
        };
        Cidr::new(addr.parse().map_err(|_| bad())?, prefix)
    }
}

/// Whom a security group rule lets the node talk to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Remote {
    /// Addresses in a prefix (in the packet's network).
    Cidr(Cidr),
    /// The members of a group, in the packet's network ([`GroupMembers`]).
    Group(GroupId),
}

/// One allow rule of a security group.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SgRule {
    /// Ingress: connections the node accepts; egress: connections it opens.
    pub direction: Direction,
    /// The protocol.
    pub proto: Proto,
    /// Destination ports (ICMP: types); ignored for `Proto::Any` and portless protocols.
    pub ports: RangeInclusive<u16>,
    /// The other end of the connection.
    pub remote: Remote,
}

impl SgRule {
    /// Allow connections into the node.
    pub fn ingress(proto: Proto, ports: RangeInclusive<u16>, remote: Remote) -> SgRule {
        SgRule {
            direction: Direction::Ingress,
            proto,
            ports,
            remote,
        }
    }

    /// Allow connections out of the node.
    pub fn egress(proto: Proto, ports: RangeInclusive<u16>, remote: Remote) -> SgRule {
        SgRule {
            direction: Direction::Egress,
            proto,
            ports,
            remote,
        }
    }
}

/// A security group: an id and its allow rules.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityGroup {
    /// The group's id (what [`Remote::Group`] and [`GroupMembers`] refer to).
    pub id: GroupId,
    /// Its rules.
    pub rules: Vec<SgRule>,
}

impl SecurityGroup {
    /// A group with these rules.
    pub fn new(id: GroupId, rules: Vec<SgRule>) -> SecurityGroup {
        SecurityGroup { id, rules }
    }

    /// A network's default group, as AWS defines it: all egress to anywhere, and all
    /// ingress from members of this same group. The control plane puts nodes created
    /// without a group in it; the data plane itself never assumes it.
    pub fn default_group(id: GroupId) -> SecurityGroup {
        SecurityGroup {
            id,
            rules: vec![
                SgRule::egress(Proto::Any, ALL_PORTS, Remote::Cidr(Cidr::ANY)),
                SgRule::ingress(Proto::Any, ALL_PORTS, Remote::Group(id)),
            ],
        }
    }
}

/// Group membership, kept by the caller from pushed configuration: which (network,
/// address) pairs are in which group. Remote-group rules look the peer up here.
#[derive(Debug, Clone, Default)]
pub struct GroupMembers {
    set: HashSet<(GroupId, NetworkId, Ipv4Addr), RandomState>,
}

impl GroupMembers {
    /// No members.
    pub fn new() -> GroupMembers {
        GroupMembers::default()
    }

    /// Put `addr` of `network` in `group`; whether it was new.
    pub fn insert(&mut self, group: GroupId, network: NetworkId, addr: Ipv4Addr) -> bool {
        self.set.insert((group, network, addr))
    }

    /// Take `addr` of `network` out of `group`; whether it was there.
    pub fn remove(&mut self, group: GroupId, network: NetworkId, addr: Ipv4Addr) -> bool {
        self.set.remove(&(group, network, addr))
    }

    /// Empty `group`.
    pub fn remove_group(&mut self, group: GroupId) {
        self.set.retain(|(g, _, _)| *g != group);
    }

    /// Whether `addr` of `network` is in `group`.
    pub fn contains(&self, group: GroupId, network: NetworkId, addr: Ipv4Addr) -> bool {
        self.set.contains(&(group, network, addr))
    }

    /// Memberships held.
    pub fn len(&self) -> usize {
        self.set.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.set.is_empty()
    }
}

/// Rules are matched 16 at a time: the compiler turns the loop over a chunk's arrays
/// into a few vector compares.
const CHUNK: usize = 16;

/// `proto` value of a rule that applies to every protocol.
const ANY_PROTO: u32 = 0x100;

/// Up to 16 compiled rules, struct-of-arrays: rule `j` matches a packet when
/// `peer & mask[j] == net[j]`, `lo[j] <= port <= hi[j]` and its protocol is `proto[j]`
/// (or any). Unused slots never match (`lo > hi`).
#[derive(Debug, Clone, Copy)]
struct Chunk {
    net: [u32; CHUNK],
    mask: [u32; CHUNK],
    lo: [u32; CHUNK],
    hi: [u32; CHUNK],
    proto: [u32; CHUNK],
}

const EMPTY_CHUNK: Chunk = Chunk {
    net: [0; CHUNK],
    mask: [0; CHUNK],
    lo: [1; CHUNK],
    hi: [0; CHUNK],
    proto: [ANY_PROTO; CHUNK],
};

impl Chunk {
    /// Bit `j` set when rule `j` matches.
    #[inline]
    fn hits(&self, peer: u32, port: u32, proto: u32) -> u32 {
        // All lanes 32 bits wide, so that the compares vectorize together.
        let mut bits = 0u32;
        for j in 0..CHUNK {
            let hit = (peer & self.mask[j] == self.net[j])
                & (self.lo[j] <= port)
                & (port <= self.hi[j])
                & ((self.proto[j] == ANY_PROTO) | (self.proto[j] == proto));
            bits |= u32::from(hit) << j;
        }
        bits
    }
}

/// An ordered list of compiled rules.
#[derive(Debug, Clone, Default)]
struct Table {
    chunks: Vec<Chunk>,
    len: usize,
}

impl Table {
    fn push(&mut self, net: u32, mask: u32, lo: u16, hi: u16, proto: u32) {
        let j = self.len % CHUNK;
        if j == 0 {
            self.chunks.push(EMPTY_CHUNK);
        }
        let c = self.chunks.last_mut().expect("a chunk was pushed");
        c.net[j] = net;
        c.mask[j] = mask;
        c.lo[j] = u32::from(lo);
        c.hi[j] = u32::from(hi);
        c.proto[j] = proto;
        self.len += 1;
    }

    /// The index of the first rule that matches.
    #[inline]
    fn first(&self, peer: u32, port: u16, proto: u8) -> Option<usize> {
        let (port, proto) = (u32::from(port), u32::from(proto));
        for (i, c) in self.chunks.iter().enumerate() {
            let bits = c.hits(peer, port, proto);
            if bits != 0 {
                return Some(i * CHUNK + bits.trailing_zeros() as usize);
            }
        }
        None
    }
}

/// Where a rule goes: the per-protocol tables it can match in, and the port range it
/// keeps (every port for rules whose protocol has none).
fn placement(proto: Proto, ports: &RangeInclusive<u16>) -> Result<(Lists, u16, u16), RuleError> {
    let (start, end) = (*ports.start(), *ports.end());
    if start > end {
        return Err(RuleError::EmptyPorts { start, end });
    }
    Ok(match proto.number() {
        None => (Lists::All, 0, u16::MAX),
        Some(PROTO_TCP) => (Lists::One(0), start, end),
        Some(PROTO_UDP) => (Lists::One(1), start, end),
        Some(PROTO_ICMP) => (Lists::One(2), start, end),
        Some(n) => (Lists::Other(n), 0, u16::MAX),
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lists {
    /// Every table, any protocol.
    All,
    /// The TCP (0), UDP (1) or ICMP (2) table.
    One(usize),
    /// The table of the other protocols, for this one.
    Other(u8),
}

/// The table a packet of protocol `proto` is matched against.
#[inline]
fn class(proto: u8) -> usize {
    match proto {
        PROTO_TCP => 0,
        PROTO_UDP => 1,
        PROTO_ICMP => 2,
        _ => 3,
    }
}

/// Rules split per protocol (TCP, UDP, ICMP, the rest), so a packet only scans the
/// rules that can match it, each table in rule order with `T` alongside each rule.
#[derive(Debug, Clone)]
struct PerProto<T> {
    tables: [(Table, Vec<T>); 4],
}

impl<T> Default for PerProto<T> {
    fn default() -> Self {
        PerProto {
            tables: core::array::from_fn(|_| (Table::default(), Vec::new())),
        }
    }
}

impl<T: Copy> PerProto<T> {
    fn push(&mut self, lists: Lists, net: u32, mask: u32, lo: u16, hi: u16, item: T) {
        let mut add = |i: usize, proto: u32| {
            let (table, items) = &mut self.tables[i];
            table.push(net, mask, lo, hi, proto);
            items.push(item);
        };
        match lists {
            Lists::All => (0..4).for_each(|i| add(i, ANY_PROTO)),
            Lists::One(i) => add(i, ANY_PROTO),
            Lists::Other(n) => add(3, u32::from(n)),
        }
    }

    /// The first rule, in order, that matches.
    #[inline]
    fn first(&self, proto: u8, peer: u32, port: u16) -> Option<&T> {
        let (table, items) = &self.tables[class(proto)];
        table.first(peer, port, proto).map(|i| &items[i])
    }

    /// Every rule that matches, in order.
    fn matching(&self, proto: u8, peer: u32, port: u16) -> impl Iterator<Item = &T> {
        let (table, items) = &self.tables[class(proto)];
        let (port, proto) = (u32::from(port), u32::from(proto));
        table.chunks.iter().enumerate().flat_map(move |(i, c)| {
            let mut bits = c.hits(peer, port, proto);
            core::iter::from_fn(move || {
                (bits != 0).then(|| {
                    let j = bits.trailing_zeros() as usize;
                    bits &= bits - 1;
                    &items[i * CHUNK + j]
                })
            })
        })
    }
}

/// The peer of a packet in direction `dir`: who the rules talk about.
#[inline]
fn peer(dir: Direction, flow: &Flow) -> Ipv4Addr {
    match dir {
        Direction::Egress => flow.dst,
        Direction::Ingress => flow.src,
    }
}

/// The security group rules of one node, compiled: the union of its groups' rules,
/// split by direction and protocol; CIDR rules answer with one table scan, group rules
/// (a membership lookup each) are only tried when no CIDR rule matched.
#[derive(Debug, Clone, Default)]
pub struct SgPolicy {
    /// Per direction (ingress, egress): CIDR rules.
    cidr: [PerProto<()>; 2],
    /// Per direction: group rules (address part matches anything).
    group: [PerProto<GroupId>; 2],
    rules: usize,
}

fn dir_index(dir: Direction) -> usize {
    match dir {
        Direction::Ingress => 0,
        Direction::Egress => 1,
    }
}

impl SgPolicy {
    /// No rules: nothing may be opened in either direction.
    pub fn deny_all() -> SgPolicy {
        SgPolicy::default()
    }

    /// The union of the rules of `groups` (a node's groups). No groups: deny all.
    pub fn compile<'a>(
        groups: impl IntoIterator<Item = &'a SecurityGroup>,
    ) -> Result<SgPolicy, RuleError> {
        SgPolicy::from_rules(groups.into_iter().flat_map(|g| g.rules.iter()))
    }

    /// A policy from a list of allow rules.
    pub fn from_rules<'a>(
        rules: impl IntoIterator<Item = &'a SgRule>,
    ) -> Result<SgPolicy, RuleError> {
        let mut p = SgPolicy::default();
        for r in rules {
            let (lists, lo, hi) = placement(r.proto, &r.ports)?;
            let d = dir_index(r.direction);
            match r.remote {
                Remote::Cidr(c) => p.cidr[d].push(lists, u32::from(c.addr()), c.mask(), lo, hi, ()),
                Remote::Group(g) => p.group[d].push(lists, 0, 0, lo, hi, g),
            }
            p.rules += 1;
        }
        Ok(p)
    }

    /// How many rules were compiled.
    pub fn len(&self) -> usize {
        self.rules
    }

    /// Whether there are no rules (deny all).
    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }

    /// Whether a rule allows `flow` to open a connection in direction `dir`: the remote is
    /// the destination of an egress flow and the source of an ingress one; the port is
    /// the destination port (ICMP: the type).
    pub fn allows(&self, dir: Direction, flow: &Flow, members: &GroupMembers) -> bool {
        let d = dir_index(dir);
        let peer_addr = peer(dir, flow);
        let peer = u32::from(peer_addr);
        let port = flow.dst_port;
        self.cidr[d].first(flow.proto, peer, port).is_some()
            || self.group[d]
                .matching(flow.proto, peer, port)
                .any(|&g| members.contains(g, flow.network, peer_addr))
    }
}

/// What an ACL rule does with a packet it matches.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    /// Let it through.
    Allow,
    /// Drop it.
    Deny,
}

/// One numbered rule of a network ACL.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AclRule {
    /// Evaluation order, lowest first; unique per direction.
    pub number: u16,
    /// Ingress: traffic entering the subnet; egress: traffic leaving it.
    pub direction: Direction,
    /// Allow or deny.
    pub action: Action,
    /// The protocol.
    pub proto: Proto,
    /// Destination ports (ICMP: types); ignored for `Proto::Any` and portless protocols.
    pub ports: RangeInclusive<u16>,
    /// The remote addresses: the source of ingress traffic, the destination of egress.
    pub cidr: Cidr,
}

impl AclRule {
    /// An allow rule.
    pub fn allow(
        number: u16,
        direction: Direction,
        proto: Proto,
        ports: RangeInclusive<u16>,
        cidr: Cidr,
    ) -> AclRule {
        AclRule {
            number,
            direction,
            action: Action::Allow,
            proto,
            ports,
            cidr,
        }
    }

    /// A deny rule.
    pub fn deny(
        number: u16,
        direction: Direction,
        proto: Proto,
        ports: RangeInclusive<u16>,
        cidr: Cidr,
    ) -> AclRule {
        AclRule {
            action: Action::Deny,
            ..AclRule::allow(number, direction, proto, ports, cidr)
        }
    }
}

/// The result of evaluating an ACL: the action and the number of the rule that decided
/// (`None`: no rule matched, the implicit final deny).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct AclMatch {
    /// What to do.
    pub action: Action,
    /// Which rule said so.
    pub rule: Option<u16>,
}

/// A network ACL, compiled: per direction and protocol, the rules that can match, in
/// number order.
#[derive(Debug, Clone, Default)]
pub struct Acl {
    /// Per direction (inbound, outbound).
    sets: [PerProto<AclMatch>; 2],
    rules: usize,
}

impl Acl {
    /// Compile `rules` (any order); fails on a bad port range or a number used twice in
    /// one direction.
    pub fn compile<'a>(rules: impl IntoIterator<Item = &'a AclRule>) -> Result<Acl, RuleError> {
        let mut sorted: Vec<&AclRule> = rules.into_iter().collect();
        sorted.sort_by_key(|r| (r.direction, r.number));
        for w in sorted.windows(2) {
            if w[0].direction == w[1].direction && w[0].number == w[1].number {
                return Err(RuleError::DuplicateAclNumber {
                    number: w[0].number,
                    direction: w[0].direction,
                });
            }
        }
        let mut acl = Acl {
            rules: sorted.len(),
            ..Acl::default()
        };
        for r in sorted {
            let (lists, lo, hi) = placement(r.proto, &r.ports)?;
            let decision = AclMatch {
                action: r.action,
                rule: Some(r.number),
            };
            let (net, mask) = (u32::from(r.cidr.addr()), r.cidr.mask());
            acl.sets[dir_index(r.direction)].push(lists, net, mask, lo, hi, decision);
        }
        Ok(acl)
    }

    /// AWS's default network ACL: rule 100 allows all traffic in each direction.
    pub fn allow_all() -> Acl {
        let rules = [Direction::Ingress, Direction::Egress]
            .map(|d| AclRule::allow(100, d, Proto::Any, ALL_PORTS, Cidr::ANY));
        Acl::compile(&rules).expect("the default ACL is valid")
    }

    /// How many rules were compiled.
    pub fn len(&self) -> usize {
        self.rules
    }

    /// Whether there are no rules (everything is denied).
    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }

    /// The first rule, by number, that matches `flow` going in direction `dir` decides;
    /// none matching means deny.
    pub fn evaluate(&self, dir: Direction, flow: &Flow) -> AclMatch {
        let peer = u32::from(peer(dir, flow));
        self.sets[dir_index(dir)]
            .first(flow.proto, peer, flow.dst_port)
            .copied()
            .unwrap_or(AclMatch {
                action: Action::Deny,
                rule: None,
            })
    }
}

/// What the firewall needs to know about one node for one packet; borrowed from wherever
/// the caller keeps the compiled rules.
#[derive(Debug, Clone, Copy)]
pub struct Policy<'a> {
    /// The node's security groups, compiled.
    pub sg: &'a SgPolicy,
    /// Group membership, for remote-group rules.
    pub members: &'a GroupMembers,
    /// The ACL of the node's subnet; `None`: not filtered.
    pub acl: Option<&'a Acl>,
    /// Remote addresses the ACL does not apply to, normally the node's own subnet (AWS
    /// ACLs filter only traffic that crosses the subnet's boundary). `None`: the ACL
    /// applies to every packet.
    pub acl_exempt: Option<Cidr>,
}

impl<'a> Policy<'a> {
    /// A policy with security groups only.
    pub fn new(sg: &'a SgPolicy, members: &'a GroupMembers) -> Policy<'a> {
        Policy {
            sg,
            members,
            acl: None,
            acl_exempt: None,
        }
    }

    /// The same with the subnet's ACL, not applied to remotes in `exempt`.
    pub fn with_acl(mut self, acl: &'a Acl, exempt: Option<Cidr>) -> Policy<'a> {
        self.acl = Some(acl);
        self.acl_exempt = exempt;
        self
    }
}

/// What the firewall decided about a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// Let it through; how connection tracking classified it (`New`, `Established`,
    /// `Reply` or `Related`).
    Allow(CtVerdict),
    /// Drop: the subnet's ACL denied it.
    AclDenied,
    /// Drop: a new connection that no security group rule allows.
    SgDenied,
    /// Drop: a new connection, but the connection table is full.
    ConntrackFull,
    /// Drop: conntrack found the packet invalid (see [`CtVerdict::Invalid`]).
    ConntrackInvalid,
}

impl Verdict {
    /// Whether the packet may pass.
    pub const fn is_allowed(self) -> bool {
        matches!(self, Verdict::Allow(_))
    }

    /// The drop reason's name (`acl_denied`, `sg_denied`, `conntrack_full`,
    /// `conntrack_invalid`), `None` when allowed.
    pub const fn drop_reason(self) -> Option<&'static str> {
        match self {
            Verdict::Allow(_) => None,
            Verdict::AclDenied => Some("acl_denied"),
            Verdict::SgDenied => Some("sg_denied"),
            Verdict::ConntrackFull => Some("conntrack_full"),
            Verdict::ConntrackInvalid => Some("conntrack_invalid"),
        }
    }
}

/// One node's firewall: its connection table, applied to the packets the node sends
/// (`egress`, on the sending host) and receives (`ingress`, on the receiving host).
///
/// Per packet: the subnet's ACL first (stateless, every packet, also of established
/// connections), then connection tracking: packets of tracked connections pass in both
/// directions; a packet that opens a connection needs a security group rule for its
/// direction; invalid packets are dropped. A TCP connection picked up mid-stream (after
/// an agent restart) is admitted if the rules allow it either as opened by the sender or
/// as opened by the receiver, so established connections survive a restart in both
/// directions. The price: a stray ACK from a peer the node may open connections to
/// reaches the node (whose stack answers it with a reset); turn loose pickup off in the
/// [`Conntrack`] to refuse it, at the cost of cutting connections on a restart.
///
/// Give every node its own firewall (and table): were two nodes of one host to share a
/// table, the entry made by the sender's egress would carry the packet past the
/// receiver's ingress rules. Per-node tables also keep one busy node from filling the
/// table for its neighbours (AWS limits tracked connections per interface too).
///
/// Removing a rule does not cut connections already tracked (as in AWS); call
/// [`Conntrack::clear`] or [`Conntrack::remove`] through [`Firewall::conntrack_mut`] to
/// do so.
#[derive(Debug)]
pub struct Firewall {
    ct: Conntrack,
}

impl Firewall {
    /// A firewall around a connection table.
    pub fn new(ct: Conntrack) -> Firewall {
        Firewall { ct }
    }

    /// A packet the node sends.
    pub fn egress(&mut self, policy: &Policy<'_>, pkt: &Packet, now: Instant) -> Verdict {
        self.check(Direction::Egress, policy, pkt, now)
    }

    /// A packet for the node.
    pub fn ingress(&mut self, policy: &Policy<'_>, pkt: &Packet, now: Instant) -> Verdict {
        self.check(Direction::Ingress, policy, pkt, now)
    }

    /// Remove timed-out connections, examining at most `budget` (see
    /// [`Conntrack::expire`]).
    pub fn expire(&mut self, now: Instant, budget: usize) -> usize {
        self.ct.expire(now, budget)
    }

    /// The connection table.
    pub fn conntrack(&self) -> &Conntrack {
        &self.ct
    }

    /// The connection table, to flush or inspect it.
    pub fn conntrack_mut(&mut self) -> &mut Conntrack {
        &mut self.ct
    }

    fn check(
        &mut self,
        dir: Direction,
        policy: &Policy<'_>,
        pkt: &Packet,
        now: Instant,
    ) -> Verdict {
        let flow = &pkt.flow;
        if let Some(acl) = policy.acl {
            let exempt = policy
                .acl_exempt
                .is_some_and(|c| c.contains(peer(dir, flow)));
            if !exempt && acl.evaluate(dir, flow).action == Action::Deny {
                return Verdict::AclDenied;
            }
        }
        let v = self.ct.track_with(pkt, now, |opening| {
            if policy.sg.allows(dir, flow, policy.members) {
                Admit::SenderOpened
            } else if opening == Opening::Midstream
                && policy
                    .sg
                    .allows(dir.reverse(), &flow.reversed(), policy.members)
            {
                Admit::ReceiverOpened
            } else {
                Admit::No
            }
        });
        match v {
            CtVerdict::New | CtVerdict::Established | CtVerdict::Reply | CtVerdict::Related => {
                Verdict::Allow(v)
            }
            CtVerdict::Invalid => Verdict::ConntrackInvalid,
            CtVerdict::TableFull => Verdict::ConntrackFull,
            CtVerdict::Refused => Verdict::SgDenied,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conntrack::{ConnKey, Timeouts};
    use wire::tcp::flags::{ACK, PSH, SYN};

    const NODE: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const PEER: Ipv4Addr = Ipv4Addr::new(10, 0, 1, 3);
    const OUTSIDE: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 9);

    fn net(n: u32) -> NetworkId {
        NetworkId::new(n).unwrap()
    }

    fn cidr(s: &str) -> Cidr {
        s.parse().unwrap()
    }

    fn at(ms: u64) -> Instant {
        Instant::from_millis(ms)
    }

    fn firewall() -> Firewall {
        Firewall::new(Conntrack::new(Timeouts::default(), 1024))
    }

    fn tcp(src: Ipv4Addr, sport: u16, dst: Ipv4Addr, dport: u16, flags: u8) -> Packet {
        Packet::tcp(Flow::tcp(net(1), src, sport, dst, dport), flags)
    }

    fn sg(rules: &[SgRule]) -> SgPolicy {
        SgPolicy::from_rules(rules).unwrap()
    }

    fn egress_all() -> SgRule {
        SgRule::egress(Proto::Any, ALL_PORTS, Remote::Cidr(Cidr::ANY))
    }

    #[test]
    fn cidr_parse_contains_and_errors() {
        let c = cidr("10.1.2.3/16");
        assert_eq!(c.to_string(), "10.1.0.0/16");
        assert!(c.contains(Ipv4Addr::new(10, 1, 255, 1)));
        assert!(!c.contains(Ipv4Addr::new(10, 2, 0, 1)));
        assert!(Cidr::ANY.contains(OUTSIDE));
        assert_eq!(cidr("10.0.0.2"), Cidr::host(NODE));
        assert!(!Cidr::host(NODE).contains(PEER));
        assert_eq!(
            "10.0.0.0/33".parse::<Cidr>(),
            Err(RuleError::PrefixLength(33))
        );
        assert!(matches!(
            "10.0.0/8".parse::<Cidr>(),
            Err(RuleError::CidrSyntax(_))
        ));
        assert!(matches!(
            "10.0.0.0/x".parse::<Cidr>(),
            Err(RuleError::CidrSyntax(_))
        ));
        #[allow(clippy::reversed_empty_ranges)]
        let empty = SgRule::ingress(Proto::Tcp, 90..=80, Remote::Cidr(Cidr::ANY));
        assert_eq!(
            SgPolicy::from_rules([&empty]).unwrap_err(),
            RuleError::EmptyPorts { start: 90, end: 80 }
        );
    }

    #[test]
    fn sg_rules_are_the_union_of_the_groups() {
        let ssh = SecurityGroup::new(
            1,
            vec![SgRule::ingress(
                Proto::Tcp,
                22..=22,
                Remote::Cidr(cidr("10.0.0.0/24")),
            )],
        );
        let web = SecurityGroup::new(
            2,
            vec![SgRule::ingress(
                Proto::Tcp,
                80..=80,
                Remote::Cidr(Cidr::ANY),
            )],
        );
        let p = SgPolicy::compile([&ssh, &web]).unwrap();
        assert_eq!(p.len(), 2);
        let m = GroupMembers::new();
        let inbound = |src, port| Flow::tcp(net(1), src, 50000, NODE, port);
        let admin = Ipv4Addr::new(10, 0, 0, 9);
        assert!(p.allows(Direction::Ingress, &inbound(admin, 22), &m));
        assert!(!p.allows(Direction::Ingress, &inbound(OUTSIDE, 22), &m));
        assert!(p.allows(Direction::Ingress, &inbound(OUTSIDE, 80), &m));
        assert!(!p.allows(Direction::Ingress, &inbound(admin, 443), &m));
        // Ingress rules say nothing about egress, and UDP is not TCP.
        assert!(!p.allows(
            Direction::Egress,
            &Flow::tcp(net(1), NODE, 1, OUTSIDE, 80),
            &m
        ));
        let udp = Flow::udp(net(1), OUTSIDE, 5000, NODE, 80);
        assert!(!p.allows(Direction::Ingress, &udp, &m));
    }

    #[test]
    fn sg_icmp_types_and_other_protocols() {
        let p = sg(&[
            SgRule::ingress(Proto::Icmp, 8..=8, Remote::Cidr(Cidr::ANY)),
            SgRule::ingress(Proto::Number(47), 1..=1, Remote::Cidr(Cidr::ANY)),
            SgRule::ingress(Proto::Number(17), 53..=53, Remote::Cidr(Cidr::ANY)),
        ]);
        let m = GroupMembers::new();
        let icmp = |ty| Flow::icmp(net(1), OUTSIDE, NODE, ty, 1);
        assert!(p.allows(Direction::Ingress, &icmp(8), &m));
        assert!(!p.allows(Direction::Ingress, &icmp(13), &m));
        let gre = Flow::other(net(1), 47, OUTSIDE, NODE);
        assert!(
            p.allows(Direction::Ingress, &gre, &m),
            "ports ignored for GRE"
        );
        assert!(!p.allows(
            Direction::Ingress,
            &Flow::other(net(1), 50, OUTSIDE, NODE),
            &m
        ));
        let dns = Flow::udp(net(1), OUTSIDE, 999, NODE, 53);
        assert!(p.allows(Direction::Ingress, &dns, &m), "Number(17) is UDP");
        let any = sg(&[SgRule::egress(Proto::Any, 5..=5, Remote::Cidr(Cidr::ANY))]);
        let esp = Flow::other(net(1), 50, NODE, OUTSIDE);
        assert!(any.allows(Direction::Egress, &esp, &m));
        let https = Flow::tcp(net(1), NODE, 1, OUTSIDE, 443);
        assert!(
            any.allows(Direction::Egress, &https, &m),
            "Any ignores ports"
        );
    }

    #[test]
    fn sg_remote_group_matches_members_of_that_network() {
        let p = sg(&[SgRule::ingress(Proto::Tcp, 5432..=5432, Remote::Group(7))]);
        let mut m = GroupMembers::new();
        m.insert(7, net(1), PEER);
        m.insert(8, net(1), OUTSIDE);
        let from = |n, src| Flow::tcp(net(n), src, 40000, NODE, 5432);
        assert!(p.allows(Direction::Ingress, &from(1, PEER), &m));
        assert!(
            !p.allows(Direction::Ingress, &from(2, PEER), &m),
            "other tenant"
        );
        assert!(
            !p.allows(Direction::Ingress, &from(1, OUTSIDE), &m),
            "other group"
        );
        assert!(m.remove(7, net(1), PEER));
        assert!(!p.allows(Direction::Ingress, &from(1, PEER), &m));
        m.insert(7, net(1), PEER);
        m.remove_group(7);
        assert_eq!(m.len(), 1);
        assert!(!p.allows(Direction::Ingress, &from(1, PEER), &m));
    }

    #[test]
    fn default_policy_is_explicit() {
        let m = {
            let mut m = GroupMembers::new();
            m.insert(1, net(1), PEER);
            m
        };
        // No groups: fail closed, both ways.
        let none = SgPolicy::compile([]).unwrap();
        assert!(none.is_empty());
        let out = Flow::tcp(net(1), NODE, 1, OUTSIDE, 443);
        let inb = Flow::tcp(net(1), PEER, 1, NODE, 22);
        assert!(!none.allows(Direction::Egress, &out, &m));
        assert!(!none.allows(Direction::Ingress, &inb, &m));
        assert!(SgPolicy::deny_all().is_empty());
        // The AWS default group: all egress, ingress from its own members only.
        let def = SgPolicy::compile([&SecurityGroup::default_group(1)]).unwrap();
        assert!(def.allows(Direction::Egress, &out, &m));
        assert!(def.allows(Direction::Ingress, &inb, &m));
        let stranger = Flow::tcp(net(1), OUTSIDE, 1, NODE, 22);
        assert!(!def.allows(Direction::Ingress, &stranger, &m));
    }

    #[test]
    fn acl_lowest_number_first_match_wins() {
        let acl = Acl::compile(&[
            AclRule::allow(200, Direction::Ingress, Proto::Any, ALL_PORTS, Cidr::ANY),
            AclRule::deny(100, Direction::Ingress, Proto::Tcp, 22..=22, Cidr::ANY),
            AclRule::allow(
                50,
                Direction::Ingress,
                Proto::Tcp,
                22..=22,
                cidr("10.0.0.0/8"),
            ),
        ])
        .unwrap();
        assert_eq!(acl.len(), 3);
        let ssh = |src| Flow::tcp(net(1), src, 40000, NODE, 22);
        let m = acl.evaluate(Direction::Ingress, &ssh(PEER));
        assert_eq!((m.action, m.rule), (Action::Allow, Some(50)));
        let m = acl.evaluate(Direction::Ingress, &ssh(OUTSIDE));
        assert_eq!((m.action, m.rule), (Action::Deny, Some(100)));
        let web = Flow::tcp(net(1), OUTSIDE, 40000, NODE, 80);
        let m = acl.evaluate(Direction::Ingress, &web);
        assert_eq!((m.action, m.rule), (Action::Allow, Some(200)));
    }

    #[test]
    fn acl_implicit_deny_and_directions() {
        let acl = Acl::compile(&[AclRule::allow(
            10,
            Direction::Egress,
            Proto::Tcp,
            80..=80,
            cidr("203.0.113.0/24"),
        )])
        .unwrap();
        let out = Flow::tcp(net(1), NODE, 40000, OUTSIDE, 80);
        assert_eq!(acl.evaluate(Direction::Egress, &out).action, Action::Allow);
        let none = AclMatch {
            action: Action::Deny,
            rule: None,
        };
        // Other port, protocol, destination or direction: the implicit deny.
        let other_port = Flow::tcp(net(1), NODE, 40000, OUTSIDE, 81);
        let udp = Flow::udp(net(1), NODE, 40000, OUTSIDE, 80);
        let other_dst = Flow::tcp(net(1), NODE, 40000, PEER, 80);
        for f in [other_port, udp, other_dst] {
            assert_eq!(acl.evaluate(Direction::Egress, &f), none);
        }
        assert_eq!(acl.evaluate(Direction::Ingress, &out.reversed()), none);
        assert_eq!(Acl::default().evaluate(Direction::Egress, &out), none);
        assert_eq!(
            Acl::allow_all()
                .evaluate(Direction::Ingress, &out.reversed())
                .action,
            Action::Allow
        );
        let dup = [
            AclRule::allow(10, Direction::Egress, Proto::Any, ALL_PORTS, Cidr::ANY),
            AclRule::deny(10, Direction::Egress, Proto::Tcp, 1..=2, Cidr::ANY),
        ];
        assert_eq!(
            Acl::compile(&dup).unwrap_err(),
            RuleError::DuplicateAclNumber {
                number: 10,
                direction: Direction::Egress
            }
        );
        // The same number in the two directions is fine.
        let both = [
            AclRule::allow(10, Direction::Egress, Proto::Any, ALL_PORTS, Cidr::ANY),
            AclRule::allow(10, Direction::Ingress, Proto::Any, ALL_PORTS, Cidr::ANY),
        ];
        assert!(Acl::compile(&both).is_ok());
    }

    #[test]
    fn long_rule_lists_keep_their_order_across_chunks() {
        // 40 ACL rules: 1..=39 deny port n, 40 allows all; 17 and 33 sit in later chunks.
        let mut rules: Vec<AclRule> = (1..40u16)
            .map(|n| AclRule::deny(n, Direction::Ingress, Proto::Tcp, n..=n, Cidr::ANY))
            .collect();
        rules.push(AclRule::allow(
            40,
            Direction::Ingress,
            Proto::Any,
            ALL_PORTS,
            Cidr::ANY,
        ));
        rules.push(AclRule::allow(
            5,
            Direction::Egress,
            Proto::Tcp,
            33..=33,
            Cidr::ANY,
        ));
        rules.reverse();
        let acl = Acl::compile(&rules).unwrap();
        let to = |port| Flow::tcp(net(1), OUTSIDE, 40000, NODE, port);
        for port in [1u16, 16, 17, 33, 39] {
            let m = acl.evaluate(Direction::Ingress, &to(port));
            assert_eq!((m.action, m.rule), (Action::Deny, Some(port)));
        }
        let m = acl.evaluate(Direction::Ingress, &to(40));
        assert_eq!((m.action, m.rule), (Action::Allow, Some(40)));
        // 20 group rules on one port; only the 19th group has the peer.
        let sgr: Vec<SgRule> = (0..20)
            .map(|g| SgRule::ingress(Proto::Tcp, 5432..=5432, Remote::Group(g)))
            .collect();
        let p = sg(&sgr);
        let mut m = GroupMembers::new();
        assert!(!p.allows(Direction::Ingress, &to(5432), &m));
        m.insert(18, net(1), OUTSIDE);
        assert!(p.allows(Direction::Ingress, &to(5432), &m));
        assert!(!p.allows(Direction::Ingress, &to(5433), &m));
    }

    #[test]
    fn new_inbound_is_denied_without_a_rule() {
        let p = sg(&[egress_all()]);
        let m = GroupMembers::new();
        let policy = Policy::new(&p, &m);
        let mut fw = firewall();
        let syn = tcp(OUTSIDE, 40000, NODE, 22, SYN);
        assert_eq!(fw.ingress(&policy, &syn, at(0)), Verdict::SgDenied);
        assert!(fw.conntrack().is_empty(), "a denied packet leaves no entry");
        // The node's answer does not open anything either: it is not a reply.
        let synack = tcp(NODE, 22, OUTSIDE, 40000, SYN | ACK);
        assert_eq!(
            fw.egress(&policy, &synack, at(0)),
            Verdict::ConntrackInvalid
        );
        let ping = Packet::new(Flow::icmp(net(1), OUTSIDE, NODE, 8, 1));
        assert_eq!(fw.ingress(&policy, &ping, at(0)), Verdict::SgDenied);
    }

    #[test]
    fn reply_is_allowed_without_an_ingress_rule() {
        let p = sg(&[SgRule::egress(
            Proto::Tcp,
            443..=443,
            Remote::Cidr(Cidr::ANY),
        )]);
        let m = GroupMembers::new();
        let policy = Policy::new(&p, &m);
        let mut fw = firewall();
        let out = |flags| tcp(NODE, 40000, OUTSIDE, 443, flags);
        let back = |flags| tcp(OUTSIDE, 443, NODE, 40000, flags);
        assert_eq!(
            fw.egress(&policy, &out(SYN), at(0)),
            Verdict::Allow(CtVerdict::New)
        );
        assert_eq!(
            fw.ingress(&policy, &back(SYN | ACK), at(1)),
            Verdict::Allow(CtVerdict::Reply)
        );
        assert_eq!(
            fw.egress(&policy, &out(ACK), at(2)),
            Verdict::Allow(CtVerdict::Established)
        );
        assert_eq!(
            fw.ingress(&policy, &back(ACK | PSH), at(3)),
            Verdict::Allow(CtVerdict::Reply)
        );
        // Egress to a port no rule allows.
        let other = tcp(NODE, 40001, OUTSIDE, 80, SYN);
        assert_eq!(fw.egress(&policy, &other, at(4)), Verdict::SgDenied);
        // Established connections survive a rule removal.
        let none = SgPolicy::deny_all();
        let strict = Policy::new(&none, &m);
        assert!(fw.ingress(&strict, &back(ACK), at(5)).is_allowed());
    }

    #[test]
    fn both_hosts_check_with_their_own_conntrack() {
        // PEER serves port 80 to group 5, NODE is in group 5; both run a firewall.
        let client_sg = sg(&[egress_all()]);
        let server_sg = sg(&[
            egress_all(),
            SgRule::ingress(Proto::Tcp, 80..=80, Remote::Group(5)),
        ]);
        let mut m = GroupMembers::new();
        m.insert(5, net(1), NODE);
        let (mut client, mut server) = (firewall(), firewall());
        let client_p = Policy::new(&client_sg, &m);
        let server_p = Policy::new(&server_sg, &m);
        let syn = tcp(NODE, 40000, PEER, 80, SYN);
        let synack = tcp(PEER, 80, NODE, 40000, SYN | ACK);
        assert!(client.egress(&client_p, &syn, at(0)).is_allowed());
        assert_eq!(
            server.ingress(&server_p, &syn, at(0)),
            Verdict::Allow(CtVerdict::New)
        );
        assert_eq!(
            server.egress(&server_p, &synack, at(0)),
            Verdict::Allow(CtVerdict::Reply)
        );
        assert_eq!(
            client.ingress(&client_p, &synack, at(0)),
            Verdict::Allow(CtVerdict::Reply)
        );
        // A node outside the group is refused by the server's host.
        let stranger = tcp(OUTSIDE, 40000, PEER, 80, SYN);
        assert_eq!(
            server.ingress(&server_p, &stranger, at(0)),
            Verdict::SgDenied
        );
        // Two nodes on one host: each has its own firewall, so the sender's egress
        // entry does not let the packet into a receiver whose rules refuse it.
        let closed_sg = sg(&[egress_all()]);
        let mut receiver = firewall();
        let p = Policy::new(&closed_sg, &m);
        assert_eq!(receiver.ingress(&p, &syn, at(0)), Verdict::SgDenied);
    }

    #[test]
    fn acl_is_stateless_return_traffic_needs_its_own_rule() {
        let p = sg(&[egress_all()]);
        let m = GroupMembers::new();
        let out_only = Acl::compile(&[
            AclRule::allow(100, Direction::Egress, Proto::Tcp, 443..=443, Cidr::ANY),
            AclRule::allow(100, Direction::Ingress, Proto::Tcp, 22..=22, Cidr::ANY),
        ])
        .unwrap();
        let policy = Policy::new(&p, &m).with_acl(&out_only, None);
        let mut fw = firewall();
        let syn = tcp(NODE, 40000, OUTSIDE, 443, SYN);
        let synack = tcp(OUTSIDE, 443, NODE, 40000, SYN | ACK);
        assert!(fw.egress(&policy, &syn, at(0)).is_allowed());
        // Tracked by conntrack, but the ACL does not know: dropped.
        assert_eq!(fw.ingress(&policy, &synack, at(0)), Verdict::AclDenied);
        let with_return = Acl::compile(&[
            AclRule::allow(100, Direction::Egress, Proto::Tcp, 443..=443, Cidr::ANY),
            AclRule::allow(100, Direction::Ingress, Proto::Tcp, 1024..=65535, Cidr::ANY),
        ])
        .unwrap();
        let policy = Policy::new(&p, &m).with_acl(&with_return, None);
        assert_eq!(
            fw.ingress(&policy, &synack, at(0)),
            Verdict::Allow(CtVerdict::Reply)
        );
        // The ACL applies before conntrack, also to established traffic, and to nothing
        // inside the exempt subnet.
        let deny_all = Acl::default();
        let policy = Policy::new(&p, &m).with_acl(&deny_all, Some(cidr("10.0.0.0/16")));
        assert_eq!(
            fw.egress(&policy, &tcp(NODE, 40000, OUTSIDE, 443, ACK), at(0)),
            Verdict::AclDenied
        );
        assert!(fw
            .egress(&policy, &tcp(NODE, 1, PEER, 2, SYN), at(0))
            .is_allowed());
    }

    #[test]
    fn icmp_echo_reply_and_errors_for_tracked_flows_are_allowed() {
        let p = sg(&[egress_all()]);
        let m = GroupMembers::new();
        let policy = Policy::new(&p, &m);
        let mut fw = firewall();
        let req = Packet::new(Flow::icmp(net(1), NODE, OUTSIDE, 8, 42));
        let rep = Packet::new(Flow::icmp(net(1), OUTSIDE, NODE, 0, 42));
        let stray = Packet::new(Flow::icmp(net(1), OUTSIDE, NODE, 0, 43));
        assert_eq!(
            fw.egress(&policy, &req, at(0)),
            Verdict::Allow(CtVerdict::New)
        );
        assert_eq!(
            fw.ingress(&policy, &rep, at(1)),
            Verdict::Allow(CtVerdict::Reply)
        );
        assert_eq!(
            fw.ingress(&policy, &stray, at(1)),
            Verdict::ConntrackInvalid
        );
        // A DNS query answered by "port unreachable", and "fragmentation needed" from a
        // router for a TCP connection.
        let dns = Flow::udp(net(1), NODE, 5353, OUTSIDE, 53);
        assert!(fw.egress(&policy, &Packet::new(dns), at(0)).is_allowed());
        let unreach = Packet::icmp_error(Flow::icmp(net(1), OUTSIDE, NODE, 3, 0), dns);
        assert_eq!(
            fw.ingress(&policy, &unreach, at(1)),
            Verdict::Allow(CtVerdict::Related)
        );
        let web = tcp(NODE, 40000, OUTSIDE, 443, SYN);
        assert!(fw.egress(&policy, &web, at(0)).is_allowed());
        let router = Ipv4Addr::new(198, 51, 100, 1);
        let frag = Packet::icmp_error(Flow::icmp(net(1), router, NODE, 3, 4), web.flow);
        assert_eq!(
            fw.ingress(&policy, &frag, at(1)),
            Verdict::Allow(CtVerdict::Related)
        );
        // An error about something the node never sent.
        let other = Flow::udp(net(1), NODE, 5354, OUTSIDE, 53);
        let forged = Packet::icmp_error(Flow::icmp(net(1), OUTSIDE, NODE, 3, 0), other);
        assert_eq!(
            fw.ingress(&policy, &forged, at(1)),
            Verdict::ConntrackInvalid
        );
    }

    #[test]
    fn restarted_agent_keeps_established_flows_in_both_directions() {
        // The node is a client of OUTSIDE:443 and a server on port 22.
        let p = sg(&[
            SgRule::egress(Proto::Tcp, 443..=443, Remote::Cidr(Cidr::ANY)),
            SgRule::ingress(Proto::Tcp, 22..=22, Remote::Cidr(Cidr::ANY)),
        ]);
        let m = GroupMembers::new();
        let policy = Policy::new(&p, &m);
        let mut fw = firewall(); // empty table: the agent just restarted
                                 // The download's next segment arrives before the node sends anything.
        let data_in = tcp(OUTSIDE, 443, NODE, 40000, ACK | PSH);
        assert_eq!(
            fw.ingress(&policy, &data_in, at(0)),
            Verdict::Allow(CtVerdict::Reply)
        );
        let ack_out = tcp(NODE, 40000, OUTSIDE, 443, ACK);
        assert_eq!(
            fw.egress(&policy, &ack_out, at(0)),
            Verdict::Allow(CtVerdict::Established)
        );
        let key = ConnKey::of(&ack_out.flow).unwrap().0;
        assert_eq!(
            fw.conntrack().get(&key, at(0)).unwrap().originator,
            (NODE, 40000)
        );
        // The SSH session's reply goes out first.
        let ssh_out = tcp(NODE, 22, OUTSIDE, 50000, ACK | PSH);
        assert_eq!(
            fw.egress(&policy, &ssh_out, at(0)),
            Verdict::Allow(CtVerdict::Reply)
        );
        // Mid-stream segments that no rule would have allowed either way stay out.
        let probe = tcp(OUTSIDE, 80, NODE, 40002, ACK);
        assert_eq!(fw.ingress(&policy, &probe, at(0)), Verdict::SgDenied);
        // Without loose pickup they are invalid.
        let mut strict =
            Firewall::new(Conntrack::new(Timeouts::default(), 16).with_loose_pickup(false));
        assert_eq!(
            strict.ingress(&policy, &data_in, at(0)),
            Verdict::ConntrackInvalid
        );
    }

    #[test]
    fn full_table_is_a_verdict() {
        let p = sg(&[egress_all()]);
        let m = GroupMembers::new();
        let policy = Policy::new(&p, &m);
        let mut fw = Firewall::new(Conntrack::new(Timeouts::default(), 1));
        assert!(fw
            .egress(&policy, &tcp(NODE, 1, OUTSIDE, 443, SYN), at(0))
            .is_allowed());
        let v = fw.egress(&policy, &tcp(NODE, 2, OUTSIDE, 443, SYN), at(0));
        assert_eq!(v, Verdict::ConntrackFull);
        assert_eq!(fw.conntrack().counters().table_full, 1);
        // After the SYN_SENT timeout the stale entry makes room.
        assert_eq!(fw.expire(at(120_000), 10), 1);
        assert!(fw
            .egress(&policy, &tcp(NODE, 2, OUTSIDE, 443, SYN), at(120_000))
            .is_allowed());
        fw.conntrack_mut().clear();
        assert!(fw.conntrack().is_empty());
    }

    #[test]
    fn verdict_names_match_the_drop_reasons() {
        assert_eq!(Verdict::Allow(CtVerdict::New).drop_reason(), None);
        assert_eq!(Verdict::AclDenied.drop_reason(), Some("acl_denied"));
        assert_eq!(Verdict::SgDenied.drop_reason(), Some("sg_denied"));
        assert_eq!(Verdict::ConntrackFull.drop_reason(), Some("conntrack_full"));
        assert_eq!(
            Verdict::ConntrackInvalid.drop_reason(),
            Some("conntrack_invalid")
        );
    }
}
