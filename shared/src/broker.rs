//! Kafka clients and the embedded broker.
//!
//! [`KafkaConfig`] builds every producer, consumer and admin client, so librdkafka settings
//! (including pass-through properties for SASL/TLS) are decided in one place.
//!
//! [`EmbeddedBroker`] runs librdkafka's mock cluster: a real Kafka-protocol broker on loopback
//! that real rdkafka clients talk to. The mock cluster is not `Send`, so it lives on its own
//! thread and is driven through a channel. It has no CreateTopics handler, so topics are
//! created through the mock API. It keeps about 5 MiB per partition and drops older data, so
//! the embedded mode retains only recent history per partition (the services' databases keep
//! everything; consumers surface any skipped offsets as an error and a metric).
//!
//! ## Consumer groups: the KIP-848 protocol
//!
//! Consumers join their groups with `group.protocol=consumer` (KIP-848): the broker assigns
//! partitions and moves them one member at a time, with no stop-the-world rebalance, so a
//! member joining or leaving never stalls the others and offset commits are never refused for a
//! rebalance in progress. Failure detection is the broker's: a member that stops heartbeating
//! (killed, or wedged) keeps its partitions until its session expires, then they move to the
//! live members; a member that leaves gracefully hands them over at once. The mock cluster runs
//! with [`MOCK_GROUP_SESSION_TIMEOUT_MS`] and [`MOCK_GROUP_HEARTBEAT_INTERVAL_MS`]; a Kafka
//! cluster takes `group.consumer.session.timeout.ms` and `group.consumer.heartbeat.interval.ms`
//! from its own configuration (45 s and 5 s by default: see the README). Brokers without
//! KIP-848 get the classic protocol with `KAFKA_PROP_GROUP_PROTOCOL=classic` (see
//! [`KafkaConfig::consumer_config`]).

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::RDKafkaLogLevel;
use rdkafka::producer::{BaseProducer, FutureProducer, Producer as _};
use rdkafka::types::RDKafkaErrorCode;

/// How to reach the broker.
#[derive(Clone)]
pub struct KafkaConfig {
    /// `bootstrap.servers`.
    pub brokers: String,
    /// Extra librdkafka properties applied to every client (e.g. `security.protocol`).
    pub properties: Vec<(String, String)>,
    /// Partitions per topic when this service creates its topics.
    pub partitions: i32,
    pub replication_factor: i32,
    /// Create the topics this service owns at start-up.
    pub create_topics: bool,
}

/// Property values may be credentials (`sasl.password`, `ssl.key.password`): only their
/// names are shown.
impl std::fmt::Debug for KafkaConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KafkaConfig")
            .field("brokers", &self.brokers)
            .field("properties", &self.properties.iter().map(|(k, _)| k).collect::<Vec<_>>())
            .field("partitions", &self.partitions)
            .field("replication_factor", &self.replication_factor)
            .field("create_topics", &self.create_topics)
            .finish()
    }
}

