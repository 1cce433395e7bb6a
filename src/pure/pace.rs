//! pace: how much of each AWS API rate bucket one process may draw on, when every run of the
//! deployment together keeps within `--api-rate-share` of the account's buckets (DESIGN §6).
//!
//! One deployment serves many clusters, and its runs go on at once: a scheduled sweep per
//! cluster (the template's schedules fire together), event invocations, watchers' changes, a
//! `reconcile` on a terminal. Each process paces its calls through its own buckets; alone, each
//! would take the whole share, and eight sweeping together would take eight shares. So the
//! share is divided:
//!
//! - **The roster.** A process that draws on the buckets lists itself in the state table, with
//!   a term ([`PACER_TERM`]); the entries still in their term are the *pacers*. A process
//!   counts once however many clusters it runs (a session's clusters, or a watcher's, share its
//!   buckets). It lists itself only when it draws: an idle watcher lapses off the roster and
//!   makes no call for it; a process that stops taking calls takes itself off.
//! - **An equal part.** Each pacer takes `1 / pacers` of the share of every bucket: of its
//!   refill, and of its burst rounded down but never less than one call ([`BucketSize::divided`]).
//! - **Counting again.** A drawing pacer reads the roster again every [`COUNT_EVERY`] (and
//!   [`CONFIRM_AFTER`] a check-in, since pacers listing themselves together each see only the
//!   ones before them), so its part follows runs that come and go within seconds; it renews its
//!   entry once less than [`RENEW_WITHIN`] of its term is left.
//! - **Joining.** A pacer that joins (or joins again after lapsing) starts with at most the
//!   burst it would have if each of the deployment's clusters were drawing ([`level_at_join`]):
//!   the ones joining at the same moment do not know of each other yet, and must not each take
//!   a burst meant for fewer. A join never adds calls to what is left.
//! - **When the roster cannot be read**, a pacer divides by the larger of its last count and
//!   the deployment's clusters ([`pacers_unknown`]), and asks again after [`COUNT_EVERY`].
//! - **A dry run**, which lists nothing, divides by the larger of the pacers and itself, and
//!   the deployment's clusters ([`pacers_not_listed`]): the others cannot count it.
//! - **Clocks.** An entry counts while its term is between now and [`AHEAD_AT_MOST`] from now
//!   ([`in_term`]); one further ahead was written by a clock far ahead, and counts as lapsed.
//!
//! Every decision here is a function of plain values; `adapters::pacing` keeps the clock, the
//! buckets and the roster's item.

use std::time::Duration;

/// One of the account's API rate buckets (per account and region): how many calls it allows at
/// once, and how many it gives back a second.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BucketSize {
    pub burst: u32,
    pub refill_per_second: f64,
}

/// ELBv2 Describe* (target groups, tags, target health, load balancers). ELBv2 publishes no
/// figures; this is the bucket observed.
pub const ELB_READS: BucketSize = BucketSize {
    burst: 40,
    refill_per_second: 10.0,
};
/// EC2 Describe* with filters or ids (EC2's documented default).
pub const EC2_READS: BucketSize = BucketSize {
    burst: 100,
    refill_per_second: 20.0,
};
/// AuthorizeSecurityGroupIngress and RevokeSecurityGroupIngress (EC2's documented default).
pub const EC2_RULE_WRITES: BucketSize = BucketSize {
    burst: 50,
    refill_per_second: 5.0,
};

/// What may be drawn from a bucket: at most `burst` calls at once, and `per_second` after.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Allowance {
    pub burst: u32,
    pub per_second: f64,
}

impl BucketSize {
    /// The deployment's part of the bucket: `share` of its burst and of its refill.
    pub fn share(self, share: f64) -> Allowance {
        self.divided(share, 1)
    }

    /// One pacer's part when `pacers` draw on the deployment's share at once: an equal part of
    /// the refill, and of the burst rounded down, but at least one call (a bucket that allows
    /// none would stop the run). Beyond as many pacers as the share has calls of burst, their
    /// first calls together may exceed that burst by one each; the refill stays divided.
    pub fn divided(self, share: f64, pacers: usize) -> Allowance {
        let pacers = pacers.max(1) as f64;
        let burst = (f64::from(self.burst) * share / pacers).floor();
        Allowance {
            // Saturating: `as` from a float clamps, and NaN (never given) becomes 0.
            burst: (burst as u32).max(1),
            per_second: self.refill_per_second * share / pacers,
        }
    }
}

