//! The simulated provider's durable books: a SQLite file that keeps every answered charge
//! and every refund, so that a provider reopened after a crash still charges an order at
//! most once and refunds a charge at most once.
//!
//! * **Written before answered.** A charge is inserted before its outcome is returned, a
//!   settlement updated before its webhook is sent, a refund inserted before it is
//!   answered. The file is in WAL mode with `synchronous = NORMAL`: a committed row
//!   survives the process crashing at any point; a power loss may lose the last few.
//!   The log is copied into the file every 8,192 pages (32 MiB) rather than SQLite's
//!   1,000: during a sale the same index pages are rewritten by every batch, and each
//!   copy is made once per checkpoint, not once per commit.
//! * **The database arbitrates.** `order_id` is unique among charges and `charge_id` among
//!   refunds, and rows are inserted with `ON CONFLICT DO NOTHING`: even a second provider
//!   on the same file cannot charge an order or refund a charge twice; the loser reads the
//!   winner's row back and answers with it.
//! * **Ours, and whole.** The file must be a SQLite database stamped with our
//!   `application_id` and schema version (or a new, empty one); at open it passes
//!   `PRAGMA quick_check` and every row is checked as it is loaded. Anything else is a
//!   [`LedgerError`], never a guess.

use std::fs::File;
use std::io::Read as _;
use std::path::{Path, PathBuf};

use rusqlite::{Connection, OptionalExtension as _, params};
use uuid::Uuid;

use crate::port::{ChargeOutcome, DeclineReason, RefundReason};
use crate::simulator::{Books, ChargeRecord, ChargeStatus, RefundRecord};
use std::sync::Arc;

/// `application_id` stamped into our files ("TPAY"), so that any other SQLite database is
/// refused instead of being written to.
const APPLICATION_ID: i32 = 0x5450_4159;

/// Schema version in `user_version`; bump it with a migration when the schema changes.
const SCHEMA_VERSION: i32 = 1;

const SCHEMA: &str = "
CREATE TABLE charges (
    seq INTEGER PRIMARY KEY,
    charge_id TEXT NOT NULL UNIQUE,
    order_id TEXT NOT NULL UNIQUE,
    idempotency_key TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    token TEXT NOT NULL,
    answer TEXT NOT NULL,
    status TEXT NOT NULL,
    decline_reason TEXT
) STRICT;
CREATE TABLE refunds (
    seq INTEGER PRIMARY KEY,
    refund_id TEXT NOT NULL UNIQUE,
    charge_id TEXT NOT NULL UNIQUE REFERENCES charges (charge_id),
    order_id TEXT NOT NULL,
    amount_minor INTEGER NOT NULL,
    currency TEXT NOT NULL,
    reason TEXT NOT NULL
) STRICT;
";

const CHARGE_COLUMNS: &str = "charge_id, order_id, idempotency_key, amount_minor, currency, \
                              token, answer, status, decline_reason";

const REFUND_COLUMNS: &str = "refund_id, charge_id, order_id, amount_minor, currency, reason";

/// Why a durable ledger could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The file could not be opened or read (permissions, a directory, a full disk).
    #[error("cannot open the payment ledger {}: {reason}", .path.display())]
    Io {
        /// The ledger file.
        path: PathBuf,
        /// What the operating system or SQLite said.
        reason: String,
    },
    /// The file is not a payment ledger: not a SQLite database, or another application's.
    #[error("{} is not a payment ledger: {reason}", .path.display())]
    NotALedger {
        /// The file.
        path: PathBuf,
        /// What it is instead.
        reason: String,
    },
    /// A ledger written by another version of this software.
    #[error(
        "the payment ledger {} has schema version {found}; this build reads only version {supported}",
        .path.display()
    )]
    UnsupportedVersion {
        /// The ledger file.
        path: PathBuf,
        /// Its schema version.
        found: i32,
        /// The one this build reads.
        supported: i32,
    },
    /// The ledger fails SQLite's integrity check, or holds a row that cannot be right.
    #[error("the payment ledger {} is damaged: {detail}", .path.display())]
    Damaged {
        /// The ledger file.
        path: PathBuf,
        /// What is wrong, naming the row where there is one.
        detail: String,
    },
    /// Opened outside a Tokio runtime: charges left pending must resume settling on it.
    #[error("the payment ledger must be opened inside a Tokio runtime")]
    NoRuntime,
}

