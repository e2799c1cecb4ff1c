//! Email leaves the running system: the application is configured with the SMTP settings
//! of a real `smtp-sink` process, and a purchase's confirmation arrives there.

mod common;

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use api::config::{SmtpSettings, SmtpTlsMode};
use common::{TestApp, test_config};
use serde_json::json;

/// The `smtp-sink` child process, killed when the test ends however it ends.
struct SmtpSink {
    child: Child,
    addr: SocketAddr,
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Builds the `smtp-sink` binary into this test's own target directory (a no-op when it
/// is up to date) and returns its path.
fn smtp_sink_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    // target/<profile>/deps/<test> -> target/<profile>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("profile directory");
    let target_dir = profile_dir.parent().expect("target directory");
    let mut build = Command::new(env!("CARGO"));
    build.args(["build", "--quiet", "-p", "smtp-sink", "--bin", "smtp-sink"]);
    build.arg("--target-dir").arg(target_dir);
    if profile_dir
        .file_name()
        .is_some_and(|name| name == "release")
    {
        build.arg("--release");
    }
    let status = build.status().expect("cargo runs");
    assert!(status.success(), "building smtp-sink failed");
    profile_dir.join(format!("smtp-sink{}", std::env::consts::EXE_SUFFIX))
}

/// Starts `smtp-sink` on a free port, storing messages in `dir`.
fn start_sink(dir: &Path) -> SmtpSink {
    let mut child = Command::new(smtp_sink_binary())
        .arg("--addr")
        .arg("127.0.0.1:0")
        .arg("--dir")
        .arg(dir)
        .stdout(Stdio::piped())
        .spawn()
        .expect("smtp-sink starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    BufReader::new(stdout)
        .read_line(&mut line)
        .expect("smtp-sink announces its address");
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .and_then(|addr| addr.parse().ok())
        .unwrap_or_else(|| panic!("unexpected smtp-sink output {line:?}"));
    SmtpSink { child, addr }
}

/// Messages stored in `dir` so far.
fn stored_messages(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
        .filter_map(|path| std::fs::read_to_string(path).ok())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purchase_confirmation_reaches_the_smtp_server() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mail_dir = dir.path().join("mail");
    let sink = start_sink(&mail_dir);

    let mut config = test_config(&dir.path().join("data"));
    config.smtp = SmtpSettings {
        smtp_host: Some(sink.addr.ip().to_string()),
        smtp_port: Some(sink.addr.port()),
        smtp_tls: SmtpTlsMode(notifier::SmtpTls::None),
        smtp_from: "Box Office <box-office@tickets.example>".to_owned(),
        ..SmtpSettings::default()
    };
    let app = TestApp::start(config).await;
    let (_, organizer) = app.with_role("org@example.com", "ORGANIZER").await;
    let (event_id, tier_id) = app.published_event(&organizer, 10).await;
    let (_, alice) = app.customer("alice@example.com").await;
    let bought = app
        .ok(
            Some(&alice),
            "mutation($i: PurchaseTicketsInput!) { purchaseTickets(input: $i) { id status } }",
            json!({ "i": {
                "eventId": event_id, "tierId": tier_id, "quantity": 2,
                "idempotencyKey": "alice-buys", "paymentToken": "tok_success"
            } }),
        )
        .await;
    assert_eq!(bought["purchaseTickets"]["status"], "PAID");

    let deadline = Instant::now() + Duration::from_secs(60);
    let confirmation = loop {
        let found = stored_messages(&mail_dir).into_iter().find(|message| {
            message.contains("X-Envelope-To: alice@example.com")
                && message.contains("Your tickets for Rust Nation")
        });
        if let Some(message) = found {
            break message;
        }
        assert!(
            Instant::now() < deadline,
            "no confirmation email arrived; stored: {:?}",
            stored_messages(&mail_dir)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        confirmation.contains("box-office@tickets.example"),
        "the configured sender is the From: {confirmation}"
    );

    app.stop().await;
    drop(sink);
}
