#!/usr/bin/python3
"""Checks the output of `canopy translate decode` field by field (RFC 7915 section 5).

usage: check_decode.py CASES.json IN.pcap OUT.pcap SUMMARY.txt

CASES.json and IN.pcap (IPv6 substrate packets built by scapy, not by the encoder) come
from gen_cases.py; OUT.pcap and SUMMARY.txt (its stderr) from `canopy translate decode`.
"""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (PROTO_ICMP, PROTO_ICMPV6, PROTO_TCP, PROTO_UDP,  # noqa: E402
                    PTR_V6_TO_V4, V4, V6, V6_TO_V4, Report, check_summary, checksum_ok,
                    l3_of, load_cases, pseudo4, read_pcap)
from scapy.layers.inet import IP, IPerror  # noqa: E402

CSUM_AT = {PROTO_TCP: 16, PROTO_UDP: 6}
ICMPV4_ERROR_MAX = 576


def v4_proto(p):
    return PROTO_ICMP if p == PROTO_ICMPV6 else p


def strip_csum(b, proto):
    at = CSUM_AT.get(proto)
    if at is not None and len(b) >= at + 2:
        return b[:at] + b[at + 2:]
    return b


def check(r, name, v6, raw):
    v4 = V4(raw)
    e = lambda what, got, want: r.expect(name, what, got, want, raw)  # noqa: E731
    e("version", v4.version, 4)
    e("header length (no options)", v4.ihl, 20)
    e("total length", v4.total, len(raw))
    if not checksum_ok(raw[:20]):
        r.fail(name, "IPv4 header checksum wrong", raw)
    e("TOS (= traffic class)", v4.tos, v6.tc)
    e("TTL (= hop limit)", v4.ttl, v6.hlim)
    e("source (low 32 bits)", v4.src.hex(), v6.src[12:].hex())
    e("destination (low 32 bits)", v4.dst.hex(), v6.dst[12:].hex())
    e("protocol", v4.proto, v4_proto(v6.proto))
    if v6.frag is not None:
        e("identification (low 16 bits of the fragment id)", v4.ident, v6.frag["id"] & 0xFFFF)
        e("MF", v4.mf, v6.frag["m"])
        e("fragment offset", v4.offset, v6.frag["offset"])
        e("DF on a fragment", v4.df, False)
    else:
        e("MF / offset", (v4.mf, v4.offset), (False, 0))
        e("DF (set above 1260 bytes, RFC 7915 5.1)", v4.df, v4.total > 1260)
    if v6.proto == PROTO_ICMPV6:
        check_icmp(r, name, v6, v4, raw)
        return v4
    e("payload length", len(v4.payload), len(v6.payload))
    first = v6.frag is None or v6.frag["offset"] == 0
    if (strip_csum(v4.payload, v4.proto) if first else v4.payload) != \
            (strip_csum(v6.payload, v6.proto) if first else v6.payload):
        r.fail(name, "payload differs from the input (beyond the checksum)", raw)
    if v4.proto in CSUM_AT and v6.frag is None:
        if not checksum_ok(v4.payload, pseudo4(v4.src, v4.dst, len(v4.payload), v4.proto)):
            r.fail(name, "TCP/UDP checksum wrong for the IPv4 pseudo-header", raw)
    return v4


