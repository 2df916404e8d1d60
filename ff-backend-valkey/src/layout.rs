//! The layout record: how a key prefix's families are laid out on the
//! server (the key layout version and P, the partition count), written
//! once by the first backend that uses the prefix and checked by every
//! backend that connects to it.
//!
//! Invariant: a backend connects only when the record under its prefix
//! names its own layout version and P, so publishers and subscribers of
//! one prefix always agree on which streams hold a family's events. The
//! record is never rewritten: repartitioning means a new key prefix.
//!
//! The record is one string key, `{prefix}layout`. It has no hash tag of
//! its own: on a cluster it sits in the slot of its name (under a prefix
//! with a hash tag, that tag's slot), apart from the partitions' streams,
//! so a stream slot's migration never has to move it along. Its name does
//! not depend on P, so backends configured with different P read the same
//! record. Its value is `layout=1 partitions=P`.

use ff_core::engine_error::EngineError;
use redis::Value;

use crate::error::unexpected;
use crate::routing::slot::key_slot;
use crate::routing::{Retry, Router};

/// The key layout this build writes (see [`crate::keys`]).
pub(crate) const VERSION: u32 = 1;

/// The record's key under `prefix`.
pub(crate) fn key(prefix: &str) -> String {
    format!("{prefix}layout")
}

/// A layout: the key layout version and P.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Layout {
    version: u32,
    partitions: u16,
}

impl Layout {
    fn text(self) -> String {
        format!("layout={} partitions={}", self.version, self.partitions)
    }

    /// Parse a record's value; `None` when it is not one.
    fn parse(text: &str) -> Option<Self> {
        let (mut version, mut partitions) = (None, None);
        for field in text.split_whitespace() {
            match field.split_once('=')? {
                ("layout", v) => version = Some(v.parse().ok()?),
                ("partitions", p) => partitions = Some(p.parse().ok()?),
                _ => return None,
            }
        }
        Some(Self {
            version: version?,
            partitions: partitions?,
        })
    }
}

/// What a check needs to know about the backend, for its commands and
/// messages.
pub(crate) struct Checked<'a> {
    pub(crate) prefix: &'a str,
    pub(crate) partitions: u16,
    /// The URL, redacted.
    pub(crate) url: &'a str,
    pub(crate) account: &'a str,
}

/// Read the layout record under `checked.prefix` — recording this
/// backend's layout when there is none — and fail with `Validation`,
/// naming both values, when it differs from this backend's.
pub(crate) async fn check(router: &Router, checked: &Checked<'_>) -> Result<(), EngineError> {
    let key = key(checked.prefix);
    let slot = key_slot(key.as_bytes());
    let context = format!("reading the layout record {key} on {}", checked.url);
    let fail = |e: redis::RedisError| crate::error::to_engine(e, checked.account, &context);
    let mine = Layout {
        version: VERSION,
        partitions: checked.partitions,
    };
    let get = redis::cmd("GET").arg(&key).clone();
    let mut recorded = router
        .command(slot, &get, Retry::Idempotent)
        .await
        .map_err(fail)?;
    if recorded == Value::Nil {
        // Setting the same value again is harmless, and a lost race reads
        // the winner's record: safe to resend.
        let set = redis::cmd("SET")
            .arg(&key)
            .arg(mine.text())
            .arg("NX")
            .arg("GET")
            .clone();
        recorded = router
            .command(slot, &set, Retry::Idempotent)
            .await
            .map_err(fail)?;
    }
    let text = match recorded {
        Value::Nil => return Ok(()),
        Value::BulkString(b) => String::from_utf8_lossy(&b).into_owned(),
        Value::ServerError(e) => return Err(fail(e.into())),
        other => return Err(unexpected(&context, format!("GET returned {other:?}"))),
    };
    let Some(theirs) = Layout::parse(&text) else {
        return Err(EngineError::validation(format!(
            "{key} on {} holds {}, not an ff layout record; use another key prefix, or delete that key if nothing else uses the prefix",
            checked.url,
            ff_core::engine_error::excerpt(&text)
        )));
    };
    if theirs.version != VERSION {
        return Err(EngineError::validation(format!(
            "key prefix {:?} on {} is laid out in key layout {} (recorded in {key}), which this build of ff (layout {VERSION}) does not know; upgrade ff or use a new key prefix",
            checked.prefix, checked.url, theirs.version
        )));
    }
    if theirs.partitions != mine.partitions {
        return Err(EngineError::validation(format!(
            "key prefix {:?} on {} splits each family into partitions={} (recorded in {key} at first use), but this backend is configured with partitions={}; use partitions={}, or a new key prefix to repartition",
            checked.prefix, checked.url, theirs.partitions, mine.partitions, theirs.partitions
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_key_does_not_depend_on_p_and_stays_in_a_prefix_tag() {
        assert_eq!(key("ff:"), "ff:layout");
        assert_eq!(key_slot(key("ff:").as_bytes()), key_slot(b"ff:layout"));
        assert_ne!(key_slot(key("ff:").as_bytes()), key_slot(b"{fp:0}"));
        assert_eq!(key("ff:{app}:"), "ff:{app}:layout");
        assert_eq!(key_slot(key("ff:{app}:").as_bytes()), key_slot(b"app"));
    }

    #[test]
    fn records_round_trip_and_anything_else_is_refused() {
        let l = Layout {
            version: 1,
            partitions: 8,
        };
        assert_eq!(l.text(), "layout=1 partitions=8");
        assert_eq!(Layout::parse(&l.text()), Some(l));
        for bad in [
            "",
            "layout=1",
            "partitions=8",
            "layout=1 partitions=x",
            "layout=1 partitions=8 extra=1",
            "hello",
        ] {
            assert_eq!(Layout::parse(bad), None, "{bad:?}");
        }
    }
}
