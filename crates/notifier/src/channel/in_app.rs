//! In-app notifications: stored per user in the notifier's database, listed newest first,
//! marked read, and broadcast live to subscribers.

use std::sync::Arc;

use rusqlite::{OptionalExtension, params};
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use uuid::Uuid;

use super::{Channel, DeliveryError};
use crate::db::{Db, now_ms};
use crate::error::NotifierError;
use crate::outbox::{ChannelKind, NotificationKind, PendingDelivery};
use crate::templates::Templates;

/// Largest page of in-app notifications one call returns.
pub const MAX_PAGE: usize = 100;

/// One in-app notification.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InAppNotification {
    /// Its id, increasing with time: pass the last one seen as `before` to page.
    pub id: i64,
    /// Whose it is.
    pub user_id: Uuid,
    /// What it is about.
    pub kind: NotificationKind,
    /// One line.
    pub title: String,
    /// Plain text.
    pub body: String,
    /// The notification's data (event, order, tickets...).
    pub data: serde_json::Value,
    /// When it was stored (unix ms).
    pub created_at_ms: i64,
    /// When the user marked it read (unix ms).
    pub read_at_ms: Option<i64>,
}

/// Stores in-app notifications and announces each new one.
pub struct InAppChannel {
    /// Where they are stored.
    db: Db,
    /// Title and body.
    templates: Arc<Templates>,
    /// Live feed of new notifications (all users; subscribers filter their own).
    feed: broadcast::Sender<InAppNotification>,
}

impl InAppChannel {
    /// Builds the channel.
    pub fn new(
        db: Db,
        templates: Arc<Templates>,
        feed: broadcast::Sender<InAppNotification>,
    ) -> Self {
        Self {
            db,
            templates,
            feed,
        }
    }
}

/// Most in-app notifications stored in one transaction.
pub const BATCH: usize = 256;

/// One notification ready to store: its outbox row, its owner and its rendered text.
struct Ready {
    outbox_id: i64,
    user_id: Uuid,
    kind: NotificationKind,
    title: String,
    body: String,
    data: serde_json::Value,
}

impl InAppChannel {
    /// Renders `delivery` for storing, or says why it never can be.
    fn prepare(&self, delivery: &PendingDelivery) -> Result<Ready, DeliveryError> {
        let user_id = Uuid::parse_str(&delivery.recipient).map_err(|e| {
            DeliveryError::Permanent(format!("in-app recipient {:?}: {e}", delivery.recipient))
        })?;
        let rendered = self
            .templates
            .render(delivery.kind, &delivery.context)
            .map_err(|e| DeliveryError::Permanent(e.to_string()))?;
        Ok(Ready {
            outbox_id: delivery.id,
            user_id,
            kind: delivery.kind,
            title: rendered.subject,
            body: rendered.text,
            data: delivery.context.clone(),
        })
    }
}

/// Stores each notification (a retry after a crash finds its outbox row already stored
/// and adds nothing); the newly stored ones are returned for the live feed.
fn store_all(
    conn: &mut rusqlite::Connection,
    ready: Vec<Ready>,
) -> Result<Vec<InAppNotification>, NotifierError> {
    let tx = conn.transaction()?;
    let created_at_ms = now_ms();
    let mut stored = Vec::with_capacity(ready.len());
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO in_app (outbox_id, user_id, kind, title, body, data, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)
             ON CONFLICT (outbox_id) DO NOTHING RETURNING id",
        )?;
        for r in ready {
            let data_text = serde_json::to_string(&r.data)?;
            let id: Option<i64> = insert
                .query_row(
                    params![
                        r.outbox_id,
                        r.user_id.to_string(),
                        r.kind.as_str(),
                        r.title,
                        r.body,
                        data_text,
                        created_at_ms
                    ],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(id) = id {
                stored.push(InAppNotification {
                    id,
                    user_id: r.user_id,
                    kind: r.kind,
                    title: r.title,
                    body: r.body,
                    data: r.data,
                    created_at_ms,
                    read_at_ms: None,
                });
            }
        }
    }
    tx.commit()?;
    Ok(stored)
}

