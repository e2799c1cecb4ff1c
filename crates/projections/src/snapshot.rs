//! Durable snapshots of read models: one row per projection in a SQLite file beside the
//! event store, holding the model and its checkpoint in one value, so they are written
//! (and lost) together.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::ReadSideError;

/// File name of the read-model snapshots inside a data directory.
pub const SNAPSHOT_FILE_NAME: &str = "readmodels.sqlite3";

/// The snapshot file. Cheap to clone: clones share one connection.
#[derive(Clone)]
pub struct SnapshotStore {
    /// One connection; snapshots are rare and written off the async threads.
    conn: Arc<Mutex<Connection>>,
    /// Opened read-only: a process beside the server reads its snapshots, never writes.
    read_only: bool,
    /// The file, for error messages.
    path: Arc<PathBuf>,
}

impl SnapshotStore {
    /// Opens (creating if needed) the snapshot file in `dir` for reading and writing.
    pub fn open(dir: &Path) -> Result<Self, ReadSideError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            ReadSideError::Snapshot(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join(SNAPSHOT_FILE_NAME);
        let conn = Connection::open(&path).map_err(|e| err(&path, e))?;
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE IF NOT EXISTS snapshots (
                 name TEXT PRIMARY KEY,
                 version INTEGER NOT NULL,
                 position INTEGER NOT NULL,
                 data BLOB NOT NULL
             );",
        )
        .map_err(|e| err(&path, e))?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            read_only: false,
            path: Arc::new(path),
        })
    }

    /// Opens the snapshot file in `dir` read-only, or `None` when there is none yet.
    pub fn open_read_only(dir: &Path) -> Result<Option<Self>, ReadSideError> {
        let path = dir.join(SNAPSHOT_FILE_NAME);
        if !path.is_file() {
            return Ok(None);
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(|e| err(&path, e))?;
        Ok(Some(Self {
            conn: Arc::new(Mutex::new(conn)),
            read_only: true,
            path: Arc::new(path),
        }))
    }

    /// Whether this store refuses writes.
    pub fn is_read_only(&self) -> bool {
        self.read_only
    }

    /// Replaces the snapshot of `name` with `value` (a model with its checkpoint).
    pub(crate) fn save<T: Serialize + HasCheckpoint>(
        &self,
        name: &str,
        version: u32,
        value: &T,
    ) -> Result<(), ReadSideError> {
        if self.read_only {
            return Ok(());
        }
        let data = serde_json::to_vec(value)
            .map_err(|e| ReadSideError::Snapshot(format!("cannot encode {name}: {e}")))?;
        let position = i64::try_from(value.checkpoint().0)
            .map_err(|_| ReadSideError::Snapshot(format!("{name}: position out of range")))?;
        let conn = self.conn.lock();
        conn.execute(
            "INSERT INTO snapshots (name, version, position, data) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT(name) DO UPDATE SET version = ?2, position = ?3, data = ?4",
            params![name, version, position, data],
        )
        .map_err(|e| err(&self.path, e))?;
        Ok(())
    }

    /// The snapshot of `name`, if there is one of this `version`.
    pub(crate) fn load<T: DeserializeOwned>(
        &self,
        name: &str,
        version: u32,
    ) -> Result<Option<T>, ReadSideError> {
        let row: Option<(u32, Vec<u8>)> = self
            .conn
            .lock()
            .query_row(
                "SELECT version, data FROM snapshots WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .optional()
            .map_err(|e| err(&self.path, e))?;
        match row {
            Some((v, data)) if v == version => {
                serde_json::from_slice(&data).map(Some).map_err(|e| {
                    ReadSideError::Snapshot(format!("snapshot of {name} unreadable: {e}"))
                })
            }
            _ => Ok(None),
        }
    }

    /// The raw JSON of the snapshot of `name`, for tools that inspect or repair it.
    #[doc(hidden)]
    pub fn raw(&self, name: &str) -> Result<Option<Vec<u8>>, ReadSideError> {
        self.conn
            .lock()
            .query_row(
                "SELECT data FROM snapshots WHERE name = ?1",
                params![name],
                |r| r.get(0),
            )
            .optional()
            .map_err(|e| err(&self.path, e))
    }

    /// Overwrites the raw JSON of the snapshot of `name` (tests damage snapshots with it).
    #[doc(hidden)]
    pub fn put_raw(&self, name: &str, data: &[u8]) -> Result<(), ReadSideError> {
        self.conn
            .lock()
            .execute(
                "UPDATE snapshots SET data = ?2 WHERE name = ?1",
                params![name, data],
            )
            .map_err(|e| err(&self.path, e))?;
        Ok(())
    }

    /// Forgets the snapshot of `name`.
    pub(crate) fn delete(&self, name: &str) -> Result<(), ReadSideError> {
        if self.read_only {
            return Ok(());
        }
        self.conn
            .lock()
            .execute("DELETE FROM snapshots WHERE name = ?1", params![name])
            .map_err(|e| err(&self.path, e))?;
        Ok(())
    }
}

/// A value that carries the checkpoint it was folded up to.
pub(crate) trait HasCheckpoint {
    fn checkpoint(&self) -> store::Position;
}

impl<M> HasCheckpoint for crate::runner::Versioned<M> {
    fn checkpoint(&self) -> store::Position {
        self.checkpoint
    }
}

fn err(path: &Path, e: rusqlite::Error) -> ReadSideError {
    ReadSideError::Snapshot(format!("{}: {e}", path.display()))
}
