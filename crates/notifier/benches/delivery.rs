//! Delivery benchmark: a purchase burst of `BENCH_N` confirmed orders appended to a real
//! store on disk, delivered by the notifier to a real SMTP server in its own process.
//!
//! Prints, per run and as the median of `BENCH_RUNS` runs: emails delivered per second
//! (from the first append to the last email accepted), the planner's throughput (events
//! planned per second), the lag behind the store's head sampled every 5 ms during the
//! burst (max and p50), and the delay from planning to delivery (p50, p99).
//!
//! `cargo bench -p notifier --bench delivery` (set `BENCH_N`, `BENCH_RUNS`,
//! `BENCH_CONCURRENCY` to change the defaults of 2000, 3 and 8).

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use chrono::Utc;
use domain::account::{AccountEvent, AccountRegistered};
use domain::ids::{Email, streams};
use domain::inventory::{EventCreated, InventoryEvent, IssuedTicket, OrderConfirmed};
use domain::money::Money;
use domain::{EventId, OrderId, Role, TicketId, UserId};
use hdrhistogram::Histogram;
use notifier::{ChannelKind, Notifier, NotifierConfig, RetryPolicy, SmtpConfig, WorkerConfig};
use store::sqlite::{Durability, SqliteOptions, SqliteStore};
use store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use uuid::Uuid;

const ROLE_ENV: &str = "NOTIFIER_BENCH_ROLE";

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    if std::env::var(ROLE_ENV).as_deref() == Ok("smtp-sink") {
        let addr = std::env::var("SINK_ADDR").expect("SINK_ADDR");
        let dir = PathBuf::from(std::env::var("SINK_DIR").expect("SINK_DIR"));
        let listener = TcpListener::bind(&addr).expect("bind sink");
        smtp_sink::serve(listener, dir, 32).expect("sink");
        return;
    }
    // `cargo test --benches` runs bench targets with `--bench` absent: do nothing then.
    if !std::env::args().any(|a| a == "--bench") {
        println!("delivery benchmark: run with `cargo bench -p notifier --bench delivery`");
        return;
    }
    let n = env_or("BENCH_N", 2000);
    let runs = env_or("BENCH_RUNS", 3).max(1);
    let concurrency = env_or("BENCH_CONCURRENCY", 8);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!(
        "notifier delivery benchmark: {n} confirmed orders per run, {runs} runs, SMTP concurrency {concurrency}"
    );
    let mut results = Vec::new();
    for run in 1..=runs {
        let r = rt.block_on(one_run(n, concurrency));
        println!(
            "run {run}: {:.0} emails/s, planned {:.0} events/s, lag max {} p50 {} events, plan-to-delivery p50 {} ms p99 {} ms, {} emails in {:.2} s",
            r.emails_per_sec,
            r.planned_per_sec,
            r.lag_max,
            r.lag_p50,
            r.delivery_p50_ms,
            r.delivery_p99_ms,
            r.emails,
            r.elapsed_s
        );
        results.push(r);
    }
    let median = |f: fn(&RunResult) -> f64| {
        let mut v: Vec<f64> = results.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "median of {runs}: {:.0} emails/s, planned {:.0} events/s, lag max {:.0} events, lag p50 {:.0} events, plan-to-delivery p50 {:.0} ms p99 {:.0} ms",
        median(|r| r.emails_per_sec),
        median(|r| r.planned_per_sec),
        median(|r| r.lag_max as f64),
        median(|r| r.lag_p50 as f64),
        median(|r| r.delivery_p50_ms as f64),
        median(|r| r.delivery_p99_ms as f64),
    );
}

struct RunResult {
    emails: u64,
    elapsed_s: f64,
    emails_per_sec: f64,
    planned_per_sec: f64,
    lag_max: u64,
    lag_p50: u64,
    delivery_p50_ms: u64,
    delivery_p99_ms: u64,
}

