//! Signed webhooks: an HTTP POST of a JSON document to a URL an organizer registered for
//! one of their events, signed with the registration's secret (see `signature`).

use std::time::Duration;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::{Channel, DeliveryError};
use crate::db::{Db, now_ms};
use crate::error::NotifierError;
use crate::outbox::{ChannelKind, PendingDelivery};

/// Header carrying the delivery's stable id (also the body's `id`), for de-duplication.
pub const DELIVERY_HEADER: &str = "Ticketing-Delivery";

/// Longest URL accepted at registration.
pub const MAX_URL_LEN: usize = 2048;

/// Most registrations per ticketed event: each sale fans out to every one of them.
pub const MAX_WEBHOOKS_PER_EVENT: usize = 16;

/// A URL registered to receive an event's notifications.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WebhookRegistration {
    /// Registration id: the outbox recipient of webhook deliveries.
    pub id: Uuid,
    /// The ticketed event whose notifications it receives.
    pub inventory_id: Uuid,
    /// Where deliveries are POSTed.
    pub url: String,
    /// The HMAC secret deliveries are signed with; shown to the organizer once.
    pub secret: String,
    /// When it was registered (unix ms).
    pub created_at_ms: i64,
}

impl std::fmt::Debug for WebhookRegistration {
    // Keeps the secret out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookRegistration")
            .field("id", &self.id)
            .field("inventory_id", &self.inventory_id)
            .field("url", &self.url)
            .field("created_at_ms", &self.created_at_ms)
            .finish_non_exhaustive()
    }
}

/// The JSON body of every webhook delivery.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WebhookBody {
    /// Stable delivery id: the same on every retry of this delivery.
    pub id: String,
    /// The notification kind, e.g. `order_confirmed`.
    #[serde(rename = "type")]
    pub kind: String,
    /// The domain event it comes from.
    pub event_id: Uuid,
    /// The notification's data.
    pub data: serde_json::Value,
}

/// Checks a webhook URL: absolute `http` or `https` with a host, at most [`MAX_URL_LEN`].
pub fn validate_url(url: &str) -> Result<reqwest::Url, NotifierError> {
    if url.len() > MAX_URL_LEN {
        return Err(NotifierError::InvalidInput(format!(
            "webhook URL longer than {MAX_URL_LEN} characters"
        )));
    }
    let parsed = reqwest::Url::parse(url)
        .map_err(|e| NotifierError::InvalidInput(format!("webhook URL {url:?}: {e}")))?;
    if !matches!(parsed.scheme(), "http" | "https") {
        return Err(NotifierError::InvalidInput(format!(
            "webhook URL must be http or https, not {:?}",
            parsed.scheme()
        )));
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(NotifierError::InvalidInput(
            "webhook URL has no host".into(),
        ));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(NotifierError::InvalidInput(
            "webhook URL must not carry credentials".into(),
        ));
    }
    Ok(parsed)
}

fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    format!("whsec_{}", hex::encode(bytes))
}

/// Registers `url` for the notifications of `inventory_id`, with a fresh secret.
pub fn register(
    conn: &rusqlite::Connection,
    inventory_id: Uuid,
    url: &str,
) -> Result<WebhookRegistration, NotifierError> {
    let url = validate_url(url)?.to_string();
    let existing: i64 = conn.query_row(
        "SELECT COUNT(*) FROM webhooks WHERE inventory_id = ?1",
        [inventory_id.to_string()],
        |r| r.get(0),
    )?;
    if existing as usize >= MAX_WEBHOOKS_PER_EVENT {
        return Err(NotifierError::InvalidInput(format!(
            "an event has at most {MAX_WEBHOOKS_PER_EVENT} webhooks"
        )));
    }
    let reg = WebhookRegistration {
        id: Uuid::now_v7(),
        inventory_id,
        url,
        secret: new_secret(),
        created_at_ms: now_ms(),
    };
    conn.execute(
        "INSERT INTO webhooks (id, inventory_id, url, secret, created_at) VALUES (?1, ?2, ?3, ?4, ?5)",
        params![
            reg.id.to_string(),
            reg.inventory_id.to_string(),
            reg.url,
            reg.secret,
            reg.created_at_ms
        ],
    )?;
    Ok(reg)
}

/// The registrations of `inventory_id`, oldest first.
pub fn list(
    conn: &rusqlite::Connection,
    inventory_id: Uuid,
) -> Result<Vec<WebhookRegistration>, NotifierError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, url, secret, created_at FROM webhooks WHERE inventory_id = ?1
         ORDER BY created_at, id",
    )?;
    let rows = stmt.query_map([inventory_id.to_string()], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
            r.get::<_, i64>(3)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (id, url, secret, created_at_ms) = row?;
        out.push(WebhookRegistration {
            id: crate::outbox::parse_uuid(&id)?,
            inventory_id,
            url,
            secret,
            created_at_ms,
        });
    }
    Ok(out)
}

