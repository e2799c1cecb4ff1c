//! Payments: the port the command side charges through, a simulated provider, and the
//! signed webhooks that carry late answers.
//!
//! * [`port`]: [`PaymentPort`] (`charge`, `refund`), its request and outcome types and
//!   [`PaymentError`] with stable codes. Both calls are idempotent: an order is charged at
//!   most once and a charge refunded at most once, whatever the retries and concurrency.
//! * [`simulator`]: [`SimulatedProvider`], which decides by [`test_tokens`] and keeps a
//!   [`Ledger`] of charges and refunds that tests inspect: in memory only
//!   ([`SimulatedProvider::new`]), or also in a durable ledger file
//!   ([`SimulatedProvider::open`]) so that a restart neither forgets nor repeats a charge.
//! * [`journal`]: that ledger file (SQLite), and [`LedgerError`] for a file that is not a
//!   ledger or is damaged.
//! * [`webhook`]: the [`WebhookEvent`] payload (`charge.succeeded`, `charge.failed`,
//!   `refund.succeeded`), [`parse_webhook`] for the API's `/webhooks/payments` route
//!   (signature and timestamp first, then parsing), and a bounded [`ReplayGuard`].
//! * [`delivery`]: how the simulator sends webhooks: [`ChannelSink`] in-process,
//!   [`HttpSink`] over HTTP with retries.
//!
//! How the command side uses it: charge with [`charge_within`] and a deadline; `Succeeded`
//! confirms the order, `Declined` or [`PaymentError::TimedOut`] releases the hold, `Pending`
//! keeps it until the webhook. A `charge.succeeded` that arrives for a hold that has expired
//! is refunded (with [`RefundReason::HoldExpired`]), never turned into tickets.
//!
//! The test tokens and the webhook format are documented in `docs/payments.md`.
//!
//! ```
//! use std::{sync::Arc, time::Duration};
//! use payments::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let (sink, mut webhooks) = ChannelSink::new();
//! let config = SimulatorConfig {
//!     webhook_delay: Duration::from_millis(10),
//!     ..SimulatorConfig::new("whsec")
//! };
//! let provider = SimulatedProvider::new(config, Arc::new(sink));
//! let order = uuid::Uuid::new_v4();
//!
//! let request = ChargeRequest::for_order(order, 4500, "EUR", test_tokens::WEBHOOK_SUCCESS);
//! let outcome = charge_within(&provider, request, Duration::from_secs(10)).await;
//! assert!(matches!(outcome, Ok(ChargeOutcome::Pending { .. })));
//!
//! // What the API's webhook route does with the delivery.
//! let delivery = webhooks.recv().await.unwrap();
//! let now = std::time::SystemTime::now()
//!     .duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;
//! let event = parse_webhook(&[b"whsec"], &delivery.signature_header, &delivery.body, now, 300)
//!     .unwrap();
//! assert_eq!((event.kind, event.order_id), (WebhookEventType::ChargeSucceeded, order));
//! # }
//! ```

pub mod delivery;
pub mod journal;
pub mod port;
pub mod simulator;
pub mod webhook;

pub use delivery::{ChannelSink, DeliveryError, HttpSink, WebhookDelivery, WebhookSink};
pub use journal::LedgerError;
pub use port::{
    ChargeOutcome, ChargeRequest, DeclineReason, ListedCharge, ListedChargeStatus, PaymentError,
    PaymentPort, RefundOutcome, RefundReason, RefundRequest, charge_within,
};
pub use simulator::{
    ChargeRecord, ChargeStatus, Ledger, RefundRecord, SimulatedProvider, SimulatorConfig,
    test_tokens,
};
pub use webhook::{
    MAX_WEBHOOK_BODY_BYTES, ReplayGuard, WebhookError, WebhookEvent, WebhookEventType,
    parse_webhook,
};
