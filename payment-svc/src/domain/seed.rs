//! The customer accounts a fresh payment-svc starts with.
//!
//! Seeding is a decision on each account's stream, so it is safe to run at every start-up: an
//! account seen for the first time is opened with its balance; one already open keeps the
//! balance orders have since moved.

use serde::{Deserialize, Serialize};

use super::DomainError;
use super::account::{AccountCommand, AccountEvent, AccountState, decide};

/// The accounts to seed, as read from JSON (`seed/accounts.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountsSeed {
    pub accounts: Vec<AccountSeed>,
}

/// One account to seed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountSeed {
    pub customer_id: String,
    /// Opening balance in EUR minor units.
    pub balance_minor: i64,
}

impl AccountsSeed {
    /// The demo accounts: one customer who can buy anything, one who can buy almost nothing.
    pub fn demo() -> Self {
        AccountsSeed {
            accounts: vec![
                AccountSeed { customer_id: "cust-rich".into(), balance_minor: 1_000_000_000 },
                AccountSeed { customer_id: "cust-poor".into(), balance_minor: 1000 },
            ],
        }
    }

    /// Parses accounts from JSON.
    pub fn from_json(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

impl AccountSeed {
    /// The events seeding this account adds to its stream (`state` is that stream's state):
    /// `AccountOpened` if it is not open yet, nothing otherwise.
    pub fn decide(&self, state: Option<&AccountState>) -> Result<Vec<AccountEvent>, DomainError> {
        if self.customer_id.trim().is_empty() {
            return Err(DomainError::BlankCustomerId);
        }
        if state.is_some() {
            return Ok(Vec::new());
        }
        decide(None, AccountCommand::Open { balance_minor: self.balance_minor })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demo_accounts_are_a_rich_and_a_poor_customer() {
        let demo = AccountsSeed::demo();
        let summary: Vec<_> = demo.accounts.iter().map(|a| (a.customer_id.as_str(), a.balance_minor)).collect();
        assert_eq!(summary, vec![("cust-rich", 1_000_000_000), ("cust-poor", 1000)]);
    }

    #[test]
    fn the_shipped_seed_file_is_the_demo_accounts() {
        let parsed = AccountsSeed::from_json(include_str!("../../seed/accounts.json")).expect("parse");
        assert_eq!(parsed, AccountsSeed::demo());
    }

    #[test]
    fn seeding_a_new_account_opens_it() {
        let seed = &AccountsSeed::demo().accounts[1];
        assert_eq!(seed.decide(None), Ok(vec![AccountEvent::AccountOpened { balance_minor: 1000 }]));
    }

    #[test]
    fn seeding_an_open_account_leaves_its_balance() {
        let seed = &AccountsSeed::demo().accounts[1];
        assert_eq!(seed.decide(Some(&AccountState { balance_minor: 3 })), Ok(vec![]));
    }

    #[test]
    fn seeding_a_blank_customer_or_a_negative_balance_is_refused() {
        let blank = AccountSeed { customer_id: " ".into(), balance_minor: 1 };
        assert_eq!(blank.decide(None), Err(DomainError::BlankCustomerId));
        let negative = AccountSeed { customer_id: "c".into(), balance_minor: -1 };
        assert_eq!(negative.decide(None), Err(DomainError::NegativeBalance { balance_minor: -1 }));
    }

    #[test]
    fn a_malformed_seed_does_not_parse() {
        assert!(AccountsSeed::from_json(r#"{"accounts": [{"customer_id": "c"}]}"#).is_err());
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn any_text_as_accounts_parses_or_fails_without_panicking(raw in "\\PC{0,80}") {
            let _ = AccountsSeed::from_json(&raw);
        }

        #[test]
        fn a_seeded_account_opens_exactly_when_its_balance_is_not_negative(balance_minor in any::<i64>()) {
            let json = format!(r#"{{"accounts": [{{"customer_id": "c", "balance_minor": {balance_minor}}}]}}"#);
            let seed = AccountsSeed::from_json(&json).expect("parse");
            prop_assert_eq!(seed.accounts[0].decide(None).is_ok(), balance_minor >= 0);
        }
    }
}
