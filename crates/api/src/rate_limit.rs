//! Per-client rate limits for the actions worth abusing: logging in (password guessing)
//! and buying (hoarding holds).
//!
//! Each action has its own GCRA limiter (`governor`) keyed by [`ClientKey`]: the user
//! when authenticated, otherwise the client address. Resolvers apply them explicitly:
//!
//! ```text
//! RateLimits::check_ctx(ctx, RateLimitedAction::Login)?;
//! ```

use std::{num::NonZeroU32, sync::Arc};

use async_graphql::Context;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter, clock::Clock};

use crate::{
    config::{RateSpec, ServiceConfig},
    context::{ClientKey, RequestContext},
    error::ApiError,
};

/// An action with a per-client rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RateLimitedAction {
    /// A login attempt.
    Login,
    /// A purchase attempt: holding or paying for tickets.
    Purchase,
}

impl RateLimitedAction {
    /// The action's name in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::Purchase => "purchase",
        }
    }
}

/// The rate limiters of the service, shared by all requests.
///
/// The HTTP layer puts an `Arc<RateLimits>` into every GraphQL request's data and prunes
/// idle keys periodically.
#[derive(Debug)]
pub struct RateLimits {
    /// Login attempts per client.
    login: DefaultKeyedRateLimiter<ClientKey>,
    /// Purchase attempts per client.
    purchase: DefaultKeyedRateLimiter<ClientKey>,
}

impl RateLimits {
    /// Limiters allowing `login` and `purchase` attempts per client.
    pub fn new(login: RateSpec, purchase: RateSpec) -> Self {
        Self {
            login: RateLimiter::keyed(quota(login)),
            purchase: RateLimiter::keyed(quota(purchase)),
        }
    }

    /// Limiters from the service configuration.
    pub fn from_config(config: &ServiceConfig) -> Self {
        Self::new(config.login_rate, config.purchase_rate)
    }

    fn limiter(&self, action: RateLimitedAction) -> &DefaultKeyedRateLimiter<ClientKey> {
        match action {
            RateLimitedAction::Login => &self.login,
            RateLimitedAction::Purchase => &self.purchase,
        }
    }

    /// Counts one `action` by `key`; `RATE_LIMITED` (with the wait) when over the limit.
    pub fn check(&self, action: RateLimitedAction, key: &ClientKey) -> Result<(), ApiError> {
        let limiter = self.limiter(action);
        limiter.check_key(key).map_err(|not_until| {
            metrics::counter!("api_rate_limited_total", "action" => action.name()).increment(1);
            ApiError::RateLimited {
                retry_after: not_until.wait_time_from(limiter.clock().now()),
            }
        })
    }

    /// Counts one `action` by the caller of `ctx` (see [`RequestContext::client_key`]).
    pub fn check_ctx(ctx: &Context<'_>, action: RateLimitedAction) -> Result<(), ApiError> {
        let key = RequestContext::from_ctx(ctx)?.client_key();
        let limits = ctx.data_opt::<Arc<Self>>().ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "RateLimits missing: the schema is served outside api::http"
            ))
        })?;
        limits.check(action, &key)
    }

    /// Forgets clients whose allowance has fully refilled, so memory follows the number
    /// of recently active clients rather than every client ever seen.
    pub fn prune(&self) {
        for limiter in [&self.login, &self.purchase] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many clients are currently tracked, over all actions.
    pub fn tracked_clients(&self) -> usize {
        self.login.len() + self.purchase.len()
    }
}

fn quota(spec: RateSpec) -> Quota {
    // A whole period's allowance is available at once and refills evenly: `count` per
    // period, one every `period / count`.
    let interval = spec.period.duration() / spec.count.get();
    Quota::with_period(interval)
        .unwrap_or_else(|| Quota::per_second(NonZeroU32::MAX))
        .allow_burst(spec.count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RatePeriod;
    use std::{net::IpAddr, time::Duration};

    fn spec(count: u32, period: RatePeriod) -> RateSpec {
        RateSpec::per(NonZeroU32::new(count).expect("non-zero"), period)
    }

    #[test]
    fn allows_the_burst_then_refuses_with_a_wait() {
        let limits = RateLimits::new(spec(3, RatePeriod::Hour), spec(1, RatePeriod::Hour));
        let key = ClientKey::ip("192.0.2.1".parse::<IpAddr>().expect("ip"));
        for _ in 0..3 {
            limits
                .check(RateLimitedAction::Login, &key)
                .expect("within the burst");
        }
        let refused = limits
            .check(RateLimitedAction::Login, &key)
            .expect_err("over the limit");
        let ApiError::RateLimited { retry_after } = refused else {
            panic!("{refused:?}")
        };
        // One attempt refills every 20 minutes.
        assert!(
            retry_after > Duration::from_secs(19 * 60)
                && retry_after <= Duration::from_secs(20 * 60),
            "{retry_after:?}"
        );
        // Actions and clients are independent.
        limits
            .check(RateLimitedAction::Purchase, &key)
            .expect("separate limiter");
        let other = ClientKey::ip("192.0.2.2".parse::<IpAddr>().expect("ip"));
        limits
            .check(RateLimitedAction::Login, &other)
            .expect("separate client");
        assert_eq!(limits.tracked_clients(), 3);
    }

    #[test]
    fn concurrent_attempts_never_exceed_the_burst() {
        let burst = 50;
        let limits = Arc::new(RateLimits::new(
            spec(burst, RatePeriod::Hour),
            spec(1, RatePeriod::Hour),
        ));
        let key = ClientKey::User(uuid::Uuid::now_v7());
        let allowed: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| {
                    let limits = Arc::clone(&limits);
                    scope.spawn(move || {
                        (0..100)
                            .filter(|_| limits.check(RateLimitedAction::Login, &key).is_ok())
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().expect("thread")).sum()
        });
        assert_eq!(allowed, burst as usize);
    }

    #[test]
    fn pruning_keeps_clients_still_limited() {
        let limits = RateLimits::new(spec(1, RatePeriod::Hour), spec(1, RatePeriod::Hour));
        let key = ClientKey::User(uuid::Uuid::now_v7());
        limits.check(RateLimitedAction::Login, &key).expect("first");
        limits.prune();
        assert!(
            limits.check(RateLimitedAction::Login, &key).is_err(),
            "pruning must not reset a limited client"
        );
    }
}
