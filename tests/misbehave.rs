//! The misbehaving-backend suite: weir in front of an HTTP/2 peer that breaks the rules on
//! purpose, frame by frame. Every case asserts what the client got, what the backend saw, the
//! metrics, that weir did not panic, and that no stream or waiting request leaked. Cases whose
//! outcome depends on the reuse mode run under all four.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::client::conn::http2::SendRequest;
use weir_testkit::client::{self, Body, Proto};
use weir_testkit::h2peer::{Behaviour, H2Peer};
use weir_testkit::manifests::{backend_policy, docs, ingress, ingress_class};
use weir_testkit::{TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");
const MODES: [&str; 4] = ["never", "safe", "aggressive", "always"];
const SETTLE: Duration = Duration::from_secs(5);
const SERVICE: &str = "service=\"default/app:80\"";

struct Rig {
    weir: Weir,
    peers: Vec<H2Peer>,
    _dir: TempDir,
}

/// A Service over h2c whose endpoints are `peers` (127.0.0.1, 127.0.0.2, ... on one port).
fn h2c_service(endpoints: &[SocketAddr]) -> String {
    let port = endpoints[0].port();
    let addrs: String = endpoints
        .iter()
        .map(|a| format!("  - addresses: [\"{}\"]\n", a.ip()))
        .collect();
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: app, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, appProtocol: kubernetes.io/h2c}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: app-1, namespace: default, labels: {{kubernetes.io/service-name: app}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n{addrs}"
    )
}

async fn rig(behaviours: Vec<Behaviour>, policy: &str) -> Rig {
    let mut peers: Vec<H2Peer> = Vec::new();
    for (i, b) in behaviours.into_iter().enumerate() {
        let addr = match peers.first() {
            None => SocketAddr::from(([127, 0, 0, 1], 0)),
            Some(first) => SocketAddr::from(([127, 0, 0, 1 + i as u8], first.addr.port())),
        };
        peers.push(
            H2Peer::start_on(addr, b)
                .await
                .expect("start an HTTP/2 peer"),
        );
    }
    let endpoints: Vec<SocketAddr> = peers.iter().map(|p| p.addr).collect();
    let dir = TempDir::new("misbehave");
    dir.write(
        "all.yaml",
        &docs(&[
            ingress_class(),
            h2c_service(&endpoints),
            ingress("default", "app", "app.example.com", "/", "Prefix", "app"),
            backend_policy("default", "app", "app", policy),
        ]),
    );
    let weir = Weir::start(WEIR, dir.path(), &[]).await;
    Rig {
        weir,
        peers,
        _dir: dir,
    }
}

impl Rig {
    async fn metric(&self, name: &str, labels: &str) -> f64 {
        let series = if labels.is_empty() {
            format!("{name}{{{SERVICE}}}")
        } else {
            format!("{name}{{{labels},{SERVICE}}}")
        };
        self.weir.metric(&series).await
    }

    async fn finish(mut self) {
        self.weir.assert_settled(SETTLE).await;
        self.weir.assert_no_panic();
    }
}

fn policy(mode: &str, extra: &str) -> String {
    format!("connectionPool:\n  reuse: {mode}\n{extra}")
}

/// An HTTP/2 client connection to weir.
async fn h2_client(addr: SocketAddr) -> SendRequest<Body> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (tx, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(stream),
    )
    .await
    .unwrap();
    tokio::spawn(conn);
    tx
}

/// Status, `x-peer-conn`, body — or the error text.
type Answer = Result<(u16, String, Bytes), String>;

async fn exchange(tx: &mut SendRequest<Body>, method: &str, path: &str, body: Bytes) -> Answer {
    let req = client::request(
        Proto::H2,
        method,
        "app.example.com",
        path,
        client::body(body),
    );
    let resp = tx.send_request(req).await.map_err(|e| format!("{e:?}"))?;
    let status = resp.status().as_u16();
    let conn = resp
        .headers()
        .get("x-peer-conn")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("{e:?}"))?
        .to_bytes();
    Ok((status, conn, body))
}

