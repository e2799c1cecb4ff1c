//! One ticketed event's inventory: its details, tiers, seat map, orders and tickets.
//!
//! [`Inventory`] is the state of stream `inventory-<event id>`. It keeps indexes (per-tier
//! counters, seat id -> seat, order id -> order, ticket id -> ticket, per-user counts) so
//! that deciding and folding a hold costs in proportion to the request, never to the size
//! of the seat map or the number of orders.

mod command;
mod decide;
mod event;
mod evolve;
mod outcome;

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use command::{
    DetailsInput, DetailsPatch, HoldRequest, InventoryCommand, MAX_SECRET_LEN, MIN_SECRET_LEN,
    PaymentInput, SeatInput, Selection, TicketSeed, TierKindInput,
};
pub use decide::limits;
pub use event::{
    DetailsUpdated, EventCancelled, EventCreated, EventDetails, EventPublished, HoldExpired,
    HoldPlaced, HoldReleased, InventoryCommandAccepted, InventoryEvent, IssuedTicket,
    OrderCancelled, OrderConfirmed, PaymentRefundOwed, PerUserLimitSet, RefundIssued, RefundReason,
    SalesWindowSet, SeatAssignment, SeatsAdded, TicketCheckedIn, TierAdded, TierRenamed,
    TierRepriced, TierResized,
};
pub use outcome::InventoryOutcome;

use crate::idempotency::Ledger;
use crate::ids::{EventId, OrderId, SeatId, TicketId, TierId, UserId};
use crate::money::Money;

/// The state of one event's inventory, folded from its stream.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// The event itself; `None` until it is created.
    event: Option<EventInfo>,
    /// Tiers in the order they were added (read views list them in this order).
    tiers: Vec<Tier>,
    /// Tier id -> position in `tiers`.
    tier_index: HashMap<TierId, usize>,
    /// Seats in the order they were added.
    seats: Vec<Seat>,
    /// Seat id -> position in `seats`: seat lookups without scanning the map.
    seat_index: HashMap<SeatId, u32>,
    /// Every order ever placed, in placement order (closed orders stay: payments may still
    /// arrive for them, and retries recall them).
    orders: Vec<Order>,
    /// Order id -> position in `orders`.
    order_index: HashMap<OrderId, u32>,
    /// How many orders are live holds (for metrics and tests, without a scan).
    live_hold_count: usize,
    /// Every ticket ever issued, in issue order; an order's tickets are contiguous.
    tickets: Vec<Ticket>,
    /// Ticket id -> position in `tickets`.
    ticket_index: HashMap<TicketId, u32>,
    /// Tickets per user counted against the per-user limit: held plus valid.
    per_user: HashMap<UserId, u32>,
    /// Decided idempotency keys and what they answered, compactly (see [`Recorded`]).
    ledger: Ledger<Recorded>,
    /// Refunds owed for payments that bought nothing, so a retried payment callback
    /// recalls the same answer.
    refunds: Vec<RecordedRefund>,
    /// Every refund owed (one per order and payment), and whether it was paid back: what
    /// `RecordRefund` checks against, and what a repeated payment callback finds instead
    /// of owing the same money twice.
    owed_refunds: Vec<OwedRefund>,
    /// Order position -> positions of its refunds in `owed_refunds` (few orders have any).
    order_refunds: HashMap<u32, Vec<u32>>,
}

/// Money owed back for one payment of one order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OwedRefund {
    /// Position of the order in `orders`.
    order: u32,
    /// Hash of the payment reference to refund (see `decide::payment_hash`).
    payment: u64,
    /// What is owed.
    amount: Money,
    /// Why.
    reason: RefundReason,
    /// The provider's refund id, once the refund was made.
    refund_id: Option<Box<str>>,
}

/// A refund-owed answer, kept for retries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct RecordedRefund {
    /// Position of the order in `orders`.
    order: u32,
    /// What is owed.
    amount: Money,
    /// Why.
    reason: RefundReason,
}

/// What a decided command answered, in four bytes: a kind and the position of what it
/// names (an order, a ticket, a refund) or a count. The full outcome is rebuilt from the
/// state, whose recalled parts (an order's id, expiry, total and tickets) never change.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Recorded(u32);

/// The kinds of [`Recorded`] answers, in its top four bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum RecordedKind {
    Accepted = 0,
    EventCreated = 1,
    EventCancelled = 2,
    Held = 3,
    Confirmed = 4,
    RefundOwed = 5,
    Released = 6,
    Expired = 7,
    OrderCancelled = 8,
    CheckedIn = 9,
    Refunded = 10,
}

