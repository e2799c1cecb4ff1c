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
use crate::outbox::{self, ChannelKind, Outcome, PendingDelivery};

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

/// Deliveries of one task and the outcome of each.
type Attempted = Vec<(PendingDelivery, Result<(), DeliveryError>)>;

/// Runs the delivery loop of `channel` until `shutdown` turns true, then waits for the
/// deliveries in flight (bounded by the channel's own timeouts) and records them, so a
/// clean stop never causes a duplicate.
///
/// Up to `concurrency` tasks run at once, each with one delivery, or with up to
/// [`Channel::batch`] for a channel that takes batches. Outcomes that are ready together
/// are recorded in one transaction.
pub async fn run(
    channel: Arc<dyn Channel>,
    db: Db,
    config: WorkerConfig,
    wake: Arc<Notify>,
    mut shutdown: watch::Receiver<bool>,
) {
    let kind = channel.kind();
    let batch = channel.batch().max(1);
    let capacity = config.concurrency.max(1).saturating_mul(batch);
    let mut in_flight: JoinSet<Attempted> = JoinSet::new();
    let mut in_flight_ids: HashSet<i64> = HashSet::new();
    loop {
        if *shutdown.borrow() {
            break;
        }
        let mut sleep_for = config.idle_poll;
        let free = capacity - in_flight_ids.len();
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
                    let mut due = due.into_iter().peekable();
                    while due.peek().is_some() {
                        let deliveries: Vec<PendingDelivery> = due.by_ref().take(batch).collect();
                        in_flight_ids.extend(deliveries.iter().map(|d| d.id));
                        let channel = channel.clone();
                        in_flight.spawn(attempt(channel, deliveries));
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
                let mut ready = vec![joined];
                while let Some(more) = in_flight.try_join_next() {
                    ready.push(more);
                }
                record(&db, kind, &config.retry, ready, &mut in_flight_ids).await;
            }
            _ = wake.notified() => {}
            _ = tokio::time::sleep(sleep_for), if in_flight_ids.len() < capacity => {}
            _ = shutdown.changed() => {}
        }
    }
    while let Some(joined) = in_flight.join_next().await {
        record(&db, kind, &config.retry, vec![joined], &mut in_flight_ids).await;
    }
}

/// Tries each of `deliveries` once through `channel`.
async fn attempt(channel: Arc<dyn Channel>, deliveries: Vec<PendingDelivery>) -> Attempted {
    if deliveries.len() > 1 {
        let outcomes = AssertUnwindSafe(channel.deliver_all(&deliveries))
            .catch_unwind()
            .await;
        if let Ok(outcomes) = outcomes
            && outcomes.len() == deliveries.len()
        {
            return deliveries.into_iter().zip(outcomes).collect();
        }
        // A batch that panicked (or miscounted) is tried again one by one, so that one
        // bad delivery fails alone; those it had already delivered may be delivered
        // again (at least once).
        tracing::error!(channel = %channel.kind(), size = deliveries.len(), "a delivery batch failed; delivering one by one");
    }
    let mut attempted = Vec::with_capacity(deliveries.len());
    for delivery in deliveries {
        // A panicking channel is a bug; it counts as a failed try so the row is retried
        // (and eventually dead-lettered), never stuck in flight.
        let result = AssertUnwindSafe(channel.deliver(&delivery))
            .catch_unwind()
            .await
            .unwrap_or_else(|_| Err(DeliveryError::Transient("channel panicked".into())));
        attempted.push((delivery, result));
    }
    attempted
}

/// Records the outcomes of finished tasks, in one transaction.
async fn record(
    db: &Db,
    kind: ChannelKind,
    retry: &RetryPolicy,
    finished: Vec<Result<Attempted, tokio::task::JoinError>>,
    in_flight_ids: &mut HashSet<i64>,
) {
    let mut outcomes = Vec::new();
    for joined in finished {
        let attempted = match joined {
            Ok(done) => done,
            Err(e) => {
                // Only cancellation gets here (panics are caught in the task); its rows
                // stay pending for the next run.
                tracing::error!(channel = %kind, error = %e, "delivery task ended abnormally");
                continue;
            }
        };
        for (delivery, result) in attempted {
            outcomes.push((delivery.id, outcome(kind, retry, &delivery, result)));
        }
    }
    if outcomes.is_empty() {
        return;
    }
    let ids: Vec<i64> = outcomes.iter().map(|(id, _)| *id).collect();
    let stored = db
        .call(move |conn| outbox::record_outcomes(conn, &outcomes, now_ms()))
        .await;
    if let Err(e) = stored {
        // The rows stay pending with their old state: they will be tried again, which
        // can at worst repeat a delivery (at least once), never lose one.
        tracing::error!(channel = %kind, rows = ids.len(), error = %e, "cannot record delivery outcomes");
    }
    for id in ids {
        in_flight_ids.remove(&id);
    }
}

