//! [`ReconnectPolicy`]: capped exponential backoff for backends that hold
//! connections, with jitter, and when to give up.
//!
//! Invariant: the n-th delay of a [`Backoff`] lies in
//! `[nominal × (1 − jitter), nominal]`, where the nominal delay starts at
//! `initial_backoff` and doubles up to `max_backoff`; whether to give up is
//! decided on the nominal delay, so jitter never makes a policy give up
//! earlier or later. Jitter spreads the reconnects of many clients that
//! lost the same server at the same moment, so they do not return in
//! lockstep.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{Duration, Instant};

/// The default share of each delay drawn at random (see
/// [`ReconnectPolicy::jitter_percent`]).
pub const DEFAULT_JITTER_PERCENT: u8 = 50;

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
    /// Up to this percentage (0 to 100) of each delay is cut at random:
    /// with 50 (the default), a nominal delay `d` becomes a uniformly drawn
    /// delay in `[d/2, d]`; 0 disables jitter. Values above 100 count as 100.
    pub jitter_percent: u8,
}

impl Default for ReconnectPolicy {
    /// 50 ms doubling to 5 s, each delay cut by a random 0–50%, giving up
    /// after 60 s.
    fn default() -> Self {
        Self {
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_secs(5),
            max_elapsed: Some(Duration::from_secs(60)),
            max_attempts: None,
            jitter_percent: DEFAULT_JITTER_PERCENT,
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

    /// Set the jitter (see [`ReconnectPolicy::jitter_percent`]).
    pub fn with_jitter_percent(mut self, percent: u8) -> Self {
        self.jitter_percent = percent.min(100);
        self
    }

    /// Start counting attempts for one outage, with a random jitter seed.
    pub fn start(&self) -> Backoff {
        self.start_seeded(random_seed())
    }

    /// [`ReconnectPolicy::start`] with a given jitter seed: the same seed
    /// gives the same delays (for tests and reproducible runs).
    pub fn start_seeded(&self, seed: u64) -> Backoff {
        Backoff {
            policy: self.clone(),
            started: Instant::now(),
            attempts: 0,
            next: self.initial_backoff,
            rng: seed,
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
    rng: u64,
}

impl Backoff {
    /// The delay before the next attempt, or `None` when the policy gives up.
    pub fn next_delay(&mut self) -> Option<Duration> {
        if let Some(max) = self.policy.max_attempts {
            if self.attempts >= max {
                return None;
            }
        }
        let nominal = self.next;
        if let Some(max) = self.policy.max_elapsed {
            if self.started.elapsed() + nominal > max {
                return None;
            }
        }
        self.attempts += 1;
        self.next = self.next.saturating_mul(2).min(self.policy.max_backoff);
        let draw = splitmix64(&mut self.rng);
        Some(jittered(nominal, self.policy.jitter_percent, draw))
    }

    /// Failed attempts so far.
    pub fn attempts(&self) -> u32 {
        self.attempts
    }
}

/// `nominal` cut by `draw`'s share of `percent`% of it: uniform over
/// `[nominal × (1 − percent/100), nominal]` for a uniform `draw`.
fn jittered(nominal: Duration, percent: u8, draw: u64) -> Duration {
    let nanos = u64::try_from(nominal.as_nanos()).unwrap_or(u64::MAX);
    let span = u128::from(nanos) * u128::from(percent.min(100)) / 100;
    let cut = (u128::from(draw) * (span + 1)) >> 64;
    nominal.saturating_sub(Duration::from_nanos(cut as u64))
}

/// A seed that differs between calls and processes.
fn random_seed() -> u64 {
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u128(Instant::now().elapsed().as_nanos());
    hasher.finish()
}

/// The next number of the SplitMix64 sequence at `state`.
fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap_and_gives_up_after_max_attempts() {
        let policy = ReconnectPolicy::new(None, Some(5))
            .with_backoff(Duration::from_millis(10), Duration::from_millis(40))
            .with_jitter_percent(0);
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
        // time at all had passed, so the policy gives up there, jitter or
        // not.
        for jitter in [0, 50, 100] {
            let policy = ReconnectPolicy::new(Some(Duration::from_secs(3)), None)
                .with_backoff(Duration::from_secs(1), Duration::from_secs(60))
                .with_jitter_percent(jitter);
            let mut b = policy.start();
            assert!(b.next_delay().is_some_and(|d| d <= Duration::from_secs(1)));
            assert!(b.next_delay().is_some_and(|d| d <= Duration::from_secs(2)));
            assert_eq!(b.next_delay(), None, "jitter {jitter}%");
        }
    }

    #[test]
    fn jittered_delays_stay_within_their_bounds_and_spread_out() {
        let policy = ReconnectPolicy::new(None, Some(8))
            .with_backoff(Duration::from_millis(100), Duration::from_millis(800));
        assert_eq!(policy.jitter_percent, DEFAULT_JITTER_PERCENT);
        let nominal = [100, 200, 400, 800, 800, 800, 800, 800].map(Duration::from_millis);
        let mut firsts = Vec::new();
        for seed in 0..200 {
            let mut b = policy.start_seeded(seed);
            let delays: Vec<_> = std::iter::from_fn(|| b.next_delay()).collect();
            assert_eq!(delays.len(), nominal.len());
            for (d, n) in delays.iter().zip(nominal) {
                assert!(
                    *d <= n && *d >= n / 2,
                    "seed {seed}: {d:?} outside [{:?}, {n:?}]",
                    n / 2
                );
            }
            firsts.push(delays[0]);
        }
        // Clients that lost the server together come back spread over the
        // whole window, not in lockstep.
        let low = firsts
            .iter()
            .filter(|d| **d < Duration::from_millis(75))
            .count();
        let high = firsts
            .iter()
            .filter(|d| **d >= Duration::from_millis(75))
            .count();
        assert!(low >= 50 && high >= 50, "{low} low vs {high} high of 200");
        let mut distinct = firsts.clone();
        distinct.sort();
        distinct.dedup();
        assert!(
            distinct.len() > 150,
            "{} distinct first delays",
            distinct.len()
        );
    }

    #[test]
    fn the_same_seed_gives_the_same_delays_and_full_jitter_may_reach_zero() {
        let policy = ReconnectPolicy::default().with_jitter_percent(100);
        let run = |seed| {
            let mut b = policy.start_seeded(seed);
            (0..6).map(|_| b.next_delay()).collect::<Vec<_>>()
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        assert_eq!(
            jittered(Duration::from_secs(1), 100, u64::MAX),
            Duration::from_nanos(0)
        );
        assert_eq!(
            jittered(Duration::from_secs(1), 100, 0),
            Duration::from_secs(1)
        );
        assert_eq!(
            jittered(Duration::from_secs(1), 250, u64::MAX),
            Duration::ZERO
        );
        assert_eq!(
            jittered(Duration::from_secs(1), 0, u64::MAX),
            Duration::from_secs(1)
        );
        assert_eq!(jittered(Duration::MAX, 50, 0), Duration::MAX);
    }
}
