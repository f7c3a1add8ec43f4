//! weir's HTTP/2 server against a hand-written client that misbehaves frame by frame: slow
//! readers, floods, resets weir is made to send, frames in flight on streams weir reset,
//! END_STREAM at a zero window, memory held by small frames, and the graceful drain. Each
//! case failed against the first version of the server.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use weir_testkit::manifests::{docs, ingress, ingress_class, service};
use weir_testkit::{Backend, TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");
const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

#[derive(Debug, Clone)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len();
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

fn settings(s: &[(u16, u32)]) -> Vec<u8> {
    let mut p = Vec::new();
    for (id, v) in s {
        p.extend_from_slice(&id.to_be_bytes());
        p.extend_from_slice(&v.to_be_bytes());
    }
    frame(4, 0, 0, &p)
}

fn block(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut b = Vec::new();
    for (n, v) in fields {
        b.push(0);
        b.push(n.len() as u8);
        b.extend_from_slice(n.as_bytes());
        b.push(v.len() as u8);
        b.extend_from_slice(v.as_bytes());
    }
    b
}

fn request(id: u32, method: &str, path: &str, end: bool) -> Vec<u8> {
    let b = block(&[
        (":method", method),
        (":scheme", "http"),
        (":authority", "app.example.com"),
        (":path", path),
    ]);
    frame(1, 0x4 | if end { 1 } else { 0 }, id, &b)
}

fn trailers(id: u32) -> Vec<u8> {
    frame(1, 0x5, id, &block(&[("x-trailer", "1")]))
}

fn window_update(id: u32, inc: u32) -> Vec<u8> {
    frame(8, 0, id, &inc.to_be_bytes())
}

fn rst(id: u32, code: u32) -> Vec<u8> {
    frame(3, 0, id, &code.to_be_bytes())
}

async fn read_frames(mut r: OwnedReadHalf, tx: mpsc::UnboundedSender<Frame>) {
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 65536];
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            let f = Frame {
                kind: buf[3],
                flags: buf[4],
                stream: u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]) & 0x7fff_ffff,
                payload: buf[9..9 + len].to_vec(),
            };
            buf.drain(..9 + len);
            if tx.send(f).is_err() {
                return;
            }
        }
    }
}

struct Client {
    w: OwnedWriteHalf,
    rx: mpsc::UnboundedReceiver<Frame>,
    seen: Vec<Frame>,
}

impl Client {
    async fn connect(addr: SocketAddr, s: &[(u16, u32)]) -> Client {
        let sock = TcpStream::connect(addr).await.expect("connect");
        sock.set_nodelay(true).ok();
        let (r, mut w) = sock.into_split();
        let mut hello = PREFACE.to_vec();
        hello.extend(settings(s));
        w.write_all(&hello).await.expect("preface");
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(read_frames(r, tx));
        Client {
            w,
            rx,
            seen: Vec::new(),
        }
    }

    /// Writes `bytes`; false once weir closed the connection.
    async fn send(&mut self, bytes: &[u8]) -> bool {
        self.w.write_all(bytes).await.is_ok()
    }

    /// Waits up to `limit` for a frame matching `pred`; all frames are kept in `seen`.
    async fn wait(&mut self, limit: Duration, pred: impl Fn(&Frame) -> bool) -> Option<Frame> {
        if let Some(f) = self.seen.iter().find(|f| pred(f)) {
            return Some(f.clone());
        }
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(f)) => {
                    self.seen.push(f.clone());
                    if pred(&f) {
                        return Some(f);
                    }
                }
                _ => return None,
            }
        }
    }
}

fn goaway(f: &Frame) -> bool {
    f.kind == 7
}

