//! Security groups: stateful allow rules (direction, protocol, ports, remote CIDR or
//! group) of a network, attached to its nodes. Every network gets a `default` group at
//! creation (all egress, ingress from the same group), and every new node is attached to it.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use super::networks::visible_network;
use super::nodes::{node_from, NODE_COLS};
use super::{parse_cidr, s, ts, validate_name, Created};
use crate::auth::{new_id, Principal};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::store::{now_ms, rfc3339, Op, WriteTx};
use crate::types::{
    Direction, ListFilter, Network, Node, SecurityGroup, SecurityGroupAttach,
    SecurityGroupAttachment, SecurityGroupCreate, SecurityRule,
};
use crate::AppState;

pub(crate) const SG_COLS: &str = "id, tenant_id, network_id, name, rules, created_at";

/// Name of the group every network has.
pub const DEFAULT_GROUP: &str = "default";

pub(crate) fn sg_from(row: &AnyRow) -> Result<SecurityGroup, sqlx::Error> {
    Ok(SecurityGroup {
        id: s(row, "id")?,
        tenant_id: s(row, "tenant_id")?,
        network_id: s(row, "network_id")?,
        name: s(row, "name")?,
        rules: serde_json::from_str(&s(row, "rules")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        created_at: ts(row)?,
    })
}

pub(crate) fn attachment(
    node_id: &str,
    group_id: &str,
    network_id: &str,
) -> SecurityGroupAttachment {
    SecurityGroupAttachment {
        id: format!("{node_id}/{group_id}"),
        node_id: node_id.into(),
        group_id: group_id.into(),
        network_id: network_id.into(),
    }
}

async fn visible_sg(
    conn: &mut AnyConnection,
    p: &Principal,
    id: &str,
    field: Option<&str>,
) -> ApiResult<SecurityGroup> {
    super::fetch_visible(
        conn,
        &format!("SELECT {SG_COLS} FROM security_groups WHERE id = $1"),
        id,
        sg_from,
        |v| p.sees_tenant(&v.tenant_id),
        field,
        "security group",
    )
    .await
}

/// Checks a rule's protocol and port range (ports for tcp/udp only, both or neither,
/// 1 <= from <= to); returns the protocol in lower case. `f` names a field of the rule.
pub(crate) fn check_proto_ports(
    f: &dyn Fn(&str) -> String,
    protocol: &str,
    port_from: Option<u16>,
    port_to: Option<u16>,
) -> ApiResult<String> {
    let proto = protocol.to_ascii_lowercase();
    let ported = match proto.as_str() {
        "tcp" | "udp" => true,
        "any" | "icmp" => false,
        n => match n.parse::<u16>() {
            Ok(v) if v <= 255 => matches!(v, 6 | 17),
            _ => {
                return Err(ApiError::invalid(
                    "invalid_protocol",
                    &f("protocol"),
                    format!("{:?} is not any, tcp, udp, icmp or 0..=255", protocol),
                ))
            }
        },
    };
    let ports = match (port_from, port_to) {
        (None, None) => None,
        (Some(a), Some(b)) => Some((a, b)),
        (Some(_), None) => {
            return Err(ApiError::invalid(
                "required",
                &f("port_to"),
                "port_to is needed with port_from",
            ))
        }
        (None, Some(_)) => {
            return Err(ApiError::invalid(
                "required",
                &f("port_from"),
                "port_from is needed with port_to",
            ))
        }
    };
    if let Some((a, b)) = ports {
        if !ported {
            return Err(ApiError::invalid(
                "incompatible",
                &f("port_from"),
                "ports apply to tcp and udp only",
            ));
        }
        if a == 0 || b < a {
            return Err(ApiError::invalid(
                "out_of_range",
                &f("port_to"),
                "ports must satisfy 1 <= port_from <= port_to",
            ));
        }
    }
    Ok(proto)
}

/// Checks rules; remote groups must be groups of `network_id`.
async fn check_rules(
    conn: &mut AnyConnection,
    network_id: &str,
    rules: &[SecurityRule],
) -> ApiResult<Vec<SecurityRule>> {
    let mut out = Vec::with_capacity(rules.len());
    for (k, r) in rules.iter().enumerate() {
        let f = |name: &str| format!("rules[{k}].{name}");
        let proto = check_proto_ports(&f, &r.protocol, r.port_from, r.port_to)?;
        let remote_cidr = match (&r.remote_cidr, &r.remote_group_id) {
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid(
                    "incompatible",
                    &f("remote_group_id"),
                    "give remote_cidr or remote_group_id, not both",
                ))
            }
            (None, None) => {
                return Err(ApiError::invalid(
                    "required",
                    &f("remote_cidr"),
                    "a rule needs remote_cidr or remote_group_id",
                ))
            }
            (Some(c), None) => Some(parse_cidr(&f("remote_cidr"), c)?.to_string()),
            (None, Some(g)) => {
                if sqlx::query("SELECT id FROM security_groups WHERE id = $1 AND network_id = $2")
                    .bind(g)
                    .bind(network_id)
                    .fetch_optional(&mut *conn)
                    .await?
                    .is_none()
                {
                    return Err(ApiError::not_found(
                        Some(&f("remote_group_id")),
                        "security group",
                    ));
                }
                None
            }
        };
        out.push(SecurityRule {
            direction: r.direction,
            protocol: proto,
            port_from: r.port_from,
            port_to: r.port_to,
            remote_cidr,
            remote_group_id: r.remote_group_id.clone(),
        });
    }
    Ok(out)
}

