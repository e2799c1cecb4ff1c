//! Authentication and authorization at the edge.
//!
//! * Passwords are hashed with Argon2id ([`PasswordHasher`]) off the async runtime.
//! * Logins are answered with an HS256 JWT ([`JwtCodec`]) whose claims name the user and
//!   their roles.
//! * Each HTTP request (the `Authorization: Bearer` header) and each WebSocket connection
//!   (the `connection_init` payload) is authenticated once, before the schema runs, into
//!   an optional [`AuthUser`] kept in the request's [`RequestContext`].
//! * Resolvers are protected with the guards [`Authenticated`] and [`RoleGuard`], or by
//!   calling [`RequestContext::require_user`].

use std::{
    sync::{Arc, OnceLock},
    time::Duration,
};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordVerifier, Version,
    password_hash::{PasswordHasher as _, SaltString},
};
use async_graphql::{Context, Guard};
use axum::http::{HeaderMap, HeaderValue, header};
use chrono::{DateTime, TimeZone, Utc};
use jsonwebtoken::{DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::{context::RequestContext, error::ApiError};

/// What a user may do. A user holds one or more roles.
#[derive(async_graphql::Enum, Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
// The domain's role cannot derive GraphQL types (the domain knows no web crate); `remote`
// generates the conversions both ways, so the two can never drift apart.
#[graphql(remote = "domain::aggregate::Role")]
pub enum Role {
    /// Runs the platform: grants roles, sees every event.
    Admin,
    /// Creates and manages their own events.
    Organizer,
    /// Door staff: checks tickets in.
    Operator,
    /// Buys tickets.
    Customer,
}

/// Why a request carries no valid identity. Every variant is `UNAUTHENTICATED`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No credentials were sent, and the operation needs them.
    #[error("authentication required: send `Authorization: Bearer <token>` (log in to get one)")]
    Missing,
    /// The credentials are not a bearer token of the expected form.
    #[error("malformed credentials: expected `Authorization: Bearer <token>`")]
    Malformed,
    /// The token was valid, but has expired.
    #[error("the token has expired; log in again")]
    Expired,
    /// The token is not one we issued (bad signature, issuer or claims).
    #[error("the token is invalid")]
    Invalid,
    /// The token was issued before the account's password changed: that session ended.
    #[error("this session has ended (the password was changed); log in again")]
    SessionEnded,
}

/// The claims of the JWTs we issue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: Uuid,
    /// The user's roles when the token was issued.
    pub roles: Vec<Role>,
    /// Issued at, in seconds since the Unix epoch.
    pub iat: i64,
    /// Expires at, in seconds since the Unix epoch.
    pub exp: i64,
    /// Issuer: the configured service name.
    pub iss: String,
    /// The account's session when the token was issued: a password change starts a new
    /// one, and tokens of an older session are refused.
    #[serde(default)]
    pub sv: u32,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthUser {
    /// The user's id.
    pub user_id: Uuid,
    /// The user's roles: as they are now where the service knows them, else as of when
    /// their token was issued.
    pub roles: Vec<Role>,
    /// When the credentials stop being valid.
    pub expires_at: DateTime<Utc>,
    /// The account's session the credentials belong to (see [`Claims::sv`]).
    pub session: u32,
}

impl AuthUser {
    /// Whether the user holds `role`.
    pub fn has_role(&self, role: Role) -> bool {
        self.roles.contains(&role)
    }

    /// Whether the user holds at least one of `roles`.
    pub fn has_any_role(&self, roles: &[Role]) -> bool {
        roles.iter().any(|role| self.has_role(*role))
    }
}

/// A JWT just issued, with its expiry for the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    /// The compact JWT to send as `Authorization: Bearer <token>`.
    pub token: String,
    /// When the token expires.
    pub expires_at: DateTime<Utc>,
}

