//! The conformance suite: what every [`EventStore`] backend must do, written once.
//!
//! Each case is an async function taking a store. Cases never assume the store is empty
//! (a KurrentDB server is shared by many runs): they write to streams with a fresh random
//! prefix and, in the global order, look only at their own streams.
//!
//! A backend runs the whole suite by invoking [`conformance_tests!`](crate::conformance_tests)
//! in a test module with a factory `async fn() -> Option<Fixture>` (`None` skips the suite,
//! for backends that need a server).

use std::any::Any;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use chrono::{TimeZone, Utc};
use futures::StreamExt;
use uuid::Uuid;

use crate::{
    EventStore, ExpectedVersion, MAX_EVENT_BYTES, MAX_EVENTS_PER_APPEND, Metadata, NewEvent,
    Position, RecordedEvent, StoreError, StreamName, Subscription, SubscriptionMessage,
};

/// A store to test, with whatever must live as long as it (a temporary directory).
pub struct Fixture {
    /// The store under test.
    pub store: Arc<dyn EventStore>,
    /// Dropped after the case (e.g. a `tempfile::TempDir`).
    pub guard: Box<dyn Any + Send>,
}

/// Generates one `#[tokio::test]` per conformance case, each calling `$factory().await`
/// for a fresh [`Fixture`] (or skipping the case, with a message, when it returns `None`).
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path) => {
        $crate::conformance_tests!(@cases $factory;
            ordering, conflicts, concurrent_writers_one_stream, racing_first_append,
            many_streams_at_once, read_from_version_and_position, subscribe_from_start,
            subscribe_from_middle, subscribe_from_head, catch_up_then_live_across_burst,
            large_batch, unknown_stream, metadata_round_trip, bad_input, list_streams,
            shutdown_ends_subscriptions, ordered_appends);
    };
    (@cases $factory:path; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let Some(fixture) = $factory().await else {
                    // Straight to the process's stderr, past the test harness's capture, so
                    // that a skipped case is visible in every test run.
                    let _ = ::std::io::Write::write_all(
                        &mut ::std::io::stderr(),
                        format!("SKIPPED conformance case {}: backend not available\n", stringify!($case)).as_bytes(),
                    );
                    return;
                };
                $crate::conformance::$case(fixture.store.clone()).await;
                drop(fixture);
            }
        )*
    };
}

/// How long a case waits for a subscription before failing.
const WAIT: Duration = Duration::from_secs(60);

fn prefix(case: &str) -> String {
    format!("conf-{case}-{}", Uuid::new_v4().simple())
}

fn stream(prefix: &str, name: &str) -> StreamName {
    StreamName::new(format!("{prefix}-{name}")).expect("valid test stream name")
}

fn metadata() -> Metadata {
    Metadata {
        correlation_id: Uuid::now_v7(),
        causation_id: Some(Uuid::now_v7()),
        acting_user: Some(Uuid::new_v4()),
        recorded_at: Utc::now(),
    }
}

