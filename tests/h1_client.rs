//! weir's own HTTP/1.1 server, seen from a raw TCP client that writes exact bytes, with a real
//! weir process proxying to a scripted raw HTTP/1.1 backend. Covers keep-alive and pipelining,
//! HTTP/1.0 connection handling, the request heads weir refuses (and that the backend never
//! sees them), chunked request bodies with trailers and broken ones, `Expect: 100-continue`
//! answered without a continue, HEAD, an early answer before a large request body, a client
//! leaving while the backend is still answering, the `Date` field, how a response body of
//! unknown length is framed for HTTP/1.1 and HTTP/1.0 clients, and requests that arrive byte
//! by byte or after an empty line.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::watch;
use weir_testkit::manifests::{docs, ingress, ingress_class, service};
use weir_testkit::{TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");
const HOST: &str = "app.example.com";
/// How long any one step may take.
const LIMIT: Duration = Duration::from_secs(10);

async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(LIMIT, f)
        .await
        .unwrap_or_else(|_| panic!("{what}: not done within {LIMIT:?}"))
}

/// `GET path` to HOST over HTTP/1.1.
fn get(path: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {HOST}\r\n\r\n")
}

fn ok(body: &str) -> String {
    format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
}

// ---------------------------------------------------------------------------------------------
// Bytes on a socket

/// A byte stream with a read buffer: heads, lines, exact lengths and chunked bodies.
struct Wire<R> {
    io: R,
    buf: Vec<u8>,
}

impl<R: AsyncRead + Unpin> Wire<R> {
    fn new(io: R) -> Self {
        Self {
            io,
            buf: Vec::new(),
        }
    }

    /// Reads more; false at the end of the stream (or on an error).
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match self.io.read(&mut chunk).await {
            Ok(0) | Err(_) => false,
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                true
            }
        }
    }

    /// Everything up to and including `delim`.
    async fn until(&mut self, delim: &[u8]) -> Option<Vec<u8>> {
        loop {
            if let Some(i) = self.buf.windows(delim.len()).position(|w| w == delim) {
                return Some(self.buf.drain(..i + delim.len()).collect());
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    async fn take(&mut self, n: usize) -> Option<Vec<u8>> {
        while self.buf.len() < n {
            if !self.fill().await {
                return None;
            }
        }
        Some(self.buf.drain(..n).collect())
    }

    /// Everything until the end of the stream.
    async fn rest(&mut self) -> Vec<u8> {
        while self.fill().await {}
        std::mem::take(&mut self.buf)
    }

    /// A chunked body: its data and its raw trailer section.
    async fn chunked(&mut self) -> Option<(Vec<u8>, String)> {
        let mut data = Vec::new();
        loop {
            let line = self.until(b"\r\n").await?;
            let line = String::from_utf8_lossy(&line[..line.len() - 2]).into_owned();
            let size = usize::from_str_radix(line.split(';').next()?.trim(), 16).ok()?;
            if size == 0 {
                break;
            }
            data.extend(self.take(size).await?);
            if self.take(2).await? != b"\r\n" {
                return None;
            }
        }
        let mut trailers = String::new();
        loop {
            let line = self.until(b"\r\n").await?;
            if line == b"\r\n" {
                return Some((data, trailers));
            }
            trailers.push_str(&String::from_utf8_lossy(&line));
        }
    }
}

/// The value of `name` in a lower-cased head.
fn field<'a>(head: &'a str, name: &str) -> Option<&'a str> {
    head.lines().skip(1).find_map(|l| {
        let (n, v) = l.split_once(':')?;
        (n == name).then(|| v.trim())
    })
}

// ---------------------------------------------------------------------------------------------
// The backend

/// One request as the backend received it.
#[derive(Debug, Clone)]
struct Seen {
    /// Request line and fields, lower-cased.
    head: String,
    body: Vec<u8>,
    /// A chunked body's trailer section, raw.
    trailers: String,
}

#[derive(Debug, Default)]
struct Log {
    connections: usize,
    /// Connections the backend saw closed (read the end of the stream on).
    closed: usize,
    requests: Vec<Seen>,
}

