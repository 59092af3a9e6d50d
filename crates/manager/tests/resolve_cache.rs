//! The resolve path caches tokens, authorisation and answers by store revision: a write
//! must take effect on the very next request (revoked credentials, nodes gone, routes gone).

mod common;

use common::{assert_error, each_backend, sv, Server, ADMIN};
use serde_json::json;

#[tokio::test]
async fn cached_resolve_follows_every_write() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (_a, ta) = s.tenant("a").await;
        let h1 = s.create("/v1/hosts", ADMIN, json!({"name": "h1"})).await;
        let h2 = s.create("/v1/hosts", ADMIN, json!({"name": "h2"})).await;
        let h3 = s.create("/v1/hosts", ADMIN, json!({"name": "h3"})).await;
        let (agent1, agent3) = (sv(&h1, "credential"), sv(&h3, "credential"));
        let p1 = sv(&s.create("/v1/edge-pools", ADMIN, json!({"name": "p1", "nat": false})).await, "id");
        let e1 = s.create("/v1/edges", ADMIN, json!({"pool_id": p1, "name": "e1"})).await;
        let edge1 = sv(&e1, "credential");
        let nid = sv(&s.create("/v1/networks", &ta, json!({"name": "n", "cidr": "10.1.0.0/16"})).await, "id");
        let sub = sv(
            &s.create("/v1/subnets", &ta, json!({"network_id": nid, "name": "s", "cidr": "10.1.2.0/24"})).await,
            "id",
        );
        let on_h1 = s
            .create("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "a", "host_id": sv(&h1, "id"), "vip": "10.1.2.9"}))
            .await;
        let on_h2 = s
            .create("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "b", "host_id": sv(&h2, "id"), "vip": "10.1.2.10"}))
            .await;
        let route = s
            .create(
                "/v1/routes",
                &ta,
                json!({"network_id": nid, "destination": "0.0.0.0/0", "target": format!("pool:{p1}")}),
            )
            .await;
        let ask = json!({"network_id": nid, "ip": "10.1.2.10"});
        // Warm the cache (twice: the second answer comes from it).
        for _ in 0..2 {
            for who in [&agent1, &edge1] {
                let (st, r) = s.post("/v1/resolve", who, ask.clone()).await;
                assert_eq!(st, 200, "{r}");
                assert_eq!(r["node_id"], on_h2["id"]);
            }
        }
        // The agent's only node in the network goes away: it may no longer resolve there.
        assert_eq!(s.delete(&format!("/v1/nodes/{}", sv(&on_h1, "id")), &ta).await, 204);
        assert_error(&s.post("/v1/resolve", &agent1, ask.clone()).await, 404, "not_found", None);
        // The route to the edge's pool goes away: neither may the edge.
        assert_eq!(s.delete(&format!("/v1/routes/{}", sv(&route, "id")), &ta).await, 204);
        assert_error(&s.post("/v1/resolve", &edge1, ask.clone()).await, 404, "not_found", None);
        // A cached answer goes with its node.
        assert_eq!(s.post("/v1/resolve", ADMIN, ask.clone()).await.0, 200);
        assert_eq!(s.delete(&format!("/v1/nodes/{}", sv(&on_h2, "id")), &ta).await, 204);
        assert_error(&s.post("/v1/resolve", ADMIN, ask.clone()).await, 404, "not_found", None);
        // A cached "unknown address" goes when a node takes it.
        let again = s
            .create("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "c", "host_id": sv(&h3, "id"), "vip": "10.1.2.10"}))
            .await;
        let (st, r) = s.post("/v1/resolve", &agent3, ask.clone()).await;
        assert_eq!(st, 200, "{r}");
        assert_eq!(r["node_id"], again["id"]);
        // Revoked credentials stop at once: the edge's and the host's go with them.
        assert_eq!(s.delete(&format!("/v1/edges/{}", sv(&e1, "id")), ADMIN).await, 204);
        assert_error(&s.post("/v1/resolve", &edge1, ask.clone()).await, 401, "unauthorized", None);
        assert_eq!(s.post("/v1/resolve", &agent1, ask.clone()).await.0, 404);
        assert_eq!(s.delete(&format!("/v1/hosts/{}", sv(&h1, "id")), ADMIN).await, 204);
        assert_error(&s.post("/v1/resolve", &agent1, ask.clone()).await, 401, "unauthorized", None);
        s.stop().await;
    })
    .await;
}
