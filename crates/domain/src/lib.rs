//! The pure domain of Ticketing: what may happen to an event's inventory and to user
//! accounts, decided by pure functions.
//!
//! * [`aggregate`]: the [`Aggregate`] trait (`decide` a command into events, `evolve` state
//!   by folding events), commands with their metadata (idempotency key, actor, time).
//! * [`inventory`]: one ticketed event: details, tiers, seat map, holds, orders, tickets.
//! * [`account`]: user accounts and the reservation that keeps emails unique.
//! * [`codec`]: stored form of every event: type name, schema version, JSON, upcasting.
//! * [`rejection`]: why a command was refused, with stable machine codes.
//! * [`ids`], [`money`]: identifiers, validated values and stream names.
//! * [`idempotency`]: how a retried command is recognised and answered again.
//! * [`testing`]: a given/when/then harness for aggregates.
//!
//! Nothing here does IO, reads a clock, draws random numbers or knows about async
//! runtimes: time, the acting user and new ids arrive in each command, so every decision
//! is deterministic and can be replayed for audits.
//!
//! # What callers rely on
//!
//! * Every accepted decision ends with its idempotency record (key, actor, body
//!   fingerprint, outcome): a `...CommandAccepted` event, except for the two hot decisions
//!   of a purchase, whose last event carries it
//!   ([`inventory::InventoryEvent::ends_decision`]): a `PlaceHold` ends with its
//!   `HoldPlaced` (outcome `Held`), and a `ConfirmPayment` or `Purchase` that issues
//!   tickets with its `OrderConfirmed` (outcome `Confirmed`). Keys are scoped per stream
//!   and per acting user: a decided key answers its first outcome with no events; the same
//!   key with a different body is refused as `INVALID_INPUT`. A hold's expiry is not part
//!   of that identity ([`inventory::InventoryCommand::fingerprint`]): a hold retried later,
//!   with a later expiry, answers the first hold. Rejected commands are not recorded.
//! * [`inventory::Inventory::shrink_to_fit`] gives back spare memory of a state kept idle.
//! * Buying is `PlaceHold` (by the buyer), then `ConfirmPayment` (by [`Actor::System`] or an
//!   admin, when the payment provider reports success), or `ExpireHold` (by
//!   [`Actor::System`], at or after the hold's expiry time; earlier is refused). A payment
//!   that arrives for a hold that is no longer live records a refund owed, never tickets.
//!   `Purchase` holds and pays in one decision for a payment that already succeeded; if it
//!   is refused, the caller must void or refund that payment.
//! * Money owed back (a `PaymentRefundOwed`, or a paid order cancelled alone or with its
//!   event) is owed once per order and payment, and stays owed until `RecordRefund` (by
//!   [`Actor::System`] or an admin) records the provider's refund as `RefundIssued`. The same
//!   refund id again changes nothing; no refund owed, another amount or a second refund id
//!   are refused (`NO_REFUND_OWED`, `REFUND_MISMATCH`, `ALREADY_REFUNDED`).
//! * [`inventory::Inventory::live_holds`] lists the holds whose expiry must be scheduled
//!   after recovery.

pub mod account;
pub mod aggregate;
pub mod codec;
pub mod idempotency;
pub mod ids;
mod index;
pub mod inventory;
pub mod money;
pub mod rejection;
pub mod testing;

pub use aggregate::{Actor, ActorRef, Aggregate, Command, CommandMeta, Decision, Role};
pub use ids::{EventId, IdempotencyKey, OrderId, SeatId, TicketId, TierId, UserId};
pub use rejection::Rejection;
