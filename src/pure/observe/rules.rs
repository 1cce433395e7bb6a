//! The rule half of a run's observation. Rules depend on three rounds of reads: the network
//! facts (which interface and group guards each target) and the load balancers (where traffic
//! comes from); the subnets of NLBs without groups; then, once the desired rules are known,
//! the live rules of every group they touch, were recorded in, or name as a peer. Nothing is
//! read when no binding manages rules and none were recorded.

use crate::Error;
use crate::model::Peer;
use crate::model::SecurityGroupId;
use crate::model::TargetType;
use crate::model::aws::{LoadBalancerInfo, ObservedRule};
use crate::model::cluster::ClusterSnapshot;
use crate::model::network::NetworkFacts;
use crate::pure::binding::{BindingError, ResolvedBinding};
use crate::pure::desire::DesiredTargets;
use crate::pure::desire::nodes::instance_id;
use crate::pure::desire::rules::{self, DesiredRule};
use crate::pure::plan::{BindingFailure, BindingState};
use crate::state::ownership::OwnershipRecord;
use foldhash::HashSet;
use ipnet::IpNet;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// What the rule half of the plan is computed from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleObservation {
    /// The validated rules of every binding whose rules could be computed.
    pub desired: Vec<DesiredRule>,
    /// Bindings whose rules could not be computed: their rules of last time are kept.
    pub failures: Vec<BindingFailure>,
    /// By group id: the live rules of the groups the plan may write to.
    pub observed: BTreeMap<SecurityGroupId, Vec<ObservedRule>>,
}

/// The network facts to read: these instances' interfaces and the interfaces holding these IPs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FactsRequest {
    pub instances: Vec<String>,
    /// Shared with the targets they come from: tens of thousands of them.
    pub ips: Vec<Arc<str>>,
}

/// A run's rule work: which bindings manage rules, and which groups are in play.
#[derive(Debug, Clone)]
pub struct RuleWork<'a> {
    networked: Vec<(&'a ResolvedBinding, &'a DesiredTargets)>,
    /// Groups our records put rules in, within the run's rule groups.
    recorded_groups: BTreeSet<SecurityGroupId>,
    rule_groups: Option<&'a BTreeSet<SecurityGroupId>>,
    facts: Option<FactsRequest>,
    load_balancers: Vec<String>,
}

/// The rules, computed from the first reads, and the groups whose live rules are needed.
#[derive(Debug, Clone, Default)]
pub struct WantedRules {
    per_binding: Vec<(crate::model::BindingId, Vec<DesiredRule>)>,
    failures: Vec<BindingFailure>,
    groups_to_read: Vec<SecurityGroupId>,
}

impl WantedRules {
    /// Every group whose live rules are needed, read in one batch: a group absent from the
    /// answer does not exist, so a bad peer is found before anything is written (seed 001).
    pub fn groups_to_read(&self) -> &[SecurityGroupId] {
        &self.groups_to_read
    }
}

/// Works out the rule half's first reads. `rule_groups` narrows the groups planned (`None`:
/// all); an empty set means no rule is planned at all.
pub fn work<'a>(
    snapshot: &ClusterSnapshot,
    bindings: &'a [BindingState],
    records: &[OwnershipRecord],
    rule_groups: Option<&'a BTreeSet<SecurityGroupId>>,
) -> RuleWork<'a> {
    let idle = RuleWork {
        networked: Vec::new(),
        recorded_groups: BTreeSet::new(),
        rule_groups,
        facts: None,
        load_balancers: Vec::new(),
    };
    if rule_groups.is_some_and(BTreeSet::is_empty) {
        return idle;
    }
    let in_scope = |group: &str| rule_groups.is_none_or(|g| g.contains(group));
    let networked: Vec<(&ResolvedBinding, &DesiredTargets)> = bindings
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
    let recorded_groups: BTreeSet<SecurityGroupId> = records
        .iter()
        .flat_map(|r| r.rules.iter().map(|g| g.group.clone()))
        .filter(|g| in_scope(g))
        .collect();
    let facts = (!networked.is_empty()).then(|| FactsRequest {
        instances: snapshot
            .nodes
            .iter()
            .filter_map(|n| n.provider_id.as_deref().and_then(instance_id))
            .map(str::to_string)
            .collect(),
        ips: networked
            .iter()
            .filter(|(b, _)| b.target_type == TargetType::Ip)
            .flat_map(|(_, d)| d.targets.keys().map(|t| t.id.clone()))
            .collect(),
    });
    // Cross-account target groups' load balancers are not visible here.
    let load_balancers = networked
        .iter()
        .filter(|(b, _)| b.binding.assume_role.is_none())
        .flat_map(|(b, _)| b.traffic.load_balancer_arns.iter().cloned())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    RuleWork {
        networked,
        recorded_groups,
        facts,
        load_balancers,
        ..idle
    }
}

/// The subnets whose CIDRs are the peers of NLBs without security groups.
pub fn subnets_to_read(load_balancers: &Result<Vec<LoadBalancerInfo>, Error>) -> Vec<String> {
    load_balancers
        .iter()
        .flatten()
        .filter(|lb| lb.security_groups.is_empty())
        .flat_map(|lb| lb.subnets.iter().cloned())
        .collect()
}

