//! The catalogue: events with tiers, live availability and seats, and the organizer's
//! commands that shape them.

use async_graphql::{Context, ID, InputObject, Object, SimpleObject};
use chrono::{DateTime, Utc};
use domain::{
    EventId, TierId,
    inventory::{
        DetailsInput, DetailsPatch, InventoryCommand, InventoryOutcome, SeatInput, TierKindInput,
    },
};
use projections::{EventFilter, EventView, PageRequest};
use uuid::Uuid;

use super::{
    Services, actor_of, caller, checked_key, command_context, command_error, derived_uuid,
    maybe_caller, parse_id, read_your_writes, services, step_key,
    types::{Event, EventStatus},
};
use crate::{
    auth::{AuthUser, Role, RoleGuard},
    error::ApiError,
};

/// Which events to list.
#[derive(InputObject, Default)]
pub struct EventFilterInput {
    /// Text found in the name or the venue (case-insensitive).
    pub text: Option<String>,
    /// Events starting at or after this instant.
    pub starts_from: Option<DateTime<Utc>>,
    /// Events starting before this instant.
    pub starts_before: Option<DateTime<Utc>>,
    /// Events in these states. Others than `PUBLISHED` and `CANCELLED` are listed only
    /// for their organizer (with `organizerId`) or an admin.
    pub statuses: Option<Vec<EventStatus>>,
    /// Events of this organizer.
    pub organizer_id: Option<ID>,
}

/// One page of events.
#[derive(SimpleObject)]
pub struct EventConnection {
    /// The events, by start time.
    pub nodes: Vec<Event>,
    /// Pagination.
    pub page_info: PageInfo,
}

/// Where a page ends.
#[derive(SimpleObject)]
pub struct PageInfo {
    /// Pass as `after` for the next page.
    pub end_cursor: Option<String>,
    /// Whether another page follows.
    pub has_next_page: bool,
}

/// Catalogue queries.
#[derive(Default)]
pub struct CatalogueQuery;

#[Object]
impl CatalogueQuery {
    /// Events, by start time, one page at a time. Anyone may list published events.
    async fn events(
        &self,
        ctx: &Context<'_>,
        filter: Option<EventFilterInput>,
        #[graphql(default = 20)] first: i32,
        after: Option<String>,
    ) -> Result<EventConnection, ApiError> {
        let services = services(ctx)?;
        let filter = filter.unwrap_or_default();
        let organizer: Option<domain::UserId> = filter
            .organizer_id
            .as_ref()
            .map(|id| parse_id("organizerId", id))
            .transpose()?;
        let caller = maybe_caller(ctx);
        let sees_drafts = caller.is_some_and(|user| {
            user.has_role(Role::Admin) || organizer.is_some_and(|o| o.as_uuid() == user.user_id)
        });
        let statuses = match filter.statuses {
            Some(statuses) => {
                if !sees_drafts && statuses.contains(&EventStatus::Draft) {
                    return Err(ApiError::forbidden(
                        "draft events are listed only for their organizer (pass your organizerId) or an admin",
                    ));
                }
                statuses.into_iter().map(Into::into).collect()
            }
            None if sees_drafts => vec![
                EventStatus::Draft.into(),
                EventStatus::Published.into(),
                EventStatus::Cancelled.into(),
            ],
            None => vec![EventStatus::Published.into()],
        };
        let first = usize::try_from(first)
            .map_err(|_| ApiError::invalid_field("first", "first must be positive"))?;
        let page = PageRequest { first, after };
        let page = services
            .read_side
            .catalogue()
            .list(
                &EventFilter {
                    text: filter.text,
                    starts_from: filter.starts_from,
                    starts_before: filter.starts_before,
                    statuses: Some(statuses),
                    organizer,
                },
                &page,
            )
            .map_err(super::query_error)?;
        Ok(EventConnection {
            nodes: page.items.into_iter().map(Event).collect(),
            page_info: PageInfo {
                end_cursor: page.end_cursor,
                has_next_page: page.has_next_page,
            },
        })
    }

    /// The events the caller checks tickets in at, by start time (door staff).
    #[graphql(guard = "RoleGuard::new(Role::Operator)")]
    async fn my_door_events(&self, ctx: &Context<'_>) -> Result<Vec<Event>, ApiError> {
        let user = caller(ctx)?;
        Ok(services(ctx)?
            .read_side
            .catalogue()
            .staffed_by(domain::UserId(user.user_id))
            .into_iter()
            .map(Event)
            .collect())
    }

