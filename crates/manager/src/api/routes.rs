//! Route tables: per network, optionally per subnet (looked up first). A route is
//! destination CIDR -> `pool:<id>` (internet or VPN-like pool), `peering:<id>` or
//! `blackhole`; the network's own CIDR is the implicit `local` route; longest prefix wins
//! (applied by the data plane). Routes to a pool are what authorise an edge to resolve
//! addresses of a network.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::networks::{visible_network, visible_subnet};
use super::{opt_s, parse_cidr, s, ts, Created};
use crate::addr::Cidr;
use crate::auth::{new_id, Principal};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::store::{now_ms, rfc3339, Op};
use crate::types::{ListFilter, Route, RouteCreate};
use crate::AppState;

pub(crate) const ROUTE_COLS: &str =
    "id, tenant_id, network_id, subnet_id, destination, target, edge_pool_id, peering_id, created_at";

pub(crate) fn route_from(row: &AnyRow) -> Result<Route, sqlx::Error> {
    Ok(Route {
        id: s(row, "id")?,
        tenant_id: s(row, "tenant_id")?,
        network_id: s(row, "network_id")?,
        subnet_id: opt_s(row, "subnet_id")?,
        destination: s(row, "destination")?,
        target: s(row, "target")?,
        edge_pool_id: opt_s(row, "edge_pool_id")?,
        peering_id: opt_s(row, "peering_id")?,
        created_at: ts(row)?,
    })
}

/// A parsed route target.
enum Target {
    Blackhole,
    Pool(String),
    Peering(String),
}

fn parse_target(t: &str) -> ApiResult<Target> {
    if t == "blackhole" {
        return Ok(Target::Blackhole);
    }
    if t == "local" {
        return Err(ApiError::invalid(
            "implicit_local",
            "target",
            "the local route (the network's own CIDR) is implicit and cannot be added",
        ));
    }
    let id = |rest: &str| -> ApiResult<String> {
        if rest.is_empty() {
            Err(ApiError::invalid(
                "invalid_target",
                "target",
                "the target names no object",
            ))
        } else {
            Ok(rest.to_string())
        }
    };
    if let Some(rest) = t.strip_prefix("pool:") {
        return Ok(Target::Pool(id(rest)?));
    }
    if let Some(rest) = t.strip_prefix("peering:") {
        return Ok(Target::Peering(id(rest)?));
    }
    Err(ApiError::invalid(
        "invalid_target",
        "target",
        format!("{t:?} is not blackhole, pool:<id> or peering:<id>"),
    ))
}

async fn visible_route(conn: &mut AnyConnection, p: &Principal, id: &str) -> ApiResult<Route> {
    super::fetch_visible(
        conn,
        &format!("SELECT {ROUTE_COLS} FROM routes WHERE id = $1"),
        id,
        route_from,
        |v| p.sees_tenant(&v.tenant_id),
        None,
        "route",
    )
    .await
}

/// Add a route to a network's route table or a subnet's: one per destination and table,
/// not inside the network's own CIDR (the implicit local route); the target must exist
/// and be usable (any pool; a peering of this network that is active, for a destination
/// inside the peer network).
#[utoipa::path(post, path = "/v1/routes", tag = "routes", request_body = RouteCreate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = Route),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "network, subnet, pool or peering not visible to the caller", body = ErrorBody),
        (status = 409, description = "the table has a route for this destination, or the peering is not active", body = ErrorBody),
        (status = 422, description = "invalid destination or target, local destination, a peering route outside the peer network, subnet of another network", body = ErrorBody),
    ))]
