//! The decisions payment-svc takes for saga messages, across an order's payment and the
//! customer's account.
//!
//! A handler loads the payment (`payment-{order_id}`) and the customer's account
//! (`account-{customer_id}`; `None` for an empty stream), calls one function here, and appends
//! the returned events to their streams, expecting the versions it loaded, together with the
//! public event in the outbox, in one transaction. A concurrent charge on the same account
//! fails the append and the message is retried against the fresh balance.
//!
//! | message             | function    | account stream               | public event                          |
//! |---------------------|-------------|------------------------------|---------------------------------------|
//! | `InventoryReserved` | [`capture`] | `reserved.customer_id`       | `PaymentCaptured` / `PaymentDeclined` |
//! | `ShipmentFailed`    | [`refund`]  | [`PaymentState::customer_id`] | `PaymentRefunded`                    |
//! | `OrderCancelled`    | [`refund`]  | [`PaymentState::customer_id`] | `PaymentRefunded` (if captured)      |
//!
//! Every function is idempotent on the state: once its effect is in the payment, calling it
//! again decides nothing.

use shared::contracts::{
    self, CompensationTrigger, InventoryReserved, PaymentCaptured, PaymentDeclined, PaymentRefunded,
};
use uuid::Uuid;

use super::DomainError;
use super::account::{self, AccountCommand, AccountEvent, AccountState};
use super::fault::FaultDecision;
use super::payment::{DeclineCause, PaymentEvent, PaymentState, PaymentStatus, payment_id};

/// An integration event for `payments.events`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicEvent {
    Captured(PaymentCaptured),
    Declined(PaymentDeclined),
    Refunded(PaymentRefunded),
}

impl PublicEvent {
    /// The public type name (`ce_type`), from [`contracts::event_type`].
    pub fn event_type(&self) -> &'static str {
        match self {
            PublicEvent::Captured(_) => contracts::event_type::PAYMENT_CAPTURED,
            PublicEvent::Declined(_) => contracts::event_type::PAYMENT_DECLINED,
            PublicEvent::Refunded(_) => contracts::event_type::PAYMENT_REFUNDED,
        }
    }

    /// The order the event is about: the message key.
    pub fn order_id(&self) -> Uuid {
        match self {
            PublicEvent::Captured(e) => e.order_id,
            PublicEvent::Declined(e) => e.order_id,
            PublicEvent::Refunded(e) => e.order_id,
        }
    }

    /// The JSON payload, without any tag (the type travels in the envelope).
    pub fn payload(&self) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            PublicEvent::Captured(e) => serde_json::to_value(e),
            PublicEvent::Declined(e) => serde_json::to_value(e),
            PublicEvent::Refunded(e) => serde_json::to_value(e),
        }
    }
}

/// The outcome of one decision: events to append per stream, and what to publish.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PaymentDecision {
    /// Events for `payment-{order_id}`.
    pub payment: Vec<PaymentEvent>,
    /// Events for the account the handler loaded (see the table in the module docs).
    pub account: Vec<AccountEvent>,
    /// The integration event to put in the outbox, if any.
    pub publish: Option<PublicEvent>,
}

impl PaymentDecision {
    /// Nothing to append and nothing to publish: the message was already handled.
    pub fn is_empty(&self) -> bool {
        self.payment.is_empty() && self.account.is_empty() && self.publish.is_none()
    }
}

