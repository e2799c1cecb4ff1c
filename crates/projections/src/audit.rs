//! Audits by replay: an event's full history, its state as of any point, and a check that
//! replaying every inventory stream reproduces what the read models hold.
//!
//! State is always folded with the domain's own `evolve` ([`Aggregate::replay`]), never
//! with a copy of its rules, so an audit shows exactly what the command side decided on.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use domain::inventory::{
    EventDetails, EventStatus, Inventory, InventoryEvent, OrderView as DomainOrder, SalesWindow,
    SeatState, SeatView as DomainSeat, TicketView as DomainTicket, TierView,
};
use domain::{Aggregate, EventId, UserId};
use serde::Serialize;
use store::{EventStore, Position, RecordedEvent, StoreError, StreamName};
use uuid::Uuid;

use crate::catalogue::SeatStatus;
use crate::{ReadSide, WaitError, decode};

/// Events read from the store per request.
const PAGE: usize = 4096;

/// Why an audit could not be answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    /// No event has this id.
    #[error("no event {0}")]
    NotFound(EventId),
    /// The requested version is past the stream's last one.
    #[error("event {event} has versions 0..={head}; version {requested} does not exist")]
    VersionBeyondHead {
        event: EventId,
        requested: u64,
        head: u64,
    },
    /// The requested point lies before the event was created.
    #[error("event {event} did not exist yet at {as_of}")]
    BeforeCreation { event: EventId, as_of: String },
    /// A stored event could not be decoded.
    #[error("cannot decode {event_type} at {stream}@{version} (position {position}): {reason}")]
    Decode {
        stream: String,
        version: u64,
        position: u64,
        event_type: String,
        reason: String,
    },
    /// The read models did not catch up in time to be compared.
    #[error("read models did not catch up: {0}")]
    NotCaughtUp(#[from] WaitError),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AuditError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "NOT_FOUND",
            Self::VersionBeyondHead { .. } | Self::BeforeCreation { .. } => "INVALID_INPUT",
            Self::Decode { .. } => "CORRUPT",
            Self::NotCaughtUp(_) => "TIMEOUT",
            Self::Store(e) => e.code(),
        }
    }
}

/// How far a long replay has come, for progress bars.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplayProgress {
    /// Units done (events for one stream, streams for a verification).
    pub done: u64,
    /// Units in all, when known.
    pub total: u64,
}

/// One stored event of an event's history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct HistoryEntry {
    /// Version in the event's stream (0-based).
    pub version: u64,
    /// Place in the global order.
    pub position: Position,
    /// Stable type name.
    pub event_type: String,
    /// Version of the stored payload's shape.
    pub schema_version: u32,
    /// When it happened (the command's time).
    pub recorded_at: DateTime<Utc>,
    /// Who did it; `None` for the platform itself.
    pub acting_user: Option<Uuid>,
    /// The request it came from.
    pub correlation_id: Uuid,
    /// The message that directly caused it, when known.
    pub causation_id: Option<Uuid>,
    /// The stored event's own id.
    pub id: Uuid,
    /// The payload as the domain reads it today (after upcasting).
    pub data: serde_json::Value,
}

/// A point in an event's history.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AsOf {
    /// After the event with this stream version.
    Version(u64),
    /// After every event of the stream at or before this global position.
    Position(Position),
    /// After every event recorded at or before this instant.
    Time(DateTime<Utc>),
    /// Now.
    Head,
}

/// An event's state at a point of its history.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct StateAt {
    pub event_id: EventId,
    /// Version of the last event folded in.
    pub version: u64,
    /// Position of the last event folded in.
    pub position: Position,
    /// Time of the last event folded in.
    pub recorded_at: DateTime<Utc>,
    /// The folded state.
    pub state: InventoryState,
}

