//! Network ACLs: per subnet, ordered numbered allow/deny rules (stateless; lowest number
//! first, first match decides; no rules = allow everything). The ACL is replaced whole.

use axum::extract::State;
use axum::Json;
use sqlx::any::AnyRow;

use super::networks::visible_subnet;
use super::parse_cidr;
use super::security_groups::check_proto_ports;
use super::{i, s};
use crate::auth::Principal;
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::store::{now_ms, rfc3339, Op, WriteTx};
use crate::types::{AclRule, Direction, NetworkAcl, NetworkAclUpdate, Subnet};
use crate::AppState;

/// Highest rule number.
pub const MAX_RULE_NUMBER: u32 = 32766;

pub(crate) const ACL_COLS: &str = "subnet_id, tenant_id, network_id, rules, updated_at";

pub(crate) fn acl_from(row: &AnyRow) -> Result<NetworkAcl, sqlx::Error> {
    let subnet_id = s(row, "subnet_id")?;
    Ok(NetworkAcl {
        id: subnet_id.clone(),
        tenant_id: s(row, "tenant_id")?,
        network_id: s(row, "network_id")?,
        subnet_id,
        rules: serde_json::from_str(&s(row, "rules")?)
            .map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        updated_at: rfc3339(i(row, "updated_at")?),
    })
}

fn empty(sn: &Subnet) -> NetworkAcl {
    NetworkAcl {
        id: sn.id.clone(),
        tenant_id: sn.tenant_id.clone(),
        network_id: sn.network_id.clone(),
        subnet_id: sn.id.clone(),
        rules: Vec::new(),
        updated_at: sn.created_at.clone(),
    }
}

fn check(rules: &[AclRule]) -> ApiResult<Vec<AclRule>> {
    let mut out: Vec<AclRule> = Vec::with_capacity(rules.len());
    for (k, r) in rules.iter().enumerate() {
        let f = |name: &str| format!("rules[{k}].{name}");
        if !(1..=MAX_RULE_NUMBER).contains(&r.number) {
            return Err(ApiError::invalid(
                "out_of_range",
                &f("number"),
                format!("rule numbers are 1..={MAX_RULE_NUMBER}"),
            ));
        }
        if out
            .iter()
            .any(|o| o.number == r.number && o.direction == r.direction)
        {
            return Err(ApiError::invalid(
                "duplicate",
                &f("number"),
                format!("rule number {} is used twice for this direction", r.number),
            ));
        }
        let protocol = check_proto_ports(&f, &r.protocol, r.port_from, r.port_to)?;
        let cidr = parse_cidr(&f("cidr"), &r.cidr)?.to_string();
        out.push(AclRule {
            protocol,
            cidr,
            ..r.clone()
        });
    }
    out.sort_by_key(|r| (r.direction == Direction::Egress, r.number));
    Ok(out)
}

/// Removes a subnet's ACL inside `tx` (subnet delete).
pub(crate) async fn delete_for_subnet(tx: &mut WriteTx, subnet_id: &str) -> ApiResult<()> {
    let row = sqlx::query(&format!(
        "SELECT {ACL_COLS} FROM subnet_acls WHERE subnet_id = $1"
    ))
    .bind(subnet_id)
    .fetch_optional(tx.conn())
    .await?;
    if let Some(row) = row {
        let acl = acl_from(&row)?;
        sqlx::query("DELETE FROM subnet_acls WHERE subnet_id = $1")
            .bind(subnet_id)
            .execute(tx.conn())
            .await?;
        tx.record(
            "network_acl",
            Op::Delete,
            subnet_id,
            Some(&acl.network_id),
            &acl,
        )
        .await?;
    }
    Ok(())
}

/// Show a subnet's network ACL.
#[utoipa::path(get, path = "/v1/subnets/{id}/acl", tag = "network-acls", security(("bearer" = [])),
    params(("id" = String, Path, description = "subnet id")),
    responses(
        (status = 200, description = "the ACL", body = NetworkAcl),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such subnet visible to the caller", body = ErrorBody),
    ))]
pub async fn get_acl(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<NetworkAcl>> {
    let mut conn = st.store.pool().acquire().await?;
    let sn = visible_subnet(&mut conn, &p, &id, None).await?;
    let row = sqlx::query(&format!(
        "SELECT {ACL_COLS} FROM subnet_acls WHERE subnet_id = $1"
    ))
    .bind(&id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(Json(match row {
        Some(r) => acl_from(&r)?,
        None => empty(&sn),
    }))
}

/// Replace a subnet's network ACL.
#[utoipa::path(put, path = "/v1/subnets/{id}/acl", tag = "network-acls", request_body = NetworkAclUpdate,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "subnet id")),
    responses(
        (status = 200, description = "the new ACL", body = NetworkAcl),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such subnet visible to the caller", body = ErrorBody),
        (status = 422, description = "invalid number, protocol, ports or CIDR", body = ErrorBody),
    ))]
pub async fn put_acl(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<NetworkAclUpdate>,
) -> ApiResult<Json<NetworkAcl>> {
    p.tenant_scope()?;
    let rules = check(&req.rules)?;
    let mut tx = st.store.write().await?;
    let sn = visible_subnet(tx.conn(), &p, &id, None).await?;
    let now = now_ms();
    let acl = NetworkAcl {
        rules,
        updated_at: rfc3339(now),
        ..empty(&sn)
    };
    let text = serde_json::to_string(&acl.rules).map_err(|e| ApiError::Internal(e.to_string()))?;
    let existed = sqlx::query("SELECT subnet_id FROM subnet_acls WHERE subnet_id = $1")
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?
        .is_some();
    if existed {
        sqlx::query("UPDATE subnet_acls SET rules = $1, updated_at = $2 WHERE subnet_id = $3")
            .bind(&text)
            .bind(now)
            .bind(&id)
            .execute(tx.conn())
            .await?;
    } else {
        sqlx::query(
            "INSERT INTO subnet_acls (subnet_id, tenant_id, network_id, rules, updated_at) \
             VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&id)
        .bind(&acl.tenant_id)
        .bind(&acl.network_id)
        .bind(&text)
        .bind(now)
        .execute(tx.conn())
        .await?;
    }
    tx.record("network_acl", Op::Update, &id, Some(&acl.network_id), &acl)
        .await?;
    tx.commit().await?;
    tracing::info!(subnet = %id, rules = acl.rules.len(), "network ACL replaced");
    Ok(Json(acl))
}
