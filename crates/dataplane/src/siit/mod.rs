//! Stateless IP/ICMP translation (RFC 7915) between a tenant's IPv4 packets and the IPv6
//! substrate, with Canopy's address mapping: `locator (72) | network id (24) | IPv4 (32)`.
//!
//! - **encode** (IPv4 -> IPv6, RFC 7915 section 4): the sender's host (or edge) writes an
//!   IPv6 header in place of the IPv4 one. `src = map.src | net | IPv4 src`,
//!   `dst = map.dst | net | IPv4 dst`; across a peering the destination's network is the
//!   peer's ([`Translator::encode_with`]).
//! - **decode** (IPv6 -> IPv4, section 5): the receiver takes the low 32 bits of each
//!   address back, and reports the locators and network ids it found so the caller can
//!   check that the sender is who it claims to be.
//!
//! The translation works **in place**: the packet sits in a buffer with
//! [`HEADROOM`] free bytes before it, the IPv4 header is replaced by the (longer) IPv6
//! header and the payload is never copied. TCP and UDP checksums are fixed
//! incrementally (RFC 1624) for the new pseudo-header, so the cost does not depend on the
//! payload size, and a `virtio_net_hdr` that came with the packet (checksum offload,
//! segmentation offload of up to 64 KiB) is adjusted to describe the translated packet.
//!
//! ICMP is translated as the RFC says: echo types mapped, errors mapped with their codes,
//! pointers and MTUs, and the packet inside an error translated too. The inner packet
//! travelled the other way, so its source maps with the outer *destination* locator and
//! its destination with the outer *source* locator. Everything that cannot be translated
//! is dropped with a [`DropReason`] and counted.
//!
//! TTL: by default the hop limit is the TTL, unchanged: in Canopy the agent's router
//! emulation decrements TTL when it routes, and the substrate encoding is not a hop.
//! [`Config::decrement_ttl`] makes the translator act as an RFC 7915 router instead.

mod icmp;
#[cfg(test)]
mod tests;

pub use crate::buf::PacketBuf;
use crate::drops::{DropCounters, DropReason};
use model::substrate::{self, Locator, NetworkId, SubstrateAddr};
use wire::checksum;
use wire::ipv4::{self, Ipv4Packet};
use wire::ipv6::{self, FragRepr, Ipv6Packet};
use wire::virtio::{self, VirtioNetHdr};
use wire::IpProtocol;

/// Bytes a caller must leave free before a packet given to [`Translator::encode`]: the
/// IPv6 header is 20 bytes longer than IPv4's, a fragment header adds 8, and an ICMP error
/// grows by 40 (its inner header too). With less, the translator moves the payload, which
/// costs a copy.
pub const HEADROOM: usize = 48;

/// What the translator does with IPv4 UDP packets that carry no checksum (zero).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UdpZeroChecksum {
    /// Compute the checksum over the whole datagram (RFC 7915 section 4.5, the default;
    /// only possible for unfragmented packets, fragments are dropped).
    #[default]
    Compute,
    /// Drop every such packet.
    Drop,
}

/// Translator settings.
#[derive(Debug, Clone, Copy, Default)]
pub struct Config {
    /// Decrement TTL / hop limit and drop at zero, as a router would. Off in Canopy: the
    /// agent's router emulation decrements when it routes between subnets.
    pub decrement_ttl: bool,
    /// Largest IPv6 packet the substrate carries; larger translated packets (other than
    /// segmentation-offload super-packets) are dropped as [`DropReason::TooBig`]. It also
    /// caps the MTU of translated "fragmentation needed" messages.
    pub mtu: Option<u16>,
    pub udp_zero_checksum: UdpZeroChecksum,
}

/// Where the IPv6 addresses of an encoded packet point.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeMap {
    pub network: NetworkId,
    /// Locator of the sender (this host, or this edge).
    pub src: Locator,
    /// Locator of the receiver (the destination's host, or the chosen edge).
    pub dst: Locator,
}

/// Per-packet choices of [`Translator::encode_with`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeOpts {
    /// The destination's network: `map.network` but across a peering. The source address
    /// carries `map.network`, the destination address this, and the packet inside an
    /// ICMP error the same two reversed.
    pub dst_network: NetworkId,
    /// The packet was routed: it leaves with one hop less, as from a router. Cheaper than
    /// decrementing the TTL first: the IPv4 header and its checksum are not rewritten, the
    /// encoding drops them anyway. A packet that has no hop left is dropped
    /// ([`DropReason::TtlExceeded`]); the router answers it before.
    pub routed: bool,
}

