//! Property tests: random interleavings of saga messages (including redeliveries, late
//! reservations after a cancellation, and fault-profile declines) across several orders and
//! customers keep money conserved.

use std::collections::HashMap;

use proptest::prelude::*;
use shared::contracts::{CompensationTrigger, InventoryReserved, ShipTo};
use uuid::Uuid;

use super::account::{AccountEvent, AccountState, credit, evolve};
use super::decisions::{PaymentDecision, capture, refund};
use super::fault::FaultDecision;
use super::payment::{PaymentEvent, PaymentState, PaymentStatus};

/// Customer 2 never gets an account.
const CUSTOMERS: [&str; 3] = ["cust-a", "cust-b", "cust-ghost"];
const ORDERS: usize = 5;

#[derive(Debug, Clone)]
enum Op {
    Capture { order: usize, decline: bool },
    Refund { order: usize, trigger: CompensationTrigger },
    Credit { customer: usize, amount: i64 },
}

fn op() -> impl Strategy<Value = Op> {
    let trigger = prop_oneof![
        Just(CompensationTrigger::PaymentDeclined),
        Just(CompensationTrigger::ShipmentFailed),
        Just(CompensationTrigger::OrderCancelled),
    ];
    prop_oneof![
        4 => (0..ORDERS, prop::bool::weighted(0.2)).prop_map(|(order, decline)| Op::Capture { order, decline }),
        3 => (0..ORDERS, trigger).prop_map(|(order, trigger)| Op::Refund { order, trigger }),
        1 => (0..2usize, 1i64..500).prop_map(|(customer, amount)| Op::Credit { customer, amount }),
    ]
}

/// Per order: what the account ledger saw.
#[derive(Debug, Default, Clone)]
struct Ledger {
    charges: Vec<i64>,
    refunds: Vec<i64>,
    cancelled_while_pending: bool,
}

struct World {
    payments: HashMap<usize, PaymentState>,
    accounts: HashMap<&'static str, Option<AccountState>>,
    initial: HashMap<&'static str, i64>,
    credits: HashMap<&'static str, i64>,
    ledgers: HashMap<usize, Ledger>,
    amounts: [i64; ORDERS],
}

fn order_id(order: usize) -> Uuid {
    Uuid::from_u128(order as u128 + 100)
}

fn customer_of(order: usize) -> &'static str {
    CUSTOMERS[order % CUSTOMERS.len()]
}

/// Events go through their JSON form, as they would through the event store.
fn stored<T: serde::Serialize + serde::de::DeserializeOwned>(event: &T) -> T {
    let json = serde_json::to_string(event).expect("serialize");
    serde_json::from_str(&json).expect("deserialize")
}

impl World {
    fn new(balances: [i64; 2], amounts: [i64; ORDERS]) -> Self {
        let mut accounts = HashMap::new();
        let mut initial = HashMap::new();
        for (customer, balance) in CUSTOMERS.iter().zip(balances) {
            accounts.insert(*customer, AccountState::fold(&[AccountEvent::AccountOpened { balance_minor: balance }]));
            initial.insert(*customer, balance);
        }
        accounts.insert(CUSTOMERS[2], None);
        World { payments: HashMap::new(), accounts, initial, credits: HashMap::new(), ledgers: HashMap::new(), amounts }
    }

    fn payment(&self, order: usize) -> PaymentState {
        self.payments.get(&order).cloned().unwrap_or_default()
    }

    fn account(&self, customer: &str) -> Option<AccountState> {
        self.accounts.get(customer).copied().flatten()
    }

    fn commit(
        &mut self,
        order: usize,
        customer: &'static str,
        decision: &PaymentDecision,
    ) -> Result<(), TestCaseError> {
        let payment = self.payments.entry(order).or_default();
        for event in &decision.payment {
            if matches!(event, PaymentEvent::CancellationNoted) {
                self.ledgers.entry(order).or_default().cancelled_while_pending = true;
            }
            payment.apply(&stored(event));
        }
        for event in &decision.account {
            let ledger = self.ledgers.entry(order).or_default();
            match event {
                AccountEvent::Charged { order_id: id, amount_minor } => {
                    prop_assert_eq!(*id, order_id(order));
                    ledger.charges.push(*amount_minor);
                }
                AccountEvent::Refunded { order_id: id, amount_minor } => {
                    prop_assert_eq!(*id, order_id(order));
                    ledger.refunds.push(*amount_minor);
                }
                other => prop_assert!(false, "a saga decision produced {:?}", other),
            }
            let account = self.accounts.entry(customer).or_insert(None);
            *account = evolve(*account, &stored(event));
        }
        Ok(())
    }

