//! weir in front of a scripted HTTP/1.1 backend that writes raw bytes: every way a response
//! can be framed, a backend that closes idle or in-flight connections, bytes that do not
//! belong, and an answer that comes before the request body is done. Each case checks what the
//! client got and how many connections and requests the backend saw.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use weir_testkit::client::{self, Body, Proto, Reply};
use weir_testkit::manifests::{backend_policy, docs, ingress, ingress_class, service};
use weir_testkit::{TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");
const HOST: &str = "app.example.com";
const SERVICE: &str = "service=\"default/app:80\"";

/// What the backend does with one request: the bytes it writes back, then whether it closes.
struct Answer {
    bytes: Vec<u8>,
    close: bool,
    /// Wait this long before answering.
    delay: Duration,
    /// Write the first this-many bytes, wait, then the rest.
    pause: Option<(usize, Duration)>,
}

fn keep(bytes: &str) -> Answer {
    Answer {
        bytes: bytes.as_bytes().to_vec(),
        close: false,
        delay: Duration::ZERO,
        pause: None,
    }
}

fn then_close(bytes: &str) -> Answer {
    Answer {
        close: true,
        ..keep(bytes)
    }
}

/// The request line and headers the backend received, lower-cased.
type Script = Arc<dyn Fn(&str) -> Answer + Send + Sync>;

struct Backend {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    requests: Arc<AtomicUsize>,
    /// Connections open now.
    open: Arc<AtomicUsize>,
    /// Requests received and not yet answered, and the most ever at once.
    in_flight: Arc<(AtomicUsize, AtomicUsize)>,
}

impl Backend {
    async fn start(script: impl Fn(&str) -> Answer + Send + Sync + 'static) -> Backend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind backend");
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(AtomicUsize::new(0));
        let open = Arc::new(AtomicUsize::new(0));
        let in_flight = Arc::new((AtomicUsize::new(0), AtomicUsize::new(0)));
        let script: Script = Arc::new(script);
        let (c, o, counts) = (
            connections.clone(),
            open.clone(),
            Counts {
                requests: requests.clone(),
                in_flight: in_flight.clone(),
            },
        );
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                c.fetch_add(1, Ordering::SeqCst);
                o.fetch_add(1, Ordering::SeqCst);
                let (script, counts, o) = (script.clone(), counts.clone(), o.clone());
                tokio::spawn(async move {
                    serve(stream, script, counts).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Backend {
            addr,
            connections,
            requests,
            open,
            in_flight,
        }
    }

    fn open_now(&self) -> usize {
        self.open.load(Ordering::SeqCst)
    }

    fn most_in_flight(&self) -> usize {
        self.in_flight.1.load(Ordering::SeqCst)
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

#[derive(Clone)]
struct Counts {
    requests: Arc<AtomicUsize>,
    in_flight: Arc<(AtomicUsize, AtomicUsize)>,
}

/// Reads request heads (and `content-length` bodies), answering each from the script. A
/// request whose answer comes before its body has been read still has its body read after.
async fn serve(mut stream: TcpStream, script: Script, counts: Counts) {
    let mut buf = Vec::new();
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
        buf.drain(..head_end);
        counts.requests.fetch_add(1, Ordering::SeqCst);
        let now = counts.in_flight.0.fetch_add(1, Ordering::SeqCst) + 1;
        counts.in_flight.1.fetch_max(now, Ordering::SeqCst);
        let answer = script(&head);
        tokio::time::sleep(answer.delay).await;
        // Uncounted before the answer goes out: weir cannot send another request on any
        // connection because of this answer before this request stops counting.
        counts.in_flight.0.fetch_sub(1, Ordering::SeqCst);
        let written = match answer.pause {
            Some((at, pause)) => {
                let first = stream.write_all(&answer.bytes[..at]).await;
                tokio::time::sleep(pause).await;
                match first {
                    Ok(()) => stream.write_all(&answer.bytes[at..]).await,
                    e => e,
                }
            }
            None => stream.write_all(&answer.bytes).await,
        };
        if written.is_err() {
            return;
        }
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0);
        while buf.len() < length {
            let mut chunk = [0u8; 65536];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf.drain(..length);
        if answer.close {
            return;
        }
    }
}

struct Rig {
    weir: Weir,
    _dir: TempDir,
}

async fn start_rig(backend: &Backend, policy: Option<&str>) -> Rig {
    let dir = TempDir::new("h1-backend");
    let mut parts = vec![
        ingress_class(),
        service("default", "app", None, &[backend.addr]),
        ingress("default", "app", HOST, "/", "Prefix", "app"),
    ];
    if let Some(spec) = policy {
        parts.push(backend_policy("default", "app", "app", spec));
    }
    dir.write("all.yaml", &docs(&parts));
    let weir = Weir::start(WEIR, dir.path(), &[]).await;
    Rig { weir, _dir: dir }
}

impl Rig {
    async fn metric(&self, name: &str, labels: &str) -> f64 {
        self.weir
            .metric(&format!("{name}{{{labels},{SERVICE}}}"))
            .await
    }

    async fn finish(mut self) {
        self.weir.assert_settled(Duration::from_secs(5)).await;
        self.weir.assert_no_panic();
    }
}

/// One client connection to weir, HTTP/1.1 or HTTP/2, sending requests one after another.
enum Client {
    H1(hyper::client::conn::http1::SendRequest<Body>),
    H2(hyper::client::conn::http2::SendRequest<Body>),
}

impl Client {
    async fn connect(addr: SocketAddr, proto: Proto) -> Client {
        let io = hyper_util::rt::TokioIo::new(TcpStream::connect(addr).await.unwrap());
        match proto {
            Proto::H1 => {
                let (tx, conn) = hyper::client::conn::http1::handshake(io).await.unwrap();
                tokio::spawn(conn);
                Client::H1(tx)
            }
            Proto::H2 => {
                let exec = hyper_util::rt::TokioExecutor::new();
                let (tx, conn) = hyper::client::conn::http2::handshake(exec, io)
                    .await
                    .unwrap();
                tokio::spawn(conn);
                Client::H2(tx)
            }
        }
    }

    /// Sends `method path` to HOST and returns the response as soon as its head is in.
    async fn response(
        &mut self,
        method: &str,
        path: &str,
        body: Body,
        content_length: Option<u64>,
    ) -> hyper::Result<http::Response<hyper::body::Incoming>> {
        let proto = match self {
            Client::H1(_) => Proto::H1,
            Client::H2(_) => Proto::H2,
        };
        let mut req = client::request(proto, method, HOST, path, body);
        if let Some(len) = content_length {
            req.headers_mut()
                .insert("content-length", http::HeaderValue::from(len));
        }
        match self {
            Client::H1(tx) => {
                tx.ready().await?;
                tx.send_request(req).await
            }
            Client::H2(tx) => tx.send_request(req).await,
        }
    }

    async fn send(&mut self, method: &str, path: &str, body: Body) -> Reply {
        let work = async {
            let resp = self.response(method, path, body, None).await?;
            let (parts, body) = resp.into_parts();
            let collected = http_body_util::BodyExt::collect(body).await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Reply {
                status: parts.status,
                version: parts.version,
                headers: parts.headers,
                trailers: collected.trailers().cloned(),
                body: collected.to_bytes(),
            })
        };
        tokio::time::timeout(Duration::from_secs(10), work)
            .await
            .unwrap_or_else(|_| panic!("{method} {path} timed out"))
            .unwrap_or_else(|e| panic!("{method} {path}: {e:?}"))
    }

    async fn get(&mut self, path: &str) -> Reply {
        self.send("GET", path, client::empty()).await
    }
}

const OK: &str = "HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";

/// Keep-alive works: one backend connection for many requests. A backend that closes every
/// connection after its response (without saying so) costs a new connection per request but
/// no failed request: weir sees the close on the idle connection before it reuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_reuse_and_idle_close() {
    let steady = Backend::start(|_| keep(OK)).await;
    let rig = start_rig(&steady, None).await;
    let mut c = Client::connect(rig.weir.http, Proto::H1).await;
    for _ in 0..20 {
        let r = c.get("/").await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    }
    assert_eq!(steady.connections(), 1, "one kept-alive connection");
    assert_eq!(steady.requests(), 20);
    rig.finish().await;

    let closing = Backend::start(|_| then_close(OK)).await;
    let rig = start_rig(&closing, None).await;
    let mut c = Client::connect(rig.weir.http, Proto::H1).await;
    for i in 0..10 {
        let r = c.get("/").await;
        assert_eq!(r.status, 200, "request {i}: {}", r.text());
        // The backend's FIN reaches weir well within this; the point is that weir checks.
        tokio::time::sleep(Duration::from_millis(30)).await;
    }
    assert_eq!(
        closing.requests(),
        10,
        "no request was sent to a closed connection"
    );
    assert_eq!(closing.connections(), 10);
    let peer_closed = rig
        .metric(
            "weir_upstream_connections_closed_total",
            "reason=\"peer-closed\"",
        )
        .await;
    assert!(peer_closed >= 9.0, "closes seen: {peer_closed}");
    rig.finish().await;
}

/// A connection that closes after the request was written, with no response, may have been
/// processed: a GET is not retried by default, and a POST is not retried even when
/// `empty-response` is, while a GET then is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn close_after_the_request_is_possibly_processed() {
    // Every other request (the first, the third, ...) is read and left without an answer.
    let every_other_silent = || {
        let seen = AtomicUsize::new(0);
        move |_: &str| {
            if seen.fetch_add(1, Ordering::SeqCst).is_multiple_of(2) {
                then_close("")
            } else {
                keep(OK)
            }
        }
    };
    let backend = Backend::start(every_other_silent()).await;
    let rig = start_rig(&backend, None).await;
    let mut c = Client::connect(rig.weir.http, Proto::H1).await;
    assert_eq!(c.get("/").await.status, 502);
    assert_eq!(backend.requests(), 1, "not retried by default");
    let empty = rig
        .metric("weir_upstream_attempts_total", "outcome=\"empty-response\"")
        .await;
    assert_eq!(empty, 1.0);
    rig.finish().await;

    let backend = Backend::start(every_other_silent()).await;
    let policy = "retry:\n  attempts: 2\n  when: [unprocessed, empty-response]";
    let rig = start_rig(&backend, Some(policy)).await;
    let mut c = Client::connect(rig.weir.http, Proto::H1).await;
    let r = c.get("/").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    assert_eq!(backend.requests(), 2, "the GET was retried once");
    let r = c.send("POST", "/", client::body("data")).await;
    assert_eq!(r.status, 502, "a POST is never repeated on a guess");
    assert_eq!(backend.requests(), 3);
    rig.finish().await;
}

/// Every framing of a response body reaches the client whole, and only connections whose
/// response ended cleanly are used again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn response_framings_and_connection_reuse() {
    let backend = Backend::start(|head: &str| {
        let path = head.split_whitespace().nth(1).unwrap_or("/");
        match path {
            "/chunked" => keep(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\ntrailer: x-sum\r\n\r\n\
                 5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nx-sum: 11\r\n\r\n",
            ),
            "/until-close" => then_close("HTTP/1.0 200 OK\r\n\r\nuntil the end"),
            "/hints" => keep(
                "HTTP/1.1 103 Early Hints\r\nlink: </style.css>\r\n\r\n\
                 HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nfinal",
            ),
            "/extra" => keep("HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nokSURPLUS"),
            "/head" => keep("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n"),
            "/empty" => keep("HTTP/1.1 204 No Content\r\n\r\n"),
            "/malformed" => keep("HTTP/1.1 2x0 What\r\n\r\n"),
            _ => keep(OK),
        }
    })
    .await;
    let rig = start_rig(&backend, None).await;
    for proto in [Proto::H1, Proto::H2] {
        let before = backend.connections();
        let mut c = Client::connect(rig.weir.http, proto).await;
        let r = c.get("/chunked").await;
        assert_eq!(r.text(), "hello world", "{proto:?}");
        if proto == Proto::H2 {
            let trailers = r.trailers.expect("trailers reach an HTTP/2 client");
            assert_eq!(trailers["x-sum"], "11");
        }
        // Same connection (1); it then ends with the body.
        assert_eq!(c.get("/until-close").await.text(), "until the end");
        // New connection (2): the informational response is skipped.
        let r = c.get("/hints").await;
        assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "final"));
        // Same connection; the surplus bytes retire it.
        assert_eq!(c.get("/extra").await.text(), "ok");
        // New connection (3): a HEAD response has no body whatever its Content-Length.
        let r = c.send("HEAD", "/head", client::empty()).await;
        assert_eq!((r.status.as_u16(), r.body.len()), (200, 0));
        assert_eq!(c.get("/empty").await.status, 204);
        // Still connection 3; a malformed head fails only its request and retires it.
        assert_eq!(c.get("/malformed").await.status, 502);
        // New connection (4).
        assert_eq!(c.get("/").await.text(), "ok");
        // The HTTP/2 round's first request may take the first round's last idle connection
        // (weir could answer a lost race with REFUSED_STREAM); the HTTP/1.1 client's may not.
        let opened = if proto == Proto::H1 { 4 } else { 3 };
        assert_eq!(backend.connections() - before, opened, "{proto:?}");
    }
    let malformed = rig
        .metric("weir_upstream_attempts_total", "outcome=\"malformed\"")
        .await;
    assert_eq!(malformed, 2.0);
    rig.finish().await;
}

