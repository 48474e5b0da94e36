//! order-svc's black-box tests, in one binary: the HTTP API against in-memory repositories,
//! its logs, its security and metric bounds, and the production binary's start-up checks.

mod common;

mod api_logs;
mod api_security;
mod http_api;
mod metrics_bounded;
mod startup_config;