/// `InventoryReserved`: charge the order's total to the customer's account, or decline.
///
/// In order: a payment already decided, or an order whose cancellation was already noted,
/// decides nothing; no account → declined (`UnknownCustomer`); a balance short of the total →
/// declined (`PaymentDeclined`); the fault profile says decline → declined (`PaymentDeclined`);
/// otherwise `Charged` on the account and `Captured` on the payment, with
/// [`payment_id`]`(order_id)`.
///
/// Errors are for messages that should not exist: a negative total or a currency other than
/// EUR.
pub fn capture(
    reserved: &InventoryReserved,
    payment: &PaymentState,
    account: Option<&AccountState>,
    fault: FaultDecision,
) -> Result<PaymentDecision, DomainError> {
    if payment.is_decided() || payment.cancelled {
        return Ok(PaymentDecision::default());
    }
    let amount_minor = reserved.total_minor;
    if amount_minor < 0 {
        return Err(DomainError::NegativeAmount { amount_minor });
    }
    if reserved.currency != contracts::CURRENCY {
        return Err(DomainError::UnsupportedCurrency { currency: reserved.currency.clone() });
    }

    let Some(account) = account else {
        return Ok(declined(reserved, DeclineCause::UnknownCustomer));
    };
    if account.balance_minor < amount_minor {
        return Ok(declined(reserved, DeclineCause::InsufficientFunds));
    }
    if fault == FaultDecision::Decline {
        return Ok(declined(reserved, DeclineCause::FaultInjected));
    }

    let order_id = reserved.order_id;
    let payment_id = payment_id(order_id);
    let charged = account::decide(Some(account), AccountCommand::Charge { order_id, amount_minor })?;
    Ok(PaymentDecision {
        payment: vec![PaymentEvent::Captured { payment_id, customer_id: reserved.customer_id.clone(), amount_minor }],
        account: charged,
        publish: Some(PublicEvent::Captured(PaymentCaptured {
            order_id,
            customer_id: reserved.customer_id.clone(),
            payment_id,
            amount_minor,
            currency: contracts::CURRENCY.to_owned(),
            ship_to: reserved.ship_to.clone(),
        })),
    })
}

/// `ShipmentFailed`, `OrderCancelled`: give a captured payment back.
///
/// - Captured: `Refunded` on the account (the customer in [`PaymentState::customer_id`]) and on
///   the payment, whatever the trigger; `account` must be that customer's account.
/// - Pending and `OrderCancelled`: `CancellationNoted`, so a late `InventoryReserved` is not
///   charged; nothing is published.
/// - Anything else (declined, already refunded, already noted): nothing.
pub fn refund(
    order_id: Uuid,
    trigger: CompensationTrigger,
    payment: &PaymentState,
    account: Option<&AccountState>,
) -> Result<PaymentDecision, DomainError> {
    match &payment.status {
        PaymentStatus::Captured { payment_id, customer_id, amount_minor } => {
            let account =
                account.ok_or_else(|| DomainError::AccountMissing { customer_id: customer_id.clone(), order_id })?;
            let amount_minor = *amount_minor;
            let refunded = account::decide(Some(account), AccountCommand::Refund { order_id, amount_minor })?;
            Ok(PaymentDecision {
                payment: vec![PaymentEvent::Refunded { payment_id: *payment_id, amount_minor, trigger }],
                account: refunded,
                publish: Some(PublicEvent::Refunded(PaymentRefunded {
                    order_id,
                    customer_id: customer_id.clone(),
                    payment_id: *payment_id,
                    amount_minor,
                    currency: contracts::CURRENCY.to_owned(),
                    trigger,
                })),
            })
        }
        PaymentStatus::Pending if trigger == CompensationTrigger::OrderCancelled && !payment.cancelled => {
            Ok(PaymentDecision { payment: vec![PaymentEvent::CancellationNoted], ..PaymentDecision::default() })
        }
        _ => Ok(PaymentDecision::default()),
    }
}

fn declined(reserved: &InventoryReserved, cause: DeclineCause) -> PaymentDecision {
    let reason = cause.reason();
    PaymentDecision {
        payment: vec![PaymentEvent::Declined {
            customer_id: reserved.customer_id.clone(),
            reason,
            cause,
            amount_minor: reserved.total_minor,
        }],
        account: Vec::new(),
        publish: Some(PublicEvent::Declined(PaymentDeclined {
            order_id: reserved.order_id,
            customer_id: reserved.customer_id.clone(),
            reason,
            amount_minor: reserved.total_minor,
        })),
    }
}

#[cfg(test)]
mod tests {
    use shared::contracts::{CancelReason, PricedLine, ShipTo};

    use super::*;
    use crate::domain::account::evolve;

    fn order() -> Uuid {
        Uuid::from_u128(0x5eed)
    }

