//! Live subscriptions: seat counts and order status.

use async_graphql::{Context, ID, Subscription};
use domain::{EventId, OrderId};
use futures::{Stream, StreamExt, stream};
use tokio_stream::wrappers::WatchStream;

use super::{
    caller,
    catalogue::visible_event,
    maybe_caller,
    orders::readable_order,
    parse_id, services,
    types::{Availability, Order},
};
use crate::error::ApiError;

/// Live subscriptions.
#[derive(Default)]
pub struct LiveSubscription;

/// The feed's current value at once, then its latest value after each change, at most once
/// per `interval` (changes within it are folded into the next value). Ends with the feed.
fn throttled<T: Clone + Send + Sync + 'static>(
    feed: tokio::sync::watch::Receiver<T>,
    interval: std::time::Duration,
) -> impl Stream<Item = T> + Send + 'static {
    stream::unfold((feed, true), move |(mut feed, first)| async move {
        if !first {
            if !interval.is_zero() {
                tokio::time::sleep(interval).await;
            }
            // At once if it changed while sleeping.
            feed.changed().await.ok()?;
        }
        let value = feed.borrow_and_update().clone();
        Some((value, (feed, false)))
    })
}

#[Subscription]
impl LiveSubscription {
    /// An event's availability at once, then after every change, at most once per live
    /// update interval (`--live-update-interval`). Under a burst of sales a subscriber gets
    /// the latest counts, never a backlog: values in between are skipped.
    async fn seat_availability(
        &self,
        ctx: &Context<'_>,
        event_id: ID,
    ) -> Result<impl Stream<Item = Availability> + use<>, ApiError> {
        let services = services(ctx)?;
        let event_id: EventId = parse_id("eventId", &event_id)?;
        visible_event(services, maybe_caller(ctx), event_id)?;
        let feed = services
            .read_side
            .catalogue()
            .watch_availability(event_id)
            .ok_or_else(|| ApiError::NotFound(format!("no event {event_id}")))?;
        Ok(throttled(feed, services.live_update_interval).map(Availability))
    }

    /// An order's status at once, then whenever it changes (its buyer, or the event's
    /// organizer or an admin). Ends when the order is closed for good.
    async fn order_status(
        &self,
        ctx: &Context<'_>,
        order_id: ID,
    ) -> Result<impl Stream<Item = Order> + use<>, ApiError> {
        let user = caller(ctx)?;
        let services = services(ctx)?.clone();
        let order_id: OrderId = parse_id("orderId", &order_id)?;
        let order = readable_order(&services, user, order_id)?;
        // Every change of an order's status changes its event's counts, so the event's
        // availability feed is the order's change signal.
        let feed = services
            .read_side
            .catalogue()
            .watch_availability(order.event_id)
            .ok_or_else(|| ApiError::NotFound(format!("no event {}", order.event_id)))?;
        let changes = WatchStream::new(feed);
        let updates = stream::unfold(
            (changes, None, false),
            move |(mut changes, mut last, mut done)| {
                let services = services.clone();
                async move {
                    loop {
                        if done {
                            return None;
                        }
                        let change = changes.next().await?;
                        // Each projection runs on its own: the orders model may not have
                        // applied the change the catalogue just published. Wait until it has.
                        if let Err(error) = services
                            .read_side
                            .wait_for(change.position, services.read_your_writes_timeout)
                            .await
                        {
                            tracing::warn!(%error, "orderStatus: the read side lags; reading it as it is");
                        }
                        let Some(order) = services.read_side.orders().order(order_id) else {
                            continue;
                        };
                        if last == Some(order.status) {
                            continue;
                        }
                        last = Some(order.status);
                        // Paid stays open (it can still be cancelled); the rest are final.
                        done = !matches!(
                            order.status,
                            domain::inventory::OrderStatus::Held
                                | domain::inventory::OrderStatus::Paid
                        );
                        return Some((Order::from(order), (changes, last, done)));
                    }
                }
            },
        );
        Ok(updates)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use futures::StreamExt;

    use super::throttled;

    #[tokio::test(start_paused = true)]
    async fn a_burst_of_changes_reaches_a_subscriber_as_one_latest_value_per_interval() {
        let (feed, watched) = tokio::sync::watch::channel(0u32);
        let mut updates = Box::pin(throttled(watched, Duration::from_millis(50)));
        assert_eq!(updates.next().await, Some(0), "the current value at once");
        for n in 1..=100 {
            feed.send_replace(n);
        }
        assert_eq!(updates.next().await, Some(100), "the latest, not a backlog");
        let after = tokio::time::Instant::now();
        feed.send_replace(101);
        assert_eq!(updates.next().await, Some(101));
        assert!(
            after.elapsed() >= Duration::from_millis(50),
            "one per interval"
        );
        drop(feed);
        assert_eq!(updates.next().await, None, "ends with the feed");
    }

    #[tokio::test(start_paused = true)]
    async fn without_an_interval_every_change_goes_out_at_once() {
        let (feed, watched) = tokio::sync::watch::channel(0u32);
        let mut updates = Box::pin(throttled(watched, Duration::ZERO));
        assert_eq!(updates.next().await, Some(0));
        let started = tokio::time::Instant::now();
        for n in 1..=3 {
            feed.send_replace(n);
            assert_eq!(updates.next().await, Some(n));
        }
        assert_eq!(started.elapsed(), Duration::ZERO);
    }
}