/// Largest position a [`Recorded`] can name: orders and tickets are capped below it.
pub(crate) const MAX_RECORDED_INDEX: u32 = (1 << 28) - 1;

impl Recorded {
    fn new(kind: RecordedKind, index: u32) -> Option<Self> {
        (index <= MAX_RECORDED_INDEX).then_some(Self(((kind as u32) << 28) | index))
    }

    fn kind(self) -> Option<RecordedKind> {
        use RecordedKind::*;
        [
            Accepted,
            EventCreated,
            EventCancelled,
            Held,
            Confirmed,
            RefundOwed,
            Released,
            Expired,
            OrderCancelled,
            CheckedIn,
            Refunded,
        ]
        .get((self.0 >> 28) as usize)
        .copied()
    }

    fn index(self) -> u32 {
        self.0 & MAX_RECORDED_INDEX
    }
}

/// The event's own facts.
#[derive(Clone, Debug, PartialEq, Eq)]
struct EventInfo {
    /// The stream's event id.
    id: EventId,
    /// Who may run organizer commands (besides admins).
    organizer: UserId,
    /// Descriptive details, shown to buyers.
    details: EventDetails,
    /// Draft, published or cancelled.
    status: EventStatus,
    /// When tickets sell; `None` means from publication until the event ends.
    sales_window: Option<SalesWindow>,
    /// Most tickets one user may hold or own; `None` means unlimited.
    per_user_limit: Option<u32>,
}

/// Where an event is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventStatus {
    /// Created, not visible, not selling.
    Draft,
    /// Visible; sells within its sales window.
    Published,
    /// Cancelled: nothing sells, every order was cancelled.
    Cancelled,
}

/// The window in which tickets sell: `opens_at <= now < closes_at`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SalesWindow {
    pub opens_at: DateTime<Utc>,
    pub closes_at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Tier {
    /// The tier's id.
    id: TierId,
    /// Display name (Standard, VIP, ...).
    name: String,
    /// Price of one ticket for new orders.
    price: Money,
    /// How many tickets the tier may sell in all; for a seated tier, its number of seats.
    capacity: u32,
    /// Tickets issued and still valid (or checked in).
    sold: u32,
    /// Tickets in live holds.
    held: u32,
    /// Whether the tier sells named seats rather than quantities.
    seated: bool,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Seat {
    /// The seat's id.
    id: SeatId,
    /// Position of its tier in `tiers`.
    tier: u32,
    /// Position in `orders` of the live hold or paid order that has it, if any.
    taken_by: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Order {
    /// The order's id.
    id: OrderId,
    /// The buyer.
    user: UserId,
    /// Position of its tier in `tiers`.
    tier: u32,
    /// Number of tickets.
    quantity: u32,
    /// Positions of the held seats in `seats` (empty for a general tier).
    seats: Box<[u32]>,
    /// Held, paid, released, expired or cancelled.
    status: OrderStatus,
    /// When the hold lapses unless paid.
    expires_at: DateTime<Utc>,
    /// What the order costs (fixed when held).
    total: Money,
    /// Position of its first ticket in `tickets`, once paid.
    first_ticket: Option<u32>,
    /// Hash of the payment reference that paid it, to recognise a repeated payment
    /// callback without keeping the reference itself.
    payment: Option<u64>,
}

/// Where an order is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OrderStatus {
    /// A live hold: its tickets are reserved until it expires.
    Held,
    /// Paid: its tickets are issued.
    Paid,
    /// Released by the buyer (or organizer) before paying.
    Released,
    /// Expired unpaid.
    Expired,
    /// Cancelled; if it had been paid, a refund is owed and its tickets are void.
    Cancelled,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Ticket {
    /// The ticket's id.
    id: TicketId,
    /// Position of its order in `orders`.
    order: u32,
    /// Position of its seat in `seats`, for a seated tier.
    seat: Option<u32>,
    /// Valid, checked in, or void.
    status: TicketStatus,
}

/// Where a ticket is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TicketStatus {
    /// Issued and not used.
    Valid,
    /// Used at the door.
    CheckedIn { at: DateTime<Utc> },
    /// Its order was cancelled.
    Void,
}

/// A tier as the read side sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierView {
    pub tier_id: TierId,
    pub name: String,
    pub price: Money,
    pub capacity: u32,
    pub sold: u32,
    pub held: u32,
    /// `capacity - sold - held`.
    pub available: u32,
    pub seated: bool,
}

