//! The internet namespace's servers (`canopy lab serve`, started by the lab inside that
//! namespace): an HTTP server that answers each client with the address and port it saw,
//! and a TCP echo server for long-lived flows that first tells each client its public
//! address. Both log every connection's peer, one line each, so that the lab can say which
//! public address and port block each VM used.
//!
//! One thread per connection: a lab has a few hundred at most.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

/// A line-per-event log shared by the server threads.
#[derive(Clone)]
struct Log(Arc<Mutex<Box<dyn Write + Send>>>);

impl Log {
    fn line(&self, s: &str) {
        if let Ok(mut w) = self.0.lock() {
            let _ = writeln!(w, "{s}");
            let _ = w.flush();
        }
    }
}

/// Serves HTTP on `http` and echo on `echo` until the process ends; every connection is
/// logged to `log` as `http <peer> <request line>` or `echo <peer>`.
pub fn serve(http: SocketAddr, echo: SocketAddr, log: &std::path::Path) -> std::io::Result<()> {
    let file = File::options().create(true).append(true).open(log)?;
    let log = Log(Arc::new(Mutex::new(Box::new(file))));
    let h = TcpListener::bind(http)?;
    let e = TcpListener::bind(echo)?;
    log.line(&format!("listening http {http} echo {echo}"));
    let l2 = log.clone();
    let echo_thread = thread::spawn(move || accept_loop(e, l2, echo_conn));
    accept_loop(h, log, http_conn);
    let _ = echo_thread.join();
    Ok(())
}

fn accept_loop(l: TcpListener, log: Log, handle: fn(TcpStream, SocketAddr, Log)) {
    for s in l.incoming() {
        match s {
            Ok(s) => {
                let Ok(peer) = s.peer_addr() else { continue };
                let log = log.clone();
                thread::spawn(move || handle(s, peer, log));
            }
            Err(e) => log.line(&format!("accept error: {e}")),
        }
    }
}

/// One HTTP/1.0-style exchange: read the request head, answer `you are <ip> port <port>`.
fn http_conn(s: TcpStream, peer: SocketAddr, log: Log) {
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let mut r = BufReader::new(&s);
    let mut first = String::new();
    if r.read_line(&mut first).is_err() {
        return;
    }
    loop {
        let mut l = String::new();
        match r.read_line(&mut l) {
            Ok(0) | Err(_) => break,
            Ok(_) if l.trim().is_empty() => break,
            Ok(_) => {}
        }
    }
    log.line(&format!("http {peer} {}", first.trim()));
    let body = format!("you are {} port {}\n", peer.ip(), peer.port());
    let resp = format!(
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut w = &s;
    let _ = w.write_all(resp.as_bytes());
}

/// Serves echo on `l` until `stop` is set (polled every 20 ms: the listener must be
/// non-blocking); used for servers inside VMs, which must not outlive the lab.
pub fn echo_until(l: TcpListener, stop: &std::sync::atomic::AtomicBool) {
    let log = Log(Arc::new(Mutex::new(Box::new(std::io::sink()))));
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        match l.accept() {
            Ok((s, peer)) => {
                let _ = s.set_nonblocking(false);
                let log = log.clone();
                thread::spawn(move || echo_conn(s, peer, log));
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(20));
            }
            Err(_) => thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Tells the client `peer <ip>:<port>\n`, then echoes whatever it sends until it closes.
fn echo_conn(mut s: TcpStream, peer: SocketAddr, log: Log) {
    log.line(&format!("echo {peer}"));
    let _ = s.set_nodelay(true);
    if s.write_all(format!("peer {peer}\n").as_bytes()).is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
            Err(e) => {
                log.line(&format!("echo {peer} error: {e}"));
                break;
            }
        }
    }
}

/// A connection logged by [`serve`]: the kind (`http` or `echo`) and the peer it saw.
pub fn parse_log(text: &str) -> Vec<(String, SocketAddr)> {
    text.lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let kind = it.next()?;
            if kind != "http" && kind != "echo" {
                return None;
            }
            let peer = it.next()?.parse().ok()?;
            if kind == "echo" && it.next().is_some() {
                return None; // an error line about a connection already counted
            }
            Some((kind.to_owned(), peer))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_parse() {
        let got = parse_log(
            "listening http 1.2.3.4:80 echo 1.2.3.4:7\nhttp 198.51.100.1:1025 GET / HTTP/1.1\necho 198.51.100.2:2048\necho 198.51.100.2:2048 error: x\n",
        );
        // The error line is about a connection already counted.
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].0, "http");
        assert_eq!(got[0].1, "198.51.100.1:1025".parse().unwrap());
        assert_eq!(got[1].1.port(), 2048);
    }
}