/// Sends requests concurrently on one client connection.
async fn concurrently(addr: SocketAddr, requests: &[(&str, &str, Bytes)]) -> Vec<Answer> {
    let tx = h2_client(addr).await;
    let tasks: Vec<_> = requests
        .iter()
        .map(|(m, p, b)| {
            let (mut tx, m, p, b) = (tx.clone(), m.to_string(), p.to_string(), b.clone());
            tokio::spawn(async move { exchange(&mut tx, &m, &p, b).await })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(
            tokio::time::timeout(Duration::from_secs(20), t)
                .await
                .expect("no request hangs")
                .unwrap(),
        );
    }
    out
}

fn body_of(tag: &str, len: usize) -> Bytes {
    Bytes::from(tag.bytes().cycle().take(len).collect::<Vec<u8>>())
}

/// 1. GOAWAY while requests are in flight: streams above the last-stream-id are retried, POST
/// included; the connection takes no new streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_in_flight_retries_streams_above_last_stream_id() {
    for mode in MODES {
        let b = Behaviour {
            goaway_after: Some(2),
            ..Default::default()
        };
        let r = rig(vec![b], &policy(mode, "")).await;
        let posts = [body_of("post-a", 3000), body_of("post-b", 3000)];
        let requests = [
            ("GET", "/slow/100", Bytes::new()),
            ("POST", "/", posts[0].clone()),
            ("GET", "/slow/100", Bytes::new()),
            ("POST", "/", posts[1].clone()),
        ];
        let answers = concurrently(r.weir.http, &requests).await;
        let mut on_first = 0;
        for (i, a) in answers.iter().enumerate() {
            let (status, conn, body) = a
                .as_ref()
                .unwrap_or_else(|e| panic!("{mode}: request {i}: {e}"));
            assert_eq!(*status, 200, "{mode}: request {i}");
            if requests[i].0 == "POST" {
                assert_eq!(body, &requests[i].2, "{mode}: POST {i} body echoed intact");
            }
            on_first += usize::from(conn == "0");
        }
        assert!(
            on_first <= 2,
            "{mode}: {on_first} answers from the connection that sent GOAWAY after 2 streams"
        );
        assert!(
            r.metric("weir_upstream_goaway_received_total", "").await >= 1.0,
            "{mode}"
        );
        let stats = r.peers[0].stats();
        assert!(
            stats.connections >= 2,
            "{mode}: a new connection after GOAWAY"
        );
        r.finish().await;
    }
}

/// 2. RST_STREAM(REFUSED_STREAM): retried, POST included, body replayed byte-identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_stream_is_retried_with_identical_body() {
    for mode in MODES {
        let b = Behaviour {
            refuse_streams: 1,
            ..Default::default()
        };
        let r = rig(vec![b], &policy(mode, "")).await;
        let body = body_of("refused-then-replayed", 50_000);
        let answers = concurrently(r.weir.http, &[("POST", "/", body.clone())]).await;
        let (status, _, echoed) = answers[0].clone().unwrap_or_else(|e| panic!("{mode}: {e}"));
        assert_eq!(status, 200, "{mode}");
        assert_eq!(echoed, body, "{mode}");
        let stats = r.peers[0].stats();
        assert_eq!(stats.refused, 1, "{mode}");
        assert_eq!(
            stats.streams, 2,
            "{mode}: refused once, then processed once"
        );
        assert_eq!(
            stats.bodies,
            vec![body.clone()],
            "{mode}: the backend processed one intact body"
        );
        assert_eq!(
            r.metric("weir_upstream_refused_streams_total", "").await,
            1.0,
            "{mode}"
        );
        assert_eq!(
            r.metric("weir_retries_total", "reason=\"refused-stream\"")
                .await,
            1.0,
            "{mode}"
        );
        r.finish().await;
    }
}

