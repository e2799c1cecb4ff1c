//! The stored form of events: stable names and shapes, round trips, upcasting, bad bytes.

mod common;

use common::*;
use domain::account::*;
use domain::codec::{self, AnyEvent, DecodeError, EventCodec};
use domain::idempotency::{CommandRecord, CommandStamp};
use domain::ids::Email;
use domain::inventory::*;
use domain::*;

fn every_inventory_event() -> Vec<InventoryEvent> {
    let meta = CommandMeta {
        idempotency_key: IdempotencyKey::parse("k").unwrap(),
        actor: customer(1),
        now: t(1),
        correlation_id: uuid::Uuid::from_u128(9),
    };
    vec![
        created(),
        InventoryEvent::DetailsUpdated(DetailsUpdated { details: details() }),
        InventoryEvent::SalesWindowSet(SalesWindowSet {
            opens_at: t(1),
            closes_at: t(2),
        }),
        InventoryEvent::PerUserLimitSet(PerUserLimitSet { limit: Some(4) }),
        published(),
        InventoryEvent::EventCancelled(EventCancelled {
            reason: "rain".into(),
            at: t(3),
        }),
        ga_tier(10),
        seated_tier(),
        InventoryEvent::TierRenamed(TierRenamed {
            tier_id: GA,
            name: "VIP".into(),
        }),
        InventoryEvent::TierRepriced(TierRepriced {
            tier_id: GA,
            price: eur(1),
        }),
        InventoryEvent::TierResized(TierResized {
            tier_id: GA,
            capacity: 3,
        }),
        seats_added(&["A-1", "B-2"]),
        held_seats(1, buyer(1), &["A-1"], t(10)),
        InventoryEvent::HoldReleased(HoldReleased {
            order_id: order(1),
            at: t(2),
        }),
        InventoryEvent::HoldExpired(HoldExpired {
            order_id: order(1),
            at: t(2),
        }),
        confirmed(1, buyer(1), 12_000, issued(1, 1, &["A-1"])),
        InventoryEvent::PaymentRefundOwed(PaymentRefundOwed {
            order_id: order(1),
            user_id: buyer(1),
            payment_ref: "p".into(),
            amount: eur(5),
            reason: RefundReason::AmountMismatch,
            at: t(2),
        }),
        InventoryEvent::OrderCancelled(OrderCancelled {
            order_id: order(1),
            user_id: buyer(1),
            refund: Some(eur(5)),
            reason: RefundReason::EventCancelled,
            voided_tickets: vec![ticket(1)],
            at: t(2),
        }),
        InventoryEvent::RefundIssued(RefundIssued {
            order_id: order(1),
            user_id: buyer(1),
            payment_ref: "p".into(),
            refund_id: "re_1".into(),
            amount: eur(5),
            at: t(3),
        }),
        InventoryEvent::TicketCheckedIn(TicketCheckedIn {
            ticket_id: ticket(1),
            order_id: order(1),
            at: t(2),
        }),
        InventoryEvent::DoorStaffAssigned(DoorStaffChanged {
            user_id: buyer(7),
            at: t(2),
        }),
        InventoryEvent::DoorStaffUnassigned(DoorStaffChanged {
            user_id: buyer(7),
            at: t(3),
        }),
        // The two events that may carry their decision's idempotency record, carrying one.
        stamped(
            held(2, buyer(1), 1, t(10)),
            CommandStamp::new(&meta, hold_ga(2, 1, t(10)).fingerprint(), buyer(1)),
        ),
        stamped(
            confirmed(2, buyer(1), 5000, issued(2, 1, &[])),
            CommandStamp {
                key: IdempotencyKey::parse("pay-2").unwrap(),
                actor: Some(ActorRef::System),
                fingerprint: uuid::Uuid::from_u128(77),
            },
        ),
        InventoryEvent::CommandAccepted(InventoryCommandAccepted {
            record: CommandRecord::new(&meta, &hold_ga(1, 1, t(10))),
            outcome: InventoryOutcome::Confirmed {
                order_id: order(1),
                tickets: vec![ticket(1)],
            },
        }),
    ]
}

