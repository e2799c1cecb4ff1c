//! Service configuration: every setting is a command-line flag with a `TICKETING_*`
//! environment variable behind it, so the `ticketing serve` command can flatten
//! [`ServiceConfig`] into its own arguments.
//!
//! Parsing only checks each value's shape; [`ServiceConfig::validate`] checks the
//! settings together (for example, that production mode does not run on the development
//! JWT secret) and reports every problem at once.

use std::{fmt, net::SocketAddr, num::NonZeroU32, path::PathBuf, str::FromStr, time::Duration};

use clap::{Args, ValueEnum};
use secrecy::{ExposeSecret, SecretString};

/// The JWT signing secret used when none is configured.
///
/// It is public (it is in this source file), so tokens signed with it prove nothing:
/// [`ServiceConfig::validate`] refuses it in production mode.
pub const DEV_JWT_SECRET: &str = "ticketing-development-secret-not-for-production";

/// The shortest secret (in bytes) accepted in production mode: 256 bits, the output size
/// of the HS256 MAC, so the key is not the weakest link.
pub const MIN_PRODUCTION_SECRET_LEN: usize = 32;

/// The largest request body limit accepted, in bytes: GraphQL requests are small, and a
/// larger limit only widens the door for memory exhaustion.
pub const MAX_BODY_LIMIT: usize = 16 * 1024 * 1024;

/// The default of `--request-timeout`: longer than the command side's wait for the payment
/// provider (10 s), so a slow payment is answered as such rather than cut short.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// The longest `--request-timeout` accepted.
pub const MAX_REQUEST_TIMEOUT: Duration = Duration::from_secs(600);

/// The default of `--max-websocket-connections`: each connection costs a task, buffers
/// and a file descriptor; ten thousand fit in the descriptor limits containers usually
/// get (an operator who raises this raises those too).
pub const DEFAULT_MAX_WEBSOCKET_CONNECTIONS: usize = 10_000;

/// The largest `--max-websocket-connections` accepted.
pub const MAX_WEBSOCKET_CONNECTIONS: usize = 1_000_000;

/// The default of `--max-websocket-connections-per-address`: a browser keeps one or two
/// per tab; a hundred leaves room for a household or an office behind one address, while
/// one machine cannot take every slot of the server.
pub const DEFAULT_MAX_WEBSOCKET_CONNECTIONS_PER_ADDRESS: usize = 100;

/// The default of `--max-held-tickets-per-user`: a family's or a group's order, well above
/// what one person buys, far below what hoarding a sale takes.
pub const DEFAULT_MAX_HELD_TICKETS_PER_USER: u32 = 20;

/// The default of `--max-held-tickets-per-address`: several buyers behind one address (a
/// household, an office) each holding a group's order; far below what keeping a sale at
/// zero takes.
pub const DEFAULT_MAX_HELD_TICKETS_PER_ADDRESS: u32 = 100;

/// The default of `--live-update-interval`: a subscriber sees a hot event's counts move
/// twenty times a second, well within what a person notices, instead of once per batch of
/// sales (hundreds a second), each serialised and sent to every subscriber.
pub const DEFAULT_LIVE_UPDATE_INTERVAL: Duration = Duration::from_millis(50);

/// The longest `--live-update-interval` accepted.
pub const MAX_LIVE_UPDATE_INTERVAL: Duration = Duration::from_secs(10);

/// Configuration of the HTTP/GraphQL service.
///
/// Every field is a flag (`--addr`) and an environment variable (`TICKETING_ADDR`); a flag
/// wins over the variable. Secrets never appear in `--help` or in `Debug` output.
#[derive(Debug, Clone, Args)]
pub struct ServiceConfig {
    /// Address to listen on.
    #[arg(long, env = "TICKETING_ADDR", default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,

    /// Directory of the embedded event store and other local state.
    #[arg(long, env = "TICKETING_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// KurrentDB connection string; when set, it replaces the embedded store.
    #[arg(long, env = "TICKETING_KURRENTDB_URL")]
    pub kurrentdb_url: Option<String>,

