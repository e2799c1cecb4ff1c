//! The inventory actor: one per ticketed event, the only writer of its stream.
//!
//! # Pipelining
//!
//! The actor keeps one in-memory [`Inventory`]: the durable state plus every event decided
//! but not yet durable (the *speculative* state). Each command is decided against it; its
//! events join the open batch together with the command's reply port. The handler never
//! awaits the store: batches go to the actor's appender task, so while appends are in
//! flight the actor keeps deciding, and the next batch fills up. The store's group commit
//! then shares one fsync among the batches of many events.
//!
//! When the store applies appends in the order they are queued
//! ([`EventStore::orders_appends`], true of the embedded store), up to
//! [`ActorConfig::appends_in_flight`] batches are in flight at once, each expecting the
//! version the one before leaves: the store's writer finds the next batch waiting when it
//! finishes a commit instead of waiting for the actor's turnaround. Otherwise one is.
//!
//! Every answer (success, rejection, or an idempotent replay) waits until everything it
//! was decided against is durable: a rejection such as `SOLD_OUT` may depend on holds
//! that are not durable yet.
//!
//! # Failure
//!
//! When an append fails or conflicts, nothing in it or after it is acknowledged. The actor
//! reloads its stream (in a spawned task again), and decides every unanswered command
//! again, in order. Idempotency keys make that safe when the failed append did commit: the
//! command finds its key and gets its first outcome with no new events. A command caught in
//! more than [`ActorConfig::max_retries`] failed appends is answered `CONFLICT` or
//! `UNAVAILABLE`, both retriable.
//!
//! # Expiry and idleness
//!
//! Live holds are indexed by expiry time; one timer is armed for the earliest one. When it
//! fires, every due hold is expired by an `ExpireHold` command from the platform. An actor
//! stops itself after [`ActorConfig::idle_timeout`] without commands, but never while it
//! has live holds (their expiry needs it) or work in flight.

use std::collections::{BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::aggregate::{Actor as DomainActor, Aggregate, Command, CommandMeta};
use domain::inventory::{Inventory, InventoryCommand, InventoryEvent, InventoryOutcome};
use domain::{EventId, IdempotencyKey, OrderId, Rejection};
use futures::StreamExt;
use futures::stream::FuturesOrdered;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use store::{
    AppendResult, EventStore, ExpectedVersion, MAX_APPEND_BYTES, MAX_EVENT_BYTES,
    MAX_EVENTS_PER_APPEND, Metadata, NewEvent, Position, StoreError, StreamName,
};

use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::codec;
use crate::error::{CommandError, Receipt};

/// What a command sent to an inventory actor answers.
pub type CommandReply = Result<Answered, CommandError>;

/// A command's durable answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answered {
    /// The outcome and the position to wait for.
    pub receipt: Receipt<InventoryOutcome>,
    /// The command wrote nothing: an idempotent retry answered from the record of its
    /// first attempt (whose effects may since have been followed by others).
    pub replayed: bool,
}

/// Tuning of inventory actors.
#[derive(Clone, Debug)]
pub struct ActorConfig {
    /// How long an actor without commands and without live holds stays loaded.
    pub idle_timeout: Duration,
    /// Most events in one append (at most the store's own limit).
    pub max_batch_events: usize,
    /// Most payload bytes in one append (at most the store's own limit).
    pub max_batch_bytes: usize,
    /// How many failed appends a command may be caught in before it is answered with a
    /// retriable error.
    pub max_retries: u32,
    /// Most batches in flight at once, on a store that orders appends (1 on any other).
    pub appends_in_flight: usize,
    /// While appends are in flight, the open batch goes to the store early only once it
    /// holds this many commands (a smaller one waits for the oldest append to finish): the
    /// store's writer then finds most of the next commit queued and checked when it
    /// finishes one, without the actor splitting it into many tiny appends.
    pub early_batch_commands: usize,
}

impl Default for ActorConfig {
    fn default() -> Self {
        Self {
            idle_timeout: Duration::from_secs(300),
            // As large as the store takes: under load, fewer and larger commits share the
            // fsync, and a batch only fills up while the previous one is being committed.
            max_batch_events: MAX_EVENTS_PER_APPEND,
            max_batch_bytes: MAX_APPEND_BYTES,
            max_retries: 3,
            // The ticket-war bench (BENCH_DEPTH, BENCH_EARLY) measured no difference on one
            // hot event between 1, 2 and 4 in flight on this machine (the turnaround it hides
            // is small next to the commit); two keep the writer supplied when it is not.
            appends_in_flight: 2,
            early_batch_commands: 64,
        }
    }
}

