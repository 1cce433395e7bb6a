//! observe: what was read from the cluster and from AWS, as plain values the core can use.

pub mod aws;
pub mod cluster;

pub use aws::{LoadBalancerInfo, ObservedRule, ObservedTarget, TargetGroupInfo};
pub use cluster::ClusterSnapshot;
