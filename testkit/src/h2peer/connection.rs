//! One accepted TCP connection: the `h2` server connection, its stream handlers, and the
//! connection-level knobs (GOAWAY, SETTINGS changes, idle close).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use h2::server::SendResponse;
use h2::{Reason, RecvStream};
use http::Request;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::task::{self, JoinError, JoinSet};
use tokio::time::{timeout, Instant};

use super::exchange::{self, Kept, StreamCtx};
use super::splice::{SpliceIo, Wire};
use super::wire::{setting, Frame, PREFACE};
use super::{ActiveBehaviour, Shared};

/// How long a closing connection keeps reading (and discarding) after its FIN, so the kernel
/// does not answer unread client bytes with a RST.
const LINGER: Duration = Duration::from_secs(1);
/// How long `close_before_settings` waits for the client preface.
const PREFACE_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest legal flow-control window (RFC 9113 §6.9.1).
const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Serves one accepted connection until it closes.
pub(super) async fn serve(
    peer: Arc<Shared>,
    socket: TcpStream,
    index: usize,
    behaviour: Arc<ActiveBehaviour>,
) {
    let accepted_at = Instant::now();
    let knobs = &behaviour.behaviour;
    if knobs.close_before_settings {
        close_before_settings(
            socket,
            accepted_at + knobs.settings_delay.unwrap_or_default(),
        )
        .await;
        return;
    }

    let socket = Arc::new(socket);
    let first_settings = knobs
        .max_concurrent_streams
        .map(|limit| (setting::MAX_CONCURRENT_STREAMS, limit));
    let wire = Wire::new(first_settings.into_iter().collect());
    let io = SpliceIo::new(Arc::clone(&socket), Arc::clone(&wire), knobs.settings_delay);
    let mut builder = h2::server::Builder::new();
    if let Some(size) = knobs.initial_window_size {
        builder.initial_window_size(size.min(MAX_WINDOW));
    }
    if let Some(size) = knobs.initial_connection_window_size {
        builder.initial_connection_window_size(size.min(MAX_WINDOW));
    }
    if let Ok(h2) = builder.handshake::<_, Bytes>(io).await {
        Connection::new(peer, index, Arc::clone(&behaviour), wire)
            .run(h2)
            .await;
    }
    // `h2` and its IO object are gone, so this is the last reference to the socket.
    if let Ok(socket) = Arc::try_unwrap(socket) {
        close_gracefully(socket).await;
    }
}

/// Reads the client preface and closes without writing a byte (not even SETTINGS), no sooner
/// than `close_at`.
async fn close_before_settings(mut socket: TcpStream, close_at: Instant) {
    let mut preface = [0u8; PREFACE.len()];
    // Whatever the client sends, it gets nothing back; only the moment of the close varies.
    let _ = timeout(PREFACE_TIMEOUT, socket.read_exact(&mut preface)).await;
    tokio::time::sleep_until(close_at).await;
    close_gracefully(socket).await;
}

/// Sends FIN, then reads and discards until the client closes too (or [`LINGER`] passes).
async fn close_gracefully(mut socket: TcpStream) {
    if socket.shutdown().await.is_err() {
        return;
    }
    let mut sink = [0u8; 4096];
    let drain = async { while matches!(socket.read(&mut sink).await, Ok(n) if n > 0) {} };
    let _ = timeout(LINGER, drain).await;
}

struct Connection {
    peer: Arc<Shared>,
    index: usize,
    behaviour: Arc<ActiveBehaviour>,
    wire: Arc<Wire>,
    /// The last-stream-id of the GOAWAY sent on this connection, once one is sent.
    goaway: watch::Sender<Option<u32>>,
    /// Request streams in arrival order.
    accepted: Vec<u32>,
    handlers: JoinSet<Option<Kept>>,
    /// Stream id of every running handler.
    running: HashMap<task::Id, u32>,
    /// Streams left unanswered on purpose; see [`Kept`].
    kept: Vec<Kept>,
    last_handler_done: Instant,
}

impl Connection {
    fn new(
        peer: Arc<Shared>,
        index: usize,
        behaviour: Arc<ActiveBehaviour>,
        wire: Arc<Wire>,
    ) -> Connection {
        Connection {
            peer,
            index,
            behaviour,
            wire,
            goaway: watch::Sender::new(None),
            accepted: Vec::new(),
            handlers: JoinSet::new(),
            running: HashMap::new(),
            kept: Vec::new(),
            last_handler_done: Instant::now(),
        }
    }

