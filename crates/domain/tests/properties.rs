//! Property tests: long random command sequences against one inventory, asserting after
//! every step that
//!
//! * the invariants hold (`sold + held <= capacity` per tier, a seat in at most one live
//!   hold or valid ticket, counters agree with orders, nothing live after cancellation);
//! * nothing sells unless the event is published, on sale and not cancelled;
//! * folding every produced event from scratch reproduces the state decide saw;
//! * re-sending any accepted command with its idempotency key yields no events and the
//!   same outcome; reusing a key for another command is refused;
//! * every event survives its stored form (encode, decode) unchanged;
//! * shrinking the state to fit keeps every answer.

mod common;

use common::*;
use domain::codec;
use domain::inventory::*;
use domain::*;
use proptest::prelude::*;

#[derive(Clone, Debug)]
enum Op {
    Hold {
        user: u8,
        quantity: i64,
        minutes: i64,
    },
    HoldSeats {
        user: u8,
        seats: Vec<u8>,
        minutes: i64,
    },
    Purchase {
        user: u8,
        quantity: i64,
        pay_exact: bool,
    },
    Release {
        order: u8,
        user: u8,
    },
    Expire {
        order: u8,
    },
    Confirm {
        order: u8,
        pay_exact: bool,
    },
    Cancel {
        order: u8,
        user: u8,
    },
    CheckIn {
        ticket: u8,
    },
    Refund {
        order: u8,
        exact: bool,
        refund: u8,
    },
    Resize {
        capacity: i64,
    },
    AddSeats {
        row: u8,
        count: u8,
    },
    SetLimit {
        limit: Option<i64>,
    },
    Window {
        opens: i64,
        closes: i64,
    },
    Publish,
    CancelEvent,
    /// The platform's next step of a cancellation (refused unless one is under way).
    CancelRemaining,
    Advance {
        minutes: i64,
    },
    Retry {
        pick: u16,
    },
    ReuseKey {
        pick: u16,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        8 => (0u8..6, -1i64..6, 1i64..40).prop_map(|(user, quantity, minutes)| Op::Hold { user, quantity, minutes }),
        6 => (0u8..6, prop::collection::vec(0u8..14, 0..4), 1i64..40)
            .prop_map(|(user, seats, minutes)| Op::HoldSeats { user, seats, minutes }),
        3 => (0u8..6, 1i64..4, any::<bool>()).prop_map(|(user, quantity, pay_exact)| Op::Purchase { user, quantity, pay_exact }),
        3 => (any::<u8>(), 0u8..7).prop_map(|(order, user)| Op::Release { order, user }),
        3 => any::<u8>().prop_map(|order| Op::Expire { order }),
        6 => (any::<u8>(), prop::bool::weighted(0.9)).prop_map(|(order, pay_exact)| Op::Confirm { order, pay_exact }),
        2 => (any::<u8>(), 0u8..7).prop_map(|(order, user)| Op::Cancel { order, user }),
        3 => any::<u8>().prop_map(|ticket| Op::CheckIn { ticket }),
        3 => (any::<u8>(), prop::bool::weighted(0.8), 0u8..3).prop_map(|(order, exact, refund)| Op::Refund { order, exact, refund }),
        2 => (-1i64..25).prop_map(|capacity| Op::Resize { capacity }),
        1 => (0u8..3, 0u8..4).prop_map(|(row, count)| Op::AddSeats { row, count }),
        1 => prop::option::of(0i64..6).prop_map(|limit| Op::SetLimit { limit }),
        1 => (-30i64..30, -30i64..60).prop_map(|(opens, closes)| Op::Window { opens, closes }),
        1 => Just(Op::Publish),
        1 => Just(Op::CancelRemaining),
        1 => prop::bool::weighted(0.1).prop_map(|cancel| if cancel { Op::CancelEvent } else { Op::Advance { minutes: 0 } }),
        4 => (0i64..20).prop_map(|minutes| Op::Advance { minutes }),
        4 => any::<u16>().prop_map(|pick| Op::Retry { pick }),
        1 => any::<u16>().prop_map(|pick| Op::ReuseKey { pick }),
    ]
}

