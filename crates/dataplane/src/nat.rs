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
}
