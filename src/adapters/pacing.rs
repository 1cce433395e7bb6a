//! Client-side pacing within the account's API rate buckets (DESIGN §6). People, Terraform and
//! other controllers draw on the same per-account buckets, so every call first waits for a
//! token of its bucket, and the reconciler takes only a share of each: a large sweep spreads
//! its reads over time instead of emptying a bucket and throttling everyone else. Throttling
//! that still happens is retried by the SDK with backoff and jitter.
//!
//! The share is the whole deployment's, not each process's: a process serving runs of the
//! deployment lists itself on a roster in the state table while it draws, and takes an equal
//! part of the share among the processes listed ([`crate::pure::pace`] decides how much, and
//! when to ask the roster again). Every cluster a process runs — a session's, one after the
//! other, or a watcher's, at once — draws on its one set of buckets.

use crate::error::{Error, Result};
use crate::pure::pace::{self, BucketSize, Drawing, Next, Pacer, Standing, View};
use futures::future::BoxFuture;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

/// The share of each bucket taken unless configured otherwise.
pub const DEFAULT_SHARE: f64 = 0.5;

/// How long a question to the roster may take before it counts as unanswered: a slow state
/// table must not hold the calls paced behind it for long.
pub const ROSTER_TIMEOUT: Duration = Duration::from_secs(2);

/// A process alone: the whole share, sized once.
const ALONE: View = View {
    pacers: 1,
    joins: 0,
};

/// The roster of the deployment's pacers, kept in the state table
/// (`adapters::dynamodb`). Answers are the roster as it stands after the call.
pub trait Roster: Send + Sync {
    /// Lists `holder` until `until_ms` (epoch milliseconds), and takes the `lapsed` off — each
    /// only if it is still lapsed at `now_ms` ([`pace::in_term`]): it may have checked in
    /// since. A lapsed entry that is not taken off does not fail the check-in.
    fn check_in<'a>(
        &'a self,
        holder: &'a str,
        now_ms: u64,
        until_ms: u64,
        lapsed: &'a [String],
    ) -> BoxFuture<'a, Result<Vec<Pacer>>>;
    /// Reads the roster.
    fn read(&self) -> BoxFuture<'_, Result<Vec<Pacer>>>;
    /// Takes `holder` off.
    fn check_out<'a>(&'a self, holder: &'a str) -> BoxFuture<'a, Result<()>>;
}

/// Whom a process shares the deployment's part with, and as whom.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peers {
    /// Names this process on the roster (`lambda`, `cli`, `watch`); made unique.
    pub origin: String,
    /// The clusters the deployment serves (`TGB_CLUSTERS`): how many may sweep at once.
    pub clusters: usize,
    /// False for a dry run, which writes nothing anywhere: it reads the roster and divides by
    /// it (and by at least `clusters`, since the others cannot count it), but never lists
    /// itself.
    pub check_in: bool,
}

/// One process's place among the pacers.
struct Listing {
    holder: String,
    clusters: usize,
    may_write: bool,
    roster: OnceLock<Arc<dyn Roster>>,
    standing: Mutex<Standing>,
    /// One question to the roster at a time.
    asking: tokio::sync::Mutex<()>,
    /// A failing roster is said once, until it answers again.
    warned: AtomicBool,
}

/// What every bucket of one process shares: the share, the clock, and the roster.
struct Sharing {
    share: f64,
    started: Instant,
    /// The epoch milliseconds now, as the roster's terms count (the system clock; tests give
    /// their own).
    wall: fn() -> u64,
    listing: Option<Listing>,
}

impl Sharing {
    fn clock(&self) -> Duration {
        self.started.elapsed()
    }

    /// A question to the roster, answered within [`ROSTER_TIMEOUT`] or failed.
    async fn within<T>(call: impl std::future::Future<Output = Result<T>>) -> Result<T> {
        tokio::time::timeout(ROSTER_TIMEOUT, call)
            .await
            .unwrap_or_else(|_| {
                Err(Error::RosterTimedOut {
                    after: ROSTER_TIMEOUT,
                })
            })
    }

