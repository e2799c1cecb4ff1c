//! Black-box tests of money and access defects: each one reproduces an attack or a loss
//! against a running server, through the public API only (and, where the loss is at the
//! payment provider, by reading the provider's ledger file after the server stopped).

mod common;

use std::{path::Path, time::Duration};

use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp, code, test_config};
use serde_json::{Value, json};

const HOLD: &str =
    "mutation($i: HoldTicketsInput!) { holdTickets(input: $i) { id eventId status quantity } }";
const PURCHASE: &str = "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { id eventId status quantity total { amountMinor } } }";
const ORDER: &str = "query($o: ID!) { order(id: $o) { id eventId status refund { amountMinor } refundStatus refundedAt tickets { status } } }";

/// (order id, amount) per entry of the provider's books.
type Entries = Vec<(String, i64)>;

/// The provider's books, read from its ledger file: its charges and its refunds.
fn provider_books(data_dir: &Path) -> (Entries, Entries) {
    let db = rusqlite::Connection::open_with_flags(
        data_dir.join(api::app::PAYMENTS_DB),
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY,
    )
    .expect("the ledger opens");
    let rows = |sql: &str| -> Entries {
        let mut statement = db.prepare(sql).expect("statement");
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("query")
            .map(|row| row.expect("row"))
            .collect()
    };
    (
        rows(
            "SELECT order_id, amount_minor FROM charges WHERE answer LIKE '%succeeded%' ORDER BY seq",
        ),
        rows("SELECT order_id, amount_minor FROM refunds ORDER BY seq"),
    )
}

/// Polls `query` until `done` says yes (at most 20 s); returns the last answer.
async fn eventually(
    app: &TestApp,
    token: &str,
    query: &str,
    variables: Value,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let data = app.ok(Some(token), query, variables.clone()).await;
        if done(&data) || tokio::time::Instant::now() > deadline {
            return data;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn organizer_and_customer(app: &TestApp) -> (String, String) {
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (_, customer) = app.customer("kim@example.com").await;
    (organizer, customer)
}

/// One idempotency key on two events is two requests: the purchase on B buys on B, and is
/// charged on its own, instead of answering the hold made on A with the same key.
#[tokio::test]
async fn one_key_on_two_events_buys_on_each() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (organizer, kim) = organizer_and_customer(&app).await;
    let (event_a, tier_a) = app.published_event(&organizer, 10).await;
    let (event_b, tier_b) = app.published_event(&organizer, 10).await;

    let held = app
        .ok(
            Some(&kim),
            HOLD,
            json!({ "i": { "eventId": event_a, "tierId": tier_a, "quantity": 2, "idempotencyKey": "k" } }),
        )
        .await;
    assert_eq!(held["holdTickets"]["eventId"], event_a.as_str());
    let bought = app
        .ok(
            Some(&kim),
            PURCHASE,
            json!({ "i": { "eventId": event_b, "tierId": tier_b, "quantity": 1, "paymentToken": "tok_success", "idempotencyKey": "k" } }),
        )
        .await;
    let bought = &bought["purchaseTickets"];
    assert_eq!(bought["eventId"], event_b.as_str(), "{bought}");
    assert_eq!(bought["status"], "PAID", "{bought}");
    assert_eq!(bought["quantity"], 1, "{bought}");
    assert_ne!(bought["id"], held["holdTickets"]["id"]);
    let still = app
        .ok(Some(&kim), ORDER, json!({ "o": held["holdTickets"]["id"] }))
        .await;
    assert_eq!(still["order"]["status"], "HELD", "A's hold is untouched");

    // The same key for a hold and a purchase on one event is a reuse, refused.
    let reused = app
        .gql(
            Some(&kim),
            PURCHASE,
            json!({ "i": { "eventId": event_a, "tierId": tier_a, "quantity": 2, "paymentToken": "tok_success", "idempotencyKey": "k" } }),
        )
        .await;
    assert_eq!(code(&reused), "INVALID_INPUT", "{reused}");

    let order_b = bought["id"].as_str().expect("id").to_owned();
    app.stop().await;
    let (charges, refunds) = provider_books(dir.path());
    assert_eq!(
        charges,
        vec![(order_b, 4500)],
        "one charge, for B's order only"
    );
    assert!(refunds.is_empty());
}

/// Cancelling an event pays every paid order back through the provider and records it.
#[tokio::test]
async fn cancelling_an_event_refunds_its_paid_orders() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (organizer, kim) = organizer_and_customer(&app).await;
    let (event, tier) = app.published_event(&organizer, 10).await;
    let mut paid = Vec::new();
    for key in ["p-1", "p-2"] {
        let bought = app
            .ok(
                Some(&kim),
                PURCHASE,
                json!({ "i": { "eventId": event, "tierId": tier, "quantity": 2, "paymentToken": "tok_success", "idempotencyKey": key } }),
            )
            .await;
        paid.push(
            bought["purchaseTickets"]["id"]
                .as_str()
                .expect("id")
                .to_owned(),
        );
    }
    let held = app
        .ok(
            Some(&kim),
            HOLD,
            json!({ "i": { "eventId": event, "tierId": tier, "quantity": 1, "idempotencyKey": "h-1" } }),
        )
        .await;

    let cancelled = app
        .ok(
            Some(&organizer),
            "mutation($e: ID!) { cancelEvent(eventId: $e, reason: \"venue flooded\") { status } }",
            json!({ "e": event }),
        )
        .await;
    assert_eq!(cancelled["cancelEvent"]["status"], "CANCELLED");
    for order in &paid {
        let after = eventually(&app, &kim, ORDER, json!({ "o": order }), |data| {
            data["order"]["refundStatus"] == "REFUNDED"
        })
        .await;
        assert_eq!(after["order"]["status"], "CANCELLED", "{after}");
        assert_eq!(after["order"]["refund"]["amountMinor"], 9000, "{after}");
        assert_eq!(after["order"]["refundStatus"], "REFUNDED", "{after}");
        assert!(after["order"]["refundedAt"].is_string(), "{after}");
    }
    let hold = app
        .ok(Some(&kim), ORDER, json!({ "o": held["holdTickets"]["id"] }))
        .await;
    assert_eq!(hold["order"]["status"], "CANCELLED");
    assert!(
        hold["order"]["refundStatus"].is_null(),
        "a hold owes nothing"
    );

    app.stop().await;
    let (charges, mut refunds) = provider_books(dir.path());
    assert_eq!(charges.len(), 2);
    refunds.sort();
    let mut expected: Vec<(String, i64)> = paid.iter().map(|o| (o.clone(), 9000)).collect();
    expected.sort();
    assert_eq!(
        refunds, expected,
        "each paid order refunded once at the provider"
    );
}

