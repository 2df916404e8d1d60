//! Unsigned LEB128 varints, in their one canonical form.
//!
//! Invariant: [`put`] writes the shortest encoding of a value, and [`take`]
//! accepts exactly the shortest encodings of values that fit in a `u64`
//! (no redundant trailing `0x80`/`0x00` groups, no bits beyond 64), so a
//! value has one byte string and a byte string at most one value. Reading
//! never panics, whatever the input.

/// Why a varint could not be read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum VarintError {
    /// The input ended inside the varint.
    Truncated,
    /// A longer encoding than the value needs.
    Overlong,
    /// The value does not fit in 64 bits.
    Overflow,
}

impl VarintError {
    /// A short description for error messages.
    pub(crate) fn describe(self) -> &'static str {
        match self {
            VarintError::Truncated => "ends inside a number",
            VarintError::Overlong => "has a number in a non-canonical (overlong) form",
            VarintError::Overflow => "has a number too large for 64 bits",
        }
    }
}

/// The most bytes a `u64` takes.
pub(crate) const MAX_LEN: usize = 10;

/// Appends the canonical encoding of `value`.
pub(crate) fn put(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8 & 0x7f) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

/// How many bytes [`put`] writes for `value`.
#[cfg(test)]
pub(crate) fn len(value: u64) -> usize {
    let bits = 64 - value.leading_zeros() as usize;
    bits.div_ceil(7).max(1)
}

/// Reads one varint from the front of `input` and advances past it.
pub(crate) fn take(input: &mut &[u8]) -> Result<u64, VarintError> {
    let mut value = 0u64;
    for (i, &byte) in input.iter().enumerate() {
        let group = u64::from(byte & 0x7f);
        // The tenth group holds bit 63 alone, and must end the varint.
        if i == MAX_LEN - 1 && byte > 1 {
            return Err(VarintError::Overflow);
        }
        value |= group << (7 * i);
        if byte & 0x80 == 0 {
            if i > 0 && byte == 0 {
                return Err(VarintError::Overlong);
            }
            *input = &input[i + 1..];
            return Ok(value);
        }
    }
    Err(VarintError::Truncated)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn encoded(v: u64) -> Vec<u8> {
        let mut out = Vec::new();
        put(&mut out, v);
        out
    }

    #[test]
    fn values_round_trip_in_their_predicted_length() {
        let mut values = vec![0, 1, 127, 128, 255, 16_383, 16_384, u64::MAX, u64::MAX - 1];
        values.extend((0..64).map(|b| 1u64 << b));
        values.extend((1..64).map(|b| (1u64 << b) - 1));
        for v in values {
            let bytes = encoded(v);
            assert_eq!(bytes.len(), len(v), "{v}");
            let mut input = bytes.as_slice();
            assert_eq!(take(&mut input), Ok(v));
            assert!(input.is_empty());
        }
        assert_eq!(encoded(u64::MAX).len(), MAX_LEN);
    }

    #[test]
    fn take_leaves_what_follows() {
        let mut bytes = encoded(300);
        bytes.extend_from_slice(&[7, 8]);
        let mut input = bytes.as_slice();
        assert_eq!(take(&mut input), Ok(300));
        assert_eq!(input, &[7, 8]);
    }

    #[test]
    fn malformed_varints_are_refused() {
        assert_eq!(take(&mut &[][..]), Err(VarintError::Truncated));
        assert_eq!(take(&mut &[0x80][..]), Err(VarintError::Truncated));
        assert_eq!(take(&mut &[0x81, 0x00][..]), Err(VarintError::Overlong));
        assert_eq!(
            take(&mut &[0x80, 0x80, 0x00][..]),
            Err(VarintError::Overlong)
        );
        let mut max = encoded(u64::MAX);
        *max.last_mut().unwrap() = 2;
        assert_eq!(take(&mut max.as_slice()), Err(VarintError::Overflow));
        let eleven = [0xff; 11];
        assert_eq!(take(&mut &eleven[..]), Err(VarintError::Overflow));
    }
}
