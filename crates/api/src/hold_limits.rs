//! Caps on unpaid holds, so that nobody keeps a sale at `available: 0` for free.
//!
//! A hold takes tickets out of stock for its whole lifetime (ten minutes by default) at no
//! cost to the holder. [`HoldLimits`] caps the tickets in unpaid holds twice: per user, over
//! every event, and per client address, over every user connecting from it, so that a
//! script with many accounts behind one address is capped as one client.
//!
//! What is counted: the tickets of each hold placed through this node, until the hold is
//! paid, released, cancelled or expired (the orders read model tells, and the expiry is
//! known). A `holdTickets` reserves its tickets before the command runs, so concurrent
//! requests cannot overshoot the caps; a `purchaseTickets` is only checked against them and
//! counted afterwards if its payment leaves the hold unpaid (a pending charge), since a
//! purchase normally pays at once and keeps nothing held. The counts are per node: behind a
//! load balancer with N nodes a client gets at most N times the caps.

use std::{
    collections::HashMap,
    sync::atomic::{AtomicU64, Ordering},
};

use chrono::{DateTime, Utc};
use domain::OrderId;
use parking_lot::Mutex;

use crate::{context::ClientKey, error::ApiError};

/// Whether an order is still an unpaid hold: `Some(true)` while it is held, `Some(false)`
/// once it is paid or closed, `None` while the read side does not know it (yet).
pub trait HoldStatus {
    /// See the trait.
    fn is_held(&self, order: OrderId) -> Option<bool>;
}

impl<F: Fn(OrderId) -> Option<bool>> HoldStatus for F {
    fn is_held(&self, order: OrderId) -> Option<bool> {
        self(order)
    }
}

/// The caps and what counts against them.
#[derive(Debug)]
pub struct HoldLimits {
    /// Most held tickets per user.
    per_user: u32,
    /// Most held tickets per client address.
    per_address: u32,
    /// Holds counted against each user and each address.
    counted: Mutex<HashMap<ClientKey, Vec<Counted>>>,
    /// Names reservations.
    next_reservation: AtomicU64,
}

/// A hold (or a reservation for one) counted against a client.
#[derive(Debug, Clone)]
struct Counted {
    /// The reservation it was counted under.
    reservation: u64,
    /// The order, once the hold was placed.
    order: Option<OrderId>,
    /// Its tickets.
    tickets: u32,
    /// When it stops counting whatever the read side says: the hold's expiry, or for a
    /// reservation, when its request must be over.
    until: DateTime<Utc>,
}

/// Longest a reservation counts before its hold is placed (any request is over by then).
const RESERVATION_LIFETIME: chrono::Duration = chrono::Duration::minutes(10);

/// Tickets reserved for a hold being placed; they stop counting when this is dropped,
/// unless [`Reservation::placed`] turned them into the hold's.
#[must_use]
pub struct Reservation<'a> {
    limits: &'a HoldLimits,
    keys: [ClientKey; 2],
    id: u64,
    placed: bool,
}

impl Reservation<'_> {
    /// The hold was placed: its tickets count until it is paid, closed or `expires_at`.
    pub fn placed(mut self, order: OrderId, expires_at: DateTime<Utc>) {
        let mut counted = self.limits.counted.lock();
        for key in &self.keys {
            if let Some(list) = counted.get_mut(key) {
                for entry in list.iter_mut().filter(|c| c.reservation == self.id) {
                    entry.order = Some(order);
                    entry.until = expires_at;
                }
            }
        }
        self.placed = true;
    }
}

impl Drop for Reservation<'_> {
    fn drop(&mut self) {
        if self.placed {
            return;
        }
        let mut counted = self.limits.counted.lock();
        for key in &self.keys {
            if let Some(list) = counted.get_mut(key) {
                list.retain(|c| c.reservation != self.id);
                if list.is_empty() {
                    counted.remove(key);
                }
            }
        }
    }
}

impl HoldLimits {
    /// Caps of `per_user` and `per_address` held tickets.
    pub fn new(per_user: u32, per_address: u32) -> Self {
        Self {
            per_user,
            per_address,
            counted: Mutex::new(HashMap::new()),
            next_reservation: AtomicU64::new(0),
        }
    }

