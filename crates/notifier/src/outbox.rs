//! The durable outbox: planned notifications, their delivery state, and dead letters.
//!
//! A notification is identified by its de-duplication key (domain event id, kind, channel,
//! recipient); the table has a unique index on it and planning uses `INSERT OR IGNORE`, so
//! planning the same event twice (after a crash, say) cannot create a second delivery.
//! Rows move `pending -> delivered`, `pending -> dead` (after the last allowed try, or a
//! permanent refusal) or `pending -> cancelled` (a reminder whose event was cancelled);
//! an admin can move `dead -> pending` again.

use std::fmt;
use std::str::FromStr;

use rusqlite::{Connection, OptionalExtension, params};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::NotifierError;

/// A delivery channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ChannelKind {
    /// Email over SMTP.
    Email,
    /// A signed HTTP POST to a URL an organizer registered.
    Webhook,
    /// Stored for the user to list in the app.
    InApp,
}

impl ChannelKind {
    /// Every channel.
    pub const ALL: [ChannelKind; 3] =
        [ChannelKind::Email, ChannelKind::Webhook, ChannelKind::InApp];

    /// Stable name, used in the database and as the `channel` metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ChannelKind::Email => "email",
            ChannelKind::Webhook => "webhook",
            ChannelKind::InApp => "in_app",
        }
    }
}

impl fmt::Display for ChannelKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ChannelKind {
    type Err = NotifierError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ChannelKind::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| NotifierError::InvalidInput(format!("unknown channel {s:?}")))
    }
}

/// What a notification is about; also the name of its templates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// An order was paid and its tickets issued.
    OrderConfirmed,
    /// An order was cancelled (before payment, or without refund).
    OrderCancelled,
    /// A paid order was cancelled and refunded.
    OrderRefunded,
    /// A hold ran out before payment; its tickets went back on sale.
    HoldExpired,
    /// The event's details (time, venue...) changed.
    EventChanged,
    /// The event was cancelled; orders are refunded.
    EventCancelled,
    /// The event starts soon.
    EventReminder,
}

impl NotificationKind {
    /// Every kind.
    pub const ALL: [NotificationKind; 7] = [
        NotificationKind::OrderConfirmed,
        NotificationKind::OrderCancelled,
        NotificationKind::OrderRefunded,
        NotificationKind::HoldExpired,
        NotificationKind::EventChanged,
        NotificationKind::EventCancelled,
        NotificationKind::EventReminder,
    ];

    /// Stable name: the database value, the webhook `type` and the template name.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::OrderConfirmed => "order_confirmed",
            NotificationKind::OrderCancelled => "order_cancelled",
            NotificationKind::OrderRefunded => "order_refunded",
            NotificationKind::HoldExpired => "hold_expired",
            NotificationKind::EventChanged => "event_changed",
            NotificationKind::EventCancelled => "event_cancelled",
            NotificationKind::EventReminder => "event_reminder",
        }
    }
}

impl fmt::Display for NotificationKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for NotificationKind {
    type Err = NotifierError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        NotificationKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| NotifierError::InvalidInput(format!("unknown notification kind {s:?}")))
    }
}

/// A notification the planner decided to send; the outbox stores it once per key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlannedNotification {
    /// The domain event it comes from (part of the de-duplication key).
    pub event_id: Uuid,
    /// What it is about.
    pub kind: NotificationKind,
    /// How it is delivered.
    pub channel: ChannelKind,
    /// Email address, webhook registration id, or user id, depending on the channel.
    pub recipient: String,
    /// What the templates (or the webhook body) are rendered from.
    pub context: serde_json::Value,
    /// Not before this time (unix ms): now for most, the reminder time for reminders.
    pub due_at_ms: i64,
    /// The ticketed event it concerns, so reminders can be cancelled or moved with it.
    pub inventory_id: Option<Uuid>,
    /// The order it concerns, so reminders can be cancelled with the order.
    pub order_id: Option<Uuid>,
}

