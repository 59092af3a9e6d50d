//! `canopy agent`: one host's daemon. It keeps the manager's watch stream, turns it into
//! the agent pipeline's configuration ([`crate::desired`]), owns one TAP per node of the
//! host and the substrate TUN, runs [`AgentLoop`](crate::agent_loop::AgentLoop), answers the pipeline's resolve and
//! port-block requests through the manager, and serves metrics.
//!
//! Devices are persistent (`TUNSETPERSIST`): an agent that stops leaves every VM's
//! interface and the substrate device as they were, and the next one attaches to them
//! again, so a restart pauses flows instead of breaking them. A node's TAP goes when the
//! node is deleted. While the manager is away the loop keeps forwarding with what it has;
//! the watch stream reconnects in the background and resumes from its last revision.

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use dataplane::agent::{Agent, AgentConfig, Change, Event, Mapping, PortId};
use model::Locator;
use tokio::sync::{mpsc, oneshot, watch};

use crate::agent_loop::{Command, LoopStats};
use crate::control::{ControlError, ManagerClient, WatchItem};
use crate::desired::{self, AgentConfigSet, Catalog, Effect, Ids, Key, LocalNode};
use crate::metrics::{self, ControlCounters, Text};
use crate::nat_state;
use crate::netns;
use crate::tap::{Device, Kind};
use crate::workers::Workers;

/// How `canopy agent` was asked to run.
#[derive(Debug, Clone)]
pub struct AgentOptions {
    pub manager: String,
    pub token: String,
    pub host_id: String,
    pub substrate_dev: String,
    /// `{name}` is replaced by the node's name: if that namespace path exists, the node's
    /// TAP is made inside it, named `eth0`, with the node's MAC.
    pub vm_netns: Option<String>,
    pub metrics: Option<SocketAddr>,
    pub substrate_mtu: u16,
    pub ready_file: Option<PathBuf>,
    /// Where the agent keeps what must outlive it: the NAT table ([`crate::nat_state`]).
    pub state_dir: PathBuf,
    /// Packet workers (threads, each with a queue of the substrate device and its share
    /// of the VM ports); 0: one per core, or one per CPU of `cpus`.
    pub workers: usize,
    /// The CPUs to pin the workers to, one each (`--cpus`); none: not pinned.
    pub cpus: Option<Vec<usize>>,
}

/// The workers to run for `asked` (0: one per core the process may use).
pub fn worker_count(asked: usize) -> usize {
    match asked {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    }
    .clamp(1, 64)
}

/// The state directory when none is given: `/run/canopy/agent-<host id>` (characters
/// other than letters, digits, `-`, `_` and `.` in the id become `_`).
pub fn default_state_dir(host_id: &str) -> PathBuf {
    let id: String = host_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    // One path component, always (`agent-` in front: never `.` or `..`).
    PathBuf::from("/run/canopy").join(format!("agent-{id}"))
}

/// How often the NAT table is saved while the agent runs: a `kill -9` loses the flows
/// opened since the last save, at most this long ago.
pub const SAVE_EVERY: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Control(#[from] ControlError),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{0}")]
    Config(String),
}

fn io_err(what: impl Into<String>) -> impl FnOnce(io::Error) -> DaemonError {
    let what = what.into();
    move |source| DaemonError::Io { what, source }
}

/// A node's device as the daemon keeps it: a second descriptor, to unpersist it when the
/// node goes (the loop holds the first).
struct PortDev {
    fd: OwnedFd,
    name: String,
    /// Made in the agent's namespace although `--vm-netns` was given: the VM's namespace
    /// did not exist yet. The port moves there when it appears.
    awaiting_netns: bool,
}

/// How often ports are looked after between configuration changes: a port whose device
/// could not be made is tried again, and one waiting for its VM's namespace moves there.
const PORT_CHECK: Duration = Duration::from_secs(1);

/// How both daemons start: the manager client, their control counters, the watch stream
/// (its task and its events) with the first snapshot already in `catalog`, and the stop
/// signal.
pub(crate) struct Session {
    pub client: ManagerClient,
    pub counters: Arc<ControlCounters>,
    pub events: mpsc::Receiver<WatchItem>,
    pub watcher: tokio::task::JoinHandle<()>,
    pub catalog: Catalog,
    stop: watch::Receiver<bool>,
}

