//! The payment port: what the command side asks of any payment provider.

use std::time::Duration;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// Longest idempotency key accepted, as real providers bound theirs.
pub const MAX_IDEMPOTENCY_KEY_LEN: usize = 255;

/// A request to take money for one order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChargeRequest {
    /// Makes retries safe: by convention the order id, so an order is charged at most once.
    pub idempotency_key: String,
    /// The order being paid for; echoed in webhooks so they can be routed to it.
    pub order_id: Uuid,
    /// Amount in the currency's minor units (cents); must be positive.
    pub amount_minor: u64,
    /// ISO 4217 code, three uppercase letters (`EUR`).
    pub currency: String,
    /// The buyer's payment method as tokenised by the provider's client-side library.
    pub token: String,
}

impl ChargeRequest {
    /// A charge for `order_id` whose idempotency key is the order id.
    pub fn for_order(
        order_id: Uuid,
        amount_minor: u64,
        currency: impl Into<String>,
        token: impl Into<String>,
    ) -> Self {
        Self {
            idempotency_key: order_id.to_string(),
            order_id,
            amount_minor,
            currency: currency.into(),
            token: token.into(),
        }
    }

    /// Checks the fields any provider would refuse, with the field named in the error.
    pub fn validate(&self) -> Result<(), PaymentError> {
        if self.idempotency_key.is_empty() || self.idempotency_key.len() > MAX_IDEMPOTENCY_KEY_LEN {
            return Err(PaymentError::invalid(
                "idempotency_key",
                format!("must be 1 to {MAX_IDEMPOTENCY_KEY_LEN} bytes"),
            ));
        }
        if self.amount_minor == 0 {
            return Err(PaymentError::invalid("amount_minor", "must be positive"));
        }
        validate_currency(&self.currency)?;
        if self.token.is_empty() {
            return Err(PaymentError::invalid("token", "must not be empty"));
        }
        Ok(())
    }
}

/// Checks that `currency` looks like an ISO 4217 code: three ASCII uppercase letters.
pub fn validate_currency(currency: &str) -> Result<(), PaymentError> {
    if currency.len() == 3 && currency.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(())
    } else {
        Err(PaymentError::invalid(
            "currency",
            "must be an ISO 4217 code of three uppercase letters",
        ))
    }
}

/// What became of a charge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum ChargeOutcome {
    /// The money was taken: confirm the order.
    Succeeded {
        /// The provider's id of the charge, needed to refund it.
        charge_id: String,
    },
    /// The payment method was refused: release the hold.
    Declined {
        /// Why, as the provider reports it.
        reason: DeclineReason,
    },
    /// The provider will answer later through a webhook (`charge.succeeded` or
    /// `charge.failed` carrying this `charge_id`); keep the hold until then or until it
    /// expires.
    Pending {
        /// The id the later webhook carries.
        charge_id: String,
    },
}

/// Why a charge was declined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeclineReason {
    /// Declined without a more specific reason.
    CardDeclined,
    /// Not enough money on the account.
    InsufficientFunds,
    /// The card has expired.
    ExpiredCard,
}

impl DeclineReason {
    /// The stable machine code of this reason (the same text as its JSON form).
    pub fn code(self) -> &'static str {
        match self {
            DeclineReason::CardDeclined => "card_declined",
            DeclineReason::InsufficientFunds => "insufficient_funds",
            DeclineReason::ExpiredCard => "expired_card",
        }
    }
}

/// A request to give back the whole amount of a successful charge.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefundRequest {
    /// The charge to refund; a charge is refunded at most once, so this is also the
    /// refund's idempotency key.
    pub charge_id: String,
    /// The order the charge paid for; a refund naming another order is refused, which
    /// catches a charge id routed to the wrong order.
    pub order_id: Uuid,
    /// Why the money goes back, kept in the provider's records.
    pub reason: RefundReason,
}

/// Why money is given back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefundReason {
    /// The payment arrived after the hold had expired: the tickets were not kept for it.
    HoldExpired,
    /// The buyer or an organizer cancelled the order.
    OrderCancelled,
    /// The event was cancelled.
    EventCancelled,
    /// The same order was paid twice.
    Duplicate,
}

/// What became of a refund.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum RefundOutcome {
    /// The money is on its way back to the buyer.
    Succeeded {
        /// The provider's id of the refund.
        refund_id: String,
        /// The amount given back, in minor units: the whole charge.
        amount_minor: u64,
        /// The charge's currency.
        currency: String,
    },
}

