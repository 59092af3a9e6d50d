//! The lab's processes: started inside a namespace with `ip netns exec` (which execs in
//! place, so the pid we get is the daemon's), logs to a file, and stopped by pid only.
//!
//! A pid is recorded with the process's start time (field 22 of `/proc/<pid>/stat`), so
//! that a later `lab down` never signals a process that merely reused the number.

use std::fs::File;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::Error;

/// A process of the lab, as written in the state file.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ProcRecord {
    /// What it is (`manager`, `agent-h1`, `edge-e2`, `servers`, ...).
    pub name: String,
    pub pid: i32,
    /// Start time in clock ticks since boot, from `/proc/<pid>/stat`.
    pub start_time: u64,
    /// The namespace it runs in, if any.
    pub netns: Option<String>,
    /// Its log file.
    pub log: String,
}

/// Starts `program args...` inside namespace `netns` (or here, when `None`), in its own
/// process group (a Ctrl-C at the terminal reaches the lab's cleanup, not its daemons),
/// stdin closed, stdout and stderr appended to `log`. Secrets go in `env` (which `ip netns
/// exec` passes on), not in `args`, which every user can read in `ps`.
pub fn spawn(
    name: &str,
    netns: Option<&str>,
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
    log: &Path,
) -> Result<(Child, ProcRecord), Error> {
    let out = File::options()
        .create(true)
        .append(true)
        .open(log)
        .map_err(|e| Error::io(format!("log file {}", log.display()), e))?;
    let err = out
        .try_clone()
        .map_err(|e| Error::io(format!("log file {}", log.display()), e))?;
    let mut cmd = match netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
        None => Command::new(program),
    };
    cmd.args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .process_group(0);
    let child = cmd
        .spawn()
        .map_err(|e| Error::io(format!("starting {name} ({program})"), e))?;
    let pid = child.id() as i32;
    let start_time = start_time(pid).unwrap_or(0);
    tracing::info!(name, pid, ?netns, program, "started");
    Ok((
        child,
        ProcRecord {
            name: name.to_owned(),
            pid,
            start_time,
            netns: netns.map(str::to_owned),
            log: log.display().to_string(),
        },
    ))
}

/// The start time of `pid` (clock ticks since boot), if it exists.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state); field 22 is index 19.
    fields.get(19)?.parse().ok()
}

/// The one-letter state of `pid` (`R`, `S`, `Z`, ...).
fn state_of(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().next()?.chars().next()
}

impl ProcRecord {
    /// The recorded process still runs (same pid and start time, not a zombie).
    pub fn alive(&self) -> bool {
        self.pid > 0
            && start_time(self.pid) == Some(self.start_time)
            && !matches!(state_of(self.pid), Some('Z') | Some('X') | None)
    }

    /// Sends `signal` if the recorded process is still the one we started.
    pub fn signal(&self, signal: i32) -> bool {
        if !self.alive() {
            return false;
        }
        // SAFETY: kill has no memory preconditions; the pid was checked to be ours above.
        unsafe { libc::kill(self.pid, signal) == 0 }
    }

    /// SIGTERM, then SIGKILL after `grace` if it is still there; waits until it is gone
    /// (or a bounded time passes). `child` is reaped when we are its parent.
    pub fn stop(&self, child: Option<&mut Child>, grace: Duration) {
        if !self.signal(libc::SIGTERM) {
            if let Some(c) = child {
                let _ = c.try_wait();
            }
            return;
        }
        let mut child = child;
        let gone = |child: &mut Option<&mut Child>| match child {
            Some(c) => matches!(c.try_wait(), Ok(Some(_)) | Err(_)),
            None => !self.alive(),
        };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if gone(&mut child) {
                return;
            }
            thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(name = %self.name, pid = self.pid, "still running after SIGTERM: SIGKILL");
        self.signal(libc::SIGKILL);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline && !gone(&mut child) {
            thread::sleep(Duration::from_millis(20));
        }
    }
}
