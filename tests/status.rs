//! Per-binding status: in the state table always, on the TargetGroupBinding when the identity
//! may write it, written only when it changes; against moto and the Kubernetes test API server.

mod support;

use support::harness::{CLUSTER, Harness};
use tgb_reconciler::model::BindingId;
use tgb_reconciler::ports::OwnershipStore;
use tgb_reconciler::state::status::{BindingStatus, StatusReason};

async fn stored(h: &Harness) -> Vec<BindingStatus> {
    h.aws
        .store
        .load_statuses(CLUSTER)
        .await
        .expect("load statuses")
}

fn resource_status(h: &Harness) -> serde_json::Value {
    h.kube
        .get("TargetGroupBinding", Some("default"), "my-tgb-alb-ip")
        .expect("the binding")["status"]
        .clone()
}

#[tokio::test]
async fn a_binding_status_follows_its_runs_and_a_steady_run_writes_none() {
    let h = Harness::start().await;
    h.ip_walkthrough().await;
    h.converge().await;
    let id = BindingId::resource("default", "my-tgb-alb-ip");

    let statuses = stored(&h).await;
    assert_eq!(statuses.len(), 1, "{statuses:?}");
    let status = &statuses[0];
    assert_eq!(
        (&status.binding, status.ready, status.reason.as_str()),
        (&id, true, "Converged")
    );
    let generation = status
        .observed_generation
        .expect("a resource has a generation");
    assert!(status.since.is_some());
    let published = resource_status(&h);
    assert_eq!(published["observedGeneration"], generation);
    assert_eq!(published["conditions"][0]["type"], "Ready");
    assert_eq!(published["conditions"][0]["status"], "True");

    // A steady run has nothing new to say: no status write anywhere.
    h.aws.calls.reset();
    h.kube.clear_requests();
    assert!(h.reconcile().await.plan.is_converged());
    assert!(h.mutating_calls().is_empty(), "{:?}", h.mutating_calls());
    assert_eq!(h.kube.request_count("PATCH"), 0);

    // Point it at a Service that does not exist: the binding fails, and says so.
    let mut binding = h
        .kube
        .get("TargetGroupBinding", Some("default"), "my-tgb-alb-ip")
        .expect("the binding");
    binding["spec"]["serviceRef"]["name"] = "missing".into();
    h.kube.apply(binding);
    let outcome = h.reconcile().await;
    assert_eq!(outcome.plan.failures().len(), 1, "{}", outcome.plan);
    let status = stored(&h).await.remove(0);
    assert_eq!(
        (status.ready, status.reason.as_str()),
        (false, "BindingFailed")
    );
    assert!(status.message.contains("missing"), "{}", status.message);
    assert!(status.observed_generation > Some(generation));
    assert_eq!(resource_status(&h)["conditions"][0]["status"], "False");

    // Deleted: its status goes with it.
    h.kube
        .delete("TargetGroupBinding", Some("default"), "my-tgb-alb-ip");
    h.reconcile().await;
    assert!(stored(&h).await.is_empty());
}

#[tokio::test]
async fn an_identity_that_may_not_write_resources_still_converges_and_records_status() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.kube.read_only(true);
    h.kube.clear_requests();
    h.converge().await;
    assert_eq!(h.world.targets(&tg).await.len(), 1);
    assert_eq!(stored(&h).await.len(), 1);
    assert_eq!(
        h.kube.request_count("PATCH"),
        1,
        "tried once, then left the resources alone"
    );
    assert!(resource_status(&h).is_null());
}

#[tokio::test]
async fn a_malformed_stored_status_never_blocks_a_run_and_is_rewritten() {
    use aws_sdk_dynamodb::types::AttributeValue;
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.converge().await;
    let table = aws_sdk_dynamodb::Client::new(&h.aws.sdk);
    table
        .put_item()
        .table_name(support::harness::TABLE)
        .item("pk", AttributeValue::S(format!("cluster#{CLUSTER}")))
        .item(
            "sk",
            AttributeValue::S("status#tgb/default/my-tgb-alb-ip".into()),
        )
        .item("status", AttributeValue::S("not a status".into()))
        .send()
        .await
        .expect("write a malformed status");
    h.world.deregister(&tg, &h.pod_ips()[0], 80).await;

    let healed = h.converge().await;
    assert!(healed.plan.cluster_error.is_none(), "{}", healed.plan);
    assert_eq!(h.world.targets(&tg).await.len(), 1, "the target is back");
    let statuses = stored(&h).await;
    assert_eq!(statuses.len(), 1);
    assert_eq!(statuses[0].reason, StatusReason::Converged);
}