/// A `createEvent` retried under its key completes the first attempt instead of being
/// refused, and the longest key accepted does not leave a draft without tiers behind.
#[tokio::test]
async fn create_event_retries_complete_and_long_keys_work() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (organizer, _) = organizer_and_customer(&app).await;
    let input = |key: &str| {
        json!({ "i": {
            "name": "Rust Nation", "venue": "Hall 1",
            "startsAt": "2099-06-01T18:00:00Z", "endsAt": "2099-06-01T23:00:00Z",
            "tiers": [{ "name": "Standard", "priceMinor": 4500, "currency": "EUR", "capacity": 5 }],
            "idempotencyKey": key,
        } })
    };
    let first = app
        .ok(Some(&organizer), common::CREATE_EVENT, input("create-1"))
        .await;
    let again = app
        .gql(Some(&organizer), common::CREATE_EVENT, input("create-1"))
        .await;
    assert!(again["errors"].is_null(), "a retry completes: {again}");
    assert_eq!(again["data"]["createEvent"], first["createEvent"]);

    let longest = "k".repeat(128);
    let created = app
        .gql(Some(&organizer), common::CREATE_EVENT, input(&longest))
        .await;
    assert!(created["errors"].is_null(), "{created}");
    assert_eq!(
        created["data"]["createEvent"]["tiers"][0]["capacity"], 5,
        "{created}"
    );
    let too_long = app
        .gql(
            Some(&organizer),
            common::CREATE_EVENT,
            input(&"k".repeat(129)),
        )
        .await;
    assert_eq!(code(&too_long), "INVALID_INPUT", "{too_long}");
    let admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let listed = app
        .ok(
            Some(&admin),
            "{ events(filter: { statuses: [DRAFT] }) { nodes { id tiers { id } } } }",
            json!({}),
        )
        .await;
    let drafts = listed["events"]["nodes"].as_array().expect("list");
    assert_eq!(drafts.len(), 2, "no draft is left behind: {listed}");
    assert!(
        drafts
            .iter()
            .all(|e| e["tiers"].as_array().is_some_and(|t| t.len() == 1))
    );
}

/// Registers `n` customers `prefix-<i>@example.com`; returns their tokens.
async fn customers(app: &TestApp, prefix: &str, n: usize) -> Vec<String> {
    let mut tokens = Vec::new();
    for i in 0..n {
        let (_, token) = app.customer(&format!("{prefix}-{i}@example.com")).await;
        tokens.push(token);
    }
    tokens
}

