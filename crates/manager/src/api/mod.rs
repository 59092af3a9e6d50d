//! The REST API: routes, the OpenAPI document, and helpers shared by the handlers.

mod acls;
mod edges;
mod eips;
mod hosts;
mod networks;
mod nodes;
mod peerings;
mod port_blocks;
mod resolve;
mod routes;
mod security_groups;
mod tenants;
pub mod watch;

use std::time::Instant;

use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::StatusCode;
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use sqlx::any::AnyRow;
use sqlx::Row;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use crate::addr::{Cidr, CidrError};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::MAX_BODY;
use crate::types::*;
use crate::AppState;

/// The OpenAPI 3 document of the API.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "Canopy manager API",
        description = "Control plane of the Canopy virtual network: tenants, networks, subnets, hosts, nodes, edge pools, edges, route tables, security groups, network ACLs, peerings, elastic IPs, NAT port blocks and address resolution. Every error is JSON {code, message, field}. Objects of other tenants answer 404."
    ),
    paths(
        healthz,
        tenants::create_tenant,
        tenants::list_tenants,
        tenants::get_tenant,
        tenants::delete_tenant,
        tenants::create_token,
        tenants::list_tokens,
        tenants::delete_token,
        networks::create_network,
        networks::list_networks,
        networks::get_network,
        networks::delete_network,
        networks::create_subnet,
        networks::list_subnets,
        networks::get_subnet,
        networks::delete_subnet,
        hosts::create_host,
        hosts::list_hosts,
        hosts::get_host,
        hosts::delete_host,
        nodes::create_node,
        nodes::list_nodes,
        nodes::get_node,
        nodes::delete_node,
        edges::create_pool,
        edges::list_pools,
        edges::get_pool,
        edges::delete_pool,
        edges::create_edge,
        edges::list_edges,
        edges::get_edge,
        edges::update_edge,
        edges::delete_edge,
        edges::report_edge,
        routes::create_route,
        routes::list_routes,
        routes::get_route,
        routes::delete_route,
        acls::get_acl,
        acls::put_acl,
        security_groups::create_sg,
        security_groups::list_sgs,
        security_groups::get_sg,
        security_groups::delete_sg,
        security_groups::list_node_sgs,
        security_groups::attach_sg,
        security_groups::detach_sg,
        peerings::create_peering,
        peerings::list_peerings,
        peerings::get_peering,
        peerings::accept_peering,
        peerings::delete_peering,
        eips::create_eip,
        eips::list_eips,
        eips::get_eip,
        eips::associate_eip,
        eips::disassociate_eip,
        eips::delete_eip,
        port_blocks::create_block,
        port_blocks::list_blocks,
        port_blocks::delete_block,
        port_blocks::lookup_block,
        resolve::resolve,
        resolve::stats,
        watch::watch,
    ),
    components(schemas(ErrorBody)),
    modifiers(&BearerAuth),
    tags(
        (name = "health"), (name = "tenants"), (name = "networks"), (name = "subnets"),
        (name = "hosts"), (name = "nodes"), (name = "edge-pools"), (name = "edges"),
        (name = "routes"), (name = "security-groups"), (name = "network-acls"), (name = "peerings"), (name = "elastic-ips"), (name = "port-blocks"), (name = "resolve"),
        (name = "watch")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The OpenAPI document as JSON.
pub fn openapi_json() -> String {
    ApiDoc::openapi()
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

/// The whole HTTP API over `state`.
pub fn router(state: AppState) -> Router {
    let doc = openapi_json();
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(move || async move { ([("content-type", "application/json")], doc) }),
        )
        .route(
            "/v1/tenants",
            get(tenants::list_tenants).post(tenants::create_tenant),
        )
        .route(
            "/v1/tenants/{id}",
            get(tenants::get_tenant).delete(tenants::delete_tenant),
        )
        .route(
            "/v1/tenants/{id}/tokens",
            get(tenants::list_tokens).post(tenants::create_token),
        )
        .route(
            "/v1/tenants/{id}/tokens/{token_id}",
            axum::routing::delete(tenants::delete_token),
        )
        .route(
            "/v1/networks",
            get(networks::list_networks).post(networks::create_network),
        )
        .route(
            "/v1/networks/{id}",
            get(networks::get_network).delete(networks::delete_network),
        )
        .route(
            "/v1/subnets",
            get(networks::list_subnets).post(networks::create_subnet),
        )
        .route(
            "/v1/subnets/{id}",
            get(networks::get_subnet).delete(networks::delete_subnet),
        )
        .route("/v1/hosts", get(hosts::list_hosts).post(hosts::create_host))
        .route(
            "/v1/hosts/{id}",
            get(hosts::get_host).delete(hosts::delete_host),
        )
        .route("/v1/nodes", get(nodes::list_nodes).post(nodes::create_node))
        .route(
            "/v1/nodes/{id}",
            get(nodes::get_node).delete(nodes::delete_node),
        )
        .route(
            "/v1/edge-pools",
            get(edges::list_pools).post(edges::create_pool),
        )
        .route(
            "/v1/edge-pools/{id}",
            get(edges::get_pool).delete(edges::delete_pool),
        )
        .route("/v1/edges", get(edges::list_edges).post(edges::create_edge))
        .route(
            "/v1/edges/{id}",
            get(edges::get_edge)
                .patch(edges::update_edge)
                .delete(edges::delete_edge),
        )
        .route("/v1/edges/{id}/report", post(edges::report_edge))
        .route(
            "/v1/routes",
            get(routes::list_routes).post(routes::create_route),
        )
        .route(
            "/v1/routes/{id}",
            get(routes::get_route).delete(routes::delete_route),
        )
        .route(
            "/v1/subnets/{id}/acl",
            get(acls::get_acl).put(acls::put_acl),
        )
        .route(
            "/v1/security-groups",
            get(security_groups::list_sgs).post(security_groups::create_sg),
        )
        .route(
            "/v1/security-groups/{id}",
            get(security_groups::get_sg).delete(security_groups::delete_sg),
        )
        .route(
            "/v1/nodes/{id}/security-groups",
            get(security_groups::list_node_sgs).post(security_groups::attach_sg),
        )
        .route(
            "/v1/nodes/{id}/security-groups/{group_id}",
            axum::routing::delete(security_groups::detach_sg),
        )
        .route(
            "/v1/peerings",
            get(peerings::list_peerings).post(peerings::create_peering),
        )
        .route(
            "/v1/peerings/{id}",
            get(peerings::get_peering).delete(peerings::delete_peering),
        )
        .route("/v1/peerings/{id}/accept", post(peerings::accept_peering))
        .route(
            "/v1/elastic-ips",
            get(eips::list_eips).post(eips::create_eip),
        )
        .route(
            "/v1/elastic-ips/{id}",
            get(eips::get_eip).delete(eips::delete_eip),
        )
        .route("/v1/elastic-ips/{id}/associate", post(eips::associate_eip))
        .route(
            "/v1/elastic-ips/{id}/disassociate",
            post(eips::disassociate_eip),
        )
        .route(
            "/v1/nodes/{id}/port-blocks",
            get(port_blocks::list_blocks).post(port_blocks::create_block),
        )
        .route("/v1/port-blocks/lookup", get(port_blocks::lookup_block))
        .route(
            "/v1/port-blocks/{id}",
            axum::routing::delete(port_blocks::delete_block),
        )
        .route("/v1/resolve", post(resolve::resolve))
        .route("/v1/stats", get(resolve::stats))
        .route("/v1/watch", get(watch::watch))
        .fallback(fallback)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn(log_request))
        .with_state(state)
}

