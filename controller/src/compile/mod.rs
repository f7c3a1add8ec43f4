//! `compile`: the one place Kubernetes semantics are interpreted. Pure and deterministic: the
//! same index and options always give the same table and diagnostics.

mod backend;
mod changes;
mod class;
mod fragment;
mod ingress;
mod link;
mod policy;
mod set;
mod tls;

use std::collections::BTreeSet;
use std::sync::Arc;

use foldhash::HashMap;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use weir_dataplane::{BackendPolicy, Conflict, HostMatch, RouteTable};

use crate::crd;
use changes::Seen;
use fragment::{Dep, Fragment, Step};

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
    /// The Ingresses weir serves (by class), in conflict order, for their status.
    pub owned_ingresses: Arc<[ObjectKey]>,
    /// How many of them were compiled again (the others' objects had not changed).
    pub recompiled: usize,
    /// Whether the table differs from the one the same [`Compiler`] gave last time; `None`
    /// when there is no such table to compare with (a first compile, or one from scratch).
    pub changed: Option<bool>,
}

/// Compiles the index into a route table. Invalid objects are skipped with diagnostics; the rest
/// applies.
pub fn compile(index: &Index, options: &CompileOptions) -> Compiled {
    Compiler::new(options.clone()).compile(index)
}

/// Where an Ingress stands in conflict order: the oldest first, then by namespace/name. Objects
/// without a creation timestamp (manifest files) count as newest.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Order {
    undated: bool,
    created: Option<Time>,
    /// Shared by every set that names the Ingress (claims, readers).
    key: Arc<ObjectKey>,
}

impl Order {
    fn of(key: &Arc<ObjectKey>, ingress: &Ingress) -> Self {
        let created = ingress.metadata.creation_timestamp.clone();
        Self {
            undated: created.is_none(),
            created,
            key: key.clone(),
        }
    }
}

/// Compiles one index after another, keeping what each Ingress compiled to and how the table
/// settled: a change costs the Ingresses it touches (those whose objects changed) and settling
/// what they claim, not the whole configuration. The table and diagnostics are exactly those
/// of [`compile`] on the same index (backend ids aside: they stay stable from one table to the
/// next).
pub struct Compiler {
    options: CompileOptions,
    default_policy: Arc<BackendPolicy>,
    /// The BackendPolicies the fragments were compiled against: every backend may be the
    /// target of a new or changed policy, so any change to them compiles every Ingress again.
    policies: Vec<(ObjectKey, Arc<crd::BackendPolicy>)>,
    /// The classes weir served at the last compile.
    classes: Option<class::Classes>,
    ingresses: Seen<Ingress>,
    services: Seen<Service>,
    slices: Seen<EndpointSlice>,
    secrets: Seen<Secret>,
    config_maps: Seen<ConfigMap>,
    slice_index: backend::SliceIndex,
    /// The Ingresses that read each object.
    dependents: HashMap<Dep, set::Set<Arc<ObjectKey>>>,
    /// The fragment of each Ingress weir serves, in conflict order.
    fragments: link::Fragments,
    order_of: HashMap<Arc<ObjectKey>, Order>,
    linker: link::Linker,
    owned: Arc<[ObjectKey]>,
    /// No table was compiled by this compiler's linker yet.
    fresh: bool,
}

fn mark(
    dependents: &HashMap<Dep, set::Set<Arc<ObjectKey>>>,
    dep: &Dep,
    dirty: &mut BTreeSet<Arc<ObjectKey>>,
) {
    if let Some(readers) = dependents.get(dep) {
        dirty.extend(readers.iter().cloned());
    }
}

