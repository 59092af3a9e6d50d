//! The agent's half of stateless-edge NAT (DESIGN.md, "External traffic"): each node that
//! uses a NAT pool owns one or more **port blocks** (a public address and a port range,
//! assigned by the manager). The agent, which tracks the node's flows anyway, gives every
//! new outbound flow a port from the node's blocks and restores the node's own port on
//! the way back. The edges then only swap the node's address for the block's public
//! address, which they can do for any packet of any flow without state: so any member of
//! the pool can carry any packet, and adding, draining or losing an edge breaks nothing.
//!
//! Invariant the manager keeps: the blocks of one node have disjoint port ranges, so the
//! port alone (as the edge hands the packet back, addressed to the node's own address)
//! says which block, and which flow, a packet belongs to.
//!
//! Memory is bounded: a node's flows are limited by its ports, and the whole table by
//! `max_flows`; a full table or exhausted blocks refuse the new flow, which the caller
//! counts and answers by asking the manager for another block.

use crate::time::Instant;
use ahash::{HashMap, HashMapExt};
use core::net::Ipv4Addr;
use model::NetworkId;

/// A public address and an inclusive port range on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PortBlock {
    pub public: Ipv4Addr,
    pub first: u16,
    pub last: u16,
}

impl PortBlock {
    pub fn contains(&self, port: u16) -> bool {
        (self.first..=self.last).contains(&port)
    }

    pub fn len(&self) -> usize {
        (self.last - self.first) as usize + 1
    }

    pub fn is_empty(&self) -> bool {
        self.last < self.first
    }
}

/// One direction-independent flow of a node, as the agent sees it before translation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FlowId {
    pub proto: u8,
    /// The node's own port (the ICMP echo identifier for ping).
    pub port: u16,
    pub remote: Ipv4Addr,
    pub remote_port: u16,
}

/// Idle timeouts, in milliseconds.
#[derive(Debug, Clone, Copy)]
pub struct NatTimeouts {
    pub tcp: u64,
    pub udp: u64,
    pub other: u64,
}