pub async fn create_route(
    State(st): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<RouteCreate>,
) -> ApiResult<Created<Route>> {
    p.tenant_scope()?;
    let dest = parse_cidr("destination", &req.destination)?;
    let target = parse_target(&req.target)?;
    let mut tx = st.store.write().await?;
    let net = visible_network(tx.conn(), &p, &req.network_id, Some("network_id")).await?;
    if let Some(sub) = &req.subnet_id {
        let sn = visible_subnet(tx.conn(), &p, sub, Some("subnet_id")).await?;
        if sn.network_id != net.id {
            return Err(ApiError::invalid(
                "incompatible",
                "subnet_id",
                format!("subnet {sub} is not in network {}", net.id),
            ));
        }
    }
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
    let (edge_pool_id, peering_id) = match &target {
        Target::Blackhole => (None, None),
        Target::Pool(pool) => {
            if sqlx::query("SELECT id FROM edge_pools WHERE id = $1")
                .bind(pool)
                .fetch_optional(tx.conn())
                .await?
                .is_none()
            {
                return Err(ApiError::not_found(Some("target"), "edge pool"));
            }
            (Some(pool.clone()), None)
        }
        Target::Peering(pe) => {
            // The peering and the CIDR of its other side.
            let row = sqlx::query(
                "SELECT p.state, o.cidr FROM peerings p JOIN networks o \
                 ON o.id = CASE WHEN p.network_id = $2 THEN p.peer_network_id ELSE p.network_id END \
                 WHERE p.id = $1 AND (p.network_id = $2 OR p.peer_network_id = $2)",
            )
            .bind(pe)
            .bind(&net.id)
            .fetch_optional(tx.conn())
            .await?;
            let Some(row) = row else {
                return Err(ApiError::not_found(Some("target"), "peering"));
            };
            if s(&row, "state")? != "active" {
                return Err(ApiError::conflict(
                    "not_active",
                    Some("target"),
                    format!("peering {pe} is not accepted yet"),
                ));
            }
            // The data plane sends what the route covers to the peer network's nodes, and
            // the peer takes only its own addresses: a wider route would be a black hole.
            let peer_cidr: Cidr = s(&row, "cidr")?
                .parse()
                .map_err(|e: crate::addr::CidrError| ApiError::Internal(e.to_string()))?;
            if !peer_cidr.covers(&dest) {
                return Err(ApiError::invalid(
                    "outside_network",
                    "destination",
                    format!("{dest} is not inside the peer network's {peer_cidr}"),
                ));
            }
            (None, Some(pe.clone()))
        }
    };
    let table_key = req.subnet_id.clone().unwrap_or_default();
    if sqlx::query(
        "SELECT id FROM routes WHERE network_id = $1 AND table_key = $2 AND destination = $3",
    )
    .bind(&net.id)
    .bind(&table_key)
    .bind(dest.to_string())
    .fetch_optional(tx.conn())
    .await?
    .is_some()
    {
        return Err(ApiError::conflict(
            "conflict",
            Some("destination"),
            format!("the route table already has a route for {dest}"),
        ));
    }
    let now = now_ms();
    let rt = Route {
        id: new_id("rt"),
        tenant_id: net.tenant_id.clone(),
        network_id: net.id.clone(),
        subnet_id: req.subnet_id,
        destination: dest.to_string(),
        target: req.target,
        edge_pool_id,
        peering_id,
        created_at: rfc3339(now),
    };
    sqlx::query(
        "INSERT INTO routes (id, tenant_id, network_id, table_key, subnet_id, destination, target, edge_pool_id, peering_id, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&rt.id)
    .bind(&rt.tenant_id)
    .bind(&rt.network_id)
    .bind(&table_key)
    .bind(rt.subnet_id.clone())
    .bind(&rt.destination)
    .bind(&rt.target)
    .bind(rt.edge_pool_id.clone())
    .bind(rt.peering_id.clone())
    .bind(now)
    .execute(tx.conn())
    .await?;
    tx.record("route", Op::Create, &rt.id, Some(&rt.network_id), &rt)
        .await?;
    tx.commit().await?;
    tracing::info!(route = %rt.id, network = %rt.network_id, destination = %rt.destination, target = %rt.target, "route created");
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
         AND ($2 = '' OR network_id = $2) AND ($3 = '' OR table_key = $3) \
         ORDER BY created_at, id"
    ))
    .bind(scope.unwrap_or_default())
    .bind(f.network_id.unwrap_or_default())
    .bind(f.subnet_id.unwrap_or_default())
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
