//! Orders and tickets: each user's purchase history with statuses, and lookups by id.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::inventory::{InventoryEvent, OrderStatus, TicketStatus};
use domain::money::Money;
use domain::{EventId, OrderId, SeatId, TicketId, TierId, UserId};
use serde::{Deserialize, Serialize};
use store::{Position, RecordedEvent};

use crate::QueryError;
use crate::decode;
use crate::page::{self, Page, PageRequest};
use crate::runner::{ApplyError, Projected, ReadModel};

/// A ticket of an order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketRecord {
    pub ticket_id: TicketId,
    /// The seat, for a seated tier.
    pub seat: Option<SeatId>,
    pub status: TicketStatus,
    /// The unguessable secret its signed code is made from: show it to the owner only.
    pub secret: String,
}

/// An order as its buyer sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub order_id: OrderId,
    pub event_id: EventId,
    pub user_id: UserId,
    pub tier_id: TierId,
    pub quantity: u32,
    pub seats: Vec<SeatId>,
    pub status: OrderStatus,
    /// What the order costs (fixed when held).
    pub total: Money,
    pub placed_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// When it was paid.
    pub paid_at: Option<DateTime<Utc>>,
    /// When it was released, expired or cancelled.
    pub closed_at: Option<DateTime<Utc>>,
    /// What is owed back after a cancellation.
    pub refund: Option<Money>,
    /// The payment provider's id of the refund, once the money was given back.
    #[serde(default)]
    pub refund_id: Option<String>,
    /// When the refund was made.
    #[serde(default)]
    pub refunded_at: Option<DateTime<Utc>>,
    /// Issued tickets (empty unless paid).
    pub tickets: Vec<TicketRecord>,
}

/// A ticket with the order it belongs to.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketView {
    pub ticket_id: TicketId,
    pub order_id: OrderId,
    pub event_id: EventId,
    pub user_id: UserId,
    pub tier_id: TierId,
    pub seat: Option<SeatId>,
    pub status: TicketStatus,
    pub secret: String,
}

/// The orders read model.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct OrdersModel {
    /// Every order with its tickets.
    orders: HashMap<OrderId, OrderView>,
    /// Each user's orders in the order they were placed.
    by_user: HashMap<UserId, Vec<OrderId>>,
    /// Ticket id -> its order.
    tickets: HashMap<TicketId, OrderId>,
    /// Position of the last event of each inventory stream folded in (for audits).
    streams: HashMap<EventId, Position>,
}

impl ReadModel for OrdersModel {
    type Feeds = ();
    const NAME: &'static str = "orders";
    const SNAPSHOT_VERSION: u32 = 2;

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ApplyError> {
        let Some(event_id) = decode::inventory_stream(event) else {
            return Ok(());
        };
        if event.event_type == decode::IDEMPOTENCY_RECORD {
            return Ok(());
        }
        let decoded = decode::inventory_event(event)?;
        self.fold(event_id, &decoded);
        self.streams.insert(event_id, event.position);
        Ok(())
    }
}

impl OrdersModel {
    fn fold(&mut self, event_id: EventId, event: &InventoryEvent) {
        use InventoryEvent as E;
        match event {
            E::HoldPlaced(e) => {
                if self.orders.contains_key(&e.order_id) {
                    return;
                }
                self.orders.insert(
                    e.order_id,
                    OrderView {
                        order_id: e.order_id,
                        event_id,
                        user_id: e.user_id,
                        tier_id: e.tier_id,
                        quantity: e.quantity,
                        seats: e.seats.clone(),
                        status: OrderStatus::Held,
                        total: e.total,
                        placed_at: e.placed_at,
                        expires_at: e.expires_at,
                        paid_at: None,
                        closed_at: None,
                        refund: None,
                        refund_id: None,
                        refunded_at: None,
                        tickets: Vec::new(),
                    },
                );
                self.by_user.entry(e.user_id).or_default().push(e.order_id);
            }
            E::HoldReleased(e) => self.close(event_id, e.order_id, OrderStatus::Released, e.at),
            E::HoldExpired(e) => self.close(event_id, e.order_id, OrderStatus::Expired, e.at),
            E::OrderConfirmed(e) => {
                let Some(order) = self.orders.get_mut(&e.order_id) else {
                    return;
                };
                if order.status != OrderStatus::Held || order.event_id != event_id {
                    return;
                }
                order.status = OrderStatus::Paid;
                order.paid_at = Some(e.at);
                order.tickets = e
                    .tickets
                    .iter()
                    .map(|t| TicketRecord {
                        ticket_id: t.ticket_id,
                        seat: t.seat.clone(),
                        status: TicketStatus::Valid,
                        secret: t.secret.clone(),
                    })
                    .collect();
                for t in &e.tickets {
                    self.tickets.insert(t.ticket_id, e.order_id);
                }
            }
            E::OrderCancelled(e) => {
                let Some(order) = self.orders.get_mut(&e.order_id) else {
                    return;
                };
                if order.event_id != event_id {
                    return;
                }
                match order.status {
                    OrderStatus::Held | OrderStatus::Paid => {
                        order.status = OrderStatus::Cancelled;
                        order.closed_at = Some(e.at);
                        order.refund = e.refund;
                        for t in &mut order.tickets {
                            t.status = TicketStatus::Void;
                        }
                    }
                    _ => {}
                }
            }
            E::RefundIssued(e) => {
                // The refund of a cancelled order's payment (a late payment that bought
                // nothing is refunded too, but the order never showed that money).
                let Some(order) = self.orders.get_mut(&e.order_id) else {
                    return;
                };
                if order.event_id == event_id
                    && order.status == OrderStatus::Cancelled
                    && order.refund.is_some()
                    && order.refund_id.is_none()
                {
                    order.refund_id = Some(e.refund_id.clone());
                    order.refunded_at = Some(e.at);
                }
            }
            E::TicketCheckedIn(e) => {
                let Some(order) = self.orders.get_mut(&e.order_id) else {
                    return;
                };
                if order.event_id != event_id {
                    return;
                }
                if let Some(t) = order
                    .tickets
                    .iter_mut()
                    .find(|t| t.ticket_id == e.ticket_id)
                {
                    if t.status == TicketStatus::Valid {
                        t.status = TicketStatus::CheckedIn { at: e.at };
                    }
                }
            }
            _ => {}
        }
    }