/// A backend that answers before it has read the request body (an early 413) gets its answer
/// to the client; the rest of the body is not sent on, and that connection is not reused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_before_the_body_is_done() {
    let backend = Backend::start(|head: &str| {
        if head.starts_with("post") {
            keep("HTTP/1.1 413 Content Too Large\r\ncontent-length: 8\r\n\r\ntoo much")
        } else {
            keep(OK)
        }
    })
    .await;
    let rig = start_rig(&backend, None).await;
    for proto in [Proto::H1, Proto::H2] {
        let before = backend.connections();
        let (tx, body) = client::channel_body();
        tx.send(Bytes::from(vec![b'x'; 16 * 1024])).await.unwrap();
        let mut c = Client::connect(rig.weir.http, proto).await;
        let req = c.response("POST", "/up", body, None);
        let resp = tokio::time::timeout(Duration::from_secs(10), req)
            .await
            .expect("the early answer arrives while the body is still open")
            .expect("a response");
        assert_eq!(resp.status(), 413, "{proto:?}");
        drop(tx);
        let mut c = Client::connect(rig.weir.http, proto).await;
        assert_eq!(c.get("/").await.text(), "ok");
        assert_eq!(
            backend.connections() - before,
            2,
            "{proto:?}: the interrupted connection was not reused"
        );
    }
    rig.finish().await;
}

