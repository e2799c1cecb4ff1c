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

    /// Most deliveries one [`Channel::deliver_all`] call takes: above 1 for a channel
    /// whose receiving side takes a batch as cheaply as one (a table in the notifier's
    /// own database). 1 by default.
    fn batch(&self) -> usize {
        1
    }

    /// Tries to deliver each of `deliveries` once; one outcome per delivery, in order.
    /// By default one after the other through [`Channel::deliver`].
    async fn deliver_all(&self, deliveries: &[PendingDelivery]) -> Vec<Result<(), DeliveryError>> {
        let mut outcomes = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            outcomes.push(self.deliver(delivery).await);
        }
        outcomes
    }
}
