//! A Kafka message as sagactl holds it (owned, headers kept as raw bytes so a republished copy
//! is byte-for-byte the original), its JSON form for JSON-lines output, and what the saga's
//! envelope says about it.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use shared::envelope::{DecodeError, Envelope, header};

/// One Kafka message.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    /// The Kafka timestamp (producer create time).
    pub timestamp: Option<DateTime<Utc>>,
    pub key: Option<Vec<u8>>,
    /// Headers in order, as raw bytes.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
    pub payload: Option<Vec<u8>>,
}

impl Record {
    /// The key as text (lossy).
    pub fn key_text(&self) -> Option<String> {
        self.key.as_deref().map(|k| String::from_utf8_lossy(k).into_owned())
    }

    /// Does the key equal `key`?
    pub fn has_key(&self, key: &str) -> bool {
        self.key.as_deref() == Some(key.as_bytes())
    }

    /// The last value of header `name`, as text (lossy).
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_deref().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default())
    }

    /// Headers as text pairs (lossy), as the envelope decoder reads them.
    pub fn text_headers(&self) -> Vec<(String, String)> {
        self.headers
            .iter()
            .map(|(k, v)| {
                (k.clone(), v.as_deref().map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default())
            })
            .collect()
    }

    /// `ce_type`, if present.
    pub fn event_type(&self) -> Option<String> {
        self.header(header::TYPE)
    }

    /// Decode the saga envelope.
    pub fn envelope(&self) -> Result<Envelope, DecodeError> {
        Envelope::from_parts(&self.text_headers(), self.payload.as_deref())
    }

    /// The payload as JSON, if it is JSON.
    pub fn payload_json(&self) -> Option<Value> {
        self.payload.as_deref().and_then(|p| serde_json::from_slice(p).ok())
    }

    /// `topic/partition/offset`.
    pub fn position(&self) -> String {
        format!("{}/{}/{}", self.topic, self.partition, self.offset)
    }

    /// The JSON-lines form: position, timestamp, key, the envelope's main attributes, headers
    /// (as `[name, value]` pairs, in order: names may repeat), and the payload (as JSON when it
    /// is JSON, else as lossy text under `payload_text`).
    pub fn to_json(&self) -> RecordJson {
        let payload_json = self.payload_json();
        let payload_text = match (&payload_json, &self.payload) {
            (None, Some(raw)) => Some(String::from_utf8_lossy(raw).into_owned()),
            _ => None,
        };
        RecordJson {
            topic: self.topic.clone(),
            partition: self.partition,
            offset: self.offset,
            timestamp: self.timestamp,
            key: self.key_text(),
            id: self.header(header::ID),
            event_type: self.header(header::TYPE),
            source: self.header(header::SOURCE),
            time: self.header(header::TIME),
            schema_version: self.header(header::SCHEMA_VERSION),
            trace_id: self.header(header::TRACEPARENT).and_then(|tp| trace_id(&tp)),
            headers: self.text_headers(),
            payload: payload_json.unwrap_or(Value::Null),
            payload_text,
        }
    }
}

/// A message as one JSON line.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct RecordJson {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub timestamp: Option<DateTime<Utc>>,
    pub key: Option<String>,
    pub id: Option<String>,
    #[serde(rename = "type")]
    pub event_type: Option<String>,
    pub source: Option<String>,
    pub time: Option<String>,
    pub schema_version: Option<String>,
    pub trace_id: Option<String>,
    pub headers: Vec<(String, String)>,
    pub payload: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub payload_text: Option<String>,
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
pub fn trace_id(traceparent: &str) -> Option<String> {
    let mut parts = traceparent.split('-');
    let (_version, id) = (parts.next()?, parts.next()?);
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

/// The payload fields an operator looks for first, whatever the event type: reasons, amounts,
/// compensation triggers, notification kinds, carriers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct KeyFields {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount_minor: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total_minor: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trigger: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub carrier: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub customer_id: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub compensations: Vec<String>,
    /// `sku×quantity` of an OrderPlaced.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub items: Vec<String>,
    /// Where an OrderPlaced ships to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub country: Option<String>,
}

