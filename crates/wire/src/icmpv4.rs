//! ICMPv4 (RFC 792, RFC 1191, RFC 4884): the 8-byte header with its "rest of header"
//! word read as whatever the message type makes it, and the checksum (no pseudo-header).
//!
//! The view covers one ICMP message exactly: pass it the IPv4 payload
//! ([`Ipv4Packet::payload`](crate::ipv4::Ipv4Packet::payload)), since the checksum covers
//! every byte of the buffer.

use crate::{checksum, get_u16, get_u32, need, set_u16, set_u32, Result};
use core::net::Ipv4Addr;

/// Type, code, checksum and the 4-byte rest of header.
pub const HEADER_LEN: usize = 8;
/// The largest IPv4 datagram an error message should make (RFC 1812 section 4.3.2.3):
/// quote as much of the offending datagram as fits.
pub const MAX_ERROR_DATAGRAM: usize = 576;

/// Echo reply.
pub const ECHO_REPLY: u8 = 0;
/// Destination unreachable (error).
pub const DEST_UNREACHABLE: u8 = 3;
/// Source quench (error, deprecated by RFC 6633).
pub const SOURCE_QUENCH: u8 = 4;
/// Redirect (error).
pub const REDIRECT: u8 = 5;
/// Echo request.
pub const ECHO_REQUEST: u8 = 8;
/// Router advertisement (RFC 1256).
pub const ROUTER_ADVERT: u8 = 9;
/// Router solicitation (RFC 1256).
pub const ROUTER_SOLICIT: u8 = 10;
/// Time exceeded (error).
pub const TIME_EXCEEDED: u8 = 11;
/// Parameter problem (error).
pub const PARAM_PROBLEM: u8 = 12;
/// Timestamp request.
pub const TIMESTAMP: u8 = 13;
/// Timestamp reply.
pub const TIMESTAMP_REPLY: u8 = 14;
/// Information request (obsolete).
pub const INFO_REQUEST: u8 = 15;
/// Information reply (obsolete).
pub const INFO_REPLY: u8 = 16;
/// Address mask request (RFC 950).
pub const ADDR_MASK_REQUEST: u8 = 17;
/// Address mask reply (RFC 950).
pub const ADDR_MASK_REPLY: u8 = 18;

/// Code values, by the message type they belong to.
pub mod code {
    /// Destination unreachable: network unreachable.
    pub const NET_UNREACHABLE: u8 = 0;
    /// Destination unreachable: host unreachable.
    pub const HOST_UNREACHABLE: u8 = 1;
    /// Destination unreachable: protocol unreachable.
    pub const PROTO_UNREACHABLE: u8 = 2;
    /// Destination unreachable: port unreachable.
    pub const PORT_UNREACHABLE: u8 = 3;
    /// Destination unreachable: fragmentation needed and DF set (RFC 1191: carries the
    /// next-hop MTU).
    pub const FRAG_NEEDED: u8 = 4;
    /// Destination unreachable: source route failed.
    pub const SOURCE_ROUTE_FAILED: u8 = 5;
    /// Destination unreachable: destination network unknown.
    pub const NET_UNKNOWN: u8 = 6;
    /// Destination unreachable: destination host unknown.
    pub const HOST_UNKNOWN: u8 = 7;
    /// Destination unreachable: source host isolated.
    pub const SOURCE_HOST_ISOLATED: u8 = 8;
    /// Destination unreachable: network administratively prohibited.
    pub const NET_PROHIBITED: u8 = 9;
    /// Destination unreachable: host administratively prohibited.
    pub const HOST_PROHIBITED: u8 = 10;
    /// Destination unreachable: network unreachable for TOS.
    pub const NET_UNREACHABLE_TOS: u8 = 11;
    /// Destination unreachable: host unreachable for TOS.
    pub const HOST_UNREACHABLE_TOS: u8 = 12;
    /// Destination unreachable: communication administratively prohibited (RFC 1812).
    pub const ADMIN_PROHIBITED: u8 = 13;
    /// Destination unreachable: host precedence violation.
    pub const PRECEDENCE_VIOLATION: u8 = 14;
    /// Destination unreachable: precedence cutoff in effect.
    pub const PRECEDENCE_CUTOFF: u8 = 15;
    /// Time exceeded: TTL exceeded in transit.
    pub const TTL_EXCEEDED: u8 = 0;
    /// Time exceeded: fragment reassembly time exceeded.
    pub const REASSEMBLY_TIME_EXCEEDED: u8 = 1;
    /// Parameter problem: the pointer indicates the error.
    pub const POINTER_INDICATES_ERROR: u8 = 0;
    /// Parameter problem: missing a required option.
    pub const MISSING_OPTION: u8 = 1;
    /// Parameter problem: bad length.
    pub const BAD_LENGTH: u8 = 2;
}

