//! The event catalogue: every ticketed event with its details, tiers, live counts and seat
//! states, listed with filters and cursor pagination, plus the live availability feeds.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::inventory::{EventDetails, EventStatus, InventoryEvent, SalesWindow};
use domain::money::Money;
use domain::{EventId, OrderId, SeatId, TierId, UserId};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use store::{Position, RecordedEvent};
use tokio::sync::watch;

use crate::QueryError;
use crate::decode;
use crate::page::{self, Page, PageRequest};
use crate::runner::{ApplyError, Projected, ReadModel};

/// Whether a seat can be bought, as buyers see it (who holds it is not public).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SeatStatus {
    /// Free to hold.
    Available,
    /// In a live hold.
    Held,
    /// Sold to a paid order.
    Sold,
}

/// A tier with its price and live counts.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TierAvailability {
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

/// The seat map of an event with each seat's state. The vectors are shared copy-on-write
/// between the catalogue and its live feeds, so publishing a new value copies only the
/// states (one byte per seat), and only when a reader still holds the previous one.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SeatMap {
    /// Seat ids in the order they were added.
    ids: Arc<Vec<SeatId>>,
    /// Index into the event's tiers of each seat.
    tiers: Arc<Vec<u32>>,
    /// State of each seat.
    states: Arc<Vec<SeatStatus>>,
}

impl SeatMap {
    /// Number of seats.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether the event has no seat map.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Each seat with the index of its tier and its state.
    pub fn iter(&self) -> impl Iterator<Item = (&SeatId, u32, SeatStatus)> + '_ {
        self.ids
            .iter()
            .zip(self.tiers.iter())
            .zip(self.states.iter())
            .map(|((id, t), s)| (id, *t, *s))
    }

    /// How many seats are in each state: (available, held, sold).
    pub fn counts(&self) -> (usize, usize, usize) {
        let mut c = (0, 0, 0);
        for s in self.states.iter() {
            match s {
                SeatStatus::Available => c.0 += 1,
                SeatStatus::Held => c.1 += 1,
                SeatStatus::Sold => c.2 += 1,
            }
        }
        c
    }
}

/// A seat with its tier and state.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeatView {
    pub seat: SeatId,
    pub tier_id: TierId,
    pub status: SeatStatus,
}

/// The live availability of one event: what a subscriber is sent at once and after every
/// change. Each value is complete, so a reader that skipped values loses nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Availability {
    pub event_id: EventId,
    /// Global position of the last event that changed this event.
    pub position: Position,
    pub status: EventStatus,
    pub tiers: Vec<TierAvailability>,
    /// Seat states (empty for an event without a seat map).
    #[serde(skip)]
    pub seats: SeatMap,
}

impl Availability {
    /// Every seat with its tier id and state.
    pub fn seats(&self) -> impl Iterator<Item = SeatView> + '_ {
        self.seats.iter().map(|(id, t, status)| SeatView {
            seat: id.clone(),
            tier_id: self
                .tiers
                .get(t as usize)
                .map(|t| t.tier_id)
                .unwrap_or(TierId(uuid::Uuid::nil())),
            status,
        })
    }
}

/// An event as listed and shown.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    pub event_id: EventId,
    pub organizer: UserId,
    pub details: EventDetails,
    pub status: EventStatus,
    pub sales_window: Option<SalesWindow>,
    pub per_user_limit: Option<u32>,
    pub tiers: Vec<TierAvailability>,
    /// Number of seats in the seat map (0 for general admission only).
    pub seat_count: usize,
    /// Who checks its tickets in at the door, besides the organizer and admins.
    pub door_staff: Vec<UserId>,
    /// When the event was created (its first stored event).
    pub created_at: DateTime<Utc>,
    /// Global position of the last event that changed this event (idempotency records,
    /// payments owed back and check-ins change nothing here).
    pub position: Position,
}

/// An event as a hold or purchase of one of its tiers sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SaleTarget {
    pub organizer: UserId,
    pub status: EventStatus,
    /// Whether the event has the tier asked for.
    pub has_tier: bool,
}

