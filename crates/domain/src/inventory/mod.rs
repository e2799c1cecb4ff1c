//! One ticketed event's inventory: its details, tiers, seat map, orders and tickets.
//!
//! [`Inventory`] is the state of stream `inventory-<event id>`. It keeps indexes (per-tier
//! counters, seat id -> seat, order id -> order, ticket id -> ticket, user id -> buyer and
//! their count) so that deciding and folding a hold costs in proportion to the request,
//! never to the size of the seat map or the number of orders. An actor keeps it in memory
//! while its event sells, so it stores each id once and indexes positions only.

mod command;
mod decide;
mod event;
mod evolve;
mod outcome;

use std::collections::HashMap;
use std::num::NonZeroU64;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

pub use command::{
    DetailsInput, DetailsPatch, HoldRequest, InventoryCommand, MAX_SECRET_LEN, MIN_SECRET_LEN,
    PaymentInput, SeatInput, Selection, TicketSeed, TierKindInput,
};
pub use decide::limits;
pub use event::{
    DetailsUpdated, DoorStaffChanged, EventCancelled, EventCreated, EventDetails, EventPublished,
    HoldExpired, HoldPlaced, HoldReleased, InventoryCommandAccepted, InventoryEvent, IssuedTicket,
    OrderCancelled, OrderConfirmed, PaymentRefundOwed, PerUserLimitSet, RefundIssued, RefundReason,
    SalesWindowSet, SeatAssignment, SeatsAdded, TicketCheckedIn, TierAdded, TierRenamed,
    TierRepriced, TierResized,
};
pub use outcome::InventoryOutcome;

use crate::idempotency::Ledger;
use crate::ids::{EventId, OrderId, SeatId, TicketId, TierId, UserId};
use crate::index::{Index, hash_of};
use crate::money::{Currency, Money};

/// The state of one event's inventory, folded from its stream.
///
/// An inventory actor keeps this in memory for as long as its event sells, so it is kept
/// compact: ids are stored once, in the vectors, and the indexes over them hold positions
/// only (see [`Inventory::shrink_to_fit`] for a state kept idle).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Inventory {
    /// The event itself; `None` until it is created.
    event: Option<EventInfo>,
    /// Tiers in the order they were added (read views list them in this order).
    tiers: Vec<Tier>,
    /// Tier id -> position in `tiers` (at most [`limits::MAX_TIERS`]).
    tier_index: HashMap<TierId, usize>,
    /// Seats in the order they were added.
    seats: Vec<Seat>,
    /// Seat id -> position in `seats`: seat lookups without scanning the map.
    seat_index: Index,
    /// Every order ever placed, in placement order (closed orders stay: payments may still
    /// arrive for them, and retries recall them).
    orders: Vec<Order>,
    /// Order id -> position in `orders`.
    order_index: Index,
    /// The seats of seated orders, one run per order: its number of seats, then their
    /// positions in `seats` (general orders, most of them, take no room here).
    order_seats: Vec<u32>,
    /// How many orders are live holds (for metrics and tests, without a scan).
    live_hold_count: usize,
    /// Every ticket ever issued, in issue order; an order's tickets are contiguous.
    tickets: Vec<Ticket>,
    /// Ticket id -> position in `tickets`.
    ticket_index: Index,
    /// When tickets were checked in, in check-in order (see `Ticket::check_in`).
    check_ins: Vec<DateTime<Utc>>,
    /// Every user who placed an order, once (orders name them by position), with the
    /// tickets they have against the per-user limit.
    buyers: Vec<Buyer>,
    /// User id -> position in `buyers`.
    buyer_index: Index,
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

/// A user who placed an order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Buyer {
    /// The user's id.
    id: UserId,
    /// Tickets counted against the per-user limit: held plus valid.
    tickets: u32,
}

/// Money owed back for one payment of one order.
#[derive(Clone, Debug, PartialEq, Eq)]
struct OwedRefund {
    /// Position of the order in `orders`.
    order: u32,
    /// Hash of the payment reference to refund (see `decide::payment_hash`).
    payment: NonZeroU64,
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
    /// Who may check tickets in at the door (besides the organizer and admins).
    door_staff: Vec<UserId>,
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

/// An order, in 64 bytes: an actor keeps every order of its event.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Order {
    /// The order's id.
    id: OrderId,
    /// When the hold lapses unless paid.
    expires_at: DateTime<Utc>,
    /// What the order costs (fixed when held), in minor units of `currency`.
    total_minor: u64,
    /// Hash of the payment reference that paid it, to recognise a repeated payment
    /// callback without keeping the reference itself.
    payment: Option<NonZeroU64>,
    /// Position of the buyer in `buyers`.
    buyer: u32,
    /// Position of its run in `order_seats`, or [`NONE`] for a general tier.
    seats: u32,
    /// Position of its first ticket in `tickets` once paid, else [`NONE`].
    first_ticket: u32,
    /// Number of tickets (at most [`limits::MAX_TICKETS_PER_ORDER`] when decided).
    quantity: u16,
    /// Position of its tier in `tiers` (at most [`limits::MAX_TIERS`]).
    tier: u16,
    /// Held, paid, released, expired or cancelled.
    status: OrderStatus,
    /// The currency of `total_minor`.
    currency: Currency,
}

