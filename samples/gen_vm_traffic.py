#!/usr/bin/python3
"""Writes samples/vm-traffic.pcap: a few Ethernet frames a tenant VM would send.

VM 10.0.0.3 (network 42, on the host with locator fd63:6e73:0:1::/72) talks to
10.0.0.7 (on the host fd63:6e73:0:2::/72): a ping, a DNS query and its answer's ICMP
error, a TCP handshake with some data, and a UDP datagram large enough to be fragmented.
Regenerate with `/usr/bin/python3 samples/gen_vm_traffic.py` (needs python3-scapy); the
output is deterministic.
"""

import sys

from scapy.all import (DNS, DNSQR, ICMP, IP, TCP, UDP, Ether, Raw, fragment,
                       wrpcap)

VM = "10.0.0.3"
PEER = "10.0.0.7"
VM_MAC = "02:00:00:00:00:03"
ROUTER_MAC = "02:00:00:00:00:01"


def eth(pkt):
    return Ether(src=VM_MAC, dst=ROUTER_MAC) / pkt


def frames():
    out = []
    # ping
    for seq in (1, 2):
        out.append(eth(IP(src=VM, dst=PEER, id=100 + seq, flags="DF")
                       / ICMP(type=8, id=0x1234, seq=seq) / Raw(b"canopy-ping-" * 4)))
    # a DNS query, and the ICMP port unreachable the VM sends back when the answer
    # arrives after its resolver gave up (the error quotes the answer's headers)
    q = IP(src=VM, dst=PEER, id=200) / UDP(sport=40000, dport=53) / DNS(
        id=7, rd=1, qd=DNSQR(qname="example.internal"))
    out.append(eth(q))
    answer = IP(src=PEER, dst=VM, id=201, ttl=63) / UDP(sport=53, dport=40000) / DNS(
        id=7, qr=1, qd=DNSQR(qname="example.internal"))
    out.append(eth(IP(src=VM, dst=PEER, id=202) / ICMP(type=3, code=3)
                   / bytes(answer)[:28]))
    # a TCP handshake, a request and the close, with DSCP AF21 and ECT(0)
    c = dict(src=VM, dst=PEER, tos=0x4a, flags="DF")
    opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (1, 0)), ("WScale", 7)]
    out.append(eth(IP(id=300, **c) / TCP(sport=51000, dport=80, flags="S", seq=1000,
                                         options=opts)))
    out.append(eth(IP(id=301, **c) / TCP(sport=51000, dport=80, flags="A", seq=1001,
                                         ack=5001)))
    out.append(eth(IP(id=302, **c) / TCP(sport=51000, dport=80, flags="PA", seq=1001,
                                         ack=5001) / Raw(b"GET / HTTP/1.1\r\nHost: peer\r\n\r\n")))
    out.append(eth(IP(id=303, **c) / TCP(sport=51000, dport=80, flags="FA", seq=1031,
                                         ack=5001)))
    # a 3000-byte UDP datagram in three fragments (DF clear)
    big = IP(src=VM, dst=PEER, id=400) / UDP(sport=5000, dport=5001) / Raw(bytes(range(256)) * 11 + b"x" * 176)
    for f in fragment(big, fragsize=1480):
        out.append(eth(f))
    for i, f in enumerate(out):
        f.time = 1700000000 + i / 100
    return out


if __name__ == "__main__":
    path = sys.argv[1] if len(sys.argv) > 1 else "samples/vm-traffic.pcap"
    fs = frames()
    wrpcap(path, fs)
    print(f"wrote {len(fs)} frames to {path}")
