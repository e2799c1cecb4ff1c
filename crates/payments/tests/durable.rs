//! The durable ledger: a provider opened on a ledger file, dropped (as a crash drops it)
//! and opened again, neither forgets nor repeats a charge or a refund; a file that is not
//! a ledger, or is damaged, is refused with a clear error and left untouched.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use common::{SECRET, TOLERANCE, order, unix_now};
use payments::{
    ChannelSink, ChargeOutcome, ChargeRequest, ChargeStatus, DeclineReason, LedgerError,
    PaymentError, PaymentPort, RefundOutcome, RefundReason, RefundRequest, SimulatedProvider,
    SimulatorConfig, WebhookDelivery, WebhookEventType, parse_webhook, test_tokens,
};
use tokio::sync::mpsc::UnboundedReceiver;

const WEBHOOK_DELAY: Duration = Duration::from_secs(2);

fn ledger_path(dir: &tempfile::TempDir) -> PathBuf {
    dir.path().join("payments.sqlite3")
}

/// A provider on the ledger at `path`, whose webhooks arrive on the returned channel.
fn open(
    path: &Path,
) -> Result<(SimulatedProvider, UnboundedReceiver<WebhookDelivery>), LedgerError> {
    let (sink, receiver) = ChannelSink::new();
    let config = SimulatorConfig {
        webhook_delay: WEBHOOK_DELAY,
        ..SimulatorConfig::new(SECRET)
    };
    Ok((
        SimulatedProvider::open(config, Arc::new(sink), path)?,
        receiver,
    ))
}

fn opened(path: &Path) -> (SimulatedProvider, UnboundedReceiver<WebhookDelivery>) {
    open(path).expect("the ledger opens")
}

fn refused(path: &Path) -> LedgerError {
    match open(path) {
        Ok(_) => panic!("{} was opened as a ledger", path.display()),
        Err(error) => error,
    }
}

#[tokio::test]
async fn a_charge_made_before_a_restart_is_answered_again_and_not_made_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = ledger_path(&dir);
    let (paid, declined) = (order(), order());
    let pay = ChargeRequest::for_order(paid, 4500, "EUR", test_tokens::SUCCESS);
    let decline = ChargeRequest::for_order(declined, 900, "EUR", test_tokens::EXPIRED_CARD);

    let (provider, _webhooks) = opened(&path);
    let first = provider.charge(pay.clone()).await.expect("charge");
    let ChargeOutcome::Succeeded { charge_id } = first.clone() else {
        panic!("expected success, got {first:?}");
    };
    let first_decline = provider.charge(decline.clone()).await.expect("charge");
    let before = provider.ledger();
    drop(provider);

    let (provider, _webhooks) = opened(&path);
    assert_eq!(provider.ledger(), before, "the books survive the restart");
    assert_eq!(provider.charge(pay.clone()).await.expect("retry"), first);
    assert_eq!(
        provider.charge(decline).await.expect("retry"),
        first_decline
    );
    assert_eq!(
        first_decline,
        ChargeOutcome::Declined {
            reason: DeclineReason::ExpiredCard
        }
    );
    let ledger = provider.ledger();
    assert_eq!(ledger, before, "the retries charged nothing");
    assert_eq!(ledger.charges_for(paid).len(), 1);
    assert_eq!(ledger.charges_for(paid)[0].charge_id, charge_id);
    assert_eq!(ledger.captured_minor(paid), 4500);
    assert_eq!(ledger.captured_minor(declined), 0);

    // A retry with other parameters is still a conflict, and the first charge stands.
    let other = ChargeRequest {
        amount_minor: 1,
        ..pay
    };
    let conflict = provider.charge(other).await.expect_err("conflict");
    assert_eq!(conflict.code(), "IDEMPOTENCY_CONFLICT");
    drop(provider);

    // And after a second restart, nothing changed.
    let (provider, _webhooks) = opened(&path);
    assert_eq!(provider.ledger(), before);
}