    fn standing(listing: &Listing) -> MutexGuard<'_, Standing> {
        listing
            .standing
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The roster's last answer, asking it first when due. Before this process's part is
    /// known (its first draw, or a join after lapsing) the draw waits for the answer; otherwise
    /// one task asks while the others go by the last count.
    async fn view(&self) -> View {
        let Some(listing) = &self.listing else {
            return ALONE;
        };
        let Some(roster) = listing.roster.get() else {
            return ALONE;
        };
        let (next, must_wait) = {
            let standing = Self::standing(listing);
            let at = self.clock();
            (
                standing.next(at, listing.may_write),
                standing.must_wait(at, listing.may_write),
            )
        };
        if next != Next::Draw {
            let turn = if must_wait {
                Some(listing.asking.lock().await)
            } else {
                listing.asking.try_lock().ok()
            };
            if turn.is_some() {
                // Again, in turn: another task may have just asked.
                let at = self.clock();
                let next = Self::standing(listing).next(at, listing.may_write);
                self.ask(listing, roster.as_ref(), next, at).await;
            }
        }
        Self::standing(listing).view().unwrap_or(ALONE)
    }

    async fn ask(&self, listing: &Listing, roster: &dyn Roster, next: Next, at: Duration) {
        let before = Self::standing(listing).view();
        let answer = match next {
            Next::Draw => return,
            Next::CheckIn => {
                // Lapsed entries of the last answer, if recent; the roster keeps any of them
                // that checked in again since.
                let lapsed = Self::standing(listing).lapsed(at).to_vec();
                let term = u64::try_from(pace::PACER_TERM.as_millis()).unwrap_or(u64::MAX);
                let now_ms = (self.wall)();
                let until_ms = now_ms.saturating_add(term);
                Self::within(roster.check_in(&listing.holder, now_ms, until_ms, &lapsed)).await
            }
            Next::Count => Self::within(roster.read()).await,
        };
        let mut standing = Self::standing(listing);
        match answer {
            Ok(pacers) => {
                let tally = pace::tally(&pacers, &listing.holder, (self.wall)());
                match next {
                    Next::CheckIn => standing.checked_in(at, &tally),
                    _ => standing.counted(at, &tally, listing.may_write, listing.clusters),
                }
                listing.warned.store(false, Ordering::Relaxed);
            }
            Err(error) => {
                // The pause before asking again runs from now: a call that timed out took it.
                standing.unanswered(self.clock(), listing.clusters);
                if !listing.warned.swap(true, Ordering::Relaxed) {
                    tracing::warn!(error = %error.chain(), pacers = standing.view().map(|v| v.pacers),
                        "pacing: the roster of the deployment's runs cannot be read; dividing the API rate share by the clusters it serves until it can");
                }
            }
        }
        let after = standing.view();
        if let Some(now) = after.filter(|a| before.is_none_or(|b| b.pacers != a.pacers)) {
            tracing::info!(
                pacers = now.pacers,
                share = self.share / now.pacers as f64,
                "pacing: this process takes 1/{} of --api-rate-share (processes of the deployment drawing on the AWS API rate buckets: {})",
                now.pacers,
                now.pacers
            );
        }
    }
}

/// Epoch milliseconds by the system clock, as the state table's terms count them (leases and
/// the roster).
pub(crate) fn now_millis() -> u64 {
    let millis = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_millis();
    u64::try_from(millis).unwrap_or(u64::MAX)
}

/// One bucket as this process draws on it.
pub struct Bucket {
    sharing: Arc<Sharing>,
    /// `None`: unlimited.
    drawing: Option<Mutex<Drawing>>,
    /// One waiter at a time, first come first served: a change of the count reaches the next
    /// call at once.
    turn: tokio::sync::Mutex<()>,
}

impl Bucket {
    fn new(sharing: &Arc<Sharing>, size: Option<BucketSize>) -> Arc<Self> {
        let clusters = sharing.listing.as_ref().map_or(1, |l| l.clusters);
        let drawing = size.map(|size| {
            Mutex::new(Drawing::new(
                size,
                sharing.share,
                clusters,
                ALONE,
                sharing.clock(),
            ))
        });
        Arc::new(Self {
            sharing: Arc::clone(sharing),
            drawing,
            turn: tokio::sync::Mutex::new(()),
        })
    }

