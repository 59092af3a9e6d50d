//! Networks and subnets.

use std::net::Ipv4Addr;

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use model::NetworkId;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::{i, parse_cidr, s, ts, validate_name, Created};
use crate::addr::{mac_for, Cidr};
use crate::auth::{new_id, Principal};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::store::{now_ms, rfc3339, Op};
use crate::types::{ListFilter, Network, NetworkCreate, Subnet, SubnetCreate};
use crate::AppState;

/// Smallest and largest network prefix lengths.
pub const NETWORK_PREFIX: (u8, u8) = (16, 28);
/// Longest subnet prefix (network, gateway, broadcast reserved; at least 5 usable).
pub const SUBNET_MAX_PREFIX: u8 = 29;

pub(crate) const NET_COLS: &str = "id, tenant_id, name, cidr, vni, created_at";
pub(crate) const SUB_COLS: &str =
    "s.id, s.tenant_id, s.network_id, s.name, s.cidr, s.created_at, n.vni";

pub(crate) fn network_from(row: &AnyRow) -> Result<Network, sqlx::Error> {
    Ok(Network {
        id: s(row, "id")?,
        tenant_id: s(row, "tenant_id")?,
        name: s(row, "name")?,
        cidr: s(row, "cidr")?,
        vni: i(row, "vni")? as u32,
        created_at: ts(row)?,
    })
}

pub(crate) fn vni_of(v: i64) -> NetworkId {
    NetworkId::new(v as u32).unwrap_or_else(|_| NetworkId::new(0).expect("0 is a network id"))
}

pub(crate) fn subnet_json(
    id: String,
    tenant_id: String,
    network_id: String,
    name: String,
    cidr: Cidr,
    vni: NetworkId,
    created_at: String,
) -> Subnet {
    let gw = cidr.first() + 1;
    Subnet {
        id,
        tenant_id,
        network_id,
        name,
        cidr: cidr.to_string(),
        gateway: Ipv4Addr::from(gw).to_string(),
        gateway_mac: mac_for(vni, gw),
        reserved: [cidr.first(), gw, cidr.last()]
            .iter()
            .map(|a| Ipv4Addr::from(*a).to_string())
            .collect(),
        created_at,
    }
}

pub(crate) fn subnet_from(row: &AnyRow) -> Result<Subnet, sqlx::Error> {
    let cidr_s = s(row, "cidr")?;
    let cidr: Cidr = cidr_s
        .parse()
        .map_err(|e: crate::addr::CidrError| sqlx::Error::Decode(Box::new(e)))?;
    Ok(subnet_json(
        s(row, "id")?,
        s(row, "tenant_id")?,
        s(row, "network_id")?,
        s(row, "name")?,
        cidr,
        vni_of(i(row, "vni")?),
        ts(row)?,
    ))
}

/// The network `id` if the caller may see it (`field` names the request field, if any).
pub(crate) async fn visible_network(
    conn: &mut AnyConnection,
    p: &Principal,
    id: &str,
    field: Option<&str>,
) -> ApiResult<Network> {
    super::fetch_visible(
        conn,
        &format!("SELECT {NET_COLS} FROM networks WHERE id = $1"),
        id,
        network_from,
        |v| p.sees_tenant(&v.tenant_id),
        field,
        "network",
    )
    .await
}

/// The subnet `id` if the caller may see it.
pub(crate) async fn visible_subnet(
    conn: &mut AnyConnection,
    p: &Principal,
    id: &str,
    field: Option<&str>,
) -> ApiResult<Subnet> {
    super::fetch_visible(
        conn,
        &format!("SELECT {SUB_COLS} FROM subnets s JOIN networks n ON n.id = s.network_id WHERE s.id = $1"),
        id,
        subnet_from,
        |v| p.sees_tenant(&v.tenant_id),
        field,
        "subnet",
    )
    .await
}