fn event(n: usize) -> NewEvent {
    NewEvent::new(
        "ConformanceHappened",
        1,
        format!(r#"{{"n":{n}}}"#).into_bytes(),
        metadata(),
    )
}

fn events(range: std::ops::Range<usize>) -> Vec<NewEvent> {
    range.map(event).collect()
}

/// Reads the whole global order after `after`, keeping only streams under `prefix`.
async fn read_all_of(store: &dyn EventStore, after: Position, prefix: &str) -> Vec<RecordedEvent> {
    let mut out = Vec::new();
    let mut cursor = after;
    loop {
        let page = store.read_all(cursor, 500).await.expect("read_all");
        let Some(last) = page.last() else { break };
        assert!(last.position > cursor, "read_all must move forward");
        cursor = last.position;
        out.extend(
            page.into_iter()
                .filter(|e| e.stream.as_str().starts_with(prefix)),
        );
    }
    out
}

/// Reads the next message of a subscription, failing the case after [`WAIT`].
async fn next(sub: &mut Subscription) -> Option<SubscriptionMessage> {
    match tokio::time::timeout(WAIT, sub.next()).await {
        Ok(Some(Ok(message))) => Some(message),
        Ok(Some(Err(e))) => panic!("subscription failed: {e}"),
        Ok(None) => None,
        Err(_) => panic!("subscription produced nothing for {WAIT:?}"),
    }
}

/// Consumes a subscription until `want` events of `prefix`'s streams were seen; returns
/// them and whether `CaughtUp` came, checking positions strictly increase throughout.
async fn collect_until(
    sub: &mut Subscription,
    prefix: &str,
    want: usize,
    caught_up: &mut bool,
    last: &mut Position,
) -> Vec<RecordedEvent> {
    let mut ours = Vec::new();
    while ours.len() < want {
        match next(sub).await {
            Some(SubscriptionMessage::Event(e)) => {
                assert!(
                    e.position > *last,
                    "position {} after {}: duplicate or out of order",
                    e.position,
                    last
                );
                *last = e.position;
                if e.stream.as_str().starts_with(prefix) {
                    ours.push(e);
                }
            }
            Some(SubscriptionMessage::CaughtUp) => {
                assert!(!*caught_up, "CaughtUp sent twice");
                *caught_up = true;
            }
            None => panic!(
                "subscription ended early after {} of {want} events",
                ours.len()
            ),
        }
    }
    ours
}

/// Consumes a subscription up to `CaughtUp`, returning the events of `prefix` before it.
async fn until_caught_up(
    sub: &mut Subscription,
    prefix: &str,
    last: &mut Position,
) -> Vec<RecordedEvent> {
    let mut ours = Vec::new();
    loop {
        match next(sub).await {
            Some(SubscriptionMessage::Event(e)) => {
                assert!(e.position > *last, "duplicate or out-of-order position");
                *last = e.position;
                if e.stream.as_str().starts_with(prefix) {
                    ours.push(e);
                }
            }
            Some(SubscriptionMessage::CaughtUp) => return ours,
            None => panic!("subscription ended before CaughtUp"),
        }
    }
}

fn assert_same(recorded: &RecordedEvent, sent: &NewEvent) {
    assert_eq!(recorded.id, sent.id);
    assert_eq!(recorded.event_type, sent.event_type);
    assert_eq!(recorded.schema_version, sent.schema_version);
    assert_eq!(recorded.data, sent.data);
    assert_eq!(recorded.metadata, sent.metadata);
}

fn assert_conflict(
    result: Result<crate::AppendResult, StoreError>,
    stream: &StreamName,
    expected: ExpectedVersion,
    actual: Option<u64>,
) {
    match result {
        Err(StoreError::WrongExpectedVersion {
            stream: s,
            expected: e,
            actual: a,
        }) => {
            assert_eq!(&s, stream);
            assert_eq!(e, expected);
            assert_eq!(a, actual);
        }
        other => panic!("expected a conflict ({expected} vs {actual:?}), got {other:?}"),
    }
}

/// Appends keep their order in the stream and in the global order, and their results
/// report the versions and positions the reads then show.
pub async fn ordering(store: Arc<dyn EventStore>) {
    let p = prefix("ordering");
    let (a, b) = (stream(&p, "a"), stream(&p, "b"));
    let head = store.head().await.expect("head");
    let sent_a1 = events(0..3);
    let sent_b = events(3..5);
    let sent_a2 = events(5..6);
    let r1 = store
        .append(&a, ExpectedVersion::NoStream, sent_a1.clone())
        .await
        .expect("append a1");
    let r2 = store
        .append(&b, ExpectedVersion::NoStream, sent_b.clone())
        .await
        .expect("append b");
    let r3 = store
        .append(&a, ExpectedVersion::Exact(2), sent_a2.clone())
        .await
        .expect("append a2");
    assert_eq!((r1.first_version, r1.last_version), (0, 2));
    assert_eq!((r2.first_version, r2.last_version), (0, 1));
    assert_eq!((r3.first_version, r3.last_version), (3, 3));
    let positions: Vec<Position> = [&r1, &r2, &r3]
        .iter()
        .flat_map(|r| r.positions.clone())
        .collect();
    assert_eq!(positions.len(), 6);
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "positions must increase: {positions:?}"
    );
    assert!(positions[0] > head);
    assert!(store.head().await.expect("head") >= positions[5]);

    let read_a = store.read_stream(&a, 0, 100).await.expect("read a");
    let sent_all_a: Vec<_> = sent_a1.iter().chain(&sent_a2).collect();
    assert_eq!(read_a.len(), 4);
    for (i, (rec, sent)) in read_a.iter().zip(&sent_all_a).enumerate() {
        assert_eq!(rec.version, i as u64);
        assert_eq!(&rec.stream, &a);
        assert_same(rec, sent);
    }
    assert_eq!(read_a[3].position, r3.positions[0]);
    assert_eq!(store.stream_version(&a).await.expect("version"), Some(3));
    assert_eq!(store.stream_version(&b).await.expect("version"), Some(1));

    let all = read_all_of(&*store, head, &p).await;
    let got: Vec<Position> = all.iter().map(|e| e.position).collect();
    assert_eq!(got, positions);
    let sent: Vec<&NewEvent> = sent_a1.iter().chain(&sent_b).chain(&sent_a2).collect();
    for (rec, sent) in all.iter().zip(sent) {
        assert_same(rec, sent);
    }
}

