//! Starting, killing and restarting the `ticketing serve` process, and sampling its memory.

use std::{
    net::{SocketAddr, TcpListener},
    path::{Path, PathBuf},
    process::Stdio,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use tokio::process::{Child, Command};

/// Credentials of the administrator the harness creates at start.
pub const ADMIN_EMAIL: &str = "loadtest-admin@example.com";
/// Password of that administrator (only ever on a throw-away data directory).
pub const ADMIN_PASSWORD: &str = "loadtest-admin-password";

/// How the server is started.
#[derive(Debug, Clone)]
pub struct ServerOptions {
    /// The `ticketing` binary.
    pub binary: PathBuf,
    /// The data directory (a temporary one, normally).
    pub data_dir: PathBuf,
    /// How long holds last (`--hold-ttl`).
    pub hold_ttl: Duration,
    /// Extra `serve` arguments.
    pub extra_args: Vec<String>,
}

/// A running `ticketing serve` child process.
pub struct ServerProcess {
    /// How it was started, to restart it the same way.
    options: ServerOptions,
    /// Where it listens; kept across restarts so clients need not change.
    addr: SocketAddr,
    /// The child; `None` after it was stopped or killed.
    child: Option<Child>,
}

impl ServerProcess {
    /// Starts the server on a free loopback port and waits until `/readyz` answers 200.
    pub async fn start(options: ServerOptions) -> anyhow::Result<Self> {
        let addr = free_port()?;
        let mut server = Self {
            options,
            addr,
            child: None,
        };
        server.spawn().await?;
        Ok(server)
    }

    async fn spawn(&mut self) -> anyhow::Result<()> {
        let hold_ttl = format!("{}ms", self.options.hold_ttl.as_millis());
        let mut command = Command::new(&self.options.binary);
        command
            .arg("serve")
            .arg("--addr")
            .arg(self.addr.to_string())
            .arg("--data-dir")
            .arg(&self.options.data_dir)
            .arg("--admin-email")
            .arg(ADMIN_EMAIL)
            .arg("--admin-password")
            .arg(ADMIN_PASSWORD)
            .arg("--hold-ttl")
            .arg(hold_ttl)
            // Every buyer registers and logs in from the same loopback address, buys in a
            // loop and subscribes from it: the anti-abuse limits would measure themselves,
            // not the sale.
            .args(["--login-rate", "1000000/s"])
            .args(["--login-address-rate", "1000000/s"])
            .args(["--register-rate", "1000000/s"])
            .args(["--purchase-rate", "1000000/s"])
            .args(["--max-held-tickets-per-address", "1000000000"])
            .args(["--max-held-tickets-per-user", "1000000"])
            .args(["--max-websocket-connections-per-address", "1000000"])
            .arg("--log-filter")
            .arg("warn")
            .args(&self.options.extra_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        let child = command
            .spawn()
            .with_context(|| format!("starting {}", self.options.binary.display()))?;
        self.child = Some(child);
        self.wait_ready(Duration::from_secs(120)).await
    }

    async fn wait_ready(&mut self, limit: Duration) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let url = format!("{}/readyz", self.base_url());
        let started = Instant::now();
        loop {
            if let Some(child) = self.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                bail!("the server exited before it was ready: {status}");
            }
            if let Ok(response) = client.get(&url).send().await
                && response.status().is_success()
            {
                return Ok(());
            }
            if started.elapsed() > limit {
                bail!("the server was not ready within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// `http://127.0.0.1:PORT`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The data directory the server writes.
    pub fn data_dir(&self) -> &Path {
        &self.options.data_dir
    }

    /// The `ticketing` binary (also used for store audits).
    pub fn binary(&self) -> &Path {
        &self.options.binary
    }

    /// The process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Kills the server with SIGKILL (no shutdown of any kind) and reaps it.
    pub async fn kill9(&mut self) -> anyhow::Result<()> {
        if let Some(mut child) = self.child.take() {
            child.start_kill().context("sending SIGKILL")?;
            child.wait().await?;
        }
        Ok(())
    }

    /// Starts it again on the same data directory and port.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        if self.child.is_some() {
            bail!("the server is still running");
        }
        self.spawn().await
    }

    /// Stops it with SIGTERM (a graceful shutdown), killing it if it lingers.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        if let Some(pid) = child.id() {
            let _ = Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status()
                .await;
        }
        match tokio::time::timeout(Duration::from_secs(40), child.wait()).await {
            Ok(status) => {
                status?;
            }
            Err(_) => {
                child.start_kill()?;
                child.wait().await?;
            }
        }
        Ok(())
    }
}