    /// One event with its tiers, live availability and seats. A draft is visible to its
    /// organizer and admins only.
    async fn event(&self, ctx: &Context<'_>, id: ID) -> Result<Event, ApiError> {
        let event_id: EventId = parse_id("id", &id)?;
        let view = visible_event(services(ctx)?, maybe_caller(ctx), event_id)?;
        Ok(Event(view))
    }
}

/// A ticket tier of a new event.
#[derive(InputObject)]
pub struct TierInput {
    /// Display name (Standard, VIP...).
    pub name: String,
    /// Price of one ticket in minor units.
    pub price_minor: i32,
    /// ISO 4217 currency code.
    pub currency: String,
    /// Number of tickets of a general-admission tier; leave out for a seated tier.
    pub capacity: Option<i32>,
    /// Seat ids (such as `A-12`) of a seated tier; its capacity is their number.
    pub seats: Option<Vec<String>>,
}

/// A new event.
#[derive(InputObject)]
pub struct CreateEventInput {
    /// Name.
    pub name: String,
    /// Description.
    #[graphql(default)]
    pub description: String,
    /// Venue.
    pub venue: String,
    /// When it starts.
    pub starts_at: DateTime<Utc>,
    /// When it ends.
    pub ends_at: DateTime<Utc>,
    /// Image references.
    #[graphql(default)]
    pub images: Vec<String>,
    /// Ticket tiers (with their seats, for seated tiers).
    #[graphql(default)]
    pub tiers: Vec<TierInput>,
    /// When sales open (with `salesClosesAt`); by default from publication until the end.
    pub sales_opens_at: Option<DateTime<Utc>>,
    /// When sales close.
    pub sales_closes_at: Option<DateTime<Utc>>,
    /// Most tickets one buyer may hold or own.
    pub per_user_limit: Option<i32>,
    /// A retry with the same key creates nothing new.
    pub idempotency_key: Option<String>,
}

/// Changes of an event's details; absent fields keep their value.
#[derive(InputObject)]
pub struct UpdateEventInput {
    /// Name.
    pub name: Option<String>,
    /// Description.
    pub description: Option<String>,
    /// Venue.
    pub venue: Option<String>,
    /// When it starts.
    pub starts_at: Option<DateTime<Utc>>,
    /// When it ends.
    pub ends_at: Option<DateTime<Utc>>,
    /// Image references.
    pub images: Option<Vec<String>>,
}

/// Changes of a tier; absent fields keep their value.
#[derive(InputObject)]
pub struct UpdateTierInput {
    /// A new name.
    pub name: Option<String>,
    /// A new price (orders already placed keep theirs), with `currency`.
    pub price_minor: Option<i32>,
    /// The currency of the new price.
    pub currency: Option<String>,
    /// A new capacity of a general-admission tier (never below sold plus held).
    pub capacity: Option<i32>,
}

/// A seat of a seat map.
#[derive(InputObject)]
pub struct SeatMapEntry {
    /// The seat id, such as `A-12`.
    pub seat: String,
    /// The seated tier it belongs to.
    pub tier_id: ID,
}

/// Organizer mutations.
#[derive(Default)]
pub struct CatalogueMutation;