/// How long an entry on the roster counts after its check-in.
pub const PACER_TERM: Duration = Duration::from_secs(30);
/// A drawing pacer checks in again once less than this is left of its term.
pub const RENEW_WITHIN: Duration = Duration::from_secs(10);
/// How often a drawing pacer reads the roster again.
pub const COUNT_EVERY: Duration = Duration::from_secs(2);
/// How soon a count that came with a check-in is read again: pacers that check in at the same
/// moment each see only the ones before them.
pub const CONFIRM_AFTER: Duration = Duration::from_millis(500);
/// The most lapsed entries one check-in takes off the roster (the rest go with the next ones).
pub const MAX_FORGET: usize = 20;
/// How far ahead an entry's term may end and still count: twice [`PACER_TERM`]. A term
/// further ahead was set by a clock running far ahead (its host perhaps since gone), and
/// would otherwise count for as long as that clock is ahead.
pub const AHEAD_AT_MOST: Duration = Duration::from_secs(2 * PACER_TERM.as_secs());

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

/// The latest end of a term that counts at `now_ms` (epoch milliseconds).
pub fn furthest_until(now_ms: u64) -> u64 {
    now_ms.saturating_add(millis(AHEAD_AT_MOST))
}

/// Whether an entry counting until `until_ms` is in its term at `now_ms`: not ended, and not
/// further ahead than [`AHEAD_AT_MOST`]. Any other entry is lapsed.
pub fn in_term(until_ms: u64, now_ms: u64) -> bool {
    (now_ms..=furthest_until(now_ms)).contains(&until_ms)
}

/// One entry of the roster: who draws, and until when it counts (epoch milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pacer {
    pub holder: String,
    pub until_ms: u64,
}

/// What the roster says to one pacer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Tally {
    /// The pacers drawing now: the others still in their term, and this one (listed or not:
    /// it is drawing).
    pub pacers: usize,
    /// Whether this pacer's own entry is there and in its term.
    pub listed: bool,
    /// Lapsed entries, for the next check-in to take off (at most [`MAX_FORGET`]).
    pub lapsed: Vec<String>,
}

/// Reads the roster as `me` at `now_ms` (epoch milliseconds).
pub fn tally(roster: &[Pacer], me: &str, now_ms: u64) -> Tally {
    let live = |p: &&Pacer| in_term(p.until_ms, now_ms);
    let others = roster
        .iter()
        .filter(live)
        .filter(|p| p.holder != me)
        .count();
    Tally {
        pacers: others + 1,
        listed: roster.iter().filter(live).any(|p| p.holder == me),
        lapsed: roster
            .iter()
            .filter(|p| !in_term(p.until_ms, now_ms))
            .map(|p| p.holder.clone())
            .take(MAX_FORGET)
            .collect(),
    }
}

/// How many pacers to divide by when the roster cannot be read: the larger of the last count
/// and the deployment's clusters, as if each were being swept (at least one).
pub fn pacers_unknown(last: Option<usize>, clusters: usize) -> usize {
    last.unwrap_or(0).max(clusters).max(1)
}

/// How many pacers a process that does not list itself (a dry run) divides by, having counted
/// `counted` (the others and itself): at least the deployment's `clusters`, since the others
/// do not count it, and a dry run of the whole deployment runs one process per cluster.
pub fn pacers_not_listed(counted: usize, clusters: usize) -> usize {
    counted.max(clusters).max(1)
}

/// The calls a pacer may make at once when it joins the roster, or joins again after lapsing:
/// the burst of one of `pacers`, or of one of the deployment's `clusters` when more. It grows
/// to its own burst at its own rate.
pub fn level_at_join(bucket: BucketSize, share: f64, pacers: usize, clusters: usize) -> f64 {
    f64::from(bucket.divided(share, pacers.max(clusters)).burst)
}

/// The roster's last answer, for one process, by its own clock (the time since it started).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct View {
    /// Pacers to divide by; 1 when alone.
    pub pacers: usize,
    /// Joins so far: a bucket that sees this grow starts again at [`level_at_join`].
    pub joins: u64,
}

