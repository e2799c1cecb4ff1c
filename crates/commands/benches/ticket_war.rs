//! The ticket war, measured: durable purchases per second and their latency on the embedded
//! SQLite store with durability on (`synchronous=FULL`, one fsync per group commit).
//!
//! Scenarios:
//! * one hot event, 1, 64 and 1,024 concurrent buyers, each looping one-ticket purchases
//!   (`CommandService::purchase`: a hold, a charge at the simulated provider, a confirmation;
//!   two durable decisions);
//! * 100 events at once, 1,024 buyers spread over them;
//! * memory: peak RSS of the process, and the heap held by idle loaded actors of events with
//!   1,000 sold tickets each (live heap bytes measured by a counting allocator, before and
//!   after loading them).
//!
//! Run: `cargo bench -p commands --bench ticket_war` (set `BENCH_QUICK=1` for a short run,
//! `BENCH_DIR` to put the database elsewhere than the temporary directory).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use commands::{CommandConfig, CommandService, PayOutcome, RequestContext, SystemClock};
use domain::aggregate::{Actor, Role};
use domain::inventory::{
    DetailsInput, InventoryCommand, InventoryOutcome, Selection, TierKindInput,
};
use domain::{EventId, TierId, UserId};
use hdrhistogram::Histogram;
use payments::{ChannelSink, SimulatedProvider, SimulatorConfig, test_tokens};
use store::sqlite::{SqliteOptions, SqliteStore};
use uuid::Uuid;

/// Counts live heap bytes so that the memory of loaded actors can be measured exactly.
struct Counting;

static LIVE: AtomicI64 = AtomicI64::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as i64, Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as i64 - layout.size() as i64, Ordering::Relaxed);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn organizer() -> Actor {
    Actor::user(UserId(Uuid::from_u128(1)), [Role::Organizer])
}

fn ctx(actor: &Actor) -> RequestContext {
    RequestContext::new(actor.clone(), Uuid::now_v7().to_string())
}

struct Setup {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    provider: SimulatedProvider,
    service: CommandService,
}

async fn setup() -> Setup {
    let dir = match std::env::var_os("BENCH_DIR") {
        Some(base) => tempfile::tempdir_in(base),
        None => tempfile::tempdir(),
    }
    .expect("temp dir");
    let options = SqliteOptions {
        verify_on_open: false,
        ..SqliteOptions::default()
    };
    let store = SqliteStore::open(dir.path().join("events.sqlite3"), options).expect("store");
    let (sink, _webhooks) = ChannelSink::new();
    let provider = SimulatedProvider::new(SimulatorConfig::new(b"bench".to_vec()), Arc::new(sink));
    let service = start(&store, &provider).await;
    Setup {
        _dir: dir,
        store,
        provider,
        service,
    }
}

async fn start(store: &SqliteStore, provider: &SimulatedProvider) -> CommandService {
    let mut config = CommandConfig::default();
    // BENCH_DEPTH=N: appends each actor keeps in flight (to compare with the default).
    if let Some(depth) = std::env::var("BENCH_DEPTH")
        .ok()
        .and_then(|d| d.parse().ok())
    {
        config.actor.appends_in_flight = depth;
    }
    // BENCH_EARLY=N: commands a batch needs to go to the store while others are in flight.
    if let Some(early) = std::env::var("BENCH_EARLY")
        .ok()
        .and_then(|d| d.parse().ok())
    {
        config.actor.early_batch_commands = early;
    }
    CommandService::start(
        Arc::new(store.clone()),
        Arc::new(SystemClock),
        Arc::new(provider.clone()),
        config,
    )
    .await
    .expect("service")
}

