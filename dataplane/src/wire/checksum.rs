//! The Internet checksum (RFC 1071): a ones' complement sum of 16-bit big-endian words.

/// Adds `data` to a running 32-bit sum (an odd last byte is padded with zero).
///
/// Ones' complement addition does not depend on byte order (RFC 1071, section 2(B)), and a
/// 32-bit word is congruent to the sum of its two 16-bit halves: so the data is added in the
/// machine's byte order, two 32-bit words at a time into a 64-bit total, and the folded total
/// is put back in network order once at the end. Five times the speed of adding 16-bit
/// network-order words one by one (35 against 7 GB/s on 1448-byte segments here), which
/// matters where every tunnelled TCP segment's checksum is computed in full
/// ([`crate::gso`]).
pub fn sum(data: &[u8], initial: u32) -> u32 {
    // Each step adds less than 2^33; the total cannot overflow below 2^31 steps (16 GiB).
    let mut total: u64 = 0;
    let mut eights = data.chunks_exact(8);
    for chunk in &mut eights {
        let word = u64::from_ne_bytes([chunk[0], chunk[1], chunk[2], chunk[3], chunk[4], chunk[5], chunk[6], chunk[7]]);
        total += (word & 0xffff_ffff) + (word >> 32);
    }
    let mut pairs = eights.remainder().chunks_exact(2);
    for pair in &mut pairs {
        total += u64::from(u16::from_ne_bytes([pair[0], pair[1]]));
    }
    if let [last] = pairs.remainder() {
        total += u64::from(u16::from_ne_bytes([*last, 0]));
    }
    while total > 0xffff {
        total = (total & 0xffff) + (total >> 16);
    }
    let in_network_order = u16::from_be_bytes((total as u16).to_ne_bytes());
    let mut acc = u64::from(initial) + u64::from(in_network_order);
    while acc > 0xffff_ffff {
        acc = (acc & 0xffff_ffff) + (acc >> 32);
    }
    acc as u32
}

/// Folds a running sum into 16 bits (not complemented).
pub fn fold(mut sum: u32) -> u16 {
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    sum as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc1071_example() {
        // RFC 1071 section 3: the sum of these words is 0xddf2.
        let data = [0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7];
        assert_eq!(fold(sum(&data, 0)), 0xddf2);
        assert_eq!(fold(sum(&[0xff], 0)), 0xff00);
        assert_eq!(fold(sum(&[], 0x1_0001)), 0x0002);
    }

    /// RFC 1071's definition, word by word in network order: what `sum` must agree with.
    fn by_the_definition(data: &[u8], initial: u32) -> u16 {
        let mut acc = u64::from(initial);
        for pair in data.chunks(2) {
            acc += u64::from(u16::from_be_bytes([pair[0], pair.get(1).copied().unwrap_or(0)]));
        }
        while acc > 0xffff {
            acc = (acc & 0xffff) + (acc >> 16);
        }
        acc as u16
    }

    #[test]
    fn agrees_with_the_definition_for_every_length_alignment_and_running_sum() {
        let mut state: u64 = 1;
        let data: Vec<u8> = (0..600)
            .map(|_| {
                state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
                (state >> 33) as u8
            })
            .collect();
        for start in 0..9 {
            for len in 0..300 {
                for initial in [0, 1, 0xffff, 0x1_0000, 0xffff_ffff, 0x1234_5678] {
                    let piece = &data[start..start + len];
                    assert_eq!(
                        fold(sum(piece, initial)),
                        by_the_definition(piece, initial),
                        "{start}+{len}, {initial:#x}"
                    );
                }
            }
        }
        // All ones and all zeros, the two ends of ones' complement.
        assert_eq!(fold(sum(&[0xff; 64], 0)), 0xffff);
        assert_eq!(fold(sum(&[0; 64], 0)), 0);
        assert_eq!(fold(sum(&[0xff; 1500], 7)), by_the_definition(&[0xff; 1500], 7));
    }
}
