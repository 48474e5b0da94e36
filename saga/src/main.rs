//! `cargo run --release`: the whole saga in one process. See the README.

use std::io::IsTerminal as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use order_svc::http::Auth;
use saga::{DemoKeys, Embedded, EmbeddedConfig};
use shared::telemetry::LogFormat;

/// Run all five saga services in one process on an embedded Kafka-protocol broker and SQLite.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Directory for the services' SQLite databases.
    #[arg(long, env = "SAGA_DATA_DIR", default_value = "data")]
    data_dir: PathBuf,
    /// Address of the order API; the other services' ops endpoints use the next four ports,
    /// order-svc's the fifth.
    #[arg(long, env = "SAGA_ADDR", default_value = "127.0.0.1:8080")]
    addr: SocketAddr,
    /// Partitions per topic on the embedded broker.
    #[arg(long, env = "KAFKA_PARTITIONS", default_value_t = 8)]
    partitions: i32,
    /// Saga deadline in seconds: a non-terminal order older than this is cancelled.
    #[arg(long, env = "SAGA_DEADLINE_SECS", default_value_t = 30)]
    deadline_secs: u64,
    /// OTLP gRPC endpoint for traces (e.g. http://127.0.0.1:4317); unset = no export.
    #[arg(long, env = "OTEL_EXPORTER_OTLP_ENDPOINT")]
    otlp_endpoint: Option<String>,
    /// Log format: json or pretty [default: pretty when standard output is a terminal, else
    /// json].
    #[arg(long, env = "LOG_FORMAT")]
    log_format: Option<String>,
    /// Fault profile: share (0..1) of payments declined on purpose.
    #[arg(long, env = "PAYMENT_DECLINE_RATE", default_value_t = 0.0)]
    payment_decline_rate: f64,
    /// Fault profile: latency added to every payment, in milliseconds.
    #[arg(long, env = "PAYMENT_LATENCY_MS", default_value_t = 0)]
    payment_latency_ms: u64,
    /// Fault profile: latency added before every shipment decision, in milliseconds.
    #[arg(long, env = "SHIPPING_LATENCY_MS", default_value_t = 0)]
    shipping_latency_ms: u64,
    /// Deliver notifications to this webhook too (JSON POST with an Idempotency-Key).
    #[arg(long, env = "NOTIFY_WEBHOOK_URL")]
    notify_webhook_url: Option<String>,
}

/// API keys and limits come from the environment as for order-svc (`ORDER_API_KEYS`,
/// `ORDER_API_KEYS_FILE`, `ORDER_API_AUTH=open`, `ORDER_API_RATE_LIMIT_PER_SEC`, `HTTP_*`, ...): keys are
/// secrets, and command-line arguments are visible to every user of the machine. With no key
/// configured, demo keys are made and printed at start-up.
#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let log_format = LogFormat::choose(args.log_format.as_deref(), std::io::stdout().is_terminal())
        .map_err(|err| anyhow::anyhow!("invalid --log-format / LOG_FORMAT: {err}"))?;
    let telemetry = shared::telemetry::init("saga-embedded", args.otlp_endpoint.as_deref(), log_format)?;
    let mut api = order_svc::api_from_env()?;
    let demo = match &api.auth {
        Auth::Keys(keys) if keys.is_empty() => {
            let demo = DemoKeys::generate()?;
            api.auth = Auth::Keys(demo.api_keys()?);
            Some(demo)
        }
        _ => None,
    };
    let shutdown = shared::shutdown::on_signal();
    let config = EmbeddedConfig {
        data_dir: args.data_dir,
        api_addr: args.addr,
        partitions: args.partitions,
        saga_deadline: Duration::from_secs(args.deadline_secs),
        otlp_endpoint: args.otlp_endpoint,
        log_format,
        payment_decline_rate: args.payment_decline_rate,
        payment_latency: Duration::from_millis(args.payment_latency_ms),
        shipping_latency: Duration::from_millis(args.shipping_latency_ms),
        notify_webhook_url: args.notify_webhook_url,
        database_urls: Default::default(),
        api,
        kafka_properties: Vec::new(),
        http: shared::http_server::ServerLimits::from_env()?,
    };
    let auth_mode = match &config.api.auth {
        Auth::Open => "OPEN: no API key needed, every caller is an admin (ORDER_API_AUTH=open)".to_owned(),
        Auth::Keys(keys) if demo.is_some() => format!("{} demo keys (below)", keys.len()),
        Auth::Keys(keys) => format!("{} configured keys (ORDER_API_KEYS)", keys.len()),
    };
    let data_dir = config.data_dir.clone();
    let system = Embedded::build(config, &shutdown).await?;
    let e = &system.endpoints;
    tracing::info!(
        api = %format!("http://{}", e.api),
        ops = %format!("http://{}", e.order_ops),
        brokers = %e.brokers,
        data_dir = %data_dir.display(),
        "saga is running"
    );
    eprintln!(
        "\nsaga is running (Ctrl-C to stop)\n  order API      http://{api}/orders\n  admin API      http://{api}/admin/commands\n  API docs       http://{api}/openapi.json\n  API keys       {auth_mode}\n  metrics        http://{ops}/metrics  http://{inv}/metrics  http://{pay}/metrics  http://{ship}/metrics  http://{notif}/metrics\n  health         http://{ops}/livez  http://{ops}/readyz  (order-svc's ops port; http://{api}/healthz for load balancers)\n  broker         {brokers}\n  data           {data}\n",
        api = e.api,
        ops = e.order_ops,
        inv = e.inventory,
        pay = e.payment,
        ship = e.shipping,
        notif = e.notification,
        brokers = e.brokers,
        data = data_dir.display(),
    );
    // sagactl reads <data dir>/broker.addr; other shells and Kafka tools take the export line.
    let finds = if data_dir == std::path::Path::new("data") {
        "sagactl run from this directory finds this broker (data/broker.addr)".to_owned()
    } else {
        format!("sagactl finds this broker with SAGA_DATA_DIR={}", data_dir.display())
    };
    eprintln!("{finds}; elsewhere:\n  export KAFKA_BROKERS={}\n", e.brokers);
    // Demo keys go to the terminal only (never to the log), once; they die with the process.
    if let Some(demo) = &demo {
        let mut text = format!(
            "demo API keys (valid until this process stops; send as Authorization: Bearer <key>)\n  admin          {}\n",
            demo.admin
        );
        for (customer, key) in &demo.customers {
            text.push_str(&format!("  {customer:<14} {key}\n"));
        }
        eprintln!("{text}");
    }
    let result = system.run_until_stopped(shutdown).await;
    telemetry.shutdown();
    result
}
