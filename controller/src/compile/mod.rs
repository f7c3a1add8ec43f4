//! `compile`: the one place Kubernetes semantics are interpreted. Pure and deterministic: the
//! same index and options always give the same table and diagnostics.

mod backend;
mod class;
mod fragment;
mod ingress;
mod link;
mod policy;
mod tls;

use std::sync::Arc;

use foldhash::HashMap;

use weir_dataplane::{BackendPolicy, RouteTable};

use crate::crd;
use fragment::Fragment;

use crate::diagnostic::Diagnostic;
use crate::index::Index;
use crate::object::{Kind, ObjectKey, ObjectRef};

pub use backend::{APP_PROTOCOL_H2C, SERVICE_NAME_LABEL};
pub use class::{DEFAULT_CLASS_ANNOTATION, LEGACY_CLASS_ANNOTATION};
pub use policy::{to_dataplane, PolicyStatus};
pub use tls::TLS_SECRET_TYPE;

/// The controller value IngressClasses name to hand their Ingresses to weir.
pub const DEFAULT_CONTROLLER_NAME: &str = "weir.dev/ingress-controller";
pub const DEFAULT_INGRESS_CLASS: &str = "weir";

#[derive(Debug, Clone)]
pub struct CompileOptions {
    /// IngressClasses whose `spec.controller` equals this are weir's.
    pub controller_name: String,
    /// This class name is weir's too, unless an IngressClass gives it to another controller.
    pub ingress_class: String,
    /// The Secret served to TLS clients whose SNI matches no Ingress host.
    pub default_certificate: Option<ObjectKey>,
    /// The policy of backends no BackendPolicy targets, and the base of those one does.
    pub default_policy: BackendPolicy,
    /// The system's CA certificates, loaded once at startup (compile does no I/O).
    pub system_roots: std::sync::Arc<rustls::RootCertStore>,
}

impl Default for CompileOptions {
    fn default() -> Self {
        Self {
            controller_name: DEFAULT_CONTROLLER_NAME.to_string(),
            ingress_class: DEFAULT_INGRESS_CLASS.to_string(),
            default_certificate: None,
            default_policy: BackendPolicy::default(),
            system_roots: std::sync::Arc::new(rustls::RootCertStore::empty()),
        }
    }
}

#[derive(Debug)]
pub struct Compiled {
    pub table: RouteTable,
    pub diagnostics: Vec<Diagnostic>,
    /// What became of each BackendPolicy, for its status conditions.
    pub policy_status: std::collections::BTreeMap<ObjectKey, PolicyStatus>,
    /// The Ingresses weir serves (by class), for their status.
    pub owned_ingresses: Vec<ObjectKey>,
    /// How many of them were compiled again (the others' objects had not changed).
    pub recompiled: usize,
}

/// Compiles the index into a route table. Invalid objects are skipped with diagnostics; the rest
/// applies.
pub fn compile(index: &Index, options: &CompileOptions) -> Compiled {
    Compiler::new(options.clone()).compile(index)
}

/// Compiles one index after another, reusing what each Ingress compiled to while the objects it
/// read are the same: an edit costs the Ingresses it touches, plus linking the table. The table
/// and diagnostics are exactly those of [`compile`] on the same index.
pub struct Compiler {
    options: CompileOptions,
    default_policy: Arc<BackendPolicy>,
    /// The last compile's fragment of each Ingress weir serves.
    fragments: HashMap<ObjectKey, Fragment>,
    /// The BackendPolicies those fragments were compiled against: every backend may be the
    /// target of a new or changed policy, so any change to them compiles every Ingress again.
    policies: Vec<(ObjectKey, Arc<crd::BackendPolicy>)>,
    /// Counts compiles; a fragment not linked by the latest one belongs to an Ingress that is
    /// gone (or no longer weir's).
    generation: u64,
}

impl Compiler {
    pub fn new(options: CompileOptions) -> Self {
        Self {
            default_policy: Arc::new(options.default_policy.clone()),
            options,
            fragments: HashMap::default(),
            policies: Vec::new(),
            generation: 0,
        }
    }