async fn insert(tx: &mut WriteTx, g: &SecurityGroup, now: i64) -> ApiResult<()> {
    sqlx::query(
        "INSERT INTO security_groups (id, tenant_id, network_id, name, rules, created_at) \
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&g.id)
    .bind(&g.tenant_id)
    .bind(&g.network_id)
    .bind(&g.name)
    .bind(serde_json::to_string(&g.rules).map_err(|e| ApiError::Internal(e.to_string()))?)
    .bind(now)
    .execute(tx.conn())
    .await?;
    tx.record("security_group", Op::Create, &g.id, Some(&g.network_id), g)
        .await?;
    Ok(())
}

/// Creates a network's `default` group inside `tx` (network create).
pub(crate) async fn create_default(tx: &mut WriteTx, net: &Network) -> ApiResult<()> {
    let id = new_id("sg");
    let now = now_ms();
    let g = SecurityGroup {
        id: id.clone(),
        tenant_id: net.tenant_id.clone(),
        network_id: net.id.clone(),
        name: DEFAULT_GROUP.into(),
        rules: vec![
            SecurityRule {
                direction: Direction::Egress,
                protocol: "any".into(),
                port_from: None,
                port_to: None,
                remote_cidr: Some("0.0.0.0/0".into()),
                remote_group_id: None,
            },
            SecurityRule {
                direction: Direction::Ingress,
                protocol: "any".into(),
                port_from: None,
                port_to: None,
                remote_cidr: None,
                remote_group_id: Some(id),
            },
        ],
        created_at: rfc3339(now),
    };
    insert(tx, &g, now).await
}

/// Deletes a network's `default` group inside `tx` (network delete); other groups must be
/// gone (409 `in_use`).
pub(crate) async fn delete_default(tx: &mut WriteTx, network_id: &str) -> ApiResult<()> {
    let rows = sqlx::query(&format!(
        "SELECT {SG_COLS} FROM security_groups WHERE network_id = $1"
    ))
    .bind(network_id)
    .fetch_all(tx.conn())
    .await?;
    let groups = rows.iter().map(sg_from).collect::<Result<Vec<_>, _>>()?;
    if groups.iter().any(|g| g.name != DEFAULT_GROUP) {
        return Err(ApiError::conflict(
            "in_use",
            None,
            "the network still has security groups; delete them first",
        ));
    }
    for g in groups {
        sqlx::query("DELETE FROM security_groups WHERE id = $1")
            .bind(&g.id)
            .execute(tx.conn())
            .await?;
        tx.record("security_group", Op::Delete, &g.id, Some(&g.network_id), &g)
            .await?;
    }
    Ok(())
}

async fn attach_in(
    tx: &mut WriteTx,
    node: &Node,
    group_id: &str,
) -> ApiResult<SecurityGroupAttachment> {
    sqlx::query(
        "INSERT INTO node_security_groups (node_id, group_id, network_id) VALUES ($1, $2, $3)",
    )
    .bind(&node.id)
    .bind(group_id)
    .bind(&node.network_id)
    .execute(tx.conn())
    .await?;
    let a = attachment(&node.id, group_id, &node.network_id);
    tx.record(
        "security_group_attachment",
        Op::Create,
        &a.id,
        Some(&a.network_id),
        &a,
    )
    .await?;
    Ok(a)
}

/// Attaches a new node to its network's `default` group inside `tx` (node create).
pub(crate) async fn attach_default(tx: &mut WriteTx, node: &Node) -> ApiResult<()> {
    let id: Option<String> =
        sqlx::query_scalar("SELECT id FROM security_groups WHERE network_id = $1 AND name = $2")
            .bind(&node.network_id)
            .bind(DEFAULT_GROUP)
            .fetch_optional(tx.conn())
            .await?;
    if let Some(id) = id {
        attach_in(tx, node, &id).await?;
    }
    Ok(())
}

/// Detaches a node from all its groups inside `tx` (node delete).
pub(crate) async fn detach_node(tx: &mut WriteTx, node: &Node) -> ApiResult<()> {
    let groups: Vec<String> = sqlx::query_scalar(
        "SELECT group_id FROM node_security_groups WHERE node_id = $1 ORDER BY group_id",
    )
    .bind(&node.id)
    .fetch_all(tx.conn())
    .await?;
    for g in groups {
        sqlx::query("DELETE FROM node_security_groups WHERE node_id = $1 AND group_id = $2")
            .bind(&node.id)
            .bind(&g)
            .execute(tx.conn())
            .await?;
        let a = attachment(&node.id, &g, &node.network_id);
        tx.record(
            "security_group_attachment",
            Op::Delete,
            &a.id,
            Some(&a.network_id),
            &a,
        )
        .await?;
    }
    Ok(())
}

/// Create a security group in a network.
#[utoipa::path(post, path = "/v1/security-groups", tag = "security-groups", request_body = SecurityGroupCreate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = SecurityGroup),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "network or remote group not visible to the caller", body = ErrorBody),
        (status = 409, description = "name taken", body = ErrorBody),
        (status = 422, description = "invalid name, protocol, ports or remote", body = ErrorBody),
    ))]