/// Fifty accounts behind one address cannot keep more tickets in unpaid holds than the
/// address's cap, nor one account more than its own; paying frees the cap.
#[tokio::test]
async fn fifty_accounts_from_one_address_hold_no_more_than_the_cap() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.service.max_held_tickets_per_user = 4;
    config.service.max_held_tickets_per_address = 20;
    let app = TestApp::start(config).await;
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (event, tier) = app.published_event(&organizer, 1000).await;
    let accounts = customers(&app, "hoarder", 50).await;
    let mut held = Vec::new();
    let mut refused = 0;
    for (i, token) in accounts.iter().enumerate() {
        let answer = app
            .gql(
                Some(token),
                HOLD,
                json!({ "i": { "eventId": event, "tierId": tier, "quantity": 2, "idempotencyKey": format!("h-{i}") } }),
            )
            .await;
        if answer["errors"].is_null() {
            held.push((token.clone(), answer["data"]["holdTickets"]["id"].clone()));
        } else {
            assert_eq!(code(&answer), "LIMIT_EXCEEDED", "{answer}");
            refused += 1;
        }
    }
    assert_eq!((held.len(), refused), (10, 40));
    let counts = app
        .ok(
            None,
            "query($e: ID!) { event(id: $e) { tiers { held available } } }",
            json!({ "e": event }),
        )
        .await;
    assert_eq!(counts["event"]["tiers"][0]["held"], 20, "{counts}");

    // A purchase paid at once holds nothing: it is checked against the caps, not counted.
    let refused = app
        .gql(
            Some(&accounts[0]),
            PURCHASE,
            json!({ "i": { "eventId": event, "tierId": tier, "quantity": 1, "paymentToken": "tok_success", "idempotencyKey": "buy-0" } }),
        )
        .await;
    assert_eq!(
        code(&refused),
        "LIMIT_EXCEEDED",
        "the address is at its cap: {refused}"
    );

    // Paying for a hold frees its tickets from the caps.
    let (payer, order) = &held[0];
    app.ok(
        Some(payer),
        "mutation($o: ID!) { payOrder(orderId: $o, paymentToken: \"tok_success\") { status } }",
        json!({ "o": order }),
    )
    .await;
    app.ok(
        Some(&accounts[49]),
        HOLD,
        json!({ "i": { "eventId": event, "tierId": tier, "quantity": 2, "idempotencyKey": "again" } }),
    )
    .await;

    // One account alone stops at its own cap, over every event.
    let dir2 = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir2.path());
    config.service.max_held_tickets_per_user = 4;
    let app2 = TestApp::start(config).await;
    let (_, organizer) = app2.with_role("org@example.com", "ORGANIZER").await;
    let (event_a, tier_a) = app2.published_event(&organizer, 10).await;
    let (event_b, tier_b) = app2.published_event(&organizer, 10).await;
    let (_, kim) = app2.customer("kim@example.com").await;
    app2.ok(
        Some(&kim),
        HOLD,
        json!({ "i": { "eventId": event_a, "tierId": tier_a, "quantity": 3, "idempotencyKey": "a" } }),
    )
    .await;
    let over = app2
        .gql(
            Some(&kim),
            HOLD,
            json!({ "i": { "eventId": event_b, "tierId": tier_b, "quantity": 2, "idempotencyKey": "b" } }),
        )
        .await;
    assert_eq!(code(&over), "LIMIT_EXCEEDED", "{over}");
}

/// Registrations are limited per client address.
#[tokio::test]
async fn registrations_are_rate_limited_per_address() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.service.register_rate = "5/h".parse().expect("rate");
    let app = TestApp::start(config).await;
    let register = |i: usize| json!({ "i": { "email": format!("bot-{i}@example.com"), "password": "password-123", "displayName": "bot" } });
    for i in 0..5 {
        app.ok(
            None,
            "mutation($i: RegisterInput!) { register(input: $i) { id } }",
            register(i),
        )
        .await;
    }
    let sixth = app
        .gql(
            None,
            "mutation($i: RegisterInput!) { register(input: $i) { id } }",
            register(5),
        )
        .await;
    assert_eq!(code(&sixth), "RATE_LIMITED", "{sixth}");
}

/// A login counts against the email it tries and the address it comes from, whatever
/// token it carries: an attacker's accounts are not fresh allowances.
#[tokio::test]
async fn logins_are_limited_per_email_and_per_address_whatever_token_is_sent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.service.login_rate = "3/h".parse().expect("rate");
    config.service.login_address_rate = "12/h".parse().expect("rate");
    let app = TestApp::start(config).await;
    app.customer("victim@example.com").await;
    // Each attacker account logs in once (its own email's allowance).
    let tokens = customers(&app, "attacker", 4).await;
    const LOGIN: &str =
        "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }";
    let mut answers = Vec::new();
    for token in &tokens {
        let answer = app
            .gql(
                Some(token),
                LOGIN,
                json!({ "e": "Victim@Example.com ", "p": "guess-1234" }),
            )
            .await;
        answers.push(code(&answer));
    }
    assert_eq!(
        answers,
        [
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "RATE_LIMITED",
            "RATE_LIMITED"
        ],
        "the victim's login allowance (3/h, one used at sign-up) is shared by every token"
    );
    // The address allowance (12/h): 5 logins at sign-up and the 2 attempts at the
    // victim's email that its own limit let through; 5 more pass.
    let mut more = Vec::new();
    for i in 0..6 {
        let answer = app
            .gql(
                None,
                LOGIN,
                json!({ "e": format!("nobody-{i}@example.com"), "p": "guess-1234" }),
            )
            .await;
        more.push(code(&answer));
    }
    assert_eq!(
        more,
        [
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "UNAUTHENTICATED",
            "RATE_LIMITED"
        ]
    );
}

