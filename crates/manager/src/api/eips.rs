//! Elastic IPs: a public address of a pool, allocated by the operator to a tenant and
//! associated by that tenant 1:1 with one of its nodes.

use std::collections::HashSet;
use std::net::Ipv4Addr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::edges::{pool_from, POOL_COLS};
use super::nodes::{node_from, NODE_COLS};
use super::{opt_s, parse_ip, s, ts, Created};
use crate::addr::Cidr;
use crate::auth::{new_id, Principal};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::store::{now_ms, rfc3339, Op, WriteTx};
use crate::types::{EdgePool, ElasticIp, ElasticIpAssociate, ElasticIpCreate, Node};
use crate::AppState;

pub(crate) const EIP_COLS: &str =
    "id, pool_id, tenant_id, address, node_id, network_id, host_id, created_at";

pub(crate) fn eip_from(row: &AnyRow) -> Result<ElasticIp, sqlx::Error> {
    Ok(ElasticIp {
        id: s(row, "id")?,
        pool_id: s(row, "pool_id")?,
        tenant_id: s(row, "tenant_id")?,
        address: s(row, "address")?,
        node_id: opt_s(row, "node_id")?,
        network_id: opt_s(row, "network_id")?,
        host_id: opt_s(row, "host_id")?,
        created_at: ts(row)?,
    })
}

/// The addresses of a pool's public ranges that may be handed out, in order (a range's
/// network and broadcast addresses are left out for /30 and wider).
pub(crate) fn pool_addresses(pool: &EdgePool) -> ApiResult<Vec<u32>> {
    let mut out = Vec::new();
    for r in &pool.public_ranges {
        let c: Cidr = r
            .parse()
            .map_err(|e: crate::addr::CidrError| ApiError::Internal(e.to_string()))?;
        let (first, last) = if c.size() >= 4 {
            (c.first() + 1, c.last() - 1)
        } else {
            (c.first(), c.last())
        };
        out.extend(first..=last);
    }
    out.sort_unstable();
    Ok(out)
}

pub(crate) async fn load_pool(
    conn: &mut AnyConnection,
    id: &str,
    field: Option<&str>,
) -> ApiResult<EdgePool> {
    let row = sqlx::query(&format!("SELECT {POOL_COLS} FROM edge_pools WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found(field, "edge pool"))?;
    Ok(pool_from(&row)?)
}

async fn visible_eip(conn: &mut AnyConnection, p: &Principal, id: &str) -> ApiResult<ElasticIp> {
    super::fetch_visible(
        conn,
        &format!("SELECT {EIP_COLS} FROM elastic_ips WHERE id = $1"),
        id,
        eip_from,
        |v| p.sees_tenant(&v.tenant_id),
        None,
        "elastic IP",
    )
    .await
}

/// The change body of an elastic IP that was just disassociated: its new state plus the
/// host it left, so that watch streams of that host's agent see it go.
fn with_previous_host(e: &ElasticIp, previous_host: Option<&str>) -> Value {
    let mut v = serde_json::to_value(e).unwrap_or(Value::Null);
    if let (Value::Object(m), Some(h)) = (&mut v, previous_host) {
        m.insert("previous_host_id".into(), Value::String(h.to_string()));
    }
    v
}

/// Disassociates whatever elastic IP `node_id` has, inside `tx` (used by node delete).
pub(crate) async fn disassociate_node(tx: &mut WriteTx, node_id: &str) -> ApiResult<()> {
    let row = sqlx::query(&format!(
        "SELECT {EIP_COLS} FROM elastic_ips WHERE node_id = $1"
    ))
    .bind(node_id)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(row) = row {
        let e = eip_from(&row)?;
        disassociate_in(tx, e).await?;
    }
    Ok(())
}

async fn disassociate_in(tx: &mut WriteTx, mut e: ElasticIp) -> ApiResult<ElasticIp> {
    sqlx::query(
        "UPDATE elastic_ips SET node_id = NULL, network_id = NULL, host_id = NULL WHERE id = $1",
    )
    .bind(&e.id)
    .execute(tx.conn())
    .await?;
    let network = e.network_id.take();
    let host = e.host_id.take();
    e.node_id = None;
    tx.record(
        "elastic_ip",
        Op::Update,
        &e.id,
        network.as_deref(),
        &with_previous_host(&e, host.as_deref()),
    )
    .await?;
    tracing::info!(eip = %e.id, address = %e.address, "elastic IP disassociated");
    Ok(e)
}

/// Allocate an elastic IP of a pool to a tenant (admin): the given address (inside the
/// pool's public ranges, free) or the lowest free one.
#[utoipa::path(post, path = "/v1/elastic-ips", tag = "elastic-ips", request_body = ElasticIpCreate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "allocated", body = ElasticIp),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is not the admin, or no such pool or tenant", body = ErrorBody),
        (status = 409, description = "address taken (elastic IP or port blocks), or pool exhausted", body = ErrorBody),
        (status = 422, description = "invalid address, or outside the pool's public ranges", body = ErrorBody),
    ))]
