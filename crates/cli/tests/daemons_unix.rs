//! `canopy manager --listen unix:PATH` and the CLI verbs with `--url unix:PATH` (no root
//! needed): a stale socket file is replaced, a regular file in the way is refused, and
//! the verbs work over the socket.

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const ADMIN: &str = "unix-socket-test-admin";

fn canopy() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_canopy"));
    c.env_remove("CANOPY_URL")
        .env_remove("CANOPY_TOKEN")
        .env_remove("CANOPY_ADMIN_TOKEN")
        .env_remove("RUST_LOG");
    c
}

struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn manager(dir: &Path, listen: &str) -> Killed {
    let log = std::fs::File::create(dir.join("manager.log")).unwrap();
    Killed(
        canopy()
            .args(["manager", "--listen", listen, "--admin-token", ADMIN])
            .arg("--database")
            .arg(format!("sqlite:{}", dir.join("canopy.db").display()))
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::from(log.try_clone().unwrap()))
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap(),
    )
}

fn out(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn verbs_over_the_managers_unix_socket() {
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("m.sock");
    // A socket file left by an earlier run.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let url = format!("unix:{}", sock.display());
    let mut m = manager(dir.path(), &url);
    let t0 = Instant::now();
    let verb = |args: &[&str]| -> Output {
        canopy()
            .args(args)
            .args(["--url", &url, "--token", ADMIN])
            .output()
            .unwrap()
    };
    loop {
        let o = verb(&["tenant", "list"]);
        if o.status.success() {
            break;
        }
        if let Ok(Some(st)) = m.0.try_wait() {
            panic!(
                "manager exited ({st}): {}",
                std::fs::read_to_string(dir.path().join("manager.log")).unwrap_or_default()
            );
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no answer over the socket: {}",
            out(&o)
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let log = std::fs::read_to_string(dir.path().join("manager.log")).unwrap();
    assert!(log.contains(&format!("listening on {url}")), "{log}");

    let o = verb(&["tenant", "create", "acme", "--output", "json"]);
    assert!(o.status.success(), "{}", out(&o));
    let created: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let o = verb(&["tenant", "list", "--output", "json"]);
    assert!(o.status.success(), "{}", out(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert!(
        list.as_array()
            .unwrap()
            .iter()
            .any(|t| t["id"] == created["id"]),
        "{list}"
    );
    // A bad socket path is a clear error.
    let o = canopy()
        .args(["tenant", "list", "--url", "unix:", "--token", ADMIN])
        .output()
        .unwrap();
    assert!(!o.status.success());
    assert!(
        out(&o).contains("unix:/path/to/manager.sock"),
        "{}",
        out(&o)
    );
    drop(m);
}

#[test]
fn a_regular_file_in_the_sockets_place_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("not-a-socket");
    std::fs::write(&path, "keep me").unwrap();
    let mut m = manager(dir.path(), &format!("unix:{}", path.display()));
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = m.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the manager kept running"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(!st.success());
    let log = std::fs::read_to_string(dir.path().join("manager.log")).unwrap();
    assert!(log.contains("is not a socket"), "{log}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), "keep me");
}