/// A question answered from the actor's state (which includes decided, not yet durable
/// events).
pub type ReadFn = Box<dyn FnOnce(&Inventory) + Send>;

/// Messages of the inventory actor.
pub enum InventoryMsg {
    /// Decide a command and answer once its events are durable.
    Execute {
        /// The command (shared: the caller keeps it to send it again if the actor stops
        /// with it inside, without copying it for every send).
        cmd: Arc<Command<InventoryCommand>>,
        /// Where the answer goes.
        reply: RpcReplyPort<CommandReply>,
    },
    /// Run a read-only question against the state.
    Read(ReadFn),
    /// Expire every hold whose time has come (sent by the actor's own timer, or by
    /// whoever wants expiries checked now).
    ExpireDue,
    /// An append finished (answers come in the order of the appends); `seq` names the
    /// batch, so that an answer from an appender given up on is never taken for another's.
    AppendDone {
        /// The batch's number.
        seq: u64,
        /// What the store said.
        result: Result<AppendResult, StoreError>,
    },
    /// The appender task stopped before the actor (the store panicked in an append): the
    /// batches in flight will not be answered.
    AppenderStopped,
    /// The reload task finished.
    Reloaded(Result<Box<Recovered>, StoreError>),
    /// Stop if idle for long enough (sent by the actor's own interval).
    IdleCheck,
    /// Fail on purpose, as a bug would: the supervisor restarts the actor from the store
    /// (operators and tests use it to check recovery).
    Crash,
}

/// What inventory actors tell the rest of the command side, besides their answers.
#[derive(Clone, Debug, Default)]
pub struct ActorNotices {
    /// Told the event's id whenever money it owes back became durable (a cancelled paid
    /// order, a payment that bought nothing), and when an actor recovers a state that still
    /// owes some: whoever pays refunds listens here.
    pub refunds_owed: Option<mpsc::UnboundedSender<EventId>>,
}

impl ActorNotices {
    fn refunds_owed(&self, event_id: EventId) {
        if let Some(tx) = &self.refunds_owed {
            // Nobody listening (shutting down): the next start finds the refunds again.
            let _ = tx.send(event_id);
        }
    }
}

/// The arguments an inventory actor is spawned with.
pub struct InventoryArgs {
    /// The event whose inventory this actor serialises.
    pub event_id: EventId,
    /// Where its stream lives.
    pub store: Arc<dyn EventStore>,
    /// What "now" is for expiries.
    pub clock: Arc<dyn Clock>,
    /// Tuning.
    pub config: Arc<ActorConfig>,
    /// Where the actor's notices go.
    pub notices: ActorNotices,
    /// Whether an empty stream is acceptable (the first command creates the event); when
    /// not, starting on an empty stream fails with [`StartupError::NotFound`].
    pub allow_new: bool,
}

/// Why an inventory actor did not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    /// The event's stream is empty and the command was not one that creates it.
    #[error("event {0} not found")]
    NotFound(EventId),
    /// Reading the stream failed.
    #[error("recovering the inventory failed: {0}")]
    Store(#[from] StoreError),
}

/// A state folded from the stream.
pub struct Recovered {
    /// The folded state.
    inventory: Inventory,
    /// Version of the last event (`None`: empty stream).
    version: Option<u64>,
    /// Position of the last event.
    position: Position,
}

/// The actor (stateless; everything is in [`InventoryState`]).
pub struct InventoryActor;

/// A command waiting for its answer.
struct Entry {
    /// The command, kept to decide it again after a failed append.
    cmd: Arc<Command<InventoryCommand>>,
    /// Where the answer goes; `None` for commands the actor gave itself (expiries).
    reply: Option<RpcReplyPort<CommandReply>>,
    /// Failed appends this command was part of.
    attempts: u32,
    /// What the decision said (sent once durable).
    decided: Result<InventoryOutcome, Rejection>,
    /// The decision was accepted without events (answered from the idempotency record).
    replayed: bool,
    /// Its events owe money back: the refunds are paid once they are durable.
    owes_refunds: bool,
    /// Index of its first event in the batch.
    start: usize,
    /// How many events it wrote.
    count: usize,
}