/// True for the error messages (which quote an offending datagram and must never be
/// sent in answer to another error).
pub fn is_error(msg_type: u8) -> bool {
    matches!(
        msg_type,
        DEST_UNREACHABLE | SOURCE_QUENCH | REDIRECT | TIME_EXCEEDED | PARAM_PROBLEM
    )
}

mod field {
    pub const TYPE: usize = 0;
    pub const CODE: usize = 1;
    pub const CHECKSUM: usize = 2;
    pub const REST: usize = 4;
    pub const ECHO_IDENT: usize = 4;
    pub const ECHO_SEQ: usize = 6;
    pub const POINTER: usize = 4;
    pub const LENGTH: usize = 5;
    pub const MTU: usize = 6;
}

/// A view over one ICMPv4 message.
#[derive(Debug, Clone, Copy)]
pub struct Icmpv4Packet<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> Icmpv4Packet<T> {
    /// Wraps `buf` without checking it; getters may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buf: T) -> Self {
        Icmpv4Packet { buf }
    }

    /// Wraps `buf` after checking that the 8-byte header fits.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        need("icmpv4", buf.as_ref(), HEADER_LEN)?;
        Ok(Icmpv4Packet { buf })
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
    /// True for an error message type (see [`is_error`]).
    #[inline]
    pub fn is_error(&self) -> bool {
        is_error(self.msg_type())
    }
    /// The 4 bytes after the checksum, as one word.
    #[inline]
    pub fn rest_of_header(&self) -> u32 {
        get_u32(self.buf.as_ref(), field::REST)
    }
    /// Echo request/reply (and timestamp, info, address mask): identifier.
    #[inline]
    pub fn echo_ident(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::ECHO_IDENT)
    }
    /// Echo request/reply (and timestamp, info, address mask): sequence number.
    #[inline]
    pub fn echo_seq_no(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::ECHO_SEQ)
    }
    /// Fragmentation needed (type 3 code 4): the next-hop MTU (RFC 1191; 0 from
    /// routers that predate it).
    #[inline]
    pub fn next_hop_mtu(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::MTU)
    }
    /// Parameter problem: the octet of the offending datagram that is in error.
    #[inline]
    pub fn pointer(&self) -> u8 {
        self.buf.as_ref()[field::POINTER]
    }
    /// RFC 4884 length attribute of destination unreachable, time exceeded and parameter
    /// problem: the length of the quoted datagram in 32-bit words (0 when the message
    /// carries no extension structure).
    #[inline]
    pub fn rfc4884_length(&self) -> u8 {
        self.buf.as_ref()[field::LENGTH]
    }
    /// Redirect: the gateway address to use.
    #[inline]
    pub fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.rest_of_header())
    }
    /// Everything after the 8-byte header (echo data, or the quoted datagram of an error).
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[HEADER_LEN..]
    }
    /// True when the checksum over the whole buffer verifies.
    #[inline]
    pub fn verify_checksum(&self) -> bool {
        checksum::checksum(self.buf.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> Icmpv4Packet<T> {
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
    /// Sets the 4 bytes after the checksum.
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
    /// Sets the next-hop MTU of a fragmentation-needed message.
    #[inline]
    pub fn set_next_hop_mtu(&mut self, v: u16) {
        set_u16(self.buf.as_mut(), field::MTU, v)
    }
    /// Sets the parameter-problem pointer.
    #[inline]
    pub fn set_pointer(&mut self, v: u8) {
        self.buf.as_mut()[field::POINTER] = v;
    }
    /// Sets the RFC 4884 length attribute (32-bit words).
    #[inline]
    pub fn set_rfc4884_length(&mut self, v: u8) {
        self.buf.as_mut()[field::LENGTH] = v;
    }
    /// Everything after the header, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        &mut self.buf.as_mut()[HEADER_LEN..]
    }
    /// Recomputes the checksum over the whole buffer.
    #[inline]
    pub fn fill_checksum(&mut self) {
        self.set_checksum(0);
        let c = checksum::checksum(self.buf.as_ref());
        self.set_checksum(c);
    }
}

/// The meaningful fields of an ICMPv4 header: type, code and the raw rest-of-header word,
/// which the constructors below lay out per message type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Icmpv4Repr {
    /// Message type.
    pub msg_type: u8,
    /// Code.
    pub code: u8,
    /// The 4 bytes after the checksum, big-endian.
    pub rest_of_header: u32,
    /// Bytes after the 8-byte header.
    pub payload_len: usize,
}

