//! The event store port on KurrentDB (formerly EventStoreDB), through the `kurrentdb`
//! gRPC client: for deployments where several API nodes share one KurrentDB cluster.
//!
//! How the port maps onto KurrentDB:
//!
//! * **Streams and versions.** Our stream is a KurrentDB stream of the same name; our
//!   0-based version is its revision. [`ExpectedVersion`] maps onto `StreamState`, and the
//!   server's wrong-expected-version error onto [`StoreError::WrongExpectedVersion`].
//! * **Events.** The payload is sent as-is (content type `application/octet-stream`, so
//!   the server never rewrites it); the schema version and our [`Metadata`] travel as the
//!   event's custom metadata, a small JSON document ([`StoredMetadata`]). The event id is
//!   ours.
//! * **Positions.** Our [`Position`] is the event's `$all` commit position. Reads and
//!   subscriptions of the global order are filtered to non-system streams (`$`-prefixed
//!   streams are KurrentDB's own) and skip events that are not ours (no parsable metadata).
//! * **Subscriptions** read `$all` forward in pages up to its end, yield
//!   [`SubscriptionMessage::CaughtUp`], then open a filtered catch-up subscription to `$all`
//!   from the exact (commit, prepare) position of the last event seen, so the hand-over
//!   has no gap and no duplicate whatever the server version (servers before 23.10 do not
//!   send caught-up messages themselves).
//!
//! Known limits of the mapping, which the embedded store does not have:
//! * Events of one multi-event append may share one commit position in `$all`. Within a
//!   subscription nothing is lost (it tracks the full position), but resuming "after" such
//!   a shared position skips the remaining events of that append or repeats them,
//!   depending on the server; consumers must be idempotent anyway.
//! * [`EventStore::list_streams`] scans `$all` (server-side prefix filter): fine for audits,
//!   not for hot paths.

use std::collections::BTreeSet;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use kurrentdb::{
    AppendToStreamOptions, Client, ClientSettings, CurrentRevision, EventData, ReadAllOptions,
    ReadStreamOptions, StreamPosition, StreamState, SubscribeToAllOptions, SubscriptionEvent,
    SubscriptionFilter,
};
use serde::{Deserialize, Serialize};
use store::{
    AppendResult, EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent,
    StoreError, StreamName, Subscription, SubscriptionMessage, validate_append,
};
use tokio::sync::watch;
use uuid::Uuid;

/// Events read from `$all` per request while catching up.
const PAGE: usize = 1000;

/// Our part of an event's custom metadata in KurrentDB.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredMetadata {
    /// [`NewEvent::schema_version`].
    pub schema_version: u32,
    /// [`Metadata::correlation_id`].
    pub correlation_id: Uuid,
    /// [`Metadata::causation_id`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub causation_id: Option<Uuid>,
    /// [`Metadata::acting_user`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acting_user: Option<Uuid>,
    /// [`Metadata::recorded_at`], RFC 3339 with nanoseconds.
    pub recorded_at: DateTime<Utc>,
}

impl StoredMetadata {
    /// The custom metadata stored with `event`.
    pub fn of(event: &NewEvent) -> Self {
        let m = &event.metadata;
        Self {
            schema_version: event.schema_version,
            correlation_id: m.correlation_id,
            causation_id: m.causation_id,
            acting_user: m.acting_user,
            recorded_at: m.recorded_at,
        }
    }

    /// The port's metadata.
    pub fn metadata(&self) -> Metadata {
        Metadata {
            correlation_id: self.correlation_id,
            causation_id: self.causation_id,
            acting_user: self.acting_user,
            recorded_at: self.recorded_at,
        }
    }
}

/// The KurrentDB-backed event store. Cheap to clone: clones share one client.
#[derive(Clone)]
pub struct KurrentDbStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The gRPC client; it connects lazily and reconnects by itself.
    client: Client,
    /// Set by `shutdown`; subscriptions watch it to end, appends check it.
    closed: watch::Sender<bool>,
}

impl KurrentDbStore {
    /// A store on the server or cluster named by `connection_string`, for example
    /// `kurrentdb://localhost:2113?tls=false`. Must be called inside a tokio runtime. The
    /// client connects on first use, so a wrong address shows up as
    /// [`StoreError::Unavailable`] on the first operation.
    pub fn connect(connection_string: &str) -> Result<Self, StoreError> {
        let settings: ClientSettings = connection_string.parse().map_err(|e| {
            StoreError::InvalidInput(format!("bad KurrentDB connection string: {e}"))
        })?;
        let client = Client::new(settings)
            .map_err(|e| StoreError::Unavailable(format!("KurrentDB client: {e}")))?;
        Ok(Self {
            inner: Arc::new(Inner {
                client,
                closed: watch::channel(false).0,
            }),
        })
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if *self.inner.closed.borrow() {
            Err(StoreError::ShutDown)
        } else {
            Ok(())
        }
    }

