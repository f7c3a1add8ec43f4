//! Proves each `H2Peer` knob on the wire, with the `h2` crate's client or with frames by hand.

use std::future::poll_fn;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use h2::client::SendRequest;
use h2::Reason;
use http::{HeaderMap, Method, Request, StatusCode};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::timeout;
use weir_testkit::h2peer::wire::{flag, hpack_literal, kind, setting, Frame, PREFACE};
use weir_testkit::h2peer::{pattern, Behaviour, H2Peer, Malformation, Stats};

const PATIENCE: Duration = Duration::from_secs(5);

// ---------------------------------------------------------------------------------------------
// An `h2` client.

struct Client {
    send: SendRequest<Bytes>,
    driver: JoinHandle<Result<(), h2::Error>>,
}

impl Client {
    async fn connect(peer: &H2Peer) -> Client {
        let tcp = TcpStream::connect(peer.addr)
            .await
            .expect("connect to peer");
        let (send, connection) = h2::client::handshake(tcp).await.expect("h2 handshake");
        Client {
            send,
            driver: tokio::spawn(connection),
        }
    }

    async fn fetch(&self, path: &str, body: &[u8]) -> Result<Reply, h2::Error> {
        fetch(&self.send, path, body).await
    }

    /// Waits until the connection is over; returns how it ended.
    async fn closed(self) -> Result<(), h2::Error> {
        timeout(PATIENCE, self.driver)
            .await
            .expect("connection closes")
            .expect("driver task")
    }
}

/// Sends a request and reads the whole response.
async fn fetch(send: &SendRequest<Bytes>, path: &str, body: &[u8]) -> Result<Reply, h2::Error> {
    let mut send = send.clone().ready().await?;
    let (response, mut stream) = send.send_request(request(path), body.is_empty())?;
    if !body.is_empty() {
        stream.send_data(Bytes::copy_from_slice(body), true)?;
    }
    Reply::read(response.await?).await
}

fn request(path: &str) -> Request<()> {
    Request::builder()
        .method(Method::POST)
        .uri(format!("http://peer.test{path}"))
        .body(())
        .expect("valid request")
}

#[derive(Debug)]
struct Reply {
    status: StatusCode,
    headers: HeaderMap,
    body: Bytes,
    trailers: Option<HeaderMap>,
}

impl Reply {
    async fn read(response: http::Response<h2::RecvStream>) -> Result<Reply, h2::Error> {
        let (head, mut stream) = response.into_parts();
        let mut body = BytesMut::new();
        while let Some(chunk) = stream.data().await {
            let chunk = chunk?;
            stream.flow_control().release_capacity(chunk.len())?;
            body.extend_from_slice(&chunk);
        }
        Ok(Reply {
            status: head.status,
            headers: head.headers,
            body: body.freeze(),
            trailers: stream.trailers().await?,
        })
    }

    fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
    }
}

async fn stats_reach(peer: &H2Peer, ready: impl Fn(&Stats) -> bool) -> Stats {
    peer.wait_for_stats(PATIENCE, ready)
        .await
        .unwrap_or_else(|stats| panic!("stats never got there: {stats:?}"))
}

// ---------------------------------------------------------------------------------------------
// A client that writes and reads frames by hand.

struct RawClient {
    tcp: TcpStream,
}

impl RawClient {
    /// Connects and sends the preface and an empty SETTINGS.
    async fn connect(peer: &H2Peer) -> RawClient {
        let mut tcp = TcpStream::connect(peer.addr)
            .await
            .expect("connect to peer");
        tcp.write_all(PREFACE).await.expect("write preface");
        let mut client = RawClient { tcp };
        client.send(&[Frame::settings(&[])]).await;
        client
    }

    async fn send(&mut self, frames: &[Frame]) {
        for frame in frames {
            self.tcp
                .write_all(&frame.encode())
                .await
                .expect("write frame");
        }
    }

