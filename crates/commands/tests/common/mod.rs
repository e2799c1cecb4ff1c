//! Shared setup of the command side's tests: a real SQLite store in a temporary
//! directory, a manual clock, the simulated payment provider, and a published event.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use commands::{ActorConfig, CommandConfig, CommandService, ManualClock, RequestContext};
use domain::aggregate::{Actor, Role};
use domain::inventory::{
    DetailsInput, InventoryCommand, InventoryOutcome, SeatInput, TierKindInput,
};
use domain::{EventId, TierId, UserId};
use payments::{ChannelSink, SimulatedProvider, SimulatorConfig, WebhookDelivery};
use store::EventStore;
use store::sqlite::{SqliteOptions, SqliteStore};
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

/// Secret the simulated provider signs its webhooks with.
pub const WEBHOOK_SECRET: &[u8] = b"test-webhook-secret";

pub struct Harness {
    pub dir: tempfile::TempDir,
    pub store: SqliteStore,
    pub clock: ManualClock,
    pub provider: SimulatedProvider,
    pub webhooks: UnboundedReceiver<WebhookDelivery>,
    pub service: CommandService,
    pub organizer: Actor,
}

pub fn start_time() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 6, 1, 9, 0, 0)
        .single()
        .expect("valid date")
}

pub fn config() -> CommandConfig {
    CommandConfig {
        actor: ActorConfig::default(),
        hold_ttl: chrono::Duration::minutes(10),
        payment_timeout: Duration::from_millis(300),
        call_timeout: Duration::from_secs(30),
        max_send_attempts: 3,
    }
}

pub async fn harness() -> Harness {
    harness_with(config()).await
}

pub async fn harness_with(config: CommandConfig) -> Harness {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = SqliteStore::open(dir.path().join("events.sqlite3"), SqliteOptions::default())
        .expect("open store");
    let clock = ManualClock::new(start_time());
    let (sink, webhooks) = ChannelSink::new();
    let mut sim = SimulatorConfig::new(WEBHOOK_SECRET);
    sim.webhook_delay = Duration::from_millis(50);
    let provider = SimulatedProvider::new(sim, Arc::new(sink));
    let service = CommandService::start(
        Arc::new(store.clone()),
        Arc::new(clock.clone()),
        Arc::new(provider.clone()),
        config,
    )
    .await
    .expect("start service");
    Harness {
        dir,
        store,
        clock,
        provider,
        webhooks,
        service,
        organizer: organizer(),
    }
}

pub fn organizer() -> Actor {
    Actor::user(UserId(Uuid::from_u128(1)), [Role::Organizer])
}

pub fn buyer(n: u128) -> Actor {
    Actor::user(UserId(Uuid::from_u128(1_000_000 + n)), [Role::Customer])
}

pub fn ctx(actor: &Actor) -> RequestContext {
    RequestContext::new(actor.clone(), Uuid::now_v7().to_string())
}

pub fn details() -> DetailsInput {
    DetailsInput {
        name: "Ticket war".into(),
        description: "One hot event".into(),
        venue: "Arena".into(),
        starts_at: start_time() + chrono::Duration::days(30),
        ends_at: start_time() + chrono::Duration::days(30) + chrono::Duration::hours(3),
        images: vec![],
    }
}

impl Harness {
    /// Creates an event; returns its id.
    pub async fn create_event(&self) -> EventId {
        let receipt = self
            .service
            .create_event(&ctx(&self.organizer), details())
            .await
            .expect("create event");
        match receipt.outcome {
            InventoryOutcome::EventCreated { event_id } => event_id,
            other => panic!("unexpected {other:?}"),
        }
    }

    pub async fn organize(&self, event: EventId, body: InventoryCommand) {
        self.service
            .execute(&ctx(&self.organizer), event, body)
            .await
            .expect("organizer command");
    }

    /// A published event with one general tier of `capacity` tickets at 25.00 EUR.
    pub async fn published_event(&self, capacity: i64, limit: Option<i64>) -> (EventId, TierId) {
        let event = self.create_event().await;
        let tier = TierId(Uuid::now_v7());
        self.organize(
            event,
            InventoryCommand::AddTier {
                tier_id: tier,
                name: "Standard".into(),
                price_minor: 2500,
                currency: "EUR".into(),
                kind: TierKindInput::General { capacity },
            },
        )
        .await;
        if limit.is_some() {
            self.organize(event, InventoryCommand::SetPerUserLimit { limit })
                .await;
        }
        self.organize(event, InventoryCommand::Publish).await;
        (event, tier)
    }

    /// A published event with one seated tier of the given seats.
    pub async fn seated_event(&self, seats: &[&str]) -> (EventId, TierId) {
        let event = self.create_event().await;
        let tier = TierId(Uuid::now_v7());
        self.organize(
            event,
            InventoryCommand::AddTier {
                tier_id: tier,
                name: "Stalls".into(),
                price_minor: 4000,
                currency: "EUR".into(),
                kind: TierKindInput::Seated,
            },
        )
        .await;
        self.organize(
            event,
            InventoryCommand::AddSeats {
                seats: seats
                    .iter()
                    .map(|s| SeatInput {
                        seat: (*s).into(),
                        tier_id: tier,
                    })
                    .collect(),
            },
        )
        .await;
        self.organize(event, InventoryCommand::Publish).await;
        (event, tier)
    }

    /// Reads the event's whole stream back and folds it.
    pub async fn replay(&self, event: EventId) -> domain::inventory::Inventory {
        use domain::Aggregate;
        let stream = commands::actor::stream_name(event).expect("stream name");
        let events = self
            .store
            .read_stream(&stream, 0, 1_000_000)
            .await
            .expect("read stream");
        let decoded: Vec<_> = events
            .iter()
            .map(|r| commands::codec::decode(r).expect("decode"))
            .collect();
        domain::inventory::Inventory::replay(decoded.iter())
    }
}
