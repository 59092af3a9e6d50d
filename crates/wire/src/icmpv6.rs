//! ICMPv6 (RFC 4443, RFC 4884): the 8-byte header with its "rest of header" word read as
//! the message type makes it, and the checksum over the IPv6 pseudo-header.
//!
//! The view covers one ICMPv6 message exactly (the upper-layer data after the IPv6
//! extension headers), since the checksum covers every byte of the buffer. Every message
//! type Canopy handles has at least 8 bytes; shorter buffers are `Truncated`.

use crate::{checksum, get_u16, get_u32, need, set_u16, set_u32, IpProtocol, Result};

/// Type, code, checksum and the 4-byte rest of header.
pub const HEADER_LEN: usize = 8;
/// An error message must not make the invoking IPv6 packet exceed this (RFC 4443 2.4(c)).
pub const MAX_ERROR_PACKET: usize = crate::ipv6::MIN_MTU;

/// Destination unreachable (error).
pub const DEST_UNREACHABLE: u8 = 1;
/// Packet too big (error), carries the MTU.
pub const PACKET_TOO_BIG: u8 = 2;
/// Time exceeded (error).
pub const TIME_EXCEEDED: u8 = 3;
/// Parameter problem (error), carries a 32-bit pointer.
pub const PARAM_PROBLEM: u8 = 4;
/// Echo request.
pub const ECHO_REQUEST: u8 = 128;
/// Echo reply.
pub const ECHO_REPLY: u8 = 129;
/// Multicast listener query (RFC 2710, RFC 3810).
pub const MLD_QUERY: u8 = 130;
/// MLDv1 multicast listener report.
pub const MLD_REPORT: u8 = 131;
/// MLDv1 multicast listener done.
pub const MLD_DONE: u8 = 132;
/// Router solicitation (RFC 4861).
pub const ROUTER_SOLICIT: u8 = 133;
/// Router advertisement (RFC 4861).
pub const ROUTER_ADVERT: u8 = 134;
/// Neighbor solicitation (RFC 4861).
pub const NEIGHBOR_SOLICIT: u8 = 135;
/// Neighbor advertisement (RFC 4861).
pub const NEIGHBOR_ADVERT: u8 = 136;
/// Redirect (RFC 4861).
pub const REDIRECT: u8 = 137;
/// MLDv2 multicast listener report (RFC 3810).
pub const MLDV2_REPORT: u8 = 143;

/// Code values, by the message type they belong to.
pub mod code {
    /// Destination unreachable: no route to destination.
    pub const NO_ROUTE: u8 = 0;
    /// Destination unreachable: communication administratively prohibited.
    pub const ADMIN_PROHIBITED: u8 = 1;
    /// Destination unreachable: beyond scope of source address.
    pub const BEYOND_SCOPE: u8 = 2;
    /// Destination unreachable: address unreachable.
    pub const ADDR_UNREACHABLE: u8 = 3;
    /// Destination unreachable: port unreachable.
    pub const PORT_UNREACHABLE: u8 = 4;
    /// Destination unreachable: source address failed ingress/egress policy.
    pub const FAILED_POLICY: u8 = 5;
    /// Destination unreachable: reject route to destination.
    pub const REJECT_ROUTE: u8 = 6;
    /// Time exceeded: hop limit exceeded in transit.
    pub const HOP_LIMIT_EXCEEDED: u8 = 0;
    /// Time exceeded: fragment reassembly time exceeded.
    pub const REASSEMBLY_TIME_EXCEEDED: u8 = 1;
    /// Parameter problem: erroneous header field.
    pub const ERRONEOUS_HEADER: u8 = 0;
    /// Parameter problem: unrecognized next header type.
    pub const UNRECOGNIZED_NEXT_HEADER: u8 = 1;
    /// Parameter problem: unrecognized IPv6 option.
    pub const UNRECOGNIZED_OPTION: u8 = 2;
}

