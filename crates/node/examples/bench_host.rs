//! One host of the side-by-side benchmark (`bench/run.sh`): the agent's packet loop
//! between this namespace's substrate TUN and one VM's TAP, configured with static
//! changes (network, subnet, the local node, and the peers' mappings) instead of a
//! manager, exactly as `tests/e2e_two_hosts.rs` does in-process.
//!
//! It opens both devices in the namespace it runs in (`ip netns exec <host> ...`), prints
//! `READY <tun> <tap>` once they exist (the script then moves the TAP into the VM's
//! namespace and configures addresses and routes), forwards until SIGTERM or SIGINT, and
//! prints its counters on the way out (`STATS ...`, one line each) so that the script can
//! show where packets went.
//!
//! ```text
//! cargo build --release -p canopy-node --example bench_host
//! ip netns exec H target/release/examples/bench_host --tun xs1 --tap xt1 \
//!     --locator fd63:6e73:0:1:: --vip 10.0.0.2 --mac 02:00:00:07:00:11 \
//!     --peer 10.0.0.3,fd63:6e73:0:2::,02:00:00:07:00:12
//! ```
//!
//! With `--edge LOCATOR --eip PUBLIC`, the network's default route goes to a NAT pool of
//! that one edge (`bench_edge`) and the VM has that elastic IP: the internet path.

use clap::Parser;
use dataplane::agent::{
    Agent, AgentConfig, Change, Mapping, NodeSpec, PortId, RouteTarget, Subnet,
};
use dataplane::pool::{Member, MemberState, PoolConfig};
use model::{Ipv4Cidr, Locator, NetworkId};
use node::agent_loop::{AgentLoop, Command};
use node::tap::Device;
use std::net::Ipv4Addr;
use std::process::ExitCode;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use wire::ethernet::MacAddr;

#[derive(Parser, Debug)]
#[command(
    about = "One benchmark host: the agent loop between a substrate TUN and a VM's TAP, \
                   statically configured (no manager). Stops on SIGTERM/SIGINT and prints its \
                   counters."
)]
struct Args {
    /// Name of the substrate TUN to create in this namespace (IPv6 packets).
    #[arg(long)]
    tun: String,
    /// Name of the VM's TAP to create in this namespace (move it into the VM's namespace
    /// after `READY`).
    #[arg(long)]
    tap: String,
    /// This host's /72 locator on the substrate, e.g. fd63:6e73:0:1::.
    #[arg(long)]
    locator: Locator,
    /// The virtual network's id (24 bits).
    #[arg(long, default_value = "7")]
    network: NetworkId,
    /// The virtual network's CIDR.
    #[arg(long, default_value = "10.0.0.0/16")]
    cidr: Ipv4Cidr,
    /// The VMs' subnet (its .1 is the virtual router).
    #[arg(long, default_value = "10.0.0.0/24")]
    subnet: Ipv4Cidr,
    /// The local VM's address.
    #[arg(long)]
    vip: Ipv4Addr,
    /// The local VM's MAC (the TAP's peer side must use it).
    #[arg(long)]
    mac: MacAddr,
    /// A remote VM, as VIP,LOCATOR,MAC (repeatable): pushed as an authoritative mapping.
    #[arg(long, value_parser = parse_peer)]
    peer: Vec<(Ipv4Addr, Mapping)>,
    /// An edge (its locator): the network's default route goes to a NAT pool with this one
    /// member (the internet through `bench_edge`).
    #[arg(long)]
    edge: Option<Locator>,
    /// The local VM's elastic IP (its traffic through the pool keeps its ports; the edge
    /// maps the whole address).
    #[arg(long)]
    eip: Option<Ipv4Addr>,
    /// The substrate MTU (the virtual MTU is 20 bytes less).
    #[arg(long, default_value_t = 1500)]
    substrate_mtu: u16,
}

fn parse_peer(s: &str) -> Result<(Ipv4Addr, Mapping), String> {
    let mut parts = s.split(',');
    let (Some(vip), Some(loc), Some(mac), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(format!("--peer {s:?}: expected VIP,LOCATOR,MAC"));
    };
    let vip = vip
        .parse()
        .map_err(|e| format!("--peer VIP {vip:?}: {e}"))?;
    let locator = loc
        .parse()
        .map_err(|e| format!("--peer LOCATOR {loc:?}: {e}"))?;
    let mac = mac
        .parse()
        .map_err(|e| format!("--peer MAC {mac:?}: {e}"))?;
    Ok((vip, Mapping { locator, mac }))
}

