//! The conformance suite against a KurrentDB server named by `KURRENTDB_URL` (for example
//! `kurrentdb://localhost:2113?tls=false`). Without it every case prints SKIPPED and passes:
//! no server can run where this is usually built.

use std::sync::Arc;

use store::conformance::Fixture;
use store_kurrentdb::KurrentDbStore;

async fn server() -> Option<Fixture> {
    let url = std::env::var("KURRENTDB_URL").ok()?;
    let store =
        KurrentDbStore::connect(&url).expect("KURRENTDB_URL is not a valid connection string");
    Some(Fixture {
        store: Arc::new(store),
        guard: Box::new(()),
    })
}

store::conformance_tests!(server);
