//! Which bindings the cluster declares, and which target group each is bound to. A binding
//! in another account needs a lookup through its role; a narrowed run looks one up only once
//! its coverage may reach it, each lookup costing a call.

use crate::Error;
use crate::model::TargetGroupArn;
use crate::model::aws::TargetGroupInfo;
use crate::model::cluster::ClusterSnapshot;
use crate::model::{AssumeRole, BindingId};
use crate::pure::binding::{
    self, Binding, BindingError, ResolvedBinding, ServiceRef, TargetGroupSelector,
};
use crate::pure::binding::{resource, tags};
use crate::pure::scope::{self, Coverage};
use crate::state::ownership::OwnershipRecord;
use foldhash::HashMap;
use std::collections::BTreeMap;

/// A binding checked against its target group, or why it could not be.
pub type Resolved = Result<ResolvedBinding, (BindingId, BindingError)>;

/// A declared binding: resolved already, or waiting for its target group in another account.
#[derive(Debug, Clone)]
pub enum Declared {
    // Both boxed: either is hundreds of bytes, and a cluster declares thousands.
    Resolved(Box<Resolved>),
    NeedsLookup(Box<Binding>),
}

/// Every binding the cluster declares, from both sources, each validated on its own; those in
/// this account are resolved against `groups` at once.
pub fn declare(
    cluster: &str,
    snapshot: &ClusterSnapshot,
    groups: &[TargetGroupInfo],
) -> Vec<Declared> {
    let from_resources = snapshot.binding_resources.iter().map(|r| {
        (
            BindingId::resource(&r.namespace, &r.name),
            resource::binding_from_resource(r),
        )
    });
    let index = GroupIndex::new(groups);
    let from_tags = groups
        .iter()
        .filter_map(|g| tags::binding_from_tags(g, cluster).map(|b| (BindingId::tags(&g.name), b)));
    from_resources
        .chain(from_tags)
        .map(|(id, declared)| match declared {
            Err(error) => Declared::Resolved(Box::new(Err((id, error)))),
            Ok(binding) if binding.assume_role.is_some() => {
                Declared::NeedsLookup(Box::new(binding))
            }
            Ok(binding) => Declared::Resolved(Box::new(resolve_local(binding, &index))),
        })
        .collect()
}

/// Each declared binding's id and Service, where its spec could be read: what a run narrowed
/// to Services is seeded from.
pub fn services(declared: &[Declared]) -> impl Iterator<Item = (&BindingId, &ServiceRef)> {
    declared.iter().filter_map(|d| match d {
        Declared::Resolved(resolved) => resolved
            .as_ref()
            .as_ref()
            .ok()
            .map(|b| (&b.binding.id, &b.binding.service)),
        Declared::NeedsLookup(binding) => Some((&binding.id, &binding.service)),
    })
}

/// The lookups these bindings need: each one's target group, through its role.
pub fn lookups<'a>(
    bindings: impl IntoIterator<Item = &'a Binding>,
) -> Vec<(&'a TargetGroupSelector, &'a AssumeRole)> {
    bindings
        .into_iter()
        .filter_map(|b| Some((&b.target_group, b.assume_role.as_ref()?)))
        .collect()
}

/// The declared bindings, with the lookups of those that need one answered in the same order.
pub fn resolve_all(
    declared: Vec<Declared>,
    found: Vec<Result<Option<TargetGroupInfo>, Error>>,
) -> Vec<Resolved> {
    let mut found = found.into_iter();
    declared
        .into_iter()
        .map(|d| match d {
            Declared::Resolved(resolved) => *resolved,
            Declared::NeedsLookup(binding) => {
                let answer = found.next().ok_or_else(|| {
                    let why = "its target group was not looked up";
                    (
                        binding.id.clone(),
                        BindingError::new(selector_field(&binding), why),
                    )
                });
                answer.and_then(|answer| resolve_foreign(*binding, answer))
            }
        })
        .collect()
}

/// A narrowed run's starting point: the resolved bindings, and those waiting for a lookup.
pub fn split(declared: Vec<Declared>) -> (Vec<Resolved>, Vec<Binding>) {
    let mut resolved = Vec::new();
    let mut waiting = Vec::new();
    for d in declared {
        match d {
            Declared::Resolved(r) => resolved.push(*r),
            Declared::NeedsLookup(binding) => waiting.push(*binding),
        }
    }
    (resolved, waiting)
}

