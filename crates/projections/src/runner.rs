//! The projection runner: one task per read model, each following the global order from
//! its own checkpoint.
//!
//! A read model and its checkpoint live together behind one lock ([`Projected`]), so a
//! batch of events and the checkpoint that covers it become visible to queries at once,
//! and a snapshot always pairs a model with exactly the events folded into it. Events at
//! or below the checkpoint are skipped, which makes re-delivery harmless. A projection
//! whose `apply` fails stops with a [`ProjectionError`] naming the event; the others go on.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use parking_lot::{Mutex, RwLock, RwLockReadGuard};
use serde::Serialize;
use serde::de::DeserializeOwned;
use store::{EventStore, Position, RecordedEvent, StoreError, SubscriptionMessage};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::snapshot::SnapshotStore;

/// A read model built by folding the global order of events.
///
/// `apply` must leave the model unchanged when it returns an error, so that a failed
/// projection still holds exactly the events up to its checkpoint.
pub trait ReadModel:
    Default + Clone + Serialize + DeserializeOwned + Send + Sync + 'static
{
    /// Live outputs fed after each batch that are not part of the model's state (they are
    /// neither snapshotted nor reset by a rebuild), such as availability feeds.
    type Feeds: Default + Send + Sync + 'static;

    /// Stable name: the key of the checkpoint and snapshot.
    const NAME: &'static str;

    /// Version of the model's snapshot shape; a snapshot of another version is discarded
    /// and the model rebuilt from zero.
    const SNAPSHOT_VERSION: u32;

    /// Folds one event into the model.
    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ApplyError>;

    /// Called once after each batch, still under the write lock, so that what it publishes
    /// is exactly the state queries see.
    fn end_batch(&mut self, _feeds: &Self::Feeds, _checkpoint: Position) {}
}

/// Why a read model could not fold an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ApplyError(pub String);

/// A projection stopped on an event: which one, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize)]
#[error(
    "projection {projection} failed on event {event_type} at {stream}@{version} \
     (position {position}): {reason}"
)]
pub struct ProjectionError {
    /// The projection that stopped.
    pub projection: &'static str,
    /// Stream of the event it could not apply.
    pub stream: String,
    /// Version of that event in its stream.
    pub version: u64,
    /// Global position of that event.
    pub position: u64,
    /// Type of that event.
    pub event_type: String,
    /// What went wrong.
    pub reason: String,
}

/// Where a projection is in its life.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ProjectionState {
    /// Not running (not started yet, or stopped).
    Stopped,
    /// Replaying history up to the head the store had when it subscribed.
    CatchingUp,
    /// Caught up; applying events as they are appended.
    Live,
    /// Stopped on an event it could not apply, or on a store failure it cannot retry.
    Failed {
        /// What happened.
        error: String,
    },
}

/// A snapshot of one projection's progress.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ProjectionStatus {
    /// The projection's name.
    pub name: &'static str,
    /// The last global position folded into its model.
    pub checkpoint: Position,
    /// Where it is in its life.
    pub state: ProjectionState,
    /// Events applied since this process started it (skipped duplicates not counted).
    pub applied: u64,
}

/// Progress published to waiters after every batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Progress {
    /// The last position folded into the model.
    pub checkpoint: Position,
    /// Whether the projection is not running (failed or stopped): waiters give up.
    pub halted: bool,
}

/// A model and the position it has folded up to, changed together.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub(crate) struct Versioned<M> {
    pub checkpoint: Position,
    pub model: M,
}

/// One read model shared between its projection task and every query.
pub struct Projected<M: ReadModel> {
    /// The model with its checkpoint. The projection holds the write lock for one batch
    /// (bounded by [`RunnerOptions::batch_size`]); queries hold the read lock briefly.
    state: RwLock<Versioned<M>>,
    /// Live outputs of the model, fed under the write lock after each batch.
    feeds: M::Feeds,
    /// Checkpoint and failure, for read-your-writes waiters.
    progress: watch::Sender<Progress>,
    /// Lifecycle state, for status reports.
    lifecycle: Mutex<ProjectionState>,
    /// Events applied since start, for status reports and tests of resumption.
    applied: AtomicU64,
}

