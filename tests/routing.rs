//! Host and path matching through the real proxy: one weir process, one real backend per
//! Service, and a table of (host, path) → which backend answered (or which status).

use std::collections::BTreeMap;

use weir_testkit::client::{self, Proto};
use weir_testkit::manifests::{docs, ingress, ingress_class, service};
use weir_testkit::{Backend, TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

/// Ingresses that need more than the one-rule helper: classes, timestamps, annotations,
/// default backend, named ports, cross-namespace references.
const SPECIAL: &str = r#"
apiVersion: networking.k8s.io/v1
kind: IngressClass
metadata: {name: other}
spec: {controller: example.com/other-controller}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: catch-all, namespace: default}
spec:
  defaultBackend: {service: {name: default, port: {number: 80}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: zzz-old, namespace: default, creationTimestamp: "2020-01-01T00:00:00Z"}
spec:
  rules:
  - host: ts.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: old, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: aaa-new, namespace: default, creationTimestamp: "2024-01-01T00:00:00Z"}
spec:
  rules:
  - host: ts.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: new, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: other-class, namespace: default}
spec:
  ingressClassName: other
  rules:
  - host: other.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: other, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: legacy
  namespace: default
  annotations: {kubernetes.io/ingress.class: weir}
spec:
  rules:
  - host: legacy.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: legacy, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata:
  name: legacy-nginx
  namespace: default
  annotations: {kubernetes.io/ingress.class: nginx}
spec:
  rules:
  - host: nginx.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: other, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: named-port, namespace: default}
spec:
  rules:
  - host: named.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: named, port: {name: http}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: cross-namespace, namespace: default}
spec:
  tls: [{hosts: [xns.example.com], secretName: other-ns/cert}]
  rules:
  - host: xns.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: other, port: {number: 80}}}}]}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: missing-service, namespace: default}
spec:
  rules:
  - host: missing.example.com
    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: does-not-exist, port: {number: 80}}}}]}