impl Session {
    /// Connects, starts the watch stream and waits for the first snapshot. `None` when
    /// `shutdown` completes first.
    pub(crate) async fn start(
        manager: &str,
        token: &str,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<Option<Session>, DaemonError> {
        let client = ManagerClient::new(manager, token)?;
        let (stop_tx, stop) = watch::channel(false);
        tokio::spawn(async move {
            shutdown.await;
            let _ = stop_tx.send(true);
        });
        let counters = Arc::new(ControlCounters::default());
        let (wtx, mut events) = mpsc::channel(4096);
        let watcher = tokio::spawn(crate::control::watch_loop(client.clone(), wtx));
        let mut catalog = Catalog::default();
        let mut stopped = Box::pin(stop_signal(stop.clone()));
        if first_sync(&mut events, &mut catalog, &counters, &mut stopped)
            .await
            .is_none()
        {
            watcher.abort();
            return Ok(None);
        }
        Ok(Some(Session {
            client,
            counters,
            events,
            watcher,
            catalog,
            stop,
        }))
    }

    /// A future that completes when the daemon is told to stop (as many as needed).
    pub(crate) fn stopped(&self) -> impl Fn() -> Pin<Box<dyn Future<Output = ()> + Send>> {
        let stop = self.stop.clone();
        move || Box::pin(stop_signal(stop.clone()))
    }
}

async fn stop_signal(mut stop: watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Waits until the catalog has seen a complete snapshot. `None` if `shutdown` came first.
pub(crate) async fn first_sync(
    events: &mut mpsc::Receiver<WatchItem>,
    catalog: &mut Catalog,
    counters: &ControlCounters,
    shutdown: &mut (impl Future<Output = ()> + Unpin),
) -> Option<()> {
    let mut warned = false;
    loop {
        let item = tokio::select! {
            () = &mut *shutdown => return None,
            item = events.recv() => item?,
        };
        match item {
            WatchItem::Event(ev) => {
                if catalog.ingest(&ev) == Effect::Synced {
                    return Some(());
                }
            }
            WatchItem::Connected { .. } => ControlCounters::inc(&counters.watch_connects),
            WatchItem::Disconnected { error } => {
                ControlCounters::inc(&counters.watch_disconnects);
                if !warned {
                    tracing::warn!(%error, "manager not reachable yet; retrying");
                    warned = true;
                }
            }
        }
    }
}

/// Writes `path` (through a temporary file, so readers never see it half written).
pub(crate) fn write_ready(path: &Path) -> Result<(), DaemonError> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, format!("{}\n", std::process::id()))
        .and_then(|()| std::fs::rename(&tmp, path))
        .map_err(io_err(format!("writing the ready file {}", path.display())))
}

/// Creates (or attaches to) a TUN with `queues` queues (`IFF_MULTI_QUEUE`), one per
/// worker, persistent, up with `mtu`, and routes `routes` into it (`ip route replace`;
/// IPv6 or IPv4 by their form). A device left single-queue (by an older daemon) is made
/// again.
pub(crate) fn setup_tun_queues(
    name: &str,
    mtu: u16,
    offloads: u32,
    routes: &[String],
    queues: usize,
) -> Result<Vec<Device>, DaemonError> {
    let open = || Device::open_queues(name, Kind::Tun, offloads, queues);
    let devs = match open() {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
            // Most likely there and single-queue; if not, the second try says why.
            tracing::info!(
                device = name,
                "cannot attach as multi-queue; making it again"
            );
            let _ = netns::ip(&["link", "delete", "dev", name]);
            open()
        }
        r => r,
    }
    .map_err(io_err(format!(
        "opening {queues} queues of the TUN device {name}"
    )))?;
    finish_tun(name, &devs[0], mtu, routes)?;
    Ok(devs)
}

