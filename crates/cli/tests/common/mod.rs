//! A real `canopy manager` process for the CLI's tests, killed (by its PID) when dropped,
//! including when the test panics.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `canopy` binary under test.
pub fn canopy_bin() -> &'static str {
    env!("CARGO_BIN_EXE_canopy")
}

/// A manager serving on a free loopback port with a fresh SQLite file.
pub struct Manager {
    child: Child,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// `127.0.0.1:<port>`.
    pub addr: String,
    /// The admin token it was started with.
    pub admin_token: String,
    dir: tempfile::TempDir,
}

impl Manager {
    /// Starts `canopy manager --listen 127.0.0.1:0 --database sqlite:<tmp>/canopy.db
    /// --admin-token <admin_token>`, reads the address it bound from its first line of
    /// output and waits until `/healthz` answers 200.
    pub fn start(admin_token: &str) -> Manager {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = dir.path().join("canopy.db");
        let log = std::fs::File::create(dir.path().join("manager.log")).expect("log file");
        let child = Command::new(canopy_bin())
            .args(["manager", "--listen", "127.0.0.1:0", "--database"])
            .arg(format!("sqlite:{}", db.display()))
            .args(["--admin-token", admin_token])
            .env_remove("CANOPY_ADMIN_TOKEN")
            .env_remove("RUST_LOG")
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("spawn canopy manager");
        // From here on, Drop kills the process whatever happens.
        let mut m = Manager {
            child,
            url: String::new(),
            addr: String::new(),
            admin_token: admin_token.to_string(),
            dir,
        };
        let stdout = m.child.stdout.take().expect("stdout");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            // Keep draining so that the manager never blocks on a full pipe.
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on http://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send(addr);
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(a) => a,
            Err(_) => panic!(
                "the manager did not say where it listens within 60 s; its log:\n{}",
                m.log()
            ),
        };
        m.url = format!("http://{addr}");
        m.addr = addr;
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if healthz(&m.addr) == Some(200) {
                break;
            }
            if let Ok(Some(status)) = m.child.try_wait() {
                panic!("the manager exited ({status}); its log:\n{}", m.log());
            }
            assert!(
                Instant::now() < deadline,
                "/healthz did not answer 200 within 30 s; log:\n{}",
                m.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        m
    }

    /// A scratch directory that lives as long as the manager.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The manager's stderr so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("manager.log")).unwrap_or_default()
    }

    /// Path of a file in the scratch directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Manager {
    fn drop(&mut self) {
        // `Child::kill` signals exactly this process id (SIGKILL), then we reap it.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Status of `GET /healthz` on `addr`, with plain HTTP/1.1 over a socket.
fn healthz(addr: &str) -> Option<u16> {
    let mut s = TcpStream::connect_timeout(&addr.parse().ok()?, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET /healthz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut buf = String::new();
    s.read_to_string(&mut buf).ok()?;
    buf.split_whitespace().nth(1)?.parse().ok()
}