    fn close(&mut self, event_id: EventId, order: OrderId, status: OrderStatus, at: DateTime<Utc>) {
        if let Some(order) = self.orders.get_mut(&order) {
            if order.status == OrderStatus::Held && order.event_id == event_id {
                order.status = status;
                order.closed_at = Some(at);
            }
        }
    }

    /// One order.
    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        self.orders.get(&id).cloned()
    }

    /// The orders among `ids` that exist, by id (for batch loaders).
    pub fn orders_by_ids(&self, ids: &[OrderId]) -> HashMap<OrderId, OrderView> {
        ids.iter()
            .filter_map(|id| self.orders.get(id).map(|o| (*id, o.clone())))
            .collect()
    }

    /// A user's orders, newest first, one page at a time.
    pub fn orders_of_user(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<OrderView>, QueryError> {
        let limit = page.limit()?;
        let list = self.by_user.get(&user).map(Vec::as_slice).unwrap_or(&[]);
        // A user's list only grows at its end, so an index counted from the start is a
        // stable cursor even while new orders arrive.
        let end = match &page.after {
            Some(cursor) => {
                let index: usize = page::decode(USER_ORDERS_CURSOR, cursor)?;
                index.min(list.len())
            }
            None => list.len(),
        };
        let start = end.saturating_sub(limit);
        let items: Vec<OrderView> = list[start..end]
            .iter()
            .rev()
            .filter_map(|id| self.orders.get(id).cloned())
            .collect();
        Ok(Page {
            end_cursor: (!items.is_empty()).then(|| page::encode(USER_ORDERS_CURSOR, &start)),
            has_next_page: start > 0,
            items,
        })
    }

    /// Every ticket a user owns (of paid and of cancelled orders), newest order first.
    pub fn tickets_of_user(&self, user: UserId) -> Vec<TicketView> {
        let Some(list) = self.by_user.get(&user) else {
            return Vec::new();
        };
        list.iter()
            .rev()
            .filter_map(|id| self.orders.get(id))
            .flat_map(|o| o.tickets.iter().map(move |t| ticket_view(o, t)))
            .collect()
    }

    /// One ticket.
    pub fn ticket(&self, id: TicketId) -> Option<TicketView> {
        let order = self.orders.get(self.tickets.get(&id)?)?;
        let ticket = order.tickets.iter().find(|t| t.ticket_id == id)?;
        Some(ticket_view(order, ticket))
    }

    /// The tickets among `ids` that exist, by id (for batch loaders).
    pub fn tickets_by_ids(&self, ids: &[TicketId]) -> HashMap<TicketId, TicketView> {
        ids.iter()
            .filter_map(|id| self.ticket(*id).map(|t| (*id, t)))
            .collect()
    }

    /// Every order of one event (for audits), in no particular order.
    pub fn orders_of_event(&self, event: EventId) -> impl Iterator<Item = &OrderView> + '_ {
        self.orders.values().filter(move |o| o.event_id == event)
    }

    /// Position of the last event of an inventory stream folded in.
    pub fn stream_position(&self, event: EventId) -> Option<Position> {
        self.streams.get(&event).copied()
    }
}

const USER_ORDERS_CURSOR: &str = "user-orders";

fn ticket_view(order: &OrderView, t: &TicketRecord) -> TicketView {
    TicketView {
        ticket_id: t.ticket_id,
        order_id: order.order_id,
        event_id: order.event_id,
        user_id: order.user_id,
        tier_id: order.tier_id,
        seat: t.seat.clone(),
        status: t.status,
        secret: t.secret.clone(),
    }
}

/// Orders and tickets as queries see them. Cheap to clone.
#[derive(Clone)]
pub struct Orders {
    pub(crate) inner: Arc<Projected<OrdersModel>>,
}

impl Orders {
    /// One order.
    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        self.inner.read(|m| m.order(id))
    }

    /// The orders among `ids` that exist, by id (for batch loaders).
    pub fn orders_by_ids(&self, ids: &[OrderId]) -> HashMap<OrderId, OrderView> {
        self.inner.read(|m| m.orders_by_ids(ids))
    }

    /// A user's orders (purchase history), newest first.
    pub fn orders_of_user(
        &self,
        user: UserId,
        page: &PageRequest,
    ) -> Result<Page<OrderView>, QueryError> {
        self.inner.read(|m| m.orders_of_user(user, page))
    }

    /// Every ticket a user owns, newest order first.
    pub fn tickets_of_user(&self, user: UserId) -> Vec<TicketView> {
        self.inner.read(|m| m.tickets_of_user(user))
    }

    /// One ticket.
    pub fn ticket(&self, id: TicketId) -> Option<TicketView> {
        self.inner.read(|m| m.ticket(id))
    }

    /// The tickets among `ids` that exist, by id (for batch loaders).
    pub fn tickets_by_ids(&self, ids: &[TicketId]) -> HashMap<TicketId, TicketView> {
        self.inner.read(|m| m.tickets_by_ids(ids))
    }
}
