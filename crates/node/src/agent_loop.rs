//! The agent daemon's packet loop: one task, single-threaded, that owns the [`Agent`], one
//! TAP per VM port and the substrate's TUN (one worker's share of them, see below).
//!
//! It waits until a device is readable, reads up to [`BATCH`] packets from it (in one
//! io_uring call into preallocated slots, [`crate::ring`]; without io_uring one `read`
//! each into one reused buffer; [`HEADROOM`] in front and room for a 64 KiB super-packet),
//! hands each to the agent with its `virtio_net_hdr`, and writes the verdicts out (in one
//! more io_uring call): `ToPort` to
//! that port's TAP, `Reply` back where it came from, `ToSubstrate` to the TUN. Packets the
//! agent held for a mapping come back through [`Agent::take_ready`] and go through the same
//! path; [`Agent::tick`] runs on a timer. Configuration and resolve answers arrive as
//! [`Command`]s; the agent's [`Event`]s (resolve requests) leave on a channel. Nothing is
//! allocated per packet.
//!
//! A host runs one loop per worker ([`crate::workers`]), each with its own agent, its own
//! queue of the substrate device and the ports [`worker_of`](dataplane::agent::worker_of)
//! gives it. A packet for a node of another worker goes there through the
//! [`crate::handoff::Handoff`] ([`Verdict::ToWorker`]), and the parcels other
//! workers hand this one are read like a device.

use dataplane::agent::{
    Agent, AgentStats, Change, Event, Mapping, PortId, Ready, Verdict, HEADROOM, MIN_BUFFER,
};
use dataplane::nat::SavedNode;
use dataplane::{Instant, PacketBuf};
use model::NetworkId;
use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::task::Poll;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::sync::{mpsc, oneshot, watch};
use wire::virtio::VirtioNetHdr;

use crate::handoff::{Handoff, Origin};
use crate::ring::Batch;
use crate::tap::{Device, VNET_HDR_LEN};

/// Most packets read from one device before the others get a turn.
pub const BATCH: usize = 64;
/// The largest packet a device hands us: a 64 KiB super-packet and its link header.
pub const MAX_PACKET: usize = 65_536 + 64;
/// How often [`Agent::tick`] runs.
pub const TICK: Duration = Duration::from_millis(100);
/// Held packets replayed after one packet, at most (the rest wait for the next).
const READY_BURST: usize = 256;

// A packet is read with its `virtio_net_hdr` just in front of the headroom's end.
const _: () = assert!(HEADROOM >= VNET_HDR_LEN);

/// What the daemon (or a test) tells the loop.
#[derive(Debug)]
pub enum Command {
    Apply(Change),
    /// The answer to an [`Event::Resolve`].
    Resolved {
        network: NetworkId,
        ip: Ipv4Addr,
        mapping: Option<Mapping>,
    },
    /// A VM's port appears (the agent learns of its node by [`Change::AttachNode`]).
    AddPort(PortId, Device),
    /// A VM's port goes; its device is closed.
    RemovePort(PortId),
    /// The NAT table as it is now, for saving (allocates; the daemon asks every few
    /// seconds, between packets).
    ExportNat(oneshot::Sender<Vec<SavedNode>>),
    /// Answered once every command sent before it has been applied.
    Sync(oneshot::Sender<()>),
}

/// Counts of the loop's own I/O.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct IoStats {
    pub rx_packets: u64,
    pub rx_bytes: u64,
    pub tx_packets: u64,
    pub tx_bytes: u64,
    /// Reads shorter than a `virtio_net_hdr`, or failed.
    pub rx_errors: u64,
    /// Writes that failed (device gone, queue full, kernel refused).
    pub tx_errors: u64,
    /// `ToPort` for a port with no device.
    pub no_device: u64,
    /// Events dropped because the channel was full (the agent asks again on tick).
    pub events_dropped: u64,
    /// System calls that moved packets through io_uring (a batch's reads take one, its
    /// writes one more): packets / `ring_calls` is the batching achieved.
    pub ring_calls: u64,
    /// Packets handed to another worker, taken from others, and not handed over because
    /// the other worker was behind.
    pub handed_out: u64,
    pub handed_in: u64,
    pub handoff_refused: u64,
}

