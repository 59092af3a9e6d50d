#!/usr/bin/python3
"""Checks the output of `canopy translate encode` field by field (RFC 7915 section 4).

usage: check_encode.py CASES.json IN.pcap OUT.pcap SUMMARY.txt NET SRC_LOCATOR DST_LOCATOR
                       [--decrement-ttl]

CASES.json and IN.pcap come from gen_cases.py; OUT.pcap and SUMMARY.txt (the command's
stderr) from `canopy translate encode`. Output packets are matched with their input by
timestamp. Prints one line per failure and exits 1 if there is any.
"""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,  # noqa: E402
                    PTR_V4_TO_V6, V4, V4_TO_V6, V6, Report, check_summary, checksum_ok,
                    l3_of, load_cases, parse_locator, plateau_below, pseudo6, read_pcap,
                    substrate_addr)
from scapy.layers.inet6 import IPerror6, IPv6  # noqa: E402

CSUM_AT = {PROTO_TCP: 16, PROTO_UDP: 6}


def v6_proto(p):
    return PROTO_ICMPV6 if p == PROTO_ICMP else p


def same_but_checksum(r, name, what, got, want, proto, pkt, first=True):
    """Compares L4 bytes, ignoring the TCP/UDP checksum field (first fragment only)."""
    at = CSUM_AT.get(proto) if first else None
    if at is not None and len(want) >= at + 2 and len(got) >= at + 2:
        got = got[:at] + got[at + 2:]
        want = want[:at] + want[at + 2:]
    if got != want:
        i = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                 min(len(got), len(want)))
        r.fail(name, f"{what} differs from the input (first at byte {i}; "
                     f"{len(got)} vs {len(want)} bytes)", pkt)


