//! Which nodes may carry load-balancer traffic, and their EC2 instance ids.

use crate::model::cluster::Node;
use crate::pure::binding::selector::LabelSelector;

/// Labels and taints that take a node out of load balancing.
const EXCLUDE_LABEL: &str = "node.kubernetes.io/exclude-from-external-load-balancers";
const LEGACY_EXCLUDE_LABEL: &str = "alpha.service-controller.kubernetes.io/exclude-balancer";
const COMPUTE_TYPE_LABEL: &str = "eks.amazonaws.com/compute-type";
const AUTOSCALER_TAINT: &str = "ToBeDeletedByClusterAutoscaler";
const KARPENTER_TAINT: &str = "karpenter.sh/disrupted";

/// The node's instance id if it may carry load-balancer traffic, or why not.
pub fn eligible_instance<'n>(
    node: &'n Node,
    selector: Option<&LabelSelector>,
) -> Result<&'n str, &'static str> {
    usable(node)?;
    if selector.is_some_and(|s| !s.matches(&node.labels)) {
        return Err("not selected by nodeSelector");
    }
    node_instance(node)
}

/// [`eligible_instance`] before any nodeSelector: the same for every binding, so worked out
/// once per run.
pub fn unselected_instance(node: &Node) -> Result<&str, &'static str> {
    usable(node)?;
    node_instance(node)
}

/// Whether the node may carry load-balancer traffic at all, or why not.
fn usable(node: &Node) -> Result<(), &'static str> {
    if node.ready.as_deref() != Some("True") {
        return Err("not Ready");
    }
    if node.labels.contains_key(EXCLUDE_LABEL) || node.labels.contains_key(LEGACY_EXCLUDE_LABEL) {
        return Err("excluded from external load balancers");
    }
    if node
        .labels
        .get(COMPUTE_TYPE_LABEL)
        .is_some_and(|v| v == "fargate")
    {
        return Err("Fargate");
    }
    if node
        .taints
        .iter()
        .any(|t| t.key == AUTOSCALER_TAINT || t.key == KARPENTER_TAINT)
    {
        return Err("being removed by the autoscaler");
    }
    Ok(())
}

fn node_instance(node: &Node) -> Result<&str, &'static str> {
    node.provider_id
        .as_deref()
        .and_then(instance_id)
        .ok_or("no EC2 instance id in spec.providerID")
}

/// `aws:///us-west-2a/i-0123` → `i-0123`; anything without an `i-` id is not an instance.
pub fn instance_id(provider_id: &str) -> Option<&str> {
    let id = provider_id.rsplit('/').next()?;
    (provider_id.starts_with("aws://") || !provider_id.contains('/'))
        .then_some(id)
        .filter(|id| id.starts_with("i-") && id.len() > 2)
}
