//! What the lab's end-to-end tests share: the root and tools check, the lab they build,
//! and small helpers to run commands in VMs.

#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::time::Duration;

use lab::{Lab, PoolMode, Spec, TenantSpec, VmSpec};

pub const T: Duration = Duration::from_secs(30);

pub fn ready() -> bool {
    if !lab::is_root() {
        println!("SKIPPED: needs root (network namespaces, TAP devices)");
        return false;
    }
    let have = |p: &str, a: &[&str]| {
        std::process::Command::new(p)
            .args(a)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status()
            .is_ok()
    };
    let mut missing = Vec::new();
    for (p, a, pkg) in [
        ("ip", "-V", "iproute2"),
        ("busybox", "--help", "busybox"),
        ("ping", "-V", "iputils-ping"),
        ("iperf3", "--version", "iperf3"),
        ("tcpdump", "--version", "tcpdump"),
        ("sysctl", "--version", "procps"),
    ] {
        if !have(p, &[a]) {
            missing.push(pkg);
        }
    }
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install {missing:?} (see .ci/run)"
        );
        println!(
            "SKIPPED: missing {missing:?} (apt-get install {})",
            missing.join(" ")
        );
        return false;
    }
    true
}

pub fn vm(name: &str, host: usize, last: u8) -> VmSpec {
    VmSpec {
        name: name.into(),
        host,
        vip: Some(Ipv4Addr::new(10, 0, 0, last)),
    }
}

/// Two hosts; tenants t1 (a1, a2 on h1; a3 on h2) and t2 (b1 on h1; b3, b4 on h2) on the
/// same 10.0.0.0/16; a pool of two edges in `mode`.
pub fn spec(mode: PoolMode) -> Spec {
    let mut spec = Spec::simple(2, 0, 2, mode, env!("CARGO_BIN_EXE_canopy").as_ref());
    // One worker per VM of the first host (ports are numbered in turn): a1 and a2 are
    // always on different workers, whatever the machine's cores.
    spec.workers = 3;
    spec.tenants = vec![
        TenantSpec {
            name: "t1".into(),
            cidr: "10.0.0.0/16".into(),
            subnet: "10.0.0.0/24".into(),
            internet: true,
            vms: vec![vm("a1", 0, 10), vm("a2", 0, 11), vm("a3", 1, 20)],
        },
        TenantSpec {
            name: "t2".into(),
            cidr: "10.0.0.0/16".into(),
            subnet: "10.0.0.0/24".into(),
            internet: true,
            vms: vec![vm("b1", 0, 10), vm("b3", 1, 20), vm("b4", 1, 40)],
        },
    ];
    spec
}

pub fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

pub fn sh(lab: &Lab, vm: &str, prog: &str, args: &[&str]) -> (bool, String) {
    let o = lab.vm_exec(vm, prog, args, T).expect("run in VM");
    (o.status.success(), text(&o))
}

#[track_caller]
pub fn ping3(lab: &Lab, from: &str, to: &str) {
    let (ok, log) = sh(lab, from, "ping", &["-c", "3", "-i", "0.2", "-W", "2", to]);
    assert!(
        ok && log.contains("3 received"),
        "ping {to} from {from}: {log}"
    );
    println!("  {from}: ping {to}: 3/3");
}

/// The Prometheus counter `name` (with its labels) from the metrics of the daemon in `ns`.
pub fn metric(ns: &str, name: &str) -> u64 {
    let text =
        lab::flows::http_get(ns, "127.0.0.1:9460".parse().unwrap(), "/metrics").expect("metrics");
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse::<f64>().ok())
        .map(|v| v as u64)
        .unwrap_or(0)
}

/// Runs `checks` on `lab` one after the other, each on its own (a panic is reported and
/// the next check runs); then removes the lab and fails if any check did.
pub type Check = fn(&mut Lab);

pub fn run_checks(mut lab: Lab, checks: &[(&str, Check)]) {
    let mut failed = Vec::new();
    for (name, check) in checks {
        println!("--- {name}");
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| check(&mut lab)));
        match r {
            Ok(()) => println!("PASS {name}"),
            Err(e) => {
                let msg = e
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                println!("FAIL {name}: {msg}");
                failed.push(*name);
            }
        }
    }
    lab.shutdown().expect("remove the lab");
    assert!(failed.is_empty(), "failed: {failed:?}");
}