impl RuleWork<'_> {
    /// The network facts to read; `None` when no binding manages rules.
    pub fn facts_request(&self) -> Option<&FactsRequest> {
        self.facts.as_ref()
    }

    /// The load balancers to read, once the facts could be read; none when they could not
    /// (the rules fail anyway) or no binding's load balancer is visible.
    pub fn load_balancers_request(&self, facts: &Result<NetworkFacts, Error>) -> &[String] {
        match facts {
            Ok(_) => &self.load_balancers,
            Err(_) => &[],
        }
    }

    fn in_scope(&self, group: &str) -> bool {
        self.rule_groups.is_none_or(|g| g.contains(group))
    }

    fn fail_all(&self, failures: &mut Vec<BindingFailure>, why: &str) {
        failures.extend(self.networked.iter().map(|(binding, _)| BindingFailure {
            binding: binding.binding.id.clone(),
            error: BindingError::new("spec.networking", why.to_string()),
        }));
    }

    /// Each binding's desired rules, refused when world-open without leave; every networked
    /// binding fails when the facts or load balancers could not be read.
    pub fn want(
        &self,
        cluster: &str,
        allow_world_open: bool,
        snapshot: &ClusterSnapshot,
        facts: &Result<NetworkFacts, Error>,
        load_balancers: &Result<Vec<LoadBalancerInfo>, Error>,
        subnet_cidrs: &Result<BTreeMap<String, Vec<IpNet>>, Error>,
    ) -> WantedRules {
        let mut out = WantedRules::default();
        if self.networked.is_empty() && self.recorded_groups.is_empty() {
            return out;
        }
        let peers_by_lb = match (facts, load_balancers, subnet_cidrs) {
            (Err(error), _, _) | (Ok(_), Err(error), _) | (Ok(_), Ok(_), Err(error)) => {
                self.fail_all(&mut out.failures, &error.chain());
                None
            }
            (Ok(facts), Ok(lbs), Ok(cidrs)) => Some((
                facts,
                lbs.iter()
                    .map(|lb| (lb.arn.as_str(), rules::load_balancer_peers(lb, cidrs)))
                    .collect::<BTreeMap<_, _>>(),
            )),
        };
        if let Some((facts, peers_by_lb)) = peers_by_lb {
            // Container ports by pod only matter to a binding that names one.
            let names_ports = self.networked.iter().any(|(b, _)| {
                b.binding
                    .networking
                    .as_ref()
                    .is_some_and(|n| n.ingress.iter().any(rules::names_a_port))
            });
            let pod_ports = if names_ports {
                rules::pod_ports(&snapshot.pods)
            } else {
                rules::PodPorts::new()
            };
            for (binding, desired) in &self.networked {
                let peers: Vec<Peer> = binding
                    .traffic
                    .load_balancer_arns
                    .iter()
                    .flat_map(|arn| peers_by_lb.get(arn.as_str()).into_iter().flatten())
                    .cloned()
                    .collect::<BTreeSet<_>>()
                    .into_iter()
                    .collect();
                let computed =
                    rules::desired_rules(binding, desired, facts, &pod_ports, &peers, cluster)
                        .and_then(|r| rules::refuse_world_open(binding, r, allow_world_open));
                match computed {
                    Ok(rules) => out.per_binding.push((binding.binding.id.clone(), rules)),
                    Err(error) => out.failures.push(BindingFailure {
                        binding: binding.binding.id.clone(),
                        error,
                    }),
                }
            }
        }
        let peer_groups = out
            .per_binding
            .iter()
            .flat_map(|(_, rules)| rules.iter())
            .filter_map(|r| match &r.permission.peer {
                Peer::SecurityGroup(id) => Some(id),
                _ => None,
            });
        // Hashed first: tens of thousands of rules name a few hundred groups.
        let groups: HashSet<&SecurityGroupId> = out
            .per_binding
            .iter()
            .flat_map(|(_, rules)| rules.iter())
            .map(|r| &r.group)
            .filter(|g| self.in_scope(g))
            .chain(&self.recorded_groups)
            .chain(peer_groups)
            .collect();
        let mut groups: Vec<SecurityGroupId> = groups.into_iter().cloned().collect();
        groups.sort_unstable();
        out.groups_to_read = groups;
        out
    }

    /// What the live rules mean: a binding whose peer group does not exist fails alone; an
    /// unreadable answer fails every networked binding and plans no group; the plan sees only
    /// the groups it may write to, the desired and the recorded ones.
    pub fn interpret(
        &self,
        wanted: WantedRules,
        live: Result<BTreeMap<SecurityGroupId, Vec<ObservedRule>>, Error>,
    ) -> RuleObservation {
        let WantedRules {
            per_binding,
            mut failures,
            ..
        } = wanted;
        let mut observed = match live {
            Ok(observed) => observed,
            Err(error) => {
                self.fail_all(&mut failures, &error.chain());
                return RuleObservation {
                    failures,
                    ..RuleObservation::default()
                };
            }
        };
        let existing: BTreeSet<SecurityGroupId> = observed.keys().cloned().collect();
        let mut desired = Vec::new();
        for (binding, rules) in per_binding {
            let rules = rules
                .into_iter()
                .filter(|r| self.in_scope(&r.group))
                .collect();
            match rules::require_existing_peers(rules, &existing) {
                Ok(rules) => desired.extend(rules),
                Err(error) => failures.push(BindingFailure { binding, error }),
            }
        }
        let planned: HashSet<&SecurityGroupId> = self
            .recorded_groups
            .iter()
            .chain(desired.iter().map(|r| &r.group))
            .collect();
        observed.retain(|group, _| planned.contains(group));
        drop(planned);
        RuleObservation {
            desired,
            failures,
            observed,
        }
    }
}