fn free_port() -> anyhow::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?)
}

/// The `ticketing` binary beside this executable (`target/<profile>/ticketing`), built
/// first with cargo when this program runs under `cargo run`.
pub fn locate_binary() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating the loadtest executable")?;
    let dir = exe
        .parent()
        .context("the loadtest executable has no directory")?;
    let release = dir.file_name().is_some_and(|name| name == "release");
    if let Some(cargo) = std::env::var_os("CARGO") {
        eprintln!(
            "building the server: cargo build {}-p ticketing",
            if release { "--release " } else { "" }
        );
        let mut build = std::process::Command::new(cargo);
        build.arg("build").arg("-p").arg("ticketing");
        if release {
            build.arg("--release");
        }
        let status = build.status().context("running cargo build -p ticketing")?;
        if !status.success() {
            bail!("cargo build -p ticketing failed: {status}");
        }
    }
    let binary = dir.join("ticketing");
    if !binary.exists() {
        bail!(
            "{} not found: run `cargo build --release -p ticketing` or pass --server-bin",
            binary.display()
        );
    }
    Ok(binary)
}

/// Resident memory of a process in bytes: (current VmRSS, peak VmHWM), from
/// `/proc/PID/status`.
pub fn memory_of(pid: u32) -> Option<(u64, u64)> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_memory(&status)
}

fn parse_memory(status: &str) -> Option<(u64, u64)> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|line| line.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|kb| kb.trim().parse::<u64>().ok())
            .map(|kb| kb * 1024)
    };
    Some((field("VmRSS:")?, field("VmHWM:")?))
}

/// Samples a process's memory in the background; the peak survives restarts.
#[derive(Clone, Default)]
pub struct MemorySampler {
    /// Highest VmHWM (or VmRSS) seen, in bytes.
    peak: Arc<AtomicU64>,
}

impl MemorySampler {
    /// Takes one sample of `pid`.
    pub fn sample(&self, pid: u32) {
        if let Some((rss, hwm)) = memory_of(pid) {
            self.peak.fetch_max(rss.max(hwm), Ordering::Relaxed);
        }
    }

    /// Samples the process `pid()` names every 100 ms until the task is aborted.
    pub fn spawn(
        &self,
        pid: impl Fn() -> Option<u32> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let sampler = self.clone();
        tokio::spawn(async move {
            loop {
                if let Some(pid) = pid() {
                    sampler.sample(pid);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    }

    /// The peak in bytes, if any sample was taken.
    pub fn peak(&self) -> Option<u64> {
        Some(self.peak.load(Ordering::Relaxed)).filter(|&b| b > 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rss_and_hwm_from_proc_status() {
        let status = "Name:\tticketing\nVmHWM:\t  204800 kB\nVmRSS:\t  102400 kB\n";
        assert_eq!(parse_memory(status), Some((100 << 20, 200 << 20)));
        assert_eq!(parse_memory("Name: x\n"), None);
    }

    #[test]
    fn samples_this_process() {
        let sampler = MemorySampler::default();
        sampler.sample(std::process::id());
        assert!(sampler.peak().is_some_and(|bytes| bytes > 0));
    }
}
