//! Saga messages → shipping decisions → one transaction (events per stream + outbox).
//!
//! - `PaymentCaptured`: book the first carrier day with room for the destination
//!   (`ShipmentScheduled`), or fail with a reason (`ShipmentFailed`). A payment arriving after
//!   the order's cancellation was noted is not shipped.
//! - `OrderCancelled`: cancel a scheduled shipment and free its slot (`ShipmentCancelled`), or
//!   note the cancellation so a late payment is not shipped.
//!
//! - `SetDestinations` (admin, on `shipping.commands`): replaces a carrier's served countries
//!   in the network; the outcome is published.
//!
//! No overbooking under concurrency: the booked carrier day is appended at the version it was
//! read at, so a concurrent booking of the same day loses the race and is retried.

use std::collections::BTreeMap;

use anyhow::Context as _;
use chrono::Utc;
use shared::consumer::{Changes, Handler, HandlerError, MessageContext, Step};
use shared::contracts::{OrderCancelled, PaymentCaptured, SetDestinations, command_type, event_type};
use shared::db::Tx;
use shared::envelope::Envelope;
use shared::event_store::{Aggregate, EventStore, Loaded, StoreError, StreamRef};
use shared::service::Seeder;
use shared::topics::Topics;
use uuid::Uuid;

use crate::domain::{
    self, CarrierDay, CarrierDayEvent, CarrierDayId, CarrierDays, CarrierName, CountryCode, Decision, Network,
    NetworkEvent, NetworkSeed, PublicEvent, ScheduleShipment, Shipment, ShipmentEvent,
};

impl Aggregate for Network {
    type Event = NetworkEvent;
    fn event_type(event: &NetworkEvent) -> &'static str {
        event.event_type()
    }
    fn apply(&mut self, event: &NetworkEvent) {
        *self = Network::apply(std::mem::take(self), event);
    }
}

impl Aggregate for CarrierDay {
    type Event = CarrierDayEvent;
    fn event_type(event: &CarrierDayEvent) -> &'static str {
        event.event_type()
    }
    fn apply(&mut self, event: &CarrierDayEvent) {
        *self = CarrierDay::apply(*self, event);
    }
}

impl Aggregate for Shipment {
    type Event = ShipmentEvent;
    /// One stream per order (or command): a few events, never a snapshot.
    const SNAPSHOTS: bool = false;
    fn event_type(event: &ShipmentEvent) -> &'static str {
        event.event_type()
    }
    fn apply(&mut self, event: &ShipmentEvent) {
        *self = Shipment::apply(std::mem::take(self), event);
    }
}

/// The shipping-svc message handler.
#[derive(Debug, Clone)]
pub struct ShippingHandler {
    pub store: EventStore,
    pub topics: Topics,
    /// The fault profile's latency before each shipment decision (zero by default).
    pub latency: std::time::Duration,
}

/// The carrier days a decision was taken on, as loaded.
type Days = BTreeMap<CarrierDayId, Loaded<CarrierDay>>;

impl Handler for ShippingHandler {
    /// A slow carrier API: the wait happens before the transaction opens (so it holds no lock),
    /// and the decision after it sees whatever was committed meanwhile.
    async fn before_transaction(&self, message: &Envelope) {
        if message.event_type == event_type::PAYMENT_CAPTURED && !self.latency.is_zero() {
            tokio::time::sleep(self.latency).await;
        }
    }

    /// The order's shipment; for a payment to ship, the carrier network too (the days it may
    /// book depend on the network, and are read when loaded). Keyed by their order (a hint: a
    /// wrong one costs a read, not a wrong decision).
    fn streams(&self, message: &Envelope) -> Vec<StreamRef> {
        let shipment = message.subject.parse().map(|id| StreamRef::of::<Shipment>(Shipment::stream_id(id)));
        match message.event_type.as_str() {
            event_type::PAYMENT_CAPTURED => {
                shipment.into_iter().chain([StreamRef::of::<Network>(Network::stream_id())]).collect()
            }
            event_type::ORDER_CANCELLED => shipment.into_iter().collect(),
            _ => Vec::new(),
        }
    }

    async fn handle(&self, ctx: &mut MessageContext<'_>) -> Result<(), HandlerError> {
        if ctx.message.event_type == command_type::SET_DESTINATIONS {
            let c: SetDestinations = ctx.message.decode()?;
            return self.set_destinations(ctx, c).await;
        }
        ctx.execute(self).await
    }
}

/// What a saga message asks of shipping.
#[derive(Debug)]
pub enum Command {
    /// Book a paid order's shipment.
    Schedule(ScheduleShipment),
    /// Cancel the order's shipment, or note the cancellation.
    Cancel { order_id: Uuid },
}

impl Command {
    fn order_id(&self) -> Uuid {
        match self {
            Command::Schedule(command) => command.order_id,
            Command::Cancel { order_id } => *order_id,
        }
    }
}

/// The order's shipment, the carrier network (default when not needed) and the carrier days
/// the decision may book or free.
pub type ShippingLoaded = (Loaded<Shipment>, Network, Days);

impl Step for ShippingHandler {
    type Command = Command;
    type Loaded = ShippingLoaded;
    type Decision = Decision;
    type Refusal = domain::DomainError;

    fn store(&self) -> &EventStore {
        &self.store
    }

