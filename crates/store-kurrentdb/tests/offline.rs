//! What the KurrentDB backend does without a server: bad input is refused before any IO,
//! an unreachable server is a retriable error, and shutdown is honoured.

use std::time::Duration;

use chrono::Utc;
use store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use store_kurrentdb::KurrentDbStore;
use uuid::Uuid;

/// A server address where nothing listens (port 1 on loopback).
const NOWHERE: &str =
    "kurrentdb://127.0.0.1:1?tls=false&maxDiscoverAttempts=1&discoveryInterval=10";

fn event(data: &[u8]) -> NewEvent {
    NewEvent::new(
        "Tested",
        1,
        data.to_vec(),
        Metadata {
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            acting_user: None,
            recorded_at: Utc::now(),
        },
    )
}

#[tokio::test]
async fn bad_connection_strings_are_invalid_input() {
    let err = KurrentDbStore::connect("not a url at all")
        .err()
        .expect("refused");
    assert_eq!(err.code(), "INVALID_INPUT");
}

#[tokio::test]
async fn bad_input_is_refused_before_any_io() {
    let store = KurrentDbStore::connect(NOWHERE).expect("client");
    let s = StreamName::new("inventory-1").expect("name");
    for events in [
        vec![],
        vec![event(b"{oops")],
        vec![event(&vec![b' '; store::MAX_EVENT_BYTES + 1])],
    ] {
        let err = tokio::time::timeout(
            Duration::from_secs(5),
            store.append(&s, ExpectedVersion::Any, events),
        )
        .await
        .expect("refused at once, without contacting the server")
        .expect_err("refused");
        assert_eq!(err.code(), "INVALID_INPUT");
    }
}

#[tokio::test]
async fn an_unreachable_server_is_unavailable() {
    let store = KurrentDbStore::connect(NOWHERE).expect("client");
    let s = StreamName::new("inventory-1").expect("name");
    let err = tokio::time::timeout(
        Duration::from_secs(60),
        store.append(&s, ExpectedVersion::Any, vec![event(b"{}")]),
    )
    .await
    .expect("the client gives up")
    .expect_err("nothing listens there");
    assert_eq!(err.code(), "UNAVAILABLE");
    assert!(err.is_retriable());
}

#[tokio::test]
async fn after_shutdown_everything_is_refused() {
    let store = KurrentDbStore::connect(NOWHERE).expect("client");
    store.shutdown().await;
    let s = StreamName::new("inventory-1").expect("name");
    let err = store
        .append(&s, ExpectedVersion::Any, vec![event(b"{}")])
        .await
        .expect_err("shut down");
    assert_eq!(err.code(), "SHUT_DOWN");
    assert_eq!(
        store.head().await.expect_err("shut down").code(),
        "SHUT_DOWN"
    );
    let mut sub = store.subscribe_all(store::Position::START);
    assert!(futures::StreamExt::next(&mut sub).await.is_none());
}
