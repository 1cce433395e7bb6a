//! One cluster's run: observe → desire → plan → apply, under the cluster's lease. Everything
//! that decides lives in [`crate::pure`]; this only gathers its inputs and hands over the plan.

use crate::error::Error;
use crate::model::BindingId;
use crate::ports::{
    EndpointSource, FirewallRules, NetworkDirectory, OwnershipStore, Ports, TargetRegistry,
};
pub use crate::pure::course::Look;
use crate::pure::course::{self, AfterLook};
use crate::pure::observe;
use crate::pure::observe::bindings::Resolved;
use crate::pure::outcome::ClusterOutcome;
use crate::pure::plan::{Plan, PlanInput, Policy, plan};
use crate::pure::scope::{self, Coverage, Scope};
use crate::pure::status;
use crate::shell::apply::{Deadline, HeldLease, Reach, apply_within, set_gates};
use crate::shell::gather;
use crate::shell::progress::{PROGRESS_EVERY, Progress, telling};
use crate::state::lease::{LeaseClaim, LeaseRelease, LeaseTerms, MAX_RUNS_PER_LEASE};
use crate::state::ownership::OwnershipRecord;
use crate::state::status::{BindingStatus, StatusWrite};
use std::collections::BTreeSet;
use tokio::time::Instant;

/// How a run goes: for real or as a dry run, under which lease (none only in tests and dry
/// runs: a dry run writes nothing, so it needs none), and by when it must have stopped writing
/// (under Lambda, the invocation's deadline less the time its answer takes; none on a terminal).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    pub lease: Option<LeaseTerms>,
    pub deadline: Option<Deadline>,
}

/// When an event concerns nothing this cluster made, the outcome that says so — found from the
/// records alone, before the cluster is even connected to.
pub async fn nothing_in_scope<R, N, F, S>(
    cluster: &str,
    scope: &Scope,
    ports: &Ports<'_, R, N, F, S>,
) -> Option<ClusterOutcome>
where
    S: OwnershipStore,
{
    if !course::looks_at_records_first(scope) {
        return None;
    }
    course::nothing_in_scope(cluster, scope, ports.store.load(cluster).await)
}

/// Runs one cluster, then records where each binding it covered stands.
pub async fn reconcile_cluster<R, N, F, S>(
    cluster: &str,
    source: Result<impl EndpointSource, Error>,
    ports: &Ports<'_, R, N, F, S>,
    policy: &Policy,
    scope: &Scope,
    options: &RunOptions,
) -> Vec<ClusterOutcome>
where
    R: TargetRegistry,
    N: NetworkDirectory,
    F: FirewallRules,
    S: OwnershipStore,
{
    reconcile_cluster_with(cluster, source, ports, policy, scope, options, Look::First).await
}

/// [`reconcile_cluster`], looking first or not.
pub async fn reconcile_cluster_with<R, N, F, S>(
    cluster: &str,
    source: Result<impl EndpointSource, Error>,
    ports: &Ports<'_, R, N, F, S>,
    policy: &Policy,
    scope: &Scope,
    options: &RunOptions,
    look: Look,
) -> Vec<ClusterOutcome>
where
    R: TargetRegistry,
    N: NetworkDirectory,
    F: FirewallRules,
    S: OwnershipStore,
{
    let progress = Progress::default();
    let tell = |after: std::time::Duration, counts| {
        tracing::info!(cluster, seconds = after.as_secs(), "progress: {counts}");
    };
    let run = run_under_lease(
        cluster, &source, ports, policy, scope, options, look, &progress,
    );
    let outcomes = telling(&progress, PROGRESS_EVERY, tell, run).await;
    if let (Some(last), Ok(source)) = (outcomes.last(), &source) {
        record_statuses(cluster, last, source, ports.store).await;
    }
    outcomes
}

