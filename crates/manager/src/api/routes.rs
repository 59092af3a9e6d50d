//! Routes of a network (minimal: destination CIDR -> edge pool or blackhole). They are what
//! authorises an edge to resolve addresses of a network.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::networks::visible_network;
use super::{opt_s, parse_cidr, s, ts, Created};
use crate::addr::Cidr;
use crate::auth::{new_id, Principal};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::store::{now_ms, rfc3339, Op};
use crate::types::{ListFilter, Route, RouteCreate, RouteTarget};
use crate::AppState;

pub(crate) const ROUTE_COLS: &str =
    "id, tenant_id, network_id, destination, target, edge_pool_id, created_at";

pub(crate) fn route_from(row: &AnyRow) -> Result<Route, sqlx::Error> {
    let target = match s(row, "target")?.as_str() {
        "edge_pool" => RouteTarget::EdgePool,
        _ => RouteTarget::Blackhole,
    };
    Ok(Route {
        id: s(row, "id")?,
        tenant_id: s(row, "tenant_id")?,
        network_id: s(row, "network_id")?,
        destination: s(row, "destination")?,
        target,
        edge_pool_id: opt_s(row, "edge_pool_id")?,
        created_at: ts(row)?,
    })
}

async fn visible_route(conn: &mut AnyConnection, p: &Principal, id: &str) -> ApiResult<Route> {
    let row = sqlx::query(&format!("SELECT {ROUTE_COLS} FROM routes WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?;
    match row {
        Some(r) => {
            let rt = route_from(&r)?;
            if p.sees_tenant(&rt.tenant_id) {
                Ok(rt)
            } else {
                Err(ApiError::not_found(None, "route"))
            }
        }
        None => Err(ApiError::not_found(None, "route")),
    }
}

/// Add a route to a network: one per destination, not inside the network's own CIDR.
#[utoipa::path(post, path = "/v1/routes", tag = "routes", request_body = RouteCreate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = Route),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "network or pool not visible to the caller", body = ErrorBody),
        (status = 409, description = "the network has a route for this destination", body = ErrorBody),
        (status = 422, description = "invalid destination, or edge_pool_id missing/extra for the target", body = ErrorBody),
    ))]
pub async fn create_route(
    State(st): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<RouteCreate>,
) -> ApiResult<Created<Route>> {
    p.tenant_scope()?;
    let dest = parse_cidr("destination", &req.destination)?;
    match (req.target, &req.edge_pool_id) {
        (RouteTarget::EdgePool, None) => {
            return Err(ApiError::invalid(
                "required",
                "edge_pool_id",
                "an edge_pool route needs edge_pool_id",
            ))
        }
        (RouteTarget::Blackhole, Some(_)) => {
            return Err(ApiError::invalid(
                "unexpected",
                "edge_pool_id",
                "a blackhole route has no edge_pool_id",
            ))
        }
        _ => {}
    }
    let mut tx = st.store.write().await?;
    let net = visible_network(tx.conn(), &p, &req.network_id, Some("network_id")).await?;
    let net_cidr: Cidr = net
        .cidr
        .parse()
        .map_err(|e: crate::addr::CidrError| ApiError::Internal(e.to_string()))?;
    if net_cidr.covers(&dest) {
        return Err(ApiError::invalid(
            "local_destination",
            "destination",
            format!("{dest} is inside the network's own {net_cidr}, which is routed locally"),
        ));
    }
    if let Some(pool) = &req.edge_pool_id {
        if sqlx::query("SELECT id FROM edge_pools WHERE id = $1")
            .bind(pool)
            .fetch_optional(tx.conn())
            .await?
            .is_none()
        {
            return Err(ApiError::not_found(Some("edge_pool_id"), "edge pool"));
        }
    }
    if sqlx::query("SELECT id FROM routes WHERE network_id = $1 AND destination = $2")
        .bind(&net.id)
        .bind(dest.to_string())
        .fetch_optional(tx.conn())
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "conflict",
            Some("destination"),
            format!("the network already has a route for {dest}"),
        ));
    }
    let now = now_ms();
    let rt = Route {
        id: new_id("rt"),
        tenant_id: net.tenant_id.clone(),
        network_id: net.id.clone(),
        destination: dest.to_string(),
        target: req.target,
        edge_pool_id: req.edge_pool_id,
        created_at: rfc3339(now),
    };
    let target = match rt.target {
        RouteTarget::EdgePool => "edge_pool",
        RouteTarget::Blackhole => "blackhole",
    };
    sqlx::query(
        "INSERT INTO routes (id, tenant_id, network_id, destination, target, edge_pool_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&rt.id)
    .bind(&rt.tenant_id)
    .bind(&rt.network_id)
    .bind(&rt.destination)
    .bind(target)
    .bind(rt.edge_pool_id.clone())
    .bind(now)
    .execute(tx.conn())
    .await?;
    tx.record("route", Op::Create, &rt.id, Some(&rt.network_id), &rt)
        .await?;
    tx.commit().await?;
    tracing::info!(route = %rt.id, network = %rt.network_id, destination = %rt.destination, "route created");
    Ok((StatusCode::CREATED, Json(rt)))
}

/// List the routes the caller may see, optionally of one network.
#[utoipa::path(get, path = "/v1/routes", tag = "routes", security(("bearer" = [])),
    params(ListFilter),
    responses(
        (status = 200, description = "routes", body = Vec<Route>),
        (status = 400, description = "bad query", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is an agent or edge", body = ErrorBody),
    ))]
pub async fn list_routes(
    State(st): State<AppState>,
    p: Principal,
    ApiQuery(f): ApiQuery<ListFilter>,
) -> ApiResult<Json<Vec<Route>>> {
    let scope = p.tenant_scope()?.map(str::to_string);
    let rows = sqlx::query(&format!(
        "SELECT {ROUTE_COLS} FROM routes WHERE ($1 = '' OR tenant_id = $1) \
         AND ($2 = '' OR network_id = $2) ORDER BY created_at, id"
    ))
    .bind(scope.unwrap_or_default())
    .bind(f.network_id.unwrap_or_default())
    .fetch_all(st.store.pool())
    .await?;
    Ok(Json(rows.iter().map(route_from).collect::<Result<_, _>>()?))
}

/// Show a route.
#[utoipa::path(get, path = "/v1/routes/{id}", tag = "routes", security(("bearer" = [])),
    params(("id" = String, Path, description = "route id")),
    responses(
        (status = 200, description = "the route", body = Route),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such route visible to the caller", body = ErrorBody),
    ))]
pub async fn get_route(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Route>> {
    let mut conn = st.store.pool().acquire().await?;
    Ok(Json(visible_route(&mut conn, &p, &id).await?))
}

/// Delete a route.
#[utoipa::path(delete, path = "/v1/routes/{id}", tag = "routes", security(("bearer" = [])),
    params(("id" = String, Path, description = "route id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such route visible to the caller", body = ErrorBody),
    ))]
pub async fn delete_route(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = st.store.write().await?;
    let rt = visible_route(tx.conn(), &p, &id).await?;
    sqlx::query("DELETE FROM routes WHERE id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    tx.record("route", Op::Delete, &id, Some(&rt.network_id), &rt)
        .await?;
    tx.commit().await?;
    tracing::info!(route = %id, "route deleted");
    Ok(StatusCode::NO_CONTENT)
}