/// Every expected-version mismatch is a conflict carrying both versions, and appends
/// nothing.
/// A backend that says it orders appends ([`EventStore::orders_appends`]) applies them in the
/// order their futures are first polled: a chain of appends to one stream, each expecting the
/// version the previous leaves, all succeed while in flight together; when one in the chain
/// is refused, every later one is refused too and none is stored out of order.
pub async fn ordered_appends(store: Arc<dyn EventStore>) {
    use std::future::Future;
    use std::pin::Pin;
    use std::task::Poll;

    if !store.orders_appends() {
        return;
    }
    type Pending<'a> =
        Pin<Box<dyn Future<Output = Result<crate::AppendResult, StoreError>> + Send + 'a>>;
    /// Polls each append once, in order (which queues it), then waits for all of them.
    async fn chain<'a>(
        mut appends: Vec<Pending<'a>>,
    ) -> Vec<Result<crate::AppendResult, StoreError>> {
        let mut early = Vec::with_capacity(appends.len());
        for append in &mut appends {
            let first = std::future::poll_fn(|cx| Poll::Ready(append.as_mut().poll(cx))).await;
            early.push(match first {
                Poll::Ready(result) => Some(result),
                Poll::Pending => None,
            });
        }
        let mut results = Vec::with_capacity(appends.len());
        for (append, early) in appends.into_iter().zip(early) {
            results.push(match early {
                Some(result) => result,
                None => append.await,
            });
        }
        results
    }

    let p = prefix("ordered");
    let s = stream(&p, "s");
    let links: Vec<Pending<'_>> = (0..50u64)
        .map(|i| {
            let expected = if i == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(i * 2 - 1)
            };
            let batch = events(i as usize * 2..i as usize * 2 + 2);
            Box::pin(store.append(&s, expected, batch)) as Pending<'_>
        })
        .collect();
    for (i, result) in chain(links).await.into_iter().enumerate() {
        let appended = result.unwrap_or_else(|e| panic!("link {i} of the chain: {e}"));
        assert_eq!(appended.first_version, i as u64 * 2, "link {i}");
    }
    assert_eq!(store.stream_version(&s).await.expect("version"), Some(99));

    // A broken link: the third expects a version nobody leaves; it and all after it fail.
    let links: Vec<Pending<'_>> = (0..6u64)
        .map(|i| {
            let expected = match i {
                2 => ExpectedVersion::Exact(10_000),
                _ => ExpectedVersion::Exact(99 + i),
            };
            Box::pin(store.append(&s, expected, events(100 + i as usize..101 + i as usize)))
                as Pending<'_>
        })
        .collect();
    let results = chain(links).await;
    assert!(results[0].is_ok() && results[1].is_ok(), "{results:?}");
    for (i, result) in results.iter().enumerate().skip(2) {
        assert!(
            matches!(result, Err(StoreError::WrongExpectedVersion { .. })),
            "link {i} after the broken one: {result:?}"
        );
    }
    assert_eq!(store.stream_version(&s).await.expect("version"), Some(101));
}

