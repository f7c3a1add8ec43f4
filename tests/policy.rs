//! BackendPolicy from manifest files changes behaviour observably: retries on status codes,
//! non-idempotent and replay limits, the retry budget, the access log, and invalid policies.

use std::time::{Duration, Instant};

use weir_testkit::backend::body_digest;
use weir_testkit::client::{self, Proto};
use weir_testkit::manifests::{backend_policy, docs, ingress, ingress_class, service};
use weir_testkit::{Backend, TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

struct Setup {
    weir: Weir,
    backend: Backend,
    _dir: TempDir,
}

/// One backend behind `app.example.com`, reached over HTTP/1.1 or h2c, with an optional policy.
async fn setup(h2c: bool, policy: Option<&str>, extra: &[&str]) -> Setup {
    let backend = Backend::local("app").await;
    let dir = TempDir::new("policy");
    let proto = h2c.then_some("kubernetes.io/h2c");
    let mut parts = vec![
        ingress_class(),
        service("default", "app", proto, &[backend.addr]),
        ingress("default", "app", "app.example.com", "/", "Prefix", "app"),
    ];
    if let Some(spec) = policy {
        parts.push(backend_policy("default", "app-policy", "app", spec));
    }
    dir.write("all.yaml", &docs(&parts));
    let weir = Weir::start(WEIR, dir.path(), extra).await;
    Setup {
        weir,
        backend,
        _dir: dir,
    }
}

const RETRY_503: &str =
    "retry:\n  attempts: 3\n  when: [gateway-error]\n  backoff: {base: 1ms, max: 5ms}";

async fn post(weir: &Weir, path: &str, body: Vec<u8>) -> weir_testkit::Reply {
    let req = client::request(
        Proto::H1,
        "POST",
        "app.example.com",
        path,
        client::body(body),
    );
    client::send(weir.http, Proto::H1, req).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_gateway_errors_for_idempotent_requests() {
    for h2c in [false, true] {
        let s = setup(h2c, Some(RETRY_503), &[]).await;
        let r = client::get(s.weir.http, "app.example.com", "/flaky/2")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "h2c={h2c}: {}", r.text());
        assert_eq!(
            s.backend.hits(),
            3,
            "h2c={h2c}: two failed attempts and one good one"
        );
        let retries = s
            .weir
            .metric("weir_retries_total{reason=\"status-503\",service=\"default/app:80\"}")
            .await;
        assert_eq!(retries, 2.0, "h2c={h2c}");
        let attempts = s
            .weir
            .metric("weir_upstream_attempts_total{outcome=\"response\",service=\"default/app:80\"}")
            .await;
        assert_eq!(attempts, 3.0, "h2c={h2c}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_policy_status_codes_are_not_retried() {
    let s = setup(false, None, &[]).await;
    let r = client::get(s.weir.http, "app.example.com", "/flaky/1")
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert_eq!(s.backend.hits(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn post_is_not_retried_unless_the_policy_says_so() {
    let s = setup(false, Some(RETRY_503), &[]).await;
    let r = post(&s.weir, "/flaky/1", b"order=1".to_vec()).await;
    assert_eq!(r.status, 503, "a processed POST must not be repeated");
    assert_eq!(s.backend.hits(), 1);
    let skipped = s
        .weir
        .metric("weir_retries_skipped_total{reason=\"non_idempotent\",service=\"default/app:80\"}")
        .await;
    assert_eq!(skipped, 1.0);

    let always = format!("{RETRY_503}\n  nonIdempotent: always");
    let s = setup(true, Some(&always), &[]).await;
    let body: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
    let r = post(&s.weir, "/flaky/1", body.clone()).await;
    assert_eq!(r.status, 200);
    assert_eq!(s.backend.hits(), 2);
    assert_eq!(
        r.header("x-body-sha"),
        Some(body_digest(&body).as_str()),
        "the replayed body is byte-identical"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_max_replay_bytes_is_not_retried() {
    let spec = format!("{RETRY_503}\n  nonIdempotent: always\n  maxReplayBytes: 1024");
    let s = setup(false, Some(&spec), &[]).await;
    let r = post(&s.weir, "/flaky/1", vec![b'x'; 4096]).await;
    assert_eq!(r.status, 503);
    assert_eq!(s.backend.hits(), 1);
    let skipped = s
        .weir
        .metric("weir_retries_skipped_total{reason=\"body_too_large\",service=\"default/app:80\"}")
        .await;
    assert_eq!(skipped, 1.0);
    // A small body on the same policy is retried.
    let r = post(&s.weir, "/flaky/2", vec![b'y'; 100]).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retries_stay_within_the_budget() {
    let spec = "retry:\n  attempts: 2\n  when: [gateway-error]\n  backoff: {base: 1ms, max: 1ms}\n  budget: {ratio: 0.1, window: 10s, minPerSecond: 1}";
    let s = setup(false, Some(spec), &[]).await;
    let requests = 50;
    for _ in 0..requests {
        let r = client::get(s.weir.http, "app.example.com", "/status/503")
            .await
            .unwrap();
        assert_eq!(r.status, 503);
    }
    let retries = s
        .weir
        .metric("weir_retries_total{reason=\"status-503\",service=\"default/app:80\"}")
        .await;
    let skipped = s
        .weir
        .metric("weir_retries_skipped_total{reason=\"budget\",service=\"default/app:80\"}")
        .await;
    // At most minPerSecond × window + ratio × requests retries.
    let allowed = 1.0 * 10.0 + 0.1 * requests as f64;
    assert!(retries <= allowed, "{retries} retries > budget {allowed}");
    assert!(retries >= 1.0, "some retries were allowed");
    assert_eq!(
        retries + skipped,
        requests as f64,
        "every failed first attempt asked for a retry"
    );
    assert_eq!(s.backend.hits() as f64, requests as f64 + retries);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_log_lists_every_attempt() {
    let s = setup(false, Some(RETRY_503), &["--access-log"]).await;
    let r = client::get(s.weir.http, "app.example.com", "/flaky/1?q=1")
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    let start = Instant::now();
    let line = loop {
        if let Some(line) = s
            .weir
            .stdout_lines()
            .into_iter()
            .find(|l| l.contains("/flaky/1"))
        {
            break line;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "no access log line"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let entry: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(entry["method"], "GET");
    assert_eq!(entry["authority"], "app.example.com");
    assert_eq!(entry["path"], "/flaky/1", "the query is not logged");
    assert_eq!(entry["route"], "default/app");
    assert_eq!(entry["service"], "default/app:80");
    assert_eq!(entry["endpoint"], s.backend.addr.to_string());
    assert_eq!(entry["status"], "200");
    assert_eq!(entry["bytes"], 3);
    assert!(entry["time"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        entry["attempts"],
        serde_json::json!([
            "503/possibly-processed/retried",
            "200/possibly-processed/returned"
        ])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_policy_is_reported_and_not_applied() {
    let spec = "retry:\n  attempts: 0\n  when: [gateway-error]\n  backoff: {base: 2s, max: 1s}";
    let s = setup(false, Some(spec), &[]).await;
    let errors = s
        .weir
        .metric("weir_config_errors_total{stage=\"compile\"}")
        .await;
    assert_eq!(errors, 2.0, "attempts and backoff are both reported");
    let r = client::get(s.weir.http, "app.example.com", "/flaky/1")
        .await
        .unwrap();
    assert_eq!(
        r.status, 503,
        "the invalid policy's retries are not applied"
    );
    let routes = client::get(s.weir.admin, "admin", "/debug/routes")
        .await
        .unwrap();
    let table: serde_json::Value = serde_json::from_slice(&routes.body).unwrap();
    assert_eq!(table["backends"][0]["policy"]["source"], "");
}

/// Steady load with default settings: connections opened per request stays below 1/1000.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn steady_load_reuses_connections() {
    for h2c in [true, false] {
        let s = setup(h2c, None, &[]).await;
        let started = Instant::now();
        let requests_per_client = 1500;
        let clients = 4;
        let mut tasks = Vec::new();
        for _ in 0..clients {
            let http = s.weir.http;
            tasks.push(tokio::spawn(async move {
                let stream = tokio::net::TcpStream::connect(http).await.unwrap();
                let (mut tx, conn) = hyper::client::conn::http2::handshake(
                    hyper_util::rt::TokioExecutor::new(),
                    hyper_util::rt::TokioIo::new(stream),
                )
                .await
                .unwrap();
                tokio::spawn(conn);
                for _ in 0..requests_per_client {
                    let req =
                        client::request(Proto::H2, "GET", "app.example.com", "/", client::empty());
                    let resp = tx.send_request(req).await.unwrap();
                    assert_eq!(resp.status(), 200);
                    http_body_util::BodyExt::collect(resp.into_body())
                        .await
                        .unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let requests = (clients * requests_per_client) as f64;
        let opened = s
            .weir
            .metric("weir_upstream_connections_opened_total{service=\"default/app:80\"}")
            .await;
        let ratio = opened / requests;
        eprintln!("reuse ratio (h2c={h2c}): {opened} connections / {requests} requests = {ratio:.5} in {:?}", started.elapsed());
        assert_eq!(
            opened,
            s.backend.connections() as f64,
            "the metric counts what the backend saw"
        );
        assert!(
            ratio < 0.001,
            "h2c={h2c}: {opened} connections for {requests} requests"
        );
    }
}
