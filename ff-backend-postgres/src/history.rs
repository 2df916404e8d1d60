//! Proving that a position belongs to the server's history.
//!
//! Transaction ids and row ids are handed out again by a database whose
//! history diverged from the one a cursor was read in: a copy promoted
//! before it received everything the original committed, a restore to an
//! earlier point, a dump restored into another cluster. Resuming there by
//! `(xid, id)` alone silently skips whatever the other history numbered
//! below the cursor. So a `0x05` cursor carries the cluster's system
//! identifier and its row's `at`, and a subscription (at subscribe and
//! after every reconnect) accepts a position only when the server proves
//! it shares it:
//!
//! - the system identifier matches (physical copies share it; every
//!   `initdb`, hence every logical restore, has a new one), and
//! - the position is the origin, or the server holds the very row it names
//!   (same `(xid, id)` and the same `at`), or it is the retention horizon
//!   (same position and `at`).
//!
//! An in-place major upgrade (`pg_upgrade`) is the one change of system
//! identifier that keeps the history: it carries the data files over, so
//! every stored tuple keeps the `xmin` of the transaction that wrote it,
//! and the new cluster goes on from the old one's transaction ids. A copy
//! made by rows (a dump restored, logical replication) stores the same
//! column values under the `xmin` of the transaction that copied them. So
//! under another system identifier a cursor is still proven when the
//! server holds the very row it names *and* that row's tuple was written
//! by the transaction the row's `xid` names (`xmin` = the low 32 bits of
//! `xid`), and the position lies below every id the server has issued.
//! Positions that name no stored row (the origin, the horizon) cannot be
//! shown that way, and neither can a row written in a subtransaction
//! (its `xmin` is the subtransaction's): those expire, with an `oldest`
//! at or before the same place.
//!
//! Otherwise the answer is `CursorExpired`, with the server's own oldest
//! retained position. A failover that lost nothing keeps every row, so no
//! cursor expires needlessly. `0x02` cursors carry neither, and are judged
//! by position only (beyond the newest completed transaction: expired).
//!
//! Separately, rows whose transaction ids are beyond any this cluster has
//! issued (a dump restored into a fresh cluster) would sort after rows the
//! cluster writes later, so nothing is served until its ids pass them.

use ff_core::engine_error::EngineError;
use ff_core::stream_events::Family;
use ff_core::stream_subscribe::StreamCursor;

use crate::error::BACKEND;
use crate::position::Pos;
use crate::resolve::Resolved;

/// Why `pos` (read from the cluster `system`, when known) cannot be
/// resumed on the server `resolved` describes, or `None` when it can.
/// `resolved` must have probed `pos`.
pub(crate) fn unproven(pos: Pos, system: Option<u64>, resolved: &Resolved) -> Option<String> {
    if let Some(system) = system.filter(|_| from_another_cluster(pos, system, resolved)) {
        return Some(format!(
            "it was read from the database system {system}, and this server is system {} \
             without the event the cursor names as that system wrote it: a restore into \
             another cluster, or another database",
            resolved.system
        ));
    }
    if let Some(detail) = resolved.expiry(pos) {
        return Some(detail);
    }
    if pos.xid == 0 || !pos.provable() {
        return None;
    }
    let held = match resolved.horizon {
        // A horizon recorded before horizons kept `at` (0) is judged by
        // position.
        Some(h) if h == pos => Some(if h.at == 0 { pos.at } else { h.at }),
        _ => resolved.probe_at,
    };
    match held {
        Some(at) if at == pos.at => None,
        Some(_) => Some(format!(
            "this server holds a different event at its position (transaction {}, row {}): \
             its history diverged from the one the cursor was read in (a failover to a copy \
             that had not received everything, or a restore to an earlier point)",
            pos.xid, pos.id
        )),
        None => Some(format!(
            "the event it names (transaction {}, row {}) is not on this server: its history \
             diverged from the one the cursor was read in (a failover to a copy that had not \
             received everything, or a restore to an earlier point)",
            pos.xid, pos.id
        )),
    }
}

/// Whether `pos`, read from the cluster `system`, comes from another
/// cluster than the server `resolved` describes and not by an in-place
/// upgrade (see [`carried_over`]).
pub(crate) fn from_another_cluster(pos: Pos, system: Option<u64>, resolved: &Resolved) -> bool {
    system.is_some_and(|s| s != resolved.system) && !carried_over(pos, resolved)
}

/// Whether the server holds the row `pos` names as the very tuple its
/// transaction wrote, below every transaction id it has issued: what an
/// in-place upgrade keeps and a copy by rows does not. The row's `at` is
/// compared by [`unproven`] afterwards.
fn carried_over(pos: Pos, resolved: &Resolved) -> bool {
    pos.xid != 0
        && pos.provable()
        && pos.xid < resolved.xmax
        && resolved.probe_written_here == Some(true)
}

