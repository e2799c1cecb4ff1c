//! The conformance suite against the embedded SQLite store, one fresh file per case.

use std::sync::Arc;

use store::conformance::Fixture;
use store::sqlite::{SqliteOptions, SqliteStore};

async fn fresh_store() -> Option<Fixture> {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path(), SqliteOptions::default()).expect("open store");
    Some(Fixture {
        store: Arc::new(store),
        guard: Box::new(dir),
    })
}

store::conformance_tests!(fresh_store);
