//! Benchmarks of the embedded store with durability on (WAL, synchronous=FULL), on disk.
//!
//! Prints, for 1, 64 and 1,024 concurrent appenders of one-event appends: appends/s,
//! p50/p99/max latency and how many appends shared each commit; the same for one hot stream
//! with 1,024 pipelined appends in flight; then the catch-up rate of
//! a subscription over 1,000,000 stored events, and the peak resident memory.
//!
//! `cargo bench -p store --bench store` (set `STORE_BENCH_SECS` to change the length of
//! each append run, `STORE_BENCH_EVENTS` the size of the catch-up store, and
//! `STORE_BENCH_DIR` where the files go, the default being the target directory, on disk;
//! `STORE_BENCH_ONLY=append1|append64|append1024|hot|stream64|stream1000|catchup` runs one
//! part).
//!
//! `stream64` and `stream1000` mirror the inventory actor of a hot event: ONE stream,
//! back-to-back appends of 64 or 1,000 events of ~400 bytes, one append in flight, until
//! both `STORE_BENCH_STREAM_SECS` (10) seconds and `STORE_BENCH_STREAM_EVENTS` (400,000)
//! events are reached (at most a minute). With one append in flight each append is one
//! commit, so its latency is the commit's; the commits that ran a checkpoint are counted
//! apart.
//!
//! `STORE_BENCH_CHECKPOINTS=in-commit|background` and `STORE_BENCH_CHECKPOINT_PAGES` pick the
//! checkpoint policy, to compare policies with one binary.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use hdrhistogram::Histogram;
use store::sqlite::{Checkpoints, SqliteOptions, SqliteStore};
use store::{
    EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamName, SubscriptionMessage,
};
use uuid::Uuid;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The store's settings: the defaults, but for `STORE_BENCH_CHECKPOINTS=in-commit|background`
/// and `STORE_BENCH_CHECKPOINT_PAGES`, to compare checkpoint policies with one binary.
fn options() -> SqliteOptions {
    let defaults = SqliteOptions::default();
    let checkpoints = match std::env::var("STORE_BENCH_CHECKPOINTS").as_deref() {
        Ok("in-commit") => Checkpoints::InCommit,
        Ok("background") => Checkpoints::Background,
        _ => defaults.checkpoints,
    };
    SqliteOptions {
        checkpoints,
        checkpoint_pages: env_or("STORE_BENCH_CHECKPOINT_PAGES", defaults.checkpoint_pages),
        ..defaults
    }
}

fn bench_dir() -> PathBuf {
    std::env::var_os("STORE_BENCH_DIR")
        .map_or_else(|| PathBuf::from(env!("CARGO_TARGET_TMPDIR")), PathBuf::from)
}

// Stream names are realistic (`inventory-<uuid>`): the per-stream index's size, and so the
// pages each commit dirties, depend on them.

/// A typical domain event: ~200 bytes of JSON with full metadata.
fn event(n: u64) -> NewEvent {
    let data = format!(
        r#"{{"hold_id":"{}","tier":"standard","quantity":2,"seq":{n},"expires_at":"2026-11-21T06:10:00Z"}}"#,
        Uuid::now_v7()
    );
    NewEvent::new(
        "TicketsHeld",
        1,
        data.into_bytes(),
        Metadata {
            correlation_id: Uuid::now_v7(),
            causation_id: Some(Uuid::now_v7()),
            acting_user: Some(Uuid::now_v7()),
            recorded_at: Utc::now(),
        },
    )
}

/// An event of ~400 bytes of JSON data with full metadata, the size of a purchase's events.
fn sized_event(n: u64) -> NewEvent {
    let data = format!(
        r#"{{"order_id":"{}","hold_id":"{}","buyer_id":"{}","tier":"standard","quantity":2,"unit_price_cents":12500,"currency":"EUR","seq":{n},"seats":["A-12","A-13"],"expires_at":"2026-11-21T06:10:00Z","payment_intent":"{}","channel":"web","promotion":null,"fees_cents":350}}"#,
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
        Uuid::now_v7(),
    );
    NewEvent::new(
        "TicketsPurchased",
        1,
        data.into_bytes(),
        Metadata {
            correlation_id: Uuid::now_v7(),
            causation_id: Some(Uuid::now_v7()),
            acting_user: Some(Uuid::now_v7()),
            recorded_at: Utc::now(),
        },
    )
}

fn file_mib(path: &std::path::Path) -> f64 {
    std::fs::metadata(path).map_or(0.0, |m| m.len() as f64 / 1048576.0)
}

