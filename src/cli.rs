//! The command line: the contract other tooling relies on. Same code path as the Lambda handler.

use crate::adapters::Aws;
use crate::adapters::eks::{ClusterAccess, ClusterConnector};
use crate::adapters::kube::KubeEndpointSource;
use crate::adapters::pacing::{DEFAULT_SHARE, Pacing};
use crate::binding::resource::CRD_MANIFEST;
use crate::error::Error;
use crate::lease::{DEFAULT_LEASE_SECONDS, LeaseTerms};
use crate::plan::rules::DEFAULT_MAX_RULES_PER_FAMILY;
use crate::ports::OwnershipStore;
use crate::reconcile::{ClusterOutcome, Policy, RunOptions, nothing_in_scope, reconcile_cluster};
use crate::report::exit_code;
use crate::scope::Scope;
use clap::{Parser, Subcommand, ValueEnum};
use std::io::Write;
use std::path::PathBuf;

pub const DEFAULT_TABLE: &str = "tgb-reconciler";
/// Exit code of usage and configuration errors.
pub const EXIT_USAGE: u8 = 2;

#[derive(Debug, Parser)]
#[command(
    name = "tgb-reconciler",
    version,
    about = "Keeps AWS target groups converged with Kubernetes Service endpoints, from outside the cluster."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Reconcile every binding of the named clusters: print the plan, apply it, print the result.
    Reconcile(ReconcileArgs),
    /// Run exactly the Lambda path on an event file: classify it, then reconcile (or ignore it).
    HandleEvent {
        /// An EventBridge envelope, as in `events/`.
        file: PathBuf,
        /// The reconciler's own role: CloudTrail events it caused are ignored.
        #[arg(long, value_name = "ARN", env = "TGB_OWN_ROLE_ARN")]
        own_role_arn: Option<String>,
        #[command(flatten)]
        args: ReconcileArgs,
    },
    /// Print where each binding stood after its last run, and who holds each cluster's lease
    /// (from the state table; nothing is reconciled). Exits 1 when a binding is not ready.
    Status {
        /// EKS cluster to report on; repeat for several. Default: TGB_CLUSTERS.
        #[arg(
            long = "cluster",
            value_name = "NAME",
            env = "TGB_CLUSTERS",
            value_delimiter = ','
        )]
        clusters: Vec<String>,
        #[arg(long, env = "TGB_TABLE", default_value = DEFAULT_TABLE)]
        table: String,
        #[arg(long, value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Create the state table (ownership records) if it does not exist yet.
    Init {
        #[arg(long, env = "TGB_TABLE", default_value = DEFAULT_TABLE)]
        table: String,
    },
    /// Print the TargetGroupBinding CRD, for clusters that do not run the AWS Load Balancer Controller.
    Crd,
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
    /// How long the cluster's lease lasts (renewed before every write). Default: the Lambda
    /// invocation's remaining time plus a minute; 960 on a terminal.
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
    /// The share of each AWS API rate bucket (EC2, ELBv2) this reconciler may use; the rest is
    /// left to people, Terraform and other controllers in the account.
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

/// Runs a parsed command, writing the plan and result to `out`. Returns the exit code.
pub async fn run(cli: Cli, out: &mut dyn Write) -> u8 {
    let outcome = match cli.command {
        Command::Crd => write!(out, "{CRD_MANIFEST}")
            .map(|_| 0)
            .map_err(|e| e.to_string()),
        Command::Init { table } => init(&table, out).await,
        Command::Status {
            clusters,
            table,
            output,
        } => status(&clusters, &table, output, out).await,
        Command::Reconcile(args) => reconcile(args, None, out).await,
        Command::HandleEvent {
            file,
            own_role_arn,
            args,
        } => {
            let event = std::fs::read_to_string(&file)
                .map_err(|e| format!("reading event file {}: {e}", file.display()))
                .and_then(|text| {
                    serde_json::from_str::<serde_json::Value>(&text)
                        .map_err(|e| format!("event file {} is not JSON: {e}", file.display()))
                });
            match event {
                Ok(event) => reconcile(args, Some((event, own_role_arn)), out).await,
                Err(message) => Err(message),
            }
        }
    };
    match outcome {
        Ok(code) => code,
        // Usage errors go to stderr so that stdout stays a clean plan (or JSON document).
        Err(message) => {
            eprintln!("error: {message}");
            EXIT_USAGE
        }
    }
}

async fn init(table: &str, out: &mut dyn Write) -> Result<u8, String> {
    validate_table(table)?;
    let aws = Aws::from_env(table, Pacing::default()).await;
    match aws.store.create_table().await {
        Ok(true) => writeln!(out, "created table {table}").map_err(|e| e.to_string())?,
        Ok(false) => writeln!(out, "table {table} already exists").map_err(|e| e.to_string())?,
        Err(Error::Config(message)) => return Err(message),
        Err(error) => {
            writeln!(out, "error: {}", error.chain()).map_err(|e| e.to_string())?;
            return Ok(1);
        }
    }
    Ok(0)
}

