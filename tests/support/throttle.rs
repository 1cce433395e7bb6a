//! A throttling proxy in front of moto: answers chosen requests with the service's own
//! throttling error — EC2's `RequestLimitExceeded`, ELBv2's `Throttling`, DynamoDB's
//! `ThrottlingException`, each in that service's wire shape — and forwards everything else, one
//! request per connection. It lets a test prove that throttled calls are retried rather than
//! failed. Which requests: the first N of one action ([`ThrottlingProxy::start`]), or one in
//! every N of each kind of call — each service's reads, and its writes — starting with the
//! first of each, so that every kind is throttled ([`ThrottlingProxy::every`]). DynamoDB also
//! throttles inside a BatchWriteItem it accepts, by answering some of its items back as
//! `UnprocessedItems`: the proxy can hold back chosen items so
//! ([`ThrottlingProxy::leaving_unprocessed`]).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_REQUEST: usize = 8 << 20;
const MAX_RESPONSE: usize = 64 << 20;

/// Which requests are throttled.
#[derive(Clone)]
enum Choice {
    /// The first `count` requests of one action.
    First { action: String, count: usize },
    /// Requests 1, n+1, 2n+1, … of each kind of call.
    Every(usize),
    /// In the first `times` BatchWriteItem requests carrying them, the items whose JSON
    /// contains `matching`: not written, answered back unprocessed.
    Unprocessed { matching: String, times: usize },
}

/// Requests seen by kind of call (`service reads`, `service writes`), and seen and throttled
/// by operation (`service.Operation`, from the request's signature scope and its action).
#[derive(Default)]
struct Counts {
    kinds: BTreeMap<String, usize>,
    seen: BTreeMap<String, usize>,
    throttled: BTreeMap<String, usize>,
    /// BatchWriteItem requests that had items held back, and how many items.
    unprocessed_requests: usize,
    unprocessed_items: usize,
}

pub struct ThrottlingProxy {
    pub url: String,
    counts: Arc<Mutex<Counts>>,
    task: tokio::task::JoinHandle<()>,
}

impl ThrottlingProxy {
    /// Throttles the first `count` requests whose body carries `Action=<action>`.
    pub async fn start(upstream: &str, action: &str, count: usize) -> ThrottlingProxy {
        let choice = Choice::First {
            action: action.to_string(),
            count,
        };
        Self::with(upstream, choice).await
    }

    /// Throttles one in every `n` requests of each kind of call (a service's reads, or its
    /// writes), starting with the first of each: every kind at least once, and about 1/n of
    /// all requests.
    pub async fn every(upstream: &str, n: usize) -> ThrottlingProxy {
        assert!(
            n >= 2,
            "throttling every request leaves nothing to retry into"
        );
        Self::with(upstream, Choice::Every(n)).await
    }

    /// Holds back, as `UnprocessedItems`, the items of a BatchWriteItem whose JSON contains
    /// `matching`, in the first `times` requests that carry any; forwards the rest of each.
    pub async fn leaving_unprocessed(
        upstream: &str,
        matching: &str,
        times: usize,
    ) -> ThrottlingProxy {
        let choice = Choice::Unprocessed {
            matching: matching.to_string(),
            times,
        };
        Self::with(upstream, choice).await
    }

    /// BatchWriteItem requests answered with unprocessed items, and how many items in all.
    pub fn unprocessed(&self) -> (usize, usize) {
        self.counts
            .lock()
            .map(|c| (c.unprocessed_requests, c.unprocessed_items))
            .unwrap_or_default()
    }

    async fn with(upstream: &str, choice: Choice) -> ThrottlingProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let counts = Arc::new(Mutex::new(Counts::default()));
        let shared = counts.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, choice, counts) = (upstream.clone(), choice.clone(), shared.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, &choice, &counts).await;
                });
            }
        });
        ThrottlingProxy { url, counts, task }
    }

    /// How many requests were answered with a throttling error.
    pub fn throttled(&self) -> usize {
        self.throttled_by_operation().values().sum()
    }

    /// How many requests came through (throttled or forwarded).
    pub fn requests(&self) -> usize {
        self.counts
            .lock()
            .map(|c| c.seen.values().sum())
            .unwrap_or(0)
    }

    /// Throttled requests by `service.Operation` (`ec2.DescribeInstances`,
    /// `elasticloadbalancing.RegisterTargets`, `dynamodb.PutItem`).
    pub fn throttled_by_operation(&self) -> BTreeMap<String, usize> {
        self.counts
            .lock()
            .map(|c| c.throttled.clone())
            .unwrap_or_default()
    }
}

