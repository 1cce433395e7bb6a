//! A target-health proxy in front of moto. Real AWS reports a newly registered target
//! `initial` (`Elb.InitialHealthChecking`) until its health checks pass; moto reports every
//! registered target `healthy` at once. This proxy forwards everything to moto, one request per
//! connection, and rewrites moto's `DescribeTargetHealth` answers so that a target registered
//! through it reads `initial` for a while, and a chosen target reads `unhealthy`. It can also
//! refuse `DescribeTargetHealth` with an error the SDK does not retry. Together they let a test
//! hold the product to AWS's behaviour rather than moto's.

use super::throttle::{find, forward, operation, read_request};
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const INITIAL: &str = "<TargetHealth><State>initial</State><Reason>Elb.InitialHealthChecking</Reason>\
                       <Description>Initial health checks in progress.</Description></TargetHealth>";
const UNHEALTHY: &str = "<TargetHealth><State>unhealthy</State><Reason>Target.FailedHealthChecks</Reason>\
                         <Description>Health checks failed</Description></TargetHealth>";

/// A target as registered: its group, its id, and its port (none: the group's port, so any).
type Registered = (String, String, Option<u16>);

#[derive(Default)]
struct State {
    /// How long targets registered from now on read `initial`.
    initial_for: Duration,
    /// Until when each target registered through the proxy reads `initial`.
    initial_until: HashMap<Registered, Instant>,
    /// Targets (id, port) that read `unhealthy` in every group.
    unhealthy: HashSet<(String, u16)>,
    fail_target_health: bool,
    health_reads: usize,
}

impl State {
    /// What a target moto calls healthy reads instead, if anything.
    fn rewrite(&self, group: &str, id: &str, port: u16, now: Instant) -> Option<&'static str> {
        if self.unhealthy.contains(&(id.to_string(), port)) {
            return Some(UNHEALTHY);
        }
        let key = |port| (group.to_string(), id.to_string(), port);
        [key(Some(port)), key(None)]
            .iter()
            .filter_map(|k| self.initial_until.get(k))
            .any(|until| now < *until)
            .then_some(INITIAL)
    }
}

pub struct HealthProxy {
    pub url: String,
    state: Arc<Mutex<State>>,
    task: tokio::task::JoinHandle<()>,
}

impl HealthProxy {
    /// Forwards everything to `upstream` (moto's url); a target registered through this proxy
    /// reads `initial` for `initial_for` after its RegisterTargets call, then whatever moto says.
    pub async fn start(upstream: &str, initial_for: Duration) -> HealthProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the health proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let state = Arc::new(Mutex::new(State {
            initial_for,
            ..State::default()
        }));
        let shared = state.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, state) = (upstream.clone(), shared.clone());
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, &state).await;
                });
            }
        });
        HealthProxy { url, state, task }
    }

    /// Change the initial period for targets registered from now on.
    pub fn set_initial_for(&self, d: Duration) {
        self.with(|s| s.initial_for = d);
    }

    /// Make a target (id, port) read `unhealthy` (`Target.FailedHealthChecks`) in every target
    /// group until cleared with `false`.
    pub fn set_unhealthy(&self, id: &str, port: u16, unhealthy: bool) {
        self.with(|s| {
            let target = (id.to_string(), port);
            if unhealthy {
                s.unhealthy.insert(target);
            } else {
                s.unhealthy.remove(&target);
            }
        });
    }

    /// While true, DescribeTargetHealth is answered with `AccessDenied`, which the SDK does not
    /// retry.
    pub fn fail_target_health(&self, fail: bool) {
        self.with(|s| s.fail_target_health = fail);
    }

    /// How many DescribeTargetHealth requests came through (answered or failed).
    pub fn health_reads(&self) -> usize {
        self.with(|s| s.health_reads)
    }

    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        f(&mut self.state.lock().expect("health proxy state"))
    }
}

impl Drop for HealthProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve(mut client: TcpStream, upstream: &str, state: &Mutex<State>) -> std::io::Result<()> {
    let request = read_request(&mut client).await?;
    let (service, action) = operation(&request);
    let elb = service == "elasticloadbalancing";
    let lock = || state.lock().map_err(|_| std::io::Error::other("poisoned"));
    let refuse = elb && action == "DescribeTargetHealth" && {
        let mut state = lock()?;
        state.health_reads += 1;
        state.fail_target_health
    };
    if refuse {
        client.write_all(access_denied().as_bytes()).await?;
        return client.shutdown().await;
    }
    let mut response = forward(upstream, &request).await?;
    let fields = form(&request);
    let group = fields
        .iter()
        .find(|(k, _)| k == "TargetGroupArn")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    if elb && status(&response) == Some(200) {
        match action.as_str() {
            "RegisterTargets" => {
                let mut state = lock()?;
                let until = Instant::now() + state.initial_for;
                // As in AWS, registering a registered target changes nothing.
                for (id, port) in targets(&fields) {
                    state
                        .initial_until
                        .entry((group.clone(), id, port))
                        .or_insert(until);
                }
            }
            "DeregisterTargets" => {
                let mut state = lock()?;
                for (id, port) in targets(&fields) {
                    // Without a port, the id goes at every port.
                    state.initial_until.retain(|(g, i, p), _| {
                        !(*g == group && *i == id && (port.is_none() || *p == port))
                    });
                }
            }
            "DescribeTargetHealth" => {
                let rewritten = {
                    let state = lock()?;
                    rewrite_health(&response, &group, &state)
                };
                if let Some(rewritten) = rewritten {
                    response = rewritten;
                }
            }
            _ => {}
        }
    }
    client.write_all(&response).await?;
    client.shutdown().await
}

