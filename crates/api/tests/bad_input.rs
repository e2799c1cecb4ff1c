//! Bad input, each answered with a clear error code and nothing changed: malformed
//! queries, wrong types, out-of-range values, unknown ids, bad credentials, oversized
//! bodies, too-deep queries, forged and replayed webhooks.

mod common;

use api::{JwtCodec, Role, config::DEV_JWT_SECRET};
use common::{TestApp, code};
use payments::{WebhookEvent, WebhookEventType};
use secrecy::SecretString;
use serde_json::json;

const HOLD: &str = "mutation($i: HoldTicketsInput!) { holdTickets(input: $i) { id } }";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_codes_and_change_nothing() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (event, tier) = app.published_event(&organizer, 3).await;
    let (user_id, alice) = app.customer("alice@example.com").await;

    // Malformed query.
    let body = app
        .gql(Some(&alice), "{ events { nodes { id ", json!({}))
        .await;
    assert_eq!(code(&body), "INVALID_INPUT", "{body}");

    // Wrong types.
    let body = app
        .gql(
            Some(&alice),
            HOLD,
            json!({ "i": { "eventId": event, "tierId": tier, "quantity": "two", "idempotencyKey": "k1" } }),
        )
        .await;
    assert_eq!(code(&body), "INVALID_INPUT", "{body}");

    // Zero, negative, and both or neither of quantity and seats.
    for (quantity, seats) in [
        (json!(0), json!(null)),
        (json!(-3), json!(null)),
        (json!(1), json!(["A-1"])),
        (json!(null), json!(null)),
    ] {
        let body = app
            .gql(
                Some(&alice),
                HOLD,
                json!({ "i": { "eventId": event, "tierId": tier, "quantity": quantity, "seats": seats, "idempotencyKey": "k2" } }),
            )
            .await;
        assert_eq!(code(&body), "INVALID_INPUT", "{quantity} {seats}: {body}");
    }

    // Unknown and malformed ids.
    let unknown = uuid::Uuid::new_v4().to_string();
    let body = app
        .gql(
            None,
            "query($e: ID!) { event(id: $e) { id } }",
            json!({ "e": unknown }),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    let body = app
        .gql(
            None,
            "query($e: ID!) { event(id: $e) { id } }",
            json!({ "e": "not-an-id" }),
        )
        .await;
    assert_eq!(code(&body), "INVALID_INPUT", "{body}");
    let body = app
        .gql(Some(&alice), HOLD, json!({ "i": { "eventId": event, "tierId": unknown, "quantity": 1, "idempotencyKey": "k3" } }))
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");
    let body = app
        .gql(
            Some(&alice),
            "mutation($o: ID!) { payOrder(orderId: $o, paymentToken: \"tok_success\") { id } }",
            json!({ "o": unknown }),
        )
        .await;
    assert_eq!(code(&body), "NOT_FOUND", "{body}");

    // An empty idempotency key.
    let body = app
        .gql(Some(&alice), HOLD, json!({ "i": { "eventId": event, "tierId": tier, "quantity": 1, "idempotencyKey": " " } }))
        .await;
    assert_eq!(code(&body), "INVALID_INPUT", "{body}");

    // Registration and log-in mistakes.
    let register = "mutation($i: RegisterInput!) { register(input: $i) { id } }";
    let body = app
        .gql(None, register, json!({ "i": { "email": "bob@example.com", "password": "short", "displayName": "Bob" } }))
        .await;
    assert_eq!(code(&body), "INVALID_INPUT", "{body}");
    let body = app
        .gql(None, register, json!({ "i": { "email": "not an email", "password": "password-123", "displayName": "Bob" } }))
        .await;
    assert_eq!(code(&body), "INVALID_INPUT", "{body}");
    let body = app
        .gql(None, register, json!({ "i": { "email": "ALICE@example.com", "password": "password-123", "displayName": "Alice 2" } }))
        .await;
    assert_eq!(code(&body), "EMAIL_TAKEN", "{body}");
    let login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }";
    let body = app
        .gql(
            None,
            login,
            json!({ "e": "alice@example.com", "p": "wrong-password" }),
        )
        .await;
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
    let body = app
        .gql(
            None,
            login,
            json!({ "e": "nobody@example.com", "p": "password-123" }),
        )
        .await;
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");

    // Missing, expired and forged tokens.
    let body = app.gql(None, "{ me { id } }", json!({})).await;
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
    let codec = JwtCodec::new(
        &SecretString::from(DEV_JWT_SECRET),
        "ticketing",
        std::time::Duration::from_secs(3600),
    );
    let user = uuid::Uuid::parse_str(&user_id).expect("uuid");
    let expired = codec
        .issue_at(
            user,
            &[Role::Customer],
            0,
            chrono::Utc::now() - chrono::Duration::hours(3),
        )
        .expect("token")
        .token;
    let body = app.gql(Some(&expired), "{ me { id } }", json!({})).await;
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");
    let forger = JwtCodec::new(
        &SecretString::from("someone-elses-secret"),
        "ticketing",
        std::time::Duration::from_secs(3600),
    );
    let forged = forger.issue(user, &[Role::Admin]).expect("token").token;
    let body = app.gql(Some(&forged), "{ me { id } }", json!({})).await;
    assert_eq!(code(&body), "UNAUTHENTICATED", "{body}");

    // An oversized body.
    let huge = format!(
        "{{ events {{ nodes {{ id }} }} }} # {}",
        "x".repeat(300 * 1024)
    );
    let response = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": huge }))
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), 413);
    let body: serde_json::Value = response.json().await.expect("json");
    assert_eq!(code(&body), "PAYLOAD_TOO_LARGE", "{body}");

    // A query nested deeper than the limit.
    let mut deep = String::from("name");
    for _ in 0..20 {
        deep = format!("ofType {{ {deep} }}");
    }
    let body = app
        .gql(
            None,
            &format!("{{ __schema {{ types {{ fields {{ type {{ {deep} }} }} }} }} }}"),
            json!({}),
        )
        .await;
    assert_eq!(code(&body), "INVALID_INPUT", "{body}");

    // Nothing of the above changed the stock or created an order.
    let counts = app
        .ok(
            None,
            "query($e: ID!) { event(id: $e) { tiers { available held sold } } }",
            json!({ "e": event }),
        )
        .await;
    assert_eq!(
        counts["event"]["tiers"][0],
        json!({ "available": 3, "held": 0, "sold": 0 })
    );
    let orders = app
        .ok(Some(&alice), "{ myOrders { nodes { id } } }", json!({}))
        .await;
    assert_eq!(orders["myOrders"]["nodes"], json!([]));

    app.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn payment_webhooks_must_be_signed_fresh_and_new() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let secret = api::app::DEV_PAYMENT_WEBHOOK_SECRET.as_bytes();
    let now = chrono::Utc::now().timestamp();
    let event = WebhookEvent {
        id: "evt_refund_1".into(),
        kind: WebhookEventType::RefundSucceeded,
        charge_id: "ch_1".into(),
        order_id: uuid::Uuid::new_v4(),
        amount: 4500,
        currency: "EUR".into(),
        created: now,
        failure_reason: None,
        refund_id: Some("re_1".into()),
        refund_reason: Some(payments::RefundReason::OrderCancelled),
    };
    let body = serde_json::to_vec(&event).expect("json");
    let post = |signature: String, body: Vec<u8>| {
        app.http
            .post(app.url("/webhooks/payments"))
            .header(signature::SIGNATURE_HEADER, signature)
            .header("content-type", "application/json")
            .body(body)
            .send()
    };

    // Forged: signed with another secret.
    let response = post(signature::sign(b"not-the-secret", now, &body), body.clone())
        .await
        .expect("sent");
    assert_eq!(response.status(), 422);
    let json: serde_json::Value = response.json().await.expect("json");
    assert_eq!(code(&json), "SIGNATURE_MISMATCH", "{json}");

    // Missing signature.
    let response = post(String::new(), body.clone()).await.expect("sent");
    let json: serde_json::Value = response.json().await.expect("json");
    assert_eq!(code(&json), "SIGNATURE_MALFORMED", "{json}");

    // Replayed long after it was signed.
    let response = post(signature::sign(secret, now - 3600, &body), body.clone())
        .await
        .expect("sent");
    let json: serde_json::Value = response.json().await.expect("json");
    assert_eq!(code(&json), "SIGNATURE_EXPIRED", "{json}");

    // Authentic: processed once, then recognised as a duplicate.
    let response = post(signature::sign(secret, now, &body), body.clone())
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let json: serde_json::Value = response.json().await.expect("json");
    assert_eq!(json["status"], "processed");
    let response = post(signature::sign(secret, now, &body), body.clone())
        .await
        .expect("sent");
    assert_eq!(response.status(), 200);
    let json: serde_json::Value = response.json().await.expect("json");
    assert_eq!(json["status"], "duplicate");

    app.stop().await;
}

