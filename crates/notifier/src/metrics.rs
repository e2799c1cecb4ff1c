//! Names of the metrics the notifier records (with the `metrics` crate; the process that
//! runs the notifier installs the exporter).
//!
//! Counters carry a `channel` label (`email`, `webhook`, `in_app`).

/// Deliveries the channel accepted.
pub const SENT: &str = "notifier_sent_total";
/// Failed delivery attempts (each try that failed, retried or not).
pub const FAILED: &str = "notifier_failed_total";
/// Failed attempts that were scheduled for another try.
pub const RETRIED: &str = "notifier_retried_total";
/// Notifications given up on and listed as dead letters.
pub const DEAD_LETTERED: &str = "notifier_dead_lettered_total";
/// Notifications planned into the outbox.
pub const PLANNED: &str = "notifier_planned_total";
/// Counter: milliseconds the planner paused to leave the cores to a burst of sales.
pub const YIELDED_MS: &str = "notifier_yielded_milliseconds_total";
/// Gauge: events in the store the planner has not handled yet (head minus checkpoint).
pub const LAG: &str = "notifier_lag_events";
/// Gauge: the planner's checkpoint (global position).
pub const CHECKPOINT: &str = "notifier_checkpoint_position";
/// Gauge: notifications waiting in the outbox, per channel (`channel` label).
pub const PENDING: &str = "notifier_outbox_pending";
