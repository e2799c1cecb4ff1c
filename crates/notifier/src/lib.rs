//! The notifier: turns the domain events in the store into email, signed webhooks and
//! in-app notifications, delivered at least once and de-duplicated.
//!
//! Layout:
//!
//! * [`service`]: [`Notifier::start`] runs a *planner* task that follows the store's global
//!   order from the notifier's own checkpoint and, per batch of events, stores the planned
//!   notifications and the new checkpoint in one SQLite transaction; and one delivery
//!   *worker* per channel. [`Notifications`] is the handle the API uses.
//! * [`planner`]: which domain event causes which notifications, to whom.
//! * [`outbox`]: the durable queue, keyed by (domain event id, kind, channel, recipient)
//!   so nothing is planned twice; retries, dead letters, reminders.
//! * [`channel`]: email over SMTP ([`channel::email`]), signed webhooks
//!   ([`channel::webhook`]) and in-app notifications ([`channel::in_app`]).
//! * [`worker`] and [`backoff`]: bounded concurrency, exponential backoff with jitter,
//!   dead letters after the last try.
//! * [`templates`]: subjects and bodies, rendered with minijinja from files in the crate.
//! * [`metrics`]: the names of the counters and gauges it records.
//!
//! The notifier only reads the event store; everything it writes goes to its own database,
//! so a stalled channel grows its own outbox and never slows a sale.

pub mod backoff;
pub mod channel;
pub mod db;
pub mod error;
pub mod metrics;
pub mod outbox;
pub mod planner;
pub mod service;
pub mod templates;
pub mod worker;

pub use backoff::RetryPolicy;
pub use channel::email::{SmtpConfig, SmtpTls};
pub use channel::in_app::InAppNotification;
pub use channel::webhook::WebhookRegistration;
pub use error::NotifierError;
pub use outbox::{ChannelKind, DeadLetter, NotificationKind, PlannedNotification};
pub use planner::DomainPlanner;
pub use service::{Notifications, Notifier, NotifierConfig, NotifierHandle, Planner};
pub use worker::WorkerConfig;
