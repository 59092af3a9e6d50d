//! Scenario tests: two hosts' agents wired together in memory, with the seed's story in
//! lab addresses: tenant networks 10.0.0.0/16 (two subnets), nodes on both hosts, and a
//! second tenant with the same addresses.

use super::*;
use wire::arp::{ArpOp, ArpPacket, ArpRepr};
use wire::checksum;
use wire::dhcpv4::{DhcpMessageType, DhcpPacket, DhcpRepr};
use wire::ethernet::EthernetRepr;
use wire::icmpv4::Icmpv4Packet;
use wire::ipv4::{Ipv4Options, Ipv4Repr};
use wire::udp::{UdpPacket, UdpRepr};

const T0: Instant = Instant::ZERO;

fn net(n: u32) -> NetworkId {
    NetworkId::new(n).unwrap()
}
fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}
fn cidr(s: &str) -> Ipv4Cidr {
    s.parse().unwrap()
}
fn mac(last: u8, net: u8) -> MacAddr {
    MacAddr([0x02, 0, 0, net, 0, last])
}
fn loc(host: u8) -> Locator {
    format!("fd63:6e73:0:{host}::").parse().unwrap()
}

const H1: u8 = 1;
const H2: u8 = 2;

/// A node: (host, port, network, address, subnet).
#[derive(Clone, Copy)]
struct Vm {
    host: u8,
    port: PortId,
    network: NetworkId,
    vip: Ipv4Addr,
    mac: MacAddr,
    subnet: Subnet,
}

impl Vm {
    fn spec(&self) -> NodeSpec {
        NodeSpec {
            port: self.port,
            network: self.network,
            vip: self.vip,
            mac: self.mac,
            subnet: self.subnet,
        }
    }
}

struct Dc {
    h1: Agent,
    h2: Agent,
    a: Vm,  // 10.0.0.2 on host 1, net 1, subnet 10.0.0.0/24
    b: Vm,  // 10.0.0.3 on host 2, net 1, same subnet
    c: Vm,  // 10.0.1.5 on host 2, net 1, subnet 10.0.1.0/24
    a2: Vm, // 10.0.0.2 on host 1, net 2 (the other tenant, same addresses)
    b2: Vm, // 10.0.0.3 on host 2, net 2
}

impl Dc {
    /// Both hosts with every network and mapping pushed.
    fn new() -> Self {
        Self::with_mappings(true)
    }

    fn with_mappings(push: bool) -> Self {
        let s0 = Subnet::new(cidr("10.0.0.0/24"));
        let s1 = Subnet::new(cidr("10.0.1.0/24"));
        let vm = |host, port, n: u32, v: &str, m, subnet| Vm {
            host,
            port: PortId(port),
            network: net(n),
            vip: ip(v),
            mac: mac(m, n as u8),
            subnet,
        };
        let a = vm(H1, 1, 1, "10.0.0.2", 2, s0);
        let b = vm(H2, 1, 1, "10.0.0.3", 3, s0);
        let c = vm(H2, 2, 1, "10.0.1.5", 5, s1);
        let a2 = vm(H1, 2, 2, "10.0.0.2", 2, s0);
        let b2 = vm(H2, 3, 2, "10.0.0.3", 3, s0);
        let mut dc = Dc {
            h1: Agent::new(AgentConfig::new(loc(H1))),
            h2: Agent::new(AgentConfig::new(loc(H2))),
            a,
            b,
            c,
            a2,
            b2,
        };
        for h in [&mut dc.h1, &mut dc.h2] {
            for n in [1, 2] {
                h.apply(Change::Network {
                    id: net(n),
                    cidr: cidr("10.0.0.0/16"),
                });
                h.apply(Change::Subnet {
                    network: net(n),
                    subnet: s0,
                });
                h.apply(Change::Subnet {
                    network: net(n),
                    subnet: s1,
                });
            }
        }
        for v in [a, b, c, a2, b2] {
            dc.host(v.host).apply(Change::AttachNode(v.spec()));
            if push {
                for h in [&mut dc.h1, &mut dc.h2] {
                    h.apply(Change::Mapping {
                        network: v.network,
                        vip: v.vip,
                        mapping: Some(Mapping {
                            locator: loc(v.host),
                            mac: v.mac,
                        }),
                    });
                }
            }
        }
        dc
    }

    fn host(&mut self, h: u8) -> &mut Agent {
        if h == H1 {
            &mut self.h1
        } else {
            &mut self.h2
        }
    }
}

/// A packet in a buffer with headroom, as a daemon holds it.
struct Pkt {
    buf: Vec<u8>,
    start: usize,
    end: usize,
}

impl Pkt {
    fn new(bytes: &[u8]) -> Self {
        let mut buf = vec![0u8; HEADROOM + MIN_BUFFER.max(bytes.len() + 64)];
        buf[HEADROOM..HEADROOM + bytes.len()].copy_from_slice(bytes);
        Pkt {
            buf,
            start: HEADROOM,
            end: HEADROOM + bytes.len(),
        }
    }

    fn run(&mut self, f: impl FnOnce(&mut PacketBuf<'_>) -> Verdict) -> Verdict {
        let mut p = PacketBuf::new(&mut self.buf, self.start, self.end);
        let v = f(&mut p);
        let r = p.range();
        (self.start, self.end) = (r.start, r.end);
        v
    }

    fn bytes(&self) -> &[u8] {
        &self.buf[self.start..self.end]
    }
}

fn from_vm(h: &mut Agent, port: PortId, frame: &[u8]) -> (Verdict, Vec<u8>) {
    from_vm_at(h, port, frame, T0)
}

fn from_vm_at(h: &mut Agent, port: PortId, frame: &[u8], now: Instant) -> (Verdict, Vec<u8>) {
    let mut p = Pkt::new(frame);
    let v = p.run(|b| h.from_vm(port, b, None, now));
    (v, p.bytes().to_vec())
}

fn from_substrate(h: &mut Agent, pkt: &[u8]) -> (Verdict, Vec<u8>) {
    let mut p = Pkt::new(pkt);
    let v = p.run(|b| h.from_substrate(b, None, T0));
    (v, p.bytes().to_vec())
}

fn eth(dst: MacAddr, src: MacAddr, ty: EtherType, payload: &[u8]) -> Vec<u8> {
    let repr = EthernetRepr {
        dst,
        src,
        vlan: None,
        ethertype: ty,
        payload_len: payload.len(),
    };
    let mut f = vec![0u8; repr.buffer_len()];
    repr.emit(&mut EthernetFrame::new_unchecked(&mut f[..]))
        .unwrap();
    f[ethernet::HEADER_LEN..].copy_from_slice(payload);
    f
}

fn ipv4(
    src: Ipv4Addr,
    dst: Ipv4Addr,
    proto: IpProtocol,
    ttl: u8,
    df: bool,
    payload: &[u8],
) -> Vec<u8> {
    let repr = Ipv4Repr {
        src,
        dst,
        protocol: proto,
        ttl,
        tos: 0,
        ident: 7,
        dont_frag: df,
        more_frags: false,
        frag_offset: 0,
        payload_len: payload.len(),
        options: Ipv4Options::NONE,
    };
    let mut b = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Ipv4Packet::new_unchecked(&mut b[..]))
        .unwrap();
    b[20..].copy_from_slice(payload);
    b
}

fn echo(id: u16, data_len: usize) -> Vec<u8> {
    let mut m = vec![8, 0, 0, 0, (id >> 8) as u8, id as u8, 0, 1];
    m.extend((0..data_len).map(|i| i as u8));
    let c = checksum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    m
}

/// A ping frame from `from` to `to`, addressed at L2 to `dst_mac`.
fn ping(from: &Vm, to: Ipv4Addr, dst_mac: MacAddr, ttl: u8) -> Vec<u8> {
    eth(
        dst_mac,
        from.mac,
        EtherType::IPV4,
        &ipv4(from.vip, to, IpProtocol::ICMP, ttl, true, &echo(1, 56)),
    )
}

fn router() -> MacAddr {
    AgentConfig::new(loc(0)).router_mac
}

fn icmp_of(frame: &[u8]) -> (Ipv4Addr, Ipv4Addr, u8, u8, Vec<u8>) {
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert!(ip.verify_checksum());
    let icmp = Icmpv4Packet::new_checked(ip.payload()).unwrap();
    assert!(icmp.verify_checksum(), "ICMP checksum");
    (
        ip.src(),
        ip.dst(),
        icmp.msg_type(),
        icmp.code(),
        ip.payload().to_vec(),
    )
}

// ---- ARP -----------------------------------------------------------------------------------

fn arp_request(from: &Vm, target: Ipv4Addr) -> Vec<u8> {
    let r = ArpRepr {
        op: ArpOp::Request,
        sender_mac: from.mac,
        sender_ip: from.vip,
        target_mac: MacAddr::ZERO,
        target_ip: target,
    };
    let mut a = [0u8; wire::arp::PACKET_LEN];
    r.emit(&mut ArpPacket::new_unchecked(&mut a[..])).unwrap();
    eth(MacAddr::BROADCAST, from.mac, EtherType::ARP, &a)
}

fn arp_answer(frame: &[u8]) -> ArpRepr {
    let e = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!(e.ethertype(), EtherType::ARP);
    let r = ArpRepr::parse(&ArpPacket::new_checked(e.payload()).unwrap()).unwrap();
    assert_eq!(r.op, ArpOp::Reply);
    assert_eq!(e.src(), r.sender_mac);
    r
}

#[test]
fn arp_answers_gateway_and_subnet_nodes_only() {
    let mut dc = Dc::new();
    let a = dc.a;
    let (v, out) = from_vm(&mut dc.h1, a.port, &arp_request(&a, ip("10.0.0.1")));
    assert_eq!(v, Verdict::Reply);
    let r = arp_answer(&out);
    assert_eq!(
        (r.sender_ip, r.sender_mac, r.target_mac, r.target_ip),
        (ip("10.0.0.1"), router(), a.mac, a.vip)
    );

    // A node on another host, same subnet: its own MAC.
    let (v, out) = from_vm(&mut dc.h1, a.port, &arp_request(&a, dc.b.vip));
    assert_eq!(v, Verdict::Reply);
    assert_eq!(arp_answer(&out).sender_mac, dc.b.mac);

    // A node of another subnet and a request for oneself: silence.
    for t in ["10.0.1.5", "10.0.0.2"] {
        let (v, _) = from_vm(&mut dc.h1, a.port, &arp_request(&a, ip(t)));
        assert!(
            matches!(
                v,
                Verdict::Drop(DropReason::ArpUnknownTarget | DropReason::ArpIgnored)
            ),
            "{t}: {v:?}"
        );
    }
    // An address not known here waits for the manager, who knows nobody there: silence.
    let (v, _) = from_vm(&mut dc.h1, a.port, &arp_request(&a, ip("10.0.0.99")));
    assert_eq!(v, Verdict::Held);
    assert_eq!(
        dc.h1.poll_event(),
        Some(Event::Resolve {
            network: net(1),
            ip: ip("10.0.0.99")
        })
    );
    dc.h1.on_resolved(net(1), ip("10.0.0.99"), None, T0);
    let replayed = replay_vm(&mut dc.h1, T0);
    assert_eq!(
        replayed.iter().map(|r| r.0).collect::<Vec<_>>(),
        [Verdict::Drop(DropReason::ArpUnknownTarget)]
    );
    assert_eq!(dc.h1.stats().to_substrate, 0, "ARP never leaves the host");
    // Another tenant with the same addresses gets its own network's answer.
    let a2 = dc.a2;
    let (_, out) = from_vm(&mut dc.h1, a2.port, &arp_request(&a2, dc.b2.vip));
    assert_eq!(arp_answer(&out).sender_mac, dc.b2.mac);
}

#[test]
fn arp_from_a_spoofing_port_is_dropped() {
    let mut dc = Dc::new();
    let mut liar = dc.a;
    liar.vip = ip("10.0.0.3");
    let (v, _) = from_vm(&mut dc.h1, dc.a.port, &arp_request(&liar, ip("10.0.0.1")));
    assert_eq!(v, Verdict::Drop(DropReason::PortSpoofedIp));
}

// ---- DHCP ----------------------------------------------------------------------------------

fn dhcp_frame(from: &Vm, ty: DhcpMessageType, requested: Option<Ipv4Addr>) -> Vec<u8> {
    let mut r = DhcpRepr::new(ty, 0x1234_5678, from.mac);
    r.requested_ip = requested;
    r.parameter_request_list = Some(&[1, 3, 6, 26, 51]);
    let mut d = vec![0u8; r.buffer_len()];
    r.emit(&mut DhcpPacket::new_unchecked(&mut d[..])).unwrap();
    let mut u = vec![0u8; 8 + d.len()];
    UdpRepr {
        src_port: 68,
        dst_port: 67,
        payload_len: d.len(),
    }
    .emit(&mut UdpPacket::new_unchecked(&mut u[..]))
    .unwrap();
    u[8..].copy_from_slice(&d);
    UdpPacket::new_unchecked(&mut u[..]).fill_checksum_v4([0; 4], [255; 4]);
    eth(
        MacAddr::BROADCAST,
        from.mac,
        EtherType::IPV4,
        &ipv4(
            Ipv4Addr::UNSPECIFIED,
            Ipv4Addr::BROADCAST,
            IpProtocol::UDP,
            64,
            false,
            &u,
        ),
    )
}

fn dhcp_answer(frame: &[u8], to: &Vm) -> (DhcpMessageType, Ipv4Addr, Vec<u8>) {
    let e = EthernetFrame::new_checked(frame).unwrap();
    assert_eq!((e.dst(), e.src()), (to.mac, router()));
    let ip = Ipv4Packet::new_checked(e.payload()).unwrap();
    assert!(ip.verify_checksum());
    assert_eq!(ip.src(), to.subnet.gateway);
    let u = UdpPacket::new_checked(ip.payload()).unwrap();
    assert!(u.verify_checksum_v4(ip.src_bytes(), ip.dst_bytes()));
    assert_eq!((u.src_port(), u.dst_port()), (67, 68));
    let d = DhcpPacket::new_checked(u.payload()).unwrap();
    let r = DhcpRepr::parse(&d).unwrap();
    assert_eq!(r.xid, 0x1234_5678);
    (r.message_type, r.yiaddr, u.payload().to_vec())
}

#[test]
fn dhcp_full_exchange() {
    let mut dc = Dc::new();
    let a = dc.a;
    let (v, out) = from_vm(
        &mut dc.h1,
        a.port,
        &dhcp_frame(&a, DhcpMessageType::DISCOVER, None),
    );
    assert_eq!(v, Verdict::Reply);
    let (ty, yi, raw) = dhcp_answer(&out, &a);
    assert_eq!((ty, yi), (DhcpMessageType::OFFER, a.vip));
    let d = DhcpPacket::new_checked(&raw[..]).unwrap();
    let r = DhcpRepr::parse(&d).unwrap();
    assert_eq!(r.subnet_mask, Some(ip("255.255.255.0")));
    assert_eq!(r.router, Some(ip("10.0.0.1")));
    assert_eq!(r.server_id, Some(ip("10.0.0.1")));
    assert_eq!(r.mtu, Some(1480), "virtual MTU = substrate MTU - 20");
    assert_eq!(r.lease_time, Some(3600));

    let (v, out) = from_vm(
        &mut dc.h1,
        a.port,
        &dhcp_frame(&a, DhcpMessageType::REQUEST, Some(a.vip)),
    );
    assert_eq!(v, Verdict::Reply);
    assert_eq!(dhcp_answer(&out, &a).0, DhcpMessageType::ACK);

    let (v, out) = from_vm(
        &mut dc.h1,
        a.port,
        &dhcp_frame(&a, DhcpMessageType::REQUEST, Some(ip("10.0.0.77"))),
    );
    assert_eq!(v, Verdict::Reply);
    assert_eq!(dhcp_answer(&out, &a).0, DhcpMessageType::NAK);

    let (v, _) = from_vm(
        &mut dc.h1,
        a.port,
        &dhcp_frame(&a, DhcpMessageType::RELEASE, None),
    );
    assert_eq!(v, Verdict::Consumed);
    let s = dc.h1.stats();
    assert_eq!((s.dhcp_offers, s.dhcp_acks, s.dhcp_naks), (1, 1, 1));
}

// ---- forwarding ----------------------------------------------------------------------------

#[test]
fn ping_across_hosts_in_one_subnet_and_back() {
    let mut dc = Dc::new();
    let (a, b) = (dc.a, dc.b);
    let (v, six) = from_vm(&mut dc.h1, a.port, &ping(&a, b.vip, b.mac, 64));
    assert_eq!(v, Verdict::ToSubstrate);
    let ip6 = Ipv6Packet::new_checked(&six[..]).unwrap();
    assert_eq!(
        ip6.dst_bytes(),
        &model::substrate::encode(&loc(H2), net(1), b.vip.octets())
    );
    assert_eq!(
        ip6.src_bytes(),
        &model::substrate::encode(&loc(H1), net(1), a.vip.octets())
    );

    let (v, frame) = from_substrate(&mut dc.h2, &six);
    assert_eq!(v, Verdict::ToPort(b.port));
    let e = EthernetFrame::new_checked(&frame[..]).unwrap();
    assert_eq!(
        (e.dst(), e.src()),
        (b.mac, a.mac),
        "same subnet: the sender's MAC"
    );
    let (src, dst, ty, _, _) = icmp_of(&frame);
    assert_eq!((src, dst, ty), (a.vip, b.vip, 8));
    assert_eq!(
        Ipv4Packet::new_checked(&frame[14..]).unwrap().ttl(),
        64,
        "not routed: TTL kept"
    );

    // The reply goes the other way.
    let mut reply = frame.clone();
    reply[..6].copy_from_slice(&a.mac.octets());
    reply[6..12].copy_from_slice(&b.mac.octets());
    let mut ipr = Ipv4Packet::new_unchecked(&mut reply[14..]);
    ipr.set_src(b.vip);
    ipr.set_dst(a.vip);
    ipr.fill_checksum();
    let (v, six) = from_vm(&mut dc.h2, b.port, &reply);
    assert_eq!(v, Verdict::ToSubstrate);
    assert_eq!(from_substrate(&mut dc.h1, &six).0, Verdict::ToPort(a.port));
}

