//! Dead letters an admin can list and retry, and the metrics an operator watches: sent,
//! failed, retried and dead-lettered per channel, and the lag behind the store's head.
//!
//! Its own test binary, because it installs the process-wide metrics recorder.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU16, AtomicUsize, Ordering};
use std::time::Duration;

use axum::http::StatusCode;
use axum::routing::post;
use chrono::Utc;
use common::*;
use notifier::{ChannelKind, Notifier};
use store::EventStore;

#[test]
#[ignore = "entry point of child processes, started by the other tests"]
fn child_role_entry() {
    run_child_role();
}

/// The value of the sample `name{labels}` in a Prometheus text rendering.
fn sample(rendered: &str, name_and_labels: &str) -> Option<f64> {
    rendered.lines().find_map(|line| {
        let rest = line.strip_prefix(name_and_labels)?;
        rest.strip_prefix(' ')?.trim().parse().ok()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_can_be_listed_and_retried_and_everything_is_counted() {
    let metrics = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .expect("recorder");
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(open_store(dir.path()));
    let sink = Sink::start(&dir.path().join("mail"));
    let mut config = notifier_config(&dir.path().join("notifier.db"), sink.port);
    config.webhook.retry.max_attempts = 3;
    let handle = Notifier::start(config, store.clone()).await.expect("start");
    let notifications = handle.notifications();

    // A receiver that first refuses (400: misconfigured), and is later fixed.
    let status = Arc::new(AtomicU16::new(400));
    let hits = Arc::new(AtomicUsize::new(0));
    let app = {
        let (status, hits) = (status.clone(), hits.clone());
        axum::Router::new().route(
            "/hook",
            post(move || {
                let (status, hits) = (status.clone(), hits.clone());
                async move {
                    hits.fetch_add(1, Ordering::SeqCst);
                    StatusCode::from_u16(status.load(Ordering::SeqCst))
                        .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
                }
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let server = tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });

    let users = register_users(store.as_ref(), 4, 0).await;
    let event = create_event(store.as_ref(), Utc::now() + chrono::Duration::days(5)).await;
    notifications
        .register_webhook(event.0, url)
        .await
        .expect("register");
    confirm_orders(store.as_ref(), event, &users).await;

    // A 4xx is permanent: dead-lettered after one try each, no retry.
    let dead = loop {
        let dead = notifications
            .dead_letters(0, 100)
            .await
            .expect("dead letters");
        if dead.len() == 4 {
            break dead;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    assert!(
        dead.iter()
            .all(|d| d.channel == ChannelKind::Webhook && d.attempts == 1)
    );
    assert!(
        dead[0]
            .last_error
            .as_deref()
            .unwrap_or_default()
            .contains("400")
    );
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    // Paging and bad input.
    let page = notifications
        .dead_letters(dead[1].id, 2)
        .await
        .expect("page");
    assert_eq!(
        page.iter().map(|d| d.id).collect::<Vec<_>>(),
        vec![dead[2].id, dead[3].id]
    );
    assert_eq!(
        notifications.dead_letters(0, 0).await.unwrap_err().code(),
        "INVALID_INPUT"
    );
    assert_eq!(
        notifications
            .retry_dead_letter(-5)
            .await
            .unwrap_err()
            .code(),
        "NOT_FOUND"
    );

    // The receiver is fixed; the admin retries every dead letter.
    status.store(200, Ordering::SeqCst);
    for d in &dead {
        notifications.retry_dead_letter(d.id).await.expect("retry");
    }
    // Retrying what is no longer dead is refused, not repeated.
    assert_eq!(
        notifications
            .retry_dead_letter(dead[0].id)
            .await
            .unwrap_err()
            .code(),
        "NOT_FOUND"
    );
    wait_for_async("the retried webhooks", Duration::from_secs(20), || async {
        notifications
            .outbox_counts()
            .await
            .is_ok_and(|c| c.get(&(ChannelKind::Webhook, "delivered".into())) == Some(&4))
    })
    .await;
    assert!(
        notifications
            .dead_letters(0, 100)
            .await
            .expect("dead")
            .is_empty()
    );
    assert_eq!(hits.load(Ordering::SeqCst), 8);

    wait_for("four emails", Duration::from_secs(20), || {
        sink.messages().len() == 4
    })
    .await;
    // Gauges are published once a second.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(notifications.lag().await.expect("lag"), 0);
    assert_eq!(
        notifications.checkpoint().await.expect("checkpoint"),
        store.head().await.expect("head")
    );
    let rendered = metrics.render();
    let get =
        |s: &str| sample(&rendered, s).unwrap_or_else(|| panic!("{s} missing in\n{rendered}"));
    assert_eq!(get(r#"notifier_sent_total{channel="email"}"#), 4.0);
    assert_eq!(get(r#"notifier_sent_total{channel="in_app"}"#), 4.0);
    assert_eq!(get(r#"notifier_sent_total{channel="webhook"}"#), 4.0);
    assert_eq!(get(r#"notifier_failed_total{channel="webhook"}"#), 4.0);
    assert_eq!(
        get(r#"notifier_dead_lettered_total{channel="webhook"}"#),
        4.0
    );
    assert_eq!(
        sample(&rendered, r#"notifier_retried_total{channel="webhook"}"#),
        None
    );
    assert_eq!(get("notifier_lag_events"), 0.0);
    // What waits in the outbox are the reminders, due a day before the event.
    let counts = notifications.outbox_counts().await.expect("counts");
    assert_eq!(
        counts.get(&(ChannelKind::Email, "pending".into())),
        Some(&4)
    );
    assert_eq!(get(r#"notifier_outbox_pending{channel="email"}"#), 4.0);
    assert_eq!(get(r#"notifier_outbox_pending{channel="webhook"}"#), 0.0);
    handle.shutdown().await;
    server.abort();
}
