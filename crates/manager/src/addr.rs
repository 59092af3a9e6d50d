//! Address arithmetic the manager needs: IPv4 CIDRs, the substrate prefix that locators are
//! carved from, and deterministic MACs.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};
use core::str::FromStr;

use model::substrate::LOCATOR_BITS;
use model::{Locator, NetworkId};

/// An IPv4 prefix with no host bits set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cidr {
    /// First address, as a number.
    pub addr: u32,
    /// Prefix length, 0..=32.
    pub len: u8,
}

/// Why a string is not a CIDR.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    /// Not `a.b.c.d/n`.
    #[error("{0:?} is not an IPv4 CIDR (a.b.c.d/n)")]
    Syntax(String),
    /// Host bits are set.
    #[error("{given} has host bits set; did you mean {suggest}?")]
    HostBits {
        /// What was given.
        given: String,
        /// The prefix it lies in.
        suggest: String,
    },
}

impl Cidr {
    /// Number of addresses.
    pub fn size(&self) -> u64 {
        1u64 << (32 - self.len)
    }
    /// Netmask as a number.
    pub fn mask(&self) -> u32 {
        if self.len == 0 {
            0
        } else {
            u32::MAX << (32 - self.len)
        }
    }
    /// First address.
    pub fn first(&self) -> u32 {
        self.addr
    }
    /// Last address (broadcast).
    pub fn last(&self) -> u32 {
        self.addr | !self.mask()
    }
    /// Whether `ip` lies inside.
    pub fn contains(&self, ip: u32) -> bool {
        ip & self.mask() == self.addr
    }
    /// Whether `other` lies entirely inside.
    pub fn covers(&self, other: &Cidr) -> bool {
        other.len >= self.len && self.contains(other.addr)
    }
    /// Whether the two share any address.
    pub fn overlaps(&self, other: &Cidr) -> bool {
        self.first() <= other.last() && other.first() <= self.last()
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || CidrError::Syntax(s.to_string());
        let (a, l) = s.split_once('/').ok_or_else(syntax)?;
        let ip: Ipv4Addr = a.parse().map_err(|_| syntax())?;
        if l.is_empty() || l.len() > 2 || !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(syntax());
        }
        let len: u8 = l.parse().map_err(|_| syntax())?;
        if len > 32 {
            return Err(syntax());
        }
        let c = Cidr {
            addr: u32::from(ip),
            len,
        };
        let masked = Cidr {
            addr: c.addr & c.mask(),
            len,
        };
        if masked != c {
            return Err(CidrError::HostBits {
                given: s.to_string(),
                suggest: masked.to_string(),
            });
        }
        Ok(c)
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.addr), self.len)
    }
}

/// The IPv6 prefix that host, edge and anycast locators (/72 each) are carved from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SubstratePrefix {
    /// The prefix's address bits.
    pub addr: u128,
    /// Its length, 8..=71.
    pub len: u8,
}

impl SubstratePrefix {
    /// The default prefix, `fd63:6e73::/32`.
    pub const DEFAULT: &'static str = "fd63:6e73::/32";

    /// Highest locator index (index 0, the prefix itself, is never handed out).
    pub fn max_index(&self) -> u64 {
        let bits = u32::from(LOCATOR_BITS - self.len);
        if bits >= 64 {
            u64::MAX
        } else {
            (1u64 << bits) - 1
        }
    }

    /// The `index`-th /72 inside the prefix, or `None` past the end.
    pub fn locator(&self, index: u64) -> Option<Locator> {
        if index == 0 || index > self.max_index() {
            return None;
        }
        let shift = 128 - u32::from(LOCATOR_BITS);
        let a = self.addr | (u128::from(index) << shift);
        Some(Locator::from_prefix(Ipv6Addr::from(a)))
    }
}

impl FromStr for SubstratePrefix {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (a, l) = s
            .split_once('/')
            .ok_or_else(|| format!("{s:?} is not an IPv6 prefix (addr/len)"))?;
        let addr: Ipv6Addr = a
            .parse()
            .map_err(|_| format!("{a:?} is not an IPv6 address"))?;
        let len: u8 = l
            .parse()
            .map_err(|_| format!("{l:?} is not a prefix length"))?;
        if !(8..LOCATOR_BITS).contains(&len) {
            return Err(format!(
                "prefix length must be 8..={} to hold /{LOCATOR_BITS} locators",
                LOCATOR_BITS - 1
            ));
        }
        let addr = u128::from(addr);
        let mask = u128::MAX << (128 - u32::from(len));
        if addr & !mask != 0 {
            return Err(format!("{s} has bits set past /{len}"));
        }
        Ok(SubstratePrefix { addr, len })
    }
}

impl fmt::Display for SubstratePrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv6Addr::from(self.addr), self.len)
    }
}

/// The MAC of the address `ip` in network `vni`: `02:VV:VV:VV:HH:LL`, locally administered
/// and unicast, with the 24-bit network id and the low 16 bits of the address. Networks are
/// at most /16, so this is unique across all networks and can be read back when debugging.
/// A subnet's gateway (router) MAC is the same function of the gateway address.
pub fn mac_for(vni: NetworkId, ip: u32) -> String {
    let v = vni.get();
    format!(
        "02:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
        (v >> 16) & 0xff,
        (v >> 8) & 0xff,
        v & 0xff,
        (ip >> 8) & 0xff,
        ip & 0xff
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidr_parse_and_relations() {
        let n: Cidr = "10.0.0.0/16".parse().unwrap();
        assert_eq!(n.size(), 65536);
        assert_eq!(n.last(), u32::from(Ipv4Addr::new(10, 0, 255, 255)));
        let s: Cidr = "10.0.1.0/24".parse().unwrap();
        assert!(n.covers(&s) && !s.covers(&n) && n.overlaps(&s));
        let t: Cidr = "10.1.0.0/24".parse().unwrap();
        assert!(!n.covers(&t) && !n.overlaps(&t));
        assert!(matches!(
            "10.0.0.1/16".parse::<Cidr>(),
            Err(CidrError::HostBits { .. })
        ));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/+8",
            "10.0.0.0/",
        ] {
            assert!(
                matches!(bad.parse::<Cidr>(), Err(CidrError::Syntax(_))),
                "{bad}"
            );
        }
        assert_eq!("0.0.0.0/0".parse::<Cidr>().unwrap().size(), 1 << 32);
    }

    #[test]
    fn locators_are_carved_in_order() {
        let p: SubstratePrefix = SubstratePrefix::DEFAULT.parse().unwrap();
        assert_eq!(p.locator(0), None);
        assert_eq!(p.locator(1).unwrap().to_string(), "fd63:6e73:0:0:100::/72");
        assert_eq!(p.locator(256).unwrap().to_string(), "fd63:6e73:0:1::/72");
        let small: SubstratePrefix = "fd00::/70".parse().unwrap();
        assert_eq!(small.max_index(), 3);
        assert!(small.locator(3).is_some() && small.locator(4).is_none());
        assert!("fd00::/72".parse::<SubstratePrefix>().is_err());
        assert!("fd00::1/64".parse::<SubstratePrefix>().is_err());
    }

    #[test]
    fn macs_are_local_unicast_and_distinct() {
        let a = mac_for(NetworkId::new(0x0a0b0c).unwrap(), 0x0a00_0105);
        assert_eq!(a, "02:0a:0b:0c:01:05");
        let b = mac_for(NetworkId::new(0x0a0b0d).unwrap(), 0x0a00_0105);
        assert_ne!(a, b);
    }
}