impl LedgerError {
    /// The stable machine code of this error.
    pub fn code(&self) -> &'static str {
        match self {
            LedgerError::Io { .. } => "LEDGER_IO",
            LedgerError::NotALedger { .. } => "LEDGER_NOT_A_LEDGER",
            LedgerError::UnsupportedVersion { .. } => "LEDGER_UNSUPPORTED_VERSION",
            LedgerError::Damaged { .. } => "LEDGER_DAMAGED",
            LedgerError::NoRuntime => "LEDGER_NO_RUNTIME",
        }
    }
}

/// What the charge call answered first (which is what every retry answers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Answer {
    Succeeded,
    Declined,
    Pending,
}

impl Answer {
    pub(crate) fn of(outcome: &ChargeOutcome) -> Self {
        match outcome {
            ChargeOutcome::Succeeded { .. } => Answer::Succeeded,
            ChargeOutcome::Declined { .. } => Answer::Declined,
            ChargeOutcome::Pending { .. } => Answer::Pending,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Answer::Succeeded => "succeeded",
            Answer::Declined => "declined",
            Answer::Pending => "pending",
        }
    }

    fn parse(text: &str) -> Option<Self> {
        [Answer::Succeeded, Answer::Declined, Answer::Pending]
            .into_iter()
            .find(|a| a.as_str() == text)
    }
}

/// A charge as the ledger keeps it: the record, and what is needed to answer a retry.
#[derive(Debug, Clone)]
pub(crate) struct StoredCharge {
    pub(crate) record: ChargeRecord,
    /// The idempotency key the charge was made with; a retry must repeat it.
    pub(crate) idempotency_key: String,
    /// What the charge call answered.
    pub(crate) answer: Answer,
}

impl StoredCharge {
    /// The outcome the first call answered, which every retry answers too.
    pub(crate) fn outcome(&self) -> ChargeOutcome {
        let charge_id = self.record.charge_id.clone();
        match (self.answer, self.record.status) {
            (Answer::Succeeded, _) => ChargeOutcome::Succeeded { charge_id },
            (Answer::Pending, _) => ChargeOutcome::Pending { charge_id },
            (Answer::Declined, ChargeStatus::Declined(reason)) => {
                ChargeOutcome::Declined { reason }
            }
            // Refused when loaded, and never written.
            (Answer::Declined, _) => ChargeOutcome::Declined {
                reason: DeclineReason::CardDeclined,
            },
        }
    }
}

/// Whether an insert made the row, or found the one already there.
#[derive(Debug)]
pub(crate) enum Inserted<T> {
    New,
    Existing(T),
}

/// An open ledger file.
pub(crate) struct Journal {
    /// The file, for error messages.
    path: PathBuf,
    /// The one connection; callers serialise on the provider's books lock.
    conn: Connection,
}

/// A write to the ledger failed; the caller answers `PaymentError::Unavailable`.
#[derive(Debug)]
pub(crate) struct WriteError(pub(crate) String);

impl Journal {
    /// Opens (creating if absent) the ledger at `path` and loads everything in it.
    pub(crate) fn open(
        path: &Path,
    ) -> Result<(Self, Vec<StoredCharge>, Vec<RefundRecord>), LedgerError> {
        check_header(path)?;
        let io = |e: rusqlite::Error| LedgerError::Io {
            path: path.to_owned(),
            reason: e.to_string(),
        };
        let conn = Connection::open(path).map_err(io)?;
        let journal = Self {
            path: path.to_owned(),
            conn,
        };
        journal.init_schema()?;
        journal
            .conn
            .execute_batch(
                "PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
                 PRAGMA foreign_keys = ON; PRAGMA busy_timeout = 5000; \
                 PRAGMA wal_autocheckpoint = 8192;",
            )
            .map_err(|e| journal.classify(e))?;
        journal.quick_check()?;
        let charges = journal.load_charges()?;
        let refunds = journal.load_refunds(&charges)?;
        Ok((journal, charges, refunds))
    }