impl Default for NatTimeouts {
    fn default() -> Self {
        // RFC 5382 (TCP, established: at least 2 h 4 min) and RFC 4787 (UDP: at least 2
        // min, 5 recommended).
        NatTimeouts {
            tcp: 7_440_000,
            udp: 300_000,
            other: 60_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NatError {
    /// The node has no block at all.
    NoBlock,
    /// Every port of the node's blocks is taken.
    Exhausted,
    /// The agent's flow table is full.
    TableFull,
}

struct Binding {
    public_port: u16,
    last: Instant,
}

struct Block {
    block: PortBlock,
    /// One bit per port of the range: taken or free.
    used: Vec<u64>,
    free: usize,
    /// Where the next search for a free port starts (round robin, so a port just freed
    /// is not reused at once by an unrelated flow).
    next: usize,
}

impl Block {
    fn new(block: PortBlock) -> Self {
        let n = block.len();
        Block {
            block,
            used: vec![0; n.div_ceil(64)],
            free: n,
            next: 0,
        }
    }

    fn take(&mut self) -> Option<u16> {
        if self.free == 0 {
            return None;
        }
        let n = self.block.len();
        for k in 0..n {
            let i = (self.next + k) % n;
            if self.used[i / 64] & (1 << (i % 64)) == 0 {
                self.used[i / 64] |= 1 << (i % 64);
                self.free -= 1;
                self.next = (i + 1) % n;
                return Some(self.block.first + i as u16);
            }
        }
        None
    }

    fn put(&mut self, port: u16) {
        let i = (port - self.block.first) as usize;
        if self.used[i / 64] & (1 << (i % 64)) != 0 {
            self.used[i / 64] &= !(1 << (i % 64));
            self.free += 1;
        }
    }
}

#[derive(Default)]
struct NodeNat {
    blocks: Vec<Block>,
    out: HashMap<FlowId, Binding>,
    /// (protocol, public port) -> flow.
    back: HashMap<(u8, u16), FlowId>,
}

/// The agent's NAT state for all its nodes.
pub struct SourceNat {
    nodes: HashMap<(NetworkId, Ipv4Addr), NodeNat>,
    flows: usize,
    max_flows: usize,
    timeouts: NatTimeouts,
}

impl SourceNat {
    pub fn new(max_flows: usize, timeouts: NatTimeouts) -> Self {
        SourceNat {
            nodes: HashMap::new(),
            flows: 0,
            max_flows,
            timeouts,
        }
    }

    /// Flows currently bound.
    pub fn flows(&self) -> usize {
        self.flows
    }

    /// Sets a node's blocks. Flows on blocks that remain keep their ports; flows on
    /// blocks that are gone are dropped.
    pub fn set_blocks(&mut self, network: NetworkId, vip: Ipv4Addr, blocks: &[PortBlock]) {
        let n = self.nodes.entry((network, vip)).or_default();
        n.blocks.retain(|b| blocks.contains(&b.block));
        for &b in blocks {
            if !n.blocks.iter().any(|x| x.block == b) {
                n.blocks.push(Block::new(b));
            }
        }
        let before = n.out.len();
        let blocks = &n.blocks;
        n.out
            .retain(|_, b| blocks.iter().any(|x| x.block.contains(b.public_port)));
        let out = &n.out;
        n.back.retain(|_, f| out.contains_key(f));
        self.flows -= before - n.out.len();
        if n.blocks.is_empty() && n.out.is_empty() {
            self.nodes.remove(&(network, vip));
        }
    }

    /// True if the node has a block.
    pub fn has_blocks(&self, network: NetworkId, vip: Ipv4Addr) -> bool {
        self.nodes
            .get(&(network, vip))
            .is_some_and(|n| !n.blocks.is_empty())
    }

    /// Ports of the node's blocks that no flow holds: while this is not zero, a new flow
    /// of the node gets a port (unless the whole table is full).
    pub fn free_ports(&self, network: NetworkId, vip: Ipv4Addr) -> usize {
        self.nodes
            .get(&(network, vip))
            .map_or(0, |n| n.blocks.iter().map(|b| b.free).sum())
    }

    /// Nodes with blocks of which less than a quarter is free: time to ask for another,
    /// before their next flows have to wait for it.
    pub fn running_low(&self) -> impl Iterator<Item = (NetworkId, Ipv4Addr)> + '_ {
        self.nodes.iter().filter_map(|(&key, n)| {
            let total: usize = n
                .blocks
                .iter()
                .map(|b| usize::from(b.block.last - b.block.first) + 1)
                .sum();
            let free: usize = n.blocks.iter().map(|b| b.free).sum();
            (total > 0 && free * 4 < total).then_some(key)
        })
    }

    /// The public port of an outbound packet of `flow`, binding one for a new flow.
    pub fn outbound(
        &mut self,
        network: NetworkId,
        vip: Ipv4Addr,
        flow: FlowId,
        now: Instant,
    ) -> Result<u16, NatError> {
        let n = self
            .nodes
            .get_mut(&(network, vip))
            .ok_or(NatError::NoBlock)?;
        if let Some(b) = n.out.get_mut(&flow) {
            b.last = now;
            return Ok(b.public_port);
        }
        if n.blocks.is_empty() {
            return Err(NatError::NoBlock);
        }
        if self.flows >= self.max_flows {
            return Err(NatError::TableFull);
        }
        // Keep the node's own port when its block has it free (port preservation,
        // RFC 4787 REQ-3 spirit), else the next free one.
        let port = n
            .blocks
            .iter_mut()
            .find_map(|b| {
                let p = flow.port;
                let i = p.checked_sub(b.block.first)? as usize;
                if b.block.contains(p)
                    && b.used[i / 64] & (1 << (i % 64)) == 0
                    && !n.back.contains_key(&(flow.proto, p))
                {
                    b.used[i / 64] |= 1 << (i % 64);
                    b.free -= 1;
                    Some(p)
                } else {
                    None
                }
            })
            .or_else(|| n.blocks.iter_mut().find_map(|b| b.take()))
            .ok_or(NatError::Exhausted)?;
        n.out.insert(
            flow,
            Binding {
                public_port: port,
                last: now,
            },
        );
        n.back.insert((flow.proto, port), flow);
        self.flows += 1;
        Ok(port)
    }

    /// The node's own port for an inbound packet to `public_port` from `(remote address,
    /// remote port)`, if it belongs to a bound flow (anything else is unsolicited).
    pub fn inbound(
        &mut self,
        network: NetworkId,
        vip: Ipv4Addr,
        proto: u8,
        public_port: u16,
        (remote, remote_port): (Ipv4Addr, u16),
        now: Instant,
    ) -> Option<u16> {
        let n = self.nodes.get_mut(&(network, vip))?;
        let flow = *n.back.get(&(proto, public_port))?;
        // Endpoint-dependent filtering: only the remote the flow went to answers.
        if flow.remote != remote || flow.remote_port != remote_port {
            return None;
        }
        n.out.get_mut(&flow)?.last = now;
        Some(flow.port)
    }

    /// Releases flows idle past their timeout; returns how many.
    pub fn expire(&mut self, now: Instant) -> usize {
        let t = self.timeouts;
        let mut released = 0;
        for n in self.nodes.values_mut() {
            let NodeNat { blocks, out, back } = n;
            out.retain(|f, b| {
                let idle = match f.proto {
                    6 => t.tcp,
                    17 => t.udp,
                    _ => t.other,
                };
                let keep = now.since(b.last) < idle;
                if !keep {
                    back.remove(&(f.proto, b.public_port));
                    if let Some(bl) = blocks.iter_mut().find(|x| x.block.contains(b.public_port)) {
                        bl.put(b.public_port);
                    }
                    released += 1;
                }
                keep
            });
        }
        self.flows -= released;
        released
    }
}

/// One bound flow of a node as plain data: what [`SourceNat::export`] hands out and
/// [`SourceNat::import`] takes back, so that a restarted agent keeps its flows' ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SavedFlow {
    pub flow: FlowId,
    pub public_port: u16,
    /// How long the flow had been idle when it was exported, in milliseconds.
    pub idle_ms: u64,
}

/// A node's blocks and bound flows as plain data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedNode {
    pub network: NetworkId,
    pub vip: Ipv4Addr,
    pub blocks: Vec<PortBlock>,
    pub flows: Vec<SavedFlow>,
}

