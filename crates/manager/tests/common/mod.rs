//! Test harness: an in-process manager on 127.0.0.1:0 over a fresh SQLite file, and the
//! same over a fresh PostgreSQL database when `CANOPY_TEST_POSTGRES_URL` is set.

#![allow(dead_code)]

use std::future::Future;
use std::io::Write;
use std::sync::Once;

use manager::{AppState, Store, SubstratePrefix};
use serde_json::Value;
use sqlx::{Connection, Executor};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The admin token every test server uses.
pub const ADMIN: &str = "test-admin-token";

/// A database to run one test body against.
pub enum Backend {
    /// A SQLite file in a temporary directory.
    Sqlite,
    /// A fresh database on this PostgreSQL server.
    Postgres(String),
}

static SKIP_NOTE: Once = Once::new();

/// SQLite always; PostgreSQL too when `CANOPY_TEST_POSTGRES_URL` is set.
pub fn backends() -> Vec<Backend> {
    let mut v = vec![Backend::Sqlite];
    match std::env::var("CANOPY_TEST_POSTGRES_URL") {
        Ok(u) if !u.trim().is_empty() => v.push(Backend::Postgres(u)),
        _ => SKIP_NOTE.call_once(|| {
            // Written to the real stderr so that it shows without --nocapture.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED postgres: CANOPY_TEST_POSTGRES_URL not set"
            );
        }),
    }
    v
}

/// `base` with its database name replaced by `db`.
fn with_database(base: &str, db: &str) -> String {
    let (scheme, rest) = base.split_once("://").expect("a URL with ://");
    let (authority, tail) = match rest.find('/') {
        Some(k) => (&rest[..k], &rest[k..]),
        None => (rest, ""),
    };
    let query = tail.find('?').map(|k| &tail[k..]).unwrap_or("");
    format!("{scheme}://{authority}/{db}{query}")
}

/// Runs `body` once per backend with the URL of a fresh, empty database.
pub async fn each_backend<F, Fut>(body: F)
where
    F: Fn(String) -> Fut,
    Fut: Future<Output = ()>,
{
    sqlx::any::install_default_drivers();
    for b in backends() {
        match b {
            Backend::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite:{}", dir.path().join("canopy.db").display());
                body(url).await;
            }
            Backend::Postgres(base) => {
                let name = format!("canopy_test_{}", hex_id());
                let mut admin = sqlx::AnyConnection::connect(&base)
                    .await
                    .expect("connect to CANOPY_TEST_POSTGRES_URL");
                admin
                    .execute(format!("CREATE DATABASE {name}").as_str())
                    .await
                    .expect("create test database");
                body(with_database(&base, &name)).await;
                let _ = admin
                    .execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await;
                let _ = admin.close().await;
            }
        }
    }
}

fn hex_id() -> String {
    let mut b = [0u8; 6];
    getrandom::fill(&mut b).unwrap();
    hex::encode(b)
}

/// A running in-process manager.
pub struct Server {
    /// `http://127.0.0.1:<port>`.
    pub base: String,
    /// Its store (for inspecting the change log).
    pub store: Store,
    client: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<()>>,
}

impl Server {
    /// Opens `db` and serves it with the default substrate prefix.
    pub async fn start(db: &str) -> Server {
        Self::start_with(db, SubstratePrefix::DEFAULT).await
    }

    /// Opens `db` and serves it with `prefix`.
    pub async fn start_with(db: &str, prefix: &str) -> Server {
        let store = manager::open(db).await.expect("open store");
        let (state, generated) =
            AppState::new(store.clone(), Some(ADMIN.into()), prefix.parse().unwrap())
                .await
                .expect("state");
        assert!(generated.is_none());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let app = manager::router(state);
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Server {
            base,
            store,
            client: reqwest::Client::new(),
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    /// Stops serving and closes the store.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.task.take() {
            t.await.unwrap();
        }
        self.store.close().await;
    }

    /// Sends `body` (raw text) and returns status and JSON body (Null when empty).
    pub async fn raw(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let mut r = self.client.request(m, format!("{}{}", self.base, path));
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        if let Some(b) = body {
            r = r
                .header("content-type", "application/json")
                .body(b.to_string());
        }
        let resp = r.send().await.expect("request");
        let status = resp.status().as_u16();
        let ctype = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
        let text = resp.text().await.unwrap();
        if text.is_empty() {
            return (status, Value::Null);
        }
        assert!(
            ctype.starts_with("application/json"),
            "{method} {path}: non-JSON answer {status} {ctype:?}: {text}"
        );
        (
            status,
            serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")),
        )
    }

    /// The Prometheus sample `name` (with its labels) from `/metrics`, which needs no
    /// token.
    pub async fn metric(&self, name: &str) -> i64 {
        let text = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in {text}"))
    }

    /// Sends a JSON body.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, Value) {
        let text = body.map(|b| b.to_string());
        self.raw(method, path, token, text.as_deref()).await
    }

    /// GET.
    pub async fn get(&self, path: &str, token: &str) -> (u16, Value) {
        self.call("GET", path, Some(token), None).await
    }

    /// POST expecting 201; returns the body.
    pub async fn create(&self, path: &str, token: &str, body: Value) -> Value {
        let (st, v) = self
            .call("POST", path, Some(token), Some(body.clone()))
            .await;
        assert_eq!(st, 201, "POST {path} {body}: {v}");
        v
    }

    /// POST; returns status and body.
    pub async fn post(&self, path: &str, token: &str, body: Value) -> (u16, Value) {
        self.call("POST", path, Some(token), Some(body)).await
    }

    /// DELETE; returns the status.
    pub async fn delete(&self, path: &str, token: &str) -> u16 {
        self.call("DELETE", path, Some(token), None).await.0
    }

    /// Creates a tenant and returns (tenant id, API token).
    pub async fn tenant(&self, name: &str) -> (String, String) {
        let t = self
            .create("/v1/tenants", ADMIN, serde_json::json!({ "name": name }))
            .await;
        let id = t["id"].as_str().unwrap().to_string();
        let tok = self
            .create(
                &format!("/v1/tenants/{id}/tokens"),
                ADMIN,
                serde_json::json!({}),
            )
            .await;
        (id, tok["token"].as_str().unwrap().to_string())
    }
}

/// Asserts an error answer: status, `code` and `field`.
#[track_caller]
pub fn assert_error(got: &(u16, Value), status: u16, code: &str, field: Option<&str>) {
    let (st, body) = got;
    assert_eq!(*st, status, "status of {body}");
    assert_eq!(body["code"], code, "code of {body}");
    assert_eq!(
        body["field"].as_str(),
        field,
        "field of {body} (expected {field:?})"
    );
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
}

/// `v[key]` as a string.
pub fn sv(v: &Value, key: &str) -> String {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {v}"))
        .to_string()
}
