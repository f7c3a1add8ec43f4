//! Why an attempt failed, classified by what the caller may do about it
//! (the design's retry safety classes).

use std::fmt;
use std::net::SocketAddr;

use crate::policy::RetryOn;

/// What a failed attempt tells us about whether the backend processed the request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SafetyClass {
    /// The backend provably did not process the request: safe to retry for every method.
    Unprocessed,
    /// The backend may have processed the request: retry only idempotent methods.
    PossiblyProcessed,
}

impl SafetyClass {
    pub fn label(self) -> &'static str {
        match self {
            SafetyClass::Unprocessed => "unprocessed",
            SafetyClass::PossiblyProcessed => "possibly-processed",
        }
    }
}

/// The kind of failure; each has a bounded label for metrics and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Failure {
    /// The backend has no ready endpoint.
    NoEndpoints,
    /// Too many requests waiting for a connection, or waited too long.
    PoolExhausted,
    Connect,
    ConnectTimeout,
    /// The TLS handshake with the backend failed (verification, or no agreed ALPN protocol).
    TlsHandshake,
    /// The connection closed before the peer's SETTINGS arrived.
    ClosedBeforeSettings,
    /// The connection went away before the request was written.
    NotSent,
    /// The stream was above the last-stream-id of a GOAWAY.
    GoAway,
    /// RST_STREAM(REFUSED_STREAM).
    RefusedStream,
    /// The stream was reset after the request was written.
    Reset,
    /// The connection closed after the request was written, before a response.
    EmptyResponse,
    /// No response headers within the per-try timeout.
    ResponseTimeout,
    /// The backend sent something invalid (malformed frames or headers).
    Malformed,
    /// The client's request body failed (the client went away or sent garbage).
    RequestBody,
}

impl Failure {
    pub fn class(self) -> SafetyClass {
        match self {
            Failure::NoEndpoints
            | Failure::PoolExhausted
            | Failure::Connect
            | Failure::ConnectTimeout
            | Failure::TlsHandshake
            | Failure::ClosedBeforeSettings
            | Failure::NotSent
            | Failure::GoAway
            | Failure::RefusedStream => SafetyClass::Unprocessed,
            Failure::Reset
            | Failure::EmptyResponse
            | Failure::ResponseTimeout
            | Failure::Malformed
            | Failure::RequestBody => SafetyClass::PossiblyProcessed,
        }
    }

    /// The `retry.when` condition that covers this failure, if any may.
    pub fn condition(self) -> Option<RetryOn> {
        match self {
            Failure::NoEndpoints | Failure::PoolExhausted | Failure::RequestBody => None,
            Failure::Reset | Failure::Malformed => Some(RetryOn::Reset),
            Failure::EmptyResponse => Some(RetryOn::EmptyResponse),
            Failure::ResponseTimeout => Some(RetryOn::ResponseTimeout),
            _ => Some(RetryOn::Unprocessed),
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Failure::NoEndpoints => "no-endpoints",
            Failure::PoolExhausted => "pool-exhausted",
            Failure::Connect => "connect",
            Failure::ConnectTimeout => "connect-timeout",
            Failure::TlsHandshake => "tls-handshake",
            Failure::ClosedBeforeSettings => "closed-before-settings",
            Failure::NotSent => "not-sent",
            Failure::GoAway => "goaway",
            Failure::RefusedStream => "refused-stream",
            Failure::Reset => "reset",
            Failure::EmptyResponse => "empty-response",
            Failure::ResponseTimeout => "response-timeout",
            Failure::Malformed => "malformed",
            Failure::RequestBody => "request-body",
        }
    }

    pub const ALL: [Failure; 14] = [
        Failure::NoEndpoints,
        Failure::PoolExhausted,
        Failure::Connect,
        Failure::ConnectTimeout,
        Failure::TlsHandshake,
        Failure::ClosedBeforeSettings,
        Failure::NotSent,
        Failure::GoAway,
        Failure::RefusedStream,
        Failure::Reset,
        Failure::EmptyResponse,
        Failure::ResponseTimeout,
        Failure::Malformed,
        Failure::RequestBody,
    ];
}

/// One failed attempt.
#[derive(Debug, Clone, thiserror::Error)]
pub struct AttemptError {
    pub failure: Failure,
    pub endpoint: Option<SocketAddr>,
    pub detail: String,
}

impl AttemptError {
    pub fn new(failure: Failure, endpoint: Option<SocketAddr>, detail: impl fmt::Display) -> Self {
        Self {
            failure,
            endpoint,
            detail: detail.to_string(),
        }
    }

    pub fn class(&self) -> SafetyClass {
        self.failure.class()
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.failure.label())?;
        if let Some(ep) = self.endpoint {
            write!(f, " ({ep})")?;
        }
        if !self.detail.is_empty() {
            write!(f, ": {}", self.detail)?;
        }
        Ok(())
    }
}
