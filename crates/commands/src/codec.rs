//! How inventory events are stored: the event's stable type name, a schema version and
//! the JSON of the event's payload (without the enum tag, which the type name carries).

use domain::inventory::InventoryEvent;
use store::{Metadata, NewEvent, RecordedEvent, StoreError};

/// The schema version every inventory event is written with today.
pub const SCHEMA_VERSION: u32 = 1;

/// Turns a domain event into the event to append.
pub fn encode(event: &InventoryEvent, metadata: Metadata) -> Result<NewEvent, serde_json::Error> {
    use InventoryEvent as E;
    let data = match event {
        E::EventCreated(e) => serde_json::to_vec(e),
        E::DetailsUpdated(e) => serde_json::to_vec(e),
        E::SalesWindowSet(e) => serde_json::to_vec(e),
        E::PerUserLimitSet(e) => serde_json::to_vec(e),
        E::EventPublished(e) => serde_json::to_vec(e),
        E::EventCancelled(e) => serde_json::to_vec(e),
        E::TierAdded(e) => serde_json::to_vec(e),
        E::TierRenamed(e) => serde_json::to_vec(e),
        E::TierRepriced(e) => serde_json::to_vec(e),
        E::TierResized(e) => serde_json::to_vec(e),
        E::SeatsAdded(e) => serde_json::to_vec(e),
        E::HoldPlaced(e) => serde_json::to_vec(e),
        E::HoldReleased(e) => serde_json::to_vec(e),
        E::HoldExpired(e) => serde_json::to_vec(e),
        E::OrderConfirmed(e) => serde_json::to_vec(e),
        E::PaymentRefundOwed(e) => serde_json::to_vec(e),
        E::OrderCancelled(e) => serde_json::to_vec(e),
        E::TicketCheckedIn(e) => serde_json::to_vec(e),
        E::CommandAccepted(e) => serde_json::to_vec(e),
    }?;
    Ok(NewEvent::new(
        event.type_name(),
        SCHEMA_VERSION,
        data,
        metadata,
    ))
}

/// Reads a stored inventory event back; an unknown type or a payload that does not parse
/// is reported as corruption of the stream.
pub fn decode(recorded: &RecordedEvent) -> Result<InventoryEvent, StoreError> {
    use InventoryEvent as E;
    fn parse<T: serde::de::DeserializeOwned>(r: &RecordedEvent) -> Result<T, StoreError> {
        serde_json::from_slice(&r.data).map_err(|e| {
            StoreError::Corrupt(format!(
                "{} v{} at {}@{}: {e}",
                r.event_type, r.schema_version, r.stream, r.version
            ))
        })
    }
    if recorded.schema_version != SCHEMA_VERSION {
        return Err(StoreError::Corrupt(format!(
            "{} at {}@{} has schema version {}, this build reads {SCHEMA_VERSION}",
            recorded.event_type, recorded.stream, recorded.version, recorded.schema_version
        )));
    }
    let r = recorded;
    Ok(match r.event_type.as_str() {
        "EventCreated" => E::EventCreated(parse(r)?),
        "DetailsUpdated" => E::DetailsUpdated(parse(r)?),
        "SalesWindowSet" => E::SalesWindowSet(parse(r)?),
        "PerUserLimitSet" => E::PerUserLimitSet(parse(r)?),
        "EventPublished" => E::EventPublished(parse(r)?),
        "EventCancelled" => E::EventCancelled(parse(r)?),
        "TierAdded" => E::TierAdded(parse(r)?),
        "TierRenamed" => E::TierRenamed(parse(r)?),
        "TierRepriced" => E::TierRepriced(parse(r)?),
        "TierResized" => E::TierResized(parse(r)?),
        "SeatsAdded" => E::SeatsAdded(parse(r)?),
        "HoldPlaced" => E::HoldPlaced(parse(r)?),
        "HoldReleased" => E::HoldReleased(parse(r)?),
        "HoldExpired" => E::HoldExpired(parse(r)?),
        "OrderConfirmed" => E::OrderConfirmed(parse(r)?),
        "PaymentRefundOwed" => E::PaymentRefundOwed(parse(r)?),
        "OrderCancelled" => E::OrderCancelled(parse(r)?),
        "TicketCheckedIn" => E::TicketCheckedIn(parse(r)?),
        "InventoryCommandAccepted" => E::CommandAccepted(parse(r)?),
        other => {
            return Err(StoreError::Corrupt(format!(
                "unknown inventory event type {other:?} at {}@{}",
                r.stream, r.version
            )));
        }
    })
}
