//! The KIP-848 consumer group timings of librdkafka's mock cluster.
//!
//! The mock cluster's groups on the `consumer` protocol (`group.protocol=consumer`, KIP-848)
//! use librdkafka's defaults: a 30 s session timeout and a 3 s heartbeat interval, fixed on the
//! broker side as on Kafka itself. A member killed without leaving keeps its partitions until
//! its session expires, so these decide how long a crashed replica's partitions stand still.
//! rdkafka's `MockCluster` has no setter for them; librdkafka has
//! `rd_kafka_mock_set_group_consumer_session_timeout_ms` and
//! `rd_kafka_mock_set_group_consumer_heartbeat_interval_ms`. This crate wraps those two calls
//! in a safe function, so that the rest of the workspace keeps `unsafe_code = "forbid"`.

use rdkafka::client::{Client, ClientContext};

/// The mock cluster a client owns (created with `test.mock.num.brokers`) was not found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NoMockCluster;

impl std::fmt::Display for NoMockCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the client owns no mock cluster (create it with test.mock.num.brokers)")
    }
}

impl std::error::Error for NoMockCluster {}

/// Set the session timeout and heartbeat interval of every consumer-protocol group on the mock
/// cluster owned by `client`. They apply to groups at their next heartbeat, existing ones too.
pub fn set_consumer_group_timings<C: ClientContext>(
    client: &Client<C>,
    session_timeout_ms: i32,
    heartbeat_interval_ms: i32,
) -> Result<(), NoMockCluster> {
    // SAFETY: `client` is a live handle for the duration of the borrow, so its native pointer
    // is valid; librdkafka returns the mock cluster it owns, or null.
    let cluster = unsafe { rdkafka_sys::rd_kafka_handle_mock_cluster(client.native_ptr()) };
    if cluster.is_null() {
        return Err(NoMockCluster);
    }
    // SAFETY: `cluster` is non-null and owned by `client`, which outlives these calls; each
    // setter takes the cluster's own lock and stores an integer.
    unsafe {
        rdkafka_sys::rd_kafka_mock_set_group_consumer_session_timeout_ms(cluster, session_timeout_ms);
        rdkafka_sys::rd_kafka_mock_set_group_consumer_heartbeat_interval_ms(cluster, heartbeat_interval_ms);
    }
    Ok(())
}
