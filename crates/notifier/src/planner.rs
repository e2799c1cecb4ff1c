//! The domain planner: turns stored inventory events into notifications.
//!
//! It keeps a small projection of its own in the notifier's database (events' details,
//! orders and their tickets, contacts), updated in the same transaction as the plan, so it
//! can answer "who holds tickets for this event", "what does this order contain" and "what
//! is this user's email" (from the account events) without depending on another read
//! model's timing.
//!
//! | stored event | notifications |
//! |---|---|
//! | `AccountRegistered`, `ProfileUpdated` | none: they keep the contacts (email, name) |
//! | `OrderConfirmed` | `order_confirmed` (email, in-app, webhooks); `event_reminder` scheduled (email, in-app) |
//! | `OrderCancelled` | `order_refunded` when money is owed back, else `order_cancelled`; `event_cancelled` when the whole event was cancelled (email, in-app, webhooks); the order's reminders withdrawn |
//! | `HoldExpired` | `hold_expired` (email, in-app) |
//! | `PaymentRefundOwed` | `order_refunded` (email, in-app) |
//! | `DetailsUpdated` | `event_changed` to every ticket holder (email, in-app) and webhooks; reminders moved with the start time |
//! | `EventCancelled` | reminders withdrawn (each order's own `OrderCancelled` tells its holder) |

use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::account::AccountEvent;
use domain::codec::AnyEvent;
use domain::ids::streams;
use domain::inventory::{EventDetails, InventoryEvent};
use domain::money::Money;
use rusqlite::{OptionalExtension, Transaction, params};
use serde_json::{Value, json};
use store::RecordedEvent;
use uuid::Uuid;

use crate::db::now_ms;
use crate::error::NotifierError;
use crate::outbox::{self, ChannelKind, NotificationKind, PlannedNotification};
use crate::service::Planner;

/// Plans notifications from inventory and account events.
pub struct DomainPlanner {
    /// How long before an event starts its reminder goes out.
    reminder_lead: Duration,
}

impl DomainPlanner {
    /// A planner that sends reminders `reminder_lead` before each event starts.
    pub fn new(reminder_lead: Duration) -> Self {
        Self { reminder_lead }
    }
}

/// Decodes a stored event (upcasting older shapes).
fn decode(event: &RecordedEvent) -> Result<AnyEvent, NotifierError> {
    domain::codec::decode_any(&event.event_type, event.schema_version, &event.data).map_err(|e| {
        NotifierError::InvalidInput(format!(
            "cannot decode {} at {}@{}: {e}",
            event.event_type, event.stream, event.version
        ))
    })
}

/// Types the planner acts on; everything else is skipped without decoding (half of all
/// events are idempotency records).
const RELEVANT: &[&str] = &[
    "AccountRegistered",
    "ProfileUpdated",
    "EventCreated",
    "DetailsUpdated",
    "EventCancelled",
    "HoldPlaced",
    "HoldReleased",
    "HoldExpired",
    "OrderConfirmed",
    "PaymentRefundOwed",
    "OrderCancelled",
];

fn relevant(event: &RecordedEvent) -> bool {
    RELEVANT.contains(&event.event_type.as_str())
}

impl Planner for DomainPlanner {
    fn plan(
        &self,
        tx: &Transaction<'_>,
        event: &RecordedEvent,
    ) -> Result<Vec<PlannedNotification>, NotifierError> {
        if !relevant(event) {
            return Ok(Vec::new());
        }
        let decoded = match decode(event) {
            Ok(d) => d,
            Err(e) => {
                // One undecodable event must not stop every later notification: report
                // it loudly and go on.
                tracing::error!(error = %e, "skipping an event the notifier cannot read");
                metrics::counter!(UNDECODABLE).increment(1);
                return Ok(Vec::new());
            }
        };
        let decoded = match decoded {
            AnyEvent::Inventory(e) => e,
            AnyEvent::Account(e) => {
                if let Some(user) = streams::parse_user(event.stream.as_str()) {
                    save_contact(tx, user.0, e)?;
                }
                return Ok(Vec::new());
            }
            AnyEvent::Email(_) => return Ok(Vec::new()),
        };
        let Some(inventory) = streams::parse_inventory(event.stream.as_str()) else {
            return Ok(Vec::new());
        };
        let mut plan = Plan {
            tx,
            event,
            inventory: inventory.0,
            out: Vec::new(),
        };
        plan.apply(decoded, self.reminder_lead)?;
        Ok(plan.out)
    }
}

