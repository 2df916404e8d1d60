//! Hash slots: which of Valkey Cluster's 16,384 slots a key belongs to.
//!
//! Invariant: [`key_slot`] agrees with the server's `CLUSTER KEYSLOT` for
//! every key — CRC16 (XMODEM) of the key's hash tag (the bytes between the
//! first `{` and the first `}` after it, when that is not empty), else of
//! the whole key, modulo 16,384.

/// How many hash slots a Valkey Cluster has.
pub const SLOTS: u16 = 16_384;

/// The hash slot of `key`, as Valkey Cluster computes it (`CLUSTER
/// KEYSLOT`): keys with the same `{hash tag}` share a slot, so they can be
/// used together in one `MULTI`/`EXEC` or script.
///
/// ```
/// use ff_backend_valkey::key_slot;
///
/// assert_eq!(key_slot(b"foo"), 12_182);
/// assert_eq!(key_slot(b"ff:{fp:3}:completion"), key_slot(b"{fp:3}:6f1c0a4e"));
/// ```
pub fn key_slot(key: &[u8]) -> u16 {
    crc16(hash_part(key)) % SLOTS
}

/// The part of `key` that is hashed: its hash tag, or all of it.
fn hash_part(key: &[u8]) -> &[u8] {
    let Some(open) = key.iter().position(|b| *b == b'{') else {
        return key;
    };
    let rest = &key[open + 1..];
    match rest.iter().position(|b| *b == b'}') {
        Some(close) if close > 0 => &rest[..close],
        _ => key,
    }
}

/// Whether `text` contains a hash tag (a non-empty `{…}`), which would
/// decide the slot of every key it is part of.
pub(crate) fn has_hash_tag(text: &str) -> bool {
    hash_part(text.as_bytes()).len() != text.len()
}

/// CRC16/XMODEM (polynomial 0x1021, initial value 0), bit by bit: keys are
/// short, and this runs once per key name, not per event.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0;
    for byte in data {
        crc ^= u16::from(*byte) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    crc
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc16_matches_the_xmodem_check_value() {
        assert_eq!(crc16(b"123456789"), 0x31C3);
        assert_eq!(crc16(b""), 0);
    }

    #[test]
    fn slots_match_values_the_server_reports() {
        // From `CLUSTER KEYSLOT` on Valkey 9 (and the cluster specification).
        assert_eq!(key_slot(b"foo"), 12_182);
        assert_eq!(key_slot(b"123456789"), 12_739);
        assert_eq!(key_slot(b"somekey"), 11_058);
    }

    #[test]
    fn the_first_non_empty_hash_tag_decides() {
        let slot = |k: &str| key_slot(k.as_bytes());
        assert_eq!(slot("{user1000}.following"), slot("{user1000}.followers"));
        assert_eq!(slot("{user1000}.following"), slot("user1000"));
        assert_eq!(slot("foo{bar}{zap}"), slot("bar"), "only the first tag");
        assert_eq!(slot("foo{{bar}}zap"), slot("{bar"), "from the first {{");
        assert_eq!(
            slot("foo{}{bar}"),
            crc16(b"foo{}{bar}") % SLOTS,
            "empty tag"
        );
        assert_eq!(slot("foo{bar"), crc16(b"foo{bar") % SLOTS, "unclosed");
        assert_eq!(slot("ff:{fp:3}:completion"), slot("{fp:3}:x"));
    }

    #[test]
    fn hash_tags_are_recognised_only_when_they_decide_the_slot() {
        assert!(has_hash_tag("ff:{app}:"));
        assert!(!has_hash_tag("ff:"));
        assert!(!has_hash_tag("ff:{}:"));
        assert!(!has_hash_tag("ff:{app"));
        assert!(!has_hash_tag("ff:}a{"));
    }
}
