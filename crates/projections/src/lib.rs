//! The read side of Ticketing: projections that fold the global order of stored events
//! into read models, the queries the API serves from them, live availability feeds,
//! read-your-writes waits, and audit replay.
//!
//! * [`runner`]: one task per read model follows the store from its own checkpoint,
//!   applies events in batches, skips what it has already applied, snapshots model and
//!   checkpoint together, and stops with a [`ProjectionError`] naming an event it cannot
//!   apply while the others go on.
//! * Read models: [`catalogue`] (listings, event details, live counts, seat states and
//!   [`Availability`] feeds), [`orders`] (purchase history, tickets) and [`sales`]
//!   (organizer figures per tier and per day) and [`accounts`] (by id and by email, for
//!   log-in). [`ReadSide`] starts them and hands out
//!   their query interfaces.
//! * [`audit`]: an event's full history, its state as of a version, position or time
//!   (folded with the domain's own `evolve`), and a verification that replaying every
//!   inventory stream reproduces what the read models hold.
//!
//! # Storage
//!
//! Read models live in memory behind a short-held `RwLock`: queries are map lookups, a
//! rebuild folds hundreds of thousands of events per second, and the projection holds
//! the write lock for one bounded batch, so readers never wait long. Durability comes from
//! snapshots: each model is serialised together with its checkpoint into one row of
//! `readmodels.sqlite3` beside the event store (every [`RunnerOptions::snapshot_every_events`]
//! events, every [`RunnerOptions::snapshot_interval`], and on shutdown). A restart loads
//! the snapshot and resumes after its checkpoint; a missing or outdated snapshot means a
//! rebuild from zero, which is always correct because the store is the source of truth.
//!
//! Nothing here is written from the command path: the only writer of a read model is its
//! projection task.

pub mod accounts;
pub mod audit;
pub mod catalogue;
mod decode;
pub mod orders;
pub mod page;
pub mod runner;
pub mod sales;
pub mod snapshot;
#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use store::{EventStore, Position, StoreError};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use accounts::{AccountView, Accounts};
pub use catalogue::{
    Availability, Catalogue, EventFilter, EventView, SaleTarget, SeatStatus, SeatView,
};
pub use orders::{OrderView, Orders, TicketView};
pub use page::{Page, PageRequest};
pub use runner::{ProjectionError, ProjectionState, ProjectionStatus, RunnerOptions};
pub use sales::{EventSales, Sales};

use runner::{Driven, Projected};
use snapshot::SnapshotStore;

/// How the read side keeps its models.
#[derive(Debug, Clone, Default)]
pub struct ReadSideOptions {
    /// Directory of the snapshot file (normally the store's data directory); `None` keeps
    /// models in memory only, rebuilt from zero at every start.
    pub snapshot_dir: Option<PathBuf>,
    /// Load existing snapshots but never write them: for a process that runs beside the
    /// server (audits), which must not overwrite the server's snapshots.
    pub read_only: bool,
    /// Batching and snapshot cadence.
    pub runner: RunnerOptions,
    /// Run only the projections with these names (`None`: all of them). The others keep
    /// their loaded (or empty) model and are left out of waits. For tools and benchmarks
    /// that need one model.
    pub only: Option<Vec<String>>,
}

/// Why the read side could not start, snapshot or rebuild.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReadSideError {
    /// The snapshot file could not be read or written.
    #[error("read-model snapshots: {0}")]
    Snapshot(String),
    /// No projection has this name.
    #[error("unknown projection {0:?}")]
    UnknownProjection(String),
    /// The event store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl ReadSideError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Snapshot(_) => "SNAPSHOT_FAILED",
            Self::UnknownProjection(_) => "NOT_FOUND",
            Self::Store(e) => e.code(),
        }
    }
}

/// Why a query was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueryError {
    /// A filter, page size or cursor is malformed.
    #[error("invalid input: {0}")]
    InvalidInput(String),
}

impl QueryError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::InvalidInput(_) => "INVALID_INPUT",
        }
    }
}

/// Why a read-your-writes wait ended without the position being reached.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WaitError {
    /// The projection had not reached the position when the timeout passed.
    #[error("projection {projection} reached {reached}, not {wanted}, within the timeout")]
    Timeout {
        projection: &'static str,
        wanted: Position,
        reached: Position,
    },
    /// The projection stopped (failed, or the read side shut down) before reaching it.
    #[error("projection {projection} stopped at {reached} before reaching {wanted}")]
    Stopped {
        projection: &'static str,
        wanted: Position,
        reached: Position,
    },
    /// No projection has this name.
    #[error("unknown projection {0:?}")]
    UnknownProjection(String),
}