#[test]
fn routing_between_subnets_decrements_ttl_and_rewrites_macs() {
    let mut dc = Dc::new();
    let (a, c) = (dc.a, dc.c);
    let (v, six) = from_vm(&mut dc.h1, a.port, &ping(&a, c.vip, router(), 9));
    assert_eq!(v, Verdict::ToSubstrate);
    assert_eq!(Ipv6Packet::new_checked(&six[..]).unwrap().hop_limit(), 8);
    let (v, frame) = from_substrate(&mut dc.h2, &six);
    assert_eq!(v, Verdict::ToPort(c.port));
    let e = EthernetFrame::new_checked(&frame[..]).unwrap();
    assert_eq!((e.dst(), e.src()), (c.mac, router()));
    let ip = Ipv4Packet::new_checked(&frame[14..]).unwrap();
    assert_eq!(ip.ttl(), 8);
    assert!(ip.verify_checksum());
}

#[test]
fn local_delivery_on_one_host() {
    let mut dc = Dc::new();
    // Put c's twin on host 1 in subnet 10.0.1.0/24 and route a to it.
    let d = Vm {
        host: H1,
        port: PortId(9),
        network: net(1),
        vip: ip("10.0.1.9"),
        mac: mac(9, 1),
        subnet: dc.c.subnet,
    };
    dc.h1.apply(Change::AttachNode(d.spec()));
    let a = dc.a;
    let (v, frame) = from_vm(&mut dc.h1, a.port, &ping(&a, d.vip, router(), 64));
    assert_eq!(v, Verdict::ToPort(d.port));
    let e = EthernetFrame::new_checked(&frame[..]).unwrap();
    assert_eq!((e.dst(), e.src()), (d.mac, router()));
    assert_eq!(Ipv4Packet::new_checked(&frame[14..]).unwrap().ttl(), 63);
    assert_eq!(dc.h1.stats().to_substrate, 0);
}

#[test]
fn ttl_expiry_and_gateway_ping_are_answered_by_the_router() {
    let mut dc = Dc::new();
    let (a, c) = (dc.a, dc.c);
    let sent = ping(&a, c.vip, router(), 1);
    let (v, out) = from_vm(&mut dc.h1, a.port, &sent);
    assert_eq!(v, Verdict::Reply);
    let (src, dst, ty, code, body) = icmp_of(&out);
    assert_eq!((src, dst, ty, code), (ip("10.0.0.1"), a.vip, 11, 0));
    assert_eq!(
        &body[8..],
        &sent[14..],
        "the whole offending packet is quoted"
    );

    let (v, out) = from_vm(&mut dc.h1, a.port, &ping(&a, ip("10.0.0.1"), router(), 64));
    assert_eq!(v, Verdict::Reply);
    let (src, dst, ty, _, _) = icmp_of(&out);
    assert_eq!((src, dst, ty), (ip("10.0.0.1"), a.vip, 0));
    // The gateway of the other subnet is the same router.
    let (v, out) = from_vm(&mut dc.h1, a.port, &ping(&a, ip("10.0.1.1"), router(), 64));
    assert_eq!(v, Verdict::Reply);
    assert_eq!(icmp_of(&out).0, ip("10.0.1.1"));
}

#[test]
fn unreachable_destinations_get_icmp_errors() {
    let mut dc = Dc::new();
    let a = dc.a;
    // Outside the network and no default route: net unreachable.
    let (v, out) = from_vm(
        &mut dc.h1,
        a.port,
        &ping(&a, ip("192.0.2.10"), router(), 64),
    );
    assert_eq!(v, Verdict::Reply);
    let (_, _, ty, code, _) = icmp_of(&out);
    assert_eq!((ty, code), (3, 0));
    assert_eq!(dc.h1.stats().drops.get(DropReason::NoRoute), 1);
    // A blackhole route.
    dc.h1.apply(Change::Route {
        network: net(1),
        subnet: None,
        cidr: cidr("198.51.100.0/24"),
        target: RouteTarget::Blackhole,
    });
    let (v, _) = from_vm(
        &mut dc.h1,
        a.port,
        &ping(&a, ip("198.51.100.7"), router(), 64),
    );
    assert_eq!(v, Verdict::Reply);
    assert_eq!(dc.h1.stats().drops.get(DropReason::Blackhole), 1);
    // A node the manager says does not exist: host unreachable when routed.
    dc.h1.on_resolved(net(1), ip("10.0.1.77"), None, T0);
    let (v, out) = from_vm(&mut dc.h1, a.port, &ping(&a, ip("10.0.1.77"), router(), 64));
    assert_eq!(v, Verdict::Reply);
    let (_, _, ty, code, _) = icmp_of(&out);
    assert_eq!((ty, code), (3, 1));
}

/// Where a frame from a VM went: to which substrate locator, or the ICMP error's type and
/// code when the router answered.
fn outcome(v: Verdict, out: &[u8]) -> Result<Locator, (u8, u8)> {
    match v {
        Verdict::ToSubstrate => {
            Ok(model::SubstrateAddr::decode(out[24..40].try_into().unwrap()).locator)
        }
        Verdict::Reply => {
            let (_, _, ty, code, _) = icmp_of(out);
            Err((ty, code))
        }
        v => panic!("unexpected verdict {v:?}"),
    }
}

#[test]
fn a_subnet_route_table_overrides_the_network_table_for_its_own_nodes_only() {
    let mut dc = Dc::new();
    let a = dc.a; // subnet 10.0.0.0/24, host 1
                  // A node of the other subnet on the same host.
    let d = Vm {
        host: H1,
        port: PortId(9),
        network: net(1),
        vip: ip("10.0.1.9"),
        mac: mac(9, 1),
        subnet: dc.c.subnet,
    };
    dc.h1.apply(Change::AttachNode(d.spec()));
    let route = |subnet: Option<&str>, to: &str, target| Change::Route {
        network: net(1),
        subnet: subnet.map(cidr),
        cidr: cidr(to),
        target,
    };
    dc.h1.apply(Change::Pool {
        id: 1,
        config: PoolConfig::default(),
        members: members([MemberState::Active; 2]),
    });
    // The network blackholes 198.51.100.0/24; subnet 10.0.0.0/24 sends the wider
    // 198.51.0.0/16 to the pool (its table is looked up first, so it wins over the
    // network's longer prefix), and blackholes the other subnet, local in the network.
    dc.h1
        .apply(route(None, "198.51.100.0/24", RouteTarget::Blackhole));
    dc.h1.apply(route(
        Some("10.0.0.0/24"),
        "198.51.0.0/16",
        RouteTarget::Pool(1),
    ));
    dc.h1.apply(route(
        Some("10.0.0.0/24"),
        "10.0.1.0/24",
        RouteTarget::Blackhole,
    ));
    let go = |h: &mut Agent, vm: &Vm, to: &str| {
        let (v, out) = from_vm(h, vm.port, &ping(vm, ip(to), router(), 64));
        outcome(v, &out)
    };
    let edges = [edge_loc(1), edge_loc(2)];
    assert!(edges.contains(&go(&mut dc.h1, &a, "198.51.100.7").unwrap()));
    assert_eq!(
        go(&mut dc.h1, &d, "198.51.100.7"),
        Err((3, 0)),
        "d: blackhole"
    );
    assert_eq!(go(&mut dc.h1, &a, "10.0.1.5"), Err((3, 0)), "a: blackhole");
    assert_eq!(go(&mut dc.h1, &d, "10.0.0.3"), Ok(loc(H2)), "d: local");
    assert_eq!(go(&mut dc.h1, &d, "10.0.1.5"), Ok(loc(H2)), "d: local");
    // Nothing in the subnet's table matches: the network's table decides.
    assert_eq!(go(&mut dc.h1, &a, "10.0.0.3"), Ok(loc(H2)));
    assert_eq!(go(&mut dc.h1, &a, "192.0.2.10"), Err((3, 0)), "no route");
    assert_eq!(dc.h1.stats().drops.get(DropReason::Blackhole), 2);
    assert_eq!(dc.h1.stats().drops.get(DropReason::NoRoute), 1);

    // Removing the subnet's routes brings the network's back, for that subnet only.
    for to in ["198.51.0.0/16", "10.0.1.0/24"] {
        dc.h1.apply(Change::RemoveRoute {
            network: net(1),
            subnet: Some(cidr("10.0.0.0/24")),
            cidr: cidr(to),
        });
    }
    assert_eq!(go(&mut dc.h1, &a, "198.51.100.7"), Err((3, 0)));
    assert_eq!(go(&mut dc.h1, &a, "10.0.1.5"), Ok(loc(H2)));
    // A route removed from the network's table does not touch a subnet's.
    dc.h1.apply(route(
        Some("10.0.0.0/24"),
        "198.51.0.0/16",
        RouteTarget::Pool(1),
    ));
    dc.h1.apply(Change::RemoveRoute {
        network: net(1),
        subnet: None,
        cidr: cidr("198.51.0.0/16"),
    });
    assert!(edges.contains(&go(&mut dc.h1, &a, "198.51.100.7").unwrap()));
}

#[test]
fn oversized_df_packets_get_fragmentation_needed() {
    let mut dc = Dc::new();
    let (a, b) = (dc.a, dc.b);
    let df_ping = |len: usize| {
        let ip = ipv4(a.vip, b.vip, IpProtocol::ICMP, 64, true, &echo(1, len - 28));
        eth(b.mac, a.mac, EtherType::IPV4, &ip)
    };
    let (v, out) = from_vm(&mut dc.h1, a.port, &df_ping(1481));
    assert_eq!(v, Verdict::Reply);
    let (_, _, ty, code, body) = icmp_of(&out);
    assert_eq!((ty, code), (3, 4));
    assert_eq!(u16::from_be_bytes([body[6], body[7]]), 1480);
    assert!(out.len() - 14 <= 576);
    let (v, six) = from_vm(&mut dc.h1, a.port, &df_ping(1480));
    assert_eq!(v, Verdict::ToSubstrate);
    assert_eq!(six.len(), 1500);
}

#[test]
fn overlapping_tenants_never_meet() {
    let mut dc = Dc::new();
    let (a, b, a2, b2) = (dc.a, dc.b, dc.a2, dc.b2);
    // Same addresses, same hosts: each network's packet reaches its own node only.
    let (_, six1) = from_vm(&mut dc.h1, a.port, &ping(&a, b.vip, b.mac, 64));
    let (_, six2) = from_vm(&mut dc.h1, a2.port, &ping(&a2, b2.vip, b2.mac, 64));
    assert_ne!(
        six1[24..40],
        six2[24..40],
        "network ids differ on the substrate"
    );
    assert_eq!(from_substrate(&mut dc.h2, &six1).0, Verdict::ToPort(b.port));
    assert_eq!(
        from_substrate(&mut dc.h2, &six2).0,
        Verdict::ToPort(b2.port)
    );
    // Tenant 2 cannot address tenant 1's MAC either.
    let (v, _) = from_vm(&mut dc.h1, a2.port, &ping(&a2, b2.vip, b.mac, 64));
    assert_eq!(v, Verdict::Drop(DropReason::UnknownDestinationMac));
}

#[test]
fn spoofed_substrate_packets_are_dropped_and_counted() {
    let mut dc = Dc::new();
    let (a, b, c) = (dc.a, dc.b, dc.c);
    let (_, six) = from_vm(&mut dc.h1, a.port, &ping(&a, b.vip, b.mac, 64));
    // Claim to be c (who lives on host 2) while coming from host 1's locator.
    let mut forged = six.clone();
    forged[8..24].copy_from_slice(&model::substrate::encode(&loc(H1), net(1), c.vip.octets()));
    assert_eq!(
        from_substrate(&mut dc.h2, &forged).0,
        Verdict::Drop(DropReason::SpoofedSource)
    );
    // Another network's id with a real sender, and no peering: refused as well.
    let mut cross = six.clone();
    cross[8..24].copy_from_slice(&model::substrate::encode(&loc(H1), net(2), a.vip.octets()));
    cross[24..40].copy_from_slice(&model::substrate::encode(&loc(H2), net(1), b.vip.octets()));
    assert_eq!(
        from_substrate(&mut dc.h2, &cross).0,
        Verdict::Drop(DropReason::NotPeered)
    );
    // Sent to host 2's node but at host 1's door.
    assert_eq!(
        from_substrate(&mut dc.h1, &six).0,
        Verdict::Drop(DropReason::WrongLocator)
    );
    assert_eq!(dc.h2.stats().drops.get(DropReason::SpoofedSource), 1);
    assert_eq!(dc.h2.stats().drops.get(DropReason::NotPeered), 1);
}

#[test]
fn the_kernels_own_multicast_on_the_substrate_device_is_counted_as_multicast() {
    let mut dc = Dc::new();
    // An MLDv2 report as a forwarding host's kernel sends it into a device coming up:
    // from ::, to ff02::16, hop-by-hop options then ICMPv6 type 143 (as read off `sub0`).
    let mut mld = vec![0u8; 76];
    mld[0] = 0x60;
    mld[4..6].copy_from_slice(&36u16.to_be_bytes());
    mld[24] = 0xff;
    mld[25] = 0x02;
    mld[39] = 0x16;
    mld[40..48].copy_from_slice(&[0x3a, 0, 5, 2, 0, 0, 1, 0]);
    mld[48] = 143;
    assert_eq!(
        from_substrate(&mut dc.h1, &mld).0,
        Verdict::Drop(DropReason::Multicast)
    );
    assert_eq!(dc.h1.stats().drops.get(DropReason::UnexpectedProbe), 0);
}

// ---- peering ------------------------------------------------------------------------------

/// `Dc` plus network 3 (10.1.0.0/16, peered with network 1) with p on host 2 and q on
/// host 1. Network 2 has the same addresses as network 1 and no peering.
fn peered() -> (Dc, Vm, Vm) {
    let mut dc = Dc::new();
    let s = Subnet::new(cidr("10.1.0.0/24"));
    let vm = |host, port, v: &str, m| Vm {
        host,
        port: PortId(port),
        network: net(3),
        vip: ip(v),
        mac: mac(m, 3),
        subnet: s,
    };
    let (p, q) = (vm(H2, 4, "10.1.0.5", 5), vm(H1, 5, "10.1.0.6", 6));
    for h in [&mut dc.h1, &mut dc.h2] {
        h.apply(Change::Network {
            id: net(3),
            cidr: cidr("10.1.0.0/16"),
        });
        h.apply(Change::Subnet {
            network: net(3),
            subnet: s,
        });
        for (from, to, dst) in [(1, 3, "10.1.0.0/16"), (3, 1, "10.0.0.0/16")] {
            h.apply(Change::Route {
                network: net(from),
                subnet: None,
                cidr: cidr(dst),
                target: RouteTarget::Peering(net(to)),
            });
        }
        for v in [p, q] {
            h.apply(Change::Mapping {
                network: v.network,
                vip: v.vip,
                mapping: Some(Mapping {
                    locator: loc(v.host),
                    mac: v.mac,
                }),
            });
        }
    }
    for v in [p, q] {
        dc.host(v.host).apply(Change::AttachNode(v.spec()));
    }
    (dc, p, q)
}

/// The echo reply a VM sends back for the echo request `frame` it received, to the router.
fn echo_reply(frame: &[u8], from: &Vm) -> Vec<u8> {
    let mut reply = frame.to_vec();
    reply[..6].copy_from_slice(&router().octets());
    reply[6..12].copy_from_slice(&from.mac.octets());
    let mut r = Ipv4Packet::new_unchecked(&mut reply[14..]);
    let (src, dst) = (r.src(), r.dst());
    r.set_src(dst);
    r.set_dst(src);
    r.set_ttl(64);
    r.fill_checksum();
    let l4 = &mut reply[34..];
    let c = u16::from_be_bytes([l4[2], l4[3]]);
    assert_eq!(l4[0], 8, "an echo request");
    l4[0] = 0;
    l4[2..4].copy_from_slice(&checksum::update_word(c, 0x0800, 0x0000).to_be_bytes());
    reply
}

/// The substrate addresses of an encoded packet: (locator, network, IPv4) of each end.
fn ends(six: &[u8]) -> [(Locator, NetworkId, Ipv4Addr); 2] {
    let a = |r: std::ops::Range<usize>| {
        let s = model::SubstrateAddr::decode(six[r].try_into().unwrap());
        (s.locator, s.network, s.vip)
    };
    [a(8..24), a(24..40)]
}

