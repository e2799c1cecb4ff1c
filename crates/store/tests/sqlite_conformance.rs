//! The conformance suite against the embedded SQLite store, one fresh file per case: with
//! the default in-memory tail of recent events, with a tail so small that subscribers keep
//! crossing from the file into it, and with subscriptions served from the file alone.

use std::sync::Arc;

use store::conformance::Fixture;
use store::sqlite::{SqliteOptions, SqliteStore};

async fn store_with(recent_events: usize) -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("temp dir");
    let options = SqliteOptions {
        recent_events,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path(), options).expect("open store");
    Some(Fixture {
        store: Arc::new(store),
        guard: Box::new(dir),
    })
}

async fn fresh_store() -> Option<Fixture> {
    store_with(SqliteOptions::default().recent_events).await
}

store::conformance_tests!(fresh_store);

mod small_tail {
    use super::*;

    async fn fresh_store() -> Option<Fixture> {
        store_with(3).await
    }

    store::conformance_tests!(fresh_store);
}

mod file_only {
    use super::*;

    async fn fresh_store() -> Option<Fixture> {
        store_with(0).await
    }

    store::conformance_tests!(fresh_store);
}