impl Drop for ThrottlingProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(
    mut client: TcpStream,
    upstream: &str,
    choice: &Choice,
    counts: &Mutex<Counts>,
) -> std::io::Result<()> {
    let request = read_request(&mut client).await?;
    let (service, operation) = operation(&request);
    let key = format!("{service}.{operation}");
    let throttle = {
        let mut counts = counts
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        *counts.seen.entry(key.clone()).or_default() += 1;
        let kind = format!(
            "{service} {}",
            if is_read(&key) { "reads" } else { "writes" }
        );
        let of_kind = counts.kinds.entry(kind).or_default();
        *of_kind += 1;
        let chosen = match choice {
            Choice::First { action, count } => {
                *action == operation && counts.throttled.get(&key).copied().unwrap_or(0) < *count
            }
            Choice::Every(n) => (*of_kind - 1) % n == 0,
            Choice::Unprocessed { .. } => false,
        };
        let answer = chosen.then(|| throttling_response(&service)).flatten();
        if answer.is_some() {
            *counts.throttled.entry(key).or_default() += 1;
        }
        answer
    };
    if let Some(response) = throttle {
        return client.write_all(response.as_bytes()).await;
    }
    if let Choice::Unprocessed { matching, times } = choice
        && operation == "BatchWriteItem"
        && let Some(response) = hold_back(upstream, &request, matching, *times, counts).await?
    {
        client.write_all(response.as_bytes()).await?;
        return client.shutdown().await;
    }
    let response = forward(upstream, &request).await?;
    client.write_all(&response).await?;
    client.shutdown().await
}

/// Writes the items of a BatchWriteItem that do not contain `matching` (through the upstream)
/// and answers the others back unprocessed, while fewer than `times` requests were; `None`
/// when this request is forwarded as it is.
async fn hold_back(
    upstream: &str,
    request: &[u8],
    matching: &str,
    times: usize,
    counts: &Mutex<Counts>,
) -> std::io::Result<Option<String>> {
    let Some(end) = find(request, b"\r\n\r\n") else {
        return Ok(None);
    };
    let Ok(mut body) = serde_json::from_slice::<serde_json::Value>(&request[end + 4..]) else {
        return Ok(None);
    };
    let mut held = serde_json::Map::new();
    let mut sent = serde_json::Map::new();
    let tables = body["RequestItems"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    for (table, items) in tables {
        let (hold, send): (Vec<serde_json::Value>, Vec<serde_json::Value>) = items
            .as_array()
            .cloned()
            .unwrap_or_default()
            .into_iter()
            .partition(|item| item.to_string().contains(matching));
        if !hold.is_empty() {
            held.insert(table.clone(), hold.into());
        }
        if !send.is_empty() {
            sent.insert(table, send.into());
        }
    }
    let count: usize = held
        .values()
        .filter_map(|v| v.as_array())
        .map(Vec::len)
        .sum();
    {
        let mut counts = counts
            .lock()
            .map_err(|_| std::io::Error::other("poisoned"))?;
        if count == 0 || counts.unprocessed_requests >= times {
            return Ok(None);
        }
        counts.unprocessed_requests += 1;
        counts.unprocessed_items += count;
    }
    if !sent.is_empty() {
        body["RequestItems"] = sent.into();
        let response = forward(upstream, &with_body(request, &body.to_string())).await?;
        if !response.starts_with(b"HTTP/1.1 200") {
            return Ok(Some(String::from_utf8_lossy(&response).into_owned()));
        }
    }
    let answer = serde_json::json!({ "UnprocessedItems": held }).to_string();
    Ok(Some(format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/x-amz-json-1.0\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    )))
}