/// 3. RST_STREAM after response headers: the client sees the abort; nothing is retried.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reset_after_headers_aborts_without_retry() {
    let b = Behaviour {
        reset_after_headers: true,
        ..Default::default()
    };
    let r = rig(
        vec![b],
        &policy(
            "safe",
            "retry:\n  attempts: 3\n  when: [unprocessed, reset, gateway-error]",
        ),
    )
    .await;
    let answers = concurrently(r.weir.http, &[("GET", "/", Bytes::new())]).await;
    assert!(
        answers[0].is_err(),
        "the client must see the abort, got {:?}",
        answers[0]
    );
    // HTTP/1.1 client: headers arrive, then the body is cut.
    let h1 = client::get(r.weir.http, "app.example.com", "/").await;
    assert!(
        h1.is_err(),
        "HTTP/1.1 client must see the abort, got {h1:?}"
    );
    assert_eq!(
        r.peers[0].stats().streams,
        2,
        "no retry once the response started"
    );
    assert_eq!(
        r.metric("weir_retries_total", "reason=\"reset\"").await,
        0.0
    );
    r.finish().await;
}

/// 4. RST_STREAM(NO_ERROR) after a complete response while the upload continues.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_complete_response_then_reset_no_error() {
    let b = Behaviour {
        reset_no_error_after_response: true,
        ..Default::default()
    };
    let r = rig(vec![b], &policy("safe", "")).await;
    let big = body_of("upload", 4 << 20);
    let answers = concurrently(r.weir.http, &[("POST", "/", big.clone())]).await;
    let (status, _, _) = answers[0]
        .clone()
        .unwrap_or_else(|e| panic!("h2 client: {e}"));
    assert_eq!(status, 200);
    let req = client::request(Proto::H1, "POST", "app.example.com", "/", client::body(big));
    let h1 = client::send(r.weir.http, Proto::H1, req)
        .await
        .expect("HTTP/1.1 client gets the response");
    assert_eq!(h1.status, 200);
    r.finish().await;
}

/// 5. SETTINGS_MAX_CONCURRENT_STREAMS = 1, and lowered from 100 to 1 mid-connection: never
/// exceeded (measured by the peer); extra requests open connections up to the limit or wait.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_limit_is_never_exceeded() {
    for mode in MODES {
        let b = Behaviour {
            max_concurrent_streams: Some(1),
            ..Default::default()
        };
        let r = rig(vec![b], &policy(mode, "  maxConnectionsPerEndpoint: 2")).await;
        let requests: Vec<_> = (0..8).map(|_| ("GET", "/slow/30", Bytes::new())).collect();
        for a in concurrently(r.weir.http, &requests).await {
            assert_eq!(a.unwrap_or_else(|e| panic!("{mode}: {e}")).0, 200, "{mode}");
        }
        let stats = r.peers[0].stats();
        assert_eq!(
            stats.max_concurrent, 1,
            "{mode}: the peer saw more than 1 stream at once"
        );
        assert_eq!(stats.refused, 0, "{mode}");
        assert!(
            stats.connections <= 2,
            "{mode}: {} connections over the limit of 2",
            stats.connections
        );
        r.finish().await;

        let b = Behaviour {
            max_concurrent_streams: Some(100),
            lower_max_concurrent_streams: Some((1, 1)),
            ..Default::default()
        };
        let r = rig(vec![b], &policy(mode, "  maxConnectionsPerEndpoint: 1")).await;
        // One request first, so the peer lowers the limit on this connection; then a burst on
        // the same client connection (and so, in `never` mode too, the same upstream one).
        let mut tx = h2_client(r.weir.http).await;
        assert_eq!(
            exchange(&mut tx, "GET", "/", Bytes::new()).await.unwrap().0,
            200
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        let burst: Vec<_> = (0..6)
            .map(|_| {
                let mut tx = tx.clone();
                tokio::spawn(
                    async move { exchange(&mut tx, "GET", "/slow/20", Bytes::new()).await },
                )
            })
            .collect();
        for a in burst {
            assert_eq!(
                a.await.unwrap().unwrap_or_else(|e| panic!("{mode}: {e}")).0,
                200,
                "{mode}"
            );
        }
        let stats = r.peers[0].stats();
        assert_eq!(
            stats.refused, 0,
            "{mode}: a stream went over the lowered, acknowledged limit"
        );
        assert_eq!(stats.max_concurrent, 1, "{mode}");
        r.finish().await;
    }
}