async fn status(
    clusters: &[String],
    table: &str,
    output: Output,
    out: &mut dyn Write,
) -> Result<u8, String> {
    let clusters = validate_clusters(clusters)?;
    validate_table(table)?;
    let aws = Aws::from_env(table, Pacing::default()).await;
    let mut report = Vec::new();
    let mut all_ready = true;
    for cluster in &clusters {
        let statuses = aws.store.load_statuses(cluster).await;
        let lease = aws.store.lease_holder(cluster).await;
        let (statuses, lease) = match (statuses, lease) {
            (Ok(statuses), Ok(lease)) => (statuses, lease),
            (Err(error), _) | (_, Err(error)) => {
                writeln!(out, "error: {}", error.chain()).map_err(|e| e.to_string())?;
                return Ok(1);
            }
        };
        all_ready &= statuses.iter().all(|s| s.ready);
        report.push((cluster, statuses, lease));
    }
    let written = match output {
        Output::Json => {
            let clusters: Vec<serde_json::Value> = report
                .iter()
                .map(|(cluster, statuses, lease)| {
                    let lease = lease.as_ref().map(|(holder, until, dirty)| {
                        serde_json::json!({"holder": holder, "until": until, "dirty": dirty})
                    });
                    serde_json::json!({"cluster": cluster, "lease": lease, "bindings": statuses})
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &serde_json::json!({"clusters": clusters}))
                .map_err(std::io::Error::other)
                .and_then(|()| writeln!(out))
        }
        Output::Text => report.iter().try_for_each(|(cluster, statuses, lease)| {
            let lease = match lease {
                None => "free".to_string(),
                Some((holder, until, dirty)) => format!(
                    "held by {holder} until {until}{}",
                    if *dirty { ", asked to run again" } else { "" }
                ),
            };
            writeln!(out, "cluster {cluster} (lease: {lease})")?;
            if statuses.is_empty() {
                writeln!(out, "  no binding has been applied yet")?;
            }
            for s in statuses {
                let generation = s
                    .observed_generation
                    .map(|g| format!("generation {g}, "))
                    .unwrap_or_default();
                writeln!(
                    out,
                    "  {} {} {} ({generation}since {}): {}",
                    if s.ready { "ok" } else { "!!" },
                    s.binding,
                    s.reason,
                    s.since.as_deref().unwrap_or("?"),
                    s.message
                )?;
            }
            Ok(())
        }),
    };
    written.map_err(|e| e.to_string())?;
    Ok(u8::from(!all_ready))
}

/// Everything a run needs, checked: from flags on a terminal, from the same environment
/// variables under Lambda.
pub struct Session<'a> {
    pub aws: &'a Aws,
    pub connector: ClusterConnector,
    pub clusters: Vec<String>,
    pub policy: Policy,
    pub options: RunOptions,
}

impl<'a> Session<'a> {
    /// `origin` names the invocation in the lease; `lease_seconds` applies unless the flag or
    /// `TGB_LEASE_SECONDS` says otherwise. Errors name the bad input.
    pub fn prepare(
        aws: &'a Aws,
        args: &ReconcileArgs,
        origin: &str,
        lease_seconds: u64,
    ) -> Result<Self, String> {
        let clusters = validate_clusters(&args.clusters)?;
        validate_table(&args.table)?;
        let access = match args.kubeconfig.as_deref().filter(|k| !k.is_empty()) {
            Some(value) => {
                let paths: Vec<PathBuf> = std::env::split_paths(value).collect();
                if let Some(missing) = paths.iter().find(|p| !p.is_file()) {
                    return Err(format!(
                        "kubeconfig {} does not exist or is not a file",
                        missing.display()
                    ));
                }
                ClusterAccess::Kubeconfig(paths)
            }
            None => ClusterAccess::Eks,
        };
        if args.max_rules_per_group == 0 {
            return Err("--max-rules-per-group must be at least 1".into());
        }
        let lease_seconds = args.lease_seconds.unwrap_or(lease_seconds);
        if lease_seconds == 0 {
            return Err("--lease-seconds (TGB_LEASE_SECONDS) must be at least 1".into());
        }
        Ok(Self {
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
            },
        })
    }
}

/// `reconcile`, or `handle-event` when an event (and the own role) is given.
async fn reconcile(
    args: ReconcileArgs,
    event: Option<(serde_json::Value, Option<String>)>,
    out: &mut dyn Write,
) -> Result<u8, String> {
    validate_table(&args.table)?;
    let aws = Aws::from_env(&args.table, Pacing::with_share(args.api_rate_share)?).await;
    let session = Session::prepare(&aws, &args, "cli", DEFAULT_LEASE_SECONDS)?;
    let Some((event, own_role)) = event else {
        let work: Vec<(String, Scope)> = session
            .clusters
            .iter()
            .map(|c| (c.clone(), Scope::Cluster))
            .collect();
        let outcomes = reconcile_clusters(&session, &work).await;
        print_outcomes(&outcomes, args.dry_run, args.output, out).map_err(|e| e.to_string())?;
        return Ok(exit_code(&outcomes));
    };
    let handled = crate::lambda::handle_event(&event, own_role.as_deref(), &session).await;
    match args.output {
        Output::Json => {
            serde_json::to_writer_pretty(&mut *out, &handled.to_json(args.dry_run))
                .map_err(|e| e.to_string())?;
            writeln!(out).map_err(|e| e.to_string())?;
        }
        Output::Text => {
            writeln!(out, "event: {}", handled.describe_trigger()).map_err(|e| e.to_string())?;
            print_outcomes(&handled.outcomes, args.dry_run, args.output, out)
                .map_err(|e| e.to_string())?;
        }
    }
    Ok(exit_code(&handled.outcomes))
}