struct SinkProcess(Child);

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sink(dir: &Path) -> (SinkProcess, u16) {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let child = Command::new(std::env::current_exe().expect("exe"))
        .env(ROLE_ENV, "smtp-sink")
        .env("SINK_ADDR", format!("127.0.0.1:{port}"))
        .env("SINK_DIR", dir)
        .stdout(Stdio::null())
        .stdin(Stdio::null())
        .spawn()
        .expect("spawn sink");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
        assert!(Instant::now() < deadline, "sink did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (SinkProcess(child), port)
}

fn meta() -> Metadata {
    Metadata {
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        acting_user: None,
        recorded_at: Utc::now(),
    }
}

fn encode<E: domain::codec::EventCodec>(e: &E) -> NewEvent {
    let (t, v, json) = domain::codec::encode(e);
    NewEvent::new(t, v, json, meta())
}

async fn append<E: domain::codec::EventCodec>(store: &SqliteStore, stream: &str, events: &[E]) {
    store
        .append(
            &StreamName::new(stream).expect("stream"),
            ExpectedVersion::Any,
            events.iter().map(encode).collect(),
        )
        .await
        .expect("append");
}

async fn one_run(n: usize, concurrency: usize) -> RunResult {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(
        SqliteStore::open(
            dir.path().join("events.db"),
            SqliteOptions {
                durability: Durability::Full,
                verify_on_open: false,
                ..SqliteOptions::default()
            },
        )
        .expect("store"),
    );
    let (_sink, port) = start_sink(&dir.path().join("mail"));

    // Accounts and the event exist before the on-sale minute.
    let mut users = Vec::with_capacity(n);
    for i in 0..n {
        let user = UserId(Uuid::now_v7());
        append(
            &store,
            &streams::user(user),
            &[AccountEvent::AccountRegistered(AccountRegistered {
                user_id: user,
                email: Email::parse(&format!("buyer{i}@example.com")).expect("email"),
                display_name: format!("Buyer {i}"),
                password_hash: "x".into(),
                roles: BTreeSet::from([Role::Customer]),
                at: Utc::now(),
            })],
        )
        .await;
        users.push(user);
    }
    let event = EventId(Uuid::now_v7());
    append(
        &store,
        &streams::inventory(event),
        &[InventoryEvent::EventCreated(EventCreated {
            event_id: event,
            organizer: UserId(Uuid::now_v7()),
            details: domain::inventory::EventDetails {
                name: "Bench Live".into(),
                description: String::new(),
                venue: "Arena".into(),
                starts_at: Utc::now() + chrono::Duration::days(30),
                ends_at: Utc::now() + chrono::Duration::days(30) + chrono::Duration::hours(3),
                images: vec![],
            },
        })],
    )
    .await;

    let mut config = NotifierConfig::new(dir.path().join("notifier.db"));
    let mut smtp = SmtpConfig::plain("127.0.0.1", port, "Ticketing <tickets@bench.test>");
    smtp.max_connections = concurrency as u32;
    config.smtp = Some(smtp);
    config.email = WorkerConfig {
        retry: RetryPolicy::default(),
        concurrency,
        idle_poll: Duration::from_millis(200),
    };
    let handle = Notifier::start(config, store.clone())
        .await
        .expect("notifier");
    let notifications = handle.notifications();
    // Let it plan the accounts before the burst starts.
    let head = store.head().await.expect("head");
    while notifications.checkpoint().await.expect("checkpoint") < head {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Lag sampler.
    let sampling = Arc::new(AtomicBool::new(true));
    let sampler = {
        let sampling = sampling.clone();
        let notifications = notifications.clone();
        tokio::spawn(async move {
            let mut lags = Histogram::<u64>::new(3).expect("histogram");
            while sampling.load(Ordering::Relaxed) {
                if let Ok(lag) = notifications.lag().await {
                    lags.record(lag).expect("record");
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            lags
        })
    };

    // The burst: one append per order from 16 concurrent buyers, as inventory actors do.
    let start = Instant::now();
    let per_task = n.div_ceil(16);
    let mut tasks = Vec::new();
    for chunk in users.chunks(per_task) {
        let chunk = chunk.to_vec();
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            for user in chunk {
                let order = OrderConfirmed {
                    order_id: OrderId(Uuid::now_v7()),
                    user_id: user,
                    payment_ref: "bench".into(),
                    amount: Money::price(4500, "EUR").expect("price"),
                    tickets: vec![IssuedTicket {
                        ticket_id: TicketId(Uuid::now_v7()),
                        secret: "s".into(),
                        seat: None,
                    }],
                    at: Utc::now(),
                    command: None,
                };
                append(
                    &store,
                    &streams::inventory(event),
                    &[InventoryEvent::OrderConfirmed(order)],
                )
                .await;
            }
        }));
    }
    for t in tasks {
        t.await.expect("append task");
    }
    let head = store.head().await.expect("head");
    while notifications.checkpoint().await.expect("checkpoint") < head {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let planned_at = start.elapsed();
    loop {
        let counts = notifications.outbox_counts().await.expect("counts");
        let sent = counts
            .get(&(ChannelKind::Email, "delivered".into()))
            .copied()
            .unwrap_or(0);
        if sent as usize >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let elapsed = start.elapsed();
    sampling.store(false, Ordering::Relaxed);
    let lags = sampler.await.expect("sampler");
    handle.shutdown().await;

    // Plan-to-delivery delays, from the notifier's own bookkeeping.
    let conn = rusqlite::Connection::open(dir.path().join("notifier.db")).expect("open db");
    let mut delays = Histogram::<u64>::new(3).expect("histogram");
    let mut stmt = conn
        .prepare(
            "SELECT delivered_at - created_at FROM outbox
             WHERE channel = 'email' AND status = 'delivered'",
        )
        .expect("prepare");
    let rows = stmt.query_map([], |r| r.get::<_, i64>(0)).expect("query");
    for d in rows {
        delays
            .record(d.expect("row").max(0) as u64)
            .expect("record");
    }
    let emails = smtp_sink::read_messages(&dir.path().join("mail"))
        .expect("read sink")
        .len() as u64;
    RunResult {
        emails,
        elapsed_s: elapsed.as_secs_f64(),
        emails_per_sec: n as f64 / elapsed.as_secs_f64(),
        planned_per_sec: n as f64 / planned_at.as_secs_f64(),
        lag_max: lags.max(),
        lag_p50: lags.value_at_quantile(0.5),
        delivery_p50_ms: delays.value_at_quantile(0.5),
        delivery_p99_ms: delays.value_at_quantile(0.99),
    }
}