/// Commands whose events are appended together.
#[derive(Default)]
struct Batch {
    /// The events to append, in order.
    events: Vec<NewEvent>,
    /// Their payload bytes, to respect the append limit.
    bytes: usize,
    /// The commands, in decision order.
    entries: Vec<Entry>,
    /// Its number once sent to the store (see [`InventoryMsg::AppendDone`]).
    seq: u64,
    /// Some of its events owe money back (see [`ActorNotices::refunds_owed`]).
    owes_refunds: bool,
}

/// The state of an inventory actor.
pub struct InventoryState {
    /// Whose inventory.
    event_id: EventId,
    /// `inventory-<event id>`.
    stream: StreamName,
    /// Where appends go.
    store: Arc<dyn EventStore>,
    /// The time for expiries.
    clock: Arc<dyn Clock>,
    /// Tuning.
    config: Arc<ActorConfig>,
    /// Where notices go.
    notices: ActorNotices,
    /// Durable state plus every decided, not yet durable event.
    inventory: Inventory,
    /// Version of the last durable event.
    version: Option<u64>,
    /// Version the stream has once every batch in flight is stored: what the next append
    /// expects.
    tail: Option<u64>,
    /// Position of the last durable event (the receipt of commands that write nothing).
    position: Position,
    /// The batches being appended now, oldest first.
    in_flight: VecDeque<Batch>,
    /// How many batches may be in flight (see [`ActorConfig::appends_in_flight`]).
    depth: usize,
    /// Where batches go to be appended, in order.
    appender: Appender,
    /// Number of the next batch sent to the store.
    next_seq: u64,
    /// Batches whose append failed, or that were in flight behind one that failed: decided
    /// again after the reload.
    failed: Vec<Batch>,
    /// Decided batches waiting for the one in flight; new commands join the last one.
    queued: VecDeque<Batch>,
    /// An append failed: the actor waits for the batches still in flight, then reloads;
    /// commands wait in `parked` meanwhile.
    reloading: bool,
    /// Commands that arrived during a reload, not decided yet.
    parked: Vec<Entry>,
    /// The error that caused the reload, answered to commands out of retries.
    last_failure: Option<CommandError>,
    /// Live holds by expiry, to fire the earliest.
    expiries: BTreeSet<(DateTime<Utc>, OrderId)>,
    /// Live hold -> its expiry, to find it in `expiries` when it closes.
    live_holds: HashMap<OrderId, DateTime<Utc>>,
    /// When the armed expiry timer fires, if one is armed.
    timer_at: Option<DateTime<Utc>>,
    /// When the last command arrived, for the idle stop.
    last_active: Instant,
    /// The state gave back its spare capacity since the last command (an actor kept
    /// loaded by live holds then holds no more memory than its state needs).
    compacted: bool,
}

