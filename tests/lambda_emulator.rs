//! The handler under a real Lambda Runtime API emulator, as the README's local testing runs it:
//! `cargo lambda watch --only-lambda-apis` serves the Runtime API, the release-shaped binary
//! polls it as function `_`, and `cargo lambda invoke` sends the `events/` samples — against moto
//! and the Kubernetes test API server. The function's log lines are checked for Lambda's JSON
//! shape: a timestamp, the level, `message` at the top level and the `requestId` on every line,
//! with a CloudTrail event's actor and `eventID` on each change it causes.

mod support;

use serde_json::Value;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::events::{SAMPLE_TARGET_GROUP, localized};
use support::harness::{CLUSTER, Harness, TABLE};

const OWN_ROLE: &str = "arn:aws:iam::123456789012:role/tgb-reconciler";
/// How long any one process of this test may take before it fails.
const LIMIT: Duration = Duration::from_secs(60);

/// `TGB_CARGO_LAMBDA`, or the project's virtualenv (`scripts/setup` installs cargo-lambda).
fn cargo_lambda() -> PathBuf {
    let path = std::env::var_os("TGB_CARGO_LAMBDA")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/.venv/bin/cargo-lambda"
            ))
        });
    assert!(
        path.exists(),
        "cargo-lambda not found at {}: run `scripts/setup` (it installs the pinned cargo-lambda into .venv), \
         or set TGB_CARGO_LAMBDA to a cargo-lambda binary",
        path.display()
    );
    path
}

/// A child process killed when the test ends, however it ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

/// `cargo lambda watch --only-lambda-apis` on 127.0.0.1: the Runtime API without a build. It
/// needs a Cargo.toml where it runs, even though it builds nothing.
fn start_emulator(port: u16, log: &Path) -> Running {
    let log = std::fs::File::create(log).expect("emulator log");
    let child = Command::new(cargo_lambda())
        .args(["lambda", "watch", "--only-lambda-apis"])
        .args(["--invoke-address", "127.0.0.1", "--invoke-port"])
        .arg(port.to_string())
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start cargo lambda watch");
    let running = Running(child);
    let started = Instant::now();
    // A plain connect: any HTTP request would be queued as an invocation.
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            started.elapsed() < LIMIT,
            "cargo lambda watch did not listen on 127.0.0.1:{port}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    running
}

/// The binary as Lambda runs it: the Runtime API in the environment, configuration in
/// `TGB_*`, logs in the JSON format `LoggingConfig` asks for.
fn start_function(h: &Harness, port: u16, stderr: &Path) -> Running {
    let stderr = std::fs::File::create(stderr).expect("function log");
    let child = Command::new(env!("CARGO_BIN_EXE_tgb-reconciler"))
        .envs(h.moto.env())
        .env_remove("RUST_LOG")
        // In the `--only-lambda-apis` mode the emulator routes by path: `/.rt` is function `_`.
        .env(
            "AWS_LAMBDA_RUNTIME_API",
            format!("http://127.0.0.1:{port}/.rt"),
        )
        .env("AWS_LAMBDA_FUNCTION_NAME", "_")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "1")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "256")
        .env("AWS_LAMBDA_LOG_FORMAT", "JSON")
        .env("AWS_LAMBDA_LOG_LEVEL", "INFO")
        .env("TGB_CLUSTERS", CLUSTER)
        .env("TGB_TABLE", TABLE)
        .env("TGB_OWN_ROLE_ARN", OWN_ROLE)
        .env("KUBECONFIG", &h.kubeconfig)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start tgb-reconciler");
    Running(child)
}

/// What `cargo lambda invoke` printed, and whether it reported success.
struct Invoked {
    ok: bool,
    stdout: String,
    stderr: String,
}

