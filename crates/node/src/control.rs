//! The daemons' client of the manager: REST calls (resolve, port blocks, edge reports) and
//! the watch stream, kept open with resume and reconnect.
//!
//! The manager is reached at an `http://HOST:PORT` URL or on its Unix socket
//! (`unix:/path/manager.sock`), with the host's or edge's bearer credential. The watch
//! stream (`GET /v1/watch`, NDJSON) is read line by line; [`watch_loop`] reconnects with
//! `since=<last revision seen>` after any failure, with a growing pause, so a manager that
//! restarts or goes away for a while costs nothing but the wait: the data plane keeps
//! forwarding with what it has.

use std::net::Ipv4Addr;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::mpsc;

/// How long a REST call (not the watch stream) may take.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a watch stream may stay silent before it is taken for dead (the manager
/// sends a heartbeat every 15 s).
pub const WATCH_IDLE: Duration = Duration::from_secs(40);
/// First and longest pause between reconnects.
pub const BACKOFF_MIN: Duration = Duration::from_millis(200);
pub const BACKOFF_MAX: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    #[error("bad manager URL {0:?}: expected http://HOST:PORT or unix:/path/to/manager.sock")]
    BadUrl(String),
    #[error("no credential: pass --token or set CANOPY_TOKEN")]
    NoToken,
    #[error("cannot reach the manager: {0}")]
    Transport(String),
    #[error("the manager answered {status}: {body}")]
    Status { status: StatusCode, body: String },
    #[error("the manager sent something unreadable: {0}")]
    Decode(String),
}

fn transport(e: reqwest::Error) -> ControlError {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(&e);
    while let Some(c) = src {
        let c_s = c.to_string();
        if !s.contains(&c_s) {
            s.push_str(": ");
            s.push_str(&c_s);
        }
        src = c.source();
    }
    ControlError::Transport(s)
}

/// One line of a watch stream (the manager's `WatchEvent`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum WatchEvent {
    Snapshot {
        revision: i64,
    },
    Upsert {
        kind: String,
        object: Value,
    },
    Synced {
        revision: i64,
    },
    Change {
        revision: i64,
        kind: String,
        op: String,
        object_id: String,
        network_id: Option<String>,
        object: Value,
    },
    Forget {
        revision: i64,
        network_id: String,
    },
    Heartbeat {
        revision: i64,
    },
}

/// The manager's answer to a resolve.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Resolution {
    pub node_id: String,
    pub mac: String,
    pub locator: String,
    pub vni: u32,
}

/// A client bound to one manager and one credential; cheap to clone.
#[derive(Debug, Clone)]
pub struct ManagerClient {
    base: String,
    token: String,
    http: reqwest::Client,
}

impl ManagerClient {
    /// `url`: `http://HOST:PORT` or `unix:/path/to/manager.sock`.
    pub fn new(url: &str, token: &str) -> Result<Self, ControlError> {
        let token = token.trim();
        if token.is_empty() {
            return Err(ControlError::NoToken);
        }
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(3))
            .user_agent(concat!("canopy-node/", env!("CARGO_PKG_VERSION")));
        let base = if let Some(path) = url.strip_prefix("unix:") {
            if path.is_empty() {
                return Err(ControlError::BadUrl(url.into()));
            }
            builder = builder.unix_socket(path);
            "http://localhost".to_string()
        } else if url.starts_with("http://") || url.starts_with("https://") {
            url.trim_end_matches('/').to_string()
        } else {
            return Err(ControlError::BadUrl(url.into()));
        };
        let http = builder.build().map_err(transport)?;
        Ok(ManagerClient {
            base,
            token: token.to_string(),
            http,
        })
    }

    fn request(&self, method: Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// A JSON call; `Ok(None)` for 404 (unknown, or not the caller's: the same to us).
    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<&Value>,
    ) -> Result<Option<Value>, ControlError> {
        let mut req = self.request(method, path).timeout(REQUEST_TIMEOUT);
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req.send().await.map_err(transport)?;
        let status = resp.status();
        if status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let text = resp.text().await.map_err(transport)?;
        if !status.is_success() {
            return Err(ControlError::Status { status, body: text });
        }
        if text.trim().is_empty() {
            return Ok(Some(Value::Null));
        }
        serde_json::from_str(&text)
            .map(Some)
            .map_err(|e| ControlError::Decode(e.to_string()))
    }

    /// Where `ip` of network `network_id` lives; `None` if nowhere (or not ours to ask).
    pub async fn resolve(
        &self,
        network_id: &str,
        ip: Ipv4Addr,
    ) -> Result<Option<Resolution>, ControlError> {
        let body = serde_json::json!({"network_id": network_id, "ip": ip.to_string()});
        match self.call(Method::POST, "/v1/resolve", Some(&body)).await? {
            Some(v) => serde_json::from_value(v)
                .map(Some)
                .map_err(|e| ControlError::Decode(e.to_string())),
            None => Ok(None),
        }
    }

    /// Asks for one more port block for a node of this host (it arrives on the watch
    /// stream too). `None`: the node is unknown to the manager.
    pub async fn request_port_block(&self, node_id: &str) -> Result<Option<Value>, ControlError> {
        let path = format!("/v1/nodes/{node_id}/port-blocks");
        self.call(Method::POST, &path, Some(&serde_json::json!({})))
            .await
    }

    /// An edge's health and load report.
    pub async fn report_edge(
        &self,
        edge_id: &str,
        healthy: bool,
        load_percent: u32,
    ) -> Result<(), ControlError> {
        let path = format!("/v1/edges/{edge_id}/report");
        let body = serde_json::json!({"healthy": healthy, "load_percent": load_percent.min(100)});
        match self.call(Method::POST, &path, Some(&body)).await? {
            Some(_) => Ok(()),
            None => Err(ControlError::Status {
                status: StatusCode::NOT_FOUND,
                body: format!("edge {edge_id} unknown to the manager (check --edge-id)"),
            }),
        }
    }

    /// Opens a watch stream after revision `since` (0: from a snapshot).
    pub async fn watch(&self, since: i64) -> Result<WatchStream, ControlError> {
        let path = format!("/v1/watch?since={}", since.max(0));
        let resp = self
            .request(Method::GET, &path)
            .send()
            .await
            .map_err(transport)?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(ControlError::Status { status, body });
        }
        Ok(WatchStream {
            resp,
            buf: Vec::new(),
        })
    }
}

