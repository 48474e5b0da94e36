//! What the API needs from storage, and the values it passes in. The database-backed
//! implementation lives with the event store; tests use an in-memory one.

use std::fmt;
use std::future::Future;

use axum::http::HeaderValue;
use serde::{Serialize, Serializer};
use uuid::Uuid;

use super::orders::{OrderPage, OrderView};
use crate::domain::{CustomerId, OrderStatus, PlaceOrder};

/// Storage for the order API.
pub trait OrderRepository: Clone + Send + Sync + 'static {
    /// Starts a saga for `cmd`: picks the order id (UUIDv7, so ids sort by placement time),
    /// appends `domain::place`'s events and their outbox rows in one transaction, and returns
    /// the new order's view.
    ///
    /// With `idempotency`, the key is recorded in that same transaction. A key seen before
    /// with the same `body_fingerprint` returns the order it created, with `replayed: true`
    /// and nothing appended; with a different fingerprint it fails with
    /// [`RepoError::IdempotencyConflict`]. Concurrent requests with one key must resolve to one
    /// order (a unique constraint on the key does it).
    fn place(
        &self,
        cmd: PlaceOrder,
        idempotency: Option<IdempotencyRequest>,
    ) -> impl Future<Output = Result<Placed, RepoError>> + Send;

    /// The order with this id, or `None`.
    fn get(&self, id: Uuid) -> impl Future<Output = Result<Option<OrderView>, RepoError>> + Send;

    /// One page of orders matching the filters, newest first (id descending). Returns at most
    /// `q.limit` items, those with an id lower than `q.cursor`'s, and `next_cursor =
    /// Some(Cursor::after(last id))` when more may follow (e.g. fetch `limit + 1` rows).
    fn list(&self, q: ListQuery) -> impl Future<Output = Result<OrderPage, RepoError>> + Send;
}

/// Storage failures the API maps to a response.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// The Idempotency-Key was used before with a different body: 422.
    #[error("idempotency key reused with a different request body")]
    IdempotencyConflict,
    /// Anything else: 500, cause logged, body opaque.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

/// The result of [`OrderRepository::place`].
#[derive(Debug, Clone)]
pub struct Placed {
    pub view: OrderView,
    /// True when an earlier request with the same Idempotency-Key created this order.
    pub replayed: bool,
}

/// A client's `Idempotency-Key` and what its request said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRequest {
    pub key: IdempotencyKey,
    /// The canonical JSON of the parsed command ([`super::fingerprint`]): equal exactly when
    /// the two requests ask for the same order, whatever their whitespace or field order.
    /// Store it as text and compare for equality.
    pub body_fingerprint: String,
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    pub fn parse(value: &HeaderValue) -> Result<Self, &'static str> {
        let text = value.to_str().map_err(|_| "must be visible ASCII characters")?;
        if text.is_empty() || text.len() > Self::MAX_LEN {
            return Err("must be 1 to 255 characters");
        }
        if !text.bytes().all(|b| b.is_ascii_graphic() || b == b' ') {
            return Err("must be visible ASCII characters");
        }
        Ok(Self(text.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// `GET /orders` filters, parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    pub customer_id: Option<CustomerId>,
    pub status: Option<OrderStatus>,
    pub limit: PageLimit,
    pub cursor: Option<Cursor>,
}

/// How many orders a page holds: 1 to 200, default 50.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageLimit(u32);

impl PageLimit {
    pub const DEFAULT: PageLimit = PageLimit(50);
    pub const MAX: u32 = 200;

    pub fn parse(raw: &str) -> Result<Self, String> {
        match raw.parse::<u32>() {
            Ok(n) if (1..=Self::MAX).contains(&n) => Ok(Self(n)),
            _ => Err(format!("limit must be an integer between 1 and {}", Self::MAX)),
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl Default for PageLimit {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Where the next page starts: after the order with this id (pages go by id descending).
/// Clients see an opaque string.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Cursor {
    last_id: Uuid,
}

/// The `cursor` parameter is not one this API handed out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cursor is not a value returned as next_cursor")]
pub struct InvalidCursor;

impl Cursor {
    const PREFIX: &'static str = "o1.";

    /// The cursor for the page after the one that ended with `last_id`.
    pub fn after(last_id: Uuid) -> Self {
        Self { last_id }
    }

    /// The last id of the previous page; this page holds lower ids.
    pub fn last_id(self) -> Uuid {
        self.last_id
    }

    pub fn encode(self) -> String {
        format!("{}{}", Self::PREFIX, self.last_id.simple())
    }

    pub fn decode(raw: &str) -> Result<Self, InvalidCursor> {
        let hex = raw.strip_prefix(Self::PREFIX).ok_or(InvalidCursor)?;
        if hex.len() != 32 {
            return Err(InvalidCursor);
        }
        Uuid::try_parse(hex).map(Self::after).map_err(|_| InvalidCursor)
    }
}

impl fmt::Debug for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.encode())
    }
}

impl Serialize for Cursor {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.encode())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cursor_round_trips_through_its_opaque_text() {
        let cursor = Cursor::after(Uuid::now_v7());

        assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
    }

    #[test]
    fn a_cursor_the_api_did_not_hand_out_is_invalid() {
        let id = Uuid::now_v7();
        for raw in [String::new(), "garbage".to_owned(), id.to_string(), format!("o1.{id}"), "o1.zz".to_owned()] {
            assert_eq!(Cursor::decode(&raw), Err(InvalidCursor), "{raw}");
        }
    }

    #[test]
    fn page_limit_accepts_one_to_two_hundred() {
        assert_eq!(PageLimit::parse("1").map(PageLimit::get), Ok(1));
        assert_eq!(PageLimit::parse("200").map(PageLimit::get), Ok(200));
        for raw in ["0", "201", "-1", "ten", ""] {
            assert!(PageLimit::parse(raw).is_err(), "{raw}");
        }
    }

    #[test]
    fn idempotency_keys_are_one_to_255_visible_ascii_characters() {
        assert!(IdempotencyKey::parse(&HeaderValue::from_static("abc-123")).is_ok());
        assert!(IdempotencyKey::parse(&HeaderValue::from_static("")).is_err());
        let long = HeaderValue::from_str(&"k".repeat(256)).expect("header");
        assert!(IdempotencyKey::parse(&long).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn page_limit_parses_exactly_the_integers_one_to_two_hundred(raw in "\\PC{0,6}|[0-9]{1,4}|-?[0-9]{1,3}") {
            let expected = raw.parse::<u32>().ok().filter(|n| (1..=PageLimit::MAX).contains(n));
            prop_assert_eq!(PageLimit::parse(&raw).ok().map(PageLimit::get), expected);
        }

        #[test]
        fn a_cursor_decodes_only_from_its_own_encoding(raw in "\\PC{0,40}|o1\\.[0-9a-f]{30,34}", id in any::<u128>()) {
            let cursor = Cursor::after(Uuid::from_u128(id));
            prop_assert_eq!(Cursor::decode(&cursor.encode()), Ok(cursor));
            if let Ok(decoded) = Cursor::decode(&raw) {
                prop_assert_eq!(decoded.encode(), raw);
            }
        }

        #[test]
        fn idempotency_keys_are_one_to_255_visible_ascii_characters(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            if let Ok(value) = HeaderValue::from_bytes(&raw) {
                let expected = (1..=IdempotencyKey::MAX_LEN).contains(&raw.len())
                    && raw.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
                prop_assert_eq!(IdempotencyKey::parse(&value).is_ok(), expected);
            }
        }
    }
}