/// Issues and verifies the service's JWTs (HS256 with the configured secret).
pub struct JwtCodec {
    /// Signs new tokens.
    encoding: EncodingKey,
    /// Verifies presented tokens.
    decoding: DecodingKey,
    /// Pins the algorithm (so `alg: none` or RS/HS confusion is refused), the issuer and
    /// the required claims.
    validation: Validation,
    /// Written into `iss`.
    issuer: String,
    /// Lifetime of issued tokens.
    expiry: Duration,
    /// The user's roles and session as they are now (the accounts read model), when known:
    /// a role granted or revoked after a token was issued takes effect at the next
    /// request, not at the next log-in, and a password change ends every older session.
    current: Option<CurrentAccount>,
    /// Tokens whose signature and claims were verified, by their exact text: a buyer sends
    /// the same token with every request, and checking its HMAC and decoding its claims
    /// again costs more than the rest of authentication. Expiry and the account's current
    /// session are still checked on every request.
    verified: parking_lot::Mutex<std::collections::HashMap<Box<str>, VerifiedClaims>>,
}

/// Most tokens remembered as verified; the memory is dropped and refilled when full.
const MAX_VERIFIED_TOKENS: usize = 16_384;

/// What a verified token says, kept so that it is not verified again.
#[derive(Debug, Clone)]
struct VerifiedClaims {
    sub: Uuid,
    roles: Vec<Role>,
    exp: i64,
    sv: u32,
}

/// Looks up a user's roles and session (see [`Claims::sv`]) as they are now; `None` for a
/// user it does not know.
pub type CurrentAccount = Arc<dyn Fn(Uuid) -> Option<(Vec<Role>, u32)> + Send + Sync>;

impl std::fmt::Debug for JwtCodec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtCodec")
            .field("issuer", &self.issuer)
            .field("expiry", &self.expiry)
            .finish_non_exhaustive()
    }
}

