//! Given/when/then tests of refunds: what is owed back, recording the provider's refund
//! once, and every way recording one is refused.

mod common;

use common::*;
use domain::inventory::*;
use domain::testing::Given;
use domain::*;

fn given(events: Vec<InventoryEvent>) -> Given<Inventory> {
    domain::testing::given(events)
}

fn plus(
    mut base: Vec<InventoryEvent>,
    more: impl IntoIterator<Item = InventoryEvent>,
) -> Vec<InventoryEvent> {
    base.extend(more);
    base
}

fn record_refund(n: u128, payment_ref: &str, refund_id: &str, amount: i64) -> InventoryCommand {
    InventoryCommand::RecordRefund {
        order_id: order(n),
        payment_ref: payment_ref.into(),
        refund_id: refund_id.into(),
        amount_minor: amount,
        currency: "EUR".into(),
    }
}

fn refund_owed(n: u128, payment_ref: &str, amount: u64, reason: RefundReason) -> InventoryEvent {
    InventoryEvent::PaymentRefundOwed(PaymentRefundOwed {
        order_id: order(n),
        user_id: buyer(n),
        payment_ref: payment_ref.into(),
        amount: eur(amount),
        reason,
        at: t(12),
    })
}

fn refund_issued(n: u128, payment_ref: &str, refund_id: &str, amount: u64) -> InventoryEvent {
    InventoryEvent::RefundIssued(RefundIssued {
        order_id: order(n),
        user_id: buyer(n),
        payment_ref: payment_ref.into(),
        refund_id: refund_id.into(),
        amount: eur(amount),
        at: t(13),
    })
}

/// Order 1 (one ticket at 50.00) was held, lapsed, and then paid by `pay-late`.
fn late_payment() -> Vec<InventoryEvent> {
    plus(
        on_sale(10),
        [
            held(1, buyer(1), 1, t(10)),
            InventoryEvent::HoldExpired(HoldExpired {
                order_id: order(1),
                at: t(10),
            }),
            refund_owed(1, "pay-late", 5000, RefundReason::HoldExpired),
        ],
    )
}

/// Order 1 (one ticket at 50.00) was paid by `pay-1`.
fn paid() -> Vec<InventoryEvent> {
    plus(
        on_sale(10),
        [
            held(1, buyer(1), 1, t(10)),
            confirmed(1, buyer(1), 5000, issued(1, 1, &[])),
        ],
    )
}

fn cancelled(n: u128, refund: Option<u64>, reason: RefundReason) -> InventoryEvent {
    InventoryEvent::OrderCancelled(OrderCancelled {
        order_id: order(n),
        user_id: buyer(n),
        refund: refund.map(eur),
        reason,
        voided_tickets: if refund.is_some() {
            vec![ticket(n)]
        } else {
            vec![]
        },
        at: t(5),
    })
}

fn refunds_of(state: &Inventory, n: u128) -> Vec<RefundView> {
    state.order(order(n)).unwrap().refunds
}

#[test]
fn a_refund_owed_for_a_late_payment_is_recorded_as_made() {
    let before = given(late_payment());
    let state = before.state();
    assert_eq!(
        refunds_of(state, 1),
        vec![RefundView {
            amount: eur(5000),
            reason: RefundReason::HoldExpired,
            status: RefundStatus::Owed,
        }]
    );
    let (outcome, state) = given(late_payment())
        .when(cmd(
            Actor::System,
            "refund-1",
            t(13),
            record_refund(1, "pay-late", "re_1", 5000),
        ))
        .then(vec![refund_issued(1, "pay-late", "re_1", 5000)]);
    assert_eq!(
        outcome,
        InventoryOutcome::Refunded {
            order_id: order(1),
            refund_id: "re_1".into(),
            amount: eur(5000),
        }
    );
    assert_eq!(
        refunds_of(&state, 1),
        vec![RefundView {
            amount: eur(5000),
            reason: RefundReason::HoldExpired,
            status: RefundStatus::Refunded {
                refund_id: "re_1".into()
            },
        }]
    );
    // Never tickets: the order stays expired.
    assert_eq!(state.order(order(1)).unwrap().status, OrderStatus::Expired);
    assert_eq!(state.tickets().count(), 0);
}

#[test]
fn an_admin_may_record_a_refund_and_a_customer_may_not() {
    given(late_payment())
        .when(cmd(
            admin(),
            "refund-1",
            t(13),
            record_refund(1, "pay-late", "re_1", 5000),
        ))
        .then(vec![refund_issued(1, "pay-late", "re_1", 5000)]);
    for actor in [customer(1), organizer()] {
        given(late_payment())
            .when(cmd(
                actor,
                "refund-1",
                t(13),
                record_refund(1, "pay-late", "re_1", 5000),
            ))
            .rejected("FORBIDDEN");
    }
}

