//! What the end-to-end tests share: the [`Lab`] guard that deletes, by exact name,
//! everything a test made; the agent loop on its own thread with a stand-in for the
//! manager; and helpers that run real clients inside VM namespaces.
//!
//! Safety rules (DESIGN.md, "The lab"): every name carries a per-run prefix; no namespace
//! is linked to the root namespace or a physical interface (TAP and TUN devices end at
//! this process's file descriptors; veth pairs join lab namespaces only); cleanup runs on
//! success, failure and panic.

#![allow(dead_code)]

use dataplane::agent::{Agent, AgentStats, Event, Mapping, PortId};
use node::agent_loop::{AgentLoop, Command, IoStats};
use node::netns::{self, Netns};
use node::tap::Device;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Output;
use std::thread::JoinHandle;
use std::time::Duration;
use tokio::sync::{mpsc, oneshot};
use wire::ethernet::MacAddr;

pub const CMD_TIMEOUT: Duration = Duration::from_secs(20);

/// True when the test can run; prints why not otherwise (and fails in CI if a tool is
/// missing, so that CI never skips silently).
pub fn ready() -> bool {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        println!("SKIPPED: needs root (network namespaces, TAP)");
        return false;
    }
    let have = |p: &str, a: &[&str]| {
        netns::run(p, a, Duration::from_secs(5)).is_ok_and(|o| o.status.success())
    };
    let mut missing = Vec::new();
    if !have("ip", &["-V"]) {
        missing.push("iproute2");
    }
    if !have("busybox", &["udhcpc", "--help"]) {
        missing.push("busybox");
    }
    if !have("ping", &["-V"]) {
        missing.push("iputils-ping");
    }
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install {missing:?} (see .ci/run)"
        );
        println!(
            "SKIPPED: missing {missing:?} (apt-get install {})",
            missing.join(" ")
        );
        return false;
    }
    true
}

/// Everything one test made, deleted on drop.
pub struct Lab {
    pub prefix: String,
    namespaces: Vec<Option<Netns>>,
    /// Links created in the root namespace, by exact name (deleted if still there).
    links: Vec<String>,
    files: Vec<PathBuf>,
}

impl Lab {
    /// `tag` tells apart tests of one binary (they run in parallel).
    pub fn new(tag: &str) -> Lab {
        Lab {
            prefix: format!("cnpy{}{tag}", std::process::id() % 100_000),
            namespaces: Vec::new(),
            links: Vec::new(),
            files: Vec::new(),
        }
    }

    pub fn name(&self, what: &str) -> String {
        format!("{}{what}", self.prefix)
    }

    /// A new namespace `<prefix><what>`; returns its index for [`ns`](Self::ns).
    pub fn netns(&mut self, what: &str) -> usize {
        let ns = Netns::create(&self.name(what)).expect("create namespace");
        self.namespaces.push(Some(ns));
        self.namespaces.len() - 1
    }

    /// # Panics
    /// If namespace `i` was deleted.
    pub fn ns(&self, i: usize) -> &Netns {
        self.namespaces[i].as_ref().expect("namespace deleted")
    }

    /// Deletes namespace `i` now (a VM going away, say).
    pub fn delete_netns(&mut self, i: usize) {
        if let Some(ns) = self.namespaces[i].take() {
            ns.delete().expect("delete namespace");
        }
    }

    /// A TAP `<prefix><what>` in the root namespace, moved into namespace `into`, renamed
    /// `eth0`, given `mac` and brought up.
    pub fn vm_tap(&mut self, what: &str, into: usize, mac: MacAddr) -> Device {
        let name = self.name(what);
        self.links.push(name.clone());
        let d = Device::tap(&name).expect("open TAP");
        assert_eq!(d.name(), name);
        let ns = self.ns(into);
        netns::ip(&["link", "set", "dev", &name, "netns", ns.name()]).expect("move TAP");
        ns.ip(&["link", "set", "dev", &name, "name", "eth0"])
            .unwrap();
        ns.ip(&["link", "set", "dev", "eth0", "address", &mac_str(mac)])
            .unwrap();
        ns.ip(&["link", "set", "dev", "eth0", "up"]).unwrap();
        d
    }

