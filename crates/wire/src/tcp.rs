//! TCP (RFC 9293): header view with options, checksum over the IPv4 or IPv6
//! pseudo-header, and a repr whose options are stored inline.
//!
//! TCP has no length field: the view covers one segment exactly (the IP payload), and the
//! checksum covers every byte of the buffer.

use crate::{checksum, get_u16, get_u32, need, set_u16, set_u32, Error, IpProtocol, Result};

/// The header without options.
pub const HEADER_LEN: usize = 20;
/// The most option bytes a header can carry (data offset 15).
pub const MAX_OPTIONS_LEN: usize = 40;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const SEQ: usize = 4;
    pub const ACK: usize = 8;
    pub const OFF_RSV: usize = 12;
    pub const FLAGS: usize = 13;
    pub const WINDOW: usize = 14;
    pub const CHECKSUM: usize = 16;
    pub const URGENT: usize = 18;
}

/// The flag bits of byte 13.
pub mod flags {
    /// No more data from sender.
    pub const FIN: u8 = 0x01;
    /// Synchronize sequence numbers.
    pub const SYN: u8 = 0x02;
    /// Reset the connection.
    pub const RST: u8 = 0x04;
    /// Push function.
    pub const PSH: u8 = 0x08;
    /// Acknowledgment field is significant.
    pub const ACK: u8 = 0x10;
    /// Urgent pointer field is significant.
    pub const URG: u8 = 0x20;
    /// ECN echo (RFC 3168).
    pub const ECE: u8 = 0x40;
    /// Congestion window reduced (RFC 3168).
    pub const CWR: u8 = 0x80;
}

/// Option kinds Canopy looks at.
pub mod option {
    /// End of option list.
    pub const END: u8 = 0;
    /// No-operation (padding).
    pub const NOP: u8 = 1;
    /// Maximum segment size (length 4).
    pub const MSS: u8 = 2;
    /// Window scale (length 3).
    pub const WINDOW_SCALE: u8 = 3;
    /// SACK permitted (length 2).
    pub const SACK_PERMITTED: u8 = 4;
    /// SACK blocks.
    pub const SACK: u8 = 5;
    /// Timestamps (length 10).
    pub const TIMESTAMP: u8 = 8;
}

/// The pseudo-header sum for a segment of `len` bytes carried in IPv4.
#[inline]
pub fn pseudo_sum_v4(src: [u8; 4], dst: [u8; 4], len: usize) -> u16 {
    checksum::pseudo_v4(src, dst, IpProtocol::TCP.0, len as u16)
}

/// The pseudo-header sum for a segment of `len` bytes carried in IPv6.
#[inline]
pub fn pseudo_sum_v6(src: &[u8; 16], dst: &[u8; 16], len: usize) -> u16 {
    checksum::pseudo_v6(src, dst, IpProtocol::TCP.0, len as u32)
}

