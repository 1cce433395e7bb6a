//! Scale, cost and start-up figures, printed as Markdown (`scripts/bench` keeps them in
//! BENCHMARKS.md). `cargo bench --bench scale` runs the sizes of issue 5; under `cargo test`
//! the same code runs at a tiny size, so the benchmark cannot rot unnoticed.
//!
//! 1. Planning 1,000 bindings / 50,000 targets / 500 security groups with every port in
//!    memory: CPU time and peak heap of the product's decisions alone.
//! 2. 100 bindings on the local emulators: calls of a steady sweep, of one security-group
//!    event and of one target-group event, against the least each needs.
//! 3. The binary: its size, and the time from process start to its first answered invocation
//!    through a local Lambda Runtime API.
//! 4. A full sweep at the planning size on the emulators: wall time, the binary's CPU time and
//!    peak memory, and its calls against the least it needs.
//! 5. Watch mode: change → applied latency, calls per change and per idle minute at 100
//!    bindings; the watcher's peak memory at the full size.
//! 6. Many clusters, one account: four clusters swept at once, each by a process of its own,
//!    their calls per bucket against the deployment's `--api-rate-share` (`--fleet-only`: just
//!    these).
//!
//! `--full-sweep-only` prints item 4 alone, and the watcher at full size of item 5.

#[path = "../../tests/support/mod.rs"]
mod support;

mod emulated;
mod fleet;
mod layout;
mod measured;
mod memory;
mod minimum;
mod runtime_api;
mod watching;

use layout::Scale;
use std::alloc::{GlobalAlloc, Layout as AllocLayout, System};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tgb_reconciler::ports::Ports;
use tgb_reconciler::pure::outcome::ClusterOutcome;
use tgb_reconciler::pure::scope::Scope;
use tgb_reconciler::shell::cluster_run::{RunOptions, reconcile_cluster};
use tgb_reconciler::state::lease::LeaseTerms;

/// Issue 5's size: 10 node groups of 50 nodes (one security group each), 100 bindings per
/// group: 1,000 bindings of 50 targets.
const FULL: Scale = Scale {
    node_groups: 10,
    nodes_per_group: 50,
    bindings_per_group: 100,
};
/// 100 bindings of 5 targets, for the event figures.
const EVENTS: Scale = Scale {
    node_groups: 10,
    nodes_per_group: 5,
    bindings_per_group: 10,
};
/// Under `cargo test`: every section, in seconds.
const SMOKE: Scale = Scale {
    node_groups: 2,
    nodes_per_group: 2,
    bindings_per_group: 2,
};
/// Four clusters of one deployment, each with 50 bindings on 20 nodes: 61 ELBv2 reads a pass
/// each (the target groups, their tags, a target-health read per binding), and 20 rule writes
/// on a first sweep, four times over at once.
const FLEET: support::fleet::Shape = support::fleet::Shape {
    clusters: 4,
    nodes: 20,
    bindings: 50,
};
/// Under `cargo test`: enough that each process waits on its part of the ELBv2 reads.
const FLEET_SMOKE: support::fleet::Shape = support::fleet::Shape {
    clusters: 4,
    nodes: 3,
    bindings: 4,
};

// ---- Heap accounting: every allocation of this process, with its high-water mark. ----------

struct Counting;
static CURRENT: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

fn grew(size: usize) {
    let now = CURRENT.fetch_add(size, Ordering::Relaxed) + size;
    PEAK.fetch_max(now, Ordering::Relaxed);
}

