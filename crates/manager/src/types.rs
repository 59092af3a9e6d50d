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
    /// Ports per NAT port block, 1..=64512 (default 1024); blocks lie in 1024..=65535.
    #[serde(default)]
    #[schema(minimum = 1, maximum = 64512)]
    pub port_block_size: Option<u32>,
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
    /// Ports per NAT port block.
    pub port_block_size: u32,
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

/// Add a route to a network's route table, or to one subnet's.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RouteCreate {
    /// The network.
    pub network_id: String,
    /// A subnet of the network: the route goes into that subnet's table, which is looked
    /// up before the network's (longest prefix wins within a table). Default: the network's.
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// Destination IPv4 CIDR (e.g. `0.0.0.0/0`), one route per destination and table, not
    /// inside the network's own CIDR (that one is the implicit `local` route).
    #[schema(
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])/([0-9]|[12][0-9]|3[0-2])$"
    )]
    pub destination: String,
    /// `pool:<edge pool id>` (internet or VPN-like pool, any tenant may use a pool),
    /// `peering:<peering id>` (a peering of this network), or `blackhole`. `local` is
    /// implicit for the network's CIDR and cannot be added.
    #[schema(pattern = "^(blackhole|local|pool:.+|peering:.+)$")]
    pub target: String,
}

/// A route of a network's (or a subnet's) route table.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Route {
    /// `rt-<12 hex>`.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Network.
    pub network_id: String,
    /// The subnet whose table holds the route; null for the network's table.
    pub subnet_id: Option<String>,
    /// Destination CIDR.
    pub destination: String,
    /// `pool:<id>`, `peering:<id>` or `blackhole`.
    pub target: String,
    /// The target pool (`pool:` targets).
    pub edge_pool_id: Option<String>,
    /// The target peering (`peering:` targets).
    pub peering_id: Option<String>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// Traffic direction of a rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Direction {
    /// Towards the node.
    Ingress,
    /// From the node.
    Egress,
}

/// A stateful allow rule of a security group.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityRule {
    /// Direction.
    pub direction: Direction,
    /// `any`, `tcp`, `udp`, `icmp` or an IP protocol number 0..=255 (default `any`).
    #[serde(default = "any_protocol")]
    #[schema(pattern = "^(any|tcp|udp|icmp|[0-9]{1,3})$")]
    pub protocol: String,
    /// First port (tcp/udp only; with `port_to`, default: all ports).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port_from: Option<u16>,
    /// Last port (tcp/udp only, >= `port_from`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port_to: Option<u16>,
    /// The remote side as an IPv4 CIDR (exactly one of this and `remote_group_id`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_cidr: Option<String>,
    /// The remote side as the nodes of a security group of the same network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_group_id: Option<String>,
}

fn any_protocol() -> String {
    "any".into()
}

/// Create a security group in a network.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupCreate {
    /// The network.
    pub network_id: String,
    /// Name, unique within the network (`default` is taken by the network's own).
    #[schema(pattern = "^[A-Za-z0-9._-]{1,64}$", min_length = 1, max_length = 64)]
    pub name: String,
    /// Allow rules (everything else is denied).
    #[serde(default)]
    #[schema(max_items = 256)]
    pub rules: Vec<SecurityRule>,
}

/// A security group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroup {
    /// `sg-<12 hex>`.
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Network.
    pub network_id: String,
    /// Name.
    pub name: String,
    /// Allow rules.
    pub rules: Vec<SecurityRule>,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// Attach a security group to a node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SecurityGroupAttach {
    /// A group of the node's network.
    pub group_id: String,
}

/// A node's membership in a security group.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SecurityGroupAttachment {
    /// `<node id>/<group id>`.
    pub id: String,
    /// The node.
    pub node_id: String,
    /// The group.
    pub group_id: String,
    /// Their network.
    pub network_id: String,
}

/// What an ACL rule does with matching packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum AclAction {
    /// Let it pass.
    Allow,
    /// Drop it.
    Deny,
}

/// A numbered, stateless rule of a subnet's network ACL; lowest number first, the first
/// match decides.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct AclRule {
    /// Order, 1..=32766, unique per direction.
    #[schema(minimum = 1, maximum = 32766)]
    pub number: u32,
    /// Allow or deny.
    pub action: AclAction,
    /// Into the subnet (`ingress`) or out of it (`egress`).
    pub direction: Direction,
    /// `any`, `tcp`, `udp`, `icmp` or an IP protocol number 0..=255 (default `any`).
    #[serde(default = "any_protocol")]
    #[schema(pattern = "^(any|tcp|udp|icmp|[0-9]{1,3})$")]
    pub protocol: String,
    /// First port (tcp/udp only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port_from: Option<u16>,
    /// Last port (tcp/udp only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 65535)]
    pub port_to: Option<u16>,
    /// The other side, IPv4 CIDR.
    pub cidr: String,
}

