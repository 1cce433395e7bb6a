//! The cluster as a watcher knows it: each kind's objects, projected, kept current by the
//! watch streams. A kind is known only between a complete list and its watch's next failure;
//! a list in progress is buffered apart and replaces the kind's objects only once complete, so
//! a partial list is never read as deletions.

use crate::model::cluster::ClusterSnapshot;
use crate::model::watched::{Kind, Object, Signal};
use std::collections::{BTreeMap, BTreeSet};

/// Where one kind stands.
#[derive(Debug, Clone, Default, PartialEq)]
enum KindState {
    /// Never listed, or its watch failed: nothing about it may be acted on.
    #[default]
    Unknown,
    /// A list in progress: what it found so far.
    Listing(BTreeMap<String, Object>),
    /// Listed completely, and followed since.
    Known(BTreeMap<String, Object>),
    /// The kind does not exist in the cluster (no CRD): known, and empty.
    Absent,
}

/// What a signal did to the view.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Nothing that matters to a run (a list in progress, an update that changed nothing we
    /// read, an event for a kind that is not known).
    None,
    /// One object changed: as it was, and as it is (`None`: absent).
    Changed {
        kind: Kind,
        key: String,
        before: Option<Box<Object>>,
        after: Option<Box<Object>>,
    },
    /// A kind was listed completely again: everything may have changed meanwhile.
    Relisted(Kind),
    /// A kind's watch failed: the view is incomplete until it is listed again.
    Lost { kind: Kind, error: String },
}

/// Every watched kind's objects.
#[derive(Debug, Clone, Default)]
pub struct WatchedView {
    kinds: BTreeMap<Kind, KindState>,
}

impl WatchedView {
    /// Applies one signal of one kind's stream.
    pub fn apply(&mut self, kind: Kind, signal: Signal) -> Effect {
        let state = self.kinds.entry(kind).or_default();
        match signal {
            Signal::Relisting => {
                *state = KindState::Listing(BTreeMap::new());
                Effect::None
            }
            Signal::Listed(object) => {
                if let KindState::Listing(buffer) = state {
                    buffer.insert(object.key(), object);
                }
                Effect::None
            }
            Signal::ListDone => match std::mem::take(state) {
                KindState::Listing(buffer) => {
                    *state = KindState::Known(buffer);
                    Effect::Relisted(kind)
                }
                // A list that never began is no list: the kind stays as it was.
                other => {
                    *state = other;
                    Effect::None
                }
            },
            Signal::Applied(object) => {
                let KindState::Known(objects) = state else {
                    return Effect::None;
                };
                let key = object.key();
                let before = objects.insert(key.clone(), object.clone());
                if before.as_ref() == Some(&object) {
                    return Effect::None;
                }
                Effect::Changed {
                    kind,
                    key,
                    before: before.map(Box::new),
                    after: Some(Box::new(object)),
                }
            }
            Signal::Deleted(object) => {
                let KindState::Known(objects) = state else {
                    return Effect::None;
                };
                let key = object.key();
                match objects.remove(&key) {
                    Some(before) => Effect::Changed {
                        kind,
                        key,
                        before: Some(Box::new(before)),
                        after: None,
                    },
                    None => Effect::None,
                }
            }
            Signal::Failed(error) => {
                *state = KindState::Unknown;
                Effect::Lost { kind, error }
            }
            Signal::Absent => {
                let was_absent = *state == KindState::Absent;
                *state = KindState::Absent;
                if was_absent {
                    Effect::None
                } else {
                    Effect::Relisted(kind)
                }
            }
        }
    }

    /// Whether every kind is known: only then may a run plan from the view.
    pub fn is_complete(&self) -> bool {
        Kind::ALL.iter().all(|kind| {
            matches!(
                self.kinds.get(kind),
                Some(KindState::Known(_) | KindState::Absent)
            )
        })
    }

    /// The kinds not known now, for the log.
    pub fn unknown_kinds(&self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|kind| {
                !matches!(
                    self.kinds.get(kind),
                    Some(KindState::Known(_) | KindState::Absent)
                )
            })
            .collect()
    }

    /// The Services (`namespace/name`) whose EndpointSlices list this pod (`namespace/name`).
    pub fn services_listing_pod(&self, pod: &str) -> BTreeSet<String> {
        let Some(KindState::Known(slices)) = self.kinds.get(&Kind::EndpointSlice) else {
            return BTreeSet::new();
        };
        slices
            .values()
            .filter_map(|object| match object {
                Object::EndpointSlice(slice) => Some(slice),
                _ => None,
            })
            .filter(|slice| {
                slice
                    .endpoints
                    .iter()
                    .any(|e| e.pod.as_deref() == Some(pod))
            })
            .filter_map(|slice| {
                let service = slice.service_name.as_ref()?;
                Some(format!("{}/{service}", slice.namespace))
            })
            .collect()
    }

    /// The view as a run's snapshot, in the order a list gives (by namespace and name).
    /// `None` while any kind is not known.
    pub fn snapshot(&self) -> Option<ClusterSnapshot> {
        if !self.is_complete() {
            return None;
        }
        let mut snapshot = ClusterSnapshot {
            binding_crd_installed: matches!(
                self.kinds.get(&Kind::TargetGroupBinding),
                Some(KindState::Known(_))
            ),
            ..ClusterSnapshot::default()
        };
        for state in self.kinds.values() {
            let KindState::Known(objects) = state else {
                continue;
            };
            for object in objects.values() {
                match object.clone() {
                    Object::Binding(b) => snapshot.binding_resources.push(b),
                    Object::Service(s) => snapshot.services.push(s),
                    Object::EndpointSlice(s) => snapshot.endpoint_slices.push(s),
                    Object::Node(n) => snapshot.nodes.push(n),
                    Object::Pod(p) => snapshot.pods.push(p),
                }
            }
        }
        Some(snapshot)
    }
}
