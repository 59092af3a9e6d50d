//! Extractors whose rejections are JSON [`ApiError`]s, so that axum's default plain-text
//! rejections never reach a client.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Largest accepted request body.
pub const MAX_BODY: usize = 256 * 1024;

/// A JSON request body; any failure is a 400 naming the field.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S, T> FromRequest<S> for ApiJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let bytes = Bytes::from_request(req, state).await.map_err(|e| {
            ApiError::bad_request("invalid_body", None, format!("cannot read body: {e}"))
        })?;
        // serde reads a JSON array as a struct's fields in order: every body of this API is
        // an object, so an array is refused before it can be mistaken for one.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[') {
            return Err(ApiError::bad_request(
                "invalid_body",
                None,
                "the request body must be a JSON object".to_string(),
            ));
        }
        parse_json(&bytes).map(ApiJson)
    }
}

/// Deserializes `bytes` as `T`, turning every serde failure into a 400 with a field path.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let value: T = match serde_path_to_error::deserialize(&mut de) {
        Ok(v) => v,
        Err(e) => {
            let path = e.path().to_string();
            let inner = e.into_inner();
            return Err(classify(&path, &inner));
        }
    };
    de.end()
        .map_err(|e| ApiError::bad_request("malformed_json", None, e.to_string()))?;
    Ok(value)
}

fn classify(path: &str, e: &serde_json::Error) -> ApiError {
    use serde_json::error::Category;
    let parent = if path == "." || path == "?" || path.is_empty() {
        None
    } else {
        Some(path.to_string())
    };
    let join = |name: &str| match &parent {
        Some(p) => format!("{p}.{name}"),
        None => name.to_string(),
    };
    let msg = e.to_string();
    match e.classify() {
        Category::Syntax | Category::Eof | Category::Io => {
            ApiError::bad_request("malformed_json", parent.as_deref(), msg)
        }
        Category::Data => {
            if let Some(name) = backticked(&msg, "unknown field `") {
                // The path already ends at the unknown key.
                let field = match &parent {
                    Some(p) if p == &name || p.ends_with(&format!(".{name}")) => p.clone(),
                    _ => join(&name),
                };
                ApiError::bad_request("unknown_field", Some(&field), msg)
            } else if let Some(name) = backticked(&msg, "missing field `") {
                ApiError::bad_request("missing_field", Some(&join(&name)), msg)
            } else {
                ApiError::bad_request("invalid_value", parent.as_deref(), msg)
            }
        }
    }
}

fn backticked(msg: &str, prefix: &str) -> Option<String> {
    let rest = msg.strip_prefix(prefix)?;
    rest.find('`').map(|end| rest[..end].to_string())
}

/// Path parameters; a failure is a 400 instead of axum's plain-text answer.
#[derive(Debug, Clone)]
pub struct ApiPath<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|e| ApiError::bad_request("invalid_path", None, e.body_text()))
    }
}

/// Query parameters; a failure is a 400 instead of axum's plain-text answer.
#[derive(Debug, Clone)]
pub struct ApiQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for ApiQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Query::<T>::from_request_parts(parts, state)
            .await
            .map(|Query(v)| ApiQuery(v))
            .map_err(|e| ApiError::bad_request("invalid_query", None, e.body_text()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        n: u32,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        inner: Option<Inner>,
    }

    fn err(body: &str) -> (String, Option<String>) {
        let (_, b) = parse_json::<Outer>(body.as_bytes()).unwrap_err().parts();
        (b.code, b.field)
    }

    #[test]
    fn json_errors_name_the_field() {
        assert_eq!(err("{"), ("malformed_json".into(), None));
        assert_eq!(err(r#"{"name":"a"} x"#), ("malformed_json".into(), None));
        assert_eq!(
            err(r#"{"name":"a","bogus":1}"#),
            ("unknown_field".into(), Some("bogus".into()))
        );
        assert_eq!(err(r#"{}"#), ("missing_field".into(), Some("name".into())));
        assert_eq!(
            err(r#"{"name":5}"#),
            ("invalid_value".into(), Some("name".into()))
        );
        assert_eq!(
            err(r#"{"name":"a","inner":{"n":-1}}"#),
            ("invalid_value".into(), Some("inner.n".into()))
        );
        assert_eq!(
            err(r#"{"name":"a","inner":{"m":1}}"#),
            ("unknown_field".into(), Some("inner.m".into()))
        );
        assert!(parse_json::<Outer>(br#"{"name":"a"}"#).is_ok());
    }
}
