//! Deciding inventory commands: validation, authorisation and the business rules.
//!
//! Checks run in a fixed order so that the same command always gets the same answer:
//! the event exists (NOT_FOUND), the actor may run the command (FORBIDDEN), the input is
//! well-formed (INVALID_INPUT), and then the rules of the current state.

use std::collections::HashSet;
use std::num::NonZeroU64;

use chrono::{DateTime, Duration, Utc};

use super::command::{
    DetailsInput, DetailsPatch, HoldRequest, InventoryCommand, MAX_SECRET_LEN, MIN_SECRET_LEN,
    PaymentInput, SeatInput, Selection, TicketSeed, TierKindInput, parse_seats,
};
use super::event::*;
use super::outcome::InventoryOutcome;
use super::{
    EventInfo, EventStatus, Inventory, MAX_RECORDED_INDEX, Order, OrderStatus, Recorded,
    RecordedKind, TicketStatus,
};
use crate::aggregate::{Actor, Aggregate, Command, CommandMeta, Decision, Role};
use crate::idempotency::{CommandRecord, CommandStamp};
use crate::ids::{OrderId, SeatId, TierId};
use crate::money::Money;
use crate::rejection::Rejection;

/// Bounds on input sizes: anything larger is refused as INVALID_INPUT.
pub mod limits {
    /// Longest event or tier name, in characters.
    pub const MAX_NAME_LEN: usize = 200;
    /// Longest venue, in characters.
    pub const MAX_VENUE_LEN: usize = 500;
    /// Longest description, in characters.
    pub const MAX_DESCRIPTION_LEN: usize = 10_000;
    /// Most image references per event.
    pub const MAX_IMAGES: usize = 20;
    /// Longest image reference, in characters.
    pub const MAX_IMAGE_REF_LEN: usize = 2048;
    /// Longest cancellation reason, in characters.
    pub const MAX_REASON_LEN: usize = 1000;
    /// Most tiers per event.
    pub const MAX_TIERS: usize = 100;
    /// Largest capacity of one tier.
    pub const MAX_TIER_CAPACITY: u32 = 1_000_000;
    /// Most seats in one event's seat map.
    pub const MAX_SEATS: usize = 500_000;
    /// Most seats added by one command.
    pub const MAX_SEATS_PER_COMMAND: usize = 200_000;
    /// Most tickets in one order.
    pub const MAX_TICKETS_PER_ORDER: u32 = 100;
    /// Largest per-user limit an organizer may set.
    pub const MAX_PER_USER_LIMIT: u32 = 10_000;
    /// Longest a hold may last, in seconds (one day).
    pub const MAX_HOLD_SECONDS: i64 = 24 * 60 * 60;
    /// Longest payment reference, in characters.
    pub const MAX_PAYMENT_REF_LEN: usize = 200;
    /// Longest refund id, in characters.
    pub const MAX_REFUND_ID_LEN: usize = 200;
    /// Most door staff one event may have.
    pub const MAX_DOOR_STAFF: usize = 500;
    /// Most orders one step of an event's cancellation cancels: the event's cancellation
    /// and then each `CancelRemainingOrders` write at most this many `OrderCancelled`, so
    /// that an event of any size is cancelled in appends the store accepts.
    pub const CANCELLATION_STEP_ORDERS: usize = 500;
    /// Most tickets one step of an event's cancellation voids (each voided ticket is named
    /// in its `OrderCancelled`, which bounds the step's size in bytes as well).
    pub const CANCELLATION_STEP_TICKETS: u32 = 5_000;
}

use limits::*;

impl Aggregate for Inventory {
    type Command = InventoryCommand;
    type Event = InventoryEvent;
    type Outcome = InventoryOutcome;

    fn decide(
        &self,
        cmd: &Command<InventoryCommand>,
    ) -> Result<Decision<InventoryEvent, InventoryOutcome>, Rejection> {
        let fingerprint = cmd.body.fingerprint();
        let recalled = match self.ledger.recall_fingerprinted(&cmd.meta, fingerprint) {
            Ok(recalled) => recalled,
            Err(reused) => match self.fingerprint_with_recorded_expiry(&cmd.body) {
                Some(old) => self
                    .ledger
                    .recall_fingerprinted(&cmd.meta, old)
                    .map_err(|_| reused)?,
                None => return Err(reused),
            },
        };
        if let Some(outcome) = recalled {
            return Ok(Decision {
                events: Vec::new(),
                outcome: self.recalled(outcome),
            });
        }
        let (mut events, outcome) = self.decide_new(&cmd.meta, &cmd.body)?;
        // A decision whose last event tells its outcome (a hold that answers `Held`, a
        // confirmation that answers `Confirmed`) carries its own record: one event less.
        let carrier = match (events.last_mut(), &outcome) {
            (Some(InventoryEvent::HoldPlaced(e)), InventoryOutcome::Held { .. }) => {
                Some((&mut e.command, e.user_id))
            }
            (Some(InventoryEvent::OrderConfirmed(e)), InventoryOutcome::Confirmed { .. }) => {
                Some((&mut e.command, e.user_id))
            }
            _ => None,
        };
        match carrier {
            Some((command, user)) => {
                *command = Some(CommandStamp::new(&cmd.meta, fingerprint, user));
            }
            None => events.push(InventoryEvent::CommandAccepted(InventoryCommandAccepted {
                record: CommandRecord::with_fingerprint(&cmd.meta, fingerprint),
                outcome: outcome.clone(),
            })),
        }
        Ok(Decision { events, outcome })
    }

    fn evolve(&mut self, event: &InventoryEvent) {
        self.apply(event);
    }
}

type Decided = (Vec<InventoryEvent>, InventoryOutcome);

