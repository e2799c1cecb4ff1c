//! Failed and conflicting appends, restarts, supervision, expiry and idleness, each
//! forced on purpose against a real SQLite store.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use commands::{CommandService, InventoryMsg, ManualClock};
use domain::inventory::{InventoryOutcome, OrderStatus, Selection};
use domain::{EventId, OrderId};
use payments::test_tokens;
use store::{
    AppendResult, EventStore, ExpectedVersion, NewEvent, Position, RecordedEvent, StoreError,
    StreamName, Subscription,
};

use common::*;

/// How the wrapper misbehaves on appends to inventory streams.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    /// Refuse without writing (the store was unreachable).
    FailBefore,
    /// Write, then report a failure (the answer was lost: an ambiguous failure).
    FailAfter,
    /// Report a conflict without writing.
    Conflict,
    /// Panic inside the append (a bug in a store).
    Panic,
}

/// A store that injects `fault` into the next `remaining` appends to inventory streams
/// (after letting `skip` pass), answering each injected fault after `delay` (a slow failing
/// disk: appends queued behind it are then already in flight).
struct FaultyStore {
    inner: Arc<dyn EventStore>,
    fault: parking_lot::Mutex<Fault>,
    remaining: AtomicU32,
    skip: AtomicU32,
    delay: parking_lot::Mutex<Duration>,
    injected: AtomicU32,
    /// Appends to inventory streams in flight now, and the most ever at once.
    in_flight: AtomicU32,
    most_in_flight: AtomicU32,
    /// Appends the real store refused for a wrong expected version.
    refused: AtomicU32,
}

impl FaultyStore {
    fn new(inner: Arc<dyn EventStore>) -> Arc<Self> {
        Arc::new(Self {
            inner,
            fault: parking_lot::Mutex::new(Fault::FailBefore),
            remaining: AtomicU32::new(0),
            skip: AtomicU32::new(0),
            delay: parking_lot::Mutex::new(Duration::ZERO),
            injected: AtomicU32::new(0),
            in_flight: AtomicU32::new(0),
            most_in_flight: AtomicU32::new(0),
            refused: AtomicU32::new(0),
        })
    }

    /// Lets `skip` appends pass, then injects `fault` into the next `times`, each answered
    /// after `delay`.
    fn inject_after(&self, fault: Fault, skip: u32, times: u32, delay: Duration) {
        *self.fault.lock() = fault;
        *self.delay.lock() = delay;
        self.skip.store(skip, Ordering::SeqCst);
        self.remaining.store(times, Ordering::SeqCst);
    }

    async fn forward(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        let result = self.inner.append(stream, expected, events).await;
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        if matches!(result, Err(StoreError::WrongExpectedVersion { .. })) {
            self.refused.fetch_add(1, Ordering::SeqCst);
        }
        result
    }

    fn inject(&self, fault: Fault, times: u32) {
        *self.fault.lock() = fault;
        self.remaining.store(times, Ordering::SeqCst);
    }
}

#[async_trait]
impl EventStore for FaultyStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let inventory = stream.as_str().starts_with("inventory-");
        let skipped = inventory
            && self
                .skip
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        let armed = inventory
            && !skipped
            && self
                .remaining
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                .is_ok();
        if !armed {
            return self.forward(stream, expected, events).await;
        }
        self.injected.fetch_add(1, Ordering::SeqCst);
        let fault = *self.fault.lock();
        let delay = *self.delay.lock();
        let result = match fault {
            Fault::FailBefore => Err(StoreError::Unavailable("injected: disk gone".into())),
            Fault::FailAfter => self
                .forward(stream, expected, events)
                .await
                .and(Err(StoreError::Unavailable("injected: answer lost".into()))),
            Fault::Conflict => Err(StoreError::WrongExpectedVersion {
                stream: stream.clone(),
                expected,
                actual: None,
            }),
            Fault::Panic => panic!("injected: a bug in the store"),
        };
        tokio::time::sleep(delay).await;
        result
    }
    async fn read_stream(
        &self,
        stream: &StreamName,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_stream(stream, from, max).await
    }
    async fn read_all(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.inner.read_all(after, max).await
    }
    fn subscribe_all(&self, after: Position) -> Subscription {
        self.inner.subscribe_all(after)
    }
    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.head().await
    }
    async fn stream_version(&self, stream: &StreamName) -> Result<Option<u64>, StoreError> {
        self.inner.stream_version(stream).await
    }
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        max: usize,
    ) -> Result<Vec<StreamName>, StoreError> {
        self.inner.list_streams(prefix, after, max).await
    }
    async fn shutdown(&self) {
        self.inner.shutdown().await
    }
    fn orders_appends(&self) -> bool {
        // Faults are injected before the inner append is queued, in the caller's order:
        // the actor may keep several appends in flight here too.
        self.inner.orders_appends()
    }
}

