//! Request signing and signed ticket codes.
//!
//! Two schemes share one primitive, HMAC-SHA256, and one error type:
//!
//! * **Timestamped request signatures** ([`sign`], [`verify`]): the value of the
//!   [`SIGNATURE_HEADER`] on a webhook (payment provider to us, us to an organizer). The
//!   MAC covers the timestamp and the exact body bytes, so a receiver can refuse an altered
//!   body and, by bounding the timestamp's age, a replay of an old delivery. Several
//!   secrets may be accepted at once so that a secret can be rotated without downtime.
//! * **Ticket codes** ([`TicketCodeSigner`]): the compact, URL- and QR-friendly string a
//!   ticket's QR code carries. The door checks the tag before any lookup, so a forged code
//!   costs one HMAC and never touches the store.
//!
//! Every failure is a [`SignatureError`] with a stable machine code; nothing here panics on
//! input. All MAC comparisons are constant-time (`Mac::verify_slice`).
//!
//! The wire format of the request signature is documented for receivers in
//! `docs/webhooks.md`.
//!
//! ```
//! use signature::{sign, verify};
//!
//! let body = br#"{"id":"evt_1"}"#;
//! let header = sign(b"secret", 1_700_000_000, body);
//! assert_eq!(verify(&[b"secret"], &header, body, 1_700_000_060, 300), Ok(()));
//! // The same delivery an hour later is refused as a replay.
//! let late = verify(&[b"secret"], &header, body, 1_700_003_600, 300);
//! assert_eq!(late.unwrap_err().code(), "SIGNATURE_EXPIRED");
//! ```

mod request;
mod ticket_code;

pub use request::{SIGNATURE_HEADER, sign, verify};
pub use ticket_code::{TICKET_CODE_LEN, TicketClaims, TicketCodeSigner};

/// Why a signature, a signature header or a ticket code was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// The header or code is not in the expected shape; the reason is a short fixed text.
    #[error("malformed signature: {0}")]
    Malformed(&'static str),
    /// The signed timestamp is older than the tolerance allows: most likely a replay.
    #[error(
        "signature timestamp {timestamp} is more than {tolerance_secs}s older than now ({now})"
    )]
    Expired {
        /// The timestamp the signature carries (unix seconds).
        timestamp: i64,
        /// The receiver's clock when it checked (unix seconds).
        now: i64,
        /// The allowed age.
        tolerance_secs: i64,
    },
    /// The signed timestamp is further ahead of the receiver's clock than the tolerance.
    #[error("signature timestamp {timestamp} is more than {tolerance_secs}s ahead of now ({now})")]
    FromFuture {
        /// The timestamp the signature carries (unix seconds).
        timestamp: i64,
        /// The receiver's clock when it checked (unix seconds).
        now: i64,
        /// The allowed clock skew.
        tolerance_secs: i64,
    },
    /// No accepted secret produces any of the signatures presented.
    #[error("signature does not match")]
    Mismatch,
}

impl SignatureError {
    /// The stable machine code of this error, for logs and API error extensions.
    pub fn code(&self) -> &'static str {
        match self {
            SignatureError::Malformed(_) => "SIGNATURE_MALFORMED",
            SignatureError::Expired { .. } => "SIGNATURE_EXPIRED",
            SignatureError::FromFuture { .. } => "SIGNATURE_FROM_FUTURE",
            SignatureError::Mismatch => "SIGNATURE_MISMATCH",
        }
    }
}
