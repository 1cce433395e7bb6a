//! Counts AWS API calls by operation, through an SDK interceptor attached to every client.
//! Tests use it to prove a converged run writes nothing; benchmarks to count a sweep's cost.

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::interceptors::context::BeforeSerializationInterceptorContextRef;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

/// Operations that change AWS state.
const MUTATING_PREFIXES: &[&str] = &[
    "Register",
    "Deregister",
    "Authorize",
    "Revoke",
    "Modify",
    "Create",
    "Delete",
    "Put",
    "BatchWrite",
    "Update",
    "Tag",
    "Untag",
];

#[derive(Debug, Clone, Default)]
pub struct CallCounter {
    calls: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl CallCounter {
    /// Calls so far, by `Service.Operation`.
    pub fn snapshot(&self) -> BTreeMap<String, usize> {
        self.calls.lock().map(|c| c.clone()).unwrap_or_default()
    }

    /// Calls that change state, by `Service.Operation`.
    pub fn mutating(&self) -> BTreeMap<String, usize> {
        self.snapshot()
            .into_iter()
            .filter(|(name, _)| {
                let operation = name.rsplit('.').next().unwrap_or(name);
                MUTATING_PREFIXES.iter().any(|p| operation.starts_with(p))
            })
            .collect()
    }

    pub fn reset(&self) {
        if let Ok(mut calls) = self.calls.lock() {
            calls.clear();
        }
    }
}

impl Intercept for CallCounter {
    fn name(&self) -> &'static str {
        "CallCounter"
    }

    // Not `read_before_execution`: client interceptors run that before the operation's own
    // configuration (which carries its name) is in the bag. Serialization happens once per
    // operation, whatever the retries.
    fn read_before_serialization(
        &self,
        _context: &BeforeSerializationInterceptorContextRef<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if let Some(metadata) = cfg.load::<Metadata>() {
            let key = format!("{}.{}", metadata.service(), metadata.name());
            if let Ok(mut calls) = self.calls.lock() {
                *calls.entry(key).or_default() += 1;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_state_changing_operations_count_as_mutating() {
        let counter = CallCounter::default();
        if let Ok(mut calls) = counter.calls.lock() {
            for name in [
                "ELBv2.DescribeTargetHealth",
                "ELBv2.RegisterTargets",
                "DynamoDB.PutItem",
                "DynamoDB.BatchWriteItem",
                "DynamoDB.Query",
            ] {
                calls.insert(name.to_string(), 1);
            }
        }
        let mutating: Vec<String> = counter.mutating().into_keys().collect();
        assert_eq!(
            mutating,
            [
                "DynamoDB.BatchWriteItem",
                "DynamoDB.PutItem",
                "ELBv2.RegisterTargets"
            ]
        );
    }
}
