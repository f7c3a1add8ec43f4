//! Ingress v1 rules → routes; `spec.tls` → certificates by SNI.

use std::sync::Arc;

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use weir_dataplane::{Backend, HostMatch, PathMatch};

use super::fragment::{Fragment, Step};
use super::{backend, Context};
use crate::diagnostic::Diagnostic;
use crate::object::{Kind, ObjectKey, ObjectRef};

/// A DNS name, or `*.` followed by one, as Ingress hosts allow.
fn valid_host(host: &str) -> Result<HostMatch, String> {
    let name = host.strip_prefix("*.").unwrap_or(host);
    let label_ok = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    if name.is_empty() || name.len() > 253 || !name.split('.').all(label_ok) {
        return Err(format!(
            "invalid host {host:?}: must be a lower-case DNS name, optionally prefixed by \"*.\""
        ));
    }
    Ok(HostMatch::parse(host))
}

/// Rejects references that would leave the Ingress's namespace.
fn cross_namespace(ingress: &Ingress) -> Option<(String, String)> {
    let spec = ingress.spec.as_ref()?;
    for (i, tls) in spec.tls.iter().flatten().enumerate() {
        if let Some(secret) = tls.secret_name.as_deref().filter(|s| s.contains('/')) {
            return Some((format!("spec.tls[{i}].secretName"), secret.to_string()));
        }
    }
    let foreign = |b: &IngressBackend| {
        let name = b.service.as_ref()?.name.as_str();
        name.contains('/').then(|| name.to_string())
    };
    if let Some(name) = spec.default_backend.as_ref().and_then(foreign) {
        return Some(("spec.defaultBackend.service.name".to_string(), name));
    }
    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        for (p, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            if let Some(name) = foreign(&path.backend) {
                let field = format!("spec.rules[{r}].http.paths[{p}].backend.service.name");
                return Some((field, name));
            }
        }
    }
    None
}

/// Collects one Ingress's fragment: its backends, claims and diagnostics, in field order.
struct Collector<'a> {
    key: &'a ObjectKey,
    fragment: Fragment,
}

impl Collector<'_> {
    fn report(&mut self, d: Diagnostic) {
        self.fragment.steps.push(Step::Report(d));
    }

    fn object(&self) -> Option<ObjectRef> {
        Some(ObjectRef {
            kind: Kind::Ingress,
            key: self.key.clone(),
        })
    }

    fn error(&mut self, field: String, message: impl Into<String>) {
        self.report(Diagnostic::error(self.object(), Some(field), message));
    }

    fn warning(&mut self, field: String, message: impl Into<String>) {
        self.report(Diagnostic::warning(self.object(), Some(field), message));
    }
}

/// `field` names the backend in diagnostics; it is only built when there is one.
fn resolve_backend(
    ctx: &mut Context<'_>,
    out: &mut Collector<'_>,
    namespace: &str,
    backend: &IngressBackend,
    field: impl Fn() -> String,
) -> Option<Arc<Backend>> {
    let Some(service) = &backend.service else {
        out.error(
            field(),
            "only service backends are supported (resource backends are not)",
        );
        return None;
    };
    let Some(port) = &service.port else {
        out.error(
            format!("{}.service.port", field()),
            "a service port (number or name) is required",
        );
        return None;
    };
    let resolved = backend::resolve(ctx, &mut out.fragment.deps, namespace, &service.name, port);
    if let Some(problem) = resolved.problem {
        out.error(format!("{}.service", field()), problem);
    }
    Some(Arc::new(resolved.backend))
}

/// Compiles one Ingress on its own: what it claims is settled against the others by `link`.
pub(super) fn compile_ingress(
    ctx: &mut Context<'_>,
    key: &ObjectKey,
    ingress: &Arc<Ingress>,
) -> Fragment {
    let mut out = Collector {
        key,
        fragment: Fragment {
            name: key.to_string().into(),
            steps: Vec::new(),
            deps: Default::default(),
            lost: Vec::new(),
        },
    };
    if let Some((field, value)) = cross_namespace(ingress) {
        out.error(
            field,
            format!("{value:?} refers to another namespace; an Ingress may only use Services and Secrets in its own namespace, so the whole Ingress is rejected"),
        );
        return out.fragment;
    }
    let Some(spec) = &ingress.spec else {
        return out.fragment;
    };

    if let Some(default) = &spec.default_backend {
        if let Some(backend) = resolve_backend(ctx, &mut out, &key.namespace, default, || {
            "spec.defaultBackend".to_string()
        }) {
            out.fragment.steps.push(Step::DefaultBackend { backend });
        }
    }

    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        let host = match rule.host.as_deref() {
            None | Some("") => HostMatch::Any,
            Some(h) => match valid_host(h) {
                Ok(host) => host,
                Err(message) => {
                    out.error(format!("spec.rules[{r}].host"), message);
                    continue;
                }
            },
        };
        for (p, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let field = || format!("spec.rules[{r}].http.paths[{p}]");
            let value = path.path.as_deref().unwrap_or("/");
            if !value.starts_with('/') {
                out.error(
                    format!("{}.path", field()),
                    format!("{value:?} must start with \"/\""),
                );
                continue;
            }
            let matcher = match path.path_type.as_str() {
                "Exact" => PathMatch::exact(value),
                // ImplementationSpecific is treated exactly like Prefix.
                "Prefix" | "ImplementationSpecific" => PathMatch::prefix(value),
                other => {
                    out.error(
                        format!("{}.pathType", field()),
                        format!("{other:?} is not one of Exact, Prefix, ImplementationSpecific"),
                    );
                    continue;
                }
            };
            let Some(backend) =
                resolve_backend(ctx, &mut out, &key.namespace, &path.backend, || {
                    format!("{}.backend", field())
                })
            else {
                continue;
            };
            out.fragment.steps.push(Step::Route {
                host: host.clone(),
                matcher,
                backend,
                rule: r,
                path: p,
            });
        }
    }

    for (t, tls) in spec.tls.iter().flatten().enumerate() {
        let field = format!("spec.tls[{t}]");
        let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            out.warning(
                format!("{field}.secretName"),
                "no secretName: these hosts use the default certificate",
            );
            continue;
        };
        let secret_key = ObjectKey::new(key.namespace.clone(), secret);
        out.fragment
            .deps
            .secrets
            .get(&ctx.index.secrets, &secret_key);
        let cert = match ctx.certificates.get(ctx.index, &secret_key) {
            Ok(cert) => cert,
            Err(message) => {
                out.error(format!("{field}.secretName"), message);
                continue;
            }
        };
        for (h, host) in tls.hosts.iter().flatten().enumerate() {
            match valid_host(host) {
                Ok(name) => out.fragment.steps.push(Step::Certificate {
                    name,
                    cert: cert.clone(),
                    tls: t,
                    host: h,
                }),
                Err(message) => out.error(format!("{field}.hosts[{h}]"), message),
            }
        }
    }
    out.fragment
}