impl JwtCodec {
    /// A codec signing with `secret`, naming `issuer`, issuing tokens valid for `expiry`.
    pub fn new(secret: &SecretString, issuer: impl Into<String>, expiry: Duration) -> Self {
        let issuer = issuer.into();
        let key = secret.expose_secret().as_bytes();
        let mut validation = Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_issuer(&[&issuer]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "sub"]);
        // Tokens are verified by the nodes that issue them; a little leeway absorbs clock
        // drift between replicas without meaningfully extending a token's life.
        validation.leeway = 5;
        Self {
            encoding: EncodingKey::from_secret(key),
            decoding: DecodingKey::from_secret(key),
            validation,
            issuer,
            expiry,
            current: None,
            verified: parking_lot::Mutex::new(std::collections::HashMap::new()),
        }
    }

    /// The same codec, giving verified users the roles `current` says they hold now
    /// instead of those their token was issued with (kept for users it does not know), and
    /// refusing tokens of a session `current` says has ended.
    pub fn with_current_account(mut self, current: CurrentAccount) -> Self {
        self.current = Some(current);
        self
    }

    /// A codec configured from the service configuration.
    pub fn from_config(config: &crate::config::ServiceConfig) -> Self {
        Self::new(
            &config.jwt_secret,
            config.jwt_issuer.clone(),
            config.jwt_expiry,
        )
    }

    /// Issues a token for `user_id` with `roles`, valid from now, in the account's first
    /// session.
    pub fn issue(&self, user_id: Uuid, roles: &[Role]) -> Result<IssuedToken, ApiError> {
        self.issue_at(user_id, roles, 0, Utc::now())
    }

    /// Issues a token for `user_id` with `roles` in the account's session `session`.
    pub fn issue_in_session(
        &self,
        user_id: Uuid,
        roles: &[Role],
        session: u32,
    ) -> Result<IssuedToken, ApiError> {
        self.issue_at(user_id, roles, session, Utc::now())
    }

    /// Issues a token as if it were `issued_at` (tests use a past time to get an expired
    /// token).
    pub fn issue_at(
        &self,
        user_id: Uuid,
        roles: &[Role],
        session: u32,
        issued_at: DateTime<Utc>,
    ) -> Result<IssuedToken, ApiError> {
        let lifetime = chrono::Duration::from_std(self.expiry).map_err(ApiError::internal)?;
        let expires_at = issued_at + lifetime;
        let claims = Claims {
            sub: user_id,
            roles: roles.to_vec(),
            iat: issued_at.timestamp(),
            exp: expires_at.timestamp(),
            iss: self.issuer.clone(),
            sv: session,
        };
        let token = jsonwebtoken::encode(
            &Header::new(jsonwebtoken::Algorithm::HS256),
            &claims,
            &self.encoding,
        )
        .map_err(ApiError::internal)?;
        Ok(IssuedToken { token, expires_at })
    }

    /// Verifies `token` and returns who it names.
    pub fn verify(&self, token: &str) -> Result<AuthUser, AuthError> {
        let claims = self.verified_claims(token)?;
        let expires_at = Utc
            .timestamp_opt(claims.exp, 0)
            .single()
            .ok_or(AuthError::Invalid)?;
        let roles = match self.current.as_ref().and_then(|c| c(claims.sub)) {
            Some((_, session)) if session != claims.sv => {
                return Err(AuthError::SessionEnded);
            }
            Some((roles, _)) => roles,
            None => claims.roles,
        };
        Ok(AuthUser {
            user_id: claims.sub,
            roles,
            expires_at,
            session: claims.sv,
        })
    }

    /// The claims of `token`, verified now or at an earlier request; refused once expired
    /// (with the same leeway as a first verification).
    fn verified_claims(&self, token: &str) -> Result<VerifiedClaims, AuthError> {
        let known = self.verified.lock().get(token).cloned();
        if let Some(claims) = known {
            let leeway = i64::try_from(self.validation.leeway).unwrap_or(i64::MAX);
            if claims.exp < Utc::now().timestamp().saturating_sub(leeway) {
                self.verified.lock().remove(token);
                return Err(AuthError::Expired);
            }
            return Ok(claims);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|error| match error.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidToken
                | ErrorKind::Base64(_)
                | ErrorKind::Json(_)
                | ErrorKind::Utf8(_) => AuthError::Malformed,
                _ => AuthError::Invalid,
            })?;
        let claims = VerifiedClaims {
            sub: data.claims.sub,
            roles: data.claims.roles,
            exp: data.claims.exp,
            sv: data.claims.sv,
        };
        let mut verified = self.verified.lock();
        if verified.len() >= MAX_VERIFIED_TOKENS {
            verified.clear();
        }
        verified.insert(token.into(), claims.clone());
        Ok(claims)
    }

    /// The user of credentials verified earlier (a WebSocket's, at its `connection_init`)
    /// as they are now: with their current roles, refused if the credentials expired or
    /// their session ended since.
    pub fn refresh(&self, user: &AuthUser) -> Result<AuthUser, AuthError> {
        if user.expires_at <= Utc::now() {
            return Err(AuthError::Expired);
        }
        match self.current.as_ref().and_then(|c| c(user.user_id)) {
            Some((_, session)) if session != user.session => Err(AuthError::SessionEnded),
            Some((roles, _)) => Ok(AuthUser {
                roles,
                ..user.clone()
            }),
            None => Ok(user.clone()),
        }
    }

    /// Authenticates an HTTP request from its `Authorization` header: `Ok(None)` when
    /// there is none (an anonymous caller), an error when it is present but not valid.
    pub fn authenticate_headers(&self, headers: &HeaderMap) -> Result<Option<AuthUser>, AuthError> {
        match headers.get(header::AUTHORIZATION) {
            None => Ok(None),
            Some(value) => self.verify(bearer_token(value)?).map(Some),
        }
    }

    /// Authenticates a WebSocket connection from its `connection_init` payload, which
    /// carries the header browsers cannot set on a WebSocket: `{"Authorization": "Bearer
    /// <token>"}` (any case), also accepted under `headers`. `Ok(None)` when absent.
    pub fn authenticate_connection_init(
        &self,
        payload: &serde_json::Value,
    ) -> Result<Option<AuthUser>, AuthError> {
        let find = |object: &serde_json::Value| {
            object
                .as_object()?
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case("authorization"))
                .map(|(_, value)| value.clone())
        };
        let value = find(payload).or_else(|| payload.get("headers").and_then(find));
        match value {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(value)) => {
                let value = HeaderValue::from_str(&value).map_err(|_| AuthError::Malformed)?;
                self.verify(bearer_token(&value)?).map(Some)
            }
            Some(_) => Err(AuthError::Malformed),
        }
    }
}

