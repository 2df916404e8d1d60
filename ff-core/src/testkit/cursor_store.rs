//! The suite for [`CursorStore`] implementations: positions round-trip
//! byte for byte under names compared exactly, the last writer wins, and
//! what was stored survives dropping the store and opening another on the
//! same backing.

use std::future::Future;

use crate::backend::CursorStore;
use crate::cursor::codec::{encode_positioned, POSTGRES_BYTE, VALKEY_BYTE};
use crate::cursor::{StreamCursor, MAX_CURSOR_TEXT};
use crate::error::EngineError;
use crate::event::Family;

/// `store.load(name)`, panicking with the scenario on error.
async fn load(store: &dyn CursorStore, name: &str, scenario: &str) -> Option<StreamCursor> {
    store
        .load(name)
        .await
        .unwrap_or_else(|e| panic!("cursor store, {scenario}: load({name:?}) failed: {e}"))
}

/// `store.store(name, cursor)`, panicking with the scenario on error.
async fn save(store: &dyn CursorStore, name: &str, cursor: &StreamCursor, scenario: &str) {
    store.store(name, cursor).await.unwrap_or_else(|e| {
        panic!("cursor store, {scenario}: store({name:?}, {cursor:?}) failed: {e}")
    })
}

/// Load of an unknown name is `None`; store then load returns the same
/// bytes (tail, beginning and positioned cursors alike); the last write
/// wins; names are independent; bad names are rejected with `Validation`.
pub async fn cursor_store_round_trips(store: &dyn CursorStore) {
    let name = format!("consumer-{}", uuid::Uuid::new_v4().simple());
    let other = format!("{name}-other");
    let never = load(store, &name, "a name never stored").await;
    assert!(
        never.is_none(),
        "cursor store: load of a name never stored returned {never:?}, expected None"
    );
    let cursors = [
        encode_positioned(VALKEY_BYTE, Family::Completion, 1_700_000_000_000, 5),
        StreamCursor::beginning(),
        StreamCursor::empty(),
        encode_positioned(POSTGRES_BYTE, Family::LeaseHistory, 9, u64::MAX),
    ];
    for c in &cursors {
        save(store, &name, c, "round trip").await;
        let back = load(store, &name, "round trip").await;
        assert_eq!(
            back.as_ref(),
            Some(c),
            "cursor store: stored {c:?} under {name:?} and loaded {back:?}"
        );
    }
    save(store, &other, &cursors[0], "a second name").await;
    let first = load(store, &name, "names are independent").await;
    assert_eq!(
        first.as_ref(),
        Some(&cursors[3]),
        "cursor store: storing under {other:?} changed {name:?} to {first:?}"
    );
    let second = load(store, &other, "names are independent").await;
    assert_eq!(
        second.as_ref(),
        Some(&cursors[0]),
        "cursor store: {other:?} loaded {second:?}"
    );
    for bad in ["", "a\nb", &"x".repeat(201)] {
        let result = store.store(bad, &cursors[0]).await;
        assert!(
            matches!(result, Err(EngineError::Validation { .. })),
            "cursor store: consumer name {:?} must be rejected with Validation, got {result:?}",
            bad.chars().take(20).collect::<String>()
        );
    }
}

/// Concurrent writers: the stored value is one of the written values
/// (last writer wins, no torn writes).
pub async fn cursor_store_last_writer_wins(store: &dyn CursorStore) {
    let name = format!("race-{}", uuid::Uuid::new_v4().simple());
    let written: Vec<StreamCursor> = (0..20)
        .map(|i| encode_positioned(VALKEY_BYTE, Family::SignalDelivery, i, i))
        .collect();
    let results = futures::future::join_all(written.iter().map(|c| store.store(&name, c))).await;
    for (i, r) in results.into_iter().enumerate() {
        r.unwrap_or_else(|e| panic!("cursor store: concurrent store {i} of 20 failed: {e}"));
    }
    let got = load(store, &name, "after 20 concurrent stores")
        .await
        .unwrap_or_else(|| panic!("cursor store: nothing stored after 20 concurrent stores"));
    assert!(
        written.contains(&got),
        "cursor store: after 20 concurrent stores the stored cursor {got:?} is none of them (a torn write)"
    );
    save(store, &name, &written[3], "a later single store").await;
    let last = load(store, &name, "a later single store").await;
    assert_eq!(
        last,
        Some(written[3].clone()),
        "cursor store: the last write must win"
    );
}

/// A cursor of `len` bytes in the third-party format `0x80`, holding every
/// byte value (NUL and bytes above `0x7f` included).
fn opaque_cursor(family: Family, len: usize, salt: u8) -> StreamCursor {
    let mut bytes = vec![0x80, family.cursor_byte()];
    bytes.extend((0..len.saturating_sub(2)).map(|i| (i as u8).wrapping_mul(31) ^ salt));
    StreamCursor::new(bytes)
}

