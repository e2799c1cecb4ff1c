//! The per-request time limit, black-box against the real application: a purchase whose
//! payment provider never answers (`tok_timeout`), and a body that trickles in over a raw
//! TCP socket, are both answered `TIMEOUT` once the limit is over; the purchase still runs
//! to its end; WebSocket subscriptions are not limited.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, code, test_config, ws_connect, ws_next, ws_send};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// Long enough for every ordinary request of these tests on a busy machine; far shorter
/// than the command side's wait for a payment provider that never answers (10 s).
const LIMIT: Duration = Duration::from_secs(3);

async fn spawn(dir: &std::path::Path) -> TestApp {
    let mut config = test_config(dir);
    config.service.request_timeout = LIMIT;
    TestApp::start(config).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_past_the_limit_is_answered_timeout_and_still_runs_to_its_end() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(dir.path()).await;
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (event, tier) = app.published_event(&organizer, 10).await;
    let (_, alice) = app.customer("alice@example.com").await;

    let started = Instant::now();
    let response = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&alice)
        .json(&json!({
            "query": "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { id status } }",
            "variables": { "i": { "eventId": event, "tierId": tier, "quantity": 2, "paymentToken": "tok_timeout", "idempotencyKey": "slow" } }
        }))
        .send()
        .await
        .expect("an answer");
    let waited = started.elapsed();
    assert_eq!(response.status(), reqwest::StatusCode::SERVICE_UNAVAILABLE);
    let body: Value = response.json().await.expect("a GraphQL-shaped JSON body");
    assert_eq!(code(&body), "TIMEOUT", "{body}");
    assert_eq!(body["errors"][0]["extensions"]["timeoutMs"], 3000, "{body}");
    assert!(body["data"].is_null(), "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("same idempotency key")),
        "{body}"
    );
    // Not answered before the limit, and not left to the provider's 10 s either.
    assert!(waited >= LIMIT, "answered after {waited:?}");
    assert!(
        waited < Duration::from_secs(10),
        "answered after {waited:?}"
    );

    // The purchase was not dropped half-way: its hold is released when the command side
    // gives up on the provider, and the tickets are back on sale.
    let orders = "{ myOrders { nodes { status quantity } } }";
    let deadline = Instant::now() + Duration::from_secs(60);
    let released = loop {
        let data = app.ok(Some(&alice), orders, json!({})).await;
        let nodes = data["myOrders"]["nodes"].clone();
        if nodes[0]["status"] == "RELEASED" || Instant::now() > deadline {
            break nodes;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(released, json!([{ "status": "RELEASED", "quantity": 2 }]));
    let counts = app
        .ok(
            None,
            "query($e: ID!) { event(id: $e) { tiers { available held sold } } }",
            json!({ "e": event }),
        )
        .await;
    assert_eq!(
        counts["event"]["tiers"][0],
        json!({ "available": 10, "held": 0, "sold": 0 })
    );
    app.stop().await;
}

/// Reads one HTTP/1.1 response (headers and a `Content-Length` body) from `stream`.
async fn read_response(stream: &mut tokio::net::TcpStream) -> (u16, Value) {
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let read = stream.read(&mut chunk).await.expect("read");
        assert!(
            read > 0,
            "connection closed before a full response: {bytes:?}"
        );
        bytes.extend_from_slice(&chunk[..read]);
        let text = String::from_utf8_lossy(&bytes).into_owned();
        let Some((head, body)) = text.split_once("\r\n\r\n") else {
            continue;
        };
        let length: usize = head
            .lines()
            .find_map(|line| {
                let (name, value) = line.split_once(':')?;
                name.eq_ignore_ascii_case("content-length")
                    .then(|| value.trim().parse().ok())?
            })
            .expect("a content-length");
        if body.len() < length {
            continue;
        }
        let status = head
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("a status line");
        return (status, serde_json::from_str(&body[..length]).expect("JSON"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_trickles_in_is_cut_off_at_the_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(dir.path()).await;
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let body = br#"{"query":"{ events { nodes { id } } }"}"#;
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        app.addr,
        body.len()
    );
    // Before the head is sent, so the server's clock cannot have started earlier.
    let started = Instant::now();
    stream.write_all(head.as_bytes()).await.expect("write");
    // One byte every half second: the whole body would take 20 s.
    let answer = {
        let mut sent = 0;
        loop {
            tokio::select! {
                response = read_response(&mut stream) => break response,
                () = tokio::time::sleep(Duration::from_millis(500)) => {
                    assert!(sent < body.len() - 1, "the server waited for the whole body");
                    // A write may fail once the server has answered and closed.
                    let _ = stream.write_all(&body[sent..=sent]).await;
                    sent += 1;
                }
            }
        }
    };
    let waited = started.elapsed();
    let (status, json) = answer;
    assert_eq!(status, 503, "{json}");
    assert_eq!(code(&json), "TIMEOUT", "{json}");
    assert!(waited >= LIMIT, "answered after {waited:?}");

    // The server is unharmed.
    let data = app.ok(None, "{ events { nodes { id } } }", json!({})).await;
    assert_eq!(data["events"]["nodes"], json!([]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_websocket_subscription_outlives_the_request_limit() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = spawn(dir.path()).await;
    let mut socket = ws_connect(&app, None).await;
    tokio::time::sleep(LIMIT + Duration::from_secs(1)).await;
    ws_send(&mut socket, json!({ "type": "ping" })).await;
    let pong = ws_next(&mut socket).await.expect("the socket is open");
    assert_eq!(pong["type"], "pong", "{pong}");
    app.stop().await;
}
