//! Peerings between two networks: active at once inside a tenant, pending until the other
//! tenant accepts otherwise. Routes `CIDR -> peering:<id>` point at them. A peering is
//! visible to both tenants and recorded in the change log under both networks, so the
//! agents of either side get it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::edges::{enum_from, enum_text};
use super::networks::{network_from, visible_network, NET_COLS};
use super::{s, ts, Created};
use crate::addr::Cidr;
use crate::auth::{new_id, Principal};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::store::{now_ms, rfc3339, Op, WriteTx};
use crate::types::{Peering, PeeringCreate, PeeringState};
use crate::AppState;

pub(crate) const PEER_COLS: &str =
    "id, tenant_id, network_id, peer_tenant_id, peer_network_id, state, created_at";

pub(crate) fn peering_from(row: &AnyRow) -> Result<Peering, sqlx::Error> {
    Ok(Peering {
        id: s(row, "id")?,
        tenant_id: s(row, "tenant_id")?,
        network_id: s(row, "network_id")?,
        peer_tenant_id: s(row, "peer_tenant_id")?,
        peer_network_id: s(row, "peer_network_id")?,
        state: enum_from(s(row, "state")?)?,
        created_at: ts(row)?,
    })
}

async fn visible_peering(conn: &mut AnyConnection, p: &Principal, id: &str) -> ApiResult<Peering> {
    super::fetch_visible(
        conn,
        &format!("SELECT {PEER_COLS} FROM peerings WHERE id = $1"),
        id,
        peering_from,
        |v| p.sees_tenant(&v.tenant_id) || p.sees_tenant(&v.peer_tenant_id),
        None,
        "peering",
    )
    .await
}

/// One change record per side, so that watchers of either network get it.
async fn record_both(tx: &mut WriteTx, op: Op, pe: &Peering) -> ApiResult<()> {
    tx.record("peering", op, &pe.id, Some(&pe.network_id), pe)
        .await?;
    tx.record("peering", op, &pe.id, Some(&pe.peer_network_id), pe)
        .await?;
    Ok(())
}

/// Peer the caller's network with another (disjoint CIDRs, one peering per pair).
#[utoipa::path(post, path = "/v1/peerings", tag = "peerings", request_body = PeeringCreate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "created (active, or pending the other tenant's acceptance)", body = Peering),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "network not visible to the caller, or no such peer network", body = ErrorBody),
        (status = 409, description = "the CIDRs overlap, or the networks are peered already", body = ErrorBody),
        (status = 422, description = "a network cannot peer with itself", body = ErrorBody),
    ))]
pub async fn create_peering(
    State(st): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<PeeringCreate>,
) -> ApiResult<Created<Peering>> {
    p.tenant_scope()?;
    if req.network_id == req.peer_network_id {
        return Err(ApiError::invalid(
            "incompatible",
            "peer_network_id",
            "a network cannot peer with itself",
        ));
    }
    let mut tx = st.store.write().await?;
    let net = visible_network(tx.conn(), &p, &req.network_id, Some("network_id")).await?;
    let peer = match sqlx::query(&format!("SELECT {NET_COLS} FROM networks WHERE id = $1"))
        .bind(&req.peer_network_id)
        .fetch_optional(tx.conn())
        .await?
    {
        Some(r) => network_from(&r)?,
        None => return Err(ApiError::not_found(Some("peer_network_id"), "network")),
    };
    let (a, b): (Cidr, Cidr) = (
        net.cidr
            .parse()
            .map_err(|e: crate::addr::CidrError| ApiError::Internal(e.to_string()))?,
        peer.cidr
            .parse()
            .map_err(|e: crate::addr::CidrError| ApiError::Internal(e.to_string()))?,
    );
    if a.overlaps(&b) {
        return Err(ApiError::conflict(
            "overlap",
            Some("peer_network_id"),
            format!("{a} and {b} overlap: peered networks need disjoint addresses"),
        ));
    }
    if sqlx::query(
        "SELECT id FROM peerings WHERE (network_id = $1 AND peer_network_id = $2) \
         OR (network_id = $2 AND peer_network_id = $1)",
    )
    .bind(&net.id)
    .bind(&peer.id)
    .fetch_optional(tx.conn())
    .await?
    .is_some()
    {
        return Err(ApiError::conflict(
            "conflict",
            Some("peer_network_id"),
            "the networks are peered already",
        ));
    }
    let state = if net.tenant_id == peer.tenant_id || p.is_admin() {
        PeeringState::Active
    } else {
        PeeringState::Pending
    };
    let now = now_ms();
    let pe = Peering {
        id: new_id("peer"),
        tenant_id: net.tenant_id.clone(),
        network_id: net.id.clone(),
        peer_tenant_id: peer.tenant_id.clone(),
        peer_network_id: peer.id.clone(),
        state,
        created_at: rfc3339(now),
    };
    sqlx::query(
        "INSERT INTO peerings (id, tenant_id, network_id, peer_tenant_id, peer_network_id, state, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&pe.id)
    .bind(&pe.tenant_id)
    .bind(&pe.network_id)
    .bind(&pe.peer_tenant_id)
    .bind(&pe.peer_network_id)
    .bind(enum_text(&pe.state))
    .bind(now)
    .execute(tx.conn())
    .await?;
    record_both(&mut tx, Op::Create, &pe).await?;
    tx.commit().await?;
    tracing::info!(peering = %pe.id, network = %pe.network_id, peer = %pe.peer_network_id, state = ?pe.state, "peering created");
    Ok((StatusCode::CREATED, Json(pe)))
}

/// List the peerings the caller is a side of (admin: all).
#[utoipa::path(get, path = "/v1/peerings", tag = "peerings", security(("bearer" = [])),
    responses(
        (status = 200, description = "peerings", body = Vec<Peering>),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is an agent or edge", body = ErrorBody),
    ))]
