//! Given/when/then tests: every inventory rule and every rejection.

mod common;

use common::*;
use domain::inventory::*;
use domain::testing::given;
use domain::*;

type G = domain::testing::Given<Inventory>;
type Change = Box<dyn Fn(&mut DetailsInput)>;

fn on(events: Vec<InventoryEvent>) -> G {
    given(events)
}

fn plus(
    mut base: Vec<InventoryEvent>,
    more: impl IntoIterator<Item = InventoryEvent>,
) -> Vec<InventoryEvent> {
    base.extend(more);
    base
}

// ---------------------------------------------------------------- creating and details

#[test]
fn an_organizer_creates_an_event_and_becomes_its_organizer() {
    let (outcome, state) = on(vec![])
        .when(cmd(
            organizer(),
            "k",
            t(0),
            InventoryCommand::CreateEvent {
                event_id: EVENT,
                details: details_input(),
            },
        ))
        .then(vec![created()]);
    assert_eq!(outcome, InventoryOutcome::EventCreated { event_id: EVENT });
    assert_eq!(state.organizer(), Some(ORGANIZER));
    assert_eq!(state.status(), Some(EventStatus::Draft));
}

#[test]
fn a_customer_cannot_create_an_event() {
    on(vec![])
        .when(cmd(
            customer(1),
            "k",
            t(0),
            InventoryCommand::CreateEvent {
                event_id: EVENT,
                details: details_input(),
            },
        ))
        .rejected("FORBIDDEN");
}

#[test]
fn an_event_is_created_once() {
    on(vec![created()])
        .when(cmd(
            organizer(),
            "k2",
            t(0),
            InventoryCommand::CreateEvent {
                event_id: EVENT,
                details: details_input(),
            },
        ))
        .rejected("ALREADY_EXISTS");
}

#[test]
fn event_details_are_validated() {
    let bad: Vec<(&str, Change)> = vec![
        ("end before start", Box::new(|d| d.ends_at = d.starts_at)),
        ("empty name", Box::new(|d| d.name = "  ".into())),
        ("long name", Box::new(|d| d.name = "x".repeat(201))),
        ("empty venue", Box::new(|d| d.venue = String::new())),
        (
            "long description",
            Box::new(|d| d.description = "x".repeat(10_001)),
        ),
        (
            "too many images",
            Box::new(|d| d.images = vec!["i".into(); 21]),
        ),
        (
            "image with spaces",
            Box::new(|d| d.images = vec!["a b".into()]),
        ),
        (
            "control characters",
            Box::new(|d| d.name = "a\u{7}b".into()),
        ),
    ];
    for (why, change) in bad {
        let mut d = details_input();
        change(&mut d);
        let r = on(vec![])
            .when(cmd(
                organizer(),
                "k",
                t(0),
                InventoryCommand::CreateEvent {
                    event_id: EVENT,
                    details: d,
                },
            ))
            .rejected("INVALID_INPUT");
        assert!(!r.to_string().is_empty(), "{why}");
    }
}

#[test]
fn commands_on_a_missing_event_are_not_found() {
    on(vec![])
        .when(cmd(organizer(), "k", t(0), InventoryCommand::Publish))
        .rejected("NOT_FOUND");
}

#[test]
fn details_are_patched_and_stored_whole() {
    let mut expected = details();
    expected.name = "Rust Fest 2030".into();
    on(vec![created()])
        .when(cmd(
            organizer(),
            "k",
            t(0),
            InventoryCommand::UpdateDetails {
                changes: DetailsPatch {
                    name: Some("  Rust Fest 2030 ".into()),
                    ..Default::default()
                },
            },
        ))
        .then(vec![InventoryEvent::DetailsUpdated(DetailsUpdated {
            details: expected,
        })]);
}

#[test]
fn an_empty_patch_or_a_patch_ending_before_the_start_is_invalid() {
    on(vec![created()])
        .when(cmd(
            organizer(),
            "k",
            t(0),
            InventoryCommand::UpdateDetails {
                changes: DetailsPatch::default(),
            },
        ))
        .rejected("INVALID_INPUT");
    let r = on(vec![created()])
        .when(cmd(
            organizer(),
            "k",
            t(0),
            InventoryCommand::UpdateDetails {
                changes: DetailsPatch {
                    ends_at: Some(details().starts_at),
                    ..Default::default()
                },
            },
        ))
        .rejected("INVALID_INPUT");
    assert!(r.to_string().contains("end after it starts"), "{r}");
}

#[test]
fn only_the_organizer_or_an_admin_runs_organizer_commands() {
    let patch = || InventoryCommand::UpdateDetails {
        changes: DetailsPatch {
            venue: Some("Hall 2".into()),
            ..Default::default()
        },
    };
    on(vec![created()])
        .when(cmd(other_organizer(), "k", t(0), patch()))
        .rejected("FORBIDDEN");
    on(vec![created()])
        .when(cmd(customer(1), "k", t(0), patch()))
        .rejected("FORBIDDEN");
    on(vec![created()])
        .when(cmd(Actor::System, "k", t(0), patch()))
        .rejected("FORBIDDEN");
    on(vec![created()])
        .when(cmd(admin(), "k", t(0), patch()))
        .accepted();
}

#[test]
fn a_cancelled_event_cannot_change() {
    let events = vec![
        created(),
        InventoryEvent::EventCancelled(EventCancelled {
            reason: "rain".into(),
            at: t(0),
        }),
    ];
    on(events)
        .when(cmd(
            organizer(),
            "k",
            t(0),
            InventoryCommand::AddTier {
                tier_id: GA,
                name: "Standard".into(),
                price_minor: 100,
                currency: "EUR".into(),
                kind: TierKindInput::General { capacity: 10 },
            },
        ))
        .rejected("EVENT_CANCELLED");
}

// ---------------------------------------------------------------- window, limit, publish

#[test]
fn a_sales_window_must_close_after_it_opens() {
    on(vec![created()])
        .when(cmd(
            organizer(),
            "k",
            t(0),
            InventoryCommand::SetSalesWindow {
                opens_at: t(10),
                closes_at: t(20),
            },
        ))
        .then(vec![InventoryEvent::SalesWindowSet(SalesWindowSet {
            opens_at: t(10),
            closes_at: t(20),
        })]);
    on(vec![created()])
        .when(cmd(
            organizer(),
            "k",
            t(0),
            InventoryCommand::SetSalesWindow {
                opens_at: t(10),
                closes_at: t(10),
            },
        ))
        .rejected("INVALID_INPUT");
}

#[test]
fn a_per_user_limit_is_positive_and_bounded() {
    on(vec![created()])
        .when(cmd(
            organizer(),
            "k",
            t(0),
            InventoryCommand::SetPerUserLimit { limit: Some(4) },
        ))
        .then(vec![InventoryEvent::PerUserLimitSet(PerUserLimitSet {
            limit: Some(4),
        })]);
    on(vec![created()])
        .when(cmd(
            organizer(),
            "k",
            t(0),
            InventoryCommand::SetPerUserLimit { limit: None },
        ))
        .then(vec![InventoryEvent::PerUserLimitSet(PerUserLimitSet {
            limit: None,
        })]);
    for bad in [0, -1, 10_001, i64::MIN, i64::MAX] {
        on(vec![created()])
            .when(cmd(
                organizer(),
                "k",
                t(0),
                InventoryCommand::SetPerUserLimit { limit: Some(bad) },
            ))
            .rejected("INVALID_INPUT");
    }
}

#[test]
fn publishing_needs_tickets_and_happens_once() {
    on(vec![created()])
        .when(cmd(organizer(), "k", t(0), InventoryCommand::Publish))
        .rejected("INVALID_STATE");
    let (_, state) = on(vec![created(), ga_tier(10)])
        .when(cmd(organizer(), "k", t(5), InventoryCommand::Publish))
        .then(vec![InventoryEvent::EventPublished(EventPublished {
            at: t(5),
        })]);
    assert_eq!(state.status(), Some(EventStatus::Published));
    on(on_sale(10))
        .when(cmd(organizer(), "k", t(0), InventoryCommand::Publish))
        .rejected("INVALID_STATE");
}

