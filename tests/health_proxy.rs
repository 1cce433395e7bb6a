//! The target-health proxy of the test support: through it moto reports targets as AWS does —
//! `initial` after registration, `unhealthy` when told, and a refused DescribeTargetHealth — so
//! the tests of pod readiness gates can rely on it.

mod support;

use aws_sdk_elasticloadbalancingv2::Client;
use aws_sdk_elasticloadbalancingv2::types::{TargetDescription, TargetTypeEnum};
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};
use support::health::HealthProxy;
use support::moto::{Moto, sdk_config_at};
use support::world::World;
use tokio::io::AsyncWriteExt;

const A: &str = "192.168.32.10";
const B: &str = "192.168.32.11";
/// Long enough that no test outlives it.
const LONG: Duration = Duration::from_secs(600);
/// How long a test waits for an initial period of a second to pass.
const WAIT: Duration = Duration::from_secs(30);

/// State, reason and description of a target's health, empty where absent.
type Health = (String, String, String);

fn healthy() -> Health {
    ("healthy".into(), String::new(), String::new())
}

fn initial() -> Health {
    (
        "initial".into(),
        "Elb.InitialHealthChecking".into(),
        "Initial health checks in progress.".into(),
    )
}

fn unhealthy() -> Health {
    (
        "unhealthy".into(),
        "Target.FailedHealthChecks".into(),
        "Health checks failed".into(),
    )
}

/// moto with the walkthrough's world and an ip target group on port 80, the proxy in front, and
/// an ELBv2 client through the proxy (`world.elb` talks to moto directly).
struct Setup {
    proxy: HealthProxy,
    via: Client,
    world: World,
    tg: String,
    _moto: Moto,
}

async fn setup(initial_for: Duration) -> Setup {
    let moto = Moto::start();
    let world = World::create(&moto.sdk_config().await).await;
    let tg = world
        .target_group("tg-a", TargetTypeEnum::Ip, 80, &[])
        .await;
    let proxy = HealthProxy::start(&moto.url, initial_for).await;
    let via = Client::new(&sdk_config_at(&proxy.url).await);
    Setup {
        proxy,
        via,
        world,
        tg,
        _moto: moto,
    }
}

fn target(id: &str, port: Option<i32>) -> TargetDescription {
    TargetDescription::builder().id(id).set_port(port).build()
}

async fn register(elb: &Client, tg: &str, id: &str, port: Option<i32>) {
    elb.register_targets()
        .target_group_arn(tg)
        .targets(target(id, port))
        .send()
        .await
        .expect("register targets");
}

async fn deregister(elb: &Client, tg: &str, id: &str, port: Option<i32>) {
    elb.deregister_targets()
        .target_group_arn(tg)
        .targets(target(id, port))
        .send()
        .await
        .expect("deregister targets");
}

/// Each target's health by `id:port`.
async fn health(elb: &Client, tg: &str) -> BTreeMap<String, Health> {
    let answer = elb
        .describe_target_health()
        .target_group_arn(tg)
        .send()
        .await
        .expect("describe target health");
    answer
        .target_health_descriptions()
        .iter()
        .map(|d| {
            let t = d.target().expect("target");
            let h = d.target_health().expect("target health");
            (
                format!(
                    "{}:{}",
                    t.id().unwrap_or_default(),
                    t.port().unwrap_or_default()
                ),
                (
                    h.state()
                        .map(|s| s.as_str().to_string())
                        .unwrap_or_default(),
                    h.reason()
                        .map(|r| r.as_str().to_string())
                        .unwrap_or_default(),
                    h.description().unwrap_or_default().to_string(),
                ),
            )
        })
        .collect()
}

