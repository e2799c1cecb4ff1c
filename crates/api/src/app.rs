//! The whole system in one process: [`Application::build`] opens the event store, starts
//! the command side, the read side and (by default) the notifier, builds the GraphQL
//! schema over them and binds the HTTP listener; [`Application::run_until_stopped`]
//! serves until a shutdown signal and then stops everything in order.

use std::{
    future::Future,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use async_trait::async_trait;
use axum::{
    Json,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
};
use bytes::Bytes;
use clap::{Args, ValueEnum};
use commands::{AccountService, CommandConfig, CommandService, OrderLocator, SystemClock};
use domain::{EventId, OrderId};
use notifier::{Notifier, NotifierHandle};
use payments::{HttpSink, ReplayGuard, SimulatedProvider, SimulatorConfig};
use projections::{ReadSide, ReadSideOptions};
use secrecy::{ExposeSecret, SecretString};
use signature::TicketCodeSigner;
use store::EventStore;
use tokio::net::TcpListener;

use crate::{
    auth::{JwtCodec, PasswordHasher},
    config::{ServiceConfig, SmtpSettings},
    error::ApiError,
    graphql::SchemaLimits,
    http::{HttpOptions, HttpService},
    printable,
    rate_limit::RateLimits,
    schema::{self, Services},
};

/// The ticket-code key used when none is configured. Public, so production refuses it.
pub const DEV_TICKET_CODE_KEY: &str = "ticketing-development-ticket-code-key";

/// The payment webhook secret used when none is configured (development only).
pub const DEV_PAYMENT_WEBHOOK_SECRET: &str = "ticketing-development-webhook-secret";

/// How old (or how far ahead) a payment webhook's signed timestamp may be, in seconds.
pub const WEBHOOK_TOLERANCE_SECS: i64 = 300;

/// File name of the notifier's database inside the data directory.
pub const NOTIFIER_DB: &str = "notifier.sqlite3";

/// File name of the simulated payment provider's ledger inside the data directory: its
/// charges and refunds, so that a restart neither forgets nor repeats one.
pub const PAYMENTS_DB: &str = "payments.sqlite3";

/// Where the notifier runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum NotifierMode {
    /// In this process (the default).
    InProcess,
    /// Elsewhere (`ticketing notifier`), or not at all.
    Off,
}

/// Everything `ticketing serve` is configured with: the service settings plus the
/// domain's own.
#[derive(Debug, Clone, Args)]
pub struct AppConfig {
    /// HTTP, auth, limits and logging.
    #[command(flatten)]
    pub service: ServiceConfig,

    /// Key that signs ticket codes (HMAC). Required in production.
    #[arg(long, env = "TICKETING_TICKET_CODE_KEY", hide_env_values = true, value_parser = parse_secret)]
    pub ticket_code_key: Option<SecretString>,

    /// Email of an administrator to create (or promote) at start, with `--admin-password`.
    #[arg(long, env = "TICKETING_ADMIN_EMAIL", requires = "admin_password")]
    pub admin_email: Option<String>,

    /// Password of the administrator created at start.
    #[arg(long, env = "TICKETING_ADMIN_PASSWORD", hide_env_values = true, value_parser = parse_secret, requires = "admin_email")]
    pub admin_password: Option<SecretString>,

    /// Where the notifier runs.
    #[arg(long, env = "TICKETING_NOTIFIER", value_enum, default_value_t = NotifierMode::InProcess)]
    pub notifier: NotifierMode,

    /// How long a hold lasts unless paid, for example `10m`.
    #[arg(long, env = "TICKETING_HOLD_TTL", default_value = "10m", value_parser = humantime::parse_duration)]
    pub hold_ttl: Duration,

    /// Email delivery of the in-process notifier.
    #[command(flatten)]
    pub smtp: SmtpSettings,

    /// Run production mode on the simulated payment provider (which gives tickets away for
    /// the test token `tok_success`): for a staging deployment only. Production mode
    /// refuses to start on it otherwise.
    #[arg(long, env = "TICKETING_ALLOW_SIMULATED_PAYMENTS")]
    pub allow_simulated_payments: bool,
}

