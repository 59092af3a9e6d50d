//! `canopy edge`: one edge of a pool. Two TUN devices: the substrate (IPv6, its locator
//! /72 routed into it, and its pool's anycast locator when the pool is in anycast mode)
//! and the outside (IPv4, the pool's public ranges and its elastic IPs routed into it),
//! the stateless edge pipeline ([`Edge`]) between them, the owners of
//! port blocks and elastic IPs from the manager's watch stream, load reports to the
//! manager every few seconds, and metrics.
//!
//! The edge runs one packet worker per core (`--workers`), each a thread with its own
//! runtime, its own [`Edge`] and its own queue of both devices (`IFF_MULTI_QUEUE`). The
//! edge keeps no per-flow state, so any worker can carry any packet: the kernel spreads
//! flows over the queues and nothing is handed between workers; every worker gets every
//! change, and their loads add up to the edge's report.
//!
//! Both devices are opened with checksum and TCP segmentation offloads, as the agent's:
//! a TCP super-packet (up to 64 KiB, partial checksum) crosses the edge as one unit with
//! its `virtio_net_hdr`, which the pipeline adjusts, and the kernel cuts it where it
//! leaves (the outside's next hop, or the agent's VM).

use std::collections::BTreeMap;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use dataplane::agent::HEADROOM;
use dataplane::edge::{Edge, EdgeChange, EdgeStats, EdgeVerdict, LoadReport};
use dataplane::{Instant, PacketBuf};
use model::Locator;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, watch};
use wire::virtio::VirtioNetHdr;

use crate::agent_loop::{BATCH, MAX_PACKET};
use crate::agentd::{setup_tun_queues, worker_count, write_ready, DaemonError, Session};
use crate::control::WatchItem;
use crate::desired::{self, Catalog, EdgeConfigSet, EdgeKey, Effect};
use crate::metrics::{self, ControlCounters, Text};
use crate::netns;
use crate::ring::Batch;
use crate::tap::{Device, VNET_HDR_LEN, WANTED_OFFLOADS};

/// How `canopy edge` was asked to run.
#[derive(Debug, Clone)]
pub struct EdgeOptions {
    pub manager: String,
    pub token: String,
    pub edge_id: String,
    pub substrate_dev: String,
    pub outside_dev: String,
    pub metrics: Option<SocketAddr>,
    pub capacity_mbps: u64,
    pub substrate_mtu: u16,
    pub ready_file: Option<PathBuf>,
    /// Packet workers (threads, each with a queue of both devices); 0: one per core.
    pub workers: usize,
}

/// How often the edge reports its load.
pub const REPORT_INTERVAL: Duration = Duration::from_secs(2);
/// How often counters are copied for metrics.
const STATS_INTERVAL: Duration = Duration::from_millis(250);

/// Counters of the edge loop, copied for metrics.
#[derive(Debug, Clone, Default)]
pub struct EdgeLoopStats {
    pub edge: EdgeStats,
    pub rx_packets: u64,
    pub tx_packets: u64,
    pub rx_errors: u64,
    pub tx_errors: u64,
    pub last_load_percent: u64,
}

impl EdgeLoopStats {
    /// The workers' counters as one edge's (loads add up: each is its share of the
    /// edge's capacity).
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a EdgeLoopStats>) -> EdgeLoopStats {
        let mut t = EdgeLoopStats::default();
        for s in all {
            t.edge.merge(&s.edge);
            t.rx_packets += s.rx_packets;
            t.tx_packets += s.tx_packets;
            t.rx_errors += s.rx_errors;
            t.tx_errors += s.tx_errors;
            t.last_load_percent += s.last_load_percent;
        }
        t.last_load_percent = t.last_load_percent.min(100);
        t
    }
}

/// The edge's packet loop: one task owning the [`Edge`] and both devices.
pub struct EdgeLoop {
    edge: Edge,
    substrate: AsyncFd<Device>,
    outside: AsyncFd<Device>,
    buf: Box<[u8]>,
    /// Batched I/O when the kernel has io_uring (see [`crate::ring`]).
    batch: Option<Batch>,
    clock: std::time::Instant,
    stats: EdgeLoopStats,
}

fn register(dev: Device) -> io::Result<AsyncFd<Device>> {
    // SAFETY: as in `agent_loop::register`: a `Device` owns its descriptor for its life.
    unsafe { AsyncFd::register(dev) }.map_err(|e| e.into_parts().1)
}

