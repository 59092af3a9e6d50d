//! Edge pools (admin writes, everyone but agents/edges reads) and edges (admin only).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sqlx::any::AnyRow;
use sqlx::Row;

use super::hosts::{new_credential, next_locator};
use super::{i, opt_s, parse_cidr, s, ts, validate_name, Created};
use crate::addr::Cidr;
use crate::auth::{new_id, Principal, SecretKind};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::store::{now_ms, rfc3339, Op};
use crate::types::{
    Edge, EdgeCreate, EdgeCreated, EdgePool, EdgePoolCreate, EdgeReport, EdgeReportRequest,
    EdgeState, EdgeUpdate, HashField, PoolMode,
};
use crate::AppState;

/// Ranges public pool addresses may come from (RFC 5737 documentation ranges).
pub const PUBLIC_RANGES_ALLOWED: [&str; 3] = ["192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24"];

/// Ports a NAT pool hands out in blocks: 1024..=65535.
pub const PORT_FIRST: u32 = 1024;
/// How many ports that is.
pub const PORT_SPAN: u32 = 65536 - PORT_FIRST;
/// Default ports per block.
pub const DEFAULT_PORT_BLOCK: u32 = 1024;

/// Edge weights accepted.
pub const WEIGHT_RANGE: (u32, u32) = (1, 10_000);

pub(crate) const POOL_COLS: &str = "id, name, mode, anycast_locator, hash_fields, load_aware, split_large_flows, nat, public_ranges, port_block_size, created_at";
pub(crate) const EDGE_COLS: &str =
    "id, pool_id, name, locator, weight, state, report_healthy, report_load, report_at, created_at";

fn decode<T: serde::de::DeserializeOwned>(row: &AnyRow, col: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(&s(row, col)?).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "[]".into())
}

pub(crate) fn enum_text<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub(crate) fn enum_from<T: serde::de::DeserializeOwned>(text: String) -> Result<T, sqlx::Error> {
    serde_json::from_value(serde_json::Value::String(text))
        .map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

pub(crate) fn pool_from(row: &AnyRow) -> Result<EdgePool, sqlx::Error> {
    Ok(EdgePool {
        id: s(row, "id")?,
        name: s(row, "name")?,
        mode: enum_from(s(row, "mode")?)?,
        anycast_locator: opt_s(row, "anycast_locator")?,
        hash_fields: decode(row, "hash_fields")?,
        load_aware: i(row, "load_aware")? != 0,
        split_large_flows: i(row, "split_large_flows")? != 0,
        nat: i(row, "nat")? != 0,
        public_ranges: decode(row, "public_ranges")?,
        port_block_size: i(row, "port_block_size")? as u32,
        created_at: ts(row)?,
    })
}

pub(crate) fn edge_from(row: &AnyRow) -> Result<Edge, sqlx::Error> {
    Ok(Edge {
        id: s(row, "id")?,
        pool_id: s(row, "pool_id")?,
        name: s(row, "name")?,
        locator: s(row, "locator")?,
        weight: i(row, "weight")? as u32,
        state: enum_from(s(row, "state")?)?,
        last_report: match row.try_get::<Option<i64>, _>("report_at")? {
            Some(at) => Some(EdgeReport {
                healthy: row
                    .try_get::<Option<i64>, _>("report_healthy")?
                    .unwrap_or(0)
                    != 0,
                load_percent: row.try_get::<Option<i64>, _>("report_load")?.unwrap_or(0) as u32,
                at: rfc3339(at),
            }),
            None => None,
        },
        created_at: ts(row)?,
    })
}

/// Pools are shared infrastructure: the admin and tenants may read them.
fn may_read_pools(p: &Principal) -> ApiResult<()> {
    match p {
        Principal::Admin | Principal::Tenant(_) => Ok(()),
        _ => Err(ApiError::not_found(None, "resource")),
    }
}

fn check_weight(w: u32) -> ApiResult<u32> {
    if (WEIGHT_RANGE.0..=WEIGHT_RANGE.1).contains(&w) {
        Ok(w)
    } else {
        Err(ApiError::invalid(
            "out_of_range",
            "weight",
            format!("weight must be {}..={}", WEIGHT_RANGE.0, WEIGHT_RANGE.1),
        ))
    }
}

/// Create an edge pool (admin).
#[utoipa::path(post, path = "/v1/edge-pools", tag = "edge-pools", request_body = EdgePoolCreate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = EdgePool),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is not the admin", body = ErrorBody),
        (status = 409, description = "name taken, public range used by another pool, or locators exhausted", body = ErrorBody),
        (status = 422, description = "invalid name, hash fields, public ranges, port block size or option combination", body = ErrorBody),
    ))]