/// The backend answers before reading the body, and its response body is still coming when
/// the rest of the request has gone out: the backend may never have read that rest, so the
/// connection is not kept for another request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_during_the_upload_retires_the_connection() {
    const HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-length: 4\r\n\r\n";
    let backend = Backend::start(|_| Answer {
        pause: Some((HEAD.len(), Duration::from_millis(300))),
        ..keep(&format!("{HEAD}done"))
    })
    .await;
    let rig = start_rig(&backend, None).await;
    for proto in [Proto::H1, Proto::H2] {
        let (tx, body) = client::channel_body();
        let half = Bytes::from(vec![b'x'; 16 * 1024]);
        tx.send(half.clone()).await.unwrap();
        let mut c = Client::connect(rig.weir.http, proto).await;
        let resp = c.response("POST", "/up", body, Some(32 * 1024));
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("the response head arrives while the body is still open")
            .expect("a response");
        assert_eq!(resp.status(), 200, "{proto:?}");
        // Now the rest of the request, while the response body is still on its way.
        tx.send(half).await.unwrap();
        drop(tx);
        let got = http_body_util::BodyExt::collect(resp.into_body()).await;
        assert_eq!(
            got.expect("the whole response").to_bytes(),
            "done",
            "{proto:?}"
        );
        let pools = rig.weir.pools().await;
        let idle = pools[0]["endpoints"][0]["h1_idle"].as_u64();
        assert_eq!(idle, Some(0), "{proto:?}: kept for reuse: {pools}");
        assert_eq!(backend.requests(), if proto == Proto::H1 { 1 } else { 2 });
    }
    rig.finish().await;
}