    /// Secret that signs and verifies JWTs (HS256). Required in production.
    #[arg(
        long,
        env = "TICKETING_JWT_SECRET",
        default_value = DEV_JWT_SECRET,
        hide_default_value = true,
        hide_env_values = true,
        value_parser = parse_secret,
    )]
    pub jwt_secret: SecretString,

    /// Issuer (`iss`) written into and required from every JWT.
    #[arg(long, env = "TICKETING_JWT_ISSUER", default_value = "ticketing")]
    pub jwt_issuer: String,

    /// How long an issued JWT stays valid, for example `15m`, `1h` or `7d`.
    #[arg(long, env = "TICKETING_JWT_EXPIRY", default_value = "1h", value_parser = humantime::parse_duration)]
    pub jwt_expiry: Duration,

    /// Origins allowed to call the API from a browser (comma separated), or `*` for any.
    /// None by default: only same-origin pages may call it.
    #[arg(
        long = "cors-origin",
        env = "TICKETING_CORS_ORIGINS",
        value_delimiter = ','
    )]
    pub cors_origins: Vec<String>,

    /// Largest accepted request body, in bytes.
    #[arg(long, env = "TICKETING_BODY_LIMIT", default_value_t = 256 * 1024)]
    pub body_limit: usize,

    /// Deepest selection-set nesting a query may have.
    #[arg(long, env = "TICKETING_MAX_QUERY_DEPTH", default_value_t = 16)]
    pub max_query_depth: usize,

    /// Highest complexity (roughly, the number of fields resolved) a query may have.
    #[arg(long, env = "TICKETING_MAX_QUERY_COMPLEXITY", default_value_t = 2_000)]
    pub max_query_complexity: usize,

    /// Login attempts allowed per email address tried, as `N/s`, `N/min` or `N/h`.
    #[arg(long, env = "TICKETING_LOGIN_RATE", default_value = "10/min")]
    pub login_rate: RateSpec,

    /// Login attempts allowed per client address, whatever emails they try.
    #[arg(long, env = "TICKETING_LOGIN_ADDRESS_RATE", default_value = "60/min")]
    pub login_address_rate: RateSpec,

    /// Registrations and password changes (each costs a password hash) allowed per client
    /// address.
    #[arg(long, env = "TICKETING_REGISTER_RATE", default_value = "30/h")]
    pub register_rate: RateSpec,

    /// Purchase attempts (holds, payments) allowed per client, as `N/s`, `N/min` or `N/h`.
    #[arg(long, env = "TICKETING_PURCHASE_RATE", default_value = "30/min")]
    pub purchase_rate: RateSpec,

    /// Most tickets one user may have in unpaid holds at once, over all events.
    #[arg(long, env = "TICKETING_MAX_HELD_TICKETS_PER_USER", default_value_t = DEFAULT_MAX_HELD_TICKETS_PER_USER)]
    pub max_held_tickets_per_user: u32,

    /// Most tickets the users of one client address may have in unpaid holds at once.
    #[arg(long, env = "TICKETING_MAX_HELD_TICKETS_PER_ADDRESS", default_value_t = DEFAULT_MAX_HELD_TICKETS_PER_ADDRESS)]
    pub max_held_tickets_per_address: u32,

    /// Log line format.
    #[arg(long, env = "TICKETING_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Log filter in `tracing` env-filter syntax, for example `info,api=debug`.
    #[arg(long, env = "TICKETING_LOG", default_value = "info")]
    pub log_filter: String,

    /// Production mode: refuses development defaults such as the built-in JWT secret.
    #[arg(long, env = "TICKETING_PRODUCTION")]
    pub production: bool,

    /// Secret that authenticates payment provider webhooks (HMAC).
    #[arg(
        long,
        env = "TICKETING_PAYMENT_WEBHOOK_SECRET",
        hide_env_values = true,
        value_parser = parse_secret,
    )]
    pub payment_webhook_secret: Option<SecretString>,

    /// Take the client address for rate limiting from the last `X-Forwarded-For` entry.
    /// Enable only behind a proxy that sets that header; otherwise clients can forge it.
    #[arg(long, env = "TICKETING_TRUST_FORWARDED_FOR")]
    pub trust_forwarded_for: bool,

    /// How long a graceful shutdown waits for in-flight requests and subscribers.
    #[arg(long, env = "TICKETING_SHUTDOWN_GRACE", default_value = "30s", value_parser = humantime::parse_duration)]
    pub shutdown_grace: Duration,

    /// Longest time an HTTP request may take, body upload included, before it is answered
    /// `TIMEOUT` (503). WebSocket subscriptions are not limited.
    #[arg(long, env = "TICKETING_REQUEST_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub request_timeout: Duration,

    /// Most WebSocket subscription connections (`/graphql/ws`) served at once; beyond it
    /// an upgrade is refused with 503 and `TOO_MANY_CONNECTIONS`.
    #[arg(long, env = "TICKETING_MAX_WEBSOCKET_CONNECTIONS", default_value_t = DEFAULT_MAX_WEBSOCKET_CONNECTIONS)]
    pub max_websocket_connections: usize,

    /// Most WebSocket connections one client address may have open at once; beyond it an
    /// upgrade is refused with 429 and `TOO_MANY_CONNECTIONS`.
    #[arg(long, env = "TICKETING_MAX_WEBSOCKET_CONNECTIONS_PER_ADDRESS", default_value_t = DEFAULT_MAX_WEBSOCKET_CONNECTIONS_PER_ADDRESS)]
    pub max_websocket_connections_per_address: usize,

    /// How long a WebSocket may stay open before its `connection_init`; then it is closed
    /// with 4408.
    #[arg(long, env = "TICKETING_WEBSOCKET_INIT_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub websocket_init_timeout: Duration,

    /// How long a WebSocket may stay open with no operation running and no message from
    /// its client; then it is closed (1000).
    #[arg(long, env = "TICKETING_WEBSOCKET_IDLE_TIMEOUT", default_value = "2m", value_parser = humantime::parse_duration)]
    pub websocket_idle_timeout: Duration,

    /// Least time between two `seatAvailability` updates to one subscriber: changes in
    /// between are folded into the next update, which always carries the latest counts.
    /// `0s` sends every change.
    #[arg(long, env = "TICKETING_LIVE_UPDATE_INTERVAL", default_value = "50ms", value_parser = humantime::parse_duration)]
    pub live_update_interval: Duration,
}