/// Replace a subnet's network ACL.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NetworkAclUpdate {
    /// The rules (empty: allow everything).
    #[schema(max_items = 256)]
    pub rules: Vec<AclRule>,
}

/// The network ACL of a subnet.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct NetworkAcl {
    /// The subnet id (an ACL has no id of its own).
    pub id: String,
    /// Owner.
    pub tenant_id: String,
    /// Network.
    pub network_id: String,
    /// Subnet.
    pub subnet_id: String,
    /// Rules, sorted by direction and number.
    pub rules: Vec<AclRule>,
    /// RFC 3339 time of the last change (the subnet's creation when never set).
    pub updated_at: String,
}

/// Peer two networks (the caller's `network_id` with `peer_network_id`).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PeeringCreate {
    /// The caller's network.
    pub network_id: String,
    /// The other network (of the same tenant, or of another tenant, which must accept).
    pub peer_network_id: String,
}

/// State of a peering.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum PeeringState {
    /// Waiting for the other tenant to accept.
    Pending,
    /// Usable as a route target.
    Active,
}

/// A peering between two networks with disjoint CIDRs.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Peering {
    /// `peer-<12 hex>`.
    pub id: String,
    /// The requesting tenant.
    pub tenant_id: String,
    /// Its network.
    pub network_id: String,
    /// The other tenant (the same one for a peering inside a tenant).
    pub peer_tenant_id: String,
    /// The other network.
    pub peer_network_id: String,
    /// `active` at once inside a tenant (or when the admin creates it), else `pending`
    /// until the other tenant accepts.
    pub state: PeeringState,
    /// RFC 3339 creation time.
    pub created_at: String,
}

/// Allocate an elastic IP of a pool to a tenant (admin).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ElasticIpCreate {
    /// The pool whose public ranges the address comes from.
    pub pool_id: String,
    /// The tenant that may associate it.
    pub tenant_id: String,
    /// The address; default: the lowest free one of the pool's ranges.
    #[serde(default)]
    #[schema(
        pattern = "^((25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])\\.){3}(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])$"
    )]
    pub address: Option<String>,
}

/// Associate an elastic IP with a node of the same tenant.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ElasticIpAssociate {
    /// The node (it may have one elastic IP).
    pub node_id: String,
}

/// A public address of a pool bound 1:1 to a node.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ElasticIp {
    /// `eip-<12 hex>`.
    pub id: String,
    /// The pool.
    pub pool_id: String,
    /// Owner.
    pub tenant_id: String,
    /// The public IPv4 address.
    pub address: String,
    /// The node it is associated with, if any.
    pub node_id: Option<String>,
    /// That node's network.
    pub network_id: Option<String>,
    /// That node's host.
    pub host_id: Option<String>,
    /// RFC 3339 allocation time.
    pub created_at: String,
}

/// Ask for a NAT port block for a node.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PortBlockCreate {
    /// The NAT pool; default: the only NAT pool the node's route tables target.
    #[serde(default)]
    pub pool_id: Option<String>,
}

/// A (public address, port range) of a NAT pool held by a node. A node's blocks never
/// share a port, so the port alone says which block (and node) a packet belongs to.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortBlock {
    /// `pb-<12 hex>`.
    pub id: String,
    /// The pool.
    pub pool_id: String,
    /// The node.
    pub node_id: String,
    /// The node's tenant.
    pub tenant_id: String,
    /// The node's network.
    pub network_id: String,
    /// The node's host.
    pub host_id: String,
    /// Public IPv4 address.
    pub address: String,
    /// First port.
    pub port_first: u32,
    /// Last port (inclusive).
    pub port_last: u32,
    /// RFC 3339 assignment time.
    pub created_at: String,
}

/// Query of `GET /v1/port-blocks/lookup`.
#[derive(Debug, Clone, Default, Serialize, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct PortBlockLookup {
    /// Public IPv4 address.
    pub address: String,
    /// Port.
    #[param(minimum = 0, maximum = 65535)]
    pub port: u32,
    /// RFC 3339 time (e.g. `2026-11-25T22:00:00Z`); default: now.
    #[serde(default)]
    pub at: Option<String>,
}

/// One assignment of a port block, from the log (kept after release).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct PortBlockRecord {
    /// The block.
    pub block_id: String,
    /// The pool.
    pub pool_id: String,
    /// Who held it.
    pub node_id: String,
    /// Its tenant.
    pub tenant_id: String,
    /// Its network.
    pub network_id: String,
    /// Its virtual address.
    pub vip: String,
    /// Public address.
    pub address: String,
    /// First port.
    pub port_first: u32,
    /// Last port.
    pub port_last: u32,
    /// RFC 3339 assignment time.
    pub assigned_at: String,
    /// RFC 3339 release time; null while held.
    pub released_at: Option<String>,
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
    /// Only nodes of this subnet, or routes of its table.
    #[serde(default)]
    pub subnet_id: Option<String>,
    /// Only nodes on this host.
    #[serde(default)]
    pub host_id: Option<String>,
}
