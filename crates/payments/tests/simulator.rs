//! The simulated provider: every test token, idempotency under concurrency, refunds.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{SECRET, TOLERANCE, order, provider, unix_now};
use payments::{
    ChargeOutcome, ChargeRequest, ChargeStatus, DeclineReason, PaymentError, PaymentPort,
    RefundOutcome, RefundReason, RefundRequest, WebhookEventType, charge_within, parse_webhook,
    test_tokens,
};

const NO_DELAY: Duration = Duration::ZERO;

#[tokio::test]
async fn tok_success_succeeds_and_is_booked() {
    let (provider, _webhooks) = provider(NO_DELAY, NO_DELAY);
    let order = order();
    let outcome = provider
        .charge(ChargeRequest::for_order(
            order,
            4500,
            "EUR",
            test_tokens::SUCCESS,
        ))
        .await
        .unwrap();
    let ChargeOutcome::Succeeded { charge_id } = outcome else {
        panic!("expected success, got {outcome:?}");
    };
    let ledger = provider.ledger();
    let charges = ledger.charges_for(order);
    assert_eq!(charges.len(), 1);
    assert_eq!(charges[0].charge_id, charge_id);
    assert_eq!(charges[0].status, ChargeStatus::Succeeded);
    assert_eq!(ledger.captured_minor(order), 4500);
}

#[tokio::test]
async fn decline_tokens_decline_with_their_reason_and_take_nothing() {
    let (provider, _webhooks) = provider(NO_DELAY, NO_DELAY);
    for (token, reason) in [
        (test_tokens::DECLINE, DeclineReason::CardDeclined),
        (
            test_tokens::INSUFFICIENT_FUNDS,
            DeclineReason::InsufficientFunds,
        ),
        (test_tokens::EXPIRED_CARD, DeclineReason::ExpiredCard),
    ] {
        let order = order();
        let outcome = provider
            .charge(ChargeRequest::for_order(order, 100, "EUR", token))
            .await
            .unwrap();
        assert_eq!(outcome, ChargeOutcome::Declined { reason }, "{token}");
        let ledger = provider.ledger();
        assert_eq!(
            ledger.charges_for(order)[0].status,
            ChargeStatus::Declined(reason)
        );
        assert_eq!(ledger.captured_minor(order), 0);
    }
}

#[tokio::test(start_paused = true)]
async fn tok_timeout_never_answers_so_the_callers_deadline_decides() {
    let (provider, _webhooks) = provider(NO_DELAY, NO_DELAY);
    let order = order();
    let request = ChargeRequest::for_order(order, 100, "EUR", test_tokens::TIMEOUT);
    let result = charge_within(&provider, request.clone(), Duration::from_secs(30)).await;
    let err = result.unwrap_err();
    assert_eq!(err, PaymentError::TimedOut(Duration::from_secs(30)));
    assert_eq!(err.code(), "PAYMENT_TIMEOUT");
    // A retry is no different, and nothing was ever taken.
    let again = charge_within(&provider, request, Duration::from_secs(30)).await;
    assert!(matches!(again, Err(PaymentError::TimedOut(_))));
    assert!(provider.ledger().charges.is_empty());
}

#[tokio::test(start_paused = true)]
async fn tok_webhook_success_is_pending_then_succeeds_by_signed_webhook() {
    let delay = Duration::from_secs(5);
    let (provider, mut webhooks) = provider(delay, NO_DELAY);
    let order = order();
    let outcome = provider
        .charge(ChargeRequest::for_order(
            order,
            2500,
            "USD",
            test_tokens::WEBHOOK_SUCCESS,
        ))
        .await
        .unwrap();
    let ChargeOutcome::Pending { charge_id } = outcome else {
        panic!("expected pending, got {outcome:?}");
    };
    assert_eq!(
        provider.ledger().charges_for(order)[0].status,
        ChargeStatus::Pending
    );
    assert_eq!(provider.ledger().captured_minor(order), 0);

    // Not a moment before the configured delay.
    tokio::time::sleep(delay - Duration::from_millis(1)).await;
    assert!(webhooks.try_recv().is_err());

    let delivery = webhooks.recv().await.unwrap();
    let event = parse_webhook(
        &[SECRET],
        &delivery.signature_header,
        &delivery.body,
        unix_now(),
        TOLERANCE,
    )
    .unwrap();
    assert_eq!(event, delivery.event);
    assert_eq!(event.kind, WebhookEventType::ChargeSucceeded);
    assert_eq!(event.charge_id, charge_id);
    assert_eq!(event.order_id, order);
    assert_eq!((event.amount, event.currency.as_str()), (2500, "USD"));
    assert_eq!(event.failure_reason, None);
    let ledger = provider.ledger();
    assert_eq!(ledger.charges_for(order)[0].status, ChargeStatus::Succeeded);
    assert_eq!(ledger.captured_minor(order), 2500);
}

