//! Resolving an Ingress backend (Service name + port) to a dataplane backend with endpoints.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use foldhash::HashMap;

use k8s_openapi::api::core::v1::{Service, ServicePort};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::ServiceBackendPort;
use weir_dataplane::{Backend, BackendKey, Protocol, Roots, UpstreamTls};

use crate::crd::BackendTls;

use super::fragment::Deps;
use super::Context;
use crate::index::Index;
use crate::object::ObjectKey;

pub const SERVICE_NAME_LABEL: &str = "kubernetes.io/service-name";
pub const APP_PROTOCOL_H2C: &str = "kubernetes.io/h2c";
pub const APP_PROTOCOL_H2: &str = "kubernetes.io/h2";

/// The EndpointSlices of each Service (namespace and the slice's service-name label), kept up to
/// date slice by slice from one compile to the next.
#[derive(Debug, Default)]
pub(super) struct SliceIndex(HashMap<ObjectKey, super::set::Set<ObjectKey>>);

/// The Service an EndpointSlice says it belongs to.
pub(super) fn slice_service(key: &ObjectKey, slice: &EndpointSlice) -> Option<ObjectKey> {
    let name = slice.metadata.labels.as_ref()?.get(SERVICE_NAME_LABEL)?;
    Some(ObjectKey::new(key.namespace.clone(), name.clone()))
}

impl SliceIndex {
    pub(super) fn remove(&mut self, service: &ObjectKey, slice: &ObjectKey) {
        if let Some(slices) = self.0.get_mut(service) {
            slices.remove(slice);
            if slices.is_empty() {
                self.0.remove(service);
            }
        }
    }

    pub(super) fn insert(&mut self, service: ObjectKey, slice: ObjectKey) {
        self.0.entry(service).or_default().insert(slice);
    }
}

/// Services with the EndpointSlices that belong to them, as the index holds them now.
pub(super) struct Services<'i> {
    pub(super) index: &'i Index,
    pub(super) slices: &'i SliceIndex,
}

pub(super) struct ServiceEntry<'i> {
    pub(super) service: &'i Arc<Service>,
    /// In key order. A slice whose Service does not exist serves nothing.
    pub(super) slices: Vec<&'i Arc<EndpointSlice>>,
}

impl<'i> Services<'i> {
    pub(super) fn get(&self, key: &ObjectKey) -> Option<ServiceEntry<'i>> {
        let service = &self.index.services.get(key)?.object;
        let slices = self.slices.0.get(key).map_or_else(Vec::new, |keys| {
            keys.iter()
                .filter_map(|k| self.index.endpoint_slices.get(k).map(|e| &e.object))
                .collect()
        });
        Some(ServiceEntry { service, slices })
    }
}

/// A backend that resolved, possibly with a reason it cannot serve; `problem` is the diagnostic
/// message for the referencing object when something is wrong with the reference itself.
pub(super) struct Resolved {
    pub(super) backend: Backend,
    pub(super) problem: Option<String>,
}

fn unavailable(ctx: &Context<'_>, key: BackendKey, reason: String) -> Resolved {
    Resolved {
        backend: Backend {
            key,
            endpoints: Vec::new(),
            unavailable: Some(reason.clone()),
            policy: ctx.default_policy.clone(),
            tls: None,
        },
        problem: Some(reason),
    }
}

fn describe(port: &ServiceBackendPort) -> String {
    match (&port.name, port.number) {
        (Some(name), _) => format!("port {name:?}"),
        (None, Some(n)) => format!("port {n}"),
        (None, None) => "no port".to_string(),
    }
}