#[test]
fn the_same_refund_reported_again_changes_nothing() {
    let done = plus(late_payment(), [refund_issued(1, "pay-late", "re_1", 5000)]);
    // Under another key (a second provider callback): no new facts, the same answer.
    let (outcome, state) = given(done)
        .when(cmd(
            Actor::System,
            "refund-1-again",
            t(14),
            record_refund(1, "pay-late", "re_1", 5000),
        ))
        .then(vec![]);
    assert_eq!(
        outcome,
        InventoryOutcome::Refunded {
            order_id: order(1),
            refund_id: "re_1".into(),
            amount: eur(5000),
        }
    );
    assert_eq!(refunds_of(&state, 1).len(), 1);
}

#[test]
fn a_second_refund_of_the_same_payment_is_refused() {
    let done = plus(late_payment(), [refund_issued(1, "pay-late", "re_1", 5000)]);
    let r = given(done)
        .when(cmd(
            Actor::System,
            "refund-2",
            t(14),
            record_refund(1, "pay-late", "re_2", 5000),
        ))
        .rejected("ALREADY_REFUNDED");
    assert!(r.to_string().contains("re_1"), "{r}");
}

#[test]
fn a_refund_is_refused_when_none_is_owed() {
    // A paid order owes nothing; nor does a cancelled hold that was never paid.
    given(paid())
        .when(cmd(
            Actor::System,
            "refund-1",
            t(5),
            record_refund(1, "pay-1", "re_1", 5000),
        ))
        .rejected("NO_REFUND_OWED");
    given(plus(
        on_sale(10),
        [
            held(1, buyer(1), 1, t(10)),
            cancelled(1, None, RefundReason::CancelledByRequest),
        ],
    ))
    .when(cmd(
        Actor::System,
        "refund-1",
        t(5),
        record_refund(1, "pay-1", "re_1", 5000),
    ))
    .rejected("NO_REFUND_OWED");
    // Another payment than the one owed back.
    given(late_payment())
        .when(cmd(
            Actor::System,
            "refund-1",
            t(13),
            record_refund(1, "pay-other", "re_1", 5000),
        ))
        .rejected("NO_REFUND_OWED");
    // An order that does not exist.
    given(late_payment())
        .when(cmd(
            Actor::System,
            "refund-1",
            t(13),
            record_refund(9, "pay-late", "re_1", 5000),
        ))
        .rejected("NOT_FOUND");
}

#[test]
fn a_refund_of_another_amount_or_currency_is_refused() {
    for (amount, currency) in [(4999, "EUR"), (5001, "EUR"), (5000, "USD")] {
        let r = given(late_payment())
            .when(cmd(
                Actor::System,
                "refund-1",
                t(13),
                InventoryCommand::RecordRefund {
                    order_id: order(1),
                    payment_ref: "pay-late".into(),
                    refund_id: "re_1".into(),
                    amount_minor: amount,
                    currency: currency.into(),
                },
            ))
            .rejected("REFUND_MISMATCH");
        assert!(r.to_string().contains("5000 EUR"), "{r}");
    }
    // The same refund id reported with another amount is no repeat either.
    given(plus(
        late_payment(),
        [refund_issued(1, "pay-late", "re_1", 5000)],
    ))
    .when(cmd(
        Actor::System,
        "refund-1-again",
        t(14),
        record_refund(1, "pay-late", "re_1", 4000),
    ))
    .rejected("REFUND_MISMATCH");
}

#[test]
fn malformed_refunds_are_invalid_input() {
    let bad = [
        record_refund(1, "pay-late", "", 5000),
        record_refund(1, "pay-late", &"r".repeat(201), 5000),
        record_refund(1, "", "re_1", 5000),
        record_refund(1, "pay-late", "re\u{7}1", 5000),
        record_refund(1, "pay-late", "re_1", -1),
        record_refund(1, "pay-late", "re_1", i64::MAX),
        InventoryCommand::RecordRefund {
            order_id: order(1),
            payment_ref: "pay-late".into(),
            refund_id: "re_1".into(),
            amount_minor: 5000,
            currency: "euro".into(),
        },
    ];
    for body in bad {
        given(late_payment())
            .when(cmd(Actor::System, "refund-1", t(13), body))
            .rejected("INVALID_INPUT");
    }
}

