//! Retries across a restart, on a real SQLite store: a buyer whose purchase or payment went
//! through before the server restarted retries with the same idempotency key, against a
//! payment provider that no longer knows the first charge. The retry answers the paid
//! order as it was first answered, charges nothing and owes no refund.

mod common;

use std::sync::Arc;
use std::time::Duration;

use commands::{CommandService, OrderLocator, PayOutcome, RequestContext};
use domain::inventory::{InventoryEvent, InventoryOutcome, Selection};
use domain::{EventId, OrderId, TicketId};
use payments::{
    ChannelSink, ChargeOutcome, ChargeRequest, PaymentPort, SimulatedProvider, SimulatorConfig,
    WebhookEvent, WebhookEventType, test_tokens,
};
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

/// A command side started again on the same store, with a provider whose ledger is empty
/// (as the simulated provider's is after the process restarts).
async fn restart(h: &Harness) -> (CommandService, SimulatedProvider) {
    h.service.shutdown(Duration::from_secs(5)).await;
    // The restart takes a while; the retry comes later.
    h.clock.advance(chrono::Duration::seconds(30));
    let (sink, _webhooks) = ChannelSink::new();
    let provider = SimulatedProvider::new(SimulatorConfig::new(WEBHOOK_SECRET), Arc::new(sink));
    let service = CommandService::start(
        Arc::new(h.store.clone()),
        Arc::new(h.clock.clone()),
        Arc::new(provider.clone()),
        config(),
    )
    .await
    .expect("restart service");
    (service, provider)
}

/// The order's refunds owed, confirmations, and the stream's length.
async fn stored(h: &Harness, event: EventId, order: OrderId) -> (usize, usize, usize) {
    let stream = commands::actor::stream_name(event).expect("stream name");
    let records = h
        .store
        .read_stream(&stream, 0, 1_000_000)
        .await
        .expect("read stream");
    let (mut owed, mut confirmed) = (0, 0);
    for record in &records {
        match commands::codec::decode(record).expect("decode") {
            InventoryEvent::PaymentRefundOwed(e) if e.order_id == order => owed += 1,
            InventoryEvent::OrderConfirmed(e) if e.order_id == order => confirmed += 1,
            _ => {}
        }
    }
    (owed, confirmed, records.len())
}

fn confirmed(outcome: PayOutcome) -> (OrderId, Vec<TicketId>) {
    match outcome {
        PayOutcome::Confirmed { order_id, tickets } => (order_id, tickets),
        other => panic!("expected the paid order, got {other:?}"),
    }
}

