//! Errors at the edge: one enum, [`ApiError`], for everything a client can be told, each
//! with a stable machine code ([`ErrorCode`]) in the GraphQL error's `extensions.code` and
//! a message a person understands.
//!
//! Resolvers return `ApiError` with `?` (async-graphql wraps it and keeps it as the error's
//! source). The [`ErrorCodes`] schema extension, installed by
//! [`crate::graphql::configure_schema`], then rewrites every error of a response:
//!
//! * an `ApiError` gets its code and extras (`retryAfterSeconds`, `field`, `correlationId`);
//! * a query that does not parse or validate (including depth and complexity limits) and an
//!   argument of the wrong shape get `INVALID_INPUT`;
//! * anything else is an internal failure: it is logged with a correlation id, and the
//!   client sees only `INTERNAL`, the id, and a generic message, never the details.

use std::{sync::Arc, time::Duration};

use async_graphql::{
    ErrorExtensionValues, ErrorExtensions, Response, ServerError, ServerResult, ValidationResult,
    Value, Variables,
    extensions::{
        Extension, ExtensionContext, ExtensionFactory, NextParseQuery, NextRequest, NextSubscribe,
        NextValidation,
    },
    futures_util::stream::{BoxStream, StreamExt},
    parser::types::ExecutableDocument,
};
use axum::{
    http::{HeaderValue, StatusCode, header},
    response::{IntoResponse, Response as HttpResponse},
};

use crate::auth::AuthError;

/// The stable machine codes a client may see in `extensions.code`.
///
/// The domain's rejection codes (`SOLD_OUT`, `HOLD_EXPIRED`, ...) pass through unchanged
/// as [`ErrorCode::Domain`]; the others belong to the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorCode {
    /// No valid credentials: the token is missing, expired, malformed or forged.
    Unauthenticated,
    /// Valid credentials, but not allowed to do this.
    Forbidden,
    /// The request or one of its arguments is malformed or out of range.
    InvalidInput,
    /// The thing asked for does not exist (or is not visible to the caller).
    NotFound,
    /// A concurrent change won; retrying with fresh data may succeed.
    Conflict,
    /// The client sent too many requests of this kind; `retryAfterSeconds` says when to retry.
    RateLimited,
    /// The request body is larger than the configured limit.
    PayloadTooLarge,
    /// A dependency (store, projection, provider) is unavailable; retry later.
    Unavailable,
    /// The request took longer than the configured time limit; a mutation may still take
    /// effect, so retry it with the same idempotency key.
    Timeout,
    /// The server already serves as many WebSocket connections as it is configured to;
    /// reconnect later (or to another replica).
    TooManyConnections,
    /// The request named a persisted query by its hash, and the server does not know it:
    /// send the query's text with its hash (Apollo Client does so on its own).
    PersistedQueryNotFound,
    /// A failure on our side; the `correlationId` identifies it in the logs.
    Internal,
    /// A domain rejection code, passed through as the domain names it.
    Domain(&'static str),
}

