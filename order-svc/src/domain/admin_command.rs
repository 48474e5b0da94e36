//! Admin commands: operators provision the other services' reference data (products and
//! stock, customer accounts, served destinations) through order-svc's API. Pure, no I/O.
//!
//! order-svc owns none of that data, so it does not decide these commands: it parses the request
//! into an [`AdminCommand`] (every value checked here, so the owner only decides what depends on
//! its state), records `AdminCommandIssued` in the command's own audit stream
//! (`admin-command-{id}`) and sends the command to the owning service through the outbox, in
//! one transaction. The owner applies or rejects it and publishes the outcome, which order-svc
//! appends to the same stream: [`AuditState`] folds it into `pending`, `applied` or `rejected`.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::contracts::{self, command_type};
use shared::topics::{Topics, service};
use uuid::Uuid;

use super::command::{CustomerId, InvalidValue, Sku, display_name};

/// The largest amount (price, credit, balance) an admin command may carry, in minor units:
/// ten billion euros, far below where sums of them could overflow.
pub const MAX_AMOUNT_MINOR: i64 = 1_000_000_000_000;
/// The largest number of units one stock adjustment may add or remove.
pub const MAX_STOCK_DELTA: i64 = 1_000_000_000;
/// The most countries one carrier may be set to serve.
pub const MAX_DESTINATIONS: usize = 300;

/// A product's display name: 1 to 200 characters, no surrounding whitespace, no control or
/// invisible characters (zero-width, bidi, tags).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProductName(String);

impl ProductName {
    pub const MAX_CHARS: usize = 200;

    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        display_name("name", raw.into(), Self::MAX_CHARS).map(Self)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// An amount in minor units within `min..=MAX_AMOUNT_MINOR`.
fn amount(what: &str, raw: i64, min: i64) -> Result<i64, InvalidValue> {
    if (min..=MAX_AMOUNT_MINOR).contains(&raw) {
        Ok(raw)
    } else {
        Err(InvalidValue::new(format!("{what} must be between {min} and {MAX_AMOUNT_MINOR}")))
    }
}

/// A unit price: 0 (free) to [`MAX_AMOUNT_MINOR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Price(i64);

impl Price {
    pub fn parse(raw: i64) -> Result<Self, InvalidValue> {
        amount("price_minor", raw, 0).map(Self)
    }

    pub fn minor(self) -> i64 {
        self.0
    }
}

/// Units added (positive) or removed (negative): not zero, at most [`MAX_STOCK_DELTA`] either way.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StockDelta(i64);

impl StockDelta {
    pub fn parse(raw: i64) -> Result<Self, InvalidValue> {
        if raw != 0 && raw.unsigned_abs() <= MAX_STOCK_DELTA.unsigned_abs() {
            Ok(Self(raw))
        } else {
            Err(InvalidValue::new(format!("delta must be between -{MAX_STOCK_DELTA} and {MAX_STOCK_DELTA}, and not 0")))
        }
    }

    pub fn get(self) -> i64 {
        self.0
    }
}

/// A credit: 1 to [`MAX_AMOUNT_MINOR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Credit(i64);

impl Credit {
    pub fn parse(raw: i64) -> Result<Self, InvalidValue> {
        amount("amount_minor", raw, 1).map(Self)
    }

    pub fn minor(self) -> i64 {
        self.0
    }
}

/// An account balance: 0 to [`MAX_AMOUNT_MINOR`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Balance(i64);

impl Balance {
    pub fn parse(raw: i64) -> Result<Self, InvalidValue> {
        amount("balance_minor", raw, 0).map(Self)
    }