    /// A SQLite error met while opening: damage when SQLite says so, otherwise IO.
    fn classify(&self, error: rusqlite::Error) -> LedgerError {
        let path = self.path.clone();
        match error.sqlite_error_code() {
            Some(rusqlite::ErrorCode::NotADatabase) => LedgerError::NotALedger {
                path,
                reason: "not a SQLite database".to_owned(),
            },
            Some(rusqlite::ErrorCode::DatabaseCorrupt) => LedgerError::Damaged {
                path,
                detail: error.to_string(),
            },
            _ => LedgerError::Io {
                path,
                reason: error.to_string(),
            },
        }
    }

    fn damaged(&self, detail: impl Into<String>) -> LedgerError {
        LedgerError::Damaged {
            path: self.path.clone(),
            detail: detail.into(),
        }
    }

    /// Stamps a new, empty database with our schema, or checks an existing one is ours.
    fn init_schema(&self) -> Result<(), LedgerError> {
        let conn = &self.conn;
        let app_id: i32 = conn
            .pragma_query_value(None, "application_id", |r| r.get(0))
            .map_err(|e| self.classify(e))?;
        let objects: i64 = conn
            .query_row("SELECT count(*) FROM sqlite_schema", [], |r| r.get(0))
            .map_err(|e| self.classify(e))?;
        if app_id == 0 && objects == 0 {
            return conn
                .execute_batch(&format!(
                    "BEGIN IMMEDIATE; {SCHEMA} PRAGMA application_id = {APPLICATION_ID}; \
                     PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
                ))
                .map_err(|e| self.classify(e));
        }
        if app_id != APPLICATION_ID {
            return Err(LedgerError::NotALedger {
                path: self.path.clone(),
                reason: format!(
                    "a SQLite database of another application (application_id {app_id:#x})"
                ),
            });
        }
        let version: i32 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| self.classify(e))?;
        if version != SCHEMA_VERSION {
            return Err(LedgerError::UnsupportedVersion {
                path: self.path.clone(),
                found: version,
                supported: SCHEMA_VERSION,
            });
        }
        Ok(())
    }

    fn quick_check(&self) -> Result<(), LedgerError> {
        let mut problems = Vec::new();
        self.conn
            .pragma_query(None, "quick_check", |r| {
                problems.push(r.get::<_, String>(0)?);
                Ok(())
            })
            .map_err(|e| self.classify(e))?;
        if problems.len() == 1 && problems[0] == "ok" {
            Ok(())
        } else {
            Err(self.damaged(format!("integrity check failed: {}", problems.join("; "))))
        }
    }

    fn load_charges(&self) -> Result<Vec<StoredCharge>, LedgerError> {
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT seq, {CHARGE_COLUMNS} FROM charges ORDER BY seq"
            ))
            .map_err(|e| self.classify(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, i64>(0)?, RawCharge::from_row(row, 1)?))
            })
            .map_err(|e| self.classify(e))?;
        let mut charges = Vec::new();
        for row in rows {
            let (seq, raw) = row.map_err(|e| self.classify(e))?;
            let charge = raw
                .check()
                .map_err(|detail| self.damaged(format!("charge row {seq}: {detail}")))?;
            charges.push(charge);
        }
        Ok(charges)
    }

    fn load_refunds(&self, charges: &[StoredCharge]) -> Result<Vec<RefundRecord>, LedgerError> {
        let charged: std::collections::HashMap<&str, &ChargeRecord> = charges
            .iter()
            .map(|c| (c.record.charge_id.as_str(), &c.record))
            .collect();
        let mut statement = self
            .conn
            .prepare(&format!(
                "SELECT seq, {REFUND_COLUMNS} FROM refunds ORDER BY seq"
            ))
            .map_err(|e| self.classify(e))?;
        let rows = statement
            .query_map([], |row| {
                Ok((row.get::<_, i64>(0)?, RawRefund::from_row(row, 1)?))
            })
            .map_err(|e| self.classify(e))?;
        let mut refunds = Vec::new();
        for row in rows {
            let (seq, raw) = row.map_err(|e| self.classify(e))?;
            let refund =
                raw.check()
                    .and_then(|refund| {
                        let charge = charged
                            .get(refund.charge_id.as_str())
                            .ok_or("it refunds a charge the ledger does not hold")?;
                        if charge.status != ChargeStatus::Succeeded {
                            return Err("it refunds a charge that took no money".to_owned());
                        }
                        if (
                            charge.order_id,
                            charge.amount_minor,
                            charge.currency.as_str(),
                        ) != (
                            refund.order_id,
                            refund.amount_minor,
                            refund.currency.as_str(),
                        ) {
                            return Err("its order, amount or currency differs from its charge's"
                                .to_owned());
                        }
                        Ok(refund)
                    })
                    .map_err(|detail| self.damaged(format!("refund row {seq}: {detail}")))?;
            refunds.push(refund);
        }
        Ok(refunds)
    }

    /// Records a charge, unless its order already has one: then returns that one.
    pub(crate) fn insert_charge(
        &mut self,
        record: &ChargeRecord,
        idempotency_key: &str,
        answer: Answer,
    ) -> Result<Inserted<StoredCharge>, WriteError> {
        let (status, decline_reason) = status_columns(record.status);
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO charges (charge_id, order_id, idempotency_key, amount_minor, \
                 currency, token, answer, status, decline_reason) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) ON CONFLICT (order_id) DO NOTHING",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    record.charge_id,
                    record.order_id.to_string(),
                    idempotency_key,
                    amount_to_sql(record.amount_minor),
                    record.currency,
                    record.token,
                    answer.as_str(),
                    status,
                    decline_reason,
                ])
            })
            .map_err(|e| self.write_error("recording a charge", e))?;
        if inserted == 1 {
            return Ok(Inserted::New);
        }
        let existing = self
            .conn
            .query_row(
                &format!("SELECT {CHARGE_COLUMNS} FROM charges WHERE order_id = ?1"),
                [record.order_id.to_string()],
                |row| RawCharge::from_row(row, 0),
            )
            .optional()
            .map_err(|e| self.write_error("reading a charge", e))?
            .ok_or_else(|| WriteError("a charge conflicted with a row that is gone".into()))?;
        existing
            .check()
            .map(Inserted::Existing)
            .map_err(|detail| WriteError(format!("the ledger holds a damaged charge: {detail}")))
    }

    /// Records where a pending charge now stands.
    pub(crate) fn settle_charge(
        &mut self,
        charge_id: &str,
        status: ChargeStatus,
    ) -> Result<(), WriteError> {
        let (status, decline_reason) = status_columns(status);
        self.conn
            .prepare_cached(
                "UPDATE charges SET status = ?1, decline_reason = ?2 WHERE charge_id = ?3",
            )
            .and_then(|mut statement| statement.execute(params![status, decline_reason, charge_id]))
            .map_err(|e| self.write_error("settling a charge", e))?;
        Ok(())
    }

    /// Records a refund, unless its charge already has one: then returns that one.
    pub(crate) fn insert_refund(
        &mut self,
        record: &RefundRecord,
    ) -> Result<Inserted<RefundRecord>, WriteError> {
        let inserted = self
            .conn
            .prepare_cached(
                "INSERT INTO refunds (refund_id, charge_id, order_id, amount_minor, currency, \
                 reason) VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (charge_id) DO NOTHING",
            )
            .and_then(|mut statement| {
                statement.execute(params![
                    record.refund_id,
                    record.charge_id,
                    record.order_id.to_string(),
                    amount_to_sql(record.amount_minor),
                    record.currency,
                    refund_reason_str(record.reason),
                ])
            })
            .map_err(|e| self.write_error("recording a refund", e))?;
        if inserted == 1 {
            return Ok(Inserted::New);
        }
        let existing = self
            .conn
            .query_row(
                &format!("SELECT {REFUND_COLUMNS} FROM refunds WHERE charge_id = ?1"),
                [&record.charge_id],
                |row| RawRefund::from_row(row, 0),
            )
            .optional()
            .map_err(|e| self.write_error("reading a refund", e))?
            .ok_or_else(|| WriteError("a refund conflicted with a row that is gone".into()))?;
        existing
            .check()
            .map(Inserted::Existing)
            .map_err(|detail| WriteError(format!("the ledger holds a damaged refund: {detail}")))
    }

    fn write_error(&self, doing: &str, error: rusqlite::Error) -> WriteError {
        tracing::error!(path = %self.path.display(), %error, "payment ledger: {doing} failed");
        WriteError(format!("the ledger could not be written ({doing})"))
    }
}

