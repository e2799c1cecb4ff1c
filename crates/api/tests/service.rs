//! Black-box tests of the HTTP/GraphQL service: a real server on 127.0.0.1:0, driven
//! with a real HTTP client and a real WebSocket client.
//!
//! The schema here is test-only: just enough fields to exercise authentication, guards,
//! rate limits, error codes, limits and subscriptions. The product schema is built by the
//! command/read side integration.

use std::{
    net::SocketAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use api::{
    ApiError, Authenticated, HttpOptions, HttpService, JwtCodec, RateLimitedAction, RateLimits,
    Readiness, RequestContext, Role, RoleGuard, SchemaLimits, ServiceConfig,
    config::{RatePeriod, RateSpec},
    configure_schema,
};
use async_graphql::{Context, Object, Schema, SimpleObject, Subscription};
use axum::{body::Bytes, http::StatusCode as AxumStatus};
use futures::{SinkExt, Stream, StreamExt};
use reqwest::StatusCode;
use secrecy::SecretString;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::oneshot,
    task::JoinHandle,
};
use tokio_tungstenite::tungstenite::{
    self, client::IntoClientRequest, protocol::frame::coding::CloseCode,
};
use uuid::Uuid;

// ---------------------------------------------------------------------------------------
// The test-only schema.

struct Query;

#[derive(SimpleObject)]
#[graphql(complex)]
struct Nested {
    value: i32,
    #[graphql(skip)]
    depth: i32,
}

#[async_graphql::ComplexObject]
impl Nested {
    async fn child(&self) -> Nested {
        Nested {
            value: self.value + 1,
            depth: self.depth + 1,
        }
    }
}

#[Object]
impl Query {
    async fn echo(&self, message: String) -> String {
        message
    }

    #[graphql(guard = "Authenticated")]
    async fn whoami(&self, ctx: &Context<'_>) -> async_graphql::Result<Uuid> {
        Ok(RequestContext::from_ctx(ctx)?.require_user()?.user_id)
    }

    #[graphql(guard = "RoleGuard::new(Role::Admin)")]
    async fn admin_secret(&self) -> &'static str {
        "for admins"
    }

    async fn nested(&self) -> Nested {
        Nested { value: 0, depth: 0 }
    }

    async fn request_id(&self, ctx: &Context<'_>) -> async_graphql::Result<String> {
        Ok(RequestContext::from_ctx(ctx)?.request_id.to_string())
    }

    async fn fail_internally(&self) -> async_graphql::Result<i32> {
        Err(ApiError::internal(anyhow::anyhow!(
            "database at /var/lib/x: password=hunter2"
        )))?
    }

    async fn sold_out(&self) -> async_graphql::Result<i32> {
        Err(ApiError::domain("SOLD_OUT", "the VIP tier is sold out"))?
    }

    async fn slow(&self, millis: u64) -> u64 {
        tokio::time::sleep(Duration::from_millis(millis)).await;
        millis
    }

    async fn boom(&self, really: bool) -> i32 {
        assert!(!really, "resolver bug");
        0
    }
}

struct Mutation;

#[Object]
impl Mutation {
    /// Stands in for the real login: only its rate limit is under test.
    async fn login(&self, ctx: &Context<'_>) -> async_graphql::Result<bool> {
        RateLimits::check_ctx(ctx, RateLimitedAction::Login)?;
        Ok(true)
    }
}

struct Subscription;

#[Subscription]
impl Subscription {
    /// 0, 1, 2, ... every `every_ms` milliseconds, forever.
    async fn ticks(&self, every_ms: u64) -> impl Stream<Item = u64> {
        futures::stream::unfold(0u64, move |n| async move {
            tokio::time::sleep(Duration::from_millis(every_ms)).await;
            Some((n, n + 1))
        })
    }

    /// The subscriber's user id, once.
    #[graphql(guard = "Authenticated")]
    async fn me(&self, ctx: &Context<'_>) -> async_graphql::Result<impl Stream<Item = String>> {
        let user = RequestContext::from_ctx(ctx)?.require_user()?.user_id;
        Ok(futures::stream::once(async move { user.to_string() }))
    }
}

type TestSchema = Schema<Query, Mutation, Subscription>;

fn schema(limits: SchemaLimits) -> TestSchema {
    configure_schema(Schema::build(Query, Mutation, Subscription), limits).finish()
}

