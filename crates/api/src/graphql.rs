//! What every schema served by [`crate::http`] must be built with.

use async_graphql::{ObjectType, SchemaBuilder, SubscriptionType};

use crate::{config::ServiceConfig, error::ErrorCodes};

/// Limits on the shape of accepted queries, so one request cannot cost unbounded work.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SchemaLimits {
    /// Deepest selection-set nesting.
    pub max_depth: usize,
    /// Highest complexity (each field costs 1 unless the schema says otherwise).
    pub max_complexity: usize,
}

impl SchemaLimits {
    /// The limits of the service configuration.
    pub fn from_config(config: &ServiceConfig) -> Self {
        Self {
            max_depth: config.max_query_depth,
            max_complexity: config.max_query_complexity,
        }
    }
}

/// Applies the query limits and the [`ErrorCodes`] extension to a schema builder.
///
/// Every schema served through [`crate::http::HttpService`] should be built through this, so
/// that its errors carry stable codes and oversized queries are refused before they run.
pub fn configure_schema<Query, Mutation, Subscription>(
    builder: SchemaBuilder<Query, Mutation, Subscription>,
    limits: SchemaLimits,
) -> SchemaBuilder<Query, Mutation, Subscription>
where
    Query: ObjectType + 'static,
    Mutation: ObjectType + 'static,
    Subscription: SubscriptionType + 'static,
{
    builder
        .limit_depth(limits.max_depth)
        .limit_complexity(limits.max_complexity)
        // Recursion in the parser and validator is bounded separately from the depth
        // limit (fragments can nest); keep it at least as deep as the depth limit.
        .limit_recursive_depth(limits.max_depth.max(32))
        .extension(ErrorCodes)
}
