//! The connection task against a raw-frame peer on a real socket: flow-control credit for
//! bodies that are dropped unread, and complete responses that must survive a later stream
//! error. Each of these failed before its fix.

use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Notify};

use super::*;
use crate::proxy::body::{empty, full};
use crate::proxy::replay::Replay;

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = vec![(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags];
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

struct Peer {
    w: OwnedWriteHalf,
    /// HEADERS frames from weir: (stream, flags, header block).
    heads: mpsc::UnboundedReceiver<(u32, u8, Vec<u8>)>,
    conn_window: Arc<AtomicI64>,
    conn_updates: Arc<AtomicU32>,
    stream_init: Arc<AtomicI64>,
    rsts: Arc<Mutex<Vec<(u32, u32)>>>,
}

async fn reader(
    mut r: OwnedReadHalf,
    heads: mpsc::UnboundedSender<(u32, u8, Vec<u8>)>,
    conn_window: Arc<AtomicI64>,
    conn_updates: Arc<AtomicU32>,
    stream_init: Arc<AtomicI64>,
    rsts: Arc<Mutex<Vec<(u32, u32)>>>,
) {
    let mut preface = [0u8; 24];
    if r.read_exact(&mut preface).await.is_err() {
        return;
    }
    loop {
        let mut h = [0u8; 9];
        if r.read_exact(&mut h).await.is_err() {
            return;
        }
        let len = (usize::from(h[0]) << 16) | (usize::from(h[1]) << 8) | usize::from(h[2]);
        let mut p = vec![0u8; len];
        if r.read_exact(&mut p).await.is_err() {
            return;
        }
        let stream = u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff;
        match h[3] {
            1 => {
                let _ = heads.send((stream, h[4], p.clone()));
            }
            3 => rsts
                .lock()
                .unwrap()
                .push((stream, u32::from_be_bytes([p[0], p[1], p[2], p[3]]))),
            4 if h[4] & 1 == 0 => {
                for s in p.chunks_exact(6) {
                    if u16::from_be_bytes([s[0], s[1]]) == 4 {
                        stream_init.store(
                            i64::from(u32::from_be_bytes([s[2], s[3], s[4], s[5]])),
                            Ordering::SeqCst,
                        );
                    }
                }
            }
            8 if stream == 0 => {
                let inc = u32::from_be_bytes([p[0], p[1], p[2], p[3]]) & 0x7fff_ffff;
                conn_window.fetch_add(i64::from(inc), Ordering::SeqCst);
                conn_updates.fetch_add(1, Ordering::SeqCst);
            }
            _ => {}
        }
    }
}

async fn setup(peer_settings: &[u8]) -> (Arc<H2Conn>, Peer) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = prometheus::Registry::new();
    let metrics = crate::metrics::ProxyMetrics::register(&registry)
        .unwrap()
        .backend("t");
    let conn = H2Conn::new(
        addr,
        None,
        0,
        metrics,
        Arc::new(Notify::new()),
        Arc::new(Mutex::new(None)),
    );
    establish(conn.clone(), Duration::from_secs(5), None, None);
    let (sock, _) = listener.accept().await.unwrap();
    let (r, mut w) = sock.into_split();
    let (tx, heads) = mpsc::unbounded_channel();
    let conn_window = Arc::new(AtomicI64::new(65_535));
    let conn_updates = Arc::new(AtomicU32::new(0));
    let stream_init = Arc::new(AtomicI64::new(65_535));
    let rsts = Arc::new(Mutex::new(Vec::new()));
    tokio::spawn(reader(
        r,
        tx,
        conn_window.clone(),
        conn_updates.clone(),
        stream_init.clone(),
        rsts.clone(),
    ));
    w.write_all(&frame(4, 0, 0, peer_settings)).await.unwrap();
    for _ in 0..200 {
        if conn.phase() == Phase::Ready {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(conn.phase(), Phase::Ready);
    (
        conn,
        Peer {
            w,
            heads,
            conn_window,
            conn_updates,
            stream_init,
            rsts,
        },
    )
}

fn get() -> http::request::Parts {
    http::Request::get("http://a.example/")
        .body(())
        .unwrap()
        .into_parts()
        .0
}

/// Sends `n` body bytes on `stream` as flow control allows; false if the window never opened.
async fn send_body(p: &mut Peer, stream: u32, n: usize, stream_window: &mut i64) -> bool {
    let mut left = n;
    let chunk = vec![b'x'; 16384];
    let mut stalled = 0;
    while left > 0 {
        let cw = p.conn_window.load(Ordering::SeqCst);
        let room = cw.min(*stream_window).clamp(0, 16384) as usize;
        if room == 0 {
            stalled += 1;
            if stalled > 100 {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        }
        stalled = 0;
        let k = room.min(left);
        left -= k;
        p.conn_window.fetch_sub(k as i64, Ordering::SeqCst);
        *stream_window -= k as i64;
        let flags = if left == 0 { 1 } else { 0 };
        p.w.write_all(&frame(0, flags, stream, &chunk[..k]))
            .await
            .unwrap();
    }
    true
}

/// Responses whose END_STREAM arrived but whose body the request dropped unread are credited
/// back to the connection window: otherwise, after ~4 MB, the connection stalls for good.
#[tokio::test]
async fn dropped_complete_bodies_return_their_connection_window() {
    let (conn, mut p) = setup(&[]).await;
    const BODY: usize = 1_000_000;
    for round in 0..5 {
        let slot = conn.try_reserve(100).expect("slot");
        let parts = get();
        let req = tokio::spawn(async move {
            let body = Replay::new(empty(), 0).attempt();
            match send(slot, &parts, body).await {
                Ok(r) => r,
                Err(_) => panic!("send failed"),
            }
        });
        let (id, _, _) = p.heads.recv().await.unwrap();
        p.w.write_all(&frame(1, 4, id, &[0x88])).await.unwrap();
        let mut sw = p.stream_init.load(Ordering::SeqCst);
        let resp = req.await.unwrap();
        if round < 4 {
            assert!(send_body(&mut p, id, BODY, &mut sw).await);
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(resp); // the client went away: the body is never read
        } else {
            let reading = tokio::spawn(async move { resp.into_body().collect().await });
            let sent_all = send_body(&mut p, id, BODY, &mut sw).await;
            assert!(
                sent_all,
                "connection window leaked: the 5th response stalls"
            );
            let got = tokio::time::timeout(Duration::from_secs(5), reading)
                .await
                .expect("the 5th body is read")
                .expect("reader task")
                .expect("body");
            assert_eq!(got.to_bytes().len(), BODY);
        }
    }
}

/// A complete response that is still buffered (the upload goes on) survives a stray frame
/// that makes weir reset the stream: it is read whole, never silently truncated.
#[tokio::test]
async fn stray_frame_after_complete_response_keeps_it_whole() {
    let (conn, mut p) = setup(&[]).await; // default 65,535 stream window: the upload stalls
    let slot = conn.try_reserve(100).expect("slot");
    let parts = http::Request::post("http://a.example/up")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let req = tokio::spawn(async move {
        let body = Replay::new(full(vec![b'u'; 1 << 20]), 0).attempt();
        match send(slot, &parts, body).await {
            Ok(r) => r,
            Err(_) => panic!("send failed"),
        }
    });
    let (id, flags, _) = p.heads.recv().await.unwrap();
    assert_eq!(flags & 1, 0, "request HEADERS without END_STREAM");
    let mut out = frame(1, 4, id, &[0x88]);
    out.extend(frame(0, 1, id, b"hello world"));
    out.extend(frame(8, 0, id, &0u32.to_be_bytes())); // WINDOW_UPDATE of 0: a stream error
    p.w.write_all(&out).await.unwrap();
    let resp = req.await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let body = resp.into_body().collect().await.expect("complete body");
    assert_eq!(
        &body.to_bytes()[..],
        b"hello world",
        "complete response truncated"
    );
}

/// Upload still going, response complete (1 MiB, exactly the credit batch). Dropping the body
/// unread credits the bytes back (a WINDOW_UPDATE) only if the stream is still in the driver's
/// map; after the peer's RST_STREAM(NO_ERROR) it is not, and nothing comes back.
async fn drop_after_complete(rst: bool) -> u32 {
    let (conn, mut p) = setup(&[0, 4, 0, 0, 0xff, 0xff]).await;
    let slot = conn.try_reserve(100).expect("slot");
    let parts = http::Request::post("http://a.example/up")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let req = tokio::spawn(async move {
        let body = Replay::new(full(vec![b'u'; 1 << 20]), 0).attempt();
        match send(slot, &parts, body).await {
            Ok(r) => r,
            Err(_) => panic!("send failed"),
        }
    });
    let (id, _, _) = p.heads.recv().await.unwrap();
    p.w.write_all(&frame(1, 4, id, &[0x88])).await.unwrap();
    let resp = req.await.unwrap();
    let mut sw = p.stream_init.load(Ordering::SeqCst);
    assert!(send_body(&mut p, id, 1 << 20, &mut sw).await);
    if rst {
        p.w.write_all(&frame(3, 0, id, &0u32.to_be_bytes()))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    let before = p.conn_updates.load(Ordering::SeqCst);
    drop(resp);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = p.conn_updates.load(Ordering::SeqCst);
    let rsts = p.rsts.lock().unwrap().clone();
    if rst {
        assert!(
            rsts.is_empty(),
            "no reset for a stream the peer closed: {rsts:?}"
        );
    } else {
        assert_eq!(rsts, [(id, 8)], "the unfinished upload is cancelled");
    }
    after - before
}

#[tokio::test]
async fn dropping_a_complete_body_returns_its_window_even_after_the_peer_reset() {
    let control = drop_after_complete(false).await;
    let with_rst = drop_after_complete(true).await;
    assert_eq!(control, 1, "the unread MiB is credited back");
    assert_eq!(
        with_rst, 1,
        "after RST_STREAM(NO_ERROR) the unread MiB is credited back too"
    );
}

/// One GET with a `user-agent` through `conn`, answered 200 with no body; the request's
/// header block as the peer received it.
async fn one_get(conn: &Arc<H2Conn>, p: &mut Peer) -> Vec<u8> {
    let slot = conn.try_reserve(100).expect("slot");
    let parts = http::Request::get("http://a.example/app")
        .header("user-agent", "weir-test")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    let req = tokio::spawn(async move {
        let body = Replay::new(empty(), 0).attempt();
        match send(slot, &parts, body).await {
            Ok(r) => r.status(),
            Err(_) => panic!("send failed"),
        }
    });
    let (id, _, block) = p.heads.recv().await.unwrap();
    p.w.write_all(&frame(1, 5, id, &[0x88])).await.unwrap();
    assert_eq!(req.await.unwrap(), http::StatusCode::OK);
    block
}

fn decoded(decoder: &mut crate::h2::hpack::Decoder, block: Vec<u8>) -> Vec<String> {
    let mut values = Vec::new();
    decoder
        .decode(&bytes::Bytes::from(block), |f| match f.value {
            crate::h2::hpack::Value::Valid(v) => values.push(v.to_str().unwrap().to_string()),
            crate::h2::hpack::Value::Invalid(_) => panic!("invalid value"),
        })
        .expect("the backend can decode the block");
    values
}

/// Requests after the first refer to the backend's dynamic table for what repeats, and the
/// backend's decoder follows.
#[tokio::test]
async fn requests_are_indexed_against_the_backends_table() {
    let (conn, mut p) = setup(&[]).await;
    let mut decoder = crate::h2::hpack::Decoder::new(4096);
    let mut sizes = Vec::new();
    for _ in 0..3 {
        let block = one_get(&conn, &mut p).await;
        sizes.push(block.len());
        assert_eq!(
            decoded(&mut decoder, block),
            ["GET", "http", "a.example", "/app", "weir-test"]
        );
    }
    assert!(sizes[1] < sizes[0], "{sizes:?}");
    assert_eq!(
        sizes[1], 5,
        "two static and three dynamic indexes: {sizes:?}"
    );
    assert_eq!(sizes[1], sizes[2]);
}

/// A backend that shrinks its table gets a size update to 0 at the start of every block and
/// literals only.
#[tokio::test]
async fn a_shrunk_table_gets_a_size_update_and_literals() {
    let (conn, mut p) = setup(&[0, 1, 0, 0, 0, 0]).await;
    let mut decoder = crate::h2::hpack::Decoder::new(0);
    let mut sizes = Vec::new();
    for _ in 0..2 {
        let block = one_get(&conn, &mut p).await;
        assert_eq!(block[0], 0x20, "a size update to 0 first");
        sizes.push(block.len());
        assert_eq!(
            decoded(&mut decoder, block),
            ["GET", "http", "a.example", "/app", "weir-test"]
        );
    }
    assert_eq!(sizes[0], sizes[1], "nothing indexed");
}

/// A request that gives up before its stream opened still has its header block sent (not
/// complete, and reset at once), so the backend's HPACK table stays in step with weir's.
#[tokio::test]
async fn a_request_cancelled_before_its_stream_opened_keeps_hpack_in_step() {
    let (conn, mut p) = setup(&[]).await;
    let mut decoder = crate::h2::hpack::Decoder::new(4096);
    let slot = conn.try_reserve(100).expect("slot");
    let parts = http::Request::get("http://a.example/gone")
        .header("user-agent", "weir-test")
        .body(())
        .unwrap()
        .into_parts()
        .0;
    {
        let body = Replay::new(empty(), 0).attempt();
        let mut fut = Box::pin(send(slot, &parts, body));
        // One poll encodes the block and queues the stream; then the request gives up.
        std::future::poll_fn(|cx| {
            let _ = std::future::Future::poll(fut.as_mut(), cx);
            std::task::Poll::Ready(())
        })
        .await;
    }
    let (id, flags, block) = tokio::time::timeout(Duration::from_secs(5), p.heads.recv())
        .await
        .expect("the cancelled request's HEADERS are sent")
        .unwrap();
    assert_eq!(flags & 1, 0, "no END_STREAM: the request is never complete");
    assert_eq!(
        decoded(&mut decoder, block),
        ["GET", "http", "a.example", "/gone", "weir-test"]
    );
    // The next request refers to what the cancelled one added, and decodes right.
    let block = one_get(&conn, &mut p).await;
    assert_eq!(
        decoded(&mut decoder, block),
        ["GET", "http", "a.example", "/app", "weir-test"]
    );
    assert_eq!(
        p.rsts.lock().unwrap().first(),
        Some(&(id, 8)),
        "reset with CANCEL"
    );
}
