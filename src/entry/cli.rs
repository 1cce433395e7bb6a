//! The command line: the contract other tooling relies on. Same code path as the Lambda handler.

use crate::adapters::Aws;
use crate::adapters::pacing::Pacing;
use crate::entry::answer::Document;
use crate::entry::args::{
    DEFAULT_TABLE, Output, ReconcileArgs, UsageError, pacing, prepare_session, validate_clusters,
    validate_table,
};
use crate::error::Error;
use crate::ports::OwnershipStore;
use crate::pure::binding::resource::CRD_MANIFEST;
use crate::pure::outcome::ClusterOutcome;
use crate::pure::outcome::exit_code;
use crate::pure::scope::Scope;
use crate::shell::session::reconcile_clusters;
use crate::shell::watch::{WatchOptions, WatchRun, watch_clusters};
use crate::state::lease::DEFAULT_LEASE_SECONDS;
use clap::{Parser, Subcommand};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Exit code of usage and configuration errors.
pub const EXIT_USAGE: u8 = 2;

/// Why a command could not do its work at all (exit 2). What a run finds wrong in the clusters
/// or in AWS is its result, on stdout with exit 1, never one of these.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Usage(#[from] UsageError),
    /// AWS refused the configuration: `init` on a table with another key schema.
    #[error("{0}")]
    Config(String),
    #[error("reading event file {}: {source}", path.display())]
    ReadEventFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("event file {} is not JSON: {source}", path.display())]
    EventNotJson {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    /// The output could not be written (a closed pipe, a full disk).
    #[error("{0}")]
    Write(#[from] std::io::Error),
    #[error("listening for SIGTERM and SIGINT: {0}")]
    Signals(#[source] std::io::Error),
}

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
    /// Reconcile the named clusters once, then follow them: every change in the cluster
    /// (endpoints, Services, nodes, bindings) is planned and applied within about a second.
    /// Runs until SIGTERM or SIGINT (an apply in flight finishes first), or for --duration.
    Watch {
        /// Stop after this many seconds.
        #[arg(long, value_name = "SECONDS")]
        duration: Option<u64>,
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

/// Runs a parsed command, writing the plan and result to `out`. Returns the exit code.
pub async fn run(cli: Cli, out: &mut dyn Write) -> u8 {
    let outcome = match cli.command {
        Command::Crd => write!(out, "{CRD_MANIFEST}")
            .map(|()| 0)
            .map_err(CliError::from),
        Command::Init { table } => init(&table, out).await,
        Command::Status {
            clusters,
            table,
            output,
        } => status(&clusters, &table, output, out).await,
        Command::Reconcile(args) => reconcile(args, None, out).await,
        Command::Watch { duration, args } => watch(args, duration, out).await,
        Command::HandleEvent {
            file,
            own_role_arn,
            args,
        } => match read_event(&file) {
            Ok(event) => reconcile(args, Some((event, own_role_arn)), out).await,
            Err(error) => Err(error),
        },
    };
    match outcome {
        Ok(code) => code,
        // Usage errors go to stderr so that stdout stays a clean plan (or JSON document).
        Err(error) => {
            eprintln!("error: {error}");
            EXIT_USAGE
        }
    }
}

fn read_event(file: &Path) -> Result<serde_json::Value, CliError> {
    let text = std::fs::read_to_string(file).map_err(|source| CliError::ReadEventFile {
        path: file.to_path_buf(),
        source,
    })?;
    serde_json::from_str(&text).map_err(|source| CliError::EventNotJson {
        path: file.to_path_buf(),
        source,
    })
}

async fn init(table: &str, out: &mut dyn Write) -> Result<u8, CliError> {
    validate_table(table)?;
    let aws = Aws::from_env(table, Pacing::default()).await;
    match aws.store.create_table().await {
        Ok(true) => writeln!(out, "created table {table}")?,
        Ok(false) => writeln!(out, "table {table} already exists")?,
        Err(Error::Config(message)) => return Err(CliError::Config(message)),
        Err(error) => {
            writeln!(out, "error: {}", error.chain())?;
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
) -> Result<u8, CliError> {
    let clusters = validate_clusters(clusters)?;
    validate_table(table)?;
    let aws = Aws::from_env(table, Pacing::default()).await;
    let mut report = Vec::new();
    let mut all_ready = true;
    for cluster in &clusters {
        let statuses = aws.store.load_statuses(cluster).await;
        let lease = aws.store.lease_holder(cluster).await;
        let watcher = aws.store.watch_lease_holder(cluster).await;
        let (statuses, lease, watcher) = match (statuses, lease, watcher) {
            (Ok(statuses), Ok(lease), Ok(watcher)) => (statuses, lease, watcher),
            (Err(error), _, _) | (_, Err(error), _) | (_, _, Err(error)) => {
                writeln!(out, "error: {}", error.chain())?;
                return Ok(1);
            }
        };
        all_ready &= statuses.iter().all(|s| s.ready);
        report.push((cluster, statuses, lease, watcher));
    }
    let written = match output {
        Output::Json => {
            let clusters: Vec<serde_json::Value> = report
                .iter()
                .map(|(cluster, statuses, lease, watcher)| {
                    let lease = lease.as_ref().map(|(holder, until, dirty)| {
                        serde_json::json!({"holder": holder, "until": until, "dirty": dirty})
                    });
                    let watcher = watcher.as_ref().map(|(holder, until)| {
                        serde_json::json!({"holder": holder, "until": until})
                    });
                    serde_json::json!({"cluster": cluster, "lease": lease, "watch_lease": watcher, "bindings": statuses})
                })
                .collect();
            serde_json::to_writer_pretty(&mut *out, &serde_json::json!({"clusters": clusters}))
                .map_err(std::io::Error::other)
                .and_then(|()| writeln!(out))
        }
        Output::Text => report
            .iter()
            .try_for_each(|(cluster, statuses, lease, watcher)| {
                let lease = match lease {
                    None => "free".to_string(),
                    Some((holder, until, dirty)) => format!(
                        "held by {holder} until {until}{}",
                        if *dirty { ", asked to run again" } else { "" }
                    ),
                };
                writeln!(out, "cluster {cluster} (lease: {lease})")?;
                if let Some((holder, until)) = watcher {
                    writeln!(out, "  watched by {holder} until {until}")?;
                }
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
    written?;
    Ok(u8::from(!all_ready))
}

/// `reconcile`, or `handle-event` when an event (and the own role) is given.
async fn reconcile(
    args: ReconcileArgs,
    event: Option<(serde_json::Value, Option<String>)>,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    validate_table(&args.table)?;
    let aws = Aws::from_env(&args.table, pacing(&args, "cli")?).await;
    let session = prepare_session(&aws, &args, "cli", DEFAULT_LEASE_SECONDS)?;
    let Some((event, own_role)) = event else {
        let work: Vec<(String, Scope)> = session
            .clusters
            .iter()
            .map(|c| (c.clone(), Scope::Cluster))
            .collect();
        let outcomes = reconcile_clusters(&session, &work).await;
        aws.pacing.leave().await;
        let calls = aws.calls.snapshot();
        print_outcomes(&outcomes, args.dry_run, args.output, Some(&calls), out)?;
        return Ok(exit_code(&outcomes));
    };
    let handled = crate::entry::lambda::handle_event(&event, own_role.as_deref(), &session).await;
    aws.pacing.leave().await;
    match args.output {
        Output::Json => {
            let document = Document {
                trigger: Some(&handled.trigger),
                ..Document::new(&handled.outcomes, args.dry_run)
            };
            serde_json::to_writer_pretty(&mut *out, &document).map_err(std::io::Error::from)?;
            writeln!(out)?;
        }
        Output::Text => {
            writeln!(out, "event: {}", handled.describe_trigger())?;
            print_outcomes(&handled.outcomes, args.dry_run, args.output, None, out)?;
        }
    }
    Ok(exit_code(&handled.outcomes))
}

/// `watch`: follows the clusters until a signal or the duration stops it, printing each run
/// as it ends (text, or one JSON document a line). Exits 0 once stopped cleanly.
async fn watch(
    args: ReconcileArgs,
    duration: Option<u64>,
    out: &mut dyn Write,
) -> Result<u8, CliError> {
    validate_table(&args.table)?;
    if duration == Some(0) {
        return Err(UsageError::ZeroDuration.into());
    }
    let aws = Aws::from_env(&args.table, pacing(&args, "watch")?).await;
    let session = prepare_session(&aws, &args, "watch", DEFAULT_LEASE_SECONDS)?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(CliError::Signals)?;
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let stopper = async move {
        let until = async {
            match duration {
                Some(seconds) => tokio::time::sleep(Duration::from_secs(seconds)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT: stopping"),
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            () = until => tracing::info!("--duration reached: stopping"),
        }
        let _ = stop.send(true);
    };
    let out = RefCell::new(out);
    let failed_write: RefCell<Option<std::io::Error>> = RefCell::new(None);
    let report = |run: WatchRun| {
        let mut out = out.borrow_mut();
        if let Err(error) = print_watch_run(&run, args.dry_run, args.output, &mut **out) {
            failed_write.borrow_mut().get_or_insert(error);
        }
    };
    let options = WatchOptions::until_stopped("watch");
    tokio::join!(
        watch_clusters(&session, &options, stopped, &report),
        stopper
    );
    aws.pacing.leave().await;
    match failed_write.into_inner() {
        Some(error) => Err(error.into()),
        None => Ok(0),
    }
}

fn print_watch_run(
    run: &WatchRun,
    dry_run: bool,
    output: Output,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match output {
        Output::Json => {
            serde_json::to_writer(&mut *out, run)?;
            writeln!(out)?;
        }
        Output::Text => {
            writeln!(
                out,
                "watch {}: {} ({} ms from the first change to the last write)",
                run.cluster,
                run.causes.join("; "),
                run.change_to_applied_ms
            )?;
            print_outcomes(&run.outcomes, dry_run, output, None, out)?;
        }
    }
    out.flush()
}

/// The outcomes of a run. `aws_calls`: the AWS calls the whole process made, by
/// `Service.Operation` — what the run cost in API calls, in the JSON document only.
pub fn print_outcomes(
    outcomes: &[ClusterOutcome],
    dry_run: bool,
    output: Output,
    aws_calls: Option<&BTreeMap<String, usize>>,
    out: &mut dyn Write,
) -> std::io::Result<()> {
    match output {
        Output::Json => {
            let document = Document {
                aws_calls,
                ..Document::new(outcomes, dry_run)
            };
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adapters::pacing::InvalidShare;

    #[test]
    fn cluster_names_are_checked_before_anything_runs() {
        assert_eq!(
            validate_clusters(&["prod".into(), " blue-1 ".into()]),
            Ok(vec!["prod".into(), "blue-1".into()])
        );
        assert!(validate_clusters(&[]).is_err());
        assert!(validate_clusters(&["".into()]).is_err());
        let error = validate_clusters(&["prod/eu".into()])
            .expect_err("slash")
            .to_string();
        assert!(error.contains("\"prod/eu\""), "{error}");
    }

    #[test]
    fn each_error_of_the_command_line_reads_as_it_always_has_and_names_the_bad_input() {
        let not_json = || serde_json::from_str::<serde_json::Value>("{").expect_err("not JSON");
        // (case, the error, its message)
        let cases: Vec<(&str, CliError, String)> = vec![
            (
                "no cluster",
                UsageError::NoCluster.into(),
                "no cluster to reconcile: pass --cluster NAME or set TGB_CLUSTERS".into(),
            ),
            (
                "a bad cluster name",
                UsageError::InvalidClusterName {
                    name: "prod/eu".into(),
                }
                .into(),
                "cluster name \"prod/eu\" is invalid (1-100 characters: letters, digits, - and _, starting with a letter or digit)".into(),
            ),
            (
                "a bad table name",
                UsageError::InvalidTable { table: "x".into() }.into(),
                "table name \"x\" is invalid (3-255 characters: letters, digits, _, - and .)".into(),
            ),
            (
                "a missing kubeconfig",
                UsageError::MissingKubeconfig {
                    path: "/nonexistent/kubeconfig".into(),
                }
                .into(),
                "kubeconfig /nonexistent/kubeconfig does not exist or is not a file".into(),
            ),
            (
                "no rule allowed",
                UsageError::ZeroMaxRules.into(),
                "--max-rules-per-group must be at least 1".into(),
            ),
            (
                "a lease of no time",
                UsageError::ZeroLeaseSeconds.into(),
                "--lease-seconds (TGB_LEASE_SECONDS) must be at least 1".into(),
            ),
            (
                "a share of nothing",
                UsageError::InvalidRateShare(InvalidShare { given: "0".into() }).into(),
                "--api-rate-share (TGB_API_RATE_SHARE) must be above 0 and at most 1, not 0".into(),
            ),
            (
                "a table AWS refuses",
                CliError::Config("table t exists with key schema []".into()),
                "table t exists with key schema []".into(),
            ),
            (
                "an unreadable event file",
                CliError::ReadEventFile {
                    path: "events/none.json".into(),
                    source: std::io::Error::new(std::io::ErrorKind::NotFound, "not found"),
                },
                "reading event file events/none.json: not found".into(),
            ),
            (
                "an event file that is not JSON",
                CliError::EventNotJson {
                    path: "events/bad.json".into(),
                    source: not_json(),
                },
                format!("event file events/bad.json is not JSON: {}", not_json()),
            ),
            (
                "a closed stdout",
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "broken pipe").into(),
                "broken pipe".into(),
            ),
        ];
        for (case, error, message) in cases {
            assert_eq!(error.to_string(), message, "{case}");
        }
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