/// 6. Connection closed before the peer sends SETTINGS, with requests assigned to it: every
/// such request is retried as unprocessed (on another endpoint) and succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_before_settings_is_unprocessed() {
    for mode in MODES {
        let broken = Behaviour {
            close_before_settings: true,
            settings_delay: Some(Duration::from_millis(100)),
            ..Default::default()
        };
        let r = rig(
            vec![broken, Behaviour::default()],
            &policy(mode, "retry:\n  attempts: 3"),
        )
        .await;
        let requests: Vec<_> = (0..6)
            .map(|i| {
                if i % 2 == 0 {
                    ("POST", "/", body_of("p", 100))
                } else {
                    ("GET", "/", Bytes::new())
                }
            })
            .collect();
        for (i, a) in concurrently(r.weir.http, &requests)
            .await
            .into_iter()
            .enumerate()
        {
            let (status, _, _) = a.unwrap_or_else(|e| panic!("{mode}: request {i}: {e}"));
            assert_eq!(status, 200, "{mode}: request {i}");
        }
        assert_eq!(
            r.peers[0].stats().streams,
            0,
            "{mode}: the broken endpoint processed nothing"
        );
        assert_eq!(r.peers[1].stats().completed, 6, "{mode}");
        assert!(
            r.metric("weir_retries_total", "reason=\"closed-before-settings\"")
                .await
                >= 1.0,
            "{mode}"
        );
        r.finish().await;
    }
}

/// 7. The backend closes idle connections: with `safe` (and no retries to relax the rule) a
/// client connection's first request always gets a new connection, so it never lands on one
/// being closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn safe_first_requests_avoid_idle_connections() {
    let b = Behaviour {
        close_idle_after: Some(Duration::from_millis(150)),
        ..Default::default()
    };
    let r = rig(vec![b], &policy("safe", "retry:\n  attempts: 1")).await;
    let rounds = 12;
    for i in 0..rounds {
        let answers = concurrently(r.weir.http, &[("GET", "/", Bytes::new())]).await;
        assert_eq!(
            answers[0]
                .as_ref()
                .unwrap_or_else(|e| panic!("round {i}: {e}"))
                .0,
            200,
            "round {i}"
        );
        tokio::time::sleep(Duration::from_millis(146 + (i % 9) as u64)).await;
    }
    assert_eq!(
        r.metric("weir_upstream_pool_picks_total", "kind=\"new\"")
            .await,
        rounds as f64
    );
    r.finish().await;
}