/// What the backend does with a request.
enum Answer {
    /// Reads the request body, then writes this.
    Reply(String),
    /// Reads the request body, then answers 200 with what arrived: `body|trailer section`.
    Report,
    /// Reads the request body, waits, then writes this.
    Later(Duration, String),
    /// Writes this at once without reading the request body, shuts its sending side, and
    /// never reads again: the lingering close of a server that will not read a body (it
    /// says `connection: close`, so the connection is not used again).
    Early(String),
    /// Reads the request body, writes this, then sends nothing more: reads until the
    /// connection closes.
    Stall(String),
}

/// The backend's behaviour, by method and path.
fn script(head: &str) -> Answer {
    let mut line = head.split_whitespace();
    let (method, path) = (line.next().unwrap_or(""), line.next().unwrap_or("/"));
    match (method, path) {
        ("head", _) => Answer::Reply("HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\n".into()),
        (_, "/slow") => Answer::Later(Duration::from_millis(300), ok(path)),
        (_, "/early") => Answer::Early(
            "HTTP/1.1 413 Content Too Large\r\ncontent-length: 8\r\nconnection: close\r\n\r\n\
             too much"
                .into(),
        ),
        (_, "/unknown-length") => Answer::Reply(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n\
             5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"
                .into(),
        ),
        (_, "/stall-head") => Answer::Stall(String::new()),
        (_, "/stall-body") => Answer::Stall(
            "HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n5\r\nfirst\r\n".into(),
        ),
        (_, "/received") => Answer::Report,
        (_, "/no-content") => Answer::Reply(
            "HTTP/1.1 204 No Content\r\ncontent-length: 7\r\nx-kept: 1\r\n\r\n".into(),
        ),
        _ => Answer::Reply(ok(path)),
    }
}

/// A raw HTTP/1.1 backend answering by [`script`] and logging what it saw.
struct Backend {
    addr: SocketAddr,
    log: Arc<watch::Sender<Log>>,
}

impl Backend {
    /// `receive_buffer`: a small socket receive buffer, so that little of a request body the
    /// backend does not read can go into its kernel's buffers.
    async fn start(receive_buffer: Option<u32>) -> Backend {
        let socket = TcpSocket::new_v4().expect("a socket");
        if let Some(size) = receive_buffer {
            socket.set_recv_buffer_size(size).expect("set SO_RCVBUF");
        }
        socket
            .bind("127.0.0.1:0".parse().unwrap())
            .expect("bind the backend");
        let listener = socket.listen(64).expect("listen");
        let addr = listener.local_addr().unwrap();
        let log = Arc::new(watch::Sender::new(Log::default()));
        let accepted = log.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                accepted.send_modify(|l| l.connections += 1);
                let log = accepted.clone();
                tokio::spawn(async move {
                    serve(Wire::new(stream), &log).await;
                    log.send_modify(|l| l.closed += 1);
                });
            }
        });
        Backend { addr, log }
    }

    fn requests(&self) -> Vec<Seen> {
        self.log.borrow().requests.clone()
    }

    fn heads(&self) -> Vec<String> {
        self.requests().into_iter().map(|s| s.head).collect()
    }

    fn connections(&self) -> usize {
        self.log.borrow().connections
    }

    /// Waits until the log satisfies `done`.
    async fn wait_for(&self, what: &str, done: impl FnMut(&Log) -> bool) {
        let mut rx = self.log.subscribe();
        let waited = tokio::time::timeout(LIMIT, rx.wait_for(done)).await;
        assert!(
            matches!(waited, Ok(Ok(_))),
            "backend: {what} not seen within {LIMIT:?}: {:?}",
            self.log.borrow()
        );
    }
}