class Checker:
    def __init__(self, net, src_loc, dst_loc, dec):
        self.net, self.src_loc, self.dst_loc, self.dec = net, src_loc, dst_loc, dec

    def addr(self, loc, v4):
        return substrate_addr(loc, self.net, v4)

    def check(self, r, name, v4, raw):
        v6 = V6(raw)
        e = lambda what, got, want: r.expect(name, what, got, want, raw)  # noqa: E731
        e("version", v6.version, 6)
        e("payload length", v6.plen, len(raw) - 40)
        e("traffic class (= TOS)", v6.tc, v4.tos)
        e("hop limit", v6.hlim, v4.ttl - (1 if self.dec else 0))
        e("source address", v6.src.hex(), self.addr(self.src_loc, v4.src).hex())
        e("destination address", v6.dst.hex(), self.addr(self.dst_loc, v4.dst).hex())
        e("upper-layer protocol", v6.proto, v6_proto(v4.proto))
        if v4.is_fragment:
            if v6.frag is None:
                r.fail(name, "fragment without a fragment header", raw)
                return v6
            e("first next header", v6.nh, 44)
            e("fragment offset", v6.frag["offset"], v4.offset)
            e("fragment M flag", v6.frag["m"], v4.mf)
            e("fragment id", v6.frag["id"], v4.ident)
            e("fragment header reserved bits", v6.frag["res"], 0)
        elif v6.exts:
            r.fail(name, f"extension headers {v6.exts} on an unfragmented packet", raw)
        if v4.proto == PROTO_ICMP:
            self.check_icmp(r, name, v4, v6, raw)
            return v6
        e("payload length (upper layer)", len(v6.payload), len(v4.payload))
        same_but_checksum(r, name, "payload", v6.payload, v4.payload, v4.proto, raw,
                          first=v4.offset == 0)
        if v4.proto in CSUM_AT and not v4.is_fragment:
            if not checksum_ok(v6.payload, pseudo6(v6.src, v6.dst, len(v6.payload), v6.proto)):
                r.fail(name, "TCP/UDP checksum wrong for the IPv6 pseudo-header", raw)
            if v4.proto == PROTO_UDP and v6.payload[6:8] == b"\0\0":
                r.fail(name, "UDP checksum zero in IPv6", raw)
        return v6

    def check_icmp(self, r, name, v4, v6, raw):
        e = lambda what, got, want: r.expect(name, what, got, want, raw)  # noqa: E731
        m4, m6 = v4.payload, v6.payload
        if len(m6) < 8:
            r.fail(name, "ICMPv6 message shorter than 8 bytes", raw)
            return
        if not checksum_ok(m6, pseudo6(v6.src, v6.dst, len(m6), PROTO_ICMPV6)):
            r.fail(name, "ICMPv6 checksum wrong", raw)
        t, c = m4[0], m4[1]
        want = V4_TO_V6.get((t, c))
        if want is None:
            r.fail(name, f"ICMP {t}/{c} must be dropped, was translated", raw)
            return
        e("ICMPv6 type/code", (m6[0], m6[1]), want)
        rest4 = struct.unpack("!I", m4[4:8])[0]
        rest6 = struct.unpack("!I", m6[4:8])[0]
        if t in (0, 8):
            e("echo id/seq/data", m6[4:].hex(), m4[4:].hex())
            return
        # An error: the 4 bytes after the checksum, then the packet in error.
        if (t, c) == (3, 4):
            mtu4 = rest4 & 0xFFFF
            inner_total = struct.unpack("!H", m4[10:12])[0]
            if mtu4 == 0:
                p = plateau_below(inner_total)
                if rest6 == p:
                    r.note(name, f"MTU 0 became plateau {p} without the +20 adjustment")
                else:
                    e("PTB MTU (plateau + 20)", rest6, p + 20)
            else:
                e("PTB MTU (+20)", rest6, mtu4 + 20)
        elif t == 12:
            e("parameter problem pointer", rest6, PTR_V4_TO_V6[rest4 >> 24])
        elif (t, c) == (3, 2):
            e("parameter problem pointer (next header)", rest6, 6)
        else:
            e("unused field", rest6, 0)
        if len(raw) > 1280:
            r.fail(name, f"ICMPv6 error of {len(raw)} bytes, more than 1280", raw)
        in4, in6 = V4(m4[8:]), V6(m6[8:])
        ei = lambda what, got, want: e("inner " + what, got, want)  # noqa: E731
        ei("version", in6.version, 6)
        ei("traffic class", in6.tc, in4.tos)
        ei("hop limit (not decremented)", in6.hlim, in4.ttl)
        # The inner packet went the other way: its source is behind the outer destination.
        ei("source address", in6.src.hex(), self.addr(self.dst_loc, in4.src).hex())
        ei("destination address", in6.dst.hex(), self.addr(self.src_loc, in4.dst).hex())
        ei("payload length", in6.plen,
           in4.total - in4.ihl + (8 if in4.is_fragment else 0))
        ei("protocol", in6.proto, v6_proto(in4.proto))
        if in4.is_fragment:
            if in6.frag is None:
                r.fail(name, "inner fragment without a fragment header", raw)
            else:
                ei("fragment (id, offset, M)",
                   (in6.frag["id"], in6.frag["offset"], in6.frag["m"]),
                   (in4.ident, in4.offset, in4.mf))
        elif in6.exts:
            r.fail(name, f"inner extension headers {in6.exts} for an unfragmented packet", raw)
        # All of the inner packet that fits in 1280 bytes is kept.
        avail = m4[8 + in4.ihl:8 + in4.total]
        room = 1280 - 40 - 8 - in6.hdr_len
        ei("payload bytes carried", len(in6.payload), min(len(avail), room))
        body6, body4 = in6.payload, avail[:len(in6.payload)]
        if in4.proto == PROTO_ICMP and in4.offset == 0:
            ei("ICMP type/code", (body6[0], body6[1]), V4_TO_V6.get((body4[0], body4[1])))
            body6, body4 = body6[4:], body4[4:]
        same_but_checksum(r, name, "inner payload", body6, body4, in4.proto, raw,
                          first=in4.offset == 0)
        complete = (len(avail) == in4.total - in4.ihl and len(in6.payload) == len(avail)
                    and not in4.is_fragment)
        if in4.proto in CSUM_AT and complete:
            if not checksum_ok(in6.payload, pseudo6(in6.src, in6.dst, len(in6.payload),
                                                    in6.proto)):
                r.note(name, "inner TCP/UDP checksum not fixed for the inner IPv6 "
                             "pseudo-header (RFC 7915 does not require it)")
        try:
            if not IPv6(raw).haslayer(IPerror6):
                r.fail(name, "scapy does not see an inner IPv6 packet in the error", raw)
        except Exception as ex:
            r.fail(name, f"scapy cannot dissect the packet: {ex}", raw)