/// True for error messages (types 0-127, RFC 4443 section 2.1).
pub fn is_error(msg_type: u8) -> bool {
    msg_type < 128
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
    pub const LENGTH: usize = 4;
}

/// The pseudo-header sum for an ICMPv6 message of `len` bytes from `src` to `dst`.
#[inline]
pub fn pseudo_sum(src: &[u8; 16], dst: &[u8; 16], len: usize) -> u16 {
    checksum::pseudo_v6(src, dst, IpProtocol::ICMPV6.0, len as u32)
}

/// A view over one ICMPv6 message.
#[derive(Debug, Clone, Copy)]
pub struct Icmpv6Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Icmpv6Packet<T> {
    /// Wraps `buf` without checking it; getters may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buf: T) -> Self {
        Icmpv6Packet { buf }
    }

    /// Wraps `buf` after checking that the 8-byte header fits.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        need("icmpv6", buf.as_ref(), HEADER_LEN)?;
        Ok(Icmpv6Packet { buf })
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }
    /// The whole message.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }
    /// Message type.
    #[inline]
    pub fn msg_type(&self) -> u8 {
        self.buf.as_ref()[field::TYPE]
    }
    /// Code.
    #[inline]
    pub fn code(&self) -> u8 {
        self.buf.as_ref()[field::CODE]
    }
    /// Checksum field.
    #[inline]
    pub fn checksum(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::CHECKSUM)
    }
    /// True for an error message type.
    #[inline]
    pub fn is_error(&self) -> bool {
        is_error(self.msg_type())
    }
    /// The 4 bytes after the checksum, as one word.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        get_u32(self.buf.as_ref(), field::REST)
    }
    /// Echo request/reply: identifier.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::ECHO_IDENT)
    }
    /// Echo request/reply: sequence number.
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::ECHO_SEQ)
    }
    /// Packet too big: the MTU of the next-hop link.
    #[inline]
    pub fn mtu(&self) -> u32 {
        self.rest_of_header()
    }
    /// Parameter problem: offset of the error in the invoking packet.
    #[inline]
    pub fn pointer(&self) -> u32 {
        self.rest_of_header()
    }
    /// RFC 4884 length attribute of destination unreachable and time exceeded: the
    /// length of the quoted packet in 64-bit words (0 without an extension structure).
    #[inline]
    pub fn rfc4884_length(&self) -> u8 {
        self.buf.as_ref()[field::LENGTH]
    }
    /// Everything after the 8-byte header (echo data, the invoking packet of an error, or
    /// the body of an ND/MLD message after its first 4 bytes).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
    /// True when the checksum verifies given the pseudo-header sum `pseudo`
    /// (see [`pseudo_sum`]; its length must be this buffer's length).
    #[inline]
    pub fn verify_checksum_with(&self, pseudo: u16) -> bool {
        checksum::add(pseudo, checksum::sum(self.buf.as_ref())) == 0xffff
    }
    /// True when the checksum verifies for a message from `src` to `dst`.
    #[inline]
    pub fn verify_checksum(&self, src: &[u8; 16], dst: &[u8; 16]) -> bool {
        self.verify_checksum_with(pseudo_sum(src, dst, self.buf.as_ref().len()))
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv6Packet<T> {
    /// The whole message, mutable.
    #[inline]
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    /// Sets the message type.
    #[inline]
    pub fn set_msg_type(&mut self, v: u8) {
        self.buf.as_mut()[field::TYPE] = v;
    }
    /// Sets the code.
    #[inline]
    pub fn set_code(&mut self, v: u8) {
        self.buf.as_mut()[field::CODE] = v;
    }
    /// Sets the checksum field.
    #[inline]
    pub fn set_checksum(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::CHECKSUM, v)
    }
    /// Sets the 4 bytes after the checksum (MTU, pointer, ...).
    #[inline]
    pub fn set_rest_of_header(&mut self, v: u32) {
        set_u32(self.buf.as_mut(), field::REST, v)
    }
    /// Sets the echo identifier.
    #[inline]
    pub fn set_echo_ident(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::ECHO_IDENT, v)
    }
    /// Sets the echo sequence number.
    #[inline]
    pub fn set_echo_seq_no(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::ECHO_SEQ, v)
    }
    /// Sets the packet-too-big MTU.
    #[inline]
    pub fn set_mtu(&mut self, v: u32) {
        self.set_rest_of_header(v)
    }
    /// Sets the parameter-problem pointer.
    #[inline]
    pub fn set_pointer(&mut self, v: u32) {
        self.set_rest_of_header(v)
    }
    /// Sets the RFC 4884 length attribute (64-bit words).
    #[inline]
    pub fn set_rfc4884_length(&mut self, v: u8) {
        self.buf.as_mut()[field::LENGTH] = v;
    }
    /// Everything after the header, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[HEADER_LEN..]
    }
    /// Recomputes the checksum over the whole buffer given the pseudo-header sum.
    #[inline]
    pub fn fill_checksum_with(&mut self, pseudo: u16) {
        self.set_checksum(0);
        let c = checksum::finish(checksum::add(pseudo, checksum::sum(self.buf.as_ref())));
        self.set_checksum(c);
    }
    /// Recomputes the checksum for a message from `src` to `dst`.
    #[inline]
    pub fn fill_checksum(&mut self, src: &[u8; 16], dst: &[u8; 16]) {
        let pseudo = pseudo_sum(src, dst, self.buf.as_ref().len());
        self.fill_checksum_with(pseudo)
    }
}

