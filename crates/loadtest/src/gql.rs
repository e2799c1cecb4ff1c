//! A GraphQL-over-HTTP client that turns every answer into data or a stable error code.

use std::time::Duration;

use serde_json::{Value, json};

/// Why a GraphQL call did not return data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallError {
    /// `extensions.code` of the first GraphQL error, or one of the transport codes:
    /// `TIMEOUT`, `CONNECTION`, `HTTP_<status>`, `BAD_RESPONSE`.
    pub code: String,
    /// A human-readable explanation.
    pub message: String,
}

impl CallError {
    fn new(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
        }
    }

    /// Whether the request may or may not have reached the server: its outcome is unknown
    /// and only a retry under the same idempotency key can tell.
    pub fn is_ambiguous(&self) -> bool {
        matches!(
            self.code.as_str(),
            "TIMEOUT" | "CONNECTION" | "BAD_RESPONSE"
        ) || self.code.starts_with("HTTP_5")
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.code, self.message)
    }
}

impl std::error::Error for CallError {}

/// A pooled client for one GraphQL endpoint.
#[derive(Clone)]
pub struct GqlClient {
    /// Shared connection pool; cloning the client shares it.
    http: reqwest::Client,
    /// `http://host:port/graphql`.
    endpoint: String,
}

impl GqlClient {
    /// A client for `base` (such as `http://127.0.0.1:8080`) keeping up to `pool` idle
    /// connections, so that every concurrent buyer can reuse its own.
    pub fn new(base: &str, pool: usize, timeout: Duration) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(pool)
            .tcp_nodelay(true)
            .timeout(timeout)
            .connect_timeout(Duration::from_secs(10))
            .build()?;
        Ok(Self {
            http,
            endpoint: format!("{}/graphql", base.trim_end_matches('/')),
        })
    }

    /// Runs one operation; `Ok` holds its `data`.
    pub async fn call(
        &self,
        query: &str,
        variables: Value,
        token: Option<&str>,
    ) -> Result<Value, CallError> {
        let mut request = self
            .http
            .post(&self.endpoint)
            .json(&json!({ "query": query, "variables": variables }));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let response = request.send().await.map_err(transport_error)?;
        let status = response.status();
        let body: Value = match response.bytes().await {
            Ok(bytes) => match serde_json::from_slice(&bytes) {
                Ok(body) => body,
                Err(_) if !status.is_success() => {
                    return Err(CallError::new(
                        format!("HTTP_{}", status.as_u16()),
                        String::from_utf8_lossy(&bytes)
                            .chars()
                            .take(200)
                            .collect::<String>(),
                    ));
                }
                Err(e) => return Err(CallError::new("BAD_RESPONSE", e.to_string())),
            },
            Err(e) => return Err(transport_error(e)),
        };
        interpret(status.as_u16(), body)
    }
}

/// Data, or the code of the first error, of a GraphQL response body.
pub fn interpret(status: u16, mut body: Value) -> Result<Value, CallError> {
    if let Some(first) = body
        .get("errors")
        .and_then(Value::as_array)
        .and_then(|errors| errors.first())
    {
        let code = first
            .pointer("/extensions/code")
            .and_then(Value::as_str)
            .unwrap_or("UNCODED_ERROR");
        let message = first
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default();
        return Err(CallError::new(code, message));
    }
    if !(200..300).contains(&status) {
        return Err(CallError::new(format!("HTTP_{status}"), body.to_string()));
    }
    match body.get_mut("data").map(Value::take) {
        Some(data) if !data.is_null() => Ok(data),
        _ => Err(CallError::new("BAD_RESPONSE", "no data and no errors")),
    }
}

fn transport_error(e: reqwest::Error) -> CallError {
    if e.is_timeout() {
        CallError::new("TIMEOUT", e.to_string())
    } else if e.is_connect() || e.is_request() {
        CallError::new("CONNECTION", e.to_string())
    } else {
        CallError::new("BAD_RESPONSE", e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_error_code_wins() {
        let body = json!({"data": null, "errors": [
            {"message": "sold out", "extensions": {"code": "SOLD_OUT"}},
            {"message": "other", "extensions": {"code": "OTHER"}}
        ]});
        let error = interpret(200, body).expect_err("an error");
        assert_eq!(error.code, "SOLD_OUT");
        assert!(!error.is_ambiguous());
    }

    #[test]
    fn data_is_returned_and_missing_data_is_an_error() {
        assert_eq!(
            interpret(200, json!({"data": {"a": 1}})),
            Ok(json!({"a": 1}))
        );
        assert_eq!(
            interpret(200, json!({"data": null})).map_err(|e| e.code),
            Err("BAD_RESPONSE".to_owned())
        );
        assert_eq!(
            interpret(200, json!({"errors": [{"message": "x"}]})).map_err(|e| e.code),
            Err("UNCODED_ERROR".to_owned())
        );
        let failed = interpret(503, json!({"oops": true})).expect_err("an error");
        assert_eq!(failed.code, "HTTP_503");
        assert!(failed.is_ambiguous());
    }
}
