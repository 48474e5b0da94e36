//! The Kafka side of the saga as an AsyncAPI 3.0 document, generated from the topology
//! ([`crate::topology`]) and the contract types ([`crate::contracts`]): a channel per topic
//! (and per dead-letter topic), a message per type with the CloudEvents headers and the JSON
//! Schema of its payload, each message's key, and a send or receive operation per service.
//!
//! `docs/asyncapi.yaml` is this document; `cargo run -p shared --bin asyncapi` writes it, a test
//! fails when it is out of date, and CI validates it with the AsyncAPI parser.

use schemars::SchemaGenerator;
use schemars::generate::SchemaSettings;
use serde_json::{Map, Value, json};

use crate::consumer::dlq_header;
use crate::contracts;
use crate::envelope::header;
use crate::topology;

/// The document, as a JSON value (see [`to_yaml`]).
pub fn document() -> Value {
    let mut settings = SchemaSettings::draft07();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = SchemaGenerator::new(settings);
    let payloads: Vec<(&str, Value)> =
        contracts::payload_schemas(&mut generator).into_iter().map(|(t, s)| (t, s.to_value())).collect();
    let payload = |t: &str| payloads.iter().find(|(name, _)| *name == t).map(|(_, s)| s.clone());

    let mut schemas: Map<String, Value> =
        generator.take_definitions(true).into_iter().map(|(k, v)| (k, strip_schema_keyword(v))).collect();
    schemas.insert("CloudEventsHeaders".into(), cloudevents_headers());
    schemas.insert("DeadLetterHeaders".into(), dead_letter_headers());

    let mut messages = Map::new();
    for channel in &topology::CHANNELS {
        for t in channel.carries {
            messages.entry(t.to_string()).or_insert_with(|| message(t, payload(t).unwrap_or(json!({}))));
        }
    }
    messages.insert("DeadLetter".into(), dead_letter_message());

    let mut channels = Map::new();
    let mut operations = Map::new();
    for channel in &topology::CHANNELS {
        let id = channel_id(channel.name);
        let channel_messages: Map<String, Value> = channel
            .carries
            .iter()
            .map(|t| (t.to_string(), json!({"$ref": format!("#/components/messages/{t}")})))
            .collect();
        channels.insert(
            id.clone(),
            json!({
                "address": channel.name,
                "title": channel.name,
                "description": format!(
                    "{}. Published by {}; keyed by {}. Deployments may prefix every topic name (TOPIC_PREFIX).",
                    capitalize(channel.description),
                    channel.publisher,
                    channel.key
                ),
                "messages": channel_messages,
            }),
        );
        let refs = |types: Vec<&str>| -> Vec<Value> {
            types.iter().map(|t| json!({"$ref": format!("#/channels/{id}/messages/{t}")})).collect()
        };
        operations.insert(
            format!("{}Sends{}", operation_id(channel.publisher), upper_first(&id)),
            json!({
                "action": "send",
                "channel": {"$ref": format!("#/channels/{id}")},
                "summary": format!("{} publishes on {} through its transactional outbox.", channel.publisher, channel.name),
                "messages": refs(channel.carries.to_vec()),
            }),
        );
        for node in topology::subscribers(channel.name) {
            let acted: Vec<&str> = topology::acted_on(node.service, channel).collect();
            let summary = format!(
                "{}'s consumer group ({}) reads {}; it acts on the messages listed and acknowledges the rest \
                 without effect.",
                node.service, node.service, channel.name
            );
            operations.insert(
                format!("{}Receives{}", operation_id(node.service), upper_first(&id)),
                json!({
                    "action": "receive",
                    "channel": {"$ref": format!("#/channels/{id}")},
                    "summary": summary,
                    "messages": refs(acted),
                }),
            );
        }
    }
    for node in &topology::SERVICES {
        let name = format!("{}.dlq", node.service);
        let id = channel_id(&name);
        channels.insert(
            id.clone(),
            json!({
                "address": name,
                "title": name,
                "description": format!(
                    "Messages {} could not handle: undecodable, of an unknown type, from a forged source, of a \
                     newer schema version, or failing after its retries. The original key, headers and payload, \
                     plus the dead-letter headers. Inspect and redrive with `sagactl dlq`.",
                    node.service
                ),
                "messages": {"DeadLetter": {"$ref": "#/components/messages/DeadLetter"}},
            }),
        );
        operations.insert(
            format!("{}Sends{}", operation_id(node.service), upper_first(&id)),
            json!({
                "action": "send",
                "channel": {"$ref": format!("#/channels/{id}")},
                "messages": [{"$ref": format!("#/channels/{id}/messages/DeadLetter")}],
            }),
        );
    }

    json!({
        "asyncapi": "3.0.0",
        "info": {
            "title": "Order saga: Kafka topics",
            "version": env!("CARGO_PKG_VERSION"),
            "description": "The messages five services exchange to run an order saga by choreography \
                (reserve stock, capture payment, schedule shipment, notify the customer; compensations undo \
                earlier steps). Every message is a CloudEvents Kafka-binding message: attributes in `ce_*` \
                headers, a JSON payload, keyed so that one order's (or one admin target's) messages stay in \
                order. Generated from shared/src/topology.rs and shared/src/contracts.rs.",
            "license": {"name": "MIT OR Apache-2.0"},
        },
        "defaultContentType": "application/json",
        "servers": {
            "production": {
                "host": "kafka:9092",
                "protocol": "kafka",
                "description": "The compose stack's broker (KAFKA_BROKERS); consumer groups use the KIP-848 protocol.",
            },
            "embedded": {
                "host": "127.0.0.1:{port}",
                "protocol": "kafka",
                "description": "The embedded mode's broker (librdkafka's mock cluster on a random port; \
                    `cargo run --release` prints it).",
                "variables": {"port": {"description": "the port the embedded broker bound"}},
            },
        },
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    })
}

