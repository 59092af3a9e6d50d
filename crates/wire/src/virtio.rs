//! `struct virtio_net_hdr` (virtio spec 5.1.6), the metadata a Linux TAP/TUN device opened
//! with `IFF_VNET_HDR` puts before each packet: checksum offload (`NEEDS_CSUM`: the L4
//! checksum field holds only the pseudo-header sum, to be completed from `csum_start`) and
//! segmentation offload (a super-packet of up to 64 KiB to be cut into `gso_size` pieces).
//!
//! Linux uses the host's byte order unless `TUNSETVNETLE`/`TUNSETVNETBE` says otherwise;
//! Canopy sets little-endian explicitly, so the fields here are little-endian.

use crate::{need, Result};

pub const HEADER_LEN: usize = 10;

pub const FLAG_NEEDS_CSUM: u8 = 1;
pub const FLAG_DATA_VALID: u8 = 2;

pub const GSO_NONE: u8 = 0;
pub const GSO_TCPV4: u8 = 1;
pub const GSO_UDP: u8 = 3;
pub const GSO_TCPV6: u8 = 4;
pub const GSO_UDP_L4: u8 = 5;
/// Or'ed into `gso_type` when the TCP super-packet has ECN CWR set on its first segment.
pub const GSO_ECN: u8 = 0x80;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VirtioNetHdr {
    pub flags: u8,
    pub gso_type: u8,
    /// Length of the headers to copy into every segment (L2 + L3 + L4 for TAP).
    pub hdr_len: u16,
    /// Payload bytes per segment.
    pub gso_size: u16,
    /// Where checksumming starts, from the start of the packet the device sees.
    pub csum_start: u16,
    /// Where the checksum goes, from `csum_start`.
    pub csum_offset: u16,
}

impl VirtioNetHdr {
    pub fn parse(b: &[u8]) -> Result<VirtioNetHdr> {
        need("virtio_net_hdr", b, HEADER_LEN)?;
        let le = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        Ok(VirtioNetHdr {
            flags: b[0],
            gso_type: b[1],
            hdr_len: le(2),
            gso_size: le(4),
            csum_start: le(6),
            csum_offset: le(8),
        })
    }

    pub fn emit(&self, b: &mut [u8]) -> Result<()> {
        need("virtio_net_hdr", b, HEADER_LEN)?;
        b[0] = self.flags;
        b[1] = self.gso_type;
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        Ok(())
    }

    #[inline]
    pub fn needs_csum(&self) -> bool {
        self.flags & FLAG_NEEDS_CSUM != 0
    }

    /// The GSO type without the ECN bit.
    #[inline]
    pub fn gso_kind(&self) -> u8 {
        self.gso_type & !GSO_ECN
    }

    #[inline]
    pub fn is_gso(&self) -> bool {
        self.gso_kind() != GSO_NONE
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn roundtrip(flags in any::<u8>(), gso_type in any::<u8>(), a in any::<u16>(), b in any::<u16>(), c in any::<u16>(), d in any::<u16>()) {
            let h = VirtioNetHdr { flags, gso_type, hdr_len: a, gso_size: b, csum_start: c, csum_offset: d };
            let mut buf = [0u8; HEADER_LEN];
            h.emit(&mut buf).unwrap();
            prop_assert_eq!(VirtioNetHdr::parse(&buf).unwrap(), h);
        }
    }

    #[test]
    fn layout_is_little_endian() {
        let h = VirtioNetHdr::parse(&[1, 1, 66, 0, 0xa8, 0x05, 34, 0, 16, 0]).unwrap();
        assert!(h.needs_csum() && h.is_gso());
        assert_eq!(
            (h.hdr_len, h.gso_size, h.csum_start, h.csum_offset),
            (66, 1448, 34, 16)
        );
        assert!(VirtioNetHdr::parse(&[0; 9]).is_err());
    }
}
