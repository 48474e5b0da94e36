//! `Idempotency-Key`: a client's retry of `POST /orders` with the same key and body gets the
//! order the first request created, not a second saga. The key is recorded in the placing
//! transaction, so a key and its order commit together or not at all.

use chrono::Utc;
use shared::db::Tx;
use shared::on_tx;
use uuid::Uuid;

use crate::domain::{CustomerId, PlaceOrder};

/// The `Idempotency-Key` records, pruned by age (`IDEMPOTENCY_KEY_RETENTION_DAYS`).
pub const IDEMPOTENCY_KEYS: shared::retention::Table =
    shared::retention::Table { name: "idempotency_keys", key: "idempotency_key", written_at: "created_at" };

/// A client's `Idempotency-Key` and what its request said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyRequest {
    pub key: IdempotencyKey,
    /// The canonical JSON of the parsed command ([`fingerprint`]): equal exactly when the two
    /// requests ask for the same order, whatever their whitespace or field order. Store it as
    /// text and compare for equality.
    pub body_fingerprint: String,
}

/// The `Idempotency-Key` header: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    pub const MAX_LEN: usize = 255;

    /// Parses the header's raw bytes. Bytes a header value may hold but that are not visible
    /// ASCII (obs-text, tab) are reported as such before the length is looked at.
    pub fn parse(raw: &[u8]) -> Result<Self, &'static str> {
        let header_text = raw.iter().all(|&b| b == b'\t' || (0x20..0x7f).contains(&b));
        let text = std::str::from_utf8(raw).ok().filter(|_| header_text).ok_or("must be visible ASCII characters")?;
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

/// The idempotency fingerprint of a command: its canonical JSON. Two bodies that parse to the
/// same command (whitespace, field order, `nl` vs `NL`, unknown fields) have the same one.
pub fn fingerprint(cmd: &PlaceOrder) -> String {
    serde_json::json!({
        "customer_id": cmd.customer_id.as_str(),
        "items": cmd.items.to_contract(),
        "ship_to": cmd.ship_to.to_contract(),
    })
    .to_string()
}

/// The key as stored: scoped per customer, so one customer's key never collides with (or
/// reveals) another's. A newline can be in neither a customer id nor a header value.
pub(super) fn scoped_key(customer_id: &CustomerId, key: &IdempotencyKey) -> String {
    format!("{}\n{}", customer_id.as_str(), key.as_str())
}

/// Claims `scoped_key` for a new order. `None`: claimed, place the order and [`bind_order`]
/// it. `Some((fingerprint, order_id))`: an earlier request holds the key.
pub(super) async fn claim(
    tx: &mut Tx,
    scoped_key: &str,
    body_fingerprint: &str,
) -> Result<Option<(String, Uuid)>, sqlx::Error> {
    let inserted = on_tx!(&mut *tx, |conn| {
        sqlx::query(
            "INSERT INTO idempotency_keys (idempotency_key, fingerprint, order_id, created_at)
             VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
        )
        .bind(scoped_key)
        .bind(body_fingerprint)
        .bind(Uuid::nil())
        .bind(Utc::now())
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    if inserted != 0 {
        return Ok(None);
    }
    let earlier: (String, Uuid) = on_tx!(&mut *tx, |conn| {
        sqlx::query_as("SELECT fingerprint, order_id FROM idempotency_keys WHERE idempotency_key = $1")
            .bind(scoped_key)
            .fetch_one(conn)
            .await
    })?;
    Ok(Some(earlier))
}

/// Points a claimed key at the order its request created.
pub(super) async fn bind_order(tx: &mut Tx, scoped_key: &str, order_id: Uuid) -> Result<(), sqlx::Error> {
    on_tx!(&mut *tx, |conn| {
        sqlx::query("UPDATE idempotency_keys SET order_id = $1 WHERE idempotency_key = $2")
            .bind(order_id)
            .bind(scoped_key)
            .execute(conn)
            .await
            .map(|r| r.rows_affected())
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn idempotency_keys_are_one_to_255_visible_ascii_characters() {
        assert!(IdempotencyKey::parse(b"abc-123").is_ok());
        assert!(IdempotencyKey::parse(b"").is_err());
        assert!(IdempotencyKey::parse("k".repeat(256).as_bytes()).is_err());
    }

    #[test]
    fn a_key_with_a_byte_outside_visible_ascii_says_so_whatever_its_length() {
        let long = [b"\xe9".as_slice(), "k".repeat(300).as_bytes()].concat();
        assert_eq!(IdempotencyKey::parse(&long), Err("must be visible ASCII characters"));
        assert_eq!(IdempotencyKey::parse(b"\t"), Err("must be visible ASCII characters"));
    }

    proptest! {
        #[test]
        fn a_key_parses_exactly_when_it_is_one_to_255_visible_ascii_characters(raw in proptest::collection::vec(any::<u8>(), 0..300)) {
            let expected = (1..=IdempotencyKey::MAX_LEN).contains(&raw.len())
                && raw.iter().all(|b| b.is_ascii_graphic() || *b == b' ');
            prop_assert_eq!(IdempotencyKey::parse(&raw).is_ok(), expected);
        }
    }
}