    /// Waits until the bucket has a token for one call, and takes it. A long wait (a small
    /// part among many pacers) asks the roster again every [`pace::COUNT_EVERY`], so that this
    /// process stays listed and its part follows the count.
    pub async fn take(&self) {
        let Some(drawing) = &self.drawing else {
            return;
        };
        let _turn = self.turn.lock().await;
        loop {
            let view = self.sharing.view().await;
            let wait = {
                let at = self.sharing.clock();
                drawing
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(view, at)
            };
            if wait.is_zero() {
                return;
            }
            tokio::time::sleep(wait.min(pace::COUNT_EVERY)).await;
        }
    }
}

/// The buckets our calls draw on (their sizes: [`crate::pure::pace`]).
#[derive(Clone)]
pub struct Pacing {
    /// ELBv2 Describe* (target groups, tags, target health, load balancers).
    pub elb_reads: Arc<Bucket>,
    /// EC2 Describe* with filters or ids.
    pub ec2_reads: Arc<Bucket>,
    /// AuthorizeSecurityGroupIngress and RevokeSecurityGroupIngress.
    pub ec2_rule_writes: Arc<Bucket>,
    sharing: Arc<Sharing>,
}

/// A share of the rate buckets outside (0, 1], as given; the message names the setting. (The
/// value is kept as written: a NaN would make the error unequal to itself.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--api-rate-share (TGB_API_RATE_SHARE) must be above 0 and at most 1, not {given}")]
pub struct InvalidShare {
    pub given: String,
}

impl Pacing {
    /// `share` of every bucket, in (0, 1], for this process alone.
    pub fn with_share(share: f64) -> Result<Self, InvalidShare> {
        if !(share > 0.0 && share <= 1.0) {
            return Err(InvalidShare {
                given: share.to_string(),
            });
        }
        Ok(Self::build(share, None, now_millis))
    }

    /// No pacing at all: for emulators, which have no rate buckets to share.
    pub fn unlimited() -> Self {
        let sharing = Arc::new(Sharing {
            share: 1.0,
            started: Instant::now(),
            wall: now_millis,
            listing: None,
        });
        Self {
            elb_reads: Bucket::new(&sharing, None),
            ec2_reads: Bucket::new(&sharing, None),
            ec2_rule_writes: Bucket::new(&sharing, None),
            sharing,
        }
    }

    /// The same share, divided among the deployment's pacers on the roster that
    /// [`Pacing::join`] gives (the state table, in [`crate::adapters::Aws::paced`]).
    pub fn among(self, peers: Peers) -> Self {
        Self::build(self.sharing.share, Some(peers), self.sharing.wall)
    }

    fn build(share: f64, peers: Option<Peers>, wall: fn() -> u64) -> Self {
        let listing = peers.map(|peers| Listing {
            holder: crate::state::lease::unique_holder(&peers.origin),
            clusters: peers.clusters.max(1),
            may_write: peers.check_in,
            roster: OnceLock::new(),
            standing: Mutex::new(Standing::default()),
            asking: tokio::sync::Mutex::new(()),
            warned: AtomicBool::new(false),
        });
        let sharing = Arc::new(Sharing {
            share,
            started: Instant::now(),
            wall,
            listing,
        });
        Self {
            elb_reads: Bucket::new(&sharing, Some(pace::ELB_READS)),
            ec2_reads: Bucket::new(&sharing, Some(pace::EC2_READS)),
            ec2_rule_writes: Bucket::new(&sharing, Some(pace::EC2_RULE_WRITES)),
            sharing,
        }
    }

    /// Whether this pacing divides its share among peers, and still needs their roster.
    pub fn wants_roster(&self) -> bool {
        self.sharing
            .listing
            .as_ref()
            .is_some_and(|l| l.roster.get().is_none())
    }

    /// Gives the roster of the peers (once; a second one is ignored).
    pub fn join(&self, roster: Arc<dyn Roster>) {
        if let Some(listing) = &self.sharing.listing {
            let _ = listing.roster.set(roster);
        }
    }