/// When this pacer last asked the roster, and how that went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Asked {
    at: Duration,
    checked_in: bool,
    failed: bool,
}

/// Where one pacer stands with the roster.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Standing {
    /// Until when its entry counts, by its own clock (from when the check-in was sent);
    /// `None` when it is not on the roster.
    listed_until: Option<Duration>,
    asked: Option<Asked>,
    pacers: Option<usize>,
    joins: u64,
    /// Lapsed entries the last answer showed, for the next check-in to take off, and when
    /// that answer was asked for.
    lapsed: Vec<String>,
    lapsed_at: Duration,
}

/// What a pacer about to draw asks the roster first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Nothing: the last count holds.
    Draw,
    /// Read the roster.
    Count,
    /// List itself (or renew its entry), taking lapsed entries off; the answer counts too.
    CheckIn,
}

impl Standing {
    /// The last count and joins, as the buckets size themselves by; `None` before any answer.
    pub fn view(&self) -> Option<View> {
        self.pacers.map(|pacers| View {
            pacers,
            joins: self.joins,
        })
    }

    /// What to ask the roster before drawing at `at`. A pacer that may not write (a dry run)
    /// only reads it.
    pub fn next(&self, at: Duration, may_write: bool) -> Next {
        let Some(asked) = self.asked else {
            return if may_write {
                Next::CheckIn
            } else {
                Next::Count
            };
        };
        let since = at.saturating_sub(asked.at);
        // A roster that did not answer is asked again only after a pause, whatever is due.
        if asked.failed && since < COUNT_EVERY {
            return Next::Draw;
        }
        let renew = self
            .listed_until
            .is_none_or(|until| until.saturating_sub(at) < RENEW_WITHIN);
        if may_write && renew {
            return Next::CheckIn;
        }
        let every = if asked.checked_in {
            CONFIRM_AFTER
        } else {
            COUNT_EVERY
        };
        if since >= every {
            Next::Count
        } else {
            Next::Draw
        }
    }

    /// Whether a draw at `at` waits for the roster's answer rather than going by the last
    /// count: before any count, and while this pacer is off the roster (the others do not
    /// count it) and is about to list itself — unless the roster did not answer last, when
    /// the count it goes by is already the high one of [`pacers_unknown`] (and waiting on a
    /// slow roster would hold every call).
    pub fn must_wait(&self, at: Duration, may_write: bool) -> bool {
        let next = self.next(at, may_write);
        let failed = self.asked.is_some_and(|asked| asked.failed);
        next != Next::Draw
            && (self.pacers.is_none() || (may_write && !self.is_listed(at) && !failed))
    }

    /// The answer to a check-in sent at `at`. A pacer that was not listed has joined.
    pub fn checked_in(&mut self, at: Duration, tally: &Tally) {
        if !self.is_listed(at) {
            self.joins += 1;
        }
        self.listed_until = Some(at + PACER_TERM);
        self.pacers = Some(tally.pacers);
        self.lapsed.clone_from(&tally.lapsed);
        self.lapsed_at = at;
        self.asked = Some(Asked {
            at,
            checked_in: true,
            failed: false,
        });
    }

    /// The answer to a read sent at `at`. A pacer missing from the roster is not listed any
    /// more (its entry was taken off); a first count joins. One that may not write (a dry
    /// run) is never listed, and divides by [`pacers_not_listed`] among the deployment's
    /// `clusters`.
    pub fn counted(&mut self, at: Duration, tally: &Tally, may_write: bool, clusters: usize) {
        if self.pacers.is_none() {
            self.joins += 1;
        }
        if !tally.listed {
            self.listed_until = None;
        }
        self.pacers = Some(if may_write {
            tally.pacers
        } else {
            pacers_not_listed(tally.pacers, clusters)
        });
        self.lapsed.clone_from(&tally.lapsed);
        self.lapsed_at = at;
        self.asked = Some(Asked {
            at,
            checked_in: false,
            failed: false,
        });
    }

    /// No answer, known at `at` (after the call failed or timed out, so that the pause before
    /// asking again follows it): divide by [`pacers_unknown`] until the roster answers again.
    pub fn unanswered(&mut self, at: Duration, clusters: usize) {
        if self.pacers.is_none() {
            self.joins += 1;
        }
        self.pacers = Some(pacers_unknown(self.pacers, clusters));
        self.asked = Some(Asked {
            at,
            checked_in: false,
            failed: true,
        });
    }

