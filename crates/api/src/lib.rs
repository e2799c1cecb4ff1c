//! The Ticketing API: the GraphQL schema over the command and read sides, the service
//! shell around it, and the application that runs the whole system in one process.
//!
//! [`Application::build`] opens the store, starts the command side, the read side and the
//! notifier, builds the domain [`schema`] (through [`graphql::configure_schema`]) and
//! serves it with [`http::HttpService`]; `ticketing serve` is a thin wrapper around it.
//!
//! Layout:
//!
//! * [`app`]: [`AppConfig`] and [`Application`] (`build`, `port`, `run_until_stopped`).
//! * [`schema`]: queries, mutations and subscriptions, one module per feature.
//! * [`config`]: [`ServiceConfig`], every setting as a flag and a `TICKETING_*` variable,
//!   validated together (production mode refuses the development JWT secret).
//! * [`auth`]: Argon2id password hashing, JWT issue and verify, [`AuthUser`], and the
//!   resolver guards [`Authenticated`] and [`RoleGuard`].
//! * [`error`]: [`ApiError`] and its stable [`ErrorCode`]s in `extensions.code`; internal
//!   errors are logged under a correlation id and never shown.
//! * [`context`]: [`RequestContext`], what a resolver knows about its caller.
//! * [`rate_limit`]: per-client limits on logins, registrations and purchase attempts.
//! * [`hold_limits`]: caps on the tickets a user, and a client address, hold unpaid.
//! * [`graphql`]: the query limits and error extension every schema is built with.
//! * [`http`]: the axum router (GraphQL, GraphiQL, WebSocket subscriptions, health,
//!   readiness, metrics, payment webhook hook), a time limit on every request but the
//!   WebSockets, a cap on WebSocket connections, and graceful serving.
//! * [`printable`]: `GET /tickets/{id}.pdf`, a ticket as a printable PDF.
//! * [`telemetry`]: `tracing` setup, text or JSON.
//!
//! A typical start, once a schema exists:
//!
//! ```text
//! config.validate()?;
//! api::telemetry::init_tracing(config.log_format, &config.log_filter)?;
//! let schema = api::graphql::configure_schema(Schema::build(Query, Mutation, Subscription), SchemaLimits::from_config(&config))
//!     .data(/* domain services */)
//!     .finish();
//! let service = HttpService::builder(schema, Arc::new(JwtCodec::from_config(&config)),
//!         Arc::new(RateLimits::from_config(&config)), HttpOptions::from_config(&config))
//!     .payment_webhook(payments_webhook_handler)
//!     .build()?;
//! let readiness = service.readiness(); // set ready once projections have caught up
//! service.serve(TcpListener::bind(config.addr).await?, shutdown_signal()).await?;
//! ```

#![warn(missing_docs)]

pub mod app;
pub mod auth;
pub mod config;
pub mod context;
pub mod error;
pub mod graphql;
pub mod hold_limits;
pub mod http;
pub mod printable;
pub mod rate_limit;
pub mod schema;
pub mod telemetry;

pub use app::{AppConfig, Application};
pub use auth::{AuthError, AuthUser, Authenticated, JwtCodec, PasswordHasher, Role, RoleGuard};
pub use config::ServiceConfig;
pub use context::{ClientKey, RequestContext};
pub use error::{ApiError, ErrorCode};
pub use graphql::{SchemaLimits, configure_schema};
pub use http::{HttpOptions, HttpService, Readiness};
pub use rate_limit::{RateLimitedAction, RateLimits};
