//! A [`Compiler`] that reuses Ingresses' fragments gives exactly what a compile from scratch
//! gives, after every kind of edit, and compiles again only the Ingresses an edit touches.

use std::path::Path;

use weir_dataplane::Protocol;

use super::*;
use crate::manifest::parse;

/// Applies every object of `yaml` to the index (each one a new object, as a source gives).
fn apply(index: &mut Index, yaml: &str) {
    let parsed = parse(Path::new("edit.yaml"), yaml, None);
    assert!(parsed.diagnostics.is_empty(), "{:?}", parsed.diagnostics);
    for (object, origin) in parsed.objects.into_values() {
        index.apply(object, Some(origin));
    }
}

fn ingress(name: &str, class: &str, host: &str, path: &str, backend: &str, tls: &str) -> String {
    format!(
        r#"
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: {name}, namespace: shop}}
spec:
  ingressClassName: {class}
  rules:
  - host: "{host}"
    http: {{paths: [{{path: {path}, pathType: Prefix, backend: {{service: {backend}}}}}]}}
  {tls}
"#
    )
}

fn slice(service: &str, address: &str) -> String {
    format!(
        r#"
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {{name: {service}-a, namespace: shop, labels: {{kubernetes.io/service-name: {service}}}}}
addressType: IPv4
ports: [{{name: http, port: 8080}}]
endpoints: [{{addresses: ["{address}"]}}]
"#
    )
}

fn service(name: &str, app_protocol: &str) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Service
metadata: {{name: {name}, namespace: shop}}
spec:
  ports: [{{name: http, port: 80{app_protocol}}}]
"#
    )
}

/// A `kubernetes.io/tls` Secret with a fresh self-signed certificate for `host`.
fn tls_secret(name: &str, host: &str) -> String {
    let cert = rcgen::generate_simple_self_signed(vec![host.to_string()]).expect("certificate");
    let indent = |pem: String| pem.replace('\n', "\n    ");
    format!(
        "\n---\napiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: shop}}\ntype: kubernetes.io/tls\nstringData:\n  tls.crt: |\n    {}\n  tls.key: |\n    {}\n",
        indent(cert.cert.pem()),
        indent(cert.signing_key.serialize_pem())
    )
}

fn ca_config_map(host: &str) -> String {
    let cert = rcgen::generate_simple_self_signed(vec![host.to_string()]).expect("certificate");
    format!(
        "\n---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: ca, namespace: shop}}\ndata:\n  ca.crt: |\n    {}\n",
        cert.cert.pem().replace('\n', "\n    ")
    )
}

const TLS_POLICY: &str = r#"
---
apiVersion: weir.dev/v1alpha1
kind: BackendPolicy
metadata: {name: secure, namespace: shop}
spec:
  targetRefs: [{kind: Service, name: secure}]
  protocol: https
  tls:
    caCertificateRefs: [{kind: ConfigMap, name: ca}]
"#;

/// Compiles with the long-lived compiler and from scratch; they must agree in everything.
/// Returns how many Ingresses the long-lived one compiled again.
fn check(compiler: &mut Compiler, index: &Index, step: &str) -> usize {
    let reused = compiler.compile(index);
    let scratch = compile(index, compiler.options());
    assert!(
        reused.table.serves_like(&scratch.table),
        "{step}: tables differ\nreused: {:?}\nscratch: {:?}",
        reused.table,
        scratch.table
    );
    assert_eq!(reused.diagnostics, scratch.diagnostics, "{step}");
    assert_eq!(reused.policy_status, scratch.policy_status, "{step}");
    assert_eq!(reused.owned_ingresses, scratch.owned_ingresses, "{step}");
    assert_eq!(scratch.recompiled, scratch.owned_ingresses.len(), "{step}");
    reused.recompiled
}