impl Compiler {
    pub fn new(options: CompileOptions) -> Self {
        Self {
            default_policy: Arc::new(options.default_policy.clone()),
            options,
            policies: Vec::new(),
            classes: None,
            ingresses: Seen::default(),
            services: Seen::default(),
            slices: Seen::default(),
            secrets: Seen::default(),
            config_maps: Seen::default(),
            slice_index: Default::default(),
            dependents: HashMap::default(),
            fragments: Default::default(),
            order_of: HashMap::default(),
            linker: Default::default(),
            owned: Arc::from(Vec::new()),
            fresh: true,
        }
    }

    pub fn options(&self) -> &CompileOptions {
        &self.options
    }

    /// Starts over if any BackendPolicy was added, changed or removed.
    fn forget_if_policies_changed(&mut self, index: &Index) {
        let same = self.policies.len() == index.backend_policies.len()
            && self
                .policies
                .iter()
                .zip(&index.backend_policies)
                .all(|((ka, a), (kb, b))| ka == kb && Arc::ptr_eq(a, &b.object));
        if !same {
            let policies = index
                .backend_policies
                .iter()
                .map(|(k, e)| (k.clone(), e.object.clone()))
                .collect();
            *self = Compiler::new(self.options.clone());
            self.policies = policies;
        }
    }

    /// The Ingresses to compile again: changed ones, the readers of changed objects, and those
    /// a class change gives to weir or takes away.
    fn dirty(&mut self, index: &Index, classes: &class::Classes) -> BTreeSet<Arc<ObjectKey>> {
        let mut dirty = BTreeSet::new();
        for change in self.ingresses.update(&index.ingresses) {
            dirty.insert(Arc::new(change.key));
        }
        for change in self.services.update(&index.services) {
            mark(&self.dependents, &Dep::Service(change.key), &mut dirty);
        }
        for change in self.slices.update(&index.endpoint_slices) {
            let service = |s: &Option<Arc<EndpointSlice>>| {
                s.as_deref()
                    .and_then(|s| backend::slice_service(&change.key, s))
            };
            if let Some(before) = service(&change.before) {
                self.slice_index.remove(&before, &change.key);
                mark(&self.dependents, &Dep::Service(before), &mut dirty);
            }
            if let Some(now) = service(&change.now) {
                self.slice_index.insert(now.clone(), change.key.clone());
                mark(&self.dependents, &Dep::Service(now), &mut dirty);
            }
        }
        for change in self.secrets.update(&index.secrets) {
            mark(&self.dependents, &Dep::Secret(change.key), &mut dirty);
        }
        for change in self.config_maps.update(&index.config_maps) {
            mark(&self.dependents, &Dep::ConfigMap(change.key), &mut dirty);
        }
        if self.classes.as_ref() != Some(classes) {
            for (key, entry) in &index.ingresses {
                if classes.owns(&entry.object) != self.order_of.contains_key(key) {
                    dirty.insert(Arc::new(key.clone()));
                }
            }
        }
        dirty
    }

