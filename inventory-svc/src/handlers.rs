//! Saga messages → inventory decisions → one transaction (events per stream + outbox).
//!
//! - `OrderPlaced`: reserve every line or none (`InventoryReserved` priced, or
//!   `InventoryRejected`).
//! - `PaymentDeclined`, `ShipmentFailed`, `OrderCancelled`: release what is held
//!   (`InventoryReleased`), including a reservation made after the cancellation.
//! - `ShipmentScheduled`: the reserved units leave with the shipment.
//! - Admin commands (`UpsertProduct`, `AdjustStock` on `inventory.commands`): decided on the
//!   SKU's stream; the outcome (`AdminCommandApplied` or `AdminCommandRejected`) is published.
//!
//! No overselling under concurrency: every SKU touched is appended at the version it was read
//! at, so a concurrent reservation of the same SKU loses the race and is retried.

use std::collections::HashMap;

use shared::consumer::{Changes, Handler, HandlerError, MessageContext, Step};
use shared::contracts::{
    AdjustStock, CompensationTrigger, OrderCancelled, OrderPlaced, PaymentDeclined, ShipmentFailed, ShipmentScheduled,
    UpsertProduct, command_type, event_type,
};
use shared::db::Tx;
use shared::envelope::Envelope;
use shared::event_store::{Aggregate, EventStore, Loaded, StoreError, StreamRef};
use shared::service::Seeder;
use shared::topics::Topics;
use uuid::Uuid;

use crate::domain::{
    self, CatalogueSeed, InventoryDecision, PublicEvent, ReservationEvent, ReservationState, SkuEvent, SkuState,
};

impl Aggregate for SkuState {
    type Event = SkuEvent;
    fn event_type(event: &SkuEvent) -> &'static str {
        event.event_type()
    }
    fn apply(&mut self, event: &SkuEvent) {
        SkuState::apply(self, event);
    }
}

impl Aggregate for ReservationState {
    type Event = ReservationEvent;
    /// One stream per order (or command): a few events, never a snapshot.
    const SNAPSHOTS: bool = false;
    fn event_type(event: &ReservationEvent) -> &'static str {
        event.event_type()
    }
    fn apply(&mut self, event: &ReservationEvent) {
        ReservationState::apply(self, event);
    }
}

/// The inventory-svc message handler.
#[derive(Debug, Clone)]
pub struct InventoryHandler {
    pub store: EventStore,
    pub topics: Topics,
}

impl Handler for InventoryHandler {
    /// The order's reservation; for a new order, the stock of every SKU it names too (a release
    /// learns its SKUs from the reservation).
    fn streams(&self, message: &Envelope) -> Vec<StreamRef> {
        let reservation = |order_id| StreamRef::of::<ReservationState>(ReservationState::stream_id(order_id));
        match message.event_type.as_str() {
            event_type::ORDER_PLACED => message.decode::<OrderPlaced>().map_or_else(
                |_| Vec::new(),
                |placed| {
                    let skus =
                        placed.items.iter().map(|line| StreamRef::of::<SkuState>(SkuState::stream_id(&line.sku)));
                    std::iter::once(reservation(placed.order_id)).chain(skus).collect()
                },
            ),
            // Keyed by their order (a hint: a wrong one costs a read, not a wrong decision).
            event_type::PAYMENT_DECLINED
            | event_type::SHIPMENT_FAILED
            | event_type::ORDER_CANCELLED
            | event_type::SHIPMENT_SCHEDULED => message.subject.parse().map(reservation).into_iter().collect(),
            _ => Vec::new(),
        }
    }

