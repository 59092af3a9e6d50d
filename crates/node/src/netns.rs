//! Network namespaces and interface configuration through iproute2's `ip`, run as a
//! subprocess: simple, and every step is a command one can read in a log and type by hand.
//!
//! Every command is bounded by a timeout; on expiry its whole process group is killed.
//! A [`Netns`] deletes its namespace when dropped, by its exact name.

use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, Output, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long an `ip` command may take.
pub const IP_TIMEOUT: Duration = Duration::from_secs(10);

/// The hook busybox `udhcpc -s` runs in a VM's namespace (the lab's and the tests'):
/// configures what the lease says (address, MTU, default route) and prints it as
/// `LEASE ip=... mask=... router=... mtu=...`.
pub const UDHCPC_HOOK: &str = r#"#!/bin/sh
case "$1" in
  deconfig)
    ip -4 addr flush dev "$interface"
    ip link set dev "$interface" up
    ;;
  bound|renew)
    ip -4 addr flush dev "$interface"
    ip addr add "$ip/$mask" dev "$interface"
    if [ -n "$mtu" ]; then ip link set dev "$interface" mtu "$mtu"; fi
    for r in $router; do ip route replace default via "$r" dev "$interface"; break; done
    echo "LEASE ip=$ip mask=$mask router=$router mtu=$mtu"
    ;;
esac
exit 0
"#;

/// Runs `program args...`, capturing its output, killing it (and its process group) if it
/// has not finished after `timeout`. The output is returned whatever the exit status.
pub fn run(program: &str, args: &[&str], timeout: Duration) -> io::Result<Output> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .spawn()
        .map_err(|e| io::Error::new(e.kind(), format!("{program}: {e}")))?;
    let pgid = child.id() as libc::pid_t;
    let drain = |r: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut v = Vec::new();
            if let Some(mut r) = r {
                let _ = r.read_to_end(&mut v);
            }
            v
        })
    };
    let out = drain(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = drain(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        if let Some(s) = child.try_wait()? {
            break s;
        }
        if Instant::now() >= deadline {
            timed_out = true;
            // SAFETY: signals the process group this function created (its leader is our
            // child, not yet reaped, so the id cannot have been reused).
            unsafe { libc::kill(-pgid, libc::SIGKILL) };
            break child.wait()?;
        }
        thread::sleep(Duration::from_millis(10));
    };
    if !timed_out {
        // Whatever the command left behind in its group goes too, so that the pipes close.
        // SAFETY: as above; the group may be empty (ESRCH), which is fine.
        unsafe { libc::kill(-pgid, libc::SIGKILL) };
    }
    let stdout = out.join().unwrap_or_default();
    let mut stderr = err.join().unwrap_or_default();
    if timed_out {
        stderr.extend_from_slice(format!("\n(killed after {timeout:?})").as_bytes());
    }
    Ok(Output {
        status,
        stdout,
        stderr,
    })
}

/// Like [`run`], but an unsuccessful exit is an error carrying the command and its stderr.
pub fn run_ok(program: &str, args: &[&str], timeout: Duration) -> io::Result<Output> {
    let out = run(program, args, timeout)?;
    if out.status.success() {
        Ok(out)
    } else {
        Err(io::Error::other(format!(
            "`{program} {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

/// `ip args...` in the current namespace; fails unless it succeeds.
pub fn ip(args: &[&str]) -> io::Result<Output> {
    run_ok("ip", args, IP_TIMEOUT)
}

/// A network namespace this process created; deleted when dropped.
#[derive(Debug)]
pub struct Netns {
    name: String,
}

impl Netns {
    /// `ip netns add name`, then brings its loopback up. Fails if it exists.
    pub fn create(name: &str) -> io::Result<Netns> {
        check_name(name)?;
        ip(&["netns", "add", name])?;
        let ns = Netns {
            name: name.to_owned(),
        };
        ns.ip(&["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// Runs `program args...` inside the namespace (`ip netns exec`), bounded by
    /// `timeout`; the output whatever the exit status.
    pub fn exec(&self, program: &str, args: &[&str], timeout: Duration) -> io::Result<Output> {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run("ip", &all, timeout)
    }

    /// Like [`exec`](Self::exec), but an unsuccessful exit is an error.
    pub fn exec_ok(&self, program: &str, args: &[&str], timeout: Duration) -> io::Result<Output> {
        let mut all = vec!["netns", "exec", &self.name, program];
        all.extend_from_slice(args);
        run_ok("ip", &all, timeout)
    }

    /// `ip args...` inside the namespace (`ip -n name ...`); fails unless it succeeds.
    pub fn ip(&self, args: &[&str]) -> io::Result<Output> {
        let mut all = vec!["-n", &self.name];
        all.extend_from_slice(args);
        ip(&all)
    }

    /// Moves the root namespace's interface `link` into this namespace, renames it
    /// `rename_to` (if given) and brings it up.
    pub fn adopt(&self, link: &str, rename_to: Option<&str>) -> io::Result<()> {
        ip(&["link", "set", "dev", link, "netns", &self.name])?;
        let name = match rename_to {
            Some(to) => {
                self.ip(&["link", "set", "dev", link, "name", to])?;
                to
            }
            None => link,
        };
        self.ip(&["link", "set", "dev", name, "up"])?;
        Ok(())
    }

    /// Deletes the namespace now, reporting failure.
    pub fn delete(mut self) -> io::Result<()> {
        let r = ip(&["netns", "del", &self.name]).map(|_| ());
        self.name.clear();
        r
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        if self.name.is_empty() {
            return;
        }
        if let Err(e) = ip(&["netns", "del", &self.name]) {
            tracing::warn!(netns = %self.name, error = %e, "could not delete namespace");
        }
    }
}

/// Namespace names become file names under /run/netns.
fn check_name(name: &str) -> io::Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.');
    if ok {
        Ok(())
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("bad namespace name {name:?}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_times_out() {
        let t = Instant::now();
        let out = run("sleep", &["5"], Duration::from_millis(200)).unwrap();
        assert!(!out.status.success());
        assert!(t.elapsed() < Duration::from_secs(3));
        assert!(String::from_utf8_lossy(&out.stderr).contains("killed"));
    }

    #[test]
    fn run_captures() {
        let out = run_ok(
            "sh",
            &["-c", "echo hi; echo err >&2"],
            Duration::from_secs(5),
        )
        .unwrap();
        assert_eq!(out.stdout, b"hi\n");
        assert_eq!(out.stderr, b"err\n");
        assert!(run_ok("false", &[], Duration::from_secs(5)).is_err());
    }

    #[test]
    fn names() {
        assert!(check_name("cnpy123-vm1").is_ok());
        assert!(check_name("../etc").is_err());
        assert!(check_name("").is_err());
    }
}
