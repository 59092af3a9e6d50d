//! Authorised address resolution for agents and edges, and the counters.

use std::net::Ipv4Addr;
use std::str::FromStr;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::Json;
use model::{Locator, SubstrateAddr};

use super::networks::vni_of;
use super::{i, parse_ip, s};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::ApiJson;
use crate::types::{Resolution, ResolveRequest, Stats};
use crate::AppState;

/// Where `ip` lives in `network_id`. An agent may ask only about networks in which its host
/// has a node or that have an active peering with one (a packet routed to the peering goes
/// to the peer's node, and the peer's senders are checked), an edge only about networks
/// with a route to its pool; the admin about any.
/// A refusal answers exactly like an unknown address (404), and is logged and counted.
#[utoipa::path(post, path = "/v1/resolve", tag = "resolve", request_body = ResolveRequest,
    security(("bearer" = [])),
    responses(
        (status = 200, description = "where the address lives", body = Resolution),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such address, or the caller may not resolve in this network", body = ErrorBody),
        (status = 422, description = "ip is not an IPv4 address", body = ErrorBody),
    ))]
pub async fn resolve(
    State(st): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<ResolveRequest>,
) -> ApiResult<Json<Resolution>> {
    if let Principal::Tenant(_) = p {
        return Err(ApiError::not_found(None, "resource"));
    }
    let ip = parse_ip("ip", &req.ip)?;
    // Read at the revision taken before any query: what is cached under it was read at it
    // or later, and the cache is dropped once a newer revision is seen.
    let rev = st.cache.revision(&st.store).await?;
    let allowed = match st.cache.allowed(rev, &p, &req.network_id) {
        Some(a) => a,
        None => {
            let a = may_resolve(&st, &p, &req.network_id).await?;
            st.cache
                .put_allowed(rev, p.clone(), req.network_id.clone(), a);
            a
        }
    };
    if !allowed {
        st.metrics.resolve_refused.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(principal = ?p, network = %req.network_id, ip = %req.ip, "resolve refused");
        return Err(ApiError::not_found(None, "address"));
    }
    let answer = match st.cache.answer(rev, &req.network_id, ip) {
        Some(a) => {
            st.metrics
                .resolve_cache_hits
                .fetch_add(1, Ordering::Relaxed);
            a
        }
        None => {
            st.metrics
                .resolve_cache_misses
                .fetch_add(1, Ordering::Relaxed);
            let a = lookup(&st, &req.network_id, ip).await?;
            st.cache
                .put_answer(rev, req.network_id.clone(), ip, a.clone());
            a
        }
    };
    let Some(answer) = answer else {
        st.metrics.resolve_not_found.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(network = %req.network_id, ip = %req.ip, "resolve: no such address");
        return Err(ApiError::not_found(None, "address"));
    };
    st.metrics.resolve_ok.fetch_add(1, Ordering::Relaxed);
    Ok(Json(answer))
}

/// Whether `p` may resolve in `network_id` (from the store).
async fn may_resolve(st: &AppState, p: &Principal, network_id: &str) -> ApiResult<bool> {
    let pool = st.store.pool();
    Ok(match p {
        Principal::Admin => true,
        Principal::Agent(host) => {
            sqlx::query("SELECT id FROM nodes WHERE network_id = $1 AND host_id = $2 LIMIT 1")
                .bind(network_id)
                .bind(host)
                .fetch_optional(pool)
                .await?
                .is_some()
                || sqlx::query(
                    "SELECT p.id FROM peerings p WHERE p.state = 'active' AND \
                     ((p.network_id = $1 AND p.peer_network_id IN \
                       (SELECT network_id FROM nodes WHERE host_id = $2)) \
                     OR (p.peer_network_id = $1 AND p.network_id IN \
                       (SELECT network_id FROM nodes WHERE host_id = $2))) LIMIT 1",
                )
                .bind(network_id)
                .bind(host)
                .fetch_optional(pool)
                .await?
                .is_some()
        }
        Principal::Edge { pool_id, .. } => {
            sqlx::query("SELECT id FROM routes WHERE network_id = $1 AND edge_pool_id = $2 LIMIT 1")
                .bind(network_id)
                .bind(pool_id)
                .fetch_optional(pool)
                .await?
                .is_some()
        }
        Principal::Tenant(_) => false,
    })
}

/// Where `ip` lives in `network_id` (from the store); `None` if nowhere.
async fn lookup(st: &AppState, network_id: &str, ip: u32) -> ApiResult<Option<Resolution>> {
    let row = sqlx::query(
        "SELECT n.id, n.mac, h.locator, w.vni FROM nodes n \
         JOIN hosts h ON h.id = n.host_id JOIN networks w ON w.id = n.network_id \
         WHERE n.network_id = $1 AND n.vip_num = $2",
    )
    .bind(network_id)
    .bind(i64::from(ip))
    .fetch_optional(st.store.pool())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let locator_s = s(&row, "locator")?;
    let locator = Locator::from_str(&locator_s).map_err(|e| ApiError::Internal(e.to_string()))?;
    let vni = vni_of(i(&row, "vni")?);
    let addr = SubstrateAddr::new(locator, vni, Ipv4Addr::from(ip));
    Ok(Some(Resolution {
        node_id: s(&row, "id")?,
        mac: s(&row, "mac")?,
        locator: locator_s,
        vni: vni.get(),
        substrate_address: addr.to_addr().to_string(),
    }))
}

/// Resolution counters of this replica and the store revision (admin).
#[utoipa::path(get, path = "/v1/stats", tag = "resolve", security(("bearer" = [])),
    responses(
        (status = 200, description = "counters", body = Stats),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is not the admin", body = ErrorBody),
    ))]
pub async fn stats(State(st): State<AppState>, p: Principal) -> ApiResult<Json<Stats>> {
    p.require_admin("resource")?;
    Ok(Json(Stats {
        revision: st.store.revision().await?,
        resolve_ok: st.metrics.resolve_ok.load(Ordering::Relaxed),
        resolve_not_found: st.metrics.resolve_not_found.load(Ordering::Relaxed),
        resolve_refused: st.metrics.resolve_refused.load(Ordering::Relaxed),
    }))
}
