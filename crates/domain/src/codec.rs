//! The stored form of domain events, in one place: a stable type name, a schema version and
//! a JSON payload. Stored JSON of an older schema version is upcast here, step by step, to
//! today's shape before the domain sees it; nothing else reads stored payloads.
//!
//! Type names are unique across all aggregates, so [`decode_any`] can decode any stored
//! event (for projections reading the global stream) from its type name alone.
//!
//! # Schema history
//!
//! * `TierAdded` v1 (before seat maps existed): `{tierId, name, priceMinor, currency,
//!   capacity}`. v2 nests the price as `price: {amountMinor, currency}` and adds `seated`
//!   (`false` for every v1 tier, since v1 had no seated tiers).
//! * `HoldPlaced` and `OrderConfirmed` v2 may carry the idempotency record of the decision
//!   they end (`command`), which then has no `InventoryCommandAccepted`. A v1 event never
//!   carries one (it is followed by its `InventoryCommandAccepted`): the field is optional,
//!   so v1 payloads are v2 payloads without it.
//!
//! Every other type is at version 1.

use serde_json::Value;
use thiserror::Error;

use crate::account::{AccountEvent, EmailEvent};
use crate::inventory::InventoryEvent;

/// Why stored bytes could not be turned into a domain event.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    /// No event type has this name.
    #[error("unknown event type {type_name:?}")]
    UnknownType { type_name: String },
    /// The version is newer than this code knows, or was never defined.
    #[error("event type {type_name} has no schema version {version} (current is {current})")]
    UnsupportedVersion {
        type_name: String,
        version: u32,
        current: u32,
    },
    /// The payload does not match the schema it claims.
    #[error("malformed {type_name} v{version} payload: {message}")]
    Malformed {
        type_name: String,
        version: u32,
        message: String,
    },
}

/// An event in its stored form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    /// Stable type name, such as `HoldPlaced`.
    pub type_name: &'static str,
    /// Schema version of `json`.
    pub schema_version: u32,
    /// The payload.
    pub json: Vec<u8>,
}

/// An event type with a stored form.
pub trait EventCodec: Sized {
    /// The stable type name of this event.
    fn type_name(&self) -> &'static str;
    /// The current schema version of a type name, if it belongs to this event type.
    fn current_version(type_name: &str) -> Option<u32>;
    /// Today's stored form.
    fn encode(&self) -> Encoded;
    /// Decodes a payload already in the current schema version.
    fn decode_current(type_name: &str, json: &[u8]) -> Result<Self, DecodeError>;
}

/// Encodes an event: `(type name, schema version, json)`.
pub fn encode<E: EventCodec>(event: &E) -> (&'static str, u32, Vec<u8>) {
    let Encoded {
        type_name,
        schema_version,
        json,
    } = event.encode();
    (type_name, schema_version, json)
}

/// Decodes a stored event of any schema version this code knows, upcasting older ones.
pub fn decode<E: EventCodec>(
    type_name: &str,
    schema_version: u32,
    json: &[u8],
) -> Result<E, DecodeError> {
    let Some(current) = E::current_version(type_name) else {
        return Err(DecodeError::UnknownType {
            type_name: type_name.to_owned(),
        });
    };
    if schema_version == current {
        return E::decode_current(type_name, json);
    }
    if schema_version == 0 || schema_version > current {
        return Err(DecodeError::UnsupportedVersion {
            type_name: type_name.to_owned(),
            version: schema_version,
            current,
        });
    }
    let malformed = |version: u32, message: String| DecodeError::Malformed {
        type_name: type_name.to_owned(),
        version,
        message,
    };
    let mut value: Value =
        serde_json::from_slice(json).map_err(|e| malformed(schema_version, e.to_string()))?;
    let mut version = schema_version;
    while version < current {
        value = upcast(type_name, version, value).map_err(|m| malformed(version, m))?;
        version += 1;
    }
    let bytes = serde_json::to_vec(&value).map_err(|e| malformed(current, e.to_string()))?;
    E::decode_current(type_name, &bytes)
}

/// Turns a payload of `version` into one of `version + 1`. The only place that knows old
/// shapes.
fn upcast(type_name: &str, version: u32, value: Value) -> Result<Value, String> {
    match (type_name, version) {
        ("TierAdded", 1) => {
            let Value::Object(mut v1) = value else {
                return Err("expected an object".into());
            };
            let amount = v1.remove("priceMinor").ok_or("missing priceMinor")?;
            let currency = v1.remove("currency").ok_or("missing currency")?;
            let mut price = serde_json::Map::new();
            price.insert("amountMinor".into(), amount);
            price.insert("currency".into(), currency);
            v1.insert("price".into(), Value::Object(price));
            v1.insert("seated".into(), Value::Bool(false));
            Ok(Value::Object(v1))
        }
        // v2 only added an optional field, absent from every v1 payload.
        ("HoldPlaced" | "OrderConfirmed", 1) => Ok(value),
        _ => Err(format!("no upcaster from version {version}")),
    }
}

