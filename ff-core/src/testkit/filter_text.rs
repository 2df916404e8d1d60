//! Semantic 9 over text: a filter's namespace, tag key and tag value match
//! only the same bytes — never a spelling that differs in case, in
//! Unicode normalisation (composed or decomposed, compatibility forms),
//! in trailing or leading spaces, or that a pattern language (SQL `LIKE`,
//! globs, Lua patterns) would take for a wildcard.

use crate::cursor::StreamCursor;
use crate::event::{EventMeta, Family, NewEvent};
use crate::filter::SubscriptionFilter;
use crate::testkit::support::*;
use crate::testkit::Harness;

/// Groups of spellings that a careless comparison would take for one
/// another; no two strings here are equal.
pub const LOOKALIKES: &[&[&str]] = &[
    &["region", "Region", "REGION"],
    &["caf\u{e9}", "cafe\u{301}", "CAF\u{c9}"],
    &["stra\u{df}e", "strasse", "STRASSE"],
    &["\u{fb01}le", "file"],
    &["eu", "eu ", " eu"],
    &["a_b%", "axb-c", "a_b%%"],
    &["x*", "xy", "x."],
];

/// The lookalike strings, flattened.
fn spellings() -> Vec<&'static str> {
    LOOKALIKES.iter().flat_map(|g| g.iter().copied()).collect()
}

/// One draft per spelling and role: the spelling as namespace, as a tag
/// key (value `"x"`) and as the value of tag `"k"`.
fn lookalike_drafts(family: Family, run: &str) -> Vec<(NewEvent, EventMeta)> {
    let spellings = spellings();
    let mut out = drafts(family, 3 * spellings.len(), run);
    for (i, (_, meta)) in out.iter_mut().enumerate() {
        let s = spellings[i % spellings.len()];
        match i / spellings.len() {
            0 => meta.namespace = Some(s.to_owned()),
            1 => {
                meta.tags.insert(s.to_owned(), "x".to_owned());
            }
            _ => {
                meta.tags.insert("k".to_owned(), s.to_owned());
            }
        }
    }
    out
}

/// Guarantee 9: a namespace or tag filter admits exactly the events whose
/// namespace, tag key or tag value equals it byte for byte: spellings
/// that differ only in case, Unicode normalisation or surrounding spaces,
/// or that read as wildcards in a pattern language, do not match each
/// other; and each is stored and delivered exactly as published.
pub async fn filters_tell_apart_text_differing_only_in_case_or_normalisation<H: Harness>(h: &H) {
    let run = run_label("lookalikes");
    let publisher = h.publisher();
    for family in Family::ALL.iter().copied() {
        let published = lookalike_drafts(family, &run);
        publish_batch(&*publisher, &published).await;
        let mut sub = subscribe(h, family, StreamCursor::beginning(), &Default::default()).await;
        let (all, _) = until_caught_up(&mut sub, "events with lookalike metadata").await;
        assert_delivered_in(
            h.event_order(),
            &all,
            &published,
            &format!("{family}: events with lookalike namespaces and tags, delivered as published"),
        );
        for s in spellings() {
            let filters = [
                ("namespace", SubscriptionFilter::new().with_namespace(s)),
                ("tag key", SubscriptionFilter::new().with_tag(s, "x")),
                ("tag value", SubscriptionFilter::new().with_tag("k", s)),
            ];
            for (role, filter) in filters {
                expect_exactly(h, family, &published, &filter, &format!("{role} {s:?}")).await;
            }
        }
    }
}

/// Subscribe from the beginning with `filter` and expect exactly the
/// `published` events it matches byte for byte (one, by construction).
async fn expect_exactly<H: Harness>(
    h: &H,
    family: Family,
    published: &[(NewEvent, EventMeta)],
    filter: &SubscriptionFilter,
    what: &str,
) {
    let expected: Vec<(NewEvent, EventMeta)> = published
        .iter()
        .filter(|(d, m)| filter.matches_parts(d.kind(), d.execution_id(), m))
        .cloned()
        .collect();
    assert_eq!(expected.len(), 1, "the suite's lookalikes must be distinct");
    let mut sub = subscribe(h, family, StreamCursor::beginning(), filter).await;
    let (got, _) = until_caught_up(&mut sub, "events matching a lookalike filter").await;
    assert_delivered_in(
        h.event_order(),
        &got,
        &expected,
        &format!(
            "{family}: a filter on {what} must admit only that exact text (not another case, \
             Unicode normalisation, padding or pattern match)"
        ),
    );
}
