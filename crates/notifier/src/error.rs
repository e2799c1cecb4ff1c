//! The notifier's error type.

use store::StoreError;

/// Why a notifier operation failed. Each variant has a stable [`code`](NotifierError::code).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NotifierError {
    /// The caller's input is invalid (a malformed URL, a page size out of range...).
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The thing asked for does not exist (or is not the caller's).
    #[error("not found: {0}")]
    NotFound(String),
    /// The configuration cannot work (bad sender address, bad TLS settings...).
    #[error("invalid notifier configuration: {0}")]
    Config(String),
    /// The notifier's own database failed.
    #[error("notifier database error: {0}")]
    Database(String),
    /// The event store failed.
    #[error("event store error: {0}")]
    Store(#[from] StoreError),
    /// The notifier has been shut down.
    #[error("notifier has shut down")]
    ShutDown,
}

impl NotifierError {
    /// A stable machine-readable code for logs and API error extensions.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "INVALID_INPUT",
            Self::NotFound(_) => "NOT_FOUND",
            Self::Config(_) => "CONFIG",
            Self::Database(_) => "INTERNAL",
            Self::Store(e) => e.code(),
            Self::ShutDown => "SHUT_DOWN",
        }
    }
}

impl From<rusqlite::Error> for NotifierError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Database(e.to_string())
    }
}

impl From<serde_json::Error> for NotifierError {
    fn from(e: serde_json::Error) -> Self {
        Self::Database(format!("stored JSON: {e}"))
    }
}