#[derive(Clone, Copy)]
enum Side {
    Substrate,
    Outside,
}

impl EdgeLoop {
    /// Must be called inside a tokio runtime.
    pub fn new(edge: Edge, substrate: Device, outside: Device) -> io::Result<Self> {
        Ok(EdgeLoop {
            edge,
            substrate: register(substrate)?,
            outside: register(outside)?,
            buf: vec![0u8; HEADROOM + MAX_PACKET + dataplane::agent::MIN_BUFFER].into_boxed_slice(),
            batch: Batch::new(BATCH, HEADROOM + MAX_PACKET + dataplane::agent::MIN_BUFFER),
            clock: std::time::Instant::now(),
            stats: EdgeLoopStats::default(),
        })
    }

    fn now(&self) -> Instant {
        Instant::from_millis(self.clock.elapsed().as_millis() as u64)
    }

    /// Runs until `shutdown`: changes applied between packets, a load report sent on
    /// `reports` every [`REPORT_INTERVAL`], counters published on `stats`.
    pub async fn run(
        mut self,
        mut changes: mpsc::Receiver<EdgeChange>,
        reports: mpsc::Sender<LoadReport>,
        stats: watch::Sender<EdgeLoopStats>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut report = tokio::time::interval(REPORT_INTERVAL);
        let mut publish = tokio::time::interval(STATS_INTERVAL);
        let mut changes_open = true;
        let mut sub_first = true;
        loop {
            tokio::select! {
                biased;
                _ = &mut shutdown => return Ok(()),
                c = changes.recv(), if changes_open => match c {
                    Some(c) => self.edge.apply(c),
                    None => changes_open = false,
                },
                _ = report.tick() => {
                    let r = self.edge.report_load(self.now());
                    self.stats.last_load_percent = (r.load * 100.0).round() as u64;
                    let _ = reports.try_send(r);
                }
                _ = publish.tick() => {
                    self.stats.edge = self.edge.stats().clone();
                    stats.send_replace(self.stats.clone());
                }
                side = std::future::poll_fn(|cx| {
                    let order = if sub_first {
                        [(&self.substrate, Side::Substrate), (&self.outside, Side::Outside)]
                    } else {
                        [(&self.outside, Side::Outside), (&self.substrate, Side::Substrate)]
                    };
                    for (dev, side) in order {
                        match dev.poll_read_ready(cx) {
                            std::task::Poll::Ready(Ok(_)) => return std::task::Poll::Ready(Ok(side)),
                            std::task::Poll::Ready(Err(e)) => return std::task::Poll::Ready(Err(e)),
                            std::task::Poll::Pending => {}
                        }
                    }
                    std::task::Poll::Pending
                }) => {
                    sub_first = !sub_first;
                    self.read_batch(side?).await?;
                }
            }
        }
    }

    async fn read_batch(&mut self, side: Side) -> io::Result<()> {
        if self.batch.is_some() {
            return self.read_batch_ring(side).await;
        }
        let EdgeLoop {
            edge,
            substrate,
            outside,
            buf,
            stats,
            ..
        } = self;
        let from = match side {
            Side::Substrate => &*substrate,
            Side::Outside => &*outside,
        };
        let mut guard = from.readable().await?;
        for _ in 0..BATCH {
            let at = HEADROOM - VNET_HDR_LEN;
            let n = match guard.try_io(|d| d.get_ref().recv(&mut buf[at..HEADROOM + MAX_PACKET])) {
                Err(_would_block) => break,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => {
                    stats.rx_errors += 1;
                    return Err(e);
                }
                Ok(Ok(n)) => n,
            };
            if n <= VNET_HDR_LEN {
                stats.rx_errors += 1;
                continue;
            }
            stats.rx_packets += 1;
            let Ok(mut hdr) = VirtioNetHdr::parse(&buf[at..HEADROOM]) else {
                stats.rx_errors += 1;
                continue;
            };
            let mut pkt = PacketBuf::new(buf, HEADROOM, at + n);
            // The header comes back describing the packet as it leaves.
            let v = match side {
                Side::Substrate => edge.from_substrate_with_vnet(&mut pkt, Some(&mut hdr)),
                Side::Outside => edge.from_outside_with_vnet(&mut pkt, Some(&mut hdr)),
            };
            let to = match v {
                EdgeVerdict::ToOutside => outside.get_ref(),
                EdgeVerdict::ToSubstrate => substrate.get_ref(),
                EdgeVerdict::Drop(reason) => {
                    tracing::trace!(?reason, "dropped");
                    continue;
                }
            };
            let range = pkt.range();
            match to.send(&hdr, &buf[range]) {
                Ok(_) => stats.tx_packets += 1,
                Err(e) => {
                    stats.tx_errors += 1;
                    tracing::debug!(device = to.name(), error = %e, "device write failed");
                }
            }
        }
        Ok(())
    }
}

