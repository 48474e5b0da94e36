//! Saga messages → payment decisions → one transaction (events per stream + outbox).
//!
//! - `InventoryReserved`: charge the priced total to the customer's account
//!   (`PaymentCaptured`), or decline it (`PaymentDeclined`: unknown customer, insufficient
//!   funds, or the fault profile). A reservation arriving after the order's cancellation was
//!   noted is not charged.
//! - `ShipmentFailed`, `OrderCancelled`: refund a captured payment (`PaymentRefunded`); a
//!   cancellation seen before any capture is noted so a late reservation is not charged.
//!
//! - Admin commands (`CreditAccount`, `SetAccountBalance` on `payments.commands`): decided on
//!   the account's stream (setting a balance opens an account that is not open yet); the
//!   outcome is published.
//!
//! No double charge under concurrency: the payment and the account are appended at the
//! versions they were read at, so a concurrent decision on either loses the race and is
//! retried against the fresh state.

use serde::{Deserialize, Serialize};
use shared::consumer::{Changes, Handler, HandlerError, MessageContext, Step};
use shared::contracts::{
    CompensationTrigger, CreditAccount, InventoryReserved, OrderCancelled, SetAccountBalance, ShipmentFailed,
    command_type, event_type,
};
use shared::db::Tx;
use shared::envelope::Envelope;
use shared::event_store::{Aggregate, EventStore, Loaded, StreamRef};
use shared::service::Seeder;
use shared::topics::Topics;
use uuid::Uuid;

use crate::domain::{
    self, AccountEvent, AccountState, AccountsSeed, FaultProfile, PaymentDecision, PaymentEvent, PaymentState,
    PublicEvent, account,
};

impl Aggregate for PaymentState {
    type Event = PaymentEvent;
    /// One stream per order (or command): a few events, never a snapshot.
    const SNAPSHOTS: bool = false;
    fn event_type(event: &PaymentEvent) -> &'static str {
        event.event_type()
    }
    fn apply(&mut self, event: &PaymentEvent) {
        PaymentState::apply(self, event);
    }
}

/// A customer's account stream as an aggregate: `None` until `AccountOpened`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Account(pub Option<AccountState>);

impl Aggregate for Account {
    type Event = AccountEvent;
    fn event_type(event: &AccountEvent) -> &'static str {
        event.event_type()
    }
    fn apply(&mut self, event: &AccountEvent) {
        self.0 = account::evolve(self.0, event);
    }
}

/// The payment-svc message handler.
#[derive(Debug, Clone)]
pub struct PaymentHandler {
    pub store: EventStore,
    pub topics: Topics,
    /// Declines and latency layered on top of the real rules (none by default).
    pub fault: FaultProfile,
}

impl Handler for PaymentHandler {
    /// A slow payment provider: the wait happens before the transaction opens (so it holds no
    /// lock), and the decision after it sees whatever was committed meanwhile.
    async fn before_transaction(&self, message: &Envelope) {
        let latency = self.fault.latency();
        if message.event_type == event_type::INVENTORY_RESERVED && !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
    }

    /// The order's payment; for a reservation to charge, the customer's account too.
    fn streams(&self, message: &Envelope) -> Vec<StreamRef> {
        let payment = |order_id| StreamRef::of::<PaymentState>(PaymentState::stream_id(order_id));
        match message.event_type.as_str() {
            event_type::INVENTORY_RESERVED => message.decode::<InventoryReserved>().map_or_else(
                |_| Vec::new(),
                |r| vec![payment(r.order_id), StreamRef::of::<Account>(AccountState::stream_id(&r.customer_id))],
            ),
            // Keyed by their order (a hint: a wrong one costs a read, not a wrong decision).
            event_type::SHIPMENT_FAILED | event_type::ORDER_CANCELLED => {
                message.subject.parse().map(payment).into_iter().collect()
            }
            _ => Vec::new(),
        }
    }

    async fn handle(&self, ctx: &mut MessageContext<'_>) -> Result<(), HandlerError> {
        match ctx.message.event_type.as_str() {
            command_type::CREDIT_ACCOUNT => {
                let c: CreditAccount = ctx.message.decode()?;
                self.apply_to_account(ctx, c.command_id, &c.customer_id, |account| {
                    domain::credit(account, c.amount_minor)
                })
                .await
            }
            command_type::SET_ACCOUNT_BALANCE => {
                let c: SetAccountBalance = ctx.message.decode()?;
                self.apply_to_account(ctx, c.command_id, &c.customer_id, |account| match account {
                    None => domain::open_account(None, c.balance_minor),
                    Some(_) => domain::set_balance(account, c.balance_minor),
                })
                .await
            }
            _ => ctx.execute(self).await,
        }
    }
}

/// What a saga message asks of payment.
#[derive(Debug)]
pub enum Command {
    /// Charge a reservation's priced total.
    Capture(InventoryReserved),
    /// Refund what the order was charged.
    Refund { order_id: Uuid, trigger: CompensationTrigger },
}

impl Command {
    fn order_id(&self) -> Uuid {
        match self {
            Command::Capture(reserved) => reserved.order_id,
            Command::Refund { order_id, .. } => *order_id,
        }
    }
}

/// The order's payment, and the account it touches (if any) with its customer.
pub type PaymentLoaded = (Loaded<PaymentState>, Option<(String, Loaded<Account>)>);

