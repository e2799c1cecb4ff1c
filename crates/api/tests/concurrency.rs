//! A small ticket war over HTTP: many customers buy at once from a tier too small for
//! them all, some sending the same request twice at the same time. No ticket is sold
//! twice, every acknowledged purchase is kept, and a subscriber sees the count only fall.

mod common;

use common::{TestApp, code, ws_connect, ws_next, ws_send};
use serde_json::json;

const CAPACITY: i64 = 10;
const BUYERS: usize = 24;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_buyers_never_oversell() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = std::sync::Arc::new(TestApp::spawn(dir.path()).await);
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (event, tier) = app.published_event(&organizer, CAPACITY).await;

    let mut socket = ws_connect(&app, None).await;
    ws_send(&mut socket, json!({ "id": "s", "type": "subscribe", "payload": {
        "query": "subscription($e: ID!) { seatAvailability(eventId: $e) { tiers { available sold held } } }",
        "variables": { "e": event } } }))
    .await;
    let first = ws_next(&mut socket).await.expect("first value");
    assert_eq!(
        first["payload"]["data"]["seatAvailability"]["tiers"][0]["available"],
        CAPACITY
    );

    let mut buyers = Vec::new();
    for i in 0..BUYERS {
        buyers.push(app.customer(&format!("buyer{i}@example.com")).await.1);
    }

    // Everyone buys at once; every third buyer sends the same request twice concurrently.
    let mut tasks = Vec::new();
    for (i, token) in buyers.iter().enumerate() {
        let copies = if i % 3 == 0 { 2 } else { 1 };
        for _ in 0..copies {
            let app = std::sync::Arc::clone(&app);
            let token = token.clone();
            let (event, tier) = (event.clone(), tier.clone());
            tasks.push(tokio::spawn(async move {
                let body = app
                    .gql(
                        Some(&token),
                        "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { id status tickets { id } } }",
                        json!({ "i": { "eventId": event, "tierId": tier, "quantity": 1 + (i % 2),
                            "paymentToken": "tok_success", "idempotencyKey": format!("war-{i}") } }),
                    )
                    .await;
                (i, body)
            }));
        }
    }
    let mut acknowledged: std::collections::HashMap<usize, (String, usize)> = Default::default();
    for task in tasks {
        let (i, body) = task.await.expect("task");
        if body["errors"].is_null() {
            let order = &body["data"]["purchaseTickets"];
            assert_eq!(order["status"], "PAID", "{body}");
            let id = order["id"].as_str().expect("id").to_owned();
            let tickets = order["tickets"].as_array().expect("tickets").len();
            assert_eq!(tickets, 1 + (i % 2));
            // A duplicate request answers the same order, never a second one.
            if let Some((previous, _)) = acknowledged.insert(i, (id.clone(), tickets)) {
                assert_eq!(previous, id, "buyer {i} got two orders");
            }
        } else {
            let code = code(&body);
            assert!(
                code == "SOLD_OUT" || code == "CONFLICT" || code == "UNAVAILABLE",
                "buyer {i}: {body}"
            );
        }
    }

    // Exactly what was acknowledged was sold, never more than the capacity, and each
    // buyer holds exactly the tickets they were told about.
    let sold: usize = acknowledged.values().map(|(_, n)| n).sum();
    assert!(sold as i64 <= CAPACITY);
    assert!(
        sold as i64 >= CAPACITY - 1,
        "demand exceeded supply, yet {sold} sold"
    );
    let counts = app
        .ok(
            None,
            "query($e: ID!) { event(id: $e) { tiers { available sold held } } }",
            json!({ "e": event }),
        )
        .await;
    assert_eq!(
        counts["event"]["tiers"][0]["sold"].as_u64(),
        Some(sold as u64)
    );
    assert_eq!(counts["event"]["tiers"][0]["held"], 0);
    let mut ticket_ids = std::collections::HashSet::new();
    for (i, token) in buyers.iter().enumerate() {
        let mine = app
            .ok(
                Some(token),
                "{ myTickets { id } myOrders { nodes { status } } }",
                json!({}),
            )
            .await;
        let tickets = mine["myTickets"].as_array().expect("tickets");
        assert_eq!(
            tickets.len(),
            acknowledged.get(&i).map_or(0, |(_, n)| *n),
            "buyer {i}"
        );
        for ticket in tickets {
            assert!(
                ticket_ids.insert(ticket["id"].as_str().expect("id").to_owned()),
                "a ticket issued twice"
            );
        }
    }

    // The subscriber saw the count fall and never rise, down to what is left.
    let left = CAPACITY - sold as i64;
    let mut last = CAPACITY;
    while last != left {
        let message = ws_next(&mut socket).await.expect("open");
        let available = message["payload"]["data"]["seatAvailability"]["tiers"][0]["available"]
            .as_i64()
            .expect("available");
        assert!(
            available <= last,
            "the count rose from {last} to {available}"
        );
        last = available;
    }
    drop(socket);
    match std::sync::Arc::try_unwrap(app) {
        Ok(app) => app.stop().await,
        Err(_) => panic!("the app is still shared"),
    }
}