/// A write the ledger's writer thread makes, with where its answer goes.
enum Write {
    Charge {
        record: ChargeRecord,
        idempotency_key: String,
        answer: Answer,
        reply: tokio::sync::oneshot::Sender<Result<Inserted<StoredCharge>, WriteError>>,
    },
    Settle {
        charge_id: String,
        status: ChargeStatus,
        reply: tokio::sync::oneshot::Sender<Result<(), WriteError>>,
    },
    Refund {
        record: RefundRecord,
        reply: tokio::sync::oneshot::Sender<Result<Inserted<RefundRecord>, WriteError>>,
    },
}

/// Most writes one commit takes.
const MAX_WRITES_PER_COMMIT: usize = 1024;

/// The ledger's writer: writes queued from every caller are committed together (group
/// commit), one transaction per batch, on tokio's blocking pool, never on a runtime worker.
/// A caller's write is answered only once its commit is done, so "written before answered"
/// still holds; a busy sale shares one commit among hundreds of charges.
#[derive(Clone)]
pub(crate) struct JournalWriter {
    writes: tokio::sync::mpsc::UnboundedSender<Write>,
}

impl JournalWriter {
    /// Starts the committer on an open ledger (inside a Tokio runtime). Once a commit is
    /// done, the committer makes its entries in `books` too, in commit order, before
    /// answering: the books in memory are always the file's, in the file's order.
    pub(crate) fn spawn(journal: Journal, books: Arc<parking_lot::Mutex<Books>>) -> Self {
        let (writes, incoming) = tokio::sync::mpsc::unbounded_channel::<Write>();
        tokio::spawn(run_committer(
            Arc::new(parking_lot::Mutex::new(journal)),
            books,
            incoming,
        ));
        Self { writes }
    }

