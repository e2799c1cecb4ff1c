//! Folding inventory events into state. Events are facts: folding never refuses one, and an
//! event that names something unknown (which `decide` never produces) is ignored rather
//! than allowed to panic; counters saturate rather than overflow for the same reason.

use super::decide::payment_hash;
use super::event::*;
use super::outcome::InventoryOutcome;
use super::{
    EventInfo, EventStatus, Inventory, Order, OrderStatus, OwedRefund, Recorded, RecordedKind,
    RecordedRefund, SalesWindow, Seat, Ticket, TicketStatus, Tier,
};
use crate::idempotency::CommandStamp;
use crate::ids::{OrderId, UserId};
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
                self.seat_index.reserve(e.seats.len());
                for a in &e.seats {
                    let Some(&t) = self.tier_index.get(&a.tier_id) else {
                        continue;
                    };
                    if self.seat_index.contains_key(&a.seat) {
                        continue;
                    }
                    let Ok(pos) = u32::try_from(self.seats.len()) else {
                        continue;
                    };
                    self.seat_index.insert(a.seat.clone(), pos);
                    self.seats.push(Seat {
                        id: a.seat.clone(),
                        tier: t as u32,
                        taken_by: None,
                    });
                    self.tiers[t].capacity = self.tiers[t].capacity.saturating_add(1);
                }
            }
            E::HoldPlaced(e) => {
                self.place(e);
                if let Some(stamp) = &e.command {
                    self.record_stamp(stamp, e.user_id, e.order_id, RecordedKind::Held);
                }
            }
            E::HoldReleased(e) => self.close_hold(e.order_id, OrderStatus::Released),
            E::HoldExpired(e) => self.close_hold(e.order_id, OrderStatus::Expired),
            E::OrderConfirmed(e) => {
                self.confirm(e);
                if let Some(stamp) = &e.command {
                    self.record_stamp(stamp, e.user_id, e.order_id, RecordedKind::Confirmed);
                }
            }
            // A refund owed changes no stock; it is remembered so that it is refunded once.
            E::PaymentRefundOwed(e) => {
                if let Some(&pos) = self.order_index.get(&e.order_id) {
                    self.owe(pos, payment_hash(&e.payment_ref), e.amount, e.reason);
                }
            }
            E::OrderCancelled(e) => {
                let paid_by = self
                    .order_index
                    .get(&e.order_id)
                    .and_then(|&pos| Some((pos, self.orders[pos as usize].payment?)));
                if let (Some(amount), Some((pos, payment))) = (e.refund, paid_by) {
                    self.owe(pos, payment, amount, e.reason);
                }
                self.cancel(e.order_id);
            }
            E::RefundIssued(e) => {
                let Some(&pos) = self.order_index.get(&e.order_id) else {
                    return;
                };
                if let Some((r, owed)) = self.owed_refund(pos, payment_hash(&e.payment_ref))
                    && owed.refund_id.is_none()
                {
                    self.owed_refunds[r as usize].refund_id = Some(e.refund_id.as_str().into());
                }
            }
            E::TicketCheckedIn(e) => {
                if let Some(&i) = self.ticket_index.get(&e.ticket_id) {
                    self.tickets[i as usize].status = TicketStatus::CheckedIn { at: e.at };
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
    /// answers for its order (`Held` for a hold, `Confirmed` for a confirmation), exactly as
    /// a separate `CommandAccepted` with that outcome would have.
    fn record_stamp(
        &mut self,
        stamp: &CommandStamp,
        user: UserId,
        order_id: OrderId,
        kind: RecordedKind,
    ) {
        let recorded = self
            .order_index
            .get(&order_id)
            .and_then(|&pos| Recorded::new(kind, pos));
        if let Some(recorded) = recorded {
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
        let order = |id: &OrderId| self.order_index.get(id).copied();
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
                Recorded::new(K::CheckedIn, *self.ticket_index.get(ticket_id)?)
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
    fn owe(&mut self, order: u32, payment: u64, amount: Money, reason: RefundReason) {
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

    fn place(&mut self, e: &HoldPlaced) {
        let Some(&t) = self.tier_index.get(&e.tier_id) else {
            return;
        };
        if self.order_index.contains_key(&e.order_id) {
            return;
        }
        let Ok(pos) = u32::try_from(self.orders.len()) else {
            return;
        };
        let seats: Box<[u32]> = e
            .seats
            .iter()
            .filter_map(|s| self.seat_index.get(s).copied())
            .collect();
        for &s in seats.iter() {
            self.seats[s as usize].taken_by = Some(pos);
        }
        self.tiers[t].held = self.tiers[t].held.saturating_add(e.quantity);
        let count = self.per_user.entry(e.user_id).or_default();
        *count = count.saturating_add(e.quantity);
        self.live_hold_count += 1;
        self.order_index.insert(e.order_id, pos);
        self.orders.push(Order {
            id: e.order_id,
            user: e.user_id,
            tier: t as u32,
            quantity: e.quantity,
            seats,
            status: OrderStatus::Held,
            expires_at: e.expires_at,
            total: e.total,
            first_ticket: None,
            payment: None,
        });
    }

    /// Ends a live hold without payment: its tickets go back to stock.
    fn close_hold(&mut self, order_id: OrderId, status: OrderStatus) {
        let Some(&pos) = self.order_index.get(&order_id) else {
            return;
        };
        let order = &mut self.orders[pos as usize];
        if order.status != OrderStatus::Held {
            return;
        }
        order.status = status;
        let (tier, quantity, user) = (order.tier as usize, order.quantity, order.user);
        for &s in order.seats.iter() {
            self.seats[s as usize].taken_by = None;
        }
        self.tiers[tier].held = self.tiers[tier].held.saturating_sub(quantity);
        self.live_hold_count = self.live_hold_count.saturating_sub(1);
        self.uncount_user(user, quantity);
    }

    fn confirm(&mut self, e: &OrderConfirmed) {
        let Some(&pos) = self.order_index.get(&e.order_id) else {
            return;
        };
        let order = &mut self.orders[pos as usize];
        if order.status != OrderStatus::Held {
            return;
        }
        let Ok(first) = u32::try_from(self.tickets.len()) else {
            return;
        };
        order.status = OrderStatus::Paid;
        order.first_ticket = Some(first);
        order.payment = Some(super::decide::payment_hash(&e.payment_ref));
        let tier = order.tier as usize;
        let quantity = order.quantity;
        let seats = order.seats.clone();
        self.tiers[tier].held = self.tiers[tier].held.saturating_sub(quantity);
        self.tiers[tier].sold = self.tiers[tier].sold.saturating_add(quantity);
        self.live_hold_count = self.live_hold_count.saturating_sub(1);
        self.tickets.reserve(e.tickets.len());
        for (i, t) in e.tickets.iter().enumerate() {
            self.ticket_index.insert(t.ticket_id, first + i as u32);
            self.tickets.push(Ticket {
                id: t.ticket_id,
                order: pos,
                seat: seats.get(i).copied(),
                status: TicketStatus::Valid,
            });
        }
    }

    fn cancel(&mut self, order_id: OrderId) {
        let Some(&pos) = self.order_index.get(&order_id) else {
            return;
        };
        let order = &self.orders[pos as usize];
        match order.status {
            OrderStatus::Held => self.close_hold(order_id, OrderStatus::Cancelled),
            OrderStatus::Paid => {
                let (tier, quantity, user, first) = (
                    order.tier as usize,
                    order.quantity,
                    order.user,
                    order.first_ticket,
                );
                for &s in order.seats.iter() {
                    self.seats[s as usize].taken_by = None;
                }
                if let Some(first) = first {
                    let range = first as usize..first as usize + quantity as usize;
                    if let Some(tickets) = self.tickets.get_mut(range) {
                        for t in tickets {
                            t.status = TicketStatus::Void;
                        }
                    }
                }
                self.tiers[tier].sold = self.tiers[tier].sold.saturating_sub(quantity);
                self.uncount_user(user, quantity);
                self.orders[pos as usize].status = OrderStatus::Cancelled;
            }
            _ => {}
        }
    }

    fn uncount_user(&mut self, user: crate::ids::UserId, quantity: u32) {
        if let Some(n) = self.per_user.get_mut(&user) {
            *n = n.saturating_sub(quantity);
            if *n == 0 {
                self.per_user.remove(&user);
            }
        }
    }
}