/// The inventory actor's shape: one stream, one append of `size` events in flight.
async fn one_stream(size: usize, min_run: Duration, min_events: u64) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("bench dir");
    let store = SqliteStore::open(dir.path(), options()).expect("open");
    let stream = StreamName::new(format!("inventory-{}", Uuid::now_v7())).expect("name");
    let mut plain = Histogram::<u64>::new(3).expect("histogram");
    let mut with_checkpoint = Histogram::<u64>::new(3).expect("histogram");
    let mut version: Option<u64> = None;
    let mut events = 0u64;
    let mut n = 0u64;
    let started = Instant::now();
    loop {
        let elapsed = started.elapsed();
        if (elapsed >= min_run && events >= min_events) || elapsed >= Duration::from_secs(60) {
            break;
        }
        let batch: Vec<NewEvent> = (0..size)
            .map(|_| {
                n += 1;
                sized_event(n)
            })
            .collect();
        let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let checkpoints = store.stats().writer_checkpoints;
        let t = Instant::now();
        let r = store
            .append(&stream, expected, batch)
            .await
            .expect("append");
        let micros = t.elapsed().as_micros() as u64;
        if store.stats().writer_checkpoints == checkpoints {
            plain.record(micros).expect("record");
        } else {
            with_checkpoint.record(micros).expect("record");
        }
        version = Some(r.last_version);
        events += size as u64;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = store.stats();
    let mut all = plain.clone();
    all.add(&with_checkpoint).expect("merge");
    let ms = |v: u64| v as f64 / 1000.0;
    println!(
        "stream  size={size:>5}  events/s={:>9.0}  commits={:>6}  commit p50={:>7.2}ms  p99={:>7.2}ms  p99.9={:>7.2}ms  max={:>7.2}ms",
        events as f64 / elapsed,
        all.len(),
        ms(all.value_at_quantile(0.50)),
        ms(all.value_at_quantile(0.99)),
        ms(all.value_at_quantile(0.999)),
        ms(all.max()),
    );
    let wal_mib = file_mib(&wal_path(store.path()));
    store.shutdown().await;
    // Closed, the log is copied into the file: its size per event is the cost on disk.
    let file = file_mib(store.path());
    println!(
        "        commits without a checkpoint on the writer: p99={:>7.2}ms max={:>7.2}ms | with one: {} max={:.2}ms | {} checkpoints in all ({:.1} ms each) | WAL at end {:.1} MiB ({} pages) | file {:.0} MiB, {:.0} bytes/event",
        ms(plain.value_at_quantile(0.99)),
        ms(plain.max()),
        with_checkpoint.len(),
        ms(with_checkpoint.max()),
        stats.checkpoints,
        stats.checkpoint_nanos as f64 / 1e6 / stats.checkpoints.max(1) as f64,
        wal_mib,
        stats.wal_pages,
        file,
        file * 1048576.0 / events.max(1) as f64,
    );
}

fn wal_path(db: &std::path::Path) -> PathBuf {
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    PathBuf::from(wal)
}

fn peak_rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .map(str::to_owned)
        })
        .and_then(|l| {
            l.split_whitespace()
                .nth(1)
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

async fn appenders(concurrency: usize, run: Duration) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("bench dir");
    let store = Arc::new(SqliteStore::open(dir.path(), options()).expect("open"));
    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (store, stop) = (store.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let stream = StreamName::new(format!("inventory-{}", Uuid::now_v7())).expect("name");
            let mut hist = Histogram::<u64>::new(3).expect("histogram");
            let mut version: Option<u64> = None;
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                let e = event(n);
                let t = Instant::now();
                let r = store
                    .append(&stream, expected, vec![e])
                    .await
                    .expect("append");
                hist.record(t.elapsed().as_micros() as u64).expect("record");
                version = Some(r.last_version);
                n += 1;
            }
            hist
        }));
    }
    tokio::time::sleep(run).await;
    stop.store(true, Ordering::Relaxed);
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    for t in tasks {
        hist.add(t.await.expect("task")).expect("merge");
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = store.stats();
    println!(
        "append  concurrency={concurrency:>5}  appends/s={:>9.0}  p50={:>7.2}ms  p99={:>7.2}ms  max={:>7.2}ms  commits/s={:>7.0}  appends/commit={:>7.1}",
        hist.len() as f64 / elapsed,
        hist.value_at_quantile(0.50) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        stats.commits as f64 / elapsed,
        stats.appends as f64 / stats.commits.max(1) as f64,
    );
    let per_append = |nanos: u64| nanos as f64 / stats.appends.max(1) as f64 / 1000.0;
    println!(
        "        writer time per append: insert={:.1}us  commit+fsync={:.1}us  reply={:.1}us  (writer busy {:.0}% of the run)",
        per_append(stats.insert_nanos),
        per_append(stats.commit_nanos),
        per_append(stats.reply_nanos),
        (stats.insert_nanos + stats.commit_nanos + stats.reply_nanos) as f64 / 1e9 / elapsed
            * 100.0,
    );
    store.shutdown().await;
}