    /// Taken off the roster: the next draw lists itself again, as a join. What it saw lapsed
    /// is forgotten: by its next check-in those may have joined again.
    pub fn left(&mut self) {
        self.listed_until = None;
        self.lapsed.clear();
    }

    /// The lapsed entries to take off at a check-in at `at`: those of an answer asked for
    /// less than [`COUNT_EVERY`] before, none otherwise (an older one's may have joined
    /// again since).
    pub fn lapsed(&self, at: Duration) -> &[String] {
        if at.saturating_sub(self.lapsed_at) < COUNT_EVERY {
            &self.lapsed
        } else {
            &[]
        }
    }

    /// Whether it is on the roster at `at` (and should take itself off when done).
    pub fn is_listed(&self, at: Duration) -> bool {
        self.listed_until.is_some_and(|until| until > at)
    }
}

/// The calls a pacer may make now from one bucket: a token bucket, on the pacer's own clock.
#[derive(Debug, Clone, PartialEq)]
pub struct Tokens {
    level: f64,
    at: Duration,
    allowance: Allowance,
}

impl Tokens {
    /// A bucket holding `level` calls (at most its burst) at `at`.
    pub fn holding(allowance: Allowance, level: f64, at: Duration) -> Self {
        Self {
            level: level.clamp(0.0, f64::from(allowance.burst)),
            at,
            allowance,
        }
    }

    fn refill(&mut self, at: Duration) {
        if at > self.at {
            let refilled = (at - self.at).as_secs_f64() * self.allowance.per_second;
            self.level = (self.level + refilled).min(f64::from(self.allowance.burst));
            self.at = at;
        }
    }

    /// Takes one call at `at` when there is one (`Duration::ZERO`); otherwise takes nothing and
    /// says how long until there is.
    pub fn take(&mut self, at: Duration) -> Duration {
        self.refill(at);
        if self.level >= 1.0 {
            self.level -= 1.0;
            return Duration::ZERO;
        }
        let missing = 1.0 - self.level;
        // A rate of nothing (never given: the share is above 0) waits as long as can be said.
        Duration::try_from_secs_f64(missing / self.allowance.per_second)
            .unwrap_or(Duration::MAX)
            .max(Duration::from_micros(1))
    }

    /// Another allowance from `at` on: what refilled until then stays, up to the new burst.
    pub fn resize(&mut self, allowance: Allowance, at: Duration) {
        self.refill(at);
        self.allowance = allowance;
        self.level = self.level.min(f64::from(allowance.burst));
    }

    /// At most `level` calls left at `at` (and at most the burst): a join. It never adds calls:
    /// a pacer joining again with fewer left keeps what it has.
    pub fn restart(&mut self, level: f64, at: Duration) {
        self.refill(at);
        self.level = self
            .level
            .min(level)
            .clamp(0.0, f64::from(self.allowance.burst));
    }

    pub fn level(&self) -> f64 {
        self.level
    }

    pub fn allowance(&self) -> Allowance {
        self.allowance
    }
}

/// One bucket as one pacer draws on it: its tokens, sized for the roster's last answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Drawing {
    bucket: BucketSize,
    share: f64,
    clusters: usize,
    tokens: Tokens,
    view: View,
}

impl Drawing {
    /// A full bucket, sized for `view` (a process alone: `View { pacers: 1, joins: 0 }`). A
    /// draw that sees more joins (this process joined the roster, or joined it again after
    /// lapsing, idle) keeps at most [`level_at_join`], as a new process would have.
    pub fn new(bucket: BucketSize, share: f64, clusters: usize, view: View, at: Duration) -> Self {
        let allowance = bucket.divided(share, view.pacers);
        Self {
            bucket,
            share,
            clusters,
            tokens: Tokens::holding(allowance, f64::from(allowance.burst), at),
            view,
        }
    }

    /// Takes one call at `at` by the roster's answer `view`: `Duration::ZERO`, or how long
    /// until there is one.
    pub fn take(&mut self, view: View, at: Duration) -> Duration {
        if view.pacers != self.view.pacers {
            self.tokens
                .resize(self.bucket.divided(self.share, view.pacers), at);
        }
        if view.joins != self.view.joins {
            self.tokens.restart(
                level_at_join(self.bucket, self.share, view.pacers, self.clusters),
                at,
            );
        }
        self.view = view;
        self.tokens.take(at)
    }

