//! The command interface end to end on a real SQLite store: organizer commands, holds,
//! payments of every kind, unknown events, retries, cancellation and check-in.

mod common;

use std::time::Duration;

use commands::{CommandError, PayOutcome, RequestContext};
use domain::inventory::{InventoryOutcome, OrderStatus, Selection};
use domain::{EventId, OrderId};
use payments::test_tokens;
use store::EventStore;
use uuid::Uuid;

use common::*;

fn one() -> Selection {
    Selection::Quantity { quantity: 1 }
}

#[tokio::test]
async fn purchase_confirms_and_positions_are_durable() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let receipt = h
        .service
        .purchase(&ctx(&buyer(1)), event, tier, one(), test_tokens::SUCCESS)
        .await
        .expect("purchase");
    let PayOutcome::Confirmed { order_id, tickets } = receipt.outcome else {
        panic!("not confirmed: {:?}", receipt.outcome);
    };
    assert_eq!(tickets.len(), 1);
    // The receipt's position is a stored event of this order's confirmation.
    let head = store::EventStore::head(&h.store).await.expect("head");
    assert!(receipt.position > store::Position::START && receipt.position <= head);
    let replayed = h.replay(event).await;
    assert_eq!(
        replayed.order(order_id).expect("order").status,
        OrderStatus::Paid
    );
    assert_eq!(replayed.tier(tier).expect("tier").sold, 1);
    replayed.check_invariants().expect("invariants");
}

#[tokio::test]
async fn command_for_unknown_event_is_not_found_and_leaves_no_actor() {
    let h = harness().await;
    let unknown = EventId(Uuid::now_v7());
    let err = h
        .service
        .hold(
            &ctx(&buyer(1)),
            unknown,
            domain::TierId(Uuid::now_v7()),
            one(),
        )
        .await
        .expect_err("unknown event");
    assert_eq!(err.code(), "NOT_FOUND");
    assert!(!h.service.registry().is_loaded(unknown));
    assert_eq!(h.service.registry().loaded(), 0);
    // Nothing was written for it.
    let stream = commands::actor::stream_name(unknown).expect("name");
    assert_eq!(
        store::EventStore::stream_version(&h.store, &stream)
            .await
            .expect("version"),
        None
    );
}

#[tokio::test]
async fn refused_creation_leaves_no_actor() {
    let h = harness().await;
    let err = h
        .service
        .create_event(&ctx(&buyer(1)), details())
        .await
        .expect_err("customers cannot create events");
    assert_eq!(err.code(), "FORBIDDEN");
    for _ in 0..200 {
        if h.service.registry().loaded() == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(h.service.registry().loaded(), 0);
}

#[tokio::test]
async fn bad_idempotency_key_is_invalid_input() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    for key in ["", "   ", &"k".repeat(500), "bad\u{0}key"] {
        let c = RequestContext::new(buyer(1), key);
        let err = h.service.hold(&c, event, tier, one()).await.expect_err(key);
        assert_eq!(err.code(), "INVALID_INPUT", "{key:?}");
    }
    let bad_quantity = h
        .service
        .hold(
            &ctx(&buyer(1)),
            event,
            tier,
            Selection::Quantity { quantity: -3 },
        )
        .await
        .expect_err("negative quantity");
    assert_eq!(bad_quantity.code(), "INVALID_INPUT");
}

#[tokio::test]
async fn decline_and_timeout_release_the_hold() {
    let h = harness().await;
    let (event, tier) = h.published_event(2, None).await;
    for (n, token) in [(1, test_tokens::DECLINE), (2, test_tokens::TIMEOUT)] {
        let receipt = h
            .service
            .purchase(
                &ctx(&buyer(n)),
                event,
                tier,
                Selection::Quantity { quantity: 2 },
                token,
            )
            .await
            .expect("purchase answers");
        let order_id = match receipt.outcome {
            PayOutcome::Declined { order_id, .. } if n == 1 => order_id,
            PayOutcome::TimedOut { order_id } if n == 2 => order_id,
            other => panic!("{token}: unexpected {other:?}"),
        };
        let replayed = h.replay(event).await;
        assert_eq!(
            replayed.order(order_id).expect("order").status,
            OrderStatus::Released
        );
        assert_eq!(replayed.tier(tier).expect("tier").available, 2);
    }
    assert!(h.provider.ledger().refunds.is_empty());
}

