//! `canopy route|peering|eip|port-block|security-group|acl ...`: the CLI verbs over the
//! manager's routing and policy resources, in the style of `resources.rs` (same `--url`,
//! `--token`, `--output`; tables by default, the manager's JSON with `--output json`).
//!
//! Security group and ACL rules are given as one short string each (see [`parse_sg_rule`]
//! and [`parse_acl_rule`]) and shown the same way in tables.

use clap::{ArgGroup, Args, Subcommand};
use serde_json::{Map, Value};

use crate::api_client::{ApiClient, ClientError};
use crate::resources::{obj, opt, path, s, segment, Answer, ApiOpts, Col};

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

/// Routes of a network's (or a subnet's) route table: to an edge pool, a peering or nowhere.
#[derive(Debug, Args)]
pub struct RouteCmd {
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    #[command(subcommand)]
    pub(crate) verb: RouteVerb,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RouteVerb {
    /// Add a route to a network's table, or to a subnet's with --subnet.
    ///
    /// The target is `pool:<pool id>`, `peering:<peering id>` (an active peering of the
    /// network) or `blackhole`; the network's own CIDR is the implicit `local` route.
    ///
    /// Example: canopy route create --network net-0123456789ab --destination 0.0.0.0/0 --target pool:pool-0123456789ab
    Create {
        /// The network (net-...)
        #[arg(long = "network")]
        network_id: String,
        /// Put the route in this subnet's table instead of the network's (sub-...)
        #[arg(long = "subnet")]
        subnet_id: Option<String>,
        /// Destination IPv4 CIDR, outside the network's own
        #[arg(long)]
        destination: String,
        /// pool:<pool id> | peering:<peering id> | blackhole
        #[arg(long)]
        target: String,
    },
    /// List routes, optionally of one network or one subnet's table.
    ///
    /// Example: canopy route list --network net-0123456789ab
    List {
        /// Only routes of this network
        #[arg(long = "network")]
        network_id: Option<String>,
        /// Only routes of this subnet's table
        #[arg(long = "subnet")]
        subnet_id: Option<String>,
    },
    /// Show a route.
    ///
    /// Example: canopy route show rt-0123456789ab
    Show {
        /// Route id (rt-...)
        id: String,
    },
    /// Delete a route.
    ///
    /// Example: canopy route delete rt-0123456789ab
    Delete {
        /// Route id (rt-...)
        id: String,
    },
}

/// Peerings between two networks with disjoint CIDRs (another tenant's must be accepted).
#[derive(Debug, Args)]
pub struct PeeringCmd {
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    #[command(subcommand)]
    pub(crate) verb: PeeringVerb,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PeeringVerb {
    /// Ask to peer one of your networks with another network.
    ///
    /// Active at once inside a tenant; pending until the other tenant accepts otherwise.
    ///
    /// Example: canopy peering create --network net-0123456789ab --peer-network net-ba9876543210
    Create {
        /// Your network (net-...)
        #[arg(long = "network")]
        network_id: String,
        /// The other network (net-...)
        #[arg(long = "peer-network")]
        peer_network_id: String,
    },
    /// Accept a pending peering (the other network's tenant).
    ///
    /// Example: canopy peering accept peer-0123456789ab
    Accept {
        /// Peering id (peer-...)
        id: String,
    },
    /// List the peerings of your networks, either side.
    ///
    /// Example: canopy peering list
    List,
    /// Show a peering.
    ///
    /// Example: canopy peering show peer-0123456789ab
    Show {
        /// Peering id (peer-...)
        id: String,
    },
    /// Delete a peering; refused while routes point at it.
    ///
    /// Example: canopy peering delete peer-0123456789ab
    Delete {
        /// Peering id (peer-...)
        id: String,
    },
}

/// Elastic IPs: public addresses of an edge pool bound 1:1 to a node.
#[derive(Debug, Args)]
pub struct EipCmd {
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    #[command(subcommand)]
    pub(crate) verb: EipVerb,
}

#[derive(Debug, Subcommand)]
pub(crate) enum EipVerb {
    /// Allocate an elastic IP of a pool to a tenant (admin).
    ///
    /// Without --address it gets the lowest free usable address of the pool's ranges.
    ///
    /// Example: canopy eip allocate --pool pool-0123456789ab --tenant ten-0123456789ab
    Allocate {
        /// The pool (pool-...)
        #[arg(long = "pool")]
        pool_id: String,
        /// The tenant that may associate it (ten-...)
        #[arg(long = "tenant")]
        tenant_id: String,
        /// A public IPv4 address of the pool's ranges
        #[arg(long)]
        address: Option<String>,
    },
    /// Associate an elastic IP with one of your nodes (one per node).
    ///
    /// Example: canopy eip associate eip-0123456789ab --node node-0123456789ab
    Associate {
        /// Elastic IP id (eip-...)
        id: String,
        /// The node (node-...)
        #[arg(long = "node")]
        node_id: String,
    },
    /// Disassociate an elastic IP from its node.
    ///
    /// Example: canopy eip disassociate eip-0123456789ab
    Disassociate {
        /// Elastic IP id (eip-...)
        id: String,
    },
    /// Release an elastic IP back to its pool; refused while associated.
    ///
    /// Example: canopy eip release eip-0123456789ab
    Release {
        /// Elastic IP id (eip-...)
        id: String,
    },
    /// List elastic IPs: all for the admin, its own for a tenant.
    ///
    /// Example: canopy eip list
    List,
    /// Show an elastic IP.
    ///
    /// Example: canopy eip show eip-0123456789ab
    Show {
        /// Elastic IP id (eip-...)
        id: String,
    },
}

/// NAT port blocks: (public address, port range) of a NAT pool held by a node.
#[derive(Debug, Args)]
pub struct PortBlockCmd {
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    #[command(subcommand)]
    pub(crate) verb: PortBlockVerb,
}

#[derive(Debug, Subcommand)]
pub(crate) enum PortBlockVerb {
    /// Assign a port block to a node (its host's agent or the admin).
    ///
    /// Without --pool, the pool is the only NAT pool the node's route tables target.
    ///
    /// Example: canopy port-block assign --node node-0123456789ab
    Assign {
        /// The node (node-...)
        #[arg(long = "node")]
        node_id: String,
        /// The NAT pool (pool-...)
        #[arg(long = "pool")]
        pool_id: Option<String>,
    },
    /// List a node's port blocks.
    ///
    /// Example: canopy port-block list --node node-0123456789ab
    List {
        /// The node (node-...)
        #[arg(long = "node")]
        node_id: String,
    },
    /// Release a port block.
    ///
    /// Example: canopy port-block release pb-0123456789ab
    Release {
        /// Port block id (pb-...)
        id: String,
    },
    /// Who held a public address and port at a time, from the assignment log (admin).
    ///
    /// Example: canopy port-block lookup --address 198.51.100.7 --port 40001 --at 2026-11-25T22:00:00Z
    Lookup {
        /// Public IPv4 address
        #[arg(long)]
        address: String,
        /// Port, 0..=65535
        #[arg(long)]
        port: u32,
        /// RFC 3339 time (default: now)
        #[arg(long)]
        at: Option<String>,
    },
}

const SG_RULE_HELP: &str = "\
A rule, repeatable: 'DIRECTION PROTOCOL [PORTS] REMOTE' where DIRECTION is ingress|egress,
PROTOCOL any|tcp|udp|icmp|0..=255, PORTS (tcp/udp only; default all) N or N-M, and REMOTE
an IPv4 CIDR or a security group id of the same network (sg-...).
e.g. --rule 'ingress tcp 22 10.0.0.0/16' --rule 'ingress tcp 8000-8080 sg-0123456789ab'";

/// Security groups: stateful allow rules per network, attached to nodes.
#[derive(Debug, Args)]
pub struct SecurityGroupCmd {
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    #[command(subcommand)]
    pub(crate) verb: SecurityGroupVerb,
}

#[derive(Debug, Subcommand)]
pub(crate) enum SecurityGroupVerb {
    /// Create a security group in a network; what no rule allows is denied.
    ///
    /// Each --rule is 'DIRECTION PROTOCOL [PORTS] REMOTE': DIRECTION ingress|egress,
    /// PROTOCOL any|tcp|udp|icmp|0..=255, PORTS (tcp/udp only, default all) N or N-M,
    /// REMOTE an IPv4 CIDR or a group id (sg-...) of the same network.
    ///
    /// Example: canopy security-group create web --network net-0123456789ab --rule 'ingress tcp 22 10.0.0.0/16' --rule 'ingress tcp 80-443 0.0.0.0/0' --rule 'egress any 0.0.0.0/0'
    Create {
        /// Name, unique within the network
        name: String,
        /// The network (net-...)
        #[arg(long = "network")]
        network_id: String,
        #[arg(long = "rule", value_name = "RULE", help = SG_RULE_HELP, value_parser = parse_sg_rule)]
        rules: Vec<Value>,
    },
    /// List security groups, of one network or attached to one node.
    ///
    /// Example: canopy security-group list --network net-0123456789ab
    List {
        /// Only groups of this network
        #[arg(long = "network", conflicts_with = "node_id")]
        network_id: Option<String>,
        /// The node's attachments instead (node-...)
        #[arg(long = "node")]
        node_id: Option<String>,
    },
    /// Show a security group and its rules.
    ///
    /// Example: canopy security-group show sg-0123456789ab
    Show {
        /// Security group id (sg-...)
        id: String,
    },
    /// Delete a security group.
    ///
    /// Example: canopy security-group delete sg-0123456789ab
    Delete {
        /// Security group id (sg-...)
        id: String,
    },
    /// Attach a security group to a node of its network.
    ///
    /// Example: canopy security-group attach sg-0123456789ab --node node-0123456789ab
    Attach {
        /// Security group id (sg-...)
        id: String,
        /// The node (node-...)
        #[arg(long = "node")]
        node_id: String,
    },
    /// Detach a security group from a node.
    ///
    /// Example: canopy security-group detach sg-0123456789ab --node node-0123456789ab
    Detach {
        /// Security group id (sg-...)
        id: String,
        /// The node (node-...)
        #[arg(long = "node")]
        node_id: String,
    },
}

const ACL_RULE_HELP: &str = "\
A rule, repeatable: 'NUMBER ACTION DIRECTION PROTOCOL [PORTS] CIDR' where NUMBER is 1..=32766
(unique per direction, lowest first), ACTION allow|deny, DIRECTION ingress|egress, PROTOCOL
any|tcp|udp|icmp|0..=255, PORTS (tcp/udp only; default all) N or N-M.
e.g. --rule '100 allow ingress tcp 80 0.0.0.0/0' --rule '200 deny ingress any 0.0.0.0/0'";

/// Network ACLs: numbered stateless rules on a subnet's boundary.
#[derive(Debug, Args)]
pub struct AclCmd {
    #[command(flatten)]
    pub(crate) api: ApiOpts,
    #[command(subcommand)]
    pub(crate) verb: AclVerb,
}

#[derive(Debug, Subcommand)]
pub(crate) enum AclVerb {
    /// Show a subnet's network ACL (no rules: everything is allowed).
    ///
    /// Example: canopy acl show --subnet sub-0123456789ab
    Show {
        /// The subnet (sub-...)
        #[arg(long = "subnet")]
        subnet_id: String,
    },
    /// Replace a subnet's network ACL whole; --clear removes every rule (allow all).
    ///
    /// Each --rule is 'NUMBER ACTION DIRECTION PROTOCOL [PORTS] CIDR'; per direction the
    /// lowest-numbered matching rule decides.
    ///
    /// Example: canopy acl set --subnet sub-0123456789ab --rule '100 allow ingress tcp 80 0.0.0.0/0' --rule '200 deny ingress any 0.0.0.0/0'
    #[command(group(ArgGroup::new("acl_rules").required(true).args(["rules", "clear"])))]
    Set {
        /// The subnet (sub-...)
        #[arg(long = "subnet")]
        subnet_id: String,
        #[arg(long = "rule", value_name = "RULE", help = ACL_RULE_HELP, value_parser = parse_acl_rule)]
        rules: Vec<Value>,
        /// Remove every rule
        #[arg(long)]
        clear: bool,
    },
}

// ---------------------------------------------------------------------------------------
// Rule syntax
// ---------------------------------------------------------------------------------------

fn parse_direction(t: &str) -> Result<Value, String> {
    match t {
        "ingress" | "egress" => Ok(s(t)),
        _ => Err(format!("direction {t:?} is not ingress or egress")),
    }
}

/// `N` or `N-M` as (port_from, port_to).
fn parse_ports(t: &str) -> Result<Ports, String> {
    let bad = || format!("ports {t:?} are not N or N-M with N, M in 1..=65535");
    let (a, b) = t.split_once('-').unwrap_or((t, t));
    let a: u16 = a.parse().map_err(|_| bad())?;
    let b: u16 = b.parse().map_err(|_| bad())?;
    Ok((a, b))
}

/// A port range: (port_from, port_to).
type Ports = (u16, u16);

/// Splits `[PORTS] LAST` after the protocol: (ports, last).
fn ports_and_last<'a>(rest: &[&'a str], what: &str) -> Result<(Option<Ports>, &'a str), String> {
    match rest {
        [last] => Ok((None, last)),
        [ports, last] => Ok((Some(parse_ports(ports)?), last)),
        _ => Err(format!("expected [PORTS] {what} after the protocol")),
    }
}

