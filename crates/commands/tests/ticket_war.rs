//! Concurrency tests that try hard to break the command side: many buyers at once on one
//! event, on a real SQLite store with durability on.

mod common;

use std::collections::{HashMap, HashSet};

use commands::{CommandService, PayOutcome, RequestContext};
use domain::inventory::{InventoryOutcome, Selection};
use domain::{EventId, TierId};
use payments::test_tokens;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};

use common::*;

async fn buy(
    service: CommandService,
    c: RequestContext,
    event: EventId,
    tier: TierId,
) -> Result<PayOutcome, String> {
    loop {
        match service
            .purchase(
                &c,
                event,
                tier,
                Selection::Quantity { quantity: 1 },
                test_tokens::SUCCESS,
            )
            .await
        {
            Ok(r) => return Ok(r.outcome),
            // Retriable answers are retried with the same key, as a client would.
            Err(e) if e.is_retriable() => continue,
            Err(e) => return Err(e.code().to_owned()),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_thousand_buyers_for_a_thousand_tickets() {
    let h = harness().await;
    let (event, tier) = h.published_event(1000, None).await;
    let tasks: Vec<_> = (0..2000u128)
        .map(|n| tokio::spawn(buy(h.service.clone(), ctx(&buyer(n)), event, tier)))
        .collect();
    let mut answers: HashMap<String, usize> = HashMap::new();
    let mut tickets = HashSet::new();
    for t in tasks {
        match t.await.expect("every buyer gets an answer") {
            Ok(PayOutcome::Confirmed {
                tickets: issued, ..
            }) => {
                *answers.entry("CONFIRMED".into()).or_default() += 1;
                for ticket in issued {
                    assert!(tickets.insert(ticket), "ticket issued twice");
                }
            }
            Ok(other) => panic!("unexpected outcome {other:?}"),
            Err(code) => *answers.entry(code).or_default() += 1,
        }
    }
    assert_eq!(answers.get("CONFIRMED"), Some(&1000), "{answers:?}");
    assert_eq!(answers.get("SOLD_OUT"), Some(&1000), "{answers:?}");
    assert_eq!(answers.len(), 2, "{answers:?}");
    assert_eq!(tickets.len(), 1000);
    // Replaying the stream gives the same totals, and exactly the actor's state.
    let replayed = h.replay(event).await;
    replayed.check_invariants().expect("invariants");
    let live = h
        .service
        .read(event, |inv| inv.clone())
        .await
        .expect("read");
    assert!(live == replayed, "the actor's state is the stream's fold");
    let view = replayed.tier(tier).expect("tier");
    assert_eq!((view.sold, view.held, view.available), (1000, 0, 0));
    assert_eq!(replayed.tickets().count(), 1000);
    // And the provider took money exactly for the tickets sold.
    let ledger = h.provider.ledger();
    assert_eq!(ledger.charges.len(), 1000);
    assert!(ledger.refunds.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn retries_with_the_same_key_buy_once() {
    let h = harness().await;
    let (event, tier) = h.published_event(100, None).await;
    let c = ctx(&buyer(7));
    let tasks: Vec<_> = (0..64)
        .map(|_| tokio::spawn(buy(h.service.clone(), c.clone(), event, tier)))
        .collect();
    let mut outcomes = Vec::new();
    for t in tasks {
        outcomes.push(t.await.expect("task").expect("bought"));
    }
    assert!(
        outcomes.windows(2).all(|w| w[0] == w[1]),
        "same answer every time"
    );
    let replayed = h.replay(event).await;
    assert_eq!(replayed.tier(tier).expect("tier").sold, 1);
    assert_eq!(h.provider.ledger().charges.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn parallel_requests_cannot_exceed_the_per_user_limit() {
    let h = harness().await;
    let (event, tier) = h.published_event(1000, Some(4)).await;
    let user = buyer(3);
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let service = h.service.clone();
            let c = ctx(&user);
            tokio::spawn(async move {
                service
                    .hold(&c, event, tier, Selection::Quantity { quantity: 1 })
                    .await
            })
        })
        .collect();
    let mut held = 0;
    let mut limited = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => held += 1,
            Err(e) if e.code() == "LIMIT_EXCEEDED" => limited += 1,
            Err(e) => panic!("unexpected {e:?}"),
        }
    }
    assert_eq!((held, limited), (4, 36));
    let replayed = h.replay(event).await;
    assert_eq!(replayed.tickets_of_user(user.user_id().expect("user")), 4);
}

/// Buyers fighting over a few named seats, each asking for a random set of them.
#[test]
fn seat_fights_never_share_a_seat() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(4)
        .enable_all()
        .build()
        .expect("runtime");
    let seats: Vec<String> = (1..=12).map(|n| format!("A-{n}")).collect();
    let mut runner = TestRunner::new(Config {
        cases: 8,
        ..Config::default()
    });
    let requests =
        proptest::collection::vec(proptest::sample::subsequence(seats.clone(), 1..=3), 20..60);
    runner
        .run(&requests, |requests| {
            runtime.block_on(async {
                let h = harness().await;
                let names: Vec<&str> = seats.iter().map(String::as_str).collect();
                let (event, tier) = h.seated_event(&names).await;
                let tasks: Vec<_> = requests
                    .iter()
                    .enumerate()
                    .map(|(n, wanted)| {
                        let service = h.service.clone();
                        let c = ctx(&buyer(n as u128));
                        let selection = Selection::Seats {
                            seats: wanted.clone(),
                        };
                        tokio::spawn(async move { service.hold(&c, event, tier, selection).await })
                    })
                    .collect();
                let mut taken: HashMap<String, usize> = HashMap::new();
                for (n, t) in tasks.into_iter().enumerate() {
                    match t.await.expect("task") {
                        Ok(r) => {
                            assert!(matches!(r.outcome, InventoryOutcome::Held { .. }));
                            for seat in &requests[n] {
                                *taken.entry(seat.clone()).or_default() += 1;
                            }
                        }
                        Err(e) => assert_eq!(e.code(), "SEAT_TAKEN", "{e:?}"),
                    }
                }
                for (seat, holders) in &taken {
                    prop_assert_eq!(*holders, 1, "seat {} held {} times", seat, holders);
                }
                let replayed = h.replay(event).await;
                replayed.check_invariants().map_err(TestCaseError::fail)?;
                let held = replayed.tier(tier).expect("tier").held as usize;
                prop_assert_eq!(held, taken.len());
                h.service.stop();
                Ok(())
            })
        })
        .expect("no seat is ever shared");
}
