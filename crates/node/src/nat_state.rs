//! The agent's NAT table on disk, so that a restarted agent keeps the public ports of the
//! flows that go through it (the issue's "an agent that restarts ... resumes; established
//! TCP flows through it survive a restart").
//!
//! The agent alone knows which public port of a node's blocks each flow has (the edges
//! are stateless): a fresh table would give the next packet of an open flow a new port,
//! which the server takes for another connection, and answers to the old port would find
//! no flow. So the daemon saves the table ([`dataplane::agent::Agent::export_nat`]) every
//! [`crate::agentd::SAVE_EVERY`] and on SIGTERM, and the next agent imports it before any
//! packet flows.
//!
//! Format: JSON (not the fast path), versioned ([`VERSION`]); written to a temporary file
//! and renamed, so a reader sees the old file or the new one, whole. Idle times are
//! relative to the save, and the time between the save and the load (by the wall clock)
//! is added to them on load, so flows time out as if the agent had kept running. A
//! missing, unreadable or foreign file is reported to the caller, which logs it and starts
//! empty: losing the file costs the open flows, never the agent.

use std::io;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::{SystemTime, UNIX_EPOCH};

use dataplane::nat::{FlowId, PortBlock, SavedFlow, SavedNode};
use model::NetworkId;
use serde::{Deserialize, Serialize};

/// The format's version; a file of another version is not read.
pub const VERSION: u32 = 1;
/// The file's name in the state directory.
pub const FILE_NAME: &str = "nat.json";

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path}: not a NAT state file: {source}")]
    Syntax {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("{path}: format version {found}, this agent reads version {VERSION}")]
    Version { path: PathBuf, found: u32 },
    #[error("{path}: {what}")]
    Invalid { path: PathBuf, what: String },
}