/// A notification due for delivery, as a channel worker sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingDelivery {
    /// Row id in the outbox.
    pub id: i64,
    /// The domain event it comes from.
    pub event_id: Uuid,
    /// What it is about.
    pub kind: NotificationKind,
    /// How it is delivered.
    pub channel: ChannelKind,
    /// Email address, webhook registration id, or user id.
    pub recipient: String,
    /// What to render.
    pub context: serde_json::Value,
    /// Tries already made.
    pub attempts: u32,
}

impl PendingDelivery {
    /// The stable identity of this delivery, derived from its de-duplication key: the
    /// email Message-ID's local part and the webhook `id`, so receivers can drop the rare
    /// duplicate that at-least-once delivery allows.
    pub fn delivery_id(&self) -> String {
        delivery_id(self.event_id, self.kind, self.channel, &self.recipient)
    }
}

/// The stable identity of the delivery with this de-duplication key (32 hex characters).
pub fn delivery_id(
    event_id: Uuid,
    kind: NotificationKind,
    channel: ChannelKind,
    recipient: &str,
) -> String {
    let mut h = Sha256::new();
    h.update(event_id.as_bytes());
    for part in [kind.as_str(), channel.as_str(), recipient] {
        h.update([0u8]);
        h.update(part.as_bytes());
    }
    hex::encode(&h.finalize()[..16])
}

/// Delivery state of an outbox row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeliveryStatus {
    /// Waiting for its due time or a retry.
    Pending,
    /// Accepted by the channel.
    Delivered,
    /// Given up on: listed for admins, who may retry it.
    Dead,
    /// Withdrawn before delivery (a reminder for a cancelled event or order).
    Cancelled,
}

impl DeliveryStatus {
    /// Stable name used in the database.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Dead => "dead",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }
}

/// A notification that was given up on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// Outbox row id: pass it to retry.
    pub id: i64,
    /// The domain event it comes from.
    pub event_id: Uuid,
    /// What it is about.
    pub kind: NotificationKind,
    /// How it was to be delivered.
    pub channel: ChannelKind,
    /// Email address, webhook registration id, or user id.
    pub recipient: String,
    /// Tries made.
    pub attempts: u32,
    /// Why the last try failed.
    pub last_error: Option<String>,
    /// When it was planned (unix ms).
    pub created_at_ms: i64,
}

/// Inserts planned notifications, ignoring any whose key is already in the outbox.
/// Returns how many were new.
pub fn insert_planned(
    conn: &Connection,
    planned: &[PlannedNotification],
    now_ms: i64,
) -> Result<usize, NotifierError> {
    let mut stmt = conn.prepare_cached(
        "INSERT OR IGNORE INTO outbox
             (event_id, kind, channel, recipient, context, status, attempts, due_at,
              created_at, inventory_id, order_id)
         VALUES (?1, ?2, ?3, ?4, ?5, 'pending', 0, ?6, ?7, ?8, ?9)",
    )?;
    let mut inserted = 0;
    for p in planned {
        inserted += stmt.execute(params![
            p.event_id.to_string(),
            p.kind.as_str(),
            p.channel.as_str(),
            p.recipient,
            serde_json::to_string(&p.context)?,
            p.due_at_ms,
            now_ms,
            p.inventory_id.map(|u| u.to_string()),
            p.order_id.map(|u| u.to_string()),
        ])?;
    }
    Ok(inserted)
}

/// The position of the last stored event the planner has fully handled.
pub fn checkpoint(conn: &Connection) -> Result<u64, NotifierError> {
    let pos: Option<i64> = conn
        .query_row("SELECT position FROM checkpoint WHERE id = 1", [], |r| {
            r.get(0)
        })
        .optional()?;
    Ok(pos.map_or(0, |p| p as u64))
}

