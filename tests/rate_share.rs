//! Many clusters, one account (issue 13): four clusters of one deployment, swept at once, each
//! by a process of its own, keep together within `--api-rate-share` of each AWS API bucket, as
//! a proxy in front of the AWS emulator counts their calls. The same sweeps with each process
//! taking the whole share for itself (as before the roster of pacers) go over it: the check can
//! fail.

mod support;

use std::time::{Duration, Instant};
use support::fleet::{Fleet, Pace, Shape};
use support::rate_meter::{BucketFigures, burst_drawn, figures, peak_in, print_figures};
use tgb_reconciler::pure::outcome::ClusterOutcome;

const SHARE: f64 = tgb_reconciler::adapters::pacing::DEFAULT_SHARE;
/// Small, but enough that every pacer waits on ELBv2 reads and on rule writes: 4 × 10 target
/// groups read twice by a first sweep (a look, then under the lease), 4 × 8 security groups.
const SHAPE: Shape = Shape {
    clusters: 4,
    nodes: 8,
    bindings: 10,
};
/// The whole test, the world's creation included, ends well within this.
const LIMIT: Duration = Duration::from_secs(300);

fn tolerance(row: &BucketFigures) -> f64 {
    row.room(SHAPE.clusters)
}

fn last_report(
    cluster: usize,
    outcomes: &[ClusterOutcome],
) -> &tgb_reconciler::pure::report::Report {
    let last = outcomes
        .last()
        .unwrap_or_else(|| panic!("cluster {cluster}: no outcome"));
    let report = last
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("cluster {cluster} applied nothing:\n{}", last.plan));
    assert!(
        report.is_clean(),
        "cluster {cluster} failed:\n{}\n{report}",
        last.plan
    );
    report
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn four_clusters_sweeping_at_once_keep_together_within_the_share_of_every_bucket() {
    tokio::time::timeout(LIMIT, async {
        let fleet = Fleet::start(SHAPE).await;

        // First sweeps, as deployed: every target registered, every rule authorized.
        let started = Instant::now();
        let outcomes = fleet.sweep_at_once(SHARE, Pace::Together).await;
        let took = started.elapsed();
        for (c, outcomes) in outcomes.iter().enumerate() {
            let report = last_report(c, outcomes);
            assert_eq!(report.done().len(), SHAPE.bindings * SHAPE.nodes, "cluster {c}");
            assert_eq!(report.rules_done.len(), SHAPE.nodes, "cluster {c}");
        }
        let calls = fleet.meter.calls();
        let together = figures(&calls, SHARE);
        println!("{}, first sweeps at once, sharing ({:.1} s):\n", SHAPE.describe(), took.as_secs_f64());
        print_figures(&together);
        for row in &together {
            assert!(
                row.burst_drawn <= f64::from(row.allowed.burst) + tolerance(row),
                "{}: drew a burst of {:.1} at {:.2} a second, past the share's {} (and {:.1} of room)",
                row.bucket,
                row.burst_drawn,
                row.allowed.per_second,
                row.allowed.burst,
                tolerance(row)
            );
        }
        // The reads and the rule writes were paced, not merely few.
        for bucket in ["ELBv2 reads", "EC2 rule writes"] {
            let row = together.iter().find(|r| r.bucket == bucket).expect("a paced bucket");
            assert!(
                row.calls as f64 > f64::from(row.allowed.burst) + 2.0 * row.allowed.per_second,
                "{bucket}: only {} calls, within the burst: nothing to pace",
                row.calls
            );
        }

        // Steady sweeps, each process alone: together they draw several shares at once.
        let outcomes = fleet.sweep_at_once(SHARE, Pace::EachAlone).await;
        for (c, outcomes) in outcomes.iter().enumerate() {
            let last = outcomes.last().expect("an outcome");
            assert!(last.plan.is_converged(), "cluster {c}:\n{}", last.plan);
        }
        let alone = figures(&fleet.meter.calls(), SHARE);
        println!("The same clusters, steady sweeps at once, each process alone:\n");
        print_figures(&alone);
        let reads = &alone[0];
        assert_eq!(reads.bucket, "ELBv2 reads");
        assert!(
            reads.burst_drawn > f64::from(reads.allowed.burst) + tolerance(reads),
            "each alone, the reads drew only {:.1}: the check could not have failed",
            reads.burst_drawn
        );
    })
    .await
    .expect("the fleet's sweeps ended in time");
}

#[test]
fn the_meter_finds_the_burst_a_sequence_of_calls_drew_and_its_busiest_second() {
    let at = |seconds: &[f64]| -> Vec<Duration> {
        seconds
            .iter()
            .map(|s| Duration::from_secs_f64(*s))
            .collect()
    };
    // (case, call times, rate, burst drawn)
    let cases = [
        ("nothing", at(&[]), 5.0, 0.0),
        ("one call", at(&[3.0]), 5.0, 1.0),
        ("ten at once", at(&[0.0; 10]), 5.0, 10.0),
        (
            "one every 200 ms at 5 a second",
            at(&[0.0, 0.2, 0.4, 0.6]),
            5.0,
            1.0,
        ),
        (
            "four at once, then on time",
            at(&[0.0, 0.0, 0.0, 0.0, 0.2]),
            5.0,
            4.0,
        ),
        (
            "on time, then three at once",
            at(&[0.0, 0.2, 1.0, 1.0, 1.0]),
            5.0,
            3.0,
        ),
    ];
    for (case, times, rate, drawn) in cases {
        let got = burst_drawn(&times, rate);
        assert!((got - drawn).abs() < 1e-9, "{case}: {got}");
    }
    let times = at(&[0.0, 0.5, 0.99, 1.0, 1.5]);
    assert_eq!(peak_in(&times, Duration::from_secs(1)), 3);
}
