//! SQL text for appends and reads, built once per family (and filter) and
//! executed as prepared statements.
//!
//! Reads are gap-free: they see only rows of transactions older than the
//! snapshot's `xmin`, in `(xid, id)` order, and return the snapshot bounds
//! and the family's retention horizon from the same statement, so expiry
//! is judged on exactly the state the rows came from.

use ff_core::filter::SubscriptionFilter;
use ff_core::stream_events::record::SCHEMA_VERSION;
use ff_core::stream_events::{
    CompletionKind, CompletionOutcome, EventKind, EventMeta, Family, SignalDeliveryEffect,
    SignalDeliveryKind,
};
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::Postgres;

use crate::schema::{table_def, SchemaNames};
use crate::well_formed::well_formed;

/// A query with bound arguments.
pub(crate) type PgQuery<'q> = Query<'q, Postgres, PgArguments>;

/// `INSERT` of one row of `family`: binds the event columns in table
/// order, then `namespace` and `tags` (JSON text); returns `(xid, id, at)`.
pub(crate) fn insert_one(names: &SchemaNames, family: Family) -> String {
    let def = table_def(family);
    let n = def.columns.len();
    let params = (1..=n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {table} (v, {cols}, namespace, tags) \
         VALUES ({SCHEMA_VERSION}, {params}, ${ns}, ${tags}::jsonb) \
         RETURNING xid::text::int8, id, at",
        table = names.table(family),
        cols = def.column_list(""),
        ns = n + 1,
        tags = n + 2,
    )
}

/// `INSERT` of many rows of `family` from one array per column (event
/// columns, then `namespace`, then `tags` as JSON text), in array order;
/// returns `(xid, id, at)` per row.
pub(crate) fn insert_many(names: &SchemaNames, family: Family) -> String {
    let def = table_def(family);
    let n = def.columns.len();
    let arrays = def
        .columns
        .iter()
        .enumerate()
        .map(|(i, c)| format!("${}::{}[]", i + 1, c.sql_type()))
        .chain([format!("${}::text[]", n + 1), format!("${}::text[]", n + 2)])
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "INSERT INTO {table} (v, {cols}, namespace, tags) \
         SELECT {SCHEMA_VERSION}, {ucols}, u.namespace, u.tags::jsonb \
         FROM UNNEST({arrays}) WITH ORDINALITY AS u({cols}, namespace, tags, ord) \
         ORDER BY u.ord \
         RETURNING xid::text::int8, id, at",
        table = names.table(family),
        cols = def.column_list(""),
        ucols = def.column_list("u."),
    )
}

/// The columns every read selects for a row, prefixed by table alias `t`.
fn row_columns(family: Family) -> String {
    format!(
        "t.xid::text::int8 AS rxid, t.id AS rid, t.at, t.v, t.namespace, t.tags::text AS tags, {}",
        table_def(family).column_list("t.")
    )
}

/// The snapshot, horizon, newest row and newest row below the snapshot's
/// `xmin` of `family`, in one statement: `xmin, xmax`, then `xid, id, at`
/// of the horizon, the head and the newest readable row (NULL when
/// absent), the server's system identifier, the `at` of the row at
/// `($1 xid text, $2 id)` (NULL when there is none, or `$1` is NULL), and
/// whether that row's tuple is the one its own transaction wrote (its
/// `xmin` is the low 32 bits of its `xid`; see `history`), and whether
/// the server allows prepared transactions. Used at subscribe and
/// reconnect time and by `bounds`.
pub(crate) fn resolve(names: &SchemaNames, family: Family) -> String {
    format!(
        "WITH f AS MATERIALIZED ( \
             SELECT pg_snapshot_xmin(s) AS xmin, pg_snapshot_xmax(s) AS xmax \
             FROM (SELECT pg_current_snapshot() AS s) AS q) \
         SELECT f.xmin::text::int8, f.xmax::text::int8, \
                h.xid::text::int8, h.id, {horizon_at}, \
                hd.xid::text::int8, hd.id, hd.at, \
                b.xid::text::int8, b.id, b.at, \
                (SELECT system_identifier FROM pg_control_system()), \
                pr.at, pr.written_here, \
                current_setting('max_prepared_transactions')::int > 0 \
         FROM f \
         LEFT JOIN LATERAL ( \
             SELECT t.at, t.xmin::text::int8 = t.xid::text::int8 % 4294967296 AS written_here \
             FROM {table} t WHERE t.xid = $1::text::xid8 AND t.id = $2 \
         ) pr ON true \
         LEFT JOIN {horizons} h ON h.family = '{fam}' \
         LEFT JOIN LATERAL ( \
             SELECT t.xid, t.id, t.at FROM {table} t ORDER BY t.xid DESC, t.id DESC LIMIT 1 \
         ) hd ON true \
         LEFT JOIN LATERAL ( \
             SELECT t.xid, t.id, t.at FROM {table} t WHERE t.xid < f.xmin \
             ORDER BY t.xid DESC, t.id DESC LIMIT 1 \
         ) b ON true",
        horizon_at = HORIZON_AT,
        horizons = names.horizons(),
        fam = family.as_str(),
        table = names.table(family),
    )
}