/// The starting point: a draft event with a general tier and a small seat map, so that
/// publication itself is part of the random sequence.
fn setup() -> Vec<InventoryEvent> {
    vec![
        created(),
        ga_tier(8),
        seated_tier(),
        seats_added(&["A-1", "A-2", "A-3", "A-4", "A-5", "A-6"]),
        door_assigned(),
    ]
}

struct Run {
    state: Inventory,
    history: Vec<InventoryEvent>,
    accepted: Vec<(Command<InventoryCommand>, InventoryOutcome)>,
    now: i64,
    next_order: u128,
    next_ticket: u128,
    next_key: u64,
}

impl Run {
    fn key(&mut self) -> String {
        self.next_key += 1;
        format!("key-{}", self.next_key)
    }

    fn known_order(&self, pick: u8) -> u128 {
        if self.next_order == 0 {
            return 0;
        }
        // Mostly existing orders, sometimes one that does not exist.
        u128::from(pick) % (self.next_order + 1)
    }

    fn command(&mut self, op: &Op) -> Option<Command<InventoryCommand>> {
        let now = t(self.now);
        let body = match op {
            Op::Hold {
                user,
                quantity,
                minutes,
            } => {
                self.next_order += 1;
                let c = hold_ga(self.next_order, *quantity, t(self.now + minutes));
                return Some(cmd(customer(u128::from(*user)), &self.key(), now, c));
            }
            Op::HoldSeats {
                user,
                seats,
                minutes,
            } => {
                self.next_order += 1;
                let ids: Vec<String> = seats.iter().map(|s| format!("a-{s}")).collect();
                let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
                let c = hold_seats(self.next_order, &refs, t(self.now + minutes));
                return Some(cmd(customer(u128::from(*user)), &self.key(), now, c));
            }
            Op::Purchase {
                user: _,
                quantity,
                pay_exact,
            } => {
                self.next_order += 1;
                let first = self.next_ticket + 1;
                self.next_ticket += *quantity as u128;
                let price = self
                    .state
                    .tier(GA)
                    .map(|t| t.price.amount_minor as i64)
                    .unwrap_or(0);
                let amount = price * quantity + if *pay_exact { 0 } else { 1 };
                InventoryCommand::Purchase {
                    hold: HoldRequest {
                        order_id: order(self.next_order),
                        tier_id: GA,
                        selection: Selection::Quantity {
                            quantity: *quantity,
                        },
                        expires_at: t(self.now + 10),
                    },
                    payment: payment(self.next_order, amount, first, *quantity as u128),
                }
            }
            Op::Release { order: o, user } => {
                let n = self.known_order(*o);
                let actor = self.order_actor(n, *user);
                let c = InventoryCommand::ReleaseHold { order_id: order(n) };
                return Some(cmd(actor, &self.key(), now, c));
            }
            Op::Expire { order: o } => {
                let n = self.known_order(*o);
                let c = InventoryCommand::ExpireHold { order_id: order(n) };
                return Some(cmd(Actor::System, &self.key(), now, c));
            }
            Op::Confirm {
                order: o,
                pay_exact,
            } => {
                let n = self.known_order(*o);
                let view = self.state.order(order(n));
                let quantity = view.as_ref().map(|v| v.quantity).unwrap_or(1);
                let total = view.map(|v| v.total.amount_minor as i64).unwrap_or(0);
                let first = self.next_ticket + 1;
                self.next_ticket += u128::from(quantity);
                let amount = if *pay_exact { total } else { total + 7 };
                let c = InventoryCommand::ConfirmPayment {
                    order_id: order(n),
                    payment: payment(n, amount, first, u128::from(quantity)),
                };
                return Some(cmd(Actor::System, &self.key(), now, c));
            }
            Op::Cancel { order: o, user } => {
                let n = self.known_order(*o);
                let actor = self.order_actor(n, *user);
                let c = InventoryCommand::CancelOrder { order_id: order(n) };
                return Some(cmd(actor, &self.key(), now, c));
            }
            Op::Refund {
                order: o,
                exact,
                refund,
            } => {
                // Refunds the payment `Confirm` made (`pay-<n>`), for the order's total or
                // for the total of a payment of the wrong amount (which is owed back too).
                let n = self.known_order(*o);
                let total = self
                    .state
                    .order(order(n))
                    .map(|v| v.total.amount_minor as i64)
                    .unwrap_or(0);
                let c = InventoryCommand::RecordRefund {
                    order_id: order(n),
                    payment_ref: format!("pay-{n}"),
                    refund_id: format!("re-{n}-{refund}"),
                    amount_minor: if *exact { total } else { total + 7 },
                    currency: "EUR".into(),
                };
                return Some(cmd(Actor::System, &self.key(), now, c));
            }
            Op::CheckIn { ticket: pick } => {
                let n = if self.next_ticket == 0 {
                    1
                } else {
                    u128::from(*pick) % self.next_ticket + 1
                };
                InventoryCommand::CheckIn {
                    ticket_id: ticket(n),
                }
            }
            Op::Resize { capacity } => InventoryCommand::ResizeTier {
                tier_id: GA,
                capacity: *capacity,
            },
            Op::AddSeats { row, count } => InventoryCommand::AddSeats {
                seats: (0..*count)
                    .map(|i| SeatInput {
                        seat: format!("{}-{}", ["B", "C", "A"][*row as usize % 3], i + 1),
                        tier_id: SEATED,
                    })
                    .collect(),
            },
            Op::SetLimit { limit } => InventoryCommand::SetPerUserLimit { limit: *limit },
            Op::Window { opens, closes } => InventoryCommand::SetSalesWindow {
                opens_at: t(self.now + opens),
                closes_at: t(self.now + closes),
            },
            Op::Publish => InventoryCommand::Publish,
            Op::CancelEvent => InventoryCommand::CancelEvent {
                reason: "random".into(),
            },
            Op::CancelRemaining => InventoryCommand::CancelRemainingOrders,
            Op::Advance { minutes } => {
                self.now += minutes;
                return None;
            }
            Op::Retry { .. } | Op::ReuseKey { .. } => return None,
        };
        let actor = match body {
            InventoryCommand::CheckIn { .. } => door(),
            InventoryCommand::CancelRemainingOrders => Actor::System,
            InventoryCommand::Purchase { .. } => customer(u128::from(match op {
                Op::Purchase { user, .. } => *user,
                _ => 0,
            })),
            _ => organizer(),
        };
        Some(cmd(actor, &self.key(), now, body))
    }

