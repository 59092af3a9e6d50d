//! API tests through real HTTP against an in-process manager, on SQLite and (when
//! `CANOPY_TEST_POSTGRES_URL` is set) PostgreSQL.

mod common;

use common::{assert_error, each_backend, sv, Server, ADMIN};
use serde_json::{json, Value};

#[tokio::test]
async fn health_openapi_and_json_fallbacks() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (st, h) = s.call("GET", "/healthz", None, None).await;
        assert_eq!((st, h["status"].as_str()), (200, Some("ok")));
        let (st, doc) = s.call("GET", "/openapi.json", None, None).await;
        assert_eq!(st, 200);
        assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
        assert!(doc["paths"]["/v1/nodes"]["post"]["responses"]["409"].is_object());
        assert_error(
            &s.call("GET", "/v1/nope", Some(ADMIN), None).await,
            404,
            "not_found",
            None,
        );
        assert_error(
            &s.call("PUT", "/v1/tenants", Some(ADMIN), None).await,
            405,
            "method_not_allowed",
            None,
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn tenants_and_tokens() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (a, ta) = s.tenant("acme").await;
        assert!(a.starts_with("ten-") && a.len() == 16, "{a}");
        assert!(ta.starts_with("cnpt_"));
        assert_error(
            &s.post("/v1/tenants", ADMIN, json!({"name": "acme"})).await,
            409,
            "conflict",
            Some("name"),
        );
        let (b, _tb) = s.tenant("globex").await;
        let (_, all) = s.get("/v1/tenants", ADMIN).await;
        assert_eq!(all.as_array().unwrap().len(), 2);
        // A tenant sees only itself.
        let (st, mine) = s.get("/v1/tenants", &ta).await;
        assert_eq!(st, 200);
        assert_eq!(mine.as_array().unwrap().len(), 1);
        assert_eq!(mine[0]["id"], a.as_str());
        assert_eq!(s.get(&format!("/v1/tenants/{b}"), &ta).await.0, 404);
        // A second token, listed without secrets, then revoked.
        let t2 = s
            .create(
                &format!("/v1/tenants/{a}/tokens"),
                &ta,
                json!({"name": "ci"}),
            )
            .await;
        let tok2 = sv(&t2, "token");
        assert_eq!(s.get("/v1/tenants", &tok2).await.0, 200);
        let (_, list) = s.get(&format!("/v1/tenants/{a}/tokens"), &ta).await;
        let list = list.as_array().unwrap();
        assert_eq!(list.len(), 2);
        assert!(list.iter().all(|t| t.get("token").is_none()));
        assert_eq!(
            s.delete(&format!("/v1/tenants/{a}/tokens/{}", sv(&t2, "id")), &ta)
                .await,
            204
        );
        assert_error(
            &s.call("GET", "/v1/tenants", Some(&tok2), None).await,
            401,
            "unauthorized",
            None,
        );
        // A tenant with networks cannot be deleted; without, it can, and its tokens die.
        let net = s
            .create(
                "/v1/networks",
                &ta,
                json!({"name": "n", "cidr": "10.0.0.0/16"}),
            )
            .await;
        assert_error(
            &s.call("DELETE", &format!("/v1/tenants/{a}"), Some(ADMIN), None)
                .await,
            409,
            "in_use",
            None,
        );
        assert_eq!(
            s.delete(&format!("/v1/networks/{}", sv(&net, "id")), &ta)
                .await,
            204
        );
        assert_eq!(s.delete(&format!("/v1/tenants/{a}"), ADMIN).await, 204);
        assert_eq!(s.get("/v1/tenants", &ta).await.0, 401);
        assert_eq!(s.get(&format!("/v1/tenants/{a}"), ADMIN).await.0, 404);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn networks_and_subnets() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (a, ta) = s.tenant("a").await;
        let n1 = s
            .create(
                "/v1/networks",
                &ta,
                json!({"name": "prod", "cidr": "10.0.0.0/16"}),
            )
            .await;
        let n2 = s
            .create(
                "/v1/networks",
                ADMIN,
                json!({"name": "dev", "cidr": "10.0.0.0/16", "tenant_id": a}),
            )
            .await;
        assert_eq!(n1["tenant_id"], a.as_str());
        assert!(sv(&n1, "id").starts_with("net-"));
        let (v1, v2) = (n1["vni"].as_u64().unwrap(), n2["vni"].as_u64().unwrap());
        assert!(v1 >= 1 && v2 > v1 && v2 < 1 << 24, "{v1} {v2}");
        let net = sv(&n1, "id");
        let sub = s
            .create(
                "/v1/subnets",
                &ta,
                json!({"network_id": net, "name": "web", "cidr": "10.0.1.0/24"}),
            )
            .await;
        assert_eq!(sub["gateway"], "10.0.1.1");
        assert_eq!(
            sub["reserved"],
            json!(["10.0.1.0", "10.0.1.1", "10.0.1.255"])
        );
        let vni = v1 as u32;
        let want_mac = format!(
            "02:{:02x}:{:02x}:{:02x}:01:01",
            vni >> 16,
            (vni >> 8) & 0xff,
            vni & 0xff
        );
        assert_eq!(sub["gateway_mac"], want_mac.as_str());
        assert_error(
            &s.post(
                "/v1/subnets",
                &ta,
                json!({"network_id": net, "name": "web2", "cidr": "10.0.1.128/25"}),
            )
            .await,
            409,
            "overlap",
            Some("cidr"),
        );
        assert_error(
            &s.post(
                "/v1/subnets",
                &ta,
                json!({"network_id": net, "name": "web", "cidr": "10.0.2.0/24"}),
            )
            .await,
            409,
            "conflict",
            Some("name"),
        );
        assert_error(
            &s.post(
                "/v1/subnets",
                &ta,
                json!({"network_id": net, "name": "x", "cidr": "10.1.0.0/24"}),
            )
            .await,
            422,
            "outside_network",
            Some("cidr"),
        );
        s.create(
            "/v1/subnets",
            &ta,
            json!({"network_id": sv(&n2, "id"), "name": "web", "cidr": "10.0.1.0/24"}),
        )
        .await;
        let (_, l) = s.get(&format!("/v1/subnets?network_id={net}"), &ta).await;
        assert_eq!(l.as_array().unwrap().len(), 1);
        let (_, l) = s.get("/v1/subnets", &ta).await;
        assert_eq!(l.as_array().unwrap().len(), 2);
        let (st, one) = s.get(&format!("/v1/subnets/{}", sv(&sub, "id")), &ta).await;
        assert_eq!((st, &one), (200, &sub));
        let (st, one) = s.get(&format!("/v1/networks/{net}"), &ta).await;
        assert_eq!((st, &one), (200, &n1));
        assert_error(
            &s.call("DELETE", &format!("/v1/networks/{net}"), Some(&ta), None)
                .await,
            409,
            "in_use",
            None,
        );
        assert_eq!(
            s.delete(&format!("/v1/subnets/{}", sv(&sub, "id")), &ta)
                .await,
            204
        );
        assert_eq!(s.delete(&format!("/v1/networks/{net}"), &ta).await, 204);
        assert_eq!(s.get(&format!("/v1/networks/{net}"), &ta).await.0, 404);
        // Network ids are never reused.
        let n3 = s
            .create(
                "/v1/networks",
                &ta,
                json!({"name": "prod", "cidr": "10.9.0.0/20"}),
            )
            .await;
        assert!(n3["vni"].as_u64().unwrap() > v2);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn hosts_get_sequential_locators_never_reused() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let h1 = s.create("/v1/hosts", ADMIN, json!({"name": "h1"})).await;
        let h2 = s.create("/v1/hosts", ADMIN, json!({"name": "h2"})).await;
        assert_eq!(h1["locator"], "fd63:6e73:0:0:100::/72");
        assert_eq!(h2["locator"], "fd63:6e73:0:0:200::/72");
        let cred = sv(&h1, "credential");
        assert!(cred.starts_with("cnpa_"));
        // The agent sees its own host, nothing else.
        let (st, me) = s.get(&format!("/v1/hosts/{}", sv(&h1, "id")), &cred).await;
        assert_eq!(st, 200);
        assert!(me.get("credential").is_none());
        assert_eq!(
            s.get(&format!("/v1/hosts/{}", sv(&h2, "id")), &cred)
                .await
                .0,
            404
        );
        assert_eq!(s.get("/v1/hosts", &cred).await.0, 404);
        assert_error(
            &s.post("/v1/hosts", ADMIN, json!({"name": "h1"})).await,
            409,
            "conflict",
            Some("name"),
        );
        assert_eq!(
            s.delete(&format!("/v1/hosts/{}", sv(&h2, "id")), ADMIN)
                .await,
            204
        );
        let h3 = s.create("/v1/hosts", ADMIN, json!({"name": "h2"})).await;
        assert_eq!(h3["locator"], "fd63:6e73:0:0:300::/72");
        let (_, all) = s.get("/v1/hosts", ADMIN).await;
        assert_eq!(all.as_array().unwrap().len(), 2);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn locators_run_out_with_a_named_field() {
    each_backend(|db| async move {
        // A /70 holds locator indexes 1..=3.
        let s = Server::start_with(&db, "fd00:1::/70").await;
        for n in ["a", "b", "c"] {
            s.create("/v1/hosts", ADMIN, json!({"name": n})).await;
        }
        assert_error(
            &s.post("/v1/hosts", ADMIN, json!({"name": "d"})).await,
            409,
            "exhausted",
            Some("locator"),
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn nodes_vips_macs_and_release() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (_a, ta) = s.tenant("a").await;
        let h1 = sv(
            &s.create("/v1/hosts", ADMIN, json!({"name": "h1"})).await,
            "id",
        );
        let h2 = sv(
            &s.create("/v1/hosts", ADMIN, json!({"name": "h2"})).await,
            "id",
        );
        let net = s
            .create(
                "/v1/networks",
                &ta,
                json!({"name": "n", "cidr": "10.0.0.0/24"}),
            )
            .await;
        let vni = net["vni"].as_u64().unwrap() as u32;
        let sub = sv(
            &s.create(
                "/v1/subnets",
                &ta,
                json!({"network_id": sv(&net, "id"), "name": "s", "cidr": "10.0.0.0/29"}),
            )
            .await,
            "id",
        );
        let n1 = s
            .create(
                "/v1/nodes",
                &ta,
                json!({"subnet_id": sub, "name": "vm1", "host_id": h1}),
            )
            .await;
        assert_eq!(n1["vip"], "10.0.0.2");
        assert_eq!(n1["host_id"], h1.as_str());
        assert_eq!(
            n1["mac"],
            format!(
                "02:{:02x}:{:02x}:{:02x}:00:02",
                vni >> 16,
                (vni >> 8) & 0xff,
                vni & 0xff
            )
            .as_str()
        );
        // Placement without host_id: the emptier host.
        let n2 = s
            .create("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "vm2"}))
            .await;
        assert_eq!(
            (n2["vip"].as_str(), n2["host_id"].as_str()),
            (Some("10.0.0.3"), Some(h2.as_str()))
        );
        let n5 = s
            .create(
                "/v1/nodes",
                &ta,
                json!({"subnet_id": sub, "name": "vm5", "vip": "10.0.0.5"}),
            )
            .await;
        assert_error(
            &s.post(
                "/v1/nodes",
                &ta,
                json!({"subnet_id": sub, "name": "x", "vip": "10.0.0.5"}),
            )
            .await,
            409,
            "vip_taken",
            Some("vip"),
        );
        assert_error(
            &s.post(
                "/v1/nodes",
                &ta,
                json!({"subnet_id": sub, "name": "x", "vip": "10.0.0.9"}),
            )
            .await,
            422,
            "vip_outside_subnet",
            Some("vip"),
        );
        for reserved in ["10.0.0.0", "10.0.0.1", "10.0.0.7"] {
            assert_error(
                &s.post(
                    "/v1/nodes",
                    &ta,
                    json!({"subnet_id": sub, "name": "x", "vip": reserved}),
                )
                .await,
                422,
                "vip_reserved",
                Some("vip"),
            );
        }
        assert_error(
            &s.post("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "vm1"}))
                .await,
            409,
            "conflict",
            Some("name"),
        );
        assert_error(
            &s.post(
                "/v1/nodes",
                &ta,
                json!({"subnet_id": sub, "name": "x", "host_id": "host-000000000000"}),
            )
            .await,
            404,
            "not_found",
            Some("host_id"),
        );
        // Fill the /29: .4 and .6 are left.
        let n4 = s
            .create("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "vm4"}))
            .await;
        assert_eq!(n4["vip"], "10.0.0.4");
        let n6 = s
            .create("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "vm6"}))
            .await;
        assert_eq!(n6["vip"], "10.0.0.6");
        assert_error(
            &s.post("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "vm7"}))
                .await,
            409,
            "exhausted",
            Some("vip"),
        );
        // Deleting frees the VIP, which the next node gets.
        assert_eq!(
            s.delete(&format!("/v1/nodes/{}", sv(&n2, "id")), &ta).await,
            204
        );
        let n7 = s
            .create("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "vm7"}))
            .await;
        assert_eq!(n7["vip"], "10.0.0.3");
        let (_, l) = s.get(&format!("/v1/nodes?host_id={h1}"), &ta).await;
        assert!(l.as_array().unwrap().iter().any(|n| n["id"] == n1["id"]));
        let (st, one) = s.get(&format!("/v1/nodes/{}", sv(&n5, "id")), &ta).await;
        assert_eq!((st, &one), (200, &n5));
        // Hosts and subnets with nodes cannot be deleted.
        assert_error(
            &s.call("DELETE", &format!("/v1/hosts/{h1}"), Some(ADMIN), None)
                .await,
            409,
            "in_use",
            None,
        );
        assert_error(
            &s.call("DELETE", &format!("/v1/subnets/{sub}"), Some(&ta), None)
                .await,
            409,
            "in_use",
            None,
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn concurrent_writes_are_serialised() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (_a, ta) = s.tenant("a").await;
        s.create("/v1/hosts", ADMIN, json!({"name": "h"})).await;
        let net = s
            .create(
                "/v1/networks",
                &ta,
                json!({"name": "n", "cidr": "10.0.0.0/24"}),
            )
            .await;
        let sub = sv(
            &s.create(
                "/v1/subnets",
                &ta,
                json!({"network_id": sv(&net, "id"), "name": "s", "cidr": "10.0.0.0/24"}),
            )
            .await,
            "id",
        );
        let rev0 = s.store.revision().await.unwrap();
        let mut set = tokio::task::JoinSet::new();
        let s = std::sync::Arc::new(s);
        for k in 0..24 {
            let s = s.clone();
            let (ta, sub) = (ta.clone(), sub.clone());
            set.spawn(async move {
                s.post(
                    "/v1/nodes",
                    &ta,
                    json!({"subnet_id": sub, "name": format!("vm{k}")}),
                )
                .await
            });
        }
        let mut vips = Vec::new();
        while let Some(r) = set.join_next().await {
            let (st, v) = r.unwrap();
            assert_eq!(st, 201, "{v}");
            vips.push(sv(&v, "vip"));
        }
        vips.sort();
        vips.dedup();
        assert_eq!(vips.len(), 24);
        assert_eq!(s.store.revision().await.unwrap(), rev0 + 24);
        let s = std::sync::Arc::into_inner(s).unwrap();
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn edge_pools_and_edges() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (_a, ta) = s.tenant("a").await;
        let p1 = s
            .create(
                "/v1/edge-pools",
                ADMIN,
                json!({"name": "inet", "public_ranges": ["198.51.100.0/28"]}),
            )
            .await;
        assert_eq!(p1["mode"], "direct");
        assert_eq!(p1["nat"], true);
        assert_eq!(p1["anycast_locator"], serde_json::Value::Null);
        assert_eq!(p1["hash_fields"].as_array().unwrap().len(), 6);
        let p2 = s
            .create(
                "/v1/edge-pools",
                ADMIN,
                json!({"name": "vpn", "mode": "anycast", "nat": false, "split_large_flows": true,
                       "hash_fields": ["src_ip", "dst_ip"], "load_aware": true}),
            )
            .await;
        assert_eq!(p2["anycast_locator"], "fd63:6e73:0:0:100::/72");
        assert_error(
            &s.post(
                "/v1/edge-pools",
                ADMIN,
                json!({"name": "x", "public_ranges": ["198.51.100.8/29"]}),
            )
            .await,
            409,
            "overlap",
            Some("public_ranges[0]"),
        );
        // Tenants read pools; they do not write them.
        assert_eq!(s.get("/v1/edge-pools", &ta).await.0, 200);
        assert_eq!(
            s.get(&format!("/v1/edge-pools/{}", sv(&p1, "id")), &ta)
                .await
                .0,
            200
        );
        assert_eq!(
            s.post("/v1/edge-pools", &ta, json!({"name": "mine", "nat": false}))
                .await
                .0,
            404
        );
        let e1 = s
            .create(
                "/v1/edges",
                ADMIN,
                json!({"pool_id": sv(&p1, "id"), "name": "e1"}),
            )
            .await;
        assert_eq!(
            (e1["weight"].as_u64(), e1["state"].as_str()),
            (Some(100), Some("active"))
        );
        assert_eq!(e1["locator"], "fd63:6e73:0:0:200::/72");
        assert!(sv(&e1, "credential").starts_with("cnpe_"));
        let eid = sv(&e1, "id");
        let (st, e) = s
            .call(
                "PATCH",
                &format!("/v1/edges/{eid}"),
                Some(ADMIN),
                Some(json!({"state": "draining", "weight": 7})),
            )
            .await;
        assert_eq!(
            (st, e["state"].as_str(), e["weight"].as_u64()),
            (200, Some("draining"), Some(7))
        );
        assert_error(
            &s.call(
                "PATCH",
                &format!("/v1/edges/{eid}"),
                Some(ADMIN),
                Some(json!({"weight": 0})),
            )
            .await,
            422,
            "out_of_range",
            Some("weight"),
        );
        // Health and load reports: by the edge itself, kept on the edge.
        assert_eq!(e1["last_report"], Value::Null);
        let cred = sv(&e1, "credential");
        let (st, e) = s
            .post(
                &format!("/v1/edges/{eid}/report"),
                &cred,
                json!({"healthy": true, "load_percent": 42}),
            )
            .await;
        assert_eq!(st, 200, "{e}");
        assert_eq!(e["last_report"]["healthy"], true);
        assert_eq!(e["last_report"]["load_percent"], 42);
        assert!(e["last_report"]["at"].as_str().unwrap().ends_with('Z'));
        assert_error(
            &s.post(
                &format!("/v1/edges/{eid}/report"),
                &cred,
                json!({"healthy": true, "load_percent": 101}),
            )
            .await,
            422,
            "out_of_range",
            Some("load_percent"),
        );
        assert_eq!(
            s.post(
                &format!("/v1/edges/{eid}/report"),
                &ta,
                json!({"healthy": false, "load_percent": 1}),
            )
            .await
            .0,
            404
        );
        let (st, e) = s
            .get(&format!("/v1/edges/{eid}"), &sv(&e1, "credential"))
            .await;
        assert_eq!(e["last_report"]["load_percent"], 42);
        assert_eq!((st, e["state"].as_str()), (200, Some("draining")));
        let (_, l) = s
            .get(&format!("/v1/edges?pool_id={}", sv(&p1, "id")), ADMIN)
            .await;
        assert_eq!(l.as_array().unwrap().len(), 1);
        assert_error(
            &s.call(
                "DELETE",
                &format!("/v1/edge-pools/{}", sv(&p1, "id")),
                Some(ADMIN),
                None,
            )
            .await,
            409,
            "in_use",
            None,
        );
        assert_eq!(s.delete(&format!("/v1/edges/{eid}"), ADMIN).await, 204);
        assert_eq!(s.get("/v1/hosts", &sv(&e1, "credential")).await.0, 401);
        assert_eq!(
            s.delete(&format!("/v1/edge-pools/{}", sv(&p1, "id")), ADMIN)
                .await,
            204
        );
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn routes_link_networks_to_pools() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (_a, ta) = s.tenant("a").await;
        let pool = sv(
            &s.create("/v1/edge-pools", ADMIN, json!({"name": "p", "public_ranges": ["203.0.113.0/24"]}))
                .await,
            "id",
        );
        let net = sv(
            &s.create("/v1/networks", &ta, json!({"name": "n", "cidr": "10.0.0.0/16"})).await,
            "id",
        );
        let r = s
            .create(
                "/v1/routes",
                &ta,
                json!({"network_id": net, "destination": "0.0.0.0/0", "target": "edge_pool", "edge_pool_id": pool}),
            )
            .await;
        assert_eq!(r["target"], "edge_pool");
        assert_error(
            &s.post("/v1/routes", &ta, json!({"network_id": net, "destination": "0.0.0.0/0", "target": "blackhole"}))
                .await,
            409,
            "conflict",
            Some("destination"),
        );
        assert_error(
            &s.post("/v1/routes", &ta, json!({"network_id": net, "destination": "10.0.5.0/24", "target": "blackhole"}))
                .await,
            422,
            "local_destination",
            Some("destination"),
        );
        assert_error(
            &s.post("/v1/routes", &ta, json!({"network_id": net, "destination": "192.168.0.0/16", "target": "edge_pool"}))
                .await,
            422,
            "required",
            Some("edge_pool_id"),
        );
        assert_error(
            &s.post("/v1/routes", &ta, json!({"network_id": net, "destination": "192.168.0.0/16", "target": "edge_pool", "edge_pool_id": "pool-000000000000"}))
                .await,
            404,
            "not_found",
            Some("edge_pool_id"),
        );
        let bh = s
            .create("/v1/routes", &ta, json!({"network_id": net, "destination": "192.168.0.0/16", "target": "blackhole"}))
            .await;
        let (_, l) = s.get(&format!("/v1/routes?network_id={net}"), &ta).await;
        assert_eq!(l.as_array().unwrap().len(), 2);
        assert_error(
            &s.call("DELETE", &format!("/v1/edge-pools/{pool}"), Some(ADMIN), None).await,
            409,
            "in_use",
            None,
        );
        assert_eq!(s.delete(&format!("/v1/routes/{}", sv(&bh, "id")), &ta).await, 204);
        assert_eq!(s.get(&format!("/v1/routes/{}", sv(&bh, "id")), &ta).await.0, 404);
        assert_eq!(s.get(&format!("/v1/routes/{}", sv(&r, "id")), &ta).await.0, 200);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn resolve_is_authorised_and_counted() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (_a, ta) = s.tenant("a").await;
        let h1 = s.create("/v1/hosts", ADMIN, json!({"name": "h1"})).await;
        let h2 = s.create("/v1/hosts", ADMIN, json!({"name": "h2"})).await;
        let (agent1, agent2) = (sv(&h1, "credential"), sv(&h2, "credential"));
        let p1 = sv(&s.create("/v1/edge-pools", ADMIN, json!({"name": "p1", "nat": false})).await, "id");
        let p2 = sv(&s.create("/v1/edge-pools", ADMIN, json!({"name": "p2", "nat": false})).await, "id");
        let edge1 = sv(&s.create("/v1/edges", ADMIN, json!({"pool_id": p1, "name": "e1"})).await, "credential");
        let edge2 = sv(&s.create("/v1/edges", ADMIN, json!({"pool_id": p2, "name": "e2"})).await, "credential");
        let net = s.create("/v1/networks", &ta, json!({"name": "n", "cidr": "10.1.0.0/16"})).await;
        let nid = sv(&net, "id");
        let sub = sv(
            &s.create("/v1/subnets", &ta, json!({"network_id": nid, "name": "s", "cidr": "10.1.2.0/24"})).await,
            "id",
        );
        let node = s
            .create("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "vm", "host_id": sv(&h1, "id"), "vip": "10.1.2.9"}))
            .await;
        s.create(
            "/v1/routes",
            &ta,
            json!({"network_id": nid, "destination": "0.0.0.0/0", "target": "edge_pool", "edge_pool_id": p1}),
        )
        .await;
        let ask = json!({"network_id": nid, "ip": "10.1.2.9"});
        // The agent hosting a node of the network, the pool's edge and the admin may resolve.
        for who in [&agent1, &edge1, &ADMIN.to_string()] {
            let (st, r) = s.post("/v1/resolve", who, ask.clone()).await;
            assert_eq!(st, 200, "{r}");
            assert_eq!(r["node_id"], node["id"]);
            assert_eq!(r["mac"], node["mac"]);
            assert_eq!(r["locator"], h1["locator"]);
            let vni = net["vni"].as_u64().unwrap();
            let want = model::SubstrateAddr::new(
                sv(&h1, "locator").parse().unwrap(),
                model::NetworkId::new(vni as u32).unwrap(),
                "10.1.2.9".parse().unwrap(),
            );
            assert_eq!(r["substrate_address"], want.to_addr().to_string().as_str());
        }
        // An agent with no node there, an edge of another pool: refused like a miss.
        for who in [&agent2, &edge2] {
            assert_error(&s.post("/v1/resolve", who, ask.clone()).await, 404, "not_found", None);
        }
        // A tenant may not resolve at all.
        assert_eq!(s.post("/v1/resolve", &ta, ask.clone()).await.0, 404);
        // Authorised, but no such address.
        assert_error(
            &s.post("/v1/resolve", &agent1, json!({"network_id": nid, "ip": "10.1.2.10"})).await,
            404,
            "not_found",
            None,
        );
        assert_error(
            &s.post("/v1/resolve", &agent1, json!({"network_id": nid, "ip": "10.1.2"})).await,
            422,
            "invalid_ip",
            Some("ip"),
        );
        let (st, stats) = s.get("/v1/stats", ADMIN).await;
        assert_eq!(st, 200);
        assert_eq!(stats["resolve_ok"], 3);
        assert_eq!(stats["resolve_refused"], 2);
        assert_eq!(stats["resolve_not_found"], 1);
        assert_eq!(s.get("/v1/stats", &ta).await.0, 404);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn every_write_bumps_the_revision_and_logs_a_change() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        assert_eq!(s.store.revision().await.unwrap(), 0);
        let (_a, ta) = s.tenant("a").await; // tenant + token: 2 writes
        let net = s
            .create(
                "/v1/networks",
                &ta,
                json!({"name": "n", "cidr": "10.0.0.0/16"}),
            )
            .await;
        // A refused write changes nothing.
        assert_eq!(
            s.post(
                "/v1/networks",
                &ta,
                json!({"name": "n", "cidr": "10.0.0.0/16"})
            )
            .await
            .0,
            409
        );
        assert_eq!(
            s.delete(&format!("/v1/networks/{}", sv(&net, "id")), &ta)
                .await,
            204
        );
        assert_eq!(s.store.revision().await.unwrap(), 4);
        let rows: Vec<(i64, String, String, Option<String>, String)> = {
            use sqlx::Row;
            sqlx::query(
                "SELECT revision, kind, op, network_id, body FROM changes ORDER BY revision, seq",
            )
            .fetch_all(s.store.pool())
            .await
            .unwrap()
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2), r.get(3), r.get(4)))
            .collect()
        };
        let kinds: Vec<(i64, &str, &str)> = rows
            .iter()
            .map(|r| (r.0, r.1.as_str(), r.2.as_str()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                (1, "tenant", "create"),
                (2, "token", "create"),
                (3, "network", "create"),
                (4, "network", "delete")
            ]
        );
        assert_eq!(rows[2].3.as_deref(), Some(sv(&net, "id").as_str()));
        let body: serde_json::Value = serde_json::from_str(&rows[2].4).unwrap();
        assert_eq!(body, net);
        // Secrets never reach the change log.
        assert!(rows.iter().all(|r| !r.4.contains("cnpt_")));
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn data_and_ids_survive_a_restart() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (a, ta) = s.tenant("a").await;
        let h1 = s.create("/v1/hosts", ADMIN, json!({"name": "h1"})).await;
        let h2 = s.create("/v1/hosts", ADMIN, json!({"name": "h2"})).await;
        let net = s
            .create(
                "/v1/networks",
                &ta,
                json!({"name": "n", "cidr": "10.0.0.0/16"}),
            )
            .await;
        let sub = s
            .create(
                "/v1/subnets",
                &ta,
                json!({"network_id": sv(&net, "id"), "name": "s", "cidr": "10.0.0.0/24"}),
            )
            .await;
        let node = s
            .create(
                "/v1/nodes",
                &ta,
                json!({"subnet_id": sv(&sub, "id"), "name": "vm", "host_id": sv(&h1, "id")}),
            )
            .await;
        assert_eq!(
            s.delete(&format!("/v1/hosts/{}", sv(&h2, "id")), ADMIN)
                .await,
            204
        );
        let rev = s.store.revision().await.unwrap();
        s.stop().await;

        let s = Server::start(&db).await;
        assert_eq!(s.store.revision().await.unwrap(), rev);
        // The tenant token and the agent credential still work; every object is unchanged.
        let (st, t) = s.get(&format!("/v1/tenants/{a}"), &ta).await;
        assert_eq!((st, t["name"].as_str()), (200, Some("a")));
        assert_eq!(
            s.get(&format!("/v1/networks/{}", sv(&net, "id")), &ta)
                .await
                .1,
            net
        );
        assert_eq!(
            s.get(&format!("/v1/subnets/{}", sv(&sub, "id")), &ta)
                .await
                .1,
            sub
        );
        assert_eq!(
            s.get(&format!("/v1/nodes/{}", sv(&node, "id")), &ta)
                .await
                .1,
            node
        );
        let (st, r) = s
            .post(
                "/v1/resolve",
                &sv(&h1, "credential"),
                json!({"network_id": sv(&net, "id"), "ip": sv(&node, "vip")}),
            )
            .await;
        assert_eq!((st, r["node_id"].as_str()), (200, node["id"].as_str()));
        // Counters continue: no locator or network id is handed out twice.
        let h3 = s.create("/v1/hosts", ADMIN, json!({"name": "h3"})).await;
        assert_eq!(h3["locator"], "fd63:6e73:0:0:300::/72");
        let n2 = s
            .create(
                "/v1/networks",
                &ta,
                json!({"name": "n2", "cidr": "10.0.0.0/16"}),
            )
            .await;
        assert!(n2["vni"].as_u64() > net["vni"].as_u64());
        s.stop().await;

        // A different substrate prefix is refused: the stored locators would not fit.
        let store = manager::open(&db).await.unwrap();
        let err = manager::AppState::new(
            store.clone(),
            Some(ADMIN.into()),
            "fd00::/32".parse().unwrap(),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(err, manager::StartError::PrefixChanged { .. }),
            "{err}"
        );
        store.close().await;
    })
    .await;
}

#[tokio::test]
async fn generated_admin_token_is_kept_across_restarts() {
    each_backend(|db| async move {
        let prefix: manager::SubstratePrefix = manager::SubstratePrefix::DEFAULT.parse().unwrap();
        let store = manager::open(&db).await.unwrap();
        let (st1, generated) = manager::AppState::new(store.clone(), None, prefix)
            .await
            .unwrap();
        let token = generated.expect("generated on first start");
        assert_eq!(st1.admin_hash, manager::auth::hash_secret(&token));
        store.close().await;
        let store = manager::open(&db).await.unwrap();
        let (st2, again) = manager::AppState::new(store.clone(), None, prefix)
            .await
            .unwrap();
        assert!(again.is_none());
        assert_eq!(st2.admin_hash, st1.admin_hash);
        store.close().await;
    })
    .await;
}

#[tokio::test]
async fn sqlite_store_is_wal_with_full_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("fresh.db");
    assert!(!path.exists());
    let store = manager::open(&format!("sqlite:{}", path.display()))
        .await
        .unwrap();
    assert!(path.exists(), "created on first start");
    let mut conn = store.pool().acquire().await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let sync: i64 = sqlx::query_scalar("PRAGMA synchronous")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    let fk: i64 = sqlx::query_scalar("PRAGMA foreign_keys")
        .fetch_one(&mut *conn)
        .await
        .unwrap();
    assert_eq!((mode.as_str(), sync, fk), ("wal", 2, 1));
    drop(conn);
    store.close().await;
    assert!(matches!(
        manager::open("mysql://x").await,
        Err(manager::store::StoreError::UnsupportedUrl(_))
    ));
}
