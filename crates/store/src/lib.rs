//! The event store: the only source of truth of the system.
//!
//! This crate is the *port* every other crate codes against, and nothing bypasses it:
//!
//! * [`EventStore`] appends events to a stream under an [`ExpectedVersion`] (optimistic
//!   concurrency per stream), reads one stream forward, reads the global order of all
//!   streams ([`Position`]) in pages, and subscribes to the global order (catch-up, then
//!   [`SubscriptionMessage::CaughtUp`], then live).
//! * [`NewEvent`] is what a caller appends and [`RecordedEvent`] what it reads back, with
//!   the [`Metadata`] that lets an audit answer "who did this, when, under which request".
//! * [`StoreError`] has one variant per way an operation can fail, each with a stable
//!   [`code`](StoreError::code); a wrong expected version is
//!   [`StoreError::WrongExpectedVersion`] and carries both versions.
//!
//! Backends: the embedded SQLite store (the default) lives in this crate; the KurrentDB
//! backend lives in `store-kurrentdb`. Both pass the same conformance suite.
//!
//! Input limits are the same for every backend and are checked by [`validate_append`]:
//! see [`MAX_EVENT_BYTES`], [`MAX_APPEND_BYTES`], [`MAX_EVENTS_PER_APPEND`] and
//! [`MAX_EVENT_TYPE_LEN`].

#[cfg(feature = "conformance")]
pub mod conformance;
pub mod sqlite;

use std::fmt;
use std::pin::Pin;

use chrono::{DateTime, Utc};
use futures::Stream;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest stream name accepted, in characters.
pub const MAX_STREAM_NAME_LEN: usize = 200;

/// Largest `data` payload of one event, in bytes (512 KiB).
///
/// Domain events are small JSON documents; anything near this size is a bug upstream.
/// The limit also keeps every legal append within KurrentDB's default maximum append
/// size, so both backends accept and refuse the same inputs.
pub const MAX_EVENT_BYTES: usize = 512 * 1024;

/// Largest total `data` of one append, in bytes (1 MiB, KurrentDB's default `MaxAppendSize`
/// less room for our metadata).
pub const MAX_APPEND_BYTES: usize = 1024 * 1024 - 64 * 1024;

/// Most events in one append.
pub const MAX_EVENTS_PER_APPEND: usize = 4096;

/// Longest event type name accepted, in characters.
pub const MAX_EVENT_TYPE_LEN: usize = 100;

/// The name of a stream: 1..=200 characters of `[A-Za-z0-9_.:-]`, not starting with `$`
/// (which KurrentDB reserves for system streams).
///
/// Construct it with [`StreamName::new`]; every value of this type is valid.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct StreamName(String);

impl StreamName {
    /// Validates `name` and wraps it, or explains why it is not a stream name.
    pub fn new(name: impl Into<String>) -> Result<Self, StoreError> {
        let name = name.into();
        if name.is_empty() {
            return Err(StoreError::InvalidInput("stream name is empty".into()));
        }
        if name.len() > MAX_STREAM_NAME_LEN {
            return Err(StoreError::InvalidInput(format!(
                "stream name is {} characters long, the limit is {MAX_STREAM_NAME_LEN}",
                name.len()
            )));
        }
        if let Some(bad) = name.chars().find(|c| !is_name_char(*c)) {
            return Err(StoreError::InvalidInput(format!(
                "stream name {name:?} contains {bad:?}; allowed are A-Z a-z 0-9 _ . : -"
            )));
        }
        Ok(Self(name))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Consumes the name and returns its text.
    pub fn into_string(self) -> String {
        self.0
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | ':' | '-')
}

impl fmt::Display for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for StreamName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.0, f)
    }
}

impl AsRef<str> for StreamName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for StreamName {
    type Error = StoreError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl TryFrom<&str> for StreamName {
    type Error = StoreError;
    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value)
    }
}

impl std::str::FromStr for StreamName {
    type Err = StoreError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::new(s)
    }
}

impl From<StreamName> for String {
    fn from(value: StreamName) -> Self {
        value.0
    }
}

/// What the appender believes about the stream's current version.
///
/// Versions are 0-based per stream (the first event is version 0), like KurrentDB
/// revisions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExpectedVersion {
    /// The stream must not exist yet.
    NoStream,
    /// The stream's last event must have exactly this version.
    Exact(u64),
    /// The stream must exist, whatever its version.
    StreamExists,
    /// No check.
    Any,
}

impl ExpectedVersion {
    /// Whether a stream whose last version is `actual` (`None`: no stream) satisfies this.
    pub fn matches(self, actual: Option<u64>) -> bool {
        match self {
            Self::NoStream => actual.is_none(),
            Self::Exact(v) => actual == Some(v),
            Self::StreamExists => actual.is_some(),
            Self::Any => true,
        }
    }
}

