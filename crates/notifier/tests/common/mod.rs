//! Shared test harness: a real event store on disk, domain events appended the way the
//! command side stores them, a real SMTP server in its own process, and a notifier that can
//! run in its own process too (so it can be killed).
//!
//! Child processes are this very test binary re-executed with a role in the environment:
//! `child_role_entry` (an ignored test) runs the role instead of a test. That keeps the
//! tests runnable with nothing but `cargo test` (no other binary to build first).

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use domain::account::{AccountEvent, AccountRegistered};
use domain::codec::EventCodec;
use domain::ids::{Email, streams};
use domain::inventory::{EventCreated, EventDetails, InventoryEvent, IssuedTicket, OrderConfirmed};
use domain::money::Money;
use domain::{EventId, OrderId, Role, TicketId, UserId};
use notifier::{NotifierConfig, RetryPolicy, SmtpConfig, WorkerConfig};
use store::sqlite::{Durability, SqliteOptions, SqliteStore};
use store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use uuid::Uuid;

pub const ROLE_ENV: &str = "NOTIFIER_TEST_ROLE";

/// Runs a child role when this process was started as one; returns otherwise.
pub fn run_child_role() {
    let Ok(role) = std::env::var(ROLE_ENV) else {
        return;
    };
    match role.as_str() {
        "smtp-sink" => {
            let addr = std::env::var("SINK_ADDR").expect("SINK_ADDR");
            let dir = PathBuf::from(std::env::var("SINK_DIR").expect("SINK_DIR"));
            // The port was just released by the parent (or by the sink's previous life):
            // retry briefly while the kernel lets go of it.
            let deadline = Instant::now() + Duration::from_secs(10);
            let listener = loop {
                match TcpListener::bind(&addr) {
                    Ok(l) => break l,
                    Err(e) if Instant::now() < deadline => {
                        eprintln!("sink: bind {addr}: {e}; retrying");
                        std::thread::sleep(Duration::from_millis(50));
                    }
                    Err(e) => panic!("sink cannot bind {addr}: {e}"),
                }
            };
            smtp_sink::serve(listener, dir, 32).expect("sink");
        }
        "notifier" => {
            let store_path = std::env::var("STORE_PATH").expect("STORE_PATH");
            let db_path = std::env::var("NOTIFIER_DB").expect("NOTIFIER_DB");
            let port: u16 = std::env::var("SMTP_PORT")
                .expect("SMTP_PORT")
                .parse()
                .expect("port");
            let rt = tokio::runtime::Runtime::new().expect("runtime");
            rt.block_on(async move {
                let store = SqliteStore::open_read_only(&store_path, store_options())
                    .expect("open store read-only");
                let handle = notifier::Notifier::start(
                    notifier_config(Path::new(&db_path), port),
                    Arc::new(store),
                )
                .await
                .expect("start notifier");
                println!("notifier running");
                // Runs until killed: the test is about what a kill leaves behind.
                futures::future::pending::<()>().await;
                drop(handle);
            });
        }
        other => panic!("unknown role {other}"),
    }
}

pub fn store_options() -> SqliteOptions {
    SqliteOptions {
        // The tests are about the notifier: skip the per-commit fsync of the store.
        durability: Durability::Normal,
        verify_on_open: false,
        poll_interval: Duration::from_millis(20),
        ..SqliteOptions::default()
    }
}

/// Notifier settings for tests: quick retries, so an SMTP outage of a few seconds is
/// ridden out well within the budget of tries.
pub fn notifier_config(db: &Path, smtp_port: u16) -> NotifierConfig {
    let worker = WorkerConfig {
        retry: RetryPolicy {
            max_attempts: 40,
            base_delay: Duration::from_millis(50),
            max_delay: Duration::from_millis(500),
        },
        concurrency: 8,
        idle_poll: Duration::from_millis(200),
    };
    let mut smtp = SmtpConfig::plain("127.0.0.1", smtp_port, "Ticketing <tickets@ticketing.test>");
    smtp.timeout = Duration::from_secs(5);
    let mut config = NotifierConfig::new(db);
    config.smtp = Some(smtp);
    config.email = worker.clone();
    config.webhook = worker.clone();
    config.in_app = worker;
    config
}

