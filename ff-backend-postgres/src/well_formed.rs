//! Which outbox rows the shared decoder accepts, as a SQL predicate.
//!
//! Invariant: [`well_formed`]`(family)` is true for a row exactly when
//! `ff_core`'s `decode_new_event` (with the metadata checks in `decode`)
//! accepts it, and never NULL. Filtered reads admit a row when it matches
//! the filter *or is not well-formed*, so a row that cannot be decoded is
//! reported as `Corrupt` whether or not a filter is set — as on every other
//! backend, where entries are decoded before they are filtered.
//!
//! The checks mirror the decoder field by field: schema version in
//! `1..=SCHEMA_VERSION`; `execution_id` in the `{fp:N}:<uuid>` form
//! `ExecutionId::parse` accepts (hex digits of either case); `tags` a JSON
//! object of strings; a kind the family knows where unknown kinds are not
//! `other`; worker ids non-empty, at most `WorkerInstanceId::MAX_LEN`
//! bytes, without control characters; required columns present. A
//! randomized test over plain-SQL rows compares this predicate with the
//! decoder.

use ff_core::stream_events::record::SCHEMA_VERSION;
use ff_core::stream_events::{Family, InstanceTagKind, LeaseHistoryKind};
use ff_core::types::WorkerInstanceId;

/// `{fp:N}:<uuid>` with `N` in `0..=65535` without leading zeros and a
/// hyphenated UUID.
const EXECUTION_ID_PATTERN: &str = concat!(
    r"^\{fp:(0|[1-9][0-9]{0,3}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])\}:",
    "[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}$"
);

/// Unicode control characters (general category Cc, what Rust's
/// `char::is_control` tests); NUL cannot occur in `text`.
const CONTROL_CLASS: &str = r"[\u0001-\u001f\u007f-\u009f]";

/// A SQL string literal of `s` (which holds no quote in practice; doubled
/// if it did).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// `col IN (...)` over known names.
fn one_of<'a>(col: &str, names: impl IntoIterator<Item = &'a str>) -> String {
    let list: Vec<String> = names.into_iter().map(literal).collect();
    format!("{col} IN ({})", list.join(", "))
}

/// An optional worker id column, valid when absent or a `WorkerInstanceId`.
fn worker_ok(col: &str) -> String {
    format!(
        "({col} IS NULL OR ({col} <> '' AND octet_length({col}) <= {max} AND {col} !~ '{CONTROL_CLASS}'))",
        max = WorkerInstanceId::MAX_LEN
    )
}

/// The per-family part of the predicate; columns prefixed with `p`.
fn family_checks(family: Family, p: &str) -> String {
    match family {
        Family::LeaseHistory => {
            let kind = |k: LeaseHistoryKind| literal(k.as_str());
            format!(
                "{known} AND CASE {p}type \
                     WHEN {acquired} THEN {worker} \
                     WHEN {renewed} THEN {worker} \
                     WHEN {expired} THEN {prev} \
                     WHEN {reclaimed} THEN {new} \
                     ELSE {p}revoked_by IS NOT NULL END",
                known = one_of(
                    &format!("{p}type"),
                    LeaseHistoryKind::ALL.iter().map(|k| k.as_str())
                ),
                acquired = kind(LeaseHistoryKind::Acquired),
                renewed = kind(LeaseHistoryKind::Renewed),
                expired = kind(LeaseHistoryKind::Expired),
                reclaimed = kind(LeaseHistoryKind::Reclaimed),
                worker = worker_ok(&format!("{p}worker_instance_id")),
                prev = worker_ok(&format!("{p}prev_owner")),
                new = worker_ok(&format!("{p}new_owner")),
            )
        }
        Family::Completion => format!("{p}outcome IS NOT NULL"),
        Family::SignalDelivery => format!("{p}signal_id IS NOT NULL AND {p}effect IS NOT NULL"),
        _ => format!(
            "{} AND {p}tag IS NOT NULL",
            one_of(
                &format!("{p}type"),
                InstanceTagKind::ALL.iter().map(|k| k.as_str())
            )
        ),
    }
}

/// A SQL boolean over table alias `t`: true exactly for the rows of
/// `family` the shared decoder accepts; never NULL.
pub(crate) fn well_formed(family: Family) -> String {
    well_formed_columns(family, "t.")
}

/// [`well_formed`] over columns prefixed with `prefix` (empty for a
/// partial index's predicate, which this expression can be: it is
/// immutable).
pub(crate) fn well_formed_columns(family: Family, prefix: &str) -> String {
    let p = prefix;
    format!(
        "coalesce(({p}v BETWEEN 1 AND {SCHEMA_VERSION} \
           AND {p}execution_id ~ '{EXECUTION_ID_PATTERN}' \
           AND jsonb_typeof({p}tags) = 'object' \
           AND NOT jsonb_path_exists({p}tags, '$.* ? (@.type() != \"string\")') \
           AND {checks}), false)",
        checks = family_checks(family, p)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_has_a_predicate_without_placeholders() {
        for family in Family::ALL {
            let sql = well_formed(*family);
            assert!(sql.starts_with("coalesce(("), "{sql}");
            assert!(!sql.contains('$') || sql.contains("'$.*"), "{sql}");
        }
        let lease = well_formed(Family::LeaseHistory);
        for kind in LeaseHistoryKind::ALL {
            assert!(lease.contains(&format!("'{}'", kind.as_str())), "{lease}");
        }
        assert!(well_formed(Family::InstanceTags).contains("'cleared'"));
    }
}
