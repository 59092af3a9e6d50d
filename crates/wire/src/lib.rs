//! Zero-copy views and builders for the packet formats Canopy's data path touches.
//!
//! Every header has the same three pieces, in the manner of smoltcp:
//!
//! - a **view** `Foo<T: AsRef<[u8]>>` over borrowed bytes. `Foo::new_checked(buf)` verifies
//!   that every field the getters read lies inside `buf` and that length fields agree with
//!   each other; after that the getters cannot read out of bounds. `Foo::new_unchecked` skips
//!   the checks for a buffer the caller has just written. Setters exist when `T: AsMut<[u8]>`.
//! - a **repr** `FooRepr`, a plain struct of the header's meaningful fields, with
//!   `parse(&view) -> Result<FooRepr>`, `buffer_len()` and `emit(&mut view)`. Reprs are what
//!   tests build packets from and what property tests round-trip.
//! - constants for the field values the rest of Canopy names.
//!
//! Nothing here allocates or does I/O; malformed input is an [`Error`], never a panic.

pub mod arp;
pub mod checksum;
pub mod dhcpv4;
pub mod ethernet;
pub mod icmpv4;
pub mod icmpv6;
pub mod ipv4;
pub mod ipv6;
pub mod tcp;
pub mod udp;
pub mod virtio;

use core::fmt;

/// Why a buffer is not a well-formed header of the kind asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// The buffer ends before the header (or the length it announces) does.
    #[error("{what}: truncated ({have} bytes, need {need})")]
    Truncated {
        what: &'static str,
        need: usize,
        have: usize,
    },
    /// A field holds a value that makes the header meaningless (bad version, a length
    /// shorter than the fixed header, an option running past its header, ...).
    #[error("{what}: malformed {field}")]
    Malformed {
        what: &'static str,
        field: &'static str,
    },
    /// Well formed but of a kind this crate does not handle (an unknown hardware type,
    /// a second VLAN tag, ...).
    #[error("{what}: unsupported {field}")]
    Unsupported {
        what: &'static str,
        field: &'static str,
    },
}

pub type Result<T> = core::result::Result<T, Error>;

/// Returns `Truncated` unless `buf` holds at least `need` bytes.
#[inline]
pub(crate) fn need(what: &'static str, buf: &[u8], need: usize) -> Result<()> {
    if buf.len() < need {
        Err(Error::Truncated {
            what,
            need,
            have: buf.len(),
        })
    } else {
        Ok(())
    }
}

#[inline(always)]
pub(crate) fn get_u16(buf: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([buf[at], buf[at + 1]])
}

#[inline(always)]
pub(crate) fn get_u32(buf: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]])
}

#[inline(always)]
pub(crate) fn set_u16(buf: &mut [u8], at: usize, v: u16) {
    buf[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

#[inline(always)]
pub(crate) fn set_u32(buf: &mut [u8], at: usize, v: u32) {
    buf[at..at + 4].copy_from_slice(&v.to_be_bytes());
}

/// IP protocol numbers (IPv4 "protocol", IPv6 "next header") that Canopy names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct IpProtocol(pub u8);

impl IpProtocol {
    pub const HOPOPT: IpProtocol = IpProtocol(0);
    pub const ICMP: IpProtocol = IpProtocol(1);
    pub const IGMP: IpProtocol = IpProtocol(2);
    pub const TCP: IpProtocol = IpProtocol(6);
    pub const UDP: IpProtocol = IpProtocol(17);
    pub const IPV6_ROUTE: IpProtocol = IpProtocol(43);
    pub const IPV6_FRAG: IpProtocol = IpProtocol(44);
    pub const GRE: IpProtocol = IpProtocol(47);
    pub const ESP: IpProtocol = IpProtocol(50);
    pub const AH: IpProtocol = IpProtocol(51);
    pub const ICMPV6: IpProtocol = IpProtocol(58);
    pub const IPV6_NONXT: IpProtocol = IpProtocol(59);
    pub const IPV6_OPTS: IpProtocol = IpProtocol(60);
    pub const MOBILITY: IpProtocol = IpProtocol(135);
    pub const HIP: IpProtocol = IpProtocol(139);
    pub const SHIM6: IpProtocol = IpProtocol(140);
    pub const EXP1: IpProtocol = IpProtocol(253);
    pub const EXP2: IpProtocol = IpProtocol(254);

    /// True for the IPv6 extension headers that are walked over to find the upper layer:
    /// hop-by-hop options, routing and destination options (the `next header, length in
    /// 8-octet units - 1` layout). The fragment header is handled on its own. AH,
    /// Mobility, HIP and Shim6 are treated as the upper layer, as RFC 7915 section 5.1
    /// does: a translator copies them, it does not skip them.
    pub fn is_skipped_ipv6_ext(self) -> bool {
        matches!(self.0, 0 | 43 | 60)
    }
}

impl fmt::Display for IpProtocol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            IpProtocol::ICMP => f.write_str("icmp"),
            IpProtocol::TCP => f.write_str("tcp"),
            IpProtocol::UDP => f.write_str("udp"),
            IpProtocol::ICMPV6 => f.write_str("icmpv6"),
            IpProtocol(n) => write!(f, "proto-{n}"),
        }
    }
}
