//! How watchers of one cluster take turns: the holder of the watch lease follows the cluster,
//! the others stand by and ask again, rarely while the lease has long to run and often as it
//! nears its end, when a holder lets go (a Lambda invocation near its deadline, a process
//! stopping) or lapses (a holder that died).

use std::time::Duration;

/// How close to the end of the holder's lease a standby starts asking often.
pub const HANDOVER_WINDOW: Duration = Duration::from_secs(5);
/// How often a standby asks within that window.
pub const HANDOVER_POLL: Duration = Duration::from_millis(250);
/// The longest a standby waits between two asks.
pub const LONGEST_STANDBY: Duration = Duration::from_secs(30);

/// How long a standby waits before asking for the lease again, given when the holder's lease
/// ends and the time now (both epoch milliseconds).
pub fn standby_wait(until_ms: u64, now_ms: u64) -> Duration {
    let left = Duration::from_millis(until_ms.saturating_sub(now_ms));
    match left.checked_sub(HANDOVER_WINDOW) {
        Some(early) if !early.is_zero() => early.min(LONGEST_STANDBY),
        _ => HANDOVER_POLL,
    }
}

/// How long an invocation watches past its period, so that the next invocation (started one
/// period after it, and sweeping first) can take over before it lets go; a quarter of the
/// period for short ones.
pub const OVERLAP: Duration = Duration::from_secs(20);
/// What an invocation keeps of its time after watching: a run in flight finishes, the leases
/// are let go, the answer is sent.
pub const STOP_MARGIN: Duration = Duration::from_secs(15);

/// How long a scheduled invocation watches, once it has swept: its period plus the overlap,
/// within its time left less the stop margin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchWindow {
    pub watch_for: Duration,
    /// Of each period, what no invocation watches because the function's timeout is too short
    /// (zero when coverage is continuous).
    pub uncovered: Duration,
}

pub fn watch_window(period: Duration, time_left: Duration) -> WatchWindow {
    let wanted = period + OVERLAP.min(period / 4);
    let watch_for = wanted.min(time_left.saturating_sub(STOP_MARGIN.min(time_left / 4)));
    WatchWindow {
        watch_for,
        uncovered: period.saturating_sub(watch_for),
    }
}

/// Whether a holder that could not renew must stop following: its lease may lapse before it
/// could renew again, and then another watcher may take over.
pub fn must_let_go(held_until_ms: u64, now_ms: u64, renew_every: Duration) -> bool {
    let margin = u64::try_from(renew_every.as_millis()).unwrap_or(u64::MAX);
    now_ms.saturating_add(margin) >= held_until_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_standby_asks_rarely_while_the_lease_has_long_to_run_and_often_near_its_end() {
        let now = 1_000_000;
        let s = |secs: u64| now + secs * 1000;
        // (case, the holder's lease ends at, the wait)
        let cases = [
            ("an hour left: the longest wait", s(3600), LONGEST_STANDBY),
            (
                "20 s left: until the window opens",
                s(20),
                Duration::from_secs(15),
            ),
            ("3 s left: often", s(3), HANDOVER_POLL),
            ("exactly the window left: often", s(5), HANDOVER_POLL),
            ("lapsed already: at once, often", now - 10, HANDOVER_POLL),
        ];
        for (case, until, wait) in cases {
            assert_eq!(standby_wait(until, now), wait, "{case}");
        }
    }

    #[test]
    fn a_scheduled_invocation_watches_its_period_and_a_little_more_within_its_time() {
        let s = Duration::from_secs;
        // (case, period, time left, watches for, uncovered)
        let cases = [
            (
                "five minutes under a 900 s timeout: the period and 20 s",
                s(300),
                s(895),
                s(320),
                s(0),
            ),
            (
                "a short period overlaps by a quarter",
                s(8),
                s(60),
                s(10),
                s(0),
            ),
            (
                "a timeout shorter than the period leaves a gap, stated",
                s(300),
                s(200),
                s(185),
                s(115),
            ),
            (
                "a short time left keeps a quarter for stopping",
                s(20),
                s(20),
                s(15),
                s(5),
            ),
        ];
        for (case, period, left, watch_for, uncovered) in cases {
            assert_eq!(
                watch_window(period, left),
                WatchWindow {
                    watch_for,
                    uncovered
                },
                "{case}"
            );
        }
    }

    #[test]
    fn a_holder_that_cannot_renew_lets_go_before_its_lease_could_lapse() {
        let every = Duration::from_secs(20);
        // (case, held until, now, lets go)
        let cases = [
            ("a minute left", 60_000, 0, false),
            ("exactly one renewal left", 20_000, 0, true),
            ("lapsed", 10_000, 20_000, true),
        ];
        for (case, until, now, lets_go) in cases {
            assert_eq!(must_let_go(until, now, every), lets_go, "{case}");
        }
    }
}
