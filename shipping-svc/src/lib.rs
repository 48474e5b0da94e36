//! shipping-svc: schedules a shipment for every paid order from the carrier network it owns.

pub mod domain;
