//! The byte stream to an endpoint: plain TCP, or TLS over TCP (with SNI and ALPN).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use super::error::{AttemptError, Failure};
use crate::table::UpstreamTls;

pub(crate) enum Io {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
}

/// Why a connection could not be made; `reason` is the bounded label for metrics.
pub(crate) struct ConnectError {
    pub(crate) error: AttemptError,
    pub(crate) reason: &'static str,
}

/// Connects to `addr`, then runs the TLS handshake when `tls` is set, requiring the peer to
/// agree to `alpn`. A failed handshake is a connect failure (the request was never written).
pub(crate) async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    tls: Option<&UpstreamTls>,
    alpn: &[u8],
) -> Result<Io, ConnectError> {
    let fail = |failure, reason, detail: String| ConnectError {
        error: AttemptError::new(failure, Some(addr), detail),
        reason,
    };
    let work = async {
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(|e| fail(Failure::Connect, "connect-failed", e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let Some(tls) = tls else {
            return Ok(Io::Plain(tcp));
        };
        let connector = tokio_rustls::TlsConnector::from(tls.config_for(alpn));
        let stream = connector
            .connect(tls.server_name.clone(), tcp)
            .await
            .map_err(|e| {
                fail(
                    Failure::TlsHandshake,
                    "tls-handshake-failed",
                    format!("TLS with {}: {e}", tls.hostname),
                )
            })?;
        if stream.get_ref().1.alpn_protocol() != Some(alpn) {
            let wanted = String::from_utf8_lossy(alpn).into_owned();
            return Err(fail(
                Failure::TlsHandshake,
                "tls-handshake-failed",
                format!(
                    "TLS with {}: the backend did not agree to ALPN {wanted}",
                    tls.hostname
                ),
            ));
        }
        Ok(Io::Tls(Box::new(stream)))
    };
    match tokio::time::timeout(timeout, work).await {
        Ok(result) => result,
        Err(_) => Err(fail(
            Failure::ConnectTimeout,
            "connect-timeout",
            String::new(),
        )),
    }
}

impl AsyncRead for Io {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Io {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Io::Plain(s) => s.is_write_vectored(),
            Io::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_flush(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Io::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Io::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }
}
