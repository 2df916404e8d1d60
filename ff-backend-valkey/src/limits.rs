//! How much a reply from the server may hold, derived from what was asked.
//!
//! Invariant: a subscription never buffers a reply larger than the limit
//! of the request it answers — in bytes and in parsed elements — so its
//! memory is O(read batch) whatever the server sends; a larger reply is a
//! protocol error (the connection is replaced), never an allocation. ff
//! never writes an entry larger than [`MAX_ENTRY_BYTES`], and reads a
//! larger one written by another client as `Corrupt`.

/// The largest stream entry ff writes or decodes, counting its id and its
/// field names and values: 64 KiB. A publish whose entry would be larger is
/// a `Validation` error; a larger entry written by another client is
/// delivered as `Corrupt`.
pub const MAX_ENTRY_BYTES: usize = 64 * 1024;

/// The most fields (name-value pairs) an entry may have for a reply to
/// stay within its element limit; ff writes at most 13.
pub(crate) const MAX_ENTRY_FIELDS: usize = 128;

/// Elements (strings, integers, arrays) one entry may add to a reply:
/// `[id, [field, value, …]]`.
const ENTRY_ELEMENTS: usize = 3 + 2 * MAX_ENTRY_FIELDS;

/// How much one reply may hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct ReplyLimit {
    /// Bytes on the wire.
    pub(crate) bytes: usize,
    /// Parsed elements.
    pub(crate) elements: usize,
}

/// The limit of replies to the connection handshake, `MULTI` and the
/// `+QUEUED` acknowledgements.
pub(crate) const SMALL_REPLY: ReplyLimit = ReplyLimit {
    bytes: 64 * 1024,
    elements: 1024,
};

/// Entries a reply is always allowed to hold, however few were asked for,
/// so one large foreign entry (which decodes as `Corrupt`) cannot make a
/// small read fail forever.
const MIN_ENTRIES: usize = 256;

/// The limit of a reply holding at most `entries` stream entries plus the
/// two entries `XINFO STREAM` shows (first and last): that is,
/// `max(entries, 256) + 2` entries of [`MAX_ENTRY_BYTES`] and
/// [`MAX_ENTRY_FIELDS`] each, with room for the framing.
pub(crate) fn entries_reply(entries: usize) -> ReplyLimit {
    let entries = entries.max(MIN_ENTRIES).saturating_add(2);
    ReplyLimit {
        bytes: entries
            .saturating_mul(MAX_ENTRY_BYTES)
            .saturating_add(SMALL_REPLY.bytes),
        elements: entries
            .saturating_mul(ENTRY_ELEMENTS)
            .saturating_add(SMALL_REPLY.elements),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_grows_with_what_was_asked_from_a_floor() {
        assert_eq!(entries_reply(1), entries_reply(256));
        assert_eq!(entries_reply(1000).bytes, 1002 * 64 * 1024 + 64 * 1024);
        assert_eq!(entries_reply(1000).elements, 1002 * 259 + 1024);
        assert_eq!(entries_reply(usize::MAX).bytes, usize::MAX, "saturates");
    }
}
