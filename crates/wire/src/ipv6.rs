//! IPv6 (RFC 8200): the fixed header, the fragment header, and a bounded walk over the
//! extension header chain.

use crate::{get_u16, get_u32, need, set_u16, set_u32, Error, IpProtocol, Result};
use core::net::Ipv6Addr;

pub const HEADER_LEN: usize = 40;
pub const FRAG_HEADER_LEN: usize = 8;
/// The minimum link MTU every IPv6 path supports (RFC 8200 section 5).
pub const MIN_MTU: usize = 1280;
/// Extension headers walked before a packet is refused as unreasonable.
pub const MAX_EXT_HEADERS: usize = 8;

mod field {
    pub const VER_TC_FLOW: usize = 0;
    pub const PAYLOAD_LEN: usize = 4;
    pub const NEXT_HEADER: usize = 6;
    pub const HOP_LIMIT: usize = 7;
    pub const SRC: usize = 8;
    pub const DST: usize = 24;
}

/// A view over an IPv6 header and the packet it starts.
#[derive(Debug, Clone, Copy)]
pub struct Ipv6Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Ipv6Packet<T> {
    #[inline]
    pub const fn new_unchecked(buf: T) -> Self {
        Ipv6Packet { buf }
    }

    /// Wraps `buf` after checking the version and that the payload length fits in `buf`.
    /// Trailing bytes past the payload length are allowed and ignored.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        need("ipv6", buf.as_ref(), HEADER_LEN)?;
        let p = Ipv6Packet { buf };
        if p.version() != 6 {
            return Err(Error::Malformed {
                what: "ipv6",
                field: "version",
            });
        }
        need(
            "ipv6",
            p.buf.as_ref(),
            HEADER_LEN + p.payload_len() as usize,
        )?;
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
        self.buf.as_ref()[0] >> 4
    }
    #[inline]
    pub fn traffic_class(&self) -> u8 {
        (get_u32(self.buf.as_ref(), field::VER_TC_FLOW) >> 20) as u8
    }
    #[inline]
    pub fn flow_label(&self) -> u32 {
        get_u32(self.buf.as_ref(), field::VER_TC_FLOW) & 0x000f_ffff
    }
    #[inline]
    pub fn payload_len(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::PAYLOAD_LEN)
    }
    #[inline]
    pub fn next_header(&self) -> IpProtocol {
        IpProtocol(self.buf.as_ref()[field::NEXT_HEADER])
    }
    #[inline]
    pub fn hop_limit(&self) -> u8 {
        self.buf.as_ref()[field::HOP_LIMIT]
    }
    #[inline]
    pub fn src_bytes(&self) -> &[u8; 16] {
        self.buf.as_ref()[field::SRC..field::SRC + 16]
            .try_into()
            .unwrap()
    }
    #[inline]
    pub fn dst_bytes(&self) -> &[u8; 16] {
        self.buf.as_ref()[field::DST..field::DST + 16]
            .try_into()
            .unwrap()
    }
    #[inline]
    pub fn src(&self) -> Ipv6Addr {
        Ipv6Addr::from(*self.src_bytes())
    }
    #[inline]
    pub fn dst(&self) -> Ipv6Addr {
        Ipv6Addr::from(*self.dst_bytes())
    }
    /// Everything after the fixed header up to the payload length (extension headers
    /// included).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..HEADER_LEN + self.payload_len() as usize]
    }

    /// Walks the extension header chain; see [`Ipv6Exts`].
    #[inline]
    pub fn exts(&self) -> Result<Ipv6Exts> {
        Ipv6Exts::walk(self.next_header(), self.payload())
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Ipv6Packet<T> {
    #[inline]
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    /// Sets version 6, the traffic class and the flow label (20 bits) in one store.
    #[inline]
    pub fn set_version_tc_flow(&mut self, traffic_class: u8, flow_label: u32) {
        let v = (6u32 << 28) | ((traffic_class as u32) << 20) | (flow_label & 0x000f_ffff);
        set_u32(self.buf.as_mut(), field::VER_TC_FLOW, v)
    }
    #[inline]
    pub fn set_payload_len(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::PAYLOAD_LEN, v)
    }
    #[inline]
    pub fn set_next_header(&mut self, p: IpProtocol) {
        self.buf.as_mut()[field::NEXT_HEADER] = p.0;
    }
    #[inline]
    pub fn set_hop_limit(&mut self, v: u8) {
        self.buf.as_mut()[field::HOP_LIMIT] = v;
    }
    #[inline]
    pub fn set_src(&mut self, a: &[u8; 16]) {
        self.buf.as_mut()[field::SRC..field::SRC + 16].copy_from_slice(a);
    }
    #[inline]
    pub fn set_dst(&mut self, a: &[u8; 16]) {
        self.buf.as_mut()[field::DST..field::DST + 16].copy_from_slice(a);
    }
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let end = HEADER_LEN + self.payload_len() as usize;
        &mut self.buf.as_mut()[HEADER_LEN..end]
    }
}

