//! Where a family's stream stands: snapshot bounds, retention horizon and
//! newest row, read in one statement.

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use sqlx::Row;

use crate::error::map_sqlx;
use crate::position::Pos;
use crate::schema::SchemaNames;
use crate::sql;

/// One family's state under one snapshot.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Resolved {
    /// Oldest transaction still open (or the next id when none is).
    pub xmin: u64,
    /// First transaction id not yet completed.
    pub xmax: u64,
    /// Newest pruned position, if the family was ever pruned.
    pub horizon: Option<Pos>,
    /// Newest committed row.
    pub head: Option<Pos>,
    /// Newest committed row of a transaction older than `xmin`.
    pub below: Option<Pos>,
    /// The server's system identifier.
    pub system: u64,
    /// The `at` of the row at the probed position, if the server has it.
    pub probe_at: Option<i64>,
    /// Whether the probed row's stored tuple was written by the
    /// transaction its `xid` names (its `xmin` matches): true of rows
    /// carried over physically (`pg_upgrade`), false of rows a logical
    /// restore or replication copied in.
    pub probe_written_here: Option<bool>,
    /// Whether the server allows prepared transactions, whose commits
    /// send no wake-up.
    pub two_phase: bool,
}

impl Resolved {
    /// Read `family`'s state, and look up the row at `probe` (see
    /// `history`).
    pub async fn read<'c, E>(
        executor: E,
        names: &SchemaNames,
        family: Family,
        probe: Option<Pos>,
    ) -> Result<Self, EngineError>
    where
        E: sqlx::Executor<'c, Database = sqlx::Postgres>,
    {
        let row = sqlx::query(&sql::resolve(names, family))
            .bind(probe.map(Pos::xid_text))
            .bind(probe.map(|p| p.id))
            .fetch_one(executor)
            .await
            .map_err(map_sqlx)?;
        let get = |i: usize| row.try_get::<Option<i64>, _>(i).map_err(map_sqlx);
        let pos = |first: usize| -> Result<Option<Pos>, EngineError> {
            Ok(get(first)?
                .zip(get(first + 1)?)
                .map(|(x, i)| Pos::row(x, i, get(first + 2).ok().flatten().unwrap_or_default())))
        };
        Ok(Self {
            xmin: get(0)?.unwrap_or(0).max(0) as u64,
            xmax: get(1)?.unwrap_or(0).max(0) as u64,
            horizon: pos(2)?,
            head: pos(5)?,
            below: pos(8)?,
            system: get(11)?.unwrap_or_default() as u64,
            probe_at: get(12)?,
            probe_written_here: row.try_get(13).map_err(map_sqlx)?,
            two_phase: row.try_get(14).map_err(map_sqlx)?,
        })
    }

    /// Where a tail subscription starts: after the newest row a reader can
    /// see without gaps (or the horizon, or the origin, when there is
    /// none). Every transaction that commits later sorts after it, and it
    /// names a committed row, so it survives a crash of the server.
    pub fn tail_start(&self) -> Pos {
        self.below
            .into_iter()
            .chain(self.horizon)
            .max()
            .unwrap_or(Pos::ORIGIN)
    }

    /// `Some(detail)` when a stream positioned at `pos` can no longer be
    /// read without a gap: `pos` lies behind the horizon, or beyond every
    /// transaction this database has completed (its history was reset).
    pub fn expiry(&self, pos: Pos) -> Option<String> {
        expiry(pos, self.xmax, self.horizon)
    }
}

/// See [`Resolved::expiry`].
pub(crate) fn expiry(pos: Pos, xmax: u64, horizon: Option<Pos>) -> Option<String> {
    if pos.xid >= xmax {
        return Some(format!(
            "its transaction id {} is beyond the newest this database has completed ({}): \
             the database's history was reset (restored from a backup, failed over to a \
             lagging replica, or it is another database)",
            pos.xid,
            xmax.saturating_sub(1)
        ));
    }
    match horizon {
        Some(h) if pos < h => Some(format!(
            "retention pruned the events after this position ({}) up to {}",
            describe(pos),
            describe(h)
        )),
        _ => None,
    }
}

/// A position as words: its transaction and row.
fn describe(pos: Pos) -> String {
    if pos.xid == 0 {
        "the beginning".to_owned()
    } else {
        format!("transaction {} row {}", pos.xid, pos.id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pruned_position_in_the_horizon_s_own_transaction_reads_as_earlier() {
        let horizon = Pos::row(769, 12, 1);
        let detail = expiry(Pos::row(769, 5, 1), 1_000, Some(horizon)).unwrap();
        assert_eq!(
            detail,
            "retention pruned the events after this position (transaction 769 row 5) up to \
             transaction 769 row 12"
        );
        let origin = expiry(Pos::ORIGIN, 1_000, Some(horizon)).unwrap();
        assert!(origin.contains("(the beginning)"), "{origin}");
        assert_eq!(expiry(horizon, 1_000, Some(horizon)), None);
    }
}
