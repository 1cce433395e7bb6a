//! The Lambda face of the binary: every invocation is classified, narrowed to what it can
//! affect, then runs the same code path as `tgb-reconciler reconcile`, and returns the plans
//! and results. Configuration comes from the same environment variables the CLI reads.

use crate::adapters::Aws;
use crate::entry::answer;
use crate::entry::args::{ReconcileArgs, pacing, prepare_session};
use crate::error::Error;
use crate::ports::NetworkDirectory;
use crate::pure::outcome::ClusterOutcome;
use crate::pure::outcome::exit_code;
use crate::pure::scope::Scope;
use crate::pure::trigger::{Trigger, classify, provenance};
use crate::pure::watch::handover;
use crate::shell::apply::Deadline;
use crate::shell::session::{Session, reconcile_clusters};
use crate::shell::watch::{WatchOptions, WatchRun, watch_clusters};
use crate::state::lease::LeaseTerms;
use clap::Parser;
use lambda_runtime::{LambdaEvent, service_fn};
use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tracing::Instrument;

/// The lease outlives the invocation's deadline by this much, so it never lapses under a run
/// that may still write.
const LEASE_MARGIN: Duration = Duration::from_secs(60);
/// The runs stop writing this long before the invocation's deadline (a tenth of the time at
/// most), so that the answer and its metrics are out before Lambda ends the invocation. Before
/// that, each run keeps [`crate::pure::course::reserve_for`] for its statuses and its lease.
const ANSWER_MARGIN: Duration = Duration::from_secs(5);
/// The watch lease outlives the watch by this much: letting it go is the invocation's last
/// step, and a standby takes it at once anyway.
const LEASE_GRACE: Duration = Duration::from_secs(2);

/// The CLI's reconcile flags, read from the environment only (`TGB_CLUSTERS`, `TGB_TABLE`, …).
#[derive(Debug, Parser)]
#[command(name = "tgb-reconciler")]
pub struct LambdaConfig {
    #[command(flatten)]
    pub args: ReconcileArgs,
    #[arg(long, value_name = "ARN", env = "TGB_OWN_ROLE_ARN")]
    pub own_role_arn: Option<String>,
    /// After a per-cluster scheduled sweep, watch the cluster for the schedule's period
    /// (`false`: sweeps and events only).
    #[arg(long, env = "TGB_WATCH", default_value_t = true, action = clap::ArgAction::Set)]
    pub watch: bool,
}

pub async fn serve() -> Result<(), Error> {
    if let Some(problem) = runtime_environment_problem(|name| std::env::var(name).ok()) {
        return Err(Error::Config(problem));
    }
    let config = LambdaConfig::try_parse_from(["tgb-reconciler"])
        .map_err(|e| Error::Config(e.to_string()))?;
    let aws = Aws::from_env(&config.args.table, pacing(&config.args, "lambda")?).await;
    let (config, aws) = (&config, &aws);
    lambda_runtime::run(service_fn(move |event: LambdaEvent<Value>| async move {
        Box::pin(invoke(
            aws,
            config,
            &event.payload,
            &event.context.request_id,
            event.context.deadline(),
        ))
        .await
    }))
    .await
    .map_err(|source| Error::LambdaRuntime { source })
}

/// One invocation: classify the event, reconcile what it concerns, and, for a per-cluster
/// scheduled sweep that asks for it, watch that cluster for the schedule's period. Returns the
/// answer the function gives.
pub async fn invoke(
    aws: &Aws,
    config: &LambdaConfig,
    payload: &Value,
    request_id: &str,
    deadline: SystemTime,
) -> Result<Value, Error> {
    let time_left = || {
        deadline
            .duration_since(SystemTime::now())
            .unwrap_or_default()
    };
    let lease_seconds = (time_left() + LEASE_MARGIN).as_secs();
    let origin = format!("lambda:{request_id}");
    let mut session = prepare_session(aws, &config.args, &origin, lease_seconds)?;
    let time = time_left();
    // Lambda always gives a deadline ahead; one already passed (a local Runtime API emulator
    // sends none) cannot be kept, so the runs go without one rather than not at all.
    if time.is_zero() {
        tracing::warn!("the invocation's deadline has already passed: running without one");
    } else {
        session.options.deadline = Some(Deadline::after(time - ANSWER_MARGIN.min(time / 10)));
    }
    let started = Instant::now();
    let handled = Box::pin(handle_event(
        payload,
        config.own_role_arn.as_deref(),
        &session,
    ))
    .await;
    report_invocation(&handled, payload, started);
    let mut answer = handled.to_json(session.options.dry_run);
    if let Some((cluster, window)) =
        watch_after(config.watch, &handled.trigger, payload, time_left())
    {
        let watched = Box::pin(watch_for(&session, &cluster, &origin, window)).await;
        answer["watch"] = watched;
    }
    // Off the roster until the next invocation draws: the other runs take its part at once.
    aws.pacing.leave().await;
    Ok(answer)
}

