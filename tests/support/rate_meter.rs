//! A counting proxy in front of moto: forwards every request, one per connection, and notes
//! when each arrived and which of the account's API rate buckets it draws on — ELBv2 reads,
//! EC2 reads, EC2 rule writes — or which unpaced kind of call it is. From those times it works
//! out what several processes drew together: the most calls in any second, the highest rate
//! over any ten seconds, and the burst they drew (the smallest bucket that, refilling at the
//! allowed rate, would have let every call through): the figures that say whether the runs of
//! one deployment kept, between them, within their share of each bucket.

use super::throttle::{forward, operation, read_request};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tgb_reconciler::pure::pace::{
    Allowance, BucketSize, CONFIRM_AFTER, EC2_READS, EC2_RULE_WRITES, ELB_READS,
};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpListener;

/// The buckets the product paces, by the name the meter gives their calls.
pub const PACED: [(&str, BucketSize); 3] = [
    ("ELBv2 reads", ELB_READS),
    ("EC2 reads", EC2_READS),
    ("EC2 rule writes", EC2_RULE_WRITES),
];

/// When each call arrived, by bucket.
#[derive(Default)]
struct Log {
    started: Option<Instant>,
    calls: BTreeMap<String, Vec<Duration>>,
}

pub struct RateMeter {
    pub url: String,
    log: Arc<Mutex<Log>>,
    task: tokio::task::JoinHandle<()>,
}

impl RateMeter {
    pub async fn start(upstream: &str) -> RateMeter {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the meter");
        let url = format!("http://{}", listener.local_addr().expect("meter address"));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let log = Arc::new(Mutex::new(Log {
            started: Some(Instant::now()),
            ..Log::default()
        }));
        let shared = log.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let (upstream, log) = (upstream.clone(), shared.clone());
                tokio::spawn(async move {
                    let Ok(request) = read_request(&mut client).await else {
                        return;
                    };
                    let (service, action) = operation(&request);
                    if let Ok(mut log) = log.lock() {
                        let at = log.started.map(|s| s.elapsed()).unwrap_or_default();
                        let bucket = bucket_of(&service, &action, &request);
                        log.calls.entry(bucket).or_default().push(at);
                    }
                    if let Ok(response) = forward(&upstream, &request).await {
                        let _ = client.write_all(&response).await;
                    }
                    let _ = client.shutdown().await;
                });
            }
        });
        RateMeter { url, log, task }
    }

    /// Forgets every call so far; times count from now.
    pub fn reset(&self) {
        if let Ok(mut log) = self.log.lock() {
            log.calls.clear();
            log.started = Some(Instant::now());
        }
    }

    /// The time of every call since the last reset, sorted, by bucket (or unpaced kind).
    pub fn calls(&self) -> BTreeMap<String, Vec<Duration>> {
        let mut calls = self
            .log
            .lock()
            .map(|log| log.calls.clone())
            .unwrap_or_default();
        for times in calls.values_mut() {
            times.sort();
        }
        calls
    }
}

