//! Traffic from inside lab namespaces, measured by this process: a thread enters a
//! namespace (`setns` applies to the calling thread only) and its sockets live there.
//!
//! [`Flows`] keeps many long-lived TCP connections to the echo server ping-ponging small
//! messages, and reports per flow the public address the server saw, the longest pause
//! between two answers and whether the connection failed (a reset, a close, a timeout).

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use crate::Error;

/// Runs `f` on a new thread inside namespace `netns` (by name, `/run/netns/<netns>`).
pub fn in_netns<T, F>(netns: &str, f: F) -> JoinHandle<Result<T, Error>>
where
    T: Send + 'static,
    F: FnOnce() -> Result<T, Error> + Send + 'static,
{
    let path = format!("/run/netns/{netns}");
    thread::spawn(move || {
        enter(&path)?;
        f()
    })
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &str) -> Result<(), Error> {
    let f = File::open(path).map_err(|e| Error::io(format!("namespace {path}"), e))?;
    // SAFETY: setns on a file descriptor we own; it changes only this thread's namespace.
    let r = unsafe { libc::setns(f.as_raw_fd(), libc::CLONE_NEWNET) };
    if r != 0 {
        return Err(Error::io(
            format!("setns {path}"),
            std::io::Error::last_os_error(),
        ));
    }
    Ok(())
}

/// An echo server (see [`crate::servers`]) inside a lab namespace, e.g. a VM's; stops
/// accepting on [`stop`](EchoServer::stop) or drop (open connections end with the flows).
pub struct EchoServer {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), Error>>>,
}

impl EchoServer {
    pub fn start(netns: &str, addr: SocketAddr) -> Result<EchoServer, Error> {
        let stop = Arc::new(AtomicBool::new(false));
        let (tx, rx) = std::sync::mpsc::channel();
        let st = stop.clone();
        let thread = in_netns(netns, move || {
            let l = std::net::TcpListener::bind(addr);
            let l = match l.and_then(|l| l.set_nonblocking(true).map(|()| l)) {
                Ok(l) => l,
                Err(e) => {
                    let _ = tx.send(Err(e.to_string()));
                    return Err(Error::io(format!("echo server on {addr}"), e));
                }
            };
            let _ = tx.send(Ok(()));
            crate::servers::echo_until(l, &st);
            Ok(())
        });
        match rx.recv_timeout(Duration::from_secs(10)) {
            Ok(Ok(())) => Ok(EchoServer {
                stop,
                thread: Some(thread),
            }),
            Ok(Err(e)) => Err(Error::Check(format!(
                "echo server on {addr} in {netns}: {e}"
            ))),
            Err(_) => Err(Error::Check(format!(
                "echo server on {addr} in {netns} did not start"
            ))),
        }
    }

    pub fn stop(mut self) {
        self.halt();
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        self.halt();
    }
}

/// One HTTP GET from inside `netns`; the whole answer as text.
pub fn http_get(netns: &str, server: SocketAddr, path: &str) -> Result<String, Error> {
    let path = path.to_owned();
    in_netns(netns, move || {
        let mut s = TcpStream::connect_timeout(&server, Duration::from_secs(5))
            .map_err(|e| Error::io(format!("connect {server}"), e))?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok();
        write!(s, "GET {path} HTTP/1.0\r\nHost: {server}\r\n\r\n")
            .map_err(|e| Error::io(format!("send to {server}"), e))?;
        let mut out = String::new();
        s.read_to_string(&mut out)
            .map_err(|e| Error::io(format!("read from {server}"), e))?;
        Ok(out)
    })
    .join()
    .map_err(|_| Error::Check("HTTP client thread panicked".into()))?
}

/// What became of one flow.
#[derive(Debug, Clone)]
pub struct FlowResult {
    /// The namespace it ran in.
    pub netns: String,
    /// Its address as the server saw it (after NAT).
    pub public: Option<SocketAddr>,
    /// Messages answered.
    pub round_trips: u64,
    /// The longest time between two answers (or from the start to the first).
    pub max_gap: Duration,
    /// Why it ended early, if it did.
    pub error: Option<String>,
}

/// Long-lived TCP flows to the echo server; stop with [`Flows::stop`].
pub struct Flows {
    stop: Arc<AtomicBool>,
    threads: Vec<JoinHandle<Result<FlowResult, Error>>>,
}

