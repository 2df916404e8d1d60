//! Guarantee 8 and "Evolution" (`docs/design.md`) over the schema version: a stored record whose
//! version field `v` this build cannot read — a higher number, `0`, a word
//! — yields exactly one `Corrupt` with its cursor, and the stream goes on
//! with the next record (no retry of the same record, no end).

use crate::backend::DeliveryItem;
use crate::cursor::StreamCursor;
use crate::error::EngineError;
use crate::event::record::{Field, SCHEMA_VERSION};
use crate::event::{EventMeta, Family, NewEvent};
use crate::filter::SubscriptionFilter;
use crate::testkit::harness::{hook, Capability, EventOrder};
use crate::testkit::support::*;
use crate::testkit::Harness;

/// The unreadable versions the suite stores: the next version, `0` and a
/// word.
pub fn unreadable_versions() -> Vec<String> {
    vec![(SCHEMA_VERSION + 1).to_string(), "0".into(), "one".into()]
}

/// The fields of `draft` as a producer writes them, with `v` set to
/// `version` and its metadata.
fn with_version(draft: &NewEvent, meta: &EventMeta, version: &str) -> Vec<(Field, String)> {
    let mut fields: Vec<(Field, String)> = draft
        .fields()
        .into_iter()
        .filter_map(|(f, v)| v.map(|v| (f, v)))
        .filter(|(f, _)| *f != Field::SchemaVersion)
        .collect();
    fields.push((Field::SchemaVersion, version.to_owned()));
    if let Some(ns) = &meta.namespace {
        fields.push((Field::Namespace, ns.clone()));
    }
    fields.push((
        Field::Tags,
        serde_json::to_string(&meta.tags).expect("tags as JSON"),
    ));
    fields
}

/// One item of the expected stream: an event, or the `Corrupt` of a
/// record of an unreadable version (with the cursor `inject_raw` gave).
enum Expected {
    Event(NewEvent, EventMeta),
    Corrupt(String, StreamCursor),
}

/// "Evolution" (`docs/design.md`): each record of an unreadable schema version — the next version,
/// `0`, a word — between well-formed events yields one `Corrupt` (with
/// and without a filter that the record's metadata matches), and the
/// events around it arrive; resuming from the `Corrupt` cursor yields
/// exactly what followed. A store whose typed columns cannot hold a value
/// (a word in an integer column) answers `Validation` from `inject_raw`,
/// and that case is skipped.
pub async fn records_of_an_unreadable_schema_version_are_corrupt<H: Harness>(h: &H) {
    let run = run_label("schema-version");
    for family in Family::ALL.iter().copied() {
        let expected = store_between_events(h, family, &run).await;
        for (filtered, filter) in [
            (false, SubscriptionFilter::default()),
            (true, SubscriptionFilter::new().with_tag("run", run.clone())),
        ] {
            let what = format!(
                "{family}: a{} subscription over records of schema versions {:?}",
                if filtered {
                    " filtered"
                } else {
                    "n unfiltered"
                },
                unreadable_versions()
            );
            let corrupt = expect_items(h, family, &filter, &expected, &what).await;
            if !filtered {
                resume_after_each_corrupt(h, family, &expected, &corrupt).await;
            }
        }
    }
}

/// Publish an event, store a record of each unreadable version after it
/// (those the store can hold), and publish a last event; return the items
/// a subscription from the beginning must yield.
async fn store_between_events<H: Harness>(h: &H, family: Family, run: &str) -> Vec<Expected> {
    let publisher = h.publisher();
    let versions = unreadable_versions();
    let drafts = drafts_of_one_partition(family, 2 * versions.len() + 1, run);
    let mut expected = Vec::new();
    for (i, version) in versions.iter().enumerate() {
        publish_batch(&*publisher, &drafts[2 * i..=2 * i]).await;
        let (event, meta) = &drafts[2 * i];
        expected.push(Expected::Event(event.clone(), meta.clone()));
        let (draft, meta) = &drafts[2 * i + 1];
        match h
            .inject_raw(family, &with_version(draft, meta, version))
            .await
        {
            Err(EngineError::Validation { .. }) => {}
            result => {
                let cursor = hook(Capability::RawRecords, "store a raw record", result);
                expected.push(Expected::Corrupt(version.clone(), cursor));
            }
        }
    }
    let last = drafts.len() - 1;
    publish_batch(&*publisher, &drafts[last..]).await;
    expected.push(Expected::Event(
        drafts[last].0.clone(),
        drafts[last].1.clone(),
    ));
    expected
}