/// Removes a registration; `NotFound` when it does not exist.
pub fn remove(conn: &rusqlite::Connection, id: Uuid) -> Result<(), NotifierError> {
    let n = conn.execute("DELETE FROM webhooks WHERE id = ?1", [id.to_string()])?;
    if n == 0 {
        return Err(NotifierError::NotFound(format!("webhook {id}")));
    }
    Ok(())
}

fn lookup(
    conn: &rusqlite::Connection,
    id: &str,
) -> Result<Option<(String, String)>, NotifierError> {
    Ok(conn
        .query_row(
            "SELECT url, secret FROM webhooks WHERE id = ?1",
            [id],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?)
}

/// Delivers notifications to registered webhooks.
pub struct WebhookChannel {
    /// The HTTP client (connection pool, timeouts).
    client: reqwest::Client,
    /// Where registrations are looked up at delivery time, so a removed webhook is not
    /// called again.
    db: Db,
}

impl WebhookChannel {
    /// Builds the channel; each request gives up after `timeout`.
    pub fn new(db: Db, timeout: Duration) -> Result<Self, NotifierError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            // A receiver's redirect could point anywhere; deliveries go only where the
            // organizer registered.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent("ticketing-notifier")
            .build()
            .map_err(|e| NotifierError::Config(format!("HTTP client: {e}")))?;
        Ok(Self { client, db })
    }
}

#[async_trait::async_trait]
impl Channel for WebhookChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::Webhook
    }

    async fn deliver(&self, delivery: &PendingDelivery) -> Result<(), DeliveryError> {
        let id = delivery.recipient.clone();
        let found = self
            .db
            .call(move |conn| lookup(conn, &id))
            .await
            .map_err(|e| DeliveryError::Transient(e.to_string()))?;
        let Some((url, secret)) = found else {
            return Err(DeliveryError::Permanent(format!(
                "webhook {} was removed",
                delivery.recipient
            )));
        };
        let body = WebhookBody {
            id: delivery.delivery_id(),
            kind: delivery.kind.as_str().to_string(),
            event_id: delivery.event_id,
            data: delivery.context.clone(),
        };
        let body = serde_json::to_vec(&body)
            .map_err(|e| DeliveryError::Permanent(format!("encoding body: {e}")))?;
        let timestamp = chrono::Utc::now().timestamp();
        let signature = signature::sign(secret.as_bytes(), timestamp, &body);
        let response = self
            .client
            .post(&url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header(signature::SIGNATURE_HEADER, signature)
            .header(DELIVERY_HEADER, delivery.delivery_id())
            .body(body)
            .send()
            .await
            .map_err(|e| DeliveryError::Transient(format!("POST {url}: {e}")))?;
        let status = response.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error()
            || status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::REQUEST_TIMEOUT
        {
            Err(DeliveryError::Transient(format!(
                "POST {url}: HTTP {status}"
            )))
        } else {
            Err(DeliveryError::Permanent(format!(
                "POST {url}: HTTP {status}"
            )))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_validated() {
        assert!(validate_url("https://example.com/hook").is_ok());
        assert!(validate_url("http://127.0.0.1:8080/x?y=1").is_ok());
        for bad in [
            "",
            "not a url",
            "ftp://example.com/x",
            "file:///etc/passwd",
            "https://user:pw@example.com/",
            "javascript:alert(1)",
        ] {
            let err = validate_url(bad).expect_err(bad);
            assert_eq!(err.code(), "INVALID_INPUT", "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(MAX_URL_LEN));
        assert_eq!(validate_url(&long).unwrap_err().code(), "INVALID_INPUT");
    }

    #[test]
    fn register_list_remove() {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("n.db")).expect("open");
        let inv = Uuid::now_v7();
        db.call_blocking(|conn| {
            let a = register(conn, inv, "https://a.example/hook")?;
            let b = register(conn, inv, "https://b.example/hook")?;
            assert_ne!(a.secret, b.secret);
            assert!(a.secret.starts_with("whsec_"));
            assert!(!format!("{a:?}").contains(&a.secret));
            let listed = list(conn, inv)?;
            assert_eq!(listed, vec![a.clone(), b.clone()]);
            assert!(list(conn, Uuid::now_v7())?.is_empty());
            remove(conn, a.id)?;
            assert_eq!(remove(conn, a.id).unwrap_err().code(), "NOT_FOUND");
            assert_eq!(list(conn, inv)?, vec![b]);
            for i in 0..MAX_WEBHOOKS_PER_EVENT - 1 {
                register(conn, inv, &format!("https://c.example/{i}"))?;
            }
            let err = register(conn, inv, "https://d.example/").unwrap_err();
            assert_eq!(err.code(), "INVALID_INPUT");
            Ok(())
        })
        .expect("db");
    }
}