// ---------------------------------------------------------------- tiers and seats

fn add_tier(capacity: i64, price: i64, currency: &str) -> InventoryCommand {
    InventoryCommand::AddTier {
        tier_id: GA,
        name: "Standard".into(),
        price_minor: price,
        currency: currency.into(),
        kind: TierKindInput::General { capacity },
    }
}

#[test]
fn a_general_tier_is_added_with_a_price_and_capacity() {
    on(vec![created()])
        .when(cmd(organizer(), "k", t(0), add_tier(100, 5000, "eur")))
        .then(vec![ga_tier(100)]);
}

#[test]
fn bad_tiers_are_refused() {
    on(vec![created(), ga_tier(1)])
        .when(cmd(organizer(), "k", t(0), add_tier(100, 5000, "EUR")))
        .rejected("ALREADY_EXISTS");
    for (capacity, price, currency) in [
        (0, 5000, "EUR"),
        (-5, 5000, "EUR"),
        (1_000_001, 5000, "EUR"),
        (10, -1, "EUR"),
        (10, 1_000_000_001, "EUR"),
        (10, 5000, "EURO"),
        (10, 5000, "E1R"),
        (10, 5000, ""),
    ] {
        on(vec![created()])
            .when(cmd(
                organizer(),
                "k",
                t(0),
                add_tier(capacity, price, currency),
            ))
            .rejected("INVALID_INPUT");
    }
}

#[test]
fn tiers_are_renamed_and_repriced() {
    on(vec![created(), ga_tier(10)])
        .when(cmd(
            organizer(),
            "k",
            t(0),
            InventoryCommand::RenameTier {
                tier_id: GA,
                name: "Early bird".into(),
            },
        ))
        .then(vec![InventoryEvent::TierRenamed(TierRenamed {
            tier_id: GA,
            name: "Early bird".into(),
        })]);
    on(vec![created(), ga_tier(10)])
        .when(cmd(
            organizer(),
            "k",
            t(0),
            InventoryCommand::RepriceTier {
                tier_id: GA,
                price_minor: 4500,
                currency: "EUR".into(),
            },
        ))
        .then(vec![InventoryEvent::TierRepriced(TierRepriced {
            tier_id: GA,
            price: eur(4500),
        })]);
    on(vec![created()])
        .when(cmd(
            organizer(),
            "k",
            t(0),
            InventoryCommand::RenameTier {
                tier_id: GA,
                name: "x".into(),
            },
        ))
        .rejected("INVALID_INPUT");
}

#[test]
fn a_tier_is_never_resized_below_sold_plus_held() {
    let events = plus(
        on_sale(10),
        [
            held(1, buyer(1), 3, t(10)),
            held(2, buyer(2), 2, t(10)),
            confirmed(2, buyer(2), 10_000, issued(1, 2, &[])),
        ],
    );
    let r = on(events.clone())
        .when(cmd(
            organizer(),
            "k",
            t(1),
            InventoryCommand::ResizeTier {
                tier_id: GA,
                capacity: 4,
            },
        ))
        .rejected("CAPACITY_TOO_SMALL");
    assert!(
        r.to_string().contains("5 ticket(s) are sold or held"),
        "{r}"
    );
    let (_, state) = on(events)
        .when(cmd(
            organizer(),
            "k",
            t(1),
            InventoryCommand::ResizeTier {
                tier_id: GA,
                capacity: 5,
            },
        ))
        .then(vec![InventoryEvent::TierResized(TierResized {
            tier_id: GA,
            capacity: 5,
        })]);
    assert_eq!(state.tier(GA).unwrap().available, 0);
}

#[test]
fn a_seated_tier_or_a_negative_size_cannot_be_resized() {
    on(on_sale(10))
        .when(cmd(
            organizer(),
            "k",
            t(1),
            InventoryCommand::ResizeTier {
                tier_id: SEATED,
                capacity: 10,
            },
        ))
        .rejected("INVALID_INPUT");
    on(on_sale(10))
        .when(cmd(
            organizer(),
            "k",
            t(1),
            InventoryCommand::ResizeTier {
                tier_id: GA,
                capacity: -1,
            },
        ))
        .rejected("INVALID_INPUT");
}

fn add_seats(ids: &[&str], tier: TierId) -> InventoryCommand {
    InventoryCommand::AddSeats {
        seats: ids
            .iter()
            .map(|s| SeatInput {
                seat: s.to_string(),
                tier_id: tier,
            })
            .collect(),
    }
}

#[test]
fn seats_are_added_to_a_seated_tier_and_grow_it() {
    let (_, state) = on(vec![created(), seated_tier()])
        .when(cmd(
            organizer(),
            "k",
            t(0),
            add_seats(&["a-1", "A-2"], SEATED),
        ))
        .then(vec![seats_added(&["A-1", "A-2"])]);
    assert_eq!(state.tier(SEATED).unwrap().capacity, 2);
    assert_eq!(
        state.seat(&seat("A-1")).unwrap().state,
        SeatState::Available
    );
}

#[test]
fn bad_seat_lists_are_refused() {
    let base = vec![created(), ga_tier(5), seated_tier(), seats_added(&["A-1"])];
    let cases: Vec<(InventoryCommand, &str)> = vec![
        (add_seats(&[], SEATED), "INVALID_INPUT"),
        (add_seats(&["B-1", "b-1"], SEATED), "INVALID_INPUT"),
        (add_seats(&["A-1"], SEATED), "ALREADY_EXISTS"),
        (add_seats(&["B-1"], GA), "INVALID_INPUT"),
        (add_seats(&["B 1"], SEATED), "INVALID_INPUT"),
        (
            add_seats(&["B-1"], TierId(uuid::Uuid::from_u128(9))),
            "INVALID_INPUT",
        ),
    ];
    for (command, code) in cases {
        on(base.clone())
            .when(cmd(organizer(), "k", t(0), command))
            .rejected(code);
    }
}

// ---------------------------------------------------------------- holds

#[test]
fn a_customer_holds_general_tickets() {
    let (outcome, state) = on(on_sale(10))
        .when(cmd(customer(1), "k", t(1), hold_ga(1, 3, t(11))))
        .then(vec![InventoryEvent::HoldPlaced(HoldPlaced {
            order_id: order(1),
            user_id: buyer(1),
            tier_id: GA,
            quantity: 3,
            seats: vec![],
            total: eur(15_000),
            placed_at: t(1),
            expires_at: t(11),
            command: None,
        })]);
    assert_eq!(
        outcome,
        InventoryOutcome::Held {
            order_id: order(1),
            expires_at: t(11),
            total: eur(15_000),
        }
    );
    let tier = state.tier(GA).unwrap();
    assert_eq!((tier.held, tier.sold, tier.available), (3, 0, 7));
    assert_eq!(
        state.live_holds().collect::<Vec<_>>(),
        vec![(order(1), t(11))]
    );
    assert_eq!(state.tickets_of_user(buyer(1)), 3);
}

#[test]
fn a_customer_holds_named_seats() {
    let (_, state) = on(on_sale(10))
        .when(cmd(
            customer(1),
            "k",
            t(1),
            hold_seats(1, &["a-2", "A-3"], t(11)),
        ))
        .then(vec![InventoryEvent::HoldPlaced(HoldPlaced {
            order_id: order(1),
            user_id: buyer(1),
            tier_id: SEATED,
            quantity: 2,
            seats: vec![seat("A-2"), seat("A-3")],
            total: eur(24_000),
            placed_at: t(1),
            expires_at: t(11),
            command: None,
        })]);
    assert_eq!(
        state.seat(&seat("A-2")).unwrap().state,
        SeatState::Held { order_id: order(1) }
    );
    assert_eq!(state.tier(SEATED).unwrap().available, 2);
}