pub async fn create_sg(
    State(st): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<SecurityGroupCreate>,
) -> ApiResult<Created<SecurityGroup>> {
    p.tenant_scope()?;
    validate_name("name", &req.name)?;
    let mut tx = st.store.write().await?;
    let net = visible_network(tx.conn(), &p, &req.network_id, Some("network_id")).await?;
    let rules = check_rules(tx.conn(), &net.id, &req.rules).await?;
    if sqlx::query("SELECT id FROM security_groups WHERE network_id = $1 AND name = $2")
        .bind(&net.id)
        .bind(&req.name)
        .fetch_optional(tx.conn())
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "conflict",
            Some("name"),
            format!("the network has a security group named {:?}", req.name),
        ));
    }
    let now = now_ms();
    let g = SecurityGroup {
        id: new_id("sg"),
        tenant_id: net.tenant_id.clone(),
        network_id: net.id.clone(),
        name: req.name,
        rules,
        created_at: rfc3339(now),
    };
    insert(&mut tx, &g, now).await?;
    tx.commit().await?;
    tracing::info!(group = %g.id, network = %g.network_id, "security group created");
    Ok((StatusCode::CREATED, Json(g)))
}

/// List the security groups the caller may see, optionally of one network.
#[utoipa::path(get, path = "/v1/security-groups", tag = "security-groups", security(("bearer" = [])),
    params(ListFilter),
    responses(
        (status = 200, description = "security groups", body = Vec<SecurityGroup>),
        (status = 400, description = "bad query", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is an agent or edge", body = ErrorBody),
    ))]
pub async fn list_sgs(
    State(st): State<AppState>,
    p: Principal,
    ApiQuery(f): ApiQuery<ListFilter>,
) -> ApiResult<Json<Vec<SecurityGroup>>> {
    let scope = p.tenant_scope()?.map(str::to_string);
    let rows = sqlx::query(&format!(
        "SELECT {SG_COLS} FROM security_groups WHERE ($1 = '' OR tenant_id = $1) \
         AND ($2 = '' OR network_id = $2) ORDER BY created_at, id"
    ))
    .bind(scope.unwrap_or_default())
    .bind(f.network_id.unwrap_or_default())
    .fetch_all(st.store.pool())
    .await?;
    Ok(Json(rows.iter().map(sg_from).collect::<Result<_, _>>()?))
}

/// Show a security group.
#[utoipa::path(get, path = "/v1/security-groups/{id}", tag = "security-groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "security group id")),
    responses(
        (status = 200, description = "the group", body = SecurityGroup),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such group visible to the caller", body = ErrorBody),
    ))]
pub async fn get_sg(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<SecurityGroup>> {
    let mut conn = st.store.pool().acquire().await?;
    Ok(Json(visible_sg(&mut conn, &p, &id, None).await?))
}

/// Delete a security group: not the `default` one, not attached, not named by other rules.
#[utoipa::path(delete, path = "/v1/security-groups/{id}", tag = "security-groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "security group id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such group visible to the caller", body = ErrorBody),
        (status = 409, description = "default group, attached to nodes, or named by another group's rules", body = ErrorBody),
    ))]