#[test]
fn ping_across_a_peering_both_ways() {
    let (mut dc, p, q) = peered();
    let a = dc.a;
    // a (network 1, host 1) -> p (network 3, host 2), and p's answer.
    let (v, six) = from_vm(&mut dc.h1, a.port, &ping(&a, p.vip, router(), 64));
    assert_eq!(v, Verdict::ToSubstrate);
    assert_eq!(
        ends(&six),
        [(loc(H1), net(1), a.vip), (loc(H2), net(3), p.vip)],
        "each end in its own network"
    );
    let (v, frame) = from_substrate(&mut dc.h2, &six);
    assert_eq!(v, Verdict::ToPort(p.port));
    let e = EthernetFrame::new_checked(&frame[..]).unwrap();
    assert_eq!((e.dst(), e.src()), (p.mac, router()), "routed");
    assert_eq!(Ipv4Packet::new_checked(&frame[14..]).unwrap().ttl(), 63);
    let (v, six) = from_vm(&mut dc.h2, p.port, &echo_reply(&frame, &p));
    assert_eq!(v, Verdict::ToSubstrate);
    assert_eq!(
        ends(&six),
        [(loc(H2), net(3), p.vip), (loc(H1), net(1), a.vip)]
    );
    let (v, frame) = from_substrate(&mut dc.h1, &six);
    assert_eq!(v, Verdict::ToPort(a.port));
    let (src, dst, ty, _, _) = icmp_of(&frame);
    assert_eq!((src, dst, ty), (p.vip, a.vip, 0));

    // The other way: p pings a.
    let (v, six) = from_vm(&mut dc.h2, p.port, &ping(&p, a.vip, router(), 64));
    assert_eq!(v, Verdict::ToSubstrate);
    let (v, frame) = from_substrate(&mut dc.h1, &six);
    assert_eq!(v, Verdict::ToPort(a.port));
    let (v, six) = from_vm(&mut dc.h1, a.port, &echo_reply(&frame, &a));
    assert_eq!(v, Verdict::ToSubstrate);
    assert_eq!(from_substrate(&mut dc.h2, &six).0, Verdict::ToPort(p.port));

    // A peer node on the same host is delivered here, both ways.
    let (v, frame) = from_vm(&mut dc.h1, a.port, &ping(&a, q.vip, router(), 64));
    assert_eq!(v, Verdict::ToPort(q.port));
    let (v, frame) = from_vm(&mut dc.h1, q.port, &echo_reply(&frame, &q));
    assert_eq!(v, Verdict::ToPort(a.port));
    assert_eq!(icmp_of(&frame).2, 0);
    assert_eq!(dc.h1.stats().drops.total() + dc.h2.stats().drops.total(), 0);
}

#[test]
fn security_groups_track_replies_across_a_peering() {
    let (mut dc, p, _) = peered();
    let a = dc.a;
    let group = |id, rules| Change::SecurityGroups {
        port: PortId(0),
        groups: vec![SecurityGroup::new(id, rules)],
    };
    let with_port = |c: Change, port| match c {
        Change::SecurityGroups { groups, .. } => Change::SecurityGroups { port, groups },
        _ => unreachable!(),
    };
    // a may send anything and takes nothing new; p takes ping from network 1's range
    // and sends nothing new.
    let a_sg = group(
        1,
        vec![SgRule::egress(
            Proto::Any,
            0..=65535,
            Remote::Cidr(any_cidr()),
        )],
    );
    let p_sg = group(
        2,
        vec![SgRule::ingress(
            Proto::Icmp,
            0..=255,
            Remote::Cidr("10.0.0.0/16".parse().unwrap()),
        )],
    );
    dc.h1.apply(with_port(a_sg, a.port));
    dc.h2.apply(with_port(p_sg, p.port));
    let (_, six) = from_vm(&mut dc.h1, a.port, &ping(&a, p.vip, router(), 64));
    let (v, frame) = from_substrate(&mut dc.h2, &six);
    assert_eq!(v, Verdict::ToPort(p.port));
    let (v, six) = from_vm(&mut dc.h2, p.port, &echo_reply(&frame, &p));
    assert_eq!(v, Verdict::ToSubstrate, "p's answer rides the connection");
    assert_eq!(
        from_substrate(&mut dc.h1, &six).0,
        Verdict::ToPort(a.port),
        "and a's connection lets it in"
    );
    // Neither opens anything new towards a.
    let (v, _) = from_vm(&mut dc.h2, p.port, &ping(&p, a.vip, router(), 64));
    assert_eq!(v, Verdict::Drop(DropReason::SgDenied));
}

#[test]
fn an_unpeered_network_cannot_use_a_peering() {
    let (mut dc, p, q) = peered();
    let (a2, c) = (dc.a2, dc.c);
    // Network 2 has network 1's addresses and no route to network 3.
    let (v, out) = from_vm(&mut dc.h1, a2.port, &ping(&a2, p.vip, router(), 64));
    assert_eq!(v, Verdict::Reply);
    assert_eq!(icmp_of(&out).2, 3, "net unreachable");
    // Its host claims a peering that network 3 never agreed to (no route back to 2).
    dc.h1.apply(Change::Route {
        network: net(2),
        subnet: None,
        cidr: cidr("10.1.0.0/16"),
        target: RouteTarget::Peering(net(3)),
    });
    let (v, six) = from_vm(&mut dc.h1, a2.port, &ping(&a2, p.vip, router(), 64));
    assert_eq!(v, Verdict::ToSubstrate);
    assert_eq!(ends(&six)[0], (loc(H1), net(2), a2.vip));
    assert_eq!(
        from_substrate(&mut dc.h2, &six).0,
        Verdict::Drop(DropReason::NotPeered)
    );
    let (v, _) = from_vm(&mut dc.h1, a2.port, &ping(&a2, q.vip, router(), 64));
    assert_eq!(v, Verdict::Drop(DropReason::NotPeered), "nor on one host");
    // A peering route that does not cover the source: network 3 takes only 10.0.0.0/24
    // from network 1 on host 2 now, so c (10.0.1.5) is refused.
    dc.h2.apply(Change::RemoveRoute {
        network: net(3),
        subnet: None,
        cidr: cidr("10.0.0.0/16"),
    });
    dc.h2.apply(Change::Route {
        network: net(3),
        subnet: None,
        cidr: cidr("10.0.0.0/24"),
        target: RouteTarget::Peering(net(1)),
    });
    let mut forged = six.clone();
    forged[8..24].copy_from_slice(&model::substrate::encode(&loc(H2), net(1), c.vip.octets()));
    assert_eq!(
        from_substrate(&mut dc.h2, &forged).0,
        Verdict::Drop(DropReason::NotPeered)
    );
    // A peered network's address from a locator that does not host it: spoofed.
    let mut forged = six.clone();
    let b = dc.b;
    forged[8..24].copy_from_slice(&model::substrate::encode(&loc(H1), net(1), b.vip.octets()));
    assert_eq!(
        from_substrate(&mut dc.h2, &forged).0,
        Verdict::Drop(DropReason::SpoofedSource)
    );
    assert_eq!(dc.h2.stats().drops.get(DropReason::NotPeered), 2);
    assert_eq!(dc.h1.stats().drops.get(DropReason::NotPeered), 1);
    assert_eq!(dc.h2.stats().drops.get(DropReason::SpoofedSource), 1);
}

/// A UDP datagram with a valid checksum.
fn udp(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, data: &[u8]) -> Vec<u8> {
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&sport.to_be_bytes());
    u[2..4].copy_from_slice(&dport.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(data);
    let ps = checksum::pseudo_v4(src.octets(), dst.octets(), 17, u.len() as u16);
    let c = checksum::finish(checksum::add(ps, checksum::sum(&u)));
    u[6..8].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, IpProtocol::UDP, 64, false, &u)
}

#[test]
fn icmp_errors_cross_a_peering_with_their_quoted_packet() {
    let (mut dc, p, _) = peered();
    let a = dc.a;
    let dgram = eth(
        router(),
        a.mac,
        EtherType::IPV4,
        &udp(a.vip, p.vip, 5353, 9999, b"anyone?"),
    );
    let (_, six) = from_vm(&mut dc.h1, a.port, &dgram);
    let (v, frame) = from_substrate(&mut dc.h2, &six);
    assert_eq!(v, Verdict::ToPort(p.port));
    // p's stack answers "port unreachable", quoting what it got.
    let mut msg = vec![3, 3, 0, 0, 0, 0, 0, 0];
    msg.extend_from_slice(&frame[14..]);
    let c = checksum::checksum(&msg);
    msg[2..4].copy_from_slice(&c.to_be_bytes());
    let err = eth(
        router(),
        p.mac,
        EtherType::IPV4,
        &ipv4(p.vip, a.vip, IpProtocol::ICMP, 64, false, &msg),
    );
    let (v, six) = from_vm(&mut dc.h2, p.port, &err);
    assert_eq!(v, Verdict::ToSubstrate);
    let (v, frame) = from_substrate(&mut dc.h1, &six);
    assert_eq!(v, Verdict::ToPort(a.port), "{:?}", dc.h1.translator_stats());
    let (src, dst, ty, code, body) = icmp_of(&frame);
    assert_eq!((src, dst, ty, code), (p.vip, a.vip, 3, 3));
    let inner = Ipv4Packet::new_checked(&body[8..]).unwrap();
    assert_eq!(
        (inner.src(), inner.dst()),
        (a.vip, p.vip),
        "the quote is a's datagram"
    );
    assert_eq!(&inner.payload()[8..], b"anyone?");
}

#[test]
fn unknown_sender_is_held_until_the_manager_vouches_for_it() {
    let mut dc = Dc::with_mappings(false);
    let (a, b) = (dc.a, dc.b);
    // Host 1 does not know where b lives: the ping waits, a resolve is asked.
    let (v, _) = from_vm(&mut dc.h1, a.port, &ping(&a, b.vip, b.mac, 64));
    assert_eq!(v, Verdict::Held);
    assert_eq!(
        dc.h1.poll_event(),
        Some(Event::Resolve {
            network: net(1),
            ip: b.vip
        })
    );
    assert_eq!(dc.h1.poll_event(), None);
    let mut buf = vec![0u8; MIN_BUFFER];
    assert!(dc.h1.take_ready(&mut buf).is_none());
    dc.h1.on_resolved(
        net(1),
        b.vip,
        Some(Mapping {
            locator: loc(H2),
            mac: b.mac,
        }),
        T0,
    );
    let (r, n) = dc.h1.take_ready(&mut buf).unwrap();
    assert_eq!(r, Ready::FromVm(a.port));
    let (v, six) = from_vm(&mut dc.h1, a.port, &buf[..n]);
    assert_eq!(v, Verdict::ToSubstrate);

    // Host 2 does not know a either: the packet waits for a's mapping.
    assert_eq!(from_substrate(&mut dc.h2, &six).0, Verdict::Held);
    assert_eq!(
        dc.h2.poll_event(),
        Some(Event::Resolve {
            network: net(1),
            ip: a.vip
        })
    );
    // The manager says a lives elsewhere: the held packet is a forgery.
    dc.h2.on_resolved(
        net(1),
        a.vip,
        Some(Mapping {
            locator: loc(7),
            mac: a.mac,
        }),
        T0,
    );
    let (r, n) = dc.h2.take_ready(&mut buf).unwrap();
    assert_eq!(r, Ready::FromSubstrate);
    assert_eq!(
        from_substrate(&mut dc.h2, &buf[..n]).0,
        Verdict::Drop(DropReason::SpoofedSource)
    );
}

#[test]
fn holding_is_bounded_and_times_out() {
    let mut dc = Dc::with_mappings(false);
    let a = dc.a;
    let per = dc.h1.config().hold_per_address;
    for i in 0..per {
        let (v, _) = from_vm(&mut dc.h1, a.port, &ping(&a, dc.b.vip, dc.b.mac, 64));
        assert_eq!(v, Verdict::Held, "{i}");
    }
    let (v, _) = from_vm(&mut dc.h1, a.port, &ping(&a, dc.b.vip, dc.b.mac, 64));
    assert_eq!(
        v,
        Verdict::Drop(DropReason::HoldQueueFull),
        "{per} per address"
    );
    dc.h1.tick(Instant::from_millis(1000));
    assert_eq!(
        dc.h1.poll_event(),
        Some(Event::Resolve {
            network: net(1),
            ip: dc.b.vip
        })
    );
    assert_eq!(
        dc.h1.poll_event(),
        Some(Event::Resolve {
            network: net(1),
            ip: dc.b.vip
        }),
        "asked again"
    );
    dc.h1.tick(Instant::from_millis(3000));
    assert_eq!(dc.h1.stats().drops.get(DropReason::HoldTimeout), per as u64);
}

#[test]
fn forwarding_goes_on_from_a_stale_cache_while_refreshing() {
    let mut dc = Dc::with_mappings(false);
    let (a, b) = (dc.a, dc.b);
    dc.h1.on_resolved(
        net(1),
        b.vip,
        Some(Mapping {
            locator: loc(H2),
            mac: b.mac,
        }),
        T0,
    );
    let late = Instant::from_secs(3600);
    let (v, _) = from_vm_at(&mut dc.h1, a.port, &ping(&a, b.vip, b.mac, 64), late);
    assert_eq!(
        v,
        Verdict::ToSubstrate,
        "the manager is away: keep using what we know"
    );
    assert_eq!(
        dc.h1.poll_event(),
        Some(Event::Resolve {
            network: net(1),
            ip: b.vip
        })
    );
}

#[test]
fn ports_cannot_spoof_or_flood() {
    let mut dc = Dc::new();
    let (a, b) = (dc.a, dc.b);
    let mut f = ping(&a, b.vip, b.mac, 64);
    f[6..12].copy_from_slice(&b.mac.octets());
    assert_eq!(
        from_vm(&mut dc.h1, a.port, &f).0,
        Verdict::Drop(DropReason::PortSpoofedMac)
    );
    let mut liar = a;
    liar.vip = ip("10.0.0.9");
    assert_eq!(
        from_vm(&mut dc.h1, a.port, &ping(&liar, b.vip, b.mac, 64)).0,
        Verdict::Drop(DropReason::PortSpoofedIp)
    );
    assert_eq!(
        from_vm(
            &mut dc.h1,
            a.port,
            &ping(&a, ip("10.0.0.255"), MacAddr::BROADCAST, 64)
        )
        .0,
        Verdict::Drop(DropReason::Broadcast)
    );
    let v6 = eth(b.mac, a.mac, EtherType::IPV6, &[0x60; 40]);
    assert_eq!(
        from_vm(&mut dc.h1, a.port, &v6).0,
        Verdict::Drop(DropReason::UnsupportedEthertype)
    );
    assert_eq!(
        from_vm(&mut dc.h1, PortId(99), &ping(&a, b.vip, b.mac, 64)).0,
        Verdict::Drop(DropReason::UnknownPort)
    );
}

// ---- the internet through a pool of edges: NAT by port blocks, elastic IPs ---------------

use crate::edge::{Edge, EdgeChange, EdgeVerdict, Owner};
use crate::nat::PortBlock;
use crate::pool::{Member, MemberState, PoolConfig};

const SERVER: &str = "198.51.100.10";
const PUBLIC: &str = "203.0.113.5";

fn edge_loc(n: u8) -> Locator {
    format!("fd63:6e73:0:e{n}::").parse().unwrap()
}

fn tcp_seg(src: Ipv4Addr, dst: Ipv4Addr, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let mut t = vec![0u8; 20];
    t[0..2].copy_from_slice(&sport.to_be_bytes());
    t[2..4].copy_from_slice(&dport.to_be_bytes());
    t[4..8].copy_from_slice(&1000u32.to_be_bytes());
    t[12] = 0x50;
    t[13] = flags;
    t[14..16].copy_from_slice(&65535u16.to_be_bytes());
    t.extend_from_slice(b"hello");
    let p = checksum::pseudo_v4(src.octets(), dst.octets(), 6, t.len() as u16);
    let c = checksum::finish(checksum::add(p, checksum::sum(&t)));
    t[16..18].copy_from_slice(&c.to_be_bytes());
    ipv4(src, dst, IpProtocol::TCP, 64, true, &t)
}

/// A TCP segment from `vm` to the internet's server, sent to the router.
fn to_internet(vm: &Vm, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    let seg = tcp_seg(vm.vip, ip(SERVER), sport, dport, flags);
    eth(router(), vm.mac, EtherType::IPV4, &seg)
}

/// TCP fields and checksum validity of an IPv4 packet.
fn tcp_of(ip: &[u8]) -> (Ipv4Addr, u16, Ipv4Addr, u16, bool) {
    let p = Ipv4Packet::new_checked(ip).unwrap();
    assert!(p.verify_checksum());
    let l4 = p.payload();
    let ps = checksum::pseudo_v4(p.src_bytes(), p.dst_bytes(), 6, l4.len() as u16);
    let ok = checksum::finish(checksum::add(ps, checksum::sum(l4))) == 0;
    (
        p.src(),
        u16::from_be_bytes([l4[0], l4[1]]),
        p.dst(),
        u16::from_be_bytes([l4[2], l4[3]]),
        ok,
    )
}

fn members(states: [MemberState; 2]) -> Vec<Member> {
    (0..2)
        .map(|i| Member {
            id: i as u32 + 1,
            locator: edge_loc(i as u8 + 1),
            weight: 1,
            state: states[i],
            load: None,
        })
        .collect()
}

struct Internet {
    dc: Dc,
    edges: [Edge; 2],
    block: PortBlock,
}

/// Network 1's default route to NAT pool 1 of two active edges.
fn route_to_nat_pool(h: &mut Agent) {
    h.apply(Change::Route {
        network: net(1),
        subnet: None,
        cidr: Ipv4Cidr::DEFAULT,
        target: RouteTarget::Pool(1),
    });
    h.apply(Change::Pool {
        id: 1,
        config: PoolConfig {
            nat: true,
            ..PoolConfig::default()
        },
        members: members([MemberState::Active; 2]),
    });
}

impl Internet {
    fn new() -> Self {
        let mut dc = Dc::new();
        let block = PortBlock {
            public: ip(PUBLIC),
            first: 1024,
            last: 2047,
        };
        let (a, b) = (dc.a, dc.b);
        for h in [&mut dc.h1, &mut dc.h2] {
            route_to_nat_pool(h);
        }
        dc.h1.apply(Change::PortBlocks {
            network: net(1),
            vip: a.vip,
            blocks: vec![block],
        });
        dc.h2.apply(Change::ElasticIp {
            network: net(1),
            vip: b.vip,
            public: Some(ip("203.0.113.50")),
        });
        let mut edges = [Edge::new(edge_loc(1)), Edge::new(edge_loc(2))];
        for e in &mut edges {
            e.apply(EdgeChange::Block {
                block,
                owner: Owner {
                    network: net(1),
                    vip: a.vip,
                    host: loc(H1),
                },
            });
            e.apply(EdgeChange::ElasticIp {
                public: ip("203.0.113.50"),
                owner: Owner {
                    network: net(1),
                    vip: b.vip,
                    host: loc(H2),
                },
            });
        }
        Internet { dc, edges, block }
    }

