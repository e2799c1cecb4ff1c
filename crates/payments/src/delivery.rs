//! Delivering signed webhooks: in-process to a channel, or over HTTP.

use std::time::Duration;

use async_trait::async_trait;
use tokio::sync::mpsc;

use crate::webhook::WebhookEvent;

/// One signed webhook, ready to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WebhookDelivery {
    /// The event, for in-process receivers and logs.
    pub event: WebhookEvent,
    /// The exact JSON bytes the signature covers.
    pub body: Vec<u8>,
    /// The value of the [`signature::SIGNATURE_HEADER`] header.
    pub signature_header: String,
}

/// Why a delivery did not reach its receiver.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeliveryError {
    /// The in-process receiver is gone.
    #[error("the webhook receiver channel is closed")]
    ChannelClosed,
    /// The HTTP request failed (connection refused, timeout, ...).
    #[error("webhook request failed: {0}")]
    Transport(String),
    /// The receiver answered with a status other than 2xx.
    #[error("webhook receiver answered {0}")]
    Status(u16),
}

/// Where the simulated provider sends its webhooks.
#[async_trait]
pub trait WebhookSink: Send + Sync + 'static {
    /// Delivers one webhook; `Ok` once the receiver has accepted it.
    async fn deliver(&self, delivery: &WebhookDelivery) -> Result<(), DeliveryError>;
}

/// Hands webhooks to an in-process receiver through a channel (tests, single process).
#[derive(Debug, Clone)]
pub struct ChannelSink {
    /// The receiving end is the test or the in-process webhook handler.
    sender: mpsc::UnboundedSender<WebhookDelivery>,
}

impl ChannelSink {
    /// A sink and the receiver its deliveries arrive on.
    pub fn new() -> (Self, mpsc::UnboundedReceiver<WebhookDelivery>) {
        let (sender, receiver) = mpsc::unbounded_channel();
        (Self { sender }, receiver)
    }
}

#[async_trait]
impl WebhookSink for ChannelSink {
    async fn deliver(&self, delivery: &WebhookDelivery) -> Result<(), DeliveryError> {
        self.sender
            .send(delivery.clone())
            .map_err(|_| DeliveryError::ChannelClosed)
    }
}

/// POSTs webhooks to a URL (the API's `/webhooks/payments`), retrying with backoff.
///
/// Delivery is at least once: a receiver that answered 2xx but whose answer was lost gets
/// the same event (same `id`) again. Retries resend the same signature header; the default
/// schedule (at most about a minute, request timeouts included) ends well inside the
/// 300 s tolerance receivers use.
#[derive(Debug, Clone)]
pub struct HttpSink {
    /// Reused across deliveries for its connection pool.
    client: reqwest::Client,
    /// Where to POST.
    url: String,
    /// Attempts per delivery, the first included.
    max_attempts: u32,
    /// Wait before the second attempt; doubled before each further one.
    first_backoff: Duration,
}

impl HttpSink {
    /// A sink that POSTs to `url`, trying up to 5 times from 200 ms of backoff on, each
    /// request limited to 10 s. Redirects are not followed: a 3xx answer is a failure.
    pub fn new(url: impl Into<String>) -> Result<Self, DeliveryError> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            // A redirect would turn the POST into a GET elsewhere; count it as a failure.
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| DeliveryError::Transport(e.to_string()))?;
        Ok(Self {
            client,
            url: url.into(),
            max_attempts: 5,
            first_backoff: Duration::from_millis(200),
        })
    }

    /// Changes the retry policy: `max_attempts` (at least 1) tries, waiting `first_backoff`
    /// and then doubling between them.
    pub fn with_retries(mut self, max_attempts: u32, first_backoff: Duration) -> Self {
        self.max_attempts = max_attempts.max(1);
        self.first_backoff = first_backoff;
        self
    }

    async fn attempt(&self, delivery: &WebhookDelivery) -> Result<(), DeliveryError> {
        let response = self
            .client
            .post(&self.url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::SIGNATURE_HEADER, &delivery.signature_header)
            .body(delivery.body.clone())
            .send()
            .await
            .map_err(|e| DeliveryError::Transport(e.to_string()))?;
        if response.status().is_success() {
            Ok(())
        } else {
            Err(DeliveryError::Status(response.status().as_u16()))
        }
    }
}

#[async_trait]
impl WebhookSink for HttpSink {
    async fn deliver(&self, delivery: &WebhookDelivery) -> Result<(), DeliveryError> {
        let mut backoff = self.first_backoff;
        let mut attempt = 1;
        loop {
            match self.attempt(delivery).await {
                Ok(()) => return Ok(()),
                Err(error) if attempt < self.max_attempts => {
                    tracing::warn!(
                        event_id = %delivery.event.id,
                        attempt,
                        %error,
                        "payment webhook delivery failed; retrying"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff = backoff.saturating_mul(2);
                    attempt += 1;
                }
                Err(error) => return Err(error),
            }
        }
    }
}
