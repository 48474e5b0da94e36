//! The saga's topology, declared once: the topics ([`CHANNELS`]: who publishes on each and which
//! message types it carries) and the services ([`SERVICES`]: the topic each owns, the topics
//! its consumer group subscribes to and the types it acts on).
//!
//! Everything else derives from these two tables: topic names ([`crate::topics::Topics`]), each
//! consumer group's subscriptions ([`subscriptions`]), which messages a consumer hands to its
//! handler and which it only acknowledges ([`acts_on`]), which topics a service creates, sagactl's
//! map of the saga, the README's table and the AsyncAPI document (`docs/asyncapi.yaml`).
//! Adding an event type means: its contract (`crate::contracts`), its row here, and the handler
//! that acts on it.

use crate::contracts::{command_type as c, event_type as e};
use crate::topics::service as s;

/// Does a topic carry events (facts a service publishes about its own aggregates) or admin
/// commands (requests order-svc relays to the service that owns their target)?
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Events,
    Commands,
}

/// A topic of the saga, by its name without the deployment's prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Channel {
    /// `orders.events`, `inventory.commands`, ...
    pub name: &'static str,
    /// The only service that may publish on it (consumers refuse any other `ce_source`).
    pub publisher: &'static str,
    pub kind: Kind,
    /// Every message type it may carry; anything else is dead-lettered.
    pub carries: &'static [&'static str],
    /// What its messages are keyed by (and so kept in order by).
    pub key: &'static str,
    pub description: &'static str,
}

/// A service of the saga.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Node {
    pub service: &'static str,
    /// What it owns (README and docs).
    pub owns: &'static str,
    /// The event topic it publishes its facts on.
    pub events: &'static str,
    /// The topics its consumer group subscribes to.
    pub subscribes: &'static [&'static str],
    /// The types it acts on. A group reads whole topics, so it also sees types it has no use
    /// for; its consumer acknowledges those without a transaction or an inbox record.
    pub acts_on: &'static [&'static str],
}

/// Every topic (dead-letter topics aside: one per consuming service, `<service>.dlq`).
pub const CHANNELS: [Channel; 8] = [
    Channel {
        name: "orders.events",
        publisher: s::ORDER,
        kind: Kind::Events,
        carries: &[e::ORDER_PLACED, e::ORDER_COMPLETED, e::ORDER_CANCELLED],
        key: "order id",
        description: "order-svc's decisions: an order placed, and its fate (completed or cancelled)",
    },
    Channel {
        name: "inventory.events",
        publisher: s::INVENTORY,
        kind: Kind::Events,
        carries: &[
            e::INVENTORY_RESERVED,
            e::INVENTORY_REJECTED,
            e::INVENTORY_RELEASED,
            e::ADMIN_COMMAND_APPLIED,
            e::ADMIN_COMMAND_REJECTED,
        ],
        key: "order id (admin command outcomes: the command's target)",
        description: "stock reserved and priced, rejected or released; admin command outcomes",
    },
    Channel {
        name: "payments.events",
        publisher: s::PAYMENT,
        kind: Kind::Events,
        carries: &[
            e::PAYMENT_CAPTURED,
            e::PAYMENT_DECLINED,
            e::PAYMENT_REFUNDED,
            e::ADMIN_COMMAND_APPLIED,
            e::ADMIN_COMMAND_REJECTED,
        ],
        key: "order id (admin command outcomes: the command's target)",
        description: "payments captured, declined or refunded; admin command outcomes",
    },
    Channel {
        name: "shipping.events",
        publisher: s::SHIPPING,
        kind: Kind::Events,
        carries: &[
            e::SHIPMENT_SCHEDULED,
            e::SHIPMENT_FAILED,
            e::SHIPMENT_CANCELLED,
            e::ADMIN_COMMAND_APPLIED,
            e::ADMIN_COMMAND_REJECTED,
        ],
        key: "order id (admin command outcomes: the command's target)",
        description: "shipments scheduled, failed or cancelled; admin command outcomes",
    },
    Channel {
        name: "notifications.events",
        publisher: s::NOTIFICATION,
        kind: Kind::Events,
        carries: &[e::NOTIFICATION_SENT],
        key: "order id",
        description: "what the customer was told",
    },
    Channel {
        name: "inventory.commands",
        publisher: s::ORDER,
        kind: Kind::Commands,
        carries: &[c::UPSERT_PRODUCT, c::ADJUST_STOCK],
        key: "the SKU",
        description: "admin commands for inventory-svc (products, stock), relayed by order-svc",
    },
    Channel {
        name: "payments.commands",
        publisher: s::ORDER,
        kind: Kind::Commands,
        carries: &[c::CREDIT_ACCOUNT, c::SET_ACCOUNT_BALANCE],
        key: "the customer id",
        description: "admin commands for payment-svc (accounts), relayed by order-svc",
    },
    Channel {
        name: "shipping.commands",
        publisher: s::ORDER,
        kind: Kind::Commands,
        carries: &[c::SET_DESTINATIONS],
        key: "the carrier",
        description: "admin commands for shipping-svc (served destinations), relayed by order-svc",
    },
];