/// A serialisable view of the domain's [`Inventory`].
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct InventoryState {
    pub organizer: Option<UserId>,
    pub details: Option<EventDetails>,
    pub status: Option<EventStatus>,
    pub sales_window: Option<SalesWindow>,
    pub per_user_limit: Option<u32>,
    pub tiers: Vec<TierView>,
    pub seats: Vec<DomainSeat>,
    /// Every order, sorted by id.
    pub orders: Vec<DomainOrder>,
    /// Every ticket, in issue order.
    pub tickets: Vec<DomainTicket>,
    pub live_holds: usize,
    /// The first invariant the state violates, if any (none should).
    pub invariant_violation: Option<String>,
}

impl InventoryState {
    /// Views the domain state.
    pub fn of(inventory: &Inventory) -> Self {
        let mut orders: Vec<_> = inventory.orders().collect();
        orders.sort_by_key(|o| o.order_id);
        Self {
            organizer: inventory.organizer(),
            details: inventory.details().cloned(),
            status: inventory.status(),
            sales_window: inventory.sales_window(),
            per_user_limit: inventory.per_user_limit(),
            tiers: inventory.tiers().collect(),
            seats: inventory.seats().collect(),
            orders,
            tickets: inventory.tickets().collect(),
            live_holds: inventory.live_hold_count(),
            invariant_violation: inventory.check_invariants().err(),
        }
    }
}

fn stream_of(event: EventId) -> Result<StreamName, AuditError> {
    Ok(StreamName::new(domain::ids::streams::inventory(event))?)
}

fn decode_err(e: &RecordedEvent, reason: String) -> AuditError {
    AuditError::Decode {
        stream: e.stream.to_string(),
        version: e.version,
        position: e.position.0,
        event_type: e.event_type.clone(),
        reason,
    }
}

fn decode(e: &RecordedEvent) -> Result<InventoryEvent, AuditError> {
    decode::inventory_event(e).map_err(|err| decode_err(e, err.0))
}

/// Reads a stream from `from` to its end, page by page, calling `each` on every event.
async fn read_stream(
    store: &dyn EventStore,
    stream: &StreamName,
    from: u64,
    each: impl FnMut(RecordedEvent) -> Result<bool, AuditError>,
) -> Result<(), AuditError> {
    read_stream_in_pages(store, stream, from, PAGE, each).await
}

/// [`read_stream`] in pages of `page` events (a small page for a caller that wants few).
async fn read_stream_in_pages(
    store: &dyn EventStore,
    stream: &StreamName,
    from: u64,
    page: usize,
    mut each: impl FnMut(RecordedEvent) -> Result<bool, AuditError>,
) -> Result<(), AuditError> {
    let page = page.clamp(1, PAGE);
    let mut next = from;
    loop {
        let events = store.read_stream(stream, next, page).await?;
        let n = events.len();
        for e in events {
            next = e.version + 1;
            if !each(e)? {
                return Ok(());
            }
        }
        if n < page {
            return Ok(());
        }
    }
}

/// Every stored event of an event's stream, in order, with who did it and when.
pub async fn history(
    store: &dyn EventStore,
    event: EventId,
    progress: &(dyn Fn(ReplayProgress) + Sync),
) -> Result<Vec<HistoryEntry>, AuditError> {
    history_from(store, event, 0, usize::MAX, progress).await
}

/// At most `limit` stored events of an event's stream from version `from` on, in order:
/// one page of [`history`], reading and decoding nothing beyond it.
pub async fn history_page(
    store: &dyn EventStore,
    event: EventId,
    from: u64,
    limit: usize,
) -> Result<Vec<HistoryEntry>, AuditError> {
    history_from(store, event, from, limit, &|_| {}).await
}

