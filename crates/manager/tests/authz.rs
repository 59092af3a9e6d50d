//! The authorisation matrix (admin, tenant A, tenant B, agent, edge, no token against every
//! verb on every resource) and bad-input answers (status, `code`, `field`).

mod common;

use common::{assert_error, each_backend, sv, Server, ADMIN};
use serde_json::{json, Value};

/// Tokens of the matrix's principals.
struct Who {
    a: String,
    b: String,
    agent: String,
    edge: String,
}

/// Collects mismatches so that one run reports all of them.
struct Matrix<'s> {
    s: &'s Server,
    failures: Vec<String>,
    checks: usize,
}

impl Matrix<'_> {
    async fn check(
        &mut self,
        who: (&str, Option<&str>),
        method: &str,
        path: &str,
        body: Option<Value>,
        want: u16,
    ) -> Value {
        let (st, v) = self.s.call(method, path, who.1, body).await;
        self.checks += 1;
        if st != want {
            self.failures.push(format!(
                "{} {method} {path}: got {st}, want {want}: {v}",
                who.0
            ));
        }
        if st >= 400 && !v["code"].is_string() {
            self.failures.push(format!(
                "{} {method} {path}: error without code: {v}",
                who.0
            ));
        }
        v
    }
}

fn ids(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| a.iter().map(|o| sv(o, "id")).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn authorization_matrix() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        // World: tenant A owns a network, subnet, node (on host h1) and a route to pool p;
        // tenant B owns a network; edge e is in pool p.
        let (ta_id, ta) = s.tenant("tenant-a").await;
        let (tb_id, tb) = s.tenant("tenant-b").await;
        let h1 = s.create("/v1/hosts", ADMIN, json!({"name": "h1"})).await;
        let h1_id = sv(&h1, "id");
        let pool = sv(&s.create("/v1/edge-pools", ADMIN, json!({"name": "p", "nat": false})).await, "id");
        let e = s.create("/v1/edges", ADMIN, json!({"pool_id": pool, "name": "e"})).await;
        let e_id = sv(&e, "id");
        let w = Who { a: ta.clone(), b: tb.clone(), agent: sv(&h1, "credential"), edge: sv(&e, "credential") };
        let net = sv(&s.create("/v1/networks", &ta, json!({"name": "n", "cidr": "10.0.0.0/16"})).await, "id");
        let bnet = sv(&s.create("/v1/networks", &tb, json!({"name": "n", "cidr": "10.0.0.0/16"})).await, "id");
        let sub = sv(&s.create("/v1/subnets", &ta, json!({"network_id": net, "name": "s", "cidr": "10.0.0.0/24"})).await, "id");
        let node = sv(&s.create("/v1/nodes", &ta, json!({"subnet_id": sub, "name": "vm", "host_id": h1_id})).await, "id");
        let route = sv(
            &s.create("/v1/routes", &ta, json!({"network_id": net, "destination": "0.0.0.0/0", "target": format!("pool:{pool}")})).await,
            "id",
        );
        let tok = sv(&s.create(&format!("/v1/tenants/{ta_id}/tokens"), &ta, json!({"name": "x"})).await, "id");
        let sg = sv(&s.create("/v1/security-groups", &ta, json!({"network_id": net, "name": "g"})).await, "id");

        let mut m = Matrix { s: &s, failures: Vec::new(), checks: 0 };
        let admin = ("admin", Some(ADMIN));
        let a = ("tenant-a", Some(w.a.as_str()));
        let b = ("tenant-b", Some(w.b.as_str()));
        let agent = ("agent", Some(w.agent.as_str()));
        let edge = ("edge", Some(w.edge.as_str()));
        let none = ("no-token", None);
        let bogus = ("bogus-token", Some("cnpt_0000"));

        // Tenant-owned objects: visible to A and the admin, 404 to everyone else, and the
        // list of B does not show them. Refused deletes leave them in place.
        let owned = [
            ("/v1/tenants", format!("/v1/tenants/{ta_id}")),
            ("/v1/networks", format!("/v1/networks/{net}")),
            ("/v1/subnets", format!("/v1/subnets/{sub}")),
            ("/v1/nodes", format!("/v1/nodes/{node}")),
            ("/v1/routes", format!("/v1/routes/{route}")),
            ("/v1/security-groups", format!("/v1/security-groups/{sg}")),
        ];
        for (list, one) in &owned {
            for (who, want) in [(admin, 200), (a, 200), (b, 404), (agent, 404), (edge, 404), (none, 401), (bogus, 401)] {
                m.check(who, "GET", one, None, want).await;
            }
            for (who, want, sees) in [(admin, 200, true), (a, 200, true), (b, 200, false), (agent, 404, false), (edge, 404, false), (none, 401, false)] {
                let v = m.check(who, "GET", list, None, want).await;
                let id = one.rsplit('/').next().unwrap().to_string();
                if want == 200 && ids(&v).contains(&id) != sees {
                    m.failures.push(format!("{} GET {list}: sees {id} = {}", who.0, !sees));
                }
            }
            for (who, want) in [(b, 404), (agent, 404), (edge, 404), (none, 401)] {
                m.check(who, "DELETE", one, None, want).await;
            }
            m.check(a, "GET", one, None, 200).await;
        }
        // Tenant deletion is for the admin only, even for the tenant itself.
        m.check(a, "DELETE", &format!("/v1/tenants/{ta_id}"), None, 404).await;
        // Tokens of A: A and the admin only.
        let toks = format!("/v1/tenants/{ta_id}/tokens");
        for (who, want) in [(admin, 200), (a, 200), (b, 404), (agent, 404), (edge, 404), (none, 401)] {
            m.check(who, "GET", &toks, None, want).await;
        }
        for (who, want) in [(b, 404), (agent, 404), (edge, 404), (none, 401)] {
            m.check(who, "POST", &toks, Some(json!({})), want).await;
            m.check(who, "DELETE", &format!("{toks}/{tok}"), None, want).await;
        }
        m.check(admin, "POST", &toks, Some(json!({})), 201).await;
        m.check(a, "DELETE", &format!("{toks}/{tok}"), None, 204).await;
        // Creating inside A's objects.
        let creates = [
            ("/v1/tenants", json!({"name": "t-new"})),
            ("/v1/networks", json!({"name": "x1", "cidr": "10.1.0.0/16", "tenant_id": ta_id})),
            ("/v1/subnets", json!({"network_id": net, "name": "x2", "cidr": "10.0.9.0/24"})),
            ("/v1/nodes", json!({"subnet_id": sub, "name": "x3"})),
            ("/v1/routes", json!({"network_id": net, "destination": "172.16.0.0/12", "target": "blackhole"})),
            ("/v1/security-groups", json!({"network_id": net, "name": "x4"})),
        ];
        for (path, body) in &creates {
            for (who, want) in [(b, 404), (agent, 404), (edge, 404), (none, 401)] {
                m.check(who, "POST", path, Some(body.clone()), want).await;
            }
        }
        m.check(admin, "POST", creates[0].0, Some(creates[0].1.clone()), 201).await;
        m.check(a, "POST", creates[0].0, Some(json!({"name": "t-other"})), 404).await;
        for (path, body) in &creates[1..] {
            m.check(a, "POST", path, Some(body.clone()), 201).await;
        }
        // The admin may create in A's tenant too (names differ from A's creations).
        m.check(admin, "POST", "/v1/networks", Some(json!({"name": "x1-admin", "cidr": "10.2.0.0/16", "tenant_id": ta_id})), 201).await;
        // A cannot create a network in B's tenant, nor touch B's network.
        m.check(a, "POST", "/v1/networks", Some(json!({"name": "y", "cidr": "10.3.0.0/16", "tenant_id": tb_id})), 404).await;
        m.check(a, "POST", "/v1/subnets", Some(json!({"network_id": bnet, "name": "y", "cidr": "10.0.0.0/24"})), 404).await;

        // Operator objects: hosts and edges are admin-only (an agent/edge sees only itself);
        // pools are readable by tenants.
        let h = format!("/v1/hosts/{h1_id}");
        let ed = format!("/v1/edges/{e_id}");
        let pl = format!("/v1/edge-pools/{pool}");
        for (who, host_one, host_list, edge_one, edge_list, pool_one, pool_list) in [
            (admin, 200, 200, 200, 200, 200, 200),
            (a, 404, 404, 404, 404, 200, 200),
            (b, 404, 404, 404, 404, 200, 200),
            (agent, 200, 404, 404, 404, 404, 404),
            (edge, 404, 404, 200, 404, 404, 404),
            (none, 401, 401, 401, 401, 401, 401),
        ] {
            m.check(who, "GET", &h, None, host_one).await;
            m.check(who, "GET", "/v1/hosts", None, host_list).await;
            m.check(who, "GET", &ed, None, edge_one).await;
            m.check(who, "GET", "/v1/edges", None, edge_list).await;
            m.check(who, "GET", &pl, None, pool_one).await;
            m.check(who, "GET", "/v1/edge-pools", None, pool_list).await;
        }
        for (who, want) in [(a, 404), (b, 404), (agent, 404), (edge, 404), (none, 401)] {
            m.check(who, "POST", "/v1/hosts", Some(json!({"name": "hx"})), want).await;
            m.check(who, "DELETE", &h, None, want).await;
            m.check(who, "POST", "/v1/edge-pools", Some(json!({"name": "px", "nat": false})), want).await;
            m.check(who, "DELETE", &pl, None, want).await;
            m.check(who, "POST", "/v1/edges", Some(json!({"pool_id": pool, "name": "ex"})), want).await;
            m.check(who, "PATCH", &ed, Some(json!({"weight": 5})), want).await;
            m.check(who, "DELETE", &ed, None, want).await;
            m.check(who, "GET", "/v1/stats", None, want).await;
            let report = json!({"healthy": true, "load_percent": 3});
            let own = if who.0 == "edge" { 200 } else { want };
            m.check(who, "POST", &format!("{ed}/report"), Some(report), own).await;
        }
        let hx = m.check(admin, "POST", "/v1/hosts", Some(json!({"name": "hx"})), 201).await;
        m.check(admin, "PATCH", &ed, Some(json!({"weight": 5})), 200).await;
        m.check(admin, "GET", "/v1/stats", None, 200).await;

        // Resolution: the hosting agent, the pool's edge and the admin; nobody else.
        let ask = json!({"network_id": net, "ip": "10.0.0.2"});
        for (who, want) in [(admin, 200), (agent, 200), (edge, 200), (a, 404), (b, 404), (none, 401)] {
            m.check(who, "POST", "/v1/resolve", Some(ask.clone()), want).await;
        }
        let ask_b = json!({"network_id": bnet, "ip": "10.0.0.2"});
        for (who, want) in [(agent, 404), (edge, 404)] {
            m.check(who, "POST", "/v1/resolve", Some(ask_b.clone()), want).await;
        }

        // Elastic IPs: the admin allocates; A (the owner) and the admin see, associate,
        // disassociate and release; nobody else.
        let pn = sv(&s.create("/v1/edge-pools", ADMIN, json!({"name": "pn", "public_ranges": ["192.0.2.0/29"]})).await, "id");
        s.create("/v1/routes", &ta, json!({"network_id": net, "destination": "8.8.8.0/24", "target": format!("pool:{pn}")})).await;
        let alloc = json!({"pool_id": pn, "tenant_id": ta_id});
        for (who, want) in [(a, 404), (b, 404), (agent, 404), (edge, 404), (none, 401)] {
            m.check(who, "POST", "/v1/elastic-ips", Some(alloc.clone()), want).await;
        }
        let eip = sv(&m.check(admin, "POST", "/v1/elastic-ips", Some(alloc.clone()), 201).await, "id");
        let eip_one = format!("/v1/elastic-ips/{eip}");
        for (who, one, list, sees) in [
            (admin, 200, 200, true),
            (a, 200, 200, true),
            (b, 404, 200, false),
            (agent, 404, 404, false),
            (edge, 404, 404, false),
            (none, 401, 401, false),
        ] {
            m.check(who, "GET", &eip_one, None, one).await;
            let v = m.check(who, "GET", "/v1/elastic-ips", None, list).await;
            if list == 200 && ids(&v).contains(&eip) != sees {
                m.failures.push(format!("{} GET /v1/elastic-ips: sees {eip} = {}", who.0, !sees));
            }
        }
        let bind = json!({"node_id": node});
        for (who, want) in [(b, 404), (agent, 404), (edge, 404), (none, 401)] {
            m.check(who, "POST", &format!("{eip_one}/associate"), Some(bind.clone()), want).await;
            m.check(who, "POST", &format!("{eip_one}/disassociate"), None, want).await;
            m.check(who, "DELETE", &eip_one, None, want).await;
        }
        m.check(a, "POST", &format!("{eip_one}/associate"), Some(bind.clone()), 200).await;
        m.check(a, "POST", &format!("{eip_one}/disassociate"), None, 200).await;
        m.check(admin, "POST", &format!("{eip_one}/associate"), Some(bind.clone()), 200).await;
        m.check(admin, "POST", &format!("{eip_one}/disassociate"), None, 200).await;

        // Port blocks: the node's host's agent and the admin assign and release; the owner
        // may list them too; only the admin looks up the log.
        let pbs = format!("/v1/nodes/{node}/port-blocks");
        for (who, want) in [(a, 404), (b, 404), (edge, 404), (none, 401)] {
            m.check(who, "POST", &pbs, Some(json!({})), want).await;
        }
        let pb = m.check(agent, "POST", &pbs, Some(json!({})), 201).await;
        let pb2 = m.check(admin, "POST", &pbs, Some(json!({})), 201).await;
        for (who, want) in [(admin, 200), (a, 200), (agent, 200), (b, 404), (edge, 404), (none, 401)] {
            m.check(who, "GET", &pbs, None, want).await;
        }
        let look = format!("/v1/port-blocks/lookup?address={}&port={}", sv(&pb, "address"), pb["port_first"]);
        for (who, want) in [(admin, 200), (a, 404), (b, 404), (agent, 404), (edge, 404), (none, 401)] {
            m.check(who, "GET", &look, None, want).await;
        }
        let pb_one = format!("/v1/port-blocks/{}", sv(&pb, "id"));
        for (who, want) in [(a, 404), (b, 404), (edge, 404), (none, 401)] {
            m.check(who, "DELETE", &pb_one, None, want).await;
        }
        m.check(agent, "DELETE", &pb_one, None, 204).await;
        m.check(admin, "DELETE", &format!("/v1/port-blocks/{}", sv(&pb2, "id")), None, 204).await;
        m.check(a, "DELETE", &eip_one, None, 204).await;

        // A subnet's network ACL: A and the admin only.
        let acl = format!("/v1/subnets/{sub}/acl");
        for (who, want) in [(admin, 200), (a, 200), (b, 404), (agent, 404), (edge, 404), (none, 401)] {
            m.check(who, "GET", &acl, None, want).await;
        }
        for (who, want) in [(b, 404), (agent, 404), (edge, 404), (none, 401), (a, 200), (admin, 200)] {
            m.check(who, "PUT", &acl, Some(json!({"rules": []})), want).await;
        }

        // Security group attachments of A's node: A and the admin only.
        let node_sgs = format!("/v1/nodes/{node}/security-groups");
        for (who, want) in [(admin, 200), (a, 200), (b, 404), (agent, 404), (edge, 404), (none, 401)] {
            m.check(who, "GET", &node_sgs, None, want).await;
        }
        for (who, want) in [(b, 404), (agent, 404), (edge, 404), (none, 401)] {
            m.check(who, "POST", &node_sgs, Some(json!({"group_id": sg})), want).await;
            m.check(who, "DELETE", &format!("{node_sgs}/{sg}"), None, want).await;
        }
        m.check(a, "POST", &node_sgs, Some(json!({"group_id": sg})), 201).await;
        m.check(admin, "DELETE", &format!("{node_sgs}/{sg}"), None, 204).await;

        // Peerings: both sides and the admin see them; only the other side accepts.
        let (tb_net2, an2) = (
            sv(&s.create("/v1/networks", &tb, json!({"name": "pb", "cidr": "10.9.0.0/16"})).await, "id"),
            sv(&s.create("/v1/networks", &ta, json!({"name": "pa", "cidr": "10.8.0.0/16"})).await, "id"),
        );
        let peer_body = json!({"network_id": an2, "peer_network_id": tb_net2});
        for (who, want) in [(b, 404), (agent, 404), (edge, 404), (none, 401)] {
            m.check(who, "POST", "/v1/peerings", Some(peer_body.clone()), want).await;
        }
        let pe = sv(&m.check(a, "POST", "/v1/peerings", Some(peer_body), 201).await, "id");
        let pe_one = format!("/v1/peerings/{pe}");
        for (who, want) in [(admin, 200), (a, 200), (b, 200), (agent, 404), (edge, 404), (none, 401)] {
            m.check(who, "GET", &pe_one, None, want).await;
            m.check(who, "GET", "/v1/peerings", None, want).await;
        }
        for (who, want) in [(agent, 404), (edge, 404), (none, 401)] {
            m.check(who, "POST", &format!("{pe_one}/accept"), None, want).await;
            m.check(who, "DELETE", &pe_one, None, want).await;
        }
        m.check(a, "POST", &format!("{pe_one}/accept"), None, 409).await;
        m.check(b, "POST", &format!("{pe_one}/accept"), None, 200).await;
        m.check(b, "DELETE", &pe_one, None, 204).await;

        // Finally the allowed deletes, in dependency order.
        m.check(a, "DELETE", &format!("/v1/routes/{route}"), None, 204).await;
        m.check(a, "DELETE", &format!("/v1/nodes/{node}"), None, 204).await;
        m.check(admin, "DELETE", &ed, None, 204).await;
        m.check(admin, "DELETE", &h, None, 409).await; // node x3 was placed on it
        m.check(admin, "DELETE", &format!("/v1/hosts/{}", sv(&hx, "id")), None, 204).await;

        assert!(m.failures.is_empty(), "{} of {} checks failed:\n{}", m.failures.len(), m.checks, m.failures.join("\n"));
        assert!(m.checks > 200, "{}", m.checks);
        s.stop().await;
    })
    .await;
}