    fn edge_for(&mut self, six: &[u8]) -> &mut Edge {
        let dst = model::SubstrateAddr::decode(six[24..40].try_into().unwrap());
        self.edges
            .iter_mut()
            .find(|e| e.locator() == dst.locator)
            .expect("sent to a pool member")
    }
}

fn through_edge(e: &mut Edge, six: &[u8]) -> (EdgeVerdict, Vec<u8>) {
    let mut p = Pkt::new(six);
    let mut v = EdgeVerdict::Drop(DropReason::NoRoom);
    p.run(|b| {
        v = e.from_substrate(b);
        Verdict::Consumed
    });
    (v, p.bytes().to_vec())
}

fn from_outside(e: &mut Edge, four: &[u8]) -> (EdgeVerdict, Vec<u8>) {
    let mut p = Pkt::new(four);
    let mut v = EdgeVerdict::Drop(DropReason::NoRoom);
    p.run(|b| {
        v = e.from_outside(b);
        Verdict::Consumed
    });
    (v, p.bytes().to_vec())
}

#[test]
fn nat_out_through_one_edge_and_back_through_the_other() {
    let mut net_ = Internet::new();
    let a = net_.dc.a;
    let syn = to_internet(&a, 40000, 80, 0x02);
    let (v, six) = from_vm(&mut net_.dc.h1, a.port, &syn);
    assert_eq!(v, Verdict::ToSubstrate);
    let (v, out) = through_edge(net_.edge_for(&six), &six);
    assert_eq!(v, EdgeVerdict::ToOutside);
    let (src, sport, dst, dport, ok) = tcp_of(&out);
    assert!(ok, "TCP checksum valid on the internet");
    assert_eq!((src, dst, dport), (ip(PUBLIC), ip(SERVER), 80));
    assert!(
        net_.block.contains(sport),
        "source port from the node's block"
    );

    // The answer comes in through whichever edge the internet picks: both work.
    for e in 0..2 {
        let reply = tcp_seg(ip(SERVER), ip(PUBLIC), 80, sport, 0x12);
        let (v, six) = from_outside(&mut net_.edges[e], &reply);
        assert_eq!(v, EdgeVerdict::ToSubstrate, "edge {e}");
        let (v, frame) = from_substrate(&mut net_.dc.h1, &six);
        assert_eq!(v, Verdict::ToPort(a.port));
        let (src, sport2, dst, dport, ok) = tcp_of(&frame[14..]);
        assert!(ok);
        assert_eq!(
            (src, sport2, dst, dport),
            (ip(SERVER), 80, a.vip, 40000),
            "the node's own port is back"
        );
        let e2 = EthernetFrame::new_checked(&frame[..]).unwrap();
        assert_eq!((e2.dst(), e2.src()), (a.mac, router()));
    }
}

#[test]
fn losing_an_edge_moves_the_flow_but_keeps_its_public_address_and_port() {
    let mut net_ = Internet::new();
    let a = net_.dc.a;
    let seg = |flags| to_internet(&a, 40000, 80, flags);
    let (_, six) = from_vm(&mut net_.dc.h1, a.port, &seg(0x02));
    let first = model::SubstrateAddr::decode(six[24..40].try_into().unwrap()).locator;
    let (_, out) = through_edge(net_.edge_for(&six), &six);
    let before = tcp_of(&out);
    // The edge that carried the flow dies.
    let states = if first == edge_loc(1) {
        [MemberState::Down, MemberState::Active]
    } else {
        [MemberState::Active, MemberState::Down]
    };
    net_.dc.h1.apply(Change::Pool {
        id: 1,
        config: PoolConfig {
            nat: true,
            ..PoolConfig::default()
        },
        members: members(states),
    });
    let (v, six) = from_vm(&mut net_.dc.h1, a.port, &seg(0x10));
    assert_eq!(v, Verdict::ToSubstrate);
    let now_at = model::SubstrateAddr::decode(six[24..40].try_into().unwrap()).locator;
    assert_ne!(now_at, first, "moved off the dead edge");
    let (_, out) = through_edge(net_.edge_for(&six), &six);
    let after = tcp_of(&out);
    assert_eq!(
        (before.0, before.1),
        (after.0, after.1),
        "the server sees the same address and port"
    );

    // Every member down: dropped and counted.
    net_.dc.h1.apply(Change::Pool {
        id: 1,
        config: PoolConfig {
            nat: true,
            ..PoolConfig::default()
        },
        members: members([MemberState::Down; 2]),
    });
    assert_eq!(
        from_vm(&mut net_.dc.h1, a.port, &seg(0x10)).0,
        Verdict::Drop(DropReason::NoEdge)
    );
}

#[test]
fn unsolicited_inbound_is_dropped_at_the_edge_or_the_agent() {
    let mut net_ = Internet::new();
    // No block covers the port, and no elastic IP is the address.
    let (v, _) = from_outside(
        &mut net_.edges[0],
        &tcp_seg(ip(SERVER), ip(PUBLIC), 80, 9999, 0x02),
    );
    assert_eq!(v, EdgeVerdict::Drop(DropReason::UnsolicitedInbound));
    let (v, _) = from_outside(
        &mut net_.edges[0],
        &tcp_seg(ip(SERVER), ip("203.0.113.77"), 80, 1500, 0x02),
    );
    assert_eq!(v, EdgeVerdict::Drop(DropReason::UnsolicitedInbound));
    // A port of the block with no flow behind it: the stateless edge passes it on, the
    // agent, which holds the flows, refuses it.
    let (v, six) = from_outside(
        &mut net_.edges[0],
        &tcp_seg(ip(SERVER), ip(PUBLIC), 80, 1500, 0x02),
    );
    assert_eq!(v, EdgeVerdict::ToSubstrate);
    assert_eq!(
        from_substrate(&mut net_.dc.h1, &six).0,
        Verdict::Drop(DropReason::NatNoFlow)
    );
    assert_eq!(
        net_.edges[0]
            .stats()
            .drops
            .get(DropReason::UnsolicitedInbound),
        2
    );
}

// ---- health probes ------------------------------------------------------------------------

fn from_substrate_at(h: &mut Agent, pkt: &[u8], now: Instant) -> (Verdict, Vec<u8>) {
    let mut p = Pkt::new(pkt);
    let v = p.run(|b| h.from_substrate(b, None, now));
    (v, p.bytes().to_vec())
}

impl Internet {
    /// Host 1's clock at `now`: its probes go out (as a daemon would send what
    /// `take_ready` hands it), the edges that are `alive` answer, the answers come back.
    fn probe_at(&mut self, now: Instant, alive: [bool; 2]) {
        self.dc.h1.tick(now);
        let mut buf = [0u8; MIN_BUFFER];
        while let Some((r, n)) = self.dc.h1.take_ready(&mut buf) {
            assert_eq!(r, Ready::FromSubstrate);
            let (v, probe) = from_substrate_at(&mut self.dc.h1, &buf[..n], now);
            assert_eq!(v, Verdict::ToSubstrate, "a probe goes out as it is");
            let to = model::SubstrateAddr::decode(probe[24..40].try_into().unwrap());
            let e = (0..2)
                .find(|&i| edge_loc(i as u8 + 1) == to.locator)
                .unwrap();
            if !alive[e] {
                continue;
            }
            let (v, answer) = through_edge(&mut self.edges[e], &probe);
            assert_eq!(v, EdgeVerdict::ToSubstrate, "the edge answers");
            let (v, _) = from_substrate_at(&mut self.dc.h1, &answer, now);
            assert_eq!(v, Verdict::Consumed, "answers never reach a VM");
        }
    }

    /// A segment of a's flow from `sport` at `now`: which edge carries it, and the public
    /// source address and port the internet sees (with a valid checksum).
    fn send(&mut self, sport: u16, flags: u8, now: Instant) -> (usize, Ipv4Addr, u16) {
        let a = self.dc.a;
        let (v, six) = from_vm_at(
            &mut self.dc.h1,
            a.port,
            &to_internet(&a, sport, 80, flags),
            now,
        );
        assert_eq!(v, Verdict::ToSubstrate);
        let to = model::SubstrateAddr::decode(six[24..40].try_into().unwrap()).locator;
        let e = (0..2).find(|&i| edge_loc(i as u8 + 1) == to).unwrap();
        let (v, out) = through_edge(&mut self.edges[e], &six);
        assert_eq!(v, EdgeVerdict::ToOutside);
        let (src, public_port, _, _, ok) = tcp_of(&out);
        assert!(ok);
        (e, src, public_port)
    }

    /// The server answers `public_port` through edge `e`: a gets it on its own port.
    fn answer(&mut self, e: usize, public_port: u16, own_port: u16, now: Instant) {
        let reply = tcp_seg(ip(SERVER), ip(PUBLIC), 80, public_port, 0x10);
        let (v, six) = from_outside(&mut self.edges[e], &reply);
        assert_eq!(v, EdgeVerdict::ToSubstrate);
        let (v, frame) = from_substrate_at(&mut self.dc.h1, &six, now);
        assert_eq!(v, Verdict::ToPort(self.dc.a.port));
        assert_eq!(tcp_of(&frame[14..]).3, own_port);
    }
}

#[test]
fn an_edge_that_stops_answering_probes_loses_its_flows_within_the_bound_and_regains_new_ones() {
    let mut net_ = Internet::new();
    let cfg = net_.dc.h1.config().clone();
    assert_eq!((cfg.probe_interval_ms, cfg.probe_misses), (100, 3));
    let ms = Instant::from_millis;
    // 24 NATed flows, spread over both edges.
    let flows: Vec<u16> = (40000..40024).collect();
    let mut seen = Vec::new();
    for &p in &flows {
        seen.push(net_.send(p, 0x02, ms(0)));
    }
    let on = |e: usize, seen: &[(usize, Ipv4Addr, u16)]| seen.iter().filter(|s| s.0 == e).count();
    assert!(
        on(0, &seen) > 0 && on(1, &seen) > 0,
        "both edges carry flows"
    );

    // Both answer: nothing is marked down.
    for t in (0..=1000).step_by(100) {
        net_.probe_at(ms(t), [true, true]);
    }
    let st = net_.dc.h1.stats().clone();
    // A round every 100 ms, 0 to 1000: 11 x 2 probes.
    assert_eq!(
        (st.probes_sent, st.probes_answered, st.members_down),
        (22, 22, 0)
    );

    // Edge 0 stops answering after its answer at 1000 ms. Two misses are not enough.
    let bound = cfg.probe_interval_ms * (cfg.probe_misses as u64 + 1);
    let mut down_at = None;
    for t in (1100..=1000 + bound).step_by(100) {
        net_.probe_at(ms(t), [false, true]);
        if down_at.is_none() && net_.dc.h1.stats().members_down == 1 {
            down_at = Some(t);
        }
    }
    let down_at = down_at.expect("marked down within the bound");
    assert!(
        down_at - 1000 > cfg.probe_interval_ms * 2,
        "not before the third miss"
    );
    let now = ms(down_at + 100);

    // Every flow now goes through edge 1, with the public address and port it had; the
    // answers come back to a's own port. Edge 1's flows never moved.
    for (i, &p) in flows.iter().enumerate() {
        let (e, src, port) = net_.send(p, 0x10, now);
        assert_eq!(e, 1, "flow {p} is off the dead edge");
        assert_eq!(
            (src, port),
            (seen[i].1, seen[i].2),
            "flow {p} keeps its public port"
        );
        net_.answer(e, port, p, now);
    }
    assert_eq!(
        net_.dc.h1.pools[&1].counters().pins_moved,
        on(0, &seen) as u64
    );
    for p in 41000..41016 {
        assert_eq!(
            net_.send(p, 0x02, now).0,
            1,
            "new flows avoid the dead edge"
        );
    }

    // Edge 0 answers again: up at the next round, and it takes new flows again, while
    // the flows that moved stay where they are now.
    let back = down_at + 500;
    net_.probe_at(ms(back), [true, true]);
    assert_eq!(net_.dc.h1.stats().members_down, 0);
    let later = ms(back + 100);
    let fresh: Vec<usize> = (42000..42024)
        .map(|p| net_.send(p, 0x02, later).0)
        .collect();
    assert!(fresh.contains(&0) && fresh.contains(&1), "{fresh:?}");
    for &p in &flows {
        assert_eq!(net_.send(p, 0x10, later).0, 1, "moved flows stay pinned");
    }
    let st = net_.dc.h1.stats();
    assert!(st.probes_answered < st.probes_sent);
    assert!(net_.edges[0].stats().probes_answered > 0);
}

#[test]
fn when_every_edge_stops_answering_the_pool_fails_open() {
    // Probes lost on the way (a filter, a host too busy to answer) look like every edge
    // dead at once: rather than drop all traffic, the pool goes on as configured.
    let mut net_ = Internet::new();
    let ms = Instant::from_millis;
    let iv = net_.dc.h1.config().probe_interval_ms;
    for k in 0..=1 {
        net_.probe_at(ms(k * iv), [true, true]);
    }
    for k in 2..=6 {
        net_.probe_at(ms(k * iv), [false, false]);
    }
    assert_eq!(net_.dc.h1.stats().members_down, 2);
    let edges: Vec<usize> = (40000..40024)
        .map(|p| net_.send(p, 0x02, ms(6 * iv + 10)).0)
        .collect();
    assert!(edges.contains(&0) && edges.contains(&1), "{edges:?}");
    // One answers again: the other is left out again.
    net_.probe_at(ms(7 * iv), [true, false]);
    assert_eq!(net_.dc.h1.stats().members_down, 1);
    for p in 41000..41024 {
        assert_eq!(net_.send(p, 0x02, ms(7 * iv + 10)).0, 0, "new flow {p}");
    }
}

#[test]
fn only_the_edge_itself_answers_its_probe_address_and_stray_probes_are_dropped() {
    let mut net_ = Internet::new();
    net_.dc.h1.tick(T0);
    let mut buf = [0u8; MIN_BUFFER];
    let (_, n) = net_.dc.h1.take_ready(&mut buf).unwrap();
    let probe = buf[..n].to_vec();
    let to = model::SubstrateAddr::decode(probe[24..40].try_into().unwrap()).locator;
    let other = if to == edge_loc(1) { 1 } else { 0 };
    // Delivered to the wrong edge: not answered (and not sent outside either).
    let (v, _) = through_edge(&mut net_.edges[other], &probe);
    assert!(matches!(v, EdgeVerdict::Drop(_)), "{v:?}");
    assert_eq!(net_.edges[other].stats().probes_answered, 0);
    // The probe passes the agent once; a copy fed again is not sent.
    assert_eq!(
        from_substrate(&mut net_.dc.h1, &probe).0,
        Verdict::ToSubstrate
    );
    assert_eq!(
        from_substrate(&mut net_.dc.h1, &probe).0,
        Verdict::Drop(DropReason::UnexpectedProbe)
    );
    // An answer nobody asked for (another agent's identifier) is dropped.
    let mut stray = [0u8; crate::probe::LEN];
    crate::probe::request(&mut stray, &loc(H1), &to, 1, 1, 0);
    crate::probe::answer(&mut stray);
    assert_eq!(
        from_substrate(&mut net_.dc.h1, &stray).0,
        Verdict::Drop(DropReason::UnexpectedProbe)
    );
    assert_eq!(net_.dc.h1.stats().probes_sent, 1);
}

#[test]
fn elastic_ip_is_reachable_from_outside_and_keeps_ports() {
    let mut net_ = Internet::new();
    let b = net_.dc.b;
    let (v, six) = from_outside(
        &mut net_.edges[1],
        &tcp_seg(ip(SERVER), ip("203.0.113.50"), 5555, 22, 0x02),
    );
    assert_eq!(v, EdgeVerdict::ToSubstrate);
    let (v, frame) = from_substrate(&mut net_.dc.h2, &six);
    assert_eq!(v, Verdict::ToPort(b.port));
    let (src, sport, dst, dport, ok) = tcp_of(&frame[14..]);
    assert!(ok);
    assert_eq!((src, sport, dst, dport), (ip(SERVER), 5555, b.vip, 22));
    // And its answer leaves with the elastic IP, ports untouched.
    let ans = to_internet(&b, 22, 5555, 0x12);
    let (v, six) = from_vm(&mut net_.dc.h2, b.port, &ans);
    assert_eq!(v, Verdict::ToSubstrate);
    let (v, out) = through_edge(net_.edge_for(&six), &six);
    assert_eq!(v, EdgeVerdict::ToOutside);
    let (src, sport, _, _, ok) = tcp_of(&out);
    assert!(ok);
    assert_eq!((src, sport), (ip("203.0.113.50"), 22));
}

#[test]
fn a_node_without_a_block_asks_for_one_and_edges_refuse_forgeries() {
    let mut net_ = Internet::new();
    let a = net_.dc.a;
    net_.dc.h1.apply(Change::PortBlocks {
        network: net(1),
        vip: a.vip,
        blocks: vec![],
    });
    let syn = to_internet(&a, 40000, 80, 0x02);
    // The SYN waits for the block (see `the_first_syn_waits_for_the_first_port_block`).
    assert_eq!(from_vm(&mut net_.dc.h1, a.port, &syn).0, Verdict::Held);
    assert_eq!(
        net_.dc.h1.poll_event(),
        Some(Event::NeedPortBlock {
            network: net(1),
            vip: a.vip
        })
    );
    net_.dc.h1.apply(Change::PortBlocks {
        network: net(1),
        vip: a.vip,
        blocks: vec![net_.block],
    });
    let mut buf = vec![0u8; MIN_BUFFER];
    let (r, n) = net_.dc.h1.take_ready(&mut buf).unwrap();
    assert_eq!((r, &buf[..n]), (Ready::FromVm(a.port), &syn[..]));
    let (v, six) = from_vm(&mut net_.dc.h1, a.port, &buf[..n]);
    assert_eq!(v, Verdict::ToSubstrate);
    // The same packet claiming to come from host 2: the edge knows a lives on host 1.
    let mut forged = six.clone();
    forged[8..24].copy_from_slice(&model::substrate::encode(&loc(H2), net(1), a.vip.octets()));
    let (v, _) = through_edge(net_.edge_for(&forged), &forged);
    assert_eq!(v, EdgeVerdict::Drop(DropReason::SpoofedSource));
}