#[tokio::test]
async fn unknown_token_is_a_payment_error_and_keeps_the_hold() {
    let h = harness().await;
    let (event, tier) = h.published_event(2, None).await;
    let err = h
        .service
        .purchase(&ctx(&buyer(1)), event, tier, one(), "tok_nonsense")
        .await
        .expect_err("unknown token");
    assert_eq!(err.code(), "INVALID_INPUT");
    assert!(!err.is_retriable());
}

#[tokio::test]
async fn retried_purchase_buys_once() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let c = ctx(&buyer(1));
    let first = h
        .service
        .purchase(&c, event, tier, one(), test_tokens::SUCCESS)
        .await
        .expect("first");
    // The client's clock moved on before it retried.
    h.clock.advance(chrono::Duration::seconds(5));
    let second = h
        .service
        .purchase(&c, event, tier, one(), test_tokens::SUCCESS)
        .await
        .expect("retry");
    assert_eq!(first.outcome, second.outcome);
    assert!(second.position >= first.position);
    let replayed = h.replay(event).await;
    assert_eq!(replayed.tier(tier).expect("tier").sold, 1);
    let PayOutcome::Confirmed { order_id, .. } = first.outcome else {
        panic!("not confirmed")
    };
    assert_eq!(h.provider.ledger().charges_for(order_id.as_uuid()).len(), 1);
}

#[tokio::test]
async fn a_hold_retried_later_answers_the_first_hold_and_stores_nothing() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let c = ctx(&buyer(1));
    let first = h.service.hold(&c, event, tier, one()).await.expect("first");
    let stream = commands::actor::stream_name(event).expect("stream");
    let stored = h.store.stream_version(&stream).await.expect("version");
    // The retry is stamped later, so it asks for a later expiry: still the same request.
    h.clock.advance(chrono::Duration::minutes(2));
    let second = h.service.hold(&c, event, tier, one()).await.expect("retry");
    assert_eq!(second.outcome, first.outcome);
    assert_eq!(
        h.store.stream_version(&stream).await.expect("version"),
        stored
    );
    let replayed = h.replay(event).await;
    assert_eq!(replayed.tier(tier).expect("tier").held, 1);
    // The same key for another selection is still a reused key.
    let other = h
        .service
        .hold(&c, event, tier, Selection::Quantity { quantity: 2 })
        .await
        .expect_err("reused key");
    assert_eq!(other.code(), "INVALID_INPUT");
}

#[tokio::test]
async fn paying_someone_elses_order_is_forbidden() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let held = h
        .service
        .hold(&ctx(&buyer(1)), event, tier, one())
        .await
        .expect("hold");
    let InventoryOutcome::Held { order_id, .. } = held.outcome else {
        panic!("not held")
    };
    let err = h
        .service
        .pay(&ctx(&buyer(2)), event, order_id, test_tokens::SUCCESS)
        .await
        .expect_err("not the buyer");
    assert_eq!(err.code(), "FORBIDDEN");
    let missing = h
        .service
        .pay(
            &ctx(&buyer(1)),
            event,
            OrderId(Uuid::now_v7()),
            test_tokens::SUCCESS,
        )
        .await
        .expect_err("no such order");
    assert_eq!(missing.code(), "NOT_FOUND");
}

#[tokio::test]
async fn late_webhook_success_confirms_a_live_hold() {
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
    let delivery = h.webhooks.recv().await.expect("webhook");
    let parsed = payments::parse_webhook(
        &[WEBHOOK_SECRET],
        &delivery.signature_header,
        &delivery.body,
        chrono::Utc::now().timestamp(),
        300,
    )
    .expect("valid webhook");
    let done = h
        .service
        .handle_payment_webhook(&parsed)
        .await
        .expect("handled");
    assert!(matches!(done.outcome, PayOutcome::Confirmed { order_id: o, .. } if o == order_id));
    // Delivered again: nothing changes.
    let again = h
        .service
        .handle_payment_webhook(&parsed)
        .await
        .expect("again");
    assert_eq!(again.outcome, done.outcome);
    let replayed = h.replay(event).await;
    assert_eq!(replayed.tier(tier).expect("tier").sold, 1);
}