fn finish_tun(name: &str, dev: &Device, mtu: u16, routes: &[String]) -> Result<(), DaemonError> {
    dev.set_persist(true)
        .map_err(io_err(format!("making {name} persistent")))?;
    // No link-local address: with one the kernel sends more of its own IPv6 (reports for
    // its solicited-node group, router solicitations) into the device, for the loop to
    // read and drop. (A forwarding host still reports its all-routers group once or twice
    // as the device comes up: the agent counts those as `multicast`.)
    netns::ip(&["link", "set", "dev", name, "addrgenmode", "none"])
        .map_err(io_err(format!("turning off address generation on {name}")))?;
    let _ = netns::ip(&["-6", "addr", "flush", "dev", name, "scope", "link"]);
    let mtu = mtu.to_string();
    netns::ip(&["link", "set", "dev", name, "mtu", &mtu, "up"])
        .map_err(io_err(format!("bringing {name} up")))?;
    for r in routes {
        let family = if r.contains(':') { "-6" } else { "-4" };
        netns::ip(&[family, "route", "replace", r, "dev", name])
            .map_err(io_err(format!("routing {r} into {name}")))?;
    }
    Ok(())
}

/// The TAP of a local node: in its VM namespace when the template names one that exists,
/// else in ours.
fn open_port(node: &LocalNode, template: Option<&str>) -> io::Result<Device> {
    if let Some(t) = template {
        let path = PathBuf::from(t.replace("{name}", &node.name));
        if path.exists() {
            let mac = node.mac.to_string();
            let dev = Device::open_in_netns(&path, "eth0", Kind::Tap, move |d| {
                d.set_persist(true)?;
                netns::ip(&["link", "set", "dev", "eth0", "address", &mac, "up"])?;
                Ok(())
            })?;
            tracing::info!(node = node.node_id, netns = %path.display(), "VM port eth0 ready");
            return Ok(dev);
        }
        tracing::info!(node = node.node_id, netns = %path.display(),
            "no such VM namespace; the port is made in the agent's namespace");
    }
    let name = port_name(&node.node_id);
    let dev = Device::tap(&name)?;
    dev.set_persist(true)?;
    netns::ip(&["link", "set", "dev", &name, "up"])?;
    tracing::info!(node = node.node_id, device = name, "VM port ready");
    Ok(dev)
}

/// `cn` + the 12 hex digits of a node id (`node-1a2b3c4d5e6f`), or of a hash of it.
pub fn port_name(node_id: &str) -> String {
    let tail = node_id.rsplit('-').next().unwrap_or(node_id);
    if tail.len() == 12 && tail.bytes().all(|b| b.is_ascii_hexdigit()) {
        format!("cn{}", tail.to_ascii_lowercase())
    } else {
        format!("cn{:012x}", u64::from(desired::member_id(node_id)) << 16)
    }
}

/// Deletes the TAPs of this namespace named like a node's port (`cn` + 12 hex digits)
/// that belong to no node of the host any more: nodes deleted while no agent ran.
/// (Ports inside VM namespaces go with those namespaces.)
fn remove_stale_ports(keep: &[String]) {
    let Ok(out) = netns::ip(&["-o", "-d", "link", "show"]) else {
        return;
    };
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(name) = line
            .split(": ")
            .nth(1)
            .map(|n| n.split('@').next().unwrap_or(n))
        else {
            continue;
        };
        let ours = name.len() == 14
            && name.starts_with("cn")
            && name[2..].bytes().all(|b| b.is_ascii_hexdigit())
            && line.contains("tun type tap");
        if ours && !keep.iter().any(|k| k == name) {
            match netns::ip(&["link", "del", "dev", name]) {
                Ok(_) => tracing::info!(device = name, "stale port of a deleted node removed"),
                Err(e) => tracing::warn!(device = name, error = %e, "cannot remove a stale port"),
            }
        }
    }
}

fn unpersist(fd: &OwnedFd) {
    // SAFETY: TUNSETPERSIST takes its argument by value; a failure only leaves the
    // device behind.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TUNSETPERSIST as _, 0 as libc::c_ulong) };
    if r < 0 {
        tracing::warn!(error = %io::Error::last_os_error(), "cannot release a port device");
    }
}

/// The names of the pools and edges the agent knows by number, for metric labels.
#[derive(Debug, Default)]
pub struct EdgeNames {
    pub pools: std::collections::HashMap<u32, String>,
    pub edges: std::collections::HashMap<u32, String>,
}

impl EdgeNames {
    fn of(catalog: &Catalog, ids: &Ids) -> Self {
        EdgeNames {
            pools: catalog
                .pools
                .keys()
                .filter_map(|id| Some((ids.pools.lookup(id)?, id.clone())))
                .collect(),
            edges: catalog
                .edges
                .keys()
                .map(|id| (desired::member_id(id), id.clone()))
                .collect(),
        }
    }
}

