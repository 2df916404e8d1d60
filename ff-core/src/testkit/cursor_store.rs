//! The suite for [`CursorStore`] implementations.

use crate::backend::CursorStore;
use crate::engine_error::EngineError;
use crate::stream_events::Family;
use crate::stream_subscribe::{encode_postgres, encode_valkey, StreamCursor};

/// Load of an unknown name is `None`; store then load returns the same
/// bytes; the last write wins; names are independent; bad names are
/// rejected with `Validation`.
pub async fn cursor_store_round_trips(store: &dyn CursorStore) {
    let name = format!("consumer-{}", uuid::Uuid::new_v4().simple());
    let other = format!("{name}-other");
    assert_eq!(store.load(&name).await.expect("load"), None);
    let cursors = [
        encode_valkey(Family::Completion, 1_700_000_000_000, 5),
        StreamCursor::beginning(),
        StreamCursor::empty(),
        encode_postgres(Family::LeaseHistory, 9, u64::MAX),
    ];
    for c in &cursors {
        store.store(&name, c).await.expect("store");
        assert_eq!(store.load(&name).await.expect("load").as_ref(), Some(c));
    }
    store.store(&other, &cursors[0]).await.expect("store");
    assert_eq!(
        store.load(&name).await.expect("load").as_ref(),
        Some(&cursors[3])
    );
    assert_eq!(
        store.load(&other).await.expect("load").as_ref(),
        Some(&cursors[0])
    );
    for bad in ["", "a\nb", &"x".repeat(201)] {
        assert!(
            matches!(
                store.store(bad, &cursors[0]).await,
                Err(EngineError::Validation { .. })
            ),
            "consumer name {bad:?} must be rejected"
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
    futures::future::join_all(written.iter().map(|c| store.store(&name, c)))
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .expect("concurrent stores");
    let got = store
        .load(&name)
        .await
        .expect("load")
        .expect("a stored cursor");
    assert!(
        written.contains(&got),
        "stored cursor {got:?} was never written"
    );
    store.store(&name, &written[3]).await.expect("store");
    assert_eq!(
        store.load(&name).await.expect("load"),
        Some(written[3].clone())
    );
}
