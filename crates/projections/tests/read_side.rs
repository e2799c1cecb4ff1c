//! The read side against a real SQLite store: live versus rebuilt models, restarts from
//! snapshots, read-your-writes, live availability, failures, queries and audits.

mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::Duration as Span;
use common::*;
use domain::inventory::{EventStatus, OrderStatus};
use domain::{EventId, UserId};
use projections::audit::{self, AsOf, AuditError};
use projections::snapshot::SnapshotStore;
use projections::{
    EventFilter, PageRequest, ProjectionState, QueryError, ReadSide, ReadSideOptions, SeatStatus,
    WaitError,
};
use store::{EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamName};
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(20);

fn in_memory(store: &Arc<store::sqlite::SqliteStore>) -> ReadSide {
    ReadSide::start(store.clone(), ReadSideOptions::default()).expect("start read side")
}

fn persistent(store: &Arc<store::sqlite::SqliteStore>, dir: &std::path::Path) -> ReadSide {
    ReadSide::start(
        store.clone(),
        ReadSideOptions {
            snapshot_dir: Some(dir.to_path_buf()),
            ..Default::default()
        },
    )
    .expect("start read side")
}

fn no_progress(_: audit::ReplayProgress) {}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_models_equal_models_rebuilt_from_zero_and_verify_clean() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut sim = Sim::new(store.clone());
    // Half the history exists before the read side starts, half arrives live.
    let first = sim
        .create_event("Early Bird", "Loft", 5, 10, &["Z-1"])
        .await;
    sim.hold(first, 1, 2).await.unwrap();
    let live = in_memory(&store);
    let events = sim.scenario().await;
    sim.register(UserId(Uuid::from_u128(7)), "Someone@Example.com")
        .await;
    live.catch_up(WAIT).await.expect("live caught up");

    let rebuilt = in_memory(&store);
    rebuilt.catch_up(WAIT).await.expect("rebuilt caught up");
    assert_eq!(live.dump(), rebuilt.dump());

    // A rebuild of the running read side gives the same models again.
    for name in live.projection_names() {
        live.rebuild(name).await.unwrap();
    }
    live.catch_up(WAIT).await.unwrap();
    assert_eq!(live.dump(), rebuilt.dump());

    let report = audit::verify(store.as_ref(), &live, &no_progress)
        .await
        .unwrap();
    assert_eq!(report.differences, vec![], "{report:#?}");
    assert_eq!(report.streams, 4);
    assert!(report.events > 50);

    // Spot checks of what the models say against the domain's own state.
    let a = events[0];
    let view = live.catalogue().event(a).unwrap();
    let domain_tiers: Vec<_> = sim.state(a).tiers().collect();
    assert_eq!(view.tiers.len(), domain_tiers.len());
    for (t, d) in view.tiers.iter().zip(&domain_tiers) {
        assert_eq!((t.sold, t.held, t.available), (d.sold, d.held, d.available));
    }
    let seats = live.catalogue().seats(a).unwrap();
    let states: Vec<_> = seats.iter().map(|s| (s.seat.as_str(), s.status)).collect();
    assert_eq!(
        states,
        vec![
            ("A-1", SeatStatus::Sold),
            ("A-2", SeatStatus::Sold),
            ("A-3", SeatStatus::Held),
            ("A-4", SeatStatus::Available)
        ]
    );
    let cancelled = live.catalogue().event(events[2]).unwrap();
    assert_eq!(cancelled.status, EventStatus::Cancelled);
    assert!(cancelled.tiers.iter().all(|t| t.sold == 0 && t.held == 0));
    let account = live.accounts().by_email(" someone@EXAMPLE.com ").unwrap();
    assert_eq!(account.user_id, UserId(Uuid::from_u128(7)));
    assert!(account.password_hash.starts_with("$argon2id$"));
    assert!(live.accounts().by_email("not an email").is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resumes_from_the_snapshot_without_reapplying() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut sim = Sim::new(store.clone());
    sim.scenario().await;
    let side = persistent(&store, dir.path());
    let head = side.catch_up(WAIT).await.unwrap();
    let applied_first: Vec<u64> = side.status().iter().map(|s| s.applied).collect();
    assert!(
        applied_first
            .iter()
            .all(|n| *n == applied_first[0] && *n > 0)
    );
    side.shutdown().await;
    assert!(
        side.status()
            .iter()
            .all(|s| s.state == ProjectionState::Stopped && s.checkpoint == head)
    );
    drop(side);

    // Three more events while the read side is down.
    let e = sim.create_event("Late Show", "Cellar", 3, 5, &[]).await;
    let (_, p) = sim.hold(e, 9, 1).await.unwrap();
    let new_head = store.head().await.unwrap();
    assert_eq!(p, Some(new_head));
    let new_events = store.read_all(head, 10_000).await.unwrap().len() as u64;

    let restarted = persistent(&store, dir.path());
    // The snapshot is loaded before any event is applied.
    assert!(restarted.status().iter().all(|s| s.checkpoint >= head));
    restarted.catch_up(WAIT).await.unwrap();
    for s in restarted.status() {
        assert_eq!(s.applied, new_events, "{} re-applied old events", s.name);
        assert_eq!(s.checkpoint, new_head);
    }
    let rebuilt = in_memory(&store);
    rebuilt.catch_up(WAIT).await.unwrap();
    assert_eq!(restarted.dump(), rebuilt.dump());
    restarted.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verify_reports_a_corrupted_read_model_row() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut sim = Sim::new(store.clone());
    let events = sim.scenario().await;
    let side = persistent(&store, dir.path());
    side.catch_up(WAIT).await.unwrap();
    side.shutdown().await;
    drop(side);

    // Damage the stored catalogue: one more ticket sold than the history says.
    let a = events[0];
    let tier = sim.tiers[&a].ga;
    let snapshots = SnapshotStore::open(dir.path()).unwrap();
    let raw = snapshots
        .raw("catalogue")
        .unwrap()
        .expect("catalogue snapshot");
    let mut json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let sold = &mut json["model"]["events"][a.to_string()]["tiers"][0]["sold"];
    let was = sold.as_u64().unwrap();
    *sold = serde_json::json!(was + 1);
    snapshots
        .put_raw("catalogue", &serde_json::to_vec(&json).unwrap())
        .unwrap();
    drop(snapshots);

    // A read-only audit beside the (stopped) server sees the damage.
    let audit_side = ReadSide::start(
        store.clone(),
        ReadSideOptions {
            snapshot_dir: Some(dir.path().to_path_buf()),
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    audit_side.catch_up(WAIT).await.unwrap();
    let report = audit::verify(store.as_ref(), &audit_side, &no_progress)
        .await
        .unwrap();
    let expected_subject = format!("tier {tier} (Standard) sold");
    let sold_diff = report
        .differences
        .iter()
        .find(|d| d.subject == expected_subject)
        .unwrap_or_else(|| panic!("no sold difference in {report:#?}"));
    assert_eq!(sold_diff.event_id, a);
    assert_eq!(sold_diff.read_model, "catalogue");
    assert_eq!(sold_diff.replayed, was.to_string());
    assert_eq!(sold_diff.found, (was + 1).to_string());
    // `available` is derived from the damaged count, so it differs too; nothing else does.
    assert_eq!(report.differences.len(), 2, "{report:#?}");
    // The read-only side never wrote the snapshot back.
    let snapshots = SnapshotStore::open(dir.path()).unwrap();
    let raw = snapshots.raw("catalogue").unwrap().unwrap();
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap(),
        json
    );
}

/// A snapshot edited to another valid number (a hand edit, a bit flip) no longer matches
/// its checksum: it is refused at start and its model rebuilt from the store, so nothing
/// serves the wrong count; the next snapshot replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_snapshot_is_refused_and_its_model_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut sim = Sim::new(store.clone());
    let events = sim.scenario().await;
    let side = persistent(&store, dir.path());
    side.catch_up(WAIT).await.unwrap();
    let truth = side.dump();
    side.shutdown().await;
    drop(side);

    let a = events[0];
    let file = dir.path().join(projections::snapshot::SNAPSHOT_FILE_NAME);
    let edit = |sql: &str| {
        let db = rusqlite::Connection::open(&file).unwrap();
        db.execute_batch(sql).unwrap();
    };
    let snapshots = SnapshotStore::open(dir.path()).unwrap();
    let raw = snapshots.raw("catalogue").unwrap().unwrap();
    drop(snapshots);
    let mut json: serde_json::Value = serde_json::from_slice(&raw).unwrap();
    let sold = &mut json["model"]["events"][a.to_string()]["tiers"][0]["sold"];
    *sold = serde_json::json!(sold.as_u64().unwrap() + 1);
    let edited = serde_json::to_string(&json).unwrap().replace('\'', "''");
    edit(&format!(
        "UPDATE snapshots SET data = CAST('{edited}' AS BLOB) WHERE name = 'catalogue'"
    ));

    let side = persistent(&store, dir.path());
    side.catch_up(WAIT).await.unwrap();
    assert_eq!(
        side.dump(),
        truth,
        "rebuilt from the store, not the edited snapshot"
    );
    let report = audit::verify(store.as_ref(), &side, &no_progress)
        .await
        .unwrap();
    assert!(report.differences.is_empty(), "{report:#?}");
    side.shutdown().await;
    drop(side);
    // The shutdown snapshot replaced the edited row with a true one.
    let snapshots = SnapshotStore::open(dir.path()).unwrap();
    let raw = snapshots.raw("catalogue").unwrap().unwrap();
    assert_ne!(
        serde_json::from_slice::<serde_json::Value>(&raw).unwrap(),
        json
    );
    drop(snapshots);
    let side = persistent(&store, dir.path());
    side.catch_up(WAIT).await.unwrap();
    assert_eq!(side.dump(), truth);
    side.shutdown().await;
}

