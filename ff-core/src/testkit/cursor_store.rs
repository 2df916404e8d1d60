//! The suite for [`CursorStore`] implementations.

use crate::backend::CursorStore;
use crate::engine_error::EngineError;
use crate::stream_events::Family;
use crate::stream_subscribe::{encode_postgres, encode_valkey, StreamCursor};

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
        encode_valkey(Family::Completion, 1_700_000_000_000, 5),
        StreamCursor::beginning(),
        StreamCursor::empty(),
        encode_postgres(Family::LeaseHistory, 9, u64::MAX),
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
        .map(|i| encode_valkey(Family::SignalDelivery, i, i))
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
