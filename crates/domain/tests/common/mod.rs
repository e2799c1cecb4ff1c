//! Fixtures shared by the inventory tests: actors, times, and the events of a typical event.
#![allow(dead_code)]

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::inventory::*;
use domain::money::{Currency, Money};
use domain::*;
use uuid::Uuid;

pub const ORGANIZER: UserId = UserId(Uuid::from_u128(0xA1));
pub const OTHER_ORGANIZER: UserId = UserId(Uuid::from_u128(0xA2));
pub const ADMIN: UserId = UserId(Uuid::from_u128(0xAD));
pub const DOOR: UserId = UserId(Uuid::from_u128(0xD0));
pub const EVENT: EventId = EventId(Uuid::from_u128(0xE1));
pub const GA: TierId = TierId(Uuid::from_u128(0x71));
pub const SEATED: TierId = TierId(Uuid::from_u128(0x72));

pub fn buyer(n: u128) -> UserId {
    UserId(Uuid::from_u128(0xB000 + n))
}

pub fn order(n: u128) -> OrderId {
    OrderId(Uuid::from_u128(0x0D00 + n))
}

pub fn ticket(n: u128) -> TicketId {
    TicketId(Uuid::from_u128(0x7100 + n))
}

/// Minutes after a fixed base instant.
pub fn t(minutes: i64) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap() + Duration::minutes(minutes)
}

pub fn organizer() -> Actor {
    Actor::user(ORGANIZER, [Role::Organizer])
}
pub fn other_organizer() -> Actor {
    Actor::user(OTHER_ORGANIZER, [Role::Organizer])
}
pub fn admin() -> Actor {
    Actor::user(ADMIN, [Role::Admin])
}
pub fn door() -> Actor {
    Actor::user(DOOR, [Role::Operator])
}
pub fn customer(n: u128) -> Actor {
    Actor::user(buyer(n), [Role::Customer])
}

pub fn eur(amount: u64) -> Money {
    Money {
        amount_minor: amount,
        currency: Currency::parse("EUR").unwrap(),
    }
}

pub fn cmd(
    actor: Actor,
    key: &str,
    now: DateTime<Utc>,
    body: InventoryCommand,
) -> Command<InventoryCommand> {
    Command::new(
        CommandMeta {
            idempotency_key: IdempotencyKey::parse(key).unwrap(),
            actor,
            now,
            correlation_id: Uuid::from_u128(42),
        },
        body,
    )
}

pub fn details() -> EventDetails {
    EventDetails {
        name: "Rust Fest".into(),
        description: "A conference".into(),
        venue: "Hall 1".into(),
        starts_at: t(60 * 24 * 30),
        ends_at: t(60 * 24 * 30 + 180),
        images: vec!["https://img.example/1.png".into()],
    }
}

pub fn details_input() -> DetailsInput {
    let d = details();
    DetailsInput {
        name: d.name,
        description: d.description,
        venue: d.venue,
        starts_at: d.starts_at,
        ends_at: d.ends_at,
        images: d.images,
    }
}

pub fn created() -> InventoryEvent {
    InventoryEvent::EventCreated(EventCreated {
        event_id: EVENT,
        organizer: ORGANIZER,
        details: details(),
    })
}

pub fn ga_tier(capacity: u32) -> InventoryEvent {
    InventoryEvent::TierAdded(TierAdded {
        tier_id: GA,
        name: "Standard".into(),
        price: eur(5000),
        capacity,
        seated: false,
    })
}

pub fn seated_tier() -> InventoryEvent {
    InventoryEvent::TierAdded(TierAdded {
        tier_id: SEATED,
        name: "VIP".into(),
        price: eur(12000),
        capacity: 0,
        seated: true,
    })
}

pub fn seat(s: &str) -> SeatId {
    SeatId::parse(s).unwrap()
}

