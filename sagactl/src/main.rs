//! `sagactl`: the saga operator CLI. See sagactl/README.md.

use std::process::ExitCode;

use clap::Parser as _;
use sagactl::cli::Cli;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match sagactl::run(cli).await {
        Ok(code) => code,
        Err(err) if sagactl::output::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            ExitCode::FAILURE
        }
    }
}
