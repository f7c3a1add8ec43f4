//! weir's dataplane: serves HTTP traffic from an immutable [`RouteTable`].
//!
//! This crate knows nothing of Kubernetes. Its input is a stream of whole tables
//! ([`Dataplane::follow`]); its outputs are proxied requests and metrics.

mod admin;
mod listener;
pub mod metrics;
mod proxy;
mod router;
mod state;
pub mod table;
mod tls;
pub mod upstream;

pub use admin::serve_admin;
pub use listener::{bind, serve, Listeners};
pub use proxy::body::ProxyBody;
pub use router::{normalize_host, Decision};
pub use state::{Dataplane, Snapshot};
pub use table::{
    Backend, BackendId, BackendKey, Conflict, HostMatch, PathMatch, Protocol, RouteTable,
    RouteTableBuilder,
};
pub use tls::{TlsCertificate, TlsError};
pub use upstream::{PoolSettings, SafetyClass, UpstreamError};
