//! Property tests of the projections without a store: random command sequences decided by
//! the domain, folded into the read models in random batches, with re-deliveries.

use chrono::{Duration, TimeZone, Utc};
use domain::inventory::*;
use domain::*;
use proptest::prelude::*;
use store::{Metadata, Position, RecordedEvent, StreamName};
use uuid::Uuid;

use crate::catalogue::{CatalogueModel, SeatStatus};
use crate::orders::OrdersModel;
use crate::runner::{Projected, ReadModel, Versioned};
use crate::sales::SalesModel;

#[derive(Clone, Debug)]
enum Op {
    Hold { user: u8, quantity: u8 },
    HoldSeats { user: u8, seats: Vec<u8> },
    Pay(u8),
    Release(u8),
    Expire(u8),
    Cancel(u8),
    CheckIn(u8),
    CancelEvent,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        6 => (0..6u8, 1..4u8).prop_map(|(user, quantity)| Op::Hold { user, quantity }),
        3 => (0..6u8, proptest::collection::vec(0..6u8, 1..3))
            .prop_map(|(user, seats)| Op::HoldSeats { user, seats }),
        4 => any::<u8>().prop_map(Op::Pay),
        2 => any::<u8>().prop_map(Op::Release),
        2 => any::<u8>().prop_map(Op::Expire),
        2 => any::<u8>().prop_map(Op::Cancel),
        2 => any::<u8>().prop_map(Op::CheckIn),
        1 => Just(Op::CancelEvent),
    ]
}

const EVENT: EventId = EventId(Uuid::from_u128(0xE1));
const GA: TierId = TierId(Uuid::from_u128(0x71));
const SEATED: TierId = TierId(Uuid::from_u128(0x72));

