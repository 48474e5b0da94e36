//! sagactl finds the embedded system's broker without being told: the system publishes its
//! address in its data directory while it runs, and removes it when it stops.

use crate::harness::{Options, System, sagactl_in};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sagactl_finds_the_embedded_broker_through_the_data_directory_while_the_system_runs() -> anyhow::Result<()> {
    let system = System::start(Options::default()).await?;
    let address_file = system.data_dir.join("broker.addr");
    assert_eq!(std::fs::read_to_string(&address_file)?, system.brokers, "the running system published its broker");

    // From the directory `cargo run` ran in (./data), and through SAGA_DATA_DIR from anywhere.
    let here = sagactl_in(&["lag", "-o", "json"], &[], Some(&system.root)).await?.json()?;
    assert_eq!(here["groups"].as_array().map(Vec::len), Some(5), "{here:#}");
    let data_dir = system.data_dir.display().to_string();
    let elsewhere = sagactl_in(&["lag", "-o", "json"], &[("SAGA_DATA_DIR", &data_dir)], None).await?.json()?;
    assert_eq!(elsewhere["groups"].as_array().map(Vec::len), Some(5), "{elsewhere:#}");

    let help = sagactl_in(&["--help"], &[], None).await?;
    assert!(help.stdout.contains("broker.addr") && help.stdout.contains("SAGA_DATA_DIR"), "{}", help.stdout);

    // Stopping removes it: `cargo run` stopped with Ctrl-C leaves no address behind.
    let dir = system.stop_keeping_files().await?;
    let (root, data) = (dir.0.clone(), dir.0.join("data"));
    assert!(data.join("order-svc.db").exists(), "the data directory is still there");
    assert!(!address_file.exists(), "a cleanly stopped system removes its address file");

    // A stale file (a system killed with -9) is named in the error, with what to do.
    let closed = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    std::fs::write(data.join("broker.addr"), closed.to_string())?;
    let stale = sagactl_in(&["--kafka-timeout", "1s", "lag"], &[], Some(&root)).await?;
    stale.assert_clear_failure(&format!("cannot reach Kafka at {closed} (from data/broker.addr"));
    assert!(stale.stderr.contains("stale"), "{}", stale.stderr);
    Ok(())
}