impl Icmpv4Repr {
    /// An echo request.
    pub const fn echo_request(ident: u16, seq_no: u16, payload_len: usize) -> Self {
        Self::echo(ECHO_REQUEST, ident, seq_no, payload_len)
    }
    /// An echo reply.
    pub const fn echo_reply(ident: u16, seq_no: u16, payload_len: usize) -> Self {
        Self::echo(ECHO_REPLY, ident, seq_no, payload_len)
    }
    const fn echo(msg_type: u8, ident: u16, seq_no: u16, payload_len: usize) -> Self {
        Icmpv4Repr {
            msg_type,
            code: 0,
            rest_of_header: ((ident as u32) << 16) | seq_no as u32,
            payload_len,
        }
    }
    /// Destination unreachable with `code`; `quoted_len` bytes of the offending datagram.
    pub const fn dest_unreachable(code: u8, quoted_len: usize) -> Self {
        Icmpv4Repr {
            msg_type: DEST_UNREACHABLE,
            code,
            rest_of_header: 0,
            payload_len: quoted_len,
        }
    }
    /// Fragmentation needed and DF set, announcing `mtu`.
    pub const fn frag_needed(mtu: u16, quoted_len: usize) -> Self {
        Icmpv4Repr {
            msg_type: DEST_UNREACHABLE,
            code: code::FRAG_NEEDED,
            rest_of_header: mtu as u32,
            payload_len: quoted_len,
        }
    }
    /// Time exceeded with `code` ([`code::TTL_EXCEEDED`] or reassembly).
    pub const fn time_exceeded(code: u8, quoted_len: usize) -> Self {
        Icmpv4Repr {
            msg_type: TIME_EXCEEDED,
            code,
            rest_of_header: 0,
            payload_len: quoted_len,
        }
    }
    /// Parameter problem pointing at octet `pointer` of the offending datagram.
    pub const fn param_problem(pointer: u8, quoted_len: usize) -> Self {
        Icmpv4Repr {
            msg_type: PARAM_PROBLEM,
            code: code::POINTER_INDICATES_ERROR,
            rest_of_header: (pointer as u32) << 24,
            payload_len: quoted_len,
        }
    }

