//! UDP (RFC 768): header view, checksum over the IPv4 or IPv6 pseudo-header, and a repr.
//!
//! Over IPv4 a zero checksum field means "no checksum" ([`UdpPacket::has_checksum`]);
//! over IPv6 it is invalid (RFC 8200 section 8.1) and a computed zero is sent as 0xffff.

use crate::{checksum, get_u16, need, set_u16, Error, IpProtocol, Result};

/// Ports, length, checksum.
pub const HEADER_LEN: usize = 8;

mod field {
    pub const SRC_PORT: usize = 0;
    pub const DST_PORT: usize = 2;
    pub const LEN: usize = 4;
    pub const CHECKSUM: usize = 6;
}

/// Well-known ports Canopy answers on.
pub mod port {
    /// DHCPv4 server.
    pub const DHCP_SERVER: u16 = 67;
    /// DHCPv4 client.
    pub const DHCP_CLIENT: u16 = 68;
    /// DNS.
    pub const DNS: u16 = 53;
    /// Geneve (RFC 8926).
    pub const GENEVE: u16 = 6081;
}

/// A view over a UDP datagram.
#[derive(Debug, Clone, Copy)]
pub struct UdpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> UdpPacket<T> {
    /// Wraps `buf` without checking it; getters may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buf: T) -> Self {
        UdpPacket { buf }
    }

    /// Wraps `buf` after checking that the header fits, that the length field covers the
    /// header and that `buf` holds the length it announces (bytes past it are ignored).
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        need("udp", buf.as_ref(), HEADER_LEN)?;
        let p = UdpPacket { buf };
        let len = p.len() as usize;
        if len < HEADER_LEN {
            return Err(Error::Malformed {
                what: "udp",
                field: "length",
            });
        }
        need("udp", p.buf.as_ref(), len)?;
        Ok(p)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
    /// The whole buffer.
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
    /// The length field: header plus payload.
    #[inline]
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::LEN)
    }
    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::CHECKSUM)
    }
    /// False when the checksum field is zero: over IPv4 the sender computed no checksum.
    #[inline]
    pub fn has_checksum(&self) -> bool {
        self.checksum() != 0
    }
    /// The payload up to the length field.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..self.len() as usize]
    }
    /// True when the datagram (up to its length field) sums correctly with the
    /// pseudo-header sum `pseudo` (from `checksum::pseudo_v4`/`pseudo_v6` with protocol
    /// 17 and this datagram's length). A zero field gets no special treatment here.
    #[inline]
    pub fn verify_checksum_with(&self, pseudo: u16) -> bool {
        let b = &self.buf.as_ref()[..self.len() as usize];
        checksum::add(pseudo, checksum::sum(b)) == 0xffff
    }
    /// Verifies the checksum of a datagram carried in IPv4 from `src` to `dst`; a zero
    /// checksum field ("none") is accepted.
    #[inline]
    pub fn verify_checksum_v4(&self, src: [u8; 4], dst: [u8; 4]) -> bool {
        !self.has_checksum()
            || self.verify_checksum_with(checksum::pseudo_v4(
                src,
                dst,
                IpProtocol::UDP.0,
                self.len(),
            ))
    }
    /// Verifies the checksum of a datagram carried in IPv6; a zero checksum field fails.
    #[inline]
    pub fn verify_checksum_v6(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        self.has_checksum()
            && self.verify_checksum_with(checksum::pseudo_v6(
                src,
                dst,
                IpProtocol::UDP.0,
                self.len() as u32,
            ))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> UdpPacket<T> {
    /// The whole buffer, mutable.
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
    /// Sets the length field.
    #[inline]
    pub fn set_len(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::LEN, v)
    }
    /// Sets the checksum field (0 means "none" over IPv4).
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::CHECKSUM, v)
    }
    /// The payload up to the length field, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let len = self.len() as usize;
        &mut self.buf.as_mut()[HEADER_LEN..len]
    }
    /// Computes the checksum over the datagram (up to its length field) with the
    /// pseudo-header sum `pseudo`; a result of zero is stored as 0xffff (RFC 768).
    #[inline]
    pub fn fill_checksum_with(&mut self, pseudo: u16) {
        self.set_checksum(0);
        let len = self.len() as usize;
        let c = checksum::finish(checksum::add(
            pseudo,
            checksum::sum(&self.buf.as_ref()[..len]),
        ));
        self.set_checksum(if c == 0 { 0xffff } else { c });
    }
    /// Fills the checksum for a datagram carried in IPv4 from `src` to `dst`.
    #[inline]
    pub fn fill_checksum_v4(&mut self, src: [u8; 4], dst: [u8; 4]) {
        let pseudo = checksum::pseudo_v4(src, dst, IpProtocol::UDP.0, self.len());
        self.fill_checksum_with(pseudo)
    }
    /// Fills the checksum for a datagram carried in IPv6 from `src` to `dst`.
    #[inline]
    pub fn fill_checksum_v6(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        let pseudo = checksum::pseudo_v6(src, dst, IpProtocol::UDP.0, self.len() as u32);
        self.fill_checksum_with(pseudo)
    }
}