fn put_ports(m: &mut Map<String, Value>, ports: Option<Ports>) {
    if let Some((a, b)) = ports {
        m.insert("port_from".into(), Value::from(a));
        m.insert("port_to".into(), Value::from(b));
    }
}

/// A security group rule from `DIRECTION PROTOCOL [PORTS] REMOTE`; a REMOTE that starts
/// with a digit is a CIDR, anything else a group id. The manager checks the values.
pub(crate) fn parse_sg_rule(text: &str) -> Result<Value, String> {
    let t: Vec<&str> = text.split_whitespace().collect();
    let form = "expected 'DIRECTION PROTOCOL [PORTS] REMOTE', e.g. 'ingress tcp 22 10.0.0.0/16'";
    if t.len() < 3 {
        return Err(form.into());
    }
    let (ports, remote) = ports_and_last(&t[2..], "REMOTE").map_err(|e| format!("{e}; {form}"))?;
    let mut m = Map::new();
    m.insert("direction".into(), parse_direction(t[0])?);
    m.insert("protocol".into(), s(t[1]));
    put_ports(&mut m, ports);
    let key = if remote.starts_with(|c: char| c.is_ascii_digit()) {
        "remote_cidr"
    } else {
        "remote_group_id"
    };
    m.insert(key.into(), s(remote));
    Ok(Value::Object(m))
}