struct Daemon {
    opts: AgentOptions,
    client: ManagerClient,
    catalog: Catalog,
    ids: Ids,
    applied: AgentConfigSet,
    commands: mpsc::Sender<Command>,
    devices: BTreeMap<PortId, PortDev>,
    counters: Arc<ControlCounters>,
    blocks_gauge: Arc<std::sync::atomic::AtomicU64>,
    names: Arc<std::sync::RwLock<EdgeNames>>,
    /// Resolves asked of the manager and not answered yet: every worker misses on its
    /// own, and one answer goes to all of them.
    resolving:
        Arc<std::sync::Mutex<std::collections::HashSet<(model::NetworkId, std::net::Ipv4Addr)>>>,
}

impl Daemon {
    /// Brings the loop to what the catalog says now.
    async fn converge(&mut self) {
        let new = self.catalog.agent_config(&self.opts.host_id, &mut self.ids);
        let d = desired::diff(&self.applied.changes, &new.changes);
        for (key, old) in &d.removed {
            if let Some(c) = desired::undo(old) {
                self.send(Command::Apply(c)).await;
            }
            if let Key::Node(port) = key {
                self.send(Command::RemovePort(*port)).await;
                if let Some(dev) = self.devices.remove(port) {
                    unpersist(&dev.fd);
                    tracing::info!(port = port.0, device = dev.name, "node gone; port removed");
                }
            }
        }
        for (key, change) in d.set {
            if let Key::Node(port) = key {
                let fresh = !self.devices.contains_key(&port);
                if let (true, Some(node)) = (fresh, new.local.get(&port)) {
                    self.add_port(port, node.clone()).await;
                }
            }
            self.send(Command::Apply(change)).await;
        }
        self.check_ports(&new.local).await;
        let blocks: usize = new
            .changes
            .values()
            .map(|c| match c {
                Change::PortBlocks { blocks, .. } => blocks.len(),
                _ => 0,
            })
            .sum();
        self.blocks_gauge
            .store(blocks as u64, std::sync::atomic::Ordering::Relaxed);
        *self.names.write().unwrap_or_else(|e| e.into_inner()) =
            EdgeNames::of(&self.catalog, &self.ids);
        self.applied = new;
    }

    /// Tries again the ports whose device could not be made, and moves into its VM's
    /// namespace a port made in ours because that namespace did not exist yet (the node
    /// was created before its VM).
    async fn check_ports(&mut self, local: &BTreeMap<PortId, LocalNode>) {
        let template = self.opts.vm_netns.clone();
        let appeared = |n: &LocalNode| {
            template
                .as_deref()
                .is_some_and(|t| Path::new(&t.replace("{name}", &n.name)).exists())
        };
        let redo: Vec<(PortId, LocalNode)> = local
            .iter()
            .filter(|(p, n)| match self.devices.get(p) {
                None => true,
                Some(d) => d.awaiting_netns && appeared(n),
            })
            .map(|(p, n)| (*p, n.clone()))
            .collect();
        for (port, node) in redo {
            if let Some(old) = self.devices.remove(&port) {
                // The loop closes its descriptor; ours goes here: the device goes with them.
                self.send(Command::RemovePort(port)).await;
                unpersist(&old.fd);
                tracing::info!(
                    node = node.node_id,
                    device = old.name,
                    "the VM's namespace appeared; its port moves there"
                );
            }
            self.add_port(port, node).await;
        }
    }

    async fn add_port(&mut self, port: PortId, node: LocalNode) {
        let template = self.opts.vm_netns.clone();
        let n = node.clone();
        let opened = tokio::task::spawn_blocking(move || open_port(&n, template.as_deref())).await;
        let dev = match opened {
            Ok(Ok(d)) => d,
            Ok(Err(e)) => {
                tracing::warn!(node = node.node_id, error = %e, "cannot create the node's port");
                return;
            }
            Err(e) => {
                tracing::warn!(node = node.node_id, error = %e, "port creation failed");
                return;
            }
        };
        match dev.as_fd().try_clone_to_owned() {
            Ok(fd) => {
                let awaiting_netns = self.opts.vm_netns.is_some() && dev.name() != "eth0";
                self.devices.insert(
                    port,
                    PortDev {
                        fd,
                        name: dev.name().to_string(),
                        awaiting_netns,
                    },
                );
            }
            Err(e) => tracing::warn!(error = %e, "cannot keep a handle on the port"),
        }
        self.send(Command::AddPort(port, dev)).await;
    }

