//! A misbehaving HTTP/2 backend (cleartext, prior knowledge) for end-to-end tests.
//!
//! Tests put a proxy between an HTTP/2 client and an [`H2Peer`], choose how the peer misbehaves
//! with a [`Behaviour`], and afterwards check what the peer saw with [`H2Peer::stats`].
//!
//! # Normal responses
//!
//! Every request is answered with status 200, headers `x-peer-conn: <connection index>` (0 for
//! the first connection the peer accepted) and `x-peer-stream: <stream id>`, and the request body
//! echoed back. The body is read completely before anything is sent. Special paths:
//!
//! - `/slow/<ms>`: the response is sent `<ms>` milliseconds after the body was read.
//! - `/bytes/<n>`: the response body is `n` bytes of [`pattern`], sent as the client's
//!   flow-control windows allow.
//! - `/status/<code>`: that status (200..=599) and a short text body (none for 204 and 304).
//! - `/grpc`: `content-type: application/grpc`, the body echoed, then trailers
//!   `grpc-status: 0` and `grpc-message: ok`.
//! - `/early-413`: as soon as the request HEADERS arrive, without reading the body: a complete
//!   413 response, then RST_STREAM(NO_ERROR) if the client is still sending the body.
//! - `/1xx`: interim responses `100 Continue` and `103 Early Hints` (with a `link` header), then
//!   the normal 200.
//!
//! A number that does not parse in a special path gets a 400.
//!
//! # How it is built
//!
//! Connections are served by the `h2` crate's server. It sits on `SpliceIo`, an IO
//! adapter that reassembles `h2`'s output into whole frames, so frames written by hand
//! ([`wire`]) can be put between them, and that hides from `h2` the client's answers to those
//! hand-written frames. Knobs by mechanism:
//!
//! - `h2` server API: `initial_window_size`, `initial_connection_window_size`,
//!   `refuse_streams`, `reset_after_headers`, `reset_no_error_after_response`, `fail_all`,
//!   informational responses, flow-controlled bodies.
//! - Hand-written frames spliced into `h2`'s connection: `max_concurrent_streams` (a parameter
//!   added to `h2`'s own first SETTINGS), `lower_max_concurrent_streams` (a second SETTINGS),
//!   `goaway_after` and `goaway_in_flight` (GOAWAY with a chosen last-stream-id; `h2`'s own
//!   GOAWAY always names the last stream it received), `malformed_response_on` (an invalid
//!   HEADERS), `stray_frames_after_close` (WINDOW_UPDATE and DATA on a closed stream).
//! - Socket only, no `h2`: `close_before_settings`; `settings_delay` holds back every write.
//! - Connection task: `close_idle_after`, and the close after a GOAWAY.
//!
//! `SETTINGS_MAX_CONCURRENT_STREAMS` is advertised but enforced by the peer, not by `h2`: a
//! stream that exceeds the limit the client has acknowledged is refused with
//! RST_STREAM(REFUSED_STREAM) (RFC 9113 §5.1.2) and still counted, so
//! [`Stats::max_concurrent`] shows how far a client went over.

mod connection;
mod exchange;
mod splice;
pub mod wire;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// Request bodies kept in [`Stats::bodies`], in total bytes; later bodies are only counted.
const MAX_STORED_BODY_BYTES: usize = 64 << 20;
/// Pause after a failed `accept` (e.g. out of file descriptors).
const ACCEPT_RETRY: Duration = Duration::from_millis(10);
/// How often [`H2Peer::wait_for_stats`] looks.
const STATS_POLL: Duration = Duration::from_millis(5);

/// A running peer. It stops accepting and aborts its connections when dropped; see
/// [`H2Peer::stop`] to wait until its port is free again.
pub struct H2Peer {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    accept: JoinHandle<()>,
}