impl Default for ServiceConfig {
    /// The documented defaults, without reading flags or the environment.
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            kurrentdb_url: None,
            jwt_secret: SecretString::from(DEV_JWT_SECRET),
            jwt_issuer: "ticketing".to_owned(),
            jwt_expiry: Duration::from_secs(3600),
            cors_origins: Vec::new(),
            body_limit: 256 * 1024,
            max_query_depth: 16,
            max_query_complexity: 2_000,
            login_rate: RateSpec::per(NonZeroU32::new(10).expect("non-zero"), RatePeriod::Minute),
            login_address_rate: RateSpec::per(
                NonZeroU32::new(60).expect("non-zero"),
                RatePeriod::Minute,
            ),
            register_rate: RateSpec::per(NonZeroU32::new(30).expect("non-zero"), RatePeriod::Hour),
            purchase_rate: RateSpec::per(
                NonZeroU32::new(30).expect("non-zero"),
                RatePeriod::Minute,
            ),
            max_held_tickets_per_user: DEFAULT_MAX_HELD_TICKETS_PER_USER,
            max_held_tickets_per_address: DEFAULT_MAX_HELD_TICKETS_PER_ADDRESS,
            log_format: LogFormat::Text,
            log_filter: "info".to_owned(),
            production: false,
            payment_webhook_secret: None,
            trust_forwarded_for: false,
            shutdown_grace: Duration::from_secs(30),
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_websocket_connections: DEFAULT_MAX_WEBSOCKET_CONNECTIONS,
            max_websocket_connections_per_address: DEFAULT_MAX_WEBSOCKET_CONNECTIONS_PER_ADDRESS,
            websocket_init_timeout: Duration::from_secs(10),
            websocket_idle_timeout: Duration::from_secs(120),
            live_update_interval: DEFAULT_LIVE_UPDATE_INTERVAL,
        }
    }
}

impl ServiceConfig {
    /// Checks the settings together; lists every problem found.
    pub fn validate(&self) -> Result<(), InvalidConfig> {
        let mut problems = Vec::new();
        let secret = self.jwt_secret.expose_secret();

        if secret.is_empty() {
            problems.push(ConfigProblem::EmptyJwtSecret);
        } else if self.production && secret == DEV_JWT_SECRET {
            problems.push(ConfigProblem::DevJwtSecretInProduction);
        } else if self.production && secret.len() < MIN_PRODUCTION_SECRET_LEN {
            problems.push(ConfigProblem::WeakJwtSecret);
        }
        if self.jwt_issuer.trim().is_empty() {
            problems.push(ConfigProblem::EmptyJwtIssuer);
        }
        if self.jwt_expiry < Duration::from_secs(60)
            || self.jwt_expiry > Duration::from_secs(30 * 24 * 3600)
        {
            problems.push(ConfigProblem::JwtExpiryOutOfRange(self.jwt_expiry));
        }
        match &self.payment_webhook_secret {
            Some(webhook) => {
                let webhook = webhook.expose_secret();
                if webhook.is_empty()
                    || (self.production && webhook.len() < MIN_PRODUCTION_SECRET_LEN)
                {
                    problems.push(ConfigProblem::WeakWebhookSecret);
                }
            }
            // Without one, webhooks are checked against the public development secret:
            // anyone could forge a payment.
            None if self.production => problems.push(ConfigProblem::MissingWebhookSecret),
            None => {}
        }
        if self.max_held_tickets_per_user == 0 || self.max_held_tickets_per_address == 0 {
            problems.push(ConfigProblem::HeldTicketsCapZero);
        }
        if self.max_websocket_connections_per_address == 0 {
            problems.push(ConfigProblem::WebSocketConnectionsOutOfRange(0));
        }
        for timeout in [self.websocket_init_timeout, self.websocket_idle_timeout] {
            if timeout < Duration::from_millis(100) || timeout > Duration::from_secs(24 * 3600) {
                problems.push(ConfigProblem::WebSocketTimeoutOutOfRange(timeout));
            }
        }
        if self.body_limit < 1024 || self.body_limit > MAX_BODY_LIMIT {
            problems.push(ConfigProblem::BodyLimitOutOfRange(self.body_limit));
        }
        if self.max_query_depth == 0 || self.max_query_depth > 128 {
            problems.push(ConfigProblem::QueryDepthOutOfRange(self.max_query_depth));
        }
        if self.max_query_complexity == 0 || self.max_query_complexity > 1_000_000 {
            problems.push(ConfigProblem::QueryComplexityOutOfRange(
                self.max_query_complexity,
            ));
        }
        if let Err(problem) = validate_cors_origins(&self.cors_origins) {
            problems.push(problem);
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log_filter).is_err() {
            problems.push(ConfigProblem::InvalidLogFilter(self.log_filter.clone()));
        }
        if self.shutdown_grace > Duration::from_secs(600) {
            problems.push(ConfigProblem::ShutdownGraceTooLong(self.shutdown_grace));
        }
        if self.request_timeout < Duration::from_millis(1)
            || self.request_timeout > MAX_REQUEST_TIMEOUT
        {
            problems.push(ConfigProblem::RequestTimeoutOutOfRange(
                self.request_timeout,
            ));
        }
        if self.max_websocket_connections == 0
            || self.max_websocket_connections > MAX_WEBSOCKET_CONNECTIONS
        {
            problems.push(ConfigProblem::WebSocketConnectionsOutOfRange(
                self.max_websocket_connections,
            ));
        }
        if self.live_update_interval > MAX_LIVE_UPDATE_INTERVAL {
            problems.push(ConfigProblem::LiveUpdateIntervalTooLong(
                self.live_update_interval,
            ));
        }

        if problems.is_empty() {
            Ok(())
        } else {
            Err(InvalidConfig { problems })
        }
    }
}

