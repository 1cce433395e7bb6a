//! Watch mode on the emulators: how soon a change of endpoints is applied, what it costs, what
//! an idle watcher costs, and (at the full size) how much memory the watcher's process holds.

use super::emulated::{CLUSTER, Emulated};
use super::layout::{Kind, Layout};
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::io::BufRead;
use std::time::{Duration, Instant};
use tgb_reconciler::shell::watch::{WatchOptions, WatchRun, watch_clusters};

/// How long any one wait of the benchmark may take.
const DEADLINE: Duration = Duration::from_secs(900);
const POLL: Duration = Duration::from_millis(5);

/// `changes` endpoint changes, one after another, each waited for; then `idle` with nothing
/// changing. Prints the latencies, the calls per change and the idle calls.
pub async fn in_process(world: &Emulated, changes: usize, idle: Duration) {
    let session = world.session();
    let options = WatchOptions::until_stopped("bench");
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let runs: RefCell<Vec<(Instant, WatchRun)>> = RefCell::new(Vec::new());
    let report = |run: WatchRun| runs.borrow_mut().push((Instant::now(), run));
    let ip_bindings: Vec<usize> = (0..world.layout.scale.bindings())
        .filter(|b| world.layout.kind(*b) == Kind::Ip)
        .collect();
    let body = async {
        wait("the watcher's first sweep", || !runs.borrow().is_empty()).await;
        world.reset_counts();
        let mut observed = Vec::with_capacity(changes);
        let mut reported = Vec::with_capacity(changes);
        for i in 0..changes {
            // First every binding loses its first endpoint's readiness, then gets it back.
            let b = ip_bindings[i % ip_bindings.len()];
            let not_ready = (i / ip_bindings.len()).is_multiple_of(2).then_some(0);
            let slice = Layout::slice_name(b);
            let seen = runs.borrow().len();
            let started = Instant::now();
            world.kube.apply(world.layout.endpoint_slice(b, not_ready));
            wait("a change applied", || {
                runs.borrow()[seen..]
                    .iter()
                    .any(|(_, run)| run.causes.iter().any(|c| c.contains(&slice)))
            })
            .await;
            let runs = runs.borrow();
            let (at, run) = runs[seen..]
                .iter()
                .find(|(_, run)| run.causes.iter().any(|c| c.contains(&slice)))
                .expect("the run waited for");
            assert!(
                run.outcomes
                    .iter()
                    .all(|o| o.report.as_ref().is_some_and(|r| r.is_clean())),
                "change {i} was not applied cleanly"
            );
            observed.push(at.duration_since(started));
            reported.push(Duration::from_millis(run.change_to_applied_ms));
        }
        let change_counts = world.counts();

        world.reset_counts();
        tokio::time::sleep(idle).await;
        let idle_counts = world.counts();
        let _ = stop.send(true);
        (observed, reported, change_counts, idle_counts)
    };
    let ((), (mut observed, mut reported, change_counts, idle_counts)) =
        tokio::join!(watch_clusters(&session, &options, stopped, &report), body);

    println!(
        "{changes} endpoint changes, one after another, each a readiness flip in one Service's EndpointSlice.\n"
    );
    println!("Targets: p50 under 1 s, p99 under 2 s; no AWS call while idle.\n");
    println!("| change → applied | p50 | p99 | max |");
    println!("|---|---:|---:|---:|");
    for (what, latencies) in [
        (
            "as the watcher reports it (watch event → last write)",
            &mut reported,
        ),
        (
            "as seen from outside (the slice written → the run's report)",
            &mut observed,
        ),
    ] {
        latencies.sort();
        println!(
            "| {what} | {} | {} | {} |",
            super::ms(percentile(latencies, 50)),
            super::ms(percentile(latencies, 99)),
            super::ms(latencies.last().copied().unwrap_or_default())
        );
    }
    println!();
    let per_change = |counts: &BTreeMap<String, usize>| -> Vec<(String, f64)> {
        counts
            .iter()
            .map(|(op, n)| (op.clone(), *n as f64 / changes.max(1) as f64))
            .collect()
    };
    println!("| calls per change | per change |");
    println!("|---|---:|");
    for (op, n) in per_change(&change_counts) {
        println!("| {op} | {n:.2} |");
    }
    let aws: usize = change_counts
        .iter()
        .filter(|(op, _)| !op.starts_with("Kubernetes."))
        .map(|(_, n)| n)
        .sum();
    println!(
        "| **AWS, all operations** | **{:.2}** |\n",
        aws as f64 / changes.max(1) as f64
    );
    let minutes = idle.as_secs_f64() / 60.0;
    println!(
        "Idle for {:.0} s (bookmarks only): calls per idle minute, by operation (the watch lease's renewal every 20 s is a DynamoDB `UpdateItem`):\n",
        idle.as_secs_f64()
    );
    println!("| operation | per idle minute |");
    println!("|---|---:|");
    if idle_counts.is_empty() {
        println!("| (none) | 0 |");
    }
    for (op, n) in &idle_counts {
        println!("| {op} | {:.1} |", *n as f64 / minutes);
    }
    println!();
}

