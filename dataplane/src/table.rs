//! The route table: an immutable value compiled by the controller and served by the dataplane.
//!
//! A table is built once (by [`RouteTableBuilder`]) and never mutated afterwards; the dataplane
//! swaps whole tables. Backends are referred to by [`BackendId`], an index into the table's backend
//! list, so a route can never point at a backend that is not in the same table.

// Host and backend maps use foldhash: several times faster than SipHash for these short keys,
// and still seeded per map, so crafted names cannot make one slow.
use foldhash::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use serde::Serialize;

use crate::policy::BackendPolicy;
use crate::tls::TlsCertificate;

/// How the dataplane speaks to a backend.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1 over cleartext TCP.
    Http1,
    /// HTTP/2 over cleartext TCP with prior knowledge.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`).
    H2,
    /// HTTP/1.1 over TLS (ALPN `http/1.1`).
    Https,
}

impl Protocol {
    pub fn is_http2(self) -> bool {
        matches!(self, Protocol::H2c | Protocol::H2)
    }

    pub fn is_tls(self) -> bool {
        matches!(self, Protocol::H2 | Protocol::Https)
    }
}

/// TLS towards a backend: the name to send as SNI and verify, and the trusted roots.
#[derive(Clone)]
pub struct UpstreamTls {
    pub hostname: String,
    pub(crate) server_name: rustls::pki_types::ServerName<'static>,
    /// Where the roots came from (`system`, or the Secret/ConfigMap) and their digest, so a
    /// changed CA gives a new pool identity.
    pub roots_source: String,
    h2: Arc<rustls::ClientConfig>,
    http1: Arc<rustls::ClientConfig>,
}

/// The certificates that may sign a backend's certificate.
pub enum Roots<'a> {
    /// The system's roots, loaded once at startup ([`system_roots`]).
    System(&'a Arc<rustls::RootCertStore>),
    /// PEM certificates from `source` (e.g. `Secret shop/ca`).
    Pem { source: &'a str, pem: &'a [u8] },
}

/// Loads the system's CA certificates (file I/O: call once, at startup).
pub fn system_roots() -> Arc<rustls::RootCertStore> {
    let mut store = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    store.add_parsable_certificates(found.certs);
    Arc::new(store)
}

/// Why an [`UpstreamTls`] could not be built.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamTlsError {
    #[error("{0:?} is not a valid TLS server name")]
    ServerName(String),
    #[error("no usable CA certificate: {0}")]
    Roots(String),
}

impl UpstreamTls {
    /// Trusts the CA certificates in `roots`.
    pub fn new(hostname: &str, roots: Roots<'_>) -> Result<Self, UpstreamTlsError> {
        let server_name = rustls::pki_types::ServerName::try_from(hostname.to_string())
            .map_err(|_| UpstreamTlsError::ServerName(hostname.to_string()))?;
        let (roots, roots_source) = match roots {
            Roots::Pem { source, pem } => {
                let certs = rustls_pemfile::certs(&mut &pem[..])
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| UpstreamTlsError::Roots(format!("{source}: {e}")))?;
                let mut store = rustls::RootCertStore::empty();
                let (added, _) = store.add_parsable_certificates(certs);
                if added == 0 {
                    return Err(UpstreamTlsError::Roots(format!(
                        "{source} holds no PEM certificate"
                    )));
                }
                let digest = pem.iter().fold(0u64, |h, b| {
                    h.wrapping_mul(1_099_511_628_211)
                        .wrapping_add(u64::from(*b))
                });
                (Arc::new(store), format!("{source}@{digest:016x}"))
            }
            Roots::System(store) => {
                if store.is_empty() {
                    return Err(UpstreamTlsError::Roots(
                        "no system CA certificates were found at startup".into(),
                    ));
                }
                (store.clone(), "system".to_string())
            }
        };
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = |alpn: &[u8]| -> Result<Arc<rustls::ClientConfig>, UpstreamTlsError> {
            let mut c = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| UpstreamTlsError::Roots(e.to_string()))?
                .with_root_certificates(roots.clone())
                .with_no_client_auth();
            c.alpn_protocols = vec![alpn.to_vec()];
            Ok(Arc::new(c))
        };
        Ok(Self {
            hostname: hostname.to_string(),
            server_name,
            roots_source,
            h2: config(b"h2")?,
            http1: config(b"http/1.1")?,
        })
    }

    pub(crate) fn config_for(&self, alpn: &[u8]) -> Arc<rustls::ClientConfig> {
        if alpn == b"h2" {
            self.h2.clone()
        } else {
            self.http1.clone()
        }
    }

    /// The identity part of a pool key.
    pub fn identity(&self) -> String {
        format!("{}|{}", self.hostname, self.roots_source)
    }
}