/// Apollo's automatic persisted queries: a hash alone is `PERSISTED_QUERY_NOT_FOUND` until
/// the query has been sent with it, then runs that query; a hash that is not the query's,
/// or a malformed extension, is `INVALID_INPUT` and runs nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persisted_queries_follow_apollos_protocol() {
    use sha2::{Digest, Sha256};

    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let query = "query Probe { __typename }";
    let hash = hex::encode(Sha256::digest(query.as_bytes()));
    let post = |body: serde_json::Value| {
        let app = &app;
        async move {
            let response = app
                .http
                .post(app.url("/graphql"))
                .json(&body)
                .send()
                .await
                .expect("request sent");
            let status = response.status().as_u16();
            (
                status,
                response.json::<serde_json::Value>().await.expect("JSON"),
            )
        }
    };
    let persisted = |hash: &str| json!({ "persistedQuery": { "version": 1, "sha256Hash": hash } });

    // Unknown hash: the protocol's answer, which Apollo Client reads from a 200 body.
    let (status, body) = post(json!({ "extensions": persisted(&hash) })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");
    assert_eq!(body["errors"][0]["message"], "PersistedQueryNotFound");

    // A hash that is not the query's registers nothing.
    let other = hex::encode(Sha256::digest(b"{ __schema { types { name } } }"));
    let (_, body) = post(json!({ "query": query, "extensions": persisted(&other) })).await;
    assert_eq!(code(&body), "INVALID_INPUT", "{body}");
    let (_, body) = post(json!({ "extensions": persisted(&other) })).await;
    assert_eq!(code(&body), "PERSISTED_QUERY_NOT_FOUND", "{body}");

    // Malformed extensions.
    for bad in [
        json!({ "persistedQuery": { "version": 2, "sha256Hash": hash } }),
        json!({ "persistedQuery": { "version": 1, "sha256Hash": "abc" } }),
        json!({ "persistedQuery": { "version": 1 } }),
        json!({ "persistedQuery": "yes" }),
    ] {
        let (status, body) = post(json!({ "query": query, "extensions": bad })).await;
        assert_eq!(
            (status, code(&body).as_str()),
            (400, "INVALID_INPUT"),
            "{body}"
        );
    }

    // The query with its hash runs and registers it; then the hash alone runs it.
    let (_, body) = post(json!({ "query": query, "extensions": persisted(&hash) })).await;
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
    let (_, body) = post(json!({ "extensions": persisted(&hash), "variables": {} })).await;
    assert_eq!(body["data"]["__typename"], "Query", "{body}");
    assert!(body["errors"].is_null(), "{body}");
    app.stop().await;
}
