//! Helpers shared by the integration tests.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use payments::{ChannelSink, SimulatedProvider, SimulatorConfig, WebhookDelivery};
use tokio::sync::mpsc::UnboundedReceiver;
use uuid::Uuid;

pub const SECRET: &[u8] = b"whsec_test";
pub const TOLERANCE: i64 = 300;

pub fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A provider whose webhooks arrive on the returned channel.
pub fn provider(
    webhook_delay: Duration,
    processing_delay: Duration,
) -> (SimulatedProvider, UnboundedReceiver<WebhookDelivery>) {
    let (sink, receiver) = ChannelSink::new();
    let config = SimulatorConfig {
        webhook_delay,
        processing_delay,
        ..SimulatorConfig::new(SECRET)
    };
    (SimulatedProvider::new(config, Arc::new(sink)), receiver)
}

pub fn order() -> Uuid {
    Uuid::new_v4()
}
