//! Finds, spawns and supervises the inventory actors: at most one per event in this
//! process.
//!
//! * **Find or spawn.** A fast map of running actors answers most lookups; a miss takes the
//!   event's slot lock, so that two concurrent first commands spawn one actor, not two.
//! * **Unknown events.** An actor spawned for a command that is not a creation refuses to
//!   start on an empty stream; the caller gets `NOT_FOUND` and no actor is left behind.
//! * **Supervision.** Every actor is linked to a supervisor actor. When one stops (idle, or
//!   an empty stream after a refused creation) it is forgotten; when one fails, it is
//!   forgotten and started again at once, recovering its state (and the expiry timers of
//!   its holds) from the store. Callers waiting on the failed actor get `UNAVAILABLE`.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use domain::EventId;
use parking_lot::Mutex;
use ractor::{
    Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, ActorStatus, SpawnErr,
    SupervisionEvent,
};
use store::EventStore;

use crate::actor::{
    ActorConfig, ActorNotices, InventoryActor, InventoryArgs, InventoryMsg, StartupError,
};
use crate::clock::Clock;
use crate::error::CommandError;

/// The event's slot: held while an actor for the event is being spawned.
type Slot = Arc<tokio::sync::Mutex<Option<ActorRef<InventoryMsg>>>>;

/// What the registry and its supervisor share.
struct Shared {
    /// Where the actors' streams live.
    store: Arc<dyn EventStore>,
    /// The actors' clock.
    clock: Arc<dyn Clock>,
    /// The actors' tuning.
    config: Arc<ActorConfig>,
    /// Where the actors' notices go.
    notices: ActorNotices,
    /// Running actors, for lookups that take no async lock.
    running: Mutex<HashMap<EventId, ActorRef<InventoryMsg>>>,
    /// One slot per event being looked up or running; spawning happens under its lock.
    slots: Mutex<HashMap<EventId, Slot>>,
    /// Which event each running actor serves, for supervision events.
    events_by_actor: Mutex<HashMap<ActorId, EventId>>,
    /// Set by shutdown: no new actor is spawned, failed ones are not restarted.
    stopped: AtomicBool,
}

/// The inventory actors of this process. Cheap to clone.
#[derive(Clone)]
pub struct Registry {
    /// State shared with the supervisor.
    shared: Arc<Shared>,
    /// Parent of every inventory actor.
    supervisor: ActorRef<()>,
}

impl Registry {
    /// Starts the supervisor; actors are spawned on first use, and send their notices to
    /// `notices`.
    pub async fn start(
        store: Arc<dyn EventStore>,
        clock: Arc<dyn Clock>,
        config: ActorConfig,
        notices: ActorNotices,
    ) -> Result<Self, CommandError> {
        let shared = Arc::new(Shared {
            store,
            clock,
            config: Arc::new(config),
            notices,
            running: Mutex::new(HashMap::new()),
            slots: Mutex::new(HashMap::new()),
            events_by_actor: Mutex::new(HashMap::new()),
            stopped: AtomicBool::new(false),
        });
        let (supervisor, _) = Actor::spawn(None, Supervisor, shared.clone())
            .await
            .map_err(|e| CommandError::Unavailable(format!("starting the supervisor: {e}")))?;
        Ok(Self { shared, supervisor })
    }

    /// The running actor of an event, spawning (and recovering) it if needed.
    ///
    /// With `allow_new` false, an event whose stream is empty is `NOT_FOUND` and no actor
    /// stays behind.
    pub async fn actor_for(
        &self,
        event_id: EventId,
        allow_new: bool,
    ) -> Result<ActorRef<InventoryMsg>, CommandError> {
        if let Some(actor) = self.shared.running.lock().get(&event_id)
            && is_running(actor)
        {
            return Ok(actor.clone());
        }
        find_or_spawn(
            &self.shared,
            self.supervisor.get_cell(),
            event_id,
            allow_new,
        )
        .await
    }

    /// How many inventory actors are running.
    pub fn loaded(&self) -> usize {
        self.shared
            .running
            .lock()
            .values()
            .filter(|a| is_running(a))
            .count()
    }

    /// Whether an actor for the event is running.
    pub fn is_loaded(&self, event_id: EventId) -> bool {
        self.shared
            .running
            .lock()
            .get(&event_id)
            .is_some_and(is_running)
    }

    /// Stops every actor and the supervisor without waiting. Callers whose commands were
    /// still waiting for their append get `UNAVAILABLE` (the command may or may not have
    /// been stored; a retry with the same key is safe).
    pub fn stop(&self) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.supervisor.stop_children(Some("shutting down".into()));
        self.supervisor.stop(Some("shutting down".into()));
    }

    /// Stops every actor and waits (at most `timeout`) until they have stopped.
    pub async fn shutdown(&self, timeout: std::time::Duration) {
        self.shared.stopped.store(true, Ordering::SeqCst);
        self.supervisor
            .stop_children_and_wait(Some("shutting down".into()), Some(timeout))
            .await;
        self.supervisor.stop(Some("shutting down".into()));
    }
}

