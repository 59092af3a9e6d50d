//! Batched device I/O with io_uring: a worker reads up to a batch of packets from a
//! device in one system call, and writes a batch's verdicts out in one more, instead of
//! one `read` and one `writev` per packet.
//!
//! Reads are independent and `RWF_NOWAIT`: each takes the next packet, in the order they
//! were queued, or fails with `EAGAIN` at once when there is none, so all complete while
//! the submitting call runs. (Linked reads do not batch: a short read, which every packet
//! is, breaks the link. Reads without `RWF_NOWAIT` that find nothing stay pending and
//! would take later packets into buffers already reused.) Writes go in one submission, each from its
//! own buffer, and the call waits for all of them (a TAP or TUN write does not block).
//! Every buffer handed to the kernel stays borrowed until its completion has been reaped,
//! which the methods here wait for before they return.

use io_uring::{opcode, types, IoUring};
use std::io;
use std::ops::Range;
use std::os::fd::{AsRawFd, RawFd};
use wire::virtio::VirtioNetHdr;

use crate::tap::{Device, VNET_HDR_LEN};

/// One worker's ring.
pub struct Ring {
    ring: IoUring,
    /// Writes queued and not submitted yet.
    queued: u32,
    /// A batch's read results, by index (kept to be reused).
    results: Vec<Option<i32>>,
    /// `io_uring_enter` calls made (for the packets-per-call ratio).
    pub submits: u64,
}

/// How a batch of reads ended.
#[derive(Debug)]
pub enum ReadEnd {
    /// A read found nothing: the device is drained.
    Drained,
    /// Every buffer was filled: there may be more.
    Full,
    /// A read failed otherwise.
    Failed(io::Error),
    /// The ring itself failed (submitting or waiting): it must not be used again.
    Broken(io::Error),
}

impl ReadEnd {
    /// Acts on how a loop's batch ended: the device's readiness cleared when it has
    /// nothing more (or failed), the batch dropped when the ring broke (which ends what the
    /// ring still holds before a slot is used again; the loop goes on a packet per call).
    /// The device's error, if it failed.
    pub fn settle<T: AsRawFd>(
        self,
        guard: &mut tokio::io::unix::AsyncFdReadyGuard<'_, T>,
        batch: &mut Option<Batch>,
    ) -> Option<io::Error> {
        match self {
            ReadEnd::Full => None,
            ReadEnd::Drained => {
                guard.clear_ready();
                None
            }
            ReadEnd::Failed(e) => {
                guard.clear_ready();
                Some(e)
            }
            ReadEnd::Broken(e) => {
                tracing::warn!(error = %e, "io_uring failed; one system call per packet from now on");
                *batch = None;
                None
            }
        }
    }
}

impl Ring {
    /// A ring for batches of up to `batch` reads and `batch` writes. It must be used
    /// from the thread that made it (`IORING_SETUP_SINGLE_ISSUER`; the loops run on
    /// current-thread runtimes): from another, its calls fail and the loop falls back to
    /// one system call per packet.
    pub fn new(batch: u32) -> io::Result<Ring> {
        let entries = (batch * 2).next_power_of_two();
        // One thread submits and reaps (the worker's): no task work needs an interrupt
        // to run. Kernels before 6.0 refuse the first flag, before 5.19 the second:
        // then without.
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(entries)
            .or_else(|_| IoUring::builder().setup_coop_taskrun().build(entries))
            .or_else(|_| IoUring::new(entries))?;
        Ok(Ring {
            ring,
            queued: 0,
            results: Vec::with_capacity(batch as usize),
            submits: 0,
        })
    }