    /// Reads a checked message.
    pub fn parse<T: AsRef<[u8]>>(p: &Icmpv4Packet<T>) -> Result<Icmpv4Repr> {
        Ok(Icmpv4Repr {
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

    /// Writes the header to the front of `p`'s buffer, which must hold `buffer_len()`
    /// bytes, and fills the checksum over the first `buffer_len()` bytes: write the
    /// payload first (or call [`Icmpv4Packet::fill_checksum`] after writing it).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut Icmpv4Packet<T>) -> Result<()> {
        let len = self.buffer_len();
        need("icmpv4", p.buf.as_ref(), len)?;
        let mut msg = Icmpv4Packet::new_unchecked(&mut p.buf.as_mut()[..len]);
        msg.set_msg_type(self.msg_type);
        msg.set_code(self.code);
        msg.set_rest_of_header(self.rest_of_header);
        msg.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4::Ipv4Packet;
    use crate::IpProtocol;
    use proptest::prelude::*;

    /// scapy: IP(src="10.0.0.5", dst="10.0.0.1", flags="DF")/ICMP(type=8, id=0x1234, seq=1)/Raw(b"abcdefghijklmnop")
    const ICMP_ECHO: [u8; 44] = [
        0x45, 0x00, 0x00, 0x2c, 0x6e, 0x2b, 0x40, 0x00, 0x40, 0x01, 0xb8, 0xa0, 0x0a, 0x00, 0x00,
        0x05, 0x0a, 0x00, 0x00, 0x01, 0x08, 0x00, 0xa2, 0x7f, 0x12, 0x34, 0x00, 0x01, 0x61, 0x62,
        0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a, 0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70,
    ];

    /// scapy: IP(src="10.0.0.1", dst="10.0.0.5")/ICMP(type=3, code=3)/IP(src="10.0.0.5", dst="10.0.0.1")/UDP(sport=33434, dport=33435)/Raw(b"probe")
    const ICMP_PORT_UNREACH: [u8; 61] = [
        0x45, 0x00, 0x00, 0x3d, 0x00, 0x99, 0x00, 0x00, 0x40, 0x01, 0x66, 0x22, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x00, 0x00, 0x05, 0x03, 0x03, 0x11, 0x21, 0x00, 0x00, 0x00, 0x00, 0x45, 0x00,
        0x00, 0x21, 0x00, 0x77, 0x00, 0x00, 0x40, 0x11, 0x66, 0x50, 0x0a, 0x00, 0x00, 0x05, 0x0a,
        0x00, 0x00, 0x01, 0x82, 0x9a, 0x82, 0x9b, 0x00, 0x0d, 0xa1, 0xc3, 0x70, 0x72, 0x6f, 0x62,
        0x65,
    ];

    /// scapy: IP(src="10.0.0.1", dst="10.0.0.5")/ICMP(type=3, code=4, nexthopmtu=1480)/IP(src="10.0.0.5", dst="203.0.113.7", flags="DF", len=1500)/TCP(sport=40000, dport=443, flags="A", seq=1, ack=1)
    const ICMP_FRAG_NEEDED: [u8; 68] = [
        0x45, 0x00, 0x00, 0x44, 0x00, 0x9a, 0x00, 0x00, 0x40, 0x01, 0x66, 0x1a, 0x0a, 0x00, 0x00,
        0x01, 0x0a, 0x00, 0x00, 0x05, 0x03, 0x04, 0x43, 0x0f, 0x00, 0x00, 0x05, 0xc8, 0x45, 0x00,
        0x05, 0xdc, 0x00, 0x78, 0x40, 0x00, 0x40, 0x06, 0xee, 0x97, 0x0a, 0x00, 0x00, 0x05, 0xcb,
        0x00, 0x71, 0x07, 0x9c, 0x40, 0x01, 0xbb, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01,
        0x50, 0x10, 0x20, 0x00, 0xa6, 0x16, 0x00, 0x00,
    ];

    fn icmp_of(ip: &[u8]) -> Icmpv4Packet<&[u8]> {
        let ip = Ipv4Packet::new_checked(ip).unwrap();
        assert_eq!(ip.protocol(), IpProtocol::ICMP);
        Icmpv4Packet::new_checked(&ip.into_inner()[20..]).unwrap()
    }

    #[test]
    fn parses_an_echo_request_and_answers_it() {
        let p = icmp_of(&ICMP_ECHO);
        assert!(p.verify_checksum());
        assert_eq!((p.msg_type(), p.code()), (ECHO_REQUEST, 0));
        assert_eq!((p.echo_ident(), p.echo_seq_no()), (0x1234, 1));
        assert_eq!(p.payload(), b"abcdefghijklmnop");
        assert!(!p.is_error());
        let r = Icmpv4Repr::parse(&p).unwrap();
        assert_eq!(r, Icmpv4Repr::echo_request(0x1234, 1, 16));

        // The reply in place: same data, type 0, fresh checksum.
        let mut buf = [0u8; 24];
        buf.copy_from_slice(p.as_bytes());
        let mut q = Icmpv4Packet::new_unchecked(&mut buf[..]);
        Icmpv4Repr::echo_reply(0x1234, 1, 16).emit(&mut q).unwrap();
        assert!(q.verify_checksum());
        assert_eq!(q.payload(), b"abcdefghijklmnop");
        // 0xa27f + 0x0800 in ones' complement: the reply's checksum as any stack makes it.
        assert_eq!(q.checksum(), 0xaa7f);
    }

    #[test]
    fn parses_errors() {
        let p = icmp_of(&ICMP_PORT_UNREACH);
        assert!(p.verify_checksum() && p.is_error());
        assert_eq!(
            (p.msg_type(), p.code()),
            (DEST_UNREACHABLE, code::PORT_UNREACHABLE)
        );
        assert_eq!(p.rfc4884_length(), 0);
        let quoted = Ipv4Packet::new_checked(p.payload()).unwrap();
        assert_eq!(quoted.protocol(), IpProtocol::UDP);
        assert_eq!(quoted.dst(), Ipv4Addr::new(10, 0, 0, 1));

        let p = icmp_of(&ICMP_FRAG_NEEDED);
        assert!(p.verify_checksum());
        assert_eq!(p.code(), code::FRAG_NEEDED);
        assert_eq!(p.next_hop_mtu(), 1480);
        assert_eq!(
            Icmpv4Repr::parse(&p).unwrap(),
            Icmpv4Repr::frag_needed(1480, 40)
        );
        // The quoted datagram claims 1500 bytes but only its headers are here.
        assert!(Ipv4Packet::new_checked(p.payload()).is_err());
    }

    #[test]
    fn rebuilds_the_port_unreachable_byte_for_byte() {
        let orig = icmp_of(&ICMP_PORT_UNREACH);
        let quoted = orig.payload();
        let mut buf = [0u8; 41];
        buf[HEADER_LEN..].copy_from_slice(quoted);
        let r = Icmpv4Repr::dest_unreachable(code::PORT_UNREACHABLE, quoted.len());
        r.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..]))
            .unwrap();
        assert_eq!(&buf[..], orig.as_bytes());
    }

