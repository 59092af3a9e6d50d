//! `canopy lab up|status|exec|down` as a user runs them (root): the lab outlives `lab up`,
//! a second `lab up` refuses, `exec` passes exit codes through, `down` removes every
//! namespace, process and file, and running it again is fine.

mod e2e_lab_common;

use std::path::Path;
use std::process::{Command, Output};

use e2e_lab_common::{ready, text};

fn canopy(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_canopy"))
        .args(args)
        .output()
        .expect("run canopy")
}

/// Removes the lab this test made if an assertion fails half-way.
struct Down(Option<String>);

impl Drop for Down {
    fn drop(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = canopy(&["lab", "down", "--prefix", &p]);
        }
    }
}

#[test]
fn lab_commands() {
    if !ready() {
        return;
    }
    if lab::find_labs(Path::new(lab::STATE_ROOT))
        .iter()
        .any(|s| s.detached && s.any_alive())
    {
        println!("SKIPPED: a lab made by `canopy lab up` runs on this machine");
        return;
    }
    let up = canopy(&[
        "lab",
        "up",
        "--hosts",
        "2",
        "--vms-per-host",
        "1",
        "--edges",
        "1",
    ]);
    let out = text(&up);
    let prefix = out
        .split_whitespace()
        .skip_while(|w| *w != "lab")
        .nth(1)
        .unwrap_or("")
        .to_owned();
    let mut guard = Down(Some(prefix.clone()));
    assert!(up.status.success(), "lab up: {out}");
    assert!(
        prefix.starts_with("cnl") && prefix.len() == 7,
        "prefix in {out}"
    );
    assert!(
        out.contains("vm1") && out.contains("vm2") && out.contains("198.51.100.0/28"),
        "{out}"
    );
    println!("lab up: {prefix}");

    let again = canopy(&["lab", "up"]);
    assert!(!again.status.success());
    assert!(text(&again).contains("already running"), "{}", text(&again));

    let st = canopy(&["lab", "status"]);
    let st_text = text(&st);
    assert!(st.status.success(), "{st_text}");
    assert!(!st_text.contains("NOT RUNNING"), "{st_text}");
    assert!(
        st_text.contains("agent-h2") && st_text.contains("edge-e1"),
        "{st_text}"
    );

    let ping = canopy(&[
        "lab", "exec", "vm1", "--", "ping", "-c", "2", "-i", "0.2", "-W", "2", "10.0.0.3",
    ]);
    assert!(ping.status.success(), "ping vm2 from vm1: {}", text(&ping));
    let get = canopy(&[
        "lab",
        "exec",
        "vm2",
        "--",
        "busybox",
        "wget",
        "-qO-",
        "http://203.0.113.10/",
    ]);
    assert!(text(&get).contains("you are 198.51.100."), "{}", text(&get));
    let code = canopy(&["lab", "exec", "vm1", "--", "sh", "-c", "exit 7"]);
    assert_eq!(code.status.code(), Some(7));
    let missing = canopy(&["lab", "exec", "nope", "--", "true"]);
    assert!(
        text(&missing).contains("no VM \"nope\""),
        "{}",
        text(&missing)
    );

    let down = canopy(&["lab", "down"]);
    assert!(down.status.success(), "{}", text(&down));
    guard.0 = None;
    assert!(lab::namespaces_of(&prefix).is_empty());
    assert!(!Path::new(lab::STATE_ROOT).join(&prefix).exists());
    let again = canopy(&["lab", "down"]);
    assert!(again.status.success(), "{}", text(&again));
    println!(
        "lab down: everything removed; again: {}",
        text(&again).trim()
    );
}

/// A build that fails half-way (here the manager cannot start: its binary is `false`)
/// removes what it made and says why.
#[test]
fn failed_build_leaves_nothing() {
    if !ready() {
        return;
    }
    let mut spec = e2e_lab_common::spec(lab::PoolMode::Direct);
    spec.canopy = "/bin/false".into();
    let mut prefix = String::new();
    let r = lab::Lab::up(spec, &mut |l| {
        if let Some(rest) = l.strip_prefix("lab ") {
            prefix = rest.split(':').next().unwrap_or("").to_owned();
        }
    });
    let err = r.err().expect("the build fails").to_string();
    assert!(err.contains("manager exited"), "{err}");
    assert!(prefix.starts_with("cnl"), "{prefix:?}");
    assert!(lab::namespaces_of(&prefix).is_empty());
    assert!(!Path::new(lab::STATE_ROOT).join(&prefix).exists());
    println!("failed build of {prefix}: {err}; nothing left");
}