/// Counter of stored events the planner could not decode (and skipped).
pub const UNDECODABLE: &str = "notifier_undecodable_events_total";

fn save_contact(
    tx: &Transaction<'_>,
    user: Uuid,
    event: AccountEvent,
) -> Result<(), NotifierError> {
    match event {
        AccountEvent::AccountRegistered(a) => {
            tx.prepare_cached(
                "INSERT INTO users (user_id, email, name) VALUES (?1, ?2, ?3)
                 ON CONFLICT (user_id) DO UPDATE SET email = excluded.email, name = excluded.name",
            )?
            .execute(params![user.to_string(), a.email.as_str(), a.display_name])?;
        }
        AccountEvent::ProfileUpdated(p) => {
            tx.prepare_cached("UPDATE users SET name = ?2 WHERE user_id = ?1")?
                .execute(params![user.to_string(), p.display_name])?;
        }
        _ => {}
    }
    Ok(())
}

/// Name, venue, start and end (unix ms) of a ticketed event.
type EventRow = (String, Option<String>, Option<i64>, Option<i64>);

/// The planning of one event.
struct Plan<'a, 'tx> {
    tx: &'a Transaction<'tx>,
    event: &'a RecordedEvent,
    inventory: Uuid,
    out: Vec<PlannedNotification>,
}