    async fn handle(&self, ctx: &mut MessageContext<'_>) -> Result<(), HandlerError> {
        match ctx.message.event_type.as_str() {
            command_type::UPSERT_PRODUCT => {
                let c: UpsertProduct = ctx.message.decode()?;
                self.apply_to_sku(ctx, c.command_id, &c.sku, |state| {
                    domain::upsert_product(state, c.name.clone(), c.price_minor)
                })
                .await
            }
            command_type::ADJUST_STOCK => {
                let c: AdjustStock = ctx.message.decode()?;
                self.apply_to_sku(ctx, c.command_id, &c.sku, |state| domain::adjust_stock(state, c.delta)).await
            }
            _ => ctx.execute(self).await,
        }
    }
}

/// What a saga message asks of inventory.
#[derive(Debug)]
pub enum Command {
    /// Reserve a new order's lines.
    Reserve(OrderPlaced),
    /// Release what an order holds.
    Release { order_id: Uuid, trigger: CompensationTrigger },
    /// The order's reserved units left with its shipment.
    Ship { order_id: Uuid },
}

impl Command {
    fn order_id(&self) -> Uuid {
        match self {
            Command::Reserve(placed) => placed.order_id,
            Command::Release { order_id, .. } | Command::Ship { order_id } => *order_id,
        }
    }
}

type Skus = HashMap<String, Loaded<SkuState>>;

impl Step for InventoryHandler {
    type Command = Command;
    /// The order's reservation and the stock of the SKUs it names or holds.
    type Loaded = (Loaded<ReservationState>, Skus);
    type Decision = InventoryDecision;
    type Refusal = domain::DomainError;

    fn store(&self) -> &EventStore {
        &self.store
    }

    fn command(&self, message: &Envelope) -> Result<Option<Command>, HandlerError> {
        let release = |order_id, trigger| Some(Command::Release { order_id, trigger });
        Ok(match message.event_type.as_str() {
            event_type::ORDER_PLACED => Some(Command::Reserve(message.decode()?)),
            event_type::PAYMENT_DECLINED => {
                release(message.decode::<PaymentDeclined>()?.order_id, CompensationTrigger::PaymentDeclined)
            }
            event_type::SHIPMENT_FAILED => {
                release(message.decode::<ShipmentFailed>()?.order_id, CompensationTrigger::ShipmentFailed)
            }
            event_type::ORDER_CANCELLED => {
                release(message.decode::<OrderCancelled>()?.order_id, CompensationTrigger::OrderCancelled)
            }
            event_type::SHIPMENT_SCHEDULED => {
                Some(Command::Ship { order_id: message.decode::<ShipmentScheduled>()?.order_id })
            }
            // Other events on our topics are not ours to act on.
            _ => None,
        })
    }

    /// A new order's SKUs are the ones it names; a release or a shipment learns them from the
    /// reservation.
    async fn load(&self, tx: &mut Tx, command: &Command) -> Result<Self::Loaded, HandlerError> {
        let reservation =
            self.store.load::<ReservationState>(tx, &ReservationState::stream_id(command.order_id())).await?;
        let skus = match command {
            Command::Reserve(placed) => self.load_skus(tx, placed.items.iter().map(|l| &l.sku)).await?,
            Command::Release { .. } | Command::Ship { .. } => {
                self.load_skus(tx, reservation.state.skus_involved().iter()).await?
            }
        };
        Ok((reservation, skus))
    }

    fn decide(
        &self,
        command: &Command,
        (reservation, skus): &Self::Loaded,
    ) -> Result<InventoryDecision, Self::Refusal> {
        let skus = states(skus);
        match command {
            Command::Reserve(placed) => domain::reserve(
                placed.order_id,
                &placed.customer_id,
                &placed.items,
                &placed.ship_to,
                &reservation.state,
                &skus,
            ),
            Command::Release { order_id, trigger } => domain::release(*order_id, *trigger, &reservation.state, &skus),
            Command::Ship { order_id } => domain::mark_shipped(*order_id, &reservation.state, &skus),
        }
    }