#[Object]
impl CatalogueMutation {
    /// Creates an event as a draft, with its tiers, seat map, sales window and limit.
    #[graphql(guard = "RoleGuard::any_of(&[Role::Organizer, Role::Admin])")]
    async fn create_event(
        &self,
        ctx: &Context<'_>,
        input: CreateEventInput,
    ) -> Result<Event, ApiError> {
        let user = caller(ctx)?;
        let services = services(ctx)?;
        let key = input
            .idempotency_key
            .clone()
            .unwrap_or_else(|| Uuid::new_v4().to_string());
        checked_key(&key)?;
        validate_tiers(&input.tiers)?;
        let request = command_context(ctx, actor_of(user), Some(&key));
        let created = services
            .commands
            .create_event(
                &request,
                DetailsInput {
                    name: input.name,
                    description: input.description,
                    venue: input.venue,
                    starts_at: input.starts_at,
                    ends_at: input.ends_at,
                    images: input.images,
                },
            )
            .await
            .map_err(command_error)?;
        let InventoryOutcome::EventCreated { event_id } = created.outcome else {
            return Err(ApiError::internal(anyhow::anyhow!(
                "creating an event answered {:?}",
                created.outcome
            )));
        };
        let mut position = created.position;
        // The remaining steps are separate commands, each keyed from the client's key, so
        // a retry of the whole mutation completes what a failure interrupted.
        let mut steps: Vec<(String, InventoryCommand)> = Vec::new();
        for (index, tier) in input.tiers.into_iter().enumerate() {
            // Derived, not drawn: a retry under the same key sends the same command, which
            // the domain recognises as done instead of refusing it as another one.
            let tier_id = TierId(derived_uuid(&format!("tier:{event_id}:{index}")));
            let seats = tier.seats.clone().unwrap_or_default();
            steps.push((
                format!("tier-{index}"),
                InventoryCommand::AddTier {
                    tier_id,
                    name: tier.name,
                    price_minor: i64::from(tier.price_minor),
                    currency: tier.currency,
                    kind: match tier.capacity {
                        Some(capacity) => TierKindInput::General {
                            capacity: i64::from(capacity),
                        },
                        None => TierKindInput::Seated,
                    },
                },
            ));
            if !seats.is_empty() {
                steps.push((
                    format!("seats-{index}"),
                    InventoryCommand::AddSeats {
                        seats: seats
                            .into_iter()
                            .map(|seat| SeatInput { seat, tier_id })
                            .collect(),
                    },
                ));
            }
        }
        match (input.sales_opens_at, input.sales_closes_at) {
            (Some(opens_at), Some(closes_at)) => steps.push((
                "window".into(),
                InventoryCommand::SetSalesWindow {
                    opens_at,
                    closes_at,
                },
            )),
            (None, None) => {}
            _ => {
                return Err(ApiError::invalid_field(
                    "salesOpensAt",
                    "give both salesOpensAt and salesClosesAt, or neither",
                ));
            }
        }
        if let Some(limit) = input.per_user_limit {
            steps.push((
                "limit".into(),
                InventoryCommand::SetPerUserLimit {
                    limit: Some(i64::from(limit)),
                },
            ));
        }
        for (step, command) in steps {
            let request = command_context(ctx, actor_of(user), Some(&step_key(&key, &step)));
            let receipt = services
                .commands
                .execute(&request, event_id, command)
                .await
                .map_err(command_error)?;
            position = position.max(receipt.position);
        }
        changed_event(services, position, event_id).await
    }

    /// Changes an event's details (its organizer or an admin).
    #[graphql(guard = "RoleGuard::any_of(&[Role::Organizer, Role::Admin])")]
    async fn update_event(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        input: UpdateEventInput,
        idempotency_key: Option<String>,
    ) -> Result<Event, ApiError> {
        let changes = DetailsPatch {
            name: input.name,
            description: input.description,
            venue: input.venue,
            starts_at: input.starts_at,
            ends_at: input.ends_at,
            images: input.images,
        };
        organizer_command(ctx, &event_id, idempotency_key, |_| {
            Ok(InventoryCommand::UpdateDetails { changes })
        })
        .await
    }

    /// Adds a ticket tier to an event; a seated tier gets its seats here too.
    #[graphql(guard = "RoleGuard::any_of(&[Role::Organizer, Role::Admin])")]
    async fn add_tier(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        input: TierInput,
        idempotency_key: Option<String>,
    ) -> Result<Event, ApiError> {
        validate_tiers(std::slice::from_ref(&input))?;
        let key = idempotency_key.unwrap_or_else(|| Uuid::new_v4().to_string());
        checked_key(&key)?;
        let tier_id = TierId(derived_uuid(&format!("tier:{}:{key}", event_id.as_str())));
        let seats = input.seats.clone().unwrap_or_default();
        let kind = match input.capacity {
            Some(capacity) => TierKindInput::General {
                capacity: i64::from(capacity),
            },
            None => TierKindInput::Seated,
        };
        organizer_command(ctx, &event_id, Some(step_key(&key, "tier")), |_| {
            Ok(InventoryCommand::AddTier {
                tier_id,
                name: input.name,
                price_minor: i64::from(input.price_minor),
                currency: input.currency,
                kind,
            })
        })
        .await?;
        if seats.is_empty() {
            let event_id: EventId = parse_id("eventId", &event_id)?;
            return visible_event(services(ctx)?, maybe_caller(ctx), event_id).map(Event);
        }
        organizer_command(ctx, &event_id, Some(step_key(&key, "seats")), |_| {
            Ok(InventoryCommand::AddSeats {
                seats: seats
                    .into_iter()
                    .map(|seat| SeatInput { seat, tier_id })
                    .collect(),
            })
        })
        .await
    }