/// Every service.
pub const SERVICES: [Node; 5] = [
    Node {
        service: s::ORDER,
        owns: "the order aggregate, the REST API",
        events: "orders.events",
        subscribes: &["inventory.events", "payments.events", "shipping.events", "notifications.events"],
        // Every fact about its orders goes into their timelines; command outcomes into the audit.
        acts_on: &[
            e::INVENTORY_RESERVED,
            e::INVENTORY_REJECTED,
            e::INVENTORY_RELEASED,
            e::PAYMENT_CAPTURED,
            e::PAYMENT_DECLINED,
            e::PAYMENT_REFUNDED,
            e::SHIPMENT_SCHEDULED,
            e::SHIPMENT_FAILED,
            e::SHIPMENT_CANCELLED,
            e::NOTIFICATION_SENT,
            e::ADMIN_COMMAND_APPLIED,
            e::ADMIN_COMMAND_REJECTED,
        ],
    },
    Node {
        service: s::INVENTORY,
        owns: "catalogue: SKU, price, stock",
        events: "inventory.events",
        subscribes: &["orders.events", "payments.events", "shipping.events", "inventory.commands"],
        acts_on: &[
            e::ORDER_PLACED,
            e::PAYMENT_DECLINED,
            e::SHIPMENT_FAILED,
            e::SHIPMENT_SCHEDULED,
            e::ORDER_CANCELLED,
            c::UPSERT_PRODUCT,
            c::ADJUST_STOCK,
        ],
    },
    Node {
        service: s::PAYMENT,
        owns: "customer accounts",
        events: "payments.events",
        subscribes: &["inventory.events", "shipping.events", "orders.events", "payments.commands"],
        acts_on: &[
            e::INVENTORY_RESERVED,
            e::SHIPMENT_FAILED,
            e::ORDER_CANCELLED,
            c::CREDIT_ACCOUNT,
            c::SET_ACCOUNT_BALANCE,
        ],
    },
    Node {
        service: s::SHIPPING,
        owns: "carriers, destinations, daily capacity",
        events: "shipping.events",
        subscribes: &["payments.events", "orders.events", "shipping.commands"],
        acts_on: &[e::PAYMENT_CAPTURED, e::ORDER_CANCELLED, c::SET_DESTINATIONS],
    },
    Node {
        service: s::NOTIFICATION,
        owns: "deliveries to sinks",
        events: "notifications.events",
        subscribes: &["orders.events"],
        acts_on: &[e::ORDER_COMPLETED, e::ORDER_CANCELLED],
    },
];

/// Types published that no service acts on, by design (none today: order-svc records every
/// fact in its orders' timelines). A type missing from every `acts_on` and from here is a bug.
pub const TERMINAL: &[&str] = &[];

/// The topic named `name` (without prefix).
pub fn channel(name: &str) -> Option<&'static Channel> {
    CHANNELS.iter().find(|c| c.name == name)
}

/// The service named `service`.
pub fn node(service: &str) -> Option<&'static Node> {
    SERVICES.iter().find(|n| n.service == service)
}

/// Does `service` act on messages of `message_type`?
pub fn acts_on(service: &str, message_type: &str) -> bool {
    node(service).is_some_and(|n| n.acts_on.contains(&message_type))
}

/// The one service that publishes `message_type`; `None` for a type several services publish
/// (the admin command outcomes) or an unknown one.
pub fn publisher_of(message_type: &str) -> Option<&'static str> {
    let mut publishers = CHANNELS.iter().filter(|c| c.carries.contains(&message_type)).map(|c| c.publisher);
    let first = publishers.next()?;
    publishers.all(|p| p == first).then_some(first)
}

/// The topics (without prefix) `service` publishes on: its event topic, and for order-svc the
/// command topics.
pub fn published_by(service: &str) -> impl Iterator<Item = &'static Channel> + '_ {
    CHANNELS.iter().filter(move |c| c.publisher == service)
}

/// The services that subscribe to the topic named `name`.
pub fn subscribers(name: &str) -> impl Iterator<Item = &'static Node> + '_ {
    SERVICES.iter().filter(move |n| n.subscribes.contains(&name))
}

/// The types on `channel` that `service` acts on.
pub fn acted_on<'a>(service: &'a str, channel: &'a Channel) -> impl Iterator<Item = &'static str> + 'a {
    channel.carries.iter().copied().filter(move |t| acts_on(service, t))
}

