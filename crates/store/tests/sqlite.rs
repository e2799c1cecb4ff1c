//! Behaviour specific to the embedded SQLite store: group commit, reopening, refusing
//! files that are not ours or are damaged, one writer at a time, read-only readers.

use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use futures::StreamExt;
use store::sqlite::{Checkpoints, DEFAULT_FILE_NAME, SqliteOptions, SqliteStore};
use store::{
    EventStore, ExpectedVersion, Metadata, NewEvent, Position, StoreError, StreamName,
    SubscriptionMessage,
};
use uuid::Uuid;

fn event(n: usize) -> NewEvent {
    let metadata = Metadata {
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        acting_user: None,
        recorded_at: Utc::now(),
    };
    NewEvent::new(
        "Tested",
        1,
        format!(r#"{{"n":{n},"pad":"{}"}}"#, "p".repeat(200)).into_bytes(),
        metadata,
    )
}

fn name(s: &str) -> StreamName {
    StreamName::new(s).expect("stream name")
}

fn open(path: &std::path::Path) -> Result<SqliteStore, StoreError> {
    SqliteStore::open(path, SqliteOptions::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn group_commit_shares_commits_and_isolates_conflicts() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path()).expect("open");
    let hot = name("hot");
    store
        .append(&hot, ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("create hot");
    let mut tasks = Vec::new();
    for i in 0..512 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            if i % 8 == 0 {
                // Everyone expects version 0 of the hot stream: one wins, the rest conflict.
                (
                    true,
                    store
                        .append(&name("hot"), ExpectedVersion::Exact(0), vec![event(i)])
                        .await,
                )
            } else {
                let s = name(&format!("s-{i}"));
                (
                    false,
                    store
                        .append(&s, ExpectedVersion::NoStream, vec![event(i)])
                        .await,
                )
            }
        }));
    }
    let (mut hot_wins, mut hot_conflicts, mut others) = (0, 0, 0);
    for task in tasks {
        match task.await.expect("task") {
            (true, Ok(_)) => hot_wins += 1,
            (
                true,
                Err(StoreError::WrongExpectedVersion {
                    actual: Some(1), ..
                }),
            ) => hot_conflicts += 1,
            (false, Ok(r)) => {
                assert_eq!(r.first_version, 0);
                others += 1;
            }
            (_, other) => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!((hot_wins, hot_conflicts, others), (1, 63, 448));
    let stats = store.stats();
    assert_eq!(stats.appends, 1 + 1 + 448);
    assert_eq!(stats.conflicts, 63);
    assert_eq!(stats.events, 450);
    assert!(
        stats.commits < stats.appends / 4,
        "512 concurrent appends should share commits: {stats:?}"
    );
    assert_eq!(store.head().await.expect("head"), Position(450));
}

#[tokio::test]
async fn reopening_keeps_events_heads_and_positions() {
    let dir = tempfile::tempdir().expect("dir");
    let s = name("inventory-1");
    {
        let store = open(dir.path()).expect("open");
        store
            .append(&s, ExpectedVersion::NoStream, vec![event(0), event(1)])
            .await
            .expect("append");
        store.shutdown().await;
    }
    assert!(dir.path().join(DEFAULT_FILE_NAME).is_file());
    let store = open(dir.path()).expect("reopen");
    assert_eq!(store.head().await.expect("head"), Position(2));
    assert_eq!(store.stream_version(&s).await.expect("version"), Some(1));
    let err = store
        .append(&s, ExpectedVersion::NoStream, vec![event(2)])
        .await
        .expect_err("conflict");
    assert_eq!(err.code(), "CONFLICT");
    let r = store
        .append(&s, ExpectedVersion::Exact(1), vec![event(2)])
        .await
        .expect("append");
    assert_eq!((r.first_version, r.positions[0]), (2, Position(3)));
}

#[tokio::test]
async fn a_second_writer_is_refused_until_the_first_stops() {
    let dir = tempfile::tempdir().expect("dir");
    let first = open(dir.path()).expect("open");
    match open(dir.path()) {
        Err(e @ StoreError::Locked(_)) => assert_eq!(e.code(), "LOCKED"),
        other => panic!("expected LOCKED, got {:?}", other.map(|_| ())),
    }
    first.shutdown().await;
    let second = open(dir.path()).expect("open after the first writer stopped");
    second
        .append(&name("x"), ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("append");
}

#[test]
fn a_file_that_is_not_sqlite_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("notes.txt");
    std::fs::write(&path, b"shopping list: eggs, milk, tickets\n").expect("write");
    match open(&path) {
        Err(e @ StoreError::Corrupt(_)) => {
            assert!(e.to_string().contains("not a SQLite database"), "{e}")
        }
        other => panic!("expected CORRUPT, got {:?}", other.map(|_| ())),
    }
    assert_eq!(
        std::fs::read(&path).expect("read"),
        b"shopping list: eggs, milk, tickets\n"
    );
}

#[test]
fn another_sqlite_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("other.db");
    {
        let conn = rusqlite::Connection::open(&path).expect("sqlite");
        conn.execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT); INSERT INTO customers VALUES (1, 'ann');")
            .expect("schema");
    }
    let before = std::fs::read(&path).expect("read");
    match open(&path) {
        Err(e @ StoreError::Corrupt(_)) => {
            assert!(e.to_string().contains("not an event store"), "{e}")
        }
        other => panic!("expected CORRUPT, got {:?}", other.map(|_| ())),
    }
    assert!(matches!(
        SqliteStore::open_read_only(&path, SqliteOptions::default()),
        Err(StoreError::Corrupt(_))
    ));
    assert_eq!(
        std::fs::read(&path).expect("read"),
        before,
        "the foreign file must not change"
    );
}

