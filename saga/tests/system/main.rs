//! The whole system's integration tests, in one binary (one link, one `common`).
//!
//! Tests run in parallel, except that the fault suite's cases and the multi-process topology
//! each run alone ([`common::alone`]): they size their deadlines for a machine they do not
//! share with other systems under test. Tests that install process-wide telemetry (one global
//! subscriber and tracer provider) each run in a child process of their own
//! ([`own_process_test!`]).

#[macro_use]
mod common;

mod admission;
mod api_admin;
mod broker_offsets;
mod fault_suite;
mod hostile_kafka;
mod logs;
mod metrics_endpoints;
mod multiprocess;
mod saga_invariants;
mod saga_outcomes;
mod secrets;
mod trace_context;
mod traces;
