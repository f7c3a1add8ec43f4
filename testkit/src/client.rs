//! Minimal real clients: HTTP/1.1 and HTTP/2 prior knowledge over TCP, and both over TLS.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode, Version};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
pub type Body = BoxBody<Bytes, BoxError>;

/// A response read to the end.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub version: Version,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub trailers: Option<HeaderMap>,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

pub fn body(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

pub fn empty() -> Body {
    body(Bytes::new())
}

/// A request body the test feeds chunk by chunk; it ends when the sender is dropped.
pub fn channel_body() -> (tokio::sync::mpsc::Sender<Bytes>, Body) {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    (tx, ChannelBody(rx).boxed())
}

struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl hyper::body::Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, BoxError>>> {
        self.0
            .poll_recv(cx)
            .map(|b| b.map(|b| Ok(hyper::body::Frame::data(b))))
    }
}

async fn read(resp: http::Response<hyper::body::Incoming>) -> Result<Reply, BoxError> {
    let (parts, incoming) = resp.into_parts();
    let collected = incoming.collect().await?;
    let trailers = collected.trailers().cloned();
    Ok(Reply {
        status: parts.status,
        version: parts.version,
        headers: parts.headers,
        body: collected.to_bytes(),
        trailers,
    })
}

/// Which protocol a client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    H1,
    H2,
}

/// Sends one request on a new connection over any stream.
pub async fn send_on<S>(io: S, proto: Proto, req: Request<Body>) -> Result<Reply, BoxError>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    match proto {
        Proto::H1 => {
            let (mut tx, conn) = http1::handshake(TokioIo::new(io)).await?;
            tokio::spawn(conn);
            read(tx.send_request(req).await?).await
        }
        Proto::H2 => {
            let (mut tx, conn) = http2::handshake(TokioExecutor::new(), TokioIo::new(io)).await?;
            tokio::spawn(conn);
            read(tx.send_request(req).await?).await
        }
    }
}

/// Sends `req` over cleartext TCP. For HTTP/1.1 set a `host` header; for HTTP/2 use an absolute URI.
pub async fn send(addr: SocketAddr, proto: Proto, req: Request<Body>) -> Result<Reply, BoxError> {
    let stream = TcpStream::connect(addr).await?;
    send_on(stream, proto, req).await
}

/// Builds a request for `host` + `path` in the form `proto` needs.
pub fn request(proto: Proto, method: &str, host: &str, path: &str, b: Body) -> Request<Body> {
    let builder = Request::builder().method(method);
    let builder = match proto {
        Proto::H1 => builder.uri(path).header("host", host),
        Proto::H2 => builder
            .uri(format!("http://{host}{path}"))
            .version(Version::HTTP_2),
    };
    builder.body(b).expect("valid test request")
}

/// GET over HTTP/1.1.
pub async fn get(addr: SocketAddr, host: &str, path: &str) -> Result<Reply, BoxError> {
    send(
        addr,
        Proto::H1,
        request(Proto::H1, "GET", host, path, empty()),
    )
    .await
}

/// GET over HTTP/2 with prior knowledge.
pub async fn get_h2(addr: SocketAddr, host: &str, path: &str) -> Result<Reply, BoxError> {
    send(
        addr,
        Proto::H2,
        request(Proto::H2, "GET", host, path, empty()),
    )
    .await
}

/// A TLS connection to `addr` with SNI `server_name`, trusting `roots`, offering `alpn`.
/// Returns the stream, the negotiated ALPN protocol and the server's leaf certificate (DER).
pub async fn tls_connect(
    addr: SocketAddr,
    server_name: &str,
    roots: &[Vec<u8>],
    alpn: &[&[u8]],
) -> Result<
    (
        tokio_rustls::client::TlsStream<TcpStream>,
        Option<Vec<u8>>,
        Vec<u8>,
    ),
    BoxError,
> {
    let mut store = rustls::RootCertStore::empty();
    for der in roots {
        store.add(rustls::pki_types::CertificateDer::from(der.clone()))?;
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_root_certificates(store)
        .with_no_client_auth();
    config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let name = rustls::pki_types::ServerName::try_from(server_name.to_string())?;
    let stream = connector.connect(name, tcp).await?;
    let (_, session) = stream.get_ref();
    let alpn = session.alpn_protocol().map(|p| p.to_vec());
    let leaf = session
        .peer_certificates()
        .and_then(|c| c.first())
        .map(|c| c.to_vec())
        .ok_or("server sent no certificate")?;
    Ok((stream, alpn, leaf))
}