#[tokio::test]
async fn a_damaged_store_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("events.db");
    {
        let store = open(&path).expect("open");
        for i in 0..40 {
            let batch = (0..50).map(|n| event(i * 50 + n)).collect();
            store
                .append(&name(&format!("s-{i}")), ExpectedVersion::NoStream, batch)
                .await
                .expect("append");
        }
        store.shutdown().await;
    }
    let len = std::fs::metadata(&path).expect("meta").len();
    assert!(
        len > 64 * 4096,
        "store should span many pages, is {len} bytes"
    );
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .expect("open file");
        // Scribble over a few pages in the middle, as a bad disk or a stray write would.
        file.seek(SeekFrom::Start(len / 2 / 4096 * 4096))
            .expect("seek");
        file.write_all(&vec![0xA5; 3 * 4096]).expect("write");
    }
    match open(&path) {
        Err(e @ StoreError::Corrupt(_)) => assert_eq!(e.code(), "CORRUPT"),
        other => panic!("expected CORRUPT, got {:?}", other.map(|_| ())),
    }
}

#[tokio::test]
async fn a_truncated_header_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("events.db");
    {
        let store = open(&path).expect("open");
        store
            .append(&name("s"), ExpectedVersion::NoStream, vec![event(0)])
            .await
            .expect("append");
        store.shutdown().await;
    }
    let mut bytes = std::fs::read(&path).expect("read");
    bytes[..16].copy_from_slice(b"SQLite format 2\0");
    std::fs::write(&path, &bytes).expect("write");
    assert!(matches!(open(&path), Err(StoreError::Corrupt(_))));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_only_store_follows_the_writer() {
    let dir = tempfile::tempdir().expect("dir");
    let writer = open(dir.path()).expect("open");
    writer
        .append(&name("a"), ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("append");
    let options = SqliteOptions {
        poll_interval: Duration::from_millis(10),
        ..SqliteOptions::default()
    };
    let reader = SqliteStore::open_read_only(dir.path(), options).expect("open read-only");
    assert_eq!(reader.head().await.expect("head"), Position(1));
    let err = reader
        .append(&name("a"), ExpectedVersion::Any, vec![event(1)])
        .await
        .expect_err("read-only");
    assert_eq!(err.code(), "READ_ONLY");
    let mut sub = reader.subscribe_all(Position::START);
    let first = sub.next().await.expect("item").expect("ok");
    assert!(matches!(first, SubscriptionMessage::Event(ref e) if e.position == Position(1)));
    assert_eq!(
        sub.next().await.expect("item").expect("ok"),
        SubscriptionMessage::CaughtUp
    );
    writer
        .append(&name("b"), ExpectedVersion::NoStream, vec![event(1)])
        .await
        .expect("append");
    let live = tokio::time::timeout(Duration::from_secs(10), sub.next())
        .await
        .expect("live event in time");
    match live {
        Some(Ok(SubscriptionMessage::Event(e))) => {
            assert_eq!((e.stream.as_str(), e.position), ("b", Position(2)))
        }
        other => panic!("expected the live event, got {other:?}"),
    }
    reader.shutdown().await;
    assert!(
        tokio::time::timeout(Duration::from_secs(10), sub.next())
            .await
            .expect("ends")
            .is_none()
    );
}

#[test]
fn a_read_only_open_of_nothing_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let err = SqliteStore::open_read_only(dir.path().join("missing.db"), SqliteOptions::default())
        .err()
        .expect("refused");
    assert_eq!(err.code(), "UNAVAILABLE");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_subscriber_does_not_hold_up_appends() {
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path()).expect("open");
    // A subscriber that never reads past its first item.
    let mut stalled = store.subscribe_all(Position::START);
    let _ = tokio::time::timeout(Duration::from_millis(50), stalled.next()).await;
    let store2 = Arc::new(store.clone());
    let mut tasks = Vec::new();
    for i in 0..200 {
        let store = store2.clone();
        tasks.push(tokio::spawn(async move {
            store
                .append(
                    &name(&format!("s-{i}")),
                    ExpectedVersion::NoStream,
                    vec![event(i)],
                )
                .await
        }));
    }
    for task in tasks {
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("append in time")
            .expect("task")
            .expect("append");
    }
    assert_eq!(store.head().await.expect("head"), Position(200));
    drop(stalled);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_appends_to_one_stream_share_commits() {
    // The inventory actor's pattern: it knows the next version, so it can send appends to
    // its one stream without waiting for the previous one. They reach the writer in order
    // and commit together.
    let dir = tempfile::tempdir().expect("dir");
    let store = open(dir.path()).expect("open");
    let s = name("inventory-hot");
    let appends: Vec<_> = (0..400u64)
        .map(|i| {
            let expected = if i == 0 {
                ExpectedVersion::NoStream
            } else {
                ExpectedVersion::Exact(i - 1)
            };
            store.append(&s, expected, vec![event(i as usize)])
        })
        .collect();
    let results = futures::future::join_all(appends).await;
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.expect("pipelined append").first_version, i as u64);
    }
    let stats = store.stats();
    assert!(
        stats.commits < 100,
        "400 pipelined appends should share commits: {stats:?}"
    );
    // A conflict in the middle of a pipeline fails it and everything queued behind it.
    let appends = vec![
        store.append(&s, ExpectedVersion::Exact(399), vec![event(0)]),
        store.append(&s, ExpectedVersion::Exact(123), vec![event(1)]),
        store.append(&s, ExpectedVersion::Exact(401), vec![event(2)]),
    ];
    let results = futures::future::join_all(appends).await;
    assert!(results[0].is_ok());
    assert_eq!(results[1].as_ref().expect_err("stale").code(), "CONFLICT");
    assert_eq!(
        results[2].as_ref().expect_err("behind a conflict").code(),
        "CONFLICT"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn a_subscription_never_sleeps_through_a_commit() {
    // One-event pages make the subscription read ahead after every event, which is where
    // a commit landing between the read-ahead and the wait could be missed.
    let dir = tempfile::tempdir().expect("dir");
    let options = SqliteOptions {
        page_size: 1,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path(), options).expect("open");
    let (seen_tx, mut seen_rx) = tokio::sync::watch::channel(Position::START);
    let mut sub = store.subscribe_all(Position::START);
    let consumer = tokio::spawn(async move {
        while let Some(item) = sub.next().await {
            if let SubscriptionMessage::Event(e) = item.expect("subscription") {
                seen_tx.send_replace(e.position);
                // A slow consumer: the next commit lands before it asks for more.
                tokio::time::sleep(Duration::from_millis(15)).await;
            }
        }
    });
    let s = name("s");
    for i in 0..300u64 {
        let expected = i
            .checked_sub(1)
            .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let r = store
            .append(&s, expected, vec![event(i as usize)])
            .await
            .expect("append");
        let want = r.positions[0];
        tokio::time::timeout(Duration::from_secs(10), seen_rx.wait_for(|p| *p >= want))
            .await
            .unwrap_or_else(|_| panic!("event {i} committed but not delivered"))
            .expect("consumer alive");
    }
    store.shutdown().await;
    consumer.await.expect("consumer");
}

#[tokio::test]
async fn the_data_directory_is_created_and_holds_one_store_file() {
    let dir = tempfile::tempdir().expect("dir");
    let data = dir.path().join("var").join("ticketing");
    let file = data.join("events.db");
    let store = open(&file).expect("open in a directory that does not exist yet");
    store
        .append(&name("s"), ExpectedVersion::NoStream, vec![event(0)])
        .await
        .expect("append");
    assert_eq!(store.path(), file.as_path());
    store.shutdown().await;
    drop(store);
    // After a clean shutdown the store is that one file (and the writer's lock file).
    let mut names: Vec<String> = std::fs::read_dir(&data)
        .expect("list")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        vec!["events.db".to_string(), "events.db.lock".to_string()]
    );
}