/// The token of an `Authorization: Bearer <token>` header value.
pub fn bearer_token(value: &HeaderValue) -> Result<&str, AuthError> {
    let value = value.to_str().map_err(|_| AuthError::Malformed)?;
    let (scheme, token) = value.trim().split_once(' ').ok_or(AuthError::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(AuthError::Malformed);
    }
    Ok(token)
}

/// Guard: the caller must be authenticated (any role).
#[derive(Debug, Clone, Copy, Default)]
pub struct Authenticated;

impl Guard for Authenticated {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        RequestContext::from_ctx(ctx)?.require_user()?;
        Ok(())
    }
}

/// Guard: the caller must hold at least one of the given roles. No role implies another:
/// a field open to administrators says so (`RoleGuard::any_of(&[Role::Organizer,
/// Role::Admin])`).
#[derive(Debug, Clone, Copy)]
pub struct RoleGuard {
    /// The roles that pass.
    roles: &'static [Role],
}

impl RoleGuard {
    /// Passes callers holding `role`.
    pub const fn new(role: Role) -> Self {
        Self {
            roles: match role {
                Role::Admin => &[Role::Admin],
                Role::Organizer => &[Role::Organizer],
                Role::Operator => &[Role::Operator],
                Role::Customer => &[Role::Customer],
            },
        }
    }

    /// Passes callers holding any of `roles`.
    pub const fn any_of(roles: &'static [Role]) -> Self {
        Self { roles }
    }

    /// Checks `user` against the guard.
    pub fn check_user(&self, user: &AuthUser) -> Result<(), ApiError> {
        if user.has_any_role(self.roles) {
            Ok(())
        } else {
            let names: Vec<&str> = self.roles.iter().map(|role| role.name()).collect();
            Err(ApiError::forbidden(format!(
                "this needs the role {}",
                names.join(" or ")
            )))
        }
    }
}

impl Role {
    /// The role's name as in the schema.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Admin => "ADMIN",
            Self::Organizer => "ORGANIZER",
            Self::Operator => "OPERATOR",
            Self::Customer => "CUSTOMER",
        }
    }
}

impl Guard for RoleGuard {
    async fn check(&self, ctx: &Context<'_>) -> async_graphql::Result<()> {
        let user = RequestContext::from_ctx(ctx)?.require_user()?;
        self.check_user(user)?;
        Ok(())
    }
}

/// Shortest password accepted for a new account, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Longest password accepted, in bytes: hashing cost grows with length, so an unbounded
/// password is a denial-of-service lever.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Hashes and verifies passwords with Argon2id.
///
/// Parameters: 19 MiB of memory, 2 passes, 1 lane: OWASP's recommended minimum for
/// Argon2id, costing tens of milliseconds of one core. That makes offline guessing
/// expensive while keeping a login affordable on a small machine; the login rate limit
/// caps what an online attacker gets.
///
/// Hashing runs on threads of its own, one fewer than the machine has cores (at least one),
/// so that a flood of logins or registrations never takes every core (nor more than
/// `threads × 19 MiB` of memory) from a ticket sale. Work waits in two bounded queues:
/// verifications (logins) go before new hashes (registrations, password changes), so a
/// registration flood does not make logins wait; a full queue is refused at once with
/// `RATE_LIMITED`, and work whose caller has given up (its request timed out) is skipped.
///
/// Stored hashes are PHC strings that carry their own parameters, so raising the
/// parameters later still verifies old hashes.
#[derive(Clone)]
pub struct PasswordHasher {
    /// The configured Argon2id instance (parameters above).
    argon2: Argon2<'static>,
    /// The hashing threads and their queues; they stop when the last clone is dropped.
    pool: Arc<HashPool>,
}

