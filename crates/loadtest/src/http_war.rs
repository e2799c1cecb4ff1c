//! The ticket war through HTTP as a buyer's client meets it, driven by `wrk`.
//!
//! The other scenarios drive the server from this process's own Rust client, whose cost
//! (JSON, TLS-less HTTP/1.1 in reqwest, one task per buyer) shares the machine's cores with
//! the server and caps what can be measured. `wrk` is a small C load generator with an
//! event loop per thread; a Lua script builds each request (a one-ticket `purchaseTickets`
//! with a fresh idempotency key, round robin over the logged-in buyers) and classifies each
//! answer. It costs the server's cores far less, so what is measured is the server.
//!
//! One run, against a `ticketing serve` this tool starts (release build, default settings
//! but the anti-abuse limits, which one loopback address would trip):
//!
//! 1. `GET /healthz` and `{ __typename }` at full speed: the edge's ceilings.
//! 2. The purchase war without subscribers, then (optionally) with N `seatAvailability`
//!    subscribers connected.
//!
//! Each phase reports requests/s, wrk's latency percentiles and the server's CPU time per
//! request, read from its own `/proc/PID/stat` (user plus system) before and after. After
//! the purchase phases the tool checks the sale: sold never above capacity, the store's
//! paid orders equal to the purchases answered `PAID` (give or take those in flight when
//! wrk stopped), and `ticketing audit verify` clean.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use serde::Serialize;
use serde_json::json;
use tokio::sync::watch;

use crate::{
    gql::GqlClient,
    server::{ADMIN_EMAIL, ADMIN_PASSWORD, MemorySampler, ServerOptions, ServerProcess},
    stats::{Latencies, LatencySummary, SubscriberLog, update_delays},
};

/// What a run does.
#[derive(Debug, Clone, Serialize)]
pub struct HttpWarConfig {
    /// Seconds of each purchase phase.
    pub duration: Duration,
    /// Seconds of each edge phase (`/healthz`, `__typename`).
    pub edge_duration: Duration,
    /// wrk connections.
    pub connections: usize,
    /// wrk threads.
    pub threads: usize,
    /// Logged-in buyers the purchases rotate over.
    pub buyers: usize,
    /// Subscribers of the second purchase phase (0: no second phase).
    pub subscribers: usize,
    /// The `ticketing` binary (default: beside this executable).
    pub server_bin: Option<PathBuf>,
    /// Extra flags for `ticketing serve`.
    pub server_args: Vec<String>,
}

/// One phase's figures.
#[derive(Debug, Clone, Serialize)]
pub struct Phase {
    /// What was requested.
    pub name: String,
    /// Requests answered.
    pub requests: u64,
    /// Requests answered as expected (`PAID` for purchases, 200 otherwise).
    pub ok: u64,
    /// Answers that were not (errors, refusals), and socket errors and timeouts.
    pub not_ok: u64,
    /// Seconds wrk ran.
    pub seconds: f64,
    /// Expected answers per second.
    pub per_second: f64,
    /// wrk's latency percentiles, in milliseconds.
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    /// Server CPU (user + system) per request, in microseconds.
    pub server_cpu_us_per_request: f64,
    /// Server CPU used, as a share of one core (1.0 = one core busy).
    pub server_cores: f64,
    /// Subscribers' update delays (purchase phases with subscribers).
    pub subscriber_delay: Option<LatencySummary>,
    /// Subscribers that ended with an error.
    pub subscriber_errors: usize,
    /// Server's resident memory when the phase ended, in bytes.
    pub rss_after_bytes: Option<u64>,
}

/// The whole run.
#[derive(Debug, Clone, Serialize)]
pub struct HttpWarReport {
    pub config: HttpWarConfig,
    pub phases: Vec<Phase>,
    /// Purchases per second over `/healthz` requests per second, same run.
    pub purchase_to_healthz: f64,
    /// Server's peak resident memory, in bytes.
    pub server_peak_rss_bytes: Option<u64>,
    /// Server's resident memory once every buyer had logged in, in bytes.
    pub rss_after_logins_bytes: Option<u64>,
    /// Seconds from the end of the last purchase phase until the notifier had planned
    /// everything (its lag back to zero), if it got there within two minutes.
    pub notifier_drain_seconds: Option<f64>,
    /// Tickets paid in the store at the end.
    pub store_sold: u64,
    /// The tier's capacity.
    pub capacity: u64,
    /// What failed (empty when the sale checks passed).
    pub failures: Vec<String>,
    pub passed: bool,
}