impl PartialEq for UpstreamTls {
    fn eq(&self, other: &Self) -> bool {
        self.hostname == other.hostname && self.roots_source == other.roots_source
    }
}

impl fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UpstreamTls")
            .field("hostname", &self.hostname)
            .field("roots", &self.roots_source)
            .finish()
    }
}

impl Serialize for UpstreamTls {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let mut st = s.serialize_struct("UpstreamTls", 2)?;
        st.serialize_field("hostname", &self.hostname)?;
        st.serialize_field("roots", &self.roots_source)?;
        st.end()
    }
}

/// The identity of a backend: pools are keyed by it and survive table updates that keep it.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub struct BackendKey {
    pub namespace: String,
    pub service: String,
    /// The Service port (not the endpoint's target port).
    pub port: u16,
    pub protocol: Protocol,
    /// TLS identity (SNI name and trusted roots) for TLS protocols.
    pub tls: Option<String>,
}

impl fmt::Display for BackendKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}", self.namespace, self.service, self.port)
    }
}

/// Index of a backend within one table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(transparent)]
pub struct BackendId(usize);

impl BackendId {
    pub fn index(self) -> usize {
        self.0
    }
}

/// A backend with its ready endpoints as of the table's compilation.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Backend {
    pub key: BackendKey,
    /// Ready, non-terminating endpoints. Empty means requests get 503.
    pub endpoints: Vec<SocketAddr>,
    /// Why the backend has no endpoints, when the controller knows (e.g. "service not found").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unavailable: Option<String>,
    /// How connections to it are reused and requests retried.
    pub policy: Arc<BackendPolicy>,
    /// TLS settings, for `h2` and `https` backends.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tls: Option<UpstreamTls>,
}

/// How a route matches the request path.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(tag = "type", content = "value")]
pub enum PathMatch {
    /// The path equals the value exactly (case-sensitive).
    Exact(String),
    /// Element-wise prefix. Stored without a trailing slash, except for the root `/`.
    Prefix(String),
}

impl PathMatch {
    /// A prefix match; a trailing slash is not significant (`/foo/` matches like `/foo`).
    pub fn prefix(path: &str) -> Self {
        let trimmed = path.trim_end_matches('/');
        if trimmed.is_empty() {
            PathMatch::Prefix("/".to_string())
        } else {
            PathMatch::Prefix(trimmed.to_string())
        }
    }

    pub fn exact(path: &str) -> Self {
        PathMatch::Exact(path.to_string())
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Exact(p) => path == p,
            PathMatch::Prefix(p) if p == "/" => true,
            PathMatch::Prefix(p) => {
                path.starts_with(p.as_str())
                    && (path.len() == p.len() || path.as_bytes()[p.len()] == b'/')
            }
        }
    }

    /// Sort key: longer paths first; for equal length, Exact before Prefix.
    fn precedence(&self) -> (std::cmp::Reverse<usize>, u8) {
        match self {
            PathMatch::Exact(p) => (std::cmp::Reverse(p.len()), 0),
            PathMatch::Prefix(p) => (std::cmp::Reverse(p.len()), 1),
        }
    }
}

/// One path rule and where it sends requests.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// Bounded name used in metrics and logs: the owning object, e.g. `default/shop`.
    pub name: Arc<str>,
    pub path: PathMatch,
    pub backend: BackendId,
}

/// Routes for one host (or for any host), ordered by precedence.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(transparent)]
pub struct HostRoutes {
    routes: Vec<Route>,
}

