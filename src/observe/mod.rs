//! observe: the plain values read from the cluster and from AWS, as plain values.

pub mod aws;
pub mod cluster;

pub use aws::{ObservedTarget, TargetGroupInfo};
pub use cluster::ClusterSnapshot;
