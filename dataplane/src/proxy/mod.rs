//! The request path after the listener: route → backend → retry loop over the pool, and the
//! response back.

pub(crate) mod access_log;
pub mod body;
pub(crate) mod headers;
mod local;
pub(crate) mod replay;
pub(crate) mod retry;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::uri::{self, Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use tokio::time::Instant;

use crate::metrics::{Code, RequestMetrics};
use crate::router::normalize_host;
use crate::session::Session;
use crate::state::{Dataplane, Snapshot};
use crate::table::Protocol;
use crate::upstream::{Failure, SafetyClass, Want};
use body::{Completion, LogFields, Metered, ProxyBody};
use retry::{AttemptRecord, Exchange, Outcome};

pub use access_log::AccessLog;

/// What the proxy knows about the client connection a request arrived on.
#[derive(Debug, Clone)]
pub(crate) struct ClientConn {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: bool,
    pub(crate) session: Arc<Session>,
    /// The client's address as an `X-Forwarded-For` element.
    xff: HeaderValue,
}

impl ClientConn {
    pub(crate) fn new(addr: SocketAddr, tls: bool, session: Arc<Session>) -> Self {
        Self {
            addr,
            tls,
            session,
            xff: headers::client_address(addr.ip()),
        }
    }

    fn proto(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// The authority the client addressed: `:authority` / absolute URI first, then `Host`. Held
/// as the request's own shared bytes, not a copy.
enum ClientAuthority {
    Target(Authority),
    /// A `Host` value that is visible ASCII (checked when taken).
    Host(HeaderValue),
}

impl ClientAuthority {
    fn of<B>(req: &Request<B>) -> Option<Self> {
        if let Some(a) = req.uri().authority() {
            return Some(ClientAuthority::Target(a.clone()));
        }
        let host = req.headers().get(header::HOST)?;
        host.to_str().ok()?;
        Some(ClientAuthority::Host(host.clone()))
    }

    fn as_str(&self) -> &str {
        match self {
            ClientAuthority::Target(a) => a.as_str(),
            ClientAuthority::Host(h) => h.to_str().unwrap_or_default(),
        }
    }
}

/// The answer to an HTTP/2 client when the backend provably did not process its request:
/// the client's stream is reset with REFUSED_STREAM, so the client may retry it.
#[derive(Debug)]
pub(crate) struct Refused;

/// How a request ended, before its response body.
enum Answer {
    Respond(Response<ProxyBody>),
    /// Reset the client's HTTP/2 stream with REFUSED_STREAM: the backend provably did not
    /// process the request, so the client may retry it.
    Refuse,
}

struct Dispatched {
    /// Where the request's metrics go: its route and service, or the proxy's own answers.
    metrics: Arc<RequestMetrics>,
    answer: Answer,
    attempts: Vec<AttemptRecord>,
}

impl Dataplane {
    /// Serves one request from the current snapshot. Errors become responses, except an
    /// unprocessed failure on an HTTP/2 client stream, which becomes REFUSED_STREAM.
    pub(crate) async fn handle(
        &self,
        req: Request<ProxyBody>,
        client: &ClientConn,
    ) -> Result<Response<ProxyBody>, Refused> {
        let start = Instant::now();
        let snapshot: Arc<Snapshot> = self.current.load_full();
        let version = req.version();
        let log = self.access_log.as_ref().map(|log| {
            Box::new(LogFields {
                log: log.clone(),
                time: std::time::SystemTime::now(),
                client: client.addr,
                method: req.method().to_string(),
                authority: ClientAuthority::of(&req)
                    .map(|a| a.as_str().to_string())
                    .unwrap_or_default(),
                path: req.uri().path().to_string(),
                attempts: Vec::new(),
            })
        });
        // Boxed: the dispatch state (retry loop, attempt, pool lease, protocol send) is a few
        // KiB; kept inline it would be copied each time a server moves the request's future (into
        // its task, among others). One allocation, written in place (`boxed::in_place`).
        let d = crate::boxed::in_place(|| self.dispatch(&snapshot, req, client, start)).await;
        let mut completion = Completion {
            metrics: d.metrics,
            code: Code::Refused,
            start,
            bytes: 0,
            log,
        };
        if let Some(log) = completion.log.as_mut() {
            log.attempts = d.attempts;
        }
        match d.answer {
            Answer::Respond(mut resp) => {
                *resp.version_mut() = version;
                completion.code = Code::Status(resp.status().as_u16());
                Ok(resp.map(|b| ProxyBody::new(Metered::new(b, completion))))
            }
            Answer::Refuse => {
                drop(completion);
                Err(Refused)
            }
        }
    }

    async fn dispatch(
        &self,
        snapshot: &Snapshot,
        req: Request<ProxyBody>,
        client: &ClientConn,
        start: Instant,
    ) -> Dispatched {
        let first = client.session.begin_request();
        let here = |resp| Dispatched {
            metrics: self.metrics.local.clone(),
            answer: Answer::Respond(resp),
            attempts: Vec::new(),
        };
        if req.method() == Method::CONNECT {
            return here(local::method_not_allowed());
        }
        let Some(authority) = ClientAuthority::of(&req) else {
            return here(local::missing_host());
        };
        let authority = authority.as_str();
        let host = normalize_host(authority);
        let Some(decision) = snapshot.table.route(&host, req.uri().path()) else {
            return here(local::no_route());
        };
        let Some(pool) = snapshot.pool(decision.backend).cloned() else {
            return here(local::no_backend(decision.route));
        };
        let metrics = pool.metrics.routes.get(decision.route);
        let client_wants_trailers = headers::wants_trailers(req.headers());
        let client_version = req.version();
        let protocol = pool.key().protocol;
        let policy = pool.policy();

        let (head, body) = match to_upstream(req, authority, client, protocol) {
            Ok(parts) => parts,
            Err(InvalidTarget) => {
                return Dispatched {
                    metrics,
                    answer: Answer::Respond(local::bad_request()),
                    attempts: Vec::new(),
                }
            }
        };
        let exchange = Exchange {
            pool: &pool,
            policy: policy.clone(),
            want: Want {
                session: &client.session,
                first,
                race_is_retried: retry::race_is_retried(&policy, protocol, &head.method),
            },
            head,
            replay: replay::Replay::new(body, policy.retry.max_replay_bytes),
            start,
        };
        let (outcome, attempts) = retry::run(exchange).await;
        let answer = match outcome {
            Outcome::Response(resp) => {
                let (mut parts, body) = resp.into_parts();
                headers::strip_hop_by_hop(&mut parts.headers);
                if client_version < Version::HTTP_2 {
                    headers::announce_grpc_trailers(&mut parts.headers, client_wants_trailers);
                }
                let body = match policy.timeouts.idle {
                    Some(idle) => ProxyBody::new(body::IdleTimeout::new(body, idle)),
                    None => body,
                };
                Answer::Respond(Response::from_parts(parts, body))
            }
            Outcome::Failed(error) => {
                let (route, service) = (&*metrics.route, &*metrics.service);
                tracing::warn!(%route, %service, %error, class = error.class().label(), "upstream request failed");
                match error.failure {
                    Failure::NoEndpoints => {
                        let reason = pool.unavailable_reason();
                        Answer::Respond(local::no_endpoints(
                            service,
                            reason.as_deref().map(|s| s.as_str()),
                        ))
                    }
                    Failure::PoolExhausted => Answer::Respond(local::pool_exhausted(service)),
                    // The client's own body failed (invalid framing, or it went away).
                    Failure::RequestBody => Answer::Respond(local::bad_request_body()),
                    f if f.class() == SafetyClass::Unprocessed
                        && client_version == Version::HTTP_2 =>
                    {
                        Answer::Refuse
                    }
                    Failure::ConnectTimeout | Failure::ResponseTimeout => {
                        Answer::Respond(local::gateway_timeout(service))
                    }
                    _ => Answer::Respond(local::bad_gateway(service)),
                }
            }
        };
        Dispatched {
            metrics,
            answer,
            attempts,
        }
    }
}

/// The request's target or authority cannot be expressed towards the backend.
struct InvalidTarget;

/// Rewrites a client request into the form the backend's protocol expects.
fn to_upstream(
    req: Request<ProxyBody>,
    authority: &str,
    client: &ClientConn,
    protocol: Protocol,
) -> Result<(http::request::Parts, ProxyBody), InvalidTarget> {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    // The authority as a header value: the client's own Host when that is where it came from
    // (a cheap clone), else checked and copied once.
    let host = match parts.headers.get(header::HOST) {
        Some(h) if h.as_bytes() == authority.as_bytes() => h.clone(),
        _ => HeaderValue::from_str(authority).map_err(|_| InvalidTarget)?,
    };
    headers::forward_request(&mut parts.headers, &client.xff, client.proto(), &host);
    match protocol {
        Protocol::Http1 | Protocol::Https => {
            parts.version = Version::HTTP_11;
            parts.uri = Uri::from(path_and_query);
            parts.headers.insert(header::HOST, host);
        }
        Protocol::H2c | Protocol::H2 => {
            parts.version = Version::HTTP_2;
            // The client's own :authority when it sent one (a cheap clone), else the Host.
            let authority = match parts.uri.authority() {
                Some(a) if a.as_str() == authority => a.clone(),
                _ => Authority::try_from(authority).map_err(|_| InvalidTarget)?,
            };
            let mut uri = uri::Parts::default();
            uri.scheme = Some(if protocol.is_tls() {
                Scheme::HTTPS
            } else {
                Scheme::HTTP
            });
            uri.authority = Some(authority);
            uri.path_and_query = Some(path_and_query);
            parts.uri = Uri::from_parts(uri).map_err(|_| InvalidTarget)?;
            parts.headers.remove(header::HOST);
        }
    }
    parts.extensions = http::Extensions::new();
    Ok((parts, body))
}
