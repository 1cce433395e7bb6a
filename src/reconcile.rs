//! The one orchestration of a cluster's run: observe → desire → plan → apply. Everything that
//! decides lives in the pure stages; this only gathers their inputs and hands over the plan.

use crate::apply::apply;
use crate::binding::{
    self, Binding, BindingError, ResolvedBinding, TargetGroupSelector, resource, tags,
};
use crate::desire::desire;
use crate::desire::rules;
use crate::error::Error;
use crate::model::Peer;
use crate::model::{BindingId, TargetGroupRef, TargetType};
use crate::observe::{ClusterSnapshot, TargetGroupInfo};
use crate::plan::BindingFailure;
use crate::plan::rules::{DEFAULT_MAX_RULES_PER_FAMILY, DesiredRule};
use crate::plan::{BindingState, Observation, Plan, PlanInput, plan};
use crate::ports::{
    EndpointSource, FirewallRules, NetworkDirectory, OwnershipStore, Ports, TargetRegistry,
};
use crate::report::Report;
use futures::StreamExt;
use std::collections::{BTreeMap, BTreeSet};

/// Target-health reads in flight at once: well inside ELBv2's describe bucket (about 40 burst).
const CONCURRENT_READS: usize = 8;

/// One cluster's outcome: the plan, and what apply did (none on a dry run or when nothing
/// could be planned).
#[derive(Debug, Clone, serde::Serialize)]
pub struct ClusterOutcome {
    pub plan: Plan,
    pub report: Option<Report>,
}

/// Settings that shape plans, from configuration.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Inbound rules per security group and address family.
    pub max_rules_per_family: usize,
    /// Whether `0.0.0.0/0` and `::/0` peers may be opened.
    pub allow_world_open: bool,
    /// Whether someone else's world-open rules on ports we manage are revoked (the one
    /// exception to the ownership rule), not just reported.
    pub revoke_world_open: bool,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            max_rules_per_family: DEFAULT_MAX_RULES_PER_FAMILY,
            allow_world_open: false,
            revoke_world_open: false,
        }
    }
}

pub async fn reconcile_cluster<R, N, F, S>(
    cluster: &str,
    source: Result<impl EndpointSource, Error>,
    ports: &Ports<'_, R, N, F, S>,
    policy: &Policy,
    dry_run: bool,
) -> ClusterOutcome
where
    R: TargetRegistry,
    N: NetworkDirectory,
    F: FirewallRules,
    S: OwnershipStore,
{
    let plan = match observe_and_plan(cluster, source, ports, policy).await {
        Ok(plan) => plan,
        Err(error) => Plan::unreadable_cluster(cluster, error.chain()),
    };
    let report = if dry_run || plan.cluster_error.is_some() {
        None
    } else {
        Some(apply(&plan, ports).await)
    };
    let outcome = ClusterOutcome { plan, report };
    log_outcome(&outcome);
    outcome
}

/// One log line per change, failure and hold-back, with the fields an operator filters on.
fn log_outcome(ClusterOutcome { plan, report }: &ClusterOutcome) {
    let cluster = plan.cluster.as_str();
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
        }
    }
    tracing::info!(cluster, "{}", plan.summary());
}

/// Reads everything, then plans. An error here means nothing is known well enough to change.
async fn observe_and_plan<R, N, F, S>(
    cluster: &str,
    source: Result<impl EndpointSource, Error>,
    ports: &Ports<'_, R, N, F, S>,
    policy: &Policy,
) -> Result<Plan, Error>
where
    R: TargetRegistry,
    N: NetworkDirectory,
    F: FirewallRules,
    S: OwnershipStore,
{
    let snapshot = source?.snapshot().await?;
    let groups = ports.registry.target_groups().await?;
    let records = ports.store.load(cluster).await?;

    let resolved = resolve_bindings(cluster, &snapshot, &groups, ports.registry).await;
    let bindings = desire_bindings(resolved, &snapshot, ports.network).await;
    let mut to_read: BTreeSet<TargetGroupRef> =
        records.iter().map(|r| r.target_group.clone()).collect();
    to_read.extend(bindings.iter().filter_map(|b| match b {
        BindingState::Ready { binding, .. } => Some(binding.target_group.clone()),
        BindingState::Failed { .. } => None,
    }));
    let observed = read_targets(to_read, ports.registry).await;
    let rules = observe_rules(cluster, &snapshot, &bindings, &records, ports, policy).await;

    Ok(plan(&PlanInput {
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
    }))
}

