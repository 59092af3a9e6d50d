//! ICMPv4 <-> ICMPv6 (RFC 7915 sections 4.2, 4.3, 5.2, 5.3).
//!
//! Echo messages are translated in place with an incremental checksum update (a
//! corrupted checksum stays corrupted). Errors are rebuilt in a stack buffer: their inner
//! packet changes size, so the checksum is recomputed, after the original one has been
//! verified so that corruption is not laundered. ICMPv6 errors are kept within the IPv6
//! minimum MTU (1280) and ICMPv4 errors within 576 bytes, truncating the inner packet's
//! payload as the ICMP specifications do. RFC 4884 extensions are not carried over: the
//! inner packet is cut where the extension starts and the length attribute is zero.

use super::{
    df_for, flow_label, ports_of, wire_err, EncodeMap, PacketBuf, Translator, V4Header, V6Header,
};
use crate::drops::DropReason;
use model::{substrate, NetworkId};
use wire::checksum;
use wire::ipv4::{self, Ipv4Packet};
use wire::ipv6::{self, FragRepr, Ipv6Exts, Ipv6Packet};
use wire::IpProtocol;

mod v4 {
    pub const ECHO_REPLY: u8 = 0;
    pub const DEST_UNREACHABLE: u8 = 3;
    pub const ECHO_REQUEST: u8 = 8;
    pub const TIME_EXCEEDED: u8 = 11;
    pub const PARAM_PROBLEM: u8 = 12;

    pub fn is_error(t: u8) -> bool {
        matches!(t, 3 | 4 | 5 | 11 | 12)
    }
}

mod v6 {
    pub const DEST_UNREACHABLE: u8 = 1;
    pub const PACKET_TOO_BIG: u8 = 2;
    pub const TIME_EXCEEDED: u8 = 3;
    pub const PARAM_PROBLEM: u8 = 4;
    pub const ECHO_REQUEST: u8 = 128;
    pub const ECHO_REPLY: u8 = 129;

    pub fn is_error(t: u8) -> bool {
        t < 128
    }
}

/// Largest ICMPv6 error (RFC 4443 section 2.4 (c)).
const ICMPV6_ERROR_MAX: usize = ipv6::MIN_MTU;
/// Largest ICMPv4 error (RFC 1812 section 4.3.2.3).
const ICMPV4_ERROR_MAX: usize = 576;
const ICMP_HEADER_LEN: usize = 8;

/// RFC 1191 section 7 plateaus, for "fragmentation needed" from routers that leave the
/// next-hop MTU zero.
const PLATEAUS: [u16; 10] = [32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68];

#[inline]
fn word(ty: u8, code: u8) -> u16 {
    u16::from_be_bytes([ty, code])
}

/// ICMPv4 -> ICMPv6 for an error message: (type, code, the 4 bytes after the checksum).
/// `mtu` computes the translated MTU of a "fragmentation needed".
fn map_error_v4_to_v6(
    ty: u8,
    code: u8,
    rest: [u8; 4],
    mtu: impl FnOnce(u16) -> u32,
) -> Result<(u8, u8, [u8; 4]), DropReason> {
    use DropReason::IcmpUntranslatable as No;
    Ok(match ty {
        v4::DEST_UNREACHABLE => match code {
            0 | 1 | 5 | 6 | 7 | 8 | 11 | 12 => (v6::DEST_UNREACHABLE, 0, [0; 4]),
            // Protocol unreachable: parameter problem, pointing at the next header field.
            2 => (v6::PARAM_PROBLEM, 1, 6u32.to_be_bytes()),
            3 => (v6::DEST_UNREACHABLE, 4, [0; 4]),
            4 => (
                v6::PACKET_TOO_BIG,
                0,
                mtu(u16::from_be_bytes([rest[2], rest[3]])).to_be_bytes(),
            ),
            9 | 10 | 13 | 15 => (v6::DEST_UNREACHABLE, 1, [0; 4]),
            _ => return Err(No),
        },
        v4::TIME_EXCEEDED if code <= 1 => (v6::TIME_EXCEEDED, code, [0; 4]),
        v4::PARAM_PROBLEM if code == 0 || code == 2 => {
            // RFC 7915 figure 3: IPv4 header byte -> IPv6 header byte.
            let ptr: u32 = match rest[0] {
                0 => 0,
                1 => 1,
                2 | 3 => 4,
                8 => 7,
                9 => 6,
                12..=15 => 8,
                16..=19 => 24,
                _ => return Err(No),
            };
            (v6::PARAM_PROBLEM, 0, ptr.to_be_bytes())
        }
        _ => return Err(No),
    })
}