// ---- security groups and ACLs, enforced on both hosts ---------------------------------------

use crate::rules::{AclRule, Cidr, Direction as Dir, Proto, Remote, SecurityGroup, SgRule};

fn any_cidr() -> Cidr {
    "0.0.0.0/0".parse().unwrap()
}

/// a may send anything; b accepts ICMP from the network and TCP 22 only.
fn guarded() -> Dc {
    let mut dc = Dc::new();
    let all_out = SecurityGroup::new(
        1,
        vec![SgRule::egress(
            Proto::Any,
            0..=65535,
            Remote::Cidr(any_cidr()),
        )],
    );
    let b_in = SecurityGroup::new(
        2,
        vec![
            SgRule::ingress(
                Proto::Icmp,
                0..=255,
                Remote::Cidr("10.0.0.0/16".parse().unwrap()),
            ),
            SgRule::ingress(Proto::Tcp, 22..=22, Remote::Group(1)),
        ],
    );
    let (a, b) = (dc.a, dc.b);
    dc.h1.apply(Change::SecurityGroups {
        port: a.port,
        groups: vec![all_out],
    });
    dc.h2.apply(Change::SecurityGroups {
        port: b.port,
        groups: vec![b_in],
    });
    dc.h2.apply(Change::GroupMember {
        group: 1,
        network: net(1),
        vip: a.vip,
        member: true,
    });
    dc
}

fn tcp_frame(from: &Vm, to: &Vm, sport: u16, dport: u16, flags: u8) -> Vec<u8> {
    eth(
        to.mac,
        from.mac,
        EtherType::IPV4,
        &tcp_seg(from.vip, to.vip, sport, dport, flags),
    )
}

#[test]
fn security_groups_allow_replies_and_deny_new_inbound() {
    let mut dc = guarded();
    let (a, b) = (dc.a, dc.b);
    // Ping allowed in by b's group; b's answer goes out on the connection, without any
    // egress rule of its own.
    let (v, six) = from_vm(&mut dc.h1, a.port, &ping(&a, b.vip, b.mac, 64));
    assert_eq!(v, Verdict::ToSubstrate);
    let (v, frame) = from_substrate(&mut dc.h2, &six);
    assert_eq!(v, Verdict::ToPort(b.port));
    let mut reply = frame.clone();
    reply[..6].copy_from_slice(&a.mac.octets());
    reply[6..12].copy_from_slice(&b.mac.octets());
    let mut r = Ipv4Packet::new_unchecked(&mut reply[14..]);
    r.set_src(b.vip);
    r.set_dst(a.vip);
    r.fill_checksum();
    let l4 = &mut reply[34..];
    let c = u16::from_be_bytes([l4[2], l4[3]]);
    l4[0] = 0;
    l4[2..4].copy_from_slice(&checksum::update_word(c, 0x0800, 0x0000).to_be_bytes());
    let (v, six) = from_vm(&mut dc.h2, b.port, &reply);
    assert_eq!(
        v,
        Verdict::ToSubstrate,
        "the echo reply rides the tracked connection"
    );
    assert_eq!(from_substrate(&mut dc.h1, &six).0, Verdict::ToPort(a.port));

    // TCP 22 from a member of group 1: allowed. TCP 80: no rule, refused at b's host.
    let (_, six) = from_vm(&mut dc.h1, a.port, &tcp_frame(&a, &b, 40000, 22, 0x02));
    assert_eq!(from_substrate(&mut dc.h2, &six).0, Verdict::ToPort(b.port));
    let (v, six) = from_vm(&mut dc.h1, a.port, &tcp_frame(&a, &b, 40001, 80, 0x02));
    assert_eq!(v, Verdict::ToSubstrate, "a's own egress allows it");
    assert_eq!(
        from_substrate(&mut dc.h2, &six).0,
        Verdict::Drop(DropReason::SgDenied)
    );
    // b cannot open a connection to a: no egress rule.
    let (v, _) = from_vm(&mut dc.h2, b.port, &tcp_frame(&b, &a, 5000, 22, 0x02));
    assert_eq!(v, Verdict::Drop(DropReason::SgDenied));
}

#[test]
fn network_acls_are_ordered_and_stateless() {
    let mut dc = guarded();
    let (a, b) = (dc.a, dc.b);
    let net16: Cidr = "10.0.0.0/16".parse().unwrap();
    dc.h1.apply(Change::Acl {
        network: net(1),
        subnet: a.subnet.cidr,
        rules: Some(vec![
            AclRule::deny(10, Dir::Egress, Proto::Tcp, 22..=22, net16),
            AclRule::allow(20, Dir::Egress, Proto::Any, 0..=65535, any_cidr()),
        ]),
    });
    assert_eq!(
        from_vm(&mut dc.h1, a.port, &tcp_frame(&a, &b, 40000, 22, 0x02)).0,
        Verdict::Drop(DropReason::AclDenied)
    );
    let (v, six) = from_vm(&mut dc.h1, a.port, &ping(&a, b.vip, b.mac, 64));
    assert_eq!(v, Verdict::ToSubstrate);
    assert_eq!(from_substrate(&mut dc.h2, &six).0, Verdict::ToPort(b.port));
    // Stateless: with no inbound rule, even the reply to a's own ping is refused.
    let reply = eth(
        a.mac,
        b.mac,
        EtherType::IPV4,
        &ipv4(b.vip, a.vip, IpProtocol::ICMP, 64, true, &{
            let mut m = echo(1, 56);
            m[0] = 0;
            let c = u16::from_be_bytes([m[2], m[3]]);
            m[2..4].copy_from_slice(&checksum::update_word(c, 0x0800, 0).to_be_bytes());
            m
        }),
    );
    let (v, six) = from_vm(&mut dc.h2, b.port, &reply);
    assert_eq!(v, Verdict::ToSubstrate);
    assert_eq!(
        from_substrate(&mut dc.h1, &six).0,
        Verdict::Drop(DropReason::AclDenied)
    );
    assert_eq!(dc.h1.stats().drops.get(DropReason::AclDenied), 2);
}

// ---- the core claim as a property: pool changes never break a NATed flow -------------------

#[derive(Debug, Clone)]
enum Op {
    /// A new flow from the node, from this source port.
    Open(u16),
    /// A packet of flow `i % open`, out through the chosen edge, the answer back through
    /// edge `via % 4`.
    Packet(usize, usize),
    /// Member `m` becomes this state with this weight.
    Change(usize, u8, u32),
}

fn op() -> impl proptest::strategy::Strategy<Value = Op> {
    use proptest::prelude::*;
    prop_oneof![
        (1024u16..60000).prop_map(Op::Open),
        (any::<usize>(), any::<usize>()).prop_map(|(i, v)| Op::Packet(i, v)),
        (0usize..4, 0u8..3, 1u32..4).prop_map(|(m, s, w)| Op::Change(m, s, w)),
    ]
}

proptest::proptest! {
    #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

    /// For random flows and pool changes (weights, drains, failures, recoveries), every
    /// packet of every NATed flow leaves with the same public address and port, and the
    /// answer comes back to the node's own port whichever edge carries it.
    #[test]
    fn nated_flows_survive_any_pool_change(ops in proptest::collection::vec(op(), 1..120)) {
        let mut dc = Dc::new();
        let a = dc.a;
        let block = PortBlock { public: ip(PUBLIC), first: 1024, last: 4095 };
        let cfg = PoolConfig { nat: true, ..PoolConfig::default() };
        let mut ms: Vec<Member> = (0..4u8)
            .map(|i| Member { id: i as u32 + 1, locator: edge_loc(i + 1), weight: 1, state: MemberState::Active, load: None })
            .collect();
        dc.h1.apply(Change::Route { network: net(1), subnet: None, cidr: Ipv4Cidr::DEFAULT, target: RouteTarget::Pool(1) });
        dc.h1.apply(Change::Pool { id: 1, config: cfg, members: ms.clone() });
        dc.h1.apply(Change::PortBlocks { network: net(1), vip: a.vip, blocks: vec![block] });
        let mut edges: Vec<Edge> = (0..4u8).map(|i| Edge::new(edge_loc(i + 1))).collect();
        for e in &mut edges {
            e.apply(EdgeChange::Block { block, owner: Owner { network: net(1), vip: a.vip, host: loc(H1) } });
        }
        let mut flows: Vec<(u16, Option<u16>)> = vec![]; // (node port, public port once seen)
        let mut now = Instant::ZERO;
        for op in ops {
            now = now.plus_millis(10);
            match op {
                Op::Open(p) if !flows.iter().any(|f| f.0 == p) => flows.push((p, None)),
                Op::Open(_) => {}
                Op::Change(m, s, w) => {
                    ms[m].state = [MemberState::Active, MemberState::Draining, MemberState::Down][s as usize];
                    ms[m].weight = w;
                    dc.h1.apply(Change::Pool { id: 1, config: cfg, members: ms.clone() });
                }
                Op::Packet(i, via) if !flows.is_empty() => {
                    let k = i % flows.len();
                    let (sport, seen) = flows[k];
                    let seg = to_internet(&a, sport, 443, 0x10);
                    let mut p = Pkt::new(&seg);
                    let v = p.run(|b| dc.h1.from_vm(a.port, b, None, now));
                    if v == Verdict::Drop(DropReason::NoEdge) {
                        // Only acceptable when no member takes new flows (a flow pinned to
                        // a draining member keeps it, others have nowhere to go).
                        proptest::prop_assert!(ms.iter().all(|m| m.state != MemberState::Active));
                        continue;
                    }
                    proptest::prop_assert_eq!(v, Verdict::ToSubstrate);
                    let six = p.bytes().to_vec();
                    let dst = model::SubstrateAddr::decode(six[24..40].try_into().unwrap()).locator;
                    let chosen = ms.iter().find(|m| m.locator == dst).unwrap();
                    proptest::prop_assert!(chosen.state != MemberState::Down, "sent to a dead edge");
                    let e = edges.iter_mut().find(|e| e.locator() == dst).unwrap();
                    let (v, out) = through_edge(e, &six);
                    proptest::prop_assert_eq!(v, EdgeVerdict::ToOutside);
                    let (src, public_port, _, _, ok) = tcp_of(&out);
                    proptest::prop_assert!(ok);
                    proptest::prop_assert_eq!(src, ip(PUBLIC));
                    if let Some(before) = seen {
                        proptest::prop_assert_eq!(before, public_port, "the flow's public port changed");
                    }
                    flows[k].1 = Some(public_port);
                    // The answer, through any edge at all.
                    let ans = tcp_seg(ip(SERVER), ip(PUBLIC), 443, public_port, 0x10);
                    let (v, six) = from_outside(&mut edges[via % 4], &ans);
                    proptest::prop_assert_eq!(v, EdgeVerdict::ToSubstrate);
                    let mut p = Pkt::new(&six);
                    let v = p.run(|b| dc.h1.from_substrate(b, None, now));
                    proptest::prop_assert_eq!(v, Verdict::ToPort(a.port));
                    let (_, _, dst, dport, ok) = tcp_of(&p.bytes()[14..]);
                    proptest::prop_assert!(ok);
                    proptest::prop_assert_eq!((dst, dport), (a.vip, sport));
                }
                Op::Packet(..) => {}
            }
        }
    }
}

#[test]
fn edge_acls_apply_both_ways_and_edges_report_load() {
    let mut net_ = Internet::new();
    let any: Cidr = "0.0.0.0/0".parse().unwrap();
    let bad: Cidr = "192.0.2.0/24".parse().unwrap();
    for e in &mut net_.edges {
        e.apply(EdgeChange::Acl(Some(vec![
            AclRule::deny(10, Dir::Ingress, Proto::Any, 0..=65535, bad),
            AclRule::deny(20, Dir::Egress, Proto::Tcp, 25..=25, any),
            AclRule::allow(100, Dir::Ingress, Proto::Any, 0..=65535, any),
            AclRule::allow(100, Dir::Egress, Proto::Any, 0..=65535, any),
        ])));
    }
    // From a blocked network to the elastic IP: refused at the edge.
    let (v, _) = from_outside(
        &mut net_.edges[0],
        &tcp_seg(ip("192.0.2.66"), ip("203.0.113.50"), 5555, 22, 0x02),
    );
    assert_eq!(v, EdgeVerdict::Drop(DropReason::AclDenied));
    let (v, _) = from_outside(
        &mut net_.edges[0],
        &tcp_seg(ip(SERVER), ip("203.0.113.50"), 5555, 22, 0x02),
    );
    assert_eq!(v, EdgeVerdict::ToSubstrate);
    // SMTP out is refused; HTTPS goes.
    let a = net_.dc.a;
    for (dport, want) in [
        (25, EdgeVerdict::Drop(DropReason::AclDenied)),
        (443, EdgeVerdict::ToOutside),
    ] {
        let seg = to_internet(&a, 40000 + dport, dport, 0x02);
        let (_, six) = from_vm(&mut net_.dc.h1, a.port, &seg);
        assert_eq!(
            through_edge(net_.edge_for(&six), &six).0,
            want,
            "port {dport}"
        );
    }
    // Load: bytes carried over the time since the last report, against capacity.
    let mut e = Edge::new(edge_loc(9)).with_capacity(1000);
    assert_eq!(e.report_load(Instant::from_secs(10)).load, 0.0);
    e.apply(EdgeChange::ElasticIp {
        public: ip("203.0.113.50"),
        owner: Owner {
            network: net(1),
            vip: net_.dc.b.vip,
            host: loc(H2),
        },
    });
    for _ in 0..10 {
        let (v, _) = from_outside(
            &mut e,
            &tcp_seg(ip(SERVER), ip("203.0.113.50"), 5555, 22, 0x10),
        );
        assert_eq!(v, EdgeVerdict::ToSubstrate);
    }
    let r = e.report_load(Instant::from_secs(11));
    assert_eq!(r.bytes_per_sec, e.stats().inbound_bytes);
    assert!(r.load > 0.0 && r.load <= 1.0);
}

/// A router on the internet answering the packet `out` (as it left the edge) with
/// "fragmentation needed", quoting all of it.
fn frag_needed_for(out: &[u8]) -> Vec<u8> {
    let mut m = vec![3, 4, 0, 0, 0, 0, 0x05, 0x00]; // MTU 1280
    m.extend_from_slice(out);
    let c = checksum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    let to = Ipv4Packet::new_checked(out).unwrap().src();
    ipv4(ip("198.51.100.1"), to, IpProtocol::ICMP, 60, false, &m)
}

/// The ICMP error a node receives: type, code, and the quoted packet's source, source
/// port, with every checksum (the error's, the quoted header's) checked.
fn quoted_of(frame: &[u8]) -> (u8, u8, Ipv4Addr, u16) {
    let (_, _, ty, code, body) = icmp_of(frame);
    let inner = Ipv4Packet::new_checked(&body[8..]).unwrap();
    assert!(inner.verify_checksum(), "quoted header checksum");
    let (src, sport, _, _, ok) = tcp_of(&body[8..]);
    assert!(ok, "quoted TCP checksum");
    (ty, code, src, sport)
}

#[test]
fn icmp_errors_for_nated_flows_reach_the_node_with_its_own_address_and_port() {
    let mut net_ = Internet::new();
    let a = net_.dc.a;
    let seg = to_internet(&a, 40000, 80, 0x10);
    let (_, six) = from_vm(&mut net_.dc.h1, a.port, &seg);
    let (_, out) = through_edge(net_.edge_for(&six), &six);
    let err = frag_needed_for(&out);
    let (v, six) = from_outside(&mut net_.edges[1], &err);
    assert_eq!(v, EdgeVerdict::ToSubstrate, "owned through the quoted port");
    let (v, frame) = from_substrate(&mut net_.dc.h1, &six);
    assert_eq!(v, Verdict::ToPort(a.port));
    assert_eq!(quoted_of(&frame), (3, 4, a.vip, 40000));
    // An error quoting a port of the block that no flow uses is not delivered.
    let mut stray = out.clone();
    stray[20..22].copy_from_slice(&2000u16.to_be_bytes());
    let (v, six) = from_outside(&mut net_.edges[0], &frag_needed_for(&stray));
    assert_eq!(v, EdgeVerdict::ToSubstrate);
    assert_eq!(
        from_substrate(&mut net_.dc.h1, &six).0,
        Verdict::Drop(DropReason::NatNoFlow)
    );

    // Elastic IP: the quoted source goes back from the public address to the node's.
    let b = net_.dc.b;
    let seg = to_internet(&b, 22, 5555, 0x10);
    let (_, six) = from_vm(&mut net_.dc.h2, b.port, &seg);
    let (_, out) = through_edge(net_.edge_for(&six), &six);
    let (v, six) = from_outside(&mut net_.edges[0], &frag_needed_for(&out));
    assert_eq!(v, EdgeVerdict::ToSubstrate);
    let (v, frame) = from_substrate(&mut net_.dc.h2, &six);
    assert_eq!(v, Verdict::ToPort(b.port));
    assert_eq!(quoted_of(&frame), (3, 4, b.vip, 22));
}

