//! The backbone's integration tests, in one binary: the consumer loop and outbox relay against
//! the mock cluster and both database backends, their crash interleavings, the HTTP server's
//! limits, start-up without a database, and the database pool metrics every service shows.

mod consumer_relay;
mod crash_interleavings;
mod db_pool_metrics;
mod http_server;
mod startup;