    /// HEADERS for a request on `id`.
    async fn request(&mut self, id: u32, path: &str, end_stream: bool) {
        let block = hpack_literal(&[
            (":method", "POST"),
            (":scheme", "http"),
            (":authority", "peer.test"),
            (":path", path),
        ]);
        self.send(&[Frame::headers(id, block, end_stream)]).await;
    }

    /// The next frame, or `None` once the peer has closed the connection.
    async fn next(&mut self) -> Option<Frame> {
        timeout(PATIENCE, Frame::read_from(&mut self.tcp))
            .await
            .expect("peer answers in time")
            .expect("read frame")
    }

    /// Reads frames until one matches `until` (returned last), acknowledging SETTINGS.
    async fn read_until(&mut self, until: impl Fn(&Frame) -> bool) -> Vec<Frame> {
        let mut frames = Vec::new();
        loop {
            let frame = self.next().await.expect("connection still open");
            if frame.kind == kind::SETTINGS && !frame.has(flag::ACK) {
                self.send(&[Frame::settings_ack()]).await;
            }
            let done = until(&frame);
            frames.push(frame);
            if done {
                return frames;
            }
        }
    }

    /// Reads frames until the peer closes the connection, acknowledging SETTINGS.
    async fn read_to_end(&mut self) -> Vec<Frame> {
        let mut frames = Vec::new();
        while let Some(frame) = self.next().await {
            if frame.kind == kind::SETTINGS && !frame.has(flag::ACK) {
                self.send(&[Frame::settings_ack()]).await;
            }
            frames.push(frame);
        }
        frames
    }
}

fn ends_stream(id: u32) -> impl Fn(&Frame) -> bool {
    move |f| {
        f.stream_id == id && matches!(f.kind, kind::DATA | kind::HEADERS) && f.has(flag::END_STREAM)
    }
}

