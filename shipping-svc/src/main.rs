//! shipping-svc as its own process, configured from the environment (see `Config::from_env`).

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = shipping_svc::Config::from_env()?;
    let service = config.service.clone();
    shared::service::run_process(&service, |shutdown| async move {
        shipping_svc::App::build(config, &shutdown).await?.run_until_stopped(shutdown).await
    })
    .await
}
