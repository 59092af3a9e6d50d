//! `GET /v1/watch`: NDJSON over HTTP, one [`WatchEvent`] per line, for agents and edges.
//!
//! Without `since` (or `since=0`, or a revision the store never reached) the stream starts
//! with a snapshot of what the caller needs; with `since=<rev>` it resumes after that
//! revision. Either way it continues with the changes of the store's change log, filtered to
//! the caller's scope, until `timeout_secs` pass or the client goes away.
//!
//! Scope: an agent gets the networks in which its host has a node, an edge the networks
//! with a route to its pool, the admin everything; an agent also gets a *peer view* of the
//! networks actively peered with one of its networks (see `Reach::Peer`); plus, for all
//! of them, the operator's
//! infrastructure objects (hosts, edge pools, edges: locators and selection parameters,
//! never credentials). Tenants and tokens are never sent. Elastic IPs and NAT port blocks
//! go to the agent of their node's host and to the edges of their pool.
//!
//! Consistency: the snapshot is tagged with the revision R read *before* it, and the
//! increments replay every change after R; every event is idempotent (upsert by id,
//! delete by id), so a client converges even where the snapshot already saw a later state.
//! Writes are serialised by the revision row, so revisions become visible in order and
//! polling `revision > cursor` misses none, also for writes made by another replica.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::header::{CACHE_CONTROL, CONTENT_TYPE};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use utoipa::ToSchema;

use super::acls::{acl_from, ACL_COLS};
use super::edges::{edge_from, pool_from, EDGE_COLS, POOL_COLS};
use super::eips::{eip_from, EIP_COLS};
use super::hosts::host_from;
use super::networks::{network_from, subnet_from, NET_COLS, SUB_COLS};
use super::nodes::{node_from, NODE_COLS};
use super::peerings::{peering_from, PEER_COLS};
use super::port_blocks::{block_from, BLOCK_COLS};
use super::routes::{route_from, ROUTE_COLS};
use super::security_groups::{attachment, sg_from, SG_COLS};
use super::{i, opt_s, s};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiQuery;
use crate::AppState;

/// How often a stream looks for writes of other replicas.
pub const POLL_INTERVAL: Duration = Duration::from_millis(500);
/// How often an idle stream sends a heartbeat.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(15);
/// Most change records read at once.
const BATCH: i64 = 500;

/// Query of `GET /v1/watch`.
#[derive(Debug, Clone, Default, Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct WatchQuery {
    /// Resume after this revision (the last one the client applied); absent or 0: start
    /// with a snapshot.
    #[serde(default)]
    #[param(minimum = 0)]
    pub since: Option<u64>,
    /// End the stream after this many seconds (1..=3600, default 300); clients reconnect
    /// with `since`.
    #[serde(default)]
    #[param(minimum = 1, maximum = 3600)]
    pub timeout_secs: Option<u64>,
}

/// One line of a watch stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchEvent {
    /// A snapshot follows: drop all state; it is consistent with `revision` or later.
    Snapshot {
        /// Revision the snapshot starts from.
        revision: i64,
    },
    /// An object to create or replace (by `kind` and `object.id`).
    Upsert {
        /// `host`, `edge_pool`, `edge`, `network`, `subnet`, `node`, `route`, `peering`,
        /// `network_acl`, `security_group`, `security_group_attachment`, `elastic_ip` or
        /// `port_block`.
        kind: String,
        /// The object, as the REST API shows it.
        #[schema(value_type = Object)]
        object: Value,
    },
    /// The snapshot is complete.
    Synced {
        /// Same as the snapshot's.
        revision: i64,
    },
    /// One change of the store.
    Change {
        /// Its revision; resume with `since` = the last one applied.
        revision: i64,
        /// Object kind.
        kind: String,
        /// `create`, `update` or `delete`.
        op: String,
        /// Object id.
        object_id: String,
        /// Network it belongs to, if any.
        network_id: Option<String>,
        /// The object after the change (before it, for a delete).
        #[schema(value_type = Object)]
        object: Value,
    },
    /// The network left the caller's scope: drop everything of it.
    Forget {
        /// Revision at which this was noticed.
        revision: i64,
        /// The network.
        network_id: String,
    },
    /// Nothing happened for a while; the stream is alive at `revision`.
    Heartbeat {
        /// Last revision sent or known.
        revision: i64,
    },
}

