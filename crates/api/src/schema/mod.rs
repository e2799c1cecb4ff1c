//! The domain GraphQL schema: queries, mutations and subscriptions over events, orders,
//! tickets and accounts.
//!
//! One module per feature, merged with `MergedObject` / `MergedSubscription`:
//!
//! * [`accounts`]: register, log in, profile, roles, `me`.
//! * [`catalogue`]: events with tiers, live availability and seats; organizer commands.
//! * [`orders`]: holds, payments, purchases, cancellations, check-in, orders and tickets.
//! * [`audit`]: audit trails and past states by replay; in-app notifications.
//! * [`live`]: the `seatAvailability` and `orderStatus` subscriptions.
//! * [`types`]: the object types the features share.
//!
//! Resolvers never decide anything: commands go to [`commands::CommandService`] or
//! [`commands::AccountService`], and what a mutation returns is read back from the read
//! side once it has applied the command's events (read-your-writes).

pub mod accounts;
pub mod audit;
pub mod catalogue;
pub mod live;
pub mod orders;
pub mod types;

use std::{collections::HashMap, sync::Arc, time::Duration};

use async_graphql::{
    Context, MergedObject, MergedSubscription, Schema, SchemaBuilder,
    dataloader::{DataLoader, Loader},
};
use commands::{AccountService, CommandError, CommandService};
use domain::{EventId, aggregate::Actor};
use projections::{EventView, ReadSide};
use signature::TicketCodeSigner;
use store::Position;
use uuid::Uuid;

use crate::{
    auth::{AuthUser, JwtCodec, PasswordHasher, Role},
    context::RequestContext,
    error::ApiError,
    graphql::{SchemaLimits, configure_schema},
};

/// Every query.
#[derive(MergedObject, Default)]
pub struct Query(
    accounts::AccountQuery,
    catalogue::CatalogueQuery,
    orders::OrderQuery,
    audit::AuditQuery,
);

/// Every mutation.
#[derive(MergedObject, Default)]
pub struct Mutation(
    accounts::AccountMutation,
    catalogue::CatalogueMutation,
    orders::OrderMutation,
);

/// Every subscription.
#[derive(MergedSubscription, Default)]
pub struct Subscription(live::LiveSubscription);

/// The schema served at `/graphql`.
pub type AppSchema = Schema<Query, Mutation, Subscription>;

/// The services resolvers call, shared by every request.
pub struct Services {
    /// The command side: inventory actors and payments.
    pub commands: CommandService,
    /// Registration, profiles and roles.
    pub accounts: AccountService,
    /// The event store, for audits by replay.
    pub store: Arc<dyn store::EventStore>,
    /// Read models and read-your-writes waits.
    pub read_side: Arc<ReadSide>,
    /// In-app notifications; `None` when the notifier runs in another process.
    pub notifications: Option<notifier::Notifications>,
    /// Issues tokens at log-in.
    pub jwt: Arc<JwtCodec>,
    /// Hashes and verifies passwords.
    pub passwords: PasswordHasher,
    /// Turns a ticket's secret into the signed code the door scans.
    pub ticket_codes: TicketCodeSigner,
    /// Longest a mutation waits for the read side to show its effect.
    pub read_your_writes_timeout: Duration,
    /// Least time between two live availability updates to one subscriber.
    pub live_update_interval: Duration,
    /// Caps on the tickets a user, and a client address, may hold unpaid.
    pub hold_limits: crate::hold_limits::HoldLimits,
    /// How long a hold lasts unless paid.
    pub hold_ttl: Duration,
}

impl Services {
    /// Whether an order is still an unpaid hold, as the read side knows it.
    pub(crate) fn hold_status(&self) -> impl crate::hold_limits::HoldStatus + '_ {
        |order: domain::OrderId| {
            self.read_side
                .orders()
                .order(order)
                .map(|o| o.status == domain::inventory::OrderStatus::Held)
        }
    }
}

/// Builds the schema with the service limits and the shared services.
pub fn build(services: Arc<Services>, limits: SchemaLimits) -> AppSchema {
    let events = DataLoader::new(
        EventLoader {
            read_side: Arc::clone(&services.read_side),
        },
        tokio::spawn,
    );
    configure_schema(builder(), limits)
        .data(services)
        .data(events)
        .finish()
}

/// The schema's builder without any data: enough to export the SDL.
pub fn builder() -> SchemaBuilder<Query, Mutation, Subscription> {
    Schema::build(
        Query::default(),
        Mutation::default(),
        Subscription::default(),
    )
}

/// The schema in SDL, as committed in `schema.graphql`.
pub fn sdl() -> String {
    builder().finish().sdl()
}

/// Loads events from the catalogue in one read per batch (an order list shows each
/// order's event without a read per order).
pub struct EventLoader {
    /// Where events are read from.
    read_side: Arc<ReadSide>,
}

impl Loader<EventId> for EventLoader {
    type Value = EventView;
    type Error = Arc<ApiError>;

    async fn load(&self, keys: &[EventId]) -> Result<HashMap<EventId, EventView>, Self::Error> {
        Ok(self.read_side.catalogue().events_by_ids(keys))
    }
}

