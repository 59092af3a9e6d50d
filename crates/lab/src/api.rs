//! The manager's REST API over its Unix socket (`http://localhost/v1/...`), blocking, on
//! untyped JSON: the lab creates a handful of resources and reads a few fields back.

use std::path::Path;
use std::time::Duration;

use serde_json::Value;

use crate::Error;

/// A client of one manager, with one bearer token.
#[derive(Clone)]
pub struct Api {
    http: reqwest::blocking::Client,
    token: String,
}

impl Api {
    pub fn new(socket: &Path, token: &str) -> Result<Api, Error> {
        let http = reqwest::blocking::Client::builder()
            .unix_socket(socket)
            .timeout(Duration::from_secs(20))
            .build()
            .map_err(|e| Error::Api(format!("HTTP client: {e}")))?;
        Ok(Api {
            http,
            token: token.to_owned(),
        })
    }

    /// The same manager with another token (a tenant's).
    pub fn with_token(&self, token: &str) -> Api {
        Api {
            http: self.http.clone(),
            token: token.to_owned(),
        }
    }

    pub fn healthy(&self) -> bool {
        self.http
            .get("http://localhost/healthz")
            .send()
            .is_ok_and(|r| r.status().is_success())
    }

    pub fn get(&self, path: &str) -> Result<Value, Error> {
        self.call(reqwest::Method::GET, path, None)
    }

    pub fn post(&self, path: &str, body: Value) -> Result<Value, Error> {
        self.call(reqwest::Method::POST, path, Some(body))
    }

    pub fn put(&self, path: &str, body: Value) -> Result<Value, Error> {
        self.call(reqwest::Method::PUT, path, Some(body))
    }

    pub fn patch(&self, path: &str, body: Value) -> Result<Value, Error> {
        self.call(reqwest::Method::PATCH, path, Some(body))
    }

    pub fn delete(&self, path: &str) -> Result<Value, Error> {
        self.call(reqwest::Method::DELETE, path, None)
    }

    fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Error> {
        let url = format!("http://localhost{path}");
        let mut req = self
            .http
            .request(method.clone(), &url)
            .bearer_auth(&self.token);
        if let Some(b) = &body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .map_err(|e| Error::Api(format!("{method} {path}: {e}")))?;
        let status = resp.status();
        let text = resp
            .text()
            .map_err(|e| Error::Api(format!("{method} {path}: reading the answer: {e}")))?;
        if !status.is_success() {
            return Err(Error::Api(format!(
                "{method} {path} answered {status}: {}",
                text.trim()
            )));
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text)
            .map_err(|e| Error::Api(format!("{method} {path}: answer is not JSON ({e}): {text}")))
    }
}

/// The string field `key` of `v`, or an error naming it.
pub fn field(v: &Value, key: &str) -> Result<String, Error> {
    v.get(key)
        .and_then(Value::as_str)
        .map(str::to_owned)
        .ok_or_else(|| Error::Api(format!("answer without a string `{key}`: {v}")))
}