/// ELBv2's query-protocol error for a caller lacking the permission.
fn access_denied() -> String {
    let body = "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">\
                <Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: \
                arn:aws:iam::123456789012:user/testing is not authorized to perform: \
                elasticloadbalancing:DescribeTargetHealth</Message></Error>\
                <RequestId>denied</RequestId></ErrorResponse>";
    format!(
        "HTTP/1.1 400 Bad Request\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

/// The request's form fields (the query protocol's body), decoded.
fn form(request: &[u8]) -> Vec<(String, String)> {
    let Some(end) = find(request, b"\r\n\r\n") else {
        return Vec::new();
    };
    String::from_utf8_lossy(&request[end + 4..])
        .split('&')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((decode(key), decode(value)))
        })
        .collect()
}

/// Form decoding: `+` is a space, `%XX` a byte.
fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (b'+', _) => {
                out.push(b' ');
                i += 1;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `Targets.member.N.Id` and `.Port` of a (de)registration; no port means the group's.
fn targets(fields: &[(String, String)]) -> Vec<(String, Option<u16>)> {
    let mut by_index: HashMap<&str, (Option<String>, Option<u16>)> = HashMap::new();
    for (key, value) in fields {
        let Some(rest) = key.strip_prefix("Targets.member.") else {
            continue;
        };
        match rest.split_once('.') {
            Some((n, "Id")) => by_index.entry(n).or_default().0 = Some(value.clone()),
            Some((n, "Port")) => by_index.entry(n).or_default().1 = value.parse().ok(),
            _ => {}
        }
    }
    by_index
        .into_values()
        .filter_map(|(id, port)| Some((id?, port)))
        .collect()
}

/// The status code of an HTTP response.
fn status(response: &[u8]) -> Option<u16> {
    let line = response.split(|b| *b == b'\r').next()?;
    std::str::from_utf8(line)
        .ok()?
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

/// moto's DescribeTargetHealth answer with healthy targets that should read otherwise
/// rewritten, its head rebuilt with the new length; none when nothing changes.
fn rewrite_health(response: &[u8], group: &str, state: &State) -> Option<Vec<u8>> {
    let end = find(response, b"\r\n\r\n")?;
    let head = std::str::from_utf8(&response[..end]).ok()?;
    let raw = &response[end + 4..];
    let chunked = head.lines().any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let body = if chunked { dechunk(raw)? } else { raw.to_vec() };
    let body = String::from_utf8(body).ok()?;
    let now = Instant::now();
    let mut out = String::with_capacity(body.len());
    let mut rest = body.as_str();
    let mut changed = false;
    // Each `<member>` of TargetHealthDescriptions; they hold no nested members.
    while let Some(start) = rest.find("<member>") {
        let Some(len) = rest[start..].find("</member>") else {
            break;
        };
        let member = &rest[start..start + len];
        out.push_str(&rest[..start]);
        match member_rewrite(member, group, state, now) {
            Some(new) => {
                out.push_str(&new);
                changed = true;
            }
            None => out.push_str(member),
        }
        rest = &rest[start + len..];
    }
    out.push_str(rest);
    if !changed {
        return None;
    }
    let mut rebuilt: Vec<String> = head
        .split("\r\n")
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            !l.starts_with("content-length:") && !l.starts_with("transfer-encoding:")
        })
        .map(str::to_string)
        .collect();
    rebuilt.push(format!("Content-Length: {}", out.len()));
    Some(format!("{}\r\n\r\n{out}", rebuilt.join("\r\n")).into_bytes())
}

/// One member with its TargetHealth replaced, if moto calls it healthy and it should read
/// otherwise.
fn member_rewrite(member: &str, group: &str, state: &State, now: Instant) -> Option<String> {
    let target = inner(member, "Target")?;
    let id = inner(target, "Id")?;
    let port = inner(target, "Port")?.parse().ok()?;
    let (start, end) = element(member, "TargetHealth")?;
    if inner(&member[start..end], "State")? != "healthy" {
        return None;
    }
    let health = state.rewrite(group, id, port, now)?;
    Some(format!("{}{health}{}", &member[..start], &member[end..]))
}

/// Where `<name>…</name>` is in `text`, from its opening tag to past its closing one.
fn element(text: &str, name: &str) -> Option<(usize, usize)> {
    let open = format!("<{name}>");
    let close = format!("</{name}>");
    let start = text.find(&open)?;
    let end = start + text[start..].find(&close)? + close.len();
    Some((start, end))
}

/// The text between `<name>` and `</name>`.
fn inner<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    let (start, end) = element(text, name)?;
    Some(&text[start + name.len() + 2..end - name.len() - 3])
}

/// A chunked body's data; none if it is malformed.
fn dechunk(mut raw: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = find(raw, b"\r\n")?;
        let size = std::str::from_utf8(&raw[..line_end]).ok()?;
        let size = usize::from_str_radix(size.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some(out);
        }
        let data = raw.get(line_end + 2..line_end + 2 + size)?;
        out.extend_from_slice(data);
        raw = raw.get(line_end + 2 + size + 2..)?;
    }
}
