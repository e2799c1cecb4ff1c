//! Identifiers and validated values shared by every aggregate: uuid newtypes, seat ids,
//! normalised emails, idempotency keys, and the names of the streams they live in.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize};
use uuid::Uuid;

use crate::rejection::Rejection;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(
            Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
        )]
        #[serde(transparent)]
        pub struct $name(pub Uuid);

        impl $name {
            /// Wraps an existing uuid.
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying uuid.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                fmt::Display::fmt(&self.0.hyphenated(), f)
            }
        }

        impl FromStr for $name {
            type Err = Rejection;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s.trim()).map(Self).map_err(|_| {
                    Rejection::invalid(
                        $what,
                        format!("{s:?} is not a valid {} (expected a uuid)", $what),
                    )
                })
            }
        }

        impl From<Uuid> for $name {
            fn from(uuid: Uuid) -> Self {
                Self(uuid)
            }
        }
    };
}

uuid_id!(
    /// Identifies one ticketed event (a concert, a conference) and its inventory stream.
    EventId,
    "event id"
);
uuid_id!(
    /// Identifies a ticket tier (Standard, VIP, ...) within one event.
    TierId,
    "tier id"
);
uuid_id!(
    /// Identifies an order: a hold that may become paid tickets.
    OrderId,
    "order id"
);
uuid_id!(
    /// Identifies one issued ticket.
    TicketId,
    "ticket id"
);
uuid_id!(
    /// Identifies a user account.
    UserId,
    "user id"
);

/// Longest seat id accepted, in characters.
pub const MAX_SEAT_ID_LEN: usize = 16;

/// A seat's stable id within one event's seat map, such as `A-12`.
///
/// Ids are upper-cased on parsing, so `a-12` and `A-12` name the same seat. They consist of
/// ASCII letters, digits and single dashes, start and end with a letter or digit, and are at
/// most [`MAX_SEAT_ID_LEN`] characters long.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct SeatId(String);

impl SeatId {
    /// Validates and normalises a seat id.
    pub fn parse(raw: &str) -> Result<Self, Rejection> {
        let s = raw.trim();
        let bad = |why: &str| Rejection::invalid("seat", format!("seat id {raw:?} {why}"));
        if s.is_empty() {
            return Err(bad("is empty"));
        }
        if s.chars().count() > MAX_SEAT_ID_LEN {
            return Err(bad(&format!("is longer than {MAX_SEAT_ID_LEN} characters")));
        }
        if !s.chars().all(|c| c.is_ascii_alphanumeric() || c == '-') {
            return Err(bad("may contain only letters, digits and dashes"));
        }
        if s.starts_with('-') || s.ends_with('-') || s.contains("--") {
            return Err(bad(
                "must start and end with a letter or digit and not repeat dashes",
            ));
        }
        Ok(Self(s.to_ascii_uppercase()))
    }

    /// The normalised id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for SeatId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for SeatId {
    type Err = Rejection;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for SeatId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Longest idempotency key accepted, in characters.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 128;

/// A client-chosen key that makes a command safe to retry: within one stream and for one
/// acting user, a key that was already decided yields the first outcome again.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a key: non-empty, at most [`MAX_IDEMPOTENCY_KEY_LEN`] characters, printable.
    pub fn parse(raw: &str) -> Result<Self, Rejection> {
        let bad =
            |why: String| Rejection::invalid("idempotencyKey", format!("idempotency key {why}"));
        if raw.trim().is_empty() {
            return Err(bad("is empty".into()));
        }
        if raw.chars().count() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(bad(format!(
                "is longer than {MAX_IDEMPOTENCY_KEY_LEN} characters"
            )));
        }
        if raw.chars().any(char::is_control) {
            return Err(bad("contains control characters".into()));
        }
        Ok(Self(raw.to_owned()))
    }

    /// The key as given.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for IdempotencyKey {
    type Err = Rejection;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for IdempotencyKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Longest email accepted, in characters (RFC 5321 path limit).
pub const MAX_EMAIL_LEN: usize = 254;

/// An email address in its normalised form: trimmed and lower-cased. Two registrations whose
/// emails normalise to the same value are the same email.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Email(String);