impl std::fmt::Debug for PasswordHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let queues = self.pool.shared.queues.lock();
        f.debug_struct("PasswordHasher")
            .field("params", self.argon2.params())
            .field("threads", &self.pool.threads)
            .field("queued_verifications", &queues.verify.len())
            .field("queued_hashes", &queues.hash.len())
            .finish()
    }
}

impl Default for PasswordHasher {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(2, usize::from);
        Self::new(cores.saturating_sub(1).max(1))
    }
}

/// Which queue a piece of password work waits in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Work {
    /// Checking a password at log-in: a person is waiting to get in.
    Verify,
    /// Hashing a new password (registration, password change).
    Hash,
}

/// Most verifications waiting at once (beyond it a login is refused, to retry).
pub const MAX_QUEUED_VERIFICATIONS: usize = 64;
/// Most new hashes waiting at once (beyond it a registration is refused, to retry).
pub const MAX_QUEUED_HASHES: usize = 16;

/// The hashing threads' work.
struct HashPool {
    /// Shared with the threads.
    shared: Arc<PoolShared>,
    /// How many threads there are.
    threads: usize,
}

struct PoolShared {
    queues: parking_lot::Mutex<Queues>,
    ready: parking_lot::Condvar,
}

#[derive(Default)]
struct Queues {
    verify: std::collections::VecDeque<Job>,
    hash: std::collections::VecDeque<Job>,
    /// Set when the pool is dropped: the threads finish what is queued and stop.
    closed: bool,
}

/// A piece of work; it runs the hash only if its caller still waits.
type Job = Box<dyn FnOnce() + Send>;

impl HashPool {
    fn start(threads: usize) -> Self {
        let shared = Arc::new(PoolShared {
            queues: parking_lot::Mutex::new(Queues::default()),
            ready: parking_lot::Condvar::new(),
        });
        for n in 0..threads {
            let shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("argon2-{n}"))
                .spawn(move || {
                    loop {
                        let job = {
                            let mut queues = shared.queues.lock();
                            loop {
                                if let Some(job) = queues.verify.pop_front() {
                                    break job;
                                }
                                if let Some(job) = queues.hash.pop_front() {
                                    break job;
                                }
                                if queues.closed {
                                    return;
                                }
                                shared.ready.wait(&mut queues);
                            }
                        };
                        job();
                    }
                });
            if let Err(error) = spawned {
                tracing::error!(%error, "cannot start a password hashing thread");
            }
        }
        Self { shared, threads }
    }

    /// Queues `work`; its answer arrives on the returned channel (closed unanswered if the
    /// pool stops first).
    fn submit<T: Send + 'static>(
        &self,
        kind: Work,
        work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<T, ApiError>>, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let job: Job = Box::new(move || {
            // The caller gave up (its request timed out, its client left): skip the work.
            if !tx.is_closed() {
                let _ = tx.send(work());
            }
        });
        let mut queues = self.shared.queues.lock();
        let (queue, cap) = match kind {
            Work::Verify => (&mut queues.verify, MAX_QUEUED_VERIFICATIONS),
            Work::Hash => (&mut queues.hash, MAX_QUEUED_HASHES),
        };
        if queue.len() >= cap {
            metrics::counter!("api_password_work_refused_total", "kind" => match kind { Work::Verify => "verify", Work::Hash => "hash" }).increment(1);
            return Err(ApiError::RateLimited {
                retry_after: Duration::from_secs(1),
            });
        }
        queue.push_back(job);
        drop(queues);
        self.shared.ready.notify_one();
        Ok(rx)
    }
}

impl Drop for HashPool {
    fn drop(&mut self) {
        self.shared.queues.lock().closed = true;
        self.shared.ready.notify_all();
    }
}

impl PasswordHasher {
    /// Memory cost in KiB.
    pub const M_COST_KIB: u32 = 19 * 1024;
    /// Number of passes.
    pub const T_COST: u32 = 2;
    /// Degree of parallelism.
    pub const P_COST: u32 = 1;