/// How much of a network a stream carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reach {
    /// Everything of it: the viewer's host has a node in it, a route of it targets the
    /// viewer's pool, or the viewer is the admin.
    Full,
    /// A network with an active peering to one of the agent's `Full` networks: the network
    /// (its id and `vni`, which the agent's peering routes name), its subnets and its nodes
    /// (the mappings of the peer's nodes, to send to them and to check that a packet
    /// claiming to come from one does), and the peerings linking it to the agent's
    /// networks. Not its routes, security groups or ACLs: the peer's own agents apply those.
    Peer,
}

/// The change kinds of a network in [`Reach::Peer`].
const PEER_KINDS: [&str; 3] = ["network", "subnet", "node"];

/// Whose scope a stream has.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Viewer {
    All,
    Host(String),
    /// An edge (its id) of a pool.
    Pool(String, String),
}

/// Stream the objects and changes the caller needs, as NDJSON.
#[utoipa::path(get, path = "/v1/watch", tag = "watch", security(("bearer" = [])),
    params(WatchQuery),
    responses(
        (status = 200, description = "an NDJSON stream: one WatchEvent per line", content_type = "application/x-ndjson", body = WatchEvent),
        (status = 400, description = "bad query", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is a tenant", body = ErrorBody),
        (status = 422, description = "timeout_secs out of range", body = ErrorBody),
    ))]
pub async fn watch(
    State(st): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<WatchQuery>,
) -> ApiResult<Response> {
    let viewer = match &p {
        Principal::Admin => Viewer::All,
        Principal::Agent(h) => Viewer::Host(h.clone()),
        Principal::Edge { edge_id, pool_id } => Viewer::Pool(edge_id.clone(), pool_id.clone()),
        Principal::Tenant(_) => return Err(ApiError::not_found(None, "resource")),
    };
    let timeout = q.timeout_secs.unwrap_or(300);
    if !(1..=3600).contains(&timeout) {
        return Err(ApiError::invalid(
            "out_of_range",
            "timeout_secs",
            "timeout_secs must be 1..=3600",
        ));
    }
    let since = i64::try_from(q.since.unwrap_or(0)).unwrap_or(i64::MAX);
    let (tx, rx) = mpsc::channel::<Result<Bytes, io::Error>>(64);
    let deadline = Instant::now() + Duration::from_secs(timeout);
    tracing::info!(principal = ?p, since, "watch stream opened");
    let open = OpenStream::new(st.metrics.clone());
    tokio::spawn(async move {
        let mut w = Watcher {
            st,
            viewer,
            tx,
            scope: BTreeMap::new(),
        };
        let ended = w.run(since, deadline).await;
        // Counted closed before the client sees the end (when `w`'s sender goes).
        drop(open);
        drop(w);
        match ended {
            Ok(()) | Err(End::Closed) => {}
            Err(End::Store(e)) => tracing::warn!(error = %e, "watch stream ended by a store error"),
        }
        tracing::debug!(principal = ?p, "watch stream closed");
    });
    Ok((
        [
            (CONTENT_TYPE, "application/x-ndjson"),
            (CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(ReceiverStream::new(rx)),
    )
        .into_response())
}

/// Counts a watch stream as open for as long as it lives.
struct OpenStream(std::sync::Arc<crate::Metrics>);

impl OpenStream {
    fn new(m: std::sync::Arc<crate::Metrics>) -> Self {
        m.watch_streams
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        OpenStream(m)
    }
}

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0
            .watch_streams
            .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
    }
}

enum End {
    /// The client went away.
    Closed,
    /// The store failed; the client reconnects with `since`.
    Store(sqlx::Error),
}

