//! Stream entry ids (`ms-seq`): parsing, formatting and the id just before
//! another.

use ff_core::stream_subscribe::ValkeyPosition;

/// The smallest id, `0-0`: before every entry.
pub(crate) const ZERO: ValkeyPosition = ValkeyPosition { ms: 0, seq: 0 };
/// The largest id.
pub(crate) const MAX: ValkeyPosition = ValkeyPosition {
    ms: u64::MAX,
    seq: u64::MAX,
};

/// Parse `ms-seq` (both decimal u64).
pub(crate) fn parse(text: &[u8]) -> Option<ValkeyPosition> {
    let dash = text.iter().position(|b| *b == b'-')?;
    Some(ValkeyPosition {
        ms: parse_u64(&text[..dash])?,
        seq: parse_u64(&text[dash + 1..])?,
    })
}

fn parse_u64(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() || digits.len() > 20 {
        return None;
    }
    let mut n: u64 = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
    }
    Some(n)
}

/// `ms-seq`.
pub(crate) fn format(id: ValkeyPosition) -> String {
    format!("{}-{}", id.ms, id.seq)
}

/// The id just before `id` (`id` itself for `0-0`), so that reading
/// exactly after it starts with `id`.
pub(crate) fn before(id: ValkeyPosition) -> ValkeyPosition {
    match (id.ms, id.seq) {
        (0, 0) => ZERO,
        (ms, 0) => ValkeyPosition {
            ms: ms - 1,
            seq: u64::MAX,
        },
        (ms, seq) => ValkeyPosition { ms, seq: seq - 1 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(ms: u64, seq: u64) -> ValkeyPosition {
        ValkeyPosition { ms, seq }
    }

    #[test]
    fn ids_round_trip_and_garbage_is_rejected() {
        assert_eq!(parse(b"1700000000000-7"), Some(p(1_700_000_000_000, 7)));
        assert_eq!(
            parse(format(MAX).as_bytes()),
            Some(MAX),
            "u64::MAX parts parse"
        );
        for bad in [
            &b""[..],
            b"12",
            b"-1",
            b"1-",
            b"a-1",
            b"1-1-1",
            b"18446744073709551616-0",
        ] {
            assert_eq!(parse(bad), None, "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn before_steps_back_one_id() {
        assert_eq!(before(p(5, 3)), p(5, 2));
        assert_eq!(before(p(5, 0)), p(4, u64::MAX));
        assert_eq!(before(p(0, 1)), ZERO);
        assert_eq!(before(ZERO), ZERO);
        assert!(before(p(9, 0)) < p(9, 0));
    }
}