    pub fn minor(self) -> i64 {
        self.0
    }
}

/// A carrier's name as shipping-svc knows it: 1 to 40 of `a-z`, `0-9`, `-`, `_`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierName(String);

impl CarrierName {
    pub fn parse(raw: impl Into<String>) -> Result<Self, InvalidValue> {
        let raw = raw.into();
        let valid = (1..=40).contains(&raw.len())
            && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if valid { Ok(Self(raw)) } else { Err(InvalidValue::new("carrier must be 1 to 40 of a-z, 0-9, '-' or '_'")) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The countries a carrier serves: distinct ISO 3166-1 alpha-2 codes (upper-cased), at most
/// [`MAX_DESTINATIONS`]; empty means it serves none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destinations(BTreeSet<String>);

impl Destinations {
    pub fn parse(raw: Vec<String>) -> Result<Self, InvalidValue> {
        if raw.len() > MAX_DESTINATIONS {
            return Err(InvalidValue::new(format!("countries must list at most {MAX_DESTINATIONS} codes")));
        }
        raw.iter()
            .map(|code| {
                super::CountryCode::parse(code)
                    .map(|c| c.as_str().to_owned())
                    .map_err(|_| InvalidValue::new("every country must be a two-letter ISO 3166-1 code"))
            })
            .collect::<Result<BTreeSet<_>, _>>()
            .map(Self)
    }

    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

/// A parsed, valid admin command. Whether it can be applied (the SKU exists, the stock suffices,
/// the account is open, the carrier is known) is the owning service's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminCommand {
    UpsertProduct { sku: Sku, name: ProductName, price: Price },
    AdjustStock { sku: Sku, delta: StockDelta },
    CreditAccount { customer_id: CustomerId, amount: Credit },
    SetAccountBalance { customer_id: CustomerId, balance: Balance },
    SetDestinations { carrier: CarrierName, countries: Destinations },
}

impl AdminCommand {
    /// The command's `ce_type`.
    pub fn command_type(&self) -> &'static str {
        match self {
            AdminCommand::UpsertProduct { .. } => command_type::UPSERT_PRODUCT,
            AdminCommand::AdjustStock { .. } => command_type::ADJUST_STOCK,
            AdminCommand::CreditAccount { .. } => command_type::CREDIT_ACCOUNT,
            AdminCommand::SetAccountBalance { .. } => command_type::SET_ACCOUNT_BALANCE,
            AdminCommand::SetDestinations { .. } => command_type::SET_DESTINATIONS,
        }
    }

    /// The service that owns the command's target and decides it.
    pub fn service(&self) -> &'static str {
        match self {
            AdminCommand::UpsertProduct { .. } | AdminCommand::AdjustStock { .. } => service::INVENTORY,
            AdminCommand::CreditAccount { .. } | AdminCommand::SetAccountBalance { .. } => service::PAYMENT,
            AdminCommand::SetDestinations { .. } => service::SHIPPING,
        }
    }

    /// What the command changes (the SKU, customer or carrier): the message key, so that
    /// commands on one target are applied in the order they were issued.
    pub fn target(&self) -> &str {
        match self {
            AdminCommand::UpsertProduct { sku, .. } | AdminCommand::AdjustStock { sku, .. } => sku.as_str(),
            AdminCommand::CreditAccount { customer_id, .. } | AdminCommand::SetAccountBalance { customer_id, .. } => {
                customer_id.as_str()
            }
            AdminCommand::SetDestinations { carrier, .. } => carrier.as_str(),
        }
    }

    /// The command topic of the owning service.
    pub fn topic<'a>(&self, topics: &'a Topics) -> &'a str {
        topics.commands_for(self.service()).unwrap_or_default()
    }

    /// The command message's payload (its contract in `shared::contracts`).
    pub fn payload(&self, command_id: Uuid) -> Result<serde_json::Value, serde_json::Error> {
        match self {
            AdminCommand::UpsertProduct { sku, name, price } => serde_json::to_value(contracts::UpsertProduct {
                command_id,
                sku: sku.as_str().to_owned(),
                name: name.as_str().to_owned(),
                price_minor: price.minor(),
            }),
            AdminCommand::AdjustStock { sku, delta } => serde_json::to_value(contracts::AdjustStock {
                command_id,
                sku: sku.as_str().to_owned(),
                delta: delta.get(),
            }),
            AdminCommand::CreditAccount { customer_id, amount } => serde_json::to_value(contracts::CreditAccount {
                command_id,
                customer_id: customer_id.as_str().to_owned(),
                amount_minor: amount.minor(),
            }),
            AdminCommand::SetAccountBalance { customer_id, balance } => {
                serde_json::to_value(contracts::SetAccountBalance {
                    command_id,
                    customer_id: customer_id.as_str().to_owned(),
                    balance_minor: balance.minor(),
                })
            }
            AdminCommand::SetDestinations { carrier, countries } => serde_json::to_value(contracts::SetDestinations {
                command_id,
                carrier: carrier.as_str().to_owned(),
                countries: countries.codes().map(str::to_owned).collect(),
            }),
        }
    }