    async fn send(&self, c: Command) {
        if matches!(c, Command::Apply(_)) {
            ControlCounters::inc(&self.counters.changes_applied);
        }
        if self.commands.send(c).await.is_err() {
            tracing::debug!("the packet loop is gone");
        }
    }

    /// Starts what the pipeline asked for.
    fn on_event(&self, e: Event) {
        match e {
            Event::Resolve { network, ip } => {
                let Some(net) = self.catalog.network_by_vni(network).map(str::to_string) else {
                    return;
                };
                let resolving = self.resolving.clone();
                let first = resolving
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert((network, ip));
                if !first {
                    return;
                }
                let client = self.client.clone();
                let commands = self.commands.clone();
                let counters = self.counters.clone();
                tokio::spawn(async move {
                    let answer = client.resolve(&net, ip).await;
                    resolving
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .remove(&(network, ip));
                    let mapping = match answer {
                        Ok(Some(r)) => {
                            let m = r
                                .locator
                                .parse::<Locator>()
                                .ok()
                                .zip(r.mac.parse().ok())
                                .map(|(locator, mac)| Mapping { locator, mac });
                            ControlCounters::inc(&counters.resolves_ok);
                            m
                        }
                        Ok(None) => {
                            ControlCounters::inc(&counters.resolves_not_found);
                            None
                        }
                        Err(e) => {
                            // The agent asks again on its own.
                            ControlCounters::inc(&counters.resolve_errors);
                            tracing::debug!(%ip, error = %e, "resolve failed");
                            return;
                        }
                    };
                    let _ = commands
                        .send(Command::Resolved {
                            network,
                            ip,
                            mapping,
                        })
                        .await;
                });
            }
            Event::NeedPortBlock { network, vip } => {
                let Some(node) = self
                    .catalog
                    .node_by_vip(&self.opts.host_id, network, vip)
                    .map(|n| n.id.clone())
                else {
                    tracing::warn!(%vip, "port block wanted for an unknown node");
                    return;
                };
                let client = self.client.clone();
                let counters = self.counters.clone();
                tokio::spawn(async move {
                    ControlCounters::inc(&counters.port_block_requests);
                    match client.request_port_block(&node).await {
                        // The block itself arrives on the watch stream.
                        Ok(Some(b)) => tracing::info!(node, block = %b, "port block assigned"),
                        Ok(None) => {
                            ControlCounters::inc(&counters.port_block_errors);
                            tracing::warn!(node, "port block refused: node unknown");
                        }
                        Err(e) => {
                            ControlCounters::inc(&counters.port_block_errors);
                            tracing::warn!(node, error = %e, "port block refused");
                        }
                    }
                });
            }
            // What worker 0 found of an edge: the workers' router gives it to the others.
            Event::EdgeHealth { .. } => {}
        }
    }
}