/// A flood of 2,000 registrations is refused at the door (bounded hashing queue) instead of
/// queueing for minutes: purchases go on, and logins are answered (verifications go first).
#[tokio::test]
async fn a_registration_flood_neither_fails_purchases_nor_times_out_logins() {
    use futures::StreamExt as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.service.request_timeout = Duration::from_secs(15);
    let app = TestApp::start(config).await;
    let (organizer, kim) = organizer_and_customer(&app).await;
    let (event, tier) = app.published_event(&organizer, 1000).await;
    let flood = {
        let url = app.url("/graphql");
        let http = app.http.clone();
        tokio::spawn(async move {
            futures::stream::iter(0..2000)
                .map(|i| {
                    let http = http.clone();
                    let url = url.clone();
                    async move {
                        let body: Value = http
                            .post(&url)
                            .json(&json!({
                                "query": "mutation($i: RegisterInput!) { register(input: $i) { id } }",
                                "variables": { "i": { "email": format!("flood-{i}@example.com"), "password": "password-123", "displayName": "flood" } },
                            }))
                            .send()
                            .await
                            .expect("sent")
                            .json()
                            .await
                            .expect("json");
                        code(&body)
                    }
                })
                .buffer_unordered(256)
                .collect::<Vec<String>>()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..20 {
        let bought = app
            .gql(
                Some(&kim),
                PURCHASE,
                json!({ "i": { "eventId": event, "tierId": tier, "quantity": 1, "paymentToken": "tok_success", "idempotencyKey": format!("during-{i}") } }),
            )
            .await;
        assert_eq!(
            bought["data"]["purchaseTickets"]["status"], "PAID",
            "{bought}"
        );
    }
    for _ in 0..3 {
        let login = app
            .gql(
                None,
                "mutation { login(email: \"kim@example.com\", password: \"password-123\") { token } }",
                json!({}),
            )
            .await;
        assert!(
            login["errors"].is_null(),
            "a login during the flood: {login}"
        );
    }
    let codes = flood.await.expect("flood");
    let accepted = codes.iter().filter(|c| *c == "<none>").count();
    let refused = codes.iter().filter(|c| *c == "RATE_LIMITED").count();
    assert_eq!(
        accepted + refused,
        2000,
        "only successes and RATE_LIMITED: {codes:?}"
    );
    assert!(refused > 0, "the hashing queue is bounded");
}

/// The administrator named in the configuration is not given to whoever registered that
/// email first: the account's own password is required to promote it.
#[tokio::test]
async fn admin_bootstrap_never_promotes_an_account_it_cannot_log_in_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.admin_email = None;
    config.admin_password = None;
    let app = TestApp::start(config).await;
    app.ok(
        None,
        "mutation($i: RegisterInput!) { register(input: $i) { id } }",
        json!({ "i": { "email": ADMIN_EMAIL, "password": "attacker-password", "displayName": "not the admin" } }),
    )
    .await;
    app.stop().await;

    // The operator configures the admin with their own password: refused, not promoted.
    let refused = api::Application::build(test_config(dir.path()))
        .await
        .err()
        .expect("refused to promote");
    assert!(format!("{refused:#}").contains("refusing"), "{refused:#}");
    let mut config = test_config(dir.path());
    config.admin_email = None;
    config.admin_password = None;
    let app = TestApp::start(config).await;
    let token = app.login(ADMIN_EMAIL, "attacker-password").await;
    let me = app.ok(Some(&token), "{ me { roles } }", json!({})).await;
    assert_eq!(me["me"]["roles"], json!(["CUSTOMER"]), "{me}");
    app.stop().await;

    // With that account's own password, it is promoted.
    let mut config = test_config(dir.path());
    config.admin_password = Some(secrecy::SecretString::from("attacker-password"));
    let app = TestApp::start(config).await;
    let token = app.login(ADMIN_EMAIL, "attacker-password").await;
    let me = app.ok(Some(&token), "{ me { roles } }", json!({})).await;
    assert!(
        me["me"]["roles"]
            .as_array()
            .expect("roles")
            .contains(&json!("ADMIN")),
        "{me}"
    );
}

/// Changing a password needs the current one and ends every other session; the data
/// files that hold password hashes are the owner's alone.
#[tokio::test]
async fn changing_a_password_needs_the_old_one_and_ends_other_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (_, phone) = app.customer("kim@example.com").await;
    let laptop = app.login("kim@example.com", "password-123").await;
    const CHANGE: &str = "mutation($c: String!, $n: String!) { changePassword(currentPassword: $c, newPassword: $n) { token } }";
    let wrong = app
        .gql(
            Some(&laptop),
            CHANGE,
            json!({ "c": "not-my-password", "n": "a-new-password" }),
        )
        .await;
    assert_eq!(code(&wrong), "UNAUTHENTICATED", "{wrong}");
    let changed = app
        .ok(
            Some(&laptop),
            CHANGE,
            json!({ "c": "password-123", "n": "a-new-password" }),
        )
        .await;
    let fresh = changed["changePassword"]["token"].as_str().expect("token");
    for old in [&phone, &laptop] {
        let body = app.gql(Some(old), "{ me { id } }", json!({})).await;
        assert_eq!(
            code(&body),
            "UNAUTHENTICATED",
            "an older session ended: {body}"
        );
    }
    app.ok(Some(fresh), "{ me { id } }", json!({})).await;
    let relogin = app.login("kim@example.com", "a-new-password").await;
    app.ok(Some(&relogin), "{ me { id } }", json!({})).await;

    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let mode =
            |path: &Path| std::fs::metadata(path).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode(dir.path()), 0o700, "the data directory is the owner's");
        let mut files = 0;
        for entry in std::fs::read_dir(dir.path()).expect("list") {
            let path = entry.expect("entry").path();
            if path.is_file() {
                files += 1;
                assert_eq!(
                    mode(&path) & 0o077,
                    0,
                    "{} is readable by others",
                    path.display()
                );
            }
        }
        assert!(
            files >= 4,
            "the store, read models, notifier and payments files"
        );
    }
}

