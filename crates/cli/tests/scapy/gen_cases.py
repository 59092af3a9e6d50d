#!/usr/bin/python3
"""Generates the inputs of the `canopy translate` conformance test.

usage: gen_cases.py OUTDIR

Writes to OUTDIR:
  v4-eth.pcap     IPv4 cases in Ethernet frames (plus non-IPv4 frames), for `encode`
  v4-raw.pcap     the same IPv4 packets, link type 228 (LINKTYPE_IPV4), no other frames
  v4-cases.json   per packet: timestamp (µs), name, expected outcome of encode with and
                  without --decrement-ttl ("ok" or the snake_case drop reason)
  v6-eth.pcap     IPv6 cases in Ethernet frames (plus an IPv4 frame), for `decode`
  v6-cases.json   the same for decode

Every packet has its own timestamp (whole seconds from 1700000000), which is how the
checkers match an output packet with the input it came from.
"""

import ipaddress
import json
import logging
import os
import struct
import sys

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.all import Raw, wrpcap  # noqa: E402
from scapy.layers.inet import ICMP, IP, TCP, UDP
from scapy.layers.inet6 import (ICMPv6DestUnreach, ICMPv6EchoReply, ICMPv6EchoRequest,
                                ICMPv6MLQuery, ICMPv6ND_NS, ICMPv6PacketTooBig,
                                ICMPv6ParamProblem, ICMPv6TimeExceeded, IPv6,
                                IPv6ExtHdrDestOpt, IPv6ExtHdrFragment,
                                IPv6ExtHdrHopByHop, IPv6ExtHdrRouting)
from scapy.layers.l2 import ARP, Ether

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import checksum  # noqa: E402

BASE = 1_700_000_000
A = "10.1.2.3"  # the VM whose packets are encoded
B = "172.16.200.9"  # its peer
MAC_A = "02:00:00:00:00:03"
MAC_R = "02:00:00:00:00:01"