/// ICMPv6 -> ICMPv4 for an error message.
fn map_error_v6_to_v4(ty: u8, code: u8, rest: [u8; 4]) -> Result<(u8, u8, [u8; 4]), DropReason> {
    use DropReason::IcmpUntranslatable as No;
    let rest32 = u32::from_be_bytes(rest);
    Ok(match ty {
        v6::DEST_UNREACHABLE => match code {
            0 | 2 | 3 => (v4::DEST_UNREACHABLE, 1, [0; 4]),
            1 => (v4::DEST_UNREACHABLE, 10, [0; 4]),
            4 => (v4::DEST_UNREACHABLE, 3, [0; 4]),
            _ => return Err(No),
        },
        v6::PACKET_TOO_BIG => {
            let mtu = rest32.saturating_sub(20).min(u16::MAX as u32) as u16;
            let m = mtu.to_be_bytes();
            (v4::DEST_UNREACHABLE, 4, [0, 0, m[0], m[1]])
        }
        v6::TIME_EXCEEDED if code <= 1 => (v4::TIME_EXCEEDED, code, [0; 4]),
        v6::PARAM_PROBLEM => match code {
            0 => {
                // RFC 7915 figure 6: IPv6 header byte -> IPv4 header byte.
                let ptr: u8 = match rest32 {
                    0 => 0,
                    1 => 1,
                    4 | 5 => 2,
                    6 => 9,
                    7 => 8,
                    8..=23 => 12,
                    24..=39 => 16,
                    _ => return Err(No),
                };
                (v4::PARAM_PROBLEM, 0, [ptr, 0, 0, 0])
            }
            1 => (v4::DEST_UNREACHABLE, 2, [0; 4]),
            _ => return Err(No),
        },
        _ => return Err(No),
    })
}

/// Fixes the transport checksum of the (possibly truncated) packet inside an ICMP error,
/// when its checksum field is there: TCP and UDP for the new addresses, an inner ICMP
/// echo for its new type and pseudo-header. `l4_len` is the original upper-layer length
/// (from the inner header), which an ICMPv6 pseudo-header needs.
#[allow(clippy::too_many_arguments)]
fn fix_inner_l4(
    l4: &mut [u8],
    proto: IpProtocol,
    to_v6: bool,
    old_addrs: u16,
    new_addrs: u16,
    src6: &[u8; 16],
    dst6: &[u8; 16],
    l4_len: u32,
) {
    match proto {
        IpProtocol::TCP if l4.len() >= 18 => {
            let f = u16::from_be_bytes([l4[16], l4[17]]);
            let v = checksum::update(f, old_addrs, new_addrs);
            l4[16..18].copy_from_slice(&v.to_be_bytes());
        }
        IpProtocol::UDP if l4.len() >= 8 && (l4[6] | l4[7]) != 0 => {
            let f = u16::from_be_bytes([l4[6], l4[7]]);
            let v = checksum::update(f, old_addrs, new_addrs);
            let v = if v == 0 { 0xffff } else { v };
            l4[6..8].copy_from_slice(&v.to_be_bytes());
        }
        IpProtocol::ICMP | IpProtocol::ICMPV6 if l4.len() >= 4 => {
            let new_ty = match (to_v6, l4[0]) {
                (true, v4::ECHO_REQUEST) => v6::ECHO_REQUEST,
                (true, v4::ECHO_REPLY) => v6::ECHO_REPLY,
                (false, v6::ECHO_REQUEST) => v4::ECHO_REQUEST,
                (false, v6::ECHO_REPLY) => v4::ECHO_REPLY,
                _ => return,
            };
            let pseudo = checksum::pseudo_v6(src6, dst6, IpProtocol::ICMPV6.0, l4_len);
            let (old, new) = (word(l4[0], l4[1]), word(new_ty, l4[1]));
            let f = u16::from_be_bytes([l4[2], l4[3]]);
            let v = if to_v6 {
                checksum::update(f, old, checksum::add(new, pseudo))
            } else {
                checksum::update(f, checksum::add(old, pseudo), new)
            };
            l4[0] = new_ty;
            l4[2..4].copy_from_slice(&v.to_be_bytes());
        }
        _ => {}
    }
}