    /// A TUN `<prefix><what>` moved into namespace `into` as `sub0`, up.
    pub fn substrate_tun(&mut self, what: &str, into: usize) -> Device {
        let name = self.name(what);
        self.links.push(name.clone());
        let d = Device::tun(&name).expect("open TUN");
        self.ns(into).adopt(&name, Some("sub0")).expect("move TUN");
        d
    }

    /// A veth pair `<prefix><a>`/`<prefix><b>` created directly between namespaces `na`
    /// and `nb` (it never exists in the root namespace), renamed `fab0` in both.
    pub fn veth(&mut self, a: &str, na: usize, b: &str, nb: usize) {
        let (a, b) = (self.name(a), self.name(b));
        let (sa, sb) = (self.ns(na).name().to_owned(), self.ns(nb).name().to_owned());
        netns::ip(&[
            "link", "add", &a, "netns", &sa, "type", "veth", "peer", "name", &b, "netns", &sb,
        ])
        .expect("veth");
        self.ns(na)
            .ip(&["link", "set", "dev", &a, "name", "fab0", "up"])
            .unwrap();
        self.ns(nb)
            .ip(&["link", "set", "dev", &b, "name", "fab0", "up"])
            .unwrap();
    }

    /// Writes udhcpc's hook script; returns its path.
    pub fn udhcpc_script(&mut self) -> String {
        let script = std::env::temp_dir().join(format!("{}-udhcpc.sh", self.prefix));
        std::fs::write(&script, node::netns::UDHCPC_HOOK).unwrap();
        self.files.push(script.clone());
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .unwrap();
        script.to_str().unwrap().to_owned()
    }

    /// A file of this run (deleted with the lab).
    pub fn file(&mut self, what: &str) -> PathBuf {
        let p = std::env::temp_dir().join(format!("{}-{what}", self.prefix));
        self.files.push(p.clone());
        p
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Namespaces first: the devices in them go with them.
        while let Some(ns) = self.namespaces.pop() {
            let Some(ns) = ns else { continue };
            let name = ns.name().to_owned();
            if let Err(e) = ns.delete() {
                eprintln!("cleanup: namespace {name}: {e}");
            }
        }
        for l in self.links.drain(..) {
            // Only if it is still in the root namespace (it normally moved, or is gone).
            let here = netns::run("ip", &["link", "show", "dev", &l], CMD_TIMEOUT)
                .is_ok_and(|o| o.status.success());
            if here {
                if let Err(e) = netns::ip(&["link", "del", "dev", &l]) {
                    eprintln!("cleanup: link {l}: {e}");
                }
            }
        }
        for f in self.files.drain(..) {
            let _ = std::fs::remove_file(f);
        }
    }
}

pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn mac_str(m: MacAddr) -> String {
    let b = m.0;
    format!(
        "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        b[0], b[1], b[2], b[3], b[4], b[5]
    )
}

/// Runs busybox udhcpc on `eth0` of `ns` and checks the lease and what it configured.
pub fn dhcp(ns: &Netns, script: &str, vip: Ipv4Addr, prefix: u8, router: &str, mtu: u16) {
    let out = ns
        .exec(
            "busybox",
            &[
                "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "5", "-T", "1", "-O", "mtu", "-s",
                script,
            ],
            CMD_TIMEOUT,
        )
        .unwrap();
    let log = text(&out);
    assert!(out.status.success(), "udhcpc in {}: {log}", ns.name());
    let want = format!("LEASE ip={vip} mask={prefix} router={router} mtu={mtu}");
    assert!(log.contains(&want), "lease in {}: {log}", ns.name());
    println!("{}: udhcpc: {want}", ns.name());
    let sh = |args: &[&str]| text(&ns.exec_ok("ip", args, CMD_TIMEOUT).unwrap());
    let addr = sh(&["-4", "-o", "addr", "show", "dev", "eth0"]);
    assert!(addr.contains(&format!("inet {vip}/{prefix}")), "{addr}");
    let link = sh(&["-o", "link", "show", "dev", "eth0"]);
    assert!(link.contains(&format!("mtu {mtu}")), "{link}");
    let route = sh(&["-4", "route", "show", "default"]);
    assert!(route.contains(&format!("via {router}")), "{route}");
}