impl fmt::Display for ExpectedVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NoStream => f.write_str("no stream"),
            Self::Exact(v) => write!(f, "version {v}"),
            Self::StreamExists => f.write_str("an existing stream"),
            Self::Any => f.write_str("any version"),
        }
    }
}

/// A place in the global order of all streams.
///
/// Positions are global and strictly increasing in commit order, but NOT necessarily
/// contiguous (KurrentDB commit positions jump). `Position(0)` is before the first event;
/// reads and subscriptions return events strictly *after* a position.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// Before the first event.
    pub const START: Position = Position(0);
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// Who caused an event, why, and when: stored with every event for audits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metadata {
    /// The request (or saga) this event belongs to; flows unchanged through every event
    /// a request causes, directly or not.
    pub correlation_id: Uuid,
    /// The message (command or event) that directly caused this event, when known.
    pub causation_id: Option<Uuid>,
    /// The user on whose behalf the event happened; `None` for the system itself
    /// (for example a hold expiring).
    pub acting_user: Option<Uuid>,
    /// When the event happened, as decided by the caller (the command's time), not the
    /// store's clock: decisions and their replay must see the same time. Stored with
    /// nanosecond precision; must lie between the years 1677 and 2262.
    pub recorded_at: DateTime<Utc>,
}

/// An event to append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    /// Unique id of the event, a UUID v7 (time-ordered) chosen by the caller.
    pub id: Uuid,
    /// Stable type name, 1..=100 characters of `[A-Za-z0-9_.:-]` (e.g. `TicketsHeld`).
    pub event_type: String,
    /// Version of the payload's shape for this type; upcasters key on it.
    pub schema_version: u32,
    /// The payload: one JSON document, at most [`MAX_EVENT_BYTES`].
    pub data: Vec<u8>,
    /// Who, why and when.
    pub metadata: Metadata,
}

impl NewEvent {
    /// An event with a fresh UUID v7 id.
    pub fn new(
        event_type: impl Into<String>,
        schema_version: u32,
        data: Vec<u8>,
        metadata: Metadata,
    ) -> Self {
        Self {
            id: Uuid::now_v7(),
            event_type: event_type.into(),
            schema_version,
            data,
            metadata,
        }
    }
}

/// An event as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedEvent {
    /// The id the appender gave it.
    pub id: Uuid,
    /// The stream it belongs to.
    pub stream: StreamName,
    /// Its version in that stream (0-based, contiguous).
    pub version: u64,
    /// Its place in the global order.
    pub position: Position,
    /// Stable type name.
    pub event_type: String,
    /// Version of the payload's shape.
    pub schema_version: u32,
    /// The JSON payload.
    pub data: Vec<u8>,
    /// Who, why and when.
    pub metadata: Metadata,
}

/// The outcome of a successful append.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppendResult {
    /// Version of the first appended event.
    pub first_version: u64,
    /// Version of the last appended event: the stream's new version.
    pub last_version: u64,
    /// Global position of each appended event, in order.
    pub positions: Vec<Position>,
}

impl AppendResult {
    /// Position of the last appended event: wait for a projection to reach it to read
    /// your own writes.
    pub fn last_position(&self) -> Position {
        self.positions.last().copied().unwrap_or_default()
    }
}

/// One item of a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubscriptionMessage {
    /// The next event in the global order.
    Event(RecordedEvent),
    /// Sent once, after the last event that existed when catch-up reached the head;
    /// everything after it is live.
    CaughtUp,
}

/// A subscription to the global order: a stream of messages that ends (`None`) when the
/// store shuts down. A backend error is yielded once, then the stream ends; resubscribe
/// from the last position seen.
pub type Subscription =
    Pin<Box<dyn Stream<Item = Result<SubscriptionMessage, StoreError>> + Send + 'static>>;

/// Why a store operation failed. Each variant has a stable [`code`](StoreError::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The stream's version was not what the appender expected; nothing was appended.
    #[error("wrong expected version on stream {stream}: expected {expected}, actual {}",
        .actual.map_or_else(|| "no stream".to_string(), |v| format!("version {v}")))]
    WrongExpectedVersion {
        /// The stream appended to.
        stream: StreamName,
        /// What the appender expected.
        expected: ExpectedVersion,
        /// The stream's actual last version (`None`: the stream does not exist).
        actual: Option<u64>,
    },
    /// The request is malformed (empty append, oversized event, bad stream name...);
    /// retrying it will not help.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// IO or server failure; the operation may be retried. An append that failed this way
    /// may or may not have been stored: retry with the same event ids and expected version.
    #[error("event store unavailable: {0}")]
    Unavailable(String),
    /// The store's file is not ours, or is damaged.
    #[error("event store is corrupt or not an event store: {0}")]
    Corrupt(String),
    /// Another process holds the store for writing.
    #[error("event store is locked by another writer: {0}")]
    Locked(String),
    /// The store was opened read-only; appends go through the process that writes it.
    #[error("event store is open read-only")]
    ReadOnly,
    /// The store has shut down.
    #[error("event store has shut down")]
    ShutDown,
}