/// Serves one connection until it closes.
async fn serve(mut wire: Wire<TcpStream>, log: &watch::Sender<Log>) {
    loop {
        let Some(head) = wire.until(b"\r\n\r\n").await else {
            return;
        };
        let head = String::from_utf8_lossy(&head).to_lowercase();
        let answer = script(&head);
        let mut seen = Seen {
            head,
            body: Vec::new(),
            trailers: String::new(),
        };
        if !matches!(answer, Answer::Early(_)) {
            if field(&seen.head, "transfer-encoding").is_some_and(|te| te.contains("chunked")) {
                let Some((body, trailers)) = wire.chunked().await else {
                    return;
                };
                (seen.body, seen.trailers) = (body, trailers);
            } else if let Some(n) = field(&seen.head, "content-length") {
                let Some(body) = wire.take(n.parse().expect("a length")).await else {
                    return;
                };
                seen.body = body;
            }
        }
        /// What the connection does once the answer is written.
        enum Then {
            NextRequest,
            /// Shut the sending side and never read again; the connection stays open until
            /// the test ends.
            Park,
            /// Read (and drop) until the connection closes.
            AwaitClose,
        }
        // Logged as received, before any answer (a slow one is in flight once it is seen).
        log.send_modify(|l| l.requests.push(seen.clone()));
        let (bytes, then) = match answer {
            Answer::Reply(b) => (b, Then::NextRequest),
            Answer::Report => {
                let body = String::from_utf8_lossy(&seen.body);
                (ok(&format!("{body}|{}", seen.trailers)), Then::NextRequest)
            }
            Answer::Later(delay, b) => {
                tokio::time::sleep(delay).await;
                (b, Then::NextRequest)
            }
            Answer::Early(b) => (b, Then::Park),
            Answer::Stall(b) => (b, Then::AwaitClose),
        };
        if wire.io.write_all(bytes.as_bytes()).await.is_err() {
            return;
        }
        match then {
            Then::NextRequest => {}
            Then::Park => {
                let _ = wire.io.shutdown().await;
                std::future::pending::<()>().await
            }
            Then::AwaitClose => {
                wire.rest().await;
                return;
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// weir and the client

struct Rig {
    weir: Weir,
    backend: Backend,
    _dir: TempDir,
}

impl Rig {
    /// weir routing HOST to a backend.
    async fn start() -> Rig {
        Self::with(Backend::start(None).await).await
    }

    async fn with(backend: Backend) -> Rig {
        let dir = TempDir::new("h1-client");
        dir.write(
            "all.yaml",
            &docs(&[
                ingress_class(),
                service("default", "app", None, &[backend.addr]),
                ingress("default", "app", HOST, "/", "Prefix", "app"),
            ]),
        );
        let weir = Weir::start(WEIR, dir.path(), &[]).await;
        Rig {
            weir,
            backend,
            _dir: dir,
        }
    }

    async fn connect(&self) -> Client {
        let stream = TcpStream::connect(self.weir.http)
            .await
            .expect("connect to weir");
        stream.set_nodelay(true).unwrap();
        let (read, write) = stream.into_split();
        Client {
            read: Wire::new(read),
            write,
        }
    }

    async fn finish(mut self) {
        self.weir.assert_settled(Duration::from_secs(5)).await;
        self.weir.assert_no_panic();
    }
}

/// A response as the client read it. Field names are lower-cased.
struct Response {
    status_line: String,
    fields: Vec<(String, String)>,
    body: Vec<u8>,
    /// A chunked body's trailer section, raw.
    trailers: String,
}

impl std::fmt::Debug for Response {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Response")
            .field("status_line", &self.status_line)
            .field("fields", &self.fields)
            .field("body", &self.text())
            .field("trailers", &self.trailers)
            .finish()
    }
}

impl Response {
    fn header(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every field but `Date`, in order.
    fn fields(&self) -> Vec<(&str, &str)> {
        self.fields
            .iter()
            .filter(|(n, _)| n != "date")
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect()
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn status(&self) -> u16 {
        let code = self.status_line.split(' ').nth(1);
        code.and_then(|c| c.parse().ok()).unwrap_or(0)
    }
}

/// How the client reads a response body.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reading {
    /// As the head frames it.
    Framed,
    /// None at all: the answer to a HEAD.
    Head,
}

impl Wire<OwnedReadHalf> {
    /// The status line and fields of the next response.
    async fn head(&mut self) -> Option<(String, Vec<(String, String)>)> {
        let raw = self.until(b"\r\n\r\n").await?;
        let text = String::from_utf8(raw).expect("a response head is text");
        let mut lines = text.split("\r\n");
        let status_line = lines.next()?.to_string();
        let fields = lines
            .filter(|l| !l.is_empty())
            .map(|l| {
                let (n, v) = l.split_once(':').expect("name: value");
                (n.to_ascii_lowercase(), v.trim().to_string())
            })
            .collect();
        Some((status_line, fields))
    }

    async fn response(&mut self, reading: Reading) -> Option<Response> {
        let (status_line, fields) = self.head().await?;
        let mut r = Response {
            status_line,
            fields,
            body: Vec::new(),
            trailers: String::new(),
        };
        if reading == Reading::Head || matches!(r.status(), 100..=199 | 204 | 304) {
            return Some(r);
        }
        if r.header("transfer-encoding") == Some("chunked") {
            (r.body, r.trailers) = self.chunked().await?;
        } else if let Some(n) = r.header("content-length") {
            r.body = self.take(n.parse().ok()?).await?;
        } else {
            r.body = self.rest().await;
        }
        Some(r)
    }
}

/// One client connection to weir.
struct Client {
    read: Wire<OwnedReadHalf>,
    write: OwnedWriteHalf,
}

impl Client {
    async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        within("writing to weir", self.write.write_all(bytes.as_ref()))
            .await
            .expect("write to weir");
    }

    async fn response(&mut self) -> Response {
        within("a response", self.read.response(Reading::Framed))
            .await
            .expect("a complete response before the connection closed")
    }

    async fn head_response(&mut self) -> Response {
        within("a response to HEAD", self.read.response(Reading::Head))
            .await
            .expect("a response head")
    }

    /// weir closed the connection, with nothing more after what was read.
    async fn assert_closed(&mut self) {
        let more = within("the close", self.read.rest()).await;
        assert_eq!(
            String::from_utf8_lossy(&more),
            "",
            "nothing after the response"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// The Date field

/// The response has one `Date`, of a second between `sent` and now.
fn assert_dated(r: &Response, sent: SystemTime) {
    let dates: Vec<&str> = r
        .fields
        .iter()
        .filter(|(n, _)| n == "date")
        .map(|(_, v)| v.as_str())
        .collect();
    assert_eq!(dates.len(), 1, "one Date: {r:?}");
    // An IMF-fixdate (RFC 9110 §5.6.7) of a second between the request and now.
    assert!(dates[0].ends_with(" GMT") && dates[0].len() == 29, "{r:?}");
    let date = httpdate::parse_http_date(dates[0]).unwrap_or_else(|e| panic!("{e}: {r:?}"));
    let floor = |t: SystemTime| t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    assert!(
        (floor(sent)..=floor(SystemTime::now())).contains(&floor(date)),
        "a current Date: {r:?}"
    );
}

// ---------------------------------------------------------------------------------------------
// Keep-alive and pipelining

/// Two requests, one after the other, on one connection: both answered, the connection kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keep_alive_serves_requests_one_after_another() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    for path in ["/one", "/two"] {
        c.send(get(path)).await;
        let r = c.response().await;
        assert_eq!(r.status_line, "HTTP/1.1 200 OK");
        assert_eq!(r.fields(), [("content-length", "4")], "{path}: kept open");
        assert_eq!(r.text(), path);
    }
    let heads = rig.backend.heads();
    assert_eq!(heads.len(), 2);
    assert!(heads[0].starts_with("get /one http/1.1\r\n"), "{heads:?}");
    assert!(heads[1].starts_with("get /two http/1.1\r\n"), "{heads:?}");
    rig.finish().await;
}

/// Two requests in one write, the first slow to answer: two responses, in request order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_are_answered_in_order() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.send(format!("{}{}", get("/slow"), get("/fast"))).await;
    let first = c.response().await;
    let second = c.response().await;
    assert_eq!(
        (first.status_line.as_str(), first.text().as_str()),
        ("HTTP/1.1 200 OK", "/slow")
    );
    assert_eq!(
        (second.status_line.as_str(), second.text().as_str()),
        ("HTTP/1.1 200 OK", "/fast")
    );
    let heads = rig.backend.heads();
    assert!(heads[0].starts_with("get /slow "), "{heads:?}");
    assert!(heads[1].starts_with("get /fast "), "{heads:?}");
    // And the connection still serves.
    c.send(get("/third")).await;
    assert_eq!(c.response().await.text(), "/third");
    rig.finish().await;
}

/// A pipelining client that shuts its sending side after its requests (`printf … | nc -N`):
/// every buffered request is answered, the last with `connection: close`, then the close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_requests_then_a_half_close_are_all_answered() {
    let rig = Rig::start().await;
    // A slow first answer (the close is read while requests are still buffered), and two
    // fast ones (it may be read only once the last request is being served).
    for (first, second) in [("/slow", "/fast"), ("/one", "/two")] {
        let mut c = rig.connect().await;
        c.send(format!("{}{}", get(first), get(second))).await;
        within("half-close", c.write.shutdown())
            .await
            .expect("shut the sending side");
        let r = c.response().await;
        assert_eq!(r.text(), first);
        let length = first.len().to_string();
        let more = [("content-length", length.as_str())];
        assert_eq!(r.fields(), more, "more is buffered");
        let r = c.response().await;
        assert_eq!(r.text(), second);
        let length = second.len().to_string();
        let last = [("content-length", length.as_str()), ("connection", "close")];
        assert_eq!(r.fields(), last);
        c.assert_closed().await;
    }
    rig.finish().await;
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.0

/// An HTTP/1.0 request without keep-alive: `connection: close`, then the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_without_keep_alive_is_closed_after_the_response() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.send(format!("GET /old HTTP/1.0\r\nHost: {HOST}\r\n\r\n"))
        .await;
    let r = c.response().await;
    assert_eq!(r.status_line, "HTTP/1.0 200 OK");
    assert_eq!(
        r.fields(),
        [("content-length", "4"), ("connection", "close")]
    );
    assert_eq!(r.text(), "/old");
    c.assert_closed().await;
    let heads = rig.backend.heads();
    assert!(
        heads[0].starts_with("get /old http/1.1\r\n"),
        "weir speaks HTTP/1.1 to the backend: {heads:?}"
    );
    rig.finish().await;
}

/// An HTTP/1.0 request with `Connection: keep-alive`: the response says `connection:
/// keep-alive`, and the connection carries the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http10_keep_alive_keeps_the_connection() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    for path in ["/one", "/two"] {
        c.send(format!(
            "GET {path} HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n"
        ))
        .await;
        let r = c.response().await;
        assert_eq!(r.status_line, "HTTP/1.0 200 OK");
        assert_eq!(
            r.fields(),
            [("content-length", "4"), ("connection", "keep-alive")],
            "{path}"
        );
        assert_eq!(r.text(), path);
    }
    // The last request does not ask for keep-alive: that one closes.
    c.send(format!("GET /end HTTP/1.0\r\nHost: {HOST}\r\n\r\n"))
        .await;
    assert_eq!(c.response().await.header("connection"), Some("close"));
    c.assert_closed().await;
    assert_eq!(rig.backend.requests().len(), 3);
    rig.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Refused heads

/// Heads weir refuses: the exact refusal, the connection closed after it (not reset: the
/// response is read whole), and the backend never sees the request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_and_unsupported_heads_are_refused_and_closed() {
    let huge_field = format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\nx-filler: {}\r\n\r\n",
        "a".repeat(70 * 1024)
    );
    let many_fields = format!(
        "GET / HTTP/1.1\r\nHost: {HOST}\r\n{}\r\n",
        (0..101)
            .map(|i| format!("x-f{i}: v\r\n"))
            .collect::<String>()
    );
    let cases: Vec<(&str, String, &str)> = vec![
        (
            "Content-Length with Transfer-Encoding",
            format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "400 Bad Request",
        ),
        (
            "a coding other than chunked",
            format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"),
            "501 Not Implemented",
        ),
        (
            "two Host fields",
            format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nHost: other.example.com\r\n\r\n"),
            "400 Bad Request",
        ),
        (
            "a head over 64 KiB",
            huge_field,
            "431 Request Header Fields Too Large",
        ),
        (
            "more than 100 fields",
            many_fields,
            "431 Request Header Fields Too Large",
        ),
        (
            "HTTP/2.0 on an HTTP/1 connection",
            format!("GET / HTTP/2.0\r\nHost: {HOST}\r\n\r\n"),
            "505 HTTP Version Not Supported",
        ),
        (
            "Transfer-Encoding in HTTP/1.0",
            format!("POST / HTTP/1.0\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"),
            "400 Bad Request",
        ),
        (
            "two different Content-Lengths",
            format!("POST / HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab"),
            "400 Bad Request",
        ),
        (
            "a field line without a colon",
            format!("GET / HTTP/1.1\r\nHost: {HOST}\r\nno colon here\r\n\r\n"),
            "400 Bad Request",
        ),
    ];
    let rig = Rig::start().await;
    for (what, request, status) in cases {
        let mut c = rig.connect().await;
        let sent = SystemTime::now();
        c.send(&request).await;
        let r = c.response().await;
        assert_eq!(r.status_line, format!("HTTP/1.1 {status}"), "{what}");
        assert_eq!(
            r.fields(),
            [("content-length", "0"), ("connection", "close")],
            "{what}"
        );
        assert_dated(&r, sent);
        c.assert_closed().await;
    }
    assert_eq!(rig.backend.heads(), Vec::<String>::new());
    assert_eq!(
        rig.backend.connections(),
        0,
        "weir never went to the backend"
    );
    rig.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Request and response bodies