/// Writes the statuses that changed: to the state table, and to the TargetGroupBinding
/// resources while the identity may. Statuses only inform, so a failure here is logged and
/// changes nothing else.
async fn record_statuses(
    cluster: &str,
    outcome: &ClusterOutcome,
    source: &impl EndpointSource,
    store: &impl OwnershipStore,
) {
    let Some(current) = status::of(outcome) else {
        return;
    };
    let stored = match &outcome.stored_statuses {
        Some(stored) => Ok(stored.clone()),
        None => store.load_statuses(cluster).await,
    };
    let stored = match stored {
        Ok(stored) => stored,
        Err(error) => {
            return tracing::warn!(cluster, error = %error.chain(), "binding statuses not recorded");
        }
    };
    let changes = status::changes(&stored, &current, outcome.scope == Scope::Cluster);
    // One batch for the table (25 items a call), then the resources one by one.
    let writes: Vec<StatusWrite<'_>> = changes
        .save
        .iter()
        .map(StatusWrite::Save)
        .chain(changes.forget.iter().map(StatusWrite::Forget))
        .collect();
    if !writes.is_empty() {
        let answers = store.write_statuses(cluster, &writes).await;
        for (k, write) in writes.iter().enumerate() {
            let error = match answers.get(k) {
                Some(Ok(())) => continue,
                Some(Err(error)) => error.chain(),
                None => "the state table gave no answer for this status".to_string(),
            };
            match write {
                StatusWrite::Save(status) => {
                    tracing::warn!(cluster, binding = %status.binding, error = %error, "status not recorded")
                }
                StatusWrite::Forget(binding) => {
                    tracing::warn!(cluster, binding = %binding, error = %error, "stale status not removed")
                }
            }
        }
    }
    let mut may_publish = true;
    for status in &changes.save {
        if may_publish && let Err(error) = source.publish_status(status).await {
            // Most often RBAC: one line, then the resources are left alone for this run.
            tracing::info!(cluster, error = %error.chain(), "TargetGroupBinding status not written; the state table has it");
            may_publish = false;
        }
    }
}

/// Runs one cluster under its lease: observe → desire → plan → apply, then again (as a sweep)
/// while events arrived during the run, at most [`MAX_RUNS_PER_LEASE`] times. A busy lease
/// means another run is on it: nothing is done, and the holder is asked to run again. A run
/// stopped by its deadline lets the lease go at once, and does not go again.
// One more than clippy's limit: the progress counters are the run's, not an option.
#[allow(clippy::too_many_arguments)]
async fn run_under_lease<R, N, F, S>(
    cluster: &str,
    source: &Result<impl EndpointSource, Error>,
    ports: &Ports<'_, R, N, F, S>,
    policy: &Policy,
    scope: &Scope,
    options: &RunOptions,
    look: Look,
    progress: &Progress,
) -> Vec<ClusterOutcome>
where
    R: TargetRegistry,
    N: NetworkDirectory,
    F: FirewallRules,
    S: OwnershipStore,
{
    let lease = options.lease.as_ref().filter(|_| !options.dry_run);
    // The lease as held: the claim counts as its first renewal.
    let mut held: Option<HeldLease> = None;
    if let Some(terms) = lease {
        // Look first: most runs find nothing to change, and those need no lease (no write at
        // all). A run with work takes the lease, then observes again under it.
        let looked = match look {
            Look::First => {
                let reach = Reach {
                    deadline: None,
                    progress: Some(progress),
                };
                course::after_look(
                    run_once(cluster, source, ports, policy, scope, true, None, reach).await,
                )
            }
            Look::Skip => AfterLook::TakeLease(Box::new(ClusterOutcome::new(
                scope,
                Plan::empty(cluster),
                None,
            ))),
        };
        let outcome = match looked {
            AfterLook::Done(outcome) => Some(*outcome),
            AfterLook::TakeLease(look) => {
                let asked = Instant::now();
                let claim = ports.store.acquire_lease(cluster, terms).await;
                if matches!(claim, Ok(LeaseClaim::Acquired)) {
                    held = Some(HeldLease::since(terms, asked));
                }
                course::after_claim(*look, claim)
            }
        };
        if let Some(outcome) = outcome {
            log_outcome(&outcome);
            return vec![outcome];
        }
    }
    let mut outcomes = Vec::new();
    let mut scope = scope.clone();
    for run in 1..=MAX_RUNS_PER_LEASE {
        let mut outcome = run_once(
            cluster,
            source,
            ports,
            policy,
            &scope,
            options.dry_run,
            held.as_mut(),
            Reach {
                deadline: options.deadline,
                progress: Some(progress),
            },
        )
        .await;
        let stopped = outcome.report.as_ref().is_some_and(|r| r.stopped.is_some());
        let release = match lease {
            Some(terms) => {
                let asked = Instant::now();
                let may_run_again = run < MAX_RUNS_PER_LEASE && !stopped;
                let release = ports
                    .store
                    .release_lease(cluster, terms, may_run_again)
                    .await;
                // Kept for another run is renewed too.
                if let (Ok(LeaseRelease::RunAgain), Some(held)) = (&release, held.as_mut()) {
                    held.renewed_at = asked;
                }
                Some(release)
            }
            None => None,
        };
        let again = course::after_release(&mut outcome, release);
        log_outcome(&outcome);
        outcomes.push(outcome);
        if !again {
            break;
        }
        // What arrived meanwhile is unknown: the next run covers everything.
        tracing::info!(cluster, "events arrived during the run; running again");
        scope = Scope::Cluster;
    }
    outcomes
}