pub fn seats_added(ids: &[&str]) -> InventoryEvent {
    InventoryEvent::SeatsAdded(SeatsAdded {
        seats: ids
            .iter()
            .map(|s| SeatAssignment {
                seat: seat(s),
                tier_id: SEATED,
            })
            .collect(),
    })
}

pub fn published() -> InventoryEvent {
    InventoryEvent::EventPublished(EventPublished { at: t(0) })
}

/// The door staff `door()` assigned to the event.
pub fn door_assigned() -> InventoryEvent {
    InventoryEvent::DoorStaffAssigned(DoorStaffChanged {
        user_id: DOOR,
        at: t(0),
    })
}

/// A published event selling `ga` general tickets and seats A-1..A-4, no sales window,
/// with `door()` as its door staff.
pub fn on_sale(ga: u32) -> Vec<InventoryEvent> {
    vec![
        created(),
        ga_tier(ga),
        seated_tier(),
        seats_added(&["A-1", "A-2", "A-3", "A-4"]),
        door_assigned(),
        published(),
    ]
}

pub fn held(n: u128, user: UserId, quantity: u32, expires: DateTime<Utc>) -> InventoryEvent {
    InventoryEvent::HoldPlaced(HoldPlaced {
        order_id: order(n),
        user_id: user,
        tier_id: GA,
        quantity,
        seats: vec![],
        total: eur(5000 * u64::from(quantity)),
        placed_at: t(0),
        expires_at: expires,
        command: None,
    })
}

pub fn held_seats(n: u128, user: UserId, ids: &[&str], expires: DateTime<Utc>) -> InventoryEvent {
    InventoryEvent::HoldPlaced(HoldPlaced {
        order_id: order(n),
        user_id: user,
        tier_id: SEATED,
        quantity: ids.len() as u32,
        seats: ids.iter().map(|s| seat(s)).collect(),
        total: eur(12000 * ids.len() as u64),
        placed_at: t(0),
        expires_at: expires,
        command: None,
    })
}

pub fn secret(n: u128) -> String {
    format!("secret-{n:032x}")
}

/// Tickets `first..first+count` with their secrets, seated on `seats` if given.
pub fn issued(first: u128, count: u128, seats: &[&str]) -> Vec<IssuedTicket> {
    (0..count)
        .map(|i| IssuedTicket {
            ticket_id: ticket(first + i),
            secret: secret(first + i),
            seat: seats.get(i as usize).map(|s| seat(s)),
        })
        .collect()
}

pub fn confirmed(n: u128, user: UserId, amount: u64, tickets: Vec<IssuedTicket>) -> InventoryEvent {
    InventoryEvent::OrderConfirmed(OrderConfirmed {
        order_id: order(n),
        user_id: user,
        payment_ref: format!("pay-{n}"),
        amount: eur(amount),
        tickets,
        at: t(1),
        command: None,
    })
}

pub fn seeds(first: u128, count: u128) -> Vec<TicketSeed> {
    (0..count)
        .map(|i| TicketSeed {
            ticket_id: ticket(first + i),
            secret: secret(first + i),
        })
        .collect()
}

pub fn payment(n: u128, amount: i64, first_ticket: u128, count: u128) -> PaymentInput {
    PaymentInput {
        payment_ref: format!("pay-{n}"),
        amount_minor: amount,
        currency: "EUR".into(),
        tickets: seeds(first_ticket, count),
    }
}

pub fn hold_ga(n: u128, quantity: i64, expires: DateTime<Utc>) -> InventoryCommand {
    InventoryCommand::PlaceHold(HoldRequest {
        order_id: order(n),
        tier_id: GA,
        selection: Selection::Quantity { quantity },
        expires_at: expires,
    })
}

pub fn hold_seats(n: u128, ids: &[&str], expires: DateTime<Utc>) -> InventoryCommand {
    InventoryCommand::PlaceHold(HoldRequest {
        order_id: order(n),
        tier_id: SEATED,
        selection: Selection::Seats {
            seats: ids.iter().map(|s| s.to_string()).collect(),
        },
        expires_at: expires,
    })
}
