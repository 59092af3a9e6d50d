//! NAT port blocks: a node that sends through a NAT pool gets (public address, port range)
//! blocks of the pool, assigned on demand by its host's agent. A node's blocks never share a
//! port (the data plane finds the block from the port alone). Every assignment and release
//! is kept in `port_block_log` (RFC 7422 style), so `who had 198.51.100.7:40001 at T?` has
//! an answer after the block is gone.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::edges::{PORT_FIRST, PORT_SPAN};
use super::eips::{load_pool, pool_addresses};
use super::nodes::{node_from, NODE_COLS};
use super::{i, parse_ip, s, ts};
use crate::auth::{new_id, Principal};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::store::{now_ms, parse_rfc3339, rfc3339, Op, WriteTx};
use crate::types::{Node, PortBlock, PortBlockCreate, PortBlockLookup, PortBlockRecord};
use crate::AppState;

pub(crate) const BLOCK_COLS: &str = "id, pool_id, node_id, tenant_id, network_id, host_id, address, port_first, port_last, created_at";

pub(crate) fn block_from(row: &AnyRow) -> Result<PortBlock, sqlx::Error> {
    Ok(PortBlock {
        id: s(row, "id")?,
        pool_id: s(row, "pool_id")?,
        node_id: s(row, "node_id")?,
        tenant_id: s(row, "tenant_id")?,
        network_id: s(row, "network_id")?,
        host_id: s(row, "host_id")?,
        address: s(row, "address")?,
        port_first: i(row, "port_first")? as u32,
        port_last: i(row, "port_last")? as u32,
        created_at: ts(row)?,
    })
}

/// The node, if the caller may manage its port blocks (admin, its host's agent) or, with
/// `read`, see them (also its tenant).
async fn node_for(
    conn: &mut AnyConnection,
    p: &Principal,
    id: &str,
    read: bool,
) -> ApiResult<Node> {
    let row = sqlx::query(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found(None, "node"))?;
    let n = node_from(&row)?;
    let ok = match p {
        Principal::Admin => true,
        Principal::Agent(h) => *h == n.host_id,
        Principal::Tenant(t) => read && *t == n.tenant_id,
        Principal::Edge { .. } => false,
    };
    if ok {
        Ok(n)
    } else {
        Err(ApiError::not_found(None, "node"))
    }
}

/// Releases one block inside `tx`: gone from `port_blocks`, release time in the log.
async fn release_in(tx: &mut WriteTx, b: &PortBlock) -> ApiResult<()> {
    sqlx::query("DELETE FROM port_blocks WHERE id = $1")
        .bind(&b.id)
        .execute(tx.conn())
        .await?;
    sqlx::query("UPDATE port_block_log SET released_at = $1 WHERE block_id = $2")
        .bind(now_ms())
        .bind(&b.id)
        .execute(tx.conn())
        .await?;
    tx.record("port_block", Op::Delete, &b.id, Some(&b.network_id), b)
        .await?;
    tracing::info!(block = %b.id, node = %b.node_id, address = %b.address, ports = %format!("{}-{}", b.port_first, b.port_last), "port block released");
    Ok(())
}

/// Releases every block of a node inside `tx` (used by node delete).
pub(crate) async fn release_node(tx: &mut WriteTx, node_id: &str) -> ApiResult<()> {
    let rows = sqlx::query(&format!(
        "SELECT {BLOCK_COLS} FROM port_blocks WHERE node_id = $1 ORDER BY port_first"
    ))
    .bind(node_id)
    .fetch_all(tx.conn())
    .await?;
    for r in rows {
        let b = block_from(&r)?;
        release_in(tx, &b).await?;
    }
    Ok(())
}

/// Assign the node the next free port block of its NAT pool (the node's host's agent, or
/// the admin). The pool is `pool_id` or the only NAT pool the node's route tables (its
/// network's and its subnet's) target.
#[utoipa::path(post, path = "/v1/nodes/{id}/port-blocks", tag = "port-blocks",
    request_body = PortBlockCreate, security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 201, description = "assigned", body = PortBlock),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "node not managed by the caller, or no such pool", body = ErrorBody),
        (status = 409, description = "no (or more than one) NAT pool routed from the node, or the pool's ports are exhausted", body = ErrorBody),
    ))]