/// Whether a seat can be bought.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeatState {
    /// Free to hold.
    Available,
    /// In a live hold.
    Held { order_id: OrderId },
    /// Sold to a paid order.
    Sold { order_id: OrderId },
}

/// A seat as the read side sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeatView {
    pub seat: SeatId,
    pub tier_id: TierId,
    pub state: SeatState,
}

/// An order as the read side sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OrderView {
    pub order_id: OrderId,
    pub user_id: UserId,
    pub tier_id: TierId,
    pub quantity: u32,
    pub seats: Vec<SeatId>,
    pub status: OrderStatus,
    pub expires_at: DateTime<Utc>,
    pub total: Money,
    /// Issued tickets (empty unless the order was paid).
    pub tickets: Vec<TicketId>,
    /// Refunds owed for the order's payments, owed or made.
    pub refunds: Vec<RefundView>,
}

/// A refund owed for an order, as the read side sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RefundView {
    pub amount: Money,
    pub reason: RefundReason,
    pub status: RefundStatus,
}

/// Whether a refund owed was paid back.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum RefundStatus {
    /// Owed, not yet paid back.
    Owed,
    /// Paid back by the payment provider under this refund id.
    Refunded {
        #[serde(rename = "refundId")]
        refund_id: String,
    },
}

/// A ticket as the read side sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TicketView {
    pub ticket_id: TicketId,
    pub order_id: OrderId,
    pub user_id: UserId,
    pub tier_id: TierId,
    pub seat: Option<SeatId>,
    pub status: TicketStatus,
}

impl Inventory {
    /// Whether the event exists (its stream is not empty).
    pub fn exists(&self) -> bool {
        self.event.is_some()
    }

    /// The event's id, once created.
    pub fn event_id(&self) -> Option<EventId> {
        self.event.as_ref().map(|e| e.id)
    }

    /// The event's organizer, once created.
    pub fn organizer(&self) -> Option<UserId> {
        self.event.as_ref().map(|e| e.organizer)
    }

    /// The event's details, once created.
    pub fn details(&self) -> Option<&EventDetails> {
        self.event.as_ref().map(|e| &e.details)
    }

    /// Draft, published or cancelled, once created.
    pub fn status(&self) -> Option<EventStatus> {
        self.event.as_ref().map(|e| e.status)
    }

    /// The on-sale window, if one was set.
    pub fn sales_window(&self) -> Option<SalesWindow> {
        self.event.as_ref().and_then(|e| e.sales_window)
    }

    /// The per-user ticket limit, if one was set.
    pub fn per_user_limit(&self) -> Option<u32> {
        self.event.as_ref().and_then(|e| e.per_user_limit)
    }