#[test]
fn large_packets_without_df_are_fragmented_and_reassemble() {
    let mut dc = Dc::new();
    let (a, b) = (dc.a, dc.b);
    let data: Vec<u8> = (0..4000u32).map(|i| (i * 7) as u8).collect();
    let mut u = vec![0u8; 8];
    u[0..2].copy_from_slice(&5000u16.to_be_bytes());
    u[2..4].copy_from_slice(&6000u16.to_be_bytes());
    u[4..6].copy_from_slice(&((8 + data.len()) as u16).to_be_bytes());
    u.extend_from_slice(&data);
    let ps = checksum::pseudo_v4(a.vip.octets(), b.vip.octets(), 17, u.len() as u16);
    let c = checksum::finish(checksum::add(ps, checksum::sum(&u)));
    u[6..8].copy_from_slice(&c.to_be_bytes());
    let frame = eth(
        b.mac,
        a.mac,
        EtherType::IPV4,
        &ipv4(a.vip, b.vip, IpProtocol::UDP, 64, false, &u),
    );

    let mut pieces = vec![];
    let (v, six) = from_vm(&mut dc.h1, a.port, &frame);
    assert_eq!(v, Verdict::ToSubstrate);
    pieces.push(six);
    let mut buf = vec![0u8; MIN_BUFFER];
    while let Some((r, n)) = dc.h1.take_ready(&mut buf) {
        assert_eq!(r, Ready::FromVm(a.port));
        let (v, six) = from_vm(&mut dc.h1, a.port, &buf[..n]);
        assert_eq!(v, Verdict::ToSubstrate);
        pieces.push(six);
    }
    assert_eq!(
        pieces.len(),
        3,
        "4008 bytes of UDP in fragments of at most 1480"
    );
    // Each fits the substrate MTU; delivered to b, the fragments rebuild the datagram.
    let mut whole = vec![0u8; u.len()];
    for six in &pieces {
        assert!(six.len() <= 1500);
        let (v, f) = from_substrate(&mut dc.h2, six);
        assert_eq!(v, Verdict::ToPort(b.port));
        let ip = Ipv4Packet::new_checked(&f[14..]).unwrap();
        assert!(ip.verify_checksum() && !ip.dont_frag());
        let off = ip.frag_offset() as usize * 8;
        whole[off..off + ip.payload().len()].copy_from_slice(ip.payload());
    }
    assert_eq!(whole, u, "reassembled datagram, checksum included");
}

#[test]
fn a_vm_fragment_at_full_mtu_is_cut_again_for_the_fragment_header() {
    let mut dc = Dc::new();
    let (a, b) = (dc.a, dc.b);
    // What a VM's own stack sends for a big UDP datagram at MTU 1480: first fragment.
    let repr = Ipv4Repr {
        src: a.vip,
        dst: b.vip,
        protocol: IpProtocol::UDP,
        ttl: 64,
        tos: 0,
        ident: 99,
        dont_frag: false,
        more_frags: true,
        frag_offset: 0,
        payload_len: 1460,
        options: Ipv4Options::NONE,
    };
    let mut ipb = vec![0u8; repr.buffer_len()];
    repr.emit(&mut Ipv4Packet::new_unchecked(&mut ipb[..]))
        .unwrap();
    ipb[20 + 6] = 0x12; // a UDP checksum (over the whole datagram, not checked here)
    let frame = eth(b.mac, a.mac, EtherType::IPV4, &ipb);
    let (v, six) = from_vm(&mut dc.h1, a.port, &frame);
    assert_eq!(v, Verdict::ToSubstrate);
    assert!(six.len() <= 1500);
    let mut buf = vec![0u8; MIN_BUFFER];
    let (_, n) = dc
        .h1
        .take_ready(&mut buf)
        .expect("the tail of the fragment");
    let (v, six2) = from_vm(&mut dc.h1, a.port, &buf[..n]);
    assert_eq!(v, Verdict::ToSubstrate);
    let tail = Ipv4Packet::new_checked(&buf[14..n]).unwrap();
    assert!(
        tail.more_frags(),
        "still not the last fragment of the datagram"
    );
    assert_eq!(tail.ident(), 99);
    assert!(six2.len() <= 1500);
}

#[test]
fn a_held_packet_with_a_partial_checksum_is_completed_before_it_waits() {
    let mut dc = Dc::with_mappings(false);
    let (a, b) = (dc.a, dc.b);
    let mut ip = tcp_seg(a.vip, b.vip, 40000, 22, 0x02);
    // As the VM's stack hands it over with checksum offload: the pseudo-header sum only.
    let partial = checksum::pseudo_v4(a.vip.octets(), b.vip.octets(), 6, (ip.len() - 20) as u16);
    ip[20 + 16..20 + 18].copy_from_slice(&partial.to_be_bytes());
    let frame = eth(b.mac, a.mac, EtherType::IPV4, &ip);
    let mut v = VirtioNetHdr {
        flags: wire::virtio::FLAG_NEEDS_CSUM,
        csum_start: 14 + 20,
        csum_offset: 16,
        ..VirtioNetHdr::default()
    };
    let mut p = Pkt::new(&frame);
    assert_eq!(
        p.run(|buf| dc.h1.from_vm(a.port, buf, Some(&mut v), T0)),
        Verdict::Held
    );
    dc.h1.on_resolved(
        net(1),
        b.vip,
        Some(Mapping {
            locator: loc(H2),
            mac: b.mac,
        }),
        T0,
    );
    let mut buf = vec![0u8; MIN_BUFFER];
    let (_, n) = dc.h1.take_ready(&mut buf).unwrap();
    let (verdict, six) = from_vm(&mut dc.h1, a.port, &buf[..n]);
    assert_eq!(verdict, Verdict::ToSubstrate);
    dc.h2.on_resolved(
        net(1),
        a.vip,
        Some(Mapping {
            locator: loc(H1),
            mac: a.mac,
        }),
        T0,
    );
    let (verdict, frame) = from_substrate(&mut dc.h2, &six);
    assert_eq!(verdict, Verdict::ToPort(b.port));
    assert!(tcp_of(&frame[14..]).4, "a full, valid TCP checksum arrives");
}

// ---- ping to the internet ------------------------------------------------------------------

/// An echo request from `vm` to `to` with identifier `id`, sent to the router.
fn ping_id(vm: &Vm, to: Ipv4Addr, id: u16) -> Vec<u8> {
    eth(
        router(),
        vm.mac,
        EtherType::IPV4,
        &ipv4(vm.vip, to, IpProtocol::ICMP, 64, true, &echo(id, 56)),
    )
}

/// What a host on the internet answers to the echo request `out` (as it left the edge).
fn internet_echo_reply(out: &[u8]) -> Vec<u8> {
    let p = Ipv4Packet::new_checked(out).unwrap();
    let mut m = p.payload().to_vec();
    assert_eq!(m[0], 8, "an echo request");
    m[0] = 0;
    m[2..4].fill(0);
    let c = checksum::checksum(&m);
    m[2..4].copy_from_slice(&c.to_be_bytes());
    ipv4(p.dst(), p.src(), IpProtocol::ICMP, 60, false, &m)
}

/// Type, identifier, source and destination of an ICMP echo in an IPv4 packet, with both
/// checksums checked.
fn echo_of(ip: &[u8]) -> (u8, u16, Ipv4Addr, Ipv4Addr) {
    let p = Ipv4Packet::new_checked(ip).unwrap();
    assert!(p.verify_checksum());
    let icmp = Icmpv4Packet::new_checked(p.payload()).unwrap();
    assert!(icmp.verify_checksum(), "ICMP checksum");
    let l4 = p.payload();
    (l4[0], u16::from_be_bytes([l4[4], l4[5]]), p.src(), p.dst())
}

#[test]
fn ping_to_the_internet_through_a_port_block_and_an_elastic_ip() {
    let mut net_ = Internet::new();
    let (a, b) = (net_.dc.a, net_.dc.b);
    // Identifiers outside the block (rewritten to one of its ports) and inside it (kept).
    for id in [0x7a31, 1500] {
        let (v, six) = from_vm(&mut net_.dc.h1, a.port, &ping_id(&a, ip(SERVER), id));
        assert_eq!(v, Verdict::ToSubstrate);
        let (v, out) = through_edge(net_.edge_for(&six), &six);
        assert_eq!(v, EdgeVerdict::ToOutside);
        let (ty, public_id, src, dst) = echo_of(&out);
        assert_eq!((ty, src, dst), (8, ip(PUBLIC), ip(SERVER)));
        assert!(net_.block.contains(public_id), "identifier from the block");
        let reply = internet_echo_reply(&out);
        for e in 0..2 {
            let (v, six) = from_outside(&mut net_.edges[e], &reply);
            assert_eq!(v, EdgeVerdict::ToSubstrate, "edge {e}");
            let (v, frame) = from_substrate(&mut net_.dc.h1, &six);
            assert_eq!(v, Verdict::ToPort(a.port), "id {id:#x} via edge {e}");
            assert_eq!(
                echo_of(&frame[14..]),
                (0, id, ip(SERVER), a.vip),
                "the node's own identifier is back"
            );
        }
        // An ICMP error about the request reaches the node quoting its own identifier.
        let (v, six) = from_outside(&mut net_.edges[1], &frag_needed_for(&out));
        assert_eq!(v, EdgeVerdict::ToSubstrate);
        let (v, frame) = from_substrate(&mut net_.dc.h1, &six);
        assert_eq!(v, Verdict::ToPort(a.port));
        let (_, _, ty, _, body) = icmp_of(&frame);
        assert_eq!(ty, 3);
        assert_eq!(echo_of(&body[8..]), (8, id, a.vip, ip(SERVER)));
        // Another internet address answering on that identifier is not the flow's.
        let mut other = reply.clone();
        let mut p = Ipv4Packet::new_unchecked(&mut other[..]);
        p.set_src(ip("198.51.100.99"));
        p.fill_checksum();
        let (v, six) = from_outside(&mut net_.edges[0], &other);
        assert_eq!(v, EdgeVerdict::ToSubstrate);
        assert_eq!(
            from_substrate(&mut net_.dc.h1, &six).0,
            Verdict::Drop(DropReason::NatNoFlow)
        );
    }

    // Elastic IP: the identifier stays as the node chose it.
    let (v, six) = from_vm(&mut net_.dc.h2, b.port, &ping_id(&b, ip(SERVER), 0x7a32));
    assert_eq!(v, Verdict::ToSubstrate);
    let (v, out) = through_edge(net_.edge_for(&six), &six);
    assert_eq!(v, EdgeVerdict::ToOutside);
    assert_eq!(echo_of(&out), (8, 0x7a32, ip("203.0.113.50"), ip(SERVER)));
    let (v, six) = from_outside(&mut net_.edges[1], &internet_echo_reply(&out));
    assert_eq!(v, EdgeVerdict::ToSubstrate);
    let (v, frame) = from_substrate(&mut net_.dc.h2, &six);
    assert_eq!(v, Verdict::ToPort(b.port));
    assert_eq!(echo_of(&frame[14..]), (0, 0x7a32, ip(SERVER), b.vip));
}

// ---- anycast pools -------------------------------------------------------------------------

#[test]
fn an_anycast_pool_carries_flows_through_whichever_edge_the_fabric_picks() {
    let mut net_ = Internet::new();
    let any: Locator = "fd63:6e73:0:ea::".parse().unwrap();
    let config = PoolConfig {
        mode: crate::pool::PoolMode::Anycast(any),
        nat: true,
        ..PoolConfig::default()
    };
    for h in [&mut net_.dc.h1, &mut net_.dc.h2] {
        h.apply(Change::Pool {
            id: 1,
            config,
            members: members([MemberState::Active; 2]),
        });
    }
    let (a, b) = (net_.dc.a, net_.dc.b);
    let (v, six) = from_vm(&mut net_.dc.h1, a.port, &to_internet(&a, 40000, 80, 0x02));
    assert_eq!(v, Verdict::ToSubstrate);
    assert_eq!(
        ends(&six)[1],
        (any, net(1), ip(SERVER)),
        "to the anycast locator"
    );

    // An edge that does not know the pool is anycast refuses the packet.
    assert_eq!(
        through_edge(&mut net_.edges[0], &six).0,
        EdgeVerdict::Drop(DropReason::WrongLocator)
    );
    for e in &mut net_.edges {
        e.apply(EdgeChange::Anycast(Some(any)));
        assert_eq!(e.anycast(), Some(any));
    }
    // The fabric may deliver it to either member: both carry it alike, without state.
    let mut seen = Vec::new();
    for e in 0..2 {
        let (v, out) = through_edge(&mut net_.edges[e], &six);
        assert_eq!(v, EdgeVerdict::ToOutside, "edge {e}");
        let (src, sport, dst, dport, ok) = tcp_of(&out);
        assert!(ok);
        assert_eq!((src, dst, dport), (ip(PUBLIC), ip(SERVER), 80));
        assert!(net_.block.contains(sport));
        seen.push(sport);
        // The answer comes back from the edge's own locator, which the agent knows as a
        // member of a pool its network routes to.
        let reply = tcp_seg(ip(SERVER), ip(PUBLIC), 80, sport, 0x12);
        let (v, back) = from_outside(&mut net_.edges[e], &reply);
        assert_eq!(v, EdgeVerdict::ToSubstrate);
        assert_eq!(ends(&back)[0].0, edge_loc(e as u8 + 1));
        let (v, frame) = from_substrate(&mut net_.dc.h1, &back);
        assert_eq!(v, Verdict::ToPort(a.port), "edge {e}");
        assert_eq!(tcp_of(&frame[14..]), (ip(SERVER), 80, a.vip, 40000, true));
    }
    assert_eq!(seen[0], seen[1], "one public port whichever edge");

    // An elastic IP's node through the anycast locator too, and a ping.
    let (v, six) = from_vm(&mut net_.dc.h2, b.port, &ping_id(&b, ip(SERVER), 9));
    assert_eq!(v, Verdict::ToSubstrate);
    assert_eq!(ends(&six)[1].0, any);
    let (v, out) = through_edge(&mut net_.edges[1], &six);
    assert_eq!(v, EdgeVerdict::ToOutside);
    let (v, back) = from_outside(&mut net_.edges[0], &internet_echo_reply(&out));
    assert_eq!(v, EdgeVerdict::ToSubstrate);
    let (v, frame) = from_substrate(&mut net_.dc.h2, &back);
    assert_eq!(v, Verdict::ToPort(b.port));
    assert_eq!(echo_of(&frame[14..]), (0, 9, ip(SERVER), b.vip));

    // The pool leaves anycast mode: its members refuse the anycast locator again.
    net_.edges[1].apply(EdgeChange::Anycast(None));
    assert_eq!(
        through_edge(&mut net_.edges[1], &six).0,
        EdgeVerdict::Drop(DropReason::WrongLocator)
    );
}

// ---- restart: the NAT table saved by one agent and taken up by the next ------------------

#[test]
fn nated_flows_survive_an_agent_restart_through_export_and_import() {
    let mut old = Internet::new();
    let a = old.dc.a;
    let sports = [40000u16, 40001, 1500];
    let mut publics = Vec::new();
    for sport in sports {
        let (v, six) = from_vm(&mut old.dc.h1, a.port, &to_internet(&a, sport, 80, 0x02));
        assert_eq!(v, Verdict::ToSubstrate);
        let (_, out) = through_edge(old.edge_for(&six), &six);
        publics.push(tcp_of(&out).1);
    }
    let saved = old.dc.h1.export_nat(T0);

    // The restarted agent: the same configuration from the manager, an empty NAT table.
    let mut new = Internet::new();
    let answer = |port| tcp_seg(ip(SERVER), ip(PUBLIC), 80, port, 0x10);
    let (_, six) = from_outside(&mut new.edges[0], &answer(publics[0]));
    assert_eq!(
        from_substrate(&mut new.dc.h1, &six).0,
        Verdict::Drop(DropReason::NatNoFlow),
        "without the saved table the answer finds no flow"
    );
    let r = new.dc.h1.import_nat(&saved, T0);
    assert_eq!((r.flows, r.skipped), (3, 0));
    for (&sport, &public) in sports.iter().zip(&publics) {
        // The server's answers reach the VM with its own port, through either edge ...
        for e in 0..2 {
            let (_, six) = from_outside(&mut new.edges[e], &answer(public));
            let (v, frame) = from_substrate(&mut new.dc.h1, &six);
            assert_eq!(v, Verdict::ToPort(a.port), "port {sport}, edge {e}");
            assert_eq!(tcp_of(&frame[14..]), (ip(SERVER), 80, a.vip, sport, true));
        }
        // ... and the flow's next segment leaves with the public port it had.
        let (v, six) = from_vm(&mut new.dc.h1, a.port, &to_internet(&a, sport, 80, 0x10));
        assert_eq!(v, Verdict::ToSubstrate);
        let (_, out) = through_edge(new.edge_for(&six), &six);
        assert_eq!(tcp_of(&out).1, public, "port {sport} keeps its public port");
    }
    // A new flow gets a port of its own.
    let (_, six) = from_vm(&mut new.dc.h1, a.port, &to_internet(&a, 40002, 80, 0x02));
    let (_, out) = through_edge(new.edge_for(&six), &six);
    assert!(!publics.contains(&tcp_of(&out).1));
    assert_eq!(new.dc.h1.export_nat(T0)[0].flows.len(), 4);
    // A node that is not attached (deleted while no agent ran) is not saved again.
    new.dc.h1.apply(Change::DetachNode(a.port));
    assert!(new.dc.h1.export_nat(T0).is_empty());
}