impl From<sqlx::Error> for End {
    fn from(e: sqlx::Error) -> Self {
        End::Store(e)
    }
}

struct Watcher {
    st: AppState,
    viewer: Viewer,
    tx: mpsc::Sender<Result<Bytes, io::Error>>,
    scope: BTreeMap<String, Reach>,
}

fn json<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

impl Watcher {
    async fn send(&self, ev: &WatchEvent) -> Result<(), End> {
        let mut line = serde_json::to_vec(ev).map_err(|_| End::Closed)?;
        line.push(b'\n');
        self.tx
            .send(Ok(Bytes::from(line)))
            .await
            .map_err(|_| End::Closed)
    }

    async fn upsert(&self, kind: &str, object: Value) -> Result<(), End> {
        self.send(&WatchEvent::Upsert {
            kind: kind.into(),
            object,
        })
        .await
    }

    /// The networks the viewer may see now, and how much of each.
    async fn compute_scope(&self) -> Result<BTreeMap<String, Reach>, sqlx::Error> {
        let own = self.full_scope().await?;
        let links = self.peer_links(&own).await?;
        let mut scope: BTreeMap<String, Reach> =
            own.into_iter().map(|n| (n, Reach::Full)).collect();
        for (_, peer) in links {
            scope.entry(peer).or_insert(Reach::Peer);
        }
        Ok(scope)
    }

    /// The active peerings between an agent's networks (`own`, its full scope) and others,
    /// as (the agent's network, the other network); empty for edges and the admin, whose
    /// scope is not widened by peerings (an edge forwards to the network a route of which
    /// named it).
    async fn peer_links(
        &self,
        own: &BTreeSet<String>,
    ) -> Result<Vec<(String, String)>, sqlx::Error> {
        let Viewer::Host(h) = &self.viewer else {
            return Ok(Vec::new());
        };
        let rows = sqlx::query(
            "SELECT network_id, peer_network_id FROM peerings WHERE state = 'active' \
             AND (network_id IN (SELECT network_id FROM nodes WHERE host_id = $1) \
             OR peer_network_id IN (SELECT network_id FROM nodes WHERE host_id = $1))",
        )
        .bind(h)
        .fetch_all(self.st.store.pool())
        .await?;
        let mut links = Vec::new();
        for r in rows {
            let (a, b) = (s(&r, "network_id")?, s(&r, "peer_network_id")?);
            match (own.contains(&a), own.contains(&b)) {
                (true, false) => links.push((a, b)),
                (false, true) => links.push((b, a)),
                // Both the agent's own: each is in full scope already.
                _ => {}
            }
        }
        Ok(links)
    }

    /// The networks the viewer sees whole.
    async fn full_scope(&self) -> Result<BTreeSet<String>, sqlx::Error> {
        let pool = self.st.store.pool();
        let ids: Vec<String> = match &self.viewer {
            Viewer::All => {
                sqlx::query_scalar("SELECT id FROM networks")
                    .fetch_all(pool)
                    .await?
            }
            Viewer::Host(h) => {
                sqlx::query_scalar("SELECT DISTINCT network_id FROM nodes WHERE host_id = $1")
                    .bind(h)
                    .fetch_all(pool)
                    .await?
            }
            Viewer::Pool(_, p) => {
                sqlx::query_scalar("SELECT DISTINCT network_id FROM routes WHERE edge_pool_id = $1")
                    .bind(p)
                    .fetch_all(pool)
                    .await?
            }
        };
        Ok(ids.into_iter().collect())
    }

    /// Whether the viewer's host or edge still exists (its credential dies with it).
    async fn still_registered(&self) -> Result<bool, sqlx::Error> {
        let (sql, id) = match &self.viewer {
            Viewer::All => return Ok(true),
            Viewer::Host(h) => ("SELECT id FROM hosts WHERE id = $1", h),
            Viewer::Pool(e, _) => ("SELECT id FROM edges WHERE id = $1", e),
        };
        Ok(sqlx::query(sql)
            .bind(id)
            .fetch_optional(self.st.store.pool())
            .await?
            .is_some())
    }