/// What to store for one attempt: delivered, retried later with backoff, or dead.
fn outcome(
    kind: ChannelKind,
    retry: &RetryPolicy,
    delivery: &PendingDelivery,
    result: Result<(), DeliveryError>,
) -> Outcome {
    let error = match result {
        Ok(()) => {
            metrics::counter!(m::SENT, "channel" => kind.as_str()).increment(1);
            return Outcome::Delivered;
        }
        Err(error) => error,
    };
    metrics::counter!(m::FAILED, "channel" => kind.as_str()).increment(1);
    let id = delivery.id;
    let failed_attempts = delivery.attempts.saturating_add(1);
    let retry_in = match &error {
        DeliveryError::Transient(_) => retry.next_delay(failed_attempts, &mut rand::thread_rng()),
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
    Outcome::Failed {
        error: error.to_string(),
        retry_at_ms: retry_in.map(|d| now_ms() + d.as_millis() as i64),
    }
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
        /// What [`Channel::batch`] answers.
        batch: usize,
        /// Sizes of the batches handed to `deliver_all`.
        batches: Mutex<Vec<usize>>,
    }

    impl Scripted {
        fn new(kind: ChannelKind, transient_failures: HashMap<String, u32>) -> Arc<Self> {
            Arc::new(Self {
                kind,
                transient_failures,
                attempts: Mutex::default(),
                accepted: Mutex::default(),
                batch: 1,
                batches: Mutex::default(),
            })
        }

        fn batched(kind: ChannelKind, transient_failures: HashMap<String, u32>) -> Arc<Self> {
            let mut channel = Self::new(kind, transient_failures);
            Arc::get_mut(&mut channel).expect("unshared").batch = 16;
            channel
        }
    }

    #[async_trait::async_trait]
    impl Channel for Scripted {
        fn kind(&self) -> ChannelKind {
            self.kind
        }
        fn batch(&self) -> usize {
            self.batch
        }
        async fn deliver_all(
            &self,
            deliveries: &[PendingDelivery],
        ) -> Vec<Result<(), DeliveryError>> {
            self.batches.lock().push(deliveries.len());
            let mut outcomes = Vec::new();
            for d in deliveries {
                outcomes.push(self.deliver(d).await);
            }
            outcomes
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
        retries_then_dead_letters(Scripted::new, true).await;
    }

    #[tokio::test]
    async fn a_batch_channel_retries_and_dead_letters_each_delivery_alone() {
        let channel = retries_then_dead_letters(Scripted::batched, false).await;
        let batches = channel.batches.lock().clone();
        assert!(
            batches.iter().any(|&n| n > 1),
            "deliveries were handed over in batches: {batches:?}"
        );
        assert!(batches.iter().all(|&n| n <= 16), "{batches:?}");
    }

    #[tokio::test]
    async fn a_panicking_batch_is_delivered_one_by_one() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("n.db")).expect("open");
        let mut recipients: Vec<String> = (0..10).map(|i| format!("ok{i}")).collect();
        recipients.push("panic".into());
        plan(&db, ChannelKind::InApp, &recipients);
        let channel = Scripted::batched(ChannelKind::InApp, HashMap::new());
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(run(
            channel.clone(),
            db.clone(),
            config(3),
            Arc::new(Notify::new()),
            stopped,
        ));
        settle(&db, ChannelKind::InApp).await;
        stop.send(true).expect("stop");
        task.await.expect("worker");
        let mut accepted = channel.accepted.lock().clone();
        accepted.sort();
        accepted.dedup();
        let mut expected: Vec<String> = (0..10).map(|i| format!("ok{i}")).collect();
        expected.sort();
        assert_eq!(
            accepted, expected,
            "the good ones are delivered (at least once)"
        );
        let dead = db
            .call(|conn| outbox::dead_letters(conn, 0, 10))
            .await
            .expect("dead");
        let dead: Vec<_> = dead
            .into_iter()
            .map(|d| (d.recipient, d.attempts))
            .collect();
        assert_eq!(
            dead,
            vec![("panic".to_string(), 3)],
            "only the bad one fails"
        );
    }

    /// Forty good recipients, one flaky, one hopeless, one refused and (with `panicking`)
    /// one that makes the channel panic.
    async fn retries_then_dead_letters(
        make: fn(ChannelKind, HashMap<String, u32>) -> Arc<Scripted>,
        panicking: bool,
    ) -> Arc<Scripted> {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("n.db")).expect("open");
        let mut recipients: Vec<String> = (0..40).map(|i| format!("ok{i}")).collect();
        recipients.extend(["flaky".to_string(), "hopeless".into(), "refuse".into()]);
        if panicking {
            recipients.push("panic".into());
        }
        plan(&db, ChannelKind::Email, &recipients);
        let channel = make(
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
        let dead = db
            .call(|conn| outbox::dead_letters(conn, 0, 10))
            .await
            .expect("dead");
        let mut dead: Vec<_> = dead
            .into_iter()
            .map(|d| (d.recipient, d.attempts))
            .collect();
        dead.sort();
        let mut expected_dead = vec![("hopeless".to_string(), 5), ("refuse".to_string(), 1)];
        if panicking {
            assert_eq!(
                attempts["panic"], 5,
                "a panicking channel is retried like a failure"
            );
            expected_dead.push(("panic".to_string(), 5));
            expected_dead.sort();
        }
        assert_eq!(dead, expected_dead);
        channel
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
