//! The agent's workers: one thread per core, each running an [`AgentLoop`] on its own
//! single-threaded runtime, with its own [`Agent`], its own queue of the multi-queue
//! substrate device and the VM ports [`worker_of`] gives it.
//!
//! Every worker is given the whole configuration (the tables are read on every packet
//! and change seldom, so each keeps its own copy and no lock is taken on the packet
//! path); a node's connection and NAT state lives only in the worker that owns its port,
//! and packets for it that another worker reads are handed there
//! ([`crate::handoff`]). Commands go through one router task: configuration and resolve
//! answers to every worker, a port's device to its owner, and questions (the NAT table,
//! a sync) to all, with the answers put together. The workers' events go through it too:
//! what the probing worker finds of the edges goes to every worker as a change (in
//! order with the configuration), the rest to the daemon.

use dataplane::agent::{worker_of, Agent, Change, Event};
use dataplane::nat::SavedNode;
use std::collections::BTreeMap;
use std::io;
use std::thread::JoinHandle;
use tokio::sync::{mpsc, oneshot, watch};

use crate::agent_loop::{AgentLoop, Command, LoopStats};
use crate::handoff::Handoff;
use crate::tap::Device;

/// Commands the router's channel, and each worker's, holds before its sender waits.
const QUEUE: usize = 4096;

/// What a worker gave back when it ended: its NAT table, or why it failed.
type Ended = (usize, io::Result<Vec<SavedNode>>);

/// The running workers.
pub struct Workers {
    commands: mpsc::Sender<Command>,
    stats: Vec<watch::Receiver<LoopStats>>,
    ended: mpsc::UnboundedReceiver<Ended>,
    stop: watch::Sender<bool>,
    threads: Vec<JoinHandle<()>>,
    router: tokio::task::JoinHandle<()>,
}

impl Workers {
    /// Starts one worker per agent, each reading its queue of `substrate` (as many as
    /// agents) and pinned to its CPU in `cpus` (`None`: not pinned; as many as agents).
    /// Agent `i` must be configured as worker `i` of them all
    /// ([`AgentConfig::worker`](dataplane::agent::AgentConfig)). Must be called inside a
    /// tokio runtime (the router task runs there).
    pub fn start(
        agents: Vec<Agent>,
        substrate: Vec<Device>,
        cpus: Vec<Option<usize>>,
        events: mpsc::Sender<Event>,
    ) -> io::Result<Workers> {
        if agents.is_empty() || agents.len() != substrate.len() || agents.len() != cpus.len() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "{} workers for {} substrate queues and {} CPUs",
                    agents.len(),
                    substrate.len(),
                    cpus.len()
                ),
            ));
        }
        let n = agents.len();
        let handoffs: Vec<Option<Handoff>> = if n > 1 {
            Handoff::set(n).into_iter().map(Some).collect()
        } else {
            vec![None]
        };
        let (stop, stop_rx) = watch::channel(false);
        let (worker_events, worker_events_rx) = mpsc::channel(QUEUE);
        let (ended_tx, ended) = mpsc::unbounded_channel();
        let mut senders = Vec::with_capacity(n);
        let mut stats = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for (i, (((agent, dev), handoff), cpu)) in agents
            .into_iter()
            .zip(substrate)
            .zip(handoffs)
            .zip(cpus)
            .enumerate()
        {
            let (cmd_tx, cmd_rx) = mpsc::channel(QUEUE);
            let (stats_tx, stats_rx) = watch::channel(LoopStats::default());
            senders.push(cmd_tx);
            stats.push(stats_rx);
            let (events, stop, ended) = (worker_events.clone(), stop_rx.clone(), ended_tx.clone());
            let thread = std::thread::Builder::new()
                .name(format!("canopy-worker-{i}"))
                .spawn(move || {
                    // A worker that panics ends the daemon as one whose device failed,
                    // rather than leaving its ports unserved behind a live process.
                    let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                        if let Some(cpu) = cpu {
                            crate::cpus::pin_current_thread(cpu).map_err(|e| {
                                io::Error::new(e.kind(), format!("pinning to CPU {cpu}: {e}"))
                            })?;
                        }
                        run_worker(agent, dev, handoff, stats_tx, cmd_rx, events, stop)
                    }))
                    .unwrap_or_else(|_| Err(io::Error::other("the worker panicked")));
                    let _ = ended.send((i, r));
                })?;
            threads.push(thread);
        }
        let (commands, rx) = mpsc::channel(QUEUE);
        let router = tokio::spawn(route(rx, worker_events_rx, events, senders));
        Ok(Workers {
            commands,
            stats,
            ended,
            stop,
            threads,
            router,
        })
    }

    /// Where commands for the workers go (see the module's documentation).
    pub fn commands(&self) -> mpsc::Sender<Command> {
        self.commands.clone()
    }

    /// Each worker's counters, as last published.
    pub fn stats(&self) -> Vec<watch::Receiver<LoopStats>> {
        self.stats.clone()
    }

    /// Completes when a worker ends on its own (its device failed): which, and why.
    pub async fn ended(&mut self) -> (usize, io::Error) {
        loop {
            match self.ended.recv().await {
                Some((i, Err(e))) => return (i, e),
                Some((i, Ok(_))) => {
                    return (i, io::Error::other("the worker stopped"));
                }
                None => std::future::pending::<()>().await,
            }
        }
    }

    /// Completes once every command sent so far has been applied by every worker.
    pub async fn sync(&self) {
        let (tx, rx) = oneshot::channel();
        if self.commands.send(Command::Sync(tx)).await.is_ok() {
            let _ = rx.await;
        }
    }

    /// Stops the workers and gives back their NAT tables, put together (those that do
    /// not end within `grace` give none).
    pub async fn stop(mut self, grace: std::time::Duration) -> Vec<SavedNode> {
        let _ = self.stop.send(true);
        self.router.abort();
        let mut saved = Vec::new();
        let deadline = tokio::time::Instant::now() + grace;
        for _ in 0..self.threads.len() {
            match tokio::time::timeout_at(deadline, self.ended.recv()).await {
                Ok(Some((_, Ok(nodes)))) => saved.extend(nodes),
                Ok(Some((i, Err(e)))) => tracing::warn!(worker = i, error = %e, "worker failed"),
                Ok(None) | Err(_) => break,
            }
        }
        for t in self.threads.drain(..) {
            if t.is_finished() {
                let _ = t.join();
            }
        }
        saved
    }
}

