//! Cost of signing and verifying webhooks and ticket codes.
//!
//! The figures that matter: how many webhook deliveries one core can verify, and how
//! cheaply the door refuses a forged ticket code (it must cost no more than a valid one,
//! and needs no lookup).

use std::hint::black_box;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use signature::{TicketClaims, TicketCodeSigner, sign, verify};
use uuid::Uuid;

const T: i64 = 1_700_000_000;

fn requests(c: &mut Criterion) {
    let mut group = c.benchmark_group("request");
    for size in [256usize, 4096] {
        let body = vec![b'x'; size];
        let header = sign(b"secret", T, &body);
        group.throughput(Throughput::Bytes(size as u64));
        group.bench_with_input(BenchmarkId::new("sign", size), &body, |b, body| {
            b.iter(|| sign(black_box(b"secret"), T, black_box(body)))
        });
        group.bench_with_input(BenchmarkId::new("verify", size), &body, |b, body| {
            b.iter(|| verify(&[b"secret"], black_box(&header), black_box(body), T, 300))
        });
        // During a rotation the new secret is tried first and fails: two MACs.
        group.bench_with_input(
            BenchmarkId::new("verify_second_secret", size),
            &body,
            |b, body| {
                b.iter(|| {
                    verify(
                        &[b"new secret", b"secret"],
                        black_box(&header),
                        black_box(body),
                        T,
                        300,
                    )
                })
            },
        );
    }
    group.finish();
}

fn ticket_codes(c: &mut Criterion) {
    let signer = TicketCodeSigner::new(&[7u8; 32]);
    let claims = TicketClaims {
        ticket_id: Uuid::from_u128(1),
        event_id: Uuid::from_u128(2),
        secret: [9; 16],
    };
    let code = signer.issue(&claims);
    let forged = TicketCodeSigner::new(b"attacker").issue(&claims);
    let mut group = c.benchmark_group("ticket_code");
    group.bench_function("issue", |b| b.iter(|| signer.issue(black_box(&claims))));
    group.bench_function("verify_valid", |b| {
        b.iter(|| signer.verify(black_box(&code)))
    });
    group.bench_function("verify_forged", |b| {
        b.iter(|| signer.verify(black_box(&forged)))
    });
    group.bench_function("verify_garbage", |b| {
        b.iter(|| signer.verify(black_box("not a ticket code")))
    });
    group.finish();
}

criterion_group!(benches, requests, ticket_codes);
criterion_main!(benches);