    /// A hasher running at most `threads` hashes at once.
    pub fn new(threads: usize) -> Self {
        let params = Params::new(Self::M_COST_KIB, Self::T_COST, Self::P_COST, None)
            .expect("constant Argon2 parameters are valid");
        Self {
            argon2: Argon2::new(Algorithm::Argon2id, Version::V0x13, params),
            pool: Arc::new(HashPool::start(threads.max(1))),
        }
    }

    /// Checks a new password's length: at least [`MIN_PASSWORD_CHARS`] characters, at most
    /// [`MAX_PASSWORD_BYTES`] bytes.
    pub fn check_new(password: &SecretString) -> Result<(), ApiError> {
        let chars = password.expose_secret().chars().count();
        if chars < MIN_PASSWORD_CHARS {
            return Err(ApiError::invalid_field(
                "password",
                format!("the password must have at least {MIN_PASSWORD_CHARS} characters"),
            ));
        }
        if password.expose_secret().len() > MAX_PASSWORD_BYTES {
            return Err(ApiError::invalid_field(
                "password",
                format!("the password must be at most {MAX_PASSWORD_BYTES} bytes long"),
            ));
        }
        Ok(())
    }

    /// Hashes a new password into a PHC string, after checking its length.
    pub async fn hash(&self, password: &SecretString) -> Result<String, ApiError> {
        Self::check_new(password)?;
        let argon2 = self.argon2.clone();
        let password = password.clone();
        self.run(Work::Hash, move || {
            let salt = SaltString::generate(&mut rand::rngs::OsRng);
            argon2
                .hash_password(password.expose_secret().as_bytes(), &salt)
                .map(|hash| hash.to_string())
                .map_err(|error| ApiError::internal(anyhow::anyhow!("hashing a password: {error}")))
        })
        .await
    }

    /// Whether `password` matches `stored` (a PHC string from [`PasswordHasher::hash`]).
    ///
    /// With `stored` absent (no such account) a dummy hash is verified instead, so the
    /// answer takes as long as for an existing account and does not reveal which emails
    /// are registered.
    pub async fn verify(
        &self,
        password: &SecretString,
        stored: Option<&str>,
    ) -> Result<bool, ApiError> {
        if password.expose_secret().len() > MAX_PASSWORD_BYTES {
            return Ok(false);
        }
        let argon2 = self.argon2.clone();
        let password = password.clone();
        let stored = stored.map(str::to_owned);
        self.run(Work::Verify, move || {
            let (hash, exists) = match &stored {
                Some(stored) => (stored.as_str(), true),
                None => (dummy_hash(&argon2)?, false),
            };
            let hash = PasswordHash::new(hash).map_err(|error| {
                ApiError::internal(anyhow::anyhow!("stored password hash is corrupt: {error}"))
            })?;
            let matches = argon2
                .verify_password(password.expose_secret().as_bytes(), &hash)
                .is_ok();
            Ok(exists && matches)
        })
        .await
    }

    async fn run<T: Send + 'static>(
        &self,
        kind: Work,
        work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        self.pool
            .submit(kind, work)?
            .await
            .map_err(|_| ApiError::Unavailable("password hashing is shutting down".into()))?
    }
}