/// A view over one TCP segment.
#[derive(Debug, Clone, Copy)]
pub struct TcpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> TcpPacket<T> {
    /// Wraps `buf` without checking it; getters may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buf: T) -> Self {
        TcpPacket { buf }
    }

    /// Wraps `buf` after checking that the fixed header fits, that the data offset is at
    /// least 5 words and that the header it announces fits.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        need("tcp", buf.as_ref(), HEADER_LEN)?;
        let p = TcpPacket { buf };
        let hl = p.header_len();
        if hl < HEADER_LEN {
            return Err(Error::Malformed {
                what: "tcp",
                field: "data offset",
            });
        }
        need("tcp", p.buf.as_ref(), hl)?;
        Ok(p)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
    /// The whole segment.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
    /// Source port.
    #[inline]
    pub fn src_port(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::SRC_PORT)
    }
    /// Destination port.
    #[inline]
    pub fn dst_port(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::DST_PORT)
    }
    /// Sequence number.
    #[inline]
    pub fn seq_number(&self) -> u32 {
        get_u32(self.buf.as_ref(), field::SEQ)
    }
    /// Acknowledgment number.
    #[inline]
    pub fn ack_number(&self) -> u32 {
        get_u32(self.buf.as_ref(), field::ACK)
    }
    /// Header length in bytes (data offset * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        ((self.buf.as_ref()[field::OFF_RSV] >> 4) as usize) * 4
    }
    /// The 4 reserved bits after the data offset (bit 0 is AccECN's AE, once NS).
    #[inline]
    pub fn reserved(&self) -> u8 {
        self.buf.as_ref()[field::OFF_RSV] & 0x0f
    }
    /// The flag byte (see [`flags`]).
    #[inline]
    pub fn flags(&self) -> u8 {
        self.buf.as_ref()[field::FLAGS]
    }
    /// FIN flag.
    #[inline]
    pub fn fin(&self) -> bool {
        self.flags() & flags::FIN != 0
    }
    /// SYN flag.
    #[inline]
    pub fn syn(&self) -> bool {
        self.flags() & flags::SYN != 0
    }
    /// RST flag.
    #[inline]
    pub fn rst(&self) -> bool {
        self.flags() & flags::RST != 0
    }
    /// PSH flag.
    #[inline]
    pub fn psh(&self) -> bool {
        self.flags() & flags::PSH != 0
    }
    /// ACK flag.
    #[inline]
    pub fn ack(&self) -> bool {
        self.flags() & flags::ACK != 0
    }
    /// URG flag.
    #[inline]
    pub fn urg(&self) -> bool {
        self.flags() & flags::URG != 0
    }
    /// ECE flag.
    #[inline]
    pub fn ece(&self) -> bool {
        self.flags() & flags::ECE != 0
    }
    /// CWR flag.
    #[inline]
    pub fn cwr(&self) -> bool {
        self.flags() & flags::CWR != 0
    }
    /// Window (unscaled).
    #[inline]
    pub fn window_len(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::WINDOW)
    }
    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::CHECKSUM)
    }
    /// Urgent pointer.
    #[inline]
    pub fn urgent_at(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::URGENT)
    }
    /// The option bytes (possibly empty).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..self.header_len()]
    }
    /// Iterates over the options; see [`OptionIter`].
    #[inline]
    pub fn option_iter(&self) -> OptionIter<'_> {
        OptionIter {
            rest: self.options(),
        }
    }
    /// The MSS option's value, if present and well formed.
    pub fn mss(&self) -> Option<u16> {
        self.option_iter().find_map(|o| match o {
            Ok((option::MSS, &[a, b])) => Some(u16::from_be_bytes([a, b])),
            _ => None,
        })
    }
    /// Everything after the header.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
    /// True when the segment sums correctly with the pseudo-header sum `pseudo`
    /// (see [`pseudo_sum_v4`]/[`pseudo_sum_v6`]; its length is this buffer's length).
    #[inline]
    pub fn verify_checksum_with(&self, pseudo: u16) -> bool {
        checksum::add(pseudo, checksum::sum(self.buf.as_ref())) == 0xffff
    }
    /// Verifies the checksum of a segment carried in IPv4 from `src` to `dst`.
    #[inline]
    pub fn verify_checksum_v4(&self, src: [u8; 4], dst: [u8; 4]) -> bool {
        self.verify_checksum_with(pseudo_sum_v4(src, dst, self.buf.as_ref().len()))
    }
    /// Verifies the checksum of a segment carried in IPv6 from `src` to `dst`.
    #[inline]
    pub fn verify_checksum_v6(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        self.verify_checksum_with(pseudo_sum_v6(src, dst, self.buf.as_ref().len()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> TcpPacket<T> {
    /// The whole segment, mutable.
    #[inline]
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    /// Sets the source port.
    #[inline]
    pub fn set_src_port(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::SRC_PORT, v)
    }
    /// Sets the destination port.
    #[inline]
    pub fn set_dst_port(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::DST_PORT, v)
    }
    /// Sets the sequence number.
    #[inline]
    pub fn set_seq_number(&mut self, v: u32) {
        set_u32(self.buf.as_mut(), field::SEQ, v)
    }
    /// Sets the acknowledgment number.
    #[inline]
    pub fn set_ack_number(&mut self, v: u32) {
        set_u32(self.buf.as_mut(), field::ACK, v)
    }
    /// Sets the data offset from a header length in bytes (a multiple of 4, 20 to 60);
    /// the reserved bits are cleared.
    #[inline]
    pub fn set_header_len(&mut self, header_len: usize) {
        debug_assert!(
            header_len.is_multiple_of(4)
                && (HEADER_LEN..=HEADER_LEN + MAX_OPTIONS_LEN).contains(&header_len)
        );
        self.buf.as_mut()[field::OFF_RSV] = ((header_len / 4) as u8) << 4;
    }
    /// Sets the flag byte.
    #[inline]
    pub fn set_flags(&mut self, v: u8) {
        self.buf.as_mut()[field::FLAGS] = v;
    }
    /// Sets the window.
    #[inline]
    pub fn set_window_len(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::WINDOW, v)
    }
    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::CHECKSUM, v)
    }
    /// Sets the urgent pointer.
    #[inline]
    pub fn set_urgent_at(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::URGENT, v)
    }
    /// The option bytes, mutable.
    #[inline]
    pub fn options_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buf.as_mut()[HEADER_LEN..hl]
    }
    /// Everything after the header, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let hl = self.header_len();
        &mut self.buf.as_mut()[hl..]
    }
    /// Computes the checksum over the whole buffer with the pseudo-header sum `pseudo`.
    #[inline]
    pub fn fill_checksum_with(&mut self, pseudo: u16) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::add(pseudo, checksum::sum(self.buf.as_ref())));
        self.set_checksum(c);
    }
    /// Fills the checksum for a segment carried in IPv4 from `src` to `dst`.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: [u8; 4], dst: [u8; 4]) {
        let pseudo = pseudo_sum_v4(src, dst, self.buf.as_ref().len());
        self.fill_checksum_with(pseudo)
    }
    /// Fills the checksum for a segment carried in IPv6 from `src` to `dst`.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        let pseudo = pseudo_sum_v6(src, dst, self.buf.as_ref().len());
        self.fill_checksum_with(pseudo)
    }
}