async fn history_from(
    store: &dyn EventStore,
    event: EventId,
    from: u64,
    limit: usize,
    progress: &(dyn Fn(ReplayProgress) + Sync),
) -> Result<Vec<HistoryEntry>, AuditError> {
    let stream = stream_of(event)?;
    let head = store
        .stream_version(&stream)
        .await?
        .ok_or(AuditError::NotFound(event))?;
    let total = (head + 1).saturating_sub(from);
    let mut out = Vec::new();
    if limit == 0 {
        return Ok(out);
    }
    read_stream_in_pages(store, &stream, from, limit, |e| {
        let decoded = decode(&e)?;
        let data = match serde_json::to_value(&decoded) {
            // Externally tagged: the payload is the single value under the variant name.
            Ok(serde_json::Value::Object(map)) if map.len() == 1 => {
                map.into_iter().next().map(|(_, v)| v).unwrap_or_default()
            }
            Ok(other) => other,
            Err(err) => return Err(decode_err(&e, err.to_string())),
        };
        out.push(HistoryEntry {
            version: e.version,
            position: e.position,
            event_type: e.event_type,
            schema_version: e.schema_version,
            recorded_at: e.metadata.recorded_at,
            acting_user: e.metadata.acting_user,
            correlation_id: e.metadata.correlation_id,
            causation_id: e.metadata.causation_id,
            id: e.id,
            data,
        });
        if out.len() >= limit {
            return Ok(false);
        }
        if out.len() % 1024 == 0 {
            progress(ReplayProgress {
                done: out.len() as u64,
                total,
            });
        }
        Ok(true)
    })
    .await?;
    progress(ReplayProgress {
        done: out.len() as u64,
        total,
    });
    Ok(out)
}

/// An event's state as of a version, position or time, folded with the domain's `evolve`.
pub async fn state_at(
    store: &dyn EventStore,
    event: EventId,
    as_of: AsOf,
    progress: &(dyn Fn(ReplayProgress) + Sync),
) -> Result<StateAt, AuditError> {
    let stream = stream_of(event)?;
    let head = store
        .stream_version(&stream)
        .await?
        .ok_or(AuditError::NotFound(event))?;
    if let AsOf::Version(v) = as_of {
        if v > head {
            return Err(AuditError::VersionBeyondHead {
                event,
                requested: v,
                head,
            });
        }
    }
    let total = match as_of {
        AsOf::Version(v) => v + 1,
        _ => head + 1,
    };
    let mut state = Inventory::default();
    let mut last: Option<(u64, Position, DateTime<Utc>)> = None;
    let mut done = 0u64;
    read_stream(store, &stream, 0, |e| {
        let include = match as_of {
            AsOf::Version(v) => e.version <= v,
            AsOf::Position(p) => e.position <= p,
            AsOf::Time(t) => e.metadata.recorded_at <= t,
            AsOf::Head => true,
        };
        if !include {
            // Versions, positions and (per stream) recorded times only grow.
            return Ok(false);
        }
        state.evolve(&decode(&e)?);
        last = Some((e.version, e.position, e.metadata.recorded_at));
        done += 1;
        if done % 1024 == 0 {
            progress(ReplayProgress { done, total });
        }
        Ok(true)
    })
    .await?;
    progress(ReplayProgress { done, total });
    let Some((version, position, recorded_at)) = last else {
        let as_of = match as_of {
            AsOf::Position(p) => format!("position {p}"),
            AsOf::Time(t) => t.to_rfc3339(),
            AsOf::Version(v) => format!("version {v}"),
            AsOf::Head => "now".into(),
        };
        return Err(AuditError::BeforeCreation { event, as_of });
    };
    Ok(StateAt {
        event_id: event,
        version,
        position,
        recorded_at,
        state: InventoryState::of(&state),
    })
}

/// One way a read model disagrees with the replayed history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Difference {
    /// The event concerned.
    pub event_id: EventId,
    /// The read model that disagrees.
    pub read_model: &'static str,
    /// What differs, such as `tier 0190… sold`.
    pub subject: String,
    /// The value replaying the history gives.
    pub replayed: String,
    /// The value the read model holds.
    pub found: String,
}

/// The outcome of [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyReport {
    /// Inventory streams replayed.
    pub streams: u64,
    /// Events replayed.
    pub events: u64,
    /// Every disagreement found; empty when the read models match the history.
    pub differences: Vec<Difference>,
}

/// How long [`verify`] waits for the read models to reach a stream's last event.
const CATCH_UP: Duration = Duration::from_secs(30);
/// How often a stream that keeps growing during the check is read again.
const MAX_RETRIES: usize = 5;