#[tokio::test]
async fn a_refund_made_before_a_restart_is_answered_again_and_not_made_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = ledger_path(&dir);
    let order = order();
    let (provider, mut webhooks) = opened(&path);
    let ChargeOutcome::Succeeded { charge_id } = provider
        .charge(ChargeRequest::for_order(
            order,
            4200,
            "EUR",
            test_tokens::SUCCESS,
        ))
        .await
        .expect("charge")
    else {
        panic!("expected success");
    };
    let request = RefundRequest {
        charge_id: charge_id.clone(),
        order_id: order,
        reason: RefundReason::OrderCancelled,
    };
    let first = provider.refund(request.clone()).await.expect("refund");
    let delivery = webhooks.recv().await.expect("refund webhook");
    assert_eq!(delivery.event.kind, WebhookEventType::RefundSucceeded);
    drop(provider);

    let (provider, mut webhooks) = opened(&path);
    let again = provider
        .refund(RefundRequest {
            reason: RefundReason::Duplicate,
            ..request.clone()
        })
        .await
        .expect("retried refund");
    assert_eq!(again, first);
    let ledger = provider.ledger();
    assert_eq!(ledger.refunds.len(), 1);
    assert_eq!(ledger.refunds[0].reason, RefundReason::OrderCancelled);
    assert_eq!(ledger.refunded_minor(order), 4200);
    let RefundOutcome::Succeeded { refund_id, .. } = first;
    assert_eq!(ledger.refunds[0].refund_id, refund_id);

    // Refunds the ledger cannot make are still refused after a restart.
    let unknown = provider
        .refund(RefundRequest {
            charge_id: "ch_unknown".into(),
            ..request.clone()
        })
        .await
        .expect_err("unknown charge");
    assert_eq!(unknown.code(), "UNKNOWN_CHARGE");
    let wrong_order = provider
        .refund(RefundRequest {
            order_id: common::order(),
            ..request
        })
        .await
        .expect_err("another order");
    assert_eq!(wrong_order.code(), "INVALID_INPUT");
    // The repeated refund sent no second webhook: the provider's sender is the only one.
    drop(provider);
    assert!(webhooks.recv().await.is_none());
}