/// The fragment header's fields (RFC 8200 section 4.5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FragRepr {
    pub next_header: IpProtocol,
    /// Offset in 8-octet units (13 bits).
    pub offset: u16,
    pub more_frags: bool,
    pub ident: u32,
}

impl FragRepr {
    /// Parses a fragment header at the start of `b`.
    pub fn parse(b: &[u8]) -> Result<FragRepr> {
        need("ipv6 fragment header", b, FRAG_HEADER_LEN)?;
        let off = get_u16(b, 2);
        Ok(FragRepr {
            next_header: IpProtocol(b[0]),
            offset: off >> 3,
            more_frags: off & 1 != 0,
            ident: get_u32(b, 4),
        })
    }

    /// Writes the header to the first 8 bytes of `b` (reserved fields zero).
    pub fn emit(&self, b: &mut [u8]) -> Result<()> {
        need("ipv6 fragment header", b, FRAG_HEADER_LEN)?;
        b[0] = self.next_header.0;
        b[1] = 0;
        set_u16(b, 2, (self.offset << 3) | self.more_frags as u16);
        set_u32(b, 4, self.ident);
        Ok(())
    }

    /// True for the first fragment (offset 0), which carries the upper-layer header;
    /// also true for an "atomic" fragment (offset 0, M clear).
    pub fn is_first(&self) -> bool {
        self.offset == 0
    }
}

/// What a walk of the extension header chain found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Exts {
    /// The protocol of what follows the last extension header.
    pub upper: IpProtocol,
    /// Offset of that upper-layer data from the start of the IPv6 payload (so the
    /// extension headers' total length).
    pub upper_offset: usize,
    /// The fragment header, if there is one, and its offset in the payload.
    pub frag: Option<(usize, FragRepr)>,
    /// Segments left of a routing header, if there is one.
    pub routing_segments_left: Option<u8>,
}

impl Ipv6Exts {
    /// Walks from `first` over `payload` past hop-by-hop, routing and destination options
    /// headers and the fragment header. Stops at the first other header (the upper
    /// layer), or after the fragment header of a non-first fragment (the rest is fragment
    /// data).
    pub fn walk(first: IpProtocol, payload: &[u8]) -> Result<Ipv6Exts> {
        let mut nh = first;
        let mut at = 0usize;
        let mut frag = None;
        let mut routing = None;
        for _ in 0..=MAX_EXT_HEADERS {
            if nh == IpProtocol::IPV6_FRAG {
                if frag.is_some() {
                    return Err(Error::Malformed {
                        what: "ipv6",
                        field: "second fragment header",
                    });
                }
                let f = FragRepr::parse(&payload[at..])?;
                frag = Some((at, f));
                at += FRAG_HEADER_LEN;
                nh = f.next_header;
                if !f.is_first() {
                    break;
                }
            } else if nh.is_skipped_ipv6_ext() {
                let b = &payload[at..];
                need("ipv6 extension header", b, 8)?;
                if nh == IpProtocol::HOPOPT && at != 0 {
                    return Err(Error::Malformed {
                        what: "ipv6",
                        field: "hop-by-hop options not first",
                    });
                }
                let len = (b[1] as usize + 1) * 8;
                need("ipv6 extension header", b, len)?;
                if nh == IpProtocol::IPV6_ROUTE {
                    routing = Some(b[3]);
                }
                nh = IpProtocol(b[0]);
                at += len;
            } else {
                return Ok(Ipv6Exts {
                    upper: nh,
                    upper_offset: at,
                    frag,
                    routing_segments_left: routing,
                });
            }
        }
        if frag.is_some_and(|(_, f)| !f.is_first()) {
            return Ok(Ipv6Exts {
                upper: nh,
                upper_offset: at,
                frag,
                routing_segments_left: routing,
            });
        }
        Err(Error::Unsupported {
            what: "ipv6",
            field: "extension header chain length",
        })
    }

    /// True when the upper-layer header is present (not a non-first fragment).
    pub fn has_upper_header(&self) -> bool {
        self.frag.is_none_or(|(_, f)| f.is_first())
    }
}

/// The fixed header's meaningful fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ipv6Repr {
    pub src: Ipv6Addr,
    pub dst: Ipv6Addr,
    pub next_header: IpProtocol,
    pub hop_limit: u8,
    pub traffic_class: u8,
    pub flow_label: u32,
    /// Bytes after the fixed header (extension headers included).
    pub payload_len: usize,
}

