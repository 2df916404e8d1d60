//! Opt-in secondary indexes for filtered subscriptions.
//!
//! Every writer pays for every secondary index, so the outbox has none by
//! default and filtered reads scan in `(xid, id)` order (correct, and
//! cheap when most rows match). A deployment whose consumers filter
//! narrowly creates them with `ff migrate --filter-indexes`
//! ([`PostgresBackend::create_filter_indexes`]): per family, one on
//! `(lower(execution_id), xid, id)`, one on `(namespace, xid, id)` for rows
//! with a namespace, a GIN index on `tags`, and a small partial index on
//! the rows the decoder rejects (so that a filtered read, which must also
//! report those as `Corrupt`, can take both from indexes). A subscription
//! reads with index-friendly SQL when that last index exists.

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;

use crate::error::map_sqlx;
use crate::pool::with_conn;
use crate::schema::{table_def, SchemaNames};
use crate::well_formed::well_formed_columns;
use crate::PostgresBackend;

/// The name of `family`'s index on rows the decoder rejects; its presence
/// means the filter indexes exist.
pub(crate) fn malformed_index(names: &SchemaNames, family: Family) -> String {
    format!(
        "{}.{}_filter_malformed",
        names.schema(),
        table_def(family).table
    )
}

/// `(index name, CREATE INDEX statement)` for each filter index of
/// `family`; `concurrently` builds without blocking writers.
fn creates(names: &SchemaNames, family: Family, concurrently: bool) -> Vec<(String, String)> {
    let table = table_def(family).table;
    let qualified = names.table(family);
    let how = if concurrently { " CONCURRENTLY" } else { "" };
    let index = |suffix: &str, body: String| {
        let name = format!("{table}_filter_{suffix}");
        let sql = format!("CREATE INDEX{how} IF NOT EXISTS {name} ON {qualified} {body}");
        (name, sql)
    };
    vec![
        index("execution_id", "(lower(execution_id), xid, id)".to_owned()),
        index(
            "namespace",
            "(namespace, xid, id) WHERE namespace IS NOT NULL".to_owned(),
        ),
        index("tags", "USING gin (tags jsonb_path_ops)".to_owned()),
        index(
            "malformed",
            format!("(xid, id) WHERE NOT {}", well_formed_columns(family, "")),
        ),
    ]
}

impl PostgresBackend {
    /// Create the filter indexes of every family (without blocking
    /// writers), so that narrow filtered subscriptions read by index.
    /// Writers pay for them on every insert; the README's benchmarks give
    /// the cost.
    pub async fn create_filter_indexes(&self) -> Result<(), EngineError> {
        let names = &self.inner.names;
        for family in Family::ALL {
            // Partitioned tables cannot build an index concurrently.
            let partitioned: bool = with_conn!(self.inner.pool, |conn| {
                sqlx::query_scalar(
                    "SELECT coalesce((SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass($1)), false)",
                )
                .bind(names.table(*family))
                .fetch_one(conn)
                .await
                .map_err(map_sqlx)
            })?;
            for (_, sql) in creates(names, *family, !partitioned) {
                with_conn!(
                    self.inner.pool,
                    untimed | conn | {
                        sqlx::raw_sql(&sql)
                            .execute(conn)
                            .await
                            .map(drop)
                            .map_err(map_sqlx)
                    }
                )?;
            }
        }
        Ok(())
    }

    /// Drop the filter indexes of every family.
    pub async fn drop_filter_indexes(&self) -> Result<(), EngineError> {
        let names = &self.inner.names;
        for family in Family::ALL {
            for (name, _) in creates(names, *family, false) {
                let sql = format!("DROP INDEX IF EXISTS {}.{name}", names.schema());
                with_conn!(
                    self.inner.pool,
                    untimed | conn | {
                        sqlx::raw_sql(&sql)
                            .execute(conn)
                            .await
                            .map(drop)
                            .map_err(map_sqlx)
                    }
                )?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_gets_four_indexes_over_its_own_columns() {
        let names = SchemaNames::new("ff");
        for family in Family::ALL {
            let all = creates(&names, *family, true);
            assert_eq!(all.len(), 4);
            for (name, sql) in &all {
                assert!(
                    sql.contains(&format!("IF NOT EXISTS {name} ON ff.")),
                    "{sql}"
                );
                assert!(sql.contains("CONCURRENTLY"), "{sql}");
                assert!(!sql.contains("t."), "{sql}");
            }
            assert!(malformed_index(&names, *family).ends_with("_filter_malformed"));
        }
    }
}