    /// Upserts of the operator's infrastructure objects.
    async fn send_infrastructure(&self) -> Result<(), End> {
        let pool = self.st.store.pool();
        for row in sqlx::query("SELECT id, name, locator, created_at FROM hosts ORDER BY id")
            .fetch_all(pool)
            .await?
        {
            self.upsert("host", json(&host_from(&row)?)).await?;
        }
        for row in sqlx::query(&format!("SELECT {POOL_COLS} FROM edge_pools ORDER BY id"))
            .fetch_all(pool)
            .await?
        {
            self.upsert("edge_pool", json(&pool_from(&row)?)).await?;
        }
        for row in sqlx::query(&format!("SELECT {EDGE_COLS} FROM edges ORDER BY id"))
            .fetch_all(pool)
            .await?
        {
            self.upsert("edge", json(&edge_from(&row)?)).await?;
        }
        Ok(())
    }

    /// Upserts of the elastic IPs and port blocks the viewer needs: those of its host's
    /// nodes (agent), of its pool (edge), all (admin).
    async fn send_attached(&self) -> Result<(), End> {
        let pool = self.st.store.pool();
        let (cond_eip, cond_pb, arg) = match &self.viewer {
            Viewer::All => ("$1 = ''", "$1 = ''", String::new()),
            Viewer::Host(h) => ("host_id = $1", "host_id = $1", h.clone()),
            Viewer::Pool(_, p) => ("pool_id = $1", "pool_id = $1", p.clone()),
        };
        for row in sqlx::query(&format!(
            "SELECT {EIP_COLS} FROM elastic_ips WHERE {cond_eip} ORDER BY id"
        ))
        .bind(&arg)
        .fetch_all(pool)
        .await?
        {
            self.upsert("elastic_ip", json(&eip_from(&row)?)).await?;
        }
        for row in sqlx::query(&format!(
            "SELECT {BLOCK_COLS} FROM port_blocks WHERE {cond_pb} ORDER BY id"
        ))
        .bind(&arg)
        .fetch_all(pool)
        .await?
        {
            self.upsert("port_block", json(&block_from(&row)?)).await?;
        }
        Ok(())
    }

    /// Upserts of a network, its subnets and its nodes; `false` if it does not exist.
    async fn send_core(&self, id: &str) -> Result<bool, End> {
        let pool = self.st.store.pool();
        let Some(row) = sqlx::query(&format!("SELECT {NET_COLS} FROM networks WHERE id = $1"))
            .bind(id)
            .fetch_optional(pool)
            .await?
        else {
            return Ok(false);
        };
        self.upsert("network", json(&network_from(&row)?)).await?;
        for row in sqlx::query(&format!(
            "SELECT {SUB_COLS} FROM subnets s JOIN networks n ON n.id = s.network_id \
             WHERE s.network_id = $1 ORDER BY s.id"
        ))
        .bind(id)
        .fetch_all(pool)
        .await?
        {
            self.upsert("subnet", json(&subnet_from(&row)?)).await?;
        }
        for row in sqlx::query(&format!(
            "SELECT {NODE_COLS} FROM nodes WHERE network_id = $1 ORDER BY id"
        ))
        .bind(id)
        .fetch_all(pool)
        .await?
        {
            self.upsert("node", json(&node_from(&row)?)).await?;
        }
        Ok(true)
    }

    /// Upserts of a network in [`Reach::Peer`]: the network, its subnets and nodes, and the
    /// peerings that link it to the viewer's `Full` networks (which a `forget` of it, when
    /// it was `Full` before, took away from the client).
    async fn send_peer_view(&self, id: &str) -> Result<(), End> {
        if !self.send_core(id).await? {
            return Ok(());
        }
        for row in sqlx::query(&format!(
            "SELECT {PEER_COLS} FROM peerings WHERE network_id = $1 OR peer_network_id = $1 \
             ORDER BY id"
        ))
        .bind(id)
        .fetch_all(self.st.store.pool())
        .await?
        {
            let pe = peering_from(&row)?;
            let other = if pe.network_id == id {
                &pe.peer_network_id
            } else {
                &pe.network_id
            };
            if self.scope.get(other) == Some(&Reach::Full) {
                self.upsert("peering", json(&pe)).await?;
            }
        }
        Ok(())
    }