#[test]
fn every_event_round_trips_through_its_stored_form() {
    let events = every_inventory_event();
    let mut names = std::collections::HashSet::new();
    for event in &events {
        let (name, version, json) = codec::encode(event);
        names.insert(name);
        assert_eq!(name, event.type_name());
        assert_eq!(version, InventoryEvent::current_version(name).unwrap());
        let back: InventoryEvent = codec::decode(name, version, &json).unwrap();
        assert_eq!(&back, event);
        assert_eq!(
            codec::decode_any(name, version, &json).unwrap(),
            AnyEvent::Inventory(event.clone())
        );
    }
    assert_eq!(names.len(), 22, "every inventory event type is covered");

    let email = Email::parse("a@b.io").unwrap();
    let accounts = vec![
        AccountEvent::AccountRegistered(AccountRegistered {
            user_id: buyer(1),
            email: email.clone(),
            display_name: "A".into(),
            password_hash: "h".into(),
            roles: [Role::Customer].into(),
            at: t(0),
        }),
        AccountEvent::ProfileUpdated(ProfileUpdated {
            display_name: "B".into(),
            password_hash: "h".into(),
            at: t(0),
        }),
        AccountEvent::RoleGranted(RoleChanged {
            role: Role::Organizer,
            by: ActorRef::System,
            at: t(0),
        }),
        AccountEvent::RoleRevoked(RoleChanged {
            role: Role::Organizer,
            by: ActorRef::User(buyer(2)),
            at: t(0),
        }),
    ];
    for event in &accounts {
        let (name, version, json) = codec::encode(event);
        assert_eq!(
            codec::decode::<AccountEvent>(name, version, &json).unwrap(),
            *event
        );
        assert_eq!(
            codec::decode_any(name, version, &json).unwrap(),
            AnyEvent::Account(event.clone())
        );
    }
    let reserved = EmailEvent::EmailReserved(EmailReservationChanged {
        email,
        user_id: buyer(1),
        at: t(0),
    });
    let (name, version, json) = codec::encode(&reserved);
    assert_eq!(
        codec::decode_any(name, version, &json).unwrap(),
        AnyEvent::Email(reserved)
    );
}

/// The event with the idempotency record it carries.
fn stamped(mut event: InventoryEvent, stamp: CommandStamp) -> InventoryEvent {
    match &mut event {
        InventoryEvent::HoldPlaced(e) => e.command = Some(stamp),
        InventoryEvent::OrderConfirmed(e) => e.command = Some(stamp),
        other => panic!("{other:?} carries no record"),
    }
    event
}

fn stored_json(event: &InventoryEvent) -> serde_json::Value {
    let (_, _, json) = codec::encode(event);
    serde_json::from_slice(&json).unwrap()
}

#[test]
fn the_stored_shape_of_a_hold_is_stable() {
    let (name, version, json) = codec::encode(&held_seats(1, buyer(1), &["A-1"], t(10)));
    assert_eq!((name, version), ("HoldPlaced", 2));
    let value: serde_json::Value = serde_json::from_slice(&json).unwrap();
    assert_eq!(
        value,
        serde_json::json!({
            "orderId": "00000000-0000-0000-0000-000000000d01",
            "userId": "00000000-0000-0000-0000-00000000b001",
            "tierId": "00000000-0000-0000-0000-000000000072",
            "quantity": 1,
            "seats": ["A-1"],
            "total": {"amountMinor": 12000, "currency": "EUR"},
            "placedAt": "2030-01-01T12:00:00Z",
            "expiresAt": "2030-01-01T12:10:00Z"
        })
    );
}

#[test]
fn a_carried_record_is_stored_compactly_in_camel_case() {
    let meta = CommandMeta {
        idempotency_key: IdempotencyKey::parse("hold-1").unwrap(),
        actor: customer(1),
        now: t(1),
        correlation_id: uuid::Uuid::from_u128(9),
    };
    let fingerprint = uuid::Uuid::from_u128(0xF1);
    // The buyer's own hold: the actor is the event's user, so it is left out.
    let hold = stamped(
        held(1, buyer(1), 1, t(10)),
        CommandStamp::new(&meta, fingerprint, buyer(1)),
    );
    assert_eq!(
        stored_json(&hold)["command"],
        serde_json::json!({
            "key": "hold-1",
            "fingerprint": "00000000-0000-0000-0000-0000000000f1"
        })
    );
    // A confirmation by the platform names it.
    let system = CommandMeta {
        idempotency_key: IdempotencyKey::parse("pay-1").unwrap(),
        actor: Actor::System,
        ..meta
    };
    let paid = stamped(
        confirmed(1, buyer(1), 5000, issued(1, 1, &[])),
        CommandStamp::new(&system, fingerprint, buyer(1)),
    );
    let (name, version, _) = codec::encode(&paid);
    assert_eq!((name, version), ("OrderConfirmed", 2));
    assert_eq!(
        stored_json(&paid)["command"],
        serde_json::json!({
            "key": "pay-1",
            "actor": {"kind": "SYSTEM"},
            "fingerprint": "00000000-0000-0000-0000-0000000000f1"
        })
    );
    // Without a record there is no `command` field at all (not a null).
    for event in [
        held(1, buyer(1), 1, t(10)),
        confirmed(1, buyer(1), 5000, issued(1, 1, &[])),
    ] {
        let json = stored_json(&event);
        assert!(json.get("command").is_none(), "{json}");
    }
}