impl StoreError {
    /// A stable machine-readable code for logs, metrics and API errors.
    pub fn code(&self) -> &'static str {
        match self {
            Self::WrongExpectedVersion { .. } => "CONFLICT",
            Self::InvalidInput(_) => "INVALID_INPUT",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::Corrupt(_) => "CORRUPT",
            Self::Locked(_) => "LOCKED",
            Self::ReadOnly => "READ_ONLY",
            Self::ShutDown => "SHUT_DOWN",
        }
    }

    /// Whether retrying the same operation later may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }
}

/// The event store port.
///
/// Every method is safe to call concurrently from many tasks. No backend is laxer than
/// another: the conformance suite checks each one against the same cases.
#[async_trait::async_trait]
pub trait EventStore: Send + Sync + 'static {
    /// Appends `events` to `stream` atomically if its version matches `expected`.
    ///
    /// Returns only once the events are durable. Fails with
    /// [`StoreError::WrongExpectedVersion`] (nothing appended) on a version mismatch and
    /// with [`StoreError::InvalidInput`] when [`validate_append`] refuses the events.
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError>;

    /// Events of one stream with version >= `from`, at most `max`, ascending.
    /// An unknown stream reads as empty.
    async fn read_stream(
        &self,
        stream: &StreamName,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError>;

    /// The global order: events with position > `after`, at most `max`, ascending.
    async fn read_all(&self, after: Position, max: usize)
    -> Result<Vec<RecordedEvent>, StoreError>;

    /// Catch-up from `after`, then [`SubscriptionMessage::CaughtUp`] once, then live; no
    /// gap, no duplicate. Ends (`None`) cleanly when the store shuts down. A slow consumer
    /// never blocks the writer: it reads pages from the store at its own pace.
    fn subscribe_all(&self, after: Position) -> Subscription;

    /// Position of the newest event (`Position(0)` when the store is empty).
    async fn head(&self) -> Result<Position, StoreError>;

    /// Current (last) version of a stream, `None` if it does not exist.
    async fn stream_version(&self, stream: &StreamName) -> Result<Option<u64>, StoreError>;

    /// Names of the existing streams that start with `prefix`, in ascending order, after
    /// `after` (exclusive) when given, at most `max`: for audits that enumerate, say,
    /// every `inventory-` stream.
    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        max: usize,
    ) -> Result<Vec<StreamName>, StoreError>;

    /// Stops the store: pending appends are finished, later calls fail with
    /// [`StoreError::ShutDown`] and subscriptions end. Idempotent.
    async fn shutdown(&self);

    /// Whether appends are applied in the order their futures are first polled, so that a
    /// writer may keep several appends to one stream in flight, each expecting the version
    /// the previous one leaves (a failure of one then fails the later ones with
    /// [`StoreError::WrongExpectedVersion`], never lets them skip it). `false` unless a
    /// backend promises it; callers must then wait for each append before the next.
    fn orders_appends(&self) -> bool {
        false
    }
}