/// The "original datagram" of an ICMP error: after the 8-byte header, cut at an RFC 4884
/// extension when the length attribute announces one (`len_unit` bytes per unit).
fn original_datagram(msg: &[u8], len_attr: u8, len_unit: usize) -> &[u8] {
    let inner = &msg[ICMP_HEADER_LEN..];
    let n = len_attr as usize * len_unit;
    if n != 0 && n <= inner.len() {
        &inner[..n]
    } else {
        inner
    }
}

/// ICMPv4 (in an IPv4 packet at the start of `pkt`, already checked) -> ICMPv6.
pub(super) fn encode(
    t: &mut Translator,
    map: &EncodeMap,
    dst_net: NetworkId,
    pkt: &mut PacketBuf<'_>,
    hop_limit: u8,
    src6: &[u8; 16],
    dst6: &[u8; 16],
) -> Result<(), DropReason> {
    let ip = Ipv4Packet::new_unchecked(pkt.as_slice());
    if ip.is_fragment() {
        return Err(DropReason::FragmentedIcmp);
    }
    let hl = ip.header_len();
    let tos = ip.tos();
    let (src4, dst4) = (ip.src_bytes(), ip.dst_bytes());
    let msg_len = ip.total_len() as usize - hl;
    if msg_len < ICMP_HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    let l4_at = pkt.start + hl;
    let ty = pkt.buf[l4_at];
    match ty {
        v4::ECHO_REQUEST | v4::ECHO_REPLY => {
            if let Some(mtu) = t.cfg.mtu {
                if ipv6::HEADER_LEN + msg_len > mtu as usize {
                    return Err(DropReason::TooBig);
                }
            }
            let msg = &mut pkt.buf[l4_at..l4_at + msg_len];
            let new_ty = if ty == v4::ECHO_REQUEST {
                v6::ECHO_REQUEST
            } else {
                v6::ECHO_REPLY
            };
            let pseudo = checksum::pseudo_v6(src6, dst6, IpProtocol::ICMPV6.0, msg_len as u32);
            let f = u16::from_be_bytes([msg[2], msg[3]]);
            let v = checksum::update(
                f,
                word(ty, msg[1]),
                checksum::add(word(new_ty, msg[1]), pseudo),
            );
            msg[0] = new_ty;
            msg[2..4].copy_from_slice(&v.to_be_bytes());
            let ident = u16::from_be_bytes([msg[4], msg[5]]) as u32;
            V6Header {
                tc: tos,
                flow: flow_label(map.network, src4, dst4, IpProtocol::ICMP.0, ident << 16),
                next_header: IpProtocol::ICMPV6,
                hop_limit,
                src: src6,
                dst: dst6,
                frag: None,
            }
            .put(pkt, hl, msg_len)
        }
        _ if v4::is_error(ty) => {
            let mut out = [0u8; ICMPV6_ERROR_MAX];
            let limit = t
                .cfg
                .mtu
                .map_or(ICMPV6_ERROR_MAX, |m| (m as usize).min(ICMPV6_ERROR_MAX));
            let n = encode_error(
                t,
                (map, dst_net),
                &pkt.as_slice()[hl..hl + msg_len],
                &mut out[..limit],
                (tos, hop_limit, src4, dst4),
                src6,
                dst6,
            )?;
            pkt.replace(&out[..n])
        }
        _ => Err(DropReason::IcmpUntranslatable),
    }
}

