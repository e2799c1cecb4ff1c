//! The running notifier: the planner task that follows the store, one delivery worker per
//! channel, and [`Notifications`], the handle the API uses for in-app notifications,
//! webhook registrations and dead letters.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use store::{EventStore, Position, RecordedEvent, SubscriptionMessage};
use tokio::sync::{Notify, broadcast, watch};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::BroadcastStream;
use uuid::Uuid;

use crate::channel::Channel;
use crate::channel::email::{EmailChannel, SmtpConfig};
use crate::channel::in_app::{self, InAppChannel, InAppNotification};
use crate::channel::webhook::{self, WebhookChannel, WebhookRegistration};
use crate::db::{Db, now_ms};
use crate::error::NotifierError;
use crate::metrics as m;
use crate::outbox::{self, ChannelKind, DeadLetter, PlannedNotification};
use crate::planner::DomainPlanner;
use crate::templates::Templates;
use crate::worker::{self, WorkerConfig};

/// Turns one stored event into notifications, updating whatever state it keeps in the
/// notifier's database within the same transaction.
///
/// Called once per event in global order, inside the transaction that also stores the
/// planned notifications and the checkpoint, so a crash neither loses nor repeats its work.
pub trait Planner: Send + Sync + 'static {
    /// Plans the notifications `event` causes.
    fn plan(
        &self,
        tx: &rusqlite::Transaction<'_>,
        event: &RecordedEvent,
    ) -> Result<Vec<PlannedNotification>, NotifierError>;
}

/// Everything the notifier needs to run.
#[derive(Debug, Clone)]
pub struct NotifierConfig {
    /// The notifier's own SQLite file (checkpoint, outbox, in-app, webhooks).
    pub database: PathBuf,
    /// SMTP settings; `None` disables email (its notifications wait in the outbox).
    pub smtp: Option<SmtpConfig>,
    /// Email worker settings.
    pub email: WorkerConfig,
    /// Webhook worker settings.
    pub webhook: WorkerConfig,
    /// In-app worker settings.
    pub in_app: WorkerConfig,
    /// Longest wait for a webhook receiver.
    pub webhook_timeout: Duration,
    /// Most events planned in one transaction.
    pub plan_batch: usize,
    /// While the store grows faster than this many events a second (a sale is on), the
    /// planner takes at most [`NotifierConfig::burst_share`] of one core: notifications
    /// fall behind during the burst and catch up at full speed after it.
    pub burst_events_per_second: u64,
    /// The planner's share of one core during a burst (0 < share ≤ 1; 1 never holds back).
    pub burst_share: f64,
    /// How long before an event starts its reminders go out.
    pub reminder_lead: Duration,
}

impl NotifierConfig {
    /// Defaults around a database path.
    pub fn new(database: impl Into<PathBuf>) -> Self {
        Self {
            database: database.into(),
            smtp: None,
            email: WorkerConfig::default(),
            webhook: WorkerConfig::default(),
            in_app: WorkerConfig {
                concurrency: 4,
                ..WorkerConfig::default()
            },
            webhook_timeout: Duration::from_secs(10),
            plan_batch: 512,
            burst_events_per_second: 2_000,
            burst_share: 0.1,
            reminder_lead: Duration::from_secs(24 * 3600),
        }
    }
}

/// Starts notifiers.
pub struct Notifier;

impl Notifier {
    /// Opens the notifier's database and starts the planner (following `store` from the
    /// checkpoint, turning domain events into notifications) and one worker per channel.
    /// Returns once everything runs.
    pub async fn start(
        config: NotifierConfig,
        store: Arc<dyn EventStore>,
    ) -> Result<NotifierHandle, NotifierError> {
        let planner = Arc::new(DomainPlanner::new(config.reminder_lead));
        Self::start_with_planner(config, store, planner).await
    }