impl HttpWarReport {
    /// A plain-text table of the figures.
    pub fn table(&self) -> String {
        let mut out = String::new();
        out.push_str(&format!(
            "{:<34} {:>10} {:>10} {:>8} {:>8} {:>8} {:>9} {:>12} {:>7} {:>8}\n",
            "phase",
            "ok/s",
            "ok",
            "not ok",
            "p50 ms",
            "p99 ms",
            "p99.9 ms",
            "cpu us/req",
            "cores",
            "RSS MiB"
        ));
        for p in &self.phases {
            out.push_str(&format!(
                "{:<34} {:>10.0} {:>10} {:>8} {:>8.2} {:>8.2} {:>9.2} {:>12.1} {:>7.2} {:>8}\n",
                p.name,
                p.per_second,
                p.ok,
                p.not_ok,
                p.p50_ms,
                p.p99_ms,
                p.p999_ms,
                p.server_cpu_us_per_request,
                p.server_cores,
                p.rss_after_bytes
                    .map_or_else(|| "-".to_owned(), |b| (b >> 20).to_string())
            ));
            if let Some(delay) = &p.subscriber_delay {
                out.push_str(&format!(
                    "{:<34} update delay p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} updates ({} subscriber errors)\n",
                    "", delay.p50_ms, delay.p99_ms, delay.max_ms, delay.count, p.subscriber_errors
                ));
            }
        }
        out.push_str(&format!(
            "purchases/s over healthz/s: {:.3}\n",
            self.purchase_to_healthz
        ));
        if let Some(rss) = self.server_peak_rss_bytes {
            out.push_str(&format!("server peak RSS: {} MiB", rss >> 20));
            if let Some(logins) = self.rss_after_logins_bytes {
                out.push_str(&format!(
                    " ({} MiB once the buyers had logged in)",
                    logins >> 20
                ));
            }
            out.push('\n');
        }
        if let Some(seconds) = self.notifier_drain_seconds {
            out.push_str(&format!(
                "notifier caught up {seconds:.1} s after the last purchase phase\n"
            ));
        }
        out.push_str(&format!(
            "store: {} sold of {}; {}\n",
            self.store_sold,
            self.capacity,
            if self.passed {
                "checks passed".to_owned()
            } else {
                format!("FAILED: {}", self.failures.join("; "))
            }
        ));
        out
    }
}

/// Capacity of the one tier on sale: more than any run sells.
const CAPACITY: u64 = 1_000_000;