/// The shortest ticket-code key accepted in production mode, in bytes (256 bits).
pub const MIN_PRODUCTION_TICKET_CODE_KEY_LEN: usize = 32;

impl AppConfig {
    /// The defaults around a data directory and address.
    pub fn new(data_dir: impl Into<PathBuf>, addr: SocketAddr) -> Self {
        Self {
            service: ServiceConfig {
                data_dir: data_dir.into(),
                addr,
                ..ServiceConfig::default()
            },
            ticket_code_key: None,
            admin_email: None,
            admin_password: None,
            notifier: NotifierMode::InProcess,
            hold_ttl: Duration::from_secs(600),
            smtp: SmtpSettings::default(),
            allow_simulated_payments: false,
        }
    }
}

impl AppConfig {
    /// Checks the settings together: the service's (see [`ServiceConfig::validate`]), and in
    /// production mode a ticket-code key of at least
    /// [`MIN_PRODUCTION_TICKET_CODE_KEY_LEN`] bytes and a real payment provider (or the
    /// explicit `--allow-simulated-payments`).
    pub fn validate(&self) -> anyhow::Result<()> {
        self.service.validate()?;
        if self.hold_ttl < MIN_HOLD_TTL || self.hold_ttl > MAX_HOLD_TTL {
            anyhow::bail!(
                "the hold TTL (--hold-ttl) must be between {} and {}, got {}",
                humantime::format_duration(MIN_HOLD_TTL),
                humantime::format_duration(MAX_HOLD_TTL),
                humantime::format_duration(self.hold_ttl)
            );
        }
        if !self.service.production {
            return Ok(());
        }
        match &self.ticket_code_key {
            None => anyhow::bail!(
                "production mode needs a ticket-code key (--ticket-code-key or TICKETING_TICKET_CODE_KEY)"
            ),
            Some(key)
                if key.expose_secret().len() < MIN_PRODUCTION_TICKET_CODE_KEY_LEN
                    || key.expose_secret() == DEV_TICKET_CODE_KEY =>
            {
                anyhow::bail!(
                    "the ticket-code key must be at least {MIN_PRODUCTION_TICKET_CODE_KEY_LEN} \
                     bytes of secret in production mode (a short key lets codes be forged)"
                )
            }
            Some(_) => {}
        }
        if !self.allow_simulated_payments {
            anyhow::bail!(
                "production mode refuses the simulated payment provider, which gives tickets away \
                 for the test token tok_success; no real provider is configured. For a staging \
                 deployment, allow it explicitly with --allow-simulated-payments \
                 (TICKETING_ALLOW_SIMULATED_PAYMENTS)"
            );
        }
        tracing::warn!(
            "production mode on the SIMULATED payment provider (--allow-simulated-payments): \
             tickets are given away for test tokens"
        );
        Ok(())
    }
}

/// The shortest hold accepted (load tests use holds of seconds to see them expire).
pub const MIN_HOLD_TTL: Duration = Duration::from_secs(1);
/// The longest hold accepted (the domain refuses longer ones).
pub const MAX_HOLD_TTL: Duration = Duration::from_secs(24 * 3600);

fn parse_secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

/// The event store the configuration names: KurrentDB when a URL is given, otherwise the
/// embedded store in the data directory. `read_only` opens the embedded store beside a
/// running server (for the notifier as its own process).
pub fn open_store(config: &ServiceConfig, read_only: bool) -> anyhow::Result<Arc<dyn EventStore>> {
    if let Some(url) = &config.kurrentdb_url {
        let store =
            store_kurrentdb::KurrentDbStore::connect(url).context("connecting to KurrentDB")?;
        return Ok(Arc::new(store));
    }
    let dir = &config.data_dir;
    secure_data_dir(dir)?;
    let options = store::sqlite::SqliteOptions::default();
    let store = if read_only {
        store::sqlite::SqliteStore::open_read_only(dir, options)
    } else {
        store::sqlite::SqliteStore::open(dir, options)
    }
    .with_context(|| format!("opening the event store in {}", dir.display()))?;
    Ok(Arc::new(store))
}

