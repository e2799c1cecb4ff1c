//! Prices: an amount in minor units (cents) of an ISO 4217 currency.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::rejection::Rejection;

/// Largest price accepted for one ticket, in minor units (ten million major units).
pub const MAX_PRICE_MINOR: i64 = 1_000_000_000;

/// An ISO 4217 alphabetic currency code such as `EUR`: three upper-case ASCII letters.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Currency([u8; 3]);

impl Currency {
    /// Validates a currency code (case-insensitive; stored upper-case).
    pub fn parse(raw: &str) -> Result<Self, Rejection> {
        let s = raw.trim();
        match s.as_bytes() {
            [a, b, c] if [a, b, c].iter().all(|x| x.is_ascii_alphabetic()) => Ok(Self([
                a.to_ascii_uppercase(),
                b.to_ascii_uppercase(),
                c.to_ascii_uppercase(),
            ])),
            _ => Err(Rejection::invalid(
                "currency",
                format!("{raw:?} is not an ISO 4217 currency code (three letters such as EUR)"),
            )),
        }
    }

    /// The code, such as `EUR`.
    pub fn as_str(&self) -> &str {
        // Built only from ASCII letters, so always valid UTF-8.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Currency {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Currency {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(d)?;
        Self::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// An amount of money: minor units of a currency.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Money {
    /// Amount in minor units (cents for EUR).
    pub amount_minor: u64,
    /// The currency.
    pub currency: Currency,
}

impl Money {
    /// Validates a price as it arrives from outside: not negative, not absurd.
    pub fn price(amount_minor: i64, currency: &str) -> Result<Self, Rejection> {
        let currency = Currency::parse(currency)?;
        if amount_minor < 0 {
            return Err(Rejection::invalid(
                "price",
                format!("price must not be negative (got {amount_minor})"),
            ));
        }
        if amount_minor > MAX_PRICE_MINOR {
            return Err(Rejection::invalid(
                "price",
                format!(
                    "price {amount_minor} exceeds the maximum of {MAX_PRICE_MINOR} minor units"
                ),
            ));
        }
        Ok(Self {
            amount_minor: amount_minor.unsigned_abs(),
            currency,
        })
    }

    /// This price times a quantity (saturating; quantities and prices are bounded so it
    /// never saturates in practice).
    pub fn times(&self, quantity: u32) -> Money {
        Money {
            amount_minor: self.amount_minor.saturating_mul(u64::from(quantity)),
            currency: self.currency,
        }
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.amount_minor, self.currency)
    }
}
