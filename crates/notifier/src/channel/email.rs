//! Email over SMTP (lettre), with text and HTML bodies rendered from templates.

use std::sync::Arc;
use std::time::Duration;

use lettre::Message;
use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::{Credentials, DEFAULT_MECHANISMS};
use lettre::transport::smtp::client::{AsyncSmtpConnection, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use parking_lot::Mutex;
use tokio::sync::Semaphore;

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
    /// Open SMTP sessions, reused across messages.
    pool: SmtpPool,
    /// Parsed `From` mailbox.
    from: Mailbox,
    /// Domain part of Message-IDs.
    message_id_domain: String,
    /// Subject and bodies.
    templates: Arc<Templates>,
}

/// A small pool of SMTP sessions.
///
/// lettre's own transport leaves Nagle's algorithm on, and lettre writes a message's
/// terminating `.` separately from its body: each message then waits for the server's
/// delayed ACK (40 ms on Linux), capping a session at about 22 messages a second. This
/// pool opens the TCP connections itself with `TCP_NODELAY` and hands them to lettre's
/// SMTP client (STARTTLS, AUTH and the protocol stay lettre's).
struct SmtpPool {
    /// Server host.
    host: String,
    /// Server port.
    port: u16,
    /// Transport security, and the TLS parameters it needs.
    tls: SmtpTls,
    tls_parameters: Option<TlsParameters>,
    /// AUTH credentials, when configured.
    credentials: Option<Credentials>,
    /// Name sent in EHLO.
    hello: ClientId,
    /// Bound on connecting and on one message exchange.
    timeout: Duration,
    /// Sessions idle between messages.
    idle: Mutex<Vec<AsyncSmtpConnection>>,
    /// Bounds the number of sessions open at once.
    permits: Semaphore,
}

fn transient(e: impl std::fmt::Display) -> DeliveryError {
    DeliveryError::Transient(e.to_string())
}

fn classify(e: lettre::transport::smtp::Error) -> DeliveryError {
    if e.is_permanent() {
        DeliveryError::Permanent(e.to_string())
    } else {
        DeliveryError::Transient(e.to_string())
    }
}

impl SmtpPool {
    async fn connect(&self) -> Result<AsyncSmtpConnection, DeliveryError> {
        let mut conn = match self.tls {
            SmtpTls::Tls => AsyncSmtpConnection::connect_tokio1(
                (self.host.as_str(), self.port),
                Some(self.timeout),
                &self.hello,
                self.tls_parameters.clone(),
                None,
            )
            .await
            .map_err(classify)?,
            SmtpTls::None | SmtpTls::StartTls => {
                let tcp = tokio::time::timeout(
                    self.timeout,
                    tokio::net::TcpStream::connect((self.host.as_str(), self.port)),
                )
                .await
                .map_err(|_| transient("SMTP connect timed out"))?
                .map_err(|e| transient(format!("SMTP connect: {e}")))?;
                tcp.set_nodelay(true)
                    .map_err(|e| transient(format!("TCP_NODELAY: {e}")))?;
                let mut conn = tokio::time::timeout(
                    self.timeout,
                    AsyncSmtpConnection::connect_with_transport(Box::new(tcp), &self.hello),
                )
                .await
                .map_err(|_| transient("SMTP greeting timed out"))?
                .map_err(classify)?;
                if let (SmtpTls::StartTls, Some(params)) = (self.tls, &self.tls_parameters) {
                    conn.starttls(params.clone(), &self.hello)
                        .await
                        .map_err(|e| transient(format!("STARTTLS: {e}")))?;
                }
                conn
            }
        };
        if let Some(credentials) = &self.credentials {
            conn.auth(DEFAULT_MECHANISMS, credentials)
                .await
                .map_err(classify)?;
        }
        Ok(conn)
    }

    async fn send(&self, message: &Message) -> Result<(), DeliveryError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| transient("SMTP pool closed"))?;
        let envelope = message.envelope();
        let bytes = message.formatted();
        let reused = self.idle.lock().pop();
        let was_reused = reused.is_some();
        let mut conn = match reused {
            Some(conn) => conn,
            None => self.connect().await?,
        };
        let mut result = tokio::time::timeout(self.timeout, conn.send(envelope, &bytes)).await;
        if was_reused && matches!(&result, Ok(Err(e)) if !e.is_permanent()) {
            // The server may have closed an idle session (a restart, an idle timeout):
            // try once more on a fresh one before counting a failed try.
            conn = self.connect().await?;
            result = tokio::time::timeout(self.timeout, conn.send(envelope, &bytes)).await;
        }
        match result {
            Ok(Ok(_)) => {
                if !conn.has_broken() {
                    self.idle.lock().push(conn);
                }
                Ok(())
            }
            // lettre ends the session after an error; the connection is dropped.
            Ok(Err(e)) => Err(classify(e)),
            Err(_) => Err(transient("SMTP exchange timed out")),
        }
    }
}

impl EmailChannel {
    /// Builds the channel; fails on a sender address or TLS setting that cannot work.
    pub fn new(config: &SmtpConfig, templates: Arc<Templates>) -> Result<Self, NotifierError> {
        let from: Mailbox = config
            .sender
            .parse()
            .map_err(|e| NotifierError::Config(format!("sender {:?}: {e}", config.sender)))?;
        let tls_parameters = match config.tls {
            SmtpTls::None => None,
            SmtpTls::StartTls | SmtpTls::Tls => Some(
                TlsParameters::new(config.host.clone())
                    .map_err(|e| NotifierError::Config(format!("SMTP TLS: {e}")))?,
            ),
        };
        let pool = SmtpPool {
            host: config.host.clone(),
            port: config.port,
            tls: config.tls,
            tls_parameters,
            credentials: config
                .credentials
                .as_ref()
                .map(|(user, password)| Credentials::new(user.clone(), password.clone())),
            hello: ClientId::default(),
            timeout: config.timeout,
            idle: Mutex::new(Vec::new()),
            permits: Semaphore::new(config.max_connections.max(1) as usize),
        };
        Ok(Self {
            pool,
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
        self.pool.send(&message).await
    }
}