/// Creates the data directory if needed and makes it the owner's alone (mode 0700 on
/// Unix): its files hold password hashes, webhook secrets and ticket secrets, and no file
/// created in it is then reachable by another user, whatever its own mode.
pub fn secure_data_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating the data directory {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("making {} private to its owner", dir.display()))?;
    }
    Ok(())
}

/// Makes every file in the data directory readable and writable by its owner only (mode
/// 0600 on Unix), in case the directory is ever copied or its mode widened.
pub fn restrict_data_files(dir: &Path) -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        let entries = std::fs::read_dir(dir)
            .with_context(|| format!("listing the data directory {}", dir.display()))?;
        for entry in entries {
            let entry = entry?;
            if entry.file_type()?.is_file() {
                std::fs::set_permissions(entry.path(), std::fs::Permissions::from_mode(0o600))
                    .with_context(|| format!("restricting {}", entry.path().display()))?;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

/// Finds an order's event on the read side, for payment webhooks of orders this process
/// did not charge (for example after a restart).
struct ReadSideLocator(Arc<ReadSide>);

#[async_trait]
impl OrderLocator for ReadSideLocator {
    async fn event_of_order(&self, order: OrderId) -> Option<EventId> {
        self.0.orders().order(order).map(|o| o.event_id)
    }
}

/// The running system, bound to its listener and ready to serve.
pub struct Application {
    /// The bound listener (port 0 resolved).
    listener: TcpListener,
    /// Its address.
    local_addr: SocketAddr,
    /// The HTTP service over the schema.
    http: HttpService,
    /// What resolvers use; kept to shut the parts down in order.
    services: Arc<Services>,
    /// The in-process notifier, unless it runs elsewhere.
    notifier: Option<NotifierHandle>,
    /// How long shutdown waits for in-flight commands.
    grace: Duration,
}

impl Application {
    /// Opens the store, starts every part and binds the listener.
    pub async fn build(config: AppConfig) -> anyhow::Result<Self> {
        config.validate()?;
        let listener = TcpListener::bind(config.service.addr)
            .await
            .with_context(|| format!("binding {}", config.service.addr))?;
        let local_addr = listener.local_addr()?;

        let store = open_store(&config.service, false)?;
        let clock = Arc::new(SystemClock);
        let webhook_secret = config
            .service
            .payment_webhook_secret
            .as_ref()
            .map(|s| s.expose_secret().to_owned())
            .unwrap_or_else(|| DEV_PAYMENT_WEBHOOK_SECRET.to_owned());
        // The simulated provider reaches us as a real one would: signed POSTs to our own
        // webhook route.
        let sink = HttpSink::new(format!("http://{}/webhooks/payments", loopback(local_addr)))
            .map_err(|e| anyhow::anyhow!("payment webhook sink: {e}"))?;
        let data_dir = &config.service.data_dir;
        secure_data_dir(data_dir)?;
        let payments = Arc::new(
            SimulatedProvider::open(
                SimulatorConfig::new(webhook_secret.clone().into_bytes()),
                Arc::new(sink),
                data_dir.join(PAYMENTS_DB),
            )
            .context("opening the simulated payment provider's ledger")?,
        );
        let commands = CommandService::start(
            Arc::clone(&store),
            clock.clone(),
            payments,
            CommandConfig {
                hold_ttl: chrono::Duration::from_std(config.hold_ttl)
                    .context("hold TTL out of range")?,
                ..CommandConfig::default()
            },
        )
        .await
        .map_err(|e| anyhow::anyhow!("starting the command side: {e}"))?;
        let snapshot_dir = config
            .service
            .kurrentdb_url
            .is_none()
            .then(|| config.service.data_dir.clone());
        let read_side = Arc::new(
            ReadSide::start(
                Arc::clone(&store),
                ReadSideOptions {
                    snapshot_dir,
                    ..ReadSideOptions::default()
                },
            )
            .context("starting the read side")?,
        );
        commands.set_order_locator(Arc::new(ReadSideLocator(Arc::clone(&read_side))));

        let notifier = match config.notifier {
            NotifierMode::InProcess => Some(
                Notifier::start(
                    config
                        .smtp
                        .notifier_config(config.service.data_dir.join(NOTIFIER_DB)),
                    Arc::clone(&store),
                )
                .await
                .context("starting the notifier")?,
            ),
            NotifierMode::Off => None,
        };

        // Roles come from the accounts read model at every request, so that a revoked
        // role stops working at once rather than when the token expires.
        let jwt = Arc::new(
            JwtCodec::from_config(&config.service).with_current_account({
                let read_side = Arc::clone(&read_side);
                Arc::new(move |user| {
                    read_side
                        .accounts()
                        .current(domain::UserId(user))
                        .map(|(roles, session)| {
                            (
                                roles.into_iter().map(crate::auth::Role::from).collect(),
                                session,
                            )
                        })
                })
            }),
        );
        let ticket_key = config
            .ticket_code_key
            .as_ref()
            .map(|k| k.expose_secret().to_owned())
            .unwrap_or_else(|| DEV_TICKET_CODE_KEY.to_owned());
        let services = Arc::new(Services {
            commands: commands.clone(),
            accounts: AccountService::new(Arc::clone(&store), clock),
            store: Arc::clone(&store),
            read_side: Arc::clone(&read_side),
            notifications: notifier.as_ref().map(NotifierHandle::notifications),
            jwt: Arc::clone(&jwt),
            passwords: PasswordHasher::default(),
            ticket_codes: TicketCodeSigner::new(ticket_key.as_bytes()),
            read_your_writes_timeout: Duration::from_secs(10),
            live_update_interval: config.service.live_update_interval,
            hold_limits: crate::hold_limits::HoldLimits::new(
                config.service.max_held_tickets_per_user,
                config.service.max_held_tickets_per_address,
            ),
            hold_ttl: config.hold_ttl,
        });

        // Everything recorded before this start must be in the read models before an
        // administrator is looked up by email, and before the service says it is ready.
        read_side
            .catch_up(Duration::from_secs(300))
            .await
            .context("catching the read side up with the store")?;
        if let (Some(email), Some(password)) = (&config.admin_email, &config.admin_password) {
            let ensured = ensure_admin(
                &services.accounts,
                &services.read_side,
                &services.passwords,
                email,
                password,
                ExistingAccount::RequirePassword,
            )
            .await
            .with_context(|| format!("creating the administrator {email}"));
            if let Err(error) = ensured {
                // Release what was started (the store's lock above all), so the data
                // directory can be opened again at once.
                commands.shutdown(config.service.shutdown_grace).await;
                if let Some(notifier) = notifier {
                    notifier.shutdown().await;
                }
                read_side.shutdown().await;
                store.shutdown().await;
                return Err(error);
            }
        }
        tokio::spawn(report_projection_lag(
            Arc::clone(&store),
            Arc::clone(&read_side),
        ));
        // Holds recorded before a restart must still expire on time, cancellations go on
        // and refunds still owed are paid; then the provider's books are reconciled with
        // the orders, so a charge the last run never confirmed is settled.
        let resumer = commands.clone();
        tokio::spawn(async move {
            match resumer.resume_all().await {
                Ok(count) => tracing::info!(events = count, "inventory actors resumed"),
                Err(error) => tracing::error!(%error, "resuming inventory actors failed"),
            }
            resumer.spawn_reconciliation(RECONCILIATION_INTERVAL);
        });

        let schema = schema::build(
            Arc::clone(&services),
            SchemaLimits::from_config(&config.service),
        );
        let http = HttpService::builder(
            schema,
            jwt,
            Arc::new(RateLimits::from_config(&config.service)),
            HttpOptions::from_config(&config.service),
        )
        .payment_webhook(webhook_handler(
            commands,
            webhook_secret,
            config.service.body_limit,
        ))
        .routes(printable::router(Arc::clone(&services)))
        .build()?;
        // Every file is open by now (SQLite gives its journals the database's mode).
        restrict_data_files(&config.service.data_dir)?;
        http.readiness().set_ready(true);

        Ok(Self {
            listener,
            local_addr,
            http,
            services,
            notifier,
            grace: config.service.shutdown_grace,
        })
    }

    /// The port the service listens on.
    pub fn port(&self) -> u16 {
        self.local_addr.port()
    }

    /// The address the service listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Serves until `shutdown` completes, then stops in order: HTTP (in-flight requests
    /// finish, subscribers are closed), the inventory actors (in-flight commands finish),
    /// the notifier, and the read side (writing its final snapshots).
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let served = self.http.serve(self.listener, shutdown).await;
        self.services.commands.shutdown(self.grace).await;
        if let Some(notifier) = self.notifier {
            notifier.shutdown().await;
        }
        self.services.read_side.shutdown().await;
        // Releases the embedded store's writer lock, so the data directory can be opened
        // again at once (by a restart in the same process, or another process).
        self.services.store.shutdown().await;
        served.context("serving HTTP")?;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Completes on Ctrl-C or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if let Err(error) = tokio::signal::ctrl_c().await {
            tracing::error!(%error, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::error!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => tracing::info!("Ctrl-C received, shutting down"),
        () = terminate => tracing::info!("SIGTERM received, shutting down"),
    }
}

/// The address to reach a listener bound to `addr` from this machine.
fn loopback(addr: SocketAddr) -> SocketAddr {
    match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv4Addr::LOCALHOST.into(), addr.port())
        }
        IpAddr::V6(ip) if ip.is_unspecified() => {
            SocketAddr::new(Ipv6Addr::LOCALHOST.into(), addr.port())
        }
        _ => addr,
    }
}

