//! Dialing one endpoint and running the HTTP/1.1 or HTTP/2 client connection on it.

use std::net::SocketAddr;
use std::time::Duration;

use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpStream;

use super::error::UpstreamError;
use crate::proxy::body::ProxyBody;

async fn dial(addr: SocketAddr, timeout: Duration) -> Result<TokioIo<TcpStream>, UpstreamError> {
    let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| UpstreamError::ConnectTimeout { addr })?
        .map_err(|source| UpstreamError::Connect { addr, source })?;
    // Latency matters more than packet count for a proxy; failure here is harmless.
    let _ = stream.set_nodelay(true);
    Ok(TokioIo::new(stream))
}

pub(super) async fn http1(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<http1::SendRequest<ProxyBody>, UpstreamError> {
    let io = dial(addr, timeout).await?;
    let (sender, conn) = http1::Builder::new()
        .handshake(io)
        .await
        .map_err(|source| UpstreamError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%addr, %error, "upstream HTTP/1.1 connection ended with an error");
        }
    });
    Ok(sender)
}

pub(super) async fn http2(
    addr: SocketAddr,
    timeout: Duration,
) -> Result<http2::SendRequest<ProxyBody>, UpstreamError> {
    let io = dial(addr, timeout).await?;
    let (sender, conn) = http2::Builder::new(TokioExecutor::new())
        .timer(TokioTimer::new())
        .initial_stream_window_size(1 << 20)
        .initial_connection_window_size(4 << 20)
        .handshake(io)
        .await
        .map_err(|source| UpstreamError::Handshake { addr, source })?;
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%addr, %error, "upstream HTTP/2 connection ended with an error");
        }
    });
    Ok(sender)
}