#[tokio::test]
async fn money_for_an_expired_hold_is_refunded_not_ticketed() {
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
        panic!("not pending")
    };
    // The hold runs out before the provider reports.
    h.clock.advance(chrono::Duration::minutes(11));
    h.service.expire_due(event).await.expect("expire");
    let delivery = h.webhooks.recv().await.expect("webhook");
    let parsed: payments::WebhookEvent =
        serde_json::from_slice(&delivery.body).expect("webhook json");
    let done = h
        .service
        .handle_payment_webhook(&parsed)
        .await
        .expect("handled");
    assert!(
        matches!(done.outcome, PayOutcome::Refunded { order_id: o, .. } if o == order_id),
        "{:?}",
        done.outcome
    );
    let ledger = h.provider.ledger();
    assert_eq!(ledger.refunds_for(order_id.as_uuid()).len(), 1);
    let replayed = h.replay(event).await;
    let order = replayed.order(order_id).expect("order");
    assert_eq!(order.status, OrderStatus::Expired);
    assert!(order.tickets.is_empty());
    assert_eq!(replayed.tier(tier).expect("tier").sold, 0);
    // A redelivery refunds nothing more.
    h.service
        .handle_payment_webhook(&parsed)
        .await
        .expect("again");
    assert_eq!(h.provider.ledger().refunds_for(order_id.as_uuid()).len(), 1);
}

#[tokio::test]
async fn cancelling_a_paid_order_refunds_it_and_voids_its_tickets() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let c = ctx(&buyer(1));
    let receipt = h
        .service
        .purchase(&c, event, tier, one(), test_tokens::SUCCESS)
        .await
        .expect("purchase");
    let PayOutcome::Confirmed { order_id, tickets } = receipt.outcome else {
        panic!("not confirmed")
    };
    let cancelled = h
        .service
        .cancel_order(&ctx(&buyer(1)), event, order_id)
        .await
        .expect("cancel");
    assert!(matches!(
        cancelled.outcome,
        InventoryOutcome::OrderCancelled {
            refund: Some(_),
            ..
        }
    ));
    assert_eq!(h.provider.ledger().refunds_for(order_id.as_uuid()).len(), 1);
    let err = h
        .service
        .check_in(&ctx(&h.organizer), event, tickets[0])
        .await
        .expect_err("void ticket");
    assert_eq!(err.code(), "TICKET_VOID");
}

#[tokio::test]
async fn check_in_once() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    let receipt = h
        .service
        .purchase(&ctx(&buyer(1)), event, tier, one(), test_tokens::SUCCESS)
        .await
        .expect("purchase");
    let PayOutcome::Confirmed { tickets, .. } = receipt.outcome else {
        panic!("not confirmed")
    };
    let customer = h
        .service
        .check_in(&ctx(&buyer(1)), event, tickets[0])
        .await
        .expect_err("a customer is not door staff");
    assert_eq!(customer.code(), "FORBIDDEN");
    h.service
        .check_in(&ctx(&h.organizer), event, tickets[0])
        .await
        .expect("first check-in");
    let twice = h
        .service
        .check_in(&ctx(&h.organizer), event, tickets[0])
        .await
        .expect_err("second check-in");
    assert_eq!(twice.code(), "ALREADY_CHECKED_IN");
}