/// One worker's thread: its runtime, its loop, and its NAT table when it stops.
fn run_worker(
    agent: Agent,
    dev: Device,
    handoff: Option<Handoff>,
    stats: watch::Sender<LoopStats>,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<Event>,
    stop: watch::Receiver<bool>,
) -> io::Result<Vec<SavedNode>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let mut lp = AgentLoop::with_handoff(agent, dev, handoff)?;
        lp.set_stats_sink(stats);
        let lp = lp.run(commands, events, stopped(stop)).await?;
        Ok(lp.agent().export_nat(lp.now()))
    })
}

async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Sends each command, and each event of the workers, where it belongs; ends when the
/// commands' channel closes.
async fn route(
    mut rx: mpsc::Receiver<Command>,
    mut worker_events: mpsc::Receiver<Event>,
    events: mpsc::Sender<Event>,
    workers: Vec<mpsc::Sender<Command>>,
) {
    let n = workers.len() as u16;
    loop {
        let c = tokio::select! {
            c = rx.recv() => match c {
                Some(c) => c,
                None => return,
            },
            Some(e) = worker_events.recv() => match e {
                Event::EdgeHealth { locator, up } => {
                    Command::Apply(Change::EdgeHealth { locator, up })
                }
                e => {
                    // Never waits: the daemon may itself be waiting to give this router a
                    // command. A request lost to a full queue is asked again by the
                    // worker's agent on its own (resolves and port blocks are retried).
                    if events.try_send(e).is_err() {
                        tracing::debug!("the daemon's event queue is full: a request dropped");
                    }
                    continue;
                }
            },
        };
        match c {
            Command::Apply(change) => {
                for w in &workers {
                    let _ = w.send(Command::Apply(change.clone())).await;
                }
            }
            Command::Resolved {
                network,
                ip,
                mapping,
            } => {
                for w in &workers {
                    let c = Command::Resolved {
                        network,
                        ip,
                        mapping,
                    };
                    let _ = w.send(c).await;
                }
            }
            Command::AddPort(port, dev) => {
                let w = &workers[usize::from(worker_of(port, n))];
                let _ = w.send(Command::AddPort(port, dev)).await;
            }
            Command::RemovePort(port) => {
                let w = &workers[usize::from(worker_of(port, n))];
                let _ = w.send(Command::RemovePort(port)).await;
            }
            Command::ExportNat(reply) => {
                let answers = ask_all(&workers, Command::ExportNat).await;
                tokio::spawn(async move {
                    let mut all = Vec::new();
                    for a in answers {
                        all.extend(a.await.unwrap_or_default());
                    }
                    let _ = reply.send(all);
                });
            }
            Command::Sync(reply) => {
                let answers = ask_all(&workers, Command::Sync).await;
                tokio::spawn(async move {
                    for a in answers {
                        let _ = a.await;
                    }
                    let _ = reply.send(());
                });
            }
        }
    }
}

/// Asks every worker the question `ask` makes of an answer channel; the answers to come.
async fn ask_all<T>(
    workers: &[mpsc::Sender<Command>],
    ask: impl Fn(oneshot::Sender<T>) -> Command,
) -> Vec<oneshot::Receiver<T>> {
    let mut answers = Vec::with_capacity(workers.len());
    for w in workers {
        let (tx, rx) = oneshot::channel();
        if w.send(ask(tx)).await.is_ok() {
            answers.push(rx);
        }
    }
    answers
}

impl LoopStats {
    /// The workers' counters as one host's.
    pub fn sum<'a>(all: impl IntoIterator<Item = &'a LoopStats>) -> LoopStats {
        let mut total = LoopStats::default();
        let mut choices: BTreeMap<(u32, u32), u64> = BTreeMap::new();
        for s in all {
            total.agent.merge(&s.agent);
            total.io.add(&s.io);
            total.ports += s.ports;
            for &(pool, member, n) in &s.edge_choices {
                *choices.entry((pool, member)).or_default() += n;
            }
        }
        total.edge_choices = choices.into_iter().map(|((p, m), n)| (p, m, n)).collect();
        total
    }
}