/// Plays the run.
pub async fn run(config: HttpWarConfig) -> anyhow::Result<HttpWarReport> {
    which_wrk()?;
    let binary = match &config.server_bin {
        Some(path) => path.clone(),
        None => crate::server::locate_binary()?,
    };
    let dir = tempfile::Builder::new()
        .prefix("ticketing-http-war-")
        .tempdir()
        .context("creating the data directory")?;
    let mut server = ServerProcess::start(ServerOptions {
        binary: binary.clone(),
        data_dir: dir.path().to_owned(),
        hold_ttl: Duration::from_secs(600),
        extra_args: config.server_args.clone(),
    })
    .await?;
    let pid = server.pid().context("the server's pid")?;
    let base = server.base_url();
    let sampler = MemorySampler::default();
    let sampling = sampler.spawn(move || Some(pid));

    let client = GqlClient::new(&base, 16, Duration::from_secs(60))?;
    let admin = login(&client, ADMIN_EMAIL, ADMIN_PASSWORD).await?;
    let (event, tier) = create_sale(&client, &admin).await?;
    eprintln!("registering and logging in {} buyers", config.buyers);
    let tokens = buyers(&client, config.buyers).await?;
    let rss_after_logins_bytes = rss_of(pid);
    let scripts = tempfile::tempdir().context("a directory for the wrk scripts")?;

    let mut phases = Vec::new();
    let healthz = wrk_phase(
        &config,
        "GET /healthz",
        &format!("{base}/healthz"),
        None,
        config.edge_duration,
        pid,
    )
    .await?;
    let typename_script = scripts.path().join("typename.lua");
    std::fs::write(&typename_script, format!("{DONE_LUA}{TYPENAME_LUA_BODY}"))?;
    let typename = wrk_phase(
        &config,
        "POST { __typename }",
        &format!("{base}/graphql"),
        Some(&typename_script),
        config.edge_duration,
        pid,
    )
    .await?;
    phases.push(healthz.clone());
    phases.push(typename);

    // Each purchase phase has a script of its own: its idempotency keys must be new, or
    // the second phase would only replay the first one's purchases.
    let purchase_script = |phase: &str| -> anyhow::Result<PathBuf> {
        let path = scripts.path().join(format!("purchase-{phase}.lua"));
        let run = uuid::Uuid::new_v4().simple().to_string();
        std::fs::write(&path, purchase_lua(&tokens, &event, &tier, &run[..12]))?;
        Ok(path)
    };
    let purchases = wrk_phase(
        &config,
        "purchaseTickets (1 ticket)",
        &format!("{base}/graphql"),
        Some(&purchase_script("alone")?),
        config.duration,
        pid,
    )
    .await?;
    let purchase_rate = purchases.per_second;
    phases.push(purchases);

    if config.subscribers > 0 {
        phases.push(
            with_subscribers(
                &config,
                &base,
                &client,
                &event,
                &purchase_script("subscribed")?,
                pid,
            )
            .await?,
        );
    }

    let drain_started = Instant::now();
    let notifier_drain_seconds = notifier_drained(&base, Duration::from_secs(120))
        .await
        .then(|| drain_started.elapsed().as_secs_f64());
    sampling.abort();
    sampler.sample(pid);
    let mut failures = Vec::new();
    if notifier_drain_seconds.is_none() {
        failures.push("the notifier did not catch up within two minutes of the sale".into());
    }
    let paid: u64 = phases
        .iter()
        .filter(|p| p.name.starts_with("purchaseTickets"))
        .map(|p| p.ok)
        .sum();
    let sold = event_sold(&client, &event).await?;
    if sold > CAPACITY {
        failures.push(format!("OVERSOLD: {sold} > {CAPACITY}"));
    }
    if sold < paid {
        failures.push(format!(
            "LOST PURCHASES: {paid} answered PAID but {sold} sold"
        ));
    }
    // Requests in flight when wrk stopped may have completed unanswered.
    let in_flight = (config.connections as u64) * 2;
    if sold > paid + in_flight {
        failures.push(format!(
            "{sold} sold but only {paid} answered PAID (more than the {in_flight} in flight)"
        ));
    }
    server.stop().await?;
    match audit_verify(&binary, dir.path()).await {
        Ok(()) => {}
        Err(e) => failures.push(format!("audit verify: {e:#}")),
    }
    let passed = failures.is_empty();
    Ok(HttpWarReport {
        purchase_to_healthz: purchase_rate / healthz.per_second.max(1e-9),
        config,
        phases,
        server_peak_rss_bytes: sampler.peak(),
        rss_after_logins_bytes,
        notifier_drain_seconds,
        store_sold: sold,
        capacity: CAPACITY,
        failures,
        passed,
    })
}

