//! The crate's one error type. Variants are named by the operation that failed and keep their
//! source, so a message reads like "registering targets in targetgroup/web/…: <AWS says why>".

use crate::model::{SecurityGroupId, TargetGroupArn};

pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("configuration: {0}")]
    Config(String),
    /// A setting of the invocation is unusable (`entry::args::UsageError`, boxed: this module
    /// sits below `entry`). Its message is in the text, as a `Config` message is.
    #[error("configuration: {source}")]
    InvalidSettings {
        #[source]
        source: BoxError,
    },

    #[error("describing EKS cluster {cluster}")]
    DescribeCluster {
        cluster: String,
        #[source]
        source: BoxError,
    },
    #[error("EKS cluster {cluster}: {message}")]
    ClusterEndpoint { cluster: String, message: String },
    #[error("signing an EKS token for cluster {cluster}")]
    SignToken {
        cluster: String,
        #[source]
        source: BoxError,
    },
    #[error("reading kubeconfig {path}")]
    ReadKubeconfig {
        path: String,
        #[source]
        source: BoxError,
    },
    #[error("building a Kubernetes client for cluster {cluster}")]
    BuildKubeClient {
        cluster: String,
        #[source]
        source: BoxError,
    },
    #[error("listing {kind} in cluster {cluster}")]
    ListClusterResources {
        cluster: String,
        kind: &'static str,
        #[source]
        source: BoxError,
    },
    #[error("watching {kind} in cluster {cluster}")]
    WatchClusterResources {
        cluster: String,
        kind: crate::model::watched::Kind,
        #[source]
        source: BoxError,
    },

    #[error("describing target groups")]
    DescribeTargetGroups {
        #[source]
        source: BoxError,
    },
    #[error("describing load balancers {arns}")]
    DescribeLoadBalancers {
        arns: String,
        #[source]
        source: BoxError,
    },
    #[error("describing subnets {subnets}")]
    DescribeSubnets {
        subnets: String,
        #[source]
        source: BoxError,
    },
    #[error("describing target group tags")]
    DescribeTags {
        #[source]
        source: BoxError,
    },
    #[error("assuming role {role}")]
    AssumeRole {
        role: String,
        #[source]
        source: BoxError,
    },
    #[error(
        "describing target health of {}",
        target_group.short_name()
    )]
    DescribeTargetHealth {
        target_group: TargetGroupArn,
        #[source]
        source: BoxError,
    },
    #[error("target group {target_group} not found")]
    TargetGroupNotFound { target_group: TargetGroupArn },
    #[error("registering targets in {}", target_group.short_name())]
    RegisterTargets {
        target_group: TargetGroupArn,
        #[source]
        source: BoxError,
    },
    #[error("deregistering targets from {}", target_group.short_name())]
    DeregisterTargets {
        target_group: TargetGroupArn,
        #[source]
        source: BoxError,
    },
    #[error("describing VPCs {vpcs}")]
    DescribeVpcs {
        vpcs: String,
        #[source]
        source: BoxError,
    },

    #[error("describing instance {instance}")]
    DescribeInstances {
        instance: String,
        #[source]
        source: BoxError,
    },
    #[error("describing the network interfaces of {what}")]
    DescribeNetworkInterfaces {
        what: String,
        #[source]
        source: BoxError,
    },
    #[error("describing security groups {groups}")]
    DescribeSecurityGroups {
        groups: String,
        #[source]
        source: BoxError,
    },
    #[error("describing the rules of security groups {groups}")]
    DescribeSecurityGroupRules {
        groups: String,
        #[source]
        source: BoxError,
    },
    #[error("security group {group} not found (or a group it references)")]
    SecurityGroupNotFound {
        group: SecurityGroupId,
        #[source]
        source: BoxError,
    },
    #[error("security group {group} is at its rule limit")]
    RuleLimitExceeded {
        group: SecurityGroupId,
        #[source]
        source: BoxError,
    },
    #[error("authorizing ingress on {group}")]
    AuthorizeIngress {
        group: SecurityGroupId,
        #[source]
        source: BoxError,
    },
    #[error("revoking ingress rules on {group}")]
    RevokeIngress {
        group: SecurityGroupId,
        #[source]
        source: BoxError,
    },

    #[error("loading ownership records of cluster {cluster} from table {table}")]
    LoadOwnership {
        table: String,
        cluster: String,
        #[source]
        source: BoxError,
    },
    #[error("ownership record {key} in table {table} is malformed: {message}")]
    MalformedRecord {
        table: String,
        key: String,
        message: String,
    },
    #[error("saving the ownership record of {binding} in table {table}")]
    SaveOwnership {
        table: String,
        binding: crate::model::BindingId,
        #[source]
        source: BoxError,
    },
    #[error("deleting the ownership record of {binding} from table {table}")]
    ForgetOwnership {
        table: String,
        binding: crate::model::BindingId,
        #[source]
        source: BoxError,
    },
    #[error("taking the lease of cluster {cluster} in table {table}")]
    AcquireLease {
        table: String,
        cluster: String,
        #[source]
        source: BoxError,
    },
    #[error("renewing the lease of cluster {cluster} in table {table}")]
    ExtendLease {
        table: String,
        cluster: String,
        #[source]
        source: BoxError,
    },
    #[error("releasing the lease of cluster {cluster} in table {table}")]
    ReleaseLease {
        table: String,
        cluster: String,
        #[source]
        source: BoxError,
    },
    #[error("listing this process on the roster of pacers in table {table}")]
    CheckInPacer {
        table: String,
        #[source]
        source: BoxError,
    },
    #[error("reading the roster of pacers in table {table}")]
    ReadPacers {
        table: String,
        #[source]
        source: BoxError,
    },
    #[error("taking this process off the roster of pacers in table {table}")]
    CheckOutPacer {
        table: String,
        #[source]
        source: BoxError,
    },
    #[error("the roster of pacers did not answer within {after:?}")]
    RosterTimedOut { after: std::time::Duration },
    #[error("taking the watch lease of cluster {cluster} in table {table}")]
    ClaimWatchLease {
        table: String,
        cluster: String,
        #[source]
        source: BoxError,
    },
    #[error("renewing the watch lease of cluster {cluster} in table {table}")]
    RenewWatchLease {
        table: String,
        cluster: String,
        #[source]
        source: BoxError,
    },
    #[error("releasing the watch lease of cluster {cluster} in table {table}")]
    ReleaseWatchLease {
        table: String,
        cluster: String,
        #[source]
        source: BoxError,
    },
    #[error("loading binding statuses of cluster {cluster} from table {table}")]
    LoadStatus {
        table: String,
        cluster: String,
        #[source]
        source: BoxError,
    },
    #[error("writing the status of {binding} in table {table}")]
    SaveStatus {
        table: String,
        binding: crate::model::BindingId,
        #[source]
        source: BoxError,
    },
    #[error("deleting the status of {binding} from table {table}")]
    ForgetStatus {
        table: String,
        binding: crate::model::BindingId,
        #[source]
        source: BoxError,
    },
    #[error("writing the status of TargetGroupBinding {binding}")]
    PublishStatus {
        binding: crate::model::BindingId,
        #[source]
        source: BoxError,
    },
    #[error("setting condition {condition_type} of pod {pod}")]
    SetPodCondition {
        pod: String,
        condition_type: String,
        #[source]
        source: BoxError,
    },
    #[error(
        "setting condition {condition_type} of pod {pod}: forbidden (no `patch` on `pods/status`)"
    )]
    PodStatusForbidden {
        pod: String,
        condition_type: String,
        #[source]
        source: BoxError,
    },
    #[error("setting condition {condition_type} of pod {pod}: the pod is gone")]
    PodNotFound { pod: String, condition_type: String },
    #[error("creating table {table}")]
    CreateTable {
        table: String,
        #[source]
        source: BoxError,
    },

    #[error("serving Lambda invocations")]
    LambdaRuntime {
        #[source]
        source: BoxError,
    },
}

impl Error {
    /// The message with every source appended, the way an operator needs to read it.
    pub fn chain(&self) -> String {
        describe_chain(self)
    }
}

/// `outer: inner: innermost`, skipping a source whose text its parent already contains.
pub fn describe_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let part = cause.to_string();
        if !part.is_empty() && !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = cause.source();
    }
    text
}
