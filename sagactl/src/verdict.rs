//! Where an order stands, from the events found on the topics: its outcome, or the step it is
//! waiting on and the events (and services) that would move it. Pure: no I/O.
//!
//! The status is folded with order-svc's own domain ([`order_svc::domain::evolve`]), so it is
//! the status the API would report for the same facts. What each status waits for follows the
//! saga: reserve → capture → schedule → complete (order-svc accepts the shipment) → confirm; a
//! failure waits for the compensations it requires, then for `OrderCancelled`; a completed order
//! waits for its confirmation, and a cancelled one until every step it did is undone and the
//! cancellation notice is sent.

use std::time::Duration;

use chrono::{DateTime, Utc};
use order_svc::domain::{self, OrderEvent, OrderState};
use serde::Serialize;
use serde_json::Value;
use shared::contracts::event_type as ev;
use shared::topics::service;

/// An event of the order found on a saga topic.
#[derive(Debug, Clone)]
pub struct Fact {
    pub event_type: String,
    pub time: DateTime<Utc>,
    pub payload: Value,
}

/// A message of the order that a consumer dead-lettered.
#[derive(Debug, Clone)]
pub struct Blocked {
    /// The dead letter's id (`<service>/<partition>/<offset>`).
    pub id: String,
    /// The service that gave up on it.
    pub service: String,
    pub event_type: Option<String>,
    pub error: String,
    /// A redriven copy was seen on the original topic.
    pub redriven: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    Completed,
    Cancelled,
    /// Not terminal, and its last event is recent.
    InProgress,
    /// Not terminal, and nothing happened for a while (or its deadline passed).
    Stuck,
    /// No event of this order was found.
    NotFound,
}

/// Events that would move the order, and who publishes them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Awaited {
    /// Any one of these.
    pub events: Vec<&'static str>,
    pub from: &'static str,
}

