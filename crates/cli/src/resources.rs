//! `canopy <resource> create|list|show|delete ...`: the CLI verbs over the manager's API.
//!
//! Every verb takes `--url` (env `CANOPY_URL`, default http://127.0.0.1:7450), `--token`
//! (env `CANOPY_TOKEN`) and `--output table|json`. Tables show the useful columns; `json`
//! prints the manager's answer as it came (pretty-printed), for scripts.

use std::fmt::Write as _;

use clap::{Args, Subcommand, ValueEnum};
use serde_json::{Map, Value};

use crate::api_client::{ApiClient, ClientError, DEFAULT_URL};

/// How to print answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Human-readable tables.
    Table,
    /// The manager's JSON, pretty-printed.
    Json,
}

/// Where the manager is and who is asking; shared by every verb.
#[derive(Debug, Clone, Args)]
pub struct ApiOpts {
    /// The manager's URL
    #[arg(long, env = "CANOPY_URL", default_value = DEFAULT_URL, global = true)]
    pub url: String,
    /// Bearer token: the admin token, or a tenant's API token
    #[arg(long, env = "CANOPY_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// Output format
    #[arg(short, long, value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
}

// ---------------------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------------------

/// Tenants and their API tokens (creating tenants needs the admin token).
#[derive(Debug, Args)]
pub struct TenantCmd {
    #[command(flatten)]
    api: ApiOpts,
    #[command(subcommand)]
    verb: TenantVerb,
}

#[derive(Debug, Subcommand)]
enum TenantVerb {
    /// Create a tenant (admin).
    ///
    /// Example: canopy tenant create acme --token $ADMIN_TOKEN
    Create {
        /// Unique name, 1..=64 characters of [A-Za-z0-9._-]
        name: String,
    },
    /// List tenants: all for the admin, its own for a tenant.
    ///
    /// Example: canopy tenant list --output json
    List,
    /// Show a tenant.
    ///
    /// Example: canopy tenant show ten-0123456789ab
    Show {
        /// Tenant id (ten-...)
        id: String,
    },
    /// Delete a tenant (admin); refused while it still has networks.
    ///
    /// Example: canopy tenant delete ten-0123456789ab
    Delete {
        /// Tenant id (ten-...)
        id: String,
    },
    /// A tenant's API tokens: create (the secret is shown once), list, delete.
    Token {
        #[command(subcommand)]
        verb: TokenVerb,
    },
}

#[derive(Debug, Subcommand)]
enum TokenVerb {
    /// Create an API token for a tenant; the token is printed only this once.
    ///
    /// Example: canopy tenant token create ten-0123456789ab --name ci
    ///
    /// In a script: export CANOPY_TOKEN=$(canopy tenant token create ten-0123456789ab -o json | jq -r .token)
    Create {
        /// Tenant id (ten-...)
        tenant_id: String,
        /// A label for the token (default `default`)
        #[arg(long)]
        name: Option<String>,
    },
    /// List a tenant's tokens (never their secrets).
    ///
    /// Example: canopy tenant token list ten-0123456789ab
    List {
        /// Tenant id (ten-...)
        tenant_id: String,
    },
    /// Revoke a token.
    ///
    /// Example: canopy tenant token delete ten-0123456789ab tok-0123456789ab
    Delete {
        /// Tenant id (ten-...)
        tenant_id: String,
        /// Token id (tok-...)
        token_id: String,
    },
}

/// Virtual networks: an IPv4 CIDR (/16../28) with a unique 24-bit network id.
#[derive(Debug, Args)]
pub struct NetworkCmd {
    #[command(flatten)]
    api: ApiOpts,
    #[command(subcommand)]
    verb: NetworkVerb,
}

#[derive(Debug, Subcommand)]
enum NetworkVerb {
    /// Create a network.
    ///
    /// With a tenant token the network is the caller's; the admin must name the tenant.
    ///
    /// Example: canopy network create web --cidr 10.0.0.0/16
    Create {
        /// Name, unique within the tenant
        name: String,
        /// IPv4 CIDR, prefix length 16..=28, host bits zero
        #[arg(long)]
        cidr: String,
        /// Owner (required with the admin token)
        #[arg(long = "tenant")]
        tenant_id: Option<String>,
    },
    /// List networks.
    ///
    /// Example: canopy network list
    List,
    /// Show a network.
    ///
    /// Example: canopy network show net-0123456789ab
    Show {
        /// Network id (net-...)
        id: String,
    },
    /// Delete a network; refused while it has subnets or nodes.
    ///
    /// Example: canopy network delete net-0123456789ab
    Delete {
        /// Network id (net-...)
        id: String,
    },
}

