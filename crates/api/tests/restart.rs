//! A restart on the same data directory keeps every account, order and ticket, and the
//! system goes on selling; an order paid later by webhook is followed live.

mod common;

use common::{TestApp, code, ws_connect, ws_next, ws_send};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restart_keeps_every_order_ticket_and_account() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (event, tier) = app.published_event(&organizer, 10).await;
    let (_, alice) = app.customer("alice@example.com").await;
    let (_, bob) = app.customer("bob@example.com").await;
    app.ok(
        Some(&alice),
        "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { id } }",
        json!({ "i": { "eventId": event, "tierId": tier, "quantity": 3, "paymentToken": "tok_success", "idempotencyKey": "a1" } }),
    )
    .await;
    let held = app
        .ok(
            Some(&bob),
            "mutation($i: HoldTicketsInput!) { holdTickets(input: $i) { id } }",
            json!({ "i": { "eventId": event, "tierId": tier, "quantity": 2, "idempotencyKey": "b1" } }),
        )
        .await;
    let bobs_order = held["holdTickets"]["id"]
        .as_str()
        .expect("order")
        .to_owned();
    let mine =
        "{ myOrders { nodes { id status quantity } } myTickets { id code status } me { email } }";
    let alice_before = app.ok(Some(&alice), mine, json!({})).await;
    assert_eq!(
        alice_before["myTickets"].as_array().expect("tickets").len(),
        3
    );
    app.stop().await;

    let app = TestApp::spawn(dir.path()).await;
    // Accounts: the same passwords log in, roles kept.
    let alice = app.login("alice@example.com", "password-123").await;
    let bob = app.login("bob@example.com", "password-123").await;
    let organizer = app.login("org@example.com", "password-123").await;
    let alice_after = app.ok(Some(&alice), mine, json!({})).await;
    assert_eq!(alice_after, alice_before);
    let counts = app
        .ok(
            None,
            "query($e: ID!) { event(id: $e) { status tiers { available held sold } } }",
            json!({ "e": event }),
        )
        .await;
    assert_eq!(counts["event"]["status"], "PUBLISHED");
    assert_eq!(
        counts["event"]["tiers"][0],
        json!({ "available": 5, "held": 2, "sold": 3 })
    );

    // Bob's hold survived and can still be paid; the organizer still organizes.
    let paid = app
        .ok(
            Some(&bob),
            "mutation($o: ID!) { payOrder(orderId: $o, paymentToken: \"tok_success\") { status tickets { id } } }",
            json!({ "o": bobs_order }),
        )
        .await;
    assert_eq!(paid["payOrder"]["status"], "PAID");
    assert_eq!(
        paid["payOrder"]["tickets"]
            .as_array()
            .expect("tickets")
            .len(),
        2
    );
    let report = app
        .ok(
            Some(&organizer),
            "query($e: ID!) { salesReport(eventId: $e) { tiers { sold } } }",
            json!({ "e": event }),
        )
        .await;
    assert_eq!(report["salesReport"]["tiers"][0]["sold"], 5);
    // The admin created at the first start is not created twice.
    let admin = app.login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await;
    let me = app.ok(Some(&admin), "{ me { roles } }", json!({})).await;
    assert_eq!(me["me"]["roles"], json!(["ADMIN"]));
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_paid_by_webhook_is_followed_live() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (event, tier) = app.published_event(&organizer, 10).await;
    let (_, alice) = app.customer("alice@example.com").await;

    // The provider answers later: the order stays held until its signed webhook arrives.
    let pending = app
        .ok(
            Some(&alice),
            "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { id status } }",
            json!({ "i": { "eventId": event, "tierId": tier, "quantity": 1, "paymentToken": "tok_webhook_success", "idempotencyKey": "late" } }),
        )
        .await;
    assert_eq!(pending["purchaseTickets"]["status"], "HELD");
    let order = pending["purchaseTickets"]["id"]
        .as_str()
        .expect("order")
        .to_owned();

    let mut socket = ws_connect(&app, Some(&alice)).await;
    ws_send(&mut socket, json!({ "id": "o", "type": "subscribe", "payload": {
        "query": "subscription($o: ID!) { orderStatus(orderId: $o) { status tickets { id } } }", "variables": { "o": order } } }))
    .await;
    let mut statuses = Vec::new();
    loop {
        let message = ws_next(&mut socket).await.expect("open");
        if message["type"] == "complete" {
            break;
        }
        let status = message["payload"]["data"]["orderStatus"]["status"]
            .as_str()
            .expect("status")
            .to_owned();
        statuses.push(status.clone());
        if status == "PAID" {
            assert_eq!(
                message["payload"]["data"]["orderStatus"]["tickets"]
                    .as_array()
                    .expect("tickets")
                    .len(),
                1
            );
            break;
        }
    }
    assert_eq!(
        statuses.first().map(String::as_str),
        Some("HELD"),
        "{statuses:?}"
    );
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("PAID"),
        "{statuses:?}"
    );

    // Unknown orders are refused over the socket too.
    ws_send(&mut socket, json!({ "id": "x", "type": "subscribe", "payload": {
        "query": "subscription($o: ID!) { orderStatus(orderId: $o) { status } }", "variables": { "o": uuid::Uuid::new_v4().to_string() } } }))
    .await;
    let message = ws_next(&mut socket).await.expect("open");
    assert_eq!(code(&message["payload"]), "NOT_FOUND", "{message}");
    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_payment_providers_books_survive_a_restart_and_nothing_is_charged_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (event, tier) = app.published_event(&organizer, 10).await;
    let (_, alice) = app.customer("alice@example.com").await;
    const PURCHASE: &str =
        "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { id status } }";
    let input = json!({ "i": { "eventId": event, "tierId": tier, "quantity": 2, "paymentToken": "tok_success", "idempotencyKey": "once" } });
    let first = app.ok(Some(&alice), PURCHASE, input.clone()).await;
    assert_eq!(first["purchaseTickets"]["status"], "PAID");
    let order: uuid::Uuid = first["purchaseTickets"]["id"]
        .as_str()
        .expect("order")
        .parse()
        .expect("uuid");
    app.stop().await;

    let app = TestApp::spawn(dir.path()).await;
    let retried = app.ok(Some(&alice), PURCHASE, input).await;
    assert_eq!(retried, first);
    app.stop().await;

    // The provider's own books, in the data directory: one charge, for the whole order.
    let (sink, _webhooks) = payments::ChannelSink::new();
    let provider = payments::SimulatedProvider::open(
        payments::SimulatorConfig::new("unused"),
        std::sync::Arc::new(sink),
        dir.path().join(api::app::PAYMENTS_DB),
    )
    .expect("the ledger opens");
    let ledger = provider.ledger();
    assert_eq!(ledger.charges_for(order).len(), 1, "{ledger:?}");
    assert_eq!(ledger.captured_minor(order), 2 * 4500);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_payment_ledger_stops_the_start_with_a_clear_error() {
    let dir = tempfile::tempdir().expect("tempdir");
    let ledger = dir.path().join(api::app::PAYMENTS_DB);
    std::fs::write(&ledger, b"not a ledger at all, just some bytes").expect("write");
    let error = match api::Application::build(common::test_config(dir.path())).await {
        Ok(_) => panic!("the application started on a damaged ledger"),
        Err(error) => format!("{error:#}"),
    };
    assert!(error.contains("payment provider's ledger"), "{error}");
    assert!(error.contains("not a SQLite database"), "{error}");
    assert_eq!(
        std::fs::read(&ledger).expect("read"),
        b"not a ledger at all, just some bytes",
        "the file is left as it was"
    );
}
