//! What a watch of the cluster API says, as plain values: which kind it follows, and each
//! object already projected to what desire needs (never the whole API object).

use crate::model::cluster::{BindingResource, EndpointSlice, Node, Pod, Service};
use serde::Serialize;
use std::fmt;

/// The kinds a watcher follows: exactly those a run's snapshot is read from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub enum Kind {
    TargetGroupBinding,
    Service,
    EndpointSlice,
    Node,
    Pod,
}

impl Kind {
    pub const ALL: [Kind; 5] = [
        Kind::TargetGroupBinding,
        Kind::Service,
        Kind::EndpointSlice,
        Kind::Node,
        Kind::Pod,
    ];
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// One object of a watched kind, projected.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Object {
    Binding(BindingResource),
    Service(Service),
    EndpointSlice(EndpointSlice),
    Node(Node),
    Pod(Pod),
}

impl Object {
    /// `namespace/name`, or the name alone for a node (nodes have no namespace).
    pub fn key(&self) -> String {
        match self {
            Self::Binding(b) => format!("{}/{}", b.namespace, b.name),
            Self::Service(s) => format!("{}/{}", s.namespace, s.name),
            Self::EndpointSlice(s) => format!("{}/{}", s.namespace, s.name),
            Self::Node(n) => n.name.to_string(),
            Self::Pod(p) => p.key(),
        }
    }
}

/// What one kind's watch stream said.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Signal {
    /// A (re)list began: the objects listed next, up to [`Signal::ListDone`], replace all of
    /// the kind's. Until then the kind is not known.
    Relisting,
    /// One object of the list in progress.
    Listed(Object),
    /// The list is complete: the kind is known again.
    ListDone,
    /// An object was created or changed.
    Applied(Object),
    /// An object was deleted (as it last was).
    Deleted(Object),
    /// The watch failed (an error answer, a timeout, a connection that cannot be opened): the
    /// kind is unknown until its next complete list.
    Failed(String),
    /// The kind does not exist in this cluster (no TargetGroupBinding CRD): known, and empty.
    Absent,
}
