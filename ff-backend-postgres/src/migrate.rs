//! Creating and upgrading the outbox schema.
//!
//! The migrations are plain `.sql` files in `migrations/`, embedded with
//! `sqlx::migrate!`. They are written against the placeholder `{{schema}}`
//! and rendered for the configured schema (a validated plain identifier)
//! before they run, so every object is schema-qualified and nothing
//! depends on a connection's `search_path` — not the trigger, not the
//! prune functions, not a producer's plain-SQL `INSERT`.
//!
//! Applied versions are recorded in `<schema>._ff_migrations`, so each
//! schema migrates independently. Each migration runs in its own
//! transaction under an advisory lock keyed by the schema, so concurrent
//! processes connecting at once apply each migration exactly once.

use sqlx::migrate::Migrator;
use sqlx::{Connection, PgConnection};

use ff_core::engine_error::EngineError;

use crate::error::{map_sqlx, BACKEND};

/// SQLSTATE of "permission denied".
const INSUFFICIENT_PRIVILEGE: &str = "42501";

/// Map a failure while migrating; a permission error says which role may
/// migrate instead.
fn map_migrate(e: sqlx::Error, schema: &str) -> EngineError {
    let denied = e
        .as_database_error()
        .filter(|db| db.code().is_some_and(|code| code == INSUFFICIENT_PRIVILEGE))
        .map(|db| db.message().to_owned());
    match denied {
        Some(message) => EngineError::Backend {
            backend: BACKEND,
            detail: format!(
                "this role may not create or change schema {schema} ({message}): run \
                 `ff migrate --backend URL --schema {schema}` as the schema's owner, and connect \
                 least-privilege roles to a migrated schema"
            ),
        },
        None => map_sqlx(e),
    }
}

/// The embedded migrations.
static MIGRATOR: Migrator = sqlx::migrate!("./migrations");

/// The placeholder the migration files use for the schema name.
const PLACEHOLDER: &str = "{{schema}}";

/// A migration rendered for one schema.
#[derive(Debug)]
pub(crate) struct Rendered {
    /// Version (the file's number).
    pub version: i64,
    /// Description (the file's name).
    pub description: String,
    /// SQL with the schema substituted.
    pub sql: String,
    /// Checksum of the file as embedded.
    pub checksum: Vec<u8>,
}

/// Every embedded migration, rendered for `schema`, in version order.
pub(crate) fn rendered(schema: &str) -> Vec<Rendered> {
    MIGRATOR
        .iter()
        .map(|m| Rendered {
            version: m.version,
            description: m.description.to_string(),
            sql: m.sql.replace(PLACEHOLDER, schema),
            checksum: m.checksum.to_vec(),
        })
        .collect()
}

/// Apply every pending migration to `schema` on `conn`; returns the
/// versions applied.
pub(crate) async fn migrate(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<Vec<i64>, EngineError> {
    let fail = |e| map_migrate(e, schema);
    let mut applied = Vec::new();
    for m in rendered(schema) {
        let mut tx = conn.begin().await.map_err(fail)?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))")
            .bind(format!("ff-migrate:{schema}"))
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        // `CREATE ... IF NOT EXISTS` checks the right to create before it
        // checks existence, so an owner without CREATE on the database
        // could not migrate an existing schema: create only what is absent.
        let (has_schema, has_record): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1), \
                    to_regclass($2) IS NOT NULL",
        )
        .bind(schema)
        .bind(format!("{schema}._ff_migrations"))
        .fetch_one(&mut *tx)
        .await
        .map_err(fail)?;
        if !has_schema {
            sqlx::raw_sql(&format!("CREATE SCHEMA {schema}"))
                .execute(&mut *tx)
                .await
                .map_err(fail)?;
        }
        if !has_record {
            sqlx::raw_sql(&format!(
                "CREATE TABLE {schema}._ff_migrations ( \
                     version bigint PRIMARY KEY, \
                     description text NOT NULL, \
                     checksum bytea NOT NULL, \
                     applied_at timestamptz NOT NULL DEFAULT now())"
            ))
            .execute(&mut *tx)
            .await
            .map_err(fail)?;
        }
        let existing: Option<Vec<u8>> = sqlx::query_scalar(&format!(
            "SELECT checksum FROM {schema}._ff_migrations WHERE version = $1"
        ))
        .bind(m.version)
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail)?;
        match existing {
            Some(sum) if sum == m.checksum => {
                tx.rollback().await.map_err(fail)?;
                continue;
            }
            Some(_) => {
                return Err(EngineError::Backend {
                    backend: BACKEND,
                    detail: format!(
                        "migration {} ({}) applied to schema {schema} differs from this build's; \
                         the schema was created by an incompatible ff version",
                        m.version, m.description
                    ),
                })
            }
            None => {}
        }
        sqlx::raw_sql(&m.sql).execute(&mut *tx).await.map_err(|e| {
            match map_migrate(e, schema) {
                EngineError::Backend { backend, detail } => EngineError::Backend {
                    backend,
                    detail: format!(
                        "migration {} ({}) failed: {detail}",
                        m.version, m.description
                    ),
                },
                other => other,
            }
        })?;
        sqlx::query(&format!(
            "INSERT INTO {schema}._ff_migrations (version, description, checksum) VALUES ($1, $2, $3)"
        ))
        .bind(m.version)
        .bind(&m.description)
        .bind(&m.checksum)
        .execute(&mut *tx)
        .await
        .map_err(fail)?;
        tx.commit().await.map_err(fail)?;
        tracing::info!(schema, version = m.version, description = %m.description, "ff: applied migration");
        applied.push(m.version);
    }
    Ok(applied)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_render_for_the_schema_and_leave_no_placeholder() {
        let ms = rendered("events_x");
        assert!(ms.len() >= 3);
        let versions: Vec<i64> = ms.iter().map(|m| m.version).collect();
        let mut sorted = versions.clone();
        sorted.sort();
        assert_eq!(versions, sorted);
        for m in &ms {
            assert!(
                !m.sql.contains("{{"),
                "migration {} keeps a placeholder",
                m.version
            );
        }
        assert!(ms[0].sql.contains("CREATE TABLE events_x.completion"));
    }
}