    /// Usually the buyer, sometimes a stranger (user 6) or the organizer.
    fn order_actor(&self, n: u128, user: u8) -> Actor {
        match (user, self.state.order(order(n))) {
            (6, _) => customer(99),
            (5, _) => organizer(),
            (_, Some(o)) => Actor::user(o.user_id, [Role::Customer]),
            (u, None) => customer(u128::from(u)),
        }
    }
}

/// How often each event type was produced, so a test can show the random sequences reach
/// the interesting states instead of being refused early.
static SEEN: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());

fn sold_anything(events: &[InventoryEvent]) -> bool {
    events.iter().any(|e| {
        matches!(
            e,
            InventoryEvent::HoldPlaced(_) | InventoryEvent::OrderConfirmed(_)
        )
    })
}

fn run(ops: Vec<Op>) -> Result<(), TestCaseError> {
    let history = setup();
    let mut r = Run {
        state: Inventory::replay(&history),
        history,
        accepted: Vec::new(),
        now: 0,
        next_order: 0,
        next_ticket: 0,
        next_key: 0,
    };
    for op in &ops {
        match op {
            Op::Retry { pick } if !r.accepted.is_empty() => {
                let (cmd, outcome) = r.accepted[*pick as usize % r.accepted.len()].clone();
                let again = r.state.decide(&cmd);
                prop_assert!(again.is_ok(), "retry refused: {:?}", again);
                let again = again.unwrap();
                prop_assert!(again.events.is_empty(), "retry produced {:?}", again.events);
                prop_assert_eq!(again.outcome, outcome);
                continue;
            }
            Op::ReuseKey { pick } if !r.accepted.is_empty() => {
                let (mut cmd, _) = r.accepted[*pick as usize % r.accepted.len()].clone();
                cmd.body = InventoryCommand::SetPerUserLimit { limit: Some(4242) };
                let refused = r.state.decide(&cmd);
                prop_assert!(
                    matches!(&refused, Err(rej) if rej.code() == "INVALID_INPUT"),
                    "a reused key was not refused: {:?}",
                    refused
                );
                continue;
            }
            _ => {}
        }
        let Some(command) = r.command(op) else {
            continue;
        };
        let before = r.state.clone();
        match r.state.decide(&command) {
            Err(rejection) => {
                prop_assert!(Rejection::CODES.contains(&rejection.code()));
                prop_assert!(!rejection.to_string().is_empty());
            }
            Ok(decision) => {
                if sold_anything(&decision.events) {
                    prop_assert_eq!(
                        before.status(),
                        Some(EventStatus::Published),
                        "sold while not published"
                    );
                    // A new hold needs the sales window open; paying for an existing hold
                    // completes a sale that began inside it.
                    let holds = decision
                        .events
                        .iter()
                        .any(|e| matches!(e, InventoryEvent::HoldPlaced(_)));
                    if let Some(w) = before.sales_window().filter(|_| holds) {
                        prop_assert!(
                            w.opens_at <= command.meta.now && command.meta.now < w.closes_at
                        );
                    }
                }
                for e in &decision.events {
                    let (name, version, json) = codec::encode(e);
                    let back: InventoryEvent = codec::decode(name, version, &json)
                        .map_err(|err| TestCaseError::fail(err.to_string()))?;
                    prop_assert_eq!(&back, e);
                    r.state.evolve(e);
                }
                r.history.extend(decision.events.iter().cloned());
                if let Ok(mut seen) = SEEN.lock() {
                    seen.extend(decision.events.iter().map(|e| e.type_name()));
                }
                if let Err(violation) = r.state.check_invariants() {
                    return Err(TestCaseError::fail(format!("after {op:?}: {violation}")));
                }
                let again = r.state.decide(&command);
                prop_assert!(again.is_ok(), "immediate retry refused: {:?}", again);
                let again = again.unwrap();
                prop_assert!(again.events.is_empty());
                prop_assert_eq!(&again.outcome, &decision.outcome);
                r.accepted.push((command, decision.outcome));
            }
        }
        if r.state.status() == Some(EventStatus::Cancelled) {
            prop_assert_eq!(r.state.live_hold_count(), 0);
            prop_assert!(r.state.tiers().all(|t| t.sold == 0 && t.held == 0));
        }
    }
    // A payment is paid back at most once.
    let mut refunded = std::collections::HashSet::new();
    for e in &r.history {
        if let InventoryEvent::RefundIssued(i) = e {
            prop_assert!(
                refunded.insert((i.order_id, i.payment_ref.clone())),
                "refunded twice: {:?}",
                i
            );
        }
    }
    let replayed = Inventory::replay(&r.history);
    prop_assert!(
        replayed == r.state,
        "folding the history does not reproduce the state"
    );
    // An idle actor shrinks its state: it must still find everything and answer the same.
    let mut shrunk = replayed;
    shrunk.shrink_to_fit();
    if let Err(violation) = shrunk.check_invariants() {
        return Err(TestCaseError::fail(format!("after shrinking: {violation}")));
    }
    prop_assert!(shrunk == r.state, "shrinking changed the state");
    for (command, outcome) in &r.accepted {
        let again = shrunk.decide(command);
        prop_assert!(
            matches!(&again, Ok(d) if d.events.is_empty() && &d.outcome == outcome),
            "a retry on the shrunk state answered {:?}",
            again
        );
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn random_command_sequences_keep_every_invariant(ops in prop::collection::vec(op(), 1..250)) {
        run(ops)?;
    }
}

/// The same property on a busy sale: publication first, so that most commands buy.
#[test]
fn a_busy_sale_keeps_every_invariant() {
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    });
    let strategy = prop::collection::vec(op(), 100..400).prop_map(|mut ops| {
        ops.insert(0, Op::Publish);
        ops
    });
    runner.run(&strategy, run).unwrap();
    let seen = SEEN.lock().unwrap().clone();
    for wanted in [
        "HoldPlaced",
        "HoldReleased",
        "HoldExpired",
        "OrderConfirmed",
        "PaymentRefundOwed",
        "RefundIssued",
        "OrderCancelled",
        "TicketCheckedIn",
        "TierResized",
        "SeatsAdded",
        "EventCancelled",
    ] {
        let n = seen.iter().filter(|s| **s == wanted).count();
        assert!(n > 0, "the random sequences never produced {wanted}");
    }
}

