//! A `seatAvailability` subscriber over the `graphql-transport-ws` protocol.

use std::{collections::HashMap, time::Instant};

use anyhow::{Context, bail};
use futures::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_tungstenite::{
    connect_async_with_config,
    tungstenite::{
        Message, client::IntoClientRequest, http::HeaderValue, protocol::WebSocketConfig,
    },
};

use crate::stats::SubscriberLog;

const SUBSCRIPTION: &str = "subscription($eventId: ID!) { seatAvailability(eventId: $eventId) { position totalAvailable tiers { sold } } }";

/// Subscribes to the availability of `events` on one WebSocket and logs every update
/// until `stop` turns true. `subscribed` is told once the first update of every event has
/// arrived (the subscription is live).
pub async fn subscribe(
    ws_url: String,
    events: Vec<String>,
    subscribed: tokio::sync::mpsc::Sender<()>,
    mut stop: watch::Receiver<bool>,
) -> SubscriberLog {
    let mut log = SubscriberLog::default();
    if let Err(e) = run(&ws_url, &events, &subscribed, &mut stop, &mut log).await {
        log.error = Some(format!("{e:#}"));
    }
    log
}

async fn run(
    ws_url: &str,
    events: &[String],
    subscribed: &tokio::sync::mpsc::Sender<()>,
    stop: &mut watch::Receiver<bool>,
    log: &mut SubscriberLog,
) -> anyhow::Result<()> {
    let mut request = ws_url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        HeaderValue::from_static("graphql-transport-ws"),
    );
    // Updates are small: a small read buffer keeps a thousand subscribers from zero-filling
    // 128 KiB per update on the cores they share with the server.
    let config = WebSocketConfig::default().read_buffer_size(4096);
    let (mut socket, _) = connect_async_with_config(request, Some(config), true)
        .await
        .context("connecting")?;
    socket
        .send(Message::text(
            json!({"type": "connection_init", "payload": {}}).to_string(),
        ))
        .await?;
    loop {
        match next_json(&mut socket).await? {
            Some(message) if message["type"] == "connection_ack" => break,
            Some(message) if message["type"] == "ping" => {
                socket.send(Message::text(r#"{"type":"pong"}"#)).await?;
            }
            Some(other) => bail!("expected connection_ack, got {other}"),
            None => bail!("closed before connection_ack"),
        }
    }
    for (index, event) in events.iter().enumerate() {
        socket
            .send(Message::text(
                json!({"id": index.to_string(), "type": "subscribe", "payload": {
                    "query": SUBSCRIPTION, "variables": {"eventId": event}}})
                .to_string(),
            ))
            .await?;
    }
    // The latest (sold, available) per subscription; an update's totals are their sums.
    let mut latest: HashMap<String, (u64, u64)> = HashMap::new();
    let mut announced = false;
    loop {
        let message = tokio::select! {
            message = next_json(&mut socket) => message?,
            _ = async { stop.wait_for(|stop| *stop).await.is_ok() } => {
                let _ = socket.close(None).await;
                return Ok(());
            }
        };
        let Some(message) = message else {
            bail!("the server closed the subscription");
        };
        let arrived = Instant::now();
        match message["type"].as_str() {
            Some("next") => {
                let id = message["id"].as_str().unwrap_or_default().to_owned();
                let payload = &message["payload"];
                if let Some(errors) = payload.get("errors") {
                    bail!("subscription error: {errors}");
                }
                let availability = &payload["data"]["seatAvailability"];
                let available = availability["totalAvailable"].as_u64().unwrap_or(0);
                let sold = availability["tiers"]
                    .as_array()
                    .map(|tiers| tiers.iter().filter_map(|t| t["sold"].as_u64()).sum())
                    .unwrap_or(0);
                latest.insert(id, (sold, available));
                let total_sold = latest.values().map(|(s, _)| s).sum();
                log.last_available = Some(latest.values().map(|(_, a)| a).sum());
                log.updates.push((arrived, total_sold));
                if !announced && latest.len() == events.len() {
                    announced = true;
                    let _ = subscribed.send(()).await;
                }
            }
            Some("ping") => socket.send(Message::text(r#"{"type":"pong"}"#)).await?,
            Some("error") => bail!("subscription refused: {}", message["payload"]),
            Some("complete") => bail!("the server completed the subscription"),
            _ => {}
        }
    }
}

async fn next_json<S>(socket: &mut S) -> anyhow::Result<Option<Value>>
where
    S: futures::Stream<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin,
{
    while let Some(message) = socket.next().await {
        match message? {
            Message::Text(text) => return Ok(Some(serde_json::from_str(text.as_str())?)),
            Message::Close(_) => return Ok(None),
            _ => {}
        }
    }
    Ok(None)
}
