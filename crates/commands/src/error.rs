//! What a command can answer besides its outcome.

use domain::Rejection;
use payments::PaymentError;
use store::Position;

/// The answer to a successful command: what it did and where its events are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt<O> {
    /// What the command answered.
    pub outcome: O,
    /// Global position of the last event the command wrote; for a command that wrote
    /// nothing (an idempotent retry), a position at or after its original events. A reader
    /// that waits until its projection reaches this position sees the command's effect.
    pub position: Position,
}

impl<O> Receipt<O> {
    /// The same receipt with another outcome.
    pub fn map<P>(self, f: impl FnOnce(O) -> P) -> Receipt<P> {
        Receipt {
            outcome: f(self.outcome),
            position: self.position,
        }
    }
}

/// Why a command did not succeed. [`CommandError::code`] is stable (GraphQL
/// `extensions.code`); [`CommandError::is_retriable`] says whether the same command (with
/// the same idempotency key) may succeed later.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    /// The domain refused the command; retrying the same command gets the same answer.
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The stream kept changing under the command (another process writes it); nothing
    /// of the command was acknowledged. Retry with the same idempotency key.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The store or the event's actor could not answer; the command may or may not have
    /// taken effect. Retry with the same idempotency key.
    #[error("unavailable: {0}")]
    Unavailable(String),
    /// The command is too large to store (for example a seat map beyond the append limits).
    #[error("invalid input: {0}")]
    TooLarge(String),
    /// The payment provider refused the request itself (not a decline: a decline is an
    /// outcome).
    #[error("payment failed: {0}")]
    Payment(PaymentError),
}

impl CommandError {
    /// The stable machine code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Rejected(r) => r.code(),
            Self::Conflict(_) => "CONFLICT",
            Self::Unavailable(_) => "UNAVAILABLE",
            Self::TooLarge(_) => "INVALID_INPUT",
            Self::Payment(e) => e.code(),
        }
    }

    /// Whether retrying the same command (same idempotency key) may succeed.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::Conflict(_) | Self::Unavailable(_))
    }

    /// The rejection, if the domain refused the command.
    pub fn rejection(&self) -> Option<&Rejection> {
        match self {
            Self::Rejected(r) => Some(r),
            _ => None,
        }
    }
}

impl From<store::StoreError> for CommandError {
    fn from(e: store::StoreError) -> Self {
        match e {
            store::StoreError::WrongExpectedVersion { .. } => Self::Conflict(e.to_string()),
            other => Self::Unavailable(other.to_string()),
        }
    }
}