pub async fn create_pool(
    State(st): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<EdgePoolCreate>,
) -> ApiResult<Created<EdgePool>> {
    p.require_admin("resource")?;
    validate_name("name", &req.name)?;
    let mode = req.mode.unwrap_or(PoolMode::Direct);
    let hash_fields = req.hash_fields.unwrap_or_else(|| {
        vec![
            HashField::Network,
            HashField::SrcIp,
            HashField::DstIp,
            HashField::Protocol,
            HashField::SrcPort,
            HashField::DstPort,
        ]
    });
    if hash_fields.is_empty() {
        return Err(ApiError::invalid(
            "empty",
            "hash_fields",
            "at least one hash field is needed",
        ));
    }
    for (k, f) in hash_fields.iter().enumerate() {
        if hash_fields[..k].contains(f) {
            return Err(ApiError::invalid(
                "duplicate",
                &format!("hash_fields[{k}]"),
                "a hash field is listed twice",
            ));
        }
    }
    let nat = req.nat.unwrap_or(true);
    let split = req.split_large_flows.unwrap_or(false);
    if split && nat {
        return Err(ApiError::invalid(
            "incompatible",
            "split_large_flows",
            "splitting large flows across members is only possible for pools that do not NAT",
        ));
    }
    let allowed: Vec<Cidr> = PUBLIC_RANGES_ALLOWED
        .iter()
        .map(|r| r.parse().expect("constant ranges parse"))
        .collect();
    let mut ranges: Vec<Cidr> = Vec::new();
    for (k, r) in req.public_ranges.iter().enumerate() {
        let field = format!("public_ranges[{k}]");
        let c = parse_cidr(&field, r)?;
        if !allowed.iter().any(|a| a.covers(&c)) {
            return Err(ApiError::invalid(
                "range_not_allowed",
                &field,
                format!(
                    "{c} is outside the allowed public ranges {}",
                    PUBLIC_RANGES_ALLOWED.join(", ")
                ),
            ));
        }
        if ranges.iter().any(|o| o.overlaps(&c)) {
            return Err(ApiError::invalid(
                "overlap",
                &field,
                format!("{c} overlaps another range of this request"),
            ));
        }
        ranges.push(c);
    }
    let port_block_size = req.port_block_size.unwrap_or(DEFAULT_PORT_BLOCK);
    if !(1..=PORT_SPAN).contains(&port_block_size) {
        return Err(ApiError::invalid(
            "out_of_range",
            "port_block_size",
            format!("port_block_size must be 1..={PORT_SPAN}"),
        ));
    }
    if nat && ranges.is_empty() {
        return Err(ApiError::invalid(
            "required",
            "public_ranges",
            "a NAT pool needs at least one public range",
        ));
    }
    let mut tx = st.store.write().await?;
    let rows = sqlx::query("SELECT id, name, public_ranges FROM edge_pools")
        .fetch_all(tx.conn())
        .await?;
    for row in &rows {
        if s(row, "name")? == req.name {
            return Err(ApiError::conflict(
                "conflict",
                Some("name"),
                format!("a pool named {:?} exists", req.name),
            ));
        }
        let theirs: Vec<String> = decode(row, "public_ranges")?;
        for t in theirs {
            let t: Cidr = t
                .parse()
                .map_err(|e: crate::addr::CidrError| ApiError::Internal(e.to_string()))?;
            if let Some(k) = ranges.iter().position(|c| c.overlaps(&t)) {
                return Err(ApiError::conflict(
                    "overlap",
                    Some(&format!("public_ranges[{k}]")),
                    format!("{} overlaps {t} of pool {}", ranges[k], s(row, "id")?),
                ));
            }
        }
    }
    let anycast_locator = match mode {
        PoolMode::Anycast => Some(next_locator(&st, &mut tx, "mode").await?),
        PoolMode::Direct => None,
    };
    let now = now_ms();
    let pool = EdgePool {
        id: new_id("pool"),
        name: req.name,
        mode,
        anycast_locator,
        hash_fields,
        load_aware: req.load_aware.unwrap_or(false),
        split_large_flows: split,
        nat,
        public_ranges: ranges.iter().map(Cidr::to_string).collect(),
        port_block_size,
        created_at: rfc3339(now),
    };
    sqlx::query(
        "INSERT INTO edge_pools (id, name, mode, anycast_locator, hash_fields, load_aware, split_large_flows, nat, public_ranges, port_block_size, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(&pool.id)
    .bind(&pool.name)
    .bind(enum_text(&pool.mode))
    .bind(pool.anycast_locator.clone())
    .bind(to_json(&pool.hash_fields))
    .bind(i64::from(pool.load_aware))
    .bind(i64::from(pool.split_large_flows))
    .bind(i64::from(pool.nat))
    .bind(to_json(&pool.public_ranges))
    .bind(i64::from(pool.port_block_size))
    .bind(now)
    .execute(tx.conn())
    .await?;
    tx.record("edge_pool", Op::Create, &pool.id, None, &pool)
        .await?;
    tx.commit().await?;
    tracing::info!(pool = %pool.id, mode = ?pool.mode, "edge pool created");
    Ok((StatusCode::CREATED, Json(pool)))
}

/// List edge pools (admin and tenants).
#[utoipa::path(get, path = "/v1/edge-pools", tag = "edge-pools", security(("bearer" = [])),
    responses(
        (status = 200, description = "pools", body = Vec<EdgePool>),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is an agent or edge", body = ErrorBody),
    ))]