fn on_stream(frames: &[Frame], id: u32) -> Vec<u8> {
    frames
        .iter()
        .filter(|f| f.stream_id == id)
        .map(|f| f.kind)
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Normal mode.

#[tokio::test]
async fn echoes_bodies_and_names_connection_and_stream() {
    let peer = H2Peer::start(Behaviour::default()).await;
    let client = Client::connect(&peer).await;

    let first = client.fetch("/", b"hello").await.expect("first reply");
    assert_eq!(first.status, StatusCode::OK);
    assert_eq!(first.body, "hello");
    assert_eq!(first.header("x-peer-conn"), "0");
    assert_eq!(first.header("x-peer-stream"), "1");
    let second = client.fetch("/again?x=1", b"").await.expect("second reply");
    assert_eq!(second.header("x-peer-stream"), "3");
    assert_eq!(second.body, "");

    let stats = peer.stats();
    assert_eq!((stats.connections, stats.open_connections), (1, 1));
    assert_eq!((stats.streams, stats.completed, stats.refused), (2, 2, 0));
    assert_eq!(stats.bodies, vec![Bytes::from("hello"), Bytes::new()]);
    assert_eq!(stats.paths, vec!["/", "/again?x=1"]);
    assert_eq!(stats.max_concurrent, 1);
}

#[tokio::test]
async fn special_paths() {
    let peer = H2Peer::start(Behaviour::default()).await;
    let client = Client::connect(&peer).await;

    let status = client.fetch("/status/503", b"").await.expect("status");
    assert_eq!(status.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(status.body, "h2peer: status 503\n");

    // Larger than every default window, so it only completes if the peer waits for credit.
    let bytes = client.fetch("/bytes/300000", b"").await.expect("bytes");
    assert_eq!(bytes.body, pattern(0, 300_000));

    let started = Instant::now();
    let slow = client.fetch("/slow/150", b"zzz").await.expect("slow");
    assert!(started.elapsed() >= Duration::from_millis(150));
    assert_eq!(slow.body, "zzz");

    let grpc = client
        .fetch("/grpc", b"\0\0\0\0\x02hi")
        .await
        .expect("grpc");
    assert_eq!(grpc.header("content-type"), "application/grpc");
    assert_eq!(grpc.body, "\0\0\0\0\x02hi");
    let trailers = grpc.trailers.expect("grpc trailers");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "ok");

    let bad = client.fetch("/slow/later", b"").await.expect("bad path");
    assert_eq!(bad.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn informational_responses_come_before_the_final_one() {
    let peer = H2Peer::start(Behaviour::default()).await;
    let mut client = Client::connect(&peer).await;
    let (mut response, mut body) = client
        .send
        .send_request(request("/1xx"), false)
        .expect("send request");
    body.send_data(Bytes::from_static(b"after 100"), true)
        .expect("send body");

    let mut interim = Vec::new();
    while let Some(info) = poll_fn(|cx| response.poll_informational(cx)).await {
        let info = info.expect("interim response");
        interim.push((info.status(), info.headers().contains_key("link")));
    }
    assert_eq!(
        interim,
        vec![
            (StatusCode::CONTINUE, false),
            (StatusCode::EARLY_HINTS, true)
        ]
    );
    let reply = Reply::read(response.await.expect("final response"))
        .await
        .expect("body");
    assert_eq!(
        (reply.status, reply.body),
        (StatusCode::OK, "after 100".into())
    );
}

/// Sends HEADERS and part of a body to `path`, leaving the request open; returns the response
/// and how the peer then ended the request stream.
async fn respond_while_uploading(client: &mut Client, path: &str) -> (Reply, Reason) {
    let (response, mut body) = client
        .send
        .send_request(request(path), false)
        .expect("send request");
    body.send_data(Bytes::from_static(b"part of a body"), false)
        .expect("send body");
    let reply = Reply::read(response.await.expect("response"))
        .await
        .expect("response body");
    let reset = timeout(PATIENCE, poll_fn(|cx| body.poll_reset(cx)))
        .await
        .expect("request stream reset")
        .expect("reset reason");
    (reply, reset)
}

#[tokio::test]
async fn early_413_answers_without_the_body_then_resets_with_no_error() {
    let peer = H2Peer::start(Behaviour::default()).await;
    let mut client = Client::connect(&peer).await;
    let (reply, reset) = respond_while_uploading(&mut client, "/early-413").await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(reset, Reason::NO_ERROR);
    let stats = peer.stats();
    assert_eq!(stats.completed, 1);
    assert!(stats.bodies.is_empty(), "the body was never read");
}

// ---------------------------------------------------------------------------------------------
// Stream knobs.

#[tokio::test]
async fn reset_no_error_after_response() {
    let peer = H2Peer::start(Behaviour {
        reset_no_error_after_response: true,
        ..Behaviour::default()
    })
    .await;
    let mut client = Client::connect(&peer).await;
    let (reply, reset) = respond_while_uploading(&mut client, "/").await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, "h2peer: early response\n");
    assert_eq!(reset, Reason::NO_ERROR);
}

#[tokio::test]
async fn refuse_streams_refuses_the_first_n_across_connections() {
    let peer = H2Peer::start(Behaviour {
        refuse_streams: 2,
        ..Behaviour::default()
    })
    .await;
    for _ in 0..2 {
        let client = Client::connect(&peer).await;
        let refused = client.fetch("/", b"body").await.expect_err("refused");
        assert_eq!(refused.reason(), Some(Reason::REFUSED_STREAM));
        assert!(refused.is_remote());
    }
    let client = Client::connect(&peer).await;
    assert_eq!(
        client.fetch("/", b"body").await.expect("third").body,
        "body"
    );
    let stats = peer.stats();
    assert_eq!((stats.streams, stats.refused, stats.completed), (3, 2, 1));
    assert_eq!(stats.bodies.len(), 1, "refused bodies are not read");
}

#[tokio::test]
async fn reset_after_headers_sends_headers_and_data_then_internal_error() {
    let peer = H2Peer::start(Behaviour {
        reset_after_headers: true,
        ..Behaviour::default()
    })
    .await;
    let mut client = Client::connect(&peer).await;
    let (response, _) = client
        .send
        .send_request(request("/"), true)
        .expect("send request");
    let response = response.await.expect("response headers");
    assert_eq!(response.status(), StatusCode::OK);
    let mut body = response.into_body();
    let data = body.data().await.expect("a DATA frame").expect("data");
    assert_eq!(data, "h2peer: partial response\n");
    let error = body
        .data()
        .await
        .expect("then an error")
        .expect_err("reset");
    assert_eq!(error.reason(), Some(Reason::INTERNAL_ERROR));
    assert_eq!(peer.stats().completed, 0);
}

#[tokio::test]
async fn fail_all_answers_everything_with_the_status() {
    let peer = H2Peer::start(Behaviour {
        fail_all: Some(503),
        ..Behaviour::default()
    })
    .await;
    let client = Client::connect(&peer).await;
    for path in ["/", "/bytes/10", "/grpc"] {
        let reply = client.fetch(path, b"x").await.expect("reply");
        assert_eq!(reply.status, StatusCode::SERVICE_UNAVAILABLE, "{path}");
    }
}

#[tokio::test]
async fn malformed_response_fails_only_its_stream() {
    for malformation in [Malformation::MissingStatus, Malformation::ConnectionHeader] {
        let peer = H2Peer::start(Behaviour {
            malformed_response_on: Some("/bad".into()),
            malformation,
            ..Behaviour::default()
        })
        .await;
        let client = Client::connect(&peer).await;
        let error = client.fetch("/bad", b"x").await.expect_err("malformed");
        assert_eq!(
            error.reason(),
            Some(Reason::PROTOCOL_ERROR),
            "{malformation:?}"
        );
        assert!(
            !error.is_go_away(),
            "{malformation:?}: only the stream fails"
        );
        let good = client.fetch("/good", b"y").await.expect("same connection");
        assert_eq!(good.header("x-peer-stream"), "3");
        assert_eq!(peer.stats().connections, 1);
    }
}

#[tokio::test]
async fn uppercase_header_names_make_h2_drop_the_connection() {
    let peer = H2Peer::start(Behaviour {
        malformed_response_on: Some("/bad".into()),
        malformation: Malformation::UppercaseName,
        ..Behaviour::default()
    })
    .await;
    let client = Client::connect(&peer).await;
    let error = client.fetch("/bad", b"").await.expect_err("malformed");
    assert!(error.is_go_away(), "{error:?}");
}

#[tokio::test]
async fn stray_frames_follow_the_end_of_the_stream() {
    let peer = H2Peer::start(Behaviour {
        stray_frames_after_close: Some(Duration::ZERO),
        ..Behaviour::default()
    })
    .await;
    let mut raw = RawClient::connect(&peer).await;
    raw.request(1, "/", true).await;
    let frames = raw
        .read_until(|f| f.stream_id == 1 && f.kind == kind::DATA && !f.has(flag::END_STREAM))
        .await;
    // An empty body: the response is one HEADERS frame with END_STREAM.
    assert_eq!(
        on_stream(&frames, 1),
        vec![kind::HEADERS, kind::WINDOW_UPDATE, kind::DATA]
    );
    assert!(frames[frames.len() - 3].has(flag::END_STREAM));
    let n = frames.len();
    assert_eq!(frames[n - 2].window_increment(), Some(1024));
    assert_eq!(frames[n - 1].payload, "stray");

    // The connection keeps serving.
    raw.request(3, "/", true).await;
    let frames = raw.read_until(ends_stream(3)).await;
    assert_eq!(on_stream(&frames, 3), vec![kind::HEADERS]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_data_does_not_upset_flow_control() {
    let peer = H2Peer::start(Behaviour {
        stray_frames_after_close: Some(Duration::from_millis(30)),
        ..Behaviour::default()
    })
    .await;
    let client = Client::connect(&peer).await;
    for _ in 0..3 {
        client.fetch("/", b"x").await.expect("small reply");
        // `h2` forgets the stream before the stray frames arrive, so it only resets the stream
        // (STREAM_CLOSED) and refunds the window.
        tokio::time::sleep(Duration::from_millis(60)).await;
    }
    // Fills the client's connection window many times over: with the refunds of the stray
    // bytes counted twice, the peer would overrun it and the client would fail the connection.
    let big = client.fetch("/bytes/400000", b"").await.expect("big reply");
    assert_eq!(big.body.len(), 400_000);
}

// ---------------------------------------------------------------------------------------------
// SETTINGS knobs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_streams_is_advertised_and_measured() {
    let peer = H2Peer::start(Behaviour {
        max_concurrent_streams: Some(2),
        ..Behaviour::default()
    })
    .await;
    let client = Client::connect(&peer).await;
    client.fetch("/", b"").await.expect("warm-up");
    assert_eq!(client.send.current_max_send_streams(), 2);
    let requests = (0..6).map(|_| client.fetch("/slow/50", b""));
    for reply in futures_util::future::join_all(requests).await {
        assert_eq!(reply.expect("reply").status, StatusCode::OK);
    }
    let stats = peer.stats();
    assert_eq!((stats.max_concurrent, stats.refused), (2, 0));
}

#[tokio::test]
async fn a_client_over_the_limit_is_refused_and_counted() {
    let peer = H2Peer::start(Behaviour {
        max_concurrent_streams: Some(2),
        ..Behaviour::default()
    })
    .await;
    let mut raw = RawClient::connect(&peer).await;
    let settings = raw.read_until(|f| f.kind == kind::SETTINGS).await;
    let settings = settings.last().expect("SETTINGS");
    assert_eq!(settings.setting(setting::MAX_CONCURRENT_STREAMS), Some(2));
    for id in [1, 3, 5] {
        raw.request(id, "/slow/300", true).await;
    }
    let frames = raw.read_until(|f| f.kind == kind::RST_STREAM).await;
    let reset = frames.last().expect("RST_STREAM");
    assert_eq!(
        (reset.stream_id, reset.reason()),
        (5, Some(Reason::REFUSED_STREAM))
    );
    let stats = peer.stats();
    assert_eq!((stats.max_concurrent, stats.refused), (3, 1));
}

#[tokio::test]
async fn lower_max_concurrent_streams_mid_connection() {
    let peer = H2Peer::start(Behaviour {
        lower_max_concurrent_streams: Some((1, 1)),
        ..Behaviour::default()
    })
    .await;

    // On the wire: a second SETTINGS right after the first request stream arrives.
    let mut raw = RawClient::connect(&peer).await;
    raw.request(1, "/", true).await;
    let frames = raw.read_until(ends_stream(1)).await;
    let settings: Vec<_> = frames
        .iter()
        .filter(|f| f.kind == kind::SETTINGS && !f.has(flag::ACK))
        .collect();
    assert_eq!(settings.len(), 2);
    assert_eq!(
        settings[1].setting(setting::MAX_CONCURRENT_STREAMS),
        Some(1)
    );

    // An `h2` client obeys it, and `h2` on the server never sees the extra ACK.
    let client = Client::connect(&peer).await;
    client.fetch("/", b"").await.expect("first");
    let lowered = async {
        while client.send.current_max_send_streams() != 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    timeout(PATIENCE, lowered)
        .await
        .expect("client sees the new limit");
    let requests = (0..4).map(|_| client.fetch("/slow/30", b""));
    for reply in futures_util::future::join_all(requests).await {
        assert_eq!(reply.expect("reply").status, StatusCode::OK);
    }
    assert_eq!(peer.stats().max_concurrent, 1);
}

#[tokio::test]
async fn initial_window_sizes_reach_the_client() {
    let peer = H2Peer::start(Behaviour {
        initial_window_size: Some(1),
        initial_connection_window_size: Some(65_535),
        ..Behaviour::default()
    })
    .await;
    let mut client = Client::connect(&peer).await;
    client.fetch("/", b"warm-up").await.expect("warm-up");

    let (response, mut body) = client
        .send
        .send_request(request("/"), false)
        .expect("send request");
    body.reserve_capacity(100);
    let granted = poll_fn(|cx| body.poll_capacity(cx))
        .await
        .expect("capacity")
        .expect("capacity");
    assert_eq!(granted, 1, "one byte of stream window");
    let upload: Vec<u8> = (0..100u8).collect();
    body.send_data(Bytes::from(upload.clone()), true)
        .expect("send body");
    let reply = Reply::read(response.await.expect("response"))
        .await
        .expect("body");
    assert_eq!(reply.body, upload);
}

#[tokio::test]
async fn settings_delay_holds_back_the_first_frame() {
    let delay = Duration::from_millis(200);
    let peer = H2Peer::start(Behaviour {
        settings_delay: Some(delay),
        ..Behaviour::default()
    })
    .await;
    let started = Instant::now();
    let mut raw = RawClient::connect(&peer).await;
    let first = raw.next().await.expect("a frame");
    assert!(started.elapsed() >= delay);
    assert_eq!(first.kind, kind::SETTINGS);

    let client = Client::connect(&peer).await;
    assert_eq!(client.fetch("/", b"x").await.expect("reply").body, "x");
}

#[tokio::test]
async fn close_before_settings_writes_nothing() {
    let peer = H2Peer::start(Behaviour {
        close_before_settings: true,
        ..Behaviour::default()
    })
    .await;
    let mut raw = RawClient::connect(&peer).await;
    assert_eq!(raw.next().await, None, "closed without a single frame");

    // With a delay: the same, but slowly.
    let delay = Duration::from_millis(150);
    peer.set_behaviour(Behaviour {
        close_before_settings: true,
        settings_delay: Some(delay),
        ..Behaviour::default()
    });
    let started = Instant::now();
    let mut raw = RawClient::connect(&peer).await;
    assert_eq!(raw.next().await, None);
    assert!(started.elapsed() >= delay);
    assert_eq!(peer.stats().connections, 2);
}

// ---------------------------------------------------------------------------------------------
// GOAWAY and closing knobs.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn goaway_after_names_the_nth_stream_then_closes() {
    let peer = H2Peer::start(Behaviour {
        goaway_after: Some(2),
        ..Behaviour::default()
    })
    .await;
    let mut raw = RawClient::connect(&peer).await;
    for id in [1, 3, 5] {
        raw.request(id, "/slow/100", true).await;
    }
    let frames = raw.read_to_end().await;
    let goaway: Vec<_> = frames.iter().filter(|f| f.kind == kind::GOAWAY).collect();
    assert_eq!(goaway.len(), 1);
    assert_eq!(goaway[0].last_stream_id(), Some(3));
    assert_eq!(goaway[0].reason(), Some(Reason::NO_ERROR));
    assert!(frames.iter().any(ends_stream(1)) && frames.iter().any(ends_stream(3)));
    assert!(
        on_stream(&frames, 5).is_empty(),
        "stream 5 is never answered"
    );
    stats_reach(&peer, |s| s.open_connections == 0).await;

    // An `h2` client sees GOAWAY errors on the streams above the last one.
    let client = Client::connect(&peer).await;
    let requests = (0..4).map(|_| client.fetch("/slow/100", b""));
    let replies = futures_util::future::join_all(requests).await;
    assert!(replies[..2].iter().all(Result::is_ok), "{replies:?}");
    for error in replies[2..]
        .iter()
        .map(|r| r.as_ref().expect_err("refused by GOAWAY"))
    {
        assert!(error.is_go_away() && error.is_remote(), "{error:?}");
        assert_eq!(error.reason(), Some(Reason::NO_ERROR));
    }
    client.closed().await.expect("clean close");
    let stats = stats_reach(&peer, |s| s.open_connections == 0).await;
    assert_eq!((stats.goaways, stats.completed), (2, 4));
}

#[tokio::test]
async fn goaway_in_flight_cuts_between_open_streams() {
    let peer = H2Peer::start(Behaviour {
        goaway_in_flight: Some((3, 1)),
        ..Behaviour::default()
    })
    .await;
    let mut raw = RawClient::connect(&peer).await;
    for id in [1, 3, 5] {
        raw.request(id, "/", true).await;
    }
    let frames = raw.read_to_end().await;
    let goaway = frames
        .iter()
        .find(|f| f.kind == kind::GOAWAY)
        .expect("GOAWAY");
    assert_eq!(goaway.last_stream_id(), Some(1));
    assert!(frames.iter().any(ends_stream(1)));
    assert!(on_stream(&frames, 3).is_empty() && on_stream(&frames, 5).is_empty());
    assert_eq!(peer.stats().max_concurrent, 3);

    let client = Client::connect(&peer).await;
    let requests = (0..3).map(|_| client.fetch("/", b""));
    let replies = futures_util::future::join_all(requests).await;
    assert!(replies[0].is_ok(), "{replies:?}");
    assert!(replies[1..]
        .iter()
        .all(|r| r.as_ref().is_err_and(h2::Error::is_go_away)));
    client.closed().await.expect("clean close");
}

#[tokio::test]
async fn close_idle_after_closes_only_idle_connections() {
    let peer = H2Peer::start(Behaviour {
        close_idle_after: Some(Duration::from_millis(100)),
        ..Behaviour::default()
    })
    .await;
    let client = Client::connect(&peer).await;
    // Busy for longer than the idle limit: not closed.
    let reply = client.fetch("/slow/250", b"").await.expect("slow reply");
    assert_eq!(reply.status, StatusCode::OK);
    let done = Instant::now();
    client.closed().await.expect("closed without error");
    let idle = done.elapsed();
    assert!(idle >= Duration::from_millis(50), "closed after {idle:?}");
    stats_reach(&peer, |s| s.open_connections == 0).await;
}

#[tokio::test]
async fn kill_connections_drops_everything_and_keeps_accepting() {
    let peer = H2Peer::start(Behaviour::default()).await;
    let client = Client::connect(&peer).await;
    client.fetch("/", b"").await.expect("first");
    let send = client.send.clone();
    let in_flight = tokio::spawn(async move { fetch(&send, "/slow/5000", b"").await });
    stats_reach(&peer, |s| s.streams == 2).await;
    let started = Instant::now();
    peer.kill_connections();
    let error = timeout(PATIENCE, in_flight)
        .await
        .expect("request ends")
        .expect("task")
        .expect_err("connection killed");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert!(
        !error.is_reset(),
        "no RST_STREAM, the socket just closes: {error:?}"
    );
    stats_reach(&peer, |s| s.open_connections == 0).await;

    let client = Client::connect(&peer).await;
    assert_eq!(
        client
            .fetch("/", b"")
            .await
            .expect("after")
            .header("x-peer-conn"),
        "1"
    );
}

#[tokio::test]
async fn set_behaviour_applies_to_new_connections() {
    let peer = H2Peer::start(Behaviour::default()).await;
    let old = Client::connect(&peer).await;
    old.fetch("/", b"").await.expect("connected");
    peer.set_behaviour(Behaviour {
        fail_all: Some(502),
        ..Behaviour::default()
    });
    assert_eq!(
        old.fetch("/", b"").await.expect("old").status,
        StatusCode::OK
    );
    let new = Client::connect(&peer).await;
    assert_eq!(
        new.fetch("/", b"").await.expect("new").status,
        StatusCode::BAD_GATEWAY
    );
}

#[tokio::test]
async fn stop_frees_the_port_for_a_restart() {
    let peer = H2Peer::start(Behaviour::default()).await;
    let addr = peer.addr;
    let client = Client::connect(&peer).await;
    client.fetch("/", b"").await.expect("before");
    peer.stop().await;
    client.closed().await.ok();

    let peer = H2Peer::start_on(addr, Behaviour::default())
        .await
        .expect("rebind the same address");
    let client = Client::connect(&peer).await;
    client.fetch("/", b"").await.expect("after restart");
}