#[tokio::test(start_paused = true)]
async fn a_charge_left_pending_by_a_crash_settles_after_the_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = ledger_path(&dir);
    let (succeeds, fails) = (order(), order());
    let later = ChargeRequest::for_order(succeeds, 3000, "EUR", test_tokens::WEBHOOK_SUCCESS);
    let later_decline = ChargeRequest::for_order(fails, 1000, "EUR", test_tokens::WEBHOOK_DECLINE);

    let (provider, mut old_webhooks) = opened(&path);
    let pending = provider.charge(later.clone()).await.expect("charge");
    let ChargeOutcome::Pending { charge_id } = pending.clone() else {
        panic!("expected pending, got {pending:?}");
    };
    provider
        .charge(later_decline.clone())
        .await
        .expect("charge");
    // The crash comes before the webhook delay is over.
    tokio::time::sleep(WEBHOOK_DELAY / 2).await;
    drop(provider);
    // The dropped provider settles nothing and sends nothing.
    assert!(old_webhooks.recv().await.is_none());

    let (provider, mut webhooks) = opened(&path);
    assert_eq!(
        provider.charge(later.clone()).await.expect("retry"),
        pending
    );
    let ledger = provider.ledger();
    assert_eq!(ledger.charges.len(), 2);
    assert_eq!(
        ledger.charges_for(succeeds)[0].status,
        ChargeStatus::Pending
    );

    let mut settled = Vec::new();
    for _ in 0..2 {
        let delivery = webhooks.recv().await.expect("settlement webhook");
        let event = parse_webhook(
            &[SECRET],
            &delivery.signature_header,
            &delivery.body,
            unix_now(),
            TOLERANCE,
        )
        .expect("signed");
        settled.push((event.order_id, event.kind, event.charge_id));
    }
    settled.sort_by_key(|(order, ..)| *order == fails);
    assert_eq!(
        settled[0],
        (
            succeeds,
            WebhookEventType::ChargeSucceeded,
            charge_id.clone()
        )
    );
    assert_eq!(settled[1].1, WebhookEventType::ChargeFailed);
    let ledger = provider.ledger();
    assert_eq!(ledger.captured_minor(succeeds), 3000);
    assert_eq!(
        ledger.charges_for(fails)[0].status,
        ChargeStatus::Declined(DeclineReason::CardDeclined)
    );
    drop(provider);

    // Settled for good: the next restart sends nothing and still answers the first way.
    let (provider, mut webhooks) = opened(&path);
    assert_eq!(provider.ledger(), ledger);
    assert_eq!(provider.charge(later).await.expect("retry"), pending);
    tokio::time::sleep(WEBHOOK_DELAY * 10).await;
    assert!(webhooks.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_charges_and_refunds_are_recorded_once_and_survive_a_restart() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = ledger_path(&dir);
    let (provider, _webhooks) = opened(&path);
    let orders: Vec<_> = (0..50).map(|_| order()).collect();
    let mut tasks = Vec::new();
    for &order in &orders {
        for _ in 0..4 {
            let provider = provider.clone();
            tasks.push(tokio::spawn(async move {
                let request = ChargeRequest::for_order(order, 700, "EUR", test_tokens::SUCCESS);
                let Ok(ChargeOutcome::Succeeded { charge_id }) = provider.charge(request).await
                else {
                    panic!("expected success");
                };
                provider
                    .refund(RefundRequest {
                        charge_id,
                        order_id: order,
                        reason: RefundReason::EventCancelled,
                    })
                    .await
                    .expect("refund")
            }));
        }
    }
    for task in tasks {
        task.await.expect("task");
    }
    let before = provider.ledger();
    assert_eq!(before.charges.len(), orders.len());
    assert_eq!(before.refunds.len(), orders.len());
    drop(provider);

    let (provider, _webhooks) = opened(&path);
    assert_eq!(provider.ledger(), before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_providers_on_one_ledger_never_charge_an_order_twice() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = ledger_path(&dir);
    let (first, _a) = opened(&path);
    let (second, _b) = opened(&path);
    let orders: Vec<_> = (0..40).map(|_| order()).collect();
    let mut tasks = Vec::new();
    for &order in &orders {
        for provider in [first.clone(), second.clone()] {
            tasks.push(tokio::spawn(async move {
                let request = ChargeRequest::for_order(order, 500, "EUR", test_tokens::SUCCESS);
                provider.charge(request).await.expect("charge")
            }));
        }
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.expect("task"));
    }
    // Both providers answered each order with the one charge the ledger holds.
    for pair in outcomes.chunks(2) {
        assert_eq!(pair[0], pair[1]);
    }
    drop((first, second));
    let (provider, _webhooks) = opened(&path);
    let ledger = provider.ledger();
    assert_eq!(ledger.charges.len(), orders.len());
    for order in orders {
        assert_eq!(ledger.charges_for(order).len(), 1);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_that_cannot_be_written_charges_nothing_and_says_so() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = ledger_path(&dir);
    let (provider, _webhooks) = opened(&path);
    let request = ChargeRequest::for_order(order(), 4500, "EUR", test_tokens::SUCCESS);

    // Another connection holds the write lock longer than the provider waits for it.
    let blocker = rusqlite::Connection::open(&path).expect("open");
    blocker
        .execute_batch("BEGIN IMMEDIATE")
        .expect("take the write lock");
    let error = provider
        .charge(request.clone())
        .await
        .expect_err("the ledger is locked");
    assert!(matches!(error, PaymentError::Unavailable(_)), "{error:?}");
    assert_eq!(error.code(), "PAYMENT_UNAVAILABLE");
    assert!(provider.ledger().charges.is_empty(), "no money moved");

    blocker.execute_batch("ROLLBACK").expect("release");
    let outcome = provider.charge(request).await.expect("the retry charges");
    assert!(matches!(outcome, ChargeOutcome::Succeeded { .. }));
    assert_eq!(provider.ledger().charges.len(), 1);
}

#[tokio::test]
async fn a_file_that_is_not_a_ledger_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().expect("tempdir");

    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "these are not the books you are looking for\n").expect("write");
    let error = refused(&text);
    assert_eq!(error.code(), "LEDGER_NOT_A_LEDGER", "{error}");
    assert!(
        error.to_string().contains("not a SQLite database"),
        "{error}"
    );
    assert_eq!(
        std::fs::read_to_string(&text).expect("read"),
        "these are not the books you are looking for\n"
    );

    // Another application's SQLite database, for example the event store's.
    let foreign = dir.path().join("events.sqlite3");
    {
        let conn = rusqlite::Connection::open(&foreign).expect("open");
        conn.execute_batch(
            "PRAGMA application_id = 0x544B4553; CREATE TABLE events (id INTEGER PRIMARY KEY);",
        )
        .expect("create");
    }
    let error = refused(&foreign);
    assert_eq!(error.code(), "LEDGER_NOT_A_LEDGER", "{error}");
    assert!(error.to_string().contains("another application"), "{error}");
    let conn = rusqlite::Connection::open(&foreign).expect("open");
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_schema WHERE type = 'table'")
        .expect("prepare")
        .query_map([], |row| row.get(0))
        .expect("query")
        .collect::<Result<_, _>>()
        .expect("rows");
    assert_eq!(tables, ["events"], "nothing was added to it");

    // A database with tables but no stamp at all.
    let unstamped = dir.path().join("unstamped.sqlite3");
    rusqlite::Connection::open(&unstamped)
        .expect("open")
        .execute_batch("CREATE TABLE charges (x)")
        .expect("create");
    assert_eq!(refused(&unstamped).code(), "LEDGER_NOT_A_LEDGER");

    // A directory.
    let error = refused(dir.path());
    assert!(
        matches!(error.code(), "LEDGER_IO" | "LEDGER_NOT_A_LEDGER"),
        "{error}"
    );
}