// One more than clippy's limit; the reach travels with the lease to apply.
#[allow(clippy::too_many_arguments)]
async fn run_once<R, N, F, S>(
    cluster: &str,
    source: &Result<impl EndpointSource, Error>,
    ports: &Ports<'_, R, N, F, S>,
    policy: &Policy,
    scope: &Scope,
    dry_run: bool,
    lease: Option<&mut HeldLease>,
    reach: Reach<'_>,
) -> ClusterOutcome
where
    R: TargetRegistry,
    N: NetworkDirectory,
    F: FirewallRules,
    S: OwnershipStore,
{
    let observed = match source {
        Ok(source) => observe_and_plan(cluster, source, ports, policy, scope)
            .await
            .map_err(|e| e.chain()),
        Err(error) => Err(error.chain()),
    };
    let (mut plan, statuses) = match observed {
        Ok((plan, statuses)) => (plan, Some(statuses)),
        Err(why) => (Plan::unreadable_cluster(cluster, why), None),
    };
    if let Some(progress) = reach.progress {
        progress.planned(plan.work());
    }
    let report = match source {
        Ok(source) if course::applies(dry_run, &plan) => {
            let mut report = apply_within(&plan, ports, lease, reach).await;
            set_gates(&plan, source, &mut report).await;
            Some(report)
        }
        _ => None,
    };
    if let Some(why) = report.as_ref().and_then(|r| r.gates_forbidden.as_deref()) {
        plan.note_gates_forbidden(why);
    }
    ClusterOutcome {
        stored_statuses: statuses,
        ..ClusterOutcome::new(scope, plan, report)
    }
}

/// One log line per change, failure and hold-back, with the fields an operator filters on.
fn log_outcome(outcome: &ClusterOutcome) {
    let ClusterOutcome { plan, report, .. } = outcome;
    let cluster = plan.cluster.as_str();
    if let Some(why) = &outcome.skipped {
        tracing::info!(cluster, scope = ?outcome.scope, "skipped: {why}");
        return;
    }
    if let Some(error) = &outcome.lease_error {
        tracing::warn!(cluster, error = %error, "lease not released");
    }
    if let Some(error) = &plan.cluster_error {
        tracing::warn!(cluster, error = %error, "cluster unreadable; nothing changed");
    }
    for failure in plan.failures() {
        tracing::warn!(cluster, binding = %failure.binding, error = %failure.error, "binding failed");
    }
    for blocked in plan.blocked() {
        tracing::warn!(cluster, binding = %blocked.binding, targets = blocked.targets.len(),
            target_group = %blocked.target_group.arn, reason = %blocked.reason, "held back");
    }
    match report {
        None => {
            for change in plan.changes() {
                tracing::info!(cluster, binding = %change.binding, action = ?change.action, target = %change.target,
                    target_group = %change.target_group.arn, reason = %change.reason, "planned (not applied)");
            }
        }
        Some(report) => {
            for change in report.done() {
                tracing::info!(cluster, binding = %change.binding, action = ?change.action, target = %change.target,
                    target_group = %change.target_group.arn, reason = %change.reason, "applied");
            }
            for failed in report.failed() {
                let change = &failed.change;
                tracing::warn!(cluster, binding = %change.binding, action = ?change.action, target = %change.target,
                    target_group = %change.target_group.arn, error = %failed.error, "failed");
            }
            let joined = |bindings: &BTreeSet<BindingId>| {
                bindings
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(",")
            };
            for rule in &report.rules_done {
                tracing::info!(cluster, action = %rule.action, group = %rule.group, permission = %rule.permission,
                    bindings = %joined(&rule.bindings), "applied");
            }
            for rule in &report.rules_failed {
                tracing::warn!(cluster, group = %rule.group, permission = %rule.permission,
                    bindings = %joined(&rule.bindings), error = %rule.error, "failed");
            }
        }
    }
    tracing::info!(cluster, "{}", plan.summary());
}

