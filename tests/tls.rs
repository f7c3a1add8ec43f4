//! HTTPS: certificates chosen by SNI from Ingress `spec.tls` (exact before wildcard), the default
//! certificate for unknown names, ALPN h2 and http/1.1.

use weir_testkit::certs::{tls_secret, Ca};
use weir_testkit::client::{self, Proto};
use weir_testkit::manifests::{docs, ingress_class, service};
use weir_testkit::{Backend, TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

fn tls_ingress(name: &str, hosts: &[&str], secret: &str, service: &str) -> String {
    let host_list = hosts
        .iter()
        .map(|h| format!("\"{h}\""))
        .collect::<Vec<_>>()
        .join(", ");
    let rules = hosts
        .iter()
        .map(|h| {
            format!(
                "  - host: \"{h}\"\n    http: {{paths: [{{path: /, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}]}}\n"
            )
        })
        .collect::<String>();
    format!(
        "apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {{name: {name}, namespace: default}}\nspec:\n  tls: [{{hosts: [{host_list}], secretName: {secret}}}]\n  rules:\n{rules}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_by_sni_and_default() {
    let ca = Ca::new("weir test CA");
    let a = ca.leaf(&["a.example.com"]);
    let wild = ca.leaf(&["*.b.example.com"]);
    let exact_b = ca.leaf(&["exact.b.example.com"]);
    let fallback = ca.leaf(&["*.example.org"]);
    let backend_a = Backend::local("a").await;
    let backend_b = Backend::local("b").await;

    let dir = TempDir::new("tls");
    dir.write(
        "all.yaml",
        &docs(&[
            ingress_class(),
            service("default", "svc-a", None, &[backend_a.addr]),
            service(
                "default",
                "svc-b",
                Some("kubernetes.io/h2c"),
                &[backend_b.addr],
            ),
            tls_secret("default", "a-tls", &a),
            tls_secret("default", "wild-tls", &wild),
            tls_secret("default", "exact-tls", &exact_b),
            tls_secret("weir", "fallback", &fallback),
            tls_ingress("a", &["a.example.com"], "a-tls", "svc-a"),
            tls_ingress("b", &["*.b.example.com"], "wild-tls", "svc-b"),
            tls_ingress("b-exact", &["exact.b.example.com"], "exact-tls", "svc-b"),
        ]),
    );
    let weir = Weir::start(
        WEIR,
        dir.path(),
        &["--default-certificate", "weir/fallback"],
    )
    .await;
    let roots = [ca.der.clone()];

    let cases: [(&str, &[u8], &str); 4] = [
        ("a.example.com", &a.der, "a"),
        ("x.b.example.com", &wild.der, "b"),
        ("exact.b.example.com", &exact_b.der, "b"),
        ("unknown.example.org", &fallback.der, ""),
    ];
    for (sni, want_cert, want_backend) in cases {
        for (alpn, proto) in [(&b"h2"[..], Proto::H2), (&b"http/1.1"[..], Proto::H1)] {
            let (stream, negotiated, leaf) = client::tls_connect(weir.https, sni, &roots, &[alpn])
                .await
                .unwrap_or_else(|e| panic!("TLS to {sni}: {e}"));
            assert_eq!(leaf, want_cert, "{sni}: wrong certificate");
            assert_eq!(negotiated.as_deref(), Some(alpn), "{sni}: ALPN");
            let req = client::request(proto, "GET", sni, "/", client::empty());
            let reply = client::send_on(stream, proto, req).await.unwrap();
            if want_backend.is_empty() {
                assert_eq!(reply.status, 404, "{sni}: no route for an unknown host");
            } else {
                assert_eq!(reply.status, 200, "{sni} over {proto:?}: {}", reply.text());
                assert_eq!(reply.header("x-backend"), Some(want_backend));
                assert_eq!(reply.header("x-seen-proto"), Some("https"));
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_sni_without_default_certificate_fails_handshake() {
    let ca = Ca::new("weir test CA");
    let a = ca.leaf(&["a.example.com"]);
    let backend = Backend::local("a").await;
    let dir = TempDir::new("tls-nodefault");
    dir.write(
        "all.yaml",
        &docs(&[
            ingress_class(),
            service("default", "svc-a", None, &[backend.addr]),
            tls_secret("default", "a-tls", &a),
            tls_ingress("a", &["a.example.com"], "a-tls", "svc-a"),
        ]),
    );
    let weir = Weir::start(WEIR, dir.path(), &[]).await;
    let roots = [ca.der.clone()];
    assert!(
        client::tls_connect(weir.https, "a.example.com", &roots, &[b"h2"])
            .await
            .is_ok()
    );
    let err = client::tls_connect(weir.https, "unknown.example.com", &roots, &[b"h2"]).await;
    assert!(
        err.is_err(),
        "a handshake for an unknown name must fail without a default certificate"
    );
}
