//! A freshly built application on port 0 with a temporary data directory, and clients
//! for it: GraphQL over HTTP and graphql-transport-ws over a real WebSocket.

#![allow(dead_code)]

use std::{path::Path, time::Duration};

use api::{AppConfig, Application, app::NotifierMode};
use futures::{SinkExt, StreamExt};
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};
use tokio_tungstenite::tungstenite::{self, client::IntoClientRequest};

pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "admin-password-1";

/// A running application.
pub struct TestApp {
    pub addr: std::net::SocketAddr,
    pub http: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<anyhow::Result<()>>>,
}

/// The configuration tests start with: generous rate limits, an administrator.
pub fn test_config(data_dir: &Path) -> AppConfig {
    let mut config = AppConfig::new(data_dir, "127.0.0.1:0".parse().expect("addr"));
    config.service.login_rate = "10000/s".parse().expect("rate");
    config.service.login_address_rate = "10000/s".parse().expect("rate");
    config.service.register_rate = "10000/s".parse().expect("rate");
    config.service.purchase_rate = "10000/s".parse().expect("rate");
    config.service.max_held_tickets_per_user = 1_000_000;
    config.service.max_held_tickets_per_address = 1_000_000;
    config.service.max_websocket_connections_per_address = 100_000;
    config.service.shutdown_grace = Duration::from_secs(5);
    config.admin_email = Some(ADMIN_EMAIL.into());
    config.admin_password = Some(SecretString::from(ADMIN_PASSWORD));
    config.notifier = NotifierMode::InProcess;
    config
}

impl TestApp {
    /// Builds and starts the application on `config`.
    pub async fn start(config: AppConfig) -> Self {
        let app = Application::build(config).await.expect("the app builds");
        let addr = app.local_addr();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(app.run_until_stopped(async move {
            let _ = stopped.await;
        }));
        Self {
            addr,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Starts the application on a data directory with the test configuration.
    pub async fn spawn(data_dir: &Path) -> Self {
        Self::start(test_config(data_dir)).await
    }

    /// Shuts down gracefully and waits until everything has stopped.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("the app task")
                .expect("the app stops cleanly");
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Sends a GraphQL request; returns the response body.
    pub async fn gql(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let mut request = self
            .http
            .post(self.url("/graphql"))
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request
            .send()
            .await
            .expect("request sent")
            .json()
            .await
            .expect("JSON body")
    }

    /// Sends a GraphQL request that must succeed; returns its `data`.
    pub async fn ok(&self, token: Option<&str>, query: &str, variables: Value) -> Value {
        let body = self.gql(token, query, variables).await;
        assert!(body["errors"].is_null(), "unexpected errors: {body}");
        body["data"].clone()
    }

    /// Registers a customer and logs in; returns (user id, token).
    pub async fn customer(&self, email: &str) -> (String, String) {
        let data = self
            .ok(
                None,
                "mutation($i: RegisterInput!) { register(input: $i) { id email roles } }",
                json!({ "i": { "email": email, "password": "password-123", "displayName": email } }),
            )
            .await;
        let id = data["register"]["id"].as_str().expect("id").to_owned();
        (id, self.login(email, "password-123").await)
    }

    pub async fn login(&self, email: &str, password: &str) -> String {
        let data = self
            .ok(
                None,
                "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
                json!({ "e": email, "p": password }),
            )
            .await;
        data["login"]["token"].as_str().expect("token").to_owned()
    }

    /// A user with `role` granted by the administrator; returns (user id, token).
    pub async fn with_role(&self, email: &str, role: &str) -> (String, String) {
        let (id, _) = self.customer(email).await;
        let admin = self.login(ADMIN_EMAIL, ADMIN_PASSWORD).await;
        self.ok(
            Some(&admin),
            "mutation($u: ID!, $r: Role!) { grantRole(userId: $u, role: $r) { roles } }",
            json!({ "u": id, "r": role }),
        )
        .await;
        (id.clone(), self.login(email, "password-123").await)
    }

    /// Creates and publishes a general-admission event with one tier; returns (event id,
    /// tier id).
    pub async fn published_event(&self, organizer: &str, capacity: i64) -> (String, String) {
        let data = self
            .ok(
                Some(organizer),
                CREATE_EVENT,
                json!({ "i": {
                    "name": "Rust Nation", "venue": "Hall 1",
                    "startsAt": "2099-06-01T18:00:00Z", "endsAt": "2099-06-01T23:00:00Z",
                    "tiers": [{ "name": "Standard", "priceMinor": 4500, "currency": "EUR", "capacity": capacity }]
                } }),
            )
            .await;
        let event = data["createEvent"]["id"]
            .as_str()
            .expect("event id")
            .to_owned();
        let tier = data["createEvent"]["tiers"][0]["id"]
            .as_str()
            .expect("tier id")
            .to_owned();
        self.ok(
            Some(organizer),
            "mutation($e: ID!) { publishEvent(eventId: $e) { status } }",
            json!({ "e": event }),
        )
        .await;
        (event, tier)
    }
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub const CREATE_EVENT: &str = "mutation($i: CreateEventInput!) { createEvent(input: $i) { id status tiers { id name capacity available seated } seatCount seats { seat state } } }";

/// The first error's code.
pub fn code(body: &Value) -> String {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
        .to_owned()
}

pub type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens a graphql-transport-ws connection (optionally authenticated) and waits for the ack.
pub async fn ws_connect(app: &TestApp, token: Option<&str>) -> Ws {
    let mut request = format!("ws://{}/graphql/ws", app.addr)
        .into_client_request()
        .expect("request");
    request.headers_mut().insert(
        "sec-websocket-protocol",
        "graphql-transport-ws".parse().expect("header"),
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket connects");
    let payload = match token {
        Some(token) => json!({ "Authorization": format!("Bearer {token}") }),
        None => json!({}),
    };
    ws_send(
        &mut socket,
        json!({ "type": "connection_init", "payload": payload }),
    )
    .await;
    let ack = ws_next(&mut socket).await.expect("ack");
    assert_eq!(ack["type"], "connection_ack", "{ack}");
    socket
}

pub async fn ws_send(socket: &mut Ws, message: Value) {
    socket
        .send(tungstenite::Message::text(message.to_string()))
        .await
        .expect("send");
}

/// The next text frame as JSON, or the close frame.
pub async fn ws_next(socket: &mut Ws) -> Result<Value, Option<tungstenite::protocol::CloseFrame>> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .expect("a frame within 10 s");
        match message {
            Some(Ok(tungstenite::Message::Text(text))) => {
                return Ok(serde_json::from_str(text.as_str()).expect("JSON frame"));
            }
            Some(Ok(tungstenite::Message::Close(frame))) => return Err(frame),
            Some(Ok(_)) => continue,
            Some(Err(error)) => panic!("WebSocket error: {error}"),
            None => return Err(None),
        }
    }
}