    #[test]
    fn other_rest_of_header_layouts() {
        let mut buf = [0u8; 8];
        let mut p = Icmpv4Packet::new_unchecked(&mut buf[..]);
        Icmpv4Repr::param_problem(9, 0).emit(&mut p).unwrap();
        assert_eq!((p.msg_type(), p.pointer()), (PARAM_PROBLEM, 9));
        p.set_rfc4884_length(7);
        assert_eq!(p.rfc4884_length(), 7);
        p.set_rest_of_header(u32::from(Ipv4Addr::new(10, 0, 0, 254)));
        assert_eq!(p.gateway(), Ipv4Addr::new(10, 0, 0, 254));
        assert!(is_error(REDIRECT) && is_error(TIME_EXCEEDED) && is_error(SOURCE_QUENCH));
        assert!(!is_error(ECHO_REPLY) && !is_error(TIMESTAMP) && !is_error(ROUTER_ADVERT));
        for n in 0..HEADER_LEN {
            assert!(Icmpv4Packet::new_checked(&buf[..n]).is_err());
        }
    }

    #[test]
    fn corrupted_byte_fails_verification() {
        let ip = Ipv4Packet::new_checked(&ICMP_ECHO[..]).unwrap();
        let mut icmp = [0u8; 24];
        icmp.copy_from_slice(ip.payload());
        for i in 0..icmp.len() {
            let mut bad = icmp;
            bad[i] ^= 0x10;
            assert!(
                !Icmpv4Packet::new_unchecked(&bad[..]).verify_checksum(),
                "byte {i}"
            );
        }
    }

    prop_compose! {
        fn arb_repr()(msg_type in any::<u8>(), code in any::<u8>(), rest_of_header in any::<u32>(), payload_len in 0usize..100) -> Icmpv4Repr {
            Icmpv4Repr { msg_type, code, rest_of_header, payload_len }
        }
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(repr in arb_repr(), fill in any::<u8>()) {
            let mut buf = vec![fill; repr.buffer_len()];
            repr.emit(&mut Icmpv4Packet::new_unchecked(&mut buf[..])).unwrap();
            let p = Icmpv4Packet::new_checked(&buf[..]).unwrap();
            prop_assert!(p.verify_checksum());
            prop_assert_eq!(Icmpv4Repr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            if let Ok(p) = Icmpv4Packet::new_checked(&bytes[..]) {
                let _ = Icmpv4Repr::parse(&p);
                let _ = (p.msg_type(), p.code(), p.checksum(), p.is_error(), p.rest_of_header());
                let _ = (p.echo_ident(), p.echo_seq_no(), p.next_hop_mtu(), p.pointer());
                let _ = (p.rfc4884_length(), p.gateway(), p.payload(), p.verify_checksum());
            }
        }
    }
}
