//! The cluster lease in the state table, against moto's DynamoDB: one run writes at a time,
//! nobody waits, events that arrive during a run make its holder run again, and a crashed
//! holder's lease lapses.

mod support;

use support::events::sample;
use support::harness::{CLUSTER, Harness};
use tgb_reconciler::lambda::handle_event;
use tgb_reconciler::lease::{LeaseClaim, LeaseRelease, LeaseTerms};
use tgb_reconciler::ports::OwnershipStore;

fn registrations(h: &Harness) -> usize {
    h.aws
        .calls
        .snapshot()
        .iter()
        .filter(|(name, _)| name.ends_with(".RegisterTargets"))
        .map(|(_, n)| n)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_invocations_apply_one_at_a_time_and_converge() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.kube.scale("default", "nginx-deployment", 3);
    h.place_pods().await;
    h.aws.calls.reset();

    let sweep = sample("scheduled-sweep.json", &[]);
    let sessions: Vec<_> = (0..8).map(|_| h.session(false)).collect();
    let runs = sessions
        .iter()
        .map(|session| handle_event(&sweep, None, session));
    let handled = futures::future::join_all(runs).await;

    let mut applied = 0;
    let mut skipped = 0;
    for outcome in handled.iter().flat_map(|h| &h.outcomes) {
        match (&outcome.report, &outcome.skipped) {
            (Some(report), None) => {
                assert!(report.is_clean(), "{report}");
                applied += 1;
            }
            (None, Some(why)) => {
                assert!(why.contains("holds the cluster's lease"), "{why}");
                skipped += 1;
            }
            other => panic!("neither applied nor skipped: {other:?}"),
        }
    }
    println!("8 invocations: {applied} runs applied, {skipped} skipped");
    assert!(skipped >= 1, "the invocations overlapped");
    // Three pods need one RegisterTargets call. Without the lease, every invocation that
    // observed the empty target group would register them again.
    assert_eq!(registrations(&h), 1, "{:?}", h.aws.calls.snapshot());
    assert_eq!(h.world.targets(&tg).await.len(), 3);
    // Every lease was let go: a new run takes it at once and finds nothing to do.
    let after = h.reconcile().await;
    assert!(
        after.skipped.is_none() && after.plan.is_converged(),
        "{}",
        after.plan
    );
}

#[tokio::test]
async fn a_busy_lease_skips_the_run_and_asks_its_holder_to_run_again() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    let other = LeaseTerms::new("other", 60);
    let store = &h.aws.store;
    assert_eq!(
        store.acquire_lease(CLUSTER, &other).await.expect("take"),
        LeaseClaim::Acquired
    );
    // Only the holder may renew it.
    assert!(
        !store
            .extend_lease(CLUSTER, &LeaseTerms::new("thief", 60))
            .await
            .expect("renew")
    );
    assert!(store.extend_lease(CLUSTER, &other).await.expect("renew"));

    h.aws.calls.reset();
    let outcome = h.reconcile().await;
    let why = outcome.skipped.as_deref().expect("skipped");
    assert!(why.contains(&other.holder), "{why}");
    assert!(
        h.mutating_calls()
            .keys()
            .all(|k| k.starts_with("DynamoDB."))
    );
    assert!(h.world.targets(&tg).await.is_empty(), "nothing was written");

    // The holder finds the lease dirty: it keeps it for one more run, then lets it go.
    assert_eq!(
        store
            .release_lease(CLUSTER, &other, true)
            .await
            .expect("release"),
        LeaseRelease::RunAgain
    );
    assert_eq!(
        store
            .release_lease(CLUSTER, &other, true)
            .await
            .expect("release"),
        LeaseRelease::Released
    );
    assert_eq!(
        store
            .release_lease(CLUSTER, &other, true)
            .await
            .expect("release"),
        LeaseRelease::Lost,
        "a lease already let go is not ours"
    );
    h.converge().await;
    assert_eq!(h.world.targets(&tg).await.len(), 1);
}

#[tokio::test]
async fn a_crashed_holders_lease_lapses_and_the_next_run_heals() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    // A run that died holding a one-second lease.
    let crashed = LeaseTerms::new("crashed", 1);
    assert_eq!(
        h.aws
            .store
            .acquire_lease(CLUSTER, &crashed)
            .await
            .expect("take"),
        LeaseClaim::Acquired
    );
    assert!(h.reconcile().await.skipped.is_some());
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let healed = h.converge().await;
    assert!(healed.skipped.is_none());
    assert_eq!(h.world.targets(&tg).await.len(), 1);
}
