-- Canopy manager schema, version 2: route tables (per network or per subnet, targets
-- pool:<id>, peering:<id>, blackhole), peerings (the objects peering routes point at),
-- elastic IPs and NAT port blocks with their RFC 7422-style assignment log.

-- Routes get a subnet scope and a peering target. SQLite cannot drop the version-1
-- UNIQUE (network_id, destination), so the table is rebuilt (same rows, same ids).
CREATE TABLE routes_v2 (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES networks (id),
    -- '' for the network's table, else the subnet id (NOT NULL so that UNIQUE holds).
    table_key TEXT NOT NULL,
    subnet_id TEXT REFERENCES subnets (id),
    destination TEXT NOT NULL,
    target TEXT NOT NULL,
    edge_pool_id TEXT REFERENCES edge_pools (id),
    peering_id TEXT,
    created_at BIGINT NOT NULL,
    UNIQUE (network_id, table_key, destination)
);
INSERT INTO routes_v2 (id, tenant_id, network_id, table_key, subnet_id, destination, target, edge_pool_id, peering_id, created_at)
    SELECT id, tenant_id, network_id, '', NULL, destination,
           CASE WHEN target = 'edge_pool' THEN 'pool:' || edge_pool_id ELSE target END,
           edge_pool_id, NULL, created_at
    FROM routes;
DROP TABLE routes;
ALTER TABLE routes_v2 RENAME TO routes;
CREATE INDEX routes_pool ON routes (edge_pool_id, network_id);
CREATE INDEX routes_peering ON routes (peering_id);
CREATE INDEX routes_subnet ON routes (subnet_id);

-- Peerings between two networks: active at once within a tenant, pending until the
-- other tenant accepts otherwise.
CREATE TABLE peerings (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES networks (id),
    peer_tenant_id TEXT NOT NULL,
    peer_network_id TEXT NOT NULL REFERENCES networks (id),
    state TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (network_id, peer_network_id)
);
CREATE INDEX peerings_peer ON peerings (peer_network_id);

-- NAT port blocks: ports per block (1..=64512; blocks lie within 1024..=65535).
ALTER TABLE edge_pools ADD COLUMN port_block_size BIGINT NOT NULL DEFAULT 1024;

-- Elastic IPs: a public address of a pool, given to a tenant, bound 1:1 to a node.
CREATE TABLE elastic_ips (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES edge_pools (id),
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    address TEXT NOT NULL,
    address_num BIGINT NOT NULL UNIQUE,
    node_id TEXT UNIQUE REFERENCES nodes (id),
    network_id TEXT,
    host_id TEXT,
    created_at BIGINT NOT NULL
);
CREATE INDEX elastic_ips_tenant ON elastic_ips (tenant_id);

-- Port blocks in use: (public address, port range) of a pool, held by a node.
CREATE TABLE port_blocks (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES edge_pools (id),
    node_id TEXT NOT NULL REFERENCES nodes (id),
    tenant_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    host_id TEXT NOT NULL,
    address TEXT NOT NULL,
    address_num BIGINT NOT NULL,
    port_first BIGINT NOT NULL,
    port_last BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (address_num, port_first)
);
CREATE INDEX port_blocks_node ON port_blocks (node_id);
CREATE INDEX port_blocks_pool ON port_blocks (pool_id);

-- Every assignment and release, kept after release (RFC 7422): who had address:port when.
CREATE TABLE port_block_log (
    block_id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL,
    node_id TEXT NOT NULL,
    tenant_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    vip TEXT NOT NULL,
    address TEXT NOT NULL,
    address_num BIGINT NOT NULL,
    port_first BIGINT NOT NULL,
    port_last BIGINT NOT NULL,
    assigned_at BIGINT NOT NULL,
    released_at BIGINT
);
CREATE INDEX port_block_log_addr ON port_block_log (address_num, port_first, assigned_at);

-- Security groups of a network (stateful allow rules, JSON), attached to nodes. Every
-- network has a `default` group (all egress, ingress from the same group).
CREATE TABLE security_groups (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES networks (id),
    name TEXT NOT NULL,
    rules TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (network_id, name)
);

CREATE TABLE node_security_groups (
    node_id TEXT NOT NULL REFERENCES nodes (id),
    group_id TEXT NOT NULL REFERENCES security_groups (id),
    network_id TEXT NOT NULL,
    PRIMARY KEY (node_id, group_id)
);
CREATE INDEX node_security_groups_group ON node_security_groups (group_id);

-- Network ACL of a subnet: ordered numbered allow/deny rules (JSON); none = allow all.
CREATE TABLE subnet_acls (
    subnet_id TEXT PRIMARY KEY REFERENCES subnets (id),
    tenant_id TEXT NOT NULL,
    network_id TEXT NOT NULL,
    rules TEXT NOT NULL,
    updated_at BIGINT NOT NULL
);
CREATE INDEX subnet_acls_network ON subnet_acls (network_id);