/// Queries and mutations sent over a WebSocket run with the caller's roles and session as
/// they are now, as over HTTP: a revoked role or an ended session does not live on in a
/// socket opened before.
#[tokio::test]
async fn a_websocket_keeps_neither_revoked_roles_nor_ended_sessions() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (organizer_id, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (_, kim) = app.customer("kim@example.com").await;
    let admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let mut org_socket = common::ws_connect(&app, Some(&organizer)).await;
    let mut kim_socket = common::ws_connect(&app, Some(&kim)).await;
    let create = json!({ "id": "1", "type": "subscribe", "payload": {
        "query": common::CREATE_EVENT,
        "variables": { "i": {
            "name": "Over the socket", "venue": "Hall 1",
            "startsAt": "2099-06-01T18:00:00Z", "endsAt": "2099-06-01T23:00:00Z",
            "tiers": [{ "name": "Standard", "priceMinor": 100, "currency": "EUR", "capacity": 5 }],
        } },
    } });
    common::ws_send(&mut org_socket, create.clone()).await;
    let first = common::ws_next(&mut org_socket).await.expect("answer");
    assert!(
        first["payload"]["errors"].is_null(),
        "allowed while granted: {first}"
    );
    let _ = common::ws_next(&mut org_socket).await; // complete

    app.ok(
        Some(&admin),
        "mutation($u: ID!) { revokeRole(userId: $u, role: ORGANIZER) { roles } }",
        json!({ "u": organizer_id }),
    )
    .await;
    let mut again = create.clone();
    again["id"] = json!("2");
    common::ws_send(&mut org_socket, again).await;
    let refused = common::ws_next(&mut org_socket).await.expect("answer");
    let errors = if refused["type"] == "error" {
        refused["payload"].clone()
    } else {
        refused["payload"]["errors"].clone()
    };
    assert_eq!(errors[0]["extensions"]["code"], "FORBIDDEN", "{refused}");

    app.ok(
        Some(&kim),
        "mutation { changePassword(currentPassword: \"password-123\", newPassword: \"a-new-password\") { token } }",
        json!({}),
    )
    .await;
    common::ws_send(
        &mut kim_socket,
        json!({ "id": "1", "type": "subscribe", "payload": { "query": "{ me { id } }" } }),
    )
    .await;
    let ended = common::ws_next(&mut kim_socket).await.expect("answer");
    let errors = if ended["type"] == "error" {
        ended["payload"].clone()
    } else {
        ended["payload"]["errors"].clone()
    };
    assert_eq!(
        errors[0]["extensions"]["code"], "UNAUTHENTICATED",
        "{ended}"
    );
}

/// Silent WebSockets cannot lock others out: one address has a few at most, a socket that
/// never initialises is closed with 4408, and one that runs nothing is closed when idle.
#[tokio::test]
async fn silent_websockets_are_capped_per_address_and_closed() {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest as _;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.service.max_websocket_connections_per_address = 3;
    config.service.websocket_init_timeout = Duration::from_millis(500);
    config.service.websocket_idle_timeout = Duration::from_millis(800);
    let app = TestApp::start(config).await;
    let open = || async {
        let mut request = format!("ws://{}/graphql/ws", app.addr)
            .into_client_request()
            .expect("request");
        request.headers_mut().insert(
            "sec-websocket-protocol",
            "graphql-transport-ws".parse().expect("header"),
        );
        tokio_tungstenite::connect_async(request).await
    };
    let mut silent = Vec::new();
    for _ in 0..3 {
        silent.push(open().await.expect("within the cap").0);
    }
    match open().await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 503);
        }
        other => panic!("a fourth socket from one address is refused: {other:?}"),
    }
    // Never initialised: closed with 4408 after the timeout, which frees the slots.
    for socket in &mut silent {
        let closed = common::ws_next(socket).await.expect_err("closed");
        assert_eq!(closed.map(|f| u16::from(f.code)), Some(4408));
    }
    drop(silent);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Initialised but running nothing: closed when idle.
    let mut idle = common::ws_connect(&app, None).await;
    let closed = common::ws_next(&mut idle).await.expect_err("closed");
    assert_eq!(closed.map(|f| u16::from(f.code)), Some(1000));
    // A subscriber is not idle.
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (event, _) = app.published_event(&organizer, 5).await;
    let mut live = common::ws_connect(&app, None).await;
    common::ws_send(
        &mut live,
        json!({ "id": "1", "type": "subscribe", "payload": {
            "query": "subscription($e: ID!) { seatAvailability(eventId: $e) { tiers { available } } }",
            "variables": { "e": event },
        } }),
    )
    .await;
    let first = common::ws_next(&mut live).await.expect("counts");
    assert_eq!(first["type"], "next", "{first}");
    let quiet = tokio::time::timeout(Duration::from_secs(2), common::ws_next(&mut live)).await;
    assert!(quiet.is_err(), "a subscriber stays connected: {quiet:?}");
}