/// (token, path, raw body, status, code, field).
type Case<'a> = (&'a str, &'a str, String, u16, &'a str, Option<&'a str>);

#[tokio::test]
async fn bad_input_names_the_field() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        let (_a, ta) = s.tenant("a").await;
        s.create("/v1/hosts", ADMIN, json!({"name": "h"})).await;
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
                json!({"network_id": net, "name": "s", "cidr": "10.0.1.0/24"}),
            )
            .await,
            "id",
        );
        s.create(
            "/v1/nodes",
            &ta,
            json!({"subnet_id": sub, "name": "vm", "vip": "10.0.1.10"}),
        )
        .await;
        let big = format!(
            "{{\"name\":\"{}\",\"cidr\":\"10.9.0.0/16\"}}",
            "x".repeat(300 * 1024)
        );
        let cases: Vec<Case> = vec![
            // (token, path, raw body, status, code, field)
            (
                &ta,
                "/v1/networks",
                r#"{"name": "n2", "cidr": "#.into(),
                400,
                "malformed_json",
                Some("cidr"),
            ),
            (
                &ta,
                "/v1/networks",
                r#"{"name": "n2" "#.into(),
                400,
                "malformed_json",
                None,
            ),
            (
                &ta,
                "/v1/networks",
                String::new(),
                400,
                "malformed_json",
                None,
            ),
            (&ta, "/v1/networks", "[]".into(), 400, "invalid_body", None),
            (
                &ta,
                "/v1/networks",
                r#"{"name":"n2","cidr":"10.0.0.0/16","colour":"red"}"#.into(),
                400,
                "unknown_field",
                Some("colour"),
            ),
            (
                &ta,
                "/v1/networks",
                r#"{"cidr":"10.0.0.0/16"}"#.into(),
                400,
                "missing_field",
                Some("name"),
            ),
            (
                &ta,
                "/v1/networks",
                r#"{"name":5,"cidr":"10.0.0.0/16"}"#.into(),
                400,
                "invalid_value",
                Some("name"),
            ),
            (
                &ta,
                "/v1/networks",
                r#"{"name":"n2","cidr":"banana"}"#.into(),
                422,
                "invalid_cidr",
                Some("cidr"),
            ),
            (
                &ta,
                "/v1/networks",
                r#"{"name":"n2","cidr":"10.0.0.0/33"}"#.into(),
                422,
                "invalid_cidr",
                Some("cidr"),
            ),
            (
                &ta,
                "/v1/networks",
                r#"{"name":"n2","cidr":"10.0.0.1/16"}"#.into(),
                422,
                "invalid_cidr",
                Some("cidr"),
            ),
            (
                &ta,
                "/v1/networks",
                r#"{"name":"n2","cidr":"10.0.0.0/8"}"#.into(),
                422,
                "invalid_prefix_length",
                Some("cidr"),
            ),
            (
                &ta,
                "/v1/networks",
                r#"{"name":"n2","cidr":"10.0.0.0/29"}"#.into(),
                422,
                "invalid_prefix_length",
                Some("cidr"),
            ),
            (
                &ta,
                "/v1/networks",
                r#"{"name":"bad name!","cidr":"10.0.0.0/16"}"#.into(),
                422,
                "invalid_name",
                Some("name"),
            ),
            (
                &ta,
                "/v1/networks",
                r#"{"name":"n","cidr":"10.0.0.0/16"}"#.into(),
                409,
                "conflict",
                Some("name"),
            ),
            (
                ADMIN,
                "/v1/networks",
                r#"{"name":"n2","cidr":"10.0.0.0/16"}"#.into(),
                422,
                "required",
                Some("tenant_id"),
            ),
            (&ta, "/v1/networks", big, 400, "invalid_body", None),
            (
                &ta,
                "/v1/subnets",
                format!(r#"{{"network_id":"{net}","name":"s2","cidr":"10.0.1.0/25"}}"#),
                409,
                "overlap",
                Some("cidr"),
            ),
            (
                &ta,
                "/v1/subnets",
                format!(r#"{{"network_id":"{net}","name":"s2","cidr":"10.0.0.0/8"}}"#),
                422,
                "outside_network",
                Some("cidr"),
            ),
            (
                &ta,
                "/v1/subnets",
                format!(r#"{{"network_id":"{net}","name":"s2","cidr":"10.0.2.0/30"}}"#),
                422,
                "invalid_prefix_length",
                Some("cidr"),
            ),
            (
                &ta,
                "/v1/subnets",
                r#"{"network_id":"net-000000000000","name":"s2","cidr":"10.0.2.0/24"}"#.into(),
                404,
                "not_found",
                Some("network_id"),
            ),
            (
                &ta,
                "/v1/nodes",
                format!(r#"{{"subnet_id":"{sub}","name":"x","vip":"10.0.2.5"}}"#),
                422,
                "vip_outside_subnet",
                Some("vip"),
            ),
            (
                &ta,
                "/v1/nodes",
                format!(r#"{{"subnet_id":"{sub}","name":"x","vip":"10.0.1.10"}}"#),
                409,
                "vip_taken",
                Some("vip"),
            ),
            (
                &ta,
                "/v1/nodes",
                format!(r#"{{"subnet_id":"{sub}","name":"x","vip":"10.0.1.300"}}"#),
                422,
                "invalid_ip",
                Some("vip"),
            ),
            (
                &ta,
                "/v1/nodes",
                format!(r#"{{"subnet_id":"{sub}","name":"x","vip":10}}"#),
                400,
                "invalid_value",
                Some("vip"),
            ),
            (
                ADMIN,
                "/v1/edge-pools",
                r#"{"name":"p","mode":"sideways"}"#.into(),
                400,
                "invalid_value",
                Some("mode"),
            ),
            (
                ADMIN,
                "/v1/edge-pools",
                r#"{"name":"p","public_ranges":["8.8.8.0/24"]}"#.into(),
                422,
                "range_not_allowed",
                Some("public_ranges[0]"),
            ),
            (
                ADMIN,
                "/v1/edge-pools",
                r#"{"name":"p","public_ranges":["192.0.2.0/25","192.0.2.64/26"]}"#.into(),
                422,
                "overlap",
                Some("public_ranges[1]"),
            ),
            (
                ADMIN,
                "/v1/edge-pools",
                r#"{"name":"p"}"#.into(),
                422,
                "required",
                Some("public_ranges"),
            ),
            (
                ADMIN,
                "/v1/edge-pools",
                r#"{"name":"p","split_large_flows":true,"public_ranges":["192.0.2.0/24"]}"#.into(),
                422,
                "incompatible",
                Some("split_large_flows"),
            ),
            (
                ADMIN,
                "/v1/edge-pools",
                r#"{"name":"p","nat":false,"hash_fields":[]}"#.into(),
                422,
                "empty",
                Some("hash_fields"),
            ),
            (
                ADMIN,
                "/v1/edge-pools",
                r#"{"name":"p","nat":false,"hash_fields":["src_ip","src_ip"]}"#.into(),
                422,
                "duplicate",
                Some("hash_fields[1]"),
            ),
            (
                ADMIN,
                "/v1/edge-pools",
                r#"{"name":"p","nat":false,"hash_fields":["src_mac"]}"#.into(),
                400,
                "invalid_value",
                Some("hash_fields[0]"),
            ),
            (
                ADMIN,
                "/v1/edges",
                r#"{"pool_id":"pool-000000000000","name":"e","weight":-1}"#.into(),
                400,
                "invalid_value",
                Some("weight"),
            ),
            (
                ADMIN,
                "/v1/edges",
                r#"{"pool_id":"pool-000000000000","name":"e"}"#.into(),
                404,
                "not_found",
                Some("pool_id"),
            ),
            (
                &ta,
                "/v1/routes",
                format!(r#"{{"network_id":"{net}","destination":"0.0.0.0","target":"blackhole"}}"#),
                422,
                "invalid_cidr",
                Some("destination"),
            ),
            (
                &ta,
                "/v1/routes",
                format!(r#"{{"network_id":"{net}","destination":"0.0.0.0/0","target":"nowhere"}}"#),
                422,
                "invalid_target",
                Some("target"),
            ),
            (
                &ta,
                "/v1/routes",
                format!(r#"{{"network_id":"{net}","subnet_id":"sub-000000000000","destination":"0.0.0.0/0","target":"blackhole"}}"#),
                404,
                "not_found",
                Some("subnet_id"),
            ),
            (
                ADMIN,
                "/v1/elastic-ips",
                r#"{"pool_id":"pool-000000000000","tenant_id":"ten-000000000000","address":"1.2.3"}"#.into(),
                422,
                "invalid_ip",
                Some("address"),
            ),
            (
                ADMIN,
                "/v1/edge-pools",
                r#"{"name":"pz","public_ranges":["192.0.2.0/24"],"port_block_size":100000}"#.into(),
                422,
                "out_of_range",
                Some("port_block_size"),
            ),
            (
                ADMIN,
                "/v1/resolve",
                format!(r#"{{"network_id":"{net}"}}"#),
                400,
                "missing_field",
                Some("ip"),
            ),
        ];
        for (tok, path, body, status, code, field) in cases {
            let got = s.raw("POST", path, Some(tok), Some(&body)).await;
            let shown = if body.len() > 80 {
                format!("{}...", &body[..80])
            } else {
                body.clone()
            };
            assert!(
                got.0 == status && got.1["code"] == code && got.1["field"].as_str() == field,
                "POST {path} {shown}: got {} {}, want {status} {code} {field:?}",
                got.0,
                got.1
            );
            assert_error(&got, status, code, field);
        }
        // Authentication failures.
        for auth in [
            None,
            Some("Basic Zm9vOmJhcg=="),
            Some("Bearer "),
            Some("Bearer cnpt_nope"),
        ] {
            let mut r = reqwest::Client::new().get(format!("{}/v1/networks", s.base));
            if let Some(a) = auth {
                r = r.header("authorization", a);
            }
            let resp = r.send().await.unwrap();
            assert_eq!(resp.status().as_u16(), 401, "{auth:?}");
            let v: Value = resp.json().await.unwrap();
            assert_eq!(v["code"], "unauthorized");
        }
        // Path and query problems are JSON too.
        let (st, v) = s.raw("GET", "/v1/networks/%FF%FE", Some(&ta), None).await;
        assert!(st == 400 || st == 404, "{st} {v}");
        assert!(v["code"].is_string());
        s.stop().await;
    })
    .await;
}

/// A principal (label, token) and the statuses it should get for each of three resolves.
type ResolveRow<'a> = ((&'a str, Option<&'a str>), [u16; 3]);

/// Resolves every `asks[k]` as each row's principal, wanting the row's `k`th status.
async fn resolve_rows(m: &mut Matrix<'_>, rows: &[ResolveRow<'_>], asks: &[Value], stage: &str) {
    let before = m.failures.len();
    for (who, wants) in rows {
        for (k, want) in wants.iter().enumerate() {
            m.check(*who, "POST", "/v1/resolve", Some(asks[k].clone()), *want)
                .await;
        }
    }
    for f in &mut m.failures[before..] {
        *f = format!("[{stage}] {f}");
    }
}

/// Resolution across a peering: an agent may resolve in a network actively peered with one
/// where its host has a node (both ways), not while the peering is pending, not after it is
/// deleted, and never in a network its networks are not peered with.
#[tokio::test]
async fn resolve_follows_active_peerings() {
    each_backend(|db| async move {
        let s = Server::start(&db).await;
        // Tenant A: n1 (10.0.0.0/16) with a node on h1; tenant B: bn (10.2.0.0/16) with a
        // node on h2, and b3 (10.3.0.0/16) with a node on h3, never peered. h4 hosts nothing.
        let (_a, ta) = s.tenant("tenant-a").await;
        let (_b, tb) = s.tenant("tenant-b").await;
        let mut hosts = Vec::new();
        for name in ["h1", "h2", "h3", "h4"] {
            hosts.push(s.create("/v1/hosts", ADMIN, json!({"name": name})).await);
        }
        let mut nets = Vec::new();
        for (tok, name, cidr, host) in [(&ta, "n1", "10.0.0.0/16", 0), (&tb, "bn", "10.2.0.0/16", 1), (&tb, "b3", "10.3.0.0/16", 2)] {
            let net = sv(&s.create("/v1/networks", tok, json!({"name": name, "cidr": cidr})).await, "id");
            let sub = s.create("/v1/subnets", tok, json!({"network_id": net, "name": "s", "cidr": cidr.replace("0.0/16", "0.0/24")})).await;
            let node = s.create("/v1/nodes", tok, json!({"subnet_id": sv(&sub, "id"), "name": "vm", "host_id": sv(&hosts[host], "id")})).await;
            nets.push((net, sv(&node, "vip")));
        }
        let pool = sv(&s.create("/v1/edge-pools", ADMIN, json!({"name": "p", "nat": false})).await, "id");
        let e = s.create("/v1/edges", ADMIN, json!({"pool_id": pool, "name": "e"})).await;
        s.create("/v1/routes", &ta, json!({"network_id": nets[0].0, "destination": "0.0.0.0/0", "target": format!("pool:{pool}")})).await;
        let cred = |i: usize| sv(&hosts[i], "credential");
        let (c1, c2, c3, c4, ce) = (cred(0), cred(1), cred(2), cred(3), sv(&e, "credential"));
        let (h1, h2, h3, h4, edge) = (("h1", Some(c1.as_str())), ("h2", Some(c2.as_str())), ("h3", Some(c3.as_str())), ("h4", Some(c4.as_str())), ("edge", Some(ce.as_str())));
        let ask = |k: usize| json!({"network_id": nets[k].0, "ip": nets[k].1});
        let mut m = Matrix { s: &s, failures: Vec::new(), checks: 0 };
        // (who, [want for n1, bn, b3]) in each state of the peering n1 <-> bn.
        let unpeered = [(h1, [200, 404, 404]), (h2, [404, 200, 404]), (h3, [404, 404, 200]), (h4, [404, 404, 404]), (edge, [200, 404, 404])];
        let peered = [(h1, [200, 200, 404]), (h2, [200, 200, 404]), (h3, [404, 404, 200]), (h4, [404, 404, 404]), (edge, [200, 404, 404])];
        let asks: Vec<Value> = (0..3).map(ask).collect();
        resolve_rows(&mut m, &unpeered, &asks, "no peering").await;
        let pe = sv(&s.create("/v1/peerings", &ta, json!({"network_id": nets[0].0, "peer_network_id": nets[1].0})).await, "id");
        resolve_rows(&mut m, &unpeered, &asks, "pending").await;
        assert_eq!(s.call("POST", &format!("/v1/peerings/{pe}/accept"), Some(&tb), None).await.0, 200);
        resolve_rows(&mut m, &peered, &asks, "active").await;
        assert_eq!(s.delete(&format!("/v1/peerings/{pe}"), &tb).await, 204);
        resolve_rows(&mut m, &unpeered, &asks, "deleted").await;
        // Inside a tenant a peering is active at once.
        let n2 = sv(&s.create("/v1/networks", &ta, json!({"name": "n2", "cidr": "10.1.0.0/16"})).await, "id");
        let sub2 = sv(&s.create("/v1/subnets", &ta, json!({"network_id": n2, "name": "s", "cidr": "10.1.0.0/24"})).await, "id");
        let vip2 = sv(&s.create("/v1/nodes", &ta, json!({"subnet_id": sub2, "name": "vm", "host_id": sv(&hosts[3], "id")})).await, "vip");
        let ask2 = json!({"network_id": n2, "ip": vip2});
        m.check(h1, "POST", "/v1/resolve", Some(ask2.clone()), 404).await;
        s.create("/v1/peerings", &ta, json!({"network_id": n2, "peer_network_id": nets[0].0})).await;
        m.check(h1, "POST", "/v1/resolve", Some(ask2.clone()), 200).await;
        m.check(h4, "POST", "/v1/resolve", Some(ask(0)), 200).await;
        m.check(h2, "POST", "/v1/resolve", Some(ask2), 404).await;
        assert!(m.failures.is_empty(), "{} of {} checks failed:\n{}", m.failures.len(), m.checks, m.failures.join("\n"));
        assert_eq!(m.checks, 4 * 15 + 4);
        s.stop().await;
    })
    .await;
}
