//! Request and response bodies of the REST API (`/v1`). Requests reject unknown fields.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /healthz`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Health {
    /// Always `ok` with status 200.
    pub status: String,
    /// Current store revision.
    pub revision: i64,
}

/// Create a tenant (admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TenantCreate {
    /// Unique name, 1..=64 characters of `[A-Za-z0-9._-]`.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub name: String,
}

/// A tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Tenant {
    /// `ten-<12 hex>`.
    pub id: String,
    /// Unique name.
    pub name: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// Create an API token for a tenant.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TokenCreate {
    /// A label for the token (default `default`).
    #[serde(default)]
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub name: Option<String>,
}

/// A tenant API token as listed (the secret is never shown again).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenInfo {
    /// `tok-<12 hex>`.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Label.
    pub name: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// A newly created tenant API token: `token` is shown only in this response.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct TokenCreated {
    /// `tok-<12 hex>`.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Label.
    pub name: String,
    /// The bearer token; only its SHA-256 is stored.
    pub token: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// Create a network.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkCreate {
    /// Name, unique within the tenant.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub name: String,
    /// IPv4 CIDR, prefix length 16..=28, no host bits set.
    #[schema(
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/(1[6-9]|2[0-8])$"
    )]
    pub cidr: String,
    /// Owner; required for the admin, optional (and must be the caller) for a tenant.
    #[serde(default)]
    pub tenant_id: Option<String>,
}

/// A virtual network.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Network {
    /// `net-<12 hex>`.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Name.
    pub name: String,
    /// IPv4 CIDR.
    pub cidr: String,
    /// The 24-bit network id carried in substrate addresses, unique, never reused.
    pub vni: u32,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// Create a subnet.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SubnetCreate {
    /// The network it belongs to.
    pub network_id: String,
    /// Name, unique within the network.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub name: String,
    /// IPv4 CIDR inside the network's, prefix length up to 29, overlapping no other subnet.
    #[schema(
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/(1[6-9]|2[0-9])$"
    )]
    pub cidr: String,
}

/// A subnet.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Subnet {
    /// `sub-<12 hex>`.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Network.
    pub network_id: String,
    /// Name.
    pub name: String,
    /// IPv4 CIDR.
    pub cidr: String,
    /// The virtual router's address (`.1`).
    pub gateway: String,
    /// The virtual router's MAC on this subnet.
    pub gateway_mac: String,
    /// Addresses never given to nodes: network, gateway, broadcast.
    pub reserved: Vec<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// Register a host (admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HostCreate {
    /// Unique name.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub name: String,
}

/// A host: where an agent runs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Host {
    /// `host-<12 hex>`.
    pub id: String,
    /// Name.
    pub name: String,
    /// The host's /72 substrate locator, e.g. `fd63:6e73::100:0:0:0/72`.
    pub locator: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// A newly registered host: `credential` (the agent's bearer token) is shown only here.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct HostCreated {
    /// `host-<12 hex>`.
    pub id: String,
    /// Name.
    pub name: String,
    /// The host's /72 substrate locator.
    pub locator: String,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// The agent's bearer token.
    pub credential: String,
}

/// Create a node (VM).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeCreate {
    /// Subnet to attach to.
    pub subnet_id: String,
    /// Name, unique within the network.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub name: String,
    /// Host to place it on; default: the host with the fewest nodes.
    #[serde(default)]
    pub host_id: Option<String>,
    /// Virtual IPv4 address; default: the lowest free one in the subnet.
    #[serde(default)]
    #[schema(
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$"
    )]
    pub vip: Option<String>,
}

/// A node (VM) attached to a subnet on a host.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Node {
    /// `node-<12 hex>`.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Network.
    pub network_id: String,
    /// Subnet.
    pub subnet_id: String,
    /// Host.
    pub host_id: String,
    /// Name.
    pub name: String,
    /// Virtual IPv4 address.
    pub vip: String,
    /// Locally administered MAC `02:<network id, 3 bytes>:<low 16 bits of the VIP>`.
    pub mac: String,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// How agents choose an edge of a pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// The sending agent picks the member (consistent hash).
    Direct,
    /// Agents send to the pool's anycast locator and the fabric picks.
    Anycast,
}

/// A field that direct-mode selection hashes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum HashField {
    /// Network id.
    Network,
    /// Source IP.
    SrcIp,
    /// Destination IP.
    DstIp,
    /// IP protocol.
    Protocol,
    /// Source port.
    SrcPort,
    /// Destination port.
    DstPort,
}

/// Create an edge pool (admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgePoolCreate {
    /// Unique name.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub name: String,
    /// Selection mode (default `direct`).
    #[serde(default)]
    pub mode: Option<PoolMode>,
    /// Fields hashed in direct mode (default: all six), no duplicates.
    #[serde(default)]
    #[schema(min_items = 1, max_items = 6)]
    pub hash_fields: Option<Vec<HashField>>,
    /// Weight selection by reported load (default false).
    #[serde(default)]
    pub load_aware: Option<bool>,
    /// Split large flows across members; only without NAT (default false).
    #[serde(default)]
    pub split_large_flows: Option<bool>,
    /// Whether the pool NATs to its public ranges (default true).
    #[serde(default)]
    pub nat: Option<bool>,
    /// Public IPv4 ranges, inside 192.0.2.0/24, 198.51.100.0/24 or 203.0.113.0/24 and
    /// overlapping no other pool's.
    #[serde(default)]
    pub public_ranges: Vec<String>,
}

