//! [`AccountService`]: user accounts and the email reservations that keep emails unique.
//!
//! Account streams are quiet (a user changes their profile now and then), so there is no
//! actor: each command loads the stream, decides, and appends with the version it decided
//! at; a conflicting writer makes it load and decide again, a bounded number of times.
//! Registration reserves the email's stream first (see `domain::account`), then opens the
//! account, and gives the reservation back if the account is refused.

use std::collections::BTreeSet;
use std::sync::Arc;

use domain::account::{
    Account, AccountCommand, AccountOutcome, EmailCommand, EmailOutcome, EmailReservation,
};
use domain::aggregate::{Actor, Aggregate, Command, CommandMeta, Role};
use domain::codec::EventCodec;
use domain::ids::{Email, streams};
use domain::{IdempotencyKey, Rejection, UserId};
use store::{EventStore, ExpectedVersion, Metadata, Position, StoreError, StreamName};
use uuid::Uuid;

use crate::clock::Clock;
use crate::codec::new_event_id;
use crate::error::{CommandError, Receipt};
use crate::service::RequestContext;

/// How many times a command is decided again after a conflicting append.
const MAX_ATTEMPTS: u32 = 5;

/// Namespace of user ids derived from registration requests.
const USER_NAMESPACE: Uuid = Uuid::from_u128(0x8f1e_2c44_6b0a_4d19_a7c3_51e9_0b2d_7f63);

/// Registration, profiles and roles. Cheap to clone.
#[derive(Clone)]
pub struct AccountService {
    /// Where account and email streams live.
    store: Arc<dyn EventStore>,
    /// Stamps commands.
    clock: Arc<dyn Clock>,
}

/// What registering asks for.
#[derive(Clone, Debug)]
pub struct Registration {
    /// The email (normalised and checked by the domain).
    pub email: String,
    /// The name shown to others.
    pub display_name: String,
    /// The password's hash (argon2, computed by the caller).
    pub password_hash: String,
    /// Requested roles; empty means `CUSTOMER`. Other roles need an admin or the platform.
    pub roles: Vec<Role>,
}

impl AccountService {
    /// An account service on a store.
    pub fn new(store: Arc<dyn EventStore>, clock: Arc<dyn Clock>) -> Self {
        Self { store, clock }
    }

    /// Registers an account: reserves the email, then opens the account. The user id is
    /// derived from the request's idempotency key, so a retry completes the same
    /// registration instead of starting another.
    pub async fn register(
        &self,
        ctx: &RequestContext,
        registration: Registration,
    ) -> Result<Receipt<AccountOutcome>, CommandError> {
        let email = Email::parse(&registration.email)?;
        let user_id = UserId(Uuid::new_v5(
            &USER_NAMESPACE,
            format!("{:?}:{}", ctx.actor.reference(), ctx.idempotency_key).as_bytes(),
        ));
        let email_stream = stream(streams::email(&email))?;
        let user_stream = stream(streams::user(user_id))?;
        let reserve = self.command(
            ctx,
            "reserve",
            EmailCommand::Reserve {
                email: email.as_str().to_owned(),
                user_id,
            },
        )?;
        let reserved =
            run::<EmailReservation>(self.store.as_ref(), &email_stream, &reserve).await?;
        debug_assert!(matches!(reserved.outcome, EmailOutcome::Reserved { .. }));
        let register = self.command(
            ctx,
            "register",
            AccountCommand::Register {
                user_id,
                email: email.as_str().to_owned(),
                display_name: registration.display_name,
                password_hash: registration.password_hash,
                roles: registration.roles,
            },
        )?;
        match run::<Account>(self.store.as_ref(), &user_stream, &register).await {
            Err(CommandError::Rejected(rejection)) => {
                // The account was refused: give the email back, as the platform.
                let release = Command::new(
                    CommandMeta {
                        idempotency_key: derived_key("release", &ctx.idempotency_key)?,
                        actor: Actor::System,
                        now: self.clock.now(),
                        correlation_id: ctx.correlation_id,
                    },
                    EmailCommand::Release { user_id },
                );
                if let Err(e) =
                    run::<EmailReservation>(self.store.as_ref(), &email_stream, &release).await
                {
                    tracing::warn!(%user_id, error = %e, "releasing an email reservation failed");
                }
                Err(CommandError::Rejected(rejection))
            }
            other => other,
        }
    }

    /// Runs an account command (profile, roles) on `user`'s stream.
    pub async fn execute(
        &self,
        ctx: &RequestContext,
        user: UserId,
        body: AccountCommand,
    ) -> Result<Receipt<AccountOutcome>, CommandError> {
        let cmd = Command::new(self.meta(ctx, &ctx.idempotency_key)?, body);
        let user_stream = stream(streams::user(user))?;
        run::<Account>(self.store.as_ref(), &user_stream, &cmd).await
    }

