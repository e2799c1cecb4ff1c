//! Webhooks over real HTTP: the simulator's HttpSink POSTs to a small axum receiver bound
//! on a real socket, which verifies them the way the API's route does.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use common::{SECRET, TOLERANCE, order, unix_now};
use payments::{
    ChargeOutcome, ChargeRequest, DeliveryError, HttpSink, PaymentPort, ReplayGuard,
    SimulatedProvider, SimulatorConfig, WebhookDelivery, WebhookEvent, WebhookEventType,
    WebhookSink, parse_webhook, test_tokens,
};
use tokio::sync::mpsc;

/// What the receiver shares between requests.
struct Receiver {
    replays: ReplayGuard,
    accepted: mpsc::UnboundedSender<WebhookEvent>,
    /// Requests seen, accepted or not.
    requests: AtomicUsize,
    /// The first this many requests are answered 503, to exercise retries.
    fail_first: usize,
}

async fn receive(
    State(receiver): State<Arc<Receiver>>,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    let n = receiver.requests.fetch_add(1, Ordering::SeqCst);
    if n < receiver.fail_first {
        return (StatusCode::SERVICE_UNAVAILABLE, "try later".into());
    }
    let header = headers
        .get(signature::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    match parse_webhook(&[SECRET], header, &body, unix_now(), TOLERANCE) {
        Err(error) => (StatusCode::UNAUTHORIZED, error.code().to_string()),
        Ok(event) if !receiver.replays.first_time(&event.id) => {
            (StatusCode::OK, "duplicate".into())
        }
        Ok(event) => {
            let _ = receiver.accepted.send(event);
            (StatusCode::OK, "accepted".into())
        }
    }
}

/// Starts a receiver on 127.0.0.1:0; returns its URL, its state and accepted events.
async fn start_receiver(
    fail_first: usize,
) -> (String, Arc<Receiver>, mpsc::UnboundedReceiver<WebhookEvent>) {
    let (accepted, events) = mpsc::unbounded_channel();
    let receiver = Arc::new(Receiver {
        replays: ReplayGuard::new(1024),
        accepted,
        requests: AtomicUsize::new(0),
        fail_first,
    });
    let app = Router::new()
        .route("/webhooks/payments", post(receive))
        .route(
            "/moved",
            post(|| async {
                (
                    StatusCode::TEMPORARY_REDIRECT,
                    [("location", "/webhooks/payments")],
                )
            }),
        )
        .with_state(receiver.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/webhooks/payments",
        listener.local_addr().unwrap()
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, receiver, events)
}

fn http_provider(url: &str) -> SimulatedProvider {
    let sink = HttpSink::new(url)
        .unwrap()
        .with_retries(5, Duration::from_millis(10));
    let config = SimulatorConfig {
        webhook_delay: Duration::from_millis(10),
        ..SimulatorConfig::new(SECRET)
    };
    SimulatedProvider::new(config, Arc::new(sink))
}

#[tokio::test]
async fn a_late_answer_arrives_over_http_signed() {
    let (url, receiver, mut events) = start_receiver(0).await;
    let provider = http_provider(&url);
    let order = order();
    let ChargeOutcome::Pending { charge_id } = provider
        .charge(ChargeRequest::for_order(
            order,
            1200,
            "EUR",
            test_tokens::WEBHOOK_SUCCESS,
        ))
        .await
        .unwrap()
    else {
        panic!("expected pending");
    };
    let event = events.recv().await.unwrap();
    assert_eq!(event.kind, WebhookEventType::ChargeSucceeded);
    assert_eq!(
        (event.charge_id.as_str(), event.order_id),
        (charge_id.as_str(), order)
    );
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_receiver_that_is_down_gets_the_webhook_on_a_retry() {
    let (url, receiver, mut events) = start_receiver(2).await;
    let provider = http_provider(&url);
    provider
        .charge(ChargeRequest::for_order(
            order(),
            1200,
            "EUR",
            test_tokens::WEBHOOK_DECLINE,
        ))
        .await
        .unwrap();
    let event = events.recv().await.unwrap();
    assert_eq!(event.kind, WebhookEventType::ChargeFailed);
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn delivery_gives_up_after_its_attempts() {
    // A port that was just free and has no listener: every connection is refused.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/webhooks/payments",
        listener.local_addr().unwrap()
    );
    drop(listener);
    let sink = HttpSink::new(url)
        .unwrap()
        .with_retries(3, Duration::from_millis(1));
    let err = sink.deliver(&delivery_at(unix_now())).await.unwrap_err();
    assert!(matches!(err, DeliveryError::Transport(_)), "{err:?}");

    let (url, receiver, _events) = start_receiver(usize::MAX).await;
    let sink = HttpSink::new(url)
        .unwrap()
        .with_retries(3, Duration::from_millis(1));
    let err = sink.deliver(&delivery_at(unix_now())).await.unwrap_err();
    assert_eq!(err, DeliveryError::Status(503));
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn redirects_are_not_followed() {
    let (url, receiver, _events) = start_receiver(0).await;
    let moved = url.replace("/webhooks/payments", "/moved");
    let sink = HttpSink::new(moved)
        .unwrap()
        .with_retries(2, Duration::from_millis(1));
    let err = sink.deliver(&delivery_at(unix_now())).await.unwrap_err();
    assert_eq!(err, DeliveryError::Status(307));
    assert_eq!(receiver.requests.load(Ordering::SeqCst), 0);
}

fn delivery_at(timestamp: i64) -> WebhookDelivery {
    let event = WebhookEvent {
        id: format!("evt_{}", uuid::Uuid::new_v4().simple()),
        kind: WebhookEventType::ChargeSucceeded,
        charge_id: "ch_1".into(),
        order_id: order(),
        amount: 100,
        currency: "EUR".into(),
        created: timestamp,
        failure_reason: None,
        refund_id: None,
        refund_reason: None,
    };
    let body = serde_json::to_vec(&event).unwrap();
    let signature_header = signature::sign(SECRET, timestamp, &body);
    WebhookDelivery {
        event,
        body,
        signature_header,
    }
}

async fn post_raw(url: &str, header: &str, body: Vec<u8>) -> (u16, String) {
    let response = reqwest::Client::new()
        .post(url)
        .header(signature::SIGNATURE_HEADER, header)
        .body(body)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

#[tokio::test]
async fn tampered_expired_and_replayed_deliveries_are_refused() {
    let (url, _receiver, mut events) = start_receiver(0).await;

    let good = delivery_at(unix_now());
    let mut tampered_body = good.body.clone();
    let last = tampered_body.len() - 2;
    tampered_body[last] ^= 1;
    assert_eq!(
        post_raw(&url, &good.signature_header, tampered_body).await,
        (401, "SIGNATURE_MISMATCH".into())
    );
    assert_eq!(
        post_raw(&url, "", good.body.clone()).await,
        (401, "SIGNATURE_MALFORMED".into())
    );

    let old = delivery_at(unix_now() - 3600);
    assert_eq!(
        post_raw(&url, &old.signature_header, old.body.clone()).await,
        (401, "SIGNATURE_EXPIRED".into())
    );

    assert_eq!(
        post_raw(&url, &good.signature_header, good.body.clone()).await,
        (200, "accepted".into())
    );
    assert_eq!(
        post_raw(&url, &good.signature_header, good.body.clone()).await,
        (200, "duplicate".into())
    );
    assert_eq!(events.recv().await.unwrap(), good.event);
    assert!(
        events.try_recv().is_err(),
        "the replay was not accepted again"
    );
}
