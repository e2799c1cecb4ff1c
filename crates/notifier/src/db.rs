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
/// One connection serialised by a mutex: a single connection keeps every transaction
/// trivially ordered. Its work ([`Db::call`]) runs on one thread of the notifier's own,
/// never on a runtime worker nor on tokio's blocking pool, and that thread runs at a lower
/// scheduling priority ([`BACKGROUND_NICE`]): while a sale keeps the cores busy the
/// notifier gets a small share of them and falls behind (its checkpoint tells how far),
/// and it catches up as soon as they are free. Notifications are late during a burst, the
/// sale is not slowed by them.
#[derive(Clone)]
pub struct Db {
    /// The connection; `None` once closed so late callers get an error, not a hang.
    conn: Arc<Mutex<Option<Connection>>>,
    /// The notifier's database thread; it ends when the last handle is dropped.
    jobs: std::sync::mpsc::Sender<Job>,
}

/// Work for the database thread.
type Job = Box<dyn FnOnce() + Send>;

/// The nice value of the notifier's database thread (Linux): about a tenth of a core's
/// weight beside a thread of normal priority, so the notifier yields to the sale whenever
/// both want the CPU.
pub const BACKGROUND_NICE: i32 = 10;

/// Starts the thread that runs the database's work, in order, at background priority.
fn spawn_db_thread() -> Result<std::sync::mpsc::Sender<Job>, NotifierError> {
    let (jobs, incoming) = std::sync::mpsc::channel::<Job>();
    std::thread::Builder::new()
        .name("notifier-db".into())
        .spawn(move || {
            lower_priority();
            while let Ok(job) = incoming.recv() {
                job();
            }
        })
        .map_err(|e| NotifierError::Database(format!("cannot start the database thread: {e}")))?;
    Ok(jobs)
}

/// Gives the calling thread the nice value [`BACKGROUND_NICE`] (on Linux the nice value is
/// a thread's, not the process's). Where that is refused the thread keeps its priority.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: setpriority only reads its integer arguments; `who` 0 is the calling
        // thread on Linux.
        let refused = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, BACKGROUND_NICE) } != 0;
        if refused {
            tracing::warn!(
                "cannot lower the notifier thread's priority: notifications may compete with sales"
            );
        }
    }
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
            jobs: spawn_db_thread()?,
        })
    }

    /// Runs `f` with the connection on the notifier's database thread.
    pub async fn call<R, F>(&self, f: F) -> Result<R, NotifierError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, NotifierError> + Send + 'static,
    {
        let conn = self.conn.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            let result = {
                let mut guard = conn.lock();
                match guard.as_mut() {
                    Some(conn) => f(conn),
                    None => Err(NotifierError::ShutDown),
                }
            };
            let _ = tx.send(result);
        });
        self.jobs
            .send(job)
            .map_err(|_| NotifierError::Database("the database thread is gone".into()))?;
        rx.await
            .map_err(|_| NotifierError::Database("the database thread dropped a task".into()))?
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
