//! Turning stored events back into domain events: the one place the read side touches the
//! stored format.

use domain::EventId;
use domain::ids::streams;
use domain::inventory::InventoryEvent;
use store::RecordedEvent;

use crate::runner::ApplyError;

/// Stored type names of inventory events that change nothing a read model of stock,
/// listings or orders shows; projections that do not need them skip them undecoded (they
/// are about half of all events: every decision ends with its idempotency record).
pub(crate) const IDEMPOTENCY_RECORD: &str = "InventoryCommandAccepted";

/// The event id of an inventory stream, or `None` for any other stream.
pub(crate) fn inventory_stream(event: &RecordedEvent) -> Option<EventId> {
    streams::parse_inventory(event.stream.as_str())
}

/// Decodes an event of an inventory stream (upcasting older shapes).
pub(crate) fn inventory_event(event: &RecordedEvent) -> Result<InventoryEvent, ApplyError> {
    domain::codec::decode::<InventoryEvent>(&event.event_type, event.schema_version, &event.data)
        .map_err(|e| ApplyError(format!("cannot decode: {e}")))
}