/// Subnets of a network (inside its CIDR, no overlap, `.1` is the gateway).
#[derive(Debug, Args)]
pub struct SubnetCmd {
    #[command(flatten)]
    api: ApiOpts,
    #[command(subcommand)]
    verb: SubnetVerb,
}

#[derive(Debug, Subcommand)]
enum SubnetVerb {
    /// Create a subnet.
    ///
    /// Example: canopy subnet create front --network net-0123456789ab --cidr 10.0.1.0/24
    Create {
        /// Name, unique within the network
        name: String,
        /// The network (net-...)
        #[arg(long = "network")]
        network_id: String,
        /// IPv4 CIDR inside the network's, prefix length up to 29
        #[arg(long)]
        cidr: String,
    },
    /// List subnets, optionally of one network.
    ///
    /// Example: canopy subnet list --network net-0123456789ab
    List {
        /// Only subnets of this network
        #[arg(long = "network")]
        network_id: Option<String>,
    },
    /// Show a subnet.
    ///
    /// Example: canopy subnet show sub-0123456789ab
    Show {
        /// Subnet id (sub-...)
        id: String,
    },
    /// Delete a subnet; refused while nodes are attached.
    ///
    /// Example: canopy subnet delete sub-0123456789ab
    Delete {
        /// Subnet id (sub-...)
        id: String,
    },
}

/// Hosts (operator): where agents run; each gets a /72 substrate locator.
#[derive(Debug, Args)]
pub struct HostCmd {
    #[command(flatten)]
    api: ApiOpts,
    #[command(subcommand)]
    verb: HostVerb,
}

#[derive(Debug, Subcommand)]
enum HostVerb {
    /// Register a host (admin); prints the agent's credential once.
    ///
    /// Example: canopy host create rack1-h01 --token $ADMIN_TOKEN
    Create {
        /// Unique name
        name: String,
    },
    /// List hosts (admin).
    ///
    /// Example: canopy host list
    List,
    /// Show a host.
    ///
    /// Example: canopy host show host-0123456789ab
    Show {
        /// Host id (host-...)
        id: String,
    },
    /// Delete a host (admin); refused while it has nodes. Revokes its agent credential.
    ///
    /// Example: canopy host delete host-0123456789ab
    Delete {
        /// Host id (host-...)
        id: String,
    },
}

/// Nodes (VMs): attached to a subnet on a host, with a virtual IPv4 address and a MAC.
#[derive(Debug, Args)]
pub struct NodeCmd {
    #[command(flatten)]
    api: ApiOpts,
    #[command(subcommand)]
    verb: NodeVerb,
}

#[derive(Debug, Subcommand)]
enum NodeVerb {
    /// Create a node in a subnet.
    ///
    /// Without --vip it gets the lowest free address; without --host, the host with the
    /// fewest nodes.
    ///
    /// Example: canopy node create vm1 --subnet sub-0123456789ab --vip 10.0.1.10
    Create {
        /// Name, unique within the network
        name: String,
        /// The subnet (sub-...)
        #[arg(long = "subnet")]
        subnet_id: String,
        /// Host to place it on (host-...)
        #[arg(long = "host")]
        host_id: Option<String>,
        /// Virtual IPv4 address inside the subnet
        #[arg(long)]
        vip: Option<String>,
    },
    /// List nodes, optionally of one network, subnet or host.
    ///
    /// Example: canopy node list --subnet sub-0123456789ab
    List {
        /// Only nodes of this network
        #[arg(long = "network")]
        network_id: Option<String>,
        /// Only nodes of this subnet
        #[arg(long = "subnet")]
        subnet_id: Option<String>,
        /// Only nodes on this host
        #[arg(long = "host")]
        host_id: Option<String>,
    },
    /// Show a node.
    ///
    /// Example: canopy node show node-0123456789ab
    Show {
        /// Node id (node-...)
        id: String,
    },
    /// Delete (detach) a node; its address becomes free.
    ///
    /// Example: canopy node delete node-0123456789ab
    Delete {
        /// Node id (node-...)
        id: String,
    },
}

