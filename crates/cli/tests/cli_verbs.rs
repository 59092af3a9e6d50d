//! The CLI verbs (`canopy <resource> create|list|show|delete`) as subprocesses against a
//! real `canopy manager` process.

mod common;

use std::process::{Command, Output};

use common::{canopy_bin, Manager};
use serde_json::Value;

const ADMIN: &str = "admin-secret-for-cli-tests";

/// Runs `canopy <args>` with only what `env` sets (CANOPY_URL/CANOPY_TOKEN cleared first).
fn canopy(env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut cmd = Command::new(canopy_bin());
    cmd.args(args)
        .env_remove("CANOPY_URL")
        .env_remove("CANOPY_TOKEN")
        .env_remove("RUST_LOG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run canopy")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A CLI session: one manager URL and one token, passed as flags.
struct Session<'a> {
    url: &'a str,
    token: &'a str,
}

impl Session<'_> {
    fn run(&self, args: &[&str]) -> Output {
        let mut all = args.to_vec();
        all.extend(["--url", self.url, "--token", self.token]);
        canopy(&[], &all)
    }

    /// Runs a verb that must succeed and returns its stdout.
    fn ok(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            o.status.success(),
            "canopy {args:?} failed ({}):\nstdout: {}\nstderr: {}",
            o.status,
            stdout(&o),
            stderr(&o)
        );
        stdout(&o)
    }

    /// Runs a verb with `--output json` that must succeed and parses its answer.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["--output", "json"]);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("not JSON ({e}): {out}"))
    }

    /// Runs a verb that must fail and returns its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let o = self.run(args);
        assert!(
            !o.status.success(),
            "canopy {args:?} should have failed:\n{}",
            stdout(&o)
        );
        assert_eq!(o.status.code(), Some(1), "API errors exit 1: {o:?}");
        assert!(o.stdout.is_empty(), "nothing on stdout: {}", stdout(&o));
        stderr(&o)
    }
}

fn id(v: &Value) -> String {
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("no id in {v}"))
        .to_string()
}

