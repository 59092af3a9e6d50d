//! ARP (RFC 826) for Ethernet and IPv4 only: hardware type 1, protocol type 0x0800,
//! address lengths 6 and 4. Anything else is `Unsupported`.

use crate::ethernet::{EtherType, MacAddr};
use crate::{get_u16, need, set_u16, Error, Result};
use core::net::Ipv4Addr;

/// The length of an Ethernet/IPv4 ARP packet.
pub const PACKET_LEN: usize = 28;
/// Hardware type Ethernet.
pub const HTYPE_ETHERNET: u16 = 1;
/// Operation: request.
pub const OP_REQUEST: u16 = 1;
/// Operation: reply.
pub const OP_REPLY: u16 = 2;

mod field {
    pub const HTYPE: usize = 0;
    pub const PTYPE: usize = 2;
    pub const HLEN: usize = 4;
    pub const PLEN: usize = 5;
    pub const OP: usize = 6;
    pub const SHA: usize = 8;
    pub const SPA: usize = 14;
    pub const THA: usize = 18;
    pub const TPA: usize = 24;
}

/// A view over an Ethernet/IPv4 ARP packet.
#[derive(Debug, Clone, Copy)]
pub struct ArpPacket<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> ArpPacket<T> {
    /// Wraps `buf` without checking it; getters may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buf: T) -> Self {
        ArpPacket { buf }
    }

    /// Wraps `buf` after checking that it is an Ethernet/IPv4 ARP packet of 28 bytes
    /// (trailing link padding is allowed).
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        need("arp", buf.as_ref(), field::SHA)?;
        let p = ArpPacket { buf };
        if p.hardware_type() != HTYPE_ETHERNET || p.hardware_len() != 6 {
            return Err(Error::Unsupported {
                what: "arp",
                field: "hardware type",
            });
        }
        if p.protocol_type() != EtherType::IPV4.0 || p.protocol_len() != 4 {
            return Err(Error::Unsupported {
                what: "arp",
                field: "protocol type",
            });
        }
        need("arp", p.buf.as_ref(), PACKET_LEN)?;
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
    /// Hardware type (1 for Ethernet).
    #[inline]
    pub fn hardware_type(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::HTYPE)
    }
    /// Protocol type (0x0800 for IPv4).
    #[inline]
    pub fn protocol_type(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::PTYPE)
    }
    /// Hardware address length (6).
    #[inline]
    pub fn hardware_len(&self) -> u8 {
        self.buf.as_ref()[field::HLEN]
    }
    /// Protocol address length (4).
    #[inline]
    pub fn protocol_len(&self) -> u8 {
        self.buf.as_ref()[field::PLEN]
    }
    /// Operation ([`OP_REQUEST`], [`OP_REPLY`], ...).
    #[inline]
    pub fn op(&self) -> u16 {
        get_u16(self.buf.as_ref(), field::OP)
    }
    /// Sender hardware address.
    #[inline]
    pub fn sender_mac(&self) -> MacAddr {
        mac_at(self.buf.as_ref(), field::SHA)
    }
    /// Sender protocol address.
    #[inline]
    pub fn sender_ip(&self) -> Ipv4Addr {
        ip_at(self.buf.as_ref(), field::SPA)
    }
    /// Target hardware address (zero in a request).
    #[inline]
    pub fn target_mac(&self) -> MacAddr {
        mac_at(self.buf.as_ref(), field::THA)
    }
    /// Target protocol address.
    #[inline]
    pub fn target_ip(&self) -> Ipv4Addr {
        ip_at(self.buf.as_ref(), field::TPA)
    }
}

fn mac_at(b: &[u8], at: usize) -> MacAddr {
    MacAddr([b[at], b[at + 1], b[at + 2], b[at + 3], b[at + 4], b[at + 5]])
}

fn ip_at(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> ArpPacket<T> {
    /// Writes hardware type 1, protocol type 0x0800 and lengths 6 and 4.
    #[inline]
    pub fn set_ethernet_ipv4(&mut self) {
        let b = self.buf.as_mut();
        set_u16(b, field::HTYPE, HTYPE_ETHERNET);
        set_u16(b, field::PTYPE, EtherType::IPV4.0);
        b[field::HLEN] = 6;
        b[field::PLEN] = 4;
    }
    /// Sets the operation.
    #[inline]
    pub fn set_op(&mut self, op: u16) {
        set_u16(self.buf.as_mut(), field::OP, op)
    }
    /// Sets the sender hardware address.
    #[inline]
    pub fn set_sender_mac(&mut self, m: MacAddr) {
        self.buf.as_mut()[field::SHA..field::SHA + 6].copy_from_slice(&m.0);
    }
    /// Sets the sender protocol address.
    #[inline]
    pub fn set_sender_ip(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[field::SPA..field::SPA + 4].copy_from_slice(&a.octets());
    }
    /// Sets the target hardware address.
    #[inline]
    pub fn set_target_mac(&mut self, m: MacAddr) {
        self.buf.as_mut()[field::THA..field::THA + 6].copy_from_slice(&m.0);
    }
    /// Sets the target protocol address.
    #[inline]
    pub fn set_target_ip(&mut self, a: Ipv4Addr) {
        self.buf.as_mut()[field::TPA..field::TPA + 4].copy_from_slice(&a.octets());
    }
}

/// An ARP operation this crate handles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ArpOp {
    /// Who has `target_ip`? Tell `sender_ip`.
    Request,
    /// `sender_ip` is at `sender_mac`.
    Reply,
}