pub async fn conflicts(store: Arc<dyn EventStore>) {
    let p = prefix("conflicts");
    let s = stream(&p, "s");
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(0), events(0..1))
            .await,
        &s,
        ExpectedVersion::Exact(0),
        None,
    );
    assert_conflict(
        store
            .append(&s, ExpectedVersion::StreamExists, events(0..1))
            .await,
        &s,
        ExpectedVersion::StreamExists,
        None,
    );
    assert_eq!(store.stream_version(&s).await.expect("version"), None);
    store
        .append(&s, ExpectedVersion::NoStream, events(0..2))
        .await
        .expect("first append");
    assert_conflict(
        store
            .append(&s, ExpectedVersion::NoStream, events(2..3))
            .await,
        &s,
        ExpectedVersion::NoStream,
        Some(1),
    );
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(0), events(2..3))
            .await,
        &s,
        ExpectedVersion::Exact(0),
        Some(1),
    );
    assert_conflict(
        store
            .append(&s, ExpectedVersion::Exact(7), events(2..3))
            .await,
        &s,
        ExpectedVersion::Exact(7),
        Some(1),
    );
    assert_eq!(store.read_stream(&s, 0, 100).await.expect("read").len(), 2);
    let r = store
        .append(&s, ExpectedVersion::Exact(1), events(2..3))
        .await
        .expect("exact");
    assert_eq!(r.first_version, 2);
    let r = store
        .append(&s, ExpectedVersion::StreamExists, events(3..4))
        .await
        .expect("exists");
    assert_eq!(r.first_version, 3);
    let r = store
        .append(&s, ExpectedVersion::Any, events(4..5))
        .await
        .expect("any");
    assert_eq!(r.first_version, 4);
    let any_new = stream(&p, "new");
    let r = store
        .append(&any_new, ExpectedVersion::Any, events(0..1))
        .await
        .expect("any on new");
    assert_eq!(r.first_version, 0);
    let err = store
        .append(&s, ExpectedVersion::Exact(0), events(5..6))
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), "CONFLICT");
    let read = store.read_stream(&s, 0, 100).await.expect("read");
    let versions: Vec<u64> = read.iter().map(|e| e.version).collect();
    assert_eq!(versions, vec![0, 1, 2, 3, 4]);
}

/// Many writers race on one stream with exact expected versions: each version is won by
/// exactly one append, versions stay contiguous, and every acknowledged append is there.
pub async fn concurrent_writers_one_stream(store: Arc<dyn EventStore>) {
    const WRITERS: usize = 16;
    const WINS_EACH: usize = 8;
    let p = prefix("race");
    let s = stream(&p, "hot");
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let store = store.clone();
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            let mut conflicts = 0usize;
            while won.len() < WINS_EACH {
                let current = store.stream_version(&s).await.expect("version");
                let expected = current.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                let e = event(w * 1000 + won.len());
                let id = e.id;
                match store.append(&s, expected, vec![e]).await {
                    Ok(r) => {
                        assert_eq!(r.first_version, current.map_or(0, |v| v + 1));
                        won.push((r.first_version, id));
                    }
                    Err(StoreError::WrongExpectedVersion { .. }) => conflicts += 1,
                    Err(e) => panic!("append failed: {e}"),
                }
            }
            (won, conflicts)
        }));
    }
    let mut winners: BTreeMap<u64, Uuid> = BTreeMap::new();
    for task in tasks {
        let (won, _) = task.await.expect("writer task");
        for (version, id) in won {
            assert!(
                winners.insert(version, id).is_none(),
                "version {version} won twice"
            );
        }
    }
    let total = (WRITERS * WINS_EACH) as u64;
    assert_eq!(
        winners.keys().copied().collect::<Vec<_>>(),
        (0..total).collect::<Vec<_>>()
    );
    let read = store.read_stream(&s, 0, 10_000).await.expect("read");
    assert_eq!(read.len() as u64, total);
    for e in &read {
        assert_eq!(
            winners[&e.version], e.id,
            "version {} holds another append's event",
            e.version
        );
    }
}

/// Writers released at the same instant all try to create the same stream, round after
/// round: exactly one wins each round; the others get the winner's version as `actual`.
pub async fn racing_first_append(store: Arc<dyn EventStore>) {
    const RACERS: usize = 12;
    const ROUNDS: u64 = 10;
    let p = prefix("first");
    let s = stream(&p, "s");
    for round in 0..ROUNDS {
        let expected = if round == 0 {
            ExpectedVersion::NoStream
        } else {
            ExpectedVersion::Exact(round * 2 - 1)
        };
        let barrier = Arc::new(tokio::sync::Barrier::new(RACERS));
        let mut tasks = Vec::new();
        for i in 0..RACERS {
            let (store, s, barrier) = (store.clone(), s.clone(), barrier.clone());
            tasks.push(tokio::spawn(async move {
                barrier.wait().await;
                store.append(&s, expected, events(i..i + 2)).await
            }));
        }
        let mut wins = 0;
        for task in tasks {
            match task.await.expect("task") {
                Ok(r) => {
                    wins += 1;
                    assert_eq!(r.first_version, round * 2);
                }
                Err(StoreError::WrongExpectedVersion { actual, .. }) => {
                    assert_eq!(
                        actual,
                        Some(round * 2 + 1),
                        "loser must see the winner's version"
                    );
                }
                Err(e) => panic!("append failed: {e}"),
            }
        }
        assert_eq!(wins, 1, "round {round}: exactly one racer must win");
        let version = store.stream_version(&s).await.expect("version");
        assert_eq!(version, Some(round * 2 + 1));
    }
}

