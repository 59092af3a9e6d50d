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

/// The migrations, embedded in the binary (all of them, or a prefix in tests).
#[derive(Debug)]
struct Embedded(&'static [(i64, &'static str, &'static str)]);

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "initial", include_str!("../migrations/0001_initial.sql")),
    (
        2,
        "route tables, peerings, elastic ips, port blocks",
        include_str!("../migrations/0002_route_tables_eips_port_blocks.sql"),
    ),
];

type BoxDynError = Box<dyn std::error::Error + Send + Sync>;

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        Box::pin(async {
            Ok(self
                .0
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
    let migrator = Migrator::new(Embedded(MIGRATIONS)).await?;
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

    /// The last revision committed through this process (0 before the first write); no
    /// query. Updated before the write is acknowledged.
    pub fn committed_revision(&self) -> i64 {
        *self.committed.borrow()
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

/// Parses an RFC 3339 time (`2026-11-25T21:24:37Z`, optional fraction, `Z` or `±HH:MM`)
/// into milliseconds since the epoch; `None` if it is not one.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() < 20 || b[4] != b'-' || b[7] != b'-' || !matches!(b[10], b'T' | b't' | b' ') {
        return None;
    }
    if b[13] != b':' || b[16] != b':' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        if part.bytes().all(|c| c.is_ascii_digit()) {
            part.parse().ok()
        } else {
            None
        }
    };
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = (num(11..13)?, num(14..16)?, num(17..19)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let mut rest = &s[19..];
    let mut milli = 0i64;
    if let Some(frac) = rest.strip_prefix('.') {
        let n = frac.bytes().take_while(u8::is_ascii_digit).count();
        if n == 0 {
            return None;
        }
        let digits = &frac[..n];
        let padded: String = digits.chars().chain("000".chars()).take(3).collect();
        milli = padded.parse().ok()?;
        rest = &frac[n..];
    }
    let offset_min = match rest {
        "Z" | "z" => 0,
        _ => {
            let rb = rest.as_bytes();
            if rb.len() != 6 || !matches!(rb[0], b'+' | b'-') || rb[3] != b':' {
                return None;
            }
            let oh: i64 = rest[1..3].parse().ok()?;
            let om: i64 = rest[4..6].parse().ok()?;
            if oh > 23 || om > 59 {
                return None;
            }
            let v = oh * 60 + om;
            if rb[0] == b'-' {
                -v
            } else {
                v
            }
        }
    };
    // Howard Hinnant's days_from_civil.
    let y2 = if m <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hh * 3600 + mm * 60 + ss - offset_min * 60;
    Some(secs * 1000 + milli)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version-1 database (routes `edge_pool` / `blackhole`) opened by this version:
    /// its routes are carried into the network route tables with `pool:<id>` targets.
    #[tokio::test]
    async fn version_1_routes_become_route_table_entries() {
        sqlx::any::install_default_drivers();
        let dir = std::env::temp_dir().join(format!("canopy-mig-{}", crate::auth::new_id("t")));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("v1.db");
        let url = format!("sqlite:{}", path.display());
        {
            let pool = AnyPoolOptions::new()
                .max_connections(1)
                .connect(&format!("{url}?mode=rwc"))
                .await
                .unwrap();
            Migrator::new(Embedded(&MIGRATIONS[..1]))
                .await
                .unwrap()
                .run(&pool)
                .await
                .unwrap();
            for sql in [
                "INSERT INTO tenants VALUES ('ten-1', 'a', 0)",
                "INSERT INTO networks VALUES ('net-1', 'ten-1', 'n', '10.0.0.0/16', 1, 0)",
                "INSERT INTO edge_pools VALUES ('pool-1', 'p', 'direct', NULL, '[]', 0, 0, 0, '[]', 0)",
                "INSERT INTO routes VALUES ('rt-1', 'ten-1', 'net-1', '0.0.0.0/0', 'edge_pool', 'pool-1', 1)",
                "INSERT INTO routes VALUES ('rt-2', 'ten-1', 'net-1', '192.168.0.0/16', 'blackhole', NULL, 2)",
            ] {
                pool.execute(sql).await.unwrap();
            }
            pool.close().await;
        }
        let store = open(&url).await.unwrap();
        let rows: Vec<(String, String, String, Option<String>)> =
            sqlx::query_as("SELECT id, table_key, target, edge_pool_id FROM routes ORDER BY id")
                .fetch_all(store.pool())
                .await
                .unwrap();
        assert_eq!(
            rows,
            vec![
                (
                    "rt-1".into(),
                    String::new(),
                    "pool:pool-1".into(),
                    Some("pool-1".into())
                ),
                ("rt-2".into(), String::new(), "blackhole".into(), None),
            ]
        );
        let size: i64 = sqlx::query_scalar("SELECT port_block_size FROM edge_pools")
            .fetch_one(store.pool())
            .await
            .unwrap();
        assert_eq!(size, 1024);
        store.close().await;
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rfc3339_formats() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(951_827_696_789), "2000-02-29T12:34:56.789Z");
        assert_eq!(rfc3339(1_795_555_477_000), "2026-11-24T21:24:37.000Z");
    }

    #[test]
    fn rfc3339_parses() {
        for ms in [0, 951_827_696_789, 1_795_555_477_000, 1_795_555_477_123] {
            assert_eq!(parse_rfc3339(&rfc3339(ms)), Some(ms));
        }
        assert_eq!(
            parse_rfc3339("2026-11-24T22:24:37+01:00"),
            Some(1_795_555_477_000)
        );
        assert_eq!(
            parse_rfc3339("2026-11-24T21:24:37Z"),
            Some(1_795_555_477_000)
        );
        for bad in [
            "",
            "yesterday",
            "2026-13-01T00:00:00Z",
            "2026-11-24T21:24:37",
            "2026-11-24T21:24:37.Z",
        ] {
            assert_eq!(parse_rfc3339(bad), None, "{bad}");
        }
    }
}