impl Actor for InventoryActor {
    type Msg = InventoryMsg;
    type State = InventoryState;
    type Arguments = InventoryArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: InventoryArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let stream = stream_name(args.event_id)?;
        let recovered = recover(args.store.as_ref(), &stream)
            .await
            .map_err(StartupError::Store)?;
        if recovered.version.is_none() && !args.allow_new {
            return Err(StartupError::NotFound(args.event_id).into());
        }
        let idle_tick = (args.config.idle_timeout / 4).max(Duration::from_millis(10));
        myself.send_interval(idle_tick, || InventoryMsg::IdleCheck);
        let depth = if args.store.orders_appends() {
            args.config.appends_in_flight.max(1)
        } else {
            1
        };
        let appender = Appender::spawn(args.store.clone(), stream.clone(), myself.clone());
        let mut state = InventoryState {
            event_id: args.event_id,
            stream,
            store: args.store,
            clock: args.clock,
            config: args.config,
            notices: args.notices,
            inventory: Inventory::default(),
            version: None,
            tail: None,
            position: Position::START,
            in_flight: VecDeque::new(),
            depth,
            appender,
            next_seq: 0,
            failed: Vec::new(),
            queued: VecDeque::new(),
            reloading: false,
            parked: Vec::new(),
            last_failure: None,
            expiries: BTreeSet::new(),
            live_holds: HashMap::new(),
            timer_at: None,
            last_active: Instant::now(),
            compacted: false,
        };
        state.install(recovered);
        metrics::gauge!("inventory_actors_loaded").increment(1.0);
        Ok(state)
    }

    async fn post_start(
        &self,
        myself: ActorRef<Self::Msg>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        // Holds recorded before a restart: those already past expire at once; a
        // cancellation interrupted by the restart goes on.
        state.continue_cancellation(&myself);
        state.arm_timer(&myself);
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<Self::Msg>,
        _state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        metrics::gauge!("inventory_actors_loaded").decrement(1.0);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        message: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            InventoryMsg::Execute { cmd, reply } => {
                state.last_active = Instant::now();
                state.compacted = false;
                let entry = Entry::new(cmd, Some(reply));
                if state.reloading {
                    state.parked.push(entry);
                } else {
                    state.decide(entry);
                    state.submit(&myself);
                }
            }
            InventoryMsg::Read(f) => f(&state.inventory),
            InventoryMsg::ExpireDue => {
                state.timer_at = None;
                if !state.reloading {
                    state.expire_due();
                    state.submit(&myself);
                }
            }
            InventoryMsg::AppendDone { seq, result } => state.append_done(&myself, seq, result),
            InventoryMsg::AppenderStopped => state.appender_stopped(&myself),
            InventoryMsg::Reloaded(Ok(recovered)) => state.reloaded(&myself, *recovered),
            InventoryMsg::Reloaded(Err(e)) => {
                // The state is unknown: answer everyone and fail, so that the supervisor
                // starts a fresh actor that recovers from the store.
                let error = CommandError::from(e.clone());
                for entry in state.take_unanswered() {
                    answer(entry.reply, Err(error.clone()));
                }
                return Err(Box::new(e));
            }
            InventoryMsg::IdleCheck => {
                let idle = state.last_active.elapsed() >= state.config.idle_timeout;
                if idle && state.is_quiet() {
                    if state.inventory.live_hold_count() == 0 {
                        myself.stop(Some("idle".into()));
                    } else if !state.compacted {
                        state.inventory.shrink_to_fit();
                        state.compacted = true;
                    }
                }
            }
            InventoryMsg::Crash => return Err("crash requested".into()),
        }
        state.continue_cancellation(&myself);
        state.arm_timer(&myself);
        if !state.inventory.exists() && state.is_quiet() {
            // Started for a create that was refused: leave nothing behind.
            myself.stop(Some("no event".into()));
        }
        Ok(())
    }
}

impl Entry {
    /// A command not decided yet.
    fn new(cmd: Arc<Command<InventoryCommand>>, reply: Option<RpcReplyPort<CommandReply>>) -> Self {
        Self {
            cmd,
            reply,
            attempts: 0,
            decided: Ok(InventoryOutcome::Accepted),
            replayed: false,
            owes_refunds: false,
            start: 0,
            count: 0,
        }
    }

    /// A command the platform gives the actor (nobody waits for its answer).
    fn system(body: InventoryCommand, key: &str, now: DateTime<Utc>) -> Option<Self> {
        let idempotency_key = IdempotencyKey::parse(key).ok()?;
        let cmd = Command::new(
            CommandMeta {
                idempotency_key,
                actor: DomainActor::System,
                now,
                correlation_id: codec::new_event_id(),
            },
            body,
        );
        Some(Self::new(Arc::new(cmd), None))
    }
}

impl InventoryState {
    /// Replaces the state with one folded from the store.
    fn install(&mut self, recovered: Recovered) {
        self.inventory = recovered.inventory;
        if self.inventory.has_unpaid_refunds() {
            // Owed before a restart (or a reload): paid by whoever listens.
            self.notices.refunds_owed(self.event_id);
        }
        // Folding grew every vector and index by doubling: keep only what the state needs.
        self.inventory.shrink_to_fit();
        self.version = recovered.version;
        self.tail = recovered.version;
        self.position = recovered.position;
        self.expiries.clear();
        self.live_holds.clear();
        let live: Vec<_> = self.inventory.live_holds().collect();
        for (order, at) in live {
            self.expiries.insert((at, order));
            self.live_holds.insert(order, at);
        }
        self.timer_at = None;
    }

