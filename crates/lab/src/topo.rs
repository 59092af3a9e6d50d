//! Building, running and removing a lab.
//!
//! Layout (every namespace named `<prefix>-<what>`):
//!
//! ```text
//!   mgr   the manager, no links at all: daemons reach it on <state dir>/manager.sock
//!   fab   the fabric router: one veth per host and per edge, routes each /72 locator to
//!         its owner, the anycast locator of an anycast pool as an ECMP route over the
//!         pool's edges hashing the substrate addresses only
//!   h<i>  a host: fab0 to the fabric, IPv6 default route, forwarding; runs the agent,
//!         which makes its TUN sub0 here and each VM's TAP inside the VM's namespace
//!   <vm>  a VM: eth0 (TAP of its host's agent), busybox udhcpc
//!   e<j>  an edge: fab0 to the fabric, inet0 to the internet (IPv4 default route);
//!         runs the edge, which makes TUNs sub0 and out0 here
//!   inet  the internet: 203.0.113.10 with HTTP, echo and iperf3 servers; the pool's
//!         public ranges routed back over the edges (ECMP)
//! ```
//!
//! Link addresses: fabric side `fd6c:6162:0:<k>::1/64`, far side `::2` (k = host index, or
//! 0x100 + edge index); edge j's IPv4 link is `198.18.<j>.0/24` (.1 internet, .2 edge).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use node::netns;
use serde_json::{json, Value};

use crate::api::{field, Api};
use crate::procs::{self, ProcRecord};
use crate::state::{EdgeRecord, HostRecord, PoolRecord, State, TenantRecord, VmRecord};
use crate::{Error, Spec, READY_TIMEOUT, SERVER_ADDR};

mod vms;

/// Bound on every command the lab runs.
const CMD_TIMEOUT: Duration = Duration::from_secs(20);

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

