//! User accounts, and the reservation that keeps each normalised email unique.
//!
//! # Email uniqueness in an append-only store
//!
//! A store with per-stream expected versions cannot check a condition across streams, so
//! uniqueness gets a stream of its own: `email-<hash of the normalised email>`
//! ([`crate::ids::streams::email`]), decided by [`EmailReservation`]. Registering is:
//!
//! 1. decide [`EmailCommand::Reserve`] on the email's stream and append with the version the
//!    decision was made at ("no stream" for a fresh email). Of two concurrent registrations
//!    of one email only one append succeeds; the other re-reads, re-decides and gets
//!    `EMAIL_TAKEN`.
//! 2. decide [`AccountCommand::Register`] on `user-<id>` and append with "no stream".
//! 3. if step 2 is refused, [`EmailCommand::Release`] the reservation. A crash between 1 and
//!    2 leaves a reservation naming a user id with no account; retrying the registration
//!    with the same user id completes it, since the reservation already belongs to that id.
//!
//! # Roles and the first admin
//!
//! Anyone (anonymous, or the user themself) may register as a `CUSTOMER`. Every other role
//! is given by an admin or by the platform itself ([`Actor::System`]), either at
//! registration or later with [`AccountCommand::GrantRole`]. The first admin is therefore
//! registered by the platform, from its configuration at start-up; there is no "first
//! registrant becomes admin" rule, because "first" across streams cannot be decided without
//! a global lock.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::aggregate::{Actor, ActorRef, Aggregate, Command, CommandMeta, Decision, Role};
use crate::idempotency::{CommandRecord, Ledger};
use crate::ids::{Email, UserId};
use crate::rejection::Rejection;

/// Longest display name, in characters.
pub const MAX_DISPLAY_NAME_LEN: usize = 100;
/// Longest password hash, in characters (PHC strings are far shorter).
pub const MAX_PASSWORD_HASH_LEN: usize = 512;

/// A command for one user account (stream `user-<user id>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum AccountCommand {
    /// Open the account. The email must already be reserved for this user id.
    Register {
        user_id: UserId,
        email: String,
        display_name: String,
        /// The password hash (argon2, computed outside the domain), stored as given.
        password_hash: String,
        /// Requested roles; empty means `CUSTOMER`.
        roles: Vec<Role>,
    },
    /// Change the profile; absent fields keep their value.
    UpdateProfile {
        display_name: Option<String>,
        password_hash: Option<String>,
    },
    /// Give the account a role (admins and the platform only).
    GrantRole { role: Role },
    /// Take a role away (admins and the platform only).
    RevokeRole { role: Role },
}

/// A fact about one user account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum AccountEvent {
    /// The account was opened.
    AccountRegistered(AccountRegistered),
    /// The profile changed; carries the profile as it now is.
    ProfileUpdated(ProfileUpdated),
    /// A role was granted.
    RoleGranted(RoleChanged),
    /// A role was revoked.
    RoleRevoked(RoleChanged),
    /// A command was accepted: the idempotency record (always the last event of a decision).
    CommandAccepted(AccountCommandAccepted),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountRegistered {
    pub user_id: UserId,
    pub email: Email,
    pub display_name: String,
    pub password_hash: String,
    pub roles: BTreeSet<Role>,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ProfileUpdated {
    pub display_name: String,
    pub password_hash: String,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RoleChanged {
    pub role: Role,
    pub by: ActorRef,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountCommandAccepted {
    pub record: CommandRecord,
    pub outcome: AccountOutcome,
}

/// The answer to an accepted account command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum AccountOutcome {
    /// The account exists with these roles.
    Registered {
        user_id: UserId,
        roles: BTreeSet<Role>,
    },
    /// The profile changed.
    ProfileUpdated,
    /// The account now has this role.
    RoleGranted { role: Role },
    /// The account no longer has this role.
    RoleRevoked { role: Role },
}

impl AccountEvent {
    /// The stable type name stored with the event (see [`crate::codec`]).
    pub fn type_name(&self) -> &'static str {
        crate::codec::EventCodec::type_name(self)
    }
}

/// The state of one user account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Account {
    /// The account's data; `None` until registered.
    profile: Option<Profile>,
    /// Decided idempotency keys and their outcomes.
    ledger: Ledger<AccountOutcome>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
struct Profile {
    /// The account's id (its stream).
    user_id: UserId,
    /// The normalised email it was registered with.
    email: Email,
    /// The name shown to others.
    display_name: String,
    /// To verify passwords at log-in.
    password_hash: String,
    /// What the user may do.
    roles: BTreeSet<Role>,
}

impl Account {
    /// Whether the account is registered.
    pub fn exists(&self) -> bool {
        self.profile.is_some()
    }
    /// The account's id, once registered.
    pub fn user_id(&self) -> Option<UserId> {
        self.profile.as_ref().map(|p| p.user_id)
    }
    /// The normalised email, once registered.
    pub fn email(&self) -> Option<&Email> {
        self.profile.as_ref().map(|p| &p.email)
    }
    /// The display name, once registered.
    pub fn display_name(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| p.display_name.as_str())
    }
    /// The stored password hash, once registered.
    pub fn password_hash(&self) -> Option<&str> {
        self.profile.as_ref().map(|p| p.password_hash.as_str())
    }
    /// The account's roles (empty until registered).
    pub fn roles(&self) -> BTreeSet<Role> {
        self.profile
            .as_ref()
            .map(|p| p.roles.clone())
            .unwrap_or_default()
    }
}