/// Which cluster to watch after this invocation's sweep, and for how long: only after a
/// per-cluster scheduled sweep that asks for it (the template's schedules do), with watching
/// on. A period that cannot be read is said in the log, and the sweep stands alone.
fn watch_after(
    enabled: bool,
    trigger: &Trigger,
    payload: &Value,
    time_left: Duration,
) -> Option<(String, handover::WatchWindow)> {
    let Trigger::Sweep {
        cluster: Some(cluster),
        ..
    } = trigger
    else {
        return None;
    };
    let period = match crate::pure::trigger::watch_period(payload) {
        Ok(period) => period?,
        Err(why) => {
            tracing::warn!(cluster = %cluster, "not watching: {why}");
            return None;
        }
    };
    if !enabled {
        return None;
    }
    let window = handover::watch_window(period, time_left);
    if !window.uncovered.is_zero() {
        tracing::warn!(cluster = %cluster, uncovered_s = window.uncovered.as_secs(),
            "the function's timeout is shorter than the schedule's period: part of each period is not watched (raise FunctionTimeout)");
    }
    Some((cluster.clone(), window))
}

/// Watches one cluster for the window (standing by while an earlier invocation still holds
/// its watch lease), logging each run with its metrics; what it did, for the answer.
async fn watch_for(
    session: &Session<'_>,
    cluster: &str,
    origin: &str,
    window: handover::WatchWindow,
) -> Value {
    let session = Session {
        aws: session.aws,
        connector: session.connector.clone(),
        clusters: vec![cluster.to_string()],
        policy: session.policy.clone(),
        options: session.options.clone(),
    };
    // The lease covers the window and a little more, and is never renewed: the invocation
    // ends with its window, and a holder that died leaves a lease that lapses soon after.
    let options = WatchOptions {
        lease: LeaseTerms::new(origin, (window.watch_for + LEASE_GRACE).as_secs().max(1)),
        renew_every: None,
    };
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runs = std::cell::RefCell::new(Vec::<(u64, u64)>::new());
    let report = |run: WatchRun| {
        let finished_ms = epoch_ms();
        for document in crate::pure::metrics::watch_documents(&run, finished_ms) {
            println!("{document}");
        }
        let started_ms = finished_ms.saturating_sub(run.change_to_applied_ms);
        runs.borrow_mut().push((started_ms, finished_ms));
    };
    let until = async {
        tokio::time::sleep(window.watch_for).await;
        let _ = stop.send(true);
    };
    let began_ms = epoch_ms();
    tokio::join!(watch_clusters(&session, &options, stopped, &report), until);
    let runs = runs.into_inner();
    tracing::info!(cluster, runs = runs.len(), "watch done; handing over");
    let first_run = runs
        .first()
        .map(|(started, finished)| json!({"started_ms": started, "finished_ms": finished}));
    json!({
        "cluster": cluster,
        "from_ms": began_ms,
        "until_ms": epoch_ms(),
        "window_ms": u64::try_from(window.watch_for.as_millis()).unwrap_or(u64::MAX),
        "runs": runs.len(),
        "first_run": first_run,
    })
}

fn epoch_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or_default()
}

/// What the Lambda runtime needs from its environment and would otherwise panic over (Lambda
/// sets it; a local Runtime API emulator leaves it to you): `None` when it is all there.
pub fn runtime_environment_problem(lookup: impl Fn(&str) -> Option<String>) -> Option<String> {
    let missing: Vec<&str> = [
        "AWS_LAMBDA_FUNCTION_NAME",
        "AWS_LAMBDA_FUNCTION_VERSION",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    ]
    .into_iter()
    .filter(|name| lookup(name).is_none())
    .collect();
    if !missing.is_empty() {
        return Some(format!(
            "the Lambda runtime needs {} in the environment (Lambda sets them; with a local Runtime API, set them yourself)",
            missing.join(", ")
        ));
    }
    let memory = lookup("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").unwrap_or_default();
    match memory.parse::<i32>() {
        Ok(_) => None,
        Err(_) => Some(format!(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE must be a number of MB, not {memory:?}"
        )),
    }
}