/// The meaningful fields of a UDP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpRepr {
    /// Source port.
    pub src_port: u16,
    /// Destination port.
    pub dst_port: u16,
    /// Bytes after the header.
    pub payload_len: usize,
}

impl UdpRepr {
    /// Reads a checked datagram.
    pub fn parse<T: AsRef<[u8]>>(p: &UdpPacket<T>) -> Result<UdpRepr> {
        Ok(UdpRepr {
            src_port: p.src_port(),
            dst_port: p.dst_port(),
            payload_len: p.len() as usize - HEADER_LEN,
        })
    }

    /// 8.
    pub const fn header_len(&self) -> usize {
        HEADER_LEN
    }

    /// Header plus payload.
    pub const fn buffer_len(&self) -> usize {
        HEADER_LEN + self.payload_len
    }

    /// Writes the header (8 bytes) to the front of `p`'s buffer with a zero checksum:
    /// write the payload, then call `fill_checksum_v4`/`fill_checksum_v6` (or leave it
    /// zero over IPv4 for "no checksum").
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut UdpPacket<T>) -> Result<()> {
        let len = self.buffer_len();
        if len > u16::MAX as usize {
            return Err(Error::Malformed {
                what: "udp",
                field: "length",
            });
        }
        need("udp", p.buf.as_ref(), HEADER_LEN)?;
        p.set_src_port(self.src_port);
        p.set_dst_port(self.dst_port);
        p.set_len(len as u16);
        p.set_checksum(0);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4::Ipv4Packet;
    use crate::ipv6::Ipv6Packet;
    use proptest::prelude::*;

    /// scapy: IP(src="10.0.0.5", dst="192.0.2.53")/UDP(sport=51413, dport=53)/Raw(b"canopy-udp")
    const UDP_V4: [u8; 38] = [
        0x45, 0x00, 0x00, 0x26, 0x04, 0xd2, 0x00, 0x00, 0x40, 0x11, 0xa9, 0xbb, 0x0a, 0x00, 0x00,
        0x05, 0xc0, 0x00, 0x02, 0x35, 0xc8, 0xd5, 0x00, 0x35, 0x00, 0x12, 0x96, 0x55, 0x63, 0x61,
        0x6e, 0x6f, 0x70, 0x79, 0x2d, 0x75, 0x64, 0x70,
    ];

    /// scapy: IPv6(src="fd63:6e73:0:1::a00:5", dst="fd63:6e73:0:2::c000:235")/UDP(sport=51413, dport=53)/Raw(b"canopy-udp6")
    const UDP_V6: [u8; 59] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x13, 0x11, 0x40, 0xfd, 0x63, 0x6e, 0x73, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x05, 0xfd, 0x63, 0x6e, 0x73, 0x00, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0xc0, 0x00, 0x02, 0x35, 0xc8, 0xd5, 0x00, 0x35, 0x00,
        0x13, 0x88, 0xa1, 0x63, 0x61, 0x6e, 0x6f, 0x70, 0x79, 0x2d, 0x75, 0x64, 0x70, 0x36,
    ];

    #[test]
    fn parses_udp_over_ipv4() {
        let ip = Ipv4Packet::new_checked(&UDP_V4[..]).unwrap();
        let (src, dst) = (ip.src_bytes(), ip.dst_bytes());
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!((u.src_port(), u.dst_port(), u.len()), (51413, 53, 18));
        assert_eq!(u.payload(), b"canopy-udp");
        assert!(u.has_checksum() && u.verify_checksum_v4(src, dst));
        assert!(!u.verify_checksum_v4(dst, [192, 0, 2, 54]));
        assert_eq!(
            UdpRepr::parse(&u).unwrap(),
            UdpRepr {
                src_port: 51413,
                dst_port: 53,
                payload_len: 10
            }
        );

        // Rebuilt byte for byte.
        let mut buf = [0u8; 18];
        buf[8..].copy_from_slice(b"canopy-udp");
        let mut q = UdpPacket::new_unchecked(&mut buf[..]);
        UdpRepr::parse(&u).unwrap().emit(&mut q).unwrap();
        q.fill_checksum_v4(src, dst);
        assert_eq!(&buf[..], ip.payload());
    }

    #[test]
    fn parses_udp_over_ipv6() {
        let ip = Ipv6Packet::new_checked(&UDP_V6[..]).unwrap();
        let (src, dst) = (*ip.src_bytes(), *ip.dst_bytes());
        let u = UdpPacket::new_checked(ip.payload()).unwrap();
        assert_eq!(u.payload(), b"canopy-udp6");
        assert!(u.verify_checksum_v6(&src, &dst));
        let pseudo = checksum::pseudo_v6(&src, &dst, 17, u.len() as u32);
        assert!(u.verify_checksum_with(pseudo));
        let mut buf = [0u8; 19];
        buf.copy_from_slice(ip.payload());
        let mut q = UdpPacket::new_unchecked(&mut buf[..]);
        q.set_checksum(0);
        assert!(
            !q.verify_checksum_v6(&src, &dst),
            "zero is invalid over IPv6"
        );
        q.fill_checksum_v6(&src, &dst);
        assert_eq!(q.checksum(), 0x88a1);
    }

    #[test]
    fn zero_checksum_means_none_over_ipv4() {
        let ip = Ipv4Packet::new_checked(&UDP_V4[..]).unwrap();
        let mut buf = [0u8; 18];
        buf.copy_from_slice(ip.payload());
        let mut q = UdpPacket::new_unchecked(&mut buf[..]);
        q.set_checksum(0);
        assert!(!q.has_checksum());
        assert!(q.verify_checksum_v4([1, 2, 3, 4], [5, 6, 7, 8]));
    }

    #[test]
    fn computed_zero_is_sent_as_ffff() {
        // Choose the payload word so that the whole sum is 0xffff: the checksum is zero.
        let (src, dst) = ([10, 0, 0, 5], [10, 0, 0, 1]);
        let mut buf = [0u8; 10];
        let repr = UdpRepr {
            src_port: 1000,
            dst_port: 2000,
            payload_len: 2,
        };
        repr.emit(&mut UdpPacket::new_unchecked(&mut buf[..]))
            .unwrap();
        let pseudo = checksum::pseudo_v4(src, dst, 17, 10);
        let s = checksum::add(pseudo, checksum::sum(&buf));
        buf[8..10].copy_from_slice(&(!s).to_be_bytes());
        let mut q = UdpPacket::new_unchecked(&mut buf[..]);
        q.fill_checksum_v4(src, dst);
        assert_eq!(q.checksum(), 0xffff);
        assert!(q.verify_checksum_v4(src, dst));
    }

    #[test]
    fn rejects_bad_lengths() {
        let ip = Ipv4Packet::new_checked(&UDP_V4[..]).unwrap();
        let udp = ip.payload();
        for n in 0..udp.len() {
            assert!(UdpPacket::new_checked(&udp[..n]).is_err(), "{n}");
        }
        let mut bad = [0u8; 18];
        bad.copy_from_slice(udp);
        bad[5] = 7; // length 7 < header
        assert!(matches!(
            UdpPacket::new_checked(&bad[..]),
            Err(Error::Malformed { .. })
        ));
        bad[5] = 12; // shorter than the buffer: fine, the rest is ignored
        assert_eq!(UdpPacket::new_checked(&bad[..]).unwrap().payload(), b"cano");
    }

    #[test]
    fn corrupted_byte_fails_verification() {
        let ip = Ipv4Packet::new_checked(&UDP_V4[..]).unwrap();
        let (src, dst) = (ip.src_bytes(), ip.dst_bytes());
        for i in 0..18 {
            let mut bad = [0u8; 18];
            bad.copy_from_slice(ip.payload());
            bad[i] ^= 0x04;
            if i == 4 || i == 5 {
                continue; // the length is checked by new_checked instead
            }
            assert!(
                !UdpPacket::new_unchecked(&bad[..]).verify_checksum_v4(src, dst),
                "{i}"
            );
        }
    }

    prop_compose! {
        fn arb_repr()(src_port in any::<u16>(), dst_port in any::<u16>(), payload_len in 0usize..300) -> UdpRepr {
            UdpRepr { src_port, dst_port, payload_len }
        }
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(repr in arb_repr(), src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(),
                                src6 in any::<[u8; 16]>(), dst6 in any::<[u8; 16]>(), fill in any::<u8>()) {
            let mut buf = vec![fill; repr.buffer_len()];
            let mut q = UdpPacket::new_unchecked(&mut buf[..]);
            repr.emit(&mut q).unwrap();
            q.fill_checksum_v4(src, dst);
            let p = UdpPacket::new_checked(&buf[..]).unwrap();
            prop_assert!(p.has_checksum() && p.verify_checksum_v4(src, dst));
            prop_assert_eq!(UdpRepr::parse(&p).unwrap(), repr);
            let mut q = UdpPacket::new_unchecked(&mut buf[..]);
            q.fill_checksum_v6(&src6, &dst6);
            prop_assert!(q.verify_checksum_v6(&src6, &dst6));
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..40), fix in any::<bool>()) {
            if fix && bytes.len() >= HEADER_LEN {
                let n = bytes.len() as u16;
                bytes[4..6].copy_from_slice(&n.to_be_bytes());
            }
            if let Ok(p) = UdpPacket::new_checked(&bytes[..]) {
                let _ = UdpRepr::parse(&p);
                let _ = (p.src_port(), p.dst_port(), p.len(), p.checksum(), p.has_checksum(), p.payload());
                let _ = (p.verify_checksum_v4([0; 4], [0; 4]), p.verify_checksum_v6(&[0; 16], &[0; 16]));
            }
        }
    }
}
