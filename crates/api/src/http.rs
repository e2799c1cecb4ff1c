//! The HTTP server around a GraphQL schema.
//!
//! Routes:
//!
//! | route | what |
//! |---|---|
//! | `POST /graphql` | GraphQL queries and mutations (`application/json`, one operation per request) |
//! | `GET /graphql` | the GraphiQL page |
//! | `GET /graphql/ws` | subscriptions over WebSocket: `graphql-transport-ws`, and the legacy `graphql-ws` |
//! | `GET /healthz` | liveness: the process serves HTTP |
//! | `GET /readyz` | readiness: 200 once the caller marks the service ready ([`Readiness`]) |
//! | `GET /metrics` | Prometheus metrics of the whole process |
//! | `POST /webhooks/payments` | the payment provider's webhook, when the caller supplies a handler |
//! | `GET /tickets/{id}.pdf` | a printable ticket, when the caller adds [`crate::printable::router`] |
//!
//! Around every route: a request id (`x-request-id`, taken from the client when well formed,
//! otherwise generated, and echoed in the response), a tracing span carrying it, request
//! count and latency metrics, CORS from the configuration, the body size limit (413), and
//! a panic guard that answers `INTERNAL` instead of dropping the connection.
//!
//! Every route but `/graphql/ws` also has a time limit ([`HttpOptions::request_timeout`]),
//! body upload included: past it the client gets a GraphQL-shaped `TIMEOUT` error with
//! status 503, and the connection is free again. A GraphQL operation runs on its own task,
//! so the answer is given up, not the work: a mutation that was under way completes (it
//! never stops between charging a card and issuing the tickets), and a retry with the
//! same idempotency key gets its outcome. A client that disconnects is treated the same.
//! The WebSocket route is long-lived by design and has no such limit. Instead, at most
//! [`HttpOptions::max_websocket_connections`] WebSockets are served at once: beyond it an
//! upgrade is refused with 503 and `TOO_MANY_CONNECTIONS`, and a slot frees when a
//! connection ends, however it ends.
//!
//! Each GraphQL request, and each WebSocket connection, is authenticated once before the
//! schema runs; a request with an invalid token is refused with 401 and `UNAUTHENTICATED`,
//! an anonymous one runs with no user. A WebSocket whose token expires is closed with
//! `4401`, so a subscription never outlives the credentials that opened it. The schema sees a [`RequestContext`] and the shared
//! `Arc<RateLimits>` in its data.
//!
//! [`HttpService::serve`] takes the listener and a shutdown future from the caller. On
//! shutdown it stops accepting connections, lets in-flight requests finish, closes every
//! WebSocket with `1001 Going Away` (so clients reconnect elsewhere), and waits for all of
//! that up to the configured grace period.