    /// Reads one packet into each of `bufs` (at `at..`, as far as the buffer goes) from
    /// `fd`, in one call; `lens` gets `(buffer index, length)` of each packet read, in
    /// the order the device gave them.
    pub fn read_many(
        &mut self,
        fd: RawFd,
        bufs: &mut [Box<[u8]>],
        at: usize,
        lens: &mut Vec<(usize, usize)>,
    ) -> ReadEnd {
        lens.clear();
        debug_assert_eq!(self.queued, 0, "writes are flushed before reads");
        let n = bufs.len();
        {
            let mut sq = self.ring.submission();
            for (i, b) in bufs.iter_mut().enumerate() {
                let b = &mut b[at..];
                let e = opcode::Read::new(types::Fd(fd), b.as_mut_ptr(), b.len() as u32)
                    .offset(u64::MAX)
                    .rw_flags(libc::RWF_NOWAIT)
                    .build()
                    .user_data(i as u64);
                // SAFETY: the buffer outlives the read: `wait` below reaps every
                // completion before this function returns and `bufs` is borrowed until then.
                if unsafe { sq.push(&e) }.is_err() {
                    break;
                }
            }
        }
        if let Err(e) = self.wait(n as u32) {
            return ReadEnd::Broken(e);
        }
        let mut end = ReadEnd::Full;
        for (i, &r) in self.results.iter().enumerate() {
            match r {
                Some(r) if r >= 0 => lens.push((i, r as usize)),
                Some(r) if r == -libc::EAGAIN || r == -libc::EINTR => {
                    if matches!(end, ReadEnd::Full) {
                        end = ReadEnd::Drained;
                    }
                }
                Some(r) if r == -libc::EOPNOTSUPP || r == -libc::EINVAL => {
                    // This kernel cannot read the device without waiting (RWF_NOWAIT).
                    return ReadEnd::Broken(io::Error::from_raw_os_error(-r));
                }
                Some(r) => end = ReadEnd::Failed(io::Error::from_raw_os_error(-r)),
                None => {
                    return ReadEnd::Broken(io::Error::other(format!(
                        "read {i} of the batch never completed"
                    )))
                }
            }
        }
        end
    }

    /// Queues a write of `len` bytes at `ptr` to `fd`, sent by the next
    /// [`flush`](Self::flush).
    ///
    /// # Safety
    /// The bytes must stay valid and unchanged until that `flush` returns.
    pub unsafe fn queue_write(&mut self, fd: RawFd, ptr: *const u8, len: usize, tag: u64) -> bool {
        let e = opcode::Write::new(types::Fd(fd), ptr, len as u32)
            .offset(u64::MAX)
            .build()
            .user_data(tag);
        // SAFETY: the caller keeps the bytes valid until `flush` has reaped this write.
        let ok = unsafe { self.ring.submission().push(&e) }.is_ok();
        if ok {
            self.queued += 1;
        }
        ok
    }

    /// Writes queued are not sent yet.
    pub fn has_queued(&self) -> bool {
        self.queued > 0
    }

    /// Sends the queued writes in one call and waits for them: `done(tag, result)` for
    /// each (bytes written, or a negative errno). An error means the ring failed: writes
    /// may still be queued or in flight, so it must be dropped (which ends them) before
    /// their buffers are used again.
    pub fn flush(&mut self, mut done: impl FnMut(u64, i32)) -> io::Result<()> {
        let n = std::mem::take(&mut self.queued);
        if n == 0 {
            return Ok(());
        }
        let mut left = n;
        let mut first = true;
        while left > 0 {
            if first {
                self.submit_wait(left)?;
                first = false;
            } else {
                self.submit_wait(1)?;
            }
            for c in self.ring.completion() {
                done(c.user_data(), c.result());
                left -= 1;
            }
        }
        Ok(())
    }

    /// Submits what is queued and waits for `n` completions; their results go to
    /// `results` by `user_data` (an index below `n`).
    fn wait(&mut self, n: u32) -> io::Result<()> {
        self.results.clear();
        self.results.resize(n as usize, None);
        let mut got = 0;
        let mut first = true;
        while got < n {
            self.submit_wait(if first { n } else { 1 })?;
            first = false;
            for c in self.ring.completion() {
                if let Some(slot) = self.results.get_mut(c.user_data() as usize) {
                    *slot = Some(c.result());
                }
                got += 1;
            }
        }
        Ok(())
    }

