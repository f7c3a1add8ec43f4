//! HTTP/1.1 ↔ HTTP/2 translation in both directions, trailers (gRPC style), header rewriting,
//! streaming bodies and `Expect: 100-continue`, against real backends.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use weir_testkit::client::{self, Proto};
use weir_testkit::manifests::{docs, ingress, ingress_class, service};
use weir_testkit::{Backend, TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

struct Setup {
    weir: Weir,
    _backend: Backend,
    _dir: TempDir,
}

/// `h1.example.com` → HTTP/1.1 backend; `h2c.example.com` → the same backend over h2c.
async fn setup() -> Setup {
    let backend = Backend::local("echo").await;
    let dir = TempDir::new("protocols");
    dir.write(
        "all.yaml",
        &docs(&[
            ingress_class(),
            service("default", "plain", None, &[backend.addr]),
            service(
                "default",
                "multiplexed",
                Some("kubernetes.io/h2c"),
                &[backend.addr],
            ),
            ingress("default", "h1", "h1.example.com", "/", "Prefix", "plain"),
            ingress(
                "default",
                "h2c",
                "h2c.example.com",
                "/",
                "Prefix",
                "multiplexed",
            ),
        ]),
    );
    let weir = Weir::start(WEIR, dir.path(), &[]).await;
    Setup {
        weir,
        _backend: backend,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_backend_protocol_pair() {
    let s = setup().await;
    let pairs = [
        (Proto::H1, "h1.example.com", "HTTP/1.1"),
        (Proto::H1, "h2c.example.com", "HTTP/2.0"),
        (Proto::H2, "h1.example.com", "HTTP/1.1"),
        (Proto::H2, "h2c.example.com", "HTTP/2.0"),
    ];
    for (proto, host, backend_version) in pairs {
        let req = client::request(proto, "GET", host, "/p?q=1", client::empty());
        let r = client::send(s.weir.http, proto, req).await.unwrap();
        let ctx = format!("{proto:?} → {host}");
        assert_eq!(r.status, 200, "{ctx}: {}", r.text());
        assert_eq!(r.header("x-seen-version"), Some(backend_version), "{ctx}");
        assert_eq!(r.header("x-seen-path"), Some("/p?q=1"), "{ctx}");
        assert_eq!(
            r.header("x-seen-authority"),
            Some(host),
            "{ctx}: Host/:authority preserved"
        );
        assert_eq!(r.header("x-seen-xff"), Some("127.0.0.1"), "{ctx}");
        assert_eq!(r.header("x-seen-proto"), Some("http"), "{ctx}");
        assert_eq!(r.header("x-seen-xfh"), Some(host), "{ctx}");
        let want_version = if proto == Proto::H2 {
            http::Version::HTTP_2
        } else {
            http::Version::HTTP_11
        };
        assert_eq!(r.version, want_version, "{ctx}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_trailers_reach_h2_and_h1_clients() {
    let s = setup().await;
    for (proto, host) in [
        (Proto::H2, "h2c.example.com"),
        (Proto::H1, "h2c.example.com"),
        (Proto::H2, "h1.example.com"),
    ] {
        let req = http::Request::builder()
            .method("POST")
            .uri(match proto {
                Proto::H2 => format!("http://{host}/grpc"),
                Proto::H1 => "/grpc".to_string(),
            })
            .version(if proto == Proto::H2 {
                http::Version::HTTP_2
            } else {
                http::Version::HTTP_11
            })
            .header("host", host)
            .header("te", "trailers")
            .header("content-type", "application/grpc")
            .body(client::body(&b"\0\0\0\0\x05hello"[..]))
            .unwrap();
        let r = client::send(s.weir.http, proto, req).await.unwrap();
        let ctx = format!("{proto:?} → {host}");
        assert_eq!(r.status, 200, "{ctx}");
        assert_eq!(
            r.header("x-seen-te"),
            Some("trailers"),
            "{ctx}: te: trailers forwarded"
        );
        assert_eq!(&r.body[..], b"\0\0\0\0\x05hello", "{ctx}");
        let trailers = r.trailers.unwrap_or_else(|| panic!("{ctx}: no trailers"));
        assert_eq!(
            trailers.get("grpc-status").map(|v| v.as_bytes()),
            Some(&b"0"[..]),
            "{ctx}"
        );
        assert_eq!(
            trailers.get("grpc-message").map(|v| v.as_bytes()),
            Some(&b"ok"[..]),
            "{ctx}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hop_by_hop_headers_are_removed() {
    let s = setup().await;
    let req = http::Request::builder()
        .uri("/")
        .header("host", "h1.example.com")
        .header("connection", "keep-alive, x-hop")
        .header("x-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-forwarded-for", "203.0.113.9")
        .body(client::empty())
        .unwrap();
    let r = client::send(s.weir.http, Proto::H1, req).await.unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(
        r.header("x-seen-hop"),
        None,
        "a header named by Connection must not be forwarded"
    );
    assert_eq!(r.header("x-seen-connection"), None);
    assert_eq!(r.header("x-seen-xff"), Some("203.0.113.9, 127.0.0.1"));
}

/// The first half of a request body reaches the backend, and its echo comes back to the client,
/// before the client has sent the second half: nothing on the way buffers the whole body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_stream_both_ways() {
    let s = setup().await;
    for (proto, host) in [
        (Proto::H2, "h1.example.com"),
        (Proto::H1, "h2c.example.com"),
        (Proto::H2, "h2c.example.com"),
    ] {
        let (tx, body) = client::channel_body();
        let req = client::request(proto, "POST", host, "/echo", body);
        let stream = TcpStream::connect(s.weir.http).await.unwrap();
        let send = tokio::spawn(async move {
            match proto {
                Proto::H1 => {
                    let (mut c, conn) =
                        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
                            .await?;
                    tokio::spawn(conn);
                    c.send_request(req).await
                }
                Proto::H2 => {
                    let (mut c, conn) = hyper::client::conn::http2::handshake(
                        hyper_util::rt::TokioExecutor::new(),
                        hyper_util::rt::TokioIo::new(stream),
                    )
                    .await?;
                    tokio::spawn(conn);
                    c.send_request(req).await
                }
            }
        });
        let first = Bytes::from(vec![b'a'; 64 * 1024]);
        tx.send(first.clone()).await.unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), send)
            .await
            .expect("response headers before the request body ended")
            .unwrap()
            .unwrap();
        let mut body = resp.into_body();
        let mut echoed = 0;
        while echoed < first.len() {
            let frame = tokio::time::timeout(Duration::from_secs(10), body.frame())
                .await
                .expect("echo of the first half before the second half was sent")
                .expect("body continues")
                .unwrap();
            echoed += frame.data_ref().map_or(0, |d| d.len());
        }
        // Now the rest: 4 MiB in 64 KiB chunks, then end of body.
        let chunk = Bytes::from(vec![b'b'; 64 * 1024]);
        let writer = tokio::spawn(async move {
            for _ in 0..64 {
                tx.send(chunk.clone()).await.unwrap();
            }
        });
        let rest = body.collect().await.unwrap().to_bytes();
        writer.await.unwrap();
        assert_eq!(echoed + rest.len(), 65 * 64 * 1024, "{proto:?} → {host}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_download_streams() {
    let s = setup().await;
    for (proto, host) in [
        (Proto::H1, "h2c.example.com"),
        (Proto::H2, "h1.example.com"),
    ] {
        let req = client::request(proto, "GET", host, "/bytes/10485760", client::empty());
        let r = client::send(s.weir.http, proto, req).await.unwrap();
        assert_eq!(r.body.len(), 10 * 1024 * 1024, "{proto:?} → {host}");
    }
}

/// weir answers `100 Continue` itself once it starts forwarding the body, and does not pass
/// `Expect` on (the backend never sees it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue() {
    let s = setup().await;
    let mut c = TcpStream::connect(s.weir.http).await.unwrap();
    c.write_all(b"POST /echo HTTP/1.1\r\nHost: h2c.example.com\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .expect("an interim response before the body is sent")
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 100 Continue\r\n"), "{head:?}");
    // The echo backend answers as soon as it has the request head, so the final response's
    // head may arrive in the same read as the interim one: keep what follows `100 Continue`.
    let interim_end = head.find("\r\n\r\n").expect("a complete interim response") + 4;
    let mut response = buf[interim_end..n].to_vec();
    c.write_all(b"hello").await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !String::from_utf8_lossy(&response).contains("hello") {
        let n = tokio::time::timeout_at(deadline, c.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        assert!(
            n > 0,
            "connection closed early: {:?}",
            String::from_utf8_lossy(&response)
        );
        response.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&response).to_lowercase();
    assert!(text.starts_with("http/1.1 200 ok"), "{text}");
    assert!(
        !text.contains("x-seen-expect"),
        "Expect reached the backend: {text}"
    );
}

/// An unrouted request with `Expect: 100-continue` is answered without reading the body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expect_100_continue_rejected_without_continue() {
    let s = setup().await;
    let mut c = TcpStream::connect(s.weir.http).await.unwrap();
    c.write_all(b"POST / HTTP/1.1\r\nHost: nowhere.example.com\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tokio::time::timeout(Duration::from_secs(10), c.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    let head = String::from_utf8_lossy(&buf[..n]).to_string();
    assert!(head.starts_with("HTTP/1.1 404"), "{head:?}");
}