struct Port {
    id: PortId,
    dev: AsyncFd<Device>,
}

/// Where a packet came from.
#[derive(Clone, Copy)]
enum Source {
    Port(PortId),
    Substrate,
    /// Another worker, which read it from one of its ports or the substrate.
    Worker(Origin),
}

/// The devices and counters, apart from the agent and the buffer so that each can be
/// borrowed on its own.
struct Io {
    substrate: AsyncFd<Device>,
    ports: Vec<Port>,
    index: HashMap<PortId, usize>,
    /// The other workers, when there are some.
    handoff: Option<Handoff>,
    stats: IoStats,
}

/// A copy of the loop's counters, taken on tick (off the packet path) for metrics.
#[derive(Debug, Clone, Default)]
pub struct LoopStats {
    pub agent: AgentStats,
    pub io: IoStats,
    /// VM ports with a device.
    pub ports: usize,
    /// Flows sent to each pool member: `(pool, member, flows)` ([`Agent::edge_choices`]).
    pub edge_choices: Vec<(u32, u32, u64)>,
}

/// The loop's state; [`run`](AgentLoop::run) gives it back when stopped.
pub struct AgentLoop {
    agent: Agent,
    io: Io,
    buf: Box<[u8]>,
    /// Batched I/O, when the kernel has io_uring: a batch's packets are read in one call
    /// and written out in one more.
    batch: Option<Batch>,
    clock: std::time::Instant,
    stats_sink: Option<watch::Sender<LoopStats>>,
}

impl AgentLoop {
    /// Must be called inside a tokio runtime (the devices register with its reactor).
    pub fn new(agent: Agent, substrate: Device) -> io::Result<Self> {
        Self::with_handoff(agent, substrate, None)
    }

    /// A worker's loop: `agent` is configured as that worker, `substrate` is its queue,
    /// `handoff` its end towards the others.
    pub fn with_handoff(
        agent: Agent,
        substrate: Device,
        handoff: Option<Handoff>,
    ) -> io::Result<Self> {
        Ok(AgentLoop {
            agent,
            io: Io {
                substrate: register(substrate)?,
                ports: Vec::new(),
                index: HashMap::new(),
                handoff,
                stats: IoStats::default(),
            },
            buf: vec![0u8; HEADROOM + MAX_PACKET + MIN_BUFFER].into_boxed_slice(),
            batch: Batch::new(BATCH, HEADROOM + MAX_PACKET + MIN_BUFFER),
            clock: std::time::Instant::now(),
            stats_sink: None,
        })
    }

    /// Publishes a copy of the counters there on every tick.
    pub fn set_stats_sink(&mut self, sink: watch::Sender<LoopStats>) {
        self.stats_sink = Some(sink);
    }

    fn publish_stats(&self) {
        if let Some(sink) = &self.stats_sink {
            sink.send_replace(LoopStats {
                agent: self.agent.stats().clone(),
                io: self.io.stats.clone(),
                ports: self.io.ports.len(),
                edge_choices: self.agent.edge_choices().collect(),
            });
        }
    }

    /// Adds (or replaces) the device of a VM's port.
    pub fn add_port(&mut self, id: PortId, dev: Device) -> io::Result<()> {
        let dev = register(dev)?;
        self.io.remove_port(id);
        self.io.index.insert(id, self.io.ports.len());
        self.io.ports.push(Port { id, dev });
        Ok(())
    }

    pub fn remove_port(&mut self, id: PortId) {
        self.io.remove_port(id);
    }

    pub fn agent(&self) -> &Agent {
        &self.agent
    }

    pub fn agent_mut(&mut self) -> &mut Agent {
        &mut self.agent
    }

    pub fn io_stats(&self) -> &IoStats {
        &self.io.stats
    }

    /// The time on the loop's clock (the agent's), which starts at zero with the loop.
    pub fn now(&self) -> Instant {
        Instant::from_millis(self.clock.elapsed().as_millis() as u64)
    }