/// Decides `ops` (rejections are skipped, as the command side answers them) and returns
/// the stored form of every accepted event, with the final domain state.
fn history(ops: &[Op]) -> (Vec<RecordedEvent>, Inventory) {
    let now = Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap();
    let organizer = Actor::user(UserId(Uuid::from_u128(0xA1)), [Role::Organizer]);
    let mut state = Inventory::default();
    let mut recorded = Vec::new();
    let mut n = 0u128;
    let mut orders: Vec<OrderId> = Vec::new();
    let stream = StreamName::new(domain::ids::streams::inventory(EVENT)).unwrap();
    let mut run = |state: &mut Inventory, actor: Actor, at, body: InventoryCommand| {
        n += 1;
        let meta = CommandMeta {
            idempotency_key: IdempotencyKey::parse(&format!("k{n}")).unwrap(),
            actor,
            now: at,
            correlation_id: Uuid::from_u128(n),
        };
        let Ok(d) = state.decide(&Command::new(meta, body)) else {
            return;
        };
        for e in d.events {
            state.evolve(&e);
            let (t, v, json) = domain::codec::encode(&e);
            let version = recorded.len() as u64;
            recorded.push(RecordedEvent {
                id: Uuid::from_u128(version as u128 + 1),
                stream: stream.clone(),
                version,
                // Positions need not be contiguous.
                position: Position(version * 3 + 1),
                event_type: t.to_owned(),
                schema_version: v,
                data: json,
                metadata: Metadata {
                    correlation_id: Uuid::from_u128(n),
                    causation_id: None,
                    acting_user: None,
                    recorded_at: at,
                },
            });
        }
    };
    let setup = [
        InventoryCommand::CreateEvent {
            event_id: EVENT,
            details: DetailsInput {
                name: "Prop".into(),
                description: String::new(),
                venue: "Hall".into(),
                starts_at: now + Duration::days(30),
                ends_at: now + Duration::days(30) + Duration::hours(2),
                images: vec![],
            },
        },
        InventoryCommand::AddTier {
            tier_id: GA,
            name: "GA".into(),
            price_minor: 1000,
            currency: "EUR".into(),
            kind: TierKindInput::General { capacity: 12 },
        },
        InventoryCommand::AddTier {
            tier_id: SEATED,
            name: "Seats".into(),
            price_minor: 3000,
            currency: "EUR".into(),
            kind: TierKindInput::Seated,
        },
        InventoryCommand::AddSeats {
            seats: (0..6)
                .map(|i| SeatInput {
                    seat: format!("A-{i}"),
                    tier_id: SEATED,
                })
                .collect(),
        },
        InventoryCommand::Publish,
    ];
    for body in setup {
        run(&mut state, organizer.clone(), now, body);
    }
    let pick = |orders: &[OrderId], i: u8| -> Option<OrderId> {
        (!orders.is_empty()).then(|| orders[i as usize % orders.len()])
    };
    for (k, op) in ops.iter().enumerate() {
        let at = now + Duration::seconds(k as i64);
        let customer = |u: u8| {
            Actor::user(
                UserId(Uuid::from_u128(0xB0 + u128::from(u))),
                [Role::Customer],
            )
        };
        match op {
            Op::Hold { user, quantity } => {
                let id = OrderId(Uuid::from_u128(0x0D00 + k as u128));
                orders.push(id);
                run(
                    &mut state,
                    customer(*user),
                    at,
                    InventoryCommand::PlaceHold(HoldRequest {
                        order_id: id,
                        tier_id: GA,
                        selection: Selection::Quantity {
                            quantity: i64::from(*quantity),
                        },
                        expires_at: at + Duration::minutes(10),
                    }),
                );
            }
            Op::HoldSeats { user, seats } => {
                let id = OrderId(Uuid::from_u128(0x0D00 + k as u128));
                orders.push(id);
                run(
                    &mut state,
                    customer(*user),
                    at,
                    InventoryCommand::PlaceHold(HoldRequest {
                        order_id: id,
                        tier_id: SEATED,
                        selection: Selection::Seats {
                            seats: seats.iter().map(|s| format!("A-{s}")).collect(),
                        },
                        expires_at: at + Duration::minutes(10),
                    }),
                );
            }
            Op::Pay(i) => {
                let Some(id) = pick(&orders, *i) else {
                    continue;
                };
                let Some(view) = state.order(id) else {
                    continue;
                };
                let tickets = (0..view.quantity)
                    .map(|t| TicketSeed {
                        ticket_id: TicketId(Uuid::from_u128((k as u128) << 8 | u128::from(t))),
                        secret: format!("{:032x}", k * 31 + t as usize),
                    })
                    .collect();
                run(
                    &mut state,
                    Actor::System,
                    at,
                    InventoryCommand::ConfirmPayment {
                        order_id: id,
                        payment: PaymentInput {
                            payment_ref: format!("p{k}"),
                            amount_minor: view.total.amount_minor as i64,
                            currency: "EUR".into(),
                            tickets,
                        },
                    },
                );
            }
            Op::Release(i) => {
                let Some(id) = pick(&orders, *i) else {
                    continue;
                };
                let owner = state.order(id).map(|o| o.user_id);
                let Some(owner) = owner else { continue };
                run(
                    &mut state,
                    Actor::user(owner, [Role::Customer]),
                    at,
                    InventoryCommand::ReleaseHold { order_id: id },
                );
            }
            Op::Expire(i) => {
                let Some(id) = pick(&orders, *i) else {
                    continue;
                };
                run(
                    &mut state,
                    Actor::System,
                    at + Duration::minutes(11),
                    InventoryCommand::ExpireHold { order_id: id },
                );
            }
            Op::Cancel(i) => {
                let Some(id) = pick(&orders, *i) else {
                    continue;
                };
                run(
                    &mut state,
                    organizer.clone(),
                    at,
                    InventoryCommand::CancelOrder { order_id: id },
                );
            }
            Op::CheckIn(i) => {
                let tickets: Vec<_> = state.tickets().map(|t| t.ticket_id).collect();
                if tickets.is_empty() {
                    continue;
                }
                let door = Actor::user(UserId(Uuid::from_u128(0xD0)), [Role::Operator]);
                run(
                    &mut state,
                    door,
                    at,
                    InventoryCommand::CheckIn {
                        ticket_id: tickets[*i as usize % tickets.len()],
                    },
                );
            }
            Op::CancelEvent => run(
                &mut state,
                organizer.clone(),
                at,
                InventoryCommand::CancelEvent {
                    reason: "test".into(),
                },
            ),
        }
    }
    (recorded, state)
}

