//! The state file (`<state dir>/state.json`): everything `lab status|exec|down` and a
//! cleanup after a crash need, rewritten after each step of the build.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::procs::ProcRecord;
use crate::{Error, PoolMode};

#[derive(Debug, Clone, Serialize, Deserialize, Default)]
pub struct State {
    pub prefix: String,
    pub dir: PathBuf,
    /// Left running by `canopy lab up`.
    pub detached: bool,
    /// The pid of the process that built it.
    pub builder_pid: u32,
    pub socket: PathBuf,
    pub admin_token: String,
    pub procs: Vec<ProcRecord>,
    pub tenants: Vec<TenantRecord>,
    pub hosts: Vec<HostRecord>,
    pub pool: Option<PoolRecord>,
    pub edges: Vec<EdgeRecord>,
    pub vms: Vec<VmRecord>,
    pub fabric_ns: String,
    pub internet_ns: String,
    pub manager_ns: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantRecord {
    pub name: String,
    pub id: String,
    pub token: String,
    pub network_id: String,
    pub network_cidr: String,
    pub subnet_id: String,
    pub subnet_cidr: String,
    pub gateway: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HostRecord {
    pub name: String,
    pub id: String,
    pub netns: String,
    pub locator: String,
    /// The agent's credential (the state directory is root's only).
    pub credential: String,
    /// The fabric's end of the host's link.
    pub fabric_link: String,
    /// The host's address on that link (the fabric routes the locator to it).
    pub link_addr: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolRecord {
    pub id: String,
    pub name: String,
    pub mode: PoolMode,
    pub anycast_locator: Option<String>,
    pub public_ranges: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EdgeRecord {
    pub name: String,
    pub id: String,
    pub netns: String,
    pub locator: String,
    /// The edge's credential.
    pub credential: String,
    /// The number in its name (`e<index>`), which numbers its links.
    pub index: usize,
    pub fabric_link: String,
    pub link_addr: String,
    /// The internet namespace's end of the edge's link.
    pub inet_link: String,
    /// The edge's IPv4 address on that link (the internet routes public ranges to it).
    pub inet_addr: String,
    /// Taken out of the fabric's and the internet's routes.
    pub withdrawn: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRecord {
    pub name: String,
    pub tenant: String,
    pub id: String,
    pub host: String,
    pub netns: String,
    pub vip: String,
    pub mac: String,
    /// The address its DHCP client configured (`a.b.c.d/len`).
    pub address: Option<String>,
}

impl State {
    pub fn file(dir: &Path) -> PathBuf {
        dir.join("state.json")
    }

    pub fn save(&self) -> Result<(), Error> {
        let path = State::file(&self.dir);
        let tmp = self.dir.join("state.json.tmp");
        let text =
            serde_json::to_string_pretty(self).map_err(|e| Error::Check(format!("state: {e}")))?;
        std::fs::write(&tmp, text)
            .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
        std::fs::rename(&tmp, &path)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))
    }

    pub fn load(dir: &Path) -> Result<State, Error> {
        let path = State::file(dir);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Check(format!("{} is not a lab state: {e}", path.display())))
    }

    /// Some process of the lab still runs.
    pub fn any_alive(&self) -> bool {
        self.procs.iter().any(ProcRecord::alive)
    }

    pub fn tenant(&self, name: &str) -> Option<&TenantRecord> {
        self.tenants.iter().find(|t| t.name == name)
    }

    pub fn host(&self, name: &str) -> Option<&HostRecord> {
        self.hosts.iter().find(|h| h.name == name)
    }

    pub fn vm(&self, name: &str) -> Option<&VmRecord> {
        self.vms.iter().find(|v| v.name == name)
    }

    pub fn edge(&self, name: &str) -> Option<&EdgeRecord> {
        self.edges.iter().find(|e| e.name == name)
    }
}
