//! `GET /tickets/{id}.pdf` over real HTTP: the owner (and an administrator) gets the
//! printable PDF; everyone else learns nothing about the ticket.

mod common;

use common::{ADMIN_EMAIL, ADMIN_PASSWORD, TestApp};
use reqwest::StatusCode;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_or_an_admin_gets_the_printable_ticket() {
    let dir = tempfile::tempdir().expect("tempdir");
    let app = TestApp::spawn(dir.path()).await;
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (event_id, tier_id) = app.published_event(&organizer, 10).await;
    let (_, alice) = app.customer("alice@example.com").await;
    let (_, mallory) = app.customer("mallory@example.com").await;

    let bought = app
        .ok(
            Some(&alice),
            "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { status tickets { id code pdfUrl } } }",
            json!({ "i": {
                "eventId": event_id, "tierId": tier_id, "quantity": 1,
                "idempotencyKey": "alice-buys", "paymentToken": "tok_success"
            } }),
        )
        .await;
    let ticket = &bought["purchaseTickets"]["tickets"][0];
    assert_eq!(bought["purchaseTickets"]["status"], "PAID");
    let ticket_id = ticket["id"].as_str().expect("ticket id");
    let path = format!("/tickets/{ticket_id}.pdf");
    assert_eq!(ticket["pdfUrl"], path.as_str());

    let get = |token: Option<&str>, path: &str| {
        let mut request = app.http.get(app.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send()
    };

    let owner = get(Some(&alice), &path).await.expect("sent");
    assert_eq!(owner.status(), StatusCode::OK);
    let header = |name: &str| {
        owner
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    assert_eq!(header("content-type"), "application/pdf");
    assert_eq!(
        header("content-disposition"),
        format!("inline; filename=\"ticket-{ticket_id}.pdf\"")
    );
    assert_eq!(header("cache-control"), "private, no-store");
    let pdf = owner.bytes().await.expect("body");
    assert!(pdf.starts_with(b"%PDF"), "not a PDF");

    let admin = app.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
    let by_admin = get(Some(&admin), &path).await.expect("sent");
    assert_eq!(by_admin.status(), StatusCode::OK);
    assert!(by_admin.bytes().await.expect("body").starts_with(b"%PDF"));

    // Someone else's ticket, and tickets that do not exist, look the same.
    for (token, path) in [
        (&mallory, path.clone()),
        (&alice, format!("/tickets/{}.pdf", uuid::Uuid::new_v4())),
        (&alice, format!("/tickets/{ticket_id}")),
        (&alice, "/tickets/not-a-ticket.pdf".to_owned()),
        (&alice, "/tickets/.pdf".to_owned()),
    ] {
        let response = get(Some(token), &path).await.expect("sent");
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body: serde_json::Value = response.json().await.expect("JSON error");
        assert_eq!(
            body["errors"][0]["extensions"]["code"], "NOT_FOUND",
            "{body}"
        );
        assert!(!body.to_string().contains("%PDF"));
    }

    // No token, or a forged one: 401 before anything is looked up.
    let anonymous = get(None, &path).await.expect("sent");
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let body: serde_json::Value = anonymous.json().await.expect("JSON error");
    assert_eq!(body["errors"][0]["extensions"]["code"], "UNAUTHENTICATED");
    let forged = get(Some("not.a.token"), &path).await.expect("sent");
    assert_eq!(forged.status(), StatusCode::UNAUTHORIZED);

    // A cancelled order's ticket is void: no printable (scannable) form any more.
    let order = app
        .ok(Some(&alice), "{ myOrders { nodes { id } } }", json!({}))
        .await;
    app.ok(
        Some(&alice),
        "mutation($o: ID!) { cancelOrder(orderId: $o) { status } }",
        json!({ "o": order["myOrders"]["nodes"][0]["id"] }),
    )
    .await;
    let void = get(Some(&alice), &path).await.expect("sent");
    assert_eq!(void.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: serde_json::Value = void.json().await.expect("JSON error");
    assert_eq!(
        body["errors"][0]["extensions"]["code"], "TICKET_VOID",
        "{body}"
    );

    app.stop().await;
}
