//! The fault wrapper, over the in-memory ports: each fault strikes when it says and lets
//! everything else through.

use super::*;
use crate::model::{Peer, PortRange, Protocol, TargetType};
use crate::testing::{MemoryCloud, block_on, target_group};
use std::sync::atomic::AtomicUsize;

fn cloud() -> MemoryCloud {
    MemoryCloud::new()
        .with_target_group(target_group("tg", TargetType::Ip))
        .with_target_group(target_group("tg-other", TargetType::Ip))
        .with_security_group("sg-node")
        .with_security_group("sg-alb")
}

fn registration(ip: &str) -> Registration {
    Registration {
        target: Target::new(ip, 80),
        availability_zone: None,
    }
}

fn record(arn: &str) -> OwnershipRecord {
    OwnershipRecord {
        binding: BindingId::resource("default", "web"),
        target_group: TargetGroupRef::new(arn),
        multi_cluster: false,
        targets: BTreeSet::new(),
        rules: BTreeSet::new(),
    }
}

/// Whether every write of a batch landed.
fn all_landed(answers: Vec<Result<()>>) -> bool {
    !answers.is_empty() && answers.iter().all(Result::is_ok)
}

/// One write of each kind, in turn, each `Ok` when it landed.
async fn five_writes<P>(ports: &P) -> Vec<bool>
where
    P: TargetRegistry + FirewallRules + OwnershipStore,
{
    let tg = TargetGroupRef::new("tg");
    let alb = Permission {
        protocol: Protocol::Tcp,
        ports: PortRange::single(80),
        peer: Peer::SecurityGroup("sg-alb".into()),
    };
    vec![
        all_landed(
            ports
                .write_records("prod", &[RecordWrite::Save(&record("tg"))])
                .await,
        ),
        ports
            .authorize_ingress(&"sg-node".into(), &[alb], "prod")
            .await
            .is_ok(),
        ports
            .register_targets(&tg, &[registration("10.0.0.1")])
            .await
            .is_ok(),
        ports
            .deregister_targets(&tg, &[Target::new("10.0.0.1", 80)])
            .await
            .is_ok(),
        all_landed(
            ports
                .write_records("prod", &[RecordWrite::Forget(&record("tg"))])
                .await,
        ),
    ]
}

#[test]
fn without_faults_every_call_goes_through_and_writes_are_counted() {
    let cloud = cloud();
    let faulty = Faulty::new(cloud.ports(), Faults::default());
    let landed = block_on(five_writes(&faulty));
    assert_eq!(landed, [true; 5]);
    assert_eq!(faulty.writes(), 5);
    assert_eq!(
        cloud.calls(),
        [
            "records: save tg x0",
            "authorize sg-node x1",
            "register tg x1",
            "deregister tg x1",
            "records: forget tg"
        ]
    );
    // Statuses and leases are neither writes nor stopped.
    let terms = LeaseTerms::new("test", 60);
    block_on(async {
        let claim = faulty.acquire_lease("prod", &terms).await.expect("acquire");
        assert_eq!(claim, LeaseClaim::Acquired);
        assert!(faulty.extend_lease("prod", &terms).await.expect("renew"));
        let status = BindingStatus {
            binding: BindingId::resource("default", "web"),
            observed_generation: None,
            ready: true,
            reason: crate::state::status::StatusReason::Converged,
            message: String::new(),
            since: None,
        };
        let saved = faulty
            .write_statuses("prod", &[StatusWrite::Save(&status)])
            .await;
        assert!(all_landed(saved), "status");
        assert_eq!(
            faulty
                .load_state("prod")
                .await
                .expect("state")
                .statuses
                .len(),
            1
        );
    });
    assert_eq!(faulty.writes(), 5);
}

#[test]
fn a_crash_after_k_writes_lets_exactly_k_land_and_fails_every_call_after() {
    for k in 1..=5 {
        let cloud = cloud();
        let crash = Faults {
            crash_after: Some(k),
            ..Faults::default()
        };
        let faulty = Faulty::new(cloud.ports(), crash);
        let landed = block_on(five_writes(&faulty));
        let expected: Vec<bool> = (0..5).map(|i| i < k).collect();
        assert_eq!(landed, expected, "k={k}");
        assert_eq!(faulty.writes(), k, "k={k}");
        assert_eq!(
            cloud.calls().len(),
            k,
            "nothing reached the cloud after the crash"
        );
        let read = block_on(faulty.target_health(&TargetGroupRef::new("tg")));
        let lease = block_on(faulty.acquire_lease("prod", &LeaseTerms::new("next", 60)));
        assert!(read.is_err() && lease.is_err(), "k={k}: reads fail too");
    }
}

#[test]
fn a_lease_stolen_after_k_writes_is_lost_at_the_next_renewal_and_held_by_the_thief() {
    let cloud = cloud();
    // Zero seconds: the victim's lease lapses while the wrapper waits, without a long wait.
    let victim = LeaseTerms::new("victim", 0);
    let thief = LeaseTerms::new("thief", 60);
    let stolen = Faults {
        steal_lease: Some((1, &thief)),
        ..Faults::default()
    };
    let faulty = Faulty::new(cloud.ports(), stolen);
    block_on(async {
        let claim = faulty
            .acquire_lease("prod", &victim)
            .await
            .expect("acquire");
        assert_eq!(claim, LeaseClaim::Acquired);
        assert!(
            faulty.extend_lease("prod", &victim).await.expect("renew"),
            "before any write"
        );
        let written = faulty
            .write_records("prod", &[RecordWrite::Save(&record("tg"))])
            .await;
        assert!(all_landed(written), "a write");
        assert!(
            !faulty.extend_lease("prod", &victim).await.expect("renew"),
            "after one write"
        );
        assert!(
            !faulty.extend_lease("prod", &victim).await.expect("renew"),
            "and after"
        );
        let release = faulty
            .release_lease("prod", &victim, true)
            .await
            .expect("release");
        assert_eq!(release, LeaseRelease::Lost);
    });
    assert_eq!(cloud.lease("prod"), Some((thief.holder.clone(), false)));
}

