//! weir's dataplane: serves HTTP traffic from an immutable [`RouteTable`].
//!
//! This crate knows nothing of Kubernetes. Its input is a stream of whole tables
//! ([`Dataplane::follow`]); its outputs are proxied requests and metrics.

mod admin;
mod boxed;
mod h2;
mod http1;
mod listener;
pub mod metrics;
pub mod policy;
mod proxy;
mod router;
mod session;
mod state;
pub mod table;
mod tls;
pub mod upstream;

pub use admin::serve_admin;
pub use listener::{bind, serve, Listeners};
pub use policy::{
    BackendPolicy, Backoff, Budget, Keepalive, NonIdempotent, PoolPolicy, RetryOn, RetryPolicy,
    Reuse, Timeouts,
};
pub use proxy::body::ProxyBody;
pub use proxy::AccessLog;
pub use router::{normalize_host, Decision};
pub use state::{Dataplane, Options, Snapshot};
pub use table::{
    system_roots, Backend, BackendId, BackendKey, Conflict, DefaultBackend, HostMatch, HostRoutes,
    PathMatch, Protocol, Roots, Route, RouteTable, RouteTableBuilder, UpstreamTls,
    UpstreamTlsError,
};
pub use tls::{TlsCertificate, TlsError};
pub use upstream::{AttemptError, BackendPool, Failure, SafetyClass};