/// The sender used when none is configured.
pub const DEFAULT_SMTP_FROM: &str = "Ticketing <no-reply@ticketing.invalid>";

/// SMTP settings of the notifier's email channel, shared by `ticketing serve` and
/// `ticketing notifier`.
///
/// Without a host no email is sent: email notifications wait in the notifier's outbox
/// and go out once a host is configured.
#[derive(Debug, Clone, Args)]
pub struct SmtpSettings {
    /// SMTP server host name; email is sent only when it is set.
    #[arg(long, env = "TICKETING_SMTP_HOST")]
    pub smtp_host: Option<String>,

    /// SMTP server port; by default 25, 587 or 465 for `--smtp-tls` none, starttls or tls.
    #[arg(long, env = "TICKETING_SMTP_PORT")]
    pub smtp_port: Option<u16>,

    /// Transport security: `none` (local relays only), `starttls` or `tls`.
    #[arg(long, env = "TICKETING_SMTP_TLS", default_value = "starttls", value_parser = parse_smtp_tls)]
    pub smtp_tls: SmtpTlsMode,

    /// User name for SMTP authentication, with `--smtp-password`.
    #[arg(long, env = "TICKETING_SMTP_USERNAME", requires = "smtp_password")]
    pub smtp_username: Option<String>,

    /// Password for SMTP authentication, with `--smtp-username`.
    #[arg(
        long,
        env = "TICKETING_SMTP_PASSWORD",
        hide_env_values = true,
        value_parser = parse_secret,
        requires = "smtp_username",
    )]
    pub smtp_password: Option<SecretString>,

    /// The `From` of every email, for example `Ticketing <no-reply@tickets.example>`.
    #[arg(long, env = "TICKETING_SMTP_FROM", default_value = DEFAULT_SMTP_FROM)]
    pub smtp_from: String,
}

/// The notifier's TLS mode as a flag value (a newtype, so that `Default` and clap's
/// parsing live here rather than in the notifier).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SmtpTlsMode(pub notifier::SmtpTls);

fn parse_smtp_tls(value: &str) -> Result<SmtpTlsMode, String> {
    value
        .parse::<notifier::SmtpTls>()
        .map(SmtpTlsMode)
        .map_err(|_| format!("expected none, starttls or tls, got {value:?}"))
}

impl Default for SmtpSettings {
    /// No host (email off), STARTTLS, the default sender.
    fn default() -> Self {
        Self {
            smtp_host: None,
            smtp_port: None,
            smtp_tls: SmtpTlsMode::default(),
            smtp_username: None,
            smtp_password: None,
            smtp_from: DEFAULT_SMTP_FROM.to_owned(),
        }
    }
}

impl SmtpSettings {
    /// The notifier's SMTP configuration, or `None` when no host is set.
    pub fn smtp_config(&self) -> Option<notifier::SmtpConfig> {
        let host = self.smtp_host.as_deref().map(str::trim)?;
        if host.is_empty() {
            return None;
        }
        let tls = self.smtp_tls.0;
        let port = self.smtp_port.unwrap_or(match tls {
            notifier::SmtpTls::None => 25,
            notifier::SmtpTls::StartTls => 587,
            notifier::SmtpTls::Tls => 465,
        });
        let mut config = notifier::SmtpConfig::plain(host, port, self.smtp_from.clone());
        config.tls = tls;
        config.credentials = match (&self.smtp_username, &self.smtp_password) {
            (Some(user), Some(password)) => {
                Some((user.clone(), password.expose_secret().to_owned()))
            }
            _ => None,
        };
        Some(config)
    }

    /// The notifier's configuration around its database, with these SMTP settings; says
    /// once in the log when email is off, since notifications then pile up unsent.
    pub fn notifier_config(&self, database: impl Into<PathBuf>) -> notifier::NotifierConfig {
        let mut config = notifier::NotifierConfig::new(database);
        config.smtp = self.smtp_config();
        match &config.smtp {
            Some(smtp) => tracing::info!(
                host = %smtp.host,
                port = smtp.port,
                tls = ?smtp.tls,
                "email is sent through SMTP"
            ),
            None => tracing::warn!(
                "no SMTP host configured (--smtp-host / TICKETING_SMTP_HOST): emails are kept \
                 in the outbox until a host is configured"
            ),
        }
        config
    }
}