#[test]
fn admin_and_tenant_manage_resources_through_the_cli() {
    let m = Manager::start(ADMIN);
    let admin = Session {
        url: &m.url,
        token: ADMIN,
    };

    // Admin: a tenant and its token, a host, a pool and an edge.
    let tenant = admin.json(&["tenant", "create", "acme"]);
    assert_eq!(tenant["name"], "acme");
    let tenant_id = id(&tenant);
    let tok = admin.json(&["tenant", "token", "create", &tenant_id, "--name", "ci"]);
    assert_eq!(tok["tenant_id"].as_str(), Some(tenant_id.as_str()));
    let token = tok["token"].as_str().expect("token").to_string();
    let tokens = admin.json(&["tenant", "token", "list", &tenant_id]);
    assert_eq!(tokens.as_array().map(Vec::len), Some(1));
    assert!(tokens[0].get("token").is_none(), "secrets are never listed");

    let host_out = admin.ok(&["host", "create", "rack1-h01"]);
    assert!(host_out.contains("credential"), "{host_out}");
    assert!(host_out.contains("shown only this once"), "{host_out}");
    let hosts = admin.json(&["host", "list"]);
    let host_id = id(&hosts[0]);
    assert!(hosts[0]["locator"].as_str().unwrap().ends_with("/72"));

    let pool = admin.json(&[
        "pool",
        "create",
        "internet",
        "--public-range",
        "198.51.100.0/28",
        "--hash-fields",
        "src-ip,dst-ip",
    ]);
    let pool_id = id(&pool);
    assert_eq!(pool["hash_fields"], serde_json::json!(["src_ip", "dst_ip"]));
    assert_eq!(pool["nat"], true);
    let pools = admin.ok(&["pool", "list"]);
    assert!(pools.starts_with("ID"), "{pools}");
    assert!(
        pools.contains("internet") && pools.contains("198.51.100.0/28"),
        "{pools}"
    );

    let edge = admin.json(&[
        "edge", "create", "edge1", "--pool", &pool_id, "--weight", "200",
    ]);
    let edge_id = id(&edge);
    assert_eq!(edge["weight"], 200);
    assert!(edge["credential"].as_str().unwrap().starts_with("cnpe_"));
    let drained = admin.json(&["edge", "update", &edge_id, "--state", "draining"]);
    assert_eq!(drained["state"], "draining");
    let edges = admin.ok(&["edge", "list", "--pool", &pool_id]);
    assert!(
        edges.contains("edge1") && edges.contains("draining"),
        "{edges}"
    );

    // The tenant, with its own token, from the environment this time.
    let env = [
        ("CANOPY_URL", m.url.as_str()),
        ("CANOPY_TOKEN", token.as_str()),
    ];
    let o = canopy(
        &env,
        &[
            "network",
            "create",
            "web",
            "--cidr",
            "10.0.0.0/16",
            "-o",
            "json",
        ],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    let net: Value = serde_json::from_slice(&o.stdout).unwrap();
    let net_id = id(&net);
    assert_eq!(net["tenant_id"].as_str(), Some(tenant_id.as_str()));
    assert!(net["vni"].as_u64().unwrap() >= 1);

    let t = Session {
        url: &m.url,
        token: &token,
    };
    let sub = t.json(&[
        "subnet",
        "create",
        "front",
        "--network",
        &net_id,
        "--cidr",
        "10.0.1.0/24",
    ]);
    let sub_id = id(&sub);
    assert_eq!(sub["gateway"], "10.0.1.1");
    let node = t.json(&[
        "node",
        "create",
        "vm1",
        "--subnet",
        &sub_id,
        "--host",
        &host_id,
        "--vip",
        "10.0.1.10",
    ]);
    let node_id = id(&node);
    assert_eq!(node["vip"], "10.0.1.10");
    assert_eq!(node["host_id"].as_str(), Some(host_id.as_str()));
    let auto = t.json(&["node", "create", "vm2", "--subnet", &sub_id]);
    assert_eq!(auto["vip"], "10.0.1.2", "lowest free address");

    // Lists: a table with a header and one row per object, and the same as JSON.
    let table = t.ok(&["node", "list", "--subnet", &sub_id]);
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 3, "{table}");
    assert!(
        lines[0].starts_with("ID") && lines[0].contains("VIP"),
        "{table}"
    );
    assert!(
        table.contains("vm1") && table.contains("10.0.1.10"),
        "{table}"
    );
    let nodes = t.json(&["node", "list", "--network", &net_id]);
    assert_eq!(nodes.as_array().map(Vec::len), Some(2));
    assert!(nodes.as_array().unwrap().iter().any(|n| n["id"] == node_id));
    let nets = t.json(&["network", "list"]);
    assert_eq!(nets.as_array().map(Vec::len), Some(1));
    let subs = t.ok(&["subnet", "list", "--network", &net_id]);
    assert!(
        subs.contains("front") && subs.contains("10.0.1.0/24"),
        "{subs}"
    );

    // Show: `key  value` lines.
    let shown = t.ok(&["network", "show", &net_id]);
    assert!(
        shown.contains("cidr") && shown.contains("10.0.0.0/16"),
        "{shown}"
    );
    let shown = t.json(&["node", "show", &node_id]);
    assert_eq!(shown["mac"], node["mac"]);

    // The admin resolves the address to the node and its host.
    let r = admin.json(&["resolve", "--network", &net_id, "10.0.1.10"]);
    assert_eq!(r["node_id"].as_str(), Some(node_id.as_str()));
    assert!(r["substrate_address"].is_string());

    // Errors: the manager's message and field, exit 1.
    let err = t.fails(&["network", "create", "bad", "--cidr", "10.0.0.1/16"]);
    assert!(err.starts_with("canopy: error: "), "{err}");
    assert!(err.contains("(field: cidr)"), "{err}");
    let err = t.fails(&[
        "node",
        "create",
        "vm3",
        "--subnet",
        &sub_id,
        "--vip",
        "10.0.1.10",
    ]);
    assert!(err.contains("(field: vip)"), "{err}");
    let err = t.fails(&["host", "list"]);
    assert!(
        err.contains("not found"),
        "operator resources are hidden: {err}"
    );
    let err = t.fails(&["subnet", "delete", &sub_id]);
    assert!(err.starts_with("canopy: error: "), "in use: {err}");

    // Deletes, then the lists are empty again.
    assert_eq!(
        t.ok(&["node", "delete", &node_id]),
        format!("deleted node {node_id}\n")
    );
    t.ok(&["node", "delete", &id(&auto)]);
    let err = t.fails(&["node", "show", &node_id]);
    assert!(err.contains("not found"), "{err}");
    t.ok(&["subnet", "delete", &sub_id]);
    t.ok(&["network", "delete", &net_id]);
    assert_eq!(t.json(&["network", "list"]), serde_json::json!([]));
    admin.ok(&["edge", "delete", &edge_id]);
    admin.ok(&["pool", "delete", &pool_id]);
    admin.ok(&["host", "delete", &host_id]);
    admin.ok(&["tenant", "token", "delete", &tenant_id, &id(&tok)]);
    let err = t.fails(&["network", "list"]);
    assert!(err.contains("token"), "revoked: {err}");
    admin.ok(&["tenant", "delete", &tenant_id]);
    assert_eq!(admin.json(&["tenant", "list"]), serde_json::json!([]));
}