fn fold<M: ReadModel>(batches: &[&[RecordedEvent]]) -> serde_json::Value {
    let p = Projected::<M>::new(Versioned::default());
    for b in batches {
        p.apply_batch(b).expect("apply");
    }
    serde_json::to_value(&*p.guard()).expect("serialise")
}

/// Folds the whole history in one batch, and again in random batches where every batch is
/// delivered twice and some earlier events are delivered again: all must be equal.
fn check<M: ReadModel>(events: &[RecordedEvent], cuts: &[usize]) {
    let once = fold::<M>(&[events]);
    let mut batches: Vec<&[RecordedEvent]> = Vec::new();
    let mut start = 0;
    let mut cuts: Vec<usize> = cuts.iter().map(|c| c % (events.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(events.len());
    for end in cuts {
        if end < start {
            continue;
        }
        batches.push(&events[start..end]);
        batches.push(&events[start..end]);
        batches.push(&events[..end]);
        start = end;
    }
    assert_eq!(once, fold::<M>(&batches), "{}", M::NAME);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn models_are_idempotent_batch_independent_and_match_the_domain(
        ops in proptest::collection::vec(op(), 0..60),
        cuts in proptest::collection::vec(any::<usize>(), 0..6),
    ) {
        let (events, state) = history(&ops);
        check::<CatalogueModel>(&events, &cuts);
        check::<OrdersModel>(&events, &cuts);
        check::<SalesModel>(&events, &cuts);

        let catalogue = Projected::<CatalogueModel>::new(Versioned::default());
        catalogue.apply_batch(&events).unwrap();
        let view = catalogue.read(|m| m.event(EVENT)).unwrap();
        let tiers: Vec<_> = state.tiers().collect();
        prop_assert_eq!(view.tiers.len(), tiers.len());
        for (t, d) in view.tiers.iter().zip(&tiers) {
            prop_assert_eq!((t.capacity, t.sold, t.held, t.available), (d.capacity, d.sold, d.held, d.available));
        }
        let seats = catalogue.read(|m| m.seats(EVENT)).unwrap();
        for (s, d) in seats.iter().zip(state.seats()) {
            let expected = match d.state {
                SeatState::Available => SeatStatus::Available,
                SeatState::Held { .. } => SeatStatus::Held,
                SeatState::Sold { .. } => SeatStatus::Sold,
            };
            prop_assert_eq!(&s.seat, &d.seat);
            prop_assert_eq!(s.status, expected);
        }

        let orders = Projected::<OrdersModel>::new(Versioned::default());
        orders.apply_batch(&events).unwrap();
        for o in state.orders() {
            let found = orders.read(|m| m.order(o.order_id)).unwrap();
            prop_assert_eq!(found.status, o.status);
            let tickets: Vec<_> = found.tickets.iter().map(|t| (t.ticket_id, t.status)).collect();
            let expected: Vec<_> = o.tickets.iter().map(|t| (*t, state.ticket(*t).unwrap().status)).collect();
            prop_assert_eq!(tickets, expected);
        }
    }
}

#[test]
fn skipped_type_names_are_the_codecs_idempotency_records() {
    use domain::account::AccountEvent;
    use domain::codec::EventCodec;
    assert!(InventoryEvent::current_version(crate::decode::IDEMPOTENCY_RECORD).is_some());
    assert!(AccountEvent::current_version(crate::accounts::ACCOUNT_RECORD).is_some());
}