impl Email {
    /// Validates and normalises an email address.
    pub fn parse(raw: &str) -> Result<Self, Rejection> {
        let s = raw.trim().to_lowercase();
        let bad = |why: &str| Rejection::invalid("email", format!("email {raw:?} {why}"));
        if s.is_empty() {
            return Err(bad("is empty"));
        }
        if s.chars().count() > MAX_EMAIL_LEN {
            return Err(bad(&format!("is longer than {MAX_EMAIL_LEN} characters")));
        }
        if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(bad("contains whitespace or control characters"));
        }
        let Some((local, domain)) = s.split_once('@') else {
            return Err(bad("has no @"));
        };
        if local.is_empty() || domain.is_empty() || domain.contains('@') {
            return Err(bad("must be of the form name@domain"));
        }
        if !domain.contains('.') || domain.starts_with('.') || domain.ends_with('.') {
            return Err(bad("has no valid domain"));
        }
        Ok(Self(s))
    }

    /// The normalised address.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for Email {
    type Err = Rejection;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// Namespace of the name-based uuids this crate derives (email streams, key hashes).
pub(crate) const TICKETING_NAMESPACE: Uuid =
    Uuid::from_u128(0x5e1f_7a3c_9d2b_4c61_8f0e_2a7b_3c4d_5e6f);

/// Stream names: which stream each aggregate instance lives in.
pub mod streams {
    use super::{Email, EventId, TICKETING_NAMESPACE, UserId};
    use uuid::Uuid;

    /// Prefix of inventory streams.
    pub const INVENTORY_PREFIX: &str = "inventory-";
    /// Prefix of user account streams.
    pub const USER_PREFIX: &str = "user-";
    /// Prefix of email reservation streams.
    pub const EMAIL_PREFIX: &str = "email-";

    /// `inventory-<uuid>`: one ticketed event's inventory.
    pub fn inventory(event: EventId) -> String {
        format!("{INVENTORY_PREFIX}{event}")
    }

    /// `user-<uuid>`: one user account.
    pub fn user(user: UserId) -> String {
        format!("{USER_PREFIX}{user}")
    }

    /// `email-<uuid>`: the reservation of one normalised email. The uuid is derived from the
    /// email (name-based, SHA-1), so the stream is found from the email alone without putting
    /// the address itself into stream names.
    pub fn email(email: &Email) -> String {
        let id = Uuid::new_v5(&TICKETING_NAMESPACE, email.as_str().as_bytes());
        format!("{EMAIL_PREFIX}{}", id.hyphenated())
    }

    /// The event id of an inventory stream name, if it is one.
    pub fn parse_inventory(stream: &str) -> Option<EventId> {
        stream
            .strip_prefix(INVENTORY_PREFIX)
            .and_then(|s| s.parse().ok())
    }

    /// The user id of a user stream name, if it is one.
    pub fn parse_user(stream: &str) -> Option<UserId> {
        stream
            .strip_prefix(USER_PREFIX)
            .and_then(|s| s.parse().ok())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seat_ids_are_normalised_and_validated() {
        assert_eq!(SeatId::parse(" a-12 ").unwrap().as_str(), "A-12");
        for bad in ["", "-A", "A-", "A--1", "A 1", "A/1", "ABCDEFGHIJKLMNOPQ"] {
            let err = SeatId::parse(bad).unwrap_err();
            assert_eq!(err.code(), "INVALID_INPUT", "{bad:?}");
        }
    }

    #[test]
    fn emails_are_normalised_and_validated() {
        assert_eq!(
            Email::parse("  Alice@Example.COM ").unwrap().as_str(),
            "alice@example.com"
        );
        for bad in ["", "alice", "@x.com", "a@", "a@b", "a b@c.com", "a@b@c.com"] {
            assert_eq!(Email::parse(bad).unwrap_err().code(), "INVALID_INPUT");
        }
    }

    #[test]
    fn idempotency_keys_are_bounded() {
        assert!(IdempotencyKey::parse("k-1").is_ok());
        assert!(IdempotencyKey::parse("").is_err());
        assert!(IdempotencyKey::parse("   ").is_err());
        assert!(IdempotencyKey::parse(&"x".repeat(129)).is_err());
        assert!(IdempotencyKey::parse(&"x".repeat(128)).is_ok());
        assert!(IdempotencyKey::parse("a\nb").is_err());
    }

    #[test]
    fn ids_round_trip_through_strings_and_streams() {
        let id = EventId(Uuid::from_u128(7));
        assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        assert_eq!(streams::parse_inventory(&streams::inventory(id)), Some(id));
        assert!("nope".parse::<EventId>().is_err());
        let a = streams::email(&Email::parse("A@x.io").unwrap());
        let b = streams::email(&Email::parse("a@X.io").unwrap());
        assert_eq!(a, b);
        assert!(a.starts_with("email-"));
    }
}
