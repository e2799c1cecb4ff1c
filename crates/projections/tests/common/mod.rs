//! A small command side for tests and benchmarks: decides commands with the domain, encodes
//! the events with the domain's codec and appends them to a real SQLite store, exactly as
//! the inventory actor does.
#![allow(dead_code)]

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Duration, TimeZone, Utc};
use domain::account::{Account, AccountCommand};
use domain::inventory::*;
use domain::*;
use store::sqlite::{SqliteOptions, SqliteStore};
use store::{EventStore, ExpectedVersion, Metadata, NewEvent, Position, StreamName};
use uuid::Uuid;

pub fn organizer_id() -> UserId {
    UserId(Uuid::from_u128(0xA1))
}

pub fn organizer() -> Actor {
    Actor::user(organizer_id(), [Role::Organizer])
}

pub fn buyer(n: u128) -> UserId {
    UserId(Uuid::from_u128(0xB000_0000 + n))
}

pub fn customer(n: u128) -> Actor {
    Actor::user(buyer(n), [Role::Customer])
}

/// A fixed base instant.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 12, 0, 0).unwrap()
}

/// Encodes domain events for a stream as the command side stores them.
pub fn encode<E: domain::codec::EventCodec>(
    events: &[E],
    actor: Option<UserId>,
    now: DateTime<Utc>,
) -> Vec<NewEvent> {
    let correlation_id = Uuid::now_v7();
    events
        .iter()
        .map(|e| {
            let (type_name, version, json) = domain::codec::encode(e);
            NewEvent::new(
                type_name,
                version,
                json,
                Metadata {
                    correlation_id,
                    causation_id: None,
                    acting_user: actor.map(|u| u.0),
                    recorded_at: now,
                },
            )
        })
        .collect()
}

/// Tier ids of an event made by [`Sim::create_event`].
#[derive(Clone, Copy, Debug)]
pub struct Tiers {
    pub ga: TierId,
    pub seated: TierId,
}

pub struct Sim {
    pub store: Arc<SqliteStore>,
    /// State and last version of each inventory stream.
    states: HashMap<EventId, (Inventory, Option<u64>)>,
    pub tiers: HashMap<EventId, Tiers>,
    /// The clock commands carry; tests move it.
    pub now: DateTime<Utc>,
    /// Source of unique keys and ids.
    n: u128,
}

pub fn open_store(dir: &Path) -> Arc<SqliteStore> {
    Arc::new(SqliteStore::open(dir, SqliteOptions::default()).expect("open store"))
}

impl Sim {
    pub fn new(store: Arc<SqliteStore>) -> Self {
        Self {
            store,
            states: HashMap::new(),
            tiers: HashMap::new(),
            now: t0(),
            n: 0,
        }
    }

    /// Starts this command side's ids at `from`, so several can share one store.
    pub fn with_ids_from(mut self, from: u128) -> Self {
        self.n = from;
        self
    }

    fn next(&mut self) -> u128 {
        self.n += 1;
        self.n
    }

    pub fn state(&self, event: EventId) -> &Inventory {
        &self.states[&event].0
    }

    /// Decides `body` and appends its events; the position of the last one (or `None`
    /// when the decision produced no events).
    pub async fn exec(
        &mut self,
        event: EventId,
        actor: Actor,
        body: InventoryCommand,
    ) -> Result<Option<Position>, Rejection> {
        let key = format!("k-{}", self.next());
        let meta = CommandMeta {
            idempotency_key: IdempotencyKey::parse(&key).unwrap(),
            actor: actor.clone(),
            now: self.now,
            correlation_id: Uuid::now_v7(),
        };
        let (state, version) = self.states.entry(event).or_default();
        let decision = state.decide(&Command::new(meta, body))?;
        if decision.events.is_empty() {
            return Ok(None);
        }
        let stream = StreamName::new(domain::ids::streams::inventory(event)).unwrap();
        let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        let result = self
            .store
            .append(
                &stream,
                expected,
                encode(&decision.events, actor.user_id(), self.now),
            )
            .await
            .expect("append");
        for e in &decision.events {
            state.evolve(e);
        }
        *version = Some(result.last_version);
        Ok(Some(result.last_position()))
    }