/// Which events to list. Every set field must match.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Case-insensitive text found in the name or the venue.
    pub text: Option<String>,
    /// Events starting at or after this instant.
    pub starts_from: Option<DateTime<Utc>>,
    /// Events starting strictly before this instant.
    pub starts_before: Option<DateTime<Utc>>,
    /// Events in one of these states (`None`: any state).
    pub statuses: Option<Vec<EventStatus>>,
    /// Events of this organizer.
    pub organizer: Option<UserId>,
}

/// Longest text filter accepted, in characters.
pub const MAX_TEXT_FILTER_LEN: usize = 200;

/// A tier with its live counts.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct TierEntry {
    /// The tier's id.
    id: TierId,
    /// Display name, shown in listings.
    name: String,
    /// Price of one ticket for new orders.
    price: Money,
    /// Tickets the tier sells in all (for a seated tier, its seats).
    capacity: u32,
    /// Tickets of paid, not cancelled orders.
    sold: u32,
    /// Tickets in live holds.
    held: u32,
    /// Whether it sells named seats.
    seated: bool,
}

impl TierEntry {
    fn view(&self) -> TierAvailability {
        TierAvailability {
            tier_id: self.id,
            name: self.name.clone(),
            price: self.price,
            capacity: self.capacity,
            sold: self.sold,
            held: self.held,
            available: self
                .capacity
                .saturating_sub(self.sold.saturating_add(self.held)),
            seated: self.seated,
        }
    }
}

/// One event as the catalogue keeps it.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct EventEntry {
    /// Who runs it (organizer listings, sales access).
    organizer: UserId,
    /// What buyers see.
    details: EventDetails,
    /// Lower-cased name and venue, matched by the text filter.
    search: String,
    /// Draft, published or cancelled (listing filter).
    status: EventStatus,
    /// When tickets sell, if restricted.
    sales_window: Option<SalesWindow>,
    /// Most tickets per buyer, if limited.
    per_user_limit: Option<u32>,
    /// Tiers in the order they were added.
    tiers: Vec<TierEntry>,
    /// Seat states, shared with the availability feeds.
    seats: SeatMap,
    /// Seat id -> index in `seats`.
    seat_index: HashMap<SeatId, u32>,
    /// Door staff, in the order they were assigned.
    #[serde(default)]
    door_staff: Vec<UserId>,
    /// When the event was created, shown in listings.
    created_at: DateTime<Utc>,
    /// Position of the last event of this stream folded in.
    position: Position,
}

impl EventEntry {
    fn view(&self, id: EventId) -> EventView {
        EventView {
            event_id: id,
            organizer: self.organizer,
            details: self.details.clone(),
            status: self.status,
            sales_window: self.sales_window,
            per_user_limit: self.per_user_limit,
            tiers: self.tiers.iter().map(TierEntry::view).collect(),
            seat_count: self.seats.len(),
            door_staff: self.door_staff.clone(),
            created_at: self.created_at,
            position: self.position,
        }
    }

    fn availability(&self, id: EventId) -> Availability {
        Availability {
            event_id: id,
            position: self.position,
            status: self.status,
            tiers: self.tiers.iter().map(TierEntry::view).collect(),
            seats: self.seats.clone(),
        }
    }

    fn tier(&mut self, id: TierId) -> Option<&mut TierEntry> {
        self.tiers.iter_mut().find(|t| t.id == id)
    }

    fn set_seats(&mut self, seats: &[u32], status: SeatStatus) {
        if seats.is_empty() {
            return;
        }
        let states = Arc::make_mut(&mut self.seats.states);
        for &s in seats {
            if let Some(slot) = states.get_mut(s as usize) {
                *slot = status;
            }
        }
    }
}

fn search_text(details: &EventDetails) -> String {
    format!("{}\n{}", details.name, details.venue).to_lowercase()
}