/// `POST /webhooks/payments`: verifies the provider's signature and timestamp over the
/// raw body, drops a delivery already processed, and hands the event to the command side.
fn webhook_handler(
    commands: CommandService,
    secret: String,
    body_limit: usize,
) -> impl Fn(
    HeaderMap,
    Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> std::pin::Pin<Box<dyn Future<Output = axum::response::Response> + Send>>
+ Clone
+ Send
+ Sync
+ 'static {
    let secret = Arc::new(secret);
    let replays = Arc::new(ReplayGuard::new(100_000));
    move |headers: HeaderMap, body: Result<Bytes, axum::extract::rejection::BytesRejection>| {
        let commands = commands.clone();
        let secret = Arc::clone(&secret);
        let replays = Arc::clone(&replays);
        Box::pin(async move {
            // Refused bodies answer like every other error: JSON with a code.
            let body = match body {
                Ok(body) => body,
                Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                    return ApiError::PayloadTooLarge { limit: body_limit }.into_response();
                }
                Err(rejection) => {
                    return ApiError::invalid_input(format!(
                        "could not read the webhook body: {rejection}"
                    ))
                    .into_response();
                }
            };
            let header = headers
                .get(signature::SIGNATURE_HEADER)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            let now = chrono::Utc::now().timestamp();
            let event = match payments::parse_webhook(
                &[secret.as_bytes()],
                header,
                &body,
                now,
                WEBHOOK_TOLERANCE_SECS,
            ) {
                Ok(event) => event,
                Err(error) => {
                    tracing::warn!(code = error.code(), %error, "payment webhook refused");
                    return ApiError::domain(error.code(), error.to_string()).into_response();
                }
            };
            if !replays.first_time(&event.id) {
                return (
                    StatusCode::OK,
                    Json(serde_json::json!({"status": "duplicate"})),
                )
                    .into_response();
            }
            // Until the event is handled, the provider's retry must be processed: after a
            // failure, and also when the request's time limit drops this future.
            let mut claim = ReplayClaim {
                replays: &replays,
                event_id: &event.id,
                handled: false,
            };
            match commands.handle_payment_webhook(&event).await {
                Ok(receipt) => {
                    claim.handled = true;
                    tracing::info!(webhook = %event.id, outcome = ?receipt.outcome, "payment webhook processed");
                    (
                        StatusCode::OK,
                        Json(serde_json::json!({"status": "processed"})),
                    )
                        .into_response()
                }
                Err(error) => {
                    tracing::warn!(webhook = %event.id, code = error.code(), %error, "payment webhook failed");
                    schema::command_error(error).into_response()
                }
            }
        })
    }
}

