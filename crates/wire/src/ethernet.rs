//! Ethernet II frames (IEEE 802.3 with an EtherType), with at most one 802.1Q tag.
//!
//! Frames come from a TAP device, so there is no preamble and no FCS; a payload may end
//! with link padding up to the 60-byte minimum frame, which the layer above ignores by its
//! own length field.

use crate::{get_u16, need, set_u16, Error, Result};
use core::fmt;
use core::str::FromStr;

/// Destination, source, EtherType.
pub const HEADER_LEN: usize = 14;
/// The 802.1Q tag: TPID (0x8100, in the EtherType position) and TCI.
pub const VLAN_TAG_LEN: usize = 4;
/// Smallest EtherType value; anything below is an IEEE 802.3 length field.
pub const MIN_ETHERTYPE: u16 = 0x0600;

mod field {
    pub const DST: usize = 0;
    pub const SRC: usize = 6;
    pub const ETHERTYPE: usize = 12;
    pub const TCI: usize = 14;
    pub const INNER_ETHERTYPE: usize = 16;
}

/// A 48-bit IEEE 802 MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);
    /// 00:00:00:00:00:00 (the target MAC of an ARP request).
    pub const ZERO: MacAddr = MacAddr([0; 6]);

    /// The address in the first six bytes of `b`.
    pub fn from_bytes(b: &[u8]) -> Result<MacAddr> {
        need("mac address", b, 6)?;
        Ok(MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]]))
    }

    /// The six octets.
    pub const fn octets(&self) -> [u8; 6] {
        self.0
    }

    /// The six octets, borrowed.
    pub const fn as_bytes(&self) -> &[u8; 6] {
        &self.0
    }

    /// True for ff:ff:ff:ff:ff:ff.
    pub fn is_broadcast(&self) -> bool {
        self.0 == [0xff; 6]
    }

    /// True for group addresses (I/G bit set), broadcast included.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 0x01 != 0
    }

    /// True for individual (unicast) addresses.
    pub fn is_unicast(&self) -> bool {
        !self.is_multicast()
    }

    /// True when the U/L bit is set: the address was assigned locally, not by a vendor.
    pub fn is_locally_administered(&self) -> bool {
        self.0[0] & 0x02 != 0
    }

    /// True for 00:00:00:00:00:00.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(m: MacAddr) -> Self {
        m.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = &self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

impl FromStr for MacAddr {
    type Err = Error;

    /// Parses six hex octets separated by `:` or `-` ("52:54:00:12:34:56").
    fn from_str(s: &str) -> Result<MacAddr> {
        let bad = Error::Malformed {
            what: "mac address",
            field: "text",
        };
        let mut out = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for o in out.iter_mut() {
            let p = parts.next().ok_or(bad)?;
            if p.is_empty() || p.len() > 2 {
                return Err(bad);
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| bad)?;
        }
        if parts.next().is_some() {
            return Err(bad);
        }
        Ok(MacAddr(out))
    }
}

/// An EtherType value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct EtherType(pub u16);

impl EtherType {
    /// IPv4.
    pub const IPV4: EtherType = EtherType(0x0800);
    /// ARP.
    pub const ARP: EtherType = EtherType(0x0806);
    /// IPv6.
    pub const IPV6: EtherType = EtherType(0x86dd);
    /// IEEE 802.1Q customer VLAN tag.
    pub const VLAN: EtherType = EtherType(0x8100);
    /// IEEE 802.1ad service VLAN tag (QinQ outer tag).
    pub const QINQ: EtherType = EtherType(0x88a8);
    /// The pre-standard QinQ outer tag some switches still send.
    pub const QINQ_LEGACY: EtherType = EtherType(0x9100);

    /// True for the tag protocol identifiers of 802.1Q/802.1ad.
    pub fn is_vlan_tag(self) -> bool {
        matches!(self.0, 0x8100 | 0x88a8 | 0x9100)
    }
}

impl fmt::Display for EtherType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            EtherType::IPV4 => f.write_str("ipv4"),
            EtherType::ARP => f.write_str("arp"),
            EtherType::IPV6 => f.write_str("ipv6"),
            EtherType::VLAN => f.write_str("vlan"),
            EtherType(n) => write!(f, "ethertype-{n:#06x}"),
        }
    }
}