    /// [`Notifier::start`] with another planner.
    pub async fn start_with_planner(
        config: NotifierConfig,
        store: Arc<dyn EventStore>,
        planner: Arc<dyn Planner>,
    ) -> Result<NotifierHandle, NotifierError> {
        let path = config.database.clone();
        let db = tokio::task::spawn_blocking(move || Db::open(&path))
            .await
            .map_err(|e| NotifierError::Database(e.to_string()))??;
        let templates = Arc::new(Templates::new());
        let (feed, _) = broadcast::channel(1024);
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let wakes = Wakes::default();

        let mut channels: Vec<(Arc<dyn Channel>, WorkerConfig, Arc<Notify>)> = vec![
            (
                Arc::new(WebhookChannel::new(db.clone(), config.webhook_timeout)?),
                config.webhook.clone(),
                wakes.webhook.clone(),
            ),
            (
                Arc::new(InAppChannel::new(
                    db.clone(),
                    templates.clone(),
                    feed.clone(),
                )),
                config.in_app.clone(),
                wakes.in_app.clone(),
            ),
        ];
        match &config.smtp {
            Some(smtp) => channels.push((
                Arc::new(EmailChannel::new(smtp, templates.clone())?),
                config.email.clone(),
                wakes.email.clone(),
            )),
            None => {
                tracing::warn!("no SMTP server configured: email notifications wait in the outbox")
            }
        }

        let mut tasks = Vec::new();
        for (channel, worker_config, wake) in channels {
            let name = format!("{} worker", channel.kind());
            tasks.push((
                name,
                tokio::spawn(worker::run(
                    channel,
                    db.clone(),
                    worker_config,
                    wake,
                    shutdown_rx.clone(),
                )),
            ));
        }
        tasks.push((
            "metrics".to_string(),
            tokio::spawn(report_gauges(
                store.clone(),
                db.clone(),
                shutdown_rx.clone(),
            )),
        ));
        tasks.push((
            "planner".to_string(),
            tokio::spawn(run_planner(
                store.clone(),
                planner,
                db.clone(),
                PlannerPace {
                    batch: config.plan_batch.max(1),
                    burst_events_per_second: config.burst_events_per_second,
                    burst_share: config.burst_share.clamp(0.01, 1.0),
                },
                wakes.clone(),
                shutdown_rx,
            )),
        ));
        Ok(NotifierHandle {
            notifications: Notifications {
                db,
                feed,
                wakes,
                store,
            },
            shutdown: shutdown_tx,
            tasks,
        })
    }
}

/// Wakes a channel's worker when new work for it exists.
#[derive(Clone, Default)]
struct Wakes {
    email: Arc<Notify>,
    webhook: Arc<Notify>,
    in_app: Arc<Notify>,
}

impl Wakes {
    fn wake(&self, channel: ChannelKind) {
        match channel {
            ChannelKind::Email => self.email.notify_one(),
            ChannelKind::Webhook => self.webhook.notify_one(),
            ChannelKind::InApp => self.in_app.notify_one(),
        }
    }
}

/// A running notifier.
pub struct NotifierHandle {
    /// The query and admin interface.
    notifications: Notifications,
    /// Tells every task to stop.
    shutdown: watch::Sender<bool>,
    /// The tasks, named, to report why each ended.
    tasks: Vec<(String, JoinHandle<()>)>,
}

impl NotifierHandle {
    /// The interface to in-app notifications, webhooks and dead letters.
    pub fn notifications(&self) -> Notifications {
        self.notifications.clone()
    }

    /// Stops planning, lets deliveries in flight finish and be recorded, then closes the
    /// database.
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        for (name, task) in self.tasks {
            if let Err(e) = task.await {
                tracing::error!(task = %name, error = %e, "notifier task ended abnormally");
            }
        }
        self.notifications.db.close();
    }
}