/// A second command service on the same store: "another process" writing the same streams.
async fn service_on(h: &Harness, store: Arc<dyn EventStore>, clock: ManualClock) -> CommandService {
    CommandService::start(
        store,
        Arc::new(clock),
        Arc::new(h.provider.clone()),
        config(),
    )
    .await
    .expect("service")
}

fn count_events(events: &[RecordedEvent], kind: &str) -> usize {
    events.iter().filter(|e| e.event_type == kind).count()
}

async fn stream_events(h: &Harness, event: EventId) -> Vec<RecordedEvent> {
    let stream = commands::actor::stream_name(event).expect("name");
    h.store
        .read_stream(&stream, 0, 1_000_000)
        .await
        .expect("read")
}

async fn faulty_setup() -> (
    Harness,
    Arc<FaultyStore>,
    CommandService,
    EventId,
    domain::TierId,
) {
    let h = harness().await;
    let (event, tier) = h.published_event(100, None).await;
    let faulty = FaultyStore::new(Arc::new(h.store.clone()));
    let service = service_on(&h, faulty.clone(), h.clock.clone()).await;
    (h, faulty, service, event, tier)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_append_is_retried_and_acknowledged_once_durable() {
    let (h, faulty, service, event, tier) = faulty_setup().await;
    faulty.inject(Fault::FailBefore, 2);
    let receipt = service
        .hold(
            &ctx(&buyer(1)),
            event,
            tier,
            Selection::Quantity { quantity: 2 },
        )
        .await
        .expect("hold succeeds after the store recovers");
    assert!(matches!(receipt.outcome, InventoryOutcome::Held { .. }));
    assert_eq!(faulty.injected.load(Ordering::SeqCst), 2);
    let events = stream_events(&h, event).await;
    assert_eq!(count_events(&events, "HoldPlaced"), 1);
    assert!(receipt.position <= events.last().expect("events").position);
}

/// Appends in flight together, one of them failing: the ones behind it are refused or
/// stored, but every command is answered once, and exactly the answered holds are stored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fault_among_pipelined_appends_loses_and_duplicates_nothing() {
    let mut most_in_flight = 0;
    for fault in [Fault::FailBefore, Fault::FailAfter, Fault::Conflict] {
        let h = harness().await;
        let (event, tier) = h.published_event(1000, None).await;
        let faulty = FaultyStore::new(Arc::new(h.store.clone()));
        let mut eager = config();
        // Every batch goes as soon as a slot is free: as many appends in flight as can be.
        eager.actor.early_batch_commands = 1;
        eager.actor.appends_in_flight = 3;
        let service = CommandService::start(
            faulty.clone(),
            Arc::new(h.clock.clone()),
            Arc::new(h.provider.clone()),
            eager,
        )
        .await
        .expect("service");
        faulty.inject_after(fault, 5, 1, Duration::from_millis(30));
        let buyers: Vec<_> = (0..40u128)
            .map(|b| {
                let service = service.clone();
                tokio::spawn(async move {
                    let mut held = Vec::new();
                    for _ in 0..8 {
                        let receipt = service
                            .hold(
                                &ctx(&buyer(b)),
                                event,
                                tier,
                                Selection::Quantity { quantity: 1 },
                            )
                            .await
                            .expect("one fault is within the retries");
                        let InventoryOutcome::Held { order_id, .. } = receipt.outcome else {
                            panic!("not held: {:?}", receipt.outcome)
                        };
                        held.push(order_id);
                    }
                    held
                })
            })
            .collect();
        let mut answered = Vec::new();
        for b in buyers {
            answered.extend(b.await.expect("buyer"));
        }
        assert_eq!(faulty.injected.load(Ordering::SeqCst), 1, "{fault:?}");
        let events = stream_events(&h, event).await;
        let mut stored: Vec<OrderId> = events
            .iter()
            .filter(|e| e.event_type == "HoldPlaced")
            .map(|e| {
                let domain::inventory::InventoryEvent::HoldPlaced(p) =
                    commands::codec::decode(e).expect("decode")
                else {
                    unreachable!()
                };
                p.order_id
            })
            .collect();
        stored.sort();
        answered.sort();
        assert_eq!(
            stored, answered,
            "{fault:?}: stored holds == answered holds"
        );
        let replayed = h.replay(event).await;
        assert_eq!(replayed.tier(tier).expect("tier").held, 320, "{fault:?}");
        most_in_flight = most_in_flight.max(faulty.most_in_flight.load(Ordering::SeqCst));
        eprintln!(
            "{fault:?}: at most {} appends in flight, {} refused by the store",
            faulty.most_in_flight.load(Ordering::SeqCst),
            faulty.refused.load(Ordering::SeqCst)
        );
    }
    assert!(
        most_in_flight >= 2,
        "the actor kept several appends in flight"
    );
}