/// Many streams appended at once: each keeps contiguous versions, and the global order
/// holds every event exactly once with increasing positions.
pub async fn many_streams_at_once(store: Arc<dyn EventStore>) {
    const STREAMS: usize = 64;
    const APPENDS: usize = 10;
    let p = prefix("many");
    let head = store.head().await.expect("head");
    let mut tasks = Vec::new();
    for i in 0..STREAMS {
        let (store, s) = (store.clone(), stream(&p, &format!("s{i}")));
        tasks.push(tokio::spawn(async move {
            let mut ids = Vec::new();
            for n in 0..APPENDS {
                let expected = if n == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(n as u64 - 1)
                };
                let e = event(n);
                ids.push(e.id);
                let r = store.append(&s, expected, vec![e]).await.expect("append");
                assert_eq!(r.first_version, n as u64);
            }
            (s, ids)
        }));
    }
    let mut all_ids = HashSet::new();
    for task in tasks {
        let (s, ids) = task.await.expect("task");
        let read = store.read_stream(&s, 0, 100).await.expect("read");
        assert_eq!(read.iter().map(|e| e.id).collect::<Vec<_>>(), ids);
        assert!(read.iter().enumerate().all(|(i, e)| e.version == i as u64));
        assert!(read.windows(2).all(|w| w[0].position < w[1].position));
        all_ids.extend(ids);
    }
    let all = read_all_of(&*store, head, &p).await;
    assert_eq!(all.len(), STREAMS * APPENDS);
    let seen: HashSet<Uuid> = all.iter().map(|e| e.id).collect();
    assert_eq!(seen, all_ids);
}

/// Reads start at the version or after the position asked for, and honour `max`.
pub async fn read_from_version_and_position(store: Arc<dyn EventStore>) {
    let p = prefix("from");
    let s = stream(&p, "s");
    let r = store
        .append(&s, ExpectedVersion::NoStream, events(0..10))
        .await
        .expect("append");
    let read = store.read_stream(&s, 4, 3).await.expect("read");
    assert_eq!(
        read.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![4, 5, 6]
    );
    assert_eq!(read[0].position, r.positions[4]);
    assert!(store.read_stream(&s, 10, 5).await.expect("read").is_empty());
    assert!(
        store
            .read_stream(&s, u64::MAX, 5)
            .await
            .expect("read")
            .is_empty()
    );
    assert!(store.read_stream(&s, 0, 0).await.expect("read").is_empty());
    assert_eq!(store.read_stream(&s, 9, 100).await.expect("read").len(), 1);

    let page = store.read_all(r.positions[2], 2).await.expect("read_all");
    assert_eq!(page.len(), 2);
    assert_eq!(page[0].position, r.positions[3]);
    assert_eq!(page[1].position, r.positions[4]);
    assert!(
        store
            .read_all(r.positions[9], 0)
            .await
            .expect("read_all")
            .is_empty()
    );
    // Just before a position (positions need not be contiguous): that very event.
    let page = store
        .read_all(Position(r.positions[6].0 - 1), 1)
        .await
        .expect("read_all");
    assert_eq!(page[0].position, r.positions[6]);
}

/// From the start: every existing event of ours, in order, then `CaughtUp`, then live.
pub async fn subscribe_from_start(store: Arc<dyn EventStore>) {
    let p = prefix("sub-start");
    let s = stream(&p, "s");
    let sent = events(0..5);
    store
        .append(&s, ExpectedVersion::NoStream, sent.clone())
        .await
        .expect("append");
    let mut sub = store.subscribe_all(Position::START);
    let mut last = Position::START;
    let before = until_caught_up(&mut sub, &p, &mut last).await;
    assert_eq!(before.len(), 5);
    for (rec, sent) in before.iter().zip(&sent) {
        assert_same(rec, sent);
    }
    let live = events(5..8);
    store
        .append(&s, ExpectedVersion::Exact(4), live.clone())
        .await
        .expect("append live");
    let mut caught_up = true;
    let got = collect_until(&mut sub, &p, 3, &mut caught_up, &mut last).await;
    for (rec, sent) in got.iter().zip(&live) {
        assert_same(rec, sent);
    }
    assert_eq!(
        got.iter().map(|e| e.version).collect::<Vec<_>>(),
        vec![5, 6, 7]
    );
}