/// A chunked request body sent in pieces (a chunk extension, a trailer section) reaches the
/// backend whole, chunked, with its trailers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunked_request_body_and_trailers_reach_the_backend() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    let long = "x".repeat(0x1a);
    let pieces = [
        format!("POST /received HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n"),
        "5\r\nhello\r\n".to_string(),
        "6;ext=1\r\n world\r\n".to_string(),
        format!("1A\r\n{long}\r\n"),
        "0\r\nx-checksum: 42\r\nx-other: y\r\n\r\n".to_string(),
    ];
    for piece in &pieces {
        c.send(piece).await;
    }
    let r = c.response().await;
    let body = format!("hello world{long}");
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(
        r.text(),
        format!("{body}|x-checksum: 42\r\nx-other: y\r\n"),
        "what the backend received"
    );
    let seen = &rig.backend.requests()[0];
    assert_eq!(field(&seen.head, "transfer-encoding"), Some("chunked"));
    assert_eq!(field(&seen.head, "content-length"), None);
    assert_eq!(String::from_utf8_lossy(&seen.body), body);
    assert_eq!(seen.trailers, "x-checksum: 42\r\nx-other: y\r\n");
    // The whole body was read: the connection carries the next request.
    c.send(get("/next")).await;
    assert_eq!(c.response().await.text(), "/next");
    rig.finish().await;
}

