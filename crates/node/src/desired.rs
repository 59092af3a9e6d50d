//! The desired state of a host's agent or of an edge, computed from the manager's watch
//! stream, and the data-plane changes that bring a running pipeline to it.
//!
//! [`Catalog`] keeps the objects the stream carried, as the REST API shows them (with
//! string ids: `net-…`, `node-…`, `pool-…`). From it, [`Catalog::agent_config`] and
//! [`Catalog::edge_config`] derive the whole configuration the pipeline should have, as a
//! map from a key to the [`Change`] / [`EdgeChange`] that sets it; [`diff`] compares two
//! such maps and yields the changes to apply, removals included. Deriving everything and
//! diffing makes every path converge the same way: an increment, a snapshot after a
//! reconnect (whatever vanished meanwhile is removed), a `forget` of a network.
//!
//! The data plane's numeric ids come from [`IdMap`] (ports, pools: allocated once per
//! string id and never reused while the daemon runs) and from [`member_id`] (edges: a
//! hash of the edge id, the same on every agent, so that every agent's Maglev table gives
//! the same member the same slots).

use std::collections::{BTreeMap, HashMap};
use std::net::Ipv4Addr;

use dataplane::agent::{Change, Mapping, NodeSpec, PortId, RouteTarget, Subnet};
use dataplane::edge::{EdgeChange, Owner};
use dataplane::nat::PortBlock;
use dataplane::pool::{HashFields, Member, MemberState, PoolConfig, PoolMode};
use dataplane::rules::{
    AclRule, Action, Cidr, Direction, Proto, Remote, SecurityGroup, SgRule, ALL_PORTS,
};
use model::{Ipv4Cidr, Locator, NetworkId};
use serde::Deserialize;
use serde_json::Value;
use wire::ethernet::MacAddr;

use crate::control::WatchEvent;

/// Bytes a flow sends before a pool with `split_large_flows` spreads it.
pub const SPLIT_THRESHOLD: u64 = 10 * 1024 * 1024;

