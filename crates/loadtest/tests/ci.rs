//! The `ci` scenario against the debug build of the server: a small on-sale through
//! GraphQL over HTTP and WebSocket that fails only on oversell, lost purchases or errors.

use std::{path::PathBuf, process::Command, time::Duration};

use loadtest::{Config, Scenario};

/// `target/<profile>/ticketing`, built first so the test runs the current code.
fn server_binary() -> PathBuf {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .args(["build", "-p", "ticketing"])
        .status()
        .expect("running cargo build -p ticketing");
    assert!(status.success(), "cargo build -p ticketing failed");
    // The test runs from target/<profile>/deps/.
    let exe = std::env::current_exe().expect("test executable");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile_dir.join("ticketing")
}

fn config(scenario: Scenario, server_bin: PathBuf) -> Config {
    Config {
        scenario,
        tickets: 200,
        buyers: 16,
        subscribers: 4,
        max_quantity: 4,
        events: 3,
        hot_seat_share: 0.8,
        seat_attempts: 5,
        decline_share: 0.2,
        abandon_share: 0.2,
        hold_ttl: Duration::from_secs(2),
        crash_at: 0.3,
        target: None,
        server_bin: Some(server_bin),
        data_dir: None,
        request_timeout: Duration::from_secs(60),
        seed: 11,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ci_sale_sells_out_without_oversell_or_lost_purchases() {
    let report = loadtest::run(config(Scenario::Ci, server_binary()))
        .await
        .expect("the run completes");
    println!("{}", report.table());
    assert!(report.passed, "{:?}", report.failures);
    let event = &report.events[0];
    assert_eq!(event.capacity, 200);
    // Buyers buy until sold out, so every ticket is sold and every one acknowledged.
    assert_eq!(event.acknowledged_tickets, 200);
    assert_eq!(event.store_sold, Some(200));
    assert_eq!(event.lost_purchases, Some(0));
    assert_eq!(report.subscribers.saw_zero_available, 4);
}
