//! Tenants and their API tokens.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sqlx::any::AnyRow;

use super::{s, ts, validate_name, Created};
use crate::auth::{new_id, new_secret, Principal, SecretKind};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::store::{now_ms, rfc3339, Op};
use crate::types::{Tenant, TenantCreate, TokenCreate, TokenCreated, TokenInfo};
use crate::AppState;

fn tenant_from(row: &AnyRow) -> Result<Tenant, sqlx::Error> {
    Ok(Tenant {
        id: s(row, "id")?,
        name: s(row, "name")?,
        created_at: ts(row)?,
    })
}

fn token_from(row: &AnyRow) -> Result<TokenInfo, sqlx::Error> {
    Ok(TokenInfo {
        id: s(row, "id")?,
        tenant_id: s(row, "subject_id")?,
        name: s(row, "name")?,
        created_at: ts(row)?,
    })
}

/// The tenant `id` if the caller may see it.
async fn visible_tenant(st: &AppState, p: &Principal, id: &str) -> ApiResult<Tenant> {
    if !p.sees_tenant(id) {
        return Err(ApiError::not_found(None, "tenant"));
    }
    let row = sqlx::query("SELECT id, name, created_at FROM tenants WHERE id = $1")
        .bind(id)
        .fetch_optional(st.store.pool())
        .await?
        .ok_or_else(|| ApiError::not_found(None, "tenant"))?;
    Ok(tenant_from(&row)?)
}

/// Create a tenant (admin only).
#[utoipa::path(post, path = "/v1/tenants", tag = "tenants", request_body = TenantCreate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "created", body = Tenant),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is not the admin", body = ErrorBody),
        (status = 409, description = "name taken", body = ErrorBody),
        (status = 422, description = "invalid name", body = ErrorBody),
    ))]
pub async fn create_tenant(
    State(st): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<TenantCreate>,
) -> ApiResult<Created<Tenant>> {
    p.require_admin("resource")?;
    validate_name("name", &req.name)?;
    let mut tx = st.store.write().await?;
    let taken = sqlx::query("SELECT id FROM tenants WHERE name = $1")
        .bind(&req.name)
        .fetch_optional(tx.conn())
        .await?;
    if taken.is_some() {
        return Err(ApiError::conflict(
            "conflict",
            Some("name"),
            format!("a tenant named {:?} exists", req.name),
        ));
    }
    let now = now_ms();
    let t = Tenant {
        id: new_id("ten"),
        name: req.name,
        created_at: rfc3339(now),
    };
    sqlx::query("INSERT INTO tenants (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&t.id)
        .bind(&t.name)
        .bind(now)
        .execute(tx.conn())
        .await?;
    tx.record("tenant", Op::Create, &t.id, None, &t).await?;
    tx.commit().await?;
    tracing::info!(tenant = %t.id, name = %t.name, "tenant created");
    Ok((StatusCode::CREATED, Json(t)))
}

/// List tenants: all for the admin, its own for a tenant.
#[utoipa::path(get, path = "/v1/tenants", tag = "tenants", security(("bearer" = [])),
    responses(
        (status = 200, description = "tenants", body = Vec<Tenant>),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is an agent or edge", body = ErrorBody),
    ))]
pub async fn list_tenants(
    State(st): State<AppState>,
    p: Principal,
) -> ApiResult<Json<Vec<Tenant>>> {
    let scope = p.tenant_scope()?;
    let rows = match scope {
        None => {
            sqlx::query("SELECT id, name, created_at FROM tenants ORDER BY created_at, id")
                .fetch_all(st.store.pool())
                .await?
        }
        Some(t) => {
            sqlx::query("SELECT id, name, created_at FROM tenants WHERE id = $1")
                .bind(t)
                .fetch_all(st.store.pool())
                .await?
        }
    };
    Ok(Json(
        rows.iter().map(tenant_from).collect::<Result<_, _>>()?,
    ))
}

/// Show a tenant (admin, or the tenant itself).
#[utoipa::path(get, path = "/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "the tenant", body = Tenant),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such tenant visible to the caller", body = ErrorBody),
    ))]
pub async fn get_tenant(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Tenant>> {
    Ok(Json(visible_tenant(&st, &p, &id).await?))
}

/// Delete a tenant that has no networks (admin only); its tokens go with it.
#[utoipa::path(delete, path = "/v1/tenants/{id}", tag = "tenants", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 204, description = "deleted"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such tenant, or caller is not the admin", body = ErrorBody),
        (status = 409, description = "the tenant still has networks or elastic IPs", body = ErrorBody),
    ))]
