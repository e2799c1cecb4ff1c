//! The embedded backend: one SQLite file in WAL mode, one writer thread with group commit.
//!
//! * **Durability.** WAL with `synchronous=FULL`: a commit returns only after the WAL is
//!   fsynced, so an acknowledged append survives a process crash and a power loss.
//! * **Group commit.** Every append (any stream) goes to one writer thread that owns the
//!   only write connection. It takes everything queued, checks each append's expected
//!   version against the stream heads it keeps in memory, inserts the accepted ones in one
//!   transaction, commits once (one fsync) and only then answers each caller with its own
//!   result. A conflicting append fails alone; the others in its batch commit. While one
//!   batch is being fsynced the next one queues up, so the batch size follows the load.
//! * **Readers** use their own connections from a small pool (WAL readers never block the
//!   writer nor wait for it). Live subscribers are woken through a `watch` channel of the
//!   head position: there is no per-event broadcast and no backlog to overflow; a
//!   subscriber reads at its own pace. The most recent events are also kept in memory
//!   ([`SqliteOptions::recent_events`]), so a subscriber that keeps up is served from
//!   there; one that falls further behind reads pages from the file.
//! * **Checkpoints.** The log is copied into the database file by a checkpointer thread
//!   of its own while the writer goes on committing ([`Checkpoints`]), so that no commit
//!   waits for tens of megabytes to be copied.
//! * **Streams** are stored once each (an integer id per name); events carry the id.
//!   Files of the previous schema (names in every event) are upgraded at open.
//! * **One writer process.** An exclusive OS lock on `<file>.lock` is taken at open and
//!   held until the writer stops; a second writer is refused with [`StoreError::Locked`].
//!   Other processes may open the file with [`SqliteStore::open_read_only`]; their
//!   subscriptions poll the head at a short interval.
//! * **Not ours, or damaged.** The file must be a SQLite database whose `application_id`
//!   is ours (or a new, empty one); at open it runs `PRAGMA quick_check` and checks every
//!   stream's versions are contiguous. Anything else is [`StoreError::Corrupt`].

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::DateTime;
use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, params};
use tokio::sync::{oneshot, watch};
use uuid::Uuid;

mod checkpoint;

pub use checkpoint::Checkpoints;

use crate::{
    AppendResult, EventStore, ExpectedVersion, Metadata, NewEvent, Position, RecordedEvent,
    StoreError, StreamName, Subscription, SubscriptionMessage, validate_append,
};

/// `application_id` stamped into our files ("TKES"), so that any other SQLite database is
/// refused instead of being written to.
const APPLICATION_ID: i32 = 0x544B_4553;

/// Schema version in `user_version`; bump it with a migration when the schema changes.
/// Version 1 stored each event's stream name; version 2 stores an integer stream id.
const SCHEMA_VERSION: i32 = 2;

/// Log size, in pages, at which the checkpointer starts copying the log into the database
/// file (about 16 MiB). With checkpoints beside the writer, a shorter log measured the same
/// throughput as 16,000 pages and a shorter tail: the writer's own share (the last few
/// hundred pages of each round) and the log file on disk stay small (ADR 0002).
const WAL_CHECKPOINT_PAGES: u32 = 4_000;

/// File name used when [`SqliteStore::open`] is given a directory.
pub const DEFAULT_FILE_NAME: &str = "events.sqlite3";

// A stream's name is stored once, in `streams`; each event row and each entry of the
// per-stream index carry its integer id (one to three bytes instead of a ~46-byte name).
// A `streams` row is inserted in the transaction of the stream's first events, so every
// stream listed has events.
const SCHEMA: &str = "
CREATE TABLE streams (
    stream_id      INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE
) STRICT;
CREATE TABLE events (
    position       INTEGER PRIMARY KEY,
    stream_id      INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    event_id       BLOB    NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           BLOB    NOT NULL,
    correlation_id BLOB    NOT NULL,
    causation_id   BLOB,
    acting_user    BLOB,
    recorded_at    INTEGER NOT NULL
) STRICT;
CREATE UNIQUE INDEX events_by_stream ON events (stream_id, version);
";

/// Rewrites a version 1 file (stream names in every row) into version 2, in the caller's
/// transaction. Stream ids follow the order of each stream's first event; positions,
/// versions and every other column are copied unchanged.
const MIGRATE_1_TO_2: &str = "
CREATE TABLE streams (
    stream_id      INTEGER PRIMARY KEY,
    name           TEXT    NOT NULL UNIQUE
) STRICT;
INSERT INTO streams (name) SELECT stream FROM events GROUP BY stream ORDER BY min(position);
CREATE TABLE events_v2 (
    position       INTEGER PRIMARY KEY,
    stream_id      INTEGER NOT NULL,
    version        INTEGER NOT NULL,
    event_id       BLOB    NOT NULL,
    event_type     TEXT    NOT NULL,
    schema_version INTEGER NOT NULL,
    data           BLOB    NOT NULL,
    correlation_id BLOB    NOT NULL,
    causation_id   BLOB,
    acting_user    BLOB,
    recorded_at    INTEGER NOT NULL
) STRICT;
INSERT INTO events_v2 (position, stream_id, version, event_id, event_type, schema_version,
    data, correlation_id, causation_id, acting_user, recorded_at)
SELECT e.position, s.stream_id, e.version, e.event_id, e.event_type, e.schema_version,
    e.data, e.correlation_id, e.causation_id, e.acting_user, e.recorded_at
FROM events e JOIN streams s ON s.name = e.stream ORDER BY e.position;
DROP TABLE events;
ALTER TABLE events_v2 RENAME TO events;
CREATE UNIQUE INDEX events_by_stream ON events (stream_id, version);
";

const INSERT: &str = "INSERT INTO events (position, stream_id, version, event_id, event_type, \
    schema_version, data, correlation_id, causation_id, acting_user, recorded_at) \
    VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)";

const INSERT_STREAM: &str = "INSERT INTO streams (stream_id, name) VALUES (?1, ?2)";

/// The columns of a [`RecordedEvent`], from `events e` joined with `streams s`.
const COLUMNS: &str = "e.position, s.name, e.version, e.event_id, e.event_type, \
    e.schema_version, e.data, e.correlation_id, e.causation_id, e.acting_user, e.recorded_at";

/// How hard a commit works to survive a crash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: every commit fsyncs the WAL. Survives process crashes and power
    /// loss. The default, and the only choice for production.
    #[default]
    Full,
    /// `synchronous=NORMAL`: the WAL is fsynced only at checkpoints. Survives a process
    /// crash, but a power loss may drop the last acknowledged commits. For tests and
    /// throwaway data only.
    Normal,
}

