"""Shared helpers of the `canopy translate` conformance scripts.

The checks parse headers by hand (struct) so that every field the RFC 7915 translation
touches is compared explicitly, and use scapy to build the inputs and to describe a
failing packet. Nothing here trusts the translator: checksums are recomputed from the
bytes, addresses from the locators given on the command line.
"""

import ipaddress
import json
import logging
import struct
import sys

logging.getLogger("scapy.runtime").setLevel(logging.ERROR)

from scapy.all import RawPcapReader  # noqa: F401  (re-exported)
from scapy.layers.inet import IP
from scapy.layers.inet6 import IPv6

# RFC 1191 section 7 plateau table.
PLATEAUS = [65535, 32000, 17914, 8166, 4352, 2002, 1492, 1006, 508, 296, 68]

PROTO_ICMP = 1
PROTO_TCP = 6
PROTO_UDP = 17
PROTO_FRAG = 44
PROTO_ICMPV6 = 58


class Report:
    """Collects failures per case; prints a readable report and sets the exit code."""

    def __init__(self, title):
        self.title = title
        self.failures = []
        self.notes = []
        self.checked = 0

    def fail(self, case, msg, pkt=None):
        line = f"FAIL [{case}] {msg}"
        if pkt is not None:
            line += "\n      packet: " + describe(pkt)
        self.failures.append(line)

    def note(self, case, msg):
        self.notes.append(f"note [{case}] {msg}")

    def expect(self, case, what, got, want, pkt=None):
        if got != want:
            self.fail(case, f"{what}: got {fmt(got)}, want {fmt(want)}", pkt)
            return False
        return True

    def finish(self):
        print(f"== {self.title}: {self.checked} packets checked, "
              f"{len(self.failures)} failures")
        for n in self.notes:
            print(n)
        for f in self.failures:
            print(f)
        sys.exit(1 if self.failures else 0)


def fmt(v):
    if isinstance(v, int) and v > 9:
        return f"{v} ({v:#x})"
    return repr(v)


def describe(raw):
    """A one-line scapy summary of a raw IP packet, and its hex."""
    try:
        p = IPv6(raw) if raw and raw[0] >> 4 == 6 else IP(raw)
        s = p.summary()
    except Exception as e:  # a report must not crash on a malformed packet
        s = f"(scapy cannot dissect: {e})"
    h = raw[:96].hex()
    return f"{s} | {len(raw)} bytes: {h}{'...' if len(raw) > 96 else ''}"