/// Records the planner's checkpoint (call inside the transaction that stored the plan).
pub fn set_checkpoint(conn: &Connection, position: u64) -> Result<(), NotifierError> {
    let position = i64::try_from(position)
        .map_err(|_| NotifierError::InvalidInput(format!("position {position} out of range")))?;
    conn.execute(
        "INSERT INTO checkpoint (id, position) VALUES (1, ?1)
         ON CONFLICT (id) DO UPDATE SET position = excluded.position",
        [position],
    )?;
    Ok(())
}

/// Up to `limit` pending notifications of `channel` due at `now_ms`, oldest first,
/// skipping the row ids in `exclude` (those already being delivered).
pub fn due(
    conn: &Connection,
    channel: ChannelKind,
    now_ms: i64,
    limit: usize,
    exclude: &std::collections::HashSet<i64>,
) -> Result<Vec<PendingDelivery>, NotifierError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, event_id, kind, recipient, context, attempts FROM outbox
         WHERE channel = ?1 AND status = 'pending' AND due_at <= ?2
         ORDER BY due_at, id LIMIT ?3",
    )?;
    let fetch = limit.saturating_add(exclude.len());
    let rows = stmt.query_map(
        params![
            channel.as_str(),
            now_ms,
            i64::try_from(fetch).unwrap_or(i64::MAX)
        ],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
            ))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (id, event_id, kind, recipient, context, attempts) = row?;
        if exclude.contains(&id) {
            continue;
        }
        out.push(PendingDelivery {
            id,
            event_id: parse_uuid(&event_id)?,
            kind: kind.parse()?,
            channel,
            recipient,
            context: serde_json::from_str(&context)?,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
        });
        if out.len() == limit {
            break;
        }
    }
    Ok(out)
}

/// When the next pending notification of `channel` is due (unix ms), if any.
pub fn next_due(conn: &Connection, channel: ChannelKind) -> Result<Option<i64>, NotifierError> {
    Ok(conn.query_row(
        "SELECT MIN(due_at) FROM outbox WHERE channel = ?1 AND status = 'pending'",
        [channel.as_str()],
        |r| r.get(0),
    )?)
}

/// When the earliest pending notification of `channel` due strictly after `now_ms` is due.
pub fn next_due_after(
    conn: &Connection,
    channel: ChannelKind,
    now_ms: i64,
) -> Result<Option<i64>, NotifierError> {
    Ok(conn.query_row(
        "SELECT MIN(due_at) FROM outbox WHERE channel = ?1 AND status = 'pending' AND due_at > ?2",
        params![channel.as_str(), now_ms],
        |r| r.get(0),
    )?)
}

/// Records that the channel accepted the notification.
pub fn mark_delivered(conn: &Connection, id: i64, now_ms: i64) -> Result<(), NotifierError> {
    conn.prepare_cached(
        "UPDATE outbox SET status = 'delivered', attempts = attempts + 1, delivered_at = ?2,
                last_error = NULL
         WHERE id = ?1 AND status = 'pending'",
    )?
    .execute(params![id, now_ms])?;
    Ok(())
}

/// What became of one delivery attempt, as [`record_outcomes`] stores it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted by the receiving side.
    Delivered,
    /// Failed; tried again at this instant (unix ms), or dead-lettered when `None`.
    Failed {
        /// Why, as the dead-letter list shows it.
        error: String,
        /// When to try again.
        retry_at_ms: Option<i64>,
    },
}

/// Records the outcomes of several attempts in one transaction.
pub fn record_outcomes(
    conn: &mut Connection,
    outcomes: &[(i64, Outcome)],
    now_ms: i64,
) -> Result<(), NotifierError> {
    let tx = conn.transaction()?;
    for (id, outcome) in outcomes {
        match outcome {
            Outcome::Delivered => mark_delivered(&tx, *id, now_ms)?,
            Outcome::Failed { error, retry_at_ms } => mark_failed(&tx, *id, error, *retry_at_ms)?,
        }
    }
    tx.commit()?;
    Ok(())
}

