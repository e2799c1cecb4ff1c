//! Renders per second: one typical ticket, one whose text all has to wrap and be
//! transliterated, and the QR encoding alone for comparison. Criterion prints the rate as
//! `thrpt: ... elem/s`.

use chrono::{FixedOffset, TimeZone};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use signature::{TicketClaims, TicketCodeSigner};
use ticket_pdf::{QrMatrix, TicketDocument, render};
use uuid::Uuid;

fn ticket() -> TicketDocument {
    let ticket_id = Uuid::from_u128(42);
    let code = TicketCodeSigner::new(b"bench key").issue(&TicketClaims {
        ticket_id,
        event_id: Uuid::from_u128(7),
        secret: [3; 16],
    });
    TicketDocument {
        event_name: "Rust Nation Live: The Borrow Checker Tour".to_owned(),
        venue: "Le Zénith, 211 avenue Jean Jaurès, 75019 Paris".to_owned(),
        starts_at: FixedOffset::east_opt(3600)
            .and_then(|zone| zone.with_ymd_and_hms(2026, 3, 14, 20, 0, 0).single())
            .expect("valid date"),
        time_zone: Some("Europe/Paris".to_owned()),
        tier: "VIP".to_owned(),
        seat: Some("A-12".to_owned()),
        holder_name: "Ada Lovelace".to_owned(),
        holder_email: "ada@example.com".to_owned(),
        order_id: Uuid::from_u128(1),
        ticket_id,
        price_minor: 12_950,
        currency: "EUR".to_owned(),
        code,
    }
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("render");
    group.throughput(Throughput::Elements(1));
    let typical = ticket();
    group.bench_function("typical", |b| {
        b.iter(|| render(std::hint::black_box(&typical)).expect("renders"))
    });
    let long = "Концерт Extraordinaire ".repeat(20);
    let heavy = TicketDocument {
        event_name: long.clone(),
        venue: long.clone(),
        holder_name: long,
        ..ticket()
    };
    group.bench_function("long_non_latin_text", |b| {
        b.iter(|| render(std::hint::black_box(&heavy)).expect("renders"))
    });
    // The QR encoder's share of a render (it tries every mask pattern to pick the best).
    group.bench_function("qr_matrix_only", |b| {
        b.iter(|| QrMatrix::encode(std::hint::black_box(&typical.code)).expect("encodes"))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