def ipv4(payload, proto, src=A, dst=B, tos=0, ttl=64, ident=0x1234, df=False, mf=False,
         offset=0, options=b"", total=None, ihl=None, csum=None):
    """IPv4 header bytes built by hand (options, odd flags, bad lengths) + payload."""
    assert len(options) % 4 == 0
    hl = 20 + len(options)
    flags = (0x4000 if df else 0) | (0x2000 if mf else 0) | (offset // 8)
    tl = hl + len(payload) if total is None else total
    h = struct.pack("!BBHHHBBH4s4s", 0x40 | ((hl // 4) if ihl is None else ihl), tos, tl,
                    ident, flags, ttl, proto, 0, bytes(map(int, src.split("."))),
                    bytes(map(int, dst.split(".")))) + options
    c = checksum(h) if csum is None else csum
    return h[:10] + struct.pack("!H", c) + h[12:] + payload


def l4(layer, src=A, dst=B):
    """A TCP/UDP/ICMP scapy layer as bytes, its checksum computed for src/dst."""
    return bytes(IP(src=src, dst=dst) / layer)[20:]


def icmp_msg(ty, code, rest, body):
    m = struct.pack("!BBHI", ty, code, 0, rest) + body
    return m[:2] + struct.pack("!H", checksum(m)) + m[4:]


def eth(l3, vlan=None, pad=False, ethertype=None):
    if ethertype is None:
        ethertype = 0x86DD if l3[0] >> 4 == 6 else 0x0800
    f = Ether(src=MAC_A, dst=MAC_R)
    hdr = bytes(f)[:12]
    if vlan is not None:
        hdr += struct.pack("!HH", 0x8100, vlan)
    frame = hdr + struct.pack("!H", ethertype) + l3
    if pad and len(frame) < 60:
        frame += b"\0" * (60 - len(frame))
    return frame


def frags(l4bytes, proto, sizes, ident, **kw):
    """Cuts an L4 datagram into IPv4 fragments of the given payload sizes (last: rest)."""
    out, off = [], 0
    for i, n in enumerate(sizes + [len(l4bytes)]):
        chunk = l4bytes[off:off + n]
        last = off + len(chunk) >= len(l4bytes)
        out.append(ipv4(chunk, proto, ident=ident, mf=not last, offset=off, **kw))
        off += len(chunk)
        if last:
            break
    return out


def v4_cases():
    """[(name, frame, IPv4 packet, expected outcome, expected with --decrement-ttl)]"""
    cases = []

    def add(name, l3, expect="ok", dec=None, frame=None):
        cases.append((name, frame if frame is not None else eth(l3), l3, expect,
                      expect if dec is None else dec))

    pl = bytes(range(256))
    # --- ICMP echo, odd payload lengths
    add("echo_request", ipv4(l4(ICMP(type=8, id=0x4242, seq=1) / Raw(pl[:56])), 1, df=True))
    add("echo_reply", ipv4(l4(ICMP(type=0, id=0x4242, seq=1) / Raw(pl[:56])), 1, df=True))
    add("echo_request_1_byte", ipv4(l4(ICMP(type=8, id=7, seq=9) / Raw(b"\xab")), 1))
    add("echo_request_empty", ipv4(l4(ICMP(type=8, id=7, seq=10)), 1))
    # --- UDP and TCP, odd lengths, options, DSCP/ECN
    for n in (1, 3, 1473):
        add(f"udp_{n}_bytes", ipv4(l4(UDP(sport=1234, dport=5678) / Raw((pl * 6)[:n])), 17))
    small = ipv4(l4(UDP(sport=1, dport=2) / Raw(b"x")), 17)
    add("udp_padded_ethernet_frame", small, frame=eth(small, pad=True))
    tagged = ipv4(l4(UDP(sport=3, dport=4) / Raw(b"vlan")), 17)
    add("udp_vlan_tagged", tagged, frame=eth(tagged, vlan=42))
    add("tcp_syn_options", ipv4(l4(TCP(sport=40000, dport=443, flags="S", seq=123456789,
                                       options=[("MSS", 1460), ("SAckOK", b""),
                                                ("Timestamp", (4242, 0)), ("NOP", None),
                                                ("WScale", 7)])), 6, df=True))
    add("tcp_3_bytes_sack", ipv4(l4(TCP(sport=40000, dport=443, flags="PA", seq=1, ack=2,
                                        options=[("NOP", None), ("NOP", None),
                                                 ("SAck", (100, 200))]) / Raw(b"abc")),
                                 6, df=True))
    for tos in (0xB8, 0x03, 0x49, 0xFF):
        add(f"udp_tos_{tos:#04x}",
            ipv4(l4(UDP(sport=7, dport=8) / Raw(b"dscp")), 17, tos=tos))
    add("udp_zero_checksum", ipv4(l4(UDP(sport=9, dport=10, chksum=0) / Raw(b"no-csum!?")), 17))
    add("esp_other_protocol", ipv4(b"\x00\x00\x10\x01" + pl[:40], 50))
    # --- TTL
    add("ttl_1", ipv4(l4(UDP(sport=11, dport=12) / Raw(b"ttl")), 17, ttl=1),
        dec="ttl_exceeded")
    add("ttl_2", ipv4(l4(UDP(sport=11, dport=12) / Raw(b"ttl")), 17, ttl=2))
    add("ttl_255", ipv4(l4(UDP(sport=11, dport=12) / Raw(b"ttl")), 17, ttl=255))
    add("ttl_0", ipv4(l4(UDP(sport=11, dport=12) / Raw(b"ttl")), 17, ttl=0), "ttl_exceeded")
    # --- a header checksum that does not verify is never forwarded (RFC 1812 5.2.2)
    add("bad_ip_checksum", ipv4(l4(UDP(sport=11, dport=12) / Raw(b"csum")), 17, csum=0x1234),
        "bad_ip_checksum")
    # --- IPv4 options
    rr = bytes([7, 11, 4]) + b"\0" * 8 + b"\0"  # record route, 2 slots, + EOL
    add("option_record_route", ipv4(l4(UDP(sport=13, dport=14) / Raw(b"rr")), 17, options=rr))
    lsrr = bytes([131, 11, 4]) + bytes([192, 0, 2, 1, 192, 0, 2, 2]) + b"\0"
    add("option_lsrr_unexpired", ipv4(l4(UDP(sport=13, dport=14) / Raw(b"lsrr")), 17,
                                      options=lsrr), "source_route")
    ssrr = bytes([137, 7, 4, 192, 0, 2, 1, 0])
    add("option_ssrr_unexpired", ipv4(l4(UDP(sport=13, dport=14) / Raw(b"ssrr")), 17,
                                      options=ssrr), "source_route")
    lsrr_done = bytes([1, 131, 11, 12]) + bytes([192, 0, 2, 1, 192, 0, 2, 2])  # NOP, expired
    add("option_lsrr_expired", ipv4(l4(UDP(sport=13, dport=14) / Raw(b"lsrr-done")), 17,
                                    options=lsrr_done))
    # --- fragments: UDP (3000 bytes) and TCP, first/middle/last
    udp_dgram = l4(UDP(sport=2000, dport=3000) / Raw((pl * 12)[:2992]))
    for name, f in zip(("first", "middle", "last"), frags(udp_dgram, 17, [1480, 1480], 0xBEEF)):
        add(f"udp_fragment_{name}", f)
    tcp_seg = l4(TCP(sport=4000, dport=5000, flags="PA", seq=77, ack=88,
                     options=[("Timestamp", (1, 2))]) / Raw((pl * 8)[:1999]))
    for name, f in zip(("first", "middle", "last"), frags(tcp_seg, 6, [800, 800], 0xCAFE,
                                                          tos=0x28, ttl=33)):
        add(f"tcp_fragment_{name}", f)
    zero = l4(UDP(sport=2001, dport=3001, chksum=0) / Raw(pl[:100]))
    add("udp_zero_checksum_first_fragment", frags(zero, 17, [64], 0xD00D)[0],
        "udp_zero_checksum")
    echo = l4(ICMP(type=8, id=1, seq=1) / Raw(pl[:200]))
    add("icmp_echo_fragment", frags(echo, 1, [104], 0xE0E0)[0], "fragmented_icmp")

    # --- ICMP errors. The VM (A) reports on a packet the peer (B) sent it, so the
    # inner packet is B -> A.
    inner_udp = ipv4(l4(UDP(sport=53, dport=33333) / Raw(b"inner-udp-payload!"), src=B, dst=A),
                     17, src=B, dst=A, ident=0x1111, ttl=61, tos=0x10)
    add("icmp_port_unreachable_inner_udp", ipv4(icmp_msg(3, 3, 0, inner_udp), 1, tos=0xC0))
    inner_tcp = ipv4(l4(TCP(sport=443, dport=40000, flags="A", seq=5, ack=6), src=B, dst=A),
                     6, src=B, dst=A, ident=0x2222, ttl=1)
    add("icmp_time_exceeded_inner_tcp_8_bytes", ipv4(icmp_msg(11, 0, 0, inner_tcp[:28]), 1))
    add("icmp_reassembly_time_exceeded", ipv4(icmp_msg(11, 1, 0, inner_tcp), 1))
    big_inner = ipv4(l4(UDP(sport=5001, dport=5002) / Raw((pl * 6)[:1472]), src=B, dst=A),
                     17, src=B, dst=A, ident=0x3333, df=True)
    add("icmp_frag_needed_mtu_1400", ipv4(icmp_msg(3, 4, 1400, big_inner[:548]), 1))
    add("icmp_frag_needed_mtu_0_plateau", ipv4(icmp_msg(3, 4, 0, big_inner[:548]), 1))
    inner_rr = ipv4(l4(UDP(sport=53, dport=33334) / Raw(b"inner-with-options"), src=B, dst=A),
                    17, src=B, dst=A, ident=0x5555, options=bytes([7, 7, 4, 0, 0, 0, 0, 0]))
    add("icmp_port_unreachable_inner_with_options", ipv4(icmp_msg(3, 3, 0, inner_rr), 1))
    inner_frag = ipv4(bytes(range(40)), 17, src=B, dst=A, ident=0x6666, mf=True, offset=1480)
    add("icmp_frag_needed_inner_fragment", ipv4(icmp_msg(3, 4, 1400, inner_frag), 1))
    add("icmp_frag_needed_full_inner_truncated_to_1280",
        ipv4(icmp_msg(3, 4, 1400, big_inner), 1))
    for ptr in (0, 1, 2, 8, 9, 12, 16):
        add(f"icmp_param_problem_pointer_{ptr}", ipv4(icmp_msg(12, 0, ptr << 24, inner_udp), 1))
    add("icmp_param_problem_bad_length", ipv4(icmp_msg(12, 2, 3 << 24, inner_udp), 1))
    add("icmp_param_problem_pointer_5_untranslatable",
        ipv4(icmp_msg(12, 0, 5 << 24, inner_udp), 1), "icmp_untranslatable")
    add("icmp_param_problem_missing_option", ipv4(icmp_msg(12, 1, 0, inner_udp), 1),
        "icmp_untranslatable")
    for code in (0, 1, 2, 5, 9, 13):
        add(f"icmp_unreachable_code_{code}", ipv4(icmp_msg(3, code, 0, inner_udp), 1))
    add("icmp_unreachable_code_14_untranslatable", ipv4(icmp_msg(3, 14, 0, inner_udp), 1),
        "icmp_untranslatable")
    inner_echo = ipv4(l4(ICMP(type=8, id=99, seq=3) / Raw(b"ping"), src=B, dst=A), 1,
                      src=B, dst=A, ident=0x4444)
    add("icmp_host_unreachable_inner_echo", ipv4(icmp_msg(3, 1, 0, inner_echo), 1))
    inner_err = ipv4(icmp_msg(3, 3, 0, inner_udp[:28]), 1, src=B, dst=A)
    add("icmp_error_about_icmp_error", ipv4(icmp_msg(11, 0, 0, inner_err), 1),
        "icmp_error_in_error")
    add("icmp_redirect", ipv4(icmp_msg(5, 1, 0xC0000201, inner_udp[:28]), 1),
        "icmp_untranslatable")
    add("icmp_source_quench", ipv4(icmp_msg(4, 0, 0, inner_udp[:28]), 1), "icmp_untranslatable")
    add("icmp_timestamp", ipv4(icmp_msg(13, 0, 0x00010001, b"\0" * 12), 1),
        "icmp_untranslatable")
    bad = bytearray(icmp_msg(3, 3, 0, inner_udp))
    bad[2] ^= 0x55
    add("icmp_error_bad_checksum", ipv4(bytes(bad), 1), "icmp_bad_checksum")
    add("icmp_error_inner_too_short", ipv4(icmp_msg(3, 3, 0, inner_udp[:12]), 1),
        "icmp_bad_inner")
    # --- other drops
    # With --decrement-ttl its TTL of 1 is what the translator sees first: either reason
    # is a drop; the translator checks TTL before the protocol.
    add("igmp", ipv4(bytes.fromhex("1164ee9b00000000"), 2, dst="224.0.0.1", ttl=1), "igmp",
        "ttl_exceeded")
    add("truncated_total_length", ipv4(b"x" * 20, 17, total=200), "truncated")
    add("malformed_ihl_4", ipv4(b"x" * 20, 17, ihl=4), "malformed")
    return cases


def link_cases():
    """Frames without an IPv4 packet: (name, frame, expect)."""
    arp = bytes(Ether(src=MAC_A, dst="ff:ff:ff:ff:ff:ff") / ARP(psrc=A, pdst=B, hwsrc=MAC_A))
    v6 = eth(bytes(IPv6(src="fd00::1", dst="fd00::2") / UDP(sport=1, dport=2)))
    return [("arp_frame", arp, "not_ipv4"), ("ipv6_in_ethernet", v6, "not_ipv4"),
            ("runt_frame", bytes(Ether(src=MAC_A, dst=MAC_R))[:10], "truncated")]


# ---- IPv6 cases for decode -------------------------------------------------------------

def sub6(loc, net, v4):
    """The substrate address locator | net | v4, as a string."""
    return str(ipaddress.IPv6Address(ipaddress.IPv6Address(loc).packed[:9]
                                     + net.to_bytes(3, "big")
                                     + ipaddress.IPv4Address(v4).packed))


def v6_cases():
    net = 0xABCDEF
    s = sub6("fd63:6e73:0:2::", net, B)
    d = sub6("fd63:6e73:0:1::", net, A)
    pl = bytes(range(256))
    cases = []

    def add(name, pkt, expect="ok"):
        l3 = bytes(pkt)
        cases.append((name, eth(l3), l3, expect, expect))

    def ip6(**kw):
        return IPv6(src=s, dst=d, **kw)

    add("v6_echo_request", ip6(tc=0xB9, fl=0x12345) / ICMPv6EchoRequest(id=5, seq=6, data=pl[:40]))
    add("v6_echo_reply", ip6() / ICMPv6EchoReply(id=5, seq=6, data=b"odd"))
    add("v6_udp_odd", ip6(hlim=1) / UDP(sport=53, dport=3333) / Raw(pl[:5]))
    add("v6_udp_1300_df", ip6() / UDP(sport=53, dport=3333) / Raw((pl * 6)[:1300]))
    add("v6_tcp", ip6(tc=0x02) / TCP(sport=80, dport=40000, flags="SA", seq=9, ack=10,
                                     options=[("MSS", 1440)]))
    add("v6_udp_zero_checksum", ip6() / UDP(sport=1, dport=2, chksum=0) / Raw(b"zero"),
        "udp_zero_checksum")
    add("v6_hop_by_hop_and_dest_opts",
        ip6() / IPv6ExtHdrHopByHop() / IPv6ExtHdrDestOpt() / UDP(sport=5, dport=6) / Raw(b"ext"))
    add("v6_routing_header_segments_left_0",
        ip6() / IPv6ExtHdrRouting(addresses=["fd00::9"], segleft=0) / UDP(sport=5, dport=6))
    add("v6_routing_header_segments_left_1",
        ip6() / IPv6ExtHdrRouting(addresses=["fd00::9"], segleft=1) / UDP(sport=5, dport=6),
        "routing_header")
    udp = bytes(ip6() / UDP(sport=7000, dport=7001) / Raw((pl * 8)[:2000]))[40:]
    for name, off, m in (("first", 0, 1), ("middle", 1000, 1), ("last", 1600, 0)):
        end = {0: 1000, 1000: 1600, 1600: len(udp)}[off]
        add(f"v6_udp_fragment_{name}",
            ip6() / IPv6ExtHdrFragment(nh=17, offset=off // 8, m=m, id=0x1234ABCD)
            / Raw(udp[off:end]))
    inner = bytes(IPv6(src=d, dst=s, hlim=3, tc=0x20) / UDP(sport=3333, dport=53)
                  / Raw(pl[:30]))
    add("v6_port_unreachable", ip6() / ICMPv6DestUnreach(code=4) / Raw(inner))
    for code in (0, 1, 2, 3):
        add(f"v6_unreachable_code_{code}", ip6() / ICMPv6DestUnreach(code=code) / Raw(inner))
    add("v6_unreachable_code_5_untranslatable", ip6() / ICMPv6DestUnreach(code=5) / Raw(inner),
        "icmp_untranslatable")
    big = bytes(IPv6(src=d, dst=s) / UDP(sport=1, dport=2) / Raw((pl * 6)[:1452]))
    other_net = bytes(IPv6(src=sub6("fd63:6e73:0:1::", 7, A), dst=sub6("fd63:6e73:0:2::", 7, B))
                      / UDP(sport=1, dport=2))
    add("v6_error_inner_of_another_network", ip6() / ICMPv6DestUnreach(code=4) / Raw(other_net),
        "inner_network_mismatch")
    inner_frag = bytes(IPv6(src=d, dst=s) / IPv6ExtHdrFragment(nh=17, offset=185, m=1,
                                                               id=0xABCDEF12) / Raw(pl[:16]))
    add("v6_error_inner_fragment", ip6() / ICMPv6DestUnreach(code=4) / Raw(inner_frag))
    inner_hbh = bytes(IPv6(src=d, dst=s) / IPv6ExtHdrHopByHop() / UDP(sport=3, dport=4)
                      / Raw(b"hbh"))
    add("v6_error_inner_hop_by_hop", ip6() / ICMPv6DestUnreach(code=4) / Raw(inner_hbh))
    add("v6_atomic_fragment", ip6() / IPv6ExtHdrFragment(nh=17, offset=0, m=0, id=0x55667788)
        / UDP(sport=5, dport=6) / Raw(b"atomic"))
    add("v6_payload_length_past_the_end", ip6(plen=100) / UDP(sport=5, dport=6) / Raw(b"short"),
        "truncated")
    add("v6_packet_too_big_1500", ip6() / ICMPv6PacketTooBig(mtu=1500) / Raw(big[:1232]))
    add("v6_packet_too_big_1280", ip6() / ICMPv6PacketTooBig(mtu=1280) / Raw(big[:600]))
    add("v6_time_exceeded", ip6() / ICMPv6TimeExceeded(code=0) / Raw(inner))
    for ptr in (0, 1, 4, 6, 7, 8, 24, 39):
        add(f"v6_param_problem_pointer_{ptr}", ip6() / ICMPv6ParamProblem(code=0, ptr=ptr)
            / Raw(inner))
    add("v6_param_problem_unrecognized_next_header",
        ip6() / ICMPv6ParamProblem(code=1, ptr=6) / Raw(inner))
    add("v6_param_problem_pointer_2_untranslatable",
        ip6() / ICMPv6ParamProblem(code=0, ptr=2) / Raw(inner), "icmp_untranslatable")
    add("v6_neighbor_solicitation", IPv6(src="fe80::1", dst="ff02::1:ff00:2", hlim=255)
        / ICMPv6ND_NS(tgt="fe80::2"), "icmp_untranslatable")
    add("v6_mld_query", IPv6(src="fe80::1", dst="ff02::1", hlim=1) / ICMPv6MLQuery(),
        "icmp_untranslatable")
    cases.append(("ipv4_in_ethernet", eth(ipv4(b"abcdefgh", 17)), None, "not_ipv6", "not_ipv6"))
    return cases


def write(outdir, stem, cases, extra):
    frames, raws, meta = [], [], []
    everything = [(n, f, l3, e, d) for n, f, l3, e, d in cases] + [
        (n, f, None, e, e) for n, f, e in extra]
    for i, (name, frame, l3, expect, dec) in enumerate(everything):
        ts = BASE + i
        p = Raw(frame)
        p.time = ts
        frames.append(p)
        if l3 is not None:
            r = Raw(l3)
            r.time = ts
            raws.append(r)
        meta.append(dict(ts=ts * 1_000_000, name=name, expect=expect, expect_decrement=dec,
                         in_raw=l3 is not None))
    wrpcap(os.path.join(outdir, f"{stem}-eth.pcap"), frames, linktype=1)
    if stem == "v4":
        wrpcap(os.path.join(outdir, f"{stem}-raw.pcap"), raws, linktype=228)
    with open(os.path.join(outdir, f"{stem}-cases.json"), "w") as f:
        json.dump(meta, f, indent=1)
    return len(frames)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    outdir = sys.argv[1]
    os.makedirs(outdir, exist_ok=True)
    n4 = write(outdir, "v4", v4_cases(), link_cases())
    n6 = write(outdir, "v6", v6_cases(), [])
    print(f"wrote {n4} IPv4 cases and {n6} IPv6 cases to {outdir}")


if __name__ == "__main__":
    main()