pub async fn create_eip(
    State(st): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<ElasticIpCreate>,
) -> ApiResult<Created<ElasticIp>> {
    p.require_admin("resource")?;
    let given = req
        .address
        .as_deref()
        .map(|a| parse_ip("address", a))
        .transpose()?;
    let mut tx = st.store.write().await?;
    let pool = load_pool(tx.conn(), &req.pool_id, Some("pool_id")).await?;
    if sqlx::query("SELECT id FROM tenants WHERE id = $1")
        .bind(&req.tenant_id)
        .fetch_optional(tx.conn())
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(Some("tenant_id"), "tenant"));
    }
    let candidates = pool_addresses(&pool)?;
    let eips: HashSet<i64> =
        sqlx::query_scalar::<_, i64>("SELECT address_num FROM elastic_ips WHERE pool_id = $1")
            .bind(&pool.id)
            .fetch_all(tx.conn())
            .await?
            .into_iter()
            .collect();
    let blocks: HashSet<i64> = sqlx::query_scalar::<_, i64>(
        "SELECT DISTINCT address_num FROM port_blocks WHERE pool_id = $1",
    )
    .bind(&pool.id)
    .fetch_all(tx.conn())
    .await?
    .into_iter()
    .collect();
    let addr = match given {
        Some(a) => {
            if candidates.binary_search(&a).is_err() {
                return Err(ApiError::invalid(
                    "outside_pool",
                    "address",
                    format!(
                        "{} is not a usable address of the pool's ranges {}",
                        Ipv4Addr::from(a),
                        pool.public_ranges.join(", ")
                    ),
                ));
            }
            if eips.contains(&i64::from(a)) {
                return Err(ApiError::conflict(
                    "address_taken",
                    Some("address"),
                    format!("{} is another elastic IP", Ipv4Addr::from(a)),
                ));
            }
            if blocks.contains(&i64::from(a)) {
                return Err(ApiError::conflict(
                    "in_use",
                    Some("address"),
                    format!("{} carries NAT port blocks", Ipv4Addr::from(a)),
                ));
            }
            a
        }
        None => candidates
            .iter()
            .copied()
            .find(|a| !eips.contains(&i64::from(*a)) && !blocks.contains(&i64::from(*a)))
            .ok_or_else(|| {
                ApiError::conflict(
                    "exhausted",
                    Some("pool_id"),
                    "the pool has no free public address",
                )
            })?,
    };
    let now = now_ms();
    let e = ElasticIp {
        id: new_id("eip"),
        pool_id: pool.id.clone(),
        tenant_id: req.tenant_id,
        address: Ipv4Addr::from(addr).to_string(),
        node_id: None,
        network_id: None,
        host_id: None,
        created_at: rfc3339(now),
    };
    sqlx::query(
        "INSERT INTO elastic_ips (id, pool_id, tenant_id, address, address_num, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&e.id)
    .bind(&e.pool_id)
    .bind(&e.tenant_id)
    .bind(&e.address)
    .bind(i64::from(addr))
    .bind(now)
    .execute(tx.conn())
    .await?;
    tx.record("elastic_ip", Op::Create, &e.id, None, &e).await?;
    tx.commit().await?;
    tracing::info!(eip = %e.id, address = %e.address, tenant = %e.tenant_id, "elastic IP allocated");
    Ok((StatusCode::CREATED, Json(e)))
}

/// List the elastic IPs the caller may see (admin: all; tenant: its own).
#[utoipa::path(get, path = "/v1/elastic-ips", tag = "elastic-ips", security(("bearer" = [])),
    responses(
        (status = 200, description = "elastic IPs", body = Vec<ElasticIp>),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is an agent or edge", body = ErrorBody),
    ))]
pub async fn list_eips(
    State(st): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<ElasticIp>>> {
    let scope = p.tenant_scope()?.map(str::to_string);
    let rows = sqlx::query(&format!(
        "SELECT {EIP_COLS} FROM elastic_ips WHERE ($1 = '' OR tenant_id = $1) ORDER BY address_num"
    ))
    .bind(scope.unwrap_or_default())
    .fetch_all(st.store.pool())
    .await?;
    Ok(Json(rows.iter().map(eip_from).collect::<Result<_, _>>()?))
}

/// Show an elastic IP.
#[utoipa::path(get, path = "/v1/elastic-ips/{id}", tag = "elastic-ips", security(("bearer" = [])),
    params(("id" = String, Path, description = "elastic IP id")),
    responses(
        (status = 200, description = "the elastic IP", body = ElasticIp),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such elastic IP visible to the caller", body = ErrorBody),
    ))]