/// 8. Backend restart under load: every request ends (none hangs), each with a response or a
/// classified failure, and traffic recovers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backend_restart_under_load() {
    for mode in MODES {
        let r = rig(vec![Behaviour::default()], &policy(mode, "")).await;
        let http = r.weir.http;
        let load = tokio::spawn(async move {
            let mut tx = h2_client(http).await;
            let mut outcomes = Vec::new();
            for _ in 0..150 {
                let a = tokio::time::timeout(
                    Duration::from_secs(10),
                    exchange(&mut tx, "GET", "/slow/2", Bytes::new()),
                )
                .await
                .expect("a request hung across the backend restart");
                outcomes.push(a.map(|(s, _, _)| s));
            }
            outcomes
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        r.peers[0].kill_connections();
        let outcomes = load.await.unwrap();
        let ok = outcomes.iter().filter(|o| matches!(o, Ok(200))).count();
        for o in &outcomes {
            match o {
                Ok(200 | 502) => {}
                Err(e) if e.contains("REFUSED_STREAM") => {}
                other => panic!("{mode}: unexpected outcome {other:?}"),
            }
        }
        assert!(ok >= 140, "{mode}: only {ok}/150 succeeded");
        assert!(
            matches!(outcomes.last(), Some(Ok(200))),
            "{mode}: traffic recovered"
        );
        r.finish().await;
    }
}

/// 9. Flow control: 10 MiB up and down with 1-byte and 65535-byte initial windows; stray
/// WINDOW_UPDATE and DATA for closed streams do not stall the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flow_control_large_bodies_and_stray_frames() {
    // With a 1-byte window the peer grants credit byte by byte as it reads, so every DATA
    // frame carries one byte: 16 KiB is 16,384 round trips, enough to show there is no stall.
    for (window, upload) in [(1u32, 16 << 10), (65_535, 10 << 20)] {
        let b = Behaviour {
            initial_window_size: Some(window),
            initial_connection_window_size: Some(window.max(65_535)),
            ..Default::default()
        };
        let r = rig(vec![b], &policy("safe", "")).await;
        let up = body_of("ten-mebibytes", upload);
        let answers = concurrently(
            r.weir.http,
            &[
                ("POST", "/", up.clone()),
                ("GET", "/bytes/10485760", Bytes::new()),
            ],
        )
        .await;
        let (s1, _, echoed) = answers[0]
            .clone()
            .unwrap_or_else(|e| panic!("window {window}: upload: {e}"));
        assert_eq!((s1, echoed.len()), (200, up.len()), "window {window}");
        assert_eq!(echoed, up, "window {window}: upload intact");
        let (s2, _, down) = answers[1]
            .clone()
            .unwrap_or_else(|e| panic!("window {window}: download: {e}"));
        assert_eq!((s2, down.len()), (200, 10 << 20), "window {window}");
        assert_eq!(
            down,
            weir_testkit::h2peer::pattern(0, 10 << 20),
            "window {window}: download intact"
        );
        r.finish().await;
    }
    let b = Behaviour {
        stray_frames_after_close: Some(Duration::from_millis(2)),
        ..Default::default()
    };
    let r = rig(vec![b], &policy("safe", "")).await;
    let mut tx = h2_client(r.weir.http).await;
    for i in 0..150 {
        let (status, conn, body) = exchange(&mut tx, "GET", "/bytes/2048", Bytes::new())
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(
            (status, conn.as_str(), body.len()),
            (200, "0", 2048),
            "request {i}: same connection, full body"
        );
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    assert_eq!(
        r.peers[0].stats().connections,
        1,
        "stray frames did not break the connection"
    );
    r.finish().await;
}

/// 10. Trailers (`grpc-status`) reach HTTP/2 and HTTP/1.1 clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_trailers_reach_both_client_protocols() {
    let r = rig(vec![Behaviour::default()], &policy("safe", "")).await;
    for proto in [Proto::H2, Proto::H1] {
        let req = http::Request::builder()
            .method("POST")
            .uri(if proto == Proto::H2 {
                "http://app.example.com/grpc"
            } else {
                "/grpc"
            })
            .version(if proto == Proto::H2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            })
            .header("host", "app.example.com")
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .body(client::body(&b"\0\0\0\0\x02hi"[..]))
            .unwrap();
        let reply = client::send(r.weir.http, proto, req).await.unwrap();
        assert_eq!(reply.status, 200, "{proto:?}");
        let t = reply
            .trailers
            .unwrap_or_else(|| panic!("{proto:?}: no trailers"));
        assert_eq!(t["grpc-status"], "0", "{proto:?}");
        assert_eq!(t["grpc-message"], "ok", "{proto:?}");
    }
    r.finish().await;
}

/// 11. 1xx responses (100, 103) before the final response: the final response arrives intact.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn informational_responses_before_final() {
    let r = rig(vec![Behaviour::default()], &policy("safe", "")).await;
    let answers = concurrently(r.weir.http, &[("GET", "/1xx", Bytes::new())]).await;
    assert_eq!(answers[0].as_ref().unwrap().0, 200);
    let h1 = client::get(r.weir.http, "app.example.com", "/1xx")
        .await
        .unwrap();
    assert_eq!(h1.status, 200);
    r.finish().await;
}