    /// What was asked, for the audit trail: the payload without the command id.
    pub fn request(&self) -> Result<serde_json::Value, serde_json::Error> {
        let mut payload = self.payload(Uuid::nil())?;
        if let Some(fields) = payload.as_object_mut() {
            fields.remove("command_id");
        }
        Ok(payload)
    }
}

// ---- the audit stream ----

/// Prefix of an admin command's stream in order-svc's event store.
pub const STREAM_PREFIX: &str = "admin-command-";

/// What happened to an admin command, as order-svc records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AuditEvent {
    /// An admin asked for it (`issued_by` is the key id, never the key).
    AdminCommandIssued {
        command_id: Uuid,
        command_type: String,
        service: String,
        target: String,
        request: serde_json::Value,
        issued_by: String,
        issued_at: DateTime<Utc>,
    },
    /// The owning service applied it, recording these events of its own.
    AdminCommandApplied { command_id: Uuid, service: String, events: Vec<String>, at: DateTime<Utc> },
    /// The owning service refused it.
    AdminCommandRejected { command_id: Uuid, service: String, reason: String, at: DateTime<Utc> },
}

impl AuditEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            AuditEvent::AdminCommandIssued { .. } => "AdminCommandIssued",
            AuditEvent::AdminCommandApplied { .. } => contracts::event_type::ADMIN_COMMAND_APPLIED,
            AuditEvent::AdminCommandRejected { .. } => contracts::event_type::ADMIN_COMMAND_REJECTED,
        }
    }
}

/// Where an admin command is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandStatus {
    /// Sent; the owning service has not answered yet.
    Pending,
    Applied,
    Rejected,
}

impl CommandStatus {
    pub const ALL: [CommandStatus; 3] = [CommandStatus::Pending, CommandStatus::Applied, CommandStatus::Rejected];

    pub fn as_str(self) -> &'static str {
        match self {
            CommandStatus::Pending => "pending",
            CommandStatus::Applied => "applied",
            CommandStatus::Rejected => "rejected",
        }
    }
}

/// An admin command folded from its audit stream.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct AuditState {
    pub command_id: Uuid,
    pub command_type: String,
    pub service: String,
    pub target: String,
    pub request: serde_json::Value,
    pub issued_by: String,
    pub issued_at: Option<DateTime<Utc>>,
    pub updated_at: Option<DateTime<Utc>>,
    pub status: Option<CommandStatus>,
    /// The owner's events (applied) or its reason (rejected).
    pub events: Vec<String>,
    pub reason: Option<String>,
}

impl AuditState {
    /// The stream that audits one admin command: `admin-command-{command_id}`.
    pub fn stream_id(command_id: Uuid) -> String {
        format!("{STREAM_PREFIX}{command_id}")
    }

    /// Has `AdminCommandIssued` been recorded?
    pub fn exists(&self) -> bool {
        self.status.is_some()
    }

    pub fn apply(&mut self, event: &AuditEvent) {
        match event {
            AuditEvent::AdminCommandIssued {
                command_id,
                command_type,
                service,
                target,
                request,
                issued_by,
                issued_at,
            } => {
                *self = AuditState {
                    command_id: *command_id,
                    command_type: command_type.clone(),
                    service: service.clone(),
                    target: target.clone(),
                    request: request.clone(),
                    issued_by: issued_by.clone(),
                    issued_at: Some(*issued_at),
                    updated_at: Some(*issued_at),
                    status: Some(CommandStatus::Pending),
                    events: Vec::new(),
                    reason: None,
                };
            }
            AuditEvent::AdminCommandApplied { events, at, .. } => {
                self.status = Some(CommandStatus::Applied);
                self.events.clone_from(events);
                self.updated_at = Some(*at);
            }
            AuditEvent::AdminCommandRejected { reason, at, .. } => {
                self.status = Some(CommandStatus::Rejected);
                self.reason = Some(reason.clone());
                self.updated_at = Some(*at);
            }
        }
    }
}