pub async fn list_peerings(
    State(st): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<Peering>>> {
    let scope = p.tenant_scope()?.map(str::to_string);
    let rows = sqlx::query(&format!(
        "SELECT {PEER_COLS} FROM peerings WHERE ($1 = '' OR tenant_id = $1 OR peer_tenant_id = $1) \
         ORDER BY created_at, id"
    ))
    .bind(scope.unwrap_or_default())
    .fetch_all(st.store.pool())
    .await?;
    Ok(Json(
        rows.iter().map(peering_from).collect::<Result<_, _>>()?,
    ))
}

/// Show a peering.
#[utoipa::path(get, path = "/v1/peerings/{id}", tag = "peerings", security(("bearer" = [])),
    params(("id" = String, Path, description = "peering id")),
    responses(
        (status = 200, description = "the peering", body = Peering),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such peering visible to the caller", body = ErrorBody),
    ))]
pub async fn get_peering(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Peering>> {
    let mut conn = st.store.pool().acquire().await?;
    Ok(Json(visible_peering(&mut conn, &p, &id).await?))
}

/// Accept a pending peering (the other tenant, or the admin).
#[utoipa::path(post, path = "/v1/peerings/{id}/accept", tag = "peerings", security(("bearer" = [])),
    params(("id" = String, Path, description = "peering id")),
    responses(
        (status = 200, description = "active", body = Peering),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such peering visible to the caller", body = ErrorBody),
        (status = 409, description = "not pending, or the caller is the requesting side", body = ErrorBody),
    ))]
pub async fn accept_peering(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Peering>> {
    p.tenant_scope()?;
    let mut tx = st.store.write().await?;
    let mut pe = visible_peering(tx.conn(), &p, &id).await?;
    if pe.state != PeeringState::Pending {
        return Err(ApiError::conflict(
            "not_pending",
            None,
            "the peering is active already",
        ));
    }
    if !p.sees_tenant(&pe.peer_tenant_id) {
        return Err(ApiError::conflict(
            "not_peer",
            None,
            "only the other tenant can accept the peering",
        ));
    }
    sqlx::query("UPDATE peerings SET state = 'active' WHERE id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    pe.state = PeeringState::Active;
    record_both(&mut tx, Op::Update, &pe).await?;
    tx.commit().await?;
    tracing::info!(peering = %id, "peering accepted");
    Ok(Json(pe))
}

/// Delete a peering (either side); routes must not point at it.
#[utoipa::path(delete, path = "/v1/peerings/{id}", tag = "peerings", security(("bearer" = [])),
    params(("id" = String, Path, description = "peering id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such peering visible to the caller", body = ErrorBody),
        (status = 409, description = "routes point at it", body = ErrorBody),
    ))]
pub async fn delete_peering(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.tenant_scope()?;
    let mut tx = st.store.write().await?;
    let pe = visible_peering(tx.conn(), &p, &id).await?;
    if sqlx::query("SELECT id FROM routes WHERE peering_id = $1 LIMIT 1")
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "in_use",
            None,
            "routes point at the peering; delete them first",
        ));
    }
    sqlx::query("DELETE FROM peerings WHERE id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    record_both(&mut tx, Op::Delete, &pe).await?;
    tx.commit().await?;
    tracing::info!(peering = %id, "peering deleted");
    Ok(StatusCode::NO_CONTENT)
}