impl EdgeLoop {
    /// [`read_batch`](Self::read_batch) in one io_uring call for the reads and one for the
    /// writes.
    async fn read_batch_ring(&mut self, side: Side) -> io::Result<()> {
        let EdgeLoop {
            edge,
            substrate,
            outside,
            batch: batched,
            stats,
            ..
        } = self;
        let Some(batch) = batched else {
            return Ok(());
        };
        let (from, which) = match side {
            Side::Substrate => (&*substrate, 0),
            Side::Outside => (&*outside, 1),
        };
        let mut guard = from.readable().await?;
        let at = HEADROOM - VNET_HDR_LEN;
        let (sub, out) = (substrate.get_ref(), outside.get_ref());
        let end = batch.run(which, from.get_ref().as_raw_fd(), at, |slot, n| {
            if n <= VNET_HDR_LEN {
                stats.rx_errors += 1;
                return None;
            }
            stats.rx_packets += 1;
            let Ok(mut hdr) = VirtioNetHdr::parse(&slot[at..HEADROOM]) else {
                stats.rx_errors += 1;
                return None;
            };
            let mut pkt = PacketBuf::new(slot, HEADROOM, at + n);
            let v = match side {
                Side::Substrate => edge.from_substrate_with_vnet(&mut pkt, Some(&mut hdr)),
                Side::Outside => edge.from_outside_with_vnet(&mut pkt, Some(&mut hdr)),
            };
            let to = match v {
                EdgeVerdict::ToOutside => out,
                EdgeVerdict::ToSubstrate => sub,
                EdgeVerdict::Drop(reason) => {
                    tracing::trace!(?reason, "dropped");
                    return None;
                }
            };
            Some((to, hdr, pkt.range()))
        });
        stats.tx_packets += end.tx_packets;
        stats.tx_errors += end.tx_errors;
        match end.read.settle(&mut guard, batched) {
            None => Ok(()),
            Some(e) => {
                stats.rx_errors += 1;
                Err(e)
            }
        }
    }
}

fn render_edge(stats: &[watch::Receiver<EdgeLoopStats>], counters: &ControlCounters) -> String {
    let each: Vec<EdgeLoopStats> = stats.iter().map(|w| w.borrow().clone()).collect();
    let s = EdgeLoopStats::sum(&each);
    let mut t = Text::default();
    t.gauge(
        "canopy_edge_workers",
        "Packet workers (each with a queue of both devices).",
        stats.len() as u64,
    );
    let labels: Vec<String> = (0..each.len()).map(|i| format!("worker=\"{i}\"")).collect();
    let per_worker: Vec<(&str, u64)> = labels
        .iter()
        .zip(&each)
        .map(|(l, w)| (l.as_str(), w.rx_packets))
        .collect();
    t.metric(
        "canopy_edge_worker_packets_total",
        "counter",
        "Packets each worker read from its queues (the kernel spreads flows over them).",
        &per_worker,
    );
    t.metric(
        "canopy_edge_packets_total",
        "counter",
        "Packets carried by the pipeline, by direction.",
        &[
            ("direction=\"outbound\"", s.edge.outbound_packets),
            ("direction=\"inbound\"", s.edge.inbound_packets),
        ],
    );
    t.metric(
        "canopy_edge_bytes_total",
        "counter",
        "Bytes carried by the pipeline, by direction.",
        &[
            ("direction=\"outbound\"", s.edge.outbound_bytes),
            ("direction=\"inbound\"", s.edge.inbound_bytes),
        ],
    );
    t.drops(
        "canopy_edge_drops_total",
        "Packets dropped by the pipeline, by reason.",
        &s.edge.drops,
    );
    t.metric(
        "canopy_edge_device_packets_total",
        "counter",
        "Packets read from and written to the devices.",
        &[
            ("direction=\"rx\"", s.rx_packets),
            ("direction=\"tx\"", s.tx_packets),
        ],
    );
    t.metric(
        "canopy_edge_io_errors_total",
        "counter",
        "Device errors.",
        &[("kind=\"rx\"", s.rx_errors), ("kind=\"tx\"", s.tx_errors)],
    );
    t.gauge(
        "canopy_edge_load_percent",
        "Load in percent of capacity at the last report.",
        s.last_load_percent,
    );
    counters.render("canopy_edge", &mut t);
    t.finish()
}

