//! The message envelope: what every saga message carries besides its JSON payload.
//!
//! On the wire it follows the CloudEvents Kafka protocol binding in binary mode: the attributes
//! travel as `ce_*` headers, the payload is the Kafka value (`content-type: application/json`),
//! and the Kafka key is the subject (the order id), so one order's messages stay on one
//! partition and in order. The W3C trace context travels as `traceparent`/`tracestate`.
//!
//! Decoding never panics: a message whose headers or payload cannot be decoded yields a
//! [`DecodeError`], which the consumer loop dead-letters.

use chrono::{DateTime, Utc};
use rdkafka::message::{Headers, Message};
use serde::Serialize;
use serde::de::DeserializeOwned;
use uuid::Uuid;

/// The CloudEvents spec version we emit.
pub const SPEC_VERSION: &str = "1.0";
/// The only content type we emit and accept.
pub const CONTENT_TYPE: &str = "application/json";

/// Header names (CloudEvents Kafka binding plus our extensions and W3C trace context).
pub mod header {
    pub const SPEC_VERSION: &str = "ce_specversion";
    pub const ID: &str = "ce_id";
    pub const TYPE: &str = "ce_type";
    pub const SOURCE: &str = "ce_source";
    pub const TIME: &str = "ce_time";
    pub const SUBJECT: &str = "ce_subject";
    pub const SCHEMA_VERSION: &str = "ce_schemaversion";
    pub const CORRELATION_ID: &str = "ce_correlationid";
    pub const CAUSATION_ID: &str = "ce_causationid";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const TRACEPARENT: &str = "traceparent";
    pub const TRACESTATE: &str = "tracestate";
}

/// A decoded saga message.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// Unique message id (UUID v7): the consumers' dedupe key.
    pub id: Uuid,
    /// Event type, e.g. `OrderPlaced`.
    pub event_type: String,
    /// Version of the payload schema for this type; upcast on read when old.
    pub schema_version: i32,
    /// The service that published it, e.g. `inventory-svc`.
    pub source: String,
    pub time: DateTime<Utc>,
    /// The order id: also the Kafka key.
    pub subject: String,
    /// The id shared by every message of one saga (the order's first message id).
    pub correlation_id: Uuid,
    /// The id of the message that caused this one, if any.
    pub causation_id: Option<Uuid>,
    pub traceparent: Option<String>,
    pub tracestate: Option<String>,
    pub data: serde_json::Value,
}

