//! Sets the readiness-gate conditions a plan calls for, pod by pod, once the targets are
//! written. A forbidden patch (no `patch` on `pods/status`) stops the rest, since every pod is
//! patched by the same identity; the process's log says so once, and targets are registered
//! all the same.

use crate::error::Error;
use crate::ports::EndpointSource;
use crate::pure::plan::Plan;
use crate::pure::report::{FailedGate, Report};
use std::sync::atomic::{AtomicBool, Ordering};

/// Whether this process has logged that it may not set gates.
static FORBIDDEN_LOGGED: AtomicBool = AtomicBool::new(false);

pub async fn set_gates(plan: &Plan, source: &impl EndpointSource, report: &mut Report) {
    // A run that lost its lease writes nothing more; the holder sets them. A run stopped for
    // its deadline has no time for them; the next run sets them.
    if report.lease_lost.is_some() || report.stopped.is_some() {
        return;
    }
    let cluster = plan.cluster.as_str();
    for change in plan.gate_changes() {
        match source.set_pod_condition(change).await {
            Ok(()) => report.gates_done.push(change.clone()),
            // Deleted since it was read: there is nothing left to gate.
            Err(Error::PodNotFound { .. }) => {
                tracing::debug!(cluster, pod = %change.pod, "pod gone before its gate was set");
            }
            Err(error @ Error::PodStatusForbidden { .. }) => {
                let why = error.chain();
                if !FORBIDDEN_LOGGED.swap(true, Ordering::Relaxed) {
                    tracing::warn!(cluster, error = %why, "readiness gates cannot be set: grant `patch` on `pods/status`; targets are registered all the same");
                }
                report.gates_forbidden = Some(why);
                return;
            }
            Err(error) => report.gates_failed.push(FailedGate {
                change: change.clone(),
                error: error.chain(),
            }),
        }
    }
}