/// What an import took and what it left out.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportReport {
    /// Flows bound again with their old public port.
    pub flows: usize,
    /// Flows left out: idle past their timeout, port outside the node's blocks or taken,
    /// already bound, or the table full.
    pub skipped: usize,
}

impl SourceNat {
    /// The live flows of every node, with the node's blocks, ordered (network, address,
    /// flow) so that equal tables export equally. Allocates: for saving off the packet
    /// path, not per packet.
    pub fn export(&self, now: Instant) -> Vec<SavedNode> {
        let mut nodes: Vec<SavedNode> = self
            .nodes
            .iter()
            .map(|(&(network, vip), n)| {
                let mut flows: Vec<SavedFlow> = n
                    .out
                    .iter()
                    .map(|(&flow, b)| SavedFlow {
                        flow,
                        public_port: b.public_port,
                        idle_ms: now.since(b.last),
                    })
                    .collect();
                flows.sort_by_key(|f| {
                    (f.flow.proto, f.flow.port, f.flow.remote, f.flow.remote_port)
                });
                SavedNode {
                    network,
                    vip,
                    blocks: n.blocks.iter().map(|b| b.block).collect(),
                    flows,
                }
            })
            .collect();
        nodes.sort_by_key(|n| (n.network.get(), n.vip));
        nodes
    }