/// What the peer has seen, as a snapshot.
#[derive(Clone, Debug, Default)]
pub struct Stats {
    /// TCP connections accepted.
    pub connections: usize,
    /// Connections currently open.
    pub open_connections: usize,
    /// Request streams received (HEADERS), across all connections.
    pub streams: usize,
    /// Streams answered with a complete response (END_STREAM sent).
    pub completed: usize,
    /// Streams refused with RST_STREAM(REFUSED_STREAM): by `refuse_streams`, or for exceeding
    /// the advertised `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub refused: usize,
    /// GOAWAY frames sent by `goaway_after` / `goaway_in_flight`.
    pub goaways: usize,
    /// Most request streams open at once on any one connection, counted by the peer: a stream
    /// is open from its HEADERS until the peer has sent END_STREAM, or a RST_STREAM went
    /// either way.
    pub max_concurrent: usize,
    /// Complete request bodies, in the order they finished arriving (up to 64 MiB in total).
    pub bodies: Vec<Bytes>,
    /// Bodies that arrived after the 64 MiB of [`Stats::bodies`] were used up.
    pub bodies_dropped: usize,
    /// Request paths (with query), in arrival order.
    pub paths: Vec<String>,
}

/// How the peer misbehaves. `Behaviour::default()` is a well-behaved server.
///
/// Knobs combine where that makes sense. Per stream, the first that applies wins:
/// refusal (`refuse_streams`, concurrency limit), then `goaway_*` (streams above the
/// last-stream-id are never answered), then `malformed_response_on`, `fail_all`,
/// `reset_after_headers`, `reset_no_error_after_response`, and finally the special paths.
#[derive(Clone, Debug, Default)]
pub struct Behaviour {
    /// SETTINGS_MAX_CONCURRENT_STREAMS in the server's first SETTINGS frame.
    pub max_concurrent_streams: Option<u32>,
    /// `(n, limit)`: right after the `n`th request stream on a connection arrives, send another
    /// SETTINGS frame with SETTINGS_MAX_CONCURRENT_STREAMS = `limit`. The limit binds streams
    /// the client opens after acknowledging it; its ACK is not passed on to `h2`.
    pub lower_max_concurrent_streams: Option<(usize, u32)>,
    /// SETTINGS_INITIAL_WINDOW_SIZE: how many request body bytes a client may send on a stream
    /// before the peer returns credit (it does so as it reads). 1 makes uploads crawl.
    pub initial_window_size: Option<u32>,
    /// Target connection-level receive window. Above 65,535 it is granted with a
    /// WINDOW_UPDATE right after the SETTINGS; below, credit is returned more slowly.
    pub initial_connection_window_size: Option<u32>,
    /// Answer the first `n` request streams (across all connections, counted from when this
    /// behaviour took effect) with RST_STREAM(REFUSED_STREAM), without reading their bodies.
    pub refuse_streams: usize,
    /// Read the body, then send response HEADERS (200, no END_STREAM) and one DATA frame,
    /// then RST_STREAM(INTERNAL_ERROR).
    pub reset_after_headers: bool,
    /// Without reading the request body, send a complete 200 response (END_STREAM), then
    /// RST_STREAM(NO_ERROR) if the client is still sending (RFC 9113 §8.1).
    pub reset_no_error_after_response: bool,
    /// After the `n`th request stream on a connection arrives: GOAWAY(NO_ERROR) naming that
    /// stream as last-stream-id. Streams up to it are answered normally; later ones never
    /// (not even reset). Once those are answered the connection is closed (FIN).
    pub goaway_after: Option<usize>,
    /// `(n, keep)`: once `n` request streams are open at once on a connection,
    /// GOAWAY(NO_ERROR) whose last-stream-id is the `keep`th lowest open stream (0 for
    /// `keep == 0`). Until then no stream is answered, so the GOAWAY always lands while
    /// requests are in flight. Streams up to the last-stream-id are answered normally, later
    /// ones never; then the connection is closed (FIN). A client that never has `n` streams
    /// open never gets an answer.
    pub goaway_in_flight: Option<(usize, u32)>,
    /// Read the client preface, then close (FIN) without having written a byte, SETTINGS
    /// included. With `settings_delay`, the close comes that long after the accept.
    pub close_before_settings: bool,
    /// Write nothing, SETTINGS included, for this long after the accept.
    pub settings_delay: Option<Duration>,
    /// Close (FIN, no GOAWAY) a connection once it has had no open request stream for this
    /// long, counting from the accept for a connection that never had one.
    pub close_idle_after: Option<Duration>,
    /// Read the body of requests to exactly this path, then answer with a hand-written invalid
    /// HEADERS frame (with END_STREAM) as chosen by `malformation`. Other streams on the
    /// connection are answered normally; the peer sends nothing more on the bad stream.
    pub malformed_response_on: Option<String>,
    /// How the `malformed_response_on` response is invalid.
    pub malformation: Malformation,
    /// After a complete response is on the wire, wait this long, then write a WINDOW_UPDATE
    /// (increment 1024) and a DATA frame (`stray`, no END_STREAM) on that closed stream, and
    /// keep serving. The client's connection window spent on the DATA is taken back out of
    /// its next connection WINDOW_UPDATEs before `h2` sees them, so `h2`'s flow-control
    /// accounting stays right.
    pub stray_frames_after_close: Option<Duration>,
    /// Read the body, then answer every request with this status and a short body.
    pub fail_all: Option<u16>,
}

