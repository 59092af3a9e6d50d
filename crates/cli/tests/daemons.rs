//! The daemons end to end, as processes (root; skipped otherwise): a `canopy manager` on a
//! Unix socket, two hosts running `canopy agent` joined by a fabric namespace, VM
//! namespaces whose `eth0` the agents create (`--vm-netns`) and which lease their address
//! with busybox udhcpc, and an edge namespace running `canopy edge` towards an "internet"
//! namespace. Checked, in order: DHCP lease (router, MTU 1480); ping VM to VM across
//! hosts; the manager SIGKILLed: ping goes on, and the agent reconnects when it is back;
//! a security group without ingress rules stops ping, the default group lets it through
//! again; a TCP connection from a VM to 203.0.113.10 through the edge, NATed (the server
//! sees the block's address and a port in it), going on across an agent restart (SIGTERM,
//! exit 0 within 2 s, start again); a spoofed substrate packet counted as
//! `spoofed_source` in the agent's metrics; the edge answers the agents' health probes;
//! an elastic IP answers ping from the internet; a node without a VM namespace gets a
//! `cn…` TAP in the agent's namespace, which moves into the VM's namespace as `eth0`
//! when that appears; a deleted node's TAP goes, also when it was deleted while the
//! agent was down.
//!
//! Safety (DESIGN.md, "The lab"): every namespace carries a per-run prefix; no link to the
//! root namespace (veth pairs are created directly between lab namespaces; TAPs and TUNs
//! are made inside them); external addresses from documentation ranges, substrate from
//! fd00::/8; processes ended by pid; everything removed on drop, also on panic.

use std::io::BufReader;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use node::netns::{self, Netns};
use serde_json::{json, Value};

const ADMIN: &str = "daemons-test-admin";
const T: Duration = Duration::from_secs(20);

fn canopy_bin() -> &'static str {
    env!("CARGO_BIN_EXE_canopy")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// True when the test can run; says why not otherwise (and fails in CI if a tool is
/// missing).
fn ready() -> bool {
    let root = netns::run("id", &["-u"], T).is_ok_and(|o| text(&o).trim() == "0");
    if !root {
        println!("SKIPPED: needs root (network namespaces, TAP/TUN)");
        return false;
    }
    let have = |p: &str, a: &[&str]| netns::run(p, a, T).is_ok_and(|o| o.status.success());
    let mut missing = Vec::new();
    for (tool, args, pkg) in [
        ("ip", &["-V"][..], "iproute2"),
        ("busybox", &["udhcpc", "--help"][..], "busybox"),
        ("ping", &["-V"][..], "iputils-ping"),
        ("python3", &["-c", "pass"][..], "python3"),
    ] {
        if !have(tool, args) {
            missing.push(pkg);
        }
    }
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install {missing:?} (see .ci/run)"
        );
        println!("SKIPPED: missing {missing:?}");
        return false;
    }
    true
}

/// A daemon process, killed by its pid when dropped.
struct Proc {
    name: String,
    child: Option<Child>,
    log: PathBuf,
}