    /// The account of a user, folded from its stream (`None` if not registered).
    pub async fn account(&self, user: UserId) -> Result<Option<Account>, CommandError> {
        let (account, _, _) =
            load::<Account>(self.store.as_ref(), &stream(streams::user(user))?).await?;
        Ok(account.exists().then_some(account))
    }

    /// The user an email is registered to, if any (for log-in).
    pub async fn user_by_email(&self, email: &str) -> Result<Option<UserId>, CommandError> {
        let email = Email::parse(email)?;
        let (reservation, _, _) =
            load::<EmailReservation>(self.store.as_ref(), &stream(streams::email(&email))?).await?;
        Ok(reservation.holder())
    }

    /// The roles of a user (empty if not registered).
    pub async fn roles(&self, user: UserId) -> Result<BTreeSet<Role>, CommandError> {
        Ok(self
            .account(user)
            .await?
            .map(|a| a.roles())
            .unwrap_or_default())
    }

    fn command<C>(
        &self,
        ctx: &RequestContext,
        step: &str,
        body: C,
    ) -> Result<Command<C>, CommandError> {
        let key = derived_key(step, &ctx.idempotency_key)?;
        Ok(Command::new(
            CommandMeta {
                idempotency_key: key,
                actor: ctx.actor.clone(),
                now: self.clock.now(),
                correlation_id: ctx.correlation_id,
            },
            body,
        ))
    }

    fn meta(&self, ctx: &RequestContext, key: &str) -> Result<CommandMeta, CommandError> {
        Ok(CommandMeta {
            idempotency_key: IdempotencyKey::parse(key)?,
            actor: ctx.actor.clone(),
            now: self.clock.now(),
            correlation_id: ctx.correlation_id,
        })
    }
}

fn derived_key(step: &str, key: &str) -> Result<IdempotencyKey, CommandError> {
    IdempotencyKey::parse(key)?;
    let id = Uuid::new_v5(&USER_NAMESPACE, format!("{step}:{key}").as_bytes());
    Ok(IdempotencyKey::parse(&format!("{step}-{id}"))?)
}

fn stream(name: String) -> Result<StreamName, CommandError> {
    StreamName::new(name)
        .map_err(|e| CommandError::Rejected(Rejection::invalid("stream", e.to_string())))
}

/// Folds a stream: the state, its version and the position of its last event.
async fn load<A>(
    store: &dyn EventStore,
    stream: &StreamName,
) -> Result<(A, Option<u64>, Position), StoreError>
where
    A: Aggregate,
    A::Event: EventCodec,
{
    let mut state = A::default();
    let mut version = None;
    let mut position = Position::START;
    let mut from = 0;
    loop {
        let page = store.read_stream(stream, from, 1024).await?;
        for recorded in &page {
            let event: A::Event = domain::codec::decode(
                &recorded.event_type,
                recorded.schema_version,
                &recorded.data,
            )
            .map_err(|e| StoreError::Corrupt(format!("{stream}@{}: {e}", recorded.version)))?;
            state.evolve(&event);
            version = Some(recorded.version);
            position = recorded.position;
        }
        if page.len() < 1024 {
            return Ok((state, version, position));
        }
        from = version.map_or(0, |v| v + 1);
    }
}

/// Load, decide, append with the decided-at version; decide again on a conflict.
async fn run<A>(
    store: &dyn EventStore,
    stream: &StreamName,
    cmd: &Command<A::Command>,
) -> Result<Receipt<A::Outcome>, CommandError>
where
    A: Aggregate,
    A::Event: EventCodec,
{
    let mut last_conflict = None;
    for _ in 0..MAX_ATTEMPTS {
        let (state, version, position) = load::<A>(store, stream).await?;
        let decision = state.decide(cmd)?;
        if decision.events.is_empty() {
            return Ok(Receipt {
                outcome: decision.outcome,
                position,
            });
        }
        let metadata = Metadata {
            correlation_id: cmd.meta.correlation_id,
            causation_id: None,
            acting_user: cmd.meta.actor.user_id().map(|u| u.as_uuid()),
            recorded_at: cmd.meta.now,
        };
        let events = decision
            .events
            .iter()
            .map(|event| {
                let (type_name, schema_version, data) = domain::codec::encode(event);
                store::NewEvent {
                    id: new_event_id(),
                    event_type: type_name.to_owned(),
                    schema_version,
                    data,
                    metadata: metadata.clone(),
                }
            })
            .collect();
        let expected = version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
        match store.append(stream, expected, events).await {
            Ok(appended) => {
                return Ok(Receipt {
                    outcome: decision.outcome,
                    position: appended.last_position(),
                });
            }
            Err(e @ StoreError::WrongExpectedVersion { .. }) => last_conflict = Some(e),
            Err(e) => return Err(e.into()),
        }
    }
    Err(last_conflict.map_or_else(
        || CommandError::Conflict(format!("stream {stream} kept changing")),
        CommandError::from,
    ))
}