use std::{
    collections::HashMap,
    convert::Infallible,
    future::{Future, IntoFuture},
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::{
        Arc, OnceLock,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use async_graphql::{Data, Executor, http::GraphiQLSource, parser::types::ExecutableDocument};
use async_graphql_axum::{GraphQLProtocol, GraphQLResponse, GraphQLWebSocket};
use axum::{
    Router,
    body::{Body, Bytes},
    extract::{
        ConnectInfo, DefaultBodyLimit, FromRequestParts, MatchedPath, State, WebSocketUpgrade,
        rejection::BytesRejection,
        ws::{CloseFrame, Message, WebSocket},
    },
    handler::Handler,
    http::{
        HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, header, request::Parts,
    },
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use chrono::{DateTime, Utc};
use futures::{SinkExt as _, StreamExt as _, future};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use sha2::{Digest as _, Sha256};
use tokio::{
    net::TcpListener,
    sync::{Semaphore, mpsc, oneshot, watch},
};
use tower::ServiceBuilder;
use tower_http::{
    catch_panic::CatchPanicLayer,
    cors::{AllowOrigin, CorsLayer},
    request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer},
    trace::TraceLayer,
};
use tracing::Instrument as _;

use crate::{
    auth::JwtCodec,
    config::ServiceConfig,
    context::RequestContext,
    error::{ApiError, with_correlation_id},
    rate_limit::RateLimits,
};

/// Bytes a WebSocket reads from its socket at a time.
const WEBSOCKET_READ_BUFFER: usize = 4096;

/// The request id header, read from clients and echoed in responses.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Close code sent to WebSocket subscribers when the server shuts down.
pub const CLOSE_GOING_AWAY: u16 = 1001;

/// Close code sent when `connection_init` carries invalid credentials, as
/// `graphql-transport-ws` recommends (`4403: Forbidden`).
pub const CLOSE_FORBIDDEN: u16 = 4403;

/// Close code sent when the token that authenticated a WebSocket expires
/// (`graphql-transport-ws`'s `4401: Unauthorized`); the client reconnects with a fresh one.
pub const CLOSE_UNAUTHORIZED: u16 = 4401;

/// Close code sent when a client starts more than [`MAX_OPERATIONS_PER_CONNECTION`]
/// operations on one WebSocket.
pub const CLOSE_TOO_MANY_OPERATIONS: u16 = 4429;

/// Close code sent when no `connection_init` arrives within the initialisation timeout
/// (`graphql-transport-ws`'s `4408: Connection initialisation timeout`).
pub const CLOSE_INIT_TIMEOUT: u16 = 4408;

/// Close code sent to a connection with no operation and no message for the idle timeout
/// (a normal closure: a client reconnects when it needs a subscription again).
pub const CLOSE_IDLE: u16 = 1000;

/// Most operations (subscriptions, or queries sent over the socket) one WebSocket may
/// have running at once. Each costs a live stream on the server; without a cap one
/// connection could open unboundedly many.
pub const MAX_OPERATIONS_PER_CONNECTION: usize = 100;

/// Why a WebSocket session was ended by the server.
#[derive(Debug, Clone, Copy)]
enum StopReason {
    Shutdown,
    Expired,
    TooManyOperations,
    InitTimeout,
    Idle,
}

/// The ids of the operations running on one WebSocket, seen from both directions: a
/// client `subscribe`/`start` adds one; a client `complete`/`stop` or a server
/// `complete`/`error` ends it.
#[derive(Debug, Default)]
struct ActiveOperations(std::sync::Mutex<std::collections::HashSet<String>>);

/// The part of a protocol message that names the operation.
#[derive(serde::Deserialize)]
struct Envelope {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
}

impl ActiveOperations {
    /// Whether no operation is running.
    fn is_empty(&self) -> bool {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_empty()
    }

    /// Records a client message; `false` when it would start one operation too many.
    fn track_client_message(&self, message: &Result<Message, axum::Error>) -> bool {
        let bytes = match message {
            Ok(Message::Text(text)) => text.as_bytes(),
            Ok(Message::Binary(bytes)) => bytes.as_ref(),
            _ => return true,
        };
        // Malformed messages are left to the protocol handler, which refuses them.
        let Ok(Envelope { kind, id: Some(id) }) = serde_json::from_slice::<Envelope>(bytes) else {
            return true;
        };
        let mut active = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match kind.as_str() {
            "subscribe" | "start" if !active.contains(&id) => {
                if active.len() >= MAX_OPERATIONS_PER_CONNECTION {
                    return false;
                }
                active.insert(id);
            }
            "complete" | "stop" => {
                active.remove(&id);
            }
            _ => {}
        }
        true
    }

    /// Records a server message that ends an operation. Data messages are recognised by
    /// their prefix and not parsed (the server writes `type` first).
    fn track_server_message(&self, text: &str) {
        if !(text.starts_with(r#"{"type":"complete""#) || text.starts_with(r#"{"type":"error""#)) {
            return;
        }
        if let Ok(Envelope { id: Some(id), .. }) = serde_json::from_str::<Envelope>(text) {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .remove(&id);
        }
    }
}

/// HTTP settings taken from [`ServiceConfig`].
#[derive(Debug, Clone)]
pub struct HttpOptions {
    /// Origins allowed by CORS; `*` alone allows any; empty allows none.
    pub cors_origins: Vec<String>,
    /// Largest request body (and WebSocket message) accepted, in bytes.
    pub body_limit: usize,
    /// Whether the last `X-Forwarded-For` entry is the client address.
    pub trust_forwarded_for: bool,
    /// How long shutdown waits for requests and subscribers.
    pub shutdown_grace: Duration,
    /// Longest time a request (other than a WebSocket subscription) may take.
    pub request_timeout: Duration,
    /// Most WebSocket connections served at once.
    pub max_websocket_connections: usize,
    /// Most WebSocket connections one client address may have open at once.
    pub max_websocket_connections_per_address: usize,
    /// How long a WebSocket may stay open without `connection_init`.
    pub websocket_init_timeout: Duration,
    /// How long a WebSocket may stay open with no operation and no client message.
    pub websocket_idle_timeout: Duration,
}

impl HttpOptions {
    /// The HTTP settings of the service configuration.
    pub fn from_config(config: &ServiceConfig) -> Self {
        Self {
            cors_origins: config.cors_origins.clone(),
            body_limit: config.body_limit,
            trust_forwarded_for: config.trust_forwarded_for,
            shutdown_grace: config.shutdown_grace,
            request_timeout: config.request_timeout,
            max_websocket_connections: config.max_websocket_connections,
            max_websocket_connections_per_address: config.max_websocket_connections_per_address,
            websocket_init_timeout: config.websocket_init_timeout,
            websocket_idle_timeout: config.websocket_idle_timeout,
        }
    }
}

impl Default for HttpOptions {
    fn default() -> Self {
        Self::from_config(&ServiceConfig::default())
    }
}

/// Whether the service is ready for traffic, as `/readyz` reports it. Starts not ready;
/// the caller marks it ready (for example once projections have caught up).
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the service ready (or not ready again).
    pub fn set_ready(&self, ready: bool) {
        self.0.store(ready, Ordering::Release);
    }

    /// Whether the service is ready.
    pub fn is_ready(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Why the HTTP service could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// A CORS origin is not a valid header value.
    #[error("invalid CORS origin {0:?}")]
    InvalidCorsOrigin(String),
    /// The Prometheus recorder could not be installed.
    #[error("cannot install the Prometheus metrics recorder: {0}")]
    Metrics(String),
}

/// Installs the process-wide Prometheus recorder once and returns its handle; every later
/// call returns the same handle. Metrics recorded anywhere in the process with the
/// `metrics` macros appear at `/metrics`.
pub fn prometheus_handle() -> Result<PrometheusHandle, HttpError> {
    static HANDLE: OnceLock<Result<PrometheusHandle, String>> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            PrometheusBuilder::new()
                .set_buckets_for_metric(
                    Matcher::Full("http_request_duration_seconds".to_owned()),
                    &[
                        0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                        10.0,
                    ],
                )
                .map_err(|error| error.to_string())?
                .install_recorder()
                .map_err(|error| error.to_string())
        })
        .clone()
        .map_err(HttpError::Metrics)
}

/// Builds an [`HttpService`]: the schema, the auth and rate-limit services, options, and
/// optional extra routes.
pub struct HttpServiceBuilder<E> {
    /// The GraphQL schema (any async-graphql executor).
    executor: E,
    /// Verifies bearer tokens.
    jwt: Arc<JwtCodec>,
    /// Shared with resolvers through the request data.
    rate_limits: Arc<RateLimits>,
    /// Limits, CORS, shutdown grace.
    options: HttpOptions,
    /// The payment webhook route, when the payments integration supplies one.
    payment_webhook: Option<Router>,
    /// Further routes of the application (printable tickets), behind the same layers.
    routes: Vec<Router>,
    /// Shared with whoever decides when the service is ready.
    readiness: Readiness,
}

impl<E: Executor> HttpServiceBuilder<E> {
    /// Serves `handler` at `POST /webhooks/payments`. It receives the raw request (body
    /// limit applied), so it can verify the provider's signature over the exact bytes.
    #[must_use]
    pub fn payment_webhook<H, T>(mut self, handler: H) -> Self
    where
        H: Handler<T, ()>,
        T: 'static,
    {
        self.payment_webhook = Some(Router::new().route("/webhooks/payments", post(handler)));
        self
    }

    /// Serves `routes` beside the GraphQL routes, behind the same middleware (request id,
    /// tracing, metrics, panic guard, CORS, body limit). They authenticate on their own.
    #[must_use]
    pub fn routes(mut self, routes: Router) -> Self {
        self.routes.push(routes);
        self
    }

    /// Uses `readiness` (instead of a fresh handle) for `/readyz`.
    #[must_use]
    pub fn readiness(mut self, readiness: Readiness) -> Self {
        self.readiness = readiness;
        self
    }

    /// Builds the service.
    pub fn build(self) -> Result<HttpService, HttpError> {
        let metrics = prometheus_handle()?;
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (sessions_tx, sessions_rx) = mpsc::channel(1);
        let state = Shared(Arc::new(Inner {
            executor: self.executor,
            jwt: self.jwt,
            rate_limits: Arc::clone(&self.rate_limits),
            body_limit: self.options.body_limit,
            trust_forwarded_for: self.options.trust_forwarded_for,
            readiness: self.readiness.clone(),
            metrics: metrics.clone(),
            shutdown: shutdown_rx,
            sessions: sessions_tx,
            websocket_slots: Arc::new(Semaphore::new(
                self.options
                    .max_websocket_connections
                    .min(Semaphore::MAX_PERMITS),
            )),
            max_websocket_connections: self.options.max_websocket_connections,
            documents: DocumentCache::default(),
            websockets_per_address: Arc::new(AddressSlots::new(
                self.options.max_websocket_connections_per_address,
            )),
            websocket_init_timeout: self.options.websocket_init_timeout,
            websocket_idle_timeout: self.options.websocket_idle_timeout,
        }));

        let mut timed = Router::new()
            .route("/graphql", get(graphiql).post(graphql_post::<E>))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz::<E>))
            .route("/metrics", get(metrics_page::<E>))
            .with_state(state.clone());
        if let Some(webhook) = self.payment_webhook {
            timed = timed.merge(webhook);
        }
        for routes in self.routes {
            timed = timed.merge(routes);
        }
        // Only the routes above are limited: `layer` wraps the routes a router has so far.
        let timed = timed.layer(middleware::from_fn_with_state(
            self.options.request_timeout,
            limit_duration,
        ));
        let router = Router::new()
            .route("/graphql/ws", get(graphql_ws::<E>))
            .with_state(state)
            .merge(timed);

        let cors = cors_layer(&self.options.cors_origins)?;
        let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
        let layers = ServiceBuilder::new()
            .layer(middleware::from_fn(drop_malformed_request_id))
            .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
            .layer(TraceLayer::new_for_http().make_span_with(request_span))
            .layer(PropagateRequestIdLayer::new(request_id))
            // Metrics outside the panic guard, so a panicked request is counted as its 500.
            .layer(middleware::from_fn(record_metrics))
            .layer(CatchPanicLayer::custom(panic_response))
            .option_layer(cors)
            .layer(DefaultBodyLimit::max(self.options.body_limit));
        let router = router.layer(layers);

        Ok(HttpService {
            router,
            readiness: self.readiness,
            rate_limits: self.rate_limits,
            metrics,
            shutdown: shutdown_tx,
            sessions: sessions_rx,
            grace: self.options.shutdown_grace,
        })
    }
}