#[derive(Debug, Serialize, Deserialize)]
struct File {
    version: u32,
    /// Wall clock of the save, in milliseconds since the Unix epoch.
    saved_at_ms: u64,
    nodes: Vec<Node>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Node {
    network: u32,
    vip: Ipv4Addr,
    blocks: Vec<Block>,
    flows: Vec<Flow>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Block {
    public: Ipv4Addr,
    first: u16,
    last: u16,
}

#[derive(Debug, Serialize, Deserialize)]
struct Flow {
    proto: u8,
    port: u16,
    remote: Ipv4Addr,
    remote_port: u16,
    public_port: u16,
    idle_ms: u64,
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn to_file(nodes: &[SavedNode], now: SystemTime) -> File {
    File {
        version: VERSION,
        saved_at_ms: unix_ms(now),
        nodes: nodes
            .iter()
            .map(|n| Node {
                network: n.network.get(),
                vip: n.vip,
                blocks: n
                    .blocks
                    .iter()
                    .map(|b| Block {
                        public: b.public,
                        first: b.first,
                        last: b.last,
                    })
                    .collect(),
                flows: n
                    .flows
                    .iter()
                    .map(|f| Flow {
                        proto: f.flow.proto,
                        port: f.flow.port,
                        remote: f.flow.remote,
                        remote_port: f.flow.remote_port,
                        public_port: f.public_port,
                        idle_ms: f.idle_ms,
                    })
                    .collect(),
            })
            .collect(),
    }
}

fn from_file(path: &Path, f: File, now: SystemTime) -> Result<Vec<SavedNode>, StateError> {
    if f.version != VERSION {
        return Err(StateError::Version {
            path: path.to_owned(),
            found: f.version,
        });
    }
    // Time spent stopped counts as idle (nothing if the wall clock went back).
    let gap = unix_ms(now).saturating_sub(f.saved_at_ms);
    f.nodes
        .into_iter()
        .map(|n| {
            let network = NetworkId::new(n.network).map_err(|e| StateError::Invalid {
                path: path.to_owned(),
                what: format!("node {}: {e}", n.vip),
            })?;
            let blocks = n
                .blocks
                .iter()
                .map(|b| {
                    if b.first > b.last {
                        return Err(StateError::Invalid {
                            path: path.to_owned(),
                            what: format!(
                                "node {}: block {}:{}-{} is empty",
                                n.vip, b.public, b.first, b.last
                            ),
                        });
                    }
                    Ok(PortBlock {
                        public: b.public,
                        first: b.first,
                        last: b.last,
                    })
                })
                .collect::<Result<_, _>>()?;
            let flows = n
                .flows
                .iter()
                .map(|f| SavedFlow {
                    flow: FlowId {
                        proto: f.proto,
                        port: f.port,
                        remote: f.remote,
                        remote_port: f.remote_port,
                    },
                    public_port: f.public_port,
                    idle_ms: f.idle_ms.saturating_add(gap),
                })
                .collect();
            Ok(SavedNode {
                network,
                vip: n.vip,
                blocks,
                flows,
            })
        })
        .collect()
}

/// Reads a saved table; idle times include the time since it was saved.
pub fn load(path: &Path) -> Result<Vec<SavedNode>, StateError> {
    let bytes = std::fs::read(path).map_err(|source| StateError::Io {
        path: path.to_owned(),
        source,
    })?;
    let f: File = serde_json::from_slice(&bytes).map_err(|source| StateError::Syntax {
        path: path.to_owned(),
        source,
    })?;
    from_file(path, f, SystemTime::now())
}

/// Writes a table (creating the directory if needed): to `<path>.tmp`, synced, then
/// renamed over `path`.
pub fn save(path: &Path, nodes: &[SavedNode]) -> Result<(), StateError> {
    let io = |source| StateError::Io {
        path: path.to_owned(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let json = serde_json::to_vec(&to_file(nodes, SystemTime::now()))
        .map_err(|e| io(io::Error::other(e)))?;
    let tmp = path.with_extension("json.tmp");
    {
        use std::io::Write;
        let mut f = std::fs::File::create(&tmp).map_err(io)?;
        f.write_all(&json).map_err(io)?;
        f.sync_all().map_err(io)?;
    }
    std::fs::rename(&tmp, path).map_err(io)
}

/// The daemon's handle on the file: saves from the periodic task and the final one at
/// shutdown never interleave, and none lands after the final one.
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    lock: Mutex<()>,
    closed: AtomicBool,
    /// A failing save is logged as a warning once, then at debug level until one works.
    failing: AtomicBool,
}

impl Store {
    pub fn new(dir: &Path) -> Self {
        Store {
            path: dir.join(FILE_NAME),
            lock: Mutex::new(()),
            closed: AtomicBool::new(false),
            failing: AtomicBool::new(false),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Saves `nodes`, unless the final save happened already; errors are logged.
    pub fn save(&self, nodes: &[SavedNode]) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        if !self.closed.load(Ordering::Relaxed) {
            self.write(nodes);
        }
    }

    /// The last save: later calls of [`save`](Self::save) write nothing.
    pub fn save_final(&self, nodes: &[SavedNode]) {
        let _g = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.closed.store(true, Ordering::Relaxed);
        self.write(nodes);
    }

    fn write(&self, nodes: &[SavedNode]) {
        match save(&self.path, nodes) {
            Ok(()) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!(path = %self.path.display(), "NAT state saved again");
                }
            }
            Err(e) if self.failing.swap(true, Ordering::Relaxed) => {
                tracing::debug!(error = %e, "cannot save the NAT state");
            }
            Err(e) => tracing::warn!(error = %e,
                "cannot save the NAT state (a restart will lose the open NATed flows)"),
        }
    }

    /// The saved table, or nothing (logged) if there is none or it cannot be read.
    pub fn load(&self) -> Vec<SavedNode> {
        match load(&self.path) {
            Ok(n) => n,
            Err(StateError::Io { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
                tracing::info!(path = %self.path.display(), "no saved NAT state; starting empty");
                Vec::new()
            }
            Err(e) => {
                tracing::warn!(error = %e, "saved NAT state ignored; starting empty");
                Vec::new()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn saved() -> Vec<SavedNode> {
        vec![SavedNode {
            network: NetworkId::new(7).unwrap(),
            vip: Ipv4Addr::new(10, 0, 0, 2),
            blocks: vec![PortBlock {
                public: Ipv4Addr::new(203, 0, 113, 5),
                first: 1024,
                last: 2047,
            }],
            flows: vec![SavedFlow {
                flow: FlowId {
                    proto: 6,
                    port: 40000,
                    remote: Ipv4Addr::new(198, 51, 100, 10),
                    remote_port: 80,
                },
                public_port: 1030,
                idle_ms: 1500,
            }],
        }]
    }

    #[test]
    fn saved_and_loaded_alike_with_the_gap_as_idle_time() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(FILE_NAME);
        save(&path, &saved()).unwrap();
        assert!(!path.with_extension("json.tmp").exists());
        let back = load(&path).unwrap();
        let mut want = saved();
        // A load right after the save: less than a few seconds passed.
        let gap = back[0].flows[0].idle_ms - 1500;
        assert!(gap < 5_000, "gap {gap}");
        want[0].flows[0].idle_ms += gap;
        assert_eq!(back, want);

        // A save an hour ago: its flows have been idle an hour longer.
        let f = to_file(&saved(), SystemTime::now() - Duration::from_secs(3600));
        let back = from_file(&path, f, SystemTime::now()).unwrap();
        assert!(back[0].flows[0].idle_ms >= 3_601_500);
    }

    #[test]
    fn bad_files_are_refused_with_what_is_wrong() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(FILE_NAME);
        assert!(matches!(load(&path), Err(StateError::Io { .. })));
        std::fs::write(&path, b"{\"version\": 1, \"nodes\": [").unwrap();
        assert!(matches!(load(&path), Err(StateError::Syntax { .. })));
        std::fs::write(&path, br#"{"version": 2, "saved_at_ms": 0, "nodes": []}"#).unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.to_string().contains("version 2"), "{e}");
        std::fs::write(
            &path,
            br#"{"version": 1, "saved_at_ms": 0, "nodes": [{"network": 99999999, "vip": "10.0.0.2", "blocks": [], "flows": []}]}"#,
        )
        .unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.to_string().contains("99999999"), "{e}");
        std::fs::write(
            &path,
            br#"{"version": 1, "saved_at_ms": 0, "nodes": [{"network": 1, "vip": "10.0.0.2", "blocks": [{"public": "203.0.113.5", "first": 9, "last": 1}], "flows": []}]}"#,
        )
        .unwrap();
        let e = load(&path).unwrap_err();
        assert!(e.to_string().contains("is empty"), "{e}");
        // The store logs and starts empty.
        assert!(Store::new(dir.path()).load().is_empty());
    }

    #[test]
    fn nothing_lands_after_the_final_save() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::new(dir.path());
        store.save_final(&saved());
        store.save(&[]);
        assert_eq!(store.load().len(), 1);
    }
}