    /// Runs until `shutdown` completes. Commands are applied between packets; when the
    /// command channel closes the loop goes on forwarding with what it has.
    pub async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        events: mpsc::Sender<Event>,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<Self> {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut ticker = tokio::time::interval(TICK);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut commands_open = true;
        // Which device is looked at first, rotated so that none starves the others.
        let mut first = 0usize;
        loop {
            let io = &self.io;
            tokio::select! {
                biased;
                _ = &mut shutdown => break,
                cmd = commands.recv(), if commands_open => match cmd {
                    Some(c) => self.command(c)?,
                    None => commands_open = false,
                },
                _ = ticker.tick() => {
                    let now = self.now();
                    self.agent.tick(now);
                    self.drain_ready(now);
                    self.publish_stats();
                }
                () = notified(io.handoff.as_ref()) => self.read_inbox(),
                which = std::future::poll_fn(|cx| io.poll_readable(cx, first)) => {
                    let which = which?;
                    first = first.wrapping_add(1);
                    if let Err(e) = self.read_batch(which).await {
                        match self.io.port_at(which) {
                            // A port whose device broke (its interface was deleted, say):
                            // it goes, the others carry on.
                            Some(id) => {
                                tracing::warn!(port = id.0, error = %e, "port device failed; removed");
                                self.io.remove_port(id);
                            }
                            None => return Err(e),
                        }
                    }
                }
            }
            self.send_events(&events);
        }
        Ok(self)
    }