/// Create a network. A tenant creates in its own tenant; the admin names `tenant_id`.
#[utoipa::path(post, path = "/v1/networks", tag = "networks", request_body = NetworkCreate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = Network),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "tenant not visible, or caller is an agent or edge", body = ErrorBody),
        (status = 409, description = "name taken, or network ids exhausted", body = ErrorBody),
        (status = 422, description = "invalid cidr, prefix length or name; tenant_id missing for the admin", body = ErrorBody),
    ))]
pub async fn create_network(
    State(st): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<NetworkCreate>,
) -> ApiResult<Created<Network>> {
    let tenant_id = match (p.tenant_scope()?, req.tenant_id) {
        (None, Some(t)) => t,
        (None, None) => {
            return Err(ApiError::invalid(
                "required",
                "tenant_id",
                "the admin must name the tenant that owns the network",
            ))
        }
        (Some(me), None) => me.to_string(),
        (Some(me), Some(t)) if t == me => t,
        (Some(_), Some(_)) => return Err(ApiError::not_found(Some("tenant_id"), "tenant")),
    };
    validate_name("name", &req.name)?;
    let cidr = parse_cidr("cidr", &req.cidr)?;
    if !(NETWORK_PREFIX.0..=NETWORK_PREFIX.1).contains(&cidr.len) {
        return Err(ApiError::invalid(
            "invalid_prefix_length",
            "cidr",
            format!(
                "a network's prefix length must be /{}../{}, not /{}",
                NETWORK_PREFIX.0, NETWORK_PREFIX.1, cidr.len
            ),
        ));
    }
    let mut tx = st.store.write().await?;
    if sqlx::query("SELECT id FROM tenants WHERE id = $1")
        .bind(&tenant_id)
        .fetch_optional(tx.conn())
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(Some("tenant_id"), "tenant"));
    }
    if sqlx::query("SELECT id FROM networks WHERE tenant_id = $1 AND name = $2")
        .bind(&tenant_id)
        .bind(&req.name)
        .fetch_optional(tx.conn())
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "conflict",
            Some("name"),
            format!("the tenant has a network named {:?}", req.name),
        ));
    }
    let vni = tx.next_counter("vni").await?;
    let vni = u32::try_from(vni)
        .ok()
        .and_then(|v| NetworkId::new(v).ok())
        .ok_or_else(|| {
            ApiError::conflict(
                "exhausted",
                Some("vni"),
                "all 24-bit network ids have been handed out",
            )
        })?;
    let now = now_ms();
    let n = Network {
        id: new_id("net"),
        tenant_id,
        name: req.name,
        cidr: cidr.to_string(),
        vni: vni.get(),
        created_at: rfc3339(now),
    };
    sqlx::query(
        "INSERT INTO networks (id, tenant_id, name, cidr, vni, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&n.id)
    .bind(&n.tenant_id)
    .bind(&n.name)
    .bind(&n.cidr)
    .bind(i64::from(n.vni))
    .bind(now)
    .execute(tx.conn())
    .await?;
    tx.record("network", Op::Create, &n.id, Some(&n.id), &n)
        .await?;
    super::security_groups::create_default(&mut tx, &n).await?;
    tx.commit().await?;
    tracing::info!(network = %n.id, vni = n.vni, cidr = %n.cidr, "network created");
    Ok((StatusCode::CREATED, Json(n)))
}

/// List the networks the caller may see.
#[utoipa::path(get, path = "/v1/networks", tag = "networks", security(("bearer" = [])),
    responses(
        (status = 200, description = "networks", body = Vec<Network>),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is an agent or edge", body = ErrorBody),
    ))]
pub async fn list_networks(
    State(st): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<Network>>> {
    let rows = match p.tenant_scope()? {
        None => {
            sqlx::query(&format!(
                "SELECT {NET_COLS} FROM networks ORDER BY created_at, id"
            ))
            .fetch_all(st.store.pool())
            .await?
        }
        Some(t) => {
            sqlx::query(&format!(
                "SELECT {NET_COLS} FROM networks WHERE tenant_id = $1 ORDER BY created_at, id"
            ))
            .bind(t)
            .fetch_all(st.store.pool())
            .await?
        }
    };
    Ok(Json(
        rows.iter().map(network_from).collect::<Result<_, _>>()?,
    ))
}

/// Show a network.
#[utoipa::path(get, path = "/v1/networks/{id}", tag = "networks", security(("bearer" = [])),
    params(("id" = String, Path, description = "network id")),
    responses(
        (status = 200, description = "the network", body = Network),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such network visible to the caller", body = ErrorBody),
    ))]