/// The meaningful fields of an ICMPv6 header: type, code and the raw rest-of-header word,
/// which the constructors below lay out per message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv6Repr {
    /// Message type.
    pub msg_type: u8,
    /// Code.
    pub code: u8,
    /// The 4 bytes after the checksum, big-endian.
    pub rest_of_header: u32,
    /// Bytes after the 8-byte header.
    pub payload_len: usize,
}

impl Icmpv6Repr {
    /// An echo request.
    pub const fn echo_request(ident: u16, seq_no: u16, payload_len: usize) -> Self {
        Self::with(
            ECHO_REQUEST,
            0,
            ((ident as u32) << 16) | seq_no as u32,
            payload_len,
        )
    }
    /// An echo reply.
    pub const fn echo_reply(ident: u16, seq_no: u16, payload_len: usize) -> Self {
        Self::with(
            ECHO_REPLY,
            0,
            ((ident as u32) << 16) | seq_no as u32,
            payload_len,
        )
    }
    /// Destination unreachable with `code`; `quoted_len` bytes of the invoking packet.
    pub const fn dest_unreachable(code: u8, quoted_len: usize) -> Self {
        Self::with(DEST_UNREACHABLE, code, 0, quoted_len)
    }
    /// Packet too big, announcing `mtu`.
    pub const fn packet_too_big(mtu: u32, quoted_len: usize) -> Self {
        Self::with(PACKET_TOO_BIG, 0, mtu, quoted_len)
    }
    /// Time exceeded with `code`.
    pub const fn time_exceeded(code: u8, quoted_len: usize) -> Self {
        Self::with(TIME_EXCEEDED, code, 0, quoted_len)
    }
    /// Parameter problem with `code`, pointing at byte `pointer` of the invoking packet.
    pub const fn param_problem(code: u8, pointer: u32, quoted_len: usize) -> Self {
        Self::with(PARAM_PROBLEM, code, pointer, quoted_len)
    }
    const fn with(msg_type: u8, code: u8, rest_of_header: u32, payload_len: usize) -> Self {
        Icmpv6Repr {
            msg_type,
            code,
            rest_of_header,
            payload_len,
        }
    }