impl Aggregate for Account {
    type Command = AccountCommand;
    type Event = AccountEvent;
    type Outcome = AccountOutcome;

    fn decide(
        &self,
        cmd: &Command<AccountCommand>,
    ) -> Result<Decision<AccountEvent, AccountOutcome>, Rejection> {
        if let Some(outcome) = self.ledger.recall(&cmd.meta, &cmd.body)? {
            return Ok(Decision {
                events: Vec::new(),
                outcome: outcome.clone(),
            });
        }
        let (mut events, outcome) = self.decide_new(&cmd.meta, &cmd.body)?;
        events.push(AccountEvent::CommandAccepted(AccountCommandAccepted {
            record: CommandRecord::new(&cmd.meta, &cmd.body),
            outcome: outcome.clone(),
        }));
        Ok(Decision { events, outcome })
    }

    fn evolve(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::AccountRegistered(e) => {
                if self.profile.is_none() {
                    self.profile = Some(Profile {
                        user_id: e.user_id,
                        email: e.email.clone(),
                        display_name: e.display_name.clone(),
                        password_hash: e.password_hash.clone(),
                        roles: e.roles.clone(),
                    });
                }
            }
            AccountEvent::ProfileUpdated(e) => {
                if let Some(p) = &mut self.profile {
                    p.display_name = e.display_name.clone();
                    p.password_hash = e.password_hash.clone();
                }
            }
            AccountEvent::RoleGranted(e) => {
                if let Some(p) = &mut self.profile {
                    p.roles.insert(e.role);
                }
            }
            AccountEvent::RoleRevoked(e) => {
                if let Some(p) = &mut self.profile {
                    p.roles.remove(&e.role);
                }
            }
            AccountEvent::CommandAccepted(e) => self.ledger.record(&e.record, e.outcome.clone()),
        }
    }
}

type AccountDecided = (Vec<AccountEvent>, AccountOutcome);

impl Account {
    fn decide_new(
        &self,
        meta: &CommandMeta,
        body: &AccountCommand,
    ) -> Result<AccountDecided, Rejection> {
        match body {
            AccountCommand::Register {
                user_id,
                email,
                display_name,
                password_hash,
                roles,
            } => {
                if self.profile.is_some() {
                    return Err(Rejection::AlreadyExists {
                        what: "account",
                        id: user_id.to_string(),
                    });
                }
                let mut roles: BTreeSet<Role> = roles.iter().copied().collect();
                if roles.is_empty() {
                    roles.insert(Role::Customer);
                }
                let self_service = matches!(meta.actor, Actor::Anonymous)
                    || meta.actor.user_id() == Some(*user_id);
                let privileged = meta.actor.is_system() || meta.actor.is_admin();
                let customer_only = roles.iter().all(|r| *r == Role::Customer);
                if !(privileged || (self_service && customer_only)) {
                    return Err(Rejection::forbidden(if self_service {
                        "only an admin can register an account with roles other than CUSTOMER"
                    } else {
                        "only the user themself, an admin or the platform can register an account"
                    }));
                }
                let email = Email::parse(email)?;
                let display_name = display_name_of(display_name)?;
                let password_hash = hash_of(password_hash)?;
                Ok((
                    vec![AccountEvent::AccountRegistered(AccountRegistered {
                        user_id: *user_id,
                        email,
                        display_name,
                        password_hash,
                        roles: roles.clone(),
                        at: meta.now,
                    })],
                    AccountOutcome::Registered {
                        user_id: *user_id,
                        roles,
                    },
                ))
            }
            AccountCommand::UpdateProfile {
                display_name,
                password_hash,
            } => {
                let profile = self.existing()?;
                if !(meta.actor.user_id() == Some(profile.user_id) || meta.actor.is_admin()) {
                    return Err(Rejection::forbidden(
                        "only the user themself or an admin can change a profile",
                    ));
                }
                if display_name.is_none() && password_hash.is_none() {
                    return Err(Rejection::invalid(
                        "changes",
                        "no profile field to change was given",
                    ));
                }
                let display_name = match display_name {
                    Some(n) => display_name_of(n)?,
                    None => profile.display_name.clone(),
                };
                let password_hash = match password_hash {
                    Some(h) => hash_of(h)?,
                    None => profile.password_hash.clone(),
                };
                Ok((
                    vec![AccountEvent::ProfileUpdated(ProfileUpdated {
                        display_name,
                        password_hash,
                        at: meta.now,
                    })],
                    AccountOutcome::ProfileUpdated,
                ))
            }
            AccountCommand::GrantRole { role } => {
                let profile = self.existing()?;
                admin_or_system(meta)?;
                if profile.roles.contains(role) {
                    return Err(Rejection::InvalidState(format!(
                        "user {} already has role {role}",
                        profile.user_id
                    )));
                }
                Ok((
                    vec![AccountEvent::RoleGranted(RoleChanged {
                        role: *role,
                        by: meta.actor.reference(),
                        at: meta.now,
                    })],
                    AccountOutcome::RoleGranted { role: *role },
                ))
            }
            AccountCommand::RevokeRole { role } => {
                let profile = self.existing()?;
                admin_or_system(meta)?;
                if !profile.roles.contains(role) {
                    return Err(Rejection::InvalidState(format!(
                        "user {} does not have role {role}",
                        profile.user_id
                    )));
                }
                if profile.roles.len() == 1 {
                    return Err(Rejection::InvalidState(format!(
                        "role {role} is the only role of user {}; grant another first",
                        profile.user_id
                    )));
                }
                if *role == Role::Admin && meta.actor.user_id() == Some(profile.user_id) {
                    return Err(Rejection::InvalidState(
                        "an admin cannot revoke their own ADMIN role".into(),
                    ));
                }
                Ok((
                    vec![AccountEvent::RoleRevoked(RoleChanged {
                        role: *role,
                        by: meta.actor.reference(),
                        at: meta.now,
                    })],
                    AccountOutcome::RoleRevoked { role: *role },
                ))
            }
        }
    }

