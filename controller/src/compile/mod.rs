//! `compile`: the one place Kubernetes semantics are interpreted. Pure and deterministic: the
//! same index and options always give the same table and diagnostics.

mod backend;
mod class;
mod ingress;
mod policy;
mod tls;

use weir_dataplane::{BackendPolicy, RouteTable, RouteTableBuilder};

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
}

/// Compiles the index into a route table. Invalid objects are skipped with diagnostics; the rest
/// applies.
pub fn compile(index: &Index, options: &CompileOptions) -> Compiled {
    let mut diagnostics = Vec::new();
    let policies = policy::Policies::new(index, &options.default_policy, &mut diagnostics);
    // Most Ingresses have one host and one backend of their own.
    let size = index.ingresses.len();
    let mut ctx = Context {
        index,
        services: backend::Services::new(index),
        certificates: tls::Certificates::default(),
        policies,
        default_policy: std::sync::Arc::new(options.default_policy.clone()),
        system_roots: options.system_roots.clone(),
        builder: RouteTableBuilder::with_capacity(size, size),
        diagnostics,
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
    let owned_ingresses = ours.iter().map(|(k, _)| (*k).clone()).collect();
    for (key, entry) in ours {
        ingress::compile_ingress(&mut ctx, key, entry);
    }
    if let Some(key) = &options.default_certificate {
        match ctx.certificates.get(index, key) {
            Ok(cert) => ctx.builder.default_certificate(cert),
            Err(message) => {
                let object = ObjectRef {
                    kind: Kind::Secret,
                    key: key.clone(),
                };
                let origin = index.secrets.get(key).and_then(|e| e.origin.clone());
                ctx.diagnostics.push(
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
    Compiled {
        table: ctx.builder.build(),
        diagnostics: ctx.diagnostics,
        policy_status: ctx.policies.status,
        owned_ingresses,
    }
}

struct Context<'i> {
    index: &'i Index,
    services: backend::Services<'i>,
    certificates: tls::Certificates,
    policies: policy::Policies,
    default_policy: std::sync::Arc<BackendPolicy>,
    system_roots: std::sync::Arc<rustls::RootCertStore>,
    builder: RouteTableBuilder,
    diagnostics: Vec<Diagnostic>,
}

#[cfg(test)]
mod tests;