/// Appends 40 batches of 20 events to one stream with a 50-page log limit, checking the
/// log stays bounded after every commit; returns the writer's counters, after checking
/// every event reads back after a reopen.
async fn checkpointed_run(checkpoints: Checkpoints) -> store::sqlite::WriterStats {
    let dir = tempfile::tempdir().expect("dir");
    let options = SqliteOptions {
        checkpoint_pages: 50,
        checkpoints,
        ..SqliteOptions::default()
    };
    let s = name("inventory-1");
    let stats = {
        let store = SqliteStore::open(dir.path(), options.clone()).expect("open");
        let mut version = None;
        for i in 0..40 {
            let batch = (0..20).map(|n| event(i * 20 + n)).collect();
            let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            version = Some(
                store
                    .append(&s, expected, batch)
                    .await
                    .expect("append")
                    .last_version,
            );
            let stats = store.stats();
            // Twice the limit, plus one commit of ~20 pages past it.
            assert!(
                stats.wal_pages <= 2 * 50 + 20,
                "the log is bounded: {stats:?}"
            );
        }
        let stats = store.stats();
        store.shutdown().await;
        stats
    };
    let store = SqliteStore::open(dir.path(), options).expect("reopen");
    let events = store.read_stream(&s, 0, 1000).await.expect("read");
    assert_eq!(events.len(), 800);
    assert!(
        events
            .iter()
            .enumerate()
            .all(|(i, e)| e.version == i as u64)
    );
    stats
}