/// `Content-Length: 5, 5` (one length, repeated) is accepted and goes to the backend as one
/// plain value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repeated_length_reaches_the_backend_as_one_value() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.send(format!(
        "POST /received HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5, 5\r\n\r\nhello"
    ))
    .await;
    assert_eq!(c.response().await.text(), "hello|");
    let seen = &rig.backend.requests()[0];
    assert_eq!(field(&seen.head, "content-length"), Some("5"), "{seen:?}");
    rig.finish().await;
}

/// A 204 never carries Content-Length to the client, even when the backend sent one; the
/// connection carries the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_content_drops_a_content_length() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.send(get("/no-content")).await;
    let r = c.head_response().await;
    assert_eq!(r.status_line, "HTTP/1.1 204 No Content");
    assert_eq!(r.fields(), [("x-kept", "1")]);
    c.send(get("/after")).await;
    assert_eq!(c.response().await.text(), "/after");
    rig.finish().await;
}

/// A chunked request body that breaks the coding (a chunk size that is not hex) after some
/// valid data, followed by what looks like a request.
fn broken_chunked_body() -> String {
    format!(
        "POST /received HTTP/1.1\r\nHost: {HOST}\r\nTransfer-Encoding: chunked\r\n\r\n\
         5\r\nhello\r\nzz\r\nGET /smuggled HTTP/1.1\r\nHost: {HOST}\r\n\r\n"
    )
}