/// No position, in a `u32` position field (positions stay below [`MAX_RECORDED_INDEX`]).
const NONE: u32 = u32::MAX;

impl Order {
    fn total(&self) -> Money {
        Money {
            amount_minor: self.total_minor,
            currency: self.currency,
        }
    }

    fn first_ticket(&self) -> Option<u32> {
        (self.first_ticket != NONE).then_some(self.first_ticket)
    }

    fn quantity(&self) -> u32 {
        u32::from(self.quantity)
    }

    fn tier(&self) -> usize {
        usize::from(self.tier)
    }
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

/// An issued ticket, in 24 bytes. Its seat is its order's seat at the same rank, and it is
/// void exactly when its order is no longer paid, so neither is kept here.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Ticket {
    /// The ticket's id.
    id: TicketId,
    /// Position of its order in `orders`.
    order: u32,
    /// Position in `check_ins` of when it was checked in at the door, or [`NONE`] (tickets
    /// are checked in only once the sale is over: no room for a time until then).
    check_in: u32,
}

// What an actor keeps per order and per ticket: a regression here is paid for every order of
// every event in memory.
const _: () = assert!(std::mem::size_of::<Order>() == 64);
const _: () = assert!(std::mem::size_of::<Ticket>() == 24);

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

    /// The event's door staff: who may check its tickets in, besides its organizer and
    /// admins.
    pub fn door_staff(&self) -> &[UserId] {
        self.event.as_ref().map_or(&[], |e| e.door_staff.as_slice())
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
        self.seat_pos(id)
            .map(|i| self.seat_view(&self.seats[i as usize]))
    }

    /// Every seat and its state, in the order they were added.
    pub fn seats(&self) -> impl Iterator<Item = SeatView> + '_ {
        self.seats.iter().map(|s| self.seat_view(s))
    }

    /// One order.
    pub fn order(&self, id: OrderId) -> Option<OrderView> {
        self.order_at(id).map(|(pos, o)| self.order_view(pos, o))
    }

    /// Every order (in no particular order).
    pub fn orders(&self) -> impl Iterator<Item = OrderView> + '_ {
        self.orders
            .iter()
            .enumerate()
            .map(|(pos, o)| self.order_view(pos as u32, o))
    }

    /// One ticket.
    pub fn ticket(&self, id: TicketId) -> Option<TicketView> {
        self.ticket_pos(&id)
            .map(|i| self.ticket_view(i, &self.tickets[i as usize]))
    }

    /// Every ticket, in issue order.
    pub fn tickets(&self) -> impl Iterator<Item = TicketView> + '_ {
        self.tickets
            .iter()
            .enumerate()
            .map(|(i, t)| self.ticket_view(i as u32, t))
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

    /// Whether the event is cancelled but some of its orders are still live: the platform
    /// then cancels them with `CancelRemainingOrders`, a step at a time.
    pub fn cancellation_pending(&self) -> bool {
        self.status() == Some(EventStatus::Cancelled)
            && (self.live_hold_count > 0 || self.tiers.iter().any(|t| t.sold > 0))
    }

    /// Whether some money is owed back and not yet refunded (a cancelled paid order, a
    /// payment that bought nothing). Walks the refunds owed: for recovery, not each command.
    pub fn has_unpaid_refunds(&self) -> bool {
        self.owed_refunds.iter().any(|r| r.refund_id.is_none())
    }

    /// Whether the order's stream knows this payment: it paid the order, or it is owed back
    /// (refunded or not). A payment the provider took that its order does not know was
    /// never confirmed (a crash between the charge and the confirmation).
    pub fn knows_payment(&self, order: OrderId, payment_ref: &str) -> bool {
        let Some((pos, o)) = self.order_at(order) else {
            return false;
        };
        let hash = decide::payment_hash(payment_ref);
        o.payment == Some(hash) || self.owed_refund(pos, hash).is_some()
    }

    /// Tickets a user currently has against the per-user limit: held plus valid.
    pub fn tickets_of_user(&self, user: UserId) -> u32 {
        self.buyer_pos(&user)
            .map_or(0, |b| self.buyers[b as usize].tickets)
    }

    /// How many idempotency keys this stream has decided.
    pub fn decided_commands(&self) -> usize {
        self.ledger.len()
    }

    /// Gives back the memory the state does not need now (spare capacity of its vectors
    /// and indexes), at the price of regrowing them on the next decisions: for an actor
    /// after its recovery, or kept idle. Changes nothing it answers.
    pub fn shrink_to_fit(&mut self) {
        self.tiers.shrink_to_fit();
        self.tier_index.shrink_to_fit();
        self.seats.shrink_to_fit();
        let seats = &self.seats;
        self.seat_index
            .shrink_to_fit(|p| hash_of(&seats[p as usize].id));
        self.orders.shrink_to_fit();
        let orders = &self.orders;
        self.order_index
            .shrink_to_fit(|p| hash_of(&orders[p as usize].id));
        self.order_seats.shrink_to_fit();
        self.tickets.shrink_to_fit();
        let tickets = &self.tickets;
        self.ticket_index
            .shrink_to_fit(|p| hash_of(&tickets[p as usize].id));
        self.check_ins.shrink_to_fit();
        self.buyers.shrink_to_fit();
        let buyers = &self.buyers;
        self.buyer_index
            .shrink_to_fit(|p| hash_of(&buyers[p as usize].id));
        self.ledger.shrink_to_fit();
        self.refunds.shrink_to_fit();
        self.owed_refunds.shrink_to_fit();
        self.order_refunds.shrink_to_fit();
    }

    /// Checks every invariant by scanning the whole state (for audits and tests; far too
    /// slow for each command). Returns the first violation found.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut held = vec![0u32; self.tiers.len()];
        let mut sold = vec![0u32; self.tiers.len()];
        let mut per_user: HashMap<UserId, u32> = HashMap::new();
        let mut seat_owner: HashMap<u32, u32> = HashMap::new();
        let mut live = 0;
        let indexed = [
            ("order", self.order_index.len(), self.orders.len()),
            ("ticket", self.ticket_index.len(), self.tickets.len()),
            ("seat", self.seat_index.len(), self.seats.len()),
            ("buyer", self.buyer_index.len(), self.buyers.len()),
        ];
        for (what, index, items) in indexed {
            if index != items {
                return Err(format!("{what} index and {what}s differ in size"));
            }
        }
        for (i, b) in self.buyers.iter().enumerate() {
            if self.buyer_pos(&b.id) != Some(i as u32) {
                return Err(format!("buyer {} is not indexed at its position", b.id));
            }
        }
        for (i, s) in self.seats.iter().enumerate() {
            if self.seat_pos(&s.id) != Some(i as u32) {
                return Err(format!("seat {} is not indexed at its position", s.id));
            }
        }
        for (i, t) in self.tickets.iter().enumerate() {
            if self.ticket_pos(&t.id) != Some(i as u32) {
                return Err(format!("ticket {} is not indexed at its position", t.id));
            }
        }
        for (i, o) in self.orders.iter().enumerate() {
            let id = &o.id;
            let pos = i as u32;
            if self.order_pos(id) != Some(pos) {
                return Err(format!("order {id} is not indexed at its position"));
            }
            let t = o.tier();
            if t >= self.tiers.len() {
                return Err(format!("order {id} names a missing tier"));
            }
            if o.buyer as usize >= self.buyers.len() {
                return Err(format!("order {id} names a missing buyer"));
            }
            let counts = match o.status {
                OrderStatus::Held => {
                    live += 1;
                    held[t] += o.quantity();
                    true
                }
                OrderStatus::Paid => {
                    sold[t] += o.quantity();
                    true
                }
                _ => false,
            };
            if counts {
                *per_user.entry(self.buyer_of(o)).or_default() += o.quantity();
                let seats = self.seats_of(o);
                if self.tiers[t].seated && seats.len() != o.quantity as usize {
                    return Err(format!("seated order {id} has {} seats", seats.len()));
                }
                for &s in seats {
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
        for (i, ticket) in self.tickets.iter().enumerate() {
            let issued = self.orders.get(ticket.order as usize).is_some_and(|o| {
                o.first_ticket()
                    .is_some_and(|first| (first..first + o.quantity()).contains(&(i as u32)))
            });
            if !issued {
                return Err(format!("ticket {} is not among its order's", ticket.id));
            }
        }
        per_user.retain(|_, n| *n > 0);
        let recorded: HashMap<UserId, u32> = self
            .buyers
            .iter()
            .filter(|b| b.tickets > 0)
            .map(|b| (b.id, b.tickets))
            .collect();
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
        // A cancelled event may still have live orders: its cancellation cancels them a
        // step at a time (see `cancellation_pending`), and nothing sells meanwhile.
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

    /// Position of an order.
    fn order_pos(&self, id: &OrderId) -> Option<u32> {
        self.order_index
            .find(hash_of(id), |p| self.orders[p as usize].id == *id)
    }

    /// Position and state of an order.
    fn order_at(&self, id: OrderId) -> Option<(u32, &Order)> {
        let i = self.order_pos(&id)?;
        self.orders.get(i as usize).map(|o| (i, o))
    }

    /// Position of a ticket.
    fn ticket_pos(&self, id: &TicketId) -> Option<u32> {
        self.ticket_index
            .find(hash_of(id), |p| self.tickets[p as usize].id == *id)
    }

    /// Position of a seat.
    fn seat_pos(&self, id: &SeatId) -> Option<u32> {
        self.seat_index
            .find(hash_of(id), |p| self.seats[p as usize].id == *id)
    }

    /// Position of a user who placed an order.
    fn buyer_pos(&self, id: &UserId) -> Option<u32> {
        self.buyer_index
            .find(hash_of(id), |p| self.buyers[p as usize].id == *id)
    }

    /// The user who placed an order.
    fn buyer_of(&self, o: &Order) -> UserId {
        self.buyers
            .get(o.buyer as usize)
            .map_or(UserId(uuid::Uuid::nil()), |b| b.id)
    }

    /// Positions in `seats` of an order's seats (none for a general tier).
    fn seats_of(&self, o: &Order) -> &[u32] {
        if o.seats == NONE {
            return &[];
        }
        let start = o.seats as usize;
        let len = self.order_seats.get(start).copied().unwrap_or(0) as usize;
        self.order_seats
            .get(start + 1..start + 1 + len)
            .unwrap_or(&[])
    }

    fn order_view(&self, pos: u32, o: &Order) -> OrderView {
        OrderView {
            order_id: o.id,
            user_id: self.buyer_of(o),
            tier_id: self.tiers[o.tier()].id,
            quantity: o.quantity(),
            seats: self
                .seats_of(o)
                .iter()
                .map(|&s| self.seats[s as usize].id.clone())
                .collect(),
            status: o.status,
            expires_at: o.expires_at,
            total: o.total(),
            tickets: self.order_tickets(o).map(|t| t.id).collect(),
            refunds: self
                .order_refunds
                .get(&pos)
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
    fn owed_refund(&self, order: u32, payment: NonZeroU64) -> Option<(u32, &OwedRefund)> {
        self.order_refunds
            .get(&order)?
            .iter()
            .filter_map(|&r| self.owed_refunds.get(r as usize).map(|o| (r, o)))
            .find(|(_, o)| o.payment == payment)
    }

    fn order_tickets<'a>(&'a self, o: &Order) -> impl Iterator<Item = &'a Ticket> + 'a {
        let range = match o.first_ticket() {
            Some(first) => first as usize..(first as usize + o.quantity as usize),
            None => 0..0,
        };
        self.tickets.get(range).unwrap_or(&[]).iter()
    }

    /// Valid, checked in, or void (its order is no longer paid).
    fn ticket_status(&self, t: &Ticket) -> TicketStatus {
        let paid = self
            .orders
            .get(t.order as usize)
            .is_some_and(|o| o.status == OrderStatus::Paid);
        match self.check_ins.get(t.check_in as usize) {
            _ if !paid => TicketStatus::Void,
            Some(&at) => TicketStatus::CheckedIn { at },
            None => TicketStatus::Valid,
        }
    }

    /// The seat of the ticket at `pos`: its order's seat of the same rank.
    fn ticket_seat(&self, pos: u32, t: &Ticket) -> Option<&SeatId> {
        let order = self.orders.get(t.order as usize)?;
        let rank = pos.checked_sub(order.first_ticket()?)?;
        let &seat = self.seats_of(order).get(rank as usize)?;
        self.seats.get(seat as usize).map(|s| &s.id)
    }

    fn ticket_view(&self, pos: u32, t: &Ticket) -> TicketView {
        let order = self.orders.get(t.order as usize);
        TicketView {
            ticket_id: t.id,
            order_id: order.map(|o| o.id).unwrap_or(OrderId(uuid::Uuid::nil())),
            user_id: order
                .map(|o| self.buyer_of(o))
                .unwrap_or(UserId(uuid::Uuid::nil())),
            tier_id: order
                .map(|o| self.tiers[o.tier()].id)
                .unwrap_or(TierId(uuid::Uuid::nil())),
            seat: self.ticket_seat(pos, t).cloned(),
            status: self.ticket_status(t),
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
