//! The least privileges a consumer or a publisher role needs, as `GRANT`
//! statements the schema's owner runs.
//!
//! A consumer reads the outbox, the retention horizons and the migration
//! record, reads and writes its own rows of the cursor store (row-level
//! security keeps it to those), and keeps consumer groups' members, leases
//! and unit cursors. A publisher inserts outbox rows and reads
//! back only their position columns (`RETURNING xid, id, at`). Neither
//! needs any right to create or change objects: connecting checks the
//! schema with reads (see `schema_state`).

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use sqlx::Connection;

use crate::error::map_sqlx;
use crate::pool::with_conn;
use crate::schema::SchemaNames;
use crate::PostgresBackend;

/// `role` as a quoted SQL identifier, after checking it is a possible role
/// name (1..=63 bytes, no NUL).
fn quote_role(role: &str) -> Result<String, EngineError> {
    if role.is_empty() || role.len() > 63 || role.contains('\0') {
        return Err(EngineError::validation(format!(
            "role name {:?} must be 1..=63 bytes without NUL",
            role.chars().take(80).collect::<String>()
        )));
    }
    Ok(format!("\"{}\"", role.replace('"', "\"\"")))
}

/// The outbox tables, comma-separated.
fn outbox_tables(names: &SchemaNames) -> String {
    Family::ALL
        .iter()
        .map(|f| names.table(*f))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The statements that let `role` subscribe, read bounds and use the
/// cursor store in `names`' schema.
pub(crate) fn consumer_grants(names: &SchemaNames, role: &str) -> Result<Vec<String>, EngineError> {
    let role = quote_role(role)?;
    let schema = names.schema();
    Ok(vec![
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!(
            "GRANT SELECT ON {}, {}, {schema}._ff_migrations TO {role}",
            outbox_tables(names),
            names.horizons()
        ),
        format!(
            "GRANT SELECT, INSERT, UPDATE ON {} TO {role}",
            names.cursors()
        ),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.groups, {schema}.group_units, \
             {schema}.group_members TO {role}"
        ),
        format!(
            "GRANT EXECUTE ON FUNCTION {schema}.group_commit(text, integer, text, bigint, text, text) \
             TO {role}"
        ),
    ])
}

/// The statements that let `role` publish (and `append`) into `names`'
/// schema.
pub(crate) fn publisher_grants(
    names: &SchemaNames,
    role: &str,
) -> Result<Vec<String>, EngineError> {
    let role = quote_role(role)?;
    let schema = names.schema();
    let tables = outbox_tables(names);
    Ok(vec![
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!("GRANT SELECT ON {schema}._ff_migrations TO {role}"),
        format!("GRANT INSERT, SELECT (xid, id, at) ON {tables} TO {role}"),
    ])
}

impl PostgresBackend {
    /// Grant `role` what a consumer needs: read the outbox, horizons and
    /// migration record, and keep its own positions in the cursor store.
    /// Run as the schema's owner (e.g. `ff migrate --grant-consumer ROLE`).
    pub async fn grant_consumer(&self, role: &str) -> Result<(), EngineError> {
        self.run_grants(consumer_grants(&self.inner.names, role)?)
            .await
    }

    /// Grant `role` what a publisher needs: insert outbox rows and read
    /// their positions back. Run as the schema's owner (e.g. `ff migrate
    /// --grant-publisher ROLE`).
    pub async fn grant_publisher(&self, role: &str) -> Result<(), EngineError> {
        self.run_grants(publisher_grants(&self.inner.names, role)?)
            .await
    }

    async fn run_grants(&self, statements: Vec<String>) -> Result<(), EngineError> {
        with_conn!(
            self.inner.pool,
            untimed | conn | {
                let mut tx = conn.begin().await.map_err(map_sqlx)?;
                for sql in &statements {
                    sqlx::raw_sql(sql)
                        .execute(&mut *tx)
                        .await
                        .map_err(map_sqlx)?;
                }
                tx.commit().await.map_err(map_sqlx)
            }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_are_quoted_and_bad_ones_refused() {
        assert_eq!(quote_role("app").unwrap(), "\"app\"");
        assert_eq!(quote_role("a\"b").unwrap(), "\"a\"\"b\"");
        assert!(quote_role("").is_err());
        assert!(quote_role(&"r".repeat(64)).is_err());
        let names = SchemaNames::new("ff");
        let sql = publisher_grants(&names, "Pub; DROP").unwrap().join(";");
        assert!(sql.contains("TO \"Pub; DROP\""), "{sql}");
        assert!(sql.contains("ff.instance_tags"), "{sql}");
        let sql = consumer_grants(&names, "app").unwrap().join(";");
        assert!(sql.contains("ON ff.consumer_cursors TO \"app\""), "{sql}");
        assert!(sql.contains("ff.group_units"), "{sql}");
    }
}