impl Plan<'_, '_> {
    fn apply(
        &mut self,
        event: InventoryEvent,
        reminder_lead: Duration,
    ) -> Result<(), NotifierError> {
        use InventoryEvent as E;
        match event {
            E::EventCreated(e) => self.save_details(&e.details),
            E::DetailsUpdated(e) => {
                let before = self.event_context()?;
                let old_start: Option<i64> = self
                    .tx
                    .prepare_cached("SELECT starts_at FROM events WHERE inventory_id = ?1")?
                    .query_row([self.inventory.to_string()], |r| r.get(0))
                    .optional()?
                    .flatten();
                self.save_details(&e.details)?;
                let new_start = e.details.starts_at.timestamp_millis();
                if old_start != Some(new_start) {
                    let due = reminder_due(new_start, reminder_lead);
                    outbox::reschedule_event_reminders(self.tx, self.inventory, due)?;
                }
                let holders = self.holders()?;
                let event_ctx = self.event_context()?;
                // Pending reminders show the event as it now is.
                self.tx
                    .prepare_cached(
                        "UPDATE outbox SET context = json_set(context, '$.event', json(?2))
                     WHERE inventory_id = ?1 AND kind = 'event_reminder' AND status = 'pending'",
                    )?
                    .execute(params![self.inventory.to_string(), event_ctx.to_string()])?;
                for user in holders {
                    let ctx = json!({
                        "event": event_ctx,
                        "previous": before,
                        "user": self.user_context(user)?,
                    });
                    self.notify_user(NotificationKind::EventChanged, user, ctx, None)?;
                }
                self.notify_webhooks(
                    NotificationKind::EventChanged,
                    json!({"event": event_ctx, "previous": before}),
                )
            }
            E::EventCancelled(e) => {
                self.tx.prepare_cached("UPDATE events SET cancelled = 1, cancel_reason = ?2 WHERE inventory_id = ?1")?.execute(
                    params![self.inventory.to_string(), e.reason],
                )?;
                outbox::cancel_event_reminders(self.tx, self.inventory)?;
                Ok(())
            }
            E::HoldPlaced(h) => {
                self.tx
                    .prepare_cached(
                        "INSERT INTO orders (order_id, inventory_id, user_id, status, tickets)
                     VALUES (?1, ?2, ?3, 'held', '[]')
                     ON CONFLICT (order_id) DO NOTHING",
                    )?
                    .execute(params![
                        h.order_id.to_string(),
                        self.inventory.to_string(),
                        h.user_id.to_string()
                    ])?;
                Ok(())
            }
            E::HoldReleased(h) => self.set_order_status(h.order_id.0, "released"),
            E::HoldExpired(h) => {
                self.set_order_status(h.order_id.0, "expired")?;
                let Some(user) = self.order_user(h.order_id.0)? else {
                    return Ok(());
                };
                let ctx = json!({
                    "event": self.event_context()?,
                    "order": {"id": h.order_id.to_string()},
                    "user": self.user_context(user)?,
                });
                self.notify_user(NotificationKind::HoldExpired, user, ctx, Some(h.order_id.0))
            }
            E::OrderConfirmed(o) => {
                let tickets: Vec<Value> = o
                    .tickets
                    .iter()
                    .map(|t| {
                        json!({
                            "id": t.ticket_id.to_string(),
                            "seat": t.seat.as_ref().map(|s| s.as_str().to_string()),
                        })
                    })
                    .collect();
                let tickets = Value::Array(tickets);
                self.tx.prepare_cached("INSERT INTO orders (order_id, inventory_id, user_id, status, tickets)
                     VALUES (?1, ?2, ?3, 'confirmed', ?4)
                     ON CONFLICT (order_id) DO UPDATE SET status = 'confirmed', tickets = excluded.tickets")?.execute(
                    params![
                        o.order_id.to_string(),
                        self.inventory.to_string(),
                        o.user_id.to_string(),
                        tickets.to_string()
                    ],
                )?;
                let user = o.user_id.0;
                let order = json!({
                    "id": o.order_id.to_string(),
                    "amount": format_money(&o.amount),
                    "tickets": tickets,
                });
                let event_ctx = self.event_context()?;
                let ctx =
                    json!({"event": event_ctx, "order": order, "user": self.user_context(user)?});
                self.notify_user(
                    NotificationKind::OrderConfirmed,
                    user,
                    ctx.clone(),
                    Some(o.order_id.0),
                )?;
                self.notify_webhooks(
                    NotificationKind::OrderConfirmed,
                    json!({"event": event_ctx, "order": order, "user": {"id": user.to_string()}}),
                )?;
                self.schedule_reminder(user, o.order_id.0, ctx, reminder_lead)
            }
            E::OrderCancelled(o) => {
                self.set_order_status(o.order_id.0, "cancelled")?;
                outbox::cancel_order_reminders(self.tx, o.order_id.0)?;
                let user = o.user_id.0;
                let refund = o.refund.as_ref().map(format_money);
                let event_ctx = self.event_context()?;
                let reason: Option<String> = self
                    .tx
                    .prepare_cached("SELECT cancel_reason FROM events WHERE inventory_id = ?1")?
                    .query_row([self.inventory.to_string()], |r| r.get(0))
                    .optional()?
                    .flatten();
                let order = json!({
                    "id": o.order_id.to_string(),
                    "voided_tickets": o.voided_tickets.iter().map(|t| t.to_string()).collect::<Vec<_>>(),
                });
                let kind = if o.reason == domain::inventory::RefundReason::EventCancelled {
                    NotificationKind::EventCancelled
                } else if refund.is_some() {
                    NotificationKind::OrderRefunded
                } else {
                    NotificationKind::OrderCancelled
                };
                let ctx = json!({
                    "event": event_ctx,
                    "order": order,
                    "refund": refund,
                    "reason": reason,
                    "user": self.user_context(user)?,
                });
                self.notify_user(kind, user, ctx, Some(o.order_id.0))?;
                self.notify_webhooks(
                    kind,
                    json!({"event": event_ctx, "order": order, "refund": refund,
                           "user": {"id": user.to_string()}}),
                )
            }
            E::PaymentRefundOwed(p) => {
                let user = p.user_id.0;
                let ctx = json!({
                    "event": self.event_context()?,
                    "order": {"id": p.order_id.to_string(), "voided_tickets": []},
                    "refund": format_money(&p.amount),
                    "user": self.user_context(user)?,
                });
                self.notify_user(
                    NotificationKind::OrderRefunded,
                    user,
                    ctx,
                    Some(p.order_id.0),
                )
            }
            _ => Ok(()),
        }
    }

    fn save_details(&self, d: &EventDetails) -> Result<(), NotifierError> {
        self.tx.prepare_cached("INSERT INTO events (inventory_id, name, venue, starts_at, ends_at) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT (inventory_id) DO UPDATE SET name = excluded.name, venue = excluded.venue,
                 starts_at = excluded.starts_at, ends_at = excluded.ends_at")?.execute(
            params![
                self.inventory.to_string(),
                d.name,
                d.venue,
                d.starts_at.timestamp_millis(),
                d.ends_at.timestamp_millis()
            ],
        )?;
        Ok(())
    }

    fn set_order_status(&self, order: Uuid, status: &str) -> Result<(), NotifierError> {
        self.tx
            .prepare_cached("UPDATE orders SET status = ?2 WHERE order_id = ?1")?
            .execute(params![order.to_string(), status])?;
        Ok(())
    }

