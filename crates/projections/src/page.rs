//! Cursor pagination shared by the list queries.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::QueryError;

/// Most items one page may ask for.
pub const MAX_PAGE_SIZE: usize = 200;

/// Which page to return: at most `first` items after the opaque cursor `after`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    /// How many items, 1..=[`MAX_PAGE_SIZE`].
    pub first: usize,
    /// The `end_cursor` of the previous page; `None` for the first page.
    pub after: Option<String>,
}

impl PageRequest {
    /// The first page of `first` items.
    pub fn first(first: usize) -> Self {
        Self { first, after: None }
    }

    /// The page after `cursor`.
    pub fn after(first: usize, cursor: impl Into<String>) -> Self {
        Self {
            first,
            after: Some(cursor.into()),
        }
    }

    pub(crate) fn limit(&self) -> Result<usize, QueryError> {
        if self.first == 0 || self.first > MAX_PAGE_SIZE {
            return Err(QueryError::InvalidInput(format!(
                "page size must be between 1 and {MAX_PAGE_SIZE}, got {}",
                self.first
            )));
        }
        Ok(self.first)
    }
}

/// One page of results.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Page<T> {
    /// The items, in the query's stable order.
    pub items: Vec<T>,
    /// Pass to [`PageRequest::after`] for the next page; `None` when there are no items.
    pub end_cursor: Option<String>,
    /// Whether more items follow.
    pub has_next_page: bool,
}

/// Encodes a cursor position as an opaque string.
pub(crate) fn encode<K: Serialize>(kind: &str, key: &K) -> String {
    // Serialising plain keys cannot fail; an empty cursor would restart from the top.
    let json = serde_json::to_vec(&(kind, key)).unwrap_or_default();
    URL_SAFE_NO_PAD.encode(json)
}

/// Decodes a cursor made by [`encode`] for the same `kind` of list.
pub(crate) fn decode<K: DeserializeOwned>(kind: &str, cursor: &str) -> Result<K, QueryError> {
    let bad = || QueryError::InvalidInput(format!("cursor {cursor:?} is not valid for this list"));
    let bytes = URL_SAFE_NO_PAD.decode(cursor).map_err(|_| bad())?;
    let (k, key): (String, K) = serde_json::from_slice(&bytes).map_err(|_| bad())?;
    if k != kind {
        return Err(bad());
    }
    Ok(key)
}
