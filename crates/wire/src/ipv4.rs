//! IPv4 (RFC 791): header view with options, and a repr for building packets.

use crate::{checksum, get_u16, need, set_u16, Error, IpProtocol, Result};
use core::net::Ipv4Addr;

pub const HEADER_LEN: usize = 20;
pub const MAX_OPTIONS_LEN: usize = 40;

mod field {
    pub const VER_IHL: usize = 0;
    pub const TOS: usize = 1;
    pub const LEN: usize = 2;
    pub const IDENT: usize = 4;
    pub const FLG_OFF: usize = 6;
    pub const TTL: usize = 8;
    pub const PROTOCOL: usize = 9;
    pub const CHECKSUM: usize = 10;
    pub const SRC: usize = 12;
    pub const DST: usize = 16;
}

const FLAG_DF: u16 = 0x4000;
const FLAG_MF: u16 = 0x2000;
const OFFSET_MASK: u16 = 0x1fff;

/// Option types Canopy looks at.
pub mod option {
    pub const END: u8 = 0;
    pub const NOP: u8 = 1;
    /// Loose source and record route.
    pub const LSRR: u8 = 131;
    /// Strict source and record route.
    pub const SSRR: u8 = 137;
    pub const RECORD_ROUTE: u8 = 7;
    pub const ROUTER_ALERT: u8 = 148;
}