/// The shared services of a request.
pub(crate) fn services<'a>(ctx: &'a Context<'_>) -> Result<&'a Arc<Services>, ApiError> {
    ctx.data_opt::<Arc<Services>>().ok_or_else(|| {
        ApiError::internal(anyhow::anyhow!("the schema was built without its services"))
    })
}

/// The authenticated caller, or `UNAUTHENTICATED`.
pub(crate) fn caller<'a>(ctx: &'a Context<'_>) -> Result<&'a AuthUser, ApiError> {
    RequestContext::from_ctx(ctx)?.require_user()
}

/// The caller, if any.
pub(crate) fn maybe_caller<'a>(ctx: &'a Context<'_>) -> Option<&'a AuthUser> {
    ctx.data_opt::<RequestContext>()
        .and_then(|request| request.user.as_ref())
}

/// The domain's view of an authenticated caller.
pub(crate) fn actor_of(user: &AuthUser) -> Actor {
    Actor::user(
        domain::UserId(user.user_id),
        user.roles.iter().map(|role| domain_role(*role)),
    )
}

/// The domain role of an API role.
pub(crate) fn domain_role(role: Role) -> domain::aggregate::Role {
    role.into()
}

/// The API role of a domain role.
pub(crate) fn api_role(role: domain::aggregate::Role) -> Role {
    role.into()
}

/// A command context for `actor`: the client's idempotency key (or a fresh one, for
/// commands that are naturally idempotent) and the request id as correlation id.
pub(crate) fn command_context(
    ctx: &Context<'_>,
    actor: Actor,
    idempotency_key: Option<&str>,
) -> commands::RequestContext {
    let correlation_id = ctx
        .data_opt::<RequestContext>()
        .and_then(|request| Uuid::parse_str(&request.request_id).ok())
        .unwrap_or_else(Uuid::now_v7);
    commands::RequestContext {
        actor,
        idempotency_key: idempotency_key
            .map(str::to_owned)
            .unwrap_or_else(|| Uuid::new_v4().to_string()),
        correlation_id,
    }
}

/// A key derived from the client's key for the `step`-th command of a mutation that
/// issues several, so that a retry repeats every step idempotently. It is short whatever
/// the client's key (any key the domain accepts gives a valid step key).
pub(crate) fn step_key(key: &str, step: &str) -> String {
    format!("{step}-{}", derived_uuid(&format!("step:{key}:{step}")))
}

/// An id derived from `name`: the same name always gives the same id (so that a retried
/// mutation names what its first attempt created), and different names different ids.
pub(crate) fn derived_uuid(name: &str) -> Uuid {
    Uuid::new_v5(&API_NAMESPACE, name.as_bytes())
}

/// Namespace of the ids the API derives from clients' keys.
const API_NAMESPACE: Uuid = Uuid::from_u128(0x7a1c_35d0_4e2b_4f8a_9c61_d0b3_e5f7_1a28);

/// Checks a client's idempotency key before the first command of a mutation, so that a
/// key the domain refuses never leaves the first steps done and the rest refused.
pub(crate) fn checked_key(key: &str) -> Result<(), ApiError> {
    domain::IdempotencyKey::parse(key)
        .map(drop)
        .map_err(|rejection| ApiError::domain(rejection.code(), rejection.to_string()))
}

/// The edge error of a command failure.
pub(crate) fn command_error(error: CommandError) -> ApiError {
    match error {
        CommandError::Rejected(rejection) => {
            ApiError::domain(rejection.code(), rejection.to_string())
        }
        CommandError::Conflict(message) => ApiError::Conflict(format!(
            "a concurrent change won ({message}); retry with the same idempotency key"
        )),
        CommandError::Unavailable(message) => ApiError::Unavailable(format!(
            "the service could not complete the command ({message}); retry with the same idempotency key"
        )),
        CommandError::TooLarge(message) => ApiError::invalid_input(message),
        CommandError::Payment(payments::PaymentError::Unavailable(message)) => {
            ApiError::Unavailable(format!(
                "the payment provider could not take the payment ({message}); nothing was \
                 charged: retry with the same idempotency key"
            ))
        }
        CommandError::Payment(error) => ApiError::domain(error.code(), error.to_string()),
    }
}

/// The edge error of a read-side query refusal.
pub(crate) fn query_error(error: projections::QueryError) -> ApiError {
    match error {
        projections::QueryError::InvalidInput(message) => ApiError::invalid_input(message),
    }
}

/// Waits until every read model has applied the events up to `position`.
pub(crate) async fn read_your_writes(
    services: &Services,
    position: Position,
) -> Result<(), ApiError> {
    services
        .read_side
        .wait_for(position, services.read_your_writes_timeout)
        .await
        .map_err(|error| {
            ApiError::Unavailable(format!(
                "the change was saved, but the read side has not shown it yet ({error}); query again shortly"
            ))
        })
}

/// Parses an id argument, naming the argument in the error.
pub(crate) fn parse_id<T: std::str::FromStr>(field: &str, raw: &str) -> Result<T, ApiError> {
    raw.trim()
        .parse()
        .map_err(|_| ApiError::invalid_field(field, format!("{field} {raw:?} is not a valid id")))
}