#[test]
fn nothing_sells_before_publication_or_outside_the_window() {
    on(vec![created(), ga_tier(10)])
        .when(cmd(customer(1), "k", t(1), hold_ga(1, 1, t(11))))
        .rejected("NOT_ON_SALE");
    let window = InventoryEvent::SalesWindowSet(SalesWindowSet {
        opens_at: t(60),
        closes_at: t(120),
    });
    let events = plus(on_sale(10), [window]);
    on(events.clone())
        .when(cmd(customer(1), "k", t(59), hold_ga(1, 1, t(69))))
        .rejected("NOT_ON_SALE");
    on(events.clone())
        .when(cmd(customer(1), "k", t(60), hold_ga(1, 1, t(70))))
        .accepted();
    on(events)
        .when(cmd(customer(1), "k", t(120), hold_ga(1, 1, t(130))))
        .rejected("NOT_ON_SALE");
    let after_end = details().ends_at + chrono::Duration::minutes(1);
    on(on_sale(10))
        .when(cmd(
            customer(1),
            "k",
            after_end,
            hold_ga(1, 1, after_end + chrono::Duration::minutes(5)),
        ))
        .rejected("NOT_ON_SALE");
}

#[test]
fn nothing_sells_after_cancellation() {
    let events = plus(
        on_sale(10),
        [InventoryEvent::EventCancelled(EventCancelled {
            reason: "storm".into(),
            at: t(0),
        })],
    );
    on(events)
        .when(cmd(customer(1), "k", t(1), hold_ga(1, 1, t(11))))
        .rejected("EVENT_CANCELLED");
}

#[test]
fn a_tier_sells_exactly_its_capacity() {
    let events = plus(on_sale(5), [held(1, buyer(1), 3, t(10))]);
    on(events.clone())
        .when(cmd(customer(2), "k", t(1), hold_ga(2, 2, t(11))))
        .accepted();
    let r = on(events)
        .when(cmd(customer(2), "k", t(1), hold_ga(2, 3, t(11))))
        .rejected("SOLD_OUT");
    assert_eq!(
        r,
        Rejection::SoldOut {
            tier: "Standard".into(),
            requested: 3,
            available: 2,
        }
    );
}

#[test]
fn a_seat_is_in_at_most_one_hold_or_ticket() {
    let held_events = plus(on_sale(5), [held_seats(1, buyer(1), &["A-1"], t(10))]);
    let r = on(held_events.clone())
        .when(cmd(
            customer(2),
            "k",
            t(1),
            hold_seats(2, &["A-2", "a-1"], t(11)),
        ))
        .rejected("SEAT_TAKEN");
    assert!(r.to_string().contains("A-1"), "{r}");
    let sold = plus(
        held_events,
        [confirmed(1, buyer(1), 12_000, issued(1, 1, &["A-1"]))],
    );
    on(sold)
        .when(cmd(customer(2), "k", t(2), hold_seats(2, &["A-1"], t(12))))
        .rejected("SEAT_TAKEN");
}

#[test]
fn bad_hold_requests_are_invalid_input() {
    let other = TierId(uuid::Uuid::from_u128(0xFF));
    let cases: Vec<(InventoryCommand, &str)> = vec![
        (hold_ga(1, 0, t(11)), "at least 1"),
        (hold_ga(1, -3, t(11)), "at least 1"),
        (hold_ga(1, 101, t(11)), "at most 100"),
        (hold_ga(1, i64::MAX, t(11)), "at most 100"),
        (hold_seats(1, &[], t(11)), "empty"),
        (hold_seats(1, &["A-1", "a-1"], t(11)), "twice"),
        (hold_seats(1, &["Z-9"], t(11)), "no seat Z-9"),
        (hold_seats(1, &["bad seat"], t(11)), "seat id"),
        (hold_ga(1, 1, t(1)), "expire after now"),
        (hold_ga(1, 1, t(0)), "expire after now"),
        (hold_ga(1, 1, t(60 * 25)), "at most"),
        (
            InventoryCommand::PlaceHold(HoldRequest {
                order_id: order(1),
                tier_id: SEATED,
                selection: Selection::Quantity { quantity: 1 },
                expires_at: t(11),
            }),
            "named seats",
        ),
        (
            InventoryCommand::PlaceHold(HoldRequest {
                order_id: order(1),
                tier_id: GA,
                selection: Selection::Seats {
                    seats: vec!["A-1".into()],
                },
                expires_at: t(11),
            }),
            "no seat map",
        ),
        (
            InventoryCommand::PlaceHold(HoldRequest {
                order_id: order(1),
                tier_id: other,
                selection: Selection::Quantity { quantity: 1 },
                expires_at: t(11),
            }),
            "no tier",
        ),
    ];
    for (command, message) in cases {
        let r = on(on_sale(10))
            .when(cmd(customer(1), "k", t(1), command.clone()))
            .rejected("INVALID_INPUT");
        assert!(r.to_string().contains(message), "{command:?}: {r}");
    }
}

#[test]
fn a_seat_of_another_tier_is_invalid() {
    let mut events = on_sale(10);
    events.insert(
        3,
        InventoryEvent::TierAdded(TierAdded {
            tier_id: TierId(uuid::Uuid::from_u128(0x73)),
            name: "Balcony".into(),
            price: eur(1),
            capacity: 0,
            seated: true,
        }),
    );
    events.insert(
        4,
        InventoryEvent::SeatsAdded(SeatsAdded {
            seats: vec![SeatAssignment {
                seat: seat("B-1"),
                tier_id: TierId(uuid::Uuid::from_u128(0x73)),
            }],
        }),
    );
    let r = on(events)
        .when(cmd(
            customer(1),
            "k",
            t(1),
            hold_seats(1, &["A-1", "B-1"], t(11)),
        ))
        .rejected("INVALID_INPUT");
    assert!(r.to_string().contains("not in tier VIP"), "{r}");
}

#[test]
fn only_a_signed_in_user_holds_and_order_ids_are_unique() {
    on(on_sale(10))
        .when(cmd(Actor::System, "k", t(1), hold_ga(1, 1, t(11))))
        .rejected("FORBIDDEN");
    on(on_sale(10))
        .when(cmd(Actor::Anonymous, "k", t(1), hold_ga(1, 1, t(11))))
        .rejected("FORBIDDEN");
    on(plus(on_sale(10), [held(1, buyer(1), 1, t(10))]))
        .when(cmd(customer(2), "k", t(1), hold_ga(1, 1, t(11))))
        .rejected("ALREADY_EXISTS");
}

#[test]
fn the_per_user_limit_counts_live_holds_and_valid_tickets() {
    let events = plus(
        on_sale(20),
        [
            InventoryEvent::PerUserLimitSet(PerUserLimitSet { limit: Some(4) }),
            held(1, buyer(1), 2, t(10)),
            held(2, buyer(1), 1, t(10)),
            confirmed(2, buyer(1), 5000, issued(1, 1, &[])),
        ],
    );
    let r = on(events.clone())
        .when(cmd(customer(1), "k", t(1), hold_ga(3, 2, t(11))))
        .rejected("LIMIT_EXCEEDED");
    assert_eq!(
        r,
        Rejection::LimitExceeded {
            limit: 4,
            current: 3,
            requested: 2,
        }
    );
    on(events.clone())
        .when(cmd(customer(1), "k", t(1), hold_ga(3, 1, t(11))))
        .accepted();
    // Another user has their own allowance.
    on(events.clone())
        .when(cmd(customer(2), "k", t(1), hold_ga(3, 4, t(11))))
        .accepted();
    // A released hold no longer counts.
    let released = plus(
        events,
        [InventoryEvent::HoldReleased(HoldReleased {
            order_id: order(1),
            at: t(1),
        })],
    );
    on(released)
        .when(cmd(customer(1), "k", t(1), hold_ga(3, 3, t(11))))
        .accepted();
}

// ---------------------------------------------------------------- release and expiry