/// Settings of a [`SqliteStore`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Commit durability.
    pub durability: Durability,
    /// Most appends the writer puts in one transaction.
    pub max_batch_appends: usize,
    /// Run `PRAGMA quick_check` at open (linear in the file size; about a second per few
    /// hundred MB). Turning it off only skips detection of damaged pages at open.
    pub verify_on_open: bool,
    /// How often a subscription of a read-only store looks for new events.
    pub poll_interval: Duration,
    /// Events a subscription reads per page.
    pub page_size: usize,
    /// Idle read connections kept open.
    pub max_idle_readers: usize,
    /// Log size, in pages, past which the log is copied into the database file.
    pub checkpoint_pages: u32,
    /// Where that copying runs.
    pub checkpoints: Checkpoints,
    /// Most recently committed events kept in memory for live subscribers (also bounded
    /// to [`RECENT_BYTES`] of payload); 0 serves every subscription from the file.
    pub recent_events: usize,
}

/// Most payload bytes the in-memory tail of recent events holds.
pub const RECENT_BYTES: usize = 16 << 20;

impl Default for SqliteOptions {
    fn default() -> Self {
        Self {
            durability: Durability::Full,
            max_batch_appends: 8192,
            verify_on_open: true,
            poll_interval: Duration::from_millis(50),
            page_size: 2048,
            max_idle_readers: 8,
            checkpoint_pages: WAL_CHECKPOINT_PAGES,
            checkpoints: Checkpoints::default(),
            recent_events: 8192,
        }
    }
}

/// Counters of the writer since the store was opened: how well group commit coalesces.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriterStats {
    /// Transactions committed (each one fsync with [`Durability::Full`]).
    pub commits: u64,
    /// Appends acknowledged as stored.
    pub appends: u64,
    /// Events stored.
    pub events: u64,
    /// Appends refused for a wrong expected version.
    pub conflicts: u64,
    /// Writer time spent inserting rows (before the commit), in nanoseconds.
    pub insert_nanos: u64,
    /// Writer time spent committing (writing the WAL and fsyncing it), in nanoseconds.
    pub commit_nanos: u64,
    /// Writer time spent handing answers to the replier thread, in nanoseconds.
    pub reply_nanos: u64,
    /// Checkpoints run (the log copied into the database file).
    pub checkpoints: u64,
    /// Checkpoints run on the writer thread, between a commit and its answers: the ones
    /// that appends wait for.
    pub writer_checkpoints: u64,
    /// Time spent in checkpoints, in nanoseconds.
    pub checkpoint_nanos: u64,
    /// Log size, in pages, after the last commit.
    pub wal_pages: u64,
    /// Subscription pages served from the in-memory tail of recent events.
    pub pages_from_memory: u64,
    /// Subscription pages read from the file.
    pub pages_from_file: u64,
}

/// The live counters behind [`WriterStats`], written by the writer thread only.
#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    appends: AtomicU64,
    events: AtomicU64,
    conflicts: AtomicU64,
    insert_nanos: AtomicU64,
    commit_nanos: AtomicU64,
    reply_nanos: AtomicU64,
    checkpoints: AtomicU64,
    writer_checkpoints: AtomicU64,
    checkpoint_nanos: AtomicU64,
    wal_pages: AtomicU64,
    pages_from_memory: AtomicU64,
    pages_from_file: AtomicU64,
}

/// The embedded event store. Cheap to clone: clones share one store.
#[derive(Clone)]
pub struct SqliteStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// The database file, for error messages and opening read connections.
    path: PathBuf,
    /// Page size, poll interval and pool size used by reads and subscriptions.
    options: SqliteOptions,
    /// Idle read connections, reused across reads.
    readers: Mutex<Vec<Connection>>,
    /// The write side; `None` when opened read-only.
    writer: Option<Writer>,
    /// Set once by `shutdown`; subscriptions watch it to end.
    closed: watch::Sender<bool>,
}

struct Writer {
    /// Queue to the writer thread; taken (dropped) on shutdown so the thread drains the
    /// queue and exits.
    requests: Mutex<Option<mpsc::Sender<AppendRequest>>>,
    /// Position of the last committed event, published after each commit.
    head: watch::Receiver<Position>,
    /// The most recent committed events, filled before the head is published.
    tail: Arc<Tail>,
    /// The writer thread, joined on shutdown so the lock and connection are released.
    thread: Mutex<Option<JoinHandle<()>>>,
    /// Updated by the writer thread after each commit, read by [`SqliteStore::stats`].
    counters: Arc<Counters>,
}