    /// A published event with a general tier of `ga` tickets and a seated tier with `seats`.
    pub async fn create_event(
        &mut self,
        name: &str,
        venue: &str,
        starts_in_days: i64,
        ga: i64,
        seats: &[&str],
    ) -> EventId {
        let event = EventId(Uuid::from_u128(0xE000_0000 + self.next()));
        let tiers = Tiers {
            ga: TierId(Uuid::from_u128(0x7100_0000 + self.next())),
            seated: TierId(Uuid::from_u128(0x7200_0000 + self.next())),
        };
        self.tiers.insert(event, tiers);
        let starts_at = self.now + Duration::days(starts_in_days);
        let org = organizer();
        self.exec(
            event,
            org.clone(),
            InventoryCommand::CreateEvent {
                event_id: event,
                details: DetailsInput {
                    name: name.into(),
                    description: format!("{name}, live"),
                    venue: venue.into(),
                    starts_at,
                    ends_at: starts_at + Duration::hours(3),
                    images: vec![],
                },
            },
        )
        .await
        .expect("create");
        self.exec(
            event,
            org.clone(),
            InventoryCommand::AddTier {
                tier_id: tiers.ga,
                name: "Standard".into(),
                price_minor: 5000,
                currency: "EUR".into(),
                kind: TierKindInput::General { capacity: ga },
            },
        )
        .await
        .expect("ga tier");
        if !seats.is_empty() {
            self.exec(
                event,
                org.clone(),
                InventoryCommand::AddTier {
                    tier_id: tiers.seated,
                    name: "VIP".into(),
                    price_minor: 12000,
                    currency: "EUR".into(),
                    kind: TierKindInput::Seated,
                },
            )
            .await
            .expect("seated tier");
            self.exec(
                event,
                org.clone(),
                InventoryCommand::AddSeats {
                    seats: seats
                        .iter()
                        .map(|s| SeatInput {
                            seat: (*s).into(),
                            tier_id: tiers.seated,
                        })
                        .collect(),
                },
            )
            .await
            .expect("seats");
        }
        self.exec(
            event,
            org.clone(),
            InventoryCommand::AssignDoorStaff {
                user_id: UserId(Uuid::from_u128(0xD0)),
            },
        )
        .await
        .expect("door staff");
        self.exec(event, org, InventoryCommand::Publish)
            .await
            .expect("publish");
        event
    }

    pub async fn hold(
        &mut self,
        event: EventId,
        buyer_n: u128,
        quantity: i64,
    ) -> Result<(OrderId, Option<Position>), Rejection> {
        let order = OrderId(Uuid::from_u128(0x0D00_0000 + self.next()));
        let tier = self.tiers[&event].ga;
        let p = self
            .exec(
                event,
                customer(buyer_n),
                InventoryCommand::PlaceHold(HoldRequest {
                    order_id: order,
                    tier_id: tier,
                    selection: Selection::Quantity { quantity },
                    expires_at: self.now + Duration::minutes(10),
                }),
            )
            .await?;
        Ok((order, p))
    }

    pub async fn hold_seats(
        &mut self,
        event: EventId,
        buyer_n: u128,
        seats: &[&str],
    ) -> Result<OrderId, Rejection> {
        let order = OrderId(Uuid::from_u128(0x0D00_0000 + self.next()));
        let tier = self.tiers[&event].seated;
        self.exec(
            event,
            customer(buyer_n),
            InventoryCommand::PlaceHold(HoldRequest {
                order_id: order,
                tier_id: tier,
                selection: Selection::Seats {
                    seats: seats.iter().map(|s| (*s).to_string()).collect(),
                },
                expires_at: self.now + Duration::minutes(10),
            }),
        )
        .await?;
        Ok(order)
    }

    pub async fn pay(
        &mut self,
        event: EventId,
        order: OrderId,
    ) -> Result<Option<Position>, Rejection> {
        let view = self.state(event).order(order).expect("order exists");
        let tickets = (0..view.quantity)
            .map(|_| {
                let n = self.next();
                TicketSeed {
                    ticket_id: TicketId(Uuid::from_u128(0x7700_0000 + n)),
                    secret: format!("secret-{n:032x}"),
                }
            })
            .collect();
        self.exec(
            event,
            Actor::System,
            InventoryCommand::ConfirmPayment {
                order_id: order,
                payment: PaymentInput {
                    payment_ref: format!("pay-{order}"),
                    amount_minor: view.total.amount_minor as i64,
                    currency: view.total.currency.as_str().into(),
                    tickets,
                },
            },
        )
        .await
    }

    pub async fn expire(
        &mut self,
        event: EventId,
        order: OrderId,
    ) -> Result<Option<Position>, Rejection> {
        let saved = self.now;
        self.now += Duration::minutes(11);
        let r = self
            .exec(
                event,
                Actor::System,
                InventoryCommand::ExpireHold { order_id: order },
            )
            .await;
        self.now = saved;
        r
    }