/// Door staff check in only the events they are assigned to: an operator of another
/// event is refused, a ticket of another event is WRONG_EVENT, and taking someone off an
/// event ends their access.
#[tokio::test]
async fn operators_check_in_only_the_events_they_are_assigned_to() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (organizer, kim) = organizer_and_customer(&app).await;
    let (door_a_id, door_a) = app.with_role("door-a@example.com", "OPERATOR").await;
    let (_, door_b) = app.with_role("door-b@example.com", "OPERATOR").await;
    let (customer_id, _) = app.customer("not-door@example.com").await;
    let (event, tier) = app.published_event(&organizer, 10).await;
    let (other_event, _) = app.published_event(&organizer, 10).await;
    const ASSIGN: &str =
        "mutation($e: ID!, $u: ID!) { assignDoorStaff(eventId: $e, userId: $u) { doorStaffIds } }";
    let assigned = app
        .ok(
            Some(&organizer),
            ASSIGN,
            json!({ "e": event, "u": door_a_id }),
        )
        .await;
    assert_eq!(
        assigned["assignDoorStaff"]["doorStaffIds"],
        json!([door_a_id])
    );
    let not_operator = app
        .gql(
            Some(&organizer),
            ASSIGN,
            json!({ "e": event, "u": customer_id }),
        )
        .await;
    assert_eq!(code(&not_operator), "INVALID_INPUT", "{not_operator}");
    let staffed = app
        .ok(Some(&door_a), "{ myDoorEvents { id } }", json!({}))
        .await;
    assert_eq!(staffed["myDoorEvents"], json!([{ "id": event }]));

    let bought = app
        .ok(
            Some(&kim),
            "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { tickets { code } } }",
            json!({ "i": { "eventId": event, "tierId": tier, "quantity": 2, "paymentToken": "tok_success", "idempotencyKey": "door" } }),
        )
        .await;
    let codes: Vec<String> = bought["purchaseTickets"]["tickets"]
        .as_array()
        .expect("tickets")
        .iter()
        .map(|t| t["code"].as_str().expect("code").to_owned())
        .collect();
    const CHECK_IN: &str =
        "mutation($e: ID!, $c: String!) { checkInTicket(eventId: $e, code: $c) { status } }";
    let stranger = app
        .gql(
            Some(&door_b),
            CHECK_IN,
            json!({ "e": event, "c": codes[0] }),
        )
        .await;
    assert_eq!(
        code(&stranger),
        "FORBIDDEN",
        "an operator of no event: {stranger}"
    );
    let wrong = app
        .gql(
            Some(&door_a),
            CHECK_IN,
            json!({ "e": other_event, "c": codes[0] }),
        )
        .await;
    assert_eq!(code(&wrong), "WRONG_EVENT", "{wrong}");
    let checked = app
        .ok(
            Some(&door_a),
            CHECK_IN,
            json!({ "e": event, "c": codes[0] }),
        )
        .await;
    assert_eq!(checked["checkInTicket"]["status"], "CHECKED_IN");
    app.ok(
        Some(&organizer),
        "mutation($e: ID!, $u: ID!) { unassignDoorStaff(eventId: $e, userId: $u) { id } }",
        json!({ "e": event, "u": door_a_id }),
    )
    .await;
    let removed = app
        .gql(
            Some(&door_a),
            CHECK_IN,
            json!({ "e": event, "c": codes[1] }),
        )
        .await;
    assert_eq!(
        code(&removed),
        "FORBIDDEN",
        "taken off the event: {removed}"
    );
    // The organizer may always check in their own event.
    let checked = app
        .ok(
            Some(&organizer),
            CHECK_IN,
            json!({ "e": event, "c": codes[1] }),
        )
        .await;
    assert_eq!(checked["checkInTicket"]["status"], "CHECKED_IN");
}

