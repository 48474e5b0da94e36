//! A customer's account: the balance, in EUR minor units, that orders are charged against.
//!
//! An account exists once `AccountOpened` is in its stream; before that the state is `None`,
//! which is what makes an order from an unknown customer a decline. The balance never goes
//! negative: every decision that lowers it checks it first.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::DomainError;

/// Prefix of an account's stream id in the event store.
pub const STREAM_PREFIX: &str = "account-";

/// What happened to an account. The `type` tag is the stored event type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AccountEvent {
    AccountOpened {
        balance_minor: i64,
    },
    /// Admin top-up.
    Credited {
        amount_minor: i64,
    },
    /// Admin override of the balance (demos, load tests).
    BalanceSet {
        balance_minor: i64,
    },
    /// An order was paid from the balance.
    Charged {
        order_id: Uuid,
        amount_minor: i64,
    },
    /// An order's payment went back to the balance.
    Refunded {
        order_id: Uuid,
        amount_minor: i64,
    },
}

impl AccountEvent {
    /// Every event type name, for registering decoders and for tests.
    pub const TYPES: [&'static str; 5] = ["AccountOpened", "Credited", "BalanceSet", "Charged", "Refunded"];

    /// The stable name stored in the event store's type column.
    pub fn event_type(&self) -> &'static str {
        match self {
            AccountEvent::AccountOpened { .. } => "AccountOpened",
            AccountEvent::Credited { .. } => "Credited",
            AccountEvent::BalanceSet { .. } => "BalanceSet",
            AccountEvent::Charged { .. } => "Charged",
            AccountEvent::Refunded { .. } => "Refunded",
        }
    }
}

/// A request to change one account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AccountCommand {
    Open { balance_minor: i64 },
    Credit { amount_minor: i64 },
    SetBalance { balance_minor: i64 },
    Charge { order_id: Uuid, amount_minor: i64 },
    Refund { order_id: Uuid, amount_minor: i64 },
}

/// An open account, folded from its stream. `Option<AccountState>` is the state of a stream:
/// `None` until the account is opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct AccountState {
    pub balance_minor: i64,
}

impl AccountState {
    /// The event-store stream id of a customer's account: `account-{customer_id}`.
    pub fn stream_id(customer_id: &str) -> String {
        format!("{STREAM_PREFIX}{customer_id}")
    }

    /// Folds a stream into its state: `None` if the account was never opened.
    pub fn fold<'a>(events: impl IntoIterator<Item = &'a AccountEvent>) -> Option<AccountState> {
        events.into_iter().fold(None, evolve)
    }

    /// Applies one event to an open account.
    pub fn apply(&mut self, event: &AccountEvent) {
        match event {
            AccountEvent::AccountOpened { balance_minor } | AccountEvent::BalanceSet { balance_minor } => {
                self.balance_minor = *balance_minor;
            }
            AccountEvent::Credited { amount_minor } | AccountEvent::Refunded { amount_minor, .. } => {
                self.balance_minor = self.balance_minor.saturating_add(*amount_minor);
            }
            AccountEvent::Charged { amount_minor, .. } => {
                self.balance_minor = self.balance_minor.saturating_sub(*amount_minor);
            }
        }
    }
}

/// `evolve(state, event) -> state`. Events before `AccountOpened` (which decisions never
/// produce) leave the account unopened.
pub fn evolve(state: Option<AccountState>, event: &AccountEvent) -> Option<AccountState> {
    match (state, event) {
        (None, AccountEvent::AccountOpened { balance_minor }) => Some(AccountState { balance_minor: *balance_minor }),
        (None, _) => None,
        (Some(mut account), event) => {
            account.apply(event);
            Some(account)
        }
    }
}

/// `decide(state, command) -> events`.
pub fn decide(state: Option<&AccountState>, command: AccountCommand) -> Result<Vec<AccountEvent>, DomainError> {
    if let AccountCommand::Open { balance_minor } = command {
        if state.is_some() {
            return Err(DomainError::AccountAlreadyOpen);
        }
        if balance_minor < 0 {
            return Err(DomainError::NegativeBalance { balance_minor });
        }
        return Ok(vec![AccountEvent::AccountOpened { balance_minor }]);
    }
    let account = state.ok_or(DomainError::NoAccount)?;
    match command {
        AccountCommand::Open { .. } => Err(DomainError::AccountAlreadyOpen),
        AccountCommand::Credit { amount_minor } => {
            if amount_minor <= 0 {
                return Err(DomainError::NonPositiveAmount { amount_minor });
            }
            account.balance_minor.checked_add(amount_minor).ok_or(DomainError::AmountOverflow)?;
            Ok(vec![AccountEvent::Credited { amount_minor }])
        }
        AccountCommand::SetBalance { balance_minor } => {
            if balance_minor < 0 {
                return Err(DomainError::NegativeBalance { balance_minor });
            }
            if balance_minor == account.balance_minor {
                return Ok(Vec::new());
            }
            Ok(vec![AccountEvent::BalanceSet { balance_minor }])
        }
        AccountCommand::Charge { order_id, amount_minor } => {
            if amount_minor < 0 {
                return Err(DomainError::NegativeAmount { amount_minor });
            }
            if account.balance_minor < amount_minor {
                return Err(DomainError::InsufficientFunds { balance_minor: account.balance_minor, amount_minor });
            }
            Ok(vec![AccountEvent::Charged { order_id, amount_minor }])
        }
        AccountCommand::Refund { order_id, amount_minor } => {
            if amount_minor < 0 {
                return Err(DomainError::NegativeAmount { amount_minor });
            }
            account.balance_minor.checked_add(amount_minor).ok_or(DomainError::AmountOverflow)?;
            Ok(vec![AccountEvent::Refunded { order_id, amount_minor }])
        }
    }
}

