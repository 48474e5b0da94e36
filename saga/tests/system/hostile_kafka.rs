//! Kafka-side input that is hostile to each consumer, on both backends: every input topic of
//! every service gets records with an oversized payload, fields of the wrong types, missing
//! or malformed headers, a newer schema version, a forged `ce_source`, an unknown type and a
//! foreign content type. Each must be dead-lettered (with the error recorded), change no state
//! (no event stored, nothing published), and leave the consumer running: a valid message
//! sent afterwards takes effect.

use std::sync::Arc;

use chrono::Utc;
use order_svc::storage::OrderRepository as _;
use shared::CancellationToken;
use shared::both_backends;
use shared::consumer::{ConsumerOptions, dlq_header};
use shared::contracts::{
    self, CURRENCY, CancelReason, InventoryReserved, NotificationKind, NotificationSent, OrderCancelled, OrderLine,
    OrderPlaced, PaymentCaptured, PaymentDeclined, PricedLine, ShipTo, ShipmentFailed, command_type, event_type,
};
use shared::db::{Backend, Db};
use shared::envelope::Envelope;
use shared::testing::hostile::{self, HostileRecord};
use shared::testing::{Bus, TestDb, WAIT, eventually, service_config};
use shared::topics::service;
use uuid::Uuid;

/// One input topic, a valid message its consumer acts on, and a service that may not publish
/// there.
struct Input {
    topic: String,
    valid: Envelope,
    forged_source: &'static str,
}

fn event(event_type: &str, source: &str, order_id: Uuid, payload: impl serde::Serialize) -> Envelope {
    Envelope::new(event_type, 1, source, order_id.to_string(), &payload).expect("envelope")
}

fn command(command_type: &str, target: &str, payload: impl serde::Serialize) -> Envelope {
    Envelope::new(command_type, 1, service::ORDER, target, &payload).expect("envelope")
}

fn ship_to() -> ShipTo {
    ShipTo { country: "NL".to_owned(), ..ShipTo::default() }
}

async fn stored_events(db: &Db) -> anyhow::Result<i64> {
    Ok(shared::on_db!(db, |pool| sqlx::query_scalar("SELECT COUNT(*) FROM events").fetch_one(pool).await)?)
}

/// Send every hostile variant of every input; check each was dead-lettered with its error,
/// that no event was stored and nothing but dead letters was published.
async fn send_hostile_input(
    bus: &Bus,
    db: &Db,
    consumer: &'static str,
    inputs: &[Input],
    outputs: &[&str],
) -> anyhow::Result<()> {
    let dead_letters = bus.reader(&bus.broker.topics.dead_letter(consumer))?;
    let mut published = Vec::new();
    for topic in outputs {
        let reader = bus.reader(topic)?;
        reader.caught_up().await?;
        let count = reader.raw_records()?.len();
        published.push((reader, count));
    }
    let before = stored_events(db).await?;
    let max = ConsumerOptions::default().max_payload_bytes;
    let mut sent: Vec<HostileRecord> = Vec::new();
    for input in inputs {
        for record in hostile::variants(&input.valid, input.forged_source, max) {
            bus.publish_raw(&input.topic, &record.key, &record.headers, record.payload.as_deref()).await?;
            sent.push(record);
        }
    }

    let topics: Vec<&str> = inputs.iter().map(|i| i.topic.as_str()).collect();
    bus.settled(db, &topics).await?;
    let letters = eventually(WAIT, "a dead letter for every hostile record", || async {
        let letters = dead_letters.raw_records().ok()?;
        (letters.len() >= sent.len()).then_some(letters)
    })
    .await?;

    assert_eq!(letters.len(), sent.len(), "{consumer}: one dead letter per hostile record, no more");
    for letter in &letters {
        assert!(letter.header(dlq_header::ERROR).is_some_and(|e| !e.is_empty()), "{consumer}: {letter:?}");
        assert!(letter.header(dlq_header::ORIGINAL_TOPIC).is_some_and(|t| topics.contains(&t)));
        assert_eq!(letter.header(dlq_header::CONSUMER_GROUP), Some(bus.broker.topics.group(consumer).as_str()));
    }
    let oversized: Vec<_> = letters.iter().filter(|l| l.header(dlq_header::PAYLOAD_OMITTED_BYTES).is_some()).collect();
    assert_eq!(oversized.len(), inputs.len(), "{consumer}: each oversized payload is left out of its dead letter");
    assert!(oversized.iter().all(|l| l.payload.as_deref().unwrap_or_default().is_empty()));
    let errors: Vec<&str> = letters.iter().filter_map(|l| l.header(dlq_header::ERROR)).collect();
    for expected in
        ["over the limit", "missing header ce_id", "schema version", "may not publish", "unknown event type"]
    {
        assert!(
            errors.iter().any(|e| e.contains(expected)),
            "{consumer}: no dead letter says {expected:?}: {errors:#?}"
        );
    }
    assert_eq!(stored_events(db).await?, before, "{consumer}: hostile input stored no event");
    for (reader, count) in &published {
        reader.caught_up().await?;
        assert_eq!(reader.raw_records()?.len(), *count, "{consumer}: hostile input published nothing");
    }
    Ok(())
}

