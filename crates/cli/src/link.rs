//! Link-layer framing of captured packets: finding the IP packet inside a captured frame.
//!
//! The translator works on bare IP packets; captures wrap them in a link layer named by
//! the file's (or pcapng interface's) link type. This module strips that wrapping.
//!
//! Ethernet frames are read with [`wire::ethernet::EthernetFrame`] (14 bytes, or 18 with
//! one 802.1Q tag).

use dataplane::DropReason;
use pcap_file::DataLink;
use wire::ethernet::EthernetFrame;

/// The IP version a subcommand reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Ipv4,
    Ipv6,
}

/// The link layers `canopy translate` understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkType {
    /// LINKTYPE_ETHERNET (1).
    Ethernet,
    /// LINKTYPE_RAW (101): a bare IPv4 or IPv6 packet, told apart by its version nibble.
    Raw,
    /// LINKTYPE_IPV4 (228).
    Ipv4,
    /// LINKTYPE_IPV6 (229).
    Ipv6,
    /// LINKTYPE_LINUX_SLL (113), what `tcpdump -i any` writes.
    LinuxSll,
}

impl LinkType {
    pub fn from_datalink(dl: DataLink) -> Option<Self> {
        match dl {
            DataLink::ETHERNET => Some(LinkType::Ethernet),
            DataLink::RAW => Some(LinkType::Raw),
            DataLink::IPV4 => Some(LinkType::Ipv4),
            DataLink::IPV6 => Some(LinkType::Ipv6),
            DataLink::LINUX_SLL => Some(LinkType::LinuxSll),
            _ => None,
        }
    }
}

/// The link types accepted on input, for error messages.
pub const ACCEPTED: &str =
    "Ethernet (1), raw IP (101), IPv4 (228), IPv6 (229) or Linux cooked capture (113)";

const ETHERTYPE_IPV4: u16 = wire::ethernet::EtherType::IPV4.0;
const ETHERTYPE_IPV6: u16 = wire::ethernet::EtherType::IPV6.0;

/// The IP packet inside `frame`, for a subcommand that reads `want`.
///
/// Frames of another EtherType are dropped as `not_ipv4` / `not_ipv6` (the names the
/// translator uses for a packet of the wrong version), frames that end inside their link
/// header as `truncated`. For raw link types the packet is handed on whatever its
/// version: the translator itself rejects the wrong IP version. Bytes after the end the IP header
/// announces (Ethernet minimum-size padding) are cut off.
pub fn ip_packet(link: LinkType, want: Family, frame: &[u8]) -> Result<&[u8], DropReason> {
    let pkt = match link {
        LinkType::Raw | LinkType::Ipv4 | LinkType::Ipv6 => frame,
        LinkType::Ethernet => {
            let (ethertype, rest) = ethernet_payload(frame)?;
            check_ethertype(ethertype, want)?;
            rest
        }
        LinkType::LinuxSll => {
            // packet type (2), ARPHRD (2), address length (2), address (8), protocol (2).
            if frame.len() < 16 {
                return Err(DropReason::Truncated);
            }
            let proto = u16::from_be_bytes([frame[14], frame[15]]);
            check_ethertype(proto, want)?;
            &frame[16..]
        }
    };
    Ok(trim_to_ip_length(pkt))
}

fn check_ethertype(ethertype: u16, want: Family) -> Result<(), DropReason> {
    match (ethertype, want) {
        (ETHERTYPE_IPV4, Family::Ipv4) | (ETHERTYPE_IPV6, Family::Ipv6) => Ok(()),
        (_, Family::Ipv4) => Err(DropReason::NotIpv4),
        (_, Family::Ipv6) => Err(DropReason::NotIpv6),
    }
}

/// The EtherType and payload of an Ethernet II frame, past one 802.1Q tag. Frames the
/// Ethernet view does not take (a second tag, an 802.3 length field) carry no IP packet
/// for us; they get EtherType 0 so that they are counted as the wrong family.
fn ethernet_payload(frame: &[u8]) -> Result<(u16, &[u8]), DropReason> {
    match EthernetFrame::new_checked(frame) {
        Ok(f) => Ok((f.ethertype().0, &frame[f.header_len()..])),
        Err(wire::Error::Truncated { .. }) => Err(DropReason::Truncated),
        Err(_) => Ok((0, &[])),
    }
}

