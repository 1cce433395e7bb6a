//! tgb-reconciler keeps AWS load-balancer target groups converged with the endpoints of
//! Kubernetes Services, from outside the cluster.
//!
//! Data flows one way, and the modules follow it: [`trigger`] (what an event is about) →
//! observe (plain values read through [`ports`]) → [`binding`] (what is declared) →
//! [`desire`] (what should be registered) → [`plan`] (the difference, as a value) →
//! [`apply`] (execute, make before break) → [`report`]. [`reconcile`] is the one orchestration;
//! [`adapters`] are the only modules that know AWS and kube types.

pub mod adapters;
pub mod apply;
pub mod binding;
pub mod cli;
pub mod desire;
pub mod error;
pub mod lambda;
pub mod lease;
pub mod logging;
pub mod metrics;
pub mod model;
pub mod observe;
pub mod ownership;
pub mod plan;
pub mod ports;
pub mod reconcile;
pub mod report;
pub mod scope;
pub mod status;
pub mod trigger;

pub use error::{Error, Result};