/// Records what it reads in `deps`.
pub(super) fn resolve(
    ctx: &Context<'_>,
    deps: &mut Deps,
    namespace: &str,
    service: &str,
    port: &ServiceBackendPort,
) -> Resolved {
    let svc_key = ObjectKey::new(namespace, service);
    let mut key = BackendKey {
        namespace: namespace.to_string(),
        service: service.to_string(),
        port: port.number.and_then(|n| u16::try_from(n).ok()).unwrap_or(0),
        protocol: Protocol::Http1,
        tls: None,
    };
    let entry = ctx.services.get(&svc_key);
    deps.service(service);
    let Some(entry) = entry else {
        return unavailable(ctx, key, format!("service {svc_key} not found"));
    };
    let spec = entry.service.spec.as_ref();
    if spec.and_then(|s| s.type_.as_deref()) == Some("ExternalName") {
        return unavailable(
            ctx,
            key,
            format!("service {svc_key} is of type ExternalName, which is not supported"),
        );
    }
    let ports = spec.and_then(|s| s.ports.as_deref()).unwrap_or_default();
    let found: Option<&ServicePort> = ports.iter().find(|p| match (&port.name, port.number) {
        (Some(name), _) => p.name.as_deref() == Some(name.as_str()),
        (None, Some(n)) => p.port == n,
        (None, None) => false,
    });
    let Some(svc_port) = found else {
        return unavailable(
            ctx,
            key,
            format!("service {svc_key} has no {}", describe(port)),
        );
    };
    key.port = u16::try_from(svc_port.port).unwrap_or(0);
    let (policy, protocol, tls_spec) = match ctx.policies.lookup(&svc_key, svc_port.name.as_deref())
    {
        Some(found) => (found.policy, found.protocol, found.tls),
        None => (ctx.default_policy.clone(), None, None),
    };
    key.protocol = match (protocol, svc_port.app_protocol.as_deref()) {
        // The policy's protocol overrides the Service port's appProtocol.
        (Some(protocol), _) => protocol,
        (None, Some(APP_PROTOCOL_H2C)) => Protocol::H2c,
        (None, Some(APP_PROTOCOL_H2)) => Protocol::H2,
        (None, Some("https")) => Protocol::Https,
        (None, Some(p @ ("kubernetes.io/ws" | "kubernetes.io/wss"))) => {
            let reason = format!("service {svc_key} port {} has appProtocol {p}; WebSocket backends are not supported yet", svc_port.port);
            return unavailable(ctx, key, reason);
        }
        _ => Protocol::Http1,
    };
    let tls = if key.protocol.is_tls() {
        match upstream_tls(ctx, deps, &svc_key, tls_spec.as_ref()) {
            Ok(tls) => {
                key.tls = Some(tls.identity());
                Some(tls)
            }
            Err(reason) => return unavailable(ctx, key, reason),
        }
    } else {
        None
    };
    let slices = entry.slices.as_slice();
    Resolved {
        backend: Backend {
            key,
            endpoints: ready_endpoints(slices, svc_port),
            unavailable: None,
            policy,
            tls,
        },
        problem: None,
    }
}

/// TLS settings for a backend: the policy's CA references (PEM from Secrets or ConfigMaps in
/// the Service's namespace) or the system roots, and its hostname or `<svc>.<ns>.svc`.
fn upstream_tls(
    ctx: &Context<'_>,
    deps: &mut Deps,
    service: &ObjectKey,
    spec: Option<&BackendTls>,
) -> Result<UpstreamTls, String> {
    let default_host = format!("{}.{}.svc", service.name, service.namespace);
    let hostname = spec
        .and_then(|s| s.hostname.clone())
        .unwrap_or(default_host);
    let refs = spec
        .map(|s| s.ca_certificate_refs.as_slice())
        .unwrap_or(&[]);
    if refs.is_empty() {
        return UpstreamTls::new(&hostname, Roots::System(&ctx.system_roots))
            .map_err(|e| format!("TLS to service {service}: {e}"));
    }
    let mut pem = Vec::new();
    let mut sources = Vec::new();
    for r in refs {
        let key = ObjectKey::new(service.namespace.clone(), r.name.clone());
        let data_key = r.key.as_deref().unwrap_or("ca.crt");
        let found = match r.kind.as_str() {
            "ConfigMap" => deps
                .config_maps
                .get(&ctx.index.config_maps, &key)
                .and_then(|c| {
                    c.data
                        .as_ref()?
                        .get(data_key)
                        .map(|v| v.as_bytes().to_vec())
                }),
            _ => deps.secrets.get(&ctx.index.secrets, &key).and_then(|s| {
                s.data
                    .as_ref()
                    .and_then(|d| d.get(data_key).map(|v| v.0.clone()))
                    .or_else(|| {
                        s.string_data
                            .as_ref()?
                            .get(data_key)
                            .map(|v| v.as_bytes().to_vec())
                    })
            }),
        };
        let source = format!("{} {key}", r.kind);
        let Some(bytes) = found else {
            return Err(format!(
                "TLS to service {service}: {source} not found or has no {data_key:?}"
            ));
        };
        pem.extend_from_slice(&bytes);
        pem.push(b'\n');
        sources.push(source);
    }
    let source = sources.join(",");
    UpstreamTls::new(
        &hostname,
        Roots::Pem {
            source: &source,
            pem: &pem,
        },
    )
    .map_err(|e| format!("TLS to service {service}: {e}"))
}

/// Ready, non-terminating addresses on the slice port that matches the Service port by name.
fn ready_endpoints(slices: &[&Arc<EndpointSlice>], svc_port: &ServicePort) -> Vec<SocketAddr> {
    let want = svc_port.name.as_deref().unwrap_or("");
    let mut out = BTreeSet::new();
    for slice in slices {
        if !matches!(slice.address_type.as_str(), "IPv4" | "IPv6") {
            continue;
        }
        let Some(port) = slice
            .ports
            .iter()
            .flatten()
            .find(|p| p.name.as_deref().unwrap_or("") == want)
            .and_then(|p| p.port)
            .and_then(|p| u16::try_from(p).ok())
        else {
            continue;
        };
        for endpoint in &slice.endpoints {
            // A nil `ready` means ready; terminating endpoints get no new requests.
            if let Some(c) = &endpoint.conditions {
                if c.ready == Some(false) || c.terminating == Some(true) {
                    continue;
                }
            }
            for address in &endpoint.addresses {
                if let Ok(ip) = address.parse::<IpAddr>() {
                    out.insert(SocketAddr::new(ip, port));
                }
            }
        }
    }
    out.into_iter().collect()
}
