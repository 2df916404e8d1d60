//! How the mutant's filters compare text: byte for byte, or — under a
//! mutation — the way a careless comparison would (case folding, Unicode
//! normalisation, SQL `LIKE`, `CHAR` padding).

use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::EventMeta;

use super::Mutation;

/// A composed or compatibility-normalised spelling of the few
/// decomposed and compatibility forms the suite uses (a stand-in for NFKC).
fn normalised(s: &str) -> String {
    s.replace("e\u{301}", "\u{e9}")
        .replace("E\u{301}", "\u{c9}")
        .replace('\u{fb01}', "fi")
}

/// Whether `text` matches the SQL `LIKE` pattern `pattern`.
fn like(pattern: &[char], text: &[char]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some(('%', rest)) => (0..=text.len()).any(|i| like(rest, &text[i..])),
        Some(('_', rest)) => !text.is_empty() && like(rest, &text[1..]),
        Some((c, rest)) => text.first() == Some(c) && like(rest, &text[1..]),
    }
}

/// Whether the filter's namespace and tag admit `meta`, compared as
/// `mutation` compares them (exactly, without one).
pub(crate) fn admits_text(
    mutation: Option<Mutation>,
    filter: &SubscriptionFilter,
    meta: &EventMeta,
) -> bool {
    let namespace_ok = match (&filter.namespace, meta.namespace.as_deref()) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(want), Some(got)) => match mutation {
            Some(Mutation::FilterNormalisesUnicode) => normalised(want) == normalised(got),
            Some(Mutation::FilterMatchesLikePattern) => {
                let (p, t): (Vec<char>, Vec<char>) =
                    (want.chars().collect(), got.chars().collect());
                like(&p, &t)
            }
            _ => want == got,
        },
    };
    let tag_ok = match &filter.tag {
        None => true,
        Some((key, value)) => meta.tags.iter().any(|(k, v)| {
            let key_ok = match mutation {
                Some(Mutation::FilterFoldsCase) => k.to_lowercase() == key.to_lowercase(),
                _ => k == key,
            };
            let value_ok = match mutation {
                Some(Mutation::FilterIgnoresTrailingSpaces) => v.trim_end() == value.trim_end(),
                _ => v == value,
            };
            key_ok && value_ok
        }),
    };
    namespace_ok && tag_ok
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_takes_underscore_and_percent_for_wildcards() {
        let m = |p: &str, t: &str| {
            like(
                &p.chars().collect::<Vec<_>>(),
                &t.chars().collect::<Vec<_>>(),
            )
        };
        assert!(m("a_b%", "axb-c"));
        assert!(m("a_b%", "a_b%"));
        assert!(!m("a_b%", "ab"));
    }
}
