//! The [`Notifications`] aggregate (stream `notifications-{order_id}`): what has been told to
//! one order's customer, and whether the order's cancellation was noted.

use serde::{Deserialize, Serialize};
use shared::contracts::NotificationKind;
use uuid::Uuid;

/// Events of the [`Notifications`] aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum NotificationEvent {
    /// A notification reached every sink.
    DeliveryRecorded { kind: NotificationKind, notification_id: Uuid, sinks: Vec<String> },
    /// The order was cancelled: no confirmation may go out after this.
    CancellationNoted,
}

impl NotificationEvent {
    pub fn event_type(&self) -> &'static str {
        match self {
            NotificationEvent::DeliveryRecorded { .. } => "DeliveryRecorded",
            NotificationEvent::CancellationNoted => "CancellationNoted",
        }
    }
}

/// What has been told to one order's customer (serializable for the event store's snapshots).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Notifications {
    confirmation_recorded: bool,
    cancellation_recorded: bool,
    cancellation_noted: bool,
}

impl Notifications {
    /// `notifications-{order_id}`.
    pub fn stream_id(order_id: Uuid) -> String {
        format!("notifications-{order_id}")
    }

    pub fn is_recorded(&self, kind: NotificationKind) -> bool {
        match kind {
            NotificationKind::Confirmation => self.confirmation_recorded,
            NotificationKind::Cancellation => self.cancellation_recorded,
        }
    }

    pub fn cancellation_noted(&self) -> bool {
        self.cancellation_noted
    }

    pub fn apply(mut self, event: &NotificationEvent) -> Self {
        match event {
            NotificationEvent::DeliveryRecorded { kind, .. } => match kind {
                NotificationKind::Confirmation => self.confirmation_recorded = true,
                NotificationKind::Cancellation => {
                    self.cancellation_recorded = true;
                    self.cancellation_noted = true;
                }
            },
            NotificationEvent::CancellationNoted => self.cancellation_noted = true,
        }
        self
    }
}
