//! Organizer changes, cancellations, profiles and notifications over HTTP: every
//! mutation answers the changed object as the read side shows it right after.

mod common;

use common::{TestApp, code};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn organizers_reshape_events_and_customers_cancel() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (event, standard) = app.published_event(&organizer, 5).await;
    let (_, kim) = app.customer("kim@example.com").await;
    let e = json!({ "e": event });

    let updated = app
        .ok(Some(&organizer), "mutation($e: ID!) { updateEvent(eventId: $e, input: { name: \"Rust Nation 2099\", venue: \"Hall 2\" }) { name venue } }", e.clone())
        .await;
    assert_eq!(
        updated["updateEvent"],
        json!({ "name": "Rust Nation 2099", "venue": "Hall 2" })
    );

    // A seated tier with its seats, more seats later, then a resize and rename of the
    // general tier.
    let added = app
        .ok(
            Some(&organizer),
            "mutation($e: ID!) { addTier(eventId: $e, input: { name: \"Front row\", priceMinor: 12000, currency: \"EUR\", seats: [\"A-1\", \"A-2\"] }) { seatCount tiers { id name seated capacity } } }",
            e.clone(),
        )
        .await;
    assert_eq!(added["addTier"]["seatCount"], 2);
    let front = added["addTier"]["tiers"][1]["id"]
        .as_str()
        .expect("tier")
        .to_owned();
    let mapped = app
        .ok(
            Some(&organizer),
            "mutation($e: ID!, $t: ID!) { defineSeatMap(eventId: $e, seats: [{ seat: \"A-3\", tierId: $t }]) { seatCount tiers { capacity } seats { seat state } } }",
            json!({ "e": event, "t": front }),
        )
        .await;
    assert_eq!(mapped["defineSeatMap"]["seatCount"], 3);
    assert_eq!(mapped["defineSeatMap"]["tiers"][1]["capacity"], 3);
    let resized = app
        .ok(
            Some(&organizer),
            "mutation($e: ID!, $t: ID!) { updateTier(eventId: $e, tierId: $t, input: { name: \"General\", capacity: 8 }) { tiers { name capacity available } } }",
            json!({ "e": event, "t": standard }),
        )
        .await;
    assert_eq!(
        resized["updateTier"]["tiers"][0],
        json!({ "name": "General", "capacity": 8, "available": 8 })
    );
    let bad = app
        .gql(
            Some(&organizer),
            "mutation($e: ID!, $t: ID!) { updateTier(eventId: $e, tierId: $t, input: {}) { id } }",
            json!({ "e": event, "t": standard }),
        )
        .await;
    assert_eq!(code(&bad), "INVALID_INPUT", "{bad}");

    // A customer holds and cancels; the stock comes back.
    let held = app
        .ok(
            Some(&kim),
            "mutation($i: HoldTicketsInput!) { holdTickets(input: $i) { id status } }",
            json!({ "i": { "eventId": event, "tierId": standard, "quantity": 3, "idempotencyKey": "kim-1" } }),
        )
        .await;
    let order = held["holdTickets"]["id"]
        .as_str()
        .expect("order")
        .to_owned();
    let cancelled = app
        .ok(
            Some(&kim),
            "mutation($o: ID!) { cancelOrder(orderId: $o) { status closedAt } }",
            json!({ "o": order }),
        )
        .await;
    assert_eq!(cancelled["cancelOrder"]["status"], "CANCELLED");
    assert!(cancelled["cancelOrder"]["closedAt"].is_string());
    let counts = app
        .ok(
            None,
            "query($e: ID!) { event(id: $e) { tiers { available held } } }",
            e.clone(),
        )
        .await;
    assert_eq!(
        counts["event"]["tiers"][0],
        json!({ "available": 8, "held": 0 })
    );

    // A paid seat, then the organizer cancels the event: the order is cancelled with a
    // refund and its ticket is void.
    let bought = app
        .ok(
            Some(&kim),
            "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { id } }",
            json!({ "i": { "eventId": event, "tierId": front, "seats": ["A-3"], "paymentToken": "tok_success", "idempotencyKey": "kim-2" } }),
        )
        .await;
    let paid = bought["purchaseTickets"]["id"]
        .as_str()
        .expect("order")
        .to_owned();
    let gone = app
        .ok(
            Some(&organizer),
            "mutation($e: ID!) { cancelEvent(eventId: $e, reason: \"venue flooded\") { status } }",
            e.clone(),
        )
        .await;
    assert_eq!(gone["cancelEvent"]["status"], "CANCELLED");
    let after = app
        .ok(
            Some(&kim),
            "query($o: ID!) { order(id: $o) { status refund { amountMinor } tickets { status } } }",
            json!({ "o": paid }),
        )
        .await;
    assert_eq!(after["order"]["status"], "CANCELLED");
    assert_eq!(after["order"]["refund"]["amountMinor"], 12000);
    assert_eq!(after["order"]["tickets"][0]["status"], "VOID");
    let refused = app
        .gql(
            Some(&kim),
            "mutation($i: HoldTicketsInput!) { holdTickets(input: $i) { id } }",
            json!({ "i": { "eventId": event, "tierId": standard, "quantity": 1, "idempotencyKey": "kim-3" } }),
        )
        .await;
    assert_eq!(code(&refused), "EVENT_CANCELLED", "{refused}");

    // The customer changes their profile and password.
    let profile = app
        .ok(
            Some(&kim),
            "mutation { updateProfile(input: { displayName: \"Kim L.\" }) { displayName } }",
            json!({}),
        )
        .await;
    assert_eq!(profile["updateProfile"]["displayName"], "Kim L.");
    let changed = app
        .ok(Some(&kim), "mutation { changePassword(currentPassword: \"password-123\", newPassword: \"a-new-password\") { token } }", json!({}))
        .await;
    let kim = changed["changePassword"]["token"]
        .as_str()
        .expect("token")
        .to_owned();
    let old = app
        .gql(
            None,
            "mutation { login(email: \"kim@example.com\", password: \"password-123\") { token } }",
            json!({}),
        )
        .await;
    assert_eq!(code(&old), "UNAUTHENTICATED");
    app.login("kim@example.com", "a-new-password").await;

    // The in-app notifications tell them what happened (delivered asynchronously).
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let list = app
            .ok(Some(&kim), "{ myNotifications { kind title } }", json!({}))
            .await;
        let kinds: Vec<String> = list["myNotifications"]
            .as_array()
            .expect("list")
            .iter()
            .filter_map(|n| n["kind"].as_str().map(str::to_owned))
            .collect();
        if kinds.len() >= 2 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "notifications did not arrive: {kinds:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    app.stop().await;
}