impl<M: ReadModel> Projected<M> {
    pub(crate) fn new(initial: Versioned<M>) -> Self {
        let checkpoint = initial.checkpoint;
        Self {
            state: RwLock::new(initial),
            feeds: M::Feeds::default(),
            progress: watch::channel(Progress {
                checkpoint,
                halted: false,
            })
            .0,
            lifecycle: Mutex::new(ProjectionState::Stopped),
            applied: AtomicU64::new(0),
        }
    }

    /// Runs `f` on the model under a short read lock.
    pub fn read<R>(&self, f: impl FnOnce(&M) -> R) -> R {
        f(&self.state.read().model)
    }

    /// The model and its checkpoint under a read lock; hold it only briefly.
    pub(crate) fn guard(&self) -> RwLockReadGuard<'_, Versioned<M>> {
        self.state.read()
    }

    /// The live outputs of the model.
    pub fn feeds(&self) -> &M::Feeds {
        &self.feeds
    }

    /// The last position folded into the model.
    pub fn checkpoint(&self) -> Position {
        self.state.read().checkpoint
    }

    /// The projection's progress and state.
    pub fn status(&self) -> ProjectionStatus {
        ProjectionStatus {
            name: M::NAME,
            checkpoint: self.checkpoint(),
            state: self.lifecycle.lock().clone(),
            applied: self.applied.load(Ordering::Relaxed),
        }
    }

    pub(crate) fn progress(&self) -> watch::Receiver<Progress> {
        self.progress.subscribe()
    }

    /// Replaces the model wholesale (used by a rebuild and by tests that damage it).
    pub(crate) fn replace(&self, next: Versioned<M>) {
        let checkpoint = next.checkpoint;
        {
            let mut state = self.state.write();
            *state = next;
            let Versioned { model, checkpoint } = &mut *state;
            model.end_batch(&self.feeds, *checkpoint);
        }
        self.progress.send_modify(|p| p.checkpoint = checkpoint);
    }

    /// Changes the model in place without moving the checkpoint: for tests and tools that
    /// deliberately damage a read model to see the audit report it.
    #[doc(hidden)]
    pub fn tamper(&self, f: impl FnOnce(&mut M)) {
        f(&mut self.state.write().model)
    }

    fn set_lifecycle(&self, state: ProjectionState) {
        let halted = matches!(
            state,
            ProjectionState::Failed { .. } | ProjectionState::Stopped
        );
        *self.lifecycle.lock() = state;
        self.progress.send_modify(|p| p.halted = halted);
    }

    /// Applies a batch and moves the checkpoint, all under one write lock. Returns how many
    /// events were applied, or the error of the first event that failed (the events before
    /// it stay applied and the checkpoint covers exactly them).
    pub(crate) fn apply_batch(&self, batch: &[RecordedEvent]) -> Result<u64, ProjectionError> {
        let mut applied = 0;
        let mut failure = None;
        let checkpoint = {
            let mut state = self.state.write();
            let Versioned { model, checkpoint } = &mut *state;
            for event in batch {
                if event.position <= *checkpoint {
                    continue;
                }
                if let Err(e) = model.apply(event) {
                    failure = Some(ProjectionError {
                        projection: M::NAME,
                        stream: event.stream.to_string(),
                        version: event.version,
                        position: event.position.0,
                        event_type: event.event_type.clone(),
                        reason: e.0,
                    });
                    break;
                }
                *checkpoint = event.position;
                applied += 1;
            }
            model.end_batch(&self.feeds, *checkpoint);
            *checkpoint
        };
        self.applied.fetch_add(applied, Ordering::Relaxed);
        self.progress.send_modify(|p| p.checkpoint = checkpoint);
        match failure {
            Some(e) => Err(e),
            None => Ok(applied),
        }
    }
}

/// How projections batch and snapshot.
#[derive(Debug, Clone)]
pub struct RunnerOptions {
    /// Most events applied under one write lock.
    pub batch_size: usize,
    /// Take a durable snapshot after this many applied events...
    pub snapshot_every_events: u64,
    /// ...or after this long with unsnapshotted changes, whichever comes first.
    pub snapshot_interval: Duration,
    /// Wait before resubscribing after a retriable store error.
    pub retry_delay: Duration,
}