pub async fn list_pools(
    State(st): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<EdgePool>>> {
    may_read_pools(&p)?;
    let rows = sqlx::query(&format!(
        "SELECT {POOL_COLS} FROM edge_pools ORDER BY created_at, id"
    ))
    .fetch_all(st.store.pool())
    .await?;
    Ok(Json(rows.iter().map(pool_from).collect::<Result<_, _>>()?))
}

/// Show an edge pool (admin and tenants).
#[utoipa::path(get, path = "/v1/edge-pools/{id}", tag = "edge-pools", security(("bearer" = [])),
    params(("id" = String, Path, description = "pool id")),
    responses(
        (status = 200, description = "the pool", body = EdgePool),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such pool visible to the caller", body = ErrorBody),
    ))]
pub async fn get_pool(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<EdgePool>> {
    may_read_pools(&p)?;
    let row = sqlx::query(&format!("SELECT {POOL_COLS} FROM edge_pools WHERE id = $1"))
        .bind(&id)
        .fetch_optional(st.store.pool())
        .await?
        .ok_or_else(|| ApiError::not_found(None, "edge pool"))?;
    Ok(Json(pool_from(&row)?))
}

/// Delete an edge pool with no edges that no route uses (admin).
#[utoipa::path(delete, path = "/v1/edge-pools/{id}", tag = "edge-pools", security(("bearer" = [])),
    params(("id" = String, Path, description = "pool id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such pool, or caller is not the admin", body = ErrorBody),
        (status = 409, description = "the pool has edges, elastic IPs or port blocks, or routes use it", body = ErrorBody),
    ))]
pub async fn delete_pool(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require_admin("edge pool")?;
    let mut tx = st.store.write().await?;
    let row = sqlx::query(&format!("SELECT {POOL_COLS} FROM edge_pools WHERE id = $1"))
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| ApiError::not_found(None, "edge pool"))?;
    let pool = pool_from(&row)?;
    for (sql, what) in [
        ("SELECT id FROM edges WHERE pool_id = $1 LIMIT 1", "edges"),
        (
            "SELECT id FROM routes WHERE edge_pool_id = $1 LIMIT 1",
            "routes pointing at it",
        ),
        (
            "SELECT id FROM elastic_ips WHERE pool_id = $1 LIMIT 1",
            "elastic IPs",
        ),
        (
            "SELECT id FROM port_blocks WHERE pool_id = $1 LIMIT 1",
            "port blocks",
        ),
    ] {
        if sqlx::query(sql)
            .bind(&id)
            .fetch_optional(tx.conn())
            .await?
            .is_some()
        {
            return Err(ApiError::conflict(
                "in_use",
                None,
                format!("the pool still has {what}"),
            ));
        }
    }
    sqlx::query("DELETE FROM edge_pools WHERE id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    tx.record("edge_pool", Op::Delete, &id, None, &pool).await?;
    tx.commit().await?;
    tracing::info!(pool = %id, "edge pool deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Add an edge to a pool (admin). It gets the next /72 locator and a credential, returned
/// only in this response.
#[utoipa::path(post, path = "/v1/edges", tag = "edges", request_body = EdgeCreate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "added; `credential` is shown only now", body = EdgeCreated),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such pool, or caller is not the admin", body = ErrorBody),
        (status = 409, description = "name taken, or locators exhausted", body = ErrorBody),
        (status = 422, description = "invalid name or weight", body = ErrorBody),
    ))]