impl HostRoutes {
    /// Orders `routes` by precedence (longest path first; Exact before Prefix at equal length).
    pub fn new(mut routes: Vec<Route>) -> Self {
        routes.sort_by_key(|r| r.path.precedence());
        Self { routes }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    pub fn find(&self, path: &str) -> Option<&Route> {
        self.routes.iter().find(|r| r.path.matches(path))
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// Which hosts a rule applies to.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
pub enum HostMatch {
    /// A single host, lower-case, without port.
    Exact(String),
    /// `*.suffix`: exactly one extra leading label. Holds the suffix (`example.com`).
    Wildcard(String),
    /// Every host.
    Any,
}

impl HostMatch {
    /// Parses an Ingress-style host: `a.example.com`, `*.example.com` or empty for any host.
    pub fn parse(host: &str) -> Self {
        let host = host.trim_end_matches('.').to_ascii_lowercase();
        if host.is_empty() {
            HostMatch::Any
        } else if let Some(suffix) = host.strip_prefix("*.") {
            HostMatch::Wildcard(suffix.to_string())
        } else {
            HostMatch::Exact(host)
        }
    }
}

impl fmt::Display for HostMatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HostMatch::Exact(h) => f.write_str(h),
            HostMatch::Wildcard(s) => write!(f, "*.{s}"),
            HostMatch::Any => f.write_str("*"),
        }
    }
}

/// The whole configuration the dataplane serves.
///
/// Hosts and their routes are shared (`Arc`) between a table and the next one built from the
/// same builder, so a table of 10,000 hosts is copied, compared and dropped by reference counts.
#[derive(Debug, Default, Serialize)]
pub struct RouteTable {
    /// Set by the publisher; increases with every published table.
    pub generation: u64,
    pub(crate) exact_hosts: HashMap<Arc<str>, Arc<HostRoutes>>,
    pub(crate) wildcard_hosts: HashMap<Arc<str>, Arc<HostRoutes>>,
    pub(crate) any_host: Arc<HostRoutes>,
    pub(crate) default_backend: Option<DefaultBackend>,
    /// Indexed by [`BackendId`]. A slot is empty when its backend was removed and no other took
    /// its place yet: ids stay stable while backends come and go. No route names an empty slot.
    pub(crate) backends: Vec<Option<Arc<Backend>>>,
    pub(crate) tls: TlsTable,
}

/// The catch-all for requests no rule matches.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DefaultBackend {
    pub name: Arc<str>,
    pub backend: BackendId,
}

impl RouteTable {
    /// Every backend, with its id.
    pub fn backends(&self) -> impl Iterator<Item = (BackendId, &Arc<Backend>)> {
        self.backends
            .iter()
            .enumerate()
            .filter_map(|(i, b)| Some((BackendId(i), b.as_ref()?)))
    }

    /// The backend slots by id, empty ones included.
    pub fn backend_slots(&self) -> &[Option<Arc<Backend>>] {
        &self.backends
    }

    /// The backend `id` names, if it is in this table.
    pub fn backend(&self, id: BackendId) -> Option<&Backend> {
        self.backends.get(id.0)?.as_deref()
    }

    pub fn tls(&self) -> &TlsTable {
        &self.tls
    }

    /// Number of path rules across all hosts.
    pub fn route_count(&self) -> usize {
        self.exact_hosts
            .values()
            .map(|h| h.routes.len())
            .sum::<usize>()
            + self
                .wildcard_hosts
                .values()
                .map(|h| h.routes.len())
                .sum::<usize>()
            + self.any_host.routes.len()
    }

    /// Compares everything but the generation and key material identity. Tables built from one
    /// builder share what did not change, so those parts compare by pointer.
    pub fn same_config(&self, other: &RouteTable) -> bool {
        // Cheap differences first: most changes add or remove something.
        if self.backends.len() != other.backends.len()
            || self.exact_hosts.len() != other.exact_hosts.len()
        {
            return false;
        }
        same_hosts(&self.exact_hosts, &other.exact_hosts)
            && same_hosts(&self.wildcard_hosts, &other.wildcard_hosts)
            && (Arc::ptr_eq(&self.any_host, &other.any_host) || self.any_host == other.any_host)
            && self.default_backend == other.default_backend
            && self
                .backends
                .iter()
                .zip(&other.backends)
                .all(|(a, b)| match (a, b) {
                    (Some(a), Some(b)) => Arc::ptr_eq(a, b) || a == b,
                    (None, None) => true,
                    _ => false,
                })
            && self.tls == other.tls
    }
}