#[derive(Debug, Clone, Deserialize)]
pub struct Host {
    pub id: String,
    pub name: String,
    pub locator: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EdgePool {
    pub id: String,
    pub mode: String,
    #[serde(default)]
    pub anycast_locator: Option<String>,
    #[serde(default)]
    pub hash_fields: Vec<String>,
    #[serde(default)]
    pub load_aware: bool,
    #[serde(default)]
    pub split_large_flows: bool,
    #[serde(default)]
    pub nat: bool,
    #[serde(default)]
    pub public_ranges: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct EdgeReport {
    pub healthy: bool,
    pub load_percent: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Edge {
    pub id: String,
    pub pool_id: String,
    pub name: String,
    pub locator: String,
    pub weight: u32,
    pub state: String,
    #[serde(default)]
    pub last_report: Option<EdgeReport>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Network {
    pub id: String,
    pub cidr: String,
    pub vni: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct SubnetObj {
    pub id: String,
    pub network_id: String,
    pub cidr: String,
    pub gateway: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Node {
    pub id: String,
    pub network_id: String,
    pub subnet_id: String,
    pub host_id: String,
    pub name: String,
    pub vip: String,
    pub mac: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Route {
    pub id: String,
    pub network_id: String,
    #[serde(default)]
    pub subnet_id: Option<String>,
    pub destination: String,
    pub target: String,
    #[serde(default)]
    pub edge_pool_id: Option<String>,
    #[serde(default)]
    pub peering_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Peering {
    pub id: String,
    pub network_id: String,
    pub peer_network_id: String,
    pub state: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ElasticIp {
    pub id: String,
    pub pool_id: String,
    pub address: String,
    #[serde(default)]
    pub node_id: Option<String>,
    #[serde(default)]
    pub network_id: Option<String>,
    #[serde(default)]
    pub host_id: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct PortBlockObj {
    pub id: String,
    pub pool_id: String,
    pub node_id: String,
    pub network_id: String,
    pub host_id: String,
    pub address: String,
    pub port_first: u32,
    pub port_last: u32,
}

#[derive(Debug, Clone, Deserialize)]
pub struct RuleObj {
    pub direction: String,
    #[serde(default = "any")]
    pub protocol: String,
    #[serde(default)]
    pub port_from: Option<u16>,
    #[serde(default)]
    pub port_to: Option<u16>,
    #[serde(default)]
    pub remote_cidr: Option<String>,
    #[serde(default)]
    pub remote_group_id: Option<String>,
    /// ACL rules only.
    #[serde(default)]
    pub number: Option<u32>,
    #[serde(default)]
    pub action: Option<String>,
    #[serde(default)]
    pub cidr: Option<String>,
}

fn any() -> String {
    "any".into()
}

#[derive(Debug, Clone, Deserialize)]
pub struct SecurityGroupObj {
    pub id: String,
    pub network_id: String,
    #[serde(default)]
    pub rules: Vec<RuleObj>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct Attachment {
    pub id: String,
    pub node_id: String,
    pub group_id: String,
    pub network_id: String,
}

#[derive(Debug, Clone, Deserialize)]
pub struct AclObj {
    pub id: String,
    pub network_id: String,
    pub subnet_id: String,
    #[serde(default)]
    pub rules: Vec<RuleObj>,
}

fn proto(p: &str) -> Option<Proto> {
    Some(match p {
        "any" => Proto::Any,
        "tcp" => Proto::Tcp,
        "udp" => Proto::Udp,
        "icmp" => Proto::Icmp,
        n => Proto::Number(n.parse().ok()?),
    })
}

fn direction(d: &str) -> Option<Direction> {
    match d {
        "ingress" => Some(Direction::Ingress),
        "egress" => Some(Direction::Egress),
        _ => None,
    }
}

fn ports(r: &RuleObj) -> std::ops::RangeInclusive<u16> {
    match (r.port_from, r.port_to) {
        (None, None) => ALL_PORTS,
        (Some(a), None) | (None, Some(a)) => a..=a,
        (Some(a), Some(b)) => a..=b,
    }
}

/// What the watch stream has said, by object id.
#[derive(Debug, Default, Clone)]
pub struct Catalog {
    pub hosts: HashMap<String, Host>,
    pub pools: HashMap<String, EdgePool>,
    pub edges: HashMap<String, Edge>,
    pub networks: HashMap<String, Network>,
    pub subnets: HashMap<String, SubnetObj>,
    pub nodes: HashMap<String, Node>,
    pub routes: HashMap<String, Route>,
    pub peerings: HashMap<String, Peering>,
    pub eips: HashMap<String, ElasticIp>,
    pub port_blocks: HashMap<String, PortBlockObj>,
    pub security_groups: HashMap<String, SecurityGroupObj>,
    pub attachments: HashMap<String, Attachment>,
    pub acls: HashMap<String, AclObj>,
    /// Inside a snapshot (between `snapshot` and `synced`): derived state would be partial.
    pub in_snapshot: bool,
    /// A snapshot has completed at least once.
    pub synced: bool,
}

/// What an event did to the catalog.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    /// Nothing that changes the derived state.
    None,
    /// The catalog changed; derive again (unless a snapshot is still coming).
    Changed,
    /// A snapshot completed.
    Synced,
}

/// Puts an object into `map` by its `id`, or logs why it cannot be read.
fn put<T: for<'de> Deserialize<'de>>(map: &mut HashMap<String, T>, kind: &str, object: &Value) {
    let Some(id) = object.get("id").and_then(Value::as_str) else {
        tracing::warn!(kind, "watch object without id ignored");
        return;
    };
    match serde_json::from_value::<T>(object.clone()) {
        Ok(v) => {
            map.insert(id.to_string(), v);
        }
        Err(e) => tracing::warn!(kind, id, error = %e, "watch object unreadable; ignored"),
    }
}

impl Catalog {
    /// Takes one watch event in.
    pub fn ingest(&mut self, ev: &WatchEvent) -> Effect {
        match ev {
            WatchEvent::Snapshot { .. } => {
                let synced = self.synced;
                *self = Catalog {
                    in_snapshot: true,
                    synced,
                    ..Catalog::default()
                };
                Effect::None
            }
            WatchEvent::Synced { .. } => {
                self.in_snapshot = false;
                self.synced = true;
                Effect::Synced
            }
            WatchEvent::Heartbeat { .. } => Effect::None,
            WatchEvent::Upsert { kind, object } => {
                self.upsert(kind, object);
                self.effect()
            }
            WatchEvent::Change {
                kind,
                op,
                object_id,
                object,
                ..
            } => {
                if op == "delete" {
                    self.remove(kind, object_id);
                } else {
                    self.upsert(kind, object);
                }
                self.effect()
            }
            WatchEvent::Forget { network_id, .. } => {
                self.forget(network_id);
                self.effect()
            }
        }
    }

    fn effect(&self) -> Effect {
        if self.in_snapshot {
            Effect::None
        } else {
            Effect::Changed
        }
    }

    fn upsert(&mut self, kind: &str, o: &Value) {
        match kind {
            "host" => put(&mut self.hosts, kind, o),
            "edge_pool" => put(&mut self.pools, kind, o),
            "edge" => put(&mut self.edges, kind, o),
            "network" => put(&mut self.networks, kind, o),
            "subnet" => put(&mut self.subnets, kind, o),
            "node" => put(&mut self.nodes, kind, o),
            "route" => put(&mut self.routes, kind, o),
            "peering" => put(&mut self.peerings, kind, o),
            "elastic_ip" => put(&mut self.eips, kind, o),
            "port_block" => put(&mut self.port_blocks, kind, o),
            "security_group" => put(&mut self.security_groups, kind, o),
            "security_group_attachment" => put(&mut self.attachments, kind, o),
            "network_acl" => put(&mut self.acls, kind, o),
            // Tenants and tokens never come to daemons.
            _ => {}
        }
    }

    fn remove(&mut self, kind: &str, id: &str) {
        match kind {
            "host" => drop(self.hosts.remove(id)),
            "edge_pool" => drop(self.pools.remove(id)),
            "edge" => drop(self.edges.remove(id)),
            "network" => self.forget(id),
            "subnet" => drop(self.subnets.remove(id)),
            "node" => drop(self.nodes.remove(id)),
            "route" => drop(self.routes.remove(id)),
            "peering" => drop(self.peerings.remove(id)),
            "elastic_ip" => drop(self.eips.remove(id)),
            "port_block" => drop(self.port_blocks.remove(id)),
            "security_group" => drop(self.security_groups.remove(id)),
            "security_group_attachment" => drop(self.attachments.remove(id)),
            "network_acl" => drop(self.acls.remove(id)),
            _ => {}
        }
    }

    /// Drops a network and everything in it.
    fn forget(&mut self, network: &str) {
        self.networks.remove(network);
        self.subnets.retain(|_, s| s.network_id != network);
        self.nodes.retain(|_, n| n.network_id != network);
        self.routes.retain(|_, r| r.network_id != network);
        self.peerings
            .retain(|_, p| p.network_id != network && p.peer_network_id != network);
        self.security_groups.retain(|_, g| g.network_id != network);
        self.attachments.retain(|_, a| a.network_id != network);
        self.acls.retain(|_, a| a.network_id != network);
    }

    /// A security group as the pipeline takes it; `None` if a rule cannot be read (the
    /// node then keeps the policy it had rather than opening up).
    fn security_group(&self, g: &SecurityGroupObj, ids: &mut IdMap) -> Option<SecurityGroup> {
        let mut rules = Vec::with_capacity(g.rules.len());
        for r in &g.rules {
            let remote = match (&r.remote_cidr, &r.remote_group_id) {
                (Some(c), _) => Remote::Cidr(c.parse().ok()?),
                (None, Some(gid)) => Remote::Group(ids.get(gid)),
                (None, None) => Remote::Cidr(Cidr::ANY),
            };
            rules.push(SgRule {
                direction: direction(&r.direction)?,
                proto: proto(&r.protocol)?,
                ports: ports(r),
                remote,
            });
        }
        Some(SecurityGroup::new(ids.get(&g.id), rules))
    }

    fn acl_rules(&self, a: &AclObj) -> Option<Vec<AclRule>> {
        a.rules
            .iter()
            .map(|r| {
                Some(AclRule {
                    number: u16::try_from(r.number?).ok()?,
                    direction: direction(&r.direction)?,
                    action: match r.action.as_deref()? {
                        "allow" => Action::Allow,
                        "deny" => Action::Deny,
                        _ => return None,
                    },
                    proto: proto(&r.protocol)?,
                    ports: ports(r),
                    cidr: r.cidr.as_deref()?.parse().ok()?,
                })
            })
            .collect()
    }

    fn network_id(&self, id: &str) -> Option<NetworkId> {
        self.networks
            .get(id)
            .and_then(|n| NetworkId::new(n.vni).ok())
    }

    /// The string id of a network by its data-plane id.
    pub fn network_by_vni(&self, vni: NetworkId) -> Option<&str> {
        self.networks
            .values()
            .find(|n| n.vni == vni.get())
            .map(|n| n.id.as_str())
    }

    /// The node of `host_id` with address `vip` in network `vni`.
    pub fn node_by_vip(&self, host_id: &str, vni: NetworkId, vip: Ipv4Addr) -> Option<&Node> {
        let net = self.network_by_vni(vni)?;
        let vip = vip.to_string();
        self.nodes
            .values()
            .find(|n| n.host_id == host_id && n.network_id == net && n.vip == vip)
    }

    /// A host's locator.
    pub fn host_locator(&self, host_id: &str) -> Option<Locator> {
        self.hosts.get(host_id)?.locator.parse().ok()
    }

    /// An edge's locator.
    pub fn edge_locator(&self, edge_id: &str) -> Option<Locator> {
        self.edges.get(edge_id)?.locator.parse().ok()
    }

    fn pool_change(&self, pool: &EdgePool, ids: &mut IdMap) -> Option<(u32, Change)> {
        let mode = match pool.mode.as_str() {
            "anycast" => PoolMode::Anycast(pool.anycast_locator.as_deref()?.parse().ok()?),
            _ => PoolMode::Direct,
        };
        let mut fields = HashFields {
            network: false,
            src: false,
            dst: false,
            proto: false,
            src_port: false,
            dst_port: false,
        };
        for f in &pool.hash_fields {
            match f.as_str() {
                "network" => fields.network = true,
                "src_ip" => fields.src = true,
                "dst_ip" => fields.dst = true,
                "protocol" => fields.proto = true,
                "src_port" => fields.src_port = true,
                "dst_port" => fields.dst_port = true,
                other => tracing::warn!(pool = pool.id, field = other, "unknown hash field"),
            }
        }
        if pool.hash_fields.is_empty() {
            fields = HashFields::ALL;
        }
        let config = PoolConfig {
            mode,
            hash_fields: fields,
            load_aware: pool.load_aware,
            split_large_flows: (pool.split_large_flows && !pool.nat).then_some(SPLIT_THRESHOLD),
            nat: pool.nat,
            ..PoolConfig::default()
        };
        let mut edges: Vec<&Edge> = self
            .edges
            .values()
            .filter(|e| e.pool_id == pool.id)
            .collect();
        edges.sort_by(|a, b| a.id.cmp(&b.id));
        let members = edges
            .into_iter()
            .filter_map(|e| {
                let locator = e.locator.parse().ok()?;
                let healthy = e.last_report.as_ref().is_none_or(|r| r.healthy);
                let state = match e.state.as_str() {
                    "active" if healthy => MemberState::Active,
                    "draining" if healthy => MemberState::Draining,
                    _ => MemberState::Down,
                };
                Some(Member {
                    id: member_id(&e.id),
                    locator,
                    weight: e.weight,
                    state,
                    load: e
                        .last_report
                        .as_ref()
                        .map(|r| f64::from(r.load_percent.min(100)) / 100.0),
                })
            })
            .collect();
        let id = ids.get(&pool.id);
        Some((
            id,
            Change::Pool {
                id,
                config,
                members,
            },
        ))
    }

    /// Everything the agent of `host_id` should have, with the local nodes' details.
    pub fn agent_config(&self, host_id: &str, ids: &mut Ids) -> AgentConfigSet {
        let mut set = AgentConfigSet::default();
        for n in self.networks.values() {
            let (Ok(id), Ok(cidr)) = (NetworkId::new(n.vni), n.cidr.parse::<Ipv4Cidr>()) else {
                tracing::warn!(network = n.id, "network with a bad vni or cidr ignored");
                continue;
            };
            set.changes
                .insert(Key::Network(id), Change::Network { id, cidr });
        }
        let mut subnet_cidrs = HashMap::new();
        for s in self.subnets.values() {
            let (Some(network), Ok(cidr)) =
                (self.network_id(&s.network_id), s.cidr.parse::<Ipv4Cidr>())
            else {
                continue;
            };
            subnet_cidrs.insert(s.id.as_str(), cidr);
            let mut subnet = Subnet::new(cidr);
            if let Ok(g) = s.gateway.parse() {
                subnet.gateway = g;
            }
            set.changes.insert(
                Key::Subnet(network, cidr),
                Change::Subnet { network, subnet },
            );
        }
        for p in self.pools.values() {
            if let Some((id, c)) = self.pool_change(p, &mut ids.pools) {
                set.changes.insert(Key::Pool(id), c);
            }
        }
        for r in self.routes.values() {
            let (Some(network), Ok(cidr)) = (
                self.network_id(&r.network_id),
                r.destination.parse::<Ipv4Cidr>(),
            ) else {
                continue;
            };
            let subnet = match &r.subnet_id {
                Some(s) => match subnet_cidrs.get(s.as_str()) {
                    Some(c) => Some(*c),
                    None => continue,
                },
                None => None,
            };
            let target = if r.target == "blackhole" {
                RouteTarget::Blackhole
            } else if let Some(pool) = r.target.strip_prefix("pool:").or(r.edge_pool_id.as_deref())
            {
                if !self.pools.contains_key(pool) {
                    continue;
                }
                RouteTarget::Pool(ids.pools.get(pool))
            } else if let Some(pid) = r
                .target
                .strip_prefix("peering:")
                .or(r.peering_id.as_deref())
            {
                let Some(p) = self.peerings.get(pid).filter(|p| p.state == "active") else {
                    continue;
                };
                let other = if p.network_id == r.network_id {
                    &p.peer_network_id
                } else {
                    &p.network_id
                };
                match self.network_id(other) {
                    Some(o) => RouteTarget::Peering(o),
                    None => {
                        tracing::debug!(route = r.id, "peer network not known here; route skipped");
                        continue;
                    }
                }
            } else {
                tracing::warn!(route = r.id, target = r.target, "unknown route target");
                continue;
            };
            set.changes.insert(
                Key::Route(network, subnet, cidr),
                Change::Route {
                    network,
                    subnet,
                    cidr,
                    target,
                },
            );
        }
        for n in self.nodes.values() {
            let (Some(network), Ok(vip), Ok(mac)) = (
                self.network_id(&n.network_id),
                n.vip.parse::<Ipv4Addr>(),
                n.mac.parse::<MacAddr>(),
            ) else {
                continue;
            };
            if n.host_id == host_id {
                let Some(cidr) = subnet_cidrs.get(n.subnet_id.as_str()) else {
                    continue;
                };
                let subnet = self
                    .subnets
                    .get(&n.subnet_id)
                    .and_then(|s| s.gateway.parse().ok())
                    .map_or(Subnet::new(*cidr), |g| Subnet {
                        cidr: *cidr,
                        gateway: g,
                    });
                let port = PortId(ids.ports.get(&n.id));
                set.changes.insert(
                    Key::Node(port),
                    Change::AttachNode(NodeSpec {
                        port,
                        network,
                        vip,
                        mac,
                        subnet,
                    }),
                );
                set.local.insert(
                    port,
                    LocalNode {
                        node_id: n.id.clone(),
                        name: n.name.clone(),
                        mac,
                    },
                );
            } else if let Some(locator) = self.host_locator(&n.host_id) {
                // Not needed for the local ones: their port answers first.
                set.changes.insert(
                    Key::Mapping(network, vip),
                    Change::Mapping {
                        network,
                        vip,
                        mapping: Some(Mapping { locator, mac }),
                    },
                );
            }
        }
        let mut blocks: BTreeMap<(NetworkId, Ipv4Addr), Vec<PortBlock>> = BTreeMap::new();
        for b in self.port_blocks.values().filter(|b| b.host_id == host_id) {
            let (Some(network), Some(node), Ok(public)) = (
                self.network_id(&b.network_id),
                self.nodes.get(&b.node_id),
                b.address.parse::<Ipv4Addr>(),
            ) else {
                continue;
            };
            let (Ok(vip), Ok(first), Ok(last)) = (
                node.vip.parse::<Ipv4Addr>(),
                u16::try_from(b.port_first),
                u16::try_from(b.port_last),
            ) else {
                continue;
            };
            blocks.entry((network, vip)).or_default().push(PortBlock {
                public,
                first,
                last,
            });
        }
        for ((network, vip), mut blocks) in blocks {
            blocks.sort_by_key(|b| (b.first, b.public));
            set.changes.insert(
                Key::Blocks(network, vip),
                Change::PortBlocks {
                    network,
                    vip,
                    blocks,
                },
            );
        }
        for e in self.eips.values() {
            if e.host_id.as_deref() != Some(host_id) {
                continue;
            }
            let (Some(node), Ok(public)) = (
                e.node_id.as_ref().and_then(|n| self.nodes.get(n)),
                e.address.parse::<Ipv4Addr>(),
            ) else {
                continue;
            };
            let (Some(network), Ok(vip)) = (
                self.network_id(&node.network_id),
                node.vip.parse::<Ipv4Addr>(),
            ) else {
                continue;
            };
            set.changes.insert(
                Key::Eip(network, vip),
                Change::ElasticIp {
                    network,
                    vip,
                    public: Some(public),
                },
            );
        }
        // Security groups: each local node's groups; every attached node's membership (for
        // rules whose remote is a group); each subnet's ACL.
        let mut groups_of: BTreeMap<PortId, Vec<SecurityGroup>> = BTreeMap::new();
        let mut attachments: Vec<&Attachment> = self.attachments.values().collect();
        attachments.sort_by(|a, b| a.id.cmp(&b.id));
        for a in attachments {
            let (Some(node), Some(g)) = (
                self.nodes.get(&a.node_id),
                self.security_groups.get(&a.group_id),
            ) else {
                continue;
            };
            let (Some(network), Ok(vip)) = (
                self.network_id(&node.network_id),
                node.vip.parse::<Ipv4Addr>(),
            ) else {
                continue;
            };
            let group = ids.groups.get(&g.id);
            set.changes.insert(
                Key::Member(group, network, vip),
                Change::GroupMember {
                    group,
                    network,
                    vip,
                    member: true,
                },
            );
            if node.host_id == host_id {
                let port = PortId(ids.ports.get(&node.id));
                match self.security_group(g, &mut ids.groups) {
                    Some(sg) => groups_of.entry(port).or_default().push(sg),
                    None => tracing::warn!(group = g.id, "security group unreadable; ignored"),
                }
            }
        }
        for (port, groups) in groups_of {
            if set.local.contains_key(&port) {
                set.changes
                    .insert(Key::Groups(port), Change::SecurityGroups { port, groups });
            }
        }
        for a in self.acls.values() {
            let (Some(network), Some(subnet)) = (
                self.network_id(&a.network_id),
                subnet_cidrs.get(a.subnet_id.as_str()),
            ) else {
                continue;
            };
            // No rules: no ACL, nothing filtered.
            if a.rules.is_empty() {
                continue;
            }
            match self.acl_rules(a) {
                Some(rules) => {
                    set.changes.insert(
                        Key::Acl(network, *subnet),
                        Change::Acl {
                            network,
                            subnet: *subnet,
                            rules: Some(rules),
                        },
                    );
                }
                None => tracing::warn!(subnet = a.subnet_id, "network ACL unreadable; ignored"),
            }
        }
        set
    }

    /// Everything the edge `edge_id` should have: the owners of its pool's port blocks and
    /// elastic IPs, and the public ranges to route to its outside interface.
    pub fn edge_config(&self, edge_id: &str) -> EdgeConfigSet {
        let mut set = EdgeConfigSet::default();
        let Some(me) = self.edges.get(edge_id) else {
            return set;
        };
        if let Some(pool) = self.pools.get(&me.pool_id) {
            set.public_ranges = pool
                .public_ranges
                .iter()
                .filter_map(|r| r.parse().ok())
                .collect();
            // Agents send an anycast pool's traffic to its anycast locator; every member
            // accepts it there as well as at its own.
            if pool.mode == "anycast" {
                match pool.anycast_locator.as_deref().map(str::parse::<Locator>) {
                    Some(Ok(l)) => {
                        set.changes
                            .insert(EdgeKey::Anycast, EdgeChange::Anycast(Some(l)));
                        set.anycast = Some(l);
                    }
                    _ => tracing::warn!(
                        pool = pool.id,
                        anycast_locator = ?pool.anycast_locator,
                        "anycast pool without a valid anycast locator; its edges accept only their own"
                    ),
                }
            }
        }
        let owner = |node_id: &str| -> Option<Owner> {
            let node = self.nodes.get(node_id)?;
            Some(Owner {
                network: self.network_id(&node.network_id)?,
                vip: node.vip.parse().ok()?,
                host: self.host_locator(&node.host_id)?,
            })
        };
        for b in self
            .port_blocks
            .values()
            .filter(|b| b.pool_id == me.pool_id)
        {
            let (Some(owner), Ok(public), Ok(first), Ok(last)) = (
                owner(&b.node_id),
                b.address.parse::<Ipv4Addr>(),
                u16::try_from(b.port_first),
                u16::try_from(b.port_last),
            ) else {
                continue;
            };
            let block = PortBlock {
                public,
                first,
                last,
            };
            set.changes.insert(
                EdgeKey::Block(public, first),
                EdgeChange::Block { block, owner },
            );
        }
        for e in self.eips.values().filter(|e| e.pool_id == me.pool_id) {
            let Ok(public) = e.address.parse::<Ipv4Addr>() else {
                continue;
            };
            if let Some(owner) = e.node_id.as_deref().and_then(owner) {
                set.changes.insert(
                    EdgeKey::Eip(public),
                    EdgeChange::ElasticIp { public, owner },
                );
                set.elastic_ips.push(public);
            }
        }
        set.elastic_ips.sort();
        set
    }
}

/// Numeric ids for string ids: allocated in order, never reused.
#[derive(Debug, Default, Clone)]
pub struct IdMap {
    map: HashMap<String, u32>,
    next: u32,
}

impl IdMap {
    pub fn get(&mut self, id: &str) -> u32 {
        if let Some(&n) = self.map.get(id) {
            return n;
        }
        self.next += 1;
        self.map.insert(id.to_string(), self.next);
        self.next
    }

    pub fn lookup(&self, id: &str) -> Option<u32> {
        self.map.get(id).copied()
    }
}

/// The id maps of an agent.
#[derive(Debug, Default, Clone)]
pub struct Ids {
    pub ports: IdMap,
    pub pools: IdMap,
    pub groups: IdMap,
}

/// The Maglev member id of an edge: FNV-1a of its id, the same on every agent.
pub fn member_id(edge_id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in edge_id.bytes() {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

/// What an agent's configuration is made of; the order is the order of application
/// (removals go the other way).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Key {
    Network(NetworkId),
    Subnet(NetworkId, Ipv4Cidr),
    Acl(NetworkId, Ipv4Cidr),
    Pool(u32),
    Route(NetworkId, Option<Ipv4Cidr>, Ipv4Cidr),
    Member(u32, NetworkId, Ipv4Addr),
    Node(PortId),
    Groups(PortId),
    Mapping(NetworkId, Ipv4Addr),
    Blocks(NetworkId, Ipv4Addr),
    Eip(NetworkId, Ipv4Addr),
}

/// A node of this host: what its device needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalNode {
    pub node_id: String,
    pub name: String,
    pub mac: MacAddr,
}

/// An agent's derived configuration.
#[derive(Debug, Default, Clone)]
pub struct AgentConfigSet {
    pub changes: BTreeMap<Key, Change>,
    pub local: BTreeMap<PortId, LocalNode>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum EdgeKey {
    Anycast,
    Block(Ipv4Addr, u16),
    Eip(Ipv4Addr),
}

/// An edge's derived configuration.
#[derive(Debug, Default, Clone)]
pub struct EdgeConfigSet {
    pub changes: BTreeMap<EdgeKey, EdgeChange>,
    pub public_ranges: Vec<Ipv4Cidr>,
    pub elastic_ips: Vec<Ipv4Addr>,
    /// The pool's anycast locator (anycast mode), to route into the substrate device.
    pub anycast: Option<Locator>,
}

/// The change that undoes what `c` set (`None`: nothing to undo, e.g. a subnet, which
/// goes with its network).
pub fn undo(c: &Change) -> Option<Change> {
    Some(match c {
        Change::Network { id, .. } => Change::RemoveNetwork(*id),
        Change::Route {
            network,
            subnet,
            cidr,
            ..
        } => Change::RemoveRoute {
            network: *network,
            subnet: *subnet,
            cidr: *cidr,
        },
        Change::Pool { id, .. } => Change::RemovePool(*id),
        Change::AttachNode(spec) => Change::DetachNode(spec.port),
        Change::Mapping { network, vip, .. } => Change::Mapping {
            network: *network,
            vip: *vip,
            mapping: None,
        },
        Change::PortBlocks { network, vip, .. } => Change::PortBlocks {
            network: *network,
            vip: *vip,
            blocks: Vec::new(),
        },
        Change::ElasticIp { network, vip, .. } => Change::ElasticIp {
            network: *network,
            vip: *vip,
            public: None,
        },
        Change::GroupMember {
            group,
            network,
            vip,
            ..
        } => Change::GroupMember {
            group: *group,
            network: *network,
            vip: *vip,
            member: false,
        },
        // Groups gone from a node that stays: no rule allows anything any more.
        Change::SecurityGroups { port, .. } => Change::SecurityGroups {
            port: *port,
            groups: Vec::new(),
        },
        Change::Acl {
            network, subnet, ..
        } => Change::Acl {
            network: *network,
            subnet: *subnet,
            rules: None,
        },
        _ => return None,
    })
}

/// The change that undoes what an edge change set.
pub fn undo_edge(c: &EdgeChange) -> Option<EdgeChange> {
    Some(match c {
        EdgeChange::Block { block, .. } => EdgeChange::RemoveBlock { block: *block },
        EdgeChange::ElasticIp { public, .. } => EdgeChange::RemoveElasticIp { public: *public },
        EdgeChange::Acl(Some(_)) => EdgeChange::Acl(None),
        EdgeChange::Anycast(Some(_)) => EdgeChange::Anycast(None),
        _ => return None,
    })
}

/// What changed between two derived configurations.
#[derive(Debug, Clone, PartialEq)]
pub struct Diff<K, C> {
    /// Keys gone, with what they had, in reverse key order (dependents first).
    pub removed: Vec<(K, C)>,
    /// Keys new or changed, with their new value, in key order.
    pub set: Vec<(K, C)>,
}

impl<K, C> Diff<K, C> {
    pub fn is_empty(&self) -> bool {
        self.removed.is_empty() && self.set.is_empty()
    }
}

pub fn diff<K: Ord + Copy, C: PartialEq + Clone>(
    old: &BTreeMap<K, C>,
    new: &BTreeMap<K, C>,
) -> Diff<K, C> {
    let removed = old
        .iter()
        .rev()
        .filter(|(k, _)| !new.contains_key(k))
        .map(|(k, c)| (*k, c.clone()))
        .collect();
    let set = new
        .iter()
        .filter(|(k, c)| old.get(k) != Some(c))
        .map(|(k, c)| (*k, c.clone()))
        .collect();
    Diff { removed, set }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(n: u32) -> NetworkId {
        NetworkId::new(n).unwrap()
    }

    #[test]
    fn diff_sets_in_order_and_removes_dependents_first() {
        let n = net(7);
        let cidr: Ipv4Cidr = "10.0.0.0/16".parse().unwrap();
        let dflt: Ipv4Cidr = "0.0.0.0/0".parse().unwrap();
        let mut old = BTreeMap::new();
        old.insert(Key::Network(n), Change::Network { id: n, cidr });
        old.insert(
            Key::Route(n, None, dflt),
            Change::Route {
                network: n,
                subnet: None,
                cidr: dflt,
                target: RouteTarget::Blackhole,
            },
        );
        let d = diff(&old, &BTreeMap::new());
        assert!(d.set.is_empty());
        let undone: Vec<Change> = d.removed.iter().filter_map(|(_, c)| undo(c)).collect();
        assert_eq!(
            undone,
            vec![
                Change::RemoveRoute {
                    network: n,
                    subnet: None,
                    cidr: dflt
                },
                Change::RemoveNetwork(n)
            ]
        );
        let d = diff(&BTreeMap::new(), &old);
        assert_eq!(d.set[0].0, Key::Network(n));
        assert!(diff(&old, &old).is_empty());
    }

    #[test]
    fn ids_are_stable() {
        let mut m = IdMap::default();
        let a = m.get("node-aaaaaaaaaaaa");
        let b = m.get("node-bbbbbbbbbbbb");
        assert_ne!(a, b);
        assert_eq!(m.get("node-aaaaaaaaaaaa"), a);
        assert_eq!(m.lookup("node-bbbbbbbbbbbb"), Some(b));
        assert_eq!(
            member_id("edge-0123456789ab"),
            member_id("edge-0123456789ab")
        );
        assert_ne!(
            member_id("edge-0123456789ab"),
            member_id("edge-0123456789ac")
        );
    }

    #[test]
    fn a_forgotten_network_takes_its_objects_along() {
        let mut c = Catalog::default();
        let ev = |kind: &str, object: Value| WatchEvent::Upsert {
            kind: kind.into(),
            object,
        };
        c.ingest(&WatchEvent::Snapshot { revision: 1 });
        c.ingest(&ev(
            "network",
            serde_json::json!({"id": "net-1", "cidr": "10.0.0.0/16", "vni": 5}),
        ));
        c.ingest(&ev(
            "subnet",
            serde_json::json!({"id": "sub-1", "network_id": "net-1",
            "cidr": "10.0.1.0/24", "gateway": "10.0.1.1"}),
        ));
        assert_eq!(
            c.ingest(&WatchEvent::Synced { revision: 1 }),
            Effect::Synced
        );
        assert_eq!(
            c.ingest(&WatchEvent::Forget {
                revision: 2,
                network_id: "net-1".into()
            }),
            Effect::Changed
        );
        assert!(c.networks.is_empty() && c.subnets.is_empty());
        // Unreadable objects are ignored, not fatal.
        c.ingest(&ev("node", serde_json::json!({"id": "node-1"})));
        assert!(c.nodes.is_empty());
    }

    #[test]
    fn edges_of_an_anycast_pool_accept_its_anycast_locator() {
        let mut c = Catalog::default();
        let ev = |kind: &str, object: Value| WatchEvent::Upsert {
            kind: kind.into(),
            object,
        };
        let pool = |mode: &str| {
            serde_json::json!({"id": "pool-1", "mode": mode, "nat": true,
                "anycast_locator": "fd63:6e73:0:ff00::/72",
                "public_ranges": ["203.0.113.0/28"]})
        };
        c.ingest(&WatchEvent::Snapshot { revision: 1 });
        c.ingest(&ev("edge_pool", pool("anycast")));
        c.ingest(&ev(
            "edge",
            serde_json::json!({"id": "edge-1", "pool_id": "pool-1", "name": "e1",
                "locator": "fd63:6e73:0:e100::/72", "weight": 1, "state": "active"}),
        ));
        c.ingest(&WatchEvent::Synced { revision: 1 });
        let any: Locator = "fd63:6e73:0:ff00::/72".parse().unwrap();
        let cfg = c.edge_config("edge-1");
        assert_eq!(cfg.anycast, Some(any));
        assert_eq!(
            cfg.changes.get(&EdgeKey::Anycast),
            Some(&EdgeChange::Anycast(Some(any)))
        );
        // Back to direct mode: the change goes, and undoing it removes the locator.
        c.ingest(&ev("edge_pool", pool("direct")));
        let direct = c.edge_config("edge-1");
        assert_eq!(direct.anycast, None);
        let d = diff(&cfg.changes, &direct.changes);
        let undone: Vec<EdgeChange> = d.removed.iter().filter_map(|(_, c)| undo_edge(c)).collect();
        assert_eq!(undone, vec![EdgeChange::Anycast(None)]);
    }
}