/// Why a payment request failed without an outcome.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PaymentError {
    /// A field of the request is invalid (including an unknown payment token).
    #[error("invalid {field}: {reason}")]
    InvalidInput {
        /// The offending field.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// The order was already charged with different parameters (amount, currency, token
    /// or idempotency key): the first charge stands and no second one is made.
    #[error("order {order_id} was already charged with different parameters")]
    IdempotencyConflict {
        /// The order already charged.
        order_id: Uuid,
    },
    /// No charge has this id.
    #[error("unknown charge {charge_id}")]
    UnknownCharge {
        /// The id asked for.
        charge_id: String,
    },
    /// The charge exists but holds no money to give back (declined or not settled yet).
    #[error("charge {charge_id} cannot be refunded: it is {status}")]
    NotRefundable {
        /// The charge asked for.
        charge_id: String,
        /// Its status (`pending`, `declined`).
        status: &'static str,
    },
    /// The provider did not answer within the caller's deadline ([`charge_within`]).
    /// Nothing is known about the charge: release the hold, and refund the money if a
    /// success arrives later for it.
    #[error("the payment provider did not answer within {0:?}")]
    TimedOut(Duration),
    /// The provider could not record the request (its books cannot be written), so it made
    /// nothing of it: no money moved. Retrying the same request may succeed.
    #[error("the payment provider is unavailable: {0}")]
    Unavailable(String),
}

impl PaymentError {
    /// The stable machine code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            PaymentError::InvalidInput { .. } => "INVALID_INPUT",
            PaymentError::IdempotencyConflict { .. } => "IDEMPOTENCY_CONFLICT",
            PaymentError::UnknownCharge { .. } => "UNKNOWN_CHARGE",
            PaymentError::NotRefundable { .. } => "CHARGE_NOT_REFUNDABLE",
            PaymentError::TimedOut(_) => "PAYMENT_TIMEOUT",
            PaymentError::Unavailable(_) => "PAYMENT_UNAVAILABLE",
        }
    }

    pub(crate) fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        PaymentError::InvalidInput {
            field,
            reason: reason.into(),
        }
    }
}

/// A charge as the provider's books list it, for reconciling them with the orders.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListedCharge {
    /// Where the listing goes on after this charge (pass it as `after`).
    pub cursor: String,
    /// The provider's id of the charge.
    pub charge_id: String,
    /// The order it was taken for.
    pub order_id: Uuid,
    /// Amount in minor units.
    pub amount_minor: u64,
    /// ISO 4217 code.
    pub currency: String,
    /// Where it stands.
    pub status: ListedChargeStatus,
}

/// Where a listed charge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListedChargeStatus {
    /// Not settled yet: a webhook will say.
    Pending,
    /// The money was taken.
    Succeeded,
    /// Refused; no money moved.
    Declined,
}

/// A payment provider, real or simulated.
///
/// Both calls are idempotent: charging an order again returns the first outcome and never
/// charges twice, also while the first call is still in flight; refunding a charge again
/// returns the first refund.
#[async_trait]
pub trait PaymentPort: Send + Sync {
    /// Takes money for an order, or says why not, or that the answer comes by webhook.
    async fn charge(&self, request: ChargeRequest) -> Result<ChargeOutcome, PaymentError>;

    /// Gives back the whole amount of a successful charge.
    async fn refund(&self, request: RefundRequest) -> Result<RefundOutcome, PaymentError>;

    /// The charges made after the one `after` names (`None`: from the first), oldest first,
    /// at most `limit` of them: what reconciliation checks against the orders, so that money
    /// taken for an order that was never confirmed is found and given back.
    async fn list_charges(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<ListedCharge>, PaymentError>;
}

/// Charges through `port`, giving up after `timeout` with [`PaymentError::TimedOut`].
///
/// Providers may never answer; the caller's deadline is what turns that into a released
/// hold. Giving up does not cancel anything at the provider: a late success arrives by
/// webhook and must be refunded.
pub async fn charge_within(
    port: &dyn PaymentPort,
    request: ChargeRequest,
    timeout: Duration,
) -> Result<ChargeOutcome, PaymentError> {
    tokio::time::timeout(timeout, port.charge(request))
        .await
        .unwrap_or(Err(PaymentError::TimedOut(timeout)))
}