    fn command(&mut self, c: Command) -> io::Result<()> {
        match c {
            Command::Apply(change) => {
                self.agent.apply(change);
                // A pushed mapping or port block may release held packets: at once, not
                // on the next tick.
                self.drain_ready(self.now());
            }
            Command::Resolved {
                network,
                ip,
                mapping,
            } => {
                let now = self.now();
                self.agent.on_resolved(network, ip, mapping, now);
                self.drain_ready(now);
            }
            Command::AddPort(id, dev) => {
                // A device that cannot be registered is one port lost, not the host.
                if let Err(e) = self.add_port(id, dev) {
                    tracing::warn!(port = id.0, error = %e, "cannot use the port's device");
                }
            }
            Command::RemovePort(id) => self.remove_port(id),
            Command::ExportNat(reply) => {
                let _ = reply.send(self.agent.export_nat(self.now()));
            }
            Command::Sync(reply) => {
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    fn send_events(&mut self, events: &mpsc::Sender<Event>) {
        while let Some(e) = self.agent.poll_event() {
            if events.try_send(e).is_err() {
                self.io.stats.events_dropped += 1;
            }
        }
    }

    /// Reads and handles up to [`BATCH`] packets from device `which` (0: the substrate,
    /// `i + 1`: port `i`). An error means the device is unusable (a read failed for
    /// another reason than "nothing more to read").
    async fn read_batch(&mut self, which: usize) -> io::Result<()> {
        if self.batch.is_some() {
            return self.read_batch_ring(which).await;
        }
        let AgentLoop {
            agent,
            io,
            buf,
            clock,
            ..
        } = self;
        let Some((dev, source)) = io.device(which) else {
            return Ok(());
        };
        // Ready already (the poll said so): this does not wait.
        let mut guard = dev.readable().await?;
        let mut failed = None;
        let mut stats = IoStats::default();
        for _ in 0..BATCH {
            let at = HEADROOM - VNET_HDR_LEN;
            let r = guard.try_io(|d| d.get_ref().recv(&mut buf[at..HEADROOM + MAX_PACKET]));
            let n = match r {
                Err(_would_block) => break,
                Ok(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Ok(Err(e)) => {
                    stats.rx_errors += 1;
                    failed = Some(e);
                    break;
                }
                Ok(Ok(n)) => n,
            };
            let now = Instant::from_millis(clock.elapsed().as_millis() as u64);
            let out = io.out();
            if let Some((dev, hdr, range)) = handle(agent, out, &mut stats, source, buf, n, now) {
                send(dev, &mut stats, &hdr, &buf[range]);
            }
            // After the packet is out: the held packets come back through the same buffer.
            drain(agent, out, &mut stats, buf, now);
        }
        io.stats.add(&stats);
        io.wake_others();
        failed.map_or(Ok(()), Err)
    }

    /// [`read_batch`](Self::read_batch) through io_uring: one call reads the batch into
    /// the slots, each packet is handled in its slot, and one call writes the batch's
    /// verdicts out from there (held packets replayed meanwhile go out at once).
    async fn read_batch_ring(&mut self, which: usize) -> io::Result<()> {
        let AgentLoop {
            agent,
            io,
            buf,
            clock,
            batch: batched,
            ..
        } = self;
        let Some(batch) = batched else {
            return Ok(());
        };
        let Some((dev, source)) = io.device(which) else {
            return Ok(());
        };
        let mut guard = dev.readable().await?;
        let at = HEADROOM - VNET_HDR_LEN;
        let mut stats = IoStats::default();
        let out = io.out();
        let end = batch.run(which, dev.get_ref().as_raw_fd(), at, |slot, n| {
            let now = Instant::from_millis(clock.elapsed().as_millis() as u64);
            let to = handle(agent, out, &mut stats, source, slot, n, now);
            // The slot is not `buf`: held packets may go out before this one.
            drain(agent, out, &mut stats, buf, now);
            to
        });
        stats.tx_packets += end.tx_packets;
        stats.tx_bytes += end.tx_bytes;
        stats.tx_errors += end.tx_errors;
        stats.ring_calls += end.calls;
        let failed = end.read.settle(&mut guard, batched);
        if failed.is_some() {
            stats.rx_errors += 1;
        }
        io.stats.add(&stats);
        io.wake_others();
        failed.map_or(Ok(()), Err)
    }

    /// Takes up to [`BATCH`] parcels other workers handed this one.
    fn read_inbox(&mut self) {
        let AgentLoop {
            agent, io, clock, ..
        } = self;
        let Some(handoff) = &io.handoff else {
            return;
        };
        let mut stats = IoStats::default();
        for _ in 0..BATCH {
            let Some(mut parcel) = handoff.recv() else {
                break;
            };
            stats.handed_in += 1;
            let now = Instant::from_millis(clock.elapsed().as_millis() as u64);
            let mut hdr = parcel.hdr;
            let mut pkt = PacketBuf::new(&mut parcel.buf, parcel.start, parcel.end);
            let v = match parcel.origin {
                Origin::Vm => agent.from_worker(&mut pkt, Some(&mut hdr), now),
                Origin::Substrate => agent.from_substrate(&mut pkt, Some(&mut hdr), now),
            };
            let range = pkt.range();
            let source = Source::Worker(parcel.origin);
            emit(io.out(), &mut stats, v, source, &hdr, &parcel.buf[range]);
            drain(agent, io.out(), &mut stats, &mut parcel.buf, now);
            handoff.recycle(parcel.buf);
        }
        if handoff.has_mail() {
            handoff.wake_self();
        }
        io.stats.add(&stats);
        io.wake_others();
    }

    fn drain_ready(&mut self, now: Instant) {
        let mut stats = IoStats::default();
        drain(
            &mut self.agent,
            self.io.out(),
            &mut stats,
            &mut self.buf,
            now,
        );
        self.io.stats.add(&stats);
        self.io.wake_others();
    }
}

/// Completes when other workers have handed this one packets; never without a handoff.
async fn notified(handoff: Option<&Handoff>) {
    match handoff {
        Some(h) => h.notified().await,
        None => std::future::pending().await,
    }
}

/// Registers a device with the runtime's reactor.
fn register(dev: Device) -> io::Result<AsyncFd<Device>> {
    // SAFETY: a `Device` owns its descriptor (an `OwnedFd` it never replaces) and closes it
    // only when dropped, so the descriptor stays open and the same while registered.
    unsafe { AsyncFd::register(dev) }.map_err(|e| e.into_parts().1)
}

/// The devices, borrowed for writing.
#[derive(Clone, Copy)]
struct Out<'a> {
    substrate: &'a AsyncFd<Device>,
    ports: &'a [Port],
    index: &'a HashMap<PortId, usize>,
    handoff: Option<&'a Handoff>,
}

impl Io {
    fn out(&self) -> Out<'_> {
        Out {
            substrate: &self.substrate,
            ports: &self.ports,
            index: &self.index,
            handoff: self.handoff.as_ref(),
        }
    }

    fn wake_others(&self) {
        if let Some(h) = &self.handoff {
            h.wake();
        }
    }
}

impl<'a> Out<'a> {
    fn port(self, id: PortId) -> Option<&'a Device> {
        self.index.get(&id).map(|&i| self.ports[i].dev.get_ref())
    }
}

/// One packet read from a device into `slot` (`n` bytes, its `virtio_net_hdr` first,
/// ending at [`HEADROOM`]): handled by the agent; where it goes, with the header it goes
/// with, and where in the slot it now is.
fn handle<'a>(
    agent: &mut Agent,
    out: Out<'a>,
    stats: &mut IoStats,
    source: Source,
    slot: &mut [u8],
    n: usize,
    now: Instant,
) -> Option<(&'a Device, VirtioNetHdr, std::ops::Range<usize>)> {
    if n < VNET_HDR_LEN {
        stats.rx_errors += 1;
        return None;
    }
    stats.rx_packets += 1;
    stats.rx_bytes += (n - VNET_HDR_LEN) as u64;
    let at = HEADROOM - VNET_HDR_LEN;
    let Ok(mut hdr) = VirtioNetHdr::parse(&slot[at..HEADROOM]) else {
        stats.rx_errors += 1;
        return None;
    };
    let mut pkt = PacketBuf::new(slot, HEADROOM, at + n);
    let v = match source {
        Source::Port(p) => agent.from_vm(p, &mut pkt, Some(&mut hdr), now),
        Source::Substrate | Source::Worker(Origin::Substrate) => {
            agent.from_substrate(&mut pkt, Some(&mut hdr), now)
        }
        Source::Worker(Origin::Vm) => agent.from_worker(&mut pkt, Some(&mut hdr), now),
    };
    let range = pkt.range();
    let (dev, hdr) = target(out, stats, v, source, &hdr, &slot[range.clone()])?;
    Some((dev, hdr, range))
}