/// The 802.1Q tag control information: priority (PCP), drop eligible (DEI), VLAN id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VlanTci(pub u16);

impl VlanTci {
    /// Builds a TCI; `pcp` is cut to 3 bits and `vid` to 12.
    pub const fn new(pcp: u8, dei: bool, vid: u16) -> VlanTci {
        VlanTci((((pcp & 0x7) as u16) << 13) | ((dei as u16) << 12) | (vid & 0x0fff))
    }
    /// Priority code point (3 bits).
    pub const fn pcp(self) -> u8 {
        (self.0 >> 13) as u8
    }
    /// Drop eligible indicator.
    pub const fn dei(self) -> bool {
        self.0 & 0x1000 != 0
    }
    /// VLAN identifier (12 bits; 0 means a priority tag without a VLAN).
    pub const fn vid(self) -> u16 {
        self.0 & 0x0fff
    }
}

/// A view over an Ethernet II frame.
#[derive(Debug, Clone, Copy)]
pub struct EthernetFrame<T> {
    buf: T,
}

impl<T: AsRef<[u8]>> EthernetFrame<T> {
    /// Wraps `buf` without checking it; getters may panic on a short buffer.
    #[inline]
    pub const fn new_unchecked(buf: T) -> Self {
        EthernetFrame { buf }
    }

    /// Wraps `buf` after checking that the header (and the 802.1Q tag, if any) fits.
    /// A second tag (802.1ad QinQ, 0x9100, or two 0x8100 tags) is `Unsupported`, and so
    /// is an 802.3 length in place of the EtherType.
    #[inline]
    pub fn new_checked(buf: T) -> Result<Self> {
        need("ethernet", buf.as_ref(), HEADER_LEN)?;
        let f = EthernetFrame { buf };
        let outer = f.outer_ethertype();
        if outer == EtherType::VLAN {
            need("ethernet", f.buf.as_ref(), HEADER_LEN + VLAN_TAG_LEN)?;
            let inner = EtherType(get_u16(f.buf.as_ref(), field::INNER_ETHERTYPE));
            if inner.is_vlan_tag() {
                return Err(Error::Unsupported {
                    what: "ethernet",
                    field: "second vlan tag",
                });
            }
            if inner.0 < MIN_ETHERTYPE {
                return Err(Error::Unsupported {
                    what: "ethernet",
                    field: "802.3 length instead of ethertype",
                });
            }
        } else if outer.is_vlan_tag() {
            return Err(Error::Unsupported {
                what: "ethernet",
                field: "qinq service tag",
            });
        } else if outer.0 < MIN_ETHERTYPE {
            return Err(Error::Unsupported {
                what: "ethernet",
                field: "802.3 length instead of ethertype",
            });
        }
        Ok(f)
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buf
    }

    /// The whole frame.
    #[inline]
    pub fn as_bytes(&self) -> &[u8] {
        self.buf.as_ref()
    }

    /// Destination MAC.
    #[inline]
    pub fn dst(&self) -> MacAddr {
        let b = self.buf.as_ref();
        MacAddr([b[0], b[1], b[2], b[3], b[4], b[5]])
    }

    /// Source MAC.
    #[inline]
    pub fn src(&self) -> MacAddr {
        let b = self.buf.as_ref();
        MacAddr([b[6], b[7], b[8], b[9], b[10], b[11]])
    }

    /// The EtherType right after the source MAC (0x8100 for a tagged frame).
    #[inline]
    pub fn outer_ethertype(&self) -> EtherType {
        EtherType(get_u16(self.buf.as_ref(), field::ETHERTYPE))
    }

    /// True when the frame carries an 802.1Q tag.
    #[inline]
    pub fn is_tagged(&self) -> bool {
        self.outer_ethertype() == EtherType::VLAN
    }

    /// The 802.1Q tag control information, if the frame is tagged.
    #[inline]
    pub fn vlan(&self) -> Option<VlanTci> {
        if self.is_tagged() {
            Some(VlanTci(get_u16(self.buf.as_ref(), field::TCI)))
        } else {
            None
        }
    }