#[tokio::test(start_paused = true)]
async fn tok_webhook_decline_is_pending_then_fails_by_signed_webhook() {
    let (provider, mut webhooks) = provider(Duration::from_secs(1), NO_DELAY);
    let order = order();
    let outcome = provider
        .charge(ChargeRequest::for_order(
            order,
            700,
            "EUR",
            test_tokens::WEBHOOK_DECLINE,
        ))
        .await
        .unwrap();
    assert!(matches!(outcome, ChargeOutcome::Pending { .. }));
    let delivery = webhooks.recv().await.unwrap();
    let event = parse_webhook(
        &[SECRET],
        &delivery.signature_header,
        &delivery.body,
        unix_now(),
        TOLERANCE,
    )
    .unwrap();
    assert_eq!(event.kind, WebhookEventType::ChargeFailed);
    assert_eq!(event.failure_reason, Some(DeclineReason::CardDeclined));
    let ledger = provider.ledger();
    assert_eq!(
        ledger.charges_for(order)[0].status,
        ChargeStatus::Declined(DeclineReason::CardDeclined)
    );
    assert_eq!(ledger.captured_minor(order), 0);
}

#[tokio::test]
async fn an_unknown_token_is_invalid_input_and_claims_nothing() {
    let (provider, _webhooks) = provider(NO_DELAY, NO_DELAY);
    let order = order();
    let err = provider
        .charge(ChargeRequest::for_order(order, 100, "EUR", "tok_visa"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), "INVALID_INPUT");
    assert!(matches!(
        err,
        PaymentError::InvalidInput { field: "token", .. }
    ));
    assert!(err.to_string().contains("tok_success"), "{err}");
    assert!(provider.ledger().charges.is_empty());
    // The refused request did not claim the order: a valid charge still goes through.
    let outcome = provider
        .charge(ChargeRequest::for_order(
            order,
            100,
            "EUR",
            test_tokens::SUCCESS,
        ))
        .await
        .unwrap();
    assert!(matches!(outcome, ChargeOutcome::Succeeded { .. }));
}

#[tokio::test]
async fn bad_requests_are_refused_with_the_field_named() {
    let (provider, _webhooks) = provider(NO_DELAY, NO_DELAY);
    let good = ChargeRequest::for_order(order(), 100, "EUR", test_tokens::SUCCESS);
    let cases = [
        (
            "amount_minor",
            ChargeRequest {
                amount_minor: 0,
                ..good.clone()
            },
        ),
        (
            "currency",
            ChargeRequest {
                currency: "eur".into(),
                ..good.clone()
            },
        ),
        (
            "currency",
            ChargeRequest {
                currency: "EURO".into(),
                ..good.clone()
            },
        ),
        (
            "currency",
            ChargeRequest {
                currency: "E1R".into(),
                ..good.clone()
            },
        ),
        (
            "currency",
            ChargeRequest {
                currency: "ÉUR".into(),
                ..good.clone()
            },
        ),
        (
            "token",
            ChargeRequest {
                token: String::new(),
                ..good.clone()
            },
        ),
        (
            "idempotency_key",
            ChargeRequest {
                idempotency_key: String::new(),
                ..good.clone()
            },
        ),
        (
            "idempotency_key",
            ChargeRequest {
                idempotency_key: "k".repeat(256),
                ..good.clone()
            },
        ),
    ];
    for (field, request) in cases {
        let err = provider.charge(request.clone()).await.unwrap_err();
        assert!(
            matches!(&err, PaymentError::InvalidInput { field: f, .. } if *f == field),
            "{request:?} gave {err:?}"
        );
        assert_eq!(err.code(), "INVALID_INPUT");
    }
    assert!(provider.ledger().charges.is_empty());
}

