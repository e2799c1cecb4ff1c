//! Folding inventory events into state. Events are facts: folding never refuses one, and an
//! event that names something unknown (which `decide` never produces) is ignored rather
//! than allowed to panic; counters saturate rather than overflow for the same reason.

use super::decide::payment_hash;
use super::event::*;
use super::outcome::InventoryOutcome;
use std::num::NonZeroU64;

use super::{
    Buyer, EventInfo, EventStatus, Inventory, NONE, Order, OrderStatus, OwedRefund, Recorded,
    RecordedKind, RecordedRefund, SalesWindow, Seat, Ticket, Tier,
};
use crate::idempotency::CommandStamp;
use crate::ids::{OrderId, SeatId, UserId};
use crate::index::hash_of;
use crate::money::Money;

impl Inventory {
    pub(super) fn apply(&mut self, event: &InventoryEvent) {
        use InventoryEvent as E;
        match event {
            E::EventCreated(e) => {
                self.event = Some(EventInfo {
                    id: e.event_id,
                    organizer: e.organizer,
                    details: e.details.clone(),
                    status: EventStatus::Draft,
                    sales_window: None,
                    per_user_limit: None,
                    door_staff: Vec::new(),
                });
            }
            E::DetailsUpdated(e) => {
                if let Some(info) = &mut self.event {
                    info.details = e.details.clone();
                }
            }
            E::SalesWindowSet(e) => {
                if let Some(info) = &mut self.event {
                    info.sales_window = Some(SalesWindow {
                        opens_at: e.opens_at,
                        closes_at: e.closes_at,
                    });
                }
            }
            E::PerUserLimitSet(e) => {
                if let Some(info) = &mut self.event {
                    info.per_user_limit = e.limit;
                }
            }
            E::EventPublished(_) => {
                if let Some(info) = &mut self.event {
                    info.status = EventStatus::Published;
                }
            }
            E::EventCancelled(_) => {
                if let Some(info) = &mut self.event {
                    info.status = EventStatus::Cancelled;
                }
            }
            E::TierAdded(e) => {
                if !self.tier_index.contains_key(&e.tier_id) {
                    self.tier_index.insert(e.tier_id, self.tiers.len());
                    self.tiers.push(Tier {
                        id: e.tier_id,
                        name: e.name.clone(),
                        price: e.price,
                        capacity: e.capacity,
                        sold: 0,
                        held: 0,
                        seated: e.seated,
                    });
                }
            }
            E::TierRenamed(e) => {
                if let Some(t) = self.tier_mut(e.tier_id) {
                    t.name = e.name.clone();
                }
            }
            E::TierRepriced(e) => {
                if let Some(t) = self.tier_mut(e.tier_id) {
                    t.price = e.price;
                }
            }
            E::TierResized(e) => {
                if let Some(t) = self.tier_mut(e.tier_id) {
                    t.capacity = e.capacity;
                }
            }
            E::SeatsAdded(e) => {
                self.seats.reserve(e.seats.len());
                let seats = &self.seats;
                self.seat_index
                    .reserve(e.seats.len(), |p| hash_of(&seats[p as usize].id));
                for a in &e.seats {
                    let Some(&t) = self.tier_index.get(&a.tier_id) else {
                        continue;
                    };
                    if self.seat_pos(&a.seat).is_some() {
                        continue;
                    }
                    let Ok(pos) = u32::try_from(self.seats.len()) else {
                        continue;
                    };
                    self.seats.push(Seat {
                        id: a.seat.clone(),
                        tier: t as u32,
                        taken_by: None,
                    });
                    let seats = &self.seats;
                    self.seat_index
                        .insert(hash_of(&a.seat), pos, |p| hash_of(&seats[p as usize].id));
                    self.tiers[t].capacity = self.tiers[t].capacity.saturating_add(1);
                }
            }
            E::HoldPlaced(e) => {
                let placed = self.place(e);
                if let (Some(stamp), Some(pos)) = (&e.command, placed) {
                    self.record_stamp(stamp, e.user_id, pos, RecordedKind::Held);
                }
            }
            E::HoldReleased(e) => self.close_hold(e.order_id, OrderStatus::Released),
            E::HoldExpired(e) => self.close_hold(e.order_id, OrderStatus::Expired),
            E::OrderConfirmed(e) => {
                let order = self.order_pos(&e.order_id);
                if let Some(pos) = order {
                    self.confirm(pos, e);
                }
                if let (Some(stamp), Some(pos)) = (&e.command, order) {
                    self.record_stamp(stamp, e.user_id, pos, RecordedKind::Confirmed);
                }
            }
            // A refund owed changes no stock; it is remembered so that it is refunded once.
            E::PaymentRefundOwed(e) => {
                if let Some(pos) = self.order_pos(&e.order_id) {
                    self.owe(pos, payment_hash(&e.payment_ref), e.amount, e.reason);
                }
            }
            E::OrderCancelled(e) => {
                let paid_by = self
                    .order_pos(&e.order_id)
                    .and_then(|pos| Some((pos, self.orders[pos as usize].payment?)));
                if let (Some(amount), Some((pos, payment))) = (e.refund, paid_by) {
                    self.owe(pos, payment, amount, e.reason);
                }
                self.cancel(e.order_id);
            }
            E::RefundIssued(e) => {
                let Some(pos) = self.order_pos(&e.order_id) else {
                    return;
                };
                if let Some((r, owed)) = self.owed_refund(pos, payment_hash(&e.payment_ref))
                    && owed.refund_id.is_none()
                {
                    self.owed_refunds[r as usize].refund_id = Some(e.refund_id.as_str().into());
                }
            }
            E::TicketCheckedIn(e) => {
                if let (Some(i), Ok(at)) = (
                    self.ticket_pos(&e.ticket_id),
                    u32::try_from(self.check_ins.len()),
                ) {
                    let ticket = &mut self.tickets[i as usize];
                    match self.check_ins.get_mut(ticket.check_in as usize) {
                        Some(time) => *time = e.at,
                        None => {
                            ticket.check_in = at;
                            self.check_ins.push(e.at);
                        }
                    }
                }
            }
            E::DoorStaffAssigned(e) => {
                if let Some(info) = &mut self.event
                    && !info.door_staff.contains(&e.user_id)
                {
                    info.door_staff.push(e.user_id);
                }
            }
            E::DoorStaffUnassigned(e) => {
                if let Some(info) = &mut self.event {
                    info.door_staff.retain(|u| *u != e.user_id);
                }
            }
            E::CommandAccepted(e) => {
                // An outcome naming something the state does not know cannot be recalled;
                // decide never records one, and a retry then decides afresh.
                if let Some(recorded) = self.compact(&e.outcome) {
                    self.ledger.record(&e.record, recorded);
                }
            }
        }
    }