// ---- inventory-svc ----

both_backends!(inventory_dead_letters_hostile_input_changes_nothing_and_keeps_consuming);
async fn inventory_dead_letters_hostile_input_changes_nothing_and_keeps_consuming(
    backend: Backend,
) -> anyhow::Result<()> {
    let db = TestDb::new(backend, &[]).await?;
    let bus = Bus::new(service::INVENTORY)?;
    let stop = CancellationToken::new();
    let app =
        inventory_svc::App::build(inventory_svc::Config::new(service_config(service::INVENTORY, &db, &bus))?, &stop)
            .await?;
    let handler = app.handler.clone();
    let run = tokio::spawn(app.run_until_stopped(stop.clone()));
    let t = bus.broker.topics.clone();
    let order = Uuid::now_v7();
    let inputs = [
        Input {
            topic: t.orders.clone(),
            valid: event(
                event_type::ORDER_PLACED,
                service::ORDER,
                order,
                OrderPlaced {
                    order_id: order,
                    customer_id: "cust-rich".into(),
                    items: vec![OrderLine { sku: "sku-tee".into(), quantity: 1 }],
                    ship_to: ship_to(),
                    placed_at: Utc::now(),
                    deadline_at: Utc::now(),
                },
            ),
            forged_source: service::PAYMENT,
        },
        Input {
            topic: t.payments.clone(),
            valid: event(
                event_type::PAYMENT_DECLINED,
                service::PAYMENT,
                order,
                PaymentDeclined {
                    order_id: order,
                    customer_id: "cust-rich".into(),
                    reason: CancelReason::PaymentDeclined,
                    amount_minor: 1,
                },
            ),
            forged_source: service::ORDER,
        },
        Input {
            topic: t.inventory_commands.clone(),
            valid: command(
                command_type::ADJUST_STOCK,
                "sku-tee",
                contracts::AdjustStock { command_id: Uuid::now_v7(), sku: "sku-tee".into(), delta: 5 },
            ),
            forged_source: service::SHIPPING,
        },
    ];
    send_hostile_input(&bus, &db.db, service::INVENTORY, &inputs, &[&t.inventory]).await?;

    // The consumer kept going: a valid command sent now is applied.
    let stock = |handler: Arc<inventory_svc::InventoryHandler>| {
        let db = db.db.clone();
        async move {
            let mut tx = db.begin_read().await?;
            let state = handler.stock(&mut tx, "sku-tee").await?;
            tx.rollback().await?;
            anyhow::Ok(state.available)
        }
    };
    let before = stock(handler.clone()).await?;
    bus.publish(&t.inventory_commands, &inputs[2].valid).await?;
    bus.settled(&db.db, &[&t.inventory_commands]).await?;
    assert_eq!(stock(handler.clone()).await?, before + 5);
    stop.cancel();
    run.await?
}

// ---- payment-svc ----

