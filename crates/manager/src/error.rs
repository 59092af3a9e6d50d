//! API errors: every failure reaches the client as JSON `{code, message, field}`.
//!
//! Bad input is always a 4xx naming the offending field; only a failing store gives a 5xx
//! (503 when the database cannot be reached, 500 for anything unexpected).

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// Stable machine-readable code, e.g. `invalid_cidr`, `overlap`, `vip_taken`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// The request field at fault (dotted path), or null when no single field is.
    pub field: Option<String>,
}

/// An error returned by a handler.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A refusal caused by the request: becomes a 4xx.
    #[error("{code}: {message}")]
    Client {
        /// HTTP status (4xx).
        status: StatusCode,
        /// Machine-readable code.
        code: &'static str,
        /// Explanation.
        message: String,
        /// Field at fault.
        field: Option<String>,
    },
    /// The store failed.
    #[error("store: {0}")]
    Store(#[from] sqlx::Error),
    /// Something that should not happen.
    #[error("internal: {0}")]
    Internal(String),
}

/// Result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

fn client(
    status: StatusCode,
    code: &'static str,
    field: Option<&str>,
    message: impl Into<String>,
) -> ApiError {
    ApiError::Client {
        status,
        code,
        message: message.into(),
        field: field.map(str::to_string),
    }
}

impl ApiError {
    /// 400: the request could not be read (syntax, types, unknown or missing fields).
    pub fn bad_request(
        code: &'static str,
        field: Option<&str>,
        message: impl Into<String>,
    ) -> Self {
        client(StatusCode::BAD_REQUEST, code, field, message)
    }
    /// 422: the request was read but a value is not acceptable.
    pub fn invalid(code: &'static str, field: &str, message: impl Into<String>) -> Self {
        client(StatusCode::UNPROCESSABLE_ENTITY, code, Some(field), message)
    }
    /// 409: the request conflicts with the current state.
    pub fn conflict(code: &'static str, field: Option<&str>, message: impl Into<String>) -> Self {
        client(StatusCode::CONFLICT, code, field, message)
    }
    /// 404: no such object, or not visible to the caller (same answer on purpose).
    pub fn not_found(field: Option<&str>, what: &str) -> Self {
        client(
            StatusCode::NOT_FOUND,
            "not_found",
            field,
            format!("{what} not found"),
        )
    }
    /// 401: no valid bearer token.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        client(StatusCode::UNAUTHORIZED, "unauthorized", None, message)
    }

    /// The status and body this error is sent as.
    pub fn parts(&self) -> (StatusCode, ErrorBody) {
        match self {
            ApiError::Client {
                status,
                code,
                message,
                field,
            } => (
                *status,
                ErrorBody {
                    code: (*code).to_string(),
                    message: message.clone(),
                    field: field.clone(),
                },
            ),
            ApiError::Store(e) => store_error_parts(e),
            ApiError::Internal(m) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                ErrorBody {
                    code: "internal".into(),
                    message: m.clone(),
                    field: None,
                },
            ),
        }
    }
}

fn store_error_parts(e: &sqlx::Error) -> (StatusCode, ErrorBody) {
    let body = |code: &str, message: String| ErrorBody {
        code: code.into(),
        message,
        field: None,
    };
    if let Some(db) = e.as_database_error() {
        // The explicit checks in the handlers run under the store's write lock, so these
        // are only a backstop; they are still the client's conflict, not a server fault.
        if db.is_unique_violation() {
            return (
                StatusCode::CONFLICT,
                body(
                    "conflict",
                    "an object with these values already exists".into(),
                ),
            );
        }
        if db.is_foreign_key_violation() {
            return (
                StatusCode::CONFLICT,
                body(
                    "in_use",
                    "the object is referenced by another object".into(),
                ),
            );
        }
    }
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            body("unavailable", "the store is not reachable".into()),
        ),
        _ => (
            StatusCode::INTERNAL_SERVER_ERROR,
            body("internal", "store error".into()),
        ),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = self.parts();
        if status.is_server_error() {
            tracing::error!(error = %self, "request failed");
        } else {
            tracing::debug!(code = %body.code, field = ?body.field, "request refused");
        }
        (status, Json(body)).into_response()
    }
}
