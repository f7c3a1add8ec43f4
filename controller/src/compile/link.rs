//! Settles the Ingresses' claims into one table, in conflict order: the first claim on a host
//! and path, a certificate name or the default backend wins, and the others are reported.

use weir_dataplane::{BackendId, RouteTableBuilder};

use super::fragment::{Fragment, Step};
use crate::diagnostic::Diagnostic;
use crate::object::{Kind, ObjectKey, ObjectRef, Origin};

pub(super) struct Linker {
    pub(super) builder: RouteTableBuilder,
    pub(super) diagnostics: Vec<Diagnostic>,
    /// The table's ids of the backends of the fragment being added (reused, not reallocated).
    ids: Vec<BackendId>,
}

impl Linker {
    /// Room for about `ingresses` backends and hosts, so a large table is not rehashed as it
    /// grows (most Ingresses have one host and one backend of their own).
    pub(super) fn new(ingresses: usize) -> Self {
        Self {
            builder: RouteTableBuilder::with_capacity(ingresses, ingresses),
            diagnostics: Vec::new(),
            ids: Vec::new(),
        }
    }

    /// Adds one Ingress's fragment, after every Ingress that wins a conflict with it.
    pub(super) fn add(&mut self, key: &ObjectKey, origin: Option<&Origin>, fragment: &Fragment) {
        let mut ids = std::mem::take(&mut self.ids);
        ids.clear();
        ids.extend(
            fragment
                .backends
                .iter()
                .map(|b| self.builder.backend(b.clone())),
        );
        let lost = |field: String, conflict: weir_dataplane::Conflict| {
            let object = ObjectRef {
                kind: Kind::Ingress,
                key: key.clone(),
            };
            Diagnostic::warning(Some(object), Some(field), format!("ignored: {conflict}"))
        };
        for step in &fragment.steps {
            let diagnostic = match step {
                Step::Report(d) => Some(d.clone()),
                Step::DefaultBackend { backend } => self
                    .builder
                    .default_backend(fragment.name.clone(), ids[*backend])
                    .err()
                    .map(|c| lost("spec.defaultBackend".to_string(), c)),
                Step::Route {
                    host,
                    matcher,
                    backend,
                    rule,
                    path,
                } => self
                    .builder
                    .route(host, matcher.clone(), fragment.name.clone(), ids[*backend])
                    .err()
                    .map(|c| lost(format!("spec.rules[{rule}].http.paths[{path}]"), c)),
                Step::Certificate {
                    name,
                    cert,
                    tls,
                    host,
                } => self
                    .builder
                    .certificate(name, cert.clone())
                    .err()
                    .map(|c| lost(format!("spec.tls[{tls}].hosts[{host}]"), c)),
            };
            if let Some(d) = diagnostic {
                self.diagnostics.push(d.at(origin.cloned()));
            }
        }
        self.ids = ids;
    }
}