/// Asks labs being built, and flows being measured, to stop (a Ctrl-C handler calls it);
/// the lab under construction is then removed by its drop guard.
pub fn interrupt() {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

pub fn interrupted() -> bool {
    INTERRUPTED.load(Ordering::SeqCst)
}

fn check_interrupt() -> Result<(), Error> {
    if interrupted() {
        Err(Error::Interrupted)
    } else {
        Ok(())
    }
}

/// A running lab. Dropping it stops its processes and removes its namespaces and state
/// directory, unless it was [`detach`](Lab::detach)ed.
pub struct Lab {
    pub state: State,
    spec: Spec,
    children: HashMap<String, Child>,
    api: Option<Api>,
    armed: bool,
}

/// Runs `ip args...`, naming the command in the error.
fn ip(args: &[&str]) -> Result<Output, Error> {
    netns::ip(args).map_err(|e| Error::io("ip", e))
}

/// `ip -n ns args...`.
fn ipn(ns: &str, args: &[&str]) -> Result<Output, Error> {
    let mut all = vec!["-n", ns];
    all.extend_from_slice(args);
    ip(&all)
}

/// Runs `program args...` inside `ns`, bounded; the output whatever the status.
pub fn ns_run(ns: &str, program: &str, args: &[&str], timeout: Duration) -> Result<Output, Error> {
    let mut all = vec!["netns", "exec", ns, program];
    all.extend_from_slice(args);
    netns::run("ip", &all, timeout).map_err(|e| Error::io(format!("{program} in {ns}"), e))
}

fn sysctl(ns: &str, key: &str, value: &str) -> Result<(), Error> {
    let out = ns_run(
        ns,
        "sysctl",
        &["-q", "-w", &format!("{key}={value}")],
        CMD_TIMEOUT,
    )?;
    if !out.status.success() {
        return Err(Error::Check(format!(
            "sysctl {key}={value} in {ns}: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(())
}

/// The namespaces under /run/netns whose name starts with `<prefix>-`.
pub fn namespaces_of(prefix: &str) -> Vec<String> {
    let want = format!("{prefix}-");
    let mut v: Vec<String> = std::fs::read_dir("/run/netns")
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| e.file_name().into_string().ok())
                .filter(|n| n.starts_with(&want))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn random_prefix(root: &Path) -> Result<String, Error> {
    for _ in 0..16 {
        let mut b = [0u8; 2];
        getrandom::fill(&mut b).map_err(|e| Error::Check(format!("random: {e}")))?;
        let p = format!("cnl{}", hex::encode(b));
        if namespaces_of(&p).is_empty() && !root.join(&p).exists() {
            return Ok(p);
        }
    }
    Err(Error::Check("no free lab prefix".into()))
}

fn link_v6(k: usize, side: u8) -> String {
    format!("fd6c:6162:0:{k:x}::{side}")
}

/// The last lines of a log file, for error messages.
fn log_tail(path: &str) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(8)..].join("\n")
}

impl Lab {
    /// Builds the lab of `spec`, reporting each step to `progress`. On any failure (or
    /// [`interrupt`]) everything made so far is removed before the error returns.
    pub fn up(spec: Spec, progress: &mut dyn FnMut(&str)) -> Result<Lab, Error> {
        spec.validate()?;
        check_tools()?;
        std::fs::create_dir_all(&spec.state_root)
            .map_err(|e| Error::io(format!("creating {}", spec.state_root.display()), e))?;
        if spec.detached {
            for st in find_labs(&spec.state_root) {
                if st.detached && st.any_alive() {
                    return Err(Error::Refused(format!(
                        "a lab is already running (prefix {}, state in {}); `canopy lab down` removes it",
                        st.prefix,
                        st.dir.display()
                    )));
                }
                if st.detached {
                    progress(&format!(
                        "removing the remains of lab {} (no process of it runs)",
                        st.prefix
                    ));
                    down_state(&st)?;
                }
            }
        }
        let prefix = random_prefix(&spec.state_root)?;
        let dir = spec.state_root.join(&prefix);
        for sub in ["", "logs", "ready"] {
            std::fs::create_dir_all(dir.join(sub))
                .map_err(|e| Error::io(format!("creating {}", dir.join(sub).display()), e))?;
        }
        // The state file holds the admin token and the daemons' credentials: root only.
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))
            .map_err(|e| Error::io(format!("securing {}", dir.display()), e))?;
        let mut token = [0u8; 16];
        getrandom::fill(&mut token).map_err(|e| Error::Check(format!("random: {e}")))?;
        let state = State {
            prefix: prefix.clone(),
            dir: dir.clone(),
            detached: false,
            builder_pid: std::process::id(),
            socket: dir.join("manager.sock"),
            admin_token: hex::encode(token),
            fabric_ns: format!("{prefix}-fab"),
            internet_ns: format!("{prefix}-inet"),
            manager_ns: format!("{prefix}-mgr"),
            ..State::default()
        };
        let mut lab = Lab {
            state,
            spec,
            children: HashMap::new(),
            api: None,
            armed: true,
        };
        lab.state.save()?;
        progress(&format!("lab {prefix}: state in {}", dir.display()));
        lab.build(progress)?;
        Ok(lab)
    }

    fn build(&mut self, progress: &mut dyn FnMut(&str)) -> Result<(), Error> {
        self.start_manager()?;
        progress("manager running (Unix socket only, in a namespace without links)");
        check_interrupt()?;
        self.create_resources()?;
        progress(&format!(
            "manager resources: {} tenant(s), {} host(s), {} edge(s), {} VM(s)",
            self.state.tenants.len(),
            self.state.hosts.len(),
            self.state.edges.len(),
            self.state.vms.len()
        ));
        check_interrupt()?;
        self.build_fabric()?;
        self.build_internet()?;
        progress("namespaces and links: fabric, hosts, VMs, edges, internet");
        check_interrupt()?;
        self.start_servers()?;
        progress(&format!(
            "internet servers on {SERVER_ADDR}: HTTP :{}, echo :{}, iperf3 :{}",
            crate::HTTP_PORT,
            crate::ECHO_PORT,
            crate::IPERF_PORT
        ));
        check_interrupt()?;
        for i in 0..self.state.edges.len() {
            self.start_edge(i)?;
        }
        for i in 0..self.state.hosts.len() {
            self.start_agent(i)?;
        }
        self.wait_ready(progress)?;
        check_interrupt()?;
        self.dhcp_all(progress)?;
        self.state.save()
    }

    /// The admin's API client.
    pub fn api(&self) -> &Api {
        self.api.as_ref().expect("manager started")
    }

    /// The API client of tenant `name`.
    pub fn tenant_api(&self, name: &str) -> Option<Api> {
        let t = self.state.tenant(name)?;
        Some(self.api().with_token(&t.token))
    }

    fn log(&self, name: &str) -> PathBuf {
        self.state.dir.join("logs").join(format!("{name}.log"))
    }

    fn spawn(
        &mut self,
        name: &str,
        netns: Option<&str>,
        program: &str,
        args: Vec<String>,
        env: &[(&str, &str)],
    ) -> Result<(), Error> {
        let log = self.log(name);
        let (child, rec) = procs::spawn(name, netns, program, &args, env, &log)?;
        self.state.procs.retain(|p| p.name != name);
        self.state.procs.push(rec);
        self.children.insert(name.to_owned(), child);
        self.state.save()
    }

    fn proc(&self, name: &str) -> Option<&ProcRecord> {
        self.state.procs.iter().find(|p| p.name == name)
    }

    /// Fails with the end of its log if process `name` has exited.
    fn check_running(&mut self, name: &str) -> Result<(), Error> {
        let exited = match self.children.get_mut(name) {
            Some(c) => c.try_wait().ok().flatten(),
            None => None,
        };
        if let Some(status) = exited {
            let log = self.proc(name).map(|p| p.log.clone()).unwrap_or_default();
            return Err(Error::Check(format!(
                "{name} exited ({status}); the end of its log:\n{}",
                log_tail(&log)
            )));
        }
        Ok(())
    }

    fn canopy(&self) -> String {
        self.spec.canopy.display().to_string()
    }

    fn make_netns(&mut self, name: &str) -> Result<(), Error> {
        ip(&["netns", "add", name])?;
        // No duplicate address detection on the links made here (the lab alone numbers
        // them): with it, a link's first second goes to DAD, and a lab's first packets
        // wait for neighbour discovery behind it (a first ping took 0.4-1.4 s).
        for scope in ["default", "all"] {
            sysctl(name, &format!("net.ipv6.conf.{scope}.accept_dad"), "0")?;
        }
        ipn(name, &["link", "set", "lo", "up"])?;
        Ok(())
    }

    fn start_manager(&mut self) -> Result<(), Error> {
        let ns = self.state.manager_ns.clone();
        self.make_netns(&ns)?;
        let db = self.state.dir.join("canopy.db");
        let args = vec![
            "manager".into(),
            "--listen".into(),
            format!("unix:{}", self.state.socket.display()),
            "--database".into(),
            format!("sqlite:{}", db.display()),
        ];
        let canopy = self.canopy();
        let token = self.state.admin_token.clone();
        self.spawn(
            "manager",
            Some(&ns),
            &canopy,
            args,
            &[("CANOPY_ADMIN_TOKEN", &token)],
        )?;
        let api = Api::new(&self.state.socket, &self.state.admin_token)?;
        let deadline = Instant::now() + READY_TIMEOUT;
        while !(self.state.socket.exists() && api.healthy()) {
            self.check_running("manager")?;
            if Instant::now() > deadline {
                return Err(Error::Check(format!(
                    "the manager did not answer on {} within {READY_TIMEOUT:?}",
                    self.state.socket.display()
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.api = Some(api);
        Ok(())
    }

    fn create_resources(&mut self) -> Result<(), Error> {
        let api = self.api().clone();
        let p = self.state.prefix.clone();
        if self.spec.edges > 0 {
            let pool = api.post(
                "/v1/edge-pools",
                json!({"name": "internet", "mode": self.spec.pool_mode.as_str(),
                       "public_ranges": [self.spec.public_range]}),
            )?;
            self.state.pool = Some(PoolRecord {
                id: field(&pool, "id")?,
                name: "internet".into(),
                mode: self.spec.pool_mode,
                anycast_locator: pool
                    .get("anycast_locator")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                public_ranges: vec![self.spec.public_range.clone()],
            });
            for _ in 0..self.spec.edges {
                self.create_edge()?;
            }
        }
        for i in 1..=self.spec.hosts {
            let name = format!("h{i}");
            let h = api.post("/v1/hosts", json!({"name": name}))?;
            self.state.hosts.push(HostRecord {
                netns: format!("{p}-{name}"),
                id: field(&h, "id")?,
                locator: field(&h, "locator")?,
                credential: field(&h, "credential")?,
                fabric_link: format!("{p}h{i}"),
                link_addr: link_v6(i, 2),
                name,
            });
        }
        for t in self.spec.tenants.clone() {
            let tenant = api.post("/v1/tenants", json!({"name": t.name}))?;
            let tid = field(&tenant, "id")?;
            let tok = api.post(&format!("/v1/tenants/{tid}/tokens"), json!({"name": "lab"}))?;
            let ta = api.with_token(&field(&tok, "token")?);
            let net = ta.post("/v1/networks", json!({"name": "net", "cidr": t.cidr}))?;
            let net_id = field(&net, "id")?;
            let sub = ta.post(
                "/v1/subnets",
                json!({"network_id": net_id, "name": "sub", "cidr": t.subnet}),
            )?;
            if t.internet {
                if let Some(pool) = &self.state.pool {
                    ta.post(
                        "/v1/routes",
                        json!({"network_id": net_id, "destination": "0.0.0.0/0",
                               "target": format!("pool:{}", pool.id)}),
                    )?;
                }
            }
            let rec = TenantRecord {
                name: t.name.clone(),
                id: tid,
                token: field(&tok, "token")?,
                network_id: net_id,
                network_cidr: t.cidr.clone(),
                subnet_id: field(&sub, "id")?,
                subnet_cidr: t.subnet.clone(),
                gateway: field(&sub, "gateway")?,
            };
            for v in &t.vms {
                let host = &self.state.hosts[v.host];
                let mut body =
                    json!({"subnet_id": rec.subnet_id, "name": v.name, "host_id": host.id});
                if let Some(vip) = v.vip {
                    body["vip"] = json!(vip.to_string());
                }
                let n = ta.post("/v1/nodes", body)?;
                self.state.vms.push(VmRecord {
                    name: v.name.clone(),
                    tenant: t.name.clone(),
                    id: field(&n, "id")?,
                    host: host.name.clone(),
                    netns: format!("{p}-{}", v.name),
                    vip: field(&n, "vip")?,
                    mac: field(&n, "mac")?,
                    address: None,
                });
            }
            self.state.tenants.push(rec);
        }
        self.state.save()
    }

    /// Adds an edge to the pool through the API (`e<n>`); returns its index.
    fn create_edge(&mut self) -> Result<usize, Error> {
        let pool = self
            .state
            .pool
            .clone()
            .ok_or_else(|| Error::Refused("this lab has no edge pool".into()))?;
        let p = self.state.prefix.clone();
        let j = self
            .state
            .edges
            .iter()
            .filter_map(|e| e.name.strip_prefix('e')?.parse::<usize>().ok())
            .max()
            .unwrap_or(0)
            + 1;
        let name = format!("e{j}");
        let e = self
            .api()
            .post("/v1/edges", json!({"pool_id": pool.id, "name": name}))?;
        self.state.edges.push(EdgeRecord {
            netns: format!("{p}-{name}"),
            id: field(&e, "id")?,
            locator: field(&e, "locator")?,
            credential: field(&e, "credential")?,
            fabric_link: format!("{p}e{j}"),
            link_addr: link_v6(0x100 + j, 2),
            inet_link: format!("{p}i{j}"),
            inet_addr: format!("198.18.{j}.2"),
            index: j,
            withdrawn: false,
            name,
        });
        self.state.save()?;
        Ok(self.state.edges.len() - 1)
    }

    fn build_fabric(&mut self) -> Result<(), Error> {
        let fab = self.state.fabric_ns.clone();
        self.make_netns(&fab)?;
        sysctl(&fab, "net.ipv6.conf.all.forwarding", "1")?;
        // Hash the substrate source and destination addresses only (fields 0x3), not the
        // flow label: the load balancer of the seed, whose imbalance anycast mode shows.
        if sysctl(&fab, "net.ipv6.fib_multipath_hash_fields", "0x0003").is_ok() {
            sysctl(&fab, "net.ipv6.fib_multipath_hash_policy", "3")?;
        } else {
            sysctl(&fab, "net.ipv6.fib_multipath_hash_policy", "0")?;
        }
        for i in 0..self.state.hosts.len() {
            let h = self.state.hosts[i].clone();
            self.make_netns(&h.netns)?;
            sysctl(&h.netns, "net.ipv6.conf.all.forwarding", "1")?;
            let k: usize = h.name[1..].parse().unwrap_or(i + 1);
            self.fabric_link(&h.fabric_link, &h.netns, k)?;
            ipn(
                &fab,
                &[
                    "-6",
                    "route",
                    "replace",
                    &h.locator,
                    "via",
                    &h.link_addr,
                    "dev",
                    &h.fabric_link,
                ],
            )?;
        }
        for v in self.state.vms.clone() {
            self.make_netns(&v.netns)?;
        }
        for i in 0..self.state.edges.len() {
            self.build_edge_ns(i)?;
        }
        self.update_anycast()
    }

    /// A veth between the fabric (`link`) and `ns` (`fab0`), addressed on link k, with
    /// `ns`'s IPv6 default route through the fabric.
    fn fabric_link(&self, link: &str, ns: &str, k: usize) -> Result<(), Error> {
        let fab = &self.state.fabric_ns;
        let peer = format!("{link}x");
        ip(&[
            "link", "add", link, "netns", fab, "type", "veth", "peer", "name", &peer, "netns", ns,
        ])?;
        ipn(ns, &["link", "set", "dev", &peer, "name", "fab0"])?;
        ipn(
            fab,
            &[
                "addr",
                "add",
                &format!("{}/64", link_v6(k, 1)),
                "dev",
                link,
                "nodad",
            ],
        )?;
        ipn(
            ns,
            &[
                "addr",
                "add",
                &format!("{}/64", link_v6(k, 2)),
                "dev",
                "fab0",
                "nodad",
            ],
        )?;
        ipn(fab, &["link", "set", "dev", link, "up"])?;
        ipn(ns, &["link", "set", "dev", "fab0", "up"])?;
        ipn(
            ns,
            &[
                "-6",
                "route",
                "replace",
                "default",
                "via",
                &link_v6(k, 1),
                "dev",
                "fab0",
            ],
        )?;
        Ok(())
    }

    fn build_edge_ns(&mut self, i: usize) -> Result<(), Error> {
        let e = self.state.edges[i].clone();
        self.make_netns(&e.netns)?;
        for (k, v) in [
            ("net.ipv4.ip_forward", "1"),
            ("net.ipv6.conf.all.forwarding", "1"),
            ("net.ipv4.conf.all.rp_filter", "0"),
            ("net.ipv4.conf.default.rp_filter", "0"),
        ] {
            sysctl(&e.netns, k, v)?;
        }
        self.fabric_link(&e.fabric_link, &e.netns, 0x100 + e.index)?;
        let fab = self.state.fabric_ns.clone();
        ipn(
            &fab,
            &[
                "-6",
                "route",
                "replace",
                &e.locator,
                "via",
                &e.link_addr,
                "dev",
                &e.fabric_link,
            ],
        )?;
        // The edge's way to the internet (the internet namespace exists from here on).
        let inet = self.state.internet_ns.clone();
        if !Path::new("/run/netns").join(&inet).exists() {
            self.make_netns(&inet)?;
        }
        let peer = format!("{}x", e.inet_link);
        ip(&[
            "link",
            "add",
            &e.inet_link,
            "netns",
            &inet,
            "type",
            "veth",
            "peer",
            "name",
            &peer,
            "netns",
            &e.netns,
        ])?;
        ipn(&e.netns, &["link", "set", "dev", &peer, "name", "inet0"])?;
        ipn(
            &inet,
            &[
                "addr",
                "add",
                &format!("198.18.{}.1/24", e.index),
                "dev",
                &e.inet_link,
            ],
        )?;
        ipn(
            &e.netns,
            &[
                "addr",
                "add",
                &format!("{}/24", e.inet_addr),
                "dev",
                "inet0",
            ],
        )?;
        ipn(&inet, &["link", "set", "dev", &e.inet_link, "up"])?;
        ipn(&e.netns, &["link", "set", "dev", "inet0", "up"])?;
        ipn(
            &e.netns,
            &[
                "route",
                "replace",
                "default",
                "via",
                &format!("198.18.{}.1", e.index),
            ],
        )?;
        Ok(())
    }

    fn build_internet(&mut self) -> Result<(), Error> {
        let inet = self.state.internet_ns.clone();
        if !Path::new("/run/netns").join(&inet).exists() {
            self.make_netns(&inet)?;
        }
        ipn(
            &inet,
            &["addr", "add", &format!("{SERVER_ADDR}/32"), "dev", "lo"],
        )?;
        self.update_internet_routes()
    }

    /// The edges that routers still send to.
    fn live_edges(&self) -> Vec<&EdgeRecord> {
        self.state.edges.iter().filter(|e| !e.withdrawn).collect()
    }

    /// The fabric's ECMP route for an anycast pool's locator, over the live edges.
    fn update_anycast(&self) -> Result<(), Error> {
        let Some(any) = self
            .state
            .pool
            .as_ref()
            .and_then(|p| p.anycast_locator.clone())
        else {
            return Ok(());
        };
        let fab = &self.state.fabric_ns;
        let edges = self.live_edges();
        if edges.is_empty() {
            let _ = ipn(fab, &["-6", "route", "del", &any]);
            return Ok(());
        }
        let mut args: Vec<String> = vec!["-6".into(), "route".into(), "replace".into(), any];
        for e in edges {
            args.extend(["nexthop", "via", &e.link_addr, "dev", &e.fabric_link].map(String::from));
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        ipn(fab, &refs)?;
        Ok(())
    }

    /// An anycast pool's locator is every edge's too: the edge namespace routes it into the
    /// edge's substrate TUN (made by the daemon, hence after it is ready), as a real edge
    /// would carry the load balancer's address on a loopback.
    fn anycast_into_edge(&self, e: &EdgeRecord) -> Result<(), Error> {
        if let Some(any) = self
            .state
            .pool
            .as_ref()
            .and_then(|p| p.anycast_locator.as_deref())
        {
            ipn(&e.netns, &["-6", "route", "replace", any, "dev", "sub0"])?;
        }
        Ok(())
    }

    /// The internet's routes to the pool's public ranges, ECMP over the live edges.
    fn update_internet_routes(&self) -> Result<(), Error> {
        let Some(pool) = &self.state.pool else {
            return Ok(());
        };
        let inet = &self.state.internet_ns;
        let edges = self.live_edges();
        for range in &pool.public_ranges {
            if edges.is_empty() {
                let _ = ipn(inet, &["route", "del", range]);
                continue;
            }
            let mut args: Vec<String> = vec!["route".into(), "replace".into(), range.clone()];
            for e in &edges {
                args.extend(
                    ["nexthop", "via", &e.inet_addr, "dev", &e.inet_link].map(String::from),
                );
            }
            let refs: Vec<&str> = args.iter().map(String::as_str).collect();
            ipn(inet, &refs)?;
        }
        Ok(())
    }

    fn start_servers(&mut self) -> Result<(), Error> {
        let inet = self.state.internet_ns.clone();
        let access = self.state.dir.join("logs").join("access.log");
        let canopy = self.canopy();
        self.spawn(
            "servers",
            Some(&inet),
            &canopy,
            vec![
                "lab".into(),
                "serve".into(),
                "--http".into(),
                crate::http_server().to_string(),
                "--echo".into(),
                crate::echo_server().to_string(),
                "--log".into(),
                access.display().to_string(),
            ],
            &[],
        )?;
        self.spawn(
            "iperf3",
            Some(&inet),
            "iperf3",
            vec![
                "-s".into(),
                "-B".into(),
                SERVER_ADDR.to_string(),
                "-p".into(),
                crate::IPERF_PORT.to_string(),
            ],
            &[],
        )?;
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.check_running("servers")?;
            let up = std::fs::read_to_string(&access).is_ok_and(|t| t.contains("listening"));
            if up {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(Error::Check("the internet servers did not start".into()));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The access log of the internet's HTTP and echo servers.
    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.state.dir.join("logs").join("access.log")).unwrap_or_default()
    }

    fn ready_file(&self, name: &str) -> PathBuf {
        self.state.dir.join("ready").join(name)
    }

    fn start_edge(&mut self, i: usize) -> Result<(), Error> {
        let e = self.state.edges[i].clone();
        let ready = self.ready_file(&e.name);
        let _ = std::fs::remove_file(&ready);
        let args = vec![
            "edge".into(),
            "--manager".into(),
            format!("unix:{}", self.state.socket.display()),
            "--edge-id".into(),
            e.id.clone(),
            "--substrate-dev".into(),
            "sub0".into(),
            "--outside-dev".into(),
            "out0".into(),
            "--metrics".into(),
            "127.0.0.1:9460".into(),
            "--ready-file".into(),
            ready.display().to_string(),
            "--workers".into(),
            self.spec.workers.to_string(),
        ];
        let canopy = self.canopy();
        let env = [("CANOPY_TOKEN", e.credential.as_str())];
        self.spawn(
            &format!("edge-{}", e.name),
            Some(&e.netns),
            &canopy,
            args,
            &env,
        )
    }

    fn start_agent(&mut self, i: usize) -> Result<(), Error> {
        let h = self.state.hosts[i].clone();
        let ready = self.ready_file(&h.name);
        let _ = std::fs::remove_file(&ready);
        let args = vec![
            "agent".into(),
            "--manager".into(),
            format!("unix:{}", self.state.socket.display()),
            "--host-id".into(),
            h.id.clone(),
            "--substrate-dev".into(),
            "sub0".into(),
            "--vm-netns".into(),
            format!("/run/netns/{}-{{name}}", self.state.prefix),
            "--metrics".into(),
            "127.0.0.1:9460".into(),
            "--ready-file".into(),
            ready.display().to_string(),
            "--workers".into(),
            self.spec.workers.to_string(),
            // The NAT table survives a restart of the agent (restart_agent) through here.
            "--state-dir".into(),
            self.state
                .dir
                .join(format!("agent-{}", h.name))
                .display()
                .to_string(),
        ];
        let canopy = self.canopy();
        let env = [("CANOPY_TOKEN", h.credential.as_str())];
        self.spawn(
            &format!("agent-{}", h.name),
            Some(&h.netns),
            &canopy,
            args,
            &env,
        )
    }

    /// Restarts host `host`'s agent (after [`signal`](Self::signal) stopped it, say).
    pub fn restart_agent(&mut self, host: &str) -> Result<(), Error> {
        let i = self
            .state
            .hosts
            .iter()
            .position(|h| h.name == host)
            .ok_or_else(|| Error::Refused(format!("no host {host}")))?;
        self.stop_proc(&format!("agent-{host}"));
        self.start_agent(i)?;
        self.wait_file(&format!("agent-{host}"), &self.ready_file(host))
    }

    fn wait_file(&mut self, proc_name: &str, file: &Path) -> Result<(), Error> {
        let deadline = Instant::now() + READY_TIMEOUT;
        while !file.exists() {
            self.check_running(proc_name)?;
            check_interrupt()?;
            if Instant::now() > deadline {
                let log = self
                    .proc(proc_name)
                    .map(|p| p.log.clone())
                    .unwrap_or_default();
                return Err(Error::Check(format!(
                    "{proc_name} not ready within {READY_TIMEOUT:?}; the end of its log:\n{}",
                    log_tail(&log)
                )));
            }
            thread::sleep(Duration::from_millis(50));
        }
        Ok(())
    }

    fn wait_ready(&mut self, progress: &mut dyn FnMut(&str)) -> Result<(), Error> {
        for e in self.state.edges.clone() {
            self.wait_file(&format!("edge-{}", e.name), &self.ready_file(&e.name))?;
            self.anycast_into_edge(&e)?;
        }
        if !self.state.edges.is_empty() {
            progress(&format!("{} edge(s) ready", self.state.edges.len()));
        }
        for h in self.state.hosts.clone() {
            self.wait_file(&format!("agent-{}", h.name), &self.ready_file(&h.name))?;
        }
        progress(&format!("{} agent(s) ready", self.state.hosts.len()));
        Ok(())
    }

    fn udhcpc_script(&self) -> Result<PathBuf, Error> {
        let path = self.state.dir.join("udhcpc.sh");
        if !path.exists() {
            std::fs::write(&path, node::netns::UDHCPC_HOOK)
                .map_err(|e| Error::io("udhcpc script", e))?;
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o700))
                .map_err(|e| Error::io("udhcpc script", e))?;
        }
        Ok(path)
    }

    /// Waits for every VM's eth0 (made by its agent), then runs busybox udhcpc in each,
    /// in parallel, and records the leases.
    fn dhcp_all(&mut self, progress: &mut dyn FnMut(&str)) -> Result<(), Error> {
        let script = self.udhcpc_script()?;
        let mut jobs = Vec::new();
        for v in self.state.vms.clone() {
            let script = script.clone();
            jobs.push(thread::spawn(move || dhcp(&v.netns, &script)));
        }
        let mut failures = Vec::new();
        for (i, j) in jobs.into_iter().enumerate() {
            match j.join() {
                Ok(Ok(lease)) => {
                    self.state.vms[i].address = Some(format!("{}/{}", lease.ip, lease.mask));
                    progress(&format!(
                        "{}: DHCP lease {}/{} router {} mtu {}",
                        self.state.vms[i].name, lease.ip, lease.mask, lease.router, lease.mtu
                    ));
                }
                Ok(Err(e)) => failures.push(format!("{}: {e}", self.state.vms[i].name)),
                Err(_) => {
                    failures.push(format!("{}: DHCP thread panicked", self.state.vms[i].name))
                }
            }
        }
        self.state.save()?;
        if !failures.is_empty() {
            return Err(Error::Check(format!(
                "DHCP failed: {}",
                failures.join("; ")
            )));
        }
        Ok(())
    }

    /// Runs `program args...` inside VM `vm`'s namespace, bounded by `timeout`.
    pub fn vm_exec(
        &self,
        vm: &str,
        program: &str,
        args: &[&str],
        timeout: Duration,
    ) -> Result<Output, Error> {
        let v = self
            .state
            .vm(vm)
            .ok_or_else(|| Error::Refused(format!("no VM {vm}")))?;
        ns_run(&v.netns, program, args, timeout)
    }

    /// Sends `signal` to lab process `name` (`manager`, `agent-h1`, `edge-e2`, ...).
    pub fn signal(&mut self, name: &str, signal: i32) -> Result<(), Error> {
        let p = self
            .proc(name)
            .cloned()
            .ok_or_else(|| Error::Refused(format!("no lab process {name}")))?;
        if !p.signal(signal) {
            return Err(Error::Check(format!(
                "{name} (pid {}) is not running",
                p.pid
            )));
        }
        if signal == libc::SIGKILL {
            if let Some(c) = self.children.get_mut(name) {
                let _ = c.wait();
            }
        }
        Ok(())
    }

    fn stop_proc(&mut self, name: &str) {
        if let Some(p) = self.proc(name).cloned() {
            p.stop(self.children.get_mut(name), Duration::from_secs(5));
            self.children.remove(name);
        }
    }

    /// Adds an edge to the pool: API, namespace and links, routes, daemon; returns its name
    /// once ready and announced to the routers.
    pub fn add_edge(&mut self) -> Result<String, Error> {
        let i = self.create_edge()?;
        self.build_edge_ns(i)?;
        self.start_edge(i)?;
        let name = self.state.edges[i].name.clone();
        self.wait_file(&format!("edge-{name}"), &self.ready_file(&name))?;
        self.anycast_into_edge(&self.state.edges[i].clone())?;
        self.update_anycast()?;
        self.update_internet_routes()?;
        self.state.save()?;
        Ok(name)
    }

    /// Sets edge `name`'s state in the manager (`active`, `draining`, `down`).
    pub fn set_edge_state(&mut self, name: &str, state: &str) -> Result<(), Error> {
        let e = self
            .state
            .edge(name)
            .cloned()
            .ok_or_else(|| Error::Refused(format!("no edge {name}")))?;
        self.api()
            .patch(&format!("/v1/edges/{}", e.id), json!({"state": state}))?;
        Ok(())
    }

    /// Takes edge `name` out of the routers (fabric anycast route, internet return route),
    /// as a router does when its session to the edge drops.
    pub fn withdraw_edge(&mut self, name: &str) -> Result<(), Error> {
        let e = self
            .state
            .edges
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or_else(|| Error::Refused(format!("no edge {name}")))?;
        e.withdrawn = true;
        self.update_anycast()?;
        self.update_internet_routes()?;
        self.state.save()
    }

    /// An operator removes edge `name`: out of the manager (agents move its flows), out of
    /// the routers, then its daemon stops.
    pub fn remove_edge(&mut self, name: &str) -> Result<(), Error> {
        let e = self
            .state
            .edge(name)
            .cloned()
            .ok_or_else(|| Error::Refused(format!("no edge {name}")))?;
        self.api().delete(&format!("/v1/edges/{}", e.id))?;
        self.withdraw_edge(name)?;
        self.stop_proc(&format!("edge-{name}"));
        self.state.save()
    }

    /// Leaves the lab running after this process ends (`canopy lab up`): the state file
    /// says so, and its daemons are no longer this process's business.
    pub fn detach(mut self) -> Result<State, Error> {
        self.state.detached = true;
        self.state.save()?;
        self.armed = false;
        // Dropping a Child neither kills nor waits: the daemons live on.
        self.children.clear();
        Ok(self.state.clone())
    }

    /// Removes the lab now, reporting what could not be removed.
    pub fn shutdown(mut self) -> Result<(), Error> {
        self.armed = false;
        self.teardown()
    }

    fn teardown(&mut self) -> Result<(), Error> {
        stop_all(&self.state.procs, &mut self.children);
        remove_rest(&self.state.prefix, &self.state.dir)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        if self.armed {
            if let Err(e) = self.teardown() {
                eprintln!("lab {}: cleanup: {e}", self.state.prefix);
            }
        }
    }
}

/// SIGTERM to every process (daemons before the manager), SIGKILL to what remains after a
/// grace period.
fn stop_all(procs: &[ProcRecord], children: &mut HashMap<String, Child>) {
    for p in procs.iter().rev() {
        p.signal(libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut left = 0;
        for p in procs {
            if let Some(c) = children.get_mut(&p.name) {
                if let Ok(None) = c.try_wait() {
                    left += 1;
                }
            } else if p.alive() {
                left += 1;
            }
        }
        if left == 0 || Instant::now() > deadline {
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    for p in procs {
        if p.signal(libc::SIGKILL) {
            tracing::warn!(name = %p.name, pid = p.pid, "did not stop on SIGTERM: killed");
        }
        if let Some(c) = children.get_mut(&p.name) {
            let _ = c.wait();
        }
    }
    children.clear();
}

/// Deletes the namespaces of `prefix` and the state directory.
fn remove_rest(prefix: &str, dir: &Path) -> Result<(), Error> {
    let mut errors = Vec::new();
    for ns in namespaces_of(prefix) {
        if let Err(e) = ip(&["netns", "del", &ns]) {
            errors.push(format!("namespace {ns}: {e}"));
        }
    }
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(dir) {
            errors.push(format!("{}: {e}", dir.display()));
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Check(errors.join("; ")))
    }
}

fn down_state(st: &State) -> Result<(), Error> {
    stop_all(&st.procs, &mut HashMap::new());
    remove_rest(&st.prefix, &st.dir)
}

/// Every lab whose state directory is under `root`.
pub fn find_labs(root: &Path) -> Vec<State> {
    let mut v: Vec<State> = std::fs::read_dir(root)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter_map(|e| State::load(&e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    v.sort_by(|a, b| a.prefix.cmp(&b.prefix));
    v
}

/// `canopy lab down`: removes lab `prefix` (its processes by pid, its namespaces, its state
/// directory), or, without a prefix, every lab left by `lab up` and every lab whose builder
/// is gone (a crashed test or demo). Returns the prefixes removed; removing nothing is fine.
pub fn down(root: &Path, prefix: Option<&str>) -> Result<Vec<String>, Error> {
    let mut removed = Vec::new();
    match prefix {
        Some(p) => {
            let dir = root.join(p);
            match State::load(&dir) {
                Ok(st) => down_state(&st)?,
                Err(_) => remove_rest(p, &dir)?,
            }
            removed.push(p.to_owned());
        }
        None => {
            for st in find_labs(root) {
                // SAFETY: kill with signal 0 only checks that the pid exists.
                let builder_alive = unsafe { libc::kill(st.builder_pid as i32, 0) } == 0;
                if st.detached || !builder_alive {
                    down_state(&st)?;
                    removed.push(st.prefix.clone());
                }
            }
        }
    }
    Ok(removed)
}

fn check_tools() -> Result<(), Error> {
    let mut missing = Vec::new();
    for (prog, arg, pkg) in [
        ("ip", "-V", "iproute2"),
        ("busybox", "--help", "busybox"),
        ("iperf3", "--version", "iperf3"),
        ("sysctl", "--version", "procps"),
    ] {
        let ok = netns::run(prog, &[arg], Duration::from_secs(5)).is_ok();
        if !ok {
            missing.push(pkg);
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        Err(Error::Refused(format!(
            "the lab needs {} (apt-get install {})",
            missing.join(", "),
            missing.join(" ")
        )))
    }
}

/// A DHCP lease as busybox udhcpc's hook printed it.
#[derive(Debug, Clone)]
pub struct Lease {
    pub ip: String,
    pub mask: String,
    pub router: String,
    pub mtu: String,
}

/// Waits for `eth0` in `ns`, then runs busybox udhcpc on it once (the lease lasts longer
/// than a lab) and returns what it configured.
pub fn dhcp(ns: &str, script: &Path) -> Result<Lease, Error> {
    let deadline = Instant::now() + READY_TIMEOUT;
    while ipn(ns, &["link", "show", "dev", "eth0"]).is_err() {
        check_interrupt()?;
        if Instant::now() > deadline {
            return Err(Error::Check(format!(
                "no eth0 in {ns} after {READY_TIMEOUT:?} (the agent makes it)"
            )));
        }
        thread::sleep(Duration::from_millis(100));
    }
    let script = script.display().to_string();
    let out = ns_run(
        ns,
        "busybox",
        &[
            "udhcpc", "-i", "eth0", "-f", "-q", "-n", "-t", "10", "-T", "1", "-O", "mtu", "-s",
            &script,
        ],
        Duration::from_secs(30),
    )?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let line = text
        .lines()
        .find(|l| l.starts_with("LEASE "))
        .ok_or_else(|| Error::Check(format!("udhcpc got no lease in {ns}: {}", text.trim())))?;
    let get = |k: &str| {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{k}=")))
            .unwrap_or("")
            .to_owned()
    };
    Ok(Lease {
        ip: get("ip"),
        mask: get("mask"),
        router: get("router"),
        mtu: get("mtu"),
    })
}

/// A packet capture inside a lab namespace (tcpdump, text lines), stopped by pid.
pub struct Capture {
    child: Child,
    rec: ProcRecord,
    out: PathBuf,
}

impl Capture {
    /// Starts `tcpdump -n -l -i iface filter` in `ns`, writing to `out`; returns once it
    /// listens.
    pub fn start(ns: &str, iface: &str, filter: &str, out: &Path) -> Result<Capture, Error> {
        let errlog = out.with_extension("err");
        let _ = std::fs::remove_file(&errlog);
        let stdout =
            std::fs::File::create(out).map_err(|e| Error::io(out.display().to_string(), e))?;
        let stderr = std::fs::File::create(&errlog)
            .map_err(|e| Error::io(errlog.display().to_string(), e))?;
        let mut cmd = std::process::Command::new("ip");
        cmd.args(["netns", "exec", ns, "tcpdump", "-n", "-l", "-i", iface])
            .args(filter.split_whitespace())
            .stdin(std::process::Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        let child = cmd.spawn().map_err(|e| Error::io("tcpdump", e))?;
        let pid = child.id() as i32;
        let rec = ProcRecord {
            name: format!("tcpdump-{iface}"),
            pid,
            start_time: procs::start_time(pid).unwrap_or(0),
            netns: Some(ns.to_owned()),
            log: errlog.display().to_string(),
        };
        let mut cap = Capture {
            child,
            rec,
            out: out.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let mut s = String::new();
            if let Ok(mut f) = std::fs::File::open(&errlog) {
                let _ = f.read_to_string(&mut s);
            }
            if s.contains("listening on") {
                return Ok(cap);
            }
            if let Ok(Some(st)) = cap.child.try_wait() {
                return Err(Error::Check(format!(
                    "tcpdump in {ns} exited ({st}): {}",
                    s.trim()
                )));
            }
            if Instant::now() > deadline {
                return Err(Error::Check(format!(
                    "tcpdump in {ns} did not start: {}",
                    s.trim()
                )));
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Stops the capture; the lines it printed.
    pub fn stop(mut self) -> Vec<String> {
        thread::sleep(Duration::from_millis(200));
        self.rec.stop(Some(&mut self.child), Duration::from_secs(3));
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        let _ = std::fs::remove_file(&self.out);
        let _ = std::fs::remove_file(self.out.with_extension("err"));
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            self.rec.signal(libc::SIGKILL);
            let _ = self.child.wait();
        }
    }
}