fn message(t: &str, payload: Value) -> Value {
    let command = contracts::is_command(t);
    let key = if command {
        "the command's target (SKU, customer id or carrier)"
    } else if matches!(t, contracts::event_type::ADMIN_COMMAND_APPLIED | contracts::event_type::ADMIN_COMMAND_REJECTED)
    {
        "the admin command's target"
    } else {
        "the order id (`ce_subject`)"
    };
    json!({
        "name": t,
        "title": t,
        "summary": if command { format!("Admin command {t}.") } else { format!("Event {t}.") },
        "contentType": "application/json",
        "headers": {"$ref": "#/components/schemas/CloudEventsHeaders"},
        "payload": strip_schema_keyword(payload),
        "bindings": {"kafka": {"key": {"type": "string", "description": key}, "bindingVersion": "0.5.0"}},
    })
}

fn dead_letter_message() -> Value {
    json!({
        "name": "DeadLetter",
        "title": "Dead letter",
        "summary": "A message a consumer gave up on, as it arrived, with where it came from and why.",
        "headers": {"$ref": "#/components/schemas/DeadLetterHeaders"},
        "payload": {
            "description": "The original payload, byte for byte (empty when it was over the size limit: see \
                dlq_payload_omitted_bytes)."
        },
        "bindings": {"kafka": {"key": {"type": "string", "description": "the original key"}, "bindingVersion": "0.5.0"}},
    })
}

fn string(description: &str) -> Value {
    json!({"type": "string", "description": description})
}

