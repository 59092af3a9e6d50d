//! The benchmark's small-packet load (`bench/run.sh`): a UDP sender that offers as many
//! packets as it can (`sendmmsg`, a batch per call) and a receiver that counts what
//! arrives (`recvmmsg`). iperf3's UDP sender makes one system call per packet (and reads
//! the clock for each), so with it the packets/s figure would partly measure iperf3.
//!
//! ```text
//! udp_flood recv --port 5300 --seconds 12      # in VM2: prints "RECV packets=.. kpps=.."
//! udp_flood send --dst 10.0.0.3:5300 --seconds 10 --payload 18   # in VM1: "SENT ..."
//! udp_flood send --dst 10.0.0.3:5300 --rate-kpps 150             # paced: 150k packets/s
//! ```
//!
//! 18 bytes of payload make 64-byte Ethernet frames (14 + 20 IPv4 + 8 UDP + 18 + 4 FCS).
//! Both sides stop on their own after `--seconds` (the receiver also one second after the
//! traffic stops), so the load is bounded in time.

use clap::{Parser, Subcommand};
use std::io;
use std::net::{SocketAddr, SocketAddrV4, UdpSocket};
use std::os::fd::AsRawFd;
use std::process::ExitCode;
use std::time::{Duration, Instant};

#[derive(Parser, Debug)]
#[command(about = "Bounded UDP packet flood and counter for the side-by-side benchmark")]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Sends UDP packets to DST as fast as possible for SECONDS.
    Send {
        /// Where to (IPv4 address and port).
        #[arg(long)]
        dst: SocketAddrV4,
        /// How long to send.
        #[arg(long, default_value_t = 10)]
        seconds: u64,
        /// UDP payload bytes (18 makes 64-byte Ethernet frames).
        #[arg(long, default_value_t = 18)]
        payload: usize,
        /// Packets per sendmmsg call (1..=1024).
        #[arg(long, default_value_t = 64)]
        batch: usize,
        /// Offer at most this many thousand packets per second (0: as fast as it can).
        /// The most a path delivers at any offered rate is its maximum forwarding rate
        /// (RFC 2889); offered more, a userspace path drops the rest at the VM's TAP after
        /// the sender has spent CPU the forwarders need.
        #[arg(long, default_value_t = 0)]
        rate_kpps: u64,
    },
    /// Counts UDP packets arriving on PORT for at most SECONDS.
    Recv {
        /// UDP port to listen on (all addresses).
        #[arg(long)]
        port: u16,
        /// Longest time to listen.
        #[arg(long, default_value_t = 12)]
        seconds: u64,
    },
}

fn main() -> ExitCode {
    let r = match Args::parse().cmd {
        Cmd::Send {
            dst,
            seconds,
            payload,
            batch,
            rate_kpps,
        } => send(dst, Duration::from_secs(seconds), payload, batch, rate_kpps),
        Cmd::Recv { port, seconds } => recv(port, Duration::from_secs(seconds)),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("udp_flood: {e}");
            ExitCode::FAILURE
        }
    }
}

fn send(
    dst: SocketAddrV4,
    length: Duration,
    payload: usize,
    batch: usize,
    rate_kpps: u64,
) -> io::Result<()> {
    if !(1..=1024).contains(&batch) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--batch {batch}: want 1..=1024"),
        ));
    }
    if payload > 1472 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("--payload {payload}: want at most 1472 (one unfragmented packet)"),
        ));
    }
    let sock = UdpSocket::bind("0.0.0.0:0")?;
    sock.connect(SocketAddr::V4(dst))?;
    let data = vec![0x5au8; payload];
    let mut iov = vec![
        libc::iovec {
            iov_base: data.as_ptr() as *mut libc::c_void,
            iov_len: data.len(),
        };
        batch
    ];
    // SAFETY: an all-zero mmsghdr is valid (null name, no control data).
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; batch];
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let start = Instant::now();
    let (mut sent, mut refused) = (0u64, 0u64);
    // The pacing schedule: packets due since `base`, counted from `base_sent`. A sender
    // that fell behind (descheduled) starts a new schedule rather than catching up in a
    // burst.
    let (mut base, mut base_sent) = (start, 0u64);
    while start.elapsed() < length {
        // Paced: the next batch goes when the packets sent so far are due.
        if let Some(due_us) = ((sent - base_sent) * 1000).checked_div(rate_kpps) {
            let due = Duration::from_micros(due_us);
            let now = base.elapsed();
            if let Some(wait) = due.checked_sub(now) {
                std::thread::sleep(wait);
            } else if now - due > Duration::from_millis(10) {
                (base, base_sent) = (Instant::now(), sent);
            }
        }
        // SAFETY: `msgs` holds `batch` headers whose iovecs point at `data`, alive for the
        // whole call.
        let n = unsafe {
            libc::sendmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                batch as libc::c_uint,
                0,
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                // A full queue or an ICMP error reported on the socket: go on.
                Some(libc::ENOBUFS | libc::EAGAIN | libc::ECONNREFUSED | libc::EINTR) => {
                    refused += 1
                }
                _ => return Err(e),
            }
        } else {
            sent += n as u64;
        }
    }
    let secs = start.elapsed().as_secs_f64();
    println!(
        "SENT packets={sent} seconds={secs:.3} kpps={:.0} refused_calls={refused}",
        sent as f64 / secs / 1e3
    );
    Ok(())
}

fn recv(port: u16, length: Duration) -> io::Result<()> {
    const BATCH: usize = 256;
    const SLOT: usize = 2048;
    let sock = UdpSocket::bind(("0.0.0.0", port))?;
    sock.set_read_timeout(Some(Duration::from_millis(200)))?;
    println!("LISTENING {port}");
    let mut bufs = vec![0u8; BATCH * SLOT];
    let mut iov: Vec<libc::iovec> = bufs
        .chunks_mut(SLOT)
        .map(|c| libc::iovec {
            iov_base: c.as_mut_ptr().cast(),
            iov_len: c.len(),
        })
        .collect();
    // SAFETY: an all-zero mmsghdr is valid (null name, no control data).
    let mut msgs: Vec<libc::mmsghdr> = vec![unsafe { std::mem::zeroed() }; BATCH];
    for (m, v) in msgs.iter_mut().zip(iov.iter_mut()) {
        m.msg_hdr.msg_iov = v;
        m.msg_hdr.msg_iovlen = 1;
    }
    let start = Instant::now();
    let (mut first, mut last) = (None::<Instant>, start);
    let mut got = 0u64;
    while start.elapsed() < length {
        // SAFETY: `msgs` holds BATCH headers whose iovecs point into `bufs`, alive and
        // writable for the whole call.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                msgs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EAGAIN | libc::EINTR) => {
                    // Idle for a second after traffic: the sender is done.
                    if first.is_some() && last.elapsed() > Duration::from_secs(1) {
                        break;
                    }
                    continue;
                }
                _ => return Err(e),
            }
        }
        let now = Instant::now();
        first.get_or_insert(now);
        last = now;
        got += n as u64;
    }
    let secs = first.map_or(0.0, |f| (last - f).as_secs_f64());
    let kpps = if secs > 0.0 {
        got as f64 / secs / 1e3
    } else {
        0.0
    };
    println!("RECV packets={got} seconds={secs:.3} kpps={kpps:.0}");
    Ok(())
}