pub async fn get_network(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Network>> {
    let mut conn = st.store.pool().acquire().await?;
    Ok(Json(visible_network(&mut conn, &p, &id, None).await?))
}

/// Delete a network that has no subnets and no routes.
#[utoipa::path(delete, path = "/v1/networks/{id}", tag = "networks", security(("bearer" = [])),
    params(("id" = String, Path, description = "network id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such network visible to the caller", body = ErrorBody),
        (status = 409, description = "the network still has subnets, routes, peerings or security groups", body = ErrorBody),
    ))]
pub async fn delete_network(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = st.store.write().await?;
    let n = visible_network(tx.conn(), &p, &id, None).await?;
    for (sql, what) in [
        (
            "SELECT id FROM subnets WHERE network_id = $1 LIMIT 1",
            "subnets",
        ),
        (
            "SELECT id FROM routes WHERE network_id = $1 LIMIT 1",
            "routes",
        ),
        (
            "SELECT id FROM peerings WHERE network_id = $1 OR peer_network_id = $1 LIMIT 1",
            "peerings",
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
                format!("the network still has {what}; delete them first"),
            ));
        }
    }
    super::security_groups::delete_default(&mut tx, &id).await?;
    sqlx::query("DELETE FROM networks WHERE id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    tx.record("network", Op::Delete, &id, Some(&id), &n).await?;
    tx.commit().await?;
    tracing::info!(network = %id, "network deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Create a subnet inside a network.
#[utoipa::path(post, path = "/v1/subnets", tag = "subnets", request_body = SubnetCreate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = Subnet),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "network not visible to the caller", body = ErrorBody),
        (status = 409, description = "overlaps another subnet, or name taken", body = ErrorBody),
        (status = 422, description = "invalid cidr or name, or cidr outside the network", body = ErrorBody),
    ))]
pub async fn create_subnet(
    State(st): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<SubnetCreate>,
) -> ApiResult<Created<Subnet>> {
    p.tenant_scope()?;
    validate_name("name", &req.name)?;
    let cidr = parse_cidr("cidr", &req.cidr)?;
    let mut tx = st.store.write().await?;
    let net = visible_network(tx.conn(), &p, &req.network_id, Some("network_id")).await?;
    let net_cidr: Cidr = net
        .cidr
        .parse()
        .map_err(|e: crate::addr::CidrError| ApiError::Internal(e.to_string()))?;
    if !net_cidr.covers(&cidr) {
        return Err(ApiError::invalid(
            "outside_network",
            "cidr",
            format!("{cidr} is not inside the network's {net_cidr}"),
        ));
    }
    if cidr.len > SUBNET_MAX_PREFIX {
        return Err(ApiError::invalid(
            "invalid_prefix_length",
            "cidr",
            format!("a subnet's prefix length must be at most /{SUBNET_MAX_PREFIX}"),
        ));
    }
    let rows = sqlx::query("SELECT id, name, cidr FROM subnets WHERE network_id = $1")
        .bind(&net.id)
        .fetch_all(tx.conn())
        .await?;
    for r in &rows {
        if s(r, "name")? == req.name {
            return Err(ApiError::conflict(
                "conflict",
                Some("name"),
                format!("the network has a subnet named {:?}", req.name),
            ));
        }
        let other: Cidr = s(r, "cidr")?
            .parse()
            .map_err(|e: crate::addr::CidrError| ApiError::Internal(e.to_string()))?;
        if other.overlaps(&cidr) {
            return Err(ApiError::conflict(
                "overlap",
                Some("cidr"),
                format!("{cidr} overlaps subnet {} ({other})", s(r, "id")?),
            ));
        }
    }
    let now = now_ms();
    let sn = subnet_json(
        new_id("sub"),
        net.tenant_id.clone(),
        net.id.clone(),
        req.name,
        cidr,
        vni_of(i64::from(net.vni)),
        rfc3339(now),
    );
    sqlx::query(
        "INSERT INTO subnets (id, tenant_id, network_id, name, cidr, first_addr, last_addr, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(&sn.id)
    .bind(&sn.tenant_id)
    .bind(&sn.network_id)
    .bind(&sn.name)
    .bind(&sn.cidr)
    .bind(i64::from(cidr.first()))
    .bind(i64::from(cidr.last()))
    .bind(now)
    .execute(tx.conn())
    .await?;
    tx.record("subnet", Op::Create, &sn.id, Some(&net.id), &sn)
        .await?;
    tx.commit().await?;
    tracing::info!(subnet = %sn.id, network = %net.id, cidr = %sn.cidr, "subnet created");
    Ok((StatusCode::CREATED, Json(sn)))
}

/// List the subnets the caller may see (optionally of one network).
#[utoipa::path(get, path = "/v1/subnets", tag = "subnets", security(("bearer" = [])),
    params(ListFilter),
    responses(
        (status = 200, description = "subnets", body = Vec<Subnet>),
        (status = 400, description = "bad query", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is an agent or edge", body = ErrorBody),
    ))]
