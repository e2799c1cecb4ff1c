//! Cost of deciding and folding one hold as the inventory grows: 1,000 vs 100,000 seats and
//! 100 vs 10,000 live holds. A hold must cost in proportion to the request, so the four
//! sizes should measure about the same.
//!
//! `full_scan` is a control: the invariant audit walks the whole state, so its figures
//! grow with the sizes, as a per-command scan would.
//!
//! Each measured iteration decides and folds one hold (a seat hold of two named seats, or a
//! general hold of two tickets); the hold is then released outside the measured time so
//! that the next iteration finds the same amount of free stock.
//!
//! `purchase` measures the two decisions of a ticket-war purchase on an event that already
//! sold 1,000 or 50,000 single-ticket orders: `confirm` times a `ConfirmPayment` of a
//! hold placed untimed just before, `hold_confirm` times both the `PlaceHold` and the
//! `ConfirmPayment` (decide + evolve each). Both should also stay flat across the sizes.

use std::hint::black_box;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};
use domain::inventory::*;
use domain::*;
use uuid::Uuid;

const ORGANIZER: UserId = UserId(Uuid::from_u128(1));
const EVENT: EventId = EventId(Uuid::from_u128(2));
const GA: TierId = TierId(Uuid::from_u128(3));
const SEATED: TierId = TierId(Uuid::from_u128(4));

fn now() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap()
}

fn seat_name(i: usize) -> String {
    format!("R{}-{}", i / 100, i % 100)
}

fn meta(actor: Actor, key: String) -> CommandMeta {
    CommandMeta {
        idempotency_key: IdempotencyKey::parse(&key).unwrap(),
        actor,
        now: now(),
        correlation_id: Uuid::nil(),
    }
}

fn apply(state: &mut Inventory, actor: Actor, key: String, body: InventoryCommand) {
    let decision = state
        .decide(&Command::new(meta(actor, key), body))
        .expect("setup command accepted");
    for e in &decision.events {
        state.evolve(e);
    }
}

/// A published event with `seats` seats and `holds` live one-seat holds by distinct users.
fn inventory(seats: usize, holds: usize) -> Inventory {
    let organizer = Actor::user(ORGANIZER, [Role::Organizer]);
    let mut state = Inventory::default();
    let details = DetailsInput {
        name: "Bench".into(),
        description: String::new(),
        venue: "Arena".into(),
        starts_at: now() + chrono::Duration::days(30),
        ends_at: now() + chrono::Duration::days(31),
        images: vec![],
    };
    let o = || organizer.clone();
    apply(
        &mut state,
        o(),
        "create".into(),
        InventoryCommand::CreateEvent {
            event_id: EVENT,
            details,
        },
    );
    apply(
        &mut state,
        o(),
        "ga".into(),
        InventoryCommand::AddTier {
            tier_id: GA,
            name: "Standard".into(),
            price_minor: 5000,
            currency: "EUR".into(),
            kind: TierKindInput::General {
                capacity: 1_000_000,
            },
        },
    );
    apply(
        &mut state,
        o(),
        "seated".into(),
        InventoryCommand::AddTier {
            tier_id: SEATED,
            name: "Seated".into(),
            price_minor: 9000,
            currency: "EUR".into(),
            kind: TierKindInput::Seated,
        },
    );
    apply(
        &mut state,
        o(),
        "seats".into(),
        InventoryCommand::AddSeats {
            seats: (0..seats)
                .map(|i| SeatInput {
                    seat: seat_name(i),
                    tier_id: SEATED,
                })
                .collect(),
        },
    );
    apply(&mut state, o(), "publish".into(), InventoryCommand::Publish);
    for h in 0..holds {
        let user = Actor::user(
            UserId(Uuid::from_u128(1_000_000 + h as u128)),
            [Role::Customer],
        );
        apply(
            &mut state,
            user,
            format!("hold-{h}"),
            InventoryCommand::PlaceHold(HoldRequest {
                order_id: OrderId(Uuid::from_u128(10_000_000 + h as u128)),
                tier_id: SEATED,
                selection: Selection::Seats {
                    seats: vec![seat_name(h)],
                },
                expires_at: now() + chrono::Duration::minutes(10),
            }),
        );
    }
    assert_eq!(state.live_hold_count(), holds);
    state
}

/// Times `iters` holds (decide + evolve each), releasing each one untimed afterwards.
fn time_holds(
    state: &mut Inventory,
    iters: u64,
    seated: bool,
    free_from: usize,
    seats: usize,
) -> Duration {
    let buyer = Actor::user(UserId(Uuid::from_u128(42)), [Role::Customer]);
    let mut total = Duration::ZERO;
    for i in 0..iters {
        let order_id = OrderId(Uuid::new_v4());
        let selection = if seated {
            // Two free seats, rotating through the free part of the map.
            let span = (seats - free_from) / 2;
            let k = free_from + 2 * (i as usize % span);
            Selection::Seats {
                seats: vec![seat_name(k), seat_name(k + 1)],
            }
        } else {
            Selection::Quantity { quantity: 2 }
        };
        let hold = Command::new(
            meta(buyer.clone(), order_id.to_string()),
            InventoryCommand::PlaceHold(HoldRequest {
                order_id,
                tier_id: if seated { SEATED } else { GA },
                selection,
                expires_at: now() + chrono::Duration::minutes(10),
            }),
        );
        let start = Instant::now();
        let decision = state.decide(black_box(&hold)).expect("hold accepted");
        for e in &decision.events {
            state.evolve(e);
        }
        total += start.elapsed();
        black_box(&decision.outcome);
        apply(
            state,
            buyer.clone(),
            format!("release-{order_id}"),
            InventoryCommand::ReleaseHold { order_id },
        );
    }
    total
}