#[test]
fn the_hook_runs_once_right_before_the_first_write_and_never_before_a_read() {
    let cloud = cloud();
    let runs = AtomicUsize::new(0);
    let hook = async {
        runs.fetch_add(1, Ordering::SeqCst);
        cloud.delete_target_group("tg");
    };
    let deletion = Faults {
        before_first_write: Some(Box::pin(hook)),
        ..Faults::default()
    };
    let faulty = Faulty::new(cloud.ports(), deletion);
    let tg = TargetGroupRef::new("tg");
    block_on(async {
        faulty
            .target_health(&tg)
            .await
            .expect("read before the first write");
        assert_eq!(runs.load(Ordering::SeqCst), 0);
        let registered = faulty
            .register_targets(&tg, &[registration("10.0.0.1")])
            .await;
        assert!(
            matches!(registered, Err(Error::TargetGroupNotFound { .. })),
            "{registered:?}"
        );
        let other = TargetGroupRef::new("tg-other");
        let again = faulty
            .register_targets(&other, &[registration("10.0.0.1")])
            .await;
        assert!(again.is_ok(), "{again:?}");
    });
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(faulty.writes(), 2);
}

#[test]
fn registrations_refused_for_one_target_group_count_as_writes_and_reach_nothing() {
    let cloud = cloud();
    let refusal = Faults {
        refuse_registrations: Some("tg"),
        ..Faults::default()
    };
    let faulty = Faulty::new(cloud.ports(), refusal);
    block_on(async {
        let refused = faulty
            .register_targets(&TargetGroupRef::new("tg"), &[registration("10.0.0.1")])
            .await;
        assert!(
            matches!(refused, Err(Error::RegisterTargets { ref target_group, .. }) if target_group == "tg"),
            "{refused:?}"
        );
        let other = TargetGroupRef::new("tg-other");
        faulty
            .register_targets(&other, &[registration("10.0.0.1")])
            .await
            .expect("another group takes it");
        let kept = faulty.target_health(&TargetGroupRef::new("tg")).await;
        assert!(kept.expect("health").is_empty());
    });
    assert_eq!(faulty.writes(), 2);
    assert_eq!(cloud.calls(), ["register tg-other x1"]);
}

#[test]
fn a_binding_left_unprocessed_fails_alone_and_the_rest_of_its_batch_lands() {
    let cloud = cloud();
    let bad = BindingId::resource("default", "bad");
    let unprocessed = Faults {
        unprocessed_records: Some(&bad),
        ..Faults::default()
    };
    let faulty = Faulty::new(cloud.ports(), unprocessed);
    let web = record("tg");
    let bad_record = OwnershipRecord {
        binding: bad.clone(),
        ..record("tg-other")
    };
    let answers = block_on(faulty.write_records(
        "prod",
        &[RecordWrite::Save(&bad_record), RecordWrite::Save(&web)],
    ));
    assert_eq!(answers.len(), 2);
    assert!(
        matches!(&answers[0], Err(Error::SaveOwnership { binding, .. }) if binding == &bad),
        "{:?}",
        answers[0]
    );
    assert!(answers[1].is_ok(), "{:?}", answers[1]);
    // Only the other item reached the store, in one batch that counts as one write.
    assert_eq!(cloud.calls(), ["records: save tg x0"]);
    assert_eq!(faulty.writes(), 1);
    let stored = block_on(faulty.load("prod")).expect("load");
    assert_eq!(stored, [web]);

    // A batch of its writes alone reaches nothing, and still counts.
    let forgets = block_on(faulty.write_records("prod", &[RecordWrite::Forget(&bad_record)]));
    assert!(
        matches!(&forgets[..], [Err(Error::ForgetOwnership { binding, .. })] if binding == &bad),
        "{forgets:?}"
    );
    assert_eq!(cloud.calls().len(), 1);
    assert_eq!(faulty.writes(), 2);
}

#[test]
fn after_a_crash_every_item_of_a_batch_fails_and_statuses_fail_too() {
    let cloud = cloud();
    let crash = Faults {
        crash_after: Some(1),
        ..Faults::default()
    };
    let faulty = Faulty::new(cloud.ports(), crash);
    let (one, two) = (record("tg"), record("tg-other"));
    let status = BindingStatus {
        binding: BindingId::resource("default", "web"),
        observed_generation: None,
        ready: true,
        reason: crate::state::status::StatusReason::Converged,
        message: String::new(),
        since: None,
    };
    block_on(async {
        let first = faulty
            .write_records("prod", &[RecordWrite::Save(&one)])
            .await;
        assert!(all_landed(first), "the write the crash follows lands");
        let after = faulty
            .write_records("prod", &[RecordWrite::Save(&one), RecordWrite::Save(&two)])
            .await;
        assert_eq!(after.len(), 2);
        assert!(after.iter().all(Result::is_err), "{after:?}");
        let statuses = faulty
            .write_statuses("prod", &[StatusWrite::Save(&status)])
            .await;
        assert!(matches!(&statuses[..], [Err(_)]), "{statuses:?}");
    });
    assert_eq!(cloud.calls(), ["records: save tg x0"]);
}
