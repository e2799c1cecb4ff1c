//! The scenarios: set up an on-sale, play it, and check the outcome against the store and
//! the read side.

use std::{
    collections::{HashMap, HashSet},
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicU32, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::ValueEnum;
use futures::{StreamExt, stream};
use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::Serialize;
use serde_json::{Value, json};
use tokio::sync::watch;

use crate::{
    gql::{CallError, GqlClient},
    report::{EventCheck, PurchaseFigures, Report, SubscriberFigures},
    server::{ADMIN_EMAIL, ADMIN_PASSWORD, MemorySampler, ServerOptions, ServerProcess},
    stats::{Latencies, Outcomes, SubscriberLog, merge_outcomes, update_delays},
    ws,
};

/// A named scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// One general-admission event; every buyer buys 1 to `max-quantity` tickets at a
    /// time until it is sold out.
    Hot,
    /// Several events on sale at once; each buyer buys from a random one still on sale.
    ManyEvents,
    /// A seated event where most buyers want the same best seats.
    Seated,
    /// Hold, then pay: some payments are declined, some holds abandoned until they expire.
    HoldPay,
    /// The hot sale with the server killed (SIGKILL) mid-sale and restarted.
    Crash,
    /// A small, fast hot sale that fails only on oversell, lost purchases or errors.
    Ci,
}

/// Everything a run is configured with.
#[derive(Debug, Clone, Serialize)]
pub struct Config {
    /// Which scenario.
    pub scenario: Scenario,
    /// Tickets (seats, for `seated`) over every event.
    pub tickets: u32,
    /// Concurrent buyers.
    pub buyers: usize,
    /// Live WebSocket subscribers.
    pub subscribers: usize,
    /// Most tickets per purchase (each purchase asks for 1 to this many).
    pub max_quantity: u32,
    /// Events on sale (`many-events`).
    pub events: usize,
    /// Share of buyers after the best seats (`seated`).
    pub hot_seat_share: f64,
    /// Attempts per buyer before giving up (`seated`).
    pub seat_attempts: u32,
    /// Share of holds paid with a declined card (`hold-pay`).
    pub decline_share: f64,
    /// Share of holds never paid (`hold-pay`).
    pub abandon_share: f64,
    /// How long holds last (`hold-pay`; servers this tool starts).
    pub hold_ttl: Duration,
    /// Share of the tickets sold before the server is killed (`crash`).
    pub crash_at: f64,
    /// A running server to target instead of starting one.
    pub target: Option<String>,
    /// The `ticketing` binary, for starting the server and auditing the store.
    pub server_bin: Option<PathBuf>,
    /// The data directory of a `--target` server, to audit its store.
    pub data_dir: Option<PathBuf>,
    /// Client-side timeout of one request.
    pub request_timeout: Duration,
    /// Seed of the buyers' random choices.
    pub seed: u64,
}

/// One event on sale.
#[derive(Debug, Clone)]
struct Sale {
    event_id: String,
    tier_id: String,
    capacity: u32,
    /// Seat ids, best first (seated only).
    seats: Vec<String>,
    /// Seats per row (seated only), to pick adjacent seats.
    row_len: usize,
}

/// A successful purchase as its buyer saw it.
#[derive(Debug, Clone)]
struct Ack {
    sale: usize,
    order_id: String,
    tickets: u64,
    at: Instant,
}

/// What one buyer did.
#[derive(Default)]
struct BuyerLog {
    /// Raw samples: a histogram per buyer would cost more memory than the samples.
    latencies: Vec<Duration>,
    outcomes: Outcomes,
    acks: Vec<Ack>,
    /// Requests whose outcome stayed unknown (retries under the same key never answered).
    unresolved: u64,
    /// Successful purchases of `hold-pay` holds that were abandoned on purpose.
    abandoned_tickets: u64,
    /// The first message seen for each error code, to tell what an unexpected code meant.
    examples: std::collections::BTreeMap<String, String>,
}

const PURCHASE: &str = "mutation($input: PurchaseTicketsInput!) { purchaseTickets(input: $input) { id quantity status } }";
const HOLD: &str =
    "mutation($input: HoldTicketsInput!) { holdTickets(input: $input) { id quantity status } }";