    /// Records the decision an event carries the record of; `kind` is what such an event
    /// answers for its order (at `order` in `orders`): `Held` for a hold, `Confirmed` for a
    /// confirmation, exactly as a separate `CommandAccepted` with that outcome would have.
    fn record_stamp(&mut self, stamp: &CommandStamp, user: UserId, order: u32, kind: RecordedKind) {
        if let Some(recorded) = Recorded::new(kind, order) {
            self.ledger.record_key(
                &stamp.actor_of(user),
                &stamp.key,
                stamp.fingerprint,
                recorded,
            );
        }
    }

    /// The compact form of an outcome, naming positions in this state.
    fn compact(&mut self, outcome: &InventoryOutcome) -> Option<Recorded> {
        use InventoryOutcome as O;
        use RecordedKind as K;
        let order = |id: &OrderId| self.order_pos(id);
        match outcome {
            O::EventCreated { .. } => Recorded::new(K::EventCreated, 0),
            O::Accepted => Recorded::new(K::Accepted, 0),
            O::EventCancelled { orders_cancelled } => {
                Recorded::new(K::EventCancelled, *orders_cancelled)
            }
            O::Held { order_id, .. } => Recorded::new(K::Held, order(order_id)?),
            O::Confirmed { order_id, .. } => Recorded::new(K::Confirmed, order(order_id)?),
            O::Released { order_id } => Recorded::new(K::Released, order(order_id)?),
            O::Expired { order_id } => Recorded::new(K::Expired, order(order_id)?),
            O::OrderCancelled { order_id, .. } => {
                Recorded::new(K::OrderCancelled, order(order_id)?)
            }
            O::Refunded {
                order_id,
                refund_id,
                ..
            } => {
                let pos = order(order_id)?;
                let index = self.order_refunds.get(&pos)?.iter().copied().find(|&r| {
                    self.owed_refunds
                        .get(r as usize)
                        .and_then(|o| o.refund_id.as_deref())
                        == Some(refund_id.as_str())
                })?;
                Recorded::new(K::Refunded, index)
            }
            O::CheckedIn { ticket_id, .. } => {
                Recorded::new(K::CheckedIn, self.ticket_pos(ticket_id)?)
            }
            O::RefundOwed {
                order_id,
                amount,
                reason,
            } => {
                let order = order(order_id)?;
                let index = u32::try_from(self.refunds.len()).ok()?;
                let recorded = Recorded::new(K::RefundOwed, index)?;
                self.refunds.push(RecordedRefund {
                    order,
                    amount: *amount,
                    reason: *reason,
                });
                Some(recorded)
            }
        }
    }

