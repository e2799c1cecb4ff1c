//! One delivery worker per channel: takes due notifications from the outbox, delivers up
//! to `concurrency` of them at once, and records each outcome (delivered, retry later with
//! backoff, or dead letter).
//!
//! Workers share nothing but the database, so a channel that is down or slow only delays
//! its own rows; the planner and the other channels go on.

use std::collections::HashSet;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures::FutureExt;
use tokio::sync::{Notify, watch};
use tokio::task::JoinSet;

use crate::backoff::RetryPolicy;
use crate::channel::{Channel, DeliveryError};
use crate::db::{Db, now_ms};
use crate::metrics as m;
use crate::outbox::{self, ChannelKind, PendingDelivery};

/// Settings of one worker.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Retry schedule and budget.
    pub retry: RetryPolicy,
    /// Most deliveries in flight at once on this channel.
    pub concurrency: usize,
    /// Longest sleep between two looks at the outbox when nothing wakes the worker (a
    /// safety net: planning and admin retries wake it at once).
    pub idle_poll: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            concurrency: 8,
            idle_poll: Duration::from_secs(5),
        }
    }
}

/// Runs the delivery loop of `channel` until `shutdown` turns true, then waits for the
/// deliveries in flight (bounded by the channel's own timeouts) and records them, so a
/// clean stop never causes a duplicate.
pub async fn run(
    channel: Arc<dyn Channel>,
    db: Db,
    config: WorkerConfig,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let kind = channel.kind();
    let concurrency = config.concurrency.max(1);
    let mut in_flight: JoinSet<(PendingDelivery, Result<(), DeliveryError>)> = JoinSet::new();
    let mut in_flight_ids: HashSet<i64> = HashSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let mut sleep_for = config.idle_poll;
        let free = concurrency - in_flight.len();
        if free > 0 {
            let exclude = in_flight_ids.clone();
            let now = now_ms();
            let fetched = db
                .call(move |conn| {
                    let due = outbox::due(conn, kind, now, free, &exclude)?;
                    let next = if due.len() < free {
                        outbox::next_due_after(conn, kind, now)?
                    } else {
                        None
                    };
                    Ok((due, next))
                })
                .await;
            match fetched {
                Ok((due, next)) => {
                    if let Some(next) = next {
                        let wait = Duration::from_millis((next - now).max(1) as u64);
                        sleep_for = sleep_for.min(wait);
                    }
                    for delivery in due {
                        in_flight_ids.insert(delivery.id);
                        let channel = channel.clone();
                        in_flight.spawn(async move {
                            // A panicking channel is a bug; it counts as a failed try so
                            // the row is retried (and eventually dead-lettered), never
                            // stuck in flight.
                            let result = AssertUnwindSafe(channel.deliver(&delivery))
                                .catch_unwind()
                                .await
                                .unwrap_or_else(|_| {
                                    Err(DeliveryError::Transient("channel panicked".into()))
                                });
                            (delivery, result)
                        });
                    }
                }
                Err(e) => {
                    tracing::error!(channel = %kind, error = %e, "cannot read the outbox");
                    sleep_for = Duration::from_secs(1);
                }
            }
        }
        tokio::select! {
            Some(joined) = in_flight.join_next(), if !in_flight.is_empty() => {
                record(&db, kind, &config.retry, joined, &mut in_flight_ids).await;
            }
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep_for), if in_flight.len() < concurrency => {}
            _ = shutdown.changed() => {}
        }
    }
    while let Some(joined) = in_flight.join_next().await {
        record(&db, kind, &config.retry, joined, &mut in_flight_ids).await;
    }
}

