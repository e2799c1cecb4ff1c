//! Authorization for each role: anonymous callers, customers, another organizer and
//! operators are refused what is not theirs; organizers and admins get what is.

mod common;

use common::{TestApp, code, ws_connect, ws_next, ws_send};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_role_gets_only_what_is_its_own() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (_, rival) = app.with_role("rival@example.com", "ORGANIZER").await;
    let (door_id, door) = app.with_role("door@example.com", "OPERATOR").await;
    let (alice_id, alice) = app.customer("alice@example.com").await;
    let (_, bob) = app.customer("bob@example.com").await;
    let admin = app.login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await;
    let (event, tier) = app.published_event(&organizer, 10).await;
    let vars = json!({ "e": event });

    let bought = app
        .ok(
            Some(&alice),
            "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { id tickets { id code } } }",
            json!({ "i": { "eventId": event, "tierId": tier, "quantity": 1, "paymentToken": "tok_success", "idempotencyKey": "a1" } }),
        )
        .await;
    let order = bought["purchaseTickets"]["id"]
        .as_str()
        .expect("order")
        .to_owned();
    let ticket = bought["purchaseTickets"]["tickets"][0]["id"]
        .as_str()
        .expect("ticket")
        .to_owned();
    let ticket_code = bought["purchaseTickets"]["tickets"][0]["code"]
        .as_str()
        .expect("code")
        .to_owned();

    // Anonymous: everything personal needs a token.
    for query in [
        "{ me { id } }",
        "{ myOrders { nodes { id } } }",
        "{ myTickets { id } }",
        "{ myNotifications { id } }",
    ] {
        let body = app.gql(None, query, json!({})).await;
        assert_eq!(code(&body), "UNAUTHENTICATED", "{query}: {body}");
    }
    let body = app
        .gql(None, "mutation($i: HoldTicketsInput!) { holdTickets(input: $i) { id } }",
            json!({ "i": { "eventId": event, "tierId": tier, "quantity": 1, "idempotencyKey": "anon" } }))
        .await;
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
    let body = app
        .gql(None, "mutation { createEvent(input: { name: \"x\", venue: \"y\", startsAt: \"2099-01-01T00:00:00Z\", endsAt: \"2099-01-02T00:00:00Z\" }) { id } }", json!({}))
        .await;
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");

    // A customer: no organizer, operator or admin work, and nobody else's orders.
    let body = app
        .gql(Some(&bob), "mutation { createEvent(input: { name: \"x\", venue: \"y\", startsAt: \"2099-01-01T00:00:00Z\", endsAt: \"2099-01-02T00:00:00Z\" }) { id } }", json!({}))
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let body = app
        .gql(
            Some(&bob),
            "mutation($u: ID!) { grantRole(userId: $u, role: ADMIN) { id } }",
            json!({ "u": alice_id }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let body = app
        .gql(
            Some(&bob),
            "mutation($e: ID!, $c: String!) { checkInTicket(eventId: $e, code: $c) { id } }",
            json!({ "e": event, "c": ticket_code }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    for query in [
        "query($e: ID!) { salesReport(eventId: $e) { eventId } }",
        "query($e: ID!) { auditTrail(eventId: $e) { version } }",
        "query($e: ID!) { eventStateAt(eventId: $e) { version } }",
    ] {
        let body = app.gql(Some(&bob), query, vars.clone()).await;
        assert_eq!(code(&body), "FORBIDDEN", "{query}: {body}");
    }
    let body = app
        .gql(
            Some(&bob),
            "query($o: ID!) { order(id: $o) { id } }",
            json!({ "o": order }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let body = app
        .gql(
            Some(&bob),
            "query($t: ID!) { ticket(id: $t) { id } }",
            json!({ "t": ticket }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let body = app
        .gql(
            Some(&bob),
            "mutation($o: ID!) { payOrder(orderId: $o, paymentToken: \"tok_success\") { id } }",
            json!({ "o": order }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let body = app
        .gql(
            Some(&bob),
            "mutation($o: ID!) { cancelOrder(orderId: $o) { id } }",
            json!({ "o": order }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let bobs = app
        .ok(
            Some(&bob),
            "{ myOrders { nodes { id } } myTickets { id } }",
            json!({}),
        )
        .await;
    assert_eq!(
        bobs,
        json!({ "myOrders": { "nodes": [] }, "myTickets": [] })
    );

    // Another organizer manages only their own events.
    let body = app
        .gql(Some(&rival), "mutation($e: ID!) { updateEvent(eventId: $e, input: { name: \"Mine now\" }) { name } }", vars.clone())
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let body = app
        .gql(
            Some(&rival),
            "mutation($e: ID!) { cancelEvent(eventId: $e, reason: \"no\") { status } }",
            vars.clone(),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    for query in [
        "query($e: ID!) { salesReport(eventId: $e) { eventId } }",
        "query($e: ID!) { auditTrail(eventId: $e) { version } }",
    ] {
        let body = app.gql(Some(&rival), query, vars.clone()).await;
        assert_eq!(code(&body), "FORBIDDEN", "{query}: {body}");
    }
    let body = app
        .gql(
            Some(&rival),
            "query($o: ID!) { order(id: $o) { id } }",
            json!({ "o": order }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");

    // An operator checks in but does not organize.
    let body = app
        .gql(Some(&door), "mutation { createEvent(input: { name: \"x\", venue: \"y\", startsAt: \"2099-01-01T00:00:00Z\", endsAt: \"2099-01-02T00:00:00Z\" }) { id } }", json!({}))
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let body = app
        .gql(
            Some(&door),
            "query($e: ID!) { salesReport(eventId: $e) { eventId } }",
            vars.clone(),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    app.ok(
        Some(&organizer),
        "mutation($e: ID!, $u: ID!) { assignDoorStaff(eventId: $e, userId: $u) { id } }",
        json!({ "e": event, "u": door_id }),
    )
    .await;
    let checked = app
        .ok(
            Some(&door),
            "mutation($e: ID!, $c: String!) { checkInTicket(eventId: $e, code: $c) { status } }",
            json!({ "e": event, "c": ticket_code }),
        )
        .await;
    assert_eq!(checked["checkInTicket"]["status"], "CHECKED_IN");
    // A forged code is refused before any lookup.
    let mut forged = ticket_code.clone().into_bytes();
    let last = forged.len() - 2;
    forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
    let body = app
        .gql(
            Some(&door),
            "mutation($e: ID!, $c: String!) { checkInTicket(eventId: $e, code: $c) { id } }",
            json!({ "e": event, "c": String::from_utf8(forged).expect("utf8") }),
        )
        .await;
    assert_eq!(code(&body), "INVALID_TICKET_CODE", "{body}");

    // The organizer and an admin see the event's orders, sales and history.
    for token in [&organizer, &admin] {
        let data = app
            .ok(
                Some(token),
                "query($e: ID!, $o: ID!) { order(id: $o) { id } salesReport(eventId: $e) { tiers { sold } } auditTrail(eventId: $e) { version eventType actingUserId } eventStateAt(eventId: $e) { version state } }",
                json!({ "e": event, "o": order }),
            )
            .await;
        assert_eq!(data["order"]["id"], order.as_str());
        assert_eq!(data["salesReport"]["tiers"][0]["sold"], 1);
        let trail = data["auditTrail"].as_array().expect("trail");
        assert!(trail.len() >= 4, "{trail:?}");
        assert_eq!(trail[0]["version"], 0);
        assert!(
            trail.iter().any(|e| e["actingUserId"] == alice_id.as_str()),
            "{trail:?}"
        );
        assert_eq!(
            data["eventStateAt"]["version"].as_u64(),
            trail.last().and_then(|e| e["version"].as_u64())
        );
    }
    // The state before anything was sold, replayed from history.
    let trail = app
        .ok(
            Some(&organizer),
            "query($e: ID!) { auditTrail(eventId: $e) { position } }",
            vars.clone(),
        )
        .await;
    let created_at = trail["auditTrail"][0]["position"]
        .as_u64()
        .expect("position");
    let before = app
        .ok(
            Some(&organizer),
            "query($e: ID!, $p: Int!) { eventStateAt(eventId: $e, position: $p) { version state } }",
            json!({ "e": event, "p": created_at }),
        )
        .await;
    assert_eq!(before["eventStateAt"]["version"], 0);
    assert_eq!(before["eventStateAt"]["state"]["orders"], json!([]));
    let body = app
        .gql(
            Some(&organizer),
            "query($e: ID!) { eventStateAt(eventId: $e, position: 0) { version } }",
            vars.clone(),
        )
        .await;
    assert_eq!(code(&body), "INVALID_INPUT", "{body}");

    // A customer cannot follow someone else's order live.
    let mut socket = ws_connect(&app, Some(&bob)).await;
    ws_send(&mut socket, json!({ "id": "o", "type": "subscribe", "payload": {
        "query": "subscription($o: ID!) { orderStatus(orderId: $o) { status } }", "variables": { "o": order } } }))
    .await;
    let message = ws_next(&mut socket).await.expect("answer");
    // A resolver's refusal travels as the operation's result, with its code.
    assert_eq!(
        message["payload"]["data"],
        serde_json::Value::Null,
        "{message}"
    );
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"], "FORBIDDEN",
        "{message}"
    );

    app.stop().await;
}

/// Roles are read at every request: a grant or a revocation applies to a token issued
/// before it, without logging in again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_granted_or_revoked_role_applies_to_tokens_issued_before() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (carol_id, carol) = app.customer("carol@example.com").await;
    let admin = app.login(common::ADMIN_EMAIL, common::ADMIN_PASSWORD).await;
    let create = "mutation { createEvent(input: { name: \"x\", venue: \"y\", startsAt: \"2099-01-01T00:00:00Z\", endsAt: \"2099-01-02T00:00:00Z\" }) { id } }";
    let grant = "mutation($u: ID!, $r: Role!) { grantRole(userId: $u, role: $r) { roles } }";
    let revoke = "mutation($u: ID!, $r: Role!) { revokeRole(userId: $u, role: $r) { roles } }";
    let as_organizer = json!({ "u": carol_id, "r": "ORGANIZER" });

    let body = app.gql(Some(&carol), create, json!({})).await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");

    app.ok(Some(&admin), grant, as_organizer.clone()).await;
    let body = app.gql(Some(&carol), create, json!({})).await;
    assert!(body["errors"].is_null(), "granted, same token: {body}");
    let me = app.ok(Some(&carol), "{ me { roles } }", json!({})).await;
    assert!(
        me["me"]["roles"]
            .as_array()
            .expect("roles")
            .contains(&json!("ORGANIZER")),
        "{me}"
    );

    let revoked = app.ok(Some(&admin), revoke, as_organizer.clone()).await;
    assert!(
        !revoked["revokeRole"]["roles"]
            .as_array()
            .expect("roles")
            .contains(&json!("ORGANIZER")),
        "{revoked}"
    );
    let body = app.gql(Some(&carol), create, json!({})).await;
    assert_eq!(code(&body), "FORBIDDEN", "revoked, same token: {body}");

    // Only administrators revoke, and only for users that exist.
    let body = app
        .gql(
            Some(&carol),
            revoke,
            json!({ "u": carol_id, "r": "CUSTOMER" }),
        )
        .await;
    assert_eq!(code(&body), "FORBIDDEN", "{body}");
    let body = app
        .gql(
            Some(&admin),
            revoke,
            json!({ "u": "0190d2b6-0000-7000-8000-000000000000", "r": "ORGANIZER" }),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    let body = app
        .gql(
            Some(&admin),
            revoke,
            json!({ "u": "nope", "r": "ORGANIZER" }),
        )
        .await;
    assert_eq!(code(&body), "INVALID_INPUT", "{body}");
    app.stop().await;
}
