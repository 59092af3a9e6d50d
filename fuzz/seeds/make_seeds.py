#!/usr/bin/python3
"""Writes the fuzzers' seed inputs (one file per packet) with scapy.

Run from fuzz/: /usr/bin/python3 seeds/make_seeds.py. The translate_encode target takes
one leading byte (headroom) before the IPv4 packet.
"""
import os
from scapy.all import IP, IPv6, UDP, TCP, ICMP, ICMPv6EchoRequest, ICMPv6DestUnreach, \
    ICMPv6PacketTooBig, IPv6ExtHdrFragment, IPv6ExtHdrHopByHop, IPOption_RR, raw, \
    Ether, Dot1Q, ARP, BOOTP, DHCP

def sub(loc, ip):
    a, b, c, d = (int(x) for x in ip.split("."))
    return f"{loc}:0:abcd:{a * 256 + b:x}:{c * 256 + d:x}"

A, B = "10.0.0.2", "10.0.1.3"
SA, SB = sub("fd63:6e73:0:1", A), sub("fd63:6e73:0:2", B)

v4 = {
    "udp": IP(src=A, dst=B) / UDP(sport=5353, dport=53) / b"query",
    "udp_zero": IP(src=A, dst=B) / UDP(sport=1, dport=2, chksum=0) / b"abc",
    "tcp_syn": IP(src=A, dst=B, tos=0xb8) / TCP(sport=40000, dport=80, flags="S",
                                                 options=[("MSS", 1460), ("SAckOK", b""), ("WScale", 7)]),
    "echo": IP(src=A, dst=B) / ICMP(type=8, id=1, seq=1) / b"ping",
    "port_unreach": IP(src=B, dst=A) / ICMP(type=3, code=3) / IP(src=A, dst=B) / UDP(sport=1, dport=2) / b"x",
    "frag_needed": IP(src=B, dst=A) / ICMP(type=3, code=4, nexthopmtu=1400) / IP(src=A, dst=B, flags="DF") / TCP(),
    "param_problem": IP(src=B, dst=A) / ICMP(type=12, code=0, ptr=9) / IP(src=A, dst=B) / TCP(),
    "first_frag": IP(src=A, dst=B, id=7, flags="MF") / UDP(sport=1, dport=2, len=100) / (b"f" * 40),
    "last_frag": IP(src=A, dst=B, id=7, frag=6) / (b"g" * 52),
    "options": IP(src=A, dst=B, options=[IPOption_RR(routers=["192.0.2.1"])]) / UDP() / b"o",
}
v6 = {
    "udp6": IPv6(src=SA, dst=SB) / UDP(sport=5353, dport=53) / b"query",
    "tcp6": IPv6(src=SA, dst=SB, tc=0xb8, fl=12345) / TCP(sport=40000, dport=80, flags="PA") / b"GET /",
    "echo6": IPv6(src=SA, dst=SB) / ICMPv6EchoRequest(id=1, seq=1, data=b"ping"),
    "unreach6": IPv6(src=SB, dst=SA) / ICMPv6DestUnreach(code=4) / IPv6(src=SA, dst=SB) / UDP() / b"x",
    "ptb6": IPv6(src=SB, dst=SA) / ICMPv6PacketTooBig(mtu=1420) / IPv6(src=SA, dst=SB) / TCP(),
    "frag6": IPv6(src=SA, dst=SB) / IPv6ExtHdrFragment(id=0xbeef, m=1, offset=0) / UDP(len=100) / (b"f" * 40),
    "hbh6": IPv6(src=SA, dst=SB) / IPv6ExtHdrHopByHop() / UDP() / b"h",
}

mac = "02:00:0a:00:00:02"
l4 = {
    "ethernet": [Ether(src=mac) / IP(src=A, dst=B) / UDP(), Ether(src=mac) / Dot1Q(vlan=7) / ARP()],
    "arp": [ARP(op=1, hwsrc=mac, psrc=A, pdst="10.0.0.1"), ARP(op=2, hwsrc=mac, psrc=A, pdst=B)],
    "icmpv4": [ICMP(type=8, id=1, seq=2) / b"ping", ICMP(type=3, code=4, nexthopmtu=1400) / IP(src=A, dst=B) / TCP()],
    "icmpv6": [ICMPv6EchoRequest(data=b"ping"), ICMPv6PacketTooBig(mtu=1280) / IPv6() / UDP()],
    "udp": [UDP(sport=68, dport=67) / (b"x" * 9)],
    "tcp": [TCP(sport=1, dport=2, flags="S", options=[("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("WScale", 7)])],
    "dhcpv4": [BOOTP(chaddr=bytes.fromhex("02000a000002"), xid=7) / DHCP(options=[("message-type", "discover"),
               ("param_req_list", [1, 3, 6, 26, 51]), "end"]),
               BOOTP(op=2, yiaddr=A, chaddr=bytes.fromhex("02000a000002"), xid=7) / DHCP(options=[
               ("message-type", "ack"), ("server_id", "10.0.0.1"), ("lease_time", 3600),
               ("subnet_mask", "255.255.255.0"), ("router", "10.0.0.1"), ("interface-mtu", 1480), "end"])],
    "virtio": [bytes([1, 1, 66, 0, 0xa8, 5, 34, 0, 16, 0])],
}
for d in list(l4) + ["encode", "decode", "ipv4", "ipv6"]:
    os.makedirs(os.path.join("seeds", d), exist_ok=True)
for name, p in v4.items():
    b = raw(p)
    open(f"seeds/encode/{name}", "wb").write(bytes([48]) + b)
    open(f"seeds/ipv4/{name}", "wb").write(b)
for name, p in v6.items():
    b = raw(p)
    open(f"seeds/decode/{name}", "wb").write(b)
    open(f"seeds/ipv6/{name}", "wb").write(b)
for d, pkts in l4.items():
    for i, p in enumerate(pkts):
        open(f"seeds/{d}/{i}", "wb").write(p if isinstance(p, bytes) else raw(p))
print(f"{len(v4)} IPv4, {len(v6)} IPv6 and {sum(map(len, l4.values()))} other seeds written")
