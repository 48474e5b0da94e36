//! Kafka records that are hostile to a consumer, built from one valid envelope it would act
//! on: each breaks exactly one thing (size, payload types, a header, the schema version, the
//! source, the type). A consumer must dead-letter every one of them, change no state, and go on.

use uuid::Uuid;

use crate::envelope::{Envelope, header};

/// One hostile record and what is wrong with it.
#[derive(Debug, Clone)]
pub struct HostileRecord {
    pub what: String,
    pub key: String,
    pub headers: Vec<(String, String)>,
    pub payload: Option<Vec<u8>>,
}

/// Changes one record's headers or payload.
type Change<'a> = &'a dyn Fn(&mut Vec<(String, String)>, &mut Option<Vec<u8>>);

/// Every hostile variant of `valid` (a message the consumer acts on when intact). `forged_source`
/// is a service that may not publish on the topic; `max_payload_bytes` is the consumer's limit.
/// Each variant has its own message id, so none is mistaken for a redelivery of another.
pub fn variants(valid: &Envelope, forged_source: &str, max_payload_bytes: usize) -> Vec<HostileRecord> {
    let variant = |what: &str, change: Change<'_>| {
        let mut envelope = valid.clone();
        envelope.id = Uuid::now_v7();
        let mut headers = envelope.headers();
        let mut payload = Some(envelope.payload_bytes());
        change(&mut headers, &mut payload);
        HostileRecord { what: what.to_owned(), key: valid.subject.clone(), headers, payload }
    };
    let set = |headers: &mut Vec<(String, String)>, name: &str, value: &str| {
        headers.retain(|(k, _)| k != name);
        headers.push((name.to_owned(), value.to_owned()));
    };
    let without = |name: &'static str| {
        move |headers: &mut Vec<(String, String)>, _: &mut Option<Vec<u8>>| headers.retain(|(k, _)| k != name)
    };
    vec![
        variant("an oversized payload", &|_, payload| {
            let padding = "x".repeat(max_payload_bytes + 1);
            *payload = Some(serde_json::json!({ "padding": padding }).to_string().into_bytes());
        }),
        variant("fields of the wrong types", &|_, payload| {
            *payload = Some(wrong_types(&valid.data).to_string().into_bytes());
        }),
        variant("a payload that is not JSON", &|_, payload| *payload = Some(b"\xff\xfe{not json".to_vec())),
        variant("no payload", &|_, payload| *payload = None),
        variant("no ce_id header", &without(header::ID)),
        variant("no ce_type header", &without(header::TYPE)),
        variant("no ce_source header", &without(header::SOURCE)),
        variant("no ce_specversion header", &without(header::SPEC_VERSION)),
        variant("a malformed ce_id", &|headers, _| set(headers, header::ID, "not-a-uuid")),
        variant("a newer schema version", &|headers, _| set(headers, header::SCHEMA_VERSION, "2")),
        variant("a schema version that is not a number", &|headers, _| set(headers, header::SCHEMA_VERSION, "v1")),
        variant("a forged ce_source", &|headers, _| set(headers, header::SOURCE, forged_source)),
        variant("an unknown type", &|headers, _| set(headers, header::TYPE, "DropAllTables")),
        variant("a foreign content type", &|headers, _| {
            set(headers, header::CONTENT_TYPE, "application/x-java-serialized-object")
        }),
    ]
}

/// `value` with every field's type changed (strings become numbers, numbers strings, lists
/// and objects scalars), so no field decodes as its contract says.
pub fn wrong_types(value: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match value {
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| {
                    let wrong = match v {
                        Value::String(_) => Value::from(7),
                        Value::Number(_) => Value::from("seven"),
                        Value::Bool(_) => Value::from("yes"),
                        Value::Array(_) => Value::from("a list"),
                        Value::Object(_) => Value::from(false),
                        Value::Null => Value::from(1),
                    };
                    (k.clone(), wrong)
                })
                .collect(),
        ),
        _ => serde_json::json!({"unexpected": true}),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_variant_fails_to_decode_or_breaks_a_rule_and_has_its_own_id() {
        let valid = Envelope::new("OrderPlaced", 1, "order-svc", "k", &serde_json::json!({"order_id": "x", "n": 1}))
            .expect("envelope");
        let records = variants(&valid, "payment-svc", 1024);
        let ids: std::collections::HashSet<_> = records
            .iter()
            .filter_map(|r| r.headers.iter().find(|(k, _)| k == header::ID).map(|(_, v)| v.clone()))
            .collect();
        assert_eq!(ids.len(), records.iter().filter(|r| r.headers.iter().any(|(k, _)| k == header::ID)).count());
        assert!(!ids.contains(&valid.id.to_string()));
        assert!(records.iter().any(|r| r.payload.as_ref().is_some_and(|p| p.len() > 1024)));
        assert_eq!(wrong_types(&valid.data), serde_json::json!({"order_id": 7, "n": "seven"}));
    }
}