#[test]
fn reusing_fragments_matches_a_compile_from_scratch() {
    let web = "{name: web, port: {number: 80}}";
    let mut index = Index::default();
    let tls = "tls: [{hosts: [a.example.com], secretName: cert}]";
    apply(
        &mut index,
        &[
            service("web", ""),
            slice("web", "10.0.0.1"),
            tls_secret("cert", "a.example.com"),
            service("secure", ""),
            slice("secure", "10.0.0.9"),
            ca_config_map("secure.shop.svc"),
            TLS_POLICY.to_string(),
            ingress("a", "weir", "a.example.com", "/", web, tls),
            // Loses host a.example.com path / to `a` (same age, later name).
            ingress("b", "weir", "a.example.com", "/", web, ""),
            ingress(
                "c",
                "weir",
                "c.example.com",
                "/",
                "{name: other, port: {number: 80}}",
                "",
            ),
            ingress("e", "other", "e.example.com", "/", web, ""),
            ingress(
                "s",
                "weir",
                "s.example.com",
                "/",
                "{name: secure, port: {number: 80}}",
                "",
            ),
        ]
        .concat(),
    );
    let mut compiler = Compiler::new(CompileOptions::default());
    assert_eq!(check(&mut compiler, &index, "first"), 4);
    // The world is what it is meant to be: one conflict, one missing Service, a certificate
    // and a TLS backend with its CA from a ConfigMap.
    let first = compile(&index, compiler.options());
    assert_eq!(first.diagnostics.len(), 2, "{:?}", first.diagnostics);
    assert!(!first.table.tls().is_empty());
    let secure = first.table.route("s.example.com", "/").unwrap().backend;
    assert_eq!(
        first.table.backend(secure).unwrap().key.protocol,
        Protocol::Https
    );
    assert_eq!(check(&mut compiler, &index, "unchanged"), 0);

    apply(
        &mut index,
        &ingress("a", "weir", "a.example.com", "/v2", web, tls),
    );
    assert_eq!(check(&mut compiler, &index, "edit a"), 1);

    // The Service `c` names appears, then gets endpoints.
    apply(&mut index, &service("other", ""));
    assert_eq!(check(&mut compiler, &index, "add service"), 1);
    apply(&mut index, &slice("other", "10.0.0.5"));
    assert_eq!(check(&mut compiler, &index, "add slice"), 1);

    // `a` and `b` use `web`.
    apply(&mut index, &slice("web", "10.0.0.2"));
    assert_eq!(check(&mut compiler, &index, "web endpoints"), 2);
    apply(
        &mut index,
        &service("web", ", appProtocol: kubernetes.io/h2c"),
    );
    assert_eq!(check(&mut compiler, &index, "web protocol"), 2);

    apply(&mut index, &tls_secret("cert", "a.example.com"));
    assert_eq!(check(&mut compiler, &index, "new certificate"), 1);
    apply(&mut index, &ca_config_map("secure.shop.svc"));
    assert_eq!(check(&mut compiler, &index, "new upstream CA"), 1);

    // `b` now wins the conflict it lost; nothing is compiled again.
    assert!(index.delete(Kind::Ingress, &ObjectKey::new("shop", "a")));
    assert_eq!(check(&mut compiler, &index, "delete a"), 0);

    // An IngressClass hands class `other` to weir: only `e` is new.
    apply(
        &mut index,
        "apiVersion: networking.k8s.io/v1\nkind: IngressClass\nmetadata: {name: other}\nspec: {controller: weir.dev/ingress-controller}\n",
    );
    assert_eq!(check(&mut compiler, &index, "class"), 1);

    // Any policy change may retarget any backend: everything is compiled again.
    apply(&mut index, &TLS_POLICY.replace("https", "h2"));
    assert_eq!(check(&mut compiler, &index, "policy"), 4);

    assert!(index.delete(Kind::Service, &ObjectKey::new("shop", "other")));
    assert_eq!(check(&mut compiler, &index, "delete service"), 1);
    assert!(index.delete(Kind::Secret, &ObjectKey::new("shop", "cert")));
    assert_eq!(check(&mut compiler, &index, "delete unused secret"), 0);
}

/// A small world edited step by step in ways that make claims win, lose and move: after every
/// edit the long-lived compiler agrees with a compile from scratch.
#[test]
fn every_edit_settles_like_a_compile_from_scratch() {
    let hosts = ["a.example.com", "b.example.com", "*.example.com", ""];
    let paths = ["/", "/x"];
    let backends = [
        "{name: web, port: {number: 80}}",
        "{name: api, port: {number: 80}}",
        "{name: missing, port: {number: 80}}",
    ];
    let tls = [
        "",
        "tls: [{hosts: [a.example.com], secretName: cert}]",
        "tls: [{hosts: [a.example.com, \"\"], secretName: other}]",
    ];
    let mut index = Index::default();
    apply(
        &mut index,
        &[
            service("web", ""),
            slice("web", "10.0.0.1"),
            service("api", ""),
            tls_secret("cert", "a.example.com"),
            tls_secret("other", "a.example.com"),
        ]
        .concat(),
    );
    let mut compiler = Compiler::new(CompileOptions::default());
    check(&mut compiler, &index, "start");
    // A fixed pseudo-random walk (xorshift), so a failure reproduces.
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = |n: usize| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % n as u64) as usize
    };
    let (mut routes_lost, mut defaults_lost, mut certificates_lost) = (0, 0, 0);
    for step in 0..300 {
        let name = ["p", "q", "r", "s", "t"][next(5)];
        let what = next(10);
        let label = format!("step {step}: {name} ({what})");
        if what == 0 {
            index.delete(Kind::Ingress, &ObjectKey::new("shop", name));
        } else if what == 1 {
            apply(&mut index, &slice(["web", "api"][next(2)], "10.0.0.7"));
        } else if what == 2 {
            let default = backends[next(3)];
            apply(
                &mut index,
                &format!(
                    "\n---\napiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: shop}}\nspec:\n  ingressClassName: weir\n  defaultBackend: {{service: {default}}}\n"
                ),
            );
        } else {
            let yaml = ingress(
                name,
                "weir",
                hosts[next(4)],
                paths[next(2)],
                backends[next(3)],
                tls[next(3)],
            );
            apply(&mut index, &yaml);
        }
        check(&mut compiler, &index, &label);
        let scratch = compile(&index, compiler.options());
        let lost = |what: &str| {
            scratch
                .diagnostics
                .iter()
                .filter(|d| format!("{d:?}").contains(what))
                .count()
        };
        routes_lost += lost("path");
        defaults_lost += lost("the default backend");
        certificates_lost += lost("the certificate for");
    }
    // The walk did make claims lose, of every kind.
    assert!(routes_lost > 20, "{routes_lost}");
    assert!(defaults_lost > 5, "{defaults_lost}");
    assert!(certificates_lost > 20, "{certificates_lost}");
}