/// Builds the ICMPv6 translation of the ICMPv4 error `msg` into `out` (sized to the
/// largest allowed result); returns its length.
fn encode_error(
    t: &Translator,
    (map, dst_net): (&EncodeMap, NetworkId),
    msg: &[u8],
    out: &mut [u8],
    (tos, hop_limit, src4, dst4): (u8, u8, [u8; 4], [u8; 4]),
    src6: &[u8; 16],
    dst6: &[u8; 16],
) -> Result<usize, DropReason> {
    if checksum::checksum(msg) != 0 {
        return Err(DropReason::IcmpBadChecksum);
    }
    let (ty, code) = (msg[0], msg[1]);
    let rest = [msg[4], msg[5], msg[6], msg[7]];

    // The type and code decide first: untranslatable messages are dropped as such,
    // whatever they carry.
    let inner = original_datagram(msg, msg[5], 4);
    let inner_total_claimed = match inner {
        [_, _, hi, lo, ..] => u16::from_be_bytes([*hi, *lo]) as usize,
        _ => 0,
    };
    let cfg_mtu = t.cfg.mtu;
    let (ty6, code6, rest6) = map_error_v4_to_v6(ty, code, rest, |mtu4| {
        let mtu4 = if mtu4 == 0 {
            // Greatest plateau below the total length of the packet that did not fit.
            PLATEAUS
                .iter()
                .copied()
                .find(|&p| (p as usize) < inner_total_claimed)
                .unwrap_or(68)
        } else {
            mtu4
        };
        let mtu6 = mtu4 as u32 + 20;
        cfg_mtu.map_or(mtu6, |m| mtu6.min(m as u32))
    })?;

    // The packet that caused the error: at least its IPv4 header must be there.
    if inner.len() < ipv4::HEADER_LEN || inner[0] >> 4 != 4 {
        return Err(DropReason::IcmpBadInner);
    }
    let ip = Ipv4Packet::new_unchecked(inner);
    let ihl = ip.header_len();
    let inner_total = ip.total_len() as usize;
    if ihl < ipv4::HEADER_LEN || ihl > inner.len() || inner_total < ihl {
        return Err(DropReason::IcmpBadInner);
    }
    let inner_proto = ip.protocol();
    let inner_first = ip.frag_offset() == 0;
    let inner_l4 = &inner[ihl..];
    if inner_proto == IpProtocol::ICMP
        && inner_first
        && inner_l4.first().is_some_and(|&t| v4::is_error(t))
    {
        return Err(DropReason::IcmpErrorInError);
    }

    // Inner IPv6 header: it travelled the other way, so its source lives behind the
    // outer destination's locator and its destination behind the outer source's.
    let (isrc4, idst4) = (ip.src_bytes(), ip.dst_bytes());
    let isrc6 = substrate::encode(&map.dst, dst_net, isrc4);
    let idst6 = substrate::encode(&map.src, map.network, idst4);
    let inner_next = if inner_proto == IpProtocol::ICMP {
        IpProtocol::ICMPV6
    } else {
        inner_proto
    };
    let ifrag = ip.is_fragment().then(|| FragRepr {
        next_header: inner_next,
        offset: ip.frag_offset(),
        more_frags: ip.more_frags(),
        ident: ip.ident() as u32,
    });
    let ports = if inner_first {
        ports_of(inner_proto, inner_l4)
    } else {
        0
    };
    let ih = V6Header {
        tc: ip.tos(),
        flow: flow_label(dst_net, isrc4, idst4, inner_proto.0, ports),
        next_header: inner_next,
        hop_limit: ip.ttl(),
        src: &isrc6,
        dst: &idst6,
        frag: ifrag,
    };
    let inner_at = ipv6::HEADER_LEN + ICMP_HEADER_LEN;
    let body_at = inner_at + ih.len();
    if body_at > out.len() {
        return Err(DropReason::NoRoom);
    }
    let inner_upper_len = inner_total - ihl;
    ih.write(&mut out[inner_at..], inner_upper_len);
    let copy = inner_l4.len().min(out.len() - body_at);
    out[body_at..body_at + copy].copy_from_slice(&inner_l4[..copy]);
    if inner_first {
        let old = checksum::add(checksum::addr_sum(&isrc4), checksum::addr_sum(&idst4));
        let new = checksum::add(checksum::addr_sum(&isrc6), checksum::addr_sum(&idst6));
        fix_inner_l4(
            &mut out[body_at..body_at + copy],
            inner_proto,
            true,
            old,
            new,
            &isrc6,
            &idst6,
            inner_upper_len as u32,
        );
    }
    let end = body_at + copy;

    // ICMPv6 header and checksum over the pseudo-header and the whole message.
    let icmp_len = end - ipv6::HEADER_LEN;
    let icmp = &mut out[ipv6::HEADER_LEN..end];
    icmp[..4].copy_from_slice(&[ty6, code6, 0, 0]);
    icmp[4..8].copy_from_slice(&rest6);
    let pseudo = checksum::pseudo_v6(src6, dst6, IpProtocol::ICMPV6.0, icmp_len as u32);
    let c = checksum::finish(checksum::add(pseudo, checksum::sum(icmp)));
    icmp[2..4].copy_from_slice(&c.to_be_bytes());

    V6Header {
        tc: tos,
        flow: flow_label(map.network, src4, dst4, IpProtocol::ICMP.0, 0),
        next_header: IpProtocol::ICMPV6,
        hop_limit,
        src: src6,
        dst: dst6,
        frag: None,
    }
    .write(out, icmp_len);
    Ok(end)
}

