//! Watch streams: scoped snapshot, increments, scope changes, resume, second replica.

mod common;

use std::time::Duration;

use common::{each_backend, sv, Server, ADMIN};
use serde_json::{json, Value};

/// An open NDJSON watch stream.
struct Watch {
    resp: reqwest::Response,
    buf: Vec<u8>,
}

impl Watch {
    async fn open(s: &Server, token: &str, query: &str) -> Watch {
        let resp = reqwest::Client::new()
            .get(format!("{}/v1/watch{query}", s.base))
            .bearer_auth(token)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "application/x-ndjson"
        );
        Watch {
            resp,
            buf: Vec::new(),
        }
    }

    /// The next event, or `None` when the stream ended.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(k) = self.buf.iter().position(|b| *b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=k).collect();
                return Some(serde_json::from_slice(&line).expect("a JSON line"));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(10), self.resp.chunk())
                .await
                .expect("an event within 10 s")
                .expect("stream read");
            match chunk {
                Some(c) => self.buf.extend_from_slice(&c),
                None => return None,
            }
        }
    }

    /// Events up to and including the first that satisfies `stop`.
    async fn until(&mut self, stop: impl Fn(&Value) -> bool) -> Vec<Value> {
        let mut out = Vec::new();
        loop {
            let ev = self.next().await.expect("stream ended early");
            let done = stop(&ev);
            out.push(ev);
            if done {
                return out;
            }
        }
    }
}

fn upserted(evs: &[Value], kind: &str) -> Vec<String> {
    let mut v: Vec<String> = evs
        .iter()
        .filter(|e| e["type"] == "upsert" && e["kind"] == kind)
        .map(|e| sv(&e["object"], "id"))
        .collect();
    v.sort();
    v
}

fn is_change(kind: &'static str, id: String) -> impl Fn(&Value) -> bool {
    move |e: &Value| e["type"] == "change" && e["kind"] == kind && e["object_id"] == id.as_str()
}

/// Tenant A: networks N1 and N2 (one subnet each); tenant B: N3. Hosts h1, h2.
/// Node a1 in N1 on h1; b1 in N2 on h2; c1 in N3 on h2.
struct World {
    ta: String,
    h1: Value,
    h2: Value,
    n1: String,
    n2: String,
    sub1: String,
    sub2: String,
    sub3: String,
    a1: String,
}

async fn world(s: &Server) -> World {
    let (_a, ta) = s.tenant("a").await;
    let (_b, tb) = s.tenant("b").await;
    let h1 = s.create("/v1/hosts", ADMIN, json!({"name": "h1"})).await;
    let h2 = s.create("/v1/hosts", ADMIN, json!({"name": "h2"})).await;
    let mut nets = Vec::new();
    for (tok, name) in [(&ta, "n1"), (&ta, "n2"), (&tb, "n3")] {
        let n = sv(
            &s.create(
                "/v1/networks",
                tok,
                json!({"name": name, "cidr": "10.0.0.0/16"}),
            )
            .await,
            "id",
        );
        let sub = sv(
            &s.create(
                "/v1/subnets",
                tok,
                json!({"network_id": n, "name": "s", "cidr": "10.0.0.0/24"}),
            )
            .await,
            "id",
        );
        nets.push((n, sub));
    }
    let a1 = sv(
        &s.create(
            "/v1/nodes",
            &ta,
            json!({"subnet_id": nets[0].1, "name": "a1", "host_id": sv(&h1, "id")}),
        )
        .await,
        "id",
    );
    s.create(
        "/v1/nodes",
        &ta,
        json!({"subnet_id": nets[1].1, "name": "b1", "host_id": sv(&h2, "id")}),
    )
    .await;
    s.create(
        "/v1/nodes",
        &tb,
        json!({"subnet_id": nets[2].1, "name": "c1", "host_id": sv(&h2, "id")}),
    )
    .await;
    World {
        ta,
        h1,
        h2,
        n1: nets[0].0.clone(),
        n2: nets[1].0.clone(),
        sub1: nets[0].1.clone(),
        sub2: nets[1].1.clone(),
        sub3: nets[2].1.clone(),
        a1,
    }
}