/// Walks TCP options, yielding `(kind, data)` where `data` excludes kind and length.
/// `END` stops the walk; `NOP` yields `(NOP, [])`; a length below 2 or past the header
/// ends the walk with an error item.
pub struct OptionIter<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for OptionIter<'a> {
    type Item = Result<(u8, &'a [u8])>;
    fn next(&mut self) -> Option<Self::Item> {
        let (&kind, after) = self.rest.split_first()?;
        match kind {
            option::END => {
                self.rest = &[];
                None
            }
            option::NOP => {
                self.rest = after;
                Some(Ok((kind, &[])))
            }
            _ => {
                let len = after.first().map_or(0, |&l| l as usize);
                if len < 2 || len > self.rest.len() {
                    self.rest = &[];
                    return Some(Err(Error::Malformed {
                        what: "tcp",
                        field: "option length",
                    }));
                }
                let data = &self.rest[2..len];
                self.rest = &self.rest[len..];
                Some(Ok((kind, data)))
            }
        }
    }
}

/// Up to 40 bytes of TCP options, stored inline so a repr never allocates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    len: u8,
    bytes: [u8; MAX_OPTIONS_LEN],
}

impl core::fmt::Debug for TcpOptions {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "TcpOptions({:02x?})", self.as_slice())
    }
}

impl Default for TcpOptions {
    fn default() -> Self {
        TcpOptions::NONE
    }
}

impl TcpOptions {
    /// No options.
    pub const NONE: TcpOptions = TcpOptions {
        len: 0,
        bytes: [0; MAX_OPTIONS_LEN],
    };

    /// Options from raw bytes; the length must be a multiple of 4 and at most 40.
    pub fn new(raw: &[u8]) -> Result<Self> {
        if raw.len() > MAX_OPTIONS_LEN || !raw.len().is_multiple_of(4) {
            return Err(Error::Malformed {
                what: "tcp",
                field: "options length",
            });
        }
        let mut o = TcpOptions::NONE;
        o.bytes[..raw.len()].copy_from_slice(raw);
        o.len = raw.len() as u8;
        Ok(o)
    }

    /// The option bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

/// The meaningful fields of a TCP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Sequence number.
    pub seq_number: u32,
    /// Acknowledgment number.
    pub ack_number: u32,
    /// Flag byte (see [`flags`]).
    pub flags: u8,
    /// Window (unscaled).
    pub window_len: u16,
    /// Urgent pointer.
    pub urgent_at: u16,
    /// Options, padded by the caller to a multiple of 4 bytes.
    pub options: TcpOptions,
    /// Bytes after the header.
    pub payload_len: usize,
}

