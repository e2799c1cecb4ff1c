//! What every schema served by [`crate::http`] must be built with.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_graphql::{
    ObjectType, SchemaBuilder, ServerResult, SubscriptionType, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextParseQuery},
    parser::types::{ExecutableDocument, OperationType},
};

use crate::{config::ServiceConfig, error::ErrorCodes};

/// Set once a request's document turns out to hold a mutation: the HTTP layer then lets
/// the request's work finish even if its answer is given up (a mutation must never stop
/// half-way), while a query whose answer nobody waits for any more is stopped.
#[derive(Debug, Clone, Default)]
pub struct MutationFlag(pub Arc<AtomicBool>);

impl MutationFlag {
    /// Whether the request's document holds a mutation (or has not been parsed yet, which
    /// counts as one: nothing unknown is stopped).
    pub fn may_mutate(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }
}

/// Sets the request's [`MutationFlag`] from its parsed document.
struct OperationKind;

impl ExtensionFactory for OperationKind {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationKind)
    }
}

#[async_graphql::async_trait::async_trait]
impl Extension for OperationKind {
    async fn parse_query(
        &self,
        ctx: &ExtensionContext<'_>,
        query: &str,
        variables: &Variables,
        next: NextParseQuery<'_>,
    ) -> ServerResult<ExecutableDocument> {
        let document = next.run(ctx, query, variables).await?;
        if let Some(flag) = ctx.data_opt::<MutationFlag>() {
            let mutates = document
                .operations
                .iter()
                .any(|(_, operation)| operation.node.ty != OperationType::Query);
            flag.0.store(mutates, Ordering::Release);
        }
        Ok(document)
    }
}

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
        .extension(OperationKind)
}