impl Awaited {
    fn new(events: &[&'static str], from: &'static str) -> Self {
        Self { events: events.to_vec(), from }
    }

    fn describe(&self) -> String {
        format!("{} from {}", self.events.join(" or "), self.from)
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    pub state: State,
    /// The order's status as the API would derive it.
    pub status: Option<String>,
    pub reason: Option<String>,
    pub total_minor: Option<i64>,
    /// Terminal, and nothing left to undo or notify.
    pub settled: bool,
    pub waiting_for: Vec<Awaited>,
    /// Dead letters, deadline, missing events: what explains a stuck order.
    pub notes: Vec<String>,
    /// One line saying all of the above.
    pub summary: String,
}

/// Which facts were observed.
#[derive(Debug, Default)]
struct Seen {
    placed: bool,
    reserved: bool,
    rejected: bool,
    captured: bool,
    declined: bool,
    scheduled: bool,
    ship_failed: bool,
    released: bool,
    refunded: bool,
    shipment_cancelled: bool,
    confirmation_sent: bool,
    cancellation_sent: bool,
    completed: bool,
    cancelled: bool,
}

impl Seen {
    fn of(facts: &[Fact]) -> Self {
        let mut seen = Seen::default();
        for fact in facts {
            match fact.event_type.as_str() {
                ev::ORDER_PLACED => seen.placed = true,
                ev::INVENTORY_RESERVED => seen.reserved = true,
                ev::INVENTORY_REJECTED => seen.rejected = true,
                ev::PAYMENT_CAPTURED => seen.captured = true,
                ev::PAYMENT_DECLINED => seen.declined = true,
                ev::SHIPMENT_SCHEDULED => seen.scheduled = true,
                ev::SHIPMENT_FAILED => seen.ship_failed = true,
                ev::INVENTORY_RELEASED => seen.released = true,
                ev::PAYMENT_REFUNDED => seen.refunded = true,
                ev::SHIPMENT_CANCELLED => seen.shipment_cancelled = true,
                ev::NOTIFICATION_SENT => match fact.payload.get("kind").and_then(Value::as_str) {
                    Some("cancellation") => seen.cancellation_sent = true,
                    _ => seen.confirmation_sent = true,
                },
                ev::ORDER_COMPLETED => seen.completed = true,
                ev::ORDER_CANCELLED => seen.cancelled = true,
                _ => {}
            }
        }
        seen
    }

    /// What a cancelled order still has to undo or send.
    fn outstanding_after_cancel(&self) -> Vec<Awaited> {
        let mut waiting = Vec::new();
        if self.reserved && !self.released {
            waiting.push(Awaited::new(&[ev::INVENTORY_RELEASED], service::INVENTORY));
        }
        if self.captured && !self.refunded {
            waiting.push(Awaited::new(&[ev::PAYMENT_REFUNDED], service::PAYMENT));
        }
        if self.scheduled && !self.shipment_cancelled {
            waiting.push(Awaited::new(&[ev::SHIPMENT_CANCELLED], service::SHIPPING));
        }
        if !self.cancellation_sent {
            waiting.push(Awaited::new(&[ev::NOTIFICATION_SENT], service::NOTIFICATION));
        }
        waiting
    }

    /// What an order that is not terminal waits for next.
    fn next(&self) -> Vec<Awaited> {
        let cancel = || vec![Awaited::new(&[ev::ORDER_CANCELLED], service::ORDER)];
        if self.rejected {
            return cancel();
        }
        if self.declined {
            return if self.released {
                cancel()
            } else {
                vec![Awaited::new(&[ev::INVENTORY_RELEASED], service::INVENTORY)]
            };
        }
        if self.ship_failed {
            let mut waiting = Vec::new();
            if !self.refunded {
                waiting.push(Awaited::new(&[ev::PAYMENT_REFUNDED], service::PAYMENT));
            }
            if !self.released {
                waiting.push(Awaited::new(&[ev::INVENTORY_RELEASED], service::INVENTORY));
            }
            return if waiting.is_empty() { cancel() } else { waiting };
        }
        let step = if !self.placed {
            Awaited::new(&[ev::ORDER_PLACED], service::ORDER)
        } else if !self.reserved {
            Awaited::new(&[ev::INVENTORY_RESERVED, ev::INVENTORY_REJECTED], service::INVENTORY)
        } else if !self.captured {
            Awaited::new(&[ev::PAYMENT_CAPTURED, ev::PAYMENT_DECLINED], service::PAYMENT)
        } else if !self.scheduled {
            Awaited::new(&[ev::SHIPMENT_SCHEDULED, ev::SHIPMENT_FAILED], service::SHIPPING)
        } else {
            Awaited::new(&[ev::ORDER_COMPLETED], service::ORDER)
        };
        vec![step]
    }
}

/// Fold the facts with order-svc's domain (OrderPlaced first, then by time).
fn fold(facts: &[Fact]) -> Option<OrderState> {
    let mut ordered: Vec<&Fact> = facts.iter().collect();
    ordered.sort_by_key(|f| (f.event_type != ev::ORDER_PLACED, f.time));
    let mut state = None;
    for fact in ordered {
        if let Ok(event) = OrderEvent::from_payload(&fact.event_type, fact.payload.clone()) {
            state = domain::evolve(state, &event, fact.time);
        }
    }
    state
}

/// Judge an order from its facts (any order) and dead letters, at `now`.
pub fn judge(facts: &[Fact], blocked: &[Blocked], now: DateTime<Utc>, stuck_after: Duration) -> Verdict {
    let seen = Seen::of(facts);
    let state = fold(facts);
    let status = state.as_ref().map(|s| s.status().as_str().to_owned());
    let reason = state.as_ref().and_then(|s| s.reason()).map(|r| r.as_str().to_owned()).or_else(|| {
        facts
            .iter()
            .find(|f| f.event_type == ev::ORDER_CANCELLED)
            .and_then(|f| f.payload.get("reason").and_then(Value::as_str).map(str::to_owned))
    });
    let total_minor = state.as_ref().and_then(OrderState::total_minor);
    let mut notes = Vec::new();

    if facts.is_empty() && blocked.is_empty() {
        return Verdict {
            state: State::NotFound,
            status: None,
            reason: None,
            total_minor: None,
            settled: false,
            waiting_for: Vec::new(),
            notes: vec![
                "no message with this key on any saga topic: check the id, --since, --topic-prefix and --brokers \
                 (the embedded broker keeps only recent messages)"
                    .to_owned(),
            ],
            summary: "not found: no event of this order on any saga topic".to_owned(),
        };
    }
    if !seen.placed {
        notes.push("OrderPlaced was not found (outside --since, or no longer retained)".to_owned());
    }
    let terminal = seen.completed || seen.cancelled;
    // A terminal order still owes the customer its notice until it is sent: a dead letter
    // holding that back is worth redriving.
    let told = (seen.completed && seen.confirmation_sent) || (seen.cancelled && seen.cancellation_sent);
    for dead in blocked.iter().filter(|d| !d.redriven) {
        let mut note = format!(
            "{} was dead-lettered by {} ({}): {}",
            dead.event_type.as_deref().unwrap_or("a message"),
            dead.service,
            dead.id,
            dead.error
        );
        if !terminal || !told {
            note.push_str(&format!("; once its cause is fixed, `sagactl dlq redrive --id {}`", dead.id));
        }
        notes.push(note);
    }

    if seen.completed {
        let waiting_for = if seen.confirmation_sent {
            Vec::new()
        } else {
            vec![Awaited::new(&[ev::NOTIFICATION_SENT], service::NOTIFICATION)]
        };
        let mut summary = match total_minor {
            Some(total) => format!("completed: total {}", crate::output::money(total)),
            None => "completed".to_owned(),
        };
        if !waiting_for.is_empty() {
            summary.push_str("; the confirmation is not sent yet");
        }
        return Verdict {
            state: State::Completed,
            status,
            reason: None,
            total_minor,
            settled: waiting_for.is_empty(),
            waiting_for,
            notes,
            summary,
        };
    }
    if seen.cancelled {
        let waiting_for = seen.outstanding_after_cancel();
        let compensations = state.as_ref().map(|s| s.compensations().join(", ")).unwrap_or_default();
        let mut summary = format!("cancelled ({})", reason.as_deref().unwrap_or("unknown reason"));
        if !compensations.is_empty() {
            summary.push_str(&format!("; compensations: {compensations}"));
        }
        if waiting_for.is_empty() {
            summary.push_str("; every step undone, cancellation notice sent");
        } else {
            let list: Vec<String> = waiting_for.iter().map(Awaited::describe).collect();
            summary.push_str(&format!("; still waiting for {}", list.join(", ")));
        }
        return Verdict {
            state: State::Cancelled,
            status,
            reason,
            total_minor,
            settled: waiting_for.is_empty(),
            waiting_for,
            notes,
            summary,
        };
    }

    let mut waiting_for = seen.next();
    let last = facts.iter().map(|f| f.time).max();
    let idle = last.map(|t| (now - t).to_std().unwrap_or_default()).unwrap_or_default();
    let deadline = facts
        .iter()
        .find(|f| f.event_type == ev::ORDER_PLACED)
        .and_then(|f| f.payload.get("deadline_at").and_then(Value::as_str))
        .and_then(|d| DateTime::parse_from_rfc3339(d).ok())
        .map(|d| d.with_timezone(&Utc));
    let overdue = deadline.is_some_and(|d| now > d);
    if let Some(deadline) = deadline.filter(|_| overdue) {
        notes.push(format!(
            "the saga deadline passed at {} ({} ago): order-svc should cancel it (deadline_exceeded); is order-svc running?",
            crate::timespec::show(deadline),
            crate::timespec::human((now - deadline).to_std().unwrap_or_default())
        ));
        if !waiting_for.iter().any(|w| w.events.contains(&ev::ORDER_CANCELLED)) {
            waiting_for.push(Awaited::new(&[ev::ORDER_CANCELLED], service::ORDER));
        }
    }
    let stuck = overdue || idle >= stuck_after || blocked.iter().any(|d| !d.redriven);
    let list: Vec<String> = waiting_for.iter().map(Awaited::describe).collect();
    let at = status.as_deref().unwrap_or("unknown");
    let summary = if stuck {
        format!("stuck at {at} for {}: waiting for {}", crate::timespec::human(idle), list.join(", "))
    } else {
        format!("in progress at {at}: waiting for {}", list.join(", "))
    };
    Verdict {
        state: if stuck { State::Stuck } else { State::InProgress },
        status,
        reason,
        total_minor,
        settled: false,
        waiting_for,
        notes,
        summary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use uuid::Uuid;

    const ORDER: &str = "0199a1b2-0000-7000-8000-000000000001";

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).expect("time")
    }

    fn placed() -> Fact {
        Fact {
            event_type: ev::ORDER_PLACED.into(),
            time: at(0),
            payload: json!({
                "order_id": ORDER, "customer_id": "cust-rich",
                "items": [{"sku": "sku-tee", "quantity": 2}], "ship_to": {"country": "NL"},
                "placed_at": at(0), "deadline_at": at(60),
            }),
        }
    }

    fn fact(event_type: &str, secs: i64, payload: Value) -> Fact {
        let mut payload = payload;
        payload["order_id"] = json!(ORDER);
        payload["customer_id"] = json!("cust-rich");
        Fact { event_type: event_type.into(), time: at(secs), payload }
    }

    fn reserved(secs: i64) -> Fact {
        fact(
            ev::INVENTORY_RESERVED,
            secs,
            json!({"lines": [], "total_minor": 3000, "currency": "EUR", "ship_to": {"country": "NL"}}),
        )
    }

    fn captured(secs: i64) -> Fact {
        fact(
            ev::PAYMENT_CAPTURED,
            secs,
            json!({"payment_id": Uuid::nil(), "amount_minor": 3000, "currency": "EUR", "ship_to": {"country": "NL"}}),
        )
    }

    fn judge_at(facts: &[Fact], now: i64) -> Verdict {
        judge(facts, &[], at(now), Duration::from_secs(30))
    }

    #[test]
    fn a_completed_order_is_settled_once_its_confirmation_is_sent() {
        let facts = vec![
            placed(),
            reserved(1),
            captured(2),
            fact(
                ev::SHIPMENT_SCHEDULED,
                3,
                json!({"shipment_id": Uuid::nil(), "carrier": "postnl", "ship_date": "2026-01-01", "ship_to": {"country": "NL"}}),
            ),
            fact(ev::ORDER_COMPLETED, 4, json!({"total_minor": 3000, "currency": "EUR"})),
        ];
        let unconfirmed = judge_at(&facts, 5);
        assert_eq!(unconfirmed.state, State::Completed);
        assert!(!unconfirmed.settled);
        assert_eq!(unconfirmed.waiting_for, vec![Awaited::new(&[ev::NOTIFICATION_SENT], service::NOTIFICATION)]);
        assert_eq!(unconfirmed.summary, "completed: total 30.00 EUR; the confirmation is not sent yet");

        let mut facts = facts;
        facts.push(fact(
            ev::NOTIFICATION_SENT,
            5,
            json!({"kind": "confirmation", "notification_id": Uuid::nil(), "sinks": ["log"]}),
        ));
        let verdict = judge_at(&facts, 6);
        assert_eq!(verdict.state, State::Completed);
        assert!(verdict.settled);
        assert_eq!(verdict.status.as_deref(), Some("completed"));
        assert_eq!(verdict.summary, "completed: total 30.00 EUR");
    }

    #[test]
    fn an_order_that_was_paid_waits_for_shipping_and_is_stuck_once_idle() {
        let facts = vec![placed(), reserved(1), captured(2)];
        let recent = judge_at(&facts, 5);
        assert_eq!(recent.state, State::InProgress);
        assert_eq!(recent.status.as_deref(), Some("paid"));
        assert_eq!(
            recent.waiting_for,
            vec![Awaited::new(&[ev::SHIPMENT_SCHEDULED, ev::SHIPMENT_FAILED], service::SHIPPING)]
        );
        let idle = judge_at(&facts, 40);
        assert_eq!(idle.state, State::Stuck);
        assert!(idle.summary.starts_with("stuck at paid for 38.0s"), "{}", idle.summary);
    }

    #[test]
    fn a_declined_payment_waits_for_the_release_then_the_cancellation() {
        let declined = fact(ev::PAYMENT_DECLINED, 2, json!({"reason": "payment_declined", "amount_minor": 3000}));
        let facts = vec![placed(), reserved(1), declined.clone()];
        let verdict = judge_at(&facts, 3);
        assert_eq!(verdict.status.as_deref(), Some("cancelling"));
        assert_eq!(verdict.waiting_for, vec![Awaited::new(&[ev::INVENTORY_RELEASED], service::INVENTORY)]);
        let released = fact(ev::INVENTORY_RELEASED, 3, json!({"lines": [], "trigger": "payment_declined"}));
        let verdict = judge_at(&[placed(), reserved(1), declined, released], 4);
        assert_eq!(verdict.waiting_for, vec![Awaited::new(&[ev::ORDER_CANCELLED], service::ORDER)]);
    }

    #[test]
    fn a_cancelled_order_waits_until_every_step_is_undone_and_the_notice_sent() {
        let cancelled = fact(ev::ORDER_CANCELLED, 61, json!({"reason": "deadline_exceeded", "compensations": []}));
        let facts = vec![placed(), reserved(1), captured(2), cancelled.clone()];
        let verdict = judge_at(&facts, 62);
        assert_eq!(verdict.state, State::Cancelled);
        assert_eq!(verdict.reason.as_deref(), Some("deadline_exceeded"));
        assert!(!verdict.settled);
        assert_eq!(verdict.waiting_for.len(), 3, "{:?}", verdict.waiting_for);
        let mut done = facts.clone();
        done.push(fact(ev::INVENTORY_RELEASED, 62, json!({"lines": [], "trigger": "order_cancelled"})));
        done.push(fact(
            ev::PAYMENT_REFUNDED,
            62,
            json!({"payment_id": Uuid::nil(), "amount_minor": 3000, "currency": "EUR", "trigger": "order_cancelled"}),
        ));
        done.push(fact(
            ev::NOTIFICATION_SENT,
            63,
            json!({"kind": "cancellation", "notification_id": Uuid::nil(), "sinks": ["log"]}),
        ));
        let verdict = judge_at(&done, 64);
        assert!(verdict.settled, "{}", verdict.summary);
        assert!(verdict.summary.contains("every step undone"), "{}", verdict.summary);
    }

    #[test]
    fn a_passed_deadline_makes_an_unfinished_order_stuck_waiting_for_order_svc() {
        let verdict = judge_at(&[placed()], 61);
        assert_eq!(verdict.state, State::Stuck);
        assert!(verdict.waiting_for.iter().any(|w| w.events == vec![ev::ORDER_CANCELLED]));
        assert!(verdict.notes.iter().any(|n| n.contains("deadline passed")));
    }

    #[test]
    fn a_dead_letter_is_named_as_the_reason_an_order_is_stuck() {
        let blocked = vec![Blocked {
            id: "notification-svc/0/3".into(),
            service: service::NOTIFICATION.into(),
            event_type: Some(ev::SHIPMENT_SCHEDULED.into()),
            error: "webhook refused".into(),
            redriven: false,
        }];
        let verdict = judge(&[placed(), reserved(1)], &blocked, at(2), Duration::from_secs(30));
        assert_eq!(verdict.state, State::Stuck);
        assert!(verdict.notes.iter().any(|n| n.contains("dlq redrive --id notification-svc/0/3")));
    }

    #[test]
    fn a_completed_order_whose_confirmation_was_dead_lettered_names_the_redrive() {
        let facts = vec![
            placed(),
            reserved(1),
            captured(2),
            fact(
                ev::SHIPMENT_SCHEDULED,
                3,
                json!({"shipment_id": Uuid::nil(), "carrier": "postnl", "ship_date": "2026-01-01", "ship_to": {"country": "NL"}}),
            ),
            fact(ev::ORDER_COMPLETED, 4, json!({"total_minor": 3000, "currency": "EUR"})),
        ];
        let blocked = vec![Blocked {
            id: "notification-svc/0/7".into(),
            service: service::NOTIFICATION.into(),
            event_type: Some(ev::ORDER_COMPLETED.into()),
            error: "webhook rejected the notification with status 410".into(),
            redriven: false,
        }];
        let verdict = judge(&facts, &blocked, at(5), Duration::from_secs(30));
        assert_eq!(verdict.state, State::Completed);
        assert!(!verdict.settled);
        assert!(
            verdict.notes.iter().any(|n| n.contains("dlq redrive --id notification-svc/0/7")),
            "{:?}",
            verdict.notes
        );
    }

    #[test]
    fn nothing_found_is_not_found() {
        assert_eq!(judge_at(&[], 0).state, State::NotFound);
    }
}