/// The HTTP/GraphQL service, ready to serve on a listener.
pub struct HttpService {
    /// All routes and middleware.
    router: Router,
    /// Reported by `/readyz`; shared with the caller.
    readiness: Readiness,
    /// Pruned periodically while serving.
    rate_limits: Arc<RateLimits>,
    /// Needs periodic upkeep while serving.
    metrics: PrometheusHandle,
    /// Tells WebSocket sessions to close when shutdown starts.
    shutdown: watch::Sender<bool>,
    /// Ends (every sender dropped) once every WebSocket session has finished.
    sessions: mpsc::Receiver<()>,
    /// How long shutdown waits for requests and then for subscribers.
    grace: Duration,
}

impl std::fmt::Debug for HttpService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpService")
            .field("ready", &self.readiness.is_ready())
            .field("grace", &self.grace)
            .finish_non_exhaustive()
    }
}

impl HttpService {
    /// Starts building a service for `executor` (an async-graphql `Schema`, built through
    /// [`crate::graphql::configure_schema`]).
    pub fn builder<E: Executor>(
        executor: E,
        jwt: Arc<JwtCodec>,
        rate_limits: Arc<RateLimits>,
        options: HttpOptions,
    ) -> HttpServiceBuilder<E> {
        HttpServiceBuilder {
            executor,
            jwt,
            rate_limits,
            options,
            payment_webhook: None,
            routes: Vec::new(),
            readiness: Readiness::default(),
        }
    }