/// An open watch stream.
pub struct WatchStream {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl WatchStream {
    /// The next event; `Ok(None)` when the manager ended the stream. An error when it went
    /// silent for [`WATCH_IDLE`], the connection broke or a line is not an event.
    pub async fn next(&mut self) -> Result<Option<WatchEvent>, ControlError> {
        loop {
            if let Some(at) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=at).collect();
                let line = &line[..line.len() - 1];
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                return serde_json::from_slice(line)
                    .map(Some)
                    .map_err(|e| ControlError::Decode(format!("watch line: {e}")));
            }
            match tokio::time::timeout(WATCH_IDLE, self.resp.chunk()).await {
                Err(_) => {
                    return Err(ControlError::Transport(format!(
                        "watch stream silent for {} s",
                        WATCH_IDLE.as_secs()
                    )))
                }
                Ok(Err(e)) => return Err(transport(e)),
                Ok(Ok(None)) => return Ok(None),
                Ok(Ok(Some(bytes))) => self.buf.extend_from_slice(&bytes),
            }
        }
    }
}

/// What [`watch_loop`] hands on: events, and when the connection comes and goes.
#[derive(Debug, Clone, PartialEq)]
pub enum WatchItem {
    Event(WatchEvent),
    /// A stream was opened (after `since`).
    Connected {
        since: i64,
    },
    /// The stream broke or ended; reconnecting.
    Disconnected {
        error: String,
    },
}

/// Keeps a watch stream open until `events` closes: resumes after the last revision it
/// passed on (a `change`'s, `synced`'s or a heartbeat's), reconnecting after
/// [`BACKOFF_MIN`], doubling up to [`BACKOFF_MAX`] while the manager stays away.
pub async fn watch_loop(client: ManagerClient, events: mpsc::Sender<WatchItem>) {
    let mut since = 0i64;
    let mut backoff = BACKOFF_MIN;
    loop {
        let error = match client.watch(since).await {
            Ok(mut stream) => {
                if events.send(WatchItem::Connected { since }).await.is_err() {
                    return;
                }
                backoff = BACKOFF_MIN;
                loop {
                    match stream.next().await {
                        Ok(Some(ev)) => {
                            match &ev {
                                WatchEvent::Change { revision, .. }
                                | WatchEvent::Synced { revision }
                                | WatchEvent::Heartbeat { revision } => since = *revision,
                                // A snapshot restarts from scratch: if it breaks before
                                // `synced`, the next connection must snapshot again.
                                WatchEvent::Snapshot { .. } => since = 0,
                                // A forget's revision may be ahead of changes still to
                                // come on a resumed stream: never resume from it.
                                WatchEvent::Upsert { .. } | WatchEvent::Forget { .. } => {}
                            }
                            if events.send(WatchItem::Event(ev)).await.is_err() {
                                return;
                            }
                        }
                        Ok(None) => break "the manager ended the stream".to_string(),
                        Err(e) => break e.to_string(),
                    }
                }
            }
            Err(e) => e.to_string(),
        };
        if events
            .send(WatchItem::Disconnected {
                error: error.clone(),
            })
            .await
            .is_err()
        {
            return;
        }
        tracing::debug!(%error, since, pause_ms = backoff.as_millis() as u64, "watch: reconnecting");
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}