    fn order_user(&self, order: Uuid) -> Result<Option<Uuid>, NotifierError> {
        let user: Option<String> = self
            .tx
            .prepare_cached("SELECT user_id FROM orders WHERE order_id = ?1")?
            .query_row([order.to_string()], |r| r.get(0))
            .optional()?;
        user.map(|u| outbox::parse_uuid(&u)).transpose()
    }

    /// Users holding a confirmed order for this event.
    fn holders(&self) -> Result<Vec<Uuid>, NotifierError> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT DISTINCT user_id FROM orders WHERE inventory_id = ?1 AND status = 'confirmed'
             ORDER BY user_id",
        )?;
        let rows = stmt.query_map([self.inventory.to_string()], |r| r.get::<_, String>(0))?;
        let mut out = Vec::new();
        for row in rows {
            out.push(outbox::parse_uuid(&row?)?);
        }
        Ok(out)
    }

    fn event_context(&self) -> Result<Value, NotifierError> {
        let row: Option<EventRow> = self
            .tx
            .prepare_cached(
                "SELECT name, venue, starts_at, ends_at FROM events WHERE inventory_id = ?1",
            )?
            .query_row([self.inventory.to_string()], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?))
            })
            .optional()?;
        let (name, venue, starts, ends) =
            row.unwrap_or_else(|| ("an event".into(), None, None, None));
        Ok(json!({
            "id": self.inventory.to_string(),
            "name": name,
            "venue": venue.unwrap_or_default(),
            "starts_at": starts.map(format_time).unwrap_or_default(),
            "ends_at": ends.map(format_time).unwrap_or_default(),
        }))
    }

    fn contact(&self, user: Uuid) -> Result<Option<(String, Option<String>)>, NotifierError> {
        Ok(self
            .tx
            .prepare_cached("SELECT email, name FROM users WHERE user_id = ?1")?
            .query_row([user.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    fn user_context(&self, user: Uuid) -> Result<Value, NotifierError> {
        let (email, name) = self.contact(user)?.unzip();
        Ok(json!({"id": user.to_string(), "email": email, "name": name.flatten()}))
    }

    /// Email (when the user has a contact) and in-app.
    fn notify_user(
        &mut self,
        kind: NotificationKind,
        user: Uuid,
        context: Value,
        order: Option<Uuid>,
    ) -> Result<(), NotifierError> {
        self.notify_user_at(kind, user, context, order, now_ms())
    }

    fn notify_user_at(
        &mut self,
        kind: NotificationKind,
        user: Uuid,
        context: Value,
        order: Option<Uuid>,
        due_at_ms: i64,
    ) -> Result<(), NotifierError> {
        let mut recipients = vec![(ChannelKind::InApp, user.to_string())];
        if let Some((email, _)) = self.contact(user)? {
            recipients.push((ChannelKind::Email, email));
        }
        for (channel, recipient) in recipients {
            self.out.push(PlannedNotification {
                event_id: self.event.id,
                kind,
                channel,
                recipient,
                context: context.clone(),
                due_at_ms,
                inventory_id: Some(self.inventory),
                order_id: order,
            });
        }
        Ok(())
    }

    fn notify_webhooks(
        &mut self,
        kind: NotificationKind,
        context: Value,
    ) -> Result<(), NotifierError> {
        let mut stmt = self
            .tx
            .prepare_cached("SELECT id FROM webhooks WHERE inventory_id = ?1 ORDER BY id")?;
        let ids = stmt
            .query_map([self.inventory.to_string()], |r| r.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        for id in ids {
            self.out.push(PlannedNotification {
                event_id: self.event.id,
                kind,
                channel: ChannelKind::Webhook,
                recipient: id,
                context: context.clone(),
                due_at_ms: now_ms(),
                inventory_id: Some(self.inventory),
                order_id: None,
            });
        }
        Ok(())
    }

    /// A reminder before the event starts; none when the event is cancelled, has no known
    /// start, or has already started.
    fn schedule_reminder(
        &mut self,
        user: Uuid,
        order: Uuid,
        context: Value,
        lead: Duration,
    ) -> Result<(), NotifierError> {
        let row: Option<(Option<i64>, i64)> = self
            .tx
            .prepare_cached("SELECT starts_at, cancelled FROM events WHERE inventory_id = ?1")?
            .query_row([self.inventory.to_string()], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?;
        let Some((Some(starts_at), 0)) = row else {
            return Ok(());
        };
        if starts_at <= now_ms() {
            return Ok(());
        }
        let due = reminder_due(starts_at, lead);
        self.notify_user_at(
            NotificationKind::EventReminder,
            user,
            context,
            Some(order),
            due,
        )
    }
}

fn reminder_due(starts_at_ms: i64, lead: Duration) -> i64 {
    starts_at_ms.saturating_sub(i64::try_from(lead.as_millis()).unwrap_or(i64::MAX))
}

fn format_time(ms: i64) -> String {
    DateTime::<Utc>::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M UTC").to_string())
        .unwrap_or_default()
}

/// Currencies without minor units (ISO 4217 exponent 0) among those likely to be used.
const ZERO_DECIMAL: &[&str] = &[
    "JPY", "KRW", "VND", "CLP", "ISK", "UGX", "XAF", "XOF", "PYG",
];

/// `EUR 50.00` from 5000 minor units.
pub fn format_money(m: &Money) -> String {
    let currency = m.currency.as_str();
    if ZERO_DECIMAL.contains(&currency) {
        format!("{currency} {}", m.amount_minor)
    } else {
        format!(
            "{currency} {}.{:02}",
            m.amount_minor / 100,
            m.amount_minor % 100
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use crate::outbox::PlannedNotification;
    use chrono::Utc;
    use domain::codec::EventCodec;
    use domain::ids::{Email, TicketId};
    use domain::inventory::{
        DetailsUpdated, EventCancelled, EventCreated, HoldExpired, HoldPlaced, IssuedTicket,
        OrderCancelled, OrderConfirmed, RefundReason,
    };
    use domain::{EventId, OrderId, Role, TierId, UserId};
    use proptest::prelude::*;
    use std::collections::{BTreeMap, BTreeSet};
    use store::{Metadata, Position, StreamName};

    const USERS: usize = 4;

    /// One step of a random history of one ticketed event.
    #[derive(Debug, Clone)]
    enum Op {
        /// User `u` buys (a hold, then its confirmation).
        Buy(usize),
        /// User `u` holds and lets the hold lapse.
        Lapse(usize),
        /// The `k`-th confirmed order (modulo) is cancelled and refunded.
        Cancel(usize),
        /// The start moves by this many hours.
        Move(i64),
        /// The event is cancelled, with its live orders.
        CancelEvent,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0..USERS).prop_map(Op::Buy),
            1 => (0..USERS).prop_map(Op::Lapse),
            2 => (0usize..8).prop_map(Op::Cancel),
            1 => (-48i64..48).prop_map(Op::Move),
            1 => Just(Op::CancelEvent),
        ]
    }

    struct History {
        events: Vec<RecordedEvent>,
        /// Orders confirmed and never cancelled, while the event is not cancelled.
        live_orders: BTreeSet<Uuid>,
        confirmed: Vec<(Uuid, UserId)>,
        event_cancelled: bool,
    }

    fn recorded<E: EventCodec>(stream: &str, e: &E, position: u64) -> RecordedEvent {
        let (event_type, schema_version, data) = domain::codec::encode(e);
        RecordedEvent {
            id: Uuid::from_u128(position as u128 + 1000),
            stream: StreamName::new(stream).expect("stream"),
            version: position,
            position: Position(position),
            event_type: event_type.to_string(),
            schema_version,
            data,
            metadata: Metadata {
                correlation_id: Uuid::nil(),
                causation_id: None,
                acting_user: None,
                recorded_at: Utc::now(),
            },
        }
    }

    fn history(ops: &[Op]) -> History {
        let users: Vec<UserId> = (0..USERS)
            .map(|i| UserId(Uuid::from_u128(i as u128 + 1)))
            .collect();
        let event = EventId(Uuid::from_u128(99));
        let inv = streams::inventory(event);
        let mut h = History {
            events: Vec::new(),
            live_orders: BTreeSet::new(),
            confirmed: Vec::new(),
            event_cancelled: false,
        };
        let push_account = |h: &mut History, e: AccountEvent, user: UserId| {
            let p = h.events.len() as u64 + 1;
            h.events.push(recorded(&streams::user(user), &e, p));
        };
        for (i, u) in users.iter().enumerate() {
            push_account(
                &mut h,
                AccountEvent::AccountRegistered(domain::account::AccountRegistered {
                    user_id: *u,
                    email: Email::parse(&format!("u{i}@example.com")).expect("email"),
                    display_name: format!("U{i}"),
                    password_hash: "x".into(),
                    roles: BTreeSet::from([Role::Customer]),
                    at: Utc::now(),
                }),
                *u,
            );
        }
        let mut start = Utc::now() + chrono::Duration::days(20);
        let details = |start| EventDetails {
            name: "E".into(),
            description: String::new(),
            venue: "V".into(),
            starts_at: start,
            ends_at: start + chrono::Duration::hours(2),
            images: vec![],
        };
        let push = |h: &mut History, e: InventoryEvent| {
            let p = h.events.len() as u64 + 1;
            h.events.push(recorded(&inv, &e, p));
        };
        push(
            &mut h,
            InventoryEvent::EventCreated(EventCreated {
                event_id: event,
                organizer: UserId(Uuid::from_u128(77)),
                details: details(start),
            }),
        );
        let money = Money::price(1000, "EUR").expect("price");
        let mut n = 0u128;
        let mut hold = |h: &mut History, user: UserId| {
            n += 1;
            let order = OrderId(Uuid::from_u128(10_000 + n));
            push(
                h,
                InventoryEvent::HoldPlaced(HoldPlaced {
                    order_id: order,
                    user_id: user,
                    tier_id: TierId(Uuid::from_u128(5)),
                    quantity: 1,
                    seats: vec![],
                    total: money,
                    placed_at: Utc::now(),
                    expires_at: Utc::now(),
                    command: None,
                }),
            );
            order
        };
        for op in ops {
            if h.event_cancelled {
                break;
            }
            match *op {
                Op::Buy(u) => {
                    let order = hold(&mut h, users[u]);
                    push(
                        &mut h,
                        InventoryEvent::OrderConfirmed(OrderConfirmed {
                            order_id: order,
                            user_id: users[u],
                            payment_ref: "p".into(),
                            amount: money,
                            tickets: vec![IssuedTicket {
                                ticket_id: TicketId(Uuid::from_u128(20_000 + order.0.as_u128())),
                                secret: "s".into(),
                                seat: None,
                            }],
                            at: Utc::now(),
                            command: None,
                        }),
                    );
                    h.live_orders.insert(order.0);
                    h.confirmed.push((order.0, users[u]));
                }
                Op::Lapse(u) => {
                    let order = hold(&mut h, users[u]);
                    push(
                        &mut h,
                        InventoryEvent::HoldExpired(HoldExpired {
                            order_id: order,
                            at: Utc::now(),
                        }),
                    );
                }
                Op::Cancel(k) => {
                    if h.confirmed.is_empty() {
                        continue;
                    }
                    let (order, user) = h.confirmed[k % h.confirmed.len()];
                    if h.live_orders.remove(&order) {
                        push(
                            &mut h,
                            InventoryEvent::OrderCancelled(OrderCancelled {
                                order_id: OrderId(order),
                                user_id: user,
                                refund: Some(money),
                                reason: RefundReason::CancelledByRequest,
                                voided_tickets: vec![],
                                at: Utc::now(),
                            }),
                        );
                    }
                }
                Op::Move(hours) => {
                    start += chrono::Duration::hours(hours);
                    push(
                        &mut h,
                        InventoryEvent::DetailsUpdated(DetailsUpdated {
                            details: details(start),
                        }),
                    );
                }
                Op::CancelEvent => {
                    push(
                        &mut h,
                        InventoryEvent::EventCancelled(EventCancelled {
                            reason: "r".into(),
                            at: Utc::now(),
                        }),
                    );
                    let live: Vec<_> = h.live_orders.iter().copied().collect();
                    for order in live {
                        let user = h.confirmed.iter().find(|c| c.0 == order).map(|c| c.1);
                        push(
                            &mut h,
                            InventoryEvent::OrderCancelled(OrderCancelled {
                                order_id: OrderId(order),
                                user_id: user.unwrap_or(users[0]),
                                refund: Some(money),
                                reason: RefundReason::EventCancelled,
                                voided_tickets: vec![],
                                at: Utc::now(),
                            }),
                        );
                    }
                    h.live_orders.clear();
                    h.event_cancelled = true;
                }
            }
        }
        h
    }

    /// The outbox by key (event id, kind, channel, recipient): status and order.
    type Outbox = BTreeMap<(Uuid, String, String, String), (String, Option<String>)>;

    /// Plans `events` in batches of the given sizes (cycled), each batch in one
    /// transaction, as the planner task does; a batch whose index is in `crash_after` is
    /// planned, rolled back (a crash before commit), and planned again.
    fn plan_all(
        db: &Db,
        events: &[RecordedEvent],
        batches: &[usize],
        crash_after: &BTreeSet<usize>,
    ) -> Outbox {
        let planner = DomainPlanner::new(Duration::from_secs(3600));
        db.call_blocking(|conn| {
            let mut rest = events;
            let mut i = 0;
            while !rest.is_empty() {
                let size = batches[i % batches.len()].clamp(1, rest.len());
                let (batch, tail) = rest.split_at(size);
                let attempts = if crash_after.contains(&i) { 2 } else { 1 };
                for attempt in 0..attempts {
                    let tx = conn.transaction()?;
                    for e in batch {
                        let plan: Vec<PlannedNotification> = planner.plan(&tx, e)?;
                        outbox::insert_planned(&tx, &plan, 0)?;
                    }
                    outbox::set_checkpoint(&tx, batch[batch.len() - 1].position.0)?;
                    if attempt + 1 == attempts {
                        tx.commit()?;
                    } // else dropped: rolled back
                }
                rest = tail;
                i += 1;
            }
            let mut stmt = conn.prepare(
                "SELECT event_id, kind, channel, recipient, status, order_id FROM outbox",
            )?;
            let rows = stmt.query_map([], |r| {
                Ok((
                    (
                        outbox::parse_uuid(&r.get::<_, String>(0)?).unwrap_or_default(),
                        r.get::<_, String>(1)?,
                        r.get::<_, String>(2)?,
                        r.get::<_, String>(3)?,
                    ),
                    (r.get::<_, String>(4)?, r.get::<_, Option<String>>(5)?),
                ))
            })?;
            Ok(rows.collect::<Result<BTreeMap<_, _>, _>>()?)
        })
        .expect("plan")
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Whatever the history and however it is split into batches (and re-planned
        /// after crashes), the outbox is the same, and it holds: one confirmation per
        /// confirmed order, by email and in-app; pending reminders exactly for the orders
        /// still live on an event that is not cancelled; a cancellation notice for each
        /// order the event's cancellation cancelled.
        #[test]
        fn plan_is_complete_and_independent_of_batching(
            ops in proptest::collection::vec(op(), 0..30),
            batches in proptest::collection::vec(1usize..8, 1..4),
            crash_after in proptest::collection::btree_set(0usize..40, 0..5),
        ) {
            let h = history(&ops);
            let dir = tempfile::tempdir().expect("tempdir");
            let one = Db::open(&dir.path().join("a.db")).expect("db");
            let other = Db::open(&dir.path().join("b.db")).expect("db");
            let reference = plan_all(&one, &h.events, &[usize::MAX], &BTreeSet::new());
            let split = plan_all(&other, &h.events, &batches, &crash_after);
            prop_assert_eq!(&reference, &split);

            let count = |kind: &str, channel: &str, status: Option<&str>| {
                reference
                    .iter()
                    .filter(|(k, v)| k.1 == kind && k.2 == channel && status.is_none_or(|s| v.0 == s))
                    .count()
            };
            for channel in ["email", "in_app"] {
                prop_assert_eq!(count("order_confirmed", channel, None), h.confirmed.len());
            }
            let pending_reminders: BTreeSet<Uuid> = reference
                .iter()
                .filter(|(k, v)| k.1 == "event_reminder" && v.0 == "pending")
                .filter_map(|(_, v)| v.1.as_deref().and_then(|o| Uuid::parse_str(o).ok()))
                .collect();
            prop_assert_eq!(&pending_reminders, &h.live_orders);
            let cancelled_by_event = h
                .events
                .iter()
                .filter(|e| e.event_type == "OrderCancelled")
                .filter(|e| String::from_utf8_lossy(&e.data).contains("EVENT_CANCELLED"))
                .count();
            prop_assert_eq!(count("event_cancelled", "email", None), cancelled_by_event);
            // Nothing planned is addressed to an unknown recipient.
            for k in reference.keys() {
                if k.2 == "email" {
                    prop_assert!(k.3.ends_with("@example.com"), "{:?}", k);
                }
            }
        }
    }
}