/// A network ACL rule from `NUMBER ACTION DIRECTION PROTOCOL [PORTS] CIDR`.
pub(crate) fn parse_acl_rule(text: &str) -> Result<Value, String> {
    let t: Vec<&str> = text.split_whitespace().collect();
    let form = "expected 'NUMBER ACTION DIRECTION PROTOCOL [PORTS] CIDR', \
                e.g. '100 allow ingress tcp 80 0.0.0.0/0'";
    if t.len() < 5 {
        return Err(form.into());
    }
    let number: u32 = t[0]
        .parse()
        .map_err(|_| format!("number {:?} is not 1..=32766; {form}", t[0]))?;
    let action = match t[1] {
        "allow" | "deny" => s(t[1]),
        a => return Err(format!("action {a:?} is not allow or deny")),
    };
    let (ports, cidr) = ports_and_last(&t[4..], "CIDR").map_err(|e| format!("{e}; {form}"))?;
    let mut m = Map::new();
    m.insert("number".into(), Value::from(number));
    m.insert("action".into(), action);
    m.insert("direction".into(), parse_direction(t[2])?);
    m.insert("protocol".into(), s(t[3]));
    put_ports(&mut m, ports);
    m.insert("cidr".into(), s(cidr));
    Ok(Value::Object(m))
}

