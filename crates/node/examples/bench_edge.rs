//! The edge of the side-by-side benchmark's internet path (`bench/run.sh`): a
//! [`dataplane::edge::Edge`] between this namespace's substrate TUN (IPv6 from and to the
//! agents) and an "outside" TUN (IPv4 to and from the internet namespace), configured with
//! one elastic IP instead of a manager.
//!
//! Both TUNs are opened with checksum and TCP segmentation offloads, as the daemon's edge
//! (`canopy edge`) opens them: a TCP super-packet crosses the edge as one unit with its
//! `virtio_net_hdr`, which the pipeline adjusts. A small loop of its own (the daemon's edge
//! loop is another helper's work): wait until a device is readable, read up to [`BATCH`]
//! packets, run each through the edge, write it where the verdict says. Stops on SIGTERM
//! or SIGINT and prints its counters (`STATS ...`).
//!
//! ```text
//! ip netns exec E target/release/examples/bench_edge --substrate-tun xes --outside-tun xeo \
//!     --locator fd63:6e73:0:3:: --public 203.0.113.10 --vip 10.0.0.2 --host fd63:6e73:0:1::
//! ```

use clap::Parser;
use dataplane::agent::HEADROOM;
use dataplane::edge::{Edge, EdgeChange, EdgeVerdict, Owner};
use dataplane::PacketBuf;
use model::{Locator, NetworkId};
use node::tap::{Device, VNET_HDR_LEN};
use std::io;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use tokio::io::unix::AsyncFd;
use tokio::signal::unix::{signal, SignalKind};
use wire::virtio::VirtioNetHdr;

/// Most packets read from one device before the other gets a turn.
const BATCH: usize = 64;
/// Largest packet: a TCP super-packet of 64 KiB, with room to grow.
const MAX_PACKET: usize = node::agent_loop::MAX_PACKET;

#[derive(Parser, Debug)]
#[command(
    about = "One benchmark edge: the edge pipeline between a substrate TUN and an outside \
                   TUN, with one static elastic IP. Stops on SIGTERM/SIGINT and prints its \
                   counters."
)]
struct Args {
    /// Name of the substrate TUN to create (IPv6 from and to the agents).
    #[arg(long)]
    substrate_tun: String,
    /// Name of the outside TUN to create (IPv4 to and from the internet).
    #[arg(long)]
    outside_tun: String,
    /// This edge's /72 locator on the substrate.
    #[arg(long)]
    locator: Locator,
    /// The elastic IP (public IPv4 address) of the node.
    #[arg(long)]
    public: Ipv4Addr,
    /// The node's virtual network.
    #[arg(long, default_value = "7")]
    network: NetworkId,
    /// The node's address in its network.
    #[arg(long)]
    vip: Ipv4Addr,
    /// The locator of the host the node lives on.
    #[arg(long)]
    host: Locator,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_edge: tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_edge: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A TUN with offloads ([`node::tap::WANTED_OFFLOADS`], as far as the kernel allows).
fn offload_tun(name: &str, what: &str) -> Result<AsyncFd<Device>, String> {
    let dev = Device::tun(name).map_err(|e| format!("{what} {name}: {e}"))?;
    // SAFETY: a `Device` owns its descriptor and closes it only when dropped.
    unsafe { AsyncFd::register(dev) }.map_err(|e| format!("{what} {name}: {}", e.into_parts().1))
}

#[derive(Default)]
struct IoStats {
    rx: u64,
    tx: u64,
    tx_errors: u64,
    dropped: u64,
}

/// Reads up to [`BATCH`] packets from one device and sends each where the edge says.
/// `Ok(true)` when the device has nothing more to read (its readiness may be cleared).
fn pump(
    edge: &mut Edge,
    buf: &mut [u8],
    from_substrate: bool,
    sub: &Device,
    out: &Device,
    st: &mut IoStats,
) -> io::Result<bool> {
    let src = if from_substrate { sub } else { out };
    for _ in 0..BATCH {
        let at = HEADROOM - VNET_HDR_LEN;
        let n = match src.recv(&mut buf[at..HEADROOM + MAX_PACKET]) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(true),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if n < VNET_HDR_LEN {
            continue;
        }
        st.rx += 1;
        let Ok(mut hdr) = VirtioNetHdr::parse(&buf[at..HEADROOM]) else {
            st.dropped += 1;
            continue;
        };
        let mut pkt = PacketBuf::new(buf, HEADROOM, at + n);
        // The header comes back describing the packet as it leaves.
        let v = if from_substrate {
            edge.from_substrate_with_vnet(&mut pkt, Some(&mut hdr))
        } else {
            edge.from_outside_with_vnet(&mut pkt, Some(&mut hdr))
        };
        let dev = match v {
            EdgeVerdict::ToOutside => out,
            EdgeVerdict::ToSubstrate => sub,
            EdgeVerdict::Drop(_) => {
                st.dropped += 1;
                continue;
            }
        };
        let range = pkt.range();
        match dev.send(&hdr, &buf[range]) {
            Ok(_) => st.tx += 1,
            Err(_) => st.tx_errors += 1,
        }
    }
    Ok(false)
}

async fn run(a: Args) -> Result<(), String> {
    let mut edge = Edge::new(a.locator);
    edge.apply(EdgeChange::ElasticIp {
        public: a.public,
        owner: Owner {
            network: a.network,
            vip: a.vip,
            host: a.host,
        },
    });
    let sub = offload_tun(&a.substrate_tun, "--substrate-tun")?;
    let out = offload_tun(&a.outside_tun, "--outside-tun")?;
    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    let mut buf = vec![0u8; HEADROOM + MAX_PACKET + dataplane::agent::MIN_BUFFER];
    let mut st = IoStats::default();
    println!(
        "READY {} {} offloads sub={:#x} out={:#x}",
        a.substrate_tun,
        a.outside_tun,
        sub.get_ref().offloads(),
        out.get_ref().offloads()
    );
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            g = sub.readable() => {
                let mut g = g.map_err(|e| format!("substrate: {e}"))?;
                if pump(&mut edge, &mut buf, true, sub.get_ref(), out.get_ref(), &mut st)
                    .map_err(|e| format!("substrate: {e}"))?
                {
                    g.clear_ready();
                }
            }
            g = out.readable() => {
                let mut g = g.map_err(|e| format!("outside: {e}"))?;
                if pump(&mut edge, &mut buf, false, sub.get_ref(), out.get_ref(), &mut st)
                    .map_err(|e| format!("outside: {e}"))?
                {
                    g.clear_ready();
                }
            }
        }
    }
    let es = edge.stats();
    println!(
        "STATS io rx_packets={} tx_packets={} tx_errors={} dropped={}",
        st.rx, st.tx, st.tx_errors, st.dropped
    );
    println!(
        "STATS edge outbound_packets={} outbound_bytes={} inbound_packets={} inbound_bytes={} \
         probes_answered={}",
        es.outbound_packets,
        es.outbound_bytes,
        es.inbound_packets,
        es.inbound_bytes,
        es.probes_answered
    );
    let drops: Vec<String> = es
        .drops
        .iter()
        .filter(|&(_, n)| n > 0)
        .map(|(r, n)| format!("{r:?}={n}"))
        .collect();
    println!("STATS drops total={} {}", es.drops.total(), drops.join(" "));
    Ok(())
}
