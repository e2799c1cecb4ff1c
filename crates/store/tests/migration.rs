//! Upgrading files of an earlier schema version in place at open.
//!
//! Each test writes a schema version 1 file with raw SQL, as the previous build laid it
//! out (the stream name in every row), then opens it with this build.

use std::path::Path;

use chrono::DateTime;
use store::sqlite::{SqliteOptions, SqliteStore};
use store::{EventStore, ExpectedVersion, Metadata, NewEvent, Position, StoreError, StreamName};
use uuid::Uuid;

/// The schema of version 1, verbatim.
const SCHEMA_V1: &str = "
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    stream         TEXT    NOT NULL,
    version        INTEGER NOT NULL,
    event_id       BLOB    NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           BLOB    NOT NULL,
    correlation_id BLOB    NOT NULL,
    causation_id   BLOB,
    acting_user    BLOB,
    recorded_at    INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX events_by_stream ON events (stream, version);
PRAGMA application_id = 1414219091;
";

/// One row of a version 1 file, kept to compare with what the upgraded store returns.
#[derive(Debug, Clone)]
struct Row {
    position: u64,
    stream: String,
    version: u64,
    id: Uuid,
    event_type: String,
    schema_version: u32,
    data: Vec<u8>,
    correlation_id: Uuid,
    causation_id: Option<Uuid>,
    acting_user: Option<Uuid>,
    recorded_at_nanos: i64,
}

/// Writes a version 1 store of `streams` interleaved streams with `per_stream` events
/// each, in WAL mode as the writer left it, and returns its rows in position order.
fn write_v1(path: &Path, user_version: i32, streams: usize, per_stream: usize) -> Vec<Row> {
    let conn = rusqlite::Connection::open(path).expect("sqlite");
    conn.execute_batch(SCHEMA_V1).expect("schema");
    conn.pragma_update(None, "user_version", user_version)
        .expect("user_version");
    conn.pragma_update(None, "journal_mode", "WAL")
        .expect("wal");
    let names: Vec<String> = (0..streams)
        // Not in name order, so that ids (first appearance) and names disagree.
        .map(|i| format!("inventory-{}", Uuid::from_u128((streams - i) as u128)))
        .collect();
    let mut rows = Vec::new();
    let mut position = 0;
    for version in 0..per_stream {
        for (s, name) in names.iter().enumerate() {
            // Some streams start later than others.
            if version == 0 && s % 3 == 1 && position < 2 {
                continue;
            }
            position += 1;
            rows.push(Row {
                position,
                stream: name.clone(),
                version: rows.iter().filter(|r: &&Row| &r.stream == name).count() as u64,
                id: Uuid::now_v7(),
                event_type: format!("Type{}", position % 4),
                schema_version: 1 + (position % 2) as u32,
                data: format!(r#"{{"n":{position},"s":"{name}"}}"#).into_bytes(),
                correlation_id: Uuid::now_v7(),
                causation_id: (position % 2 == 0).then(Uuid::now_v7),
                acting_user: (position % 3 == 0).then(Uuid::now_v7),
                recorded_at_nanos: 1_763_700_000_000_000_000 + position as i64 * 1_001,
            });
        }
    }
    let mut insert = conn
        .prepare(
            "INSERT INTO events (position, stream, version, event_id, event_type, \
             schema_version, data, correlation_id, causation_id, acting_user, recorded_at) \
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
        )
        .expect("prepare");
    for r in &rows {
        insert
            .execute(rusqlite::params![
                r.position as i64,
                r.stream,
                r.version as i64,
                r.id.as_bytes().as_slice(),
                r.event_type,
                r.schema_version,
                r.data,
                r.correlation_id.as_bytes().as_slice(),
                r.causation_id.as_ref().map(|u| u.as_bytes().as_slice()),
                r.acting_user.as_ref().map(|u| u.as_bytes().as_slice()),
                r.recorded_at_nanos,
            ])
            .expect("insert");
    }
    rows
}

fn assert_same(got: &store::RecordedEvent, want: &Row) {
    assert_eq!(got.position, Position(want.position));
    assert_eq!(got.stream.as_str(), want.stream);
    assert_eq!(got.version, want.version);
    assert_eq!(got.id, want.id);
    assert_eq!(got.event_type, want.event_type);
    assert_eq!(got.schema_version, want.schema_version);
    assert_eq!(got.data, want.data);
    assert_eq!(got.metadata.correlation_id, want.correlation_id);
    assert_eq!(got.metadata.causation_id, want.causation_id);
    assert_eq!(got.metadata.acting_user, want.acting_user);
    assert_eq!(
        got.metadata.recorded_at,
        DateTime::from_timestamp_nanos(want.recorded_at_nanos)
    );
}

fn user_version(path: &Path) -> i32 {
    let conn = rusqlite::Connection::open(path).expect("sqlite");
    conn.pragma_query_value(None, "user_version", |r| r.get(0))
        .expect("user_version")
}

fn new_event() -> NewEvent {
    NewEvent::new(
        "AfterUpgrade",
        1,
        br#"{"ok":true}"#.to_vec(),
        Metadata {
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            acting_user: None,
            recorded_at: chrono::Utc::now(),
        },
    )
}

#[tokio::test]
async fn a_version_1_file_is_upgraded_and_reads_the_same() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("events.db");
    let rows = write_v1(&path, 1, 7, 30);
    let total = rows.len();

    let store = SqliteStore::open(&path, SqliteOptions::default()).expect("open upgrades");
    assert_eq!(store.head().await.expect("head"), Position(total as u64));

    let all = store
        .read_all(Position::START, total + 10)
        .await
        .expect("read_all");
    assert_eq!(all.len(), total);
    for (got, want) in all.iter().zip(&rows) {
        assert_same(got, want);
    }

    let mut names: Vec<String> = rows.iter().map(|r| r.stream.clone()).collect();
    names.sort();
    names.dedup();
    for name in &names {
        let stream = StreamName::new(name.as_str()).expect("name");
        let want: Vec<&Row> = rows.iter().filter(|r| &r.stream == name).collect();
        let got = store.read_stream(&stream, 0, 1000).await.expect("read");
        assert_eq!(got.len(), want.len());
        for (g, w) in got.iter().zip(want.iter().copied()) {
            assert_same(g, w);
        }
        let tail = store.read_stream(&stream, 5, 3).await.expect("read tail");
        assert_eq!(
            tail.iter().map(|e| e.version).collect::<Vec<_>>(),
            [5, 6, 7]
        );
        assert_eq!(
            store.stream_version(&stream).await.expect("version"),
            Some(want.len() as u64 - 1)
        );
    }
    let listed = store
        .list_streams("inventory-", None, 100)
        .await
        .expect("list");
    assert_eq!(
        listed.iter().map(|s| s.as_str()).collect::<Vec<_>>(),
        names.iter().map(String::as_str).collect::<Vec<_>>()
    );

    // The heads are right: appends continue each stream, new streams start at 0.
    let first = StreamName::new(names[0].as_str()).expect("name");
    let first_last = rows.iter().filter(|r| r.stream == names[0]).count() as u64 - 1;
    let err = store
        .append(&first, ExpectedVersion::NoStream, vec![new_event()])
        .await
        .expect_err("the stream exists");
    assert_eq!(err.code(), "CONFLICT");
    let r = store
        .append(
            &first,
            ExpectedVersion::Exact(first_last),
            vec![new_event()],
        )
        .await
        .expect("append after upgrade");
    assert_eq!(
        (r.first_version, r.positions[0]),
        (first_last + 1, Position(total as u64 + 1))
    );
    let fresh = StreamName::new("inventory-new").expect("name");
    let r = store
        .append(&fresh, ExpectedVersion::NoStream, vec![new_event()])
        .await
        .expect("new stream");
    assert_eq!(r.first_version, 0);
    store.shutdown().await;
    drop(store);

    assert_eq!(user_version(&path), 2);
    // Opening again is a plain open of the new version, with everything still there.
    let store = SqliteStore::open(&path, SqliteOptions::default()).expect("reopen");
    let all = store
        .read_all(Position::START, total + 10)
        .await
        .expect("read_all");
    assert_eq!(all.len(), total + 2);
    for (got, want) in all.iter().zip(&rows) {
        assert_same(got, want);
    }
    assert_eq!(all[total + 1].stream, fresh);
    store.shutdown().await;
}