impl Ipv6Repr {
    pub fn parse<T: AsRef<[u8]>>(p: &Ipv6Packet<T>) -> Result<Ipv6Repr> {
        Ok(Ipv6Repr {
            src: p.src(),
            dst: p.dst(),
            next_header: p.next_header(),
            hop_limit: p.hop_limit(),
            traffic_class: p.traffic_class(),
            flow_label: p.flow_label(),
            payload_len: p.payload_len() as usize,
        })
    }

    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    pub fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the fixed header to the front of `p`'s buffer.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Ipv6Packet<T>) -> Result<()> {
        if self.payload_len > u16::MAX as usize {
            return Err(Error::Unsupported {
                what: "ipv6",
                field: "payload length (jumbogram)",
            });
        }
        if self.flow_label > 0x000f_ffff {
            return Err(Error::Malformed {
                what: "ipv6",
                field: "flow label",
            });
        }
        need("ipv6", p.buf.as_ref(), HEADER_LEN)?;
        p.set_version_tc_flow(self.traffic_class, self.flow_label);
        p.set_payload_len(self.payload_len as u16);
        p.set_next_header(self.next_header);
        p.set_hop_limit(self.hop_limit);
        p.set_src(&self.src.octets());
        p.set_dst(&self.dst.octets());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    prop_compose! {
        fn arb_repr()(
            src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), nh in any::<u8>(),
            hop_limit in any::<u8>(), traffic_class in any::<u8>(), flow_label in 0u32..0x10_0000,
            payload_len in 0usize..300,
        ) -> Ipv6Repr {
            Ipv6Repr { src: src.into(), dst: dst.into(), next_header: IpProtocol(nh), hop_limit,
                traffic_class, flow_label, payload_len }
        }
    }

    fn header(nh: u8, payload: &[u8]) -> Vec<u8> {
        let repr = Ipv6Repr {
            src: "fd63:6e73::1".parse().unwrap(),
            dst: "fd63:6e73::2".parse().unwrap(),
            next_header: IpProtocol(nh),
            hop_limit: 64,
            traffic_class: 0,
            flow_label: 0,
            payload_len: payload.len(),
        };
        let mut b = vec![0u8; repr.buffer_len()];
        repr.emit(&mut Ipv6Packet::new_unchecked(&mut b[..]))
            .unwrap();
        b[HEADER_LEN..].copy_from_slice(payload);
        b
    }

    #[test]
    fn walks_hop_by_hop_dest_opts_and_fragment() {
        let mut payload = vec![];
        payload.extend_from_slice(&[60, 0, 1, 4, 0, 0, 0, 0]); // HBH -> dest opts, PadN
        payload.extend_from_slice(&[44, 1, 1, 12, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]); // dst opts (16 B) -> frag
        let f = FragRepr {
            next_header: IpProtocol::UDP,
            offset: 0,
            more_frags: true,
            ident: 0xdead_beef,
        };
        let mut fb = [0u8; 8];
        f.emit(&mut fb).unwrap();
        payload.extend_from_slice(&fb);
        payload.extend_from_slice(&[0u8; 8]); // UDP header
        let pkt = header(0, &payload);
        let p = Ipv6Packet::new_checked(&pkt[..]).unwrap();
        let e = p.exts().unwrap();
        assert_eq!(e.upper, IpProtocol::UDP);
        assert_eq!(e.upper_offset, 32);
        assert_eq!(e.frag, Some((24, f)));
        assert!(e.has_upper_header());
    }

    #[test]
    fn non_first_fragment_stops_the_walk() {
        let f = FragRepr {
            next_header: IpProtocol::TCP,
            offset: 185,
            more_frags: false,
            ident: 7,
        };
        let mut payload = [0u8; 16];
        f.emit(&mut payload).unwrap();
        let pkt = header(44, &payload);
        let e = Ipv6Packet::new_checked(&pkt[..]).unwrap().exts().unwrap();
        assert!(!e.has_upper_header());
        assert_eq!((e.upper, e.upper_offset), (IpProtocol::TCP, 8));
    }

    #[test]
    fn rejects_truncated_chains_and_headers() {
        let pkt = header(0, &[17, 1, 0, 0, 0, 0, 0, 0]); // HBH says 16 bytes, has 8
        let p = Ipv6Packet::new_checked(&pkt[..]).unwrap();
        assert!(p.exts().is_err());
        let mut short = header(17, &[0; 8]);
        short[5] = 9; // payload length past the buffer
        assert!(Ipv6Packet::new_checked(&short[..]).is_err());
        assert!(Ipv6Packet::new_checked(&short[..39]).is_err());
        let pkt = header(44, &[44, 0, 0, 0, 0, 0, 0, 0, 17, 0, 0, 0, 0, 0, 0, 0]);
        assert!(Ipv6Packet::new_checked(&pkt[..]).unwrap().exts().is_err());
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(repr in arb_repr()) {
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut Ipv6Packet::new_unchecked(&mut buf[..])).unwrap();
            let p = Ipv6Packet::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(Ipv6Repr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn frag_roundtrip(nh in any::<u8>(), offset in 0u16..0x2000, more_frags in any::<bool>(), ident in any::<u32>()) {
            let f = FragRepr { next_header: IpProtocol(nh), offset, more_frags, ident };
            let mut b = [0u8; 8];
            f.emit(&mut b).unwrap();
            prop_assert_eq!(FragRepr::parse(&b).unwrap(), f);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..120)) {
            if let Ok(p) = Ipv6Packet::new_checked(&bytes[..]) {
                let _ = p.exts();
                let _ = Ipv6Repr::parse(&p);
            }
        }
    }
}