impl ArpOp {
    /// The wire value.
    pub const fn to_u16(self) -> u16 {
        match self {
            ArpOp::Request => OP_REQUEST,
            ArpOp::Reply => OP_REPLY,
        }
    }
}

/// The meaningful fields of an Ethernet/IPv4 ARP request or reply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArpRepr {
    /// Request or reply.
    pub op: ArpOp,
    /// Sender hardware address.
    pub sender_mac: MacAddr,
    /// Sender protocol address.
    pub sender_ip: Ipv4Addr,
    /// Target hardware address.
    pub target_mac: MacAddr,
    /// Target protocol address.
    pub target_ip: Ipv4Addr,
}

impl ArpRepr {
    /// Reads a checked packet; operations other than request and reply (RARP, InARP)
    /// are `Unsupported`.
    pub fn parse<T: AsRef<[u8]>>(p: &ArpPacket<T>) -> Result<ArpRepr> {
        let op = match p.op() {
            OP_REQUEST => ArpOp::Request,
            OP_REPLY => ArpOp::Reply,
            _ => {
                return Err(Error::Unsupported {
                    what: "arp",
                    field: "operation",
                })
            }
        };
        Ok(ArpRepr {
            op,
            sender_mac: p.sender_mac(),
            sender_ip: p.sender_ip(),
            target_mac: p.target_mac(),
            target_ip: p.target_ip(),
        })
    }

    /// 28.
    pub const fn header_len(&self) -> usize {
        PACKET_LEN
    }

    /// 28: ARP has no payload.
    pub const fn buffer_len(&self) -> usize {
        PACKET_LEN
    }