#[test]
fn a_cancelled_paid_order_owes_its_payment_back_until_refunded() {
    let (_, state) = given(paid())
        .when(cmd(
            customer(1),
            "cancel",
            t(5),
            InventoryCommand::CancelOrder { order_id: order(1) },
        ))
        .then(vec![cancelled(
            1,
            Some(5000),
            RefundReason::CancelledByRequest,
        )]);
    assert_eq!(
        refunds_of(&state, 1),
        vec![RefundView {
            amount: eur(5000),
            reason: RefundReason::CancelledByRequest,
            status: RefundStatus::Owed,
        }]
    );
    let after_cancel = plus(
        paid(),
        [cancelled(1, Some(5000), RefundReason::CancelledByRequest)],
    );
    let (_, state) = given(after_cancel)
        .when(cmd(
            Actor::System,
            "refund-1",
            t(13),
            record_refund(1, "pay-1", "re_1", 5000),
        ))
        .then(vec![refund_issued(1, "pay-1", "re_1", 5000)]);
    assert!(matches!(
        refunds_of(&state, 1)[0].status,
        RefundStatus::Refunded { .. }
    ));
}

#[test]
fn a_cancelled_event_owes_every_paid_order_its_payment_back() {
    let events = plus(
        on_sale(10),
        [
            held(1, buyer(1), 1, t(10)),
            confirmed(1, buyer(1), 5000, issued(1, 1, &[])),
            held(2, buyer(2), 2, t(10)),
            confirmed(2, buyer(2), 10_000, issued(2, 2, &[])),
            held(3, buyer(3), 1, t(10)),
        ],
    );
    let (_, _, state) = given(events)
        .when(cmd(
            organizer(),
            "cancel",
            t(5),
            InventoryCommand::CancelEvent {
                reason: "storm".into(),
            },
        ))
        .accepted();
    let owed = |n| {
        refunds_of(&state, n)
            .into_iter()
            .map(|r| (r.amount, r.reason, r.status))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        owed(1),
        vec![(eur(5000), RefundReason::EventCancelled, RefundStatus::Owed)]
    );
    assert_eq!(
        owed(2),
        vec![(
            eur(10_000),
            RefundReason::EventCancelled,
            RefundStatus::Owed
        )]
    );
    // The unpaid hold owes nothing.
    assert_eq!(owed(3), vec![]);
    // Refunds may still be recorded on a cancelled event.
    let state = given_state_then(state, record_refund(2, "pay-2", "re_2", 10_000));
    assert!(matches!(
        refunds_of(&state, 2)[0].status,
        RefundStatus::Refunded { .. }
    ));
}

fn given_state_then(state: Inventory, body: InventoryCommand) -> Inventory {
    let decision = state
        .decide(&cmd(Actor::System, "refund", t(6), body))
        .expect("the refund is recorded");
    let mut state = state;
    for e in &decision.events {
        state.evolve(e);
    }
    state.check_invariants().unwrap();
    state
}

#[test]
fn a_late_payment_reported_again_owes_one_refund_only() {
    let confirm_late = || InventoryCommand::ConfirmPayment {
        order_id: order(1),
        payment: PaymentInput {
            payment_ref: "pay-late".into(),
            ..payment(1, 5000, 1, 1)
        },
    };
    // The callback again under a new key: no second refund owed, the same answer.
    let (outcome, state) = given(late_payment())
        .when(cmd(Actor::System, "pay-again", t(12), confirm_late()))
        .then(vec![]);
    assert_eq!(
        outcome,
        InventoryOutcome::RefundOwed {
            order_id: order(1),
            amount: eur(5000),
            reason: RefundReason::HoldExpired,
        }
    );
    assert_eq!(refunds_of(&state, 1).len(), 1);
    // Also once the refund was made: still owed once, and still refunded.
    let (_, state) = given(plus(
        late_payment(),
        [refund_issued(1, "pay-late", "re_1", 5000)],
    ))
    .when(cmd(Actor::System, "pay-again", t(14), confirm_late()))
    .then(vec![]);
    assert_eq!(refunds_of(&state, 1).len(), 1);
    assert_eq!(state.tickets().count(), 0);
}

#[test]
fn a_free_order_cancelled_owes_nothing_to_refund() {
    let free = plus(
        on_sale(10),
        [
            held(1, buyer(1), 1, t(10)),
            confirmed(1, buyer(1), 0, issued(1, 1, &[])),
            cancelled(1, Some(0), RefundReason::CancelledByRequest),
        ],
    );
    let before = given(free.clone());
    assert_eq!(refunds_of(before.state(), 1), vec![]);
    given(free)
        .when(cmd(
            Actor::System,
            "refund-1",
            t(6),
            record_refund(1, "pay-1", "re_1", 0),
        ))
        .rejected("NO_REFUND_OWED");
}