/// Edge pools (operator): the shared ways out of the virtual networks.
#[derive(Debug, Args)]
pub struct PoolCmd {
    #[command(flatten)]
    api: ApiOpts,
    #[command(subcommand)]
    verb: PoolVerb,
}

/// Selection mode of a pool.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum PoolMode {
    Direct,
    Anycast,
}

/// A field hashed by direct-mode selection.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum HashField {
    Network,
    SrcIp,
    DstIp,
    Protocol,
    SrcPort,
    DstPort,
}

#[derive(Debug, Subcommand)]
enum PoolVerb {
    /// Create an edge pool (admin).
    ///
    /// NAT pools (the default) need at least one public range, inside 192.0.2.0/24,
    /// 198.51.100.0/24 or 203.0.113.0/24 in the lab.
    ///
    /// Example: canopy pool create internet --public-range 198.51.100.0/28 --hash-fields src-ip,dst-ip
    Create {
        /// Unique name
        name: String,
        /// Selection mode (default direct)
        #[arg(long, value_enum)]
        mode: Option<PoolMode>,
        /// Fields hashed in direct mode, comma-separated (default: all six)
        #[arg(long, value_enum, value_delimiter = ',')]
        hash_fields: Vec<HashField>,
        /// Weight selection by the edges' reported load
        #[arg(long)]
        load_aware: bool,
        /// Split large flows across members (only with --no-nat)
        #[arg(long)]
        split_large_flows: bool,
        /// Do not NAT (e.g. a VPN-like pool)
        #[arg(long)]
        no_nat: bool,
        /// A public IPv4 range (repeat for several)
        #[arg(long = "public-range")]
        public_ranges: Vec<String>,
        /// Ports per NAT port block, 1..=64512 (default 1024)
        #[arg(long)]
        port_block_size: Option<u32>,
    },
    /// List edge pools.
    ///
    /// Example: canopy pool list
    List,
    /// Show an edge pool.
    ///
    /// Example: canopy pool show pool-0123456789ab
    Show {
        /// Pool id (pool-...)
        id: String,
    },
    /// Delete an edge pool (admin); refused while it has edges or routes.
    ///
    /// Example: canopy pool delete pool-0123456789ab
    Delete {
        /// Pool id (pool-...)
        id: String,
    },
}

/// Edges (operator): members of an edge pool.
#[derive(Debug, Args)]
pub struct EdgeCmd {
    #[command(flatten)]
    api: ApiOpts,
    #[command(subcommand)]
    verb: EdgeVerb,
}

/// Administrative state of an edge.
#[derive(Debug, Clone, Copy, ValueEnum)]
enum EdgeState {
    Active,
    Draining,
    Down,
}

#[derive(Debug, Subcommand)]
enum EdgeVerb {
    /// Add an edge to a pool (admin); prints the edge's credential once.
    ///
    /// Example: canopy edge create edge1 --pool pool-0123456789ab --weight 200
    Create {
        /// Unique name
        name: String,
        /// The pool (pool-...)
        #[arg(long = "pool")]
        pool_id: String,
        /// Selection weight 1..=10000 (default 100)
        #[arg(long)]
        weight: Option<u32>,
        /// Initial state (default active)
        #[arg(long, value_enum)]
        state: Option<EdgeState>,
    },
    /// List edges (admin), optionally of one pool.
    ///
    /// Example: canopy edge list --pool pool-0123456789ab
    List {
        /// Only edges of this pool
        #[arg(long = "pool")]
        pool_id: Option<String>,
    },
    /// Show an edge.
    ///
    /// Example: canopy edge show edge-0123456789ab
    Show {
        /// Edge id (edge-...)
        id: String,
    },
    /// Change an edge's weight or state (admin).
    ///
    /// Example: canopy edge update edge-0123456789ab --state draining
    Update {
        /// Edge id (edge-...)
        id: String,
        /// New weight 1..=10000
        #[arg(long)]
        weight: Option<u32>,
        /// New state
        #[arg(long, value_enum)]
        state: Option<EdgeState>,
    },
    /// Remove an edge (admin); revokes its credential.
    ///
    /// Example: canopy edge delete edge-0123456789ab
    Delete {
        /// Edge id (edge-...)
        id: String,
    },
}