/// What the catalogue remembers of an order: enough to undo its counts when it closes.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct OrderSlot {
    /// The event whose counts it changes.
    event: EventId,
    /// The tier whose counts it changes.
    tier: TierId,
    /// Tickets it holds or bought.
    quantity: u32,
    /// Indexes of its seats in the event's seat map.
    seats: Vec<u32>,
    /// Held, paid, or closed (released, expired, cancelled).
    state: SlotState,
}

/// Where an order is, as far as stock is concerned.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum SlotState {
    Held,
    Paid,
    Closed,
}

/// The catalogue read model.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct CatalogueModel {
    /// Every created event.
    events: HashMap<EventId, EventEntry>,
    /// Listing order: start time, then id (stable and unique).
    listing: BTreeSet<(DateTime<Utc>, EventId)>,
    /// Every order, so that closing one can undo its counts (its closing event names
    /// only the order).
    orders: HashMap<OrderId, OrderSlot>,
    /// Events changed in the current batch, whose availability is published at its end.
    #[serde(skip)]
    dirty: HashSet<EventId>,
}

/// Live availability feeds, one latest-value channel per event that someone watches.
#[derive(Default)]
pub struct AvailabilityFeeds {
    /// The latest value of each watched event; entries without receivers are dropped at
    /// the event's next change.
    senders: Mutex<HashMap<EventId, watch::Sender<Arc<Availability>>>>,
}

impl ReadModel for CatalogueModel {
    type Feeds = AvailabilityFeeds;
    const NAME: &'static str = "catalogue";
    const SNAPSHOT_VERSION: u32 = 2;

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ApplyError> {
        let Some(event_id) = decode::inventory_stream(event) else {
            return Ok(());
        };
        if event.event_type == decode::IDEMPOTENCY_RECORD {
            return Ok(());
        }
        let decoded = decode::inventory_event(event)?;
        self.fold(event_id, event, &decoded);
        Ok(())
    }

    fn end_batch(&mut self, feeds: &AvailabilityFeeds, _checkpoint: Position) {
        if self.dirty.is_empty() {
            return;
        }
        let mut senders = feeds.senders.lock();
        for id in self.dirty.drain() {
            let Some(sender) = senders.get(&id) else {
                continue;
            };
            if sender.receiver_count() == 0 {
                senders.remove(&id);
                continue;
            }
            if let Some(entry) = self.events.get(&id) {
                // Never waits on readers: the value is replaced, not queued.
                sender.send_replace(Arc::new(entry.availability(id)));
            }
        }
    }
}