    /// The readiness handle `/readyz` reports.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    /// Serves on `listener` until `shutdown` completes, then shuts down gracefully (see
    /// the module docs). Returns once every connection is closed or the grace period is
    /// over.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let Self {
            router,
            rate_limits,
            metrics,
            shutdown: shutdown_tx,
            mut sessions,
            grace,
            ..
        } = self;
        let local_addr = listener.local_addr()?;
        tracing::info!(%local_addr, "serving HTTP");

        let housekeeping = tokio::spawn(housekeeping(rate_limits, metrics));
        let mut shutdown_started = shutdown_tx.subscribe();
        let server = axum::serve(
            listener,
            router.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(async move {
            shutdown.await;
            tracing::info!("shutdown requested: draining requests and closing subscriptions");
            shutdown_tx.send_replace(true);
        })
        .into_future();
        let mut server = Box::pin(server);

        // One deadline for the whole shutdown: requests and subscribers drain in parallel
        // (sessions were told to close when the signal fired), so neither wait adds to the
        // other.
        let (result, deadline) = tokio::select! {
            result = &mut server => (result, tokio::time::Instant::now() + grace),
            () = async { let _ = shutdown_started.wait_for(|started| *started).await; } => {
                let deadline = tokio::time::Instant::now() + grace;
                match tokio::time::timeout_at(deadline, &mut server).await {
                    Ok(result) => (result, deadline),
                    Err(_) => {
                        tracing::warn!(?grace, "requests still in flight after the grace period; dropping them");
                        (Ok(()), deadline)
                    }
                }
            }
        };
        // Dropping the server drops the router, and with it the session sender in its
        // state; what remains are the senders held by live WebSocket sessions.
        drop(server);
        match tokio::time::timeout_at(deadline, sessions.recv()).await {
            Ok(_) => tracing::info!("all subscriptions closed"),
            Err(_) => tracing::warn!(?grace, "subscriptions still open after the grace period"),
        }
        housekeeping.abort();
        result
    }
}

/// Periodic upkeep while serving: metric histograms are drained and idle rate-limit keys
/// forgotten, so neither grows without bound.
async fn housekeeping(rate_limits: Arc<RateLimits>, metrics: PrometheusHandle) {
    let mut interval = tokio::time::interval(Duration::from_secs(10));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut ticks: u64 = 0;
    loop {
        interval.tick().await;
        metrics.run_upkeep();
        ticks += 1;
        if ticks % 6 == 0 {
            rate_limits.prune();
            metrics::gauge!("api_rate_limit_tracked_clients")
                .set(rate_limits.tracked_clients() as f64);
        }
    }
}

/// State shared by the handlers; cloning is a reference count.
struct Shared<E>(Arc<Inner<E>>);

impl<E> Clone for Shared<E> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

struct Inner<E> {
    /// Runs GraphQL requests and subscriptions.
    executor: E,
    /// Authenticates each request and connection.
    jwt: Arc<JwtCodec>,
    /// Handed to resolvers in the request data.
    rate_limits: Arc<RateLimits>,
    /// Also caps WebSocket messages.
    body_limit: usize,
    /// Whether `X-Forwarded-For` names the client.
    trust_forwarded_for: bool,
    /// Reported by `/readyz`.
    readiness: Readiness,
    /// Rendered by `/metrics`.
    metrics: PrometheusHandle,
    /// Flips to `true` when shutdown starts; WebSocket sessions watch it.
    shutdown: watch::Receiver<bool>,
    /// Cloned into each WebSocket session and dropped when it ends, so `serve` can wait
    /// for all of them.
    sessions: mpsc::Sender<()>,
    /// One permit per WebSocket connection that may be served; a session holds its permit
    /// until it ends, so a flood of connections cannot exhaust the server.
    websocket_slots: Arc<Semaphore>,
    /// The number of permits, for the refusal's message.
    max_websocket_connections: usize,
    /// Parsed query documents, by query text.
    documents: DocumentCache,
    /// Open WebSockets per client address, capped.
    websockets_per_address: Arc<AddressSlots>,
    /// How long a WebSocket may wait before `connection_init`.
    websocket_init_timeout: Duration,
    /// How long a WebSocket may sit without operations and messages.
    websocket_idle_timeout: Duration,
}

/// Query documents already parsed, by their text and by the SHA-256 of their text (the
/// key of Apollo's automatic persisted queries): clients send the same few queries over
/// and over, and parsing one costs as much as executing a small one. A document that does
/// not parse is not kept (the schema reports its error as usual). Bounded: when full a map
/// starts afresh, so a flood of distinct queries costs parsing, never memory; a client
/// whose persisted query was forgotten is told so and sends its text again.
#[derive(Default)]
struct DocumentCache {
    by_text: parking_lot::Mutex<HashMap<Arc<str>, ExecutableDocument>>,
    by_hash: parking_lot::Mutex<HashMap<[u8; 32], ExecutableDocument>>,
}

/// Most documents kept in each map.
const MAX_CACHED_DOCUMENTS: usize = 1024;

/// Longest query text kept (longer ones are parsed each time).
const MAX_CACHED_QUERY_LEN: usize = 16 * 1024;

impl DocumentCache {
    /// Gives `request` its parsed document when the cache has it, and answers the
    /// `persistedQuery` extension: a known hash without a query runs the query of that
    /// hash, an unknown one is `PERSISTED_QUERY_NOT_FOUND` (Apollo Client then sends the
    /// text with its hash, which registers it), and a hash that is not the text's is refused.
    fn prepare(&self, request: &mut async_graphql::Request) -> Result<(), ApiError> {
        let Some(persisted) = request.extensions.0.remove("persistedQuery") else {
            if let Some(document) = self.parsed(&request.query) {
                request.set_parsed_query(document);
            }
            return Ok(());
        };
        let hash = persisted_query_hash(&persisted)?;
        if request.query.is_empty() {
            let document = self.by_hash.lock().get(&hash).cloned();
            metrics::counter!(
                "api_persisted_queries_total",
                "cache" => if document.is_some() { "hit" } else { "miss" }
            )
            .increment(1);
            let document = document.ok_or(ApiError::PersistedQueryNotFound)?;
            request.set_parsed_query(document);
            return Ok(());
        }
        if <[u8; 32]>::from(Sha256::digest(request.query.as_bytes())) != hash {
            return Err(ApiError::invalid_field(
                "extensions.persistedQuery.sha256Hash",
                "the hash is not the SHA-256 of the query sent with it",
            ));
        }
        if let Some(document) = self.parsed(&request.query) {
            let mut by_hash = self.by_hash.lock();
            if by_hash.len() >= MAX_CACHED_DOCUMENTS {
                by_hash.clear();
            }
            by_hash.insert(hash, document.clone());
            drop(by_hash);
            request.set_parsed_query(document);
        }
        Ok(())
    }

