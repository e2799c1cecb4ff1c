//! `smtp-sink`: an SMTP server that stores each accepted message as a file.
//!
//! Prints `listening on <addr>` once it accepts connections, so a caller that asked for
//! port 0 can learn the port.

use std::net::TcpListener;
use std::path::PathBuf;

use clap::Parser;

/// Command-line options.
#[derive(Parser)]
#[command(about = "An SMTP server that stores every accepted message in a directory")]
struct Args {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = "127.0.0.1:2525")]
    addr: String,
    /// Directory where accepted messages are written, one `.eml` file each.
    #[arg(long)]
    dir: PathBuf,
    /// Maximum number of concurrent SMTP sessions.
    #[arg(long, default_value_t = 16)]
    threads: u32,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let listener = TcpListener::bind(&args.addr)?;
    println!("listening on {}", listener.local_addr()?);
    smtp_sink::serve(listener, args.dir, args.threads)
}
