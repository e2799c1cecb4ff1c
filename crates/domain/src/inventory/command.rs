//! What can be asked of one event's inventory. Commands carry raw input (signed integers,
//! unvalidated strings) so that the domain, not each caller, rejects bad input with a
//! precise message.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::idempotency::fingerprint;

use crate::ids::{EventId, OrderId, SeatId, TicketId, TierId, UserId};

/// A command for one ticketed event's inventory (stream `inventory-<event id>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum InventoryCommand {
    /// Create the event; the acting organizer (or admin) becomes its organizer.
    CreateEvent {
        event_id: EventId,
        details: DetailsInput,
    },
    /// Change some of the event's details; absent fields keep their value.
    UpdateDetails { changes: DetailsPatch },
    /// Set the window in which tickets sell.
    SetSalesWindow {
        opens_at: DateTime<Utc>,
        closes_at: DateTime<Utc>,
    },
    /// Set (or with `None` remove) the most tickets one user may hold or own for this event.
    SetPerUserLimit { limit: Option<i64> },
    /// Make the event visible and sellable (within its sales window).
    Publish,
    /// Cancel the event: nothing sells any more and no ticket admits anyone; every live
    /// hold is cancelled, every paid order is cancelled with a refund owed. An event with
    /// more live orders than one step cancels (see [`super::limits::CANCELLATION_STEP_ORDERS`])
    /// has the rest cancelled by [`InventoryCommand::CancelRemainingOrders`].
    CancelEvent { reason: String },
    /// Cancel the next step's worth of the orders still live in a cancelled event (run by
    /// the platform until none is left).
    CancelRemainingOrders,
    /// Add a ticket tier.
    AddTier {
        tier_id: TierId,
        name: String,
        price_minor: i64,
        currency: String,
        kind: TierKindInput,
    },
    /// Rename a tier.
    RenameTier { tier_id: TierId, name: String },
    /// Change a tier's price; orders already placed keep the price they were placed at.
    RepriceTier {
        tier_id: TierId,
        price_minor: i64,
        currency: String,
    },
    /// Change the capacity of an unseated tier (never below what is sold plus held).
    ResizeTier { tier_id: TierId, capacity: i64 },
    /// Add seats to the seat map, each in a seated tier (which grows by one per seat).
    AddSeats { seats: Vec<SeatInput> },
    /// Hold tickets for the acting user until `expires_at`.
    PlaceHold(HoldRequest),
    /// Hold and pay in one decision, for a payment that already succeeded synchronously.
    /// If it is refused, the caller owns the payment and must void or refund it.
    Purchase {
        hold: HoldRequest,
        payment: PaymentInput,
    },
    /// Release a live hold early (its owner, the organizer or an admin).
    ReleaseHold { order_id: OrderId },
    /// Expire a live hold whose time has come (run by the platform's clock).
    ExpireHold { order_id: OrderId },
    /// A payment for the order succeeded: issue tickets, or record a refund owed when the
    /// hold is no longer live.
    ConfirmPayment {
        order_id: OrderId,
        payment: PaymentInput,
    },
    /// Cancel an order, held or paid (a paid order is refunded and its tickets void).
    CancelOrder { order_id: OrderId },
    /// The payment provider paid back a refund owed for this order and payment (run by the
    /// platform or an admin once the provider confirms the refund).
    RecordRefund {
        order_id: OrderId,
        /// The payment provider's reference of the payment that was refunded.
        payment_ref: String,
        /// The provider's id of the refund.
        refund_id: String,
        /// What was paid back, in minor units.
        amount_minor: i64,
        /// The refunded currency.
        currency: String,
    },
    /// Check a ticket in at the door, once (the event's door staff, its organizer or an
    /// admin).
    CheckIn { ticket_id: TicketId },
    /// Make a user door staff of this event (the caller checks they are an `OPERATOR`).
    AssignDoorStaff { user_id: UserId },
    /// Take a user off this event's door staff.
    UnassignDoorStaff { user_id: UserId },
}

impl InventoryCommand {
    /// What identifies this request for idempotency: a hash of the body, leaving out a
    /// hold's `expires_at`. The expiry is stamped from the caller's clock, so a retry made
    /// later carries a later one; it is still the same request, and answers the hold its
    /// first attempt made (with that attempt's expiry).
    pub fn fingerprint(&self) -> Uuid {
        match self {
            Self::PlaceHold(hold) => fingerprint(&FingerprintedHold::PlaceHold {
                hold: HoldIdentity::of(hold),
            }),
            Self::Purchase { hold, payment } => fingerprint(&FingerprintedHold::Purchase {
                hold: HoldIdentity::of(hold),
                payment,
            }),
            other => fingerprint(other),
        }
    }

