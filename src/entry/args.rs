//! The settings a run is given, as flags or the same environment variables, checked once for
//! both ways in.

use crate::adapters::Aws;
use crate::adapters::eks::{ClusterAccess, ClusterConnector};
use crate::adapters::pacing::{DEFAULT_SHARE, InvalidShare, Pacing, Peers};
use crate::pure::plan::Policy;
use crate::pure::plan::rules::DEFAULT_MAX_RULES_PER_FAMILY;
use crate::shell::cluster_run::RunOptions;
use crate::shell::session::Session;
use crate::state::lease::LeaseTerms;
use clap::ValueEnum;
use std::path::PathBuf;

pub const DEFAULT_TABLE: &str = "tgb-reconciler";

/// A setting that cannot be used, named by what is wrong with it; its message names the flag
/// or the bad input, since the person who typed it reads it (on stderr, or in the Lambda's
/// configuration error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UsageError {
    #[error("no cluster to reconcile: pass --cluster NAME or set TGB_CLUSTERS")]
    NoCluster,
    #[error(
        "cluster name {name:?} is invalid (1-100 characters: letters, digits, - and _, starting with a letter or digit)"
    )]
    InvalidClusterName { name: String },
    #[error("table name {table:?} is invalid (3-255 characters: letters, digits, _, - and .)")]
    InvalidTable { table: String },
    #[error("kubeconfig {} does not exist or is not a file", path.display())]
    MissingKubeconfig { path: PathBuf },
    #[error("--max-rules-per-group must be at least 1")]
    ZeroMaxRules,
    #[error("--lease-seconds (TGB_LEASE_SECONDS) must be at least 1")]
    ZeroLeaseSeconds,
    #[error("--duration must be at least 1 second (leave it out to watch until stopped)")]
    ZeroDuration,
    /// The pacing refused the share; its words name the flag and the value.
    #[error(transparent)]
    InvalidRateShare(#[from] InvalidShare),
}

impl From<UsageError> for crate::Error {
    fn from(error: UsageError) -> Self {
        Self::InvalidSettings {
            source: Box::new(error),
        }
    }
}

/// The pacing these settings ask for: their share of each API rate bucket, checked, divided
/// among the deployment's processes drawing on the buckets at the time (their roster is in the
/// state table; `origin` names this process on it). A dry run counts them but, writing
/// nothing, is not listed: it divides by at least the clusters given here, as if each were
/// being swept. These are the clusters this run names (`--cluster` or `TGB_CLUSTERS`).
pub fn pacing(args: &ReconcileArgs, origin: &str) -> Result<Pacing, UsageError> {
    let clusters = args
        .clusters
        .iter()
        .filter(|c| !c.trim().is_empty())
        .count();
    Ok(Pacing::with_share(args.api_rate_share)?.among(Peers {
        origin: origin.to_string(),
        clusters,
        check_in: !args.dry_run,
    }))
}