    fn ship_to() -> ShipTo {
        ShipTo { country: "NL".into(), city: Some("Utrecht".into()), ..ShipTo::default() }
    }

    fn reserved(total_minor: i64) -> InventoryReserved {
        InventoryReserved {
            order_id: order(),
            customer_id: "cust-poor".into(),
            lines: vec![PricedLine {
                sku: "sku-mug".into(),
                quantity: 1,
                unit_price_minor: total_minor,
                line_total_minor: total_minor,
            }],
            total_minor,
            currency: "EUR".into(),
            ship_to: ship_to(),
        }
    }

    fn account(balance_minor: i64) -> AccountState {
        AccountState { balance_minor }
    }

    fn commit(decision: &PaymentDecision, payment: &mut PaymentState, account: &mut Option<AccountState>) {
        for event in &decision.payment {
            payment.apply(event);
        }
        for event in &decision.account {
            *account = evolve(account.take(), event);
        }
    }

    /// A payment of 900 captured from an account of 1000, committed.
    fn captured() -> (PaymentState, Option<AccountState>) {
        let mut payment = PaymentState::default();
        let mut acct = Some(account(1000));
        let decision = capture(&reserved(900), &payment, acct.as_ref(), FaultDecision::Proceed).expect("capture");
        commit(&decision, &mut payment, &mut acct);
        (payment, acct)
    }

    #[test]
    fn capturing_charges_the_account_and_publishes_the_capture() {
        let decision = capture(&reserved(900), &PaymentState::default(), Some(&account(1000)), FaultDecision::Proceed)
            .expect("capture");
        let id = payment_id(order());
        assert_eq!(
            decision.payment,
            vec![PaymentEvent::Captured { payment_id: id, customer_id: "cust-poor".into(), amount_minor: 900 }]
        );
        assert_eq!(decision.account, vec![AccountEvent::Charged { order_id: order(), amount_minor: 900 }]);
        assert_eq!(
            decision.publish,
            Some(PublicEvent::Captured(PaymentCaptured {
                order_id: order(),
                customer_id: "cust-poor".into(),
                payment_id: id,
                amount_minor: 900,
                currency: "EUR".into(),
                ship_to: ship_to(),
            }))
        );
    }

    #[test]
    fn capturing_lowers_the_balance() {
        let (payment, acct) = captured();
        assert_eq!(acct, Some(account(100)));
        assert_eq!(payment.net_captured_minor(), 900);
    }

    #[test]
    fn capturing_exactly_the_balance_succeeds() {
        let decision = capture(&reserved(1000), &PaymentState::default(), Some(&account(1000)), FaultDecision::Proceed)
            .expect("capture");
        assert!(matches!(decision.publish, Some(PublicEvent::Captured(_))));
    }

    #[test]
    fn a_retried_capture_yields_the_same_payment_id() {
        let first = capture(&reserved(900), &PaymentState::default(), Some(&account(1000)), FaultDecision::Proceed)
            .expect("capture");
        let second = capture(&reserved(900), &PaymentState::default(), Some(&account(1000)), FaultDecision::Proceed)
            .expect("capture");
        assert_eq!(first, second);
    }

    #[test]
    fn a_decided_payment_captures_nothing_again() {
        let (payment, acct) = captured();
        assert!(capture(&reserved(900), &payment, acct.as_ref(), FaultDecision::Proceed).expect("again").is_empty());
    }

    #[test]
    fn a_declined_payment_captures_nothing_again() {
        let mut payment = PaymentState::default();
        let mut acct = Some(account(10));
        let decision = capture(&reserved(900), &payment, acct.as_ref(), FaultDecision::Proceed).expect("capture");
        commit(&decision, &mut payment, &mut acct);
        acct = Some(account(10_000));
        assert!(capture(&reserved(900), &payment, acct.as_ref(), FaultDecision::Proceed).expect("again").is_empty());
    }