/// A ledger with one paid and refunded order, closed.
async fn ledger_with_history(path: &Path) {
    let (provider, _webhooks) = opened(path);
    let order = order();
    let Ok(ChargeOutcome::Succeeded { charge_id }) = provider
        .charge(ChargeRequest::for_order(
            order,
            4500,
            "EUR",
            test_tokens::SUCCESS,
        ))
        .await
    else {
        panic!("expected success");
    };
    provider
        .refund(RefundRequest {
            charge_id,
            order_id: order,
            reason: RefundReason::OrderCancelled,
        })
        .await
        .expect("refund");
}

#[tokio::test]
async fn a_damaged_ledger_is_refused_with_what_is_wrong() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = ledger_path(&dir);
    ledger_with_history(&path).await;
    opened(&path);
    // A dropped provider's ledger is closed by its writer once it has drained (the last
    // connection folds the log into the file): copies are taken of the closed file.
    let wal = PathBuf::from(format!("{}-wal", path.display()));
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while wal.exists() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(!wal.exists(), "the ledger was not closed");

    let tamper = |sql: &str| {
        let copy = dir
            .path()
            .join(format!("tampered-{}.sqlite3", uuid::Uuid::new_v4()));
        std::fs::copy(&path, &copy).expect("copy");
        rusqlite::Connection::open(&copy)
            .expect("open")
            .execute_batch(sql)
            .expect("tamper");
        copy
    };
    let cases = [
        (
            "UPDATE charges SET status = 'refunded'",
            "LEDGER_DAMAGED",
            "charge row 1",
        ),
        (
            "UPDATE charges SET order_id = 'not-a-uuid'",
            "LEDGER_DAMAGED",
            "not a UUID",
        ),
        (
            // A token that declines, booked as a success.
            "UPDATE charges SET token = 'tok_decline'",
            "LEDGER_DAMAGED",
            "tok_decline",
        ),
        (
            "UPDATE charges SET token = 'tok_free_money'",
            "LEDGER_DAMAGED",
            "unknown payment token",
        ),
        (
            "UPDATE charges SET currency = 'euros'",
            "LEDGER_DAMAGED",
            "currency",
        ),
        (
            "UPDATE refunds SET amount_minor = 999999",
            "LEDGER_DAMAGED",
            "refund row 1",
        ),
        (
            "UPDATE refunds SET reason = 'because'",
            "LEDGER_DAMAGED",
            "unknown refund reason",
        ),
        (
            "PRAGMA user_version = 7",
            "LEDGER_UNSUPPORTED_VERSION",
            "schema version 7",
        ),
    ];
    for (sql, code, detail) in cases {
        let copy = tamper(sql);
        let error = refused(&copy);
        assert_eq!(error.code(), code, "{sql}: {error}");
        assert!(error.to_string().contains(detail), "{sql}: {error}");
    }

    // A file cut short.
    let cut = dir.path().join("cut.sqlite3");
    let bytes = std::fs::read(&path).expect("read");
    assert!(bytes.len() > 4096, "the ledger spans several pages");
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).expect("write");
    let error = refused(&cut);
    assert!(
        matches!(error.code(), "LEDGER_DAMAGED" | "LEDGER_NOT_A_LEDGER"),
        "{error}"
    );
    // A page overwritten with garbage.
    let scribbled = dir.path().join("scribbled.sqlite3");
    let mut bytes = bytes;
    let page = 4096;
    for byte in &mut bytes[page..2 * page] {
        *byte = 0xA5;
    }
    std::fs::write(&scribbled, &bytes).expect("write");
    assert_eq!(refused(&scribbled).code(), "LEDGER_DAMAGED");
}

#[test]
fn opening_a_ledger_outside_a_runtime_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let error = refused(&ledger_path(&dir));
    assert_eq!(error.code(), "LEDGER_NO_RUNTIME");
}

