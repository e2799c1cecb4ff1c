//! Latency histograms, error counts and the purchase-to-subscriber delay.

use std::{collections::BTreeMap, time::Duration, time::Instant};

use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies in microseconds, from 1 µs to 10 minutes at 3 significant digits.
#[derive(Clone)]
pub struct Latencies(Histogram<u64>);

impl Default for Latencies {
    fn default() -> Self {
        Self::new()
    }
}

impl Latencies {
    /// An empty histogram.
    pub fn new() -> Self {
        // Bounds are constants that hdrhistogram accepts, so this cannot fail.
        Self(Histogram::new_with_bounds(1, 600_000_000, 3).expect("valid histogram bounds"))
    }

    /// Records one latency (saturating at the upper bound).
    pub fn record(&mut self, latency: Duration) {
        let micros = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.0.saturating_record(micros.max(1));
    }

    /// Records a latency of zero (an update seen before the acknowledgement).
    pub fn record_zero(&mut self) {
        self.0.saturating_record(1);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: &Latencies) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    /// Number of samples.
    pub fn len(&self) -> u64 {
        self.0.len()
    }

    /// Whether no sample was recorded.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Percentiles in milliseconds.
    pub fn summary(&self) -> LatencySummary {
        let ms = |micros: u64| micros as f64 / 1000.0;
        LatencySummary {
            count: self.0.len(),
            p50_ms: ms(self.0.value_at_quantile(0.50)),
            p90_ms: ms(self.0.value_at_quantile(0.90)),
            p99_ms: ms(self.0.value_at_quantile(0.99)),
            p999_ms: ms(self.0.value_at_quantile(0.999)),
            max_ms: ms(self.0.max()),
        }
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct LatencySummary {
    /// Number of samples.
    pub count: u64,
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
    /// Largest sample.
    pub max_ms: f64,
}

/// Responses by outcome: `OK` or an error code.
pub type Outcomes = BTreeMap<String, u64>;

/// Adds `other` into `into`.
pub fn merge_outcomes(into: &mut Outcomes, other: &Outcomes) {
    for (code, count) in other {
        *into.entry(code.clone()).or_default() += count;
    }
}

/// What one subscriber saw: when each update arrived and the tickets sold it showed.
#[derive(Debug, Clone, Default)]
pub struct SubscriberLog {
    /// (arrival, tickets sold over every watched event) per update, in arrival order.
    pub updates: Vec<(Instant, u64)>,
    /// Tickets available over every watched event in the last update.
    pub last_available: Option<u64>,
    /// Why the subscription ended early, if it did.
    pub error: Option<String>,
}

/// Delays from purchase acknowledgements to a subscriber's view catching up with them.
///
/// `acks` are (acknowledgement time, tickets) of the successful purchases on the events the
/// subscriber watches, in any order. A purchase is answered only once the read side shows
/// it, so after the k-th acknowledgement (in time order) the read side shows at least the
/// cumulative tickets of acknowledgements 1..=k. The delay of the k-th is from its
/// acknowledgement to the first update whose sold count reaches that sum (zero when such an
/// update arrived earlier). Acknowledgements the subscriber never caught up with are
/// counted in the returned `missed`.
pub fn update_delays(
    acks: &mut [(Instant, u64)],
    log: &SubscriberLog,
    into: &mut Latencies,
) -> u64 {
    acks.sort_by_key(|(at, _)| *at);
    let mut cumulative = 0u64;
    let mut next_update = 0usize;
    let mut missed = 0u64;
    for (acked_at, tickets) in acks.iter() {
        cumulative += tickets;
        while next_update < log.updates.len() && log.updates[next_update].1 < cumulative {
            next_update += 1;
        }
        match log.updates.get(next_update) {
            Some((seen_at, _)) => match seen_at.checked_duration_since(*acked_at) {
                Some(delay) => into.record(delay),
                None => into.record_zero(),
            },
            None => missed += 1,
        }
    }
    missed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_in_milliseconds() {
        let mut latencies = Latencies::new();
        for ms in 1..=100 {
            latencies.record(Duration::from_millis(ms));
        }
        let summary = latencies.summary();
        assert_eq!(summary.count, 100);
        assert!((summary.p50_ms - 50.0).abs() < 0.1, "{summary:?}");
        assert!((summary.p99_ms - 99.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_ms - 100.0).abs() < 0.1, "{summary:?}");
    }

    #[test]
    fn delays_follow_the_cumulative_count() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        // Acks at 10 ms (2 tickets) and 20 ms (1 ticket), given out of order.
        let mut acks = vec![(at(20), 1), (at(10), 2)];
        // The subscriber sees 1 sold at 5 ms, 2 sold at 15 ms, 3 sold at 50 ms.
        let log = SubscriberLog {
            updates: vec![(at(5), 1), (at(15), 2), (at(50), 3)],
            last_available: Some(0),
            error: None,
        };
        let mut delays = Latencies::new();
        assert_eq!(update_delays(&mut acks, &log, &mut delays), 0);
        let summary = delays.summary();
        assert_eq!(summary.count, 2);
        assert!((summary.p50_ms - 5.0).abs() < 0.1, "{summary:?}");
        assert!((summary.max_ms - 30.0).abs() < 0.1, "{summary:?}");
    }

    #[test]
    fn an_update_before_the_ack_counts_as_zero_and_missing_ones_as_missed() {
        let t0 = Instant::now();
        let at = |ms| t0 + Duration::from_millis(ms);
        let mut acks = vec![(at(10), 1), (at(20), 1)];
        let log = SubscriberLog {
            updates: vec![(at(8), 1)],
            last_available: Some(1),
            error: None,
        };
        let mut delays = Latencies::new();
        assert_eq!(update_delays(&mut acks, &log, &mut delays), 1);
        assert_eq!(delays.len(), 1);
        assert!(delays.summary().max_ms < 0.01);
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    /// The definition, computed the slow way: for each acknowledgement, the first update
    /// (in arrival order) whose sold count reaches the cumulative tickets acknowledged by
    /// then.
    fn naive(acks: &[(u64, u64)], updates: &[(u64, u64)]) -> (Vec<u64>, u64) {
        let mut sorted = acks.to_vec();
        sorted.sort_by_key(|(at, _)| *at);
        let mut delays = Vec::new();
        let mut missed = 0;
        let mut cumulative = 0;
        for (at, tickets) in sorted {
            cumulative += tickets;
            match updates.iter().find(|(_, sold)| *sold >= cumulative) {
                Some((seen, _)) => delays.push(seen.saturating_sub(at)),
                None => missed += 1,
            }
        }
        (delays, missed)
    }

    proptest! {
        #[test]
        fn matches_the_definition(
            acks in proptest::collection::vec((0u64..1000, 1u64..5), 0..60),
            steps in proptest::collection::vec((0u64..50, 0u64..6), 0..60),
        ) {
            // Updates arrive in time order with a sold count that never decreases.
            let mut updates = Vec::new();
            let (mut at, mut sold) = (0, 0);
            for (dt, dsold) in steps {
                at += dt;
                sold += dsold;
                updates.push((at, sold));
            }
            let t0 = Instant::now();
            let ms = |v: u64| t0 + Duration::from_millis(v);
            let mut timed: Vec<(Instant, u64)> = acks.iter().map(|(a, t)| (ms(*a), *t)).collect();
            let log = SubscriberLog {
                updates: updates.iter().map(|(a, s)| (ms(*a), *s)).collect(),
                last_available: None,
                error: None,
            };
            let mut fast = Latencies::new();
            let missed = update_delays(&mut timed, &log, &mut fast);
            let (expected, expected_missed) = naive(&acks, &updates);
            prop_assert_eq!(missed, expected_missed);
            prop_assert_eq!(fast.len(), expected.len() as u64);
            let mut slow = Latencies::new();
            for delay in expected {
                if delay == 0 { slow.record_zero() } else { slow.record(Duration::from_millis(delay)) }
            }
            prop_assert_eq!(fast.summary(), slow.summary());
        }
    }
}