impl KafkaConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        Self {
            brokers: brokers.into(),
            properties: Vec::new(),
            partitions: 8,
            replication_factor: 1,
            create_topics: true,
        }
    }

    fn base(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config.set("bootstrap.servers", &self.brokers);
        config.set_log_level(self.log_level());
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }

    /// Warnings and worse, unless the operator asked for librdkafka's debug contexts
    /// (`KAFKA_PROP_DEBUG=cgrp,eos`): those log at debug level, which Warning would drop. They
    /// reach the log under the `librdkafka` target (`RUST_LOG=info,librdkafka=debug`).
    fn log_level(&self) -> RDKafkaLogLevel {
        if self.properties.iter().any(|(k, _)| k == "debug") {
            RDKafkaLogLevel::Debug
        } else {
            RDKafkaLogLevel::Warning
        }
    }

    /// An idempotent producer: in order per partition, no duplicates from its own retries.
    pub fn producer(&self) -> anyhow::Result<FutureProducer> {
        let mut config = self.base();
        config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            .set("linger.ms", "2")
            .set("message.timeout.ms", "30000");
        // Operator-supplied properties win over our defaults.
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config.create().context("failed to create kafka producer")
    }

    /// The consumer group protocol: `consumer` (KIP-848, the default) unless the operator set
    /// `group.protocol` (`KAFKA_PROP_GROUP_PROTOCOL=classic` for a broker without KIP-848).
    pub fn group_protocol(&self) -> &str {
        self.properties.iter().rev().find(|(k, _)| k == "group.protocol").map_or("consumer", |(_, v)| v.as_str())
    }

    /// A consumer in `group` that never commits on its own: the consumer loop stores and
    /// commits each offset after the message's transaction committed.
    ///
    /// On the KIP-848 protocol the session timeout, heartbeat interval and assignor are the
    /// broker's (librdkafka refuses them client-side). On the classic protocol the client sets
    /// them: a 10 s session, 1 s heartbeats and the cooperative-sticky assignor, so a member
    /// keeps its partitions through a rebalance.
    pub fn consumer_config(&self, group: &str) -> ClientConfig {
        let mut config = self.base();
        config
            .set("group.id", group)
            .set("group.protocol", "consumer")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("enable.partition.eof", "false")
            // Each saga hop is one fetch: a short wait keeps hops fast on brokers that answer
            // a fetch only when its wait expires (the mock cluster); real Kafka answers as soon
            // as data arrives either way.
            .set("fetch.wait.max.ms", "20")
            .set("statistics.interval.ms", "5000");
        if self.group_protocol() == "classic" {
            config
                .set("session.timeout.ms", "10000")
                .set("heartbeat.interval.ms", "1000")
                .set("partition.assignment.strategy", "cooperative-sticky");
        }
        // Operator-supplied properties win over our defaults.
        for (k, v) in &self.properties {
            config.set(k, v);
        }
        config
    }

    /// Create `topics` on a real cluster (already existing topics are fine).
    pub async fn create_topics(&self, topics: &[String]) -> anyhow::Result<()> {
        let admin: AdminClient<DefaultClientContext> = self.base().create().context("failed to create admin client")?;
        let new_topics: Vec<NewTopic<'_>> = topics
            .iter()
            .map(|t| NewTopic::new(t, self.partitions, TopicReplication::Fixed(self.replication_factor)))
            .collect();
        let results = admin
            .create_topics(&new_topics, &AdminOptions::new().operation_timeout(Some(Duration::from_secs(10))))
            .await
            .context("create topics request failed")?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((topic, code)) => {
                    return Err(anyhow!("failed to create topic {topic}: {code}"));
                }
            }
        }
        Ok(())
    }
}

/// The file in the embedded system's data directory that holds its broker's bootstrap address
/// while it runs; `sagactl` reads it when it is given no broker.
pub const ADDRESS_FILE: &str = "broker.addr";

/// A published broker address: the file holds the address (and nothing else, so
/// `export KAFKA_BROKERS=$(cat data/broker.addr)` works) until this is dropped, which removes it.
#[derive(Debug)]
pub struct AddressFile {
    path: PathBuf,
    address: String,
}

