//! A packet inside a buffer it does not fill, so that headers can grow and shrink in
//! place: the daemons read each packet at an offset, leaving headroom in front.

use crate::drops::DropReason;

/// A packet inside a larger buffer: `buf[start..end]`. The bytes before `start` are
/// headroom the translator may use to grow the header without moving the payload.
#[derive(Debug)]
pub struct PacketBuf<'a> {
    pub(crate) buf: &'a mut [u8],
    pub(crate) start: usize,
    pub(crate) end: usize,
}

impl<'a> PacketBuf<'a> {
    /// # Panics
    /// If `start > end` or `end > buf.len()`.
    pub fn new(buf: &'a mut [u8], start: usize, end: usize) -> Self {
        assert!(
            start <= end && end <= buf.len(),
            "packet outside its buffer"
        );
        PacketBuf { buf, start, end }
    }

    #[inline]
    pub fn as_slice(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }

    #[inline]
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.buf[self.start..self.end]
    }

    #[inline]
    pub fn range(&self) -> core::ops::Range<usize> {
        self.start..self.end
    }

    #[inline]
    pub fn len(&self) -> usize {
        self.end - self.start
    }

    #[inline]
    pub fn is_empty(&self) -> bool {
        self.end == self.start
    }

    /// Makes the bytes `[start + old_hdr, end)` (the payload) stay where they are while
    /// the header in front of them becomes `new_hdr` bytes long, moving the payload only
    /// when the headroom is too small. Returns the new start.
    #[inline]
    pub(crate) fn reheader(&mut self, old_hdr: usize, new_hdr: usize) -> Result<usize, DropReason> {
        let payload_at = self.start + old_hdr;
        if payload_at >= new_hdr {
            return Ok(payload_at - new_hdr);
        }
        let shift = new_hdr - payload_at;
        if self.end + shift > self.buf.len() {
            return Err(DropReason::NoRoom);
        }
        self.buf
            .copy_within(payload_at..self.end, payload_at + shift);
        self.end += shift;
        Ok(0)
    }

    /// Replaces the packet with `bytes`, placed at `start`, or earlier if the buffer
    /// ends too soon.
    pub(crate) fn replace(&mut self, bytes: &[u8]) -> Result<(), DropReason> {
        let start = self.start.min(self.buf.len().saturating_sub(bytes.len()));
        if start + bytes.len() > self.buf.len() {
            return Err(DropReason::NoRoom);
        }
        self.buf[start..start + bytes.len()].copy_from_slice(bytes);
        self.start = start;
        self.end = start + bytes.len();
        Ok(())
    }

    /// Bytes free before the packet.
    #[inline]
    pub fn headroom(&self) -> usize {
        self.start
    }

    /// Bytes the buffer can hold after the packet's start.
    #[inline]
    pub fn capacity_from_start(&self) -> usize {
        self.buf.len() - self.start
    }

    /// Drops `n` bytes from the front of the packet (a link header, say).
    #[inline]
    pub fn strip_front(&mut self, n: usize) {
        assert!(n <= self.len(), "strip past the packet's end");
        self.start += n;
    }

    /// Grows the packet by `n` bytes at the front, into the headroom, and returns them.
    #[inline]
    pub fn push_front(&mut self, n: usize) -> Option<&mut [u8]> {
        if n > self.start {
            return None;
        }
        self.start -= n;
        Some(&mut self.buf[self.start..self.start + n])
    }

    /// Cuts the packet to `len` bytes (link padding, say).
    #[inline]
    pub fn truncate(&mut self, len: usize) {
        if len < self.len() {
            self.end = self.start + len;
        }
    }

    /// Makes the packet `len` bytes long from its start, within the buffer; the new bytes
    /// hold whatever the buffer held. `None` if the buffer is too short.
    #[inline]
    pub fn resize(&mut self, len: usize) -> Option<&mut [u8]> {
        if self.start + len > self.buf.len() {
            return None;
        }
        self.end = self.start + len;
        Some(&mut self.buf[self.start..self.end])
    }
}