/// Cuts bytes past the length the IP header announces. A header too short to read, or
/// a length larger than the buffer, is left for the translator to judge as malformed.
fn trim_to_ip_length(pkt: &[u8]) -> &[u8] {
    let announced = match pkt.first().map(|b| b >> 4) {
        Some(4) if pkt.len() >= 20 => usize::from(u16::from_be_bytes([pkt[2], pkt[3]])),
        // Payload length 0 with a hop-by-hop jumbo option: leave as is.
        Some(6) if pkt.len() >= 40 => match u16::from_be_bytes([pkt[4], pkt[5]]) {
            0 => return pkt,
            plen => 40 + usize::from(plen),
        },
        _ => return pkt,
    };
    if announced < pkt.len() {
        &pkt[..announced]
    } else {
        pkt
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ipv4(total_len: u16) -> Vec<u8> {
        let mut p = vec![0u8; usize::from(total_len)];
        p[0] = 0x45;
        p[2..4].copy_from_slice(&total_len.to_be_bytes());
        p
    }

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0u8; 12];
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn ethernet_ipv4_with_padding_is_trimmed() {
        let p = ipv4(28);
        let mut f = eth(ETHERTYPE_IPV4, &p);
        f.resize(60, 0); // minimum frame size padding
        assert_eq!(ip_packet(LinkType::Ethernet, Family::Ipv4, &f), Ok(&p[..]));
    }

    #[test]
    fn one_vlan_tag_is_skipped_two_are_not() {
        let p = ipv4(20);
        let mut tagged = vec![0u8; 12];
        // 0x8100: an 802.1Q tag with VLAN id 5, then the EtherType of the payload.
        tagged.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x08, 0x00]);
        tagged.extend_from_slice(&p);
        assert_eq!(
            ip_packet(LinkType::Ethernet, Family::Ipv4, &tagged),
            Ok(&p[..])
        );

        let mut qinq = vec![0u8; 12];
        qinq.extend_from_slice(&[0x81, 0x00, 0x00, 0x05, 0x81, 0x00, 0x00, 0x06, 0x08, 0x00]);
        qinq.extend_from_slice(&p);
        assert_eq!(
            ip_packet(LinkType::Ethernet, Family::Ipv4, &qinq),
            Err(DropReason::NotIpv4)
        );
    }

    #[test]
    fn other_ethertypes_are_counted_by_family() {
        let arp = eth(0x0806, &[0u8; 28]);
        let e = ip_packet(LinkType::Ethernet, Family::Ipv4, &arp).unwrap_err();
        assert_eq!(e.as_str(), "not_ipv4");
        let v4 = eth(ETHERTYPE_IPV4, &ipv4(20));
        let e = ip_packet(LinkType::Ethernet, Family::Ipv6, &v4).unwrap_err();
        assert_eq!(e.as_str(), "not_ipv6");
    }

    #[test]
    fn short_frames_are_truncated_not_panics() {
        for n in 0..18 {
            let mut f = vec![0u8; n];
            if n >= 14 {
                f[12] = 0x81;
            }
            assert_eq!(
                ip_packet(LinkType::Ethernet, Family::Ipv4, &f),
                Err(DropReason::Truncated),
                "len {n}"
            );
            assert!(ip_packet(LinkType::LinuxSll, Family::Ipv4, &f[..n.min(15)]).is_err());
        }
    }

    #[test]
    fn raw_packets_pass_whatever_their_version() {
        let mut v6 = vec![0u8; 48];
        v6[0] = 0x60;
        v6[5] = 8;
        assert_eq!(ip_packet(LinkType::Raw, Family::Ipv4, &v6), Ok(&v6[..]));
        v6.extend_from_slice(&[0; 4]);
        assert_eq!(ip_packet(LinkType::Ipv6, Family::Ipv6, &v6), Ok(&v6[..48]));
        // A length field past the end is left for the translator to reject.
        let mut v4 = ipv4(40);
        v4.truncate(30);
        assert_eq!(ip_packet(LinkType::Ipv4, Family::Ipv4, &v4), Ok(&v4[..]));
    }

    #[test]
    fn linux_cooked_capture() {
        let mut f = vec![0u8; 14];
        f.extend_from_slice(&ETHERTYPE_IPV6.to_be_bytes());
        let mut v6 = vec![0u8; 40];
        v6[0] = 0x60;
        f.extend_from_slice(&v6);
        assert_eq!(ip_packet(LinkType::LinuxSll, Family::Ipv6, &f), Ok(&v6[..]));
        assert_eq!(
            ip_packet(LinkType::LinuxSll, Family::Ipv4, &f),
            Err(DropReason::NotIpv4)
        );
    }
}
