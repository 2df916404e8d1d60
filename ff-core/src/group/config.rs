//! [`GroupConfig`]: lease length, heartbeat, safety margin and drain bound.
//!
//! Invariant kept by [`GroupConfig::validate`]: a member heartbeats at
//! least twice within the time it may deliver after one heartbeat (lease −
//! margin), so a healthy member never pauses a unit between beats, and the
//! margin is what its own clock keeps in hand before the store could
//! consider the lease expired.

use std::time::Duration;

use crate::error::EngineError;

/// Default lease: a crashed member's units move after about this long.
pub const DEFAULT_LEASE: Duration = Duration::from_secs(10);

/// Default interval between checkpoint items of a unit whose scanned
/// position moved past events of other units.
pub const DEFAULT_CHECKPOINT_INTERVAL: Duration = Duration::from_secs(1);

/// Timing of a group member.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct GroupConfig {
    /// How long a member's units stay its own after its last heartbeat
    /// (default 10 s, at least 1 s).
    pub lease: Duration,
    /// Interval between heartbeats (default lease / 3).
    pub heartbeat: Duration,
    /// How long before the lease could expire a member stops delivering a
    /// unit on its own clock, for clock drift and pauses (default lease / 5).
    pub margin: Duration,
    /// How long a member waits for the events it handed out to be
    /// committed before it releases a unit it gives up (default: one
    /// heartbeat).
    pub drain: Duration,
    /// See [`DEFAULT_CHECKPOINT_INTERVAL`].
    pub checkpoint_interval: Duration,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self::with_lease(DEFAULT_LEASE)
    }
}

impl GroupConfig {
    /// Defaults derived from `lease`: heartbeat lease / 3, margin lease / 5,
    /// drain one heartbeat.
    pub fn with_lease(lease: Duration) -> Self {
        Self {
            lease,
            heartbeat: lease / 3,
            margin: lease / 5,
            drain: lease / 3,
            checkpoint_interval: DEFAULT_CHECKPOINT_INTERVAL,
        }
    }

    /// Set the heartbeat interval.
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.heartbeat = heartbeat;
        self
    }

    /// Set the safety margin.
    pub fn margin(mut self, margin: Duration) -> Self {
        self.margin = margin;
        self
    }

    /// Set the drain bound.
    pub fn drain(mut self, drain: Duration) -> Self {
        self.drain = drain;
        self
    }

    /// Set the checkpoint interval.
    pub fn checkpoint_interval(mut self, interval: Duration) -> Self {
        self.checkpoint_interval = interval;
        self
    }

    /// Check the timings fit together (see the module docs).
    pub fn validate(&self) -> Result<(), EngineError> {
        if self.lease < Duration::from_secs(1) {
            return Err(EngineError::validation(format!(
                "group lease must be at least 1 s, got {:?}",
                self.lease
            )));
        }
        if self.margin.is_zero() || self.margin * 2 > self.lease {
            return Err(EngineError::validation(format!(
                "group margin must be above 0 and at most half the lease ({:?}), got {:?}",
                self.lease, self.margin
            )));
        }
        if self.heartbeat.is_zero() || self.heartbeat * 2 > self.lease - self.margin {
            return Err(EngineError::validation(format!(
                "group heartbeat must be above 0 and at most half of lease - margin ({:?}), got {:?}",
                self.lease - self.margin,
                self.heartbeat
            )));
        }
        if self.checkpoint_interval.is_zero() {
            return Err(EngineError::validation(
                "group checkpoint interval must be above 0",
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_short_leases_are_valid() {
        GroupConfig::default().validate().unwrap();
        GroupConfig::with_lease(Duration::from_secs(1))
            .validate()
            .unwrap();
        assert!(GroupConfig::with_lease(Duration::from_millis(500))
            .validate()
            .is_err());
        assert!(GroupConfig::default()
            .heartbeat(Duration::from_secs(5))
            .validate()
            .is_err());
    }
}
