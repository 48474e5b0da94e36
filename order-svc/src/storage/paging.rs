//! Keyset paging for the listings: a page size and an opaque cursor. Both listings page by id
//! descending, so a cursor is the last id of the page before.

use std::fmt;

use serde::{Serialize, Serializer};
use uuid::Uuid;

/// How many items a page holds: 1 to 200, default 50.
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

/// Where the next page starts: after the item with this id (pages go by id descending).
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
    }
}
