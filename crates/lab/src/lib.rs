//! A data center of network namespaces on one machine, as DESIGN.md "The lab" describes:
//! a fabric router, hosts running `canopy agent`, VM namespaces whose `eth0` is a TAP of
//! their host's agent, edges running `canopy edge`, an "internet" namespace with servers on
//! documentation addresses, and the manager on a Unix socket in a namespace of its own.
//!
//! Safety rules: every namespace carries the run's prefix (`cnl` + 4 hex digits); links
//! are veth pairs created directly between two lab namespaces (never in the root
//! namespace) or TAP/TUN devices the daemons make inside theirs; nothing is added to the
//! root namespace. [`Lab`] removes everything on drop (processes by pid, namespaces by
//! prefix, the state directory), and [`down`] does the same from the state file for a lab
//! left running by `canopy lab up` or by a crash.

pub mod api;
pub mod flows;
pub mod procs;
pub mod servers;
mod state;
mod topo;

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use state::{EdgeRecord, HostRecord, PoolRecord, State, TenantRecord, VmRecord};
pub use topo::{
    dhcp, down, find_labs, interrupt, interrupted, namespaces_of, ns_run, Capture, Lab, Lease,
};

/// Where labs keep their state: `<STATE_ROOT>/<prefix>/`.
pub const STATE_ROOT: &str = "/run/canopy-lab";

/// The internet namespace's server address (TEST-NET-3).
pub const SERVER_ADDR: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 10);
/// The HTTP server's port.
pub const HTTP_PORT: u16 = 80;
/// The echo server's port (long-lived flows).
pub const ECHO_PORT: u16 = 7;
/// iperf3's port.
pub const IPERF_PORT: u16 = 5201;

pub fn http_server() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(SERVER_ADDR, HTTP_PORT))
}

pub fn echo_server() -> SocketAddr {
    SocketAddr::V4(SocketAddrV4::new(SERVER_ADDR, ECHO_PORT))
}

/// How long daemons may take to say they are ready, and VMs to get a lease.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("manager API: {0}")]
    Api(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Check(String),
    #[error("interrupted")]
    Interrupted,
}

impl Error {
    pub fn io(what: impl Into<String>, source: std::io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// Signals for [`Lab::signal`].
pub const SIGKILL: i32 = libc::SIGKILL;
pub const SIGTERM: i32 = libc::SIGTERM;

/// Whether this process runs as root (the lab needs it).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// How edges of the pool are chosen (the manager's `mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PoolMode {
    /// The sending agent picks the edge (consistent hash over the flow).
    Direct,
    /// Agents send to the pool's anycast locator; the fabric's ECMP route picks, hashing
    /// the substrate addresses only.
    Anycast,
}

impl PoolMode {
    pub fn as_str(self) -> &'static str {
        match self {
            PoolMode::Direct => "direct",
            PoolMode::Anycast => "anycast",
        }
    }
}

/// One VM: its name (unique in the lab: it names its namespace), the host it runs on
/// (index into the hosts) and, optionally, its address.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub name: String,
    pub host: usize,
    pub vip: Option<Ipv4Addr>,
}

/// A tenant with one network, one subnet and its VMs.
#[derive(Debug, Clone)]
pub struct TenantSpec {
    pub name: String,
    /// The network's CIDR, e.g. `10.0.0.0/16`.
    pub cidr: String,
    /// The subnet's CIDR, e.g. `10.0.0.0/24`.
    pub subnet: String,
    /// Route `0.0.0.0/0` to the lab's edge pool.
    pub internet: bool,
    pub vms: Vec<VmSpec>,
}

/// What to build.
#[derive(Debug, Clone)]
pub struct Spec {
    pub hosts: usize,
    pub edges: usize,
    pub pool_mode: PoolMode,
    /// The pool's public range (NAT), inside a documentation block.
    pub public_range: String,
    pub tenants: Vec<TenantSpec>,
    /// Whether the lab outlives this process (`canopy lab up`): it is then found by
    /// `lab status|exec|down`, and only one such lab runs at a time.
    pub detached: bool,
    /// The `canopy` binary that runs the manager, agents, edges and servers.
    pub canopy: PathBuf,
    /// Where state directories go (default [`STATE_ROOT`]).
    pub state_root: PathBuf,
    /// Packet workers per agent and per edge (`--workers`; 0: one per core).
    pub workers: usize,
}