/// A store that panics in an append takes the actor's appender task down with it: the
/// actor notices, reloads, starts a new appender and still answers every command once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_panics_in_an_append_loses_no_command() {
    let (h, faulty, service, event, tier) = faulty_setup().await;
    faulty.inject(Fault::Panic, 1);
    let holds: Vec<_> = (0..10u128)
        .map(|b| {
            let service = service.clone();
            tokio::spawn(async move {
                service
                    .hold(
                        &ctx(&buyer(b)),
                        event,
                        tier,
                        Selection::Quantity { quantity: 1 },
                    )
                    .await
            })
        })
        .collect();
    for hold in holds {
        let receipt = hold
            .await
            .expect("task")
            .expect("answered after the reload");
        assert!(matches!(receipt.outcome, InventoryOutcome::Held { .. }));
    }
    assert_eq!(faulty.injected.load(Ordering::SeqCst), 1);
    let events = stream_events(&h, event).await;
    assert_eq!(count_events(&events, "HoldPlaced"), 10);
    // The actor keeps serving with its new appender.
    service
        .hold(
            &ctx(&buyer(99)),
            event,
            tier,
            Selection::Quantity { quantity: 1 },
        )
        .await
        .expect("served after");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_that_keeps_failing_answers_unavailable_and_stores_nothing() {
    let (h, faulty, service, event, tier) = faulty_setup().await;
    let before = stream_events(&h, event).await.len();
    faulty.inject(Fault::FailBefore, 100);
    let err = service
        .hold(
            &ctx(&buyer(1)),
            event,
            tier,
            Selection::Quantity { quantity: 1 },
        )
        .await
        .expect_err("the store is down");
    assert_eq!(err.code(), "UNAVAILABLE");
    assert!(err.is_retriable());
    assert_eq!(stream_events(&h, event).await.len(), before);
    // Once the store is back, the same event sells again (the actor survived).
    faulty.inject(Fault::FailBefore, 0);
    service
        .hold(
            &ctx(&buyer(1)),
            event,
            tier,
            Selection::Quantity { quantity: 1 },
        )
        .await
        .expect("store is back");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ambiguous_failure_that_did_commit_is_answered_without_duplicates() {
    let (h, faulty, service, event, tier) = faulty_setup().await;
    faulty.inject(Fault::FailAfter, 1);
    let c = ctx(&buyer(1));
    let receipt = service
        .hold(&c, event, tier, Selection::Quantity { quantity: 3 })
        .await
        .expect("hold");
    let InventoryOutcome::Held { order_id, .. } = receipt.outcome else {
        panic!("not held")
    };
    let events = stream_events(&h, event).await;
    assert_eq!(
        count_events(&events, "HoldPlaced"),
        1,
        "decided again, stored once"
    );
    let replayed = h.replay(event).await;
    assert_eq!(replayed.tier(tier).expect("tier").held, 3);
    assert_eq!(
        replayed.order(order_id).expect("order").status,
        OrderStatus::Held
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_conflicts_answer_conflict() {
    let (h, faulty, service, event, tier) = faulty_setup().await;
    let before = stream_events(&h, event).await.len();
    faulty.inject(Fault::Conflict, 100);
    let err = service
        .hold(
            &ctx(&buyer(1)),
            event,
            tier,
            Selection::Quantity { quantity: 1 },
        )
        .await
        .expect_err("conflicts never end");
    assert_eq!(err.code(), "CONFLICT");
    assert!(err.is_retriable());
    assert_eq!(stream_events(&h, event).await.len(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_process_writing_the_stream_never_causes_an_oversell() {
    let h = harness().await;
    let (event, tier) = h.published_event(60, None).await;
    // Two command sides on one store, each with its own actor for the event.
    let other = service_on(&h, Arc::new(h.store.clone()), h.clock.clone()).await;
    let services = [h.service.clone(), other];
    let mut tasks = Vec::new();
    for n in 0..200u128 {
        let service = services[(n % 2) as usize].clone();
        tasks.push(tokio::spawn(async move {
            let c = ctx(&buyer(n));
            // A client retries a retriable answer with the same key.
            loop {
                match service
                    .hold(&c, event, tier, Selection::Quantity { quantity: 1 })
                    .await
                {
                    Err(e) if e.is_retriable() => continue,
                    other => return other,
                }
            }
        }));
    }
    let mut held = 0;
    let mut sold_out = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => held += 1,
            Err(e) if e.code() == "SOLD_OUT" => sold_out += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!(held, 60);
    assert_eq!(sold_out, 140);
    let replayed = h.replay(event).await;
    replayed.check_invariants().expect("invariants");
    assert_eq!(replayed.tier(tier).expect("tier").held, 60);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_process_recovers_the_state_and_expires_old_holds() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let held = h
        .service
        .hold(
            &ctx(&buyer(1)),
            event,
            tier,
            Selection::Quantity { quantity: 4 },
        )
        .await
        .expect("hold");
    let InventoryOutcome::Held { order_id, .. } = held.outcome else {
        panic!("not held")
    };
    h.service
        .purchase(
            &ctx(&buyer(2)),
            event,
            tier,
            Selection::Quantity { quantity: 2 },
            test_tokens::SUCCESS,
        )
        .await
        .expect("purchase");
    h.service.stop();
    // The process is down while the hold runs out.
    h.clock.advance(chrono::Duration::minutes(15));
    let restarted = service_on(&h, Arc::new(h.store.clone()), h.clock.clone()).await;
    assert_eq!(restarted.resume_all().await.expect("resume"), 1);
    let status = wait_for_status(&restarted, event, order_id, OrderStatus::Expired).await;
    assert_eq!(status, OrderStatus::Expired);
    let tier_view = restarted
        .read(event, move |inv| inv.tier(tier))
        .await
        .expect("read")
        .expect("tier");
    assert_eq!(
        (tier_view.sold, tier_view.held, tier_view.available),
        (2, 0, 8)
    );
}

async fn wait_for_status(
    service: &CommandService,
    event: EventId,
    order_id: OrderId,
    want: OrderStatus,
) -> OrderStatus {
    let mut last = None;
    for _ in 0..500 {
        last = service
            .read(event, move |inv| inv.order(order_id).map(|o| o.status))
            .await
            .expect("read");
        if last == Some(want) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    last.expect("order exists")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holds_expire_on_their_own_timer() {
    let mut cfg = config();
    cfg.hold_ttl = chrono::Duration::milliseconds(300);
    // A real clock: the actor's timer, not the test, decides when the hold expires.
    let h = harness_with(cfg.clone()).await;
    let (event, tier) = h.published_event(5, None).await;
    let service = CommandService::start(
        Arc::new(h.store.clone()),
        Arc::new(commands::SystemClock),
        Arc::new(h.provider.clone()),
        cfg,
    )
    .await
    .expect("service");
    h.service.stop();
    let held = service
        .hold(
            &ctx(&buyer(1)),
            event,
            tier,
            Selection::Quantity { quantity: 5 },
        )
        .await
        .expect("hold");
    let InventoryOutcome::Held { order_id, .. } = held.outcome else {
        panic!("not held")
    };
    let status = wait_for_status(&service, event, order_id, OrderStatus::Expired).await;
    assert_eq!(status, OrderStatus::Expired);
    // Reads see decided events at once; the stream gets them when the append commits.
    let mut expired = 0;
    for _ in 0..500 {
        expired = count_events(&stream_events(&h, event).await, "HoldExpired");
        if expired > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(expired, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_actor_is_restarted_from_the_store() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    h.service
        .hold(
            &ctx(&buyer(1)),
            event,
            tier,
            Selection::Quantity { quantity: 3 },
        )
        .await
        .expect("hold");
    let first = h
        .service
        .registry()
        .actor_for(event, false)
        .await
        .expect("actor");
    first.send_message(InventoryMsg::Crash).expect("send");
    let mut restarted = None;
    for _ in 0..500 {
        if let Ok(a) = h.service.registry().actor_for(event, false).await
            && a.get_id() != first.get_id()
        {
            restarted = Some(a);
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(restarted.is_some(), "a new actor serves the event");
    let available = h
        .service
        .read(event, move |inv| inv.tier(tier).map(|t| t.available))
        .await
        .expect("read");
    assert_eq!(available, Some(7));
    assert_eq!(h.service.registry().loaded(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_actors_stop_unless_they_have_live_holds() {
    let mut cfg = config();
    cfg.actor.idle_timeout = Duration::from_millis(100);
    let h = harness_with(cfg).await;
    let (quiet, _) = h.published_event(5, None).await;
    let (busy, tier) = h.published_event(5, None).await;
    h.service
        .hold(
            &ctx(&buyer(1)),
            busy,
            tier,
            Selection::Quantity { quantity: 1 },
        )
        .await
        .expect("hold");
    let mut stopped = false;
    for _ in 0..300 {
        if !h.service.registry().is_loaded(quiet) {
            stopped = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(stopped, "the idle event's actor stopped");
    assert!(
        h.service.registry().is_loaded(busy),
        "an actor with a live hold stays"
    );
    // A stopped event comes back on the next command.
    let publish_again = h
        .service
        .execute(
            &ctx(&h.organizer),
            quiet,
            domain::inventory::InventoryCommand::Publish,
        )
        .await
        .expect_err("already published");
    assert_eq!(publish_again.code(), "INVALID_STATE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_racing_an_idle_stop_are_answered_by_a_fresh_actor() {
    let mut cfg = config();
    cfg.actor.idle_timeout = Duration::from_millis(5);
    let h = harness_with(cfg).await;
    let (event, tier) = h.published_event(1000, None).await;
    // The actor keeps stopping between and during these calls; none may fail for it.
    for n in 0..60u128 {
        let c = ctx(&buyer(n));
        let held = h
            .service
            .hold(&c, event, tier, Selection::Quantity { quantity: 1 })
            .await
            .expect("hold");
        let InventoryOutcome::Held { order_id, .. } = held.outcome else {
            panic!("not held")
        };
        h.service
            .release_hold(&ctx(&buyer(n)), event, order_id)
            .await
            .expect("release");
        h.service
            .read(event, move |inv| inv.order(order_id).map(|o| o.status))
            .await
            .expect("read");
        tokio::time::sleep(Duration::from_millis(n as u64 % 12)).await;
    }
    let replayed = h.replay(event).await;
    assert_eq!(replayed.tier(tier).expect("tier").available, 1000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_first_commands_spawn_one_actor() {
    let h = harness().await;
    let (event, tier) = h.published_event(1000, None).await;
    h.service.stop();
    let fresh = service_on(&h, Arc::new(h.store.clone()), h.clock.clone()).await;
    assert_eq!(fresh.registry().loaded(), 0);
    let tasks: Vec<_> = (0..64u128)
        .map(|n| {
            let fresh = fresh.clone();
            tokio::spawn(async move {
                let actor = fresh
                    .registry()
                    .actor_for(event, false)
                    .await
                    .expect("actor");
                fresh
                    .hold(
                        &ctx(&buyer(n)),
                        event,
                        tier,
                        Selection::Quantity { quantity: 1 },
                    )
                    .await
                    .expect("hold");
                actor.get_id()
            })
        })
        .collect();
    let mut ids = std::collections::HashSet::new();
    for t in tasks {
        ids.insert(t.await.expect("task"));
    }
    assert_eq!(ids.len(), 1, "one actor served every first command");
    assert_eq!(fresh.registry().loaded(), 1);
    let replayed = h.replay(event).await;
    assert_eq!(replayed.tier(tier).expect("tier").held, 64);
}
