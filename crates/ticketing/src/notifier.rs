//! `ticketing notifier`: the notifier as its own process, following the same store as
//! the server (start the server with `--notifier off`).

use std::{path::PathBuf, process::ExitCode};

use api::{ServiceConfig, config::SmtpSettings};
use notifier::Notifier;

/// Run the notifier on its own.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory of the embedded event store; the notifier keeps its own database there.
    #[arg(long, env = "TICKETING_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
    /// KurrentDB connection string, instead of the embedded store.
    #[arg(long, env = "TICKETING_KURRENTDB_URL")]
    kurrentdb_url: Option<String>,
    /// Log filter in `tracing` env-filter syntax.
    #[arg(long, env = "TICKETING_LOG", default_value = "info")]
    log_filter: String,
    /// Log line format.
    #[arg(long, env = "TICKETING_LOG_FORMAT", value_enum, default_value_t = api::config::LogFormat::Text)]
    log_format: api::config::LogFormat,
    /// Email delivery.
    #[command(flatten)]
    smtp: SmtpSettings,
}

/// Runs until Ctrl-C or SIGTERM.
pub async fn run(args: Args) -> ExitCode {
    if let Err(e) = api::telemetry::init_tracing(args.log_format, &args.log_filter) {
        eprintln!("error: {e}");
        return ExitCode::from(2);
    }
    let config = ServiceConfig {
        data_dir: args.data_dir.clone(),
        kurrentdb_url: args.kurrentdb_url,
        ..ServiceConfig::default()
    };
    // Read-only: the server is the store's one writer.
    let store = match api::app::open_store(&config, true) {
        Ok(store) => store,
        Err(e) => {
            eprintln!("error: {e:#}");
            return ExitCode::from(1);
        }
    };
    let notifier = match Notifier::start(
        args.smtp
            .notifier_config(api::app::notifier_db(&args.data_dir)),
        store.clone(),
    )
    .await
    {
        Ok(notifier) => notifier,
        Err(e) => {
            eprintln!("error: cannot start the notifier: {e}");
            return ExitCode::from(1);
        }
    };
    if let Err(e) = api::app::restrict_data_files(&args.data_dir) {
        eprintln!("error: {e:#}");
        return ExitCode::from(1);
    }
    tracing::info!(data_dir = %args.data_dir.display(), "notifier running");
    api::app::shutdown_signal().await;
    notifier.shutdown().await;
    store.shutdown().await;
    ExitCode::SUCCESS
}