#[tokio::test]
async fn in_commit_checkpoints_run_on_the_writer_past_the_limit() {
    let stats = checkpointed_run(Checkpoints::InCommit).await;
    assert!(stats.checkpoints >= 2, "{stats:?}");
    assert_eq!(stats.writer_checkpoints, stats.checkpoints, "{stats:?}");
    assert!(stats.checkpoint_nanos > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_checkpoints_copy_the_log_beside_the_writer() {
    let stats = checkpointed_run(Checkpoints::Background).await;
    assert!(
        stats.checkpoints > stats.writer_checkpoints,
        "passes ran on the checkpointer: {stats:?}"
    );
    assert!(stats.checkpoint_nanos > 0, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 3)]
async fn background_checkpoints_beside_readers_lose_nothing() {
    let dir = tempfile::tempdir().expect("dir");
    let options = SqliteOptions {
        checkpoint_pages: 32,
        page_size: 7,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path(), options).expect("open");
    let mut sub = store.subscribe_all(Position::START);
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let s = name(&format!("inventory-{w}"));
                let mut version = None;
                for i in 0..25 {
                    let batch = (0..4).map(|n| event(i * 4 + n)).collect();
                    let expected =
                        version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                    version = Some(
                        store
                            .append(&s, expected, batch)
                            .await
                            .expect("append")
                            .last_version,
                    );
                }
            })
        })
        .collect();
    let mut seen = 0u64;
    while seen < 8 * 100 {
        match sub.next().await.expect("open").expect("item") {
            SubscriptionMessage::Event(e) => {
                seen += 1;
                assert_eq!(e.position, Position(seen));
            }
            SubscriptionMessage::CaughtUp => {}
        }
    }
    for w in writers {
        w.await.expect("writer");
    }
    let stats = store.stats();
    assert!(stats.checkpoints > 0, "{stats:?}");
    for w in 0..8 {
        let events = store
            .read_stream(&name(&format!("inventory-{w}")), 0, 1000)
            .await
            .expect("read");
        assert_eq!(events.len(), 100);
    }
    store.shutdown().await;
}

