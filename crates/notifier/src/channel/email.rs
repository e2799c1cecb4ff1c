//! Email over SMTP (lettre), with text and HTML bodies rendered from templates.

use std::sync::Arc;
use std::time::Duration;

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use super::{Channel, DeliveryError};
use crate::error::NotifierError;
use crate::outbox::{ChannelKind, PendingDelivery};
use crate::templates::Templates;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SmtpTls {
    /// Plain text (a local relay or a test server only).
    None,
    /// Plain connection upgraded with STARTTLS, which is required (usually port 587).
    #[default]
    StartTls,
    /// TLS from the first byte ("SMTPS", usually port 465).
    Tls,
}

impl std::str::FromStr for SmtpTls {
    type Err = NotifierError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Self::None),
            "starttls" => Ok(Self::StartTls),
            "tls" => Ok(Self::Tls),
            other => Err(NotifierError::Config(format!(
                "unknown SMTP TLS mode {other:?} (none, starttls, tls)"
            ))),
        }
    }
}

/// SMTP settings.
#[derive(Clone, PartialEq, Eq)]
pub struct SmtpConfig {
    /// Server host name (also the name checked against its TLS certificate).
    pub host: String,
    /// Server port.
    pub port: u16,
    /// Transport security.
    pub tls: SmtpTls,
    /// User name and password, when the server requires authentication.
    pub credentials: Option<(String, String)>,
    /// The `From` of every message, e.g. `Ticketing <no-reply@tickets.example>`.
    pub sender: String,
    /// Domain part of generated Message-IDs.
    pub message_id_domain: String,
    /// Longest wait for one SMTP exchange; a stalled server counts as down.
    pub timeout: Duration,
    /// Most SMTP connections kept open at once.
    pub max_connections: u32,
}

impl std::fmt::Debug for SmtpConfig {
    // Hand-written so that the password never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpConfig")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("tls", &self.tls)
            .field("user", &self.credentials.as_ref().map(|(u, _)| u))
            .field("sender", &self.sender)
            .field("message_id_domain", &self.message_id_domain)
            .field("timeout", &self.timeout)
            .field("max_connections", &self.max_connections)
            .finish()
    }
}

impl SmtpConfig {
    /// A plain-text connection to `host:port` (local relays and tests).
    pub fn plain(host: impl Into<String>, port: u16, sender: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            port,
            tls: SmtpTls::None,
            credentials: None,
            sender: sender.into(),
            message_id_domain: "ticketing.invalid".to_string(),
            timeout: Duration::from_secs(10),
            max_connections: 8,
        }
    }
}

/// Sends notifications as email.
pub struct EmailChannel {
    /// The SMTP client (with its connection pool).
    transport: AsyncSmtpTransport<Tokio1Executor>,
    /// Parsed `From` mailbox.
    from: Mailbox,
    /// Domain part of Message-IDs.
    message_id_domain: String,
    /// Subject and bodies.
    templates: Arc<Templates>,
}

impl EmailChannel {
    /// Builds the channel; fails on a sender address or TLS setting that cannot work.
    pub fn new(config: &SmtpConfig, templates: Arc<Templates>) -> Result<Self, NotifierError> {
        let from: Mailbox = config
            .sender
            .parse()
            .map_err(|e| NotifierError::Config(format!("sender {:?}: {e}", config.sender)))?;
        let tls_params = || {
            TlsParameters::new(config.host.clone())
                .map_err(|e| NotifierError::Config(format!("SMTP TLS: {e}")))
        };
        let tls = match config.tls {
            SmtpTls::None => Tls::None,
            SmtpTls::StartTls => Tls::Required(tls_params()?),
            SmtpTls::Tls => Tls::Wrapper(tls_params()?),
        };
        let mut builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&config.host)
            .port(config.port)
            .tls(tls)
            .timeout(Some(config.timeout))
            .pool_config(
                lettre::transport::smtp::PoolConfig::new()
                    .max_size(config.max_connections.max(1))
                    .idle_timeout(Duration::from_secs(30)),
            );
        if let Some((user, password)) = &config.credentials {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        Ok(Self {
            transport: builder.build(),
            from,
            message_id_domain: config.message_id_domain.clone(),
            templates,
        })
    }

    /// Builds the message for `delivery` (exposed for tests of the message shape).
    pub fn message(&self, delivery: &PendingDelivery) -> Result<Message, DeliveryError> {
        let to: Mailbox = delivery.recipient.parse().map_err(|e| {
            DeliveryError::Permanent(format!("recipient {:?}: {e}", delivery.recipient))
        })?;
        let rendered = self
            .templates
            .render(delivery.kind, &delivery.context)
            .map_err(|e| DeliveryError::Permanent(e.to_string()))?;
        Message::builder()
            .from(self.from.clone())
            .to(to)
            .subject(rendered.subject)
            // Stable across retries: a receiver that got the message twice (a crash
            // between the server's 250 and our bookkeeping) can tell it is one message.
            .message_id(Some(format!(
                "<{}@{}>",
                delivery.delivery_id(),
                self.message_id_domain
            )))
            .multipart(MultiPart::alternative_plain_html(
                rendered.text,
                rendered.html,
            ))
            .map_err(|e| DeliveryError::Permanent(format!("building message: {e}")))
    }
}

#[async_trait::async_trait]
impl Channel for EmailChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Email
    }

    async fn deliver(&self, delivery: &PendingDelivery) -> Result<(), DeliveryError> {
        let message = self.message(delivery)?;
        match self.transport.send(message).await {
            Ok(_) => Ok(()),
            Err(e) if e.is_permanent() => Err(DeliveryError::Permanent(e.to_string())),
            Err(e) => Err(DeliveryError::Transient(e.to_string())),
        }
    }
}