/// A hash of a random password with the live parameters, made once.
fn dummy_hash(argon2: &Argon2<'static>) -> Result<&'static str, ApiError> {
    static DUMMY: OnceLock<String> = OnceLock::new();
    if let Some(hash) = DUMMY.get() {
        return Ok(hash);
    }
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    let hash = argon2
        .hash_password(Uuid::new_v4().as_bytes(), &salt)
        .map_err(|error| {
            ApiError::internal(anyhow::anyhow!("hashing the dummy password: {error}"))
        })?
        .to_string();
    Ok(DUMMY.get_or_init(|| hash))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Timelike;
    use proptest::prelude::*;

    fn codec() -> JwtCodec {
        JwtCodec::new(
            &SecretString::from("test-secret-0123456789abcdef0123456789"),
            "ticketing",
            Duration::from_secs(3600),
        )
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {token}")).expect("header"),
        );
        headers
    }

    #[test]
    fn issued_tokens_verify() {
        let codec = codec();
        let user = Uuid::now_v7();
        let issued = codec
            .issue(user, &[Role::Organizer, Role::Customer])
            .expect("issues");
        let verified = codec
            .authenticate_headers(&bearer(&issued.token))
            .expect("valid")
            .expect("present");
        assert_eq!(verified.user_id, user);
        assert!(verified.has_role(Role::Organizer));
        assert!(!verified.has_role(Role::Admin));
        assert_eq!(
            verified.expires_at,
            issued.expires_at.with_nanosecond(0).expect("valid")
        );
    }

    #[test]
    fn a_token_verified_before_is_still_refused_once_expired_or_altered() {
        let mut codec = JwtCodec::new(
            &SecretString::from("test-secret-0123456789abcdef0123456789"),
            "ticketing",
            Duration::from_secs(1),
        );
        codec.validation.leeway = 0;
        let user = Uuid::now_v7();
        let issued = codec.issue(user, &[Role::Customer]).expect("issues");
        assert_eq!(codec.verify(&issued.token).expect("valid").user_id, user);
        assert_eq!(
            codec.verify(&issued.token).expect("remembered").user_id,
            user
        );

        // One character changed in the signature, after the token was remembered.
        let mut altered = issued.token.clone().into_bytes();
        let last = altered.last_mut().expect("non-empty");
        *last = if *last == b'A' { b'B' } else { b'A' };
        let altered = String::from_utf8(altered).expect("ascii");
        assert!(codec.verify(&altered).is_err());

        std::thread::sleep(Duration::from_millis(2_100));
        assert_eq!(codec.verify(&issued.token), Err(AuthError::Expired));
    }

    #[test]
    fn expired_forged_and_malformed_tokens_are_refused() {
        let codec = codec();
        let user = Uuid::now_v7();
        let expired = codec
            .issue_at(
                user,
                &[Role::Admin],
                0,
                Utc::now() - chrono::Duration::hours(2),
            )
            .expect("issues");
        assert_eq!(codec.verify(&expired.token), Err(AuthError::Expired));

        let other = JwtCodec::new(
            &SecretString::from("another-secret-0123456789abcdef012345"),
            "ticketing",
            Duration::from_secs(3600),
        );
        let forged = other.issue(user, &[Role::Admin]).expect("issues");
        assert_eq!(codec.verify(&forged.token), Err(AuthError::Invalid));

        let wrong_issuer = JwtCodec::new(
            &SecretString::from("test-secret-0123456789abcdef0123456789"),
            "someone-else",
            Duration::from_secs(3600),
        );
        let token = wrong_issuer.issue(user, &[Role::Admin]).expect("issues");
        assert_eq!(codec.verify(&token.token), Err(AuthError::Invalid));

        // `alg: none` with admin claims: refused because the algorithm is pinned.
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = base64_url(
            format!(
                r#"{{"sub":"{user}","roles":["ADMIN"],"iat":0,"exp":9999999999,"iss":"ticketing"}}"#
            )
            .as_bytes(),
        );
        assert!(codec.verify(&format!("{header}.{claims}.")).is_err());

        assert_eq!(codec.verify("not-a-jwt"), Err(AuthError::Malformed));
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Basic dXNlcjpwYXNz"),
        );
        assert_eq!(
            codec.authenticate_headers(&headers),
            Err(AuthError::Malformed)
        );
        headers.insert(header::AUTHORIZATION, HeaderValue::from_static("Bearer "));
        assert_eq!(
            codec.authenticate_headers(&headers),
            Err(AuthError::Malformed)
        );
        assert_eq!(codec.authenticate_headers(&HeaderMap::new()), Ok(None));
    }

    fn base64_url(bytes: &[u8]) -> String {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    }

    #[test]
    fn connection_init_payloads() {
        let codec = codec();
        let issued = codec
            .issue(Uuid::now_v7(), &[Role::Customer])
            .expect("issues");
        let bearer = format!("Bearer {}", issued.token);
        for payload in [
            serde_json::json!({ "Authorization": bearer }),
            serde_json::json!({ "authorization": bearer }),
            serde_json::json!({ "headers": { "Authorization": bearer } }),
        ] {
            assert!(
                codec
                    .authenticate_connection_init(&payload)
                    .expect("valid")
                    .is_some(),
                "{payload}"
            );
        }
        assert_eq!(
            codec.authenticate_connection_init(&serde_json::json!({})),
            Ok(None)
        );
        assert_eq!(
            codec.authenticate_connection_init(&serde_json::Value::Null),
            Ok(None)
        );
        assert_eq!(
            codec.authenticate_connection_init(&serde_json::json!({ "Authorization": 42 })),
            Err(AuthError::Malformed)
        );
        assert_eq!(
            codec.authenticate_connection_init(
                &serde_json::json!({ "Authorization": "Bearer x\ny" })
            ),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn role_guard_checks_roles() {
        let user = AuthUser {
            user_id: Uuid::now_v7(),
            roles: vec![Role::Operator],
            expires_at: Utc::now(),
            session: 0,
        };
        assert!(RoleGuard::new(Role::Operator).check_user(&user).is_ok());
        let refused = RoleGuard::any_of(&[Role::Organizer, Role::Admin])
            .check_user(&user)
            .expect_err("forbidden");
        assert_eq!(refused.code(), crate::error::ErrorCode::Forbidden);
        assert!(refused.to_string().contains("ORGANIZER or ADMIN"));
    }

    #[tokio::test]
    async fn passwords_hash_and_verify() {
        let hasher = PasswordHasher::new(2);
        let password = SecretString::from("correct horse battery staple");
        let hash = hasher.hash(&password).await.expect("hashes");
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        assert!(
            hasher
                .verify(&password, Some(&hash))
                .await
                .expect("verifies")
        );
        assert!(
            !hasher
                .verify(&SecretString::from("wrong password"), Some(&hash))
                .await
                .expect("verifies")
        );
        // Same password, different salt.
        assert_ne!(hasher.hash(&password).await.expect("hashes"), hash);
        // No account: verified against the dummy, and never a match.
        assert!(!hasher.verify(&password, None).await.expect("verifies"));
        assert_eq!(
            hasher
                .verify(&password, Some("garbage"))
                .await
                .expect_err("corrupt")
                .code(),
            crate::error::ErrorCode::Internal
        );
    }

    #[tokio::test]
    async fn password_lengths_are_checked() {
        let hasher = PasswordHasher::new(1);
        let short = hasher
            .hash(&SecretString::from("short"))
            .await
            .expect_err("too short");
        assert_eq!(short.code(), crate::error::ErrorCode::InvalidInput);
        let long = SecretString::from("x".repeat(MAX_PASSWORD_BYTES + 1));
        assert_eq!(
            hasher.hash(&long).await.expect_err("too long").code(),
            crate::error::ErrorCode::InvalidInput
        );
        assert!(!hasher.verify(&long, None).await.expect("answers"));
    }

    proptest! {
        #[test]
        fn arbitrary_tokens_never_panic_and_never_verify(token in ".{0,300}") {
            prop_assert!(codec().verify(&token).is_err());
        }

        #[test]
        fn tampered_tokens_never_verify(flip in 0usize..1000) {
            let codec = codec();
            let token = codec.issue(Uuid::nil(), &[Role::Customer]).expect("issues").token;
            let mut bytes = token.into_bytes();
            let index = flip % bytes.len();
            bytes[index] = if bytes[index] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).expect("ascii");
            // A flip in the padding bits of the last base64 character can decode to the
            // same bytes; anything else must fail.
            if let Ok(user) = codec.verify(&tampered) {
                prop_assert_eq!(user.user_id, Uuid::nil());
                prop_assert_eq!(user.roles, vec![Role::Customer]);
            }
        }
    }
}