def inet_sum(data, start=0):
    if len(data) % 2:
        data = data + b"\0"
    s = start + sum(struct.unpack(f"!{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def checksum(data):
    return (~inet_sum(data)) & 0xFFFF


def checksum_ok(data, pseudo=b""):
    """True when data (with its checksum field in place) sums to all ones."""
    return inet_sum(pseudo + data) == 0xFFFF


def pseudo6(src, dst, length, nh):
    return src + dst + struct.pack("!IxxxB", length, nh)


def pseudo4(src, dst, length, proto):
    return src + dst + struct.pack("!xBH", proto, length)


def substrate_addr(locator, net, ipv4):
    """locator: first 72 bits of an IPv6 address (str); net: int; ipv4: 4 bytes."""
    loc = ipaddress.IPv6Address(locator).packed[:9]
    return loc + net.to_bytes(3, "big") + ipv4


def parse_locator(s):
    return s[:-3] if s.endswith("/72") else s


def read_pcap(path):
    """[(timestamp in µs, linktype, bytes)] of a pcap file."""
    out = []
    r = RawPcapReader(path)
    lt = r.linktype
    for data, meta in r:
        if hasattr(meta, "usec"):
            ts = meta.sec * 1_000_000 + meta.usec
        else:  # pcapng metadata
            ts = ((meta.tshigh << 32) | meta.tslow) * 1_000_000 // meta.tsresol
        out.append((ts, lt, bytes(data)))
    r.close()
    return out


def l3_of(linktype, frame):
    """The IP packet in a frame of linktype 1 (Ethernet, one 802.1Q tag), 101, 228, 229."""
    if linktype in (101, 228, 229):
        return frame
    if linktype == 1:
        if len(frame) < 18:
            return None
        et = struct.unpack("!H", frame[12:14])[0]
        off = 14
        if et == 0x8100:
            et = struct.unpack("!H", frame[16:18])[0]
            off = 18
        if et not in (0x0800, 0x86DD):
            return None
        pkt = frame[off:]
        if et == 0x0800:
            return pkt[:struct.unpack("!H", pkt[2:4])[0]]
        return pkt[:40 + struct.unpack("!H", pkt[4:6])[0]]
    raise ValueError(f"link type {linktype} not handled by the checker")


def load_cases(path):
    with open(path) as f:
        return {c["ts"]: c for c in json.load(f)}


# ---- IPv4 ----------------------------------------------------------------------------

class V4:
    def __init__(self, b):
        self.raw = b
        vihl, self.tos, self.total, self.ident, ff, self.ttl, self.proto, self.csum = \
            struct.unpack("!BBHHHBBH", b[:12])
        self.version = vihl >> 4
        self.ihl = (vihl & 15) * 4
        self.df = bool(ff & 0x4000)
        self.mf = bool(ff & 0x2000)
        self.offset = (ff & 0x1FFF) * 8
        self.src = b[12:16]
        self.dst = b[16:20]
        self.options = b[20:self.ihl]
        self.payload = b[self.ihl:self.total] if self.total <= len(b) else b[self.ihl:]

    @property
    def is_fragment(self):
        return self.mf or self.offset != 0


# ---- IPv6 ----------------------------------------------------------------------------

class V6:
    """An IPv6 header, its extension headers (hop-by-hop, routing, fragment, destination
    options), and the upper-layer payload after them."""

    def __init__(self, b):
        self.raw = b
        w, self.plen, self.nh, self.hlim = struct.unpack("!IHBB", b[:8])
        self.version = w >> 28
        self.tc = (w >> 20) & 0xFF
        self.flow = w & 0xFFFFF
        self.src = b[8:24]
        self.dst = b[24:40]
        self.frag = None
        self.exts = []  # (header type, length, segments left for routing headers)
        self.proto = self.nh
        off = 40
        while self.proto in (0, 43, 60, PROTO_FRAG) and off + 8 <= len(b):
            if self.proto == PROTO_FRAG:
                nh, _res, fo, ident = struct.unpack("!BBHI", b[off:off + 8])
                self.frag = dict(nh=nh, offset=fo & 0xFFF8, m=bool(fo & 1), id=ident,
                                 res=(fo >> 1) & 3)
                n = 8
            else:
                nh, n = b[off], (b[off + 1] + 1) * 8
            self.exts.append((self.proto, n, b[off + 3] if self.proto == 43 else None))
            self.proto = nh
            off += n
        self.hdr_len = off
        self.payload = b[off:40 + self.plen]


# ---- ICMP type mapping (RFC 7915 sections 4.2 and 5.2) --------------------------------

# ICMPv4 (type, code) -> ICMPv6 (type, code), or None: dropped. Codes not listed: dropped.
V4_TO_V6 = {
    (8, 0): (128, 0), (0, 0): (129, 0),
    (3, 0): (1, 0), (3, 1): (1, 0), (3, 2): (4, 1), (3, 3): (1, 4), (3, 4): (2, 0),
    (3, 5): (1, 0), (3, 6): (1, 0), (3, 7): (1, 0), (3, 8): (1, 0), (3, 9): (1, 1),
    (3, 10): (1, 1), (3, 11): (1, 0), (3, 12): (1, 0), (3, 13): (1, 1), (3, 15): (1, 1),
    (11, 0): (3, 0), (11, 1): (3, 1),
    (12, 0): (4, 0), (12, 2): (4, 0),
}

# Parameter problem pointer, IPv4 header -> IPv6 header (RFC 7915 figure 3).
PTR_V4_TO_V6 = {0: 0, 1: 1, 2: 4, 3: 4, 8: 7, 9: 6,
                12: 8, 13: 8, 14: 8, 15: 8, 16: 24, 17: 24, 18: 24, 19: 24}

V6_TO_V4 = {
    (128, 0): (8, 0), (129, 0): (0, 0),
    (1, 0): (3, 1), (1, 1): (3, 10), (1, 2): (3, 1), (1, 3): (3, 1), (1, 4): (3, 3),
    (2, 0): (3, 4),
    (3, 0): (11, 0), (3, 1): (11, 1),
    (4, 0): (12, 0), (4, 1): (3, 2),
}

# Parameter problem pointer, IPv6 header -> IPv4 header (RFC 7915 figure 6).
PTR_V6_TO_V4 = {0: 0, 1: 1, 4: 2, 5: 2, 6: 9, 7: 8}
PTR_V6_TO_V4.update({i: 12 for i in range(8, 24)})
PTR_V6_TO_V4.update({i: 16 for i in range(24, 40)})


def plateau_below(total_len):
    for p in PLATEAUS:
        if p < total_len:
            return p
    return 68


def parse_summary(path):
    """The `canopy translate` stderr summary: (read, translated, dropped, {reason: n})."""
    read = translated = dropped = None
    reasons = {}
    with open(path) as f:
        for line in f:
            if line.startswith("packets read: "):
                read = int(line.split(": ")[1])
            elif line.startswith("translated: "):
                translated = int(line.split(": ")[1])
            elif line.startswith("dropped: "):
                dropped = int(line.split(": ")[1])
            elif line.startswith("  ") and ": " in line:
                k, v = line.strip().split(": ")
                reasons[k] = int(v)
    return read, translated, dropped, reasons


def check_summary(report, summary_path, expected):
    """expected: list of outcomes ('ok' or a drop reason), one per input packet."""
    read, translated, dropped, reasons = parse_summary(summary_path)
    want_reasons = {}
    for e in expected:
        if e != "ok":
            want_reasons[e] = want_reasons.get(e, 0) + 1
    n_ok = sum(1 for e in expected if e == "ok")
    report.expect("summary", "packets read", read, len(expected))
    report.expect("summary", "translated", translated, n_ok)
    report.expect("summary", "dropped", dropped, len(expected) - n_ok)
    report.expect("summary", "drops by reason", reasons, want_reasons)
