//! TLS to backends: `protocol: h2` (ALPN h2) and `https`, verified against CAs from a Secret or
//! a ConfigMap, with the default `<svc>.<ns>.svc` name or `tls.hostname`. A certificate that
//! does not verify is a connect failure, reported in metrics, and never sends the request.

use weir_testkit::certs::Ca;
use weir_testkit::client;
use weir_testkit::manifests::{backend_policy, docs, ingress, ingress_class, service};
use weir_testkit::{Backend, TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

fn ca_secret(name: &str, ca_pem: &str) -> String {
    let indented: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: {name}, namespace: default}}\ntype: kubernetes.io/tls\nstringData:\n  ca.crt: |\n{indented}")
}

fn ca_config_map(name: &str, ca_pem: &str) -> String {
    let indented: String = ca_pem.lines().map(|l| format!("    {l}\n")).collect();
    format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {name}, namespace: default}}\ndata:\n  ca.crt: |\n{indented}")
}

struct Setup {
    weir: Weir,
    backend: Backend,
    _dir: TempDir,
}

async fn setup(
    ca: &Ca,
    cert_names: &[&str],
    app_protocol: Option<&str>,
    policy: &str,
    extra: &[String],
) -> Setup {
    let leaf = ca.leaf(cert_names);
    let backend = Backend::start_tls("secure", &leaf.cert_pem, &leaf.key_pem)
        .await
        .unwrap();
    let dir = TempDir::new("upstream-tls");
    let mut parts = vec![
        ingress_class(),
        service("default", "app", app_protocol, &[backend.addr]),
        ingress("default", "app", "app.example.com", "/", "Prefix", "app"),
        backend_policy("default", "app", "app", policy),
    ];
    parts.extend(extra.iter().cloned());
    dir.write("all.yaml", &docs(&parts));
    let weir = Weir::start(WEIR, dir.path(), &[]).await;
    Setup {
        weir,
        backend,
        _dir: dir,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2_over_tls_with_a_ca_secret_and_the_service_name() {
    let ca = Ca::new("backend CA");
    let policy = "protocol: h2\ntls:\n  caCertificateRefs: [{kind: Secret, name: backend-ca}]";
    let s = setup(
        &ca,
        &["app.default.svc"],
        None,
        policy,
        &[ca_secret("backend-ca", &ca.pem())],
    )
    .await;
    let r = client::get(s.weir.http, "app.example.com", "/x")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.header("x-seen-version"),
        Some("HTTP/2.0"),
        "ALPN h2 to the backend"
    );
    let r2 = client::get_h2(s.weir.http, "app.example.com", "/y")
        .await
        .unwrap();
    assert_eq!(r2.status, 200);
    assert_eq!(s.backend.connections(), 1, "one multiplexed TLS connection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_by_app_protocol_with_a_config_map_ca_and_hostname() {
    let ca = Ca::new("backend CA");
    let policy = "tls:\n  hostname: internal.example.net\n  caCertificateRefs: [{kind: ConfigMap, name: backend-ca}]";
    let s = setup(
        &ca,
        &["internal.example.net"],
        Some("https"),
        policy,
        &[ca_config_map("backend-ca", &ca.pem())],
    )
    .await;
    let r = client::get(s.weir.http, "app.example.com", "/")
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.header("x-seen-version"), Some("HTTP/1.1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_that_does_not_verify_is_a_connect_failure() {
    let trusted = Ca::new("the CA weir trusts");
    let other = Ca::new("some other CA");
    let policy =
        "protocol: h2\nretry: {attempts: 1}\ntls:\n  caCertificateRefs: [{name: backend-ca}]";
    // The backend's certificate is signed by a CA weir does not trust.
    let s = setup(
        &other,
        &["app.default.svc"],
        None,
        policy,
        &[ca_secret("backend-ca", &trusted.pem())],
    )
    .await;
    let r = client::get(s.weir.http, "app.example.com", "/")
        .await
        .unwrap();
    assert_eq!(r.status, 502);
    assert_eq!(s.backend.hits(), 0, "no request reached the backend");
    let service = "service=\"default/app:80\"";
    let failed = s
        .weir
        .metric(&format!(
            "weir_upstream_attempts_total{{outcome=\"tls-handshake\",{service}}}"
        ))
        .await;
    assert_eq!(failed, 1.0);
    let closed = s
        .weir
        .metric(&format!(
            "weir_upstream_connections_closed_total{{reason=\"tls-handshake-failed\",{service}}}"
        ))
        .await;
    assert_eq!(closed, 1.0);
    // The wrong name does not verify either.
    let s = setup(
        &trusted,
        &["someone-else.default.svc"],
        None,
        policy,
        &[ca_secret("backend-ca", &trusted.pem())],
    )
    .await;
    assert_eq!(
        client::get(s.weir.http, "app.example.com", "/")
            .await
            .unwrap()
            .status,
        502
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_ca_reference_is_reported_and_answers_503() {
    let ca = Ca::new("backend CA");
    let policy = "protocol: h2\ntls:\n  caCertificateRefs: [{name: not-there}]";
    let s = setup(&ca, &["app.default.svc"], None, policy, &[]).await;
    let r = client::get(s.weir.http, "app.example.com", "/")
        .await
        .unwrap();
    assert_eq!(r.status, 503);
    assert!(
        r.text().contains("Secret default/not-there not found"),
        "{}",
        r.text()
    );
}