/// Routes the pool's public ranges and elastic IPs into the outside device; returns the
/// routes now in place.
fn route_outside(dev: &str, cfg: &EdgeConfigSet, had: &[String]) -> Vec<String> {
    let mut want: Vec<String> = cfg.public_ranges.iter().map(|c| c.to_string()).collect();
    want.extend(cfg.elastic_ips.iter().map(|a| format!("{a}/32")));
    want.sort();
    want.dedup();
    for r in had.iter().filter(|r| !want.contains(r)) {
        if let Err(e) = netns::ip(&["-4", "route", "del", r, "dev", dev]) {
            tracing::warn!(route = r, error = %e, "cannot remove an outside route");
        }
    }
    for r in want.iter().filter(|r| !had.contains(r)) {
        if let Err(e) = netns::ip(&["-4", "route", "replace", r, "dev", dev]) {
            tracing::warn!(route = r, error = %e, "cannot route into the outside device");
        }
    }
    want
}

/// Routes the pool's anycast locator (anycast mode) into the substrate device, as a real
/// edge carries the address the load balancer or ECMP router in front of its pool sends
/// to; removes the route when the pool has none any more. Returns the route now in place.
fn route_anycast(dev: &str, want: Option<Locator>, had: Option<Locator>) -> Option<Locator> {
    if want == had {
        return had;
    }
    if let Some(old) = had {
        if let Err(e) = netns::ip(&["-6", "route", "del", &old.to_string(), "dev", dev]) {
            tracing::warn!(route = %old, error = %e, "cannot remove the anycast route");
        }
    }
    let new = want?;
    match netns::ip(&["-6", "route", "replace", &new.to_string(), "dev", dev]) {
        Ok(_) => {
            tracing::info!(anycast = %new, "accepting the pool's anycast locator");
            Some(new)
        }
        Err(e) => {
            tracing::warn!(route = %new, error = %e, "cannot route the anycast locator into the substrate device");
            None
        }
    }
}

