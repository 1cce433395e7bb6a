//! The one orchestration of a cluster's run: observe → desire → plan → apply. Everything that
//! decides lives in the pure stages; this only gathers their inputs and hands over the plan.

use crate::error::Error;
use crate::model::Peer;
use crate::model::{BindingId, TargetGroupRef, TargetType};
use crate::model::{aws::TargetGroupInfo, cluster::ClusterSnapshot};
use crate::ports::{
    EndpointSource, FirewallRules, NetworkDirectory, OwnershipStore, Ports, TargetRegistry,
};
use crate::pure::binding::{
    self, Binding, BindingError, ResolvedBinding, TargetGroupSelector, resource, tags,
};
use crate::pure::desire::desire;
use crate::pure::desire::rules;
use crate::pure::outcome::ClusterOutcome;
use crate::pure::plan::BindingFailure;
use crate::pure::plan::Policy;
use crate::pure::plan::rules::DesiredRule;
use crate::pure::plan::{BindingState, Observation, Plan, PlanInput, plan};
use crate::pure::report::Report;
use crate::pure::scope::{self, Coverage, Scope};
use crate::pure::status;
use crate::shell::apply::apply;
use crate::state::lease::{LeaseClaim, LeaseRelease, LeaseTerms, MAX_RUNS_PER_LEASE};
use crate::state::ownership::OwnershipRecord;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};

/// Target-health reads in flight at once: well inside ELBv2's describe bucket (about 40 burst).
const CONCURRENT_READS: usize = 8;

/// How a run goes: for real or as a dry run, and under which lease (none only in tests and
/// dry runs: a dry run writes nothing, so it needs none).
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    pub lease: Option<LeaseTerms>,
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
    if *scope == Scope::Cluster {
        return None;
    }
    match ports.store.load(cluster).await {
        Ok(records) => match scope::seed(scope, &records) {
            Some(coverage) if coverage.is_empty() => Some(ClusterOutcome::skipped(
                cluster,
                scope,
                "no binding of this cluster has recorded rules or targets there".into(),
            )),
            _ => None,
        },
        Err(error) => Some(ClusterOutcome::new(
            scope,
            Plan::unreadable_cluster(cluster, error.chain()),
            None,
        )),
    }
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
    let outcomes = run_under_lease(cluster, &source, ports, policy, scope, options).await;
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
    let mut may_publish = true;
    for status in &changes.save {
        if let Err(error) = store.save_status(cluster, status).await {
            tracing::warn!(cluster, binding = %status.binding, error = %error.chain(), "status not recorded");
        }
        if may_publish && let Err(error) = source.publish_status(status).await {
            // Most often RBAC: one line, then the resources are left alone for this run.
            tracing::info!(cluster, error = %error.chain(), "TargetGroupBinding status not written; the state table has it");
            may_publish = false;
        }
    }
    for binding in &changes.forget {
        if let Err(error) = store.forget_status(cluster, binding).await {
            tracing::warn!(cluster, binding = %binding, error = %error.chain(), "stale status not removed");
        }
    }
}

