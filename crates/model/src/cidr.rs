//! IPv4 prefixes (`10.0.0.0/16`), as route tables, subnets and rules use them.

use core::fmt;
use core::net::Ipv4Addr;
use core::str::FromStr;

/// An IPv4 prefix; host bits are always zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ipv4Cidr {
    addr: u32,
    len: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CidrError {
    #[error("{0:?} is not an IPv4 prefix (expected a.b.c.d/len)")]
    Syntax(String),
    #[error("prefix length {0} is over 32")]
    Length(u8),
    #[error("{0} has host bits set (did you mean {1}?)")]
    HostBits(String, Ipv4Cidr),
}

impl Ipv4Cidr {
    /// The whole IPv4 space, `0.0.0.0/0`.
    pub const DEFAULT: Ipv4Cidr = Ipv4Cidr { addr: 0, len: 0 };

    /// A prefix; host bits must be zero.
    pub fn new(addr: Ipv4Addr, len: u8) -> Result<Self, CidrError> {
        if len > 32 {
            return Err(CidrError::Length(len));
        }
        let c = Ipv4Cidr::truncating(addr, len);
        if c.addr != u32::from(addr) {
            return Err(CidrError::HostBits(format!("{addr}/{len}"), c));
        }
        Ok(c)
    }

    /// The prefix of length `len` that contains `addr`. `len` over 32 counts as 32.
    pub fn truncating(addr: Ipv4Addr, len: u8) -> Self {
        let len = len.min(32);
        Ipv4Cidr {
            addr: u32::from(addr) & mask(len),
            len,
        }
    }

    pub const fn prefix_len(&self) -> u8 {
        self.len
    }

    pub fn network(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr)
    }

    pub const fn mask(&self) -> u32 {
        mask(self.len)
    }

    pub fn netmask(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.mask())
    }

    pub fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(self.addr | !self.mask())
    }

    /// Number of addresses in the prefix.
    pub const fn size(&self) -> u64 {
        1u64 << (32 - self.len)
    }

    #[inline]
    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == self.addr
    }

    /// True if every address of `other` is in `self`.
    pub fn covers(&self, other: &Ipv4Cidr) -> bool {
        self.len <= other.len && other.addr & self.mask() == self.addr
    }

    pub fn overlaps(&self, other: &Ipv4Cidr) -> bool {
        self.covers(other) || other.covers(self)
    }

    /// The `n`th address of the prefix (`0` is the network address), if it exists.
    pub fn nth(&self, n: u64) -> Option<Ipv4Addr> {
        (n < self.size()).then(|| Ipv4Addr::from(self.addr + n as u32))
    }
}

const fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - len as u32)
    }
}

impl fmt::Display for Ipv4Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network(), self.len)
    }
}

impl FromStr for Ipv4Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || CidrError::Syntax(s.to_string());
        let (a, l) = s.trim().split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        if l.is_empty() || l.len() > 2 || !l.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        Ipv4Cidr::new(addr, l.parse().map_err(|_| bad())?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parse_and_show() {
        let c: Ipv4Cidr = "10.0.0.0/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.0.0.0/16");
        assert!(c.contains("10.0.255.1".parse().unwrap()));
        assert!(!c.contains("10.1.0.1".parse().unwrap()));
        assert_eq!(c.netmask(), Ipv4Addr::new(255, 255, 0, 0));
        assert_eq!(c.nth(1), Some(Ipv4Addr::new(10, 0, 0, 1)));
        assert_eq!(c.size(), 65536);
        assert!(matches!(
            "10.0.0.1/16".parse::<Ipv4Cidr>(),
            Err(CidrError::HostBits(..))
        ));
        for bad in [
            "10.0.0.0",
            "10.0.0.0/33",
            "10.0.0/8",
            "x/8",
            "10.0.0.0/-1",
            "10.0.0.0/",
        ] {
            assert!(bad.parse::<Ipv4Cidr>().is_err(), "{bad}");
        }
        assert!(Ipv4Cidr::DEFAULT.contains(Ipv4Addr::new(203, 0, 113, 9)));
    }

    proptest! {
        #[test]
        fn truncating_contains_its_address(a in any::<u32>(), len in 0u8..=32) {
            let ip = Ipv4Addr::from(a);
            let c = Ipv4Cidr::truncating(ip, len);
            prop_assert!(c.contains(ip));
            prop_assert_eq!(c.to_string().parse::<Ipv4Cidr>().unwrap(), c);
            prop_assert!(Ipv4Cidr::DEFAULT.covers(&c));
        }
    }
}