impl ErrorCode {
    /// The code as it appears in `extensions.code`.
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Unauthenticated => "UNAUTHENTICATED",
            Self::Forbidden => "FORBIDDEN",
            Self::InvalidInput => "INVALID_INPUT",
            Self::NotFound => "NOT_FOUND",
            Self::Conflict => "CONFLICT",
            Self::RateLimited => "RATE_LIMITED",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::Unavailable => "UNAVAILABLE",
            Self::Timeout => "TIMEOUT",
            Self::TooManyConnections => "TOO_MANY_CONNECTIONS",
            Self::PersistedQueryNotFound => "PERSISTED_QUERY_NOT_FOUND",
            Self::Internal => "INTERNAL",
            Self::Domain(code) => code,
        }
    }

    /// The HTTP status used when this error answers a whole request (not a field).
    pub const fn http_status(self) -> StatusCode {
        match self {
            Self::Unauthenticated => StatusCode::UNAUTHORIZED,
            Self::Forbidden => StatusCode::FORBIDDEN,
            Self::InvalidInput => StatusCode::BAD_REQUEST,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::Conflict => StatusCode::CONFLICT,
            Self::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            // Not 408: that tells browsers to resend the request on their own, and it
            // is the server, not the client, that was slow.
            Self::Timeout => StatusCode::SERVICE_UNAVAILABLE,
            Self::TooManyConnections => StatusCode::SERVICE_UNAVAILABLE,
            // An answer of the protocol, not a failure: clients read it from the body.
            Self::PersistedQueryNotFound => StatusCode::OK,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Self::Domain(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Everything the API can tell a client went wrong.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// A domain rejection, with the domain's code and message.
    #[error("{message}")]
    Domain {
        /// The domain's stable code, for example `SOLD_OUT`.
        code: &'static str,
        /// What happened, for a person.
        message: String,
    },
    /// The caller is not authenticated.
    #[error("{0}")]
    Unauthenticated(#[from] AuthError),
    /// The caller may not do this.
    #[error("{0}")]
    Forbidden(String),
    /// Bad input, optionally naming the argument or input field at fault.
    #[error("{message}")]
    InvalidInput {
        /// What is wrong, for a person.
        message: String,
        /// The argument or input field at fault, when there is one.
        field: Option<String>,
    },
    /// The thing asked for does not exist.
    #[error("{0}")]
    NotFound(String),
    /// A concurrent change won.
    #[error("{0}")]
    Conflict(String),
    /// Too many requests of this kind from this client.
    #[error("too many requests; try again in {} s", retry_after_secs(*.retry_after))]
    RateLimited {
        /// How long until the next attempt may succeed.
        retry_after: Duration,
    },
    /// The request body exceeds the configured limit.
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge {
        /// The configured limit, in bytes.
        limit: usize,
    },
    /// A dependency is unavailable.
    #[error("{0}")]
    Unavailable(String),
    /// The request was not answered within the configured limit.
    #[error(
        "the request was not answered within {} ms; a mutation may still take effect: retry it with the same idempotency key",
        .limit.as_millis()
    )]
    Timeout {
        /// The configured limit.
        limit: Duration,
    },
    /// A WebSocket upgrade beyond the configured number of connections.
    #[error(
        "the server already serves its maximum of {limit} WebSocket connections; reconnect later"
    )]
    TooManyConnections {
        /// The configured maximum.
        limit: usize,
    },
    /// A persisted query's hash the server does not know. The message is the one Apollo
    /// Client looks for.
    #[error("PersistedQueryNotFound")]
    PersistedQueryNotFound,
    /// A failure on our side. Its details are logged, never sent.
    #[error("internal error")]
    Internal(anyhow::Error),
}

fn retry_after_secs(retry_after: Duration) -> u64 {
    // Round up: a client that waits the advertised whole seconds must not be refused again.
    retry_after.as_secs() + u64::from(retry_after.subsec_nanos() > 0)
}

impl ApiError {
    /// A domain rejection with its stable code.
    pub fn domain(code: &'static str, message: impl Into<String>) -> Self {
        Self::Domain {
            code,
            message: message.into(),
        }
    }

    /// Bad input, without naming a field.
    pub fn invalid_input(message: impl Into<String>) -> Self {
        Self::InvalidInput {
            message: message.into(),
            field: None,
        }
    }

    /// Bad input in the named argument or input field.
    pub fn invalid_field(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::InvalidInput {
            message: message.into(),
            field: Some(field.into()),
        }
    }

