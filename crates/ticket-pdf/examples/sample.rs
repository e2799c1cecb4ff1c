//! Writes a sample ticket to the path given as the first argument (default `ticket.pdf`),
//! to look at the layout: `cargo run -p ticket-pdf --example sample -- /tmp/ticket.pdf`.
//! A second argument `long` fills every field with long, non-Latin text instead, to look
//! at wrapping, truncation and transliteration.

use chrono::{FixedOffset, TimeZone};
use signature::{TicketClaims, TicketCodeSigner};
use ticket_pdf::{TicketDocument, render};
use uuid::Uuid;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ticket.pdf".to_owned());
    let ticket_id = Uuid::now_v7();
    let event_id = Uuid::now_v7();
    let code = TicketCodeSigner::new(b"sample key, not a real one").issue(&TicketClaims {
        ticket_id,
        event_id,
        secret: [42; 16],
    });
    let starts_at = FixedOffset::east_opt(3600)
        .and_then(|zone| zone.with_ymd_and_hms(2026, 3, 14, 20, 0, 0).single())
        .ok_or("invalid sample date")?;
    let mut ticket = TicketDocument {
        event_name: "Rust Nation Live: The Borrow Checker World Tour, Paris Night".to_owned(),
        venue: "Le Zénith Paris – La Villette, 211 avenue Jean Jaurès, 75019 Paris".to_owned(),
        starts_at,
        time_zone: Some("Europe/Paris".to_owned()),
        tier: "VIP".to_owned(),
        seat: Some("A-12".to_owned()),
        holder_name: "Ada Lovelace".to_owned(),
        holder_email: "ada.lovelace@example.com".to_owned(),
        order_id: Uuid::now_v7(),
        ticket_id,
        price_minor: 12_950,
        currency: "EUR".to_owned(),
        code,
    };
    if std::env::args().nth(2).as_deref() == Some("long") {
        let long = "Фестиваль «Белые ночи» 東京 Extraordinarily Long Name ".repeat(8);
        ticket.event_name = long.clone();
        ticket.venue = long.clone();
        ticket.tier = long.clone();
        ticket.seat = Some(long.clone());
        ticket.holder_name = long;
        ticket.holder_email = format!("{}@example.com", "very.long.address".repeat(12));
        ticket.time_zone = Some("America/Argentina/ComodRivadavia".to_owned());
        ticket.price_minor = 123_456_789_012;
    }
    std::fs::write(&path, render(&ticket)?)?;
    println!("wrote {path}");
    Ok(())
}
