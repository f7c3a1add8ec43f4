//! What one Ingress contributes to a table, compiled on its own, and the objects it was compiled
//! from.
//!
//! A fragment holds no decision that depends on another Ingress: routes, the default backend and
//! certificates are claims that [`link`](super::link) settles in conflict order (and records in
//! `lost`). So a fragment is reused by the next compile as long as no object it read changed
//! (its [`Deps`] say which), and the table that compile links is the one a compile from scratch
//! gives.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use weir_dataplane::{Backend, Conflict, HostMatch, PathMatch, TlsCertificate};

use crate::diagnostic::Diagnostic;
use crate::index::Entry;
use crate::object::ObjectKey;

/// One Ingress, compiled.
#[derive(Debug)]
pub(super) struct Fragment {
    /// `namespace/name`, the routes' name in the table and in metrics.
    pub(super) name: Arc<str>,
    /// In field order, so diagnostics come out in the order a reader of the Ingress expects.
    pub(super) steps: Vec<Step>,
    pub(super) deps: Deps,
    /// For each step, the claim that beat it when linking, if one did.
    pub(super) lost: Vec<Option<Conflict>>,
}

/// A claim on the table or a diagnostic, in the Ingress's field order.
#[derive(Debug)]
pub(super) enum Step {
    /// A diagnostic about this Ingress alone (its origin is added when linking).
    Report(Diagnostic),
    /// `spec.defaultBackend`.
    DefaultBackend { backend: Arc<Backend> },
    /// `spec.rules[rule].http.paths[path]`.
    Route {
        host: HostMatch,
        matcher: PathMatch,
        backend: Arc<Backend>,
        rule: usize,
        path: usize,
    },
    /// `spec.tls[tls].hosts[host]`.
    Certificate {
        name: HostMatch,
        cert: TlsCertificate,
        tls: usize,
        host: usize,
    },
}

/// Every object a fragment read besides its Ingress, as it was then (`None`: it did not exist).
/// All of them are in the Ingress's namespace: references to other namespaces are rejected before
/// anything is read.
#[derive(Debug, Default)]
pub(super) struct Deps {
    /// Service names: the Service and the EndpointSlices labelled with its name.
    pub(super) services: Vec<String>,
    pub(super) secrets: Reads<Secret>,
    pub(super) config_maps: Reads<ConfigMap>,
}

/// Objects of one kind looked up by key, as they were (`None`: not there).
#[derive(Debug)]
pub(super) struct Reads<T>(Vec<(ObjectKey, Option<Arc<T>>)>);

impl<T> Default for Reads<T> {
    fn default() -> Self {
        Self(Vec::new())
    }
}

impl<T> Reads<T> {
    /// Looks `key` up in `map` and remembers what was there.
    pub(super) fn get<'i>(
        &mut self,
        map: &'i BTreeMap<ObjectKey, Entry<T>>,
        key: &ObjectKey,
    ) -> Option<&'i Arc<T>> {
        let now = map.get(key).map(|e| &e.object);
        if !self.0.iter().any(|(k, _)| k == key) {
            self.0.push((key.clone(), now.cloned()));
        }
        now
    }
}

impl Deps {
    pub(super) fn service(&mut self, name: &str) {
        if !self.services.iter().any(|n| n == name) {
            self.services.push(name.to_string());
        }
    }
}

/// An object a fragment read, besides its Ingress.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum Dep {
    /// A Service and the EndpointSlices labelled with its name.
    Service(ObjectKey),
    Secret(ObjectKey),
    ConfigMap(ObjectKey),
}

impl Fragment {
    /// Every object it read, besides its Ingress.
    pub(super) fn deps(&self, namespace: &str) -> impl Iterator<Item = Dep> + '_ {
        let namespace = namespace.to_string();
        let services = self
            .deps
            .services
            .iter()
            .map(move |name| Dep::Service(ObjectKey::new(namespace.clone(), name.clone())));
        let secrets = self
            .deps
            .secrets
            .0
            .iter()
            .map(|(k, _)| Dep::Secret(k.clone()));
        let config_maps = self
            .deps
            .config_maps
            .0
            .iter()
            .map(|(k, _)| Dep::ConfigMap(k.clone()));
        services.chain(secrets).chain(config_maps)
    }
}
