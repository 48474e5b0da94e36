//! The backbone's integration tests, in one binary: the consumer loop and outbox relay against
//! the mock cluster and both database backends, their crash interleavings, the HTTP server's
//! limits, and start-up without a database.

mod consumer_relay;
mod crash_interleavings;
mod http_server;
mod startup;