/// The edge's packet workers (see the module's documentation).
struct EdgeWorkers {
    changes: Vec<mpsc::Sender<EdgeChange>>,
    stats: Vec<watch::Receiver<EdgeLoopStats>>,
    ended: mpsc::UnboundedReceiver<(usize, io::Result<()>)>,
    stop: watch::Sender<bool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl EdgeWorkers {
    /// One worker per queue pair, and the workers' load reports (with each one's index);
    /// must be called inside a tokio runtime.
    fn start(
        edges: Vec<Edge>,
        queues: Vec<(Device, Device)>,
    ) -> io::Result<(EdgeWorkers, mpsc::Receiver<(usize, LoadReport)>)> {
        let (stop, stop_rx) = watch::channel(false);
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let (rep_all, reports) = mpsc::channel(64);
        let mut w = EdgeWorkers {
            changes: Vec::new(),
            stats: Vec::new(),
            ended,
            stop,
            threads: Vec::new(),
        };
        for (i, (edge, (sub, out))) in edges.into_iter().zip(queues).enumerate() {
            let (chg_tx, chg_rx) = mpsc::channel(4096);
            let (stats_tx, stats_rx) = watch::channel(EdgeLoopStats::default());
            let (rep_tx, mut rep_rx) = mpsc::channel::<LoadReport>(4);
            let rep_all = rep_all.clone();
            tokio::spawn(async move {
                while let Some(r) = rep_rx.recv().await {
                    if rep_all.send((i, r)).await.is_err() {
                        return;
                    }
                }
            });
            let (mut stop, ended) = (stop_rx.clone(), ended_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("canopy-edge-{i}"))
                .spawn(move || {
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        let rt = tokio::runtime::Builder::new_current_thread()
                            .enable_all()
                            .build()?;
                        rt.block_on(async move {
                            let lp = EdgeLoop::new(edge, sub, out)?;
                            lp.run(chg_rx, rep_tx, stats_tx, async move {
                                while !*stop.borrow_and_update() {
                                    if stop.changed().await.is_err() {
                                        return;
                                    }
                                }
                            })
                            .await
                        })
                    }))
                    .unwrap_or_else(|_| Err(io::Error::other("the worker panicked")));
                    let _ = ended.send((i, r));
                })?;
            w.changes.push(chg_tx);
            w.stats.push(stats_rx);
            w.threads.push(thread);
        }
        Ok((w, reports))
    }

    /// Gives every worker `c`.
    async fn apply(&self, c: EdgeChange) {
        for w in &self.changes {
            let _ = w.send(c.clone()).await;
        }
    }

    /// Every change sent so far has been taken by every worker (or a worker ended).
    async fn drained(&self) {
        while self
            .changes
            .iter()
            .any(|w| w.capacity() < w.max_capacity() && !w.is_closed())
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Completes when a worker ends on its own: which, and why.
    async fn ended(&mut self) -> (usize, io::Result<()>) {
        match self.ended.recv().await {
            Some(e) => e,
            None => std::future::pending().await,
        }
    }

    /// Stops the workers, waiting at most `grace` for them.
    async fn stop(mut self, grace: Duration) {
        let _ = self.stop.send(true);
        let deadline = tokio::time::Instant::now() + grace;
        for _ in 0..self.threads.len() {
            if tokio::time::timeout_at(deadline, self.ended.recv())
                .await
                .is_err()
            {
                break;
            }
        }
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
    }
}

