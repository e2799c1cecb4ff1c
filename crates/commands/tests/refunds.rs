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
    // The refunds are paid in the background once the cancellation is durable.
    wait_refunded(&h, &h.service, event, &paid).await;
    for &order in &paid {
        assert_eq!(stored_refunds(&h, event, order).await, (1, 1));
        let view = refunds_of(&h, event, order).await;
        assert!(refunded(&view), "{view:?}");
        assert_eq!(view[0].reason, RefundReason::EventCancelled);
    }
    assert_eq!(stored_refunds(&h, event, unpaid).await, (0, 0));
    assert!(refunds_of(&h, event, unpaid).await.is_empty());
}

/// Waits (at most 30 s) until every order's refund is recorded as made.
async fn wait_refunded(
    h: &Harness,
    service: &commands::CommandService,
    event: EventId,
    orders: &[OrderId],
) {
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let wanted = orders.to_vec();
        let done = service
            .read(event, move |inv| {
                wanted.iter().all(|o| {
                    inv.order(*o).is_some_and(|v| {
                        v.refunds.len() == 1
                            && matches!(v.refunds[0].status, RefundStatus::Refunded { .. })
                    })
                })
            })
            .await
            .expect("read");
        if done {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refunds not paid in time; the provider has {:?}",
            h.provider.ledger().refunds
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
    // The actor answers from decisions not yet durable too: wait for the store.
    loop {
        let stored = h.replay(event).await;
        let durable = orders.iter().all(|o| {
            stored.order(*o).is_some_and(|v| {
                matches!(v.refunds.as_slice(), [r] if matches!(r.status, RefundStatus::Refunded { .. }))
            })
        });
        if durable {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "refunds not stored in time"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
    }
}

/// A provider whose refunds fail while `down` is set, as a provider outage would.
struct Flaky {
    inner: payments::SimulatedProvider,
    down: std::sync::atomic::AtomicBool,
    refused: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl payments::PaymentPort for Flaky {
    async fn charge(
        &self,
        request: payments::ChargeRequest,
    ) -> Result<payments::ChargeOutcome, payments::PaymentError> {
        self.inner.charge(request).await
    }

    async fn refund(
        &self,
        request: payments::RefundRequest,
    ) -> Result<payments::RefundOutcome, payments::PaymentError> {
        if self.down.load(std::sync::atomic::Ordering::SeqCst) {
            self.refused
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Err(payments::PaymentError::Unavailable(
                "provider outage".into(),
            ));
        }
        self.inner.refund(request).await
    }

    async fn list_charges(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<payments::ListedCharge>, payments::PaymentError> {
        self.inner.list_charges(after, limit).await
    }
}

async fn start_on(
    h: &Harness,
    provider: Arc<dyn payments::PaymentPort>,
) -> commands::CommandService {
    commands::CommandService::start(
        Arc::new(h.store.clone()),
        Arc::new(h.clock.clone()),
        provider,
        config(),
    )
    .await
    .expect("start service")
}

async fn paid_orders(
    service: &commands::CommandService,
    event: EventId,
    tier: domain::TierId,
    n: u128,
) -> Vec<OrderId> {
    let mut paid = Vec::new();
    for i in 0..n {
        let r = service
            .purchase(&ctx(&buyer(i)), event, tier, one(), test_tokens::SUCCESS)
            .await
            .expect("purchase");
        let PayOutcome::Confirmed { order_id, .. } = r.outcome else {
            panic!("not confirmed: {:?}", r.outcome)
        };
        paid.push(order_id);
    }
    paid
}

/// Refunds a cancellation owes while the provider is down are paid once it is back: by the
/// background sweep's retries, and by a restarted command side that finds them owed.
#[tokio::test]
async fn refunds_owed_during_an_outage_are_paid_after_it_and_after_a_restart() {
    let h = harness().await;
    let flaky = Arc::new(Flaky {
        inner: h.provider.clone(),
        down: std::sync::atomic::AtomicBool::new(true),
        refused: Default::default(),
    });
    let service = start_on(&h, flaky.clone()).await;
    let (first, tier_1) = h.published_event(10, None).await;
    let (second, tier_2) = h.published_event(10, None).await;
    let paid_first = paid_orders(&service, first, tier_1, 2).await;
    let paid_second = paid_orders(&service, second, tier_2, 2).await;

    // The first cancellation's refunds fail, and are retried until the provider is back.
    service
        .cancel_event(&ctx(&h.organizer), first, "storm".into())
        .await
        .expect("cancel");
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while flaky.refused.load(std::sync::atomic::Ordering::SeqCst) < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the sweep never tried"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    for &order in &paid_first {
        assert_eq!(
            stored_refunds(&h, first, order).await,
            (1, 0),
            "owed, not made"
        );
    }
    flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
    wait_refunded(&h, &service, first, &paid_first).await;
    for &order in &paid_first {
        assert_eq!(stored_refunds(&h, first, order).await, (1, 1));
    }

    // The second cancellation's refunds are still owed when the process stops; the next
    // start pays them.
    flaky.down.store(true, std::sync::atomic::Ordering::SeqCst);
    service
        .cancel_event(&ctx(&h.organizer), second, "storm".into())
        .await
        .expect("cancel");
    service.shutdown(std::time::Duration::from_secs(5)).await;
    drop(service);
    for &order in &paid_second {
        assert_eq!(stored_refunds(&h, second, order).await, (1, 0));
    }
    flaky.down.store(false, std::sync::atomic::Ordering::SeqCst);
    let restarted = start_on(&h, flaky.clone()).await;
    restarted.resume_all().await.expect("resume");
    wait_refunded(&h, &restarted, second, &paid_second).await;
    for &order in &paid_second {
        assert_eq!(stored_refunds(&h, second, order).await, (1, 1));
    }
    assert_eq!(h.provider.ledger().refunds.len(), 4);
}

/// Money the provider took for an order that was never confirmed (the process stopped
/// between the charge and the confirmation) is found by reconciliation: it confirms a
/// hold still live, and is refunded when the hold is gone.
#[tokio::test]
async fn reconciliation_settles_charges_that_were_never_confirmed() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    h.service.set_order_locator(Arc::new(OneEvent(event)));
    let hold = |n: u128| {
        let service = h.service.clone();
        async move {
            let held = service
                .hold(&ctx(&buyer(n)), event, tier, one())
                .await
                .expect("hold");
            let InventoryOutcome::Held {
                order_id, total, ..
            } = held.outcome
            else {
                panic!("not held")
            };
            (order_id, total)
        }
    };
    let charge = |order: OrderId| {
        let provider = h.provider.clone();
        async move {
            let outcome = payments::PaymentPort::charge(
                &provider,
                payments::ChargeRequest::for_order(
                    order.as_uuid(),
                    2500,
                    "EUR",
                    test_tokens::SUCCESS,
                ),
            )
            .await
            .expect("charged");
            assert!(matches!(outcome, payments::ChargeOutcome::Succeeded { .. }));
        }
    };
    // Charged, then the hold expired before anyone confirmed it.
    let (gone, _) = hold(2).await;
    charge(gone).await;
    h.clock.advance(chrono::Duration::minutes(11));
    h.service.expire_due(event).await.expect("expire");
    // Charged, then nothing: the hold is still live.
    let (live, total) = hold(1).await;
    assert_eq!(total.amount_minor, 2500);
    charge(live).await;
    // A purchase that went through normally is left alone.
    let r = h
        .service
        .purchase(&ctx(&buyer(3)), event, tier, one(), test_tokens::SUCCESS)
        .await
        .expect("purchase");
    assert!(matches!(r.outcome, PayOutcome::Confirmed { .. }));
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while h.replay(event).await.order(gone).expect("order").status
        != domain::inventory::OrderStatus::Expired
    {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }

    // A periodic pass only settles what an earlier pass saw unsettled.
    let first = h
        .service
        .reconcile_payments(None, Some(&Default::default()))
        .await
        .expect("pass");
    assert_eq!((first.checked, first.confirmed, first.refunded), (3, 0, 0));
    assert_eq!(first.unconfirmed.len(), 2);
    let seen = first.unconfirmed.iter().cloned().collect();
    let second = h
        .service
        .reconcile_payments(None, Some(&seen))
        .await
        .expect("pass");
    assert_eq!((second.confirmed, second.refunded), (1, 1), "{second:?}");
    assert!(second.unconfirmed.is_empty());
    let state = h.replay(event).await;
    let live_view = state.order(live).expect("order");
    assert_eq!(live_view.status, domain::inventory::OrderStatus::Paid);
    assert_eq!(live_view.tickets.len(), 1);
    assert_eq!(stored_refunds(&h, event, gone).await, (1, 1));
    assert_eq!(h.provider.ledger().refunds_for(gone.as_uuid()).len(), 1);
    assert!(h.provider.ledger().refunds_for(live.as_uuid()).is_empty());

    // Nothing is settled twice.
    let again = h
        .service
        .reconcile_payments(None, None)
        .await
        .expect("pass");
    assert_eq!((again.confirmed, again.refunded), (0, 0));
    assert_eq!(again.resume_after.as_deref(), Some("2"));
}

/// An event of 100,000 orders is cancelled: every order, in appends the store accepts,
/// and every paid one refunded.
#[tokio::test]
async fn an_event_of_100_000_orders_is_cancelled_and_refunded() {
    use domain::inventory::{HoldPlaced, InventoryEvent as E};
    let h = harness().await;
    let (event, tier) = h.published_event(200_000, None).await;
    h.service.shutdown(std::time::Duration::from_secs(5)).await;
    // 100,000 holds written straight to the stream (as 100,000 buyers would have made
    // them), while no actor has the event loaded.
    let stream = commands::actor::stream_name(event).expect("stream");
    let mut version = h
        .store
        .stream_version(&stream)
        .await
        .expect("version")
        .expect("exists");
    let expires_at = start_time() + chrono::Duration::minutes(10);
    let holds = 100_000u128;
    let mut n = 0;
    while n < holds {
        let batch: Vec<_> = (n..(n + 2000).min(holds))
            .map(|i| {
                let hold = E::HoldPlaced(HoldPlaced {
                    order_id: OrderId(uuid::Uuid::from_u128(0x5eed_0000_0000 + i)),
                    user_id: domain::UserId(uuid::Uuid::from_u128(0xb0b_0000_0000 + i)),
                    tier_id: tier,
                    quantity: 1,
                    seats: vec![],
                    total: domain::money::Money::price(2500, "EUR").expect("price"),
                    placed_at: start_time(),
                    expires_at,
                    command: None,
                });
                commands::codec::encode(
                    &hold,
                    store::Metadata {
                        correlation_id: uuid::Uuid::from_u128(i),
                        causation_id: None,
                        acting_user: None,
                        recorded_at: start_time(),
                    },
                )
            })
            .collect();
        let count = batch.len() as u64;
        h.store
            .append(&stream, store::ExpectedVersion::Exact(version), batch)
            .await
            .expect("seed");
        version += count;
        n += 2000;
    }
    let service = start_on(&h, Arc::new(h.provider.clone())).await;
    let paid = paid_orders(&service, event, tier, 20).await;
    let cancelled = service
        .cancel_event(&ctx(&h.organizer), event, "venue flooded".into())
        .await
        .expect("cancel");
    assert_eq!(
        cancelled.outcome,
        InventoryOutcome::EventCancelled {
            orders_cancelled: domain::inventory::limits::CANCELLATION_STEP_ORDERS as u32
        }
    );
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(120);
    while service
        .read(event, |inv| inv.cancellation_pending())
        .await
        .expect("read")
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "cancellation did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    wait_refunded(&h, &service, event, &paid).await;
    let state = h.replay(event).await;
    assert_eq!(state.live_hold_count(), 0);
    assert!(state.tiers().all(|t| t.sold == 0 && t.held == 0));
    let orders: Vec<_> = state.orders().collect();
    assert_eq!(orders.len(), 100_020);
    assert!(
        orders
            .iter()
            .all(|o| o.status == domain::inventory::OrderStatus::Cancelled)
    );
    assert_eq!(h.provider.ledger().refunds.len(), 20);
    state.check_invariants().expect("invariants");
}