pub async fn get_eip(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ElasticIp>> {
    let mut conn = st.store.pool().acquire().await?;
    Ok(Json(visible_eip(&mut conn, &p, &id).await?))
}

/// Associate an elastic IP with a node of its tenant (each node has at most one).
#[utoipa::path(post, path = "/v1/elastic-ips/{id}/associate", tag = "elastic-ips",
    request_body = ElasticIpAssociate, security(("bearer" = [])),
    params(("id" = String, Path, description = "elastic IP id")),
    responses(
        (status = 200, description = "associated", body = ElasticIp),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "elastic IP or node not visible to the caller (or of another tenant)", body = ErrorBody),
        (status = 409, description = "the elastic IP is associated already, or the node has one", body = ErrorBody),
    ))]
pub async fn associate_eip(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<ElasticIpAssociate>,
) -> ApiResult<Json<ElasticIp>> {
    p.tenant_scope()?;
    let mut tx = st.store.write().await?;
    let mut e = visible_eip(tx.conn(), &p, &id).await?;
    let node: Node = match sqlx::query(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = $1"))
        .bind(&req.node_id)
        .fetch_optional(tx.conn())
        .await?
    {
        Some(r) => node_from(&r)?,
        None => return Err(ApiError::not_found(Some("node_id"), "node")),
    };
    if node.tenant_id != e.tenant_id {
        return Err(ApiError::not_found(Some("node_id"), "node"));
    }
    if let Some(n) = &e.node_id {
        return Err(ApiError::conflict(
            "in_use",
            None,
            format!("the elastic IP is associated with {n}; disassociate it first"),
        ));
    }
    if sqlx::query("SELECT id FROM elastic_ips WHERE node_id = $1")
        .bind(&node.id)
        .fetch_optional(tx.conn())
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "conflict",
            Some("node_id"),
            format!("node {} has an elastic IP already", node.id),
        ));
    }
    sqlx::query("UPDATE elastic_ips SET node_id = $1, network_id = $2, host_id = $3 WHERE id = $4")
        .bind(&node.id)
        .bind(&node.network_id)
        .bind(&node.host_id)
        .bind(&e.id)
        .execute(tx.conn())
        .await?;
    e.node_id = Some(node.id.clone());
    e.network_id = Some(node.network_id.clone());
    e.host_id = Some(node.host_id.clone());
    tx.record("elastic_ip", Op::Update, &e.id, Some(&node.network_id), &e)
        .await?;
    tx.commit().await?;
    tracing::info!(eip = %e.id, address = %e.address, node = %node.id, "elastic IP associated");
    Ok(Json(e))
}

/// Disassociate an elastic IP from its node.
#[utoipa::path(post, path = "/v1/elastic-ips/{id}/disassociate", tag = "elastic-ips",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "elastic IP id")),
    responses(
        (status = 200, description = "disassociated", body = ElasticIp),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such elastic IP visible to the caller", body = ErrorBody),
        (status = 409, description = "the elastic IP is not associated", body = ErrorBody),
    ))]
pub async fn disassociate_eip(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<ElasticIp>> {
    p.tenant_scope()?;
    let mut tx = st.store.write().await?;
    let e = visible_eip(tx.conn(), &p, &id).await?;
    if e.node_id.is_none() {
        return Err(ApiError::conflict(
            "not_associated",
            None,
            "the elastic IP is not associated with a node",
        ));
    }
    let e = disassociate_in(&mut tx, e).await?;
    tx.commit().await?;
    Ok(Json(e))
}

/// Release an elastic IP (admin or its tenant); it must not be associated.
#[utoipa::path(delete, path = "/v1/elastic-ips/{id}", tag = "elastic-ips", security(("bearer" = [])),
    params(("id" = String, Path, description = "elastic IP id")),
    responses(
        (status = 204, description = "released"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such elastic IP visible to the caller", body = ErrorBody),
        (status = 409, description = "the elastic IP is associated", body = ErrorBody),
    ))]
pub async fn delete_eip(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = st.store.write().await?;
    let e = visible_eip(tx.conn(), &p, &id).await?;
    if e.node_id.is_some() {
        return Err(ApiError::conflict(
            "in_use",
            None,
            "the elastic IP is associated; disassociate it first",
        ));
    }
    sqlx::query("DELETE FROM elastic_ips WHERE id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    tx.record("elastic_ip", Op::Delete, &id, None, &e).await?;
    tx.commit().await?;
    tracing::info!(eip = %id, address = %e.address, "elastic IP released");
    Ok(StatusCode::NO_CONTENT)
}
