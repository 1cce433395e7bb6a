//! A throttling proxy in front of moto: answers the first N requests of one AWS action with
//! ELB's `Throttling` error and forwards everything else, one request per connection. It lets a
//! test prove that throttled calls are retried rather than failed.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const MAX_REQUEST: usize = 8 << 20;

pub struct ThrottlingProxy {
    pub url: String,
    throttled: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl ThrottlingProxy {
    /// Throttles the first `count` requests whose body carries `Action=<action>`.
    pub async fn start(upstream: &str, action: &str, count: usize) -> ThrottlingProxy {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the proxy");
        let url = format!("http://{}", listener.local_addr().expect("proxy address"));
        let upstream = upstream.trim_start_matches("http://").to_string();
        let marker = format!("Action={action}");
        let remaining = Arc::new(AtomicUsize::new(count));
        let throttled = Arc::new(AtomicUsize::new(0));
        let counter = throttled.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (upstream, marker, remaining, counter) = (
                    upstream.clone(),
                    marker.clone(),
                    remaining.clone(),
                    counter.clone(),
                );
                tokio::spawn(async move {
                    let _ = serve(client, &upstream, &marker, &remaining, &counter).await;
                });
            }
        });
        ThrottlingProxy {
            url,
            throttled,
            task,
        }
    }

    /// How many requests were answered with `Throttling`.
    pub fn throttled(&self) -> usize {
        self.throttled.load(Ordering::SeqCst)
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
    marker: &str,
    remaining: &AtomicUsize,
    throttled: &AtomicUsize,
) -> std::io::Result<()> {
    let request = read_request(&mut client).await?;
    let take = |n: usize| n.checked_sub(1);
    if contains(&request, marker.as_bytes())
        && remaining
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, take)
            .is_ok()
    {
        throttled.fetch_add(1, Ordering::SeqCst);
        let body = "<ErrorResponse xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\">\
            <Error><Type>Sender</Type><Code>Throttling</Code><Message>Rate exceeded</Message></Error>\
            <RequestId>throttled</RequestId></ErrorResponse>";
        let response = format!(
            "HTTP/1.1 400 Bad Request\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        return client.write_all(response.as_bytes()).await;
    }
    let mut server = TcpStream::connect(upstream).await?;
    server.write_all(&close_after(&request)).await?;
    let mut response = Vec::new();
    server.read_to_end(&mut response).await?;
    client.write_all(&response).await?;
    client.shutdown().await
}

/// Reads one HTTP/1.1 request: headers, then `Content-Length` bytes of body.
async fn read_request(client: &mut TcpStream) -> std::io::Result<Vec<u8>> {
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

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    find(haystack, needle).is_some()
}
