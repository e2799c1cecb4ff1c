//! The two hot decisions of a purchase carry their idempotency record in their last event
//! (`HoldPlaced`, `OrderConfirmed`) instead of appending an `InventoryCommandAccepted`; every
//! other decision, and the cold paths of these commands, still end with one. Retries are
//! recognised the same from either shape, including streams stored before the change.

mod common;

use common::*;
use domain::codec;
use domain::idempotency::{CommandRecord, CommandStamp};
use domain::inventory::*;
use domain::testing::given;
use domain::*;

fn plus(
    mut base: Vec<InventoryEvent>,
    more: impl IntoIterator<Item = InventoryEvent>,
) -> Vec<InventoryEvent> {
    base.extend(more);
    base
}

fn confirm(n: u128, amount: i64, first_ticket: u128) -> InventoryCommand {
    InventoryCommand::ConfirmPayment {
        order_id: order(n),
        payment: payment(n, amount, first_ticket, 1),
    }
}

fn purchase(n: u128, expires: chrono::DateTime<chrono::Utc>) -> InventoryCommand {
    InventoryCommand::Purchase {
        hold: HoldRequest {
            order_id: order(n),
            tier_id: GA,
            selection: Selection::Quantity { quantity: 1 },
            expires_at: expires,
        },
        payment: payment(n, 5000, n, 1),
    }
}

/// Decides a command against the state folded from `history`, and returns its events.
fn decided(history: &[InventoryEvent], command: &Command<InventoryCommand>) -> Vec<InventoryEvent> {
    Inventory::replay(history)
        .decide(command)
        .expect("accepted")
        .events
}

/// The events as stored and read back: what an actor folds after a restart.
fn through_the_store(events: &[InventoryEvent]) -> Vec<InventoryEvent> {
    events
        .iter()
        .map(|e| {
            let (name, version, json) = codec::encode(e);
            codec::decode(name, version, &json).expect("decodes")
        })
        .collect()
}

/// The answer to a command on the state folded from `history`: asserted to be a retry
/// (no events at all).
fn recalled(history: &[InventoryEvent], command: &Command<InventoryCommand>) -> InventoryOutcome {
    let decision = Inventory::replay(history)
        .decide(command)
        .expect("a retry is answered");
    assert!(decision.events.is_empty(), "{:?}", decision.events);
    decision.outcome
}

fn refused(history: &[InventoryEvent], command: &Command<InventoryCommand>) -> Rejection {
    Inventory::replay(history)
        .decide(command)
        .expect_err("refused")
}

#[test]
fn a_hold_is_one_event_carrying_its_record() {
    let hold = cmd(customer(1), "hold-1", t(1), hold_ga(1, 1, t(11)));
    let events = decided(&on_sale(10), &hold);
    let [InventoryEvent::HoldPlaced(placed)] = events.as_slice() else {
        panic!("expected one HoldPlaced, got {events:?}");
    };
    assert_eq!(
        placed.command,
        Some(CommandStamp {
            key: IdempotencyKey::parse("hold-1").unwrap(),
            // The buyer's own hold: the actor is the hold's user.
            actor: None,
            fingerprint: hold.body.fingerprint(),
        })
    );
    assert!(events[0].ends_decision());
}

#[test]
fn a_payment_that_issues_tickets_is_one_event_carrying_its_record() {
    let history = plus(on_sale(10), [held(1, buyer(1), 1, t(10))]);
    let pay = cmd(Actor::System, "pay-1", t(2), confirm(1, 5000, 1));
    let events = decided(&history, &pay);
    let [InventoryEvent::OrderConfirmed(paid)] = events.as_slice() else {
        panic!("expected one OrderConfirmed, got {events:?}");
    };
    let stamp = paid.command.as_ref().expect("carries its record");
    assert_eq!(stamp.actor, Some(ActorRef::System));
    assert_eq!(stamp.key.as_str(), "pay-1");
    assert_eq!(stamp.fingerprint, pay.body.fingerprint());
}

#[test]
fn a_purchase_is_a_hold_and_a_confirmation_carrying_the_record() {
    let buy = cmd(customer(1), "buy-1", t(1), purchase(1, t(11)));
    let events = decided(&on_sale(10), &buy);
    let [
        InventoryEvent::HoldPlaced(placed),
        InventoryEvent::OrderConfirmed(paid),
    ] = events.as_slice()
    else {
        panic!("expected HoldPlaced, OrderConfirmed; got {events:?}");
    };
    assert_eq!(
        placed.command, None,
        "only the last event ends the decision"
    );
    assert!(!events[0].ends_decision());
    let stamp = paid.command.as_ref().expect("carries its record");
    assert_eq!((stamp.actor, stamp.key.as_str()), (None, "buy-1"));
}