    /// The caller may not do this.
    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }

    /// A failure on our side; `error` is logged, never shown.
    pub fn internal(error: impl Into<anyhow::Error>) -> Self {
        Self::Internal(error.into())
    }

    /// The stable code of this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Domain { code, .. } => ErrorCode::Domain(code),
            Self::Unauthenticated(_) => ErrorCode::Unauthenticated,
            Self::Forbidden(_) => ErrorCode::Forbidden,
            Self::InvalidInput { .. } => ErrorCode::InvalidInput,
            Self::NotFound(_) => ErrorCode::NotFound,
            Self::Conflict(_) => ErrorCode::Conflict,
            Self::RateLimited { .. } => ErrorCode::RateLimited,
            Self::PayloadTooLarge { .. } => ErrorCode::PayloadTooLarge,
            Self::Unavailable(_) => ErrorCode::Unavailable,
            Self::Timeout { .. } => ErrorCode::Timeout,
            Self::TooManyConnections { .. } => ErrorCode::TooManyConnections,
            Self::PersistedQueryNotFound => ErrorCode::PersistedQueryNotFound,
            Self::Internal(_) => ErrorCode::Internal,
        }
    }

    /// The extensions sent with this error. An internal error is logged here, under the
    /// correlation id it returns to the client.
    fn extensions(&self) -> ErrorExtensionValues {
        let mut extensions = ErrorExtensionValues::default();
        extensions.set("code", self.code().as_str());
        match self {
            Self::InvalidInput {
                field: Some(field), ..
            } => extensions.set("field", field.as_str()),
            Self::RateLimited { retry_after } => {
                extensions.set("retryAfterSeconds", retry_after_secs(*retry_after));
            }
            Self::PayloadTooLarge { limit } => extensions.set("limitBytes", *limit as u64),
            Self::TooManyConnections { limit } => {
                extensions.set("maxConnections", *limit as u64);
            }
            Self::Timeout { limit } => {
                extensions.set(
                    "timeoutMs",
                    u64::try_from(limit.as_millis()).unwrap_or(u64::MAX),
                );
            }
            Self::Internal(error) => {
                let correlation_id = correlation_id();
                tracing::error!(correlation_id = %correlation_id, error = ?error, "internal error");
                extensions.set("correlationId", correlation_id);
            }
            _ => {}
        }
        extensions
    }

    /// The message sent to clients: the error's own, except that an internal error says
    /// only that it happened.
    fn client_message(&self) -> String {
        match self {
            Self::Internal(_) => {
                "internal error; the correlation id identifies it in our logs".to_owned()
            }
            other => other.to_string(),
        }
    }

    /// This error as a GraphQL error with its extensions (for callers that build
    /// `async_graphql::Error` values by hand; `?` works without it).
    pub fn to_graphql_error(&self) -> async_graphql::Error {
        let mut error = async_graphql::Error::new(self.client_message());
        error.extensions = Some(self.extensions());
        error
    }

    /// A GraphQL response body carrying only this error, for failures that stop a request
    /// before the schema runs.
    pub fn to_graphql_response(&self) -> Response {
        let mut error = ServerError::new(self.client_message(), None);
        error.extensions = Some(self.extensions());
        Response::from_errors(vec![error])
    }
}

impl ErrorExtensions for ApiError {
    fn extend(&self) -> async_graphql::Error {
        self.to_graphql_error()
    }
}

impl IntoResponse for ApiError {
    /// A GraphQL-shaped JSON body (`{"data":null,"errors":[...]}`) with the status of the
    /// error's code, for requests refused before the schema runs.
    fn into_response(self) -> HttpResponse {
        let status = self.code().http_status();
        let body = serde_json::to_vec(&self.to_graphql_response())
            .unwrap_or_else(|_| br#"{"errors":[{"message":"internal error"}]}"#.to_vec());
        let mut response =
            (status, [(header::CONTENT_TYPE, "application/json")], body).into_response();
        match &self {
            Self::Unauthenticated(error) => {
                let challenge = match error {
                    AuthError::Missing => "Bearer",
                    _ => r#"Bearer error="invalid_token""#,
                };
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
            Self::RateLimited { retry_after } => {
                response.headers_mut().insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs(*retry_after)),
                );
            }
            _ => {}
        }
        response
    }
}

tokio::task_local! {
    /// The id of the request being served, so that errors logged deep in a resolver carry
    /// the id the client was given in `x-request-id`.
    static CORRELATION_ID: Arc<str>;
}