/// Seat lists are paged and priced by their size: a client pages through a big seat map,
/// and cannot alias one field into millions of objects.
#[tokio::test]
async fn seat_lists_are_paged_and_priced_by_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (organizer, _) = organizer_and_customer(&app).await;
    let seats: Vec<String> = (0..6000).map(|n| format!("S-{n}")).collect();
    let created = app
        .ok(
            Some(&organizer),
            "mutation($i: CreateEventInput!) { createEvent(input: $i) { id seatCount } }",
            json!({ "i": {
                "name": "Arena", "venue": "Hall 1",
                "startsAt": "2099-06-01T18:00:00Z", "endsAt": "2099-06-01T23:00:00Z",
                "tiers": [{ "name": "Floor", "priceMinor": 100, "currency": "EUR", "seats": seats }],
            } }),
        )
        .await;
    assert_eq!(created["createEvent"]["seatCount"], 6000);
    let event = created["createEvent"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    let page = |first: i64, offset: i64| json!({ "e": event, "f": first, "o": offset });
    const SEATS: &str = "query($e: ID!, $f: Int!, $o: Int!) { event(id: $e) { seats(first: $f, offset: $o) { seat } } }";
    let first = app
        .ok(
            Some(&organizer),
            "query($e: ID!) { event(id: $e) { seats { seat } } }",
            json!({ "e": event }),
        )
        .await;
    assert_eq!(
        first["event"]["seats"].as_array().expect("seats").len(),
        1000,
        "1,000 by default"
    );
    let last = app.ok(Some(&organizer), SEATS, page(5000, 5000)).await;
    let last = last["event"]["seats"].as_array().expect("seats").clone();
    assert_eq!(last.len(), 1000);
    assert_eq!(last[0]["seat"], "S-5000");
    let too_many = app.gql(Some(&organizer), SEATS, page(5001, 0)).await;
    assert_eq!(code(&too_many), "INVALID_INPUT", "{too_many}");
    let negative = app.gql(Some(&organizer), SEATS, page(10, -1)).await;
    assert_eq!(code(&negative), "INVALID_INPUT", "{negative}");
    // 160 aliases of a large page: refused by the complexity limit before anything runs.
    let aliases: String = (0..160)
        .map(|n| format!("a{n}: event(id: $e) {{ seats(first: 5000) {{ seat state tierId }} }} "))
        .collect();
    let flood = app
        .gql(
            Some(&organizer),
            &format!("query($e: ID!) {{ {aliases} }}"),
            json!({ "e": event }),
        )
        .await;
    assert_eq!(code(&flood), "INVALID_INPUT", "refused by complexity");
    assert!(
        flood["errors"][0]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("complex"),
        "{}",
        flood["errors"][0]
    );
}