fn validate_cors_origins(origins: &[String]) -> Result<(), ConfigProblem> {
    if origins.iter().any(|origin| origin == "*") {
        return if origins.len() == 1 {
            Ok(())
        } else {
            Err(ConfigProblem::InvalidCorsOrigin(
                "`*` must be the only origin when used".to_owned(),
            ))
        };
    }
    for origin in origins {
        if !is_valid_origin(origin) {
            return Err(ConfigProblem::InvalidCorsOrigin(origin.clone()));
        }
    }
    Ok(())
}

/// An origin as browsers send it: `scheme://host[:port]`, no path, no trailing slash.
fn is_valid_origin(origin: &str) -> bool {
    let Some((scheme, rest)) = origin.split_once("://") else {
        return false;
    };
    if !matches!(scheme, "http" | "https") {
        return false;
    }
    let (host_ok, port) = if let Some(bracketed) = rest.strip_prefix('[') {
        // An IPv6 literal: `[::1]` or `[::1]:3000`.
        let Some((address, after)) = bracketed.split_once(']') else {
            return false;
        };
        let port = match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return false,
            },
        };
        (address.parse::<std::net::Ipv6Addr>().is_ok(), port)
    } else {
        let (host, port) = match rest.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (rest, None),
        };
        let host_ok = !host.is_empty()
            && host
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-'));
        (host_ok, port)
    };
    host_ok && port.is_none_or(|port| port.parse::<u16>().is_ok())
}

fn parse_secret(value: &str) -> Result<SecretString, std::convert::Infallible> {
    Ok(SecretString::from(value))
}

/// Format of log lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log collectors.
    Json,
}

/// Every problem [`ServiceConfig::validate`] found.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid configuration: {}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
pub struct InvalidConfig {
    /// The problems, in the order of the settings.
    pub problems: Vec<ConfigProblem>,
}

/// One reason a configuration is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigProblem {
    /// The JWT secret is empty.
    #[error("the JWT secret (--jwt-secret / TICKETING_JWT_SECRET) is empty")]
    EmptyJwtSecret,
    /// Production mode with the public development secret.
    #[error(
        "production mode needs a JWT secret of its own: set --jwt-secret / TICKETING_JWT_SECRET \
         (the built-in development secret is public)"
    )]
    DevJwtSecretInProduction,
    /// Production mode with a short secret.
    #[error(
        "the JWT secret must be at least {MIN_PRODUCTION_SECRET_LEN} bytes long in production mode"
    )]
    WeakJwtSecret,
    /// The issuer is blank.
    #[error("the JWT issuer (--jwt-issuer) is empty")]
    EmptyJwtIssuer,
    /// Token lifetime outside one minute to thirty days.
    #[error("the JWT expiry must be between 1 minute and 30 days, got {}", humantime::format_duration(*.0))]
    JwtExpiryOutOfRange(Duration),
    /// The payment webhook secret is empty, or short in production mode.
    #[error(
        "the payment webhook secret must not be empty, and must be at least \
         {MIN_PRODUCTION_SECRET_LEN} bytes long in production mode"
    )]
    WeakWebhookSecret,
    /// Production mode without a payment webhook secret.
    #[error(
        "production mode needs a payment webhook secret (--payment-webhook-secret / \
         TICKETING_PAYMENT_WEBHOOK_SECRET): without one, webhooks are checked against the \
         public development secret"
    )]
    MissingWebhookSecret,
    /// A WebSocket timeout under 100 ms or over a day.
    #[error(
        "the WebSocket initialisation and idle timeouts must be between 100 ms and 24 h, got {}",
        humantime::format_duration(*.0)
    )]
    WebSocketTimeoutOutOfRange(Duration),
    /// A held-tickets cap of zero.
    #[error(
        "the held-tickets caps (--max-held-tickets-per-user, --max-held-tickets-per-address) \
         must be at least 1"
    )]
    HeldTicketsCapZero,
    /// Body limit outside 1 KiB to [`MAX_BODY_LIMIT`].
    #[error("the body limit must be between 1024 and {MAX_BODY_LIMIT} bytes, got {0}")]
    BodyLimitOutOfRange(usize),
    /// Depth limit outside 1 to 128.
    #[error("the maximum query depth must be between 1 and 128, got {0}")]
    QueryDepthOutOfRange(usize),
    /// Complexity limit outside 1 to 1,000,000.
    #[error("the maximum query complexity must be between 1 and 1000000, got {0}")]
    QueryComplexityOutOfRange(usize),
    /// A CORS origin that is not `scheme://host[:port]`.
    #[error(
        "invalid CORS origin {0:?}: expected `*` alone, or origins like https://tickets.example.com"
    )]
    InvalidCorsOrigin(String),
    /// A log filter `tracing` cannot parse.
    #[error("invalid log filter {0:?}")]
    InvalidLogFilter(String),
    /// A shutdown grace period longer than ten minutes.
    #[error("the shutdown grace period must be at most 10 minutes, got {}", humantime::format_duration(*.0))]
    ShutdownGraceTooLong(Duration),
    /// A request timeout under a millisecond or over [`MAX_REQUEST_TIMEOUT`].
    #[error(
        "the request timeout must be between 1 ms and {}, got {}",
        humantime::format_duration(MAX_REQUEST_TIMEOUT),
        humantime::format_duration(*.0)
    )]
    RequestTimeoutOutOfRange(Duration),
    /// A WebSocket connection cap of zero or over [`MAX_WEBSOCKET_CONNECTIONS`].
    #[error(
        "the maximum of WebSocket connections must be between 1 and {MAX_WEBSOCKET_CONNECTIONS}, got {0}"
    )]
    WebSocketConnectionsOutOfRange(usize),
    /// A live update interval over [`MAX_LIVE_UPDATE_INTERVAL`].
    #[error(
        "the live update interval must be at most {}, got {}",
        humantime::format_duration(MAX_LIVE_UPDATE_INTERVAL),
        humantime::format_duration(*.0)
    )]
    LiveUpdateIntervalTooLong(Duration),
}

