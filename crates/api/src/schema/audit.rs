//! Audits by event replay: an event's history and its state at a point, for its
//! organizer or an admin; and the caller's in-app notifications.

use async_graphql::{Context, ID, Json, Object, SimpleObject};
use chrono::{DateTime, Utc};
use domain::EventId;
use projections::audit::{self, AsOf, AuditError};

use super::{caller, catalogue::manages, parse_id, services, types::Long};
use crate::{auth::AuthUser, error::ApiError};

/// Most history entries one `auditTrail` page returns.
pub const MAX_AUDIT_PAGE: i32 = 1000;

/// One stored event of an event's history.
#[derive(SimpleObject)]
pub struct AuditEntry {
    /// Version in the event's stream (0-based).
    pub version: Long,
    /// Place in the global order.
    pub position: Long,
    /// Stable type name, such as `HoldPlaced`.
    pub event_type: String,
    /// When it happened.
    pub recorded_at: DateTime<Utc>,
    /// Who did it (none for the platform itself).
    pub acting_user_id: Option<ID>,
    /// The request it came from.
    pub correlation_id: ID,
    /// The event's data.
    pub data: Json<serde_json::Value>,
}

/// An event's state at a point of its history.
#[derive(SimpleObject)]
pub struct AuditState {
    /// The event.
    pub event_id: ID,
    /// Version of the last stored event folded in.
    pub version: Long,
    /// Its global position.
    pub position: Long,
    /// Its time.
    pub recorded_at: DateTime<Utc>,
    /// The folded state: details, tiers, seats, orders, tickets.
    pub state: Json<serde_json::Value>,
}

/// An in-app notification.
#[derive(SimpleObject)]
pub struct Notification {
    /// Its id; pass the last one seen as `before` for older ones.
    pub id: Long,
    /// What it is about, such as `ORDER_CONFIRMED`.
    pub kind: String,
    /// One line.
    pub title: String,
    /// Plain text.
    pub body: String,
    /// When it was stored.
    pub created_at: Option<DateTime<Utc>>,
    /// Whether it was marked read.
    pub read: bool,
}

/// Audit and notification queries.
#[derive(Default)]
pub struct AuditQuery;

#[Object]
impl AuditQuery {
    /// An event's stored history in order, with who did what and when (its organizer or
    /// an admin): `first` entries (at most 1,000) from version `fromVersion` on.
    #[graphql(
        complexity = "crate::schema::types::list_complexity(first.min(MAX_AUDIT_PAGE), child_complexity)"
    )]
    async fn audit_trail(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        #[graphql(default = 100)] first: i32,
        #[graphql(default_with = "Long(0)")] from_version: Long,
    ) -> Result<Vec<AuditEntry>, ApiError> {
        let user = caller(ctx)?;
        let services = services(ctx)?;
        let event_id = audited_event(ctx, user, &event_id)?;
        if !(1..=MAX_AUDIT_PAGE).contains(&first) {
            return Err(ApiError::invalid_field(
                "first",
                format!("first must be between 1 and {MAX_AUDIT_PAGE}"),
            ));
        }
        // One page only: a long history is never read (let alone decoded) whole.
        let history = audit::history_page(
            services.store.as_ref(),
            event_id,
            from_version.unsigned("fromVersion")?,
            usize::try_from(first).unwrap_or(0),
        )
        .await
        .map_err(audit_error)?;
        Ok(history
            .into_iter()
            .map(|entry| AuditEntry {
                version: Long::from(entry.version),
                position: Long::from(entry.position.0),
                event_type: entry.event_type,
                recorded_at: entry.recorded_at,
                acting_user_id: entry.acting_user.map(|u| ID(u.to_string())),
                correlation_id: ID(entry.correlation_id.to_string()),
                data: Json(entry.data),
            })
            .collect())
    }

    /// An event's state as it was at an instant (or at a global store position), replayed
    /// from its history (its organizer or an admin).
    async fn event_state_at(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
        at: Option<DateTime<Utc>>,
        position: Option<Long>,
    ) -> Result<AuditState, ApiError> {
        let user = caller(ctx)?;
        let services = services(ctx)?;
        let event_id = audited_event(ctx, user, &event_id)?;
        let as_of = match (at, position) {
            (Some(at), None) => AsOf::Time(at),
            (None, Some(position)) => {
                AsOf::Position(store::Position(position.unsigned("position")?))
            }
            (None, None) => AsOf::Head,
            (Some(_), Some(_)) => {
                return Err(ApiError::invalid_input(
                    "give either `at` or `position`, not both",
                ));
            }
        };
        let state = audit::state_at(services.store.as_ref(), event_id, as_of, &|_| {})
            .await
            .map_err(audit_error)?;
        let folded = serde_json::to_value(&state.state).map_err(ApiError::internal)?;
        Ok(AuditState {
            event_id: ID(event_id.to_string()),
            version: Long::from(state.version),
            position: Long::from(state.position.0),
            recorded_at: state.recorded_at,
            state: Json(folded),
        })
    }

    /// The caller's in-app notifications, newest first.
    async fn my_notifications(
        &self,
        ctx: &Context<'_>,
        #[graphql(default = 20)] first: i32,
        before: Option<Long>,
    ) -> Result<Vec<Notification>, ApiError> {
        let user = caller(ctx)?;
        let services = services(ctx)?;
        if !(1..=100).contains(&first) {
            return Err(ApiError::invalid_field(
                "first",
                "first must be between 1 and 100",
            ));
        }
        let notifications = services.notifications.as_ref().ok_or_else(|| {
            ApiError::Unavailable("notifications are served by the notifier process".into())
        })?;
        let list = notifications
            .list_in_app(
                user.user_id,
                before.map(|b| b.0),
                usize::try_from(first).unwrap_or(20),
            )
            .await
            .map_err(|e| ApiError::internal(anyhow::anyhow!("listing notifications: {e}")))?;
        Ok(list
            .into_iter()
            .map(|n| Notification {
                id: Long(n.id),
                kind: n.kind.as_str().to_owned(),
                title: n.title,
                body: n.body,
                created_at: DateTime::from_timestamp_millis(n.created_at_ms),
                read: n.read_at_ms.is_some(),
            })
            .collect())
    }
}

/// The event named by `event_id`, if the caller organizes it or is an admin.
fn audited_event(ctx: &Context<'_>, user: &AuthUser, event_id: &ID) -> Result<EventId, ApiError> {
    let event_id: EventId = parse_id("eventId", event_id)?;
    let view = services(ctx)?
        .read_side
        .catalogue()
        .event(event_id)
        .ok_or_else(|| ApiError::NotFound(format!("no event {event_id}")))?;
    if !manages(Some(user), &view) {
        return Err(ApiError::forbidden(
            "only the event's organizer or an admin may audit it",
        ));
    }
    Ok(event_id)
}

fn audit_error(error: AuditError) -> ApiError {
    match error {
        AuditError::NotFound(event) => ApiError::NotFound(format!("no event {event}")),
        AuditError::VersionBeyondHead { .. } | AuditError::BeforeCreation { .. } => {
            ApiError::invalid_input(error.to_string())
        }
        other => ApiError::internal(other),
    }
}
