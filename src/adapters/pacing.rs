//! Client-side pacing within the account's API rate buckets (DESIGN §6). People, Terraform and
//! other controllers draw on the same per-account buckets, so every call first waits for a
//! token of its bucket, and the reconciler takes only a share of each: a large sweep spreads
//! its reads over time instead of emptying a bucket and throttling everyone else. Throttling
//! that still happens is retried by the SDK with backoff and jitter.

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::Duration;

/// The share of each bucket taken unless configured otherwise.
pub const DEFAULT_SHARE: f64 = 0.5;

/// One bucket: a refill rate and a burst, both scaled by the share.
pub struct Bucket(DefaultDirectRateLimiter);

impl Bucket {
    fn share_of(refill_per_second: f64, burst: u32, share: f64) -> Self {
        let rate = (refill_per_second * share).max(0.01);
        let burst =
            NonZeroU32::new((f64::from(burst) * share).floor() as u32).unwrap_or(NonZeroU32::MIN);
        let quota = Quota::with_period(Duration::from_secs_f64(1.0 / rate))
            .unwrap_or_else(|| Quota::per_second(NonZeroU32::MIN))
            .allow_burst(burst);
        Self(RateLimiter::direct(quota))
    }

    /// Waits until the bucket has a token for one call, and takes it.
    pub async fn take(&self) {
        self.0.until_ready().await;
    }
}

/// The buckets our calls draw on. EC2's figures are its documented defaults; ELBv2 publishes
/// none, so its describe bucket is the one observed (about 40, refilling 10 a second).
#[derive(Clone)]
pub struct Pacing {
    /// ELBv2 Describe* (target groups, tags, target health, load balancers).
    pub elb_reads: Arc<Bucket>,
    /// EC2 Describe* with filters or ids: 100, refilling 20 a second.
    pub ec2_reads: Arc<Bucket>,
    /// AuthorizeSecurityGroupIngress and RevokeSecurityGroupIngress: 50, refilling 5 a second.
    pub ec2_rule_writes: Arc<Bucket>,
}

/// A share of the rate buckets outside (0, 1], as given; the message names the setting. (The
/// value is kept as written: a NaN would make the error unequal to itself.)
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("--api-rate-share (TGB_API_RATE_SHARE) must be above 0 and at most 1, not {given}")]
pub struct InvalidShare {
    pub given: String,
}

impl Pacing {
    /// `share` of every bucket, in (0, 1].
    pub fn with_share(share: f64) -> Result<Self, InvalidShare> {
        if !(share > 0.0 && share <= 1.0) {
            return Err(InvalidShare {
                given: share.to_string(),
            });
        }
        Ok(Self::buckets(share))
    }

    /// No pacing at all: for emulators, which have no rate buckets to share.
    pub fn unlimited() -> Self {
        let bucket = || Arc::new(Bucket::share_of(1e9, u32::MAX, 1.0));
        Self {
            elb_reads: bucket(),
            ec2_reads: bucket(),
            ec2_rule_writes: bucket(),
        }
    }

    fn buckets(share: f64) -> Self {
        Self {
            elb_reads: Arc::new(Bucket::share_of(10.0, 40, share)),
            ec2_reads: Arc::new(Bucket::share_of(20.0, 100, share)),
            ec2_rule_writes: Arc::new(Bucket::share_of(5.0, 50, share)),
        }
    }
}

impl Default for Pacing {
    fn default() -> Self {
        Self::buckets(DEFAULT_SHARE)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Calls allowed at once, before any refill could matter (a refill takes 200 ms or more).
    fn burst(bucket: &Bucket) -> usize {
        (0..1_000).take_while(|_| bucket.0.check().is_ok()).count()
    }

    #[test]
    fn a_bucket_allows_its_share_of_the_burst_at_once_and_no_more() {
        assert_eq!(burst(&Bucket::share_of(10.0, 40, 0.5)), 20);
        assert_eq!(burst(&Bucket::share_of(5.0, 50, 1.0)), 50);
    }

    #[test]
    fn an_unlimited_pacing_never_holds_a_call_back() {
        assert_eq!(burst(&Pacing::unlimited().ec2_rule_writes), 1_000);
    }

    #[test]
    fn a_tiny_share_still_allows_one_call() {
        assert_eq!(burst(&Bucket::share_of(5.0, 50, 0.001)), 1);
    }

    #[test]
    fn a_share_outside_zero_to_one_is_refused_naming_the_setting() {
        for share in [0.0, -0.5, 1.5, f64::NAN] {
            let error = Pacing::with_share(share).err().expect("refused");
            assert!(error.to_string().contains("--api-rate-share"), "{error}");
        }
        assert!(Pacing::with_share(1.0).is_ok());
    }
}