impl Spec {
    /// One tenant (`t1`, 10.0.0.0/16, subnet 10.0.0.0/24, internet through the pool) with
    /// `vms_per_host` VMs on each of `hosts` hosts, named `vm1`, `vm2`, ... in host order.
    pub fn simple(
        hosts: usize,
        vms_per_host: usize,
        edges: usize,
        pool_mode: PoolMode,
        canopy: &Path,
    ) -> Spec {
        let mut vms = Vec::new();
        for h in 0..hosts {
            for _ in 0..vms_per_host {
                vms.push(VmSpec {
                    name: format!("vm{}", vms.len() + 1),
                    host: h,
                    vip: None,
                });
            }
        }
        Spec {
            hosts,
            edges,
            pool_mode,
            public_range: "198.51.100.0/28".into(),
            tenants: vec![TenantSpec {
                name: "t1".into(),
                cidr: "10.0.0.0/16".into(),
                subnet: "10.0.0.0/24".into(),
                internet: true,
                vms,
            }],
            detached: false,
            canopy: canopy.to_owned(),
            state_root: PathBuf::from(STATE_ROOT),
            workers: 0,
        }
    }

    /// Checks the numbers before anything is made.
    pub fn validate(&self) -> Result<(), Error> {
        if self.hosts == 0 || self.hosts > 50 {
            return Err(Error::Refused(format!(
                "--hosts {} must be 1..=50",
                self.hosts
            )));
        }
        if self.edges > 50 {
            return Err(Error::Refused(format!(
                "--edges {} must be 0..=50",
                self.edges
            )));
        }
        let mut names = std::collections::HashSet::new();
        for t in &self.tenants {
            for v in &t.vms {
                if v.host >= self.hosts {
                    return Err(Error::Refused(format!(
                        "VM {} is on host {} but there are {} hosts",
                        v.name,
                        v.host + 1,
                        self.hosts
                    )));
                }
                if !names.insert(v.name.clone()) {
                    return Err(Error::Refused(format!("two VMs are named {}", v.name)));
                }
                check_vm_name(&v.name)?;
            }
        }
        if names.len() > 200 {
            return Err(Error::Refused(format!("{} VMs: at most 200", names.len())));
        }
        Ok(())
    }
}

/// A VM's name names its namespace (`<prefix>-<name>`): 1-40 letters, digits or '-', and
/// not one of the lab's own namespaces.
fn check_vm_name(name: &str) -> Result<(), Error> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-');
    let taken = ["mgr", "fab", "inet"].contains(&name)
        || ((name.starts_with('h') || name.starts_with('e'))
            && name[1..].bytes().all(|b| b.is_ascii_digit()));
    if !ok || taken {
        return Err(Error::Refused(format!(
            "VM name {name:?}: use 1-40 letters, digits or '-', not mgr, fab, inet, h<N> or e<N> (namespaces of the lab)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_are_checked() {
        let bin = Path::new("/bin/true");
        assert!(Spec::simple(2, 2, 2, PoolMode::Direct, bin)
            .validate()
            .is_ok());
        assert!(Spec::simple(0, 1, 1, PoolMode::Direct, bin)
            .validate()
            .is_err());
        assert!(Spec::simple(51, 1, 1, PoolMode::Direct, bin)
            .validate()
            .is_err());
        assert!(Spec::simple(50, 5, 1, PoolMode::Direct, bin)
            .validate()
            .is_err());
        let mut s = Spec::simple(1, 1, 1, PoolMode::Direct, bin);
        for bad in ["h1", "e12", "fab", "inet", "mgr", "a b", "../x", ""] {
            s.tenants[0].vms[0].name = bad.into();
            assert!(s.validate().is_err(), "{bad:?} accepted");
        }
        s.tenants[0].vms[0].name = "web-1".into();
        assert!(s.validate().is_ok());
        s.tenants[0].vms[0].host = 1;
        assert!(s.validate().is_err());
    }

    #[test]
    fn a_process_is_known_by_pid_and_start_time() {
        let me = std::process::id() as i32;
        let rec = procs::ProcRecord {
            name: "me".into(),
            pid: me,
            start_time: procs::start_time(me).expect("own start time"),
            netns: None,
            log: String::new(),
        };
        assert!(rec.alive());
        let other = procs::ProcRecord {
            start_time: rec.start_time + 1,
            ..rec.clone()
        };
        assert!(!other.alive(), "a reused pid is not ours");
    }
}