impl RouteTable {
    /// Whether both tables route every request alike to equal backends and serve the same
    /// certificates, whatever ids their backends have.
    pub fn serves_like(&self, other: &RouteTable) -> bool {
        let same_routes = |a: &HostRoutes, b: &HostRoutes| {
            a.routes.len() == b.routes.len()
                && a.routes.iter().zip(&b.routes).all(|(x, y)| {
                    x.name == y.name
                        && x.path == y.path
                        && self.backend(x.backend) == other.backend(y.backend)
                })
        };
        let same_hosts = |a: &HashMap<Arc<str>, Arc<HostRoutes>>,
                          b: &HashMap<Arc<str>, Arc<HostRoutes>>| {
            a.len() == b.len()
                && a.iter()
                    .all(|(h, r)| b.get(h).is_some_and(|s| same_routes(r, s)))
        };
        fn live(t: &RouteTable) -> Vec<&Backend> {
            let mut all: Vec<&Backend> = t.backends().map(|(_, b)| &**b).collect();
            all.sort_by(|a, b| a.key.cmp(&b.key));
            all
        }
        let same_default = match (&self.default_backend, &other.default_backend) {
            (Some(a), Some(b)) => {
                a.name == b.name && self.backend(a.backend) == other.backend(b.backend)
            }
            (None, None) => true,
            _ => false,
        };
        same_hosts(&self.exact_hosts, &other.exact_hosts)
            && same_hosts(&self.wildcard_hosts, &other.wildcard_hosts)
            && same_routes(&self.any_host, &other.any_host)
            && same_default
            && live(self) == live(other)
            && self.tls == other.tls
    }
}

fn same_hosts(
    a: &HashMap<Arc<str>, Arc<HostRoutes>>,
    b: &HashMap<Arc<str>, Arc<HostRoutes>>,
) -> bool {
    a.len() == b.len()
        && a.iter().all(|(host, routes)| {
            b.get(host)
                .is_some_and(|other| Arc::ptr_eq(routes, other) || routes == other)
        })
}

/// Certificates by SNI name.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct TlsTable {
    pub(crate) exact: HashMap<Arc<str>, TlsCertificate>,
    pub(crate) wildcard: HashMap<Arc<str>, TlsCertificate>,
    pub(crate) default: Option<TlsCertificate>,
}

impl TlsTable {
    /// Exact name first, then the single-label wildcard, then the default certificate.
    pub fn lookup(&self, server_name: Option<&str>) -> Option<&TlsCertificate> {
        let by_name = server_name.and_then(|name| {
            let name = name.trim_end_matches('.').to_ascii_lowercase();
            self.exact.get(name.as_str()).or_else(|| {
                let (_, suffix) = name.split_once('.')?;
                self.wildcard.get(suffix)
            })
        });
        by_name.or(self.default.as_ref())
    }

    pub fn is_empty(&self) -> bool {
        self.exact.is_empty() && self.wildcard.is_empty() && self.default.is_none()
    }
}

/// Builds [`RouteTable`]s. Two ways to use it:
///
/// - claim by claim ([`backend`](Self::backend), [`route`](Self::route), ...): the first route
///   added for a (host, path) wins and later duplicates are returned as errors, so the caller
///   can report them; then [`build`](Self::build);
/// - slot by slot, for a caller that settles conflicts itself and keeps the builder from one
///   configuration to the next: [`set_routes`](Self::set_routes),
///   [`add_backend`](Self::add_backend), ..., and [`table`](Self::table) for each version. A
///   table costs a copy of reference counts; what did not change is shared with the last one.
#[derive(Default)]
pub struct RouteTableBuilder {
    table: RouteTable,
    /// Claim by claim: backends by key, so a backend added twice is one.
    backend_ids: HashMap<BackendKey, BackendId>,
    /// Slot by slot: empty slots, for the next backend added.
    free: Vec<BackendId>,
}