/// From the middle: nothing at or before the position, everything after it.
pub async fn subscribe_from_middle(store: Arc<dyn EventStore>) {
    let p = prefix("sub-mid");
    let s = stream(&p, "s");
    let r = store
        .append(&s, ExpectedVersion::NoStream, events(0..10))
        .await
        .expect("append");
    let mut sub = store.subscribe_all(r.positions[3]);
    let mut last = r.positions[3];
    let before = until_caught_up(&mut sub, &p, &mut last).await;
    assert_eq!(
        before.iter().map(|e| e.version).collect::<Vec<_>>(),
        (4..10).collect::<Vec<_>>()
    );
    assert_eq!(before[0].position, r.positions[4]);
}

/// From the head: `CaughtUp` before any event of ours, then live events.
pub async fn subscribe_from_head(store: Arc<dyn EventStore>) {
    let p = prefix("sub-head");
    let s = stream(&p, "s");
    store
        .append(&s, ExpectedVersion::NoStream, events(0..3))
        .await
        .expect("append");
    let head = store.head().await.expect("head");
    let mut sub = store.subscribe_all(head);
    let mut last = head;
    let before = until_caught_up(&mut sub, &p, &mut last).await;
    assert!(before.is_empty(), "nothing of ours lies after the head");
    let r = store
        .append(&s, ExpectedVersion::Exact(2), events(3..4))
        .await
        .expect("append");
    let mut caught_up = true;
    let got = collect_until(&mut sub, &p, 1, &mut caught_up, &mut last).await;
    assert_eq!(got[0].position, r.positions[0]);
    assert_eq!(got[0].version, 3);
}

/// A subscription catching up while a burst of concurrent appends lands: it sees every
/// event exactly once, in position order, across the catch-up/live hand-over.
pub async fn catch_up_then_live_across_burst(store: Arc<dyn EventStore>) {
    const BEFORE: usize = 600;
    const WRITERS: usize = 8;
    const APPENDS: usize = 60;
    let p = prefix("burst");
    let head = store.head().await.expect("head");
    for chunk in 0..(BEFORE / 100) {
        let s = stream(&p, &format!("pre{chunk}"));
        store
            .append(&s, ExpectedVersion::NoStream, events(0..100))
            .await
            .expect("append");
    }
    let mut sub = store.subscribe_all(head);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (store, s) = (store.clone(), stream(&p, &format!("live{w}")));
        writers.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for n in 0..APPENDS {
                let expected = if n == 0 {
                    ExpectedVersion::NoStream
                } else {
                    ExpectedVersion::Exact(n as u64 - 1)
                };
                let e = event(n);
                let id = e.id;
                let r = store.append(&s, expected, vec![e]).await.expect("append");
                acked.push((id, r.positions[0]));
                if n % 7 == 0 {
                    tokio::task::yield_now().await;
                }
            }
            acked
        }));
    }
    let total = BEFORE + WRITERS * APPENDS;
    let mut caught_up = false;
    let mut last = head;
    let got = collect_until(&mut sub, &p, total, &mut caught_up, &mut last).await;
    let mut acked = HashMap::new();
    for w in writers {
        acked.extend(w.await.expect("writer"));
    }
    let ids: HashSet<Uuid> = got.iter().map(|e| e.id).collect();
    assert_eq!(ids.len(), total, "duplicates in the subscription");
    for (id, position) in &acked {
        let e = got
            .iter()
            .find(|e| e.id == *id)
            .expect("acknowledged event missing from the subscription");
        assert_eq!(e.position, *position);
    }
    let stored = read_all_of(&*store, head, &p).await;
    assert_eq!(
        stored.iter().map(|e| e.position).collect::<Vec<_>>(),
        got.iter().map(|e| e.position).collect::<Vec<_>>()
    );
    if !caught_up {
        // The burst may outlast the catch-up or not; either way CaughtUp must come once
        // the subscription reaches the head.
        let mut tail = Vec::new();
        loop {
            match next(&mut sub).await {
                Some(SubscriptionMessage::CaughtUp) => break,
                Some(SubscriptionMessage::Event(e)) => tail.push(e),
                None => panic!("subscription ended"),
            }
        }
        assert!(tail.iter().all(|e| !e.stream.as_str().starts_with(&p)));
    }
}