/// The substrate addresses of a decoded packet, for the caller's checks (does the
/// source locator really host this network's source address?).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decoded {
    pub src: SubstrateAddr,
    pub dst: SubstrateAddr,
}

/// Counts of what the translator did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub translated: u64,
    pub drops: DropCounters,
}

impl Stats {
    pub fn dropped(&self, r: DropReason) -> u64 {
        self.drops.get(r)
    }

    /// Drop reasons with a non-zero count.
    pub fn drops(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        self.drops.iter()
    }
}

/// The translator: configuration, counters, and the IPv4 identification sequence for
/// decoded packets. One per worker; no locks, no allocation.
#[derive(Debug, Clone, Default)]
pub struct Translator {
    cfg: Config,
    stats: Stats,
    next_ident: u16,
}

pub(crate) fn wire_err(e: wire::Error) -> DropReason {
    match e {
        wire::Error::Truncated { .. } => DropReason::Truncated,
        _ => DropReason::Malformed,
    }
}

/// Offset of the checksum field in a TCP or UDP header, if the protocol has one that
/// covers the pseudo-header and Canopy fixes.
#[inline]
fn l4_checksum_offset(p: IpProtocol) -> Option<usize> {
    match p {
        IpProtocol::TCP => Some(16),
        IpProtocol::UDP => Some(6),
        _ => None,
    }
}

/// RFC 6438 flow label: a hash of the inner 5-tuple (and the network, so tenants with the
/// same addresses spread too), 20 bits, never zero. `ports` is `src << 16 | dst`, zero
/// for fragments and port-less protocols so every fragment of a datagram gets one label.
#[inline]
pub fn flow_label(network: NetworkId, src: [u8; 4], dst: [u8; 4], proto: u8, ports: u32) -> u32 {
    let a = ((u32::from_be_bytes(src) as u64) << 32) | u32::from_be_bytes(dst) as u64;
    let b = ((network.get() as u64) << 40) | ((proto as u64) << 32) | ports as u64;
    let mut h = a.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ b.wrapping_mul(0xc2b2_ae3d_27d4_eb4f);
    h ^= h >> 32;
    h = h.wrapping_mul(0x1656_67b1_9e37_79f9);
    h ^= h >> 29;
    let l = (h as u32) & 0x000f_ffff;
    if l == 0 {
        1
    } else {
        l
    }
}

/// Ports for the flow label of a TCP/UDP packet (0 for other protocols: an ICMP echo's
/// label hashes its identifier where ICMP is translated).
#[inline]
fn ports_of(proto: IpProtocol, l4: &[u8]) -> u32 {
    if proto == IpProtocol::TCP || proto == IpProtocol::UDP {
        crate::ports::FlowPorts::transport_word(l4).unwrap_or(0)
    } else {
        0
    }
}

/// The IPv6 header fields encode writes.
pub(crate) struct V6Header<'a> {
    pub tc: u8,
    pub flow: u32,
    /// The upper-layer protocol (after the fragment header, if any).
    pub next_header: IpProtocol,
    pub hop_limit: u8,
    pub src: &'a [u8; 16],
    pub dst: &'a [u8; 16],
    pub frag: Option<FragRepr>,
}

