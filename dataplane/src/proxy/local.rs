//! Responses weir makes itself. Short plain-text bodies that say which case applies.

use http::{header, Response, StatusCode};

use super::body::{full, ProxyBody};

fn text(status: StatusCode, body: String) -> Response<ProxyBody> {
    let mut resp = Response::new(full(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

pub(super) fn no_route() -> Response<ProxyBody> {
    text(
        StatusCode::NOT_FOUND,
        "weir: no route matches this host and path\n".into(),
    )
}

pub(super) fn no_endpoints(service: &str, reason: Option<&str>) -> Response<ProxyBody> {
    let body = match reason {
        Some(reason) => format!("weir: no ready endpoints for service {service} ({reason})\n"),
        None => format!("weir: no ready endpoints for service {service}\n"),
    };
    text(StatusCode::SERVICE_UNAVAILABLE, body)
}

/// The route names a backend its table does not hold: never built that way, answered anyway.
pub(super) fn no_backend(route: &str) -> Response<ProxyBody> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("weir: route {route} has no backend\n"),
    )
}

pub(super) fn bad_gateway(service: &str) -> Response<ProxyBody> {
    text(
        StatusCode::BAD_GATEWAY,
        format!("weir: upstream error from service {service}\n"),
    )
}

pub(super) fn gateway_timeout(service: &str) -> Response<ProxyBody> {
    text(
        StatusCode::GATEWAY_TIMEOUT,
        format!("weir: upstream timeout from service {service}\n"),
    )
}

pub(super) fn missing_host() -> Response<ProxyBody> {
    text(
        StatusCode::BAD_REQUEST,
        "weir: request has no Host or :authority\n".into(),
    )
}

pub(super) fn bad_request() -> Response<ProxyBody> {
    text(
        StatusCode::BAD_REQUEST,
        "weir: request target cannot be forwarded\n".into(),
    )
}

pub(super) fn bad_request_body() -> Response<ProxyBody> {
    text(
        StatusCode::BAD_REQUEST,
        "weir: the request body could not be read\n".into(),
    )
}

pub(super) fn method_not_allowed() -> Response<ProxyBody> {
    text(
        StatusCode::METHOD_NOT_ALLOWED,
        "weir: CONNECT is not supported\n".into(),
    )
}

pub(super) fn pool_exhausted(service: &str) -> Response<ProxyBody> {
    text(
        StatusCode::SERVICE_UNAVAILABLE,
        format!("weir: too many requests waiting for a connection to service {service}\n"),
    )
}