mod properties {
    //! Whatever mix of charges, retries, conflicting retries, refunds, settlements and
    //! restarts arrives, every order is charged at most once and every charge refunded at
    //! most once, every call for an order or a refund answers the same across restarts, and
    //! a restart keeps the books exactly.

    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    const TOKENS: [&str; 5] = [
        test_tokens::SUCCESS,
        test_tokens::DECLINE,
        test_tokens::INSUFFICIENT_FUNDS,
        test_tokens::WEBHOOK_SUCCESS,
        test_tokens::WEBHOOK_DECLINE,
    ];

    #[derive(Debug, Clone)]
    enum Op {
        Charge {
            order: usize,
            token: usize,
            amount: u64,
        },
        Refund {
            order: usize,
        },
        /// Lets pending charges settle (or not yet).
        Wait {
            millis: u64,
        },
        /// The process stops and starts again on the same ledger.
        Restart,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (0usize..3, 0..TOKENS.len(), 1u64..=2).prop_map(|(order, token, amount)| {
                Op::Charge { order, token, amount: amount * 100 }
            }),
            2 => (0usize..3).prop_map(|order| Op::Refund { order }),
            1 => (0u64..3_000).prop_map(|millis| Op::Wait { millis }),
            2 => Just(Op::Restart),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        #[test]
        fn restarts_never_charge_or_refund_twice(ops in proptest::collection::vec(op(), 1..30)) {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_time()
                .start_paused(true)
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let dir = tempfile::tempdir().expect("tempdir");
                let path = ledger_path(&dir);
                let orders: Vec<_> = (0..3).map(|_| order()).collect();
                let (mut provider, mut _webhooks) = opened(&path);
                // The first answer each order's charge got, and each charge's refund.
                let mut charged: HashMap<usize, (ChargeRequest, ChargeOutcome)> = HashMap::new();
                let mut refunded: HashMap<String, RefundOutcome> = HashMap::new();
                for op in ops {
                    match op {
                        Op::Charge { order, token, amount } => {
                            let request =
                                ChargeRequest::for_order(orders[order], amount, "EUR", TOKENS[token]);
                            let answer = provider.charge(request.clone()).await;
                            match charged.get(&order) {
                                None => {
                                    let outcome = answer.expect("a first charge is answered");
                                    charged.insert(order, (request, outcome));
                                }
                                Some((first, outcome)) if *first == request => {
                                    assert_eq!(&answer.expect("a retry is answered"), outcome);
                                }
                                Some(_) => {
                                    assert_eq!(
                                        answer.expect_err("other parameters").code(),
                                        "IDEMPOTENCY_CONFLICT"
                                    );
                                }
                            }
                        }
                        Op::Refund { order } => {
                            let ledger = provider.ledger();
                            let Some(charge) = ledger.charges_for(orders[order]).first().copied().cloned() else {
                                continue;
                            };
                            let answer = provider
                                .refund(RefundRequest {
                                    charge_id: charge.charge_id.clone(),
                                    order_id: orders[order],
                                    reason: RefundReason::OrderCancelled,
                                })
                                .await;
                            match (charge.status, refunded.get(&charge.charge_id)) {
                                (ChargeStatus::Succeeded, None) => {
                                    refunded.insert(charge.charge_id, answer.expect("refund"));
                                }
                                (ChargeStatus::Succeeded, Some(first)) => {
                                    assert_eq!(&answer.expect("a repeated refund"), first);
                                }
                                _ => {
                                    assert_eq!(
                                        answer.expect_err("nothing to refund").code(),
                                        "CHARGE_NOT_REFUNDABLE"
                                    );
                                }
                            }
                        }
                        Op::Wait { millis } => {
                            tokio::time::sleep(Duration::from_millis(millis)).await;
                        }
                        Op::Restart => {
                            let before = provider.ledger();
                            drop(provider);
                            (provider, _webhooks) = opened(&path);
                            assert_eq!(provider.ledger(), before, "the restart kept the books");
                        }
                    }
                    let ledger = provider.ledger();
                    for &order in &orders {
                        assert!(ledger.charges_for(order).len() <= 1, "{ledger:?}");
                        assert!(ledger.refunds_for(order).len() <= 1, "{ledger:?}");
                        assert!(ledger.refunded_minor(order) <= ledger.captured_minor(order));
                    }
                }
            });
        }
    }
}