pub async fn create_block(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<PortBlockCreate>,
) -> ApiResult<(StatusCode, Json<PortBlock>)> {
    let mut tx = st.store.write().await?;
    let node = node_for(tx.conn(), &p, &id, false).await?;
    let routed: Vec<String> = sqlx::query_scalar(
        "SELECT DISTINCT r.edge_pool_id FROM routes r JOIN edge_pools p ON p.id = r.edge_pool_id \
         WHERE r.network_id = $1 AND (r.table_key = '' OR r.table_key = $2) AND p.nat = 1 \
         ORDER BY r.edge_pool_id",
    )
    .bind(&node.network_id)
    .bind(&node.subnet_id)
    .fetch_all(tx.conn())
    .await?;
    let pool_id = match req.pool_id {
        Some(pid) => {
            load_pool(tx.conn(), &pid, Some("pool_id")).await?;
            if !routed.contains(&pid) {
                return Err(ApiError::conflict(
                    "not_routed",
                    Some("pool_id"),
                    format!("no route of the node's tables targets NAT pool {pid}"),
                ));
            }
            pid
        }
        None => match routed.as_slice() {
            [one] => one.clone(),
            [] => {
                return Err(ApiError::conflict(
                    "no_nat_pool",
                    Some("pool_id"),
                    "no route of the node's tables targets a NAT pool",
                ))
            }
            _ => {
                return Err(ApiError::conflict(
                    "ambiguous",
                    Some("pool_id"),
                    "the node's routes target several NAT pools: name one in pool_id",
                ))
            }
        },
    };
    let pool = load_pool(tx.conn(), &pool_id, Some("pool_id")).await?;
    let size = pool.port_block_size.clamp(1, PORT_SPAN);
    let slots = PORT_SPAN / size;
    let addresses = pool_addresses(&pool)?;
    let eips: HashSet<i64> =
        sqlx::query_scalar::<_, i64>("SELECT address_num FROM elastic_ips WHERE pool_id = $1")
            .bind(&pool.id)
            .fetch_all(tx.conn())
            .await?
            .into_iter()
            .collect();
    let taken: HashSet<(i64, i64)> =
        sqlx::query("SELECT address_num, port_first FROM port_blocks WHERE pool_id = $1")
            .bind(&pool.id)
            .fetch_all(tx.conn())
            .await?
            .iter()
            .map(|r| Ok((i(r, "address_num")?, i(r, "port_first")?)))
            .collect::<Result<_, sqlx::Error>>()?;
    let mine: Vec<(i64, i64)> =
        sqlx::query("SELECT port_first, port_last FROM port_blocks WHERE node_id = $1")
            .bind(&node.id)
            .fetch_all(tx.conn())
            .await?
            .iter()
            .map(|r| Ok((i(r, "port_first")?, i(r, "port_last")?)))
            .collect::<Result<_, sqlx::Error>>()?;
    let mut chosen = None;
    'slots: for k in 0..slots {
        let first = i64::from(PORT_FIRST + k * size);
        let last = first + i64::from(size) - 1;
        if mine.iter().any(|(f, l)| *f <= last && first <= *l) {
            continue;
        }
        for a in &addresses {
            let a = i64::from(*a);
            if !eips.contains(&a) && !taken.contains(&(a, first)) {
                chosen = Some((a, first, last));
                break 'slots;
            }
        }
    }
    let Some((addr, first, last)) = chosen else {
        st.metrics
            .port_blocks_exhausted
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        return Err(ApiError::conflict(
            "exhausted",
            None,
            format!("pool {} has no free port block for this node", pool.id),
        ));
    };
    let now = now_ms();
    let b = PortBlock {
        id: new_id("pb"),
        pool_id: pool.id.clone(),
        node_id: node.id.clone(),
        tenant_id: node.tenant_id.clone(),
        network_id: node.network_id.clone(),
        host_id: node.host_id.clone(),
        address: Ipv4Addr::from(addr as u32).to_string(),
        port_first: first as u32,
        port_last: last as u32,
        created_at: rfc3339(now),
    };
    sqlx::query(
        "INSERT INTO port_blocks (id, pool_id, node_id, tenant_id, network_id, host_id, address, address_num, port_first, port_last, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&b.id)
    .bind(&b.pool_id)
    .bind(&b.node_id)
    .bind(&b.tenant_id)
    .bind(&b.network_id)
    .bind(&b.host_id)
    .bind(&b.address)
    .bind(addr)
    .bind(first)
    .bind(last)
    .bind(now)
    .execute(tx.conn())
    .await?;
    sqlx::query(
        "INSERT INTO port_block_log (block_id, pool_id, node_id, tenant_id, network_id, vip, address, address_num, port_first, port_last, assigned_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&b.id)
    .bind(&b.pool_id)
    .bind(&b.node_id)
    .bind(&b.tenant_id)
    .bind(&b.network_id)
    .bind(&node.vip)
    .bind(&b.address)
    .bind(addr)
    .bind(first)
    .bind(last)
    .bind(now)
    .execute(tx.conn())
    .await?;
    tx.record("port_block", Op::Create, &b.id, Some(&b.network_id), &b)
        .await?;
    tx.commit().await?;
    st.metrics
        .port_blocks_assigned
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    tracing::info!(block = %b.id, node = %b.node_id, address = %b.address, ports = %format!("{first}-{last}"), "port block assigned");
    Ok((StatusCode::CREATED, Json(b)))
}

/// The port blocks a node holds (admin, its host's agent, its tenant).
#[utoipa::path(get, path = "/v1/nodes/{id}/port-blocks", tag = "port-blocks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 200, description = "the node's blocks", body = Vec<PortBlock>),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such node visible to the caller", body = ErrorBody),
    ))]