fn is_running(actor: &ActorRef<InventoryMsg>) -> bool {
    matches!(
        actor.get_status(),
        ActorStatus::Running | ActorStatus::Starting
    )
}

async fn find_or_spawn(
    shared: &Arc<Shared>,
    supervisor: ActorCell,
    event_id: EventId,
    allow_new: bool,
) -> Result<ActorRef<InventoryMsg>, CommandError> {
    loop {
        if shared.stopped.load(Ordering::SeqCst) {
            return Err(CommandError::Unavailable(
                "the command side is shutting down".into(),
            ));
        }
        let slot = shared.slots.lock().entry(event_id).or_default().clone();
        let mut guard = slot.lock().await;
        let current = shared
            .slots
            .lock()
            .get(&event_id)
            .is_some_and(|s| Arc::ptr_eq(s, &slot));
        if !current {
            // The slot was dropped while we waited (a failed spawn): start over.
            continue;
        }
        if let Some(actor) = guard.as_ref()
            && is_running(actor)
        {
            return Ok(actor.clone());
        }
        let args = InventoryArgs {
            event_id,
            store: shared.store.clone(),
            clock: shared.clock.clone(),
            config: shared.config.clone(),
            notices: shared.notices.clone(),
            allow_new,
        };
        match Actor::spawn_linked(None, InventoryActor, args, supervisor.clone()).await {
            Ok((actor, _)) => {
                shared
                    .events_by_actor
                    .lock()
                    .insert(actor.get_id(), event_id);
                shared.running.lock().insert(event_id, actor.clone());
                *guard = Some(actor.clone());
                return Ok(actor);
            }
            Err(e) => {
                *guard = None;
                let mut slots = shared.slots.lock();
                if slots.get(&event_id).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    slots.remove(&event_id);
                }
                return Err(spawn_error(event_id, e));
            }
        }
    }
}

fn spawn_error(event_id: EventId, e: SpawnErr) -> CommandError {
    if let SpawnErr::StartupFailed(inner) = &e
        && let Some(startup) = inner.downcast_ref::<StartupError>()
    {
        return match startup {
            StartupError::NotFound(_) => {
                CommandError::Rejected(domain::Rejection::not_found("event", event_id))
            }
            StartupError::Store(s) => CommandError::from(s.clone()),
        };
    }
    CommandError::Unavailable(format!("starting the actor of event {event_id}: {e}"))
}

/// Parent of the inventory actors.
struct Supervisor;

impl Supervisor {
    /// Forgets a stopped or failed actor; returns its event.
    fn forget(shared: &Shared, cell: &ActorCell) -> Option<EventId> {
        let event_id = shared.events_by_actor.lock().remove(&cell.get_id())?;
        let mut running = shared.running.lock();
        if running
            .get(&event_id)
            .is_some_and(|a| a.get_id() == cell.get_id())
        {
            running.remove(&event_id);
        }
        drop(running);
        let mut slots = shared.slots.lock();
        let removable = slots.get(&event_id).is_some_and(|slot| {
            slot.try_lock()
                .is_ok_and(|guard| guard.as_ref().is_none_or(|a| a.get_id() == cell.get_id()))
        });
        if removable {
            // Nobody is spawning a successor (we hold the map lock, so nobody can start
            // to): the slot can go. If somebody is, they reuse the slot and replace the dead
            // actor themselves.
            slots.remove(&event_id);
        }
        Some(event_id)
    }
}

impl Actor for Supervisor {
    type Msg = ();
    type State = Arc<Shared>;
    type Arguments = Arc<Shared>;

    async fn pre_start(
        &self,
        _myself: ActorRef<()>,
        shared: Arc<Shared>,
    ) -> Result<Arc<Shared>, ActorProcessingErr> {
        Ok(shared)
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<()>,
        event: SupervisionEvent,
        shared: &mut Arc<Shared>,
    ) -> Result<(), ActorProcessingErr> {
        match event {
            SupervisionEvent::ActorTerminated(cell, _, reason) => {
                if let Some(event_id) = Self::forget(shared, &cell) {
                    tracing::debug!(event = %event_id, ?reason, "inventory actor stopped");
                }
            }
            SupervisionEvent::ActorFailed(cell, error) => {
                if let Some(event_id) = Self::forget(shared, &cell) {
                    tracing::warn!(event = %event_id, %error, "inventory actor failed; restarting");
                    metrics::counter!("inventory_actor_restarts").increment(1);
                    let shared = shared.clone();
                    let supervisor = myself.get_cell();
                    tokio::spawn(async move {
                        if let Err(e) = find_or_spawn(&shared, supervisor, event_id, false).await {
                            tracing::error!(event = %event_id, error = %e, "restarting inventory actor failed");
                        }
                    });
                }
            }
            _ => {}
        }
        Ok(())
    }
}