async fn published_event(service: &CommandService, capacity: i64) -> (EventId, TierId) {
    let now = chrono::Utc::now();
    let created = service
        .create_event(
            &ctx(&organizer()),
            DetailsInput {
                name: "Bench".into(),
                description: String::new(),
                venue: "Arena".into(),
                starts_at: now + chrono::Duration::days(30),
                ends_at: now + chrono::Duration::days(31),
                images: vec![],
            },
        )
        .await
        .expect("create");
    let InventoryOutcome::EventCreated { event_id } = created.outcome else {
        panic!("not created")
    };
    let tier = TierId(Uuid::now_v7());
    for body in [
        InventoryCommand::AddTier {
            tier_id: tier,
            name: "Standard".into(),
            price_minor: 2500,
            currency: "EUR".into(),
            kind: TierKindInput::General { capacity },
        },
        InventoryCommand::Publish,
    ] {
        service
            .execute(&ctx(&organizer()), event_id, body)
            .await
            .expect("organize");
    }
    (event_id, tier)
}

struct Figures {
    purchases: u64,
    elapsed: Duration,
    latency: Histogram<u64>,
    /// CPU time of the whole process (all threads) during the run: less sensitive to other
    /// load on a shared machine than the wall clock.
    cpu: Duration,
}

impl Figures {
    fn print(&self, name: &str) {
        let us = |q: f64| self.latency.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "{name:<40} {:>9.0} purchases/s  p50 {:>7.2} ms  p99 {:>7.2} ms  p99.9 {:>7.2} ms  max {:>7.2} ms  ({} in {:.2} s, CPU {:.1} us/purchase)",
            self.purchases as f64 / self.elapsed.as_secs_f64(),
            us(0.5),
            us(0.99),
            us(0.999),
            self.latency.max() as f64 / 1000.0,
            self.purchases,
            self.elapsed.as_secs_f64(),
            self.cpu.as_secs_f64() * 1e6 / self.purchases as f64,
        );
    }
}

/// `buyers` concurrent buyers loop one-ticket purchases over `events` until `total` are
/// confirmed.
async fn war(
    service: &CommandService,
    events: &[(EventId, TierId)],
    buyers: usize,
    total: u64,
) -> Figures {
    let next = Arc::new(AtomicU64::new(0));
    let cpu_before = process_cpu();
    let started = Instant::now();
    let tasks: Vec<_> = (0..buyers)
        .map(|b| {
            let service = service.clone();
            let next = next.clone();
            let events = events.to_vec();
            tokio::spawn(async move {
                // Plain samples, merged into one histogram at the end: a histogram per buyer
                // would be hundreds of KiB each, zeroed while the war starts.
                let mut latency = Vec::<u64>::new();
                let user = Actor::user(UserId(Uuid::now_v7()), [Role::Customer]);
                let (event, tier) = events[b % events.len()];
                while next.fetch_add(1, Ordering::Relaxed) < total {
                    let t = Instant::now();
                    let r = service
                        .purchase(
                            &ctx(&user),
                            event,
                            tier,
                            Selection::Quantity { quantity: 1 },
                            test_tokens::SUCCESS,
                        )
                        .await
                        .expect("purchase");
                    assert!(matches!(r.outcome, PayOutcome::Confirmed { .. }));
                    latency.push(t.elapsed().as_micros() as u64);
                }
                latency
            })
        })
        .collect();
    let mut latency = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for t in tasks {
        for sample in t.await.expect("buyer") {
            latency.saturating_record(sample);
        }
    }
    let elapsed = started.elapsed();
    Figures {
        purchases: total,
        elapsed,
        latency,
        cpu: process_cpu().saturating_sub(cpu_before),
    }
}

/// User plus system CPU time of this process so far (from /proc; zero where unavailable).
fn process_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let Some((_, rest)) = stat.rsplit_once(')') else {
        return Duration::ZERO;
    };
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // Clock ticks are 1/100 s on Linux (USER_HZ).
    Duration::from_millis((ticks(11) + ticks(12)) * 10)
}

fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
}

