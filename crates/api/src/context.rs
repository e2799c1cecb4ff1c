//! What a resolver knows about the request it serves.

use std::{
    net::{IpAddr, Ipv6Addr},
    sync::Arc,
};

use async_graphql::Context;
use uuid::Uuid;

use crate::{
    auth::{AuthError, AuthUser},
    error::ApiError,
};

/// Per-request data the HTTP layer puts into every GraphQL request (and every WebSocket
/// connection): who is calling, from where, under which request id.
#[derive(Debug, Clone)]
pub struct RequestContext {
    /// The `x-request-id` of the request (or of the WebSocket upgrade). It is the
    /// correlation id that commands carry into stored events' metadata and that errors
    /// are logged under.
    pub request_id: Arc<str>,
    /// The client's address, the rate-limiting key of anonymous callers.
    pub client_ip: IpAddr,
    /// The authenticated caller, if credentials were sent.
    pub user: Option<AuthUser>,
}

impl RequestContext {
    /// The context of the request `ctx` belongs to.
    ///
    /// Fails with `INTERNAL` when the schema runs outside the HTTP layer that provides it.
    pub fn from_ctx<'a>(ctx: &'a Context<'_>) -> Result<&'a Self, ApiError> {
        ctx.data_opt::<Self>().ok_or_else(|| {
            ApiError::internal(anyhow::anyhow!(
                "RequestContext missing: the schema is served outside api::http"
            ))
        })
    }

    /// The caller, or `UNAUTHENTICATED` for an anonymous request.
    pub fn require_user(&self) -> Result<&AuthUser, ApiError> {
        self.user
            .as_ref()
            .ok_or(ApiError::Unauthenticated(AuthError::Missing))
    }

    /// The key this caller is rate limited under: the user when authenticated, otherwise
    /// the client address.
    pub fn client_key(&self) -> ClientKey {
        match &self.user {
            Some(user) => ClientKey::User(user.user_id),
            None => ClientKey::ip(self.client_ip),
        }
    }
}

/// Whom a rate limit counts against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ClientKey {
    /// An authenticated user, wherever they connect from.
    User(Uuid),
    /// An address: an IPv4 address, or the /64 network of an IPv6 address.
    Ip(IpAddr),
    /// An email address someone tries to log in as (a hash of its normalised form, so
    /// the limiter keeps no addresses).
    Email([u8; 16]),
}

impl ClientKey {
    /// The key of an email address tried at log-in: trimmed and lower-cased first, so
    /// that `Kim@x.io` and `kim@x.io ` share one allowance.
    pub fn email(email: &str) -> Self {
        use sha2::Digest as _;
        let digest = sha2::Sha256::digest(email.trim().to_lowercase().as_bytes());
        let mut key = [0u8; 16];
        key.copy_from_slice(&digest[..16]);
        Self::Email(key)
    }

    /// The key of a client address. IPv6 clients are keyed by their /64 network, because
    /// one subscriber usually holds a whole /64 and could otherwise rotate addresses to
    /// escape the limit; IPv4-mapped IPv6 addresses count as the IPv4 address.
    pub fn ip(address: IpAddr) -> Self {
        match address {
            IpAddr::V4(v4) => Self::Ip(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self::Ip(IpAddr::V4(v4)),
                None => {
                    let network = u128::from(v6) & !((1u128 << 64) - 1);
                    Self::Ip(IpAddr::V6(Ipv6Addr::from(network)))
                }
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_clients_are_keyed_by_their_network() {
        let a: IpAddr = "2001:db8:1:2:aaaa::1".parse().expect("ip");
        let b: IpAddr = "2001:db8:1:2:bbbb::9".parse().expect("ip");
        let c: IpAddr = "2001:db8:1:3::1".parse().expect("ip");
        assert_eq!(ClientKey::ip(a), ClientKey::ip(b));
        assert_ne!(ClientKey::ip(a), ClientKey::ip(c));
        let mapped: IpAddr = "::ffff:192.0.2.7".parse().expect("ip");
        assert_eq!(
            ClientKey::ip(mapped),
            ClientKey::Ip("192.0.2.7".parse().expect("ip"))
        );
    }
}