#[async_trait::async_trait]
impl Channel for InAppChannel {
    fn kind(&self) -> ChannelKind {
        ChannelKind::InApp
    }

    async fn deliver(&self, delivery: &PendingDelivery) -> Result<(), DeliveryError> {
        self.deliver_all(std::slice::from_ref(delivery))
            .await
            .pop()
            .unwrap_or(Ok(()))
    }

    fn batch(&self) -> usize {
        BATCH
    }

    /// Stores the whole batch in one transaction.
    async fn deliver_all(&self, deliveries: &[PendingDelivery]) -> Vec<Result<(), DeliveryError>> {
        let mut outcomes = Vec::with_capacity(deliveries.len());
        let mut ready = Vec::with_capacity(deliveries.len());
        for delivery in deliveries {
            match self.prepare(delivery) {
                Ok(r) => {
                    ready.push(r);
                    outcomes.push(Ok(()));
                }
                Err(e) => outcomes.push(Err(e)),
            }
        }
        if ready.is_empty() {
            return outcomes;
        }
        match self.db.call(move |conn| store_all(conn, ready)).await {
            Ok(stored) => {
                for n in stored {
                    // No subscriber is not an error: the notification is stored either way.
                    let _ = self.feed.send(n);
                }
            }
            Err(e) => {
                let error = DeliveryError::Transient(e.to_string());
                for outcome in outcomes.iter_mut().filter(|o| o.is_ok()) {
                    *outcome = Err(error.clone());
                }
            }
        }
        outcomes
    }
}

/// The newest notifications of `user_id`, newest first, with id below `before` when
/// given, at most `limit` (1..=[`MAX_PAGE`]).
pub fn list(
    conn: &rusqlite::Connection,
    user_id: Uuid,
    before: Option<i64>,
    limit: usize,
) -> Result<Vec<InAppNotification>, NotifierError> {
    if limit == 0 || limit > MAX_PAGE {
        return Err(NotifierError::InvalidInput(format!(
            "page size must be 1..={MAX_PAGE}, not {limit}"
        )));
    }
    let mut stmt = conn.prepare_cached(
        "SELECT id, kind, title, body, data, created_at, read_at FROM in_app
         WHERE user_id = ?1 AND id < ?2 ORDER BY id DESC LIMIT ?3",
    )?;
    let rows = stmt.query_map(
        params![
            user_id.to_string(),
            before.unwrap_or(i64::MAX),
            limit as i64
        ],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<i64>>(6)?,
            ))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (id, kind, title, body, data, created_at_ms, read_at_ms) = row?;
        out.push(InAppNotification {
            id,
            user_id,
            kind: kind.parse()?,
            title,
            body,
            data: serde_json::from_str(&data)?,
            created_at_ms,
            read_at_ms,
        });
    }
    Ok(out)
}

/// Marks notification `id` of `user_id` read (idempotent); `NotFound` when it is not
/// that user's.
pub fn mark_read(conn: &rusqlite::Connection, user_id: Uuid, id: i64) -> Result<(), NotifierError> {
    let n = conn.execute(
        "UPDATE in_app SET read_at = COALESCE(read_at, ?3) WHERE id = ?1 AND user_id = ?2",
        params![id, user_id.to_string(), now_ms()],
    )?;
    if n == 0 {
        return Err(NotifierError::NotFound(format!("notification {id}")));
    }
    Ok(())
}

/// How many unread notifications `user_id` has.
pub fn unread_count(conn: &rusqlite::Connection, user_id: Uuid) -> Result<u64, NotifierError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM in_app WHERE user_id = ?1 AND read_at IS NULL",
        [user_id.to_string()],
        |r| r.get(0),
    )?;
    Ok(n.max(0) as u64)
}