/// Reads what the scope covers, then plans; also gives the stored statuses, read with the
/// records. An error here means nothing is known well enough to change; its text is the
/// plan's `cluster_error`. Each read is asked for by a pure observe step, and its answer
/// interpreted by the next.
async fn observe_and_plan<R, N, F, S>(
    cluster: &str,
    source: &impl EndpointSource,
    ports: &Ports<'_, R, N, F, S>,
    policy: &Policy,
    scope: &Scope,
) -> Result<(Plan, Vec<BindingStatus>), Error>
where
    R: TargetRegistry,
    N: NetworkDirectory,
    F: FirewallRules,
    S: OwnershipStore,
{
    let snapshot = source.snapshot().await?;
    let groups = ports.registry.target_groups().await?;
    let stored = ports.store.load_state(cluster).await?;
    let records = stored.records;

    let declared = observe::bindings::declare(cluster, &snapshot, &groups);
    drop(groups);
    let reach = scope::reach(scope, &records, observe::bindings::services(&declared));
    let (resolved, coverage) = resolve(declared, reach, &records, ports.registry).await;
    let (resolved, records) = observe::bindings::narrow(&coverage, resolved, records);

    let vpcs = observe::desired::vpcs_to_read(&resolved);
    let vpc_cidrs = gather::vpc_cidrs(ports.network, &vpcs).await;
    let bindings = observe::desired::desire_bindings(resolved, &snapshot, &vpc_cidrs);

    let to_read = observe::targets::target_groups_to_read(&records, &bindings);
    let observed = gather::target_health(ports.registry, to_read)
        .await
        .into_iter()
        .map(|(group, read)| (group.arn, observe::targets::observation_of(read)))
        .collect();

    let rule_groups = coverage.rule_groups().cloned();
    // The network facts and the rule work end here: the plan needs only what they meant.
    let rules = {
        let work = observe::rules::work(&snapshot, &bindings, &records, rule_groups.as_ref());
        let facts = gather::network_facts(ports.network, work.facts_request()).await;
        let lbs = gather::load_balancers(ports.registry, work.load_balancers_request(&facts)).await;
        let subnets = observe::rules::subnets_to_read(&lbs);
        let cidrs = gather::subnet_cidrs(ports.network, &subnets).await;
        let wanted = work.want(
            cluster,
            policy.allow_world_open,
            &snapshot,
            &facts,
            &lbs,
            &cidrs,
        );
        let live = gather::ingress_rules(ports.firewall, wanted.groups_to_read()).await;
        work.interpret(wanted, live)
    };
    let resource_bindings_listed = snapshot.binding_crd_installed;
    let generations = observe::bindings::generations(&snapshot);
    drop(snapshot);

    let plan = plan(&PlanInput {
        cluster: cluster.to_string(),
        resource_bindings_listed,
        generations,
        bindings,
        records,
        observed,
        desired_rules: rules.desired,
        rule_failures: rules.failures,
        observed_rules: rules.observed,
        max_rules_per_family: policy.max_rules_per_family,
        revoke_world_open: policy.revoke_world_open,
        rule_groups,
    });
    Ok((plan, stored.statuses))
}

/// The run's bindings and closed coverage: bindings in other accounts are looked up only once
/// the coverage may reach them, a round of lookups at a time (a sweep's all in one round).
async fn resolve(
    declared: Vec<observe::bindings::Declared>,
    mut coverage: Coverage,
    records: &[OwnershipRecord],
    registry: &impl TargetRegistry,
) -> (Vec<Resolved>, Coverage) {
    let (mut resolved, mut waiting) = observe::bindings::split(declared);
    // Each round resolves at least one waiting binding or ends, so it ends.
    loop {
        let (widened, now, rest) = observe::bindings::widen(coverage, &resolved, records, waiting);
        (coverage, waiting) = (widened, rest);
        if now.is_empty() {
            return (resolved, coverage);
        }
        let lookups = observe::bindings::lookups(&now);
        let found = gather::foreign_target_groups(registry, &lookups).await;
        resolved.extend(observe::bindings::resolve_all(
            now.into_iter()
                .map(|b| observe::bindings::Declared::NeedsLookup(Box::new(b)))
                .collect(),
            found,
        ));
    }
}