/// A query whose answer nobody waits for any more (its time limit passed) is stopped,
/// instead of running on; a mutation is left to finish (see tests/timeout.rs). On more
/// than one worker thread, so that the time limit runs beside the query.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abandoned_query_is_stopped() {
    let dir = tempfile::tempdir().expect("tempdir");
    // A published event with a big seat map, made with the usual time limit.
    let app = TestApp::spawn(dir.path()).await;
    let (organizer, _) = organizer_and_customer(&app).await;
    let seats: Vec<String> = (0..6000).map(|n| format!("S-{n}")).collect();
    let created = app
        .ok(
            Some(&organizer),
            "mutation($i: CreateEventInput!) { createEvent(input: $i) { id } }",
            json!({ "i": {
                "name": "Arena", "venue": "Hall 1",
                "startsAt": "2099-06-01T18:00:00Z", "endsAt": "2099-06-01T23:00:00Z",
                "tiers": [{ "name": "Floor", "priceMinor": 100, "currency": "EUR", "seats": seats }],
            } }),
        )
        .await;
    let event = created["createEvent"]["id"]
        .as_str()
        .expect("id")
        .to_owned();
    app.ok(
        Some(&organizer),
        "mutation($e: ID!) { publishEvent(eventId: $e) { id } }",
        json!({ "e": event }),
    )
    .await;
    app.stop().await;

    let mut config = test_config(dir.path());
    config.service.request_timeout = Duration::from_millis(1);
    config.service.max_query_complexity = 100_000;
    let app = TestApp::start(config).await;
    let abandoned = || async {
        let metrics = app
            .http
            .get(app.url("/metrics"))
            .send()
            .await
            .expect("metrics")
            .text()
            .await
            .expect("text");
        metrics
            .lines()
            .find(|l| l.starts_with("api_queries_abandoned_total"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    let before = abandoned().await;
    // Fifty thousand seats take longer than a millisecond to answer.
    let aliases: String = (0..10)
        .map(|n| format!("a{n}: event(id: $e) {{ seats(first: 5000) {{ seat state tierId }} }} "))
        .collect();
    let query = format!("query($e: ID!) {{ {aliases} }}");
    let mut timed_out = 0;
    for _ in 0..20 {
        let body = app.gql(None, &query, json!({ "e": event })).await;
        match code(&body).as_str() {
            "TIMEOUT" => timed_out += 1,
            "<none>" => {}
            other => panic!("{other}: {body}"),
        }
    }
    assert!(timed_out > 0, "no query outlasted the limit");
    tokio::time::sleep(Duration::from_millis(50)).await;
    let after = abandoned().await;
    assert!(
        after >= before + f64::from(timed_out),
        "{before} -> {after} for {timed_out} abandoned"
    );
}

/// The tickets a request paid for carry that request's id: the confirmation is tied to
/// the request as the hold is.
#[tokio::test]
async fn a_confirmation_carries_the_correlation_id_of_the_request_that_paid() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (organizer, kim) = organizer_and_customer(&app).await;
    let (event, tier) = app.published_event(&organizer, 10).await;
    let request_id = uuid::Uuid::now_v7().to_string();
    let response: Value = app
        .http
        .post(app.url("/graphql"))
        .bearer_auth(&kim)
        .header("x-request-id", &request_id)
        .json(&json!({ "query": PURCHASE, "variables": { "i": { "eventId": event, "tierId": tier, "quantity": 1, "paymentToken": "tok_success", "idempotencyKey": "traced" } } }))
        .send()
        .await
        .expect("sent")
        .json()
        .await
        .expect("json");
    assert_eq!(
        response["data"]["purchaseTickets"]["status"], "PAID",
        "{response}"
    );
    let trail = app
        .ok(
            Some(&organizer),
            "query($e: ID!) { auditTrail(eventId: $e, first: 100) { eventType correlationId } }",
            json!({ "e": event }),
        )
        .await;
    let of = |kind: &str| -> Vec<String> {
        trail["auditTrail"]
            .as_array()
            .expect("trail")
            .iter()
            .filter(|e| e["eventType"] == kind)
            .map(|e| e["correlationId"].as_str().expect("id").to_owned())
            .collect()
    };
    assert_eq!(of("HoldPlaced"), vec![request_id.clone()]);
    assert_eq!(of("OrderConfirmed"), vec![request_id], "{trail}");
}

/// What schema-driven fuzzing found: a missing required variable (also inside `@skip`) is
/// a request error, not an internal one; `Int` arguments stay within 32 bits, and 64-bit
/// values (store positions, versions, notification ids, amounts) are `Long`; an oversized
/// payment webhook is answered with a code; the last administrator cannot give up the role.
#[tokio::test]
async fn fuzzed_inputs_get_request_errors_with_codes() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (organizer, kim) = organizer_and_customer(&app).await;
    let (event, _) = app.published_event(&organizer, 10).await;
    for (query, variables) in [
        ("query($e: ID!) { event(id: $e) { id } }", json!({})),
        (
            "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { id } }",
            json!({}),
        ),
        (
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
            json!({ "e": "kim@example.com" }),
        ),
        (
            "query($e: ID!, $s: Boolean!) { event(id: $e) { id name @skip(if: $s) } }",
            json!({ "e": event }),
        ),
        (
            "query($e: ID!) { event(id: $e) { seats(first: 2147483648) { seat } } }",
            json!({ "e": event }),
        ),
    ] {
        let body = app.gql(Some(&kim), query, variables).await;
        assert_eq!(code(&body), "INVALID_INPUT", "{query}: {body}");
    }
    let too_big = app
        .gql(
            Some(&organizer),
            common::CREATE_EVENT,
            json!({ "i": {
                "name": "Big", "venue": "Hall",
                "startsAt": "2099-06-01T18:00:00Z", "endsAt": "2099-06-01T23:00:00Z",
                "tiers": [{ "name": "Standard", "priceMinor": 100, "currency": "EUR", "capacity": 2147483648i64 }],
            } }),
        )
        .await;
    assert_eq!(code(&too_big), "INVALID_INPUT", "{too_big}");
    // Notification ids and store positions are Longs: past 32 bits is a valid value.
    let listed = app
        .ok(
            Some(&kim),
            "{ myNotifications(before: 2147483648) { id } }",
            json!({}),
        )
        .await;
    assert!(listed["myNotifications"].is_array(), "{listed}");
    let types = app
        .ok(
            None,
            "{ __type(name: \"Query\") { fields { name args { name type { name ofType { name } } } } } }",
            json!({}),
        )
        .await;
    let arg_type = |field: &str, arg: &str| {
        types["__type"]["fields"]
            .as_array()
            .expect("fields")
            .iter()
            .find(|f| f["name"] == field)
            .and_then(|f| {
                f["args"]
                    .as_array()
                    .expect("args")
                    .iter()
                    .find(|a| a["name"] == arg)
                    .cloned()
            })
            .map(|a| {
                a["type"]["name"]
                    .as_str()
                    .or(a["type"]["ofType"]["name"].as_str())
                    .unwrap_or_default()
                    .to_owned()
            })
            .unwrap_or_default()
    };
    assert_eq!(arg_type("myNotifications", "before"), "Long");
    assert_eq!(arg_type("eventStateAt", "position"), "Long");
    assert_eq!(arg_type("auditTrail", "fromVersion"), "Long");
    let state = app
        .ok(
            Some(&organizer),
            "query($e: ID!) { eventStateAt(eventId: $e, position: 99999999999) { version } }",
            json!({ "e": event }),
        )
        .await;
    assert!(state["eventStateAt"]["version"].is_u64(), "{state}");

    // An oversized payment webhook: a JSON error with a code, not plain text.
    let huge = vec![b'x'; 300 * 1024];
    let response = app
        .http
        .post(app.url("/webhooks/payments"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .expect("sent");
    assert_eq!(response.status(), reqwest::StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = response.json().await.expect("a JSON error");
    assert_eq!(code(&body), "PAYLOAD_TOO_LARGE", "{body}");

    // The last administrator cannot take the role away from themself.
    let admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let me = app.ok(Some(&admin), "{ me { id } }", json!({})).await;
    let last = app
        .gql(
            Some(&admin),
            "mutation($u: ID!) { revokeRole(userId: $u, role: ADMIN) { roles } }",
            json!({ "u": me["me"]["id"] }),
        )
        .await;
    assert_eq!(code(&last), "INVALID_STATE", "{last}");
}