    /// The parsed document of `query`, parsing it on a miss; `None` when it does not parse.
    fn parsed(&self, query: &str) -> Option<ExecutableDocument> {
        if let Some(document) = self.by_text.lock().get(query) {
            metrics::counter!("api_query_documents_total", "cache" => "hit").increment(1);
            return Some(document.clone());
        }
        metrics::counter!("api_query_documents_total", "cache" => "miss").increment(1);
        let document = async_graphql::parser::parse_query(query).ok()?;
        if query.len() <= MAX_CACHED_QUERY_LEN {
            let mut documents = self.by_text.lock();
            if documents.len() >= MAX_CACHED_DOCUMENTS {
                documents.clear();
            }
            documents.insert(query.into(), document.clone());
        }
        Some(document)
    }
}

/// The SHA-256 named by a `persistedQuery` extension (`{"version": 1, "sha256Hash": hex}`).
fn persisted_query_hash(extension: &async_graphql::Value) -> Result<[u8; 32], ApiError> {
    let invalid =
        |message: &str| ApiError::invalid_field("extensions.persistedQuery", message.to_owned());
    let async_graphql::Value::Object(fields) = extension else {
        return Err(invalid("give an object with version and sha256Hash"));
    };
    match fields.get("version") {
        Some(async_graphql::Value::Number(n)) if n.as_i64() == Some(1) => {}
        _ => return Err(invalid("only version 1 of persisted queries is supported")),
    }
    let Some(async_graphql::Value::String(hex_hash)) = fields.get("sha256Hash") else {
        return Err(invalid("sha256Hash must be a string"));
    };
    let mut hash = [0u8; 32];
    hex::decode_to_slice(hex_hash, &mut hash)
        .map_err(|_| invalid("sha256Hash must be 64 hexadecimal digits"))?;
    Ok(hash)
}

/// Open connections per client address, at most `max` each.
struct AddressSlots {
    max: usize,
    open: std::sync::Mutex<std::collections::HashMap<crate::context::ClientKey, usize>>,
}

/// One open connection of an address; freed when dropped.
struct AddressSlot {
    slots: Arc<AddressSlots>,
    key: crate::context::ClientKey,
}

impl AddressSlots {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: std::sync::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// A slot for one more connection from `address`, unless it has `max` already.
    fn take(self: &Arc<Self>, address: IpAddr) -> Option<AddressSlot> {
        let key = crate::context::ClientKey::ip(address);
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let count = open.entry(key).or_insert(0);
        if *count >= self.max {
            return None;
        }
        *count += 1;
        Some(AddressSlot {
            slots: Arc::clone(self),
            key,
        })
    }
}

impl Drop for AddressSlot {
    fn drop(&mut self) {
        let mut open = self
            .slots
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(count) = open.get_mut(&self.key) {
            *count -= 1;
            if *count == 0 {
                open.remove(&self.key);
            }
        }
    }
}

/// The schema as WebSocket operations reach it: each operation (a query, a mutation or
/// a subscription sent over the socket) runs with its caller's roles and session as they
/// are when it starts, not as they were when the socket opened, exactly like an HTTP
/// request. An operation of a session that has ended is refused as `UNAUTHENTICATED`.
#[derive(Clone)]
struct PerOperationAuth<E> {
    executor: E,
    jwt: Arc<JwtCodec>,
}

impl<E: Executor> Executor for PerOperationAuth<E> {
    fn execute(
        &self,
        request: async_graphql::Request,
    ) -> impl Future<Output = async_graphql::Response> + Send {
        self.executor.execute(request)
    }

    fn execute_stream(
        &self,
        request: async_graphql::Request,
        session_data: Option<Arc<Data>>,
    ) -> futures::stream::BoxStream<'static, async_graphql::Response> {
        let connection = session_data
            .as_ref()
            .and_then(|data| data.get(&std::any::TypeId::of::<RequestContext>()))
            .and_then(|context| context.downcast_ref::<RequestContext>())
            .cloned();
        let request = match connection {
            Some(mut context) => {
                if let Some(user) = &context.user {
                    match self.jwt.refresh(user) {
                        Ok(user) => context.user = Some(user),
                        Err(error) => {
                            let response = ApiError::Unauthenticated(error).to_graphql_response();
                            return Box::pin(futures::stream::once(async move { response }));
                        }
                    }
                }
                request.data(context)
            }
            None => request,
        };
        self.executor.execute_stream(request, session_data)
    }
}

/// Who is calling: the request id and the client address.
struct Caller {
    request_id: Arc<str>,
    client_ip: IpAddr,
}

impl<E: Send + Sync> FromRequestParts<Shared<E>> for Caller {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Shared<E>,
    ) -> Result<Self, Self::Rejection> {
        let request_id: Arc<str> = parts
            .headers
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .into();
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |info| info.0.ip());
        let client_ip = if state.0.trust_forwarded_for {
            forwarded_client(&parts.headers).unwrap_or(peer)
        } else {
            peer
        };
        Ok(Self {
            request_id,
            client_ip,
        })
    }
}

/// The address the nearest proxy saw: the last `X-Forwarded-For` entry (earlier entries
/// are whatever the client claimed).
fn forwarded_client(headers: &HeaderMap) -> Option<IpAddr> {
    headers
        .get_all("x-forwarded-for")
        .iter()
        .next_back()?
        .to_str()
        .ok()?
        .rsplit(',')
        .next()?
        .trim()
        .parse()
        .ok()
}

async fn graphiql() -> Html<String> {
    Html(
        GraphiQLSource::build()
            .endpoint("/graphql")
            .subscription_endpoint("/graphql/ws")
            .finish(),
    )
}