// ---------------------------------------------------------------------------------------
// Harness.

const SECRET: &str = "integration-test-secret-0123456789abcdef";

struct TestApp {
    addr: SocketAddr,
    jwt: Arc<JwtCodec>,
    readiness: Readiness,
    http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    server: JoinHandle<std::io::Result<()>>,
}

struct Setup {
    options: HttpOptions,
    limits: SchemaLimits,
    login_rate: RateSpec,
    webhook: bool,
}

impl Default for Setup {
    fn default() -> Self {
        Self {
            options: HttpOptions {
                shutdown_grace: Duration::from_secs(5),
                ..HttpOptions::default()
            },
            limits: SchemaLimits {
                max_depth: 6,
                max_complexity: 200,
            },
            login_rate: RateSpec::per(3.try_into().expect("non-zero"), RatePeriod::Hour),
            webhook: false,
        }
    }
}

async fn payment_webhook(body: Bytes) -> (AxumStatus, String) {
    (
        AxumStatus::ACCEPTED,
        format!("received {} bytes", body.len()),
    )
}

async fn spawn_app(setup: Setup) -> TestApp {
    let jwt = Arc::new(JwtCodec::new(
        &SecretString::from(SECRET),
        "ticketing",
        Duration::from_secs(3600),
    ));
    let rate_limits = Arc::new(RateLimits::new(setup.login_rate, setup.login_rate));
    let mut builder = HttpService::builder(
        schema(setup.limits),
        Arc::clone(&jwt),
        rate_limits,
        setup.options,
    );
    if setup.webhook {
        builder = builder.payment_webhook(payment_webhook);
    }
    let service = builder.build().expect("service builds");
    let readiness = service.readiness();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (shutdown_tx, shutdown_rx) = oneshot::channel::<()>();
    let server = tokio::spawn(service.serve(listener, async move {
        let _ = shutdown_rx.await;
    }));
    TestApp {
        addr,
        jwt,
        readiness,
        http: reqwest::Client::new(),
        shutdown: Some(shutdown_tx),
        server,
    }
}

impl TestApp {
    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn token(&self, roles: &[Role]) -> String {
        self.jwt.issue(Uuid::now_v7(), roles).expect("issues").token
    }