    /// Reserves `tickets` for a hold `user` places from `address`, or refuses with
    /// `LIMIT_EXCEEDED` when either cap would be passed.
    pub fn reserve(
        &self,
        user: uuid::Uuid,
        address: std::net::IpAddr,
        tickets: u32,
        status: &impl HoldStatus,
        now: DateTime<Utc>,
    ) -> Result<Reservation<'_>, ApiError> {
        let keys = [ClientKey::User(user), ClientKey::ip(address)];
        let id = self.next_reservation.fetch_add(1, Ordering::Relaxed);
        let mut counted = self.counted.lock();
        self.admit(&mut counted, keys, tickets, status, now)?;
        for key in keys {
            counted.entry(key).or_default().push(Counted {
                reservation: id,
                order: None,
                tickets,
                until: now + RESERVATION_LIFETIME,
            });
        }
        Ok(Reservation {
            limits: self,
            keys,
            id,
            placed: false,
        })
    }

    /// Checks that `tickets` more held by `user` from `address` would pass neither cap,
    /// without reserving them (a purchase, which normally holds nothing once answered).
    pub fn check(
        &self,
        user: uuid::Uuid,
        address: std::net::IpAddr,
        tickets: u32,
        status: &impl HoldStatus,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        let keys = [ClientKey::User(user), ClientKey::ip(address)];
        self.admit(&mut self.counted.lock(), keys, tickets, status, now)
    }

    /// Counts a hold placed without a reservation (a purchase whose payment is pending).
    pub fn count(
        &self,
        user: uuid::Uuid,
        address: std::net::IpAddr,
        order: OrderId,
        tickets: u32,
        expires_at: DateTime<Utc>,
    ) {
        let id = self.next_reservation.fetch_add(1, Ordering::Relaxed);
        let mut counted = self.counted.lock();
        for key in [ClientKey::User(user), ClientKey::ip(address)] {
            counted.entry(key).or_default().push(Counted {
                reservation: id,
                order: Some(order),
                tickets,
                until: expires_at,
            });
        }
    }

    /// Forgets every hold that no longer counts, for every client (housekeeping: what a
    /// client's next request would forget anyway).
    pub fn prune(&self, status: &impl HoldStatus, now: DateTime<Utc>) {
        let mut counted = self.counted.lock();
        counted.retain(|_, list| {
            list.retain(|c| still_counts(c, status, now));
            !list.is_empty()
        });
        counted.shrink_to_fit();
    }

    /// How many clients have holds counted.
    pub fn tracked_clients(&self) -> usize {
        self.counted.lock().len()
    }

    fn admit(
        &self,
        counted: &mut HashMap<ClientKey, Vec<Counted>>,
        keys: [ClientKey; 2],
        tickets: u32,
        status: &impl HoldStatus,
        now: DateTime<Utc>,
    ) -> Result<(), ApiError> {
        for (key, cap, whose) in [
            (keys[0], self.per_user, "your account"),
            (keys[1], self.per_address, "your network address"),
        ] {
            let held = match counted.get_mut(&key) {
                Some(list) => {
                    list.retain(|c| still_counts(c, status, now));
                    list.iter().map(|c| c.tickets).sum::<u32>()
                }
                None => 0,
            };
            if held.saturating_add(tickets) > cap {
                metrics::counter!("api_hold_cap_refusals_total", "cap" => if key == keys[0] { "user" } else { "address" })
                    .increment(1);
                return Err(ApiError::domain(
                    "LIMIT_EXCEEDED",
                    format!(
                        "{whose} already has {held} tickets in unpaid holds, and at most {cap} \
                         may be held at once: pay for or release a hold first"
                    ),
                ));
            }
        }
        Ok(())
    }
}

/// Whether a counted hold still counts: before its time is up, and while the read side
/// does not say it was paid or closed.
fn still_counts(counted: &Counted, status: &impl HoldStatus, now: DateTime<Utc>) -> bool {
    now < counted.until
        && counted
            .order
            .is_none_or(|order| status.is_held(order) != Some(false))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::IpAddr;
    use uuid::Uuid;

    fn held_unless(paid: &'static [u128]) -> impl Fn(OrderId) -> Option<bool> {
        move |order: OrderId| Some(!paid.contains(&order.as_uuid().as_u128()))
    }

    #[test]
    fn caps_count_per_user_and_per_address_and_forget_what_ends() {
        let limits = HoldLimits::new(4, 6);
        let now = Utc::now();
        let ip: IpAddr = "192.0.2.1".parse().expect("ip");
        let (a, b) = (Uuid::from_u128(1), Uuid::from_u128(2));
        let status = held_unless(&[11]);
        limits
            .reserve(a, ip, 3, &status, now)
            .expect("within")
            .placed(
                OrderId(Uuid::from_u128(10)),
                now + chrono::Duration::minutes(10),
            );
        let refused = limits
            .reserve(a, ip, 2, &status, now)
            .err()
            .expect("user cap");
        assert_eq!(
            refused.code(),
            crate::error::ErrorCode::Domain("LIMIT_EXCEEDED")
        );
        // Another user behind the same address: the address cap counts both.
        limits
            .reserve(b, ip, 3, &status, now)
            .expect("within")
            .placed(
                OrderId(Uuid::from_u128(11)),
                now + chrono::Duration::minutes(10),
            );
        // Order 11 is paid: it no longer counts, so b may hold again.
        let reservation = limits.reserve(b, ip, 3, &status, now).expect("11 was paid");
        assert!(limits.check(b, ip, 1, &status, now).is_err(), "address cap");
        drop(reservation);
        limits
            .check(b, ip, 1, &status, now)
            .expect("a dropped reservation frees");
        // Expiry frees too.
        let later = now + chrono::Duration::minutes(11);
        drop(
            limits
                .reserve(a, ip, 4, &status, later)
                .expect("order 10 expired"),
        );
        limits.prune(&status, later + chrono::Duration::minutes(20));
        assert_eq!(limits.tracked_clients(), 0);
    }
}