/// Reads `key` until it is healthy; when that was, and every other health it read before.
async fn until_healthy(elb: &Client, tg: &str, key: &str) -> (Instant, BTreeSet<Health>) {
    let started = Instant::now();
    let mut seen = BTreeSet::new();
    loop {
        let now = health(elb, tg).await.remove(key).expect("target listed");
        if now == healthy() {
            return (Instant::now(), seen);
        }
        assert!(started.elapsed() < WAIT, "{key} still reads {now:?}");
        seen.insert(now);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_target_registered_through_the_proxy_reads_initial_until_its_period_passes_then_healthy()
{
    let s = setup(Duration::from_secs(1)).await;
    let before = Instant::now();
    register(&s.via, &s.tg, A, Some(8080)).await;
    let key = format!("{A}:8080");
    assert_eq!(health(&s.via, &s.tg).await[&key], initial());
    assert_eq!(
        health(&s.world.elb, &s.tg).await[&key],
        healthy(),
        "moto itself says healthy"
    );

    let (healthy_at, seen) = until_healthy(&s.via, &s.tg, &key).await;
    assert!(
        healthy_at - before >= Duration::from_secs(1),
        "healthy before its initial period passed"
    );
    assert_eq!(seen, BTreeSet::from([initial()]));
    assert!(s.proxy.health_reads() >= 2, "{}", s.proxy.health_reads());
}

#[tokio::test]
async fn a_target_registered_directly_at_moto_reads_healthy_through_the_proxy() {
    let s = setup(LONG).await;
    s.world.register(&s.tg, A, 80).await;
    register(&s.via, &s.tg, B, Some(80)).await;
    assert_eq!(
        health(&s.via, &s.tg).await,
        BTreeMap::from([
            (format!("{A}:80"), healthy()),
            (format!("{B}:80"), initial())
        ])
    );
}

#[tokio::test]
async fn the_initial_period_belongs_to_the_target_group_and_port_the_target_was_registered_at() {
    let s = setup(LONG).await;
    let other = s
        .world
        .target_group("tg-b", TargetTypeEnum::Ip, 80, &[])
        .await;
    register(&s.via, &s.tg, A, Some(80)).await;
    s.world.register(&other, A, 80).await;
    assert_eq!(
        health(&s.via, &s.tg).await,
        BTreeMap::from([(format!("{A}:80"), initial())])
    );
    assert_eq!(
        health(&s.via, &other).await,
        BTreeMap::from([(format!("{A}:80"), healthy())])
    );

    // moto keeps one port per id in a group: this moves the target to port 81.
    s.world.register(&s.tg, A, 81).await;
    assert_eq!(
        health(&s.via, &s.tg).await,
        BTreeMap::from([(format!("{A}:81"), healthy())])
    );
}

#[tokio::test]
async fn a_target_registered_without_a_port_reads_initial_at_the_target_groups_port_until_deregistered()
 {
    let s = setup(LONG).await;
    register(&s.via, &s.tg, A, None).await;
    assert_eq!(
        health(&s.via, &s.tg).await,
        BTreeMap::from([(format!("{A}:80"), initial())])
    );

    // Deregistered through the proxy, it is forgotten: registered again at moto, it is healthy.
    deregister(&s.via, &s.tg, A, None).await;
    s.world.register(&s.tg, A, 80).await;
    assert_eq!(
        health(&s.via, &s.tg).await,
        BTreeMap::from([(format!("{A}:80"), healthy())])
    );
}

#[tokio::test]
async fn a_target_deregistered_and_registered_again_starts_a_fresh_initial_period() {
    let s = setup(Duration::from_secs(1)).await;
    let key = format!("{A}:80");
    register(&s.via, &s.tg, A, Some(80)).await;
    until_healthy(&s.via, &s.tg, &key).await;

    // Registering it again while registered changes nothing, as in AWS.
    register(&s.via, &s.tg, A, Some(80)).await;
    assert_eq!(health(&s.via, &s.tg).await[&key], healthy());

    deregister(&s.via, &s.tg, A, Some(80)).await;
    assert!(health(&s.via, &s.tg).await.is_empty());
    register(&s.via, &s.tg, A, Some(80)).await;
    assert_eq!(health(&s.via, &s.tg).await[&key], initial());
}

#[tokio::test]
async fn a_changed_initial_period_applies_to_targets_registered_afterwards() {
    let s = setup(LONG).await;
    register(&s.via, &s.tg, A, Some(80)).await;
    s.proxy.set_initial_for(Duration::ZERO);
    register(&s.via, &s.tg, B, Some(80)).await;
    assert_eq!(
        health(&s.via, &s.tg).await,
        BTreeMap::from([
            (format!("{A}:80"), initial()),
            (format!("{B}:80"), healthy())
        ])
    );
}

#[tokio::test]
async fn an_unhealthy_target_reads_unhealthy_with_its_reason_until_cleared() {
    let s = setup(LONG).await;
    let other = s
        .world
        .target_group("tg-b", TargetTypeEnum::Ip, 80, &[])
        .await;
    s.world.register(&s.tg, A, 80).await;
    s.world.register(&s.tg, B, 80).await;
    s.world.register(&other, A, 81).await;
    // Unhealthy wins over initial.
    register(&s.via, &other, B, Some(80)).await;
    s.proxy.set_unhealthy(A, 80, true);
    s.proxy.set_unhealthy(B, 80, true);
    assert_eq!(
        health(&s.via, &s.tg).await,
        BTreeMap::from([
            (format!("{A}:80"), unhealthy()),
            (format!("{B}:80"), unhealthy())
        ])
    );
    assert_eq!(
        health(&s.via, &other).await,
        BTreeMap::from([
            (format!("{A}:81"), healthy()),
            (format!("{B}:80"), unhealthy())
        ])
    );

    s.proxy.set_unhealthy(A, 80, false);
    assert_eq!(
        health(&s.via, &s.tg).await,
        BTreeMap::from([
            (format!("{A}:80"), healthy()),
            (format!("{B}:80"), unhealthy())
        ])
    );
    s.proxy.set_unhealthy(B, 80, false);
    assert_eq!(
        health(&s.via, &other).await,
        BTreeMap::from([
            (format!("{A}:81"), healthy()),
            (format!("{B}:80"), initial())
        ])
    );
}

#[tokio::test]
async fn a_failing_target_health_read_is_an_error_the_sdk_does_not_retry_until_restored() {
    let s = setup(LONG).await;
    s.world.register(&s.tg, A, 80).await;
    s.proxy.fail_target_health(true);
    let reads = s.proxy.health_reads();
    let error = s
        .via
        .describe_target_health()
        .target_group_arn(&s.tg)
        .send()
        .await
        .expect_err("a refused read");
    let service = error.as_service_error().expect("a service error");
    let meta = aws_sdk_elasticloadbalancingv2::error::ProvideErrorMetadata::meta(service);
    assert_eq!(meta.code(), Some("AccessDenied"), "{meta:?}");
    assert!(
        meta.message()
            .is_some_and(|m| m.contains("elasticloadbalancing:DescribeTargetHealth")),
        "{meta:?}"
    );
    assert_eq!(s.proxy.health_reads(), reads + 1, "read once, not retried");

    // Other calls pass.
    register(&s.via, &s.tg, B, Some(80)).await;
    s.proxy.fail_target_health(false);
    assert_eq!(
        health(&s.via, &s.tg).await,
        BTreeMap::from([
            (format!("{A}:80"), healthy()),
            (format!("{B}:80"), initial())
        ])
    );
    assert_eq!(s.proxy.health_reads(), reads + 2);
}

/// A stand-in for moto that answers RegisterTargets, and DescribeTargetHealth in chunks: both
/// targets healthy.
async fn chunked_upstream() -> (String, tokio::task::JoinHandle<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the stand-in");
    let url = format!(
        "http://{}",
        listener.local_addr().expect("stand-in address")
    );
    let task = tokio::spawn(async move {
        for _ in 0..16 {
            let Ok((mut client, _)) = listener.accept().await else {
                return;
            };
            let Ok(request) = support::throttle::read_request(&mut client).await else {
                continue;
            };
            let ns = "xmlns=\"http://elasticloadbalancing.amazonaws.com/doc/2015-12-01/\"";
            let response = match support::throttle::operation(&request).1.as_str() {
                "DescribeTargetHealth" => {
                    let member = |id: &str| {
                        format!(
                            "<member><Target><Id>{id}</Id><Port>80</Port></Target>\
                             <HealthCheckPort>traffic-port</HealthCheckPort>\
                             <TargetHealth><State>healthy</State></TargetHealth></member>"
                        )
                    };
                    let body = format!(
                        "<DescribeTargetHealthResponse {ns}><DescribeTargetHealthResult>\
                         <TargetHealthDescriptions>{}{}</TargetHealthDescriptions>\
                         </DescribeTargetHealthResult><ResponseMetadata><RequestId>r</RequestId>\
                         </ResponseMetadata></DescribeTargetHealthResponse>",
                        member(A),
                        member(B)
                    );
                    let (first, second) = body.split_at(body.len() / 2);
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nTransfer-Encoding: chunked\r\n\
                         Connection: close\r\n\r\n{:x}\r\n{first}\r\n{:x}\r\n{second}\r\n0\r\n\r\n",
                        first.len(),
                        second.len()
                    )
                }
                _ => {
                    let body = format!(
                        "<RegisterTargetsResponse {ns}><RegisterTargetsResult/><ResponseMetadata>\
                         <RequestId>r</RequestId></ResponseMetadata></RegisterTargetsResponse>"
                    );
                    format!(
                        "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n{body}",
                        body.len()
                    )
                }
            };
            let _ = client.write_all(response.as_bytes()).await;
            let _ = client.shutdown().await;
        }
    });
    (url, task)
}

#[tokio::test]
async fn a_chunked_answer_is_rewritten_and_sent_with_its_length() {
    let (upstream, task) = chunked_upstream().await;
    let proxy = HealthProxy::start(&upstream, LONG).await;
    let via = Client::new(&sdk_config_at(&proxy.url).await);
    let tg = "arn:aws:elasticloadbalancing:us-west-2:123456789012:targetgroup/tg/0123456789abcdef";
    register(&via, tg, A, Some(80)).await;
    assert_eq!(
        health(&via, tg).await,
        BTreeMap::from([
            (format!("{A}:80"), initial()),
            (format!("{B}:80"), healthy())
        ])
    );
    task.abort();
}
