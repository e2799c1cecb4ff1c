//! Checkpoints: copying the write-ahead log into the database file, and when.
//!
//! SQLite's own policy copies the whole log inside the commit that crosses a size: that
//! commit, and every append waiting behind it, waits for tens of megabytes to be copied
//! and the database file fsynced. [`Checkpoints::Background`] moves the copying to a
//! thread with its own connection, which copies while the writer goes on committing:
//!
//! 1. A commit that leaves the log at [`SqliteOptions::checkpoint_pages`] or more asks the
//!    checkpointer for a pass (a passive checkpoint: it copies what is committed, never
//!    blocks the writer nor readers).
//! 2. The log only starts over once it is copied to its very end, and the writer keeps
//!    adding to it during a pass; so passes repeat, each copying what the last one left,
//!    until less than [`FINISH_PAGES`] (or an eighth of the limit) are left. Then the writer copies that short rest
//!    itself after a commit (a few milliseconds), and its next commit starts the log over.
//! 3. The bound: if the log reaches twice its size while a pass runs (the writer outruns
//!    the checkpointer), the writer waits for the pass to end and copies the rest itself,
//!    as SQLite's own policy would have.
//!
//! [`SqliteOptions::checkpoint_pages`]: super::SqliteOptions::checkpoint_pages

use std::ffi::c_int;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::thread::JoinHandle;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};
use rusqlite::wal::CheckpointMode;
use rusqlite::{Connection, OpenFlags};

use super::{Counters, db_err, io_err};
use crate::StoreError;

/// Where the log is copied into the database file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Checkpoints {
    /// On a checkpointer thread of its own, so that commits do not wait for it; the writer
    /// copies only a short rest, or everything if the log grows to twice its limit.
    #[default]
    Background,
    /// In the commit that leaves the log at its limit, on the writer thread (SQLite's
    /// automatic checkpoint). That commit waits for the whole copy.
    InCommit,
}

/// A pass that leaves fewer pages than this uncopied (or an eighth of the log limit, if
/// less) lets the writer copy the rest (at most 2 MiB, a few milliseconds) so that the log
/// starts over.
const FINISH_PAGES: u64 = 512;

/// What the commit hook and the checkpointer thread share.
struct Shared {
    state: Mutex<State>,
    /// Wakes the checkpointer: a pass was asked for, or it must stop.
    wake: Condvar,
    /// Wakes a writer waiting for a pass to end.
    idle: Condvar,
}

#[derive(Default)]
struct State {
    /// The writer asked for a pass that has not started.
    requested: bool,
    /// A pass is copying.
    running: bool,
    /// Which log the requested or running pass copies.
    generation: u64,
    /// Which log (counted from open; it starts over after a complete checkpoint) the last
    /// pass copied, so that a figure of an earlier log is not taken for this one's.
    pass_generation: u64,
    /// How far into that log the last pass copied, in pages.
    backfilled: u64,
    /// The store is closing: the checkpointer exits.
    stop: bool,
}

/// The checkpointer thread; stopped and joined when dropped.
pub(super) struct Checkpointer {
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Drop for Checkpointer {
    fn drop(&mut self) {
        self.shared.state.lock().stop = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("store checkpointer thread panicked");
        }
    }
}

/// Replaces SQLite's automatic checkpoint on the writer connection `conn` with `mode`,
/// counting checkpoints and their time in `counters`. For [`Checkpoints::Background`] it
/// starts the checkpointer, which the caller keeps until the writer connection is closed.
pub(super) fn install(
    conn: &mut Connection,
    path: &Path,
    synchronous: &str,
    mode: Checkpoints,
    pages: u32,
    counters: Arc<Counters>,
) -> Result<Option<Checkpointer>, StoreError> {
    let pages = u64::from(pages.max(1));
    match mode {
        Checkpoints::InCommit => {
            conn.wal_hook(Some(
                move |wal: &mut rusqlite::hooks::Wal, frames: c_int| {
                    let frames = u64::try_from(frames).unwrap_or(0);
                    counters.wal_pages.store(frames, Ordering::Relaxed);
                    if frames >= pages {
                        timed(&counters, true, || {
                            wal.checkpoint_v2(CheckpointMode::PASSIVE)
                        });
                    }
                    // Never fail the commit that is already durable; see `timed`.
                    Ok(())
                },
            ))
            .map_err(|e| db_err(path, e))?;
            Ok(None)
        }
        Checkpoints::Background => {
            let shared = Arc::new(Shared {
                state: Mutex::new(State::default()),
                wake: Condvar::new(),
                idle: Condvar::new(),
            });
            let checkpointer = spawn(path, synchronous, shared.clone(), counters.clone())?;
            let mut hook = Hook {
                shared,
                counters,
                pages,
                finish: (pages / 8).clamp(1, FINISH_PAGES),
                generation: 0,
                last_frames: 0,
            };
            conn.wal_hook(Some(
                move |wal: &mut rusqlite::hooks::Wal, frames: c_int| {
                    hook.after_commit(wal, u64::try_from(frames).unwrap_or(0));
                    Ok(())
                },
            ))
            .map_err(|e| db_err(path, e))?;
            Ok(Some(checkpointer))
        }
    }
}

