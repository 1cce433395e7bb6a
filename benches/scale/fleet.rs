//! Many clusters, one account (the benchmark's sixth section): clusters of one deployment swept
//! at the same moment, each by a process of its own (its own clients and pacing), as the
//! template's per-cluster schedules start them, through a proxy in front of moto that notes
//! when every call arrives. Printed per bucket against the deployment's share: first sweeps and
//! steady sweeps as deployed (the share divided among the processes on the roster), and steady
//! sweeps with each process taking the whole share for itself, as before the roster.

use crate::support::fleet::{Fleet, Pace, Shape};
use crate::support::rate_meter::{figures, print_figures, print_unpaced};
use std::time::Instant;
use tgb_reconciler::pure::outcome::ClusterOutcome;

pub async fn rates(shape: Shape, share: f64) {
    let started = Instant::now();
    let fleet = Fleet::start(shape).await;
    println!(
        "{}; the world created in {:.1} s.\n",
        shape.describe(),
        started.elapsed().as_secs_f64()
    );
    println!(
        "Each cluster is swept by a process of its own, all at the same moment, through a proxy \
         that notes when each call arrives. `--api-rate-share {share}` is what all of them together \
         may draw from each bucket: its share of the burst at once, then its share of the refill a \
         second — over any stretch of time, no more calls than that burst plus the refill over the \
         stretch. *Burst drawn* is the smallest burst that, refilling at the share's rate, would \
         have let every call through as it came: within the share when it is no more than the \
         share's burst. Hence also the most calls in any one second (at most the burst and a \
         second's refill) and the highest rate over any ten seconds (at most the refill and a \
         tenth of the burst).\n"
    );
    let mut over = Vec::new();
    for (what, pace, first) in [
        ("First sweeps at once, as deployed", Pace::Together, true),
        ("Steady sweeps at once, as deployed", Pace::Together, false),
        (
            "Steady sweeps at once, each process taking the whole share for itself (before the roster)",
            Pace::EachAlone,
            false,
        ),
    ] {
        let started = Instant::now();
        let outcomes = fleet.sweep_at_once(share, pace).await;
        let took = started.elapsed();
        check(&outcomes, first);
        let calls = fleet.meter.calls();
        println!("**{what}** ({:.1} s):\n", took.as_secs_f64());
        let rows = figures(&calls, share);
        print_figures(&rows);
        print_unpaced(&calls);
        if pace == Pace::Together {
            over.extend(
                rows.iter()
                    .filter(|row| row.over() > row.room(shape.clusters))
                    .map(|row| format!("{what}, {}", row.bucket)),
            );
        }
    }
    crate::keep_target(
        "buckets drawn past the share by the runs together",
        over.len() as f64,
        0.0,
    );
    if !over.is_empty() {
        println!("Past the share: {}.\n", over.join("; "));
    }
}

/// The sweeps' premise: a first sweep applied everything cleanly, a steady one found the world
/// converged.
fn check(outcomes: &[Vec<ClusterOutcome>], first: bool) {
    for (c, outcomes) in outcomes.iter().enumerate() {
        let last = outcomes.last().expect("an outcome");
        if first {
            let report = last
                .report
                .as_ref()
                .unwrap_or_else(|| panic!("cluster {c} applied nothing:\n{}", last.plan));
            assert!(report.is_clean(), "cluster {c} failed:\n{report}");
        } else {
            assert!(last.plan.is_converged(), "cluster {c}:\n{}", last.plan);
        }
    }
}