/// A snapshot file SQLite cannot read (damaged pages, or cut short) is set aside and
/// replaced: the models are rebuilt once, and later snapshots are written again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_or_truncated_snapshot_file_is_replaced() {
    for damage in ["pages", "truncated"] {
        let dir = tempfile::tempdir().unwrap();
        let store = open_store(dir.path());
        let mut sim = Sim::new(store.clone());
        sim.scenario().await;
        let side = persistent(&store, dir.path());
        side.catch_up(WAIT).await.unwrap();
        let truth = side.dump();
        side.shutdown().await;
        drop(side);

        let file = dir.path().join(projections::snapshot::SNAPSHOT_FILE_NAME);
        // Fold the WAL into the file first, so the damage hits the database pages.
        rusqlite::Connection::open(&file)
            .unwrap()
            .execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")
            .unwrap();
        let mut bytes = std::fs::read(&file).unwrap();
        assert!(bytes.len() > 8192, "a snapshot file of several pages");
        match damage {
            "pages" => {
                for b in &mut bytes[4096..8192] {
                    *b = 0xA5;
                }
            }
            _ => bytes.truncate(bytes.len() / 2 + 100),
        }
        std::fs::write(&file, &bytes).unwrap();

        let side = persistent(&store, dir.path());
        side.catch_up(WAIT).await.unwrap();
        assert_eq!(side.dump(), truth, "{damage}: rebuilt from the store");
        side.shutdown().await;
        drop(side);
        assert!(
            dir.path()
                .join(format!(
                    "{}{}",
                    projections::snapshot::SNAPSHOT_FILE_NAME,
                    projections::snapshot::DAMAGED_SUFFIX
                ))
                .is_file(),
            "{damage}: the damaged file is kept aside"
        );
        // The new file holds good snapshots: they load without a rebuild.
        let snapshots = SnapshotStore::open(dir.path()).unwrap();
        assert!(snapshots.raw("catalogue").unwrap().is_some(), "{damage}");
        drop(snapshots);
        let side = persistent(&store, dir.path());
        side.catch_up(WAIT).await.unwrap();
        assert_eq!(side.dump(), truth, "{damage}");
        side.shutdown().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_your_writes_waits_for_the_position_and_times_out_past_the_head() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let side = in_memory(&store);
    let mut sim = Sim::new(store.clone());
    let e = sim.create_event("Quick", "Room", 2, 10, &[]).await;
    let (order, p) = sim.hold(e, 1, 3).await.unwrap();
    side.wait_for(p.unwrap(), WAIT).await.unwrap();
    // The caller sees its own write at once after the wait.
    assert_eq!(
        side.orders().order(order).unwrap().status,
        OrderStatus::Held
    );
    assert_eq!(side.catalogue().event(e).unwrap().tiers[0].held, 3);

    let far = Position(p.unwrap().0 + 1_000);
    let err = side
        .wait_for(far, Duration::from_millis(50))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "TIMEOUT");
    assert!(matches!(err, WaitError::Timeout { wanted, .. } if wanted == far));
    let err = side
        .wait_for_projection("nope", Position(1), Duration::from_millis(1))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "NOT_FOUND");
    side.wait_for(Position::START, Duration::ZERO)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_availability_reader_gets_the_latest_value_and_never_delays_the_projection() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let side = in_memory(&store);
    let mut sim = Sim::new(store.clone());
    let e = sim
        .create_event("War", "Arena", 7, 10_000, &["S-1", "S-2"])
        .await;
    side.catch_up(WAIT).await.unwrap();
    assert!(
        side.catalogue()
            .watch_availability(EventId(Uuid::nil()))
            .is_none()
    );

    // One reader never reads; another reads slowly.
    let stuck = side.catalogue().watch_availability(e).unwrap();
    assert_eq!(
        stuck.borrow().tiers[0].available,
        10_000,
        "current value at once"
    );
    let mut slow = side.catalogue().watch_availability(e).unwrap();
    let slow_reader = tokio::spawn(async move {
        let mut seen = 0u32;
        while slow.changed().await.is_ok() {
            seen += 1;
            let available = slow.borrow_and_update().tiers[0].available;
            if available == 10_000 - 500 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    });

    let mut last = Position::START;
    for i in 0..500u128 {
        let (_, p) = sim.hold(e, i, 1).await.unwrap();
        last = p.unwrap();
    }
    sim.hold_seats(e, 900, &["S-2"]).await.unwrap();
    let head = store.head().await.unwrap();
    // The projection reaches the head although one reader never read a value.
    side.wait_for(head, WAIT).await.unwrap();
    assert!(last < head);
    let latest = stuck.borrow().clone();
    assert_eq!(*latest, side.catalogue().availability(e).unwrap());
    assert!(
        latest.position > last,
        "the seat hold after the last general hold is in"
    );
    assert_eq!(latest.tiers[0].available, 10_000 - 500);
    let seats: Vec<_> = latest
        .seats()
        .map(|s| (s.seat.to_string(), s.status))
        .collect();
    assert_eq!(
        seats,
        vec![
            ("S-1".into(), SeatStatus::Available),
            ("S-2".into(), SeatStatus::Held)
        ]
    );
    let seen = tokio::time::timeout(WAIT, slow_reader)
        .await
        .unwrap()
        .unwrap();
    assert!(
        seen < 500,
        "the slow reader saw {seen} values: a backlog, not the latest"
    );
    assert_eq!(side.catalogue().watched_events(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_projection_failing_on_an_event_names_it_and_the_others_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let side = in_memory(&store);
    let mut sim = Sim::new(store.clone());
    let e = sim.create_event("Broken", "Room", 2, 10, &[]).await;
    let good = store.head().await.unwrap();
    // An event the domain cannot decode lands in the inventory stream.
    let stream = StreamName::new(domain::ids::streams::inventory(e)).unwrap();
    let version = store.stream_version(&stream).await.unwrap().unwrap();
    let bad = store
        .append(
            &stream,
            ExpectedVersion::Exact(version),
            vec![NewEvent::new(
                "HoldPlaced",
                1,
                br#"{"orderId":"nope"}"#.to_vec(),
                Metadata {
                    correlation_id: Uuid::now_v7(),
                    causation_id: None,
                    acting_user: None,
                    recorded_at: sim.now,
                },
            )],
        )
        .await
        .unwrap();
    let user = UserId(Uuid::from_u128(0x5));
    let after = sim.register(user, "late@example.com").await;

    side.wait_for_projection("accounts", after, WAIT)
        .await
        .unwrap();
    assert!(side.accounts().by_id(user).is_some());
    let err = side.wait_for(after, WAIT).await.unwrap_err();
    assert_eq!(err.code(), "PROJECTION_STOPPED");
    // Projections run independently: wait for each one to reach the bad event and stop,
    // rather than reading a status that another projection's stop made the wait return early.
    let names: Vec<&str> = side.status().into_iter().map(|s| s.name).collect();
    for name in names.into_iter().filter(|n| *n != "accounts") {
        let err = side
            .wait_for_projection(name, after, WAIT)
            .await
            .unwrap_err();
        assert_eq!(err.code(), "PROJECTION_STOPPED", "{name}");
    }
    // The accounts projection reached `after` above; it reports Live once its subscription
    // has said it caught up, which may come a moment later.
    let deadline = std::time::Instant::now() + WAIT;
    while side
        .status()
        .iter()
        .any(|s| s.name == "accounts" && s.state != ProjectionState::Live)
        && std::time::Instant::now() < deadline
    {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    for s in side.status() {
        if s.name == "accounts" {
            assert_eq!(s.state, ProjectionState::Live);
            continue;
        }
        assert_eq!(s.checkpoint, good, "{} kept only what it applied", s.name);
        let ProjectionState::Failed { error } = &s.state else {
            panic!("{} did not fail: {:?}", s.name, s.state);
        };
        let at = format!(
            "{stream}@{} (position {})",
            version + 1,
            bad.last_position()
        );
        assert!(
            error.contains("HoldPlaced") && error.contains(&at),
            "{error}"
        );
    }
    // Queries keep answering from what was applied.
    assert_eq!(side.catalogue().event(e).unwrap().tiers[0].held, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn catalogue_lists_with_filters_and_stable_cursor_pages() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut sim = Sim::new(store.clone());
    let mut ids = Vec::new();
    for i in 0..7 {
        let venue = if i % 2 == 0 { "Main Hall" } else { "Club" };
        // Two events share a start time: the id breaks the tie.
        let days = if i == 3 { 2 } else { i + 1 };
        ids.push(
            sim.create_event(&format!("Show {i}"), venue, days, 10, &[])
                .await,
        );
    }
    sim.cancel_event(ids[6]).await.unwrap();
    let side = in_memory(&store);
    side.catch_up(WAIT).await.unwrap();
    let cat = side.catalogue();

    let mut all = Vec::new();
    let mut page = cat
        .list(&EventFilter::default(), &PageRequest::first(3))
        .unwrap();
    loop {
        all.extend(page.items.iter().map(|e| e.event_id));
        if !page.has_next_page {
            break;
        }
        let cursor = page.end_cursor.clone().unwrap();
        page = cat
            .list(&EventFilter::default(), &PageRequest::after(3, cursor))
            .unwrap();
    }
    let mut expected = ids.clone();
    expected.sort_by_key(|id| {
        let v = cat.event(*id).unwrap();
        (v.details.starts_at, *id)
    });
    assert_eq!(all, expected);

    let hall = EventFilter {
        text: Some("  main HALL ".into()),
        ..Default::default()
    };
    let found = cat.list(&hall, &PageRequest::first(50)).unwrap();
    assert_eq!(found.items.len(), 4);
    let published = EventFilter {
        statuses: Some(vec![EventStatus::Published]),
        starts_from: Some(sim.now + Span::days(2)),
        starts_before: Some(sim.now + Span::days(6)),
        ..Default::default()
    };
    let found: Vec<_> = cat
        .list(&published, &PageRequest::first(50))
        .unwrap()
        .items
        .into_iter()
        .map(|e| e.details.name)
        .collect();
    assert_eq!(found.len(), 4, "{found:?}");
    assert!(!found.contains(&"Show 0".to_string()));
    let by_name = EventFilter {
        text: Some("show 6".into()),
        statuses: Some(vec![EventStatus::Cancelled]),
        ..Default::default()
    };
    assert_eq!(
        cat.list(&by_name, &PageRequest::first(5))
            .unwrap()
            .items
            .len(),
        1
    );
    assert_eq!(cat.events_by_ids(&[ids[0], EventId(Uuid::nil())]).len(), 1);

    // Bad input is refused with a stable code, never a panic.
    let bad = |f: &EventFilter, p: &PageRequest| cat.list(f, p).unwrap_err();
    for err in [
        bad(&EventFilter::default(), &PageRequest::first(0)),
        bad(&EventFilter::default(), &PageRequest::first(10_000)),
        bad(&EventFilter::default(), &PageRequest::after(5, "garbage!")),
        bad(
            &EventFilter::default(),
            &PageRequest::after(5, "eyJhIjoxfQ"),
        ),
        bad(
            &EventFilter {
                text: Some("x".repeat(500)),
                ..Default::default()
            },
            &PageRequest::first(5),
        ),
        bad(
            &EventFilter {
                starts_from: Some(sim.now),
                starts_before: Some(sim.now),
                ..Default::default()
            },
            &PageRequest::first(5),
        ),
    ] {
        assert!(matches!(err, QueryError::InvalidInput(_)));
        assert_eq!(err.code(), "INVALID_INPUT");
    }
    // A cursor of another list is refused too.
    let orders_page = side
        .orders()
        .orders_of_user(buyer(1), &PageRequest::first(1))
        .unwrap();
    assert!(orders_page.items.is_empty() && orders_page.end_cursor.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purchase_history_and_sales_per_tier_and_day() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut sim = Sim::new(store.clone());
    let e = sim.create_event("Fair", "Park", 20, 100, &[]).await;
    let mut orders = Vec::new();
    for _ in 0..5 {
        let (o, _) = sim.hold(e, 1, 2).await.unwrap();
        orders.push(o);
    }
    sim.pay(e, orders[0]).await.unwrap();
    sim.pay(e, orders[1]).await.unwrap();
    sim.now += Span::days(1);
    sim.cancel_order(e, orders[1]).await.unwrap();
    sim.expire(e, orders[2]).await.unwrap();
    let side = in_memory(&store);
    side.catch_up(WAIT).await.unwrap();

    let mut seen = Vec::new();
    let mut page = side
        .orders()
        .orders_of_user(buyer(1), &PageRequest::first(2))
        .unwrap();
    loop {
        seen.extend(page.items.iter().map(|o| (o.order_id, o.status)));
        if !page.has_next_page {
            break;
        }
        page = side
            .orders()
            .orders_of_user(buyer(1), &PageRequest::after(2, page.end_cursor.unwrap()))
            .unwrap();
    }
    let expected: Vec<_> = orders
        .iter()
        .rev()
        .map(|o| (*o, sim.state(e).order(*o).unwrap().status))
        .collect();
    assert_eq!(seen, expected, "newest first, statuses as decided");
    let tickets = side.orders().tickets_of_user(buyer(1));
    assert_eq!(tickets.len(), 4);
    let voided = tickets
        .iter()
        .filter(|t| t.status == domain::inventory::TicketStatus::Void)
        .count();
    assert_eq!(voided, 2);
    assert_eq!(
        side.orders().ticket(tickets[0].ticket_id).unwrap(),
        tickets[0]
    );
    let ids: Vec<_> = tickets.iter().map(|t| t.ticket_id).collect();
    assert_eq!(side.orders().tickets_by_ids(&ids).len(), 4);
    assert_eq!(side.orders().orders_by_ids(&orders).len(), 5);

    let sales = side.sales().event_sales(e).unwrap();
    let ga = &sales.tiers[0].figures;
    assert_eq!((ga.sold, ga.held, ga.cancelled), (2, 4, 2));
    let eur = domain::money::Currency::parse("EUR").unwrap();
    assert_eq!(
        ga.revenue[&eur], 10_000,
        "two paid orders of 10000, one refunded"
    );
    assert_eq!(sales.days.len(), 2);
    assert_eq!(sales.days[0].figures.sold, 4);
    assert_eq!(sales.days[0].figures.revenue[&eur], 20_000);
    assert_eq!(sales.days[1].figures.cancelled, 2);
    assert_eq!(sales.days[1].figures.revenue[&eur], -10_000);
    assert!(side.sales().event_sales(EventId(Uuid::nil())).is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_history_and_state_at_fold_with_the_domain_and_refuse_bad_points() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut sim = Sim::new(store.clone());
    let created_at = sim.now;
    let e = sim.create_event("Audit", "Vault", 9, 10, &[]).await;
    sim.now += Span::minutes(5);
    let (order, _) = sim.hold(e, 3, 4).await.unwrap();
    let hold_version = store
        .stream_version(&StreamName::new(domain::ids::streams::inventory(e)).unwrap())
        .await
        .unwrap()
        .unwrap();
    sim.now += Span::minutes(1);
    sim.pay(e, order).await.unwrap();

    let history = audit::history(store.as_ref(), e, &no_progress)
        .await
        .unwrap();
    let head = history.last().unwrap().version;
    assert!(
        history
            .windows(2)
            .all(|w| w[0].version + 1 == w[1].version && w[0].position < w[1].position)
    );
    assert_eq!(history[0].event_type, "EventCreated");
    assert_eq!(history[0].acting_user, Some(organizer_id().0));
    assert_eq!(history[0].data["organizer"], organizer_id().to_string());
    let hold = history
        .iter()
        .find(|h| h.event_type == "HoldPlaced")
        .unwrap();
    assert_eq!(hold.acting_user, Some(buyer(3).0));
    assert_eq!(hold.data["quantity"], 4);
    // One page of it: exactly the entries asked for, the same as in the whole history.
    let page = audit::history_page(store.as_ref(), e, 2, 3).await.unwrap();
    assert_eq!(page, history[2..5]);
    let tail = audit::history_page(store.as_ref(), e, head, 100)
        .await
        .unwrap();
    assert_eq!(tail, history[history.len() - 1..]);
    assert!(
        audit::history_page(store.as_ref(), e, head + 1, 100)
            .await
            .unwrap()
            .is_empty()
    );

    let at_hold = audit::state_at(store.as_ref(), e, AsOf::Version(hold_version), &no_progress)
        .await
        .unwrap();
    assert_eq!(at_hold.state.tiers[0].held, 4);
    assert_eq!(at_hold.state.tiers[0].sold, 0);
    assert_eq!(at_hold.state.invariant_violation, None);
    let by_time = audit::state_at(
        store.as_ref(),
        e,
        AsOf::Time(created_at + Span::minutes(5) + Span::seconds(30)),
        &no_progress,
    )
    .await
    .unwrap();
    assert_eq!(by_time.version, hold_version);
    let by_position = audit::state_at(
        store.as_ref(),
        e,
        AsOf::Position(at_hold.position),
        &no_progress,
    )
    .await
    .unwrap();
    assert_eq!(by_position, at_hold);
    let now = audit::state_at(store.as_ref(), e, AsOf::Head, &no_progress)
        .await
        .unwrap();
    assert_eq!(now.version, head);
    assert_eq!(now.state.tiers[0].sold, 4);
    assert_eq!(now.state.tickets.len(), 4);

    let missing = EventId(Uuid::from_u128(404));
    for err in [
        audit::history(store.as_ref(), missing, &no_progress)
            .await
            .unwrap_err(),
        audit::state_at(store.as_ref(), missing, AsOf::Head, &no_progress)
            .await
            .unwrap_err(),
    ] {
        assert_eq!(err, AuditError::NotFound(missing));
        assert_eq!(err.code(), "NOT_FOUND");
    }
    let err = audit::state_at(store.as_ref(), e, AsOf::Version(head + 1), &no_progress)
        .await
        .unwrap_err();
    assert!(
        matches!(err, AuditError::VersionBeyondHead { requested, head: h, .. } if requested == head + 1 && h == head)
    );
    assert_eq!(err.code(), "INVALID_INPUT");
    let err = audit::state_at(
        store.as_ref(),
        e,
        AsOf::Time(created_at - Span::seconds(1)),
        &no_progress,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AuditError::BeforeCreation { .. }), "{err}");
    let err = audit::state_at(
        store.as_ref(),
        e,
        AsOf::Position(Position::START),
        &no_progress,
    )
    .await
    .unwrap_err();
    assert!(matches!(err, AuditError::BeforeCreation { .. }), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn periodic_snapshots_let_another_process_resume_without_a_clean_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let mut sim = Sim::new(store.clone());
    sim.scenario().await;
    let side = ReadSide::start(
        store.clone(),
        ReadSideOptions {
            snapshot_dir: Some(dir.path().to_path_buf()),
            runner: projections::RunnerOptions {
                snapshot_every_events: 10,
                snapshot_interval: Duration::from_millis(20),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .unwrap();
    let head = side.catch_up(WAIT).await.unwrap();
    // The running side snapshots on its own; no shutdown happens before the reader opens.
    let reader = SnapshotStore::open_read_only(dir.path()).unwrap().unwrap();
    let deadline = tokio::time::Instant::now() + WAIT;
    for name in side.projection_names() {
        loop {
            let raw = reader.raw(name).unwrap();
            let at = raw
                .and_then(|r| serde_json::from_slice::<serde_json::Value>(&r).ok())
                .and_then(|v| v["checkpoint"].as_u64());
            if at == Some(head.0) {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{name} never snapshotted the head"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let beside = ReadSide::start(
        store.clone(),
        ReadSideOptions {
            snapshot_dir: Some(dir.path().to_path_buf()),
            read_only: true,
            ..Default::default()
        },
    )
    .unwrap();
    beside.catch_up(WAIT).await.unwrap();
    assert!(
        beside
            .status()
            .iter()
            .all(|s| s.applied == 0 && s.checkpoint == head)
    );
    assert_eq!(beside.dump(), side.dump());
    side.shutdown().await;
    beside.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_writers_readers_and_a_rebuild_end_in_models_equal_to_the_history() {
    let dir = tempfile::tempdir().unwrap();
    let store = open_store(dir.path());
    let side = Arc::new(persistent(&store, dir.path()));
    let mut writers = Vec::new();
    for w in 0..6u128 {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            // Each writer is its own command side for its own events, as actors are.
            let mut sim = Sim::new(store).with_ids_from(w * 1_000_000);
            let e = sim
                .create_event(&format!("Load {w}"), "Dome", 5, 40, &["R-1", "R-2", "R-3"])
                .await;
            for i in 0..40u128 {
                match sim.hold(e, w * 100 + i, 1 + (i % 2) as i64).await {
                    Ok((o, _)) if i % 3 == 0 => {
                        sim.pay(e, o).await.unwrap();
                    }
                    Ok((o, _)) if i % 3 == 1 => {
                        sim.expire(e, o).await.unwrap();
                    }
                    _ => {}
                }
                if i == 20 {
                    let o = sim.hold_seats(e, w * 100 + 99, &["R-2"]).await.unwrap();
                    sim.pay(e, o).await.unwrap();
                }
            }
            e
        }));
    }
    let writing = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let reader = {
        let side = side.clone();
        let writing = writing.clone();
        tokio::spawn(async move {
            let mut queries = 0u64;
            while writing.load(std::sync::atomic::Ordering::Relaxed) {
                let page = side
                    .catalogue()
                    .list(&EventFilter::default(), &PageRequest::first(3))
                    .unwrap();
                // A rebuild may empty the catalogue between two queries; each answer is
                // still whole.
                let views = page
                    .items
                    .iter()
                    .filter_map(|e| side.catalogue().event(e.event_id));
                for v in page.items.iter().cloned().chain(views) {
                    // Counts are never torn: sold + held + available is the capacity.
                    for t in &v.tiers {
                        assert_eq!(t.sold + t.held + t.available, t.capacity, "{t:?}");
                    }
                    queries += 1;
                }
                side.orders()
                    .orders_of_user(buyer(1), &PageRequest::first(10))
                    .unwrap();
                tokio::task::yield_now().await;
            }
            queries
        })
    };
    tokio::time::sleep(Duration::from_millis(30)).await;
    side.rebuild("catalogue").await.unwrap();
    let mut events = Vec::new();
    for w in writers {
        events.push(w.await.unwrap());
    }
    writing.store(false, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.await.unwrap() > 0);
    side.catch_up(WAIT).await.unwrap();
    let report = audit::verify(store.as_ref(), &side, &no_progress)
        .await
        .unwrap();
    assert_eq!(report.differences, vec![], "{report:#?}");
    assert_eq!(report.streams, 6);
    let fresh = in_memory(&store);
    fresh.catch_up(WAIT).await.unwrap();
    assert_eq!(side.dump(), fresh.dump());
    for e in events {
        let sold: u32 = side
            .catalogue()
            .event(e)
            .unwrap()
            .tiers
            .iter()
            .map(|t| t.sold)
            .sum();
        assert!(sold > 0);
    }
    side.shutdown().await;
}