/// Where a virtual address lives: node, MAC, host locator and substrate address.
///
/// Allowed for the admin, an agent whose host has a node in the network, and an edge
/// whose pool the network routes to; anything else answers "not found".
///
/// Example: canopy resolve --network net-0123456789ab 10.0.1.10
#[derive(Debug, Args)]
pub struct ResolveCmd {
    #[command(flatten)]
    api: ApiOpts,
    /// The network (net-...)
    #[arg(long = "network")]
    network_id: String,
    /// The virtual IPv4 address
    ip: String,
}

// ---------------------------------------------------------------------------------------
// Running
// ---------------------------------------------------------------------------------------

/// What a verb prints.
pub(crate) enum Answer {
    /// One object (shown as `key  value` lines).
    One(Value, &'static [Col]),
    /// A list (shown as a table).
    Many(Value, &'static [Col]),
    /// Nothing to show beyond a confirmation.
    Done(String),
}

/// A table column: header and the JSON key it shows.
pub(crate) struct Col(pub(crate) &'static str, pub(crate) &'static str);

const TENANT: &[Col] = &[
    Col("ID", "id"),
    Col("NAME", "name"),
    Col("CREATED", "created_at"),
];
const TOKEN: &[Col] = &[
    Col("ID", "id"),
    Col("TENANT", "tenant_id"),
    Col("NAME", "name"),
    Col("CREATED", "created_at"),
];
const NETWORK: &[Col] = &[
    Col("ID", "id"),
    Col("NAME", "name"),
    Col("CIDR", "cidr"),
    Col("VNI", "vni"),
    Col("TENANT", "tenant_id"),
    Col("CREATED", "created_at"),
];
const SUBNET: &[Col] = &[
    Col("ID", "id"),
    Col("NAME", "name"),
    Col("NETWORK", "network_id"),
    Col("CIDR", "cidr"),
    Col("GATEWAY", "gateway"),
    Col("CREATED", "created_at"),
];
const HOST: &[Col] = &[
    Col("ID", "id"),
    Col("NAME", "name"),
    Col("LOCATOR", "locator"),
    Col("CREATED", "created_at"),
];
const NODE: &[Col] = &[
    Col("ID", "id"),
    Col("NAME", "name"),
    Col("VIP", "vip"),
    Col("MAC", "mac"),
    Col("SUBNET", "subnet_id"),
    Col("HOST", "host_id"),
];
const POOL: &[Col] = &[
    Col("ID", "id"),
    Col("NAME", "name"),
    Col("MODE", "mode"),
    Col("NAT", "nat"),
    Col("PUBLIC RANGES", "public_ranges"),
    Col("HASH FIELDS", "hash_fields"),
];
const EDGE: &[Col] = &[
    Col("ID", "id"),
    Col("NAME", "name"),
    Col("POOL", "pool_id"),
    Col("LOCATOR", "locator"),
    Col("WEIGHT", "weight"),
    Col("STATE", "state"),
    Col("LAST REPORT", "last_report"),
];
const RESOLUTION: &[Col] = &[
    Col("NODE", "node_id"),
    Col("MAC", "mac"),
    Col("LOCATOR", "locator"),
    Col("VNI", "vni"),
    Col("SUBSTRATE ADDRESS", "substrate_address"),
];

/// The resource verbs, as `main` dispatches them.
pub enum Verb {
    Tenant(TenantCmd),
    Network(NetworkCmd),
    Subnet(SubnetCmd),
    Host(HostCmd),
    Node(NodeCmd),
    Pool(PoolCmd),
    Edge(EdgeCmd),
    Resolve(ResolveCmd),
    Route(crate::policy::RouteCmd),
    Peering(crate::policy::PeeringCmd),
    Eip(crate::policy::EipCmd),
    PortBlock(crate::policy::PortBlockCmd),
    SecurityGroup(crate::policy::SecurityGroupCmd),
    Acl(crate::policy::AclCmd),
}

/// Runs one verb and prints its answer on stdout.
pub fn run(verb: Verb) -> Result<(), ClientError> {
    let (opts, answer) = match verb {
        Verb::Tenant(c) => {
            let a = tenant(&client(&c.api)?, c.verb)?;
            (c.api, a)
        }
        Verb::Network(c) => {
            let a = network(&client(&c.api)?, c.verb)?;
            (c.api, a)
        }
        Verb::Subnet(c) => {
            let a = subnet(&client(&c.api)?, c.verb)?;
            (c.api, a)
        }
        Verb::Host(c) => {
            let a = host(&client(&c.api)?, c.verb)?;
            (c.api, a)
        }
        Verb::Node(c) => {
            let a = node(&client(&c.api)?, c.verb)?;
            (c.api, a)
        }
        Verb::Pool(c) => {
            let a = pool(&client(&c.api)?, c.verb)?;
            (c.api, a)
        }
        Verb::Edge(c) => {
            let a = edge(&client(&c.api)?, c.verb)?;
            (c.api, a)
        }
        Verb::Resolve(c) => {
            let body = obj([("network_id", s(&c.network_id)), ("ip", s(&c.ip))]);
            let a = Answer::One(client(&c.api)?.post("/v1/resolve", &body)?, RESOLUTION);
            (c.api, a)
        }
        Verb::Route(c) => (
            c.api.clone(),
            crate::policy::route(&client(&c.api)?, c.verb)?,
        ),
        Verb::Peering(c) => (
            c.api.clone(),
            crate::policy::peering(&client(&c.api)?, c.verb)?,
        ),
        Verb::Eip(c) => (c.api.clone(), crate::policy::eip(&client(&c.api)?, c.verb)?),
        Verb::PortBlock(c) => (
            c.api.clone(),
            crate::policy::port_block(&client(&c.api)?, c.verb)?,
        ),
        Verb::SecurityGroup(c) => (
            c.api.clone(),
            crate::policy::security_group(&client(&c.api)?, c.verb)?,
        ),
        Verb::Acl(c) => (c.api.clone(), crate::policy::acl(&client(&c.api)?, c.verb)?),
    };
    print!("{}", render(&answer, opts.output));
    Ok(())
}

pub(crate) fn client(opts: &ApiOpts) -> Result<ApiClient, ClientError> {
    ApiClient::new(&opts.url, opts.token.as_deref())
}

fn tenant(c: &ApiClient, verb: TenantVerb) -> Result<Answer, ClientError> {
    Ok(match verb {
        TenantVerb::Create { name } => {
            Answer::One(c.post("/v1/tenants", &obj([("name", s(&name))]))?, TENANT)
        }
        TenantVerb::List => Answer::Many(c.get("/v1/tenants", &[])?, TENANT),
        TenantVerb::Show { id } => Answer::One(c.get(&path("tenants", &id), &[])?, TENANT),
        TenantVerb::Delete { id } => {
            c.delete(&path("tenants", &id))?;
            Answer::Done(format!("deleted tenant {id}"))
        }
        TenantVerb::Token { verb } => match verb {
            TokenVerb::Create { tenant_id, name } => {
                let body = obj([("name", name.as_deref().map(s).unwrap_or(Value::Null))]);
                let url = format!("{}/tokens", path("tenants", &tenant_id));
                Answer::One(c.post(&url, &body)?, TOKEN)
            }
            TokenVerb::List { tenant_id } => {
                let url = format!("{}/tokens", path("tenants", &tenant_id));
                Answer::Many(c.get(&url, &[])?, TOKEN)
            }
            TokenVerb::Delete {
                tenant_id,
                token_id,
            } => {
                let url = format!(
                    "{}/tokens/{}",
                    path("tenants", &tenant_id),
                    segment(&token_id)
                );
                c.delete(&url)?;
                Answer::Done(format!("deleted token {token_id}"))
            }
        },
    })
}

fn network(c: &ApiClient, verb: NetworkVerb) -> Result<Answer, ClientError> {
    Ok(match verb {
        NetworkVerb::Create {
            name,
            cidr,
            tenant_id,
        } => {
            let body = obj([
                ("name", s(&name)),
                ("cidr", s(&cidr)),
                ("tenant_id", opt(tenant_id.as_deref())),
            ]);
            Answer::One(c.post("/v1/networks", &body)?, NETWORK)
        }
        NetworkVerb::List => Answer::Many(c.get("/v1/networks", &[])?, NETWORK),
        NetworkVerb::Show { id } => Answer::One(c.get(&path("networks", &id), &[])?, NETWORK),
        NetworkVerb::Delete { id } => {
            c.delete(&path("networks", &id))?;
            Answer::Done(format!("deleted network {id}"))
        }
    })
}

fn subnet(c: &ApiClient, verb: SubnetVerb) -> Result<Answer, ClientError> {
    Ok(match verb {
        SubnetVerb::Create {
            name,
            network_id,
            cidr,
        } => {
            let body = obj([
                ("network_id", s(&network_id)),
                ("name", s(&name)),
                ("cidr", s(&cidr)),
            ]);
            Answer::One(c.post("/v1/subnets", &body)?, SUBNET)
        }
        SubnetVerb::List { network_id } => {
            let q = [("network_id", network_id.as_deref())];
            Answer::Many(c.get("/v1/subnets", &q)?, SUBNET)
        }
        SubnetVerb::Show { id } => Answer::One(c.get(&path("subnets", &id), &[])?, SUBNET),
        SubnetVerb::Delete { id } => {
            c.delete(&path("subnets", &id))?;
            Answer::Done(format!("deleted subnet {id}"))
        }
    })
}

fn host(c: &ApiClient, verb: HostVerb) -> Result<Answer, ClientError> {
    Ok(match verb {
        HostVerb::Create { name } => {
            Answer::One(c.post("/v1/hosts", &obj([("name", s(&name))]))?, HOST)
        }
        HostVerb::List => Answer::Many(c.get("/v1/hosts", &[])?, HOST),
        HostVerb::Show { id } => Answer::One(c.get(&path("hosts", &id), &[])?, HOST),
        HostVerb::Delete { id } => {
            c.delete(&path("hosts", &id))?;
            Answer::Done(format!("deleted host {id}"))
        }
    })
}

fn node(c: &ApiClient, verb: NodeVerb) -> Result<Answer, ClientError> {
    Ok(match verb {
        NodeVerb::Create {
            name,
            subnet_id,
            host_id,
            vip,
        } => {
            let body = obj([
                ("subnet_id", s(&subnet_id)),
                ("name", s(&name)),
                ("host_id", opt(host_id.as_deref())),
                ("vip", opt(vip.as_deref())),
            ]);
            Answer::One(c.post("/v1/nodes", &body)?, NODE)
        }
        NodeVerb::List {
            network_id,
            subnet_id,
            host_id,
        } => {
            let q = [
                ("network_id", network_id.as_deref()),
                ("subnet_id", subnet_id.as_deref()),
                ("host_id", host_id.as_deref()),
            ];
            Answer::Many(c.get("/v1/nodes", &q)?, NODE)
        }
        NodeVerb::Show { id } => Answer::One(c.get(&path("nodes", &id), &[])?, NODE),
        NodeVerb::Delete { id } => {
            c.delete(&path("nodes", &id))?;
            Answer::Done(format!("deleted node {id}"))
        }
    })
}

fn pool(c: &ApiClient, verb: PoolVerb) -> Result<Answer, ClientError> {
    Ok(match verb {
        PoolVerb::Create {
            name,
            mode,
            hash_fields,
            load_aware,
            split_large_flows,
            no_nat,
            public_ranges,
            port_block_size,
        } => {
            let hash = (!hash_fields.is_empty())
                .then(|| Value::Array(hash_fields.iter().map(|f| s(&value_name(f))).collect()));
            let body = obj([
                ("name", s(&name)),
                ("mode", opt(mode.map(|m| value_name(&m)).as_deref())),
                ("hash_fields", hash.unwrap_or(Value::Null)),
                ("load_aware", flag(load_aware)),
                ("split_large_flows", flag(split_large_flows)),
                (
                    "nat",
                    if no_nat {
                        Value::Bool(false)
                    } else {
                        Value::Null
                    },
                ),
                (
                    "public_ranges",
                    if public_ranges.is_empty() {
                        Value::Null
                    } else {
                        Value::Array(public_ranges.iter().map(|r| s(r)).collect())
                    },
                ),
                (
                    "port_block_size",
                    port_block_size.map_or(Value::Null, Value::from),
                ),
            ]);
            Answer::One(c.post("/v1/edge-pools", &body)?, POOL)
        }
        PoolVerb::List => Answer::Many(c.get("/v1/edge-pools", &[])?, POOL),
        PoolVerb::Show { id } => Answer::One(c.get(&path("edge-pools", &id), &[])?, POOL),
        PoolVerb::Delete { id } => {
            c.delete(&path("edge-pools", &id))?;
            Answer::Done(format!("deleted pool {id}"))
        }
    })
}

fn edge(c: &ApiClient, verb: EdgeVerb) -> Result<Answer, ClientError> {
    Ok(match verb {
        EdgeVerb::Create {
            name,
            pool_id,
            weight,
            state,
        } => {
            let body = obj([
                ("pool_id", s(&pool_id)),
                ("name", s(&name)),
                ("weight", weight.map_or(Value::Null, Value::from)),
                ("state", opt(state.map(|x| value_name(&x)).as_deref())),
            ]);
            Answer::One(c.post("/v1/edges", &body)?, EDGE)
        }
        EdgeVerb::List { pool_id } => Answer::Many(
            c.get("/v1/edges", &[("pool_id", pool_id.as_deref())])?,
            EDGE,
        ),
        EdgeVerb::Show { id } => Answer::One(c.get(&path("edges", &id), &[])?, EDGE),
        EdgeVerb::Update { id, weight, state } => {
            let body = obj([
                ("weight", weight.map_or(Value::Null, Value::from)),
                ("state", opt(state.map(|x| value_name(&x)).as_deref())),
            ]);
            Answer::One(c.patch(&path("edges", &id), &body)?, EDGE)
        }
        EdgeVerb::Delete { id } => {
            c.delete(&path("edges", &id))?;
            Answer::Done(format!("deleted edge {id}"))
        }
    })
}

// ---------------------------------------------------------------------------------------
// JSON helpers
// ---------------------------------------------------------------------------------------

pub(crate) fn s(v: &str) -> Value {
    Value::String(v.to_string())
}

pub(crate) fn opt(v: Option<&str>) -> Value {
    v.map_or(Value::Null, s)
}

fn flag(set: bool) -> Value {
    if set {
        Value::Bool(true)
    } else {
        Value::Null
    }
}

/// A JSON object of the pairs whose value is not null: optional fields the user did not
/// give are left to the manager's defaults.
pub(crate) fn obj<const N: usize>(pairs: [(&str, Value); N]) -> Value {
    let mut m = Map::new();
    for (k, v) in pairs {
        if !v.is_null() {
            m.insert(k.to_string(), v);
        }
    }
    Value::Object(m)
}

/// The kebab-case name clap shows, turned into the API's snake_case (`src-ip` -> `src_ip`).
fn value_name<T: ValueEnum>(v: &T) -> String {
    v.to_possible_value()
        .map(|p| p.get_name().replace('-', "_"))
        .unwrap_or_default()
}

/// `/v1/<collection>/<id>` with the id percent-encoded.
pub(crate) fn path(collection: &str, id: &str) -> String {
    format!("/v1/{collection}/{}", segment(id))
}

/// Percent-encodes everything but unreserved characters, so that an id cannot change
/// the path.
pub(crate) fn segment(id: &str) -> String {
    let mut out = String::with_capacity(id.len());
    for b in id.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// Rendering
// ---------------------------------------------------------------------------------------

fn render(answer: &Answer, output: Output) -> String {
    match (answer, output) {
        (Answer::Done(msg), Output::Table) => format!("{msg}\n"),
        (Answer::Done(_), Output::Json) => String::new(),
        (Answer::One(v, _) | Answer::Many(v, _), Output::Json) => {
            let mut s = serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string());
            s.push('\n');
            s
        }
        (Answer::One(v, cols), Output::Table) => render_one(&crate::policy::rules_as_text(v), cols),
        (Answer::Many(v, cols), Output::Table) => {
            match crate::policy::rules_as_text(v).as_array() {
                Some(rows) => render_table(rows, cols),
                None => render_one(v, cols),
            }
        }
    }
}

/// A table with a header line; columns padded to their widest cell.
fn render_table(rows: &[Value], cols: &[Col]) -> String {
    let mut cells: Vec<Vec<String>> = vec![cols.iter().map(|c| c.0.to_string()).collect()];
    for row in rows {
        cells.push(cols.iter().map(|c| cell(row.get(c.1))).collect());
    }
    let widths: Vec<usize> = (0..cols.len())
        .map(|i| {
            cells
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in &cells {
        let mut line = String::new();
        for (i, c) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(c);
            } else {
                let _ = write!(line, "{c:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// One object as `key  value` lines: the known columns first, then any other field the
/// manager sent (secrets such as a new token or credential among them).
fn render_one(v: &Value, cols: &[Col]) -> String {
    let Some(map) = v.as_object() else {
        return format!("{}\n", cell(Some(v)));
    };
    let mut lines: Vec<(String, String)> = Vec::new();
    for c in cols {
        if let Some(x) = map.get(c.1) {
            lines.push((c.1.to_string(), cell(Some(x))));
        }
    }
    for (k, x) in map {
        if !cols.iter().any(|c| c.1 == k) {
            lines.push((k.clone(), cell(Some(x))));
        }
    }
    let w = lines.iter().map(|l| l.0.len()).max().unwrap_or(0);
    let mut out = String::new();
    for (k, x) in &lines {
        let _ = writeln!(out, "{k:<w$}  {x}");
    }
    for secret in ["token", "credential"] {
        if map.contains_key(secret) {
            let _ = writeln!(out, "(the {secret} is shown only this once: keep it)");
        }
    }
    out
}

/// A JSON value as one table cell.
fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => "-".into(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Bool(b)) => if *b { "yes" } else { "no" }.into(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Array(a)) if a.is_empty() => "-".into(),
        Some(Value::Array(a)) => a
            .iter()
            .map(|x| cell(Some(x)))
            .collect::<Vec<_>>()
            .join(","),
        Some(Value::Object(m)) => m
            .iter()
            .map(|(k, x)| format!("{k}={}", cell(Some(x))))
            .collect::<Vec<_>>()
            .join(" "),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn table_pads_columns_and_shows_missing_as_dash() {
        let rows = [
            json!({"id": "ten-1", "name": "a", "created_at": "t"}),
            json!({"id": "ten-22", "name": "bbb"}),
        ];
        let t = render_table(&rows, TENANT);
        assert_eq!(
            t,
            "ID      NAME  CREATED\nten-1   a     t\nten-22  bbb   -\n"
        );
    }

    #[test]
    fn one_object_lists_extra_fields_and_flags_secrets() {
        let v =
            json!({"id": "host-1", "name": "h", "locator": "fd63::/72", "credential": "cnpa_x"});
        let out = render_one(&v, HOST);
        assert!(out.starts_with("id          host-1\n"), "{out}");
        assert!(out.contains("credential  cnpa_x\n"), "{out}");
        assert!(out.contains("shown only this once"), "{out}");
    }

    #[test]
    fn cells_render_nested_values() {
        assert_eq!(cell(Some(&json!(["a", "b"]))), "a,b");
        assert_eq!(
            cell(Some(&json!({"healthy": true, "load_percent": 4}))),
            "healthy=yes load_percent=4"
        );
        assert_eq!(cell(Some(&json!(null))), "-");
    }

    #[test]
    fn ids_cannot_escape_their_path_segment() {
        assert_eq!(path("networks", "net-0a"), "/v1/networks/net-0a");
        assert_eq!(path("networks", "../hosts"), "/v1/networks/..%2Fhosts");
    }

    #[test]
    fn enum_values_use_the_api_spelling() {
        assert_eq!(value_name(&HashField::SrcIp), "src_ip");
        assert_eq!(value_name(&EdgeState::Draining), "draining");
    }

    #[test]
    fn optional_fields_are_left_out() {
        assert_eq!(
            obj([("name", s("x")), ("vip", opt(None))]),
            json!({"name": "x"})
        );
    }
}