/// A rule object (security group or ACL) back in the syntax `--rule` takes.
fn rule_text(r: &Value) -> String {
    let get = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
    let mut parts: Vec<String> = Vec::new();
    if let Some(n) = r.get("number").and_then(Value::as_u64) {
        parts.push(n.to_string());
        parts.push(get("action").to_string());
    }
    parts.push(get("direction").to_string());
    parts.push(
        r.get("protocol")
            .and_then(Value::as_str)
            .unwrap_or("any")
            .to_string(),
    );
    let from = r.get("port_from").and_then(Value::as_u64);
    let to = r.get("port_to").and_then(Value::as_u64);
    match (from, to) {
        (Some(a), Some(b)) if a == b => parts.push(a.to_string()),
        (Some(a), Some(b)) => parts.push(format!("{a}-{b}")),
        (Some(a), None) | (None, Some(a)) => parts.push(a.to_string()),
        (None, None) => {}
    }
    for k in ["cidr", "remote_cidr", "remote_group_id"] {
        if let Some(x) = r.get(k).and_then(Value::as_str) {
            parts.push(x.to_string());
        }
    }
    parts.join(" ")
}

/// For tables: every `rules` array (of an object, or of each object of a list) turned into
/// one `; `-separated string in the `--rule` syntax.
pub(crate) fn rules_as_text(v: &Value) -> Value {
    fn one(v: &Value) -> Value {
        let mut v = v.clone();
        if let Some(Value::Array(rules)) = v.get("rules") {
            let text = if rules.is_empty() {
                Value::Null
            } else {
                s(&rules.iter().map(rule_text).collect::<Vec<_>>().join("; "))
            };
            v["rules"] = text;
        }
        v
    }
    match v {
        Value::Array(a) => Value::Array(a.iter().map(one).collect()),
        Value::Object(_) => one(v),
        _ => v.clone(),
    }
}