#[test]
fn the_buyer_releases_a_hold_and_its_tickets_return() {
    let events = plus(on_sale(10), [held_seats(1, buyer(1), &["A-1"], t(10))]);
    let (outcome, state) = on(events)
        .when(cmd(
            customer(1),
            "k",
            t(2),
            InventoryCommand::ReleaseHold { order_id: order(1) },
        ))
        .then(vec![InventoryEvent::HoldReleased(HoldReleased {
            order_id: order(1),
            at: t(2),
        })]);
    assert_eq!(outcome, InventoryOutcome::Released { order_id: order(1) });
    assert_eq!(
        state.seat(&seat("A-1")).unwrap().state,
        SeatState::Available
    );
    assert_eq!(state.order(order(1)).unwrap().status, OrderStatus::Released);
    assert_eq!(state.live_hold_count(), 0);
}

#[test]
fn only_the_buyer_the_organizer_or_an_admin_releases() {
    let events = plus(on_sale(10), [held(1, buyer(1), 1, t(10))]);
    let release = || InventoryCommand::ReleaseHold { order_id: order(1) };
    on(events.clone())
        .when(cmd(customer(2), "k", t(2), release()))
        .rejected("FORBIDDEN");
    on(events.clone())
        .when(cmd(organizer(), "k", t(2), release()))
        .accepted();
    on(events)
        .when(cmd(admin(), "k", t(2), release()))
        .accepted();
}

#[test]
fn releasing_what_is_not_a_live_hold_is_refused() {
    let base = plus(on_sale(10), [held(1, buyer(1), 1, t(10))]);
    let release = || InventoryCommand::ReleaseHold { order_id: order(1) };
    on(plus(
        base.clone(),
        [confirmed(1, buyer(1), 5000, issued(1, 1, &[]))],
    ))
    .when(cmd(customer(1), "k", t(2), release()))
    .rejected("INVALID_STATE");
    on(plus(
        base.clone(),
        [InventoryEvent::HoldExpired(HoldExpired {
            order_id: order(1),
            at: t(10),
        })],
    ))
    .when(cmd(customer(1), "k", t(11), release()))
    .rejected("HOLD_EXPIRED");
    on(on_sale(10))
        .when(cmd(customer(1), "k", t(2), release()))
        .rejected("NOT_FOUND");
}

#[test]
fn the_clock_expires_a_hold_when_its_time_has_come_and_not_before() {
    let events = plus(on_sale(10), [held(1, buyer(1), 2, t(10))]);
    let expire = || InventoryCommand::ExpireHold { order_id: order(1) };
    let r = on(events.clone())
        .when(cmd(Actor::System, "k", t(9), expire()))
        .rejected("HOLD_NOT_EXPIRED");
    assert!(r.to_string().contains("does not expire until"), "{r}");
    let (_, state) = on(events.clone())
        .when(cmd(Actor::System, "k", t(10), expire()))
        .then(vec![InventoryEvent::HoldExpired(HoldExpired {
            order_id: order(1),
            at: t(10),
        })]);
    assert_eq!(state.tier(GA).unwrap().available, 10);
    on(events)
        .when(cmd(customer(1), "k", t(10), expire()))
        .rejected("FORBIDDEN");
    on(plus(
        on_sale(10),
        [
            held(1, buyer(1), 2, t(10)),
            confirmed(1, buyer(1), 10_000, issued(1, 2, &[])),
        ],
    ))
    .when(cmd(Actor::System, "k", t(10), expire()))
    .rejected("INVALID_STATE");
}

// ---------------------------------------------------------------- payment

fn confirm(n: u128, amount: i64, first_ticket: u128, count: u128) -> InventoryCommand {
    InventoryCommand::ConfirmPayment {
        order_id: order(n),
        payment: payment(n, amount, first_ticket, count),
    }
}

#[test]
fn a_payment_for_a_live_hold_issues_tickets_on_its_seats() {
    let events = plus(
        on_sale(10),
        [held_seats(1, buyer(1), &["A-1", "A-2"], t(10))],
    );
    let expected = InventoryEvent::OrderConfirmed(OrderConfirmed {
        order_id: order(1),
        user_id: buyer(1),
        payment_ref: "pay-1".into(),
        amount: eur(24_000),
        tickets: issued(1, 2, &["A-1", "A-2"]),
        at: t(5),
        command: None,
    });
    let (outcome, state) = on(events)
        .when(cmd(Actor::System, "pay-1", t(5), confirm(1, 24_000, 1, 2)))
        .then(vec![expected]);
    assert_eq!(
        outcome,
        InventoryOutcome::Confirmed {
            order_id: order(1),
            tickets: vec![ticket(1), ticket(2)],
        }
    );
    let tier = state.tier(SEATED).unwrap();
    assert_eq!((tier.sold, tier.held), (2, 0));
    assert_eq!(
        state.seat(&seat("A-1")).unwrap().state,
        SeatState::Sold { order_id: order(1) }
    );
    let t1 = state.ticket(ticket(1)).unwrap();
    assert_eq!(
        (t1.status, t1.seat.clone(), t1.user_id),
        (TicketStatus::Valid, Some(seat("A-1")), buyer(1))
    );
    assert_eq!(state.live_hold_count(), 0);
}

#[test]
fn a_payment_after_the_hold_lapsed_is_owed_back_and_never_buys_tickets() {
    let events = plus(on_sale(10), [held(1, buyer(1), 1, t(10))]);
    // Past its expiry but not yet expired by the clock: it expires now, the payment is owed back.
    let (outcome, state) = on(events.clone())
        .when(cmd(Actor::System, "pay-1", t(10), confirm(1, 5000, 1, 1)))
        .then(vec![
            InventoryEvent::HoldExpired(HoldExpired {
                order_id: order(1),
                at: t(10),
            }),
            InventoryEvent::PaymentRefundOwed(PaymentRefundOwed {
                order_id: order(1),
                user_id: buyer(1),
                payment_ref: "pay-1".into(),
                amount: eur(5000),
                reason: RefundReason::HoldExpired,
                at: t(10),
            }),
        ]);
    assert!(matches!(
        outcome,
        InventoryOutcome::RefundOwed {
            reason: RefundReason::HoldExpired,
            ..
        }
    ));
    assert_eq!(state.tickets().count(), 0);

    for (closing, reason) in [
        (
            InventoryEvent::HoldExpired(HoldExpired {
                order_id: order(1),
                at: t(10),
            }),
            RefundReason::HoldExpired,
        ),
        (
            InventoryEvent::HoldReleased(HoldReleased {
                order_id: order(1),
                at: t(3),
            }),
            RefundReason::HoldReleased,
        ),
        (
            InventoryEvent::OrderCancelled(OrderCancelled {
                order_id: order(1),
                user_id: buyer(1),
                refund: None,
                reason: RefundReason::CancelledByRequest,
                voided_tickets: vec![],
                at: t(3),
            }),
            RefundReason::OrderCancelled,
        ),
    ] {
        let (outcome, state) = on(plus(events.clone(), [closing]))
            .when(cmd(Actor::System, "pay-1", t(4), confirm(1, 5000, 1, 1)))
            .then(vec![InventoryEvent::PaymentRefundOwed(PaymentRefundOwed {
                order_id: order(1),
                user_id: buyer(1),
                payment_ref: "pay-1".into(),
                amount: eur(5000),
                reason,
                at: t(4),
            })]);
        assert_eq!(
            outcome,
            InventoryOutcome::RefundOwed {
                order_id: order(1),
                amount: eur(5000),
                reason,
            }
        );
        assert_eq!(state.tickets().count(), 0);
    }
}