/// ICMPv6 (the upper layer of the IPv6 packet in `pkt`, `old_hdr` bytes in) -> ICMPv4.
#[allow(clippy::too_many_arguments)]
pub(super) fn decode(
    t: &mut Translator,
    pkt: &mut PacketBuf<'_>,
    decoded: &super::Decoded,
    ttl: u8,
    tc: u8,
    old_hdr: usize,
    msg_len: usize,
    fragment: Option<FragRepr>,
) -> Result<(), DropReason> {
    if fragment.is_some_and(|f| f.offset != 0 || f.more_frags) {
        return Err(DropReason::FragmentedIcmp);
    }
    if msg_len < ICMP_HEADER_LEN {
        return Err(DropReason::Truncated);
    }
    let ip = Ipv6Packet::new_unchecked(pkt.as_slice());
    let (src6, dst6) = (*ip.src_bytes(), *ip.dst_bytes());
    let (src4, dst4) = (substrate::ipv4_of(&src6), substrate::ipv4_of(&dst6));
    let l4_at = pkt.start + old_hdr;
    let ty = pkt.buf[l4_at];
    match ty {
        v6::ECHO_REQUEST | v6::ECHO_REPLY => {
            let msg = &mut pkt.buf[l4_at..l4_at + msg_len];
            let new_ty = if ty == v6::ECHO_REQUEST {
                v4::ECHO_REQUEST
            } else {
                v4::ECHO_REPLY
            };
            let pseudo = checksum::pseudo_v6(&src6, &dst6, IpProtocol::ICMPV6.0, msg_len as u32);
            let f = u16::from_be_bytes([msg[2], msg[3]]);
            let v = checksum::update(
                f,
                checksum::add(word(ty, msg[1]), pseudo),
                word(new_ty, msg[1]),
            );
            msg[0] = new_ty;
            msg[2..4].copy_from_slice(&v.to_be_bytes());
            let total_len = ipv4::HEADER_LEN + msg_len;
            V4Header {
                tos: tc,
                total_len: total_len as u16,
                ident: t.ident(),
                dont_frag: df_for(total_len),
                more_frags: false,
                frag_offset: 0,
                ttl,
                protocol: IpProtocol::ICMP,
                src: src4,
                dst: dst4,
            }
            .put(pkt, old_hdr);
            Ok(())
        }
        _ if v6::is_error(ty) => {
            let mut out = [0u8; ICMPV4_ERROR_MAX];
            let ident = t.ident();
            let msg = &pkt.as_slice()[old_hdr..old_hdr + msg_len];
            let n = decode_error(msg, &mut out, decoded, (ttl, tc, ident), &src6, &dst6)?;
            pkt.replace(&out[..n])
        }
        _ => Err(DropReason::IcmpUntranslatable),
    }
}

