//! Delivery channels: each turns one pending notification into a delivery attempt.

pub mod email;
pub mod in_app;
pub mod webhook;

use crate::outbox::{ChannelKind, PendingDelivery};

/// Why one delivery attempt failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The channel may accept it later (server down, timeout, 4xx SMTP reply, HTTP 5xx):
    /// retry with backoff.
    #[error("transient: {0}")]
    Transient(String),
    /// The channel will never accept it (mailbox refused, template error, webhook
    /// removed, HTTP 4xx): dead-letter it at once.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// A way of delivering notifications.
#[async_trait::async_trait]
pub trait Channel: Send + Sync + 'static {
    /// Which channel this is.
    fn kind(&self) -> ChannelKind;

    /// Tries to deliver `delivery` once. `Ok` means the receiving side accepted it
    /// (the SMTP server answered 250, the webhook answered 2xx, the row is stored).
    async fn deliver(&self, delivery: &PendingDelivery) -> Result<(), DeliveryError>;
}
