//! Packets waiting for a mapping, or for a port block of their node: a fixed set of
//! preallocated slots, so that a burst of misses costs no allocation and cannot grow
//! memory; when the slots (or one key's share of them) are taken, the packet is dropped
//! and counted.

use crate::time::Instant;
use core::net::Ipv4Addr;
use model::NetworkId;

/// Where a held packet came from, and so where it goes back in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Origin {
    Vm(super::PortId),
    Substrate,
}

/// What a held packet waits for. The per-key share counts each apart, so that a node
/// waiting for its port block and an address being resolved never take each other's
/// share.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Wait {
    /// The mapping of (network, address): the destination, or the substrate sender.
    Mapping(NetworkId, Ipv4Addr),
    /// A port block for the node (network, address) that sends the packet through NAT.
    PortBlock(NetworkId, Ipv4Addr),
    /// Nothing: the packet may go at once (a fragment the agent cut).
    Nothing,
}

/// Held packets dropped by [`HoldQueue::expire`], by what they waited for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Expired {
    pub mappings: usize,
    pub port_blocks: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Free,
    Waiting,
    Ready,
}

struct Slot {
    data: Box<[u8]>,
    len: usize,
    key: Wait,
    origin: Origin,
    since: Instant,
    state: State,
}

pub(super) struct HoldQueue {
    slots: Vec<Slot>,
    per_key: usize,
    /// Slots in `State::Ready`: the packet loop asks for ready packets after every batch,
    /// and almost always there are none, so that answer must not cost a scan.
    ready: usize,
    /// Slots in `State::Waiting`: every mapping the manager pushes releases its address,
    /// and almost always nothing waits for it (a million mappings, a scan each, cost the
    /// agent about a second).
    waiting: usize,
}

impl HoldQueue {
    pub fn new(capacity: usize, slot_len: usize, per_key: usize) -> Self {
        let slots = (0..capacity)
            .map(|_| Slot {
                data: vec![0u8; slot_len].into_boxed_slice(),
                len: 0,
                key: Wait::Nothing,
                origin: Origin::Substrate,
                since: Instant::ZERO,
                state: State::Free,
            })
            .collect();
        HoldQueue {
            slots,
            per_key,
            ready: 0,
            waiting: 0,
        }
    }

    /// Keeps a copy of `bytes` until `key` is released; false if there is no room (no
    /// free slot, the key has its share, or the packet is larger than a slot).
    pub fn hold(&mut self, origin: Origin, key: Wait, bytes: &[u8], now: Instant) -> bool {
        let mut same = 0;
        let mut free = None;
        for (i, s) in self.slots.iter().enumerate() {
            match s.state {
                State::Free => free = free.or(Some(i)),
                _ if s.key == key => same += 1,
                _ => {}
            }
        }
        let Some(i) = free else { return false };
        if same >= self.per_key || bytes.len() > self.slots[i].data.len() {
            return false;
        }
        let s = &mut self.slots[i];
        s.data[..bytes.len()].copy_from_slice(bytes);
        s.len = bytes.len();
        s.key = key;
        s.origin = origin;
        s.since = now;
        s.state = State::Waiting;
        self.waiting += 1;
        true
    }

    /// What `key` waited for is there (the mapping, a port block): its packets may go.
    pub fn release(&mut self, key: Wait) {
        if self.waiting == 0 {
            return;
        }
        for s in &mut self.slots {
            if s.state == State::Waiting && s.key == key {
                s.state = State::Ready;
                self.ready += 1;
                self.waiting -= 1;
            }
        }
    }

    /// True if some packet still waits for `key`.
    pub fn waiting(&self, key: Wait) -> bool {
        self.waiting > 0
            && self
                .slots
                .iter()
                .any(|s| s.state == State::Waiting && s.key == key)
    }

    /// Slots free now.
    pub fn free_slots(&self) -> usize {
        self.slots.iter().filter(|s| s.state == State::Free).count()
    }

    /// Queues a packet that may go at once (a fragment the agent cut); false when no slot
    /// is free or it is larger than a slot.
    pub fn push_ready(&mut self, origin: Origin, bytes: &[u8], now: Instant) -> bool {
        let Some(s) = self
            .slots
            .iter_mut()
            .find(|s| s.state == State::Free && s.data.len() >= bytes.len())
        else {
            return false;
        };
        s.data[..bytes.len()].copy_from_slice(bytes);
        s.len = bytes.len();
        s.key = Wait::Nothing;
        s.origin = origin;
        s.since = now;
        s.state = State::Ready;
        self.ready += 1;
        true
    }