    fn existing(&self) -> Result<&Profile, Rejection> {
        self.profile.as_ref().ok_or_else(|| Rejection::NotFound {
            what: "account",
            id: "(this stream has no account)".into(),
        })
    }
}

fn admin_or_system(meta: &CommandMeta) -> Result<(), Rejection> {
    if meta.actor.is_admin() || meta.actor.is_system() {
        Ok(())
    } else {
        Err(Rejection::forbidden(
            "only an admin can grant or revoke roles",
        ))
    }
}

fn display_name_of(raw: &str) -> Result<String, Rejection> {
    let name = raw.trim();
    if name.is_empty() {
        return Err(Rejection::invalid(
            "displayName",
            "display name must not be empty",
        ));
    }
    if name.chars().count() > MAX_DISPLAY_NAME_LEN {
        return Err(Rejection::invalid(
            "displayName",
            format!("display name is longer than {MAX_DISPLAY_NAME_LEN} characters"),
        ));
    }
    if name.chars().any(char::is_control) {
        return Err(Rejection::invalid(
            "displayName",
            "display name contains control characters",
        ));
    }
    Ok(name.to_owned())
}

fn hash_of(raw: &str) -> Result<String, Rejection> {
    if raw.is_empty()
        || raw.chars().count() > MAX_PASSWORD_HASH_LEN
        || raw.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(Rejection::invalid(
            "passwordHash",
            format!(
                "password hash must be 1 to {MAX_PASSWORD_HASH_LEN} printable characters without spaces"
            ),
        ));
    }
    Ok(raw.to_owned())
}

// ------------------------------------------------------------------ email reservation

/// A command for one email's reservation (stream `email-<hash>`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase")]
pub enum EmailCommand {
    /// Reserve the email for a user id (before registering the account).
    Reserve { email: String, user_id: UserId },
    /// Give the email up (a failed registration, or an account that changed email).
    Release { user_id: UserId },
}

/// A fact about one email's reservation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EmailEvent {
    /// The email now belongs to the user.
    EmailReserved(EmailReservationChanged),
    /// The email is free again.
    EmailReleased(EmailReservationChanged),
    /// A command was accepted: the idempotency record.
    CommandAccepted(EmailCommandAccepted),
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailReservationChanged {
    pub email: Email,
    pub user_id: UserId,
    pub at: DateTime<Utc>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EmailCommandAccepted {
    pub record: CommandRecord,
    pub outcome: EmailOutcome,
}

/// The answer to an accepted email command.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase")]
pub enum EmailOutcome {
    /// The email belongs to this user.
    Reserved { user_id: UserId },
    /// The email is free.
    Released,
}

impl EmailEvent {
    /// The stable type name stored with the event (see [`crate::codec`]).
    pub fn type_name(&self) -> &'static str {
        crate::codec::EventCodec::type_name(self)
    }
}