    /// Records a charge, unless its order already has one: then returns that one.
    pub(crate) async fn insert_charge(
        &self,
        record: ChargeRecord,
        idempotency_key: String,
        answer: Answer,
    ) -> Result<Inserted<StoredCharge>, WriteError> {
        let (reply, answered) = tokio::sync::oneshot::channel();
        self.send(Write::Charge {
            record,
            idempotency_key,
            answer,
            reply,
        })?;
        answered.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Records where a pending charge now stands.
    pub(crate) async fn settle_charge(
        &self,
        charge_id: String,
        status: ChargeStatus,
    ) -> Result<(), WriteError> {
        let (reply, answered) = tokio::sync::oneshot::channel();
        self.send(Write::Settle {
            charge_id,
            status,
            reply,
        })?;
        answered.await.unwrap_or_else(|_| Err(gone()))
    }

    /// Records a refund, unless its charge already has one: then returns that one.
    pub(crate) async fn insert_refund(
        &self,
        record: RefundRecord,
    ) -> Result<Inserted<RefundRecord>, WriteError> {
        let (reply, answered) = tokio::sync::oneshot::channel();
        self.send(Write::Refund { record, reply })?;
        answered.await.unwrap_or_else(|_| Err(gone()))
    }

    fn send(&self, write: Write) -> Result<(), WriteError> {
        self.writes.send(write).map_err(|_| gone())
    }
}

fn gone() -> WriteError {
    WriteError("the ledger's writer has stopped".into())
}

/// The committer: takes every write queued, makes them in one transaction on the blocking
/// pool, commits, enters them in the books, then answers each. A failed commit answers
/// every write of its batch with the error (none of them is in the file). Ends when every
/// handle is dropped and the queue is drained.
async fn run_committer(
    journal: Arc<parking_lot::Mutex<Journal>>,
    books: Arc<parking_lot::Mutex<Books>>,
    mut incoming: tokio::sync::mpsc::UnboundedReceiver<Write>,
) {
    while let Some(first) = incoming.recv().await {
        let mut batch = vec![first];
        while batch.len() < MAX_WRITES_PER_COMMIT {
            match incoming.try_recv() {
                Ok(write) => batch.push(write),
                Err(_) => break,
            }
        }
        let journal = Arc::clone(&journal);
        let books = Arc::clone(&books);
        let committed =
            tokio::task::spawn_blocking(move || commit(&mut journal.lock(), &books, batch)).await;
        match committed {
            Ok(answers) => {
                for answer in answers {
                    answer.send();
                }
            }
            // The batch's replies were dropped with it: their callers see the writer gone.
            Err(error) => tracing::error!(%error, "payment ledger: a commit task failed"),
        }
    }
}

/// Makes a batch of writes in one transaction; what each answers.
fn commit(
    journal: &mut Journal,
    books: &parking_lot::Mutex<Books>,
    batch: Vec<Write>,
) -> Vec<Made> {
    if let Err(e) = journal.conn.execute_batch("BEGIN IMMEDIATE") {
        let error = journal.write_error("starting a transaction", e);
        return batch
            .into_iter()
            .map(|write| write.failed(&error))
            .collect();
    }
    let mut answers: Vec<Made> = batch
        .into_iter()
        .map(|write| journal.apply(write))
        .collect();
    match journal.conn.execute_batch("COMMIT") {
        Ok(()) => {
            let mut books = books.lock();
            for answer in &answers {
                answer.enter(&mut books);
            }
        }
        Err(e) => {
            let error = journal.write_error("committing", e);
            let _ = journal.conn.execute_batch("ROLLBACK");
            for answer in &mut answers {
                answer.fail(&error);
            }
        }
    }
    answers
}

/// A write made in the open transaction, waiting for its commit to be answered.
enum Made {
    Charge(
        tokio::sync::oneshot::Sender<Result<Inserted<StoredCharge>, WriteError>>,
        ChargeRecord,
        Result<Inserted<StoredCharge>, WriteError>,
    ),
    Settle(
        tokio::sync::oneshot::Sender<Result<(), WriteError>>,
        (String, ChargeStatus),
        Result<(), WriteError>,
    ),
    Refund(
        tokio::sync::oneshot::Sender<Result<Inserted<RefundRecord>, WriteError>>,
        RefundRecord,
        Result<Inserted<RefundRecord>, WriteError>,
    ),
}

impl Made {
    /// Makes a committed entry in the books in memory (what was there first stays).
    fn enter(&self, books: &mut Books) {
        match self {
            Made::Charge(_, record, Ok(inserted)) => {
                let record = match inserted {
                    Inserted::New => record,
                    Inserted::Existing(first) => &first.record,
                };
                if books.charge(&record.charge_id).is_none() {
                    books.add_charge(record.clone());
                }
            }
            Made::Settle(_, (charge_id, status), Ok(())) => {
                if let Some(charge) = books.charge_mut(charge_id) {
                    charge.status = *status;
                }
            }
            Made::Refund(_, record, Ok(inserted)) => {
                let record = match inserted {
                    Inserted::New => record,
                    Inserted::Existing(first) => first,
                };
                if books.refund_of(&record.charge_id).is_none() {
                    books.add_refund(record.clone());
                }
            }
            _ => {}
        }
    }