/// One caller's append, queued for the writer.
struct AppendRequest {
    stream: StreamName,
    expected: ExpectedVersion,
    events: Vec<NewEvent>,
    /// Answered after the commit that holds (or refused) this append.
    reply: oneshot::Sender<Result<AppendResult, StoreError>>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store for writing.
    ///
    /// `path` is the database file, or an existing directory in which the file is
    /// [`DEFAULT_FILE_NAME`]. Fails with [`StoreError::Locked`] if another process (or
    /// another `SqliteStore` in this one) writes it, and with [`StoreError::Corrupt`] if
    /// the file is not ours or is damaged.
    pub fn open(path: impl AsRef<Path>, options: SqliteOptions) -> Result<Self, StoreError> {
        let path = resolve(path.as_ref())?;
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| io_err(&path, "create directory", e))?;
        }
        let lock = lock_writer(&path)?;
        check_header(&path)?;
        let mut conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_WRITE
                | OpenFlags::SQLITE_OPEN_CREATE
                | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| db_err(&path, e))?;
        let version = init_schema(&path, &conn)?;
        let journal: String = conn
            .pragma_update_and_check(None, "journal_mode", "WAL", |r| r.get(0))
            .map_err(|e| db_err(&path, e))?;
        if !journal.eq_ignore_ascii_case("wal") {
            return Err(StoreError::Unavailable(format!(
                "{}: could not switch to WAL (journal_mode is {journal})",
                path.display()
            )));
        }
        let sync = match options.durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        // 16 MiB of page cache: appends touch the right edge of each B-tree, and reads of
        // recent events are served from the in-memory tail, so a larger cache only holds
        // pages written long ago (it grew to its whole 64 MiB in a long sale).
        conn.execute_batch(&format!(
            "PRAGMA synchronous = {sync}; PRAGMA cache_size = -16384;"
        ))
        .map_err(|e| db_err(&path, e))?;
        if options.verify_on_open {
            quick_check(&path, &conn)?;
        }
        if version == 1 {
            migrate_from_1(&path, &mut conn)?;
        }
        let (heads, last) = load_heads(&path, &conn)?;
        let next_stream_id = next_stream_id(&path, &conn)?;
        let counters = Arc::new(Counters::default());
        let checkpointer = checkpoint::install(
            &mut conn,
            &path,
            sync,
            options.checkpoints,
            options.checkpoint_pages,
            counters.clone(),
        )?;
        conn.set_prepared_statement_cache_capacity(16);

        let (head_tx, head_rx) = watch::channel(Position(last));
        let tail = Arc::new(Tail::new(head_tx, options.recent_events));
        let (req_tx, req_rx) = mpsc::channel();
        let mut state = WriterState {
            counters: counters.clone(),
            path: path.clone(),
            checkpointer,
            conn,
            heads,
            next_stream_id,
            last,
            tail: tail.clone(),
            max_batch: options.max_batch_appends.max(1),
            replies: spawn_replier(&path, tail.clone())?,
        };
        let thread = std::thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || {
                // The lock lives exactly as long as the writer: dropped (unlocked) after
                // the connection is closed.
                let _lock = lock;
                state.run(req_rx);
                drop(state);
            })
            .map_err(|e| io_err(&path, "spawn writer thread", e))?;

        Ok(Self {
            inner: Arc::new(Inner {
                path,
                options,
                readers: Mutex::new(Vec::new()),
                writer: Some(Writer {
                    requests: Mutex::new(Some(req_tx)),
                    head: head_rx,
                    tail,
                    thread: Mutex::new(Some(thread)),
                    counters,
                }),
                closed: watch::channel(false).0,
            }),
        })
    }

    /// Opens an existing store for reading only, beside the process that writes it.
    /// Appends fail with [`StoreError::ReadOnly`]; subscriptions poll for new events every
    /// [`SqliteOptions::poll_interval`].
    pub fn open_read_only(
        path: impl AsRef<Path>,
        options: SqliteOptions,
    ) -> Result<Self, StoreError> {
        let path = resolve(path.as_ref())?;
        if !path.is_file() {
            return Err(StoreError::Unavailable(format!(
                "{}: no event store there",
                path.display()
            )));
        }
        check_header(&path)?;
        let conn = open_reader(&path)?;
        let version = check_ours(&path, &conn)?;
        if version != SCHEMA_VERSION {
            return Err(StoreError::Corrupt(format!(
                "{}: schema version {version}; open it once for writing to upgrade it to \
                 {SCHEMA_VERSION}",
                path.display()
            )));
        }
        if options.verify_on_open {
            quick_check(&path, &conn)?;
        }
        Ok(Self {
            inner: Arc::new(Inner {
                path,
                options,
                readers: Mutex::new(vec![conn]),
                writer: None,
                closed: watch::channel(false).0,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The writer's counters (all zero for a read-only store).
    pub fn stats(&self) -> WriterStats {
        let Some(writer) = &self.inner.writer else {
            return WriterStats::default();
        };
        let c = &writer.counters;
        WriterStats {
            commits: c.commits.load(Ordering::Relaxed),
            appends: c.appends.load(Ordering::Relaxed),
            events: c.events.load(Ordering::Relaxed),
            conflicts: c.conflicts.load(Ordering::Relaxed),
            insert_nanos: c.insert_nanos.load(Ordering::Relaxed),
            commit_nanos: c.commit_nanos.load(Ordering::Relaxed),
            reply_nanos: c.reply_nanos.load(Ordering::Relaxed),
            checkpoints: c.checkpoints.load(Ordering::Relaxed),
            writer_checkpoints: c.writer_checkpoints.load(Ordering::Relaxed),
            checkpoint_nanos: c.checkpoint_nanos.load(Ordering::Relaxed),
            wal_pages: c.wal_pages.load(Ordering::Relaxed),
            pages_from_memory: c.pages_from_memory.load(Ordering::Relaxed),
            pages_from_file: c.pages_from_file.load(Ordering::Relaxed),
        }
    }

    async fn read<R, F>(&self, f: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&Path, &Connection) -> Result<R, StoreError> + Send + 'static,
    {
        if *self.inner.closed.borrow() {
            return Err(StoreError::ShutDown);
        }
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || inner.with_reader(f))
            .await
            .map_err(|e| StoreError::Unavailable(format!("read task failed: {e}")))?
    }
}

impl Inner {
    fn with_reader<R>(
        &self,
        f: impl FnOnce(&Path, &Connection) -> Result<R, StoreError>,
    ) -> Result<R, StoreError> {
        let pooled = self.readers.lock().pop();
        let conn = match pooled {
            Some(conn) => conn,
            None => open_reader(&self.path)?,
        };
        let result = f(&self.path, &conn);
        let mut idle = self.readers.lock();
        if idle.len() < self.options.max_idle_readers {
            idle.push(conn);
        }
        result
    }
}

#[async_trait]
impl EventStore for SqliteStore {
    /// Yes: an append is validated and queued to the one writer thread when its future is
    /// first polled, and the writer takes its queue in order.
    fn orders_appends(&self) -> bool {
        true
    }

    async fn append(
        &self,
        stream: &StreamName,
        expected: ExpectedVersion,
        events: Vec<NewEvent>,
    ) -> Result<AppendResult, StoreError> {
        let Some(writer) = &self.inner.writer else {
            return Err(StoreError::ReadOnly);
        };
        validate_append(&events)?;
        let (reply, answer) = oneshot::channel();
        let request = AppendRequest {
            stream: stream.clone(),
            expected,
            events,
            reply,
        };
        {
            let requests = writer.requests.lock();
            let Some(requests) = requests.as_ref() else {
                return Err(StoreError::ShutDown);
            };
            requests.send(request).map_err(|_| StoreError::ShutDown)?;
        }
        answer.await.map_err(|_| StoreError::ShutDown)?
    }

    async fn read_stream(
        &self,
        stream: &StreamName,
        from: u64,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if max == 0 || from > i64::MAX as u64 {
            return Ok(Vec::new());
        }
        let stream = stream.clone();
        self.read(move |path, conn| {
            let mut stmt = conn
                .prepare_cached(&format!(
                    "SELECT {COLUMNS} FROM streams s CROSS JOIN events e \
                     WHERE s.name = ?1 AND e.stream_id = s.stream_id AND e.version >= ?2 \
                     ORDER BY e.version LIMIT ?3"
                ))
                .map_err(|e| db_err(path, e))?;
            collect(
                path,
                stmt.query(params![stream.as_str(), from as i64, limit(max)]),
            )
        })
        .await
    }

    async fn read_all(
        &self,
        after: Position,
        max: usize,
    ) -> Result<Vec<RecordedEvent>, StoreError> {
        if max == 0 || after.0 >= i64::MAX as u64 {
            return Ok(Vec::new());
        }
        self.read(move |path, conn| read_all_page(path, conn, after, max))
            .await
    }

    fn subscribe_all(&self, after: Position) -> Subscription {
        Box::pin(futures::stream::unfold(
            SubscriptionState::new(self.clone(), after),
            SubscriptionState::next,
        ))
    }

    async fn head(&self) -> Result<Position, StoreError> {
        if *self.inner.closed.borrow() {
            return Err(StoreError::ShutDown);
        }
        if let Some(writer) = &self.inner.writer {
            return Ok(*writer.head.borrow());
        }
        self.read(|path, conn| {
            conn.query_row("SELECT coalesce(max(position), 0) FROM events", [], |r| {
                r.get::<_, i64>(0)
            })
            .map(|p| Position(p as u64))
            .map_err(|e| db_err(path, e))
        })
        .await
    }

    async fn stream_version(&self, stream: &StreamName) -> Result<Option<u64>, StoreError> {
        let stream = stream.clone();
        self.read(move |path, conn| {
            let mut stmt = conn
                .prepare_cached(
                    "SELECT max(e.version) FROM streams s CROSS JOIN events e \
                     WHERE s.name = ?1 AND e.stream_id = s.stream_id",
                )
                .map_err(|e| db_err(path, e))?;
            stmt.query_row([stream.as_str()], |r| r.get::<_, Option<i64>>(0))
                .map(|v| v.map(|v| v as u64))
                .map_err(|e| db_err(path, e))
        })
        .await
    }

    async fn list_streams(
        &self,
        prefix: &str,
        after: Option<&StreamName>,
        max: usize,
    ) -> Result<Vec<StreamName>, StoreError> {
        let prefix = prefix.to_owned();
        let cursor = after.map(|s| s.as_str().to_owned()).unwrap_or_default();
        self.read(move |path, conn| {
            // A range of the names' unique index: the cost follows the number of streams
            // listed, not the number of events or streams stored.
            let mut stmt = conn
                .prepare_cached(
                    "SELECT name FROM streams WHERE name >= ?1 AND name > ?2 \
                     ORDER BY name LIMIT ?3",
                )
                .map_err(|e| db_err(path, e))?;
            let mut rows = stmt
                .query(params![prefix, cursor, limit(max)])
                .map_err(|e| db_err(path, e))?;
            let mut names = Vec::new();
            while let Some(row) = rows.next().map_err(|e| db_err(path, e))? {
                let name: String = row.get(0).map_err(|e| db_err(path, e))?;
                if !name.starts_with(&prefix) {
                    break;
                }
                names.push(StreamName::new(name).map_err(|_| {
                    StoreError::Corrupt(format!(
                        "{}: a stored stream name is invalid",
                        path.display()
                    ))
                })?);
            }
            Ok(names)
        })
        .await
    }

    async fn shutdown(&self) {
        self.inner.closed.send_replace(true);
        let Some(writer) = &self.inner.writer else {
            return;
        };
        // Dropping the queue lets the writer finish what is queued, then exit.
        drop(writer.requests.lock().take());
        let thread = writer.thread.lock().take();
        if let Some(thread) = thread {
            let joined = tokio::task::spawn_blocking(move || thread.join()).await;
            if !matches!(joined, Ok(Ok(()))) {
                tracing::error!(path = %self.inner.path.display(), "store writer thread panicked");
            }
        }
    }
}

/// The head position and the most recently committed events, published by the replier
/// thread after each commit and read by live subscriptions.
struct Tail {
    /// Position of the last committed event; set after its events are in `recent`.
    head: watch::Sender<Position>,
    /// Contiguous run of the latest committed events, oldest first.
    recent: Mutex<Recent>,
    /// Most events `recent` holds ([`SqliteOptions::recent_events`]).
    max_events: usize,
}

#[derive(Default)]
struct Recent {
    events: std::collections::VecDeque<Arc<RecordedEvent>>,
    /// Approximate heap bytes of `events`, bounded by [`RECENT_BYTES`].
    bytes: usize,
}

/// Approximate memory one event takes in the tail.
fn footprint(event: &RecordedEvent) -> usize {
    std::mem::size_of::<RecordedEvent>()
        + event.data.len()
        + event.event_type.len()
        + event.stream.as_str().len()
}

impl Tail {
    fn new(head: watch::Sender<Position>, max_events: usize) -> Self {
        Self {
            head,
            recent: Mutex::new(Recent::default()),
            max_events,
        }
    }

    /// Moves the accepted events of a committed batch into the tail, then publishes `last`
    /// as the head. Returns the requests, emptied of their events, for answering.
    fn publish(
        &self,
        mut batch: Vec<AppendRequest>,
        planned: &[Planned],
        last: u64,
    ) -> Vec<AppendRequest> {
        if self.max_events > 0 {
            let mut fresh = Vec::new();
            for (request, outcome) in batch.iter_mut().zip(planned) {
                let Planned::Accepted(result) = outcome else {
                    continue;
                };
                let events = std::mem::take(&mut request.events);
                for ((i, event), position) in events.into_iter().enumerate().zip(&result.positions)
                {
                    let mut metadata = event.metadata;
                    // As stored: nanoseconds, out-of-range instants clamped.
                    metadata.recorded_at = DateTime::from_timestamp_nanos(
                        metadata
                            .recorded_at
                            .timestamp_nanos_opt()
                            .unwrap_or(i64::MAX),
                    );
                    fresh.push(Arc::new(RecordedEvent {
                        id: event.id,
                        stream: request.stream.clone(),
                        version: result.first_version + i as u64,
                        position: *position,
                        event_type: event.event_type,
                        schema_version: event.schema_version,
                        data: event.data,
                        metadata,
                    }));
                }
            }
            let evicted = self.push(fresh);
            drop(evicted);
        }
        self.head.send_if_modified(|h| {
            let changed = h.0 != last;
            *h = Position(last);
            changed
        });
        batch
    }

    /// Appends `fresh` to the tail and trims it to its bounds; returns what was trimmed, to
    /// be freed outside the lock.
    fn push(&self, fresh: Vec<Arc<RecordedEvent>>) -> Vec<Arc<RecordedEvent>> {
        let Some(first) = fresh.first().map(|e| e.position.0) else {
            return Vec::new();
        };
        let mut recent = self.recent.lock();
        let mut evicted = Vec::new();
        // Events committed without passing through here (a batch that failed after
        // reaching the disk) leave a gap: the tail starts again after it.
        if recent
            .events
            .back()
            .is_some_and(|e| e.position.0 + 1 != first)
        {
            evicted.extend(recent.events.drain(..));
            recent.bytes = 0;
        }
        for event in fresh {
            recent.bytes += footprint(&event);
            recent.events.push_back(event);
        }
        while recent.events.len() > self.max_events || recent.bytes > RECENT_BYTES {
            let Some(old) = recent.events.pop_front() else {
                break;
            };
            recent.bytes -= footprint(&old);
            evicted.push(old);
        }
        evicted
    }

    /// Up to `max` events after `after`, if the tail holds every one of them (an empty
    /// page when nothing after `after` is committed yet); `None` when some are only in
    /// the file.
    fn page_after(&self, after: Position, max: usize) -> Option<Vec<RecordedEvent>> {
        let shared: Vec<Arc<RecordedEvent>> = {
            let recent = self.recent.lock();
            let front = recent.events.front()?.position.0;
            let wanted = after.0.checked_add(1)?;
            if wanted < front {
                return None;
            }
            let start = usize::try_from(wanted - front)
                .unwrap_or(usize::MAX)
                .min(recent.events.len());
            let end = start.saturating_add(max).min(recent.events.len());
            recent.events.range(start..end).cloned().collect()
        };
        Some(shared.iter().map(|e| RecordedEvent::clone(e)).collect())
    }
}

/// State of one subscription between two items.
struct SubscriptionState {
    /// The store read from; keeps it open while the subscription lives.
    store: SqliteStore,
    /// Position of the last event yielded.
    last: Position,
    /// Events read but not yet yielded.
    buffer: std::vec::IntoIter<RecordedEvent>,
    /// The next page, read ahead while the consumer drains `buffer`.
    prefetch: Option<tokio::task::JoinHandle<Result<Vec<RecordedEvent>, StoreError>>>,
    /// Whether `CaughtUp` was sent (it is sent once).
    caught_up: bool,
    /// Set after an error was yielded: the stream then ends.
    failed: bool,
    /// The writer's head position, to sleep until a commit; `None` for a read-only store,
    /// which polls instead.
    head: Option<watch::Receiver<Position>>,
    /// Becomes true on shutdown, ending the subscription.
    closed: watch::Receiver<bool>,
}

impl SubscriptionState {
    fn new(store: SqliteStore, after: Position) -> Self {
        let head = store.inner.writer.as_ref().map(|w| w.head.clone());
        let closed = store.inner.closed.subscribe();
        Self {
            store,
            last: after,
            buffer: Vec::new().into_iter(),
            prefetch: None,
            caught_up: false,
            failed: false,
            head,
            closed,
        }
    }

    fn start_read(
        &self,
        after: Position,
    ) -> tokio::task::JoinHandle<Result<Vec<RecordedEvent>, StoreError>> {
        if let Some(writer) = &self.store.inner.writer {
            writer
                .counters
                .pages_from_file
                .fetch_add(1, Ordering::Relaxed);
        }
        let inner = self.store.inner.clone();
        let page = self.store.inner.options.page_size.max(1);
        tokio::task::spawn_blocking(move || {
            inner.with_reader(|path, conn| read_all_page(path, conn, after, page))
        })
    }

    /// The next page from the in-memory tail, if it holds every event after `last`.
    fn recent_page(&self) -> Option<Vec<RecordedEvent>> {
        let writer = self.store.inner.writer.as_ref()?;
        let page = writer
            .tail
            .page_after(self.last, self.store.inner.options.page_size.max(1))?;
        writer
            .counters
            .pages_from_memory
            .fetch_add(1, Ordering::Relaxed);
        Some(page)
    }

    async fn next(mut self) -> Option<(Result<SubscriptionMessage, StoreError>, Self)> {
        loop {
            if self.failed || *self.closed.borrow() {
                return None;
            }
            if let Some(event) = self.buffer.next() {
                self.last = event.position;
                return Some((Ok(SubscriptionMessage::Event(event)), self));
            }
            // `fresh`: the page was read after the head was noted, so an empty one means
            // caught up.
            let (read, fresh, from_file) = match self.prefetch.take() {
                Some(read) => (joined(read).await, false, true),
                None => {
                    // Note the head we are about to read up to: a commit after this point
                    // wakes the wait below, so none is missed between the read and the wait.
                    if let Some(head) = &mut self.head {
                        head.borrow_and_update();
                    }
                    match self.recent_page() {
                        Some(page) => (Ok(page), true, false),
                        None => (joined(self.start_read(self.last)).await, true, true),
                    }
                }
            };
            let page = match read {
                Ok(page) => page,
                Err(e) => return self.fail(e),
            };
            if page.is_empty() && !fresh {
                // A read-ahead started before the head was noted proves nothing about the
                // head now: read again.
                continue;
            }
            if !page.is_empty() {
                if from_file && page.len() >= self.store.inner.options.page_size.max(1) {
                    let after = page.last().map_or(self.last, |e| e.position);
                    self.prefetch = Some(self.start_read(after));
                }
                self.buffer = page.into_iter();
                continue;
            }
            if !self.caught_up {
                self.caught_up = true;
                return Some((Ok(SubscriptionMessage::CaughtUp), self));
            }
            if !self.wait().await {
                return None;
            }
        }
    }

    /// Waits until there may be new events; false when the store shut down.
    async fn wait(&mut self) -> bool {
        let poll = self.store.inner.options.poll_interval;
        match &mut self.head {
            Some(head) => tokio::select! {
                changed = head.changed() => changed.is_ok(),
                _ = self.closed.changed() => false,
            },
            None => tokio::select! {
                _ = tokio::time::sleep(poll) => true,
                _ = self.closed.changed() => false,
            },
        }
    }

    fn fail(mut self, e: StoreError) -> Option<(Result<SubscriptionMessage, StoreError>, Self)> {
        self.failed = true;
        Some((Err(e), self))
    }
}

/// The outcome of a page read on the blocking pool.
async fn joined(
    read: tokio::task::JoinHandle<Result<Vec<RecordedEvent>, StoreError>>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    read.await
        .map_err(|e| StoreError::Unavailable(format!("read task: {e}")))?
}

/// The writer thread's state.
struct WriterState {
    path: PathBuf,
    /// The background checkpointer, if any; stopped before `conn` is closed, so that
    /// closing the writer connection, the last one, can checkpoint and remove the log.
    checkpointer: Option<checkpoint::Checkpointer>,
    conn: Connection,
    /// Id and last version of every stream: expected versions are checked here, without a
    /// read, and rows carry the id.
    heads: HashMap<String, StreamHead>,
    /// Id the next new stream gets.
    next_stream_id: i64,
    /// Position of the last committed event.
    last: u64,
    /// Publishes each committed batch (its events, then `last`) to subscribers.
    tail: Arc<Tail>,
    /// Most appends per transaction ([`SqliteOptions::max_batch_appends`]).
    max_batch: usize,
    /// Shared with [`SqliteStore::stats`].
    counters: Arc<Counters>,
    /// Hands the answers of a committed batch to the replier thread, so that waking
    /// hundreds of callers overlaps with the next batch's inserts and fsync.
    replies: mpsc::Sender<Reply>,
}

/// A committed batch, what became of each of its appends, and the position of its last
/// event.
type Reply = (Vec<AppendRequest>, Vec<Planned>, u64);

/// Publishes a committed batch to subscribers, then answers its callers: an acknowledged
/// append is already visible to `head` and to subscriptions.
fn answer(tail: &Tail, batch: Vec<AppendRequest>, planned: Vec<Planned>, last: u64) {
    let batch = tail.publish(batch, &planned, last);
    for (request, outcome) in batch.into_iter().zip(planned) {
        let _ = request.reply.send(match outcome {
            Planned::Accepted(result) => Ok(result),
            Planned::Refused(e) => Err(e),
        });
    }
}

/// Starts the thread that answers callers after their batch committed. It ends once the
/// writer dropped its sender and every queued answer is sent.
fn spawn_replier(path: &Path, tail: Arc<Tail>) -> Result<mpsc::Sender<Reply>, StoreError> {
    let (tx, rx) = mpsc::channel::<Reply>();
    std::thread::Builder::new()
        .name("store-replier".into())
        .spawn(move || {
            for (batch, planned, last) in rx {
                answer(&tail, batch, planned, last);
            }
        })
        .map_err(|e| io_err(path, "spawn replier thread", e))?;
    Ok(tx)
}

/// What the writer knows of one stream.
#[derive(Debug, Clone, Copy)]
struct StreamHead {
    /// The stream's row in `streams`.
    id: i64,
    /// Version of its last event; `None` for a stream row without events (never written
    /// by this store, tolerated when read back).
    last: Option<u64>,
}

/// What one append in a batch turned into before the commit.
enum Planned {
    Accepted(AppendResult),
    Refused(StoreError),
}

impl WriterState {
    fn run(&mut self, requests: mpsc::Receiver<AppendRequest>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        while let Ok(first) = requests.recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(_) => break,
                }
            }
            self.commit_batch(std::mem::take(&mut batch));
        }
        // Stop the checkpointer before the writer connection closes (see the field).
        drop(self.checkpointer.take());
    }

    fn commit_batch(&mut self, batch: Vec<AppendRequest>) {
        // Callers that gave up (their future was dropped) need no work.
        let batch: Vec<_> = batch.into_iter().filter(|r| !r.reply.is_closed()).collect();
        if batch.is_empty() {
            return;
        }
        match self.try_commit(&batch) {
            Ok((planned, touched, next_stream_id, last)) => {
                let c = &self.counters;
                c.commits.fetch_add(1, Ordering::Relaxed);
                c.events.fetch_add(last - self.last, Ordering::Relaxed);
                for outcome in &planned {
                    match outcome {
                        Planned::Accepted(_) => c.appends.fetch_add(1, Ordering::Relaxed),
                        Planned::Refused(_) => c.conflicts.fetch_add(1, Ordering::Relaxed),
                    };
                }
                self.heads.extend(touched);
                self.next_stream_id = next_stream_id;
                self.last = last;
                let replying = Instant::now();
                // Publishing the events and freeing the requests happen on the replier
                // thread too: copying and freeing thousands of buffers is not the
                // writer's job.
                if let Err(mpsc::SendError((batch, planned, last))) =
                    self.replies.send((batch, planned, last))
                {
                    // The replier is gone (it never panics, so only at teardown): answer here.
                    answer(&self.tail, batch, planned, last);
                }
                c.reply_nanos
                    .fetch_add(replying.elapsed().as_nanos() as u64, Ordering::Relaxed);
            }
            Err(e) => {
                // The transaction rolled back. Our view of the heads may be stale if the
                // failure hit after the commit reached the disk, so reload it; then, when
                // several appends shared the failed batch, commit each alone so that one
                // bad append cannot fail the others.
                tracing::warn!(path = %self.path.display(), error = %e, size = batch.len(), "store batch failed");
                if let Err(reload) = self.reload() {
                    for request in batch {
                        let _ = request.reply.send(Err(reload.clone()));
                    }
                    return;
                }
                if batch.len() == 1 {
                    for request in batch {
                        let _ = request.reply.send(Err(e.clone()));
                    }
                } else {
                    for request in batch {
                        self.commit_batch(vec![request]);
                    }
                }
            }
        }
    }

    #[allow(clippy::type_complexity)]
    fn try_commit(
        &mut self,
        batch: &[AppendRequest],
    ) -> Result<(Vec<Planned>, HashMap<String, StreamHead>, i64, u64), StoreError> {
        let started = Instant::now();
        let path = &self.path;
        let tx = self
            .conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(|e| db_err(path, e))?;
        let mut touched: HashMap<String, StreamHead> = HashMap::new();
        let mut planned = Vec::with_capacity(batch.len());
        let mut position = self.last;
        let mut next_stream_id = self.next_stream_id;
        {
            let mut insert = tx.prepare_cached(INSERT).map_err(|e| db_err(path, e))?;
            for request in batch {
                let name = request.stream.as_str();
                let known = touched.get(name).or_else(|| self.heads.get(name)).copied();
                let actual = known.and_then(|h| h.last);
                if !request.expected.matches(actual) {
                    planned.push(Planned::Refused(StoreError::WrongExpectedVersion {
                        stream: request.stream.clone(),
                        expected: request.expected,
                        actual,
                    }));
                    continue;
                }
                let stream_id = match known {
                    Some(head) => head.id,
                    None => {
                        let id = next_stream_id;
                        next_stream_id += 1;
                        tx.prepare_cached(INSERT_STREAM)
                            .and_then(|mut s| s.execute(params![id, name]))
                            .map_err(|e| db_err(path, e))?;
                        id
                    }
                };
                let first_version = actual.map_or(0, |v| v + 1);
                let mut positions = Vec::with_capacity(request.events.len());
                for (i, event) in request.events.iter().enumerate() {
                    position += 1;
                    let m = &event.metadata;
                    insert
                        .execute(params![
                            position as i64,
                            stream_id,
                            (first_version + i as u64) as i64,
                            event.id.as_bytes().as_slice(),
                            event.event_type,
                            event.schema_version,
                            event.data,
                            m.correlation_id.as_bytes().as_slice(),
                            m.causation_id.as_ref().map(|u| u.as_bytes().as_slice()),
                            m.acting_user.as_ref().map(|u| u.as_bytes().as_slice()),
                            m.recorded_at.timestamp_nanos_opt().unwrap_or(i64::MAX),
                        ])
                        .map_err(|e| db_err(path, e))?;
                    positions.push(Position(position));
                }
                let last_version = first_version + request.events.len() as u64 - 1;
                touched.insert(
                    name.to_owned(),
                    StreamHead {
                        id: stream_id,
                        last: Some(last_version),
                    },
                );
                planned.push(Planned::Accepted(AppendResult {
                    first_version,
                    last_version,
                    positions,
                }));
            }
        }
        let committing = Instant::now();
        self.counters
            .insert_nanos
            .fetch_add((committing - started).as_nanos() as u64, Ordering::Relaxed);
        tx.commit().map_err(|e| db_err(path, e))?;
        self.counters
            .commit_nanos
            .fetch_add(committing.elapsed().as_nanos() as u64, Ordering::Relaxed);
        Ok((planned, touched, next_stream_id, position))
    }

    fn reload(&mut self) -> Result<(), StoreError> {
        let (heads, last) = load_heads(&self.path, &self.conn)?;
        self.next_stream_id = next_stream_id(&self.path, &self.conn)?;
        self.heads = heads;
        self.last = last;
        Ok(())
    }
}

