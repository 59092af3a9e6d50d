//! Why a packet was dropped. Every drop anywhere in the data path names one of these
//! reasons and is counted under it, so an operator can always answer "where did my
//! packet go" from the counters alone.

use core::fmt;

macro_rules! drop_reasons {
    ($( $(#[doc = $doc:literal])* $variant:ident = $name:literal, )*) => {
        /// A reason for dropping a packet; `as_str` is the name used in logs, metrics and
        /// `canopy translate` summaries.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        #[repr(u8)]
        pub enum DropReason {
            $( $(#[doc = $doc])* $variant, )*
        }

        impl DropReason {
            /// Every reason, in declaration order.
            pub const ALL: &'static [DropReason] = &[ $( DropReason::$variant, )* ];
            pub const COUNT: usize = DropReason::ALL.len();

            /// The reason's snake_case name.
            pub const fn as_str(self) -> &'static str {
                match self { $( DropReason::$variant => $name, )* }
            }
        }
    };
}

drop_reasons! {
    /// Given to the IPv4 -> IPv6 encoder but not an IPv4 packet.
    NotIpv4 = "not_ipv4",
    /// Given to the IPv6 -> IPv4 decoder but not an IPv6 packet.
    NotIpv6 = "not_ipv6",
    /// A header, or the length it announces, runs past the end of the packet.
    Truncated = "truncated",
    /// A header field makes the packet meaningless (bad IHL, total length below the
    /// header, a second fragment header, an extension header chain too long...).
    Malformed = "malformed",
    /// IPv4 whose header checksum does not verify (RFC 1812 section 5.2.2).
    BadIpChecksum = "bad_ip_checksum",
    /// IPv4 with an unexpired loose or strict source route (RFC 7915 section 4.1).
    SourceRoute = "source_route",
    /// IPv6 with a routing header whose segments-left is not zero (RFC 7915 section 5.1).
    RoutingHeader = "routing_header",
    /// TTL or hop limit is zero, or would reach zero when the translator acts as a router.
    TtlExceeded = "ttl_exceeded",
    /// UDP without a checksum that cannot be given one: an IPv4 fragment (RFC 7915
    /// section 4.5), or IPv6 UDP with a zero checksum, which IPv6 forbids.
    UdpZeroChecksum = "udp_zero_checksum",
    /// A fragment of an ICMP message: its checksum cannot be fixed for the new
    /// pseudo-header without the whole message.
    FragmentedIcmp = "fragmented_icmp",
    /// An ICMP type or code that has no counterpart in the other version (redirects,
    /// source quench, neighbour discovery, MLD, obsolete or unknown types, parameter
    /// problem pointers that point at fields the other header lacks...).
    IcmpUntranslatable = "icmp_untranslatable",
    /// An ICMP error message about another ICMP error.
    IcmpErrorInError = "icmp_error_in_error",
    /// An ICMP error message whose checksum does not verify (it would be recomputed, so
    /// translating it would launder the corruption).
    IcmpBadChecksum = "icmp_bad_checksum",
    /// The packet inside an ICMP error is not a readable IP header of the right version.
    IcmpBadInner = "icmp_bad_inner",
    /// The packet inside an ICMP error belongs to another virtual network than the error
    /// itself: never let an error carry one tenant's addresses to another.
    InnerNetworkMismatch = "inner_network_mismatch",
    /// IGMP: link-local to the IPv4 side, never translated (RFC 7915 section 4.2).
    Igmp = "igmp",
    /// IPv4 whose protocol number names an IPv6 extension header or ICMPv6 (0, 43, 44,
    /// 58, 60): copied into an IPv6 next header it would be parsed as something it is not.
    ProtocolUntranslatable = "protocol_untranslatable",
    /// The translated packet would exceed the configured substrate MTU (the caller
    /// answers with "fragmentation needed" / "packet too big").
    TooBig = "too_big",
    /// The `virtio_net_hdr` that came with the packet does not describe it (segmentation
    /// of a fragment, a GSO type that does not match the protocol, a checksum offset that
    /// is not the L4 checksum...).
    OffloadMismatch = "offload_mismatch",
    /// The buffer has no room for the translated packet.
    NoRoom = "no_room",

    // ---- the agent, packets from a VM port ----
    /// A frame from a port the agent does not know (detached, or never attached).
    UnknownPort = "unknown_port",
    /// A frame with an 802.1Q tag: VM ports are untagged.
    VlanTagged = "vlan_tagged",
    /// A frame whose source MAC is not the port's node's MAC.
    PortSpoofedMac = "port_spoofed_mac",
    /// An IPv4 packet whose source is not the port's node's address.
    PortSpoofedIp = "port_spoofed_ip",
    /// An EtherType other than IPv4 and ARP (IPv6 inside tenant networks is not offered).
    UnsupportedEthertype = "unsupported_ethertype",
    /// Broadcast other than ARP and DHCP: nothing in a virtual network floods.
    Broadcast = "broadcast",
    /// Multicast: not offered inside virtual networks, and not used on the substrate
    /// (where the host's kernel sends its own MLD reports as the device comes up).
    Multicast = "multicast",
    /// An ARP packet that is not a well-formed Ethernet/IPv4 request.
    ArpInvalid = "arp_invalid",
    /// ARP replies, announcements and probes for the sender's own address: there is
    /// nothing to answer.
    ArpIgnored = "arp_ignored",
    /// An ARP request for an address no node has in the asker's subnet (no answer, as on
    /// a real LAN).
    ArpUnknownTarget = "arp_unknown_target",
    /// A DHCP message the server does not answer (not BOOTREQUEST, unknown type, ...).
    DhcpIgnored = "dhcp_ignored",
    /// A frame to a MAC that is neither the router's nor a node's of the same subnet.
    UnknownDestinationMac = "unknown_destination_mac",
    /// Traffic to the gateway address other than ping (answered with port unreachable
    /// for UDP, dropped otherwise).
    GatewayNotServed = "gateway_not_served",
    /// The network's route table has no route for the destination (ICMP net unreachable
    /// sent back).
    NoRoute = "no_route",
    /// A blackhole route matched (ICMP net unreachable sent back).
    Blackhole = "blackhole",
    /// No node has the destination address in the network (ICMP host unreachable sent
    /// back when routed).
    NoSuchNode = "no_such_node",
    /// A route leads to an edge pool or peering the agent cannot use yet.
    RouteTargetUnavailable = "route_target_unavailable",
    /// DF set and larger than the virtual MTU ("fragmentation needed" sent back).
    FragmentationNeeded = "fragmentation_needed",
    /// Waiting for a mapping from the manager and the hold queue is full.
    HoldQueueFull = "hold_queue_full",
    /// Held for a mapping that never came.
    HoldTimeout = "hold_timeout",

    // ---- the agent, packets from the substrate ----
    /// A substrate packet for another host's locator.
    WrongLocator = "wrong_locator",
    /// A substrate packet whose source locator does not host its (network, source
    /// address), and is not an edge of a pool the network uses: spoofed.
    SpoofedSource = "spoofed_source",
    /// A packet from another network than its destination's, which has no peering route
    /// to that network covering the source address.
    NotPeered = "not_peered",
    /// An ICMPv6 echo at a probe address (network 0) that is neither a probe this agent
    /// is sending nor the answer to one.
    UnexpectedProbe = "unexpected_probe",

    // ---- rules ----
    /// A network ACL of the node's subnet denies the packet.
    AclDenied = "acl_denied",
    /// No security group rule of the node allows this new connection.
    SgDenied = "sg_denied",
    /// The node's connection table is full and nothing in it has expired.
    ConntrackFull = "conntrack_full",
    /// A packet that belongs to no connection and cannot start one (a stray TCP ACK
    /// without loose pickup, bad flag combinations).
    ConntrackInvalid = "conntrack_invalid",

    // ---- NAT and edges ----
    /// A node without a free port (no block, or every port of its blocks in use) whose
    /// packet cannot wait for a block: the hold queue, or the node's share of it, is
    /// full, or the packet is a segmentation super-packet, too large to keep. The agent
    /// asks the manager for a block either way.
    PortBlockExhausted = "port_block_exhausted",
    /// Held for a port block of its node (which the agent asked the manager for) that
    /// did not come within the hold timeout.
    PortBlockWaitTimeout = "port_block_wait_timeout",
    /// The agent's NAT flow table is full.
    NatTableFull = "nat_table_full",
    /// A packet that matches no NAT flow: a reply to nothing, a port no block covers, or
    /// a protocol or fragment that carries no port.
    NatNoFlow = "nat_no_flow",
    /// Traffic from outside to an address or port that no block or elastic IP owns.
    UnsolicitedInbound = "unsolicited_inbound",
    /// Every member of the pool is down (or draining, for a new flow).
    NoEdge = "no_edge",
}

impl fmt::Display for DropReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A counter per drop reason. Plain integers: each pipeline owns its counters (one per
/// worker), and whoever exports metrics sums them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DropCounters {
    counts: [u64; DropReason::COUNT],
}

impl Default for DropCounters {
    fn default() -> Self {
        DropCounters {
            counts: [0; DropReason::COUNT],
        }
    }
}

impl DropCounters {
    #[inline]
    pub fn inc(&mut self, r: DropReason) {
        self.counts[r as usize] += 1;
    }

    pub fn get(&self, r: DropReason) -> u64 {
        self.counts[r as usize]
    }

    /// Adds another set of counts (another worker's) to these.
    pub fn merge(&mut self, o: &DropCounters) {
        for (a, b) in self.counts.iter_mut().zip(o.counts) {
            *a += b;
        }
    }

    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The reasons with a non-zero count, in declaration order.
    pub fn iter(&self) -> impl Iterator<Item = (DropReason, u64)> + '_ {
        DropReason::ALL
            .iter()
            .map(|&r| (r, self.get(r)))
            .filter(|&(_, n)| n != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_snake_case() {
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        assert!(names.iter().all(|n| n
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c.is_ascii_digit())));
        names.sort();
        names.dedup();
        assert_eq!(names.len(), DropReason::COUNT);
    }

    #[test]
    fn counts_by_reason() {
        let mut c = DropCounters::default();
        c.inc(DropReason::TooBig);
        c.inc(DropReason::TooBig);
        c.inc(DropReason::NotIpv4);
        assert_eq!(c.get(DropReason::TooBig), 2);
        assert_eq!(c.total(), 3);
        assert_eq!(
            c.iter().collect::<Vec<_>>(),
            vec![(DropReason::NotIpv4, 1), (DropReason::TooBig, 2)]
        );
    }
}
