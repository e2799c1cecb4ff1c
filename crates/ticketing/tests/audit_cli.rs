//! `ticketing audit` as a user runs it: a real store on disk, opened read-only.

#[path = "../../projections/tests/common/mod.rs"]
mod common;

use std::path::Path;
use std::process::{Command, Output};

use common::{Sim, open_store};
use store::EventStore;

fn audit(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ticketing"))
        .arg("audit")
        .args(args)
        .env("TICKETING_DATA_DIR", dir)
        .output()
        .expect("run ticketing")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_state_at_and_verify_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut sim = Sim::new(store.clone());
    let events = sim.scenario().await;
    // The writer stays open: the audit runs beside it, read-only.
    let id = events[0].to_string();

    let out = audit(dir.path(), &["history", &id]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let table = text(&out.stdout);
    assert!(table.starts_with("VERSION"), "{table}");
    assert!(table.contains("EventCreated") && table.contains("OrderConfirmed"));

    let out = audit(dir.path(), &["--format", "json", "history", &id]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let head = store
        .stream_version(&store::StreamName::new(format!("inventory-{id}")).unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(json.as_array().unwrap().len() as u64, head + 1);

    let out = audit(
        dir.path(),
        &["state-at", &id, "--version", "3", "--format", "json"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(state["version"], 3);

    let out = audit(
        dir.path(),
        &["state-at", &id, "--time", "2030-01-01T12:00:00Z"],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("invariants: hold"));

    let out = audit(dir.path(), &["verify"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("replayed 3 inventory streams"));
    let out = audit(dir.path(), &["verify", "--from-zero", "--format", "json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["differences"], serde_json::json!([]));

    // Bad input: a clear error with a stable code and exit code 2, never a panic.
    let unknown = "00000000-0000-0000-0000-000000000404";
    let out = audit(dir.path(), &["history", unknown]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("error [NOT_FOUND]"),
        "{}",
        text(&out.stderr)
    );
    let out = audit(dir.path(), &["state-at", &id, "--version", "100000"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("error [INVALID_INPUT]"));
    let out = audit(
        dir.path(),
        &["state-at", &id, "--time", "1999-01-01T00:00:00Z"],
    );
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("did not exist yet"));
    // clap refuses malformed arguments before anything is opened.
    for args in [
        vec!["history", "not-a-uuid"],
        vec!["state-at", &id],
        vec!["state-at", &id, "--version", "1", "--position", "2"],
        vec!["state-at", &id, "--time", "yesterday"],
    ] {
        let out = audit(dir.path(), &args);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
    let empty = tempfile::tempdir().unwrap();
    let out = audit(empty.path(), &["verify"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("cannot open the event store"));
}
