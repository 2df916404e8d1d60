//! Whether a schema is ready for this build, judged by reads alone.
//!
//! Connecting must work for a role that may only read the outbox (or only
//! insert into it): such a role cannot run even `CREATE SCHEMA IF NOT
//! EXISTS`. So `connect` first reads the schema's migration record here,
//! and runs DDL only when something is pending *and* migrating on connect
//! is enabled. A missing or outdated schema is one error that names
//! `ff migrate`.

use std::collections::BTreeMap;

use ff_core::engine_error::EngineError;
use sqlx::PgConnection;

use crate::error::{map_sqlx, BACKEND};
use crate::migrate::rendered;

/// What a schema holds, compared with this build's migrations.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum SchemaState {
    /// Every migration of this build is applied (a newer build may have
    /// applied more).
    Current,
    /// The schema has no ff migration record at all.
    Missing,
    /// Some of this build's migrations are not applied yet.
    Pending {
        /// The newest applied version, if any.
        applied: Option<i64>,
        /// The newest version this build has.
        needed: i64,
    },
}

/// Read `schema`'s migration record on `conn` (reads only).
pub(crate) async fn read(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<SchemaState, EngineError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{schema}._ff_migrations"))
        .fetch_one(&mut *conn)
        .await
        .map_err(map_sqlx)?;
    if !exists {
        return Ok(SchemaState::Missing);
    }
    let applied: Vec<(i64, Vec<u8>)> = sqlx::query_as(&format!(
        "SELECT version, checksum FROM {schema}._ff_migrations"
    ))
    .fetch_all(&mut *conn)
    .await
    .map_err(map_sqlx)?;
    judge(schema, &applied.into_iter().collect())
}

/// Compare the applied `(version → checksum)` record with this build's.
fn judge(schema: &str, applied: &BTreeMap<i64, Vec<u8>>) -> Result<SchemaState, EngineError> {
    let ours = rendered(schema);
    let needed = ours.last().map_or(0, |m| m.version);
    let mut pending = false;
    for m in &ours {
        match applied.get(&m.version) {
            Some(sum) if *sum != m.checksum => {
                return Err(EngineError::Backend {
                    backend: BACKEND,
                    detail: format!(
                        "migration {} ({}) applied to schema {schema} differs from this build's: \
                         the schema was created by an incompatible ff version",
                        m.version, m.description
                    ),
                })
            }
            Some(_) => {}
            None => pending = true,
        }
    }
    Ok(if applied.is_empty() {
        SchemaState::Missing
    } else if pending {
        SchemaState::Pending {
            applied: applied.keys().next_back().copied(),
            needed,
        }
    } else {
        SchemaState::Current
    })
}

impl SchemaState {
    /// The error for a schema that is not ready while migrating on connect
    /// is off; `None` when it is ready.
    pub fn not_ready(&self, schema: &str) -> Option<EngineError> {
        let what = match self {
            SchemaState::Current => return None,
            SchemaState::Missing => format!("schema {schema} has no ff tables"),
            SchemaState::Pending { applied, needed } => format!(
                "schema {schema} is at ff migration {} and this ff needs {needed}",
                applied.unwrap_or(0)
            ),
        };
        Some(EngineError::Backend {
            backend: BACKEND,
            detail: format!(
                "{what}: run `ff migrate --backend URL --schema {schema}` (or \
                 PostgresBackend::migrate) as a role that owns the schema, then connect again"
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(schema: &str, upto: usize) -> BTreeMap<i64, Vec<u8>> {
        rendered(schema)
            .into_iter()
            .take(upto)
            .map(|m| (m.version, m.checksum))
            .collect()
    }

    #[test]
    fn a_complete_record_is_current_and_a_partial_one_pending() {
        let all = rendered("ff").len();
        assert_eq!(
            judge("ff", &record("ff", all)).unwrap(),
            SchemaState::Current
        );
        assert_eq!(judge("ff", &BTreeMap::new()).unwrap(), SchemaState::Missing);
        let partial = judge("ff", &record("ff", all - 1)).unwrap();
        assert!(
            matches!(partial, SchemaState::Pending { .. }),
            "{partial:?}"
        );
        let msg = partial.not_ready("ff").unwrap().to_string();
        assert!(msg.contains("ff migrate"), "{msg}");
        assert!(SchemaState::Missing
            .not_ready("ff")
            .unwrap()
            .to_string()
            .contains("ff migrate"));
    }

    #[test]
    fn newer_builds_migrations_are_tolerated_and_changed_ones_refused() {
        let mut newer = record("ff", usize::MAX);
        newer.insert(9_999, vec![1, 2, 3]);
        assert_eq!(judge("ff", &newer).unwrap(), SchemaState::Current);
        let mut changed = record("ff", usize::MAX);
        changed.insert(1, vec![0]);
        let err = judge("ff", &changed).unwrap_err().to_string();
        assert!(err.contains("incompatible"), "{err}");
    }
}