fn code(f: &Frame) -> u32 {
    let p = if f.kind == 7 {
        &f.payload[4..8]
    } else {
        &f.payload[..4]
    };
    u32::from_be_bytes([p[0], p[1], p[2], p[3]])
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat");
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    ticks / 100.0
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

async fn weir_for(endpoint: SocketAddr, proto: Option<&str>, tag: &str) -> (Weir, TempDir) {
    let dir = TempDir::new(tag);
    dir.write(
        "all.yaml",
        &docs(&[
            ingress_class(),
            service("default", "app", proto, &[endpoint]),
            ingress("default", "app", "app.example.com", "/", "Prefix", "app"),
        ]),
    );
    let weir = Weir::start(WEIR, dir.path(), &[]).await;
    (weir, dir)
}

/// A client that opens its windows wide and then stops reading the socket: the connection
/// task should sleep on the socket, not spin.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_does_not_make_weir_spin() {
    let backend = Backend::local("b").await;
    let (weir, _dir) = weir_for(backend.addr, None, "h2s-spin").await;
    let pid = weir.child.id().unwrap();
    let sock = TcpStream::connect(weir.http).await.unwrap();
    let (_r, mut w) = sock.into_split();
    let mut hello = PREFACE.to_vec();
    hello.extend(settings(&[(4, 0x7fff_ffff)]));
    hello.extend(window_update(0, 0x7fff_ffff - 65_535));
    hello.extend(frame(4, 1, 0, &[]));
    hello.extend(request(1, "GET", "/bytes/500000000", true));
    w.write_all(&hello).await.unwrap();
    // Never read: let the socket buffers and weir's write buffer fill.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = cpu_seconds(pid);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let used = cpu_seconds(pid) - before;
    assert!(
        used < 0.5,
        "weir spun: {used:.2}s CPU in 3 s with a client that does not read"
    );
}

/// Trailers the client sent before it saw weir's RST_STREAM must be ignored (RFC 9113
/// §5.1), not end the whole connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_in_flight_on_a_stream_weir_reset_are_ignored() {
    let backend = Backend::local("b").await;
    let (weir, _dir) = weir_for(backend.addr, None, "h2s-trailers").await;
    let mut c = Client::connect(weir.http, &[]).await;
    c.send(&frame(4, 1, 0, &[])).await;
    // A slow request on stream 1 that is still in flight.
    c.send(&request(1, "GET", "/slow/1500", true)).await;
    // Stream 3: a POST with a body still coming; weir resets it (here: a zero WINDOW_UPDATE).
    c.send(&request(3, "POST", "/status/200", false)).await;
    c.send(&frame(0, 0, 3, b"hello")).await;
    c.send(&window_update(3, 0)).await;
    let r = c
        .wait(Duration::from_secs(3), |f| f.kind == 3 && f.stream == 3)
        .await;
    assert!(r.is_some());
    // The client's trailers for stream 3, already in flight when the RST arrived.
    c.send(&trailers(3)).await;
    let g = c.wait(Duration::from_secs(3), goaway).await;
    let done1 = c
        .wait(Duration::from_secs(3), |f| {
            f.stream == 1 && f.flags & 1 == 1 && (f.kind == 0 || f.kind == 1)
        })
        .await;
    assert!(
        g.is_none(),
        "weir closed the connection with GOAWAY code {}",
        code(&g.unwrap())
    );
    assert!(done1.is_some(), "stream 1 was lost");
}

/// The same for the early-response path (RST_STREAM(NO_ERROR) after the response).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_after_early_response() {
    let backend = Backend::local("b").await;
    let (weir, _dir) = weir_for(backend.addr, Some("kubernetes.io/h2c"), "h2s-early").await;
    let mut c = Client::connect(weir.http, &[]).await;
    c.send(&frame(4, 1, 0, &[])).await;
    c.send(&request(1, "GET", "/slow/1500", true)).await;
    c.send(&request(3, "POST", "/status/200", false)).await;
    c.send(&frame(0, 0, 3, b"hello")).await;
    let r = c
        .wait(Duration::from_secs(3), |f| f.kind == 3 && f.stream == 3)
        .await;
    assert_eq!(
        r.as_ref().map(code),
        Some(0),
        "the early response ends with RST_STREAM(NO_ERROR)"
    );
    c.send(&frame(0, 0, 3, b"more")).await;
    c.send(&trailers(3)).await;
    let g = c.wait(Duration::from_secs(3), goaway).await;
    assert!(
        g.is_none(),
        "weir closed the connection with GOAWAY code {}",
        code(&g.unwrap())
    );
}

