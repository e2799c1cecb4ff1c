//! The run's report: a table for people and JSON for tools.

use std::{collections::BTreeMap, fmt::Write as _};

use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::{scenario::Scenario, stats::LatencySummary};

/// Everything a run measured and checked.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    /// Which scenario ran.
    pub scenario: Scenario,
    /// When the run started.
    pub started_at: DateTime<Utc>,
    /// The server's base URL.
    pub target: String,
    /// The run's configuration.
    pub config: serde_json::Value,
    /// From the start signal to the last buyer's last answer.
    pub sale_seconds: f64,
    /// Throughput.
    pub purchases: PurchaseFigures,
    /// Latency of every purchase request (each `holdTickets` and `payOrder` in `hold-pay`).
    pub latency: LatencySummary,
    /// Responses by outcome (`OK` or `extensions.code`).
    pub outcomes: BTreeMap<String, u64>,
    /// The first message seen for each error code.
    pub error_examples: BTreeMap<String, String>,
    /// The WebSocket subscribers.
    pub subscribers: SubscriberFigures,
    /// Peak resident memory of the server (VmHWM), when this tool started it.
    pub server_peak_rss_bytes: Option<u64>,
    /// Resident memory of the server just before the sale (after set-up).
    pub server_rss_before_sale_bytes: Option<u64>,
    /// What the crash scenario did.
    pub crash: Option<serde_json::Value>,
    /// The oversell and lost-purchase checks, per event.
    pub events: Vec<EventCheck>,
    /// Every check that failed.
    pub failures: Vec<String>,
    /// Whether every check passed.
    pub passed: bool,
}

/// Throughput of the sale.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PurchaseFigures {
    /// Purchase requests sent (retries included).
    pub requests: u64,
    /// Purchases acknowledged as paid.
    pub successful: u64,
    /// Tickets in them.
    pub tickets: u64,
    /// Successful purchases per second of sale.
    pub purchases_per_second: f64,
    /// Tickets sold per second of sale.
    pub tickets_per_second: f64,
    /// Tickets of holds abandoned on purpose (`hold-pay`).
    pub abandoned_hold_tickets: u64,
    /// Requests whose outcome stayed unknown.
    pub unresolved: u64,
}

/// What the subscribers saw.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SubscriberFigures {
    /// Subscribers asked for.
    pub requested: usize,
    /// Subscribers that stayed connected to the end.
    pub connected: usize,
    /// Updates received over all of them.
    pub updates_received: u64,
    /// Subscribers whose last update showed every acknowledged ticket sold.
    pub saw_final_count: usize,
    /// Subscribers whose last update showed nothing available.
    pub saw_zero_available: usize,
    /// Delay from a purchase's acknowledgement to each subscriber's count reflecting it.
    pub delay: LatencySummary,
    /// (acknowledgement, subscriber) pairs never reflected.
    pub missed_acknowledgements: u64,
}

/// The oversell and lost-purchase checks of one event.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct EventCheck {
    /// The event.
    pub event_id: String,
    /// Tickets on sale.
    pub capacity: u64,
    /// Purchases answered as paid.
    pub acknowledged_orders: u64,
    /// Tickets in them.
    pub acknowledged_tickets: u64,
    /// Sold according to the read side (the `event` query).
    pub read_sold: u64,
    /// Held according to the read side.
    pub read_held: u64,
    /// Available according to the read side.
    pub read_available: u64,
    /// Sold according to the `salesReport` query.
    pub report_sold: u64,
    /// Sold according to a replay of the store (`ticketing audit`), when reachable.
    pub store_sold: Option<u64>,
    /// Held according to the store.
    pub store_held: Option<u64>,
    /// Acknowledged orders not paid in the store.
    pub lost_purchases: Option<u64>,
    /// Orders paid in the store whose buyers were answered otherwise.
    pub paid_not_acknowledged: Option<u64>,
    /// The checks this event failed.
    pub failures: Vec<String>,
}

impl Report {
    /// The human-readable table.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let p = &self.purchases;
        let l = &self.latency;
        let s = &self.subscribers;
        let _ = writeln!(
            out,
            "scenario          {:?} against {}",
            self.scenario, self.target
        );
        let _ = writeln!(out, "sale              {:.2} s", self.sale_seconds);
        let _ = writeln!(
            out,
            "purchases         {} ok ({} tickets) of {} requests; {:.0} purchases/s, {:.0} tickets/s",
            p.successful, p.tickets, p.requests, p.purchases_per_second, p.tickets_per_second
        );
        let _ = writeln!(
            out,
            "latency (ms)      p50 {:.1}  p90 {:.1}  p99 {:.1}  p99.9 {:.1}  max {:.1}",
            l.p50_ms, l.p90_ms, l.p99_ms, l.p999_ms, l.max_ms
        );
        let codes: Vec<String> = self
            .outcomes
            .iter()
            .map(|(c, n)| format!("{c} {n}"))
            .collect();
        let _ = writeln!(out, "responses         {}", codes.join(", "));
        if p.abandoned_hold_tickets > 0 {
            let _ = writeln!(
                out,
                "abandoned holds   {} tickets",
                p.abandoned_hold_tickets
            );
        }
        let _ = writeln!(
            out,
            "subscribers       {}/{} connected, {} updates, {} saw the final count, {} saw zero left",
            s.connected, s.requested, s.updates_received, s.saw_final_count, s.saw_zero_available
        );
        let _ = writeln!(
            out,
            "update delay (ms) p50 {:.1}  p99 {:.1}  max {:.1}  ({} samples, {} missed)",
            s.delay.p50_ms,
            s.delay.p99_ms,
            s.delay.max_ms,
            s.delay.count,
            s.missed_acknowledgements
        );
        match self.server_peak_rss_bytes {
            Some(bytes) => {
                let before = self.server_rss_before_sale_bytes.map_or_else(
                    || "n/a".to_owned(),
                    |b| format!("{:.1}", b as f64 / 1048576.0),
                );
                let _ = writeln!(
                    out,
                    "server peak RSS   {:.1} MiB (RSS before the sale {before} MiB)",
                    bytes as f64 / 1048576.0
                );
            }
            None => {
                let _ = writeln!(out, "server peak RSS   unknown (not started by this tool)");
            }
        }
        if let Some(crash) = &self.crash {
            let _ = writeln!(out, "crash             {crash}");
        }
        let _ = writeln!(
            out,
            "{:<38} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
            "event", "capacity", "acked", "read", "report", "store", "held", "lost"
        );
        let opt = |v: Option<u64>| v.map_or_else(|| "n/a".to_owned(), |v| v.to_string());
        for e in &self.events {
            let _ = writeln!(
                out,
                "{:<38} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>6}",
                e.event_id,
                e.capacity,
                e.acknowledged_tickets,
                e.read_sold,
                e.report_sold,
                opt(e.store_sold),
                e.read_held,
                opt(e.lost_purchases)
            );
        }
        if self.passed {
            let _ = writeln!(
                out,
                "PASSED: no oversell, no lost purchase, no unexpected error"
            );
        } else {
            let _ = writeln!(out, "FAILED:");
            for failure in &self.failures {
                let _ = writeln!(out, "  - {failure}");
            }
        }
        out
    }
}