def check_icmp(r, name, v6, v4, raw):
    e = lambda what, got, want: r.expect(name, what, got, want, raw)  # noqa: E731
    m6, m4 = v6.payload, v4.payload
    if not checksum_ok(m4):
        r.fail(name, "ICMP checksum wrong", raw)
    want = V6_TO_V4.get((m6[0], m6[1]))
    if want is None:
        r.fail(name, f"ICMPv6 {m6[0]}/{m6[1]} must be dropped, was translated", raw)
        return
    e("ICMP type/code", (m4[0], m4[1]), want)
    if m6[0] >= 128:
        e("echo id/seq/data", m4[4:].hex(), m6[4:].hex())
        return
    rest6 = struct.unpack("!I", m6[4:8])[0]
    rest4 = struct.unpack("!I", m4[4:8])[0]
    if m6[0] == 2:
        e("frag-needed MTU (-20)", rest4, min(rest6 - 20, 0xFFFF))
    elif (m6[0], m6[1]) == (4, 0):
        e("parameter problem pointer", rest4, PTR_V6_TO_V4[rest6] << 24)
    else:
        e("unused field", rest4, 0)
    if len(raw) > ICMPV4_ERROR_MAX:
        r.fail(name, f"ICMP error of {len(raw)} bytes, more than {ICMPV4_ERROR_MAX}", raw)
    in6, in4 = V6(m6[8:]), V4(m4[8:])
    ei = lambda what, got, want: e("inner " + what, got, want)  # noqa: E731
    ei("version", in4.version, 4)
    ei("header length", in4.ihl, 20)
    if not checksum_ok(m4[8:28]):
        r.fail(name, "inner IPv4 header checksum wrong", raw)
    ei("TOS", in4.tos, in6.tc)
    ei("TTL", in4.ttl, in6.hlim)
    ei("source", in4.src.hex(), in6.src[12:].hex())
    ei("destination", in4.dst.hex(), in6.dst[12:].hex())
    ei("protocol", in4.proto, v4_proto(in6.proto))
    ei("total length", in4.total, 20 + in6.plen - (in6.hdr_len - 40))
    if in6.frag is not None:
        ei("fragment (id, MF, offset)", (in4.ident, in4.mf, in4.offset),
           (in6.frag["id"] & 0xFFFF, in6.frag["m"], in6.frag["offset"]))
    else:
        ei("MF / offset", (in4.mf, in4.offset), (False, 0))
    carried = m4[28:]
    room = ICMPV4_ERROR_MAX - 20 - 8 - 20
    ei("payload bytes carried", len(carried), min(len(in6.payload), room))
    first = in6.frag is None or in6.frag["offset"] == 0
    strip = strip_csum if first else (lambda b, _p: b)
    if strip(carried, in4.proto) != strip(in6.payload[:len(carried)], in6.proto):
        r.fail(name, "inner payload differs from the input (beyond the checksum)", raw)
    try:
        if not IP(raw).haslayer(IPerror):
            r.fail(name, "scapy does not see an inner IPv4 packet in the error", raw)
    except Exception as ex:
        r.fail(name, f"scapy cannot dissect the packet: {ex}", raw)


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    cases_path, in_path, out_path, summary = sys.argv[1:]
    r = Report(f"decode {os.path.basename(in_path)}")
    cases = load_cases(cases_path)
    inputs = {ts: (lt, f) for ts, lt, f in read_pcap(in_path)}
    expected = {ts: cases[ts]["expect"] for ts in inputs}
    seen = set()
    frags = {}
    for ts, lt, raw in read_pcap(out_path):
        name = cases.get(ts, {}).get("name", f"unknown timestamp {ts}")
        r.checked += 1
        if lt != 101:
            r.fail(name, f"output link type {lt}, want 101 (raw IP)")
        if ts not in inputs or ts in seen:
            r.fail(name, "output packet matches no input (or twice)", raw)
            continue
        seen.add(ts)
        if expected[ts] != "ok":
            r.fail(name, f"expected a drop ({expected[ts]}), but it was translated", raw)
            continue
        v6 = V6(l3_of(*inputs[ts]))
        v4 = check(r, name, v6, raw)
        if v4.is_fragment:
            frags.setdefault(v4.ident, []).append(v4)
    for ts, outcome in expected.items():
        if outcome == "ok" and ts not in seen:
            r.fail(cases[ts]["name"], "expected translated, missing from the output")
    for ident, parts in frags.items():
        parts.sort(key=lambda p: p.offset)
        data = b"".join(p.payload for p in parts)
        p0 = parts[0]
        if parts[-1].mf or any(p.offset != sum(len(q.payload) for q in parts[:i])
                               for i, p in enumerate(parts)):
            continue
        if not checksum_ok(data, pseudo4(p0.src, p0.dst, len(data), p0.proto)):
            r.fail(f"fragments id {ident:#x}", "reassembled datagram: checksum wrong for the "
                   "IPv4 pseudo-header", p0.raw)
    check_summary(r, summary, [expected[ts] for ts in sorted(expected)])
    r.finish()


if __name__ == "__main__":
    main()