// ---------------------------------------------------------------------------------------
// Columns
// ---------------------------------------------------------------------------------------

const ROUTE: &[Col] = &[
    Col("ID", "id"),
    Col("NETWORK", "network_id"),
    Col("SUBNET", "subnet_id"),
    Col("DESTINATION", "destination"),
    Col("TARGET", "target"),
    Col("CREATED", "created_at"),
];
const PEERING: &[Col] = &[
    Col("ID", "id"),
    Col("NETWORK", "network_id"),
    Col("PEER NETWORK", "peer_network_id"),
    Col("PEER TENANT", "peer_tenant_id"),
    Col("STATE", "state"),
    Col("CREATED", "created_at"),
];
const EIP: &[Col] = &[
    Col("ID", "id"),
    Col("ADDRESS", "address"),
    Col("POOL", "pool_id"),
    Col("TENANT", "tenant_id"),
    Col("NODE", "node_id"),
    Col("HOST", "host_id"),
];
const PORT_BLOCK: &[Col] = &[
    Col("ID", "id"),
    Col("ADDRESS", "address"),
    Col("FIRST PORT", "port_first"),
    Col("LAST PORT", "port_last"),
    Col("POOL", "pool_id"),
    Col("NODE", "node_id"),
    Col("CREATED", "created_at"),
];
const PORT_BLOCK_RECORD: &[Col] = &[
    Col("BLOCK", "block_id"),
    Col("NODE", "node_id"),
    Col("VIP", "vip"),
    Col("NETWORK", "network_id"),
    Col("TENANT", "tenant_id"),
    Col("ADDRESS", "address"),
    Col("FIRST PORT", "port_first"),
    Col("LAST PORT", "port_last"),
    Col("ASSIGNED", "assigned_at"),
    Col("RELEASED", "released_at"),
];
const SECURITY_GROUP: &[Col] = &[
    Col("ID", "id"),
    Col("NAME", "name"),
    Col("NETWORK", "network_id"),
    Col("RULES", "rules"),
];
const ATTACHMENT: &[Col] = &[
    Col("NODE", "node_id"),
    Col("GROUP", "group_id"),
    Col("NETWORK", "network_id"),
];
const ACL: &[Col] = &[
    Col("SUBNET", "subnet_id"),
    Col("NETWORK", "network_id"),
    Col("RULES", "rules"),
    Col("UPDATED", "updated_at"),
];

// ---------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------

pub(crate) fn route(c: &ApiClient, verb: RouteVerb) -> Result<Answer, ClientError> {
    Ok(match verb {
        RouteVerb::Create {
            network_id,
            subnet_id,
            destination,
            target,
        } => {
            let body = obj([
                ("network_id", s(&network_id)),
                ("subnet_id", opt(subnet_id.as_deref())),
                ("destination", s(&destination)),
                ("target", s(&target)),
            ]);
            Answer::One(c.post("/v1/routes", &body)?, ROUTE)
        }
        RouteVerb::List {
            network_id,
            subnet_id,
        } => {
            let q = [
                ("network_id", network_id.as_deref()),
                ("subnet_id", subnet_id.as_deref()),
            ];
            Answer::Many(c.get("/v1/routes", &q)?, ROUTE)
        }
        RouteVerb::Show { id } => Answer::One(c.get(&path("routes", &id), &[])?, ROUTE),
        RouteVerb::Delete { id } => {
            c.delete(&path("routes", &id))?;
            Answer::Done(format!("deleted route {id}"))
        }
    })
}