async fn graphql_post<E: Executor>(
    State(state): State<Shared<E>>,
    caller: Caller,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let state = &state.0;
    let user = match state.jwt.authenticate_headers(&headers) {
        Ok(user) => user,
        Err(error) => return ApiError::Unauthenticated(error).into_response(),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return ApiError::PayloadTooLarge {
                limit: state.body_limit,
            }
            .into_response();
        }
        Err(rejection) => {
            return ApiError::invalid_input(format!(
                "could not read the request body: {rejection}"
            ))
            .into_response();
        }
    };
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.split(';').next())
        .is_some_and(|mime| mime.trim().eq_ignore_ascii_case("application/json"));
    if !is_json {
        let mut response = ApiError::invalid_input(
            "send the GraphQL request as JSON with `Content-Type: application/json`",
        )
        .into_response();
        *response.status_mut() = StatusCode::UNSUPPORTED_MEDIA_TYPE;
        return response;
    }
    if body.iter().find(|byte| !byte.is_ascii_whitespace()) == Some(&b'[') {
        return ApiError::invalid_input(
            "batched requests are not supported: send one operation per request",
        )
        .into_response();
    }
    let mut request: async_graphql::Request = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(error) => {
            return ApiError::invalid_input(format!("the body is not a GraphQL request: {error}"))
                .into_response();
        }
    };
    if let Err(error) = state.documents.prepare(&mut request) {
        return error.into_response();
    }
    let context = RequestContext {
        request_id: Arc::clone(&caller.request_id),
        client_ip: caller.client_ip,
        user,
    };
    // Until the document is parsed, the request counts as one that may mutate.
    let mutation = crate::graphql::MutationFlag(Arc::new(AtomicBool::new(true)));
    let request = request
        .data(context)
        .data(Arc::clone(&state.rate_limits))
        .data(mutation.clone());
    // On its own task, so that the request's time limit (or the client leaving) gives up
    // the answer but never stops a command half-way (see the module docs); a query
    // nobody waits for any more is stopped.
    let executor = state.executor.clone();
    let execution = tokio::spawn(
        with_correlation_id(
            caller.request_id,
            async move { executor.execute(request).await },
        )
        .in_current_span(),
    );
    let _abandon = AbandonQuery {
        task: execution.abort_handle(),
        mutation,
    };
    match execution.await {
        Ok(response) => GraphQLResponse::from(response).into_response(),
        // Re-raised here, where the panic guard answers it as it answers any other.
        Err(error) if error.is_panic() => std::panic::resume_unwind(error.into_panic()),
        Err(error) => {
            ApiError::internal(anyhow::anyhow!("GraphQL execution task: {error}")).into_response()
        }
    }
}

/// Stops a query's task when its request is given up (the time limit, or the client
/// leaving) before the task finished; a request that may mutate is left to finish.
struct AbandonQuery {
    task: tokio::task::AbortHandle,
    mutation: crate::graphql::MutationFlag,
}

impl Drop for AbandonQuery {
    fn drop(&mut self) {
        if !self.task.is_finished() && !self.mutation.may_mutate() {
            metrics::counter!("api_queries_abandoned_total").increment(1);
            self.task.abort();
        }
    }
}

async fn graphql_ws<E: Executor>(
    State(state): State<Shared<E>>,
    caller: Caller,
    headers: HeaderMap,
    protocol: Result<GraphQLProtocol, StatusCode>,
    upgrade: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let upgrade = match upgrade {
        Ok(upgrade) => upgrade,
        Err(rejection) => return rejection.into_response(),
    };
    let Ok(protocol) = protocol else {
        return ApiError::invalid_input(
            "unsupported WebSocket subprotocol: use graphql-transport-ws (or the legacy graphql-ws)",
        )
        .into_response();
    };
    if *state.0.shutdown.borrow() {
        return ApiError::Unavailable("the server is shutting down".into()).into_response();
    }
    // Taken before the upgrade and released when the session ends; if the upgrade never
    // completes, the callback holding it is dropped and the slot frees at once.
    let Ok(slot) = Arc::clone(&state.0.websocket_slots).try_acquire_owned() else {
        metrics::counter!("api_websocket_refused_total").increment(1);
        tracing::warn!(
            limit = state.0.max_websocket_connections,
            "WebSocket upgrade refused: too many connections"
        );
        return ApiError::TooManyConnections {
            limit: state.0.max_websocket_connections,
        }
        .into_response();
    };
    let Some(address_slot) = state.0.websockets_per_address.take(caller.client_ip) else {
        metrics::counter!("api_websocket_refused_total", "reason" => "address").increment(1);
        tracing::warn!(
            client_ip = %caller.client_ip,
            limit = state.0.websockets_per_address.max,
            "WebSocket upgrade refused: too many connections from one address"
        );
        return ApiError::TooManyConnections {
            limit: state.0.websockets_per_address.max,
        }
        .into_response();
    };
    // Clients that can set headers may authenticate the upgrade itself; others send the
    // token in `connection_init`, which takes precedence.
    let header_user = match state.0.jwt.authenticate_headers(&headers) {
        Ok(user) => user,
        Err(error) => return ApiError::Unauthenticated(error).into_response(),
    };
    let context = RequestContext {
        request_id: Arc::clone(&caller.request_id),
        client_ip: caller.client_ip,
        user: header_user,
    };
    let span = tracing::info_span!("websocket", request_id = %caller.request_id, client_ip = %caller.client_ip);
    let session_guard = state.0.sessions.clone();
    upgrade
        .protocols(async_graphql::http::ALL_WEBSOCKET_PROTOCOLS)
        .max_message_size(state.0.body_limit)
        .max_frame_size(state.0.body_limit)
        // A client sends a few small messages (init, subscribe, pings), while every
        // update sent wakes the socket's reader, which zero-fills its whole read buffer
        // before each read: with the 128 KiB default that was a quarter of the server's
        // CPU under 1,000 subscribers, and 128 MiB of memory. Larger messages are read in
        // several chunks.
        .read_buffer_size(WEBSOCKET_READ_BUFFER)
        .on_upgrade(move |socket| {
            let session = async move {
                websocket_session(socket, state, protocol, context).await;
                drop(session_guard);
                drop(slot);
                drop(address_slot);
            };
            with_correlation_id(caller.request_id, session).instrument(span)
        })
}