fn resolve(path: &Path) -> Result<PathBuf, StoreError> {
    if path.as_os_str().is_empty() {
        return Err(StoreError::InvalidInput("store path is empty".into()));
    }
    if path.is_dir() {
        Ok(path.join(DEFAULT_FILE_NAME))
    } else {
        Ok(path.to_path_buf())
    }
}

fn lock_writer(path: &Path) -> Result<File, StoreError> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&lock_path)
        .map_err(|e| io_err(&lock_path, "open lock file", e))?;
    match fs4::FileExt::try_lock(&file) {
        Ok(()) => Ok(file),
        Err(fs4::TryLockError::WouldBlock) => Err(StoreError::Locked(format!(
            "{} is held by another writer",
            lock_path.display()
        ))),
        Err(fs4::TryLockError::Error(e)) => Err(io_err(&lock_path, "lock", e)),
    }
}

/// Refuses a file that is not a SQLite database before SQLite touches it.
fn check_header(path: &Path) -> Result<(), StoreError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(path, "open", e)),
    };
    let mut header = Vec::with_capacity(16);
    (&mut file)
        .take(16)
        .read_to_end(&mut header)
        .map_err(|e| io_err(path, "read", e))?;
    if header.is_empty() || header == b"SQLite format 3\0" {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "{} is not a SQLite database",
            path.display()
        )))
    }
}