impl Inventory {
    /// The full outcome of a recorded (compact) one, rebuilt from the parts of the state it
    /// names, which never change once recorded.
    fn recalled(&self, recorded: &Recorded) -> InventoryOutcome {
        let i = recorded.index() as usize;
        let order = self.orders.get(i);
        let order_id = order.map(|o| o.id).unwrap_or(OrderId(uuid::Uuid::nil()));
        match recorded.kind() {
            Some(RecordedKind::EventCreated) => InventoryOutcome::EventCreated {
                event_id: self
                    .event_id()
                    .unwrap_or(crate::ids::EventId(uuid::Uuid::nil())),
            },
            Some(RecordedKind::EventCancelled) => InventoryOutcome::EventCancelled {
                orders_cancelled: recorded.index(),
            },
            Some(RecordedKind::Held) => match order {
                Some(o) => InventoryOutcome::Held {
                    order_id,
                    expires_at: o.expires_at,
                    total: o.total(),
                },
                None => InventoryOutcome::Accepted,
            },
            Some(RecordedKind::Confirmed) => InventoryOutcome::Confirmed {
                order_id,
                tickets: order
                    .map(|o| self.order_tickets(o).map(|t| t.id).collect())
                    .unwrap_or_default(),
            },
            Some(RecordedKind::RefundOwed) => match self.refunds.get(i) {
                Some(r) => InventoryOutcome::RefundOwed {
                    order_id: self
                        .orders
                        .get(r.order as usize)
                        .map(|o| o.id)
                        .unwrap_or(order_id),
                    amount: r.amount,
                    reason: r.reason,
                },
                None => InventoryOutcome::Accepted,
            },
            Some(RecordedKind::Released) => InventoryOutcome::Released { order_id },
            Some(RecordedKind::Expired) => InventoryOutcome::Expired { order_id },
            Some(RecordedKind::OrderCancelled) => InventoryOutcome::OrderCancelled {
                order_id,
                // Only a paid order has tickets, and only a paid order is refunded.
                refund: order
                    .filter(|o| o.first_ticket().is_some())
                    .map(|o| o.total()),
            },
            Some(RecordedKind::Refunded) => match self.owed_refunds.get(i) {
                Some(r) => InventoryOutcome::Refunded {
                    order_id: self
                        .orders
                        .get(r.order as usize)
                        .map(|o| o.id)
                        .unwrap_or(order_id),
                    refund_id: r.refund_id.as_deref().unwrap_or_default().to_owned(),
                    amount: r.amount,
                },
                None => InventoryOutcome::Accepted,
            },
            Some(RecordedKind::CheckedIn) => match self.tickets.get(i) {
                Some(t) => InventoryOutcome::CheckedIn {
                    ticket_id: t.id,
                    order_id: self
                        .orders
                        .get(t.order as usize)
                        .map(|o| o.id)
                        .unwrap_or(order_id),
                },
                None => InventoryOutcome::Accepted,
            },
            Some(RecordedKind::Accepted) | None => InventoryOutcome::Accepted,
        }
    }

    /// How a hold was fingerprinted when it was recorded before expiries were left out of
    /// fingerprints: the whole body, with the expiry its order recorded. Lets a retry of
    /// such a hold still find its first outcome.
    fn fingerprint_with_recorded_expiry(&self, body: &InventoryCommand) -> Option<uuid::Uuid> {
        let mut body = body.clone();
        let hold = match &mut body {
            InventoryCommand::PlaceHold(hold) => hold,
            InventoryCommand::Purchase { hold, .. } => hold,
            _ => return None,
        };
        let (_, order) = self.order_at(hold.order_id)?;
        hold.expires_at = order.expires_at;
        Some(crate::idempotency::fingerprint(&body))
    }