fn render_agent(
    stats: &[watch::Receiver<LoopStats>],
    counters: &ControlCounters,
    blocks: &std::sync::atomic::AtomicU64,
    names: &std::sync::RwLock<EdgeNames>,
) -> String {
    let each: Vec<LoopStats> = stats.iter().map(|w| w.borrow().clone()).collect();
    let s = LoopStats::sum(&each);
    let mut t = Text::default();
    edge_choices(
        &mut t,
        &s.edge_choices,
        &names.read().unwrap_or_else(|e| e.into_inner()),
    );
    t.metric(
        "canopy_agent_packets_total",
        "counter",
        "Packets read from and written to the devices.",
        &[
            ("direction=\"rx\"", s.io.rx_packets),
            ("direction=\"tx\"", s.io.tx_packets),
        ],
    );
    t.metric(
        "canopy_agent_bytes_total",
        "counter",
        "Bytes read from and written to the devices.",
        &[
            ("direction=\"rx\"", s.io.rx_bytes),
            ("direction=\"tx\"", s.io.tx_bytes),
        ],
    );
    t.metric(
        "canopy_agent_verdicts_total",
        "counter",
        "What the pipeline did with packets.",
        &[
            ("verdict=\"to_port\"", s.agent.to_port),
            ("verdict=\"to_substrate\"", s.agent.to_substrate),
            ("verdict=\"to_worker\"", s.agent.to_worker),
            ("verdict=\"reply\"", s.agent.replies),
            ("verdict=\"held\"", s.agent.held),
        ],
    );
    t.counter(
        "canopy_agent_port_block_holds_total",
        "Packets held until their node's port block came.",
        s.agent.port_block_holds,
    );
    t.drops(
        "canopy_agent_drops_total",
        "Packets dropped by the pipeline, by reason.",
        &s.agent.drops,
    );
    t.metric(
        "canopy_agent_io_errors_total",
        "counter",
        "Device errors.",
        &[
            ("kind=\"rx\"", s.io.rx_errors),
            ("kind=\"tx\"", s.io.tx_errors),
            ("kind=\"no_device\"", s.io.no_device),
            ("kind=\"events_dropped\"", s.io.events_dropped),
        ],
    );
    t.metric(
        "canopy_agent_mapping_cache_total",
        "counter",
        "Mapping cache lookups by result.",
        &[
            ("result=\"hit\"", s.agent.cache_hits),
            ("result=\"miss\"", s.agent.cache_misses),
        ],
    );
    t.counter(
        "canopy_agent_resolves_asked_total",
        "Resolves the pipeline asked for.",
        s.agent.resolves,
    );
    t.metric(
        "canopy_agent_dhcp_total",
        "counter",
        "DHCP answers.",
        &[
            ("type=\"offer\"", s.agent.dhcp_offers),
            ("type=\"ack\"", s.agent.dhcp_acks),
            ("type=\"nak\"", s.agent.dhcp_naks),
        ],
    );
    t.counter(
        "canopy_agent_arp_replies_total",
        "ARP requests answered.",
        s.agent.arp_replies,
    );
    t.metric(
        "canopy_agent_edge_probes_total",
        "counter",
        "Health probes to the pools' edges, sent and answered.",
        &[
            ("result=\"sent\"", s.agent.probes_sent),
            ("result=\"answered\"", s.agent.probes_answered),
        ],
    );
    t.gauge(
        "canopy_agent_edges_down",
        "Edges now out of their pool for unanswered probes.",
        s.agent.members_down,
    );
    t.gauge(
        "canopy_agent_ports",
        "VM ports with a device.",
        s.ports as u64,
    );
    t.counter(
        "canopy_agent_io_uring_calls_total",
        "System calls that read or wrote a batch of packets through io_uring (packets \
         moved / calls is the batching achieved; 0 without io_uring).",
        s.io.ring_calls,
    );
    t.gauge(
        "canopy_agent_workers",
        "Packet workers (each with a substrate queue and a share of the VM ports).",
        stats.len() as u64,
    );
    t.metric(
        "canopy_agent_handoffs_total",
        "counter",
        "Packets for a node of another worker, handed there (out), taken from another \
         worker (in), or dropped because that worker was behind (refused).",
        &[
            ("direction=\"out\"", s.io.handed_out),
            ("direction=\"in\"", s.io.handed_in),
            ("direction=\"refused\"", s.io.handoff_refused),
        ],
    );
    t.gauge(
        "canopy_agent_port_blocks",
        "NAT port blocks held by this host's nodes.",
        blocks.load(std::sync::atomic::Ordering::Relaxed),
    );
    counters.render("canopy_agent", &mut t);
    t.finish()
}

/// `canopy_agent_edge_choices_total{pool,edge}`: the flows this agent sent to each edge
/// of each pool, labelled with the manager's ids (the number, for one not known by name).
fn edge_choices(t: &mut Text, choices: &[(u32, u32, u64)], names: &EdgeNames) {
    let mut samples: Vec<(Vec<(&str, String)>, u64)> = choices
        .iter()
        .map(|&(pool, edge, n)| {
            let pool = names.pools.get(&pool).cloned().unwrap_or(pool.to_string());
            let edge = names.edges.get(&edge).cloned().unwrap_or(edge.to_string());
            (vec![("pool", pool), ("edge", edge)], n)
        })
        .collect();
    samples.sort();
    t.labeled(
        "canopy_agent_edge_choices_total",
        "counter",
        "Flows sent to each edge of each pool (new flows, and flows moved off an edge that \
         went down), per pool and edge.",
        &samples,
    );
}

