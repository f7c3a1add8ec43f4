//! What one Ingress contributes to a table, compiled on its own, and the objects it was compiled
//! from.
//!
//! A fragment holds no decision that depends on another Ingress: routes, the default backend and
//! certificates are claims that [`link`](super::link) settles in conflict order. So a fragment
//! can be reused by the next compile as long as every object it read is still the same object
//! (the same `Arc`), and the table that compile links is the one a compile from scratch gives.

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use weir_dataplane::{Backend, HostMatch, PathMatch, TlsCertificate};

use super::backend::Services;
use crate::diagnostic::Diagnostic;
use crate::index::{Entry, Index};
use crate::object::ObjectKey;

/// One Ingress, compiled.
#[derive(Debug)]
pub(super) struct Fragment {
    /// The Ingress it was compiled from.
    pub(super) ingress: Arc<Ingress>,
    /// `namespace/name`, the routes' name in the table and in metrics.
    pub(super) name: Arc<str>,
    /// In field order, so diagnostics come out in the order a reader of the Ingress expects.
    pub(super) steps: Vec<Step>,
    pub(super) deps: Deps,
    /// The compile that last linked it.
    pub(super) generation: u64,
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
    /// By Service name: the Service and the EndpointSlices that were its.
    pub(super) services: Vec<(String, Option<ServiceInputs>)>,
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

    /// Whether every key still holds the same object (or still nothing).
    fn unchanged(&self, map: &BTreeMap<ObjectKey, Entry<T>>) -> bool {
        self.0.iter().all(
            |(key, then)| match (then, map.get(key).map(|e| &e.object)) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            },
        )
    }
}

#[derive(Debug)]
pub(super) struct ServiceInputs {
    pub(super) service: Arc<Service>,
    pub(super) slices: Vec<Arc<EndpointSlice>>,
}

impl Deps {
    pub(super) fn service(&mut self, name: &str, inputs: Option<ServiceInputs>) {
        if !self.services.iter().any(|(n, _)| n == name) {
            self.services.push((name.to_string(), inputs));
        }
    }

    /// Whether every object read is still the same object.
    fn unchanged(&self, namespace: &str, index: &Index, services: &Services<'_>) -> bool {
        let services_same = self.services.iter().all(|(name, then)| {
            let now = services.get(namespace, name);
            match (then, now) {
                (None, None) => true,
                (Some(then), Some(now)) => {
                    Arc::ptr_eq(&then.service, now.service)
                        && then.slices.len() == now.slices.len()
                        && then
                            .slices
                            .iter()
                            .zip(&now.slices)
                            .all(|(a, b)| Arc::ptr_eq(a, b))
                }
                _ => false,
            }
        });
        services_same
            && self.secrets.unchanged(&index.secrets)
            && self.config_maps.unchanged(&index.config_maps)
    }
}

impl Fragment {
    /// Whether compiling `ingress` again would give this fragment: it is the same object and
    /// so is everything it read.
    pub(super) fn still_valid(
        &self,
        key: &ObjectKey,
        ingress: &Arc<Ingress>,
        index: &Index,
        services: &Services<'_>,
    ) -> bool {
        Arc::ptr_eq(&self.ingress, ingress) && self.deps.unchanged(&key.namespace, index, services)
    }
}