/// `ping -c 3` from `ns` to `dst`; all three answered.
pub fn ping3(ns: &Netns, dst: &str) {
    let out = ns
        .exec(
            "ping",
            &["-c", "3", "-i", "0.2", "-W", "2", dst],
            CMD_TIMEOUT,
        )
        .unwrap();
    let log = text(&out);
    assert!(out.status.success(), "ping {dst} from {}: {log}", ns.name());
    assert!(
        log.contains("3 received"),
        "ping {dst} from {}: {log}",
        ns.name()
    );
    println!("{}: ping {dst}: 3/3", ns.name());
}

/// What an agent thread hands back when stopped.
pub struct AgentReport {
    pub stats: AgentStats,
    pub io: IoStats,
    /// Addresses the agent asked the (stand-in) manager about.
    pub asked: Vec<Ipv4Addr>,
}

/// An agent loop on its own thread (a current-thread runtime), with a stand-in manager
/// that answers resolves from `directory` ("no such node" for anything else). Stops when
/// [`stop`](Self::stop) is called or when dropped (a panicking test).
pub struct AgentThread {
    stop: Option<oneshot::Sender<()>>,
    thread: Option<JoinHandle<AgentReport>>,
}

impl AgentThread {
    pub fn spawn(
        agent: Agent,
        substrate: Device,
        ports: Vec<(PortId, Device)>,
        directory: Vec<(Ipv4Addr, Mapping)>,
    ) -> AgentThread {
        let (stop_tx, stop_rx) = oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let mut lp = AgentLoop::new(agent, substrate).expect("agent loop");
                for (p, d) in ports {
                    lp.add_port(p, d).unwrap();
                }
                let (cmd_tx, cmd_rx) = mpsc::channel(64);
                let (ev_tx, mut ev_rx) = mpsc::channel(64);
                let manager = tokio::spawn(async move {
                    let mut asked = Vec::new();
                    while let Some(ev) = ev_rx.recv().await {
                        let Event::Resolve { network, ip } = ev else {
                            continue;
                        };
                        asked.push(ip);
                        let mapping = directory.iter().find(|(v, _)| *v == ip).map(|&(_, m)| m);
                        let c = Command::Resolved {
                            network,
                            ip,
                            mapping,
                        };
                        if cmd_tx.send(c).await.is_err() {
                            break;
                        }
                    }
                    asked
                });
                let lp = lp
                    .run(cmd_rx, ev_tx, async {
                        let _ = stop_rx.await;
                    })
                    .await
                    .expect("agent loop failed");
                let asked = manager.await.unwrap_or_default();
                AgentReport {
                    stats: lp.agent().stats().clone(),
                    io: lp.io_stats().clone(),
                    asked,
                }
            })
        });
        AgentThread {
            stop: Some(stop_tx),
            thread: Some(thread),
        }
    }

    pub fn stop(mut self) -> AgentReport {
        let _ = self.stop.take().unwrap().send(());
        self.thread
            .take()
            .unwrap()
            .join()
            .expect("agent thread panicked")
    }
}

impl Drop for AgentThread {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// The drop counters that are not zero, by name.
pub fn drops(stats: &AgentStats) -> Vec<(String, u64)> {
    stats
        .drops
        .iter()
        .filter(|&(_, n)| n > 0)
        .map(|(r, n)| (format!("{r:?}"), n))
        .collect()
}

/// CPU time this process has used (user + system), in seconds.
pub fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |v: libc::timeval| v.tv_sec as f64 + v.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}
