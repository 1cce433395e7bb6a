//! scope: what one run of a cluster covers. A sweep covers everything; an event about one
//! security group or one target group covers only the bindings it can affect, so it costs a
//! few reads instead of a sweep (pure).
//!
//! The index from groups and target groups to bindings is the ownership records themselves:
//! every binding that has rules on a group, or targets in a target group, recorded that before
//! writing them, so the index cannot lag behind what we created. A binding that has never been
//! applied is not in it; the next sweep picks it up.

use crate::model::BindingId;
use crate::model::{SecurityGroupId, TargetGroupArn};
use crate::pure::binding::{Binding, ServiceRef, TargetGroupSelector};
use crate::state::ownership::OwnershipRecord;
use serde::Serialize;
use std::collections::BTreeSet;

/// What a run was asked to cover.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "scope", content = "id", rename_all = "kebab-case")]
pub enum Scope {
    /// Every binding, every target group, every group.
    Cluster,
    /// The rules on one security group, and the bindings that have rules there.
    SecurityGroup(SecurityGroupId),
    /// The targets of one target group, and the bindings that registered there.
    TargetGroup(TargetGroupArn),
    /// The targets of the bindings of these Services (`namespace/name`): what a watched change
    /// of their endpoints can affect. No rule is planned.
    Services(BTreeSet<String>),
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Cluster => f.write_str("the whole cluster"),
            Self::SecurityGroup(group) => write!(f, "security group {group}"),
            Self::TargetGroup(arn) => write!(f, "target group {arn}"),
            Self::Services(services) => {
                let names: Vec<&str> = services.iter().map(String::as_str).collect();
                write!(f, "the bindings of Service {}", names.join(", "))
            }
        }
    }
}

/// The bindings and target groups a run covers, and the groups whose rules it plans: all of
/// them for a sweep, those an event reaches for a narrowed run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Coverage {
    /// A sweep's: every binding, target group and security group.
    pub everything: bool,
    pub bindings: BTreeSet<BindingId>,
    pub target_groups: BTreeSet<TargetGroupArn>,
    pub rule_groups: BTreeSet<SecurityGroupId>,
}

impl Coverage {
    pub fn everything() -> Self {
        Self {
            everything: true,
            ..Self::default()
        }
    }

    pub fn is_empty(&self) -> bool {
        !self.everything && self.bindings.is_empty() && self.target_groups.is_empty()
    }

    pub fn covers(&self, binding: &BindingId, target_group: &str) -> bool {
        self.everything
            || self.bindings.contains(binding)
            || self.target_groups.contains(target_group)
    }

    /// Whether a binding whose target group is unknown (it failed) is covered.
    pub fn covers_binding(&self, binding: &BindingId) -> bool {
        self.everything || self.bindings.contains(binding)
    }

    /// The groups whose rules the run plans; `None` for all.
    pub fn rule_groups(&self) -> Option<&BTreeSet<SecurityGroupId>> {
        (!self.everything).then_some(&self.rule_groups)
    }

    /// Whether a declared binding may belong to the coverage before its target group is known
    /// (only bindings in other accounts need a lookup to know it, and each costs one).
    pub fn may_cover(&self, binding: &Binding) -> bool {
        self.everything
            || self.bindings.contains(&binding.id)
            || self
                .target_groups
                .iter()
                .any(|arn| match &binding.target_group {
                    TargetGroupSelector::Arn(selected) => selected == arn,
                    TargetGroupSelector::Name(name) => arn.name() == Some(name.as_str()),
                })
    }
}

/// Where a narrowed run starts, from the records (and, for Services, from the bindings the
/// cluster declares: `declared` gives each one's id and Service); `None` for a sweep. An empty
/// coverage means the event concerns nothing this cluster made.
pub fn seed<'a>(
    scope: &Scope,
    records: &[OwnershipRecord],
    declared: impl IntoIterator<Item = (&'a BindingId, &'a ServiceRef)>,
) -> Option<Coverage> {
    let mut coverage = Coverage::default();
    match scope {
        Scope::Cluster => return None,
        Scope::Services(services) => {
            // Targets only: an empty set of rule groups plans no rule.
            coverage.bindings.extend(
                declared
                    .into_iter()
                    .filter(|(_, service)| {
                        services.contains(&format!("{}/{}", service.namespace, service.name))
                    })
                    .map(|(id, _)| id.clone()),
            );
        }
        Scope::SecurityGroup(group) => {
            coverage.rule_groups.insert(group.clone());
            coverage.bindings.extend(
                records
                    .iter()
                    .filter(|r| r.rules.iter().any(|rule| &rule.group == group))
                    .map(|r| r.binding.clone()),
            );
        }
        Scope::TargetGroup(arn) => {
            let bindings: BTreeSet<BindingId> = records
                .iter()
                .filter(|r| &r.target_group.arn == arn)
                .map(|r| r.binding.clone())
                .collect();
            if !bindings.is_empty() {
                coverage.target_groups.insert(arn.clone());
                coverage.bindings = bindings;
            }
        }
    }
    Some(coverage)
}