impl KeyFields {
    pub fn of(payload: &Value) -> Self {
        let text = |name: &str| payload.get(name).and_then(Value::as_str).map(str::to_owned);
        let number = |name: &str| payload.get(name).and_then(Value::as_i64);
        Self {
            reason: text("reason"),
            amount_minor: number("amount_minor"),
            total_minor: number("total_minor"),
            trigger: text("trigger"),
            kind: text("kind"),
            carrier: text("carrier"),
            customer_id: text("customer_id"),
            compensations: payload
                .get("compensations")
                .and_then(Value::as_array)
                .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                .unwrap_or_default(),
            items: payload
                .get("items")
                .and_then(Value::as_array)
                .map(|items| {
                    items
                        .iter()
                        .map(|i| {
                            format!("{}×{}", i["sku"].as_str().unwrap_or("?"), i["quantity"].as_u64().unwrap_or(0))
                        })
                        .collect()
                })
                .unwrap_or_default(),
            country: payload
                .get("items")
                .and_then(|_| payload.pointer("/ship_to/country"))
                .and_then(Value::as_str)
                .map(str::to_owned),
        }
    }

    /// `reason=out_of_stock amount=30.00 EUR ...`; the customer, items and destination only for
    /// the order's placement.
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.items.is_empty() {
            if let Some(customer) = &self.customer_id {
                parts.push(format!("customer={customer}"));
            }
            parts.push(format!("items={}", self.items.join(",")));
            if let Some(country) = &self.country {
                parts.push(format!("ship_to={country}"));
            }
        }
        if let Some(reason) = &self.reason {
            parts.push(format!("reason={reason}"));
        }
        if let Some(amount) = self.amount_minor {
            parts.push(format!("amount={}", crate::output::money(amount)));
        }
        if let Some(total) = self.total_minor {
            parts.push(format!("total={}", crate::output::money(total)));
        }
        if let Some(trigger) = &self.trigger {
            parts.push(format!("trigger={trigger}"));
        }
        if let Some(kind) = &self.kind {
            parts.push(format!("kind={kind}"));
        }
        if let Some(carrier) = &self.carrier {
            parts.push(format!("carrier={carrier}"));
        }
        if !self.compensations.is_empty() {
            parts.push(format!("compensations={}", self.compensations.join("+")));
        }
        parts.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(headers: &[(&str, &str)], payload: &[u8]) -> Record {
        Record {
            topic: "orders.events".into(),
            partition: 1,
            offset: 7,
            timestamp: None,
            key: Some(b"order-1".to_vec()),
            headers: headers.iter().map(|(k, v)| ((*k).to_owned(), Some(v.as_bytes().to_vec()))).collect(),
            payload: Some(payload.to_vec()),
        }
    }

    #[test]
    fn trace_ids_come_from_the_traceparent() {
        assert_eq!(
            trace_id("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(trace_id("garbage"), None);
        assert_eq!(trace_id("00-xyz-b7ad6b7169203331-01"), None);
    }

    #[test]
    fn json_lines_keep_repeated_headers_and_non_json_payloads() {
        let r = record(&[("ce_type", "A"), ("ce_type", "B")], b"\xff not json");
        let json = serde_json::to_value(r.to_json()).expect("serializes");
        assert_eq!(json["headers"], json!([["ce_type", "A"], ["ce_type", "B"]]));
        assert_eq!(json["type"], "B");
        assert_eq!(json["payload"], Value::Null);
        assert!(json["payload_text"].as_str().is_some_and(|t| t.ends_with("not json")));
    }

    #[test]
    fn key_fields_pick_what_operators_look_for() {
        let fields = KeyFields::of(&json!({"reason": "payment_declined", "amount_minor": 3000, "other": 1}));
        assert_eq!(fields.summary(), "reason=payment_declined amount=30.00 EUR");
    }
}
