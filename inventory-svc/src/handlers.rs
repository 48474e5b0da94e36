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

use shared::consumer::{Handler, HandlerError, MessageContext};
use shared::contracts::{
    AdjustStock, CompensationTrigger, OrderCancelled, OrderPlaced, PaymentDeclined, ShipmentFailed, ShipmentScheduled,
    UpsertProduct, command_type, event_type,
};
use shared::db::Tx;
use shared::envelope::Envelope;
use shared::event_store::{Aggregate, EventStore, Loaded, StreamRef};
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
        let decided = match ctx.message.event_type.as_str() {
            event_type::ORDER_PLACED => {
                let placed: OrderPlaced = ctx.message.decode()?;
                let (reservation, skus) =
                    self.load(ctx.tx, placed.order_id, placed.items.iter().map(|l| &l.sku)).await?;
                let decision = domain::reserve(
                    placed.order_id,
                    &placed.customer_id,
                    &placed.items,
                    &placed.ship_to,
                    &reservation.state,
                    &states(&skus),
                )
                .map_err(HandlerError::permanent)?;
                (placed.order_id, reservation, skus, decision)
            }
            event_type::PAYMENT_DECLINED => {
                let e: PaymentDeclined = ctx.message.decode()?;
                self.release(ctx.tx, e.order_id, CompensationTrigger::PaymentDeclined).await?
            }
            event_type::SHIPMENT_FAILED => {
                let e: ShipmentFailed = ctx.message.decode()?;
                self.release(ctx.tx, e.order_id, CompensationTrigger::ShipmentFailed).await?
            }
            event_type::ORDER_CANCELLED => {
                let e: OrderCancelled = ctx.message.decode()?;
                self.release(ctx.tx, e.order_id, CompensationTrigger::OrderCancelled).await?
            }
            event_type::SHIPMENT_SCHEDULED => {
                let e: ShipmentScheduled = ctx.message.decode()?;
                let (reservation, skus) = self.load_held(ctx.tx, e.order_id).await?;
                let decision = domain::mark_shipped(e.order_id, &reservation.state, &states(&skus))
                    .map_err(HandlerError::permanent)?;
                (e.order_id, reservation, skus, decision)
            }
            command_type::UPSERT_PRODUCT => {
                let c: UpsertProduct = ctx.message.decode()?;
                return self
                    .apply_to_sku(ctx, c.command_id, &c.sku, |state| {
                        domain::upsert_product(state, c.name.clone(), c.price_minor)
                    })
                    .await;
            }
            command_type::ADJUST_STOCK => {
                let c: AdjustStock = ctx.message.decode()?;
                return self
                    .apply_to_sku(ctx, c.command_id, &c.sku, |state| domain::adjust_stock(state, c.delta))
                    .await;
            }
            // Other events on our topics are not ours to act on.
            _ => return Ok(()),
        };
        let (order_id, mut reservation, mut skus, decision) = decided;
        self.commit(ctx, order_id, &mut reservation, &mut skus, decision).await
    }
}

type Skus = HashMap<String, Loaded<SkuState>>;
type Decided = (Uuid, Loaded<ReservationState>, Skus, InventoryDecision);

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
    async fn load<'a>(
        &self,
        tx: &mut Tx,
        order_id: Uuid,
        skus: impl Iterator<Item = &'a String>,
    ) -> Result<(Loaded<ReservationState>, Skus), HandlerError> {
        let reservation = self.store.load::<ReservationState>(tx, &ReservationState::stream_id(order_id)).await?;
        let skus = self.load_skus(tx, skus).await?;
        Ok((reservation, skus))
    }

    /// The order's reservation, then the SKUs it holds stock of.
    async fn load_held(&self, tx: &mut Tx, order_id: Uuid) -> Result<(Loaded<ReservationState>, Skus), HandlerError> {
        let reservation = self.store.load::<ReservationState>(tx, &ReservationState::stream_id(order_id)).await?;
        let involved = reservation.state.skus_involved();
        let skus = self.load_skus(tx, involved.iter()).await?;
        Ok((reservation, skus))
    }

    /// SKUs' stock, in one load whatever their number.
    async fn load_skus<'a>(&self, tx: &mut Tx, skus: impl Iterator<Item = &'a String>) -> Result<Skus, HandlerError> {
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

    async fn release(
        &self,
        tx: &mut Tx,
        order_id: Uuid,
        trigger: CompensationTrigger,
    ) -> Result<Decided, HandlerError> {
        let (reservation, skus) = self.load_held(tx, order_id).await?;
        let decision =
            domain::release(order_id, trigger, &reservation.state, &states(&skus)).map_err(HandlerError::permanent)?;
        Ok((order_id, reservation, skus, decision))
    }

    async fn commit(
        &self,
        ctx: &mut MessageContext<'_>,
        order_id: Uuid,
        reservation: &mut Loaded<ReservationState>,
        skus: &mut Skus,
        decision: InventoryDecision,
    ) -> Result<(), HandlerError> {
        let metadata = ctx.event_metadata();
        // SKUs in sorted order (the decision's map is a BTreeMap): one lock order everywhere.
        for (sku, events) in &decision.skus {
            let loaded = skus.get_mut(sku).ok_or_else(|| {
                HandlerError::permanent(anyhow::anyhow!("decision touched sku {sku} that was not loaded"))
            })?;
            self.store.save(ctx.tx, &SkuState::stream_id(sku), loaded, events, &metadata).await?;
        }
        self.store
            .save(ctx.tx, &ReservationState::stream_id(order_id), reservation, &decision.reservation, &metadata)
            .await?;
        if let Some(public) = decision.publish {
            if matches!(public, PublicEvent::Released(_)) {
                shared::metrics::compensation(shared::topics::service::INVENTORY, "inventory_released");
            }
            let payload = public.payload().map_err(HandlerError::permanent)?;
            ctx.publish(&self.topics.inventory, public.event_type(), &payload).await?;
        }
        Ok(())
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