/// The invalid response HEADERS sent by [`Behaviour::malformed_response_on`]. Each is a
/// malformed response (RFC 9113 §8.1.1), which a client must treat as a stream error of type
/// PROTOCOL_ERROR.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Malformation {
    /// No `:status` pseudo-header (RFC 9113 §8.3.2).
    #[default]
    MissingStatus,
    /// `:status: 200` and a connection-specific `connection: close` field (§8.2.2).
    ConnectionHeader,
    /// `:status: 200` and a field name with upper-case letters (§8.2.1). Note that `h2` (and so
    /// `hyper`) rejects these while decoding HPACK and closes the whole connection with
    /// GOAWAY(PROTOCOL_ERROR) instead of failing only the stream.
    UppercaseName,
}

/// Byte `offset + i` of the body of `/bytes/<n>` responses: `a`..`z`, repeating.
pub fn pattern(offset: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| b'a' + ((offset + i) % 26) as u8)
        .collect::<Vec<u8>>()
        .into()
}

impl H2Peer {
    /// Starts a peer on a free loopback port.
    pub async fn start(behaviour: Behaviour) -> H2Peer {
        H2Peer::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), behaviour)
            .await
            .expect("bind a loopback port for the HTTP/2 test peer")
    }

    /// Starts a peer on `addr` (e.g. the address of a stopped peer, for restart tests).
    pub async fn start_on(addr: SocketAddr, behaviour: Behaviour) -> std::io::Result<H2Peer> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            behaviour: Mutex::new(Arc::new(ActiveBehaviour::new(behaviour))),
            stats: Mutex::default(),
            connections: Mutex::default(),
            next_connection: AtomicUsize::new(0),
        });
        let accept = tokio::spawn(accept_loop(listener, Arc::clone(&shared)));
        Ok(H2Peer {
            addr,
            shared,
            accept,
        })
    }

    pub fn stats(&self) -> Stats {
        self.shared.stats().stats.clone()
    }

    /// Replaces the behaviour for connections accepted from now on; open connections keep
    /// theirs. `refuse_streams` counts again from zero.
    pub fn set_behaviour(&self, behaviour: Behaviour) {
        *lock(&self.shared.behaviour) = Arc::new(ActiveBehaviour::new(behaviour));
    }

    /// Aborts every open connection at once, as if the server process died: no GOAWAY, no
    /// RST_STREAM; the kernel closes each socket (FIN, or RST if unread bytes were pending).
    /// The peer keeps accepting new connections.
    pub fn kill_connections(&self) {
        let handles: Vec<AbortHandle> = lock(&self.shared.connections).values().cloned().collect();
        for handle in handles {
            handle.abort();
        }
    }

    /// Waits until `ready` holds for the stats, polling; `Err` with the last snapshot if it
    /// does not within `within`.
    pub async fn wait_for_stats(
        &self,
        within: Duration,
        ready: impl Fn(&Stats) -> bool,
    ) -> Result<Stats, Stats> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let stats = self.stats();
            if ready(&stats) {
                return Ok(stats);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(stats);
            }
            tokio::time::sleep(STATS_POLL).await;
        }
    }

    /// Stops the peer and waits until its listening socket and all its connections are
    /// closed, so `addr` can be bound again.
    pub async fn stop(mut self) {
        self.accept.abort();
        let _ = (&mut self.accept).await;
        self.kill_connections();
        let _ = self
            .wait_for_stats(Duration::from_secs(5), |s| s.open_connections == 0)
            .await;
    }
}