impl CatalogueModel {
    fn fold(&mut self, event_id: EventId, recorded: &RecordedEvent, event: &InventoryEvent) {
        use InventoryEvent as E;
        if let E::EventCreated(e) = event {
            if !self.events.contains_key(&event_id) {
                self.listing.insert((e.details.starts_at, event_id));
                self.events.insert(
                    event_id,
                    EventEntry {
                        organizer: e.organizer,
                        search: search_text(&e.details),
                        details: e.details.clone(),
                        status: EventStatus::Draft,
                        sales_window: None,
                        per_user_limit: None,
                        tiers: Vec::new(),
                        seats: SeatMap::default(),
                        seat_index: HashMap::new(),
                        door_staff: Vec::new(),
                        created_at: recorded.metadata.recorded_at,
                        position: recorded.position,
                    },
                );
                self.dirty.insert(event_id);
            }
            return;
        }
        let Some(entry) = self.events.get_mut(&event_id) else {
            // Only events of a created event change anything.
            return;
        };
        entry.position = recorded.position;
        self.dirty.insert(event_id);
        match event {
            E::EventCreated(_) => {}
            E::DetailsUpdated(e) => {
                if e.details.starts_at != entry.details.starts_at {
                    self.listing.remove(&(entry.details.starts_at, event_id));
                    self.listing.insert((e.details.starts_at, event_id));
                }
                entry.search = search_text(&e.details);
                entry.details = e.details.clone();
            }
            E::SalesWindowSet(e) => {
                entry.sales_window = Some(SalesWindow {
                    opens_at: e.opens_at,
                    closes_at: e.closes_at,
                })
            }
            E::PerUserLimitSet(e) => entry.per_user_limit = e.limit,
            E::DoorStaffAssigned(e) if !entry.door_staff.contains(&e.user_id) => {
                entry.door_staff.push(e.user_id);
            }
            E::DoorStaffUnassigned(e) => entry.door_staff.retain(|u| *u != e.user_id),
            E::EventPublished(_) => entry.status = EventStatus::Published,
            E::EventCancelled(_) => entry.status = EventStatus::Cancelled,
            E::TierAdded(e) if !entry.tiers.iter().any(|t| t.id == e.tier_id) => {
                entry.tiers.push(TierEntry {
                    id: e.tier_id,
                    name: e.name.clone(),
                    price: e.price,
                    capacity: e.capacity,
                    sold: 0,
                    held: 0,
                    seated: e.seated,
                });
            }
            E::TierRenamed(e) => {
                if let Some(t) = entry.tier(e.tier_id) {
                    t.name = e.name.clone();
                }
            }
            E::TierRepriced(e) => {
                if let Some(t) = entry.tier(e.tier_id) {
                    t.price = e.price;
                }
            }
            E::TierResized(e) => {
                if let Some(t) = entry.tier(e.tier_id) {
                    t.capacity = e.capacity;
                }
            }
            E::SeatsAdded(e) => {
                for a in &e.seats {
                    let Some(t) = entry.tiers.iter().position(|t| t.id == a.tier_id) else {
                        continue;
                    };
                    if entry.seat_index.contains_key(&a.seat) {
                        continue;
                    }
                    let Ok(i) = u32::try_from(entry.seats.len()) else {
                        continue;
                    };
                    entry.seat_index.insert(a.seat.clone(), i);
                    Arc::make_mut(&mut entry.seats.ids).push(a.seat.clone());
                    Arc::make_mut(&mut entry.seats.tiers).push(t as u32);
                    Arc::make_mut(&mut entry.seats.states).push(SeatStatus::Available);
                    entry.tiers[t].capacity += 1;
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
                let seats: Vec<u32> = e
                    .seats
                    .iter()
                    .filter_map(|s| entry.seat_index.get(s).copied())
                    .collect();
                entry.set_seats(&seats, SeatStatus::Held);
                self.orders.insert(
                    e.order_id,
                    OrderSlot {
                        event: event_id,
                        tier: e.tier_id,
                        quantity: e.quantity,
                        seats,
                        state: SlotState::Held,
                    },
                );
            }
            E::HoldReleased(e) => close_hold(entry, &mut self.orders, e.order_id),
            E::HoldExpired(e) => close_hold(entry, &mut self.orders, e.order_id),
            E::OrderConfirmed(e) => {
                let Some(slot) = self.orders.get_mut(&e.order_id) else {
                    return;
                };
                if slot.state != SlotState::Held || slot.event != event_id {
                    return;
                }
                slot.state = SlotState::Paid;
                if let Some(t) = entry.tier(slot.tier) {
                    t.held = t.held.saturating_sub(slot.quantity);
                    t.sold += slot.quantity;
                }
                entry.set_seats(&slot.seats, SeatStatus::Sold);
            }
            E::OrderCancelled(e) => {
                let Some(slot) = self.orders.get_mut(&e.order_id) else {
                    return;
                };
                if slot.event != event_id {
                    return;
                }
                match slot.state {
                    SlotState::Held => close_hold(entry, &mut self.orders, e.order_id),
                    SlotState::Paid => {
                        slot.state = SlotState::Closed;
                        if let Some(t) = entry.tier(slot.tier) {
                            t.sold = t.sold.saturating_sub(slot.quantity);
                        }
                        entry.set_seats(&slot.seats, SeatStatus::Available);
                    }
                    SlotState::Closed => {}
                }
            }
            // Refunds, check-ins and idempotency records change no stock.
            _ => {}
        }
    }

    /// One event.
    pub fn event(&self, id: EventId) -> Option<EventView> {
        self.events.get(&id).map(|e| e.view(id))
    }

    /// What a hold or purchase of `tier` needs to know of the event, copying nothing else.
    pub fn sale_target(&self, id: EventId, tier: TierId) -> Option<SaleTarget> {
        self.events.get(&id).map(|e| SaleTarget {
            organizer: e.organizer,
            status: e.status,
            has_tier: e.tiers.iter().any(|t| t.id == tier),
        })
    }

    /// The events among `ids` that exist, by id (for batch loaders).
    pub fn events_by_ids(&self, ids: &[EventId]) -> HashMap<EventId, EventView> {
        ids.iter()
            .filter_map(|id| self.event(*id).map(|v| (*id, v)))
            .collect()
    }

    /// The events `user` is door staff of, not cancelled, by start time.
    pub fn staffed_by(&self, user: UserId) -> Vec<EventView> {
        self.listing
            .iter()
            .filter_map(|(_, id)| self.events.get(id).map(|e| (*id, e)))
            .filter(|(_, e)| e.status != EventStatus::Cancelled && e.door_staff.contains(&user))
            .map(|(id, e)| e.view(id))
            .collect()
    }

    /// Seat states of an event (empty for one without seats), or `None` if it does not exist.
    pub fn seats(&self, id: EventId) -> Option<Vec<SeatView>> {
        self.seat_page(id, 0, usize::MAX)
    }

    /// At most `limit` seat states of an event from the `offset`-th on, or `None` if it
    /// does not exist.
    pub fn seat_page(&self, id: EventId, offset: usize, limit: usize) -> Option<Vec<SeatView>> {
        self.events.get(&id).map(|e| {
            e.availability(id)
                .seats()
                .skip(offset)
                .take(limit)
                .collect()
        })
    }

    /// The current availability of an event.
    pub fn availability(&self, id: EventId) -> Option<Availability> {
        self.events.get(&id).map(|e| e.availability(id))
    }

    /// Number of events in the catalogue.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether the catalogue is empty.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Ids of every event, in listing order.
    pub fn event_ids(&self) -> Vec<EventId> {
        self.listing.iter().map(|(_, id)| *id).collect()
    }

    /// Events matching `filter`, ordered by start time then id, one page at a time.
    pub fn list(
        &self,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<EventView>, QueryError> {
        let limit = page.limit()?;
        let text = match &filter.text {
            Some(t) if t.chars().count() > MAX_TEXT_FILTER_LEN => {
                return Err(QueryError::InvalidInput(format!(
                    "text filter is longer than {MAX_TEXT_FILTER_LEN} characters"
                )));
            }
            Some(t) if !t.trim().is_empty() => Some(t.trim().to_lowercase()),
            _ => None,
        };
        if let (Some(from), Some(before)) = (filter.starts_from, filter.starts_before) {
            if from >= before {
                return Err(QueryError::InvalidInput(format!(
                    "empty date range: {from} is not before {before}"
                )));
            }
        }
        use std::ops::Bound;
        let lower = match &page.after {
            Some(cursor) => {
                let key: (DateTime<Utc>, EventId) = page::decode(CURSOR_KIND, cursor)?;
                Bound::Excluded(key)
            }
            None => match filter.starts_from {
                Some(from) => Bound::Included((from, EventId(uuid::Uuid::nil()))),
                None => Bound::Unbounded,
            },
        };
        let mut items = Vec::with_capacity(limit);
        let mut last = None;
        let mut has_next_page = false;
        for key @ (starts_at, id) in self.listing.range((lower, Bound::Unbounded)) {
            if filter.starts_before.is_some_and(|b| *starts_at >= b) {
                break;
            }
            if filter.starts_from.is_some_and(|f| *starts_at < f) {
                continue;
            }
            let Some(entry) = self.events.get(id) else {
                continue;
            };
            if !filter
                .statuses
                .as_ref()
                .is_none_or(|s| s.contains(&entry.status))
            {
                continue;
            }
            if filter.organizer.is_some_and(|o| o != entry.organizer) {
                continue;
            }
            if let Some(text) = &text {
                if !entry.search.contains(text.as_str()) {
                    continue;
                }
            }
            if items.len() == limit {
                has_next_page = true;
                break;
            }
            items.push(entry.view(*id));
            last = Some(*key);
        }
        Ok(Page {
            items,
            end_cursor: last.map(|k| page::encode(CURSOR_KIND, &k)),
            has_next_page,
        })
    }
}

const CURSOR_KIND: &str = "events";

fn close_hold(entry: &mut EventEntry, orders: &mut HashMap<OrderId, OrderSlot>, order: OrderId) {
    let Some(slot) = orders.get_mut(&order) else {
        return;
    };
    if slot.state != SlotState::Held {
        return;
    }
    slot.state = SlotState::Closed;
    if let Some(t) = entry.tier(slot.tier) {
        t.held = t.held.saturating_sub(slot.quantity);
    }
    entry.set_seats(&slot.seats, SeatStatus::Available);
}

/// The catalogue as queries see it. Cheap to clone.
#[derive(Clone)]
pub struct Catalogue {
    pub(crate) inner: Arc<Projected<CatalogueModel>>,
}

impl Catalogue {
    /// One event with its tiers and live counts.
    pub fn event(&self, id: EventId) -> Option<EventView> {
        self.inner.read(|m| m.event(id))
    }

    /// Whose event it is, its state and whether it has `tier`: what a purchase checks
    /// before it reaches the command side, without a copy of the event.
    pub fn sale_target(&self, id: EventId, tier: TierId) -> Option<SaleTarget> {
        self.inner.read(|m| m.sale_target(id, tier))
    }

    /// The events among `ids` that exist, by id (for batch loaders).
    pub fn events_by_ids(&self, ids: &[EventId]) -> HashMap<EventId, EventView> {
        self.inner.read(|m| m.events_by_ids(ids))
    }

    /// The events `user` is door staff of, not cancelled, by start time.
    pub fn staffed_by(&self, user: UserId) -> Vec<EventView> {
        self.inner.read(|m| m.staffed_by(user))
    }

    /// Events matching `filter`, ordered by start time then id.
    pub fn list(
        &self,
        filter: &EventFilter,
        page: &PageRequest,
    ) -> Result<Page<EventView>, QueryError> {
        self.inner.read(|m| m.list(filter, page))
    }

    /// Seat states of an event, or `None` if it does not exist.
    pub fn seats(&self, id: EventId) -> Option<Vec<SeatView>> {
        self.inner.read(|m| m.seats(id))
    }

    /// At most `limit` seat states of an event from the `offset`-th on, or `None` if it
    /// does not exist.
    pub fn seat_page(&self, id: EventId, offset: usize, limit: usize) -> Option<Vec<SeatView>> {
        self.inner.read(|m| m.seat_page(id, offset, limit))
    }

    /// The current availability of an event.
    pub fn availability(&self, id: EventId) -> Option<Availability> {
        self.inner.read(|m| m.availability(id))
    }

    /// A latest-value feed of an event's availability, or `None` if the event does not
    /// exist (yet). The receiver holds the current value at once; a slow reader only ever
    /// sees the newest value, and the projection never waits for it.
    pub fn watch_availability(&self, id: EventId) -> Option<watch::Receiver<Arc<Availability>>> {
        // The read lock orders this against `end_batch` (which runs under the write lock):
        // the value taken here is current, and every later change will be sent.
        let guard = self.inner.guard();
        let entry = guard.model.events.get(&id)?;
        let mut senders = self.inner.feeds().senders.lock();
        let sender = senders
            .entry(id)
            .or_insert_with(|| watch::channel(Arc::new(entry.availability(id))).0);
        Some(sender.subscribe())
    }

    /// How many events have live watchers (for metrics).
    pub fn watched_events(&self) -> usize {
        self.inner.feeds().senders.lock().len()
    }
}