pub async fn delete_tenant(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require_admin("tenant")?;
    let mut tx = st.store.write().await?;
    let row = sqlx::query("SELECT id, name, created_at FROM tenants WHERE id = $1")
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| ApiError::not_found(None, "tenant"))?;
    let t = tenant_from(&row)?;
    for (table, what) in [("networks", "networks"), ("elastic_ips", "elastic IPs")] {
        let used = sqlx::query(&format!(
            "SELECT id FROM {table} WHERE tenant_id = $1 LIMIT 1"
        ))
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?;
        if used.is_some() {
            return Err(ApiError::conflict(
                "in_use",
                None,
                format!("the tenant still has {what}; delete them first"),
            ));
        }
    }
    sqlx::query("DELETE FROM tokens WHERE kind = 'tenant' AND subject_id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    sqlx::query("DELETE FROM tenants WHERE id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    tx.record("tenant", Op::Delete, &id, None, &t).await?;
    tx.commit().await?;
    tracing::info!(tenant = %id, "tenant deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// Create an API token for a tenant (admin, or the tenant itself). The token is returned
/// only in this response.
#[utoipa::path(post, path = "/v1/tenants/{id}/tokens", tag = "tenants", request_body = TokenCreate,
    security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 201, description = "created; `token` is shown only now", body = TokenCreated),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such tenant visible to the caller", body = ErrorBody),
        (status = 422, description = "invalid name", body = ErrorBody),
    ))]
pub async fn create_token(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<TokenCreate>,
) -> ApiResult<Created<TokenCreated>> {
    visible_tenant(&st, &p, &id).await?;
    let name = req.name.unwrap_or_else(|| "default".into());
    validate_name("name", &name)?;
    let mut tx = st.store.write().await?;
    // The tenant may have been deleted since the check above.
    if sqlx::query("SELECT id FROM tenants WHERE id = $1")
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?
        .is_none()
    {
        return Err(ApiError::not_found(None, "tenant"));
    }
    let (secret, hash) = new_secret(SecretKind::Tenant);
    let now = now_ms();
    let info = TokenInfo {
        id: new_id("tok"),
        tenant_id: id.clone(),
        name,
        created_at: rfc3339(now),
    };
    sqlx::query(
        "INSERT INTO tokens (id, hash, kind, subject_id, name, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&info.id)
    .bind(&hash)
    .bind(SecretKind::Tenant.as_str())
    .bind(&id)
    .bind(&info.name)
    .bind(now)
    .execute(tx.conn())
    .await?;
    tx.record("token", Op::Create, &info.id, None, &info)
        .await?;
    tx.commit().await?;
    tracing::info!(tenant = %id, token = %info.id, "tenant token created");
    Ok((
        StatusCode::CREATED,
        Json(TokenCreated {
            id: info.id,
            tenant_id: info.tenant_id,
            name: info.name,
            token: secret,
            created_at: info.created_at,
        }),
    ))
}

/// List a tenant's tokens (without secrets).
#[utoipa::path(get, path = "/v1/tenants/{id}/tokens", tag = "tenants", security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id")),
    responses(
        (status = 200, description = "tokens", body = Vec<TokenInfo>),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such tenant visible to the caller", body = ErrorBody),
    ))]
pub async fn list_tokens(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Vec<TokenInfo>>> {
    visible_tenant(&st, &p, &id).await?;
    let rows = sqlx::query(
        "SELECT id, subject_id, name, created_at FROM tokens \
         WHERE kind = 'tenant' AND subject_id = $1 ORDER BY created_at, id",
    )
    .bind(&id)
    .fetch_all(st.store.pool())
    .await?;
    Ok(Json(rows.iter().map(token_from).collect::<Result<_, _>>()?))
}

/// Revoke a tenant token.
#[utoipa::path(delete, path = "/v1/tenants/{id}/tokens/{token_id}", tag = "tenants",
    security(("bearer" = [])),
    params(("id" = String, Path, description = "tenant id"), ("token_id" = String, Path, description = "token id")),
    responses(
        (status = 204, description = "revoked"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such token visible to the caller", body = ErrorBody),
    ))]
pub async fn delete_token(
    State(st): State<AppState>,
    p: Principal,
    ApiPath((id, token_id)): ApiPath<(String, String)>,
) -> ApiResult<StatusCode> {
    if !p.sees_tenant(&id) {
        return Err(ApiError::not_found(None, "token"));
    }
    let mut tx = st.store.write().await?;
    let row = sqlx::query(
        "SELECT id, subject_id, name, created_at FROM tokens \
         WHERE id = $1 AND kind = 'tenant' AND subject_id = $2",
    )
    .bind(&token_id)
    .bind(&id)
    .fetch_optional(tx.conn())
    .await?
    .ok_or_else(|| ApiError::not_found(None, "token"))?;
    let info = token_from(&row)?;
    sqlx::query("DELETE FROM tokens WHERE id = $1")
        .bind(&token_id)
        .execute(tx.conn())
        .await?;
    tx.record("token", Op::Delete, &token_id, None, &info)
        .await?;
    tx.commit().await?;
    tracing::info!(tenant = %id, token = %token_id, "tenant token revoked");
    Ok(StatusCode::NO_CONTENT)
}
