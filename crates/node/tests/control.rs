//! The daemons' manager client and desired-state model against a real manager, in
//! process, over HTTP (and its Unix socket): objects created through the API come out of
//! the watch stream as the right data-plane changes, removals included; resolve, port
//! blocks and edge reports work with the agent's and edge's own credentials.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::time::Duration;

use dataplane::agent::{Change, Mapping, PortId, RouteTarget};
use dataplane::edge::EdgeChange;
use dataplane::pool::{MemberState, PoolMode};
use manager::{AppState, SubstratePrefix};
use model::{Ipv4Cidr, Locator, NetworkId};
use node::control::{watch_loop, ManagerClient, WatchEvent, WatchItem};
use node::desired::{self, Catalog, Effect, Ids, Key};
use serde_json::{json, Value};
use tokio::sync::{mpsc, oneshot};

const ADMIN: &str = "control-test-admin";

struct Server {
    url: String,
    http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Server {
    /// A manager on 127.0.0.1:0 (or, with `unix`, on a socket in a temp dir).
    async fn start(unix: bool) -> Server {
        let dir = tempfile::tempdir().unwrap();
        let db = format!("sqlite:{}", dir.path().join("m.db").display());
        let store = manager::open(&db).await.unwrap();
        let (state, _) = AppState::new(
            store,
            Some(ADMIN.into()),
            SubstratePrefix::DEFAULT.parse().unwrap(),
        )
        .await
        .unwrap();
        let app = manager::router(state.clone());
        let (tx, rx) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = rx.await;
            state.stop_streams();
        };
        let url = if unix {
            let path = dir.path().join("manager.sock");
            let l = tokio::net::UnixListener::bind(&path).unwrap();
            tokio::spawn(async move {
                axum::serve(l, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .unwrap()
            });
            format!("unix:{}", path.display())
        } else {
            let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let url = format!("http://{}", l.local_addr().unwrap());
            tokio::spawn(async move {
                axum::serve(l, app)
                    .with_graceful_shutdown(shutdown)
                    .await
                    .unwrap()
            });
            url
        };
        let http = match url.strip_prefix("unix:") {
            Some(p) => reqwest::Client::builder().unix_socket(p).build().unwrap(),
            None => reqwest::Client::new(),
        };
        Server {
            url,
            http,
            stop: Some(tx),
            _dir: dir,
        }
    }

    fn base(&self) -> String {
        if self.url.starts_with("unix:") {
            "http://localhost".into()
        } else {
            self.url.clone()
        }
    }

    async fn req(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
        let mut r = self
            .http
            .request(method.clone(), format!("{}{path}", self.base()))
            .bearer_auth(ADMIN);
        if let Some(b) = body {
            r = r.json(&b);
        }
        let resp = r.send().await.unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert!(status.is_success(), "{method} {path}: {status} {text}");
        serde_json::from_str(&text).unwrap_or(Value::Null)
    }

    async fn post(&self, path: &str, body: Value) -> Value {
        self.req(reqwest::Method::POST, path, Some(body)).await
    }

    async fn delete(&self, path: &str) {
        self.req(reqwest::Method::DELETE, path, None).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }
}

fn s(v: &Value, k: &str) -> String {
    v[k].as_str()
        .unwrap_or_else(|| panic!("{k} in {v}"))
        .to_string()
}

/// A tenant network 10.0.0.0/16 with subnet 10.0.1.0/24, hosts A and B, node vm1 on A and
/// vm2 on B, a NAT pool with one edge and a default route to it.
struct World {
    net: Value,
    subnet: Value,
    host_a: Value,
    host_b: Value,
    vm1: Value,
    vm2: Value,
    pool: Value,
    edge: Value,
}

async fn world(m: &Server) -> World {
    let t = m.post("/v1/tenants", json!({"name": "acme"})).await;
    let net = m
        .post(
            "/v1/networks",
            json!({"name": "n1", "cidr": "10.0.0.0/16", "tenant_id": s(&t, "id")}),
        )
        .await;
    let subnet = m
        .post(
            "/v1/subnets",
            json!({"network_id": s(&net, "id"), "name": "s1", "cidr": "10.0.1.0/24"}),
        )
        .await;
    let host_a = m.post("/v1/hosts", json!({"name": "a"})).await;
    let host_b = m.post("/v1/hosts", json!({"name": "b"})).await;
    let vm1 = m
        .post(
            "/v1/nodes",
            json!({"subnet_id": s(&subnet, "id"), "name": "vm1", "host_id": s(&host_a, "id")}),
        )
        .await;
    let vm2 = m
        .post(
            "/v1/nodes",
            json!({"subnet_id": s(&subnet, "id"), "name": "vm2", "host_id": s(&host_b, "id")}),
        )
        .await;
    let pool = m
        .post(
            "/v1/edge-pools",
            json!({"name": "inet", "nat": true, "public_ranges": ["203.0.113.0/28"], "port_block_size": 1024}),
        )
        .await;
    let edge = m
        .post(
            "/v1/edges",
            json!({"pool_id": s(&pool, "id"), "name": "e1"}),
        )
        .await;
    m.post(
        "/v1/routes",
        json!({"network_id": s(&net, "id"), "destination": "0.0.0.0/0", "target": format!("pool:{}", s(&pool, "id"))}),
    )
    .await;
    World {
        net,
        subnet,
        host_a,
        host_b,
        vm1,
        vm2,
        pool,
        edge,
    }
}

/// Reads a watch stream until `synced`, into a fresh catalog.
async fn snapshot(client: &ManagerClient) -> (Catalog, i64) {
    let mut w = client.watch(0).await.unwrap();
    let mut c = Catalog::default();
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(10), w.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let WatchEvent::Synced { revision } = ev {
            assert_eq!(c.ingest(&ev), Effect::Synced);
            return (c, revision);
        }
        c.ingest(&ev);
    }
}