/// Runs one cluster under its lease: observe → desire → plan → apply, then again (as a sweep)
/// while events arrived during the run, at most [`MAX_RUNS_PER_LEASE`] times. A busy lease
/// means another run is on it: nothing is done, and the holder is asked to run again.
async fn run_under_lease<R, N, F, S>(
    cluster: &str,
    source: &Result<impl EndpointSource, Error>,
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
    let lease = options.lease.as_ref().filter(|_| !options.dry_run);
    if let Some(terms) = lease {
        // Look first: most runs find nothing to change, and those need no lease (no write at
        // all). A run with work takes the lease, then observes again under it.
        let look = run_once(cluster, source, ports, policy, scope, true, None).await;
        let outcome = if look.plan.cluster_error.is_some() {
            Some(look)
        } else if !look.plan.has_writes() {
            let report = Some(Report::new(cluster));
            Some(ClusterOutcome { report, ..look })
        } else {
            match ports.store.acquire_lease(cluster, terms).await {
                Ok(LeaseClaim::Acquired) => None,
                Ok(LeaseClaim::Busy { holder }) => Some(ClusterOutcome {
                    skipped: Some(format!(
                        "another run ({holder}) holds the cluster's lease; it will run again"
                    )),
                    ..look
                }),
                Err(error) => Some(ClusterOutcome::new(
                    scope,
                    Plan::unreadable_cluster(cluster, error.chain()),
                    None,
                )),
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
            lease,
        )
        .await;
        let again = match lease {
            None => false,
            Some(terms) => match ports
                .store
                .release_lease(cluster, terms, run < MAX_RUNS_PER_LEASE)
                .await
            {
                Ok(LeaseRelease::Released) => false,
                Ok(LeaseRelease::RunAgain) => true,
                Ok(LeaseRelease::Lost) => {
                    outcome.lease_error = Some(
                        "the lease lapsed and passed to another run before it was let go".into(),
                    );
                    false
                }
                Err(error) => {
                    outcome.lease_error = Some(error.chain());
                    false
                }
            },
        };
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

async fn run_once<R, N, F, S>(
    cluster: &str,
    source: &Result<impl EndpointSource, Error>,
    ports: &Ports<'_, R, N, F, S>,
    policy: &Policy,
    scope: &Scope,
    dry_run: bool,
    lease: Option<&LeaseTerms>,
) -> ClusterOutcome
where
    R: TargetRegistry,
    N: NetworkDirectory,
    F: FirewallRules,
    S: OwnershipStore,
{
    let (plan, statuses) = match observe_and_plan(cluster, source, ports, policy, scope).await {
        Ok((plan, statuses)) => (plan, Some(statuses)),
        Err(error) => (Plan::unreadable_cluster(cluster, error), None),
    };
    let report = if dry_run || plan.cluster_error.is_some() {
        None
    } else {
        Some(apply(&plan, ports, lease).await)
    };
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
    for failure in &plan.failures {
        tracing::warn!(cluster, binding = %failure.binding, error = %failure.error, "binding failed");
    }
    for blocked in &plan.blocked {
        tracing::warn!(cluster, binding = %blocked.binding, targets = blocked.targets.len(),
            target_group = %blocked.target_group.arn, reason = %blocked.reason, "held back");
    }
    match report {
        None => {
            for change in &plan.changes {
                tracing::info!(cluster, binding = %change.binding, action = ?change.action, target = %change.target,
                    target_group = %change.target_group.arn, reason = %change.reason, "planned (not applied)");
            }
        }
        Some(report) => {
            for change in &report.done {
                tracing::info!(cluster, binding = %change.binding, action = ?change.action, target = %change.target,
                    target_group = %change.target_group.arn, reason = %change.reason, "applied");
            }
            for failed in &report.failed {
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
                tracing::info!(cluster, action = rule.action, group = %rule.group, permission = %rule.permission,
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
/// records. An error here means nothing is known well enough to change.
async fn observe_and_plan<R, N, F, S>(
    cluster: &str,
    source: &Result<impl EndpointSource, Error>,
    ports: &Ports<'_, R, N, F, S>,
    policy: &Policy,
    scope: &Scope,
) -> Result<(Plan, Vec<crate::state::status::BindingStatus>), String>
where
    R: TargetRegistry,
    N: NetworkDirectory,
    F: FirewallRules,
    S: OwnershipStore,
{
    let source = source.as_ref().map_err(Error::chain)?;
    let snapshot = source.snapshot().await.map_err(|e| e.chain())?;
    let groups = ports
        .registry
        .target_groups()
        .await
        .map_err(|e| e.chain())?;
    let stored = ports
        .store
        .load_state(cluster)
        .await
        .map_err(|e| e.chain())?;
    let records = stored.records;

    let seeded = scope::seed(scope, &records);
    let (resolved, coverage) = resolve_bindings(
        cluster,
        &snapshot,
        &groups,
        &records,
        seeded,
        ports.registry,
    )
    .await;
    let (resolved, records) = match &coverage {
        None => (resolved, records),
        Some(coverage) => narrow(coverage, resolved, records),
    };
    let bindings = desire_bindings(resolved, &snapshot, ports.network).await;
    let mut to_read: BTreeSet<TargetGroupRef> =
        records.iter().map(|r| r.target_group.clone()).collect();
    to_read.extend(bindings.iter().filter_map(|b| match b {
        BindingState::Ready { binding, .. } => Some(binding.target_group.clone()),
        BindingState::Failed { .. } => None,
    }));
    let observed = read_targets(to_read, ports.registry).await;
    let rule_groups = coverage.map(|c| c.rule_groups);
    let rules = observe_rules(
        cluster,
        &snapshot,
        &bindings,
        &records,
        rule_groups.as_ref(),
        ports,
        policy,
    )
    .await;

    let plan = plan(&PlanInput {
        cluster: cluster.to_string(),
        bindings,
        records,
        observed,
        resource_bindings_listed: snapshot.binding_crd_installed,
        desired_rules: rules.desired,
        rule_failures: rules.failures,
        observed_rules: rules.observed,
        max_rules_per_family: policy.max_rules_per_family,
        revoke_world_open: policy.revoke_world_open,
        rule_groups,
        generations: snapshot
            .binding_resources
            .iter()
            .filter_map(|r| Some((BindingId::resource(&r.namespace, &r.name), r.generation?)))
            .collect(),
    });
    Ok((plan, stored.statuses))
}

/// Only the covered bindings and their records.
fn narrow(
    coverage: &Coverage,
    resolved: Vec<Resolved>,
    records: Vec<OwnershipRecord>,
) -> (Vec<Resolved>, Vec<OwnershipRecord>) {
    let resolved = resolved
        .into_iter()
        .filter(|r| match r {
            Ok(b) => coverage.covers(&b.binding.id, &b.target_group.arn),
            Err((id, _)) => coverage.bindings.contains(id),
        })
        .collect();
    let records = records
        .into_iter()
        .filter(|r| coverage.covers(&r.binding, &r.target_group.arn))
        .collect();
    (resolved, records)
}

/// What the rule half of the plan is computed from.
#[derive(Default)]
struct RuleObservation {
    desired: Vec<DesiredRule>,
    failures: Vec<BindingFailure>,
    observed: BTreeMap<String, Vec<crate::model::aws::ObservedRule>>,
}

/// Desired rules of every binding with `networking`, validated, and the live rules of every
/// group they are (or were last time) in — of `rule_groups` only, when given. Costs nothing
/// when no binding manages rules.
async fn observe_rules<R, N, F, S>(
    cluster: &str,
    snapshot: &ClusterSnapshot,
    bindings: &[BindingState],
    records: &[OwnershipRecord],
    rule_groups: Option<&BTreeSet<String>>,
    ports: &Ports<'_, R, N, F, S>,
    policy: &Policy,
) -> RuleObservation
where
    R: TargetRegistry,
    N: NetworkDirectory,
    F: FirewallRules,
{
    let mut out = RuleObservation::default();
    let in_scope = |group: &str| rule_groups.is_none_or(|g| g.contains(group));
    if rule_groups.is_some_and(BTreeSet::is_empty) {
        return out;
    }
    let networked: Vec<(&ResolvedBinding, &crate::pure::desire::DesiredTargets)> = bindings
        .iter()
        .filter_map(|b| match b {
            BindingState::Ready { binding, desired }
                if binding.binding.networking.is_some() || binding.binding.derive_ingress =>
            {
                Some((binding.as_ref(), desired))
            }
            _ => None,
        })
        .collect();
    let recorded_groups: BTreeSet<String> = records
        .iter()
        .flat_map(|r| r.rules.iter().map(|g| g.group.clone()))
        .filter(|g| in_scope(g))
        .collect();
    if networked.is_empty() && recorded_groups.is_empty() {
        return out;
    }
    let fail_all = |out: &mut RuleObservation, why: &str| {
        for (binding, _) in &networked {
            out.failures.push(BindingFailure {
                binding: binding.binding.id.clone(),
                error: BindingError::new("spec.networking", why.to_string()),
            });
        }
        out.desired.clear();
    };

    let instances: Vec<String> = snapshot
        .nodes
        .iter()
        .filter_map(|n| {
            n.provider_id
                .as_deref()
                .and_then(crate::pure::desire::instance::instance_id)
        })
        .collect();
    let ips: Vec<String> = networked
        .iter()
        .filter(|(b, _)| b.target_type == TargetType::Ip)
        .flat_map(|(_, d)| d.targets.keys().map(|t| t.id.clone()))
        .collect();
    let facts = if networked.is_empty() {
        Ok(Default::default())
    } else {
        ports.network.network_facts(&instances, &ips).await
    };
    let facts = match facts {
        Ok(facts) => facts,
        Err(error) => {
            fail_all(&mut out, &error.chain());
            Default::default()
        }
    };
    let lb_peers = if out.failures.is_empty() {
        match load_balancer_peers(&networked, ports).await {
            Ok(peers) => peers,
            Err(error) => {
                fail_all(&mut out, &error.chain());
                BTreeMap::new()
            }
        }
    } else {
        BTreeMap::new()
    };
    let pod_ports = rules::pod_ports(&snapshot.pods);
    let mut per_binding: Vec<(&ResolvedBinding, Vec<DesiredRule>)> = Vec::new();
    if out.failures.is_empty() {
        for (binding, desired) in &networked {
            let peers: Vec<Peer> = binding
                .traffic
                .load_balancer_arns
                .iter()
                .flat_map(|arn| lb_peers.get(arn).into_iter().flatten())
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            let computed =
                rules::desired_rules(binding, desired, &facts, &pod_ports, &peers, cluster)
                    .and_then(|rules| {
                        rules::refuse_world_open(binding, rules, policy.allow_world_open)
                    });
            match computed {
                Ok(rules) => per_binding.push((binding, rules)),
                Err(error) => out.failures.push(BindingFailure {
                    binding: binding.binding.id.clone(),
                    error,
                }),
            }
        }
    }

    // One batched read of the rules of every group that may be written, and of every peer
    // group: a group absent from the answer does not exist, so a bad reference is found
    // before anything is written (seed 001), without a read of its own.
    let peers: BTreeSet<String> = per_binding
        .iter()
        .flat_map(|(_, rules)| rules.iter())
        .filter_map(|r| match &r.permission.peer {
            Peer::SecurityGroup(id) => Some(id.clone()),
            _ => None,
        })
        .collect();
    let to_read: Vec<String> = per_binding
        .iter()
        .flat_map(|(_, rules)| rules.iter())
        .map(|r| r.group.clone())
        .filter(|g| in_scope(g))
        .chain(recorded_groups.iter().cloned())
        .chain(peers)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut observed = if to_read.is_empty() {
        BTreeMap::new()
    } else {
        match ports.firewall.ingress_rules(&to_read).await {
            Ok(observed) => observed,
            // Unobserved groups are not planned: nothing is authorized or revoked there.
            Err(error) => {
                fail_all(&mut out, &error.chain());
                return out;
            }
        }
    };
    let existing: BTreeSet<String> = observed.keys().cloned().collect();
    for (binding, rules) in per_binding {
        let rules = rules.into_iter().filter(|r| in_scope(&r.group)).collect();
        match rules::require_existing_peers(rules, &existing) {
            Ok(rules) => out.desired.extend(rules),
            Err(error) => out.failures.push(BindingFailure {
                binding: binding.binding.id.clone(),
                error,
            }),
        }
    }
    // The plan sees the groups it may write to: the desired ones and the recorded ones.
    let mut planned = recorded_groups;
    planned.extend(out.desired.iter().map(|r| r.group.clone()));
    observed.retain(|group, _| planned.contains(group));
    out.observed = observed;
    out
}

/// Where each load balancer's traffic and health checks come from, by ARN: its groups, or an
/// NLB's subnet CIDRs. Cross-account target groups' load balancers are not visible here.
async fn load_balancer_peers<R, N, F, S>(
    networked: &[(&ResolvedBinding, &crate::pure::desire::DesiredTargets)],
    ports: &Ports<'_, R, N, F, S>,
) -> Result<BTreeMap<String, Vec<Peer>>, Error>
where
    R: TargetRegistry,
    N: NetworkDirectory,
{
    let arns: Vec<String> = networked
        .iter()
        .filter(|(b, _)| b.binding.assume_role.is_none())
        .flat_map(|(b, _)| b.traffic.load_balancer_arns.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    if arns.is_empty() {
        return Ok(BTreeMap::new());
    }
    let lbs = ports.registry.load_balancers(&arns).await?;
    let subnets: Vec<String> = lbs
        .iter()
        .filter(|lb| lb.security_groups.is_empty())
        .flat_map(|lb| lb.subnets.iter().cloned())
        .collect();
    let cidrs = if subnets.is_empty() {
        BTreeMap::new()
    } else {
        ports.network.subnet_cidrs(&subnets).await?
    };
    Ok(lbs
        .iter()
        .map(|lb| (lb.arn.clone(), rules::load_balancer_peers(lb, &cidrs)))
        .collect())
}

type Resolved = Result<ResolvedBinding, (BindingId, BindingError)>;

/// Every declared binding, validated and checked against its target group — or why not —
/// and, for a narrowed run, its closed coverage. Bindings in other accounts cost a lookup
/// each, so a narrowed run resolves them only once they may be covered.
async fn resolve_bindings(
    cluster: &str,
    snapshot: &ClusterSnapshot,
    groups: &[TargetGroupInfo],
    records: &[OwnershipRecord],
    seeded: Option<Coverage>,
    registry: &impl TargetRegistry,
) -> (Vec<Resolved>, Option<Coverage>) {
    let mut resolved = Vec::new();
    let mut later = Vec::new();
    for (id, declared) in declared_bindings(cluster, snapshot, groups) {
        match declared {
            Err(error) => resolved.push(Err((id, error))),
            Ok(binding) if binding.assume_role.is_some() && seeded.is_some() => later.push(binding),
            Ok(binding) => resolved.push(resolve_one(binding, groups, registry).await),
        }
    }
    let Some(mut coverage) = seeded else {
        return (resolved, None);
    };
    // Each pass resolves at least one waiting binding or stops.
    loop {
        let edges: Vec<(BindingId, String)> = resolved
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|b| (b.binding.id.clone(), b.target_group.arn.clone()))
            .chain(
                records
                    .iter()
                    .map(|r| (r.binding.clone(), r.target_group.arn.clone())),
            )
            .collect();
        coverage = scope::close(coverage, &edges);
        let (now, wait): (Vec<Binding>, Vec<Binding>) =
            later.into_iter().partition(|b| coverage.may_cover(b));
        later = wait;
        if now.is_empty() {
            return (resolved, Some(coverage));
        }
        for binding in now {
            coverage.bindings.insert(binding.id.clone());
            resolved.push(resolve_one(binding, groups, registry).await);
        }
    }
}

async fn resolve_one(
    binding: Binding,
    groups: &[TargetGroupInfo],
    registry: &impl TargetRegistry,
) -> Resolved {
    let id = binding.id.clone();
    match find_target_group(&binding, groups, registry).await {
        Ok(group) => binding::resolve(&binding, &group).map_err(|e| (id, e)),
        Err(error) => Err((id, error)),
    }
}

/// The desired targets of every resolved binding. ip targets need their VPC's CIDRs (one
/// batched read): IPs outside it are registered in zone `all`.
async fn desire_bindings(
    resolved: Vec<Resolved>,
    snapshot: &ClusterSnapshot,
    network: &impl NetworkDirectory,
) -> Vec<BindingState> {
    let vpcs: Vec<String> = resolved
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .filter(|b| b.target_type == TargetType::Ip && b.binding.assume_role.is_none())
        .filter_map(|b| b.vpc_id.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let vpc_cidrs = network.vpc_cidrs(&vpcs).await.map_err(|e| e.chain());
    resolved
        .into_iter()
        .map(|outcome| {
            let binding = match outcome {
                Ok(binding) => binding,
                Err((id, error)) => return BindingState::Failed { id, error },
            };
            // `None`: a VPC we cannot see (another account's) holds none of our pod IPs.
            let cidrs = match (&vpc_cidrs, &binding.vpc_id) {
                _ if binding.target_type == TargetType::Instance => Ok(Some(Vec::new())),
                _ if binding.binding.assume_role.is_some() => Ok(None),
                (Ok(map), Some(vpc)) => Ok(map.get(vpc).cloned()),
                (Ok(_), None) => Ok(None),
                (Err(why), _) => Err(BindingError::new(
                    "",
                    format!("reading the target group's VPC: {why}"),
                )),
            };
            match cidrs.and_then(|cidrs| desire(&binding, snapshot, cidrs.as_deref())) {
                Ok(desired) => BindingState::Ready {
                    binding: Box::new(binding),
                    desired,
                },
                Err(error) => BindingState::Failed {
                    id: binding.binding.id.clone(),
                    error,
                },
            }
        })
        .collect()
}

/// Target health of every group, read fresh, a few at a time.
async fn read_targets(
    groups: BTreeSet<TargetGroupRef>,
    registry: &impl TargetRegistry,
) -> BTreeMap<String, Observation> {
    futures::stream::iter(groups)
        .map(|group| async move {
            let observation = match registry.target_health(&group).await {
                Ok(targets) => Observation::Targets(targets),
                Err(Error::TargetGroupNotFound { .. }) => Observation::NotFound,
                Err(error) => Observation::Unreadable(error.chain()),
            };
            (group.arn, observation)
        })
        .buffer_unordered(CONCURRENT_READS)
        .collect()
        .await
}

/// Every binding the cluster declares, from both sources, each validated on its own.
fn declared_bindings(
    cluster: &str,
    snapshot: &ClusterSnapshot,
    groups: &[TargetGroupInfo],
) -> Vec<(BindingId, Result<Binding, BindingError>)> {
    let from_resources = snapshot.binding_resources.iter().map(|r| {
        (
            BindingId::resource(&r.namespace, &r.name),
            resource::binding_from_resource(r),
        )
    });
    let from_tags = groups
        .iter()
        .filter_map(|g| tags::binding_from_tags(g, cluster).map(|b| (BindingId::tags(&g.name), b)));
    from_resources.chain(from_tags).collect()
}

async fn find_target_group(
    binding: &Binding,
    groups: &[TargetGroupInfo],
    registry: &impl TargetRegistry,
) -> Result<TargetGroupInfo, BindingError> {
    let field = match (&binding.id, &binding.target_group) {
        (BindingId::Tags { .. }, _) => "",
        (_, TargetGroupSelector::Arn(_)) => "spec.targetGroupARN",
        (_, TargetGroupSelector::Name(_)) => "spec.targetGroupName",
    };
    let not_found = || {
        BindingError::new(
            field,
            format!("target group {} not found", binding.target_group),
        )
    };
    if let Some(role) = &binding.assume_role {
        return match registry
            .foreign_target_group(&binding.target_group, role)
            .await
        {
            Ok(Some(group)) => Ok(group),
            Ok(None) => Err(not_found()),
            Err(error) => Err(BindingError::new(field, error.chain())),
        };
    }
    groups
        .iter()
        .find(|g| match &binding.target_group {
            TargetGroupSelector::Arn(arn) => &g.arn == arn,
            TargetGroupSelector::Name(name) => &g.name == name,
        })
        .cloned()
        .ok_or_else(not_found)
}
