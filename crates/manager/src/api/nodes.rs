//! Nodes (VMs): attached to a subnet on a host, with a VIP and a deterministic MAC.

use std::net::Ipv4Addr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::networks::{visible_subnet, vni_of};
use super::{parse_ip, s, ts, validate_name, Created};
use crate::addr::{mac_for, Cidr};
use crate::auth::{new_id, Principal};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::store::{now_ms, rfc3339, Op};
use crate::types::{ListFilter, Node, NodeCreate};
use crate::AppState;

pub(crate) const NODE_COLS: &str =
    "id, tenant_id, network_id, subnet_id, host_id, name, vip, mac, created_at";

pub(crate) fn node_from(row: &AnyRow) -> Result<Node, sqlx::Error> {
    Ok(Node {
        id: s(row, "id")?,
        tenant_id: s(row, "tenant_id")?,
        network_id: s(row, "network_id")?,
        subnet_id: s(row, "subnet_id")?,
        host_id: s(row, "host_id")?,
        name: s(row, "name")?,
        vip: s(row, "vip")?,
        mac: s(row, "mac")?,
        created_at: ts(row)?,
    })
}

async fn visible_node(conn: &mut AnyConnection, p: &Principal, id: &str) -> ApiResult<Node> {
    super::fetch_visible(
        conn,
        &format!("SELECT {NODE_COLS} FROM nodes WHERE id = $1"),
        id,
        node_from,
        |v| p.sees_tenant(&v.tenant_id),
        None,
        "node",
    )
    .await
}

/// Create a node: VIP given (must be free, inside the subnet, not reserved) or the lowest
/// free one; host given or the one with the fewest nodes.
#[utoipa::path(post, path = "/v1/nodes", tag = "nodes", request_body = NodeCreate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = Node),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "subnet or host not visible to the caller", body = ErrorBody),
        (status = 409, description = "vip taken, subnet full, no host, or name taken", body = ErrorBody),
        (status = 422, description = "vip invalid, outside the subnet or reserved; invalid name", body = ErrorBody),
    ))]
pub async fn create_node(
    State(st): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<NodeCreate>,
) -> ApiResult<Created<Node>> {
    p.tenant_scope()?;
    validate_name("name", &req.name)?;
    let given_vip = req.vip.as_deref().map(|v| parse_ip("vip", v)).transpose()?;
    let mut tx = st.store.write().await?;
    let sn = visible_subnet(tx.conn(), &p, &req.subnet_id, Some("subnet_id")).await?;
    let cidr: Cidr = sn
        .cidr
        .parse()
        .map_err(|e: crate::addr::CidrError| ApiError::Internal(e.to_string()))?;
    let vni: i64 = sqlx::query_scalar("SELECT vni FROM networks WHERE id = $1")
        .bind(&sn.network_id)
        .fetch_one(tx.conn())
        .await?;
    if sqlx::query("SELECT id FROM nodes WHERE network_id = $1 AND name = $2")
        .bind(&sn.network_id)
        .bind(&req.name)
        .fetch_optional(tx.conn())
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "conflict",
            Some("name"),
            format!("the network has a node named {:?}", req.name),
        ));
    }
    let host_id = match req.host_id {
        Some(h) => {
            if sqlx::query("SELECT id FROM hosts WHERE id = $1")
                .bind(&h)
                .fetch_optional(tx.conn())
                .await?
                .is_none()
            {
                return Err(ApiError::not_found(Some("host_id"), "host"));
            }
            h
        }
        None => sqlx::query_scalar::<_, String>(
            "SELECT h.id FROM hosts h LEFT JOIN nodes n ON n.host_id = h.id \
             GROUP BY h.id ORDER BY COUNT(n.id), h.id LIMIT 1",
        )
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| ApiError::conflict("exhausted", Some("host_id"), "no host is registered"))?,
    };
    let gateway = cidr.first() + 1;
    let used: Vec<i64> =
        sqlx::query_scalar("SELECT vip_num FROM nodes WHERE subnet_id = $1 ORDER BY vip_num")
            .bind(&sn.id)
            .fetch_all(tx.conn())
            .await?;
    let vip = match given_vip {
        Some(v) => {
            if !cidr.contains(v) {
                return Err(ApiError::invalid(
                    "vip_outside_subnet",
                    "vip",
                    format!("{} is not inside subnet {cidr}", Ipv4Addr::from(v)),
                ));
            }
            if v == cidr.first() || v == gateway || v == cidr.last() {
                return Err(ApiError::invalid(
                    "vip_reserved",
                    "vip",
                    format!(
                        "{} is reserved (network, gateway or broadcast address)",
                        Ipv4Addr::from(v)
                    ),
                ));
            }
            if used.binary_search(&i64::from(v)).is_ok() {
                return Err(ApiError::conflict(
                    "vip_taken",
                    Some("vip"),
                    format!("{} is used by another node", Ipv4Addr::from(v)),
                ));
            }
            v
        }
        None => {
            // Lowest free address between the gateway and the broadcast address.
            let mut candidate = i64::from(gateway) + 1;
            for u in &used {
                if *u == candidate {
                    candidate += 1;
                } else if *u > candidate {
                    break;
                }
            }
            if candidate >= i64::from(cidr.last()) {
                return Err(ApiError::conflict(
                    "exhausted",
                    Some("vip"),
                    format!("subnet {cidr} has no free address"),
                ));
            }
            candidate as u32
        }
    };
    let now = now_ms();
    let node = Node {
        id: new_id("node"),
        tenant_id: sn.tenant_id.clone(),
        network_id: sn.network_id.clone(),
        subnet_id: sn.id.clone(),
        host_id,
        name: req.name,
        vip: Ipv4Addr::from(vip).to_string(),
        mac: mac_for(vni_of(vni), vip),
        created_at: rfc3339(now),
    };
    sqlx::query(
        "INSERT INTO nodes (id, tenant_id, network_id, subnet_id, host_id, name, vip, vip_num, mac, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(&node.id)
    .bind(&node.tenant_id)
    .bind(&node.network_id)
    .bind(&node.subnet_id)
    .bind(&node.host_id)
    .bind(&node.name)
    .bind(&node.vip)
    .bind(i64::from(vip))
    .bind(&node.mac)
    .bind(now)
    .execute(tx.conn())
    .await?;
    tx.record("node", Op::Create, &node.id, Some(&node.network_id), &node)
        .await?;
    super::security_groups::attach_default(&mut tx, &node).await?;
    tx.commit().await?;
    tracing::info!(node = %node.id, vip = %node.vip, host = %node.host_id, "node created");
    Ok((StatusCode::CREATED, Json(node)))
}