/// 12. An early final response (413) before the request body is done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_413_before_body_is_done() {
    let r = rig(vec![Behaviour::default()], &policy("safe", "")).await;
    let big = body_of("too-large", 8 << 20);
    let answers = concurrently(r.weir.http, &[("POST", "/early-413", big.clone())]).await;
    assert_eq!(answers[0].as_ref().unwrap_or_else(|e| panic!("{e}")).0, 413);
    let req = client::request(
        Proto::H1,
        "POST",
        "app.example.com",
        "/early-413",
        client::body(big),
    );
    let h1 = client::send(r.weir.http, Proto::H1, req).await.unwrap();
    assert_eq!(h1.status, 413);
    assert_eq!(
        r.metric("weir_retries_total", "reason=\"reset\"").await,
        0.0
    );
    r.finish().await;
}

/// 13. A body over `maxReplayBytes` on a failing backend: not retried, counted. The backend
/// reads the whole body before answering 503, so the body is known to be over the cap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn body_over_replay_cap_is_not_retried() {
    let b = Behaviour {
        fail_all: Some(503),
        ..Default::default()
    };
    let spec = "retry:\n  when: [gateway-error]\n  nonIdempotent: always\n  maxReplayBytes: 1024";
    let r = rig(vec![b], &policy("safe", spec)).await;
    let answers = concurrently(r.weir.http, &[("POST", "/", body_of("big", 64 * 1024))]).await;
    assert_eq!(
        answers[0].as_ref().unwrap().0,
        503,
        "not retried: the backend's answer"
    );
    let req = client::request(
        Proto::H1,
        "POST",
        "app.example.com",
        "/",
        client::body(body_of("big", 64 * 1024)),
    );
    assert_eq!(
        client::send(r.weir.http, Proto::H1, req)
            .await
            .unwrap()
            .status,
        503
    );
    assert_eq!(
        r.metric("weir_retries_skipped_total", "reason=\"body_too_large\"")
            .await,
        2.0
    );
    assert_eq!(r.peers[0].stats().streams, 2, "one attempt each");
    // A small body on the same policy is retried.
    let answers = concurrently(r.weir.http, &[("POST", "/", body_of("small", 100))]).await;
    assert_eq!(answers[0].as_ref().unwrap().0, 503);
    assert_eq!(r.peers[0].stats().streams, 4, "the small one was retried");
    r.finish().await;
}

/// An unprocessed failure that may not be retried: an HTTP/2 client gets REFUSED_STREAM so it
/// may retry itself; an HTTP/1.1 client gets 502.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unretried_unprocessed_failure_refuses_the_client_stream() {
    let b = Behaviour {
        refuse_streams: 2,
        ..Default::default()
    };
    let r = rig(vec![b], &policy("safe", "retry:\n  attempts: 1")).await;
    let answers = concurrently(r.weir.http, &[("POST", "/", body_of("x", 100))]).await;
    let err = answers[0].clone().expect_err("not retried");
    assert!(
        err.contains("REFUSED_STREAM"),
        "HTTP/2 client gets REFUSED_STREAM, got {err}"
    );
    let h1 = client::get(r.weir.http, "app.example.com", "/")
        .await
        .unwrap();
    assert_eq!(h1.status, 502, "HTTP/1.1 client gets 502");
    assert_eq!(r.peers[0].stats().refused, 2);
    assert_eq!(
        r.metric("weir_retries_total", "reason=\"refused-stream\"")
            .await,
        0.0
    );
    r.finish().await;
}

/// 14. A backend that sends GOAWAY after every N requests: no request fails at steady load.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_every_n_requests_loses_nothing() {
    for mode in MODES {
        let b = Behaviour {
            goaway_after: Some(10),
            ..Default::default()
        };
        let r = rig(vec![b], &policy(mode, "")).await;
        let mut clients = Vec::new();
        for c in 0..3 {
            let http = r.weir.http;
            clients.push(tokio::spawn(async move {
                let mut tx = h2_client(http).await;
                for i in 0..60 {
                    let (status, _, _) = exchange(&mut tx, "POST", "/", body_of("x", 10))
                        .await
                        .unwrap_or_else(|e| panic!("client {c} request {i}: {e}"));
                    assert_eq!(status, 200, "client {c} request {i}");
                }
            }));
        }
        for c in clients {
            c.await.unwrap_or_else(|e| panic!("{mode}: {e}"));
        }
        assert!(
            r.peers[0].stats().connections >= 18,
            "{mode}: 180 requests at 10 per connection"
        );
        r.finish().await;
    }
}