/// The writer's side of background checkpoints, run after each commit.
struct Hook {
    shared: Arc<Shared>,
    counters: Arc<Counters>,
    /// Log size, in pages, at which a pass is asked for.
    pages: u64,
    /// Pages left uncopied by a pass that the writer copies itself.
    finish: u64,
    /// Which log the writer is appending to (see [`State::pass_generation`]).
    generation: u64,
    /// Log size after the previous commit: a smaller one means the log started over.
    last_frames: u64,
}

impl Hook {
    fn after_commit(&mut self, wal: &mut rusqlite::hooks::Wal, frames: u64) {
        self.counters.wal_pages.store(frames, Ordering::Relaxed);
        if frames < self.last_frames {
            self.generation += 1;
        }
        self.last_frames = frames;
        if frames < self.pages {
            return;
        }
        let mut state = self.shared.state.lock();
        if state.running || state.requested {
            if frames < 2 * self.pages {
                return;
            }
            // The writer outran the checkpointer: bound the log by waiting for the pass,
            // then copying the rest here.
            while state.running || state.requested {
                self.shared.idle.wait(&mut state);
            }
        } else {
            let copied = if state.pass_generation == self.generation {
                state.backfilled
            } else {
                0
            };
            if frames.saturating_sub(copied) > self.finish && frames < 2 * self.pages {
                state.requested = true;
                state.generation = self.generation;
                self.shared.wake.notify_one();
                return;
            }
        }
        drop(state);
        let copied = timed(&self.counters, true, || {
            wal.checkpoint_v2(CheckpointMode::PASSIVE)
        });
        let mut state = self.shared.state.lock();
        state.pass_generation = self.generation;
        state.backfilled = copied.map_or(0, |(_, copied)| u64::try_from(copied).unwrap_or(0));
    }
}

fn spawn(
    path: &Path,
    synchronous: &str,
    shared: Arc<Shared>,
    counters: Arc<Counters>,
) -> Result<Checkpointer, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| db_err(path, e))?;
    // A checkpoint fsyncs the database file as the writer's `synchronous` asks.
    conn.execute_batch(&format!("PRAGMA synchronous = {synchronous};"))
        .map_err(|e| db_err(path, e))?;
    let thread_shared = shared.clone();
    let path: PathBuf = path.to_owned();
    let thread = std::thread::Builder::new()
        .name("store-checkpointer".into())
        .spawn(move || run(&conn, &thread_shared, &counters))
        .map_err(|e| io_err(&path, "spawn checkpointer thread", e))?;
    Ok(Checkpointer {
        shared,
        thread: Some(thread),
    })
}

/// The checkpointer thread: one pass per request, until told to stop.
fn run(conn: &Connection, shared: &Shared, counters: &Counters) {
    loop {
        let generation = {
            let mut state = shared.state.lock();
            while !state.requested && !state.stop {
                shared.wake.wait(&mut state);
            }
            if state.stop {
                return;
            }
            state.requested = false;
            state.running = true;
            state.generation
        };
        let result = timed(counters, false, || {
            conn.wal_checkpoint_v2(Some(rusqlite::MAIN_DB), CheckpointMode::PASSIVE)
        });
        let mut state = shared.state.lock();
        state.running = false;
        match result {
            Some((_log, copied)) => {
                state.backfilled = u64::try_from(copied).unwrap_or(0);
                state.pass_generation = generation;
            }
            None => state.backfilled = 0,
        }
        drop(state);
        shared.idle.notify_all();
    }
}

/// Runs one checkpoint, counting it and its time. A failure is logged, not returned: the
/// commit it follows is already durable, and the next commit tries again.
fn timed<F>(counters: &Counters, on_writer: bool, checkpoint: F) -> Option<(c_int, c_int)>
where
    F: FnOnce() -> rusqlite::Result<(c_int, c_int)>,
{
    let started = Instant::now();
    let result = checkpoint();
    counters.checkpoints.fetch_add(1, Ordering::Relaxed);
    if on_writer {
        counters.writer_checkpoints.fetch_add(1, Ordering::Relaxed);
    }
    counters
        .checkpoint_nanos
        .fetch_add(started.elapsed().as_nanos() as u64, Ordering::Relaxed);
    match result {
        Ok(counts) => Some(counts),
        Err(e) => {
            tracing::warn!(error = %e, "checkpoint failed");
            None
        }
    }
}