#[test]
fn version_1_holds_and_confirmations_decode_without_a_record() {
    let v1_hold = br#"{
        "orderId": "00000000-0000-0000-0000-000000000d01",
        "userId": "00000000-0000-0000-0000-00000000b001",
        "tierId": "00000000-0000-0000-0000-000000000071",
        "quantity": 1,
        "seats": [],
        "total": {"amountMinor": 5000, "currency": "EUR"},
        "placedAt": "2030-01-01T12:00:00Z",
        "expiresAt": "2030-01-01T12:10:00Z"
    }"#;
    let event: InventoryEvent = codec::decode("HoldPlaced", 1, v1_hold).unwrap();
    assert_eq!(event, held(1, buyer(1), 1, t(10)));
    let v1_paid = br#"{
        "orderId": "00000000-0000-0000-0000-000000000d01",
        "userId": "00000000-0000-0000-0000-00000000b001",
        "paymentRef": "pay-1",
        "amount": {"amountMinor": 5000, "currency": "EUR"},
        "tickets": [{"ticketId": "00000000-0000-0000-0000-000000007101",
                     "secret": "secret-00000000000000000000000000000001", "seat": null}],
        "at": "2030-01-01T12:01:00Z"
    }"#;
    let event: InventoryEvent = codec::decode("OrderConfirmed", 1, v1_paid).unwrap();
    assert_eq!(event, confirmed(1, buyer(1), 5000, issued(1, 1, &[])));
    assert!(!event.ends_decision());
    // Upcasting does not make a broken payload acceptable.
    assert!(matches!(
        codec::decode::<InventoryEvent>("OrderConfirmed", 1, b"{}"),
        Err(DecodeError::Malformed { .. })
    ));
}

#[test]
fn a_version_1_tier_is_upcast_to_today_s_shape() {
    // As stored before seat maps existed: a flat price and no `seated` flag.
    let v1 = br#"{
        "tierId": "00000000-0000-0000-0000-000000000071",
        "name": "Standard",
        "priceMinor": 5000,
        "currency": "EUR",
        "capacity": 10
    }"#;
    let event: InventoryEvent = codec::decode("TierAdded", 1, v1).unwrap();
    assert_eq!(event, ga_tier(10));
    // And it folds like any other event.
    let state = Inventory::replay(&[created(), event]);
    assert_eq!(state.tier(GA).unwrap().price, eur(5000));
}

#[test]
fn bad_stored_events_are_errors_not_panics() {
    assert!(matches!(
        codec::decode::<InventoryEvent>("NoSuchEvent", 1, b"{}"),
        Err(DecodeError::UnknownType { .. })
    ));
    assert!(matches!(
        codec::decode_any("NoSuchEvent", 1, b"{}"),
        Err(DecodeError::UnknownType { .. })
    ));
    assert!(matches!(
        codec::decode::<InventoryEvent>("HoldPlaced", 3, b"{}"),
        Err(DecodeError::UnsupportedVersion { current: 2, .. })
    ));
    assert!(matches!(
        codec::decode::<InventoryEvent>("TierAdded", 0, b"{}"),
        Err(DecodeError::UnsupportedVersion { .. })
    ));
    assert!(matches!(
        codec::decode::<InventoryEvent>("HoldPlaced", 1, b"not json"),
        Err(DecodeError::Malformed { .. })
    ));
    assert!(matches!(
        codec::decode::<InventoryEvent>("TierAdded", 1, br#"{"name": "x"}"#),
        Err(DecodeError::Malformed { version: 1, .. })
    ));
    assert!(matches!(
        codec::decode::<InventoryEvent>("TierAdded", 1, b"[1]"),
        Err(DecodeError::Malformed { .. })
    ));
    // A stored seat id that is not a valid seat id is refused, not trusted.
    let (_, _, json) = codec::encode(&seats_added(&["A-1"]));
    let tampered = String::from_utf8(json).unwrap().replace("A-1", "A 1");
    assert!(matches!(
        codec::decode::<InventoryEvent>("SeatsAdded", 1, tampered.as_bytes()),
        Err(DecodeError::Malformed { .. })
    ));
    // An account event name is not an inventory event.
    assert!(matches!(
        codec::decode::<InventoryEvent>("AccountRegistered", 1, b"{}"),
        Err(DecodeError::UnknownType { .. })
    ));
}