pub async fn list_blocks(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Vec<PortBlock>>> {
    let mut conn = st.store.pool().acquire().await?;
    node_for(&mut conn, &p, &id, true).await?;
    let rows = sqlx::query(&format!(
        "SELECT {BLOCK_COLS} FROM port_blocks WHERE node_id = $1 ORDER BY port_first"
    ))
    .bind(&id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(rows.iter().map(block_from).collect::<Result<_, _>>()?))
}

/// Release a port block (its node's host's agent, or the admin).
#[utoipa::path(delete, path = "/v1/port-blocks/{id}", tag = "port-blocks",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "port block id")),
    responses(
        (status = 204, description = "released"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such block managed by the caller", body = ErrorBody),
    ))]
pub async fn delete_block(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = st.store.write().await?;
    let row = sqlx::query(&format!(
        "SELECT {BLOCK_COLS} FROM port_blocks WHERE id = $1"
    ))
    .bind(&id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| ApiError::not_found(None, "port block"))?;
    let b = block_from(&row)?;
    let ok = match &p {
        Principal::Admin => true,
        Principal::Agent(h) => *h == b.host_id,
        _ => false,
    };
    if !ok {
        return Err(ApiError::not_found(None, "port block"));
    }
    release_in(&mut tx, &b).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Who had `address:port` at time `at` (default now), from the assignment log (admin).
#[utoipa::path(get, path = "/v1/port-blocks/lookup", tag = "port-blocks",
    security(("bearer" = [])),
    params(PortBlockLookup),
    responses(
        (status = 200, description = "the assignment that covered it", body = PortBlockRecord),
        (status = 400, description = "bad query", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "nobody had it then, or caller is not the admin", body = ErrorBody),
        (status = 422, description = "invalid address, port or time", body = ErrorBody),
    ))]
pub async fn lookup_block(
    State(st): State<AppState>,
    p: Principal,
    ApiQuery(q): ApiQuery<PortBlockLookup>,
) -> ApiResult<Json<PortBlockRecord>> {
    p.require_admin("resource")?;
    let addr = parse_ip("address", &q.address)?;
    if q.port > 65535 {
        return Err(ApiError::invalid(
            "out_of_range",
            "port",
            "port must be 0..=65535",
        ));
    }
    let at = match &q.at {
        Some(t) => parse_rfc3339(t).ok_or_else(|| {
            ApiError::invalid(
                "invalid_time",
                "at",
                format!("{t:?} is not an RFC 3339 time"),
            )
        })?,
        None => now_ms(),
    };
    let row = sqlx::query(
        "SELECT block_id, pool_id, node_id, tenant_id, network_id, vip, address, port_first, \
         port_last, assigned_at, released_at FROM port_block_log \
         WHERE address_num = $1 AND port_first <= $2 AND port_last >= $2 \
         AND assigned_at <= $3 AND (released_at IS NULL OR released_at > $3) \
         ORDER BY assigned_at DESC LIMIT 1",
    )
    .bind(i64::from(addr))
    .bind(i64::from(q.port))
    .bind(at)
    .fetch_optional(st.store.pool())
    .await?
    .ok_or_else(|| ApiError::not_found(None, "port block assignment"))?;
    let released: Option<i64> = sqlx::Row::try_get(&row, "released_at")?;
    Ok(Json(PortBlockRecord {
        block_id: s(&row, "block_id")?,
        pool_id: s(&row, "pool_id")?,
        node_id: s(&row, "node_id")?,
        tenant_id: s(&row, "tenant_id")?,
        network_id: s(&row, "network_id")?,
        vip: s(&row, "vip")?,
        address: s(&row, "address")?,
        port_first: i(&row, "port_first")? as u32,
        port_last: i(&row, "port_last")? as u32,
        assigned_at: rfc3339(i(&row, "assigned_at")?),
        released_at: released.map(rfc3339),
    }))
}
