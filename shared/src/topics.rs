//! Topic names: one event topic per publishing service, one command topic per service that
//! takes admin commands (order-svc publishes them; the owning service consumes them), plus one
//! dead-letter topic per consuming service. Names take an optional prefix so tests (and shared
//! clusters) can isolate them. Which topics exist, who publishes on them and who reads them is
//! declared in [`crate::topology`].

use crate::topology::{self, Channel, Kind};

/// The service names used as `ce_source`, consumer group ids and dead-letter topic names.
pub mod service {
    pub const ORDER: &str = "order-svc";
    pub const INVENTORY: &str = "inventory-svc";
    pub const PAYMENT: &str = "payment-svc";
    pub const SHIPPING: &str = "shipping-svc";
    pub const NOTIFICATION: &str = "notification-svc";
    pub const ALL: [&str; 5] = [ORDER, INVENTORY, PAYMENT, SHIPPING, NOTIFICATION];
}

/// The saga's topic names in one deployment: [`crate::topology::CHANNELS`] with the
/// deployment's prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    pub orders: String,
    pub inventory: String,
    pub payments: String,
    pub shipping: String,
    pub notifications: String,
    /// Admin commands for inventory-svc (products, stock), published by order-svc.
    pub inventory_commands: String,
    /// Admin commands for payment-svc (accounts), published by order-svc.
    pub payment_commands: String,
    /// Admin commands for shipping-svc (served destinations), published by order-svc.
    pub shipping_commands: String,
    /// Every channel with its prefixed name, in [`crate::topology::CHANNELS`] order.
    names: Vec<(&'static Channel, String)>,
}

/// Every command topic's name ends with this; event topics end with `.events`.
pub const COMMANDS_SUFFIX: &str = ".commands";

/// Does `topic` carry admin commands (rather than events)?
pub fn carries_commands(topic: &str) -> bool {
    topic.ends_with(COMMANDS_SUFFIX)
}

impl Default for Topics {
    fn default() -> Self {
        Self::with_prefix("")
    }
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        let name = |channel: &str| format!("{prefix}{channel}");
        Self {
            prefix: prefix.to_owned(),
            orders: name("orders.events"),
            inventory: name("inventory.events"),
            payments: name("payments.events"),
            shipping: name("shipping.events"),
            notifications: name("notifications.events"),
            inventory_commands: name("inventory.commands"),
            payment_commands: name("payments.commands"),
            shipping_commands: name("shipping.commands"),
            names: topology::CHANNELS.iter().map(|c| (c, name(c.name))).collect(),
        }
    }

    /// The prefixed name of the channel named `channel`.
    pub fn name(&self, channel: &str) -> Option<&str> {
        self.names.iter().find(|(c, _)| c.name == channel).map(|(_, n)| n.as_str())
    }

    /// The channel behind a prefixed topic name.
    pub fn channel(&self, topic: &str) -> Option<&'static Channel> {
        self.names.iter().find(|(_, n)| n == topic).map(|(c, _)| *c)
    }

    /// The topics `service`'s consumer group subscribes to, each with the only service allowed
    /// to publish on it.
    pub fn subscriptions(&self, service: &str) -> Vec<(String, String)> {
        let Some(node) = topology::node(service) else { return Vec::new() };
        node.subscribes
            .iter()
            .filter_map(|channel| {
                Some((self.name(channel)?.to_owned(), topology::channel(channel)?.publisher.to_owned()))
            })
            .collect()
    }

    /// The command topic a service consumes its admin commands from, if it takes any.
    pub fn commands_for(&self, service: &str) -> Option<&str> {
        let node = topology::node(service)?;
        let channel = node.subscribes.iter().filter_map(|c| topology::channel(c)).find(|c| c.kind == Kind::Commands)?;
        self.name(channel.name)
    }

    /// Every command topic (all published by order-svc).
    pub fn command_topics(&self) -> Vec<&str> {
        self.of_kind(Kind::Commands)
    }

    /// Every event topic.
    pub fn event_topics(&self) -> Vec<&str> {
        self.of_kind(Kind::Events)
    }

    fn of_kind(&self, kind: Kind) -> Vec<&str> {
        self.names.iter().filter(|(c, _)| c.kind == kind).map(|(_, n)| n.as_str()).collect()
    }

    /// Every topic a service publishes to (and creates at start-up when allowed): its event
    /// topic, and for order-svc the command topics too.
    pub fn published_by(&self, service: &str) -> Vec<&str> {
        self.names.iter().filter(|(c, _)| c.publisher == service).map(|(_, n)| n.as_str()).collect()
    }

    /// The topic a service publishes its events to.
    pub fn owned_by(&self, service: &str) -> Option<&str> {
        self.name(topology::node(service)?.events)
    }

    /// A consuming service's consumer group: the service's name, with the prefix, so that
    /// deployments isolated by a prefix on one cluster never share (and rebalance) a group.
    pub fn group(&self, service: &str) -> String {
        format!("{}{service}", self.prefix)
    }

    /// Where a consuming service's undeliverable messages go.
    pub fn dead_letter(&self, service: &str) -> String {
        format!("{}{service}.dlq", self.prefix)
    }

    /// Every topic the saga uses: event topics, command topics and dead-letter topics.
    pub fn all(&self) -> Vec<String> {
        let mut all: Vec<String> = self.names.iter().map(|(_, n)| n.clone()).collect();
        all.extend(service::ALL.iter().map(|s| self.dead_letter(s)));
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixed_topics_do_not_collide_with_default_ones() {
        let a = Topics::default();
        let b = Topics::with_prefix("t42.");
        assert!(a.all().iter().all(|t| !b.all().contains(t)));
        assert_eq!(b.dead_letter(service::PAYMENT), "t42.payment-svc.dlq");
        assert_eq!(a.owned_by(service::SHIPPING), Some("shipping.events"));
    }

    #[test]
    fn order_svc_publishes_the_command_topics_and_each_owner_consumes_its_own() {
        let t = Topics::with_prefix("p.");
        assert_eq!(
            t.published_by(service::ORDER),
            vec!["p.orders.events", "p.inventory.commands", "p.payments.commands", "p.shipping.commands"]
        );
        assert_eq!(t.published_by(service::PAYMENT), vec!["p.payments.events"]);
        assert_eq!(t.commands_for(service::SHIPPING), Some("p.shipping.commands"));
        assert_eq!(t.commands_for(service::NOTIFICATION), None);
        assert!(t.command_topics().iter().all(|topic| carries_commands(topic)));
        assert!(t.event_topics().iter().all(|topic| !carries_commands(topic)));
    }
}