    fn decide_new(
        &self,
        meta: &CommandMeta,
        body: &InventoryCommand,
    ) -> Result<Decided, Rejection> {
        use InventoryCommand as C;
        if let C::CreateEvent { event_id, details } = body {
            return self.create_event(meta, *event_id, details);
        }
        let event = self.event.as_ref().ok_or_else(|| Rejection::NotFound {
            what: "event",
            id: "(this stream has no event)".into(),
        })?;
        match body {
            C::CreateEvent { .. } => unreachable_create(),
            C::UpdateDetails { changes } => self.update_details(meta, event, changes),
            C::SetSalesWindow {
                opens_at,
                closes_at,
            } => {
                self.organizer_may_change(meta, event)?;
                if closes_at <= opens_at {
                    return Err(Rejection::invalid(
                        "salesWindow",
                        format!(
                            "sales must close after they open ({closes_at} is not after {opens_at})"
                        ),
                    ));
                }
                Ok(accepted(InventoryEvent::SalesWindowSet(SalesWindowSet {
                    opens_at: *opens_at,
                    closes_at: *closes_at,
                })))
            }
            C::SetPerUserLimit { limit } => {
                self.organizer_may_change(meta, event)?;
                let limit = match limit {
                    None => None,
                    Some(n) => Some(bounded_count("limit", *n, 1, MAX_PER_USER_LIMIT)?),
                };
                Ok(accepted(InventoryEvent::PerUserLimitSet(PerUserLimitSet {
                    limit,
                })))
            }
            C::Publish => {
                self.organizer_may_change(meta, event)?;
                if event.status == EventStatus::Published {
                    return Err(Rejection::InvalidState(format!(
                        "event {} is already published",
                        event.id
                    )));
                }
                if !self.tiers.iter().any(|t| t.capacity > 0) {
                    return Err(Rejection::InvalidState(format!(
                        "event {} has no tickets to sell: add a tier with capacity first",
                        event.id
                    )));
                }
                Ok(accepted(InventoryEvent::EventPublished(EventPublished {
                    at: meta.now,
                })))
            }
            C::CancelEvent { reason } => self.cancel_event(meta, event, reason),
            C::CancelRemainingOrders => self.cancel_remaining_orders(meta, event),
            C::AddTier {
                tier_id,
                name,
                price_minor,
                currency,
                kind,
            } => self.add_tier(meta, event, *tier_id, name, *price_minor, currency, kind),
            C::RenameTier { tier_id, name } => {
                self.organizer_may_change(meta, event)?;
                self.known_tier(*tier_id)?;
                let name = text("name", name, MAX_NAME_LEN)?;
                Ok(accepted(InventoryEvent::TierRenamed(TierRenamed {
                    tier_id: *tier_id,
                    name,
                })))
            }
            C::RepriceTier {
                tier_id,
                price_minor,
                currency,
            } => {
                self.organizer_may_change(meta, event)?;
                self.known_tier(*tier_id)?;
                let price = Money::price(*price_minor, currency)?;
                Ok(accepted(InventoryEvent::TierRepriced(TierRepriced {
                    tier_id: *tier_id,
                    price,
                })))
            }
            C::ResizeTier { tier_id, capacity } => {
                self.organizer_may_change(meta, event)?;
                let tier = &self.tiers[self.known_tier(*tier_id)?];
                if tier.seated {
                    return Err(Rejection::invalid(
                        "tierId",
                        format!(
                            "tier {} is seated: its capacity is its number of seats",
                            tier.name
                        ),
                    ));
                }
                let capacity = bounded_count("capacity", *capacity, 0, MAX_TIER_CAPACITY)?;
                let committed = tier.sold + tier.held;
                if capacity < committed {
                    return Err(Rejection::CapacityTooSmall {
                        tier: tier.name.clone(),
                        requested: capacity,
                        committed,
                    });
                }
                Ok(accepted(InventoryEvent::TierResized(TierResized {
                    tier_id: *tier_id,
                    capacity,
                })))
            }
            C::AddSeats { seats } => self.add_seats(meta, event, seats),
            C::PlaceHold(req) => {
                let held = self.place_hold(meta, event, req)?;
                let outcome = InventoryOutcome::Held {
                    order_id: held.order_id,
                    expires_at: held.expires_at,
                    total: held.total,
                };
                Ok((vec![InventoryEvent::HoldPlaced(held)], outcome))
            }
            C::Purchase { hold, payment } => {
                let held = self.place_hold(meta, event, hold)?;
                let tier = &self.tiers[self.known_tier(held.tier_id)?];
                let amount = payment_amount(payment)?;
                if amount != held.total {
                    return Err(Rejection::invalid(
                        "payment",
                        format!(
                            "payment of {amount} does not match the order total of {}",
                            held.total
                        ),
                    ));
                }
                let tickets = self.issue(payment, held.quantity, &held.seats, tier.seated)?;
                let confirmed = OrderConfirmed {
                    order_id: held.order_id,
                    user_id: held.user_id,
                    payment_ref: payment_ref(payment)?,
                    amount,
                    tickets,
                    at: meta.now,
                    command: None,
                };
                let outcome = InventoryOutcome::Confirmed {
                    order_id: held.order_id,
                    tickets: confirmed.tickets.iter().map(|t| t.ticket_id).collect(),
                };
                Ok((
                    vec![
                        InventoryEvent::HoldPlaced(held),
                        InventoryEvent::OrderConfirmed(confirmed),
                    ],
                    outcome,
                ))
            }
            C::ReleaseHold { order_id } => {
                let order = self.known_order(*order_id)?;
                self.owner_or_organizer(meta, event, order)?;
                match order.status {
                    OrderStatus::Held => Ok((
                        vec![InventoryEvent::HoldReleased(HoldReleased {
                            order_id: *order_id,
                            at: meta.now,
                        })],
                        InventoryOutcome::Released {
                            order_id: *order_id,
                        },
                    )),
                    OrderStatus::Expired => Err(hold_expired(*order_id, order)),
                    other => Err(Rejection::InvalidState(format!(
                        "order {order_id} is {}, not a live hold",
                        status_word(other)
                    ))),
                }
            }
            C::ExpireHold { order_id } => {
                let order = self.known_order(*order_id)?;
                system_or_admin(meta, "expire holds")?;
                match order.status {
                    OrderStatus::Held if meta.now < order.expires_at => {
                        Err(Rejection::HoldNotExpired {
                            order: order_id.to_string(),
                            expires_at: order.expires_at,
                        })
                    }
                    OrderStatus::Held => Ok((
                        vec![InventoryEvent::HoldExpired(HoldExpired {
                            order_id: *order_id,
                            at: meta.now,
                        })],
                        InventoryOutcome::Expired {
                            order_id: *order_id,
                        },
                    )),
                    other => Err(Rejection::InvalidState(format!(
                        "order {order_id} is {}, not a live hold",
                        status_word(other)
                    ))),
                }
            }
            C::ConfirmPayment { order_id, payment } => {
                self.confirm_payment(meta, event, *order_id, payment)
            }
            C::CancelOrder { order_id } => {
                let order = self.known_order(*order_id)?;
                self.owner_or_organizer(meta, event, order)?;
                match order.status {
                    OrderStatus::Held | OrderStatus::Paid => {
                        if let Some(used) =
                            self.order_tickets(order)
                                .find_map(|t| match self.ticket_status(t) {
                                    TicketStatus::CheckedIn { at } => Some((t.id, at)),
                                    _ => None,
                                })
                        {
                            return Err(Rejection::AlreadyCheckedIn {
                                ticket: used.0.to_string(),
                                at: used.1,
                            });
                        }
                        let cancelled = self.cancel_order(
                            *order_id,
                            order,
                            RefundReason::CancelledByRequest,
                            meta.now,
                        );
                        let outcome = InventoryOutcome::OrderCancelled {
                            order_id: *order_id,
                            refund: cancelled.refund,
                        };
                        Ok((vec![InventoryEvent::OrderCancelled(cancelled)], outcome))
                    }
                    OrderStatus::Expired => Err(hold_expired(*order_id, order)),
                    other => Err(Rejection::InvalidState(format!(
                        "order {order_id} is already {}",
                        status_word(other)
                    ))),
                }
            }
            C::RecordRefund {
                order_id,
                payment_ref,
                refund_id,
                amount_minor,
                currency,
            } => self.record_refund(
                meta,
                *order_id,
                payment_ref,
                refund_id,
                *amount_minor,
                currency,
            ),
            C::AssignDoorStaff { user_id } => {
                self.organizer_may_change(meta, event)?;
                if event.door_staff.contains(user_id) {
                    return Err(Rejection::AlreadyExists {
                        what: "door staff",
                        id: user_id.to_string(),
                    });
                }
                if event.door_staff.len() >= MAX_DOOR_STAFF {
                    return Err(Rejection::invalid(
                        "userId",
                        format!("an event has at most {MAX_DOOR_STAFF} door staff"),
                    ));
                }
                Ok(accepted(InventoryEvent::DoorStaffAssigned(
                    DoorStaffChanged {
                        user_id: *user_id,
                        at: meta.now,
                    },
                )))
            }
            C::UnassignDoorStaff { user_id } => {
                self.organizer_may_change(meta, event)?;
                if !event.door_staff.contains(user_id) {
                    return Err(Rejection::not_found("door staff", user_id));
                }
                Ok(accepted(InventoryEvent::DoorStaffUnassigned(
                    DoorStaffChanged {
                        user_id: *user_id,
                        at: meta.now,
                    },
                )))
            }
            C::CheckIn { ticket_id } => {
                // Door staff of this event (OPERATORs its organizer assigned), the
                // organizer, or an admin: an operator of another event is not let in.
                let door_staff = (meta.actor.has_role(Role::Operator)
                    && meta
                        .actor
                        .user_id()
                        .is_some_and(|u| event.door_staff.contains(&u)))
                    || meta.actor.is_admin()
                    || meta.actor.user_id() == Some(event.organizer);
                if !door_staff {
                    return Err(Rejection::forbidden(
                        "only this event's door staff, its organizer or an admin can check its tickets in",
                    ));
                }
                if event.status == EventStatus::Cancelled {
                    // Its orders may not all be cancelled yet: no ticket admits anyone.
                    return Err(Rejection::EventCancelled {
                        event: event.id.to_string(),
                    });
                }
                let ticket = self
                    .ticket_pos(ticket_id)
                    .map(|i| &self.tickets[i as usize])
                    .ok_or_else(|| Rejection::not_found("ticket", ticket_id))?;
                match self.ticket_status(ticket) {
                    TicketStatus::Void => Err(Rejection::TicketVoid {
                        ticket: ticket_id.to_string(),
                    }),
                    TicketStatus::CheckedIn { at } => Err(Rejection::AlreadyCheckedIn {
                        ticket: ticket_id.to_string(),
                        at,
                    }),
                    TicketStatus::Valid => Ok((
                        vec![InventoryEvent::TicketCheckedIn(TicketCheckedIn {
                            ticket_id: *ticket_id,
                            order_id: self.orders[ticket.order as usize].id,
                            at: meta.now,
                        })],
                        InventoryOutcome::CheckedIn {
                            ticket_id: *ticket_id,
                            order_id: self.orders[ticket.order as usize].id,
                        },
                    )),
                }
            }
        }
    }