/// The `p`th percentile of sorted values (nearest rank).
fn percentile(sorted: &[Duration], p: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (sorted.len() * p).div_ceil(100).max(1);
    sorted[rank.min(sorted.len()) - 1]
}

/// Polls until `holds`; panics past [`DEADLINE`].
async fn wait(what: &str, holds: impl Fn() -> bool) {
    let started = Instant::now();
    while !holds() {
        assert!(
            started.elapsed() < DEADLINE,
            "{what}: not within {DEADLINE:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

/// The release binary's `watch` on this world: until its first run (a sweep from its view) is
/// printed, then `changes` endpoint changes a second apart, then SIGTERM. Prints its peak
/// memory, how long its first run took and how long it took to stop.
pub async fn process(world: &Emulated, binary: &str, changes: usize) {
    process_with(world, binary, changes, &[], &[]).await;
}

/// [`process`], with more arguments (`--dry-run`) and more environment for the process (an
/// allocator setting, say).
pub async fn process_with(
    world: &Emulated,
    binary: &str,
    changes: usize,
    args: &[&str],
    extra: &[(&'static str, &str)],
) {
    let mut env = world.env();
    env.push(("TGB_API_RATE_SHARE", "1".into()));
    env.extend(extra.iter().map(|(k, v)| (*k, v.to_string())));
    let usage = tempfile::NamedTempFile::new().expect("a file for the watcher's usage");
    let started = Instant::now();
    let mut child = super::measured::command(binary, usage.path())
        .args(["watch", "--cluster", CLUSTER, "--output", "json"])
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {binary} watch: {e}"));
    let stdout = child.stdout.take().expect("its stdout");
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let reader = std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    let first = tokio::time::timeout(DEADLINE, lines.recv())
        .await
        .ok()
        .flatten()
        .expect("the watcher's first run");
    let first_run = started.elapsed();
    assert!(first.contains("watch started"), "{first}");
    let ip_bindings: Vec<usize> = (0..world.layout.scale.bindings())
        .filter(|b| world.layout.kind(*b) == Kind::Ip)
        .take(changes)
        .collect();
    for b in &ip_bindings {
        world.kube.apply(world.layout.endpoint_slice(*b, Some(0)));
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let pid = libc::pid_t::try_from(child.id()).expect("a pid");
    let stopping = Instant::now();
    // SAFETY: kill(2) on the launcher this process spawned and has not reaped; it passes the
    // signal on to the watcher.
    unsafe {
        libc::kill(pid, libc::SIGTERM);
    }
    let status = child.wait().expect("the watcher's launcher");
    let stop_took = stopping.elapsed();
    // Every line it printed, read to its end.
    let _ = reader.join();
    let mut later_runs = 0;
    while lines.try_recv().is_ok() {
        later_runs += 1;
    }
    assert!(
        status.success(),
        "`tgb-reconciler watch` did not stop cleanly ({status})"
    );
    let usage = super::measured::read(usage.path());
    let rss = usage.max_rss_mib;
    let extra: Vec<String> = extra.iter().map(|(k, v)| format!("{k}={v}")).collect();
    if !extra.is_empty() || !args.is_empty() {
        println!("With `{}` `{}`:\n", extra.join(" "), args.join(" "));
    }
    println!(
        "The release binary's `watch`: its view of {} nodes, {} pods, {} bindings, then its first run (a sweep from the view) and {} endpoint changes ({} runs after the first), stopped by SIGTERM.\n",
        world.layout.scale.nodes(),
        ip_count(world) * world.layout.scale.nodes_per_group,
        world.layout.scale.bindings(),
        ip_bindings.len(),
        later_runs
    );
    println!("| watcher | figure |");
    println!("|---|---:|");
    println!("| peak memory (max RSS; target under 128 MiB) | {rss:.1} MiB |");
    println!(
        "| start → first run printed (lists, then sweeps) | {} |",
        super::ms(first_run)
    );
    println!(
        "| SIGTERM → exit 0 (target under 10 s) | {} |",
        super::ms(stop_took)
    );
    println!("| CPU | {} |\n", super::ms(usage.cpu));
}

fn ip_count(world: &Emulated) -> usize {
    (0..world.layout.scale.bindings())
        .filter(|b| world.layout.kind(*b) == Kind::Ip)
        .count()
}