/// The largest legal append lands whole, with contiguous versions and positions in order.
pub async fn large_batch(store: Arc<dyn EventStore>) {
    let p = prefix("large");
    let s = stream(&p, "s");
    let pad = "x".repeat(150);
    let sent: Vec<NewEvent> = (0..MAX_EVENTS_PER_APPEND)
        .map(|n| {
            NewEvent::new(
                "Big",
                1,
                format!(r#"{{"n":{n},"pad":"{pad}"}}"#).into_bytes(),
                metadata(),
            )
        })
        .collect();
    let r = store
        .append(&s, ExpectedVersion::NoStream, sent.clone())
        .await
        .expect("large append");
    assert_eq!(
        (r.first_version, r.last_version),
        (0, MAX_EVENTS_PER_APPEND as u64 - 1)
    );
    assert_eq!(r.positions.len(), MAX_EVENTS_PER_APPEND);
    assert!(r.positions.windows(2).all(|w| w[0] < w[1]));
    let mut read = Vec::new();
    while read.len() < MAX_EVENTS_PER_APPEND {
        let page = store
            .read_stream(&s, read.len() as u64, 1000)
            .await
            .expect("read");
        assert!(!page.is_empty());
        read.extend(page);
    }
    assert_eq!(read.len(), MAX_EVENTS_PER_APPEND);
    for (rec, sent) in read.iter().zip(&sent) {
        assert_same(rec, sent);
    }
    // One event of the largest legal size.
    let big = format!("\"{}\"", "y".repeat(MAX_EVENT_BYTES - 2)).into_bytes();
    let e = NewEvent::new("Big", 1, big.clone(), metadata());
    store
        .append(&s, ExpectedVersion::Any, vec![e])
        .await
        .expect("largest event");
    let last = store
        .read_stream(&s, MAX_EVENTS_PER_APPEND as u64, 1)
        .await
        .expect("read");
    assert_eq!(last[0].data, big);
}

/// A stream nobody wrote reads as empty and has no version.
pub async fn unknown_stream(store: Arc<dyn EventStore>) {
    let p = prefix("unknown");
    let s = stream(&p, "nobody");
    assert!(store.read_stream(&s, 0, 10).await.expect("read").is_empty());
    assert_eq!(store.stream_version(&s).await.expect("version"), None);
    assert!(
        store
            .list_streams(&p, None, 10)
            .await
            .expect("list")
            .is_empty()
    );
}

/// Every field of an event, metadata included, comes back exactly as appended, from
/// every read path.
pub async fn metadata_round_trip(store: Arc<dyn EventStore>) {
    let p = prefix("meta");
    let s = stream(&p, "s");
    let full = NewEvent {
        id: Uuid::now_v7(),
        event_type: "Meta.Full:v2_x-y".into(),
        schema_version: 7,
        data: br#"{"nested":{"a":[1,2,3]},"unicode":"\u00e9t\u00e9 \u263a"}"#.to_vec(),
        metadata: Metadata {
            correlation_id: Uuid::now_v7(),
            causation_id: Some(Uuid::now_v7()),
            acting_user: Some(Uuid::new_v4()),
            recorded_at: Utc
                .timestamp_opt(1_790_000_000, 123_456_789)
                .single()
                .expect("time"),
        },
    };
    let bare = NewEvent {
        id: Uuid::now_v7(),
        event_type: "Meta.Bare".into(),
        schema_version: 0,
        data: b"null".to_vec(),
        metadata: Metadata {
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            acting_user: None,
            recorded_at: Utc.timestamp_opt(0, 1).single().expect("time"),
        },
    };
    let sent = vec![full, bare];
    let r = store
        .append(&s, ExpectedVersion::NoStream, sent.clone())
        .await
        .expect("append");
    let by_stream = store.read_stream(&s, 0, 10).await.expect("read");
    let by_all = store
        .read_all(Position(r.positions[0].0 - 1), 2)
        .await
        .expect("read_all");
    let mut sub = store.subscribe_all(Position(r.positions[0].0 - 1));
    let mut last = Position(r.positions[0].0 - 1);
    let mut caught_up = false;
    let by_sub = collect_until(&mut sub, &p, 2, &mut caught_up, &mut last).await;
    for read in [&by_stream, &by_all, &by_sub] {
        assert_eq!(read.len(), 2);
        for (i, (rec, sent)) in read.iter().zip(&sent).enumerate() {
            assert_same(rec, sent);
            assert_eq!(rec.stream, s);
            assert_eq!(rec.version, i as u64);
            assert_eq!(rec.position, r.positions[i]);
        }
    }
}

/// Bad input is refused with `INVALID_INPUT` and stores nothing.
pub async fn bad_input(store: Arc<dyn EventStore>) {
    let p = prefix("bad");
    let s = stream(&p, "s");
    let invalid = |r: Result<crate::AppendResult, StoreError>, what: &str| match r {
        Err(e @ StoreError::InvalidInput(_)) => assert_eq!(e.code(), "INVALID_INPUT"),
        other => panic!("{what}: expected INVALID_INPUT, got {other:?}"),
    };
    invalid(
        store.append(&s, ExpectedVersion::Any, vec![]).await,
        "empty append",
    );
    let oversized = format!("\"{}\"", "z".repeat(MAX_EVENT_BYTES)).into_bytes();
    invalid(
        store
            .append(
                &s,
                ExpectedVersion::Any,
                vec![NewEvent::new("Big", 1, oversized, metadata())],
            )
            .await,
        "oversized event",
    );
    invalid(
        store
            .append(
                &s,
                ExpectedVersion::Any,
                vec![NewEvent::new("Bad", 1, b"{oops".to_vec(), metadata())],
            )
            .await,
        "not JSON",
    );
    invalid(
        store
            .append(
                &s,
                ExpectedVersion::Any,
                vec![NewEvent::new("no spaces", 1, b"{}".to_vec(), metadata())],
            )
            .await,
        "bad event type",
    );
    let too_many = events(0..MAX_EVENTS_PER_APPEND + 1);
    invalid(
        store.append(&s, ExpectedVersion::Any, too_many).await,
        "too many events",
    );
    // A valid event next to an invalid one: the whole append is refused.
    let mut mixed = events(0..2);
    mixed[1].data = b"not json".to_vec();
    invalid(
        store.append(&s, ExpectedVersion::Any, mixed).await,
        "mixed append",
    );
    for bad in ["", "$all", "$et-x", "a b", "x/y", "é"] {
        assert_eq!(StreamName::new(bad).expect_err(bad).code(), "INVALID_INPUT");
    }
    assert_eq!(store.stream_version(&s).await.expect("version"), None);
    // The store still works after all that.
    store
        .append(&s, ExpectedVersion::NoStream, events(0..1))
        .await
        .expect("good append");
}

/// Streams are listed by prefix, in order, in pages.
pub async fn list_streams(store: Arc<dyn EventStore>) {
    let p = prefix("list");
    for name in ["c", "a", "b", "d"] {
        store
            .append(&stream(&p, name), ExpectedVersion::NoStream, events(0..2))
            .await
            .expect("append");
    }
    store
        .append(
            &stream(&format!("{p}x"), "other"),
            ExpectedVersion::NoStream,
            events(0..1),
        )
        .await
        .expect("append");
    let all = store
        .list_streams(&format!("{p}-"), None, 100)
        .await
        .expect("list");
    let names: Vec<&str> = all.iter().map(StreamName::as_str).collect();
    let want: Vec<String> = ["a", "b", "c", "d"]
        .iter()
        .map(|n| format!("{p}-{n}"))
        .collect();
    assert_eq!(names, want);
    let first = store
        .list_streams(&format!("{p}-"), None, 2)
        .await
        .expect("list");
    assert_eq!(first, all[..2]);
    let rest = store
        .list_streams(&format!("{p}-"), first.last(), 100)
        .await
        .expect("list");
    assert_eq!(rest, all[2..]);
}

/// Shutting down ends live subscriptions cleanly and refuses later appends.
pub async fn shutdown_ends_subscriptions(store: Arc<dyn EventStore>) {
    let p = prefix("shutdown");
    let s = stream(&p, "s");
    store
        .append(&s, ExpectedVersion::NoStream, events(0..2))
        .await
        .expect("append");
    let head = store.head().await.expect("head");
    let mut sub = store.subscribe_all(head);
    let mut last = head;
    until_caught_up(&mut sub, &p, &mut last).await;
    let waiting = tokio::spawn(async move {
        let mut sub = sub;
        tokio::time::timeout(WAIT, sub.next()).await
    });
    tokio::time::sleep(Duration::from_millis(50)).await;
    store.shutdown().await;
    match waiting.await.expect("task") {
        Ok(None) => {}
        Ok(Some(item)) => panic!("expected the subscription to end, got {item:?}"),
        Err(_) => panic!("subscription did not end after shutdown"),
    }
    let err = store
        .append(&s, ExpectedVersion::Any, events(2..3))
        .await
        .expect_err("after shutdown");
    assert_eq!(err.code(), "SHUT_DOWN");
    store.shutdown().await;
}