/// Stamps a new, empty database with our schema, or checks an existing one is ours.
/// Returns the file's schema version: [`SCHEMA_VERSION`], or 1 (to be migrated).
fn init_schema(path: &Path, conn: &Connection) -> Result<i32, StoreError> {
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| db_err(path, e))?;
    let objects: i64 = conn
        .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
        .map_err(|e| db_err(path, e))?;
    if app_id == 0 && objects == 0 {
        conn.execute_batch(&format!(
            "BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; \
             PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(|e| db_err(path, e))?;
        return Ok(SCHEMA_VERSION);
    }
    check_ours(path, conn)
}

/// Checks the file is an event store of a schema version this build reads or migrates,
/// and returns that version.
fn check_ours(path: &Path, conn: &Connection) -> Result<i32, StoreError> {
    let app_id: i32 = conn
        .pragma_query_value(None, "application_id", |r| r.get(0))
        .map_err(|e| db_err(path, e))?;
    if app_id != APPLICATION_ID {
        return Err(StoreError::Corrupt(format!(
            "{} is a SQLite database but not an event store (application_id {app_id:#x})",
            path.display()
        )));
    }
    let version: i32 = conn
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(|e| db_err(path, e))?;
    if version != SCHEMA_VERSION && version != 1 {
        return Err(StoreError::Corrupt(format!(
            "{}: schema version {version}, this build reads only 1 and {SCHEMA_VERSION}",
            path.display()
        )));
    }
    Ok(version)
}

/// Upgrades a version 1 file to [`SCHEMA_VERSION`] in one transaction: a crash midway
/// leaves the version 1 file as it was.
fn migrate_from_1(path: &Path, conn: &mut Connection) -> Result<(), StoreError> {
    let started = Instant::now();
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(|e| db_err(path, e))?;
    tx.execute_batch(MIGRATE_1_TO_2)
        .and_then(|()| tx.pragma_update(None, "user_version", SCHEMA_VERSION))
        .map_err(|e| db_err(path, e))?;
    // A file that the check of the upgraded one refuses is left as it was (the
    // transaction rolls back when dropped).
    load_heads(path, &tx)?;
    tx.commit().map_err(|e| db_err(path, e))?;
    tracing::info!(
        path = %path.display(),
        from = 1,
        to = SCHEMA_VERSION,
        secs = started.elapsed().as_secs_f64(),
        "event store schema upgraded"
    );
    Ok(())
}

fn next_stream_id(path: &Path, conn: &Connection) -> Result<i64, StoreError> {
    conn.query_row(
        "SELECT coalesce(max(stream_id), 0) + 1 FROM streams",
        [],
        |r| r.get(0),
    )
    .map_err(|e| db_err(path, e))
}

fn quick_check(path: &Path, conn: &Connection) -> Result<(), StoreError> {
    let mut problems = Vec::new();
    conn.pragma_query(None, "quick_check", |r| {
        problems.push(r.get::<_, String>(0)?);
        Ok(())
    })
    .map_err(|e| db_err(path, e))?;
    if problems.len() == 1 && problems[0] == "ok" {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!(
            "{}: integrity check failed: {}",
            path.display(),
            problems.join("; ")
        )))
    }
}