/// Runs `future` with `id` as the correlation id of the errors it logs.
pub async fn with_correlation_id<F: Future>(id: Arc<str>, future: F) -> F::Output {
    CORRELATION_ID.scope(id, future).await
}

/// The correlation id of the request being served, or a fresh one outside any request.
pub fn correlation_id() -> String {
    CORRELATION_ID
        .try_with(|id| id.to_string())
        .unwrap_or_else(|_| uuid::Uuid::now_v7().to_string())
}

/// Schema extension that gives every error a stable code and hides internal details.
///
/// Installed by [`crate::graphql::configure_schema`]; see the module docs for the rules.
#[derive(Debug, Clone, Copy, Default)]
pub struct ErrorCodes;

impl ExtensionFactory for ErrorCodes {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(ErrorCodesExtension)
    }
}

struct ErrorCodesExtension;

#[async_graphql::async_trait::async_trait]
impl Extension for ErrorCodesExtension {
    async fn request(&self, ctx: &ExtensionContext<'_>, next: NextRequest<'_>) -> Response {
        let mut response = next.run(ctx).await;
        response.errors.iter_mut().for_each(normalize);
        response
    }

    fn subscribe<'s>(
        &self,
        ctx: &ExtensionContext<'_>,
        stream: BoxStream<'s, Response>,
        next: NextSubscribe<'_>,
    ) -> BoxStream<'s, Response> {
        next.run(ctx, stream)
            .map(|mut response| {
                response.errors.iter_mut().for_each(normalize);
                response
            })
            .boxed()
    }

    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        next.run(ctx, query, variables).await.map_err(|mut error| {
            set_code(&mut error, ErrorCode::InvalidInput);
            error
        })
    }

    async fn validation(
        &self,
        ctx: &ExtensionContext<'_>,
        next: NextValidation<'_>,
    ) -> Result<ValidationResult, Vec<ServerError>> {
        next.run(ctx).await.map_err(|mut errors| {
            for error in &mut errors {
                set_code(error, ErrorCode::InvalidInput);
            }
            errors
        })
    }
}

fn set_code(error: &mut ServerError, code: ErrorCode) {
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", code.as_str());
}

fn has_code(error: &ServerError) -> bool {
    error
        .extensions
        .as_ref()
        .is_some_and(|extensions| extensions.get("code").is_some())
}

/// Messages async-graphql gives an argument or variable of the wrong shape.
fn is_input_error(message: &str) -> bool {
    message.starts_with("Failed to parse \"")
        || message.starts_with("Expected input type \"")
        || message.starts_with("Invalid value for argument")
}

