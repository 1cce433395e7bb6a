//! A cluster's run against a deadline, end to end on the in-memory ports and a paused clock:
//! it stops between windows, lets its lease go, says what it left, and the next run (from live
//! state, without a deadline) converges the rest.

use crate::model::cluster::{
    BindingResource, ClusterSnapshot, Endpoint, EndpointPort, EndpointSlice, Service, ServicePort,
};
use crate::model::{BindingId, TargetType};
use crate::pure::plan::Policy;
use crate::pure::scope::Scope;
use crate::shell::apply::{Deadline, RECORD_WINDOW};
use crate::shell::cluster_run::{RunOptions, reconcile_cluster};
use crate::state::lease::LeaseTerms;
use crate::testing::{MemoryCloud, block_on_paused, target_group};
use serde_json::json;
use std::time::Duration;

fn arn(i: usize) -> String {
    format!("arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/tg-{i:02}/0123")
}

/// `count` ip bindings, each of its own Service with one ready endpoint, into its own group.
fn cluster(count: usize) -> MemoryCloud {
    let mut snapshot = ClusterSnapshot {
        binding_crd_installed: true,
        ..ClusterSnapshot::default()
    };
    for i in 0..count {
        let name = format!("b{i:02}");
        snapshot.binding_resources.push(BindingResource {
            namespace: "default".into(),
            name: name.clone(),
            generation: Some(1),
            annotations: Default::default(),
            spec: json!({
                "targetGroupARN": arn(i),
                "targetType": "ip",
                "serviceRef": {"name": name, "port": 80},
            }),
        });
        snapshot.services.push(Service {
            namespace: "default".into(),
            name: name.clone(),
            service_type: "ClusterIP".into(),
            ports: vec![ServicePort {
                name: None,
                port: 80,
                protocol: "TCP".into(),
                node_port: None,
            }],
        });
        snapshot.endpoint_slices.push(EndpointSlice {
            namespace: "default".into(),
            name: format!("{name}-x").into(),
            service_name: Some(name),
            address_type: "IPv4".into(),
            ports: vec![EndpointPort {
                name: None,
                port: Some(8080),
                protocol: Some("TCP".into()),
            }],
            endpoints: vec![Endpoint {
                addresses: vec![format!("10.0.{i}.1").into()],
                ready: Some(true),
                terminating: None,
                node_name: None,
                pod: None,
            }],
        });
    }
    (0..count)
        .fold(MemoryCloud::new(), |cloud, i| {
            cloud.with_target_group(target_group(&arn(i), TargetType::Ip))
        })
        .with_snapshot(snapshot)
}

fn bindings(range: std::ops::Range<usize>) -> Vec<BindingId> {
    range
        .map(|i| BindingId::resource("default", &format!("b{i:02}")))
        .collect()
}

#[test]
fn a_run_at_its_deadline_lets_the_lease_go_reports_what_it_left_and_the_next_run_converges_it() {
    let count = 2 * RECORD_WINDOW + 5;
    // One second a write: a window of 25 bindings takes 27 s. With 80 s left the first window
    // runs, and the second (assumed 40 s) would end inside the 20 s reserve.
    let cloud = cluster(count).taking_per_write(Duration::from_secs(1));
    let lease = LeaseTerms::new("lambda:1", 140);
    let options = |deadline: Option<Duration>| RunOptions {
        dry_run: false,
        lease: Some(lease.clone()),
        deadline: deadline.map(Deadline::after),
    };
    let run = |options: RunOptions| {
        let cloud = &cloud;
        async move {
            reconcile_cluster(
                "prod",
                Ok(cloud),
                &cloud.ports(),
                &Policy::default(),
                &Scope::Cluster,
                &options,
            )
            .await
        }
    };
    let (first, published, second) = block_on_paused(async {
        let first = run(options(Some(Duration::from_secs(80)))).await;
        let published = cloud.published_statuses();
        let second = run(options(None)).await;
        (first, published, second)
    });

    assert_eq!(first.len(), 1, "a stopped run does not go again");
    let report = first[0].report.as_ref().expect("applied");
    let stopped = report.stopped.as_ref().expect("stopped at the deadline");
    let left = bindings(RECORD_WINDOW..count);
    assert_eq!(stopped.left.iter().cloned().collect::<Vec<_>>(), left);
    assert_eq!(report.done().len(), RECORD_WINDOW);
    assert!(report.is_clean(), "{report}");
    assert_eq!(crate::pure::outcome::exit_code(&first), 3);
    assert_eq!(
        cloud.lease("prod"),
        None,
        "the lease was let go, not left to lapse"
    );
    let calls = cloud.calls();
    let released = calls.iter().position(|c| c == "release lease (released)");
    let first_end = released.expect("released after the first run");
    assert_eq!(
        calls[..first_end]
            .iter()
            .filter(|c| c.starts_with("register"))
            .count(),
        RECORD_WINDOW,
        "{calls:#?}"
    );
    // Statuses: the applied bindings converged; the left ones have none yet.
    let published: Vec<BindingId> = published.into_iter().map(|s| s.binding).collect();
    assert_eq!(published, bindings(0..RECORD_WINDOW));

    // The next run reads live state: only what was left is planned, and it converges.
    let report = second[0].report.as_ref().expect("applied");
    assert_eq!(report.stopped, None);
    let registered: Vec<BindingId> = report.done().iter().map(|c| c.binding.clone()).collect();
    assert_eq!(registered, left);
    assert_eq!(crate::pure::outcome::exit_code(&second), 0);
    assert_eq!(cloud.lease("prod"), None);
}