    /// Records money owed back for a payment of the order at `order`; one refund per
    /// payment (a payment is only ever paid back once), and nothing for a free order.
    fn owe(&mut self, order: u32, payment: NonZeroU64, amount: Money, reason: RefundReason) {
        if amount.amount_minor == 0 || self.owed_refund(order, payment).is_some() {
            return;
        }
        let Ok(index) = u32::try_from(self.owed_refunds.len()) else {
            return;
        };
        self.owed_refunds.push(OwedRefund {
            order,
            payment,
            amount,
            reason,
            refund_id: None,
        });
        self.order_refunds.entry(order).or_default().push(index);
    }

    fn tier_mut(&mut self, id: crate::ids::TierId) -> Option<&mut Tier> {
        let i = *self.tier_index.get(&id)?;
        self.tiers.get_mut(i)
    }

    /// Places a hold as a new order; returns its position, or `None` for a hold that names
    /// what cannot be (ignored).
    fn place(&mut self, e: &HoldPlaced) -> Option<u32> {
        let &t = self.tier_index.get(&e.tier_id)?;
        // Decide never places more (see `limits`); such an event is ignored like any other
        // that names what cannot be.
        let (Ok(tier), Ok(quantity)) = (u16::try_from(t), u16::try_from(e.quantity)) else {
            return None;
        };
        if self.order_pos(&e.order_id).is_some() {
            return None;
        }
        let pos = u32::try_from(self.orders.len()).ok()?;
        let seats = if e.seats.is_empty() {
            NONE
        } else {
            self.place_seats(pos, &e.seats)
        };
        let buyer = self.buyer(e.user_id);
        let counted = &mut self.buyers[buyer as usize].tickets;
        *counted = counted.saturating_add(e.quantity);
        self.tiers[t].held = self.tiers[t].held.saturating_add(e.quantity);
        self.live_hold_count += 1;
        self.orders.push(Order {
            id: e.order_id,
            expires_at: e.expires_at,
            total_minor: e.total.amount_minor,
            payment: None,
            buyer,
            seats,
            first_ticket: NONE,
            quantity,
            tier,
            status: OrderStatus::Held,
            currency: e.total.currency,
        });
        let orders = &self.orders;
        self.order_index.insert(hash_of(&e.order_id), pos, |p| {
            hash_of(&orders[p as usize].id)
        });
        Some(pos)
    }

    /// Takes the named seats for the order at `pos`; returns where its run of seats starts
    /// in `order_seats` (unknown seats are left out).
    fn place_seats(&mut self, pos: u32, seats: &[SeatId]) -> u32 {
        let Ok(start) = u32::try_from(self.order_seats.len()) else {
            return NONE;
        };
        self.order_seats.push(0);
        for seat in seats {
            if let Some(s) = self.seat_pos(seat) {
                self.seats[s as usize].taken_by = Some(pos);
                self.order_seats.push(s);
            }
        }
        let count = self.order_seats.len() - start as usize - 1;
        self.order_seats[start as usize] = count as u32;
        start
    }