/// A rate: how many actions a client may take per period, for example `10/min`.
///
/// The whole allowance is available at once (the burst), and it refills evenly over the
/// period.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateSpec {
    /// Actions allowed per period; also the burst size.
    pub count: NonZeroU32,
    /// The period over which `count` refills.
    pub period: RatePeriod,
}

impl RateSpec {
    /// `count` actions per `period`.
    pub const fn per(count: NonZeroU32, period: RatePeriod) -> Self {
        Self { count, period }
    }
}

/// The period of a [`RateSpec`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RatePeriod {
    /// One second.
    Second,
    /// One minute.
    Minute,
    /// One hour.
    Hour,
}

impl RatePeriod {
    /// The period's length.
    pub const fn duration(self) -> Duration {
        match self {
            Self::Second => Duration::from_secs(1),
            Self::Minute => Duration::from_secs(60),
            Self::Hour => Duration::from_secs(3600),
        }
    }
}

impl FromStr for RateSpec {
    type Err = RateSpecError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (count, period) = s.trim().split_once('/').ok_or(RateSpecError)?;
        let count: u32 = count.trim().parse().map_err(|_| RateSpecError)?;
        let count = NonZeroU32::new(count).ok_or(RateSpecError)?;
        let period = match period.trim() {
            "s" | "sec" | "second" => RatePeriod::Second,
            "m" | "min" | "minute" => RatePeriod::Minute,
            "h" | "hour" => RatePeriod::Hour,
            _ => return Err(RateSpecError),
        };
        Ok(Self { count, period })
    }
}

impl fmt::Display for RateSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let period = match self.period {
            RatePeriod::Second => "s",
            RatePeriod::Minute => "min",
            RatePeriod::Hour => "h",
        };
        write!(f, "{}/{period}", self.count)
    }
}

