//! Builders for the manifests tests write.

use std::net::SocketAddr;

/// An IngressClass for weir marked as the default class.
pub fn ingress_class() -> String {
    "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata:\n  name: weir\n  annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}\nspec: {controller: weir.dev/ingress-controller}\n".to_string()
}

/// A Service with one named port `http` (port 80), optional appProtocol, plus an EndpointSlice
/// pointing at `endpoints` (all ready).
pub fn service(
    namespace: &str,
    name: &str,
    app_protocol: Option<&str>,
    endpoints: &[SocketAddr],
) -> String {
    let proto = app_protocol
        .map(|p| format!(", appProtocol: {p}"))
        .unwrap_or_default();
    let port = endpoints.first().map(|a| a.port()).unwrap_or(80);
    let addrs = endpoints
        .iter()
        .map(|a| {
            format!(
                "  - addresses: [\"{}\"]\n    conditions: {{ready: true}}\n",
                a.ip()
            )
        })
        .collect::<String>();
    let addrs = if addrs.is_empty() {
        "  []\n".to_string()
    } else {
        addrs
    };
    format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: {port}{proto}}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata:\n  name: {name}-1\n  namespace: {namespace}\n  labels: {{kubernetes.io/service-name: {name}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n{addrs}"
    )
}

/// One Ingress with one rule: `host` (empty for any), `path`, `path_type` → `service`:80.
pub fn ingress(
    namespace: &str,
    name: &str,
    host: &str,
    path: &str,
    path_type: &str,
    service: &str,
) -> String {
    let host_line = if host.is_empty() {
        String::new()
    } else {
        format!("    host: \"{host}\"\n")
    };
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  rules:\n  - http:\n      paths:\n      - path: \"{path}\"\n        pathType: {path_type}\n        backend: {{service: {{name: {service}, port: {{number: 80}}}}}}\n{host_line}"
    )
}

/// Joins documents into one multi-document YAML file.
pub fn docs(parts: &[String]) -> String {
    parts.join("\n---\n")
}

/// A BackendPolicy targeting `service`, with `spec` (YAML, indented by two spaces, without
/// `targetRefs`) appended to its spec.
pub fn backend_policy(namespace: &str, name: &str, service: &str, spec: &str) -> String {
    let spec = spec.lines().map(|l| format!("  {l}\n")).collect::<String>();
    format!(
        "apiVersion: weir.dev/v1alpha1\nkind: BackendPolicy\nmetadata: {{name: {name}, namespace: {namespace}}}\nspec:\n  targetRefs: [{{name: {service}}}]\n{spec}"
    )
}