pub async fn delete_sg(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    let mut tx = st.store.write().await?;
    let g = visible_sg(tx.conn(), &p, &id, None).await?;
    if g.name == DEFAULT_GROUP {
        return Err(ApiError::conflict(
            "default_group",
            None,
            "the default group goes with its network",
        ));
    }
    if sqlx::query("SELECT node_id FROM node_security_groups WHERE group_id = $1 LIMIT 1")
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "in_use",
            None,
            "the group is attached to nodes",
        ));
    }
    if sqlx::query("SELECT id FROM security_groups WHERE id <> $1 AND network_id = $2 AND rules LIKE $3 LIMIT 1")
        .bind(&id)
        .bind(&g.network_id)
        .bind(format!("%\"{id}\"%"))
        .fetch_optional(tx.conn())
        .await?
        .is_some()
    {
        return Err(ApiError::conflict("in_use", None, "rules of another group name this group"));
    }
    sqlx::query("DELETE FROM security_groups WHERE id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    tx.record("security_group", Op::Delete, &id, Some(&g.network_id), &g)
        .await?;
    tx.commit().await?;
    tracing::info!(group = %id, "security group deleted");
    Ok(StatusCode::NO_CONTENT)
}

async fn tenant_node(conn: &mut AnyConnection, p: &Principal, id: &str) -> ApiResult<Node> {
    p.tenant_scope()?;
    let row = sqlx::query(&format!("SELECT {NODE_COLS} FROM nodes WHERE id = $1"))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await?
        .ok_or_else(|| ApiError::not_found(None, "node"))?;
    let n = node_from(&row)?;
    if p.sees_tenant(&n.tenant_id) {
        Ok(n)
    } else {
        Err(ApiError::not_found(None, "node"))
    }
}

/// The security groups a node is attached to.
#[utoipa::path(get, path = "/v1/nodes/{id}/security-groups", tag = "security-groups", security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 200, description = "attachments", body = Vec<SecurityGroupAttachment>),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such node visible to the caller", body = ErrorBody),
    ))]
pub async fn list_node_sgs(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Vec<SecurityGroupAttachment>>> {
    let mut conn = st.store.pool().acquire().await?;
    let n = tenant_node(&mut conn, &p, &id).await?;
    let groups: Vec<String> = sqlx::query_scalar(
        "SELECT group_id FROM node_security_groups WHERE node_id = $1 ORDER BY group_id",
    )
    .bind(&n.id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Json(
        groups
            .iter()
            .map(|g| attachment(&n.id, g, &n.network_id))
            .collect(),
    ))
}

/// Attach a security group of the node's network to the node.
#[utoipa::path(post, path = "/v1/nodes/{id}/security-groups", tag = "security-groups",
    request_body = SecurityGroupAttach, security(("bearer" = [])),
    params(("id" = String, Path, description = "node id")),
    responses(
        (status = 201, description = "attached", body = SecurityGroupAttachment),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "node or group not visible to the caller", body = ErrorBody),
        (status = 409, description = "attached already", body = ErrorBody),
        (status = 422, description = "the group belongs to another network", body = ErrorBody),
    ))]
pub async fn attach_sg(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<SecurityGroupAttach>,
) -> ApiResult<Created<SecurityGroupAttachment>> {
    let mut tx = st.store.write().await?;
    let n = tenant_node(tx.conn(), &p, &id).await?;
    let g = visible_sg(tx.conn(), &p, &req.group_id, Some("group_id")).await?;
    if g.network_id != n.network_id {
        return Err(ApiError::invalid(
            "incompatible",
            "group_id",
            "the group belongs to another network",
        ));
    }
    if sqlx::query("SELECT node_id FROM node_security_groups WHERE node_id = $1 AND group_id = $2")
        .bind(&n.id)
        .bind(&g.id)
        .fetch_optional(tx.conn())
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "conflict",
            Some("group_id"),
            "the node is in this group already",
        ));
    }
    let a = attach_in(&mut tx, &n, &g.id).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(a)))
}

/// Detach a security group from a node.
#[utoipa::path(delete, path = "/v1/nodes/{id}/security-groups/{group_id}", tag = "security-groups",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "node id"), ("group_id" = String, Path, description = "security group id")),
    responses(
        (status = 204, description = "detached"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "node not visible, or not in that group", body = ErrorBody),
    ))]
pub async fn detach_sg(
    State(st): State<AppState>,
    p: Principal,
    ApiPath((id, group_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    let mut tx = st.store.write().await?;
    let n = tenant_node(tx.conn(), &p, &id).await?;
    let gone = sqlx::query("DELETE FROM node_security_groups WHERE node_id = $1 AND group_id = $2")
        .bind(&n.id)
        .bind(&group_id)
        .execute(tx.conn())
        .await?
        .rows_affected();
    if gone == 0 {
        return Err(ApiError::not_found(None, "attachment"));
    }
    let a = attachment(&n.id, &group_id, &n.network_id);
    tx.record(
        "security_group_attachment",
        Op::Delete,
        &a.id,
        Some(&a.network_id),
        &a,
    )
    .await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}