/// A webhook event id taken in the replay guard, forgotten again when dropped unless the
/// event was handled.
struct ReplayClaim<'a> {
    /// Where the id was taken.
    replays: &'a ReplayGuard,
    /// The event's id.
    event_id: &'a str,
    /// Set once the command side has handled the event.
    handled: bool,
}

impl Drop for ReplayClaim<'_> {
    fn drop(&mut self) {
        if !self.handled {
            self.replays.forget(self.event_id);
        }
    }
}

/// The data directory's notifier database path.
pub fn notifier_db(data_dir: &Path) -> PathBuf {
    data_dir.join(NOTIFIER_DB)
}

/// What [`ensure_admin`] does when an account with the email exists but is no admin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExistingAccount {
    /// Promote it only if the given password is that account's: whoever registered the
    /// email first must not become an administrator because an operator configured it.
    RequirePassword,
    /// Promote it whatever its password (an operator's explicit choice, on a stopped
    /// system).
    Promote,
}

/// Makes `email` an administrator: registers the account (with `password`) when no
/// account has that email; when one exists and is no admin, promotes it as `existing`
/// says. Safe to run at every start.
pub async fn ensure_admin(
    accounts: &AccountService,
    read_side: &ReadSide,
    passwords: &PasswordHasher,
    email: &str,
    password: &SecretString,
    existing: ExistingAccount,
) -> anyhow::Result<domain::UserId> {
    use domain::{account::AccountCommand, account::AccountOutcome, aggregate::Actor};
    let admin = domain::aggregate::Role::Admin;
    let fail = |e: ApiError| anyhow::anyhow!("{}: {e}", e.code());
    if let Some(account) = read_side.accounts().by_email(email) {
        if !account.roles.contains(&admin) {
            if existing == ExistingAccount::RequirePassword
                && !passwords
                    .verify(password, Some(&account.password_hash))
                    .await
                    .map_err(fail)?
            {
                anyhow::bail!(
                    "an account with the email {email} already exists and the configured \
                     password is not its password: refusing to make it an administrator \
                     (log in as it and use its password, choose another email, or promote it \
                     on the stopped system with `ticketing admin create --promote-existing`)"
                );
            }
            let request =
                commands::RequestContext::new(Actor::System, uuid::Uuid::new_v4().to_string());
            let receipt = accounts
                .execute(
                    &request,
                    account.user_id,
                    AccountCommand::GrantRole { role: admin },
                )
                .await
                .map_err(|e| fail(schema::command_error(e)))?;
            wait(read_side, receipt.position).await?;
        }
        return Ok(account.user_id);
    }
    let password_hash = passwords.hash(password).await.map_err(fail)?;
    let request = commands::RequestContext::new(
        Actor::System,
        format!("bootstrap-admin:{}", email.trim().to_lowercase()),
    );
    let receipt = accounts
        .register(
            &request,
            commands::Registration {
                email: email.to_owned(),
                display_name: "Administrator".to_owned(),
                password_hash,
                roles: vec![admin],
            },
        )
        .await
        .map_err(|e| fail(schema::command_error(e)))?;
    wait(read_side, receipt.position).await?;
    match receipt.outcome {
        AccountOutcome::Registered { user_id, .. } => Ok(user_id),
        other => anyhow::bail!("registration answered {other:?}"),
    }
}