    fn send(self) {
        // A caller that gave up finds its write in the file at its next call.
        match self {
            Made::Charge(reply, _, result) => drop(reply.send(result)),
            Made::Settle(reply, _, result) => drop(reply.send(result)),
            Made::Refund(reply, _, result) => drop(reply.send(result)),
        }
    }

    /// Replaces what this write answers with `error` (its commit failed).
    fn fail(&mut self, error: &WriteError) {
        let error = WriteError(error.0.clone());
        match self {
            Made::Charge(_, _, result) => *result = Err(error),
            Made::Settle(_, _, result) => *result = Err(error),
            Made::Refund(_, _, result) => *result = Err(error),
        }
    }
}

impl Write {
    /// This write, not made: it answers `error`.
    fn failed(self, error: &WriteError) -> Made {
        let error = WriteError(error.0.clone());
        match self {
            Write::Charge { record, reply, .. } => Made::Charge(reply, record, Err(error)),
            Write::Settle {
                charge_id,
                status,
                reply,
            } => Made::Settle(reply, (charge_id, status), Err(error)),
            Write::Refund { record, reply } => Made::Refund(reply, record, Err(error)),
        }
    }
}

impl Journal {
    fn apply(&mut self, write: Write) -> Made {
        match write {
            Write::Charge {
                record,
                idempotency_key,
                answer,
                reply,
            } => {
                let made = self.insert_charge(&record, &idempotency_key, answer);
                Made::Charge(reply, record, made)
            }
            Write::Settle {
                charge_id,
                status,
                reply,
            } => {
                let made = self.settle_charge(&charge_id, status);
                Made::Settle(reply, (charge_id, status), made)
            }
            Write::Refund { record, reply } => {
                let made = self.insert_refund(&record);
                Made::Refund(reply, record, made)
            }
        }
    }
}

/// Refuses a file that is not a SQLite database before SQLite touches it (SQLite would
/// otherwise report it only at the first statement, or treat a short file as empty).
fn check_header(path: &Path) -> Result<(), LedgerError> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => {
            return Err(LedgerError::Io {
                path: path.to_owned(),
                reason: e.to_string(),
            });
        }
    };
    let mut header = Vec::with_capacity(16);
    (&mut file)
        .take(16)
        .read_to_end(&mut header)
        .map_err(|e| LedgerError::Io {
            path: path.to_owned(),
            reason: e.to_string(),
        })?;
    if header.is_empty() || header == b"SQLite format 3\0" {
        Ok(())
    } else {
        Err(LedgerError::NotALedger {
            path: path.to_owned(),
            reason: "not a SQLite database".to_owned(),
        })
    }
}