    /// Position of a user in `buyers`, added on their first order.
    fn buyer(&mut self, id: UserId) -> u32 {
        if let Some(b) = self.buyer_pos(&id) {
            return b;
        }
        // Fewer buyers than orders, and orders are counted in `u32`.
        let pos = self.buyers.len() as u32;
        self.buyers.push(Buyer { id, tickets: 0 });
        let buyers = &self.buyers;
        self.buyer_index
            .insert(hash_of(&id), pos, |p| hash_of(&buyers[p as usize].id));
        pos
    }

    /// Ends a live hold without payment: its tickets go back to stock.
    fn close_hold(&mut self, order_id: OrderId, status: OrderStatus) {
        let Some(pos) = self.order_pos(&order_id) else {
            return;
        };
        let order = &self.orders[pos as usize];
        if order.status != OrderStatus::Held {
            return;
        }
        let (tier, quantity, buyer) = (order.tier(), order.quantity(), order.buyer);
        self.free_seats(pos);
        self.orders[pos as usize].status = status;
        self.tiers[tier].held = self.tiers[tier].held.saturating_sub(quantity);
        self.live_hold_count = self.live_hold_count.saturating_sub(1);
        self.uncount(buyer, quantity);
    }

    /// Gives the seats of the order at `pos` back.
    fn free_seats(&mut self, pos: u32) {
        let order = &self.orders[pos as usize];
        if order.seats == NONE {
            return;
        }
        let start = order.seats as usize;
        let len = self.order_seats.get(start).copied().unwrap_or(0) as usize;
        for &s in self
            .order_seats
            .get(start + 1..start + 1 + len)
            .unwrap_or(&[])
        {
            self.seats[s as usize].taken_by = None;
        }
    }

    /// Pays the order at `pos` (if it is a live hold) and issues its tickets.
    fn confirm(&mut self, pos: u32, e: &OrderConfirmed) {
        let order = &mut self.orders[pos as usize];
        if order.status != OrderStatus::Held {
            return;
        }
        let Ok(first) = u32::try_from(self.tickets.len()) else {
            return;
        };
        order.status = OrderStatus::Paid;
        order.first_ticket = first;
        order.payment = Some(payment_hash(&e.payment_ref));
        let tier = order.tier();
        let quantity = order.quantity();
        self.tiers[tier].held = self.tiers[tier].held.saturating_sub(quantity);
        self.tiers[tier].sold = self.tiers[tier].sold.saturating_add(quantity);
        self.live_hold_count = self.live_hold_count.saturating_sub(1);
        // An order's tickets are its quantity: an event that issued another number (which
        // decide refuses) issues that many, no more, so that they stay contiguous.
        self.tickets.reserve(quantity as usize);
        let tickets = &self.tickets;
        self.ticket_index
            .reserve(quantity as usize, |p| hash_of(&tickets[p as usize].id));
        for i in 0..quantity {
            let Some(t) = e.tickets.get(i as usize) else {
                break;
            };
            self.tickets.push(Ticket {
                id: t.ticket_id,
                order: pos,
                check_in: NONE,
            });
            let tickets = &self.tickets;
            self.ticket_index
                .insert(hash_of(&t.ticket_id), first + i, |p| {
                    hash_of(&tickets[p as usize].id)
                });
        }
    }

    fn cancel(&mut self, order_id: OrderId) {
        let Some(pos) = self.order_pos(&order_id) else {
            return;
        };
        let order = &self.orders[pos as usize];
        match order.status {
            OrderStatus::Held => self.close_hold(order_id, OrderStatus::Cancelled),
            OrderStatus::Paid => {
                let (tier, quantity, buyer) = (order.tier(), order.quantity(), order.buyer);
                self.free_seats(pos);
                // Its tickets are void from now on: they follow their order's status.
                self.tiers[tier].sold = self.tiers[tier].sold.saturating_sub(quantity);
                self.uncount(buyer, quantity);
                self.orders[pos as usize].status = OrderStatus::Cancelled;
            }
            _ => {}
        }
    }

    fn uncount(&mut self, buyer: u32, quantity: u32) {
        if let Some(b) = self.buyers.get_mut(buyer as usize) {
            b.tickets = b.tickets.saturating_sub(quantity);
        }
    }
}