impl V6Header<'_> {
    /// Fixed header plus fragment header.
    #[inline]
    pub fn len(&self) -> usize {
        ipv6::HEADER_LEN
            + if self.frag.is_some() {
                ipv6::FRAG_HEADER_LEN
            } else {
                0
            }
    }

    /// Writes the header (and the fragment header) to the front of `out`, for an
    /// upper-layer payload of `upper_len` bytes.
    #[inline]
    pub fn write(&self, out: &mut [u8], upper_len: usize) {
        let payload_len = (upper_len + self.len() - ipv6::HEADER_LEN) as u16;
        let nh = match self.frag {
            Some(_) => IpProtocol::IPV6_FRAG,
            None => self.next_header,
        };
        // Assembled in registers and stored at once: one bounds check, no per-field ones.
        let mut h = [0u8; ipv6::HEADER_LEN];
        let vtf = (6u32 << 28) | ((self.tc as u32) << 20) | (self.flow & 0x000f_ffff);
        h[..4].copy_from_slice(&vtf.to_be_bytes());
        h[4..6].copy_from_slice(&payload_len.to_be_bytes());
        h[6] = nh.0;
        h[7] = self.hop_limit;
        h[8..24].copy_from_slice(self.src);
        h[24..40].copy_from_slice(self.dst);
        out[..ipv6::HEADER_LEN].copy_from_slice(&h);
        if let Some(f) = self.frag {
            let fb = &mut out[ipv6::HEADER_LEN..ipv6::HEADER_LEN + ipv6::FRAG_HEADER_LEN];
            // Only fails on a short buffer, and `fb` is exactly 8 bytes.
            let _ = f.emit(fb);
        }
    }

    /// Replaces the `old_hdr` bytes of header in front of the packet's `upper_len` bytes
    /// of payload with this header, in place.
    #[inline]
    pub fn put(
        &self,
        pkt: &mut PacketBuf<'_>,
        old_hdr: usize,
        upper_len: usize,
    ) -> Result<(), DropReason> {
        let new_hdr = self.len();
        let start = pkt.reheader(old_hdr, new_hdr)?;
        self.write(&mut pkt.buf[start..start + new_hdr], upper_len);
        pkt.start = start;
        pkt.end = start + new_hdr + upper_len;
        Ok(())
    }
}

/// The IPv4 header fields decode writes.
pub(crate) struct V4Header {
    pub tos: u8,
    pub total_len: u16,
    pub ident: u16,
    pub dont_frag: bool,
    pub more_frags: bool,
    pub frag_offset: u16,
    pub ttl: u8,
    pub protocol: IpProtocol,
    pub src: [u8; 4],
    pub dst: [u8; 4],
}

impl V4Header {
    /// Writes the header, checksum included, to the first 20 bytes of `out`. The
    /// checksum is summed from the fields rather than from the written bytes.
    #[inline]
    pub fn write(&self, out: &mut [u8]) {
        let flags = (self.frag_offset & 0x1fff)
            | if self.dont_frag { 0x4000 } else { 0 }
            | if self.more_frags { 0x2000 } else { 0 };
        let (s, d) = (self.src, self.dst);
        let sum = 0x4500u32
            + self.tos as u32
            + self.total_len as u32
            + self.ident as u32
            + flags as u32
            + u16::from_be_bytes([self.ttl, self.protocol.0]) as u32
            + u16::from_be_bytes([s[0], s[1]]) as u32
            + u16::from_be_bytes([s[2], s[3]]) as u32
            + u16::from_be_bytes([d[0], d[1]]) as u32
            + u16::from_be_bytes([d[2], d[3]]) as u32;
        let sum = (sum & 0xffff) + (sum >> 16);
        let c = !((sum & 0xffff) + (sum >> 16)) as u16;
        let [l0, l1] = self.total_len.to_be_bytes();
        let [i0, i1] = self.ident.to_be_bytes();
        let [f0, f1] = flags.to_be_bytes();
        let [c0, c1] = c.to_be_bytes();
        out[..ipv4::HEADER_LEN].copy_from_slice(&[
            0x45,
            self.tos,
            l0,
            l1,
            i0,
            i1,
            f0,
            f1,
            self.ttl,
            self.protocol.0,
            c0,
            c1,
            s[0],
            s[1],
            s[2],
            s[3],
            d[0],
            d[1],
            d[2],
            d[3],
        ]);
    }

    /// Replaces the `old_hdr` bytes of header in front of the packet's payload with this
    /// header, in place (IPv4's is never longer than the IPv6 headers it replaces).
    #[inline]
    pub fn put(&self, pkt: &mut PacketBuf<'_>, old_hdr: usize) {
        let start = pkt.start + old_hdr - ipv4::HEADER_LEN;
        self.write(&mut pkt.buf[start..start + ipv4::HEADER_LEN]);
        pkt.start = start;
        pkt.end = start + self.total_len as usize;
    }
}

/// RFC 7915 section 5.1: an unfragmented translated packet gets DF when it is larger than
/// 1260 bytes (so that the IPv6 minimum MTU holds for it once translated back).
#[inline]
pub(crate) fn df_for(total_len: usize) -> bool {
    total_len > 1260
}