/// Runs the edge until `shutdown` completes.
pub async fn run_edge(
    opts: EdgeOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), DaemonError> {
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
        mut catalog,
        ..
    } = session;
    let locator = catalog.edge_locator(&opts.edge_id).ok_or_else(|| {
        DaemonError::Config(format!(
            "edge {:?} is not known to the manager (check --edge-id and that the token is this edge's)",
            opts.edge_id
        ))
    })?;
    tracing::info!(edge = opts.edge_id, %locator, "configuration received");

    let (sub, out, mtu) = (
        opts.substrate_dev.clone(),
        opts.outside_dev.clone(),
        opts.substrate_mtu,
    );
    let route = locator.to_string();
    let n = worker_count(opts.workers);
    let (sub_devs, out_devs) = tokio::task::spawn_blocking(move || {
        let s = setup_tun_queues(&sub, mtu, WANTED_OFFLOADS, &[route], n)?;
        let o = setup_tun_queues(&out, mtu - 20, WANTED_OFFLOADS, &[], n)?;
        Ok::<_, DaemonError>((s, o))
    })
    .await
    .map_err(|e| DaemonError::Config(e.to_string()))??;

    // Each worker's edge has the whole capacity: its load is its share, and they add up.
    let capacity = opts.capacity_mbps.max(1) * 1_000_000 / 8;
    // Each with its own stretch of IPv4 identifications for the packets it translates.
    let edges = (0..n)
        .map(|i| {
            Edge::new(locator)
                .with_capacity(capacity)
                .with_ident_seed((i * 65536 / n) as u16)
        })
        .collect();
    let (mut workers, mut reports) =
        EdgeWorkers::start(edges, sub_devs.into_iter().zip(out_devs).collect()).map_err(
            |source| DaemonError::Io {
                what: "starting the workers".into(),
                source,
            },
        )?;
    tracing::info!(workers = n, "packet workers started");
    // Each worker's last load report: its share, and when it came.
    let started = tokio::time::Instant::now();
    let mut loads = vec![(0.0f64, started); n];
    let metrics_task = match opts.metrics {
        Some(addr) => {
            let (s, c) = (workers.stats.clone(), counters.clone());
            let render: metrics::Render = Arc::new(move || render_edge(&s, &c));
            Some(
                metrics::serve(addr, render, stopped())
                    .await
                    .map_err(|source| DaemonError::Io {
                        what: format!("serving metrics on {addr}"),
                        source,
                    })?,
            )
        }
        None => None,
    };

    let mut applied: BTreeMap<EdgeKey, EdgeChange> = BTreeMap::new();
    let mut routes: Vec<String> = Vec::new();
    let mut anycast: Option<Locator> = None;
    let converge = |catalog: &Catalog,
                    applied: &mut BTreeMap<EdgeKey, EdgeChange>,
                    routes: &mut Vec<String>,
                    anycast: &mut Option<Locator>|
     -> Vec<EdgeChange> {
        let cfg = catalog.edge_config(&opts.edge_id);
        let d = desired::diff(applied, &cfg.changes);
        let mut out: Vec<EdgeChange> = d
            .removed
            .iter()
            .filter_map(|(_, c)| desired::undo_edge(c))
            .collect();
        out.extend(d.set.into_iter().map(|(_, c)| c));
        *routes = route_outside(&opts.outside_dev, &cfg, routes);
        *anycast = route_anycast(&opts.substrate_dev, cfg.anycast, *anycast);
        *applied = cfg.changes;
        out
    };
    for c in converge(&catalog, &mut applied, &mut routes, &mut anycast) {
        ControlCounters::inc(&counters.changes_applied);
        workers.apply(c).await;
    }
    workers.drained().await;
    if let Some(p) = &opts.ready_file {
        write_ready(p)?;
    }
    tracing::info!(blocks = applied.len(), routes = ?routes, "edge ready");

    let result = loop {
        tokio::select! {
            () = &mut stop => break Ok(()),
            (i, r) = workers.ended() => {
                let e = r.err().unwrap_or_else(|| io::Error::other("the worker stopped"));
                break Err(DaemonError::Io { what: format!("packet worker {i}"), source: e });
            }
            Some((i, r)) = reports.recv() => {
                // The edge's load: its workers' shares, reported once a round (when
                // worker 0's comes). A worker silent for two rounds is stuck, its queues
                // unread: the edge reports itself unhealthy, and the agents leave it.
                let now = tokio::time::Instant::now();
                loads[i] = (r.load, now);
                if i != 0 {
                    continue;
                }
                let stuck: Vec<usize> = (0..n)
                    .filter(|&w| now.duration_since(loads[w].1) > 2 * REPORT_INTERVAL + REPORT_INTERVAL / 2)
                    .filter(|_| now.duration_since(started) > 3 * REPORT_INTERVAL)
                    .collect();
                if !stuck.is_empty() {
                    tracing::warn!(workers = ?stuck, "packet workers silent: reporting the edge unhealthy");
                }
                let healthy = stuck.is_empty();
                let client = client.clone();
                let counters = counters.clone();
                let id = opts.edge_id.clone();
                let load: f64 = loads.iter().map(|l| l.0).sum();
                let pct = (load * 100.0).round().clamp(0.0, 100.0) as u32;
                tokio::spawn(async move {
                    ControlCounters::inc(&counters.reports_sent);
                    if let Err(e) = client.report_edge(&id, healthy, pct).await {
                        ControlCounters::inc(&counters.report_errors);
                        tracing::debug!(error = %e, "load report failed");
                    }
                });
            }
            item = wrx.recv() => {
                let Some(mut item) = item else { break Ok(()) };
                let mut changed = false;
                loop {
                    match item {
                        WatchItem::Event(ev) => {
                            changed |= matches!(catalog.ingest(&ev), Effect::Changed | Effect::Synced);
                        }
                        WatchItem::Connected { since } => {
                            ControlCounters::inc(&counters.watch_connects);
                            tracing::info!(since, "watch stream open");
                        }
                        WatchItem::Disconnected { error } => {
                            ControlCounters::inc(&counters.watch_disconnects);
                            tracing::warn!(%error, "watch stream lost; forwarding goes on, reconnecting");
                        }
                    }
                    match wrx.try_recv() {
                        Ok(next) => item = next,
                        Err(_) => break,
                    }
                }
                if changed {
                    for c in converge(&catalog, &mut applied, &mut routes, &mut anycast) {
                        ControlCounters::inc(&counters.changes_applied);
                        workers.apply(c).await;
                    }
                }
            }
        }
    };
    watcher.abort();
    workers.stop(Duration::from_secs(1)).await;
    if let Some(m) = metrics_task {
        m.abort();
    }
    tracing::info!("edge stopped");
    result
}