impl WaitError {
    /// A stable machine-readable code.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "TIMEOUT",
            Self::Stopped { .. } => "PROJECTION_STOPPED",
            Self::UnknownProjection(_) => "NOT_FOUND",
        }
    }
}

/// A running task of one projection.
struct Running {
    /// Set to true to stop the task.
    stop: watch::Sender<bool>,
    /// Joined when stopping, so that its final snapshot is written.
    task: JoinHandle<()>,
}

/// The running read side: every projection, and the query interfaces of their models.
pub struct ReadSide {
    /// Where projections read from.
    store: Arc<dyn EventStore>,
    /// Where models are snapshotted; `None` when kept in memory only or read-only.
    snapshots: Option<SnapshotStore>,
    /// Batching and snapshot cadence for (re)started projections.
    options: RunnerOptions,
    catalogue: Catalogue,
    orders: Orders,
    sales: Sales,
    accounts: Accounts,
    /// Every projection, in a fixed order, for status, waits and rebuilds.
    projections: Vec<Box<dyn Driven>>,
    /// The running task of each projection, by name.
    running: Mutex<HashMap<&'static str, Running>>,
}

impl ReadSide {
    /// Loads every read model from its snapshot (when there is one) and starts its
    /// projection from the snapshot's checkpoint. Must be called inside a tokio runtime.
    pub fn start(
        store: Arc<dyn EventStore>,
        options: ReadSideOptions,
    ) -> Result<Self, ReadSideError> {
        let loaded = match &options.snapshot_dir {
            None => None,
            Some(dir) if options.read_only => SnapshotStore::open_read_only(dir)?,
            Some(dir) => Some(SnapshotStore::open(dir)?),
        };
        let catalogue = Arc::new(Projected::new(runner::load(loaded.as_ref())));
        let orders = Arc::new(Projected::new(runner::load(loaded.as_ref())));
        let sales = Arc::new(Projected::new(runner::load(loaded.as_ref())));
        let accounts = Arc::new(Projected::new(runner::load(loaded.as_ref())));
        let snapshots = loaded.filter(|s| !s.is_read_only());
        let mut side = Self {
            store,
            snapshots,
            options: options.runner,
            catalogue: Catalogue {
                inner: catalogue.clone(),
            },
            orders: Orders {
                inner: orders.clone(),
            },
            sales: Sales {
                inner: sales.clone(),
            },
            accounts: Accounts {
                inner: accounts.clone(),
            },
            projections: vec![
                Box::new(catalogue),
                Box::new(orders),
                Box::new(sales),
                Box::new(accounts),
            ],
            running: Mutex::new(HashMap::new()),
        };
        if let Some(only) = &options.only {
            if let Some(unknown) = only.iter().find(|n| side.find(n).is_none()) {
                return Err(ReadSideError::UnknownProjection(unknown.clone()));
            }
            side.projections
                .retain(|p| only.iter().any(|n| n == p.name()));
        }
        for p in &side.projections {
            side.spawn(p.as_ref());
        }
        Ok(side)
    }

    fn spawn(&self, p: &dyn Driven) {
        let (stop, stop_rx) = watch::channel(false);
        let task = p.spawn(
            self.store.clone(),
            self.snapshots.clone(),
            self.options.clone(),
            stop_rx,
        );
        self.running.lock().insert(p.name(), Running { stop, task });
    }

    fn find(&self, name: &str) -> Option<&dyn Driven> {
        self.projections
            .iter()
            .find(|p| p.name() == name)
            .map(|p| p.as_ref())
    }

    /// The event catalogue.
    pub fn catalogue(&self) -> &Catalogue {
        &self.catalogue
    }

    /// Orders and tickets.
    pub fn orders(&self) -> &Orders {
        &self.orders
    }

    /// Organizer sales.
    pub fn sales(&self) -> &Sales {
        &self.sales
    }

    /// User accounts.
    pub fn accounts(&self) -> &Accounts {
        &self.accounts
    }

