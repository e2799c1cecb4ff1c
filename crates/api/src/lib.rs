//! The service shell of the Ticketing API: everything around the GraphQL schema.
//!
//! This crate serves an async-graphql schema over HTTP and WebSocket and provides what
//! every resolver needs at the edge. The domain schema itself (queries, mutations and
//! subscriptions over events, orders and tickets) is added by the command-side and
//! read-side integration, which builds a `Schema` with [`graphql::configure_schema`] and
//! hands it to [`http::HttpService`].
//!
//! Layout:
//!
//! * [`config`]: [`ServiceConfig`], every setting as a flag and a `TICKETING_*` variable,
//!   validated together (production mode refuses the development JWT secret).
//! * [`auth`]: Argon2id password hashing, JWT issue and verify, [`AuthUser`], and the
//!   resolver guards [`Authenticated`] and [`RoleGuard`].
//! * [`error`]: [`ApiError`] and its stable [`ErrorCode`]s in `extensions.code`; internal
//!   errors are logged under a correlation id and never shown.
//! * [`context`]: [`RequestContext`], what a resolver knows about its caller.
//! * [`rate_limit`]: per-client limits on login and purchase attempts.
//! * [`graphql`]: the query limits and error extension every schema is built with.
//! * [`http`]: the axum router (GraphQL, GraphiQL, WebSocket subscriptions, health,
//!   readiness, metrics, payment webhook hook) and graceful serving.
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
pub mod http;
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