impl AddressFile {
    /// Write `address` to `path` atomically: written beside it, then renamed, so a reader never
    /// sees a partial address.
    pub fn publish(path: &Path, address: &str) -> anyhow::Result<Self> {
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        std::fs::write(&tmp, address).with_context(|| format!("failed to write {}", tmp.display()))?;
        std::fs::rename(&tmp, path).with_context(|| format!("failed to publish {}", path.display()))?;
        Ok(Self { path: path.to_owned(), address: address.to_owned() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for AddressFile {
    /// Remove the file, unless another broker has published its own address there since.
    fn drop(&mut self) {
        if std::fs::read_to_string(&self.path).is_ok_and(|current| current == self.address) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

enum Command {
    CreateTopic { name: String, partitions: i32, reply: mpsc::Sender<anyhow::Result<()>> },
    BrokerDown { reply: mpsc::Sender<anyhow::Result<()>> },
    BrokerUp { reply: mpsc::Sender<anyhow::Result<()>> },
    Stop,
}

/// The mock cluster's session timeout for consumer-protocol groups: a member killed without
/// leaving keeps its partitions this long. Short, because the mock serves one machine (tests,
/// the embedded mode) where a missed heartbeat means a dead process, not a slow network.
pub const MOCK_GROUP_SESSION_TIMEOUT_MS: i32 = 3000;
/// How often members heartbeat to the mock cluster: also how soon a member learns of a new
/// assignment (a partition handed over by a member that left, or one that expired).
pub const MOCK_GROUP_HEARTBEAT_INTERVAL_MS: i32 = 500;

/// A mock Kafka cluster (one broker) on loopback, owned by a dedicated thread.
#[derive(Debug)]
pub struct EmbeddedBroker {
    bootstrap: String,
    commands: mpsc::Sender<Command>,
    thread: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Command {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Command")
    }
}

impl EmbeddedBroker {
    /// Start the broker and create `topics` with `partitions` each.
    pub fn start(topics: &[String], partitions: i32) -> anyhow::Result<Self> {
        let (ready_tx, ready_rx) = mpsc::channel::<anyhow::Result<String>>();
        let (commands, command_rx) = mpsc::channel::<Command>();
        let thread = thread::Builder::new()
            .name("embedded-broker".into())
            .spawn(move || {
                // The mock cluster lives as long as the client that owns it (rdkafka's own
                // `MockCluster::new` does the same), and through the client its consumer group
                // timings can be set.
                let owner = match ClientConfig::new().set("test.mock.num.brokers", "1").create::<BaseProducer>() {
                    Ok(owner) => owner,
                    Err(e) => {
                        let _ = ready_tx.send(Err(anyhow!("failed to start mock cluster: {e}")));
                        return;
                    }
                };
                let Some(cluster) = owner.client().mock_cluster() else {
                    let _ = ready_tx.send(Err(anyhow!("failed to start mock cluster: none created")));
                    return;
                };
                if let Err(e) = mock_tuning::set_consumer_group_timings(
                    owner.client(),
                    MOCK_GROUP_SESSION_TIMEOUT_MS,
                    MOCK_GROUP_HEARTBEAT_INTERVAL_MS,
                ) {
                    let _ = ready_tx.send(Err(anyhow!("failed to configure mock cluster: {e}")));
                    return;
                }
                let _ = ready_tx.send(Ok(cluster.bootstrap_servers()));
                while let Ok(command) = command_rx.recv() {
                    match command {
                        Command::CreateTopic { name, partitions, reply } => {
                            let r = cluster
                                .create_topic(&name, partitions, 1)
                                .map_err(|e| anyhow!("failed to create topic {name}: {e}"));
                            let _ = reply.send(r);
                        }
                        Command::BrokerDown { reply } => {
                            let _ = reply.send(cluster.broker_down(1).map_err(|e| anyhow!("broker down: {e}")));
                        }
                        Command::BrokerUp { reply } => {
                            let _ = reply.send(cluster.broker_up(1).map_err(|e| anyhow!("broker up: {e}")));
                        }
                        Command::Stop => break,
                    }
                }
            })
            .context("failed to spawn broker thread")?;
        let bootstrap = ready_rx.recv().context("broker thread died")??;
        let broker = Self { bootstrap, commands, thread: Some(thread) };
        for topic in topics {
            broker.create_topic(topic, partitions)?;
        }
        Ok(broker)
    }

    /// The `bootstrap.servers` string clients connect to.
    pub fn bootstrap_servers(&self) -> &str {
        &self.bootstrap
    }

    pub fn create_topic(&self, name: &str, partitions: i32) -> anyhow::Result<()> {
        self.call(|reply| Command::CreateTopic { name: name.to_owned(), partitions, reply })
    }

    /// Make the broker refuse connections (fault injection).
    pub fn broker_down(&self) -> anyhow::Result<()> {
        self.call(|reply| Command::BrokerDown { reply })
    }

    pub fn broker_up(&self) -> anyhow::Result<()> {
        self.call(|reply| Command::BrokerUp { reply })
    }

    fn call(&self, make: impl FnOnce(mpsc::Sender<anyhow::Result<()>>) -> Command) -> anyhow::Result<()> {
        let (reply, rx) = mpsc::channel();
        self.commands.send(make(reply)).map_err(|_| anyhow!("broker thread stopped"))?;
        rx.recv().map_err(|_| anyhow!("broker thread stopped"))?
    }
}

impl Drop for EmbeddedBroker {
    fn drop(&mut self) {
        let _ = self.commands.send(Command::Stop);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_log_warnings_unless_librdkafka_debug_contexts_are_asked_for() {
        let mut kafka = KafkaConfig::new("127.0.0.1:9092");
        assert!(matches!(kafka.consumer_config("g").log_level, RDKafkaLogLevel::Warning));

        kafka.properties.push(("debug".to_owned(), "cgrp,eos".to_owned()));

        assert!(matches!(kafka.consumer_config("g").log_level, RDKafkaLogLevel::Debug));
        assert!(matches!(kafka.base().log_level, RDKafkaLogLevel::Debug));
    }
}
