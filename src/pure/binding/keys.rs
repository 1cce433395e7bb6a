//! The annotation and tag keys bindings are declared with.

/// The annotation (on a `TargetGroupBinding`) or tag (on a target group) that lets a binding's
/// target group be emptied; without it the brake holds back deregistering the last target.
pub const ALLOW_EMPTY_KEY: &str = "tgb-reconciler/allow-empty";

/// The annotation (or tag) that has a binding without `networking` admit its load balancer:
/// the target ports and the health check, from the load balancer's groups or subnets.
pub const DERIVE_INGRESS_KEY: &str = "tgb-reconciler/derive-ingress";

pub const CLUSTER_TAG: &str = "tgb-reconciler/cluster";
pub const SERVICE_TAG: &str = "tgb-reconciler/service";
pub const PORT_TAG: &str = "tgb-reconciler/port";
pub const MULTI_CLUSTER_TAG: &str = "tgb-reconciler/multi-cluster";
pub const NODE_SELECTOR_TAG: &str = "tgb-reconciler/node-selector";
pub const INGRESS_TAG: &str = "tgb-reconciler/ingress";
pub const INGRESS_PORTS_TAG: &str = "tgb-reconciler/ingress-ports";