pub async fn create_edge(
    State(st): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<EdgeCreate>,
) -> ApiResult<Created<EdgeCreated>> {
    p.require_admin("resource")?;
    validate_name("name", &req.name)?;
    let weight = check_weight(req.weight.unwrap_or(100))?;
    let state = req.state.unwrap_or(EdgeState::Active);
    let mut tx = st.store.write().await?;
    if sqlx::query("SELECT id FROM edge_pools WHERE id = $1")
        .bind(&req.pool_id)
        .fetch_optional(tx.conn())
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(Some("pool_id"), "edge pool"));
    }
    if sqlx::query("SELECT id FROM edges WHERE name = $1")
        .bind(&req.name)
        .fetch_optional(tx.conn())
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "conflict",
            Some("name"),
            format!("an edge named {:?} exists", req.name),
        ));
    }
    let locator = next_locator(&st, &mut tx, "locator").await?;
    let now = now_ms();
    let edge = Edge {
        id: new_id("edge"),
        pool_id: req.pool_id,
        name: req.name,
        locator,
        weight,
        state,
        last_report: None,
        created_at: rfc3339(now),
    };
    sqlx::query(
        "INSERT INTO edges (id, pool_id, name, locator, weight, state, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&edge.id)
    .bind(&edge.pool_id)
    .bind(&edge.name)
    .bind(&edge.locator)
    .bind(i64::from(edge.weight))
    .bind(enum_text(&edge.state))
    .bind(now)
    .execute(tx.conn())
    .await?;
    let credential = new_credential(&mut tx, SecretKind::Edge, &edge.id, now).await?;
    tx.record("edge", Op::Create, &edge.id, None, &edge).await?;
    tx.commit().await?;
    tracing::info!(edge = %edge.id, pool = %edge.pool_id, locator = %edge.locator, "edge added");
    Ok((
        StatusCode::CREATED,
        Json(EdgeCreated {
            id: edge.id,
            pool_id: edge.pool_id,
            name: edge.name,
            locator: edge.locator,
            weight: edge.weight,
            state: edge.state,
            created_at: edge.created_at,
            credential,
        }),
    ))
}

/// List edges (admin), optionally of one pool.
#[utoipa::path(get, path = "/v1/edges", tag = "edges", security(("bearer" = [])),
    params(EdgeFilter),
    responses(
        (status = 200, description = "edges", body = Vec<Edge>),
        (status = 400, description = "bad query", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is not the admin", body = ErrorBody),
    ))]
pub async fn list_edges(
    State(st): State<AppState>,
    p: Principal,
    ApiQuery(f): ApiQuery<EdgeFilter>,
) -> ApiResult<Json<Vec<Edge>>> {
    p.require_admin("resource")?;
    let rows = sqlx::query(&format!(
        "SELECT {EDGE_COLS} FROM edges WHERE ($1 = '' OR pool_id = $1) ORDER BY created_at, id"
    ))
    .bind(f.pool_id.unwrap_or_default())
    .fetch_all(st.store.pool())
    .await?;
    Ok(Json(rows.iter().map(edge_from).collect::<Result<_, _>>()?))
}

/// Filter for listing edges.
#[derive(Debug, Clone, Default, serde::Deserialize, utoipa::IntoParams)]
#[into_params(parameter_in = Query)]
pub struct EdgeFilter {
    /// Only edges of this pool.
    #[serde(default)]
    pub pool_id: Option<String>,
}

/// Show an edge (admin, or the edge itself).
#[utoipa::path(get, path = "/v1/edges/{id}", tag = "edges", security(("bearer" = [])),
    params(("id" = String, Path, description = "edge id")),
    responses(
        (status = 200, description = "the edge", body = Edge),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such edge visible to the caller", body = ErrorBody),
    ))]
pub async fn get_edge(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Edge>> {
    let allowed = match &p {
        Principal::Admin => true,
        Principal::Edge { edge_id, .. } => *edge_id == id,
        _ => false,
    };
    if !allowed {
        return Err(ApiError::not_found(None, "edge"));
    }
    let row = sqlx::query(&format!("SELECT {EDGE_COLS} FROM edges WHERE id = $1"))
        .bind(&id)
        .fetch_optional(st.store.pool())
        .await?
        .ok_or_else(|| ApiError::not_found(None, "edge"))?;
    Ok(Json(edge_from(&row)?))
}

/// Change an edge's weight or state (admin).
#[utoipa::path(patch, path = "/v1/edges/{id}", tag = "edges", request_body = EdgeUpdate,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "edge id")),
    responses(
        (status = 200, description = "the updated edge", body = Edge),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such edge, or caller is not the admin", body = ErrorBody),
        (status = 422, description = "invalid weight", body = ErrorBody),
    ))]