    /// Binds saved flows again, each to its old public port, so that packets of flows that
    /// were open before a restart keep their translation both ways. A node's saved blocks
    /// that it does not hold are added (the manager's next [`set_blocks`](Self::set_blocks)
    /// is the authority, and drops the flows of blocks it no longer assigns); blocks it
    /// holds already stay as they are. A flow counts as idle since `now - idle_ms` (or
    /// since the clock's zero, for a clock younger than that: such a flow lives at most one
    /// timeout longer than it would have); flows already idle past their timeout, whose
    /// port is outside the node's blocks or taken, or that are bound already are left
    /// out, as are flows beyond `max_flows`.
    pub fn import(&mut self, saved: &[SavedNode], now: Instant) -> ImportReport {
        let t = self.timeouts;
        let mut report = ImportReport::default();
        for s in saved {
            let n = self.nodes.entry((s.network, s.vip)).or_default();
            for &b in &s.blocks {
                if !b.is_empty() && !n.blocks.iter().any(|x| x.block == b) {
                    n.blocks.push(Block::new(b));
                }
            }
            for f in &s.flows {
                let timeout = match f.flow.proto {
                    6 => t.tcp,
                    17 => t.udp,
                    _ => t.other,
                };
                let port = f.public_port;
                let block = n.blocks.iter_mut().find(|b| b.block.contains(port));
                let taken = |b: &Block| {
                    let i = (port - b.block.first) as usize;
                    b.used[i / 64] & (1 << (i % 64)) != 0
                };
                let ok = f.idle_ms < timeout
                    && self.flows < self.max_flows
                    && !n.out.contains_key(&f.flow)
                    && !n.back.contains_key(&(f.flow.proto, port));
                let Some(b) = block.filter(|b| ok && !taken(b)) else {
                    report.skipped += 1;
                    continue;
                };
                let i = (port - b.block.first) as usize;
                b.used[i / 64] |= 1 << (i % 64);
                b.free -= 1;
                n.out.insert(
                    f.flow,
                    Binding {
                        public_port: port,
                        last: Instant::from_millis(now.millis().saturating_sub(f.idle_ms)),
                    },
                );
                n.back.insert((f.flow.proto, port), f.flow);
                self.flows += 1;
                report.flows += 1;
            }
            if n.blocks.is_empty() && n.out.is_empty() {
                self.nodes.remove(&(s.network, s.vip));
            }
        }
        report
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn net() -> NetworkId {
        NetworkId::new(7).unwrap()
    }
    const VIP: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);
    const SERVER: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 10);

    fn block(first: u16, last: u16) -> PortBlock {
        PortBlock {
            public: Ipv4Addr::new(203, 0, 113, 5),
            first,
            last,
        }
    }

    fn flow(port: u16) -> FlowId {
        FlowId {
            proto: 6,
            port,
            remote: SERVER,
            remote_port: 80,
        }
    }

    #[test]
    fn ports_come_from_the_block_and_go_back() {
        let mut nat = SourceNat::new(1000, NatTimeouts::default());
        assert_eq!(
            nat.outbound(net(), VIP, flow(40000), Instant::ZERO),
            Err(NatError::NoBlock)
        );
        nat.set_blocks(net(), VIP, &[block(1024, 1027)]);
        let p = nat
            .outbound(net(), VIP, flow(40000), Instant::ZERO)
            .unwrap();
        assert!(block(1024, 1027).contains(p));
        assert_eq!(
            nat.outbound(net(), VIP, flow(40000), Instant::ZERO),
            Ok(p),
            "a flow keeps its port"
        );
        assert_eq!(
            nat.inbound(net(), VIP, 6, p, (SERVER, 80), Instant::ZERO),
            Some(40000)
        );
        assert_eq!(
            nat.inbound(net(), VIP, 6, p, (SERVER, 81), Instant::ZERO),
            None,
            "another remote port"
        );
        assert_eq!(
            nat.inbound(net(), VIP, 17, p, (SERVER, 80), Instant::ZERO),
            None,
            "another protocol"
        );
        // The node's own port is kept when the block has it.
        assert_eq!(
            nat.outbound(net(), VIP, flow(1026), Instant::ZERO),
            Ok(1026)
        );
    }

    #[test]
    fn exhaustion_more_blocks_and_expiry() {
        let mut nat = SourceNat::new(1000, NatTimeouts::default());
        nat.set_blocks(net(), VIP, &[block(2000, 2001)]);
        for p in [1, 2] {
            nat.outbound(net(), VIP, flow(p), Instant::ZERO).unwrap();
        }
        assert_eq!(
            nat.outbound(net(), VIP, flow(3), Instant::ZERO),
            Err(NatError::Exhausted)
        );
        nat.set_blocks(net(), VIP, &[block(2000, 2001), block(3000, 3000)]);
        assert_eq!(nat.outbound(net(), VIP, flow(3), Instant::ZERO), Ok(3000));
        assert_eq!(nat.flows(), 3);
        let later = Instant::ZERO.plus_millis(NatTimeouts::default().tcp);
        assert_eq!(nat.expire(later), 3);
        assert_eq!(nat.flows(), 0);
        assert!(
            nat.outbound(net(), VIP, flow(4), later).is_ok(),
            "ports came back"
        );
    }

    #[test]
    fn table_limit_holds() {
        let mut nat = SourceNat::new(2, NatTimeouts::default());
        nat.set_blocks(net(), VIP, &[block(1000, 1999)]);
        nat.outbound(net(), VIP, flow(1), Instant::ZERO).unwrap();
        nat.outbound(net(), VIP, flow(2), Instant::ZERO).unwrap();
        assert_eq!(
            nat.outbound(net(), VIP, flow(3), Instant::ZERO),
            Err(NatError::TableFull)
        );
    }

    #[test]
    fn removing_a_block_drops_its_flows_only() {
        let mut nat = SourceNat::new(100, NatTimeouts::default());
        nat.set_blocks(net(), VIP, &[block(1000, 1000), block(2000, 2000)]);
        let p1 = nat.outbound(net(), VIP, flow(1), Instant::ZERO).unwrap();
        let p2 = nat.outbound(net(), VIP, flow(2), Instant::ZERO).unwrap();
        nat.set_blocks(net(), VIP, &[block(2000, 2000)]);
        assert_eq!(
            nat.inbound(net(), VIP, 6, p1, (SERVER, 80), Instant::ZERO),
            None
        );
        assert_eq!(
            nat.inbound(net(), VIP, 6, p2, (SERVER, 80), Instant::ZERO),
            Some(2)
        );
        assert_eq!(nat.flows(), 1);
    }

    #[test]
    fn exported_flows_come_back_with_their_ports_and_idle_time() {
        let t = NatTimeouts::default();
        let mut old = SourceNat::new(1000, t);
        old.set_blocks(net(), VIP, &[block(1024, 1027)]);
        let p1 = old
            .outbound(net(), VIP, flow(40000), Instant::ZERO)
            .unwrap();
        let p2 = old
            .outbound(net(), VIP, flow(40001), Instant::from_secs(10))
            .unwrap();
        let saved = old.export(Instant::from_secs(10));
        assert_eq!(saved.len(), 1);
        assert_eq!(saved[0].blocks, vec![block(1024, 1027)]);
        assert_eq!(saved[0].flows[0].idle_ms, 10_000);
        assert_eq!(saved[0].flows[1].idle_ms, 0);

        // A new process: its clock starts again.
        let now = Instant::from_secs(20);
        let mut nat = SourceNat::new(1000, t);
        let r = nat.import(&saved, now);
        assert_eq!(
            r,
            ImportReport {
                flows: 2,
                skipped: 0
            }
        );
        assert_eq!(nat.flows(), 2);
        assert_eq!(
            nat.inbound(net(), VIP, 6, p1, (SERVER, 80), now),
            Some(40000)
        );
        assert_eq!(nat.outbound(net(), VIP, flow(40001), now), Ok(p2));
        // Imported ports are not handed to new flows.
        for p in [50000, 50001] {
            let q = nat.outbound(net(), VIP, flow(p), now).unwrap();
            assert!(q != p1 && q != p2, "port {q} handed out twice");
        }
        assert_eq!(
            nat.outbound(net(), VIP, flow(50002), now),
            Err(NatError::Exhausted)
        );
        // The idle time carries over: flow(40000) was last used 10 s before the export,
        // and the import does not refresh it.
        let mut nat = SourceNat::new(1000, t);
        nat.import(&saved, now);
        assert_eq!(nat.export(now), saved);
        let expire_at = now.plus_millis(t.tcp - 10_000);
        assert_eq!(nat.expire(Instant::from_millis(expire_at.millis() - 1)), 0);
        assert_eq!(nat.expire(expire_at), 1);
        assert_eq!(
            nat.inbound(net(), VIP, 6, p1, (SERVER, 80), expire_at),
            None
        );
        assert_eq!(
            nat.inbound(net(), VIP, 6, p2, (SERVER, 80), expire_at),
            Some(40001)
        );
    }

    #[test]
    fn import_skips_what_no_longer_fits() {
        let t = NatTimeouts::default();
        let mut old = SourceNat::new(1000, t);
        old.set_blocks(net(), VIP, &[block(1000, 1000), block(2000, 2000)]);
        let p1 = old.outbound(net(), VIP, flow(1), Instant::ZERO).unwrap();
        let _p2 = old.outbound(net(), VIP, flow(2), Instant::ZERO).unwrap();
        let mut udp = flow(3);
        udp.proto = 17;
        old.set_blocks(
            net(),
            VIP,
            &[block(1000, 1000), block(2000, 2000), block(3000, 3000)],
        );
        old.outbound(net(), VIP, udp, Instant::ZERO).unwrap();
        // The UDP flow is idle past its timeout by the time it is saved.
        let saved = old.export(Instant::ZERO.plus_millis(t.udp));

        // The manager's blocks arrived first: 2000 and 3000 are gone, 4000 is new.
        let mut nat = SourceNat::new(1000, t);
        nat.set_blocks(net(), VIP, &[block(1000, 1000), block(4000, 4000)]);
        // ... and one flow took the port of flow(1) meanwhile.
        let taken = nat.outbound(net(), VIP, flow(9), Instant::ZERO).unwrap();
        assert_eq!(taken, p1);
        let r = nat.import(&saved, Instant::ZERO);
        // Only blocks it did not hold are added back (2000, 3000); flow(1)'s port is
        // taken and the UDP flow expired.
        assert_eq!(
            r,
            ImportReport {
                flows: 1,
                skipped: 2
            }
        );
        assert_eq!(nat.flows(), 2);
        // The manager's next word drops the flows of blocks it no longer assigns.
        nat.set_blocks(net(), VIP, &[block(1000, 1000), block(4000, 4000)]);
        assert_eq!(nat.flows(), 1);
        // A full table takes no more.
        let mut small = SourceNat::new(1, t);
        let r = small.import(&old.export(Instant::ZERO), Instant::ZERO);
        assert_eq!((r.flows, small.flows()), (1, 1));
    }

    proptest! {
        /// Random flows and expiries: no two live flows share a public port, every bound
        /// flow maps back to itself, and the count matches.
        #[test]
        fn bindings_are_unique_and_reversible(ops in proptest::collection::vec((0u16..50, any::<bool>(), 0u64..400_000), 1..300)) {
            let mut nat = SourceNat::new(10_000, NatTimeouts::default());
            nat.set_blocks(net(), VIP, &[block(5000, 5031), block(6000, 6007)]);
            let mut now = Instant::ZERO;
            for (p, udp, dt) in ops {
                now = now.plus_millis(dt);
                nat.expire(now);
                let f = FlowId { proto: if udp { 17 } else { 6 }, ..flow(p) };
                match nat.outbound(net(), VIP, f, now) {
                    Ok(port) => {
                        prop_assert!((5000..=5031).contains(&port) || (6000..=6007).contains(&port));
                        prop_assert_eq!(nat.inbound(net(), VIP, f.proto, port, (SERVER, 80), now), Some(p));
                    }
                    Err(e) => prop_assert_eq!(e, NatError::Exhausted),
                }
                let mut seen = std::collections::HashSet::new();
                for (f, port) in nat.nodes[&(net(), VIP)].out.iter().map(|(f, b)| (f, b.public_port)) {
                    prop_assert!(seen.insert((f.proto, port)), "public port bound twice");
                }
                prop_assert_eq!(nat.flows(), nat.nodes.get(&(net(), VIP)).map_or(0, |n| n.out.len()));
            }
        }
    }

    proptest! {
        /// Random tables: export then import into a fresh table (a restarted agent, whose
        /// clock starts again) gives every flow the same public port both ways, the same
        /// export back, and new flows never get an imported port.
        #[test]
        fn export_import_round_trips(
            ops in proptest::collection::vec((0u16..60, any::<bool>(), 0u64..100_000), 1..120),
            restart_at in 0u64..1_000_000,
        ) {
            let t = NatTimeouts::default();
            let blocks = [block(5000, 5031), block(6000, 6007)];
            let mut old = SourceNat::new(10_000, t);
            old.set_blocks(net(), VIP, &blocks);
            let mut now = Instant::ZERO;
            for (p, udp, dt) in ops {
                now = now.plus_millis(dt);
                old.expire(now);
                let f = FlowId { proto: if udp { 17 } else { 6 }, ..flow(p) };
                let _ = old.outbound(net(), VIP, f, now);
            }
            old.expire(now);
            let saved = old.export(now);
            let later = Instant::from_millis(restart_at);
            let mut nat = SourceNat::new(10_000, t);
            let r = nat.import(&saved, later);
            prop_assert_eq!(r.flows, old.flows());
            prop_assert_eq!(r.skipped, 0);
            prop_assert_eq!(nat.flows(), old.flows());
            let mut again = nat.export(later);
            // Idle times carry over, except where the new clock is younger than them.
            for (n, s) in again.iter_mut().zip(&saved) {
                for (a, b) in n.flows.iter_mut().zip(&s.flows) {
                    prop_assert_eq!(a.idle_ms, b.idle_ms.min(restart_at));
                    a.idle_ms = b.idle_ms;
                }
            }
            prop_assert_eq!(&again, &saved);
            let mut imported = std::collections::HashSet::new();
            for s in saved.iter().flat_map(|n| &n.flows) {
                imported.insert(s.public_port);
                prop_assert_eq!(
                    nat.inbound(net(), VIP, s.flow.proto, s.public_port, (s.flow.remote, s.flow.remote_port), later),
                    Some(s.flow.port)
                );
                prop_assert_eq!(nat.outbound(net(), VIP, s.flow, later), Ok(s.public_port));
            }
            for p in 100u16..200 {
                let f = FlowId { remote_port: 443, ..flow(p) };
                match nat.outbound(net(), VIP, f, later) {
                    Ok(port) => prop_assert!(!imported.contains(&port), "port {} handed out twice", port),
                    Err(e) => prop_assert_eq!(e, NatError::Exhausted),
                }
            }
        }
    }
}
