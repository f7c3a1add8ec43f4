//! Settles the Ingresses' claims into one table, in conflict order: the first claim on a host
//! and path, a certificate name or the default backend wins, and the others are reported.

use weir_dataplane::RouteTableBuilder;

use super::fragment::{Fragment, Step};
use crate::diagnostic::Diagnostic;
use crate::object::{Kind, ObjectKey, ObjectRef, Origin};

pub(super) struct Linker {
    pub(super) builder: RouteTableBuilder,
    pub(super) diagnostics: Vec<Diagnostic>,
}

impl Linker {
    /// Room for about `ingresses` backends and hosts, so a large table is not rehashed as it
    /// grows (most Ingresses have one host and one backend of their own).
    pub(super) fn new(ingresses: usize) -> Self {
        Self {
            builder: RouteTableBuilder::with_capacity(ingresses, ingresses),
            diagnostics: Vec::new(),
        }
    }

    /// Adds one Ingress's fragment, after every Ingress that wins a conflict with it.
    pub(super) fn add(&mut self, key: &ObjectKey, origin: Option<&Origin>, fragment: &Fragment) {
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
                Step::DefaultBackend { backend } => {
                    let id = self.builder.backend(backend.clone());
                    self.builder
                        .default_backend(fragment.name.clone(), id)
                        .err()
                        .map(|c| lost("spec.defaultBackend".to_string(), c))
                }
                Step::Route {
                    host,
                    matcher,
                    backend,
                    rule,
                    path,
                } => {
                    let id = self.builder.backend(backend.clone());
                    self.builder
                        .route(host, matcher.clone(), fragment.name.clone(), id)
                        .err()
                        .map(|c| lost(format!("spec.rules[{rule}].http.paths[{path}]"), c))
                }
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
    }
}