#[test]
fn cold_paths_and_other_commands_still_end_with_a_record_event() {
    let history = plus(on_sale(10), [held(1, buyer(1), 1, t(10))]);
    // A payment after the hold expired: a refund owed, recorded separately.
    let late = decided(
        &history,
        &cmd(Actor::System, "pay-1", t(12), confirm(1, 5000, 1)),
    );
    assert!(matches!(
        late.as_slice(),
        [
            InventoryEvent::HoldExpired(_),
            InventoryEvent::PaymentRefundOwed(_),
            InventoryEvent::CommandAccepted(_)
        ]
    ));
    // A payment of the wrong amount for a live hold.
    let wrong = decided(
        &history,
        &cmd(Actor::System, "pay-1", t(2), confirm(1, 4999, 1)),
    );
    assert!(matches!(
        wrong.as_slice(),
        [
            InventoryEvent::PaymentRefundOwed(_),
            InventoryEvent::CommandAccepted(_)
        ]
    ));
    let release = InventoryCommand::ReleaseHold { order_id: order(1) };
    let released = decided(&history, &cmd(customer(1), "rel", t(2), release));
    assert!(matches!(
        released.as_slice(),
        [
            InventoryEvent::HoldReleased(_),
            InventoryEvent::CommandAccepted(_)
        ]
    ));
    // The same payment reported again under a new key changes nothing: only its record.
    let paid = plus(
        history.clone(),
        [confirmed(1, buyer(1), 5000, issued(1, 1, &[]))],
    );
    let again = decided(
        &paid,
        &cmd(Actor::System, "pay-1b", t(3), confirm(1, 5000, 1)),
    );
    assert!(matches!(
        again.as_slice(),
        [InventoryEvent::CommandAccepted(InventoryCommandAccepted {
            outcome: InventoryOutcome::Confirmed { .. },
            ..
        })]
    ));
}

/// A hold and its payment, then a purchase, decided and stored: the shape written today.
fn new_shape_sale() -> (
    Vec<InventoryEvent>,
    Vec<(Command<InventoryCommand>, InventoryOutcome)>,
) {
    let mut history = on_sale(10);
    let mut answered = Vec::new();
    for command in [
        cmd(customer(1), "hold-1", t(1), hold_ga(1, 1, t(11))),
        cmd(Actor::System, "pay-1", t(2), confirm(1, 5000, 1)),
        cmd(customer(2), "buy-2", t(3), purchase(2, t(13))),
        cmd(customer(3), "hold-3", t(4), hold_ga(3, 1, t(14))),
    ] {
        let decision = Inventory::replay(&history).decide(&command).unwrap();
        history.extend(decision.events);
        answered.push((command, decision.outcome));
    }
    (through_the_store(&history), answered)
}

#[test]
fn retries_after_a_fold_from_stored_events_answer_the_first_outcome() {
    let (history, answered) = new_shape_sale();
    assert_eq!(
        history
            .iter()
            .filter(|e| matches!(e, InventoryEvent::CommandAccepted(_)))
            .count(),
        0,
        "no purchase decision stored a record event"
    );
    let state = Inventory::replay(&history);
    assert_eq!(state.decided_commands(), 4);
    for (command, first) in &answered {
        assert_eq!(&recalled(&history, command), first, "{:?}", command.body);
    }
    // A hold retried later carries a later expiry: still the same request.
    let later = cmd(customer(1), "hold-1", t(5), hold_ga(1, 1, t(15)));
    assert_eq!(recalled(&history, &later), answered[0].1);
    let later = cmd(customer(2), "buy-2", t(6), purchase(2, t(16)));
    assert_eq!(recalled(&history, &later), answered[2].1);
}

#[test]
fn a_carried_key_reused_for_another_body_is_invalid_input() {
    let (history, _) = new_shape_sale();
    for command in [
        cmd(customer(1), "hold-1", t(5), hold_ga(1, 2, t(15))),
        cmd(customer(1), "hold-1", t(5), hold_ga(9, 1, t(15))),
        cmd(Actor::System, "pay-1", t(5), confirm(1, 5000, 7)),
        cmd(Actor::System, "pay-1", t(5), confirm(3, 10_000, 8)),
        cmd(customer(2), "buy-2", t(5), hold_ga(2, 1, t(15))),
    ] {
        let r = refused(&history, &command);
        assert_eq!(r.code(), "INVALID_INPUT", "{:?}: {r}", command.body);
        assert!(r.to_string().contains("already used"), "{r}");
    }
    // The scope is the actor: the same keys by others are new commands.
    let other = cmd(customer(9), "hold-1", t(5), hold_ga(9, 1, t(15)));
    assert_eq!(decided(&history, &other).len(), 1);
    let admin_pays = cmd(admin(), "pay-1", t(5), confirm(3, 5000, 8));
    assert!(matches!(
        decided(&history, &admin_pays).as_slice(),
        [InventoryEvent::OrderConfirmed(OrderConfirmed { command: Some(CommandStamp { actor: Some(ActorRef::User(id)), .. }), .. })]
            if *id == ADMIN
    ));
}