fn vni(net: &Value) -> NetworkId {
    NetworkId::new(net["vni"].as_u64().unwrap() as u32).unwrap()
}

fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}

#[tokio::test]
async fn agent_configuration_from_the_watch_stream() {
    let m = Server::start(false).await;
    let w = world(&m).await;
    let cred = s(&w.host_a, "credential");
    let client = ManagerClient::new(&m.url, &cred).unwrap();
    let (cat, _) = snapshot(&client).await;
    let host = s(&w.host_a, "id");
    let mut ids = Ids::default();
    let cfg = cat.agent_config(&host, &mut ids);
    let net = vni(&w.net);

    assert_eq!(
        cfg.changes.get(&Key::Network(net)),
        Some(&Change::Network {
            id: net,
            cidr: cidr("10.0.0.0/16")
        })
    );
    assert!(matches!(
        cfg.changes.get(&Key::Subnet(net, cidr("10.0.1.0/24"))),
        Some(Change::Subnet { subnet, .. }) if subnet.gateway == Ipv4Addr::new(10, 0, 1, 1)
    ));
    // vm1 is local: a port with its address and MAC; vm2 is on B: a pushed mapping.
    let port = PortId(ids.ports.lookup(&s(&w.vm1, "id")).unwrap());
    let Some(Change::AttachNode(spec)) = cfg.changes.get(&Key::Node(port)) else {
        panic!(
            "vm1 not attached: {:?}",
            cfg.changes.keys().collect::<Vec<_>>()
        );
    };
    assert_eq!(spec.vip.to_string(), s(&w.vm1, "vip"));
    assert_eq!(spec.mac.to_string(), s(&w.vm1, "mac"));
    assert_eq!(cfg.local[&port].name, "vm1");
    let vm2_ip: Ipv4Addr = s(&w.vm2, "vip").parse().unwrap();
    let b_loc: Locator = s(&w.host_b, "locator").parse().unwrap();
    assert_eq!(
        cfg.changes.get(&Key::Mapping(net, vm2_ip)),
        Some(&Change::Mapping {
            network: net,
            vip: vm2_ip,
            mapping: Some(Mapping {
                locator: b_loc,
                mac: s(&w.vm2, "mac").parse().unwrap()
            })
        })
    );
    // The pool and the default route to it.
    let pool_id = ids.pools.lookup(&s(&w.pool, "id")).unwrap();
    let Some(Change::Pool {
        config, members, ..
    }) = cfg.changes.get(&Key::Pool(pool_id))
    else {
        panic!("no pool")
    };
    assert!(config.nat);
    assert_eq!(config.mode, PoolMode::Direct);
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].state, MemberState::Active);
    assert_eq!(members[0].id, desired::member_id(&s(&w.edge, "id")));
    assert_eq!(
        cfg.changes.get(&Key::Route(net, None, cidr("0.0.0.0/0"))),
        Some(&Change::Route {
            network: net,
            subnet: None,
            cidr: cidr("0.0.0.0/0"),
            target: RouteTarget::Pool(pool_id)
        })
    );
    // Host B's view has vm2 local and vm1 as a mapping.
    let cat_b = snapshot(&ManagerClient::new(&m.url, &s(&w.host_b, "credential")).unwrap())
        .await
        .0;
    let cfg_b = cat_b.agent_config(&s(&w.host_b, "id"), &mut Ids::default());
    let vm1_ip: Ipv4Addr = s(&w.vm1, "vip").parse().unwrap();
    assert!(cfg_b.changes.contains_key(&Key::Mapping(net, vm1_ip)));
    assert_eq!(cfg_b.local.len(), 1);
}