impl Default for RunnerOptions {
    fn default() -> Self {
        Self {
            batch_size: 1024,
            snapshot_every_events: 200_000,
            snapshot_interval: Duration::from_secs(30),
            retry_delay: Duration::from_millis(500),
        }
    }
}

/// What the runner needs to drive one projection, whatever its model type.
pub(crate) trait Driven: Send + Sync {
    fn name(&self) -> &'static str;
    fn status(&self) -> ProjectionStatus;
    fn progress(&self) -> watch::Receiver<Progress>;
    fn spawn(
        &self,
        store: Arc<dyn EventStore>,
        snapshots: Option<SnapshotStore>,
        options: RunnerOptions,
        stop: watch::Receiver<bool>,
    ) -> JoinHandle<()>;
    /// Forgets the model and its checkpoint (and its snapshot).
    fn reset(&self, snapshots: Option<&SnapshotStore>) -> Result<(), crate::ReadSideError>;
}

impl<M: ReadModel> Driven for Arc<Projected<M>> {
    fn name(&self) -> &'static str {
        M::NAME
    }

    fn status(&self) -> ProjectionStatus {
        Projected::status(self)
    }

    fn progress(&self) -> watch::Receiver<Progress> {
        Projected::progress(self)
    }

    fn spawn(
        &self,
        store: Arc<dyn EventStore>,
        snapshots: Option<SnapshotStore>,
        options: RunnerOptions,
        stop: watch::Receiver<bool>,
    ) -> JoinHandle<()> {
        let shared = self.clone();
        shared.set_lifecycle(ProjectionState::CatchingUp);
        tokio::spawn(async move {
            let mut in_flight = None;
            let outcome = run(
                &shared,
                store,
                snapshots.as_ref(),
                &options,
                stop,
                &mut in_flight,
            )
            .await;
            if let Some(done) = in_flight {
                report_snapshot::<M>(done.await);
            }
            if let Some(snapshots) = &snapshots {
                // A final snapshot on the way out: a clean restart replays nothing.
                if let Err(e) = write_snapshot(&shared, snapshots).await {
                    tracing::warn!(projection = M::NAME, error = %e, "final snapshot failed");
                }
            }
            match outcome {
                Ok(()) => shared.set_lifecycle(ProjectionState::Stopped),
                Err(error) => {
                    tracing::error!(projection = M::NAME, %error, "projection stopped");
                    shared.set_lifecycle(ProjectionState::Failed { error });
                }
            }
        })
    }

    fn reset(&self, snapshots: Option<&SnapshotStore>) -> Result<(), crate::ReadSideError> {
        if let Some(snapshots) = snapshots {
            snapshots.delete(M::NAME)?;
        }
        self.applied.store(0, Ordering::Relaxed);
        self.replace(Versioned::default());
        Ok(())
    }
}

/// Follows the global order until told to stop, the store shuts down, or an event fails.
async fn run<M: ReadModel>(
    shared: &Arc<Projected<M>>,
    store: Arc<dyn EventStore>,
    snapshots: Option<&SnapshotStore>,
    options: &RunnerOptions,
    mut stop: watch::Receiver<bool>,
    in_flight: &mut Option<JoinHandle<Result<(), crate::ReadSideError>>>,
) -> Result<(), String> {
    let mut since_snapshot = 0u64;
    let mut last_snapshot = Instant::now();
    let mut batch: Vec<RecordedEvent> = Vec::with_capacity(options.batch_size);
    'subscribe: loop {
        let mut subscription = store.subscribe_all(shared.checkpoint());
        loop {
            let first = tokio::select! {
                biased;
                _ = stop.wait_for(|s| *s) => return Ok(()),
                next = subscription.next() => next,
            };
            let mut drained = Drained::default();
            drained.take(&mut batch, first);
            // Drain whatever is ready right now into the same batch, without waiting.
            while batch.len() < options.batch_size && drained.failure.is_none() && !drained.ended {
                match subscription.next().now_or_never() {
                    Some(item) => drained.take(&mut batch, item),
                    None => break,
                }
            }
            let Drained {
                caught_up,
                failure,
                ended,
            } = drained;
            if !batch.is_empty() {
                let result = shared.apply_batch(&batch);
                batch.clear();
                match result {
                    Ok(n) => since_snapshot += n,
                    Err(e) => return Err(e.to_string()),
                }
            }
            if caught_up {
                shared.set_lifecycle(ProjectionState::Live);
            }
            if let Some(snapshots) = snapshots {
                let due = since_snapshot >= options.snapshot_every_events
                    || (since_snapshot > 0 && last_snapshot.elapsed() >= options.snapshot_interval);
                // One snapshot at a time, written in the background: the projection
                // keeps applying events while it is serialised.
                if due && in_flight.as_ref().is_none_or(|h| h.is_finished()) {
                    if let Some(done) = in_flight.take() {
                        report_snapshot::<M>(done.await);
                    }
                    *in_flight = Some(spawn_snapshot(shared, snapshots));
                    since_snapshot = 0;
                    last_snapshot = Instant::now();
                }
            }
            if ended {
                return Ok(());
            }
            if let Some(e) = failure {
                if !e.is_retriable() {
                    return Err(format!("event store failed: {e}"));
                }
                tracing::warn!(projection = M::NAME, error = %e, "subscription failed; retrying");
                tokio::select! {
                    _ = stop.wait_for(|s| *s) => return Ok(()),
                    _ = tokio::time::sleep(options.retry_delay) => {}
                }
                continue 'subscribe;
            }
        }
    }
}

