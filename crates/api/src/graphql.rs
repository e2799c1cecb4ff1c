//! What every schema served by [`crate::http`] must be built with.

use std::sync::{
    Arc,
    atomic::{AtomicBool, Ordering},
};

use async_graphql::{
    ObjectType, SchemaBuilder, ServerResult, SubscriptionType, Variables,
    extensions::{Extension, ExtensionContext, ExtensionFactory, NextExecute, NextParseQuery},
    parser::types::{DocumentOperations, ExecutableDocument, OperationType},
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

/// Per request: sets its [`MutationFlag`] from its parsed document, and refuses a request
/// that leaves out a variable its operation requires (non-null, no default) with
/// `INVALID_INPUT` before anything runs, as the GraphQL spec's variable coercion says;
/// async-graphql would otherwise fail inside the field that uses it (an internal-looking
/// error) or, inside `@skip(if: $s)`, silently take it as false.
#[derive(Default)]
struct OperationKind {
    /// For a document of several operations: each one's required variables that the
    /// request left out, checked once the operation to run is known.
    missing_by_operation: parking_lot::Mutex<Vec<(String, Vec<String>)>>,
}

impl ExtensionFactory for OperationKind {
    fn create(&self) -> Arc<dyn Extension> {
        Arc::new(OperationKind::default())
    }
}

/// The required variables of `operation` that `variables` leaves out (or sets to null).
fn missing_variables(
    operation: &async_graphql::parser::types::OperationDefinition,
    variables: &Variables,
) -> Vec<String> {
    operation
        .variable_definitions
        .iter()
        .filter(|def| !def.node.var_type.node.nullable && def.node.default_value.is_none())
        .filter(|def| {
            variables
                .get(&def.node.name.node)
                .is_none_or(|value| *value == async_graphql::Value::Null)
        })
        .map(|def| format!("${}", def.node.name.node))
        .collect()
}

fn missing_error(missing: &[String]) -> async_graphql::ServerError {
    let mut error = async_graphql::ServerError::new(
        format!(
            "required variable{} {} not provided",
            if missing.len() == 1 { "" } else { "s" },
            missing.join(", ")
        ),
        None,
    );
    error
        .extensions
        .get_or_insert_with(Default::default)
        .set("code", crate::error::ErrorCode::InvalidInput.as_str());
    error
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
        match &document.operations {
            DocumentOperations::Single(operation) => {
                let missing = missing_variables(&operation.node, variables);
                if !missing.is_empty() {
                    return Err(missing_error(&missing));
                }
            }
            DocumentOperations::Multiple(operations) => {
                *self.missing_by_operation.lock() = operations
                    .iter()
                    .map(|(name, operation)| {
                        (
                            name.to_string(),
                            missing_variables(&operation.node, variables),
                        )
                    })
                    .collect();
            }
        }
        Ok(document)
    }

    async fn execute(
        &self,
        ctx: &ExtensionContext<'_>,
        operation_name: Option<&str>,
        next: NextExecute<'_>,
    ) -> async_graphql::Response {
        let missing = operation_name.and_then(|name| {
            self.missing_by_operation
                .lock()
                .iter()
                .find(|(operation, _)| operation == name)
                .map(|(_, missing)| missing.clone())
        });
        match missing {
            Some(missing) if !missing.is_empty() => {
                async_graphql::Response::from_errors(vec![missing_error(&missing)])
            }
            _ => next.run(ctx, operation_name).await,
        }
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
        .extension(OperationKind::default())
}