/// One WebSocket connection: runs the GraphQL protocol until the client leaves or the
/// server shuts down, then closes cleanly.
async fn websocket_session<E: Executor>(
    socket: WebSocket,
    state: Shared<E>,
    protocol: GraphQLProtocol,
    context: RequestContext,
) {
    metrics::gauge!("api_websocket_sessions").increment(1.0);
    let state = state.0;
    let (mut sink, mut stream) = socket.split();
    // The session ends when the server shuts down or the caller's token expires: a
    // subscription must not outlive the credentials that authorised it.
    let (expiry_tx, expiry_rx) = oneshot::channel::<DateTime<Utc>>();
    let mut shutdown = state.shutdown.clone();
    // A socket that never initialises is closed (4408), as the protocol says; so is one
    // that runs no operation and sends nothing for the idle timeout. Silent sockets must
    // not hold the server's connection slots.
    let initialised = Arc::new(tokio::sync::Notify::new());
    let init_deadline = {
        let initialised = Arc::clone(&initialised);
        let timeout = state.websocket_init_timeout;
        async move {
            if tokio::time::timeout(timeout, initialised.notified())
                .await
                .is_ok()
            {
                future::pending::<()>().await;
            }
        }
    };
    let operations = Arc::new(ActiveOperations::default());
    let last_message = Arc::new(std::sync::Mutex::new(tokio::time::Instant::now()));
    let idle = {
        let operations = Arc::clone(&operations);
        let last_message = Arc::clone(&last_message);
        let timeout = state.websocket_idle_timeout;
        async move {
            loop {
                let since = *last_message
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let due = since + timeout;
                if tokio::time::Instant::now() >= due && operations.is_empty() {
                    return;
                }
                tokio::time::sleep_until(due.max(tokio::time::Instant::now() + timeout / 4)).await;
            }
        }
    };
    let stop = async move {
        let expiry = async move {
            match expiry_rx.await {
                Ok(expires_at) => {
                    let remaining = (expires_at - Utc::now()).to_std().unwrap_or(Duration::ZERO);
                    tokio::time::sleep(remaining).await;
                }
                // Anonymous, or never initialised: nothing expires.
                Err(_) => future::pending::<()>().await,
            }
        };
        tokio::select! {
            _ = shutdown.wait_for(|started| *started) => StopReason::Shutdown,
            () = expiry => StopReason::Expired,
            () = init_deadline => StopReason::InitTimeout,
            () = idle => StopReason::Idle,
        }
    };
    let stop_reason = Arc::new(OnceLock::new());
    let stop = {
        let stop_reason = Arc::clone(&stop_reason);
        async move {
            let _ = stop_reason.set(stop.await);
        }
    };
    let rejected = Arc::new(AtomicBool::new(false));

    let on_connection_init = {
        let jwt = Arc::clone(&state.jwt);
        let rate_limits = Arc::clone(&state.rate_limits);
        let rejected = Arc::clone(&rejected);
        move |payload: serde_json::Value| async move {
            initialised.notify_one();
            let user = match jwt.authenticate_connection_init(&payload) {
                Ok(Some(user)) => Some(user),
                Ok(None) => context.user.clone(),
                Err(error) => {
                    rejected.store(true, Ordering::Release);
                    return Err(async_graphql::Error::new(format!(
                        "UNAUTHENTICATED: {error}"
                    )));
                }
            };
            if let Some(user) = &user {
                let _ = expiry_tx.send(user.expires_at);
            }
            let mut data = Data::default();
            data.insert(RequestContext { user, ..context });
            data.insert(rate_limits);
            Ok(data)
        }
    };

    // async-graphql closes a refused `connection_init` with 1002; the protocol recommends
    // 4403, which tells clients not to retry with the same credentials.
    let outbound = {
        let rejected = Arc::clone(&rejected);
        let operations = Arc::clone(&operations);
        move |message: Message| {
            future::ready(Ok::<_, axum::Error>(match message {
                Message::Text(text) => {
                    operations.track_server_message(text.as_str());
                    Message::Text(text)
                }
                Message::Close(Some(frame)) if rejected.load(Ordering::Acquire) => {
                    Message::Close(Some(CloseFrame {
                        code: CLOSE_FORBIDDEN,
                        reason: frame.reason,
                    }))
                }
                other => other,
            }))
        }
    };
    let input = (&mut stream).take_until(stop).take_while({
        let operations = Arc::clone(&operations);
        let stop_reason = Arc::clone(&stop_reason);
        move |message| {
            *last_message
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = tokio::time::Instant::now();
            let admitted = operations.track_client_message(message);
            if !admitted {
                let _ = stop_reason.set(StopReason::TooManyOperations);
            }
            future::ready(admitted)
        }
    });
    GraphQLWebSocket::new_with_pair(
        (&mut sink).with(outbound),
        input,
        PerOperationAuth {
            executor: state.executor.clone(),
            jwt: Arc::clone(&state.jwt),
        },
        protocol,
    )
    .on_connection_init(on_connection_init)
    .serve()
    .await;

    let closing = match stop_reason.get() {
        Some(StopReason::Shutdown) => Some((CLOSE_GOING_AWAY, "server is shutting down")),
        Some(StopReason::Expired) => {
            Some((CLOSE_UNAUTHORIZED, "UNAUTHENTICATED: the token has expired"))
        }
        Some(StopReason::TooManyOperations) => Some((
            CLOSE_TOO_MANY_OPERATIONS,
            "too many operations on one connection",
        )),
        Some(StopReason::InitTimeout) => {
            Some((CLOSE_INIT_TIMEOUT, "connection initialisation timeout"))
        }
        Some(StopReason::Idle) => Some((CLOSE_IDLE, "idle: no operation running")),
        None => None,
    };
    if let Some((code, reason)) = closing {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        if sink.send(Message::Close(Some(frame))).await.is_ok() {
            // Wait briefly for the client's closing frame so the close handshake completes.
            let _ = tokio::time::timeout(Duration::from_secs(1), async {
                while let Some(Ok(message)) = stream.next().await {
                    if matches!(message, Message::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
    let _ = sink.close().await;
    metrics::gauge!("api_websocket_sessions").decrement(1.0);
}

/// Answers `TIMEOUT` when the request is not answered within `limit`; the handler (and
/// the body upload it waits for) is dropped.
async fn limit_duration(
    State(limit): State<Duration>,
    request: Request<Body>,
    next: Next,
) -> Response {
    match tokio::time::timeout(limit, next.run(request)).await {
        Ok(response) => response,
        Err(_) => {
            tracing::warn!(?limit, "request timed out");
            metrics::counter!("http_request_timeouts_total").increment(1);
            ApiError::Timeout { limit }.into_response()
        }
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz<E: Executor>(State(state): State<Shared<E>>) -> Response {
    if state.0.readiness.is_ready() {
        (StatusCode::OK, "ready").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready").into_response()
    }
}

async fn metrics_page<E: Executor>(State(state): State<Shared<E>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        state.0.metrics.render(),
    )
        .into_response()
}

fn cors_layer(origins: &[String]) -> Result<Option<CorsLayer>, HttpError> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow_origin = if origins.iter().any(|origin| origin == "*") {
        AllowOrigin::any()
    } else {
        let values = origins
            .iter()
            .map(|origin| {
                HeaderValue::from_str(origin)
                    .map_err(|_| HttpError::InvalidCorsOrigin(origin.clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        AllowOrigin::list(values)
    };
    let request_id = HeaderName::from_static(REQUEST_ID_HEADER);
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow_origin)
            .allow_methods([Method::GET, Method::POST])
            .allow_headers([
                header::AUTHORIZATION,
                header::CONTENT_TYPE,
                request_id.clone(),
            ])
            .expose_headers([request_id])
            .max_age(Duration::from_secs(3600)),
    ))
}

/// Longest client-supplied request id kept.
const MAX_REQUEST_ID_LEN: usize = 128;

/// Drops a client `x-request-id` that is too long or has characters outside
/// `[A-Za-z0-9._:-]`, so logs and stored event metadata only ever hold tame ids; a fresh
/// one is generated instead.
async fn drop_malformed_request_id(mut request: Request<Body>, next: Next) -> Response {
    let malformed = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .is_some_and(|value| {
            let bytes = value.as_bytes();
            bytes.is_empty()
                || bytes.len() > MAX_REQUEST_ID_LEN
                || !bytes
                    .iter()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        });
    if malformed {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    next.run(request).await
}

fn request_span(request: &Request<Body>) -> tracing::Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    tracing::info_span!(
        "http",
        method = %request.method(),
        path = %request.uri().path(),
        request_id = %request_id,
    )
}

/// Counts requests and records their latency, labelled by route pattern (not raw path,
/// which would give one series per id).
async fn record_metrics(request: Request<Body>, next: Next) -> Response {
    let started = Instant::now();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().as_str().to_owned();
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    metrics::counter!("http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}

fn panic_response(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let detail = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("non-string panic payload");
    ApiError::internal(anyhow::anyhow!("panic while serving a request: {detail}")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_for_takes_the_last_entry() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 192.0.2.9"),
        );
        assert_eq!(
            forwarded_client(&headers),
            Some("192.0.2.9".parse().expect("ip"))
        );
        headers.insert("x-forwarded-for", HeaderValue::from_static("garbage"));
        assert_eq!(forwarded_client(&headers), None);
    }

    fn client(text: &str) -> Result<Message, axum::Error> {
        Ok(Message::Text(text.into()))
    }

    #[test]
    fn operations_are_counted_from_both_directions() {
        let operations = ActiveOperations::default();
        for id in 0..MAX_OPERATIONS_PER_CONNECTION {
            assert!(operations.track_client_message(&client(&format!(
                r#"{{"type":"subscribe","id":"{id}","payload":{{}}}}"#
            ))));
        }
        // Re-using a live id is the protocol handler's business, not a new operation.
        assert!(operations.track_client_message(&client(r#"{"type":"subscribe","id":"0"}"#)));
        assert!(!operations.track_client_message(&client(r#"{"type":"start","id":"new"}"#)));
        // A client stop frees a slot; so does the server completing an operation.
        assert!(operations.track_client_message(&client(r#"{"type":"complete","id":"0"}"#)));
        assert!(operations.track_client_message(&client(r#"{"type":"subscribe","id":"new"}"#)));
        assert!(!operations.track_client_message(&client(r#"{"type":"subscribe","id":"newer"}"#)));
        operations.track_server_message(r#"{"type":"next","id":"1","payload":{}}"#);
        assert!(!operations.track_client_message(&client(r#"{"type":"subscribe","id":"newer"}"#)));
        operations.track_server_message(r#"{"type":"complete","id":"1"}"#);
        assert!(operations.track_client_message(&client(r#"{"type":"subscribe","id":"newer"}"#)));
        // Messages that are not operations pass untouched.
        for other in [
            "not json",
            r#"{"type":"ping"}"#,
            r#"{"type":"connection_init","payload":{}}"#,
        ] {
            assert!(operations.track_client_message(&client(other)), "{other}");
        }
    }

    #[test]
    fn cors_refuses_invalid_header_values() {
        assert!(cors_layer(&[]).expect("ok").is_none());
        assert!(
            cors_layer(&["https://a.example".into()])
                .expect("ok")
                .is_some()
        );
        assert!(matches!(
            cors_layer(&["bad\nvalue".into()]),
            Err(HttpError::InvalidCorsOrigin(_))
        ));
    }
}