/// `cargo lambda invoke` to function `_` on 127.0.0.1 (its default address is `::1`, where the
/// emulator here does not listen), bounded in time.
fn invoke(port: u16, data: &[&str], scratch: &Path) -> Invoked {
    let (out, err) = (scratch.join("invoke.out"), scratch.join("invoke.err"));
    let mut child = Command::new(cargo_lambda())
        .args(["lambda", "invoke", "--invoke-address", "127.0.0.1"])
        .args([
            "--invoke-port",
            &port.to_string(),
            "--output-format",
            "json",
        ])
        .args(data)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).expect("invoke stdout"))
        .stderr(std::fs::File::create(&err).expect("invoke stderr"))
        .spawn()
        .expect("run cargo lambda invoke");
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for cargo lambda invoke") {
            break status;
        }
        if started.elapsed() > LIMIT {
            let _ = child.kill();
            panic!("cargo lambda invoke {data:?} did not answer within {LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let read = |p: &Path| std::fs::read_to_string(p).expect("invoke output");
    Invoked {
        ok: status.success(),
        stdout: read(&out),
        stderr: read(&err),
    }
}

/// One event sample, with the ids of this test's world, as a file to invoke with.
fn sample(name: &str, ids: &[(&str, &str)], scratch: &Path) -> String {
    let path = scratch.join(name);
    std::fs::write(&path, localized(name, ids)).expect("write the event");
    path.display().to_string()
}

fn answer(invoked: &Invoked, what: &str) -> Value {
    assert!(invoked.ok, "{what}: {}{}", invoked.stdout, invoked.stderr);
    serde_json::from_str(&invoked.stdout)
        .unwrap_or_else(|e| panic!("{what} answered no JSON ({e}): {}", invoked.stdout))
}

/// Multi-threaded: the test API server must answer while this thread waits for processes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_handler_answers_the_runtime_api_emulator_and_logs_in_lambdas_json_shape() {
    let h = Harness::start().await;
    let tg = h.ip_walkthrough().await;
    h.place_pods().await;
    let scratch = tempfile::tempdir().expect("scratch dir");
    let dir = scratch.path();
    let port = free_port();
    let _emulator = start_emulator(port, &dir.join("emulator.log"));
    let function_log = dir.join("function.log");
    let mut function = start_function(&h, port, &function_log);

    // Ignored events: answered at once, as successes, with the reason.
    for name in [
        "cloudtrail-own-role-authorize.json",
        "cloudtrail-error-code-revoke.json",
    ] {
        let file = sample(name, &[], dir);
        let answer = answer(&invoke(port, &["--data-file", &file], dir), name);
        assert_eq!(answer["trigger"]["kind"], "ignored", "{name}: {answer}");
        assert_eq!(answer["exit_code"], 0, "{name}: {answer}");
        assert_eq!(answer["clusters"], Value::Array(Vec::new()), "{name}");
    }

    // The per-cluster sweep registers the walkthrough's pod.
    let sweep = sample("scheduler-sweep-one-cluster.json", &[], dir);
    let swept = answer(&invoke(port, &["--data-file", &sweep], dir), "sweep");
    assert_eq!(swept["trigger"]["kind"], "sweep", "{swept}");
    assert_eq!(swept["exit_code"], 0, "{swept}");
    let registered = h.world.targets(&tg).await;
    assert_eq!(registered.len(), 1, "the sweep registered the pod: {swept}");

    // Someone deregisters it by hand; their CloudTrail event puts it back.
    let pod = registered.iter().next().expect("a target").clone();
    let (ip, target_port) = pod.split_once(':').expect("ip:port");
    h.world
        .deregister(&tg, ip, target_port.parse().expect("port"))
        .await;
    let drift = sample(
        "cloudtrail-deregister-targets.json",
        &[(SAMPLE_TARGET_GROUP, tg.as_str())],
        dir,
    );
    let healed = answer(
        &invoke(port, &["--data-file", &drift], dir),
        "deregister event",
    );
    assert_eq!(healed["trigger"]["kind"], "target-group", "{healed}");
    assert!(
        h.world.targets(&tg).await.contains(&pod),
        "the event's run registered {pod} again: {healed}"
    );

    // A payload that is not JSON never reaches the handler: the runtime answers an error.
    let garbage = invoke(port, &["--data-ascii", "this is not json"], dir);
    assert!(!garbage.ok, "{}{}", garbage.stdout, garbage.stderr);
    assert!(
        format!("{}{}", garbage.stdout, garbage.stderr).contains("failed to deserialize"),
        "{}{}",
        garbage.stdout,
        garbage.stderr
    );

    let _ = function.0.kill();
    let _ = function.0.wait();
    let log = std::fs::read_to_string(&function_log).expect("function log");
    let lines: Vec<Value> = log
        .lines()
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("a log line that is not JSON ({e}): {line}"))
        })
        .collect();
    let field = |line: &Value, key: &str| line[key].as_str().map(str::to_string);
    for line in &lines {
        for key in ["timestamp", "level", "message", "requestId"] {
            assert!(
                field(line, key).is_some_and(|v| !v.is_empty()),
                "no {key} in {line}"
            );
        }
        assert!(line.get("fields").is_none(), "message nested: {line}");
    }
    let invocations: std::collections::BTreeSet<String> = lines
        .iter()
        .filter(|l| field(l, "message").as_deref() == Some("invocation done"))
        .filter_map(|l| field(l, "requestId"))
        .collect();
    assert_eq!(
        invocations.len(),
        4,
        "one summary per answered invocation:\n{log}"
    );

    // The sweep's and the event's runs each log their plan once.
    let plans = |request: &str| {
        lines
            .iter()
            .filter(|l| field(l, "requestId").as_deref() == Some(request))
            .filter(|l| field(l, "message").is_some_and(|m| m.starts_with("Plan for")))
            .count()
    };
    let changed: Vec<&Value> = lines
        .iter()
        .filter(|l| field(l, "message").as_deref() == Some("applied"))
        .collect();
    let actions: std::collections::BTreeSet<String> =
        changed.iter().filter_map(|l| field(l, "action")).collect();
    assert_eq!(
        actions,
        ["AuthorizeSecurityGroupIngress", "RegisterTargets"]
            .map(String::from)
            .into(),
        "a line per change, rules and targets:\n{log}"
    );
    for request in changed.iter().filter_map(|l| field(l, "requestId")) {
        assert_eq!(plans(&request), 1, "plan lines of {request}:\n{log}");
    }

    // The event's change names who drifted it, and the CloudTrail record.
    let event: Value =
        serde_json::from_str(&std::fs::read_to_string(&drift).expect("event")).expect("event JSON");
    let actor = event["detail"]["userIdentity"]["arn"]
        .as_str()
        .expect("actor");
    let event_id = event["detail"]["eventID"].as_str().expect("eventID");
    let audited: Vec<&&Value> = changed
        .iter()
        .filter(|l| field(l, "eventID").as_deref() == Some(event_id))
        .collect();
    assert_eq!(
        audited.len(),
        1,
        "the re-registration carries the event:\n{log}"
    );
    assert_eq!(field(audited[0], "actor").as_deref(), Some(actor));
    assert_eq!(
        field(audited[0], "action").as_deref(),
        Some("RegisterTargets")
    );
    let sweep_changes = changed
        .iter()
        .filter(|l| field(l, "requestId") != field(audited[0], "requestId"));
    for line in sweep_changes {
        assert!(line.get("actor").is_none(), "a sweep has no actor: {line}");
    }
}
