//! Client-facing listeners: cleartext (HTTP/1.1 and HTTP/2 prior knowledge told apart by the
//! connection preface) and TLS (ALPN `h2` / `http/1.1`, certificate by SNI), with graceful drain.
//! HTTP/1.1 and HTTP/2 connections are served by weir's own servers ([`h1`], [`h2`]).

mod h1;
mod h2;
mod sniff;

use std::future::Future;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::proxy::ClientConn;
use crate::state::Dataplane;
use sniff::{Prefixed, Protocol};

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);
const FIRST_READ: usize = 16 * 1024;

/// The client-facing sockets, already bound.
#[derive(Debug, Default)]
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
}

/// Serves client traffic until `shutdown` resolves, then stops accepting, tells every
/// connection to finish (GOAWAY for HTTP/2, close after the current response for HTTP/1.1),
/// and waits up to `drain_timeout` for in-flight requests.
///
/// `workers` event loops accept and serve connections: the caller's runtime, and `workers - 1`
/// threads of their own, each with a single-threaded runtime, all accepting on the same sockets.
/// A connection stays on the loop that accepted it, so its request and response work is never
/// handed between threads, and the tasks a request wakes run after the current one, which lets
/// a connection's writes batch instead of one write per frame.
pub async fn serve(
    dataplane: Arc<Dataplane>,
    listeners: Listeners,
    workers: usize,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) {
    let connections = TaskTracker::new();
    let drain = CancellationToken::new();
    let (stop_tx, stop_rx) = watch::channel(false);
    let ctx = Accept {
        dataplane: dataplane.clone(),
        connections: connections.clone(),
        drain: drain.clone(),
        stop: stop_rx,
    };
    let (done_tx, done_rx) = watch::channel(false);
    let tls = listeners
        .https
        .as_ref()
        .map(|_| TlsAcceptor::from(crate::tls::server_config(dataplane.current.clone())));
    let mut loops = JoinSet::new();
    let mut stopped = Vec::new();
    for worker in 1..workers.max(1) {
        let (Ok(http), Ok(https)) = (duplicate(&listeners.http), duplicate(&listeners.https))
        else {
            tracing::error!(
                worker,
                "cannot share the listening sockets; serving with fewer workers"
            );
            break;
        };
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        stopped.push(rx);
        let (ctx, tls, done) = (ctx.clone(), tls.clone(), done_rx.clone());
        let spawned = std::thread::Builder::new()
            .name(format!("weir-worker-{worker}"))
            .spawn(move || worker_thread(ctx, http, https, tls, tx, done));
        if let Err(error) = spawned {
            tracing::error!(worker, %error, "cannot start a worker thread");
        }
    }
    if let Some(listener) = listeners.http {
        loops.spawn(accept_loop(listener, None, ctx.clone()));
    }
    if let Some(listener) = listeners.https {
        loops.spawn(accept_loop(listener, tls.clone(), ctx.clone()));
    }
    drop(ctx);
    shutdown.await;
    tracing::info!(
        ?drain_timeout,
        "shutting down: no new connections, draining in-flight requests"
    );
    dataplane.start_draining();
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    for rx in stopped {
        let _ = rx.await;
    }
    connections.close();
    let open = connections.len();
    drain.cancel();
    match tokio::time::timeout(drain_timeout, connections.wait()).await {
        Ok(()) => tracing::info!(connections = open, "drained"),
        Err(_) => tracing::warn!("drain timeout reached; closing remaining connections"),
    }
    let _ = done_tx.send(true);
}

/// What an accept loop shares with the others.
#[derive(Clone)]
struct Accept {
    dataplane: Arc<Dataplane>,
    /// Every client connection, to wait for in the drain.
    connections: TaskTracker,
    /// Tells connections to finish: GOAWAY for HTTP/2, close after the response for HTTP/1.1.
    drain: CancellationToken,
    stop: watch::Receiver<bool>,
}

/// Another handle on the same listening socket, for another worker's event loop.
fn duplicate(listener: &Option<TcpListener>) -> std::io::Result<Option<std::net::TcpListener>> {
    listener
        .as_ref()
        .map(|l| Ok(std::net::TcpListener::from(l.as_fd().try_clone_to_owned()?)))
        .transpose()
}

/// One extra worker: accepts until told to stop, then keeps serving its connections until
/// the drain is over (`done`).
fn worker_thread(
    ctx: Accept,
    http: Option<std::net::TcpListener>,
    https: Option<std::net::TcpListener>,
    tls: Option<TlsAcceptor>,
    stopped: tokio::sync::oneshot::Sender<()>,
    mut done: watch::Receiver<bool>,
) {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(error) => {
            tracing::error!(%error, "cannot start a worker runtime");
            return;
        }
    };
    runtime.block_on(async move {
        let mut loops = JoinSet::new();
        for (listener, tls) in [(http, None), (https, tls)] {
            let Some(listener) = listener else { continue };
            match TcpListener::from_std(listener) {
                Ok(listener) => {
                    loops.spawn(accept_loop(listener, tls, ctx.clone()));
                }
                Err(error) => tracing::error!(%error, "worker cannot use a listening socket"),
            }
        }
        drop(ctx);
        while loops.join_next().await.is_some() {}
        let _ = stopped.send(());
        let _ = done.wait_for(|d| *d).await;
    });
}

async fn accept_loop(listener: TcpListener, tls: Option<TlsAcceptor>, ctx: Accept) {
    let mut stop = ctx.stop.clone();
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|s| *s) => return,
        };
        let (stream, addr) = match accepted {
            Ok(a) => a,
            Err(error) => {
                // Usually out of file descriptors: back off briefly instead of spinning.
                tracing::warn!(%error, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let session = ctx.dataplane.session();
        let conn = ctx.clone();
        match &tls {
            None => {
                let client = ClientConn::new(addr, false, session);
                ctx.connections
                    .spawn(serve_conn(stream, client, conn, false));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                ctx.connections.spawn(async move {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let h2 = stream.get_ref().1.alpn_protocol() == Some(b"h2");
                            let client = ClientConn::new(addr, true, session);
                            serve_conn(stream, client, conn, h2).await
                        }
                        Ok(Err(error)) => tracing::debug!(%addr, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

/// Serves one client connection with the protocol it speaks: `h2` when ALPN chose it, else
/// what its first bytes say.
async fn serve_conn<I>(mut io: I, client: ClientConn, ctx: Accept, alpn_h2: bool)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // Room for a whole typical head in the first read (the HTTP/1.1 server reads on in it).
    let mut first = BytesMut::with_capacity(FIRST_READ);
    let deadline = tokio::time::Instant::now() + HEADER_READ_TIMEOUT;
    let protocol = if alpn_h2 {
        Protocol::Http2
    } else {
        let read = sniff::read_protocol(&mut io, &mut first);
        let protocol = tokio::select! {
            protocol = tokio::time::timeout_at(deadline, read) => protocol.ok().flatten(),
            _ = ctx.drain.cancelled() => None,
        };
        let Some(protocol) = protocol else { return };
        protocol
    };
    match protocol {
        Protocol::Http1 => {
            h1::serve(
                io,
                first,
                client,
                ctx.dataplane,
                ctx.drain,
                HEADER_READ_TIMEOUT,
                deadline,
            )
            .await
        }
        Protocol::Http2 => {
            let io = Prefixed::new(first.freeze(), io);
            h2::serve(io, client, ctx.dataplane, ctx.drain).await
        }
    }
}

/// Binds a listener, naming the flag in the error.
pub async fn bind(flag: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{flag} {addr}: {e}")))
}