async fn fallback() -> ApiError {
    ApiError::not_found(None, "route")
}

async fn method_not_allowed() -> Response {
    let body = ErrorBody {
        code: "method_not_allowed".into(),
        message: "method not allowed on this path".into(),
        field: None,
    };
    (StatusCode::METHOD_NOT_ALLOWED, Json(body)).into_response()
}

async fn log_request(req: Request, next: Next) -> Response {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    tracing::info!(
        %method,
        %path,
        status = resp.status().as_u16(),
        micros = start.elapsed().as_micros() as u64,
        "request"
    );
    resp
}

/// Prometheus metrics of this replica (text format 0.0.4). Counts only, nothing that
/// names a tenant or an address, so, like `/healthz`, it needs no token: scrape it from
/// the network the manager listens on.
pub async fn metrics(State(st): State<AppState>) -> Response {
    use std::fmt::Write as _;
    use std::sync::atomic::Ordering::Relaxed;
    let m = &st.metrics;
    let revision = st.store.revision().await.unwrap_or(-1);
    let blocks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM port_blocks")
        .fetch_one(st.store.pool())
        .await
        .unwrap_or(-1);
    // (name, type, help, [(labels, value)])
    type Family = (
        &'static str,
        &'static str,
        &'static str,
        Vec<(&'static str, i64)>,
    );
    let families: [Family; 6] = [
        (
            "canopy_manager_revision",
            "gauge",
            "The store's revision (every write adds one).",
            vec![("", revision)],
        ),
        (
            "canopy_manager_resolves_total",
            "counter",
            "Address resolutions by result.",
            vec![
                ("result=\"ok\"", m.resolve_ok.load(Relaxed) as i64),
                (
                    "result=\"not_found\"",
                    m.resolve_not_found.load(Relaxed) as i64,
                ),
                ("result=\"refused\"", m.resolve_refused.load(Relaxed) as i64),
            ],
        ),
        (
            "canopy_manager_resolve_cache_total",
            "counter",
            "Resolution answers found in the cache (hit) or read from the store (miss).",
            vec![
                ("result=\"hit\"", m.resolve_cache_hits.load(Relaxed) as i64),
                (
                    "result=\"miss\"",
                    m.resolve_cache_misses.load(Relaxed) as i64,
                ),
            ],
        ),
        (
            "canopy_manager_port_block_requests_total",
            "counter",
            "Port block requests: assigned, or refused because the pool had none left.",
            vec![
                (
                    "result=\"assigned\"",
                    m.port_blocks_assigned.load(Relaxed) as i64,
                ),
                (
                    "result=\"exhausted\"",
                    m.port_blocks_exhausted.load(Relaxed) as i64,
                ),
            ],
        ),
        (
            "canopy_manager_port_blocks",
            "gauge",
            "Port blocks held by nodes now.",
            vec![("", blocks)],
        ),
        (
            "canopy_manager_watch_streams",
            "gauge",
            "Watch streams open now (agents, edges).",
            vec![("", m.watch_streams.load(Relaxed) as i64)],
        ),
    ];
    let mut out = String::new();
    for (name, kind, help, samples) in families {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for (labels, v) in samples {
            let labels = if labels.is_empty() {
                String::new()
            } else {
                format!("{{{labels}}}")
            };
            let _ = writeln!(out, "{name}{labels} {v}");
        }
    }
    ([("content-type", "text/plain; version=0.0.4")], out).into_response()
}

/// Liveness and store reachability.
#[utoipa::path(get, path = "/healthz", tag = "health",
    responses(
        (status = 200, description = "serving, store reachable", body = Health),
        (status = 503, description = "store unreachable", body = ErrorBody),
    ))]