/// The request with another body (and its length); moto does not check signatures.
fn with_body(request: &[u8], body: &str) -> Vec<u8> {
    let end = find(request, b"\r\n\r\n").unwrap_or(request.len());
    let head = String::from_utf8_lossy(&request[..end]);
    let mut out: Vec<u8> = head
        .split("\r\n")
        .map(|line| {
            if line.to_ascii_lowercase().starts_with("content-length:") {
                format!("Content-Length: {}", body.len())
            } else {
                line.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
        .into_bytes();
    out.extend_from_slice(b"\r\n\r\n");
    out.extend_from_slice(body.as_bytes());
    out
}

/// Sends one request to the upstream and reads its whole answer (it closes after answering).
pub(crate) async fn forward(upstream: &str, request: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(&close_after(request)).await?;
    let mut response = Vec::new();
    server
        .take(MAX_RESPONSE as u64 + 1)
        .read_to_end(&mut response)
        .await?;
    if response.len() > MAX_RESPONSE {
        return Err(std::io::Error::other("response too large"));
    }
    Ok(response)
}

/// The service, from the signature's credential scope (`…/us-west-2/ec2/aws4_request`), and
/// the operation: the query protocol's `Action=`, or the JSON protocol's `X-Amz-Target`.
pub(crate) fn operation(request: &[u8]) -> (String, String) {
    let text = String::from_utf8_lossy(request);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let header = |name: &str| {
        head.split("\r\n").find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim()
                .eq_ignore_ascii_case(name)
                .then(|| value.trim().to_string())
        })
    };
    let service = header("authorization")
        .and_then(|a| {
            let scope = a
                .split("Credential=")
                .nth(1)?
                .split(',')
                .next()?
                .to_string();
            scope.split('/').nth(3).map(str::to_string)
        })
        .unwrap_or_else(|| "unsigned".into());
    let operation = body
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
        .map(str::to_string)
        .or_else(|| header("x-amz-target").map(|t| t.rsplit('.').next().unwrap_or(&t).to_string()))
        .unwrap_or_else(|| "unknown".into());
    (service, operation)
}

/// Whether an operation (`service.Operation`) only reads.
pub fn is_read(operation: &str) -> bool {
    let name = operation.rsplit('.').next().unwrap_or(operation);
    ["Describe", "Get", "Query", "Scan"]
        .iter()
        .any(|verb| name.starts_with(verb))
}

/// The service's own throttling answer; none for a service whose shape is not known here.
fn throttling_response(service: &str) -> Option<String> {
    let (status, content_type, body) = match service {
        "ec2" => (
            "503 Service Unavailable",
            "text/xml;charset=UTF-8",
            "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Response><Errors><Error>\
             <Code>RequestLimitExceeded</Code><Message>Request limit exceeded.</Message>\
             </Error></Errors><RequestID>throttled</RequestID></Response>",
        ),
        "elasticloadbalancing" => (
            "400 Bad Request",
            "text/xml",
            "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">\
             <Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>\
             <RequestId>throttled</RequestId></ErrorResponse>",
        ),
        "dynamodb" => (
            "400 Bad Request",
            "application/x-amz-json-1.0",
            "{\"__type\":\"com.amazonaws.dynamodb.v20120810#ThrottlingException\",\
             \"message\":\"Rate of requests exceeds the allowed throughput.\"}",
        ),
        _ => return None,
    };
    Some(format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    ))
}

/// Reads one HTTP/1.1 request: headers, then `Content-Length` bytes of body.
pub(crate) async fn read_request(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    loop {
        let n = client.read(&mut chunk).await?;
        if n == 0 {
            return Ok(buffer);
        }
        buffer.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buffer, b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if buffer.len() >= end + 4 + length {
                return Ok(buffer);
            }
        }
        if buffer.len() > MAX_REQUEST {
            return Err(std::io::Error::other("request too large"));
        }
    }
}

/// Asks the upstream to close after answering, so its response ends at EOF.
fn close_after(request: &[u8]) -> Vec<u8> {
    let Some(end) = find(request, b"\r\n\r\n") else {
        return request.to_vec();
    };
    let head = String::from_utf8_lossy(&request[..end]);
    let mut out: Vec<u8> = head
        .split("\r\n")
        .filter(|l| !l.to_ascii_lowercase().starts_with("connection:"))
        .collect::<Vec<_>>()
        .join("\r\n")
        .into_bytes();
    out.extend_from_slice(b"\r\nConnection: close\r\n\r\n");
    out.extend_from_slice(&request[end + 4..]);
    out
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}