/// How fast the planner goes.
#[derive(Clone, Copy, Debug)]
struct PlannerPace {
    /// Most events per transaction.
    batch: usize,
    /// Store growth (events a second) above which a burst is on.
    burst_events_per_second: u64,
    /// Share of one core the planner takes during a burst.
    burst_share: f64,
}

/// Measures how fast the store grows, from the positions the planner sees, to tell a
/// burst (a sale under way) from quiet times.
struct BurstGauge {
    /// Position and time of the window's start.
    since: (u64, std::time::Instant),
    /// Events a second over the last full window.
    rate: f64,
}

impl BurstGauge {
    /// The window over which the rate is measured.
    const WINDOW: Duration = Duration::from_millis(500);

    fn new(position: u64) -> Self {
        Self {
            since: (position, std::time::Instant::now()),
            rate: 0.0,
        }
    }

    /// Records the store's head now; returns the current rate.
    fn observe(&mut self, head: u64) -> f64 {
        let elapsed = self.since.1.elapsed();
        if elapsed >= Self::WINDOW {
            self.rate = head.saturating_sub(self.since.0) as f64 / elapsed.as_secs_f64();
            self.since = (head, std::time::Instant::now());
        }
        self.rate
    }
}

/// Plans notifications from the store's global order, one transaction per batch. During a
/// burst of sales it yields the cores to them (see [`PlannerPace`]): after each batch it
/// pauses long enough that planning takes only its share of one core.
async fn run_planner(
    store: Arc<dyn EventStore>,
    planner: Arc<dyn Planner>,
    db: Db,
    pace: PlannerPace,
    wakes: Wakes,
    mut shutdown: watch::Receiver<bool>,
) {
    let batch = pace.batch;
    let mut gauge = BurstGauge::new(0);
    let mut failures: u32 = 0;
    'resubscribe: loop {
        if *shutdown.borrow() {
            return;
        }
        let checkpoint = match db.call(|conn| outbox::checkpoint(conn)).await {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "cannot read the notifier checkpoint");
                if pause(&mut shutdown, &mut failures).await {
                    return;
                }
                continue;
            }
        };
        let mut subscription = store.subscribe_all(Position(checkpoint));
        loop {
            let first = tokio::select! {
                _ = shutdown.changed() => return,
                next = subscription.next() => next,
            };
            let mut events: Vec<RecordedEvent> = Vec::new();
            let mut pending = first;
            loop {
                match pending {
                    None => {
                        if events.is_empty() {
                            tracing::info!("event store subscription ended");
                            return;
                        }
                        break;
                    }
                    Some(Err(e)) => {
                        tracing::error!(error = %e, "event store subscription failed");
                        if !events.is_empty() {
                            break;
                        }
                        if pause(&mut shutdown, &mut failures).await {
                            return;
                        }
                        continue 'resubscribe;
                    }
                    Some(Ok(SubscriptionMessage::CaughtUp)) => {}
                    Some(Ok(SubscriptionMessage::Event(e))) => events.push(e),
                }
                if events.len() >= batch {
                    break;
                }
                // Take what is already buffered, without waiting: a burst becomes one
                // transaction, a lone event is planned at once.
                match subscription.next().now_or_never() {
                    Some(next) => pending = next,
                    None => break,
                }
            }
            if events.is_empty() {
                continue;
            }
            let last = events.last().map_or(checkpoint, |e| e.position.0);
            let planner = planner.clone();
            let started = std::time::Instant::now();
            let planned = db
                .call(move |conn| {
                    let tx = conn.transaction()?;
                    let now = now_ms();
                    let mut channels = BTreeSet::new();
                    let mut inserted = 0;
                    for event in &events {
                        let plan = planner.plan(&tx, event)?;
                        inserted += outbox::insert_planned(&tx, &plan, now)?;
                        channels.extend(plan.iter().map(|p| p.channel));
                    }
                    outbox::set_checkpoint(&tx, last)?;
                    tx.commit()?;
                    Ok((channels, inserted))
                })
                .await;
            match planned {
                Ok((channels, inserted)) => {
                    failures = 0;
                    metrics::counter!(m::PLANNED).increment(inserted as u64);
                    metrics::gauge!(m::CHECKPOINT).set(last as f64);
                    for channel in channels {
                        wakes.wake(channel);
                    }
                    let head = store.head().await.map_or(last, |p| p.0);
                    let rate = gauge.observe(head);
                    if pace.burst_share < 1.0 && rate > pace.burst_events_per_second as f64 {
                        // Busy `share` of the time: rest (1 - share) / share as long as
                        // this batch took.
                        let rest = started
                            .elapsed()
                            .mul_f64((1.0 - pace.burst_share) / pace.burst_share);
                        metrics::counter!(m::YIELDED_MS).increment(rest.as_millis() as u64);
                        tokio::select! {
                            _ = shutdown.changed() => return,
                            () = tokio::time::sleep(rest) => {}
                        }
                    }
                }
                Err(e) => {
                    // Nothing of the batch was committed: resubscribe from the checkpoint
                    // and plan it again.
                    tracing::error!(error = %e, "cannot store planned notifications");
                    if pause(&mut shutdown, &mut failures).await {
                        return;
                    }
                    continue 'resubscribe;
                }
            }
        }
    }
}