#[tokio::test]
async fn watch_snapshot_is_scoped_then_increments_follow() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let w = world(&s).await;
        let rev = s.store.revision().await.unwrap();
        let mut st = Watch::open(&s, &sv(&w.h1, "credential"), "").await;
        let snap = st.until(|e| e["type"] == "synced").await;
        assert_eq!(snap[0], json!({"type": "snapshot", "revision": rev}));
        assert_eq!(snap.last().unwrap()["revision"], rev);
        // Only N1 (where h1 has a node), its subnet and node; all hosts; no tenants.
        assert_eq!(upserted(&snap, "network"), vec![w.n1.clone()]);
        assert_eq!(upserted(&snap, "subnet"), vec![w.sub1.clone()]);
        assert_eq!(upserted(&snap, "node"), vec![w.a1.clone()]);
        assert_eq!(upserted(&snap, "host").len(), 2);
        assert!(snap
            .iter()
            .all(|e| e["kind"] != "tenant" && e["kind"] != "token"));
        assert!(!serde_json::to_string(&snap).unwrap().contains("cnpa_"));

        // A new node in N1 (on another host) is pushed.
        let a2 = sv(
            &s.create(
                "/v1/nodes",
                &w.ta,
                json!({"subnet_id": w.sub1, "name": "a2", "host_id": sv(&w.h2, "id")}),
            )
            .await,
            "id",
        );
        let evs = st.until(is_change("node", a2.clone())).await;
        assert_eq!(evs.len(), 1, "{evs:?}");
        assert_eq!(evs[0]["op"], "create");
        assert_eq!(evs[0]["network_id"], w.n1.as_str());
        assert!(evs[0]["revision"].as_i64().unwrap() > rev);

        // A node in N2 on h2 is not; a host (infrastructure) is, and fences the check.
        s.create(
            "/v1/nodes",
            &w.ta,
            json!({"subnet_id": w.sub2, "name": "b2", "host_id": sv(&w.h2, "id")}),
        )
        .await;
        s.create(
            "/v1/nodes",
            ADMIN,
            json!({"subnet_id": w.sub3, "name": "c2", "host_id": sv(&w.h2, "id")}),
        )
        .await;
        let h3 = sv(
            &s.create("/v1/hosts", ADMIN, json!({"name": "h3"})).await,
            "id",
        );
        let evs = st.until(is_change("host", h3)).await;
        // Before it only a2's membership in N1's default security group (recorded with a2).
        assert_eq!(evs.len(), 2, "{evs:?}");
        assert_eq!(evs[0]["kind"], "security_group_attachment");
        assert_eq!(evs[0]["object"]["node_id"], a2.as_str());

        // A node of N2 placed on h1 brings N2 into scope: it arrives whole.
        let b3 = sv(
            &s.create(
                "/v1/nodes",
                &w.ta,
                json!({"subnet_id": w.sub2, "name": "b3", "host_id": sv(&w.h1, "id")}),
            )
            .await,
            "id",
        );
        let evs = st.until(is_change("node", b3.clone())).await;
        assert_eq!(upserted(&evs, "network"), vec![w.n2.clone()]);
        assert_eq!(upserted(&evs, "subnet"), vec![w.sub2.clone()]);
        assert_eq!(upserted(&evs, "node").len(), 3, "b1, b2, b3: {evs:?}");

        // Removing it takes N2 out of scope again.
        assert_eq!(s.delete(&format!("/v1/nodes/{b3}"), &w.ta).await, 204);
        let evs = st.until(|e| e["type"] == "forget").await;
        assert_eq!(evs.last().unwrap()["network_id"], w.n2.as_str());
        drop(st);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn watch_resumes_from_a_revision() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let w = world(&s).await;
        let agent = sv(&w.h1, "credential");
        let mut st = Watch::open(&s, &agent, "").await;
        let snap = st.until(|e| e["type"] == "synced").await;
        let r = snap.last().unwrap()["revision"].as_i64().unwrap();
        drop(st);
        // While away: a node in N1, a node of N2 on h1 (N2 enters scope), noise elsewhere.
        let a2 = sv(
            &s.create(
                "/v1/nodes",
                &w.ta,
                json!({"subnet_id": w.sub1, "name": "a2", "host_id": sv(&w.h2, "id")}),
            )
            .await,
            "id",
        );
        s.create(
            "/v1/nodes",
            ADMIN,
            json!({"subnet_id": w.sub3, "name": "c2", "host_id": sv(&w.h2, "id")}),
        )
        .await;
        let b3 = sv(
            &s.create(
                "/v1/nodes",
                &w.ta,
                json!({"subnet_id": w.sub2, "name": "b3", "host_id": sv(&w.h1, "id")}),
            )
            .await,
            "id",
        );
        let mut st = Watch::open(&s, &agent, &format!("?since={r}")).await;
        let evs = st.until(is_change("node", b3.clone())).await;
        assert!(evs.iter().all(|e| e["type"] != "snapshot"), "{evs:?}");
        // N2 is sent whole (the client never had it) and the N1 change is replayed.
        assert_eq!(upserted(&evs, "network"), vec![w.n2.clone()]);
        assert!(evs.iter().any(is_change("node", a2.clone())));
        assert!(evs
            .iter()
            .all(|e| e["type"] == "upsert" || e["network_id"] != json!(null)));
        assert!(evs.iter().all(|e| e["object"]["name"] != "c2"), "{evs:?}");
        let last = evs.last().unwrap()["revision"].as_i64().unwrap();
        drop(st);
        // Resuming at the head sends nothing but what comes next.
        let mut st = Watch::open(&s, &agent, &format!("?since={last}")).await;
        let h9 = sv(
            &s.create("/v1/hosts", ADMIN, json!({"name": "h9"})).await,
            "id",
        );
        let evs = st.until(is_change("host", h9)).await;
        assert_eq!(evs.len(), 1, "{evs:?}");
        drop(st);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn edge_watch_is_scoped_to_its_pool_and_ends_on_timeout_or_removal() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let w = world(&s).await;
        let pool = sv(&s.create("/v1/edge-pools", ADMIN, json!({"name": "p", "nat": false})).await, "id");
        let edge = s.create("/v1/edges", ADMIN, json!({"pool_id": pool, "name": "e"})).await;
        let route = sv(
            &s.create("/v1/routes", &w.ta, json!({"network_id": w.n2, "destination": "0.0.0.0/0", "target": format!("pool:{pool}")}))
                .await,
            "id",
        );
        let mut st = Watch::open(&s, &sv(&edge, "credential"), "?timeout_secs=1").await;
        let snap = st.until(|e| e["type"] == "synced").await;
        assert_eq!(s.metric("canopy_manager_watch_streams").await, 1, "one stream open");
        assert_eq!(upserted(&snap, "network"), vec![w.n2.clone()]);
        assert_eq!(upserted(&snap, "route"), vec![route]);
        assert_eq!(upserted(&snap, "edge").len(), 1);
        assert_eq!(upserted(&snap, "edge_pool"), vec![pool]);
        // The stream ends by itself after timeout_secs.
        let t0 = std::time::Instant::now();
        assert_eq!(st.next().await, None);
        assert!(t0.elapsed() < Duration::from_secs(5));
        assert_eq!(s.metric("canopy_manager_watch_streams").await, 0, "none open");
        // Removing the edge (and so its credential) ends its stream.
        let mut st = Watch::open(&s, &sv(&edge, "credential"), "").await;
        st.until(|e| e["type"] == "synced").await;
        assert_eq!(s.delete(&format!("/v1/routes/{}", upserted(&snap, "route")[0]), &w.ta).await, 204);
        assert_eq!(s.delete(&format!("/v1/edges/{}", sv(&edge, "id")), ADMIN).await, 204);
        let mut rest = Vec::new();
        while let Some(ev) = st.next().await {
            rest.push(ev);
        }
        assert!(rest.iter().all(|e| e["type"] != "heartbeat"), "{rest:?}");
                // Tenants may not watch; bad parameters are named.
        assert_eq!(s.get("/v1/watch", &w.ta).await.0, 404);
        common::assert_error(&s.get("/v1/watch?timeout_secs=0", ADMIN).await, 422, "out_of_range", Some("timeout_secs"));
        assert_eq!(s.get("/v1/watch?since=-1", ADMIN).await.1["code"], "invalid_query");
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn second_replica_sees_writes_of_the_first() {
    each_backend(|db| async move {
        let s1 = Server::start(&db).await;
        let s2 = Server::start(&db).await;
        let mut st = Watch::open(&s2, ADMIN, "").await;
        st.until(|e| e["type"] == "synced").await;
        let t = s1
            .create("/v1/tenants", ADMIN, json!({"name": "via-replica-1"}))
            .await;
        let evs = st.until(is_change("tenant", sv(&t, "id"))).await;
        assert_eq!(evs.len(), 1);
        // And the data written through one replica is served by the other.
        assert_eq!(
            s2.get(&format!("/v1/tenants/{}", sv(&t, "id")), ADMIN)
                .await
                .0,
            200
        );
        drop(st);
        s2.stop().await;
        s1.stop().await;
    })
    .await;
}