/// Subscribe from the beginning with `filter` and expect exactly the
/// `expected` items, then `CaughtUp`; return the `Corrupt` items' cursors.
async fn expect_items<H: Harness>(
    h: &H,
    family: Family,
    filter: &SubscriptionFilter,
    expected: &[Expected],
    what: &str,
) -> Vec<StreamCursor> {
    let mut sub = subscribe(h, family, StreamCursor::beginning(), filter).await;
    let mut corrupt = Vec::new();
    for (i, item) in expected.iter().enumerate() {
        let got = loop {
            match next_item(&mut sub, ITEM_DEADLINE, &format!("{what}: item {i}")).await {
                DeliveryItem::Checkpoint { .. } => {}
                other => break other,
            }
        };
        match (item, got) {
            (Expected::Event(draft, meta), DeliveryItem::Event { event, meta: m }) => {
                assert_delivered(
                    &[(event, m)],
                    &[(draft.clone(), meta.clone())],
                    &format!("{what}: item {i}"),
                );
            }
            (Expected::Corrupt(version, stored), DeliveryItem::Corrupt { cursor, detail }) => {
                if h.event_order() == EventOrder::Total {
                    assert_eq!(
                        &cursor, stored,
                        "{what}: the Corrupt item of the record of version {version:?} must \
                         carry that record's cursor"
                    );
                }
                assert!(
                    !detail.is_empty(),
                    "{what}: Corrupt must say what was wrong"
                );
                corrupt.push(cursor);
            }
            (Expected::Event(_, meta), got) => panic!(
                "{what}: item {i} should be the event #{}, got {got:?}",
                meta.tags.get("n").map_or("?", |s| s)
            ),
            (Expected::Corrupt(version, _), got) => panic!(
                "{what}: item {i} should be one Corrupt for the record of schema version \
                 {version:?}, got {got:?}"
            ),
        }
    }
    match next_item(&mut sub, ITEM_DEADLINE, &format!("{what}: CaughtUp")).await {
        DeliveryItem::CaughtUp { .. } => {}
        other => panic!(
            "{what}: after the backlog (each unreadable record once) expected CaughtUp, got \
             {other:?}"
        ),
    }
    corrupt
}

/// Resuming from each `Corrupt` cursor yields exactly the events that
/// followed its record.
async fn resume_after_each_corrupt<H: Harness>(
    h: &H,
    family: Family,
    expected: &[Expected],
    corrupt: &[StreamCursor],
) {
    let at = expected
        .iter()
        .enumerate()
        .filter(|(_, e)| matches!(e, Expected::Corrupt(..)));
    for ((i, item), cursor) in at.zip(corrupt) {
        let Expected::Corrupt(version, _) = item else {
            unreachable!("filtered to Corrupt items")
        };
        let rest: Vec<(NewEvent, EventMeta)> = expected[i + 1..]
            .iter()
            .filter_map(|e| match e {
                Expected::Event(d, m) => Some((d.clone(), m.clone())),
                Expected::Corrupt(..) => None,
            })
            .collect();
        let mut resumed = subscribe(h, family, cursor.clone(), &Default::default()).await;
        let mut events = Vec::new();
        loop {
            match next_item(&mut resumed, ITEM_DEADLINE, "events after a Corrupt").await {
                DeliveryItem::Event { event, meta } => events.push((event, meta)),
                DeliveryItem::CaughtUp { .. } => break,
                _ => {}
            }
        }
        assert_delivered_in(
            h.event_order(),
            &events,
            &rest,
            &format!(
                "{family}: resumed from the Corrupt cursor of the record of version {version:?}"
            ),
        );
    }
}