/// Applies watch items to a catalog until `pred` holds for the derived configuration.
async fn until<F: Fn(&BTreeMap<Key, Change>) -> bool>(
    rx: &mut mpsc::Receiver<WatchItem>,
    cat: &mut Catalog,
    host: &str,
    ids: &mut Ids,
    pred: F,
) -> BTreeMap<Key, Change> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        if cat.synced && !cat.in_snapshot {
            let cfg = cat.agent_config(host, ids).changes;
            if pred(&cfg) {
                return cfg;
            }
        }
        let item = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .expect("the configuration never got there")
            .unwrap();
        if let WatchItem::Event(ev) = item {
            cat.ingest(&ev);
        }
    }
}

#[tokio::test]
async fn increments_and_removals_become_changes() {
    let m = Server::start(true).await; // over the Unix socket
    let w = world(&m).await;
    let host = s(&w.host_a, "id");
    let client = ManagerClient::new(&m.url, &s(&w.host_a, "credential")).unwrap();
    let (tx, mut rx) = mpsc::channel(1024);
    let task = tokio::spawn(watch_loop(client.clone(), tx));
    let mut cat = Catalog::default();
    let mut ids = Ids::default();
    let net = vni(&w.net);
    let before = until(&mut rx, &mut cat, &host, &mut ids, |c| {
        c.keys().any(|k| matches!(k, Key::Node(_)))
    })
    .await;

    // A new node on B appears as a mapping; a port block for vm1 as PortBlocks.
    let vm3 = m
        .post(
            "/v1/nodes",
            json!({"subnet_id": s(&w.subnet, "id"), "name": "vm3", "host_id": s(&w.host_b, "id")}),
        )
        .await;
    let vm3_ip: Ipv4Addr = s(&vm3, "vip").parse().unwrap();
    let block = m
        .post(
            &format!("/v1/nodes/{}/port-blocks", s(&w.vm1, "id")),
            json!({}),
        )
        .await;
    let vm1_ip: Ipv4Addr = s(&w.vm1, "vip").parse().unwrap();
    let after = until(&mut rx, &mut cat, &host, &mut ids, |c| {
        c.contains_key(&Key::Mapping(net, vm3_ip)) && c.contains_key(&Key::Blocks(net, vm1_ip))
    })
    .await;
    let Some(Change::PortBlocks { blocks, .. }) = after.get(&Key::Blocks(net, vm1_ip)) else {
        unreachable!()
    };
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].public.to_string(), s(&block, "address"));
    assert_eq!(
        u32::from(blocks[0].first),
        block["port_first"].as_u64().unwrap() as u32
    );
    let d = desired::diff(&before, &after);
    assert!(d.removed.is_empty());
    // The mapping, vm3's membership of the default group, vm1's block.
    assert_eq!(d.set.len(), 3, "{:?}", d.set);
    assert!(d
        .set
        .iter()
        .any(|(k, _)| matches!(k, Key::Member(_, n, ip) if *n == net && *ip == vm3_ip)));

    // Deleting vm3 and the block: the diff undoes both.
    m.delete(&format!("/v1/nodes/{}", s(&vm3, "id"))).await;
    m.delete(&format!("/v1/port-blocks/{}", s(&block, "id")))
        .await;
    let last = until(&mut rx, &mut cat, &host, &mut ids, |c| {
        !c.contains_key(&Key::Mapping(net, vm3_ip)) && !c.contains_key(&Key::Blocks(net, vm1_ip))
    })
    .await;
    let d = desired::diff(&after, &last);
    let undone: Vec<Change> = d
        .removed
        .iter()
        .filter_map(|(_, c)| desired::undo(c))
        .collect();
    assert!(undone.contains(&Change::Mapping {
        network: net,
        vip: vm3_ip,
        mapping: None
    }));
    assert!(undone.contains(&Change::PortBlocks {
        network: net,
        vip: vm1_ip,
        blocks: vec![]
    }));

    // Deleting vm1, the host's only node of the network: the network is forgotten and
    // everything of it goes, the port first and the network last.
    m.delete(&format!("/v1/nodes/{}", s(&w.vm1, "id"))).await;
    let gone = until(&mut rx, &mut cat, &host, &mut ids, |c| {
        !c.contains_key(&Key::Network(net))
    })
    .await;
    let d = desired::diff(&last, &gone);
    let order: Vec<Key> = d.removed.iter().map(|(k, _)| *k).collect();
    let node_at = order
        .iter()
        .position(|k| matches!(k, Key::Node(_)))
        .unwrap();
    let net_at = order.iter().position(|k| *k == Key::Network(net)).unwrap();
    assert!(node_at < net_at, "{order:?}");
    task.abort();
}