/// Fixes a TCP or UDP checksum for a pseudo-header whose address sum went from `old` to
/// `new`. `partial` is the offload case, where the field holds the pseudo-header sum.
#[inline]
fn fix_l4_checksum(l4: &mut [u8], at: usize, udp: bool, partial: bool, old: u16, new: u16) {
    let field = u16::from_be_bytes([l4[at], l4[at + 1]]);
    let v = if partial {
        checksum::update_partial(field, old, new)
    } else {
        let v = checksum::update(field, old, new);
        // UDP says a computed 0 is sent as all ones (0 means "no checksum").
        if udp && v == 0 {
            0xffff
        } else {
            v
        }
    };
    l4[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

impl Translator {
    pub fn new(cfg: Config) -> Self {
        Translator {
            cfg,
            stats: Stats::default(),
            next_ident: 0,
        }
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    #[inline]
    fn count<T>(&mut self, r: Result<T, DropReason>) -> Result<T, DropReason> {
        match &r {
            Ok(_) => self.stats.translated += 1,
            Err(e) => self.stats.drops.inc(*e),
        }
        r
    }

    /// Where the IPv4 identifications this translator makes up start: translators that
    /// share a source address (an edge's workers) start apart, so as not to repeat each
    /// other's (RFC 6864).
    pub fn seed_ident(&mut self, start: u16) {
        self.next_ident = start;
    }

    #[inline]
    pub(crate) fn ident(&mut self) -> u16 {
        self.next_ident = self.next_ident.wrapping_add(1);
        self.next_ident
    }

    /// The hop limit to send with: the TTL itself, or one less when acting as a router.
    /// A packet that arrives with nothing left is never forwarded (RFC 1812 5.3.1).
    #[inline]
    pub(crate) fn hop(&self, ttl: u8) -> Result<u8, DropReason> {
        let dec = self.cfg.decrement_ttl as u8;
        if ttl <= dec {
            Err(DropReason::TtlExceeded)
        } else {
            Ok(ttl - dec)
        }
    }

    /// Translates the IPv4 packet in `pkt` to an IPv6 substrate packet, in place. `vnet`,
    /// when the packet came with a `virtio_net_hdr`, is read with offsets relative to the
    /// IPv4 packet's start and rewritten relative to the IPv6 packet's start.
    pub fn encode(
        &mut self,
        map: &EncodeMap,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
    ) -> Result<(), DropReason> {
        let opts = EncodeOpts {
            dst_network: map.network,
            routed: false,
        };
        let r = self.encode_inner(map, opts, pkt, vnet);
        self.count(r)
    }

    /// As [`encode`](Self::encode), with the choices of [`EncodeOpts`]: a destination in
    /// another network (a peering), a routed packet.
    pub fn encode_with(
        &mut self,
        map: &EncodeMap,
        opts: EncodeOpts,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
    ) -> Result<(), DropReason> {
        let r = self.encode_inner(map, opts, pkt, vnet);
        self.count(r)
    }

    /// Translates the IPv6 substrate packet in `pkt` back to IPv4, in place, and returns
    /// the substrate addresses it came with. `vnet` as for [`encode`](Self::encode).
    pub fn decode(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
    ) -> Result<Decoded, DropReason> {
        let r = self.decode_inner(pkt, vnet);
        self.count(r)
    }

    #[inline]
    fn encode_inner(
        &mut self,
        map: &EncodeMap,
        opts: EncodeOpts,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
    ) -> Result<(), DropReason> {
        let data = pkt.as_slice();
        if data.first().is_none_or(|b| b >> 4 != 4) {
            return Err(DropReason::NotIpv4);
        }
        let ip = Ipv4Packet::new_checked(data).map_err(wire_err)?;
        if !ip.verify_checksum() {
            return Err(DropReason::BadIpChecksum);
        }
        let hl = ip.header_len();
        if hl > ipv4::HEADER_LEN && ip.has_unexpired_source_route() {
            return Err(DropReason::SourceRoute);
        }
        let hop_limit = self
            .hop(ip.ttl())?
            .checked_sub(opts.routed as u8)
            .filter(|&h| h > 0)
            .ok_or(DropReason::TtlExceeded)?;
        let dst_net = opts.dst_network;
        let proto = ip.protocol();
        let (src4, dst4) = (ip.src_bytes(), ip.dst_bytes());
        let src6 = substrate::encode(&map.src, map.network, src4);
        let dst6 = substrate::encode(&map.dst, dst_net, dst4);

        if proto == IpProtocol::ICMP {
            if vnet
                .as_deref()
                .is_some_and(|v| v.needs_csum() || v.is_gso())
            {
                return Err(DropReason::OffloadMismatch);
            }
            return icmp::encode(self, map, dst_net, pkt, hop_limit, &src6, &dst6);
        }
        if proto == IpProtocol::IGMP {
            return Err(DropReason::Igmp);
        }
        if proto.is_skipped_ipv6_ext()
            || matches!(proto, IpProtocol::IPV6_FRAG | IpProtocol::ICMPV6)
        {
            return Err(DropReason::ProtocolUntranslatable);
        }

        let tos = ip.tos();
        let fragment = ip.is_fragment();
        let frag = fragment.then(|| FragRepr {
            next_header: proto,
            offset: ip.frag_offset(),
            more_frags: ip.more_frags(),
            ident: ip.ident() as u32,
        });
        let has_l4_header = ip.frag_offset() == 0;
        let payload_len = ip.total_len() as usize - hl;
        let new_hdr = ipv6::HEADER_LEN + if fragment { ipv6::FRAG_HEADER_LEN } else { 0 };

        let (partial, gso) = check_offload(vnet.as_deref(), proto, fragment, hl)?;
        if let Some(mtu) = self.cfg.mtu {
            if !gso && new_hdr + payload_len > mtu as usize {
                return Err(DropReason::TooBig);
            }
        }

        let l4_at = pkt.start + hl;
        let l4 = &mut pkt.buf[l4_at..l4_at + payload_len];
        let ports = if has_l4_header {
            ports_of(proto, l4)
        } else {
            0
        };
        if let (true, Some(at)) = (has_l4_header, l4_checksum_offset(proto)) {
            if l4.len() < at + 2 {
                // A first fragment too small to hold the checksum (RFC 1858 tiny fragment).
                return Err(DropReason::Truncated);
            }
            let udp = proto == IpProtocol::UDP;
            let old = checksum::add(checksum::addr_sum(&src4), checksum::addr_sum(&dst4));
            let new = checksum::add(checksum::addr_sum(&src6), checksum::addr_sum(&dst6));
            if udp && !partial && l4[6] == 0 && l4[7] == 0 {
                if fragment || self.cfg.udp_zero_checksum == UdpZeroChecksum::Drop {
                    return Err(DropReason::UdpZeroChecksum);
                }
                let pseudo = checksum::pseudo_v6(&src6, &dst6, IpProtocol::UDP.0, l4.len() as u32);
                let c = checksum::finish(checksum::add(pseudo, checksum::sum(l4)));
                let c = if c == 0 { 0xffff } else { c };
                l4[6..8].copy_from_slice(&c.to_be_bytes());
            } else {
                fix_l4_checksum(l4, at, udp, partial, old, new);
            }
        }

        V6Header {
            tc: tos,
            flow: flow_label(map.network, src4, dst4, proto.0, ports),
            next_header: proto,
            hop_limit,
            src: &src6,
            dst: &dst6,
            frag,
        }
        .put(pkt, hl, payload_len)?;

        if let Some(v) = vnet {
            adjust_vnet(v, hl, new_hdr, virtio::GSO_TCPV4, virtio::GSO_TCPV6);
        }
        Ok(())
    }

    #[inline]
    fn decode_inner(
        &mut self,
        pkt: &mut PacketBuf<'_>,
        vnet: Option<&mut VirtioNetHdr>,
    ) -> Result<Decoded, DropReason> {
        let data = pkt.as_slice();
        if data.first().is_none_or(|b| b >> 4 != 6) {
            return Err(DropReason::NotIpv6);
        }
        let ip = Ipv6Packet::new_checked(data).map_err(wire_err)?;
        let exts = ip.exts().map_err(wire_err)?;
        if exts.routing_segments_left.is_some_and(|s| s != 0) {
            return Err(DropReason::RoutingHeader);
        }
        let ttl = self.hop(ip.hop_limit())?;
        let (src6, dst6) = (*ip.src_bytes(), *ip.dst_bytes());
        let decoded = Decoded {
            src: SubstrateAddr::decode(&src6),
            dst: SubstrateAddr::decode(&dst6),
        };
        let old_hdr = ipv6::HEADER_LEN + exts.upper_offset;
        let l4_len = ip.payload_len() as usize - exts.upper_offset;
        let total_len = ipv4::HEADER_LEN + l4_len;
        if total_len > u16::MAX as usize {
            return Err(DropReason::TooBig);
        }
        let tc = ip.traffic_class();
        let proto = exts.upper;
        let fragment = exts.frag.map(|(_, f)| f);

        if proto == IpProtocol::ICMPV6 {
            if vnet
                .as_deref()
                .is_some_and(|v| v.needs_csum() || v.is_gso())
            {
                return Err(DropReason::OffloadMismatch);
            }
            icmp::decode(self, pkt, &decoded, ttl, tc, old_hdr, l4_len, fragment)?;
            return Ok(decoded);
        }

        let (partial, _gso) = check_offload(vnet.as_deref(), proto, fragment.is_some(), old_hdr)?;
        let (src4, dst4) = (substrate::ipv4_of(&src6), substrate::ipv4_of(&dst6));
        let has_l4_header = fragment.is_none_or(|f| f.offset == 0);
        let l4_at = pkt.start + old_hdr;
        let l4 = &mut pkt.buf[l4_at..l4_at + l4_len];
        if let (true, Some(at)) = (has_l4_header, l4_checksum_offset(proto)) {
            if l4.len() < at + 2 {
                return Err(DropReason::Truncated);
            }
            let udp = proto == IpProtocol::UDP;
            if udp && !partial && l4[6] == 0 && l4[7] == 0 {
                return Err(DropReason::UdpZeroChecksum);
            }
            let old = checksum::add(checksum::addr_sum(&src6), checksum::addr_sum(&dst6));
            let new = checksum::add(checksum::addr_sum(&src4), checksum::addr_sum(&dst4));
            fix_l4_checksum(l4, at, udp, partial, old, new);
        }

        let (ident, dont_frag, more_frags, frag_offset) = match fragment {
            Some(f) => (f.ident as u16, false, f.more_frags, f.offset),
            None => (self.ident(), df_for(total_len), false, 0),
        };
        V4Header {
            tos: tc,
            total_len: total_len as u16,
            ident,
            dont_frag,
            more_frags,
            frag_offset,
            ttl,
            protocol: proto,
            src: src4,
            dst: dst4,
        }
        .put(pkt, old_hdr);
        if let Some(v) = vnet {
            adjust_vnet(
                v,
                old_hdr,
                ipv4::HEADER_LEN,
                virtio::GSO_TCPV6,
                virtio::GSO_TCPV4,
            );
        }
        Ok(decoded)
    }
}

/// Checks that a `virtio_net_hdr` describes this packet; returns (checksum is partial,
/// packet is a segmentation super-packet).
#[inline]
fn check_offload(
    vnet: Option<&VirtioNetHdr>,
    proto: IpProtocol,
    fragment: bool,
    l3_len: usize,
) -> Result<(bool, bool), DropReason> {
    let Some(v) = vnet else {
        return Ok((false, false));
    };
    let gso = v.is_gso();
    if gso {
        let ok = match v.gso_kind() {
            virtio::GSO_TCPV4 | virtio::GSO_TCPV6 => proto == IpProtocol::TCP,
            virtio::GSO_UDP_L4 => proto == IpProtocol::UDP,
            _ => false,
        };
        if !ok || fragment || !v.needs_csum() || v.gso_size == 0 {
            return Err(DropReason::OffloadMismatch);
        }
    }
    if v.needs_csum() {
        let at = l4_checksum_offset(proto).ok_or(DropReason::OffloadMismatch)?;
        if fragment || v.csum_start as usize != l3_len || v.csum_offset as usize != at {
            return Err(DropReason::OffloadMismatch);
        }
    }
    Ok((v.needs_csum(), gso))
}

/// Moves a `virtio_net_hdr`'s offsets by the change of L3 header length and maps the
/// TCP GSO type to the other IP version (keeping the ECN bit).
#[inline]
fn adjust_vnet(v: &mut VirtioNetHdr, old_hdr: usize, new_hdr: usize, from: u8, to: u8) {
    let shift = |x: u16| (x as usize + new_hdr - old_hdr) as u16;
    if v.needs_csum() {
        v.csum_start = shift(v.csum_start);
    }
    if v.is_gso() {
        if v.gso_kind() == from {
            v.gso_type = to | (v.gso_type & virtio::GSO_ECN);
        }
        if v.hdr_len as usize > old_hdr {
            v.hdr_len = shift(v.hdr_len);
        }
    }
}
