//! What a change in the cluster can affect, so that a watcher plans only that.
//!
//! - An EndpointSlice or a Service: the bindings of that Service, targets only.
//! - A TargetGroupBinding or a Node: everything, rules included (a binding's networking, or a
//!   node's interfaces and groups, feed the rules of every binding on them).
//! - A Pod: nothing by itself. Its readiness and address reach the targets through its
//!   EndpointSlice; what only the pod knows (container port names) feeds rules, which the next
//!   sweep or node change plans. The exception is a pod with readiness gates whose containers,
//!   deletion or gate conditions changed: its slice does not change while its gate holds it
//!   back, so the Services whose slices list it are planned.
//! - A relist or a lost watch: everything, once the view is complete again.

use crate::model::cluster::ReadinessGate;
use crate::model::watched::{Kind, Object};
use crate::pure::watch::view::{Effect, WatchedView};
use std::collections::BTreeSet;

/// What a change needs re-planned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Affected {
    Nothing,
    /// The bindings of these Services (`namespace/name`), targets only.
    Services(BTreeSet<String>),
    Everything,
}

/// What an effect on the view needs re-planned; `view` is the view after it.
pub fn affected(effect: &Effect, view: &WatchedView) -> Affected {
    match effect {
        Effect::None => Affected::Nothing,
        Effect::Relisted(_) | Effect::Lost { .. } => Affected::Everything,
        Effect::Changed {
            kind,
            key,
            before,
            after,
        } => match kind {
            Kind::TargetGroupBinding | Kind::Node => Affected::Everything,
            Kind::Pod if gate_matters(before.as_deref(), after.as_deref()) => {
                let services = view.services_listing_pod(key);
                if services.is_empty() {
                    Affected::Nothing
                } else {
                    Affected::Services(services)
                }
            }
            Kind::Pod => Affected::Nothing,
            Kind::Service | Kind::EndpointSlice => {
                let services: BTreeSet<String> = [before, after]
                    .into_iter()
                    .flatten()
                    .filter_map(|object| service_of(object))
                    .collect();
                if services.is_empty() {
                    Affected::Nothing
                } else {
                    Affected::Services(services)
                }
            }
        },
    }
}

/// Whether a pod change can move one of its readiness gates: the pod has gates, and what a
/// gate depends on (containers ready, deletion, the gates and their conditions) changed.
fn gate_matters(before: Option<&Object>, after: Option<&Object>) -> bool {
    let (before, after) = (gate_inputs(before), gate_inputs(after));
    (before.is_some() || after.is_some()) && before != after
}

/// What a pod's readiness gates depend on, when it has any.
fn gate_inputs(object: Option<&Object>) -> Option<(bool, bool, &[ReadinessGate])> {
    match object {
        Some(Object::Pod(pod)) if !pod.gates.is_empty() => {
            Some((pod.containers_ready, pod.terminating, pod.gates.as_slice()))
        }
        _ => None,
    }
}

/// The Service an object belongs to: itself, or the one its slice is labelled with.
fn service_of(object: &Object) -> Option<String> {
    match object {
        Object::Service(s) => Some(format!("{}/{}", s.namespace, s.name)),
        Object::EndpointSlice(s) => s
            .service_name
            .as_ref()
            .map(|service| format!("{}/{service}", s.namespace)),
        Object::Binding(_) | Object::Node(_) | Object::Pod(_) => None,
    }
}

/// How an effect is named in the log: the kind, the object and what happened to it.
pub fn describe(effect: &Effect) -> Option<String> {
    match effect {
        Effect::None => None,
        Effect::Changed {
            kind,
            key,
            before,
            after,
        } => {
            let what = match (before, after) {
                (None, _) => "added",
                (Some(_), Some(_)) => "modified",
                (Some(_), None) => "deleted",
            };
            Some(format!("{kind} {key} {what}"))
        }
        Effect::Relisted(kind) => Some(format!("{kind} listed")),
        Effect::Lost { kind, .. } => Some(format!("{kind} watch lost")),
    }
}
