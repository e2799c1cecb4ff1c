//! Structured logging with `tracing`.

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt as _, util::SubscriberInitExt as _};

use crate::config::LogFormat;

/// Why logging could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The filter is not valid env-filter syntax.
    #[error("invalid log filter {filter:?}: {source}")]
    InvalidFilter {
        /// The filter given.
        filter: String,
        /// What the parser said.
        source: tracing_subscriber::filter::ParseError,
    },
    /// Another global subscriber is already installed.
    #[error("logging is already initialised: {0}")]
    AlreadyInitialised(#[from] tracing_subscriber::util::TryInitError),
}

/// Installs the global `tracing` subscriber: lines in `format`, filtered by `filter`
/// (env-filter syntax such as `info,api=debug`).
///
/// Spans are logged with their fields, so each line of a request carries its
/// `request_id`. Call once, at the start of the process.
pub fn init_tracing(format: LogFormat, filter: &str) -> Result<(), TelemetryError> {
    let env_filter =
        EnvFilter::try_new(filter).map_err(|source| TelemetryError::InvalidFilter {
            filter: filter.to_owned(),
            source,
        })?;
    let registry = tracing_subscriber::registry().with(env_filter);
    match format {
        LogFormat::Text => registry.with(fmt::layer().with_target(true)).try_init()?,
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_current_span(true)
                    .with_span_list(false),
            )
            .try_init()?,
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_filter_is_a_clear_error() {
        let error = init_tracing(LogFormat::Json, "info,[[[").expect_err("refused");
        assert!(error.to_string().contains("invalid log filter"), "{error}");
    }

    #[test]
    fn initialising_twice_is_an_error_not_a_panic() {
        // The first call in this process may succeed; a second one cannot.
        let _ = init_tracing(LogFormat::Text, "warn");
        let second = init_tracing(LogFormat::Json, "warn");
        assert!(
            matches!(second, Err(TelemetryError::AlreadyInitialised(_))),
            "{second:?}"
        );
    }
}