    /// Nothing decided waits for the store.
    fn is_quiet(&self) -> bool {
        self.in_flight.is_empty() && self.queued.is_empty() && !self.reloading
    }

    /// Decides one command against the speculative state and queues its answer.
    fn decide(&mut self, mut entry: Entry) {
        let decision = match self.inventory.decide(&entry.cmd) {
            Ok(d) => {
                entry.replayed = d.events.is_empty();
                d
            }
            Err(rejection) => {
                entry.decided = Err(rejection);
                self.enqueue(entry, Vec::new(), 0);
                return;
            }
        };
        let meta = &entry.cmd.meta;
        let metadata = Metadata {
            correlation_id: meta.correlation_id,
            causation_id: None,
            acting_user: meta.actor.user_id().map(|u| u.as_uuid()),
            recorded_at: meta.now,
        };
        let mut encoded = Vec::with_capacity(decision.events.len());
        let mut bytes = 0;
        for event in &decision.events {
            let e = codec::encode(event, metadata.clone());
            bytes += e.data.len();
            if e.data.len() > MAX_EVENT_BYTES {
                return reply_now(
                    entry,
                    CommandError::TooLarge(format!(
                        "a {} event of {} bytes exceeds the limit of {MAX_EVENT_BYTES}",
                        event.type_name(),
                        e.data.len()
                    )),
                );
            }
            encoded.push(e);
        }
        if encoded.len() > MAX_EVENTS_PER_APPEND || bytes > MAX_APPEND_BYTES {
            return reply_now(
                entry,
                CommandError::TooLarge(format!(
                    "the command writes {} events of {bytes} bytes, more than one append holds",
                    encoded.len()
                )),
            );
        }
        for event in &decision.events {
            self.inventory.evolve(event);
            self.track_expiry(event);
        }
        entry.owes_refunds = decision.events.iter().any(owes_refund);
        entry.decided = Ok(decision.outcome);
        self.enqueue(entry, encoded, bytes);
    }

    /// Adds a decided command to the open batch (or answers it at once when nothing it
    /// could depend on is pending).
    fn enqueue(&mut self, mut entry: Entry, events: Vec<NewEvent>, bytes: usize) {
        if events.is_empty() && self.in_flight.is_empty() && self.queued.is_empty() {
            finish(entry, self.position);
            return;
        }
        let fits = self.queued.back().is_some_and(|b| {
            b.events.is_empty()
                || (b.events.len() + events.len() <= self.config.max_batch_events
                    && b.events.len() + events.len() <= MAX_EVENTS_PER_APPEND
                    && b.bytes + bytes <= self.config.max_batch_bytes.min(MAX_APPEND_BYTES))
        });
        if !fits {
            self.queued.push_back(Batch::default());
        }
        let Some(batch) = self.queued.back_mut() else {
            return;
        };
        entry.start = batch.events.len();
        entry.count = events.len();
        batch.owes_refunds |= entry.owes_refunds;
        batch.events.extend(events);
        batch.bytes += bytes;
        batch.entries.push(entry);
    }

    /// Keeps the expiry index in step with the holds.
    fn track_expiry(&mut self, event: &InventoryEvent) {
        let closed = match event {
            InventoryEvent::HoldPlaced(h) => {
                self.expiries.insert((h.expires_at, h.order_id));
                self.live_holds.insert(h.order_id, h.expires_at);
                return;
            }
            InventoryEvent::HoldReleased(e) => e.order_id,
            InventoryEvent::HoldExpired(e) => e.order_id,
            InventoryEvent::OrderConfirmed(e) => e.order_id,
            InventoryEvent::OrderCancelled(e) => e.order_id,
            _ => return,
        };
        if let Some(at) = self.live_holds.remove(&closed) {
            self.expiries.remove(&(at, closed));
        }
    }