async fn record(
    db: &Db,
    kind: ChannelKind,
    retry: &RetryPolicy,
    joined: Result<(PendingDelivery, Result<(), DeliveryError>), tokio::task::JoinError>,
    in_flight_ids: &mut HashSet<i64>,
) {
    let (delivery, result) = match joined {
        Ok(done) => done,
        Err(e) => {
            // Only cancellation gets here (panics are caught in the task); the row stays
            // pending for the next run.
            tracing::error!(channel = %kind, error = %e, "delivery task ended abnormally");
            return;
        }
    };
    let id = delivery.id;
    let outcome = match result {
        Ok(()) => {
            metrics::counter!(m::SENT, "channel" => kind.as_str()).increment(1);
            db.call(move |conn| outbox::mark_delivered(conn, id, now_ms()))
                .await
        }
        Err(error) => {
            metrics::counter!(m::FAILED, "channel" => kind.as_str()).increment(1);
            let failed_attempts = delivery.attempts.saturating_add(1);
            let retry_in = match &error {
                DeliveryError::Transient(_) => {
                    retry.next_delay(failed_attempts, &mut rand::thread_rng())
                }
                DeliveryError::Permanent(_) => None,
            };
            match retry_in {
                Some(_) => {
                    metrics::counter!(m::RETRIED, "channel" => kind.as_str()).increment(1);
                    tracing::debug!(channel = %kind, id, attempt = failed_attempts, %error, "delivery failed, will retry");
                }
                None => {
                    metrics::counter!(m::DEAD_LETTERED, "channel" => kind.as_str()).increment(1);
                    tracing::warn!(channel = %kind, id, attempt = failed_attempts, %error, "delivery dead-lettered");
                }
            }
            let retry_at = retry_in.map(|d| now_ms() + d.as_millis() as i64);
            let message = error.to_string();
            db.call(move |conn| outbox::mark_failed(conn, id, &message, retry_at))
                .await
        }
    };
    if let Err(e) = outcome {
        // The row stays pending with its old state: it will be tried again, which can
        // at worst repeat a delivery (at least once), never lose one.
        tracing::error!(channel = %kind, id, error = %e, "cannot record a delivery outcome");
    }
    in_flight_ids.remove(&id);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{NotificationKind, PlannedNotification};
    use parking_lot::Mutex;
    use std::collections::HashMap;
    use uuid::Uuid;

    /// A channel whose receiving side is scripted per recipient: fail transiently the
    /// first `n` times, refuse for good, hang forever, or accept.
    struct Scripted {
        kind: ChannelKind,
        transient_failures: HashMap<String, u32>,
        attempts: Mutex<HashMap<String, u32>>,
        accepted: Mutex<Vec<String>>,
    }

    impl Scripted {
        fn new(kind: ChannelKind, transient_failures: HashMap<String, u32>) -> Arc<Self> {
            Arc::new(Self {
                kind,
                transient_failures,
                attempts: Mutex::default(),
                accepted: Mutex::default(),
            })
        }
    }

    #[async_trait::async_trait]
    impl Channel for Scripted {
        fn kind(&self) -> ChannelKind {
            self.kind
        }
        async fn deliver(&self, d: &PendingDelivery) -> Result<(), DeliveryError> {
            let attempt = {
                let mut a = self.attempts.lock();
                let n = a.entry(d.recipient.clone()).or_default();
                *n += 1;
                *n
            };
            if d.recipient.starts_with("hang") {
                futures::future::pending::<()>().await;
            }
            if d.recipient.starts_with("panic") {
                panic!("a bug in a channel");
            }
            if d.recipient.starts_with("refuse") {
                return Err(DeliveryError::Permanent("mailbox unknown".into()));
            }
            let fail = self
                .transient_failures
                .get(&d.recipient)
                .copied()
                .unwrap_or(0);
            if attempt <= fail {
                return Err(DeliveryError::Transient(format!("down (try {attempt})")));
            }
            self.accepted.lock().push(d.recipient.clone());
            Ok(())
        }
    }

    fn plan(db: &Db, channel: ChannelKind, recipients: &[String]) {
        let planned: Vec<_> = recipients
            .iter()
            .map(|r| PlannedNotification {
                event_id: Uuid::from_u128(1),
                kind: NotificationKind::OrderConfirmed,
                channel,
                recipient: r.clone(),
                context: serde_json::json!({}),
                due_at_ms: 0,
                inventory_id: None,
                order_id: None,
            })
            .collect();
        db.call_blocking(|conn| outbox::insert_planned(conn, &planned, 0))
            .expect("plan");
    }

    fn config(max_attempts: u32) -> WorkerConfig {
        WorkerConfig {
            retry: RetryPolicy {
                max_attempts,
                base_delay: Duration::from_millis(2),
                max_delay: Duration::from_millis(20),
            },
            concurrency: 4,
            idle_poll: Duration::from_millis(50),
        }
    }

    async fn settle(db: &Db, channel: ChannelKind) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        loop {
            let counts = db.call(|conn| outbox::counts(conn)).await.expect("counts");
            if !counts.contains_key(&(channel, "pending".to_string())) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "still pending: {counts:?}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn retries_until_accepted_then_dead_letters_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("n.db")).expect("open");
        let mut recipients: Vec<String> = (0..40).map(|i| format!("ok{i}")).collect();
        recipients.extend([
            "flaky".to_string(),
            "hopeless".into(),
            "refuse".into(),
            "panic".into(),
        ]);
        plan(&db, ChannelKind::Email, &recipients);
        let channel = Scripted::new(
            ChannelKind::Email,
            [("flaky".to_string(), 3), ("hopeless".to_string(), 1000)].into(),
        );
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(
            channel.clone(),
            db.clone(),
            config(5),
            Arc::new(Notify::new()),
            stopped,
        ));
        settle(&db, ChannelKind::Email).await;
        stop.send(true).expect("stop");
        task.await.expect("worker");

        let mut accepted = channel.accepted.lock().clone();
        accepted.sort();
        let mut expected: Vec<String> = (0..40).map(|i| format!("ok{i}")).collect();
        expected.push("flaky".into());
        expected.sort();
        assert_eq!(accepted, expected, "each accepted exactly once");
        let attempts = channel.attempts.lock().clone();
        assert_eq!(attempts["flaky"], 4);
        assert_eq!(attempts["hopeless"], 5, "bounded by max_attempts");
        assert_eq!(attempts["refuse"], 1, "a permanent refusal is not retried");
        assert_eq!(
            attempts["panic"], 5,
            "a panicking channel is retried like a failure"
        );
        let dead = db
            .call(|conn| outbox::dead_letters(conn, 0, 10))
            .await
            .expect("dead");
        let mut dead: Vec<_> = dead
            .into_iter()
            .map(|d| (d.recipient, d.attempts))
            .collect();
        dead.sort();
        assert_eq!(
            dead,
            vec![
                ("hopeless".to_string(), 5),
                ("panic".to_string(), 5),
                ("refuse".to_string(), 1)
            ]
        );
    }

    #[tokio::test]
    async fn a_hanging_channel_does_not_hold_up_another() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("n.db")).expect("open");
        let hanging: Vec<String> = (0..20).map(|i| format!("hang{i}")).collect();
        let fine: Vec<String> = (0..50).map(|i| format!("ok{i}")).collect();
        plan(&db, ChannelKind::Email, &hanging);
        plan(&db, ChannelKind::Webhook, &fine);
        let stuck = Scripted::new(ChannelKind::Email, HashMap::new());
        let healthy = Scripted::new(ChannelKind::Webhook, HashMap::new());
        let (_stop, stopped) = watch::channel(false);
        let stuck_task = tokio::spawn(run(
            stuck.clone(),
            db.clone(),
            config(3),
            Arc::new(Notify::new()),
            stopped.clone(),
        ));
        let healthy_task = tokio::spawn(run(
            healthy.clone(),
            db.clone(),
            config(3),
            Arc::new(Notify::new()),
            stopped,
        ));
        settle(&db, ChannelKind::Webhook).await;
        assert_eq!(healthy.accepted.lock().len(), 50);
        // The stuck channel holds only its concurrency's worth of rows; the rest wait.
        assert_eq!(stuck.attempts.lock().len(), 4);
        stuck_task.abort();
        healthy_task.abort();
    }
}