    fn create_event(
        &self,
        meta: &CommandMeta,
        event_id: crate::ids::EventId,
        details: &DetailsInput,
    ) -> Result<Decided, Rejection> {
        if let Some(existing) = &self.event {
            return Err(Rejection::AlreadyExists {
                what: "event",
                id: existing.id.to_string(),
            });
        }
        let organizer = match &meta.actor {
            Actor::User { id, roles }
                if roles.contains(&Role::Organizer) || roles.contains(&Role::Admin) =>
            {
                *id
            }
            _ => {
                return Err(Rejection::forbidden(
                    "only an ORGANIZER or an ADMIN can create events",
                ));
            }
        };
        let details = validate_details(EventDetails {
            name: details.name.clone(),
            description: details.description.clone(),
            venue: details.venue.clone(),
            starts_at: details.starts_at,
            ends_at: details.ends_at,
            images: details.images.clone(),
        })?;
        Ok((
            vec![InventoryEvent::EventCreated(EventCreated {
                event_id,
                organizer,
                details,
            })],
            InventoryOutcome::EventCreated { event_id },
        ))
    }

    fn update_details(
        &self,
        meta: &CommandMeta,
        event: &EventInfo,
        patch: &DetailsPatch,
    ) -> Result<Decided, Rejection> {
        self.organizer_may_change(meta, event)?;
        let DetailsPatch {
            name,
            description,
            venue,
            starts_at,
            ends_at,
            images,
        } = patch;
        if name.is_none()
            && description.is_none()
            && venue.is_none()
            && starts_at.is_none()
            && ends_at.is_none()
            && images.is_none()
        {
            return Err(Rejection::invalid(
                "changes",
                "no detail to change was given",
            ));
        }
        let old = &event.details;
        let details = validate_details(EventDetails {
            name: name.clone().unwrap_or_else(|| old.name.clone()),
            description: description
                .clone()
                .unwrap_or_else(|| old.description.clone()),
            venue: venue.clone().unwrap_or_else(|| old.venue.clone()),
            starts_at: starts_at.unwrap_or(old.starts_at),
            ends_at: ends_at.unwrap_or(old.ends_at),
            images: images.clone().unwrap_or_else(|| old.images.clone()),
        })?;
        Ok(accepted(InventoryEvent::DetailsUpdated(DetailsUpdated {
            details,
        })))
    }

    fn cancel_event(
        &self,
        meta: &CommandMeta,
        event: &EventInfo,
        reason: &str,
    ) -> Result<Decided, Rejection> {
        self.organizer_may_change(meta, event)?;
        let reason = text("reason", reason, MAX_REASON_LEN)?;
        let mut events = vec![InventoryEvent::EventCancelled(EventCancelled {
            reason,
            at: meta.now,
        })];
        let orders_cancelled = self.cancellation_step(meta.now, &mut events);
        Ok((
            events,
            InventoryOutcome::EventCancelled { orders_cancelled },
        ))
    }

    /// The next step of a cancelled event's cancellation: up to
    /// [`CANCELLATION_STEP_ORDERS`] of the orders still live are cancelled.
    fn cancel_remaining_orders(
        &self,
        meta: &CommandMeta,
        event: &EventInfo,
    ) -> Result<Decided, Rejection> {
        system_or_admin(meta, "cancel the orders of a cancelled event")?;
        if event.status != EventStatus::Cancelled {
            return Err(Rejection::InvalidState(format!(
                "event {} is not cancelled",
                event.id
            )));
        }
        let mut events = Vec::new();
        let orders_cancelled = self.cancellation_step(meta.now, &mut events);
        if orders_cancelled == 0 {
            return Err(Rejection::InvalidState(format!(
                "every order of event {} is already cancelled",
                event.id
            )));
        }
        Ok((
            events,
            InventoryOutcome::EventCancelled { orders_cancelled },
        ))
    }