/// After a broken chunked body, where the next request would start is unknown: the response
/// says `connection: close`, the connection closes, and nothing after the break reaches the
/// backend as a request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunked_request_body_closes_the_connection() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.send(broken_chunked_body()).await;
    let r = c.response().await;
    c.assert_closed().await;
    let heads = rig.backend.heads();
    assert!(
        heads.iter().all(|h| !h.contains("/smuggled")),
        "nothing after the broken body is a request: {heads:?}"
    );
    assert_eq!(
        r.header("connection"),
        Some("close"),
        "the response announces the close: {r:?}"
    );
    rig.finish().await;
}

/// A broken chunked body is the client's fault: 400, as for any malformed request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_chunked_request_body_is_answered_400() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.send(broken_chunked_body()).await;
    let r = c.response().await;
    assert_eq!(r.status(), 400, "{r:?}");
    rig.finish().await;
}

/// A final answer to `Expect: 100-continue` before the body was asked for (here weir's own
/// 404): the server "SHOULD indicate whether it intends to close the connection or continue
/// reading" (RFC 9110 §10.1.1). weir closes, so the response says `connection: close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answer_without_100_continue_announces_the_close() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.send(
        "POST / HTTP/1.1\r\nHost: nowhere.example.com\r\nContent-Length: 5\r\n\
         Expect: 100-continue\r\n\r\n",
    )
    .await;
    let r = c.response().await;
    assert_eq!(r.status_line, "HTTP/1.1 404 Not Found");
    c.assert_closed().await;
    assert_eq!(r.header("connection"), Some("close"), "{r:?}");
    rig.finish().await;
}