/// The README's table of services: who owns what, acts on what, publishes what.
pub fn markdown_table() -> String {
    let mut out = String::from(
        "| service | owns | subscribes to | acts on | publishes (`<topic>`: types) |\n|---|---|---|---|---|\n",
    );
    for n in &SERVICES {
        let publishes: Vec<String> = published_by(n.service)
            .map(|c| {
                let types: Vec<&str> =
                    c.carries.iter().copied().filter(|t| c.kind == Kind::Commands || !is_admin_outcome(t)).collect();
                format!("`{}`: {}", c.name, types.join(", "))
            })
            .collect();
        let mut publishes = publishes.join("; ");
        if n.service != s::ORDER && n.service != s::NOTIFICATION {
            publishes.push_str("; admin command outcomes");
        }
        let subscribes: Vec<String> = n.subscribes.iter().map(|t| format!("`{t}`")).collect();
        out.push_str(&format!(
            "| {} | {} | {} | {} | {} |\n",
            n.service,
            n.owns,
            subscribes.join(", "),
            n.acts_on.join(", "),
            publishes
        ));
    }
    out
}

fn is_admin_outcome(message_type: &str) -> bool {
    matches!(message_type, e::ADMIN_COMMAND_APPLIED | e::ADMIN_COMMAND_REJECTED)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::contracts;

    #[test]
    fn every_contract_type_travels_on_a_topic_and_nothing_else_does() {
        let carried: Vec<&str> = CHANNELS.iter().flat_map(|c| c.carries.iter().copied()).collect();
        for t in contracts::event_type::ALL.iter().chain(&contracts::command_type::ALL) {
            assert!(carried.contains(t), "{t} is on no topic");
        }
        for t in &carried {
            assert!(contracts::is_known_type(t), "{t} is not a contract type");
        }
    }

    #[test]
    fn event_topics_carry_events_and_command_topics_commands() {
        for c in &CHANNELS {
            for t in c.carries {
                assert_eq!(contracts::is_command(t), c.kind == Kind::Commands, "{t} on {}", c.name);
            }
            assert_eq!(c.name.ends_with(crate::topics::COMMANDS_SUFFIX), c.kind == Kind::Commands, "{}", c.name);
        }
    }

    #[test]
    fn every_type_a_service_publishes_is_acted_on_by_someone_or_declared_terminal() {
        for c in &CHANNELS {
            for t in c.carries {
                let readers: Vec<&str> =
                    subscribers(c.name).filter(|n| n.acts_on.contains(t)).map(|n| n.service).collect();
                assert!(
                    !readers.is_empty() || TERMINAL.contains(t),
                    "{t} on {} is acted on by nobody and not declared terminal",
                    c.name
                );
            }
        }
    }

    #[test]
    fn a_service_acts_only_on_types_of_the_topics_it_subscribes_to_and_never_reads_its_own() {
        for n in &SERVICES {
            for t in n.acts_on {
                assert!(
                    n.subscribes.iter().filter_map(|name| channel(name)).any(|c| c.carries.contains(t)),
                    "{} acts on {t} but subscribes to no topic carrying it",
                    n.service
                );
            }
            for name in n.subscribes {
                let c = channel(name).unwrap_or_else(|| panic!("{} subscribes to unknown {name}", n.service));
                assert_ne!(c.publisher, n.service, "{} reads its own {name}", n.service);
            }
            assert_eq!(channel(n.events).map(|c| c.publisher), Some(n.service), "{} owns {}", n.service, n.events);
        }
    }

    #[test]
    fn every_service_is_a_node_and_each_command_topic_has_one_consumer() {
        for service in crate::topics::service::ALL {
            assert!(node(service).is_some(), "{service}");
        }
        for c in CHANNELS.iter().filter(|c| c.kind == Kind::Commands) {
            assert_eq!(subscribers(c.name).count(), 1, "{}", c.name);
        }
    }

    #[test]
    fn the_readme_table_is_this_topology() {
        let readme = include_str!("../../README.md");
        let table = markdown_table();
        assert!(
            readme.contains(&table),
            "README.md's table of services differs from the topology; it should read:\n\n{table}"
        );
    }

    #[test]
    fn publishers_are_unique_except_for_admin_outcomes() {
        assert_eq!(publisher_of(e::SHIPMENT_SCHEDULED), Some(s::SHIPPING));
        assert_eq!(publisher_of(c::ADJUST_STOCK), Some(s::ORDER));
        assert_eq!(publisher_of(e::ADMIN_COMMAND_APPLIED), None);
        assert_eq!(publisher_of("Nope"), None);
        assert!(acts_on(s::NOTIFICATION, e::ORDER_COMPLETED));
        assert!(!acts_on(s::NOTIFICATION, e::SHIPMENT_SCHEDULED));
    }
}
