//! Unit tests of `compile` on hand-written manifests (no I/O beyond parsing strings).

use std::path::Path;

use super::*;
use crate::manifest::parse;

fn index(yaml: &str) -> Index {
    let parsed = parse(Path::new("test.yaml"), yaml, None);
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    let mut index = Index::default();
    for (object, origin) in parsed.objects.into_values() {
        index.apply(object, Some(origin));
    }
    index
}

fn compiled(yaml: &str) -> Compiled {
    compile(&index(yaml), &CompileOptions::default())
}

const SERVICE: &str = r#"
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports:
  - {name: http, port: 80}
  - {name: grpc, port: 9000, appProtocol: kubernetes.io/h2c}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-a, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
ports: [{name: http, port: 8080}, {name: grpc, port: 9090}]
endpoints:
- addresses: ["10.0.0.2"]
- addresses: ["10.0.0.1"]
  conditions: {ready: true}
- addresses: ["10.0.0.3"]
  conditions: {ready: false}
"#;

fn ingress(name: &str, extra_meta: &str, class: &str, host: &str, port: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: shop{extra_meta}}}
spec:
  {class}
  rules:
  - host: "{host}"
    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: web, port: {port}}}}}}}]}}
"#
    )
}

#[test]
fn resolves_ports_protocol_and_ready_endpoints() {
    let yaml = format!(
        "{SERVICE}{}{}",
        ingress(
            "by-name",
            "",
            "ingressClassName: weir",
            "a.example.com",
            "{name: grpc}"
        ),
        ingress(
            "by-number",
            "",
            "ingressClassName: weir",
            "b.example.com",
            "{number: 80}"
        )
    );
    let c = compiled(&yaml);
    assert!(c.diagnostics.is_empty(), "{:?}", c.diagnostics);
    let backends: Vec<_> = c.table.backends().map(|(_, b)| b).collect();
    assert_eq!(backends.len(), 2);
    let grpc = backends.iter().find(|b| b.key.port == 9000).unwrap();
    assert_eq!(grpc.key.protocol, weir_dataplane::Protocol::H2c);
    assert_eq!(
        grpc.endpoints,
        vec![
            "10.0.0.1:9090".parse().unwrap(),
            "10.0.0.2:9090".parse().unwrap()
        ]
    );
    let http = backends.iter().find(|b| b.key.port == 80).unwrap();
    assert_eq!(http.key.protocol, weir_dataplane::Protocol::Http1);
    assert_eq!(http.endpoints.len(), 2);
}

#[test]
fn ingress_classes_decide_ownership() {
    let classes = r#"
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: mine, annotations: {ingressclass.kubernetes.io/is-default-class: "true"}}
spec: {controller: weir.dev/ingress-controller}
---
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: weir}
spec: {controller: example.com/not-weir}
"#;
    let yaml = format!(
        "{SERVICE}{classes}{}{}{}{}",
        ingress(
            "explicit",
            "",
            "ingressClassName: mine",
            "a.example.com",
            "{number: 80}"
        ),
        ingress("no-class", "", "", "b.example.com", "{number: 80}"),
        // `weir` belongs to another controller here, so the flag default does not claim it.
        ingress(
            "taken",
            "",
            "ingressClassName: weir",
            "c.example.com",
            "{number: 80}"
        ),
        ingress(
            "legacy",
            ", annotations: {kubernetes.io/ingress.class: mine}",
            "",
            "d.example.com",
            "{number: 80}"
        ),
    );
    let c = compiled(&yaml);
    let routed = |host| c.table.route(host, "/").is_some();
    assert!(routed("a.example.com"));
    assert!(
        routed("b.example.com"),
        "default class takes Ingresses without a class"
    );
    assert!(!routed("c.example.com"));
    assert!(routed("d.example.com"));
}

