//! The `ticketing` command line.
//!
//! One binary, one module per subcommand: `audit` replays history to answer audits
//! (history, state at a point, verification of the read models); `serve` runs the whole
//! system; `admin` creates administrators; `demo` loads sample data into a running
//! server; `notifier` runs the notifier as its own process. Each subcommand module
//! exposes an `Args` type parsed by clap and an async `run(args)` returning the process's
//! exit code, so adding a subcommand is one enum variant and one module.

mod admin;
mod audit;
mod demo;
mod notifier;
mod serve;

use std::process::ExitCode;

/// mimalloc: in a 1,000-buyer war through HTTP it kept the server's peak RSS at about
/// 280 MiB where glibc's malloc reached 390 to 435 MiB and jemalloc 400 to 500, and sold
/// as fast as jemalloc (docs/performance.md, "Memory").
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::{Parser, Subcommand};

/// Event ticketing: event-sourced, built to survive a ticket war.
#[derive(Debug, Parser)]
#[command(name = "ticketing", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Replay stored history: an event's history, its state at a point, or a check that
    /// the read models match the history.
    Audit(audit::Args),
    /// Start the whole system (GraphQL API, projections, notifier) and serve until
    /// Ctrl-C or SIGTERM.
    Serve(Box<serve::Args>),
    /// Administration: create an administrator on a stopped system.
    Admin(admin::Args),
    /// Load a realistic sample (organizers, a seated and an unseated event, customers)
    /// into a running server.
    Demo(demo::Args),
    /// Run the notifier as its own process on the server's store (start `serve` with
    /// `--notifier off`).
    Notifier(notifier::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `serve` and `notifier` set up their own logging (text or JSON, from its configuration).
    let own_logging = matches!(cli.command, Command::Serve(_) | Command::Notifier(_));
    if !own_logging {
        tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
            )
            .with_writer(std::io::stderr)
            .init();
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    runtime.block_on(async {
        match cli.command {
            Command::Audit(args) => audit::run(args).await,
            Command::Serve(args) => serve::run(*args).await,
            Command::Admin(args) => admin::run(args).await,
            Command::Demo(args) => demo::run(args).await,
            Command::Notifier(args) => notifier::run(args).await,
        }
    })
}