    async fn changes(
        &self,
        command: Command,
        (reservation, mut skus): Self::Loaded,
        decision: InventoryDecision,
    ) -> Result<Changes<'_>, HandlerError> {
        let mut changes = Changes::new();
        // SKUs in sorted order (the decision's map is a BTreeMap): one lock order everywhere.
        for (sku, events) in decision.skus {
            let loaded = skus.remove(&sku).ok_or_else(|| {
                HandlerError::permanent(anyhow::anyhow!("decision touched sku {sku} that was not loaded"))
            })?;
            changes.save(SkuState::stream_id(&sku), loaded, events);
        }
        changes.save(ReservationState::stream_id(command.order_id()), reservation, decision.reservation);
        if let Some(public) = decision.publish {
            let compensation = matches!(public, PublicEvent::Released(_)).then_some("inventory_released");
            let payload = public.payload().map_err(HandlerError::permanent)?;
            changes.publish_compensating(&self.topics.inventory, public.event_type(), &payload, compensation)?;
        }
        Ok(changes)
    }
}

/// A SKU's state with its name (the stream's events do not carry it).
fn named(state: &SkuState, sku: &str) -> SkuState {
    let mut named = state.clone();
    sku.clone_into(&mut named.sku);
    named
}

fn states(skus: &Skus) -> HashMap<String, SkuState> {
    skus.iter().map(|(k, v)| (k.clone(), v.state.clone())).collect()
}

impl InventoryHandler {
    /// SKUs' stock, in one load whatever their number.
    async fn load_skus<'a>(&self, tx: &mut Tx, skus: impl Iterator<Item = &'a String>) -> Result<Skus, StoreError> {
        let mut wanted: Vec<&String> = skus.collect();
        wanted.sort();
        wanted.dedup();
        let streams: Vec<String> = wanted.iter().map(|sku| SkuState::stream_id(sku)).collect();
        let mut by_stream = self.store.load_many::<SkuState>(tx, &streams).await?;
        let mut loaded = Skus::new();
        for (sku, stream) in wanted.into_iter().zip(&streams) {
            let mut state = by_stream.remove(stream).unwrap_or_default();
            state.state.sku = sku.clone();
            loaded.insert(sku.clone(), state);
        }
        Ok(loaded)
    }

    /// An admin command on one SKU: decide it on the SKU's stream, record its events, and
    /// publish the outcome (a refusal is an outcome, not an error).
    async fn apply_to_sku(
        &self,
        ctx: &mut MessageContext<'_>,
        command_id: Uuid,
        sku: &str,
        decide: impl FnOnce(&SkuState) -> Result<Vec<SkuEvent>, domain::DomainError>,
    ) -> Result<(), HandlerError> {
        ctx.check_subject(sku)?;
        let stream = SkuState::stream_id(sku);
        ctx.execute_command::<SkuState, _>(&self.store, &self.topics.inventory, command_id, &stream, |state| {
            decide(&named(state, sku))
        })
        .await
    }

    /// Current stock per SKU (for tests and operators).
    pub async fn stock(&self, tx: &mut Tx, sku: &str) -> anyhow::Result<SkuState> {
        let mut loaded = self.store.load::<SkuState>(tx, &SkuState::stream_id(sku)).await?;
        loaded.state.sku = sku.to_owned();
        Ok(loaded.state)
    }
}

impl Seeder for InventoryHandler {
    type Seed = CatalogueSeed;

    /// Load the catalogue seed: new SKUs get their product and stock; known ones at most a
    /// new name or price (re-running it on every start is safe, and adds no stock).
    async fn seed(&self, tx: &mut Tx, seed: &CatalogueSeed) -> anyhow::Result<()> {
        let metadata = serde_json::json!({"source": "seed"});
        for product in &seed.products {
            let stream = SkuState::stream_id(&product.sku);
            self.store
                .execute::<SkuState, _>(tx, &stream, &metadata, |state| product.decide(&named(state, &product.sku)))
                .await?
                .map_err(|e| anyhow::anyhow!("seed {}: {e}", product.sku))?;
        }
        Ok(())
    }
}