    /// Sends decided batches to the store while fewer than `depth` are in flight.
    fn submit(&mut self, myself: &ActorRef<InventoryMsg>) {
        if self.reloading {
            return;
        }
        while self.in_flight.len() < self.depth {
            let Some(next) = self.queued.front() else {
                return;
            };
            if !self.in_flight.is_empty()
                && self.queued.len() == 1
                && !next.events.is_empty()
                && next.entries.len() < self.config.early_batch_commands
            {
                // Still filling up: it goes when it is full or the oldest append answers.
                return;
            }
            let Some(mut batch) = self.queued.pop_front() else {
                return;
            };
            if batch.events.is_empty() {
                match self.in_flight.back_mut() {
                    // Answers that wait for the batches in flight: given with the last one.
                    Some(last) => {
                        for mut entry in batch.entries {
                            entry.count = 0;
                            last.entries.push(entry);
                        }
                    }
                    // Answers that wait for nothing any more.
                    None => {
                        for entry in batch.entries {
                            finish(entry, self.position);
                        }
                    }
                }
                continue;
            }
            let events = std::mem::take(&mut batch.events);
            metrics::histogram!("inventory_append_batch_events").record(events.len() as f64);
            metrics::histogram!("inventory_append_batch_commands")
                .record(batch.entries.len() as f64);
            let (expected, tail) = match self.tail {
                None => (ExpectedVersion::NoStream, events.len() as u64 - 1),
                Some(v) => (ExpectedVersion::Exact(v), v + events.len() as u64),
            };
            self.tail = Some(tail);
            batch.seq = self.next_seq;
            self.next_seq += 1;
            let sent = self.appender.append(batch.seq, expected, events);
            self.in_flight.push_back(batch);
            if !sent {
                self.appender_stopped(myself);
                return;
            }
        }
    }

    /// The appender is gone (only if the store panicked in an append): nothing in flight
    /// will be answered. Fails them all, reloads, and starts a new appender after.
    fn appender_stopped(&mut self, myself: &ActorRef<InventoryMsg>) {
        if !self.appender.is_closed() && !self.reloading && self.in_flight.is_empty() {
            return;
        }
        tracing::error!(event = %self.event_id, "inventory appender stopped; reloading");
        if self.last_failure.is_none() {
            self.last_failure = Some(CommandError::Unavailable(
                "the inventory appender stopped".into(),
            ));
        }
        let already = self.reloading && self.in_flight.is_empty();
        self.failed.extend(self.in_flight.drain(..));
        self.reloading = true;
        if !already {
            self.reload_when_drained(myself);
        }
    }

    /// The oldest append in flight finished.
    fn append_done(
        &mut self,
        myself: &ActorRef<InventoryMsg>,
        seq: u64,
        result: Result<AppendResult, StoreError>,
    ) {
        if self.in_flight.front().is_none_or(|b| b.seq != seq) {
            // From an appender given up on: its batches were decided again already.
            return;
        }
        let Some(batch) = self.in_flight.pop_front() else {
            return;
        };
        if self.reloading {
            // Behind a failed append: stored or not (a later append expects what the failed
            // one would have left, so it fails too, unless the failed one did commit), its
            // commands are decided again after the reload and find their keys if stored.
            self.failed.push(batch);
            self.reload_when_drained(myself);
            return;
        }
        match result {
            Ok(appended) => {
                let mut position = self.position;
                self.version = Some(appended.last_version);
                self.position = appended.last_position();
                // The next batch goes to the store before hundreds of answers wake their
                // callers: the store's writer should not wait for them.
                self.submit(myself);
                if batch.owes_refunds {
                    self.notices.refunds_owed(self.event_id);
                }
                for entry in batch.entries {
                    if entry.count > 0 {
                        position = appended
                            .positions
                            .get(entry.start + entry.count - 1)
                            .copied()
                            .unwrap_or(appended.last_position());
                    }
                    finish(entry, position);
                }
            }
            Err(e) => {
                tracing::warn!(event = %self.event_id, error = %e, "inventory append failed; reloading");
                metrics::counter!("inventory_append_failures", "code" => e.code()).increment(1);
                self.last_failure = Some(CommandError::from(e));
                self.failed.push(batch);
                self.reloading = true;
                self.reload_when_drained(myself);
            }
        }
    }

    /// Reloads the stream once no append is in flight any more.
    fn reload_when_drained(&mut self, myself: &ActorRef<InventoryMsg>) {
        if !self.in_flight.is_empty() {
            return;
        }
        let store = self.store.clone();
        let stream = self.stream.clone();
        let me = myself.clone();
        tokio::spawn(async move {
            let result = recover(store.as_ref(), &stream).await.map(Box::new);
            let _ = me.send_message(InventoryMsg::Reloaded(result));
        });
    }