    pub fn compile(&mut self, index: &Index) -> Compiled {
        self.forget_if_policies_changed(index);
        let fresh = std::mem::take(&mut self.fresh);
        let options = self.options.clone();
        let mut diagnostics = Vec::new();
        let policies = policy::Policies::new(index, &options.default_policy, &mut diagnostics);
        let classes = class::Classes::new(index, &options);
        let dirty = self.dirty(index, &classes);
        let mut ctx = Context {
            index,
            services: backend::Services {
                index,
                slices: &self.slice_index,
            },
            certificates: tls::Certificates::default(),
            policies,
            default_policy: self.default_policy.clone(),
            system_roots: options.system_roots.clone(),
        };
        let mut recompiled = 0;
        let mut removed: BTreeSet<Order> = BTreeSet::new();
        let mut added: BTreeSet<Order> = BTreeSet::new();
        for key in dirty {
            if let Some(order) = self.order_of.remove(&key) {
                if let Some(fragment) = self.fragments.remove(&order) {
                    self.linker.remove(&order, &fragment);
                    for dep in fragment.deps(&key.namespace) {
                        if let Some(readers) = self.dependents.get_mut(&dep) {
                            readers.remove(&key);
                            if readers.is_empty() {
                                self.dependents.remove(&dep);
                            }
                        }
                    }
                }
                removed.insert(order);
            }
            let Some(entry) = index.ingresses.get(&key) else {
                continue;
            };
            if !classes.owns(&entry.object) {
                continue;
            }
            recompiled += 1;
            let mut fragment = ingress::compile_ingress(&mut ctx, &key, &entry.object);
            // A certificate for no host never wins; every other claim is settled by the linker.
            fragment.lost = fragment
                .steps
                .iter()
                .map(|s| {
                    matches!(
                        s,
                        Step::Certificate {
                            name: HostMatch::Any,
                            ..
                        }
                    )
                    .then(Conflict::certificate_without_host)
                })
                .collect();
            let order = Order::of(&key, &entry.object);
            self.linker.add(&order, &fragment);
            for dep in fragment.deps(&key.namespace) {
                self.dependents.entry(dep).or_default().insert(key.clone());
            }
            self.order_of.insert(key, order.clone());
            self.fragments.insert(order.clone(), fragment);
            if !removed.remove(&order) {
                added.insert(order);
            }
        }
        if !removed.is_empty() || !added.is_empty() || fresh {
            self.owned = self.fragments.keys().map(|o| (*o.key).clone()).collect();
        }
        self.classes = Some(classes);
        self.linker.settle(&mut self.fragments);

        let mut link_diagnostics = Vec::new();
        for (order, fragment) in &self.fragments {
            fragment_diagnostics(index, order, fragment, &mut link_diagnostics);
        }
        let default_certificate = options.default_certificate.as_ref().and_then(|key| {
            match ctx.certificates.get(index, key) {
                Ok(cert) => Some(cert),
                Err(message) => {
                    let object = ObjectRef {
                        kind: Kind::Secret,
                        key: key.clone(),
                    };
                    let origin = index.secrets.get(key).and_then(|e| e.origin.clone());
                    link_diagnostics.push(
                        Diagnostic::error(
                            Some(object),
                            None,
                            format!("default certificate: {message}"),
                        )
                        .at(origin),
                    );
                    None
                }
            }
        });
        self.linker.default_certificate(default_certificate);
        let (table, changed) = self.linker.table();
        diagnostics.append(&mut link_diagnostics);
        Compiled {
            table,
            diagnostics,
            policy_status: ctx.policies.status,
            owned_ingresses: self.owned.clone(),
            recompiled,
            changed: (!fresh).then_some(changed),
        }
    }
}

/// The diagnostics of one fragment, in its field order: its own, and the claims it lost.
fn fragment_diagnostics(
    index: &Index,
    order: &Order,
    fragment: &Fragment,
    out: &mut Vec<Diagnostic>,
) {
    let quiet = fragment
        .steps
        .iter()
        .zip(&fragment.lost)
        .all(|(step, lost)| !matches!(step, Step::Report(_)) && lost.is_none());
    if quiet {
        return;
    }
    let origin = index
        .ingresses
        .get(&order.key)
        .and_then(|e| e.origin.clone());
    for (step, lost) in fragment.steps.iter().zip(&fragment.lost) {
        let field = match step {
            Step::Report(d) => {
                out.push(d.clone().at(origin.clone()));
                continue;
            }
            Step::DefaultBackend { .. } => "spec.defaultBackend".to_string(),
            Step::Route { rule, path, .. } => format!("spec.rules[{rule}].http.paths[{path}]"),
            Step::Certificate { tls, host, .. } => format!("spec.tls[{tls}].hosts[{host}]"),
        };
        if let Some(conflict) = lost {
            let object = ObjectRef {
                kind: Kind::Ingress,
                key: (*order.key).clone(),
            };
            out.push(
                Diagnostic::warning(Some(object), Some(field), format!("ignored: {conflict}"))
                    .at(origin.clone()),
            );
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
