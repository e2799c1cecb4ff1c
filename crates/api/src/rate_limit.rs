//! Per-client rate limits for the actions worth abusing: logging in (password guessing),
//! registering and changing passwords (each costs a password hash), and buying (hoarding
//! holds).
//!
//! Each action has its own GCRA limiter (`governor`) keyed by [`ClientKey`]. Resolvers
//! apply them explicitly, each with the key that fits the action:
//!
//! * a login counts against the email it tries ([`ClientKey::email`]) and against the
//!   client address, never against a token the caller sends (an attacker has as many
//!   tokens as accounts);
//! * a registration or a password change counts against the client address;
//! * a purchase attempt counts against the caller ([`RequestContext::client_key`]).
//!
//! ```text
//! RateLimits::check_ctx(ctx, RateLimitedAction::Purchase)?;
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
    /// A login attempt at one email address.
    Login,
    /// A login attempt from one client address.
    LoginFromAddress,
    /// A registration or a password change from one client address.
    Register,
    /// A purchase attempt: holding or paying for tickets.
    Purchase,
}

impl RateLimitedAction {
    /// The action's name in metrics.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Login => "login",
            Self::LoginFromAddress => "login_address",
            Self::Register => "register",
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
    /// Login attempts per email tried.
    login: DefaultKeyedRateLimiter<ClientKey>,
    /// Login attempts per client address.
    login_address: DefaultKeyedRateLimiter<ClientKey>,
    /// Registrations and password changes per client address.
    register: DefaultKeyedRateLimiter<ClientKey>,
    /// Purchase attempts per client.
    purchase: DefaultKeyedRateLimiter<ClientKey>,
}

impl RateLimits {
    /// Limiters allowing `login` and `purchase` attempts per client, and the defaults of
    /// the other actions.
    pub fn new(login: RateSpec, purchase: RateSpec) -> Self {
        let defaults = ServiceConfig::default();
        Self::with(
            login,
            defaults.login_address_rate,
            defaults.register_rate,
            purchase,
        )
    }

    /// Limiters for every action.
    pub fn with(
        login: RateSpec,
        login_address: RateSpec,
        register: RateSpec,
        purchase: RateSpec,
    ) -> Self {
        Self {
            login: RateLimiter::keyed(quota(login)),
            login_address: RateLimiter::keyed(quota(login_address)),
            register: RateLimiter::keyed(quota(register)),
            purchase: RateLimiter::keyed(quota(purchase)),
        }
    }

    /// Limiters from the service configuration.
    pub fn from_config(config: &ServiceConfig) -> Self {
        Self::with(
            config.login_rate,
            config.login_address_rate,
            config.register_rate,
            config.purchase_rate,
        )
    }

    fn limiter(&self, action: RateLimitedAction) -> &DefaultKeyedRateLimiter<ClientKey> {
        match action {
            RateLimitedAction::Login => &self.login,
            RateLimitedAction::LoginFromAddress => &self.login_address,
            RateLimitedAction::Register => &self.register,
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
        Self::from_ctx(ctx)?.check(action, &key)
    }

    /// Counts one `action` by the client address of `ctx`, whoever is signed in.
    pub fn check_address(ctx: &Context<'_>, action: RateLimitedAction) -> Result<(), ApiError> {
        let key = ClientKey::ip(RequestContext::from_ctx(ctx)?.client_ip);
        Self::from_ctx(ctx)?.check(action, &key)
    }

    /// Counts one login attempt at `email` from the client of `ctx`: against the email
    /// and against the client address (tokens the caller sends are ignored).
    pub fn check_login(ctx: &Context<'_>, email: &str) -> Result<(), ApiError> {
        let limits = Self::from_ctx(ctx)?;
        limits.check(RateLimitedAction::Login, &ClientKey::email(email))?;
        Self::check_address(ctx, RateLimitedAction::LoginFromAddress)
    }

    fn from_ctx<'a>(ctx: &'a Context<'_>) -> Result<&'a Self, ApiError> {
        ctx.data_opt::<Arc<Self>>().map(Arc::as_ref).ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "RateLimits missing: the schema is served outside api::http"
            ))
        })
    }

    /// Forgets clients whose allowance has fully refilled, so memory follows the number
    /// of recently active clients rather than every client ever seen.
    pub fn prune(&self) {
        for limiter in [
            &self.login,
            &self.login_address,
            &self.register,
            &self.purchase,
        ] {
            limiter.retain_recent();
            limiter.shrink_to_fit();
        }
    }

    /// How many clients are currently tracked, over all actions.
    pub fn tracked_clients(&self) -> usize {
        self.login.len() + self.login_address.len() + self.register.len() + self.purchase.len()
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