    /// Copies out the oldest ready packet.
    pub fn take_ready(&mut self, out: &mut [u8]) -> Option<(Origin, usize)> {
        if self.ready == 0 {
            return None;
        }
        let s = self
            .slots
            .iter_mut()
            .filter(|s| s.state == State::Ready && s.len <= out.len())
            .min_by_key(|s| s.since)?;
        out[..s.len].copy_from_slice(&s.data[..s.len]);
        s.state = State::Free;
        self.ready -= 1;
        Some((s.origin, s.len))
    }

    /// Frees the slots of packets that waited longer than `timeout_ms`; says how many,
    /// by what they waited for.
    pub fn expire(&mut self, now: Instant, timeout_ms: u64) -> Expired {
        let mut n = Expired::default();
        if self.waiting == 0 {
            return n;
        }
        for s in &mut self.slots {
            if s.state == State::Waiting && now.since(s.since) >= timeout_ms {
                s.state = State::Free;
                self.waiting -= 1;
                match s.key {
                    Wait::PortBlock(..) => n.port_blocks += 1,
                    Wait::Mapping(..) | Wait::Nothing => n.mappings += 1,
                }
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> (Wait, Wait) {
        let net = NetworkId::new(1).unwrap();
        (
            Wait::Mapping(net, Ipv4Addr::new(10, 0, 0, 2)),
            Wait::PortBlock(net, Ipv4Addr::new(10, 0, 0, 3)),
        )
    }

    #[test]
    fn ready_packets_come_out_oldest_first_and_only_once_released() {
        let (a, b) = keys();
        let mut q = HoldQueue::new(4, 64, 4);
        let mut out = [0u8; 64];
        assert!(q.hold(Origin::Substrate, a, b"a1", Instant(1)));
        assert!(q.hold(Origin::Substrate, b, b"b1", Instant(2)));
        assert!(q.hold(Origin::Substrate, a, b"a2", Instant(3)));
        assert!(q.take_ready(&mut out).is_none(), "nothing released yet");

        q.release(a);
        let (_, n) = q.take_ready(&mut out).unwrap();
        assert_eq!(&out[..n], b"a1");
        assert!(q.push_ready(Origin::Substrate, b"f", Instant(0)));
        let (_, n) = q.take_ready(&mut out).unwrap();
        assert_eq!(&out[..n], b"f", "the oldest ready packet goes first");
        let (_, n) = q.take_ready(&mut out).unwrap();
        assert_eq!(&out[..n], b"a2");
        assert!(q.take_ready(&mut out).is_none(), "b1 still waits");

        // Releasing twice, or a key with nothing waiting, readies nothing more.
        q.release(a);
        q.release(a);
        assert!(q.take_ready(&mut out).is_none());
        q.release(b);
        let (_, n) = q.take_ready(&mut out).unwrap();
        assert_eq!(&out[..n], b"b1");
        assert!(q.take_ready(&mut out).is_none());
        assert_eq!(q.free_slots(), 4);

        // An expired packet is gone: its key's release readies nothing.
        assert!(q.hold(Origin::Substrate, a, b"a3", Instant(10)));
        assert!(q.hold(Origin::Substrate, b, b"b2", Instant(20)));
        let expired = q.expire(Instant(15), 5);
        assert_eq!((expired.mappings, expired.port_blocks), (1, 0));
        assert!(!q.waiting(a));
        assert!(q.waiting(b));
        q.release(a);
        assert!(q.take_ready(&mut out).is_none());
        q.release(b);
        assert!(!q.waiting(b));
        let (_, n) = q.take_ready(&mut out).unwrap();
        assert_eq!(&out[..n], b"b2");
        assert_eq!(q.free_slots(), 4);
    }

    #[test]
    fn a_ready_packet_larger_than_the_buffer_stays_until_one_fits() {
        let mut q = HoldQueue::new(2, 64, 2);
        assert!(q.push_ready(Origin::Substrate, &[7u8; 40], Instant(0)));
        let mut small = [0u8; 16];
        assert!(q.take_ready(&mut small).is_none());
        let mut big = [0u8; 64];
        assert_eq!(q.take_ready(&mut big).map(|(_, n)| n), Some(40));
        assert!(q.take_ready(&mut big).is_none());
    }
}
