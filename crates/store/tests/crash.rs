//! Crash safety: a child process appends under load and is killed with SIGKILL; after
//! reopening, every acknowledged append is there, whole, and every stream's versions are
//! contiguous. Also: a second process cannot open the store for writing.
//!
//! The test re-runs its own binary in "child mode" (selected by an environment variable).
//! The child prints one line per acknowledged append; the parent reads the lines, kills
//! the child mid-flight, reopens the store and checks.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use store::sqlite::{SqliteOptions, SqliteStore};
use store::{EventStore, ExpectedVersion, Metadata, NewEvent, StreamName};
use uuid::Uuid;

const CHILD_ENV: &str = "STORE_CRASH_CHILD_PATH";
const WRITERS: usize = 48;
const HOT_STREAMS: usize = 4;

fn spawn_child(path: &Path) -> Child {
    Command::new(std::env::current_exe().expect("test binary"))
        .args([
            "child_appends_until_killed",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD_ENV, path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// Not a test of its own: the body of the child process (does nothing unless the parent
/// set the environment variable).
#[test]
fn child_appends_until_killed() {
    let Ok(path) = std::env::var(CHILD_ENV) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async move {
        // A short log, so that checkpoints (beside the writer and on it) are running
        // when the kill comes.
        let options = SqliteOptions {
            checkpoint_pages: 64,
            ..SqliteOptions::default()
        };
        let store = Arc::new(SqliteStore::open(&path, options).expect("child open"));
        let out = Arc::new(std::sync::Mutex::new(std::io::stdout()));
        writeln!(out.lock().expect("stdout"), "READY").expect("print");
        let mut tasks = Vec::new();
        for w in 0..WRITERS {
            let (store, out) = (store.clone(), out.clone());
            tasks.push(tokio::spawn(async move {
                // Most writers own a stream; some share hot streams and conflict.
                let stream = if w < HOT_STREAMS * 3 {
                    StreamName::new(format!("hot-{}", w % HOT_STREAMS))
                } else {
                    StreamName::new(format!("own-{w}"))
                }
                .expect("name");
                let mut n = 0usize;
                loop {
                    n += 1;
                    let version = store.stream_version(&stream).await.expect("version");
                    let expected =
                        version.map_or(ExpectedVersion::NoStream, ExpectedVersion::Exact);
                    let size = 1 + n % 3;
                    let append_id = Uuid::now_v7();
                    let events: Vec<NewEvent> = (0..size)
                        .map(|i| {
                            let data = format!(r#"{{"append":"{append_id}","i":{i},"of":{size}}}"#);
                            NewEvent::new(
                                "CrashTested",
                                1,
                                data.into_bytes(),
                                Metadata {
                                    correlation_id: append_id,
                                    causation_id: None,
                                    acting_user: None,
                                    recorded_at: Utc::now(),
                                },
                            )
                        })
                        .collect();
                    let ids: Vec<String> = events.iter().map(|e| e.id.to_string()).collect();
                    match store.append(&stream, expected, events).await {
                        Ok(r) => {
                            let line = format!(
                                "ACK {stream} {} {} {} END",
                                r.first_version,
                                r.last_version,
                                ids.join(",")
                            );
                            writeln!(out.lock().expect("stdout"), "{line}").expect("print");
                        }
                        Err(store::StoreError::WrongExpectedVersion { .. }) => {}
                        Err(e) => panic!("child append failed: {e}"),
                    }
                }
            }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
}

/// Skips the test harness's own output up to the child's READY line.
fn wait_ready(lines: &mut impl Iterator<Item = std::io::Result<String>>) {
    for line in lines.by_ref() {
        let line = line.expect("child output");
        if line.ends_with("READY") {
            return;
        }
    }
    panic!("child exited before it was ready");
}

struct Ack {
    stream: String,
    first: u64,
    last: u64,
    ids: Vec<Uuid>,
}

fn parse(line: &str) -> Option<Ack> {
    let parts: Vec<&str> = line.split(' ').collect();
    if parts.len() != 6 || parts[0] != "ACK" || parts[5] != "END" {
        return None;
    }
    Some(Ack {
        stream: parts[1].to_string(),
        first: parts[2].parse().ok()?,
        last: parts[3].parse().ok()?,
        ids: parts[4]
            .split(',')
            .map(|s| s.parse().ok())
            .collect::<Option<_>>()?,
    })
}

/// Runs one child until it acknowledged at least `want` appends, kills it with SIGKILL, and
/// returns every acknowledgement it printed.
fn run_and_kill(path: &Path, want: usize) -> Vec<Ack> {
    let mut child = spawn_child(path);
    let stdout = child.stdout.take().expect("stdout");
    // A thread reads the child's output so that the parent can give up on a stuck child.
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut ready = false;
    let mut acks = Vec::new();
    while acks.len() < want {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.ends_with("READY") => ready = true,
            Ok(line) => acks.extend(parse(&line)),
            Err(_) => break,
        }
    }
    // Kill mid-flight: appends are queued and in the middle of commits right now.
    child.kill().expect("SIGKILL");
    let status = child.wait().expect("wait");
    reader.join().expect("reader thread");
    // Lines written before the kill are acknowledgements too.
    for line in rx.try_iter() {
        acks.extend(parse(&line));
    }
    assert!(ready, "child never became ready");
    assert!(!status.success(), "child must have been killed");
    assert!(
        acks.len() >= want,
        "child acknowledged only {} appends in 60 s",
        acks.len()
    );
    acks
}

async fn check(path: &Path, acks: &[Ack]) -> usize {
    let store = SqliteStore::open(path, SqliteOptions::default()).expect("reopen after SIGKILL");
    let mut by_stream: HashMap<String, Vec<store::RecordedEvent>> = HashMap::new();
    let mut cursor = store::Position::START;
    loop {
        let page = store.read_all(cursor, 5000).await.expect("read_all");
        let Some(last) = page.last() else { break };
        assert!(last.position > cursor);
        cursor = last.position;
        for e in page {
            by_stream.entry(e.stream.to_string()).or_default().push(e);
        }
    }
    // Versions contiguous, and no append partly present.
    let mut total = 0;
    for (stream, events) in &by_stream {
        total += events.len();
        for (i, e) in events.iter().enumerate() {
            assert_eq!(
                e.version, i as u64,
                "stream {stream}: versions must be contiguous"
            );
        }
        let mut groups: HashMap<String, (u64, u64)> = HashMap::new();
        for e in events {
            let v: serde_json::Value = serde_json::from_slice(&e.data).expect("json");
            let append = v["append"].as_str().expect("append id").to_string();
            let of = v["of"].as_u64().expect("of");
            let entry = groups.entry(append).or_insert((0, of));
            entry.0 += 1;
        }
        for (append, (seen, of)) in groups {
            assert_eq!(
                seen, of,
                "stream {stream}: append {append} is partly present"
            );
        }
    }
    // Every acknowledged append is present with the versions it was acknowledged with.
    for ack in acks {
        let events = by_stream
            .get(&ack.stream)
            .unwrap_or_else(|| panic!("acknowledged stream {} lost", ack.stream));
        for (k, id) in ack.ids.iter().enumerate() {
            let version = ack.first + k as u64;
            let e = events
                .get(version as usize)
                .unwrap_or_else(|| panic!("{} v{version} lost", ack.stream));
            assert_eq!(e.id, *id, "{} v{version} holds another event", ack.stream);
        }
        assert_eq!(ack.last, ack.first + ack.ids.len() as u64 - 1);
    }
    store.shutdown().await;
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_appends_survive_sigkill() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("events.sqlite3");
    let mut all_acks = Vec::new();
    let mut previous = 0;
    // Several crash/reopen cycles on the same file: recovery must also survive a crash.
    for round in 0..3 {
        let path2 = path.clone();
        let acks = tokio::task::spawn_blocking(move || run_and_kill(&path2, 1500 + round * 500))
            .await
            .expect("child round");
        all_acks.extend(acks);
        let total = check(&path, &all_acks).await;
        eprintln!(
            "round {round}: {} appends acknowledged so far, {total} events stored",
            all_acks.len()
        );
        assert!(total > previous, "round {round} stored nothing new");
        previous = total;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_open_the_store_for_writing() {
    if std::env::var(CHILD_ENV).is_ok() {
        return;
    }
    let dir = tempfile::tempdir().expect("dir");
    let path = dir.path().join("events.sqlite3");
    let path2 = path.clone();
    let mut child = tokio::task::spawn_blocking(move || {
        let mut child = spawn_child(&path2);
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        wait_ready(&mut lines);
        // Keep draining so the child never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        child
    })
    .await
    .expect("spawn");
    match SqliteStore::open(&path, SqliteOptions::default()) {
        Err(e) => assert_eq!(e.code(), "LOCKED", "{e}"),
        Ok(_) => panic!("a second writer process must be refused"),
    }
    // Reading beside the writer is allowed.
    let reader = SqliteStore::open_read_only(
        &path,
        SqliteOptions {
            verify_on_open: false,
            ..SqliteOptions::default()
        },
    )
    .expect("read-only open beside the writer");
    assert!(
        reader.head().await.expect("head").0 > 0
            || reader.read_all(store::Position::START, 1).await.is_ok()
    );
    child.kill().expect("kill");
    child.wait().expect("wait");
    // The lock dies with its process.
    SqliteStore::open(&path, SqliteOptions::default()).expect("open after the writer died");
}