/// The position to resume from after `CursorExpired`: the horizon, or the
/// beginning when the family was never pruned.
pub(crate) fn oldest(resolved: &Resolved, family: Family) -> StreamCursor {
    resolved.horizon.map_or_else(StreamCursor::beginning, |h| {
        h.cursor(family, resolved.system)
    })
}

/// An error when the outbox holds rows numbered beyond every transaction
/// this cluster has issued: a logical restore into another cluster.
pub(crate) fn foreign_rows(resolved: &Resolved, family: Family) -> Option<EngineError> {
    let head = resolved
        .head
        .into_iter()
        .chain(resolved.horizon)
        .max()
        .filter(|h| h.xid >= resolved.xmax)?;
    Some(EngineError::Backend {
        backend: BACKEND,
        detail: format!(
            "the {family} outbox holds rows of transaction {} but this cluster has only issued \
             transaction ids below {}: the schema was restored from another cluster's dump, and \
             events written now would sort before the restored ones; advance this cluster's \
             transaction ids past them first (e.g. pg_resetwal --epoch on the stopped cluster; \
             see docs/postgres.md)",
            head.xid, resolved.xmax
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SYSTEM: u64 = 99;

    fn server(horizon: Option<Pos>, probe_at: Option<i64>) -> Resolved {
        Resolved {
            xmin: 1_000,
            xmax: 1_000,
            horizon,
            head: Some(Pos::row(900, 50, 5_000)),
            below: Some(Pos::row(900, 50, 5_000)),
            system: SYSTEM,
            probe_at,
            // As a copy by rows holds it: not the tuple its transaction wrote.
            probe_written_here: probe_at.map(|_| false),
            two_phase: false,
        }
    }

    #[test]
    fn a_row_the_server_holds_with_the_same_at_is_proven() {
        let pos = Pos::row(800, 7, 4_000);
        assert_eq!(
            unproven(pos, Some(SYSTEM), &server(None, Some(4_000))),
            None
        );
        assert_eq!(
            unproven(Pos::ORIGIN, Some(SYSTEM), &server(None, None)),
            None
        );
    }

    #[test]
    fn another_system_a_missing_row_or_another_row_is_not() {
        let pos = Pos::row(800, 7, 4_000);
        let other = unproven(pos, Some(SYSTEM + 1), &server(None, Some(4_000))).unwrap();
        assert!(other.contains("another cluster"), "{other}");
        let missing = unproven(pos, Some(SYSTEM), &server(None, None)).unwrap();
        assert!(missing.contains("not on this server"), "{missing}");
        let different = unproven(pos, Some(SYSTEM), &server(None, Some(4_001))).unwrap();
        assert!(different.contains("different event"), "{different}");
    }

    #[test]
    fn another_system_is_proven_by_a_row_its_own_transaction_wrote() {
        let pos = Pos::row(800, 7, 4_000);
        let upgraded = Resolved {
            probe_written_here: Some(true),
            ..server(None, Some(4_000))
        };
        assert_eq!(unproven(pos, Some(SYSTEM + 1), &upgraded), None);
        let moved = unproven(Pos::row(800, 7, 4_001), Some(SYSTEM + 1), &upgraded).unwrap();
        assert!(moved.contains("different event"), "{moved}");
        let copied = Resolved {
            probe_written_here: Some(false),
            ..upgraded
        };
        let other = unproven(pos, Some(SYSTEM + 1), &copied).unwrap();
        assert!(other.contains("another cluster"), "{other}");
        assert!(unproven(Pos::ORIGIN, Some(SYSTEM + 1), &upgraded).is_some());
        let h = Pos::row(800, 7, 4_000);
        let pruned = Resolved {
            horizon: Some(h),
            probe_at: None,
            probe_written_here: None,
            ..upgraded
        };
        assert!(unproven(h, Some(SYSTEM + 1), &pruned).is_some());
    }

    #[test]
    fn the_horizon_itself_is_proven_by_its_recorded_at() {
        let h = Pos::row(800, 7, 4_000);
        assert_eq!(unproven(h, Some(SYSTEM), &server(Some(h), None)), None);
        let other = Pos::row(800, 7, 3_999);
        assert!(unproven(other, Some(SYSTEM), &server(Some(h), None)).is_some());
        let behind = Pos::row(700, 1, 1);
        assert!(unproven(behind, Some(SYSTEM), &server(Some(h), None))
            .unwrap()
            .contains("pruned"));
    }

    #[test]
    fn plain_cursors_are_judged_by_position_only() {
        let plain = Pos::row(800, 7, 0);
        assert_eq!(unproven(plain, None, &server(None, None)), None);
        let beyond = Pos::row(5_000, 1, 0);
        assert!(unproven(beyond, None, &server(None, None)).is_some());
    }

    #[test]
    fn rows_beyond_the_issued_ids_are_foreign() {
        let mut r = server(None, None);
        assert!(foreign_rows(&r, Family::Completion).is_none());
        r.head = Some(Pos::row(1_500, 1, 1));
        let err = foreign_rows(&r, Family::Completion).unwrap().to_string();
        assert!(err.contains("pg_resetwal"), "{err}");
    }
}