/// What a drain of the subscription met besides events.
#[derive(Default)]
struct Drained {
    /// The subscription passed the head it had when it started: the model is live.
    caught_up: bool,
    /// The subscription failed (and has ended).
    failure: Option<StoreError>,
    /// The subscription ended: the store shut down.
    ended: bool,
}

impl Drained {
    fn take(
        &mut self,
        batch: &mut Vec<RecordedEvent>,
        item: Option<Result<SubscriptionMessage, StoreError>>,
    ) {
        match item {
            Some(Ok(SubscriptionMessage::Event(e))) => batch.push(e),
            Some(Ok(SubscriptionMessage::CaughtUp)) => self.caught_up = true,
            Some(Err(e)) => self.failure = Some(e),
            None => self.ended = true,
        }
    }
}

/// Writes the model and its checkpoint as one snapshot, off the async threads.
async fn write_snapshot<M: ReadModel>(
    shared: &Arc<Projected<M>>,
    snapshots: &SnapshotStore,
) -> Result<(), crate::ReadSideError> {
    spawn_snapshot(shared, snapshots)
        .await
        .map_err(|e| crate::ReadSideError::Snapshot(format!("snapshot task failed: {e}")))?
}

/// Copies the model with its checkpoint (under the read lock, fast) and serialises and
/// writes the copy on a blocking thread (slow, outside the lock).
fn spawn_snapshot<M: ReadModel>(
    shared: &Arc<Projected<M>>,
    snapshots: &SnapshotStore,
) -> JoinHandle<Result<(), crate::ReadSideError>> {
    let copy: Versioned<M> = shared.state.read().clone();
    let snapshots = snapshots.clone();
    tokio::task::spawn_blocking(move || snapshots.save(M::NAME, M::SNAPSHOT_VERSION, &copy))
}

fn report_snapshot<M: ReadModel>(
    outcome: Result<Result<(), crate::ReadSideError>, tokio::task::JoinError>,
) {
    let error = match outcome {
        Ok(Ok(())) => return,
        Ok(Err(e)) => e.to_string(),
        Err(e) => format!("snapshot task failed: {e}"),
    };
    // The model is intact in memory; the next snapshot will try again.
    tracing::warn!(projection = M::NAME, %error, "snapshot failed");
}

/// Loads a model from its snapshot, or starts from zero when there is none (or it is of
/// another version, or unreadable: rebuilding is always safe).
pub(crate) fn load<M: ReadModel>(snapshots: Option<&SnapshotStore>) -> Versioned<M> {
    let Some(snapshots) = snapshots else {
        return Versioned::default();
    };
    match snapshots.load::<Versioned<M>>(M::NAME, M::SNAPSHOT_VERSION) {
        Ok(Some(v)) => v,
        Ok(None) => Versioned::default(),
        Err(e) => {
            tracing::warn!(projection = M::NAME, error = %e, "snapshot unusable; rebuilding");
            Versioned::default()
        }
    }
}