both_backends!(payment_dead_letters_hostile_input_changes_nothing_and_keeps_consuming);
async fn payment_dead_letters_hostile_input_changes_nothing_and_keeps_consuming(
    backend: Backend,
) -> anyhow::Result<()> {
    let db = TestDb::new(backend, &[]).await?;
    let bus = Bus::new(service::PAYMENT)?;
    let stop = CancellationToken::new();
    let app =
        payment_svc::App::build(payment_svc::Config::new(service_config(service::PAYMENT, &db, &bus))?, &stop).await?;
    let handler = app.handler.clone();
    let run = tokio::spawn(app.run_until_stopped(stop.clone()));
    let t = bus.broker.topics.clone();
    let order = Uuid::now_v7();
    let inputs = [
        Input {
            topic: t.inventory.clone(),
            valid: event(
                event_type::INVENTORY_RESERVED,
                service::INVENTORY,
                order,
                InventoryReserved {
                    order_id: order,
                    customer_id: "cust-rich".into(),
                    lines: vec![PricedLine {
                        sku: "sku-tee".into(),
                        quantity: 1,
                        unit_price_minor: 1500,
                        line_total_minor: 1500,
                    }],
                    total_minor: 1500,
                    currency: CURRENCY.into(),
                    ship_to: ship_to(),
                },
            ),
            forged_source: service::SHIPPING,
        },
        Input {
            topic: t.shipping.clone(),
            valid: event(
                event_type::SHIPMENT_FAILED,
                service::SHIPPING,
                order,
                ShipmentFailed {
                    order_id: order,
                    customer_id: "cust-rich".into(),
                    reason: CancelReason::DestinationNotServed,
                },
            ),
            forged_source: service::INVENTORY,
        },
        Input {
            topic: t.payment_commands.clone(),
            valid: command(
                command_type::CREDIT_ACCOUNT,
                "cust-poor",
                contracts::CreditAccount {
                    command_id: Uuid::now_v7(),
                    customer_id: "cust-poor".into(),
                    amount_minor: 250,
                },
            ),
            forged_source: service::PAYMENT,
        },
    ];
    send_hostile_input(&bus, &db.db, service::PAYMENT, &inputs, &[&t.payments]).await?;

    let balance = || async {
        let mut tx = db.db.begin_read().await?;
        let account = handler.account(&mut tx, "cust-poor").await?;
        tx.rollback().await?;
        anyhow::Ok(account.map(|a| a.balance_minor))
    };
    assert_eq!(balance().await?, Some(1000), "the demo balance, untouched");
    bus.publish(&t.payment_commands, &inputs[2].valid).await?;
    bus.settled(&db.db, &[&t.payment_commands]).await?;
    assert_eq!(balance().await?, Some(1250), "a valid command after the hostile ones is applied");
    stop.cancel();
    run.await?
}

// ---- shipping-svc ----

both_backends!(shipping_dead_letters_hostile_input_changes_nothing_and_keeps_consuming);
async fn shipping_dead_letters_hostile_input_changes_nothing_and_keeps_consuming(
    backend: Backend,
) -> anyhow::Result<()> {
    let db = TestDb::new(backend, &[]).await?;
    let bus = Bus::new(service::SHIPPING)?;
    let stop = CancellationToken::new();
    let app = shipping_svc::App::build(shipping_svc::Config::new(service_config(service::SHIPPING, &db, &bus))?, &stop)
        .await?;
    let handler = app.handler.clone();
    let run = tokio::spawn(app.run_until_stopped(stop.clone()));
    let t = bus.broker.topics.clone();
    let order = Uuid::now_v7();
    let inputs = [
        Input {
            topic: t.payments.clone(),
            valid: event(
                event_type::PAYMENT_CAPTURED,
                service::PAYMENT,
                order,
                PaymentCaptured {
                    order_id: order,
                    customer_id: "cust-rich".into(),
                    payment_id: Uuid::now_v7(),
                    amount_minor: 1500,
                    currency: CURRENCY.into(),
                    ship_to: ship_to(),
                },
            ),
            forged_source: service::ORDER,
        },
        Input {
            topic: t.orders.clone(),
            valid: event(
                event_type::ORDER_CANCELLED,
                service::ORDER,
                order,
                OrderCancelled {
                    order_id: order,
                    customer_id: "cust-rich".into(),
                    reason: CancelReason::DeadlineExceeded,
                    compensations: Vec::new(),
                },
            ),
            forged_source: service::NOTIFICATION,
        },
        Input {
            topic: t.shipping_commands.clone(),
            valid: command(
                command_type::SET_DESTINATIONS,
                "ups",
                contracts::SetDestinations {
                    command_id: Uuid::now_v7(),
                    carrier: "ups".into(),
                    countries: vec!["FR".into(), "JP".into(), "US".into()],
                },
            ),
            forged_source: service::INVENTORY,
        },
    ];
    send_hostile_input(&bus, &db.db, service::SHIPPING, &inputs, &[&t.shipping]).await?;

    let serves_japan = || async {
        let mut tx = db.db.begin_read().await?;
        let network = handler.network(&mut tx).await?;
        tx.rollback().await?;
        let japan = shipping_svc::domain::CountryCode::try_from("JP")?;
        anyhow::Ok(network.serving(&japan).next().is_some())
    };
    assert!(!serves_japan().await?);
    bus.publish(&t.shipping_commands, &inputs[2].valid).await?;
    bus.settled(&db.db, &[&t.shipping_commands]).await?;
    assert!(serves_japan().await?, "a valid command after the hostile ones is applied");
    stop.cancel();
    run.await?
}

// ---- notification-svc ----