/// Replays every inventory stream with the domain's `evolve` and compares the result with
/// the catalogue, orders and sales read models, reporting each difference.
pub async fn verify(
    store: &dyn EventStore,
    read: &ReadSide,
    progress: &(dyn Fn(ReplayProgress) + Sync),
) -> Result<VerifyReport, AuditError> {
    let prefix = domain::ids::streams::INVENTORY_PREFIX;
    let mut streams = Vec::new();
    let mut after: Option<StreamName> = None;
    loop {
        let page = store.list_streams(prefix, after.as_ref(), PAGE).await?;
        let n = page.len();
        after = page.last().cloned();
        streams.extend(page);
        if n < PAGE {
            break;
        }
    }
    let total = streams.len() as u64;
    let mut report = VerifyReport {
        streams: 0,
        events: 0,
        differences: Vec::new(),
    };
    let mut seen = HashSet::new();
    for stream in &streams {
        let Some(event) = domain::ids::streams::parse_inventory(stream.as_str()) else {
            continue;
        };
        seen.insert(event);
        let mut state = Inventory::default();
        let mut next = 0;
        let mut last = Position::START;
        let mut retries = 0;
        loop {
            read_stream(store, stream, next, |e| {
                state.evolve(&decode(&e)?);
                next = e.version + 1;
                last = e.position;
                report.events += 1;
                Ok(true)
            })
            .await?;
            read.wait_for(last, CATCH_UP).await?;
            match compare(read, event, &state, last) {
                Compared::Done(diffs) => {
                    report.differences.extend(diffs);
                    break;
                }
                Compared::StreamGrew if retries < MAX_RETRIES => retries += 1,
                Compared::StreamGrew => {
                    report.differences.push(Difference {
                        event_id: event,
                        read_model: "all",
                        subject: "stream kept changing during the check".into(),
                        replayed: format!("position {last}"),
                        found: "newer events".into(),
                    });
                    break;
                }
            }
        }
        report.streams += 1;
        progress(ReplayProgress {
            done: report.streams,
            total,
        });
    }
    for id in read.catalogue().inner.read(|m| m.event_ids()) {
        if !seen.contains(&id) {
            report.differences.push(Difference {
                event_id: id,
                read_model: "catalogue",
                subject: "event".into(),
                replayed: "no stream".into(),
                found: "listed".into(),
            });
        }
    }
    Ok(report)
}

enum Compared {
    Done(Vec<Difference>),
    /// A read model holds events of the stream past the replayed ones: replay more.
    StreamGrew,
}

struct Diffs {
    event: EventId,
    out: Vec<Difference>,
}

impl Diffs {
    fn check<T: PartialEq + std::fmt::Debug>(
        &mut self,
        model: &'static str,
        subject: impl FnOnce() -> String,
        replayed: T,
        found: T,
    ) {
        if replayed != found {
            self.out.push(Difference {
                event_id: self.event,
                read_model: model,
                subject: subject(),
                replayed: format!("{replayed:?}"),
                found: format!("{found:?}"),
            });
        }
    }
}

fn seat_status(s: &SeatState) -> SeatStatus {
    match s {
        SeatState::Available => SeatStatus::Available,
        SeatState::Held { .. } => SeatStatus::Held,
        SeatState::Sold { .. } => SeatStatus::Sold,
    }
}