/// An empty line before a request line is ignored (RFC 9112 §2.2), as some clients send one
/// after a request body.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_line_before_the_request_line_is_ignored() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.send(format!(
        "POST /received HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 2\r\n\r\nhi\r\n"
    ))
    .await;
    assert_eq!(c.response().await.text(), "hi|");
    c.send(get("/next")).await;
    let r = c.response().await;
    assert_eq!(
        (r.status_line.as_str(), r.text().as_str()),
        ("HTTP/1.1 200 OK", "/next")
    );
    rig.finish().await;
}

/// The answer to HEAD keeps the backend's Content-Length and has no body: the very next
/// bytes on the connection are the next response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn head_response_has_the_length_but_no_body() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.send(format!("HEAD /doc HTTP/1.1\r\nHost: {HOST}\r\n\r\n"))
        .await;
    let r = c.head_response().await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.fields(), [("content-length", "100")]);
    c.send(get("/after")).await;
    let next = c.response().await;
    assert_eq!(
        (next.status_line.as_str(), next.text().as_str()),
        ("HTTP/1.1 200 OK", "/after"),
        "no body bytes came between the HEAD response and this one"
    );
    assert!(rig.backend.heads()[0].starts_with("head /doc http/1.1\r\n"));
    rig.finish().await;
}

/// The backend answers 413 at once and never reads the 16 MiB request body: its receive
/// buffer is small, so at most weir's send buffer (4 MiB at most on Linux) of the body can
/// go towards it. weir forwards the answer, reads and drops the rest of the body, and the
/// same client connection serves the next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_answer_then_the_connection_serves_the_next_request() {
    const LEN: usize = 16 * 1024 * 1024;
    let rig = Rig::with(Backend::start(Some(4096)).await).await;
    let mut c = rig.connect().await;
    let head = format!("POST /early HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: {LEN}\r\n\r\n");
    c.send(head).await;
    let body = vec![b'x'; LEN];
    let (written, r) = within("the upload and the early answer", async {
        tokio::join!(c.write.write_all(&body), c.read.response(Reading::Framed))
    })
    .await;
    written.expect("the body went out");
    let r = r.expect("the early answer");
    // weir writes the canonical reason phrase of the status, not the backend's.
    assert_eq!(r.status(), 413, "{r:?}");
    assert_eq!(r.fields(), [("content-length", "8")], "kept alive");
    assert_eq!(r.text(), "too much");
    // Answered only if weir read the whole megabyte off the connection to find this head.
    c.send(get("/after")).await;
    let next = c.response().await;
    assert_eq!(
        (next.status_line.as_str(), next.text().as_str()),
        ("HTTP/1.1 200 OK", "/after")
    );
    let heads = rig.backend.heads();
    assert_eq!(heads.len(), 2, "{heads:?}");
    assert!(heads[0].starts_with("post /early "), "{heads:?}");
    assert!(heads[1].starts_with("get /after "), "{heads:?}");
    rig.finish().await;
}

/// A response body of unknown length goes to an HTTP/1.1 client chunked, and the connection
/// stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_length_is_chunked_for_http11() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.send(get("/unknown-length")).await;
    let r = c.response().await;
    assert_eq!(r.status_line, "HTTP/1.1 200 OK");
    assert_eq!(r.fields(), [("transfer-encoding", "chunked")]);
    assert_eq!(r.text(), "hello world");
    assert_eq!(r.trailers, "");
    c.send(get("/next")).await;
    assert_eq!(c.response().await.text(), "/next");
    rig.finish().await;
}

