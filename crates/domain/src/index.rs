//! Compact hash indexes over the state's vectors: an index stores only the 4-byte position of
//! an element and finds it by hashing and comparing the element itself, so that no id is
//! kept twice. A hash table of positions costs about 5 bytes per slot, where a map from a
//! 16-byte id to a position costs about 21.

use std::hash::{BuildHasher, Hash};
use std::sync::LazyLock;

use hashbrown::HashTable;

/// One hasher for every index of the process: positions are hashed through their element,
/// so every lookup and every rehash must agree. Seeded randomly once per process, so that
/// nobody outside can pick ids that pile up in one slot.
static HASHER: LazyLock<hashbrown::DefaultHashBuilder> = LazyLock::new(Default::default);

/// The index hash of a value.
pub(crate) fn hash_of<T: Hash + ?Sized>(value: &T) -> u64 {
    HASHER.hash_one(value)
}

/// The key of [`keyed_hash`]: SipHash with a random key drawn once per process.
static KEYED: LazyLock<std::hash::RandomState> = LazyLock::new(std::hash::RandomState::new);

/// A 64-bit hash of `value` for an in-memory identity whose collision would change an
/// answer (an idempotency key, a payment reference), not only slow a lookup: SipHash under
/// a per-process secret key, so nobody can craft two values that collide. It is only ever
/// compared within the process (states are folded afresh by each), never stored.
pub(crate) fn keyed_hash<T: Hash + ?Sized>(value: &T) -> u64 {
    KEYED.hash_one(value)
}

/// Positions in a vector, found by a key of the element at each position.
///
/// The index does not know the vector: each call passes `hash`, the hash of the key sought
/// (or of the element inserted), and closures that tell whether the element at a position
/// has the key, or rehash the element at a position when the table grows.
#[derive(Clone, Debug, Default)]
pub(crate) struct Index(HashTable<u32>);

impl Index {
    /// The position whose element `is` the one sought.
    pub(crate) fn find(&self, hash: u64, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        self.0.find(hash, |&pos| is(pos)).copied()
    }

    /// Indexes the element at `pos`, whose key hashes to `hash` (and is not indexed yet).
    pub(crate) fn insert(&mut self, hash: u64, pos: u32, rehash: impl Fn(u32) -> u64) {
        self.0.insert_unique(hash, pos, |&p| rehash(p));
    }

    /// Makes room for `additional` more positions.
    pub(crate) fn reserve(&mut self, additional: usize, rehash: impl Fn(u32) -> u64) {
        self.0.reserve(additional, |&p| rehash(p));
    }

    /// Gives back the memory the current positions do not need.
    pub(crate) fn shrink_to_fit(&mut self, rehash: impl Fn(u32) -> u64) {
        self.0.shrink_to_fit(|&p| rehash(p));
    }

    /// How many positions are indexed.
    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }
}

/// Two indexes are equal when they index as many positions: each indexes every position of
/// its vector, so over equal vectors they are interchangeable (their slot layout, which
/// depends on the order of insertions, is not part of the state).
impl PartialEq for Index {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
    }
}

impl Eq for Index {}