    /// Reads `$all` forward from `from` (exclusive), our events only, at most `max`.
    /// Returns the events and the full position of the last record read (ours or not).
    async fn read_all_from(
        &self,
        from: Option<kurrentdb::Position>,
        max: usize,
    ) -> Result<(Vec<RecordedEvent>, Option<kurrentdb::Position>), StoreError> {
        let mut out = Vec::new();
        let mut cursor = from;
        loop {
            let options = ReadAllOptions::default()
                .forwards()
                .position(cursor.map_or(StreamPosition::Start, StreamPosition::Position))
                .filter(SubscriptionFilter::on_stream_name().exclude_system_events())
                .max_count(PAGE + 1);
            let mut read = self
                .inner
                .client
                .read_all(&options)
                .await
                .map_err(unavailable)?;
            let mut progressed = false;
            while let Some(resolved) = read.next().await.map_err(unavailable)? {
                let Some(event) = resolved.event.as_ref() else {
                    continue;
                };
                // Reading $all from a position includes the record at it: skip it.
                if cursor.is_some_and(|c| event.position <= c) {
                    continue;
                }
                progressed = true;
                cursor = Some(event.position);
                if let Some(ours) = from_kurrent(event)? {
                    out.push(ours);
                    if out.len() >= max {
                        return Ok((out, cursor));
                    }
                }
            }
            if !progressed {
                return Ok((out, cursor));
            }
        }
    }
}

