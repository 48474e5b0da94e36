//! payment-svc as its own process, configured from the environment (see `Config::from_env`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = payment_svc::Config::from_env()?;
    let service = config.service.clone();
    shared::service::run_process(&service, |shutdown| async move {
        payment_svc::App::build(config, &shutdown).await?.run_until_stopped(shutdown).await
    })
    .await
}