#[test]
fn edge_choices_count_the_flows_sent_to_each_member() {
    let mut net_ = Internet::new();
    let a = net_.dc.a;
    assert!(net_.dc.h1.edge_choices().all(|(_, _, n)| n == 0));
    let mut sent = [0u64; 2];
    for sport in 40000..40040u16 {
        for flags in [0x02, 0x10] {
            let (v, six) = from_vm(&mut net_.dc.h1, a.port, &to_internet(&a, sport, 80, flags));
            assert_eq!(v, Verdict::ToSubstrate);
            if flags == 0x02 {
                let to = model::SubstrateAddr::decode(six[24..40].try_into().unwrap()).locator;
                sent[usize::from(to == edge_loc(2))] += 1;
            }
        }
    }
    let mut got: Vec<(u32, u32, u64)> = net_.dc.h1.edge_choices().collect();
    got.sort();
    assert_eq!(got, vec![(1, 1, sent[0]), (1, 2, sent[1])]);
    assert!(sent[0] > 0 && sent[1] > 0, "{sent:?}");
    let c = net_.dc.h1.pool_counters(1).unwrap();
    assert_eq!(c.new_pins, 40);
    assert!(net_.dc.h1.pool_counters(2).is_none());
}

// ---- waiting for a port block -------------------------------------------------------------

/// Takes node a's port blocks away on host 1 (the edges still know the block).
fn without_block(net_: &mut Internet) {
    let a = net_.dc.a;
    net_.dc.h1.apply(Change::PortBlocks {
        network: net(1),
        vip: a.vip,
        blocks: vec![],
    });
}

/// The events the agent has queued.
fn events(h: &mut Agent) -> Vec<Event> {
    std::iter::from_fn(|| h.poll_event()).collect()
}

/// Feeds every ready packet from a VM back in, as the daemon does (probes are left out):
/// the verdicts and bytes, in order.
fn replay_vm(h: &mut Agent, now: Instant) -> Vec<(Verdict, Vec<u8>)> {
    let mut buf = vec![0u8; MIN_BUFFER];
    let mut out = Vec::new();
    while let Some((r, n)) = h.take_ready(&mut buf) {
        if let Ready::FromVm(p) = r {
            out.push(from_vm_at(h, p, &buf[..n], now));
        }
    }
    out
}

fn need_block(vm: &Vm) -> Event {
    Event::NeedPortBlock {
        network: vm.network,
        vip: vm.vip,
    }
}

#[test]
fn the_first_syn_waits_for_the_first_port_block() {
    let mut net_ = Internet::new();
    let a = net_.dc.a;
    without_block(&mut net_);
    // Two new flows and a retransmitted SYN: all wait, one request for a block.
    let syns = [40000, 40001, 40000].map(|sport| to_internet(&a, sport, 80, 0x02));
    for syn in &syns {
        assert_eq!(from_vm(&mut net_.dc.h1, a.port, syn).0, Verdict::Held);
    }
    assert_eq!(events(&mut net_.dc.h1), vec![need_block(&a)], "asked once");
    net_.dc.h1.tick(Instant::from_millis(500));
    assert!(
        events(&mut net_.dc.h1).is_empty(),
        "not asked again so soon"
    );
    assert!(replay_vm(&mut net_.dc.h1, Instant::from_millis(500)).is_empty());

    // The block arrives: the SYNs go, with ports of the block, and the answers come back.
    net_.dc.h1.apply(Change::PortBlocks {
        network: net(1),
        vip: a.vip,
        blocks: vec![net_.block],
    });
    let sent = replay_vm(&mut net_.dc.h1, Instant::from_millis(600));
    assert_eq!(sent.len(), 3);
    let mut publics = Vec::new();
    for (v, six) in &sent {
        assert_eq!(*v, Verdict::ToSubstrate);
        let (v, out) = through_edge(net_.edge_for(six), six);
        assert_eq!(v, EdgeVerdict::ToOutside);
        let (src, sport, dst, dport, ok) = tcp_of(&out);
        assert!(ok);
        assert_eq!((src, dst, dport), (ip(PUBLIC), ip(SERVER), 80));
        assert!(net_.block.contains(sport), "port {sport} from the block");
        publics.push(sport);
    }
    assert_eq!(
        publics[0], publics[2],
        "the retransmission is the same flow"
    );
    assert_ne!(publics[0], publics[1]);
    for (own, public) in [(40000, publics[0]), (40001, publics[1])] {
        let reply = tcp_seg(ip(SERVER), ip(PUBLIC), 80, public, 0x12);
        let (v, six) = from_outside(&mut net_.edges[1], &reply);
        assert_eq!(v, EdgeVerdict::ToSubstrate);
        let (v, frame) = from_substrate(&mut net_.dc.h1, &six);
        assert_eq!(v, Verdict::ToPort(a.port));
        assert_eq!(tcp_of(&frame[14..]), (ip(SERVER), 80, a.vip, own, true));
    }
    let s = net_.dc.h1.stats();
    assert_eq!((s.held, s.port_block_holds), (3, 3));
    assert_eq!(s.drops.total(), 0, "{:?}", s.drops);
    // Nothing waits any more: no drop at the timeout, no request again.
    net_.dc.h1.tick(Instant::from_millis(5000));
    assert!(events(&mut net_.dc.h1).is_empty());
    assert_eq!(net_.dc.h1.stats().drops.total(), 0);
}

#[test]
fn a_packet_waiting_for_a_block_that_never_comes_is_dropped_at_the_timeout() {
    let mut net_ = Internet::new();
    let a = net_.dc.a;
    without_block(&mut net_);
    let syn = to_internet(&a, 40000, 80, 0x02);
    assert_eq!(from_vm(&mut net_.dc.h1, a.port, &syn).0, Verdict::Held);
    assert_eq!(events(&mut net_.dc.h1), vec![need_block(&a)]);
    // Unanswered: asked again while the packet waits, once per retry interval.
    net_.dc.h1.tick(Instant::from_millis(1000));
    assert_eq!(events(&mut net_.dc.h1), vec![need_block(&a)], "asked again");
    net_.dc.h1.tick(Instant::from_millis(1500));
    assert!(events(&mut net_.dc.h1).is_empty());
    net_.dc.h1.tick(Instant::from_millis(3000));
    let d = &net_.dc.h1.stats().drops;
    assert_eq!(d.get(DropReason::PortBlockWaitTimeout), 1);
    assert_eq!(d.get(DropReason::HoldTimeout), 0);
    assert_eq!(d.get(DropReason::PortBlockExhausted), 0);
    // Nothing waits: the request is not repeated, and a late block releases nothing.
    net_.dc.h1.tick(Instant::from_millis(5000));
    assert!(events(&mut net_.dc.h1).is_empty());
    net_.dc.h1.apply(Change::PortBlocks {
        network: net(1),
        vip: a.vip,
        blocks: vec![net_.block],
    });
    assert!(replay_vm(&mut net_.dc.h1, Instant::from_millis(5000)).is_empty());
}

#[test]
fn waiting_for_a_block_is_bounded_per_node_and_overall() {
    // Per node: its share of the queue (`hold_per_address`), then dropped and counted.
    let mut net_ = Internet::new();
    let a = net_.dc.a;
    without_block(&mut net_);
    let per = net_.dc.h1.config().hold_per_address as u16;
    for sport in 40000..40000 + per {
        let v = from_vm(&mut net_.dc.h1, a.port, &to_internet(&a, sport, 80, 0x02)).0;
        assert_eq!(v, Verdict::Held, "{sport}");
    }
    let v = from_vm(
        &mut net_.dc.h1,
        a.port,
        &to_internet(&a, 40000 + per, 80, 0x02),
    )
    .0;
    assert_eq!(
        v,
        Verdict::Drop(DropReason::PortBlockExhausted),
        "{per} per node"
    );
    assert_eq!(events(&mut net_.dc.h1), vec![need_block(&a)], "asked once");
    net_.dc.h1.apply(Change::PortBlocks {
        network: net(1),
        vip: a.vip,
        blocks: vec![net_.block],
    });
    let sent = replay_vm(&mut net_.dc.h1, T0);
    let sports: Vec<u16> = sent
        .iter()
        .map(|(v, six)| {
            assert_eq!(*v, Verdict::ToSubstrate);
            let (_, out) = through_edge(net_.edge_for(six), six);
            assert!(net_.block.contains(tcp_of(&out).1));
            u16::from_be_bytes([six[40], six[41]])
        })
        .collect();
    assert_eq!(sports.len(), per as usize);

    // Overall: packets waiting for mappings fill the queue; the node's packet, with its
    // own share untouched, finds no slot and is dropped. A block then releases nothing
    // else, and the mapping waits stay.
    let mut net_ = Internet::new();
    without_block(&mut net_);
    let cap = net_.dc.h1.config().hold_capacity;
    let per = net_.dc.h1.config().hold_per_address;
    for i in 0..cap / per {
        let to = Ipv4Addr::new(10, 0, 0, 100 + i as u8);
        for _ in 0..per {
            let v = from_vm(&mut net_.dc.h1, a.port, &ping(&a, to, router(), 64)).0;
            assert_eq!(v, Verdict::Held);
        }
    }
    let syn = to_internet(&a, 40000, 80, 0x02);
    assert_eq!(
        from_vm(&mut net_.dc.h1, a.port, &syn).0,
        Verdict::Drop(DropReason::PortBlockExhausted)
    );
    let asked = events(&mut net_.dc.h1);
    assert_eq!(asked.iter().filter(|e| **e == need_block(&a)).count(), 1);
    net_.dc.h1.apply(Change::PortBlocks {
        network: net(1),
        vip: a.vip,
        blocks: vec![net_.block],
    });
    assert!(replay_vm(&mut net_.dc.h1, T0).is_empty());
    assert_eq!(
        from_vm(&mut net_.dc.h1, a.port, &syn).0,
        Verdict::ToSubstrate,
        "with a block, no need to wait"
    );
    let d = &net_.dc.h1.stats().drops;
    assert_eq!(
        (
            d.get(DropReason::PortBlockExhausted),
            d.get(DropReason::HoldQueueFull)
        ),
        (1, 0)
    );
}

#[test]
fn a_node_whose_blocks_are_used_up_waits_for_another_or_for_a_port_to_free() {
    let mut net_ = Internet::new();
    let a = net_.dc.a;
    // One port only (within the block the edges know).
    let one = PortBlock {
        public: ip(PUBLIC),
        first: 1024,
        last: 1024,
    };
    net_.dc.h1.apply(Change::PortBlocks {
        network: net(1),
        vip: a.vip,
        blocks: vec![one],
    });
    let (v, six) = from_vm(&mut net_.dc.h1, a.port, &to_internet(&a, 40000, 80, 0x02));
    assert_eq!(v, Verdict::ToSubstrate);
    assert_eq!(tcp_of(&through_edge(net_.edge_for(&six), &six).1).1, 1024);
    let second = to_internet(&a, 40001, 80, 0x02);
    assert_eq!(from_vm(&mut net_.dc.h1, a.port, &second).0, Verdict::Held);
    assert_eq!(events(&mut net_.dc.h1), vec![need_block(&a)]);
    // A push that adds no free port (the same block again) releases nothing.
    net_.dc.h1.apply(Change::PortBlocks {
        network: net(1),
        vip: a.vip,
        blocks: vec![one],
    });
    assert!(replay_vm(&mut net_.dc.h1, T0).is_empty());
    // A second block: the waiting SYN goes with one of its ports.
    let more = PortBlock {
        public: ip(PUBLIC),
        first: 1025,
        last: 2047,
    };
    net_.dc.h1.apply(Change::PortBlocks {
        network: net(1),
        vip: a.vip,
        blocks: vec![one, more],
    });
    let sent = replay_vm(&mut net_.dc.h1, T0);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, Verdict::ToSubstrate);
    let six = &sent[0].1;
    let (_, out) = through_edge(net_.edge_for(six), six);
    assert!(more.contains(tcp_of(&out).1));

    // Used up again; then the first flow idles out and its port frees: the waiting SYN
    // takes it, without a new block.
    net_.dc.h1.apply(Change::PortBlocks {
        network: net(1),
        vip: a.vip,
        blocks: vec![one],
    });
    let tcp_idle = crate::nat::NatTimeouts::default().tcp;
    let late = Instant::from_millis(tcp_idle - 1000);
    let third = to_internet(&a, 40002, 80, 0x02);
    assert_eq!(
        from_vm_at(&mut net_.dc.h1, a.port, &third, late).0,
        Verdict::Held
    );
    assert_eq!(events(&mut net_.dc.h1), vec![need_block(&a)]);
    let at = Instant::from_millis(tcp_idle);
    net_.dc.h1.tick(at);
    let sent = replay_vm(&mut net_.dc.h1, at);
    assert_eq!(sent.len(), 1);
    let six = &sent[0].1;
    assert_eq!(sent[0].0, Verdict::ToSubstrate);
    assert_eq!(tcp_of(&through_edge(net_.edge_for(six), six).1).1, 1024);
    assert_eq!(net_.dc.h1.stats().drops.total(), 0);
}

#[test]
fn an_elastic_ip_releases_packets_waiting_for_a_block() {
    let mut net_ = Internet::new();
    let a = net_.dc.a;
    without_block(&mut net_);
    let syn = to_internet(&a, 40000, 80, 0x02);
    assert_eq!(from_vm(&mut net_.dc.h1, a.port, &syn).0, Verdict::Held);
    assert_eq!(events(&mut net_.dc.h1), vec![need_block(&a)]);
    net_.dc.h1.apply(Change::ElasticIp {
        network: net(1),
        vip: a.vip,
        public: Some(ip("203.0.113.51")),
    });
    let sent = replay_vm(&mut net_.dc.h1, T0);
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].0, Verdict::ToSubstrate);
    // The node's own port, untranslated (the edges map the whole address).
    assert_eq!(u16::from_be_bytes([sent[0].1[40], sent[0].1[41]]), 40000);
    // Nothing waits any more, so nothing is asked again.
    net_.dc.h1.tick(Instant::from_millis(2000));
    assert!(events(&mut net_.dc.h1).is_empty());
}

// ---- workers: one host's ports shared by agents on several cores --------------------------

/// Host 1 as worker `worker` of 2, every worker given the same configuration: a (port 1,
/// worker 1) and d (port 2, worker 0) in 10.0.0.0/24, e (port 4, worker 0) in
/// 10.0.1.0/24, and b on host 2. a may send anything and takes nothing new; d takes ping
/// from the network and sends nothing new.
fn worker(worker: u16, dc: &Dc) -> (Agent, Vm, Vm) {
    let mut cfg = AgentConfig::new(loc(H1));
    (cfg.worker, cfg.workers) = (worker, 2);
    let mut h = Agent::new(cfg);
    let (a, b, c) = (dc.a, dc.b, dc.c);
    let d = Vm {
        port: PortId(2),
        vip: ip("10.0.0.9"),
        mac: mac(9, 1),
        ..a
    };
    let e = Vm {
        port: PortId(4),
        vip: ip("10.0.1.9"),
        mac: mac(19, 1),
        subnet: c.subnet,
        ..a
    };
    h.apply(Change::Network {
        id: net(1),
        cidr: cidr("10.0.0.0/16"),
    });
    for s in [a.subnet, c.subnet] {
        h.apply(Change::Subnet {
            network: net(1),
            subnet: s,
        });
    }
    for v in [a, d, e] {
        h.apply(Change::AttachNode(v.spec()));
    }
    h.apply(Change::Mapping {
        network: net(1),
        vip: b.vip,
        mapping: Some(Mapping {
            locator: loc(H2),
            mac: b.mac,
        }),
    });
    let out_only = SgRule::egress(Proto::Any, 0..=65535, Remote::Cidr(any_cidr()));
    let ping_in = SgRule::ingress(
        Proto::Icmp,
        0..=255,
        Remote::Cidr("10.0.0.0/16".parse().unwrap()),
    );
    h.apply(Change::SecurityGroups {
        port: a.port,
        groups: vec![SecurityGroup::new(1, vec![out_only])],
    });
    h.apply(Change::SecurityGroups {
        port: d.port,
        groups: vec![SecurityGroup::new(2, vec![ping_in])],
    });
    (h, d, e)
}

fn from_worker(h: &mut Agent, pkt: &[u8]) -> (Verdict, Vec<u8>) {
    let mut p = Pkt::new(pkt);
    let v = p.run(|b| h.from_worker(b, None, T0));
    (v, p.bytes().to_vec())
}

#[test]
fn a_node_of_another_worker_is_reached_through_it_and_its_connections_live_there() {
    let dc = Dc::new();
    let a = dc.a;
    let ((mut w0, d, e), (mut w1, ..)) = (worker(0, &dc), worker(1, &dc));
    assert_eq!((worker_of(a.port, 2), worker_of(d.port, 2)), (1, 0));

    // a's worker runs a's side and hands the packet over, from this host's locator.
    let (v, six) = from_vm(&mut w1, a.port, &ping(&a, d.vip, d.mac, 64));
    assert_eq!(v, Verdict::ToWorker(0));
    let [(src_loc, ..), (dst_loc, _, dst_ip)] = ends(&six);
    assert_eq!((src_loc, dst_loc, dst_ip), (loc(H1), loc(H1), d.vip));
    // Read from the substrate, that packet would be a spoof.
    assert_eq!(
        from_substrate(&mut w0, &six).0,
        Verdict::Drop(DropReason::SpoofedSource)
    );
    let (v, frame) = from_worker(&mut w0, &six);
    assert_eq!(v, Verdict::ToPort(d.port));
    let eth_ = EthernetFrame::new_checked(&frame[..]).unwrap();
    assert_eq!((eth_.dst(), eth_.src()), (d.mac, a.mac));
    assert_eq!(Ipv4Packet::new_checked(&frame[14..]).unwrap().ttl(), 64);

    // d's answer rides the connection d's worker tracked, and a's worker lets it in on
    // the connection it tracked for a.
    let (v, six) = from_vm(&mut w0, d.port, &echo_reply(&frame, &d));
    assert_eq!(v, Verdict::ToWorker(1));
    let (v, frame) = from_worker(&mut w1, &six);
    assert_eq!(v, Verdict::ToPort(a.port));
    assert_eq!(icmp_of(&frame).2, 0, "an echo reply");
    // d opens nothing new towards a; a takes nothing new from d.
    let (v, _) = from_vm(&mut w0, d.port, &ping(&d, a.vip, a.mac, 64));
    assert_eq!(v, Verdict::Drop(DropReason::SgDenied));

    // Routed to another subnet: one hop, the router's MAC, on e's worker.
    let (v, six) = from_vm(&mut w1, a.port, &ping(&a, e.vip, router(), 64));
    assert_eq!(v, Verdict::ToWorker(0));
    let (v, frame) = from_worker(&mut w0, &six);
    assert_eq!(v, Verdict::ToPort(e.port));
    let eth_ = EthernetFrame::new_checked(&frame[..]).unwrap();
    assert_eq!((eth_.dst(), eth_.src()), (e.mac, router()));
    assert_eq!(Ipv4Packet::new_checked(&frame[14..]).unwrap().ttl(), 63);

    // Only this host's nodes may come from a worker.
    let mut h2 = Dc::new().h2;
    let (_, six) = from_vm(&mut h2, dc.b.port, &ping(&dc.b, a.vip, a.mac, 64));
    assert_eq!(
        from_worker(&mut w1, &six).0,
        Verdict::Drop(DropReason::SpoofedSource)
    );
    assert_eq!((w0.stats().to_worker, w1.stats().to_worker), (1, 2));
}