#[derive(Debug, Clone, clap::Args)]
pub struct ReconcileArgs {
    /// EKS cluster to reconcile; repeat for several. Default: TGB_CLUSTERS (comma-separated).
    #[arg(
        long = "cluster",
        value_name = "NAME",
        env = "TGB_CLUSTERS",
        value_delimiter = ','
    )]
    pub clusters: Vec<String>,
    /// Use this kubeconfig (the context named like the cluster) instead of EKS discovery.
    #[arg(long, value_name = "PATH", env = "KUBECONFIG")]
    pub kubeconfig: Option<String>,
    /// The state table.
    #[arg(long, env = "TGB_TABLE", default_value = DEFAULT_TABLE)]
    pub table: String,
    /// Print the plan and change nothing anywhere.
    #[arg(long, env = "TGB_DRY_RUN")]
    pub dry_run: bool,
    /// How long the cluster's lease lasts (renewed before a write once less than a third of it
    /// is left). Default: the Lambda invocation's remaining time plus a minute; 960 on a
    /// terminal.
    #[arg(long, value_name = "SECONDS", env = "TGB_LEASE_SECONDS")]
    pub lease_seconds: Option<u64>,
    /// Allow `networking` peers open to the whole internet (0.0.0.0/0, ::/0).
    #[arg(long, env = "TGB_ALLOW_WORLD_OPEN")]
    pub allow_world_open: bool,
    /// Revoke other people's world-open rules on ports our bindings manage (reported otherwise).
    #[arg(long, env = "TGB_REVOKE_WORLD_OPEN")]
    pub revoke_world_open: bool,
    /// Inbound rules a security group may hold per address family (EC2's quota).
    #[arg(long, value_name = "N", env = "TGB_MAX_RULES_PER_GROUP", default_value_t = DEFAULT_MAX_RULES_PER_FAMILY)]
    pub max_rules_per_group: usize,
    /// The share of each AWS API rate bucket (EC2, ELBv2) this reconciler may use, all its
    /// runs together (the processes drawing at once divide it); the rest is left to people,
    /// Terraform and other controllers in the account.
    #[arg(long, value_name = "FRACTION", env = "TGB_API_RATE_SHARE", default_value_t = DEFAULT_SHARE)]
    pub api_rate_share: f64,
    #[arg(long, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

/// The session these settings describe, checked. `origin` names the invocation in the lease;
/// `lease_seconds` applies unless the flag or `TGB_LEASE_SECONDS` says otherwise. Errors name
/// the bad input.
pub fn prepare_session<'a>(
    aws: &'a Aws,
    args: &ReconcileArgs,
    origin: &str,
    lease_seconds: u64,
) -> Result<Session<'a>, UsageError> {
    let clusters = validate_clusters(&args.clusters)?;
    validate_table(&args.table)?;
    let access = match args.kubeconfig.as_deref().filter(|k| !k.is_empty()) {
        Some(value) => {
            let paths: Vec<PathBuf> = std::env::split_paths(value).collect();
            if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
                return Err(UsageError::MissingKubeconfig {
                    path: missing.clone(),
                });
            }
            ClusterAccess::Kubeconfig(paths)
        }
        None => ClusterAccess::Eks,
    };
    if args.max_rules_per_group == 0 {
        return Err(UsageError::ZeroMaxRules);
    }
    let lease_seconds = args.lease_seconds.unwrap_or(lease_seconds);
    if lease_seconds == 0 {
        return Err(UsageError::ZeroLeaseSeconds);
    }
    Ok(Session {
        aws,
        connector: ClusterConnector::new(access, &aws.sdk, aws.calls.clone()),
        clusters,
        policy: Policy {
            max_rules_per_family: args.max_rules_per_group,
            allow_world_open: args.allow_world_open,
            revoke_world_open: args.revoke_world_open,
        },
        options: RunOptions {
            dry_run: args.dry_run,
            lease: Some(LeaseTerms::new(origin, lease_seconds)),
            deadline: None,
        },
    })
}

/// EKS cluster names: 1–100 characters, alphanumeric first, then alphanumerics, `-` and `_`.
pub fn validate_clusters(clusters: &[String]) -> Result<Vec<String>, UsageError> {
    let clusters: Vec<String> = clusters
        .iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if clusters.is_empty() {
        return Err(UsageError::NoCluster);
    }
    for cluster in &clusters {
        let valid = cluster.len() <= 100
            && cluster.starts_with(|c: char| c.is_ascii_alphanumeric())
            && cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(UsageError::InvalidClusterName {
                name: cluster.clone(),
            });
        }
    }
    Ok(clusters)
}

/// DynamoDB table names: 3–255 characters of letters, digits, `_`, `-` and `.`.
pub fn validate_table(table: &str) -> Result<(), UsageError> {
    let valid = (3..=255).contains(&table.len())
        && table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(UsageError::InvalidTable {
            table: table.to_string(),
        })
    }
}
