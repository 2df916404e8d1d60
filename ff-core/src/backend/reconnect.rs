//! [`ReconnectPolicy`]: capped exponential backoff for backends that hold
//! connections, and when to give up.

use std::time::{Duration, Instant};

/// How a subscription re-establishes a lost connection.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ReconnectPolicy {
    /// First delay after a failure.
    pub initial_backoff: Duration,
    /// Largest delay between attempts.
    pub max_backoff: Duration,
    /// Give up once this long has passed since the connection was lost.
    pub max_elapsed: Option<Duration>,
    /// Give up after this many failed attempts.
    pub max_attempts: Option<u32>,
}

impl Default for ReconnectPolicy {
    /// 50 ms doubling to 5 s, giving up after 60 s.
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Some(Duration::from_secs(60)),
            max_attempts: None,
        }
    }
}

impl ReconnectPolicy {
    /// A policy with the given give-up limits and default delays.
    pub fn new(max_elapsed: Option<Duration>, max_attempts: Option<u32>) -> Self {
        Self {
            max_elapsed,
            max_attempts,
            ..Self::default()
        }
    }

    /// Set the delays.
    pub fn with_backoff(mut self, initial: Duration, max: Duration) -> Self {
        self.initial_backoff = initial;
        self.max_backoff = max.max(initial);
        self
    }

    /// Start counting attempts for one outage.
    pub fn start(&self) -> Backoff {
        Backoff {
            policy: self.clone(),
            started: Instant::now(),
            attempts: 0,
            next: self.initial_backoff,
        }
    }
}

/// The state of one outage: the next delay, or `None` to give up.
#[derive(Debug)]
pub struct Backoff {
    policy: ReconnectPolicy,
    started: Instant,
    attempts: u32,
    next: Duration,
}

impl Backoff {
    /// The delay before the next attempt, or `None` when the policy gives up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if let Some(max) = self.policy.max_attempts {
            if self.attempts >= max {
                return None;
            }
        }
        let delay = self.next;
        if let Some(max) = self.policy.max_elapsed {
            if self.started.elapsed() + delay > max {
                return None;
            }
        }
        self.attempts += 1;
        self.next = self.next.saturating_mul(2).min(self.policy.max_backoff);
        Some(delay)
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_gives_up_after_max_attempts() {
        let policy = ReconnectPolicy::new(None, Some(5))
            .with_backoff(Duration::from_millis(10), Duration::from_millis(40));
        let mut b = policy.start();
        let delays: Vec<_> = std::iter::from_fn(|| b.next_delay()).collect();
        assert_eq!(
            delays,
            [10, 20, 40, 40, 40].map(Duration::from_millis).to_vec()
        );
        assert_eq!(b.attempts(), 5);
    }

    #[test]
    fn backoff_gives_up_when_the_next_delay_would_pass_max_elapsed() {
        // Delays 1 s, 2 s, 4 s: the third would end past 3 s even if no
        // time at all had passed, so the policy gives up there.
        let policy = ReconnectPolicy::new(Some(Duration::from_secs(3)), None)
            .with_backoff(Duration::from_secs(1), Duration::from_secs(60));
        let mut b = policy.start();
        assert_eq!(b.next_delay(), Some(Duration::from_secs(1)));
        assert_eq!(b.next_delay(), Some(Duration::from_secs(2)));
        assert_eq!(b.next_delay(), None);
    }
}