#[tokio::test]
async fn charging_an_order_again_returns_the_first_outcome() {
    let (provider, _webhooks) = provider(NO_DELAY, NO_DELAY);
    for token in [
        test_tokens::SUCCESS,
        test_tokens::DECLINE,
        test_tokens::WEBHOOK_SUCCESS,
    ] {
        let request = ChargeRequest::for_order(order(), 100, "EUR", token);
        let first = provider.charge(request.clone()).await.unwrap();
        let second = provider.charge(request.clone()).await.unwrap();
        assert_eq!(first, second, "{token}");
        assert_eq!(provider.ledger().charges_for(request.order_id).len(), 1);
    }
}

#[tokio::test]
async fn charging_an_order_again_with_other_parameters_is_a_conflict() {
    let (provider, _webhooks) = provider(NO_DELAY, NO_DELAY);
    let first = ChargeRequest::for_order(order(), 100, "EUR", test_tokens::SUCCESS);
    provider.charge(first.clone()).await.unwrap();
    let variants = [
        ChargeRequest {
            amount_minor: 101,
            ..first.clone()
        },
        ChargeRequest {
            currency: "USD".into(),
            ..first.clone()
        },
        ChargeRequest {
            token: test_tokens::DECLINE.into(),
            ..first.clone()
        },
        ChargeRequest {
            idempotency_key: "another key".into(),
            ..first.clone()
        },
    ];
    for variant in variants {
        let err = provider.charge(variant).await.unwrap_err();
        assert_eq!(
            err,
            PaymentError::IdempotencyConflict {
                order_id: first.order_id
            }
        );
        assert_eq!(err.code(), "IDEMPOTENCY_CONFLICT");
    }
    assert_eq!(provider.ledger().charges.len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_charges_of_one_order_charge_once() {
    // The processing delay keeps the first call in flight while the others arrive.
    let (provider, _webhooks) = provider(NO_DELAY, Duration::from_millis(20));
    for token in [
        test_tokens::SUCCESS,
        test_tokens::DECLINE,
        test_tokens::WEBHOOK_SUCCESS,
    ] {
        let request = ChargeRequest::for_order(order(), 990, "EUR", token);
        let barrier = Arc::new(tokio::sync::Barrier::new(64));
        let calls: Vec<_> = (0..64)
            .map(|_| {
                let provider = provider.clone();
                let request = request.clone();
                let barrier = barrier.clone();
                tokio::spawn(async move {
                    barrier.wait().await;
                    provider.charge(request).await
                })
            })
            .collect();
        let mut outcomes = Vec::new();
        for call in calls {
            outcomes.push(call.await.unwrap().unwrap());
        }
        assert!(outcomes.iter().all(|o| *o == outcomes[0]), "{outcomes:?}");
        let ledger = provider.ledger();
        assert_eq!(ledger.charges_for(request.order_id).len(), 1, "{token}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_orders_charged_concurrently_are_each_charged_once() {
    let (provider, _webhooks) = provider(NO_DELAY, Duration::from_millis(5));
    let orders: Vec<_> = (0..32).map(|_| order()).collect();
    let calls: Vec<_> = (0..512)
        .map(|i| {
            let provider = provider.clone();
            let order = orders[i % orders.len()];
            tokio::spawn(async move {
                provider
                    .charge(ChargeRequest::for_order(
                        order,
                        1000,
                        "EUR",
                        test_tokens::SUCCESS,
                    ))
                    .await
            })
        })
        .collect();
    for call in calls {
        assert!(matches!(
            call.await.unwrap(),
            Ok(ChargeOutcome::Succeeded { .. })
        ));
    }
    let ledger = provider.ledger();
    assert_eq!(ledger.charges.len(), orders.len());
    for order in orders {
        assert_eq!(ledger.captured_minor(order), 1000);
    }
}

#[tokio::test(start_paused = true)]
async fn a_retry_waits_for_the_call_in_flight_instead_of_charging() {
    let (provider, _webhooks) = provider(NO_DELAY, Duration::from_secs(3));
    let request = ChargeRequest::for_order(order(), 100, "EUR", test_tokens::SUCCESS);
    let first = tokio::spawn({
        let provider = provider.clone();
        let request = request.clone();
        async move { provider.charge(request).await }
    });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let second = provider.charge(request.clone()).await.unwrap();
    assert_eq!(first.await.unwrap().unwrap(), second);
    assert_eq!(provider.ledger().charges.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_call_abandoned_before_its_answer_leaves_no_charge_behind() {
    let (provider, _webhooks) = provider(NO_DELAY, Duration::from_secs(3));
    let request = ChargeRequest::for_order(order(), 100, "EUR", test_tokens::SUCCESS);
    let gave_up = charge_within(&provider, request.clone(), Duration::from_secs(1)).await;
    assert!(matches!(gave_up, Err(PaymentError::TimedOut(_))));
    assert!(provider.ledger().charges.is_empty());
    let retried = provider.charge(request).await.unwrap();
    assert!(matches!(retried, ChargeOutcome::Succeeded { .. }));
    assert_eq!(provider.ledger().charges.len(), 1);
}

#[tokio::test(start_paused = true)]
async fn a_refund_is_booked_once_and_reported_by_webhook() {
    let (provider, mut webhooks) = provider(NO_DELAY, NO_DELAY);
    let order = order();
    let ChargeOutcome::Succeeded { charge_id } = provider
        .charge(ChargeRequest::for_order(
            order,
            4200,
            "EUR",
            test_tokens::SUCCESS,
        ))
        .await
        .unwrap()
    else {
        panic!("expected success");
    };
    let request = RefundRequest {
        charge_id: charge_id.clone(),
        order_id: order,
        reason: RefundReason::OrderCancelled,
    };
    let first = provider.refund(request.clone()).await.unwrap();
    let RefundOutcome::Succeeded {
        refund_id,
        amount_minor,
        currency,
    } = first.clone();
    assert_eq!((amount_minor, currency.as_str()), (4200, "EUR"));
    let again = provider
        .refund(RefundRequest {
            reason: RefundReason::Duplicate,
            ..request
        })
        .await
        .unwrap();
    assert_eq!(again, first);

    let ledger = provider.ledger();
    assert_eq!(ledger.refunds.len(), 1);
    assert_eq!(ledger.refunds[0].refund_id, refund_id);
    assert_eq!(ledger.refunds[0].reason, RefundReason::OrderCancelled);
    assert_eq!(ledger.refunded_minor(order), ledger.captured_minor(order));

    let delivery = webhooks.recv().await.unwrap();
    let event = parse_webhook(
        &[SECRET],
        &delivery.signature_header,
        &delivery.body,
        unix_now(),
        TOLERANCE,
    )
    .unwrap();
    assert_eq!(event.kind, WebhookEventType::RefundSucceeded);
    assert_eq!(event.refund_id.as_deref(), Some(refund_id.as_str()));
    assert_eq!(event.refund_reason, Some(RefundReason::OrderCancelled));
    assert_eq!(
        (event.charge_id.as_str(), event.amount),
        (charge_id.as_str(), 4200)
    );
    // The repeated refund sent no second webhook.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(webhooks.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refunds_of_one_charge_refund_once() {
    let (provider, _webhooks) = provider(NO_DELAY, NO_DELAY);
    let order = order();
    let ChargeOutcome::Succeeded { charge_id } = provider
        .charge(ChargeRequest::for_order(
            order,
            300,
            "EUR",
            test_tokens::SUCCESS,
        ))
        .await
        .unwrap()
    else {
        panic!("expected success");
    };
    let calls: Vec<_> = (0..64)
        .map(|_| {
            let provider = provider.clone();
            let request = RefundRequest {
                charge_id: charge_id.clone(),
                order_id: order,
                reason: RefundReason::EventCancelled,
            };
            tokio::spawn(async move { provider.refund(request).await })
        })
        .collect();
    let mut outcomes = Vec::new();
    for call in calls {
        outcomes.push(call.await.unwrap().unwrap());
    }
    assert!(outcomes.iter().all(|o| *o == outcomes[0]));
    assert_eq!(provider.ledger().refunds.len(), 1);
    assert_eq!(provider.ledger().refunded_minor(order), 300);
}

#[tokio::test(start_paused = true)]
async fn refunds_that_cannot_be_made_are_refused_with_a_code() {
    let (provider, _webhooks) = provider(Duration::from_secs(60), NO_DELAY);
    let unknown = provider
        .refund(RefundRequest {
            charge_id: "ch_nope".into(),
            order_id: order(),
            reason: RefundReason::OrderCancelled,
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), "UNKNOWN_CHARGE");

    let declined_order = order();
    provider
        .charge(ChargeRequest::for_order(
            declined_order,
            100,
            "EUR",
            test_tokens::DECLINE,
        ))
        .await
        .unwrap();
    let declined_id = provider.ledger().charges_for(declined_order)[0]
        .charge_id
        .clone();
    let declined = provider
        .refund(RefundRequest {
            charge_id: declined_id.clone(),
            order_id: declined_order,
            reason: RefundReason::OrderCancelled,
        })
        .await
        .unwrap_err();
    assert_eq!(
        declined,
        PaymentError::NotRefundable {
            charge_id: declined_id,
            status: "declined"
        }
    );
    assert_eq!(declined.code(), "CHARGE_NOT_REFUNDABLE");

    let pending_order = order();
    let ChargeOutcome::Pending { charge_id } = provider
        .charge(ChargeRequest::for_order(
            pending_order,
            100,
            "EUR",
            test_tokens::WEBHOOK_SUCCESS,
        ))
        .await
        .unwrap()
    else {
        panic!("expected pending");
    };
    let pending = provider
        .refund(RefundRequest {
            charge_id: charge_id.clone(),
            order_id: pending_order,
            reason: RefundReason::OrderCancelled,
        })
        .await
        .unwrap_err();
    assert!(matches!(
        pending,
        PaymentError::NotRefundable {
            status: "pending",
            ..
        }
    ));

    let succeeded_order = order();
    let ChargeOutcome::Succeeded { charge_id } = provider
        .charge(ChargeRequest::for_order(
            succeeded_order,
            100,
            "EUR",
            test_tokens::SUCCESS,
        ))
        .await
        .unwrap()
    else {
        panic!("expected success");
    };
    let wrong_order = provider
        .refund(RefundRequest {
            charge_id,
            order_id: pending_order,
            reason: RefundReason::OrderCancelled,
        })
        .await
        .unwrap_err();
    assert!(matches!(
        wrong_order,
        PaymentError::InvalidInput {
            field: "order_id",
            ..
        }
    ));
    assert!(provider.ledger().refunds.is_empty());
}

/// The flow the command side follows when money arrives for a hold that has expired: the
/// success webhook is answered with a refund, and the books show both.
#[tokio::test(start_paused = true)]
async fn money_arriving_after_the_hold_expired_is_refunded() {
    let hold = Duration::from_secs(600);
    let (provider, mut webhooks) = provider(hold + Duration::from_secs(60), NO_DELAY);
    let order = order();
    let held_until = tokio::time::Instant::now() + hold;
    let outcome = provider
        .charge(ChargeRequest::for_order(
            order,
            5000,
            "EUR",
            test_tokens::WEBHOOK_SUCCESS,
        ))
        .await
        .unwrap();
    assert!(matches!(outcome, ChargeOutcome::Pending { .. }));

    let delivery = webhooks.recv().await.unwrap();
    let event = parse_webhook(
        &[SECRET],
        &delivery.signature_header,
        &delivery.body,
        unix_now(),
        TOLERANCE,
    )
    .unwrap();
    assert_eq!(event.kind, WebhookEventType::ChargeSucceeded);
    assert!(
        tokio::time::Instant::now() > held_until,
        "the hold has expired"
    );
    let refund = provider
        .refund(RefundRequest {
            charge_id: event.charge_id.clone(),
            order_id: event.order_id,
            reason: RefundReason::HoldExpired,
        })
        .await
        .unwrap();
    assert!(matches!(
        refund,
        RefundOutcome::Succeeded {
            amount_minor: 5000,
            ..
        }
    ));

    let ledger = provider.ledger();
    assert_eq!(ledger.captured_minor(order), 5000);
    assert_eq!(ledger.refunded_minor(order), 5000);
    assert_eq!(ledger.refunds[0].reason, RefundReason::HoldExpired);
    let refund_webhook = webhooks.recv().await.unwrap();
    assert_eq!(refund_webhook.event.kind, WebhookEventType::RefundSucceeded);
}
