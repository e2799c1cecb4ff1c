//! What an accepted inventory command answers.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::{EventId, OrderId, TicketId};
use crate::money::Money;

use super::event::RefundReason;

/// The answer to an accepted inventory command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum InventoryOutcome {
    /// The event was created.
    EventCreated { event_id: EventId },
    /// An organizer command (details, window, limit, publish, tiers, seats) took effect.
    Accepted,
    /// The event was cancelled (or its cancellation went on), cancelling this many orders.
    EventCancelled { orders_cancelled: u32 },
    /// Tickets are held until `expires_at`; `total` is what paying costs.
    Held {
        order_id: OrderId,
        expires_at: DateTime<Utc>,
        total: Money,
    },
    /// The order is paid; these tickets were issued.
    Confirmed {
        order_id: OrderId,
        tickets: Vec<TicketId>,
    },
    /// The payment bought nothing and is owed back.
    RefundOwed {
        order_id: OrderId,
        amount: Money,
        reason: RefundReason,
    },
    /// A refund owed was paid back under the provider's `refund_id`.
    Refunded {
        order_id: OrderId,
        refund_id: String,
        amount: Money,
    },
    /// The hold was released.
    Released { order_id: OrderId },
    /// The hold expired.
    Expired { order_id: OrderId },
    /// The order was cancelled; `refund` is owed for a paid one.
    OrderCancelled {
        order_id: OrderId,
        refund: Option<Money>,
    },
    /// The ticket was checked in.
    CheckedIn {
        ticket_id: TicketId,
        order_id: OrderId,
    },
}