    /// Renames, reprices or resizes a tier.
    #[graphql(guard = "RoleGuard::any_of(&[Role::Organizer, Role::Admin])")]
    async fn update_tier(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        tier_id: ID,
        input: UpdateTierInput,
        idempotency_key: Option<String>,
    ) -> Result<Event, ApiError> {
        let tier_id: TierId = parse_id("tierId", &tier_id)?;
        let key = idempotency_key.unwrap_or_else(|| Uuid::new_v4().to_string());
        checked_key(&key)?;
        let mut commands = Vec::new();
        if let Some(name) = input.name {
            commands.push(("name", InventoryCommand::RenameTier { tier_id, name }));
        }
        match (input.price_minor, input.currency) {
            (Some(price_minor), Some(currency)) => commands.push((
                "price",
                InventoryCommand::RepriceTier {
                    tier_id,
                    price_minor: i64::from(price_minor),
                    currency,
                },
            )),
            (None, None) => {}
            _ => {
                return Err(ApiError::invalid_field(
                    "priceMinor",
                    "give both priceMinor and currency to reprice a tier",
                ));
            }
        }
        if let Some(capacity) = input.capacity {
            commands.push((
                "capacity",
                InventoryCommand::ResizeTier {
                    tier_id,
                    capacity: i64::from(capacity),
                },
            ));
        }
        if commands.is_empty() {
            return Err(ApiError::invalid_input(
                "nothing to change: give name, price or capacity",
            ));
        }
        let mut last = None;
        for (step, command) in commands {
            last = Some(
                organizer_command(ctx, &event_id, Some(step_key(&key, step)), |_| Ok(command))
                    .await?,
            );
        }
        last.ok_or_else(|| ApiError::invalid_input("nothing to change"))
    }

    /// Adds seats to the seat map, each in a seated tier.
    #[graphql(guard = "RoleGuard::any_of(&[Role::Organizer, Role::Admin])")]
    async fn define_seat_map(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        seats: Vec<SeatMapEntry>,
        idempotency_key: Option<String>,
    ) -> Result<Event, ApiError> {
        let seats = seats
            .into_iter()
            .map(|entry| {
                Ok(SeatInput {
                    seat: entry.seat,
                    tier_id: parse_id("tierId", &entry.tier_id)?,
                })
            })
            .collect::<Result<Vec<_>, ApiError>>()?;
        if seats.is_empty() {
            return Err(ApiError::invalid_field("seats", "give at least one seat"));
        }
        organizer_command(ctx, &event_id, idempotency_key, |_| {
            Ok(InventoryCommand::AddSeats { seats })
        })
        .await
    }

    /// Makes a user with the OPERATOR role door staff of an event: they may check its
    /// tickets in (its organizer or an admin).
    #[graphql(guard = "RoleGuard::any_of(&[Role::Organizer, Role::Admin])")]
    async fn assign_door_staff(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        user_id: ID,
        idempotency_key: Option<String>,
    ) -> Result<Event, ApiError> {
        let user_id: domain::UserId = parse_id("userId", &user_id)?;
        let operator = services(ctx)?
            .read_side
            .accounts()
            .roles(user_id)
            .ok_or_else(|| ApiError::NotFound(format!("no user {user_id}")))?;
        if !operator.contains(&domain::Role::Operator) {
            return Err(ApiError::invalid_field(
                "userId",
                format!(
                    "user {user_id} is not door staff: an admin grants the OPERATOR role first"
                ),
            ));
        }
        organizer_command(ctx, &event_id, idempotency_key, |_| {
            Ok(InventoryCommand::AssignDoorStaff { user_id })
        })
        .await
    }

    /// Takes a user off an event's door staff (its organizer or an admin).
    #[graphql(guard = "RoleGuard::any_of(&[Role::Organizer, Role::Admin])")]
    async fn unassign_door_staff(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        user_id: ID,
        idempotency_key: Option<String>,
    ) -> Result<Event, ApiError> {
        let user_id: domain::UserId = parse_id("userId", &user_id)?;
        organizer_command(ctx, &event_id, idempotency_key, |_| {
            Ok(InventoryCommand::UnassignDoorStaff { user_id })
        })
        .await
    }