/// Checks an append against the limits every backend enforces, before any IO.
///
/// Refuses: no events; more than [`MAX_EVENTS_PER_APPEND`] events; an event type that is
/// empty, longer than [`MAX_EVENT_TYPE_LEN`] or not made of `[A-Za-z0-9_.:-]`; data over
/// [`MAX_EVENT_BYTES`] or not one JSON document; total data over [`MAX_APPEND_BYTES`];
/// the nil UUID or the same id twice as event id; `recorded_at` outside 1677..2262.
pub fn validate_append(events: &[NewEvent]) -> Result<(), StoreError> {
    if events.is_empty() {
        return Err(StoreError::InvalidInput(
            "an append needs at least one event".into(),
        ));
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(StoreError::InvalidInput(format!(
            "{} events in one append, the limit is {MAX_EVENTS_PER_APPEND}",
            events.len()
        )));
    }
    let mut total = 0usize;
    let mut seen = std::collections::HashSet::with_capacity(events.len());
    for (i, event) in events.iter().enumerate() {
        let t = &event.event_type;
        if t.is_empty() || t.len() > MAX_EVENT_TYPE_LEN || !t.chars().all(is_name_char) {
            return Err(StoreError::InvalidInput(format!(
                "event {i}: type {t:?} must be 1..={MAX_EVENT_TYPE_LEN} characters of \
                 A-Z a-z 0-9 _ . : -"
            )));
        }
        if event.data.len() > MAX_EVENT_BYTES {
            return Err(StoreError::InvalidInput(format!(
                "event {i} ({t}): data is {} bytes, the limit is {MAX_EVENT_BYTES}",
                event.data.len()
            )));
        }
        if serde_json_is_document(&event.data).is_err() {
            return Err(StoreError::InvalidInput(format!(
                "event {i} ({t}): data is not one JSON document"
            )));
        }
        if event.id.is_nil() {
            return Err(StoreError::InvalidInput(format!(
                "event {i} ({t}): id is the nil UUID"
            )));
        }
        if !seen.insert(event.id) {
            return Err(StoreError::InvalidInput(format!(
                "event {i} ({t}): id {} appears twice in the append",
                event.id
            )));
        }
        if event.metadata.recorded_at.timestamp_nanos_opt().is_none() {
            return Err(StoreError::InvalidInput(format!(
                "event {i} ({t}): recorded_at {} is outside 1677..2262",
                event.metadata.recorded_at
            )));
        }
        total += event.data.len();
    }
    if total > MAX_APPEND_BYTES {
        return Err(StoreError::InvalidInput(format!(
            "append carries {total} bytes of data, the limit is {MAX_APPEND_BYTES}"
        )));
    }
    Ok(())
}

fn serde_json_is_document(data: &[u8]) -> Result<(), serde_json::Error> {
    serde_json::from_slice::<serde::de::IgnoredAny>(data).map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> Metadata {
        Metadata {
            correlation_id: Uuid::now_v7(),
            causation_id: None,
            acting_user: None,
            recorded_at: Utc::now(),
        }
    }

    fn event(data: &[u8]) -> NewEvent {
        NewEvent::new("Thing", 1, data.to_vec(), meta())
    }

    #[test]
    fn stream_names_are_validated() {
        assert!(StreamName::new("inventory-0190c0de-aaaa").is_ok());
        assert!(StreamName::new("a.b:c_d-E9").is_ok());
        assert!(StreamName::new("x".repeat(MAX_STREAM_NAME_LEN)).is_ok());
        for bad in ["", "$all", "has space", "slash/", "é", "a\0b"] {
            let err = StreamName::new(bad).unwrap_err();
            assert_eq!(err.code(), "INVALID_INPUT", "{bad:?}");
        }
        assert!(StreamName::new("x".repeat(MAX_STREAM_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn stream_name_serde_validates() {
        let ok: StreamName = serde_json::from_str("\"user-1\"").unwrap();
        assert_eq!(ok.as_str(), "user-1");
        assert!(serde_json::from_str::<StreamName>("\"$bad\"").is_err());
    }

    #[test]
    fn appends_are_validated() {
        assert!(validate_append(&[event(b"{}")]).is_ok());
        assert!(validate_append(&[]).is_err());
        assert!(validate_append(&[event(b"{not json")]).is_err());
        assert!(validate_append(&[event(b"{} {}")]).is_err());
        let mut big = vec![b'"'; MAX_EVENT_BYTES + 1];
        *big.last_mut().unwrap() = b'"';
        assert!(validate_append(&[event(&big)]).is_err());
        let mut bad_type = event(b"1");
        bad_type.event_type = "has space".into();
        assert!(validate_append(&[bad_type]).is_err());
        let e = event(b"1");
        assert!(validate_append(&[e.clone(), e]).is_err());
        let mut nil = event(b"1");
        nil.id = Uuid::nil();
        assert!(validate_append(&[nil]).is_err());
        let many: Vec<_> = (0..=MAX_EVENTS_PER_APPEND).map(|_| event(b"1")).collect();
        assert!(validate_append(&many).is_err());
    }

    #[test]
    fn expected_version_matches() {
        assert!(ExpectedVersion::NoStream.matches(None));
        assert!(!ExpectedVersion::NoStream.matches(Some(0)));
        assert!(ExpectedVersion::Exact(3).matches(Some(3)));
        assert!(!ExpectedVersion::Exact(3).matches(Some(4)));
        assert!(!ExpectedVersion::Exact(0).matches(None));
        assert!(ExpectedVersion::StreamExists.matches(Some(0)));
        assert!(!ExpectedVersion::StreamExists.matches(None));
        assert!(ExpectedVersion::Any.matches(None));
    }
}