    /// Reads a checked message.
    pub fn parse<T: AsRef<[u8]>>(p: &Icmpv6Packet<T>) -> Result<Icmpv6Repr> {
        Ok(Icmpv6Repr {
            msg_type: p.msg_type(),
            code: p.code(),
            rest_of_header: p.rest_of_header(),
            payload_len: p.payload().len(),
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

    /// Writes the header to the front of `p`'s buffer (8 bytes) with a zero checksum:
    /// write the payload, then call [`Icmpv6Packet::fill_checksum`] on the message.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Icmpv6Packet<T>) -> Result<()> {
        need("icmpv6", p.buf.as_ref(), HEADER_LEN)?;
        p.set_msg_type(self.msg_type);
        p.set_code(self.code);
        p.set_checksum(0);
        p.set_rest_of_header(self.rest_of_header);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv6::Ipv6Packet;
    use proptest::prelude::*;

    /// scapy: IPv6(src="fd63:6e73:0:1::a00:5", dst="fd63:6e73:0:2::a00:1")/ICMPv6EchoRequest(id=0x1234, seq=7, data=b"canopy-ping6")
    const ICMPV6_ECHO: [u8; 60] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x14, 0x3a, 0x40, 0xfd, 0x63, 0x6e, 0x73, 0x00, 0x00, 0x00,
        0x01, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x05, 0xfd, 0x63, 0x6e, 0x73, 0x00, 0x00,
        0x00, 0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0x80, 0x00, 0x41, 0x5f, 0x12,
        0x34, 0x00, 0x07, 0x63, 0x61, 0x6e, 0x6f, 0x70, 0x79, 0x2d, 0x70, 0x69, 0x6e, 0x67, 0x36,
    ];

    /// scapy: IPv6(src="fd63:6e73:0:2::a00:1", dst="fd63:6e73:0:1::a00:5")/ICMPv6PacketTooBig(mtu=1280)/IPv6(src="fd63:6e73:0:1::a00:5", dst="2001:db8::7", plen=1460)/UDP(sport=4000, dport=5000, len=1460)
    /// (the invoking packet cut to its headers).
    const ICMPV6_TOO_BIG: [u8; 96] = [
        0x60, 0x00, 0x00, 0x00, 0x00, 0x38, 0x3a, 0x40, 0xfd, 0x63, 0x6e, 0x73, 0x00, 0x00, 0x00,
        0x02, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01, 0xfd, 0x63, 0x6e, 0x73, 0x00, 0x00,
        0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x05, 0x02, 0x00, 0x95, 0xfb, 0x00,
        0x00, 0x05, 0x00, 0x60, 0x00, 0x00, 0x00, 0x05, 0xb4, 0x11, 0x3f, 0xfd, 0x63, 0x6e, 0x73,
        0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x05, 0x20, 0x01, 0x0d,
        0xb8, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x07, 0x0f, 0xa0,
        0x13, 0x88, 0x05, 0xb4, 0x33, 0x6d,
    ];

    fn split(pkt: &[u8]) -> ([u8; 16], [u8; 16], &[u8]) {
        let ip = Ipv6Packet::new_checked(pkt).unwrap();
        assert_eq!(ip.next_header(), IpProtocol::ICMPV6);
        (*ip.src_bytes(), *ip.dst_bytes(), &pkt[40..])
    }

    #[test]
    fn parses_an_echo_request_and_answers_it() {
        let (src, dst, msg) = split(&ICMPV6_ECHO);
        let p = Icmpv6Packet::new_checked(msg).unwrap();
        assert!(p.verify_checksum(&src, &dst));
        assert!(!p.verify_checksum(&dst, &[0; 16]));
        assert_eq!((p.msg_type(), p.code()), (ECHO_REQUEST, 0));
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (0x1234, 7));
        assert_eq!(p.payload(), b"canopy-ping6");
        assert_eq!(
            Icmpv6Repr::parse(&p).unwrap(),
            Icmpv6Repr::echo_request(0x1234, 7, 12)
        );

        let mut buf = [0u8; 20];
        buf.copy_from_slice(msg);
        let mut q = Icmpv6Packet::new_unchecked(&mut buf[..]);
        Icmpv6Repr::echo_reply(0x1234, 7, 12).emit(&mut q).unwrap();
        q.fill_checksum(&dst, &src);
        assert!(q.verify_checksum(&dst, &src));
        // Swapping addresses leaves the pseudo sum alone; the type moved by 0x0100.
        assert_eq!(q.checksum(), 0x415f - 0x0100);
    }

    #[test]
    fn parses_packet_too_big() {
        let (src, dst, msg) = split(&ICMPV6_TOO_BIG);
        let p = Icmpv6Packet::new_checked(msg).unwrap();
        assert!(p.verify_checksum(&src, &dst) && p.is_error());
        assert_eq!((p.msg_type(), p.mtu()), (PACKET_TOO_BIG, 1280));
        let inner = Ipv6Packet::new_unchecked(p.payload());
        assert_eq!(
            inner.dst(),
            "2001:db8::7".parse::<core::net::Ipv6Addr>().unwrap()
        );
        assert!(Ipv6Packet::new_checked(p.payload()).is_err()); // cut short

        // Built from the repr, byte for byte.
        let mut buf = [0u8; 56];
        buf[HEADER_LEN..].copy_from_slice(p.payload());
        let mut q = Icmpv6Packet::new_unchecked(&mut buf[..]);
        Icmpv6Repr::packet_too_big(1280, 48).emit(&mut q).unwrap();
        q.fill_checksum(&src, &dst);
        assert_eq!(&buf[..], msg);
    }

    #[test]
    fn corrupted_byte_fails_verification() {
        let (src, dst, msg) = split(&ICMPV6_ECHO);
        for i in 0..msg.len() {
            let mut bad = [0u8; 20];
            bad.copy_from_slice(msg);
            bad[i] ^= 0x01;
            assert!(!Icmpv6Packet::new_unchecked(&bad[..]).verify_checksum(&src, &dst));
        }
        let mut s = src;
        s[15] ^= 1;
        assert!(!Icmpv6Packet::new_unchecked(msg).verify_checksum(&s, &dst));
    }

    #[test]
    fn rest_of_header_layouts_and_types() {
        let mut buf = [0u8; 8];
        let mut p = Icmpv6Packet::new_unchecked(&mut buf[..]);
        Icmpv6Repr::param_problem(code::UNRECOGNIZED_NEXT_HEADER, 40, 0)
            .emit(&mut p)
            .unwrap();
        assert_eq!(p.pointer(), 40);
        p.set_rfc4884_length(3);
        assert_eq!(p.rfc4884_length(), 3);
        assert!(is_error(DEST_UNREACHABLE) && is_error(PARAM_PROBLEM));
        assert!(!is_error(ECHO_REPLY) && !is_error(NEIGHBOR_SOLICIT) && !is_error(MLDV2_REPORT));
        for n in 0..HEADER_LEN {
            assert!(Icmpv6Packet::new_checked(&buf[..n]).is_err());
        }
    }

    prop_compose! {
        fn arb_repr()(msg_type in any::<u8>(), code in any::<u8>(), rest_of_header in any::<u32>(), payload_len in 0usize..100) -> Icmpv6Repr {
            Icmpv6Repr { msg_type, code, rest_of_header, payload_len }
        }
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(repr in arb_repr(), src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), fill in any::<u8>()) {
            let mut buf = vec![fill; repr.buffer_len()];
            let mut q = Icmpv6Packet::new_unchecked(&mut buf[..]);
            repr.emit(&mut q).unwrap();
            q.fill_checksum(&src, &dst);
            let p = Icmpv6Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum(&src, &dst));
            prop_assert_eq!(Icmpv6Repr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Icmpv6Packet::new_checked(&bytes[..]) {
                let _ = Icmpv6Repr::parse(&p);
                let _ = (p.msg_type(), p.code(), p.checksum(), p.is_error(), p.rest_of_header());
                let _ = (p.echo_ident(), p.echo_seq_no(), p.mtu(), p.pointer(), p.rfc4884_length());
                let _ = (p.payload(), p.verify_checksum(&[0; 16], &[1; 16]));
            }
        }
    }
}
