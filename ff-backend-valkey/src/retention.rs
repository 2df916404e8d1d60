//! Trimming a family's stream to its [`Retention`], exactly and on the
//! record: a Lua script (`retention.lua`) trims, writes the largest
//! removed id into `max-deleted-entry-id` and the [`TrimRecord`] beside the
//! stream, which is what lets [`crate::expiry`] tell an expired cursor from
//! one whose next event is still retained. ff never uses `XDEL`.
//!
//! [`TrimRecord`]: crate::trim_record::TrimRecord

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ff_core::stream_events::Family;
use ff_core::stream_subscribe::ValkeyPosition;
use redis::Cmd;

use crate::config::Retention;
use crate::id;
use crate::keys::stream_index;

/// The trimming script.
const SCRIPT: &str = include_str!("retention.lua");

/// How often publishes of one family run the retention script: trimming is
/// "about", so checking on every append would only cost throughput.
pub(crate) const CHECK_EVERY: Duration = Duration::from_millis(100);

/// The command that applies `retention` to the stream `key` (`None` for
/// [`Retention::None`]), recording the trim in `record`. Its reply is the
/// number of entries removed.
pub(crate) fn retention_cmd(key: &str, record: &str, retention: Retention) -> Option<Cmd> {
    let (mode, limit, slack) = match retention {
        Retention::None => return None,
        Retention::MaxLen(n) => ("maxlen", n, (n / 16).clamp(1, 10_000)),
        Retention::MinAge(age) => {
            let ms = u64::try_from(age.as_millis()).unwrap_or(u64::MAX).max(1);
            ("minage", ms, (ms / 16).min(60_000))
        }
    };
    Some(script(key, record, mode, &limit.to_string(), slack))
}

/// The command that removes every entry of `key` before entry `first_kept`,
/// recording the trim in `record`.
pub(crate) fn trim_before_cmd(key: &str, record: &str, first_kept: ValkeyPosition) -> Cmd {
    script(key, record, "before", &id::format(first_kept), 0)
}

fn script(key: &str, record: &str, mode: &str, limit: &str, slack: u64) -> Cmd {
    // EVAL (not EVALSHA) so it also works inside MULTI after a server
    // restart emptied the script cache.
    let mut cmd = redis::cmd("EVAL");
    cmd.arg(SCRIPT)
        .arg(2)
        .arg(key)
        .arg(record)
        .arg(mode)
        .arg(limit)
        .arg(slack);
    cmd
}

/// When each stream's retention last ran from this backend instance.
pub(crate) struct RetentionClock {
    started: Instant,
    partitions: u16,
    /// Per family, then per partition.
    last_run_ms: Vec<AtomicU64>,
}

impl RetentionClock {
    pub(crate) fn new(partitions: u16) -> Self {
        Self {
            started: Instant::now(),
            partitions,
            last_run_ms: (0..4 * usize::from(partitions))
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// `true` (and the clock is reset) when the retention of `family`'s
    /// partition `partition` is due.
    pub(crate) fn due(&self, family: Family, partition: u16) -> bool {
        let now = u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX) + 1;
        let slot = &self.last_run_ms[stream_index(self.partitions, family, partition)];
        let last = slot.load(Ordering::Relaxed);
        if last != 0 && now.saturating_sub(last) < CHECK_EVERY.as_millis() as u64 {
            return false;
        }
        slot.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn none_has_no_command_and_the_others_carry_their_limits() {
        assert!(retention_cmd("k", "r", Retention::None).is_none());
        let packed = |c: Cmd| String::from_utf8_lossy(&c.get_packed_command()).into_owned();
        let maxlen = packed(
            retention_cmd(
                "ff:completion",
                "ff:completion:trimmed",
                Retention::MaxLen(1000),
            )
            .unwrap(),
        );
        assert!(maxlen.contains("ff:completion:trimmed") && maxlen.contains("maxlen"));
        assert!(maxlen.contains("\r\n1000\r\n") && maxlen.contains("\r\n62\r\n"));
        let minage =
            packed(retention_cmd("k", "r", Retention::MinAge(Duration::from_secs(3600))).unwrap());
        assert!(minage.contains("minage") && minage.contains("3600000"));
        let before = packed(trim_before_cmd("k", "r", ValkeyPosition { ms: 5, seq: 2 }));
        assert!(before.contains("before") && before.contains("5-2"));
    }

    #[test]
    fn the_clock_is_due_once_per_interval_and_stream() {
        let clock = RetentionClock::new(2);
        assert!(clock.due(Family::Completion, 0));
        assert!(!clock.due(Family::Completion, 0));
        assert!(clock.due(Family::Completion, 1));
        assert!(clock.due(Family::LeaseHistory, 0));
    }
}