#[tokio::test]
async fn a_purchase_retried_after_a_restart_answers_the_paid_order_without_charging() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let c = ctx(&buyer(1));
    let first = h
        .service
        .purchase(&c, event, tier, one(), test_tokens::SUCCESS)
        .await
        .expect("purchase");
    let first_position = first.position;
    let (order, tickets) = confirmed(first.outcome);
    assert_eq!(tickets.len(), 1);
    assert_eq!(h.provider.ledger().charges_for(order.as_uuid()).len(), 1);
    let before = stored(&h, event, order).await;
    assert_eq!(before.0, 0, "no refund owed after the first purchase");
    assert_eq!(before.1, 1, "one confirmation");

    let (service, provider) = restart(&h).await;
    let retry = service
        .purchase(&c, event, tier, one(), test_tokens::SUCCESS)
        .await
        .expect("retried purchase");
    assert_eq!(
        retry.position, first_position,
        "the first answer's position"
    );
    assert_eq!(confirmed(retry.outcome), (order, tickets));
    assert!(
        provider.ledger().charges_for(order.as_uuid()).is_empty(),
        "the retry charged again"
    );
    assert!(provider.ledger().refunds_for(order.as_uuid()).is_empty());
    assert_eq!(
        stored(&h, event, order).await,
        before,
        "the retry wrote nothing"
    );
    service.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_payment_retried_after_a_restart_answers_the_paid_order_without_charging() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let buyer = buyer(2);
    let held = h
        .service
        .hold(&ctx(&buyer), event, tier, one())
        .await
        .expect("hold");
    let InventoryOutcome::Held { order_id, .. } = held.outcome else {
        panic!("expected a hold, got {:?}", held.outcome);
    };
    let pay_ctx = ctx(&buyer);
    let first = h
        .service
        .pay(&pay_ctx, event, order_id, test_tokens::SUCCESS)
        .await
        .expect("pay");
    let first_position = first.position;
    let (order, tickets) = confirmed(first.outcome);
    assert_eq!(order, order_id);
    let before = stored(&h, event, order).await;

    let (service, provider) = restart(&h).await;
    let retry = service
        .pay(&pay_ctx, event, order_id, test_tokens::SUCCESS)
        .await
        .expect("retried payment");
    assert_eq!(
        retry.position, first_position,
        "the first answer's position"
    );
    assert_eq!(confirmed(retry.outcome), (order, tickets.clone()));
    assert!(provider.ledger().charges_for(order.as_uuid()).is_empty());
    assert_eq!(
        stored(&h, event, order).await,
        before,
        "the retry wrote nothing"
    );

    // Paying a paid order under another key is the same payment, not a second one.
    let again = service
        .pay(&ctx(&buyer), event, order_id, test_tokens::SUCCESS)
        .await
        .expect("payment under a new key");
    assert_eq!(confirmed(again.outcome), (order, tickets));
    assert!(provider.ledger().charges_for(order.as_uuid()).is_empty());
    assert_eq!(stored(&h, event, order).await, before);
    service.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn concurrent_retries_after_a_restart_all_answer_the_paid_order() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let c = ctx(&buyer(3));
    let first = h
        .service
        .purchase(&c, event, tier, one(), test_tokens::SUCCESS)
        .await
        .expect("purchase");
    let first_position = first.position;
    let (order, tickets) = confirmed(first.outcome);
    let before = stored(&h, event, order).await;

    let (service, provider) = restart(&h).await;
    let retries: Vec<_> = (0..16)
        .map(|_| {
            let service = service.clone();
            let c: RequestContext = c.clone();
            tokio::spawn(async move {
                service
                    .purchase(&c, event, tier, one(), test_tokens::SUCCESS)
                    .await
            })
        })
        .collect();
    for retry in retries {
        let receipt = retry.await.expect("join").expect("retried purchase");
        assert_eq!(receipt.position, first_position);
        assert_eq!(confirmed(receipt.outcome), (order, tickets.clone()));
    }
    assert!(provider.ledger().charges_for(order.as_uuid()).is_empty());
    assert_eq!(stored(&h, event, order).await, before);
    service.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn a_different_payment_for_a_paid_order_is_still_refunded() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let c = ctx(&buyer(4));
    let first = h
        .service
        .purchase(&c, event, tier, one(), test_tokens::SUCCESS)
        .await
        .expect("purchase");
    let (order, _) = confirmed(first.outcome);
    let before = stored(&h, event, order).await;

    // After the restart the provider takes a second, genuinely different charge for the
    // order and reports it by webhook: that money buys nothing and goes back.
    let (service, provider) = restart(&h).await;
    let charged = provider
        .charge(ChargeRequest::for_order(
            order.as_uuid(),
            2500,
            "EUR",
            test_tokens::SUCCESS,
        ))
        .await
        .expect("second charge");
    let ChargeOutcome::Succeeded { charge_id } = charged else {
        panic!("expected a charge, got {charged:?}");
    };
    let webhook = WebhookEvent {
        id: "evt-second-charge".into(),
        kind: WebhookEventType::ChargeSucceeded,
        charge_id,
        order_id: order.as_uuid(),
        amount: 2500,
        currency: "EUR".into(),
        created: start_time().timestamp(),
        failure_reason: None,
        refund_id: None,
        refund_reason: None,
    };
    service.set_order_locator(Arc::new(OneEvent(event)));
    let answered = service
        .handle_payment_webhook(&webhook)
        .await
        .expect("webhook");
    assert!(
        matches!(answered.outcome, PayOutcome::Refunded { order_id, .. } if order_id == order),
        "got {:?}",
        answered.outcome
    );
    assert_eq!(provider.ledger().refunds_for(order.as_uuid()).len(), 1);
    let after = stored(&h, event, order).await;
    assert_eq!(after.0, before.0 + 1, "one refund owed");
    assert_eq!(after.1, 1, "still one confirmation");
    service.shutdown(Duration::from_secs(5)).await;
}
