//! `ticketing admin create`: creates (or promotes) an administrator on a stopped system.
//! On a running one, start `serve` with `--admin-email`/`--admin-password` instead.

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use api::{PasswordHasher, ServiceConfig};
use commands::{AccountService, SystemClock};
use projections::{ReadSide, ReadSideOptions};
use secrecy::SecretString;

/// Administration tasks.
#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AdminCommand {
    /// Create an administrator account, or give the admin role to an existing account (whose
    /// password must be given, unless `--promote-existing`).
    Create {
        /// The administrator's email.
        #[arg(long)]
        email: String,
        /// Their password (at least 8 characters).
        #[arg(long, env = "TICKETING_ADMIN_PASSWORD", hide_env_values = true)]
        password: String,
        /// Directory of the embedded event store.
        #[arg(long, env = "TICKETING_DATA_DIR", default_value = "./data")]
        data_dir: PathBuf,
        /// KurrentDB connection string, instead of the embedded store.
        #[arg(long, env = "TICKETING_KURRENTDB_URL")]
        kurrentdb_url: Option<String>,
        /// Give the admin role to an existing account with this email even if `--password`
        /// is not its password (without it, its own password is required).
        #[arg(long)]
        promote_existing: bool,
    },
}

/// Runs the task; the exit code says whether it succeeded.
pub async fn run(args: Args) -> ExitCode {
    let AdminCommand::Create {
        email,
        password,
        data_dir,
        kurrentdb_url,
        promote_existing,
    } = args.command;
    let existing = if promote_existing {
        api::app::ExistingAccount::Promote
    } else {
        api::app::ExistingAccount::RequirePassword
    };
    match create(email.clone(), password, data_dir, kurrentdb_url, existing).await {
        Ok(user_id) => {
            println!("administrator {email} ({user_id}) is ready");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

async fn create(
    email: String,
    password: String,
    data_dir: PathBuf,
    kurrentdb_url: Option<String>,
    existing: api::app::ExistingAccount,
) -> anyhow::Result<domain::UserId> {
    let config = ServiceConfig {
        data_dir: data_dir.clone(),
        kurrentdb_url: kurrentdb_url.clone(),
        ..ServiceConfig::default()
    };
    let store = api::app::open_store(&config, false).map_err(|e| {
        e.context("is `ticketing serve` running on this data directory? Stop it, or start it with --admin-email and --admin-password")
    })?;
    let read_side = ReadSide::start(
        Arc::clone(&store),
        ReadSideOptions {
            snapshot_dir: kurrentdb_url.is_none().then_some(data_dir),
            ..ReadSideOptions::default()
        },
    )?;
    let result = async {
        read_side.catch_up(Duration::from_secs(300)).await?;
        let accounts = AccountService::new(Arc::clone(&store), Arc::new(SystemClock));
        api::app::ensure_admin(
            &accounts,
            &read_side,
            &PasswordHasher::default(),
            &email,
            &SecretString::from(password),
            existing,
        )
        .await
    }
    .await;
    read_side.shutdown().await;
    store.shutdown().await;
    result
}
