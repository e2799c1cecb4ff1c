//! `loadtest SCENARIO [--target URL] [--json FILE]`: plays an on-sale and exits non-zero
//! when any check fails.

use std::{path::PathBuf, process::ExitCode, time::Duration};

use clap::Parser;
use loadtest::{Config, Scenario};

/// Plays a ticket war against the ticketing server and reports throughput, latency,
/// memory and the oversell and lost-purchase checks.
#[derive(Debug, Parser)]
#[command(name = "loadtest", version)]
struct Cli {
    /// The scenario to play.
    #[arg(value_enum)]
    scenario: Scenario,
    /// Base URL of a running server (such as http://127.0.0.1:8080). Without it, the tool
    /// starts `ticketing serve` on a temporary data directory. The server must have been
    /// started with the loadtest's administrator and without login or purchase limits.
    #[arg(long)]
    target: Option<String>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    json: Option<PathBuf>,
    /// Tickets over every event (seats, for `seated`). Default by scenario.
    #[arg(long)]
    tickets: Option<u32>,
    /// Concurrent buyers. Default by scenario.
    #[arg(long)]
    buyers: Option<usize>,
    /// WebSocket subscribers to `seatAvailability`. Default by scenario.
    #[arg(long)]
    subscribers: Option<usize>,
    /// Most tickets per purchase; each purchase asks for 1 to this many.
    #[arg(long, default_value_t = 4)]
    max_quantity: u32,
    /// Events on sale at once (`many-events`).
    #[arg(long, default_value_t = 20)]
    events: usize,
    /// Share of buyers after the best seats (`seated`).
    #[arg(long, default_value_t = 0.8)]
    hot_seat_share: f64,
    /// Attempts per buyer before giving up (`seated`).
    #[arg(long, default_value_t = 10)]
    seat_attempts: u32,
    /// Share of holds paid with a declined card (`hold-pay`).
    #[arg(long, default_value_t = 0.1)]
    decline_share: f64,
    /// Share of holds never paid, left to expire (`hold-pay`).
    #[arg(long, default_value_t = 0.1)]
    abandon_share: f64,
    /// How long holds last on a server this tool starts.
    #[arg(long, default_value = "5s", value_parser = humantime_duration)]
    hold_ttl: Duration,
    /// Share of the tickets sold before the server is killed (`crash`).
    #[arg(long, default_value_t = 0.3)]
    crash_at: f64,
    /// The `ticketing` binary (default: beside this executable, built first under cargo).
    #[arg(long)]
    server_bin: Option<PathBuf>,
    /// Data directory of the `--target` server, so its store can be audited too.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Client-side timeout of one request, in seconds.
    #[arg(long, default_value_t = 60)]
    request_timeout: u64,
    /// Seed of the buyers' random choices.
    #[arg(long, default_value_t = 7)]
    seed: u64,
}

fn humantime_duration(raw: &str) -> Result<Duration, String> {
    let raw = raw.trim();
    let (number, unit) = raw.split_at(raw.find(|c: char| !c.is_ascii_digit()).unwrap_or(raw.len()));
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{raw:?}: expected e.g. 5s, 500ms or 1m"))?;
    match unit {
        "ms" => Ok(Duration::from_millis(n)),
        "s" | "" => Ok(Duration::from_secs(n)),
        "m" => Ok(Duration::from_secs(n * 60)),
        _ => Err(format!("{raw:?}: expected e.g. 5s, 500ms or 1m")),
    }
}

impl Cli {
    fn config(self) -> Result<Config, String> {
        // (tickets, buyers, subscribers) per scenario.
        let (tickets, buyers, subscribers) = match self.scenario {
            Scenario::Hot => (50_000, 1_000, 1_000),
            Scenario::ManyEvents => (50_000, 1_000, 200),
            Scenario::Seated => (2_000, 1_000, 100),
            Scenario::HoldPay => (10_000, 500, 100),
            // A killed server drops every socket; subscribers would only measure that.
            Scenario::Crash => (20_000, 500, 0),
            Scenario::Ci => (300, 20, 5),
        };
        let config = Config {
            scenario: self.scenario,
            tickets: self.tickets.unwrap_or(tickets),
            buyers: self.buyers.unwrap_or(buyers),
            subscribers: self.subscribers.unwrap_or(subscribers),
            max_quantity: self.max_quantity,
            events: self.events,
            hot_seat_share: self.hot_seat_share,
            seat_attempts: self.seat_attempts,
            decline_share: self.decline_share,
            abandon_share: self.abandon_share,
            hold_ttl: self.hold_ttl,
            crash_at: self.crash_at,
            target: self.target,
            server_bin: self.server_bin,
            data_dir: self.data_dir,
            request_timeout: Duration::from_secs(self.request_timeout.max(1)),
            seed: self.seed,
        };
        let share = |name: &str, v: f64| {
            if (0.0..=1.0).contains(&v) {
                Ok(())
            } else {
                Err(format!("--{name} must be between 0 and 1"))
            }
        };
        share("hot-seat-share", config.hot_seat_share)?;
        share("decline-share", config.decline_share)?;
        share("abandon-share", config.abandon_share)?;
        share("crash-at", config.crash_at)?;
        if config.decline_share + config.abandon_share > 1.0 {
            return Err("--decline-share plus --abandon-share must not exceed 1".into());
        }
        if config.tickets == 0 || config.buyers == 0 || config.max_quantity == 0 {
            return Err("--tickets, --buyers and --max-quantity must be at least 1".into());
        }
        if config.scenario == Scenario::Crash && config.target.is_some() {
            return Err(
                "the crash scenario kills and restarts its own server: drop --target".into(),
            );
        }
        if config.scenario == Scenario::Crash && config.subscribers > 0 {
            return Err("the crash scenario runs without subscribers (--subscribers 0)".into());
        }
        Ok(config)
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let json = cli.json.clone();
    let config = match cli.config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let report = match loadtest::run(config).await {
        Ok(report) => report,
        Err(e) => {
            eprintln!("error: the run could not complete: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.table());
    if let Some(path) = json {
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
