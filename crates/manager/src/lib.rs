//! `canopy manager`: Canopy's control plane (the patent's System Manager).
//!
//! It owns tenants, networks, subnets, hosts, nodes, edge pools, edges and routes in a
//! SQLite file or a PostgreSQL database ([`store`]), serves them over a versioned REST API
//! with an OpenAPI 3 document ([`api`]), and answers authorised address resolution for
//! agents and edges. See `DESIGN-NOTES.md` beside this crate for the decisions.

#![warn(missing_docs)]

pub mod addr;
pub mod api;
pub mod auth;
pub mod cache;
pub mod error;
pub mod extract;
pub mod store;
pub mod types;

use std::net::SocketAddr;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use anyhow::Context;
use tokio::net::TcpListener;

pub use addr::SubstratePrefix;
pub use api::router;
pub use store::{open, Store};

/// Flags of `canopy manager`.
#[derive(Debug, Clone, clap::Args)]
pub struct ManagerArgs {
    /// Where to serve the API: `HOST:PORT` (TCP) or `unix:<PATH>` (a Unix socket, for
    /// daemons on the same machine; a stale socket file at PATH is replaced).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7450")]
    pub listen: ListenAddr,
    /// Store: `sqlite:<PATH>` (created on first start) or `postgres://...`.
    #[arg(long, value_name = "URL", default_value = "sqlite:canopy.db")]
    pub database: String,
    /// The operator's bearer token; generated and printed once on first start if absent.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "CANOPY_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// IPv6 prefix that /72 host and edge locators are carved from.
    #[arg(long, value_name = "PREFIX", default_value = SubstratePrefix::DEFAULT)]
    pub substrate_prefix: SubstratePrefix,
}

/// Where the manager serves: a TCP address or a Unix socket path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenAddr {
    /// `HOST:PORT`.
    Tcp(SocketAddr),
    /// `unix:<PATH>`.
    Unix(std::path::PathBuf),
}

impl std::str::FromStr for ListenAddr {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(path) = s.strip_prefix("unix:") {
            if path.is_empty() {
                return Err("unix: needs a socket path, e.g. unix:/run/canopy/manager.sock".into());
            }
            return Ok(ListenAddr::Unix(path.into()));
        }
        s.parse().map(ListenAddr::Tcp).map_err(|_| {
            format!("{s:?} is neither HOST:PORT (e.g. 127.0.0.1:7450) nor unix:<PATH>")
        })
    }
}

impl std::fmt::Display for ListenAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ListenAddr::Tcp(a) => write!(f, "{a}"),
            ListenAddr::Unix(p) => write!(f, "unix:{}", p.display()),
        }
    }
}

/// Binds a Unix socket at `path`, replacing a socket file left by an earlier run (but
/// never another kind of file).
fn bind_unix(path: &std::path::Path) -> anyhow::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::FileTypeExt;
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if meta.file_type().is_socket() {
            std::fs::remove_file(path)
                .with_context(|| format!("removing the stale socket {}", path.display()))?;
        } else {
            anyhow::bail!("{} exists and is not a socket", path.display());
        }
    }
    tokio::net::UnixListener::bind(path).with_context(|| format!("binding unix:{}", path.display()))
}

/// Counters kept in memory (per replica).
#[derive(Debug, Default)]
pub struct Metrics {
    /// Resolutions answered.
    pub resolve_ok: AtomicU64,
    /// Authorised resolutions of an unknown address.
    pub resolve_not_found: AtomicU64,
    /// Resolutions refused by authorisation.
    pub resolve_refused: AtomicU64,
    /// Resolution answers found in the cache.
    pub resolve_cache_hits: AtomicU64,
    /// Resolution answers read from the store.
    pub resolve_cache_misses: AtomicU64,
    /// Port blocks assigned.
    pub port_blocks_assigned: AtomicU64,
    /// Port block requests refused because the pool had none left.
    pub port_blocks_exhausted: AtomicU64,
    /// Watch streams open now.
    pub watch_streams: AtomicU64,
}

/// Everything a request handler needs; cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    /// The store.
    pub store: Store,
    /// SHA-256 (hex) of the admin token.
    pub admin_hash: String,
    /// Where locators come from.
    pub substrate: SubstratePrefix,
    /// Counters.
    pub metrics: Arc<Metrics>,
    /// Set when the server shuts down: long-lived streams end so that the graceful
    /// shutdown does not wait for their timeouts.
    pub stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// Tokens, resolve authorisation and answers, dropped when the store revision moves.
    pub cache: Arc<cache::ResolveCache>,
}

/// Why the manager could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store disagrees with the flags.
    #[error("the store was created with substrate prefix {stored}, not {given}; locators already handed out would not fit")]
    PrefixChanged {
        /// In the store.
        stored: String,
        /// On the command line.
        given: String,
    },
    /// An empty admin token.
    #[error("--admin-token must not be empty")]
    EmptyAdminToken,
    /// The database failed.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
}

