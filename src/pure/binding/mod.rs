//! Bindings: what ties a target group to a Service port. Two sources declare them —
//! `TargetGroupBinding` resources ([`resource`]) and tagged target groups ([`tags`]) — and both
//! end up as the same validated [`Binding`], later [`resolve`]d against its target group.

pub mod declared;
pub mod error;
#[cfg(test)]
pub mod fixtures;
pub mod keys;
pub mod networking;
pub mod port;
pub mod resolve;
pub mod resource;
pub mod selector;
pub mod tags;

pub use declared::{Binding, ServiceRef, TargetGroupSelector};
pub use error::BindingError;
pub use keys::{ALLOW_EMPTY_KEY, DERIVE_INGRESS_KEY};
pub use networking::Networking;
pub use port::PortRef;
pub use resolve::{ResolvedBinding, resolve};
