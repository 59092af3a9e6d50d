//! Read cache for the resolve path: bearer-token hash -> principal, (principal, network) ->
//! may resolve, (network, ip) -> answer.
//!
//! Everything in it is tagged with the store revision it was read at, and the whole cache is
//! dropped when the revision moves (every API write bumps it). The current revision is
//! known without a query: writes of this process update [`Store::committed_revision`]
//! before they are acknowledged, so a request that starts after a local write was
//! acknowledged never sees older state. Writes of other replicas (same PostgreSQL) are seen
//! by re-reading the revision at most every [`REMOTE_TTL`]: that is the staleness bound
//! across replicas (a token revoked through another replica may resolve for up to that
//! long, the same bound as the watch streams' polling).

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::RwLock;
use std::time::Duration;

use crate::auth::Principal;
use crate::store::{now_ms, Store};
use crate::types::Resolution;

/// How long a revision read from the database is trusted for other replicas' writes.
pub const REMOTE_TTL: Duration = Duration::from_millis(500);

/// Entries kept at most per map; beyond that a map is emptied (bounds memory against
/// callers asking for many unknown addresses).
const MAX_ENTRIES: usize = 1 << 20;

#[derive(Debug, Default)]
struct Inner {
    revision: i64,
    /// Token hash -> principal (`None`: unknown token).
    tokens: HashMap<String, Option<Principal>>,
    /// Principal -> network -> allowed.
    allowed: HashMap<Principal, HashMap<String, bool>>,
    /// Network -> ip -> answer (`None`: no such address).
    answers: HashMap<String, HashMap<u32, Option<Resolution>>>,
    /// Entries in `allowed` and `answers`.
    entries: usize,
}

impl Inner {
    fn make_room(&mut self) {
        if self.entries >= MAX_ENTRIES {
            self.allowed.clear();
            self.answers.clear();
            self.entries = 0;
        }
    }
}

/// The cache; one per [`crate::AppState`].
#[derive(Debug, Default)]
pub struct ResolveCache {
    inner: RwLock<Inner>,
    /// Last revision read from the database, and when (ms).
    remote_revision: AtomicI64,
    remote_checked_ms: AtomicI64,
}

impl ResolveCache {
    /// The revision to read the cache at: the newest of this process's last commit and the
    /// database's (re-read when older than [`REMOTE_TTL`]).
    pub async fn revision(&self, store: &Store) -> Result<i64, sqlx::Error> {
        let local = store.committed_revision();
        let now = now_ms();
        let checked = self.remote_checked_ms.load(Ordering::Acquire);
        if now - checked >= REMOTE_TTL.as_millis() as i64
            && self
                .remote_checked_ms
                .compare_exchange(checked, now, Ordering::AcqRel, Ordering::Acquire)
                .is_ok()
        {
            match store.revision().await {
                Ok(r) => {
                    self.remote_revision.fetch_max(r, Ordering::AcqRel);
                }
                Err(e) => {
                    // Let the next request try again.
                    self.remote_checked_ms.store(0, Ordering::Release);
                    return Err(e);
                }
            }
        }
        Ok(local.max(self.remote_revision.load(Ordering::Acquire)))
    }

    fn read<T>(&self, rev: i64, f: impl FnOnce(&Inner) -> Option<T>) -> Option<T> {
        let g = self.inner.read().unwrap_or_else(|e| e.into_inner());
        if g.revision == rev {
            f(&g)
        } else {
            None
        }
    }

    fn write(&self, rev: i64, f: impl FnOnce(&mut Inner)) {
        let mut g = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if rev > g.revision {
            *g = Inner {
                revision: rev,
                ..Inner::default()
            };
        }
        if g.revision == rev {
            f(&mut g);
        }
    }

    /// The cached principal of a token hash at `rev`: `Some(None)` = known to be unknown.
    pub fn token(&self, rev: i64, hash: &str) -> Option<Option<Principal>> {
        self.read(rev, |g| g.tokens.get(hash).cloned())
    }

    /// Remembers what a token hash was at `rev` (read from the store at `rev` or later).
    pub fn put_token(&self, rev: i64, hash: String, p: Option<Principal>) {
        self.write(rev, |g| {
            if g.tokens.len() >= MAX_ENTRIES {
                g.tokens.clear();
            }
            g.tokens.insert(hash, p);
        });
    }

    /// Whether `p` may resolve in `network`, if known at `rev`.
    pub fn allowed(&self, rev: i64, p: &Principal, network: &str) -> Option<bool> {
        self.read(rev, |g| g.allowed.get(p)?.get(network).copied())
    }

    /// Remembers an authorisation fact.
    pub fn put_allowed(&self, rev: i64, p: Principal, network: String, ok: bool) {
        self.write(rev, |g| {
            g.make_room();
            g.allowed.entry(p).or_default().insert(network, ok);
            g.entries += 1;
        });
    }

    /// The answer for `(network, ip)` at `rev`: `Some(None)` = no such address.
    pub fn answer(&self, rev: i64, network: &str, ip: u32) -> Option<Option<Resolution>> {
        self.read(rev, |g| g.answers.get(network)?.get(&ip).cloned())
    }

    /// Remembers an answer.
    pub fn put_answer(&self, rev: i64, network: String, ip: u32, r: Option<Resolution>) {
        self.write(rev, |g| {
            g.make_room();
            g.answers.entry(network).or_default().insert(ip, r);
            g.entries += 1;
        });
    }
}