/// Records a failed try: retried at `retry_at_ms`, or dead-lettered when `None`.
pub fn mark_failed(
    conn: &Connection,
    id: i64,
    error: &str,
    retry_at_ms: Option<i64>,
) -> Result<(), NotifierError> {
    match retry_at_ms {
        Some(at) => conn
            .prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, due_at = ?3
                 WHERE id = ?1 AND status = 'pending'",
            )?
            .execute(params![id, error, at])?,
        None => conn
            .prepare_cached(
                "UPDATE outbox SET attempts = attempts + 1, last_error = ?2, status = 'dead'
                 WHERE id = ?1 AND status = 'pending'",
            )?
            .execute(params![id, error])?,
    };
    Ok(())
}

/// Dead letters with id greater than `after`, oldest first, at most `limit`.
pub fn dead_letters(
    conn: &Connection,
    after: i64,
    limit: usize,
) -> Result<Vec<DeadLetter>, NotifierError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, event_id, kind, channel, recipient, attempts, last_error, created_at
         FROM outbox WHERE status = 'dead' AND id > ?1 ORDER BY id LIMIT ?2",
    )?;
    let rows = stmt.query_map(
        params![after, i64::try_from(limit).unwrap_or(i64::MAX)],
        |r| {
            Ok((
                r.get::<_, i64>(0)?,
                r.get::<_, String>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, String>(3)?,
                r.get::<_, String>(4)?,
                r.get::<_, i64>(5)?,
                r.get::<_, Option<String>>(6)?,
                r.get::<_, i64>(7)?,
            ))
        },
    )?;
    let mut out = Vec::new();
    for row in rows {
        let (id, event_id, kind, channel, recipient, attempts, last_error, created_at) = row?;
        out.push(DeadLetter {
            id,
            event_id: parse_uuid(&event_id)?,
            kind: kind.parse()?,
            channel: channel.parse()?,
            recipient,
            attempts: u32::try_from(attempts).unwrap_or(u32::MAX),
            last_error,
            created_at_ms: created_at,
        });
    }
    Ok(out)
}

/// Puts a dead letter back in the queue with a fresh budget of tries. Returns the
/// channel to wake, or `NotFound` when `id` is not a dead letter.
pub fn retry_dead(conn: &Connection, id: i64, now_ms: i64) -> Result<ChannelKind, NotifierError> {
    let channel: Option<String> = conn
        .query_row(
            "UPDATE outbox SET status = 'pending', attempts = 0, due_at = ?2
             WHERE id = ?1 AND status = 'dead' RETURNING channel",
            params![id, now_ms],
            |r| r.get(0),
        )
        .optional()?;
    channel
        .ok_or_else(|| NotifierError::NotFound(format!("dead letter {id}")))?
        .parse()
}

/// Withdraws the pending reminders of a ticketed event. Returns how many.
pub fn cancel_event_reminders(
    conn: &Connection,
    inventory_id: Uuid,
) -> Result<usize, NotifierError> {
    Ok(conn.execute(
        "UPDATE outbox SET status = 'cancelled'
         WHERE inventory_id = ?1 AND kind = 'event_reminder' AND status = 'pending'",
        [inventory_id.to_string()],
    )?)
}

/// Withdraws the pending reminders of an order. Returns how many.
pub fn cancel_order_reminders(conn: &Connection, order_id: Uuid) -> Result<usize, NotifierError> {
    Ok(conn.execute(
        "UPDATE outbox SET status = 'cancelled'
         WHERE order_id = ?1 AND kind = 'event_reminder' AND status = 'pending'",
        [order_id.to_string()],
    )?)
}

/// Moves the pending reminders of a ticketed event to a new due time.
pub fn reschedule_event_reminders(
    conn: &Connection,
    inventory_id: Uuid,
    due_at_ms: i64,
) -> Result<usize, NotifierError> {
    Ok(conn.execute(
        "UPDATE outbox SET due_at = ?2
         WHERE inventory_id = ?1 AND kind = 'event_reminder' AND status = 'pending'",
        params![inventory_id.to_string(), due_at_ms],
    )?)
}

