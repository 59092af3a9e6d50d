//! The store: one `sqlx` `Any` pool over SQLite or PostgreSQL, the same SQL and migrations
//! for both, and write transactions that bump the store revision and append change records.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;
use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::migrate::{Migration, MigrationSource, MigrationType, Migrator};
use sqlx::{Any, AnyConnection, AnyPool, Executor, Transaction};
use tokio::sync::watch;

/// Which database a store runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// A SQLite file (WAL, `synchronous=FULL`).
    Sqlite,
    /// A PostgreSQL server.
    Postgres,
}

/// Why the store could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The URL names no supported database.
    #[error("unsupported database URL {0:?}: use sqlite:<PATH> or postgres://...")]
    UnsupportedUrl(String),
    /// The database refused.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// A migration failed.
    #[error("migration: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
}

/// A handle on the database; cheap to clone.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// The last revision committed through this process (wakes local watch streams).
    committed: Arc<watch::Sender<i64>>,
}

/// The migrations, embedded in the binary.
#[derive(Debug)]
struct Embedded;

const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "initial", include_str!("../migrations/0001_initial.sql"))];

type BoxDynError = Box<dyn std::error::Error + Send + Sync>;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async {
            Ok(MIGRATIONS
                .iter()
                .map(|(v, d, sql)| {
                    Migration::new(
                        *v,
                        Cow::Borrowed(*d),
                        MigrationType::Simple,
                        Cow::Borrowed(*sql),
                        false,
                    )
                })
                .collect())
        })
    }
}

/// Opens (and creates, for SQLite) the database at `url` and applies pending migrations.
///
/// `sqlite:<PATH>` creates the file on first start and uses WAL with `synchronous=FULL`, so
/// an acknowledged write survives `kill -9`; `postgres://...` may be shared by replicas.
pub async fn open(url: &str) -> Result<Store, StoreError> {
    sqlx::any::install_default_drivers();
    let (backend, url) = if url.starts_with("sqlite:") {
        let url = if url.contains("mode=") || url.contains(":memory:") {
            url.to_string()
        } else if url.contains('?') {
            format!("{url}&mode=rwc")
        } else {
            format!("{url}?mode=rwc")
        };
        (Backend::Sqlite, url)
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        (Backend::Postgres, url.to_string())
    } else {
        return Err(StoreError::UnsupportedUrl(url.to_string()));
    };
    let options = AnyConnectOptions::from_str(&url)?;
    let mut pool = AnyPoolOptions::new()
        .max_connections(if backend == Backend::Sqlite { 4 } else { 8 })
        .acquire_timeout(Duration::from_secs(10));
    if backend == Backend::Sqlite {
        pool = pool.after_connect(|conn, _meta| {
            Box::pin(async move {
                conn.execute("PRAGMA journal_mode = WAL").await?;
                conn.execute("PRAGMA synchronous = FULL").await?;
                conn.execute("PRAGMA foreign_keys = ON").await?;
                conn.execute("PRAGMA busy_timeout = 10000").await?;
                Ok(())
            })
        });
    }
    let pool = pool.connect_with(options).await?;
    let migrator = Migrator::new(Embedded).await?;
    migrator.run(&pool).await?;
    tracing::info!(?backend, "store open, migrations applied");
    let (committed, _) = watch::channel(0);
    Ok(Store {
        pool,
        backend,
        committed: Arc::new(committed),
    })
}

impl Store {
    /// The connection pool, for reads.
    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    /// Which database this is.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Closes every connection (waits for in-flight queries).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// A receiver that changes whenever this process commits a write (other replicas'
    /// writes are found by polling the change log).
    pub fn subscribe(&self) -> watch::Receiver<i64> {
        self.committed.subscribe()
    }

    /// The current store revision.
    pub async fn revision(&self) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("SELECT revision FROM store_revision WHERE id = 1")
            .fetch_one(&self.pool)
            .await
    }

    /// Starts a write: one transaction that first bumps the store revision.
    ///
    /// The bump is the transaction's first statement, so it takes the write lock at once
    /// (SQLite's RESERVED lock, PostgreSQL's row lock on the counter): API writes are
    /// serialised across connections and replicas, revisions commit in order, and the
    /// existence/overlap checks a handler makes inside the transaction cannot race.
    pub async fn write(&self) -> Result<WriteTx, sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        let revision: i64 = sqlx::query_scalar(
            "UPDATE store_revision SET revision = revision + 1 WHERE id = 1 RETURNING revision",
        )
        .fetch_one(&mut *tx)
        .await?;
        Ok(WriteTx {
            tx,
            revision,
            seq: 0,
            committed: self.committed.clone(),
        })
    }
}

/// One API write in progress; dropped without [`WriteTx::commit`] it rolls back.
#[derive(Debug)]
pub struct WriteTx {
    tx: Transaction<'static, Any>,
    revision: i64,
    seq: i64,
    committed: Arc<watch::Sender<i64>>,
}

/// What happened to an object, as recorded in the change log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// Created.
    Create,
    /// Changed.
    Update,
    /// Deleted (the body is its last state).
    Delete,
}

impl Op {
    fn as_str(self) -> &'static str {
        match self {
            Op::Create => "create",
            Op::Update => "update",
            Op::Delete => "delete",
        }
    }
}

impl WriteTx {
    /// The connection to run statements on.
    pub fn conn(&mut self) -> &mut AnyConnection {
        &mut self.tx
    }

    /// The revision this write will commit as.
    pub fn revision(&self) -> i64 {
        self.revision
    }

    /// Takes the next value of a never-decreasing counter (`vni`, `locator`).
    pub async fn next_counter(&mut self, name: &str) -> Result<i64, sqlx::Error> {
        sqlx::query_scalar("UPDATE counters SET value = value + 1 WHERE name = $1 RETURNING value")
            .bind(name)
            .fetch_one(&mut *self.tx)
            .await
    }

    /// Appends a change record for this revision.
    pub async fn record<T: Serialize>(
        &mut self,
        kind: &str,
        op: Op,
        object_id: &str,
        network_id: Option<&str>,
        body: &T,
    ) -> Result<(), sqlx::Error> {
        let body = serde_json::to_string(body).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        self.seq += 1;
        sqlx::query(
            "INSERT INTO changes (revision, seq, kind, op, object_id, network_id, body, created_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(self.revision)
        .bind(self.seq)
        .bind(kind)
        .bind(op.as_str())
        .bind(object_id)
        .bind(network_id.map(str::to_string))
        .bind(body)
        .bind(now_ms())
        .execute(&mut *self.tx)
        .await?;
        Ok(())
    }

    /// Commits; returns the revision.
    pub async fn commit(self) -> Result<i64, sqlx::Error> {
        let rev = self.revision;
        self.tx.commit().await?;
        self.committed.send_if_modified(|last| {
            if rev > *last {
                *last = rev;
                true
            } else {
                false
            }
        });
        Ok(rev)
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `ms` since the epoch as RFC 3339 UTC (`2026-11-25T21:24:37.123Z`).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        (sod / 60) % 60,
        sod % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_827_696_789), "2000-02-29T12:34:56.789Z");
        assert_eq!(rfc3339(1_795_555_477_000), "2026-11-24T21:24:37.000Z");
    }
}