fn holds(c: &mut Criterion) {
    let mut group = c.benchmark_group("hold");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4));
    for (seats, live) in [
        (1_000, 100),
        (100_000, 100),
        (1_000, 10_000),
        (100_000, 10_000),
    ] {
        // With 10,000 one-seat holds on 1,000 seats the holds cannot all be seated: those
        // beyond the seat map are general holds, which count as live holds all the same.
        let mut state = if live <= seats {
            inventory(seats, live)
        } else {
            let mut s = inventory(seats, seats / 2);
            extra_general_holds(&mut s, live - seats / 2);
            s
        };
        let free_from = live.min(seats / 2);
        let label = format!("{seats}_seats/{live}_holds");
        group.bench_function(BenchmarkId::new("seats_x2", &label), |b| {
            b.iter_custom(|iters| time_holds(&mut state, iters, true, free_from, seats))
        });
        group.bench_function(BenchmarkId::new("general_x2", &label), |b| {
            b.iter_custom(|iters| time_holds(&mut state, iters, false, free_from, seats))
        });
    }
    group.finish();
}

fn extra_general_holds(state: &mut Inventory, count: usize) {
    for h in 0..count {
        let user = Actor::user(
            UserId(Uuid::from_u128(5_000_000 + h as u128)),
            [Role::Customer],
        );
        apply(
            state,
            user,
            format!("ga-{h}"),
            InventoryCommand::PlaceHold(HoldRequest {
                order_id: OrderId(Uuid::from_u128(50_000_000 + h as u128)),
                tier_id: GA,
                selection: Selection::Quantity { quantity: 1 },
                expires_at: now() + chrono::Duration::minutes(10),
            }),
        );
    }
}

/// A control that is proportional to the state: the full invariant scan. It shows what a
/// per-command scan of the seat map would cost at each size, so the flat hold figures
/// above mean something.
fn full_scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("full_scan");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(4));
    for (seats, live) in [(1_000, 100), (100_000, 10_000)] {
        let state = inventory(seats, live);
        let label = format!("{seats}_seats/{live}_holds");
        group.bench_function(BenchmarkId::new("check_invariants", &label), |b| {
            b.iter(|| black_box(state.check_invariants()))
        });
    }
    group.finish();
}

/// A published event whose general tier sold `sold` single-ticket orders to distinct buyers,
/// through real holds and payments (so the ledger holds two keys per order).
fn sold_event(sold: usize) -> Inventory {
    let mut state = inventory(10, 0);
    for n in 0..sold {
        purchase_timed(&mut state, n as u128, Timed::None);
    }
    state
}

/// One single-ticket purchase by a buyer of its own: a hold, then its payment; returns the
/// time taken by the part `timed` names.
fn purchase_timed(state: &mut Inventory, n: u128, timed: Timed) -> Duration {
    let buyer = Actor::user(UserId(Uuid::from_u128(1 << 64 | n)), [Role::Customer]);
    let order_id = OrderId(Uuid::from_u128(2 << 64 | n));
    let hold = Command::new(
        meta(buyer, format!("hold-{n}")),
        InventoryCommand::PlaceHold(HoldRequest {
            order_id,
            tier_id: GA,
            selection: Selection::Quantity { quantity: 1 },
            expires_at: now() + chrono::Duration::minutes(10),
        }),
    );
    let pay = Command::new(
        meta(Actor::System, format!("pay-{n}")),
        InventoryCommand::ConfirmPayment {
            order_id,
            payment: PaymentInput {
                payment_ref: format!("pi_{n:024x}"),
                amount_minor: 5000,
                currency: "EUR".into(),
                tickets: vec![TicketSeed {
                    ticket_id: TicketId(Uuid::from_u128(3 << 64 | n)),
                    secret: format!("{:064x}", n),
                }],
            },
        },
    );
    let mut total = Duration::ZERO;
    for (cmd, timed) in [(hold, timed != Timed::Confirm), (pay, timed != Timed::None)] {
        let start = Instant::now();
        let decision = state.decide(black_box(&cmd)).expect("purchase accepted");
        for e in &decision.events {
            state.evolve(e);
        }
        if timed {
            total += start.elapsed();
        }
        black_box(&decision.outcome);
    }
    total
}

/// Which part of a purchase is timed.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Timed {
    None,
    Confirm,
    Both,
}

fn purchases(c: &mut Criterion) {
    let mut group = c.benchmark_group("purchase");
    group
        .sample_size(30)
        .measurement_time(Duration::from_secs(4));
    for sold in [1_000, 50_000] {
        // Each sample starts again from the sold event (cloned untimed), so the event only
        // grows by the purchases of one sample.
        let base = sold_event(sold);
        let mut next = sold as u128;
        let label = format!("{sold}_orders");
        group.bench_function(BenchmarkId::new("confirm", &label), |b| {
            b.iter_custom(|iters| {
                let mut state = base.clone();
                (0..iters)
                    .map(|_| {
                        next += 1;
                        purchase_timed(&mut state, next, Timed::Confirm)
                    })
                    .sum()
            })
        });
        group.bench_function(BenchmarkId::new("hold_confirm", &label), |b| {
            b.iter_custom(|iters| {
                let mut state = base.clone();
                (0..iters)
                    .map(|_| {
                        next += 1;
                        purchase_timed(&mut state, next, Timed::Both)
                    })
                    .sum()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, holds, purchases, full_scan);
criterion_main!(benches);
