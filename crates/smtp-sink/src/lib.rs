//! A small SMTP server that stores every message it accepts, one file per message, in a
//! directory.
//!
//! It exists so that tests and benchmarks can deliver mail to a real SMTP server running in
//! its own process, stop it in the middle of a burst and start it again on the same port.
//! The SMTP protocol is handled by `mailin-embedded`; this crate only decides what to do
//! with an accepted message: it writes it to a temporary file, syncs it and renames it into
//! place *before* the server answers `250 OK`, so a message the client saw accepted is on
//! disk even if the sink is killed right after.
//!
//! Each stored file starts with one `X-Envelope-To: <address>` line per envelope recipient,
//! followed by the message exactly as received.

use std::fs::{self, File};
use std::io::{self, Write};
use std::net::{IpAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use mailin_embedded::response::{INTERNAL_ERROR, OK};
use mailin_embedded::{Handler, Response, Server, SslConfig};

/// Header line the sink prepends for each envelope recipient of a stored message.
pub const ENVELOPE_TO: &str = "X-Envelope-To: ";

/// Serves SMTP on `listener` until the process ends, storing accepted messages in `dir`.
///
/// `threads` bounds the number of concurrent SMTP sessions.
pub fn serve(listener: TcpListener, dir: PathBuf, threads: u32) -> anyhow::Result<()> {
    fs::create_dir_all(&dir)?;
    let handler = StoringHandler {
        dir: Arc::new(dir),
        // Process id plus a counter keeps names unique across restarts of the sink that
        // write into the same directory.
        prefix: Arc::new(format!("{}-{}", std::process::id(), now_nanos())),
        counter: Arc::new(AtomicU64::new(0)),
        recipients: Vec::new(),
        body: Vec::new(),
    };
    let mut server = Server::new(handler);
    server
        .with_name("smtp-sink")
        .with_ssl(SslConfig::None)
        .map_err(|e| anyhow::anyhow!("smtp-sink TLS setup: {e}"))?
        .with_num_threads(threads.max(1))
        .with_tcp_listener(listener);
    server
        .serve()
        .map_err(|e| anyhow::anyhow!("smtp-sink stopped: {e}"))
}

fn now_nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}

/// The per-session state of one SMTP connection (mailin clones the handler per connection).
#[derive(Clone)]
struct StoringHandler {
    /// Where accepted messages go.
    dir: Arc<PathBuf>,
    /// Unique per sink process, so file names never collide across restarts.
    prefix: Arc<String>,
    /// Numbers the messages of this process.
    counter: Arc<AtomicU64>,
    /// Envelope recipients of the message being received.
    recipients: Vec<String>,
    /// The message being received.
    body: Vec<u8>,
}

impl StoringHandler {
    fn store(&self) -> io::Result<()> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let name = format!("{}-{n:08}.eml", self.prefix);
        let tmp = self.dir.join(format!(".{name}.tmp"));
        let mut file = File::create(&tmp)?;
        for rcpt in &self.recipients {
            write!(file, "{ENVELOPE_TO}{rcpt}\r\n")?;
        }
        file.write_all(&self.body)?;
        file.sync_all()?;
        fs::rename(&tmp, self.dir.join(&name))?;
        Ok(())
    }
}

impl Handler for StoringHandler {
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> Response {
        self.recipients = to.to_vec();
        self.body.clear();
        OK
    }

    fn data(&mut self, buf: &[u8]) -> io::Result<()> {
        self.body.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        match self.store() {
            Ok(()) => OK,
            Err(e) => {
                eprintln!("smtp-sink: cannot store message: {e}");
                INTERNAL_ERROR
            }
        }
    }

    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        OK
    }
}

/// One message as the sink stored it.
#[derive(Debug, Clone)]
pub struct StoredMessage {
    /// The envelope recipients (RCPT TO).
    pub envelope_to: Vec<String>,
    /// The value of the `Message-ID` header, without angle brackets, when present.
    pub message_id: Option<String>,
    /// The message as received (headers and body), without the envelope lines.
    pub raw: String,
}

impl StoredMessage {
    /// The value of the first header named `name` (case-insensitive), unfolded.
    pub fn header(&self, name: &str) -> Option<String> {
        header_value(&self.raw, name)
    }
}

fn header_value(raw: &str, name: &str) -> Option<String> {
    let mut lines = raw.split("\r\n").take_while(|l| !l.is_empty()).peekable();
    while let Some(line) = lines.next() {
        let Some((key, value)) = line.split_once(':') else {
            continue;
        };
        if key.eq_ignore_ascii_case(name) {
            let mut value = value.trim().to_string();
            while let Some(next) = lines.peek() {
                if next.starts_with([' ', '\t']) {
                    value.push(' ');
                    value.push_str(next.trim());
                    lines.next();
                } else {
                    break;
                }
            }
            return Some(value);
        }
    }
    None
}

/// Reads every message stored in `dir`, in no particular order.
pub fn read_messages(dir: &Path) -> io::Result<Vec<StoredMessage>> {
    let mut out = Vec::new();
    if !dir.exists() {
        return Ok(out);
    }
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("eml") {
            continue;
        }
        let text = fs::read_to_string(&path)?;
        out.push(parse_stored(&text));
    }
    Ok(out)
}

fn parse_stored(text: &str) -> StoredMessage {
    let mut envelope_to = Vec::new();
    let mut rest = text;
    while let Some(after) = rest.strip_prefix(ENVELOPE_TO) {
        let (rcpt, tail) = after.split_once("\r\n").unwrap_or((after, ""));
        envelope_to.push(rcpt.to_string());
        rest = tail;
    }
    let raw = rest.to_string();
    let message_id = header_value(&raw, "Message-ID")
        .map(|v| v.trim_start_matches('<').trim_end_matches('>').to_string());
    StoredMessage {
        envelope_to,
        message_id,
        raw,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_envelope_and_folded_headers() {
        let text = "X-Envelope-To: a@example.com\r\nX-Envelope-To: b@example.com\r\n\
                    Subject: hello\r\n  world\r\nMessage-ID: <abc@x>\r\n\r\nbody\r\nSubject: no\r\n";
        let m = parse_stored(text);
        assert_eq!(m.envelope_to, vec!["a@example.com", "b@example.com"]);
        assert_eq!(m.message_id.as_deref(), Some("abc@x"));
        assert_eq!(m.header("subject").as_deref(), Some("hello world"));
        assert_eq!(m.header("X-Missing"), None);
    }
}