/// The pool's limits hold for HTTP/1.1 backends: `maxRequestsPerConnection` retires a
/// connection after its last request, `maxConnectionsPerEndpoint` makes requests wait for a
/// connection, and `idleTimeout` closes one that sat unused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pool_limits() {
    let backend = Backend::start(|head: &str| {
        if head.starts_with("get /slow") {
            Answer {
                delay: Duration::from_millis(150),
                ..keep(OK)
            }
        } else {
            keep(OK)
        }
    })
    .await;
    let policy = "connectionPool:\n  maxRequestsPerConnection: 3\n  maxConnectionsPerEndpoint: 2\n  idleTimeout: 1s";
    let rig = start_rig(&backend, Some(policy)).await;
    let mut c = Client::connect(rig.weir.http, Proto::H1).await;
    for _ in 0..9 {
        assert_eq!(c.get("/").await.text(), "ok");
    }
    assert_eq!(backend.connections(), 3, "three requests per connection");

    // Six slow requests at once, from six client connections: two at a time upstream. Each is
    // its client connection's first request, which under `safe` needs a connection of its own:
    // idle ones are closed to make room rather than left to hold the slots.
    let started = tokio::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let addr = rig.weir.http;
        tasks.push(tokio::spawn(async move {
            let mut c = Client::connect(addr, Proto::H1).await;
            c.get("/slow").await.status
        }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    assert_eq!(backend.most_in_flight(), 2, "maxConnectionsPerEndpoint");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "waiting requests got connections without waiting out idleTimeout: {:?}",
        started.elapsed()
    );
    let evicted = rig
        .metric(
            "weir_upstream_connections_closed_total",
            "reason=\"evicted\"",
        )
        .await;
    assert!(evicted >= 1.0, "evictions: {evicted}");

    // Unused for longer than idleTimeout (the sweep runs every second): closed.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while backend.open_now() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "idle connections stay open"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let idle = rig
        .metric(
            "weir_upstream_connections_closed_total",
            "reason=\"idle-timeout\"",
        )
        .await;
    assert!(idle >= 1.0, "idle-timeout closes: {idle}");
    rig.finish().await;
}