    /// The names of every projection.
    pub fn projection_names(&self) -> Vec<&'static str> {
        self.projections.iter().map(|p| p.name()).collect()
    }

    /// Each projection's state and checkpoint.
    pub fn status(&self) -> Vec<ProjectionStatus> {
        self.projections.iter().map(|p| p.status()).collect()
    }

    /// Waits until every projection has applied everything up to `position` (for example
    /// the position an append returned), so that a query sees the caller's own write.
    pub async fn wait_for(&self, position: Position, timeout: Duration) -> Result<(), WaitError> {
        let deadline = tokio::time::Instant::now() + timeout;
        for p in &self.projections {
            wait_one(p.as_ref(), position, deadline).await?;
        }
        Ok(())
    }

    /// Like [`wait_for`](Self::wait_for), for one projection by name.
    pub async fn wait_for_projection(
        &self,
        name: &str,
        position: Position,
        timeout: Duration,
    ) -> Result<(), WaitError> {
        let p = self
            .find(name)
            .ok_or_else(|| WaitError::UnknownProjection(name.to_owned()))?;
        wait_one(p, position, tokio::time::Instant::now() + timeout).await
    }

    /// Waits until every projection has applied everything the store holds now.
    pub async fn catch_up(&self, timeout: Duration) -> Result<Position, CatchUpError> {
        let head = self.store.head().await?;
        self.wait_for(head, timeout).await?;
        Ok(head)
    }

    /// Forgets a projection's model and checkpoint and replays the whole history into it.
    /// Queries see the model fill up again while it replays.
    pub async fn rebuild(&self, name: &str) -> Result<(), ReadSideError> {
        let p = self
            .find(name)
            .ok_or_else(|| ReadSideError::UnknownProjection(name.to_owned()))?;
        self.stop_one(name).await;
        p.reset(self.snapshots.as_ref())?;
        self.spawn(p);
        Ok(())
    }

    /// Starts a stopped (for example failed) projection again from its checkpoint.
    pub async fn restart(&self, name: &str) -> Result<(), ReadSideError> {
        let p = self
            .find(name)
            .ok_or_else(|| ReadSideError::UnknownProjection(name.to_owned()))?;
        self.stop_one(name).await;
        self.spawn(p);
        Ok(())
    }

    async fn stop_one(&self, name: &str) {
        let running = self.running.lock().remove(name);
        if let Some(r) = running {
            r.stop.send_replace(true);
            if let Err(e) = r.task.await {
                tracing::error!(projection = name, error = %e, "projection task panicked");
            }
        }
    }

    /// Every model with its checkpoint as JSON, by projection name: for tests that compare
    /// read models built in different ways.
    #[doc(hidden)]
    pub fn dump(&self) -> serde_json::Value {
        fn one<M: runner::ReadModel>(p: &Projected<M>) -> serde_json::Value {
            let guard = p.guard();
            serde_json::to_value(&*guard)
                .unwrap_or_else(|e| serde_json::Value::String(e.to_string()))
        }
        serde_json::json!({
            "catalogue": one(&self.catalogue.inner),
            "orders": one(&self.orders.inner),
            "sales": one(&self.sales.inner),
            "accounts": one(&self.accounts.inner),
        })
    }

    /// Stops every projection and writes a final snapshot of each.
    pub async fn shutdown(&self) {
        for name in self.projection_names() {
            self.stop_one(name).await;
        }
    }
}

impl Drop for ReadSide {
    /// Tells every projection task to stop (each still writes its final snapshot); call
    /// [`ReadSide::shutdown`] to wait for that.
    fn drop(&mut self) {
        for running in self.running.lock().values() {
            running.stop.send_replace(true);
        }
    }
}

/// Why [`ReadSide::catch_up`] failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CatchUpError {
    /// The store's head could not be read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A projection did not reach it.
    #[error(transparent)]
    Wait(#[from] WaitError),
}

async fn wait_one(
    p: &dyn Driven,
    position: Position,
    deadline: tokio::time::Instant,
) -> Result<(), WaitError> {
    let mut rx = p.progress();
    let outcome = tokio::time::timeout_at(
        deadline,
        rx.wait_for(|pr| pr.checkpoint >= position || pr.halted),
    )
    .await
    .map(|r| r.map(|pr| pr.checkpoint >= position));
    let reached = rx.borrow().checkpoint;
    match outcome {
        Ok(Ok(true)) => Ok(()),
        Ok(_) => Err(WaitError::Stopped {
            projection: p.name(),
            wanted: position,
            reached,
        }),
        Err(_) => Err(WaitError::Timeout {
            projection: p.name(),
            wanted: position,
            reached,
        }),
    }
}
