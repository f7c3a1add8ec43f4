//! Upstream failures, classified by what the caller may do about them.

use std::net::SocketAddr;

/// What a failed attempt tells us about whether the backend processed the request
/// (see the design's retry safety classes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafetyClass {
    /// The backend provably did not process the request: safe to retry for every method.
    Unprocessed,
    /// The backend may have processed the request: retry only idempotent methods.
    PossiblyProcessed,
}

#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    #[error("no ready endpoints")]
    NoEndpoints,
    #[error("connect to {addr} failed: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("connect to {addr} timed out")]
    ConnectTimeout { addr: SocketAddr },
    #[error("handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("request to {addr} was not sent: {source}")]
    NotSent {
        addr: SocketAddr,
        source: hyper::Error,
    },
    #[error("request to {addr} failed: {source}")]
    Request {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

impl UpstreamError {
    pub fn class(&self) -> SafetyClass {
        match self {
            UpstreamError::NoEndpoints
            | UpstreamError::Connect { .. }
            | UpstreamError::ConnectTimeout { .. }
            | UpstreamError::Handshake { .. }
            | UpstreamError::NotSent { .. } => SafetyClass::Unprocessed,
            UpstreamError::Request { .. } => SafetyClass::PossiblyProcessed,
        }
    }

    /// A bounded label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            UpstreamError::NoEndpoints => "no_endpoints",
            UpstreamError::Connect { .. } => "connect",
            UpstreamError::ConnectTimeout { .. } => "connect_timeout",
            UpstreamError::Handshake { .. } => "handshake",
            UpstreamError::NotSent { .. } => "not_sent",
            UpstreamError::Request { .. } => "request",
        }
    }
}
