//! The cluster lease in the state table, against moto's DynamoDB: nobody waits, events that
//! arrive during a run make its holder run again, and a crashed holder's lease lapses. That one
//! run writes at a time, with eight invocations at once, is in the fault suite (tests/faults.rs).

mod support;

use support::harness::{CLUSTER, Harness};
use tgb_reconciler::ports::OwnershipStore;
use tgb_reconciler::state::lease::{LeaseClaim, LeaseRelease, LeaseTerms};

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