/// List the nodes the caller may see, optionally filtered.
#[utoipa::path(get, path = "/v1/nodes", tag = "nodes", security(("bearer" = [])),
    params(ListFilter),
    responses(
        (status = 200, description = "nodes", body = Vec<Node>),
        (status = 400, description = "bad query", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is an agent or edge", body = ErrorBody),
    ))]
pub async fn list_nodes(
    State(st): State<AppState>,
    p: Principal,
    ApiQuery(f): ApiQuery<ListFilter>,
) -> ApiResult<Json<Vec<Node>>> {
    let scope = p.tenant_scope()?.map(str::to_string);
    let rows = sqlx::query(&format!(
        "SELECT {NODE_COLS} FROM nodes WHERE ($1 = '' OR tenant_id = $1) \
         AND ($2 = '' OR network_id = $2) AND ($3 = '' OR subnet_id = $3) \
         AND ($4 = '' OR host_id = $4) ORDER BY created_at, id"
    ))
    .bind(scope.unwrap_or_default())
    .bind(f.network_id.unwrap_or_default())
    .bind(f.subnet_id.unwrap_or_default())
    .bind(f.host_id.unwrap_or_default())
    .fetch_all(st.store.pool())
    .await?;
    Ok(Json(rows.iter().map(node_from).collect::<Result<_, _>>()?))
}

/// Show a node.
#[utoipa::path(get, path = "/v1/nodes/{id}", tag = "nodes", security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 200, description = "the node", body = Node),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such node visible to the caller", body = ErrorBody),
    ))]
pub async fn get_node(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Node>> {
    let mut conn = st.store.pool().acquire().await?;
    Ok(Json(visible_node(&mut conn, &p, &id).await?))
}

/// Delete a node; its VIP becomes free, its elastic IP is disassociated and its port
/// blocks are released (and logged as such).
#[utoipa::path(delete, path = "/v1/nodes/{id}", tag = "nodes", security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such node visible to the caller", body = ErrorBody),
    ))]
pub async fn delete_node(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = st.store.write().await?;
    let node = visible_node(tx.conn(), &p, &id).await?;
    super::eips::disassociate_node(&mut tx, &id).await?;
    super::port_blocks::release_node(&mut tx, &id).await?;
    super::security_groups::detach_node(&mut tx, &node).await?;
    sqlx::query("DELETE FROM nodes WHERE id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    tx.record("node", Op::Delete, &id, Some(&node.network_id), &node)
        .await?;
    tx.commit().await?;
    tracing::info!(node = %id, vip = %node.vip, "node deleted");
    Ok(StatusCode::NO_CONTENT)
}
