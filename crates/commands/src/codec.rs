//! Inventory events to and from the store's form, through the domain's codec (stable type
//! name, schema version, JSON; older versions are upcast there).

use domain::codec::{self as domain_codec, DecodeError};
use domain::inventory::InventoryEvent;
use store::{Metadata, NewEvent, RecordedEvent, StoreError};
use uuid::Uuid;

/// Turns a domain event into the event to append.
pub fn encode(event: &InventoryEvent, metadata: Metadata) -> NewEvent {
    let (type_name, schema_version, data) = domain_codec::encode(event);
    NewEvent {
        id: new_event_id(),
        event_type: type_name.to_owned(),
        schema_version,
        data,
        metadata,
    }
}

/// Reads a stored inventory event back; an unknown type or a payload that does not parse
/// is reported as corruption of the stream.
pub fn decode(recorded: &RecordedEvent) -> Result<InventoryEvent, StoreError> {
    domain_codec::decode(
        &recorded.event_type,
        recorded.schema_version,
        &recorded.data,
    )
    .map_err(|e: DecodeError| {
        StoreError::Corrupt(format!("{}@{}: {e}", recorded.stream, recorded.version))
    })
}

/// A time-ordered (v7) id (events, tickets, requests) whose random bits come from the
/// thread-local CSPRNG rather than a system call per id: a hot event writes tens of
/// thousands of events a second.
pub fn new_event_id() -> Uuid {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let millis = u64::try_from(now.as_millis()).unwrap_or(u64::MAX);
    uuid::Builder::from_unix_timestamp_millis(millis, &rand::random::<[u8; 10]>()).into_uuid()
}