/// A flow fails when no answer comes for this long.
const FLOW_TIMEOUT: Duration = Duration::from_secs(20);

impl Flows {
    /// Starts `per_ns` flows from each namespace of `netns` to `server`, each sending a
    /// message every `interval`. Returns once every flow has connected (or failed to).
    pub fn start(netns: &[String], per_ns: usize, server: SocketAddr, interval: Duration) -> Flows {
        let stop = Arc::new(AtomicBool::new(false));
        let mut threads = Vec::new();
        let mut connected = Vec::new();
        for ns in netns {
            for _ in 0..per_ns {
                let (tx, rx) = std::sync::mpsc::channel();
                connected.push(rx);
                let stop = stop.clone();
                let name = ns.clone();
                threads.push(in_netns(ns, move || {
                    Ok(run_flow(name, server, interval, &stop, tx))
                }));
            }
        }
        for rx in connected {
            let _ = rx.recv_timeout(Duration::from_secs(20));
        }
        Flows { stop, threads }
    }

    /// Stops every flow and returns what became of each.
    pub fn stop(self) -> Vec<FlowResult> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| match t.join() {
                Ok(Ok(r)) => r,
                Ok(Err(e)) => FlowResult {
                    netns: String::new(),
                    public: None,
                    round_trips: 0,
                    max_gap: Duration::ZERO,
                    error: Some(e.to_string()),
                },
                Err(_) => FlowResult {
                    netns: String::new(),
                    public: None,
                    round_trips: 0,
                    max_gap: Duration::ZERO,
                    error: Some("flow thread panicked".into()),
                },
            })
            .collect()
    }
}

fn run_flow(
    netns: String,
    server: SocketAddr,
    interval: Duration,
    stop: &AtomicBool,
    connected: std::sync::mpsc::Sender<()>,
) -> FlowResult {
    let mut r = FlowResult {
        netns,
        public: None,
        round_trips: 0,
        max_gap: Duration::ZERO,
        error: None,
    };
    let started = Instant::now();
    let s = match TcpStream::connect_timeout(&server, Duration::from_secs(10)) {
        Ok(s) => s,
        Err(e) => {
            r.error = Some(format!("connect: {e}"));
            let _ = connected.send(());
            return r;
        }
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(FLOW_TIMEOUT));
    let mut reader = BufReader::new(match s.try_clone() {
        Ok(c) => c,
        Err(e) => {
            r.error = Some(format!("socket: {e}"));
            let _ = connected.send(());
            return r;
        }
    });
    let mut line = String::new();
    if let Err(e) = reader.read_line(&mut line) {
        r.error = Some(format!("greeting: {e}"));
        let _ = connected.send(());
        return r;
    }
    r.public = line
        .trim()
        .strip_prefix("peer ")
        .and_then(|p| p.parse().ok());
    let _ = connected.send(());
    let mut last = started;
    let mut w = &s;
    let mut seq: u64 = 0;
    while !stop.load(Ordering::Relaxed) {
        seq += 1;
        let msg = seq.to_be_bytes();
        if let Err(e) = w.write_all(&msg) {
            r.error = Some(format!("send #{seq}: {e}"));
            break;
        }
        let mut back = [0u8; 8];
        if let Err(e) = reader.read_exact(&mut back) {
            r.error = Some(match e.kind() {
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
                    r.max_gap = r.max_gap.max(last.elapsed());
                    format!("stalled: no answer to #{seq} for {FLOW_TIMEOUT:?}")
                }
                _ => format!("answer #{seq}: {e}"),
            });
            break;
        }
        if back != msg {
            r.error = Some(format!("answer #{seq} garbled"));
            break;
        }
        let now = Instant::now();
        r.max_gap = r.max_gap.max(now - last);
        last = now;
        r.round_trips += 1;
        thread::sleep(interval);
    }
    let _ = s.shutdown(std::net::Shutdown::Both);
    r
}

/// A summary of flow results: how many failed, the longest pause, public addresses seen.
pub fn summarize(results: &[FlowResult]) -> String {
    let failed = results.iter().filter(|r| r.error.is_some()).count();
    let gap = results.iter().map(|r| r.max_gap).max().unwrap_or_default();
    let rts: u64 = results.iter().map(|r| r.round_trips).sum();
    format!(
        "{} flows, {} failed, {} round trips, longest pause {:.0} ms",
        results.len(),
        failed,
        rts,
        gap.as_secs_f64() * 1000.0
    )
}
