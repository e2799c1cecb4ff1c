//! Exponential backoff with jitter for retrying a delivery.

use std::time::Duration;

use rand::Rng;

/// How a failing delivery is retried.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Tries in total (the first one included) before a notification is dead-lettered.
    pub max_attempts: u32,
    /// Delay before the first retry; it doubles with each further retry.
    pub base_delay: Duration,
    /// Longest delay between two tries.
    pub max_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        // About 12 tries over roughly an hour: long enough to ride out an SMTP restart or
        // a receiver's deploy, short enough that an admin hears about a dead channel.
        Self {
            max_attempts: 12,
            base_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(15 * 60),
        }
    }
}

impl RetryPolicy {
    /// The delay before the next try after `failed_attempts` failed tries (1 = the first
    /// try failed), or `None` when no try is left.
    ///
    /// "Equal jitter": a uniformly random delay in `[d/2, d]` where
    /// `d = min(max_delay, base_delay * 2^(failed_attempts - 1))`, so retries of many
    /// notifications that failed together spread out instead of hammering the channel
    /// in lockstep, while each retry still waits at least half its nominal delay.
    pub fn next_delay(&self, failed_attempts: u32, rng: &mut impl Rng) -> Option<Duration> {
        if failed_attempts == 0 || failed_attempts >= self.max_attempts {
            return None;
        }
        let nominal = self.nominal_delay(failed_attempts);
        let half = nominal / 2;
        let extra_ms = (nominal - half).as_millis() as u64;
        let jitter = if extra_ms == 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(rng.gen_range(0..=extra_ms))
        };
        Some(half + jitter)
    }

    /// The delay before jitter: `min(max_delay, base_delay * 2^(failed_attempts - 1))`.
    pub fn nominal_delay(&self, failed_attempts: u32) -> Duration {
        let exp = failed_attempts.saturating_sub(1).min(31);
        self.base_delay
            .checked_mul(1u32 << exp)
            .unwrap_or(self.max_delay)
            .min(self.max_delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    #[test]
    fn gives_up_after_max_attempts() {
        let p = RetryPolicy {
            max_attempts: 3,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        assert!(p.next_delay(1, &mut rng).is_some());
        assert!(p.next_delay(2, &mut rng).is_some());
        assert_eq!(p.next_delay(3, &mut rng), None);
        assert_eq!(p.next_delay(0, &mut rng), None);
    }

    #[test]
    fn doubles_then_caps() {
        let p = RetryPolicy {
            max_attempts: 100,
            base_delay: Duration::from_millis(100),
            max_delay: Duration::from_secs(1),
        };
        assert_eq!(p.nominal_delay(1), Duration::from_millis(100));
        assert_eq!(p.nominal_delay(2), Duration::from_millis(200));
        assert_eq!(p.nominal_delay(4), Duration::from_millis(800));
        assert_eq!(p.nominal_delay(5), Duration::from_secs(1));
        assert_eq!(p.nominal_delay(99), Duration::from_secs(1));
    }

    proptest! {
        #[test]
        fn delay_is_within_half_and_full_nominal(
            base_ms in 1u64..10_000,
            max_ms in 1u64..10_000_000,
            attempt in 1u32..200,
            seed: u64,
        ) {
            let p = RetryPolicy {
                max_attempts: 200,
                base_delay: Duration::from_millis(base_ms),
                max_delay: Duration::from_millis(max_ms),
            };
            let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
            let nominal = p.nominal_delay(attempt);
            prop_assert!(nominal <= p.max_delay);
            if attempt < p.max_attempts {
                let d = p.next_delay(attempt, &mut rng).expect("a try is left");
                prop_assert!(d >= nominal / 2, "{d:?} < half of {nominal:?}");
                prop_assert!(d <= nominal, "{d:?} > {nominal:?}");
            }
            // The nominal delay never shrinks as tries accumulate.
            prop_assert!(p.nominal_delay(attempt + 1) >= nominal);
        }
    }
}
