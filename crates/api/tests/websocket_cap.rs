//! The cap on WebSocket connections, with real WebSocket clients against the real
//! application: up to the cap every connection is served; the next upgrade is refused
//! with 503 and `TOO_MANY_CONNECTIONS`; a connection that ends, cleanly or by dropping its
//! socket, frees its slot.

mod common;

use std::time::{Duration, Instant};

use common::{TestApp, Ws, code, test_config, ws_connect, ws_next, ws_send};
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest as _};

const CAP: usize = 3;

/// An upgrade attempt: the connected socket, or the HTTP status and JSON body it was
/// refused with.
async fn try_connect(app: &TestApp) -> Result<Ws, (u16, Value)> {
    let mut request = format!("ws://{}/graphql/ws", app.addr)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => {
            let body = response.body().as_deref().unwrap_or_default();
            let json = serde_json::from_slice(body)
                .unwrap_or_else(|_| panic!("a JSON body, got {:?}", String::from_utf8_lossy(body)));
            Err((response.status().as_u16(), json))
        }
        Err(error) => panic!("WebSocket handshake failed: {error}"),
    }
}

/// An upgrade attempt that must be refused.
async fn refused(app: &TestApp) -> (u16, Value) {
    match try_connect(app).await {
        Ok(_) => panic!("a WebSocket was served beyond the cap"),
        Err(refusal) => refusal,
    }
}

/// Connects once a slot is free; a slot frees when the server has finished with a closed
/// connection, shortly after the client's side is closed.
async fn connect_when_free(app: &TestApp) -> Ws {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_connect(app).await {
            Ok(socket) => return socket,
            Err(refusal) if Instant::now() < deadline => {
                assert_eq!(code(&refusal.1), "TOO_MANY_CONNECTIONS", "{refusal:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(refusal) => panic!("no slot freed: {refusal:?}"),
        }
    }
}

/// A round trip over the protocol: the connection is served, not merely open.
async fn served(socket: &mut Ws) {
    ws_send(socket, json!({ "type": "ping" })).await;
    let pong = ws_next(socket).await.expect("open");
    assert_eq!(pong["type"], "pong", "{pong}");
}

fn assert_refused(refusal: &(u16, Value)) {
    let (status, body) = refusal;
    assert_eq!(*status, 503, "{body}");
    assert_eq!(code(body), "TOO_MANY_CONNECTIONS", "{body}");
    assert_eq!(
        body["errors"][0]["extensions"]["maxConnections"], CAP,
        "{body}"
    );
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("maximum of 3 WebSocket connections")),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn websocket_connections_beyond_the_cap_are_refused_until_one_ends() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.service.max_websocket_connections = CAP;
    let app = TestApp::start(config).await;

    let mut open = Vec::new();
    for _ in 0..CAP {
        open.push(ws_connect(&app, None).await);
    }
    for socket in &mut open {
        served(socket).await;
    }
    let refusal = refused(&app).await;
    assert_refused(&refusal);
    // Plain HTTP is not affected by the cap.
    let data = app.ok(None, "{ events { nodes { id } } }", json!({})).await;
    assert_eq!(data["events"]["nodes"], json!([]));

    // A client that closes cleanly frees its slot.
    let mut leaving = open.pop().expect("a socket");
    leaving.close(None).await.expect("close");
    drop(leaving);
    let mut socket = connect_when_free(&app).await;
    served_after_init(&mut socket).await;
    open.push(socket);
    assert_refused(&refused(&app).await);

    // So does one that just drops its connection.
    drop(open.pop());
    let mut socket = connect_when_free(&app).await;
    served_after_init(&mut socket).await;
    open.push(socket);
    assert_refused(&refused(&app).await);

    // The connections that stayed were never disturbed.
    for socket in &mut open {
        served(socket).await;
    }
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains("api_websocket_refused_total"),
        "refusals are counted: {metrics}"
    );
    drop(open);
    app.stop().await;
}

/// Initialises a freshly upgraded connection and checks it is served.
async fn served_after_init(socket: &mut Ws) {
    ws_send(socket, json!({ "type": "connection_init", "payload": {} })).await;
    let ack = ws_next(socket).await.expect("ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    served(socket).await;
}

/// A raw upgrade request with `extra` headers; returns the status it is answered with.
async fn upgrade_status(app: &TestApp, extra: &[(&str, &str)]) -> reqwest::StatusCode {
    let mut request = app
        .http
        .get(app.url("/graphql/ws"))
        .header("connection", "upgrade")
        .header("upgrade", "websocket")
        .header("sec-websocket-version", "13")
        .header("sec-websocket-key", "dGhlIHNhbXBsZSBub25jZQ==");
    for (name, value) in extra {
        request = request.header(*name, *value);
    }
    request.send().await.expect("answer").status()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_upgrades_take_no_slot() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = test_config(dir.path());
    config.service.max_websocket_connections = 1;
    let app = TestApp::start(config).await;

    for _ in 0..3 {
        let unknown_protocol = [("sec-websocket-protocol", "not-graphql")];
        assert_eq!(
            upgrade_status(&app, &unknown_protocol).await,
            reqwest::StatusCode::BAD_REQUEST
        );
        let forged_token = [
            ("sec-websocket-protocol", "graphql-transport-ws"),
            ("authorization", "Bearer not.a.token"),
        ];
        assert_eq!(
            upgrade_status(&app, &forged_token).await,
            reqwest::StatusCode::UNAUTHORIZED
        );
    }
    let mut socket = ws_connect(&app, None).await;
    served(&mut socket).await;
    let refusal = refused(&app).await;
    assert_eq!(refusal.0, 503);
    assert_eq!(code(&refusal.1), "TOO_MANY_CONNECTIONS");
    drop(socket);
    let mut socket = connect_when_free(&app).await;
    served_after_init(&mut socket).await;
    drop(socket);
    app.stop().await;
}