/// Every stream's id and last version, checking that versions are contiguous from 0 and
/// that every event's stream exists, and the last position.
fn load_heads(
    path: &Path,
    conn: &Connection,
) -> Result<(HashMap<String, StreamHead>, u64), StoreError> {
    let mut stmt = conn
        .prepare(
            "SELECT s.name, g.stream_id, g.lo, g.hi, g.n FROM \
             (SELECT stream_id, min(version) AS lo, max(version) AS hi, count(*) AS n \
              FROM events GROUP BY stream_id) g \
             LEFT JOIN streams s ON s.stream_id = g.stream_id",
        )
        .map_err(|e| db_err(path, e))?;
    let mut rows = stmt.query([]).map_err(|e| db_err(path, e))?;
    let mut heads = HashMap::new();
    while let Some(row) = rows.next().map_err(|e| db_err(path, e))? {
        let (stream, id, min, max, count): (Option<String>, i64, i64, i64, i64) = (
            row.get(0).map_err(|e| db_err(path, e))?,
            row.get(1).map_err(|e| db_err(path, e))?,
            row.get(2).map_err(|e| db_err(path, e))?,
            row.get(3).map_err(|e| db_err(path, e))?,
            row.get(4).map_err(|e| db_err(path, e))?,
        );
        let Some(stream) = stream else {
            return Err(StoreError::Corrupt(format!(
                "{}: {count} events belong to stream id {id}, which has no name",
                path.display()
            )));
        };
        if min != 0 || max + 1 != count {
            return Err(StoreError::Corrupt(format!(
                "{}: stream {stream:?} has versions {min}..={max} in {count} events",
                path.display()
            )));
        }
        heads.insert(
            stream,
            StreamHead {
                id,
                last: Some(max as u64),
            },
        );
    }
    drop(rows);
    // A name without events is never written by this store; keep its id so that a first
    // append to it does not collide with the unique name.
    let mut stmt = conn
        .prepare("SELECT name, stream_id FROM streams")
        .map_err(|e| db_err(path, e))?;
    let mut rows = stmt.query([]).map_err(|e| db_err(path, e))?;
    while let Some(row) = rows.next().map_err(|e| db_err(path, e))? {
        let name: String = row.get(0).map_err(|e| db_err(path, e))?;
        let id: i64 = row.get(1).map_err(|e| db_err(path, e))?;
        heads.entry(name).or_insert(StreamHead { id, last: None });
    }
    let last: i64 = conn
        .query_row("SELECT coalesce(max(position), 0) FROM events", [], |r| {
            r.get(0)
        })
        .map_err(|e| db_err(path, e))?;
    Ok((heads, last as u64))
}

fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| db_err(path, e))?;
    // Up to `max_idle_readers` of these stay open, each with its own page cache; the
    // operating system's cache of the file is shared by all of them.
    conn.execute_batch("PRAGMA query_only = ON; PRAGMA cache_size = -4096;")
        .map_err(|e| db_err(path, e))?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(|e| db_err(path, e))?;
    Ok(conn)
}

fn read_all_page(
    path: &Path,
    conn: &Connection,
    after: Position,
    max: usize,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut stmt = conn
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM events e CROSS JOIN streams s \
             WHERE e.position > ?1 AND s.stream_id = e.stream_id \
             ORDER BY e.position LIMIT ?2"
        ))
        .map_err(|e| db_err(path, e))?;
    collect(
        path,
        stmt.query(params![after.0.min(i64::MAX as u64) as i64, limit(max)]),
    )
}

fn limit(max: usize) -> i64 {
    i64::try_from(max).unwrap_or(i64::MAX)
}

fn collect(
    path: &Path,
    rows: rusqlite::Result<rusqlite::Rows<'_>>,
) -> Result<Vec<RecordedEvent>, StoreError> {
    let mut rows = rows.map_err(|e| db_err(path, e))?;
    let mut events = Vec::new();
    while let Some(row) = rows.next().map_err(|e| db_err(path, e))? {
        events.push(decode(row).map_err(|e| match e {
            Decode::Sql(e) => db_err(path, e),
            Decode::Bad(what) => {
                StoreError::Corrupt(format!("{}: stored event has {what}", path.display()))
            }
        })?);
    }
    Ok(events)
}