    /// Cancels the first live orders (held or paid), at most one step's worth; returns how
    /// many.
    fn cancellation_step(&self, now: DateTime<Utc>, events: &mut Vec<InventoryEvent>) -> u32 {
        let mut orders = 0;
        let mut tickets = 0;
        for order in self
            .orders
            .iter()
            .filter(|o| matches!(o.status, OrderStatus::Held | OrderStatus::Paid))
        {
            if orders == CANCELLATION_STEP_ORDERS
                || (orders > 0 && tickets + order.quantity() > CANCELLATION_STEP_TICKETS)
            {
                break;
            }
            events.push(InventoryEvent::OrderCancelled(self.cancel_order(
                order.id,
                order,
                RefundReason::EventCancelled,
                now,
            )));
            orders += 1;
            tickets += order.quantity();
        }
        orders as u32
    }

    fn cancel_order(
        &self,
        order_id: OrderId,
        order: &Order,
        reason: RefundReason,
        at: DateTime<Utc>,
    ) -> OrderCancelled {
        let paid = order.status == OrderStatus::Paid;
        OrderCancelled {
            order_id,
            user_id: self.buyer_of(order),
            refund: paid.then_some(order.total()),
            reason,
            voided_tickets: self.order_tickets(order).map(|t| t.id).collect(),
            at,
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn add_tier(
        &self,
        meta: &CommandMeta,
        event: &EventInfo,
        tier_id: TierId,
        name: &str,
        price_minor: i64,
        currency: &str,
        kind: &TierKindInput,
    ) -> Result<Decided, Rejection> {
        self.organizer_may_change(meta, event)?;
        if self.tier_index.contains_key(&tier_id) {
            return Err(Rejection::AlreadyExists {
                what: "tier",
                id: tier_id.to_string(),
            });
        }
        if self.tiers.len() >= MAX_TIERS {
            return Err(Rejection::invalid(
                "tierId",
                format!("an event has at most {MAX_TIERS} tiers"),
            ));
        }
        let name = text("name", name, MAX_NAME_LEN)?;
        let price = Money::price(price_minor, currency)?;
        let (capacity, seated) = match kind {
            TierKindInput::General { capacity } => (
                bounded_count("capacity", *capacity, 1, MAX_TIER_CAPACITY)?,
                false,
            ),
            TierKindInput::Seated => (0, true),
        };
        Ok(accepted(InventoryEvent::TierAdded(TierAdded {
            tier_id,
            name,
            price,
            capacity,
            seated,
        })))
    }

    fn add_seats(
        &self,
        meta: &CommandMeta,
        event: &EventInfo,
        seats: &[SeatInput],
    ) -> Result<Decided, Rejection> {
        self.organizer_may_change(meta, event)?;
        if seats.is_empty() {
            return Err(Rejection::invalid("seats", "the seat list is empty"));
        }
        if seats.len() > MAX_SEATS_PER_COMMAND {
            return Err(Rejection::invalid(
                "seats",
                format!(
                    "at most {MAX_SEATS_PER_COMMAND} seats can be added at once (got {})",
                    seats.len()
                ),
            ));
        }
        if self.seats.len() + seats.len() > MAX_SEATS {
            return Err(Rejection::invalid(
                "seats",
                format!(
                    "a seat map has at most {MAX_SEATS} seats ({} exist, {} more given)",
                    self.seats.len(),
                    seats.len()
                ),
            ));
        }
        let mut seen = HashSet::with_capacity(seats.len());
        let mut added_per_tier = vec![0u32; self.tiers.len()];
        let mut assignments = Vec::with_capacity(seats.len());
        for input in seats {
            let seat = SeatId::parse(&input.seat)?;
            let t = self.known_tier(input.tier_id)?;
            let tier = &self.tiers[t];
            if !tier.seated {
                return Err(Rejection::invalid(
                    "tierId",
                    format!(
                        "tier {} sells quantities, not seats; seat {seat} cannot be in it",
                        tier.name
                    ),
                ));
            }
            if !seen.insert(seat.clone()) {
                return Err(Rejection::invalid(
                    "seats",
                    format!("seat {seat} is listed twice"),
                ));
            }
            if self.seat_pos(&seat).is_some() {
                return Err(Rejection::AlreadyExists {
                    what: "seat",
                    id: seat.to_string(),
                });
            }
            added_per_tier[t] += 1;
            if tier.capacity + added_per_tier[t] > MAX_TIER_CAPACITY {
                return Err(Rejection::invalid(
                    "seats",
                    format!("tier {} would exceed {MAX_TIER_CAPACITY} seats", tier.name),
                ));
            }
            assignments.push(SeatAssignment {
                seat,
                tier_id: input.tier_id,
            });
        }
        Ok(accepted(InventoryEvent::SeatsAdded(SeatsAdded {
            seats: assignments,
        })))
    }

    /// Validates a hold and says what it would place; shared by hold and purchase.
    fn place_hold(
        &self,
        meta: &CommandMeta,
        event: &EventInfo,
        req: &HoldRequest,
    ) -> Result<HoldPlaced, Rejection> {
        let Some(user) = meta.actor.user_id() else {
            return Err(Rejection::forbidden(
                "only a signed-in user can hold tickets",
            ));
        };
        if event.status == EventStatus::Cancelled {
            return Err(Rejection::EventCancelled {
                event: event.id.to_string(),
            });
        }
        let t = self.known_tier(req.tier_id)?;
        let tier = &self.tiers[t];
        let (quantity, seats) = match &req.selection {
            Selection::Quantity { quantity } => {
                if tier.seated {
                    return Err(Rejection::invalid(
                        "selection",
                        format!(
                            "tier {} sells named seats: choose seats, not a quantity",
                            tier.name
                        ),
                    ));
                }
                let q = bounded_count("quantity", *quantity, 1, MAX_TICKETS_PER_ORDER)?;
                (q, Vec::new())
            }
            Selection::Seats { seats } => {
                if !tier.seated {
                    return Err(Rejection::invalid(
                        "selection",
                        format!(
                            "tier {} has no seat map: choose a quantity, not seats",
                            tier.name
                        ),
                    ));
                }
                if seats.is_empty() {
                    return Err(Rejection::invalid("seats", "the seat list is empty"));
                }
                if seats.len() > MAX_TICKETS_PER_ORDER as usize {
                    return Err(Rejection::invalid(
                        "seats",
                        format!(
                            "at most {MAX_TICKETS_PER_ORDER} seats per order (got {})",
                            seats.len()
                        ),
                    ));
                }
                let seats = parse_seats(seats)?;
                let mut seen = HashSet::with_capacity(seats.len());
                for seat in &seats {
                    if !seen.insert(seat) {
                        return Err(Rejection::invalid(
                            "seats",
                            format!("seat {seat} is requested twice"),
                        ));
                    }
                    let Some(s) = self.seat_pos(seat) else {
                        return Err(Rejection::invalid(
                            "seats",
                            format!("there is no seat {seat}"),
                        ));
                    };
                    if self.seats[s as usize].tier as usize != t {
                        return Err(Rejection::invalid(
                            "seats",
                            format!("seat {seat} is not in tier {}", tier.name),
                        ));
                    }
                }
                (seats.len() as u32, seats)
            }
        };
        if req.expires_at <= meta.now {
            return Err(Rejection::invalid(
                "expiresAt",
                format!(
                    "a hold must expire after now ({} is not after {})",
                    req.expires_at, meta.now
                ),
            ));
        }
        let latest = meta
            .now
            .checked_add_signed(Duration::seconds(MAX_HOLD_SECONDS))
            .unwrap_or(DateTime::<Utc>::MAX_UTC);
        if req.expires_at > latest {
            return Err(Rejection::invalid(
                "expiresAt",
                format!("a hold lasts at most {MAX_HOLD_SECONDS} seconds"),
            ));
        }
        if self.orders.len() >= MAX_RECORDED_INDEX as usize {
            return Err(Rejection::InvalidState(format!(
                "event {} has reached the maximum number of orders",
                event.id
            )));
        }
        if self.order_pos(&req.order_id).is_some() {
            return Err(Rejection::AlreadyExists {
                what: "order",
                id: req.order_id.to_string(),
            });
        }
        self.on_sale(event, meta.now)?;
        for seat in &seats {
            let taken = self
                .seat_pos(seat)
                .is_some_and(|s| self.seats[s as usize].taken_by.is_some());
            if taken {
                return Err(Rejection::SeatTaken {
                    seat: seat.to_string(),
                });
            }
        }
        let available = tier.available();
        if quantity > available {
            return Err(Rejection::SoldOut {
                tier: tier.name.clone(),
                requested: quantity,
                available,
            });
        }
        if let Some(limit) = event.per_user_limit {
            let current = self.tickets_of_user(user);
            if current.saturating_add(quantity) > limit {
                return Err(Rejection::LimitExceeded {
                    limit,
                    current,
                    requested: quantity,
                });
            }
        }
        Ok(HoldPlaced {
            order_id: req.order_id,
            user_id: user,
            tier_id: req.tier_id,
            quantity,
            seats,
            total: tier.price.times(quantity),
            placed_at: meta.now,
            expires_at: req.expires_at,
            command: None,
        })
    }

    fn confirm_payment(
        &self,
        meta: &CommandMeta,
        event: &EventInfo,
        order_id: OrderId,
        payment: &PaymentInput,
    ) -> Result<Decided, Rejection> {
        let (pos, order) = self
            .order_at(order_id)
            .ok_or_else(|| Rejection::not_found("order", order_id))?;
        system_or_admin(meta, "confirm payments")?;
        let amount = payment_amount(payment)?;
        let payment_ref = payment_ref(payment)?;
        let payment_key = payment_hash(&payment_ref);
        if let Some((_, owed)) = self.owed_refund(pos, payment_key) {
            // This payment is already owed back (a repeated callback under a new key): the
            // same refund, not a second one.
            return Ok((
                Vec::new(),
                InventoryOutcome::RefundOwed {
                    order_id,
                    amount: owed.amount,
                    reason: owed.reason,
                },
            ));
        }
        let refund = |reason: RefundReason, mut events: Vec<InventoryEvent>| {
            events.push(InventoryEvent::PaymentRefundOwed(PaymentRefundOwed {
                order_id,
                user_id: self.buyer_of(order),
                payment_ref: payment_ref.clone(),
                amount,
                reason,
                at: meta.now,
            }));
            (
                events,
                InventoryOutcome::RefundOwed {
                    order_id,
                    amount,
                    reason,
                },
            )
        };
        match order.status {
            // The event's cancellation has not reached this hold yet: it can no longer
            // be bought.
            OrderStatus::Held if event.status == EventStatus::Cancelled => {
                Ok(refund(RefundReason::EventCancelled, Vec::new()))
            }
            OrderStatus::Held if meta.now >= order.expires_at => {
                let expired = InventoryEvent::HoldExpired(HoldExpired {
                    order_id,
                    at: meta.now,
                });
                Ok(refund(RefundReason::HoldExpired, vec![expired]))
            }
            OrderStatus::Held if amount != order.total() => {
                Ok(refund(RefundReason::AmountMismatch, Vec::new()))
            }
            OrderStatus::Held => {
                let tier = &self.tiers[order.tier()];
                let seats: Vec<SeatId> = self
                    .seats_of(order)
                    .iter()
                    .map(|&s| self.seats[s as usize].id.clone())
                    .collect();
                let tickets = self.issue(payment, order.quantity(), &seats, tier.seated)?;
                let outcome = InventoryOutcome::Confirmed {
                    order_id,
                    tickets: tickets.iter().map(|t| t.ticket_id).collect(),
                };
                Ok((
                    vec![InventoryEvent::OrderConfirmed(OrderConfirmed {
                        order_id,
                        user_id: self.buyer_of(order),
                        payment_ref,
                        amount,
                        tickets,
                        at: meta.now,
                        command: None,
                    })],
                    outcome,
                ))
            }
            OrderStatus::Paid if order.payment == Some(payment_key) => {
                // The same payment reported again (a repeated callback under a new key):
                // it already paid for these tickets, so nothing is owed and nothing changes.
                Ok((
                    Vec::new(),
                    InventoryOutcome::Confirmed {
                        order_id,
                        tickets: self.order_tickets(order).map(|t| t.id).collect(),
                    },
                ))
            }
            OrderStatus::Paid => Ok(refund(RefundReason::AlreadyPaid, Vec::new())),
            OrderStatus::Expired => Ok(refund(RefundReason::HoldExpired, Vec::new())),
            OrderStatus::Released => Ok(refund(RefundReason::HoldReleased, Vec::new())),
            OrderStatus::Cancelled if event.status == EventStatus::Cancelled => {
                Ok(refund(RefundReason::EventCancelled, Vec::new()))
            }
            OrderStatus::Cancelled => Ok(refund(RefundReason::OrderCancelled, Vec::new())),
        }
    }

    fn record_refund(
        &self,
        meta: &CommandMeta,
        order_id: OrderId,
        payment_ref: &str,
        refund_id: &str,
        amount_minor: i64,
        currency: &str,
    ) -> Result<Decided, Rejection> {
        let (pos, order) = self
            .order_at(order_id)
            .ok_or_else(|| Rejection::not_found("order", order_id))?;
        system_or_admin(meta, "record refunds")?;
        let payment_ref = text("paymentRef", payment_ref, MAX_PAYMENT_REF_LEN)?;
        let refund_id = text("refundId", refund_id, MAX_REFUND_ID_LEN)?;
        let amount = Money::price(amount_minor, currency)
            .map_err(|e| Rejection::invalid("amount", e.to_string()))?;
        let Some((_, owed)) = self.owed_refund(pos, payment_hash(&payment_ref)) else {
            return Err(Rejection::NoRefundOwed {
                order: order_id.to_string(),
                payment_ref,
            });
        };
        if amount != owed.amount {
            return Err(Rejection::RefundMismatch {
                order: order_id.to_string(),
                owed: owed.amount.to_string(),
                given: amount.to_string(),
            });
        }
        let outcome = InventoryOutcome::Refunded {
            order_id,
            refund_id: refund_id.clone(),
            amount,
        };
        match owed.refund_id.as_deref() {
            // The same refund reported again: it is already recorded.
            Some(done) if done == refund_id => Ok((Vec::new(), outcome)),
            Some(done) => Err(Rejection::AlreadyRefunded {
                order: order_id.to_string(),
                refund_id: done.to_owned(),
            }),
            None => Ok((
                vec![InventoryEvent::RefundIssued(RefundIssued {
                    order_id,
                    user_id: self.buyer_of(order),
                    payment_ref,
                    refund_id,
                    amount,
                    at: meta.now,
                })],
                outcome,
            )),
        }
    }

    /// Validates the ticket seeds of a payment and pairs them with the order's seats.
    fn issue(
        &self,
        payment: &PaymentInput,
        quantity: u32,
        seats: &[SeatId],
        seated: bool,
    ) -> Result<Vec<IssuedTicket>, Rejection> {
        if self.tickets.len() + quantity as usize > MAX_RECORDED_INDEX as usize {
            return Err(Rejection::InvalidState(
                "this event has reached the maximum number of tickets".into(),
            ));
        }
        if quantity > MAX_TICKETS_PER_ORDER {
            // Only an order folded from a hand-made stream can be this large.
            return Err(Rejection::invalid(
                "tickets",
                format!("an order has at most {MAX_TICKETS_PER_ORDER} tickets"),
            ));
        }
        if payment.tickets.len() != quantity as usize {
            return Err(Rejection::invalid(
                "tickets",
                format!(
                    "{} ticket seed(s) given for an order of {quantity} ticket(s)",
                    payment.tickets.len()
                ),
            ));
        }
        let mut issued = Vec::with_capacity(payment.tickets.len());
        for (i, TicketSeed { ticket_id, secret }) in payment.tickets.iter().enumerate() {
            // An order has at most MAX_TICKETS_PER_ORDER seeds (checked above): comparing
            // with the earlier ones is cheaper than building sets for the usual one or two.
            let earlier = &payment.tickets[..i];
            if earlier.iter().any(|e| e.ticket_id == *ticket_id) {
                return Err(Rejection::invalid(
                    "tickets",
                    format!("ticket id {ticket_id} is given twice"),
                ));
            }
            if self.ticket_pos(ticket_id).is_some() {
                return Err(Rejection::AlreadyExists {
                    what: "ticket",
                    id: ticket_id.to_string(),
                });
            }
            if !printable_secret(secret) {
                return Err(Rejection::invalid(
                    "tickets",
                    format!(
                        "the secret of ticket {ticket_id} must be {MIN_SECRET_LEN} to {MAX_SECRET_LEN} printable characters without spaces"
                    ),
                ));
            }
            if earlier.iter().any(|e| e.secret == *secret) {
                return Err(Rejection::invalid(
                    "tickets",
                    format!("the secret of ticket {ticket_id} is shared with another ticket"),
                ));
            }
            issued.push(IssuedTicket {
                ticket_id: *ticket_id,
                secret: secret.clone(),
                seat: if seated { seats.get(i).cloned() } else { None },
            });
        }
        Ok(issued)
    }

    fn on_sale(&self, event: &EventInfo, now: DateTime<Utc>) -> Result<(), Rejection> {
        if event.status != EventStatus::Published {
            return Err(Rejection::NotOnSale {
                reason: format!("event {} is not published", event.id),
            });
        }
        match event.sales_window {
            Some(w) if now < w.opens_at => Err(Rejection::NotOnSale {
                reason: format!("sales open at {}", w.opens_at),
            }),
            Some(w) if now >= w.closes_at => Err(Rejection::NotOnSale {
                reason: format!("sales closed at {}", w.closes_at),
            }),
            Some(_) => Ok(()),
            None if now >= event.details.ends_at => Err(Rejection::NotOnSale {
                reason: format!("the event ended at {}", event.details.ends_at),
            }),
            None => Ok(()),
        }
    }

    /// The organizer (or an admin) may change an event that is not cancelled.
    fn organizer_may_change(&self, meta: &CommandMeta, event: &EventInfo) -> Result<(), Rejection> {
        if !(meta.actor.is_admin() || meta.actor.user_id() == Some(event.organizer)) {
            return Err(Rejection::forbidden(format!(
                "only the organizer of event {} or an admin can change it",
                event.id
            )));
        }
        if event.status == EventStatus::Cancelled {
            return Err(Rejection::EventCancelled {
                event: event.id.to_string(),
            });
        }
        Ok(())
    }

    fn owner_or_organizer(
        &self,
        meta: &CommandMeta,
        event: &EventInfo,
        order: &Order,
    ) -> Result<(), Rejection> {
        let me = meta.actor.user_id();
        if me == Some(self.buyer_of(order)) || me == Some(event.organizer) || meta.actor.is_admin()
        {
            Ok(())
        } else {
            Err(Rejection::forbidden(
                "only the buyer, the organizer or an admin can change this order",
            ))
        }
    }

    /// Position of a tier; an unknown tier is invalid input.
    fn known_tier(&self, id: TierId) -> Result<usize, Rejection> {
        self.tier_index
            .get(&id)
            .copied()
            .ok_or_else(|| Rejection::invalid("tierId", format!("there is no tier {id}")))
    }

    fn known_order(&self, id: OrderId) -> Result<&Order, Rejection> {
        self.order_at(id)
            .map(|(_, o)| o)
            .ok_or_else(|| Rejection::not_found("order", id))
    }
}

/// The in-memory identity of a payment reference (never zero, so that an order keeps it
/// in eight bytes; see `index::keyed_hash`).
pub(super) fn payment_hash(payment_ref: &str) -> NonZeroU64 {
    NonZeroU64::new(crate::index::keyed_hash(payment_ref)).unwrap_or(NonZeroU64::MIN)
}

fn unreachable_create() -> Result<Decided, Rejection> {
    // Handled before the match; kept as a rejection rather than a panic.
    Err(Rejection::InvalidState(
        "event creation was mis-routed".into(),
    ))
}

fn accepted(event: InventoryEvent) -> Decided {
    (vec![event], InventoryOutcome::Accepted)
}

fn system_or_admin(meta: &CommandMeta, what: &str) -> Result<(), Rejection> {
    if meta.actor.is_system() || meta.actor.is_admin() {
        Ok(())
    } else {
        Err(Rejection::forbidden(format!(
            "only the platform or an admin can {what}"
        )))
    }
}

fn hold_expired(order_id: OrderId, order: &Order) -> Rejection {
    Rejection::HoldExpired {
        order: order_id.to_string(),
        expired_at: order.expires_at,
    }
}

fn status_word(status: OrderStatus) -> &'static str {
    match status {
        OrderStatus::Held => "held",
        OrderStatus::Paid => "paid",
        OrderStatus::Released => "released",
        OrderStatus::Expired => "expired",
        OrderStatus::Cancelled => "cancelled",
    }
}

/// Whether a ticket secret has [`MIN_SECRET_LEN`] to [`MAX_SECRET_LEN`] characters, none of
/// them whitespace or control characters. Secrets are generated, so nearly always ASCII:
/// that case is one pass over the bytes.
fn printable_secret(secret: &str) -> bool {
    if secret.is_ascii() {
        return (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&secret.len())
            && secret.bytes().all(|b| b.is_ascii_graphic());
    }
    let mut len = 0;
    for c in secret.chars() {
        if c.is_whitespace() || c.is_control() {
            return false;
        }
        len += 1;
    }
    (MIN_SECRET_LEN..=MAX_SECRET_LEN).contains(&len)
}

fn payment_amount(payment: &PaymentInput) -> Result<Money, Rejection> {
    Money::price(payment.amount_minor, &payment.currency)
        .map_err(|e| Rejection::invalid("payment", e.to_string()))
}

fn payment_ref(payment: &PaymentInput) -> Result<String, Rejection> {
    text("paymentRef", &payment.payment_ref, MAX_PAYMENT_REF_LEN)
}

/// A count from outside, within `min..=max`.
fn bounded_count(field: &'static str, value: i64, min: u32, max: u32) -> Result<u32, Rejection> {
    if value < i64::from(min) {
        return Err(Rejection::invalid(
            field,
            format!("{field} must be at least {min} (got {value})"),
        ));
    }
    if value > i64::from(max) {
        return Err(Rejection::invalid(
            field,
            format!("{field} must be at most {max} (got {value})"),
        ));
    }
    u32::try_from(value).map_err(|_| Rejection::invalid(field, format!("{field} is out of range")))
}

/// A trimmed, non-empty single-line-or-paragraph text of at most `max` characters.
fn text(field: &'static str, value: &str, max: usize) -> Result<String, Rejection> {
    let v = value.trim();
    if v.is_empty() {
        return Err(Rejection::invalid(
            field,
            format!("{field} must not be empty"),
        ));
    }
    if v.chars().count() > max {
        return Err(Rejection::invalid(
            field,
            format!("{field} is longer than {max} characters"),
        ));
    }
    if v.chars().any(|c| c.is_control() && c != '\n' && c != '\t') {
        return Err(Rejection::invalid(
            field,
            format!("{field} contains control characters"),
        ));
    }
    Ok(v.to_owned())
}

fn validate_details(d: EventDetails) -> Result<EventDetails, Rejection> {
    let name = text("name", &d.name, MAX_NAME_LEN)?;
    let venue = text("venue", &d.venue, MAX_VENUE_LEN)?;
    let description = d.description.trim().to_owned();
    if description.chars().count() > MAX_DESCRIPTION_LEN {
        return Err(Rejection::invalid(
            "description",
            format!("description is longer than {MAX_DESCRIPTION_LEN} characters"),
        ));
    }
    if d.ends_at <= d.starts_at {
        return Err(Rejection::invalid(
            "endsAt",
            format!(
                "the event must end after it starts ({} is not after {})",
                d.ends_at, d.starts_at
            ),
        ));
    }
    if d.images.len() > MAX_IMAGES {
        return Err(Rejection::invalid(
            "images",
            format!("at most {MAX_IMAGES} images (got {})", d.images.len()),
        ));
    }
    let mut images = Vec::with_capacity(d.images.len());
    for image in &d.images {
        let i = image.trim();
        if i.is_empty()
            || i.chars().count() > MAX_IMAGE_REF_LEN
            || i.chars().any(|c| c.is_whitespace() || c.is_control())
        {
            return Err(Rejection::invalid(
                "images",
                format!(
                    "image reference {image:?} must be 1 to {MAX_IMAGE_REF_LEN} characters without spaces"
                ),
            ));
        }
        images.push(i.to_owned());
    }
    Ok(EventDetails {
        name,
        description,
        venue,
        starts_at: d.starts_at,
        ends_at: d.ends_at,
        images,
    })
}
