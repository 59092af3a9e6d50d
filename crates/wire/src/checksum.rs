//! The Internet checksum (RFC 1071), full and incremental (RFC 1624).
//!
//! Sums are carried as folded 16-bit ones' complement values (`u16`, not inverted); a
//! checksum *field* holds the inverted sum. [`update`] is RFC 1624 equation 3,
//! `HC' = ~(~HC + ~m + m')`: the older equation 2 (RFC 1141) could give `0xffff` where
//! the correct checksum is `0x0000`.

/// Ones' complement sum of `data`, folded to 16 bits (not inverted). An odd trailing byte
/// is summed as if padded with a zero byte, as every Internet checksum requires.
#[inline]
pub fn sum(data: &[u8]) -> u16 {
    // Ones' complement addition is associative over any word size with end-around carry,
    // so sum big-endian 64-bit words and fold at the end: 4x fewer additions than u16.
    let mut acc: u64 = 0;
    let mut chunks = data.chunks_exact(8);
    for c in &mut chunks {
        let v = u64::from_be_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        let (s, carry) = acc.overflowing_add(v);
        acc = s + carry as u64;
    }
    let rest = chunks.remainder();
    let mut tail: u64 = 0;
    let mut i = 0;
    while i + 2 <= rest.len() {
        tail += u16::from_be_bytes([rest[i], rest[i + 1]]) as u64;
        i += 2;
    }
    if i < rest.len() {
        tail += (rest[i] as u64) << 8;
    }
    let (s, carry) = acc.overflowing_add(tail);
    fold64(s + carry as u64)
}

#[inline(always)]
fn fold64(v: u64) -> u16 {
    let v = (v & 0xffff_ffff) + (v >> 32);
    let v = (v & 0xffff_ffff) + (v >> 32);
    fold32(v as u32)
}

#[inline(always)]
fn fold32(v: u32) -> u16 {
    let v = (v & 0xffff) + (v >> 16);
    let v = (v & 0xffff) + (v >> 16);
    v as u16
}

/// Ones' complement addition of two folded sums.
#[inline(always)]
pub fn add(a: u16, b: u16) -> u16 {
    fold32(a as u32 + b as u32)
}

/// Ones' complement subtraction: `a - b` is `a + ~b`.
#[inline(always)]
pub fn sub(a: u16, b: u16) -> u16 {
    add(a, !b)
}

/// The checksum field value for data whose ones' complement sum is `s`.
#[inline(always)]
pub fn finish(s: u16) -> u16 {
    !s
}

/// The Internet checksum of `data`: the value to store in a checksum field that is zero
/// within `data`. Verifying a header that contains its checksum gives 0.
#[inline]
pub fn checksum(data: &[u8]) -> u16 {
    finish(sum(data))
}

/// Sum of the IPv4 pseudo-header (RFC 793/768): addresses, zero, protocol, length.
#[inline]
pub fn pseudo_v4(src: [u8; 4], dst: [u8; 4], protocol: u8, len: u16) -> u16 {
    let s = u16::from_be_bytes([src[0], src[1]]) as u32
        + u16::from_be_bytes([src[2], src[3]]) as u32
        + u16::from_be_bytes([dst[0], dst[1]]) as u32
        + u16::from_be_bytes([dst[2], dst[3]]) as u32
        + protocol as u32
        + len as u32;
    fold32(s)
}

/// Sum of the IPv6 pseudo-header (RFC 8200 section 8.1): addresses, 32-bit upper-layer
/// length, three zero bytes, next header.
#[inline]
pub fn pseudo_v6(src: &[u8; 16], dst: &[u8; 16], next_header: u8, len: u32) -> u16 {
    add(
        add(addr_sum(src), addr_sum(dst)),
        fold32((len >> 16) + (len & 0xffff) + next_header as u32),
    )
}

/// Ones' complement sum of an address (or any small fixed array of even length).
#[inline(always)]
pub fn addr_sum<const N: usize>(a: &[u8; N]) -> u16 {
    // 32-bit words into a 64-bit sum, folded once: the same ones' complement sum as
    // 16-bit words (RFC 1071, 2), in half the additions.
    let mut s: u64 = 0;
    let mut i = 0;
    while i + 4 <= N {
        s += u32::from_be_bytes([a[i], a[i + 1], a[i + 2], a[i + 3]]) as u64;
        i += 4;
    }
    if i + 2 <= N {
        s += u16::from_be_bytes([a[i], a[i + 1]]) as u64;
    }
    fold64(s)
}

/// RFC 1624 equation 3: the new checksum field after data whose sum was `old` became
/// data whose sum is `new`. `field` is the checksum field as stored (inverted).
#[inline(always)]
pub fn update(field: u16, old: u16, new: u16) -> u16 {
    !add(sub(!field, old), new)
}