/// 15. A malformed response on one stream: 502 for it; other streams on the connection are fine.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_response_fails_only_its_stream() {
    let b = Behaviour {
        malformed_response_on: Some("/bad".into()),
        ..Default::default()
    };
    let r = rig(vec![b], &policy("safe", "")).await;
    let answers = concurrently(
        r.weir.http,
        &[
            ("GET", "/slow/200", Bytes::new()),
            ("GET", "/bad", Bytes::new()),
            ("GET", "/slow/200", Bytes::new()),
        ],
    )
    .await;
    assert_eq!(
        answers[1].as_ref().unwrap().0,
        502,
        "malformed response → 502"
    );
    for i in [0, 2] {
        let (status, conn, _) = answers[i].clone().unwrap();
        assert_eq!(
            (status, conn.as_str()),
            (200, "0"),
            "stream {i} on the same connection"
        );
    }
    assert_eq!(r.peers[0].stats().connections, 1);
    assert_eq!(
        r.metric("weir_upstream_attempts_total", "outcome=\"malformed\"")
            .await,
        1.0
    );
    r.finish().await;
}

/// 16. A backend failing every request: retries stay within the budget; skips are counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_backend_retries_within_budget() {
    let b = Behaviour {
        fail_all: Some(503),
        ..Default::default()
    };
    let spec = "retry:\n  attempts: 2\n  when: [gateway-error]\n  backoff: {base: 1ms, max: 1ms}\n  budget: {ratio: 0.1, window: 10s, minPerSecond: 1}";
    let r = rig(vec![b], &policy("safe", spec)).await;
    let mut tx = h2_client(r.weir.http).await;
    for _ in 0..40 {
        assert_eq!(
            exchange(&mut tx, "GET", "/", Bytes::new()).await.unwrap().0,
            503
        );
    }
    let retries = r
        .metric("weir_retries_total", "reason=\"status-503\"")
        .await;
    let skipped = r
        .metric("weir_retries_skipped_total", "reason=\"budget\"")
        .await;
    assert!(retries <= 10.0 + 4.0, "{retries} retries over the budget");
    assert_eq!(retries + skipped, 40.0);
    assert_eq!(r.peers[0].stats().streams as f64, 40.0 + retries);
    r.finish().await;
}

/// 17. A client that disconnects mid-retry: attempts stop, the upstream stream is reset,
/// nothing leaks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_disconnect_stops_retries() {
    let b = Behaviour {
        refuse_streams: 1000,
        ..Default::default()
    };
    let spec = "retry:\n  attempts: 10\n  backoff: {base: 300ms, max: 300ms}\n  budget: {ratio: 1, minPerSecond: 100}";
    let r = rig(vec![b], &policy("safe", spec)).await;
    let http = r.weir.http;
    let request = tokio::spawn(async move {
        let mut tx = h2_client(http).await;
        exchange(&mut tx, "GET", "/", Bytes::new()).await
    });
    // Leave once a retry is under way (the backend has seen two streams). A fixed sleep was
    // not enough: the backoff is full-jitter (0-300 ms), so about one run in twenty fitted a
    // third retry into it before the client left.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while r.peers[0].stats().streams < 2 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no retry reached the backend within 10 s"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    request.abort();
    let _ = request.await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let streams = r.peers[0].stats().streams;
    assert!(
        streams <= 3,
        "attempts went on after the client left: {streams}"
    );
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        r.peers[0].stats().streams,
        streams,
        "no attempt after the client left"
    );
    r.finish().await;
}