/// A rate that is not `N/s`, `N/min` or `N/h` with N at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("expected a rate such as 10/s, 30/min or 100/h, with a count of at least 1")]
pub struct RateSpecError;

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;
    use proptest::prelude::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        config: ServiceConfig,
    }

    fn parse(args: &[&str]) -> Result<ServiceConfig, clap::Error> {
        Cli::try_parse_from(std::iter::once("ticketing").chain(args.iter().copied()))
            .map(|cli| cli.config)
    }

    fn problems(config: &ServiceConfig) -> Vec<ConfigProblem> {
        config
            .validate()
            .err()
            .map(|e| e.problems)
            .unwrap_or_default()
    }

    #[test]
    fn defaults_match_the_flags_defaults() {
        // Only meaningful when no TICKETING_* variable is set in the test environment.
        if std::env::vars().any(|(k, _)| k.starts_with("TICKETING_")) {
            return;
        }
        let parsed = parse(&[]).expect("defaults parse");
        let default = ServiceConfig::default();
        assert_eq!(format!("{parsed:?}"), format!("{default:?}"));
        assert_eq!(parsed.jwt_secret.expose_secret(), DEV_JWT_SECRET);
        assert_eq!(parsed.addr, "127.0.0.1:8080".parse().expect("addr"));
        assert!(default.validate().is_ok());
    }

    #[test]
    fn flags_are_parsed() {
        let config = parse(&[
            "--addr",
            "0.0.0.0:9000",
            "--jwt-expiry",
            "15m",
            "--cors-origin",
            "https://a.example,http://localhost:3000",
            "--login-rate",
            "5/s",
            "--log-format",
            "json",
            "--production",
            "--jwt-secret",
            "0123456789abcdef0123456789abcdef",
            "--payment-webhook-secret",
            "fedcba9876543210fedcba9876543210",
        ])
        .expect("parses");
        assert_eq!(config.addr.port(), 9000);
        assert_eq!(config.jwt_expiry, Duration::from_secs(900));
        assert_eq!(
            config.cors_origins,
            vec!["https://a.example", "http://localhost:3000"]
        );
        assert_eq!(config.login_rate.to_string(), "5/s");
        assert_eq!(config.log_format, LogFormat::Json);
        assert!(config.production);
        assert_eq!(problems(&config), vec![]);
    }

    #[test]
    fn the_request_timeout_is_a_duration_within_bounds() {
        let config = parse(&["--request-timeout", "250ms"]).expect("parses");
        assert_eq!(config.request_timeout, Duration::from_millis(250));
        assert_eq!(problems(&config), vec![]);
        assert_eq!(
            parse(&[]).expect("parses").request_timeout,
            DEFAULT_REQUEST_TIMEOUT
        );
        assert!(parse(&["--request-timeout", "soon"]).is_err());
        for out_of_range in ["0s", "11m"] {
            let config = parse(&["--request-timeout", out_of_range]).expect("parses");
            let found = problems(&config);
            assert!(
                matches!(found[..], [ConfigProblem::RequestTimeoutOutOfRange(_)]),
                "{out_of_range}: {found:?}"
            );
        }
    }

    #[test]
    fn the_live_update_interval_is_a_duration_within_bounds() {
        assert_eq!(
            parse(&[]).expect("parses").live_update_interval,
            DEFAULT_LIVE_UPDATE_INTERVAL
        );
        for fine in ["0s", "250ms", "10s"] {
            let config = parse(&["--live-update-interval", fine]).expect("parses");
            assert_eq!(problems(&config), vec![], "{fine}");
        }
        assert!(parse(&["--live-update-interval", "often"]).is_err());
        let config = parse(&["--live-update-interval", "11s"]).expect("parses");
        assert!(matches!(
            problems(&config)[..],
            [ConfigProblem::LiveUpdateIntervalTooLong(_)]
        ));
    }

    #[test]
    fn the_websocket_cap_is_a_count_within_bounds() {
        assert_eq!(
            parse(&[]).expect("parses").max_websocket_connections,
            DEFAULT_MAX_WEBSOCKET_CONNECTIONS
        );
        let config = parse(&["--max-websocket-connections", "250"]).expect("parses");
        assert_eq!(config.max_websocket_connections, 250);
        assert_eq!(problems(&config), vec![]);
        assert!(parse(&["--max-websocket-connections", "-1"]).is_err());
        assert!(parse(&["--max-websocket-connections", "many"]).is_err());
        for out_of_range in ["0", "1000001"] {
            let config = parse(&["--max-websocket-connections", out_of_range]).expect("parses");
            assert_eq!(
                problems(&config),
                vec![ConfigProblem::WebSocketConnectionsOutOfRange(
                    out_of_range.parse().expect("number")
                )]
            );
        }
    }

    #[test]
    fn secrets_never_print() {
        let config = parse(&[
            "--jwt-secret",
            "super-secret-value-0123456789abcdef",
            "--payment-webhook-secret",
            "hook-secret-xyz",
        ])
        .expect("parses");
        let debug = format!("{config:?}");
        assert!(!debug.contains("super-secret-value"), "{debug}");
        assert!(!debug.contains("hook-secret-xyz"), "{debug}");
        assert!(!debug.contains(DEV_JWT_SECRET));
    }

    #[test]
    fn production_refuses_the_default_secret() {
        let config = ServiceConfig {
            production: true,
            ..ServiceConfig::default()
        };
        assert_eq!(
            problems(&config),
            vec![
                ConfigProblem::DevJwtSecretInProduction,
                ConfigProblem::MissingWebhookSecret
            ]
        );
        let message = config.validate().expect_err("refused").to_string();
        assert!(message.contains("TICKETING_JWT_SECRET"), "{message}");
        assert!(
            message.contains("TICKETING_PAYMENT_WEBHOOK_SECRET"),
            "{message}"
        );
    }

    #[test]
    fn production_refuses_a_short_secret_but_development_accepts_it() {
        let short = ServiceConfig {
            jwt_secret: SecretString::from("short"),
            ..ServiceConfig::default()
        };
        assert_eq!(problems(&short), vec![]);
        let production = ServiceConfig {
            production: true,
            payment_webhook_secret: Some(SecretString::from("w".repeat(32))),
            ..short
        };
        assert_eq!(problems(&production), vec![ConfigProblem::WeakJwtSecret]);
    }

    #[test]
    fn every_problem_is_reported() {
        let config = ServiceConfig {
            jwt_secret: SecretString::from(""),
            jwt_issuer: " ".into(),
            jwt_expiry: Duration::from_secs(1),
            body_limit: 0,
            max_query_depth: 0,
            max_query_complexity: 0,
            cors_origins: vec!["*".into(), "https://a.example".into()],
            log_filter: "[[[".into(),
            payment_webhook_secret: Some(SecretString::from("")),
            shutdown_grace: Duration::from_secs(3600),
            request_timeout: Duration::ZERO,
            max_websocket_connections: 0,
            live_update_interval: Duration::from_secs(11),
            ..ServiceConfig::default()
        };
        let found = problems(&config);
        assert_eq!(found.len(), 13, "{found:?}");
        assert_eq!(found[0], ConfigProblem::EmptyJwtSecret);
    }

    #[test]
    fn cors_origins_are_checked() {
        for good in [
            "https://a.example",
            "http://localhost:3000",
            "http://127.0.0.1:8080",
            "http://[::1]:3000",
        ] {
            assert!(is_valid_origin(good), "{good}");
        }
        for bad in [
            "a.example",
            "https://a.example/",
            "ftp://a.example",
            "https://",
            "https://a.example:99999",
            "https://a b",
        ] {
            assert!(!is_valid_origin(bad), "{bad}");
        }
    }

    #[test]
    fn bad_flag_values_are_clear_errors() {
        let err = parse(&["--login-rate", "0/min"]).expect_err("zero rate");
        assert!(err.to_string().contains("at least 1"), "{err}");
        assert!(parse(&["--jwt-expiry", "soon"]).is_err());
        assert!(parse(&["--addr", "localhost"]).is_err());
        assert!(parse(&["--log-format", "xml"]).is_err());
    }

    #[test]
    fn rate_specs_parse() {
        assert_eq!(
            "10/min".parse::<RateSpec>().map(|r| r.to_string()),
            Ok("10/min".to_owned())
        );
        assert_eq!(
            "3 / h".parse::<RateSpec>().map(|r| r.period),
            Ok(RatePeriod::Hour)
        );
        for bad in [
            "",
            "10",
            "/min",
            "0/s",
            "-1/s",
            "10/day",
            "1.5/s",
            "99999999999/s",
        ] {
            assert_eq!(bad.parse::<RateSpec>(), Err(RateSpecError), "{bad}");
        }
    }

    #[derive(Debug, Parser)]
    struct SmtpCli {
        #[command(flatten)]
        smtp: SmtpSettings,
    }

    fn parse_smtp(args: &[&str]) -> Result<SmtpSettings, clap::Error> {
        SmtpCli::try_parse_from(std::iter::once("ticketing").chain(args.iter().copied()))
            .map(|cli| cli.smtp)
    }

    #[test]
    fn smtp_is_off_without_a_host() {
        if std::env::vars().any(|(k, _)| k.starts_with("TICKETING_SMTP")) {
            return;
        }
        let settings = parse_smtp(&[]).expect("defaults parse");
        assert_eq!(settings.smtp_config(), None);
        assert_eq!(SmtpSettings::default().smtp_config(), None);
        let blank = parse_smtp(&["--smtp-host", "  "]).expect("parses");
        assert_eq!(blank.smtp_config(), None);
        assert!(
            SmtpSettings::default()
                .notifier_config("n.db")
                .smtp
                .is_none()
        );
    }

    #[test]
    fn smtp_flags_reach_the_notifier_config() {
        let settings = parse_smtp(&[
            "--smtp-host",
            "mail.example",
            "--smtp-tls",
            "TLS",
            "--smtp-username",
            "mailer",
            "--smtp-password",
            "smtp-secret-value",
            "--smtp-from",
            "Box Office <box@tickets.example>",
        ])
        .expect("parses");
        let debug = format!("{settings:?}");
        assert!(!debug.contains("smtp-secret-value"), "{debug}");
        let smtp = settings.notifier_config("n.db").smtp.expect("email on");
        assert_eq!(smtp.host, "mail.example");
        assert_eq!(smtp.port, 465);
        assert_eq!(smtp.tls, notifier::SmtpTls::Tls);
        assert_eq!(
            smtp.credentials,
            Some(("mailer".to_owned(), "smtp-secret-value".to_owned()))
        );
        assert_eq!(smtp.sender, "Box Office <box@tickets.example>");

        let plain = parse_smtp(&[
            "--smtp-host",
            "h",
            "--smtp-tls",
            "none",
            "--smtp-port",
            "2525",
        ])
        .expect("parses")
        .smtp_config()
        .expect("email on");
        assert_eq!((plain.port, plain.tls), (2525, notifier::SmtpTls::None));
        let default_port = parse_smtp(&["--smtp-host", "h", "--smtp-tls", "starttls"])
            .expect("parses")
            .smtp_config()
            .expect("email on");
        assert_eq!(default_port.port, 587);
    }

    #[test]
    fn bad_smtp_flags_are_clear_errors() {
        let err = parse_smtp(&["--smtp-tls", "ssl"]).expect_err("unknown mode");
        assert!(err.to_string().contains("none, starttls or tls"), "{err}");
        assert!(parse_smtp(&["--smtp-port", "70000"]).is_err());
        assert!(
            parse_smtp(&["--smtp-username", "u"]).is_err(),
            "password required"
        );
        assert!(
            parse_smtp(&["--smtp-password", "p"]).is_err(),
            "username required"
        );
    }

    proptest! {
        #[test]
        fn rate_specs_round_trip(count in 1u32.., period in prop_oneof![Just(RatePeriod::Second), Just(RatePeriod::Minute), Just(RatePeriod::Hour)]) {
            let spec = RateSpec::per(NonZeroU32::new(count).expect("non-zero"), period);
            prop_assert_eq!(spec.to_string().parse::<RateSpec>(), Ok(spec));
        }

        #[test]
        fn rate_spec_parsing_never_panics(s in ".{0,20}") {
            let _ = s.parse::<RateSpec>();
        }

        #[test]
        fn origin_check_never_panics(s in ".{0,40}") {
            let _ = is_valid_origin(&s);
        }
    }
}