/// Number of outbox rows per (channel, status), for tests, benchmarks and metrics.
pub fn counts(
    conn: &Connection,
) -> Result<std::collections::BTreeMap<(ChannelKind, String), u64>, NotifierError> {
    let mut stmt =
        conn.prepare("SELECT channel, status, COUNT(*) FROM outbox GROUP BY channel, status")?;
    let rows = stmt.query_map([], |r| {
        Ok((
            r.get::<_, String>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, i64>(2)?,
        ))
    })?;
    let mut out = std::collections::BTreeMap::new();
    for row in rows {
        let (channel, status, n) = row?;
        out.insert((channel.parse()?, status), n.max(0) as u64);
    }
    Ok(out)
}

pub(crate) fn parse_uuid(s: &str) -> Result<Uuid, NotifierError> {
    Uuid::parse_str(s).map_err(|e| NotifierError::Database(format!("stored uuid {s:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::db::Db;
    use proptest::prelude::*;
    use std::collections::HashSet;

    fn db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = Db::open(&dir.path().join("n.db")).expect("open");
        (dir, db)
    }

    fn planned(event: u8, channel: ChannelKind, recipient: &str) -> PlannedNotification {
        PlannedNotification {
            event_id: Uuid::from_u128(u128::from(event) + 1),
            kind: NotificationKind::OrderConfirmed,
            channel,
            recipient: recipient.to_string(),
            context: serde_json::json!({"n": event}),
            due_at_ms: 0,
            inventory_id: None,
            order_id: None,
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]
        /// However often and in whatever batches the same notifications are planned,
        /// each key is stored once.
        #[test]
        fn planning_is_idempotent(
            batches in proptest::collection::vec(
                proptest::collection::vec((0u8..6, 0usize..3, 0u8..3), 0..12), 1..8)
        ) {
            let (_dir, db) = db();
            let mut seen = HashSet::new();
            db.call_blocking(|conn| {
                for batch in &batches {
                    let plan: Vec<_> = batch
                        .iter()
                        .map(|&(e, c, r)| planned(e, ChannelKind::ALL[c], &format!("r{r}")))
                        .collect();
                    let mut fresh = 0;
                    for p in &plan {
                        if seen.insert((p.event_id, p.channel, p.recipient.clone())) {
                            fresh += 1;
                        }
                    }
                    let tx = conn.transaction()?;
                    let inserted = insert_planned(&tx, &plan, 1)?;
                    tx.commit()?;
                    assert_eq!(inserted, fresh);
                }
                let total: i64 = conn.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0))?;
                assert_eq!(total as usize, seen.len());
                Ok(())
            }).expect("db");
        }
    }

    #[test]
    fn delivery_lifecycle() {
        let (_dir, db) = db();
        db.call_blocking(|conn| {
            let plan = vec![
                planned(1, ChannelKind::Email, "a@x.test"),
                planned(2, ChannelKind::Email, "b@x.test"),
                planned(3, ChannelKind::Webhook, "hook"),
            ];
            insert_planned(conn, &plan, 1)?;
            let none = HashSet::new();
            let due_now = due(conn, ChannelKind::Email, 10, 10, &none)?;
            assert_eq!(due_now.len(), 2);
            assert_eq!(due_now[0].delivery_id(), due_now[0].clone().delivery_id());
            assert_ne!(due_now[0].delivery_id(), due_now[1].delivery_id());
            // Rows in flight are skipped, and the limit still applies to the others.
            let skip: HashSet<i64> = [due_now[0].id].into();
            let rest = due(conn, ChannelKind::Email, 10, 1, &skip)?;
            assert_eq!(rest.len(), 1);
            assert_eq!(rest[0].id, due_now[1].id);

            mark_delivered(conn, due_now[0].id, 11)?;
            mark_failed(conn, due_now[1].id, "down", Some(500))?;
            assert!(due(conn, ChannelKind::Email, 100, 10, &none)?.is_empty());
            assert_eq!(next_due(conn, ChannelKind::Email)?, Some(500));
            assert_eq!(next_due_after(conn, ChannelKind::Email, 500)?, None);
            let retry = due(conn, ChannelKind::Email, 500, 10, &none)?;
            assert_eq!(retry.len(), 1);
            assert_eq!(retry[0].attempts, 1);

            mark_failed(conn, retry[0].id, "refused", None)?;
            let dead = dead_letters(conn, 0, 10)?;
            assert_eq!(dead.len(), 1);
            assert_eq!(dead[0].attempts, 2);
            assert_eq!(dead[0].last_error.as_deref(), Some("refused"));
            // A delivered row cannot be marked failed, nor revived.
            mark_failed(conn, due_now[0].id, "late", None)?;
            assert_eq!(dead_letters(conn, 0, 10)?.len(), 1);
            assert_eq!(
                retry_dead(conn, due_now[0].id, 600).unwrap_err().code(),
                "NOT_FOUND"
            );

            assert_eq!(retry_dead(conn, dead[0].id, 600)?, ChannelKind::Email);
            assert!(dead_letters(conn, 0, 10)?.is_empty());
            let again = due(conn, ChannelKind::Email, 600, 10, &none)?;
            assert_eq!(again.len(), 1);
            assert_eq!(again[0].attempts, 0);
            let counts = counts(conn)?;
            assert_eq!(counts[&(ChannelKind::Email, "delivered".to_string())], 1);
            assert_eq!(counts[&(ChannelKind::Email, "pending".to_string())], 1);
            assert_eq!(counts[&(ChannelKind::Webhook, "pending".to_string())], 1);
            Ok(())
        })
        .expect("db");
    }

    #[test]
    fn reminders_follow_their_event_and_order() {
        let (_dir, db) = db();
        let inventory = Uuid::from_u128(7);
        let (order_a, order_b) = (Uuid::from_u128(8), Uuid::from_u128(9));
        db.call_blocking(|conn| {
            let reminder = |order: Uuid, rcpt: &str| PlannedNotification {
                kind: NotificationKind::EventReminder,
                due_at_ms: 1_000,
                inventory_id: Some(inventory),
                order_id: Some(order),
                ..planned(1, ChannelKind::Email, rcpt)
            };
            insert_planned(
                conn,
                &[reminder(order_a, "a@x.test"), reminder(order_b, "b@x.test")],
                1,
            )?;
            let none = HashSet::new();
            assert!(due(conn, ChannelKind::Email, 999, 10, &none)?.is_empty());
            assert_eq!(reschedule_event_reminders(conn, inventory, 2_000)?, 2);
            assert!(due(conn, ChannelKind::Email, 1_500, 10, &none)?.is_empty());
            assert_eq!(cancel_order_reminders(conn, order_a)?, 1);
            let left = due(conn, ChannelKind::Email, 2_000, 10, &none)?;
            assert_eq!(left.len(), 1);
            assert_eq!(left[0].recipient, "b@x.test");
            assert_eq!(cancel_event_reminders(conn, inventory)?, 1);
            assert!(due(conn, ChannelKind::Email, 9_999, 10, &none)?.is_empty());
            Ok(())
        })
        .expect("db");
    }

    #[test]
    fn checkpoint_survives_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("n.db");
        let db = Db::open(&path).expect("open");
        db.call_blocking(|conn| {
            assert_eq!(checkpoint(conn)?, 0);
            set_checkpoint(conn, 42)?;
            Ok(())
        })
        .expect("db");
        db.close();
        assert_eq!(
            db.call_blocking(|conn| checkpoint(conn)).unwrap_err(),
            NotifierError::ShutDown
        );
        let db = Db::open(&path).expect("reopen");
        assert_eq!(db.call_blocking(|conn| checkpoint(conn)).expect("db"), 42);
    }

    #[test]
    fn a_file_that_is_not_ours_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("junk.db");
        std::fs::write(
            &path,
            b"this is not a database, just some bytes of text....",
        )
        .expect("write");
        assert_eq!(Db::open(&path).err().map(|e| e.code()), Some("INTERNAL"));
    }
}