/// Writes a packet where its verdict says.
fn emit(
    out: Out<'_>,
    stats: &mut IoStats,
    v: Verdict,
    source: Source,
    hdr: &VirtioNetHdr,
    pkt: &[u8],
) {
    if let Some((dev, h)) = target(out, stats, v, source, hdr, pkt) {
        send(dev, stats, &h, pkt);
    }
}

/// The device a packet goes to and the `virtio_net_hdr` it goes with, by its verdict; a
/// packet for another worker is handed there, and one for nowhere counted.
fn target<'a>(
    out: Out<'a>,
    stats: &mut IoStats,
    v: Verdict,
    source: Source,
    hdr: &VirtioNetHdr,
    pkt: &[u8],
) -> Option<(&'a Device, VirtioNetHdr)> {
    // A reply is built by the agent, checksums complete: no offload to describe.
    let plain = VirtioNetHdr::default();
    let (dev, hdr) = match (v, source) {
        (Verdict::ToPort(p), _) => (out.port(p), hdr),
        (Verdict::ToSubstrate, _) => (Some(out.substrate.get_ref()), hdr),
        (Verdict::Reply, Source::Substrate | Source::Worker(Origin::Substrate)) => {
            (Some(out.substrate.get_ref()), &plain)
        }
        (Verdict::Reply, Source::Port(p)) => (out.port(p), &plain),
        // An answer to another worker's VM: that worker's agent would have made it.
        (Verdict::Reply, Source::Worker(Origin::Vm)) => return None,
        (Verdict::ToWorker(w), Source::Port(_) | Source::Substrate) => {
            let origin = match source {
                Source::Port(_) => Origin::Vm,
                _ => Origin::Substrate,
            };
            match out
                .handoff
                .map(|h| h.send(usize::from(w), origin, hdr, pkt))
            {
                Some(Ok(())) => stats.handed_out += 1,
                _ => stats.handoff_refused += 1,
            }
            return None;
        }
        // Handed over already: the owner's agent does not hand it on (no ping-pong).
        (Verdict::ToWorker(_), Source::Worker(_)) => {
            stats.handoff_refused += 1;
            return None;
        }
        (Verdict::Held | Verdict::Consumed, _) => return None,
        (Verdict::Drop(reason), _) => {
            tracing::trace!(?reason, "dropped");
            return None;
        }
    };
    if dev.is_none() {
        stats.no_device += 1;
    }
    dev.map(|d| (d, *hdr))
}