    /// Accepts streams and drives `h2` until the connection fails, the client closes it, or a
    /// knob decides to close it. Dropping `h2` and the handlers afterwards sends nothing.
    async fn run(mut self, mut h2: h2::server::Connection<SpliceIo, Bytes>) {
        loop {
            let wire = Arc::clone(&self.wire);
            let changed = wire.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.done_after_goaway() || self.idle_expired() {
                return;
            }
            let idle_deadline = self.idle_deadline();
            tokio::select! {
                next = h2.accept() => match next {
                    Some(Ok((request, respond))) => self.on_request(request, respond),
                    Some(Err(_)) | None => return,
                },
                Some(done) = self.handlers.join_next_with_id(), if !self.handlers.is_empty() => {
                    self.on_handler_done(done);
                }
                () = &mut changed => {}
                () = sleep_until_some(idle_deadline) => {}
            }
        }
    }

    fn on_request(&mut self, request: Request<RecvStream>, mut respond: SendResponse<Bytes>) {
        let id = respond.stream_id().as_u32();
        self.accepted.push(id);
        let uri = request.uri();
        let path = uri
            .path_and_query()
            .map_or_else(|| uri.path().to_owned(), |p| p.as_str().to_owned());
        let limit = self.wire.limit_for(id);
        let open = self.wire.open_stream(id);
        self.peer.record_stream(path, open.unwrap_or(0));

        let over_limit =
            matches!((open, limit), (Some(open), Some(limit)) if open > limit as usize);
        if self.behaviour.take_refusal() || over_limit {
            respond.send_reset(Reason::REFUSED_STREAM);
            self.peer.record_refused();
        } else if open.is_some() {
            let ctx = StreamCtx {
                id,
                conn_index: self.index,
                peer: Arc::clone(&self.peer),
                behaviour: Arc::clone(&self.behaviour),
                wire: Arc::clone(&self.wire),
                goaway: self.goaway.subscribe(),
            };
            let handler = self.handlers.spawn(exchange::serve(ctx, request, respond));
            self.running.insert(handler.id(), id);
        }
        self.apply_stream_count_knobs(id);
    }

    /// The knobs that fire when a stream arrives: `goaway_after`, `lower_max_concurrent_streams`
    /// and `goaway_in_flight`.
    fn apply_stream_count_knobs(&mut self, id: u32) {
        let behaviour = Arc::clone(&self.behaviour);
        let knobs = &behaviour.behaviour;
        let count = self.accepted.len();
        if knobs.goaway_after == Some(count) {
            self.send_goaway(id);
        }
        if let Some((after, limit)) = knobs.lower_max_concurrent_streams {
            if after == count {
                let settings = Frame::settings(&[(setting::MAX_CONCURRENT_STREAMS, limit)]);
                self.wire.inject(&[settings]);
            }
        }
        if let Some((in_flight, keep)) = knobs.goaway_in_flight {
            let open = self.wire.open_streams();
            if open.len() >= in_flight {
                let keep = usize::try_from(keep).unwrap_or(usize::MAX).min(open.len());
                let last = keep.checked_sub(1).map_or(0, |i| open[i]);
                self.send_goaway(last);
            }
        }
    }

    /// Sends GOAWAY(NO_ERROR) with `last` as last-stream-id, unless one was sent already.
    fn send_goaway(&mut self, last: u32) {
        if self.goaway.borrow().is_some() {
            return;
        }
        self.wire.inject(&[Frame::goaway(last, Reason::NO_ERROR)]);
        self.goaway.send_replace(Some(last));
        self.peer.record_goaway();
    }

    fn on_handler_done(&mut self, done: Result<(task::Id, Option<Kept>), JoinError>) {
        let task = match done {
            Ok((task, kept)) => {
                self.kept.extend(kept);
                task
            }
            Err(e) => e.id(),
        };
        self.running.remove(&task);
        self.last_handler_done = Instant::now();
    }

    /// After a GOAWAY: every stream at or below its last-stream-id is answered (or reset), its
    /// handler has finished, and everything written has reached the socket.
    fn done_after_goaway(&self) -> bool {
        let Some(last) = *self.goaway.borrow() else {
            return false;
        };
        let answered: Vec<u32> = self
            .accepted
            .iter()
            .copied()
            .filter(|&id| id <= last)
            .collect();
        let running = answered
            .iter()
            .any(|id| self.running.values().any(|running| running == id));
        !running && self.wire.finished(answered)
    }

    /// When an idle connection is to be closed, if it is idle and `close_idle_after` is set.
    fn idle_deadline(&self) -> Option<Instant> {
        let limit = self.behaviour.behaviour.close_idle_after?;
        if !self.running.is_empty() {
            return None;
        }
        let since = self.wire.idle_since()?.max(self.last_handler_done);
        Some(since + limit)
    }

    fn idle_expired(&self) -> bool {
        self.idle_deadline()
            .is_some_and(|deadline| deadline <= Instant::now() && self.wire.finished([]))
    }
}

/// Sleeps until `deadline`; never resolves for `None`.
async fn sleep_until_some(deadline: Option<Instant>) {
    match deadline {
        Some(deadline) => tokio::time::sleep_until(deadline).await,
        None => std::future::pending().await,
    }
}