#[tokio::test]
async fn a_snapshot_after_reconnect_removes_what_vanished() {
    let m = Server::start(false).await;
    let w = world(&m).await;
    let host = s(&w.host_a, "id");
    let client = ManagerClient::new(&m.url, &s(&w.host_a, "credential")).unwrap();
    let (mut cat, _) = snapshot(&client).await;
    let mut ids = Ids::default();
    let before = cat.agent_config(&host, &mut ids).changes;
    let vm2_ip: Ipv4Addr = s(&w.vm2, "vip").parse().unwrap();
    let net = vni(&w.net);
    assert!(before.contains_key(&Key::Mapping(net, vm2_ip)));
    // While "disconnected", vm2 goes; the next stream starts with a snapshot.
    m.delete(&format!("/v1/nodes/{}", s(&w.vm2, "id"))).await;
    let mut stream = client.watch(0).await.unwrap();
    loop {
        let ev = stream.next().await.unwrap().unwrap();
        let done = matches!(ev, WatchEvent::Synced { .. });
        cat.ingest(&ev);
        if done {
            break;
        }
    }
    let after = cat.agent_config(&host, &mut ids).changes;
    let d = desired::diff(&before, &after);
    // vm2's mapping and its membership of the default group.
    assert_eq!(d.removed.len(), 2, "{:?}", d.removed);
    assert!(d
        .removed
        .iter()
        .any(|(k, _)| *k == Key::Mapping(net, vm2_ip)));
    assert!(d
        .removed
        .iter()
        .any(|(k, _)| matches!(k, Key::Member(_, n, ip) if *n == net && *ip == vm2_ip)));
    assert!(d.set.is_empty());
}