/// Runs the agent until `shutdown` completes.
pub async fn run_agent(
    opts: AgentOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
    // Flags first: a bad --cpus is told before anything is connected or made.
    let allowed = match opts.cpus {
        Some(_) => crate::cpus::allowed().map_err(io_err("reading the CPU affinity"))?,
        None => Vec::new(),
    };
    let cpus = crate::cpus::plan(opts.workers, opts.cpus.as_deref(), &allowed)
        .map_err(DaemonError::Config)?;
    let Some(session) = Session::start(&opts.manager, &opts.token, shutdown).await? else {
        return Ok(());
    };
    let stopped = session.stopped();
    let mut stop = stopped();
    let Session {
        client,
        counters,
        events: mut wrx,
        watcher,
        catalog,
        ..
    } = session;
    let locator = catalog.host_locator(&opts.host_id).ok_or_else(|| {
        DaemonError::Config(format!(
            "host {:?} is not known to the manager (check --host-id and that the token is this host's)",
            opts.host_id
        ))
    })?;
    tracing::info!(host = opts.host_id, %locator, "configuration received");

    let (name, mtu) = (opts.substrate_dev.clone(), opts.substrate_mtu);
    let route = locator.to_string();
    let n = cpus.len();
    let queues = tokio::task::spawn_blocking(move || {
        setup_tun_queues(&name, mtu, crate::tap::WANTED_OFFLOADS, &[route], n)
    })
    .await
    .map_err(|e| DaemonError::Config(e.to_string()))??;

    let store = Arc::new(nat_state::Store::new(&opts.state_dir));
    let saved = {
        let s = store.clone();
        tokio::task::spawn_blocking(move || s.load())
            .await
            .unwrap_or_default()
    };
    let agents: Vec<Agent> = (0..n)
        .map(|i| {
            let mut cfg = AgentConfig::new(locator);
            cfg.substrate_mtu = opts.substrate_mtu;
            (cfg.worker, cfg.workers) = (i as u16, n as u16);
            let mut agent = Agent::new(cfg);
            // Every worker takes the saved flows; each keeps (and saves) its own nodes'.
            let r = agent.import_nat(&saved, dataplane::Instant::ZERO);
            if i == 0 && !saved.is_empty() {
                tracing::info!(path = %store.path().display(), flows = r.flows,
                    skipped = r.skipped, "NAT state restored");
            }
            agent
        })
        .collect();
    let (ev_tx, mut ev_rx) = mpsc::channel(1024);
    let mut workers = Workers::start(agents, queues, cpus.clone(), ev_tx)
        .map_err(io_err("starting the workers"))?;
    let pinned: Vec<usize> = cpus.iter().flatten().copied().collect();
    if pinned.is_empty() {
        tracing::info!(workers = n, "packet workers started");
    } else {
        tracing::info!(workers = n, cpus = %crate::cpus::format_list(&pinned), "packet workers started, pinned");
    }
    let cmd_tx = workers.commands();
    let stats_rx = workers.stats();
    let saver = spawn_saver(cmd_tx.clone(), store.clone());

    let blocks_gauge = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let names = Arc::new(std::sync::RwLock::new(EdgeNames::default()));
    let metrics_task = match opts.metrics {
        Some(addr) => {
            let (s, c, b, n) = (
                stats_rx.clone(),
                counters.clone(),
                blocks_gauge.clone(),
                names.clone(),
            );
            let render: metrics::Render = Arc::new(move || render_agent(&s, &c, &b, &n));
            Some(
                metrics::serve(addr, render, stopped())
                    .await
                    .map_err(io_err(format!("serving metrics on {addr}")))?,
            )
        }
        None => None,
    };

    let mut d = Daemon {
        opts,
        client,
        catalog,
        ids: Ids::default(),
        applied: AgentConfigSet::default(),
        commands: cmd_tx,
        devices: BTreeMap::new(),
        counters,
        blocks_gauge,
        names,
        resolving: Arc::default(),
    };
    d.converge().await;
    let keep: Vec<String> = d.devices.values().map(|p| p.name.clone()).collect();
    tokio::task::spawn_blocking(move || remove_stale_ports(&keep))
        .await
        .map_err(|e| DaemonError::Config(e.to_string()))?;
    // Everything sent has been applied by every worker.
    workers.sync().await;
    if let Some(p) = &d.opts.ready_file {
        write_ready(p)?;
    }
    tracing::info!(ports = d.devices.len(), "agent ready");

    let mut port_check = tokio::time::interval(PORT_CHECK);
    port_check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let result = loop {
        tokio::select! {
            () = &mut stop => break Ok(()),
            _ = port_check.tick() => {
                let local = d.applied.local.clone();
                d.check_ports(&local).await;
            }
            (i, e) = workers.ended() => {
                break Err(DaemonError::Io { what: format!("packet worker {i}"), source: e });
            }
            Some(e) = ev_rx.recv() => d.on_event(e),
            item = wrx.recv() => {
                let Some(item) = item else { break Ok(()) };
                let mut changed = d.handle(item);
                // Take what else is waiting before deriving the configuration again.
                while let Ok(item) = wrx.try_recv() {
                    changed |= d.handle(item);
                }
                if changed {
                    d.converge().await;
                }
            }
        }
    };
    watcher.abort();
    saver.abort();
    // The workers give their NAT tables back when stopped: saved a last time.
    let nodes = workers.stop(Duration::from_secs(1)).await;
    if result.is_ok() {
        let s = store.clone();
        let _ = tokio::task::spawn_blocking(move || s.save_final(&nodes)).await;
        tracing::info!(path = %store.path().display(), "NAT state saved");
    }
    if let Some(m) = metrics_task {
        m.abort();
    }
    tracing::info!("agent stopped (devices kept for the next start)");
    result
}