impl AppState {
    /// Builds the state; checks the substrate prefix against the one the store was created
    /// with, and settles the admin token. Returns the admin token when it was generated now
    /// (the caller prints it: it is shown only once).
    pub async fn new(
        store: Store,
        admin_token: Option<String>,
        substrate: SubstratePrefix,
    ) -> Result<(AppState, Option<String>), StartError> {
        let prefix = substrate.to_string();
        let stored = settle_meta(&store, "substrate_prefix", &prefix).await?;
        if stored != prefix {
            return Err(StartError::PrefixChanged {
                stored,
                given: prefix,
            });
        }
        let (admin_hash, generated) = match admin_token {
            Some(t) if t.trim().is_empty() => return Err(StartError::EmptyAdminToken),
            Some(t) => (auth::hash_secret(t.trim()), None),
            None => {
                let t = format!("cnpadm_{}", hex::encode(auth::random_bytes::<32>()));
                let h = auth::hash_secret(&t);
                let stored = settle_meta(&store, "admin_token_sha256", &h).await?;
                if stored == h {
                    (h, Some(t))
                } else {
                    (stored, None)
                }
            }
        };
        Ok((
            AppState {
                store,
                admin_hash,
                substrate,
                metrics: Arc::new(Metrics::default()),
                stopping: Arc::new(tokio::sync::watch::channel(false).0),
                cache: Arc::new(cache::ResolveCache::default()),
            },
            generated,
        ))
    }
}

impl AppState {
    /// Ends the watch streams (called when the server begins to shut down).
    pub fn stop_streams(&self) {
        self.stopping.send_replace(true);
    }
}

/// Stores `value` under `key` unless a value is there; returns the stored value.
async fn settle_meta(store: &Store, key: &str, value: &str) -> Result<String, sqlx::Error> {
    sqlx::query("INSERT INTO meta (key, value) VALUES ($1, $2) ON CONFLICT (key) DO NOTHING")
        .bind(key)
        .bind(value)
        .execute(store.pool())
        .await?;
    sqlx::query_scalar("SELECT value FROM meta WHERE key = $1")
        .bind(key)
        .fetch_one(store.pool())
        .await
}

/// The database URL with any password hidden, for printing.
pub fn redact_url(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        if let Some((cred, host)) = rest.split_once('@') {
            if let Some((user, _)) = cred.split_once(':') {
                return format!("{scheme}://{user}:***@{host}");
            }
        }
    }
    url.to_string()
}

/// Runs the manager until SIGTERM or Ctrl-C.
pub async fn run(args: ManagerArgs) -> anyhow::Result<()> {
    let store = open(&args.database)
        .await
        .with_context(|| format!("opening {}", redact_url(&args.database)))?;
    let (state, generated) = AppState::new(
        store.clone(),
        args.admin_token.clone(),
        args.substrate_prefix,
    )
    .await?;
    if let Some(t) = generated {
        println!("admin token (generated on first start, shown only once): {t}");
    } else if args.admin_token.is_none() {
        println!(
            "admin token: the one generated on first start (pass --admin-token to use another)"
        );
    }
    let streams = state.clone();
    let shutdown = async move {
        shutdown_signal().await;
        streams.stop_streams();
    };
    let app = router(state);
    match &args.listen {
        ListenAddr::Tcp(addr) => {
            let listener = TcpListener::bind(addr)
                .await
                .with_context(|| format!("binding {addr}"))?;
            let local = listener.local_addr()?;
            announce(&format!("http://{local}"), &args);
            axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .context("serving")?;
        }
        ListenAddr::Unix(path) => {
            let listener = bind_unix(path)?;
            announce(&format!("unix:{}", path.display()), &args);
            let served = axum::serve(listener, app)
                .with_graceful_shutdown(shutdown)
                .await
                .context("serving");
            let _ = std::fs::remove_file(path);
            served?;
        }
    }
    store.close().await;
    tracing::info!("manager stopped");
    Ok(())
}

/// Prints where the manager serves (tests and the lab read the first line).
fn announce(at: &str, args: &ManagerArgs) {
    println!("canopy manager listening on {at} (OpenAPI at /openapi.json)");
    println!("database: {}", redact_url(&args.database));
    println!("substrate prefix: {}", args.substrate_prefix);
    tracing::info!(listen = at, "manager started");
}

async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutdown requested");
}

#[cfg(test)]
mod tests {
    use super::ListenAddr;

    #[test]
    fn listen_addresses() {
        assert_eq!(
            "127.0.0.1:7450".parse::<ListenAddr>(),
            Ok(ListenAddr::Tcp("127.0.0.1:7450".parse().unwrap()))
        );
        assert_eq!(
            "unix:/run/canopy/m.sock".parse::<ListenAddr>(),
            Ok(ListenAddr::Unix("/run/canopy/m.sock".into()))
        );
        assert_eq!(
            ListenAddr::Unix("/x.sock".into()).to_string(),
            "unix:/x.sock"
        );
        assert!("unix:".parse::<ListenAddr>().is_err());
        assert!("localhost".parse::<ListenAddr>().is_err());
    }
}
