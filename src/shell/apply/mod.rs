//! apply: executes a plan through the ports, binding by binding, in make-before-break order —
//! record ownership, register, then deregister — in batches ELB accepts. It never decides:
//! everything it does is in the plan, and a failure only stops the rest of its own binding.
//! Bindings go in windows of [`RECORD_WINDOW`], so that their records take one state-table batch
//! each way: the window's records `before` first, then each binding's targets, then the
//! records `after` of the bindings whose changes all landed.
//! Before each mutating batch the cluster's lease is renewed, once less than a third of its term
//! is left ([`course::must_renew`]): a run that lost it stops writing.
//! A run with a deadline stops between batches (the rules, each window, the revokes) once the
//! next one might not end before it ([`course::next_batch`]), and reports what it left.

use crate::error::Error;
use crate::model::Permission;
use crate::model::SecurityGroupId;
use crate::model::{BindingId, TargetGroupRef};
use crate::ports::{FirewallRules, OwnershipStore, Ports, Registration, TargetRegistry};
use crate::pure::course;
use crate::pure::course::NextBatch;
use crate::pure::plan::rules::{Authorize, Revoke};
use crate::pure::plan::{BindingPlan, Plan, RecordAfter, TargetChange};
use crate::pure::report::{BindingReport, FailedRule, Report, RuleOutcome, Stopped};
use crate::shell::progress::Progress;
use crate::state::lease::LeaseTerms;
use crate::state::ownership::RecordWrite;
use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use tokio::time::Instant;

mod gates;
pub use gates::set_gates;

/// The most targets one RegisterTargets or DeregisterTargets call takes.
pub const BATCH_SIZE: usize = 200;

/// How many bindings share one batch of records each way: DynamoDB's BatchWriteItem takes 25
/// items, and most bindings write one record.
pub const RECORD_WINDOW: usize = 25;

/// The cluster's lease as a run holds it: its terms, and when it was last known to be ours.
/// Tokio's clock, so that a test with a paused clock decides renewals without waiting.
#[derive(Debug, Clone)]
pub struct HeldLease {
    pub terms: LeaseTerms,
    /// When the last successful claim or renewal was asked for: the lease runs at least until
    /// then plus its term.
    pub renewed_at: Instant,
}

impl HeldLease {
    /// A lease claimed (or renewed) by a call made at `asked`.
    pub fn since(terms: &LeaseTerms, asked: Instant) -> Self {
        Self {
            terms: terms.clone(),
            renewed_at: asked,
        }
    }
}

/// When a run must have stopped writing, and the time it keeps before that for its end (see
/// [`course::reserve_for`]). Tokio's clock, so that tests with a paused clock decide alike.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Deadline {
    pub at: Instant,
    pub reserve: Duration,
}

impl Deadline {
    /// A deadline `time` from now, with the reserve that much time calls for.
    pub fn after(time: Duration) -> Self {
        Self {
            at: Instant::now() + time,
            reserve: course::reserve_for(time),
        }
    }

    pub fn left(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// Whether a batch that may take as long as `longest` starts now ([`course::next_batch`]).
    pub fn allows(&self, longest: Duration) -> bool {
        course::next_batch(Some(self.left()), longest, self.reserve) == NextBatch::Run
    }
}

/// How far apply goes: when it must have stopped starting batches (none: no deadline), and the
/// counters it bumps for the progress line.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reach<'a> {
    pub deadline: Option<Deadline>,
    pub progress: Option<&'a Progress>,
}

/// The deadline as apply meets it: the longest batch so far says how long the next may take.
struct BatchClock {
    deadline: Option<Deadline>,
    longest: Duration,
}

impl BatchClock {
    fn may_start(&self) -> bool {
        self.deadline.is_none_or(|d| d.allows(self.longest))
    }

    /// Times a batch that started at `started` and just ended.
    fn ended(&mut self, started: Instant) {
        self.longest = self.longest.max(started.elapsed());
    }

    fn stopped(&self, left: BTreeSet<BindingId>, rules_left: usize) -> Stopped {
        let before = self.deadline.map(|d| d.left()).unwrap_or_default();
        Stopped {
            seconds_before_deadline: before.as_secs(),
            left,
            rules_left,
        }
    }
}

