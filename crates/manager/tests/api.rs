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
        let (_b, tb) = s.tenant("b").await;
        let pool = sv(
            &s.create("/v1/edge-pools", ADMIN, json!({"name": "p", "public_ranges": ["203.0.113.0/24"]}))
                .await,
            "id",
        );
        let vpn = sv(&s.create("/v1/edge-pools", ADMIN, json!({"name": "vpn", "nat": false})).await, "id");
        let net = sv(
            &s.create("/v1/networks", &ta, json!({"name": "n", "cidr": "10.0.0.0/16"})).await,
            "id",
        );
        let net2 = sv(&s.create("/v1/networks", &ta, json!({"name": "n2", "cidr": "10.1.0.0/16"})).await, "id");
        let sub = sv(&s.create("/v1/subnets", &ta, json!({"network_id": net, "name": "s", "cidr": "10.0.1.0/24"})).await, "id");
        let sub2 = sv(&s.create("/v1/subnets", &ta, json!({"network_id": net2, "name": "s", "cidr": "10.1.1.0/24"})).await, "id");
        let r = s
            .create(
                "/v1/routes",
                &ta,
                json!({"network_id": net, "destination": "0.0.0.0/0", "target": format!("pool:{pool}")}),
            )
            .await;
        assert_eq!(r["target"], format!("pool:{pool}"));
        assert_eq!(r["edge_pool_id"], pool.as_str());
        assert!(r["subnet_id"].is_null() && r["peering_id"].is_null());
        // A pool is shared infrastructure: any tenant may route to it (VPN-like CIDR).
        let other = s
            .create("/v1/routes", &ta, json!({"network_id": net, "destination": "192.168.0.0/16", "target": format!("pool:{vpn}")}))
            .await;
        assert_eq!(other["edge_pool_id"], vpn.as_str());
        // The same destination again in the network's table: 409; in a subnet's table: fine
        // (it is looked up first, longest prefix within it).
        assert_error(
            &s.post("/v1/routes", &ta, json!({"network_id": net, "destination": "0.0.0.0/0", "target": "blackhole"}))
                .await,
            409,
            "conflict",
            Some("destination"),
        );
        let in_sub = s
            .create("/v1/routes", &ta, json!({"network_id": net, "subnet_id": sub, "destination": "0.0.0.0/0", "target": "blackhole"}))
            .await;
        assert_eq!(in_sub["subnet_id"], sub.as_str());
        assert_error(
            &s.post("/v1/routes", &ta, json!({"network_id": net, "subnet_id": sub, "destination": "0.0.0.0/0", "target": format!("pool:{pool}")}))
                .await,
            409,
            "conflict",
            Some("destination"),
        );
        let (_, l) = s.get(&format!("/v1/routes?subnet_id={sub}"), &ta).await;
        assert_eq!(l.as_array().unwrap().len(), 1);
        assert_error(
            &s.post("/v1/routes", &ta, json!({"network_id": net, "subnet_id": sub2, "destination": "0.0.0.0/0", "target": "blackhole"}))
                .await,
            422,
            "incompatible",
            Some("subnet_id"),
        );
        assert_error(
            &s.post("/v1/routes", &tb, json!({"network_id": net, "destination": "8.8.8.0/24", "target": "blackhole"}))
                .await,
            404,
            "not_found",
            Some("network_id"),
        );
        assert_error(
            &s.post("/v1/routes", &ta, json!({"network_id": net, "destination": "10.0.5.0/24", "target": "blackhole"}))
                .await,
            422,
            "local_destination",
            Some("destination"),
        );
        for (target, status, code) in [
            ("local", 422, "implicit_local"),
            ("edge_pool", 422, "invalid_target"),
            ("pool:", 422, "invalid_target"),
            ("internet", 422, "invalid_target"),
            ("pool:pool-000000000000", 404, "not_found"),
            ("peering:peer-000000000000", 404, "not_found"),
        ] {
            assert_error(
                &s.post("/v1/routes", &ta, json!({"network_id": net, "destination": "172.16.0.0/12", "target": target}))
                    .await,
                status,
                code,
                Some("target"),
            );
        }
        assert_error(
            &s.post("/v1/routes", &ta, json!({"network_id": net, "destination": "172.16.0.1/12", "target": "blackhole"}))
                .await,
            422,
            "invalid_cidr",
            Some("destination"),
        );
        let bh = s
            .create("/v1/routes", &ta, json!({"network_id": net, "destination": "172.16.0.0/12", "target": "blackhole"}))
            .await;
        let (_, l) = s.get(&format!("/v1/routes?network_id={net}"), &ta).await;
        assert_eq!(l.as_array().unwrap().len(), 4);
        assert_error(
            &s.call("DELETE", &format!("/v1/edge-pools/{pool}"), Some(ADMIN), None).await,
            409,
            "in_use",
            None,
        );
        assert_error(&s.call("DELETE", &format!("/v1/subnets/{sub}"), Some(&ta), None).await, 409, "in_use", None);
        assert_eq!(s.delete(&format!("/v1/routes/{}", sv(&in_sub, "id")), &ta).await, 204);
        assert_eq!(s.delete(&format!("/v1/subnets/{sub}"), &ta).await, 204);
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
            json!({"network_id": nid, "destination": "0.0.0.0/0", "target": format!("pool:{p1}")}),
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
        // The same on /metrics, for Prometheus; the first answer was read from the store,
        // the next two from the cache, and so was the miss (from the store).
        assert_eq!(s.metric("canopy_manager_resolves_total{result=\"ok\"}").await, 3);
        assert_eq!(s.metric("canopy_manager_resolves_total{result=\"refused\"}").await, 2);
        assert_eq!(s.metric("canopy_manager_resolves_total{result=\"not_found\"}").await, 1);
        assert_eq!(s.metric("canopy_manager_resolve_cache_total{result=\"hit\"}").await, 2);
        assert_eq!(s.metric("canopy_manager_resolve_cache_total{result=\"miss\"}").await, 2);
        assert_eq!(s.metric("canopy_manager_revision").await, s.store.revision().await.unwrap());
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
                // The network's default security group comes and goes with it.
                (3, "security_group", "create"),
                (4, "security_group", "delete"),
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