    /// Every command not answered yet, in the order it arrived.
    fn take_unanswered(&mut self) -> Vec<Entry> {
        let mut entries = Vec::new();
        let batches: Vec<Batch> = self
            .failed
            .drain(..)
            .chain(self.in_flight.drain(..))
            .chain(self.queued.drain(..))
            .collect();
        for batch in batches {
            for mut entry in batch.entries {
                entry.attempts += 1;
                entries.push(entry);
            }
        }
        entries.append(&mut self.parked);
        self.reloading = false;
        entries
    }

    /// The store's state after a failed append: decide every unanswered command again.
    fn reloaded(&mut self, myself: &ActorRef<InventoryMsg>, recovered: Recovered) {
        let entries = self.take_unanswered();
        self.install(recovered);
        if self.appender.is_closed() {
            self.appender =
                Appender::spawn(self.store.clone(), self.stream.clone(), myself.clone());
        }
        let failure = self
            .last_failure
            .take()
            .unwrap_or_else(|| CommandError::Unavailable("the append failed".into()));
        for entry in entries {
            if entry.attempts > self.config.max_retries {
                let result = Err(failure.clone());
                record_outcome(&result);
                answer(entry.reply, result);
            } else {
                self.decide(entry);
            }
        }
        self.submit(myself);
    }

    /// Expires every hold whose time has come.
    fn expire_due(&mut self) {
        let now = self.clock.now();
        let due: Vec<(DateTime<Utc>, OrderId)> = self
            .expiries
            .iter()
            .take_while(|(at, _)| *at <= now)
            .copied()
            .collect();
        for (_, order_id) in due {
            let key = format!("expire-{order_id}");
            let Some(entry) = Entry::system(InventoryCommand::ExpireHold { order_id }, &key, now)
            else {
                continue;
            };
            self.decide(entry);
            // A hold the domain would not expire yet (clock skew) is retried on the next
            // tick rather than spinning now.
            if let Some(at) = self.live_holds.get(&order_id).copied() {
                self.expiries.remove(&(at, order_id));
                let retry = now + chrono::Duration::seconds(1);
                self.expiries.insert((retry.max(at), order_id));
                self.live_holds.insert(order_id, retry.max(at));
            }
        }
    }

    /// Decides the next step of a cancellation under way (see
    /// [`Inventory::cancellation_pending`]) once the steps before have gone to the store: one
    /// step per turn keeps the pipeline, not memory, the measure of a cancellation's pace.
    fn continue_cancellation(&mut self, myself: &ActorRef<InventoryMsg>) {
        if self.reloading || !self.queued.is_empty() || !self.inventory.cancellation_pending() {
            return;
        }
        let now = self.clock.now();
        let key = format!("cancel-step-{}", codec::new_event_id());
        if let Some(entry) = Entry::system(InventoryCommand::CancelRemainingOrders, &key, now) {
            self.decide(entry);
            self.submit(myself);
        }
    }

    /// Arms the timer for the earliest expiry if none is armed for it or earlier.
    fn arm_timer(&mut self, myself: &ActorRef<InventoryMsg>) {
        if self.reloading {
            // Expiries wait for the reload; `reloaded` arms the timer again.
            return;
        }
        let Some(&(earliest, _)) = self.expiries.first() else {
            return;
        };
        if self.timer_at.is_some_and(|t| t <= earliest) {
            return;
        }
        let wait = (earliest - self.clock.now())
            .to_std()
            .unwrap_or(Duration::ZERO);
        self.timer_at = Some(earliest);
        myself.send_after(wait, || InventoryMsg::ExpireDue);
    }
}

/// Whether an event owes money back.
fn owes_refund(event: &InventoryEvent) -> bool {
    match event {
        InventoryEvent::OrderCancelled(e) => e.refund.is_some_and(|m| m.amount_minor > 0),
        InventoryEvent::PaymentRefundOwed(_) => true,
        _ => false,
    }
}

/// Answers a decided command whose events (if any) are durable up to `position`.
fn finish(entry: Entry, position: Position) {
    let replayed = entry.replayed;
    let result = entry
        .decided
        .map(|outcome| Answered {
            receipt: Receipt { outcome, position },
            replayed,
        })
        .map_err(CommandError::Rejected);
    record_outcome(&result);
    answer(entry.reply, result);
}