#[test]
fn a_payment_of_the_wrong_amount_is_owed_back_and_the_hold_stays() {
    let events = plus(on_sale(10), [held(1, buyer(1), 1, t(10))]);
    let (_, state) = on(events)
        .when(cmd(Actor::System, "pay-1", t(4), confirm(1, 4999, 1, 1)))
        .then(vec![InventoryEvent::PaymentRefundOwed(PaymentRefundOwed {
            order_id: order(1),
            user_id: buyer(1),
            payment_ref: "pay-1".into(),
            amount: eur(4999),
            reason: RefundReason::AmountMismatch,
            at: t(4),
        })]);
    assert_eq!(state.order(order(1)).unwrap().status, OrderStatus::Held);
}

#[test]
fn a_repeated_payment_changes_nothing_and_a_second_payment_is_owed_back() {
    let events = plus(
        on_sale(10),
        [
            held(1, buyer(1), 1, t(10)),
            confirmed(1, buyer(1), 5000, issued(1, 1, &[])),
        ],
    );
    // The same payment under another key: no new facts, same answer.
    let (outcome, _) = on(events.clone())
        .when(cmd(
            Actor::System,
            "pay-1-again",
            t(4),
            confirm(1, 5000, 9, 1),
        ))
        .then(vec![]);
    assert_eq!(
        outcome,
        InventoryOutcome::Confirmed {
            order_id: order(1),
            tickets: vec![ticket(1)],
        }
    );
    let mut second = payment(1, 5000, 9, 1);
    second.payment_ref = "pay-other".into();
    let (outcome, _) = on(events)
        .when(cmd(
            Actor::System,
            "pay-2",
            t(4),
            InventoryCommand::ConfirmPayment {
                order_id: order(1),
                payment: second,
            },
        ))
        .accepted_outcome();
    assert!(matches!(
        outcome,
        InventoryOutcome::RefundOwed {
            reason: RefundReason::AlreadyPaid,
            ..
        }
    ));
}

trait AcceptedOutcome {
    fn accepted_outcome(self) -> (InventoryOutcome, Inventory);
}

impl AcceptedOutcome for domain::testing::When<Inventory> {
    fn accepted_outcome(self) -> (InventoryOutcome, Inventory) {
        let (_, outcome, state) = self.accepted();
        (outcome, state)
    }
}

#[test]
fn ticket_seeds_must_match_the_order() {
    let events = plus(
        on_sale(10),
        [
            held(1, buyer(1), 2, t(10)),
            held(2, buyer(2), 1, t(10)),
            confirmed(2, buyer(2), 5000, issued(50, 1, &[])),
        ],
    );
    let with = |tickets: Vec<TicketSeed>| InventoryCommand::ConfirmPayment {
        order_id: order(1),
        payment: PaymentInput {
            payment_ref: "pay-1".into(),
            amount_minor: 10_000,
            currency: "EUR".into(),
            tickets,
        },
    };
    let dup_id = vec![
        seeds(1, 1)[0].clone(),
        TicketSeed {
            ticket_id: ticket(1),
            secret: secret(2),
        },
    ];
    let dup_secret = vec![
        seeds(1, 1)[0].clone(),
        TicketSeed {
            ticket_id: ticket(2),
            secret: secret(1),
        },
    ];
    let short = vec![
        seeds(1, 1)[0].clone(),
        TicketSeed {
            ticket_id: ticket(2),
            secret: "short".into(),
        },
    ];
    // The second ticket's secret instead: lengths count characters, not bytes.
    let second = |secret: String| {
        vec![
            seeds(1, 1)[0].clone(),
            TicketSeed {
                ticket_id: ticket(2),
                secret,
            },
        ]
    };
    for (tickets, code) in [
        (seeds(1, 1), "INVALID_INPUT"),
        (seeds(1, 3), "INVALID_INPUT"),
        (vec![], "INVALID_INPUT"),
        (dup_id, "INVALID_INPUT"),
        (dup_secret, "INVALID_INPUT"),
        (short, "INVALID_INPUT"),
        (second("é".repeat(15)), "INVALID_INPUT"),
        (second("x".repeat(257)), "INVALID_INPUT"),
        (second(format!("{}\t", "x".repeat(20))), "INVALID_INPUT"),
        (second(format!("{} x", "x".repeat(20))), "INVALID_INPUT"),
        (second(format!("{}\u{a0}", "é".repeat(20))), "INVALID_INPUT"),
        (second(format!("{}\u{7f}", "x".repeat(20))), "INVALID_INPUT"),
        (seeds(50, 2), "ALREADY_EXISTS"),
    ] {
        on(events.clone())
            .when(cmd(Actor::System, "pay-1", t(4), with(tickets)))
            .rejected(code);
    }
    for fine in ["é".repeat(16), "x".repeat(256), "Ab0-_~!".repeat(3)] {
        on(events.clone())
            .when(cmd(Actor::System, "pay-1", t(4), with(second(fine))))
            .accepted();
    }
    let mut bad = payment(1, 10_000, 1, 2);
    bad.payment_ref = " ".into();
    on(events.clone())
        .when(cmd(
            Actor::System,
            "pay-1",
            t(4),
            InventoryCommand::ConfirmPayment {
                order_id: order(1),
                payment: bad,
            },
        ))
        .rejected("INVALID_INPUT");
    let mut negative = payment(1, -1, 1, 2);
    negative.currency = "EUR".into();
    on(events)
        .when(cmd(
            Actor::System,
            "pay-1",
            t(4),
            InventoryCommand::ConfirmPayment {
                order_id: order(1),
                payment: negative,
            },
        ))
        .rejected("INVALID_INPUT");
}

#[test]
fn only_the_platform_or_an_admin_confirms_payments() {
    let events = plus(on_sale(10), [held(1, buyer(1), 1, t(10))]);
    on(events.clone())
        .when(cmd(customer(1), "pay-1", t(4), confirm(1, 5000, 1, 1)))
        .rejected("FORBIDDEN");
    on(events.clone())
        .when(cmd(organizer(), "pay-1", t(4), confirm(1, 5000, 1, 1)))
        .rejected("FORBIDDEN");
    on(events)
        .when(cmd(admin(), "pay-1", t(4), confirm(1, 5000, 1, 1)))
        .accepted();
    on(on_sale(10))
        .when(cmd(Actor::System, "pay-1", t(4), confirm(1, 5000, 1, 1)))
        .rejected("NOT_FOUND");
}

#[test]
fn a_purchase_holds_and_pays_in_one_decision() {
    let purchase = |amount: i64, quantity: i64| InventoryCommand::Purchase {
        hold: HoldRequest {
            order_id: order(1),
            tier_id: GA,
            selection: Selection::Quantity { quantity },
            expires_at: t(11),
        },
        payment: payment(1, amount, 1, 2),
    };
    let (outcome, state) = on(on_sale(2))
        .when(cmd(customer(1), "k", t(1), purchase(10_000, 2)))
        .then(vec![
            InventoryEvent::HoldPlaced(HoldPlaced {
                order_id: order(1),
                user_id: buyer(1),
                tier_id: GA,
                quantity: 2,
                seats: vec![],
                total: eur(10_000),
                placed_at: t(1),
                expires_at: t(11),
                command: None,
            }),
            InventoryEvent::OrderConfirmed(OrderConfirmed {
                order_id: order(1),
                user_id: buyer(1),
                payment_ref: "pay-1".into(),
                amount: eur(10_000),
                tickets: issued(1, 2, &[]),
                at: t(1),
                command: None,
            }),
        ]);
    assert_eq!(
        outcome,
        InventoryOutcome::Confirmed {
            order_id: order(1),
            tickets: vec![ticket(1), ticket(2)],
        }
    );
    assert_eq!(state.tier(GA).unwrap().sold, 2);
    on(on_sale(2))
        .when(cmd(customer(1), "k", t(1), purchase(9_999, 2)))
        .rejected("INVALID_INPUT");
    on(on_sale(1))
        .when(cmd(customer(1), "k", t(1), purchase(10_000, 2)))
        .rejected("SOLD_OUT");
}

// ---------------------------------------------------------------- cancelling orders

