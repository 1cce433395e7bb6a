//! progress: how far a long run has come, told every [`PROGRESS_EVERY`] while it runs. The run
//! bumps plain counters as it goes; a ticker beside it reads them, so telling costs the run
//! nothing and a run shorter than the period tells nothing.

use crate::pure::plan::PlanWork;
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::{Instant, MissedTickBehavior};

/// How often a long run says how far it has come.
pub const PROGRESS_EVERY: Duration = Duration::from_secs(10);

/// The counters of one cluster's run. Atomics, so that the run's future stays `Send`; relaxed,
/// as each is read alone.
#[derive(Debug, Default)]
pub struct Progress {
    observed: AtomicUsize,
    planned: AtomicUsize,
    applied: AtomicUsize,
    writes_done: AtomicUsize,
    writes_planned: AtomicUsize,
}

/// The counters at one moment. A write is one target change or one rule.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProgressCounts {
    /// Bindings the run read and planned for.
    pub observed: usize,
    /// Bindings with targets or records to write.
    pub planned: usize,
    /// Bindings whose window of writes is done (landed or failed).
    pub applied: usize,
    pub writes_done: usize,
    pub writes_planned: usize,
}

impl Progress {
    /// A new plan: its counts replace the last run's (a run under the lease may go again).
    pub fn planned(&self, work: PlanWork) {
        self.observed.store(work.bindings, Ordering::Relaxed);
        self.planned.store(work.writing, Ordering::Relaxed);
        self.writes_planned.store(work.writes, Ordering::Relaxed);
        self.applied.store(0, Ordering::Relaxed);
        self.writes_done.store(0, Ordering::Relaxed);
    }

    pub fn applied(&self, bindings: usize) {
        self.applied.fetch_add(bindings, Ordering::Relaxed);
    }

    pub fn wrote(&self, writes: usize) {
        self.writes_done.fetch_add(writes, Ordering::Relaxed);
    }

    pub fn counts(&self) -> ProgressCounts {
        ProgressCounts {
            observed: self.observed.load(Ordering::Relaxed),
            planned: self.planned.load(Ordering::Relaxed),
            applied: self.applied.load(Ordering::Relaxed),
            writes_done: self.writes_done.load(Ordering::Relaxed),
            writes_planned: self.writes_planned.load(Ordering::Relaxed),
        }
    }
}

impl fmt::Display for ProgressCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "bindings: {} observed, {} planned, {} applied; writes: {} of {} done",
            self.observed, self.planned, self.applied, self.writes_done, self.writes_planned
        )
    }
}

/// Runs `work`, handing `tell` the counts every `every` while it runs: first `every` after the
/// start, so a shorter run tells nothing. The ticker ends with the work.
pub async fn telling<T>(
    progress: &Progress,
    every: Duration,
    mut tell: impl FnMut(Duration, ProgressCounts),
    work: impl Future<Output = T>,
) -> T {
    let started = Instant::now();
    let mut ticks = tokio::time::interval_at(started + every, every);
    // A ticker that fell behind (a blocked thread) tells once, not a burst of stale lines.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    tokio::pin!(work);
    loop {
        tokio::select! {
            // The work first: a run that ends at a tick ends without a line.
            biased;
            done = &mut work => return done,
            at = ticks.tick() => tell(at.saturating_duration_since(started), progress.counts()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::block_on_paused;

    #[test]
    fn a_run_tells_its_counts_every_ten_seconds_and_a_shorter_run_tells_nothing() {
        let secs = Duration::from_secs;
        // (case, how long the run takes, when it tells, in seconds after its start)
        let cases = [
            ("a run of 9 s tells nothing", secs(9), vec![]),
            (
                "a run of exactly 10 s ends without a line",
                secs(10),
                vec![],
            ),
            (
                "a run of 10.5 s tells once, at 10 s",
                Duration::from_millis(10_500),
                vec![10],
            ),
            (
                "a run of 35 s tells at 10, 20 and 30 s",
                secs(35),
                vec![10, 20, 30],
            ),
        ];
        for (case, length, want) in cases {
            let progress = Progress::default();
            let told = block_on_paused(async {
                let mut told = Vec::new();
                let work = async {
                    progress.planned(PlanWork {
                        bindings: 40,
                        writing: 30,
                        writes: 90,
                    });
                    // One binding applied, with three writes, each second.
                    for _ in 0..length.as_secs() {
                        tokio::time::sleep(secs(1)).await;
                        progress.applied(1);
                        progress.wrote(3);
                    }
                    let rest = length - secs(length.as_secs());
                    if !rest.is_zero() {
                        tokio::time::sleep(rest).await;
                    }
                };
                telling(
                    &progress,
                    PROGRESS_EVERY,
                    |at, counts| told.push((at.as_secs(), counts)),
                    work,
                )
                .await;
                told
            });
            let at: Vec<u64> = told.iter().map(|(at, _)| *at).collect();
            assert_eq!(at, want, "{case}");
            for (at, counts) in told {
                // What is done by then: a tick and a bump at the same instant may go either way.
                let applied = usize::try_from(at).unwrap_or(usize::MAX);
                assert!(
                    counts.applied == applied || counts.applied + 1 == applied,
                    "{case}: {counts}"
                );
                assert_eq!(
                    (counts.observed, counts.planned, counts.writes_planned),
                    (40, 30, 90),
                    "{case}"
                );
                assert_eq!(counts.writes_done, counts.applied * 3, "{case}");
            }
        }
    }

    #[test]
    fn the_progress_line_names_each_count() {
        let counts = ProgressCounts {
            observed: 1_000,
            planned: 400,
            applied: 75,
            writes_done: 1_210,
            writes_planned: 9_800,
        };
        assert_eq!(
            counts.to_string(),
            "bindings: 1000 observed, 400 planned, 75 applied; writes: 1210 of 9800 done"
        );
    }
}
