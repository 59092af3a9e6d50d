//! The manager as a separate process through `manager::run`: it prints where it listens,
//! keeps every acknowledged write across SIGKILL, and stops cleanly on SIGTERM.
//!
//! The process is this test binary run again with `manager_child_process` selected and
//! `CANOPY_CHILD_ARGS` holding the manager's flags.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use clap::Parser;
use common::{each_backend, ADMIN};
use serde_json::{json, Value};

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    args: manager::ManagerArgs,
}

#[test]
#[ignore = "helper: the manager process that the other tests in this file start"]
fn manager_child_process() {
    let Ok(line) = std::env::var("CANOPY_CHILD_ARGS") else {
        return;
    };
    let cli = Cli::parse_from(
        std::iter::once("manager".to_string()).chain(line.split_whitespace().map(String::from)),
    );
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(manager::run(cli.args))
        .unwrap();
}

/// A manager process and its base URL; killed when dropped (also when a test panics).
struct Proc {
    child: Option<Child>,
    base: String,
    lines: mpsc::Receiver<String>,
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

fn spawn(db: &str) -> Proc {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "manager_child_process",
            "--exact",
            "--ignored",
            "--nocapture",
        ])
        .env(
            "CANOPY_CHILD_ARGS",
            format!("--listen 127.0.0.1:0 --database {db} --admin-token {ADMIN}"),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(100)) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let base = rest.split_whitespace().next().unwrap().to_string();
                // The database line follows.
                let db_line = rx.recv_timeout(Duration::from_secs(5)).unwrap();
                assert!(db_line.starts_with("database: "), "{db_line}");
                assert!(!db_line.contains(":canopy@"), "password shown: {db_line}");
                return Proc {
                    child: Some(child),
                    base,
                    lines: rx,
                };
            }
            seen.push(line);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("the manager did not say where it listens: {seen:?}");
}

#[tokio::test]
async fn acknowledged_writes_survive_sigkill() {
    each_backend(|db| async move {
        let client = reqwest::Client::new();
        let mut p = spawn(&db);
        let t: Value = client
            .post(format!("{}/v1/tenants", p.base))
            .bearer_auth(ADMIN)
            .json(&json!({"name": "t"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let tenant = t["id"].as_str().unwrap().to_string();
        // Write until the process dies under us; SIGKILL lands mid-stream.
        let mut child = p.child.take();
        let mut acked: Vec<String> = Vec::new();
        let mut killer = None;
        for k in 0..100_000 {
            if k == 60 {
                let mut c = child.take().expect("child still ours");
                killer = Some(std::thread::spawn(move || {
                    std::thread::sleep(Duration::from_millis(40));
                    c.kill().expect("SIGKILL");
                    c.wait().expect("reaped")
                }));
            }
            let r = client
                .post(format!("{}/v1/networks", p.base))
                .bearer_auth(ADMIN)
                .json(&json!({"name": format!("n{k}"), "cidr": "10.0.0.0/16", "tenant_id": tenant}))
                .timeout(Duration::from_secs(10))
                .send()
                .await;
            match r {
                Ok(resp) if resp.status().as_u16() == 201 => {
                    let v: Value = match resp.json().await {
                        Ok(v) => v,
                        Err(_) => break, // the body was cut: not acknowledged
                    };
                    acked.push(v["id"].as_str().unwrap().to_string());
                }
                Ok(resp) => panic!("unexpected answer {}", resp.status()),
                Err(_) => break,
            }
        }
        let status = killer.expect("killer started").join().unwrap();
        assert!(
            !status.success(),
            "the manager was killed, not stopped: {status}"
        );
        assert!(
            acked.len() >= 60,
            "only {} writes before the kill",
            acked.len()
        );
        eprintln!("{} writes acknowledged before SIGKILL", acked.len());
        // Restart on the same database: every acknowledged network is there.
        let p = spawn(&db);
        let (st, list) = {
            let r = client
                .get(format!("{}/v1/networks", p.base))
                .bearer_auth(ADMIN)
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        };
        assert_eq!(st, 200);
        let have: std::collections::HashSet<String> = list
            .as_array()
            .unwrap()
            .iter()
            .map(|n| n["id"].as_str().unwrap().to_string())
            .collect();
        let lost: Vec<&String> = acked.iter().filter(|id| !have.contains(*id)).collect();
        assert!(
            lost.is_empty(),
            "{} acknowledged writes lost: {lost:?}",
            lost.len()
        );
        assert!(
            have.len() <= acked.len() + 1,
            "{} > {} + 1",
            have.len(),
            acked.len()
        );
        drop(p);
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_the_manager_cleanly() {
    each_backend(|db| async move {
        let mut p = spawn(&db);
        let r = reqwest::get(format!("{}/healthz", p.base)).await.unwrap();
        assert_eq!(r.status().as_u16(), 200);
        // An open watch stream (default timeout 300 s) must not hold the shutdown up.
        let mut watch = reqwest::Client::new()
            .get(format!("{}/v1/watch", p.base))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(watch.status().as_u16(), 200);
        let first = watch.chunk().await.unwrap().unwrap();
        assert!(first.starts_with(b"{\"type\":\"snapshot\""), "{first:?}");
        let st = Command::new("kill")
            .args(["-TERM", &p.child.as_ref().unwrap().id().to_string()])
            .status()
            .unwrap();
        assert!(st.success());
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = p.child.as_mut().unwrap().try_wait().unwrap() {
                assert!(status.success(), "exit status {status}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "still running 10 s after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        // The stream ended rather than being cut.
        while let Some(_c) = watch.chunk().await.unwrap() {}
        // Drain what it printed; the port is free again.
        while p.lines.try_recv().is_ok() {}
        let addr = p.base.trim_start_matches("http://").to_string();
        assert!(
            std::net::TcpListener::bind(&addr).is_ok(),
            "{addr} still bound"
        );
    })
    .await;
}