/// Any domain event, decoded from the global stream by type name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AnyEvent {
    /// An event of an inventory stream.
    Inventory(InventoryEvent),
    /// An event of a user account stream.
    Account(AccountEvent),
    /// An event of an email reservation stream.
    Email(EmailEvent),
}

/// Decodes any stored domain event by its type name.
pub fn decode_any(
    type_name: &str,
    schema_version: u32,
    json: &[u8],
) -> Result<AnyEvent, DecodeError> {
    if InventoryEvent::current_version(type_name).is_some() {
        decode(type_name, schema_version, json).map(AnyEvent::Inventory)
    } else if AccountEvent::current_version(type_name).is_some() {
        decode(type_name, schema_version, json).map(AnyEvent::Account)
    } else if EmailEvent::current_version(type_name).is_some() {
        decode(type_name, schema_version, json).map(AnyEvent::Email)
    } else {
        Err(DecodeError::UnknownType {
            type_name: type_name.to_owned(),
        })
    }
}

macro_rules! event_codec {
    ($enum:ident { $($variant:ident => $name:literal v $version:literal),* $(,)? }) => {
        impl EventCodec for $enum {
            fn type_name(&self) -> &'static str {
                match self { $($enum::$variant(_) => $name,)* }
            }

            fn current_version(type_name: &str) -> Option<u32> {
                match type_name { $($name => Some($version),)* _ => None }
            }

            fn encode(&self) -> Encoded {
                // Most payloads (a hold, a confirmation) are 250 to 600 bytes: one buffer
                // of that size instead of growing one from 128 bytes, on every decision.
                let mut json = Vec::with_capacity(640);
                let (type_name, schema_version, written) = match self {
                    $($enum::$variant(e) => ($name, $version, serde_json::to_writer(&mut json, e)),)*
                };
                Encoded {
                    type_name,
                    schema_version,
                    // Event payloads are plain structs with string-keyed fields: serialising
                    // them cannot fail (every variant is round-tripped in the tests).
                    json: written.map(|()| json).expect("domain event payloads always serialise"),
                }
            }

            fn decode_current(type_name: &str, json: &[u8]) -> Result<Self, DecodeError> {
                let malformed = |e: serde_json::Error| DecodeError::Malformed {
                    type_name: type_name.to_owned(),
                    version: Self::current_version(type_name).unwrap_or(0),
                    message: e.to_string(),
                };
                match type_name {
                    $($name => serde_json::from_slice(json).map($enum::$variant).map_err(malformed),)*
                    _ => Err(DecodeError::UnknownType { type_name: type_name.to_owned() }),
                }
            }
        }
    };
}

event_codec!(InventoryEvent {
    EventCreated => "EventCreated" v 1,
    DetailsUpdated => "DetailsUpdated" v 1,
    SalesWindowSet => "SalesWindowSet" v 1,
    PerUserLimitSet => "PerUserLimitSet" v 1,
    EventPublished => "EventPublished" v 1,
    EventCancelled => "EventCancelled" v 1,
    TierAdded => "TierAdded" v 2,
    TierRenamed => "TierRenamed" v 1,
    TierRepriced => "TierRepriced" v 1,
    TierResized => "TierResized" v 1,
    SeatsAdded => "SeatsAdded" v 1,
    HoldPlaced => "HoldPlaced" v 2,
    HoldReleased => "HoldReleased" v 1,
    HoldExpired => "HoldExpired" v 1,
    OrderConfirmed => "OrderConfirmed" v 2,
    PaymentRefundOwed => "PaymentRefundOwed" v 1,
    OrderCancelled => "OrderCancelled" v 1,
    RefundIssued => "RefundIssued" v 1,
    TicketCheckedIn => "TicketCheckedIn" v 1,
    DoorStaffAssigned => "DoorStaffAssigned" v 1,
    DoorStaffUnassigned => "DoorStaffUnassigned" v 1,
    CommandAccepted => "InventoryCommandAccepted" v 1,
});

event_codec!(AccountEvent {
    AccountRegistered => "AccountRegistered" v 1,
    ProfileUpdated => "ProfileUpdated" v 1,
    RoleGranted => "RoleGranted" v 1,
    RoleRevoked => "RoleRevoked" v 1,
    CommandAccepted => "AccountCommandAccepted" v 1,
});

event_codec!(EmailEvent {
    EmailReserved => "EmailReserved" v 1,
    EmailReleased => "EmailReleased" v 1,
    CommandAccepted => "EmailCommandAccepted" v 1,
});
