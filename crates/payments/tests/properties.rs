//! Property tests: whatever mix of concurrent charges, retries, conflicting retries and
//! abandoned calls arrives, no order is charged twice and every caller of an order sees
//! the same outcome.

mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::provider;
use futures::future::join_all;
use payments::{
    ChargeOutcome, ChargeRequest, ChargeStatus, PaymentError, RefundReason, RefundRequest,
    charge_within, test_tokens,
};
use payments::{PaymentPort, WebhookEventType};
use proptest::prelude::*;
use uuid::Uuid;

const TOKENS: [&str; 6] = [
    test_tokens::SUCCESS,
    test_tokens::DECLINE,
    test_tokens::INSUFFICIENT_FUNDS,
    test_tokens::WEBHOOK_SUCCESS,
    test_tokens::WEBHOOK_DECLINE,
    test_tokens::TIMEOUT,
];

#[derive(Debug, Clone)]
struct Call {
    order: usize,
    token: usize,
    amount: u64,
    start_after_ms: u64,
    deadline_ms: u64,
}

fn call() -> impl Strategy<Value = Call> {
    (
        0usize..4,
        0usize..TOKENS.len(),
        1u64..=2,
        0u64..40,
        1u64..60,
    )
        .prop_map(|(order, token, amount, start_after_ms, deadline_ms)| Call {
            order,
            token,
            amount: amount * 100,
            start_after_ms,
            deadline_ms,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn no_order_is_ever_charged_twice(calls in proptest::collection::vec(call(), 1..40)) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (provider, mut webhooks) =
                provider(Duration::from_millis(30), Duration::from_millis(10));
            let orders: Vec<Uuid> = (0..4).map(|_| Uuid::new_v4()).collect();
            let results = join_all(calls.iter().map(|call| {
                let provider = provider.clone();
                let request = ChargeRequest::for_order(
                    orders[call.order],
                    call.amount,
                    "EUR",
                    TOKENS[call.token],
                );
                let (start, deadline) = (call.start_after_ms, call.deadline_ms);
                async move {
                    tokio::time::sleep(Duration::from_millis(start)).await;
                    let result =
                        charge_within(&provider, request.clone(), Duration::from_millis(deadline))
                            .await;
                    (request, result)
                }
            }))
            .await;
            // Let every pending charge settle and report.
            tokio::time::sleep(Duration::from_secs(1)).await;
            let ledger = provider.ledger();

            let mut answered: HashMap<Uuid, (ChargeRequest, ChargeOutcome)> = HashMap::new();
            for (request, result) in &results {
                match result {
                    Ok(outcome) => {
                        let first = answered
                            .entry(request.order_id)
                            .or_insert_with(|| (request.clone(), outcome.clone()));
                        prop_assert_eq!(&first.1, outcome, "one order, one outcome");
                        prop_assert_eq!(&first.0, request, "only the claiming request answers");
                    }
                    Err(PaymentError::TimedOut(_)) | Err(PaymentError::IdempotencyConflict { .. }) => {}
                    Err(other) => prop_assert!(false, "unexpected error {other:?}"),
                }
            }
            for order in &orders {
                let charges = ledger.charges_for(*order);
                prop_assert!(charges.len() <= 1, "order charged {} times", charges.len());
                if let Some((request, outcome)) = answered.get(order) {
                    prop_assert_eq!(charges.len(), 1);
                    prop_assert_eq!(charges[0].amount_minor, request.amount_minor);
                    prop_assert_eq!(&charges[0].token, &request.token);
                    if let ChargeOutcome::Succeeded { charge_id } | ChargeOutcome::Pending { charge_id } = outcome {
                        prop_assert_eq!(&charges[0].charge_id, charge_id);
                    }
                }
                prop_assert!(charges.iter().all(|c| c.status != ChargeStatus::Pending));
                prop_assert!(charges.iter().all(|c| c.token != test_tokens::TIMEOUT));
            }
            let mut delivered = 0;
            while let Ok(delivery) = webhooks.try_recv() {
                prop_assert_ne!(delivery.event.kind, WebhookEventType::RefundSucceeded);
                delivered += 1;
            }
            let later = ledger
                .charges
                .iter()
                .filter(|c| c.token.starts_with("tok_webhook_"))
                .count();
            prop_assert_eq!(delivered, later, "one webhook per pending charge");
            Ok(())
        })?;
    }

    #[test]
    fn refunds_never_exceed_what_was_taken(
        refunds in proptest::collection::vec((0usize..3, 0usize..4), 0..30),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .start_paused(true)
            .build()
            .unwrap();
        runtime.block_on(async move {
            let (provider, _webhooks) = provider(Duration::ZERO, Duration::ZERO);
            let mut charges = Vec::new();
            for amount in [100, 250, 999] {
                let order = Uuid::new_v4();
                let outcome = provider
                    .charge(ChargeRequest::for_order(order, amount, "EUR", test_tokens::SUCCESS))
                    .await
                    .unwrap();
                let ChargeOutcome::Succeeded { charge_id } = outcome else {
                    unreachable!("tok_success succeeds");
                };
                charges.push((order, charge_id));
            }
            let reasons = [
                RefundReason::HoldExpired,
                RefundReason::OrderCancelled,
                RefundReason::EventCancelled,
                RefundReason::Duplicate,
            ];
            let results = join_all(refunds.iter().map(|&(charge, reason)| {
                let provider = provider.clone();
                let (order_id, charge_id) = charges[charge].clone();
                async move {
                    provider
                        .refund(RefundRequest { charge_id, order_id, reason: reasons[reason] })
                        .await
                }
            }))
            .await;
            prop_assert!(results.iter().all(Result::is_ok));
            let ledger = provider.ledger();
            for (order, _) in &charges {
                prop_assert!(ledger.refunded_minor(*order) <= ledger.captured_minor(*order));
                prop_assert!(ledger.refunds_for(*order).len() <= 1);
            }
            Ok(())
        })?;
    }
}