impl Drop for H2Peer {
    fn drop(&mut self) {
        self.accept.abort();
        self.kill_connections();
    }
}

/// State shared by the peer handle, the accept loop and all connections.
struct Shared {
    behaviour: Mutex<Arc<ActiveBehaviour>>,
    stats: Mutex<StatsState>,
    /// Open connections by index, for `kill_connections`.
    connections: Mutex<HashMap<usize, AbortHandle>>,
    next_connection: AtomicUsize,
}

#[derive(Default)]
struct StatsState {
    stats: Stats,
    stored_body_bytes: usize,
}

/// A behaviour together with the state it accumulates across connections.
struct ActiveBehaviour {
    behaviour: Behaviour,
    refused: AtomicUsize,
}

impl ActiveBehaviour {
    fn new(behaviour: Behaviour) -> ActiveBehaviour {
        ActiveBehaviour {
            behaviour,
            refused: AtomicUsize::new(0),
        }
    }

    /// Whether `refuse_streams` claims the next stream.
    fn take_refusal(&self) -> bool {
        let limit = self.behaviour.refuse_streams;
        self.refused
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }
}

impl Shared {
    fn stats(&self) -> MutexGuard<'_, StatsState> {
        lock(&self.stats)
    }

    fn record_stream(&self, path: String, open_now: usize) {
        let stats = &mut self.stats().stats;
        stats.streams += 1;
        stats.paths.push(path);
        stats.max_concurrent = stats.max_concurrent.max(open_now);
    }

    fn record_body(&self, body: Bytes) {
        let mut state = self.stats();
        if state.stored_body_bytes + body.len() <= MAX_STORED_BODY_BYTES {
            state.stored_body_bytes += body.len();
            state.stats.bodies.push(body);
        } else {
            state.stats.bodies_dropped += 1;
        }
    }

    fn record_completed(&self) {
        self.stats().stats.completed += 1;
    }

    fn record_refused(&self) {
        self.stats().stats.refused += 1;
    }

    fn record_goaway(&self) {
        self.stats().stats.goaways += 1;
    }

    /// Serves `socket` on a task of its own, registered for `kill_connections`.
    fn spawn_connection(self: &Arc<Self>, socket: TcpStream) {
        let index = self.next_connection.fetch_add(1, Ordering::SeqCst);
        let behaviour = Arc::clone(&lock(&self.behaviour));
        // Made before the task so that it is dropped (and counted) even if the task is aborted
        // before it first runs.
        let open = OpenConnection::new(Arc::clone(self), index);
        let mut connections = lock(&self.connections);
        let task = tokio::spawn(async move {
            connection::serve(Arc::clone(&open.shared), socket, index, behaviour).await;
            drop(open);
        });
        connections.insert(index, task.abort_handle());
    }
}

/// Counts a connection as open for as long as it lives.
struct OpenConnection {
    shared: Arc<Shared>,
    index: usize,
}

impl OpenConnection {
    fn new(shared: Arc<Shared>, index: usize) -> OpenConnection {
        {
            let stats = &mut shared.stats().stats;
            stats.connections += 1;
            stats.open_connections += 1;
        }
        OpenConnection { shared, index }
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.shared.stats().stats.open_connections -= 1;
        lock(&self.shared.connections).remove(&self.index);
    }
}

async fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        match listener.accept().await {
            Ok((socket, _)) => {
                let _ = socket.set_nodelay(true);
                shared.spawn_connection(socket);
            }
            Err(_) => tokio::time::sleep(ACCEPT_RETRY).await,
        }
    }
}

/// Locks `mutex`, ignoring poisoning: the data it guards stays consistent between statements.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}