    /// A payment's booking starts today (the clock is read here, not in the decision).
    fn command(&self, message: &Envelope) -> Result<Option<Command>, HandlerError> {
        Ok(match message.event_type.as_str() {
            event_type::PAYMENT_CAPTURED => {
                let paid: PaymentCaptured = message.decode()?;
                Some(Command::Schedule(ScheduleShipment::from_payment(&paid, Utc::now().date_naive())))
            }
            event_type::ORDER_CANCELLED => {
                Some(Command::Cancel { order_id: message.decode::<OrderCancelled>()?.order_id })
            }
            // Other events on our topics are not ours to act on.
            _ => None,
        })
    }

    /// A shipment still undecided reads the network and the days it may book; a scheduled one
    /// being cancelled, the day it holds (freeing a slot needs only its stream's version).
    async fn load(&self, tx: &mut Tx, command: &Command) -> Result<ShippingLoaded, HandlerError> {
        let shipment = self.store.load::<Shipment>(tx, &Shipment::stream_id(command.order_id())).await?;
        let (network, slots) = match (command, &shipment.state) {
            (Command::Schedule(schedule), Shipment::Undecided) => {
                let network = self.store.load::<Network>(tx, &Network::stream_id()).await?.state;
                let slots = schedule.candidate_slots(&network);
                (network, slots)
            }
            (Command::Cancel { .. }, Shipment::Scheduled(booking)) => (Network::default(), vec![booking.carrier_day()]),
            _ => (Network::default(), Vec::new()),
        };
        let days = self.load_days(tx, slots).await?;
        Ok((shipment, network, days))
    }

    fn decide(&self, command: &Command, (shipment, network, days): &ShippingLoaded) -> Result<Decision, Self::Refusal> {
        match command {
            Command::Schedule(schedule) => {
                let states: CarrierDays = days.iter().map(|(id, day)| (id.clone(), day.state)).collect();
                domain::schedule(&shipment.state, schedule, network, &states)
            }
            Command::Cancel { order_id } => Ok(domain::cancel(&shipment.state, *order_id)),
        }
    }

    async fn changes(
        &self,
        command: Command,
        (shipment, _, mut days): ShippingLoaded,
        decision: Decision,
    ) -> Result<Changes<'_>, HandlerError> {
        let mut changes = Changes::new();
        if let Some(change) = decision.slot {
            let day = days.remove(&change.slot).ok_or_else(|| {
                HandlerError::permanent(anyhow::anyhow!(
                    "decision touched carrier day {} that was not loaded",
                    change.slot
                ))
            })?;
            changes.save(CarrierDay::stream_id(&change.slot), day, vec![change.event]);
        }
        changes.save(Shipment::stream_id(command.order_id()), shipment, decision.shipment);
        if let Some(public) = decision.publish {
            let compensation = matches!(public, PublicEvent::Cancelled(_)).then_some("shipment_cancelled");
            changes.publish_compensating(&self.topics.shipping, public.event_type(), &public, compensation)?;
        }
        Ok(changes)
    }
}

impl ShippingHandler {
    async fn load_days(&self, tx: &mut Tx, slots: Vec<CarrierDayId>) -> Result<Days, StoreError> {
        let streams: Vec<String> = slots.iter().map(CarrierDay::stream_id).collect();
        let mut by_stream = self.store.load_many::<CarrierDay>(tx, &streams).await?;
        let mut days = Days::new();
        for (slot, stream) in slots.into_iter().zip(&streams) {
            // A slot named twice keeps what the first took.
            if let Some(day) = by_stream.remove(stream) {
                days.insert(slot, day);
            }
        }
        Ok(days)
    }

    /// The admin command: parse the carrier and countries, decide on the network, record the
    /// event, and publish the outcome (a refusal is an outcome, not an error).
    async fn set_destinations(&self, ctx: &mut MessageContext<'_>, c: SetDestinations) -> Result<(), HandlerError> {
        ctx.check_subject(&c.carrier)?;
        ctx.execute_command::<Network, _>(
            &self.store,
            &self.topics.shipping,
            c.command_id,
            &Network::stream_id(),
            |network| {
                let carrier = CarrierName::try_from(c.carrier.as_str())?;
                let countries =
                    c.countries.iter().map(|code| CountryCode::try_from(code.as_str())).collect::<Result<_, _>>()?;
                domain::set_destinations(network, domain::SetDestinations { carrier, countries })
            },
        )
        .await
    }

    /// The carrier network (for tests and operators).
    pub async fn network(&self, tx: &mut Tx) -> anyhow::Result<Network> {
        Ok(self.store.load::<Network>(tx, &Network::stream_id()).await?.state)
    }

    /// What was decided for an order's shipment (for tests and operators).
    pub async fn shipment(&self, tx: &mut Tx, order_id: Uuid) -> anyhow::Result<Shipment> {
        Ok(self.store.load::<Shipment>(tx, &Shipment::stream_id(order_id)).await?.state)
    }

    /// How booked one carrier's day is (for tests and operators).
    pub async fn carrier_day(&self, tx: &mut Tx, day: &CarrierDayId) -> anyhow::Result<CarrierDay> {
        Ok(self.store.load::<CarrierDay>(tx, &CarrierDay::stream_id(day)).await?.state)
    }
}

impl Seeder for ShippingHandler {
    type Seed = NetworkSeed;

    /// Register the seed's carriers the network does not know yet (re-running it on every
    /// start is safe, and keeps an admin's changes).
    async fn seed(&self, tx: &mut Tx, seed: &NetworkSeed) -> anyhow::Result<()> {
        let metadata = serde_json::json!({"source": "seed"});
        self.store
            .execute::<Network, _>(tx, &Network::stream_id(), &metadata, |network| domain::seed_network(network, seed))
            .await?
            .context("invalid network seed")?;
        Ok(())
    }
}