/// Amounts are `u64`; SQLite integers are `i64`. The same 64 bits are stored, so every
/// amount round-trips (amounts above `i64::MAX` read as negative in the SQLite shell).
fn amount_to_sql(amount: u64) -> i64 {
    i64::from_ne_bytes(amount.to_ne_bytes())
}

fn amount_from_sql(amount: i64) -> u64 {
    u64::from_ne_bytes(amount.to_ne_bytes())
}

fn status_columns(status: ChargeStatus) -> (&'static str, Option<&'static str>) {
    match status {
        ChargeStatus::Pending => ("pending", None),
        ChargeStatus::Succeeded => ("succeeded", None),
        ChargeStatus::Declined(reason) => ("declined", Some(reason.code())),
    }
}

fn decline_reason(code: &str) -> Option<DeclineReason> {
    [
        DeclineReason::CardDeclined,
        DeclineReason::InsufficientFunds,
        DeclineReason::ExpiredCard,
    ]
    .into_iter()
    .find(|r| r.code() == code)
}

const REFUND_REASONS: [RefundReason; 4] = [
    RefundReason::HoldExpired,
    RefundReason::OrderCancelled,
    RefundReason::EventCancelled,
    RefundReason::Duplicate,
];

fn refund_reason_str(reason: RefundReason) -> &'static str {
    match reason {
        RefundReason::HoldExpired => "hold_expired",
        RefundReason::OrderCancelled => "order_cancelled",
        RefundReason::EventCancelled => "event_cancelled",
        RefundReason::Duplicate => "duplicate",
    }
}