/// Writes only while the cluster's lease is ours (always, without one: a dry run or a test).
struct Gate<'a, S> {
    store: &'a S,
    cluster: &'a str,
    lease: Option<&'a mut HeldLease>,
    /// Why writing stopped, once it has.
    closed: Option<String>,
}

impl<S: OwnershipStore> Gate<'_, S> {
    /// Renews the lease before a mutating batch when it is due; `Err(why)` when the batch must
    /// not run.
    async fn pass(&mut self) -> Result<(), String> {
        if let Some(why) = &self.closed {
            return Err(why.clone());
        }
        let Some(held) = self.lease.as_deref_mut() else {
            return Ok(());
        };
        let asked = Instant::now();
        let since = asked.saturating_duration_since(held.renewed_at);
        if !course::must_renew(since, Duration::from_secs(held.terms.seconds)) {
            return Ok(());
        }
        let why = match self.store.extend_lease(self.cluster, &held.terms).await {
            Ok(true) => {
                held.renewed_at = asked;
                return Ok(());
            }
            Ok(false) => "not attempted: the cluster's lease passed to another run".to_string(),
            Err(error) => format!("not attempted: {}", error.chain()),
        };
        self.closed = Some(why.clone());
        Err(why)
    }

    /// Writes a batch of records, each on behalf of the binding at its index in a window of
    /// `bindings`: each binding's errors, or `Err(why)` when the gate kept the batch back.
    async fn write_records(
        &mut self,
        writes: &[(usize, RecordWrite<'_>)],
        bindings: usize,
    ) -> Result<Vec<Vec<String>>, String> {
        let mut errors = vec![Vec::new(); bindings];
        if writes.is_empty() {
            return Ok(errors);
        }
        self.pass().await?;
        let items: Vec<RecordWrite<'_>> = writes.iter().map(|(_, write)| *write).collect();
        let answers = self.store.write_records(self.cluster, &items).await;
        for (k, (binding, _)) in writes.iter().enumerate() {
            match answers.get(k) {
                Some(Ok(())) => {}
                Some(Err(error)) => errors[*binding].push(error.chain()),
                // A store that answered fewer writes than it was given did not land the rest.
                None => {
                    errors[*binding].push("the state table gave no answer for this record".into())
                }
            }
        }
        Ok(errors)
    }
}

/// Applies the whole plan, with no deadline.
pub async fn apply<R, N, F, S>(
    plan: &Plan,
    ports: &Ports<'_, R, N, F, S>,
    lease: Option<&mut HeldLease>,
) -> Report
where
    R: TargetRegistry,
    F: FirewallRules,
    S: OwnershipStore,
{
    apply_within(plan, ports, lease, Reach::default()).await
}

/// Applies the plan as far as `reach` lets it: batch after batch, stopping between two when
/// the deadline is near. What it did not start is named in the report's `stopped`, untouched.
pub async fn apply_within<R, N, F, S>(
    plan: &Plan,
    ports: &Ports<'_, R, N, F, S>,
    lease: Option<&mut HeldLease>,
    reach: Reach<'_>,
) -> Report
where
    R: TargetRegistry,
    F: FirewallRules,
    S: OwnershipStore,
{
    let mut report = Report::new(&plan.cluster);
    let mut gate = Gate {
        store: ports.store,
        cluster: &plan.cluster,
        lease,
        closed: None,
    };
    let mut clock = BatchClock {
        deadline: reach.deadline,
        longest: Duration::ZERO,
    };
    let wrote = |n: usize| {
        if let Some(progress) = reach.progress {
            progress.wrote(n);
        }
    };
    let parts: Vec<&BindingPlan> = plan
        .bindings
        .values()
        .filter(|b| b.has_aws_writes())
        .collect();
    if !clock.may_start() {
        // Nothing started: every binding with a write, and every rule, is left whole.
        let left = parts
            .iter()
            .map(|p| p.binding.clone())
            .chain(
                plan.rules
                    .authorize
                    .iter()
                    .flat_map(|r| r.bindings.iter().cloned()),
            )
            .collect();
        let rules = plan.rules.authorize.len() + plan.rules.revoke.len();
        report.stopped = Some(clock.stopped(left, rules));
        return report;
    }
    // New rules first, so new targets are reachable the moment they register.
    let started = Instant::now();
    let authorized = authorize_rules(plan, ports.firewall, &mut gate).await;
    clock.ended(started);
    wrote(authorized.done.len());
    let rules_failed: BTreeSet<&BindingId> =
        authorized.failed.iter().flat_map(|f| &f.bindings).collect();
    // Bindings whose targets did not all move: their old targets still need their old rules.
    let mut unmoved: BTreeSet<BindingId> = BTreeSet::new();
    let mut left: Option<BTreeSet<BindingId>> = None;
    for (k, window) in parts.chunks(RECORD_WINDOW).enumerate() {
        if !clock.may_start() {
            // Between windows only: each binding's record, targets and record after go together.
            let rest = parts.iter().skip(k * RECORD_WINDOW);
            left = Some(rest.map(|p| p.binding.clone()).collect());
            break;
        }
        let started = Instant::now();
        let results = apply_window(window, ports.registry, &mut gate, &rules_failed).await;
        clock.ended(started);
        for result in results {
            wrote(result.done.len());
            if !result.moved() {
                unmoved.insert(result.binding.clone());
            }
            report.bindings.insert(result.binding.clone(), result);
        }
        if let Some(progress) = reach.progress {
            progress.applied(window.len());
        }
    }
    let revoked = match left {
        None if clock.may_start() => {
            revoke_rules(
                plan,
                ports.firewall,
                &authorized.incomplete,
                &unmoved,
                &mut gate,
            )
            .await
        }
        // Stale rules only admit: they wait for a run that gets this far.
        left => {
            let left = left.unwrap_or_default();
            report.stopped = Some(clock.stopped(left, plan.rules.revoke.len()));
            RuleResults::default()
        }
    };
    wrote(revoked.done.len());
    for rules in [authorized, revoked] {
        report.rules_done.extend(rules.done);
        report.rules_failed.extend(rules.failed);
    }
    report.lease_lost = gate.closed;
    report
}

/// What one pass over the rules did; `incomplete` names the groups where something did not
/// land (nothing is revoked there).
#[derive(Default)]
struct RuleResults {
    done: Vec<RuleOutcome>,
    failed: Vec<FailedRule>,
    incomplete: BTreeSet<SecurityGroupId>,
}

/// Authorizes each group's new rules in one call; when that fails, binding by binding, so one
/// binding's bad rule (a peer group that vanished, say) does not keep the others' out.
async fn authorize_rules<S: OwnershipStore>(
    plan: &Plan,
    firewall: &impl FirewallRules,
    gate: &mut Gate<'_, S>,
) -> RuleResults {
    let mut by_group: BTreeMap<&SecurityGroupId, Vec<&Authorize>> = BTreeMap::new();
    for rule in &plan.rules.authorize {
        by_group.entry(&rule.group).or_default().push(rule);
    }
    let mut out = RuleResults::default();
    for (group, rules) in by_group {
        if let Err(why) = gate.pass().await {
            out.incomplete.insert(group.clone());
            out.failed
                .extend(rules.iter().map(|r| FailedRule::of(r, group, why.clone())));
            continue;
        }
        let permissions: Vec<Permission> = rules.iter().map(|r| r.permission.clone()).collect();
        if firewall
            .authorize_ingress(group, &permissions, &plan.cluster)
            .await
            .is_ok()
        {
            out.done
                .extend(rules.iter().map(|r| RuleOutcome::authorized(r)));
            continue;
        }
        let bindings: BTreeSet<&BindingId> = rules.iter().flat_map(|r| r.bindings.iter()).collect();
        let mut landed: BTreeSet<&Permission> = BTreeSet::new();
        for binding in bindings {
            let own: Vec<&Authorize> = rules
                .iter()
                .copied()
                .filter(|r| r.bindings.contains(binding) && !landed.contains(&r.permission))
                .collect();
            if own.is_empty() {
                continue;
            }
            let permissions: Vec<Permission> = own.iter().map(|r| r.permission.clone()).collect();
            if let Err(why) = gate.pass().await {
                out.incomplete.insert(group.clone());
                out.failed
                    .extend(own.iter().map(|r| FailedRule::of(r, group, why.clone())));
                continue;
            }
            match firewall
                .authorize_ingress(group, &permissions, &plan.cluster)
                .await
            {
                Ok(()) => {
                    landed.extend(own.iter().map(|r| &r.permission));
                    out.done
                        .extend(own.iter().map(|r| RuleOutcome::authorized(r)));
                }
                Err(error) => {
                    out.incomplete.insert(group.clone());
                    out.failed.extend(own.iter().map(|r| FailedRule {
                        group: group.clone(),
                        permission: r.permission.clone(),
                        bindings: BTreeSet::from([binding.clone()]),
                        error: error.chain(),
                    }));
                }
            }
        }
    }
    out
}

/// Revokes our stale rules by id, group by group, where every authorization landed — but not
/// a rule that a binding in `unmoved` had last time.
async fn revoke_rules<S: OwnershipStore>(
    plan: &Plan,
    firewall: &impl FirewallRules,
    incomplete: &BTreeSet<SecurityGroupId>,
    unmoved: &BTreeSet<BindingId>,
    gate: &mut Gate<'_, S>,
) -> RuleResults {
    let mut out = RuleResults::default();
    let mut by_group: BTreeMap<&SecurityGroupId, Vec<&Revoke>> = BTreeMap::new();
    for rule in &plan.rules.revoke {
        if let Some(binding) = rule.held_for.intersection(unmoved).next() {
            out.failed.push(FailedRule {
                group: rule.group.clone(),
                permission: rule.permission.clone(),
                bindings: rule.held_for.clone(),
                error: format!(
                    "not attempted: the targets of {binding} did not all move, and its old ones need this rule (make before break)"
                ),
            });
            continue;
        }
        by_group.entry(&rule.group).or_default().push(rule);
    }
    for (group, rules) in by_group {
        if incomplete.contains(group) {
            out.failed.extend(rules.iter().map(|r| {
                FailedRule {
                    group: group.clone(),
                    permission: r.permission.clone(),
                    bindings: BTreeSet::new(),
                    error:
                        "not attempted: an authorization on this group failed (make before break)"
                            .into(),
                }
            }));
            continue;
        }
        let ids: Vec<String> = rules.iter().map(|r| r.rule_id.clone()).collect();
        let revoked = match gate.pass().await {
            Ok(()) => firewall
                .revoke_ingress(group, &ids)
                .await
                .map_err(|e| e.chain()),
            Err(why) => Err(why),
        };
        match revoked {
            Ok(()) => out
                .done
                .extend(rules.iter().map(|r| RuleOutcome::revoked(r))),
            Err(error) => out.failed.extend(rules.iter().map(|r| FailedRule {
                group: group.clone(),
                permission: r.permission.clone(),
                bindings: BTreeSet::new(),
                error: error.clone(),
            })),
        }
    }
    out
}

/// A window of bindings: their records before (one batch), then each binding's registrations
/// and deregistrations, then the records after (one batch) of those whose changes all landed.
/// A binding whose record before did not land changes nothing; one whose record after did not
/// land says so. Either way, no other binding is held up.
async fn apply_window<S: OwnershipStore>(
    window: &[&BindingPlan],
    registry: &impl TargetRegistry,
    gate: &mut Gate<'_, S>,
    rules_failed: &BTreeSet<&BindingId>,
) -> Vec<BindingReport> {
    let mut reports: Vec<BindingReport> = window
        .iter()
        .map(|part| BindingReport::new(&part.binding))
        .collect();

    // Durable before any target registers, so a lost response cannot leak a target nobody
    // remembers owning.
    let befores: Vec<(usize, RecordWrite<'_>)> = window
        .iter()
        .enumerate()
        .flat_map(|(i, part)| {
            part.records
                .iter()
                .filter_map(|r| r.before.as_ref())
                .map(move |r| (i, RecordWrite::Save(r)))
        })
        .collect();
    let mut stopped = vec![false; window.len()];
    match gate.write_records(&befores, window.len()).await {
        Err(why) => {
            for &(i, _) in &befores {
                if !stopped[i] {
                    reports[i].fail_all(window[i].changes(), &why);
                    stopped[i] = true;
                }
            }
        }
        Ok(errors) => {
            for (i, errors) in errors.into_iter().enumerate() {
                if let Some(first) = errors.first() {
                    let why = format!("not attempted: {first}");
                    reports[i].fail_all(window[i].changes(), &why);
                    reports[i].record_errors.extend(errors);
                    stopped[i] = true;
                }
            }
        }
    }

    for (i, part) in window.iter().enumerate() {
        if !stopped[i] {
            apply_targets(part, registry, gate, &mut reports[i]).await;
        }
    }

    // The record says which rules the binding has: not the new ones if they did not land.
    let afters: Vec<(usize, RecordWrite<'_>)> = window
        .iter()
        .enumerate()
        .filter(|&(i, part)| {
            !stopped[i] && reports[i].failed.is_empty() && !rules_failed.contains(&part.binding)
        })
        .flat_map(|(i, part)| {
            part.records.iter().filter_map(move |r| match &r.after {
                RecordAfter::Keep => None,
                RecordAfter::Save(record) => Some((i, RecordWrite::Save(record))),
                RecordAfter::Forget(record) => Some((i, RecordWrite::Forget(record))),
            })
        })
        .collect();
    match gate.write_records(&afters, window.len()).await {
        Err(why) => {
            let held: BTreeSet<usize> = afters.iter().map(|&(i, _)| i).collect();
            for i in held {
                reports[i].record_errors.push(why.clone());
            }
        }
        Ok(errors) => {
            for (report, errors) in reports.iter_mut().zip(errors) {
                report.record_errors.extend(errors);
            }
        }
    }
    reports
}

/// One binding's registrations, then its deregistrations — these only once every
/// registration landed.
async fn apply_targets<S: OwnershipStore>(
    part: &BindingPlan,
    registry: &impl TargetRegistry,
    gate: &mut Gate<'_, S>,
    out: &mut BindingReport,
) {
    for (group, batch) in batches(&part.registrations) {
        let targets: Vec<Registration> = batch
            .iter()
            .map(|c| Registration {
                target: c.target.clone(),
                availability_zone: c.availability_zone.clone(),
            })
            .collect();
        if let Err(why) = gate.pass().await {
            out.fail_all(batch.iter().copied(), &why);
            continue;
        }
        match registry.register_targets(group, &targets).await {
            Ok(()) => out.done.extend(batch.iter().map(|c| (*c).clone())),
            Err(error) => out.fail_all(batch.iter().copied(), &error.chain()),
        }
    }
    if !out.failed.is_empty() {
        // Make before break: never remove old targets when the new ones did not land.
        out.fail_all(
            &part.deregistrations,
            "not attempted: registering this binding's new targets failed",
        );
        return;
    }
    for (group, batch) in batches(&part.deregistrations) {
        let targets: Vec<_> = batch.iter().map(|c| c.target.clone()).collect();
        if let Err(why) = gate.pass().await {
            out.fail_all(batch.iter().copied(), &why);
            continue;
        }
        match registry.deregister_targets(group, &targets).await {
            // A group that is gone holds no targets: the deregistration is done.
            Ok(()) | Err(Error::TargetGroupNotFound { .. }) => {
                out.done.extend(batch.iter().map(|c| (*c).clone()))
            }
            Err(error) => out.fail_all(batch.iter().copied(), &error.chain()),
        }
    }
}

/// Changes of one action, grouped by target group and cut to [`BATCH_SIZE`].
fn batches(changes: &[TargetChange]) -> Vec<(&TargetGroupRef, Vec<&TargetChange>)> {
    let mut by_group: BTreeMap<&TargetGroupRef, Vec<&TargetChange>> = BTreeMap::new();
    for change in changes {
        by_group
            .entry(&change.target_group)
            .or_default()
            .push(change);
    }
    by_group
        .into_iter()
        .flat_map(|(group, changes)| {
            changes
                .chunks(BATCH_SIZE)
                .map(|chunk| (group, chunk.to_vec()))
                .collect::<Vec<_>>()
        })
        .collect()
}

#[cfg(test)]
mod tests;