#[tokio::test]
async fn errors_carry_stable_codes() {
    let conflict = CommandError::Conflict("x".into());
    assert_eq!(conflict.code(), "CONFLICT");
    assert!(conflict.is_retriable());
    let unavailable = CommandError::Unavailable("x".into());
    assert_eq!(unavailable.code(), "UNAVAILABLE");
    assert!(unavailable.is_retriable());
    let rejected = CommandError::Rejected(domain::Rejection::not_found("event", 1));
    assert_eq!(rejected.code(), "NOT_FOUND");
    assert!(!rejected.is_retriable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_shutdown_commands_are_unavailable_and_no_actor_runs() {
    let h = harness().await;
    let (event, tier) = h.published_event(10, None).await;
    assert_eq!(h.service.registry().loaded(), 1);
    h.service.shutdown(Duration::from_secs(5)).await;
    assert_eq!(h.service.registry().loaded(), 0);
    let err = h
        .service
        .hold(&ctx(&buyer(1)), event, tier, one())
        .await
        .expect_err("shut down");
    assert_eq!(err.code(), "UNAVAILABLE");
}

#[tokio::test]
async fn cancelling_the_event_refunds_every_paid_order() {
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
            panic!("not confirmed")
        };
        paid.push(order_id);
    }
    let held = h
        .service
        .hold(&ctx(&buyer(9)), event, tier, one())
        .await
        .expect("hold");
    let c = ctx(&h.organizer);
    let cancelled = h
        .service
        .cancel_event(&c, event, "venue flooded".into())
        .await
        .expect("cancel");
    assert_eq!(
        cancelled.outcome,
        InventoryOutcome::EventCancelled {
            orders_cancelled: 4
        }
    );
    // A retry of the cancellation refunds nothing twice.
    h.service
        .cancel_event(&c, event, "venue flooded".into())
        .await
        .expect("retry");
    // The refunds are paid in the background once the cancellation is durable.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    while h.provider.ledger().refunds.len() < 3 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // And recorded in the stream, each once; a sweep now finds nothing owed.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let replayed = h.replay(event).await;
        let done = paid.iter().all(|o| {
            replayed.order(*o).is_some_and(|v| {
                v.refunds.len() == 1
                    && matches!(
                        v.refunds[0].status,
                        domain::inventory::RefundStatus::Refunded { .. }
                    )
            })
        });
        if done || tokio::time::Instant::now() > deadline {
            assert!(done, "every paid order's refund is recorded");
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let sweep = h.service.pay_refunds_owed(event).await.expect("sweep");
    assert_eq!(sweep, commands::service::RefundSweep::default());
    let ledger = h.provider.ledger();
    assert_eq!(ledger.refunds.len(), 3);
    for order in paid {
        assert_eq!(ledger.refunds_for(order.as_uuid()).len(), 1);
    }
    let InventoryOutcome::Held {
        order_id: unpaid, ..
    } = held.outcome
    else {
        panic!("not held")
    };
    assert!(ledger.refunds_for(unpaid.as_uuid()).is_empty());
    let err = h
        .service
        .hold(&ctx(&buyer(5)), event, tier, one())
        .await
        .expect_err("cancelled");
    assert_eq!(err.code(), "EVENT_CANCELLED");
}

#[tokio::test]
async fn a_late_decline_by_webhook_releases_the_hold() {
    let mut h = harness().await;
    let (event, tier) = h.published_event(3, None).await;
    let receipt = h
        .service
        .purchase(
            &ctx(&buyer(1)),
            event,
            tier,
            Selection::Quantity { quantity: 3 },
            test_tokens::WEBHOOK_DECLINE,
        )
        .await
        .expect("purchase");
    let PayOutcome::Pending { order_id, .. } = receipt.outcome else {
        panic!("not pending: {:?}", receipt.outcome)
    };
    let delivery = h.webhooks.recv().await.expect("webhook");
    let parsed: payments::WebhookEvent =
        serde_json::from_slice(&delivery.body).expect("webhook json");
    let done = h
        .service
        .handle_payment_webhook(&parsed)
        .await
        .expect("handled");
    assert!(matches!(done.outcome, PayOutcome::Declined { order_id: o, .. } if o == order_id));
    let replayed = h.replay(event).await;
    assert_eq!(
        replayed.order(order_id).expect("order").status,
        OrderStatus::Released
    );
    assert_eq!(replayed.tier(tier).expect("tier").available, 3);
}
