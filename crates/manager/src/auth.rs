//! Bearer-token authentication and the caller's identity.
//!
//! Secrets are 32 random bytes in hex behind a prefix that says what they are (`cnpt_`
//! tenant API token, `cnpa_` agent credential, `cnpe_` edge credential); the store keeps
//! only their SHA-256.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use sqlx::Row;

use crate::error::ApiError;
use crate::AppState;

/// Who is calling.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Principal {
    /// The operator: sees and changes everything.
    Admin,
    /// A tenant API token.
    Tenant(String),
    /// A host's agent (the host id).
    Agent(String),
    /// An edge (edge id and its pool id).
    Edge {
        /// The edge.
        edge_id: String,
        /// Its pool.
        pool_id: String,
    },
}

impl Principal {
    /// Whether this is the admin.
    pub fn is_admin(&self) -> bool {
        matches!(self, Principal::Admin)
    }

    /// Whether the caller may see objects of `tenant_id`.
    pub fn sees_tenant(&self, tenant_id: &str) -> bool {
        match self {
            Principal::Admin => true,
            Principal::Tenant(t) => t == tenant_id,
            _ => false,
        }
    }

    /// The SQL condition value for tenant scoping: `None` for the admin (all).
    pub fn tenant_scope(&self) -> Result<Option<&str>, ApiError> {
        match self {
            Principal::Admin => Ok(None),
            Principal::Tenant(t) => Ok(Some(t)),
            _ => Err(ApiError::not_found(None, "resource")),
        }
    }

    /// Refuses (as 404) anyone but the admin.
    pub fn require_admin(&self, what: &str) -> Result<(), ApiError> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::not_found(None, what))
        }
    }
}

/// Kinds of stored secrets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecretKind {
    /// Tenant API token.
    Tenant,
    /// Agent credential.
    Agent,
    /// Edge credential.
    Edge,
}

impl SecretKind {
    /// As stored in `tokens.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            SecretKind::Tenant => "tenant",
            SecretKind::Agent => "agent",
            SecretKind::Edge => "edge",
        }
    }
    fn prefix(self) -> &'static str {
        match self {
            SecretKind::Tenant => "cnpt_",
            SecretKind::Agent => "cnpa_",
            SecretKind::Edge => "cnpe_",
        }
    }
}

/// `n` random bytes.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    getrandom::fill(&mut b).expect("the OS random source failed");
    b
}

/// A new id `<prefix>-<12 hex>`.
pub fn new_id(prefix: &str) -> String {
    format!("{prefix}-{}", hex::encode(random_bytes::<6>()))
}

/// A new secret of `kind` and its hash.
pub fn new_secret(kind: SecretKind) -> (String, String) {
    let s = format!("{}{}", kind.prefix(), hex::encode(random_bytes::<32>()));
    let h = hash_secret(&s);
    (s, h)
}

/// SHA-256 of a secret, hex.
pub fn hash_secret(secret: &str) -> String {
    hex::encode(Sha256::digest(secret.as_bytes()))
}

/// Compares two equal-length strings without an early exit.
pub fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(AUTHORIZATION)
            .ok_or_else(|| ApiError::unauthorized("missing Authorization: Bearer <token>"))?;
        let token = header
            .to_str()
            .ok()
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or_else(|| ApiError::unauthorized("Authorization must be 'Bearer <token>'"))?;
        let hash = hash_secret(token);
        if constant_time_eq(&hash, &state.admin_hash) {
            return Ok(Principal::Admin);
        }
        let rev = state.cache.revision(&state.store).await?;
        if let Some(known) = state.cache.token(rev, &hash) {
            return known.ok_or_else(|| ApiError::unauthorized("unknown or revoked token"));
        }
        let found = lookup_token(state, &hash).await?;
        state.cache.put_token(rev, hash, found.clone());
        found.ok_or_else(|| ApiError::unauthorized("unknown or revoked token"))
    }
}

/// The principal a token hash stands for, from the store (`None`: unknown or revoked).
async fn lookup_token(state: &AppState, hash: &str) -> Result<Option<Principal>, ApiError> {
    let row = sqlx::query(
        "SELECT t.kind, t.subject_id, e.pool_id FROM tokens t \
         LEFT JOIN edges e ON t.kind = 'edge' AND e.id = t.subject_id \
         WHERE t.hash = $1",
    )
    .bind(hash)
    .fetch_optional(state.store.pool())
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let kind: String = row.try_get("kind")?;
    let subject: String = row.try_get("subject_id")?;
    match kind.as_str() {
        "tenant" => Ok(Some(Principal::Tenant(subject))),
        "agent" => Ok(Some(Principal::Agent(subject))),
        "edge" => {
            let pool_id: Option<String> = row.try_get("pool_id")?;
            Ok(pool_id.map(|pool_id| Principal::Edge {
                edge_id: subject,
                pool_id,
            }))
        }
        other => Err(ApiError::Internal(format!("token of unknown kind {other}"))),
    }
}