/// A free TCP port on 127.0.0.1.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Spawns this test binary in `role`.
pub fn spawn_role(role: &str, env: &[(&str, String)]) -> Child {
    let exe = std::env::current_exe().expect("current exe");
    let mut cmd = Command::new(exe);
    cmd.args([
        "--exact",
        "child_role_entry",
        "--include-ignored",
        "--nocapture",
        "--test-threads=1",
    ])
    .env(ROLE_ENV, role)
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.spawn().expect("spawn child role")
}

/// The real SMTP server, in its own process.
pub struct Sink {
    pub port: u16,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Sink {
    pub fn start(dir: &Path) -> Self {
        let mut sink = Sink {
            port: free_port(),
            dir: dir.to_path_buf(),
            child: None,
        };
        sink.restart();
        sink
    }

    /// Starts the server again on the same port.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "sink already running");
        let child = spawn_role(
            "smtp-sink",
            &[
                ("SINK_ADDR", format!("127.0.0.1:{}", self.port)),
                ("SINK_DIR", self.dir.display().to_string()),
            ],
        );
        self.child = Some(child);
        let addr: SocketAddr = ([127, 0, 0, 1], self.port).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(Instant::now() < deadline, "SMTP sink did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL): connections drop mid-session.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn messages(&self) -> Vec<smtp_sink::StoredMessage> {
        smtp_sink::read_messages(&self.dir).expect("read sink dir")
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A child process killed when dropped.
pub struct ChildGuard(pub Option<Child>);

impl ChildGuard {
    pub fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

pub fn open_store(dir: &Path) -> SqliteStore {
    SqliteStore::open(dir.join("events.db"), store_options()).expect("open store")
}

fn meta(at: DateTime<Utc>) -> Metadata {
    Metadata {
        correlation_id: Uuid::now_v7(),
        causation_id: None,
        acting_user: None,
        recorded_at: at,
    }
}

fn encode<E: EventCodec>(event: &E) -> NewEvent {
    let (type_name, version, json) = domain::codec::encode(event);
    NewEvent::new(type_name, version, json, meta(Utc::now()))
}

/// Appends domain events to a stream the way the command side stores them.
pub async fn append<E: EventCodec>(store: &dyn EventStore, stream: &str, events: &[E]) {
    let stream = StreamName::new(stream).expect("stream name");
    store
        .append(
            &stream,
            ExpectedVersion::Any,
            events.iter().map(encode).collect(),
        )
        .await
        .expect("append");
}

pub fn email_of(i: usize) -> String {
    format!("buyer{i}@example.com")
}

/// Registers `n` users; returns their ids.
pub async fn register_users(store: &dyn EventStore, n: usize, offset: usize) -> Vec<UserId> {
    let mut out = Vec::new();
    for i in offset..offset + n {
        let user = UserId(Uuid::now_v7());
        let event = AccountEvent::AccountRegistered(AccountRegistered {
            user_id: user,
            email: Email::parse(&email_of(i)).expect("email"),
            display_name: format!("Buyer {i}"),
            password_hash: "$argon2id$placeholder".into(),
            roles: BTreeSet::from([Role::Customer]),
            at: Utc::now(),
        });
        append(store, &streams::user(user), &[event]).await;
        out.push(user);
    }
    out
}

pub fn details(starts_at: DateTime<Utc>) -> EventDetails {
    EventDetails {
        name: "RustConf Live".into(),
        description: "Talks".into(),
        venue: "Hall 1".into(),
        starts_at,
        ends_at: starts_at + chrono::Duration::hours(4),
        images: vec![],
    }
}

/// Creates a ticketed event starting at `starts_at`.
pub async fn create_event(store: &dyn EventStore, starts_at: DateTime<Utc>) -> EventId {
    let event = EventId(Uuid::now_v7());
    append(
        store,
        &streams::inventory(event),
        &[InventoryEvent::EventCreated(EventCreated {
            event_id: event,
            organizer: UserId(Uuid::now_v7()),
            details: details(starts_at),
        })],
    )
    .await;
    event
}

/// A confirmed order of `tickets` tickets for `user`.
pub fn confirmed(user: UserId, tickets: usize) -> OrderConfirmed {
    OrderConfirmed {
        order_id: OrderId(Uuid::now_v7()),
        user_id: user,
        payment_ref: format!("pay-{}", Uuid::now_v7()),
        amount: Money::price(2500 * tickets as i64, "EUR").expect("price"),
        tickets: (0..tickets)
            .map(|i| IssuedTicket {
                ticket_id: TicketId(Uuid::now_v7()),
                secret: format!("secret-{i}"),
                seat: None,
            })
            .collect(),
        at: Utc::now(),
        command: None,
    }
}

/// Appends one confirmed order per user (one append each, as the inventory actor would).
pub async fn confirm_orders(
    store: &dyn EventStore,
    event: EventId,
    users: &[UserId],
) -> Vec<OrderConfirmed> {
    let mut out = Vec::new();
    for user in users {
        let order = confirmed(*user, 2);
        append(
            store,
            &streams::inventory(event),
            &[InventoryEvent::OrderConfirmed(order.clone())],
        )
        .await;
        out.push(order);
    }
    out
}

/// Messages per Message-ID, and the raw number of messages.
pub fn by_message_id(
    messages: &[smtp_sink::StoredMessage],
) -> (BTreeMap<String, Vec<smtp_sink::StoredMessage>>, usize) {
    let mut map: BTreeMap<String, Vec<_>> = BTreeMap::new();
    for m in messages {
        let id = m
            .message_id
            .clone()
            .expect("every message has a Message-ID");
        map.entry(id).or_default().push(m.clone());
    }
    (map, messages.len())
}

/// Waits until `check` holds, or panics with `what` after `timeout`.
pub async fn wait_for(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Waits until the async `check` holds, or panics with `what` after `timeout`.
pub async fn wait_for_async<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Asserts that exactly the confirmations of `orders` arrived, one per order by
/// Message-ID, each to its buyer and listing its tickets. Returns the raw message count
/// (which may exceed the number of orders only through a crash between the server's
/// acceptance and the notifier's bookkeeping; receivers drop those by Message-ID).
pub fn assert_confirmations(sink: &Sink, orders: &[(usize, OrderConfirmed)]) -> usize {
    let messages = sink.messages();
    let (by_id, raw) = by_message_id(&messages);
    let confirmations: Vec<_> = by_id
        .values()
        .filter(|copies| {
            copies[0]
                .header("Subject")
                .is_some_and(|s| s.starts_with("Your tickets"))
        })
        .collect();
    assert_eq!(
        confirmations.len(),
        orders.len(),
        "one confirmation per order"
    );
    for copies in &confirmations {
        // Copies of one Message-ID are the same message (up to the MIME boundary and
        // Date header, which are drawn afresh for each try).
        for c in copies.iter() {
            assert_eq!(normalised(c), normalised(&copies[0]));
            assert_eq!(c.envelope_to, copies[0].envelope_to);
        }
    }
    for (i, order) in orders {
        let to = email_of(*i);
        let mine: Vec<_> = confirmations
            .iter()
            .filter(|c| c[0].envelope_to == vec![to.clone()])
            .collect();
        assert_eq!(mine.len(), 1, "{to} gets exactly one confirmation");
        let body = decode_qp(&mine[0][0].raw);
        assert!(
            body.contains(&order.order_id.to_string()),
            "{to}: order id in {body}"
        );
        for t in &order.tickets {
            assert!(
                body.contains(&t.ticket_id.to_string()),
                "{to}: ticket {} missing",
                t.ticket_id
            );
        }
    }
    raw
}

/// Undoes quoted-printable soft line breaks and `=3D`, enough to search bodies for ids.
pub fn decode_qp(raw: &str) -> String {
    raw.replace("=\r\n", "").replace("=3D", "=")
}

/// A message without what changes between two tries of the same notification.
fn normalised(m: &smtp_sink::StoredMessage) -> String {
    let mut raw = m.raw.clone();
    if let Some(boundary) = m.header("Content-Type").and_then(|ct| {
        ct.split("boundary=")
            .nth(1)
            .map(|b| b.trim_matches('"').to_string())
    }) {
        raw = raw.replace(&boundary, "BOUNDARY");
    }
    raw.split("\r\n")
        .filter(|line| !line.starts_with("Date:"))
        .collect::<Vec<_>>()
        .join("\r\n")
}
