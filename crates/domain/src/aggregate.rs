//! The shape every aggregate shares: a command with its metadata goes in, a decision (events
//! plus an outcome) or a rejection comes out, and events fold into state.

use std::collections::BTreeSet;
use std::fmt;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::ids::{IdempotencyKey, UserId};
use crate::rejection::Rejection;

/// A consistency boundary decided by pure functions: no IO, no clock, no randomness.
/// Whatever a decision needs (time, acting user, new ids) arrives in the command.
pub trait Aggregate: Default + Clone + Send + Sync + 'static {
    /// What the aggregate can be asked to do.
    type Command: Send + 'static;
    /// What happened, as stored in the aggregate's stream.
    type Event: Clone + Send + Sync + 'static;
    /// What a successful command answers.
    type Outcome: Clone + Send + 'static;

    /// Decide a command against the current state (no IO, deterministic).
    ///
    /// A command whose idempotency key this stream already decided for the same actor
    /// answers the recorded outcome with no events.
    fn decide(
        &self,
        cmd: &Command<Self::Command>,
    ) -> Result<Decision<Self::Event, Self::Outcome>, Rejection>;

    /// Fold one event into the state.
    fn evolve(&mut self, event: &Self::Event);

    /// Fold a sequence of events into a fresh state.
    fn replay<'a>(events: impl IntoIterator<Item = &'a Self::Event>) -> Self
    where
        Self::Event: 'a,
    {
        let mut state = Self::default();
        for event in events {
            state.evolve(event);
        }
        state
    }
}

/// The result of an accepted command: the events to append (possibly none, for a repeated
/// idempotency key) and the answer for the caller.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision<E, O> {
    /// Events to append, in order, all or nothing.
    pub events: Vec<E>,
    /// What the caller is told once the events are durable.
    pub outcome: O,
}

/// A command body with the metadata every command carries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Command<C> {
    /// Who, when, and under which request.
    pub meta: CommandMeta,
    /// What is asked.
    pub body: C,
}

impl<C> Command<C> {
    /// Pairs a body with its metadata.
    pub fn new(meta: CommandMeta, body: C) -> Self {
        Self { meta, body }
    }
}

/// Metadata of a command: it makes decisions deterministic and auditable.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandMeta {
    /// Makes the command safe to retry (see [`Aggregate::decide`]).
    pub idempotency_key: IdempotencyKey,
    /// Who asks; authorisation is decided from it.
    pub actor: Actor,
    /// The current time as the caller's clock reads it; the domain never reads a clock.
    pub now: DateTime<Utc>,
    /// Ties the stored events to the request that caused them.
    pub correlation_id: Uuid,
}

/// A role a user account can have.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Role {
    /// Runs the platform: may do anything, grants roles.
    Admin,
    /// Creates and manages their own events.
    Organizer,
    /// Door staff: checks tickets in.
    Operator,
    /// Buys tickets.
    Customer,
}

impl Role {
    /// Every role, in a stable order.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Organizer, Role::Operator, Role::Customer];

    /// The stable name, as in the GraphQL schema (`ADMIN`, ...).
    pub fn as_str(&self) -> &'static str {
        match self {
            Role::Admin => "ADMIN",
            Role::Organizer => "ORGANIZER",
            Role::Operator => "OPERATOR",
            Role::Customer => "CUSTOMER",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Role {
    type Err = Rejection;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| Rejection::invalid("role", format!("unknown role {s:?}")))
    }
}

/// Who runs a command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Actor {
    /// A signed-in user with the roles their token carries.
    User { id: UserId, roles: BTreeSet<Role> },
    /// The platform itself: the expiry clock, payment callbacks, bootstrap.
    System,
    /// Nobody signed in (only registration accepts it).
    Anonymous,
}

impl Actor {
    /// A user actor with the given roles.
    pub fn user(id: UserId, roles: impl IntoIterator<Item = Role>) -> Self {
        Actor::User {
            id,
            roles: roles.into_iter().collect(),
        }
    }

    /// The user id, if a user acts.
    pub fn user_id(&self) -> Option<UserId> {
        match self {
            Actor::User { id, .. } => Some(*id),
            _ => None,
        }
    }

    /// Whether the actor is a user holding `role`.
    pub fn has_role(&self, role: Role) -> bool {
        matches!(self, Actor::User { roles, .. } if roles.contains(&role))
    }

    /// Whether the actor is an admin user.
    pub fn is_admin(&self) -> bool {
        self.has_role(Role::Admin)
    }

    /// Whether the actor is the platform itself.
    pub fn is_system(&self) -> bool {
        matches!(self, Actor::System)
    }

    /// The stored, role-free reference to this actor (see [`ActorRef`]).
    pub fn reference(&self) -> ActorRef {
        match self {
            Actor::User { id, .. } => ActorRef::User(*id),
            Actor::System => ActorRef::System,
            Actor::Anonymous => ActorRef::Anonymous,
        }
    }
}

/// Who ran a command, as recorded in events: roles are left out because they are a
/// property of the moment, not of the fact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(tag = "kind", content = "id", rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActorRef {
    /// A user.
    User(UserId),
    /// The platform.
    System,
    /// Nobody signed in.
    Anonymous,
}

impl fmt::Display for ActorRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ActorRef::User(id) => write!(f, "user {id}"),
            ActorRef::System => f.write_str("system"),
            ActorRef::Anonymous => f.write_str("anonymous"),
        }
    }
}