    fn check_invariants(&self) -> Result<(), TestCaseError> {
        for order in 0..ORDERS {
            let ledger = self.ledgers.get(&order).cloned().unwrap_or_default();
            let amount = self.amounts[order];
            prop_assert!(ledger.charges.len() <= 1, "order {} charged {:?}", order, ledger.charges);
            prop_assert!(ledger.refunds.len() <= 1, "order {} refunded {:?}", order, ledger.refunds);
            prop_assert!(ledger.refunds.len() <= ledger.charges.len(), "refund without a charge");
            let net = ledger.charges.iter().sum::<i64>() - ledger.refunds.iter().sum::<i64>();
            prop_assert!(net == 0 || net == amount, "order {} nets {} of {}", order, net, amount);
            prop_assert_eq!(net, self.payment(order).net_captured_minor());
            if ledger.cancelled_while_pending {
                prop_assert!(ledger.charges.is_empty(), "order {} charged after its cancellation", order);
            }
        }
        for customer in CUSTOMERS {
            let Some(account) = self.account(customer) else {
                prop_assert_eq!(customer, CUSTOMERS[2]);
                continue;
            };
            let (charged, refunded): (i64, i64) = (0..ORDERS)
                .filter(|order| customer_of(*order) == customer)
                .filter_map(|order| self.ledgers.get(&order))
                .fold((0, 0), |(c, r), l| (c + l.charges.iter().sum::<i64>(), r + l.refunds.iter().sum::<i64>()));
            let expected =
                self.initial[customer] + self.credits.get(customer).copied().unwrap_or(0) - charged + refunded;
            prop_assert_eq!(account.balance_minor, expected, "{} balance", customer);
            prop_assert!(account.balance_minor >= 0);
        }
        Ok(())
    }
}

proptest! {
    #[test]
    fn money_is_conserved_charged_once_and_refunded_at_most_once(
        balances in [0i64..3000, 0i64..3000],
        amounts in [0i64..1500, 0i64..1500, 0i64..1500, 0i64..1500, 0i64..1500],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut world = World::new(balances, amounts);
        for op in ops {
            match op {
                Op::Capture { order, decline } => {
                    let customer = customer_of(order);
                    let reserved = InventoryReserved {
                        order_id: order_id(order),
                        customer_id: customer.to_owned(),
                        lines: Vec::new(),
                        total_minor: world.amounts[order],
                        currency: "EUR".into(),
                        ship_to: ShipTo::default(),
                    };
                    let fault = if decline { FaultDecision::Decline } else { FaultDecision::Proceed };
                    let before = world.payment(order);
                    let decision = capture(&reserved, &before, world.account(customer).as_ref(), fault)
                        .expect("a valid reservation never fails");
                    if before.is_decided() || before.cancelled {
                        prop_assert!(decision.is_empty());
                    }
                    world.commit(order, customer, &decision)?;
                }
                Op::Refund { order, trigger } => {
                    let payment = world.payment(order);
                    // The handler loads the account of the customer the payment names.
                    let customer = customer_of(order);
                    if let Some(named) = payment.customer_id() {
                        prop_assert_eq!(named, customer);
                    }
                    let decision = refund(order_id(order), trigger, &payment, world.account(customer).as_ref())
                        .expect("a consistent store never fails a refund");
                    world.commit(order, customer, &decision)?;
                }
                Op::Credit { customer, amount } => {
                    let name = CUSTOMERS[customer];
                    let events = credit(world.account(name).as_ref(), amount).expect("credit");
                    for event in &events {
                        world.accounts.insert(name, evolve(world.account(name), event));
                    }
                    *world.credits.entry(name).or_insert(0) += amount;
                }
            }
            world.check_invariants()?;
        }
        for order in 0..ORDERS {
            if let PaymentStatus::Captured { amount_minor, .. } | PaymentStatus::Refunded { amount_minor, .. } =
                world.payment(order).status
            {
                prop_assert_eq!(amount_minor, world.amounts[order]);
            }
        }
    }
}