/// A route or certificate that lost to an earlier one.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{what} is already claimed by {winner}")]
pub struct Conflict {
    pub what: String,
    pub winner: String,
}

impl Conflict {
    /// `path` on `host` was claimed first by `winner`.
    pub fn route(host: &HostMatch, path: &PathMatch, winner: &str) -> Self {
        Conflict {
            what: format!("host {host} path {path:?}"),
            winner: winner.to_string(),
        }
    }

    pub fn default_backend(winner: &str) -> Self {
        Conflict {
            what: "the default backend".to_string(),
            winner: winner.to_string(),
        }
    }

    pub fn certificate(host: &HostMatch, winner: &str) -> Self {
        Conflict {
            what: format!("the certificate for {host}"),
            winner: winner.to_string(),
        }
    }

    pub fn certificate_without_host() -> Self {
        Conflict {
            what: "a TLS entry without a host".to_string(),
            winner: "no one (hosts are required for TLS)".to_string(),
        }
    }
}

impl RouteTableBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// A builder with room for about `backends` backends and `hosts` exact hosts, so a large
    /// table is not rehashed and copied as it grows.
    pub fn with_capacity(backends: usize, hosts: usize) -> Self {
        let mut b = Self::default();
        b.table.backends.reserve(backends);
        b.table.exact_hosts.reserve(hosts);
        b
    }

    /// Adds a backend, or returns the id of the one with the same key already added.
    pub fn backend(&mut self, backend: impl Into<Arc<Backend>>) -> BackendId {
        let backend = backend.into();
        if let Some(id) = self.backend_ids.get(&backend.key) {
            return *id;
        }
        let id = BackendId(self.table.backends.len());
        self.backend_ids.insert(backend.key.clone(), id);
        self.table.backends.push(Some(backend));
        id
    }

    fn routes_mut(&mut self, host: &HostMatch) -> &mut HostRoutes {
        let routes = match host {
            HostMatch::Exact(h) => self.table.exact_hosts.entry(h.as_str().into()).or_default(),
            HostMatch::Wildcard(s) => self
                .table
                .wildcard_hosts
                .entry(s.as_str().into())
                .or_default(),
            HostMatch::Any => &mut self.table.any_host,
        };
        Arc::make_mut(routes)
    }

    pub fn route(
        &mut self,
        host: &HostMatch,
        path: PathMatch,
        name: impl Into<Arc<str>>,
        backend: BackendId,
    ) -> Result<(), Conflict> {
        let routes = self.routes_mut(host);
        if let Some(existing) = routes.routes.iter().find(|r| r.path == path) {
            return Err(Conflict::route(host, &path, &existing.name));
        }
        routes.routes.push(Route {
            name: name.into(),
            path,
            backend,
        });
        Ok(())
    }

    pub fn default_backend(
        &mut self,
        name: impl Into<Arc<str>>,
        backend: BackendId,
    ) -> Result<(), Conflict> {
        if let Some(existing) = &self.table.default_backend {
            return Err(Conflict::default_backend(&existing.name));
        }
        self.table.default_backend = Some(DefaultBackend {
            name: name.into(),
            backend,
        });
        Ok(())
    }

    pub fn certificate(&mut self, host: &HostMatch, cert: TlsCertificate) -> Result<(), Conflict> {
        let slot = match host {
            HostMatch::Exact(h) => self.table.tls.exact.entry(h.as_str().into()),
            HostMatch::Wildcard(s) => self.table.tls.wildcard.entry(s.as_str().into()),
            HostMatch::Any => return Err(Conflict::certificate_without_host()),
        };
        match slot {
            std::collections::hash_map::Entry::Occupied(e) => {
                Err(Conflict::certificate(host, e.get().source()))
            }
            std::collections::hash_map::Entry::Vacant(v) => {
                v.insert(cert);
                Ok(())
            }
        }
    }

    pub fn default_certificate(&mut self, cert: TlsCertificate) {
        self.table.tls.default = Some(cert);
    }

    pub fn build(mut self) -> RouteTable {
        let sort =
            |h: &mut Arc<HostRoutes>| Arc::make_mut(h).routes.sort_by_key(|r| r.path.precedence());
        self.table.exact_hosts.values_mut().for_each(sort);
        self.table.wildcard_hosts.values_mut().for_each(sort);
        sort(&mut self.table.any_host);
        self.table
    }

    /// Replaces the routes of `host` (none: the host is gone). Returns whether anything changed.
    pub fn set_routes(&mut self, host: &HostMatch, routes: HostRoutes) -> bool {
        fn set(
            map: &mut HashMap<Arc<str>, Arc<HostRoutes>>,
            host: &str,
            routes: HostRoutes,
        ) -> bool {
            if routes.is_empty() {
                return map.remove(host).is_some();
            }
            match map.get_mut(host) {
                Some(current) if **current == routes => false,
                Some(current) => {
                    *current = Arc::new(routes);
                    true
                }
                None => {
                    map.insert(host.into(), Arc::new(routes));
                    true
                }
            }
        }
        match host {
            HostMatch::Exact(h) => set(&mut self.table.exact_hosts, h, routes),
            HostMatch::Wildcard(s) => set(&mut self.table.wildcard_hosts, s, routes),
            HostMatch::Any if *self.table.any_host == routes => false,
            HostMatch::Any => {
                self.table.any_host = Arc::new(routes);
                true
            }
        }
    }

    /// Puts a backend in a free slot (keys are not compared: one backend per key is the
    /// caller's to keep).
    pub fn add_backend(&mut self, backend: Arc<Backend>) -> BackendId {
        match self.free.pop() {
            Some(id) => {
                self.table.backends[id.0] = Some(backend);
                id
            }
            None => {
                self.table.backends.push(Some(backend));
                BackendId(self.table.backends.len() - 1)
            }
        }
    }

    /// Replaces the backend in slot `id`. Returns whether it was another one.
    pub fn replace_backend(&mut self, id: BackendId, backend: Arc<Backend>) -> bool {
        match self.table.backends.get_mut(id.0) {
            Some(Some(current)) if Arc::ptr_eq(current, &backend) || **current == *backend => false,
            Some(slot) => {
                *slot = Some(backend);
                true
            }
            None => false,
        }
    }

    /// Empties slot `id`; no route may name it any more.
    pub fn remove_backend(&mut self, id: BackendId) {
        if let Some(slot) = self.table.backends.get_mut(id.0) {
            if slot.take().is_some() {
                self.free.push(id);
            }
        }
    }

    /// Returns whether it changed.
    pub fn set_default_backend(&mut self, default: Option<DefaultBackend>) -> bool {
        let changed = self.table.default_backend != default;
        self.table.default_backend = default;
        changed
    }

    /// The certificate served for `host` (none: no certificate). Returns whether it changed.
    pub fn set_certificate(&mut self, host: &HostMatch, cert: Option<TlsCertificate>) -> bool {
        let (map, name) = match host {
            HostMatch::Exact(h) => (&mut self.table.tls.exact, h.as_str()),
            HostMatch::Wildcard(s) => (&mut self.table.tls.wildcard, s.as_str()),
            HostMatch::Any => return false,
        };
        match cert {
            None => map.remove(name).is_some(),
            Some(cert) => match map.get_mut(name) {
                Some(current) if *current == cert => false,
                Some(current) => {
                    *current = cert;
                    true
                }
                None => {
                    map.insert(name.into(), cert);
                    true
                }
            },
        }
    }

    /// Returns whether it changed.
    pub fn set_default_certificate(&mut self, cert: Option<TlsCertificate>) -> bool {
        let changed = self.table.tls.default != cert;
        self.table.tls.default = cert;
        changed
    }

    /// The table as it is now; the builder keeps it for the next changes.
    pub fn table(&self) -> RouteTable {
        RouteTable {
            generation: 0,
            exact_hosts: self.table.exact_hosts.clone(),
            wildcard_hosts: self.table.wildcard_hosts.clone(),
            any_host: self.table.any_host.clone(),
            default_backend: self.table.default_backend.clone(),
            backends: self.table.backends.clone(),
            tls: self.table.tls.clone(),
        }
    }
}
