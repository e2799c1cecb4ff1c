//! Idempotency: the record every accepted command leaves in its stream, and the in-memory
//! ledger folded from those records that answers a retried command with its first outcome.
//!
//! A record is either an event of its own at the end of a decision ([`CommandRecord`] inside
//! a `...CommandAccepted`), or, for the hot decisions whose outcome their last event already
//! tells, a [`CommandStamp`] carried by that event: half the bytes a purchase stores.
//!
//! Keys are scoped per stream and per acting user, so two users who happen to pick the same
//! key never see each other's outcomes. The ledger keeps 64-bit hashes of the scoped key and
//! of the command body instead of the strings, which keeps an actor's memory small; a hash
//! collision between two keys would at worst make a different command look like a reuse of
//! the key (refused), never hand a wrong outcome to a matching command. The key hash is
//! keyed with a per-process secret, so no user can aim a key at another's.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::aggregate::{ActorRef, CommandMeta};
use crate::ids::{IdempotencyKey, TICKETING_NAMESPACE, UserId};
use crate::index::{Index, keyed_hash};
use crate::rejection::Rejection;

/// What an accepted command leaves behind so that a retry can be recognised.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandRecord {
    /// The idempotency key the command carried.
    pub key: IdempotencyKey,
    /// Who ran it (the key's scope).
    pub actor: ActorRef,
    /// A hash of the command body: a retry with the same key must carry the same body.
    pub fingerprint: Uuid,
    /// When it was decided (the command's `now`).
    pub at: DateTime<Utc>,
    /// The request the command came from.
    pub correlation_id: Uuid,
}

impl CommandRecord {
    /// The record of a command with this metadata and body.
    pub fn new<C: Serialize>(meta: &CommandMeta, body: &C) -> Self {
        Self::with_fingerprint(meta, fingerprint(body))
    }

    /// The record of a command with this metadata whose body has this [`fingerprint`].
    pub fn with_fingerprint(meta: &CommandMeta, fingerprint: Uuid) -> Self {
        Self {
            key: meta.idempotency_key.clone(),
            actor: meta.actor.reference(),
            fingerprint,
            at: meta.now,
            correlation_id: meta.correlation_id,
        }
    }
}

/// The idempotency record a decision's last event carries itself, instead of a separate
/// `...CommandAccepted` event. The time and the request are the event's own and the store's
/// metadata; the outcome is told by the event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandStamp {
    /// The idempotency key the command carried.
    pub key: IdempotencyKey,
    /// Who ran it (the key's scope); absent when it is the user the carrying event names,
    /// as for a buyer's own hold (which keeps the stored event short).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub actor: Option<ActorRef>,
    /// A hash of the command body, as in [`CommandRecord::fingerprint`].
    pub fingerprint: Uuid,
}

impl CommandStamp {
    /// The stamp of a command with this metadata and body [`fingerprint`], carried by an
    /// event that names `user`.
    pub fn new(meta: &CommandMeta, fingerprint: Uuid, user: UserId) -> Self {
        let actor = meta.actor.reference();
        Self {
            key: meta.idempotency_key.clone(),
            actor: (actor != ActorRef::User(user)).then_some(actor),
            fingerprint,
        }
    }

    /// Who ran the command, given the user the carrying event names.
    pub fn actor_of(&self, user: UserId) -> ActorRef {
        self.actor.unwrap_or(ActorRef::User(user))
    }
}

/// A stable hash of a command body (its JSON form).
pub fn fingerprint<C: Serialize>(body: &C) -> Uuid {
    // One buffer large enough for most bodies, instead of growing one from 128 bytes.
    let mut json = Vec::with_capacity(512);
    // Serialising plain data types cannot fail; an empty fallback would only weaken the
    // reuse check, never the idempotency itself.
    if serde_json::to_writer(&mut json, body).is_err() {
        json.clear();
    }
    v5(&TICKETING_NAMESPACE, &json)
}

/// `Uuid::new_v5(namespace, name)`, computed with a SHA-1 that uses the CPU's SHA
/// extensions when it has them (the digest, and so the uuid, is the same).
fn v5(namespace: &Uuid, name: &[u8]) -> Uuid {
    use sha1::Digest;
    let mut sha1 = sha1::Sha1::new();
    sha1.update(namespace.as_bytes());
    sha1.update(name);
    let digest = sha1.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_sha1_bytes(bytes).into_uuid()
}

/// The ledger's key of an idempotency key in its scope (see [`keyed_hash`]: in memory only,
/// rebuilt by every fold, so it need not be stable across processes).
fn scoped_key_hash(actor: &ActorRef, key: &IdempotencyKey) -> u64 {
    let scope = match actor {
        ActorRef::User(id) => (0u8, id.0),
        ActorRef::System => (1, Uuid::nil()),
        ActorRef::Anonymous => (2, Uuid::nil()),
    };
    keyed_hash(&(scope, key.as_str()))
}

fn low_bits(id: Uuid) -> u64 {
    id.as_u64_pair().1
}

/// Decided keys of one stream and what they answered. `O` is the compact form of an outcome
/// the aggregate chooses to keep.
#[derive(Clone, Debug)]
pub struct Ledger<O> {
    /// Every decided key, in the order first recorded: 16 bytes each for a 4-byte outcome.
    entries: Vec<LedgerEntry<O>>,
    /// Scoped key hash -> position in `entries` (4 bytes a slot; the hash is the key's).
    index: Index,
}

