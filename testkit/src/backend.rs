//! A real HTTP backend: HTTP/1.1 and HTTP/2 (prior knowledge) on one port, reporting what it saw.
//!
//! Every response carries `x-backend` (the backend's name) and `x-seen-*` headers describing the
//! request as it arrived. Paths with special behaviour:
//! - `/slow/<ms>`: answers after `<ms>` milliseconds.
//! - `/echo`: streams the request body back.
//! - `/grpc`: a gRPC-style response with `grpc-status` / `grpc-message` trailers.
//! - `/bytes/<n>`: a body of `n` bytes, streamed in 16 KiB chunks.
//! - `/status/<code>`: answers with that status.
//! - `/flaky/<n>`: the first `n` requests to any `/flaky/` path answer 503, later ones 200.
//!   Every response carries `x-body-sha` (length and checksum of the request body received).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

type Body = BoxBody<Bytes, hyper::Error>;

/// A running backend; stops when dropped.
pub struct Backend {
    pub addr: SocketAddr,
    pub name: String,
    hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Backend {
    /// Starts a backend named `name` on `bind` (use port 0 for any free port).
    pub async fn start(name: &str, bind: SocketAddr) -> std::io::Result<Backend> {
        let listener = TcpListener::bind(bind).await?;
        let addr = listener.local_addr()?;
        let hits = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept(
            listener,
            None,
            name.to_string(),
            hits.clone(),
            connections.clone(),
        ));
        Ok(Backend {
            addr,
            name: name.to_string(),
            hits,
            connections,
            task,
        })
    }

    /// Starts a TLS backend (ALPN `h2` and `http/1.1`) with the given certificate and key.
    pub async fn start_tls(name: &str, cert_pem: &str, key_pem: &str) -> std::io::Result<Backend> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let certs =
            rustls_pemfile::certs(&mut cert_pem.as_bytes()).collect::<Result<Vec<_>, _>>()?;
        let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())?.ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no private key in PEM")
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(std::io::Error::other)?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(std::io::Error::other)?;
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        let hits = Arc::new(AtomicUsize::new(0));
        let connections = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(accept(
            listener,
            Some(acceptor),
            name.to_string(),
            hits.clone(),
            connections.clone(),
        ));
        Ok(Backend {
            addr,
            name: name.to_string(),
            hits,
            connections,
            task,
        })
    }

    /// Starts a backend on a free loopback port.
    pub async fn local(name: &str) -> Backend {
        Self::start(name, "127.0.0.1:0".parse().expect("literal address"))
            .await
            .expect("bind a loopback port for a test backend")
    }

    /// Requests this backend has received.
    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    /// TCP connections this backend has accepted.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn accept(
    listener: TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    name: String,
    hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
) {
    let flaky = Arc::new(AtomicUsize::new(0));
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        connections.fetch_add(1, Ordering::SeqCst);
        let (tls, name, hits, flaky) = (tls.clone(), name.clone(), hits.clone(), flaky.clone());
        tokio::spawn(async move {
            match tls {
                None => serve(stream, name, hits, flaky).await,
                Some(acceptor) => {
                    if let Ok(stream) = acceptor.accept(stream).await {
                        serve(stream, name, hits, flaky).await;
                    }
                }
            }
        });
    }
}

/// Serves one connection, HTTP/1.1 or HTTP/2 (told apart by the preface).
async fn serve<I>(io: I, name: String, hits: Arc<AtomicUsize>, flaky: Arc<AtomicUsize>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        hits.fetch_add(1, Ordering::SeqCst);
        respond(name.clone(), req, flaky.clone())
    });
    let _ = auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), service)
        .await;
}

fn seen_headers(req: &Request<Incoming>, name: &str) -> HeaderMap {
    let mut h = HeaderMap::new();
    let mut put = |k: &'static str, v: String| {
        if let Ok(v) = HeaderValue::from_str(&v) {
            h.insert(k, v);
        }
    };
    put("x-backend", name.to_string());
    put("x-seen-version", format!("{:?}", req.version()));
    put("x-seen-method", req.method().to_string());
    put(
        "x-seen-path",
        req.uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
    );
    let authority = req
        .uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get("host")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        })
        .unwrap_or_default();
    put("x-seen-authority", authority);
    for (name, header) in [
        ("x-seen-xff", "x-forwarded-for"),
        ("x-seen-proto", "x-forwarded-proto"),
        ("x-seen-xfh", "x-forwarded-host"),
        ("x-seen-te", "te"),
        ("x-seen-connection", "connection"),
        ("x-seen-expect", "expect"),
        ("x-seen-hop", "x-hop"),
    ] {
        if let Some(v) = req.headers().get(header).and_then(|v| v.to_str().ok()) {
            put(name, v.to_string());
        }
    }
    h
}

fn full(b: impl Into<Bytes>) -> Body {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// Length and a simple checksum of a body, to compare what arrived with what was sent.
pub fn body_digest(body: &[u8]) -> String {
    let sum = body.iter().fold(0u64, |acc, b| {
        acc.wrapping_mul(31).wrapping_add(u64::from(*b))
    });
    format!("{}:{sum:x}", body.len())
}

async fn respond(
    name: String,
    req: Request<Incoming>,
    flaky: Arc<AtomicUsize>,
) -> Result<Response<Body>, Infallible> {
    let mut headers = seen_headers(&req, &name);
    let path = req.uri().path().to_string();
    let req_version = req.version();
    let mut resp = if let Some(n) = path.strip_prefix("/flaky/") {
        let n: usize = n.parse().unwrap_or(0);
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        if let Ok(v) = HeaderValue::from_str(&body_digest(&body)) {
            headers.insert("x-body-sha", v);
        }
        let mut resp = Response::new(full(name.clone()));
        if flaky.fetch_add(1, Ordering::SeqCst) < n {
            *resp.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
        }
        resp
    } else if let Some(code) = path.strip_prefix("/status/") {
        let mut resp = Response::new(full(name.clone()));
        if let Ok(code) = http::StatusCode::from_bytes(code.as_bytes()) {
            *resp.status_mut() = code;
        }
        resp
    } else if let Some(ms) = path.strip_prefix("/slow/") {
        let ms = ms.parse().unwrap_or(1000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        Response::new(full(name.clone()))
    } else if path == "/echo" {
        Response::new(req.into_body().boxed())
    } else if path == "/grpc" {
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let mut trailers = HeaderMap::new();
        trailers.insert("grpc-status", HeaderValue::from_static("0"));
        trailers.insert("grpc-message", HeaderValue::from_static("ok"));
        let frames: Vec<Result<Frame<Bytes>, hyper::Error>> =
            vec![Ok(Frame::data(body)), Ok(Frame::trailers(trailers))];
        let mut resp = Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed());
        resp.headers_mut()
            .insert("content-type", HeaderValue::from_static("application/grpc"));
        // HTTP/1.1 can only carry trailers that the head announces.
        if req_version < http::Version::HTTP_2 {
            resp.headers_mut().insert(
                "trailer",
                HeaderValue::from_static("grpc-status, grpc-message"),
            );
        }
        resp
    } else if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        let chunk = Bytes::from(vec![b'x'; 16 * 1024]);
        let mut frames = Vec::new();
        let mut left = n;
        while left > 0 {
            let take = left.min(chunk.len());
            frames.push(Ok(Frame::data(chunk.slice(..take))));
            left -= take;
        }
        Response::new(StreamBody::new(futures_util::stream::iter(frames)).boxed())
    } else {
        Response::new(full(name.clone()))
    };
    resp.headers_mut().extend(headers);
    Ok(resp)
}