#[test]
fn cancelling_a_hold_owes_nothing() {
    let events = plus(on_sale(10), [held(1, buyer(1), 2, t(10))]);
    let (outcome, state) = on(events)
        .when(cmd(
            customer(1),
            "k",
            t(2),
            InventoryCommand::CancelOrder { order_id: order(1) },
        ))
        .then(vec![InventoryEvent::OrderCancelled(OrderCancelled {
            order_id: order(1),
            user_id: buyer(1),
            refund: None,
            reason: RefundReason::CancelledByRequest,
            voided_tickets: vec![],
            at: t(2),
        })]);
    assert_eq!(
        outcome,
        InventoryOutcome::OrderCancelled {
            order_id: order(1),
            refund: None
        }
    );
    assert_eq!(state.tier(GA).unwrap().available, 10);
}

#[test]
fn cancelling_a_paid_order_owes_a_refund_and_voids_its_tickets() {
    let events = plus(
        on_sale(10),
        [
            held_seats(1, buyer(1), &["A-1", "A-2"], t(10)),
            confirmed(1, buyer(1), 24_000, issued(1, 2, &["A-1", "A-2"])),
        ],
    );
    let (outcome, state) = on(events)
        .when(cmd(
            customer(1),
            "k",
            t(3),
            InventoryCommand::CancelOrder { order_id: order(1) },
        ))
        .then(vec![InventoryEvent::OrderCancelled(OrderCancelled {
            order_id: order(1),
            user_id: buyer(1),
            refund: Some(eur(24_000)),
            reason: RefundReason::CancelledByRequest,
            voided_tickets: vec![ticket(1), ticket(2)],
            at: t(3),
        })]);
    assert_eq!(
        outcome,
        InventoryOutcome::OrderCancelled {
            order_id: order(1),
            refund: Some(eur(24_000)),
        }
    );
    assert_eq!(state.ticket(ticket(1)).unwrap().status, TicketStatus::Void);
    assert_eq!(
        state.seat(&seat("A-1")).unwrap().state,
        SeatState::Available
    );
    assert_eq!(state.tier(SEATED).unwrap().sold, 0);
    assert_eq!(state.tickets_of_user(buyer(1)), 0);
}

#[test]
fn orders_that_cannot_be_cancelled_are_refused() {
    let base = plus(on_sale(10), [held(1, buyer(1), 1, t(10))]);
    let cancel = || InventoryCommand::CancelOrder { order_id: order(1) };
    on(base.clone())
        .when(cmd(customer(2), "k", t(2), cancel()))
        .rejected("FORBIDDEN");
    on(plus(
        base.clone(),
        [InventoryEvent::HoldExpired(HoldExpired {
            order_id: order(1),
            at: t(10),
        })],
    ))
    .when(cmd(customer(1), "k", t(11), cancel()))
    .rejected("HOLD_EXPIRED");
    on(plus(
        base.clone(),
        [InventoryEvent::HoldReleased(HoldReleased {
            order_id: order(1),
            at: t(1),
        })],
    ))
    .when(cmd(customer(1), "k", t(2), cancel()))
    .rejected("INVALID_STATE");
    on(plus(
        base,
        [
            confirmed(1, buyer(1), 5000, issued(1, 1, &[])),
            InventoryEvent::TicketCheckedIn(TicketCheckedIn {
                ticket_id: ticket(1),
                order_id: order(1),
                at: t(2),
            }),
        ],
    ))
    .when(cmd(customer(1), "k", t(3), cancel()))
    .rejected("ALREADY_CHECKED_IN");
    on(on_sale(1))
        .when(cmd(customer(1), "k", t(3), cancel()))
        .rejected("NOT_FOUND");
}

// ---------------------------------------------------------------- cancelling the event

#[test]
fn cancelling_the_event_cancels_every_live_hold_and_refunds_every_paid_order() {
    let events = plus(
        on_sale(10),
        [
            held(1, buyer(1), 2, t(10)),
            held_seats(2, buyer(2), &["A-1"], t(10)),
            confirmed(2, buyer(2), 12_000, issued(1, 1, &["A-1"])),
            held(3, buyer(3), 1, t(10)),
            InventoryEvent::HoldReleased(HoldReleased {
                order_id: order(3),
                at: t(2),
            }),
        ],
    );
    let (outcome, state) = on(events)
        .when(cmd(
            organizer(),
            "k",
            t(5),
            InventoryCommand::CancelEvent {
                reason: "storm".into(),
            },
        ))
        .then(vec![
            InventoryEvent::EventCancelled(EventCancelled {
                reason: "storm".into(),
                at: t(5),
            }),
            InventoryEvent::OrderCancelled(OrderCancelled {
                order_id: order(1),
                user_id: buyer(1),
                refund: None,
                reason: RefundReason::EventCancelled,
                voided_tickets: vec![],
                at: t(5),
            }),
            InventoryEvent::OrderCancelled(OrderCancelled {
                order_id: order(2),
                user_id: buyer(2),
                refund: Some(eur(12_000)),
                reason: RefundReason::EventCancelled,
                voided_tickets: vec![ticket(1)],
                at: t(5),
            }),
        ]);
    assert_eq!(
        outcome,
        InventoryOutcome::EventCancelled {
            orders_cancelled: 2
        }
    );
    assert_eq!(state.status(), Some(EventStatus::Cancelled));
    assert_eq!(state.live_hold_count(), 0);
    assert!(state.tiers().all(|t| t.sold == 0 && t.held == 0));
    on(plus(
        on_sale(10),
        [InventoryEvent::EventCancelled(EventCancelled {
            reason: "x".into(),
            at: t(0),
        })],
    ))
    .when(cmd(
        organizer(),
        "k",
        t(5),
        InventoryCommand::CancelEvent {
            reason: "again".into(),
        },
    ))
    .rejected("EVENT_CANCELLED");
    on(on_sale(10))
        .when(cmd(
            organizer(),
            "k",
            t(5),
            InventoryCommand::CancelEvent { reason: " ".into() },
        ))
        .rejected("INVALID_INPUT");
    on(on_sale(10))
        .when(cmd(
            customer(1),
            "k",
            t(5),
            InventoryCommand::CancelEvent { reason: "x".into() },
        ))
        .rejected("FORBIDDEN");
}

