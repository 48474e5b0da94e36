//! Admin commands in order-svc's event store: each one is an audit stream
//! (`admin-command-{id}`), its message to the owning service goes through the outbox in the
//! same transaction, and the owner's outcome, consumed from the owner's event topic, is
//! appended to the stream. `admin_commands` is the stream's projection for listing.

use chrono::Utc;
use shared::consumer::{HandlerError, MessageContext};
use shared::contracts::{AdminCommandApplied, AdminCommandRejected};
use shared::db::{Db, Tx};
use shared::envelope::Envelope;
use shared::event_store::{Aggregate, EventStore, Loaded};
use shared::on_tx;
use shared::outbox::{OutboxMessage, OutboxSignal, enqueue};
use shared::topics::{Topics, service};
use sqlx::types::Json;
use uuid::Uuid;

use super::paging::Cursor;
use super::repository::{AdminRepository, CommandQuery, RepoError, internal};
use super::views::{AdminCommandPage, AdminCommandView};
use crate::domain::admin_command::{self, AdminCommand, AuditEvent, AuditState, CommandOutcome};

impl Aggregate for AuditState {
    type Event = AuditEvent;
    /// One stream per order (or command): a few events, never a snapshot.
    const SNAPSHOTS: bool = false;
    fn event_type(event: &AuditEvent) -> &'static str {
        event.event_type()
    }
    fn apply(&mut self, event: &AuditEvent) {
        AuditState::apply(self, event);
    }
}

/// The admin command repository over order-svc's database.
#[derive(Debug, Clone)]
pub struct AdminCommands {
    pub db: Db,
    pub store: EventStore,
    pub topics: Topics,
    pub outbox_signal: OutboxSignal,
}

/// Write the command's row in `admin_commands`.
async fn upsert_view(tx: &mut Tx, state: &AuditState) -> Result<(), sqlx::Error> {
    let view = AdminCommandView::from(state);
    on_tx!(tx, |conn| {
        sqlx::query(
            "INSERT INTO admin_commands (command_id, status, view, updated_at) VALUES ($1, $2, $3, $4)
             ON CONFLICT (command_id) DO UPDATE SET status = excluded.status, view = excluded.view,
                 updated_at = excluded.updated_at",
        )
        .bind(view.id)
        .bind(view.status.as_str())
        .bind(Json(&view))
        .bind(view.updated_at)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
    })?;
    Ok(())
}

impl AdminRepository for AdminCommands {
    #[tracing::instrument(skip_all, fields(command.r#type = command.command_type(), command.id = tracing::field::Empty))]
    async fn issue(&self, command: AdminCommand, issued_by: String) -> Result<AdminCommandView, RepoError> {
        let command_id = Uuid::now_v7();
        tracing::Span::current().record("command.id", command_id.to_string());
        let payload = command.payload(command_id).map_err(internal)?;
        let envelope =
            Envelope::new(command.command_type(), 1, service::ORDER, command.target(), &payload).map_err(internal)?;
        let issued = AuditEvent::AdminCommandIssued {
            command_id,
            command_type: command.command_type().to_owned(),
            service: command.service().to_owned(),
            target: command.target().to_owned(),
            request: command.request().map_err(internal)?,
            issued_by,
            issued_at: Utc::now(),
        };
        let metadata = serde_json::json!({"message_id": envelope.id, "traceparent": envelope.traceparent});
        let stream = AuditState::stream_id(command_id);
        let mut tx = self.db.begin().await.map_err(internal)?;
        tx.hand_over_to(&self.outbox_signal);
        let mut loaded = self.store.load::<AuditState>(&mut tx, &stream).await.map_err(internal)?;
        self.store.save(&mut tx, &stream, &mut loaded, &[issued], &metadata).await.map_err(internal)?;
        enqueue(&mut tx, &OutboxMessage::from_envelope(command.topic(&self.topics), &envelope))
            .await
            .map_err(internal)?;
        upsert_view(&mut tx, &loaded.state).await.map_err(internal)?;
        tx.commit().await.map_err(internal)?;
        Ok(AdminCommandView::from(&loaded.state))
    }

    async fn command(&self, id: Uuid) -> Result<Option<AdminCommandView>, RepoError> {
        let mut tx = self.db.begin_read().await.map_err(internal)?;
        let loaded = self.store.load::<AuditState>(&mut tx, &AuditState::stream_id(id)).await.map_err(internal)?;
        tx.rollback().await.ok();
        Ok(loaded.state.exists().then(|| AdminCommandView::from(&loaded.state)))
    }

    async fn commands(&self, q: CommandQuery) -> Result<AdminCommandPage, RepoError> {
        let limit = i64::from(q.limit.get());
        let mut sql = String::from("SELECT view FROM admin_commands WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if q.status.is_some() {
            sql.push_str(&format!(" AND status = {}", next()));
        }
        if q.cursor.is_some() {
            sql.push_str(&format!(" AND command_id < {}", next()));
        }
        sql.push_str(&format!(" ORDER BY command_id DESC LIMIT {}", next()));
        let rows: Vec<Json<AdminCommandView>> = shared::on_db!(&self.db, |pool| {
            let mut query = sqlx::query_scalar(&sql);
            if let Some(status) = q.status {
                query = query.bind(status.as_str());
            }
            if let Some(cursor) = q.cursor {
                query = query.bind(cursor.last_id());
            }
            query.bind(limit + 1).fetch_all(pool).await
        })
        .map_err(internal)?;
        let mut items: Vec<AdminCommandView> = rows.into_iter().map(|Json(v)| v).collect();
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(|v| Cursor::after(v.id))
        } else {
            None
        };
        Ok(AdminCommandPage { items, next_cursor })
    }
}

/// Record an owning service's outcome (`AdminCommandApplied` or `AdminCommandRejected`, from
/// the consumer) in the command's audit stream. The payload must name the service that
/// published it, and the command must have been sent to that service; else it is refused
/// (dead-lettered).
pub async fn record_outcome(store: &EventStore, ctx: &mut MessageContext<'_>) -> Result<(), HandlerError> {
    let message = ctx.message;
    let outcome = match message.event_type.as_str() {
        shared::contracts::event_type::ADMIN_COMMAND_APPLIED => {
            CommandOutcome::Applied(message.decode::<AdminCommandApplied>()?)
        }
        _ => CommandOutcome::Rejected(message.decode::<AdminCommandRejected>()?),
    };
    let (command_id, named) = match &outcome {
        CommandOutcome::Applied(a) => (a.command_id, a.service.as_str()),
        CommandOutcome::Rejected(r) => (r.command_id, r.service.as_str()),
    };
    if named != message.source {
        return Err(HandlerError::permanent(anyhow::anyhow!(
            "{} names service {named:?} but was published by {}",
            message.event_type,
            message.source
        )));
    }
    let stream = AuditState::stream_id(command_id);
    let mut loaded: Loaded<AuditState> = store.load(ctx.tx, &stream).await?;
    let events = admin_command::record_outcome(&loaded.state, outcome, Utc::now()).map_err(HandlerError::permanent)?;
    if events.is_empty() {
        return Ok(());
    }
    let metadata = ctx.event_metadata();
    store.save(ctx.tx, &stream, &mut loaded, &events, &metadata).await?;
    upsert_view(ctx.tx, &loaded.state).await?;
    tracing::info!(
        command.id = %command_id,
        status = loaded.state.status.map_or("pending", |s| s.as_str()),
        "admin command decided"
    );
    Ok(())
}
