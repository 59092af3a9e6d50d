//! The edge of the side-by-side benchmark's internet path (`bench/run.sh`): a
//! [`dataplane::edge::Edge`] between this namespace's substrate TUN (IPv6 from and to the
//! agents) and an "outside" TUN (IPv4 to and from the internet namespace), configured with
//! one elastic IP instead of a manager.
//!
//! Both TUNs are opened with checksum and TCP segmentation offloads, as the daemon's edge
//! (`canopy edge`) opens them: a TCP super-packet crosses the edge as one unit with its
//! `virtio_net_hdr`, which the pipeline adjusts. The packets go through the daemon's own
//! loop (`node::edged::EdgeLoop`, batched through io_uring). Stops on SIGTERM or SIGINT
//! and prints its counters (`STATS ...`, as last published by the loop).
//!
//! ```text
//! ip netns exec E target/release/examples/bench_edge --substrate-tun xes --outside-tun xeo \
//!     --locator fd63:6e73:0:3:: --public 203.0.113.10 --vip 10.0.0.2 --host fd63:6e73:0:1::
//! ```

use clap::Parser;
use dataplane::edge::{Edge, EdgeChange, Owner};
use model::{Locator, NetworkId};
use node::edged::{EdgeLoop, EdgeLoopStats};
use node::tap::Device;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::{mpsc, watch};

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

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_edge: {e}");
            ExitCode::FAILURE
        }
    }
}

/// A TUN with offloads ([`node::tap::WANTED_OFFLOADS`], as far as the kernel allows).
fn offload_tun(name: &str, what: &str) -> Result<Device, String> {
    Device::tun(name).map_err(|e| format!("{what} {name}: {e}"))
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
    println!(
        "READY {} {} offloads sub={:#x} out={:#x}",
        a.substrate_tun,
        a.outside_tun,
        sub.offloads(),
        out.offloads()
    );
    // The daemon's loop, without a manager: no changes, reports dropped.
    let lp = EdgeLoop::new(edge, sub, out).map_err(|e| format!("edge loop: {e}"))?;
    let (_changes, changes_rx) = mpsc::channel(1);
    let (reports, _reports_rx) = mpsc::channel(1);
    let (stats_tx, stats) = watch::channel(EdgeLoopStats::default());
    lp.run(changes_rx, reports, stats_tx, async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    })
    .await
    .map_err(|e| format!("edge loop: {e}"))?;
    let st = stats.borrow().clone();
    println!(
        "STATS io rx_packets={} tx_packets={} tx_errors={} rx_errors={}",
        st.rx_packets, st.tx_packets, st.tx_errors, st.rx_errors
    );
    let es = st.edge;
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
