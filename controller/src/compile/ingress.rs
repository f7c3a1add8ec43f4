//! Ingress v1 rules → routes; `spec.tls` → certificates by SNI.

use k8s_openapi::api::networking::v1::{Ingress, IngressBackend};
use weir_dataplane::{BackendId, HostMatch, PathMatch};

use super::{backend, Context};
use crate::diagnostic::Diagnostic;
use crate::index::Entry;
use crate::object::{Kind, ObjectKey, ObjectRef};

/// Collects the diagnostics of one Ingress, each naming it and its origin.
struct Reporter<'a> {
    key: &'a ObjectKey,
    entry: &'a Entry<Ingress>,
    out: Vec<Diagnostic>,
}

impl Reporter<'_> {
    fn object(&self) -> Option<ObjectRef> {
        Some(ObjectRef {
            kind: Kind::Ingress,
            key: self.key.clone(),
        })
    }

    fn error(&mut self, field: String, message: impl Into<String>) {
        let d = Diagnostic::error(self.object(), Some(field), message);
        self.out.push(d.at(self.entry.origin.clone()));
    }

    fn warning(&mut self, field: String, message: impl Into<String>) {
        let d = Diagnostic::warning(self.object(), Some(field), message);
        self.out.push(d.at(self.entry.origin.clone()));
    }
}

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
    let mut backends: Vec<(String, &IngressBackend)> = Vec::new();
    if let Some(b) = &spec.default_backend {
        backends.push(("spec.defaultBackend".to_string(), b));
    }
    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        for (p, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            backends.push((
                format!("spec.rules[{r}].http.paths[{p}].backend"),
                &path.backend,
            ));
        }
    }
    backends.into_iter().find_map(|(field, b)| {
        let name = b.service.as_ref()?.name.as_str();
        name.contains('/')
            .then(|| (format!("{field}.service.name"), name.to_string()))
    })
}

/// `field` names the backend in diagnostics; it is only built when there is one.
fn resolve_backend(
    ctx: &mut Context<'_>,
    report: &mut Reporter<'_>,
    namespace: &str,
    backend: &IngressBackend,
    field: impl Fn() -> String,
) -> Option<BackendId> {
    let Some(service) = &backend.service else {
        report.error(
            field(),
            "only service backends are supported (resource backends are not)",
        );
        return None;
    };
    let Some(port) = &service.port else {
        report.error(
            format!("{}.service.port", field()),
            "a service port (number or name) is required",
        );
        return None;
    };
    let resolved = backend::resolve(ctx, namespace, &service.name, port);
    if let Some(problem) = resolved.problem {
        report.error(format!("{}.service", field()), problem);
    }
    Some(ctx.builder.backend(resolved.backend))
}

pub(super) fn compile_ingress(ctx: &mut Context<'_>, key: &ObjectKey, entry: &Entry<Ingress>) {
    let mut report = Reporter {
        key,
        entry,
        out: Vec::new(),
    };
    let name = key.to_string();
    let ingress = &entry.object;
    if let Some((field, value)) = cross_namespace(ingress) {
        report.error(
            field,
            format!("{value:?} refers to another namespace; an Ingress may only use Services and Secrets in its own namespace, so the whole Ingress is rejected"),
        );
        ctx.diagnostics.append(&mut report.out);
        return;
    }
    let Some(spec) = &ingress.spec else {
        ctx.diagnostics.append(&mut report.out);
        return;
    };

    if let Some(default) = &spec.default_backend {
        if let Some(id) = resolve_backend(ctx, &mut report, &key.namespace, default, || {
            "spec.defaultBackend".to_string()
        }) {
            if let Err(conflict) = ctx.builder.default_backend(&name, id) {
                report.warning("spec.defaultBackend".into(), format!("ignored: {conflict}"));
            }
        }
    }

    for (r, rule) in spec.rules.iter().flatten().enumerate() {
        let host = match rule.host.as_deref() {
            None | Some("") => HostMatch::Any,
            Some(h) => match valid_host(h) {
                Ok(host) => host,
                Err(message) => {
                    report.error(format!("spec.rules[{r}].host"), message);
                    continue;
                }
            },
        };
        for (p, path) in rule.http.iter().flat_map(|h| h.paths.iter()).enumerate() {
            let field = || format!("spec.rules[{r}].http.paths[{p}]");
            let value = path.path.as_deref().unwrap_or("/");
            if !value.starts_with('/') {
                report.error(
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
                    report.error(
                        format!("{}.pathType", field()),
                        format!("{other:?} is not one of Exact, Prefix, ImplementationSpecific"),
                    );
                    continue;
                }
            };
            let Some(id) = resolve_backend(ctx, &mut report, &key.namespace, &path.backend, || {
                format!("{}.backend", field())
            }) else {
                continue;
            };
            if let Err(conflict) = ctx.builder.route(&host, matcher, &name, id) {
                report.warning(field(), format!("ignored: {conflict}"));
            }
        }
    }

    for (t, tls) in spec.tls.iter().flatten().enumerate() {
        let field = format!("spec.tls[{t}]");
        let Some(secret) = tls.secret_name.as_deref().filter(|s| !s.is_empty()) else {
            report.warning(
                format!("{field}.secretName"),
                "no secretName: these hosts use the default certificate",
            );
            continue;
        };
        let secret_key = ObjectKey::new(key.namespace.clone(), secret);
        let cert = match ctx.certificates.get(ctx.index, &secret_key) {
            Ok(cert) => cert,
            Err(message) => {
                report.error(format!("{field}.secretName"), message);
                continue;
            }
        };
        for (h, host) in tls.hosts.iter().flatten().enumerate() {
            let host_field = format!("{field}.hosts[{h}]");
            match valid_host(host) {
                Ok(host) => {
                    if let Err(conflict) = ctx.builder.certificate(&host, cert.clone()) {
                        report.warning(host_field, format!("ignored: {conflict}"));
                    }
                }
                Err(message) => report.error(host_field, message),
            }
        }
    }
    ctx.diagnostics.append(&mut report.out);
}