    /// A short stable name of the command, for logs and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            Self::CreateEvent { .. } => "CreateEvent",
            Self::UpdateDetails { .. } => "UpdateDetails",
            Self::SetSalesWindow { .. } => "SetSalesWindow",
            Self::SetPerUserLimit { .. } => "SetPerUserLimit",
            Self::Publish => "Publish",
            Self::CancelEvent { .. } => "CancelEvent",
            Self::CancelRemainingOrders => "CancelRemainingOrders",
            Self::AddTier { .. } => "AddTier",
            Self::RenameTier { .. } => "RenameTier",
            Self::RepriceTier { .. } => "RepriceTier",
            Self::ResizeTier { .. } => "ResizeTier",
            Self::AddSeats { .. } => "AddSeats",
            Self::PlaceHold(_) => "PlaceHold",
            Self::Purchase { .. } => "Purchase",
            Self::ReleaseHold { .. } => "ReleaseHold",
            Self::ExpireHold { .. } => "ExpireHold",
            Self::ConfirmPayment { .. } => "ConfirmPayment",
            Self::CancelOrder { .. } => "CancelOrder",
            Self::RecordRefund { .. } => "RecordRefund",
            Self::CheckIn { .. } => "CheckIn",
            Self::AssignDoorStaff { .. } => "AssignDoorStaff",
            Self::UnassignDoorStaff { .. } => "UnassignDoorStaff",
        }
    }
}

/// The parts of a hold that make it the request it is (all but its expiry), as
/// fingerprinted; tagged like [`InventoryCommand`] so no other command hashes the same.
#[derive(Serialize)]
#[serde(tag = "type", rename_all = "camelCase")]
enum FingerprintedHold<'a> {
    PlaceHold {
        hold: HoldIdentity<'a>,
    },
    Purchase {
        hold: HoldIdentity<'a>,
        payment: &'a PaymentInput,
    },
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HoldIdentity<'a> {
    order_id: OrderId,
    tier_id: TierId,
    selection: &'a Selection,
}

impl<'a> HoldIdentity<'a> {
    fn of(hold: &'a HoldRequest) -> Self {
        Self {
            order_id: hold.order_id,
            tier_id: hold.tier_id,
            selection: &hold.selection,
        }
    }
}

/// An event's details as given when creating it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailsInput {
    pub name: String,
    pub description: String,
    pub venue: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    /// References (URLs or storage keys) of the event's images.
    pub images: Vec<String>,
}

/// A partial change of an event's details.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailsPatch {
    pub name: Option<String>,
    pub description: Option<String>,
    pub venue: Option<String>,
    pub starts_at: Option<DateTime<Utc>>,
    pub ends_at: Option<DateTime<Utc>>,
    pub images: Option<Vec<String>>,
}

/// Whether a new tier sells quantities or named seats.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum TierKindInput {
    /// General admission: `capacity` interchangeable tickets.
    General { capacity: i64 },
    /// Named seats; the capacity is the number of seats added to the tier.
    Seated,
}

/// One seat of the seat map, as given.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeatInput {
    /// The seat id, such as `A-12` (validated and upper-cased).
    pub seat: String,
    /// The seated tier it belongs to.
    pub tier_id: TierId,
}

/// What a hold asks for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldRequest {
    /// The new order's id (chosen by the caller).
    pub order_id: OrderId,
    /// The tier to buy from.
    pub tier_id: TierId,
    /// How many tickets, or which seats.
    pub selection: Selection,
    /// When the hold lapses unless paid.
    pub expires_at: DateTime<Utc>,
}

/// Tickets of a general tier by quantity, or named seats of a seated tier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum Selection {
    /// N interchangeable tickets.
    Quantity { quantity: i64 },
    /// These seats (ids as given; validated and upper-cased).
    Seats { seats: Vec<String> },
}

/// A successful payment and the tickets it pays for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentInput {
    /// The payment provider's reference of the payment (for refunds and audits).
    pub payment_ref: String,
    /// What was charged, in minor units.
    pub amount_minor: i64,
    /// The charged currency.
    pub currency: String,
    /// One seed per ticket to issue: its id and unguessable secret, generated outside the
    /// domain so that decisions stay deterministic.
    pub tickets: Vec<TicketSeed>,
}

/// The id and secret of a ticket to issue.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketSeed {
    pub ticket_id: TicketId,
    /// An unguessable secret (at least [`MIN_SECRET_LEN`] characters).
    pub secret: String,
}

/// Shortest ticket secret accepted, in characters (e.g. 128 bits in hex is 32).
pub const MIN_SECRET_LEN: usize = 16;
/// Longest ticket secret accepted, in characters.
pub const MAX_SECRET_LEN: usize = 256;

/// Seats are kept as validated ids inside the domain.
pub(crate) fn parse_seats(raw: &[String]) -> Result<Vec<SeatId>, crate::Rejection> {
    raw.iter().map(|s| SeatId::parse(s)).collect()
}