#[test]
fn missing_token_and_unreachable_manager_are_explained() {
    let o = canopy(&[], &["network", "list"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("canopy: error: no API token"), "{err}");
    assert!(
        err.contains("--token") && err.contains("CANOPY_TOKEN"),
        "{err}"
    );

    // Port 1 on loopback: nothing listens there.
    let o = canopy(
        &[("CANOPY_TOKEN", "x")],
        &["network", "list", "--url", "http://127.0.0.1:1"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(
        err.contains("cannot reach the manager at http://127.0.0.1:1"),
        "{err}"
    );
}

#[test]
fn wrong_token_is_refused_with_a_hint() {
    let m = Manager::start(ADMIN);
    let o = canopy(
        &[("CANOPY_URL", &m.url), ("CANOPY_TOKEN", "not-a-token")],
        &["tenant", "list"],
    );
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.starts_with("canopy: error: "), "{err}");
    assert!(err.contains("CANOPY_TOKEN"), "{err}");
}

#[test]
fn every_verb_has_help_with_an_example() {
    let verbs: &[&[&str]] = &[
        &["tenant", "create"],
        &["tenant", "list"],
        &["tenant", "show"],
        &["tenant", "delete"],
        &["tenant", "token", "create"],
        &["tenant", "token", "list"],
        &["tenant", "token", "delete"],
        &["network", "create"],
        &["network", "list"],
        &["network", "show"],
        &["network", "delete"],
        &["subnet", "create"],
        &["subnet", "list"],
        &["subnet", "show"],
        &["subnet", "delete"],
        &["host", "create"],
        &["host", "list"],
        &["host", "show"],
        &["host", "delete"],
        &["node", "create"],
        &["node", "list"],
        &["node", "show"],
        &["node", "delete"],
        &["pool", "create"],
        &["pool", "list"],
        &["pool", "show"],
        &["pool", "delete"],
        &["edge", "create"],
        &["edge", "list"],
        &["edge", "show"],
        &["edge", "update"],
        &["edge", "delete"],
        &["resolve"],
        &["route", "create"],
        &["route", "list"],
        &["route", "show"],
        &["route", "delete"],
        &["peering", "create"],
        &["peering", "accept"],
        &["peering", "list"],
        &["peering", "show"],
        &["peering", "delete"],
        &["eip", "allocate"],
        &["eip", "associate"],
        &["eip", "disassociate"],
        &["eip", "release"],
        &["eip", "list"],
        &["eip", "show"],
        &["port-block", "assign"],
        &["port-block", "list"],
        &["port-block", "release"],
        &["port-block", "lookup"],
        &["security-group", "create"],
        &["security-group", "list"],
        &["security-group", "show"],
        &["security-group", "delete"],
        &["security-group", "attach"],
        &["security-group", "detach"],
        &["acl", "show"],
        &["acl", "set"],
    ];
    for verb in verbs {
        let mut args = verb.to_vec();
        args.push("--help");
        let o = canopy(&[], &args);
        assert!(o.status.success(), "{verb:?} --help: {}", stderr(&o));
        let help = stdout(&o);
        let example = format!("Example: canopy {}", verb[0]);
        assert!(
            help.contains(&example),
            "{verb:?} --help has no example:\n{help}"
        );
        assert!(
            help.contains("--url") && help.contains("--output"),
            "{help}"
        );
    }
}

/// A tenant with its token, created by the admin: (tenant id, token).
fn tenant_with_token(admin: &Session, name: &str) -> (String, String) {
    let tenant = admin.json(&["tenant", "create", name]);
    let tok = admin.json(&["tenant", "token", "create", &id(&tenant)]);
    (
        id(&tenant),
        tok["token"].as_str().expect("token").to_string(),
    )
}

/// Runs `canopy <args>` expecting clap to refuse the arguments (exit 2) and returns stderr.
fn usage_error(s: &Session, args: &[&str]) -> String {
    let o = s.run(args);
    assert_eq!(o.status.code(), Some(2), "usage error expected: {o:?}");
    stderr(&o)
}

#[test]
fn routes_port_blocks_and_elastic_ips_through_the_cli() {
    let m = Manager::start(ADMIN);
    let admin = Session {
        url: &m.url,
        token: ADMIN,
    };
    let (tenant_id, token) = tenant_with_token(&admin, "acme");
    let t = Session {
        url: &m.url,
        token: &token,
    };
    let host_id = id(&admin.json(&["host", "create", "h1"]));
    let pool = admin.json(&[
        "pool",
        "create",
        "internet",
        "--public-range",
        "198.51.100.0/28",
    ]);
    let pool_id = id(&pool);
    let net_id = id(&t.json(&["network", "create", "web", "--cidr", "10.0.0.0/16"]));
    let sub_id = id(&t.json(&[
        "subnet",
        "create",
        "front",
        "--network",
        &net_id,
        "--cidr",
        "10.0.1.0/24",
    ]));
    let node_id = id(&t.json(&[
        "node", "create", "vm1", "--subnet", &sub_id, "--host", &host_id,
    ]));

    // Routes: create, list (table and JSON), show; a bad destination names its field.
    let target = format!("pool:{pool_id}");
    let rt = t.json(&[
        "route",
        "create",
        "--network",
        &net_id,
        "--destination",
        "0.0.0.0/0",
        "--target",
        &target,
    ]);
    let rt_id = id(&rt);
    assert_eq!(rt["edge_pool_id"].as_str(), Some(pool_id.as_str()));
    assert_eq!(rt["subnet_id"], Value::Null);
    let table = t.ok(&["route", "list", "--network", &net_id]);
    assert!(
        table.starts_with("ID") && table.contains("DESTINATION"),
        "{table}"
    );
    assert!(
        table.contains("0.0.0.0/0") && table.contains(&target),
        "{table}"
    );
    assert_eq!(
        t.json(&["route", "show", &rt_id])["target"].as_str(),
        Some(target.as_str())
    );
    let sub_rt = t.json(&[
        "route",
        "create",
        "--network",
        &net_id,
        "--subnet",
        &sub_id,
        "--destination",
        "192.0.2.0/24",
        "--target",
        "blackhole",
    ]);
    assert_eq!(sub_rt["subnet_id"].as_str(), Some(sub_id.as_str()));
    let listed = t.json(&["route", "list", "--subnet", &sub_id]);
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    let err = t.fails(&[
        "route",
        "create",
        "--network",
        &net_id,
        "--destination",
        "10.0.0.1/8",
        "--target",
        "blackhole",
    ]);
    assert!(err.contains("(field: destination)"), "{err}");
    assert_eq!(
        t.ok(&["route", "delete", &id(&sub_rt)]),
        format!("deleted route {}\n", id(&sub_rt))
    );

    // Port blocks: the admin assigns one (the network routes to the NAT pool), then finds
    // who held an address and port at a time.
    let pb = admin.json(&["port-block", "assign", "--node", &node_id]);
    let pb_id = id(&pb);
    assert_eq!(pb["pool_id"].as_str(), Some(pool_id.as_str()));
    let address = pb["address"].as_str().unwrap().to_string();
    let port = pb["port_first"].as_u64().unwrap().to_string();
    let at = pb["created_at"].as_str().unwrap().to_string();
    let blocks = admin.ok(&["port-block", "list", "--node", &node_id]);
    assert!(
        blocks.contains(&pb_id) && blocks.contains(&address),
        "{blocks}"
    );
    let rec = admin.json(&[
        "port-block",
        "lookup",
        "--address",
        &address,
        "--port",
        &port,
        "--at",
        &at,
    ]);
    assert_eq!(rec["node_id"].as_str(), Some(node_id.as_str()));
    assert_eq!(rec["vip"], "10.0.1.2");
    let shown = admin.ok(&[
        "port-block",
        "lookup",
        "--address",
        &address,
        "--port",
        &port,
    ]);
    assert!(
        shown.contains("vip") && shown.contains("10.0.1.2"),
        "{shown}"
    );
    let err = admin.fails(&[
        "port-block",
        "lookup",
        "--address",
        &address,
        "--port",
        &port,
        "--at",
        "yesterday",
    ]);
    assert!(err.contains("(field: at)"), "{err}");
    admin.ok(&["port-block", "release", &pb_id]);
    let rec = admin.json(&[
        "port-block",
        "lookup",
        "--address",
        &address,
        "--port",
        &port,
        "--at",
        &at,
    ]);
    assert!(
        rec["released_at"].is_string(),
        "the log outlives the block: {rec}"
    );

    // Elastic IPs: the admin allocates, the tenant associates, disassociates, releases.
    let eip = admin.json(&[
        "eip", "allocate", "--pool", &pool_id, "--tenant", &tenant_id,
    ]);
    let eip_id = id(&eip);
    assert!(eip["address"].as_str().unwrap().starts_with("198.51.100."));
    assert_eq!(eip["node_id"], Value::Null);
    let assoc = t.json(&["eip", "associate", &eip_id, "--node", &node_id]);
    assert_eq!(assoc["node_id"].as_str(), Some(node_id.as_str()));
    assert_eq!(assoc["host_id"].as_str(), Some(host_id.as_str()));
    let table = t.ok(&["eip", "list"]);
    assert!(
        table.contains(&eip_id) && table.contains(&node_id),
        "{table}"
    );
    let err = t.fails(&["eip", "release", &eip_id]);
    assert!(err.starts_with("canopy: error: "), "associated: {err}");
    let dis = t.json(&["eip", "disassociate", &eip_id]);
    assert_eq!(dis["node_id"], Value::Null);
    assert_eq!(
        t.ok(&["eip", "release", &eip_id]),
        format!("released elastic IP {eip_id}\n")
    );
    assert_eq!(t.json(&["eip", "list"]), serde_json::json!([]));
    t.ok(&["route", "delete", &rt_id]);
}

#[test]
fn peerings_security_groups_and_acls_through_the_cli() {
    let m = Manager::start(ADMIN);
    let admin = Session {
        url: &m.url,
        token: ADMIN,
    };
    let (_, token_a) = tenant_with_token(&admin, "acme");
    let (_, token_b) = tenant_with_token(&admin, "beta");
    let a = Session {
        url: &m.url,
        token: &token_a,
    };
    let b = Session {
        url: &m.url,
        token: &token_b,
    };
    admin.ok(&["host", "create", "h1"]);
    let net_a = id(&a.json(&["network", "create", "web", "--cidr", "10.0.0.0/16"]));
    let net_a2 = id(&a.json(&["network", "create", "db", "--cidr", "10.1.0.0/16"]));
    let net_b = id(&b.json(&["network", "create", "partner", "--cidr", "10.2.0.0/16"]));
    let sub_id = id(&a.json(&[
        "subnet",
        "create",
        "front",
        "--network",
        &net_a,
        "--cidr",
        "10.0.1.0/24",
    ]));
    let node_id = id(&a.json(&["node", "create", "vm1", "--subnet", &sub_id]));

    // Peerings: inside a tenant active at once; across tenants pending until accepted.
    let own = a.json(&[
        "peering",
        "create",
        "--network",
        &net_a,
        "--peer-network",
        &net_a2,
    ]);
    assert_eq!(own["state"], "active");
    let cross = a.json(&[
        "peering",
        "create",
        "--network",
        &net_a,
        "--peer-network",
        &net_b,
    ]);
    let peer_id = id(&cross);
    assert_eq!(cross["state"], "pending");
    let table = b.ok(&["peering", "list"]);
    assert!(
        table.contains(&peer_id) && table.contains("pending"),
        "{table}"
    );
    let accepted = b.json(&["peering", "accept", &peer_id]);
    assert_eq!(accepted["state"], "active");
    assert_eq!(a.json(&["peering", "show", &peer_id])["state"], "active");
    let target = format!("peering:{peer_id}");
    let rt = a.json(&[
        "route",
        "create",
        "--network",
        &net_a,
        "--destination",
        "10.2.0.0/16",
        "--target",
        &target,
    ]);
    assert_eq!(rt["peering_id"].as_str(), Some(peer_id.as_str()));
    let err = a.fails(&["peering", "delete", &peer_id]);
    assert!(err.starts_with("canopy: error: "), "routed: {err}");
    a.ok(&["route", "delete", &id(&rt)]);
    assert_eq!(
        b.ok(&["peering", "delete", &peer_id]),
        format!("deleted peering {peer_id}\n")
    );
    a.ok(&["peering", "delete", &id(&own)]);
    assert_eq!(a.json(&["peering", "list"]), serde_json::json!([]));

    // Security groups: rules as flags, shown back in the same syntax.
    let sg = a.json(&[
        "security-group",
        "create",
        "ssh",
        "--network",
        &net_a,
        "--rule",
        "ingress tcp 22 10.0.0.0/16",
        "--rule",
        "ingress tcp 8000-8080 0.0.0.0/0",
        "--rule",
        "egress any 0.0.0.0/0",
    ]);
    let sg_id = id(&sg);
    assert_eq!(sg["rules"].as_array().map(Vec::len), Some(3), "{sg}");
    assert_eq!(sg["rules"][0]["port_from"], 22);
    assert_eq!(sg["rules"][1]["port_to"], 8080);
    let shown = a.ok(&["security-group", "show", &sg_id]);
    assert!(
        shown.contains("ingress tcp 22 10.0.0.0/16; ingress tcp 8000-8080 0.0.0.0/0"),
        "{shown}"
    );
    let groups = a.json(&["security-group", "list", "--network", &net_a]);
    let names: Vec<&str> = groups
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    assert!(
        names.contains(&"default") && names.contains(&"ssh"),
        "{names:?}"
    );
    let err = a.fails(&[
        "security-group",
        "create",
        "bad",
        "--network",
        &net_a,
        "--rule",
        "ingress tcp 22 10.0.0.0/99",
    ]);
    assert!(err.contains("(field: rules[0]."), "{err}");
    let err = usage_error(
        &a,
        &[
            "security-group",
            "create",
            "bad",
            "--network",
            &net_a,
            "--rule",
            "sideways tcp 22 10.0.0.0/16",
        ],
    );
    assert!(err.contains("--rule") && err.contains("direction"), "{err}");

    let att = a.json(&["security-group", "attach", &sg_id, "--node", &node_id]);
    assert_eq!(att["group_id"].as_str(), Some(sg_id.as_str()));
    let attached = a.json(&["security-group", "list", "--node", &node_id]);
    assert_eq!(
        attached.as_array().map(Vec::len),
        Some(2),
        "default and ssh: {attached}"
    );
    assert_eq!(
        a.ok(&["security-group", "detach", &sg_id, "--node", &node_id]),
        format!("detached security group {sg_id} from node {node_id}\n")
    );
    let table = a.ok(&["security-group", "list", "--node", &node_id]);
    assert!(
        table.starts_with("NODE") && !table.contains(&sg_id),
        "{table}"
    );
    a.ok(&["security-group", "delete", &sg_id]);
    let err = a.fails(&["security-group", "show", &sg_id]);
    assert!(err.contains("not found"), "{err}");

    // Network ACLs: replaced whole, shown in the flag syntax, cleared with --clear.
    let acl = a.json(&["acl", "show", "--subnet", &sub_id]);
    assert_eq!(acl["rules"], serde_json::json!([]));
    let acl = a.json(&[
        "acl",
        "set",
        "--subnet",
        &sub_id,
        "--rule",
        "200 deny ingress any 0.0.0.0/0",
        "--rule",
        "100 allow ingress tcp 80 0.0.0.0/0",
    ]);
    assert_eq!(acl["rules"][0]["number"], 100, "stored sorted: {acl}");
    let shown = a.ok(&["acl", "show", "--subnet", &sub_id]);
    assert!(
        shown.contains("100 allow ingress tcp 80 0.0.0.0/0; 200 deny ingress any 0.0.0.0/0"),
        "{shown}"
    );
    let err = a.fails(&[
        "acl",
        "set",
        "--subnet",
        &sub_id,
        "--rule",
        "100 allow ingress tcp 80 0.0.0.0/0",
        "--rule",
        "100 deny ingress any 0.0.0.0/0",
    ]);
    assert!(err.contains("(field: rules[1]."), "duplicate number: {err}");
    usage_error(&a, &["acl", "set", "--subnet", &sub_id]);
    let cleared = a.json(&["acl", "set", "--subnet", &sub_id, "--clear"]);
    assert_eq!(cleared["rules"], serde_json::json!([]));
}

#[test]
fn bad_worker_cpus_are_refused_before_the_agent_connects() {
    // Nothing listens at the manager's address: a flag error must come first.
    let agent = |extra: &[&str]| {
        let mut args = vec![
            "agent",
            "--manager",
            "http://127.0.0.1:1",
            "--token",
            "x",
            "--host-id",
            "host-0",
            "--state-dir",
            "/nonexistent/canopy-test",
        ];
        args.extend_from_slice(extra);
        canopy(&[], &args)
    };
    let o = agent(&["--cpus", "3-1"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("the range goes backwards"),
        "{}",
        stderr(&o)
    );

    let o = agent(&["--cpus", "0-100000"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("numbered below"), "{}", stderr(&o));

    let o = agent(&["--cpus", "1023"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("--cpus: CPU 1023 is not one this process may run on"),
        "{err}"
    );
    assert!(!err.contains("cannot reach"), "{err}");

    let o = agent(&["--cpus", "0", "--workers", "2"]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("--workers 2 but --cpus lists 1 CPUs"),
        "{}",
        stderr(&o)
    );
}