#[tokio::test]
async fn an_empty_version_1_file_is_upgraded() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("events.db");
    write_v1(&path, 1, 0, 0);
    let store = SqliteStore::open(&path, SqliteOptions::default()).expect("open");
    assert_eq!(store.head().await.expect("head"), Position::START);
    let s = StreamName::new("s").expect("name");
    store
        .append(&s, ExpectedVersion::NoStream, vec![new_event()])
        .await
        .expect("append");
    store.shutdown().await;
}

#[test]
fn a_read_only_open_does_not_upgrade() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("events.db");
    write_v1(&path, 1, 3, 3);
    match SqliteStore::open_read_only(&path, SqliteOptions::default()) {
        Err(e @ StoreError::Corrupt(_)) => {
            assert!(e.to_string().contains("open it once for writing"), "{e}")
        }
        other => panic!("expected CORRUPT, got {:?}", other.map(|_| ())),
    }
    assert_eq!(user_version(&path), 1);
}

#[test]
fn an_unknown_schema_version_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("events.db");
    write_v1(&path, 3, 3, 3);
    match SqliteStore::open(&path, SqliteOptions::default()) {
        Err(e @ StoreError::Corrupt(_)) => assert!(e.to_string().contains("version 3"), "{e}"),
        other => panic!("expected CORRUPT, got {:?}", other.map(|_| ())),
    }
    assert_eq!(user_version(&path), 3);
}

#[test]
fn a_version_1_file_with_a_gap_is_refused() {
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("events.db");
    write_v1(&path, 1, 3, 4);
    {
        let conn = rusqlite::Connection::open(&path).expect("sqlite");
        conn.execute(
            "DELETE FROM events WHERE position = (SELECT max(position) FROM events WHERE version = 1)",
            [],
        )
        .expect("delete");
    }
    match SqliteStore::open(&path, SqliteOptions::default()) {
        Err(e @ StoreError::Corrupt(_)) => assert_eq!(e.code(), "CORRUPT"),
        other => panic!("expected CORRUPT, got {:?}", other.map(|_| ())),
    }
    assert_eq!(user_version(&path), 1, "a refused file is not upgraded");
}