enum Decode {
    Sql(rusqlite::Error),
    Bad(&'static str),
}

impl From<rusqlite::Error> for Decode {
    fn from(e: rusqlite::Error) -> Self {
        Self::Sql(e)
    }
}

fn decode(row: &rusqlite::Row<'_>) -> Result<RecordedEvent, Decode> {
    let uuid = |i: usize, what: &'static str| -> Result<Option<Uuid>, Decode> {
        match row.get_ref(i)? {
            rusqlite::types::ValueRef::Null => Ok(None),
            rusqlite::types::ValueRef::Blob(b) => {
                Uuid::from_slice(b).map(Some).map_err(|_| Decode::Bad(what))
            }
            _ => Err(Decode::Bad(what)),
        }
    };
    let nanos: i64 = row.get(10)?;
    Ok(RecordedEvent {
        position: Position(row.get::<_, i64>(0)? as u64),
        // Checking the name again costs tens of nanoseconds and keeps a damaged file
        // from handing out a name the port would refuse.
        stream: StreamName::new(row.get::<_, String>(1)?)
            .map_err(|_| Decode::Bad("an invalid stream name"))?,
        version: row.get::<_, i64>(2)? as u64,
        id: uuid(3, "a bad event id")?.ok_or(Decode::Bad("no event id"))?,
        event_type: row.get(4)?,
        schema_version: row.get(5)?,
        data: row.get(6)?,
        metadata: Metadata {
            correlation_id: uuid(7, "a bad correlation id")?
                .ok_or(Decode::Bad("no correlation id"))?,
            causation_id: uuid(8, "a bad causation id")?,
            acting_user: uuid(9, "a bad acting user")?,
            recorded_at: DateTime::from_timestamp_nanos(nanos),
        },
    })
}

fn db_err(path: &Path, e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode;
    match e.sqlite_error_code() {
        Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => {
            StoreError::Corrupt(format!("{}: {e}", path.display()))
        }
        Some(ErrorCode::ReadOnly) => StoreError::Unavailable(format!(
            "{}: {e} (file or directory read-only?)",
            path.display()
        )),
        _ => StoreError::Unavailable(format!("{}: {e}", path.display())),
    }
}

fn io_err(path: &Path, what: &str, e: std::io::Error) -> StoreError {
    StoreError::Unavailable(format!("{}: {what}: {e}", path.display()))
}