    /// Takes this process off the roster, when it is on it: at the end of a command or an
    /// invocation, so that the others take its part at their next count rather than when its
    /// term ends. A failure is logged; the entry lapses by itself.
    pub async fn leave(&self) {
        let Some(listing) = &self.sharing.listing else {
            return;
        };
        let Some(roster) = listing.roster.get() else {
            return;
        };
        let _turn = listing.asking.lock().await;
        if !Sharing::standing(listing).is_listed(self.sharing.clock()) {
            return;
        }
        match Sharing::within(roster.check_out(&listing.holder)).await {
            Ok(()) => Sharing::standing(listing).left(),
            Err(error) => {
                tracing::warn!(error = %error.chain(), "pacing: not taken off the roster; the entry lapses by itself")
            }
        }
    }
}

impl Default for Pacing {
    fn default() -> Self {
        Self::build(DEFAULT_SHARE, None, now_millis)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Calls allowed at once, before any refill could matter (a refill takes 100 ms or more).
    async fn burst(bucket: &Bucket) -> usize {
        let mut calls = 0;
        while calls < 1_000
            && tokio::time::timeout(Duration::from_millis(1), bucket.take())
                .await
                .is_ok()
        {
            calls += 1;
        }
        calls
    }

    #[test]
    fn a_process_alone_allows_its_share_of_the_burst_at_once_and_no_more() {
        crate::testing::block_on_paused(async {
            let half = Pacing::with_share(0.5).expect("a share");
            assert_eq!(burst(&half.elb_reads).await, 20);
            let whole = Pacing::with_share(1.0).expect("a share");
            assert_eq!(burst(&whole.ec2_rule_writes).await, 50);
            let tiny = Pacing::with_share(0.001).expect("a share");
            assert_eq!(burst(&tiny.ec2_rule_writes).await, 1, "still one call");
        });
    }

    #[test]
    fn an_unlimited_pacing_never_holds_a_call_back() {
        crate::testing::block_on_paused(async {
            assert_eq!(burst(&Pacing::unlimited().ec2_rule_writes).await, 1_000);
        });
    }

    #[test]
    fn a_share_outside_zero_to_one_is_refused_naming_the_setting() {
        for share in [0.0, -0.5, 1.5, f64::NAN] {
            let error = Pacing::with_share(share).err().expect("refused");
            assert!(error.to_string().contains("--api-rate-share"), "{error}");
        }
        assert!(Pacing::with_share(1.0).is_ok());
    }

    /// A roster in memory, on the test's paused clock; it can be made to fail, or to stall
    /// (answer only after an hour).
    #[derive(Default)]
    struct MemoryRoster {
        entries: Mutex<BTreeMap<String, u64>>,
        failing: AtomicBool,
        stalling: AtomicBool,
        calls: Mutex<Vec<&'static str>>,
    }

    impl MemoryRoster {
        async fn stall(&self) {
            if self.stalling.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_secs(3_600)).await;
            }
        }
        fn answer(&self, call: &'static str) -> Result<Vec<Pacer>> {
            self.calls.lock().expect("calls").push(call);
            if self.failing.load(Ordering::Relaxed) {
                return Err(crate::Error::Config("the table is down".into()));
            }
            let entries = self.entries.lock().expect("entries");
            Ok(entries
                .iter()
                .map(|(holder, until_ms)| Pacer {
                    holder: holder.clone(),
                    until_ms: *until_ms,
                })
                .collect())
        }
        fn count(&self, call: &str) -> usize {
            let calls = self.calls.lock().expect("calls");
            calls.iter().filter(|c| **c == call).count()
        }
    }

    impl Roster for MemoryRoster {
        fn check_in<'a>(
            &'a self,
            holder: &'a str,
            now_ms: u64,
            until_ms: u64,
            lapsed: &'a [String],
        ) -> BoxFuture<'a, Result<Vec<Pacer>>> {
            Box::pin(async move {
                self.stall().await;
                if !self.failing.load(Ordering::Relaxed) {
                    let mut entries = self.entries.lock().expect("entries");
                    // As the state table does: only those still lapsed.
                    entries.retain(|h, until| !lapsed.contains(h) || pace::in_term(*until, now_ms));
                    entries.insert(holder.to_string(), until_ms);
                }
                self.answer("check_in")
            })
        }
        fn read(&self) -> BoxFuture<'_, Result<Vec<Pacer>>> {
            Box::pin(async move {
                self.stall().await;
                self.answer("read")
            })
        }
        fn check_out<'a>(&'a self, holder: &'a str) -> BoxFuture<'a, Result<()>> {
            Box::pin(async move {
                self.stall().await;
                self.entries.lock().expect("entries").remove(holder);
                self.answer("check_out").map(|_| ())
            })
        }
    }

    thread_local! {
        /// The test's epoch (each test runs on a thread of its own, its runtime on it).
        static EPOCH: std::cell::Cell<Option<Instant>> = const { std::cell::Cell::new(None) };
    }

    /// The roster's clock: the paused tokio clock, from the test's epoch.
    fn paused_ms() -> u64 {
        let epoch = EPOCH.with(|e| *e.get().get_or_insert_with(Instant::now));
        EPOCH.with(|e| e.set(Some(epoch)));
        1_000_000 + u64::try_from(epoch.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn pacer(roster: &Arc<MemoryRoster>, share: f64, clusters: usize, check_in: bool) -> Pacing {
        let peers = Peers {
            origin: "test".into(),
            clusters,
            check_in,
        };
        let pacing = Pacing::build(share, Some(peers), paused_ms);
        assert!(pacing.wants_roster());
        pacing.join(Arc::clone(roster) as Arc<dyn Roster>);
        assert!(!pacing.wants_roster());
        pacing
    }

    /// Calls `pacing` makes of ELBv2 reads, as fast as it may, for `seconds`.
    async fn draw_for(pacing: &Pacing, seconds: u64) -> usize {
        let mut calls = 0;
        let _ = tokio::time::timeout(Duration::from_secs(seconds), async {
            loop {
                pacing.elb_reads.take().await;
                calls += 1;
            }
        })
        .await;
        calls
    }

    #[test]
    fn processes_drawing_together_keep_within_one_share_between_them() {
        crate::testing::block_on_paused(async {
            let roster = Arc::new(MemoryRoster::default());
            let pacers: Vec<Pacing> = (0..4).map(|_| pacer(&roster, 0.5, 4, true)).collect();
            let calls = futures::future::join_all(pacers.iter().map(|p| draw_for(p, 20))).await;
            let total: usize = calls.iter().sum();
            // The deployment's half of ELBv2 reads: 20 at once, then 5 a second.
            let allowed = 20 + 5 * 20;
            assert!(total <= allowed + 4, "{calls:?}: {total} > {allowed}");
            assert!(
                total >= allowed * 9 / 10,
                "{calls:?}: {total} is far below {allowed}"
            );
            // Each took about an equal part.
            assert!(
                calls.iter().all(|c| c.abs_diff(total / 4) <= 3),
                "{calls:?}"
            );
        });
    }

    #[test]
    fn a_process_alone_on_the_roster_takes_the_whole_share_once_it_has_counted() {
        crate::testing::block_on_paused(async {
            let roster = Arc::new(MemoryRoster::default());
            let alone = pacer(&roster, 0.5, 1, true);
            // One cluster: it joins with the whole burst, and refills at the whole rate.
            let calls = draw_for(&alone, 10).await;
            assert!((69..=70).contains(&calls), "{calls}");
            assert_eq!(roster.count("check_in"), 1, "listed once for ten seconds");
            // A confirmation after half a second, then a count every two seconds.
            assert_eq!(roster.count("read"), 5);
        });
    }

    #[test]
    fn the_part_grows_when_a_process_leaves_and_when_its_entry_lapses() {
        crate::testing::block_on_paused(async {
            let roster = Arc::new(MemoryRoster::default());
            let (a, b, c) = (
                pacer(&roster, 0.5, 1, true),
                pacer(&roster, 0.5, 1, true),
                pacer(&roster, 0.5, 1, true),
            );
            futures::future::join3(draw_for(&a, 3), draw_for(&b, 3), draw_for(&c, 3)).await;
            assert_eq!(roster.entries.lock().expect("entries").len(), 3);
            // `b` leaves; `c` stops drawing without leaving: its entry lapses.
            b.leave().await;
            assert_eq!(roster.entries.lock().expect("entries").len(), 2);
            // Alone after c's term: a's part becomes the whole share, 5 a second.
            tokio::time::sleep(pace::PACER_TERM).await;
            let started = draw_for(&a, 1).await;
            let later = draw_for(&a, 10).await;
            // Its own entry lapsed too: it joins again, keeping the burst of a third it had
            // (6), not taking a new one, and refills at the whole rate.
            assert!(
                (10..=11).contains(&started),
                "what it had, and a second at 5: {started}"
            );
            assert!((49..=51).contains(&later), "5 a second alone: {later}");
        });
    }

    #[test]
    fn a_roster_that_does_not_answer_divides_by_the_clusters_and_is_asked_every_two_seconds() {
        crate::testing::block_on_paused(async {
            let roster = Arc::new(MemoryRoster::default());
            roster.failing.store(true, Ordering::Relaxed);
            let pacing = pacer(&roster, 0.5, 4, true);
            // A quarter of the share: 5 at once, 1.25 a second.
            let calls = draw_for(&pacing, 8).await;
            assert!((14..=15).contains(&calls), "{calls}");
            assert_eq!(roster.count("check_in"), 4, "asked at 0, 2, 4 and 6 s");
        });
    }

    #[test]
    fn a_dry_run_reads_the_roster_and_divides_by_it_but_never_lists_itself() {
        crate::testing::block_on_paused(async {
            let roster = Arc::new(MemoryRoster::default());
            let listed = pacer(&roster, 0.5, 1, true);
            listed.elb_reads.take().await;
            let dry = pacer(&roster, 0.5, 1, false);
            // Counted two (the listed one, and itself): half the share.
            let calls = draw_for(&dry, 4).await;
            assert!((19..=20).contains(&calls), "{calls}");
            assert_eq!(roster.entries.lock().expect("entries").len(), 1);
            dry.leave().await;
            assert_eq!(roster.count("check_out"), 0);
        });
    }

    #[test]
    fn a_dry_run_alone_on_the_roster_divides_by_the_deployments_clusters() {
        crate::testing::block_on_paused(async {
            let roster = Arc::new(MemoryRoster::default());
            // One of a dry run's eight processes, none listed: an eighth of the share, 2 at
            // once and 0.625 a second, not the whole of it.
            let dry = pacer(&roster, 0.5, 8, false);
            let calls = draw_for(&dry, 8).await;
            assert!((6..=7).contains(&calls), "{calls}");
            assert!(roster.entries.lock().expect("entries").is_empty());
        });
    }

    #[test]
    fn a_stalled_roster_holds_calls_no_longer_than_its_timeout_and_counts_as_unanswered() {
        crate::testing::block_on_paused(async {
            let roster = Arc::new(MemoryRoster::default());
            roster.stalling.store(true, Ordering::Relaxed);
            let pacing = pacer(&roster, 0.5, 4, true);
            let started = Instant::now();
            pacing.elb_reads.take().await;
            assert_eq!(
                started.elapsed(),
                ROSTER_TIMEOUT,
                "the first draw waits for it"
            );
            // Then a quarter of the share, 5 at once and 1.25 a second, as when it fails; every
            // 4 s a question holds this bucket's draws for 2 s, while its tokens refill.
            let calls = draw_for(&pacing, 8).await;
            assert!((10..=12).contains(&calls), "{calls}");

            // Leaving a roster that stalls after listing: the entry lapses by itself.
            let roster = Arc::new(MemoryRoster::default());
            let listed = pacer(&roster, 0.5, 1, true);
            listed.elb_reads.take().await;
            roster.stalling.store(true, Ordering::Relaxed);
            let leaving = Instant::now();
            listed.leave().await;
            assert_eq!(leaving.elapsed(), ROSTER_TIMEOUT);
        });
    }
}
