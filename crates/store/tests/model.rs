//! Property test: any sequence of appends (with any expected version), reopenings and
//! reads behaves exactly like a simple in-memory model of an event store.

use std::collections::HashMap;

use chrono::Utc;
use proptest::prelude::*;
use store::sqlite::{SqliteOptions, SqliteStore};
use store::{EventStore, ExpectedVersion, Metadata, NewEvent, Position, StoreError, StreamName};
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    Append {
        stream: usize,
        expected: Expected,
        events: usize,
    },
    Reopen,
    ReadStream {
        stream: usize,
        from: u64,
        max: usize,
    },
    ReadAll {
        after: u64,
        max: usize,
    },
    ListStreams {
        prefix: &'static str,
        after: Option<usize>,
        max: usize,
    },
}

#[derive(Debug, Clone, Copy)]
enum Expected {
    NoStream,
    Exact(u64),
    StreamExists,
    Any,
}

fn op() -> impl Strategy<Value = Op> {
    let expected = prop_oneof![
        Just(Expected::NoStream),
        (0u64..6).prop_map(Expected::Exact),
        Just(Expected::StreamExists),
        Just(Expected::Any),
    ];
    prop_oneof![
        8 => (0usize..4, expected, 1usize..4).prop_map(|(stream, expected, events)| Op::Append { stream, expected, events }),
        1 => Just(Op::Reopen),
        2 => (0usize..4, 0u64..8, 0usize..5).prop_map(|(stream, from, max)| Op::ReadStream { stream, from, max }),
        2 => (0u64..30, 0usize..6).prop_map(|(after, max)| Op::ReadAll { after, max }),
        1 => (
            prop::sample::select(vec!["", "stream-", "stream-1", "stream-x", "a"]),
            proptest::option::of(0usize..4),
            0usize..5,
        )
            .prop_map(|(prefix, after, max)| Op::ListStreams { prefix, after, max }),
    ]
}

fn name(i: usize) -> StreamName {
    StreamName::new(format!("stream-{i}")).expect("name")
}

fn new_event() -> NewEvent {
    NewEvent::new(
        "Modelled",
        1,
        b"{}".to_vec(),
        Metadata {
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            acting_user: None,
            recorded_at: Utc::now(),
        },
    )
}

async fn run(ops: Vec<Op>) {
    let dir = tempfile::tempdir().expect("dir");
    let options = || SqliteOptions {
        verify_on_open: true,
        ..SqliteOptions::default()
    };
    let mut store = SqliteStore::open(dir.path(), options()).expect("open");
    // The model: each stream's event ids, and the global log of (stream, id).
    let mut streams: HashMap<usize, Vec<Uuid>> = HashMap::new();
    let mut log: Vec<(usize, Uuid)> = Vec::new();
    for op in ops {
        match op {
            Op::Append {
                stream,
                expected,
                events,
            } => {
                let actual = streams.get(&stream).map(|ids| ids.len() as u64 - 1);
                let port_expected = match expected {
                    Expected::NoStream => ExpectedVersion::NoStream,
                    Expected::Exact(v) => ExpectedVersion::Exact(v),
                    Expected::StreamExists => ExpectedVersion::StreamExists,
                    Expected::Any => ExpectedVersion::Any,
                };
                let batch: Vec<NewEvent> = (0..events).map(|_| new_event()).collect();
                let ids: Vec<Uuid> = batch.iter().map(|e| e.id).collect();
                let result = store.append(&name(stream), port_expected, batch).await;
                if port_expected.matches(actual) {
                    let r = result.expect("the model accepts this append");
                    let first = actual.map_or(0, |v| v + 1);
                    assert_eq!(
                        (r.first_version, r.last_version),
                        (first, first + events as u64 - 1)
                    );
                    let positions: Vec<Position> = (0..events)
                        .map(|i| Position((log.len() + i + 1) as u64))
                        .collect();
                    assert_eq!(r.positions, positions);
                    streams.entry(stream).or_default().extend(&ids);
                    log.extend(ids.iter().map(|id| (stream, *id)));
                } else {
                    match result {
                        Err(StoreError::WrongExpectedVersion {
                            actual: a,
                            expected: e,
                            ..
                        }) => {
                            assert_eq!((a, e), (actual, port_expected));
                        }
                        other => panic!("the model refuses this append, the store said {other:?}"),
                    }
                }
            }
            Op::Reopen => {
                store.shutdown().await;
                store = SqliteStore::open(dir.path(), options()).expect("reopen");
            }
            Op::ReadStream { stream, from, max } => {
                let got: Vec<Uuid> = store
                    .read_stream(&name(stream), from, max)
                    .await
                    .expect("read")
                    .iter()
                    .map(|e| e.id)
                    .collect();
                let want: Vec<Uuid> = streams.get(&stream).map_or(Vec::new(), |ids| {
                    ids.iter().skip(from as usize).take(max).copied().collect()
                });
                assert_eq!(got, want);
            }
            Op::ReadAll { after, max } => {
                let got: Vec<(u64, Uuid)> = store
                    .read_all(Position(after), max)
                    .await
                    .expect("read_all")
                    .iter()
                    .map(|e| (e.position.0, e.id))
                    .collect();
                let want: Vec<(u64, Uuid)> = log
                    .iter()
                    .enumerate()
                    .skip(after as usize)
                    .take(max)
                    .map(|(i, (_, id))| (i as u64 + 1, *id))
                    .collect();
                assert_eq!(got, want);
            }
            Op::ListStreams { prefix, after, max } => {
                let after = after.map(name);
                let got: Vec<String> = store
                    .list_streams(prefix, after.as_ref(), max)
                    .await
                    .expect("list_streams")
                    .iter()
                    .map(|s| s.as_str().to_owned())
                    .collect();
                let mut want: Vec<String> = streams
                    .keys()
                    .map(|i| name(*i).as_str().to_owned())
                    .filter(|n| n.starts_with(prefix))
                    .filter(|n| after.as_ref().is_none_or(|a| n.as_str() > a.as_str()))
                    .collect();
                want.sort();
                want.truncate(max);
                assert_eq!(got, want);
            }
        }
        assert_eq!(
            store.head().await.expect("head"),
            Position(log.len() as u64)
        );
    }
    for (stream, ids) in &streams {
        assert_eq!(
            store.stream_version(&name(*stream)).await.expect("version"),
            Some(ids.len() as u64 - 1)
        );
    }
    store.shutdown().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_the_model(ops in proptest::collection::vec(op(), 1..60)) {
        let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
        runtime.block_on(run(ops));
    }
}
