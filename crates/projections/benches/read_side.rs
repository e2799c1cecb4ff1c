//! Read-side figures: rebuild rate over a large stored history, and the delay from a
//! purchase's durable append to its availability change reaching a live reader.
//!
//! `cargo bench -p projections --bench read_side -- [EVENTS] [RUNS]` (defaults 1000000, 3).
//! Prints throughput, latency percentiles and memory; asserts nothing.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{Duration as Span, TimeZone, Utc};
use domain::inventory::*;
use domain::*;
use hdrhistogram::Histogram;
use projections::{ReadSide, ReadSideOptions};
use store::sqlite::{Durability, SqliteOptions, SqliteStore};
use store::{EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamName};
use uuid::Uuid;

fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

fn encode(
    events: &[InventoryEvent],
    actor: Option<UserId>,
    at: chrono::DateTime<Utc>,
) -> Vec<NewEvent> {
    let correlation_id = Uuid::now_v7();
    events
        .iter()
        .map(|e| {
            let (t, v, json) = domain::codec::encode(e);
            NewEvent::new(
                t,
                v,
                json,
                Metadata {
                    correlation_id,
                    causation_id: None,
                    acting_user: actor.map(|u| u.0),
                    recorded_at: at,
                },
            )
        })
        .collect()
}

/// Decides a realistic mix of commands with the domain (holds, payments, expiries and
/// releases on many events) until `target` events exist, appending each stream in large
/// chunks.
async fn generate(store: &SqliteStore, target: u64) -> u64 {
    let now = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap();
    let organizer = Actor::user(UserId(Uuid::from_u128(1)), [Role::Organizer]);
    let per_event = 2_000u64;
    let streams = target.div_ceil(per_event);
    let mut total = 0u64;
    let mut n = 0u128;
    for s in 0..streams {
        let event = EventId(Uuid::from_u128(0xE000_0000 + u128::from(s)));
        let tier = TierId(Uuid::from_u128(0x7000_0000 + u128::from(s)));
        let mut state = Inventory::default();
        let mut pending: Vec<InventoryEvent> = Vec::new();
        let mut held: Vec<OrderId> = Vec::new();
        let mut decide = |state: &mut Inventory,
                          pending: &mut Vec<InventoryEvent>,
                          actor: Actor,
                          body: InventoryCommand| {
            n += 1;
            let meta = CommandMeta {
                idempotency_key: IdempotencyKey::parse(&format!("k{n}")).unwrap(),
                actor,
                now,
                correlation_id: Uuid::from_u128(n),
            };
            let d = state
                .decide(&Command::new(meta, body))
                .expect("generated commands are valid");
            for e in &d.events {
                state.evolve(e);
            }
            pending.extend(d.events);
            n
        };
        decide(
            &mut state,
            &mut pending,
            organizer.clone(),
            InventoryCommand::CreateEvent {
                event_id: event,
                details: DetailsInput {
                    name: format!("Event {s}"),
                    description: "A generated event for benchmarks".into(),
                    venue: format!("Venue {}", s % 50),
                    starts_at: now + Span::days(30 + (s % 300) as i64),
                    ends_at: now + Span::days(30 + (s % 300) as i64) + Span::hours(3),
                    images: vec![],
                },
            },
        );
        decide(
            &mut state,
            &mut pending,
            organizer.clone(),
            InventoryCommand::AddTier {
                tier_id: tier,
                name: "Standard".into(),
                price_minor: 5000,
                currency: "EUR".into(),
                kind: TierKindInput::General {
                    capacity: 1_000_000,
                },
            },
        );
        decide(
            &mut state,
            &mut pending,
            organizer.clone(),
            InventoryCommand::Publish,
        );
        let mut i = 0u64;
        while (pending.len() as u64) < per_event {
            i += 1;
            let buyer = UserId(Uuid::from_u128(0xB000_0000 + u128::from(i % 5_000)));
            let customer = Actor::user(buyer, [Role::Customer]);
            match i % 10 {
                // 5 in 10: a new hold.
                0..=4 => {
                    let order = OrderId(Uuid::from_u128(
                        (0x0D << 96) | (u128::from(s) << 32) | u128::from(i),
                    ));
                    decide(
                        &mut state,
                        &mut pending,
                        customer,
                        InventoryCommand::PlaceHold(HoldRequest {
                            order_id: order,
                            tier_id: tier,
                            selection: Selection::Quantity {
                                quantity: 1 + (i % 3) as i64,
                            },
                            expires_at: now + Span::minutes(10),
                        }),
                    );
                    held.push(order);
                }
                // 3 in 10: pay the newest hold.
                5..=7 => {
                    let Some(order) = held.pop() else { continue };
                    let view = state.order(order).expect("held order");
                    let tickets = (0..view.quantity)
                        .map(|k| TicketSeed {
                            ticket_id: TicketId(Uuid::from_u128(
                                (u128::from(s) << 64) | (u128::from(i) << 8) | u128::from(k),
                            )),
                            secret: format!("{:032x}", u128::from(i) * 7919 + u128::from(k)),
                        })
                        .collect();
                    decide(
                        &mut state,
                        &mut pending,
                        Actor::System,
                        InventoryCommand::ConfirmPayment {
                            order_id: order,
                            payment: PaymentInput {
                                payment_ref: format!("pay-{order}"),
                                amount_minor: view.total.amount_minor as i64,
                                currency: "EUR".into(),
                                tickets,
                            },
                        },
                    );
                }
                // 2 in 10: the buyer lets a hold go.
                _ => {
                    let Some(order) = held.pop() else { continue };
                    let owner = state.order(order).expect("held order").user_id;
                    decide(
                        &mut state,
                        &mut pending,
                        Actor::user(owner, [Role::Customer]),
                        InventoryCommand::ReleaseHold { order_id: order },
                    );
                }
            }
        }
        let stream = StreamName::new(domain::ids::streams::inventory(event)).unwrap();
        let mut version: Option<u64> = None;
        let mut rest = encode(&pending, None, now);
        while !rest.is_empty() {
            let mut bytes = 0;
            let take = rest
                .iter()
                .take_while(|e| {
                    bytes += e.data.len();
                    bytes < 800 * 1024
                })
                .count()
                .clamp(1, 2_000);
            let chunk: Vec<NewEvent> = rest.drain(..take).collect();
            let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
            let r = store
                .append(&stream, expected, chunk)
                .await
                .expect("append");
            version = Some(r.last_version);
        }
        total += pending.len() as u64;
    }
    total
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

async fn rebuild_rate(store: &Arc<SqliteStore>, events: u64, only: Option<&str>) -> (f64, f64) {
    let start_rss = rss_mib();
    let t = Instant::now();
    let side = ReadSide::start(
        store.clone(),
        ReadSideOptions {
            only: only.map(|n| vec![n.to_string()]),
            ..Default::default()
        },
    )
    .expect("start");
    side.catch_up(Duration::from_secs(3600))
        .await
        .expect("caught up");
    let secs = t.elapsed().as_secs_f64();
    let grown = rss_mib() - start_rss;
    side.shutdown().await;
    (events as f64 / secs, grown)
}

async fn raw_read_rate(store: &Arc<SqliteStore>, events: u64) -> f64 {
    use futures::StreamExt;
    let t = Instant::now();
    let mut sub = store.subscribe_all(Position::START);
    let mut n = 0u64;
    while let Some(m) = sub.next().await {
        match m.expect("read") {
            store::SubscriptionMessage::Event(_) => n += 1,
            store::SubscriptionMessage::CaughtUp => break,
        }
    }
    assert_eq!(n, events);
    events as f64 / t.elapsed().as_secs_f64()
}

/// Purchases from many tasks on one event; a live reader of the event's availability
/// records when each purchase's effect reaches it.
async fn visibility_latency(dir: &std::path::Path, purchases: u64, concurrency: u64) {
    let store = Arc::new(SqliteStore::open(dir, SqliteOptions::default()).expect("open"));
    let now = Utc::now();
    let event = EventId(Uuid::now_v7());
    let tier = TierId(Uuid::now_v7());
    let stream = StreamName::new(domain::ids::streams::inventory(event)).unwrap();
    let setup = vec![
        InventoryEvent::EventCreated(EventCreated {
            event_id: event,
            organizer: UserId(Uuid::from_u128(1)),
            details: EventDetails {
                name: "On-sale".into(),
                starts_at: now + Span::days(30),
                ends_at: now + Span::days(30) + Span::hours(2),
                ..Default::default()
            },
        }),
        InventoryEvent::TierAdded(TierAdded {
            tier_id: tier,
            name: "Standard".into(),
            price: domain::money::Money::price(5000, "EUR").unwrap(),
            capacity: 10_000_000,
            seated: false,
        }),
        InventoryEvent::EventPublished(EventPublished { at: now }),
    ];
    store
        .append(
            &stream,
            ExpectedVersion::NoStream,
            encode(&setup, None, now),
        )
        .await
        .unwrap();
    let side = Arc::new(ReadSide::start(store.clone(), ReadSideOptions::default()).unwrap());
    side.catch_up(Duration::from_secs(60)).await.unwrap();
    let mut live = side.catalogue().watch_availability(event).unwrap();
    // A reader that never reads: it must not hold anything up.
    let _stuck = side.catalogue().watch_availability(event).unwrap();
    let watcher = tokio::spawn(async move {
        let mut seen: Vec<(Position, Instant)> = Vec::new();
        while live.changed().await.is_ok() {
            let p = live.borrow_and_update().position;
            seen.push((p, Instant::now()));
        }
        seen
    });
    let started = Instant::now();
    let mut tasks = Vec::new();
    for w in 0..concurrency {
        let store = store.clone();
        let stream = stream.clone();
        tasks.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..purchases / concurrency {
                let hold = InventoryEvent::HoldPlaced(HoldPlaced {
                    order_id: OrderId(Uuid::now_v7()),
                    user_id: UserId(Uuid::from_u128(u128::from(w) << 32 | u128::from(i))),
                    tier_id: tier,
                    quantity: 1,
                    seats: vec![],
                    total: domain::money::Money::price(5000, "EUR").unwrap(),
                    placed_at: now,
                    expires_at: now + Span::minutes(10),
                    command: None,
                });
                let r = store
                    .append(&stream, ExpectedVersion::Any, encode(&[hold], None, now))
                    .await
                    .expect("append");
                acks.push((r.last_position(), Instant::now()));
            }
            acks
        }));
    }
    let mut acks = Vec::new();
    for t in tasks {
        acks.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed();
    let head = store.head().await.unwrap();
    side.wait_for(head, Duration::from_secs(60)).await.unwrap();
    // Let the watcher see the last value, then end it.
    tokio::time::sleep(Duration::from_millis(200)).await;
    side.shutdown().await;
    store.shutdown().await;
    drop(side);
    let seen = watcher.await.unwrap();
    let mut hist = Histogram::<u64>::new(3).unwrap();
    let mut before_ack = 0u64;
    let mut missing = 0u64;
    for (p, acked) in &acks {
        let i = seen.partition_point(|(sp, _)| sp < p);
        match seen.get(i) {
            Some((_, at)) if *at >= *acked => {
                hist.record(at.duration_since(*acked).as_micros() as u64)
                    .unwrap();
            }
            Some(_) => {
                before_ack += 1;
                hist.record(0).unwrap();
            }
            None => missing += 1,
        }
    }
    println!(
        "  {} purchases from {} tasks in {:.2}s ({:.0} durable appends/s); reader saw {} values",
        acks.len(),
        concurrency,
        elapsed.as_secs_f64(),
        acks.len() as f64 / elapsed.as_secs_f64(),
        seen.len()
    );
    println!(
        "  append ack -> visible to live reader: p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms \
         ({} visible before the ack counted as 0, {} never seen)",
        hist.value_at_quantile(0.5) as f64 / 1000.0,
        hist.value_at_quantile(0.9) as f64 / 1000.0,
        hist.value_at_quantile(0.99) as f64 / 1000.0,
        hist.max() as f64 / 1000.0,
        before_ack,
        missing
    );
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    let target: u64 = args
        .first()
        .and_then(|a| a.parse().ok())
        .unwrap_or(1_000_000);
    let runs: usize = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(3);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Arc::new(
            SqliteStore::open(
                dir.path(),
                SqliteOptions {
                    durability: Durability::Normal,
                    ..Default::default()
                },
            )
            .unwrap(),
        );
        let t = Instant::now();
        let events = generate(&store, target).await;
        println!(
            "generated {events} events in {:.1}s (decided by the domain, appended in chunks)",
            t.elapsed().as_secs_f64()
        );
        let mut raw = Vec::new();
        let mut catalogue = Vec::new();
        let mut all = Vec::new();
        let mut mem = (0.0, 0.0);
        for run in 0..runs {
            raw.push(raw_read_rate(&store, events).await);
            let (rate, grown) = rebuild_rate(&store, events, Some("catalogue")).await;
            catalogue.push(rate);
            let mut each = Vec::new();
            for name in ["orders", "sales", "accounts"] {
                let (rate, _) = rebuild_rate(&store, events, Some(name)).await;
                each.push(format!("{name} {rate:.0}"));
            }
            let (rate_all, grown_all) = rebuild_rate(&store, events, None).await;
            all.push(rate_all);
            mem = (grown, grown_all);
            println!(
                "  run {run}: store read {:.0} ev/s, catalogue rebuild {:.0} ev/s, {} ev/s, \
                 all four together {:.0} ev/s",
                raw[run],
                rate,
                each.join(" ev/s, "),
                rate_all
            );
        }
        println!("rebuild over {events} stored events, median of {runs} runs:");
        println!("  store subscription alone: {:.0} events/s", median(raw));
        println!("  catalogue projection:     {:.0} events/s", median(catalogue));
        println!("  all four projections:     {:.0} events/s (each reads the store itself)", median(all));
        println!(
            "  resident memory grown by the models: catalogue {:.0} MiB, all four {:.0} MiB (last run)",
            mem.0, mem.1
        );
        store.shutdown().await;
        drop(store);
        drop(dir);

        println!("purchase -> live availability delay (durable appends, synchronous=FULL):");
        let dir = tempfile::tempdir().unwrap();
        visibility_latency(dir.path(), 20_000, 64).await;
    });
}
