//! The IPv6 substrate address: `locator (72 bits) | network id (24 bits) | IPv4 (32 bits)`.
//!
//! Every agent and edge owns a /72 locator; the substrate routes on it. The low 56 bits
//! name a virtual address inside one tenant network, so a packet's substrate addresses
//! say which network it belongs to and which virtual addresses it is between, with no
//! encapsulation (the seed's `0B 02 <net> 10.0.0.3` example).

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

/// Length of a locator prefix in bits.
pub const LOCATOR_BITS: u8 = 72;

/// A 24-bit virtual network identifier, unique per tenant network.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NetworkId(u32);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubstrateError {
    #[error("network id {0} is out of range (0..=16777215, 24 bits)")]
    NetworkIdRange(u64),
    #[error("network id {0:?} is not a number")]
    NetworkIdSyntax(String),
    #[error("locator {0:?} is not an IPv6 address")]
    LocatorSyntax(String),
}

impl NetworkId {
    pub const MAX: u32 = (1 << 24) - 1;

    /// A network id, if `v` fits in 24 bits.
    pub const fn new(v: u32) -> Result<Self, SubstrateError> {
        if v > Self::MAX {
            Err(SubstrateError::NetworkIdRange(v as u64))
        } else {
            Ok(NetworkId(v))
        }
    }

    pub const fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for NetworkId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl FromStr for NetworkId {
    type Err = SubstrateError;
    /// Decimal, or hexadecimal with a `0x` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let v = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse::<u64>(),
        }
        .map_err(|_| SubstrateError::NetworkIdSyntax(s.to_string()))?;
        if v > Self::MAX as u64 {
            return Err(SubstrateError::NetworkIdRange(v));
        }
        Ok(NetworkId(v as u32))
    }
}

/// The 72-bit prefix that routes substrate traffic to one agent or edge.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locator([u8; 9]);

impl Locator {
    pub const fn from_bytes(b: [u8; 9]) -> Self {
        Locator(b)
    }

    pub const fn as_bytes(&self) -> &[u8; 9] {
        &self.0
    }

    /// The /72 prefix of `addr`; the low 56 bits are ignored.
    pub fn from_prefix(addr: Ipv6Addr) -> Self {
        let o = addr.octets();
        let mut b = [0u8; 9];
        b.copy_from_slice(&o[..9]);
        Locator(b)
    }

    /// The locator as an address with the low 56 bits zero (`fd63:6e73::/72` style).
    pub fn to_addr(self) -> Ipv6Addr {
        let mut o = [0u8; 16];
        o[..9].copy_from_slice(&self.0);
        Ipv6Addr::from(o)
    }
}

impl fmt::Debug for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Locator({self})")
    }
}

impl fmt::Display for Locator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.to_addr(), LOCATOR_BITS)
    }
}

impl FromStr for Locator {
    type Err = SubstrateError;
    /// An IPv6 address, optionally written with a `/72` suffix; bits past 72 are ignored.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim();
        let addr = t.strip_suffix("/72").unwrap_or(t);
        addr.parse::<Ipv6Addr>()
            .map(Locator::from_prefix)
            .map_err(|_| SubstrateError::LocatorSyntax(s.to_string()))
    }
}

/// A substrate address taken apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SubstrateAddr {
    pub locator: Locator,
    pub network: NetworkId,
    pub vip: Ipv4Addr,
}

impl SubstrateAddr {
    pub const fn new(locator: Locator, network: NetworkId, vip: Ipv4Addr) -> Self {
        SubstrateAddr {
            locator,
            network,
            vip,
        }
    }

    /// The 16 address bytes, as written into an IPv6 header.
    #[inline]
    pub fn octets(&self) -> [u8; 16] {
        encode(&self.locator, self.network, self.vip.octets())
    }

    #[inline]
    pub fn to_addr(&self) -> Ipv6Addr {
        Ipv6Addr::from(self.octets())
    }

    /// Splits an address into its three parts. Every IPv6 address decodes; whether the
    /// locator and network mean anything is for the caller to check.
    #[inline]
    pub fn decode(o: &[u8; 16]) -> Self {
        let mut loc = [0u8; 9];
        loc.copy_from_slice(&o[..9]);
        SubstrateAddr {
            locator: Locator(loc),
            network: network_of(o),
            vip: Ipv4Addr::new(o[12], o[13], o[14], o[15]),
        }
    }
}