/// The purchase phase again with `subscribers` watching the event's live counts; their
/// delay is measured from the read side showing a sale (sampled every 10 ms over HTTP) to
/// a subscriber receiving counts that include it.
async fn with_subscribers(
    config: &HttpWarConfig,
    base: &str,
    client: &GqlClient,
    event: &str,
    script: &Path,
    pid: u32,
) -> anyhow::Result<Phase> {
    eprintln!("connecting {} subscribers", config.subscribers);
    let ws_url = format!("{}/graphql/ws", base.replacen("http", "ws", 1));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (subscribed_tx, mut subscribed_rx) = tokio::sync::mpsc::channel(config.subscribers);
    let mut tasks = Vec::new();
    for index in 0..config.subscribers {
        tasks.push(tokio::spawn(crate::ws::subscribe(
            ws_url.clone(),
            vec![event.to_owned()],
            subscribed_tx.clone(),
            stop_rx.clone(),
        )));
        if index % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    drop(subscribed_tx);
    let mut live = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while live < config.subscribers {
        match tokio::time::timeout_at(deadline, subscribed_rx.recv()).await {
            Ok(Some(())) => live += 1,
            _ => break,
        }
    }
    eprintln!("{live} subscribers live");
    // The read side's sold count over time, as the reference the subscribers lag behind.
    let observed = Arc::new(parking(Vec::<(Instant, u64)>::new()));
    let poller = {
        let client = client.clone();
        let event = event.to_owned();
        let observed = Arc::clone(&observed);
        let mut stop = stop_rx.clone();
        tokio::spawn(async move {
            let mut last = None;
            loop {
                if *stop.borrow() {
                    return;
                }
                if let Ok(sold) = event_sold(&client, &event).await {
                    let at = Instant::now();
                    if last.is_none_or(|l| sold > l) {
                        observed.lock().await.push((at, sold));
                        last = Some(sold);
                    }
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                    _ = stop.changed() => return,
                }
            }
        })
    };
    let mut phase = wrk_phase(
        config,
        "purchaseTickets, with subscribers",
        &format!("{base}/graphql"),
        Some(script),
        config.duration,
        pid,
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(true);
    let _ = poller.await;
    let mut logs: Vec<SubscriberLog> = Vec::new();
    for task in tasks {
        logs.push(task.await.unwrap_or_default());
    }
    // Each increase the poller saw is a sale of that many tickets at that time.
    let steps = observed.lock().await.clone();
    let first = steps.first().map_or(0, |(_, s)| *s);
    let mut acks: Vec<(Instant, u64)> = Vec::new();
    let mut previous = first;
    for (at, sold) in steps.iter().skip(1) {
        acks.push((*at, sold - previous));
        previous = *sold;
    }
    let mut delays = Latencies::new();
    for log in &logs {
        // Updates count tickets from the start of the event; the reference from `first`.
        let shifted = SubscriberLog {
            updates: log
                .updates
                .iter()
                .map(|(at, sold)| (*at, sold.saturating_sub(first)))
                .collect(),
            last_available: log.last_available,
            error: log.error.clone(),
        };
        update_delays(&mut acks, &shifted, &mut delays);
    }
    phase.subscriber_delay = Some(delays.summary());
    phase.subscriber_errors = logs.iter().filter(|l| l.error.is_some()).count();
    Ok(phase)
}

fn parking<T>(value: T) -> tokio::sync::Mutex<T> {
    tokio::sync::Mutex::new(value)
}

/// Runs wrk for one phase and reads the server's CPU time around it.
async fn wrk_phase(
    config: &HttpWarConfig,
    name: &str,
    url: &str,
    script: Option<&Path>,
    duration: Duration,
    pid: u32,
) -> anyhow::Result<Phase> {
    eprintln!(
        "{name}: {} connections for {:?}",
        config.connections, duration
    );
    let mut command = tokio::process::Command::new("wrk");
    command
        .arg("-t")
        .arg(config.threads.to_string())
        .arg("-c")
        .arg(config.connections.to_string())
        .arg("-d")
        .arg(format!("{}s", duration.as_secs().max(1)))
        .arg("--timeout")
        .arg("10s");
    let script = match script {
        Some(script) => script.to_owned(),
        None => {
            let path =
                std::env::temp_dir().join(format!("ticketing-get-{}.lua", std::process::id()));
            std::fs::write(&path, format!("{DONE_LUA}{GET_LUA_BODY}"))?;
            path
        }
    };
    command
        .arg("-s")
        .arg(&script)
        .arg(url)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    let cpu_before = cpu_ticks(pid)?;
    let started = Instant::now();
    let output = command.output().await.context("running wrk")?;
    let wall = started.elapsed();
    let cpu_after = cpu_ticks(pid)?;
    if !output.status.success() {
        bail!("wrk failed: {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    let field = |key: &str| -> f64 {
        stdout
            .lines()
            .filter_map(|l| l.strip_prefix("RESULT "))
            .flat_map(|l| l.split_whitespace())
            .find_map(|kv| kv.strip_prefix(key).and_then(|v| v.strip_prefix('=')))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    let requests = field("requests") as u64;
    let ok = field("ok") as u64;
    let errors = field("socket_errors") as u64;
    let seconds = field("duration_us") / 1e6;
    let ticks_per_second = clock_ticks_per_second();
    let cpu_seconds = (cpu_after - cpu_before) as f64 / ticks_per_second;
    Ok(Phase {
        name: name.to_owned(),
        requests,
        ok,
        not_ok: requests.saturating_sub(ok) + errors,
        seconds,
        per_second: ok as f64 / seconds.max(1e-9),
        p50_ms: field("p50") / 1000.0,
        p90_ms: field("p90") / 1000.0,
        p99_ms: field("p99") / 1000.0,
        p999_ms: field("p99.9") / 1000.0,
        server_cpu_us_per_request: cpu_seconds * 1e6 / (requests.max(1) as f64),
        server_cores: cpu_seconds / wall.as_secs_f64().max(1e-9),
        subscriber_delay: None,
        subscriber_errors: 0,
        rss_after_bytes: rss_of(pid),
    })
}

/// The resident memory of `pid` now, in bytes.
fn rss_of(pid: u32) -> Option<u64> {
    crate::server::memory_of(pid).map(|(rss, _)| rss)
}

/// Waits until the server's notifier has planned every stored event (`notifier_lag_events`
/// at 0 on `/metrics`, refreshed every second); false after `limit`.
async fn notifier_drained(base: &str, limit: Duration) -> bool {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + limit;
    // The gauge is refreshed once a second: two readings of 0 in a row.
    let mut zeros = 0;
    while Instant::now() < deadline {
        let lag = async {
            let text = client
                .get(format!("{base}/metrics"))
                .send()
                .await
                .ok()?
                .text()
                .await
                .ok()?;
            text.lines()
                .find(|l| l.starts_with("notifier_lag_events"))
                .and_then(|l| l.split_whitespace().last())
                .and_then(|v| v.parse::<f64>().ok())
        }
        .await;
        if lag == Some(0.0) {
            zeros += 1;
            if zeros == 2 {
                return true;
            }
        } else {
            zeros = 0;
        }
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
    false
}

/// User plus system CPU time of a process, in clock ticks (`/proc/PID/stat` fields 14, 15).
fn cpu_ticks(pid: u32) -> anyhow::Result<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) may hold spaces: count from the closing parenthesis.
    let rest = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .context("unexpected /proc stat format")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // After ")": field 3 (state) is index 0, so utime (14) is index 11, stime (15) is 12.
    let utime: u64 = fields.get(11).context("utime")?.parse()?;
    let stime: u64 = fields.get(12).context("stime")?.parse()?;
    Ok(utime + stime)
}

fn clock_ticks_per_second() -> f64 {
    // `getconf CLK_TCK`; 100 on every Linux this runs on, asked for all the same.
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

fn which_wrk() -> anyhow::Result<()> {
    match std::process::Command::new("wrk").arg("--version").output() {
        Ok(_) => Ok(()),
        Err(_) => bail!("wrk is not installed (Debian: apt-get install wrk)"),
    }
}

async fn login(client: &GqlClient, email: &str, password: &str) -> anyhow::Result<String> {
    let data = client
        .call(
            "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { token } }",
            json!({ "e": email, "p": password }),
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("logging in {email}: {e}"))?;
    data["login"]["token"]
        .as_str()
        .map(str::to_owned)
        .context("no token")
}

async fn create_sale(client: &GqlClient, admin: &str) -> anyhow::Result<(String, String)> {
    let starts_at = chrono::Utc::now() + chrono::Duration::days(30);
    let data = client
        .call(
            "mutation($i: CreateEventInput!) { createEvent(input: $i) { id tiers { id } } }",
            json!({ "i": {
                "name": "HTTP ticket war", "venue": "Loopback Arena",
                "startsAt": starts_at, "endsAt": starts_at + chrono::Duration::hours(4),
                "tiers": [{ "name": "Standard", "priceMinor": 5000, "currency": "EUR", "capacity": CAPACITY }],
            } }),
            Some(admin),
        )
        .await
        .map_err(|e| anyhow::anyhow!("creating the event: {e}"))?;
    let event = data["createEvent"]["id"]
        .as_str()
        .context("event id")?
        .to_owned();
    let tier = data["createEvent"]["tiers"][0]["id"]
        .as_str()
        .context("tier id")?
        .to_owned();
    client
        .call(
            "mutation($e: ID!) { publishEvent(eventId: $e) { id } }",
            json!({ "e": event }),
            Some(admin),
        )
        .await
        .map_err(|e| anyhow::anyhow!("publishing the event: {e}"))?;
    Ok((event, tier))
}

async fn buyers(client: &GqlClient, count: usize) -> anyhow::Result<Vec<String>> {
    use futures::StreamExt as _;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let tokens: Vec<anyhow::Result<String>> = futures::stream::iter(0..count)
        .map(|i| {
            let client = client.clone();
            let email = format!("wrk-{i}-{}@example.com", &run[..8]);
            async move {
                client
                    .call(
                        "mutation($i: RegisterInput!) { register(input: $i) { id } }",
                        json!({ "i": { "email": email, "password": "buyer-password", "displayName": "Buyer" } }),
                        None,
                    )
                    .await
                    .map_err(|e| anyhow::anyhow!("registering {email}: {e}"))?;
                login(&client, &email, "buyer-password").await
            }
        })
        .buffered(4)
        .collect()
        .await;
    tokens.into_iter().collect()
}

async fn event_sold(client: &GqlClient, event: &str) -> anyhow::Result<u64> {
    let data = client
        .call(
            "query($e: ID!) { event(id: $e) { tiers { sold } } }",
            json!({ "e": event }),
            None,
        )
        .await
        .map_err(|e| anyhow::anyhow!("reading the event: {e}"))?;
    Ok(data["event"]["tiers"][0]["sold"].as_u64().unwrap_or(0))
}

async fn audit_verify(binary: &Path, data_dir: &Path) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(binary)
        .arg("audit")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("verify")
        .output()
        .await
        .context("running ticketing audit verify")?;
    if !output.status.success() {
        bail!(
            "{}: {}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

/// The lines every script's `done` prints: totals over the threads, and wrk's latency.
const DONE_LUA: &str = r#"
threads = {}
function setup(thread)
  thread:set("id", #threads + 1)
  table.insert(threads, thread)
end
function done(summary, latency, requests)
  local ok = 0
  for _, t in ipairs(threads) do ok = ok + t:get("ok") end
  local e = summary.errors
  io.write(string.format("RESULT requests=%d ok=%d socket_errors=%d duration_us=%d p50=%d p90=%d p99=%d p99.9=%d\n",
    summary.requests, ok, e.connect + e.read + e.write + e.timeout, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9)))
end
"#;

const GET_LUA_BODY: &str = r#"
ok = 0
function response(status, headers, body)
  if status == 200 then ok = ok + 1 end
end
"#;

const TYPENAME_LUA_BODY: &str = r#"
ok = 0
wrk.method = "POST"
wrk.body = '{"query":"{ __typename }"}'
wrk.headers["Content-Type"] = "application/json"
function response(status, headers, body)
  if status == 200 and string.find(body, '"__typename"', 1, true) then ok = ok + 1 end
end
"#;

/// The purchase script: a one-ticket purchase per request, with a fresh idempotency key
/// (run, thread, counter), rotating over the buyers' tokens.
fn purchase_lua(tokens: &[String], event: &str, tier: &str, run: &str) -> String {
    let list: Vec<String> = tokens.iter().map(|t| format!("\"{t}\"")).collect();
    format!(
        r#"{DONE_LUA}
ok = 0
counter = 0
tokens = {{ {tokens} }}
function request()
  counter = counter + 1
  local token = tokens[(counter * 7 + id * 13) % #tokens + 1]
  local body = '{{"query":"mutation($i: PurchaseTicketsInput!) {{ purchaseTickets(input: $i) {{ status }} }}","variables":{{"i":{{"eventId":"{event}","tierId":"{tier}","quantity":1,"paymentToken":"tok_success","idempotencyKey":"{run}-' .. id .. '-' .. counter .. '"}}}}}}'
  return wrk.format("POST", "/graphql", {{ ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }}, body)
end
function response(status, headers, body)
  if status == 200 and string.find(body, '"PAID"', 1, true) then ok = ok + 1 end
end
"#,
        tokens = list.join(", ")
    )
}