/// A view over an IPv4 header and the packet it starts.
#[derive(Debug, Clone, Copy)]
pub struct Ipv4Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv4Packet<T> {
    /// Wraps `buf` without checking it; getters may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buf: T) -> Self {
        Ipv4Packet { buf }
    }

    /// Wraps `buf` after checking the version, that the header and the total length fit
    /// in `buf`, and that the total length covers the header. Bytes after the total length
    /// (link-layer padding) are allowed and ignored by [`payload`](Self::payload).
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        let b = buf.as_ref();
        need("ipv4", b, HEADER_LEN)?;
        let p = Ipv4Packet { buf };
        if p.version() != 4 {
            return Err(Error::Malformed {
                what: "ipv4",
                field: "version",
            });
        }
        let hl = p.header_len();
        if hl < HEADER_LEN {
            return Err(Error::Malformed {
                what: "ipv4",
                field: "ihl",
            });
        }
        let b = p.buf.as_ref();
        need("ipv4", b, hl)?;
        let tl = p.total_len() as usize;
        if tl < hl {
            return Err(Error::Malformed {
                what: "ipv4",
                field: "total length",
            });
        }
        need("ipv4", b, tl)?;
        Ok(p)
    }

    pub fn into_inner(self) -> T {
        self.buf
    }

    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    #[inline]
    pub fn version(&self) -> u8 {
        self.buf.as_ref()[field::VER_IHL] >> 4
    }
    /// Header length in bytes (IHL * 4).
    #[inline]
    pub fn header_len(&self) -> usize {
        ((self.buf.as_ref()[field::VER_IHL] & 0x0f) as usize) * 4
    }
    /// The whole type-of-service byte (DSCP << 2 | ECN).
    #[inline]
    pub fn tos(&self) -> u8 {
        self.buf.as_ref()[field::TOS]
    }
    #[inline]
    pub fn dscp(&self) -> u8 {
        self.tos() >> 2
    }
    #[inline]
    pub fn ecn(&self) -> u8 {
        self.tos() & 0x03
    }
    #[inline]
    pub fn total_len(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::LEN)
    }
    #[inline]
    pub fn ident(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::IDENT)
    }
    #[inline]
    fn flags_offset(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::FLG_OFF)
    }
    /// The reserved ("evil") bit.
    #[inline]
    pub fn reserved_flag(&self) -> bool {
        self.flags_offset() & 0x8000 != 0
    }
    #[inline]
    pub fn dont_frag(&self) -> bool {
        self.flags_offset() & FLAG_DF != 0
    }
    #[inline]
    pub fn more_frags(&self) -> bool {
        self.flags_offset() & FLAG_MF != 0
    }
    /// Fragment offset in 8-octet units.
    #[inline]
    pub fn frag_offset(&self) -> u16 {
        self.flags_offset() & OFFSET_MASK
    }
    /// True for any fragment of a fragmented datagram (first, middle or last).
    #[inline]
    pub fn is_fragment(&self) -> bool {
        self.flags_offset() & (FLAG_MF | OFFSET_MASK) != 0
    }
    #[inline]
    pub fn ttl(&self) -> u8 {
        self.buf.as_ref()[field::TTL]
    }
    #[inline]
    pub fn protocol(&self) -> IpProtocol {
        IpProtocol(self.buf.as_ref()[field::PROTOCOL])
    }
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::CHECKSUM)
    }
    #[inline]
    pub fn src_bytes(&self) -> [u8; 4] {
        // One bounds check, not four: small enough that it is always inlined.
        let b = &self.buf.as_ref()[field::SRC..field::SRC + 4];
        [b[0], b[1], b[2], b[3]]
    }
    #[inline]
    pub fn dst_bytes(&self) -> [u8; 4] {
        // One bounds check, not four: small enough that it is always inlined.
        let b = &self.buf.as_ref()[field::DST..field::DST + 4];
        [b[0], b[1], b[2], b[3]]
    }
    #[inline]
    pub fn src(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.src_bytes())
    }
    #[inline]
    pub fn dst(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.dst_bytes())
    }
    /// The options bytes (possibly empty).
    #[inline]
    pub fn options(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..self.header_len()]
    }
    /// The payload up to the total length (link padding excluded).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..self.total_len() as usize]
    }
    /// True when the header checksum verifies. (Inlined: the translator checks every
    /// packet's header, and LLVM stopped inlining it on its own once the agent grew.)
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(&self.buf.as_ref()[..self.header_len()]) == 0
    }

    /// Iterates over the options; a malformed option ends the walk with an error item.
    pub fn option_iter(&self) -> OptionIter<'_> {
        OptionIter {
            rest: self.options(),
        }
    }

    /// True if the header carries a loose or strict source route whose pointer still
    /// points inside the route data, i.e. a hop is left to visit (RFC 7915 section 4.1
    /// says such packets are dropped). A malformed option list counts as such a route:
    /// the packet cannot be safely forwarded either way.
    pub fn has_unexpired_source_route(&self) -> bool {
        for opt in self.option_iter() {
            match opt {
                Ok((option::LSRR | option::SSRR, data)) => {
                    // data = [pointer, route...]; the pointer is 1-based from the option
                    // start, so the route starts at pointer 4, and the option (length
                    // data.len() + 2) is exhausted once the pointer exceeds its length.
                    let len = data.len() + 2;
                    if let Some(&ptr) = data.first() {
                        if (ptr as usize) <= len {
                            return true;
                        }
                    }
                }
                Ok(_) => {}
                Err(_) => return true,
            }
        }
        false
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv4Packet<T> {
    #[inline]
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    #[inline]
    pub fn set_version_and_header_len(&mut self, header_len: usize) {
        debug_assert!(header_len.is_multiple_of(4) && (HEADER_LEN..=60).contains(&header_len));
        self.buf.as_mut()[field::VER_IHL] = 0x40 | (header_len / 4) as u8;
    }
    #[inline]
    pub fn set_tos(&mut self, v: u8) {
        self.buf.as_mut()[field::TOS] = v;
    }
    #[inline]
    pub fn set_total_len(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::LEN, v)
    }
    #[inline]
    pub fn set_ident(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::IDENT, v)
    }
    /// Sets DF, MF and the fragment offset (8-octet units); the reserved bit is cleared.
    #[inline]
    pub fn set_flags_offset(&mut self, dont_frag: bool, more_frags: bool, offset: u16) {
        let v = (offset & OFFSET_MASK)
            | if dont_frag { FLAG_DF } else { 0 }
            | if more_frags { FLAG_MF } else { 0 };
        set_u16(self.buf.as_mut(), field::FLG_OFF, v)
    }
    #[inline]
    pub fn set_ttl(&mut self, v: u8) {
        self.buf.as_mut()[field::TTL] = v;
    }
    #[inline]
    pub fn set_protocol(&mut self, p: IpProtocol) {
        self.buf.as_mut()[field::PROTOCOL] = p.0;
    }
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::CHECKSUM, v)
    }
    #[inline]
    pub fn set_src(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[field::SRC..field::SRC + 4].copy_from_slice(&a.octets());
    }
    #[inline]
    pub fn set_dst(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[field::DST..field::DST + 4].copy_from_slice(&a.octets());
    }
    /// Recomputes the header checksum over the header (options included).
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let hl = self.header_len();
        let c = checksum::checksum(&self.buf.as_ref()[..hl]);
        self.set_checksum(c);
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let (h, t) = (self.header_len(), self.total_len() as usize);
        &mut self.buf.as_mut()[h..t]
    }
}

