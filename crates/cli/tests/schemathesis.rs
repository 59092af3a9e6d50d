//! schemathesis (PyPI) against a real `canopy manager`'s `/openapi.json`: no 5xx, every
//! status declared, every response matching its schema.
//!
//! Uses `$CANOPY_SCHEMATHESIS` (path to `st`), else `st` on PATH. When neither is there it
//! prints `SKIPPED: schemathesis not installed` and passes, unless `CI` is set (`.ci/run`
//! installs it and sets `CANOPY_SCHEMATHESIS`), where it fails.
//!
//! Flags, from crates/manager/DESIGN-NOTES.md:
//! - `-c all --exclude-checks positive_data_acceptance`: that check (ST202) expects every
//!   schema-valid body to be accepted, but the API refuses with 422, on purpose, what JSON
//!   Schema cannot say: host bits in a CIDR, a subnet outside its network, `tenant_id`
//!   required only for the admin, a NAT pool without ranges, a route to a missing pool,
//!   `weight: 444.0` (a JSON-Schema integer that serde's `u32` refuses).
//! - `--exclude-path /v1/watch`: the watch stream stays open until `timeout_secs`.
//! - `--baseline tests/schemathesis-baseline.json`: findings accepted until the manager
//!   fixes them, each one exactly (operation, check, failure). Today one: `PATCH
//!   /v1/edges/{id}` with the body `[null, null]` answers 200, because serde reads a JSON
//!   array as a struct's fields in order (an all-optional `EdgeUpdate`). The fix belongs in
//!   the manager's `ApiJson` (refuse a body that is not a JSON object); then drop the entry.
//! - The manager is seeded (through the CLI) with a tenant, a host, pools, an edge, a
//!   network, a subnet and a node, so that the stateful phase reaches existing objects
//!   instead of answering 404 to everything.
//! - It runs in a temp dir (schemathesis writes `.schemathesis/` and `.hypothesis/` into
//!   its working directory) and is killed if it runs past `CANOPY_SCHEMATHESIS_TIMEOUT`
//!   seconds (default 180).

mod common;

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::Manager;

const ADMIN: &str = "admin-secret-for-schemathesis";

/// The `st` to run, or `None` when schemathesis is not installed.
fn find_st() -> Option<PathBuf> {
    let candidate = std::env::var_os("CANOPY_SCHEMATHESIS")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("st"));
    let ok = Command::new(&candidate)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    ok.then_some(candidate)
}

#[test]
fn schemathesis_finds_no_server_errors_or_schema_violations() {
    let Some(st) = find_st() else {
        if std::env::var_os("CI").is_some() {
            panic!(
                "schemathesis is required in CI: .ci/run installs it (pip) and sets \
                 CANOPY_SCHEMATHESIS; neither that nor `st` on PATH works"
            );
        }
        println!(
            "SKIPPED: schemathesis not installed (pip install schemathesis, or set \
             CANOPY_SCHEMATHESIS=/path/to/st)"
        );
        return;
    };
    let timeout = std::env::var("CANOPY_SCHEMATHESIS_TIMEOUT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(180u64);
    let m = Manager::start(ADMIN);
    seed(&m);
    let baseline = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/schemathesis-baseline.json"
    );
    let work = tempfile::tempdir().expect("temp dir");
    let out_path = work.path().join("st.out");
    let out = std::fs::File::create(&out_path).expect("output file");
    let mut child = Command::new(&st)
        .arg("run")
        .arg(format!("{}/openapi.json", m.url))
        .args(["-H", &format!("Authorization: Bearer {ADMIN}")])
        .args(["--exclude-path", "/v1/watch"])
        .args(["-c", "all", "--exclude-checks", "positive_data_acceptance"])
        .args(["--baseline", baseline])
        .args(["-n", "30", "--request-timeout", "10", "--no-color"])
        .current_dir(work.path())
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::from(out.try_clone().expect("dup")))
        .stderr(Stdio::from(out))
        .spawn()
        .expect("spawn schemathesis");
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait schemathesis") {
            break Some(s);
        }
        if started.elapsed() > Duration::from_secs(timeout) {
            // Only the process we started, by its PID.
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    let output = std::fs::read_to_string(&out_path).unwrap_or_default();
    println!("{output}");
    println!("schemathesis took {:.1} s", started.elapsed().as_secs_f64());
    match status {
        None => panic!("schemathesis ran past {timeout} s and was killed"),
        Some(s) if !s.success() => panic!(
            "schemathesis found problems ({s}); output above; manager log:\n{}",
            m.log()
        ),
        Some(_) => {}
    }
}

/// Objects of every kind, made with the CLI as the admin.
fn seed(m: &Manager) {
    let run = |args: &[&str]| -> serde_json::Value {
        let o = Command::new(common::canopy_bin())
            .args(args)
            .args(["--url", &m.url, "--token", ADMIN, "--output", "json"])
            .env_remove("CANOPY_URL")
            .env_remove("CANOPY_TOKEN")
            .output()
            .expect("run canopy");
        assert!(
            o.status.success(),
            "seeding: canopy {args:?}: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        serde_json::from_slice(&o.stdout).expect("JSON")
    };
    let id = |v: &serde_json::Value| v["id"].as_str().expect("id").to_string();
    let tenant = id(&run(&["tenant", "create", "seed"]));
    run(&["tenant", "token", "create", &tenant]);
    let host = id(&run(&["host", "create", "seed-host"]));
    let pool = id(&run(&[
        "pool",
        "create",
        "seed-nat",
        "--public-range",
        "203.0.113.0/28",
    ]));
    run(&[
        "pool", "create", "seed-vpn", "--no-nat", "--mode", "anycast",
    ]);
    run(&["edge", "create", "seed-edge", "--pool", &pool]);
    let net = id(&run(&[
        "network",
        "create",
        "seed-net",
        "--cidr",
        "10.9.0.0/16",
        "--tenant",
        &tenant,
    ]));
    let sub = id(&run(&[
        "subnet",
        "create",
        "seed-sub",
        "--network",
        &net,
        "--cidr",
        "10.9.1.0/24",
    ]));
    run(&[
        "node", "create", "seed-vm", "--subnet", &sub, "--host", &host,
    ]);
}