/// The agent with the network, the subnet, the local node and the peers' mappings.
fn configured_agent(a: &Args, port: PortId) -> Agent {
    let mut cfg = AgentConfig::new(a.locator);
    cfg.substrate_mtu = a.substrate_mtu;
    let mut agent = Agent::new(cfg);
    let subnet = Subnet::new(a.subnet);
    agent.apply(Change::Network {
        id: a.network,
        cidr: a.cidr,
    });
    agent.apply(Change::Subnet {
        network: a.network,
        subnet,
    });
    agent.apply(Change::AttachNode(NodeSpec {
        port,
        network: a.network,
        vip: a.vip,
        mac: a.mac,
        subnet,
    }));
    for &(vip, mapping) in &a.peer {
        agent.apply(Change::Mapping {
            network: a.network,
            vip,
            mapping: Some(mapping),
        });
    }
    if let Some(edge) = a.edge {
        const POOL: u32 = 1;
        agent.apply(Change::Pool {
            id: POOL,
            config: PoolConfig {
                nat: true,
                ..PoolConfig::default()
            },
            members: vec![Member {
                id: 1,
                locator: edge,
                weight: 1,
                state: MemberState::Active,
                load: None,
            }],
        });
        agent.apply(Change::Route {
            network: a.network,
            subnet: None,
            cidr: "0.0.0.0/0".parse().expect("a valid CIDR"),
            target: RouteTarget::Pool(POOL),
        });
    }
    if let Some(public) = a.eip {
        agent.apply(Change::ElasticIp {
            network: a.network,
            vip: a.vip,
            public: Some(public),
        });
    }
    agent
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    match run(Args::parse()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_host: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<(), String> {
    let port = PortId(1);
    let agent = configured_agent(&args, port);
    let tun = Device::tun(&args.tun).map_err(|e| format!("--tun {}: {e}", args.tun))?;
    let tap = Device::tap(&args.tap).map_err(|e| format!("--tap {}: {e}", args.tap))?;
    let offloads = (tun.offloads(), tap.offloads());
    let mut lp = AgentLoop::new(agent, tun).map_err(|e| format!("agent loop: {e}"))?;
    lp.add_port(port, tap)
        .map_err(|e| format!("--tap {}: {e}", args.tap))?;

    let mut term = signal(SignalKind::terminate()).map_err(|e| format!("SIGTERM: {e}"))?;
    let mut int = signal(SignalKind::interrupt()).map_err(|e| format!("SIGINT: {e}"))?;
    // Nothing asks the manager: every mapping is static. Resolve events (there should be
    // none) are counted and left unanswered.
    let (_cmd_tx, cmd_rx) = mpsc::channel::<Command>(16);
    let (ev_tx, mut ev_rx) = mpsc::channel(1024);
    let events = tokio::spawn(async move {
        let mut n = 0u64;
        while ev_rx.recv().await.is_some() {
            n += 1;
        }
        n
    });
    println!(
        "READY {} {} offloads tun={:#x} tap={:#x}",
        args.tun, args.tap, offloads.0, offloads.1
    );
    let lp = lp
        .run(cmd_rx, ev_tx, async {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        })
        .await
        .map_err(|e| format!("agent loop: {e}"))?;
    let unanswered = events.await.unwrap_or(0);

    let io = lp.io_stats();
    let st = lp.agent().stats();
    let per = |b: u64, p: u64| b.checked_div(p).unwrap_or(0);
    println!(
        "STATS io rx_packets={} rx_bytes={} rx_avg_bytes={} tx_packets={} tx_bytes={} \
         tx_avg_bytes={} rx_errors={} tx_errors={} no_device={}",
        io.rx_packets,
        io.rx_bytes,
        per(io.rx_bytes, io.rx_packets),
        io.tx_packets,
        io.tx_bytes,
        per(io.tx_bytes, io.tx_packets),
        io.rx_errors,
        io.tx_errors,
        io.no_device
    );
    println!(
        "STATS agent to_port={} to_substrate={} replies={} arp_replies={} held={} \
         cache_hits={} cache_misses={} resolves={} unanswered_events={unanswered}",
        st.to_port,
        st.to_substrate,
        st.replies,
        st.arp_replies,
        st.held,
        st.cache_hits,
        st.cache_misses,
        st.resolves
    );
    let drops: Vec<String> = st
        .drops
        .iter()
        .filter(|&(_, n)| n > 0)
        .map(|(r, n)| format!("{r:?}={n}"))
        .collect();
    println!("STATS drops total={} {}", st.drops.total(), drops.join(" "));
    Ok(())
}
