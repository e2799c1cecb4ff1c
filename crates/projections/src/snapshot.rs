//! Durable snapshots of read models: one row per projection in a SQLite file beside the
//! event store, holding the model and its checkpoint in one value, so they are written
//! (and lost) together.
//!
//! Each row carries a SHA-256 checksum of its name, version, checkpoint and data: a
//! snapshot that was edited or damaged is refused at load, and its model rebuilt from the
//! store, instead of serving wrong counts until someone runs an audit. A file SQLite
//! cannot read (damaged pages, truncation, not a database) is moved aside as
//! `readmodels.sqlite3.damaged` and replaced by a fresh one, so that every later start
//! does not rebuild from zero again and every snapshot write does not fail.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;
use rusqlite::{Connection, MAIN_DB, OpenFlags, OptionalExtension, params};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::ReadSideError;

/// File name of the read-model snapshots inside a data directory.
pub const SNAPSHOT_FILE_NAME: &str = "readmodels.sqlite3";

/// Suffix of a snapshot file set aside because it could not be read.
pub const DAMAGED_SUFFIX: &str = ".damaged";

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
    /// Opens (creating if needed) the snapshot file in `dir` for reading and writing. A file
    /// that cannot be read is set aside and replaced by an empty one (its models are
    /// rebuilt from the store).
    pub fn open(dir: &Path) -> Result<Self, ReadSideError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            ReadSideError::Snapshot(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join(SNAPSHOT_FILE_NAME);
        let conn = match open_checked(&path) {
            Ok(conn) => conn,
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "snapshot file unreadable; setting it aside and starting a new one");
                set_aside(&path)?;
                open_checked(&path).map_err(|e| err(&path, e))?
            }
        };
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
            read_only: false,
            path: Arc::new(path),
        })
    }

    /// Opens the snapshot file in `dir` read-only, or `None` when there is none yet (or it
    /// cannot be read: the models are then rebuilt from the store, and the file is left
    /// for the server to replace).
    pub fn open_read_only(dir: &Path) -> Result<Option<Self>, ReadSideError> {
        let path = dir.join(SNAPSHOT_FILE_NAME);
        if !path.is_file() {
            return Ok(None);
        }
        let opened = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .and_then(|conn| integrity_check(&conn).map(|()| conn));
        match opened {
            Ok(conn) => Ok(Some(Self {
                conn: Arc::new(Mutex::new(conn)),
                read_only: true,
                path: Arc::new(path),
            })),
            Err(error) => {
                tracing::warn!(file = %path.display(), %error, "snapshot file unreadable; rebuilding from the store");
                Ok(None)
            }
        }
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
        let position = i64::try_from(value.checkpoint().0)
            .map_err(|_| ReadSideError::Snapshot(format!("{name}: position out of range")))?;
        let encode =
            |e: serde_json::Error| ReadSideError::Snapshot(format!("cannot encode {name}: {e}"));
        // The model is encoded twice and never held whole in memory: once to learn its
        // length and checksum, then straight into a blob of that length in its row. A model
        // of 100,000 orders is tens of MiB of JSON; a buffer of it (and SQLite's copy of
        // the buffer) would double the server's memory at every snapshot.
        let mut sizing = Digesting::new(name, version, position, std::io::sink());
        serde_json::to_writer(&mut sizing, value).map_err(encode)?;
        let (len, sum) = sizing.finish();
        let len_sql = i32::try_from(len).map_err(|_| {
            ReadSideError::Snapshot(format!("{name}: snapshot of {len} bytes is too large"))
        })?;
        let mut conn = self.conn.lock();
        let tx = conn.transaction().map_err(|e| err(&self.path, e))?;
        let rowid: i64 = tx
            .query_row(
                "INSERT INTO snapshots (name, version, position, data, checksum)
                 VALUES (?1, ?2, ?3, zeroblob(?4), ?5)
                 ON CONFLICT(name) DO UPDATE SET version = ?2, position = ?3, data = zeroblob(?4), checksum = ?5
                 RETURNING rowid",
                params![name, version, position, len_sql, sum],
                |r| r.get(0),
            )
            .map_err(|e| err(&self.path, e))?;
        {
            let blob = tx
                .blob_open(MAIN_DB, "snapshots", "data", rowid, false)
                .map_err(|e| err(&self.path, e))?;
            let mut writing = Digesting::new(
                name,
                version,
                position,
                std::io::BufWriter::with_capacity(64 * 1024, blob),
            );
            serde_json::to_writer(&mut writing, value).map_err(encode)?;
            let (written, again) = writing.finish_into().map_err(|e| {
                ReadSideError::Snapshot(format!("cannot write the snapshot of {name}: {e}"))
            })?;
            if written != len || again != sum {
                // Encoding is deterministic for one value; if it ever is not, nothing is
                // committed and the previous snapshot stays.
                return Err(ReadSideError::Snapshot(format!(
                    "snapshot of {name} encoded differently twice ({len} then {written} bytes)"
                )));
            }
        }
        tx.commit().map_err(|e| err(&self.path, e))?;
        Ok(())
    }

    /// The snapshot of `name`, if there is one of this `version`.
    pub(crate) fn load<T: DeserializeOwned>(
        &self,
        name: &str,
        version: u32,
    ) -> Result<Option<T>, ReadSideError> {
        type Row = (u32, i64, Vec<u8>, Option<Vec<u8>>);
        let row: Option<Row> = self
            .conn
            .lock()
            .query_row(
                "SELECT version, position, data, checksum FROM snapshots WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
            )
            .optional()
            .map_err(|e| err(&self.path, e))?;
        match row {
            Some((v, position, data, sum)) if v == version => {
                if sum.as_deref() != Some(checksum(name, v, position, &data).as_slice()) {
                    return Err(ReadSideError::Snapshot(format!(
                        "snapshot of {name} does not match its checksum (edited or damaged)"
                    )));
                }
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

    /// Overwrites the raw JSON of the snapshot of `name` with a matching checksum, as a
    /// projection with a bug would have written it (tests of `audit verify` use it).
    #[doc(hidden)]
    pub fn put_raw(&self, name: &str, data: &[u8]) -> Result<(), ReadSideError> {
        let conn = self.conn.lock();
        let (version, position): (u32, i64) = conn
            .query_row(
                "SELECT version, position FROM snapshots WHERE name = ?1",
                params![name],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(|e| err(&self.path, e))?;
        conn.execute(
            "UPDATE snapshots SET data = ?2, checksum = ?3 WHERE name = ?1",
            params![name, data, checksum(name, version, position, data)],
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

/// Opens the snapshot file for writing, checks that SQLite can read all of it, and makes
/// sure its table (with checksums) exists.
fn open_checked(path: &Path) -> Result<Connection, rusqlite::Error> {
    let conn = Connection::open(path)?;
    integrity_check(&conn)?;
    conn.execute_batch(
        "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
         CREATE TABLE IF NOT EXISTS snapshots (
             name TEXT PRIMARY KEY,
             version INTEGER NOT NULL,
             position INTEGER NOT NULL,
             data BLOB NOT NULL,
             checksum BLOB
         );",
    )?;
    // Files written before checksums: their rows have none, so each is rebuilt once.
    let has_checksum = conn
        .prepare("SELECT 1 FROM pragma_table_info('snapshots') WHERE name = 'checksum'")?
        .exists([])?;
    if !has_checksum {
        conn.execute_batch("ALTER TABLE snapshots ADD COLUMN checksum BLOB;")?;
    }
    Ok(conn)
}

/// Fails unless SQLite reads every page of the file (damaged or truncated pages, or a file
/// that is not a database at all).
fn integrity_check(conn: &Connection) -> Result<(), rusqlite::Error> {
    let verdict: String = conn.query_row("PRAGMA quick_check", [], |r| r.get(0))?;
    if verdict == "ok" {
        Ok(())
    } else {
        Err(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_CORRUPT),
            Some(verdict),
        ))
    }
}

/// Moves an unreadable snapshot file (and its journals) aside, replacing an older
/// damaged copy.
fn set_aside(path: &Path) -> Result<(), ReadSideError> {
    for suffix in ["", "-wal", "-shm"] {
        let from = PathBuf::from(format!("{}{suffix}", path.display()));
        if !from.exists() {
            continue;
        }
        let to = PathBuf::from(format!("{}{DAMAGED_SUFFIX}{suffix}", path.display()));
        std::fs::rename(&from, &to).map_err(|e| {
            ReadSideError::Snapshot(format!("cannot set {} aside: {e}", from.display()))
        })?;
    }
    Ok(())
}

/// The checksum of a snapshot row: everything a load relies on.
fn checksum(name: &str, version: u32, position: i64, data: &[u8]) -> Vec<u8> {
    let mut hash = row_hash(name, version, position);
    hash.update(data);
    hash.finalize().to_vec()
}

/// A hash of a row's key fields, ready for its data.
fn row_hash(name: &str, version: u32, position: i64) -> Sha256 {
    let mut hash = Sha256::new();
    hash.update(name.as_bytes());
    hash.update([0]);
    hash.update(version.to_le_bytes());
    hash.update(position.to_le_bytes());
    hash
}

/// A writer that passes bytes on while counting them and computing the row's checksum.
struct Digesting<W> {
    inner: W,
    hash: Sha256,
    len: u64,
}

impl<W: std::io::Write> Digesting<W> {
    fn new(name: &str, version: u32, position: i64, inner: W) -> Self {
        Self {
            inner,
            hash: row_hash(name, version, position),
            len: 0,
        }
    }

    /// Bytes written and the checksum.
    fn finish(self) -> (u64, Vec<u8>) {
        (self.len, self.hash.finalize().to_vec())
    }

    /// Flushes the inner writer, then as [`Self::finish`].
    fn finish_into(mut self) -> std::io::Result<(u64, Vec<u8>)> {
        self.inner.flush()?;
        Ok(self.finish())
    }
}

impl<W: std::io::Write> std::io::Write for Digesting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

fn err(path: &Path, e: rusqlite::Error) -> ReadSideError {
    ReadSideError::Snapshot(format!("{}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, serde::Deserialize, PartialEq, Debug)]
    struct Model {
        at: u64,
        rows: Vec<String>,
    }

    impl HasCheckpoint for Model {
        fn checkpoint(&self) -> store::Position {
            store::Position(self.at)
        }
    }

    fn model(at: u64, rows: usize) -> Model {
        Model {
            at,
            rows: (0..rows).map(|i| format!("row {i} of {rows}")).collect(),
        }
    }

    #[test]
    fn snapshots_larger_and_smaller_than_the_write_buffer_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let snapshots = SnapshotStore::open(dir.path()).unwrap();
        // Several MiB, many times the 64 KiB buffer; then one smaller than it, replacing it.
        for value in [model(7, 300_000), model(9, 10), model(11, 0)] {
            snapshots.save("model", 3, &value).unwrap();
            let loaded: Model = snapshots.load("model", 3).unwrap().unwrap();
            assert_eq!(loaded, value);
            let raw = snapshots.raw("model").unwrap().unwrap();
            assert_eq!(raw, serde_json::to_vec(&value).unwrap());
        }
        assert!(snapshots.load::<Model>("model", 4).unwrap().is_none());
        // A reopened file reads the last one.
        drop(snapshots);
        let reopened = SnapshotStore::open(dir.path()).unwrap();
        assert_eq!(
            reopened.load::<Model>("model", 3).unwrap().unwrap(),
            model(11, 0)
        );
    }
}