/// The server's system identifier (what `0x05` cursors carry).
pub(crate) const SYSTEM_IDENTIFIER: &str = "SELECT system_identifier FROM pg_control_system()";

/// `cursor_at` of `family` for `$1` (ms): whether a row recorded at or
/// after `$1` exists, then `xid, id, at` of the row before the first such
/// row (in stream order), of the newest row below the snapshot's `xmin`,
/// and of the horizon (NULL when absent), and the server's system
/// identifier.
pub(crate) fn cursor_at(names: &SchemaNames, family: Family) -> String {
    format!(
        "WITH f AS MATERIALIZED (SELECT pg_snapshot_xmin(pg_current_snapshot()) AS xmin), \
         first AS MATERIALIZED ( \
             SELECT t.xid, t.id FROM {table} t WHERE t.at >= $1 ORDER BY t.xid, t.id LIMIT 1) \
         SELECT EXISTS (SELECT 1 FROM first), \
                p.xid::text::int8, p.id, p.at, \
                b.xid::text::int8, b.id, b.at, \
                h.xid::text::int8, h.id, {horizon_at}, \
                (SELECT system_identifier FROM pg_control_system()) \
         FROM f \
         LEFT JOIN LATERAL ( \
             SELECT t.xid, t.id, t.at FROM {table} t, first \
             WHERE (t.xid, t.id) < (first.xid, first.id) \
             ORDER BY t.xid DESC, t.id DESC LIMIT 1 \
         ) p ON true \
         LEFT JOIN LATERAL ( \
             SELECT t.xid, t.id, t.at FROM {table} t WHERE t.xid < f.xmin \
             ORDER BY t.xid DESC, t.id DESC LIMIT 1 \
         ) b ON true \
         LEFT JOIN {horizons} h ON h.family = '{fam}'",
        table = names.table(family),
        horizons = names.horizons(),
        fam = family.as_str(),
        horizon_at = HORIZON_AT,
    )
}

/// The horizon's `at` in reads (over alias `h`).
const HORIZON_AT: &str = "h.at";

/// A subscription filter as SQL predicates over table alias `t`, with the
/// values to bind (from parameter `$4` on).
#[derive(Clone, Debug, Default)]
pub(crate) struct SqlFilter {
    namespace: Option<String>,
    tag_json: Option<String>,
    execution_id: Option<String>,
    /// Wire values of the admitted known kinds, and whether `other` is
    /// admitted (any value outside `known`).
    kinds: Option<KindFilter>,
}

#[derive(Clone, Debug)]
struct KindFilter {
    wanted: Vec<String>,
    other: Option<Vec<String>>,
}

impl SqlFilter {
    /// Translate `filter` (already validated for `family`).
    pub fn new(filter: &SubscriptionFilter, family: Family) -> Self {
        let tag_json = filter
            .tag
            .as_ref()
            .map(|(k, v)| EventMeta::new().with_tag(k.clone(), v.clone()).tags_json());
        let kinds = filter.kinds.as_ref().map(|kinds| {
            let (known, is_other) = kind_wire_names(family);
            let mut wanted = Vec::new();
            let mut other = false;
            for kind in kinds {
                if is_other(*kind) {
                    other = true;
                } else {
                    wanted.push(kind.as_str().to_owned());
                }
            }
            KindFilter {
                wanted,
                other: other.then_some(known),
            }
        });
        Self {
            namespace: filter.namespace.clone(),
            tag_json,
            execution_id: filter.execution_id.map(|e| e.to_string()),
            kinds,
        }
    }

    /// `true` when the filter admits every row.
    pub fn is_empty(&self) -> bool {
        self.namespace.is_none()
            && self.tag_json.is_none()
            && self.execution_id.is_none()
            && self.kinds.is_none()
    }

    /// ` AND ...`: the rows the filter admits, plus every row the decoder
    /// rejects (delivered as `Corrupt`); parameters numbered from `$first`.
    /// Empty for the empty filter.
    fn predicates(&self, family: Family, first: usize) -> String {
        if self.is_empty() {
            return String::new();
        }
        format!(
            " AND (({}) OR NOT {})",
            self.matching(family, first),
            well_formed(family)
        )
    }