/// The invocation's summary line, and its metrics as embedded-metric documents on stdout (one
/// line each: CloudWatch extracts them from the log, no API call needed).
fn report_invocation(handled: &HandledEvent, event: &Value, started: Instant) {
    let millis = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    let now = millis(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default(),
    );
    let event_age = event
        .get("time")
        .and_then(Value::as_str)
        .and_then(|time| {
            aws_smithy_types::DateTime::from_str(
                time,
                aws_smithy_types::date_time::Format::DateTime,
            )
            .ok()
        })
        .and_then(|time| u64::try_from(time.to_millis().ok()?).ok())
        .map(|at| now.saturating_sub(at));
    let duration = millis(started.elapsed());
    for document in crate::pure::metrics::documents(&handled.outcomes, duration, event_age, now) {
        println!("{document}");
    }
    tracing::info!(
        trigger = %handled.describe_trigger(),
        runs = handled.outcomes.len(),
        exit_code = exit_code(&handled.outcomes),
        duration_ms = duration,
        "invocation done"
    );
}

/// What one event led to: its classification and, unless ignored, the runs it caused.
pub struct HandledEvent {
    pub trigger: Trigger,
    pub outcomes: Vec<ClusterOutcome>,
}

impl HandledEvent {
    pub fn describe_trigger(&self) -> String {
        match &self.trigger {
            Trigger::Ignored { reason } => format!("ignored: {reason}"),
            Trigger::Sweep {
                reason,
                cluster: Some(cluster),
            } => format!("sweep of {cluster}: {reason}"),
            Trigger::Sweep { reason, .. } => format!("sweep: {reason}"),
            Trigger::SecurityGroup { group, event } => format!("{event} on security group {group}"),
            Trigger::NetworkInterface { interface, event } => {
                format!("{event} on network interface {interface}")
            }
            Trigger::TargetGroup { arn, event } => format!("{event} on {arn}"),
            Trigger::Instance { instance, state } => format!("instance {instance} is {state}"),
        }
    }

    /// The invocation's answer: the runs whole while they fit in the answer's limit, each one
    /// past it in a line of plan and a line of what was applied.
    pub fn to_json(&self, dry_run: bool) -> Value {
        json!({
            "trigger": self.trigger,
            "dry_run": dry_run,
            "clusters": answer::runs_within_limit(&self.outcomes),
            "exit_code": exit_code(&self.outcomes),
        })
    }
}

/// The one path of every invocation (Lambda and `handle-event`): classify, narrow, reconcile.
/// An ignored event makes no AWS or cluster call at all. Events only say *that* something
/// changed; what the runs act on is always re-read.
pub async fn handle_event(
    event: &Value,
    own_role: Option<&str>,
    session: &Session<'_>,
) -> HandledEvent {
    let trigger = classify(event, own_role);
    let work = match work_for(&trigger, session).await {
        Ok(work) => work,
        Err(reason) => {
            tracing::info!(reason = %reason, "event ignored");
            return HandledEvent {
                trigger: Trigger::Ignored { reason },
                outcomes: Vec::new(),
            };
        }
    };
    // Every line the runs log (each change among them) names who drifted what: the audit trail.
    let cause = match provenance(event) {
        Some(p) => tracing::info_span!("cloudtrail", actor = %p.actor, eventID = %p.event_id),
        None => tracing::Span::none(),
    };
    let outcomes = reconcile_clusters(session, &work).instrument(cause).await;
    HandledEvent { trigger, outcomes }
}

