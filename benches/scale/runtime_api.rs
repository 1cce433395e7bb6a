//! A one-event Lambda Runtime API on 127.0.0.1: hands the binary one invocation, and records
//! when its response (or error) arrives. It measures the start-up of the real Lambda path.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::mpsc;

const REQUEST_ID: &str = "bench-0001";
const LIMIT: Duration = Duration::from_secs(120);

#[derive(Clone)]
struct Runtime {
    event: Arc<Mutex<Option<String>>>,
    done: mpsc::Sender<(Instant, Result<String, String>)>,
}

/// Starts `binary` as Lambda would, gives it `event`, and returns the time from spawning the
/// process to its answer, with the answer. The process is killed afterwards.
pub async fn first_invocation(
    binary: &str,
    env: &[(&'static str, String)],
    event: &serde_json::Value,
) -> (Duration, Result<String, String>) {
    let (done, mut answers) = mpsc::channel(1);
    let runtime = Runtime {
        event: Arc::new(Mutex::new(Some(event.to_string()))),
        done,
    };
    let app = Router::new()
        .route("/2018-06-01/runtime/invocation/next", get(next))
        .route(
            "/2018-06-01/runtime/invocation/{id}/response",
            post(response),
        )
        .route("/2018-06-01/runtime/invocation/{id}/error", post(error))
        .route("/2018-06-01/runtime/init/error", post(init_error))
        .with_state(runtime);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the runtime API");
    let address = listener.local_addr().expect("runtime API address");
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let started = Instant::now();
    let mut child = Command::new(binary)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("AWS_LAMBDA_RUNTIME_API", address.to_string())
        .env("AWS_LAMBDA_FUNCTION_NAME", "tgb-reconciler")
        .env("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "512")
        .env("AWS_LAMBDA_FUNCTION_VERSION", "$LATEST")
        .env("AWS_LAMBDA_LOG_STREAM_NAME", "bench")
        .env("AWS_LAMBDA_LOG_GROUP_NAME", "bench")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {binary}: {e}"));
    let answer = tokio::time::timeout(LIMIT, answers.recv()).await;
    let _ = child.kill();
    let _ = child.wait();
    server.abort();
    match answer {
        Ok(Some((at, answer))) => (at.duration_since(started), answer),
        _ => panic!("{binary} gave no answer to its first invocation within {LIMIT:?}"),
    }
}

async fn next(State(runtime): State<Runtime>) -> axum::response::Response {
    let event = runtime.event.lock().ok().and_then(|mut e| e.take());
    let Some(event) = event else {
        // One invocation only: later polls wait until the process is killed.
        std::future::pending::<()>().await;
        unreachable!("pending never completes");
    };
    let deadline = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default()
        + Duration::from_secs(300);
    axum::response::Response::builder()
        .header("Lambda-Runtime-Aws-Request-Id", REQUEST_ID)
        .header(
            "Lambda-Runtime-Deadline-Ms",
            deadline.as_millis().to_string(),
        )
        .header(
            "Lambda-Runtime-Invoked-Function-Arn",
            "arn:aws:lambda:us-west-2:123456789012:function:tgb-reconciler",
        )
        .header(
            "Lambda-Runtime-Trace-Id",
            "Root=1-00000000-000000000000000000000000",
        )
        .header("Content-Type", "application/json")
        .body(axum::body::Body::from(event))
        .unwrap_or_default()
}

async fn response(State(runtime): State<Runtime>, Path(_id): Path<String>, body: Bytes) {
    answered(&runtime, Ok(text(&body))).await;
}

async fn error(State(runtime): State<Runtime>, Path(_id): Path<String>, body: Bytes) {
    answered(&runtime, Err(text(&body))).await;
}

async fn init_error(State(runtime): State<Runtime>, body: Bytes) {
    answered(&runtime, Err(text(&body))).await;
}

async fn answered(runtime: &Runtime, answer: Result<String, String>) {
    let _ = runtime.done.send((Instant::now(), answer)).await;
}

fn text(body: &Bytes) -> String {
    String::from_utf8_lossy(body).into_owned()
}