fn decode_error(
    msg: &[u8],
    out: &mut [u8],
    decoded: &super::Decoded,
    (ttl, tc, ident): (u8, u8, u16),
    src6: &[u8; 16],
    dst6: &[u8; 16],
) -> Result<usize, DropReason> {
    let pseudo = checksum::pseudo_v6(src6, dst6, IpProtocol::ICMPV6.0, msg.len() as u32);
    if checksum::finish(checksum::add(pseudo, checksum::sum(msg))) != 0 {
        return Err(DropReason::IcmpBadChecksum);
    }
    let (ty, code) = (msg[0], msg[1]);
    let rest = [msg[4], msg[5], msg[6], msg[7]];
    let (ty4, code4, rest4) = map_error_v6_to_v4(ty, code, rest)?;

    // RFC 4884 length (64-bit units) exists for destination unreachable and time exceeded.
    let len_attr = if ty == v6::DEST_UNREACHABLE || ty == v6::TIME_EXCEEDED {
        msg[4]
    } else {
        0
    };
    let inner = original_datagram(msg, len_attr, 8);
    if inner.len() < ipv6::HEADER_LEN || inner[0] >> 4 != 6 {
        return Err(DropReason::IcmpBadInner);
    }
    let ip = Ipv6Packet::new_unchecked(inner);
    let (isrc6, idst6) = (*ip.src_bytes(), *ip.dst_bytes());
    // The inner packet went from the error's destination to its source: same networks
    // reversed, or it is another tenant's packet and must not be shown.
    if substrate::network_of(&isrc6) != decoded.dst.network
        || substrate::network_of(&idst6) != decoded.src.network
    {
        return Err(DropReason::InnerNetworkMismatch);
    }
    let avail = &inner[ipv6::HEADER_LEN..];
    let claimed = ip.payload_len() as usize;
    let exts =
        Ipv6Exts::walk(ip.next_header(), &avail[..claimed.min(avail.len())]).map_err(|e| {
            match wire_err(e) {
                DropReason::Truncated | DropReason::Malformed => DropReason::IcmpBadInner,
                r => r,
            }
        })?;
    if claimed < exts.upper_offset {
        return Err(DropReason::IcmpBadInner);
    }
    let inner_upper_len = claimed - exts.upper_offset;
    let inner_l4 = &avail[exts.upper_offset..];
    let inner_first = exts.has_upper_header();
    if exts.upper == IpProtocol::ICMPV6
        && inner_first
        && inner_l4.first().is_some_and(|&t| v6::is_error(t))
    {
        return Err(DropReason::IcmpErrorInError);
    }
    let (isrc4, idst4) = (substrate::ipv4_of(&isrc6), substrate::ipv4_of(&idst6));
    let inner_total = ipv4::HEADER_LEN + inner_upper_len;
    let (iid, idf, imf, ioff) = match exts.frag {
        Some((_, f)) => (f.ident as u16, false, f.more_frags, f.offset),
        None => (0, df_for(inner_total), false, 0),
    };
    let inner_proto = if exts.upper == IpProtocol::ICMPV6 {
        IpProtocol::ICMP
    } else {
        exts.upper
    };
    let inner_at = ipv4::HEADER_LEN + ICMP_HEADER_LEN;
    let body_at = inner_at + ipv4::HEADER_LEN;
    V4Header {
        tos: ip.traffic_class(),
        total_len: inner_total.min(u16::MAX as usize) as u16,
        ident: iid,
        dont_frag: idf,
        more_frags: imf,
        frag_offset: ioff,
        ttl: ip.hop_limit(),
        protocol: inner_proto,
        src: isrc4,
        dst: idst4,
    }
    .write(&mut out[inner_at..]);
    let copy = inner_l4.len().min(out.len() - body_at);
    out[body_at..body_at + copy].copy_from_slice(&inner_l4[..copy]);
    if inner_first {
        let old = checksum::add(checksum::addr_sum(&isrc6), checksum::addr_sum(&idst6));
        let new = checksum::add(checksum::addr_sum(&isrc4), checksum::addr_sum(&idst4));
        fix_inner_l4(
            &mut out[body_at..body_at + copy],
            exts.upper,
            false,
            old,
            new,
            &isrc6,
            &idst6,
            inner_upper_len as u32,
        );
    }
    let end = body_at + copy;

    let icmp = &mut out[ipv4::HEADER_LEN..end];
    icmp[..4].copy_from_slice(&[ty4, code4, 0, 0]);
    icmp[4..8].copy_from_slice(&rest4);
    let c = checksum::checksum(icmp);
    icmp[2..4].copy_from_slice(&c.to_be_bytes());

    V4Header {
        tos: tc,
        total_len: end as u16,
        ident,
        dont_frag: false,
        more_frags: false,
        frag_offset: 0,
        ttl,
        protocol: IpProtocol::ICMP,
        src: substrate::ipv4_of(src6),
        dst: substrate::ipv4_of(dst6),
    }
    .write(out);
    Ok(end)
}
