//! The request path after the listener: route → backend → pool, and the response back.

pub mod body;
mod headers;
mod local;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, Uri, Version};
use hyper::body::Incoming;

use crate::router::normalize_host;
use crate::state::{Dataplane, Snapshot};
use crate::table::Protocol;
use crate::upstream::UpstreamError;
use body::{Completion, Metered, ProxyBody};

/// What the proxy knows about the client connection a request arrived on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClientConn {
    pub(crate) addr: SocketAddr,
    pub(crate) tls: bool,
}

impl ClientConn {
    fn proto(&self) -> &'static str {
        if self.tls {
            "https"
        } else {
            "http"
        }
    }
}

/// The authority the client addressed: `:authority` / absolute URI first, then `Host`.
fn authority(req: &Request<Incoming>) -> Option<String> {
    if let Some(a) = req.uri().authority() {
        return Some(a.as_str().to_string());
    }
    req.headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
}

impl Dataplane {
    /// Serves one request from the current snapshot. Never fails: errors become responses.
    pub(crate) async fn handle(
        &self,
        req: Request<Incoming>,
        client: ClientConn,
    ) -> Response<ProxyBody> {
        let start = Instant::now();
        let snapshot: Arc<Snapshot> = self.current.load_full();
        let version = req.version();
        let (route, service, mut resp) = self.dispatch(&snapshot, req, client).await;
        *resp.version_mut() = version;
        let completion = Completion {
            metrics: self.metrics.clone(),
            route,
            service,
            code: resp.status().as_u16(),
            start,
        };
        resp.map(|b| ProxyBody::new(Metered::new(b, completion)))
    }

    async fn dispatch(
        &self,
        snapshot: &Snapshot,
        req: Request<Incoming>,
        client: ClientConn,
    ) -> (String, String, Response<ProxyBody>) {
        if req.method() == Method::CONNECT {
            return (String::new(), String::new(), local::method_not_allowed());
        }
        let Some(authority) = authority(&req) else {
            return (String::new(), String::new(), local::missing_host());
        };
        let host = normalize_host(&authority);
        let Some(decision) = snapshot.table.route(&host, req.uri().path()) else {
            return (String::new(), String::new(), local::no_route());
        };
        let pool = snapshot.pool(decision.backend).clone();
        let route = decision.route.to_string();
        let service = pool.key().to_string();
        let client_wants_trailers = headers::wants_trailers(req.headers());
        let client_version = req.version();

        let upstream_req = match to_upstream(req, &authority, client, pool.key().protocol) {
            Ok(r) => r,
            Err(InvalidTarget) => return (route, service, local::bad_request()),
        };
        let resp = match pool.send(upstream_req).await {
            Ok(resp) => resp,
            Err(UpstreamError::NoEndpoints) => {
                let reason = pool.unavailable_reason();
                return (
                    route,
                    service.clone(),
                    local::no_endpoints(&service, reason.as_deref().map(|s| s.as_str())),
                );
            }
            Err(error) => {
                tracing::warn!(%route, %service, %error, class = ?error.class(), "upstream request failed");
                let resp = match error {
                    UpstreamError::ConnectTimeout { .. } => local::gateway_timeout(&service),
                    _ => local::bad_gateway(&service),
                };
                return (route, service, resp);
            }
        };
        let (mut parts, body) = resp.into_parts();
        headers::strip_hop_by_hop(&mut parts.headers);
        if client_version < Version::HTTP_2 {
            headers::announce_grpc_trailers(&mut parts.headers, client_wants_trailers);
        }
        (
            route,
            service,
            Response::from_parts(parts, body::incoming(body)),
        )
    }
}

/// The request's target or authority cannot be expressed towards the backend.
struct InvalidTarget;

/// Rewrites a client request into the form the backend's protocol expects.
fn to_upstream(
    req: Request<Incoming>,
    authority: &str,
    client: ClientConn,
    protocol: Protocol,
) -> Result<Request<ProxyBody>, InvalidTarget> {
    let (mut parts, body) = req.into_parts();
    let path_and_query = parts
        .uri
        .path_and_query()
        .map(|pq| pq.as_str())
        .unwrap_or("/")
        .to_string();
    headers::forward_request(
        &mut parts.headers,
        client.addr.ip(),
        client.proto(),
        authority,
    );
    match protocol {
        Protocol::Http1 => {
            parts.version = Version::HTTP_11;
            parts.uri = Uri::try_from(path_and_query).map_err(|_| InvalidTarget)?;
            let host = HeaderValue::from_str(authority).map_err(|_| InvalidTarget)?;
            parts.headers.insert(header::HOST, host);
        }
        Protocol::H2c => {
            parts.version = Version::HTTP_2;
            parts.uri = Uri::builder()
                .scheme("http")
                .authority(authority)
                .path_and_query(path_and_query)
                .build()
                .map_err(|_| InvalidTarget)?;
            parts.headers.remove(header::HOST);
        }
    }
    Ok(Request::from_parts(parts, body::incoming(body)))
}
