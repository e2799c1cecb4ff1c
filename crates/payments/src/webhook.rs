//! Payment webhooks: the payload, its signed parsing, and a replay guard.

use std::collections::{HashSet, VecDeque};

use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use signature::SignatureError;
use uuid::Uuid;

use crate::port::{DeclineReason, RefundReason, validate_currency};

/// Largest webhook body accepted, so a hostile sender cannot make us parse megabytes.
pub const MAX_WEBHOOK_BODY_BYTES: usize = 64 * 1024;

/// What a webhook reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum WebhookEventType {
    /// A pending charge took the money.
    #[serde(rename = "charge.succeeded")]
    ChargeSucceeded,
    /// A pending charge was declined.
    #[serde(rename = "charge.failed")]
    ChargeFailed,
    /// A charge was refunded.
    #[serde(rename = "refund.succeeded")]
    RefundSucceeded,
}

impl WebhookEventType {
    /// The type's name on the wire (`charge.succeeded`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            WebhookEventType::ChargeSucceeded => "charge.succeeded",
            WebhookEventType::ChargeFailed => "charge.failed",
            WebhookEventType::RefundSucceeded => "refund.succeeded",
        }
    }
}

/// The JSON body of a payment webhook.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookEvent {
    /// Unique per event and the same on every redelivery of it: the de-duplication key.
    pub id: String,
    /// What happened.
    #[serde(rename = "type")]
    pub kind: WebhookEventType,
    /// The charge concerned.
    pub charge_id: String,
    /// The order the charge paid for.
    pub order_id: Uuid,
    /// The amount charged or refunded, in minor units.
    pub amount: u64,
    /// ISO 4217 code of `amount`.
    pub currency: String,
    /// When the provider created the event, unix seconds.
    pub created: i64,
    /// Why the charge failed; present exactly on `charge.failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure_reason: Option<DeclineReason>,
    /// The refund's id; present exactly on `refund.succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_id: Option<String>,
    /// Why the money went back; present exactly on `refund.succeeded`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refund_reason: Option<RefundReason>,
}

/// Why a webhook delivery was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WebhookError {
    /// The signature header is missing, malformed, wrong or outside the time tolerance.
    #[error(transparent)]
    Signature(#[from] SignatureError),
    /// The body is authentic but not a payment event we understand.
    #[error("invalid webhook payload: {0}")]
    InvalidPayload(String),
    /// The body is larger than [`MAX_WEBHOOK_BODY_BYTES`].
    #[error("webhook body of {0} bytes is too large")]
    TooLarge(usize),
}

impl WebhookError {
    /// The stable machine code of this error (the signature's own code for signature
    /// failures).
    pub fn code(&self) -> &'static str {
        match self {
            WebhookError::Signature(e) => e.code(),
            WebhookError::InvalidPayload(_) => "WEBHOOK_INVALID_PAYLOAD",
            WebhookError::TooLarge(_) => "WEBHOOK_TOO_LARGE",
        }
    }
}

/// Verifies a payment webhook and parses it.
///
/// `signature_header` is the value of [`signature::SIGNATURE_HEADER`], `body` the raw bytes
/// received, `now` the receiver's clock in unix seconds, `tolerance_secs` the largest age
/// (and clock skew) accepted. The signature and timestamp are checked before the body is
/// parsed, so nothing of an unauthenticated body is ever interpreted.
///
/// This does not detect a replay of an authentic delivery inside the tolerance window, nor
/// a provider's redelivery: both carry an event `id` already seen. De-duplicating by `id`
/// is the receiver's job, durably (e.g. by using it in the command's idempotency key) or
/// with a [`ReplayGuard`] in front.
pub fn parse_webhook(
    secrets: &[&[u8]],
    signature_header: &str,
    body: &[u8],
    now: i64,
    tolerance_secs: i64,
) -> Result<WebhookEvent, WebhookError> {
    if body.len() > MAX_WEBHOOK_BODY_BYTES {
        return Err(WebhookError::TooLarge(body.len()));
    }
    signature::verify(secrets, signature_header, body, now, tolerance_secs)?;
    let event: WebhookEvent =
        serde_json::from_slice(body).map_err(|e| WebhookError::InvalidPayload(e.to_string()))?;
    event.validate()?;
    Ok(event)
}

impl WebhookEvent {
    /// Checks the fields' shapes and that the optional fields match the type.
    pub fn validate(&self) -> Result<(), WebhookError> {
        let invalid = |what: &str| Err(WebhookError::InvalidPayload(what.to_string()));
        if self.id.is_empty() || self.charge_id.is_empty() {
            return invalid("id and charge_id must not be empty");
        }
        if self.amount == 0 {
            return invalid("amount must be positive");
        }
        if validate_currency(&self.currency).is_err() {
            return invalid("currency must be three uppercase letters");
        }
        let failed = self.kind == WebhookEventType::ChargeFailed;
        let refund = self.kind == WebhookEventType::RefundSucceeded;
        if self.failure_reason.is_some() != failed {
            return invalid("failure_reason is required on charge.failed and only there");
        }
        if self.refund_id.is_some() != refund || self.refund_reason.is_some() != refund {
            return invalid(
                "refund_id and refund_reason are required on refund.succeeded and only there",
            );
        }
        if self.refund_id.as_deref() == Some("") {
            return invalid("refund_id must not be empty");
        }
        Ok(())
    }
}

/// Remembers the most recent event ids, to refuse a delivery already accepted.
///
/// Bounded: once `capacity` ids are held, the oldest is forgotten. It lives in memory in one
/// process, so it is a first line of defence against replays inside the signature's
/// tolerance window, not a substitute for idempotent handling: size it to hold at least
/// every event the window can carry.
#[derive(Debug)]
pub struct ReplayGuard {
    /// The ids seen and their arrival order, under one lock so both stay in step.
    seen: Mutex<Seen>,
}

#[derive(Debug)]
struct Seen {
    /// Fast membership test.
    ids: HashSet<String>,
    /// Arrival order, to forget the oldest first.
    order: VecDeque<String>,
    /// Most ids held at once.
    capacity: usize,
}

impl ReplayGuard {
    /// A guard that remembers up to `capacity` ids (at least one).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Self {
            seen: Mutex::new(Seen {
                ids: HashSet::with_capacity(capacity),
                order: VecDeque::with_capacity(capacity),
                capacity,
            }),
        }
    }

    /// Records `event_id`; true the first time it is seen, false on a replay.
    pub fn first_time(&self, event_id: &str) -> bool {
        let mut seen = self.seen.lock();
        if seen.ids.contains(event_id) {
            return false;
        }
        if seen.order.len() == seen.capacity {
            if let Some(oldest) = seen.order.pop_front() {
                seen.ids.remove(&oldest);
            }
        }
        seen.ids.insert(event_id.to_string());
        seen.order.push_back(event_id.to_string());
        true
    }

    /// Forgets `event_id`, so that a delivery whose handling failed can be accepted when it
    /// is retried.
    pub fn forget(&self, event_id: &str) {
        let mut seen = self.seen.lock();
        if seen.ids.remove(event_id) {
            seen.order.retain(|id| id != event_id);
        }
    }

    /// How many ids are remembered now.
    pub fn len(&self) -> usize {
        self.seen.lock().ids.len()
    }

    /// True when no id is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
