//! The saga's shape as an operator sees it, from the topology declared once in
//! [`shared::topology`]: which service publishes each event type, and which topics each
//! service's consumer group reads (`lag` shows a group's lag on these even before the group
//! committed anything).

use shared::topics::{Topics, service};

/// The service that publishes `event_type` (`None` for the admin command outcomes, which the
/// service owning the command's target publishes, and for unknown types).
pub fn publisher(event_type: &str) -> Option<&'static str> {
    shared::topology::publisher_of(event_type)
}

/// The topics a service's consumer group subscribes to.
pub fn subscriptions(service: &str, topics: &Topics) -> Option<Vec<String>> {
    shared::topology::node(service)?;
    Some(topics.subscriptions(service).into_iter().map(|(topic, _)| topic).collect())
}

/// A group as the operator names it: a service's name stands for its group
/// (`<prefix><service>`), as does that full group id; any other name is a group id as it is.
/// Returns the group id and the service it belongs to.
pub fn group_of(name: &str, topics: &Topics) -> (String, Option<&'static str>) {
    match service::ALL.into_iter().find(|s| *s == name || topics.group(s) == name) {
        Some(s) => (topics.group(s), Some(s)),
        None => (name.to_owned(), None),
    }
}

/// The consuming service of a dead-letter topic (`<prefix><service>.dlq`).
pub fn dead_letter_owner(topic: &str, topics: &Topics) -> Option<&'static str> {
    service::ALL.into_iter().find(|s| topics.dead_letter(s) == topic).filter(|_| !topic.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use shared::contracts::event_type as ev;

    #[test]
    fn every_event_type_has_its_publisher() {
        for t in ev::ALL.into_iter().filter(|t| ![ev::ADMIN_COMMAND_APPLIED, ev::ADMIN_COMMAND_REJECTED].contains(t)) {
            assert!(publisher(t).is_some(), "{t}");
        }
        assert_eq!(publisher("Nope"), None);
    }

    #[test]
    fn every_service_group_reads_the_topics_of_the_events_it_reacts_to() {
        let topics = Topics::with_prefix("p.");
        for s in service::ALL {
            let subscribed = subscriptions(s, &topics).expect("a service group");
            assert!(!subscribed.is_empty());
            assert!(
                !subscribed.contains(&topics.owned_by(s).unwrap_or_default().to_owned()),
                "{s} reads its own topic"
            );
        }
        assert_eq!(subscriptions(service::NOTIFICATION, &topics), Some(vec!["p.orders.events".to_owned()]));
        assert_eq!(subscriptions("someone-else", &topics), None);
        assert_eq!(dead_letter_owner("p.payment-svc.dlq", &topics), Some(service::PAYMENT));
        assert_eq!(dead_letter_owner("payment-svc.dlq", &topics), None);
    }

    #[test]
    fn a_service_name_or_its_full_group_id_names_the_service_group() {
        let topics = Topics::with_prefix("p.");
        assert_eq!(group_of("payment-svc", &topics), ("p.payment-svc".to_owned(), Some(service::PAYMENT)));
        assert_eq!(group_of("p.payment-svc", &topics), ("p.payment-svc".to_owned(), Some(service::PAYMENT)));
        assert_eq!(group_of("analytics", &topics), ("analytics".to_owned(), None));
    }
}
