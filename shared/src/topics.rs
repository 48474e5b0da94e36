//! Topic names: one topic per publishing service, plus one dead-letter topic per consuming
//! service. Names take an optional prefix so tests (and shared clusters) can isolate them.

/// The service names used as `ce_source`, consumer group ids and dead-letter topic names.
pub mod service {
    pub const ORDER: &str = "order-svc";
    pub const INVENTORY: &str = "inventory-svc";
    pub const PAYMENT: &str = "payment-svc";
    pub const SHIPPING: &str = "shipping-svc";
    pub const NOTIFICATION: &str = "notification-svc";
    pub const ALL: [&str; 5] = [ORDER, INVENTORY, PAYMENT, SHIPPING, NOTIFICATION];
}

/// The saga's topic names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topics {
    prefix: String,
    pub orders: String,
    pub inventory: String,
    pub payments: String,
    pub shipping: String,
    pub notifications: String,
}

impl Default for Topics {
    fn default() -> Self {
        Self::with_prefix("")
    }
}

impl Topics {
    pub fn with_prefix(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_owned(),
            orders: format!("{prefix}orders.events"),
            inventory: format!("{prefix}inventory.events"),
            payments: format!("{prefix}payments.events"),
            shipping: format!("{prefix}shipping.events"),
            notifications: format!("{prefix}notifications.events"),
        }
    }

    /// The topic a service publishes its events to.
    pub fn owned_by(&self, service: &str) -> Option<&str> {
        match service {
            service::ORDER => Some(&self.orders),
            service::INVENTORY => Some(&self.inventory),
            service::PAYMENT => Some(&self.payments),
            service::SHIPPING => Some(&self.shipping),
            service::NOTIFICATION => Some(&self.notifications),
            _ => None,
        }
    }

    /// Where a consuming service's undeliverable messages go.
    pub fn dead_letter(&self, service: &str) -> String {
        format!("{}{service}.dlq", self.prefix)
    }

    /// Every event topic.
    pub fn event_topics(&self) -> [&str; 5] {
        [&self.orders, &self.inventory, &self.payments, &self.shipping, &self.notifications]
    }

    /// Every topic the saga uses: event topics and dead-letter topics.
    pub fn all(&self) -> Vec<String> {
        let mut all: Vec<String> = self.event_topics().iter().map(|t| (*t).to_owned()).collect();
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
}