    pub async fn release(
        &mut self,
        event: EventId,
        buyer_n: u128,
        order: OrderId,
    ) -> Result<Option<Position>, Rejection> {
        self.exec(
            event,
            customer(buyer_n),
            InventoryCommand::ReleaseHold { order_id: order },
        )
        .await
    }

    pub async fn cancel_order(
        &mut self,
        event: EventId,
        order: OrderId,
    ) -> Result<Option<Position>, Rejection> {
        self.exec(
            event,
            organizer(),
            InventoryCommand::CancelOrder { order_id: order },
        )
        .await
    }

    pub async fn check_in(
        &mut self,
        event: EventId,
        ticket: TicketId,
    ) -> Result<Option<Position>, Rejection> {
        let door = Actor::user(UserId(Uuid::from_u128(0xD0)), [Role::Operator]);
        self.exec(event, door, InventoryCommand::CheckIn { ticket_id: ticket })
            .await
    }

    pub async fn cancel_event(&mut self, event: EventId) -> Result<Option<Position>, Rejection> {
        self.exec(
            event,
            organizer(),
            InventoryCommand::CancelEvent {
                reason: "weather".into(),
            },
        )
        .await
    }

    /// Registers an account (the email reservation stream is not needed by the read side).
    pub async fn register(&mut self, user: UserId, email: &str) -> Position {
        let meta = CommandMeta {
            idempotency_key: IdempotencyKey::parse(&format!("reg-{user}")).unwrap(),
            actor: Actor::System,
            now: self.now,
            correlation_id: Uuid::now_v7(),
        };
        let decision = Account::default()
            .decide(&Command::new(
                meta,
                AccountCommand::Register {
                    user_id: user,
                    email: email.into(),
                    display_name: "Someone".into(),
                    password_hash: "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into(),
                    roles: vec![],
                },
            ))
            .expect("register");
        let stream = StreamName::new(domain::ids::streams::user(user)).unwrap();
        self.store
            .append(
                &stream,
                ExpectedVersion::NoStream,
                encode(&decision.events, None, self.now),
            )
            .await
            .expect("append account")
            .last_position()
    }

    /// A mixed history: three events, general and seated sales, payments, expiries,
    /// releases, cancellations, check-ins and one cancelled event.
    pub async fn scenario(&mut self) -> Vec<EventId> {
        let a = self
            .create_event(
                "Rust Fest",
                "Hall 1",
                30,
                100,
                &["A-1", "A-2", "A-3", "A-4"],
            )
            .await;
        let b = self
            .create_event("Jazz Night", "Blue Room", 10, 20, &[])
            .await;
        let c = self
            .create_event("Opera Gala", "Grand Hall", 60, 50, &["B-1", "B-2"])
            .await;
        for i in 0..12u128 {
            let (o, _) = self.hold(a, i, 1 + (i % 3) as i64).await.expect("hold");
            match i % 4 {
                0 => {
                    self.pay(a, o).await.expect("pay");
                }
                1 => {
                    self.expire(a, o).await.expect("expire");
                }
                2 => {
                    self.release(a, i, o).await.expect("release");
                }
                _ => {}
            }
        }
        let s1 = self
            .hold_seats(a, 50, &["A-1", "A-2"])
            .await
            .expect("seats");
        self.pay(a, s1).await.expect("pay seats");
        let _s2 = self.hold_seats(a, 51, &["A-3"]).await.expect("seat held");
        let paid: Vec<_> = self
            .state(a)
            .orders()
            .filter(|o| o.status == OrderStatus::Paid)
            .map(|o| o.order_id)
            .collect();
        self.cancel_order(a, paid[0]).await.expect("cancel paid");
        let ticket = self
            .state(a)
            .tickets()
            .find(|t| t.status == TicketStatus::Valid)
            .map(|t| t.ticket_id)
            .expect("a valid ticket");
        self.check_in(a, ticket).await.expect("check in");
        for i in 0..5u128 {
            let (o, _) = self.hold(b, 100 + i, 2).await.expect("hold b");
            if i % 2 == 0 {
                self.pay(b, o).await.expect("pay b");
            }
        }
        let s3 = self.hold_seats(c, 60, &["B-1"]).await.expect("hold c");
        self.pay(c, s3).await.expect("pay c");
        self.hold(c, 61, 3).await.expect("hold c ga");
        self.cancel_event(c).await.expect("cancel c");
        vec![a, b, c]
    }
}
