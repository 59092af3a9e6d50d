//! Packets one worker hands another: a node's state (connections, NAT) lives in the
//! worker that owns its port ([`dataplane::agent::worker_of`]), so a packet read by
//! another worker goes there ([`Verdict::ToWorker`](dataplane::agent::Verdict)).
//!
//! Each worker has an inbox: a bounded lock-free queue of parcels, and its own set of
//! preallocated buffers that senders take, fill and push, and that it gives back once the
//! packet is out. Nothing is allocated per packet and no lock is taken; a full inbox (or
//! no free buffer) drops the packet and counts it. A sender wakes an inbox once per
//! batch, not per packet.

use crossbeam_queue::ArrayQueue;
use dataplane::agent::{HEADROOM, MIN_BUFFER};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::Notify;
use wire::virtio::VirtioNetHdr;

use crate::agent_loop::MAX_PACKET;

/// Parcels an inbox holds at most (and buffers it owns).
pub const DEPTH: usize = 64;

/// How the receiving worker takes a parcel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// From a VM of the sender's: [`Agent::from_worker`](dataplane::agent::Agent::from_worker).
    Vm,
    /// Read from the substrate by the sender:
    /// [`Agent::from_substrate`](dataplane::agent::Agent::from_substrate).
    Substrate,
}

/// A packet in a buffer of the receiving inbox, at `start..end` (headroom in front).
pub struct Parcel {
    pub buf: Box<[u8]>,
    pub start: usize,
    pub end: usize,
    pub hdr: VirtioNetHdr,
    pub origin: Origin,
}

struct Inbox {
    parcels: ArrayQueue<Parcel>,
    free: ArrayQueue<Box<[u8]>>,
    notify: Notify,
}

/// Why a packet was not handed over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// No such worker.
    NoWorker,
    /// The receiver is behind: no free buffer, or its queue is full.
    Full,
    /// Larger than a buffer.
    TooBig,
}

/// One worker's end: its own inbox, and the others' to hand packets to.
pub struct Handoff {
    inboxes: Arc<[Inbox]>,
    me: usize,
    /// Inboxes given parcels since the last [`wake`](Self::wake). Only this worker's
    /// thread touches it (an atomic so that the loop's future may move between threads).
    pending: AtomicU64,
}

const BUFFER: usize = HEADROOM + MAX_PACKET + MIN_BUFFER;

impl Handoff {
    /// The ends of `workers` workers (at most 64), each inbox with [`DEPTH`] buffers.
    pub fn set(workers: usize) -> Vec<Handoff> {
        let workers = workers.clamp(1, 64);
        let inboxes: Arc<[Inbox]> = (0..workers)
            .map(|_| {
                let free = ArrayQueue::new(DEPTH);
                for _ in 0..DEPTH {
                    let _ = free.push(vec![0u8; BUFFER].into_boxed_slice());
                }
                Inbox {
                    parcels: ArrayQueue::new(DEPTH),
                    free,
                    notify: Notify::new(),
                }
            })
            .collect();
        (0..workers)
            .map(|me| Handoff {
                inboxes: inboxes.clone(),
                me,
                pending: AtomicU64::new(0),
            })
            .collect()
    }

    /// Copies `pkt` into a buffer of worker `to`'s and queues it there (woken at the
    /// next [`wake`](Self::wake)).
    pub fn send(
        &self,
        to: usize,
        origin: Origin,
        hdr: &VirtioNetHdr,
        pkt: &[u8],
    ) -> Result<(), Refused> {
        let inbox = self.inboxes.get(to).ok_or(Refused::NoWorker)?;
        if HEADROOM + pkt.len() + MIN_BUFFER > BUFFER {
            return Err(Refused::TooBig);
        }
        let mut buf = inbox.free.pop().ok_or(Refused::Full)?;
        buf[HEADROOM..HEADROOM + pkt.len()].copy_from_slice(pkt);
        let parcel = Parcel {
            buf,
            start: HEADROOM,
            end: HEADROOM + pkt.len(),
            hdr: *hdr,
            origin,
        };
        if let Err(p) = inbox.parcels.push(parcel) {
            let _ = inbox.free.push(p.buf);
            return Err(Refused::Full);
        }
        self.pending.fetch_or(1 << to, Ordering::Relaxed);
        Ok(())
    }

    /// Wakes the workers given parcels since the last call.
    pub fn wake(&self) {
        let mut pending = self.pending.swap(0, Ordering::Relaxed);
        while pending != 0 {
            let i = pending.trailing_zeros() as usize;
            pending &= pending - 1;
            self.inboxes[i].notify.notify_one();
        }
    }

    /// The next parcel for this worker.
    pub fn recv(&self) -> Option<Parcel> {
        self.inboxes[self.me].parcels.pop()
    }

    /// Gives a parcel's buffer back for the next sender.
    pub fn recycle(&self, buf: Box<[u8]>) {
        let _ = self.inboxes[self.me].free.push(buf);
    }

    /// Parcels are waiting (for a worker that stopped taking them after a batch).
    pub fn has_mail(&self) -> bool {
        !self.inboxes[self.me].parcels.is_empty()
    }

    /// Completes when a sender has woken this worker (at once if it did meanwhile).
    pub async fn notified(&self) {
        self.inboxes[self.me].notify.notified().await
    }

    /// Wakes this worker itself, for parcels left after a batch.
    pub fn wake_self(&self) {
        self.inboxes[self.me].notify.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_parcel_crosses_once_and_its_buffer_comes_back() {
        let ends = Handoff::set(2);
        let hdr = VirtioNetHdr::default();
        ends[0].send(1, Origin::Vm, &hdr, b"hello").unwrap();
        ends[0].wake();
        ends[1].notified().await;
        let p = ends[1].recv().expect("a parcel");
        assert_eq!(
            (&p.buf[p.start..p.end], p.origin),
            (&b"hello"[..], Origin::Vm)
        );
        assert!(ends[1].recv().is_none() && ends[0].recv().is_none());
        ends[1].recycle(p.buf);
        assert_eq!(
            ends[0].send(2, Origin::Vm, &hdr, b"x"),
            Err(Refused::NoWorker)
        );
    }

    #[test]
    fn a_full_inbox_refuses_and_loses_no_buffer() {
        let ends = Handoff::set(2);
        let hdr = VirtioNetHdr::default();
        for _ in 0..DEPTH {
            ends[1].send(0, Origin::Substrate, &hdr, &[0; 100]).unwrap();
        }
        assert_eq!(
            ends[1].send(0, Origin::Substrate, &hdr, &[0; 100]),
            Err(Refused::Full)
        );
        let p = ends[0].recv().unwrap();
        ends[0].recycle(p.buf);
        assert!(ends[1].send(0, Origin::Substrate, &hdr, &[0; 100]).is_ok());
        let big = vec![0u8; MAX_PACKET + 1];
        assert_eq!(
            ends[1].send(0, Origin::Vm, &hdr, &big),
            Err(Refused::TooBig)
        );
    }
}