impl From<Ipv6Addr> for SubstrateAddr {
    fn from(a: Ipv6Addr) -> Self {
        SubstrateAddr::decode(&a.octets())
    }
}

impl fmt::Display for SubstrateAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (net {}, {})", self.to_addr(), self.network, self.vip)
    }
}

/// Writes `locator | network | ipv4` as 16 address bytes: the hot-path form.
#[inline(always)]
pub fn encode(locator: &Locator, network: NetworkId, ipv4: [u8; 4]) -> [u8; 16] {
    let l = &locator.0;
    let n = network.0.to_be_bytes();
    [
        l[0], l[1], l[2], l[3], l[4], l[5], l[6], l[7], l[8], n[1], n[2], n[3], ipv4[0], ipv4[1],
        ipv4[2], ipv4[3],
    ]
}

/// The network id bits of a substrate address.
#[inline(always)]
pub fn network_of(o: &[u8; 16]) -> NetworkId {
    NetworkId(u32::from_be_bytes([0, o[9], o[10], o[11]]))
}

/// The IPv4 bits of a substrate address.
#[inline(always)]
pub fn ipv4_of(o: &[u8; 16]) -> [u8; 4] {
    [o[12], o[13], o[14], o[15]]
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_seed_example_layout() {
        // Host S owns locator ...0B02 (here fd63:6e73:0:b:02::/72), node G is 10.0.0.3 in
        // network 0x00abcd.
        let loc: Locator = "fd63:6e73:0:b:200::".parse().unwrap();
        let net = NetworkId::new(0xabcd).unwrap();
        let a = SubstrateAddr::new(loc, net, Ipv4Addr::new(10, 0, 0, 3));
        assert_eq!(
            a.to_addr(),
            "fd63:6e73:0:b:200:abcd:a00:3".parse::<Ipv6Addr>().unwrap()
        );
        assert_eq!(SubstrateAddr::from(a.to_addr()), a);
        assert_eq!(loc.to_string(), "fd63:6e73:0:b:200::/72");
    }

    #[test]
    fn network_id_bounds() {
        assert!(NetworkId::new(NetworkId::MAX).is_ok());
        assert_eq!(
            NetworkId::new(1 << 24),
            Err(SubstrateError::NetworkIdRange(1 << 24))
        );
        assert_eq!("0xffffff".parse::<NetworkId>().unwrap().get(), 0xff_ffff);
        assert!("16777216".parse::<NetworkId>().is_err());
        assert!("-1".parse::<NetworkId>().is_err());
        assert!("ten".parse::<NetworkId>().is_err());
    }

    #[test]
    fn locator_parse_ignores_low_bits_and_rejects_ipv4() {
        let a: Locator = "fd00::1:2:3:4:5".parse().unwrap();
        let b: Locator = "fd00::1:0:0:0:0/72".parse().unwrap();
        assert_eq!(a.to_addr(), "fd00::1:0:0:0:0".parse::<Ipv6Addr>().unwrap());
        assert_eq!(a, Locator::from_prefix("fd00::1:2:3:4:5".parse().unwrap()));
        assert_eq!(b.to_addr().octets()[..9], a.to_addr().octets()[..9]);
        assert!("192.0.2.1".parse::<Locator>().is_err());
    }

    proptest! {
        #[test]
        fn roundtrip(loc in any::<[u8; 9]>(), net in 0u32..=NetworkId::MAX, ip in any::<[u8; 4]>()) {
            let a = SubstrateAddr::new(Locator::from_bytes(loc), NetworkId::new(net).unwrap(), ip.into());
            let o = a.octets();
            prop_assert_eq!(SubstrateAddr::decode(&o), a);
            prop_assert_eq!(network_of(&o).get(), net);
            prop_assert_eq!(ipv4_of(&o), ip);
            prop_assert_eq!(Locator::from_prefix(a.to_addr()), a.locator);
        }

        #[test]
        fn decode_then_encode_is_identity(o in any::<[u8; 16]>()) {
            prop_assert_eq!(SubstrateAddr::decode(&o).octets(), o);
        }
    }
}