/// An event with more live orders than one step holds is cancelled a step at a time: the
/// cancellation itself cancels the first step's orders, each `CancelRemainingOrders` the
/// next, and the last one leaves nothing live; then the command is refused.
#[test]
fn a_large_event_is_cancelled_a_step_at_a_time() {
    let orders = limits::CANCELLATION_STEP_ORDERS as u128 * 2 + 7;
    let mut events = on_sale(10_000);
    for n in 0..orders {
        events.push(held(n, buyer(n), 1, t(60)));
        if n % 3 == 0 {
            events.push(confirmed(n, buyer(n), 5000, issued(n, 1, &[])));
        }
    }
    let (cancelling, outcome, mut state) = on(events)
        .when(cmd(
            organizer(),
            "k",
            t(5),
            InventoryCommand::CancelEvent {
                reason: "storm".into(),
            },
        ))
        .accepted();
    assert_eq!(
        outcome,
        InventoryOutcome::EventCancelled {
            orders_cancelled: limits::CANCELLATION_STEP_ORDERS as u32
        }
    );
    assert!(matches!(cancelling[0], InventoryEvent::EventCancelled(_)));
    assert!(state.cancellation_pending());
    assert!(state.has_unpaid_refunds());
    let mut cancelled = limits::CANCELLATION_STEP_ORDERS;
    // While the cancellation is under way nothing sells, no ticket is checked in, and a
    // payment for a hold not cancelled yet is owed back.
    let last = order(orders - 1);
    let hold_left = state.order(last).expect("order");
    assert_eq!(hold_left.status, OrderStatus::Held);
    let paid = state
        .decide(&cmd(
            admin(),
            "pay",
            t(6),
            InventoryCommand::ConfirmPayment {
                order_id: last,
                payment: payment(orders - 1, 5000, 1_000_000, 1),
            },
        ))
        .expect("decided");
    assert!(matches!(
        paid.outcome,
        InventoryOutcome::RefundOwed {
            reason: RefundReason::EventCancelled,
            ..
        }
    ));
    let paid_ticket = ticket(orders - 1 - (orders - 1) % 3);
    let door = state.decide(&cmd(
        door(),
        "door",
        t(6),
        InventoryCommand::CheckIn {
            ticket_id: paid_ticket,
        },
    ));
    assert_eq!(
        door.expect_err("refused").code(),
        "EVENT_CANCELLED",
        "no ticket of a cancelled event admits anyone"
    );
    for step in 0.. {
        let decided = state.decide(&cmd(
            Actor::System,
            &format!("step-{step}"),
            t(6),
            InventoryCommand::CancelRemainingOrders,
        ));
        let Ok(decided) = decided else {
            assert_eq!(decided.expect_err("refused").code(), "INVALID_STATE");
            break;
        };
        let InventoryOutcome::EventCancelled { orders_cancelled } = decided.outcome else {
            panic!("{:?}", decided.outcome)
        };
        assert!(orders_cancelled as usize <= limits::CANCELLATION_STEP_ORDERS);
        cancelled += orders_cancelled as usize;
        for e in &decided.events {
            state.evolve(e);
        }
        state.check_invariants().expect("invariants hold");
    }
    assert_eq!(cancelled as u128, orders);
    assert!(!state.cancellation_pending());
    assert_eq!(state.live_hold_count(), 0);
    assert!(state.tiers().all(|t| t.sold == 0 && t.held == 0));
    assert_eq!(
        state
            .orders()
            .filter(|o| o.status == OrderStatus::Cancelled)
            .count() as u128,
        orders
    );
    // Only the platform runs the steps.
    on(plus(
        on_sale(10),
        [
            held(1, buyer(1), 1, t(60)),
            InventoryEvent::EventCancelled(EventCancelled {
                reason: "x".into(),
                at: t(0),
            }),
        ],
    ))
    .when(cmd(
        organizer(),
        "k",
        t(5),
        InventoryCommand::CancelRemainingOrders,
    ))
    .rejected("FORBIDDEN");
    on(on_sale(10))
        .when(cmd(
            Actor::System,
            "k",
            t(5),
            InventoryCommand::CancelRemainingOrders,
        ))
        .rejected("INVALID_STATE");
}

/// A step never voids more than its ticket budget, however large the orders are.
#[test]
fn a_cancellation_step_is_bounded_by_tickets_too() {
    let per_order = limits::MAX_TICKETS_PER_ORDER;
    let orders = u128::from(limits::CANCELLATION_STEP_TICKETS / per_order) + 3;
    let mut events = on_sale(1_000_000);
    for n in 0..orders {
        events.push(held(n, buyer(n), per_order, t(60)));
    }
    let (_, outcome, state) = on(events)
        .when(cmd(
            organizer(),
            "k",
            t(5),
            InventoryCommand::CancelEvent {
                reason: "storm".into(),
            },
        ))
        .accepted();
    assert_eq!(
        outcome,
        InventoryOutcome::EventCancelled {
            orders_cancelled: limits::CANCELLATION_STEP_TICKETS / per_order
        }
    );
    assert!(state.cancellation_pending());
}

#[test]
fn a_payment_after_the_event_was_cancelled_is_owed_back() {
    let events = plus(
        on_sale(10),
        [
            held(1, buyer(1), 1, t(10)),
            InventoryEvent::EventCancelled(EventCancelled {
                reason: "x".into(),
                at: t(1),
            }),
            InventoryEvent::OrderCancelled(OrderCancelled {
                order_id: order(1),
                user_id: buyer(1),
                refund: None,
                reason: RefundReason::EventCancelled,
                voided_tickets: vec![],
                at: t(1),
            }),
        ],
    );
    let (outcome, _) = on(events)
        .when(cmd(Actor::System, "pay-1", t(2), confirm(1, 5000, 1, 1)))
        .accepted_outcome();
    assert!(matches!(
        outcome,
        InventoryOutcome::RefundOwed {
            reason: RefundReason::EventCancelled,
            ..
        }
    ));
}

// ---------------------------------------------------------------- check-in

fn sold_one() -> Vec<InventoryEvent> {
    plus(
        on_sale(10),
        [
            held(1, buyer(1), 1, t(10)),
            confirmed(1, buyer(1), 5000, issued(1, 1, &[])),
        ],
    )
}

#[test]
fn door_staff_check_a_ticket_in_once() {
    let check_in = || InventoryCommand::CheckIn {
        ticket_id: ticket(1),
    };
    let (outcome, state) = on(sold_one())
        .when(cmd(door(), "k", t(100), check_in()))
        .then(vec![InventoryEvent::TicketCheckedIn(TicketCheckedIn {
            ticket_id: ticket(1),
            order_id: order(1),
            at: t(100),
        })]);
    assert_eq!(
        outcome,
        InventoryOutcome::CheckedIn {
            ticket_id: ticket(1),
            order_id: order(1)
        }
    );
    assert_eq!(
        state.ticket(ticket(1)).unwrap().status,
        TicketStatus::CheckedIn { at: t(100) }
    );
    let again = plus(
        sold_one(),
        [InventoryEvent::TicketCheckedIn(TicketCheckedIn {
            ticket_id: ticket(1),
            order_id: order(1),
            at: t(100),
        })],
    );
    let r = on(again)
        .when(cmd(door(), "k2", t(101), check_in()))
        .rejected("ALREADY_CHECKED_IN");
    assert!(r.to_string().contains("already checked in"), "{r}");
    on(sold_one())
        .when(cmd(organizer(), "k", t(100), check_in()))
        .accepted();
}

#[test]
fn void_unknown_and_unauthorised_check_ins_are_refused() {
    let check_in = |n| InventoryCommand::CheckIn {
        ticket_id: ticket(n),
    };
    let void = plus(
        sold_one(),
        [InventoryEvent::OrderCancelled(OrderCancelled {
            order_id: order(1),
            user_id: buyer(1),
            refund: Some(eur(5000)),
            reason: RefundReason::CancelledByRequest,
            voided_tickets: vec![ticket(1)],
            at: t(3),
        })],
    );
    on(void)
        .when(cmd(door(), "k", t(100), check_in(1)))
        .rejected("TICKET_VOID");
    on(sold_one())
        .when(cmd(door(), "k", t(100), check_in(2)))
        .rejected("NOT_FOUND");
    on(sold_one())
        .when(cmd(customer(1), "k", t(100), check_in(1)))
        .rejected("FORBIDDEN");
    on(sold_one())
        .when(cmd(other_organizer(), "k", t(100), check_in(1)))
        .rejected("FORBIDDEN");
}