    #[test]
    fn an_unknown_customer_is_declined() {
        let decision =
            capture(&reserved(900), &PaymentState::default(), None, FaultDecision::Proceed).expect("capture");
        assert!(decision.account.is_empty());
        assert_eq!(
            decision.payment,
            vec![PaymentEvent::Declined {
                customer_id: "cust-poor".into(),
                reason: CancelReason::UnknownCustomer,
                cause: DeclineCause::UnknownCustomer,
                amount_minor: 900,
            }]
        );
        assert_eq!(
            decision.publish,
            Some(PublicEvent::Declined(PaymentDeclined {
                order_id: order(),
                customer_id: "cust-poor".into(),
                reason: CancelReason::UnknownCustomer,
                amount_minor: 900,
            }))
        );
    }

    #[test]
    fn a_short_balance_is_declined() {
        let decision = capture(&reserved(1001), &PaymentState::default(), Some(&account(1000)), FaultDecision::Proceed)
            .expect("capture");
        assert!(decision.account.is_empty());
        assert!(matches!(
            decision.payment.as_slice(),
            [PaymentEvent::Declined {
                reason: CancelReason::PaymentDeclined,
                cause: DeclineCause::InsufficientFunds,
                ..
            }]
        ));
        assert_eq!(decision.publish.as_ref().map(PublicEvent::event_type), Some("PaymentDeclined"));
    }

    #[test]
    fn the_fault_profile_declines_an_otherwise_good_payment() {
        let decision = capture(&reserved(1), &PaymentState::default(), Some(&account(1000)), FaultDecision::Decline)
            .expect("capture");
        assert!(decision.account.is_empty());
        assert!(matches!(
            decision.payment.as_slice(),
            [PaymentEvent::Declined { reason: CancelReason::PaymentDeclined, cause: DeclineCause::FaultInjected, .. }]
        ));
    }

    #[test]
    fn real_declines_take_precedence_over_the_fault_profile() {
        let unknown = capture(&reserved(1), &PaymentState::default(), None, FaultDecision::Decline).expect("capture");
        assert!(matches!(
            unknown.payment.as_slice(),
            [PaymentEvent::Declined { cause: DeclineCause::UnknownCustomer, .. }]
        ));
        let short = capture(&reserved(10), &PaymentState::default(), Some(&account(1)), FaultDecision::Decline)
            .expect("capture");
        assert!(matches!(
            short.payment.as_slice(),
            [PaymentEvent::Declined { cause: DeclineCause::InsufficientFunds, .. }]
        ));
    }

    #[test]
    fn an_order_cancelled_before_capture_is_not_charged() {
        let payment = PaymentState::fold(&[PaymentEvent::CancellationNoted]);
        let decision =
            capture(&reserved(900), &payment, Some(&account(1000)), FaultDecision::Proceed).expect("capture");
        assert!(decision.is_empty());
    }

    #[test]
    fn a_free_order_is_captured_for_zero() {
        let decision = capture(&reserved(0), &PaymentState::default(), Some(&account(0)), FaultDecision::Proceed)
            .expect("capture");
        assert_eq!(decision.account, vec![AccountEvent::Charged { order_id: order(), amount_minor: 0 }]);
    }

    #[test]
    fn a_negative_total_or_foreign_currency_is_an_error() {
        assert_eq!(
            capture(&reserved(-1), &PaymentState::default(), Some(&account(1000)), FaultDecision::Proceed),
            Err(DomainError::NegativeAmount { amount_minor: -1 })
        );
        let mut usd = reserved(1);
        usd.currency = "USD".into();
        assert_eq!(
            capture(&usd, &PaymentState::default(), Some(&account(1000)), FaultDecision::Proceed),
            Err(DomainError::UnsupportedCurrency { currency: "USD".into() })
        );
    }

    #[test]
    fn refunding_a_capture_credits_the_account_and_publishes_the_refund() {
        let (mut payment, mut acct) = captured();
        let decision = refund(order(), CompensationTrigger::ShipmentFailed, &payment, acct.as_ref()).expect("refund");
        let id = payment_id(order());
        assert_eq!(
            decision.payment,
            vec![PaymentEvent::Refunded {
                payment_id: id,
                amount_minor: 900,
                trigger: CompensationTrigger::ShipmentFailed
            }]
        );
        assert_eq!(decision.account, vec![AccountEvent::Refunded { order_id: order(), amount_minor: 900 }]);
        assert_eq!(
            decision.publish,
            Some(PublicEvent::Refunded(PaymentRefunded {
                order_id: order(),
                customer_id: "cust-poor".into(),
                payment_id: id,
                amount_minor: 900,
                currency: "EUR".into(),
                trigger: CompensationTrigger::ShipmentFailed,
            }))
        );
        commit(&decision, &mut payment, &mut acct);
        assert_eq!(acct, Some(account(1000)));
        assert_eq!(payment.net_captured_minor(), 0);
        assert!(!payment.cancelled);
    }