def check_fragments(r, frags):
    """Reassembles TCP/UDP fragment trains and checks the checksum of the whole datagram."""
    for key, parts in frags.items():
        parts.sort(key=lambda p: p.frag["offset"])
        data, complete = b"", not parts[-1].frag["m"]
        for p in parts:
            if p.frag["offset"] != len(data):
                complete = False
                break
            data += p.payload
        if not complete:
            continue
        p0 = parts[0]
        r.checked += 0
        if not checksum_ok(data, pseudo6(p0.src, p0.dst, len(data), p0.proto)):
            r.fail(f"fragments id {key[2]:#x}", "reassembled datagram: checksum wrong for the "
                   "IPv6 pseudo-header", p0.raw)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    dec = "--decrement-ttl" in sys.argv[1:]
    if len(args) != 7:
        sys.exit(__doc__)
    cases_path, in_path, out_path, summary, net, src_loc, dst_loc = args
    net = int(net, 0)
    src_loc, dst_loc = parse_locator(src_loc), parse_locator(dst_loc)
    r = Report(f"encode{' --decrement-ttl' if dec else ''} {os.path.basename(in_path)}")
    cases = load_cases(cases_path)
    inputs = {ts: (lt, f) for ts, lt, f in read_pcap(in_path)}
    expected = {ts: cases[ts]["expect_decrement" if dec else "expect"] for ts in inputs}
    outputs = read_pcap(out_path)
    checker = Checker(net, src_loc, dst_loc, dec)
    seen, frags, flows = set(), {}, {}
    last = -1
    for ts, lt, raw in outputs:
        name = cases.get(ts, {}).get("name", f"unknown timestamp {ts}")
        r.checked += 1
        if lt != 101:
            r.fail(name, f"output link type {lt}, want 101 (raw IP)")
        if ts not in inputs:
            r.fail(name, "output packet with a timestamp no input has", raw)
            continue
        if ts in seen:
            r.fail(name, "translated twice", raw)
        if ts < last:
            r.fail(name, "output out of input order", raw)
        seen.add(ts)
        last = ts
        if expected[ts] != "ok":
            r.fail(name, f"expected a drop ({expected[ts]}), but it was translated", raw)
            continue
        v4 = V4(l3_of(*inputs[ts]))
        v6 = checker.check(r, name, v4, raw)
        if v4.is_fragment and v4.proto in CSUM_AT:
            frags.setdefault((v4.src, v4.dst, v4.ident), []).append(v6)
        if not v4.is_fragment and v4.proto in CSUM_AT:
            key = (v6.src, v6.dst, v6.proto, v6.payload[:4])
            flows.setdefault(key, set()).add(v6.flow)
    for ts, outcome in expected.items():
        if outcome == "ok" and ts not in seen:
            r.fail(cases[ts]["name"], "expected translated, missing from the output")
    check_fragments(r, frags)
    for key, labels in flows.items():
        if len(labels) != 1:
            r.fail("flow label", f"one 5-tuple got several flow labels: {sorted(labels)}")
    all_labels = set().union(*flows.values()) if flows else set()
    if all_labels == {0}:
        r.fail("flow label", "every flow label is zero (RFC 6438: hash of the 5-tuple)")
    elif len(flows) > 1 and len(all_labels) == 1:
        r.fail("flow label", "different 5-tuples all got the same flow label")
    check_summary(r, summary, [expected[ts] for ts in sorted(expected)])
    r.finish()


if __name__ == "__main__":
    main()