/// Grows a coverage until it is closed: every binding on a covered target group, and every
/// target group of a covered binding, is covered. Without that, planning one binding on a
/// shared target group could not tell its neighbours' targets from stale ones. `edges` are
/// (binding, target group ARN) pairs from the declared bindings and from the records.
pub fn close(mut coverage: Coverage, edges: &[(BindingId, TargetGroupArn)]) -> Coverage {
    if coverage.everything {
        return coverage;
    }
    // Each pass adds at least one edge's ends or stops, so it ends within `edges.len()` passes.
    for _ in 0..=edges.len() {
        let mut grew = false;
        for (binding, target_group) in edges {
            if coverage.covers(binding, target_group) {
                grew |= coverage.bindings.insert(binding.clone());
                grew |= coverage.target_groups.insert(target_group.clone());
            }
        }
        if !grew {
            break;
        }
    }
    coverage
}

/// Where a run starts: everything for a sweep, what [`seed`] finds for an event or a change.
pub fn reach<'a>(
    scope: &Scope,
    records: &[OwnershipRecord],
    declared: impl IntoIterator<Item = (&'a BindingId, &'a ServiceRef)>,
) -> Coverage {
    seed(scope, records, declared).unwrap_or_else(Coverage::everything)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{GroupRule, Peer, Permission, PortRange, Protocol, TargetGroupRef};

    fn id(name: &str) -> BindingId {
        BindingId::resource("default", name)
    }

    fn tg(name: &str) -> TargetGroupArn {
        format!("arn:aws:elasticloadbalancing:us-west-2:1:targetgroup/{name}/1").into()
    }

    fn record(name: &str, target_group: &str, groups: &[&str]) -> OwnershipRecord {
        OwnershipRecord {
            binding: id(name),
            target_group: TargetGroupRef::new(tg(target_group)),
            multi_cluster: false,
            targets: BTreeSet::new(),
            rules: groups
                .iter()
                .map(|g| GroupRule {
                    group: (*g).into(),
                    permission: Permission {
                        protocol: Protocol::Tcp,
                        ports: PortRange { from: 80, to: 80 },
                        peer: Peer::SecurityGroup("sg-alb".into()),
                    },
                })
                .collect(),
        }
    }

    fn names(ids: &BTreeSet<BindingId>) -> Vec<String> {
        ids.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn an_event_seeds_the_bindings_its_group_or_target_group_holds() {
        let records = vec![
            record("web", "web", &["sg-node"]),
            record("api", "api", &["sg-node", "sg-pods"]),
            record("batch", "batch", &[]),
        ];
        type Covered = Option<(Vec<&'static str>, Vec<TargetGroupArn>)>;
        let cases: Vec<(&str, Scope, Covered)> = vec![
            ("a sweep is not narrowed at all", Scope::Cluster, None),
            (
                "a group event covers every binding with rules on that group",
                Scope::SecurityGroup("sg-node".into()),
                Some((vec!["tgb/default/api", "tgb/default/web"], vec![])),
            ),
            (
                "a group nobody has rules on covers nothing",
                Scope::SecurityGroup("sg-other".into()),
                Some((vec![], vec![])),
            ),
            (
                "a target-group event covers the bindings recorded there and the target group",
                Scope::TargetGroup(tg("batch")),
                Some((vec!["tgb/default/batch"], vec![tg("batch")])),
            ),
            (
                "a target group nobody recorded covers nothing",
                Scope::TargetGroup(tg("elsewhere")),
                Some((vec![], vec![])),
            ),
        ];
        for (case, scope, expected) in cases {
            let seeded = seed(&scope, &records, []);
            let got = seeded.map(|c| (names(&c.bindings), c.target_groups.into_iter().collect()));
            let expected =
                expected.map(|(b, t)| (b.into_iter().map(str::to_string).collect::<Vec<_>>(), t));
            assert_eq!(got, expected, "{case}");
        }
    }

    #[test]
    fn closing_a_coverage_pulls_in_every_neighbour_on_a_shared_target_group() {
        // (case, binding → target group edges, covered bindings, covered target groups)
        type Case = (
            &'static str,
            Vec<(&'static str, &'static str)>,
            Vec<&'static str>,
            Vec<&'static str>,
        );
        let cases: Vec<Case> = vec![
            (
                "a binding alone on its target group stays alone",
                vec![("web", "web"), ("api", "api")],
                vec!["tgb/default/web"],
                vec!["web"],
            ),
            (
                "a neighbour on the same target group is covered",
                vec![("web", "shared"), ("api", "shared"), ("batch", "batch")],
                vec!["tgb/default/api", "tgb/default/web"],
                vec!["shared"],
            ),
            (
                "a binding that moved brings its old and new target groups and their neighbours",
                vec![
                    ("web", "old"),
                    ("web", "new"),
                    ("api", "new"),
                    ("batch", "batch"),
                ],
                vec!["tgb/default/api", "tgb/default/web"],
                vec!["new", "old"],
            ),
        ];
        for (case, edges, bindings, target_groups) in cases {
            let edges: Vec<(BindingId, TargetGroupArn)> =
                edges.iter().map(|(b, t)| (id(b), tg(t))).collect();
            let start = Coverage {
                bindings: [id("web")].into(),
                ..Coverage::default()
            };
            let closed = close(start, &edges);
            assert_eq!(names(&closed.bindings), bindings, "{case}");
            let expected: BTreeSet<TargetGroupArn> = target_groups.iter().map(|t| tg(t)).collect();
            assert_eq!(closed.target_groups, expected, "{case}");
        }
    }

    #[test]
    fn a_sweep_reaches_everything_and_an_event_only_what_its_records_name() {
        let records = vec![record("web", "web", &["sg-nodes"])];
        let web = crate::pure::binding::fixtures::binding("web", &tg("web"));
        let other = crate::pure::binding::fixtures::binding("other", &tg("other"));
        // (case, scope, covers web, covers other, rule groups planned: None for all)
        let cases = [
            ("a sweep", Scope::Cluster, true, true, None),
            (
                "a target-group event",
                Scope::TargetGroup(tg("web")),
                true,
                false,
                Some(vec![]),
            ),
            (
                "a security-group event",
                Scope::SecurityGroup("sg-nodes".into()),
                true,
                false,
                Some(vec![SecurityGroupId::from("sg-nodes")]),
            ),
        ];
        for (case, scope, covers_web, covers_other, groups) in cases {
            let reach = reach(&scope, &records, []);
            assert_eq!(reach.may_cover(&web), covers_web, "{case}");
            assert_eq!(reach.may_cover(&other), covers_other, "{case}");
            assert_eq!(
                reach
                    .rule_groups()
                    .map(|g| g.iter().cloned().collect::<Vec<_>>()),
                groups,
                "{case}"
            );
            assert!(!reach.is_empty(), "{case}");
            // Closing a sweep's coverage adds nothing: it has everything already.
            let edges = [(id("other"), tg("other"))];
            assert_eq!(
                close(reach.clone(), &edges).everything,
                scope == Scope::Cluster
            );
        }
    }

    #[test]
    fn a_watched_change_covers_the_bindings_of_its_services_and_plans_no_rule() {
        let web = crate::pure::binding::fixtures::binding("web", &tg("web"));
        let api = crate::pure::binding::fixtures::binding("api", &tg("api"));
        let mut web_too = crate::pure::binding::fixtures::binding("web-nlb", &tg("nlb"));
        web_too.service.name = "web".into();
        let declared = [&web, &api, &web_too];
        let services = |names: &[&str]| -> BTreeSet<String> {
            names.iter().map(|n| format!("default/{n}")).collect()
        };
        // (case, Services changed, bindings covered)
        let cases: Vec<(&str, BTreeSet<String>, Vec<&str>)> = vec![
            (
                "every binding of the Service",
                services(&["web"]),
                vec!["tgb/default/web", "tgb/default/web-nlb"],
            ),
            (
                "the bindings of each Service",
                services(&["web", "api"]),
                vec!["tgb/default/api", "tgb/default/web", "tgb/default/web-nlb"],
            ),
            ("a Service no binding names", services(&["batch"]), vec![]),
        ];
        for (case, changed, expected) in cases {
            let reach = reach(
                &Scope::Services(changed),
                &[],
                declared.iter().map(|b| (&b.id, &b.service)),
            );
            assert_eq!(names(&reach.bindings), expected, "{case}");
            assert!(!reach.everything, "{case}");
            assert_eq!(
                reach.rule_groups().map(BTreeSet::len),
                Some(0),
                "{case}: targets only"
            );
        }
    }

    #[test]
    fn a_declared_binding_may_be_covered_by_its_id_its_arn_or_its_target_group_name() {
        let coverage = Coverage {
            bindings: [id("web")].into(),
            target_groups: [tg("api")].into(),
            ..Coverage::default()
        };
        let named = |name: &str, selector: TargetGroupSelector| {
            let mut b = crate::pure::binding::fixtures::binding(name, &tg("x"));
            b.target_group = selector;
            b
        };
        let cases = [
            (
                "by its id",
                named("web", TargetGroupSelector::Arn(tg("x"))),
                true,
            ),
            (
                "by its ARN",
                named("a", TargetGroupSelector::Arn(tg("api"))),
                true,
            ),
            (
                "by its name",
                named("b", TargetGroupSelector::Name("api".into())),
                true,
            ),
            (
                "not at all",
                named("c", TargetGroupSelector::Name("x".into())),
                false,
            ),
        ];
        for (case, binding, expected) in cases {
            assert_eq!(coverage.may_cover(&binding), expected, "{case}");
        }
    }
}