/// Names are compared byte for byte: names that differ only in case,
/// Unicode normalisation or a trailing space are different consumers. A
/// cursor's bytes come back as stored — NUL, bytes above `0x7f`, and as
/// long as the longest cursor text ff accepts (a partitioned Valkey
/// cursor over many partitions comes close).
pub async fn cursor_store_keeps_names_and_cursors_exactly(store: &dyn CursorStore) {
    let base = format!("exact-{}", uuid::Uuid::new_v4().simple());
    let suffixes = [
        "a",
        "A",
        "a ",
        "caf\u{e9}",
        "cafe\u{301}",
        "CAF\u{c9}",
        "\u{fb01}",
        "fi",
        "a_%",
        "ab",
    ];
    let longest = MAX_CURSOR_TEXT / 4 * 3;
    let written: Vec<(String, StreamCursor)> = suffixes
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let len = if i == 0 { longest } else { 18 + i };
            (
                format!("{base}-{s}"),
                opaque_cursor(Family::Completion, len, i as u8),
            )
        })
        .collect();
    for (name, cursor) in &written {
        save(
            store,
            name,
            cursor,
            "names differing only in case or normalisation",
        )
        .await;
    }
    for (name, cursor) in &written {
        let got = load(store, name, "names differing only in case or normalisation").await;
        assert!(
            got.as_ref() == Some(cursor),
            "cursor store: {name:?} must load the {}-byte cursor stored under exactly that name \
             (names that differ in case, Unicode normalisation or spaces are other consumers; \
             cursor bytes are opaque), got {}",
            cursor.as_bytes().len(),
            describe_loaded(got.as_ref(), cursor)
        );
    }
}

/// How a loaded cursor differs from the `stored` one, for messages.
fn describe_loaded(got: Option<&StreamCursor>, stored: &StreamCursor) -> String {
    match got {
        None => "nothing".to_owned(),
        Some(c) if c.as_bytes().len() == stored.as_bytes().len() => {
            format!("other {} bytes", c.as_bytes().len())
        }
        Some(c) => format!("a {}-byte cursor", c.as_bytes().len()),
    }
}

/// What was stored survives the store: positions written through `store`
/// — each name's last write, tail and beginning alike, after a burst of
/// writes — load through the store `reopen` opens on the same backing
/// after dropping `store` (and with it every client, pool, buffer and
/// background writer it held); and the new store writes too.
pub async fn cursor_store_survives_a_reopen<S, R, Fut>(store: S, reopen: R)
where
    S: CursorStore,
    R: FnOnce(S) -> Fut,
    Fut: Future<Output = S>,
{
    let base = format!("reopen-{}", uuid::Uuid::new_v4().simple());
    let burst = format!("{base}-burst");
    let expected: Vec<(String, StreamCursor)> = vec![
        (
            format!("{base}-positioned"),
            encode_positioned(VALKEY_BYTE, Family::Completion, 1_700_000_000_000, 7),
        ),
        (format!("{base}-tail"), StreamCursor::empty()),
        (format!("{base}-beginning"), StreamCursor::beginning()),
        (
            burst.clone(),
            encode_positioned(POSTGRES_BYTE, Family::InstanceTags, 3, 99),
        ),
    ];
    for i in 0..25 {
        let c = encode_positioned(POSTGRES_BYTE, Family::InstanceTags, 3, i);
        save(&store, &burst, &c, "a burst of writes before a reopen").await;
    }
    for (name, cursor) in &expected {
        save(&store, name, cursor, "before a reopen").await;
    }
    let store = reopen(store).await;
    for (name, cursor) in &expected {
        let got = load(&store, name, "after a reopen").await;
        assert_eq!(
            got.as_ref(),
            Some(cursor),
            "cursor store: {name:?} loaded {got:?} through a store reopened on the same backing, \
             but {cursor:?} was the last position stored before the first store was dropped: \
             a store must not acknowledge a write it can still lose"
        );
    }
    let never = load(&store, &format!("{base}-never"), "after a reopen").await;
    assert!(
        never.is_none(),
        "cursor store: after a reopen, a name never stored loaded {never:?}"
    );
    let later = encode_positioned(VALKEY_BYTE, Family::LeaseHistory, 42, 1);
    save(&store, &burst, &later, "through the reopened store").await;
    let got = load(&store, &burst, "through the reopened store").await;
    assert_eq!(
        got,
        Some(later),
        "cursor store: the reopened store must store and load"
    );
}
