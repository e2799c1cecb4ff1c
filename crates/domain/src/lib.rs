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

pub mod account;
pub mod aggregate;
pub mod codec;
pub mod idempotency;
pub mod ids;
pub mod inventory;
pub mod money;
pub mod rejection;
pub mod testing;

pub use aggregate::{Actor, ActorRef, Aggregate, Command, CommandMeta, Decision, Role};
pub use ids::{EventId, IdempotencyKey, OrderId, SeatId, TicketId, TierId, UserId};
pub use rejection::Rejection;
