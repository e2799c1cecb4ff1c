//! What happened to one event's inventory: the facts stored in its stream. Each variant has a
//! stable type name (its variant name) and a schema version, see [`crate::codec`].

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::idempotency::{CommandRecord, CommandStamp};
use crate::ids::{EventId, OrderId, SeatId, TicketId, TierId, UserId};
use crate::money::Money;

use super::outcome::InventoryOutcome;

/// A fact about one ticketed event's inventory.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum InventoryEvent {
    /// The event was created by its organizer.
    EventCreated(EventCreated),
    /// The event's details changed; carries all details as they now are.
    DetailsUpdated(DetailsUpdated),
    /// The on-sale window was set.
    SalesWindowSet(SalesWindowSet),
    /// The per-user ticket limit was set or removed.
    PerUserLimitSet(PerUserLimitSet),
    /// The event was published.
    EventPublished(EventPublished),
    /// The event was cancelled (the orders it cancels follow as [`OrderCancelled`]).
    EventCancelled(EventCancelled),
    /// A ticket tier was added.
    TierAdded(TierAdded),
    /// A tier was renamed.
    TierRenamed(TierRenamed),
    /// A tier's price changed.
    TierRepriced(TierRepriced),
    /// A general tier's capacity changed.
    TierResized(TierResized),
    /// Seats were added to the seat map.
    SeatsAdded(SeatsAdded),
    /// Tickets were held for a user: a new order.
    HoldPlaced(HoldPlaced),
    /// A hold was released early; its tickets are back in stock.
    HoldReleased(HoldReleased),
    /// A hold lapsed; its tickets are back in stock.
    HoldExpired(HoldExpired),
    /// An order was paid and its tickets issued.
    OrderConfirmed(OrderConfirmed),
    /// A payment arrived that cannot buy anything (the hold is gone): it must be refunded.
    PaymentRefundOwed(PaymentRefundOwed),
    /// An order was cancelled; a paid one is owed a refund and its tickets are void.
    OrderCancelled(OrderCancelled),
    /// A refund owed (by [`PaymentRefundOwed`] or a paid [`OrderCancelled`]) was paid back.
    RefundIssued(RefundIssued),
    /// A ticket was checked in at the door.
    TicketCheckedIn(TicketCheckedIn),
    /// A user was made door staff of this event: they may check its tickets in.
    DoorStaffAssigned(DoorStaffChanged),
    /// A user is no longer door staff of this event.
    DoorStaffUnassigned(DoorStaffChanged),
    /// A command was accepted: the idempotency record, as the last event of a decision whose
    /// last business event does not carry it (see [`InventoryEvent::ends_decision`]).
    CommandAccepted(InventoryCommandAccepted),
}

/// An event's descriptive details.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventDetails {
    pub name: String,
    pub description: String,
    pub venue: String,
    pub starts_at: DateTime<Utc>,
    pub ends_at: DateTime<Utc>,
    pub images: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventCreated {
    pub event_id: EventId,
    pub organizer: UserId,
    pub details: EventDetails,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DetailsUpdated {
    pub details: EventDetails,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SalesWindowSet {
    pub opens_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PerUserLimitSet {
    pub limit: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventPublished {
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EventCancelled {
    pub reason: String,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierAdded {
    pub tier_id: TierId,
    pub name: String,
    pub price: Money,
    /// For a seated tier, 0 at first: each seat added grows it by one.
    pub capacity: u32,
    pub seated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierRenamed {
    pub tier_id: TierId,
    pub name: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierRepriced {
    pub tier_id: TierId,
    pub price: Money,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierResized {
    pub tier_id: TierId,
    pub capacity: u32,
}

/// A seat and the tier it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeatAssignment {
    pub seat: SeatId,
    pub tier_id: TierId,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeatsAdded {
    pub seats: Vec<SeatAssignment>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldPlaced {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub tier_id: TierId,
    pub quantity: u32,
    /// The held seats (empty for a general tier).
    pub seats: Vec<SeatId>,
    /// Price of the whole order at the tier's price when held.
    pub total: Money,
    pub placed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The idempotency record of the `PlaceHold` this hold decided, which then ends with
    /// it (outcome: `Held`). Absent when a later event ends the decision (a `Purchase` ends
    /// with its `OrderConfirmed`), and in holds stored before schema version 2, which are
    /// followed by an `InventoryCommandAccepted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandStamp>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldReleased {
    pub order_id: OrderId,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HoldExpired {
    pub order_id: OrderId,
    pub at: DateTime<Utc>,
}

/// A ticket issued to an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IssuedTicket {
    pub ticket_id: TicketId,
    /// The unguessable secret the ticket's signed code is made from.
    pub secret: String,
    /// The seat, for a seated tier.
    pub seat: Option<SeatId>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderConfirmed {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub payment_ref: String,
    pub amount: Money,
    pub tickets: Vec<IssuedTicket>,
    pub at: DateTime<Utc>,
    /// The idempotency record of the `ConfirmPayment` or `Purchase` this confirmation
    /// decided, which then ends with it (outcome: `Confirmed`). Absent in confirmations
    /// stored before schema version 2, which are followed by an `InventoryCommandAccepted`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandStamp>,
}

/// Why money is owed back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundReason {
    /// The payment arrived after the hold expired.
    HoldExpired,
    /// The payment arrived after the hold was released.
    HoldReleased,
    /// The payment arrived after the order was cancelled.
    OrderCancelled,
    /// The order was already paid by another payment.
    AlreadyPaid,
    /// The payment's amount or currency differs from the order's total.
    AmountMismatch,
    /// The event was cancelled.
    EventCancelled,
    /// The buyer (or the organizer) cancelled a paid order.
    CancelledByRequest,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRefundOwed {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub payment_ref: String,
    pub amount: Money,
    pub reason: RefundReason,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderCancelled {
    pub order_id: OrderId,
    pub user_id: UserId,
    /// What is owed back: the paid amount for a paid order, none for a hold.
    pub refund: Option<Money>,
    /// `EVENT_CANCELLED` when the whole event was cancelled, else `CANCELLED_BY_REQUEST`.
    pub reason: RefundReason,
    /// The tickets that became void.
    pub voided_tickets: Vec<TicketId>,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundIssued {
    pub order_id: OrderId,
    pub user_id: UserId,
    /// The payment that was paid back.
    pub payment_ref: String,
    /// The payment provider's id of the refund.
    pub refund_id: String,
    pub amount: Money,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketCheckedIn {
    pub ticket_id: TicketId,
    pub order_id: OrderId,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DoorStaffChanged {
    pub user_id: UserId,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryCommandAccepted {
    /// The command's idempotency record.
    pub record: CommandRecord,
    /// What the command answered (replayed to a retry).
    pub outcome: InventoryOutcome,
}

impl InventoryEvent {
    /// The stable type name stored with the event (see [`crate::codec`]).
    pub fn type_name(&self) -> &'static str {
        crate::codec::EventCodec::type_name(self)
    }

    /// Whether this event is the last of an accepted decision, the one with its idempotency
    /// record: an [`InventoryCommandAccepted`], or a [`HoldPlaced`] or [`OrderConfirmed`]
    /// that carries its `command` record (a `PlaceHold`, or a `ConfirmPayment` or
    /// `Purchase` that issued tickets).
    pub fn ends_decision(&self) -> bool {
        match self {
            InventoryEvent::CommandAccepted(_) => true,
            InventoryEvent::HoldPlaced(e) => e.command.is_some(),
            InventoryEvent::OrderConfirmed(e) => e.command.is_some(),
            _ => false,
        }
    }
}
