//! Organizer sales: tickets sold, held and cancelled and the revenue, per tier and per day.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, NaiveDate, Utc};
use domain::inventory::InventoryEvent;
use domain::money::{Currency, Money};
use domain::{EventId, OrderId, TierId, UserId};
use serde::{Deserialize, Serialize};
use store::{Position, RecordedEvent};

use crate::decode;
use crate::runner::{ApplyError, Projected, ReadModel};

/// Sales of one tier, over the event's whole life or one day.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SalesFigures {
    /// Tickets of paid orders that are not cancelled (per day: confirmed that day).
    pub sold: u32,
    /// Tickets in live holds (per day: holds placed that day).
    pub held: u32,
    /// Tickets of cancelled orders, paid or held (per day: cancelled that day).
    pub cancelled: u32,
    /// Net revenue in minor units per currency: payments less refunds owed.
    pub revenue: BTreeMap<Currency, i64>,
}

/// Sales of one tier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierSales {
    pub tier_id: TierId,
    pub name: String,
    pub figures: SalesFigures,
}

/// Sales of one tier on one day (UTC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DaySales {
    pub day: NaiveDate,
    pub tier_id: TierId,
    pub figures: SalesFigures,
}

/// An event's sales report.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventSales {
    pub event_id: EventId,
    pub organizer: UserId,
    /// Per tier, in the order tiers were added.
    pub tiers: Vec<TierSales>,
    /// Per day and tier, oldest day first.
    pub days: Vec<DaySales>,
    /// Position of the last event of its stream folded in.
    pub position: Position,
}

/// One event's figures.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct EventEntry {
    /// Who may see the report.
    organizer: UserId,
    /// Figures per tier, in the order tiers were added.
    tiers: Vec<TierSales>,
    /// Figures per UTC day and tier.
    days: BTreeMap<NaiveDate, BTreeMap<TierId, SalesFigures>>,
    /// Position of the last event that changed it.
    position: Position,
}

impl EventEntry {
    fn tier(&mut self, id: TierId) -> Option<&mut SalesFigures> {
        self.tiers
            .iter_mut()
            .find(|t| t.tier_id == id)
            .map(|t| &mut t.figures)
    }

    fn day(&mut self, at: DateTime<Utc>, tier: TierId) -> &mut SalesFigures {
        self.days
            .entry(at.date_naive())
            .or_default()
            .entry(tier)
            .or_default()
    }
}

/// Where an order is, as far as the figures are concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Stage {
    Held,
    Paid,
    Closed,
}

/// What the figures need to remember of an order, whose later events name only it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct OrderSlot {
    /// Its event.
    event: EventId,
    /// Its tier.
    tier: TierId,
    /// Its tickets.
    quantity: u32,
    /// Held, paid or closed.
    stage: Stage,
}

/// The sales read model.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct SalesModel {
    /// Figures of every created event.
    events: HashMap<EventId, EventEntry>,
    /// Every order, to move its tickets between held, sold and cancelled.
    orders: HashMap<OrderId, OrderSlot>,
}

impl ReadModel for SalesModel {
    type Feeds = ();
    const NAME: &'static str = "sales";
    const SNAPSHOT_VERSION: u32 = 1;

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ApplyError> {
        let Some(event_id) = decode::inventory_stream(event) else {
            return Ok(());
        };
        if event.event_type == decode::IDEMPOTENCY_RECORD {
            return Ok(());
        }
        let decoded = decode::inventory_event(event)?;
        self.fold(event_id, event.position, &decoded);
        Ok(())
    }
}

fn add_revenue(figures: &mut SalesFigures, money: Money, sign: i64) {
    let amount = i64::try_from(money.amount_minor).unwrap_or(i64::MAX);
    let slot = figures.revenue.entry(money.currency).or_default();
    *slot = slot.saturating_add(sign.saturating_mul(amount));
}