#[tokio::test]
async fn elastic_ips_and_port_blocks_reach_their_host_and_pool_only() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (ta_id, ta) = s.tenant("a").await;
        let h1 = s.create("/v1/hosts", ADMIN, json!({"name": "h1"})).await;
        let h2 = s.create("/v1/hosts", ADMIN, json!({"name": "h2"})).await;
        let pool = sv(&s.create("/v1/edge-pools", ADMIN, json!({"name": "p", "public_ranges": ["192.0.2.0/29"]})).await, "id");
        let other = sv(&s.create("/v1/edge-pools", ADMIN, json!({"name": "q", "nat": false})).await, "id");
        let e = s.create("/v1/edges", ADMIN, json!({"pool_id": pool, "name": "e"})).await;
        let eq = s.create("/v1/edges", ADMIN, json!({"pool_id": other, "name": "eq"})).await;
        let net = sv(&s.create("/v1/networks", &ta, json!({"name": "n", "cidr": "10.0.0.0/16"})).await, "id");
        let sub = sv(&s.create("/v1/subnets", &ta, json!({"network_id": net, "name": "s", "cidr": "10.0.0.0/24"})).await, "id");
        let n1 = sv(&s.create("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "n1", "host_id": sv(&h1, "id")})).await, "id");
        let n2 = sv(&s.create("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "n2", "host_id": sv(&h2, "id")})).await, "id");
        s.create("/v1/routes", &ta, json!({"network_id": net, "destination": "0.0.0.0/0", "target": format!("pool:{pool}")})).await;
        let eip = sv(&s.create("/v1/elastic-ips", ADMIN, json!({"pool_id": pool, "tenant_id": ta_id})).await, "id");
        assert_eq!(s.post(&format!("/v1/elastic-ips/{eip}/associate"), &ta, json!({"node_id": n1})).await.0, 200);
        let b1 = sv(&s.create(&format!("/v1/nodes/{n1}/port-blocks"), &sv(&h1, "credential"), json!({})).await, "id");

        // Snapshots: h1's agent and p's edge get both, h2's agent and q's edge neither.
        let mut a1 = Watch::open(&s, &sv(&h1, "credential"), "").await;
        let mut a2 = Watch::open(&s, &sv(&h2, "credential"), "").await;
        let mut ep = Watch::open(&s, &sv(&e, "credential"), "").await;
        let mut eo = Watch::open(&s, &sv(&eq, "credential"), "").await;
        for (w, want) in [(&mut a1, true), (&mut a2, false), (&mut ep, true), (&mut eo, false)] {
            let snap = w.until(|e| e["type"] == "synced").await;
            let (eips, blocks) = (upserted(&snap, "elastic_ip"), upserted(&snap, "port_block"));
            if want {
                assert_eq!((eips, blocks), (vec![eip.clone()], vec![b1.clone()]));
                // The network's default security group and the nodes' memberships too.
                assert_eq!(upserted(&snap, "security_group").len(), 1);
                assert_eq!(upserted(&snap, "security_group_attachment").len(), 2);
            } else {
                assert!(eips.is_empty() && blocks.is_empty(), "{snap:?}");
            }
        }
        // Increments: n2's block goes to h2's agent and p's edge, not to h1's agent.
        let b2 = sv(&s.create(&format!("/v1/nodes/{n2}/port-blocks"), &sv(&h2, "credential"), json!({})).await, "id");
        a2.until(is_change("port_block", b2.clone())).await;
        ep.until(is_change("port_block", b2.clone())).await;
        // Disassociation reaches the host the address left (and the pool's edge).
        assert_eq!(s.call("POST", &format!("/v1/elastic-ips/{eip}/disassociate"), Some(&ta), None).await.0, 200);
        let got = a1.until(is_change("elastic_ip", eip.clone())).await;
        assert!(got.iter().all(|e| e["kind"] != "port_block"), "h1 saw n2's block: {got:?}");
        assert!(got.last().unwrap()["object"]["node_id"].is_null());
        ep.until(is_change("elastic_ip", eip.clone())).await;
        // A marker every stream sees: nothing of the above reached h2 (eip) or q's edge.
        let h3 = sv(&s.create("/v1/hosts", ADMIN, json!({"name": "h3"})).await, "id");
        let got = a2.until(is_change("host", h3.clone())).await;
        assert!(got.iter().all(|e| e["kind"] != "elastic_ip"), "{got:?}");
        let got = eo.until(is_change("host", h3.clone())).await;
        assert!(got.iter().all(|e| e["kind"] != "elastic_ip" && e["kind"] != "port_block"), "{got:?}");
        // Releasing with the node's delete reaches h2's agent.
        assert_eq!(s.delete(&format!("/v1/nodes/{n2}"), &ta).await, 204);
        // (The network leaves h2's scope with its last node: a forget, then the release.)
        let got = a2.until(is_change("port_block", b2.clone())).await;
        assert_eq!(got.last().unwrap()["op"], "delete");
        assert!(got.iter().any(|e| e["type"] == "forget"), "{got:?}");
        // Close the streams, or the graceful stop waits for their timeouts.
        drop((a1, a2, ep, eo));
        s.stop().await;
    })
    .await;
}

/// Kinds upserted for network `net` (objects whose `network_id`, `peer_network_id` or `id`
/// is it).
fn kinds_of(evs: &[Value], net: &str) -> Vec<String> {
    let mut k: Vec<String> = evs
        .iter()
        .filter(|e| e["type"] == "upsert")
        .filter(|e| {
            let o = &e["object"];
            o["network_id"] == net || o["peer_network_id"] == net || o["id"] == net
        })
        .map(|e| e["kind"].as_str().unwrap_or_default().to_string())
        .collect();
    k.sort();
    k.dedup();
    k
}

#[tokio::test]
async fn watch_carries_the_peer_view_of_actively_peered_networks() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        // Tenant A: n1 (10.0.0.0/16) with a1 on h1. Tenant B: bn (10.2.0.0/16) with b1 on
        // h2 and a route of its own.
        let (_a, ta) = s.tenant("a").await;
        let (_b, tb) = s.tenant("b").await;
        let h1 = s.create("/v1/hosts", ADMIN, json!({"name": "h1"})).await;
        let h2 = s.create("/v1/hosts", ADMIN, json!({"name": "h2"})).await;
        let n1 = sv(
            &s.create(
                "/v1/networks",
                &ta,
                json!({"name": "n1", "cidr": "10.0.0.0/16"}),
            )
            .await,
            "id",
        );
        let bn = sv(
            &s.create(
                "/v1/networks",
                &tb,
                json!({"name": "bn", "cidr": "10.2.0.0/16"}),
            )
            .await,
            "id",
        );
        let sub1 = sv(
            &s.create(
                "/v1/subnets",
                &ta,
                json!({"network_id": n1, "name": "s", "cidr": "10.0.0.0/24"}),
            )
            .await,
            "id",
        );
        let subb = sv(
            &s.create(
                "/v1/subnets",
                &tb,
                json!({"network_id": bn, "name": "s", "cidr": "10.2.0.0/24"}),
            )
            .await,
            "id",
        );
        s.create(
            "/v1/nodes",
            &ta,
            json!({"subnet_id": sub1, "name": "a1", "host_id": sv(&h1, "id")}),
        )
        .await;
        let b1 = sv(
            &s.create(
                "/v1/nodes",
                &tb,
                json!({"subnet_id": subb, "name": "b1", "host_id": sv(&h2, "id")}),
            )
            .await,
            "id",
        );
        s.create(
            "/v1/routes",
            &tb,
            json!({"network_id": bn, "destination": "172.16.0.0/12", "target": "blackhole"}),
        )
        .await;
        let agent1 = sv(&h1, "credential");
        let mut st = Watch::open(&s, &agent1, "").await;
        let snap = st.until(|e| e["type"] == "synced").await;
        assert_eq!(upserted(&snap, "network"), vec![n1.clone()]);
        let r0 = snap.last().unwrap()["revision"].as_i64().unwrap();

        // Pending: the peering reaches h1 (under n1), bn does not.
        let pe = sv(
            &s.create(
                "/v1/peerings",
                &ta,
                json!({"network_id": n1, "peer_network_id": bn}),
            )
            .await,
            "id",
        );
        let evs = st.until(is_change("peering", pe.clone())).await;
        assert!(upserted(&evs, "network").is_empty(), "{evs:?}");
        // Accepted: bn's network, subnet and node arrive, not its route or security group.
        assert_eq!(
            s.call(
                "POST",
                &format!("/v1/peerings/{pe}/accept"),
                Some(&tb),
                None
            )
            .await
            .0,
            200
        );
        let evs = st
            .until(|e| is_change("peering", pe.clone())(e) && e["object"]["state"] == "active")
            .await;
        assert_eq!(
            kinds_of(&evs, &bn),
            vec!["network", "node", "peering", "subnet"],
            "{evs:?}"
        );
        assert_eq!(upserted(&evs, "node"), vec![b1.clone()]);
        assert_eq!(upserted(&evs, "network"), vec![bn.clone()]);
        // Increments of bn: its nodes do reach h1, its routes do not; a host fences.
        let b2 = sv(
            &s.create(
                "/v1/nodes",
                &tb,
                json!({"subnet_id": subb, "name": "b2", "host_id": sv(&h2, "id")}),
            )
            .await,
            "id",
        );
        s.create(
            "/v1/routes",
            &tb,
            json!({"network_id": bn, "destination": "192.168.0.0/16", "target": "blackhole"}),
        )
        .await;
        let h3 = sv(
            &s.create("/v1/hosts", ADMIN, json!({"name": "h3"})).await,
            "id",
        );
        let evs = st.until(is_change("host", h3.clone())).await;
        assert!(evs.iter().any(is_change("node", b2.clone())), "{evs:?}");
        let bn_kinds: Vec<&Value> = evs
            .iter()
            .filter(|e| e["network_id"] == bn.as_str())
            .map(|e| &e["kind"])
            .collect();
        assert_eq!(bn_kinds, vec!["node"], "{evs:?}");

        // A resuming agent gets the peer view it lacks.
        let mut again = Watch::open(&s, &agent1, &format!("?since={r0}")).await;
        let evs = again.until(is_change("host", h3.clone())).await;
        assert_eq!(upserted(&evs, "network"), vec![bn.clone()], "{evs:?}");
        assert!(
            evs.iter()
                .all(|e| e["kind"] != "route" && e["kind"] != "security_group"),
            "{evs:?}"
        );
        drop(again);

        // A node of bn on h1 makes bn whole; its removal returns to the peer view: forget,
        // then the network, subnet, nodes and peering again.
        let b3 = sv(
            &s.create(
                "/v1/nodes",
                &tb,
                json!({"subnet_id": subb, "name": "b3", "host_id": sv(&h1, "id")}),
            )
            .await,
            "id",
        );
        let evs = st.until(is_change("node", b3.clone())).await;
        assert_eq!(upserted(&evs, "route").len(), 2, "{evs:?}");
        assert_eq!(s.delete(&format!("/v1/nodes/{b3}"), &tb).await, 204);
        let evs = st
            .until(|e| e["type"] == "upsert" && e["kind"] == "peering")
            .await;
        assert!(
            evs.iter()
                .any(|e| e["type"] == "forget" && e["network_id"] == bn.as_str()),
            "{evs:?}"
        );
        assert_eq!(
            kinds_of(&evs, &bn),
            vec!["network", "node", "peering", "subnet"],
            "{evs:?}"
        );

        // Deleted: bn leaves h1's scope, live and on resume.
        let r1 = st
            .until(is_change("node", b3.clone()))
            .await
            .last()
            .unwrap()["revision"]
            .as_i64()
            .unwrap();
        assert_eq!(s.delete(&format!("/v1/peerings/{pe}"), &ta).await, 204);
        let evs = st.until(|e| e["type"] == "forget").await;
        assert_eq!(evs.last().unwrap()["network_id"], bn.as_str());
        let mut again = Watch::open(&s, &agent1, &format!("?since={r1}")).await;
        let evs = again
            .until(|e| e["type"] == "forget" && e["network_id"] == bn.as_str())
            .await;
        assert!(upserted(&evs, "network").is_empty(), "{evs:?}");
        drop((st, again));
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn a_peer_view_goes_with_the_network_that_brought_it() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        // n1 (a1 on h1) peered with bn (b1 on h2), one tenant: active at once.
        let (_a, ta) = s.tenant("a").await;
        let h1 = s.create("/v1/hosts", ADMIN, json!({"name": "h1"})).await;
        let h2 = s.create("/v1/hosts", ADMIN, json!({"name": "h2"})).await;
        let mut nets = Vec::new();
        for (name, cidr, host) in [("n1", "10.0.0.0/16", &h1), ("bn", "10.2.0.0/16", &h2)] {
            let n = sv(
                &s.create("/v1/networks", &ta, json!({"name": name, "cidr": cidr}))
                    .await,
                "id",
            );
            let sub = cidr.replace(".0.0/16", ".0.0/24");
            let sub = sv(
                &s.create(
                    "/v1/subnets",
                    &ta,
                    json!({"network_id": n, "name": "s", "cidr": sub}),
                )
                .await,
                "id",
            );
            let node = sv(
                &s.create(
                    "/v1/nodes",
                    &ta,
                    json!({"subnet_id": sub, "name": "vm", "host_id": sv(host, "id")}),
                )
                .await,
                "id",
            );
            nets.push((n, node));
        }
        let (n1, bn) = (nets[0].0.clone(), nets[1].0.clone());
        s.create(
            "/v1/peerings",
            &ta,
            json!({"network_id": n1, "peer_network_id": bn}),
        )
        .await;
        let agent = sv(&h1, "credential");
        let mut st = Watch::open(&s, &agent, "").await;
        let snap = st.until(|e| e["type"] == "synced").await;
        assert_eq!(upserted(&snap, "network"), {
            let mut v = vec![n1.clone(), bn.clone()];
            v.sort();
            v
        });
        assert!(
            upserted(&snap, "route").is_empty() && upserted(&snap, "security_group").len() == 1,
            "{snap:?}"
        );
        let r0 = snap.last().unwrap()["revision"].as_i64().unwrap();
        // h1's last node of n1 goes: n1 leaves its scope, and bn with it.
        assert_eq!(
            s.delete(&format!("/v1/nodes/{}", nets[0].1), &ta).await,
            204
        );
        let mut forgotten = Vec::new();
        while forgotten.len() < 2 {
            let ev = st.next().await.expect("stream open");
            if ev["type"] == "forget" {
                forgotten.push(sv(&ev, "network_id"));
            }
        }
        forgotten.sort();
        let mut want = vec![n1.clone(), bn.clone()];
        want.sort();
        assert_eq!(forgotten, want);
        // A client resuming from before is told so too.
        let mut again = Watch::open(&s, &agent, &format!("?since={r0}")).await;
        let mut forgotten = Vec::new();
        while forgotten.len() < 2 {
            let ev = again.next().await.expect("stream open");
            assert_ne!(ev["type"], "upsert", "{ev}");
            if ev["type"] == "forget" {
                forgotten.push(sv(&ev, "network_id"));
            }
        }
        forgotten.sort();
        assert_eq!(forgotten, want);
        drop((st, again));
        s.stop().await;
    })
    .await;
}
