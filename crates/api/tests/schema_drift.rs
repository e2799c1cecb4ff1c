//! `schema.graphql` at the repository root is the exported schema: this fails when the
//! code's schema differs from it. Regenerate it with
//! `UPDATE_SCHEMA=1 cargo test -p api --test schema_drift`.

use std::path::PathBuf;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../schema.graphql")
}

#[test]
fn schema_graphql_matches_the_code() {
    let sdl = api::schema::sdl();
    let path = committed_path();
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &sdl).expect("write schema.graphql");
        return;
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    if committed != sdl {
        let first_difference = committed
            .lines()
            .zip(sdl.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| committed.lines().count().min(sdl.lines().count()));
        panic!(
            "schema.graphql differs from the code's schema (first at line {}).\n\
             Regenerate it with: UPDATE_SCHEMA=1 cargo test -p api --test schema_drift",
            first_difference + 1
        );
    }
}

#[test]
fn schema_names_the_operations_users_rely_on() {
    let sdl = api::schema::sdl();
    for needle in [
        "register(",
        "login(",
        "me:",
        "createEvent(",
        "publishEvent(",
        "events(",
        "event(",
        "holdTickets(",
        "payOrder(",
        "purchaseTickets(",
        "myOrders(",
        "myTickets:",
        "seatAvailability(",
        "orderStatus(",
    ] {
        assert!(sdl.contains(needle), "the schema lacks {needle}");
    }
}