#[async_trait]
impl EventStore for KurrentDbStore {
    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        self.check_open()?;
        validate_append(&events)?;
        let count = events.len() as u64;
        let data = events
            .iter()
            .map(to_kurrent)
            .collect::<Result<Vec<_>, _>>()?;
        let options = AppendToStreamOptions::default().stream_state(stream_state(expected));
        let written = match self
            .inner
            .client
            .append_to_stream(stream.as_str(), &options, data)
            .await
        {
            Ok(written) => written,
            Err(kurrentdb::Error::WrongExpectedVersion { current, .. }) => {
                return Err(StoreError::WrongExpectedVersion {
                    stream: stream.clone(),
                    expected,
                    actual: actual_version(current),
                });
            }
            Err(e) => return Err(unavailable(e)),
        };
        let last_version = written.next_expected_version;
        let first_version = last_version + 1 - count;
        let positions = if count == 1 {
            vec![Position(written.position.commit)]
        } else {
            // The write result carries one position; read the events back for each one's.
            let read = self
                .read_stream(stream, first_version, count as usize)
                .await?;
            let ids: Vec<Uuid> = events.iter().map(|e| e.id).collect();
            let read_ids: Vec<Uuid> = read.iter().map(|e| e.id).collect();
            if read_ids != ids || read.iter().any(|e| e.position.0 == u64::MAX) {
                vec![Position(written.position.commit); count as usize]
            } else {
                read.iter().map(|e| e.position).collect()
            }
        };
        Ok(AppendResult {
            first_version,
            last_version,
            positions,
        })
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.check_open()?;
        if max == 0 || from == u64::MAX {
            return Ok(Vec::new());
        }
        let options = ReadStreamOptions::default()
            .forwards()
            .position(StreamPosition::Position(from))
            .max_count(max);
        let mut read = match self
            .inner
            .client
            .read_stream(stream.as_str(), &options)
            .await
        {
            Ok(read) => read,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
            Err(e) => return Err(unavailable(e)),
        };
        let mut out = Vec::new();
        loop {
            match read.next().await {
                Ok(Some(resolved)) => {
                    if let Some(event) = resolved.event.as_ref() {
                        let ours = from_kurrent(event)?.ok_or_else(|| {
                            StoreError::Corrupt(format!(
                                "event {} of stream {stream} was not written by this store",
                                event.revision
                            ))
                        })?;
                        out.push(ours);
                    }
                }
                Ok(None) => return Ok(out),
                Err(kurrentdb::Error::ResourceNotFound) => return Ok(Vec::new()),
                Err(e) => return Err(unavailable(e)),
            }
        }
    }

    async fn read_all(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        self.check_open()?;
        if max == 0 {
            return Ok(Vec::new());
        }
        let from = (after.0 > 0).then_some(kurrentdb::Position {
            commit: after.0,
            prepare: after.0,
        });
        Ok(self.read_all_from(from, max).await?.0)
    }

    fn subscribe_all(&self, after: Position) -> Subscription {
        let state = SubscriptionState {
            store: self.clone(),
            cursor: (after.0 > 0).then_some(kurrentdb::Position {
                commit: after.0,
                prepare: after.0,
            }),
            buffer: Vec::new().into_iter(),
            live: None,
            caught_up: false,
            failed: false,
            closed: self.inner.closed.subscribe(),
        };
        Box::pin(futures::stream::unfold(state, SubscriptionState::next))
    }

    async fn head(&self) -> Result<Position, StoreError> {
        self.check_open()?;
        let options = ReadAllOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .filter(SubscriptionFilter::on_stream_name().exclude_system_events())
            .max_count(1);
        let mut read = self
            .inner
            .client
            .read_all(&options)
            .await
            .map_err(unavailable)?;
        match read.next().await.map_err(unavailable)? {
            Some(resolved) => Ok(Position(
                resolved.event.as_ref().map_or(0, |e| e.position.commit),
            )),
            None => Ok(Position::START),
        }
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Option<u64>, StoreError> {
        self.check_open()?;
        let options = ReadStreamOptions::default()
            .backwards()
            .position(StreamPosition::End)
            .max_count(1);
        let mut read = match self
            .inner
            .client
            .read_stream(stream.as_str(), &options)
            .await
        {
            Ok(read) => read,
            Err(kurrentdb::Error::ResourceNotFound) => return Ok(None),
            Err(e) => return Err(unavailable(e)),
        };
        match read.next().await {
            Ok(Some(resolved)) => Ok(resolved.event.as_ref().map(|e| e.revision)),
            Ok(None) | Err(kurrentdb::Error::ResourceNotFound) => Ok(None),
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        max: usize,
    ) -> Result<Vec<StreamName>, StoreError> {
        self.check_open()?;
        let filter = if prefix.is_empty() {
            SubscriptionFilter::on_stream_name().exclude_system_events()
        } else {
            SubscriptionFilter::on_stream_name().add_prefix(prefix)
        };
        let options = ReadAllOptions::default()
            .forwards()
            .position(StreamPosition::Start)
            .filter(filter);
        let mut read = self
            .inner
            .client
            .read_all(&options)
            .await
            .map_err(unavailable)?;
        let mut names = BTreeSet::new();
        while let Some(resolved) = read.next().await.map_err(unavailable)? {
            if let Some(event) = resolved.event.as_ref() {
                let id = event.stream_id();
                if id.starts_with(prefix) && after.is_none_or(|a| id > a.as_str()) {
                    if let Ok(name) = StreamName::new(id) {
                        names.insert(name);
                    }
                }
            }
        }
        Ok(names.into_iter().take(max).collect())
    }

    async fn shutdown(&self) {
        self.inner.closed.send_replace(true);
    }
}

/// State of one subscription between two items.
struct SubscriptionState {
    store: KurrentDbStore,
    /// Full position of the last `$all` record seen (ours or not).
    cursor: Option<kurrentdb::Position>,
    /// Events read during catch-up, not yet yielded.
    buffer: std::vec::IntoIter<RecordedEvent>,
    /// The live subscription, opened after `CaughtUp`.
    live: Option<kurrentdb::Subscription>,
    caught_up: bool,
    /// Set after an error was yielded: the stream then ends.
    failed: bool,
    closed: watch::Receiver<bool>,
}

type Step = Option<(Result<SubscriptionMessage, StoreError>, SubscriptionState)>;

impl SubscriptionState {
    async fn next(mut self) -> Step {
        loop {
            if self.failed || *self.closed.borrow() {
                return None;
            }
            if let Some(event) = self.buffer.next() {
                return Some((Ok(SubscriptionMessage::Event(event)), self));
            }
            if !self.caught_up {
                match self.store.read_all_from(self.cursor, PAGE).await {
                    Ok((page, cursor)) => {
                        let empty = page.is_empty() && cursor == self.cursor;
                        self.cursor = cursor;
                        if empty {
                            self.caught_up = true;
                            return Some((Ok(SubscriptionMessage::CaughtUp), self));
                        }
                        self.buffer = page.into_iter();
                        continue;
                    }
                    Err(e) => return self.fail(e),
                }
            }
            if self.live.is_none() {
                let options = SubscribeToAllOptions::default()
                    .position(
                        self.cursor
                            .map_or(StreamPosition::Start, StreamPosition::Position),
                    )
                    .filter(SubscriptionFilter::on_stream_name().exclude_system_events());
                self.live = Some(self.store.inner.client.subscribe_to_all(&options).await);
            }
            let Some(live) = self.live.as_mut() else {
                continue;
            };
            let event = tokio::select! {
                event = live.next_subscription_event() => event,
                _ = self.closed.changed() => return None,
            };
            match event {
                Ok(SubscriptionEvent::EventAppeared(resolved)) => {
                    let Some(event) = resolved.event.as_ref() else {
                        continue;
                    };
                    if self.cursor.is_some_and(|c| event.position <= c) {
                        continue;
                    }
                    self.cursor = Some(event.position);
                    match from_kurrent(event) {
                        Ok(Some(ours)) => {
                            return Some((Ok(SubscriptionMessage::Event(ours)), self));
                        }
                        Ok(None) => continue,
                        Err(e) => return self.fail(e),
                    }
                }
                Ok(_) => continue,
                Err(e) => return self.fail(unavailable(e)),
            }
        }
    }

    fn fail(mut self, e: StoreError) -> Step {
        self.failed = true;
        Some((Err(e), self))
    }
}

fn stream_state(expected: ExpectedVersion) -> StreamState {
    match expected {
        ExpectedVersion::NoStream => StreamState::NoStream,
        ExpectedVersion::Exact(v) => StreamState::StreamRevision(v),
        ExpectedVersion::StreamExists => StreamState::StreamExists,
        ExpectedVersion::Any => StreamState::Any,
    }
}

fn actual_version(current: CurrentRevision) -> Option<u64> {
    match current {
        CurrentRevision::Current(v) => Some(v),
        CurrentRevision::NoStream => None,
    }
}

fn to_kurrent(event: &NewEvent) -> Result<EventData, StoreError> {
    let metadata = serde_json::to_vec(&StoredMetadata::of(event))
        .map_err(|e| StoreError::InvalidInput(format!("event metadata: {e}")))?;
    Ok(
        EventData::binary(&event.event_type, Bytes::from(event.data.clone()))
            .id(event.id)
            .metadata(Bytes::from(metadata)),
    )
}

/// Our event, or `None` for an event this store did not write (another application's
/// stream, a name we would refuse, or no metadata of ours).
fn from_kurrent(event: &kurrentdb::RecordedEvent) -> Result<Option<RecordedEvent>, StoreError> {
    let Ok(stream) = StreamName::new(event.stream_id()) else {
        return Ok(None);
    };
    let Ok(stored) = serde_json::from_slice::<StoredMetadata>(&event.custom_metadata) else {
        return Ok(None);
    };
    Ok(Some(RecordedEvent {
        id: event.id,
        stream,
        version: event.revision,
        position: Position(event.position.commit),
        event_type: event.event_type.clone(),
        schema_version: stored.schema_version,
        data: event.data.to_vec(),
        metadata: stored.metadata(),
    }))
}

fn unavailable(e: kurrentdb::Error) -> StoreError {
    StoreError::Unavailable(format!("KurrentDB: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn expected_versions_map_onto_stream_states() {
        assert_eq!(
            stream_state(ExpectedVersion::NoStream),
            StreamState::NoStream
        );
        assert_eq!(
            stream_state(ExpectedVersion::Exact(7)),
            StreamState::StreamRevision(7)
        );
        assert_eq!(
            stream_state(ExpectedVersion::StreamExists),
            StreamState::StreamExists
        );
        assert_eq!(stream_state(ExpectedVersion::Any), StreamState::Any);
        assert_eq!(actual_version(CurrentRevision::Current(3)), Some(3));
        assert_eq!(actual_version(CurrentRevision::NoStream), None);
    }

    #[test]
    fn metadata_survives_its_json_form_exactly() {
        let event = NewEvent {
            id: Uuid::now_v7(),
            event_type: "TicketsHeld".into(),
            schema_version: 3,
            data: b"{}".to_vec(),
            metadata: Metadata {
                correlation_id: Uuid::now_v7(),
                causation_id: Some(Uuid::now_v7()),
                acting_user: None,
                recorded_at: Utc
                    .timestamp_opt(1_790_000_000, 123_456_789)
                    .single()
                    .unwrap(),
            },
        };
        let stored = StoredMetadata::of(&event);
        let json = serde_json::to_vec(&stored).unwrap();
        let back: StoredMetadata = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, stored);
        assert_eq!(back.metadata(), event.metadata);
        assert_eq!(back.schema_version, 3);
        // Foreign metadata is not ours.
        assert!(serde_json::from_slice::<StoredMetadata>(br#"{"$correlationId":"x"}"#).is_err());
    }
}