/// An attempt that gives up while its connection is still being opened (here the backend's
/// accept queue is full, so the connect hangs past `perTryTimeout`) gives its connection slot
/// back: once the backend accepts again, requests are served, with no slot lost under
/// `maxConnectionsPerEndpoint: 1`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abandoned_connects_give_their_slot_back() {
    // A listener with the smallest accept queue, filled by the test itself.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(1).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..2 {
        fillers.push(TcpStream::connect(addr).await.unwrap());
    }
    let backend = Backend {
        addr,
        connections: Arc::new(AtomicUsize::new(0)),
        requests: Arc::new(AtomicUsize::new(0)),
        open: Arc::new(AtomicUsize::new(0)),
        in_flight: Arc::new((AtomicUsize::new(0), AtomicUsize::new(0))),
    };
    let policy = "connectionPool:\n  maxConnectionsPerEndpoint: 1\nretry:\n  perTryTimeout: 200ms";
    let rig = start_rig(&backend, Some(policy)).await;
    for i in 0..3 {
        let mut c = Client::connect(rig.weir.http, Proto::H1).await;
        assert_eq!(
            c.get("/").await.status,
            504,
            "attempt {i} times out connecting"
        );
    }
    let cancelled = rig
        .metric(
            "weir_upstream_connections_closed_total",
            "reason=\"connect-cancelled\"",
        )
        .await;
    assert_eq!(cancelled, 3.0);
    // The backend comes back: accept everything (the fillers too) and answer.
    drop(fillers);
    let counts = Counts {
        requests: backend.requests.clone(),
        in_flight: backend.in_flight.clone(),
    };
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream, Arc::new(|_: &str| keep(OK)), counts.clone()));
        }
    });
    let mut c = Client::connect(rig.weir.http, Proto::H1).await;
    let r = c.get("/").await;
    assert_eq!((r.status.as_u16(), r.text().as_str()), (200, "ok"));
    rig.finish().await;
}

/// A client that goes away in the middle of its request body: the backend connection, which
/// carries half a request, is closed rather than kept, and the next request is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_mid_body_closes_the_backend_connection() {
    let backend = Backend::start(|_| keep(OK)).await;
    let rig = start_rig(&backend, None).await;
    let mut raw = TcpStream::connect(rig.weir.http).await.unwrap();
    let head =
        format!("POST /up HTTP/1.1\r\nhost: {HOST}\r\ncontent-length: 100\r\n\r\n0123456789");
    raw.write_all(head.as_bytes()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while backend.requests() == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the request reached the backend"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(raw);
    while backend.open_now() > 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the half-sent connection was closed"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pools = rig.weir.pools().await;
    assert_eq!(
        pools[0]["endpoints"][0]["h1_idle"].as_u64(),
        Some(0),
        "{pools}"
    );
    let mut c = Client::connect(rig.weir.http, Proto::H1).await;
    assert_eq!(c.get("/").await.text(), "ok");
    rig.finish().await;
}