    pub fn tokens(&self) -> &Tokens {
        &self.tokens
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;
    const MS: fn(u64) -> Duration = Duration::from_millis;

    fn tally_of(pacers: usize, listed: bool) -> Tally {
        Tally {
            pacers,
            listed,
            lapsed: Vec::new(),
        }
    }

    #[test]
    fn each_pacer_takes_an_equal_part_of_the_share_with_the_burst_rounded_down_to_at_least_one() {
        // (case, bucket, share, pacers, burst, per second)
        let cases = [
            ("alone, half of ELBv2 reads", ELB_READS, 0.5, 1, 20, 5.0),
            ("four, half of ELBv2 reads", ELB_READS, 0.5, 4, 5, 1.25),
            ("three: 20 / 3 rounds down", ELB_READS, 0.5, 3, 6, 5.0 / 3.0),
            ("no pacer counted is one", ELB_READS, 0.5, 0, 20, 5.0),
            (
                "eight, the whole of rule writes",
                EC2_RULE_WRITES,
                1.0,
                8,
                6,
                0.625,
            ),
            (
                "more pacers than calls of burst",
                EC2_RULE_WRITES,
                0.5,
                30,
                1,
                2.5 / 30.0,
            ),
            (
                "a tiny share still allows one call",
                EC2_RULE_WRITES,
                0.001,
                1,
                1,
                0.005,
            ),
        ];
        for (case, bucket, share, pacers, burst, per_second) in cases {
            let got = bucket.divided(share, pacers);
            assert_eq!(got.burst, burst, "{case}");
            assert!(
                (got.per_second - per_second).abs() < 1e-9,
                "{case}: {}",
                got.per_second
            );
        }
        assert_eq!(EC2_READS.share(0.5), EC2_READS.divided(0.5, 1));
    }

    #[test]
    fn the_roster_counts_the_others_in_their_term_and_this_pacer_whether_listed_or_not() {
        let pacer = |holder: &str, until_ms| Pacer {
            holder: holder.into(),
            until_ms,
        };
        // (case, roster, pacers, listed, lapsed)
        let cases = [
            ("an empty roster: this one alone", vec![], 1, false, vec![]),
            ("listed alone", vec![pacer("me", 1_000)], 1, true, vec![]),
            (
                "two others in their term",
                vec![pacer("me", 1_000), pacer("a", 1_000), pacer("b", 5_000)],
                3,
                true,
                vec![],
            ),
            (
                "a lapsed one does not count, and is to be taken off",
                vec![pacer("me", 1_000), pacer("gone", 999)],
                1,
                true,
                vec!["gone"],
            ),
            (
                "its own lapsed entry: not listed, still counted once",
                vec![pacer("me", 10), pacer("a", 2_000)],
                2,
                false,
                vec!["me"],
            ),
        ];
        for (case, roster, pacers, listed, lapsed) in cases {
            let got = tally(&roster, "me", 1_000);
            assert_eq!(
                (got.pacers, got.listed, got.lapsed),
                (
                    pacers,
                    listed,
                    lapsed.iter().map(|s| s.to_string()).collect()
                ),
                "{case}"
            );
        }
        let many: Vec<Pacer> = (0..50).map(|i| pacer(&format!("p{i}"), 0)).collect();
        assert_eq!(tally(&many, "me", 1).lapsed.len(), MAX_FORGET);
    }

    #[test]
    fn an_unreadable_roster_divides_by_the_last_count_or_the_clusters_whichever_is_more() {
        // (case, last count, clusters, pacers)
        let cases = [
            ("never counted: as if every cluster swept", None, 8, 8),
            ("counted more than the clusters", Some(10), 8, 10),
            ("counted fewer", Some(2), 8, 8),
            ("no cluster configured: one", None, 0, 1),
        ];
        for (case, last, clusters, pacers) in cases {
            assert_eq!(pacers_unknown(last, clusters), pacers, "{case}");
        }
    }

    #[test]
    fn a_joining_pacer_starts_with_the_burst_of_one_cluster_among_all_of_the_deployment() {
        // (case, pacers counted, clusters, level)
        let cases = [
            ("one cluster, alone: the whole burst", 1, 1, 20.0),
            ("alone among eight clusters: an eighth", 1, 8, 2.0),
            ("more pacers than clusters: by the pacers", 10, 4, 2.0),
            ("forty clusters: still one call", 1, 40, 1.0),
        ];
        for (case, pacers, clusters, level) in cases {
            assert_eq!(
                level_at_join(ELB_READS, 0.5, pacers, clusters),
                level,
                "{case}"
            );
        }
    }

    #[test]
    fn a_pacer_checks_in_before_its_first_draw_confirms_soon_after_and_then_counts_every_two_seconds()
     {
        let mut standing = Standing::default();
        // (case, time, may write, next)
        let mut steps = vec![("first draw: check in", S(0), true, Next::CheckIn)];
        let check = |standing: &Standing, steps: &mut Vec<(&str, Duration, bool, Next)>| {
            for (case, at, may_write, next) in steps.drain(..) {
                assert_eq!(standing.next(at, may_write), next, "{case}");
            }
        };
        check(&standing, &mut steps);
        assert!(standing.must_wait(S(0), true), "the first draw waits");
        standing.checked_in(S(0), &tally_of(3, true));
        assert_eq!(
            standing.view(),
            Some(View {
                pacers: 3,
                joins: 1
            })
        );
        steps.extend([
            ("just checked in", MS(100), true, Next::Draw),
            ("confirm half a second later", MS(500), true, Next::Count),
        ]);
        check(&standing, &mut steps);
        standing.counted(MS(500), &tally_of(4, true), true, 1);
        steps.extend([
            ("counted", S(2), true, Next::Draw),
            ("two seconds after the count", MS(2_500), true, Next::Count),
            (
                "twenty seconds in: renew",
                S(20) + MS(1),
                true,
                Next::CheckIn,
            ),
        ]);
        check(&standing, &mut steps);
        assert!(
            !standing.must_wait(S(21), true),
            "a renewal does not hold draws"
        );
        standing.checked_in(S(21), &tally_of(4, true));
        assert_eq!(
            standing.view(),
            Some(View {
                pacers: 4,
                joins: 1
            }),
            "no join"
        );
        assert!(standing.is_listed(S(50)));
        assert!(!standing.is_listed(S(51)));
        assert!(
            standing.must_wait(S(52), true),
            "lapsed: it waits to join again"
        );
        standing.checked_in(S(52), &tally_of(1, true));
        assert_eq!(
            standing.view(),
            Some(View {
                pacers: 1,
                joins: 2
            }),
            "joined again"
        );
        standing.left();
        assert_eq!(
            standing.next(S(53), true),
            Next::CheckIn,
            "left: joins again"
        );
    }

    #[test]
    fn a_dry_run_only_counts_and_a_roster_that_does_not_answer_is_asked_again_after_a_pause() {
        let mut dry = Standing::default();
        assert_eq!(dry.next(S(0), false), Next::Count);
        assert!(dry.must_wait(S(0), false));
        dry.counted(S(0), &tally_of(2, false), false, 1);
        assert_eq!(
            dry.view(),
            Some(View {
                pacers: 2,
                joins: 1
            })
        );
        assert_eq!(dry.next(S(1), false), Next::Draw);
        assert_eq!(dry.next(S(2), false), Next::Count);

        let mut failing = Standing::default();
        failing.unanswered(S(0), 8);
        assert_eq!(
            failing.view(),
            Some(View {
                pacers: 8,
                joins: 1
            })
        );
        assert_eq!(failing.next(S(1), true), Next::Draw, "a pause first");
        assert!(!failing.must_wait(S(1), true), "draws go by the fallback");
        assert_eq!(failing.next(S(2), true), Next::CheckIn);
        failing.checked_in(S(2), &tally_of(2, true));
        failing.unanswered(S(3), 8);
        assert_eq!(
            failing.view().map(|v| v.pacers),
            Some(8),
            "the clusters are more"
        );
        failing.counted(S(5), &tally_of(2, false), true, 8);
        assert_eq!(
            failing.next(S(5), true),
            Next::CheckIn,
            "taken off: list again"
        );
    }

    #[test]
    fn a_dry_run_divides_by_at_least_the_deployments_clusters_since_the_others_cannot_count_it() {
        // (case, counted: the others and itself, clusters, pacers)
        let cases = [
            ("alone, one cluster", 1, 1, 1),
            ("alone among eight clusters: an eighth", 1, 8, 8),
            (
                "two listed and itself among eight: still an eighth",
                3,
                8,
                8,
            ),
            ("more pacers than clusters: by the pacers", 10, 4, 10),
            ("no cluster configured: by the pacers", 2, 0, 2),
        ];
        for (case, counted, clusters, pacers) in cases {
            assert_eq!(pacers_not_listed(counted, clusters), pacers, "{case}");
        }
        // As a count: a dry run of eight clusters, none of them listed, takes an eighth each.
        let mut dry = Standing::default();
        dry.counted(S(0), &tally_of(1, false), false, 8);
        assert_eq!(dry.view().map(|v| v.pacers), Some(8));
        // A pacer that lists itself is counted by the others: it divides by the roster.
        let mut listing = Standing::default();
        listing.counted(S(0), &tally_of(1, false), true, 8);
        assert_eq!(listing.view().map(|v| v.pacers), Some(1));
    }

    #[test]
    fn lapsed_entries_are_taken_off_only_from_an_answer_younger_than_the_count_interval_and_not_after_leaving()
     {
        let gone = Tally {
            pacers: 2,
            listed: true,
            lapsed: vec!["gone".to_string()],
        };
        let mut standing = Standing::default();
        standing.checked_in(S(0), &gone);
        // (case, check-in at, lapsed to take off)
        let cases = [
            ("at once", S(0), vec!["gone"]),
            ("just under two seconds on", MS(1_999), vec!["gone"]),
            ("two seconds on: it may have joined again", S(2), vec![]),
            ("hours on", S(3 * 3_600), vec![]),
        ];
        for (case, at, lapsed) in cases {
            assert_eq!(standing.lapsed(at), lapsed.as_slice(), "{case}");
        }
        standing.counted(S(10), &gone, true, 1);
        assert_eq!(standing.lapsed(S(11)), ["gone"], "a count's answer too");
        standing.left();
        assert!(standing.lapsed(S(11)).is_empty(), "forgotten on leaving");
    }

    #[test]
    fn an_entry_whose_term_ends_more_than_twice_the_term_ahead_counts_as_lapsed() {
        let now = 1_000_000;
        let pacer = |holder: &str, until_ms| Pacer {
            holder: holder.into(),
            until_ms,
        };
        // (case, the other's term, counted, lapsed)
        let cases = [
            ("a term as checked in now", now + 30_000, 2, false),
            ("a minute ahead, just: counts", now + 60_000, 2, false),
            ("a clock far ahead: lapsed", now + 60_001, 1, true),
            ("hours ahead: lapsed", now + 3_600_000, 1, true),
            ("ended: lapsed", now - 1, 1, true),
        ];
        for (case, until_ms, pacers, lapsed) in cases {
            let got = tally(
                &[pacer("me", now + 30_000), pacer("ahead", until_ms)],
                "me",
                now,
            );
            assert_eq!(got.pacers, pacers, "{case}");
            assert_eq!(got.lapsed == ["ahead"], lapsed, "{case}");
        }
        let own = tally(&[pacer("me", now + 3_600_000)], "me", now);
        assert!(!own.listed, "its own entry far ahead: lists itself again");
        assert_eq!(furthest_until(u64::MAX), u64::MAX);
    }

    #[test]
    fn a_join_never_adds_calls_keeping_the_lesser_of_what_is_left_and_the_joining_burst() {
        let allowance = ELB_READS.divided(0.5, 1); // 20 at once, 5 a second
        // (case, left, at, joining at, joining level, level)
        let cases = [
            (
                "a full bucket: the joining burst",
                20.0,
                S(0),
                S(0),
                4.0,
                4.0,
            ),
            ("fewer left: kept", 0.5, S(0), S(0), 4.0, 0.5),
            ("empty: still empty", 0.0, S(0), S(0), 4.0, 0.0),
            (
                "refilled while idle, then capped",
                1.0,
                S(0),
                S(60),
                4.0,
                4.0,
            ),
            ("refilled a little", 0.0, S(0), MS(200), 4.0, 1.0),
            ("never below nothing", 2.0, S(0), S(0), -1.0, 0.0),
        ];
        for (case, left, at, joining, level, expected) in cases {
            let mut tokens = Tokens::holding(allowance, left, at);
            tokens.restart(level, joining);
            assert!(
                (tokens.level() - expected).abs() < 1e-9,
                "{case}: {}",
                tokens.level()
            );
        }
        // A drawing that joins again with one call left keeps one, whatever the join allows.
        let view = |joins| View { pacers: 1, joins };
        let mut drawing = Drawing::new(ELB_READS, 0.5, 4, view(0), S(0));
        for _ in 0..19 {
            assert_eq!(drawing.take(view(0), S(0)), Duration::ZERO);
        }
        assert_eq!(drawing.take(view(1), S(0)), Duration::ZERO, "the last call");
        assert_eq!(drawing.take(view(1), S(0)), MS(200), "then none");
    }

    #[test]
    fn after_the_roster_did_not_answer_draws_go_by_the_fallback_while_it_is_asked_again() {
        let mut standing = Standing::default();
        assert!(standing.must_wait(S(0), true), "the first draw waits");
        standing.unanswered(S(2), 4);
        assert_eq!(standing.next(S(3), true), Next::Draw, "a pause first");
        assert_eq!(standing.next(S(4), true), Next::CheckIn);
        assert!(
            !standing.must_wait(S(4), true),
            "not listed, but dividing by the clusters: draws go on"
        );
        standing.checked_in(S(4), &tally_of(2, true));
        standing.counted(S(10), &tally_of(2, false), true, 4);
        assert!(
            standing.must_wait(S(10), true),
            "taken off while the roster answers: waits to list itself again"
        );
    }

    #[test]
    fn tokens_refill_at_the_allowance_up_to_the_burst_and_say_how_long_until_the_next_call() {
        let allowance = ELB_READS.divided(0.5, 1); // 20 at once, 5 a second
        let mut tokens = Tokens::holding(allowance, 2.0, S(0));
        assert_eq!(tokens.take(S(0)), Duration::ZERO);
        assert_eq!(tokens.take(S(0)), Duration::ZERO);
        assert_eq!(tokens.take(S(0)), MS(200), "empty: one call every 200 ms");
        assert_eq!(tokens.take(MS(100)), MS(100));
        assert_eq!(tokens.take(MS(200)), Duration::ZERO);
        tokens.refill(S(100));
        assert_eq!(tokens.level(), 20.0, "never more than the burst");
        tokens.resize(ELB_READS.divided(0.5, 4), S(100));
        assert_eq!(tokens.level(), 5.0, "a smaller part clamps what is left");
        tokens.restart(1.0, S(100));
        assert_eq!(tokens.level(), 1.0);
        tokens.restart(50.0, S(100));
        assert_eq!(tokens.level(), 1.0, "a join adds nothing");
        let nothing = Allowance {
            burst: 1,
            per_second: 0.0,
        };
        let mut stuck = Tokens::holding(nothing, 0.0, S(0));
        assert_eq!(stuck.take(S(1)), Duration::MAX);
    }

    #[test]
    fn a_drawing_follows_the_roster_resizing_on_a_new_count_and_starting_again_on_a_join() {
        let alone = View {
            pacers: 1,
            joins: 0,
        };
        let mut drawing = Drawing::new(ELB_READS, 0.5, 4, alone, S(0));
        assert_eq!(drawing.tokens().level(), 20.0, "alone: a full bucket");
        // Joined, counted 2, among four clusters: a quarter of the burst, half the refill.
        let joined = View {
            pacers: 2,
            joins: 1,
        };
        assert_eq!(drawing.take(joined, S(0)), Duration::ZERO);
        assert_eq!(drawing.tokens().level(), 4.0);
        assert_eq!(drawing.tokens().allowance(), ELB_READS.divided(0.5, 2));
        // Counted 4: the same joins, a smaller part.
        let four = View {
            pacers: 4,
            joins: 1,
        };
        for _ in 0..4 {
            assert_eq!(drawing.take(four, S(0)), Duration::ZERO);
        }
        assert_eq!(drawing.take(four, S(0)), MS(800), "1.25 a second");
    }
}