/// Every event of a burst, read live by a subscriber that keeps up and by one that starts
/// far behind, with a tail of recent events smaller than the burst: both see exactly what
/// the file holds, in order, and the tail serves the live reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscriptions_from_the_tail_match_the_file() {
    let dir = tempfile::tempdir().expect("dir");
    let options = SqliteOptions {
        recent_events: 64,
        page_size: 16,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path(), options).expect("open");
    let mut live = store.subscribe_all(Position::START);
    assert_eq!(
        live.next().await.expect("item").expect("ok"),
        SubscriptionMessage::CaughtUp
    );
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let stream = name(&format!("s-{w}"));
                let mut version = None;
                for i in 0..50 {
                    let events = (0..=(i % 3))
                        .map(|k| event(w * 1000 + i * 10 + k))
                        .collect();
                    let expected =
                        version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                    let done = store
                        .append(&stream, expected, events)
                        .await
                        .expect("append");
                    version = Some(done.last_version);
                }
            })
        })
        .collect();
    let total = 8 * (0..50).map(|i| i % 3 + 1).sum::<usize>();
    let mut seen_live = Vec::new();
    while seen_live.len() < total {
        match tokio::time::timeout(Duration::from_secs(30), live.next())
            .await
            .expect("live events in time")
        {
            Some(Ok(SubscriptionMessage::Event(e))) => seen_live.push(e),
            Some(Ok(SubscriptionMessage::CaughtUp)) => panic!("caught up twice"),
            other => panic!("unexpected {other:?}"),
        }
    }
    for w in writers {
        w.await.expect("writer");
    }
    let stored = store
        .read_all(Position::START, total + 1)
        .await
        .expect("read");
    assert_eq!(stored.len(), total);
    assert_eq!(
        seen_live, stored,
        "the live subscriber saw what the file holds"
    );

    let mut late = store.subscribe_all(Position::START);
    let mut seen_late = Vec::new();
    while let SubscriptionMessage::Event(e) = late.next().await.expect("item").expect("ok") {
        seen_late.push(e);
    }
    assert_eq!(
        seen_late, stored,
        "the late subscriber saw what the file holds"
    );
    let stats = store.stats();
    assert!(stats.pages_from_memory > 0, "{stats:?}");
    assert!(stats.pages_from_file > 0, "{stats:?}");
    store.shutdown().await;
}