    /// The filter over well-formed rows, exactly as
    /// `SubscriptionFilter::matches` judges their decoded events:
    /// execution ids compare in lower case (the decoder accepts upper-case
    /// hex digits), tags by containment (well-formed tags are strings),
    /// kinds by their exact wire strings.
    pub fn matching(&self, family: Family, first: usize) -> String {
        let mut sql = String::from("true");
        let mut n = first;
        let mut next = || {
            let p = n;
            n += 1;
            p
        };
        if self.namespace.is_some() {
            sql.push_str(&format!(" AND t.namespace = ${}", next()));
        }
        if self.tag_json.is_some() {
            sql.push_str(&format!(" AND t.tags @> ${}::jsonb", next()));
        }
        if self.execution_id.is_some() {
            sql.push_str(&format!(" AND lower(t.execution_id) = ${}", next()));
        }
        if let Some(k) = &self.kinds {
            let col = table_def(family).kind_column.name();
            let wanted = next();
            match &k.other {
                None => sql.push_str(&format!(" AND t.{col} = ANY(${wanted}::text[])")),
                Some(_) => {
                    let known = next();
                    sql.push_str(&format!(
                        " AND (t.{col} = ANY(${wanted}::text[]) OR t.{col} <> ALL(${known}::text[]))"
                    ))
                }
            }
        }
        sql
    }

    /// Bind the filter's values, in the order [`SqlFilter::predicates`] numbered them.
    pub fn bind<'q>(&'q self, mut q: PgQuery<'q>) -> PgQuery<'q> {
        if let Some(ns) = &self.namespace {
            q = q.bind(ns.as_str());
        }
        if let Some(tag) = &self.tag_json {
            q = q.bind(tag.as_str());
        }
        if let Some(e) = &self.execution_id {
            q = q.bind(e.as_str());
        }
        if let Some(k) = &self.kinds {
            q = q.bind(&k.wanted);
            if let Some(known) = &k.other {
                q = q.bind(known);
            }
        }
        q
    }
}

/// The known wire values of `family`'s kind column (for families whose
/// kinds include `other`: every value outside them is `other`), and a
/// test for the `other` kind.
fn kind_wire_names(family: Family) -> (Vec<String>, fn(EventKind) -> bool) {
    match family {
        Family::Completion => (
            CompletionKind::ALL
                .iter()
                .map(|k| CompletionOutcome::from_wire(k.as_str()))
                .filter(|o| !matches!(o, CompletionOutcome::Other(_)))
                .map(|o| o.as_wire().to_owned())
                .collect(),
            |k| k == EventKind::Completion(CompletionKind::Other),
        ),
        Family::SignalDelivery => (
            SignalDeliveryKind::ALL
                .iter()
                .map(|k| SignalDeliveryEffect::from_wire(k.as_str()))
                .filter(|e| !matches!(e, SignalDeliveryEffect::Other(_)))
                .map(|e| e.as_wire().to_owned())
                .collect(),
            |k| k == EventKind::SignalDelivery(SignalDeliveryKind::Other),
        ),
        _ => (Vec::new(), |_| false),
    }
}

/// Columns before the row in a [`read`] result: `xmin, xmax, horizon_xid,
/// horizon_id, horizon_at, held`, plus `scan_xid, scan_id, scan_at` when
/// filtered.
pub(crate) fn read_header_len(filter: &SqlFilter) -> usize {
    if filter.is_empty() {
        6
    } else {
        9
    }
}