/// Who an email belongs to, if anyone.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct EmailReservation {
    /// The email this stream reserves, once first reserved.
    email: Option<Email>,
    /// The user it currently belongs to.
    holder: Option<UserId>,
    /// Decided idempotency keys and their outcomes.
    ledger: Ledger<EmailOutcome>,
}

impl EmailReservation {
    /// The user the email belongs to, if reserved.
    pub fn holder(&self) -> Option<UserId> {
        self.holder
    }
    /// The email this stream is about, once first reserved.
    pub fn email(&self) -> Option<&Email> {
        self.email.as_ref()
    }
}

impl Aggregate for EmailReservation {
    type Command = EmailCommand;
    type Event = EmailEvent;
    type Outcome = EmailOutcome;

    fn decide(
        &self,
        cmd: &Command<EmailCommand>,
    ) -> Result<Decision<EmailEvent, EmailOutcome>, Rejection> {
        if let Some(outcome) = self.ledger.recall(&cmd.meta, &cmd.body)? {
            return Ok(Decision {
                events: Vec::new(),
                outcome: outcome.clone(),
            });
        }
        let meta = &cmd.meta;
        let may_act_for = |user: UserId| {
            matches!(meta.actor, Actor::Anonymous | Actor::System)
                || meta.actor.is_admin()
                || meta.actor.user_id() == Some(user)
        };
        let (mut events, outcome) = match &cmd.body {
            EmailCommand::Reserve { email, user_id } => {
                let email = Email::parse(email)?;
                if !may_act_for(*user_id) {
                    return Err(Rejection::forbidden(
                        "an email can only be reserved for yourself",
                    ));
                }
                if let Some(mine) = &self.email {
                    if *mine != email {
                        return Err(Rejection::invalid(
                            "email",
                            format!("this reservation is for another email than {email}"),
                        ));
                    }
                }
                match self.holder {
                    Some(holder) if holder != *user_id => {
                        return Err(Rejection::EmailTaken {
                            email: email.to_string(),
                        });
                    }
                    // Already this user's: answering again makes a retried registration
                    // (after a crash between reserving and registering) go through.
                    Some(_) => (Vec::new(), EmailOutcome::Reserved { user_id: *user_id }),
                    None => (
                        vec![EmailEvent::EmailReserved(EmailReservationChanged {
                            email,
                            user_id: *user_id,
                            at: meta.now,
                        })],
                        EmailOutcome::Reserved { user_id: *user_id },
                    ),
                }
            }
            EmailCommand::Release { user_id } => {
                if !(meta.actor.is_system()
                    || meta.actor.is_admin()
                    || meta.actor.user_id() == Some(*user_id))
                {
                    return Err(Rejection::forbidden(
                        "only the holder, an admin or the platform can release an email",
                    ));
                }
                match (&self.email, self.holder) {
                    (Some(email), Some(holder)) if holder == *user_id => (
                        vec![EmailEvent::EmailReleased(EmailReservationChanged {
                            email: email.clone(),
                            user_id: *user_id,
                            at: meta.now,
                        })],
                        EmailOutcome::Released,
                    ),
                    _ => {
                        return Err(Rejection::InvalidState(format!(
                            "this email is not reserved by user {user_id}"
                        )));
                    }
                }
            }
        };
        events.push(EmailEvent::CommandAccepted(EmailCommandAccepted {
            record: CommandRecord::new(&cmd.meta, &cmd.body),
            outcome: outcome.clone(),
        }));
        Ok(Decision { events, outcome })
    }

    fn evolve(&mut self, event: &EmailEvent) {
        match event {
            EmailEvent::EmailReserved(e) => {
                self.email = Some(e.email.clone());
                self.holder = Some(e.user_id);
            }
            EmailEvent::EmailReleased(_) => self.holder = None,
            EmailEvent::CommandAccepted(e) => self.ledger.record(&e.record, e.outcome.clone()),
        }
    }
}

impl crate::testing::Testable for Account {
    fn is_command_record(event: &AccountEvent) -> bool {
        matches!(event, AccountEvent::CommandAccepted(_))
    }
    fn audit(&self) -> Result<(), String> {
        match &self.profile {
            Some(p) if p.roles.is_empty() => Err("a registered account has no role".into()),
            _ => Ok(()),
        }
    }
}

impl crate::testing::Testable for EmailReservation {
    fn is_command_record(event: &EmailEvent) -> bool {
        matches!(event, EmailEvent::CommandAccepted(_))
    }
    fn audit(&self) -> Result<(), String> {
        if self.holder.is_some() && self.email.is_none() {
            return Err("a holder without an email".into());
        }
        Ok(())
    }
}