    /// The EtherType of the payload (past the 802.1Q tag, if any).
    #[inline]
    pub fn ethertype(&self) -> EtherType {
        EtherType(get_u16(self.buf.as_ref(), self.header_len() - 2))
    }

    /// 14, or 18 for a tagged frame.
    #[inline]
    pub fn header_len(&self) -> usize {
        if self.is_tagged() {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Everything after the header, link padding included.
    #[inline]
    pub fn payload(&self) -> &[u8] {
        &self.buf.as_ref()[self.header_len()..]
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EthernetFrame<T> {
    /// The whole frame, mutable.
    #[inline]
    pub fn as_bytes_mut(&mut self) -> &mut [u8] {
        self.buf.as_mut()
    }
    /// Sets the destination MAC.
    #[inline]
    pub fn set_dst(&mut self, m: MacAddr) {
        self.buf.as_mut()[field::DST..field::DST + 6].copy_from_slice(&m.0);
    }
    /// Sets the source MAC.
    #[inline]
    pub fn set_src(&mut self, m: MacAddr) {
        self.buf.as_mut()[field::SRC..field::SRC + 6].copy_from_slice(&m.0);
    }
    /// Sets the EtherType at offset 12 (0x8100 here makes the frame tagged).
    #[inline]
    pub fn set_outer_ethertype(&mut self, t: EtherType) {
        set_u16(self.buf.as_mut(), field::ETHERTYPE, t.0)
    }
    /// Sets the TCI of a tagged frame (offset 14).
    #[inline]
    pub fn set_vlan_tci(&mut self, tci: VlanTci) {
        set_u16(self.buf.as_mut(), field::TCI, tci.0)
    }
    /// Sets the payload's EtherType (after the tag of a tagged frame).
    #[inline]
    pub fn set_ethertype(&mut self, t: EtherType) {
        let at = self.header_len() - 2;
        set_u16(self.buf.as_mut(), at, t.0)
    }
    /// Everything after the header, mutable.
    #[inline]
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let h = self.header_len();
        &mut self.buf.as_mut()[h..]
    }
}

/// The meaningful fields of an Ethernet II header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EthernetRepr {
    /// Destination MAC.
    pub dst: MacAddr,
    /// Source MAC.
    pub src: MacAddr,
    /// The 802.1Q tag, if any.
    pub vlan: Option<VlanTci>,
    /// The payload's EtherType.
    pub ethertype: EtherType,
    /// Bytes after the header (Ethernet has no length field: parse counts to the end of
    /// the buffer, link padding included).
    pub payload_len: usize,
}

impl EthernetRepr {
    /// Reads the header of a checked frame.
    pub fn parse<T: AsRef<[u8]>>(f: &EthernetFrame<T>) -> Result<EthernetRepr> {
        Ok(EthernetRepr {
            dst: f.dst(),
            src: f.src(),
            vlan: f.vlan(),
            ethertype: f.ethertype(),
            payload_len: f.payload().len(),
        })
    }

    /// 14, or 18 with a tag.
    pub fn header_len(&self) -> usize {
        if self.vlan.is_some() {
            HEADER_LEN + VLAN_TAG_LEN
        } else {
            HEADER_LEN
        }
    }

    /// Header plus payload.
    pub fn buffer_len(&self) -> usize {
        self.header_len() + self.payload_len
    }

    /// Writes the header to the front of `f`'s buffer, which must hold `header_len()`
    /// bytes. The payload is the caller's.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, f: &mut EthernetFrame<T>) -> Result<()> {
        if self.ethertype.0 < MIN_ETHERTYPE || self.ethertype.is_vlan_tag() {
            return Err(Error::Malformed {
                what: "ethernet",
                field: "ethertype",
            });
        }
        need("ethernet", f.buf.as_ref(), self.header_len())?;
        f.set_dst(self.dst);
        f.set_src(self.src);
        if let Some(tci) = self.vlan {
            f.set_outer_ethertype(EtherType::VLAN);
            f.set_vlan_tci(tci);
        } else {
            f.set_outer_ethertype(self.ethertype);
        }
        f.set_ethertype(self.ethertype);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ipv4::Ipv4Packet;
    use proptest::prelude::*;

    /// scapy: Ether(src="52:54:00:12:34:56", dst="02:00:00:00:00:01")/Dot1Q(prio=3, vlan=100)/IP(src="10.0.0.5", dst="10.0.0.1")/ICMP(type=8, id=1, seq=1)
    const VLAN_FRAME: [u8; 46] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x81, 0x00, 0x60,
        0x64, 0x08, 0x00, 0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00, 0x40, 0x01, 0x66, 0xdb,
        0x0a, 0x00, 0x00, 0x05, 0x0a, 0x00, 0x00, 0x01, 0x08, 0x00, 0xf7, 0xfd, 0x00, 0x01, 0x00,
        0x01,
    ];

    /// scapy: Ether(src="52:54:00:12:34:56", dst="02:00:00:00:00:01")/Dot1AD(vlan=10)/Dot1Q(vlan=100)/IP(src="10.0.0.5", dst="10.0.0.1")/ICMP()
    const QINQ_FRAME: [u8; 50] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x88, 0xa8, 0x00,
        0x0a, 0x81, 0x00, 0x00, 0x64, 0x08, 0x00, 0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00,
        0x40, 0x01, 0x66, 0xdb, 0x0a, 0x00, 0x00, 0x05, 0x0a, 0x00, 0x00, 0x01, 0x08, 0x00, 0xf7,
        0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    /// scapy: Ether(src="52:54:00:12:34:56", dst="02:00:00:00:00:01")/Dot1Q(vlan=10)/Dot1Q(vlan=100)/IP(src="10.0.0.5", dst="10.0.0.1")/ICMP()
    const DOUBLE_8100_FRAME: [u8; 50] = [
        0x02, 0x00, 0x00, 0x00, 0x00, 0x01, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x81, 0x00, 0x00,
        0x0a, 0x81, 0x00, 0x00, 0x64, 0x08, 0x00, 0x45, 0x00, 0x00, 0x1c, 0x00, 0x01, 0x00, 0x00,
        0x40, 0x01, 0x66, 0xdb, 0x0a, 0x00, 0x00, 0x05, 0x0a, 0x00, 0x00, 0x01, 0x08, 0x00, 0xf7,
        0xff, 0x00, 0x00, 0x00, 0x00,
    ];

    /// scapy: Ether(src="52:54:00:12:34:56", dst="ff:ff:ff:ff:ff:ff")/ARP(op=1, ...), the
    /// Ethernet header of the ARP fixture in `arp.rs`.
    const BROADCAST_HDR: [u8; 14] = [
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x52, 0x54, 0x00, 0x12, 0x34, 0x56, 0x08, 0x06,
    ];

    const NODE: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0x56]);
    const ROUTER: MacAddr = MacAddr([0x02, 0, 0, 0, 0, 1]);

    #[test]
    fn parses_a_tagged_frame() {
        let f = EthernetFrame::new_checked(&VLAN_FRAME[..]).unwrap();
        assert_eq!(f.dst(), ROUTER);
        assert_eq!(f.src(), NODE);
        assert_eq!(f.vlan(), Some(VlanTci::new(3, false, 100)));
        assert_eq!(f.vlan().unwrap().pcp(), 3);
        assert_eq!(f.vlan().unwrap().vid(), 100);
        assert_eq!(f.ethertype(), EtherType::IPV4);
        assert_eq!(f.header_len(), 18);
        let ip = Ipv4Packet::new_checked(f.payload()).unwrap();
        assert!(ip.verify_checksum());
        let r = EthernetRepr::parse(&f).unwrap();
        assert_eq!(r.buffer_len(), VLAN_FRAME.len());
        let mut out = [0u8; 46];
        out[18..].copy_from_slice(&VLAN_FRAME[18..]);
        r.emit(&mut EthernetFrame::new_unchecked(&mut out[..]))
            .unwrap();
        assert_eq!(out, VLAN_FRAME);
    }

    #[test]
    fn parses_an_untagged_broadcast() {
        let f = EthernetFrame::new_checked(&BROADCAST_HDR[..]).unwrap();
        assert!(f.dst().is_broadcast() && f.dst().is_multicast());
        // QEMU's 52:54:00 prefix has the U/L bit set.
        assert!(f.src().is_unicast() && f.src().is_locally_administered());
        assert!(!MacAddr([0x00, 0x16, 0x3e, 1, 2, 3]).is_locally_administered());
        assert_eq!(f.vlan(), None);
        assert_eq!(f.ethertype(), EtherType::ARP);
        assert!(f.payload().is_empty());
    }

    #[test]
    fn refuses_second_tags_and_short_frames() {
        for frame in [&QINQ_FRAME[..], &DOUBLE_8100_FRAME[..]] {
            assert!(matches!(
                EthernetFrame::new_checked(frame),
                Err(Error::Unsupported { .. })
            ));
        }
        for n in 0..18 {
            assert!(EthernetFrame::new_checked(&VLAN_FRAME[..n]).is_err(), "{n}");
        }
        let mut llc = BROADCAST_HDR;
        llc[12..14].copy_from_slice(&46u16.to_be_bytes());
        assert!(matches!(
            EthernetFrame::new_checked(&llc[..]),
            Err(Error::Unsupported { .. })
        ));
    }

    #[test]
    fn mac_text_and_bits() {
        assert_eq!(NODE.to_string(), "52:54:00:12:34:56");
        assert_eq!("52:54:00:12:34:56".parse::<MacAddr>().unwrap(), NODE);
        assert_eq!("02-00-00-00-00-01".parse::<MacAddr>().unwrap(), ROUTER);
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "525:4:00:12:34:56",
            "zz:54:00:12:34:56",
            "52::00:12:34:56",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
        assert!(ROUTER.is_locally_administered() && ROUTER.is_unicast());
        assert!(MacAddr([0x01, 0x00, 0x5e, 0, 0, 1]).is_multicast());
        assert!(MacAddr::ZERO.is_zero());
        assert_eq!(format!("{:?}", ROUTER), "MacAddr(02:00:00:00:00:01)");
    }

    prop_compose! {
        fn arb_repr()(
            dst in any::<[u8; 6]>(), src in any::<[u8; 6]>(), tci in proptest::option::of(any::<u16>()),
            ethertype in MIN_ETHERTYPE..=u16::MAX, payload_len in 0usize..100,
        ) -> EthernetRepr {
            let ethertype = if EtherType(ethertype).is_vlan_tag() { EtherType::IPV4 } else { EtherType(ethertype) };
            EthernetRepr { dst: MacAddr(dst), src: MacAddr(src), vlan: tci.map(VlanTci), ethertype, payload_len }
        }
    }

    proptest! {
        #[test]
        fn parse_emit_roundtrip(repr in arb_repr()) {
            let mut buf = vec![0u8; repr.buffer_len()];
            repr.emit(&mut EthernetFrame::new_unchecked(&mut buf[..])).unwrap();
            let f = EthernetFrame::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(EthernetRepr::parse(&f).unwrap(), repr);
        }

        #[test]
        fn tci_roundtrip(pcp in 0u8..8, dei in any::<bool>(), vid in 0u16..4096) {
            let t = VlanTci::new(pcp, dei, vid);
            prop_assert_eq!((t.pcp(), t.dei(), t.vid()), (pcp, dei, vid));
        }

        #[test]
        fn mac_display_parses_back(m in any::<[u8; 6]>()) {
            prop_assert_eq!(MacAddr(m).to_string().parse::<MacAddr>().unwrap(), MacAddr(m));
        }

        #[test]
        fn arbitrary_bytes_never_panic(mut bytes in proptest::collection::vec(any::<u8>(), 0..40), tags in 0u8..3) {
            // Random bytes rarely hold a TPID: plant one (or two) in half of the cases.
            if tags > 0 && bytes.len() >= 14 {
                bytes[12..14].copy_from_slice(&[0x81, 0x00]);
            }
            if tags > 1 && bytes.len() >= 18 {
                bytes[16..18].copy_from_slice(&[0x81, 0x00]);
            }
            if let Ok(f) = EthernetFrame::new_checked(&bytes[..]) {
                let _ = EthernetRepr::parse(&f);
                let _ = (f.dst(), f.src(), f.vlan(), f.ethertype(), f.payload(), f.header_len());
            }
            let _ = MacAddr::from_bytes(&bytes);
        }
    }
}
