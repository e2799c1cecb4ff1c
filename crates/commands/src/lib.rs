//! The command side of Ticketing: where every change to an event's inventory is decided
//! and made durable.
//!
//! * [`actor`]: the inventory actor, one per ticketed event. It decides commands against its
//!   in-memory state (durable plus decided-but-not-yet-durable events), appends them in
//!   pipelined batches with the expected version, answers only once they are durable, and
//!   expires holds on time.
//! * [`registry`]: finds or spawns the actor of an event (never two), supervises it, stops
//!   it when idle and restarts it after a failure, recovering its state from the store.
//! * [`service`]: [`CommandService`], the interface the API calls: organizer commands, hold,
//!   pay, purchase, cancel, check in, payment webhooks. Each answer is a [`Receipt`] with
//!   the outcome and the global store position of its events, or a [`CommandError`] with a
//!   stable code.
//! * [`accounts`]: [`AccountService`]: registration (email reservation first), profiles and
//!   roles, by load-decide-append with the expected version and bounded retries.
//! * [`codec`]: how inventory events are stored (type name, schema version, JSON).
//! * [`clock`]: the injected clock commands are stamped with.
//!
//! Only the inventory actor appends to an inventory stream; everything else goes through
//! [`CommandService`].

pub mod accounts;
pub mod actor;
pub mod clock;
pub mod codec;
pub mod error;
pub mod registry;
pub mod service;

pub use accounts::{AccountService, Registration};
pub use actor::{ActorConfig, InventoryMsg};
pub use clock::{Clock, ManualClock, SystemClock};
pub use error::{CommandError, Receipt};
pub use registry::Registry;
pub use service::{CommandConfig, CommandService, OrderLocator, PayOutcome, RequestContext};