/// Which clusters an event concerns, and how much of each; `Err(why)` when it concerns none.
async fn work_for(
    trigger: &Trigger,
    session: &Session<'_>,
) -> Result<Vec<(String, Scope)>, String> {
    let every = |scope: Scope| {
        session
            .clusters
            .iter()
            .map(|c| (c.clone(), scope.clone()))
            .collect()
    };
    match trigger {
        Trigger::Ignored { reason } => Err(reason.clone()),
        Trigger::Sweep {
            cluster: Some(cluster),
            ..
        } => {
            if session.clusters.contains(cluster) {
                Ok(vec![(cluster.clone(), Scope::Cluster)])
            } else {
                Err(format!(
                    "cluster {cluster} is not configured (TGB_CLUSTERS: {})",
                    session.clusters.join(",")
                ))
            }
        }
        Trigger::Sweep { cluster: None, .. } => Ok(every(Scope::Cluster)),
        Trigger::SecurityGroup { group, .. } => Ok(every(Scope::SecurityGroup(group.clone()))),
        Trigger::TargetGroup { arn, .. } => Ok(every(Scope::TargetGroup(arn.clone()))),
        // The groups an interface had before are not in the event: sweep.
        Trigger::NetworkInterface { .. } => Ok(every(Scope::Cluster)),
        Trigger::Instance { instance, .. } => {
            match session.aws.ec2.instance_clusters(instance).await {
                Ok(Some(owners)) => {
                    let ours: Vec<(String, Scope)> = session
                        .clusters
                        .iter()
                        .filter(|c| owners.contains(*c))
                        .map(|c| (c.clone(), Scope::Cluster))
                        .collect();
                    if ours.is_empty() {
                        Err(format!(
                            "instance {instance} belongs to no configured cluster"
                        ))
                    } else {
                        Ok(ours)
                    }
                }
                // Gone, or unreadable: its cluster is unknown, so every one is swept.
                Ok(None) => Ok(every(Scope::Cluster)),
                Err(error) => {
                    tracing::warn!(instance = %instance, error = %error.chain(), "sweeping every cluster");
                    Ok(every(Scope::Cluster))
                }
            }
        }
    }
}

impl From<Error> for lambda_runtime::Diagnostic {
    fn from(error: Error) -> Self {
        let error_type = match &error {
            Error::Config(_) | Error::InvalidSettings { .. } => "NonRetryable.Config",
            _ => "Reconcile",
        };
        Self {
            error_type: error_type.to_string(),
            error_message: error.chain(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::runtime_environment_problem;
    use crate::entry::args::UsageError;
    use crate::error::Error;

    #[test]
    fn an_unusable_setting_fails_the_invocation_as_a_configuration_error_that_names_it() {
        // (case, the error, its Lambda error type, its message)
        let cases = [
            (
                "a setting",
                Error::from(UsageError::ZeroLeaseSeconds),
                "NonRetryable.Config",
                "configuration: --lease-seconds (TGB_LEASE_SECONDS) must be at least 1",
            ),
            (
                "the runtime environment",
                Error::Config("no AWS region configured (set AWS_REGION)".into()),
                "NonRetryable.Config",
                "configuration: no AWS region configured (set AWS_REGION)",
            ),
            (
                "a missing target group",
                Error::TargetGroupNotFound {
                    target_group: "arn:tg".into(),
                },
                "Reconcile",
                "target group arn:tg not found",
            ),
        ];
        for (case, error, error_type, message) in cases {
            let diagnostic = lambda_runtime::Diagnostic::from(error);
            assert_eq!(
                (
                    diagnostic.error_type.as_str(),
                    diagnostic.error_message.as_str()
                ),
                (error_type, message),
                "{case}"
            );
        }
    }

    #[test]
    fn a_runtime_environment_without_what_lambda_sets_is_a_configuration_error_naming_it() {
        let full = [
            ("AWS_LAMBDA_FUNCTION_NAME", "_"),
            ("AWS_LAMBDA_FUNCTION_VERSION", "1"),
            ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256"),
        ];
        // (case, environment, a part of the expected error)
        type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, Option<&'a str>);
        let cases: [Case; 3] = [
            ("all there", full.to_vec(), None),
            (
                "memory and version missing",
                full[..1].to_vec(),
                Some("AWS_LAMBDA_FUNCTION_VERSION, AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
            ),
            (
                "memory not a number",
                vec![
                    full[0],
                    full[1],
                    ("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "lots"),
                ],
                Some("\"lots\""),
            ),
        ];
        for (name, env, expected) in cases {
            let lookup = |key: &str| {
                env.iter()
                    .find(|(k, _)| *k == key)
                    .map(|(_, v)| v.to_string())
            };
            let problem = runtime_environment_problem(lookup);
            match expected {
                None => assert_eq!(problem, None, "{name}"),
                Some(part) => assert!(
                    problem.as_deref().is_some_and(|p| p.contains(part)),
                    "{name}: {problem:?}"
                ),
            }
        }
    }
}