impl TcpRepr {
    /// Reads a checked segment (the reserved bits are not kept).
    pub fn parse<T: AsRef<[u8]>>(p: &TcpPacket<T>) -> Result<TcpRepr> {
        Ok(TcpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            seq_number: p.seq_number(),
            ack_number: p.ack_number(),
            flags: p.flags(),
            window_len: p.window_len(),
            urgent_at: p.urgent_at(),
            options: TcpOptions::new(p.options())?,
            payload_len: p.payload().len(),
        })
    }

    /// 20 plus the options.
    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options.as_slice().len()
    }

    /// Header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Writes the header (options included) to the front of `p`'s buffer, which must hold
    /// `header_len()` bytes, with a zero checksum: write the payload, then call
    /// `fill_checksum_v4`/`fill_checksum_v6` on a view over exactly `buffer_len()` bytes.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut TcpPacket<T>) -> Result<()> {
        let hl = self.header_len();
        need("tcp", p.buf.as_ref(), hl)?;
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_seq_number(self.seq_number);
        p.set_ack_number(self.ack_number);
        p.set_header_len(hl);
        p.set_flags(self.flags);
        p.set_window_len(self.window_len);
        p.set_checksum(0);
        p.set_urgent_at(self.urgent_at);
        p.buf.as_mut()[HEADER_LEN..hl].copy_from_slice(self.options.as_slice());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4::Ipv4Packet;
    use proptest::prelude::*;

    /// scapy (an IPv4 packet, no Ethernet), options in the order Linux sends them:
    /// IP(src="10.0.0.5", dst="203.0.113.7", flags="DF")/TCP(sport=40000, dport=443, seq=0x5e1f2a3b, flags="S", window=64240,
    /// options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (2864342400, 0)), ("NOP", None), ("WScale", 7)])
    const TCP_SYN: [u8; 60] = [
        0x45, 0x00, 0x00, 0x3c, 0x1c, 0x46, 0x40, 0x00, 0x40, 0x06, 0xd8, 0x69, 0x0a, 0x00, 0x00,
        0x05, 0xcb, 0x00, 0x71, 0x07, 0x9c, 0x40, 0x01, 0xbb, 0x5e, 0x1f, 0x2a, 0x3b, 0x00, 0x00,
        0x00, 0x00, 0xa0, 0x02, 0xfa, 0xf0, 0xd0, 0x71, 0x00, 0x00, 0x02, 0x04, 0x05, 0xb4, 0x04,
        0x02, 0x08, 0x0a, 0xaa, 0xba, 0x65, 0x80, 0x00, 0x00, 0x00, 0x00, 0x01, 0x03, 0x03, 0x07,
    ];

    fn syn() -> (Ipv4Packet<&'static [u8]>, TcpPacket<&'static [u8]>) {
        let ip = Ipv4Packet::new_checked(&TCP_SYN[..]).unwrap();
        let tcp = TcpPacket::new_checked(&TCP_SYN[20..]).unwrap();
        (ip, tcp)
    }

    #[test]
    fn parses_a_syn_with_options() {
        let (ip, t) = syn();
        assert!(t.verify_checksum_v4(ip.src_bytes(), ip.dst_bytes()));
        assert_eq!((t.src_port(), t.dst_port()), (40000, 443));
        assert_eq!((t.seq_number(), t.ack_number()), (0x5e1f2a3b, 0));
        assert_eq!(t.flags(), flags::SYN);
        assert!(t.syn() && !t.ack() && !t.fin() && !t.rst() && !t.psh());
        assert!(!t.urg() && !t.ece() && !t.cwr());
        assert_eq!(
            (t.header_len(), t.window_len(), t.urgent_at()),
            (40, 64240, 0)
        );
        assert!(t.payload().is_empty());
        assert_eq!(t.mss(), Some(1460));
        let opts: Vec<_> = t.option_iter().map(|o| o.unwrap()).collect();
        assert_eq!(
            opts,
            vec![
                (option::MSS, &[0x05, 0xb4][..]),
                (option::SACK_PERMITTED, &[][..]),
                (option::TIMESTAMP, &[0xaa, 0xba, 0x65, 0x80, 0, 0, 0, 0][..]),
                (option::NOP, &[][..]),
                (option::WINDOW_SCALE, &[7][..]),
            ]
        );
    }

    #[test]
    fn rebuilds_the_syn_byte_for_byte() {
        let (ip, t) = syn();
        let r = TcpRepr::parse(&t).unwrap();
        assert_eq!(r.buffer_len(), 40);
        let mut buf = [0xeeu8; 40];
        let mut q = TcpPacket::new_unchecked(&mut buf[..]);
        r.emit(&mut q).unwrap();
        q.fill_checksum_v4(ip.src_bytes(), ip.dst_bytes());
        assert_eq!(q.checksum(), 0xd071);
        assert_eq!(&buf[..], &TCP_SYN[20..]);
    }

    #[test]
    fn ipv6_checksum_and_corruption() {
        let (_, t) = syn();
        let src: [u8; 16] = "fd63:6e73:0:1::a00:5"
            .parse::<core::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let dst: [u8; 16] = "fd63:6e73:ff::cb00:7107"
            .parse::<core::net::Ipv6Addr>()
            .unwrap()
            .octets();
        let mut buf = [0u8; 40];
        buf.copy_from_slice(t.as_bytes());
        let mut q = TcpPacket::new_unchecked(&mut buf[..]);
        q.fill_checksum_v6(&src, &dst);
        assert!(q.verify_checksum_v6(&src, &dst));
        assert!(!q.verify_checksum_v4([10, 0, 0, 5], [203, 0, 113, 7]));
        for i in 0..40 {
            let mut bad = buf;
            bad[i] ^= 0x80;
            assert!(
                !TcpPacket::new_unchecked(&bad[..]).verify_checksum_v6(&src, &dst),
                "{i}"
            );
        }
    }

    #[test]
    fn rejects_bad_offsets_and_options() {
        let (_, t) = syn();
        let seg = t.as_bytes();
        for n in 0..40 {
            assert!(TcpPacket::new_checked(&seg[..n]).is_err(), "{n}");
        }
        let mut bad = [0u8; 40];
        bad.copy_from_slice(seg);
        bad[12] = 0x40; // data offset 4
        assert!(matches!(
            TcpPacket::new_checked(&bad[..]),
            Err(Error::Malformed { .. })
        ));
        bad[12] = 0xf0; // 60 bytes of header in a 40-byte buffer
        assert!(matches!(
            TcpPacket::new_checked(&bad[..]),
            Err(Error::Truncated { .. })
        ));
        bad[12] = 0xa0;
        bad[21] = 0x40; // MSS option claims 64 bytes
        let p = TcpPacket::new_checked(&bad[..]).unwrap();
        assert!(p.option_iter().next().unwrap().is_err());
        assert_eq!(p.mss(), None);
        assert!(TcpOptions::new(&[1, 1, 1]).is_err());
        assert!(TcpOptions::new(&[1; 44]).is_err());
    }

    prop_compose! {
        fn arb_options()(words in 0usize..=10)(v in proptest::collection::vec(any::<u8>(), words * 4)) -> TcpOptions {
            TcpOptions::new(&v).unwrap()
        }
    }

    prop_compose! {
        fn arb_repr()(
            src_port in any::<u16>(), dst_port in any::<u16>(), seq_number in any::<u32>(),
            ack_number in any::<u32>(), flags in any::<u8>(), window_len in any::<u16>(),
            urgent_at in any::<u16>(), options in arb_options(), payload_len in 0usize..200,
        ) -> TcpRepr {
            TcpRepr { src_port, dst_port, seq_number, ack_number, flags, window_len, urgent_at, options, payload_len }
        }
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(repr in arb_repr(), src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), fill in any::<u8>()) {
            let mut buf = vec![fill; repr.buffer_len()];
            let mut q = TcpPacket::new_unchecked(&mut buf[..]);
            repr.emit(&mut q).unwrap();
            q.fill_checksum_v4(src, dst);
            let p = TcpPacket::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum_v4(src, dst));
            prop_assert_eq!(TcpRepr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..80), fix in any::<bool>()) {
            if fix && bytes.len() >= HEADER_LEN {
                // A data offset that fits, so that the option walk sees random options.
                let words = (bytes.len() / 4).min(15) as u8;
                bytes[12] = (bytes[12] & 0x0f) | (words << 4);
            }
            if let Ok(p) = TcpPacket::new_checked(&bytes[..]) {
                let _ = TcpRepr::parse(&p);
                let _ = (p.src_port(), p.dst_port(), p.seq_number(), p.ack_number(), p.reserved());
                let _ = (p.flags(), p.window_len(), p.checksum(), p.urgent_at(), p.payload(), p.mss());
                for o in p.option_iter() {
                    let _ = o;
                }
                let _ = (p.verify_checksum_v4([0; 4], [0; 4]), p.verify_checksum_v6(&[0; 16], &[0; 16]));
            }
        }
    }
}
