//! The notifier's own SQLite file: checkpoint, outbox, in-app notifications, webhook
//! registrations and the small projection of recipients the planner needs.
//!
//! Everything the notifier must remember across a restart lives here, and every change
//! that must be atomic (a batch of planned notifications with the checkpoint that covers
//! them) is one SQLite transaction.

use std::path::Path;
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags};

use crate::error::NotifierError;

/// Schema version written to `meta`; a file with another version is refused rather than
/// misread.
const SCHEMA_VERSION: &str = "1";

const SCHEMA: &str = r#"
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS checkpoint (
    id       INTEGER PRIMARY KEY CHECK (id = 1),
    position INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS outbox (
    id           INTEGER PRIMARY KEY,
    event_id     TEXT NOT NULL,
    kind         TEXT NOT NULL,
    channel      TEXT NOT NULL,
    recipient    TEXT NOT NULL,
    context      TEXT NOT NULL,
    status       TEXT NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    due_at       INTEGER NOT NULL,
    last_error   TEXT,
    created_at   INTEGER NOT NULL,
    delivered_at INTEGER,
    inventory_id TEXT,
    order_id     TEXT,
    UNIQUE (event_id, kind, channel, recipient)
);
CREATE INDEX IF NOT EXISTS outbox_due ON outbox (channel, status, due_at);
CREATE INDEX IF NOT EXISTS outbox_inventory ON outbox (inventory_id, status);
CREATE INDEX IF NOT EXISTS outbox_order ON outbox (order_id, status);
CREATE TABLE IF NOT EXISTS in_app (
    id         INTEGER PRIMARY KEY,
    outbox_id  INTEGER NOT NULL UNIQUE,
    user_id    TEXT NOT NULL,
    kind       TEXT NOT NULL,
    title      TEXT NOT NULL,
    body       TEXT NOT NULL,
    data       TEXT NOT NULL,
    created_at INTEGER NOT NULL,
    read_at    INTEGER
);
CREATE INDEX IF NOT EXISTS in_app_user ON in_app (user_id, id);
CREATE TABLE IF NOT EXISTS webhooks (
    id           TEXT PRIMARY KEY,
    inventory_id TEXT NOT NULL,
    url          TEXT NOT NULL,
    secret       TEXT NOT NULL,
    created_at   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS webhooks_inventory ON webhooks (inventory_id);
CREATE TABLE IF NOT EXISTS users (
    user_id TEXT PRIMARY KEY,
    email   TEXT NOT NULL,
    name    TEXT
);
CREATE TABLE IF NOT EXISTS events (
    inventory_id TEXT PRIMARY KEY,
    name         TEXT NOT NULL,
    venue        TEXT,
    starts_at    INTEGER,
    ends_at      INTEGER,
    cancelled    INTEGER NOT NULL DEFAULT 0,
    cancel_reason TEXT
);
CREATE TABLE IF NOT EXISTS orders (
    order_id     TEXT PRIMARY KEY,
    inventory_id TEXT NOT NULL,
    user_id      TEXT NOT NULL,
    status       TEXT NOT NULL,
    tickets      TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS orders_inventory ON orders (inventory_id, status);
"#;

/// A handle on the notifier's database, cheap to clone.
///
/// One connection serialised by a mutex: the notifier's writes are small and few per
/// notification, and a single connection keeps every transaction trivially ordered.
/// Blocking SQLite calls run on tokio's blocking pool, never on a runtime worker.
#[derive(Clone)]
pub struct Db {
    /// The connection; `None` once closed so late callers get an error, not a hang.
    conn: Arc<Mutex<Option<Connection>>>,
}

impl Db {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<Self, NotifierError> {
        let conn = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        // WAL lets readers (list, metrics) run beside the writer; NORMAL sync survives a
        // process kill (the case that matters for "no loss, no duplicate"); a power loss
        // may forget the last deliveries, which then go out again (at least once).
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        conn.execute_batch(SCHEMA)?;
        let version: Option<String> = conn
            .query_row(
                "SELECT value FROM meta WHERE key = 'schema_version'",
                [],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| match e {
                rusqlite::Error::QueryReturnedNoRows => Ok(None),
                e => Err(e),
            })?;
        match version.as_deref() {
            None => {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES ('schema_version', ?1)",
                    [SCHEMA_VERSION],
                )?;
            }
            Some(SCHEMA_VERSION) => {}
            Some(other) => {
                return Err(NotifierError::Database(format!(
                    "notifier database has schema version {other}, expected {SCHEMA_VERSION}"
                )));
            }
        }
        Ok(Self {
            conn: Arc::new(Mutex::new(Some(conn))),
        })
    }

    /// Runs `f` with the connection on the blocking pool.
    pub async fn call<R, F>(&self, f: F) -> Result<R, NotifierError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, NotifierError> + Send + 'static,
    {
        let conn = self.conn.clone();
        tokio::task::spawn_blocking(move || {
            let mut guard = conn.lock();
            let conn = guard.as_mut().ok_or(NotifierError::ShutDown)?;
            f(conn)
        })
        .await
        .map_err(|e| NotifierError::Database(format!("database task failed: {e}")))?
    }

    /// Runs `f` with the connection on the current thread (for callers already on a
    /// blocking thread, and for tests).
    pub fn call_blocking<R>(
        &self,
        f: impl FnOnce(&mut Connection) -> Result<R, NotifierError>,
    ) -> Result<R, NotifierError> {
        let mut guard = self.conn.lock();
        let conn = guard.as_mut().ok_or(NotifierError::ShutDown)?;
        f(conn)
    }

    /// Closes the connection; later calls fail with [`NotifierError::ShutDown`].
    pub fn close(&self) {
        self.conn.lock().take();
    }
}

/// Milliseconds since the Unix epoch, the notifier's unit of time in the database.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}
