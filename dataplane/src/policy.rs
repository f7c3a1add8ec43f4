//! Backend policy as the dataplane applies it: connection reuse, retries and timeouts.
//! The controller compiles `BackendPolicy` objects into these values; defaults apply otherwise.

use std::time::Duration;

use serde::Serialize;

/// Which upstream connections a request may use (the design's reuse table).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Reuse {
    /// Every client connection gets upstream connections of its own.
    Never,
    /// A client connection's first request uses a new connection (or one it owns already);
    /// later requests may use any shared ready connection with a free stream slot.
    #[default]
    Safe,
    /// First requests may use a shared connection that has completed an exchange.
    Aggressive,
    /// Any shared connection, even one still connecting or handshaking.
    Always,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Keepalive {
    #[serde(with = "secs")]
    pub interval: Duration,
    #[serde(with = "secs")]
    pub timeout: Duration,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PoolPolicy {
    pub reuse: Reuse,
    /// Connections per endpoint (all states but closed). `None`: unlimited.
    pub max_connections_per_endpoint: Option<u32>,
    /// Our own cap on concurrent streams per HTTP/2 connection; the peer's
    /// SETTINGS_MAX_CONCURRENT_STREAMS is never exceeded either.
    pub max_streams_per_connection: u32,
    /// After this many requests a connection drains. `None`: unlimited.
    pub max_requests_per_connection: Option<u64>,
    /// A connection with no stream for this long is closed.
    #[serde(with = "secs")]
    pub idle_timeout: Duration,
    /// A connection older than this drains. `None`: no limit.
    #[serde(with = "opt_secs")]
    pub max_connection_age: Option<Duration>,
    /// HTTP/2 PING keepalive; a connection whose PING is not answered in time is retired.
    pub keepalive: Option<Keepalive>,
    /// Requests that may wait for a stream slot or connection; beyond: 503.
    pub max_pending_requests: u32,
    /// How long a request may wait for a slot; then 503.
    #[serde(with = "secs")]
    pub pending_timeout: Duration,
}

impl Default for PoolPolicy {
    fn default() -> Self {
        Self {
            reuse: Reuse::Safe,
            max_connections_per_endpoint: None,
            max_streams_per_connection: 100,
            max_requests_per_connection: None,
            idle_timeout: Duration::from_secs(90),
            max_connection_age: None,
            keepalive: None,
            max_pending_requests: 1024,
            pending_timeout: Duration::from_secs(5),
        }
    }
}

/// Conditions under which an attempt may be retried (`retry.when`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetryOn {
    /// The backend provably did not process the request.
    Unprocessed,
    /// The stream was reset after the request was written.
    Reset,
    /// The connection closed after the request was written, with no response.
    EmptyResponse,
    /// The per-try timeout expired before response headers.
    ResponseTimeout,
    /// Status 502, 503 or 504.
    GatewayError,
    /// Any 5xx status.
    #[serde(rename = "5xx")]
    ServerError,
}

/// Whether non-idempotent requests (POST, PATCH, ...) are retried.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NonIdempotent {
    Never,
    /// Only when the backend provably did not process the request.
    #[default]
    UnprocessedOnly,
    Always,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Backoff {
    #[serde(with = "secs")]
    pub base: Duration,
    #[serde(with = "secs")]
    pub max: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Budget {
    /// Retries allowed per request over the window (0.2 = one retry per five requests).
    pub ratio: f64,
    #[serde(with = "secs")]
    pub window: Duration,
    /// Retries allowed per second regardless of the ratio.
    pub min_per_second: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RetryPolicy {
    /// Attempts in all, the first included: 1 means no retries.
    pub attempts: u32,
    pub when: Vec<RetryOn>,
    /// Status codes that are retried in addition to `when`.
    pub codes: Vec<u16>,
    #[serde(with = "opt_secs")]
    pub per_try_timeout: Option<Duration>,
    pub backoff: Backoff,
    pub budget: Budget,
    /// Request bodies up to this size are kept for replay; larger ones are not retried.
    pub max_replay_bytes: u64,
    pub non_idempotent: NonIdempotent,
    /// Prefer an endpoint not tried yet.
    pub redispatch: bool,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            attempts: 2,
            when: vec![RetryOn::Unprocessed],
            codes: Vec::new(),
            per_try_timeout: None,
            backoff: Backoff {
                base: Duration::from_millis(25),
                max: Duration::from_millis(250),
            },
            budget: Budget {
                ratio: 0.2,
                window: Duration::from_secs(10),
                min_per_second: 10,
            },
            max_replay_bytes: 64 * 1024,
            non_idempotent: NonIdempotent::UnprocessedOnly,
            redispatch: true,
        }
    }
}

impl RetryPolicy {
    pub fn retries_on(&self, condition: RetryOn) -> bool {
        self.attempts > 1 && self.when.contains(&condition)
    }

    /// Whether a response status asks for a retry.
    pub fn retries_status(&self, status: u16) -> bool {
        self.attempts > 1
            && (self.codes.contains(&status)
                || (self.when.contains(&RetryOn::GatewayError) && matches!(status, 502..=504))
                || (self.when.contains(&RetryOn::ServerError) && (500..600).contains(&status)))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Timeouts {
    #[serde(with = "secs")]
    pub connect: Duration,
    /// Bounds the whole request, all attempts and backoff included.
    #[serde(with = "opt_secs")]
    pub request: Option<Duration>,
    /// A response body that sends nothing for this long is aborted.
    #[serde(with = "opt_secs")]
    pub idle: Option<Duration>,
}

impl Default for Timeouts {
    fn default() -> Self {
        Self {
            connect: Duration::from_secs(5),
            request: None,
            idle: None,
        }
    }
}

/// Everything the dataplane needs to know about how to treat one backend.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct BackendPolicy {
    /// The object it came from, e.g. `shop/web-policy`; empty for defaults.
    pub source: String,
    pub pool: PoolPolicy,
    pub retry: RetryPolicy,
    pub timeouts: Timeouts,
}

mod secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
}

mod opt_secs {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_some(&d.as_secs_f64()),
            None => s.serialize_none(),
        }
    }
}
