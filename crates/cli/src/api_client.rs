//! A small blocking client of the manager's REST API (`/v1/...`), for the CLI verbs.
//!
//! Bodies are handled as `serde_json::Value`: the CLI prints what the manager answers
//! (tables of known columns, or the raw JSON) and so does not need the manager's types.

use std::fmt;
use std::time::Duration;

use reqwest::blocking::{Client, RequestBuilder};
use reqwest::{Method, StatusCode};
use serde_json::Value;

/// The manager's address when neither `--url` nor `CANOPY_URL` is given.
pub const DEFAULT_URL: &str = "http://127.0.0.1:7450";

/// Why a call failed.
#[derive(Debug)]
pub enum ClientError {
    /// No token was given: every `/v1` call needs one.
    NoToken,
    /// The URL cannot be used.
    BadUrl(String),
    /// The manager could not be reached or the exchange failed.
    Transport { url: String, message: String },
    /// The manager refused: its JSON error `{code, message, field}`.
    Api {
        status: StatusCode,
        code: String,
        message: String,
        field: Option<String>,
    },
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientError::NoToken => write!(
                f,
                "no API token: pass --token <TOKEN> or set CANOPY_TOKEN \
                 (the admin token, or a tenant token from `canopy tenant token create`)"
            ),
            ClientError::BadUrl(m) => write!(f, "bad manager URL: {m}"),
            ClientError::Transport { url, message } => {
                write!(f, "cannot reach the manager at {url}: {message}")
            }
            ClientError::Api {
                status,
                code,
                message,
                field,
            } => {
                // The manager's message is meant for people; the code helps when it is terse.
                if message.is_empty() {
                    write!(f, "{code} (HTTP {})", status.as_u16())?;
                } else {
                    write!(f, "{message}")?;
                }
                if let Some(field) = field {
                    write!(f, " (field: {field})")?;
                }
                if *status == StatusCode::UNAUTHORIZED {
                    write!(f, "; check --token or CANOPY_TOKEN")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// A client bound to one manager and one bearer token.
pub struct ApiClient {
    base: String,
    token: String,
    http: Client,
}

impl ApiClient {
    /// A client of the manager at `url` (e.g. `http://127.0.0.1:7450`, or
    /// `unix:/run/canopy/manager.sock` for its Unix socket) using `token`.
    pub fn new(url: &str, token: Option<&str>) -> Result<Self, ClientError> {
        let token = match token {
            Some(t) if !t.trim().is_empty() => t.trim().to_string(),
            _ => return Err(ClientError::NoToken),
        };
        let mut builder = Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("canopy-cli/", env!("CARGO_PKG_VERSION")));
        let base = if let Some(path) = url.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ClientError::BadUrl(format!(
                    "{url:?} (expected unix:/path/to/manager.sock)"
                )));
            }
            // Every request goes to the socket; the host in the URL is only the Host header.
            builder = builder.unix_socket(path);
            "http://localhost".to_string()
        } else {
            url.trim_end_matches('/').to_string()
        };
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::BadUrl(format!(
                "{url:?} (expected http://HOST:PORT or unix:/path/to/manager.sock)"
            )));
        }
        let http = builder
            .build()
            .map_err(|e| ClientError::BadUrl(e.to_string()))?;
        Ok(Self { base, token, http })
    }

    /// `GET path` with optional query pairs (pairs whose value is `None` are left out).
    pub fn get(&self, path: &str, query: &[(&str, Option<&str>)]) -> Result<Value, ClientError> {
        let q: Vec<(&str, &str)> = query
            .iter()
            .filter_map(|(k, v)| v.map(|v| (*k, v)))
            .collect();
        self.send(self.request(Method::GET, path).query(&q))
    }

    /// `POST path` with a JSON body.
    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(self.request(Method::POST, path).json(body))
    }

    /// `PATCH path` with a JSON body.
    pub fn patch(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(self.request(Method::PATCH, path).json(body))
    }

    /// `PUT path` with a JSON body.
    pub fn put(&self, path: &str, body: &Value) -> Result<Value, ClientError> {
        self.send(self.request(Method::PUT, path).json(body))
    }

    /// `DELETE path`.
    pub fn delete(&self, path: &str) -> Result<Value, ClientError> {
        self.send(self.request(Method::DELETE, path))
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    fn send(&self, req: RequestBuilder) -> Result<Value, ClientError> {
        let transport = |e: reqwest::Error| ClientError::Transport {
            url: self.base.clone(),
            message: error_chain(&e),
        };
        let resp = req.send().map_err(transport)?;
        let status = resp.status();
        let text = resp.text().map_err(transport)?;
        if status.is_success() {
            if text.trim().is_empty() {
                return Ok(Value::Null);
            }
            return serde_json::from_str(&text).map_err(|e| ClientError::Transport {
                url: self.base.clone(),
                message: format!("answer is not JSON ({e}): {}", excerpt(&text)),
            });
        }
        Err(match serde_json::from_str::<Value>(&text) {
            Ok(v) if v.get("code").is_some() || v.get("message").is_some() => ClientError::Api {
                status,
                code: str_of(&v, "code").unwrap_or_default(),
                message: str_of(&v, "message").unwrap_or_default(),
                field: str_of(&v, "field"),
            },
            _ => ClientError::Api {
                status,
                code: "http_error".into(),
                message: format!("HTTP {status}: {}", excerpt(&text)),
                field: None,
            },
        })
    }
}

fn str_of(v: &Value, key: &str) -> Option<String> {
    v.get(key).and_then(Value::as_str).map(str::to_string)
}

fn excerpt(text: &str) -> String {
    let t = text.trim();
    match t.char_indices().nth(200) {
        Some((i, _)) => format!("{}...", &t[..i]),
        None => t.to_string(),
    }
}

/// `reqwest`'s error with its sources ("error sending request: connection refused").
fn error_chain(e: &reqwest::Error) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s
}