const PAY: &str = "mutation($orderId: ID!, $token: String!, $key: String) { payOrder(orderId: $orderId, paymentToken: $token, idempotencyKey: $key) { id quantity status } }";
const DECLINED_CARD: &str = "tok_decline";
const GOOD_CARD: &str = "tok_success";
const BUYER_PASSWORD: &str = "loadtest-buyer-password";

/// Plays the scenario and checks its outcome. `Ok` holds the report whether or not the
/// checks passed (see [`Report::passed`]); `Err` means the run itself could not happen.
pub async fn run(config: Config) -> anyhow::Result<Report> {
    let started_at = chrono::Utc::now();
    let _data_dir_guard;
    let mut server = None;
    let (base_url, binary, data_dir) = match &config.target {
        Some(url) => (
            url.trim_end_matches('/').to_owned(),
            config.server_bin.clone(),
            config.data_dir.clone(),
        ),
        None => {
            let binary = match &config.server_bin {
                Some(path) => path.clone(),
                None => crate::server::locate_binary()?,
            };
            let dir = tempfile::Builder::new()
                .prefix("ticketing-loadtest-")
                .tempdir()
                .context("creating the data directory")?;
            let process = ServerProcess::start(ServerOptions {
                binary: binary.clone(),
                data_dir: dir.path().to_owned(),
                hold_ttl: config.hold_ttl,
                extra_args: Vec::new(),
            })
            .await?;
            let data_dir = dir.path().to_owned();
            _data_dir_guard = dir;
            let url = process.base_url();
            server = Some(process);
            (url, Some(binary), Some(data_dir))
        }
    };
    let pid_cell = Arc::new(AtomicU32::new(
        server.as_ref().and_then(ServerProcess::pid).unwrap_or(0),
    ));
    let sampler = MemorySampler::default();
    let sampling = {
        let cell = pid_cell.clone();
        sampler.spawn(move || Some(cell.load(Ordering::Relaxed)).filter(|&p| p != 0))
    };

    let client = GqlClient::new(&base_url, config.buyers + 16, config.request_timeout)?;
    let admin = login(&client, ADMIN_EMAIL, ADMIN_PASSWORD)
        .await
        .context("logging in as the administrator (a --target server needs TICKETING_ADMIN_EMAIL/PASSWORD set to the loadtest's)")?;

    eprintln!(
        "setting up {:?}: {} tickets",
        config.scenario, config.tickets
    );
    let sales = create_sales(&client, &admin, &config).await?;
    eprintln!("registering and logging in {} buyers", config.buyers);
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let tokens = register_buyers(&client, config.buyers, &run_id[..8]).await?;

    eprintln!("connecting {} subscribers", config.subscribers);
    let ws_url = format!("{}/graphql/ws", base_url.replacen("http", "ws", 1));
    let (stop_tx, stop_rx) = watch::channel(false);
    let (subscribed_tx, mut subscribed_rx) = tokio::sync::mpsc::channel(config.subscribers.max(1));
    let mut subscriber_tasks = Vec::new();
    let mut subscriber_sales = Vec::new();
    for index in 0..config.subscribers {
        // Many events: each subscriber watches one, round robin.
        let watched = index % sales.len();
        subscriber_sales.push(watched);
        subscriber_tasks.push(tokio::spawn(ws::subscribe(
            ws_url.clone(),
            vec![sales[watched].event_id.clone()],
            subscribed_tx.clone(),
            stop_rx.clone(),
        )));
        if index % 50 == 49 {
            // Connecting a thousand sockets at once would measure the accept backlog.
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
    if live < config.subscribers {
        eprintln!(
            "warning: only {live} of {} subscribers are live",
            config.subscribers
        );
    }

    // Memory before the sale, to tell the sale's share of the peak from the set-up's.
    let rss_before_sale = server
        .as_ref()
        .and_then(ServerProcess::pid)
        .and_then(crate::server::memory_of)
        .map(|(rss, _)| rss);
    eprintln!("on sale: {} buyers go", config.buyers);
    let sales = Arc::new(sales);
    let sold_counter = Arc::new(AtomicU64::new(0));
    let (start_tx, start_rx) = watch::channel(false);
    let mut buyers = Vec::new();
    for (index, token) in tokens.into_iter().enumerate() {
        let client = client.clone();
        let sales = sales.clone();
        let config = config.clone();
        let sold = sold_counter.clone();
        let mut start = start_rx.clone();
        buyers.push(tokio::spawn(async move {
            let _ = start.wait_for(|go| *go).await;
            let rng = StdRng::seed_from_u64(
                config.seed ^ (index as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15),
            );
            let buyer = Buyer {
                client,
                token,
                sales,
                config,
                sold,
                rng,
                log: BuyerLog::default(),
            };
            buyer.run().await
        }));
    }
    let sale_started = Instant::now();
    let _ = start_tx.send(true);

    let mut crash_report = None;
    if config.scenario == Scenario::Crash {
        let threshold = (f64::from(config.tickets) * config.crash_at) as u64;
        while sold_counter.load(Ordering::Relaxed) < threshold
            && buyers.iter().any(|b| !b.is_finished())
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let process = server
            .as_mut()
            .context("the crash scenario starts its own server")?;
        let acked_before = sold_counter.load(Ordering::Relaxed);
        process.kill9().await?;
        pid_cell.store(0, Ordering::Relaxed);
        eprintln!(
            "killed the server (SIGKILL) after {acked_before} acknowledged tickets; restarting"
        );
        let down = Instant::now();
        process.restart().await?;
        pid_cell.store(process.pid().unwrap_or(0), Ordering::Relaxed);
        crash_report = Some(json!({
            "ticketsAcknowledgedBeforeKill": acked_before,
            "restartSeconds": down.elapsed().as_secs_f64(),
        }));
    }

    let mut log = BuyerLog::default();
    let mut latencies = Latencies::new();
    for buyer in buyers {
        let done = buyer.await.context("a buyer task panicked")?;
        for latency in &done.latencies {
            latencies.record(*latency);
        }
        merge_outcomes(&mut log.outcomes, &done.outcomes);
        log.acks.extend(done.acks);
        log.unresolved += done.unresolved;
        log.abandoned_tickets += done.abandoned_tickets;
        for (code, message) in done.examples {
            log.examples.entry(code).or_insert(message);
        }
    }
    let sale_duration = sale_started.elapsed();
    eprintln!("sale over in {:.2}s; checking", sale_duration.as_secs_f64());

    let mut failures = Vec::new();
    if config.scenario == Scenario::HoldPay {
        // Abandoned holds must come back to stock once they expire.
        let wait = config.hold_ttl + Duration::from_secs(15);
        let until = Instant::now() + wait;
        loop {
            let held = read_side(&client, &admin, &sales[0]).await?.held;
            if held == 0 {
                break;
            }
            if Instant::now() > until {
                failures.push(format!("{held} tickets still held {wait:?} after the sale"));
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    // Let the subscribers catch up with the final counts before stopping them.
    let final_sold: Vec<u64> = {
        let mut per_sale = vec![0u64; sales.len()];
        for ack in &log.acks {
            per_sale[ack.sale] += ack.tickets;
        }
        per_sale
    };
    // Every purchase was answered after the read side showed it, so one second is ample
    // for the last update to travel; a subscriber that misses it fails the run below.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = stop_tx.send(true);
    let mut subscriber_logs: Vec<SubscriberLog> = Vec::new();
    for task in subscriber_tasks {
        subscriber_logs.push(task.await.unwrap_or_else(|e| SubscriberLog {
            error: Some(format!("subscriber task failed: {e}")),
            ..SubscriberLog::default()
        }));
    }

    // Checks against the read side and the store.
    let mut events = Vec::new();
    for (index, sale) in sales.iter().enumerate() {
        let acked: Vec<&Ack> = log.acks.iter().filter(|a| a.sale == index).collect();
        let check = check_event(
            &client,
            &admin,
            sale,
            &acked,
            binary.as_deref(),
            data_dir.as_deref(),
            config.scenario,
        )
        .await?;
        failures.extend(
            check
                .failures
                .iter()
                .map(|f| format!("event {}: {f}", sale.event_id)),
        );
        events.push(check);
    }
    if log.unresolved > 0 {
        failures.push(format!(
            "{} purchases never got a definite answer, so the lost-purchase check cannot be exact",
            log.unresolved
        ));
    }
    let allowed = allowed_codes(config.scenario);
    for (code, count) in &log.outcomes {
        let bare = code.rsplit(' ').next().unwrap_or(code);
        if !allowed.contains(&bare) {
            let example = log
                .examples
                .get(code)
                .map(String::as_str)
                .unwrap_or_default();
            failures.push(format!(
                "{count} responses with the unexpected code {code} (first: {example:?})"
            ));
        }
    }

    // Subscribers: updates, delays and whether each saw the end state.
    let mut delays = Latencies::new();
    let mut missed = 0;
    let mut connected = 0;
    let mut saw_final = 0;
    let mut errors = Vec::new();
    let mut updates = 0u64;
    let mut acks_by_sale: Vec<Vec<(Instant, u64)>> = vec![Vec::new(); sales.len()];
    for ack in &log.acks {
        acks_by_sale[ack.sale].push((ack.at, ack.tickets));
    }
    for (log_of, &watched) in subscriber_logs.iter().zip(&subscriber_sales) {
        updates += log_of.updates.len() as u64;
        if let Some(error) = &log_of.error {
            errors.push(error.clone());
        } else {
            connected += 1;
        }
        missed += update_delays(&mut acks_by_sale[watched], log_of, &mut delays);
        if log_of
            .updates
            .last()
            .is_some_and(|(_, sold)| *sold >= final_sold[watched])
        {
            saw_final += 1;
        }
    }
    let saw_zero = subscriber_logs
        .iter()
        .filter(|l| l.last_available == Some(0))
        .count();
    if !errors.is_empty() {
        failures.push(format!(
            "{} subscribers failed, first: {}",
            errors.len(),
            errors[0]
        ));
    }
    if config.subscribers > 0 && saw_final < config.subscribers {
        failures.push(format!(
            "only {saw_final} of {} subscribers saw the final sold count",
            config.subscribers
        ));
    }

    if let Some(process) = server.as_ref().and_then(ServerProcess::pid) {
        sampler.sample(process);
    }
    sampling.abort();
    if let Some(mut process) = server {
        process.stop().await?;
    }

    let successful = log.acks.len() as u64;
    let tickets: u64 = log.acks.iter().map(|a| a.tickets).sum();
    let seconds = sale_duration.as_secs_f64().max(1e-9);
    let passed = failures.is_empty();
    Ok(Report {
        scenario: config.scenario,
        started_at,
        target: base_url,
        config: serde_json::to_value(&config)?,
        sale_seconds: seconds,
        purchases: PurchaseFigures {
            requests: latencies.len(),
            successful,
            tickets,
            purchases_per_second: successful as f64 / seconds,
            tickets_per_second: tickets as f64 / seconds,
            abandoned_hold_tickets: log.abandoned_tickets,
            unresolved: log.unresolved,
        },
        latency: latencies.summary(),
        outcomes: log.outcomes,
        error_examples: log.examples,
        subscribers: SubscriberFigures {
            requested: config.subscribers,
            connected,
            updates_received: updates,
            saw_final_count: saw_final,
            saw_zero_available: saw_zero,
            delay: delays.summary(),
            missed_acknowledgements: missed,
        },
        server_peak_rss_bytes: sampler.peak(),
        server_rss_before_sale_bytes: rss_before_sale,
        crash: crash_report,
        events,
        failures,
        passed,
    })
}

fn allowed_codes(scenario: Scenario) -> &'static [&'static str] {
    match scenario {
        Scenario::Hot | Scenario::Ci | Scenario::ManyEvents => &["OK", "SOLD_OUT"],
        Scenario::Seated => &["OK", "SOLD_OUT", "SEAT_TAKEN"],
        Scenario::HoldPay => &["OK", "SOLD_OUT", "PAYMENT_DECLINED"],
        // Requests in flight at the kill fail on the socket; they are retried under the
        // same idempotency key, and only unresolved ones fail the run.
        Scenario::Crash => &[
            "OK",
            "SOLD_OUT",
            "CONNECTION",
            "TIMEOUT",
            "BAD_RESPONSE",
            "HTTP_503",
        ],
    }
}

struct Buyer {
    client: GqlClient,
    token: String,
    sales: Arc<Vec<Sale>>,
    config: Config,
    /// Tickets acknowledged over all buyers (the crash scenario's trigger).
    sold: Arc<AtomicU64>,
    rng: StdRng,
    log: BuyerLog,
}

impl Buyer {
    async fn run(mut self) -> BuyerLog {
        match self.config.scenario {
            Scenario::Seated => self.buy_seats().await,
            _ => self.buy_quantities().await,
        }
        self.log
    }

    /// Buys quantities until every event is sold out for this buyer.
    async fn buy_quantities(&mut self) {
        let mut open: Vec<usize> = (0..self.sales.len()).collect();
        let mut single = vec![false; self.sales.len()];
        let mut unexpected_in_a_row = 0;
        while !open.is_empty() && unexpected_in_a_row < 20 {
            let pick = self.rng.gen_range(0..open.len());
            let sale = open[pick];
            let quantity = if single[sale] {
                1
            } else {
                self.rng.gen_range(1..=self.config.max_quantity.max(1))
            };
            let result = match self.config.scenario {
                Scenario::HoldPay => self.hold_then_pay(sale, quantity).await,
                _ => self.purchase(sale, quantity, None).await,
            };
            match result.as_ref().map_err(String::as_str) {
                Ok(()) => unexpected_in_a_row = 0,
                Err("SOLD_OUT") if quantity > 1 => single[sale] = true,
                Err("SOLD_OUT") => {
                    open.swap_remove(pick);
                }
                Err("PAYMENT_DECLINED") => unexpected_in_a_row = 0,
                Err(_) => unexpected_in_a_row += 1,
            }
        }
    }

    /// Seated: mostly the best seats, a block of adjacent ones, until one purchase
    /// succeeds or the attempts run out.
    async fn buy_seats(&mut self) {
        let sale = &self.sales[0];
        let (seat_count, row_len) = (sale.seats.len(), sale.row_len.max(1));
        let best = (seat_count / 20).max(row_len).min(seat_count);
        for _ in 0..self.config.seat_attempts {
            let quantity = self.rng.gen_range(1..=self.config.max_quantity.max(1)) as usize;
            let pool = if self
                .rng
                .gen_bool(self.config.hot_seat_share.clamp(0.0, 1.0))
            {
                best
            } else {
                seat_count
            };
            let first = self.rng.gen_range(0..pool);
            // Stay in the row: adjacent seats.
            let row_start = first - first % row_len;
            let start = first.min(row_start + row_len - quantity.min(row_len));
            let end = (start + quantity).min(row_start + row_len).min(seat_count);
            let seats: Vec<String> = self.sales[0].seats[start..end].to_vec();
            if seats.is_empty() {
                continue;
            }
            if self
                .purchase(0, seats.len() as u32, Some(seats))
                .await
                .is_ok()
            {
                return;
            }
        }
    }

    /// One `purchaseTickets`; `Err` holds the outcome code.
    async fn purchase(
        &mut self,
        sale: usize,
        quantity: u32,
        seats: Option<Vec<String>>,
    ) -> Result<(), String> {
        let s = &self.sales[sale];
        let key = uuid::Uuid::new_v4().to_string();
        let mut input = json!({
            "eventId": s.event_id, "tierId": s.tier_id,
            "paymentToken": GOOD_CARD, "idempotencyKey": key,
        });
        match &seats {
            Some(seats) => input["seats"] = json!(seats),
            None => input["quantity"] = json!(quantity),
        }
        let data = self.call("", PURCHASE, json!({ "input": input })).await?;
        self.acknowledge(sale, &data["purchaseTickets"], u64::from(quantity))
    }

    /// `holdTickets`, then pay it (or decline, or abandon it).
    async fn hold_then_pay(&mut self, sale: usize, quantity: u32) -> Result<(), String> {
        let s = &self.sales[sale];
        let input = json!({
            "eventId": s.event_id, "tierId": s.tier_id, "quantity": quantity,
            "idempotencyKey": uuid::Uuid::new_v4().to_string(),
        });
        let held = self.call("hold ", HOLD, json!({ "input": input })).await?;
        let Some(order_id) = held["holdTickets"]["id"].as_str().map(str::to_owned) else {
            return Err("BAD_RESPONSE".into());
        };
        let roll: f64 = self.rng.r#gen();
        if roll < self.config.abandon_share {
            self.log.abandoned_tickets += u64::from(quantity);
            return Ok(());
        }
        let card = if roll < self.config.abandon_share + self.config.decline_share {
            DECLINED_CARD
        } else {
            GOOD_CARD
        };
        let variables = json!({
            "orderId": order_id, "token": card,
            "key": uuid::Uuid::new_v4().to_string(),
        });
        let data = self.call("pay ", PAY, variables).await?;
        self.acknowledge(sale, &data["payOrder"], u64::from(quantity))
    }

    fn acknowledge(&mut self, sale: usize, order: &Value, quantity: u64) -> Result<(), String> {
        let at = Instant::now();
        let status = order["status"].as_str().unwrap_or_default();
        let Some(order_id) = order["id"].as_str().filter(|_| status == "PAID") else {
            let code = format!("NOT_PAID_{status}");
            *self.log.outcomes.entry(code.clone()).or_default() += 1;
            return Err(code);
        };
        let tickets = order["quantity"].as_u64().unwrap_or(quantity);
        self.sold.fetch_add(tickets, Ordering::Relaxed);
        self.log.acks.push(Ack {
            sale,
            order_id: order_id.to_owned(),
            tickets,
            at,
        });
        Ok(())
    }

    /// One request, retried under the same body (so the same idempotency key) while its
    /// outcome is unknown; records latency and outcome of every attempt.
    async fn call(&mut self, label: &str, query: &str, variables: Value) -> Result<Value, String> {
        let give_up = Instant::now() + Duration::from_secs(180);
        let mut backoff = Duration::from_millis(50);
        loop {
            let sent = Instant::now();
            let result = self
                .client
                .call(query, variables.clone(), Some(&self.token))
                .await;
            self.log.latencies.push(sent.elapsed());
            let code = match &result {
                Ok(_) => "OK".to_owned(),
                Err(e) => e.code.clone(),
            };
            *self
                .log
                .outcomes
                .entry(format!("{label}{code}"))
                .or_default() += 1;
            if let Err(e) = &result {
                self.log
                    .examples
                    .entry(format!("{label}{code}"))
                    .or_insert_with(|| e.message.clone());
            }
            match result {
                Ok(data) => return Ok(data),
                Err(e) if e.is_ambiguous() && Instant::now() < give_up => {
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    if e.is_ambiguous() {
                        self.log.unresolved += 1;
                    }
                    return Err(e.code);
                }
            }
        }
    }
}

async fn login(client: &GqlClient, email: &str, password: &str) -> Result<String, CallError> {
    let data = client
        .call(
            "mutation($email: String!, $password: String!) { login(email: $email, password: $password) { token } }",
            json!({ "email": email, "password": password }),
            None,
        )
        .await?;
    data["login"]["token"]
        .as_str()
        .map(str::to_owned)
        .ok_or_else(|| CallError {
            code: "BAD_RESPONSE".into(),
            message: "no token".into(),
        })
}

async fn register_buyers(
    client: &GqlClient,
    count: usize,
    run_id: &str,
) -> anyhow::Result<Vec<String>> {
    let results: Vec<Result<String, CallError>> = stream::iter(0..count)
        .map(|index| {
            let client = client.clone();
            let email = format!("buyer-{index}-{run_id}@example.com");
            async move {
                client
                    .call(
                        "mutation($input: RegisterInput!) { register(input: $input) { id } }",
                        json!({ "input": { "email": email, "password": BUYER_PASSWORD, "displayName": format!("Buyer {index}") } }),
                        None,
                    )
                    .await?;
                login(&client, &email, BUYER_PASSWORD).await
            }
        })
        .buffered(8)
        .collect()
        .await;
    results
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("registering buyers: {e}"))
}

async fn create_sales(
    client: &GqlClient,
    admin: &str,
    config: &Config,
) -> anyhow::Result<Vec<Sale>> {
    let count = match config.scenario {
        Scenario::ManyEvents => config.events.max(1),
        _ => 1,
    };
    if config.tickets < count as u32 {
        bail!("--tickets must be at least the number of events");
    }
    let starts_at = chrono::Utc::now() + chrono::Duration::days(30);
    let mut sales = Vec::new();
    for index in 0..count {
        let capacity = config.tickets / count as u32
            + u32::from((index as u32) < config.tickets % count as u32);
        let seated = config.scenario == Scenario::Seated;
        let row_len = 50usize;
        let seats: Vec<String> = if seated {
            (0..capacity as usize)
                .map(|i| format!("{}-{}", row_name(i / row_len), i % row_len + 1))
                .collect()
        } else {
            Vec::new()
        };
        let tier = if seated {
            json!({ "name": "Seated", "priceMinor": 5000, "currency": "EUR", "seats": seats })
        } else {
            json!({ "name": "Standard", "priceMinor": 5000, "currency": "EUR", "capacity": capacity })
        };
        let data = client
            .call(
                "mutation($input: CreateEventInput!) { createEvent(input: $input) { id tiers { id capacity } } }",
                json!({ "input": {
                    "name": format!("Load test {} #{index}", uuid::Uuid::new_v4().simple()),
                    "venue": "Loopback Arena",
                    "startsAt": starts_at,
                    "endsAt": starts_at + chrono::Duration::hours(4),
                    "tiers": [tier],
                }}),
                Some(admin),
            )
            .await
            .map_err(|e| anyhow::anyhow!("creating an event: {e}"))?;
        let event = &data["createEvent"];
        let event_id = event["id"].as_str().context("event id")?.to_owned();
        let tier_id = event["tiers"][0]["id"]
            .as_str()
            .context("tier id")?
            .to_owned();
        client
            .call(
                "mutation($id: ID!) { publishEvent(eventId: $id) { id status } }",
                json!({ "id": event_id }),
                Some(admin),
            )
            .await
            .map_err(|e| anyhow::anyhow!("publishing an event: {e}"))?;
        sales.push(Sale {
            event_id,
            tier_id,
            capacity,
            seats,
            row_len,
        });
    }
    Ok(sales)
}

fn row_name(mut index: usize) -> String {
    let mut name = Vec::new();
    loop {
        name.push(b'A' + (index % 26) as u8);
        if index < 26 {
            break;
        }
        index = index / 26 - 1;
    }
    name.reverse();
    String::from_utf8_lossy(&name).into_owned()
}

/// Read-side figures of one tier.
struct ReadFigures {
    capacity: u64,
    sold: u64,
    held: u64,
    available: u64,
    report_sold: u64,
}

async fn read_side(client: &GqlClient, admin: &str, sale: &Sale) -> anyhow::Result<ReadFigures> {
    let data = client
        .call(
            "query($id: ID!) { event(id: $id) { tiers { id capacity sold held available } } salesReport(eventId: $id) { tiers { tierId sold } } }",
            json!({ "id": sale.event_id }),
            Some(admin),
        )
        .await
        .map_err(|e| anyhow::anyhow!("reading the event: {e}"))?;
    let tier = data["event"]["tiers"]
        .as_array()
        .and_then(|tiers| tiers.iter().find(|t| t["id"] == sale.tier_id.as_str()))
        .context("the tier is missing from the event")?;
    let report_sold = data["salesReport"]["tiers"]
        .as_array()
        .and_then(|tiers| tiers.iter().find(|t| t["tierId"] == sale.tier_id.as_str()))
        .and_then(|t| t["sold"].as_u64())
        .context("the tier is missing from the sales report")?;
    let n = |field: &str| tier[field].as_u64().unwrap_or(u64::MAX);
    Ok(ReadFigures {
        capacity: n("capacity"),
        sold: n("sold"),
        held: n("held"),
        available: n("available"),
        report_sold,
    })
}

/// The event's state in the store, replayed by `ticketing audit state-at`.
async fn store_state(
    binary: &std::path::Path,
    data_dir: &std::path::Path,
    event_id: &str,
) -> anyhow::Result<Value> {
    let output = tokio::process::Command::new(binary)
        .arg("audit")
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--format")
        .arg("json")
        .arg("state-at")
        .arg(event_id)
        .arg("--position")
        .arg(u64::MAX.to_string())
        .output()
        .await
        .context("running ticketing audit")?;
    if !output.status.success() {
        bail!(
            "ticketing audit failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).context("parsing the audit's JSON")
}

async fn check_event(
    client: &GqlClient,
    admin: &str,
    sale: &Sale,
    acked: &[&Ack],
    binary: Option<&std::path::Path>,
    data_dir: Option<&std::path::Path>,
    scenario: Scenario,
) -> anyhow::Result<EventCheck> {
    let mut failures = Vec::new();
    let acked_tickets: u64 = acked.iter().map(|a| a.tickets).sum();
    let read = read_side(client, admin, sale).await?;
    let capacity = u64::from(sale.capacity);
    if read.capacity != capacity {
        failures.push(format!(
            "read side capacity {} != {capacity}",
            read.capacity
        ));
    }
    if read.sold > capacity {
        failures.push(format!(
            "OVERSOLD on the read side: {} > capacity {capacity}",
            read.sold
        ));
    }
    if read.sold != acked_tickets {
        failures.push(format!(
            "read side sold {} != {acked_tickets} acknowledged",
            read.sold
        ));
    }
    if read.report_sold != read.sold {
        failures.push(format!(
            "sales report sold {} != event sold {}",
            read.report_sold, read.sold
        ));
    }
    if read.sold + read.held + read.available != capacity {
        failures.push(format!(
            "sold {} + held {} + available {} != capacity {capacity}",
            read.sold, read.held, read.available
        ));
    }

    let mut store_sold = None;
    let mut store_held = None;
    let mut lost = None;
    let mut unacknowledged = None;
    if let (Some(binary), Some(data_dir)) = (binary, data_dir) {
        let state = store_state(binary, data_dir, &sale.event_id).await?;
        let state = &state["state"];
        let tier = state["tiers"]
            .as_array()
            .and_then(|tiers| tiers.iter().find(|t| t["tierId"] == sale.tier_id.as_str()))
            .context("the tier is missing from the stored state")?;
        let sold = tier["sold"].as_u64().unwrap_or(u64::MAX);
        let held = tier["held"].as_u64().unwrap_or(u64::MAX);
        store_sold = Some(sold);
        store_held = Some(held);
        if sold > capacity {
            failures.push(format!(
                "OVERSOLD in the store: {sold} > capacity {capacity}"
            ));
        }
        if sold != acked_tickets {
            failures.push(format!("store sold {sold} != {acked_tickets} acknowledged"));
        }
        if let Some(violation) = state["invariantViolation"].as_str() {
            failures.push(format!(
                "the stored state violates an invariant: {violation}"
            ));
        }
        let orders: HashMap<&str, &Value> = state["orders"]
            .as_array()
            .map(|orders| {
                orders
                    .iter()
                    .filter_map(|o| Some((o["orderId"].as_str()?, o)))
                    .collect()
            })
            .unwrap_or_default();
        let missing = acked
            .iter()
            .filter(|ack| {
                !orders.get(ack.order_id.as_str()).is_some_and(|o| {
                    o["status"] == "PAID" && o["quantity"].as_u64() == Some(ack.tickets)
                })
            })
            .count() as u64;
        if missing > 0 {
            failures.push(format!(
                "LOST PURCHASES: {missing} acknowledged orders are not paid in the store"
            ));
        }
        lost = Some(missing);
        let acked_ids: HashSet<&str> = acked.iter().map(|a| a.order_id.as_str()).collect();
        let paid_unacked: Vec<&str> = orders
            .iter()
            .filter(|(id, o)| o["status"] == "PAID" && !acked_ids.contains(*id))
            .map(|(id, _)| *id)
            .collect();
        if !paid_unacked.is_empty() {
            failures.push(format!(
                "{} orders are paid in the store but their buyers were not told so (e.g. {})",
                paid_unacked.len(),
                paid_unacked[0]
            ));
        }
        unacknowledged = Some(paid_unacked.len() as u64);
        if scenario == Scenario::Seated {
            let mut taken = HashSet::new();
            for order in orders.values().filter(|o| o["status"] == "PAID") {
                for seat in order["seats"].as_array().into_iter().flatten() {
                    if !taken.insert(seat.as_str().unwrap_or_default().to_owned()) {
                        failures.push(format!("seat {seat} is in two paid orders"));
                    }
                }
            }
        }
        if scenario == Scenario::HoldPay && held != 0 {
            failures.push(format!(
                "{held} tickets still held in the store after expiry"
            ));
        }
    }

    Ok(EventCheck {
        event_id: sale.event_id.clone(),
        capacity,
        acknowledged_orders: acked.len() as u64,
        acknowledged_tickets: acked_tickets,
        read_sold: read.sold,
        read_held: read.held,
        read_available: read.available,
        report_sold: read.report_sold,
        store_sold,
        store_held,
        lost_purchases: lost,
        paid_not_acknowledged: unacknowledged,
        failures,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_are_named_like_spreadsheet_columns() {
        assert_eq!(row_name(0), "A");
        assert_eq!(row_name(25), "Z");
        assert_eq!(row_name(26), "AA");
        assert_eq!(row_name(27), "AB");
        assert_eq!(row_name(26 + 26 * 26), "AAA");
    }
}
