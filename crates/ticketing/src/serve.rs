//! `ticketing serve`: the whole system in one process (GraphQL API, command side,
//! projections and, by default, the notifier) on the embedded store or KurrentDB.

use std::process::ExitCode;

use api::{AppConfig, Application};

/// Start the system and serve GraphQL until Ctrl-C or SIGTERM.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(flatten)]
    config: AppConfig,
}

/// Runs the server; the exit code says whether it started and stopped cleanly.
pub async fn run(args: Args) -> ExitCode {
    let config = args.config;
    if let Err(e) =
        api::telemetry::init_tracing(config.service.log_format, &config.service.log_filter)
    {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let app = match Application::build(config).await {
        Ok(app) => app,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "cannot start");
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    tracing::info!(addr = %app.local_addr(), "GraphQL at http://{}/graphql", app.local_addr());
    match app.run_until_stopped(api::app::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "stopped with an error");
            ExitCode::from(1)
        }
    }
}
