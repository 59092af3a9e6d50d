-- Canopy manager schema, version 1. Portable SQL: the same file runs on SQLite and
-- PostgreSQL through sqlx's Any driver. Ids are application-generated strings, numbers are
-- BIGINT, booleans are BIGINT 0/1, times are BIGINT milliseconds since the Unix epoch.

-- One row: the store revision, bumped by every API write (and the write lock for them).
CREATE TABLE store_revision (
    id BIGINT PRIMARY KEY,
    revision BIGINT NOT NULL
);
INSERT INTO store_revision (id, revision) VALUES (1, 0);

-- Change log: what watch streams replay. One revision may carry several records.
CREATE TABLE changes (
    revision BIGINT NOT NULL,
    seq BIGINT NOT NULL,
    kind TEXT NOT NULL,
    op TEXT NOT NULL,
    object_id TEXT NOT NULL,
    network_id TEXT,
    body TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    PRIMARY KEY (revision, seq)
);
CREATE INDEX changes_network ON changes (network_id, revision);

-- Settings fixed at first start (substrate prefix, generated admin token hash).
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

-- Allocation counters that never go back (network ids, locator indexes).
CREATE TABLE counters (
    name TEXT PRIMARY KEY,
    value BIGINT NOT NULL
);
INSERT INTO counters (name, value) VALUES ('vni', 0);
INSERT INTO counters (name, value) VALUES ('locator', 0);

CREATE TABLE tenants (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

-- API tokens (tenant), agent credentials (host) and edge credentials: SHA-256 hex only.
CREATE TABLE tokens (
    id TEXT PRIMARY KEY,
    hash TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    subject_id TEXT NOT NULL,
    name TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX tokens_subject ON tokens (subject_id);

CREATE TABLE networks (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL REFERENCES tenants (id),
    name TEXT NOT NULL,
    cidr TEXT NOT NULL,
    vni BIGINT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    UNIQUE (tenant_id, name)
);

CREATE TABLE subnets (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES networks (id),
    name TEXT NOT NULL,
    cidr TEXT NOT NULL,
    first_addr BIGINT NOT NULL,
    last_addr BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    UNIQUE (network_id, name)
);

CREATE TABLE hosts (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    locator TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL
);

CREATE TABLE nodes (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES networks (id),
    subnet_id TEXT NOT NULL REFERENCES subnets (id),
    host_id TEXT NOT NULL REFERENCES hosts (id),
    name TEXT NOT NULL,
    vip TEXT NOT NULL,
    vip_num BIGINT NOT NULL,
    mac TEXT NOT NULL UNIQUE,
    created_at BIGINT NOT NULL,
    UNIQUE (network_id, vip_num),
    UNIQUE (network_id, name)
);
CREATE INDEX nodes_host ON nodes (host_id, network_id);
CREATE INDEX nodes_subnet ON nodes (subnet_id, vip_num);

CREATE TABLE edge_pools (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    mode TEXT NOT NULL,
    anycast_locator TEXT,
    hash_fields TEXT NOT NULL,
    load_aware BIGINT NOT NULL,
    split_large_flows BIGINT NOT NULL,
    nat BIGINT NOT NULL,
    public_ranges TEXT NOT NULL,
    created_at BIGINT NOT NULL
);

CREATE TABLE edges (
    id TEXT PRIMARY KEY,
    pool_id TEXT NOT NULL REFERENCES edge_pools (id),
    name TEXT NOT NULL UNIQUE,
    locator TEXT NOT NULL UNIQUE,
    weight BIGINT NOT NULL,
    state TEXT NOT NULL,
    report_healthy BIGINT,
    report_load BIGINT,
    report_at BIGINT,
    created_at BIGINT NOT NULL
);
CREATE INDEX edges_pool ON edges (pool_id);

-- Minimal routes: the network -> edge pool link that edge resolution is authorised by.
CREATE TABLE routes (
    id TEXT PRIMARY KEY,
    tenant_id TEXT NOT NULL,
    network_id TEXT NOT NULL REFERENCES networks (id),
    destination TEXT NOT NULL,
    target TEXT NOT NULL,
    edge_pool_id TEXT REFERENCES edge_pools (id),
    created_at BIGINT NOT NULL,
    UNIQUE (network_id, destination)
);
CREATE INDEX routes_pool ON routes (edge_pool_id, network_id);