#[tokio::test]
async fn elastic_ips_allocate_associate_release() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (ta_id, ta) = s.tenant("a").await;
        let (tb_id, tb) = s.tenant("b").await;
        let h1 = sv(
            &s.create("/v1/hosts", ADMIN, json!({"name": "h1"})).await,
            "id",
        );
        // A /30: two usable addresses (.1 and .2).
        let pool = sv(
            &s.create(
                "/v1/edge-pools",
                ADMIN,
                json!({"name": "p", "public_ranges": ["198.51.100.0/30"]}),
            )
            .await,
            "id",
        );
        let net = sv(
            &s.create(
                "/v1/networks",
                &ta,
                json!({"name": "n", "cidr": "10.0.0.0/16"}),
            )
            .await,
            "id",
        );
        let sub = sv(
            &s.create(
                "/v1/subnets",
                &ta,
                json!({"network_id": net, "name": "s", "cidr": "10.0.0.0/24"}),
            )
            .await,
            "id",
        );
        let vm = s
            .create(
                "/v1/nodes",
                &ta,
                json!({"subnet_id": sub, "name": "vm", "host_id": h1}),
            )
            .await;
        let vm2 = sv(
            &s.create(
                "/v1/nodes",
                &ta,
                json!({"subnet_id": sub, "name": "vm2", "host_id": h1}),
            )
            .await,
            "id",
        );
        let bnet = sv(
            &s.create(
                "/v1/networks",
                &tb,
                json!({"name": "n", "cidr": "10.0.0.0/16"}),
            )
            .await,
            "id",
        );
        let bsub = sv(
            &s.create(
                "/v1/subnets",
                &tb,
                json!({"network_id": bnet, "name": "s", "cidr": "10.0.0.0/24"}),
            )
            .await,
            "id",
        );
        let bvm = sv(
            &s.create(
                "/v1/nodes",
                &tb,
                json!({"subnet_id": bsub, "name": "vm", "host_id": h1}),
            )
            .await,
            "id",
        );

        // Allocation (admin): lowest free, or the given one; bad input names the field.
        let e1 = s
            .create(
                "/v1/elastic-ips",
                ADMIN,
                json!({"pool_id": pool, "tenant_id": ta_id}),
            )
            .await;
        assert_eq!(e1["address"], "198.51.100.1");
        assert!(e1["node_id"].is_null());
        let e1 = sv(&e1, "id");
        for (body, status, code, field) in [
            (
                json!({"pool_id": pool, "tenant_id": ta_id, "address": "198.51.100.1"}),
                409,
                "address_taken",
                Some("address"),
            ),
            (
                json!({"pool_id": pool, "tenant_id": ta_id, "address": "198.51.100.3"}),
                422,
                "outside_pool",
                Some("address"),
            ),
            (
                json!({"pool_id": pool, "tenant_id": ta_id, "address": "203.0.113.1"}),
                422,
                "outside_pool",
                Some("address"),
            ),
            (
                json!({"pool_id": pool, "tenant_id": ta_id, "address": "nope"}),
                422,
                "invalid_ip",
                Some("address"),
            ),
            (
                json!({"pool_id": "pool-000000000000", "tenant_id": ta_id}),
                404,
                "not_found",
                Some("pool_id"),
            ),
            (
                json!({"pool_id": pool, "tenant_id": "ten-000000000000"}),
                404,
                "not_found",
                Some("tenant_id"),
            ),
            (
                json!({"pool_id": pool}),
                400,
                "missing_field",
                Some("tenant_id"),
            ),
        ] {
            assert_error(
                &s.post("/v1/elastic-ips", ADMIN, body).await,
                status,
                code,
                field,
            );
        }
        // Tenants do not allocate.
        assert_error(
            &s.post(
                "/v1/elastic-ips",
                &ta,
                json!({"pool_id": pool, "tenant_id": ta_id}),
            )
            .await,
            404,
            "not_found",
            None,
        );
        let e2 = s
            .create(
                "/v1/elastic-ips",
                ADMIN,
                json!({"pool_id": pool, "tenant_id": ta_id, "address": "198.51.100.2"}),
            )
            .await;
        let e2 = sv(&e2, "id");
        assert_error(
            &s.post(
                "/v1/elastic-ips",
                ADMIN,
                json!({"pool_id": pool, "tenant_id": tb_id}),
            )
            .await,
            409,
            "exhausted",
            Some("pool_id"),
        );

        // Visibility: A and the admin; B neither sees nor touches them.
        assert_eq!(
            s.get("/v1/elastic-ips", &ta)
                .await
                .1
                .as_array()
                .unwrap()
                .len(),
            2
        );
        assert_eq!(
            s.get("/v1/elastic-ips", &tb)
                .await
                .1
                .as_array()
                .unwrap()
                .len(),
            0
        );
        assert_eq!(s.get(&format!("/v1/elastic-ips/{e1}"), &tb).await.0, 404);
        let assoc = |id: &str| format!("/v1/elastic-ips/{id}/associate");
        let disassoc = |id: &str| format!("/v1/elastic-ips/{id}/disassociate");
        assert_error(
            &s.post(&assoc(&e1), &tb, json!({"node_id": bvm})).await,
            404,
            "not_found",
            None,
        );
        // A may not bind its address to B's node, nor to a node that does not exist.
        assert_error(
            &s.post(&assoc(&e1), &ta, json!({"node_id": bvm})).await,
            404,
            "not_found",
            Some("node_id"),
        );
        assert_error(
            &s.post(&assoc(&e1), &ta, json!({"node_id": "node-000000000000"}))
                .await,
            404,
            "not_found",
            Some("node_id"),
        );
        assert_error(
            &s.post(&assoc(&e1), &ta, json!({"node": sv(&vm, "id")}))
                .await,
            400,
            "unknown_field",
            Some("node"),
        );

        // 1:1: one node per address, one address per node.
        let (st, a1) = s
            .post(&assoc(&e1), &ta, json!({"node_id": sv(&vm, "id")}))
            .await;
        assert_eq!(st, 200, "{a1}");
        assert_eq!(a1["node_id"], vm["id"]);
        assert_eq!(a1["network_id"], net.as_str());
        assert_eq!(a1["host_id"], h1.as_str());
        assert_error(
            &s.post(&assoc(&e2), &ta, json!({"node_id": sv(&vm, "id")}))
                .await,
            409,
            "conflict",
            Some("node_id"),
        );
        assert_error(
            &s.post(&assoc(&e1), &ta, json!({"node_id": vm2})).await,
            409,
            "in_use",
            None,
        );
        assert_error(
            &s.call("DELETE", &format!("/v1/elastic-ips/{e1}"), Some(&ta), None)
                .await,
            409,
            "in_use",
            None,
        );
        // Disassociate, then again (409).
        let (st, d) = s.call("POST", &disassoc(&e1), Some(&ta), None).await;
        assert_eq!(st, 200, "{d}");
        assert!(d["node_id"].is_null() && d["host_id"].is_null());
        assert_error(
            &s.call("POST", &disassoc(&e1), Some(&ta), None).await,
            409,
            "not_associated",
            None,
        );
        // Deleting a node frees its elastic IP.
        assert_eq!(
            s.post(&assoc(&e2), &ta, json!({"node_id": vm2})).await.0,
            200
        );
        assert_eq!(s.delete(&format!("/v1/nodes/{vm2}"), &ta).await, 204);
        assert!(s.get(&format!("/v1/elastic-ips/{e2}"), &ta).await.1["node_id"].is_null());
        // The association and the disassociation are in the change log.
        let ops: Vec<(String, String)> = sqlx::query_as(
            "SELECT op, object_id FROM changes WHERE kind = 'elastic_ip' ORDER BY revision, seq",
        )
        .fetch_all(s.store.pool())
        .await
        .unwrap();
        let ops: Vec<&str> = ops.iter().map(|(op, _)| op.as_str()).collect();
        assert_eq!(
            ops,
            ["create", "create", "update", "update", "update", "update"]
        );
        // Release (tenant or admin); a tenant with addresses cannot be deleted; a pool with
        // addresses neither.
        assert_error(
            &s.call(
                "DELETE",
                &format!("/v1/edge-pools/{pool}"),
                Some(ADMIN),
                None,
            )
            .await,
            409,
            "in_use",
            None,
        );
        assert_eq!(s.delete(&format!("/v1/elastic-ips/{e1}"), &tb).await, 404);
        assert_eq!(s.delete(&format!("/v1/elastic-ips/{e1}"), &ta).await, 204);
        assert_eq!(s.get(&format!("/v1/elastic-ips/{e1}"), ADMIN).await.0, 404);
        // Released, the address is free again.
        let again = s
            .create(
                "/v1/elastic-ips",
                ADMIN,
                json!({"pool_id": pool, "tenant_id": tb_id}),
            )
            .await;
        assert_eq!(again["address"], "198.51.100.1");
        assert_error(
            &s.call("DELETE", &format!("/v1/tenants/{tb_id}"), Some(ADMIN), None)
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
async fn port_blocks_are_assigned_disjoint_logged_and_looked_up() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (_ta_id, ta) = s.tenant("a").await;
        let (_tb_id, tb) = s.tenant("b").await;
        let h1 = s.create("/v1/hosts", ADMIN, json!({"name": "h1"})).await;
        let h2 = s.create("/v1/hosts", ADMIN, json!({"name": "h2"})).await;
        let (h1_id, agent1, agent2) = (sv(&h1, "id"), sv(&h1, "credential"), sv(&h2, "credential"));
        for (size, status) in [(0, 422), (64513, 422)] {
            assert_error(
                &s.post("/v1/edge-pools", ADMIN, json!({"name": "bad", "public_ranges": ["192.0.2.0/29"], "port_block_size": size})).await,
                status,
                "out_of_range",
                Some("port_block_size"),
            );
        }
        // A /29 (usable .1 to .6), 16384 ports per block: 3 blocks per address.
        let pool = s
            .create("/v1/edge-pools", ADMIN, json!({"name": "p", "public_ranges": ["192.0.2.0/29"], "port_block_size": 16384}))
            .await;
        assert_eq!(pool["port_block_size"], 16384);
        let pool = sv(&pool, "id");
        let one = s.create("/v1/edge-pools", ADMIN, json!({"name": "one", "public_ranges": ["203.0.113.9/32"], "port_block_size": 64512})).await;
        let one = sv(&one, "id");
        assert_eq!(s.get(&format!("/v1/edge-pools/{one}"), ADMIN).await.1["port_block_size"], 64512);
        let plain = sv(&s.create("/v1/edge-pools", ADMIN, json!({"name": "plain", "nat": false})).await, "id");
        let dflt = s.create("/v1/edge-pools", ADMIN, json!({"name": "dflt", "public_ranges": ["198.51.100.0/24"]})).await;
        assert_eq!(dflt["port_block_size"], 1024);
        // .1 is an elastic IP: port blocks never use it.
        let (ta_id, _) = (sv(&s.get("/v1/tenants", &ta).await.1[0], "id"), ());
        s.create("/v1/elastic-ips", ADMIN, json!({"pool_id": pool, "tenant_id": ta_id})).await;
        let net = sv(&s.create("/v1/networks", &ta, json!({"name": "n", "cidr": "10.0.0.0/16"})).await, "id");
        let sub = sv(&s.create("/v1/subnets", &ta, json!({"network_id": net, "name": "s", "cidr": "10.0.0.0/24"})).await, "id");
        let node = |name: &'static str| {
            let s = &s;
            let ta = ta.clone();
            let sub = sub.clone();
            let h1_id = h1_id.clone();
            async move { sv(&s.create("/v1/nodes", &ta, json!({"subnet_id": sub, "name": name, "host_id": h1_id})).await, "id") }
        };
        let (n1, n2, n3) = (node("n1").await, node("n2").await, node("n3").await);
        let blocks = |n: &str| format!("/v1/nodes/{n}/port-blocks");
        // No NAT route yet.
        assert_error(&s.post(&blocks(&n1), &agent1, json!({})).await, 409, "no_nat_pool", Some("pool_id"));
        s.create("/v1/routes", &ta, json!({"network_id": net, "destination": "0.0.0.0/0", "target": format!("pool:{pool}")})).await;
        // Who may ask: the node's host's agent and the admin; nobody else.
        for tok in [ta.as_str(), tb.as_str(), agent2.as_str()] {
            assert_error(&s.post(&blocks(&n1), tok, json!({})).await, 404, "not_found", None);
        }
        let b1 = s.create(&blocks(&n1), &agent1, json!({})).await;
        assert_eq!((b1["address"].as_str(), b1["port_first"].as_u64(), b1["port_last"].as_u64()), (Some("192.0.2.2"), Some(1024), Some(17407)));
        assert_eq!(b1["host_id"], h1_id.as_str());
        // More blocks for the same node: other port ranges (the port alone names the block).
        let b2 = s.create(&blocks(&n1), ADMIN, json!({})).await;
        assert_eq!((b2["address"].as_str(), b2["port_first"].as_u64()), (Some("192.0.2.2"), Some(17408)));
        // Another node gets the same ports on the next address.
        let c1 = s.create(&blocks(&n2), &agent1, json!({})).await;
        assert_eq!((c1["address"].as_str(), c1["port_first"].as_u64(), c1["port_last"].as_u64()), (Some("192.0.2.3"), Some(1024), Some(17407)));
        // Two NAT pools routed: the caller must choose; the choice must be routed and NAT.
        s.create("/v1/routes", &ta, json!({"network_id": net, "destination": "192.168.0.0/16", "target": format!("pool:{one}")})).await;
        s.create("/v1/routes", &ta, json!({"network_id": net, "destination": "172.16.0.0/12", "target": format!("pool:{plain}")})).await;
        assert_error(&s.post(&blocks(&n3), &agent1, json!({})).await, 409, "ambiguous", Some("pool_id"));
        assert_error(&s.post(&blocks(&n3), &agent1, json!({"pool_id": plain})).await, 409, "not_routed", Some("pool_id"));
        assert_error(&s.post(&blocks(&n3), &agent1, json!({"pool_id": "pool-000000000000"})).await, 404, "not_found", Some("pool_id"));
        assert_error(&s.post(&blocks(&n3), &agent1, json!({"pool": one})).await, 400, "unknown_field", Some("pool"));
        let d1 = s.create(&blocks(&n3), &agent1, json!({"pool_id": one})).await;
        assert_eq!((d1["address"].as_str(), d1["port_first"].as_u64(), d1["port_last"].as_u64()), (Some("203.0.113.9"), Some(1024), Some(65535)));
        assert_error(&s.post(&blocks(&n3), &agent1, json!({"pool_id": one})).await, 409, "exhausted", None);
        // n1's ports overlap the only block of `one`: none for n1 there.
        assert_error(&s.post(&blocks(&n1), &agent1, json!({"pool_id": one})).await, 409, "exhausted", None);
        // Prometheus sees the same: four assigned and held, two refused for want of ports.
        assert_eq!(s.metric("canopy_manager_port_block_requests_total{result=\"assigned\"}").await, 4);
        assert_eq!(s.metric("canopy_manager_port_block_requests_total{result=\"exhausted\"}").await, 2);
        assert_eq!(s.metric("canopy_manager_port_blocks").await, 4);
        // Listing: admin, the agent, the tenant; not B nor another agent.
        for (tok, want) in [(ADMIN, 200), (agent1.as_str(), 200), (ta.as_str(), 200), (tb.as_str(), 404), (agent2.as_str(), 404)] {
            let (st, v) = s.get(&blocks(&n1), tok).await;
            assert_eq!(st, want, "{v}");
            if st == 200 {
                assert_eq!(v.as_array().unwrap().len(), 2);
            }
        }
        // Lookup (admin): who had address:port at T.
        let at = sv(&b1, "created_at");
        let lookup = |addr: &str, port: u32, at: &str| format!("/v1/port-blocks/lookup?address={addr}&port={port}&at={at}");
        let (st, who) = s.get(&lookup("192.0.2.2", 17407, &at), ADMIN).await;
        assert_eq!(st, 200, "{who}");
        assert_eq!(who["node_id"].as_str(), Some(n1.as_str()));
        assert_eq!(who["block_id"], b1["id"]);
        assert_eq!(who["vip"], "10.0.0.2");
        assert!(who["released_at"].is_null());
        assert_eq!(s.get(&lookup("192.0.2.2", 17408, &sv(&b2, "created_at")), ADMIN).await.1["block_id"], b2["id"]);
        assert_eq!(s.get(&lookup("192.0.2.3", 2000, &sv(&c1, "created_at")), ADMIN).await.1["node_id"].as_str(), Some(n2.as_str()));
        assert_error(&s.get(&lookup("192.0.2.2", 2000, "2000-01-01T00:00:00Z"), ADMIN).await, 404, "not_found", None);
        assert_error(&s.get(&lookup("192.0.2.2", 1023, &at), ADMIN).await, 404, "not_found", None);
        assert_eq!(s.get("/v1/port-blocks/lookup?address=192.0.2.2&port=1024", ADMIN).await.0, 200);
        for (q, status, code, field) in [
            ("address=x&port=1", 422, "invalid_ip", Some("address")),
            ("address=192.0.2.2&port=70000", 422, "out_of_range", Some("port")),
            ("address=192.0.2.2&port=1&at=yesterday", 422, "invalid_time", Some("at")),
            ("address=192.0.2.2&port=abc", 400, "invalid_query", None),
        ] {
            let got = s.get(&format!("/v1/port-blocks/lookup?{q}"), ADMIN).await;
            assert_eq!(got.0, status, "{q}: {}", got.1);
            assert_eq!(got.1["code"], code, "{q}: {}", got.1);
            if let Some(f) = field {
                assert_eq!(got.1["field"], f, "{q}");
            }
        }
        for tok in [ta.as_str(), agent1.as_str()] {
            assert_eq!(s.get(&lookup("192.0.2.2", 2000, &at), tok).await.0, 404);
        }
        // Release by the agent; the log keeps who had it.
        let b1_id = sv(&b1, "id");
        assert_eq!(s.delete(&format!("/v1/port-blocks/{b1_id}"), &agent2).await, 404);
        assert_eq!(s.delete(&format!("/v1/port-blocks/{b1_id}"), &ta).await, 404);
        assert_eq!(s.delete(&format!("/v1/port-blocks/{b1_id}"), &agent1).await, 204);
        assert_eq!(s.delete(&format!("/v1/port-blocks/{b1_id}"), &agent1).await, 404);
        let (_, who) = s.get(&lookup("192.0.2.2", 2000, &at), ADMIN).await;
        assert_eq!(who["node_id"].as_str(), Some(n1.as_str()));
        assert!(who["released_at"].is_string());
        assert_error(&s.get("/v1/port-blocks/lookup?address=192.0.2.2&port=2000", ADMIN).await, 404, "not_found", None);
        // n2's next block avoids its own ports 1024..17407; the freed (.2, 1024) goes to n4.
        let c2 = s.create(&blocks(&n2), &agent1, json!({"pool_id": pool})).await;
        assert_eq!((c2["address"].as_str(), c2["port_first"].as_u64()), (Some("192.0.2.3"), Some(17408)));
        let n4 = node("n4").await;
        let e1 = s.create(&blocks(&n4), &agent1, json!({"pool_id": pool})).await;
        assert_eq!((e1["address"].as_str(), e1["port_first"].as_u64()), (Some("192.0.2.2"), Some(1024)));
        // Deleting a node releases its blocks (logged), and a pool with blocks stays.
        assert_error(&s.call("DELETE", &format!("/v1/edge-pools/{one}"), Some(ADMIN), None).await, 409, "in_use", None);
        assert_eq!(s.delete(&format!("/v1/nodes/{n2}"), &ta).await, 204);
        let (_, who) = s.get(&lookup("192.0.2.3", 2000, &sv(&c1, "created_at")), ADMIN).await;
        assert_eq!(who["node_id"].as_str(), Some(n2.as_str()));
        assert!(who["released_at"].is_string());
        let kinds: Vec<(String, String)> = sqlx::query_as("SELECT kind, op FROM changes WHERE kind = 'port_block' ORDER BY revision, seq")
            .fetch_all(s.store.pool())
            .await
            .unwrap();
        assert_eq!(kinds.iter().filter(|(_, op)| op == "create").count(), 6);
        assert_eq!(kinds.iter().filter(|(_, op)| op == "delete").count(), 3);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn peerings_within_and_across_tenants_are_route_targets() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (_a, ta) = s.tenant("a").await;
        let (_b, tb) = s.tenant("b").await;
        let (_c, tc) = s.tenant("c").await;
        let net = |tok: &str, name: &str, cidr: &str| {
            let (s, tok, body) = (&s, tok.to_string(), json!({"name": name, "cidr": cidr}));
            async move { sv(&s.create("/v1/networks", &tok, body).await, "id") }
        };
        let n1 = net(&ta, "n1", "10.0.0.0/16").await;
        let n2 = net(&ta, "n2", "10.1.0.0/16").await;
        let bn = net(&tb, "bn", "10.2.0.0/16").await;
        let bover = net(&tb, "bover", "10.0.0.0/16").await;
        // Inside a tenant: active at once.
        let inner = s.create("/v1/peerings", &ta, json!({"network_id": n1, "peer_network_id": n2})).await;
        assert_eq!(inner["state"], "active");
        for (body, status, code, field) in [
            (json!({"network_id": n2, "peer_network_id": n1}), 409, "conflict", Some("peer_network_id")),
            (json!({"network_id": n1, "peer_network_id": n1}), 422, "incompatible", Some("peer_network_id")),
            (json!({"network_id": n1, "peer_network_id": bover}), 409, "overlap", Some("peer_network_id")),
            (json!({"network_id": n1, "peer_network_id": "net-000000000000"}), 404, "not_found", Some("peer_network_id")),
            (json!({"network_id": bn, "peer_network_id": n1}), 404, "not_found", Some("network_id")),
            (json!({"network_id": n1}), 400, "missing_field", Some("peer_network_id")),
        ] {
            assert_error(&s.post("/v1/peerings", &ta, body).await, status, code, field);
        }
        // Across tenants: pending until the other tenant accepts.
        let cross = s.create("/v1/peerings", &ta, json!({"network_id": n1, "peer_network_id": bn})).await;
        assert_eq!(cross["state"], "pending");
        let x = sv(&cross, "id");
        let target = format!("peering:{x}");
        assert_error(
            &s.post("/v1/routes", &ta, json!({"network_id": n1, "destination": "10.2.0.0/16", "target": target})).await,
            409,
            "not_active",
            Some("target"),
        );
        assert_error(&s.call("POST", &format!("/v1/peerings/{x}/accept"), Some(&ta), None).await, 409, "not_peer", None);
        assert_error(&s.call("POST", &format!("/v1/peerings/{x}/accept"), Some(&tc), None).await, 404, "not_found", None);
        assert_eq!(s.get(&format!("/v1/peerings/{x}"), &tb).await.0, 200);
        assert_eq!(s.get(&format!("/v1/peerings/{x}"), &tc).await.0, 404);
        assert_eq!(s.get("/v1/peerings", &tb).await.1.as_array().unwrap().len(), 1);
        assert_eq!(s.get("/v1/peerings", &ta).await.1.as_array().unwrap().len(), 2);
        assert_eq!(s.get("/v1/peerings", &tc).await.1.as_array().unwrap().len(), 0);
        let (st, acc) = s.call("POST", &format!("/v1/peerings/{x}/accept"), Some(&tb), None).await;
        assert_eq!((st, acc["state"].as_str()), (200, Some("active")), "{acc}");
        assert_error(&s.call("POST", &format!("/v1/peerings/{x}/accept"), Some(&tb), None).await, 409, "not_pending", None);
        // Now both sides may route to it; a network that is not a side may not.
        let r1 = s.create("/v1/routes", &ta, json!({"network_id": n1, "destination": "10.2.0.0/16", "target": target})).await;
        assert_eq!(r1["peering_id"], x.as_str());
        let r2 = s.create("/v1/routes", &tb, json!({"network_id": bn, "destination": "10.0.0.0/16", "target": target})).await;
        // A peering route covers only addresses of the peer network.
        for dest in ["10.3.0.0/16", "10.2.0.0/15", "0.0.0.0/0"] {
            let body = json!({"network_id": n1, "destination": dest, "target": target});
            assert_error(&s.post("/v1/routes", &ta, body).await, 422, "outside_network", Some("destination"));
        }
        let narrow = s.create("/v1/routes", &tb, json!({"network_id": bn, "destination": "10.0.7.0/24", "target": target})).await;
        assert_eq!(s.delete(&format!("/v1/routes/{}", sv(&narrow, "id")), &tb).await, 204);
        assert_error(
            &s.post("/v1/routes", &ta, json!({"network_id": n2, "destination": "10.2.0.0/16", "target": target})).await,
            404,
            "not_found",
            Some("target"),
        );
        // Guards: routes keep the peering, peerings keep the networks.
        assert_error(&s.call("DELETE", &format!("/v1/peerings/{x}"), Some(&tb), None).await, 409, "in_use", None);
        assert_error(&s.call("DELETE", &format!("/v1/networks/{n2}"), Some(&ta), None).await, 409, "in_use", None);
        assert_eq!(s.delete(&format!("/v1/routes/{}", sv(&r1, "id")), &ta).await, 204);
        assert_eq!(s.delete(&format!("/v1/routes/{}", sv(&r2, "id")), &tb).await, 204);
        assert_eq!(s.delete(&format!("/v1/peerings/{x}"), &tc).await, 404);
        assert_eq!(s.delete(&format!("/v1/peerings/{x}"), &tb).await, 204);
        assert_eq!(s.get(&format!("/v1/peerings/{x}"), &ta).await.0, 404);
        assert_eq!(s.delete(&format!("/v1/peerings/{}", sv(&inner, "id")), &ta).await, 204);
        assert_eq!(s.delete(&format!("/v1/networks/{n2}"), &ta).await, 204);
        // Each peering write is logged under both networks.
        let nets: Vec<(Option<String>,)> = sqlx::query_as("SELECT network_id FROM changes WHERE kind = 'peering' AND object_id = $1 AND op = 'create'")
            .bind(&x)
            .fetch_all(s.store.pool())
            .await
            .unwrap();
        let mut nets: Vec<String> = nets.into_iter().filter_map(|(n,)| n).collect();
        nets.sort();
        let mut want = vec![n1.clone(), bn.clone()];
        want.sort();
        assert_eq!(nets, want);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn security_groups_default_rules_and_attachments() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (_a, ta) = s.tenant("a").await;
        let (_b, tb) = s.tenant("b").await;
        s.create("/v1/hosts", ADMIN, json!({"name": "h1"})).await;
        let net = sv(&s.create("/v1/networks", &ta, json!({"name": "n", "cidr": "10.0.0.0/16"})).await, "id");
        let net2 = sv(&s.create("/v1/networks", &ta, json!({"name": "n2", "cidr": "10.1.0.0/16"})).await, "id");
        let sub = sv(&s.create("/v1/subnets", &ta, json!({"network_id": net, "name": "s", "cidr": "10.0.0.0/24"})).await, "id");
        // The network's default group: all egress, ingress from itself.
        let (_, l) = s.get(&format!("/v1/security-groups?network_id={net}"), &ta).await;
        let groups = l.as_array().unwrap();
        assert_eq!(groups.len(), 1);
        let dflt = groups[0].clone();
        let dflt_id = sv(&dflt, "id");
        assert_eq!(dflt["name"], "default");
        assert_eq!(
            dflt["rules"],
            json!([
                {"direction": "egress", "protocol": "any", "remote_cidr": "0.0.0.0/0"},
                {"direction": "ingress", "protocol": "any", "remote_group_id": dflt_id}
            ])
        );
        // A new node is in the default group.
        let vm = sv(&s.create("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "vm"})).await, "id");
        let (_, att) = s.get(&format!("/v1/nodes/{vm}/security-groups"), &ta).await;
        assert_eq!(att, json!([{"id": format!("{vm}/{dflt_id}"), "node_id": vm, "group_id": dflt_id, "network_id": net}]));
        // A group of its own, with rules naming CIDRs and groups.
        let web = s
            .create(
                "/v1/security-groups",
                &ta,
                json!({"network_id": net, "name": "web", "rules": [
                    {"direction": "ingress", "protocol": "tcp", "port_from": 443, "port_to": 443, "remote_cidr": "0.0.0.0/0"},
                    {"direction": "ingress", "protocol": "ICMP", "remote_group_id": dflt_id},
                    {"direction": "egress", "protocol": "47", "remote_cidr": "192.168.0.0/16"}
                ]}),
            )
            .await;
        assert_eq!(web["rules"][1]["protocol"], "icmp");
        let web_id = sv(&web, "id");
        let bad = |rule: Value| json!({"network_id": net, "name": "bad", "rules": [{"direction": "ingress", "remote_cidr": "0.0.0.0/0"}, rule]});
        for (body, status, code, field) in [
            (bad(json!({"direction": "ingress", "protocol": "gre", "remote_cidr": "0.0.0.0/0"})), 422, "invalid_protocol", Some("rules[1].protocol")),
            (bad(json!({"direction": "ingress", "protocol": "256", "remote_cidr": "0.0.0.0/0"})), 422, "invalid_protocol", Some("rules[1].protocol")),
            (bad(json!({"direction": "ingress", "protocol": "icmp", "port_from": 1, "port_to": 2, "remote_cidr": "0.0.0.0/0"})), 422, "incompatible", Some("rules[1].port_from")),
            (bad(json!({"direction": "ingress", "protocol": "tcp", "port_from": 80, "remote_cidr": "0.0.0.0/0"})), 422, "required", Some("rules[1].port_to")),
            (bad(json!({"direction": "ingress", "protocol": "tcp", "port_from": 90, "port_to": 80, "remote_cidr": "0.0.0.0/0"})), 422, "out_of_range", Some("rules[1].port_to")),
            (bad(json!({"direction": "ingress", "protocol": "tcp", "port_from": 1, "port_to": 70000, "remote_cidr": "0.0.0.0/0"})), 400, "invalid_value", Some("rules[1].port_to")),
            (bad(json!({"direction": "ingress"})), 422, "required", Some("rules[1].remote_cidr")),
            (bad(json!({"direction": "ingress", "remote_cidr": "10.0.0.1/8"})), 422, "invalid_cidr", Some("rules[1].remote_cidr")),
            (bad(json!({"direction": "ingress", "remote_cidr": "10.0.0.0/8", "remote_group_id": dflt_id})), 422, "incompatible", Some("rules[1].remote_group_id")),
            (bad(json!({"direction": "ingress", "remote_group_id": "sg-000000000000"})), 404, "not_found", Some("rules[1].remote_group_id")),
            (bad(json!({"direction": "sideways", "remote_cidr": "0.0.0.0/0"})), 400, "invalid_value", Some("rules[1].direction")),
            (json!({"network_id": net, "name": "default"}), 409, "conflict", Some("name")),
            (json!({"network_id": net, "name": "bad name"}), 422, "invalid_name", Some("name")),
        ] {
            assert_error(&s.post("/v1/security-groups", &ta, body.clone()).await, status, code, field);
        }
        // Another network's group is not a remote here, nor attachable.
        let other = sv(&s.get(&format!("/v1/security-groups?network_id={net2}"), &ta).await.1[0], "id");
        assert_error(&s.post("/v1/security-groups", &ta, bad(json!({"direction": "ingress", "remote_group_id": other}))).await, 404, "not_found", Some("rules[1].remote_group_id"));
        let atts = format!("/v1/nodes/{vm}/security-groups");
        assert_error(&s.post(&atts, &ta, json!({"group_id": other})).await, 422, "incompatible", Some("group_id"));
        // Tenant B sees none of it.
        assert_eq!(s.get(&format!("/v1/security-groups/{web_id}"), &tb).await.0, 404);
        assert_eq!(s.get("/v1/security-groups", &tb).await.1.as_array().unwrap().len(), 0);
        assert_error(&s.post(&atts, &tb, json!({"group_id": web_id})).await, 404, "not_found", None);
        // Attach, twice (409), detach; guards on delete.
        assert_eq!(s.create(&atts, &ta, json!({"group_id": web_id})).await["id"], format!("{vm}/{web_id}"));
        assert_error(&s.post(&atts, &ta, json!({"group_id": web_id})).await, 409, "conflict", Some("group_id"));
        assert_eq!(s.get(&atts, &ta).await.1.as_array().unwrap().len(), 2);
        assert_error(&s.call("DELETE", &format!("/v1/security-groups/{web_id}"), Some(&ta), None).await, 409, "in_use", None);
        assert_error(&s.call("DELETE", &format!("/v1/security-groups/{dflt_id}"), Some(&ta), None).await, 409, "default_group", None);
        let refs = s.create("/v1/security-groups", &ta, json!({"network_id": net, "name": "refs", "rules": [{"direction": "ingress", "remote_group_id": web_id}]})).await;
        assert_eq!(s.delete(&format!("{atts}/{web_id}"), &ta).await, 204);
        assert_eq!(s.delete(&format!("{atts}/{web_id}"), &ta).await, 404);
        assert_error(&s.call("DELETE", &format!("/v1/security-groups/{web_id}"), Some(&ta), None).await, 409, "in_use", None);
        // A network with groups of its own cannot go; deleting the node detaches it.
        assert_eq!(s.delete(&format!("/v1/nodes/{vm}"), &ta).await, 204);
        assert_eq!(s.delete(&format!("/v1/subnets/{sub}"), &ta).await, 204);
        assert_error(&s.call("DELETE", &format!("/v1/networks/{net}"), Some(&ta), None).await, 409, "in_use", None);
        assert_eq!(s.delete(&format!("/v1/security-groups/{}", sv(&refs, "id")), &ta).await, 204);
        assert_eq!(s.delete(&format!("/v1/security-groups/{web_id}"), &tb).await, 404);
        assert_eq!(s.delete(&format!("/v1/security-groups/{web_id}"), &ta).await, 204);
        assert_eq!(s.delete(&format!("/v1/networks/{net}"), &ta).await, 204);
        assert_eq!(s.get(&format!("/v1/security-groups/{dflt_id}"), ADMIN).await.0, 404);
        s.stop().await;
    })
    .await;
}

