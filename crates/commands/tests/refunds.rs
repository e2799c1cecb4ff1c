//! Refunds end to end on a real SQLite store: every path that owes money back (a late
//! payment, a cancelled paid order, a cancelled event) pays it through the provider and
//! stores both the refund owed and the refund made, once, however often it is retried.

mod common;

use std::sync::Arc;

use commands::{OrderLocator, PayOutcome};
use domain::inventory::{
    InventoryEvent, InventoryOutcome, RefundReason, RefundStatus, RefundView, Selection,
};
use domain::{EventId, OrderId};
use payments::test_tokens;
use store::EventStore;

use common::*;

/// Routes every order to one event, as the read side would.
struct OneEvent(EventId);

#[async_trait::async_trait]
impl OrderLocator for OneEvent {
    async fn event_of_order(&self, _order: OrderId) -> Option<EventId> {
        Some(self.0)
    }
}

fn one() -> Selection {
    Selection::Quantity { quantity: 1 }
}

/// The refund facts stored in the event's stream: (refunds owed, refunds made) per order.
async fn stored_refunds(h: &Harness, event: EventId, order: OrderId) -> (usize, usize) {
    let stream = commands::actor::stream_name(event).expect("stream name");
    let records = h
        .store
        .read_stream(&stream, 0, 1_000_000)
        .await
        .expect("read stream");
    let (mut owed, mut made) = (0, 0);
    for record in &records {
        match commands::codec::decode(record).expect("decode") {
            InventoryEvent::PaymentRefundOwed(e) if e.order_id == order => owed += 1,
            InventoryEvent::OrderCancelled(e) if e.order_id == order && e.refund.is_some() => {
                owed += 1
            }
            InventoryEvent::RefundIssued(e) if e.order_id == order => {
                let ledger = h.provider.ledger();
                let refunds = ledger.refunds_for(order.as_uuid());
                assert_eq!(refunds.len(), 1, "the provider refunded once");
                assert_eq!(e.refund_id, refunds[0].refund_id, "the provider's refund");
                assert_eq!(e.payment_ref, refunds[0].charge_id, "the refunded charge");
                assert_eq!(e.amount.amount_minor, refunds[0].amount_minor);
                made += 1;
            }
            _ => {}
        }
    }
    (owed, made)
}

/// An order's refunds as the durable state shows them.
async fn refunds_of(h: &Harness, event: EventId, order: OrderId) -> Vec<RefundView> {
    h.replay(event).await.order(order).expect("order").refunds
}

fn refunded(view: &[RefundView]) -> bool {
    matches!(
        view,
        [RefundView {
            status: RefundStatus::Refunded { .. },
            ..
        }]
    )
}

#[tokio::test]
async fn money_for_an_expired_hold_is_refunded_and_the_refund_recorded_once() {
    let mut h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let receipt = h
        .service
        .purchase(
            &ctx(&buyer(1)),
            event,
            tier,
            one(),
            test_tokens::WEBHOOK_SUCCESS,
        )
        .await
        .expect("purchase");
    let PayOutcome::Pending { order_id, .. } = receipt.outcome else {
        panic!("not pending: {:?}", receipt.outcome)
    };
    h.clock.advance(chrono::Duration::minutes(11));
    h.service.expire_due(event).await.expect("expire");
    let delivery = h.webhooks.recv().await.expect("webhook");
    let webhook: payments::WebhookEvent =
        serde_json::from_slice(&delivery.body).expect("webhook json");
    let done = h
        .service
        .handle_payment_webhook(&webhook)
        .await
        .expect("handled");
    let PayOutcome::Refunded { refund_id, .. } = &done.outcome else {
        panic!("not refunded: {:?}", done.outcome)
    };
    assert_eq!(stored_refunds(&h, event, order_id).await, (1, 1));
    let view = refunds_of(&h, event, order_id).await;
    assert_eq!(view[0].reason, RefundReason::HoldExpired);
    assert_eq!(
        view[0].status,
        RefundStatus::Refunded {
            refund_id: refund_id.clone()
        }
    );

    // Redeliveries, one after another and then many at once: nothing more is owed or made.
    h.service
        .handle_payment_webhook(&webhook)
        .await
        .expect("again");
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let service = h.service.clone();
        let webhook = webhook.clone();
        tasks.push(tokio::spawn(async move {
            service.handle_payment_webhook(&webhook).await
        }));
    }
    for task in tasks {
        let again = task.await.expect("task").expect("redelivery handled");
        assert!(
            matches!(&again.outcome, PayOutcome::Refunded { refund_id: r, .. } if r == refund_id),
            "{:?}",
            again.outcome
        );
    }
    assert_eq!(stored_refunds(&h, event, order_id).await, (1, 1));
    assert!(refunded(&refunds_of(&h, event, order_id).await));
}

