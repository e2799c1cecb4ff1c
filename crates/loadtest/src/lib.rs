//! The on-sale load test: plays a ticket war against the running system, the way buyers
//! reach it (GraphQL over HTTP, live counts over WebSocket), and reports honest figures.
//!
//! A run starts `ticketing serve` on a temporary data directory (or targets a running
//! server), creates the events, registers and logs in every buyer and connects the
//! subscribers before the sale; then, at one start signal, every buyer buys until sold
//! out. Afterwards it checks, per event, that the tickets sold according to the read side
//! and to a replay of the store equal the tickets in acknowledged purchases and never
//! exceed capacity, and that every acknowledged order is paid in the store.
//!
//! Layout:
//!
//! * [`scenario`]: the named scenarios, [`scenario::Config`] and [`scenario::run`].
//! * [`server`]: starting, killing (SIGKILL) and restarting the server; its memory.
//! * [`gql`]: GraphQL over HTTP, every answer reduced to data or a stable error code.
//! * [`ws`]: a `seatAvailability` subscriber over `graphql-transport-ws`.
//! * [`stats`]: latency histograms and the purchase-to-subscriber delay.
//! * [`report`]: the table and the JSON document.
//! * [`http_war`]: the ticket war through HTTP driven by `wrk` (binary `http-war`): what a
//!   buyer's purchase costs the server, next to the edge's own ceilings.

pub mod gql;
pub mod http_war;
pub mod report;
pub mod scenario;
pub mod server;
pub mod stats;
pub mod ws;

pub use report::Report;
pub use scenario::{Config, Scenario, run};
