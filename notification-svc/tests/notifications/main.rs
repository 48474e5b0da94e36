//! notification-svc's integration tests, in one binary: the service as a black box, and its
//! sinks against a scripted HTTP server.

mod delivery;
mod webhook_sink;