pub(crate) fn peering(c: &ApiClient, verb: PeeringVerb) -> Result<Answer, ClientError> {
    Ok(match verb {
        PeeringVerb::Create {
            network_id,
            peer_network_id,
        } => {
            let body = obj([
                ("network_id", s(&network_id)),
                ("peer_network_id", s(&peer_network_id)),
            ]);
            Answer::One(c.post("/v1/peerings", &body)?, PEERING)
        }
        PeeringVerb::Accept { id } => {
            let url = format!("{}/accept", path("peerings", &id));
            Answer::One(c.post(&url, &obj([]))?, PEERING)
        }
        PeeringVerb::List => Answer::Many(c.get("/v1/peerings", &[])?, PEERING),
        PeeringVerb::Show { id } => Answer::One(c.get(&path("peerings", &id), &[])?, PEERING),
        PeeringVerb::Delete { id } => {
            c.delete(&path("peerings", &id))?;
            Answer::Done(format!("deleted peering {id}"))
        }
    })
}

pub(crate) fn eip(c: &ApiClient, verb: EipVerb) -> Result<Answer, ClientError> {
    Ok(match verb {
        EipVerb::Allocate {
            pool_id,
            tenant_id,
            address,
        } => {
            let body = obj([
                ("pool_id", s(&pool_id)),
                ("tenant_id", s(&tenant_id)),
                ("address", opt(address.as_deref())),
            ]);
            Answer::One(c.post("/v1/elastic-ips", &body)?, EIP)
        }
        EipVerb::Associate { id, node_id } => {
            let url = format!("{}/associate", path("elastic-ips", &id));
            Answer::One(c.post(&url, &obj([("node_id", s(&node_id))]))?, EIP)
        }
        EipVerb::Disassociate { id } => {
            let url = format!("{}/disassociate", path("elastic-ips", &id));
            Answer::One(c.post(&url, &obj([]))?, EIP)
        }
        EipVerb::Release { id } => {
            c.delete(&path("elastic-ips", &id))?;
            Answer::Done(format!("released elastic IP {id}"))
        }
        EipVerb::List => Answer::Many(c.get("/v1/elastic-ips", &[])?, EIP),
        EipVerb::Show { id } => Answer::One(c.get(&path("elastic-ips", &id), &[])?, EIP),
    })
}

pub(crate) fn port_block(c: &ApiClient, verb: PortBlockVerb) -> Result<Answer, ClientError> {
    Ok(match verb {
        PortBlockVerb::Assign { node_id, pool_id } => {
            let url = format!("{}/port-blocks", path("nodes", &node_id));
            let body = obj([("pool_id", opt(pool_id.as_deref()))]);
            Answer::One(c.post(&url, &body)?, PORT_BLOCK)
        }
        PortBlockVerb::List { node_id } => {
            let url = format!("{}/port-blocks", path("nodes", &node_id));
            Answer::Many(c.get(&url, &[])?, PORT_BLOCK)
        }
        PortBlockVerb::Release { id } => {
            c.delete(&path("port-blocks", &id))?;
            Answer::Done(format!("released port block {id}"))
        }
        PortBlockVerb::Lookup { address, port, at } => {
            let port = port.to_string();
            let q = [
                ("address", Some(address.as_str())),
                ("port", Some(port.as_str())),
                ("at", at.as_deref()),
            ];
            Answer::One(c.get("/v1/port-blocks/lookup", &q)?, PORT_BLOCK_RECORD)
        }
    })
}

pub(crate) fn security_group(
    c: &ApiClient,
    verb: SecurityGroupVerb,
) -> Result<Answer, ClientError> {
    let node_groups = |node_id: &str| format!("{}/security-groups", path("nodes", node_id));
    Ok(match verb {
        SecurityGroupVerb::Create {
            name,
            network_id,
            rules,
        } => {
            let body = obj([
                ("network_id", s(&network_id)),
                ("name", s(&name)),
                ("rules", Value::Array(rules)),
            ]);
            Answer::One(c.post("/v1/security-groups", &body)?, SECURITY_GROUP)
        }
        SecurityGroupVerb::List {
            network_id,
            node_id,
        } => match node_id {
            Some(node) => Answer::Many(c.get(&node_groups(&node), &[])?, ATTACHMENT),
            None => Answer::Many(
                c.get(
                    "/v1/security-groups",
                    &[("network_id", network_id.as_deref())],
                )?,
                SECURITY_GROUP,
            ),
        },
        SecurityGroupVerb::Show { id } => {
            Answer::One(c.get(&path("security-groups", &id), &[])?, SECURITY_GROUP)
        }
        SecurityGroupVerb::Delete { id } => {
            c.delete(&path("security-groups", &id))?;
            Answer::Done(format!("deleted security group {id}"))
        }
        SecurityGroupVerb::Attach { id, node_id } => Answer::One(
            c.post(&node_groups(&node_id), &obj([("group_id", s(&id))]))?,
            ATTACHMENT,
        ),
        SecurityGroupVerb::Detach { id, node_id } => {
            c.delete(&format!("{}/{}", node_groups(&node_id), segment(&id)))?;
            Answer::Done(format!("detached security group {id} from node {node_id}"))
        }
    })
}