#[tokio::test]
async fn a_cancelled_paid_order_records_its_refund_once() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let receipt = h
        .service
        .purchase(&ctx(&buyer(1)), event, tier, one(), test_tokens::SUCCESS)
        .await
        .expect("purchase");
    let PayOutcome::Confirmed { order_id, .. } = receipt.outcome else {
        panic!("not confirmed: {:?}", receipt.outcome)
    };
    let c = ctx(&buyer(1));
    let cancelled = h
        .service
        .cancel_order(&c, event, order_id)
        .await
        .expect("cancel");
    assert!(matches!(
        cancelled.outcome,
        InventoryOutcome::OrderCancelled {
            refund: Some(_),
            ..
        }
    ));
    assert_eq!(stored_refunds(&h, event, order_id).await, (1, 1));
    assert!(refunded(&refunds_of(&h, event, order_id).await));
    // The client retries the cancellation: the same answer, no second refund.
    let again = h
        .service
        .cancel_order(&c, event, order_id)
        .await
        .expect("retry");
    assert_eq!(again.outcome, cancelled.outcome);
    assert_eq!(stored_refunds(&h, event, order_id).await, (1, 1));
    // The charge's webhook arriving after all that is the same payment: owed once, made once.
    let charge = h.provider.ledger().charges_for(order_id.as_uuid())[0]
        .charge_id
        .clone();
    h.service
        .set_order_locator(Arc::new(OneEvent(event)) as Arc<dyn OrderLocator>);
    let webhook = payments::WebhookEvent {
        id: "evt_late".into(),
        kind: payments::WebhookEventType::ChargeSucceeded,
        charge_id: charge,
        order_id: order_id.as_uuid(),
        amount: 2500,
        currency: "EUR".into(),
        created: 0,
        failure_reason: None,
        refund_id: None,
        refund_reason: None,
    };
    let late = h.service.handle_payment_webhook(&webhook).await;
    assert!(
        matches!(&late, Ok(r) if matches!(r.outcome, PayOutcome::Refunded { .. })),
        "{late:?}"
    );
    assert_eq!(stored_refunds(&h, event, order_id).await, (1, 1));
}

#[tokio::test]
async fn a_cancelled_event_records_a_refund_for_every_paid_order_once() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let mut paid = Vec::new();
    for n in 0..3 {
        let r = h
            .service
            .purchase(&ctx(&buyer(n)), event, tier, one(), test_tokens::SUCCESS)
            .await
            .expect("purchase");
        let PayOutcome::Confirmed { order_id, .. } = r.outcome else {
            panic!("not confirmed: {:?}", r.outcome)
        };
        paid.push(order_id);
    }
    let held = h
        .service
        .hold(&ctx(&buyer(9)), event, tier, one())
        .await
        .expect("hold");
    let InventoryOutcome::Held {
        order_id: unpaid, ..
    } = held.outcome
    else {
        panic!("not held")
    };
    let c = ctx(&h.organizer);
    h.service
        .cancel_event(&c, event, "venue flooded".into())
        .await
        .expect("cancel");
    h.service
        .cancel_event(&c, event, "venue flooded".into())
        .await
        .expect("retry");
    for &order in &paid {
        assert_eq!(stored_refunds(&h, event, order).await, (1, 1));
        let view = refunds_of(&h, event, order).await;
        assert!(refunded(&view), "{view:?}");
        assert_eq!(view[0].reason, RefundReason::EventCancelled);
    }
    assert_eq!(stored_refunds(&h, event, unpaid).await, (0, 0));
    assert!(refunds_of(&h, event, unpaid).await.is_empty());
}