    pub fn options(&self) -> &CompileOptions {
        &self.options
    }

    /// Drops every fragment if any BackendPolicy was added, changed or removed.
    fn forget_if_policies_changed(&mut self, index: &Index) {
        let same = self.policies.len() == index.backend_policies.len()
            && self
                .policies
                .iter()
                .zip(&index.backend_policies)
                .all(|((ka, a), (kb, b))| ka == kb && Arc::ptr_eq(a, &b.object));
        if !same {
            self.fragments.clear();
            self.policies = index
                .backend_policies
                .iter()
                .map(|(k, e)| (k.clone(), e.object.clone()))
                .collect();
        }
    }

    pub fn compile(&mut self, index: &Index) -> Compiled {
        self.generation += 1;
        self.forget_if_policies_changed(index);
        let options = &self.options;
        let mut diagnostics = Vec::new();
        let policies = policy::Policies::new(index, &options.default_policy, &mut diagnostics);
        let mut ctx = Context {
            index,
            services: backend::Services::new(index),
            certificates: tls::Certificates::default(),
            policies,
            default_policy: self.default_policy.clone(),
            system_roots: options.system_roots.clone(),
        };
        let classes = class::Classes::new(index, options);
        let mut ours: Vec<_> = index
            .ingresses
            .iter()
            .filter(|(_, e)| classes.owns(&e.object))
            .collect();
        // Conflicts resolve to the oldest Ingress, then by namespace/name. Objects without a
        // creation timestamp (manifest files) count as newest. The index iterates in key order and
        // the sort is stable, so ties stay in namespace/name order without comparing names.
        ours.sort_by_key(|(_, e)| {
            let t = e.object.metadata.creation_timestamp.as_ref().map(|t| t.0);
            (t.is_none(), t)
        });
        let owned_ingresses: Vec<ObjectKey> = ours.iter().map(|(k, _)| (*k).clone()).collect();
        // Most Ingresses have one host and one backend of their own.
        let mut link = link::Linker::new(ours.len());
        let mut recompiled = 0;
        for (key, entry) in ours {
            let fragment = match self.fragments.get_mut(key) {
                Some(f) if f.still_valid(key, &entry.object, index, &ctx.services) => f,
                Some(f) => {
                    recompiled += 1;
                    *f = ingress::compile_ingress(&mut ctx, key, &entry.object);
                    f
                }
                None => {
                    recompiled += 1;
                    let f = ingress::compile_ingress(&mut ctx, key, &entry.object);
                    self.fragments.entry(key.clone()).or_insert(f)
                }
            };
            fragment.generation = self.generation;
            link.add(key, entry.origin.as_ref(), fragment);
        }
        // Every Ingress linked has its fragment here, so more means some are gone.
        if self.fragments.len() > owned_ingresses.len() {
            let generation = self.generation;
            self.fragments.retain(|_, f| f.generation == generation);
        }
        if let Some(key) = &options.default_certificate {
            match ctx.certificates.get(index, key) {
                Ok(cert) => link.builder.default_certificate(cert),
                Err(message) => {
                    let object = ObjectRef {
                        kind: Kind::Secret,
                        key: key.clone(),
                    };
                    let origin = index.secrets.get(key).and_then(|e| e.origin.clone());
                    link.diagnostics.push(
                        Diagnostic::error(
                            Some(object),
                            None,
                            format!("default certificate: {message}"),
                        )
                        .at(origin),
                    );
                }
            }
        }
        let table = link.builder.build();
        let mut all = diagnostics;
        all.append(&mut link.diagnostics);
        Compiled {
            table,
            diagnostics: all,
            policy_status: ctx.policies.status,
            owned_ingresses,
            recompiled,
        }
    }
}

struct Context<'i> {
    index: &'i Index,
    services: backend::Services<'i>,
    certificates: tls::Certificates,
    policies: policy::Policies,
    default_policy: Arc<BackendPolicy>,
    system_roots: Arc<rustls::RootCertStore>,
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_reuse;