/// What the rule half of the plan is computed from.
#[derive(Default)]
struct RuleObservation {
    desired: Vec<DesiredRule>,
    failures: Vec<BindingFailure>,
    observed: BTreeMap<String, Vec<crate::observe::ObservedRule>>,
}

/// Desired rules of every binding with `networking`, validated, and the live rules of every
/// group they are (or were last time) in. Costs nothing when no binding manages rules.
async fn observe_rules<R, N, F, S>(
    cluster: &str,
    snapshot: &ClusterSnapshot,
    bindings: &[BindingState],
    records: &[crate::ownership::OwnershipRecord],
    ports: &Ports<'_, R, N, F, S>,
    policy: &Policy,
) -> RuleObservation
where
    R: TargetRegistry,
    N: NetworkDirectory,
    F: FirewallRules,
{
    let mut out = RuleObservation::default();
    let networked: Vec<(&ResolvedBinding, &crate::desire::DesiredTargets)> = bindings
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
                .and_then(crate::desire::instance::instance_id)
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

    // Every referenced group must exist before anything is written (one batched read).
    let peers: Vec<String> = per_binding
        .iter()
        .flat_map(|(_, rules)| rules.iter())
        .filter_map(|r| match &r.permission.peer {
            Peer::SecurityGroup(id) => Some(id.clone()),
            _ => None,
        })
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let existing = if peers.is_empty() {
        Ok(BTreeSet::new())
    } else {
        ports.firewall.existing_groups(&peers).await
    };
    match existing {
        Err(error) => {
            fail_all(&mut out, &error.chain());
            return out;
        }
        Ok(existing) => {
            for (binding, rules) in per_binding {
                match rules::require_existing_peers(rules, &existing) {
                    Ok(rules) => out.desired.extend(rules),
                    Err(error) => out.failures.push(BindingFailure {
                        binding: binding.binding.id.clone(),
                        error,
                    }),
                }
            }
        }
    }

    let mut groups: BTreeSet<String> = out.desired.iter().map(|r| r.group.clone()).collect();
    groups.extend(recorded_groups);
    let groups: Vec<String> = groups.into_iter().collect();
    match ports.firewall.ingress_rules(&groups).await {
        Ok(observed) => out.observed = observed,
        // Unobserved groups are not planned: nothing is authorized or revoked there.
        Err(error) => fail_all(&mut out, &error.chain()),
    }
    out
}

/// Where each load balancer's traffic and health checks come from, by ARN: its groups, or an
/// NLB's subnet CIDRs. Cross-account target groups' load balancers are not visible here.
async fn load_balancer_peers<R, N, F, S>(
    networked: &[(&ResolvedBinding, &crate::desire::DesiredTargets)],
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

/// Every declared binding, validated and checked against its target group — or why not.
async fn resolve_bindings(
    cluster: &str,
    snapshot: &ClusterSnapshot,
    groups: &[TargetGroupInfo],
    registry: &impl TargetRegistry,
) -> Vec<Resolved> {
    let declared = declared_bindings(cluster, snapshot, groups);
    let mut resolved = Vec::with_capacity(declared.len());
    for (id, declared) in declared {
        resolved.push(match declared {
            Ok(binding) => match find_target_group(&binding, groups, registry).await {
                Ok(group) => binding::resolve(&binding, &group).map_err(|e| (id, e)),
                Err(error) => Err((id, error)),
            },
            Err(error) => Err((id, error)),
        });
    }
    resolved
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