/// Walks IPv4 options, yielding `(type, data)` where `data` excludes type and length.
/// `END` stops the walk; `NOP` yields `(NOP, [])`.
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
                let bad = Err(Error::Malformed {
                    what: "ipv4",
                    field: "option length",
                });
                let Some(&len) = after.first() else {
                    self.rest = &[];
                    return Some(bad);
                };
                let len = len as usize;
                if len < 2 || len > self.rest.len() {
                    self.rest = &[];
                    return Some(bad);
                }
                let data = &self.rest[2..len];
                self.rest = &self.rest[len..];
                Some(Ok((kind, data)))
            }
        }
    }
}

/// The meaningful fields of an IPv4 header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Repr {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub protocol: IpProtocol,
    pub ttl: u8,
    /// DSCP << 2 | ECN.
    pub tos: u8,
    pub ident: u16,
    pub dont_frag: bool,
    pub more_frags: bool,
    /// Fragment offset in 8-octet units.
    pub frag_offset: u16,
    /// Bytes after the header, up to the total length.
    pub payload_len: usize,
    /// Options, padded by the caller to a multiple of 4 bytes.
    pub options: Ipv4Options,
}

/// Up to 40 bytes of IPv4 options, stored inline so a repr never allocates.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Ipv4Options {
    len: u8,
    bytes: [u8; MAX_OPTIONS_LEN],
}

impl core::fmt::Debug for Ipv4Options {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Ipv4Options({:02x?})", self.as_slice())
    }
}

impl Default for Ipv4Options {
    fn default() -> Self {
        Ipv4Options::NONE
    }
}

impl Ipv4Options {
    pub const NONE: Ipv4Options = Ipv4Options {
        len: 0,
        bytes: [0; MAX_OPTIONS_LEN],
    };

    /// Options from raw bytes; the length must be a multiple of 4 and at most 40.
    pub fn new(raw: &[u8]) -> Result<Self> {
        if raw.len() > MAX_OPTIONS_LEN || !raw.len().is_multiple_of(4) {
            return Err(Error::Malformed {
                what: "ipv4",
                field: "options length",
            });
        }
        let mut o = Ipv4Options::NONE;
        o.bytes[..raw.len()].copy_from_slice(raw);
        o.len = raw.len() as u8;
        Ok(o)
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.bytes[..self.len as usize]
    }
}