/// The gap-free batch read of `family` after position `($1 xid text, $2
/// id)`, at most `$3` rows, filtered by `filter` (parameters from `$4`).
///
/// Every result row carries the header (see [`read_header_len`]) and one
/// outbox row; with no rows to return, one header-only row with NULL row
/// columns. `held` says whether committed rows matching the filter wait
/// behind an older open transaction. For filtered reads `scan_*` is the
/// newest row (matching or not) below the snapshot's `xmin`: how far a
/// read that returned fewer than `$3` rows has scanned.
///
/// With `indexed` (the opt-in filter indexes exist), a filtered read takes
/// the matching well-formed rows and the malformed ones in two ordered
/// branches, each of which an index serves, and merges them.
pub(crate) fn read(
    names: &SchemaNames,
    family: Family,
    filter: &SqlFilter,
    indexed: bool,
) -> String {
    let table = names.table(family);
    let preds = filter.predicates(family, 4);
    let cols = row_columns(family);
    let keyset = "(t.xid, t.id) > ($1::text::xid8, $2) AND t.xid < hdr.xmin";
    let rows = if indexed && !filter.is_empty() {
        format!(
            "SELECT * FROM ( \
                 (SELECT {cols} FROM {table} t WHERE {keyset} AND ({matching}) AND {wf} \
                  ORDER BY t.xid, t.id LIMIT $3) \
                 UNION ALL \
                 (SELECT {cols} FROM {table} t WHERE {keyset} AND NOT {wf} \
                  ORDER BY t.xid, t.id LIMIT $3) \
             ) u ORDER BY u.rxid, u.rid LIMIT $3",
            matching = filter.matching(family, 4),
            wf = well_formed(family),
        )
    } else {
        format!("SELECT {cols} FROM {table} t WHERE {keyset}{preds} ORDER BY t.xid, t.id LIMIT $3")
    };
    let (scan_cols, scan_join, scan_sel) = if filter.is_empty() {
        (String::new(), String::new(), String::new())
    } else {
        (
            ", sc.xid::text::int8 AS sxid, sc.id AS sid, sc.at AS sat".to_owned(),
            format!(
                " LEFT JOIN LATERAL ( \
                     SELECT t.xid, t.id, t.at FROM {table} t WHERE t.xid < f.xmin \
                     ORDER BY t.xid DESC, t.id DESC LIMIT 1 \
                 ) sc ON true"
            ),
            ", hdr.sxid, hdr.sid, hdr.sat".to_owned(),
        )
    };
    // The header is computed (and cast to int8) once, in `hdr`; the outer
    // select only repeats its values on each row.
    format!(
        "WITH f AS MATERIALIZED ( \
             SELECT pg_snapshot_xmin(s) AS xmin, pg_snapshot_xmax(s) AS xmax \
             FROM (SELECT pg_current_snapshot() AS s) AS q), \
         hdr AS MATERIALIZED ( \
             SELECT f.xmin, f.xmin::text::int8 AS xmin_n, f.xmax::text::int8 AS xmax_n, \
                    h.xid::text::int8 AS hxid, h.id AS hid, {horizon_at} AS hat, \
                    (SELECT true FROM {table} t WHERE t.xid >= f.xmin{preds} \
                     ORDER BY t.xid DESC LIMIT 1) IS NOT NULL AS held \
                    {scan_cols} \
             FROM f \
             LEFT JOIN {horizons} h ON h.family = '{fam}'{scan_join}) \
         SELECT hdr.xmin_n, hdr.xmax_n, hdr.hxid, hdr.hid, hdr.hat, \
                hdr.held{scan_sel}, r.* \
         FROM hdr \
         LEFT JOIN LATERAL ({rows}) r ON true",
        horizons = names.horizons(),
        fam = family.as_str(),
        horizon_at = HORIZON_AT,
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use ff_core::stream_events::InstanceTagKind;
    use ff_core::types::ExecutionId;

    #[test]
    fn filters_number_parameters_in_bind_order() {
        let names = SchemaNames::new("ff");
        let f = SubscriptionFilter::new()
            .with_namespace("ns")
            .with_tag("k", "v")
            .with_execution_id(ExecutionId::new(1))
            .with_kinds([
                EventKind::Completion(CompletionKind::Success),
                EventKind::Completion(CompletionKind::Other),
            ]);
        let sf = SqlFilter::new(&f, Family::Completion);
        let sql = read(&names, Family::Completion, &sf, false);
        assert!(sql.contains("t.namespace = $4"), "{sql}");
        assert!(sql.contains("t.tags @> $5::jsonb"), "{sql}");
        assert!(sql.contains("lower(t.execution_id) = $6"), "{sql}");
        assert!(sql.contains("OR NOT coalesce("), "{sql}");
        assert!(
            sql.contains("t.outcome = ANY($7::text[]) OR t.outcome <> ALL($8::text[])"),
            "{sql}"
        );
        let k = sf.kinds.as_ref().unwrap();
        assert_eq!(k.wanted, ["success"]);
        assert_eq!(
            k.other.as_deref().unwrap(),
            ["success", "failure", "cancelled"]
        );
        assert_eq!(sf.tag_json.as_deref(), Some(r#"{"k":"v"}"#));
        assert_eq!(read_header_len(&sf), 9);
    }

    #[test]
    fn variant_kinds_filter_the_type_column() {
        let f = SubscriptionFilter::new()
            .with_kinds([EventKind::InstanceTags(InstanceTagKind::Cleared)]);
        let sf = SqlFilter::new(&f, Family::InstanceTags);
        let sql = read(&SchemaNames::new("ff"), Family::InstanceTags, &sf, false);
        assert!(sql.contains("t.type = ANY($4::text[])"), "{sql}");
        assert!(!sql.contains("ALL("), "{sql}");
    }

    #[test]
    fn unfiltered_reads_have_no_scan_columns() {
        let sf = SqlFilter::new(&SubscriptionFilter::default(), Family::LeaseHistory);
        assert!(sf.is_empty());
        assert_eq!(read_header_len(&sf), 6);
        let sql = read(&SchemaNames::new("ff"), Family::LeaseHistory, &sf, false);
        assert!(!sql.contains("sxid"), "{sql}");
        assert!(insert_one(&SchemaNames::new("ff"), Family::LeaseHistory).contains("$10::jsonb"));
    }
}