/// Saves the NAT table every [`SAVE_EVERY`], asking the loop for it between packets.
fn spawn_saver(
    commands: mpsc::Sender<Command>,
    store: Arc<nat_state::Store>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut every = tokio::time::interval(SAVE_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        every.tick().await;
        loop {
            every.tick().await;
            let (tx, rx) = oneshot::channel();
            if commands.send(Command::ExportNat(tx)).await.is_err() {
                return;
            }
            let Ok(nodes) = rx.await else { return };
            let s = store.clone();
            let _ = tokio::task::spawn_blocking(move || s.save(&nodes)).await;
        }
    })
}

impl Daemon {
    /// Takes a watch item in; true if the configuration must be derived again.
    fn handle(&mut self, item: WatchItem) -> bool {
        match item {
            WatchItem::Event(ev) => {
                matches!(self.catalog.ingest(&ev), Effect::Changed | Effect::Synced)
            }
            WatchItem::Connected { since } => {
                ControlCounters::inc(&self.counters.watch_connects);
                tracing::info!(since, "watch stream open");
                false
            }
            WatchItem::Disconnected { error } => {
                ControlCounters::inc(&self.counters.watch_disconnects);
                tracing::warn!(%error, "watch stream lost; forwarding goes on, reconnecting");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edge_choices_are_labelled_with_the_managers_ids() {
        let mut names = EdgeNames::default();
        names.pools.insert(1, "pool-0123456789ab".into());
        names.edges.insert(
            desired::member_id("edge-aaaaaaaaaaaa"),
            "edge-aaaaaaaaaaaa".into(),
        );
        let e1 = desired::member_id("edge-aaaaaaaaaaaa");
        let mut t = Text::default();
        edge_choices(&mut t, &[(1, e1, 7), (1, 42, 3), (9, e1, 0)], &names);
        let text = t.finish();
        for want in [
            "# TYPE canopy_agent_edge_choices_total counter\n",
            "canopy_agent_edge_choices_total{pool=\"pool-0123456789ab\",edge=\"edge-aaaaaaaaaaaa\"} 7\n",
            "canopy_agent_edge_choices_total{pool=\"pool-0123456789ab\",edge=\"42\"} 3\n",
            "canopy_agent_edge_choices_total{pool=\"9\",edge=\"edge-aaaaaaaaaaaa\"} 0\n",
        ] {
            assert!(text.contains(want), "{want:?} not in:\n{text}");
        }
    }

    #[test]
    fn default_state_dir_is_per_host_and_stays_under_run_canopy() {
        assert_eq!(
            default_state_dir("host-0123456789ab"),
            PathBuf::from("/run/canopy/agent-host-0123456789ab")
        );
        assert_eq!(
            default_state_dir("../x/y"),
            PathBuf::from("/run/canopy/agent-.._x_y")
        );
        assert_eq!(
            default_state_dir(".."),
            PathBuf::from("/run/canopy/agent-..")
        );
    }
}