/// Why a Kafka message is not a valid envelope.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("header {name} is not valid: {reason}")]
    InvalidHeader { name: &'static str, reason: String },
    #[error("unsupported content type {0:?}")]
    UnsupportedContentType(String),
    #[error("message has no payload")]
    MissingPayload,
    #[error("payload is not valid JSON: {0}")]
    InvalidJson(#[from] serde_json::Error),
    #[error("payload of {event_type} does not match its schema: {source}")]
    Schema {
        event_type: String,
        #[source]
        source: serde_json::Error,
    },
}

impl Envelope {
    /// A new root message (no cause), e.g. `OrderPlaced` from the API.
    pub fn new<T: Serialize>(
        event_type: &str,
        schema_version: i32,
        source: &str,
        subject: impl Into<String>,
        payload: &T,
    ) -> Result<Self, serde_json::Error> {
        let id = Uuid::now_v7();
        let (traceparent, tracestate) = crate::telemetry::current_trace_headers();
        Ok(Self {
            id,
            event_type: event_type.to_owned(),
            schema_version,
            source: source.to_owned(),
            time: Utc::now(),
            subject: subject.into(),
            correlation_id: id,
            causation_id: None,
            traceparent,
            tracestate,
            data: serde_json::to_value(payload)?,
        })
    }

    /// A message caused by `cause`: same subject and correlation, causation = cause's id.
    pub fn caused_by<T: Serialize>(
        cause: &Envelope,
        event_type: &str,
        schema_version: i32,
        source: &str,
        payload: &T,
    ) -> Result<Self, serde_json::Error> {
        let mut envelope = Self::new(event_type, schema_version, source, cause.subject.clone(), payload)?;
        envelope.correlation_id = cause.correlation_id;
        envelope.causation_id = Some(cause.id);
        Ok(envelope)
    }

    /// Decode the payload into its contract type.
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T, DecodeError> {
        serde_json::from_value(self.data.clone())
            .map_err(|source| DecodeError::Schema { event_type: self.event_type.clone(), source })
    }

    /// The headers to put on the Kafka record, in a stable order.
    pub fn headers(&self) -> Vec<(String, String)> {
        let mut headers = vec![
            (header::SPEC_VERSION.to_owned(), SPEC_VERSION.to_owned()),
            (header::ID.to_owned(), self.id.to_string()),
            (header::TYPE.to_owned(), self.event_type.clone()),
            (header::SOURCE.to_owned(), self.source.clone()),
            (header::TIME.to_owned(), self.time.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
            (header::SUBJECT.to_owned(), self.subject.clone()),
            (header::SCHEMA_VERSION.to_owned(), self.schema_version.to_string()),
            (header::CORRELATION_ID.to_owned(), self.correlation_id.to_string()),
            (header::CONTENT_TYPE.to_owned(), CONTENT_TYPE.to_owned()),
        ];
        if let Some(causation) = self.causation_id {
            headers.push((header::CAUSATION_ID.to_owned(), causation.to_string()));
        }
        if let Some(tp) = &self.traceparent {
            headers.push((header::TRACEPARENT.to_owned(), tp.clone()));
        }
        if let Some(ts) = &self.tracestate {
            headers.push((header::TRACESTATE.to_owned(), ts.clone()));
        }
        headers
    }

    /// The Kafka record value.
    pub fn payload_bytes(&self) -> Vec<u8> {
        // Serializing a `Value` cannot fail.
        serde_json::to_vec(&self.data).unwrap_or_default()
    }

    /// Decode a Kafka message (borrowed or owned).
    pub fn from_message<M: Message>(message: &M) -> Result<Self, DecodeError> {
        let headers = header_map(message);
        Self::from_parts(&headers, message.payload())
    }

    /// Decode from header pairs and a payload (used for replays and dead letters too).
    pub fn from_parts(headers: &[(String, String)], payload: Option<&[u8]>) -> Result<Self, DecodeError> {
        let get = |name: &'static str| headers.iter().rev().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let required = |name: &'static str| get(name).ok_or(DecodeError::MissingHeader(name));
        let parse_uuid = |name: &'static str, value: &str| {
            Uuid::parse_str(value).map_err(|e| DecodeError::InvalidHeader { name, reason: e.to_string() })
        };

        let spec = required(header::SPEC_VERSION)?;
        if spec != SPEC_VERSION {
            return Err(DecodeError::InvalidHeader {
                name: header::SPEC_VERSION,
                reason: format!("unsupported spec version {spec:?}"),
            });
        }
        let content_type = get(header::CONTENT_TYPE).unwrap_or(CONTENT_TYPE);
        if !content_type.starts_with(CONTENT_TYPE) {
            return Err(DecodeError::UnsupportedContentType(content_type.to_owned()));
        }
        let id = parse_uuid(header::ID, required(header::ID)?)?;
        let event_type = required(header::TYPE)?.to_owned();
        if event_type.is_empty() {
            return Err(DecodeError::InvalidHeader { name: header::TYPE, reason: "empty".into() });
        }
        let source = required(header::SOURCE)?.to_owned();
        let time = DateTime::parse_from_rfc3339(required(header::TIME)?)
            .map_err(|e| DecodeError::InvalidHeader { name: header::TIME, reason: e.to_string() })?
            .with_timezone(&Utc);
        let subject = required(header::SUBJECT)?.to_owned();
        let schema_version = match get(header::SCHEMA_VERSION) {
            None => 1,
            Some(v) => v.parse::<i32>().ok().filter(|v| *v >= 1).ok_or_else(|| DecodeError::InvalidHeader {
                name: header::SCHEMA_VERSION,
                reason: format!("{v:?} is not a positive integer"),
            })?,
        };
        let correlation_id = match get(header::CORRELATION_ID) {
            Some(v) => parse_uuid(header::CORRELATION_ID, v)?,
            None => id,
        };
        let causation_id = get(header::CAUSATION_ID).map(|v| parse_uuid(header::CAUSATION_ID, v)).transpose()?;
        let payload = payload.ok_or(DecodeError::MissingPayload)?;
        let data: serde_json::Value = serde_json::from_slice(payload)?;
        Ok(Self {
            id,
            event_type,
            schema_version,
            source,
            time,
            subject,
            correlation_id,
            causation_id,
            traceparent: get(header::TRACEPARENT).map(str::to_owned),
            tracestate: get(header::TRACESTATE).map(str::to_owned),
            data,
        })
    }
}

/// All headers of a Kafka message as UTF-8 pairs (values that are not UTF-8 are replaced
/// lossily, so a hostile header cannot make decoding panic).
pub fn header_map<M: Message>(message: &M) -> Vec<(String, String)> {
    let Some(headers) = message.headers() else {
        return Vec::new();
    };
    headers
        .iter()
        .map(|h| {
            let value = h.value.map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
            (h.key.to_owned(), value)
        })
        .collect()
}

/// The value of a message's header `name` (the last one, as decoding reads it), borrowed,
/// without decoding anything else: enough to set aside a message by its type and source.
/// `None` when it is absent or not UTF-8.
pub fn header_value<'m, M: Message>(message: &'m M, name: &str) -> Option<&'m str> {
    let headers = message.headers()?;
    let found = headers.iter().filter(|h| h.key == name).last()?;
    std::str::from_utf8(found.value?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sample() -> Envelope {
        let mut e = Envelope::new("OrderPlaced", 1, "order-svc", "order-1", &json!({"a": 1})).expect("envelope");
        e.traceparent = Some("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into());
        e
    }

    #[test]
    fn headers_round_trip_through_decoding() {
        let original = sample();
        let caused = Envelope::caused_by(&original, "InventoryReserved", 2, "inventory-svc", &json!({"b": 2}))
            .expect("envelope");
        let decoded = Envelope::from_parts(&caused.headers(), Some(&caused.payload_bytes())).expect("decodes");
        // Times round-trip at microsecond precision.
        assert_eq!(decoded.time.timestamp_micros(), caused.time.timestamp_micros());
        assert_eq!(Envelope { time: caused.time, ..decoded }, caused);
        assert_eq!(caused.correlation_id, original.id);
        assert_eq!(caused.causation_id, Some(original.id));
        assert_eq!(caused.subject, original.subject);
    }

    #[test]
    fn missing_id_header_is_a_decode_error_not_a_panic() {
        let headers: Vec<_> = sample().headers().into_iter().filter(|(k, _)| k != header::ID).collect();
        let err = Envelope::from_parts(&headers, Some(b"{}")).expect_err("must fail");
        assert!(matches!(err, DecodeError::MissingHeader(header::ID)));
    }

    #[test]
    fn garbage_payload_is_a_decode_error() {
        let err = Envelope::from_parts(&sample().headers(), Some(b"\xff not json")).expect_err("must fail");
        assert!(matches!(err, DecodeError::InvalidJson(_)));
    }

    #[test]
    fn wrong_content_type_is_rejected() {
        let mut headers = sample().headers();
        headers.push((header::CONTENT_TYPE.into(), "application/avro".into()));
        let err = Envelope::from_parts(&headers, Some(b"{}")).expect_err("must fail");
        assert!(matches!(err, DecodeError::UnsupportedContentType(_)));
    }

    #[test]
    fn schema_version_defaults_to_one_and_rejects_garbage() {
        let headers: Vec<_> = sample().headers().into_iter().filter(|(k, _)| k != header::SCHEMA_VERSION).collect();
        assert_eq!(Envelope::from_parts(&headers, Some(b"{}")).expect("decodes").schema_version, 1);
        let mut bad = headers.clone();
        bad.push((header::SCHEMA_VERSION.into(), "-3".into()));
        assert!(Envelope::from_parts(&bad, Some(b"{}")).is_err());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn header() -> impl Strategy<Value = (String, String)> {
            let names = prop_oneof![
                Just(header::SPEC_VERSION.to_owned()),
                Just(header::ID.to_owned()),
                Just(header::TYPE.to_owned()),
                Just(header::SOURCE.to_owned()),
                Just(header::TIME.to_owned()),
                Just(header::SUBJECT.to_owned()),
                Just(header::SCHEMA_VERSION.to_owned()),
                Just(header::CORRELATION_ID.to_owned()),
                Just(header::CAUSATION_ID.to_owned()),
                Just(header::CONTENT_TYPE.to_owned()),
                "\\PC{0,12}",
            ];
            (names, "\\PC{0,40}")
        }

        proptest! {
            #[test]
            fn decoding_any_headers_and_payload_never_panics(
                headers in proptest::collection::vec(header(), 0..14),
                payload in proptest::option::of(proptest::collection::vec(any::<u8>(), 0..64)),
            ) {
                let _ = Envelope::from_parts(&headers, payload.as_deref());
            }

            #[test]
            fn one_broken_header_of_a_valid_message_is_an_error_not_a_guess(
                which in 0usize..9,
                value in "\\PC{0,20}",
            ) {
                let mut headers = sample().headers();
                let name = headers[which].0.clone();
                headers[which].1 = value.clone();
                if let Ok(decoded) = Envelope::from_parts(&headers, Some(b"{}")) {
                    // Accepted only if the value is still valid for that header.
                    match name.as_str() {
                        header::SPEC_VERSION => prop_assert_eq!(value, SPEC_VERSION),
                        header::ID => prop_assert_eq!(Uuid::parse_str(&value).ok(), Some(decoded.id)),
                        header::SCHEMA_VERSION => prop_assert!(decoded.schema_version >= 1),
                        header::TYPE => prop_assert!(!decoded.event_type.is_empty()),
                        _ => {}
                    }
                }
            }
        }
    }
}