/// A charge row as read, before it is checked.
struct RawCharge {
    charge_id: String,
    order_id: String,
    idempotency_key: String,
    amount_minor: i64,
    currency: String,
    token: String,
    answer: String,
    status: String,
    decline_reason: Option<String>,
}

impl RawCharge {
    fn from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            charge_id: row.get(first)?,
            order_id: row.get(first + 1)?,
            idempotency_key: row.get(first + 2)?,
            amount_minor: row.get(first + 3)?,
            currency: row.get(first + 4)?,
            token: row.get(first + 5)?,
            answer: row.get(first + 6)?,
            status: row.get(first + 7)?,
            decline_reason: row.get(first + 8)?,
        })
    }

    /// The charge, if the row is one the provider could have written.
    fn check(self) -> Result<StoredCharge, String> {
        let order_id = Uuid::parse_str(&self.order_id)
            .map_err(|_| format!("order id {:?} is not a UUID", self.order_id))?;
        let status = match (self.status.as_str(), self.decline_reason.as_deref()) {
            ("pending", None) => ChargeStatus::Pending,
            ("succeeded", None) => ChargeStatus::Succeeded,
            ("declined", Some(code)) => ChargeStatus::Declined(
                decline_reason(code).ok_or_else(|| format!("unknown decline reason {code:?}"))?,
            ),
            (status, reason) => {
                return Err(format!(
                    "status {status:?} with decline reason {reason:?} is not a charge state"
                ));
            }
        };
        let answer = Answer::parse(&self.answer)
            .ok_or_else(|| format!("unknown answer {:?}", self.answer))?;
        let consistent = match answer {
            Answer::Succeeded => status == ChargeStatus::Succeeded,
            Answer::Declined => matches!(status, ChargeStatus::Declined(_)),
            Answer::Pending => true,
        };
        if !consistent {
            return Err(format!(
                "answered {} but stands {}",
                answer.as_str(),
                self.status
            ));
        }
        let record = ChargeRecord {
            charge_id: self.charge_id,
            order_id,
            amount_minor: amount_from_sql(self.amount_minor),
            currency: self.currency,
            token: self.token,
            status,
        };
        let stored = StoredCharge {
            record,
            idempotency_key: self.idempotency_key,
            answer,
        };
        // The row must be a request the provider accepts, answered as its token answers.
        crate::simulator::check_stored(&stored)?;
        Ok(stored)
    }
}

/// A refund row as read, before it is checked.
struct RawRefund {
    refund_id: String,
    charge_id: String,
    order_id: String,
    amount_minor: i64,
    currency: String,
    reason: String,
}

impl RawRefund {
    fn from_row(row: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<Self> {
        Ok(Self {
            refund_id: row.get(first)?,
            charge_id: row.get(first + 1)?,
            order_id: row.get(first + 2)?,
            amount_minor: row.get(first + 3)?,
            currency: row.get(first + 4)?,
            reason: row.get(first + 5)?,
        })
    }

    fn check(self) -> Result<RefundRecord, String> {
        let order_id = Uuid::parse_str(&self.order_id)
            .map_err(|_| format!("order id {:?} is not a UUID", self.order_id))?;
        let reason = REFUND_REASONS
            .into_iter()
            .find(|r| refund_reason_str(*r) == self.reason)
            .ok_or_else(|| format!("unknown refund reason {:?}", self.reason))?;
        Ok(RefundRecord {
            refund_id: self.refund_id,
            charge_id: self.charge_id,
            order_id,
            amount_minor: amount_from_sql(self.amount_minor),
            currency: self.currency,
            reason,
        })
    }
}