fn main() {
    let quick = std::env::var_os("BENCH_QUICK").is_some();
    // BENCH_ONLY=hot|events|memory runs one part, BENCH_BUYERS=N only the hot event with N
    // buyers (for profiling).
    let buyers_only: Option<usize> = std::env::var("BENCH_BUYERS")
        .ok()
        .and_then(|b| b.parse().ok());
    let only = std::env::var("BENCH_ONLY").ok();
    let runs = |part: &str| only.as_deref().is_none_or(|o| o == part);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let scale = if quick { 1 } else { 4 };
        println!(
            "durable purchases on SQLite (synchronous=FULL), {} cores",
            std::thread::available_parallelism().map_or(0, |n| n.get())
        );
        let hot: &[(usize, u64)] = if runs("hot") {
            &[(1, 500), (64, 10_000), (1024, 25_000)]
        } else {
            &[]
        };
        for &(buyers, total) in hot {
            if buyers_only.is_some_and(|b| b != buyers) {
                continue;
            }
            let total = total * scale;
            let s = setup().await;
            let event = published_event(&s.service, 1_000_000).await;
            let figures = war(&s.service, &[event], buyers, total).await;
            figures.print(&format!("one hot event, {buyers} buyers"));
            let stats = s.store.stats();
            let commits = stats.commits.max(1) as f64;
            let ms = |nanos: u64| nanos as f64 / 1e6 / commits;
            println!(
                "{:<40} {} commits, {:.1} appends and {:.1} events per commit; writer per commit: insert {:.2} ms, commit {:.2} ms, checkpoints {:.2} ms ({} on the writer of {})",
                "",
                stats.commits,
                stats.appends as f64 / commits,
                stats.events as f64 / commits,
                ms(stats.insert_nanos),
                ms(stats.commit_nanos),
                ms(stats.checkpoint_nanos),
                stats.writer_checkpoints,
                stats.checkpoints,
            );
            s.service.stop();
        }
        if runs("events") {
            let s = setup().await;
            let mut events = Vec::new();
            for _ in 0..100 {
                events.push(published_event(&s.service, 1_000_000).await);
            }
            let figures = war(&s.service, &events, 1024, 25_000 * scale).await;
            figures.print("100 events, 1024 buyers");
            s.service.stop();
        }
        if !runs("memory") {
            return;
        }
        // Memory of idle loaded actors: events with 1,000 sold tickets each.
        let s = setup().await;
        let count = if quick { 10 } else { 50 };
        let mut events = Vec::new();
        for _ in 0..count {
            let event = published_event(&s.service, 1000).await;
            // 1,000 buyers, one ticket each: the worst case (every order and buyer distinct).
            war(&s.service, &[event], 1000, 1000).await;
            events.push(event);
        }
        s.service.stop();
        tokio::time::sleep(Duration::from_millis(200)).await;
        let fresh = start(&s.store, &s.provider).await;
        // Warm the store's readers and the runtime with one load first.
        fresh.read(events[0].0, |_| ()).await.expect("warm up");
        let before = LIVE.load(Ordering::Relaxed);
        for event in &events[1..] {
            fresh.read(event.0, |_| ()).await.expect("load");
        }
        let after = LIVE.load(Ordering::Relaxed);
        let per_actor = (after - before) as f64 / (events.len() - 1) as f64;
        println!(
            "idle loaded actor, 1,000 sold tickets: {:.1} KiB of heap each ({} actors)",
            per_actor / 1024.0,
            events.len() - 1
        );
        // The share of the domain state alone: the same stream folded outside an actor.
        let stream = commands::actor::stream_name(events[1].0).expect("stream");
        let recorded = store::EventStore::read_stream(&s.store, &stream, 0, 1_000_000)
            .await
            .expect("read");
        let decoded: Vec<_> = recorded
            .iter()
            .map(|r| commands::codec::decode(r).expect("decode"))
            .collect();
        drop(recorded);
        let before = LIVE.load(Ordering::Relaxed);
        let folded = <domain::inventory::Inventory as domain::Aggregate>::replay(decoded.iter());
        let state_bytes = LIVE.load(Ordering::Relaxed) - before;
        assert_eq!(folded.tickets().count(), 1000);
        println!(
            "of which the folded Inventory alone: {:.1} KiB",
            state_bytes as f64 / 1024.0
        );
        println!("peak RSS: {} MiB", peak_rss_kib().unwrap_or(0) / 1024);
    });
}
