//! Email delivery end to end: domain events in a real store on disk, the notifier, and a
//! real SMTP server in its own process that is killed and restarted mid-burst; then the
//! notifier itself in its own process, killed mid-burst and restarted.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use notifier::{ChannelKind, Notifier};
use store::EventStore;

/// Not a test: the entry point of the child processes (see `common`).
#[test]
#[ignore = "entry point of child processes, started by the other tests"]
fn child_role_entry() {
    run_child_role();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_confirmation_arrives_once_with_its_tickets() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_store(dir.path()));
    let sink = Sink::start(&dir.path().join("mail"));
    let handle = Notifier::start(
        notifier_config(&dir.path().join("notifier.db"), sink.port),
        store.clone(),
    )
    .await
    .expect("start");

    let users = register_users(store.as_ref(), 30, 0).await;
    let event = create_event(
        store.as_ref(),
        chrono::Utc::now() + chrono::Duration::days(30),
    )
    .await;
    let orders = confirm_orders(store.as_ref(), event, &users).await;

    wait_for("30 confirmations", Duration::from_secs(60), || {
        by_message_id(&sink.messages()).0.len() >= 30
    })
    .await;
    // Give a duplicate, if the notifier were to send one, the time to arrive.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let orders: Vec<_> = orders.into_iter().enumerate().collect();
    let raw = assert_confirmations(&sink, &orders);
    assert_eq!(raw, 30, "no duplicate without a crash");

    let counts = handle
        .notifications()
        .outbox_counts()
        .await
        .expect("counts");
    assert_eq!(
        counts.get(&(ChannelKind::Email, "delivered".into())),
        Some(&30)
    );
    // In-app copies too, one per order.
    assert_eq!(
        counts.get(&(ChannelKind::InApp, "delivered".into())),
        Some(&30)
    );
    assert_eq!(
        handle
            .notifications()
            .checkpoint()
            .await
            .expect("checkpoint"),
        store.head().await.expect("head")
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn smtp_down_during_a_burst_delays_but_loses_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_store(dir.path()));
    let mut sink = Sink::start(&dir.path().join("mail"));
    let handle = Notifier::start(
        notifier_config(&dir.path().join("notifier.db"), sink.port),
        store.clone(),
    )
    .await
    .expect("start");
    let notifications = handle.notifications();

    let n = 120;
    let users = register_users(store.as_ref(), n, 0).await;
    let event = create_event(
        store.as_ref(),
        chrono::Utc::now() + chrono::Duration::days(30),
    )
    .await;
    let first = confirm_orders(store.as_ref(), event, &users[..n / 3]).await;
    wait_for(
        "some deliveries before the outage",
        Duration::from_secs(30),
        || !sink.messages().is_empty(),
    )
    .await;
    sink.kill();
    let rest = confirm_orders(store.as_ref(), event, &users[n / 3..]).await;
    // While the server is down, the failures are recorded and retried, not lost.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let counts = notifications.outbox_counts().await.expect("counts");
        let pending = counts
            .get(&(ChannelKind::Email, "pending".into()))
            .copied()
            .unwrap_or(0);
        if pending > 0 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "nothing pending while SMTP is down"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // In-app delivery goes on while email is down.
    wait_for_async(
        "in-app delivery during the outage",
        Duration::from_secs(60),
        || async {
            notifications.outbox_counts().await.is_ok_and(|c| {
                c.get(&(ChannelKind::InApp, "delivered".into())) == Some(&(n as u64))
            })
        },
    )
    .await;
    let counts = notifications.outbox_counts().await.expect("counts");
    assert!(
        counts
            .get(&(ChannelKind::Email, "pending".into()))
            .copied()
            .unwrap_or(0)
            > 0,
        "email waits for the server"
    );
    sink.restart();

    wait_for(
        "every confirmation after the outage",
        Duration::from_secs(90),
        || by_message_id(&sink.messages()).0.len() >= n,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let orders: Vec<_> = first.into_iter().chain(rest).enumerate().collect();
    let raw = assert_confirmations(&sink, &orders);
    // A kill can only duplicate a message the server stored but did not acknowledge:
    // at most one per SMTP session in flight.
    assert!(raw <= n + 8, "{raw} raw messages for {n} confirmations");
    eprintln!("smtp outage: {n} confirmations, {raw} raw messages");
    let counts = notifications.outbox_counts().await.expect("counts");
    assert_eq!(
        counts.get(&(ChannelKind::Email, "delivered".into())),
        Some(&(n as u64))
    );
    assert_eq!(counts.get(&(ChannelKind::Email, "dead".into())), None);
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn notifier_killed_mid_burst_resumes_without_loss_or_duplicate() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_store(dir.path()));
    let sink = Sink::start(&dir.path().join("mail"));
    let env = [
        (
            "STORE_PATH",
            dir.path().join("events.db").display().to_string(),
        ),
        (
            "NOTIFIER_DB",
            dir.path().join("notifier.db").display().to_string(),
        ),
        ("SMTP_PORT", sink.port.to_string()),
    ];
    let mut notifier = ChildGuard(Some(spawn_role("notifier", &env)));

    let n = 300;
    let users = register_users(store.as_ref(), n, 0).await;
    let event = create_event(
        store.as_ref(),
        chrono::Utc::now() + chrono::Duration::days(30),
    )
    .await;
    let orders = confirm_orders(store.as_ref(), event, &users).await;
    wait_for("the burst under way", Duration::from_secs(60), || {
        sink.messages().len() >= n / 4
    })
    .await;
    notifier.kill();
    let at_kill = by_message_id(&sink.messages()).0.len();
    assert!(
        at_kill < n,
        "the kill came too late to test anything ({at_kill} of {n} sent)"
    );

    let mut notifier = ChildGuard(Some(spawn_role("notifier", &env)));
    wait_for(
        "every confirmation after the restart",
        Duration::from_secs(90),
        || by_message_id(&sink.messages()).0.len() >= n,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let orders: Vec<_> = orders.into_iter().enumerate().collect();
    let raw = assert_confirmations(&sink, &orders);
    // Only messages accepted by the server in the instant before the kill, and not yet
    // recorded, can go out twice; both copies share a Message-ID (checked above).
    assert!(raw <= n + 8, "{raw} raw messages for {n} confirmations");
    eprintln!("notifier kill: {at_kill} of {n} sent before the kill, {raw} raw messages");
    notifier.kill();
    drop(store);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_shutdown_mid_burst_sends_nothing_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_store(dir.path()));
    let sink = Sink::start(&dir.path().join("mail"));
    let config = notifier_config(&dir.path().join("notifier.db"), sink.port);
    let handle = Notifier::start(config.clone(), store.clone())
        .await
        .expect("start");

    let n = 300;
    let users = register_users(store.as_ref(), n, 0).await;
    let event = create_event(
        store.as_ref(),
        chrono::Utc::now() + chrono::Duration::days(30),
    )
    .await;
    let orders = confirm_orders(store.as_ref(), event, &users).await;
    wait_for("the burst under way", Duration::from_secs(60), || {
        sink.messages().len() >= n / 4
    })
    .await;
    // A clean stop lets the deliveries in flight finish and records them.
    handle.shutdown().await;
    let at_stop = sink.messages().len();
    assert!(
        at_stop < n,
        "the stop came too late to test anything ({at_stop} of {n} sent)"
    );

    let handle = Notifier::start(config, store.clone())
        .await
        .expect("restart");
    wait_for(
        "every confirmation after the restart",
        Duration::from_secs(90),
        || by_message_id(&sink.messages()).0.len() >= n,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let orders: Vec<_> = orders.into_iter().enumerate().collect();
    let raw = assert_confirmations(&sink, &orders);
    assert_eq!(
        raw, n,
        "no copy at all after a clean stop ({at_stop} sent before it)"
    );
    handle.shutdown().await;
}
