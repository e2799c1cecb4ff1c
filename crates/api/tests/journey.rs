//! The whole journey over HTTP and a real WebSocket: an organizer creates and publishes an
//! event; customers register, hold, pay and see their tickets; a subscriber sees the
//! counts fall; the door checks a ticket in once.

mod common;

use common::{CREATE_EVENT, TestApp, code, ws_connect, ws_next, ws_send};
use serde_json::{Value, json};

/// Reads `next` messages of subscription `id` until `done` holds for one of them.
async fn next_until(socket: &mut common::Ws, id: &str, done: impl Fn(&Value) -> bool) -> Value {
    loop {
        let message = ws_next(socket).await.expect("subscription open");
        assert_eq!(message["id"], id, "{message}");
        assert_eq!(message["type"], "next", "{message}");
        if done(&message["payload"]["data"]) {
            return message["payload"]["data"].clone();
        }
    }
}

fn standard_available(data: &Value) -> i64 {
    data["seatAvailability"]["tiers"][0]["available"]
        .as_i64()
        .expect("available")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizer_sells_and_customers_buy_while_a_subscriber_watches() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;

    // The organizer creates an event with a general tier and a seated tier, and publishes it.
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let created = app
        .ok(
            Some(&organizer),
            CREATE_EVENT,
            json!({ "i": {
                "name": "Rust Nation", "venue": "Hall 1", "description": "Talks",
                "startsAt": "2099-06-01T18:00:00Z", "endsAt": "2099-06-01T23:00:00Z",
                "perUserLimit": 4,
                "tiers": [
                    { "name": "Standard", "priceMinor": 4500, "currency": "EUR", "capacity": 5 },
                    { "name": "VIP", "priceMinor": 9900, "currency": "EUR", "seats": ["A-1", "A-2"] }
                ],
                "idempotencyKey": "create-rust-nation"
            } }),
        )
        .await;
    let event = &created["createEvent"];
    assert_eq!(event["status"], "DRAFT");
    assert_eq!(event["seatCount"], 2);
    assert_eq!(event["tiers"][0]["available"], 5);
    assert_eq!(event["tiers"][1]["seated"], true);
    let event_id = event["id"].as_str().expect("id").to_owned();
    let standard = event["tiers"][0]["id"].as_str().expect("tier").to_owned();
    let vip = event["tiers"][1]["id"].as_str().expect("tier").to_owned();

    // A draft is invisible to the public.
    let hidden = app
        .gql(
            None,
            "query($e: ID!) { event(id: $e) { id } }",
            json!({ "e": event_id }),
        )
        .await;
    assert_eq!(code(&hidden), "NOT_FOUND");

    let published = app
        .ok(
            Some(&organizer),
            "mutation($e: ID!) { publishEvent(eventId: $e) { status } }",
            json!({ "e": event_id }),
        )
        .await;
    assert_eq!(published["publishEvent"]["status"], "PUBLISHED");

    // Anyone can list and read it.
    let listed = app
        .ok(
            None,
            "{ events(first: 10, filter: { text: \"rust\" }) { nodes { id name tiers { name available } } pageInfo { hasNextPage } } }",
            json!({}),
        )
        .await;
    assert_eq!(listed["events"]["nodes"][0]["id"], event_id.as_str());
    assert_eq!(listed["events"]["pageInfo"]["hasNextPage"], false);

    // A subscriber watches the seat counts.
    let mut socket = ws_connect(&app, None).await;
    ws_send(
        &mut socket,
        json!({ "id": "seats", "type": "subscribe", "payload": {
            "query": "subscription($e: ID!) { seatAvailability(eventId: $e) { eventId tiers { name available held sold } seats { seat state } } }",
            "variables": { "e": event_id }
        } }),
    )
    .await;
    let first = next_until(&mut socket, "seats", |_| true).await;
    assert_eq!(standard_available(&first), 5);

    // A customer holds two tickets and pays.
    let (_, alice) = app.customer("alice@example.com").await;
    let hold = json!({ "i": {
        "eventId": event_id, "tierId": standard, "quantity": 2, "idempotencyKey": "alice-hold-1"
    } });
    let held = app
        .ok(
            Some(&alice),
            "mutation($i: HoldTicketsInput!) { holdTickets(input: $i) { id status quantity expiresAt total { amountMinor currency } } }",
            hold.clone(),
        )
        .await;
    let order = &held["holdTickets"];
    assert_eq!(order["status"], "HELD");
    assert_eq!(order["total"]["amountMinor"], 9000);
    assert!(order["expiresAt"].is_string());
    let order_id = order["id"].as_str().expect("order").to_owned();

    // The subscriber sees the held tickets leave the stock.
    next_until(&mut socket, "seats", |d| standard_available(d) == 3).await;

    // A retry of the same hold holds nothing more.
    let retried = app
        .ok(
            Some(&alice),
            "mutation($i: HoldTicketsInput!) { holdTickets(input: $i) { id } }",
            hold,
        )
        .await;
    assert_eq!(retried["holdTickets"]["id"], order_id.as_str());
    let counts = app
        .ok(
            None,
            "query($e: ID!) { event(id: $e) { tiers { available held } } }",
            json!({ "e": event_id }),
        )
        .await;
    assert_eq!(counts["event"]["tiers"][0]["available"], 3);
    assert_eq!(counts["event"]["tiers"][0]["held"], 2);

    let paid = app
        .ok(
            Some(&alice),
            "mutation($o: ID!) { payOrder(orderId: $o, paymentToken: \"tok_success\") { id status paidAt tickets { id code status } event { name } } }",
            json!({ "o": order_id }),
        )
        .await;
    let paid = &paid["payOrder"];
    assert_eq!(paid["status"], "PAID");
    assert_eq!(paid["event"]["name"], "Rust Nation");
    assert_eq!(paid["tickets"].as_array().expect("tickets").len(), 2);
    let code_of_first = paid["tickets"][0]["code"]
        .as_str()
        .expect("code")
        .to_owned();

    // Sold, not held, in the live counts.
    next_until(&mut socket, "seats", |d| {
        d["seatAvailability"]["tiers"][0]["sold"] == 2
            && d["seatAvailability"]["tiers"][0]["held"] == 0
    })
    .await;

    // Another customer buys a named seat in one call.
    let (_, bob) = app.customer("bob@example.com").await;
    let bought = app
        .ok(
            Some(&bob),
            "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { status seats tickets { seat } } }",
            json!({ "i": {
                "eventId": event_id, "tierId": vip, "seats": ["a-1"],
                "paymentToken": "tok_success", "idempotencyKey": "bob-buy-1"
            } }),
        )
        .await;
    assert_eq!(bought["purchaseTickets"]["status"], "PAID");
    assert_eq!(bought["purchaseTickets"]["tickets"][0]["seat"], "A-1");
    next_until(&mut socket, "seats", |d| {
        d["seatAvailability"]["seats"]
            .as_array()
            .is_some_and(|seats| {
                seats
                    .iter()
                    .any(|s| s["seat"] == "A-1" && s["state"] == "SOLD")
            })
    })
    .await;

    // The seat cannot be sold twice.
    let taken = app
        .gql(
            Some(&alice),
            "mutation($i: HoldTicketsInput!) { holdTickets(input: $i) { id } }",
            json!({ "i": { "eventId": event_id, "tierId": vip, "seats": ["A-1"], "idempotencyKey": "alice-seat" } }),
        )
        .await;
    assert_eq!(code(&taken), "SEAT_TAKEN", "{taken}");

    // More than what is left is refused.
    let (_, carol) = app.customer("carol@example.com").await;
    let sold_out = app
        .gql(
            Some(&carol),
            "mutation($i: HoldTicketsInput!) { holdTickets(input: $i) { id } }",
            json!({ "i": { "eventId": event_id, "tierId": standard, "quantity": 4, "idempotencyKey": "carol-1" } }),
        )
        .await;
    assert_eq!(code(&sold_out), "SOLD_OUT", "{sold_out}");

    // A declined card releases the hold.
    let declined = app
        .gql(
            Some(&carol),
            "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { id } }",
            json!({ "i": { "eventId": event_id, "tierId": standard, "quantity": 1,
                "paymentToken": "tok_decline", "idempotencyKey": "carol-2" } }),
        )
        .await;
    assert_eq!(code(&declined), "PAYMENT_DECLINED", "{declined}");
    let after_decline = app
        .ok(
            None,
            "query($e: ID!) { event(id: $e) { tiers { available held } } }",
            json!({ "e": event_id }),
        )
        .await;
    assert_eq!(after_decline["event"]["tiers"][0]["available"], 3);

    // Each customer sees their own orders and tickets.
    let mine = app
        .ok(
            Some(&alice),
            "{ myOrders(first: 10) { nodes { id status tickets { id } event { id } } } myTickets { id status code } me { email roles } }",
            json!({}),
        )
        .await;
    assert_eq!(
        mine["myOrders"]["nodes"].as_array().expect("orders").len(),
        1
    );
    assert_eq!(mine["myTickets"].as_array().expect("tickets").len(), 2);
    assert_eq!(mine["me"]["email"], "alice@example.com");
    assert_eq!(mine["me"]["roles"], json!(["CUSTOMER"]));
    let bobs = app
        .ok(Some(&bob), "{ myTickets { seat } }", json!({}))
        .await;
    assert_eq!(bobs["myTickets"], json!([{ "seat": "A-1" }]));

    // The door checks a ticket in once.
    let (door_id, door) = app.with_role("door@example.com", "OPERATOR").await;
    app.ok(
        Some(&organizer),
        "mutation($e: ID!, $u: ID!) { assignDoorStaff(eventId: $e, userId: $u) { id } }",
        json!({ "e": event_id, "u": door_id }),
    )
    .await;
    let check_in = "mutation($e: ID!, $c: String!) { checkInTicket(eventId: $e, code: $c) { status checkedInAt } }";
    let checked = app
        .ok(
            Some(&door),
            check_in,
            json!({ "e": event_id, "c": code_of_first }),
        )
        .await;
    assert_eq!(checked["checkInTicket"]["status"], "CHECKED_IN");
    let again = app
        .gql(
            Some(&door),
            check_in,
            json!({ "e": event_id, "c": code_of_first }),
        )
        .await;
    assert_eq!(code(&again), "ALREADY_CHECKED_IN", "{again}");

    // The organizer's sales report.
    let report = app
        .ok(
            Some(&organizer),
            "query($e: ID!) { salesReport(eventId: $e) { tiers { name sold revenue { currency amountMinor } } } }",
            json!({ "e": event_id }),
        )
        .await;
    assert_eq!(report["salesReport"]["tiers"][0]["sold"], 2);
    assert_eq!(
        report["salesReport"]["tiers"][0]["revenue"][0]["amountMinor"],
        9000
    );

    ws_send(&mut socket, json!({ "id": "seats", "type": "complete" })).await;
    drop(socket);
    app.stop().await;
}
