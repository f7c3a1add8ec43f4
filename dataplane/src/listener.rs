//! Client-facing listeners: cleartext (HTTP/1.1 and HTTP/2 prior knowledge told apart by the
//! connection preface) and TLS (ALPN `h2` / `http/1.1`, certificate by SNI), with graceful drain.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio_rustls::TlsAcceptor;

use crate::proxy::ClientConn;
use crate::state::Dataplane;

const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// The client-facing sockets, already bound.
#[derive(Debug, Default)]
pub struct Listeners {
    pub http: Option<TcpListener>,
    pub https: Option<TcpListener>,
}

type Builder = auto::Builder<TokioExecutor>;

fn builder() -> Builder {
    let mut b = auto::Builder::new(TokioExecutor::new());
    b.http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .keep_alive(true);
    b.http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(256)
        .keep_alive_interval(Some(Duration::from_secs(30)));
    b
}

/// Serves client traffic until `shutdown` resolves, then stops accepting, tells every
/// connection to finish (GOAWAY for HTTP/2, close after the current response for HTTP/1.1),
/// and waits up to `drain_timeout` for in-flight requests.
pub async fn serve(
    dataplane: Arc<Dataplane>,
    listeners: Listeners,
    shutdown: impl Future<Output = ()>,
    drain_timeout: Duration,
) {
    let graceful = Arc::new(GracefulShutdown::new());
    let builder = Arc::new(builder());
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut loops = JoinSet::new();
    if let Some(listener) = listeners.http {
        loops.spawn(accept_loop(
            listener,
            None,
            dataplane.clone(),
            graceful.clone(),
            builder.clone(),
            stop_rx.clone(),
        ));
    }
    if let Some(listener) = listeners.https {
        let acceptor = TlsAcceptor::from(crate::tls::server_config(dataplane.current.clone()));
        loops.spawn(accept_loop(
            listener,
            Some(acceptor),
            dataplane.clone(),
            graceful.clone(),
            builder.clone(),
            stop_rx.clone(),
        ));
    }
    shutdown.await;
    tracing::info!(
        ?drain_timeout,
        "shutting down: no new connections, draining in-flight requests"
    );
    dataplane.start_draining();
    let _ = stop_tx.send(true);
    while loops.join_next().await.is_some() {}
    let Ok(graceful) = Arc::try_unwrap(graceful) else {
        tracing::error!("accept loops still hold the drain handle; exiting without drain");
        return;
    };
    let open = graceful.count();
    match tokio::time::timeout(drain_timeout, graceful.shutdown()).await {
        Ok(()) => tracing::info!(connections = open, "drained"),
        Err(_) => tracing::warn!("drain timeout reached; closing remaining connections"),
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    dataplane: Arc<Dataplane>,
    graceful: Arc<GracefulShutdown>,
    builder: Arc<Builder>,
    mut stop: watch::Receiver<bool>,
) {
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
        let watcher = graceful.watcher();
        let session = dataplane.session();
        let dataplane = dataplane.clone();
        let builder = builder.clone();
        match &tls {
            None => {
                let client = ClientConn {
                    addr,
                    tls: false,
                    session,
                };
                tokio::spawn(serve_conn(stream, client, dataplane, builder, watcher));
            }
            Some(acceptor) => {
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    let handshake =
                        tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream));
                    match handshake.await {
                        Ok(Ok(stream)) => {
                            let client = ClientConn {
                                addr,
                                tls: true,
                                session,
                            };
                            serve_conn(stream, client, dataplane, builder, watcher).await
                        }
                        Ok(Err(error)) => tracing::debug!(%addr, %error, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%addr, "TLS handshake timed out"),
                    }
                });
            }
        }
    }
}

async fn serve_conn<I>(
    io: I,
    client: ClientConn,
    dataplane: Arc<Dataplane>,
    builder: Arc<Builder>,
    watcher: Watcher,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let addr = client.addr;
    let service = service_fn(move |req| {
        let dataplane = dataplane.clone();
        let client = client.clone();
        async move { dataplane.handle(req, client).await }
    });
    let conn = builder.serve_connection(TokioIo::new(io), service);
    if let Err(error) = watcher.watch(conn).await {
        tracing::debug!(client = %addr, %error, "client connection ended with an error");
    }
}

/// Binds a listener, naming the flag in the error.
pub async fn bind(flag: &str, addr: SocketAddr) -> std::io::Result<TcpListener> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| std::io::Error::new(e.kind(), format!("{flag} {addr}: {e}")))
}