/// One hot stream (a ticket war on one event): a single appender keeps `window` appends in
/// flight with consecutive expected versions, as the inventory actor can.
async fn hot_stream(window: usize, run: Duration) {
    use futures::stream::FuturesOrdered;
    let dir = tempfile::tempdir_in(bench_dir()).expect("bench dir");
    let store = SqliteStore::open(dir.path(), options()).expect("open");
    let stream = StreamName::new(format!("inventory-{}", Uuid::now_v7())).expect("name");
    let mut in_flight = FuturesOrdered::new();
    let mut next_version = 0u64;
    let mut hist = Histogram::<u64>::new(3).expect("histogram");
    let started = Instant::now();
    let deadline = started + run;
    loop {
        while in_flight.len() < window && Instant::now() < deadline {
            let expected = next_version
                .checked_sub(1)
                .map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            next_version += 1;
            let (store, stream, e) = (store.clone(), stream.clone(), event(next_version));
            let t = Instant::now();
            in_flight.push_back(async move {
                store
                    .append(&stream, expected, vec![e])
                    .await
                    .expect("append");
                t.elapsed()
            });
        }
        match in_flight.next().await {
            Some(latency) => hist.record(latency.as_micros() as u64).expect("record"),
            None => break,
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let stats = store.stats();
    println!(
        "hot     window={window:>5}  appends/s={:>9.0}  p50={:>7.2}ms  p99={:>7.2}ms  max={:>7.2}ms  appends/commit={:>7.1}  (one stream)",
        hist.len() as f64 / elapsed,
        hist.value_at_quantile(0.50) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        stats.appends as f64 / stats.commits.max(1) as f64,
    );
    store.shutdown().await;
}

async fn catch_up(events: u64) {
    let dir = tempfile::tempdir_in(bench_dir()).expect("bench dir");
    let store = SqliteStore::open(dir.path(), options()).expect("open");
    let fill = Instant::now();
    let mut written = 0u64;
    while written < events {
        // Appends of 100 events to 40 streams at a time: realistic rows, quick to load.
        let mut batch = Vec::new();
        for _ in 0..40 {
            if written >= events {
                break;
            }
            let n = (events - written).min(100);
            let s = StreamName::new(format!("inventory-{}", Uuid::now_v7())).expect("name");
            let evs: Vec<NewEvent> = (0..n).map(|i| event(written + i)).collect();
            written += n;
            let store = store.clone();
            batch.push(tokio::spawn(async move {
                store.append(&s, ExpectedVersion::NoStream, evs).await
            }));
        }
        for t in batch {
            t.await.expect("task").expect("append");
        }
    }
    let fill_s = fill.elapsed().as_secs_f64();
    println!(
        "fill    events={events}  rows/s={:.0}  file={:.0} MiB",
        events as f64 / fill_s,
        std::fs::metadata(store.path()).map_or(0.0, |m| m.len() as f64 / 1048576.0)
    );

    for run in 0..3 {
        let started = Instant::now();
        let mut sub = store.subscribe_all(Position::START);
        let mut seen = 0u64;
        let mut bytes = 0usize;
        while let Some(item) = sub.next().await {
            match item.expect("subscription") {
                SubscriptionMessage::Event(e) => {
                    seen += 1;
                    bytes += e.data.len();
                }
                SubscriptionMessage::CaughtUp => break,
            }
        }
        assert_eq!(seen, events);
        let secs = started.elapsed().as_secs_f64();
        println!(
            "catchup run={run}  events={seen}  events/s={:.0}  MiB/s(data)={:.1}  secs={secs:.2}",
            seen as f64 / secs,
            bytes as f64 / 1048576.0 / secs
        );
    }
    store.shutdown().await;
    drop(store);
    let reopen = Instant::now();
    let store = SqliteStore::open(dir.path(), options()).expect("reopen");
    println!(
        "reopen  events={events}  secs={:.2} (quick_check + loading stream heads)",
        reopen.elapsed().as_secs_f64()
    );
    store.shutdown().await;
}

fn main() {
    // `cargo test --benches` runs bench binaries with `--bench` absent: do a tiny run.
    let quick = !std::env::args().any(|a| a == "--bench");
    let secs: f64 = env_or("STORE_BENCH_SECS", if quick { 0.2 } else { 5.0 });
    let events: u64 = env_or("STORE_BENCH_EVENTS", if quick { 2_000 } else { 1_000_000 });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let only = std::env::var("STORE_BENCH_ONLY").unwrap_or_default();
        for concurrency in [1, 64, 1024] {
            if only.is_empty() || only == format!("append{concurrency}") {
                appenders(concurrency, Duration::from_secs_f64(secs)).await;
            }
        }
        if only.is_empty() || only == "hot" {
            hot_stream(1024, Duration::from_secs_f64(secs)).await;
        }
        let stream_secs: f64 = env_or("STORE_BENCH_STREAM_SECS", if quick { 0.2 } else { 10.0 });
        let stream_events: u64 = env_or(
            "STORE_BENCH_STREAM_EVENTS",
            if quick { 2_000 } else { 400_000 },
        );
        for size in [64, 1000] {
            if only.is_empty() || only == format!("stream{size}") {
                one_stream(size, Duration::from_secs_f64(stream_secs), stream_events).await;
            }
        }
        if only.is_empty() || only == "catchup" {
            catch_up(events).await;
        }
    });
    println!("peak RSS {:.0} MiB", peak_rss_mib());
}
