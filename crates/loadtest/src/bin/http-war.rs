//! `http-war [--duration 20] [--connections 256] [--subscribers 1000]`: the ticket war
//! through HTTP, driven by `wrk`, against a `ticketing serve` this tool starts. Prints the
//! purchases per second, latency percentiles and the server's CPU time per purchase, next
//! to `GET /healthz` and `{ __typename }` as the edge's ceilings; exits non-zero when a sale
//! check fails.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use loadtest::http_war::{HttpWarConfig, run};

#[derive(Debug, Parser)]
#[command(name = "http-war", version)]
struct Cli {
    /// Seconds of each purchase phase.
    #[arg(long, default_value_t = 20)]
    duration: u64,
    /// Seconds of each edge phase (`/healthz`, `{ __typename }`).
    #[arg(long, default_value_t = 10)]
    edge_duration: u64,
    /// wrk connections.
    #[arg(long, default_value_t = 256)]
    connections: usize,
    /// wrk threads.
    #[arg(long, default_value_t = 2)]
    threads: usize,
    /// Logged-in buyers the purchases rotate over.
    #[arg(long, default_value_t = 200)]
    buyers: usize,
    /// `seatAvailability` subscribers of a second purchase phase (0: none).
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// The `ticketing` binary (default: beside this executable, built first under cargo).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Extra flags passed to `ticketing serve` (repeat: --server-arg=--notifier --server-arg=off).
    #[arg(long = "server-arg", allow_hyphen_values = true)]
    server_args: Vec<String>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = HttpWarConfig {
        duration: Duration::from_secs(cli.duration.max(1)),
        edge_duration: Duration::from_secs(cli.edge_duration.max(1)),
        connections: cli.connections.max(1),
        threads: cli.threads.max(1),
        buyers: cli.buyers.max(1),
        subscribers: cli.subscribers,
        server_bin: cli.server_bin,
        server_args: cli.server_args,
    };
    let report = match run(config).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: the run could not complete: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.table());
    if let Some(path) = cli.json {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|bytes| std::fs::write(&path, bytes).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("error: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