fn cloudevents_headers() -> Value {
    let properties = json!({
        header::SPEC_VERSION: {"type": "string", "const": "1.0", "description": "CloudEvents spec version"},
        header::ID: {"type": "string", "format": "uuid", "description": "message id (UUID v7): the consumers' dedupe key"},
        header::TYPE: string("the message type, e.g. OrderPlaced (a consumer dead-letters a type it does not know)"),
        header::SOURCE: string("the publishing service; must be the topic's publisher"),
        header::TIME: {"type": "string", "format": "date-time", "description": "when the message was created"},
        header::SUBJECT: string("the order id (admin commands: their target); equals the Kafka key"),
        header::SCHEMA_VERSION: {"type": "string", "pattern": "^[0-9]+$", "description": "the payload's schema version; newer than the consumer knows is dead-lettered"},
        header::CORRELATION_ID: {"type": "string", "format": "uuid", "description": "the id of the message that started the saga"},
        header::CAUSATION_ID: {"type": "string", "format": "uuid", "description": "the id of the message that caused this one"},
        header::CONTENT_TYPE: {"type": "string", "const": "application/json"},
        header::TRACEPARENT: string("W3C trace context: one order is one trace"),
        header::TRACESTATE: string("W3C trace state (at most 512 bytes and 32 entries, else dropped)"),
    });
    json!({
        "type": "object",
        "description": "CloudEvents Kafka protocol binding (binary mode) and the W3C trace context, as Kafka headers.",
        "required": [header::SPEC_VERSION, header::ID, header::TYPE, header::SOURCE, header::TIME, header::SUBJECT],
        "properties": properties,
    })
}

fn dead_letter_headers() -> Value {
    let properties = json!({
        dlq_header::ORIGINAL_TOPIC: string("the topic the message was read from"),
        dlq_header::ORIGINAL_PARTITION: {"type": "string", "pattern": "^[0-9]+$"},
        dlq_header::ORIGINAL_OFFSET: {"type": "string", "pattern": "^[0-9]+$"},
        dlq_header::CONSUMER_GROUP: string("the consumer group that gave up on it"),
        dlq_header::ERROR: string("why (at most 2 KiB; credentials in URLs are redacted)"),
        dlq_header::ATTEMPTS: {"type": "string", "pattern": "^[0-9]+$", "description": "handler attempts made"},
        dlq_header::FAILED_AT: {"type": "string", "format": "date-time"},
        dlq_header::PAYLOAD_OMITTED_BYTES: {"type": "string", "pattern": "^[0-9]+$", "description": "set when the payload was over the size limit and left out: its size"},
    });
    json!({
        "type": "object",
        "description": "The original message's headers (CloudEventsHeaders, when it had them) and these.",
        "required": [dlq_header::ORIGINAL_TOPIC, dlq_header::ORIGINAL_PARTITION, dlq_header::ORIGINAL_OFFSET, dlq_header::ERROR, dlq_header::ATTEMPTS],
        "properties": properties,
    })
}

/// `$schema` belongs to a root schema document, not to a schema inside AsyncAPI.
fn strip_schema_keyword(mut schema: Value) -> Value {
    if let Some(object) = schema.as_object_mut() {
        object.remove("$schema");
    }
    schema
}

/// `orders.events` → `ordersEvents`, `payment-svc.dlq` → `paymentSvcDlq`.
fn channel_id(name: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for ch in name.chars() {
        if ch.is_ascii_alphanumeric() {
            out.push(if upper { ch.to_ascii_uppercase() } else { ch });
            upper = false;
        } else {
            upper = true;
        }
    }
    out
}

fn operation_id(service: &str) -> String {
    channel_id(service)
}

fn upper_first(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_ascii_uppercase().to_string() + chars.as_str()).unwrap_or_default()
}

fn capitalize(s: &str) -> String {
    upper_first(s)
}

/// YAML for a JSON value: block mappings and sequences, every string double-quoted (JSON string
/// syntax is valid YAML), keys quoted when they are not plain words. Deterministic, so the file
/// in the repository can be compared byte for byte.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    emit(value, 0, &mut out);
    out
}

fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::Null => Some("null".into()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(Value::String(s.clone()).to_string()),
        Value::Array(a) if a.is_empty() => Some("[]".into()),
        Value::Object(o) if o.is_empty() => Some("{}".into()),
        _ => None,
    }
}

