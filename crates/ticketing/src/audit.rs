//! `ticketing audit`: answers audits by replaying the store, read-only, so it can run
//! beside a live server.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};
use clap::{Subcommand, ValueEnum};
use domain::EventId;
use indicatif::{ProgressBar, ProgressStyle};
use projections::audit::{
    self, AsOf, AuditError, HistoryEntry, ReplayProgress, StateAt, VerifyReport,
};
use projections::{ProjectionState, ReadSide, ReadSideOptions};
use serde::Serialize;
use store::Position;
use store::sqlite::{SqliteOptions, SqliteStore};

/// Arguments of `ticketing audit`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Directory holding the event store (and the read-model snapshots).
    #[arg(
        long,
        global = true,
        env = "TICKETING_DATA_DIR",
        default_value = "./data"
    )]
    data_dir: PathBuf,
    /// How to print the answer.
    #[arg(long, global = true, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(subcommand)]
    command: AuditCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    /// Aligned columns for people.
    Table,
    /// One JSON document for tools.
    Json,
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Every stored event of a ticketed event: who did what, when, under which request.
    History {
        /// The event's id (a uuid).
        #[arg(value_parser = parse_event_id)]
        event_id: EventId,
    },
    /// The event's state as of a version, a global position or a time.
    StateAt {
        /// The event's id (a uuid).
        #[arg(value_parser = parse_event_id)]
        event_id: EventId,
        #[command(flatten)]
        point: Point,
    },
    /// Replay every inventory stream and compare with the read models; exits with 1 when
    /// they differ.
    Verify {
        /// Rebuild the read models from zero in memory instead of loading the server's
        /// snapshots: checks that a rebuild reproduces the history.
        #[arg(long)]
        from_zero: bool,
    },
}

/// Exactly one point in the history.
#[derive(Debug, clap::Args)]
#[group(required = true, multiple = false)]
struct Point {
    /// After the event with this stream version (0-based).
    #[arg(long)]
    version: Option<u64>,
    /// After every event at or before this global position.
    #[arg(long)]
    position: Option<u64>,
    /// After every event recorded at or before this RFC 3339 time.
    #[arg(long, value_parser = parse_time)]
    time: Option<DateTime<Utc>>,
}

impl Point {
    fn as_of(&self) -> AsOf {
        match (self.version, self.position, self.time) {
            (Some(v), _, _) => AsOf::Version(v),
            (_, Some(p), _) => AsOf::Position(Position(p)),
            (_, _, Some(t)) => AsOf::Time(t),
            // clap's group makes one of them required.
            _ => AsOf::Head,
        }
    }
}

fn parse_event_id(raw: &str) -> Result<EventId, String> {
    raw.parse::<EventId>().map_err(|e| e.to_string())
}

fn parse_time(raw: &str) -> Result<DateTime<Utc>, String> {
    DateTime::parse_from_rfc3339(raw)
        .map(|t| t.with_timezone(&Utc))
        .map_err(|e| format!("{raw:?} is not an RFC 3339 time (e.g. 2030-01-01T12:00:00Z): {e}"))
}

/// Runs `ticketing audit ...` and returns the exit code: 0 answered, 1 verification found
/// differences, 2 the audit could not be answered.
pub async fn run(args: Args) -> ExitCode {
    match answer(&args).await {
        Ok(code) => code,
        Err(Failure { code, message }) => {
            eprintln!("error [{code}]: {message}");
            ExitCode::from(2)
        }
    }
}

/// Why an audit could not be answered, with a stable code.
struct Failure {
    code: &'static str,
    message: String,
}