/// Why an outcome cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuditError {
    #[error("no admin command {0} was issued")]
    UnknownCommand(Uuid),
    #[error("admin command {command_id} was sent to {expected}, but {actual} answered it")]
    WrongService { command_id: Uuid, expected: String, actual: String },
}

/// The owner's answer to a command, as published on its event topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandOutcome {
    Applied(contracts::AdminCommandApplied),
    Rejected(contracts::AdminCommandRejected),
}

impl CommandOutcome {
    fn parts(&self) -> (Uuid, &str) {
        match self {
            CommandOutcome::Applied(a) => (a.command_id, &a.service),
            CommandOutcome::Rejected(r) => (r.command_id, &r.service),
        }
    }
}

/// Record an owner's outcome: the first one counts, a repeat changes nothing; an outcome from a
/// service the command was not sent to, or for a command never issued, is refused.
pub fn record_outcome(
    state: &AuditState,
    outcome: CommandOutcome,
    at: DateTime<Utc>,
) -> Result<Vec<AuditEvent>, AuditError> {
    let (command_id, service) = outcome.parts();
    if !state.exists() {
        return Err(AuditError::UnknownCommand(command_id));
    }
    if state.service != service {
        return Err(AuditError::WrongService {
            command_id,
            expected: state.service.clone(),
            actual: service.to_owned(),
        });
    }
    if state.status != Some(CommandStatus::Pending) {
        return Ok(Vec::new());
    }
    Ok(vec![match outcome {
        CommandOutcome::Applied(a) => {
            AuditEvent::AdminCommandApplied { command_id, service: a.service, events: a.events, at }
        }
        CommandOutcome::Rejected(r) => {
            AuditEvent::AdminCommandRejected { command_id, service: r.service, reason: r.reason, at }
        }
    }])
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn issued(service: &str) -> AuditState {
        let mut state = AuditState::default();
        state.apply(&AuditEvent::AdminCommandIssued {
            command_id: Uuid::from_u128(1),
            command_type: command_type::ADJUST_STOCK.to_owned(),
            service: service.to_owned(),
            target: "sku-tee".to_owned(),
            request: serde_json::json!({"sku": "sku-tee", "delta": 5}),
            issued_by: "key-1".to_owned(),
            issued_at: Utc::now(),
        });
        state
    }

    fn applied(service: &str) -> CommandOutcome {
        CommandOutcome::Applied(contracts::AdminCommandApplied {
            command_id: Uuid::from_u128(1),
            command_type: command_type::ADJUST_STOCK.to_owned(),
            service: service.to_owned(),
            events: vec!["StockAdjusted".to_owned()],
        })
    }

    #[test]
    fn an_issued_command_is_pending_until_its_owner_answers_once() {
        let mut state = issued(service::INVENTORY);
        assert_eq!(state.status, Some(CommandStatus::Pending));
        let events = record_outcome(&state, applied(service::INVENTORY), Utc::now()).expect("recorded");
        for e in &events {
            state.apply(e);
        }
        assert_eq!(state.status, Some(CommandStatus::Applied));
        assert_eq!(state.events, vec!["StockAdjusted"]);
        assert_eq!(record_outcome(&state, applied(service::INVENTORY), Utc::now()), Ok(vec![]), "a repeat");
    }

    #[test]
    fn an_outcome_from_another_service_or_for_no_command_is_refused() {
        assert!(matches!(
            record_outcome(&issued(service::INVENTORY), applied(service::PAYMENT), Utc::now()),
            Err(AuditError::WrongService { .. })
        ));
        assert!(matches!(
            record_outcome(&AuditState::default(), applied(service::INVENTORY), Utc::now()),
            Err(AuditError::UnknownCommand(_))
        ));
    }

    #[test]
    fn each_command_goes_to_the_service_owning_its_target_keyed_by_the_target() {
        let topics = Topics::with_prefix("p.");
        let cmd = AdminCommand::CreditAccount {
            customer_id: CustomerId::parse("cust-rich").expect("id"),
            amount: Credit::parse(500).expect("amount"),
        };
        assert_eq!(
            (cmd.service(), cmd.target(), cmd.topic(&topics)),
            (service::PAYMENT, "cust-rich", "p.payments.commands")
        );
        let payload = cmd.payload(Uuid::from_u128(9)).expect("payload");
        let decoded: contracts::CreditAccount = serde_json::from_value(payload).expect("contract");
        assert_eq!(decoded.amount_minor, 500);
        assert_eq!(
            cmd.request().expect("request"),
            serde_json::json!({"customer_id": "cust-rich", "amount_minor": 500})
        );
    }

    #[test]
    fn destinations_are_upper_cased_and_deduplicated() {
        let parsed = Destinations::parse(vec!["nl".into(), "NL".into(), "be".into()]).expect("valid");
        assert_eq!(parsed.codes().collect::<Vec<_>>(), vec!["BE", "NL"]);
        assert!(Destinations::parse(vec!["NLD".into()]).is_err());
        assert!(Destinations::parse(vec!["N1".into()]).is_err());
        assert!(Destinations::parse(vec!["NL".into(); MAX_DESTINATIONS + 1]).is_err());
        assert_eq!(Destinations::parse(vec![]).map(|d| d.codes().count()), Ok(0));
    }

    proptest! {
        #[test]
        fn amounts_parse_exactly_within_their_bounds(raw in any::<i64>()) {
            prop_assert_eq!(Price::parse(raw).is_ok(), (0..=MAX_AMOUNT_MINOR).contains(&raw));
            prop_assert_eq!(Balance::parse(raw).is_ok(), (0..=MAX_AMOUNT_MINOR).contains(&raw));
            prop_assert_eq!(Credit::parse(raw).is_ok(), (1..=MAX_AMOUNT_MINOR).contains(&raw));
            prop_assert_eq!(StockDelta::parse(raw).is_ok(), raw != 0 && (-MAX_STOCK_DELTA..=MAX_STOCK_DELTA).contains(&raw));
            if let Ok(price) = Price::parse(raw) {
                prop_assert_eq!(price.minor(), raw);
            }
        }

        #[test]
        fn a_carrier_name_parses_exactly_when_it_has_the_allowed_shape(raw in "\\PC{0,50}") {
            let expected = (1..=40).contains(&raw.len())
                && raw.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
            prop_assert_eq!(CarrierName::parse(raw.clone()).is_ok(), expected);
            if let Ok(name) = CarrierName::parse(raw.clone()) {
                prop_assert_eq!(name.as_str(), raw.as_str());
            }
        }

        #[test]
        fn destinations_hold_only_upper_case_pairs_of_letters(raw in proptest::collection::vec("\\PC{0,3}", 0..20)) {
            match Destinations::parse(raw.clone()) {
                Ok(parsed) => {
                    for code in parsed.codes() {
                        prop_assert!(code.len() == 2 && code.bytes().all(|b| b.is_ascii_uppercase()));
                    }
                    let expected: BTreeSet<String> = raw.iter().map(|c| c.to_ascii_uppercase()).collect();
                    prop_assert_eq!(parsed.codes().map(str::to_owned).collect::<BTreeSet<_>>(), expected);
                }
                Err(_) => prop_assert!(raw.iter().any(|c| c.len() != 2 || !c.bytes().all(|b| b.is_ascii_alphabetic()))),
            }
        }

        #[test]
        fn a_product_name_parses_when_it_is_trimmed_printable_and_short(
            raw in "\\PC{0,210}|[ \\t]{0,2}[a-z]{1,5}[ \\t]{0,2}|\\u{0}a|[a-z ]{0,5}[\\u{200b}-\\u{200f}\\u{202a}-\\u{202e}\\u{2066}-\\u{2069}\\u{feff}\\u{61c}][a-z]{0,5}"
        ) {
            let expected = !raw.trim().is_empty() && raw.trim() == raw && !raw.chars().any(char::is_control)
                && !raw.chars().any(crate::domain::command::is_hidden_char)
                && raw.chars().count() <= ProductName::MAX_CHARS;
            prop_assert_eq!(ProductName::parse(raw.clone()).is_ok(), expected);
        }
    }
}