/// One step of a run's coverage fixed point (a sweep reaches it in one step): the coverage
/// closed over what is resolved and recorded, the waiting bindings it now may reach (to look
/// up next, and covered from now on), and the rest. No binding to look up means it is final.
pub fn widen(
    coverage: Coverage,
    resolved: &[Resolved],
    records: &[OwnershipRecord],
    waiting: Vec<Binding>,
) -> (Coverage, Vec<Binding>, Vec<Binding>) {
    // A sweep's coverage is closed already: no edge list of every binding and record to build.
    let mut coverage = if coverage.everything {
        coverage
    } else {
        let edges: Vec<(BindingId, TargetGroupArn)> = resolved
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(|b| (b.binding.id.clone(), b.target_group.arn.clone()))
            .chain(
                records
                    .iter()
                    .map(|r| (r.binding.clone(), r.target_group.arn.clone())),
            )
            .collect();
        scope::close(coverage, &edges)
    };
    let (now, waiting): (Vec<Binding>, Vec<Binding>) =
        waiting.into_iter().partition(|b| coverage.may_cover(b));
    coverage.bindings.extend(now.iter().map(|b| b.id.clone()));
    (coverage, now, waiting)
}

/// Only the covered bindings and their records.
pub fn narrow(
    coverage: &Coverage,
    resolved: Vec<Resolved>,
    records: Vec<OwnershipRecord>,
) -> (Vec<Resolved>, Vec<OwnershipRecord>) {
    let resolved = resolved
        .into_iter()
        .filter(|r| match r {
            Ok(b) => coverage.covers(&b.binding.id, &b.target_group.arn),
            Err((id, _)) => coverage.covers_binding(id),
        })
        .collect();
    let records = records
        .into_iter()
        .filter(|r| coverage.covers(&r.binding, &r.target_group.arn))
        .collect();
    (resolved, records)
}

/// What a lookup of a binding's target group in another account means for it.
pub fn resolve_foreign(
    binding: Binding,
    found: Result<Option<TargetGroupInfo>, Error>,
) -> Resolved {
    let id = binding.id.clone();
    let group = match found {
        Ok(Some(group)) => group,
        Ok(None) => return Err((id, not_found(&binding))),
        Err(error) => {
            return Err((
                id,
                BindingError::new(selector_field(&binding), error.chain()),
            ));
        }
    };
    binding::resolve(&binding, &group).map_err(|e| (id, e))
}

/// The account's target groups by ARN and by name: each of a thousand bindings looks its group
/// up among a thousand. The first of a name or ARN wins, as a scan in order would find it.
struct GroupIndex<'a> {
    by_arn: HashMap<&'a str, &'a TargetGroupInfo>,
    by_name: HashMap<&'a str, &'a TargetGroupInfo>,
}

impl<'a> GroupIndex<'a> {
    fn new(groups: &'a [TargetGroupInfo]) -> Self {
        let mut index = Self {
            by_arn: HashMap::default(),
            by_name: HashMap::default(),
        };
        for group in groups {
            index.by_arn.entry(&group.arn).or_insert(group);
            index.by_name.entry(&group.name).or_insert(group);
        }
        index
    }

    fn find(&self, selector: &TargetGroupSelector) -> Option<&'a TargetGroupInfo> {
        match selector {
            TargetGroupSelector::Arn(arn) => self.by_arn.get(&**arn).copied(),
            TargetGroupSelector::Name(name) => self.by_name.get(name.as_str()).copied(),
        }
    }
}

fn resolve_local(binding: Binding, groups: &GroupIndex<'_>) -> Resolved {
    let id = binding.id.clone();
    match groups.find(&binding.target_group) {
        Some(group) => binding::resolve(&binding, group).map_err(|e| (id, e)),
        None => Err((id, not_found(&binding))),
    }
}

fn not_found(binding: &Binding) -> BindingError {
    BindingError::new(
        selector_field(binding),
        format!("target group {} not found", binding.target_group),
    )
}

/// The field an error about the target group points at (none for tagged target groups).
fn selector_field(binding: &Binding) -> &'static str {
    match (binding.id.is_resource(), &binding.target_group) {
        (false, _) => "",
        (_, TargetGroupSelector::Arn(_)) => "spec.targetGroupARN",
        (_, TargetGroupSelector::Name(_)) => "spec.targetGroupName",
    }
}

/// `metadata.generation` of each resource binding, for the statuses.
pub fn generations(snapshot: &ClusterSnapshot) -> BTreeMap<BindingId, i64> {
    snapshot
        .binding_resources
        .iter()
        .filter_map(|r| Some((BindingId::resource(&r.namespace, &r.name), r.generation?)))
        .collect()
}