/// Applies the rules of the module docs to one error of a response.
fn normalize(error: &mut ServerError) {
    if let Some(api_error) = error.source::<ApiError>() {
        // `?` on an `ApiError` leaves no extensions of its own, so nothing is lost here.
        let (extensions, message) = (api_error.extensions(), api_error.client_message());
        error.extensions = Some(extensions);
        error.message = message;
        return;
    }
    if has_code(error) {
        return;
    }
    if error.path.is_empty() || is_input_error(&error.message) {
        set_code(error, ErrorCode::InvalidInput);
        return;
    }
    let correlation_id = correlation_id();
    tracing::error!(
        correlation_id = %correlation_id,
        path = ?error.path,
        error = %error.message,
        "internal error in a resolver"
    );
    error.message = ApiError::internal(anyhow::anyhow!("hidden")).client_message();
    let extensions = error.extensions.get_or_insert_with(Default::default);
    extensions.set("code", ErrorCode::Internal.as_str());
    extensions.set("correlationId", Value::from(correlation_id));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extension(error: &ServerError, name: &str) -> Option<Value> {
        error.extensions.as_ref().and_then(|e| e.get(name)).cloned()
    }

    fn server_error_from(api_error: ApiError) -> ServerError {
        // What async-graphql makes of `Err(api_error)?` in a resolver.
        let error: async_graphql::Error = api_error.into();
        let mut server_error = error.into_server_error(async_graphql::Pos { line: 1, column: 1 });
        server_error.path = vec![async_graphql::PathSegment::Field("field".into())];
        server_error
    }

    #[test]
    fn api_errors_get_their_code_and_extras() {
        let mut error = server_error_from(ApiError::RateLimited {
            retry_after: Duration::from_millis(1500),
        });
        normalize(&mut error);
        assert_eq!(extension(&error, "code"), Some(Value::from("RATE_LIMITED")));
        assert_eq!(
            extension(&error, "retryAfterSeconds"),
            Some(Value::from(2u64))
        );

        let mut error = server_error_from(ApiError::domain("SOLD_OUT", "the tier is sold out"));
        normalize(&mut error);
        assert_eq!(extension(&error, "code"), Some(Value::from("SOLD_OUT")));
        assert_eq!(error.message, "the tier is sold out");

        let mut error =
            server_error_from(ApiError::invalid_field("quantity", "must be at least 1"));
        normalize(&mut error);
        assert_eq!(extension(&error, "field"), Some(Value::from("quantity")));
    }

    #[tokio::test]
    async fn internal_errors_never_leak_and_carry_the_request_id() {
        let secret_detail = "connection to /var/lib/db failed: password=hunter2";
        let error = with_correlation_id(Arc::from("req-123"), async {
            let mut error = server_error_from(ApiError::internal(anyhow::anyhow!(secret_detail)));
            normalize(&mut error);
            error
        })
        .await;
        assert!(!error.message.contains("hunter2"));
        assert_eq!(extension(&error, "code"), Some(Value::from("INTERNAL")));
        assert_eq!(
            extension(&error, "correlationId"),
            Some(Value::from("req-123"))
        );
        let json = serde_json::to_string(&error).expect("serializes");
        assert!(!json.contains("hunter2"), "{json}");
    }

    #[test]
    fn uncoded_resolver_errors_are_internal_and_hidden() {
        let mut error = ServerError::new("Data `SecretStore` does not exist.", None);
        error.path = vec![async_graphql::PathSegment::Field("orders".into())];
        normalize(&mut error);
        assert_eq!(extension(&error, "code"), Some(Value::from("INTERNAL")));
        assert!(!error.message.contains("SecretStore"));
        assert!(extension(&error, "correlationId").is_some());
    }

    #[test]
    fn pre_execution_and_argument_errors_are_invalid_input() {
        let mut error = ServerError::new("Query is nested too deep.", None);
        normalize(&mut error);
        assert_eq!(
            extension(&error, "code"),
            Some(Value::from("INVALID_INPUT"))
        );

        let mut error = ServerError::new(r#"Failed to parse "UUID": invalid length"#, None);
        error.path = vec![async_graphql::PathSegment::Field("order".into())];
        normalize(&mut error);
        assert_eq!(
            extension(&error, "code"),
            Some(Value::from("INVALID_INPUT"))
        );
    }

    #[test]
    fn existing_codes_are_kept() {
        let mut error = ServerError::new("custom", None);
        error.path = vec![async_graphql::PathSegment::Field("x".into())];
        set_code(&mut error, ErrorCode::Conflict);
        normalize(&mut error);
        assert_eq!(extension(&error, "code"), Some(Value::from("CONFLICT")));
        assert_eq!(error.message, "custom");
    }

    #[test]
    fn http_responses_have_status_and_headers() {
        let response = ApiError::PayloadTooLarge { limit: 10 }.into_response();
        assert_eq!(response.status(), StatusCode::PAYLOAD_TOO_LARGE);
        let response = ApiError::Unauthenticated(AuthError::Expired).into_response();
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
        let response = ApiError::RateLimited {
            retry_after: Duration::from_secs(3),
        }
        .into_response();
        assert_eq!(
            response
                .headers()
                .get(header::RETRY_AFTER)
                .map(|v| v.as_bytes()),
            Some(&b"3"[..])
        );
    }
}