/// Publishes the lag behind the store's head and the outbox depth per channel, once a
/// second: measured apart from the planner so a stuck planner shows a growing lag.
async fn report_gauges(store: Arc<dyn EventStore>, db: Db, mut shutdown: watch::Receiver<bool>) {
    loop {
        if let Ok(head) = store.head().await {
            let counts = db
                .call(|conn| Ok((outbox::checkpoint(conn)?, outbox::counts(conn)?)))
                .await;
            if let Ok((checkpoint, counts)) = counts {
                metrics::gauge!(m::LAG).set(head.0.saturating_sub(checkpoint) as f64);
                for channel in ChannelKind::ALL {
                    let pending = counts
                        .get(&(channel, "pending".to_string()))
                        .copied()
                        .unwrap_or(0);
                    metrics::gauge!(m::PENDING, "channel" => channel.as_str()).set(pending as f64);
                }
            }
        }
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

/// Waits before retrying after a failure (exponential, capped at 30 s). Returns true when
/// shutdown was asked for meanwhile.
async fn pause(shutdown: &mut watch::Receiver<bool>, failures: &mut u32) -> bool {
    *failures = failures.saturating_add(1);
    let delay = Duration::from_millis(100u64 << (*failures).min(8)).min(Duration::from_secs(30));
    tokio::select! {
        _ = shutdown.changed() => true,
        _ = tokio::time::sleep(delay) => *shutdown.borrow(),
    }
}

/// The notifier's query and admin interface; cheap to clone.
#[derive(Clone)]
pub struct Notifications {
    /// The notifier's database.
    db: Db,
    /// Live feed of new in-app notifications.
    feed: broadcast::Sender<InAppNotification>,
    /// Wakes a worker after an admin retry.
    wakes: Wakes,
    /// The store followed, for the lag.
    store: Arc<dyn EventStore>,
}

impl Notifications {
    /// The in-app notifications of `user_id`, newest first: at most `limit` (1..=100),
    /// older than the notification `before` when given.
    pub async fn list_in_app(
        &self,
        user_id: Uuid,
        before: Option<i64>,
        limit: usize,
    ) -> Result<Vec<InAppNotification>, NotifierError> {
        self.db
            .call(move |conn| in_app::list(conn, user_id, before, limit))
            .await
    }

    /// Marks an in-app notification of `user_id` read; `NotFound` if it is not theirs.
    pub async fn mark_read(&self, user_id: Uuid, id: i64) -> Result<(), NotifierError> {
        self.db
            .call(move |conn| in_app::mark_read(conn, user_id, id))
            .await
    }

    /// How many unread in-app notifications `user_id` has.
    pub async fn unread_count(&self, user_id: Uuid) -> Result<u64, NotifierError> {
        self.db
            .call(move |conn| in_app::unread_count(conn, user_id))
            .await
    }

    /// New in-app notifications of `user_id` as they are stored. A subscriber that falls
    /// far behind skips what it missed (it can list them) rather than slow anyone down.
    pub fn subscribe_in_app(
        &self,
        user_id: Uuid,
    ) -> impl futures::Stream<Item = InAppNotification> + Send + 'static {
        BroadcastStream::new(self.feed.subscribe()).filter_map(move |item| async move {
            match item {
                Ok(n) if n.user_id == user_id => Some(n),
                _ => None,
            }
        })
    }

    /// Registers `url` for the notifications of the ticketed event `inventory_id`.
    /// The caller checks that the acting user organizes that event.
    pub async fn register_webhook(
        &self,
        inventory_id: Uuid,
        url: String,
    ) -> Result<WebhookRegistration, NotifierError> {
        self.db
            .call(move |conn| webhook::register(conn, inventory_id, &url))
            .await
    }

    /// The webhooks registered for `inventory_id`.
    pub async fn list_webhooks(
        &self,
        inventory_id: Uuid,
    ) -> Result<Vec<WebhookRegistration>, NotifierError> {
        self.db
            .call(move |conn| webhook::list(conn, inventory_id))
            .await
    }

    /// Removes a webhook registration.
    pub async fn remove_webhook(&self, id: Uuid) -> Result<(), NotifierError> {
        self.db.call(move |conn| webhook::remove(conn, id)).await
    }

    /// Dead letters with id above `after`, oldest first, at most `limit` (1..=1000).
    pub async fn dead_letters(
        &self,
        after: i64,
        limit: usize,
    ) -> Result<Vec<DeadLetter>, NotifierError> {
        if limit == 0 || limit > 1000 {
            return Err(NotifierError::InvalidInput(format!(
                "page size must be 1..=1000, not {limit}"
            )));
        }
        self.db
            .call(move |conn| outbox::dead_letters(conn, after, limit))
            .await
    }

    /// Puts a dead letter back in its channel's queue with a fresh budget of tries.
    pub async fn retry_dead_letter(&self, id: i64) -> Result<(), NotifierError> {
        let channel = self
            .db
            .call(move |conn| outbox::retry_dead(conn, id, now_ms()))
            .await?;
        self.wakes.wake(channel);
        Ok(())
    }

    /// The global position up to which events have been planned.
    pub async fn checkpoint(&self) -> Result<Position, NotifierError> {
        self.db
            .call(|conn| outbox::checkpoint(conn).map(Position))
            .await
    }

    /// Events stored but not yet planned: the store's head minus the checkpoint.
    pub async fn lag(&self) -> Result<u64, NotifierError> {
        let head = self.store.head().await?;
        let checkpoint = self.checkpoint().await?;
        Ok(head.0.saturating_sub(checkpoint.0))
    }

    /// Number of outbox rows per channel and status.
    pub async fn outbox_counts(
        &self,
    ) -> Result<std::collections::BTreeMap<(ChannelKind, String), u64>, NotifierError> {
        self.db.call(|conn| outbox::counts(conn)).await
    }
}

#[cfg(test)]
mod pace_tests {
    use super::*;

    #[test]
    fn the_burst_gauge_measures_store_growth_over_its_window() {
        let mut gauge = BurstGauge::new(0);
        assert_eq!(gauge.observe(1_000), 0.0, "no full window yet");
        std::thread::sleep(BurstGauge::WINDOW);
        let rate = gauge.observe(10_000);
        // 10,000 events over a little more than half a second.
        assert!(rate > 5_000.0 && rate <= 20_000.0, "{rate}");
        std::thread::sleep(BurstGauge::WINDOW);
        assert_eq!(gauge.observe(10_000), 0.0, "quiet again");
    }
}
