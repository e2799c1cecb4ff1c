//! Cost of the simulated provider's charge path and of parsing a webhook.
//!
//! The simulator sits on the purchase path of every load test, so its own cost per
//! charge (the idempotency slot, the books, ids) must stay far below the inventory
//! actor's; `retry` is the cost of answering a charge that was already made.
//! `new_order_durable` is the same charge on a provider whose books are also written to
//! a ledger file (`SimulatedProvider::open`), as `ticketing serve` runs it.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use payments::{
    ChannelSink, ChargeRequest, PaymentPort, SimulatedProvider, SimulatorConfig, WebhookEvent,
    WebhookEventType, parse_webhook, test_tokens,
};
use uuid::Uuid;

fn provider() -> SimulatedProvider {
    let (sink, receiver) = ChannelSink::new();
    // No webhooks are sent on this path; the receiver can go.
    drop(receiver);
    SimulatedProvider::new(SimulatorConfig::new("whsec"), Arc::new(sink))
}

fn charges(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a Tokio runtime");
    let mut group = c.benchmark_group("charge");
    group.bench_function("new_order", |b| {
        // A fresh provider per sample keeps the books from growing across the run.
        b.iter_custom(|iters| {
            let provider = provider();
            let requests: Vec<_> = (0..iters)
                .map(|_| {
                    ChargeRequest::for_order(Uuid::new_v4(), 4500, "EUR", test_tokens::SUCCESS)
                })
                .collect();
            let start = Instant::now();
            runtime.block_on(async {
                for request in requests {
                    black_box(provider.charge(request).await.expect("charge"));
                }
            });
            start.elapsed()
        })
    });
    group.bench_function("new_order_durable", |b| {
        // A fresh ledger per sample, for the same reason.
        b.iter_custom(|iters| {
            let dir = tempfile::tempdir().expect("tempdir");
            let provider = runtime.block_on(async {
                let (sink, receiver) = ChannelSink::new();
                drop(receiver);
                SimulatedProvider::open(
                    SimulatorConfig::new("whsec"),
                    Arc::new(sink),
                    dir.path().join("payments.sqlite3"),
                )
                .expect("ledger")
            });
            let requests: Vec<_> = (0..iters)
                .map(|_| {
                    ChargeRequest::for_order(Uuid::new_v4(), 4500, "EUR", test_tokens::SUCCESS)
                })
                .collect();
            let start = Instant::now();
            runtime.block_on(async {
                for request in requests {
                    black_box(provider.charge(request).await.expect("charge"));
                }
            });
            start.elapsed()
        })
    });
    group.bench_function("retry", |b| {
        let provider = provider();
        let request = ChargeRequest::for_order(Uuid::new_v4(), 4500, "EUR", test_tokens::SUCCESS);
        runtime
            .block_on(provider.charge(request.clone()))
            .expect("charge");
        b.iter(|| runtime.block_on(provider.charge(black_box(request.clone()))))
    });
    group.finish();
}

fn webhooks(c: &mut Criterion) {
    let event = WebhookEvent {
        id: format!("evt_{}", Uuid::new_v4().simple()),
        kind: WebhookEventType::ChargeSucceeded,
        charge_id: format!("ch_{}", Uuid::new_v4().simple()),
        order_id: Uuid::new_v4(),
        amount: 4500,
        currency: "EUR".into(),
        created: 1_700_000_000,
        failure_reason: None,
        refund_id: None,
        refund_reason: None,
    };
    let body = serde_json::to_vec(&event).expect("serialise");
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or(Duration::ZERO)
        .as_secs() as i64;
    let header = signature::sign(b"whsec", now, &body);
    c.bench_function("parse_webhook", |b| {
        b.iter(|| parse_webhook(&[b"whsec"], black_box(&header), black_box(&body), now, 300))
    });
}

criterion_group!(benches, charges, webhooks);
criterion_main!(benches);