/// "MadeYouReset": streams that weir itself resets because of the client's frames (here a
/// WINDOW_UPDATE of 0) count against the rapid-reset limit like the client's own resets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resets_weir_is_made_to_send_count_against_the_rapid_reset_guard() {
    let backend = Backend::local("b").await;
    let (weir, _dir) = weir_for(backend.addr, Some("kubernetes.io/h2c"), "h2s-myr").await;
    let mut c = Client::connect(weir.http, &[]).await;
    c.send(&frame(4, 1, 0, &[])).await;
    let mut id = 1;
    for _round in 0..6 {
        let first = id;
        let mut out = Vec::new();
        for _ in 0..100 {
            out.extend(request(id, "GET", "/slow/20000", true));
            id += 2;
        }
        c.send(&out).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut out = Vec::new();
        let mut s = first;
        while s < id {
            out.extend(window_update(s, 0));
            s += 2;
        }
        c.send(&out).await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let g = c.wait(Duration::from_secs(1), goaway).await;
    let hits = backend.hits();
    assert_eq!(
        g.as_ref().map(code),
        Some(0xb),
        "600 resets weir was made to send and no ENHANCE_YOUR_CALM; the backend saw {hits} requests"
    );
}

/// Client resets of streams in progress are stopped after 200 (rapid reset).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_resets_are_limited() {
    let backend = Backend::local("b").await;
    let (weir, _dir) = weir_for(backend.addr, Some("kubernetes.io/h2c"), "h2s-rr").await;
    let mut c = Client::connect(weir.http, &[]).await;
    c.send(&frame(4, 1, 0, &[])).await;
    let mut id = 1;
    for _round in 0..6 {
        let first = id;
        let mut out = Vec::new();
        for _ in 0..100 {
            out.extend(request(id, "GET", "/slow/20000", true));
            id += 2;
        }
        if c.w.write_all(&out).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        let mut out = Vec::new();
        let mut s = first;
        while s < id {
            out.extend(rst(s, 8));
            s += 2;
        }
        if c.w.write_all(&out).await.is_err() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let g = c.wait(Duration::from_secs(1), goaway).await;
    assert_eq!(g.map(|g| code(&g)), Some(0xb));
}

/// END_STREAM (an empty DATA frame) and trailers need no flow-control window: a response
/// whose data used the window up exactly still ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn end_of_stream_does_not_wait_for_window_it_does_not_need() {
    let backend = Backend::local("b").await;
    let (weir, _dir) = weir_for(backend.addr, None, "h2s-endwin").await;
    let mut c = Client::connect(weir.http, &[(4, 16_384)]).await;
    c.send(&frame(4, 1, 0, &[])).await;
    c.send(&request(1, "GET", "/bytes/16384", true)).await;
    let end = c
        .wait(Duration::from_secs(3), |f| {
            f.stream == 1 && f.flags & 1 == 1 && (f.kind == 0 || f.kind == 1)
        })
        .await;
    let got: usize = c
        .seen
        .iter()
        .filter(|f| f.stream == 1 && f.kind == 0)
        .map(|f| f.payload.len())
        .sum();
    assert_eq!(got, 16_384);
    assert!(
        end.is_some(),
        "all 16384 bytes arrived but END_STREAM waits for window"
    );
}

/// Frames the RFC tells a server to tolerate (WINDOW_UPDATE on a recently closed stream) do
/// not count towards the flood limit, however long the connection lives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tolerated_frames_do_not_end_a_long_lived_connection() {
    let backend = Backend::local("b").await;
    let (weir, _dir) = weir_for(backend.addr, None, "h2s-useless").await;
    let mut c = Client::connect(weir.http, &[]).await;
    c.send(&frame(4, 1, 0, &[])).await;
    let mut id = 1u32;
    for _ in 0..200 {
        c.send(&request(id, "GET", "/status/200", true)).await;
        let want = id;
        if c.wait(Duration::from_secs(5), move |f| {
            (f.stream == want && f.flags & 1 == 1) || f.kind == 7
        })
        .await
        .map(|f| f.kind)
            != Some(1)
            && c.seen.iter().any(goaway)
        {
            let g = c.seen.iter().find(|f| goaway(f)).unwrap();
            panic!(
                "request {} (after {} tolerated WINDOW_UPDATEs on closed streams): GOAWAY code {}",
                id / 2 + 1,
                (id / 2) * 51,
                code(g)
            );
        }
        // A WINDOW_UPDATE per stream after its end, as some clients send when the app reads.
        let mut out = Vec::new();
        for _ in 0..51 {
            out.extend(window_update(id, 1000));
        }
        c.send(&out).await;
        id += 2;
    }
    let g = c.wait(Duration::from_secs(1), goaway).await;
    assert!(g.is_none());
}