    fn submit_wait(&mut self, want: u32) -> io::Result<()> {
        loop {
            self.submits += 1;
            match self.ring.submit_and_wait(want as usize) {
                Ok(_) => return Ok(()),
                Err(e) if e.raw_os_error() == Some(libc::EINTR) => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// A worker's batched reads and writes over its devices: the ring, the preallocated slots
/// packets are read into and handled in, and how many reads to ask of each device.
pub struct Batch {
    ring: Ring,
    slots: Vec<Box<[u8]>>,
    /// The batch's packets: (slot, bytes read).
    lens: Vec<(usize, usize)>,
    /// Reads to ask of each device next time (by the caller's index for it): twice what
    /// its last batch found, at least 2 and at most the slots. A read that finds nothing
    /// costs the kernel work too, so a device with one packet per wake-up (a TCP stream's
    /// super-packets, a ping) is not asked for 64.
    want: Vec<usize>,
}

/// How a [`Batch::run`] went.
#[derive(Debug)]
pub struct BatchEnd {
    /// How the reads ended ([`ReadEnd::Broken`]: the batch must not be used again).
    pub read: ReadEnd,
    /// Writes done, bytes written (headers not counted), writes failed.
    pub tx_packets: u64,
    pub tx_bytes: u64,
    pub tx_errors: u64,
    /// System calls made.
    pub calls: u64,
}

impl Batch {
    /// `slots` buffers of `slot_len` bytes each; `None` (and why, logged) without io_uring
    /// or when `CANOPY_NO_IO_URING` is set.
    pub fn new(slots: usize, slot_len: usize) -> Option<Batch> {
        if std::env::var_os("CANOPY_NO_IO_URING").is_some() {
            return None;
        }
        match Ring::new(slots as u32) {
            Ok(ring) => Some(Batch {
                ring,
                slots: (0..slots)
                    .map(|_| vec![0u8; slot_len].into_boxed_slice())
                    .collect(),
                lens: Vec::with_capacity(slots),
                want: Vec::new(),
            }),
            Err(e) => {
                tracing::info!(error = %e, "no io_uring: one system call per packet");
                None
            }
        }
    }

    /// Reads a batch from device `which` (`fd`) into the slots at `at` (each packet with
    /// its `virtio_net_hdr` first), calls `handle(slot, bytes read)` for each in the order
    /// the device gave them, and writes out what it returns: the device, the header the
    /// packet leaves with and where in the slot the packet now is. The header goes just in
    /// front of the packet (or, without room there, the packet goes out at once with its own
    /// `writev`); the writes leave in one call, reaped before this returns.
    pub fn run<'d>(
        &mut self,
        which: usize,
        fd: RawFd,
        at: usize,
        mut handle: impl FnMut(&mut [u8], usize) -> Option<(&'d Device, VirtioNetHdr, Range<usize>)>,
    ) -> BatchEnd {
        if self.want.len() <= which {
            self.want.resize(which + 1, 2);
        }
        let asked = self.want[which].clamp(1, self.slots.len());
        let read = self
            .ring
            .read_many(fd, &mut self.slots[..asked], at, &mut self.lens);
        self.want[which] = (2 * self.lens.len()).clamp(2, self.slots.len());
        let mut end = BatchEnd {
            read,
            tx_packets: 0,
            tx_bytes: 0,
            tx_errors: 0,
            calls: 1,
        };
        for &(i, n) in &self.lens {
            let slot = &mut self.slots[i];
            let Some((dev, hdr, range)) = handle(slot, n) else {
                continue;
            };
            let queued = range
                .start
                .checked_sub(VNET_HDR_LEN)
                .filter(|&f| hdr.emit(&mut slot[f..range.start]).is_ok())
                .is_some_and(|f| {
                    let (ptr, len) = (slot[f..].as_ptr(), range.end - f);
                    // SAFETY: the slot is not touched again until `flush` below has
                    // reaped this write.
                    unsafe { self.ring.queue_write(dev.as_raw_fd(), ptr, len, i as u64) }
                });
            if !queued {
                match dev.send(&hdr, &slot[range.clone()]) {
                    Ok(_) => {
                        end.tx_packets += 1;
                        end.tx_bytes += range.len() as u64;
                    }
                    Err(_) => end.tx_errors += 1,
                }
            }
        }
        if self.ring.has_queued() {
            end.calls += 1;
        }
        let flushed = self.ring.flush(|_, r| {
            if r >= VNET_HDR_LEN as i32 {
                end.tx_packets += 1;
                end.tx_bytes += (r as usize - VNET_HDR_LEN) as u64;
            } else {
                end.tx_errors += 1;
            }
        });
        if let Err(e) = flushed {
            end.read = ReadEnd::Broken(e);
        }
        end
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pair of connected datagram sockets, non-blocking: one read or write per packet,
    /// as on a TUN.
    fn pair() -> [std::os::fd::OwnedFd; 2] {
        use std::os::fd::FromRawFd;
        let mut sv = [0i32; 2];
        // SAFETY: socketpair writes two descriptors into `sv`; the result is checked.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_DGRAM | libc::SOCK_NONBLOCK,
                0,
                sv.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: both were just opened and are owned by nobody else.
        sv.map(|fd| unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
    }

    fn send(fd: &std::os::fd::OwnedFd, msg: &[u8]) {
        // SAFETY: sends `msg.len()` bytes from `msg`.
        let n = unsafe { libc::send(fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        assert_eq!(n, msg.len() as isize);
    }

    fn slots(n: usize) -> Vec<Box<[u8]>> {
        (0..n).map(|_| vec![0u8; 64].into_boxed_slice()).collect()
    }

    #[test]
    fn a_batch_reads_what_is_there_in_order_and_says_whether_more_may_be() {
        let Ok(mut ring) = Ring::new(8) else {
            eprintln!("SKIPPED: no io_uring here");
            return;
        };
        let [a, b] = pair();
        for i in 0..5u8 {
            send(&b, &[i; 10][..10 - i as usize]);
        }
        let (mut bufs, mut lens) = (slots(3), Vec::new());
        // Three asked of five: all filled, more may come.
        let end = ring.read_many(a.as_raw_fd(), &mut bufs, 4, &mut lens);
        assert!(matches!(end, ReadEnd::Full), "{end:?}");
        assert_eq!(lens, [(0, 10), (1, 9), (2, 8)]);
        assert_eq!((bufs[0][4], bufs[1][4], bufs[2][4]), (0, 1, 2));
        // Eight asked of the two left: those, in order, and the rest found nothing at
        // once (no read left pending to take a later packet).
        let mut bufs = slots(8);
        let end = ring.read_many(a.as_raw_fd(), &mut bufs, 4, &mut lens);
        assert!(matches!(end, ReadEnd::Drained), "{end:?}");
        assert_eq!(lens, [(0, 7), (1, 6)]);
        assert_eq!((bufs[0][4], bufs[1][4]), (3, 4));
        send(&b, b"later");
        let end = ring.read_many(a.as_raw_fd(), &mut bufs, 0, &mut lens);
        assert!(matches!(end, ReadEnd::Drained), "{end:?}");
        assert_eq!(
            (lens.as_slice(), &bufs[0][..5]),
            (&[(0, 5)][..], &b"later"[..])
        );
    }

    #[test]
    fn queued_writes_leave_in_one_flush_in_order() {
        let Ok(mut ring) = Ring::new(8) else {
            eprintln!("SKIPPED: no io_uring here");
            return;
        };
        let [a, b] = pair();
        let msgs: [&[u8]; 3] = [b"one", b"two!", b"three"];
        for (i, m) in msgs.iter().enumerate() {
            // SAFETY: `msgs` lives until after the flush.
            assert!(unsafe { ring.queue_write(a.as_raw_fd(), m.as_ptr(), m.len(), i as u64) });
        }
        let calls = ring.submits;
        let mut done = Vec::new();
        ring.flush(|tag, r| done.push((tag, r))).unwrap();
        assert_eq!(ring.submits, calls + 1, "one call for the three");
        done.sort();
        assert_eq!(done, [(0, 3), (1, 4), (2, 5)]);
        let (mut bufs, mut lens) = (slots(4), Vec::new());
        ring.read_many(b.as_raw_fd(), &mut bufs, 0, &mut lens);
        let got: Vec<&[u8]> = lens.iter().map(|&(i, n)| &bufs[i][..n]).collect();
        assert_eq!(got, msgs);
    }
}