    async fn post(&self, body: Value, token: Option<&str>) -> (StatusCode, Value) {
        let mut request = self.http.post(self.url("/graphql")).json(&body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.expect("request");
        let status = response.status();
        (status, response.json().await.expect("JSON body"))
    }

    async fn query(&self, query: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.post(json!({ "query": query }), token).await
    }

    async fn stop(mut self) -> std::io::Result<()> {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        tokio::time::timeout(Duration::from_secs(10), self.server)
            .await
            .expect("server stops within 10 s")
            .expect("server task")
    }
}

fn error_code(body: &Value) -> &str {
    body["errors"][0]["extensions"]["code"]
        .as_str()
        .unwrap_or("<none>")
}

type Ws =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws_connect(app: &TestApp, protocol: &str) -> Ws {
    let mut request = format!("ws://{}/graphql/ws", app.addr)
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", protocol.parse().expect("header"));
    let (socket, response) = tokio_tungstenite::connect_async(request)
        .await
        .expect("WebSocket connects");
    assert_eq!(
        response
            .headers()
            .get("sec-websocket-protocol")
            .and_then(|v| v.to_str().ok()),
        Some(protocol)
    );
    socket
}

async fn ws_send(socket: &mut Ws, message: Value) {
    socket
        .send(tungstenite::Message::text(message.to_string()))
        .await
        .expect("send");
}

/// The next frame, as JSON for text frames or the close frame itself.
async fn ws_next(socket: &mut Ws) -> Result<Value, Option<tungstenite::protocol::CloseFrame>> {
    loop {
        let message = tokio::time::timeout(Duration::from_secs(5), socket.next())
            .await
            .expect("a frame within 5 s");
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

// ---------------------------------------------------------------------------------------
// HTTP basics.

#[tokio::test]
async fn graphiql_is_served_on_get() {
    let app = spawn_app(Setup::default()).await;
    let response = app
        .http
        .get(app.url("/graphql"))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .expect("ascii")
            .starts_with("text/html")
    );
    let page = response.text().await.expect("body");
    assert!(page.contains("graphiql"), "not the GraphiQL page");
    assert!(
        page.contains("/graphql/ws"),
        "the page subscribes at /graphql/ws"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn post_runs_queries_with_variables() {
    let app = spawn_app(Setup::default()).await;
    let (status, body) = app
        .post(json!({ "query": "query($m: String!) { echo(message: $m) }", "variables": { "m": "hello" } }), None)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body, json!({ "data": { "echo": "hello" } }));
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn request_ids_are_propagated_and_sanitised() {
    let app = spawn_app(Setup::default()).await;
    let send = |id: Option<&'static str>| {
        let mut request = app
            .http
            .post(app.url("/graphql"))
            .json(&json!({ "query": "{ requestId }" }));
        if let Some(id) = id {
            request = request.header("x-request-id", id);
        }
        request.send()
    };

    let response = send(Some("client-chosen-id-42")).await.expect("request");
    assert_eq!(response.headers()["x-request-id"], "client-chosen-id-42");
    let body: Value = response.json().await.expect("json");
    assert_eq!(
        body["data"]["requestId"], "client-chosen-id-42",
        "resolvers see the same id"
    );

    let response = send(None).await.expect("request");
    let generated = response.headers()["x-request-id"]
        .to_str()
        .expect("ascii")
        .to_owned();
    assert!(Uuid::parse_str(&generated).is_ok(), "{generated}");
    let body: Value = response.json().await.expect("json");
    assert_eq!(body["data"]["requestId"], generated.as_str());

    let response = send(Some("evil id with spaces {}")).await.expect("request");
    let replaced = response.headers()["x-request-id"].to_str().expect("ascii");
    assert!(
        Uuid::parse_str(replaced).is_ok(),
        "malformed ids are replaced: {replaced}"
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let app = spawn_app(Setup::default()).await;

    // Not JSON at all.
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "application/json")
        .body("{ not json")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    let body: Value = response.json().await.expect("json");
    assert_eq!(error_code(&body), "INVALID_INPUT");

    // Wrong content type.
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("content-type", "text/plain")
        .body(r#"{"query":"{ echo(message: \"x\") }"}"#)
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);

    // Batches are refused.
    let (status, body) = app
        .post(json!([{ "query": "{ echo(message: \"a\") }" }]), None)
        .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("batched")
    );

    // A query that does not parse, an unknown field, a wrong argument type.
    for query in ["{ echo(", "{ nope }", "{ echo(message: 42) }", "{ echo }"] {
        let (status, body) = app.query(query, None).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        assert_eq!(error_code(&body), "INVALID_INPUT", "{query}: {body}");
    }
    // A variable of the wrong type.
    let (_, body) = app
        .post(
            json!({ "query": "query($m: String!) { echo(message: $m) }", "variables": { "m": 7 } }),
            None,
        )
        .await;
    assert_eq!(error_code(&body), "INVALID_INPUT", "{body}");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn domain_codes_pass_through_and_internal_errors_are_hidden() {
    let app = spawn_app(Setup::default()).await;
    let (_, body) = app.query("{ soldOut }", None).await;
    assert_eq!(error_code(&body), "SOLD_OUT");
    assert_eq!(body["errors"][0]["message"], "the VIP tier is sold out");

    let response = app
        .http
        .post(app.url("/graphql"))
        .header("x-request-id", "trace-me-123")
        .json(&json!({ "query": "{ failInternally }" }))
        .send()
        .await
        .expect("request");
    let body: Value = response.json().await.expect("json");
    assert_eq!(error_code(&body), "INTERNAL");
    assert_eq!(
        body["errors"][0]["extensions"]["correlationId"],
        "trace-me-123"
    );
    let text = body.to_string();
    assert!(
        !text.contains("hunter2") && !text.contains("/var/lib"),
        "{text}"
    );

    // A panicking resolver answers INTERNAL, and the server keeps serving.
    let response = app
        .http
        .post(app.url("/graphql"))
        .json(&json!({ "query": "{ boom(really: true) }" }))
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::INTERNAL_SERVER_ERROR);
    let body: Value = response.json().await.expect("json");
    assert_eq!(error_code(&body), "INTERNAL");
    assert!(!body.to_string().contains("resolver bug"));
    let (_, body) = app.query(r#"{ echo(message: "still up") }"#, None).await;
    assert_eq!(body["data"]["echo"], "still up");
    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert!(
        metrics.contains(r#"http_requests_total{method="POST",route="/graphql",status="500"}"#),
        "the panicked request is counted: {metrics}"
    );
    app.stop().await.expect("clean stop");
}

// ---------------------------------------------------------------------------------------
// Authentication and authorization.

#[tokio::test]
async fn missing_expired_and_forged_tokens_are_unauthenticated() {
    let app = spawn_app(Setup::default()).await;

    // Missing: the guarded field fails, the rest of the query still answers.
    let (status, body) = app.query(r#"{ echo(message: "x") whoami }"#, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    assert_eq!(body["errors"][0]["path"], json!(["whoami"]));

    // Valid.
    let user = Uuid::now_v7();
    let token = app
        .jwt
        .issue(user, &[Role::Customer])
        .expect("issues")
        .token;
    let (_, body) = app.query("{ whoami }", Some(&token)).await;
    assert_eq!(body["data"]["whoami"], user.to_string());

    // Expired.
    let expired = app
        .jwt
        .issue_at(
            user,
            &[Role::Customer],
            0,
            chrono::Utc::now() - chrono::Duration::hours(3),
        )
        .expect("issues")
        .token;
    let (status, body) = app.query(r#"{ echo(message: "x") }"#, Some(&expired)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("expired")
    );

    // Forged: signed with another secret.
    let forger = JwtCodec::new(
        &SecretString::from("not-the-server-secret-0123456789abcdef"),
        "ticketing",
        Duration::from_secs(3600),
    );
    let forged = forger.issue(user, &[Role::Admin]).expect("issues").token;
    let (status, body) = app.query("{ adminSecret }", Some(&forged)).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    assert!(body["data"].is_null());

    // Garbage.
    let (status, body) = app.query("{ whoami }", Some("garbage")).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn roles_are_enforced() {
    let app = spawn_app(Setup::default()).await;
    for roles in [&[Role::Customer][..], &[Role::Organizer, Role::Operator]] {
        let (_, body) = app.query("{ adminSecret }", Some(&app.token(roles))).await;
        assert_eq!(error_code(&body), "FORBIDDEN", "{roles:?}");
        assert!(body["data"].is_null());
    }
    let (_, body) = app
        .query("{ adminSecret }", Some(&app.token(&[Role::Admin])))
        .await;
    assert_eq!(body["data"]["adminSecret"], "for admins");
    let (_, body) = app.query("{ adminSecret }", None).await;
    assert_eq!(error_code(&body), "UNAUTHENTICATED");
    app.stop().await.expect("clean stop");
}

// ---------------------------------------------------------------------------------------
// Limits.

#[tokio::test]
async fn oversized_bodies_are_refused_with_413() {
    let mut setup = Setup::default();
    setup.options.body_limit = 4096;
    let app = spawn_app(setup).await;
    let big = "x".repeat(8192);
    let (status, body) = app.post(json!({ "query": "query($m: String!) { echo(message: $m) }", "variables": { "m": big } }), None).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(error_code(&body), "PAYLOAD_TOO_LARGE");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("4096 bytes")
    );

    // The same without a Content-Length (chunked), caught while reading.
    let mut stream = tokio::net::TcpStream::connect(app.addr)
        .await
        .expect("connect");
    let head = format!(
        "POST /graphql HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
        app.addr
    );
    stream.write_all(head.as_bytes()).await.expect("write");
    let chunk = format!("400\r\n{}\r\n", " ".repeat(1024));
    for _ in 0..8 {
        if stream.write_all(chunk.as_bytes()).await.is_err() {
            break; // the server may answer and close before the whole body is sent
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = vec![0u8; 12];
    stream.read_exact(&mut response).await.expect("status line");
    assert_eq!(&response, b"HTTP/1.1 413");

    // Just under the limit is fine.
    let fits = "y".repeat(3000);
    let (status, body) = app.post(json!({ "query": "query($m: String!) { echo(message: $m) }", "variables": { "m": fits } }), None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["echo"].as_str().map(str::len), Some(3000));
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn too_deep_and_too_complex_queries_are_refused() {
    let app = spawn_app(Setup::default()).await;
    let (_, body) = app
        .query("{ nested { child { child { value } } } }", None)
        .await;
    assert_eq!(body["data"]["nested"]["child"]["child"]["value"], 2);

    let deep = "{ nested { child { child { child { child { child { child { value } } } } } } } }";
    let (_, body) = app.query(deep, None).await;
    assert_eq!(error_code(&body), "INVALID_INPUT", "{body}");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("nested too deep")
    );
    assert!(body["data"].is_null(), "refused before running");

    let wide = format!(
        "{{ {} }}",
        (0..300)
            .map(|i| format!("e{i}: echo(message: \"x\")"))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let (_, body) = app.query(&wide, None).await;
    assert_eq!(error_code(&body), "INVALID_INPUT");
    assert!(
        body["errors"][0]["message"]
            .as_str()
            .expect("message")
            .contains("too complex")
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn login_is_rate_limited_per_client() {
    let app = spawn_app(Setup::default()).await;
    for _ in 0..3 {
        let (_, body) = app.query("mutation { login }", None).await;
        assert_eq!(body["data"]["login"], true, "{body}");
    }
    let (_, body) = app.query("mutation { login }", None).await;
    assert_eq!(error_code(&body), "RATE_LIMITED");
    let retry = body["errors"][0]["extensions"]["retryAfterSeconds"]
        .as_u64()
        .expect("retryAfterSeconds");
    assert!((1..=1200).contains(&retry), "{retry}");

    // An authenticated user has their own allowance, independent of the address.
    let token = app.token(&[Role::Customer]);
    let (_, body) = app.query("mutation { login }", Some(&token)).await;
    assert_eq!(body["data"]["login"], true, "{body}");

    let metrics = app
        .http
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("request")
        .text()
        .await
        .expect("body");
    assert!(metrics.contains("api_rate_limited_total"), "{metrics}");
    app.stop().await.expect("clean stop");
}

// ---------------------------------------------------------------------------------------
// Operations.

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app(Setup::default()).await;
    let get = |path: &'static str| app.http.get(app.url(path)).send();

    assert_eq!(
        get("/healthz").await.expect("request").status(),
        StatusCode::OK
    );
    assert_eq!(
        get("/readyz").await.expect("request").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    app.readiness.set_ready(true);
    assert_eq!(
        get("/readyz").await.expect("request").status(),
        StatusCode::OK
    );
    app.readiness.set_ready(false);
    assert_eq!(
        get("/readyz").await.expect("request").status(),
        StatusCode::SERVICE_UNAVAILABLE
    );

    let _ = app.query(r#"{ echo(message: "count me") }"#, None).await;
    let response = get("/metrics").await.expect("request");
    assert_eq!(response.status(), StatusCode::OK);
    let metrics = response.text().await.expect("body");
    assert!(
        metrics.contains(r#"http_requests_total{method="POST",route="/graphql",status="200"}"#),
        "{metrics}"
    );
    assert!(
        metrics.contains("http_request_duration_seconds_bucket"),
        "{metrics}"
    );
    assert_eq!(
        get("/no/such/route").await.expect("request").status(),
        StatusCode::NOT_FOUND
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn cors_follows_the_configuration() {
    let mut setup = Setup::default();
    setup.options.cors_origins = vec!["https://tickets.example".into()];
    let app = spawn_app(setup).await;
    let preflight = |origin: &'static str| {
        app.http
            .request(reqwest::Method::OPTIONS, app.url("/graphql"))
            .header("origin", origin)
            .header("access-control-request-method", "POST")
            .header(
                "access-control-request-headers",
                "authorization,content-type",
            )
            .send()
    };
    let allowed = preflight("https://tickets.example").await.expect("request");
    assert_eq!(
        allowed
            .headers()
            .get("access-control-allow-origin")
            .map(|v| v.as_bytes()),
        Some(&b"https://tickets.example"[..])
    );
    let refused = preflight("https://evil.example").await.expect("request");
    assert!(
        refused
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    app.stop().await.expect("clean stop");

    // No origins configured: no CORS headers at all.
    let app = spawn_app(Setup::default()).await;
    let response = app
        .http
        .post(app.url("/graphql"))
        .header("origin", "https://tickets.example")
        .json(&json!({ "query": "{ echo(message: \"x\") }" }))
        .send()
        .await
        .expect("request");
    assert!(
        response
            .headers()
            .get("access-control-allow-origin")
            .is_none()
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn the_payment_webhook_route_exists_only_when_supplied() {
    let app = spawn_app(Setup::default()).await;
    let response = app
        .http
        .post(app.url("/webhooks/payments"))
        .body("{}")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    app.stop().await.expect("clean stop");

    let app = spawn_app(Setup {
        webhook: true,
        ..Setup::default()
    })
    .await;
    let response = app
        .http
        .post(app.url("/webhooks/payments"))
        .body("0123456789")
        .send()
        .await
        .expect("request");
    assert_eq!(response.status(), StatusCode::ACCEPTED);
    assert!(response.headers().contains_key("x-request-id"));
    assert_eq!(response.text().await.expect("body"), "received 10 bytes");
    app.stop().await.expect("clean stop");
}

#[test]
fn production_mode_with_the_default_secret_refuses_to_start() {
    use clap::Parser;
    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        config: ServiceConfig,
    }
    let cli = Cli::try_parse_from(["ticketing", "--production"]).expect("parses");
    if std::env::var_os("TICKETING_JWT_SECRET").is_some() {
        return; // the environment supplies a secret; nothing to refuse
    }
    let error = cli.config.validate().expect_err("refused");
    assert!(
        error
            .to_string()
            .contains("production mode needs a JWT secret"),
        "{error}"
    );

    let cli = Cli::try_parse_from([
        "ticketing",
        "--production",
        "--jwt-secret",
        "a-long-enough-production-secret-0123456789",
        "--payment-webhook-secret",
        "a-long-enough-webhook-secret-0123456789ab",
    ])
    .expect("parses");
    cli.config.validate().expect("accepted");
}

// ---------------------------------------------------------------------------------------
// WebSocket subscriptions.

#[tokio::test]
async fn graphql_transport_ws_delivers_subscription_data() {
    let app = spawn_app(Setup::default()).await;
    let mut socket = ws_connect(&app, "graphql-transport-ws").await;
    ws_send(&mut socket, json!({ "type": "connection_init" })).await;
    assert_eq!(
        ws_next(&mut socket).await.expect("ack")["type"],
        "connection_ack"
    );
    ws_send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { ticks(everyMs: 10) }" } })).await;
    for expected in 0..3 {
        let message = ws_next(&mut socket).await.expect("next");
        assert_eq!(message["type"], "next");
        assert_eq!(message["id"], "1");
        assert_eq!(message["payload"]["data"]["ticks"], expected);
    }
    ws_send(&mut socket, json!({ "id": "1", "type": "complete" })).await;
    socket.close(None).await.expect("close");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn legacy_graphql_ws_is_accepted() {
    let app = spawn_app(Setup::default()).await;
    let mut socket = ws_connect(&app, "graphql-ws").await;
    ws_send(
        &mut socket,
        json!({ "type": "connection_init", "payload": {} }),
    )
    .await;
    assert_eq!(
        ws_next(&mut socket).await.expect("ack")["type"],
        "connection_ack"
    );
    ws_send(&mut socket, json!({ "id": "7", "type": "start", "payload": { "query": "subscription { ticks(everyMs: 10) }" } })).await;
    let message = loop {
        let message = ws_next(&mut socket).await.expect("frame");
        if message["type"] != "ka" {
            break message;
        }
    };
    assert_eq!(message["type"], "data");
    assert_eq!(message["payload"]["data"]["ticks"], 0);
    socket.close(None).await.expect("close");
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn websocket_authentication_uses_connection_init() {
    let app = spawn_app(Setup::default()).await;
    let user = Uuid::now_v7();
    let token = app
        .jwt
        .issue(user, &[Role::Customer])
        .expect("issues")
        .token;

    let mut socket = ws_connect(&app, "graphql-transport-ws").await;
    ws_send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {token}") } })).await;
    assert_eq!(
        ws_next(&mut socket).await.expect("ack")["type"],
        "connection_ack"
    );
    ws_send(
        &mut socket,
        json!({ "id": "a", "type": "subscribe", "payload": { "query": "subscription { me }" } }),
    )
    .await;
    let message = ws_next(&mut socket).await.expect("next");
    assert_eq!(message["payload"]["data"]["me"], user.to_string());
    socket.close(None).await.expect("close");

    // Anonymous: the guarded subscription answers UNAUTHENTICATED.
    let mut socket = ws_connect(&app, "graphql-transport-ws").await;
    ws_send(&mut socket, json!({ "type": "connection_init" })).await;
    assert_eq!(
        ws_next(&mut socket).await.expect("ack")["type"],
        "connection_ack"
    );
    ws_send(
        &mut socket,
        json!({ "id": "b", "type": "subscribe", "payload": { "query": "subscription { me }" } }),
    )
    .await;
    // A field error, so it arrives as a result carrying `errors`.
    let message = ws_next(&mut socket).await.expect("result");
    assert_eq!(message["type"], "next", "{message}");
    assert_eq!(
        message["payload"]["errors"][0]["extensions"]["code"], "UNAUTHENTICATED",
        "{message}"
    );
    socket.close(None).await.expect("close");

    // Forged: the connection is refused with 4403.
    let forger = JwtCodec::new(
        &SecretString::from("not-the-server-secret-0123456789abcdef"),
        "ticketing",
        Duration::from_secs(3600),
    );
    let forged = forger.issue(user, &[Role::Admin]).expect("issues").token;
    let mut socket = ws_connect(&app, "graphql-transport-ws").await;
    ws_send(&mut socket, json!({ "type": "connection_init", "payload": { "Authorization": format!("Bearer {forged}") } })).await;
    let frame = ws_next(&mut socket)
        .await
        .expect_err("closed")
        .expect("close frame");
    assert_eq!(frame.code, CloseCode::from(4403));
    assert!(frame.reason.contains("UNAUTHENTICATED"), "{}", frame.reason);
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn websocket_without_a_graphql_subprotocol_is_refused() {
    let app = spawn_app(Setup::default()).await;
    let mut request = format!("ws://{}/graphql/ws", app.addr)
        .into_client_request()
        .expect("request");
    request
        .headers_mut()
        .insert("sec-websocket-protocol", "mqtt".parse().expect("header"));
    let error = tokio_tungstenite::connect_async(request)
        .await
        .expect_err("refused");
    let tungstenite::Error::Http(response) = error else {
        panic!("{error}")
    };
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    app.stop().await.expect("clean stop");
}

// ---------------------------------------------------------------------------------------
// Graceful shutdown.

#[tokio::test]
async fn shutdown_closes_subscribers_and_finishes_in_flight_requests() {
    let app = spawn_app(Setup::default()).await;
    let mut subscribers = Vec::new();
    for id in 0..20 {
        let mut socket = ws_connect(&app, "graphql-transport-ws").await;
        ws_send(&mut socket, json!({ "type": "connection_init" })).await;
        assert_eq!(
            ws_next(&mut socket).await.expect("ack")["type"],
            "connection_ack"
        );
        ws_send(&mut socket, json!({ "id": id.to_string(), "type": "subscribe", "payload": { "query": "subscription { ticks(everyMs: 20) }" } })).await;
        assert_eq!(ws_next(&mut socket).await.expect("next")["type"], "next");
        subscribers.push(socket);
    }

    // A request that is still running when shutdown starts.
    let slow = {
        let http = app.http.clone();
        let url = app.url("/graphql");
        tokio::spawn(async move {
            let response = http
                .post(url)
                .json(&json!({ "query": "{ slow(millis: 400) }" }))
                .send()
                .await
                .expect("request");
            (
                response.status(),
                response.json::<Value>().await.expect("json"),
            )
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;

    let started = Instant::now();
    let addr = app.addr;
    let stopped = tokio::spawn(app.stop());

    for mut socket in subscribers {
        let frame = loop {
            match ws_next(&mut socket).await {
                Ok(message) => assert_eq!(message["type"], "next", "only data before the close"),
                Err(frame) => break frame,
            }
        };
        let frame = frame.expect("a close frame, not a dropped connection");
        assert_eq!(frame.code, CloseCode::Away);
        assert_eq!(frame.reason.as_str(), "server is shutting down");
    }

    let (status, body) = slow.await.expect("slow request task");
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["data"]["slow"], 400);

    stopped.await.expect("stop task").expect("serve returns Ok");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown waited for the grace period: {:?}",
        started.elapsed()
    );
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "the listener is closed"
    );
}

#[tokio::test]
async fn a_websocket_is_closed_when_its_token_expires() {
    let app = spawn_app(Setup::default()).await;
    // Issued almost an hour ago with a one-hour lifetime: about a second left.
    let token = app
        .jwt
        .issue_at(
            Uuid::now_v7(),
            &[Role::Customer],
            0,
            chrono::Utc::now() - chrono::Duration::seconds(3599),
        )
        .expect("issues")
        .token;
    let mut socket = ws_connect(&app, "graphql-transport-ws").await;
    ws_send(&mut socket, json!({ "type": "connection_init", "payload": { "authorization": format!("Bearer {token}") } })).await;
    assert_eq!(
        ws_next(&mut socket).await.expect("ack")["type"],
        "connection_ack"
    );
    ws_send(&mut socket, json!({ "id": "1", "type": "subscribe", "payload": { "query": "subscription { ticks(everyMs: 50) }" } })).await;
    let started = Instant::now();
    let frame = loop {
        match ws_next(&mut socket).await {
            Ok(message) => assert_eq!(message["type"], "next"),
            Err(frame) => break frame.expect("a close frame"),
        }
    };
    assert_eq!(frame.code, CloseCode::from(4401));
    assert!(frame.reason.contains("expired"), "{}", frame.reason);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn shutdown_is_bounded_by_the_grace_period() {
    let mut setup = Setup::default();
    setup.options.shutdown_grace = Duration::from_millis(500);
    let app = spawn_app(setup).await;
    let stuck = {
        let http = app.http.clone();
        let url = app.url("/graphql");
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({ "query": "{ slow(millis: 60000) }" }))
                .send()
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    app.stop().await.expect("serve returns Ok");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(450),
        "waited for the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(3), "but not longer: {took:?}");
    stuck.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_logins_never_exceed_the_allowance() {
    let app = spawn_app(Setup::default()).await;
    let attempts: Vec<_> = (0..40)
        .map(|_| {
            let http = app.http.clone();
            let url = app.url("/graphql");
            tokio::spawn(async move {
                let response = http
                    .post(url)
                    .json(&json!({ "query": "mutation { login }" }))
                    .send()
                    .await
                    .expect("request");
                response.json::<Value>().await.expect("json")
            })
        })
        .collect();
    let mut allowed = 0;
    let mut limited = 0;
    for attempt in attempts {
        let body = attempt.await.expect("task");
        if body["data"]["login"] == true {
            allowed += 1;
        } else {
            assert_eq!(error_code(&body), "RATE_LIMITED", "{body}");
            limited += 1;
        }
    }
    assert_eq!((allowed, limited), (3, 37));
    app.stop().await.expect("clean stop");
}

#[tokio::test]
async fn one_websocket_cannot_run_unboundedly_many_operations() {
    let app = spawn_app(Setup::default()).await;
    let mut socket = ws_connect(&app, "graphql-transport-ws").await;
    ws_send(&mut socket, json!({ "type": "connection_init" })).await;
    assert_eq!(
        ws_next(&mut socket).await.expect("ack")["type"],
        "connection_ack"
    );
    let subscribe = |id: String| json!({ "id": id, "type": "subscribe", "payload": { "query": "subscription { ticks(everyMs: 60000) }" } });
    let max = api::http::MAX_OPERATIONS_PER_CONNECTION;
    for id in 0..max - 1 {
        ws_send(&mut socket, subscribe(id.to_string())).await;
    }
    // A query over the socket completes by itself and frees its slot again.
    ws_send(&mut socket, json!({ "id": "q", "type": "subscribe", "payload": { "query": "{ echo(message: \"x\") }" } })).await;
    assert_eq!(ws_next(&mut socket).await.expect("result")["id"], "q");
    assert_eq!(
        ws_next(&mut socket).await.expect("complete"),
        json!({ "type": "complete", "id": "q" })
    );
    // So the last slot is still free.
    ws_send(&mut socket, json!({ "id": "last", "type": "subscribe", "payload": { "query": "subscription { ticks(everyMs: 10) }" } })).await;
    let message = ws_next(&mut socket).await.expect("next");
    assert_eq!(
        (message["type"].as_str(), message["id"].as_str()),
        (Some("next"), Some("last"))
    );
    // One more is refused.
    ws_send(&mut socket, subscribe("extra".into())).await;
    let frame = loop {
        match ws_next(&mut socket).await {
            Ok(message) => assert_eq!(message["id"], "last", "only the last subscription ticks"),
            Err(frame) => break frame.expect("a close frame"),
        }
    };
    assert_eq!(frame.code, CloseCode::from(4429));
    assert!(
        frame.reason.contains("too many operations"),
        "{}",
        frame.reason
    );
    app.stop().await.expect("clean stop");
}