/// A flood of connection WINDOW_UPDATEs costs about as much with 150 responses waiting as
/// with none: only streams the connection window stopped are looked at again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_update_flood_costs_no_more_with_streams_open() {
    let backend = Backend::local("b").await;
    let (weir, _dir) = weir_for(backend.addr, Some("kubernetes.io/h2c"), "h2s-wuflood").await;
    let pid = weir.child.id().unwrap();
    let mut costs = Vec::new();
    for streams in [0u32, 150] {
        let mut c = Client::connect(weir.http, &[(4, 0)]).await;
        c.send(&frame(4, 1, 0, &[])).await;
        let mut out = Vec::new();
        for i in 0..streams {
            out.extend(request(1 + 2 * i, "GET", "/bytes/1000000", true));
        }
        c.send(&out).await;
        if streams > 0 {
            let last = 1 + 2 * (streams - 1);
            c.wait(Duration::from_secs(10), move |f| {
                f.kind == 1 && f.stream == last
            })
            .await
            .expect("heads");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        let flood: Vec<u8> = (0..200_000).flat_map(|_| window_update(0, 1)).collect();
        let before = cpu_seconds(pid);
        let t = Instant::now();
        c.send(&flood).await;
        c.send(&frame(6, 0, 0, b"pingpong")).await;
        c.wait(Duration::from_secs(60), |f| f.kind == 6 && f.flags & 1 == 1)
            .await
            .expect("ping ack");
        let used = cpu_seconds(pid) - before;
        costs.push((used, t.elapsed()));
    }
    let (none, many) = (costs[0].0, costs[1].0);
    assert!(
        many < 4.0 * none + 0.5,
        "200k connection WINDOW_UPDATEs: {none:.2}s CPU with no stream open, {many:.2}s with 150"
    );
}

/// Small DATA frames waiting to be read do not keep whole read buffers alive: memory stays
/// near the bytes held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn small_data_frames_do_not_pin_read_buffers() {
    // An h2c "backend" that takes the request but gives no window for its body.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut out = settings(&[(4, 0), (3, 1000)]);
                out.extend(frame(4, 1, 0, &[]));
                let _ = s.write_all(&out).await;
                let mut buf = vec![0u8; 65536];
                while let Ok(n) = s.read(&mut buf).await {
                    if n == 0 {
                        break;
                    }
                }
            });
        }
    });
    let (weir, _dir) = weir_for(addr, Some("kubernetes.io/h2c"), "h2s-pin").await;
    let pid = weir.child.id().unwrap();
    let mut c = Client::connect(weir.http, &[]).await;
    c.send(&frame(4, 1, 0, &[])).await;
    let streams = 5u32;
    for i in 0..streams {
        c.send(&request(1 + 2 * i, "POST", "/upload", false)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss0 = rss_kib(pid);
    let size = 1024;
    let payload = vec![b'x'; size];
    let filler: Vec<u8> = (0..1700).flat_map(|_| frame(4, 0, 0, &[])).collect();
    let mut sent = 0usize;
    // 3.9 MB of body in 1 KiB frames (under the 4 MiB connection window, 1 MiB per stream).
    for k in 0..3800u32 {
        let id = 1 + 2 * (k % streams);
        let mut out = frame(0, 0, id, &payload);
        out.extend_from_slice(&filler);
        c.send(&out).await;
        sent += size;
        if k % 200 == 0 {
            // Keep up with the SETTINGS ACKs.
            while let Ok(f) = c.rx.try_recv() {
                if f.kind != 4 {
                    c.seen.push(f);
                }
            }
        }
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    while let Ok(f) = c.rx.try_recv() {
        if f.kind != 4 {
            c.seen.push(f);
        }
    }
    let rss1 = rss_kib(pid);
    let grown = rss1.saturating_sub(rss0);
    assert!(
        grown < 3 * (sent as u64 / 1024),
        "{} KiB of body held took {grown} KiB of memory",
        sent / 1024
    );
}

/// A stream weir refused (over MAX_CONCURRENT_STREAMS) is remembered as reset by weir: the
/// body and trailers the client still sends on it are ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn trailers_on_a_refused_stream_are_ignored() {
    let backend = Backend::local("b").await;
    let (weir, _dir) = weir_for(backend.addr, Some("kubernetes.io/h2c"), "h2s-refused").await;
    let mut c = Client::connect(weir.http, &[]).await;
    c.send(&frame(4, 1, 0, &[])).await;
    let mut out = Vec::new();
    for i in 0..257u32 {
        out.extend(request(1 + 2 * i, "POST", "/slow/3000", false));
    }
    c.send(&out).await;
    let refused = 1 + 2 * 256;
    let r = c
        .wait(Duration::from_secs(3), move |f| {
            f.kind == 3 && f.stream == refused
        })
        .await;
    assert_eq!(r.as_ref().map(code), Some(7), "the 257th stream is refused");
    c.send(&frame(0, 0, refused, b"body")).await;
    c.send(&trailers(refused)).await;
    let g = c.wait(Duration::from_secs(3), goaway).await;
    assert!(g.is_none(), "GOAWAY {:?}", g.as_ref().map(code));
    let resets = c
        .seen
        .iter()
        .filter(|f| f.kind == 3 && f.stream == refused)
        .count();
    assert_eq!(
        resets, 1,
        "the stream's body and trailers are ignored, not reset again"
    );
}

/// Graceful drain: GOAWAY, the in-flight stream completes, the connection closes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_answers_what_goaway_names_and_closes() {
    let backend = Backend::local("b").await;
    let (weir, _dir) = weir_for(backend.addr, None, "h2s-drain").await;
    let mut c = Client::connect(weir.http, &[]).await;
    c.send(&frame(4, 1, 0, &[])).await;
    c.send(&request(1, "GET", "/slow/1500", true)).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    weir.terminate();
    let g = c
        .wait(Duration::from_secs(3), goaway)
        .await
        .expect("GOAWAY");
    assert_eq!(
        &g.payload[..8],
        &[0, 0, 0, 1, 0, 0, 0, 0],
        "last-stream-id 1, NO_ERROR"
    );
    c.send(&request(3, "GET", "/status/200", true)).await;
    let done = c
        .wait(Duration::from_secs(5), |f| {
            f.stream == 1 && f.flags & 1 == 1
        })
        .await;
    assert!(done.is_some(), "stream 1 is answered");
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(f) = c.rx.recv().await {
            c.seen.push(f);
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the connection closes once stream 1 is done"
    );
    assert!(
        !c.seen.iter().any(|f| f.stream == 3),
        "stream 3, opened after the GOAWAY, is not answered"
    );
}