fn compare(read: &ReadSide, event: EventId, state: &Inventory, last: Position) -> Compared {
    let mut d = Diffs {
        event,
        out: Vec::new(),
    };
    // Catalogue.
    let view = read.catalogue().event(event);
    if view.as_ref().is_some_and(|v| v.position > last) {
        return Compared::StreamGrew;
    }
    match (&view, state.exists()) {
        (None, true) => d.check("catalogue", || "event".into(), "listed", "missing"),
        (Some(_), false) => d.check("catalogue", || "event".into(), "missing", "listed"),
        _ => {}
    }
    if let Some(view) = &view {
        d.check(
            "catalogue",
            || "status".into(),
            state.status(),
            Some(view.status),
        );
        d.check(
            "catalogue",
            || "details".into(),
            state.details(),
            Some(&view.details),
        );
        let tiers: Vec<TierView> = state.tiers().collect();
        d.check(
            "catalogue",
            || "tier count".into(),
            tiers.len(),
            view.tiers.len(),
        );
        for (i, t) in tiers.iter().enumerate() {
            let Some(found) = view.tiers.get(i) else {
                continue;
            };
            let name = |what: &str| format!("tier {} ({}) {what}", t.tier_id, t.name);
            d.check("catalogue", || name("id"), t.tier_id, found.tier_id);
            d.check("catalogue", || name("name"), &t.name, &found.name);
            d.check("catalogue", || name("price"), t.price, found.price);
            d.check("catalogue", || name("capacity"), t.capacity, found.capacity);
            d.check("catalogue", || name("sold"), t.sold, found.sold);
            d.check("catalogue", || name("held"), t.held, found.held);
            d.check(
                "catalogue",
                || name("available"),
                t.available,
                found.available,
            );
        }
        let seats = read.catalogue().seats(event).unwrap_or_default();
        d.check(
            "catalogue",
            || "seat count".into(),
            state.seat_count(),
            seats.len(),
        );
        for (s, found) in state.seats().zip(seats.iter()) {
            let name = |what: &str| format!("seat {} {what}", s.seat);
            d.check("catalogue", || name("id"), &s.seat, &found.seat);
            d.check("catalogue", || name("tier"), s.tier_id, found.tier_id);
            d.check(
                "catalogue",
                || name("state"),
                seat_status(&s.state),
                found.status,
            );
        }
    }

    // Orders and tickets.
    let (position, found): (Option<Position>, HashMap<_, _>) = read.orders().inner.read(|m| {
        (
            m.stream_position(event),
            m.orders_of_event(event)
                .map(|o| (o.order_id, o.clone()))
                .collect(),
        )
    });
    if position.is_some_and(|p| p > last) {
        return Compared::StreamGrew;
    }
    let mut replayed_ids = HashSet::new();
    for o in state.orders() {
        replayed_ids.insert(o.order_id);
        let Some(f) = found.get(&o.order_id) else {
            d.check(
                "orders",
                || format!("order {}", o.order_id),
                "present",
                "missing",
            );
            continue;
        };
        let name = |what: &str| format!("order {} {what}", o.order_id);
        d.check("orders", || name("status"), o.status, f.status);
        d.check("orders", || name("user"), o.user_id, f.user_id);
        d.check("orders", || name("tier"), o.tier_id, f.tier_id);
        d.check("orders", || name("quantity"), o.quantity, f.quantity);
        d.check("orders", || name("seats"), &o.seats, &f.seats);
        d.check("orders", || name("total"), o.total, f.total);
        let found_tickets: Vec<_> = f.tickets.iter().map(|t| t.ticket_id).collect();
        d.check("orders", || name("tickets"), &o.tickets, &found_tickets);
        for t in &f.tickets {
            if let Some(r) = state.ticket(t.ticket_id) {
                let tname = format!("ticket {} status", t.ticket_id);
                d.check("orders", || tname, r.status, t.status);
            }
        }
    }
    let mut extra: Vec<_> = found
        .keys()
        .filter(|id| !replayed_ids.contains(id))
        .collect();
    extra.sort();
    for id in extra {
        d.check("orders", || format!("order {id}"), "missing", "present");
    }

    // Sales.
    let sales = read.sales().event_sales(event);
    if sales.as_ref().is_some_and(|s| s.position > last) {
        return Compared::StreamGrew;
    }
    match &sales {
        None if state.exists() => d.check("sales", || "event".into(), "present", "missing"),
        None => {}
        Some(sales) => {
            for t in state.tiers() {
                let f = sales.tiers.iter().find(|s| s.tier_id == t.tier_id);
                let name = |what: &str| format!("tier {} ({}) {what}", t.tier_id, t.name);
                d.check(
                    "sales",
                    || name("sold"),
                    Some(t.sold),
                    f.map(|f| f.figures.sold),
                );
                d.check(
                    "sales",
                    || name("held"),
                    Some(t.held),
                    f.map(|f| f.figures.held),
                );
            }
        }
    }
    Compared::Done(d.out)
}
