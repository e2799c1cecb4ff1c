//! Why a command was refused: a typed enum with stable machine codes and messages a person
//! understands. A rejection is the only way a decision can fail; it never changes state.

use chrono::{DateTime, Utc};
use thiserror::Error;

/// A refused command. [`Rejection::code`] is stable and meant for machines (GraphQL
/// `extensions.code`); the `Display` text is meant for people and names what was wrong.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
pub enum Rejection {
    /// The tier has fewer tickets left than requested.
    #[error("sold out: tier {tier} has {available} ticket(s) left, {requested} requested")]
    SoldOut {
        tier: String,
        requested: u32,
        available: u32,
    },
    /// A requested seat is already held or sold.
    #[error("seat {seat} is already taken")]
    SeatTaken { seat: String },
    /// The hold ran out (or was released) before the command arrived.
    #[error("hold {order} expired at {expired_at}")]
    HoldExpired {
        order: String,
        expired_at: DateTime<Utc>,
    },
    /// The hold has not reached its expiry time yet, so it cannot be expired.
    #[error("hold {order} does not expire until {expires_at}")]
    HoldNotExpired {
        order: String,
        expires_at: DateTime<Utc>,
    },
    /// The per-user ticket limit of the event would be exceeded.
    #[error(
        "limit exceeded: at most {limit} ticket(s) per user for this event; you have {current}, {requested} requested"
    )]
    LimitExceeded {
        limit: u32,
        current: u32,
        requested: u32,
    },
    /// The event is not selling now (not published, or outside its on-sale window).
    #[error("not on sale: {reason}")]
    NotOnSale { reason: String },
    /// The event was cancelled; nothing about it can change any more.
    #[error("event {event} is cancelled")]
    EventCancelled { event: String },
    /// The ticket was already checked in.
    #[error("ticket {ticket} was already checked in at {at}")]
    AlreadyCheckedIn { ticket: String, at: DateTime<Utc> },
    /// The ticket is void (its order was cancelled or refunded).
    #[error("ticket {ticket} is void")]
    TicketVoid { ticket: String },
    /// Something the command names does not exist.
    #[error("{what} {id} not found")]
    NotFound { what: &'static str, id: String },
    /// The acting user may not run this command.
    #[error("forbidden: {reason}")]
    Forbidden { reason: String },
    /// The command's input is malformed or out of range.
    #[error("invalid {field}: {message}")]
    InvalidInput {
        field: &'static str,
        message: String,
    },
    /// The thing the command would create already exists.
    #[error("{what} {id} already exists")]
    AlreadyExists { what: &'static str, id: String },
    /// The email is registered to another account.
    #[error("email {email} is already registered")]
    EmailTaken { email: String },
    /// A tier cannot shrink below what it has sold and held.
    #[error("tier {tier} cannot be resized to {requested}: {committed} ticket(s) are sold or held")]
    CapacityTooSmall {
        tier: String,
        requested: u32,
        committed: u32,
    },
    /// No refund is owed for this order and payment.
    #[error("no refund is owed for order {order} and payment {payment_ref}")]
    NoRefundOwed { order: String, payment_ref: String },
    /// The refund's amount or currency differs from what is owed.
    #[error("a refund of {given} does not match the {owed} owed for order {order}")]
    RefundMismatch {
        order: String,
        owed: String,
        given: String,
    },
    /// The refund owed was already paid back under another refund id.
    #[error("the refund owed for order {order} was already made as refund {refund_id}")]
    AlreadyRefunded { order: String, refund_id: String },
    /// The command does not apply to the current state of what it names (for example
    /// releasing an order that is already paid).
    #[error("{0}")]
    InvalidState(String),
}

impl Rejection {
    /// The stable machine code of this rejection, in SCREAMING_SNAKE case.
    pub fn code(&self) -> &'static str {
        match self {
            Self::SoldOut { .. } => "SOLD_OUT",
            Self::SeatTaken { .. } => "SEAT_TAKEN",
            Self::HoldExpired { .. } => "HOLD_EXPIRED",
            Self::HoldNotExpired { .. } => "HOLD_NOT_EXPIRED",
            Self::LimitExceeded { .. } => "LIMIT_EXCEEDED",
            Self::NotOnSale { .. } => "NOT_ON_SALE",
            Self::EventCancelled { .. } => "EVENT_CANCELLED",
            Self::AlreadyCheckedIn { .. } => "ALREADY_CHECKED_IN",
            Self::TicketVoid { .. } => "TICKET_VOID",
            Self::NotFound { .. } => "NOT_FOUND",
            Self::Forbidden { .. } => "FORBIDDEN",
            Self::InvalidInput { .. } => "INVALID_INPUT",
            Self::AlreadyExists { .. } => "ALREADY_EXISTS",
            Self::EmailTaken { .. } => "EMAIL_TAKEN",
            Self::CapacityTooSmall { .. } => "CAPACITY_TOO_SMALL",
            Self::NoRefundOwed { .. } => "NO_REFUND_OWED",
            Self::RefundMismatch { .. } => "REFUND_MISMATCH",
            Self::AlreadyRefunded { .. } => "ALREADY_REFUNDED",
            Self::InvalidState(_) => "INVALID_STATE",
        }
    }

    /// Every code [`Rejection::code`] can return.
    pub const CODES: &'static [&'static str] = &[
        "SOLD_OUT",
        "SEAT_TAKEN",
        "HOLD_EXPIRED",
        "HOLD_NOT_EXPIRED",
        "LIMIT_EXCEEDED",
        "NOT_ON_SALE",
        "EVENT_CANCELLED",
        "ALREADY_CHECKED_IN",
        "TICKET_VOID",
        "NOT_FOUND",
        "FORBIDDEN",
        "INVALID_INPUT",
        "ALREADY_EXISTS",
        "EMAIL_TAKEN",
        "CAPACITY_TOO_SMALL",
        "NO_REFUND_OWED",
        "REFUND_MISMATCH",
        "ALREADY_REFUNDED",
        "INVALID_STATE",
    ];

    /// An [`Rejection::InvalidInput`] for `field`.
    pub fn invalid(field: &'static str, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            field,
            message: message.into(),
        }
    }

    /// A [`Rejection::Forbidden`] with a reason.
    pub fn forbidden(reason: impl Into<String>) -> Self {
        Self::Forbidden {
            reason: reason.into(),
        }
    }

    /// A [`Rejection::NotFound`] for `what` named `id`.
    pub fn not_found(what: &'static str, id: impl ToString) -> Self {
        Self::NotFound {
            what,
            id: id.to_string(),
        }
    }
}