/// A client's GOAWAY, even with an error code weir does not know, changes nothing (RFC 9113
/// §7): weir opens no streams for it to refuse, and keeps answering the client's frames and
/// requests until the client closes. Failed once: weir closed as soon as it had nothing to
/// answer, so a PING after the GOAWAY was answered only if it arrived in the same read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_goaway_with_an_unknown_code_keeps_the_connection() {
    let backend = Backend::local("b").await;
    let (weir, _dir) = weir_for(backend.addr, None, "h2s-client-goaway").await;
    let mut c = Client::connect(weir.http, &[]).await;
    c.send(&frame(4, 1, 0, &[])).await;
    let mut goaway_ff = 0u32.to_be_bytes().to_vec();
    goaway_ff.extend_from_slice(&0xffu32.to_be_bytes());
    c.send(&frame(7, 0, 0, &goaway_ff)).await;
    c.send(&frame(6, 0, 0, b"after-ga")).await;
    let ack = c
        .wait(Duration::from_secs(3), |f| f.kind == 6 && f.flags & 1 == 1)
        .await;
    assert_eq!(
        ack.map(|f| f.payload),
        Some(b"after-ga".to_vec()),
        "the PING after the GOAWAY is answered"
    );
    // Sent only after the ACK arrived, so weir has handled the GOAWAY and gone idle.
    c.send(&request(1, "GET", "/status/200", true)).await;
    let answered = c
        .wait(Duration::from_secs(3), |f| f.stream == 1 && f.kind == 1)
        .await;
    assert!(
        answered.is_some(),
        "a request after the client's GOAWAY is answered; frames seen: {:?}",
        c.seen
            .iter()
            .map(|f| (f.kind, f.stream))
            .collect::<Vec<_>>()
    );
    let g = c.seen.iter().find(|f| goaway(f));
    assert!(g.is_none(), "weir sent GOAWAY {:?}", g.map(code));
}
