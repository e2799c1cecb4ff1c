//! User accounts by id and by normalised email (with the password hash, for log-in).

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use domain::account::AccountEvent;
use domain::ids::{Email, streams};
use domain::{Role, UserId};
use serde::{Deserialize, Serialize};
use store::RecordedEvent;

use crate::runner::{ApplyError, Projected, ReadModel};

/// An account as the read side holds it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AccountView {
    pub user_id: UserId,
    pub email: Email,
    pub display_name: String,
    /// The stored password hash (argon2 PHC string), to verify a log-in. Never show it.
    #[serde(skip_serializing, default)]
    pub password_hash: String,
    pub roles: BTreeSet<Role>,
    pub registered_at: DateTime<Utc>,
    /// How many times the password was changed: tokens issued before the last change name
    /// an older session and are refused.
    #[serde(default)]
    pub session: u32,
}

/// The accounts read model.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct AccountsModel {
    /// Every registered account.
    accounts: HashMap<UserId, StoredAccount>,
    /// Normalised email -> account, for log-in.
    by_email: HashMap<Email, UserId>,
}

/// The view plus the hash, which the view's serialisation leaves out.
#[derive(Clone, Debug, Serialize, Deserialize)]
struct StoredAccount {
    /// The account as queries return it.
    view: AccountView,
    /// Kept apart because the view's serialisation leaves it out.
    password_hash: String,
}

impl StoredAccount {
    fn view(&self) -> AccountView {
        AccountView {
            password_hash: self.password_hash.clone(),
            ..self.view.clone()
        }
    }
}

/// Stored type name of the account idempotency record, skipped undecoded.
pub(crate) const ACCOUNT_RECORD: &str = "AccountCommandAccepted";

impl ReadModel for AccountsModel {
    type Feeds = ();
    const NAME: &'static str = "accounts";
    const SNAPSHOT_VERSION: u32 = 2;

    fn apply(&mut self, event: &RecordedEvent) -> Result<(), ApplyError> {
        let Some(user) = streams::parse_user(event.stream.as_str()) else {
            return Ok(());
        };
        if event.event_type == ACCOUNT_RECORD {
            return Ok(());
        }
        let decoded = domain::codec::decode::<AccountEvent>(
            &event.event_type,
            event.schema_version,
            &event.data,
        )
        .map_err(|e| ApplyError(format!("cannot decode: {e}")))?;
        match decoded {
            AccountEvent::AccountRegistered(e) => {
                if self.accounts.contains_key(&user) {
                    return Ok(());
                }
                self.by_email.insert(e.email.clone(), user);
                self.accounts.insert(
                    user,
                    StoredAccount {
                        view: AccountView {
                            user_id: user,
                            email: e.email,
                            display_name: e.display_name,
                            password_hash: String::new(),
                            roles: e.roles,
                            registered_at: e.at,
                            session: 0,
                        },
                        password_hash: e.password_hash,
                    },
                );
            }
            AccountEvent::ProfileUpdated(e) => {
                if let Some(a) = self.accounts.get_mut(&user) {
                    a.view.display_name = e.display_name;
                    if a.password_hash != e.password_hash {
                        a.view.session = a.view.session.saturating_add(1);
                    }
                    a.password_hash = e.password_hash;
                }
            }
            AccountEvent::RoleGranted(e) => {
                if let Some(a) = self.accounts.get_mut(&user) {
                    a.view.roles.insert(e.role);
                }
            }
            AccountEvent::RoleRevoked(e) => {
                if let Some(a) = self.accounts.get_mut(&user) {
                    a.view.roles.remove(&e.role);
                }
            }
            AccountEvent::CommandAccepted(_) => {}
        }
        Ok(())
    }
}

impl AccountsModel {
    /// One account by id.
    pub fn by_id(&self, id: UserId) -> Option<AccountView> {
        self.accounts.get(&id).map(StoredAccount::view)
    }

    /// One account by its normalised email.
    pub fn by_email(&self, email: &Email) -> Option<AccountView> {
        self.by_id(*self.by_email.get(email)?)
    }

    /// The accounts among `ids` that exist, by id (for batch loaders).
    pub fn by_ids(&self, ids: &[UserId]) -> HashMap<UserId, AccountView> {
        ids.iter()
            .filter_map(|id| self.by_id(*id).map(|a| (*id, a)))
            .collect()
    }
}

/// Accounts as queries see them. Cheap to clone.
#[derive(Clone)]
pub struct Accounts {
    pub(crate) inner: Arc<Projected<AccountsModel>>,
}

impl Accounts {
    /// One account by id.
    pub fn by_id(&self, id: UserId) -> Option<AccountView> {
        self.inner.read(|m| m.by_id(id))
    }

    /// One account by email (normalised here: case and surrounding spaces do not matter).
    /// An address that is not a valid email finds nothing.
    pub fn by_email(&self, email: &str) -> Option<AccountView> {
        let email = Email::parse(email).ok()?;
        self.inner.read(|m| m.by_email(&email))
    }

    /// The accounts among `ids` that exist, by id (for batch loaders).
    pub fn by_ids(&self, ids: &[UserId]) -> HashMap<UserId, AccountView> {
        self.inner.read(|m| m.by_ids(ids))
    }

    /// An account's roles and session as they are now (checked on every authenticated
    /// request, so it copies nothing else).
    pub fn current(&self, id: UserId) -> Option<(Vec<Role>, u32)> {
        self.inner.read(|m| {
            m.accounts
                .get(&id)
                .map(|a| (a.view.roles.iter().copied().collect(), a.view.session))
        })
    }

    /// How many accounts hold `role` (the last administrator keeps the role).
    pub fn count_with_role(&self, role: Role) -> usize {
        self.inner.read(|m| {
            m.accounts
                .values()
                .filter(|a| a.view.roles.contains(&role))
                .count()
        })
    }

    /// An account's roles as they are now.
    pub fn roles(&self, id: UserId) -> Option<Vec<Role>> {
        self.inner.read(|m| {
            m.accounts
                .get(&id)
                .map(|a| a.view.roles.iter().copied().collect())
        })
    }
}