/// The same body to an HTTP/1.0 client, even one asking for keep-alive, is delimited by
/// the close of the connection: no length, no chunking, `connection: close`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_length_is_close_delimited_for_http10() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.send(format!(
        "GET /unknown-length HTTP/1.0\r\nHost: {HOST}\r\nConnection: keep-alive\r\n\r\n"
    ))
    .await;
    let r = c.response().await;
    assert_eq!(r.status_line, "HTTP/1.0 200 OK");
    assert_eq!(r.fields(), [("connection", "close")]);
    assert_eq!(r.text(), "hello world", "the body ran to the close");
    rig.finish().await;
}

/// Proxied answers and weir's own (a 404 for an unknown host) carry one current `Date`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_carry_a_date() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    let sent = SystemTime::now();
    c.send(get("/dated")).await;
    let proxied = c.response().await;
    assert_eq!(proxied.text(), "/dated");
    assert_dated(&proxied, sent);
    c.send("GET / HTTP/1.1\r\nHost: nowhere.example.com\r\n\r\n")
        .await;
    let own = c.response().await;
    assert_eq!(own.status_line, "HTTP/1.1 404 Not Found");
    assert_dated(&own, sent);
    rig.finish().await;
}

/// A request whose bytes arrive one by one (the first one could still start the HTTP/2
/// preface) is served like any other.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_trickled_byte_by_byte_is_served() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    let request =
        format!("POST /received HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 5\r\n\r\nhello");
    for byte in request.as_bytes() {
        c.send([*byte]).await;
    }
    let r = c.response().await;
    assert_eq!(
        (r.status_line.as_str(), r.text().as_str()),
        ("HTTP/1.1 200 OK", "hello|")
    );
    rig.finish().await;
}

// ---------------------------------------------------------------------------------------------
// The client leaving

/// The client closes while the backend has not answered yet: weir drops the request, and the
/// backend sees its connection closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_before_the_response_closes_the_backend_connection() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.send(get("/stall-head")).await;
    rig.backend
        .wait_for("the request", |l| l.requests.len() == 1)
        .await;
    drop(c);
    rig.backend
        .wait_for("the connection closed", |l| l.closed == 1)
        .await;
    rig.finish().await;
}

/// The client closes while the response body is still coming (the backend sent its head and
/// one chunk and then nothing): weir drops the response, and the backend sees its connection
/// closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_leaving_during_the_response_body_closes_the_backend_connection() {
    let rig = Rig::start().await;
    let mut c = rig.connect().await;
    c.send(get("/stall-body")).await;
    let (status_line, _) = within("the response head", c.read.head())
        .await
        .expect("a response head");
    assert_eq!(status_line, "HTTP/1.1 200 OK");
    within("the first chunk", c.read.until(b"5\r\nfirst\r\n"))
        .await
        .expect("the first chunk");
    drop(c);
    rig.backend
        .wait_for("the connection closed", |l| l.closed == 1)
        .await;
    rig.finish().await;
}

// ---------------------------------------------------------------------------------------------
// Drain

/// SIGTERM: an idle keep-alive connection is closed at once; a request in flight is answered
/// with `connection: close`, then its connection closes; weir exits long before the drain
/// timeout, as no connection is left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_closes_idle_connections_and_answers_busy_ones_with_close() {
    let mut rig = Rig::start().await;
    let mut idle = rig.connect().await;
    idle.send(get("/before")).await;
    assert_eq!(idle.response().await.text(), "/before");
    let mut busy = rig.connect().await;
    busy.send(get("/slow")).await;
    rig.backend
        .wait_for("the slow request", |l| l.requests.len() == 2)
        .await;
    let start = std::time::Instant::now();
    rig.weir.terminate();
    idle.assert_closed().await;
    let r = busy.response().await;
    assert_eq!(r.text(), "/slow");
    assert_eq!(
        r.fields(),
        [("content-length", "5"), ("connection", "close")]
    );
    busy.assert_closed().await;
    let status = within("weir's exit", rig.weir.child.wait())
        .await
        .expect("weir's exit status");
    assert!(status.success(), "exit status {status}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "exited when the connections were done, not at the drain timeout: {:?}",
        start.elapsed()
    );
}