pub(crate) fn acl(c: &ApiClient, verb: AclVerb) -> Result<Answer, ClientError> {
    let acl_path = |subnet_id: &str| format!("{}/acl", path("subnets", subnet_id));
    Ok(match verb {
        AclVerb::Show { subnet_id } => Answer::One(c.get(&acl_path(&subnet_id), &[])?, ACL),
        AclVerb::Set {
            subnet_id,
            rules,
            clear: _,
        } => {
            // `--clear` and `--rule` exclude each other (clap): no rules means clear.
            let body = obj([("rules", Value::Array(rules))]);
            Answer::One(c.put(&acl_path(&subnet_id), &body)?, ACL)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn security_group_rules_parse_and_print_back() {
        let r = parse_sg_rule("ingress tcp 22 10.0.0.0/16").unwrap();
        assert_eq!(
            r,
            json!({"direction": "ingress", "protocol": "tcp", "port_from": 22, "port_to": 22,
                   "remote_cidr": "10.0.0.0/16"})
        );
        assert_eq!(rule_text(&r), "ingress tcp 22 10.0.0.0/16");
        let r = parse_sg_rule("egress  udp 8000-8080   sg-0123456789ab").unwrap();
        assert_eq!(r["remote_group_id"], "sg-0123456789ab");
        assert_eq!(rule_text(&r), "egress udp 8000-8080 sg-0123456789ab");
        let r = parse_sg_rule("egress any 0.0.0.0/0").unwrap();
        assert!(r.get("port_from").is_none());
        assert!(parse_sg_rule("sideways tcp 22 10.0.0.0/16")
            .unwrap_err()
            .contains("direction"));
        assert!(parse_sg_rule("ingress tcp x 10.0.0.0/16")
            .unwrap_err()
            .contains("ports"));
        assert!(parse_sg_rule("ingress tcp").is_err());
        assert!(parse_sg_rule("ingress tcp 1 2 3").is_err());
    }

    #[test]
    fn acl_rules_parse_and_print_back() {
        let r = parse_acl_rule("100 allow ingress tcp 80 0.0.0.0/0").unwrap();
        assert_eq!(
            r,
            json!({"number": 100, "action": "allow", "direction": "ingress", "protocol": "tcp",
                   "port_from": 80, "port_to": 80, "cidr": "0.0.0.0/0"})
        );
        assert_eq!(rule_text(&r), "100 allow ingress tcp 80 0.0.0.0/0");
        let r = parse_acl_rule("200 deny egress any 10.0.0.0/8").unwrap();
        assert_eq!(rule_text(&r), "200 deny egress any 10.0.0.0/8");
        assert!(parse_acl_rule("x allow ingress tcp 80 0.0.0.0/0")
            .unwrap_err()
            .contains("number"));
        assert!(parse_acl_rule("1 maybe ingress tcp 80 0.0.0.0/0")
            .unwrap_err()
            .contains("action"));
        assert!(parse_acl_rule("1 allow ingress").is_err());
    }

    #[test]
    fn tables_show_rules_in_the_flag_syntax() {
        let v = json!([{"id": "sg-1", "rules": [
            {"direction": "ingress", "protocol": "tcp", "port_from": 22, "port_to": 22,
             "remote_cidr": "10.0.0.0/16"},
            {"direction": "egress", "protocol": "any", "remote_cidr": "0.0.0.0/0"}]},
            {"id": "sg-2", "rules": []}]);
        let t = rules_as_text(&v);
        assert_eq!(
            t[0]["rules"],
            "ingress tcp 22 10.0.0.0/16; egress any 0.0.0.0/0"
        );
        assert_eq!(t[1]["rules"], Value::Null);
    }
}