fn key(k: &str) -> String {
    let plain = !k.is_empty()
        && k.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        && !k.starts_with(['-', '.'])
        && !matches!(k, "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n")
        && k.parse::<f64>().is_err();
    if plain { k.to_owned() } else { Value::String(k.to_owned()).to_string() }
}

/// Keys in the order a reader expects them; any other key follows, alphabetically.
const KEY_ORDER: [&str; 19] = [
    "asyncapi",
    "info",
    "defaultContentType",
    "servers",
    "channels",
    "operations",
    "components",
    "name",
    "address",
    "title",
    "summary",
    "description",
    "action",
    "channel",
    "contentType",
    "type",
    "format",
    "required",
    "properties",
];

fn emit(value: &Value, indent: usize, out: &mut String) {
    let pad = " ".repeat(indent);
    match value {
        Value::Object(map) if !map.is_empty() => {
            let mut entries: Vec<(&String, &Value)> = map.iter().collect();
            let rank = |k: &str| KEY_ORDER.iter().position(|o| *o == k).unwrap_or(KEY_ORDER.len());
            entries.sort_by(|(a, _), (b, _)| rank(a).cmp(&rank(b)).then_with(|| a.cmp(b)));
            for (k, v) in entries {
                match scalar(v) {
                    Some(s) => out.push_str(&format!("{pad}{}: {s}\n", key(k))),
                    None => {
                        out.push_str(&format!("{pad}{}:\n", key(k)));
                        emit(v, indent + 2, out);
                    }
                }
            }
        }
        Value::Array(items) if !items.is_empty() => {
            for item in items {
                match scalar(item) {
                    Some(s) => out.push_str(&format!("{pad}- {s}\n")),
                    None => {
                        let mut nested = String::new();
                        emit(item, indent + 2, &mut nested);
                        // The item's first line goes after the dash.
                        let trimmed = nested.trim_start_matches(' ');
                        out.push_str(&format!("{pad}- {trimmed}"));
                    }
                }
            }
        }
        other => out.push_str(&format!("{pad}{}\n", scalar(other).unwrap_or_default())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::topology::Kind;

    #[test]
    fn docs_asyncapi_yaml_is_the_generated_document() {
        let generated = to_yaml(&document());
        let in_repo = include_str!("../../docs/asyncapi.yaml");
        assert!(
            in_repo == generated,
            "docs/asyncapi.yaml is out of date: run `cargo run -p shared --bin asyncapi > docs/asyncapi.yaml`"
        );
    }

    #[test]
    fn every_topic_and_dead_letter_topic_is_a_channel_with_its_messages() {
        let doc = document();
        for c in &topology::CHANNELS {
            let channel = &doc["channels"][channel_id(c.name)];
            assert_eq!(channel["address"], c.name);
            for t in c.carries {
                assert_eq!(channel["messages"][*t]["$ref"], format!("#/components/messages/{t}"));
                assert!(doc["components"]["messages"][*t]["payload"].is_object(), "{t}");
            }
            let kind_ok = c.carries.iter().all(|t| contracts::is_command(t) == (c.kind == Kind::Commands));
            assert!(kind_ok, "{}", c.name);
        }
        for s in crate::topics::service::ALL {
            assert_eq!(doc["channels"][channel_id(&format!("{s}.dlq"))]["address"], format!("{s}.dlq"));
        }
        assert_eq!(
            doc["operations"]["notificationSvcReceivesOrdersEvents"]["messages"],
            json!([
                {"$ref": "#/channels/ordersEvents/messages/OrderCompleted"},
                {"$ref": "#/channels/ordersEvents/messages/OrderCancelled"}
            ])
        );
    }

    #[test]
    fn yaml_round_trips_the_structure_of_json_values() {
        let value = json!({"a": {"b": [1, "two", {"c": true, "d e": null}], "empty": []}, "yes": "no"});
        assert_eq!(
            to_yaml(&value),
            "a:\n  b:\n    - 1\n    - \"two\"\n    - c: true\n      \"d e\": null\n  empty: []\n\"yes\": \"no\"\n"
        );
    }
}