    /// Writes the packet to the front of `p`'s buffer (28 bytes).
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, p: &mut ArpPacket<T>) -> Result<()> {
        need("arp", p.buf.as_ref(), PACKET_LEN)?;
        p.set_ethernet_ipv4();
        p.set_op(self.op.to_u16());
        p.set_sender_mac(self.sender_mac);
        p.set_sender_ip(self.sender_ip);
        p.set_target_mac(self.target_mac);
        p.set_target_ip(self.target_ip);
        Ok(())
    }

    /// The reply to this request saying that `target_ip` is at `mac`.
    pub fn reply(&self, mac: MacAddr) -> ArpRepr {
        ArpRepr {
            op: ArpOp::Reply,
            sender_mac: mac,
            sender_ip: self.target_ip,
            target_mac: self.sender_mac,
            target_ip: self.sender_ip,
        }
    }

    /// An RFC 5227 probe: a request with sender address 0.0.0.0 (address conflict
    /// detection; must not update caches).
    pub fn is_probe(&self) -> bool {
        self.op == ArpOp::Request && self.sender_ip.is_unspecified()
    }

    /// A gratuitous ARP or RFC 5227 announcement: sender and target address are equal.
    pub fn is_gratuitous(&self) -> bool {
        self.sender_ip == self.target_ip && !self.sender_ip.is_unspecified()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ethernet::{EthernetFrame, EthernetRepr};
    use proptest::prelude::*;

    /// scapy: Ether(src="52:54:00:12:34:56", dst="ff:ff:ff:ff:ff:ff")/ARP(op=1, hwsrc="52:54:00:12:34:56", psrc="10.0.0.5", pdst="10.0.0.1")
    const ARP_REQUEST: [u8; 42] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00,
        0x00, 0x05, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x0a, 0x00, 0x00, 0x01,
    ];

    /// scapy: Ether(src="02:00:00:00:00:01", dst="52:54:00:12:34:56")/ARP(op=2, hwsrc="02:00:00:00:00:01", psrc="10.0.0.1", hwdst="52:54:00:12:34:56", pdst="10.0.0.5")
    const ARP_REPLY: [u8; 42] = [
        0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00,
        0x01, 0x08, 0x00, 0x06, 0x04, 0x00, 0x02, 0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x0a, 0x00,
        0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x0a, 0x00, 0x00, 0x05,
    ];

    const NODE: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const ROUTER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);

    #[test]
    fn parses_a_request() {
        let f = EthernetFrame::new_checked(&ARP_REQUEST[..]).unwrap();
        assert_eq!(f.ethertype(), EtherType::ARP);
        let p = ArpPacket::new_checked(f.payload()).unwrap();
        let r = ArpRepr::parse(&p).unwrap();
        assert_eq!(
            r,
            ArpRepr {
                op: ArpOp::Request,
                sender_mac: NODE,
                sender_ip: Ipv4Addr::new(10, 0, 0, 5),
                target_mac: MacAddr::ZERO,
                target_ip: Ipv4Addr::new(10, 0, 0, 1),
            }
        );
        assert!(!r.is_probe() && !r.is_gratuitous());
    }

    #[test]
    fn builds_the_reply_byte_for_byte() {
        let f = EthernetFrame::new_checked(&ARP_REQUEST[..]).unwrap();
        let req = ArpRepr::parse(&ArpPacket::new_checked(f.payload()).unwrap()).unwrap();
        let reply = req.reply(ROUTER);
        let eth = EthernetRepr {
            dst: req.sender_mac,
            src: ROUTER,
            vlan: None,
            ethertype: EtherType::ARP,
            payload_len: reply.buffer_len(),
        };
        let mut out = [0xaau8; 42];
        let mut frame = EthernetFrame::new_unchecked(&mut out[..]);
        eth.emit(&mut frame).unwrap();
        reply
            .emit(&mut ArpPacket::new_unchecked(frame.payload_mut()))
            .unwrap();
        assert_eq!(out, ARP_REPLY);
        let p = ArpPacket::new_checked(&ARP_REPLY[14..]).unwrap();
        assert_eq!(ArpRepr::parse(&p).unwrap(), reply);
    }

    #[test]
    fn refuses_other_kinds_and_short_packets() {
        let arp = &ARP_REQUEST[14..];
        for n in 0..PACKET_LEN {
            assert!(matches!(
                ArpPacket::new_checked(&arp[..n]),
                Err(Error::Truncated { .. })
            ));
        }
        for (at, v) in [(1, 6u8), (3, 0xdd), (4, 8), (5, 16)] {
            let mut b = [0u8; PACKET_LEN];
            b.copy_from_slice(arp);
            b[at] = v;
            assert!(matches!(
                ArpPacket::new_checked(&b[..]),
                Err(Error::Unsupported { .. })
            ));
        }
        // Ethernet pads ARP to a 60-byte frame: trailing bytes are fine.
        let mut padded = [0u8; 46];
        padded[..PACKET_LEN].copy_from_slice(arp);
        assert!(ArpPacket::new_checked(&padded[..]).is_ok());
        let mut rarp = [0u8; PACKET_LEN];
        rarp.copy_from_slice(arp);
        rarp[7] = 3;
        let p = ArpPacket::new_checked(&rarp[..]).unwrap();
        assert!(ArpRepr::parse(&p).is_err());
    }

    #[test]
    fn probes_and_announcements() {
        let mut r = ArpRepr {
            op: ArpOp::Request,
            sender_mac: NODE,
            sender_ip: Ipv4Addr::UNSPECIFIED,
            target_mac: MacAddr::ZERO,
            target_ip: Ipv4Addr::new(10, 0, 0, 5),
        };
        assert!(r.is_probe() && !r.is_gratuitous());
        r.sender_ip = r.target_ip;
        assert!(!r.is_probe() && r.is_gratuitous());
    }

    prop_compose! {
        fn arb_repr()(
            reply in any::<bool>(), sm in any::<[u8; 6]>(), si in any::<[u8; 4]>(),
            tm in any::<[u8; 6]>(), ti in any::<[u8; 4]>(),
        ) -> ArpRepr {
            ArpRepr {
                op: if reply { ArpOp::Reply } else { ArpOp::Request },
                sender_mac: MacAddr(sm), sender_ip: si.into(), target_mac: MacAddr(tm), target_ip: ti.into(),
            }
        }
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(repr in arb_repr()) {
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut ArpPacket::new_unchecked(&mut buf[..])).unwrap();
            let p = ArpPacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(ArpRepr::parse(&p).unwrap(), repr);
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..40), fix in any::<bool>()) {
            // Half of the cases get a valid fixed part so the getters are reached.
            if fix && bytes.len() >= 6 {
                bytes[..6].copy_from_slice(&[0, 1, 8, 0, 6, 4]);
            }
            if let Ok(p) = ArpPacket::new_checked(&bytes[..]) {
                let _ = ArpRepr::parse(&p);
                let _ = (p.op(), p.sender_mac(), p.sender_ip(), p.target_mac(), p.target_ip());
            }
        }
    }
}