pub async fn update_edge(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<EdgeUpdate>,
) -> ApiResult<Json<Edge>> {
    p.require_admin("edge")?;
    if let Some(w) = req.weight {
        check_weight(w)?;
    }
    let mut tx = st.store.write().await?;
    let row = sqlx::query(&format!("SELECT {EDGE_COLS} FROM edges WHERE id = $1"))
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| ApiError::not_found(None, "edge"))?;
    let mut edge = edge_from(&row)?;
    if let Some(w) = req.weight {
        edge.weight = w;
    }
    if let Some(s) = req.state {
        edge.state = s;
    }
    sqlx::query("UPDATE edges SET weight = $1, state = $2 WHERE id = $3")
        .bind(i64::from(edge.weight))
        .bind(enum_text(&edge.state))
        .bind(&id)
        .execute(tx.conn())
        .await?;
    tx.record("edge", Op::Update, &id, None, &edge).await?;
    tx.commit().await?;
    tracing::info!(edge = %id, weight = edge.weight, state = ?edge.state, "edge updated");
    Ok(Json(edge))
}

/// Remove an edge (admin); its credential is revoked, its locator never reused.
#[utoipa::path(delete, path = "/v1/edges/{id}", tag = "edges", security(("bearer" = [])),
    params(("id" = String, Path, description = "edge id")),
    responses(
        (status = 204, description = "removed"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such edge, or caller is not the admin", body = ErrorBody),
    ))]
pub async fn delete_edge(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require_admin("edge")?;
    let mut tx = st.store.write().await?;
    let row = sqlx::query(&format!("SELECT {EDGE_COLS} FROM edges WHERE id = $1"))
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| ApiError::not_found(None, "edge"))?;
    let edge = edge_from(&row)?;
    sqlx::query("DELETE FROM tokens WHERE kind = 'edge' AND subject_id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    sqlx::query("DELETE FROM edges WHERE id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    tx.record("edge", Op::Delete, &id, None, &edge).await?;
    tx.commit().await?;
    tracing::info!(edge = %id, "edge removed");
    Ok(StatusCode::NO_CONTENT)
}

/// An edge reports its health and load (the edge itself, or the admin). The report is
/// stored on the edge and, like every write, pushed to watchers as an edge update.
#[utoipa::path(post, path = "/v1/edges/{id}/report", tag = "edges", request_body = EdgeReportRequest,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "edge id")),
    responses(
        (status = 200, description = "the edge with its new report", body = Edge),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such edge visible to the caller", body = ErrorBody),
        (status = 422, description = "load_percent out of range", body = ErrorBody),
    ))]
pub async fn report_edge(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<EdgeReportRequest>,
) -> ApiResult<Json<Edge>> {
    let allowed = match &p {
        Principal::Admin => true,
        Principal::Edge { edge_id, .. } => *edge_id == id,
        _ => false,
    };
    if !allowed {
        return Err(ApiError::not_found(None, "edge"));
    }
    if req.load_percent > 100 {
        return Err(ApiError::invalid(
            "out_of_range",
            "load_percent",
            "load_percent must be 0..=100",
        ));
    }
    let mut tx = st.store.write().await?;
    let now = now_ms();
    let done = sqlx::query(
        "UPDATE edges SET report_healthy = $1, report_load = $2, report_at = $3 WHERE id = $4",
    )
    .bind(i64::from(req.healthy))
    .bind(i64::from(req.load_percent))
    .bind(now)
    .bind(&id)
    .execute(tx.conn())
    .await?;
    if done.rows_affected() == 0 {
        return Err(ApiError::not_found(None, "edge"));
    }
    let row = sqlx::query(&format!("SELECT {EDGE_COLS} FROM edges WHERE id = $1"))
        .bind(&id)
        .fetch_one(tx.conn())
        .await?;
    let edge = edge_from(&row)?;
    tx.record("edge", Op::Update, &id, None, &edge).await?;
    tx.commit().await?;
    tracing::debug!(edge = %id, healthy = req.healthy, load = req.load_percent, "edge report");
    Ok(Json(edge))
}