impl Proc {
    fn spawn(name: &str, ns: Option<&str>, args: &[&str], log: &Path) -> Proc {
        let mut cmd = match ns {
            Some(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns, canopy_bin()]);
                c
            }
            None => Command::new(canopy_bin()),
        };
        let out = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = cmd
            .args(args)
            .env("RUST_LOG", "info")
            .env_remove("CANOPY_TOKEN")
            .env_remove("CANOPY_MANAGER")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out.try_clone().unwrap()))
            .stderr(Stdio::from(out))
            .spawn()
            .expect("spawn canopy");
        Proc {
            name: name.into(),
            child: Some(child),
            log: log.into(),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// SIGTERM; the exit status and how long it took.
    fn terminate(&mut self) -> (std::process::ExitStatus, Duration) {
        let t0 = Instant::now();
        netns::run("kill", &["-TERM", &self.pid().to_string()], T).unwrap();
        let mut child = self.child.take().unwrap();
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return (st, t0.elapsed());
            }
            if t0.elapsed() > Duration::from_secs(10) {
                let _ = child.kill();
                panic!("{} did not stop within 10 s:\n{}", self.name, self.log());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL, as a crash would.
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    fn assert_running(&mut self) {
        if let Some(st) = self.child.as_mut().unwrap().try_wait().unwrap() {
            panic!("{} exited ({st}):\n{}", self.name, self.log());
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Everything the test made; processes end first, then namespaces, then files.
struct Lab {
    prefix: String,
    dir: tempfile::TempDir,
    procs: Vec<Proc>,
    namespaces: Vec<Netns>,
    links: std::cell::Cell<u32>,
}

impl Lab {
    fn new() -> Lab {
        Lab {
            prefix: format!("cnd{:x}", std::process::id() % 0xfffff),
            dir: tempfile::tempdir().unwrap(),
            procs: Vec::new(),
            namespaces: Vec::new(),
            links: std::cell::Cell::new(0),
        }
    }

    fn netns(&mut self, what: &str) -> usize {
        self.namespaces
            .push(Netns::create(&format!("{}{what}", self.prefix)).expect("namespace"));
        self.namespaces.len() - 1
    }

    fn ns(&self, i: usize) -> &Netns {
        &self.namespaces[i]
    }

    /// A veth pair between namespaces `a` and `b`, named `ia` in `a` and `ib` in `b`, up.
    fn veth(&self, a: usize, ia: &str, b: usize, ib: &str) {
        let k = self.links.get() + 1;
        self.links.set(k);
        let (na, nb) = (
            format!("{}a{k}", self.prefix),
            format!("{}b{k}", self.prefix),
        );
        let (sa, sb) = (self.ns(a).name(), self.ns(b).name());
        netns::ip(&[
            "link", "add", &na, "netns", sa, "type", "veth", "peer", "name", &nb, "netns", sb,
        ])
        .expect("veth");
        self.ns(a)
            .ip(&["link", "set", "dev", &na, "name", ia, "up"])
            .unwrap();
        self.ns(b)
            .ip(&["link", "set", "dev", &nb, "name", ib, "up"])
            .unwrap();
    }

    fn sysctl(&self, i: usize, kv: &str) {
        self.ns(i).exec_ok("sysctl", &["-qw", kv], T).unwrap();
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Lab {
    fn drop(&mut self) {
        self.procs.clear();
        while let Some(ns) = self.namespaces.pop() {
            let name = ns.name().to_string();
            if let Err(e) = ns.delete() {
                eprintln!("cleanup: namespace {name}: {e}");
            }
        }
    }
}

/// The manager's API over its Unix socket, as the admin.
struct Api {
    http: reqwest::blocking::Client,
}

impl Api {
    fn call(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self
            .http
            .request(method.clone(), format!("http://localhost{path}"))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().unwrap();
        let status = resp.status();
        let t = resp.text().unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {t}");
        serde_json::from_str(&t).unwrap_or(Value::Null)
    }

    fn post(&self, path: &str, body: Value) -> Value {
        self.call(reqwest::Method::POST, path, Some(body))
    }

    fn get(&self, path: &str) -> Value {
        self.call(reqwest::Method::GET, path, None)
    }

    fn delete(&self, path: &str) {
        self.call(reqwest::Method::DELETE, path, None);
    }

    fn healthy(&self) -> bool {
        self.http
            .get("http://localhost/healthz")
            .send()
            .is_ok_and(|r| r.status().is_success())
    }
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} in {v}"))
        .to_string()
}

fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !f() {
        assert!(t0.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A TCP server that accepts one connection, writes the peer's address and port to a
/// file, and echoes lines.
const SERVER_PY: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2]))); s.listen(1)
open(sys.argv[3] + ".listening", "w").close()
c, peer = s.accept()
with open(sys.argv[3], "w") as f: f.write("%s %d\n" % peer)
f = c.makefile("rwb")
for line in f:
    f.write(line); f.flush()
"#;

/// A client that sends a numbered line every 100 ms and expects it back within 15 s,
/// until a stop file appears; writes "OK <lines>" or "ERROR <what>" to its status file.
const CLIENT_PY: &str = r#"
import socket, sys, os, time
host, port, status, stop = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
n = 0
try:
    c = socket.create_connection((host, port), timeout=15)
    f = c.makefile("rwb")
    open(status + ".connected", "w").close()
    while not os.path.exists(stop):
        n += 1
        f.write(b"%d\n" % n); f.flush()
        back = f.readline()
        if back != b"%d\n" % n:
            raise Exception("echo %r for %d" % (back, n))
        with open(status + ".count", "w") as g: g.write(str(n))
        time.sleep(0.1)
    res = "OK %d" % n
except Exception as e:
    res = "ERROR after %d lines: %s" % (n, e)
with open(status, "w") as g: g.write(res)
"#;

fn scrape(ns: &Netns, addr: &str) -> String {
    let o = ns
        .exec(
            "python3",
            &[
                "-c",
                &format!(
                    "import urllib.request;print(urllib.request.urlopen('http://{addr}/metrics',timeout=5).read().decode())"
                ),
            ],
            T,
        )
        .unwrap();
    assert!(o.status.success(), "scrape {addr}: {}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn metric(text: &str, line_start: &str) -> u64 {
    text.lines()
        .find(|l| l.starts_with(line_start))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no {line_start} in metrics:\n{text}"))
}

/// The packet workers of process `pid`: each thread's name and the CPUs it may run on
/// (`Cpus_allowed_list` of its status).
fn worker_cpus(pid: u32) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = t.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.starts_with("canopy-worker") {
            continue;
        }
        let status = std::fs::read_to_string(dir.join("status")).unwrap_or_default();
        let cpus = status
            .lines()
            .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
            .unwrap_or_default()
            .trim()
            .to_string();
        out.push((comm.trim().to_string(), cpus));
    }
    out.sort();
    out
}

#[test]
fn agents_and_edge_as_processes() {
    if !ready() {
        return;
    }
    let mut lab = Lab::new();
    let p = lab.prefix.clone();

    // The manager, on a Unix socket, with a stale socket file in the way.
    let sock = lab.path("manager.sock");
    {
        let _stale = std::os::unix::net::UnixListener::bind(&sock).unwrap();
    }
    let db = format!("sqlite:{}", lab.path("canopy.db").display());
    let mlog = lab.path("manager.log");
    let listen = format!("unix:{}", sock.display());
    let manager_args = [
        "manager",
        "--listen",
        &listen,
        "--database",
        &db,
        "--admin-token",
        ADMIN,
    ];
    lab.procs
        .push(Proc::spawn("manager", None, &manager_args, &mlog));
    let api = Api {
        http: reqwest::blocking::Client::builder()
            .unix_socket(sock.clone())
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    };
    wait_for("the manager", T, || api.healthy());

    // The world: one network, one subnet, two hosts with a VM each, a NAT pool with one
    // edge on 198.51.100.0/28, the default route to it.
    let t = api.post("/v1/tenants", json!({"name": "acme"}));
    let net = api.post(
        "/v1/networks",
        json!({"name": "n1", "cidr": "10.0.0.0/16", "tenant_id": s(&t, "id")}),
    );
    let sub = api.post(
        "/v1/subnets",
        json!({"network_id": s(&net, "id"), "name": "s1", "cidr": "10.0.1.0/24"}),
    );
    let h1 = api.post("/v1/hosts", json!({"name": "h1"}));
    let h2 = api.post("/v1/hosts", json!({"name": "h2"}));
    let vm1 = api.post(
        "/v1/nodes",
        json!({"subnet_id": s(&sub, "id"), "name": "vm1", "host_id": s(&h1, "id")}),
    );
    let vm2 = api.post(
        "/v1/nodes",
        json!({"subnet_id": s(&sub, "id"), "name": "vm2", "host_id": s(&h2, "id")}),
    );
    let pool = api.post(
        "/v1/edge-pools",
        json!({"name": "inet", "nat": true, "public_ranges": ["198.51.100.0/28"], "port_block_size": 1024}),
    );
    let edge = api.post(
        "/v1/edges",
        json!({"pool_id": s(&pool, "id"), "name": "e1"}),
    );
    api.post(
        "/v1/routes",
        json!({"network_id": s(&net, "id"), "destination": "0.0.0.0/0", "target": format!("pool:{}", s(&pool, "id"))}),
    );

    // Namespaces: fabric, hosts, VMs, edge, internet.
    let fab = lab.netns("fab");
    let nh1 = lab.netns("h1");
    let nh2 = lab.netns("h2");
    let nv1 = lab.netns("vm1");
    let nv2 = lab.netns("vm2");
    let ne = lab.netns("e1");
    let ni = lab.netns("inet");
    for (i, (ns, link)) in [(nh1, "fab0"), (nh2, "fab0"), (ne, "fab0")]
        .into_iter()
        .enumerate()
    {
        let k = i + 1;
        lab.veth(fab, &format!("p{k}"), ns, link);
        lab.ns(fab)
            .ip(&[
                "-6",
                "addr",
                "add",
                &format!("fd00:{k}::1/64"),
                "dev",
                &format!("p{k}"),
                "nodad",
            ])
            .unwrap();
        lab.ns(ns)
            .ip(&[
                "-6",
                "addr",
                "add",
                &format!("fd00:{k}::2/64"),
                "dev",
                link,
                "nodad",
            ])
            .unwrap();
        lab.ns(ns)
            .ip(&[
                "-6",
                "route",
                "add",
                "default",
                "via",
                &format!("fd00:{k}::1"),
            ])
            .unwrap();
        lab.sysctl(ns, "net.ipv6.conf.all.forwarding=1");
    }
    lab.sysctl(fab, "net.ipv6.conf.all.forwarding=1");
    for (k, loc) in [
        (1, s(&h1, "locator")),
        (2, s(&h2, "locator")),
        (3, s(&edge, "locator")),
    ] {
        lab.ns(fab)
            .ip(&["-6", "route", "add", &loc, "via", &format!("fd00:{k}::2")])
            .unwrap();
    }
    // The internet: the edge's other side, a server on 203.0.113.10.
    lab.veth(ne, "inet0", ni, "up0");
    lab.ns(ne)
        .ip(&["addr", "add", "192.0.2.1/30", "dev", "inet0"])
        .unwrap();
    lab.ns(ne)
        .ip(&["route", "add", "default", "via", "192.0.2.2"])
        .unwrap();
    lab.sysctl(ne, "net.ipv4.ip_forward=1");
    lab.sysctl(ne, "net.ipv4.conf.all.rp_filter=0");
    lab.sysctl(ne, "net.ipv4.conf.default.rp_filter=0");
    lab.ns(ni)
        .ip(&["addr", "add", "192.0.2.2/30", "dev", "up0"])
        .unwrap();
    lab.ns(ni)
        .ip(&["addr", "add", "203.0.113.10/32", "dev", "lo"])
        .unwrap();
    lab.ns(ni)
        .ip(&["route", "add", "198.51.100.0/28", "via", "192.0.2.1"])
        .unwrap();

    // The daemons.
    let sock_url = format!("unix:{}", sock.display());
    let template = format!("/run/netns/{p}{{name}}");
    // The agents' NAT tables go to the test's directory, not /run/canopy.
    let state_root = lab.path("state");
    let agent_args = |h: &Value, ready: &Path| -> Vec<String> {
        vec![
            "agent".into(),
            "--manager".into(),
            sock_url.clone(),
            "--token".into(),
            s(h, "credential"),
            "--host-id".into(),
            s(h, "id"),
            "--vm-netns".into(),
            template.clone(),
            "--metrics".into(),
            "127.0.0.1:9450".into(),
            "--ready-file".into(),
            ready.display().to_string(),
            "--state-dir".into(),
            state_root.join(s(h, "id")).display().to_string(),
        ]
    };
    let start = |lab: &mut Lab, name: &str, ns: usize, args: Vec<String>, ready: &Path| {
        let _ = std::fs::remove_file(ready);
        let log = lab.path(&format!("{name}.log"));
        let nsname = lab.ns(ns).name().to_string();
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        lab.procs.push(Proc::spawn(name, Some(&nsname), &a, &log));
        let k = lab.procs.len() - 1;
        let t0 = Instant::now();
        while !ready.exists() {
            lab.procs[k].assert_running();
            assert!(
                t0.elapsed() < T,
                "{name} not ready:\n{}",
                lab.procs[k].log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        println!("{name} ready in {:?}", t0.elapsed());
        k
    };
    let r1 = lab.path("a1.ready");
    let r2 = lab.path("a2.ready");
    let re = lab.path("e1.ready");
    // Agent 1's one worker pinned to a CPU (`--cpus`); agent 2's workers unpinned.
    let cpu = *node::cpus::allowed().unwrap().last().unwrap();
    let mut a1_args = agent_args(&h1, &r1);
    a1_args.extend(["--cpus".to_string(), cpu.to_string()]);
    let a1 = start(&mut lab, "agent1", nh1, a1_args, &r1);
    assert_eq!(
        worker_cpus(lab.procs[a1].pid()),
        vec![("canopy-worker-0".to_string(), cpu.to_string())],
        "agent1's worker runs on CPU {cpu} only"
    );
    let _a2 = start(&mut lab, "agent2", nh2, agent_args(&h2, &r2), &r2);
    let edge_args = vec![
        "edge".to_string(),
        "--manager".into(),
        sock_url.clone(),
        "--token".into(),
        s(&edge, "credential"),
        "--edge-id".into(),
        s(&edge, "id"),
        "--metrics".into(),
        "127.0.0.1:9451".into(),
        "--ready-file".into(),
        re.display().to_string(),
    ];
    let _e1 = start(&mut lab, "edge1", ne, edge_args, &re);

    // The VMs' eth0 are the agents' TAPs: lease, then ping across hosts.
    let script = lab.path("udhcpc.sh");
    std::fs::write(&script, node::netns::UDHCPC_HOOK).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    for (ns, vm) in [(nv1, &vm1), (nv2, &vm2)] {
        let link = text(
            &lab.ns(ns)
                .ip(&["-o", "link", "show", "dev", "eth0"])
                .unwrap(),
        );
        assert!(
            link.contains(&s(vm, "mac")),
            "eth0 has the node's MAC: {link}"
        );
        let o = lab
            .ns(ns)
            .exec(
                "busybox",
                &[
                    "udhcpc",
                    "-i",
                    "eth0",
                    "-f",
                    "-q",
                    "-n",
                    "-t",
                    "5",
                    "-T",
                    "1",
                    "-O",
                    "mtu",
                    "-s",
                    script.to_str().unwrap(),
                ],
                T,
            )
            .unwrap();
        let want = format!("LEASE ip={} mask=24 router=10.0.1.1 mtu=1480", s(vm, "vip"));
        assert!(text(&o).contains(&want), "udhcpc: {}", text(&o));
        println!("{}: {want}", s(vm, "name"));
    }
    ping(lab.ns(nv1), &s(&vm2, "vip"));
    ping(lab.ns(nv2), &s(&vm1, "vip"));

    // The manager crashes: VM traffic goes on; when it is back, the agents reconnect.
    lab.procs[0].kill();
    ping(lab.ns(nv1), &s(&vm2, "vip"));
    lab.procs[0] = Proc::spawn("manager", None, &manager_args, &mlog);
    wait_for("the manager again", T, || api.healthy());
    wait_for("agent1 to reconnect", T, || {
        metric(
            &scrape(lab.ns(nh1), "127.0.0.1:9450"),
            "canopy_agent_watch_connects_total",
        ) >= 2
    });
    println!("manager killed and restarted: ping went on, agent1 reconnected");

    // Security groups filter: vm2 with only an egress rule answers no ping; back in the
    // default group (ingress from its members), it does again.
    let attached = api.get(&format!("/v1/nodes/{}/security-groups", s(&vm2, "id")));
    let default = s(&attached[0], "group_id");
    let closed = api.post(
        "/v1/security-groups",
        json!({"network_id": s(&net, "id"), "name": "closed",
               "rules": [{"direction": "egress", "remote_cidr": "0.0.0.0/0"}]}),
    );
    let groups = format!("/v1/nodes/{}/security-groups", s(&vm2, "id"));
    api.post(&groups, json!({"group_id": s(&closed, "id")}));
    api.delete(&format!("{groups}/{default}"));
    wait_for("vm2 to stop answering", T, || {
        let o = lab
            .ns(nv1)
            .exec("ping", &["-c", "1", "-W", "1", &s(&vm2, "vip")], T)
            .unwrap();
        !o.status.success()
    });
    api.post(&groups, json!({"group_id": default}));
    wait_for("vm2 to answer again", T, || {
        let o = lab
            .ns(nv1)
            .exec("ping", &["-c", "1", "-W", "1", &s(&vm2, "vip")], T)
            .unwrap();
        o.status.success()
    });
    let drops = scrape(lab.ns(nh2), "127.0.0.1:9450");
    let sg: Vec<&str> = drops
        .lines()
        .filter(|l| l.starts_with("canopy_agent_drops_total{") && !l.ends_with(" 0"))
        .collect();
    assert!(metric(&drops, "canopy_agent_drops_total{reason=\"sg_denied\"}") > 0);
    println!("security group closed then reopened; agent2 drops: {sg:?}");

    // TCP to the internet through the edge, NATed.
    let server_out = lab.path("server.peer");
    let server_py = lab.path("server.py");
    let client_py = lab.path("client.py");
    std::fs::write(&server_py, SERVER_PY).unwrap();
    std::fs::write(&client_py, CLIENT_PY).unwrap();
    let spawn_py = |ns: &Netns, args: &[&str]| -> Child {
        let mut all = vec!["netns", "exec", ns.name(), "python3"];
        all.extend_from_slice(args);
        Command::new("ip")
            .args(&all)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let mut server = KillOnDrop(spawn_py(
        lab.ns(ni),
        &[
            server_py.to_str().unwrap(),
            "203.0.113.10",
            "8080",
            server_out.to_str().unwrap(),
        ],
    ));
    let listening = PathBuf::from(format!("{}.listening", server_out.display()));
    wait_for("the server", T, || listening.exists());
    let status = lab.path("client.status");
    let stop = lab.path("client.stop");
    let count = PathBuf::from(format!("{}.count", status.display()));
    let mut client = KillOnDrop(spawn_py(
        lab.ns(nv1),
        &[
            client_py.to_str().unwrap(),
            "203.0.113.10",
            "8080",
            status.to_str().unwrap(),
            stop.to_str().unwrap(),
        ],
    ));
    let lines = || -> u64 {
        std::fs::read_to_string(&count)
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    while lines() < 5 {
        if status.exists() || t0.elapsed() > Duration::from_secs(30) {
            let err = client.0.stderr.take().map(|e| {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut BufReader::new(e), &mut s);
                s
            });
            panic!(
                "the connection did not get going: {:?} {err:?}\nagent1:\n{}\nedge:\n{}",
                std::fs::read_to_string(&status).ok(),
                lab.procs[a1].log(),
                lab.procs.last().unwrap().log()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let peer = std::fs::read_to_string(&server_out).unwrap();
    let (addr, port) = peer.trim().split_once(' ').unwrap();
    let port: u32 = port.parse().unwrap();
    let blocks = api.get(&format!("/v1/nodes/{}/port-blocks", s(&vm1, "id")));
    let blocks = blocks.as_array().cloned().unwrap_or_default();
    assert!(
        blocks.iter().any(|b| b["address"] == addr
            && b["port_first"].as_u64().unwrap() as u32 <= port
            && port <= b["port_last"].as_u64().unwrap() as u32),
        "the server saw {addr}:{port}, not in vm1's blocks {blocks:?}"
    );
    assert!(addr.starts_with("198.51.100."), "{addr}");
    println!("server saw {addr}:{port} (a port of vm1's block)");

    // The agent restarts: SIGTERM, exit 0 within 2 s; the connection pauses and goes on.
    let before = lines();
    let (st, took) = lab.procs[a1].terminate();
    assert!(st.success(), "agent1 exit: {st}\n{}", lab.procs[a1].log());
    assert!(
        took < Duration::from_secs(2),
        "agent1 took {took:?} to stop"
    );
    println!("agent1 stopped in {took:?} ({st}) after {before} lines");
    let link = text(
        &lab.ns(nv1)
            .ip(&["-o", "link", "show", "dev", "eth0"])
            .unwrap(),
    );
    assert!(
        link.contains("eth0"),
        "vm1 keeps its eth0 while the agent is away"
    );
    let _a1b = start(&mut lab, "agent1b", nh1, agent_args(&h1, &r1), &r1);
    let at = lines();
    wait_for("the connection to go on", Duration::from_secs(30), || {
        lines() >= at + 20 || status.exists()
    });
    assert!(!status.exists(), "{:?}", std::fs::read_to_string(&status));
    std::fs::write(&stop, "").unwrap();
    wait_for("the client to finish", T, || status.exists());
    let res = std::fs::read_to_string(&status).unwrap();
    assert!(res.starts_with("OK"), "client: {res}");
    println!("client: {res} (across the agent restart)");
    let _ = client.0.wait();
    let _ = server.0.kill();

    // Metrics: a substrate packet claiming to come from host 2 for an address that does
    // not live there is dropped and counted.
    let m0 = scrape(lab.ns(nh1), "127.0.0.1:9450");
    assert!(metric(&m0, "canopy_agent_packets_total{direction=\"rx\"}") > 0);
    let spoofed = "canopy_agent_drops_total{reason=\"spoofed_source\"}";
    let d0 = metric(&m0, spoofed);
    let vni = net["vni"].as_u64().unwrap();
    let src = spoof_addr(&s(&h2, "locator"), vni, Ipv4Addr::new(10, 0, 1, 99));
    let dst = spoof_addr(&s(&h1, "locator"), vni, s(&vm1, "vip").parse().unwrap());
    let o = lab
        .ns(fab)
        .exec("python3", &["-c", &spoof_py(&src, &dst)], T)
        .unwrap();
    assert!(o.status.success(), "{}", text(&o));
    wait_for("the spoofed packet's drop", Duration::from_secs(10), || {
        metric(&scrape(lab.ns(nh1), "127.0.0.1:9450"), spoofed) > d0
    });
    let m1 = scrape(lab.ns(nh1), "127.0.0.1:9450");
    let dropped: Vec<&str> = m1
        .lines()
        .filter(|l| l.starts_with("canopy_agent_drops_total{") && !l.ends_with(" 0"))
        .collect();
    println!("agent1 drops after the spoofed packet: {dropped:?}");
    let probes = (
        metric(&m1, "canopy_agent_edge_probes_total{result=\"sent\"}"),
        metric(&m1, "canopy_agent_edge_probes_total{result=\"answered\"}"),
        metric(&m1, "canopy_agent_edges_down"),
    );
    println!("agent1 edge probes (sent, answered, edges down): {probes:?}");
    assert!(probes.1 > 0, "the edge answers health probes");
    let me = scrape(lab.ns(ne), "127.0.0.1:9451");
    assert!(metric(&me, "canopy_edge_packets_total{direction=\"outbound\"}") > 0);
    assert!(metric(&me, "canopy_edge_reports_total{result=\"ok\"}") > 0);

    // An elastic IP of vm1 answers from the internet (with a group that lets ICMP in).
    let eip = api.post(
        "/v1/elastic-ips",
        json!({"pool_id": s(&pool, "id"), "tenant_id": s(&t, "id")}),
    );
    api.post(
        &format!("/v1/elastic-ips/{}/associate", s(&eip, "id")),
        json!({"node_id": s(&vm1, "id")}),
    );
    let icmp_in = api.post(
        "/v1/security-groups",
        json!({"network_id": s(&net, "id"), "name": "icmp-in",
               "rules": [{"direction": "ingress", "protocol": "icmp", "remote_cidr": "0.0.0.0/0"}]}),
    );
    api.post(
        &format!("/v1/nodes/{}/security-groups", s(&vm1, "id")),
        json!({"group_id": s(&icmp_in, "id")}),
    );
    let public = s(&eip, "address");
    wait_for("the elastic IP to answer", T, || {
        lab.ns(ni)
            .exec("ping", &["-c", "1", "-W", "1", &public], T)
            .unwrap()
            .status
            .success()
    });
    println!("elastic IP {public} of vm1 answers ping from the internet");

    // A node without a VM namespace gets its TAP in the agent's namespace; a deleted
    // node's TAP goes (here vm2's eth0, out of its namespace).
    let vm3 = api.post(
        "/v1/nodes",
        json!({"subnet_id": s(&sub, "id"), "name": "vm3", "host_id": s(&h1, "id")}),
    );
    let tap = node::agentd::port_name(&s(&vm3, "id"));
    wait_for("vm3's TAP", T, || {
        lab.ns(nh1).ip(&["link", "show", "dev", &tap]).is_ok()
    });
    api.delete(&format!("/v1/nodes/{}", s(&vm2, "id")));
    wait_for("vm2's eth0 to go", T, || {
        lab.ns(nv2).ip(&["link", "show", "dev", "eth0"]).is_err()
    });
    println!("vm3 got {tap} on host 1; vm2's eth0 went with vm2");
    // vm3's namespace appears after its node: the port moves there, as eth0 with vm3's
    // MAC, and the TAP in the agent's namespace goes.
    let nv3 = lab.netns("vm3");
    wait_for("vm3's eth0 in its namespace", T, || {
        lab.ns(nv3).ip(&["link", "show", "dev", "eth0"]).is_ok()
    });
    let link = text(
        &lab.ns(nv3)
            .ip(&["-o", "link", "show", "dev", "eth0"])
            .unwrap(),
    );
    assert!(link.contains(&s(&vm3, "mac")), "{link}");
    wait_for("the TAP in the agent's namespace to go", T, || {
        lab.ns(nh1).ip(&["link", "show", "dev", &tap]).is_err()
    });
    println!("vm3's namespace appeared: its port moved there as eth0");

    // A node deleted while its agent is down: the next agent removes its port.
    let vm4 = api.post(
        "/v1/nodes",
        json!({"subnet_id": s(&sub, "id"), "name": "vm4", "host_id": s(&h1, "id")}),
    );
    let tap = node::agentd::port_name(&s(&vm4, "id"));
    wait_for("vm4's TAP", T, || {
        lab.ns(nh1).ip(&["link", "show", "dev", &tap]).is_ok()
    });
    let k = (0..lab.procs.len())
        .rev()
        .find(|&i| lab.procs[i].name == "agent1b")
        .unwrap();
    let (st, _) = lab.procs[k].terminate();
    assert!(st.success());
    api.delete(&format!("/v1/nodes/{}", s(&vm4, "id")));
    assert!(lab.ns(nh1).ip(&["link", "show", "dev", &tap]).is_ok());
    start(&mut lab, "agent1c", nh1, agent_args(&h1, &r1), &r1);
    assert!(
        lab.ns(nh1).ip(&["link", "show", "dev", &tap]).is_err(),
        "the deleted node's port survived the restart"
    );
    println!("{tap} of vm4 (deleted while the agent was down) removed at the next start");
    drop(lab);
}

fn ping(ns: &Netns, to: &str) {
    let o = ns
        .exec("ping", &["-c", "3", "-i", "0.2", "-W", "2", to], T)
        .unwrap();
    assert!(text(&o).contains("3 received"), "ping {to}: {}", text(&o));
    println!("{}: ping {to}: 3/3", ns.name());
}

struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `locator | vni | ipv4` as an IPv6 address.
fn spoof_addr(locator: &str, vni: u64, ip: Ipv4Addr) -> String {
    let loc: model::Locator = locator.parse().unwrap();
    let net = model::NetworkId::new(vni as u32).unwrap();
    model::SubstrateAddr::new(loc, net, ip)
        .to_addr()
        .to_string()
}

/// Python that sends one UDP packet from `src` to `dst` (the fabric routes it to host 1):
/// an ordinary socket bound to the forged address with `IPV6_FREEBIND` (78).
fn spoof_py(src: &str, dst: &str) -> String {
    format!(
        "import socket\ns=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM)\n\
         s.setsockopt(socket.IPPROTO_IPV6, 78, 1)\n\
         s.bind(('{src}', 4000))\ns.sendto(b'spoofed', ('{dst}', 4000))\n"
    )
}