async fn wait(read_side: &ReadSide, position: store::Position) -> anyhow::Result<()> {
    read_side
        .wait_for(position, Duration::from_secs(30))
        .await
        .map_err(|e| anyhow::anyhow!("the read side did not show the change: {e}"))
}

/// How often the payment provider's books are reconciled with the orders.
const RECONCILIATION_INTERVAL: Duration = Duration::from_secs(300);

/// How often the projection lag gauge is refreshed.
const LAG_REPORT_INTERVAL: Duration = Duration::from_secs(5);

/// Publishes `projection_lag_events{projection}`: how many stored events each read model
/// has yet to apply. Ends when the read side is gone.
async fn report_projection_lag(store: Arc<dyn EventStore>, read_side: Arc<ReadSide>) {
    let read_side = Arc::downgrade(&read_side);
    let mut ticks = tokio::time::interval(LAG_REPORT_INTERVAL);
    loop {
        ticks.tick().await;
        let Some(read_side) = read_side.upgrade() else {
            return;
        };
        let Ok(head) = store.head().await else {
            continue;
        };
        for status in read_side.status() {
            metrics::gauge!("projection_lag_events", "projection" => status.name)
                .set(head.0.saturating_sub(status.checkpoint.0) as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn production() -> AppConfig {
        let mut config = AppConfig::new("./data", "127.0.0.1:0".parse().expect("addr"));
        config.service.production = true;
        config.service.jwt_secret = SecretString::from("j".repeat(32));
        config.service.payment_webhook_secret = Some(SecretString::from("w".repeat(32)));
        config.ticket_code_key = Some(SecretString::from("t".repeat(32)));
        config.allow_simulated_payments = true;
        config
    }

    /// Production mode refuses each development default that would let someone forge a
    /// payment, a ticket or get tickets free.
    #[test]
    fn production_refuses_public_secrets_short_keys_and_free_payments() {
        production()
            .validate()
            .expect("a complete production configuration");
        let refused = |change: fn(&mut AppConfig)| {
            let mut config = production();
            change(&mut config);
            config.validate().expect_err("refused").to_string()
        };
        // No webhook secret: webhooks would be checked against the public one.
        assert!(refused(|c| c.service.payment_webhook_secret = None).contains("webhook secret"));
        // A short ticket-code key, or the public one.
        assert!(
            refused(|c| c.ticket_code_key = Some(SecretString::from("short")))
                .contains("ticket-code key")
        );
        assert!(
            refused(|c| c.ticket_code_key = Some(SecretString::from(DEV_TICKET_CODE_KEY)))
                .contains("ticket-code key")
        );
        assert!(refused(|c| c.ticket_code_key = None).contains("ticket-code key"));
        // The simulated provider, unless explicitly allowed.
        assert!(refused(|c| c.allow_simulated_payments = false).contains("simulated"));
        // Development mode keeps its defaults.
        let mut development = production();
        development.service.production = false;
        development.service.payment_webhook_secret = None;
        development.ticket_code_key = None;
        development.allow_simulated_payments = false;
        development.validate().expect("development defaults");
    }

    #[test]
    fn hold_ttl_is_bounded() {
        let mut config = AppConfig::new("./data", "127.0.0.1:0".parse().expect("addr"));
        config.hold_ttl = Duration::from_secs(25 * 3600);
        assert!(config.validate().is_err());
        config.hold_ttl = Duration::ZERO;
        assert!(config.validate().is_err());
        config.hold_ttl = Duration::from_secs(24 * 3600);
        config.validate().expect("a day");
    }

    #[test]
    fn a_webhook_claim_is_given_back_unless_the_event_was_handled() {
        let replays = ReplayGuard::new(16);
        assert!(replays.first_time("evt_dropped"));
        // Dropped unhandled, as when the request's time limit drops the handler.
        drop(ReplayClaim {
            replays: &replays,
            event_id: "evt_dropped",
            handled: false,
        });
        assert!(replays.first_time("evt_dropped"), "the retry is processed");

        assert!(replays.first_time("evt_handled"));
        drop(ReplayClaim {
            replays: &replays,
            event_id: "evt_handled",
            handled: true,
        });
        assert!(
            !replays.first_time("evt_handled"),
            "a redelivery is a duplicate"
        );
    }
}