/// Writes one packet now (one `writev`).
fn send(dev: &Device, stats: &mut IoStats, hdr: &VirtioNetHdr, pkt: &[u8]) {
    match dev.send(hdr, pkt) {
        Ok(_) => {
            stats.tx_packets += 1;
            stats.tx_bytes += pkt.len() as u64;
        }
        Err(e) => {
            tracing::debug!(device = dev.name(), error = %e, "device write failed");
            stats.tx_errors += 1;
        }
    }
}

/// Feeds the packets the agent held and can now send back through it, and sends them.
fn drain(agent: &mut Agent, out: Out<'_>, stats: &mut IoStats, buf: &mut [u8], now: Instant) {
    for _ in 0..READY_BURST {
        let Some((ready, n)) = agent.take_ready(&mut buf[HEADROOM..HEADROOM + MAX_PACKET]) else {
            return;
        };
        let mut pkt = PacketBuf::new(buf, HEADROOM, HEADROOM + n);
        let (v, source) = match ready {
            Ready::FromVm(p) => (agent.from_vm(p, &mut pkt, None, now), Source::Port(p)),
            Ready::FromSubstrate => (agent.from_substrate(&mut pkt, None, now), Source::Substrate),
        };
        let range = pkt.range();
        emit(out, stats, v, source, &VirtioNetHdr::default(), &buf[range]);
    }
}

impl Io {
    /// Device `which` (0: the substrate, `i + 1`: port `i`) and what reading it means.
    fn device(&self, which: usize) -> Option<(&AsyncFd<Device>, Source)> {
        match which {
            0 => Some((&self.substrate, Source::Substrate)),
            i => self.ports.get(i - 1).map(|p| (&p.dev, Source::Port(p.id))),
        }
    }

    /// The port read as device `which` (see [`AgentLoop::read_batch`]).
    fn port_at(&self, which: usize) -> Option<PortId> {
        which
            .checked_sub(1)
            .and_then(|i| self.ports.get(i))
            .map(|p| p.id)
    }

    fn remove_port(&mut self, id: PortId) {
        if let Some(i) = self.index.remove(&id) {
            self.ports.remove(i);
            self.index.clear();
            for (i, p) in self.ports.iter().enumerate() {
                self.index.insert(p.id, i);
            }
        }
    }

    /// The first readable device, looking from `first` round the list (0: substrate).
    fn poll_readable(
        &self,
        cx: &mut std::task::Context<'_>,
        first: usize,
    ) -> Poll<io::Result<usize>> {
        let n = self.ports.len() + 1;
        for k in 0..n {
            let i = (first % n + k) % n;
            let dev = if i == 0 {
                &self.substrate
            } else {
                &self.ports[i - 1].dev
            };
            match dev.poll_read_ready(cx) {
                Poll::Ready(Ok(_guard)) => return Poll::Ready(Ok(i)),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

impl IoStats {
    pub(crate) fn add(&mut self, o: &IoStats) {
        self.rx_packets += o.rx_packets;
        self.rx_bytes += o.rx_bytes;
        self.tx_packets += o.tx_packets;
        self.tx_bytes += o.tx_bytes;
        self.rx_errors += o.rx_errors;
        self.tx_errors += o.tx_errors;
        self.no_device += o.no_device;
        self.events_dropped += o.events_dropped;
        self.ring_calls += o.ring_calls;
        self.handed_out += o.handed_out;
        self.handed_in += o.handed_in;
        self.handoff_refused += o.handoff_refused;
    }
}