pub async fn healthz(State(st): State<AppState>) -> Response {
    match st.store.revision().await {
        Ok(revision) => Json(Health {
            status: "ok".into(),
            revision,
        })
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "health check: store unreachable");
            let body = ErrorBody {
                code: "unavailable".into(),
                message: "the store is not reachable".into(),
                field: None,
            };
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

/// The one row `sql` selects by `id` (its only parameter), made into a `T` by `from`, if
/// `visible` lets the caller see it. A row the caller may not see answers as a missing one
/// does, 404 naming `what` (and `field` when the id came in a request body), so that
/// another tenant's ids cannot be probed.
pub(crate) async fn fetch_visible<T>(
    conn: &mut sqlx::AnyConnection,
    sql: &str,
    id: &str,
    from: fn(&AnyRow) -> Result<T, sqlx::Error>,
    visible: impl FnOnce(&T) -> bool,
    field: Option<&str>,
    what: &str,
) -> ApiResult<T> {
    let row = sqlx::query(sql).bind(id).fetch_optional(&mut *conn).await?;
    match row.map(|r| from(&r)).transpose()? {
        Some(v) if visible(&v) => Ok(v),
        _ => Err(ApiError::not_found(field, what)),
    }
}

/// Checks a name: 1..=64 characters of `[A-Za-z0-9._-]`.
pub(crate) fn validate_name(field: &str, name: &str) -> ApiResult<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(ApiError::invalid(
            "invalid_name",
            field,
            format!("{field} must be 1..=64 characters of A-Z a-z 0-9 . _ -"),
        ))
    }
}