both_backends!(notification_dead_letters_hostile_input_changes_nothing_and_keeps_consuming);
async fn notification_dead_letters_hostile_input_changes_nothing_and_keeps_consuming(
    backend: Backend,
) -> anyhow::Result<()> {
    let db = TestDb::new(backend, &[]).await?;
    let bus = Bus::new(service::NOTIFICATION)?;
    let stop = CancellationToken::new();
    let app = notification_svc::App::build(
        notification_svc::Config::new(service_config(service::NOTIFICATION, &db, &bus))?,
        &stop,
    )
    .await?;
    let run = tokio::spawn(app.run_until_stopped(stop.clone()));
    let t = bus.broker.topics.clone();
    let order = Uuid::now_v7();
    let cancelled = OrderCancelled {
        order_id: order,
        customer_id: "cust-rich".into(),
        reason: CancelReason::OutOfStock,
        compensations: Vec::new(),
    };
    let inputs = [Input {
        topic: t.orders.clone(),
        valid: event(event_type::ORDER_CANCELLED, service::ORDER, order, cancelled),
        forged_source: service::SHIPPING,
    }];
    send_hostile_input(&bus, &db.db, service::NOTIFICATION, &inputs, &[&t.notifications]).await?;

    let notices = bus.reader(&t.notifications)?;
    bus.publish(&t.orders, &inputs[0].valid).await?;
    bus.settled(&db.db, &[&t.orders]).await?;
    let sent = notices.wait_for(order, 1).await?;
    let notice: NotificationSent = sent[0].decode()?;
    assert_eq!(notice.kind, NotificationKind::Cancellation, "a valid message after the hostile ones is handled");
    stop.cancel();
    run.await?
}

// ---- order-svc ----

both_backends!(order_dead_letters_hostile_input_changes_nothing_and_keeps_consuming);
async fn order_dead_letters_hostile_input_changes_nothing_and_keeps_consuming(backend: Backend) -> anyhow::Result<()> {
    let db = TestDb::new(backend, &[order_svc::migrations()]).await?;
    let bus = Bus::new(service::ORDER)?;
    let stop = CancellationToken::new();
    let app = order_svc::App::build(order_svc::Config::new(service_config(service::ORDER, &db, &bus))?, &stop).await?;
    let orders = app.orders.clone();
    let run = tokio::spawn(app.run_until_stopped(stop.clone()));
    let t = bus.broker.topics.clone();
    // A placed order, for the valid messages to be about.
    let request: order_svc::http::PlaceOrderRequest = serde_json::from_value(serde_json::json!({
        "customer_id": "cust-rich", "items": [{"sku": "sku-tee", "quantity": 1}], "ship_to": {"country": "NL"}
    }))?;
    let command = order_svc::domain::PlaceOrder::try_from(request).map_err(|v| anyhow::anyhow!("{v:?}"))?;
    let placed = orders.place(command, None).await?;
    let order = placed.view.id;
    bus.settled(&db.db, &[]).await?;
    let reserved = InventoryReserved {
        order_id: order,
        customer_id: "cust-rich".into(),
        lines: vec![PricedLine { sku: "sku-tee".into(), quantity: 1, unit_price_minor: 1500, line_total_minor: 1500 }],
        total_minor: 1500,
        currency: CURRENCY.into(),
        ship_to: ship_to(),
    };
    let inputs = [
        Input {
            topic: t.inventory.clone(),
            valid: event(event_type::INVENTORY_RESERVED, service::INVENTORY, order, reserved),
            forged_source: service::PAYMENT,
        },
        Input {
            topic: t.notifications.clone(),
            valid: event(
                event_type::NOTIFICATION_SENT,
                service::NOTIFICATION,
                order,
                NotificationSent {
                    order_id: order,
                    customer_id: "cust-rich".into(),
                    kind: NotificationKind::Confirmation,
                    notification_id: Uuid::now_v7(),
                    sinks: vec!["log".into()],
                },
            ),
            forged_source: service::INVENTORY,
        },
        // An outcome of an admin command order-svc never issued.
        Input {
            topic: t.payments.clone(),
            valid: event(
                event_type::ADMIN_COMMAND_APPLIED,
                service::PAYMENT,
                order,
                contracts::AdminCommandApplied {
                    command_id: Uuid::now_v7(),
                    command_type: command_type::CREDIT_ACCOUNT.into(),
                    service: service::PAYMENT.into(),
                    events: vec![],
                },
            ),
            forged_source: service::SHIPPING,
        },
    ];
    send_hostile_input(&bus, &db.db, service::ORDER, &inputs, &[&t.orders]).await?;

    assert_eq!(orders.get(order).await?.map(|v| v.status.as_str()), Some("pending"), "hostile input changed nothing");
    bus.publish(&t.inventory, &inputs[0].valid).await?;
    bus.settled(&db.db, &[&t.inventory]).await?;
    assert_eq!(orders.get(order).await?.map(|v| v.status.as_str()), Some("reserved"), "a valid fact is applied");
    stop.cancel();
    run.await?
}