impl From<AuditError> for Failure {
    fn from(e: AuditError) -> Self {
        Self {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

impl From<store::StoreError> for Failure {
    fn from(e: store::StoreError) -> Self {
        Self {
            code: e.code(),
            message: e.to_string(),
        }
    }
}

fn open_store(dir: &Path) -> Result<Arc<SqliteStore>, Failure> {
    SqliteStore::open_read_only(dir, SqliteOptions::default())
        .map(Arc::new)
        .map_err(|e| Failure {
            code: e.code(),
            message: format!("cannot open the event store in {}: {e}", dir.display()),
        })
}

fn progress_bar(what: &str) -> ProgressBar {
    let bar = ProgressBar::new(0);
    let style = ProgressStyle::with_template(&format!(
        "{what} [{{bar:40}}] {{pos}}/{{len}} ({{per_sec}}, {{eta}} left)"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar());
    bar.set_style(style.progress_chars("=> "));
    bar
}

fn track(bar: &ProgressBar) -> impl Fn(ReplayProgress) + Sync + '_ {
    move |p: ReplayProgress| {
        bar.set_length(p.total);
        bar.set_position(p.done);
    }
}

async fn answer(args: &Args) -> Result<ExitCode, Failure> {
    let store = open_store(&args.data_dir)?;
    match &args.command {
        AuditCommand::History { event_id } => {
            let bar = progress_bar("replaying");
            let history = audit::history(store.as_ref(), *event_id, &track(&bar)).await;
            bar.finish_and_clear();
            let history = history?;
            match args.format {
                Format::Json => print_json(&history)?,
                Format::Table => print_history(&history),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::StateAt { event_id, point } => {
            let bar = progress_bar("folding");
            let state =
                audit::state_at(store.as_ref(), *event_id, point.as_of(), &track(&bar)).await;
            bar.finish_and_clear();
            let state = state?;
            match args.format {
                Format::Json => print_json(&state)?,
                Format::Table => print_state(&state),
            }
            Ok(ExitCode::SUCCESS)
        }
        AuditCommand::Verify { from_zero } => {
            let side = ReadSide::start(
                store.clone(),
                ReadSideOptions {
                    snapshot_dir: (!from_zero).then(|| args.data_dir.clone()),
                    read_only: true,
                    ..Default::default()
                },
            )
            .map_err(|e| Failure {
                code: e.code(),
                message: e.to_string(),
            })?;
            catch_up(&side, &store).await?;
            let bar = progress_bar("verifying streams");
            let report = audit::verify(store.as_ref(), &side, &track(&bar)).await;
            bar.finish_and_clear();
            side.shutdown().await;
            let report = report?;
            match args.format {
                Format::Json => print_json(&report)?,
                Format::Table => print_report(&report),
            }
            Ok(if report.differences.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
    }
}

/// Brings the read models to the store's head, showing how far the slowest one is.
async fn catch_up(side: &ReadSide, store: &Arc<SqliteStore>) -> Result<(), Failure> {
    use store::EventStore;
    let head = store.head().await?;
    let bar = progress_bar("loading read models (position)");
    bar.set_length(head.0);
    loop {
        let status = side.status();
        if let Some(failed) = status.iter().find_map(|s| match &s.state {
            ProjectionState::Failed { error } => Some(error.clone()),
            _ => None,
        }) {
            bar.finish_and_clear();
            return Err(Failure {
                code: "PROJECTION_FAILED",
                message: failed,
            });
        }
        let slowest = status.iter().map(|s| s.checkpoint).min().unwrap_or(head);
        bar.set_position(slowest.0.min(head.0));
        if slowest >= head {
            bar.finish_and_clear();
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn print_json<T: Serialize>(value: &T) -> Result<(), Failure> {
    let text = serde_json::to_string_pretty(value).map_err(|e| Failure {
        code: "INTERNAL",
        message: format!("cannot encode the answer: {e}"),
    })?;
    println!("{text}");
    Ok(())
}

fn time(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Prints rows as columns padded to their widest cell.
fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<String>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header.iter().map(|h| h.to_string()).collect());
    for row in rows {
        line(row.clone());
    }
}

fn print_history(history: &[HistoryEntry]) {
    let rows: Vec<Vec<String>> = history
        .iter()
        .map(|h| {
            vec![
                h.version.to_string(),
                h.position.to_string(),
                time(h.recorded_at),
                h.event_type.clone(),
                h.acting_user
                    .map_or_else(|| "system".to_string(), |u| u.to_string()),
                h.correlation_id.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "VERSION",
            "POSITION",
            "RECORDED AT",
            "TYPE",
            "ACTING USER",
            "CORRELATION",
        ],
        &rows,
    );
}

fn print_state(s: &StateAt) {
    println!(
        "event {} as of version {} (position {}, recorded {})",
        s.event_id,
        s.version,
        s.position,
        time(s.recorded_at)
    );
    let st = &s.state;
    if let Some(d) = &st.details {
        println!("name:     {}", d.name);
        println!("venue:    {}", d.venue);
        println!("starts:   {}", time(d.starts_at));
    }
    if let Some(status) = st.status {
        println!("status:   {status:?}");
    }
    println!();
    let rows: Vec<Vec<String>> = st
        .tiers
        .iter()
        .map(|t| {
            vec![
                t.tier_id.to_string(),
                t.name.clone(),
                t.price.to_string(),
                t.capacity.to_string(),
                t.sold.to_string(),
                t.held.to_string(),
                t.available.to_string(),
            ]
        })
        .collect();
    print_table(
        &[
            "TIER",
            "NAME",
            "PRICE",
            "CAPACITY",
            "SOLD",
            "HELD",
            "AVAILABLE",
        ],
        &rows,
    );
    println!();
    let mut by_status = std::collections::BTreeMap::new();
    for o in &st.orders {
        *by_status.entry(format!("{:?}", o.status)).or_insert(0u32) += 1;
    }
    let summary: Vec<String> = by_status.iter().map(|(k, v)| format!("{k} {v}")).collect();
    println!("orders:   {} ({})", st.orders.len(), summary.join(", "));
    println!("tickets:  {}", st.tickets.len());
    println!("seats:    {}", st.seats.len());
    println!("holds:    {} live", st.live_holds);
    match &st.invariant_violation {
        None => println!("invariants: hold"),
        Some(v) => println!("invariants: VIOLATED: {v}"),
    }
}

fn print_report(r: &VerifyReport) {
    println!(
        "replayed {} inventory streams, {} events: {} difference(s)",
        r.streams,
        r.events,
        r.differences.len()
    );
    if r.differences.is_empty() {
        return;
    }
    let rows: Vec<Vec<String>> = r
        .differences
        .iter()
        .map(|d| {
            vec![
                d.event_id.to_string(),
                d.read_model.to_string(),
                d.subject.clone(),
                d.replayed.clone(),
                d.found.clone(),
            ]
        })
        .collect();
    print_table(
        &[
            "EVENT",
            "READ MODEL",
            "WHAT",
            "REPLAYED",
            "READ MODEL HOLDS",
        ],
        &rows,
    );
}