/// The task that appends an actor's batches: it queues each one at the store as soon as it
/// arrives (the first poll of an append queues it, so several are in flight in the order
/// the actor sent them) and reports each result to the actor, in the same order.
struct Appender {
    batches: mpsc::UnboundedSender<(u64, ExpectedVersion, Vec<NewEvent>)>,
}

impl Appender {
    fn spawn(
        store: Arc<dyn EventStore>,
        stream: StreamName,
        actor: ActorRef<InventoryMsg>,
    ) -> Self {
        let (batches, mut incoming) =
            mpsc::unbounded_channel::<(u64, ExpectedVersion, Vec<NewEvent>)>();
        tokio::spawn(async move {
            // Tells the actor if this task ends by a panic (in the store's append).
            let mut watch = StopWatch(Some(actor.clone()));
            let mut pending = FuturesOrdered::new();
            loop {
                tokio::select! {
                    biased;
                    Some((seq, result)) = pending.next(), if !pending.is_empty() => {
                        // If the actor is gone, its callers already got UNAVAILABLE.
                        let _ = actor.send_message(InventoryMsg::AppendDone { seq, result });
                    }
                    batch = incoming.recv() => {
                        let Some((seq, expected, events)) = batch else {
                            break;
                        };
                        let started = Instant::now();
                        let mut append = store.append(&stream, expected, events);
                        // Queue it at the store now, before any later batch.
                        let first =
                            std::future::poll_fn(|cx| Poll::Ready(append.as_mut().poll(cx))).await;
                        pending.push_back(async move {
                            let result = match first {
                                Poll::Ready(result) => result,
                                Poll::Pending => append.await,
                            };
                            metrics::histogram!("inventory_append_seconds")
                                .record(started.elapsed().as_secs_f64());
                            (seq, result)
                        });
                    }
                }
            }
            watch.0 = None;
        });
        Self { batches }
    }

    /// Hands batch `seq` to the appender; `false` if it is gone.
    fn append(&self, seq: u64, expected: ExpectedVersion, events: Vec<NewEvent>) -> bool {
        self.batches.send((seq, expected, events)).is_ok()
    }

    fn is_closed(&self) -> bool {
        self.batches.is_closed()
    }
}

/// Sends [`InventoryMsg::AppenderStopped`] when dropped while still holding the actor: the
/// appender task unwound from a panic.
struct StopWatch(Option<ActorRef<InventoryMsg>>);

impl Drop for StopWatch {
    fn drop(&mut self) {
        if let Some(actor) = self.0.take() {
            let _ = actor.send_message(InventoryMsg::AppenderStopped);
        }
    }
}

fn reply_now(entry: Entry, error: CommandError) {
    let result = Err(error);
    record_outcome(&result);
    answer(entry.reply, result);
}

fn answer(reply: Option<RpcReplyPort<CommandReply>>, result: CommandReply) {
    if let Some(reply) = reply {
        // A caller that gave up is not an error of the actor.
        let _ = reply.send(result);
    }
}

fn record_outcome(result: &CommandReply) {
    let code = match result {
        Ok(_) => "OK",
        Err(e) => e.code(),
    };
    metrics::counter!("inventory_commands", "outcome" => code).increment(1);
}

/// The stream of an event's inventory.
pub fn stream_name(event_id: EventId) -> Result<StreamName, StoreError> {
    StreamName::new(domain::ids::streams::inventory(event_id))
}

/// Events read per page while recovering.
const RECOVERY_PAGE: usize = 4096;

/// Folds an event's whole stream.
async fn recover(store: &dyn EventStore, stream: &StreamName) -> Result<Recovered, StoreError> {
    let mut inventory = Inventory::default();
    let mut version = None;
    let mut position = Position::START;
    let mut from = 0;
    loop {
        let page = store.read_stream(stream, from, RECOVERY_PAGE).await?;
        for recorded in &page {
            inventory.evolve(&codec::decode(recorded)?);
            version = Some(recorded.version);
            position = recorded.position;
        }
        if page.len() < RECOVERY_PAGE {
            break;
        }
        from = version.map_or(0, |v| v + 1);
    }
    Ok(Recovered {
        inventory,
        version,
        position,
    })
}