impl SalesModel {
    fn fold(&mut self, event_id: EventId, position: Position, event: &InventoryEvent) {
        use InventoryEvent as E;
        if let E::EventCreated(e) = event {
            self.events.entry(event_id).or_insert(EventEntry {
                organizer: e.organizer,
                tiers: Vec::new(),
                days: BTreeMap::new(),
                position,
            });
            return;
        }
        let Some(entry) = self.events.get_mut(&event_id) else {
            return;
        };
        entry.position = position;
        match event {
            E::TierAdded(e) if !entry.tiers.iter().any(|t| t.tier_id == e.tier_id) => {
                entry.tiers.push(TierSales {
                    tier_id: e.tier_id,
                    name: e.name.clone(),
                    figures: SalesFigures::default(),
                });
            }
            E::TierRenamed(e) => {
                if let Some(t) = entry.tiers.iter_mut().find(|t| t.tier_id == e.tier_id) {
                    t.name = e.name.clone();
                }
            }
            E::HoldPlaced(e) => {
                if self.orders.contains_key(&e.order_id) {
                    return;
                }
                let Some(tier) = entry.tier(e.tier_id) else {
                    return;
                };
                tier.held += e.quantity;
                entry.day(e.placed_at, e.tier_id).held += e.quantity;
                self.orders.insert(
                    e.order_id,
                    OrderSlot {
                        event: event_id,
                        tier: e.tier_id,
                        quantity: e.quantity,
                        stage: Stage::Held,
                    },
                );
            }
            E::HoldReleased(e) => self.close_hold(event_id, e.order_id),
            E::HoldExpired(e) => self.close_hold(event_id, e.order_id),
            E::OrderConfirmed(e) => {
                let Some(slot) = self.orders.get_mut(&e.order_id) else {
                    return;
                };
                if slot.stage != Stage::Held || slot.event != event_id {
                    return;
                }
                slot.stage = Stage::Paid;
                let (tier_id, quantity) = (slot.tier, slot.quantity);
                if let Some(t) = entry.tier(tier_id) {
                    t.held = t.held.saturating_sub(quantity);
                    t.sold += quantity;
                    add_revenue(t, e.amount, 1);
                }
                let day = entry.day(e.at, tier_id);
                day.sold += quantity;
                add_revenue(day, e.amount, 1);
            }
            E::OrderCancelled(e) => {
                let Some(slot) = self.orders.get_mut(&e.order_id) else {
                    return;
                };
                if slot.event != event_id || slot.stage == Stage::Closed {
                    return;
                }
                let was = slot.stage;
                slot.stage = Stage::Closed;
                let (tier_id, quantity) = (slot.tier, slot.quantity);
                if let Some(t) = entry.tier(tier_id) {
                    match was {
                        Stage::Held => t.held = t.held.saturating_sub(quantity),
                        _ => t.sold = t.sold.saturating_sub(quantity),
                    }
                    t.cancelled += quantity;
                    if let Some(refund) = e.refund {
                        add_revenue(t, refund, -1);
                    }
                }
                let day = entry.day(e.at, tier_id);
                day.cancelled += quantity;
                if let Some(refund) = e.refund {
                    add_revenue(day, refund, -1);
                }
            }
            _ => {}
        }
    }

    fn close_hold(&mut self, event_id: EventId, order: OrderId) {
        let Some(slot) = self.orders.get_mut(&order) else {
            return;
        };
        if slot.stage != Stage::Held || slot.event != event_id {
            return;
        }
        slot.stage = Stage::Closed;
        let (tier_id, quantity) = (slot.tier, slot.quantity);
        if let Some(t) = self.events.get_mut(&event_id).and_then(|e| e.tier(tier_id)) {
            t.held = t.held.saturating_sub(quantity);
        }
    }

    /// The sales report of one event.
    pub fn event_sales(&self, id: EventId) -> Option<EventSales> {
        let e = self.events.get(&id)?;
        Some(EventSales {
            event_id: id,
            organizer: e.organizer,
            tiers: e.tiers.clone(),
            days: e
                .days
                .iter()
                .flat_map(|(day, tiers)| {
                    tiers.iter().map(|(tier, f)| DaySales {
                        day: *day,
                        tier_id: *tier,
                        figures: f.clone(),
                    })
                })
                .collect(),
            position: e.position,
        })
    }
}

/// Organizer sales as queries see them. Cheap to clone.
#[derive(Clone)]
pub struct Sales {
    pub(crate) inner: Arc<Projected<SalesModel>>,
}

impl Sales {
    /// The sales report of one event, or `None` if it does not exist.
    pub fn event_sales(&self, id: EventId) -> Option<EventSales> {
        self.inner.read(|m| m.event_sales(id))
    }
}
