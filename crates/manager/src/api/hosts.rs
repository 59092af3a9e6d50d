//! Hosts (admin only): where agents run; each gets a /72 locator and an agent credential.

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use sqlx::any::AnyRow;

use super::{s, ts, validate_name, Created};
use crate::auth::{new_id, new_secret, Principal, SecretKind};
use crate::error::{ApiError, ApiResult, ErrorBody};
use crate::extract::{ApiJson, ApiPath};
use crate::store::{now_ms, rfc3339, Op, WriteTx};
use crate::types::{Host, HostCreate, HostCreated};
use crate::AppState;

pub(crate) fn host_from(row: &AnyRow) -> Result<Host, sqlx::Error> {
    Ok(Host {
        id: s(row, "id")?,
        name: s(row, "name")?,
        locator: s(row, "locator")?,
        created_at: ts(row)?,
    })
}

/// Takes the next locator from the substrate prefix; `field` is named if they ran out.
pub(crate) async fn next_locator(
    st: &AppState,
    tx: &mut WriteTx,
    field: &str,
) -> ApiResult<String> {
    let idx = tx.next_counter("locator").await?;
    u64::try_from(idx)
        .ok()
        .and_then(|i| st.substrate.locator(i))
        .map(|l| l.to_string())
        .ok_or_else(|| {
            ApiError::conflict(
                "exhausted",
                Some(field),
                format!("no /72 locator left in substrate prefix {}", st.substrate),
            )
        })
}

/// Stores the hash of a new credential for `subject`; returns the secret.
pub(crate) async fn new_credential(
    tx: &mut WriteTx,
    kind: SecretKind,
    subject: &str,
    now: i64,
) -> ApiResult<String> {
    let (secret, hash) = new_secret(kind);
    sqlx::query(
        "INSERT INTO tokens (id, hash, kind, subject_id, name, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(new_id("tok"))
    .bind(&hash)
    .bind(kind.as_str())
    .bind(subject)
    .bind("credential")
    .bind(now)
    .execute(tx.conn())
    .await?;
    Ok(secret)
}

/// Register a host (admin). Its locator is the next /72 of the substrate prefix, never
/// reused; the agent credential is returned only in this response.
#[utoipa::path(post, path = "/v1/hosts", tag = "hosts", request_body = HostCreate,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "registered; `credential` is shown only now", body = HostCreated),
        (status = 400, description = "unreadable request", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is not the admin", body = ErrorBody),
        (status = 409, description = "name taken, or locators exhausted", body = ErrorBody),
        (status = 422, description = "invalid name", body = ErrorBody),
    ))]
pub async fn create_host(
    State(st): State<AppState>,
    p: Principal,
    ApiJson(req): ApiJson<HostCreate>,
) -> ApiResult<Created<HostCreated>> {
    p.require_admin("resource")?;
    validate_name("name", &req.name)?;
    let mut tx = st.store.write().await?;
    if sqlx::query("SELECT id FROM hosts WHERE name = $1")
        .bind(&req.name)
        .fetch_optional(tx.conn())
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "conflict",
            Some("name"),
            format!("a host named {:?} exists", req.name),
        ));
    }
    let locator = next_locator(&st, &mut tx, "locator").await?;
    let now = now_ms();
    let h = Host {
        id: new_id("host"),
        name: req.name,
        locator,
        created_at: rfc3339(now),
    };
    sqlx::query("INSERT INTO hosts (id, name, locator, created_at) VALUES ($1, $2, $3, $4)")
        .bind(&h.id)
        .bind(&h.name)
        .bind(&h.locator)
        .bind(now)
        .execute(tx.conn())
        .await?;
    let credential = new_credential(&mut tx, SecretKind::Agent, &h.id, now).await?;
    tx.record("host", Op::Create, &h.id, None, &h).await?;
    tx.commit().await?;
    tracing::info!(host = %h.id, locator = %h.locator, "host registered");
    Ok((
        StatusCode::CREATED,
        Json(HostCreated {
            id: h.id,
            name: h.name,
            locator: h.locator,
            created_at: h.created_at,
            credential,
        }),
    ))
}

/// List hosts (admin).
#[utoipa::path(get, path = "/v1/hosts", tag = "hosts", security(("bearer" = [])),
    responses(
        (status = 200, description = "hosts", body = Vec<Host>),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "caller is not the admin", body = ErrorBody),
    ))]
pub async fn list_hosts(State(st): State<AppState>, p: Principal) -> ApiResult<Json<Vec<Host>>> {
    p.require_admin("resource")?;
    let rows =
        sqlx::query("SELECT id, name, locator, created_at FROM hosts ORDER BY created_at, id")
            .fetch_all(st.store.pool())
            .await?;
    Ok(Json(rows.iter().map(host_from).collect::<Result<_, _>>()?))
}

/// Show a host (admin, or the host's own agent).
#[utoipa::path(get, path = "/v1/hosts/{id}", tag = "hosts", security(("bearer" = [])),
    params(("id" = String, Path, description = "host id")),
    responses(
        (status = 200, description = "the host", body = Host),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such host visible to the caller", body = ErrorBody),
    ))]
pub async fn get_host(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<Json<Host>> {
    let allowed = match &p {
        Principal::Admin => true,
        Principal::Agent(h) => *h == id,
        _ => false,
    };
    if !allowed {
        return Err(ApiError::not_found(None, "host"));
    }
    let row = sqlx::query("SELECT id, name, locator, created_at FROM hosts WHERE id = $1")
        .bind(&id)
        .fetch_optional(st.store.pool())
        .await?
        .ok_or_else(|| ApiError::not_found(None, "host"))?;
    Ok(Json(host_from(&row)?))
}

/// Remove a host that has no nodes (admin); its credential is revoked and its locator is
/// never handed out again.
#[utoipa::path(delete, path = "/v1/hosts/{id}", tag = "hosts", security(("bearer" = [])),
    params(("id" = String, Path, description = "host id")),
    responses(
        (status = 204, description = "removed"),
        (status = 400, description = "bad path", body = ErrorBody),
        (status = 401, description = "no valid token", body = ErrorBody),
        (status = 404, description = "no such host, or caller is not the admin", body = ErrorBody),
        (status = 409, description = "the host still has nodes", body = ErrorBody),
    ))]
pub async fn delete_host(
    State(st): State<AppState>,
    p: Principal,
    ApiPath(id): ApiPath<String>,
) -> ApiResult<StatusCode> {
    p.require_admin("host")?;
    let mut tx = st.store.write().await?;
    let row = sqlx::query("SELECT id, name, locator, created_at FROM hosts WHERE id = $1")
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?
        .ok_or_else(|| ApiError::not_found(None, "host"))?;
    let h = host_from(&row)?;
    if sqlx::query("SELECT id FROM nodes WHERE host_id = $1 LIMIT 1")
        .bind(&id)
        .fetch_optional(tx.conn())
        .await?
        .is_some()
    {
        return Err(ApiError::conflict(
            "in_use",
            None,
            "the host still has nodes; delete or move them first",
        ));
    }
    sqlx::query("DELETE FROM tokens WHERE kind = 'agent' AND subject_id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    sqlx::query("DELETE FROM hosts WHERE id = $1")
        .bind(&id)
        .execute(tx.conn())
        .await?;
    tx.record("host", Op::Delete, &id, None, &h).await?;
    tx.commit().await?;
    tracing::info!(host = %id, "host removed");
    Ok(StatusCode::NO_CONTENT)
}