/// Check-in is for this event's door staff: an operator the organizer did not assign (or
/// took off the event) is refused, as is a user assigned without the OPERATOR role.
#[test]
fn only_the_events_own_door_staff_check_in() {
    let check_in = InventoryCommand::CheckIn {
        ticket_id: ticket(1),
    };
    let stranger = Actor::user(UserId(uuid::Uuid::from_u128(0xD1)), [Role::Operator]);
    on(sold_one())
        .when(cmd(stranger.clone(), "k", t(100), check_in.clone()))
        .rejected("FORBIDDEN");
    let (_, _, assigned) = on(sold_one())
        .when(cmd(
            organizer(),
            "assign",
            t(50),
            InventoryCommand::AssignDoorStaff {
                user_id: UserId(uuid::Uuid::from_u128(0xD1)),
            },
        ))
        .accepted();
    assert!(
        assigned
            .door_staff()
            .contains(&UserId(uuid::Uuid::from_u128(0xD1)))
    );
    let history = plus(
        sold_one(),
        [InventoryEvent::DoorStaffAssigned(DoorStaffChanged {
            user_id: UserId(uuid::Uuid::from_u128(0xD1)),
            at: t(50),
        })],
    );
    on(history.clone())
        .when(cmd(stranger.clone(), "k", t(100), check_in.clone()))
        .accepted();
    // Assigned, but not door staff of the platform.
    let customer_assigned = Actor::user(UserId(uuid::Uuid::from_u128(0xD1)), [Role::Customer]);
    on(history.clone())
        .when(cmd(customer_assigned, "k", t(100), check_in.clone()))
        .rejected("FORBIDDEN");
    // Assigned twice, or by someone else.
    on(history.clone())
        .when(cmd(
            organizer(),
            "again",
            t(60),
            InventoryCommand::AssignDoorStaff {
                user_id: UserId(uuid::Uuid::from_u128(0xD1)),
            },
        ))
        .rejected("ALREADY_EXISTS");
    on(sold_one())
        .when(cmd(
            other_organizer(),
            "assign",
            t(50),
            InventoryCommand::AssignDoorStaff {
                user_id: UserId(uuid::Uuid::from_u128(0xD1)),
            },
        ))
        .rejected("FORBIDDEN");
    // Taken off the event: refused again.
    let (_, _, unassigned) = on(history)
        .when(cmd(
            organizer(),
            "off",
            t(70),
            InventoryCommand::UnassignDoorStaff {
                user_id: UserId(uuid::Uuid::from_u128(0xD1)),
            },
        ))
        .accepted();
    assert!(
        !unassigned
            .door_staff()
            .contains(&UserId(uuid::Uuid::from_u128(0xD1)))
    );
    on(sold_one())
        .when(cmd(
            organizer(),
            "off",
            t(70),
            InventoryCommand::UnassignDoorStaff {
                user_id: UserId(uuid::Uuid::from_u128(0xD1)),
            },
        ))
        .rejected("NOT_FOUND");
}

// ---------------------------------------------------------------- idempotency

#[test]
fn a_key_reused_for_a_different_command_is_refused() {
    let (events, _, _) = on(on_sale(10))
        .when(cmd(customer(1), "same", t(1), hold_ga(1, 1, t(11))))
        .accepted();
    let history = plus(on_sale(10), events);
    let r = on(history.clone())
        .when(cmd(customer(1), "same", t(1), hold_ga(2, 1, t(11))))
        .rejected("INVALID_INPUT");
    assert!(
        r.to_string()
            .contains("already used for a different command"),
        "{r}"
    );
    // Keys are scoped per user: another buyer's identical key is a new command.
    on(history)
        .when(cmd(customer(2), "same", t(1), hold_ga(2, 1, t(11))))
        .accepted();
}

#[test]
fn a_retry_answers_the_first_outcome_even_after_the_state_moved_on() {
    let (events, first, _) = on(on_sale(1))
        .when(cmd(customer(1), "buy", t(1), hold_ga(1, 1, t(11))))
        .accepted();
    // The tier is now sold out, but the retry still answers the hold it made.
    let state = domain::testing::given::<Inventory>(plus(on_sale(1), events))
        .state()
        .clone();
    let again = state
        .decide(&cmd(customer(1), "buy", t(2), hold_ga(1, 1, t(11))))
        .unwrap();
    assert!(again.events.is_empty());
    assert_eq!(again.outcome, first);
}

/// The answer to a command recognised as a retry: no events at all, not even a record.
fn recalled(history: &[InventoryEvent], command: Command<InventoryCommand>) -> InventoryOutcome {
    let state = Inventory::replay(history);
    let decision = state.decide(&command).expect("a retry is answered");
    assert!(decision.events.is_empty(), "{:?}", decision.events);
    decision.outcome
}

#[test]
fn a_hold_retried_later_is_the_same_request_whatever_its_expiry() {
    let (events, first, _) = on(on_sale(1))
        .when(cmd(customer(1), "buy", t(1), hold_ga(1, 1, t(11))))
        .accepted();
    let history = plus(on_sale(1), events);
    // The retry was stamped two minutes later: the first hold, with its first expiry.
    let outcome = recalled(
        &history,
        cmd(customer(1), "buy", t(3), hold_ga(1, 1, t(13))),
    );
    assert_eq!(outcome, first);
    assert!(matches!(outcome, InventoryOutcome::Held { expires_at, .. } if expires_at == t(11)));
    // Anything else changed is another command under a used key.
    on(history.clone())
        .when(cmd(customer(1), "buy", t(3), hold_ga(1, 2, t(13))))
        .rejected("INVALID_INPUT");
    on(history)
        .when(cmd(customer(1), "buy", t(3), hold_ga(2, 1, t(13))))
        .rejected("INVALID_INPUT");

    // The same for a purchase (hold and payment in one decision).
    let purchase = |expires| InventoryCommand::Purchase {
        hold: HoldRequest {
            order_id: order(1),
            tier_id: GA,
            selection: Selection::Quantity { quantity: 1 },
            expires_at: expires,
        },
        payment: payment(1, 5000, 1, 1),
    };
    let (events, first, _) = on(on_sale(1))
        .when(cmd(customer(1), "buy", t(1), purchase(t(11))))
        .accepted();
    let outcome = recalled(
        &plus(on_sale(1), events),
        cmd(customer(1), "buy", t(5), purchase(t(15))),
    );
    assert_eq!(outcome, first);
}

#[test]
fn a_hold_recorded_with_its_expiry_in_the_fingerprint_is_still_recognised() {
    // Streams written before expiries were left out of hold fingerprints.
    let body = hold_ga(1, 1, t(11));
    let meta = CommandMeta {
        idempotency_key: IdempotencyKey::parse("buy").unwrap(),
        actor: customer(1),
        now: t(1),
        correlation_id: uuid::Uuid::from_u128(7),
    };
    let history = plus(
        on_sale(1),
        [
            held(1, buyer(1), 1, t(11)),
            InventoryEvent::CommandAccepted(InventoryCommandAccepted {
                record: domain::idempotency::CommandRecord::new(&meta, &body),
                outcome: InventoryOutcome::Held {
                    order_id: order(1),
                    expires_at: t(11),
                    total: eur(5000),
                },
            }),
        ],
    );
    let outcome = recalled(
        &history,
        cmd(customer(1), "buy", t(4), hold_ga(1, 1, t(14))),
    );
    assert!(matches!(outcome, InventoryOutcome::Held { expires_at, .. } if expires_at == t(11)));
    on(history)
        .when(cmd(customer(1), "buy", t(4), hold_ga(1, 3, t(14))))
        .rejected("INVALID_INPUT");
}

#[test]
fn a_rejected_command_is_not_recorded_and_may_be_retried() {
    let not_yet = on(vec![created(), ga_tier(10)]).state().clone();
    let r = not_yet
        .decide(&cmd(customer(1), "k", t(1), hold_ga(1, 1, t(11))))
        .unwrap_err();
    assert_eq!(r.code(), "NOT_ON_SALE");
    on(on_sale(10))
        .when(cmd(customer(1), "k", t(1), hold_ga(1, 1, t(11))))
        .accepted();
}

#[test]
fn extreme_times_are_answered_not_panicked_on() {
    use chrono::{DateTime, Utc};
    let late = DateTime::<Utc>::MAX_UTC;
    let mut events = on_sale(10);
    events[0] = InventoryEvent::EventCreated(EventCreated {
        event_id: EVENT,
        organizer: ORGANIZER,
        details: EventDetails {
            ends_at: late,
            ..details()
        },
    });
    // A clock an hour before the end of time: the longest hold would end past it.
    let almost = late - chrono::Duration::hours(1);
    on(events.clone())
        .when(cmd(customer(1), "k", almost, hold_ga(1, 1, late)))
        .accepted();
    on(events.clone())
        .when(cmd(customer(1), "k", late, hold_ga(1, 1, late)))
        .rejected("INVALID_INPUT");
    let min = DateTime::<Utc>::MIN_UTC;
    on(events)
        .when(cmd(customer(1), "k", t(1), hold_ga(1, 1, min)))
        .rejected("INVALID_INPUT");
}