pub async fn list_subnets(
    State(st): State<AppState>,
    p: Principal,
    ApiQuery(f): ApiQuery<ListFilter>,
) -> ApiResult<Json<Vec<Subnet>>> {
    let scope = p.tenant_scope()?.map(str::to_string);
    let rows = sqlx::query(&format!(
        "SELECT {SUB_COLS} FROM subnets s JOIN networks n ON n.id = s.network_id \
         WHERE ($1 = '' OR s.tenant_id = $1) AND ($2 = '' OR s.network_id = $2) \
         ORDER BY s.created_at, s.id"
    ))
    .bind(scope.unwrap_or_default())
    .bind(f.network_id.unwrap_or_default())
    .fetch_all(st.store.pool())
    .await?;
    Ok(Json(
        rows.iter().map(subnet_from).collect::<Result<_, _>>()?,
    ))
}

/// Show a subnet.
#[utoipa::path(get, path = "/v1/subnets/{id}", tag = "subnets", security(("bearer" = [])),
    params(("id" = String, Path, description = "subnet id")),
    responses(
        (status = 200, description = "the subnet", body = Subnet),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such subnet visible to the caller", body = ErrorBody),
    ))]
pub async fn get_subnet(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Subnet>> {
    let mut conn = st.store.pool().acquire().await?;
    Ok(Json(visible_subnet(&mut conn, &p, &id, None).await?))
}

/// Delete a subnet that has no nodes.
#[utoipa::path(delete, path = "/v1/subnets/{id}", tag = "subnets", security(("bearer" = [])),
    params(("id" = String, Path, description = "subnet id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such subnet visible to the caller", body = ErrorBody),
        (status = 409, description = "the subnet still has nodes or routes", body = ErrorBody),
    ))]
pub async fn delete_subnet(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = st.store.write().await?;
    let sn = visible_subnet(tx.conn(), &p, &id, None).await?;
    for (table, what) in [("nodes", "nodes"), ("routes", "routes in its table")] {
        if sqlx::query(&format!(
            "SELECT id FROM {table} WHERE subnet_id = $1 LIMIT 1"
        ))
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?
        .is_some()
        {
            return Err(ApiError::conflict(
                "in_use",
                None,
                format!("the subnet still has {what}; delete them first"),
            ));
        }
    }
    super::acls::delete_for_subnet(&mut tx, &id).await?;
    sqlx::query("DELETE FROM subnets WHERE id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    tx.record("subnet", Op::Delete, &id, Some(&sn.network_id), &sn)
        .await?;
    tx.commit().await?;
    tracing::info!(subnet = %id, "subnet deleted");
    Ok(StatusCode::NO_CONTENT)
}