impl Step for PaymentHandler {
    type Command = Command;
    type Loaded = PaymentLoaded;
    type Decision = PaymentDecision;
    type Refusal = domain::DomainError;

    fn store(&self) -> &EventStore {
        &self.store
    }

    fn command(&self, message: &Envelope) -> Result<Option<Command>, HandlerError> {
        let refund = |order_id, trigger| Some(Command::Refund { order_id, trigger });
        Ok(match message.event_type.as_str() {
            event_type::INVENTORY_RESERVED => Some(Command::Capture(message.decode()?)),
            event_type::SHIPMENT_FAILED => {
                refund(message.decode::<ShipmentFailed>()?.order_id, CompensationTrigger::ShipmentFailed)
            }
            event_type::ORDER_CANCELLED => {
                refund(message.decode::<OrderCancelled>()?.order_id, CompensationTrigger::OrderCancelled)
            }
            // Other events on our topics are not ours to act on.
            _ => None,
        })
    }

    /// A capture charges the reservation's customer; a refund goes back to the account the
    /// payment was decided for.
    async fn load(&self, tx: &mut Tx, command: &Command) -> Result<PaymentLoaded, HandlerError> {
        let payment = self.store.load::<PaymentState>(tx, &PaymentState::stream_id(command.order_id())).await?;
        let customer = match command {
            Command::Capture(reserved) => Some(reserved.customer_id.clone()),
            Command::Refund { .. } => payment.state.customer_id().map(str::to_owned),
        };
        let account = match customer {
            Some(customer_id) => {
                let account = self.store.load::<Account>(tx, &AccountState::stream_id(&customer_id)).await?;
                Some((customer_id, account))
            }
            None => None,
        };
        Ok((payment, account))
    }

    fn decide(&self, command: &Command, (payment, customer): &PaymentLoaded) -> Result<PaymentDecision, Self::Refusal> {
        let account = customer.as_ref().and_then(|(_, a)| a.state.0);
        match command {
            Command::Capture(reserved) => {
                domain::capture(reserved, &payment.state, account.as_ref(), self.fault.decision_for(reserved.order_id))
            }
            Command::Refund { order_id, trigger } => {
                domain::refund(*order_id, *trigger, &payment.state, account.as_ref())
            }
        }
    }

    async fn changes(
        &self,
        command: Command,
        (payment, customer): PaymentLoaded,
        decision: PaymentDecision,
    ) -> Result<Changes<'_>, HandlerError> {
        let order_id = command.order_id();
        let mut changes = Changes::new();
        changes.save(PaymentState::stream_id(order_id), payment, decision.payment);
        if !decision.account.is_empty() {
            let Some((customer_id, account)) = customer else {
                return Err(HandlerError::permanent(anyhow::anyhow!(
                    "decision for order {order_id} touched an account that was not loaded"
                )));
            };
            changes.save(AccountState::stream_id(&customer_id), account, decision.account);
        }
        if let Some(public) = decision.publish {
            let compensation = matches!(public, PublicEvent::Refunded(_)).then_some("payment_refunded");
            let payload = public.payload().map_err(HandlerError::permanent)?;
            changes.publish_compensating(&self.topics.payments, public.event_type(), &payload, compensation)?;
        }
        Ok(changes)
    }
}

impl PaymentHandler {
    /// An admin command on one account: decide it on the account's stream, record its events,
    /// and publish the outcome (a refusal is an outcome, not an error).
    async fn apply_to_account(
        &self,
        ctx: &mut MessageContext<'_>,
        command_id: Uuid,
        customer_id: &str,
        decide: impl FnOnce(Option<&AccountState>) -> Result<Vec<AccountEvent>, domain::DomainError>,
    ) -> Result<(), HandlerError> {
        ctx.check_subject(customer_id)?;
        let stream = AccountState::stream_id(customer_id);
        ctx.execute_command::<Account, _>(&self.store, &self.topics.payments, command_id, &stream, |account| {
            if customer_id.trim().is_empty() {
                return Err(domain::DomainError::BlankCustomerId);
            }
            decide(account.0.as_ref())
        })
        .await
    }

    /// A customer's account, `None` if it was never opened (for tests and operators).
    pub async fn account(&self, tx: &mut Tx, customer_id: &str) -> anyhow::Result<Option<AccountState>> {
        Ok(self.store.load::<Account>(tx, &AccountState::stream_id(customer_id)).await?.state.0)
    }

    /// What payment decided for an order (for tests and operators).
    pub async fn payment(&self, tx: &mut Tx, order_id: Uuid) -> anyhow::Result<PaymentState> {
        Ok(self.store.load::<PaymentState>(tx, &PaymentState::stream_id(order_id)).await?.state)
    }
}

impl Seeder for PaymentHandler {
    type Seed = AccountsSeed;

    /// Open the seed's accounts that are not open yet (re-running it on every start is safe:
    /// an open account keeps the balance orders have since moved).
    async fn seed(&self, tx: &mut Tx, seed: &AccountsSeed) -> anyhow::Result<()> {
        let metadata = serde_json::json!({"source": "seed"});
        for seeded in &seed.accounts {
            let stream = AccountState::stream_id(&seeded.customer_id);
            self.store
                .execute::<Account, _>(tx, &stream, &metadata, |account| seeded.decide(account.0.as_ref()))
                .await?
                .map_err(|e| anyhow::anyhow!("seed {}: {e}", seeded.customer_id))?;
        }
        Ok(())
    }
}
