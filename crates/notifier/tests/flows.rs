//! The other notification flows end to end: signed webhooks to a real HTTP receiver,
//! in-app notifications (list, mark read, live feed), reminders that survive a restart and
//! are withdrawn for cancelled events and orders, event changes and cancellations.

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use chrono::Utc;
use common::*;
use domain::ids::streams;
use domain::inventory::{
    DetailsUpdated, EventCancelled, HoldExpired, HoldPlaced, InventoryEvent, OrderCancelled,
    RefundReason,
};
use domain::money::Money;
use domain::{OrderId, TierId};
use futures::StreamExt;
use notifier::channel::webhook::{DELIVERY_HEADER, WebhookBody};
use notifier::{ChannelKind, NotificationKind, Notifier};
use parking_lot::Mutex;
use store::EventStore;
use uuid::Uuid;

#[test]
#[ignore = "entry point of child processes, started by the other tests"]
fn child_role_entry() {
    run_child_role();
}

/// What the receiver saw: (signature header, body, whether it verified).
type Received = Arc<Mutex<Vec<(String, Bytes, bool)>>>;

/// A webhook receiver on a real socket that verifies every request against `secret`, and
/// answers 503 to the first `fail_first` requests (a receiver that is briefly down).
async fn receiver(
    secret: Arc<Mutex<String>>,
    fail_first: usize,
) -> (String, Received, tokio::task::JoinHandle<()>) {
    let received: Received = Arc::default();
    let seen = received.clone();
    let app = axum::Router::new().route(
        "/hook",
        post(move |headers: HeaderMap, body: Bytes| {
            let seen = seen.clone();
            let secret = secret.clone();
            async move {
                let header = headers
                    .get(signature::SIGNATURE_HEADER)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or_default()
                    .to_string();
                let key = secret.lock().clone();
                let ok = signature::verify(
                    &[key.as_bytes()],
                    &header,
                    &body,
                    Utc::now().timestamp(),
                    300,
                )
                .is_ok();
                let mut seen = seen.lock();
                seen.push((header, body, ok));
                if seen.len() <= fail_first {
                    StatusCode::SERVICE_UNAVAILABLE
                } else if ok {
                    StatusCode::OK
                } else {
                    StatusCode::UNAUTHORIZED
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let task = tokio::spawn(async move {
        axum::serve(listener, app).await.expect("serve");
    });
    (url, received, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_webhooks_are_verified_retried_and_tampering_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_store(dir.path()));
    let mut config = notifier_config(&dir.path().join("notifier.db"), free_port());
    config.smtp = None;
    let handle = Notifier::start(config, store.clone()).await.expect("start");
    let notifications = handle.notifications();

    let users = register_users(store.as_ref(), 3, 0).await;
    let event = create_event(store.as_ref(), Utc::now() + chrono::Duration::days(3)).await;
    let secret = Arc::new(Mutex::new(String::new()));
    let (url, received, server) = receiver(secret.clone(), 2).await;

    // Bad registrations are refused with a stable code.
    for bad in [
        "ftp://x.example/",
        "not a url",
        "https://user:pw@x.example/",
    ] {
        let err = notifications
            .register_webhook(event.0, bad.into())
            .await
            .expect_err(bad);
        assert_eq!(err.code(), "INVALID_INPUT");
    }
    let reg = notifications
        .register_webhook(event.0, url.clone())
        .await
        .expect("register");
    *secret.lock() = reg.secret.clone();
    assert_eq!(
        notifications.list_webhooks(event.0).await.expect("list"),
        vec![reg.clone()]
    );

    let orders = confirm_orders(store.as_ref(), event, &users).await;
    wait_for("three verified deliveries", Duration::from_secs(30), || {
        received.lock().iter().filter(|(_, _, ok)| *ok).count() >= 5
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = received.lock().clone();
    assert!(seen.iter().all(|(_, _, ok)| *ok), "every delivery verifies");
    // Two 503s were retried: 3 deliveries, 5 requests, each delivery accepted once.
    assert_eq!(seen.len(), 5);
    let mut accepted: Vec<WebhookBody> = seen[2..]
        .iter()
        .map(|(_, body, _)| serde_json::from_slice(body).expect("body"))
        .collect();
    accepted.sort_by(|a, b| a.id.cmp(&b.id));
    accepted.dedup_by(|a, b| a.id == b.id);
    assert_eq!(accepted.len(), 3);
    for order in &orders {
        let body = accepted
            .iter()
            .find(|b| b.data["order"]["id"] == order.order_id.to_string())
            .expect("a delivery per order");
        assert_eq!(body.kind, "order_confirmed");
        assert_eq!(
            body.data["order"]["tickets"].as_array().map(Vec::len),
            Some(2)
        );
        // Organizers learn of the sale, not the buyer's email.
        assert!(body.data["user"].get("email").is_none());
    }

    // A tampered body with the original signature is refused by the receiver.
    let (header, body, _) = seen[4].clone();
    let mut tampered = body.to_vec();
    let pos = tampered.len() / 2;
    tampered[pos] ^= 1;
    let client = reqwest::Client::new();
    let status = client
        .post(&url)
        .header(signature::SIGNATURE_HEADER, header.clone())
        .header(DELIVERY_HEADER, "replayed")
        .body(tampered)
        .send()
        .await
        .expect("post")
        .status();
    assert_eq!(status, reqwest::StatusCode::UNAUTHORIZED);
    // The untouched body still verifies: the refusal was about the tampering.
    let status = client
        .post(&url)
        .header(signature::SIGNATURE_HEADER, header)
        .body(body)
        .send()
        .await
        .expect("post")
        .status();
    assert_eq!(status, reqwest::StatusCode::OK);

    // A removed webhook gets nothing more.
    notifications.remove_webhook(reg.id).await.expect("remove");
    assert_eq!(
        notifications
            .remove_webhook(reg.id)
            .await
            .unwrap_err()
            .code(),
        "NOT_FOUND"
    );
    let before = received.lock().len();
    confirm_orders(store.as_ref(), event, &users[..1]).await;
    let head = store.head().await.expect("head");
    wait_for_async(
        "the planner to catch up",
        Duration::from_secs(10),
        || async { notifications.checkpoint().await.ok() == Some(head) },
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(received.lock().len(), before);
    handle.shutdown().await;
    server.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_app_notifications_are_listed_marked_read_and_streamed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_store(dir.path()));
    let mut config = notifier_config(&dir.path().join("notifier.db"), free_port());
    config.smtp = None;
    let handle = Notifier::start(config, store.clone()).await.expect("start");
    let notifications = handle.notifications();

    let users = register_users(store.as_ref(), 2, 0).await;
    let (alice, bob) = (users[0], users[1]);
    let mut live = Box::pin(notifications.subscribe_in_app(alice.0));
    let event = create_event(store.as_ref(), Utc::now() + chrono::Duration::days(3)).await;
    confirm_orders(store.as_ref(), event, &[alice, alice, alice, bob]).await;

    for _ in 0..3 {
        let n = tokio::time::timeout(Duration::from_secs(20), live.next())
            .await
            .expect("live notification")
            .expect("stream open");
        assert_eq!(n.user_id, alice.0);
        assert_eq!(n.kind, NotificationKind::OrderConfirmed);
        assert!(n.title.contains("RustConf Live"), "{}", n.title);
    }
    wait_for_async("bob's notification", Duration::from_secs(10), || async {
        notifications
            .list_in_app(bob.0, None, 10)
            .await
            .is_ok_and(|l| l.len() == 1)
    })
    .await;

    let page1 = notifications
        .list_in_app(alice.0, None, 2)
        .await
        .expect("page 1");
    assert_eq!(page1.len(), 2);
    assert!(page1[0].id > page1[1].id, "newest first");
    let page2 = notifications
        .list_in_app(alice.0, Some(page1[1].id), 2)
        .await
        .expect("page 2");
    assert_eq!(page2.len(), 1);
    assert!(page2[0].id < page1[1].id);
    assert_eq!(
        notifications.unread_count(alice.0).await.expect("unread"),
        3
    );

    notifications
        .mark_read(alice.0, page1[0].id)
        .await
        .expect("mark read");
    notifications
        .mark_read(alice.0, page1[0].id)
        .await
        .expect("marking twice is fine");
    assert_eq!(
        notifications.unread_count(alice.0).await.expect("unread"),
        2
    );
    // Bob cannot mark Alice's notification, and bad pages are refused.
    assert_eq!(
        notifications
            .mark_read(bob.0, page1[1].id)
            .await
            .unwrap_err()
            .code(),
        "NOT_FOUND"
    );
    for bad in [0, 101] {
        assert_eq!(
            notifications
                .list_in_app(alice.0, None, bad)
                .await
                .unwrap_err()
                .code(),
            "INVALID_INPUT"
        );
    }
    assert!(
        notifications
            .list_in_app(Uuid::now_v7(), None, 10)
            .await
            .expect("stranger")
            .is_empty()
    );
    handle.shutdown().await;
}

fn hold(user: domain::UserId) -> HoldPlaced {
    HoldPlaced {
        order_id: OrderId(Uuid::now_v7()),
        user_id: user,
        tier_id: TierId(Uuid::now_v7()),
        quantity: 1,
        seats: vec![],
        total: Money::price(2500, "EUR").expect("price"),
        placed_at: Utc::now(),
        expires_at: Utc::now() + chrono::Duration::minutes(10),
        command: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reminders_survive_a_restart_and_skip_cancelled_events_and_orders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_store(dir.path()));
    let sink = Sink::start(&dir.path().join("mail"));
    let db = dir.path().join("notifier.db");
    let lead = Duration::from_secs(3600);
    let mut config = notifier_config(&db, sink.port);
    config.reminder_lead = lead;
    let handle = Notifier::start(config.clone(), store.clone())
        .await
        .expect("start");

    let users = register_users(store.as_ref(), 3, 0).await;
    // Every event starts an hour and a few seconds from now: reminders fall due in seconds.
    let starts = Utc::now()
        + chrono::Duration::from_std(lead).expect("lead")
        + chrono::Duration::seconds(10);
    let kept = create_event(store.as_ref(), starts).await;
    let cancelled_event = create_event(store.as_ref(), starts).await;
    let kept_orders = confirm_orders(store.as_ref(), kept, &users[..2]).await;
    let doomed = confirm_orders(store.as_ref(), cancelled_event, &users[2..]).await;
    // Order of user 1 is cancelled by request (tickets void): no reminder for it.
    append(
        store.as_ref(),
        &streams::inventory(kept),
        &[InventoryEvent::OrderCancelled(OrderCancelled {
            order_id: kept_orders[1].order_id,
            user_id: users[1],
            refund: Some(kept_orders[1].amount),
            reason: RefundReason::CancelledByRequest,
            voided_tickets: kept_orders[1].tickets.iter().map(|t| t.ticket_id).collect(),
            at: Utc::now(),
        })],
    )
    .await;
    append(
        store.as_ref(),
        &streams::inventory(cancelled_event),
        &[
            InventoryEvent::EventCancelled(EventCancelled {
                reason: "the venue flooded".into(),
                at: Utc::now(),
            }),
            InventoryEvent::OrderCancelled(OrderCancelled {
                order_id: doomed[0].order_id,
                user_id: users[2],
                refund: Some(doomed[0].amount),
                reason: RefundReason::EventCancelled,
                voided_tickets: doomed[0].tickets.iter().map(|t| t.ticket_id).collect(),
                at: Utc::now(),
            }),
        ],
    )
    .await;
    let head = store.head().await.expect("head");
    let notifications = handle.notifications();
    wait_for_async("the plan", Duration::from_secs(20), || async {
        notifications.checkpoint().await.ok() == Some(head)
    })
    .await;
    // Stop before any reminder is due; they must survive the restart.
    handle.shutdown().await;
    let subjects = |prefix: &str| -> Vec<(Vec<String>, String)> {
        let mut v: Vec<_> = sink
            .messages()
            .into_iter()
            .filter_map(|m| {
                let s = m.header("Subject")?;
                s.starts_with(prefix)
                    .then(|| (m.envelope_to.clone(), decode_qp(&m.raw)))
            })
            .collect();
        v.sort();
        v
    };
    assert!(
        subjects("Reminder").is_empty(),
        "no reminder before it is due"
    );

    let handle = Notifier::start(config, store.clone())
        .await
        .expect("restart");
    wait_for("the reminder", Duration::from_secs(30), || {
        !subjects("Reminder").is_empty()
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let reminders = subjects("Reminder");
    assert_eq!(
        reminders.len(),
        1,
        "only the live order of the live event: {reminders:?}"
    );
    assert_eq!(reminders[0].0, vec![email_of(0)]);
    for t in &kept_orders[0].tickets {
        assert!(reminders[0].1.contains(&t.ticket_id.to_string()));
    }
    // The refund and the cancellation were told, once each.
    let refunded = subjects("Refund for your order");
    assert_eq!(refunded.len(), 1);
    assert_eq!(refunded[0].0, vec![email_of(1)]);
    assert!(refunded[0].1.contains("EUR 50.00"));
    let cancelled = subjects("RustConf Live is cancelled");
    assert_eq!(cancelled.len(), 1);
    assert_eq!(cancelled[0].0, vec![email_of(2)]);
    assert!(cancelled[0].1.contains("the venue flooded"));
    assert!(cancelled[0].1.contains("EUR 50.00"));
    let counts = handle
        .notifications()
        .outbox_counts()
        .await
        .expect("counts");
    assert_eq!(
        counts.get(&(ChannelKind::Email, "cancelled".into())),
        Some(&2)
    );
    handle.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn holders_hear_of_changes_and_expired_holds_are_told() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_store(dir.path()));
    let sink = Sink::start(&dir.path().join("mail"));
    let handle = Notifier::start(
        notifier_config(&dir.path().join("notifier.db"), sink.port),
        store.clone(),
    )
    .await
    .expect("start");

    let users = register_users(store.as_ref(), 3, 0).await;
    let starts = Utc::now() + chrono::Duration::days(10);
    let event = create_event(store.as_ref(), starts).await;
    confirm_orders(store.as_ref(), event, &users[..2]).await;
    let lapsed = hold(users[2]);
    let mut moved = details(starts + chrono::Duration::days(1));
    moved.venue = "Hall 2".into();
    append(
        store.as_ref(),
        &streams::inventory(event),
        &[
            InventoryEvent::HoldPlaced(lapsed.clone()),
            InventoryEvent::HoldExpired(HoldExpired {
                order_id: lapsed.order_id,
                at: Utc::now(),
            }),
            InventoryEvent::DetailsUpdated(DetailsUpdated { details: moved }),
        ],
    )
    .await;
    let with_subject = |prefix: &str| -> Vec<(Vec<String>, String)> {
        let mut v: Vec<_> = sink
            .messages()
            .into_iter()
            .filter_map(|m| {
                let s = m.header("Subject")?;
                s.starts_with(prefix)
                    .then(|| (m.envelope_to.clone(), decode_qp(&m.raw)))
            })
            .collect();
        v.sort();
        v
    };
    wait_for("change and expiry emails", Duration::from_secs(30), || {
        with_subject("RustConf Live: the details changed").len() == 2
            && with_subject("Your hold").len() == 1
    })
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let changed = with_subject("RustConf Live: the details changed");
    assert_eq!(
        changed.iter().map(|c| c.0[0].clone()).collect::<Vec<_>>(),
        vec![email_of(0), email_of(1)],
        "only ticket holders"
    );
    assert!(changed[0].1.contains("Hall 2"));
    assert!(changed[0].1.contains("before: Hall 1"));
    let expired = with_subject("Your hold");
    assert_eq!(expired[0].0, vec![email_of(2)]);
    assert!(expired[0].1.contains(&lapsed.order_id.to_string()));
    handle.shutdown().await;
}