/// Parses an IPv4 CIDR, a 422 `invalid_cidr` naming `field` otherwise.
pub(crate) fn parse_cidr(field: &str, s: &str) -> ApiResult<Cidr> {
    s.parse::<Cidr>().map_err(|e| {
        let msg = match &e {
            CidrError::Syntax(_) | CidrError::HostBits { .. } => e.to_string(),
        };
        ApiError::invalid("invalid_cidr", field, msg)
    })
}

/// Parses an IPv4 address, a 422 `invalid_ip` naming `field` otherwise.
pub(crate) fn parse_ip(field: &str, s: &str) -> ApiResult<u32> {
    s.parse::<std::net::Ipv4Addr>().map(u32::from).map_err(|_| {
        ApiError::invalid("invalid_ip", field, format!("{s:?} is not an IPv4 address"))
    })
}

/// A text column.
pub(crate) fn s(row: &AnyRow, col: &str) -> Result<String, sqlx::Error> {
    row.try_get(col)
}

/// A nullable text column.
pub(crate) fn opt_s(row: &AnyRow, col: &str) -> Result<Option<String>, sqlx::Error> {
    row.try_get(col)
}

/// An integer column.
pub(crate) fn i(row: &AnyRow, col: &str) -> Result<i64, sqlx::Error> {
    row.try_get(col)
}

/// A creation time column as RFC 3339.
pub(crate) fn ts(row: &AnyRow) -> Result<String, sqlx::Error> {
    Ok(crate::store::rfc3339(i(row, "created_at")?))
}

/// `StatusCode::CREATED` with a JSON body.
pub(crate) type Created<T> = (StatusCode, Json<T>);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openapi_document_lists_every_route() {
        let doc: serde_json::Value = serde_json::from_str(&openapi_json()).unwrap();
        assert_eq!(doc["openapi"].as_str().unwrap().chars().next(), Some('3'));
        let paths = doc["paths"].as_object().unwrap();
        for p in [
            "/healthz",
            "/v1/tenants",
            "/v1/tenants/{id}",
            "/v1/tenants/{id}/tokens",
            "/v1/tenants/{id}/tokens/{token_id}",
            "/v1/networks",
            "/v1/networks/{id}",
            "/v1/subnets",
            "/v1/subnets/{id}",
            "/v1/hosts",
            "/v1/hosts/{id}",
            "/v1/nodes",
            "/v1/nodes/{id}",
            "/v1/edge-pools",
            "/v1/edge-pools/{id}",
            "/v1/edges",
            "/v1/edges/{id}",
            "/v1/edges/{id}/report",
            "/v1/routes",
            "/v1/routes/{id}",
            "/v1/subnets/{id}/acl",
            "/v1/security-groups",
            "/v1/security-groups/{id}",
            "/v1/nodes/{id}/security-groups",
            "/v1/nodes/{id}/security-groups/{group_id}",
            "/v1/peerings",
            "/v1/peerings/{id}",
            "/v1/peerings/{id}/accept",
            "/v1/elastic-ips",
            "/v1/elastic-ips/{id}",
            "/v1/elastic-ips/{id}/associate",
            "/v1/elastic-ips/{id}/disassociate",
            "/v1/nodes/{id}/port-blocks",
            "/v1/port-blocks/{id}",
            "/v1/port-blocks/lookup",
            "/v1/resolve",
            "/v1/stats",
            "/v1/watch",
        ] {
            assert!(paths.contains_key(p), "missing {p}");
        }
        assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    }
}