/// Updates a stored checksum after one 16-bit word changed from `old` to `new`.
#[inline(always)]
pub fn update_word(field: u16, old: u16, new: u16) -> u16 {
    update(field, old, new)
}

/// Adjusts a *partial* checksum field, as a device with checksum offload leaves it
/// (Linux `CHECKSUM_PARTIAL`, virtio `NEEDS_CSUM`): the field holds the folded,
/// non-inverted sum of the pseudo-header, so it moves with the sums directly.
#[inline(always)]
pub fn update_partial(field: u16, old: u16, new: u16) -> u16 {
    add(sub(field, old), new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The plain RFC 1071 algorithm, 16 bits at a time, as a reference.
    fn reference(data: &[u8]) -> u16 {
        let mut s: u32 = 0;
        for c in data.chunks(2) {
            let w = if c.len() == 2 {
                u16::from_be_bytes([c[0], c[1]])
            } else {
                (c[0] as u16) << 8
            };
            s += w as u32;
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the bytes 00 01 f2 03 f4 f5 f6 f7 sum to 0xddf2.
        assert_eq!(
            sum(&[0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]),
            0xddf2
        );
    }

    #[test]
    fn ipv4_header_verifies() {
        // The IPv4 header of a ping 192.0.2.2 -> 192.0.2.1 as it crosses the wire.
        let hdr = [
            0x45, 0x00, 0x00, 0x54, 0x6e, 0x2b, 0x40, 0x00, 0x40, 0x01, 0x48, 0x7a, 0xc0, 0x00,
            0x02, 0x02, 0xc0, 0x00, 0x02, 0x01,
        ];
        assert_eq!(checksum(&hdr), 0);
        let mut zeroed = hdr;
        zeroed[10] = 0;
        zeroed[11] = 0;
        assert_eq!(checksum(&zeroed), 0x487a);
    }

    #[test]
    fn rfc1624_incremental_avoids_negative_zero() {
        // RFC 1624 section 3 example: HC = 0xdd2f, m = 0x5555 -> m' = 0x3285 gives 0x0000.
        assert_eq!(update_word(0xdd2f, 0x5555, 0x3285), 0x0000);
    }

    proptest! {
        #[test]
        fn sum_matches_reference(data in proptest::collection::vec(any::<u8>(), 0..2000)) {
            prop_assert_eq!(sum(&data), reference(&data));
        }

        #[test]
        fn addr_sum_matches_reference(a in any::<[u8; 16]>(), b in any::<[u8; 6]>()) {
            prop_assert_eq!(addr_sum(&a), reference(&a));
            prop_assert_eq!(addr_sum(&b), reference(&b));
            let v4: [u8; 4] = a[..4].try_into().unwrap();
            prop_assert_eq!(addr_sum(&v4), reference(&v4));
        }

        #[test]
        fn incremental_equals_recompute(
            mut data in proptest::collection::vec(any::<u8>(), 2..200),
            at in any::<prop::sample::Index>(),
            new in any::<u16>(),
        ) {
            let words = data.len() / 2;
            let i = at.index(words) * 2;
            let before = checksum(&data);
            let old = u16::from_be_bytes([data[i], data[i + 1]]);
            data[i..i + 2].copy_from_slice(&new.to_be_bytes());
            let after = checksum(&data);
            let inc = update_word(before, old, new);
            // 0x0000 and 0xffff are the two encodings of one ones' complement value.
            prop_assert!(
                inc == after || (inc == 0 && after == 0xffff) || (inc == 0xffff && after == 0),
                "incremental {:#06x} vs recomputed {:#06x}", inc, after
            );
        }

        #[test]
        fn pseudo_v6_matches_bytes(src in any::<[u8; 16]>(), dst in any::<[u8; 16]>(), nh in any::<u8>(), len in any::<u32>()) {
            let mut b = Vec::new();
            b.extend_from_slice(&src);
            b.extend_from_slice(&dst);
            b.extend_from_slice(&len.to_be_bytes());
            b.extend_from_slice(&[0, 0, 0, nh]);
            prop_assert_eq!(pseudo_v6(&src, &dst, nh, len), reference(&b) );
        }

        #[test]
        fn pseudo_v4_matches_bytes(src in any::<[u8; 4]>(), dst in any::<[u8; 4]>(), p in any::<u8>(), len in any::<u16>()) {
            let mut b = Vec::new();
            b.extend_from_slice(&src);
            b.extend_from_slice(&dst);
            b.extend_from_slice(&[0, p]);
            b.extend_from_slice(&len.to_be_bytes());
            prop_assert_eq!(pseudo_v4(src, dst, p, len), reference(&b));
        }
    }
}