impl Drop for RateMeter {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The bucket a call draws on, by the product's pacing; unpaced calls by service and kind
/// (the state table's calls about the roster of pacers apart from the others).
pub fn bucket_of(service: &str, action: &str, request: &[u8]) -> String {
    let reads = action.starts_with("Describe");
    let roster = super::throttle::find(request, br#"{"S":"pacing"}"#).is_some();
    let name = match service {
        "elasticloadbalancing" if reads => "ELBv2 reads",
        "elasticloadbalancing" => "ELBv2 writes (not paced)",
        "ec2" if reads => "EC2 reads",
        "ec2" if action.ends_with("SecurityGroupIngress") => "EC2 rule writes",
        "ec2" => "EC2, other",
        "dynamodb" if roster => "DynamoDB, the roster of pacers",
        "dynamodb" => "DynamoDB, records, statuses and leases",
        other => return format!("{other} (not paced)"),
    };
    name.to_string()
}

/// The most calls within any `window` (a window starts at a call).
pub fn peak_in(times: &[Duration], window: Duration) -> usize {
    let mut first = 0;
    let mut peak = 0;
    for (last, at) in times.iter().enumerate() {
        while *at - times[first] >= window {
            first += 1;
        }
        peak = peak.max(last - first + 1);
    }
    peak
}

/// The burst the calls drew at `per_second`: the most, over any stretch from one call to a
/// later one, by which the calls exceed what the rate refilled in between. A bucket of this
/// many calls, full at the start and refilling at `per_second`, lets every call through at
/// once; a smaller one would have held one back.
pub fn burst_drawn(times: &[Duration], per_second: f64) -> f64 {
    // For calls i ≤ j: (j - i + 1) - rate·(t_j - t_i) = (j + 1 - rate·t_j) + (rate·t_i - i).
    let mut best_start = f64::NEG_INFINITY;
    let mut drawn: f64 = 0.0;
    for (j, at) in times.iter().enumerate() {
        let t = at.as_secs_f64();
        best_start = best_start.max(per_second * t - j as f64);
        drawn = drawn.max(j as f64 + 1.0 - per_second * t + best_start);
    }
    drawn
}

/// One bucket's figures for calls drawn together, against what the deployment may draw.
#[derive(Debug, Clone)]
pub struct BucketFigures {
    pub bucket: &'static str,
    pub allowed: Allowance,
    pub calls: usize,
    pub peak_second: usize,
    pub peak_ten_seconds: usize,
    pub burst_drawn: f64,
}

impl BucketFigures {
    /// The most calls any second may take: the burst and a second's refill.
    pub fn allowed_second(&self) -> f64 {
        f64::from(self.allowed.burst) + self.allowed.per_second
    }

    /// The highest rate any ten seconds may have: a tenth of the burst above the refill.
    pub fn allowed_ten_seconds_rate(&self) -> f64 {
        f64::from(self.allowed.burst) / 10.0 + self.allowed.per_second
    }

    /// By how many calls the burst drawn exceeds the allowed one (0 when within).
    pub fn over(&self) -> f64 {
        (self.burst_drawn - f64::from(self.allowed.burst)).max(0.0)
    }

    /// What "within" leaves room for when `pacers` draw together: a pacer that lists itself
    /// counts again only half a second later (pacers listing themselves together each see
    /// only the ones before them), and the meter notes a call a moment after its token was
    /// taken; a call per pacer covers the moment.
    pub fn room(&self, pacers: usize) -> f64 {
        pacers as f64 + self.allowed.per_second * CONFIRM_AFTER.as_secs_f64()
    }
}

/// The figures of every paced bucket, for calls that together may draw `share` of each.
pub fn figures(calls: &BTreeMap<String, Vec<Duration>>, share: f64) -> Vec<BucketFigures> {
    PACED
        .iter()
        .map(|(bucket, size)| {
            let allowed = size.share(share);
            let times = calls.get(*bucket).map(Vec::as_slice).unwrap_or_default();
            BucketFigures {
                bucket,
                allowed,
                calls: times.len(),
                peak_second: peak_in(times, Duration::from_secs(1)),
                peak_ten_seconds: peak_in(times, Duration::from_secs(10)),
                burst_drawn: burst_drawn(times, allowed.per_second),
            }
        })
        .collect()
}

/// The figures as a Markdown table.
pub fn print_figures(rows: &[BucketFigures]) {
    println!(
        "| bucket | the share: at once, then a second | calls | most in any 1 s (allowed) | highest rate over any 10 s (allowed) | burst drawn at the share's refill (allowed) |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for row in rows {
        let over = if row.over() > 0.0 {
            format!(", **over by {:.1}**", row.over())
        } else {
            String::new()
        };
        println!(
            "| {} | {}, then {:.2}/s | {} | {} ({:.1}) | {:.2}/s ({:.2}/s) | {:.1} ({}{over}) |",
            row.bucket,
            row.allowed.burst,
            row.allowed.per_second,
            row.calls,
            row.peak_second,
            row.allowed_second(),
            row.peak_ten_seconds as f64 / 10.0,
            row.allowed_ten_seconds_rate(),
            row.burst_drawn,
            row.allowed.burst,
        );
    }
    println!();
}

/// Calls that draw on no paced bucket, by kind: how many.
pub fn print_unpaced(calls: &BTreeMap<String, Vec<Duration>>) {
    let unpaced: Vec<String> = calls
        .iter()
        .filter(|(bucket, _)| !PACED.iter().any(|(paced, _)| paced == *bucket))
        .map(|(bucket, times)| format!("{bucket} {}", times.len()))
        .collect();
    if !unpaced.is_empty() {
        println!("Calls outside the paced buckets: {}.\n", unpaced.join(", "));
    }
}