#[tokio::test]
async fn resolve_port_blocks_and_reports_with_daemon_credentials() {
    let m = Server::start(false).await;
    let w = world(&m).await;
    let agent = ManagerClient::new(&m.url, &s(&w.host_a, "credential")).unwrap();
    let r = agent
        .resolve(&s(&w.net, "id"), s(&w.vm2, "vip").parse().unwrap())
        .await
        .unwrap()
        .expect("vm2 resolves");
    assert_eq!(r.locator, s(&w.host_b, "locator"));
    assert_eq!(r.mac, s(&w.vm2, "mac"));
    assert_eq!(
        agent
            .resolve(&s(&w.net, "id"), Ipv4Addr::new(10, 0, 1, 200))
            .await
            .unwrap(),
        None
    );
    // The agent may ask for a block for its own node, not for another host's.
    let b = agent
        .request_port_block(&s(&w.vm1, "id"))
        .await
        .unwrap()
        .expect("a block");
    assert_eq!(b["node_id"], w.vm1["id"]);
    assert!(agent
        .request_port_block(&s(&w.vm2, "id"))
        .await
        .unwrap()
        .is_none());

    // The edge sees the block's owner and routes the pool's range; its report comes back
    // to agents as the member's load.
    let edge = ManagerClient::new(&m.url, &s(&w.edge, "credential")).unwrap();
    let (cat, _) = snapshot(&edge).await;
    let cfg = cat.edge_config(&s(&w.edge, "id"));
    assert_eq!(cfg.public_ranges, vec![cidr("203.0.113.0/28")]);
    let owner = cfg
        .changes
        .values()
        .find_map(|c| match c {
            EdgeChange::Block { owner, block } if block.public.to_string() == s(&b, "address") => {
                Some(*owner)
            }
            _ => None,
        })
        .expect("the block's owner");
    assert_eq!(owner.vip.to_string(), s(&w.vm1, "vip"));
    assert_eq!(owner.host, s(&w.host_a, "locator").parse().unwrap());
    edge.report_edge(&s(&w.edge, "id"), true, 42).await.unwrap();
    let (cat, _) = snapshot(&agent).await;
    let cfg = cat.agent_config(&s(&w.host_a, "id"), &mut Ids::default());
    let load = cfg
        .changes
        .values()
        .find_map(|c| match c {
            Change::Pool { members, .. } => members[0].load,
            _ => None,
        })
        .expect("a member load");
    assert!((load - 0.42).abs() < 1e-9);
    edge.report_edge(&s(&w.edge, "id"), false, 0).await.unwrap();
    let (cat, _) = snapshot(&agent).await;
    let cfg = cat.agent_config(&s(&w.host_a, "id"), &mut Ids::default());
    assert!(cfg.changes.values().any(|c| matches!(c,
        Change::Pool { members, .. } if members[0].state == MemberState::Down)));
}