    /// Publishes an event: it becomes visible and sells within its sales window.
    #[graphql(guard = "RoleGuard::any_of(&[Role::Organizer, Role::Admin])")]
    async fn publish_event(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        idempotency_key: Option<String>,
    ) -> Result<Event, ApiError> {
        organizer_command(ctx, &event_id, idempotency_key, |_| {
            Ok(InventoryCommand::Publish)
        })
        .await
    }

    /// Cancels an event: nothing sells any more and no ticket admits anyone; every order is
    /// cancelled and every paid one refunded (a large event's orders within seconds after
    /// the answer; each order's `refundStatus` says when its money went back).
    #[graphql(guard = "RoleGuard::any_of(&[Role::Organizer, Role::Admin])")]
    async fn cancel_event(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        reason: String,
        idempotency_key: Option<String>,
    ) -> Result<Event, ApiError> {
        let user = caller(ctx)?;
        let services = services(ctx)?;
        let event_id: EventId = parse_id("eventId", &event_id)?;
        visible_event(services, Some(user), event_id)?;
        let request = command_context(ctx, actor_of(user), idempotency_key.as_deref());
        // Through the command side's cancellation, which cancels every order (a step at a
        // time for a large event) and has every paid one refunded.
        let receipt = services
            .commands
            .cancel_event(&request, event_id, reason)
            .await
            .map_err(command_error)?;
        changed_event(services, receipt.position, event_id).await
    }
}

/// Sends one organizer command for the event named by `event_id` and returns the event as
/// the read side shows it afterwards. The domain checks that the caller organizes it.
async fn organizer_command(
    ctx: &Context<'_>,
    event_id: &ID,
    idempotency_key: Option<String>,
    command: impl FnOnce(EventId) -> Result<InventoryCommand, ApiError>,
) -> Result<Event, ApiError> {
    let user = caller(ctx)?;
    let services = services(ctx)?;
    let event_id: EventId = parse_id("eventId", event_id)?;
    // An unknown event is NOT_FOUND before the command would create an actor for it.
    visible_event(services, Some(user), event_id)?;
    let command = command(event_id)?;
    let request = command_context(ctx, actor_of(user), idempotency_key.as_deref());
    let receipt = services
        .commands
        .execute(&request, event_id, command)
        .await
        .map_err(command_error)?;
    changed_event(services, receipt.position, event_id).await
}

/// The event after a change, once the read side shows the change.
async fn changed_event(
    services: &Services,
    position: store::Position,
    event_id: EventId,
) -> Result<Event, ApiError> {
    read_your_writes(services, position).await?;
    services
        .read_side
        .catalogue()
        .event(event_id)
        .map(Event)
        .ok_or_else(|| ApiError::NotFound(format!("no event {event_id}")))
}

/// The event, if `user` may see it: drafts only for their organizer and admins.
pub(crate) fn visible_event(
    services: &Services,
    user: Option<&AuthUser>,
    event_id: EventId,
) -> Result<EventView, ApiError> {
    let not_found = || ApiError::NotFound(format!("no event {event_id}"));
    let view = services
        .read_side
        .catalogue()
        .event(event_id)
        .ok_or_else(not_found)?;
    if view.status == domain::inventory::EventStatus::Draft && !manages(user, &view) {
        return Err(not_found());
    }
    Ok(view)
}

/// Whether `user` organizes the event or is an admin.
pub(crate) fn manages(user: Option<&AuthUser>, view: &EventView) -> bool {
    user.is_some_and(|u| u.has_role(Role::Admin) || u.user_id == view.organizer.as_uuid())
}

fn validate_tiers(tiers: &[TierInput]) -> Result<(), ApiError> {
    for tier in tiers {
        match (&tier.capacity, &tier.seats) {
            (Some(_), Some(seats)) if !seats.is_empty() => {
                return Err(ApiError::invalid_field(
                    "tiers",
                    format!(
                        "tier {:?}: give a capacity (general admission) or seats (seated), not both",
                        tier.name
                    ),
                ));
            }
            (Some(capacity), _) if *capacity <= 0 => {
                return Err(ApiError::invalid_field(
                    "capacity",
                    format!("tier {:?}: capacity must be positive", tier.name),
                ));
            }
            (None, None) => {
                return Err(ApiError::invalid_field(
                    "tiers",
                    format!("tier {:?}: give a capacity or seats", tier.name),
                ));
            }
            _ => {}
        }
        if tier.price_minor < 0 {
            return Err(ApiError::invalid_field(
                "priceMinor",
                format!("tier {:?}: the price cannot be negative", tier.name),
            ));
        }
    }
    Ok(())
}