/// Events in any order, repeated or naming unknown things (as a damaged or hand-edited
/// store might hold) fold without panicking, and the state still answers reads and
/// commands without panicking.
fn any_event() -> impl Strategy<Value = InventoryEvent> {
    let n = 0u128..4;
    prop_oneof![
        Just(created()),
        Just(published()),
        (0u32..5).prop_map(ga_tier),
        Just(seated_tier()),
        Just(seats_added(&["A-1", "A-2"])),
        (n.clone(), 0u32..4).prop_map(|(o, q)| held(o, buyer(o), q, t(10))),
        n.clone()
            .prop_map(|o| held_seats(o, buyer(o), &["A-1", "A-2"], t(10))),
        (n.clone(), 0u128..3).prop_map(|(o, k)| confirmed(
            o,
            buyer(o),
            5000,
            issued(o * 10, k, &["A-1"])
        )),
        n.clone()
            .prop_map(|o| InventoryEvent::HoldReleased(HoldReleased {
                order_id: order(o),
                at: t(1)
            })),
        n.clone()
            .prop_map(|o| InventoryEvent::HoldExpired(HoldExpired {
                order_id: order(o),
                at: t(1)
            })),
        n.clone()
            .prop_map(|o| InventoryEvent::OrderCancelled(OrderCancelled {
                order_id: order(o),
                user_id: buyer(o),
                refund: None,
                reason: RefundReason::CancelledByRequest,
                voided_tickets: vec![],
                at: t(1),
            })),
        (n.clone(), any::<bool>()).prop_map(|(o, paid)| InventoryEvent::OrderCancelled(
            OrderCancelled {
                order_id: order(o),
                user_id: buyer(o),
                refund: paid.then(|| eur(5000)),
                reason: RefundReason::EventCancelled,
                voided_tickets: vec![],
                at: t(1),
            }
        )),
        (n.clone(), 0u64..2).prop_map(|(o, a)| InventoryEvent::PaymentRefundOwed(
            PaymentRefundOwed {
                order_id: order(o),
                user_id: buyer(o),
                payment_ref: format!("pay-{o}"),
                amount: eur(a * 5000),
                reason: RefundReason::HoldExpired,
                at: t(1),
            }
        )),
        (n.clone(), 0u8..2).prop_map(|(o, r)| InventoryEvent::RefundIssued(RefundIssued {
            order_id: order(o),
            user_id: buyer(o),
            payment_ref: format!("pay-{o}"),
            refund_id: format!("re-{r}"),
            amount: eur(5000),
            at: t(1),
        })),
        (0u128..30).prop_map(|k| InventoryEvent::TicketCheckedIn(TicketCheckedIn {
            ticket_id: ticket(k),
            order_id: order(0),
            at: t(1),
        })),
        (0u32..3).prop_map(|c| InventoryEvent::TierResized(TierResized {
            tier_id: GA,
            capacity: c
        })),
        Just(InventoryEvent::EventCancelled(EventCancelled {
            reason: "x".into(),
            at: t(1)
        })),
    ]
}

proptest! {
    #[test]
    fn folding_any_event_sequence_never_panics(events in prop::collection::vec(any_event(), 0..60)) {
        let state = Inventory::replay(&events);
        let _ = state.check_invariants();
        let _ = state.tiers().count() + state.seats().count() + state.orders().count() + state.tickets().count();
        let _ = state.live_holds().count();
        for (i, body) in [
            hold_ga(9, 1, t(11)),
            hold_seats(9, &["A-1"], t(11)),
            InventoryCommand::ReleaseHold { order_id: order(1) },
            InventoryCommand::CancelOrder { order_id: order(2) },
            InventoryCommand::CheckIn { ticket_id: ticket(10) },
            InventoryCommand::CancelEvent { reason: "x".into() },
        ]
        .into_iter()
        .enumerate()
        {
            let _ = state.decide(&cmd(customer(1), &format!("k{i}"), t(1), body.clone()));
            let _ = state.decide(&cmd(organizer(), &format!("k{i}"), t(1), body));
        }
    }
}