#[tokio::test]
async fn network_acls_are_ordered_rules_per_subnet() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (_a, ta) = s.tenant("a").await;
        let (_b, tb) = s.tenant("b").await;
        let net = sv(&s.create("/v1/networks", &ta, json!({"name": "n", "cidr": "10.0.0.0/16"})).await, "id");
        let sub = sv(&s.create("/v1/subnets", &ta, json!({"network_id": net, "name": "s", "cidr": "10.0.0.0/24"})).await, "id");
        let acl = format!("/v1/subnets/{sub}/acl");
        // None set: empty (allow all).
        let (st, v) = s.get(&acl, &ta).await;
        assert_eq!((st, v["rules"].clone(), v["subnet_id"].clone()), (200, json!([]), json!(sub)));
        let rules = json!({"rules": [
            {"number": 200, "action": "allow", "direction": "ingress", "cidr": "0.0.0.0/0"},
            {"number": 100, "action": "deny", "direction": "ingress", "protocol": "TCP", "port_from": 22, "port_to": 22, "cidr": "0.0.0.0/0"},
            {"number": 100, "action": "allow", "direction": "egress", "cidr": "0.0.0.0/0"}
        ]});
        let (st, v) = s.call("PUT", &acl, Some(&ta), Some(rules)).await;
        assert_eq!(st, 200, "{v}");
        // Sorted: ingress by number, then egress.
        let order: Vec<(String, u64)> = v["rules"].as_array().unwrap().iter().map(|r| (sv(r, "direction"), r["number"].as_u64().unwrap())).collect();
        assert_eq!(order, [("ingress".to_string(), 100), ("ingress".to_string(), 200), ("egress".to_string(), 100)]);
        assert_eq!(v["rules"][0]["protocol"], "tcp");
        assert_eq!(s.get(&acl, &ta).await.1, v);
        let one = |rule: Value| json!({"rules": [{"number": 1, "action": "allow", "direction": "ingress", "cidr": "0.0.0.0/0"}, rule]});
        for (body, status, code, field) in [
            (one(json!({"number": 1, "action": "deny", "direction": "ingress", "cidr": "0.0.0.0/0"})), 422, "duplicate", Some("rules[1].number")),
            (one(json!({"number": 0, "action": "deny", "direction": "ingress", "cidr": "0.0.0.0/0"})), 422, "out_of_range", Some("rules[1].number")),
            (one(json!({"number": 40000, "action": "deny", "direction": "ingress", "cidr": "0.0.0.0/0"})), 422, "out_of_range", Some("rules[1].number")),
            (one(json!({"number": 2, "action": "deny", "direction": "ingress", "cidr": "10.0.0.1/8"})), 422, "invalid_cidr", Some("rules[1].cidr")),
            (one(json!({"number": 2, "action": "deny", "direction": "ingress", "protocol": "udp", "port_from": 9, "port_to": 8, "cidr": "0.0.0.0/0"})), 422, "out_of_range", Some("rules[1].port_to")),
            (one(json!({"number": 2, "action": "deny", "direction": "ingress", "protocol": "bogus", "cidr": "0.0.0.0/0"})), 422, "invalid_protocol", Some("rules[1].protocol")),
            (one(json!({"number": 2, "action": "maybe", "direction": "ingress", "cidr": "0.0.0.0/0"})), 400, "invalid_value", Some("rules[1].action")),
            (one(json!({"number": 2, "action": "deny", "direction": "ingress"})), 400, "missing_field", Some("rules[1].cidr")),
        ] {
            assert_error(&s.call("PUT", &acl, Some(&ta), Some(body)).await, status, code, field);
        }
        // The same number in the other direction is fine.
        let (st, _) = s.call("PUT", &acl, Some(&ta), Some(one(json!({"number": 1, "action": "deny", "direction": "egress", "cidr": "0.0.0.0/0"})))).await;
        assert_eq!(st, 200);
        // Tenant B: 404 both ways; the ACL is unchanged.
        assert_eq!(s.get(&acl, &tb).await.0, 404);
        assert_eq!(s.call("PUT", &acl, Some(&tb), Some(json!({"rules": []}))).await.0, 404);
        assert_eq!(s.get(&acl, &ta).await.1["rules"].as_array().unwrap().len(), 2);
        // Logged as updates; the subnet takes its ACL with it.
        assert_eq!(s.delete(&format!("/v1/subnets/{sub}"), &ta).await, 204);
        let ops: Vec<(String,)> = sqlx::query_as("SELECT op FROM changes WHERE kind = 'network_acl' ORDER BY revision, seq")
            .fetch_all(s.store.pool())
            .await
            .unwrap();
        let ops: Vec<&str> = ops.iter().map(|(o,)| o.as_str()).collect();
        assert_eq!(ops, ["update", "update", "delete"]);
        assert_eq!(s.get(&acl, &ta).await.0, 404);
        s.stop().await;
    })
    .await;
}