    /// Every tier, in the order they were added.
    pub fn tiers(&self) -> impl Iterator<Item = TierView> + '_ {
        self.tiers.iter().map(Tier::view)
    }

    /// One tier.
    pub fn tier(&self, id: TierId) -> Option<TierView> {
        self.tier_index.get(&id).map(|&i| self.tiers[i].view())
    }

    /// The number of seats in the seat map.
    pub fn seat_count(&self) -> usize {
        self.seats.len()
    }

    /// One seat and its state.
    pub fn seat(&self, id: &SeatId) -> Option<SeatView> {
        self.seat_index
            .get(id)
            .map(|&i| self.seat_view(&self.seats[i as usize]))
    }

    /// Every seat and its state, in the order they were added.
    pub fn seats(&self) -> impl Iterator<Item = SeatView> + '_ {
        self.seats.iter().map(|s| self.seat_view(s))
    }

    /// One order.
    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        self.order_at(id).map(|(_, o)| self.order_view(o))
    }

    /// Every order (in no particular order).
    pub fn orders(&self) -> impl Iterator<Item = OrderView> + '_ {
        self.orders.iter().map(|o| self.order_view(o))
    }

    /// One ticket.
    pub fn ticket(&self, id: TicketId) -> Option<TicketView> {
        self.ticket_index
            .get(&id)
            .map(|&i| self.ticket_view(&self.tickets[i as usize]))
    }

    /// Every ticket, in issue order.
    pub fn tickets(&self) -> impl Iterator<Item = TicketView> + '_ {
        self.tickets.iter().map(|t| self.ticket_view(t))
    }

    /// Live holds and when each expires, so that whoever runs the clock can schedule
    /// their expiry. Walks every order: meant for recovery, not for each command.
    pub fn live_holds(&self) -> impl Iterator<Item = (OrderId, DateTime<Utc>)> + '_ {
        self.orders
            .iter()
            .filter(|o| o.status == OrderStatus::Held)
            .map(|o| (o.id, o.expires_at))
    }

    /// How many live holds there are (kept as a counter, no scan).
    pub fn live_hold_count(&self) -> usize {
        self.live_hold_count
    }

    /// Tickets a user currently has against the per-user limit: held plus valid.
    pub fn tickets_of_user(&self, user: UserId) -> u32 {
        self.per_user.get(&user).copied().unwrap_or(0)
    }

    /// How many idempotency keys this stream has decided.
    pub fn decided_commands(&self) -> usize {
        self.ledger.len()
    }

    /// Checks every invariant by scanning the whole state (for audits and tests; far too
    /// slow for each command). Returns the first violation found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut held = vec![0u32; self.tiers.len()];
        let mut sold = vec![0u32; self.tiers.len()];
        let mut per_user: HashMap<UserId, u32> = HashMap::new();
        let mut seat_owner: HashMap<u32, u32> = HashMap::new();
        let mut live = 0;
        if self.order_index.len() != self.orders.len() {
            return Err("order index and orders differ in size".into());
        }
        for (i, o) in self.orders.iter().enumerate() {
            let id = &o.id;
            let pos = i as u32;
            if self.order_index.get(id) != Some(&pos) {
                return Err(format!("order {id} is not indexed at its position"));
            }
            let t = o.tier as usize;
            if t >= self.tiers.len() {
                return Err(format!("order {id} names a missing tier"));
            }
            let counts = match o.status {
                OrderStatus::Held => {
                    live += 1;
                    held[t] += o.quantity;
                    true
                }
                OrderStatus::Paid => {
                    sold[t] += o.quantity;
                    true
                }
                _ => false,
            };
            if counts {
                *per_user.entry(o.user).or_default() += o.quantity;
                if self.tiers[t].seated && o.seats.len() != o.quantity as usize {
                    return Err(format!("seated order {id} has {} seats", o.seats.len()));
                }
                for &s in o.seats.iter() {
                    if let Some(other) = seat_owner.insert(s, pos) {
                        return Err(format!("seat #{s} is in orders #{other} and {id}"));
                    }
                    if self.seats.get(s as usize).and_then(|s| s.taken_by) != Some(pos) {
                        return Err(format!("seat #{s} does not point back to order {id}"));
                    }
                }
            }
        }
        for (i, seat) in self.seats.iter().enumerate() {
            let owner = seat_owner.get(&(i as u32)).copied();
            if seat.taken_by != owner {
                return Err(format!(
                    "seat {} is marked taken by {:?}",
                    seat.id, seat.taken_by
                ));
            }
        }
        for (i, tier) in self.tiers.iter().enumerate() {
            if tier.held != held[i] || tier.sold != sold[i] {
                return Err(format!(
                    "tier {} counts held {} sold {}, orders say held {} sold {}",
                    tier.name, tier.held, tier.sold, held[i], sold[i]
                ));
            }
            if u64::from(tier.sold) + u64::from(tier.held) > u64::from(tier.capacity) {
                return Err(format!(
                    "tier {} oversold: sold {} + held {} > capacity {}",
                    tier.name, tier.sold, tier.held, tier.capacity
                ));
            }
        }
        for ticket in &self.tickets {
            let paid = self
                .orders
                .get(ticket.order as usize)
                .is_some_and(|o| o.status == OrderStatus::Paid);
            if paid == (ticket.status == TicketStatus::Void) {
                return Err(format!(
                    "ticket {} validity disagrees with its order",
                    ticket.id
                ));
            }
        }
        per_user.retain(|_, n| *n > 0);
        let mut recorded = self.per_user.clone();
        recorded.retain(|_, n| *n > 0);
        if per_user != recorded {
            return Err("per-user counts disagree with orders".into());
        }
        for (i, r) in self.owed_refunds.iter().enumerate() {
            let indexed = self
                .order_refunds
                .get(&r.order)
                .is_some_and(|list| list.contains(&(i as u32)));
            if r.order as usize >= self.orders.len() || !indexed {
                return Err(format!("refund #{i} is not indexed under its order"));
            }
            if r.amount.amount_minor == 0 {
                return Err(format!("refund #{i} owes nothing"));
            }
        }
        if live != self.live_hold_count {
            return Err("live hold counter disagrees with orders".into());
        }
        if self.status() == Some(EventStatus::Cancelled)
            && live + sold.iter().sum::<u32>() as usize > 0
        {
            return Err("a cancelled event still has live holds or paid orders".into());
        }
        Ok(())
    }

    fn seat_view(&self, seat: &Seat) -> SeatView {
        let state = match seat.taken_by {
            None => SeatState::Available,
            Some(i) => {
                let order = &self.orders[i as usize];
                let order_id = order.id;
                match order.status {
                    OrderStatus::Paid => SeatState::Sold { order_id },
                    _ => SeatState::Held { order_id },
                }
            }
        };
        SeatView {
            seat: seat.id.clone(),
            tier_id: self.tiers[seat.tier as usize].id,
            state,
        }
    }

    /// Position and state of an order.
    fn order_at(&self, id: OrderId) -> Option<(u32, &Order)> {
        let &i = self.order_index.get(&id)?;
        self.orders.get(i as usize).map(|o| (i, o))
    }

    fn order_view(&self, o: &Order) -> OrderView {
        OrderView {
            order_id: o.id,
            user_id: o.user,
            tier_id: self.tiers[o.tier as usize].id,
            quantity: o.quantity,
            seats: o
                .seats
                .iter()
                .map(|&s| self.seats[s as usize].id.clone())
                .collect(),
            status: o.status,
            expires_at: o.expires_at,
            total: o.total,
            tickets: self.order_tickets(o).map(|t| t.id).collect(),
            refunds: self
                .order_index
                .get(&o.id)
                .and_then(|pos| self.order_refunds.get(pos))
                .into_iter()
                .flatten()
                .filter_map(|&r| self.owed_refunds.get(r as usize))
                .map(|r| RefundView {
                    amount: r.amount,
                    reason: r.reason,
                    status: match &r.refund_id {
                        Some(id) => RefundStatus::Refunded {
                            refund_id: id.to_string(),
                        },
                        None => RefundStatus::Owed,
                    },
                })
                .collect(),
        }
    }

    /// The refund owed for this order (at `order` in `orders`) and payment hash, with its
    /// position in `owed_refunds`.
    fn owed_refund(&self, order: u32, payment: u64) -> Option<(u32, &OwedRefund)> {
        self.order_refunds
            .get(&order)?
            .iter()
            .filter_map(|&r| self.owed_refunds.get(r as usize).map(|o| (r, o)))
            .find(|(_, o)| o.payment == payment)
    }

    fn order_tickets<'a>(&'a self, o: &Order) -> impl Iterator<Item = &'a Ticket> + 'a {
        let range = match o.first_ticket {
            Some(first) => first as usize..(first as usize + o.quantity as usize),
            None => 0..0,
        };
        self.tickets.get(range).unwrap_or(&[]).iter()
    }

    fn ticket_view(&self, t: &Ticket) -> TicketView {
        let order = self.orders.get(t.order as usize);
        TicketView {
            ticket_id: t.id,
            order_id: order.map(|o| o.id).unwrap_or(OrderId(uuid::Uuid::nil())),
            user_id: order.map(|o| o.user).unwrap_or(UserId(uuid::Uuid::nil())),
            tier_id: order
                .map(|o| self.tiers[o.tier as usize].id)
                .unwrap_or(TierId(uuid::Uuid::nil())),
            seat: t.seat.map(|s| self.seats[s as usize].id.clone()),
            status: t.status,
        }
    }
}

impl Tier {
    fn view(&self) -> TierView {
        TierView {
            tier_id: self.id,
            name: self.name.clone(),
            price: self.price,
            capacity: self.capacity,
            sold: self.sold,
            held: self.held,
            available: self.available(),
            seated: self.seated,
        }
    }

    fn available(&self) -> u32 {
        self.capacity
            .saturating_sub(self.sold.saturating_add(self.held))
    }
}

impl crate::testing::Testable for Inventory {
    fn is_command_record(event: &InventoryEvent) -> bool {
        matches!(event, InventoryEvent::CommandAccepted(_))
    }

    fn ends_decision(event: &InventoryEvent) -> bool {
        event.ends_decision()
    }

    fn without_record(event: &InventoryEvent) -> InventoryEvent {
        let mut event = event.clone();
        match &mut event {
            InventoryEvent::HoldPlaced(e) => e.command = None,
            InventoryEvent::OrderConfirmed(e) => e.command = None,
            _ => {}
        }
        event
    }

    fn audit(&self) -> Result<(), String> {
        self.check_invariants()
    }
}