/// The same decisions as [`new_shape_sale`], as streams stored them before records were
/// carried: version 1 holds and confirmations, each decision followed by its
/// `InventoryCommandAccepted`, read back from hand-written JSON.
fn old_shape_sale() -> Vec<InventoryEvent> {
    let (_, answered) = new_shape_sale();
    let meta = |i: usize| answered[i].0.meta.clone();
    let record = |i: usize| {
        let (command, outcome) = &answered[i];
        InventoryEvent::CommandAccepted(InventoryCommandAccepted {
            record: CommandRecord::with_fingerprint(&meta(i), command.body.fingerprint()),
            outcome: outcome.clone(),
        })
    };
    let v1 = |name: &str, json: String| -> InventoryEvent {
        codec::decode(name, 1, json.as_bytes()).expect("a version 1 payload")
    };
    let hold = |n: u128, quantity: u32, placed: i64, expires: i64| {
        let user = buyer(n);
        let total = 5000 * quantity;
        v1(
            "HoldPlaced",
            format!(
                r#"{{"orderId":"{}","userId":"{user}","tierId":"{GA}","quantity":{quantity},
                    "seats":[],"total":{{"amountMinor":{total},"currency":"EUR"}},
                    "placedAt":"{}","expiresAt":"{}"}}"#,
                order(n),
                t(placed).to_rfc3339(),
                t(expires).to_rfc3339()
            ),
        )
    };
    let paid = |n: u128, at: i64| {
        v1(
            "OrderConfirmed",
            format!(
                r#"{{"orderId":"{}","userId":"{}","paymentRef":"pay-{n}",
                    "amount":{{"amountMinor":5000,"currency":"EUR"}},
                    "tickets":[{{"ticketId":"{}","secret":"{}","seat":null}}],
                    "at":"{}"}}"#,
                order(n),
                buyer(n),
                ticket(n),
                secret(n),
                t(at).to_rfc3339()
            ),
        )
    };
    plus(
        on_sale(10),
        [
            hold(1, 1, 1, 11),
            record(0),
            paid(1, 2),
            record(1),
            hold(2, 1, 3, 13),
            paid(2, 3),
            record(2),
            hold(3, 1, 4, 14),
            record(3),
        ],
    )
}

#[test]
fn old_shape_streams_fold_to_the_same_state_and_still_recall_retries() {
    let (new, answered) = new_shape_sale();
    let old = old_shape_sale();
    let old_state = Inventory::replay(&old);
    assert_eq!(old_state, Inventory::replay(&new));
    assert_eq!(old_state.check_invariants(), Ok(()));
    for (command, first) in &answered {
        assert_eq!(&recalled(&old, command), first, "{:?}", command.body);
    }
    let later = cmd(customer(1), "hold-1", t(5), hold_ga(1, 1, t(15)));
    assert_eq!(recalled(&old, &later), answered[0].1);
    let r = refused(
        &old,
        &cmd(customer(1), "hold-1", t(5), hold_ga(1, 2, t(15))),
    );
    assert_eq!(r.code(), "INVALID_INPUT");
    // New decisions on an old stream are written in the new shape, and the mixed stream
    // still folds and recalls.
    let pay = cmd(Actor::System, "pay-3", t(6), confirm(3, 5000, 3));
    let mixed = plus(old.clone(), decided(&old, &pay));
    assert!(matches!(
        mixed.last(),
        Some(InventoryEvent::OrderConfirmed(OrderConfirmed {
            command: Some(_),
            ..
        }))
    ));
    assert!(matches!(
        recalled(&mixed, &pay),
        InventoryOutcome::Confirmed { .. }
    ));
    assert_eq!(recalled(&mixed, &answered[1].0), answered[1].1);
}

#[test]
fn the_harness_sees_the_carried_record_and_checks_its_retry() {
    // `accepted` asserts the decision ends with its one record and that a retry after the
    // fold answers the same with no events; `then` compares the business events only.
    let (events, _, _) = given::<Inventory>(on_sale(10))
        .when(cmd(customer(1), "k", t(1), hold_ga(1, 1, t(11))))
        .accepted();
    assert_eq!(events.len(), 1);
    given::<Inventory>(plus(on_sale(10), [held(1, buyer(1), 1, t(10))]))
        .when(cmd(Actor::System, "p", t(2), confirm(1, 5000, 1)))
        .then(vec![InventoryEvent::OrderConfirmed(OrderConfirmed {
            order_id: order(1),
            user_id: buyer(1),
            payment_ref: "pay-1".into(),
            amount: eur(5000),
            tickets: issued(1, 1, &[]),
            at: t(2),
            command: None,
        })]);
}