#[test]
fn conflicts_go_to_the_oldest_and_are_reported() {
    let yaml = format!(
        "{SERVICE}{}{}",
        ingress(
            "aaa",
            ", creationTimestamp: \"2024-05-01T00:00:00Z\"",
            "ingressClassName: weir",
            "a.example.com",
            "{number: 80}"
        ),
        ingress(
            "zzz",
            ", creationTimestamp: \"2023-05-01T00:00:00Z\"",
            "ingressClassName: weir",
            "a.example.com",
            "{number: 9000}"
        ),
    );
    let c = compiled(&yaml);
    assert_eq!(
        c.table.route("a.example.com", "/").unwrap().route,
        "shop/zzz"
    );
    let d = &c.diagnostics[0];
    assert_eq!(d.object.as_ref().unwrap().to_string(), "Ingress shop/aaa");
    assert_eq!(d.field.as_deref(), Some("spec.rules[0].http.paths[0]"));
    assert!(
        d.message.contains("already claimed by shop/zzz"),
        "{}",
        d.message
    );
    // SERVICE holds documents 1 and 2; the losing Ingress `aaa` is document 3.
    assert_eq!(d.origin.as_ref().unwrap().document, 3);
}

#[test]
fn cross_namespace_references_reject_the_ingress() {
    let yaml = format!(
        "{SERVICE}{}",
        ingress(
            "x",
            "",
            "ingressClassName: weir\n  tls: [{hosts: [a.example.com], secretName: other/cert}]",
            "a.example.com",
            "{number: 80}"
        ),
    );
    let c = compiled(&yaml);
    assert!(c.table.route("a.example.com", "/").is_none());
    assert_eq!(
        c.diagnostics[0].field.as_deref(),
        Some("spec.tls[0].secretName")
    );
    assert!(c.diagnostics[0].is_error());
}

#[test]
fn bad_references_are_reported_with_fields() {
    let yaml = format!(
        "{SERVICE}{}{}",
        ingress(
            "missing-port",
            "",
            "ingressClassName: weir",
            "a.example.com",
            "{number: 81}"
        ),
        ingress(
            "bad-host",
            "",
            "ingressClassName: weir",
            "Bad_Host.example.com",
            "{number: 80}"
        ),
    );
    let c = compiled(&yaml);
    let text: Vec<String> = c.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter().any(|t| t.contains("Ingress shop/missing-port: spec.rules[0].http.paths[0].backend.service: service shop/web has no port 81")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("Ingress shop/bad-host: spec.rules[0].host: invalid host")),
        "{text:?}"
    );
    // The route with a missing port still exists and answers 503 with the reason.
    let d = c.table.route("a.example.com", "/").unwrap();
    assert!(c
        .table
        .backend(d.backend)
        .unwrap()
        .unavailable
        .as_deref()
        .unwrap()
        .contains("no port 81"));
}

#[test]
fn tls_secret_problems_are_reported() {
    let secret = r#"
---
apiVersion: v1
kind: Secret
metadata: {name: opaque, namespace: shop}
type: Opaque
stringData: {tls.crt: x, tls.key: y}
"#;
    let yaml = format!(
        "{SERVICE}{secret}{}",
        ingress("t", "", "ingressClassName: weir\n  tls: [{hosts: [a.example.com], secretName: opaque}, {hosts: [b.example.com], secretName: absent}]", "a.example.com", "{number: 80}"),
    );
    let c = compiled(&yaml);
    let text: Vec<String> = c.diagnostics.iter().map(|d| d.to_string()).collect();
    assert!(
        text.iter()
            .any(|t| t.contains("spec.tls[0].secretName: secret shop/opaque has type \"Opaque\"")),
        "{text:?}"
    );
    assert!(
        text.iter()
            .any(|t| t.contains("spec.tls[1].secretName: secret shop/absent not found")),
        "{text:?}"
    );
    assert!(c.table.tls().is_empty());
    // Routing is unaffected by a certificate problem.
    assert!(c.table.route("a.example.com", "/").is_some());
}

#[test]
fn compile_is_deterministic() {
    let yaml = format!(
        "{SERVICE}{}{}",
        ingress(
            "a",
            "",
            "ingressClassName: weir",
            "a.example.com",
            "{number: 80}"
        ),
        ingress(
            "b",
            "",
            "ingressClassName: weir",
            "*.example.com",
            "{name: grpc}"
        ),
    );
    let i = index(&yaml);
    let first = compile(&i, &CompileOptions::default());
    let second = compile(&i, &CompileOptions::default());
    assert!(first.table.same_config(&second.table));
    assert_eq!(first.diagnostics, second.diagnostics);
}