#[tokio::test]
async fn the_watch_loop_reconnects_and_resumes() {
    // A manager that goes away and comes back on the same socket path and database.
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite:{}", dir.path().join("m.db").display());
    let sock = dir.path().join("m.sock");
    let serve = |db: String, sock: std::path::PathBuf| async move {
        let store = manager::open(&db).await.unwrap();
        let (state, _) = AppState::new(
            store,
            Some(ADMIN.into()),
            SubstratePrefix::DEFAULT.parse().unwrap(),
        )
        .await
        .unwrap();
        let _ = std::fs::remove_file(&sock);
        let l = tokio::net::UnixListener::bind(&sock).unwrap();
        let (tx, rx) = oneshot::channel::<()>();
        let st = state.clone();
        let task = tokio::spawn(async move {
            axum::serve(l, manager::router(state))
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                    st.stop_streams();
                })
                .await
                .unwrap()
        });
        (tx, task)
    };
    let (stop, task) = serve(db.clone(), sock.clone()).await;
    let url = format!("unix:{}", sock.display());
    let admin = ManagerClient::new(&url, ADMIN).unwrap();
    let host: Value = {
        let http = reqwest::Client::builder()
            .unix_socket(sock.clone())
            .build()
            .unwrap();
        http.post("http://localhost/v1/hosts")
            .bearer_auth(ADMIN)
            .json(&json!({"name": "h"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    };
    let client = ManagerClient::new(&url, &s(&host, "credential")).unwrap();
    let (tx, mut rx) = mpsc::channel(1024);
    let loop_task = tokio::spawn(watch_loop(client, tx));
    let mut synced_at = None;
    while synced_at.is_none() {
        if let Some(WatchItem::Event(WatchEvent::Synced { revision })) = rx.recv().await {
            synced_at = Some(revision);
        }
    }
    stop.send(()).unwrap();
    task.await.unwrap();
    assert!(matches!(
        rx.recv().await,
        Some(WatchItem::Disconnected { .. })
    ));
    let (stop, _task) = serve(db, sock.clone()).await;
    // Back: the loop resumes after the revision it had, without a snapshot.
    let since = loop {
        match tokio::time::timeout(Duration::from_secs(15), rx.recv()).await {
            Ok(Some(WatchItem::Connected { since })) => break since,
            Ok(Some(_)) => continue,
            other => panic!("no reconnect: {other:?}"),
        }
    };
    assert_eq!(Some(since), synced_at);
    let _ = admin;
    loop_task.abort();
    let _ = stop.send(());
}

#[tokio::test]
async fn security_groups_members_and_acls_become_changes() {
    let m = Server::start(false).await;
    let w = world(&m).await;
    let net = vni(&w.net);
    m.req(
        reqwest::Method::PUT,
        &format!("/v1/subnets/{}/acl", s(&w.subnet, "id")),
        Some(json!({"rules": [
            {"number": 10, "action": "deny", "direction": "ingress", "protocol": "tcp",
             "port_from": 22, "port_to": 22, "cidr": "0.0.0.0/0"},
            {"number": 20, "action": "allow", "direction": "ingress", "cidr": "0.0.0.0/0"}
        ]})),
    )
    .await;
    let client = ManagerClient::new(&m.url, &s(&w.host_a, "credential")).unwrap();
    let (cat, _) = snapshot(&client).await;
    let mut ids = Ids::default();
    let cfg = cat.agent_config(&s(&w.host_a, "id"), &mut ids);
    // vm1 (local) has the network's default group: egress anywhere, ingress from the
    // group's members, which are vm1 and vm2.
    let port = PortId(ids.ports.lookup(&s(&w.vm1, "id")).unwrap());
    let Some(Change::SecurityGroups { groups, .. }) = cfg.changes.get(&Key::Groups(port)) else {
        panic!(
            "no groups for vm1: {:?}",
            cfg.changes.keys().collect::<Vec<_>>()
        );
    };
    assert_eq!(groups.len(), 1);
    let g = groups[0].id;
    assert_eq!(groups[0].rules.len(), 2, "{:?}", groups[0].rules);
    assert!(groups[0]
        .rules
        .iter()
        .any(|r| r.remote == dataplane::rules::Remote::Group(g)));
    for vm in [&w.vm1, &w.vm2] {
        let vip: Ipv4Addr = s(vm, "vip").parse().unwrap();
        assert!(cfg.changes.contains_key(&Key::Member(g, net, vip)), "{vip}");
    }
    let Some(Change::Acl {
        rules: Some(rules), ..
    }) = cfg.changes.get(&Key::Acl(net, cidr("10.0.1.0/24")))
    else {
        panic!("no ACL");
    };
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[0].number, 10);
    assert_eq!(rules[0].action, dataplane::rules::Action::Deny);
    assert_eq!(rules[0].ports, 22..=22);
}