    #[test]
    fn refunding_twice_refunds_once() {
        let (mut payment, mut acct) = captured();
        for trigger in [CompensationTrigger::ShipmentFailed, CompensationTrigger::OrderCancelled] {
            let decision = refund(order(), trigger, &payment, acct.as_ref()).expect("refund");
            commit(&decision, &mut payment, &mut acct);
        }
        assert_eq!(acct, Some(account(1000)));
        assert!(matches!(payment.status, PaymentStatus::Refunded { trigger: CompensationTrigger::ShipmentFailed, .. }));
    }

    #[test]
    fn cancelling_a_captured_order_refunds_it_and_marks_it_cancelled() {
        let (mut payment, mut acct) = captured();
        let decision = refund(order(), CompensationTrigger::OrderCancelled, &payment, acct.as_ref()).expect("refund");
        assert_eq!(decision.publish.as_ref().map(PublicEvent::event_type), Some("PaymentRefunded"));
        commit(&decision, &mut payment, &mut acct);
        assert!(payment.cancelled);
    }

    #[test]
    fn cancelling_before_capture_only_notes_the_cancellation() {
        let mut payment = PaymentState::default();
        let mut acct = Some(account(1000));
        let decision = refund(order(), CompensationTrigger::OrderCancelled, &payment, acct.as_ref()).expect("refund");
        assert_eq!(
            decision,
            PaymentDecision { payment: vec![PaymentEvent::CancellationNoted], ..PaymentDecision::default() }
        );
        commit(&decision, &mut payment, &mut acct);
        assert!(payment.cancelled);
        assert!(refund(order(), CompensationTrigger::OrderCancelled, &payment, None).expect("again").is_empty());
        assert!(capture(&reserved(900), &payment, acct.as_ref(), FaultDecision::Proceed).expect("late").is_empty());
    }

    #[test]
    fn a_shipment_failure_before_capture_decides_nothing() {
        assert!(
            refund(order(), CompensationTrigger::ShipmentFailed, &PaymentState::default(), None)
                .expect("refund")
                .is_empty()
        );
    }

    #[test]
    fn refunding_a_declined_payment_decides_nothing() {
        let payment = PaymentState::fold(&[PaymentEvent::Declined {
            customer_id: "c".into(),
            reason: CancelReason::PaymentDeclined,
            cause: DeclineCause::InsufficientFunds,
            amount_minor: 5,
        }]);
        for trigger in [CompensationTrigger::OrderCancelled, CompensationTrigger::ShipmentFailed] {
            assert!(refund(order(), trigger, &payment, Some(&account(0))).expect("refund").is_empty());
        }
    }

    #[test]
    fn refunding_a_capture_without_its_account_is_an_error() {
        let (payment, _) = captured();
        assert_eq!(
            refund(order(), CompensationTrigger::ShipmentFailed, &payment, None),
            Err(DomainError::AccountMissing { customer_id: "cust-poor".into(), order_id: order() })
        );
    }

    #[test]
    fn public_events_carry_their_contract_type_and_order_and_a_plain_payload() {
        let decision = capture(&reserved(900), &PaymentState::default(), Some(&account(1000)), FaultDecision::Proceed)
            .expect("capture");
        let public = decision.publish.expect("published");
        assert_eq!(public.event_type(), contracts::event_type::PAYMENT_CAPTURED);
        assert_eq!(public.order_id(), order());
        let decoded: PaymentCaptured = serde_json::from_value(public.payload().expect("payload")).expect("decode");
        assert_eq!(decoded.ship_to, ship_to());
    }
}
