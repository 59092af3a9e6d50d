#!/usr/bin/python3
"""Checks that decode(encode(p)) == p modulo the fields RFC 7915 rewrites.

usage: check_roundtrip.py CASES.json ORIG.pcap ENCODED.pcap BACK.pcap SUMMARY.txt

ORIG.pcap is gen_cases.py's IPv4 input, ENCODED.pcap the output of `canopy translate
encode` (default options), BACK.pcap the output of `canopy translate decode ENCODED.pcap`
and SUMMARY.txt that command's stderr. Every encoded packet must decode, and come back
equal to its original except for:

- identification and DF of unfragmented packets (regenerated; DF is set above 1260 bytes),
- the header checksum (recomputed; it must be right),
- IPv4 options (removed; IHL and total length shrink accordingly),
- a UDP checksum that was zero (the encoder computed one; it must be right),
- ICMP errors: the checksum (recomputed, must be right), the type/code/pointer as
  mapped there and back (e.g. network unreachable comes back as host unreachable), an
  MTU of 0 which comes back as the RFC 1191 plateau, and the quoted packet, which is
  normalized the same way and may be cut to fit 576 bytes.
"""

import os
import struct
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import (PROTO_ICMP, PROTO_UDP, PTR_V4_TO_V6, PTR_V6_TO_V4, V4,  # noqa: E402
                    V4_TO_V6, V6_TO_V4, Report, check_summary, checksum_ok, describe,
                    l3_of, load_cases, plateau_below, pseudo4, read_pcap)

ICMPV4_ERROR_MAX = 576


class Mismatch(Exception):
    pass


def header(v4, total, ident, flags, csum):
    return struct.pack("!BBHHHBBH4s4s", 0x45, v4.tos, total, ident, flags, v4.ttl, v4.proto,
                       csum, v4.src, v4.dst)


def norm_out(b, inner=False):
    """The output packet with the fields that may change zeroed, after checking them."""
    v = V4(b)
    if v.ihl != 20:
        raise Mismatch(f"{'inner ' if inner else ''}IHL {v.ihl // 4}, want 5 (no options)")
    if not checksum_ok(b[:20]):
        raise Mismatch(f"{'inner ' if inner else ''}IPv4 header checksum wrong")
    if not inner and v.total != len(b):
        raise Mismatch(f"total length {v.total} != packet length {len(b)}")
    flags = (0x2000 if v.mf else 0) | (v.offset // 8)
    ident = v.ident if v.is_fragment else 0
    if v.is_fragment and v.df:
        raise Mismatch("DF set on a fragment")
    total = 0 if v.proto == PROTO_ICMP and not inner else v.total
    payload = b[20:v.total] if not inner else b[20:]
    if v.proto == PROTO_ICMP and not v.is_fragment and payload and payload[0] in (3, 11, 12):
        if not inner and not checksum_ok(payload):
            raise Mismatch("ICMP checksum wrong")
        if not inner and len(b) > ICMPV4_ERROR_MAX:
            raise Mismatch(f"ICMP error of {len(b)} bytes, more than {ICMPV4_ERROR_MAX}")
        payload = payload[:2] + b"\0\0" + payload[4:8] + norm_out(payload[8:], inner=True)
    return header(v, total, ident, flags, 0) + payload


def norm_orig(b, out_udp_csum, inner=False):
    """The original packet as the round trip must give it back, with the same fields zeroed
    as norm_out."""
    v = V4(b)
    optlen = v.ihl - 20
    flags = (0x2000 if v.mf else 0) | (v.offset // 8)
    ident = v.ident if v.is_fragment else 0
    total = 0 if v.proto == PROTO_ICMP and not inner else v.total - optlen
    payload = b[v.ihl:v.total] if not inner else b[v.ihl:]
    if v.proto == PROTO_UDP and not v.is_fragment and not inner and payload[6:8] == b"\0\0":
        payload = payload[:6] + out_udp_csum + payload[8:]
    if v.proto == PROTO_ICMP and not v.is_fragment and payload and payload[0] in (3, 11, 12):
        t, c = payload[0], payload[1]
        t2, c2 = V6_TO_V4[V4_TO_V6[(t, c)]]
        rest = payload[4:8]
        if (t, c) == (3, 4) and rest[2:4] == b"\0\0":
            inner_total = struct.unpack("!H", payload[10:12])[0]
            rest = struct.pack("!HH", 0, plateau_below(inner_total))
        elif t == 12:
            rest = bytes([PTR_V6_TO_V4[PTR_V4_TO_V6[rest[0]]], 0, 0, 0])
        elif (t, c) == (3, 2):
            rest = b"\0\0\0\0"
        payload = bytes([t2, c2]) + b"\0\0" + rest + norm_orig(payload[8:], None, inner=True)
    return header(v, total, ident, flags, 0) + payload


def compare(r, name, orig, out):
    v_out = V4(out)
    udp_csum = None
    if v_out.proto == PROTO_UDP and not v_out.is_fragment:
        udp = out[20:v_out.total]
        udp_csum = udp[6:8]
        if not checksum_ok(udp, pseudo4(v_out.src, v_out.dst, len(udp), PROTO_UDP)):
            r.fail(name, "UDP checksum wrong", out)
    try:
        got = norm_out(out)
    except Mismatch as e:
        r.fail(name, str(e), out)
        return
    want = norm_orig(orig, udp_csum)
    if V4(orig).proto == PROTO_ICMP and len(got) < len(want):
        # An ICMP error may be cut to 576 bytes, never shorter than that.
        if len(out) < ICMPV4_ERROR_MAX:
            r.fail(name, f"ICMP error cut to {len(out)} bytes although it would fit", out)
        want = want[:len(got)]
    if got != want:
        i = next((i for i in range(min(len(got), len(want))) if got[i] != want[i]),
                 min(len(got), len(want)))
        r.fail(name, f"differs from the original at byte {i} of the normalized packet "
                     f"(got {got[i:i + 8].hex()}, want {want[i:i + 8].hex()}; "
                     f"{len(got)} vs {len(want)} bytes)\n      original: {describe(orig)}", out)


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    cases_path, orig_path, enc_path, back_path, summary = sys.argv[1:]
    r = Report(f"decode(encode(p)) == p for {os.path.basename(orig_path)}")
    cases = load_cases(cases_path)
    orig = {ts: l3_of(lt, f) for ts, lt, f in read_pcap(orig_path)}
    encoded = [ts for ts, _, _ in read_pcap(enc_path)]
    seen = set()
    for ts, lt, raw in read_pcap(back_path):
        name = cases.get(ts, {}).get("name", f"unknown timestamp {ts}")
        r.checked += 1
        if lt != 101:
            r.fail(name, f"output link type {lt}, want 101 (raw IP)")
        if ts not in encoded or ts in seen:
            r.fail(name, "output packet matches no encoded packet (or twice)", raw)
            continue
        seen.add(ts)
        compare(r, name, orig[ts], raw)
    for ts in encoded:
        if ts not in seen:
            r.fail(cases[ts]["name"], "encoded packet did not decode")
    check_summary(r, summary, ["ok"] * len(encoded))
    r.finish()


if __name__ == "__main__":
    main()