    /// Upserts of one network and everything in it.
    async fn send_network(&self, id: &str) -> Result<(), End> {
        let pool = self.st.store.pool();
        if !self.send_core(id).await? {
            return Ok(());
        }
        for row in sqlx::query(&format!(
            "SELECT {ROUTE_COLS} FROM routes WHERE network_id = $1 ORDER BY id"
        ))
        .bind(id)
        .fetch_all(pool)
        .await?
        {
            self.upsert("route", json(&route_from(&row)?)).await?;
        }
        for row in sqlx::query(&format!(
            "SELECT {ACL_COLS} FROM subnet_acls WHERE network_id = $1 ORDER BY subnet_id"
        ))
        .bind(id)
        .fetch_all(pool)
        .await?
        {
            self.upsert("network_acl", json(&acl_from(&row)?)).await?;
        }
        for row in sqlx::query(&format!(
            "SELECT {SG_COLS} FROM security_groups WHERE network_id = $1 ORDER BY id"
        ))
        .bind(id)
        .fetch_all(pool)
        .await?
        {
            self.upsert("security_group", json(&sg_from(&row)?)).await?;
        }
        for row in sqlx::query(
            "SELECT node_id, group_id FROM node_security_groups WHERE network_id = $1 \
             ORDER BY node_id, group_id",
        )
        .bind(id)
        .fetch_all(pool)
        .await?
        {
            let a = attachment(&s(&row, "node_id")?, &s(&row, "group_id")?, id);
            self.upsert("security_group_attachment", json(&a)).await?;
        }
        for row in sqlx::query(&format!(
            "SELECT {PEER_COLS} FROM peerings WHERE network_id = $1 OR peer_network_id = $1 \
             ORDER BY id"
        ))
        .bind(id)
        .fetch_all(pool)
        .await?
        {
            self.upsert("peering", json(&peering_from(&row)?)).await?;
        }
        Ok(())
    }

    /// Brings the scope up to date: new networks are sent whole, lost ones forgotten.
    async fn rescope(&mut self, revision: i64) -> Result<(), End> {
        if !self.still_registered().await? {
            tracing::info!(viewer = ?self.viewer, "watch stream ended: host or edge removed");
            return Err(End::Closed);
        }
        let now = self.compute_scope().await?;
        let old = std::mem::replace(&mut self.scope, now);
        for (n, reach) in self.scope.clone() {
            match (old.get(&n), reach) {
                (None | Some(Reach::Peer), Reach::Full) => self.send_network(&n).await?,
                (None, Reach::Peer) => self.send_peer_view(&n).await?,
                // The client holds the whole network: drop it, keep the peer view.
                (Some(Reach::Full), Reach::Peer) => {
                    self.forget(revision, &n).await?;
                    self.send_peer_view(&n).await?;
                }
                _ => {}
            }
        }
        for n in old.keys().filter(|n| !self.scope.contains_key(*n)) {
            self.forget(revision, n).await?;
        }
        Ok(())
    }

    async fn forget(&self, revision: i64, network: &str) -> Result<(), End> {
        self.send(&WatchEvent::Forget {
            revision,
            network_id: network.to_string(),
        })
        .await
    }