/// One decided key.
#[derive(Clone, Debug, PartialEq, Eq)]
struct LedgerEntry<O> {
    /// The scoped key hash: a 64-bit hash is what makes a retry safe to answer.
    key: u64,
    /// 32 bits of the body fingerprint: plenty to notice a key reused for another command.
    fingerprint: u32,
    /// What the command answered.
    outcome: O,
}

impl<O> Default for Ledger<O> {
    fn default() -> Self {
        Self {
            entries: Vec::new(),
            index: Index::default(),
        }
    }
}

/// Two ledgers are equal when they recall the same outcome for the same keys, whatever the
/// order they were recorded in.
impl<O: PartialEq> PartialEq for Ledger<O> {
    fn eq(&self, other: &Self) -> bool {
        self.entries.len() == other.entries.len()
            && self.entries.iter().all(|e| {
                other
                    .entry(e.key)
                    .is_some_and(|o| o.fingerprint == e.fingerprint && o.outcome == e.outcome)
            })
    }
}

impl<O: Eq> Eq for Ledger<O> {}

impl<O> Ledger<O> {
    fn position(&self, key: u64) -> Option<u32> {
        self.index
            .find(key, |pos| self.entries[pos as usize].key == key)
    }

    fn entry(&self, key: u64) -> Option<&LedgerEntry<O>> {
        self.position(key).map(|pos| &self.entries[pos as usize])
    }

    /// The recorded outcome of a command with this key and body, if the key was decided;
    /// a decided key with a different body is refused.
    pub fn recall<C: Serialize>(
        &self,
        meta: &CommandMeta,
        body: &C,
    ) -> Result<Option<&O>, Rejection> {
        self.recall_fingerprinted(meta, fingerprint(body))
    }

    /// [`Ledger::recall`] for a body whose [`fingerprint`] is already known.
    pub fn recall_fingerprinted(
        &self,
        meta: &CommandMeta,
        body_fingerprint: Uuid,
    ) -> Result<Option<&O>, Rejection> {
        let hash = scoped_key_hash(&meta.actor.reference(), &meta.idempotency_key);
        match self.entry(hash) {
            None => Ok(None),
            Some(e) if e.fingerprint == low_bits(body_fingerprint) as u32 => Ok(Some(&e.outcome)),
            Some(_) => Err(Rejection::invalid(
                "idempotencyKey",
                format!(
                    "idempotency key {:?} was already used for a different command",
                    meta.idempotency_key.as_str()
                ),
            )),
        }
    }

    /// Records a decided command (folding its record event).
    pub fn record(&mut self, record: &CommandRecord, outcome: O) {
        self.record_key(&record.actor, &record.key, record.fingerprint, outcome);
    }

    /// Records a decided command from its parts (folding a record carried by an event).
    pub fn record_key(
        &mut self,
        actor: &ActorRef,
        key: &IdempotencyKey,
        fingerprint: Uuid,
        outcome: O,
    ) {
        let key = scoped_key_hash(actor, key);
        let fingerprint = low_bits(fingerprint) as u32;
        if let Some(pos) = self.position(key) {
            // Decide never records a key twice; a stream that does keeps the last answer.
            let entry = &mut self.entries[pos as usize];
            entry.fingerprint = fingerprint;
            entry.outcome = outcome;
            return;
        }
        let Ok(pos) = u32::try_from(self.entries.len()) else {
            return;
        };
        self.entries.push(LedgerEntry {
            key,
            fingerprint,
            outcome,
        });
        let entries = &self.entries;
        self.index.insert(key, pos, |p| entries[p as usize].key);
    }

    /// Gives back the memory the recorded keys do not need (for a state kept idle).
    pub fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        let entries = &self.entries;
        self.index.shrink_to_fit(|p| entries[p as usize].key);
    }

    /// How many keys are recorded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no key is recorded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_are_uuid_v5_of_the_body_json() {
        for name in [&b""[..], b"{}", &[b'x'; 55], &[b'y'; 64], &[b'z'; 1000]] {
            assert_eq!(
                v5(&TICKETING_NAMESPACE, name),
                Uuid::new_v5(&TICKETING_NAMESPACE, name)
            );
        }
        // Stored records carry fingerprints: the hashed JSON of a command must not change.
        let hold = crate::inventory::InventoryCommand::PlaceHold(crate::inventory::HoldRequest {
            order_id: crate::OrderId(Uuid::from_u128(1)),
            tier_id: crate::TierId(Uuid::from_u128(2)),
            selection: crate::inventory::Selection::Quantity { quantity: 3 },
            expires_at: chrono::DateTime::UNIX_EPOCH,
        });
        let stored = br#"{"type":"placeHold","hold":{"orderId":"00000000-0000-0000-0000-000000000001","tierId":"00000000-0000-0000-0000-000000000002","selection":{"kind":"quantity","quantity":3}}}"#;
        assert_eq!(
            hold.fingerprint(),
            Uuid::new_v5(&TICKETING_NAMESPACE, stored)
        );
        let body = serde_json::json!({"type": "publish", "n": [1, 2, 3]});
        assert_eq!(
            fingerprint(&body),
            Uuid::new_v5(&TICKETING_NAMESPACE, &serde_json::to_vec(&body).unwrap())
        );
    }
}