// SAFETY: every call is forwarded to the system allocator unchanged; only sizes are counted.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: AllocLayout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        grew(layout.size());
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: AllocLayout) {
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: AllocLayout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        CURRENT.fetch_sub(layout.size(), Ordering::Relaxed);
        grew(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn mib(bytes: usize) -> f64 {
    bytes as f64 / (1024.0 * 1024.0)
}

/// CPU time (user + system) of the calling thread.
fn thread_cpu() -> Duration {
    // SAFETY: getrusage only writes the struct it is given.
    let usage = unsafe {
        let mut usage = std::mem::zeroed::<libc::rusage>();
        libc::getrusage(libc::RUSAGE_THREAD, &mut usage);
        usage
    };
    cpu(&usage)
}

fn cpu(usage: &libc::rusage) -> Duration {
    let time = |t: libc::timeval| {
        Duration::from_secs(u64::try_from(t.tv_sec).unwrap_or(0))
            + Duration::from_micros(u64::try_from(t.tv_usec).unwrap_or(0))
    };
    time(usage.ru_utime) + time(usage.ru_stime)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some(measured::FLAG) {
        measured::launch(&args[2..]);
    }
    let full = std::env::args().any(|a| a == "--bench");
    let (planning, events, sweep) = if full {
        (FULL, EVENTS, FULL)
    } else {
        (SMOKE, SMOKE, SMOKE)
    };
    let binary = env!("CARGO_BIN_EXE_tgb-reconciler");
    // `--watcher-memory`: only the full-size watcher (a dry run), with glibc's default arenas
    // and with two.
    if std::env::args().any(|a| a == "--watcher-memory") {
        two_workers().block_on(async {
            // Not converged: each watcher's first run plans the whole first sweep, and a dry
            // run applies none of it.
            let world = emulated::Emulated::start(sweep).await;
            for extra in [&[][..], &[("MALLOC_ARENA_MAX", "2")][..]] {
                watching::process_with(&world, binary, 10, &["--dry-run"], extra).await;
            }
        });
        return;
    }
    // `--fleet-only`: just the figures of many clusters in one account.
    if std::env::args().any(|a| a == "--fleet-only") {
        let shape = if full { FLEET } else { FLEET_SMOKE };
        two_workers().block_on(many_clusters(shape));
        return;
    }
    // `--full-sweep-only`: just the full sweep's figures (item 4, and the full-size watcher).
    if std::env::args().any(|a| a == "--full-sweep-only") {
        println!("## Full sweep on the emulators: {}\n", sweep.describe());
        two_workers().block_on(full_sweep(sweep, binary));
        return;
    }
    println!("## Planning in memory: {}\n", planning.describe());
    plan_in_memory(planning, if full { PLANNING_REPEATS } else { 1 });
    // `--planning-only`: just these figures, in seconds (to compare two commits).
    if std::env::args().any(|a| a == "--planning-only") {
        return;
    }

    two_workers().block_on(async {
        println!("## Calls on the emulators: {}\n", events.describe());
        let world = emulated::Emulated::start(events).await;
        converge(&world).await;
        event_calls(&world).await;
        println!("## The binary\n");
        binary_figures(binary, &world).await;
        println!("## Watch mode: {}\n", events.describe());
        let (changes, idle) = if full {
            (WATCH_CHANGES, Duration::from_secs(60))
        } else {
            (4, Duration::from_secs(1))
        };
        watching::in_process(&world, changes, idle).await;
        drop(world);
        many_clusters(if full { FLEET } else { FLEET_SMOKE }).await;

        // `--without-full-sweep`: the other figures in a few minutes.
        if !std::env::args().any(|a| a == "--without-full-sweep") {
            println!("## Full sweep on the emulators: {}\n", sweep.describe());
            full_sweep(sweep, binary).await;
        }
    });
}

/// 6. Many clusters, one account.
async fn many_clusters(shape: support::fleet::Shape) {
    println!(
        "## Many clusters, one account: {} at once\n",
        shape.clusters
    );
    fleet::rates(shape, RATE_SHARE).await;
}

// ---- 1. Planning in memory -------------------------------------------------------------------

/// How often `--bench` plans a fresh world (a first run, then a steady one): CPU time varies
/// from run to run on a shared machine, so the median is printed with the range. Allocations
/// and peak heap repeat exactly.
const PLANNING_REPEATS: usize = 5;

/// One run's cost.
struct RunCost {
    cpu: Duration,
    peak: usize,
    allocations: usize,
    changes: usize,
}

/// The runtime of the emulator figures: two workers, as the machine has two cores.
fn two_workers() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

fn plan_in_memory(scale: Scale, repeats: usize) {
    let layout = memory::layout(scale);
    // Timers on: a cluster's run keeps a progress ticker beside it.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("a tokio runtime");
    let options = RunOptions {
        dry_run: false,
        lease: Some(LeaseTerms::new("bench", 60)),
        deadline: None,
    };
    let mut first = Vec::new();
    let mut steady = Vec::new();
    let mut inputs = 0;
    for _ in 0..repeats {
        let before = CURRENT.load(Ordering::Relaxed);
        let cloud = memory::cloud(&layout);
        inputs = CURRENT.load(Ordering::Relaxed) - before;
        let ports = Ports {
            registry: &cloud,
            network: &cloud,
            firewall: &cloud,
            store: &cloud,
        };
        let run = || {
            let baseline = CURRENT.load(Ordering::Relaxed);
            PEAK.store(baseline, Ordering::Relaxed);
            let allocations = ALLOCATIONS.load(Ordering::Relaxed);
            let cpu = thread_cpu();
            let outcomes = runtime.block_on(reconcile_cluster(
                emulated::CLUSTER,
                Ok(&cloud),
                &ports,
                &Default::default(),
                &Scope::Cluster,
                &options,
            ));
            let cost = RunCost {
                cpu: thread_cpu() - cpu,
                peak: PEAK.load(Ordering::Relaxed) - baseline,
                allocations: ALLOCATIONS.load(Ordering::Relaxed) - allocations,
                changes: applied(&outcomes),
            };
            (cost, outcomes)
        };
        let (cost, outcomes) = run();
        first.push(cost);
        drop(outcomes);
        let (cost, outcomes) = run();
        steady.push(cost);
        // The steady run must have found nothing to do.
        assert_converged(&outcomes);
    }
    println!("Targets: under 100 ms of CPU and 64 MiB of memory.\n");
    println!(
        "| run | CPU, median of {repeats} (range) | peak heap during the run | allocations | allocations per target | changes |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (run, costs) in [
        ("first (registers and authorizes everything)", &mut first),
        ("steady (nothing to change)", &mut steady),
    ] {
        costs.sort_by_key(|c| c.cpu);
        let median = &costs[costs.len() / 2];
        let (low, high) = (&costs[0], &costs[costs.len() - 1]);
        let peak = costs.iter().map(|c| c.peak).max().unwrap_or(0);
        let per_target = median.allocations as f64 / scale.targets() as f64;
        println!(
            "| {run} | {} ({:.0}–{:.0} ms) | {:.1} MiB | {} | {per_target:.1} | {} |",
            ms(median.cpu),
            low.cpu.as_secs_f64() * 1000.0,
            high.cpu.as_secs_f64() * 1000.0,
            mib(peak),
            median.allocations,
            median.changes
        );
    }
    println!(
        "\nInputs held in memory (the snapshot and the observed AWS state): {:.1} MiB.\n",
        mib(inputs)
    );
}

/// Targets registered plus rules authorized, over every run of the outcome.
fn applied(outcomes: &[ClusterOutcome]) -> usize {
    outcomes
        .iter()
        .filter_map(|o| o.report.as_ref())
        .map(|r| r.done().len() + r.rules_done.len())
        .sum()
}

/// The benchmark's premise: the run found the world converged, nothing failed or held back.
fn assert_converged(outcomes: &[ClusterOutcome]) {
    let last = outcomes.last().expect("an outcome");
    assert!(
        last.plan.is_converged(),
        "the benchmark world did not converge:\n{}",
        last.plan
    );
}

// ---- 2. Calls on the emulators -----------------------------------------------------------------

/// The first sweep's report, which must show everything applied.
fn applied_cleanly(outcomes: &[ClusterOutcome]) -> &tgb_reconciler::pure::report::Report {
    let last = outcomes.last().expect("an outcome");
    let report = last
        .report
        .as_ref()
        .unwrap_or_else(|| panic!("the first sweep applied nothing:\n{}", last.plan));
    assert!(report.is_clean(), "the first sweep failed:\n{report}");
    report
}

async fn converge(world: &emulated::Emulated) {
    let first = world.sweep().await;
    applied_cleanly(&first);
    let steady = world.sweep().await;
    assert_converged(&steady);
}

async fn event_calls(world: &emulated::Emulated) {
    world.reset_counts();
    let steady = world.sweep().await;
    assert_converged(&steady);
    let sweep = world.counts();

    let sg_event = event_calls_of(
        world,
        "cloudtrail-revoke-security-group-ingress.json",
        support::events::GROUP_ID,
        &world.layout.nodes[0].security_group,
    )
    .await;
    let tg_event = event_calls_of(
        world,
        "cloudtrail-deregister-targets.json",
        support::events::TARGET_GROUP_ARN,
        &world.layout.target_groups[0],
    )
    .await;

    let minimum = minimum::steady_sweep(&world.layout);
    let ratio = minimum::print_table(
        &[
            ("steady sweep", &sweep),
            ("least a sweep needs", &minimum),
            ("SG event", &sg_event),
            ("TG event", &tg_event),
        ],
        &sweep,
        &minimum,
    );
    keep_target("the steady sweep's calls / the least it needs", ratio, 1.0);
}

/// The calls of one sample event about `id`, handled as the Lambda handler does.
async fn event_calls_of(
    world: &emulated::Emulated,
    sample: &str,
    pointer: &str,
    id: &str,
) -> BTreeMap<String, usize> {
    let event = support::events::sample(sample, &[(pointer, id)]);
    world.reset_counts();
    let handled = tgb_reconciler::entry::lambda::handle_event(&event, None, &world.session()).await;
    assert_converged(&handled.outcomes);
    world.counts()
}

/// Under `cargo test` a missed target fails the run; a benchmark run reports it and goes on.
fn keep_target(what: &str, measured: f64, target: f64) {
    let smoke = !std::env::args().any(|a| a == "--bench");
    assert!(
        !smoke || measured <= target,
        "{what}: {measured:.2}, the target is {target:.2}"
    );
}

// ---- 3. The binary ------------------------------------------------------------------------------

async fn binary_figures(binary: &str, world: &emulated::Emulated) {
    let size = std::fs::metadata(binary)
        .unwrap_or_else(|e| panic!("{binary}: {e}"))
        .len();
    println!(
        "Binary `{}`: {:.1} MiB (target: under 20 MiB).\n",
        binary.rsplit('/').next().unwrap_or(binary),
        mib(usize::try_from(size).unwrap_or(usize::MAX))
    );
    println!("| first invocation | process start → answer |");
    println!("|---|---:|");
    let own_role = "arn:aws:iam::123456789012:role/tgb-reconciler";
    let mut ignored = support::events::sample("cloudtrail-own-role-authorize.json", &[]);
    let mut env = world.env();
    if let Some(issuer) =
        ignored.pointer_mut("/detail/userIdentity/sessionContext/sessionIssuer/arn")
    {
        *issuer = serde_json::Value::from(own_role);
        env.push(("TGB_OWN_ROLE_ARN", own_role.into()));
    }
    let revoke = support::events::sample(
        "cloudtrail-revoke-security-group-ingress.json",
        &[(
            support::events::GROUP_ID,
            &world.layout.nodes[0].security_group,
        )],
    );
    for (what, event) in [
        ("an event of its own role (ignored, no call)", &ignored),
        (
            "a RevokeSecurityGroupIngress event, nothing to change",
            &revoke,
        ),
    ] {
        let (took, answer) = runtime_api::first_invocation(binary, &env, event).await;
        let answer = answer.unwrap_or_else(|e| panic!("{what}: the invocation failed: {e}"));
        assert!(
            answer.contains("exit_code"),
            "{what}: unexpected answer {answer}"
        );
        println!("| {what} | {} |", ms(took));
    }
    println!();
}

// ---- 4. Full sweep -------------------------------------------------------------------------------

async fn full_sweep(scale: Scale, binary: &str) {
    let started = Instant::now();
    let world = emulated::Emulated::start(scale).await;
    println!(
        "Emulated world created in {:.1} s.\n",
        started.elapsed().as_secs_f64()
    );
    // Both sweeps by the release binary, each in a process of its own: its wall time, CPU and
    // max RSS are the product's alone (the test API server runs in this process, moto in
    // another).
    world.reset_counts();
    let first = ProcessSweep::run(binary, &world).await;
    let report = first.applied_cleanly();
    let (registered, authorized) = (report.done().len(), report.rules_done.len());
    let first_counts = first.counts(&world);

    world.reset_counts();
    let steady = ProcessSweep::run(binary, &world).await;
    steady.assert_converged();
    let (steady_counts, roster) = without_roster(steady.counts(&world));

    println!(
        "| sweep, the release binary (`reconcile`) | wall | CPU | max RSS (target under 128 MiB) |"
    );
    println!("|---|---:|---:|---:|");
    for (name, sweep) in [
        (
            format!("first (registers {registered} targets, authorizes {authorized} rules)"),
            &first,
        ),
        ("steady (nothing to change)".to_string(), &steady),
    ] {
        println!(
            "| {name} | {} | {} | {:.1} MiB |",
            ms(sweep.wall),
            ms(sweep.cpu),
            sweep.rss_mib
        );
    }
    let floor = paced_write_floor(&first_counts);
    let writes = format!(
        "its {} rule writes at {}% of EC2's rule-write bucket: a burst of {}, then {}/s",
        floor.writes,
        (RATE_SHARE * 100.0).round(),
        floor.burst,
        floor.rate
    );
    if floor.seconds < 1.0 {
        println!(
            "\nThe first sweep's paced writes ({writes}) fit in the burst: no floor to compare.\n"
        );
    } else {
        println!(
            "\nThe first sweep's paced writes alone ({writes}) need {:.1} s; the first sweep took \
             {:.1} s, **{:.2}×** that floor (target 1.2×).\n",
            floor.seconds,
            first.wall.as_secs_f64(),
            first.wall.as_secs_f64() / floor.seconds,
        );
    }
    let minimum = minimum::steady_sweep(&world.layout);
    let ratio = minimum::print_table(
        &[
            ("first sweep", &first_counts),
            ("steady sweep", &steady_counts),
            ("least a sweep needs", &minimum),
        ],
        &steady_counts,
        &minimum,
    );
    keep_target("the steady sweep's calls / the least it needs", ratio, 1.0);
    println!(
        "Not in the steady column: the roster of pacers (the deployment's share divided among \
         its processes), {} — the process listing itself, counting the roster every 2 s while it \
         draws, and leaving.\n",
        roster
            .iter()
            .map(|(operation, n)| format!("{n} {operation}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    println!("## Watch mode at the full size\n");
    watching::process(&world, binary, 10).await;
}

/// A steady sweep's calls apart from the roster of pacers, and the roster's. A steady sweep
/// takes no lease and writes no record, so its DynamoDB GetItem and UpdateItem calls are all the
/// roster's.
fn without_roster(
    mut counts: BTreeMap<String, usize>,
) -> (BTreeMap<String, usize>, BTreeMap<String, usize>) {
    let roster = ["DynamoDB.GetItem", "DynamoDB.UpdateItem"]
        .into_iter()
        .filter_map(|op| counts.remove(op).map(|n| (op.to_string(), n)))
        .collect();
    (counts, roster)
}

/// The share of each bucket the benchmark's runs take: the product's default.
const RATE_SHARE: f64 = tgb_reconciler::adapters::pacing::DEFAULT_SHARE;
/// EC2's bucket for AuthorizeSecurityGroupIngress and RevokeSecurityGroupIngress, as the
/// product's pacing takes it.
const RULE_WRITES: tgb_reconciler::pure::pace::BucketSize =
    tgb_reconciler::pure::pace::EC2_RULE_WRITES;

/// The least time a sweep's paced writes take at [`RATE_SHARE`]: the rule writes beyond the
/// bucket's share of the burst, at its share of the refill. (Target registrations and our own
/// DynamoDB writes have no published bucket and are not paced.)
struct Floor {
    writes: usize,
    burst: f64,
    rate: f64,
    seconds: f64,
}

fn paced_write_floor(counts: &BTreeMap<String, usize>) -> Floor {
    let writes = [
        "EC2.AuthorizeSecurityGroupIngress",
        "EC2.RevokeSecurityGroupIngress",
    ]
    .iter()
    .map(|op| counts.get(*op).copied().unwrap_or(0))
    .sum::<usize>();
    let allowed = RULE_WRITES.share(RATE_SHARE);
    let (burst, rate) = (f64::from(allowed.burst), allowed.per_second);
    Floor {
        writes,
        burst,
        rate,
        seconds: (writes as f64 - burst).max(0.0) / rate,
    }
}

/// One `tgb-reconciler reconcile --output json` in a process of its own: what it cost and
/// what it printed.
struct ProcessSweep {
    wall: Duration,
    cpu: Duration,
    rss_mib: f64,
    plans: Vec<tgb_reconciler::pure::plan::Plan>,
    reports: Vec<Option<tgb_reconciler::pure::report::Report>>,
    /// The AWS calls the process made, by `Service.Operation`, as its document tells them.
    aws_calls: BTreeMap<String, usize>,
}

impl ProcessSweep {
    async fn run(binary: &str, world: &emulated::Emulated) -> ProcessSweep {
        let (program, env) = (binary.to_string(), world.env());
        tokio::task::spawn_blocking(move || sweep_process(&program, &env))
            .await
            .expect("the sweep process")
    }

    fn applied_cleanly(&self) -> &tgb_reconciler::pure::report::Report {
        let plan = self.plans.last().expect("a cluster in the document");
        let report = self
            .reports
            .last()
            .and_then(Option::as_ref)
            .unwrap_or_else(|| panic!("the first sweep applied nothing:\n{plan}"));
        assert!(report.is_clean(), "the first sweep failed:\n{report}");
        report
    }

    /// The benchmark's premise: the run found the world converged, nothing failed or held
    /// back.
    fn assert_converged(&self) {
        let plan = self.plans.last().expect("a cluster in the document");
        assert!(
            plan.is_converged(),
            "the benchmark world did not converge:\n{plan}"
        );
    }

    /// Its AWS calls with the Kubernetes requests the test API server saw since the last reset.
    fn counts(&self, world: &emulated::Emulated) -> BTreeMap<String, usize> {
        let mut counts = world.counts();
        for (operation, n) in &self.aws_calls {
            *counts.entry(operation.clone()).or_default() += n;
        }
        counts
    }
}

/// Endpoint changes the watch benchmark makes at 100 bindings.
const WATCH_CHANGES: usize = 200;

/// Runs `reconcile --output json` once in a process of its own: wall time, CPU time, max RSS
/// (measured by a launcher: [`measured`]), and its document read back.
fn sweep_process(binary: &str, env: &[(&'static str, String)]) -> ProcessSweep {
    // The document of a first sweep runs to megabytes: into a file, read once the process is
    // gone, so that a pipe never holds the process back.
    let stdout = tempfile::tempfile().expect("a file for the sweep's document");
    let usage = tempfile::NamedTempFile::new().expect("a file for the sweep's usage");
    let started = Instant::now();
    let status = measured::command(binary, usage.path())
        .args(["reconcile", "--output", "json"])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdout(stdout.try_clone().expect("the document file"))
        .stderr(std::process::Stdio::null())
        .status()
        .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
    let wall = started.elapsed();
    assert!(
        status.success(),
        "`tgb-reconciler reconcile` failed ({status})"
    );
    let usage = measured::read(usage.path());
    let mut text = String::new();
    let mut stdout = stdout;
    std::io::Seek::rewind(&mut stdout).expect("rewind the document");
    std::io::Read::read_to_string(&mut stdout, &mut text).expect("read the document");
    let document: serde_json::Value = serde_json::from_str(&text).expect("a JSON document");
    let clusters = document["clusters"].as_array().expect("clusters");
    let plans = clusters
        .iter()
        .map(|c| serde_json::from_value(c["plan"].clone()).expect("a plan"))
        .collect();
    let reports = clusters
        .iter()
        .map(|c| serde_json::from_value(c["report"].clone()).expect("a report or null"))
        .collect();
    let aws_calls =
        serde_json::from_value(document["aws_calls"].clone()).expect("the AWS calls by operation");
    ProcessSweep {
        wall,
        cpu: usage.cpu,
        rss_mib: usage.max_rss_mib,
        plans,
        reports,
        aws_calls,
    }
}