/// A pool of edges.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EdgePool {
    /// `pool-<12 hex>`.
    pub id: String,
    /// Name.
    pub name: String,
    /// Selection mode.
    pub mode: PoolMode,
    /// The anycast locator (anycast mode only).
    pub anycast_locator: Option<String>,
    /// Hashed fields.
    pub hash_fields: Vec<HashField>,
    /// Load-aware selection.
    pub load_aware: bool,
    /// Large-flow splitting.
    pub split_large_flows: bool,
    /// NAT on/off.
    pub nat: bool,
    /// Public ranges.
    pub public_ranges: Vec<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// Administrative state of an edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum EdgeState {
    /// Takes new flows.
    Active,
    /// Keeps its flows, takes no new ones.
    Draining,
    /// Out of the pool.
    Down,
}

/// Add an edge to a pool (admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeCreate {
    /// The pool.
    pub pool_id: String,
    /// Unique name.
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub name: String,
    /// Selection weight 1..=10000 (default 100).
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    pub weight: Option<u32>,
    /// Initial state (default `active`).
    #[serde(default)]
    pub state: Option<EdgeState>,
}

/// Change an edge's weight or state (admin).
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeUpdate {
    /// New weight 1..=10000.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 10000)]
    pub weight: Option<u32>,
    /// New state.
    #[serde(default)]
    pub state: Option<EdgeState>,
}

/// An edge device.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Edge {
    /// `edge-<12 hex>`.
    pub id: String,
    /// Its pool.
    pub pool_id: String,
    /// Name.
    pub name: String,
    /// Its /72 substrate locator.
    pub locator: String,
    /// Selection weight.
    pub weight: u32,
    /// State.
    pub state: EdgeState,
    /// The edge's last health and load report, if it sent one.
    pub last_report: Option<EdgeReport>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// A health and load report, as an edge sends it.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EdgeReportRequest {
    /// Whether the edge can carry traffic.
    pub healthy: bool,
    /// Load in percent of capacity, 0..=100.
    #[schema(minimum = 0, maximum = 100)]
    pub load_percent: u32,
}

/// An edge's last report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EdgeReport {
    /// Whether the edge said it can carry traffic.
    pub healthy: bool,
    /// Load in percent of capacity.
    pub load_percent: u32,
    /// RFC 3339 time the manager received it.
    pub at: String,
}

/// A newly added edge: `credential` (the edge's bearer token) is shown only here.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct EdgeCreated {
    /// `edge-<12 hex>`.
    pub id: String,
    /// Its pool.
    pub pool_id: String,
    /// Name.
    pub name: String,
    /// Its /72 substrate locator.
    pub locator: String,
    /// Selection weight.
    pub weight: u32,
    /// State.
    pub state: EdgeState,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// The edge's bearer token.
    pub credential: String,
}

/// Where a route sends traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum RouteTarget {
    /// To an edge pool (`edge_pool_id`).
    EdgePool,
    /// Dropped.
    Blackhole,
}

/// Add a route to a network.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteCreate {
    /// The network.
    pub network_id: String,
    /// Destination IPv4 CIDR (e.g. `0.0.0.0/0`), one route per destination.
    #[schema(
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/([0-9]|[12][0-9]|3[0-2])$"
    )]
    pub destination: String,
    /// Target kind.
    pub target: RouteTarget,
    /// The pool, for `edge_pool` targets (and only for them).
    #[serde(default)]
    pub edge_pool_id: Option<String>,
}

/// A route of a network.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Route {
    /// `rt-<12 hex>`.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Network.
    pub network_id: String,
    /// Destination CIDR.
    pub destination: String,
    /// Target kind.
    pub target: RouteTarget,
    /// Target pool.
    pub edge_pool_id: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// Resolve a virtual address (agents, edges, admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ResolveRequest {
    /// The network (`net-<12 hex>`).
    pub network_id: String,
    /// The virtual IPv4 address.
    #[schema(
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$"
    )]
    pub ip: String,
}

/// Where a virtual address lives.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Resolution {
    /// The node that has the address.
    pub node_id: String,
    /// Its MAC.
    pub mac: String,
    /// Its host's /72 locator.
    pub locator: String,
    /// The 24-bit network id.
    pub vni: u32,
    /// The full substrate address `locator | network id | ip`.
    pub substrate_address: String,
}

/// Counters (admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Stats {
    /// Current store revision.
    pub revision: i64,
    /// Resolutions answered.
    pub resolve_ok: u64,
    /// Authorised resolutions of an address no node has.
    pub resolve_not_found: u64,
    /// Resolutions refused by authorisation.
    pub resolve_refused: u64,
}

/// Filters for listing subnets, nodes and routes.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListFilter {
    /// Only objects of this network.
    #[serde(default)]
    pub network_id: Option<String>,
    /// Only nodes of this subnet.
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// Only nodes on this host.
    #[serde(default)]
    pub host_id: Option<String>,
}