    fn relevant(&self, kind: &str, network_id: Option<&str>, body: &Value) -> bool {
        match kind {
            "host" | "edge" | "edge_pool" => true,
            // Elastic IPs and port blocks: the agent of the node's host (also the host an
            // elastic IP just left), the edges of the pool.
            "elastic_ip" | "port_block" => match &self.viewer {
                Viewer::All => true,
                Viewer::Host(h) => {
                    body["host_id"].as_str() == Some(h.as_str())
                        || body["previous_host_id"].as_str() == Some(h.as_str())
                }
                Viewer::Pool(_, p) => body["pool_id"].as_str() == Some(p.as_str()),
            },
            "tenant" | "token" => self.viewer == Viewer::All,
            _ => match network_id {
                Some(n) => match self.scope.get(n) {
                    Some(Reach::Full) => true,
                    Some(Reach::Peer) => PEER_KINDS.contains(&kind),
                    None => self.viewer == Viewer::All,
                },
                None => self.viewer == Viewer::All,
            },
        }
    }

    /// Networks that had a scope-defining change of `op` (a node placed on or removed from
    /// the viewer's host, a route to the viewer's pool) after `since`: a resuming client
    /// may lack their earlier objects (`create`), or hold more of them than it may now
    /// (`delete`).
    async fn touched_since(&self, since: i64, op: &str) -> Result<HashSet<String>, sqlx::Error> {
        let kind = match &self.viewer {
            Viewer::All => return Ok(HashSet::new()),
            Viewer::Host(_) => "node",
            Viewer::Pool(..) => "route",
        };
        let rows = sqlx::query(
            "SELECT network_id, body FROM changes WHERE revision > $1 AND kind = $2 AND op = $3",
        )
        .bind(since)
        .bind(kind)
        .bind(op)
        .fetch_all(self.st.store.pool())
        .await?;
        let mut out = HashSet::new();
        for r in rows {
            let body: Value = serde_json::from_str(&s(&r, "body")?).unwrap_or(Value::Null);
            let mine = match &self.viewer {
                Viewer::Host(h) => body["host_id"].as_str() == Some(h.as_str()),
                Viewer::Pool(_, p) => body["edge_pool_id"].as_str() == Some(p.as_str()),
                Viewer::All => false,
            };
            if let (true, Some(n)) = (mine, opt_s(&r, "network_id")?) {
                out.insert(n);
            }
        }
        Ok(out)
    }

    /// Catches a client resuming after `since` up with the scope of revision `current`
    /// (the change replay that follows does the rest).
    async fn resume(&mut self, since: i64, current: i64) -> Result<(), End> {
        self.scope = self.compute_scope().await?;
        let touched = self.touched_since(since, "create").await?;
        for n in &touched {
            if self.scope.get(n) == Some(&Reach::Full) {
                self.send_network(n).await?;
            }
        }
        // Peer views the client may lack: a peering of the network changed (created,
        // accepted), or it is peered with a network that has just come whole. Where one of
        // the viewer's nodes left it, the client may hold it whole: forget that first.
        let pool = self.st.store.pool();
        let mut refresh: HashSet<String> = sqlx::query_scalar(
            "SELECT DISTINCT network_id FROM changes WHERE revision > $1 AND kind = 'peering' \
             AND network_id IS NOT NULL",
        )
        .bind(since)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
        let own: BTreeSet<String> = self
            .scope
            .iter()
            .filter(|(_, r)| **r == Reach::Full)
            .map(|(n, _)| n.clone())
            .collect();
        for (full, peer) in self.peer_links(&own).await? {
            if touched.contains(&full) {
                refresh.insert(peer);
            }
        }
        let left_host = self.touched_since(since, "delete").await?;
        for (n, reach) in self.scope.clone() {
            if reach != Reach::Peer {
                continue;
            }
            if left_host.contains(&n) {
                self.forget(current, &n).await?;
                self.send_peer_view(&n).await?;
            } else if refresh.contains(&n) {
                self.send_peer_view(&n).await?;
            }
        }
        if self.viewer == Viewer::All {
            return Ok(());
        }
        // Networks the client may still hold but that are out of scope now: a node or
        // route of the viewer's, or a peering, was deleted after `since`; and the peers of
        // those networks, whose peer view may have gone with them.
        const DELETED: &str = "SELECT network_id FROM changes WHERE revision > $1 \
             AND op = 'delete' AND kind IN ('node', 'route', 'network', 'peering') \
             AND network_id IS NOT NULL";
        let gone: BTreeSet<String> = sqlx::query_scalar(&format!(
            "{DELETED} UNION SELECT peer_network_id FROM peerings WHERE network_id IN ({DELETED}) \
             UNION SELECT network_id FROM peerings WHERE peer_network_id IN ({DELETED})"
        ))
        .bind(since)
        .fetch_all(pool)
        .await?
        .into_iter()
        .collect();
        for n in gone {
            if !self.scope.contains_key(&n) {
                self.forget(current, &n).await?;
            }
        }
        Ok(())
    }