impl Ipv4Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv4Packet<T>) -> Result<Ipv4Repr> {
        Ok(Ipv4Repr {
            src: p.src(),
            dst: p.dst(),
            protocol: p.protocol(),
            ttl: p.ttl(),
            tos: p.tos(),
            ident: p.ident(),
            dont_frag: p.dont_frag(),
            more_frags: p.more_frags(),
            frag_offset: p.frag_offset(),
            payload_len: p.total_len() as usize - p.header_len(),
            options: Ipv4Options::new(p.options())?,
        })
    }

    pub fn header_len(&self) -> usize {
        HEADER_LEN + self.options.as_slice().len()
    }

    /// Header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Writes the header (checksum included) to the front of `p`'s buffer, which must
    /// hold at least `header_len()` bytes. The payload is the caller's.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv4Packet<T>) -> Result<()> {
        let total = self.buffer_len();
        if total > u16::MAX as usize {
            return Err(Error::Malformed {
                what: "ipv4",
                field: "total length",
            });
        }
        need("ipv4", p.buf.as_ref(), self.header_len())?;
        p.set_version_and_header_len(self.header_len());
        p.set_tos(self.tos);
        p.set_total_len(total as u16);
        p.set_ident(self.ident);
        p.set_flags_offset(self.dont_frag, self.more_frags, self.frag_offset);
        p.set_ttl(self.ttl);
        p.set_protocol(self.protocol);
        p.set_src(self.src);
        p.set_dst(self.dst);
        p.buf.as_mut()[HEADER_LEN..self.header_len()].copy_from_slice(self.options.as_slice());
        p.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// An ICMP echo request 192.0.2.2 -> 192.0.2.1 as ping(8) sends it.
    const PING: [u8; 28] = [
        0x45, 0x00, 0x00, 0x1c, 0x6e, 0x2b, 0x40, 0x00, 0x40, 0x01, 0x48, 0xb2, 0xc0, 0x00, 0x02,
        0x02, 0xc0, 0x00, 0x02, 0x01, 0x08, 0x00, 0xf7, 0xfc, 0x00, 0x03, 0x00, 0x00,
    ];

    #[test]
    fn parses_a_ping_header() {
        let p = Ipv4Packet::new_checked(&PING[..]).unwrap();
        assert!(p.verify_checksum());
        assert_eq!(p.src(), Ipv4Addr::new(192, 0, 2, 2));
        assert_eq!(p.dst(), Ipv4Addr::new(192, 0, 2, 1));
        assert_eq!(p.protocol(), IpProtocol::ICMP);
        assert_eq!(p.ttl(), 64);
        assert!(p.dont_frag() && !p.is_fragment());
        assert_eq!(p.payload().len(), 8);
    }

    #[test]
    fn rejects_truncated_and_inconsistent_headers() {
        for n in 0..PING.len() {
            assert!(Ipv4Packet::new_checked(&PING[..n]).is_err(), "len {n}");
        }
        let mut bad = PING;
        bad[0] = 0x44; // IHL 4 < 5
        assert!(Ipv4Packet::new_checked(&bad[..]).is_err());
        let mut bad = PING;
        bad[0] = 0x65; // version 6
        assert!(Ipv4Packet::new_checked(&bad[..]).is_err());
        let mut bad = PING;
        bad[3] = 0x10; // total length 16 < header
        assert!(Ipv4Packet::new_checked(&bad[..]).is_err());
        let mut bad = PING;
        bad[0] = 0x46; // IHL 6 with total length 28 is fine, with 20 it is not
        bad[3] = 20;
        assert!(Ipv4Packet::new_checked(&bad[..]).is_err());
    }

    #[test]
    fn source_routes() {
        let mut buf = [0u8; 28];
        let repr = Ipv4Repr {
            src: Ipv4Addr::new(192, 0, 2, 1),
            dst: Ipv4Addr::new(192, 0, 2, 2),
            protocol: IpProtocol::UDP,
            ttl: 5,
            tos: 0,
            ident: 1,
            dont_frag: false,
            more_frags: false,
            frag_offset: 0,
            payload_len: 0,
            // LSRR, length 7, pointer 4 (one hop left), route 198.51.100.1, then END.
            options: Ipv4Options::new(&[131, 7, 4, 198, 51, 100, 1, 0]).unwrap(),
        };
        repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(p.has_unexpired_source_route());
        buf[22] = 8; // pointer past the end: the route is used up
        let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
        assert!(!p.has_unexpired_source_route());
    }

    pub(crate) fn arb_options() -> impl Strategy<Value = Ipv4Options> {
        (0usize..=10).prop_flat_map(|words| {
            proptest::collection::vec(any::<u8>(), words * 4)
                .prop_map(|v| Ipv4Options::new(&v).unwrap())
        })
    }

    prop_compose! {
        pub(crate) fn arb_repr()(
            src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), protocol in any::<u8>(),
            ttl in any::<u8>(), tos in any::<u8>(), ident in any::<u16>(),
            dont_frag in any::<bool>(), more_frags in any::<bool>(), frag_offset in 0u16..0x2000,
            payload_len in 0usize..200, options in arb_options(),
        ) -> Ipv4Repr {
            Ipv4Repr {
                src: src.into(), dst: dst.into(), protocol: IpProtocol(protocol), ttl, tos, ident,
                dont_frag, more_frags, frag_offset, payload_len, options,
            }
        }
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(repr in arb_repr()) {
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Ipv4Packet::new_unchecked(&mut buf[..])).unwrap();
            let p = Ipv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(Ipv4Repr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..80)) {
            if let Ok(p) = Ipv4Packet::new_checked(&bytes[..]) {
                let _ = Ipv4Repr::parse(&p);
                let _ = p.payload();
                let _ = p.has_unexpired_source_route();
                let _ = p.verify_checksum();
            }
        }
    }
}