/// Reconciles clusters one after the other, each as far as its scope reaches; a cluster that
/// cannot be reached fails alone. A cluster the event does not concern is not even connected
/// to.
pub async fn reconcile_clusters(
    session: &Session<'_>,
    work: &[(String, Scope)],
) -> Vec<ClusterOutcome> {
    let ports = session.aws.ports();
    let mut outcomes = Vec::with_capacity(work.len());
    for (cluster, scope) in work {
        if let Some(outcome) = nothing_in_scope(cluster, scope, &ports).await {
            outcomes.push(outcome);
            continue;
        }
        let source = session
            .connector
            .client(cluster)
            .await
            .map(|client| KubeEndpointSource::new(client, cluster));
        let run = reconcile_cluster(
            cluster,
            source,
            &ports,
            &session.policy,
            scope,
            &session.options,
        );
        outcomes.extend(Box::pin(run).await);
    }
    outcomes
}

pub fn print_outcomes(
    outcomes: &[ClusterOutcome],
    dry_run: bool,
    output: Output,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match output {
        Output::Json => {
            let document = serde_json::json!({
                "dry_run": dry_run,
                "clusters": outcomes,
                "exit_code": exit_code(outcomes),
            });
            serde_json::to_writer_pretty(&mut *out, &document)?;
            writeln!(out)
        }
        Output::Text => {
            for outcome in outcomes {
                if let Some(why) = &outcome.skipped {
                    writeln!(
                        out,
                        "{} ({}): skipped: {why}\n",
                        outcome.plan.cluster, outcome.scope
                    )?;
                    continue;
                }
                if outcome.scope != Scope::Cluster {
                    writeln!(out, "Narrowed to {}.", outcome.scope)?;
                }
                write!(out, "{}", outcome.plan)?;
                match &outcome.report {
                    Some(report) => write!(out, "{report}")?,
                    None if dry_run => writeln!(out, "Dry run: nothing was changed.")?,
                    None => writeln!(out, "Nothing was changed.")?,
                }
                if let Some(error) = &outcome.lease_error {
                    writeln!(out, "  ! lease: {error}")?;
                }
                writeln!(out)?;
            }
            Ok(())
        }
    }
}

/// EKS cluster names: 1–100 characters, alphanumeric first, then alphanumerics, `-` and `_`.
fn validate_clusters(clusters: &[String]) -> Result<Vec<String>, String> {
    let clusters: Vec<String> = clusters
        .iter()
        .map(|c| c.trim().to_string())
        .filter(|c| !c.is_empty())
        .collect();
    if clusters.is_empty() {
        return Err("no cluster to reconcile: pass --cluster NAME or set TGB_CLUSTERS".into());
    }
    for cluster in &clusters {
        let valid = cluster.len() <= 100
            && cluster.starts_with(|c: char| c.is_ascii_alphanumeric())
            && cluster
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !valid {
            return Err(format!(
                "cluster name {cluster:?} is invalid (1-100 characters: letters, digits, - and _, starting with a letter or digit)"
            ));
        }
    }
    Ok(clusters)
}

/// DynamoDB table names: 3–255 characters of letters, digits, `_`, `-` and `.`.
fn validate_table(table: &str) -> Result<(), String> {
    let valid = (3..=255).contains(&table.len())
        && table
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "table name {table:?} is invalid (3-255 characters: letters, digits, _, - and .)"
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_names_are_checked_before_anything_runs() {
        assert_eq!(
            validate_clusters(&["prod".into(), " blue-1 ".into()]),
            Ok(vec!["prod".into(), "blue-1".into()])
        );
        assert!(validate_clusters(&[]).is_err());
        assert!(validate_clusters(&["".into()]).is_err());
        let error = validate_clusters(&["prod/eu".into()]).expect_err("slash");
        assert!(error.contains("\"prod/eu\""), "{error}");
    }

    #[test]
    fn table_names_are_checked_before_anything_runs() {
        assert!(validate_table("tgb-reconciler").is_ok());
        assert!(validate_table("ab").is_err());
        assert!(validate_table("bad table").is_err());
    }

    #[test]
    fn the_cli_reads_repeated_and_comma_separated_clusters() {
        let cli = Cli::try_parse_from([
            "tgb-reconciler",
            "reconcile",
            "--cluster",
            "a,b",
            "--cluster",
            "c",
            "--dry-run",
            "--output",
            "json",
        ])
        .expect("parses");
        let Command::Reconcile(args) = cli.command else {
            panic!("reconcile")
        };
        assert_eq!(args.clusters, ["a", "b", "c"]);
        assert!(args.dry_run);
        assert_eq!(args.output, Output::Json);
    }
}