#[test]
fn a_substrate_packet_goes_to_the_worker_that_owns_its_node_untouched() {
    let mut dc = Dc::new();
    let (a, b) = (dc.a, dc.b);
    let ((mut w0, ..), (mut w1, ..)) = (worker(0, &dc), worker(1, &dc));
    let (v, six) = from_vm(&mut dc.h2, b.port, &ping(&b, a.vip, a.mac, 64));
    assert_eq!(v, Verdict::ToSubstrate);
    let (v, handed) = from_substrate(&mut w0, &six);
    assert_eq!((v, &handed), (Verdict::ToWorker(1), &six));
    // Nothing of a's was touched on worker 0: its connection table never saw the ping.
    assert_eq!(w0.stats().drops.total(), 0);
    let (v, _) = from_substrate(&mut w1, &handed);
    assert_eq!(
        v,
        Verdict::Drop(DropReason::SgDenied),
        "a takes nothing new"
    );
    // a's own ping out is tracked on worker 1, so b's answer comes in there.
    let (_, out) = from_vm(&mut w1, a.port, &ping(&a, b.vip, b.mac, 64));
    let (_, at_b) = from_substrate(&mut dc.h2, &out);
    let (_, back) = from_vm(&mut dc.h2, b.port, &echo_reply(&at_b, &b));
    assert_eq!(from_substrate(&mut w0, &back).0, Verdict::ToWorker(1));
    assert_eq!(from_substrate(&mut w1, &back).0, Verdict::ToPort(a.port));
}

#[test]
fn worker_zero_probes_for_the_host_and_the_other_workers_learn_what_it_finds() {
    let dc = Dc::new();
    let a = dc.a; // port 1: worker 1's
    let ((mut w0, ..), (mut w1, ..)) = (worker(0, &dc), worker(1, &dc));
    let config = PoolConfig {
        nat: false,
        ..PoolConfig::default()
    };
    for h in [&mut w0, &mut w1] {
        h.apply(Change::Pool {
            id: 7,
            config,
            members: members([MemberState::Active; 2]),
        });
        h.apply(Change::Route {
            network: net(1),
            subnet: None,
            cidr: Ipv4Cidr::DEFAULT,
            target: RouteTarget::Pool(7),
        });
    }
    let ms = Instant::from_millis;
    let (alive, dead) = (edge_loc(1), edge_loc(2));
    let mut buf = vec![0u8; MIN_BUFFER];
    // One round of worker 0 at `t`, only the first edge answering unless `both`; an
    // answer read from the substrate by worker 1 goes to worker 0.
    let mut round = |w0: &mut Agent, w1: &mut Agent, t: u64, both: bool| {
        w1.tick(ms(t));
        assert!(w1.take_ready(&mut buf).is_none(), "worker 1 sent a probe");
        w0.tick(ms(t));
        let mut probes = Vec::new();
        while let Some((r, n)) = w0.take_ready(&mut buf) {
            assert_eq!(r, Ready::FromSubstrate);
            probes.push(buf[..n].to_vec());
        }
        assert_eq!(probes.len(), 2, "at {t} ms");
        for p in &probes {
            assert_eq!(from_substrate(w0, p).0, Verdict::ToSubstrate, "sent");
            let to = model::SubstrateAddr::decode(p[24..40].try_into().unwrap()).locator;
            if to == alive || both {
                let mut answer = p.clone();
                probe::answer(&mut answer);
                assert_eq!(from_substrate(w1, &answer).0, Verdict::ToWorker(0));
                assert_eq!(from_substrate(w0, &answer).0, Verdict::Consumed);
            }
        }
    };
    // What worker 0 has to tell reaches worker 1 in order (the daemon's router does this).
    let told = |w1: &mut Agent, found: Vec<Event>| {
        for e in found {
            let Event::EdgeHealth { locator, up } = e else {
                panic!("{e:?}")
            };
            w1.apply(Change::EdgeHealth { locator, up });
        }
    };
    let last = |found: &[Event], l: Locator| {
        found.iter().rev().find_map(|e| match e {
            Event::EdgeHealth { locator, up } if *locator == l => Some(*up),
            _ => None,
        })
    };
    // The second edge never answers: never heard from, it is down at its first miss.
    round(&mut w0, &mut w1, 500, false);
    assert_eq!(w0.stats().members_down, 0);
    round(&mut w0, &mut w1, 1000, false);
    assert_eq!(w0.stats().members_down, 1);
    assert_eq!((w0.stats().probes_sent, w0.stats().probes_answered), (4, 2));
    // Worker 0 says what changed; worker 1 found nothing itself.
    let found = events(&mut w0);
    assert_eq!(last(&found, dead), Some(false), "{found:?}");
    assert_ne!(last(&found, alive), Some(false), "{found:?}");
    assert_eq!(events(&mut w1), vec![], "worker 1 found nothing itself");
    // Worker 1 still sends a's flows to both edges, until it is told.
    let edge_of = |h: &mut Agent, sport: u16| {
        let (v, six) = from_vm_at(h, a.port, &to_internet(&a, sport, 80, 0x02), ms(1100));
        assert_eq!(v, Verdict::ToSubstrate);
        model::SubstrateAddr::decode(six[24..40].try_into().unwrap()).locator
    };
    let before: Vec<_> = (30000..30024).map(|p| edge_of(&mut w1, p)).collect();
    assert!(before.contains(&dead), "{before:?}");
    told(&mut w1, found);
    // The worker that probes ignores its own finding coming back.
    w0.apply(Change::EdgeHealth {
        locator: dead,
        up: true,
    });
    assert_eq!(w0.stats().members_down, 1);
    assert_eq!(w1.stats().members_down, 1);
    for p in 30000..30024 {
        assert_eq!(edge_of(&mut w1, p), alive, "flow {p} is off the dead edge");
    }
    for p in 31000..31024 {
        assert_eq!(edge_of(&mut w1, p), alive, "new flow {p} avoids it");
    }
    // Alive again: worker 0 says so, and worker 1 gives it new flows again.
    round(&mut w0, &mut w1, 1500, true);
    assert_eq!(w0.stats().members_down, 0);
    let found = events(&mut w0);
    assert_eq!(last(&found, dead), Some(true), "{found:?}");
    told(&mut w1, found);
    assert_eq!(w1.stats().members_down, 0);
    let fresh: Vec<_> = (32000..32024).map(|p| edge_of(&mut w1, p)).collect();
    assert!(fresh.contains(&dead) && fresh.contains(&alive), "{fresh:?}");
    // Every fourth round it says every member's state again, so that a message lost to a
    // full queue is made good: worker 1, told nothing since, is set right.
    w1.apply(Change::EdgeHealth {
        locator: dead,
        up: false,
    });
    assert_eq!(w1.stats().members_down, 1, "a stale message");
    round(&mut w0, &mut w1, 2000, true);
    let found = events(&mut w0);
    assert_eq!(found.len(), 2, "{found:?}");
    told(&mut w1, found);
    assert_eq!(w1.stats().members_down, 0);
}

#[test]
fn a_member_never_heard_from_is_down_at_its_first_missed_probe() {
    // A restarted agent, or a member just added: an edge that died meanwhile must not
    // keep flows for three rounds.
    let mut net_ = Internet::new();
    let ms = Instant::from_millis;
    let iv = net_.dc.h1.config().probe_interval_ms;
    let edge_of = |net_: &mut Internet, sport: u16, t: u64| net_.send(sport, 0x02, ms(t)).0;
    // Before any round both edges take flows.
    let before: Vec<usize> = (40000..40024).map(|p| edge_of(&mut net_, p, 0)).collect();
    assert!(before.contains(&0) && before.contains(&1), "{before:?}");
    // The second edge never answers: down at the next round, one interval on.
    net_.probe_at(ms(0), [true, false]);
    assert_eq!(net_.dc.h1.stats().members_down, 0);
    net_.probe_at(ms(iv), [true, false]);
    assert_eq!(net_.dc.h1.stats().members_down, 1, "down at the first miss");
    for (i, p) in (40000..40024).enumerate() {
        let e = net_.send(p, 0x10, ms(iv + 50)).0;
        assert_eq!(e, 0, "flow {p} (was on edge {})", before[i]);
    }
    // It answers at last: up, and it takes new flows again. Having answered, it now has
    // three misses before it is down again.
    net_.probe_at(ms(2 * iv), [true, true]);
    assert_eq!(net_.dc.h1.stats().members_down, 0);
    let after: Vec<usize> = (42000..42024)
        .map(|p| edge_of(&mut net_, p, 2 * iv + 50))
        .collect();
    assert!(after.contains(&0) && after.contains(&1), "{after:?}");
    for k in 3..=4 {
        net_.probe_at(ms(k * iv), [true, false]);
        assert_eq!(net_.dc.h1.stats().members_down, 0, "round {k}");
    }

    // A member added to the pool is probed at once, not at the next round, and its
    // answer coming after the round moved on costs it nothing.
    let sent = net_.dc.h1.stats().probes_sent;
    let mut three = members([MemberState::Active; 2]);
    three.push(Member {
        id: 3,
        locator: edge_loc(3),
        weight: 1,
        state: MemberState::Active,
        load: None,
    });
    let config = *net_.dc.h1.pools[&1].config();
    net_.dc.h1.apply(Change::Pool {
        id: 1,
        config,
        members: three,
    });
    let mut b = [0u8; MIN_BUFFER];
    let (_, n) = net_
        .dc
        .h1
        .take_ready(&mut b)
        .expect("the new member's probe");
    let p = b[..n].to_vec();
    assert_eq!(
        model::SubstrateAddr::decode(p[24..40].try_into().unwrap()).locator,
        edge_loc(3)
    );
    assert_eq!(from_substrate(&mut net_.dc.h1, &p).0, Verdict::ToSubstrate);
    assert_eq!(net_.dc.h1.stats().probes_sent, sent + 1);
    net_.dc.h1.tick(ms(5 * iv));
    assert_eq!(
        net_.dc.h1.stats().members_down,
        0,
        "not a miss: probed out of round"
    );
}

#[test]
fn arp_for_a_peer_not_known_yet_is_answered_as_soon_as_the_manager_answers() {
    // Nothing pushed: host 1 knows b only once it asks.
    let mut dc = Dc::with_mappings(false);
    let (a, b) = (dc.a, dc.b);
    let (v, _) = from_vm(&mut dc.h1, a.port, &arp_request(&a, b.vip));
    assert_eq!(v, Verdict::Held, "no answer yet, and no drop");
    assert_eq!(
        events(&mut dc.h1),
        [Event::Resolve {
            network: net(1),
            ip: b.vip
        }]
    );
    let m = Mapping {
        locator: loc(H2),
        mac: b.mac,
    };
    dc.h1.on_resolved(net(1), b.vip, Some(m), T0);
    let replayed = replay_vm(&mut dc.h1, T0);
    assert_eq!(replayed.len(), 1);
    assert_eq!(replayed[0].0, Verdict::Reply);
    let r = arp_answer(&replayed[0].1);
    assert_eq!(
        (r.sender_ip, r.sender_mac, r.target_ip),
        (b.vip, b.mac, a.vip)
    );
}

#[test]
fn a_node_routed_to_a_nat_pool_asks_for_its_first_block_before_it_sends() {
    let mut net_ = Internet::new();
    let a = net_.dc.a;
    without_block(&mut net_);
    // a has no block (b has an elastic IP, and lives on host 2): host 1 asks for a's on
    // its next tick, once, with nothing sent yet.
    net_.dc.h1.tick(Instant::from_millis(100));
    assert_eq!(events(&mut net_.dc.h1), vec![need_block(&a)]);
    // Its first packet before the answer waits, and does not ask again.
    let v = from_vm_at(
        &mut net_.dc.h1,
        a.port,
        &to_internet(&a, 40000, 80, 0x02),
        Instant::from_millis(500),
    )
    .0;
    assert_eq!(v, Verdict::Held);
    assert_eq!(events(&mut net_.dc.h1), vec![]);
    // Nothing waits any more (the packet timed out): not asked again.
    net_.dc.h1.tick(Instant::from_millis(5000));
    assert_eq!(events(&mut net_.dc.h1), vec![], "asked once");
    // Host 2's b has its elastic IP: nothing to ask.
    net_.dc.h2.tick(Instant::from_millis(100));
    assert!(!events(&mut net_.dc.h2).contains(&need_block(&net_.dc.b)));
}

#[test]
fn a_node_three_quarters_through_its_ports_asks_for_another_block_ahead() {
    let mut net_ = Internet::new();
    let a = net_.dc.a;
    let size = usize::from(net_.block.last - net_.block.first) + 1;
    // Flows up to three quarters of the block: not yet.
    let ms = Instant::from_millis;
    for sport in 0..(size * 3 / 4) as u16 {
        let v = from_vm_at(
            &mut net_.dc.h1,
            a.port,
            &to_internet(&a, 20000 + sport, 80, 0x02),
            ms(10),
        )
        .0;
        assert_eq!(v, Verdict::ToSubstrate);
    }
    net_.dc.h1.tick(ms(100));
    assert_eq!(events(&mut net_.dc.h1), vec![]);
    // One more: less than a quarter free. Asked on the next tick, once, and again only
    // after a while if no block comes.
    from_vm_at(
        &mut net_.dc.h1,
        a.port,
        &to_internet(&a, 30000, 80, 0x02),
        ms(150),
    );
    net_.dc.h1.tick(ms(200));
    assert_eq!(events(&mut net_.dc.h1), vec![need_block(&a)]);
    net_.dc.h1.tick(ms(300));
    assert_eq!(events(&mut net_.dc.h1), vec![]);
    net_.dc.h1.tick(ms(200 + REFILL_RETRY_MS));
    assert_eq!(events(&mut net_.dc.h1), vec![need_block(&a)]);
    // Still no block (the pool is out of them): each wait twice the last, up to a bound.
    let mut at = 200 + REFILL_RETRY_MS;
    let mut wait = REFILL_RETRY_MS;
    for _ in 0..6 {
        wait = (wait * 2).min(REFILL_RETRY_MAX_MS);
        net_.dc.h1.tick(ms(at + wait - 1));
        assert_eq!(events(&mut net_.dc.h1), vec![], "asked before {wait} ms");
        at += wait;
        net_.dc.h1.tick(ms(at));
        assert_eq!(events(&mut net_.dc.h1), vec![need_block(&a)], "{wait} ms");
    }
    assert_eq!(wait, REFILL_RETRY_MAX_MS);
    // A second block: plenty free, nothing asked.
    let second = PortBlock {
        public: net_.block.public,
        first: 2048,
        last: 3071,
    };
    net_.dc.h1.apply(Change::PortBlocks {
        network: net(1),
        vip: a.vip,
        blocks: vec![net_.block, second],
    });
    net_.dc.h1.tick(ms(at + 2 * REFILL_RETRY_MAX_MS));
    assert_eq!(events(&mut net_.dc.h1), vec![]);
}

#[test]
fn only_a_nodes_own_worker_asks_for_more_ports_even_with_its_flows_imported_elsewhere() {
    let dc = Dc::new();
    let a = dc.a; // port 1: worker 1's
    let block = PortBlock {
        public: ip(PUBLIC),
        first: 1024,
        last: 1031,
    };
    let nat_pool = |h: &mut Agent| {
        route_to_nat_pool(h);
        h.apply(Change::PortBlocks {
            network: net(1),
            vip: a.vip,
            blocks: vec![block],
        });
    };
    let ((mut w0, ..), (mut w1, ..)) = (worker(0, &dc), worker(1, &dc));
    nat_pool(&mut w0);
    nat_pool(&mut w1);
    let ms = Instant::from_millis;
    for sport in 0..7u16 {
        let v = from_vm_at(
            &mut w1,
            a.port,
            &to_internet(&a, 40000 + sport, 80, 0x02),
            ms(10),
        )
        .0;
        assert_eq!(v, Verdict::ToSubstrate);
    }
    // A restart gives every worker the saved flows; only a's own worker asks for more.
    let saved = w1.export_nat(ms(20));
    assert_eq!(w0.export_nat(ms(20)), vec![], "worker 0 saves none of a's");
    w0.import_nat(&saved, ms(20));
    w0.tick(ms(100));
    w1.tick(ms(100));
    assert!(!events(&mut w0).contains(&need_block(&a)));
    assert_eq!(events(&mut w1), vec![need_block(&a)]);
}
