//! A standalone embedded broker (librdkafka's mock cluster) for multi-process runs.
//!
//! Creates the saga topics and prints `bootstrap.servers` on stdout (and to `--address-file`
//! if given), then runs until SIGINT/SIGTERM. The mock cluster binds a random port.
//!
//! Fault injection for outage tests: SIGUSR1 takes the broker down (connections are refused,
//! data is kept), SIGUSR2 brings it back up.

use anyhow::Context as _;
use shared::broker::EmbeddedBroker;
use shared::config::{env_opt, env_or};
use shared::topics::Topics;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut address_file = env_opt("BROKER_ADDRESS_FILE");
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--address-file" => address_file = Some(args.next().context("--address-file needs a path")?),
            "-h" | "--help" => {
                println!(
                    "mock-broker [--address-file PATH]\n\nStarts librdkafka's mock cluster with the saga topics and prints its bootstrap servers.\nEnvironment: KAFKA_PARTITIONS (default 8), TOPIC_PREFIX, BROKER_ADDRESS_FILE.\nSignals: SIGUSR1 takes the broker down, SIGUSR2 brings it up, SIGINT/SIGTERM stop it."
                );
                return Ok(());
            }
            other => anyhow::bail!("unknown argument {other:?} (see --help)"),
        }
    }
    let partitions: i32 = env_or("KAFKA_PARTITIONS", 8)?;
    let topics = Topics::with_prefix(&env_opt("TOPIC_PREFIX").unwrap_or_default());
    let broker = EmbeddedBroker::start(&topics.all(), partitions)?;
    println!("{}", broker.bootstrap_servers());
    if let Some(path) = address_file {
        // Write then rename, so a reader never sees a partial address.
        let tmp = format!("{path}.tmp");
        std::fs::write(&tmp, broker.bootstrap_servers()).context("failed to write the address file")?;
        std::fs::rename(&tmp, &path).context("failed to publish the address file")?;
    }
    let shutdown = shared::shutdown::on_signal();
    let mut down = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined1())?;
    let mut up = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::user_defined2())?;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => break,
            _ = down.recv() => {
                broker.broker_down()?;
                eprintln!("broker down");
            }
            _ = up.recv() => {
                broker.broker_up()?;
                eprintln!("broker up");
            }
        }
    }
    drop(broker);
    Ok(())
}