---
apiVersion: v1
kind: Service
metadata: {name: mixed, namespace: default}
spec:
  ports: [{name: http, port: 80}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: mixed-1
  namespace: default
  labels: {kubernetes.io/service-name: mixed}
addressType: IPv4
ports: [{name: http, port: MIXED_PORT}]
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {ready: true}
- addresses: ["127.0.0.2"]
  conditions: {ready: false}
- addresses: ["127.0.0.3"]
  conditions: {ready: true, terminating: true}
"#;

/// (ingress name, host, path, pathType, service)
const RULES: &[(&str, &str, &str, &str, &str)] = &[
    ("foo-root", "foo.example.com", "/", "Prefix", "foo-root"),
    ("foo-api", "foo.example.com", "/api", "Prefix", "foo-api"),
    (
        "foo-api-exact",
        "foo.example.com",
        "/api",
        "Exact",
        "foo-api-exact",
    ),
    ("docs", "foo.example.com", "/docs/", "Prefix", "docs"),
    (
        "exact-slash",
        "foo.example.com",
        "/exact/",
        "Exact",
        "exact-slash",
    ),
    ("wild", "*.wild.example.com", "/", "Prefix", "wild"),
    ("any-shared", "", "/shared", "Prefix", "any-shared"),
    ("bar-only", "bar.example.com", "/only", "Exact", "bar-only"),
    (
        "impl",
        "bar.example.com",
        "/impl",
        "ImplementationSpecific",
        "impl",
    ),
    ("aaa-first", "conflict.example.com", "/", "Prefix", "first"),
    (
        "zzz-second",
        "conflict.example.com",
        "/",
        "Prefix",
        "second",
    ),
    ("empty", "empty.example.com", "/", "Prefix", "empty"),
    ("mixed", "ready.example.com", "/", "Prefix", "mixed"),
];

/// Services backed by a real backend of the same name.
const SERVICES: &[&str] = &[
    "foo-root",
    "foo-api",
    "foo-api-exact",
    "docs",
    "exact-slash",
    "wild",
    "any-shared",
    "bar-only",
    "impl",
    "first",
    "second",
    "default",
    "old",
    "new",
    "other",
    "legacy",
    "named",
];

/// (host, path, expected): a backend name, or `status:<code>`.
const CASES: &[(&str, &str, &str)] = &[
    ("foo.example.com", "/", "foo-root"),
    ("foo.example.com", "/anything/else", "foo-root"),
    ("foo.example.com", "/api", "foo-api-exact"),
    ("foo.example.com", "/api/", "foo-api"),
    ("foo.example.com", "/api/v1/items", "foo-api"),
    ("foo.example.com", "/apix", "foo-root"),
    ("foo.example.com", "/api?x=1", "foo-api-exact"),
    ("foo.example.com", "/docs", "docs"),
    ("foo.example.com", "/docs/", "docs"),
    ("foo.example.com", "/docs/guide", "docs"),
    ("foo.example.com", "/docsx", "foo-root"),
    ("foo.example.com", "/exact/", "exact-slash"),
    ("foo.example.com", "/exact", "foo-root"),
    ("foo.example.com", "/API", "foo-root"),
    ("foo.example.com:8080", "/api", "foo-api-exact"),
    ("FOO.Example.COM", "/api/x", "foo-api"),
    ("a.wild.example.com", "/", "wild"),
    ("b.wild.example.com", "/deep/path", "wild"),
    ("a.wild.example.com", "/shared", "wild"),
    ("wild.example.com", "/", "default"),
    ("a.b.wild.example.com", "/", "default"),
    ("bar.example.com", "/only", "bar-only"),
    ("bar.example.com", "/only/", "default"),
    ("bar.example.com", "/shared/x", "any-shared"),
    ("bar.example.com", "/impl/sub", "impl"),
    ("bar.example.com", "/implx", "default"),
    ("unknown.example.com", "/shared", "any-shared"),
    ("unknown.example.com", "/sharedx", "default"),
    ("unknown.example.com", "/", "default"),
    ("conflict.example.com", "/", "first"),
    ("ts.example.com", "/", "old"),
    ("other.example.com", "/", "default"),
    ("legacy.example.com", "/", "legacy"),
    ("nginx.example.com", "/", "default"),
    ("named.example.com", "/", "named"),
    ("xns.example.com", "/", "default"),
    ("empty.example.com", "/", "status:503"),
    ("missing.example.com", "/", "status:503"),
];

struct Setup {
    _backends: BTreeMap<String, Backend>,
    mixed: Backend,
    weir: Weir,
    _dir: TempDir,
}

async fn setup() -> Setup {
    let mut backends = BTreeMap::new();
    for name in SERVICES {
        backends.insert(name.to_string(), Backend::local(name).await);
    }
    let mixed = Backend::local("mixed").await;
    let mut parts = vec![ingress_class()];
    for (name, backend) in &backends {
        parts.push(service("default", name, None, &[backend.addr]));
    }
    parts.push(service("default", "empty", None, &[]));
    for (name, host, path, path_type, svc) in RULES.iter().filter(|r| r.0 != "mixed") {
        parts.push(ingress("default", name, host, path, path_type, svc));
    }
    parts.push(ingress(
        "default",
        "mixed",
        "ready.example.com",
        "/",
        "Prefix",
        "mixed",
    ));
    parts.push(SPECIAL.replace("MIXED_PORT", &mixed.addr.port().to_string()));
    let dir = TempDir::new("routing");
    dir.write("all.yaml", &docs(&parts));
    let weir = Weir::start(WEIR, dir.path(), &[]).await;
    Setup {
        _backends: backends,
        mixed,
        weir,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_and_path_matching_table() {
    let s = setup().await;
    let mut failures = Vec::new();
    for proto in [Proto::H1, Proto::H2] {
        for (host, path, want) in CASES {
            let req = client::request(proto, "GET", host, path, client::empty());
            let reply = client::send(s.weir.http, proto, req)
                .await
                .expect("request through weir");
            let got = match reply.header("x-backend") {
                Some(b) if reply.status == 200 => b.to_string(),
                _ => format!("status:{}", reply.status.as_u16()),
            };
            if got != *want {
                failures.push(format!(
                    "{proto:?} {host}{path}: want {want}, got {got} ({})",
                    reply.text().trim()
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        CASES.len() * 2,
        failures.join("\n")
    );
    assert!(CASES.len() >= 30);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unavailable_backends_say_why() {
    let s = setup().await;
    let empty = client::get(s.weir.http, "empty.example.com", "/")
        .await
        .unwrap();
    assert_eq!(empty.status, 503);
    assert_eq!(
        empty.text(),
        "weir: no ready endpoints for service default/empty:80\n"
    );
    let missing = client::get(s.weir.http, "missing.example.com", "/")
        .await
        .unwrap();
    assert_eq!(missing.status, 503);
    assert!(
        missing
            .text()
            .contains("service default/does-not-exist not found"),
        "{}",
        missing.text()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_ready_endpoints_get_requests() {
    // 127.0.0.2 is not ready and 127.0.0.3 is terminating: were either chosen, the request would
    // fail to connect (nothing listens there) and answer 502.
    let s = setup().await;
    for _ in 0..6 {
        let r = client::get(s.weir.http, "ready.example.com", "/")
            .await
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.header("x-backend"), Some("mixed"));
    }
    assert_eq!(s.mixed.hits(), 6);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn round_robin_over_endpoints() {
    let a = Backend::start("a", "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();
    let b = Backend::start("b", "127.0.0.2:0".parse().unwrap())
        .await
        .unwrap();
    // Two endpoints need one port: listen on the same port on two loopback addresses.
    let b2 = Backend::start("b", format!("127.0.0.2:{}", a.addr.port()).parse().unwrap())
        .await
        .unwrap();
    drop(b);
    let dir = TempDir::new("rr");
    let svc = service("default", "rr", None, &[a.addr, b2.addr]);
    dir.write(
        "all.yaml",
        &docs(&[
            ingress_class(),
            svc,
            ingress("default", "rr", "", "/", "Prefix", "rr"),
        ]),
    );
    let weir = Weir::start(WEIR, dir.path(), &[]).await;
    for _ in 0..10 {
        client::get(weir.http, "rr.example.com", "/").await.unwrap();
    }
    assert_eq!((a.hits(), b2.hits()), (5, 5));
}