/// Admin: open an account with a starting balance. Refused if it is already open.
pub fn open_account(state: Option<&AccountState>, balance_minor: i64) -> Result<Vec<AccountEvent>, DomainError> {
    decide(state, AccountCommand::Open { balance_minor })
}

/// Admin: add a positive amount to an open account.
pub fn credit(state: Option<&AccountState>, amount_minor: i64) -> Result<Vec<AccountEvent>, DomainError> {
    decide(state, AccountCommand::Credit { amount_minor })
}

/// Admin: set an open account's balance (not negative). Unchanged → no events.
pub fn set_balance(state: Option<&AccountState>, balance_minor: i64) -> Result<Vec<AccountEvent>, DomainError> {
    decide(state, AccountCommand::SetBalance { balance_minor })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn open(balance_minor: i64) -> Option<AccountState> {
        AccountState::fold(&[AccountEvent::AccountOpened { balance_minor }])
    }

    fn order() -> Uuid {
        Uuid::from_u128(42)
    }

    #[test]
    fn stream_id_is_prefixed_with_account() {
        assert_eq!(AccountState::stream_id("cust-rich"), "account-cust-rich");
    }

    #[test]
    fn an_empty_stream_is_no_account() {
        assert_eq!(AccountState::fold(&[]), None);
    }

    #[test]
    fn opening_an_account_sets_its_balance() {
        let events = open_account(None, 1000).expect("open");
        assert_eq!(events, vec![AccountEvent::AccountOpened { balance_minor: 1000 }]);
        assert_eq!(AccountState::fold(&events), Some(AccountState { balance_minor: 1000 }));
    }

    #[test]
    fn opening_twice_or_with_a_negative_balance_is_refused() {
        assert_eq!(open_account(open(1).as_ref(), 5), Err(DomainError::AccountAlreadyOpen));
        assert_eq!(open_account(None, -1), Err(DomainError::NegativeBalance { balance_minor: -1 }));
    }

    #[test]
    fn crediting_adds_to_the_balance() {
        let state = open(1000);
        let events = credit(state.as_ref(), 250).expect("credit");
        assert_eq!(events, vec![AccountEvent::Credited { amount_minor: 250 }]);
        assert_eq!(events.iter().fold(state, evolve), Some(AccountState { balance_minor: 1250 }));
    }

    #[test]
    fn crediting_needs_an_open_account_and_a_positive_amount() {
        assert_eq!(credit(None, 5), Err(DomainError::NoAccount));
        assert_eq!(credit(open(0).as_ref(), 0), Err(DomainError::NonPositiveAmount { amount_minor: 0 }));
        assert_eq!(credit(open(i64::MAX).as_ref(), 1), Err(DomainError::AmountOverflow));
    }

    #[test]
    fn setting_the_balance_overrides_it() {
        let state = open(1000);
        let events = set_balance(state.as_ref(), 7).expect("set");
        assert_eq!(events.iter().fold(state, evolve), Some(AccountState { balance_minor: 7 }));
        assert_eq!(set_balance(open(7).as_ref(), 7), Ok(vec![]));
        assert_eq!(set_balance(open(7).as_ref(), -1), Err(DomainError::NegativeBalance { balance_minor: -1 }));
        assert_eq!(set_balance(None, 1), Err(DomainError::NoAccount));
    }

    #[test]
    fn charging_lowers_the_balance_but_never_below_zero() {
        let state = open(1000);
        let events =
            decide(state.as_ref(), AccountCommand::Charge { order_id: order(), amount_minor: 1000 }).expect("charge");
        assert_eq!(events.iter().fold(state, evolve), Some(AccountState { balance_minor: 0 }));
        assert_eq!(
            decide(state.as_ref(), AccountCommand::Charge { order_id: order(), amount_minor: 1001 }),
            Err(DomainError::InsufficientFunds { balance_minor: 1000, amount_minor: 1001 })
        );
        assert_eq!(
            decide(state.as_ref(), AccountCommand::Charge { order_id: order(), amount_minor: -1 }),
            Err(DomainError::NegativeAmount { amount_minor: -1 })
        );
    }

    #[test]
    fn refunding_raises_the_balance() {
        let state = open(10);
        let events =
            decide(state.as_ref(), AccountCommand::Refund { order_id: order(), amount_minor: 5 }).expect("refund");
        assert_eq!(events.iter().fold(state, evolve), Some(AccountState { balance_minor: 15 }));
        assert_eq!(
            decide(None, AccountCommand::Refund { order_id: order(), amount_minor: 5 }),
            Err(DomainError::NoAccount)
        );
    }

    #[test]
    fn events_before_the_account_opens_are_ignored() {
        let state = AccountState::fold(&[
            AccountEvent::Credited { amount_minor: 5 },
            AccountEvent::AccountOpened { balance_minor: 1 },
        ]);
        assert_eq!(state, Some(AccountState { balance_minor: 1 }));
    }

    #[test]
    fn every_event_serializes_with_its_event_type_as_tag_and_round_trips() {
        let events = [
            AccountEvent::AccountOpened { balance_minor: 1 },
            AccountEvent::Credited { amount_minor: 2 },
            AccountEvent::BalanceSet { balance_minor: 3 },
            AccountEvent::Charged { order_id: order(), amount_minor: 4 },
            AccountEvent::Refunded { order_id: order(), amount_minor: 5 },
        ];
        let types: Vec<_> = events.iter().map(AccountEvent::event_type).collect();
        assert_eq!(types, AccountEvent::TYPES);
        for event in events {
            let json = serde_json::to_value(&event).expect("serialize");
            assert_eq!(json["type"], event.event_type());
            let back: AccountEvent = serde_json::from_value(json).expect("deserialize");
            assert_eq!(back, event);
        }
    }
}