    async fn run(&mut self, since: i64, deadline: Instant) -> Result<(), End> {
        let mut wake = self.st.store.subscribe();
        let mut stopping = self.st.stopping.subscribe();
        if *stopping.borrow_and_update() {
            return Ok(());
        }
        let current = self.st.store.revision().await?;
        let mut cursor;
        if since <= 0 || since > current {
            // Snapshot from the revision read before it; the replay below makes it exact.
            cursor = current;
            self.send(&WatchEvent::Snapshot { revision: cursor })
                .await?;
            self.send_infrastructure().await?;
            self.scope = self.compute_scope().await?;
            for (n, reach) in self.scope.clone() {
                match reach {
                    Reach::Full => self.send_network(&n).await?,
                    Reach::Peer => self.send_peer_view(&n).await?,
                }
            }
            self.send_attached().await?;
            self.send(&WatchEvent::Synced { revision: cursor }).await?;
        } else {
            cursor = since;
            self.resume(since, current).await?;
        }
        let mut last_sent = Instant::now();
        loop {
            let rows = sqlx::query(
                "SELECT revision, kind, op, object_id, network_id, body FROM changes \
                 WHERE revision > $1 ORDER BY revision, seq LIMIT $2",
            )
            .bind(cursor)
            .bind(BATCH)
            .fetch_all(self.st.store.pool())
            .await?;
            if !rows.is_empty() {
                // A batch may be cut inside a revision: only go up to the last complete one.
                let last_rev = i(rows.last().expect("non-empty"), "revision")?;
                let complete = if rows.len() as i64 == BATCH {
                    rows.iter()
                        .map(|r| i(r, "revision"))
                        .collect::<Result<Vec<_>, _>>()?
                        .into_iter()
                        .filter(|r| *r < last_rev)
                        .max()
                        .unwrap_or(last_rev)
                } else {
                    last_rev
                };
                self.rescope(complete).await?;
                for r in &rows {
                    let revision = i(r, "revision")?;
                    if revision > complete {
                        break;
                    }
                    let kind = s(r, "kind")?;
                    let network_id = opt_s(r, "network_id")?;
                    let object = serde_json::from_str(&s(r, "body")?).unwrap_or(Value::Null);
                    if !self.relevant(&kind, network_id.as_deref(), &object) {
                        continue;
                    }
                    self.send(&WatchEvent::Change {
                        revision,
                        kind,
                        op: s(r, "op")?,
                        object_id: s(r, "object_id")?,
                        network_id,
                        object,
                    })
                    .await?;
                }
                cursor = complete;
                last_sent = Instant::now();
                continue;
            }
            if Instant::now() >= deadline {
                return Ok(());
            }
            let beat = last_sent + HEARTBEAT_INTERVAL;
            tokio::select! {
                _ = wake.changed() => {}
                () = tokio::time::sleep(POLL_INTERVAL) => {}
                () = tokio::time::sleep_until(deadline) => return Ok(()),
                () = self.tx.closed() => return Err(End::Closed),
                _ = stopping.changed() => return Ok(()),
            }
            if Instant::now() >= beat {
                self.send(&WatchEvent::Heartbeat { revision: cursor })
                    .await?;
                last_sent = Instant::now();
            }
        }
    }
}
