//! Process life cycle: flags, readiness, 404 without a default backend, graceful drain.

use std::process::Command;
use std::time::Duration;

use weir_testkit::client;
use weir_testkit::manifests::{docs, ingress, ingress_class, service};
use weir_testkit::{Backend, TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

fn run_weir(args: &[&str]) -> (i32, String) {
    let out = Command::new(WEIR).args(args).output().expect("run weir");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn invalid_flags_exit_with_one_line() {
    let dir = TempDir::new("flags");
    let path = dir.path().to_str().unwrap();
    let cases: &[(&[&str], &str)] = &[
        (
            &["run", "--manifests", path, "--drain-timeout", "soon"],
            "--drain-timeout",
        ),
        (
            &["run", "--manifests", path, "--http-listen", "localhost"],
            "--http-listen",
        ),
        (
            &[
                "run",
                "--manifests",
                path,
                "--default-certificate",
                "no-namespace",
            ],
            "--default-certificate",
        ),
        (
            &["run", "--manifests", path, "--no-such-flag"],
            "--no-such-flag",
        ),
        (&["run", "--manifests", path, "--workers", "0"], "--workers"),
        (
            &["run", "--manifests", path, "--kubeconfig", path],
            "--kubeconfig",
        ),
    ];
    for (args, flag) in cases {
        let (code, stderr) = run_weir(args);
        assert_eq!(code, 2, "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: want one line, got {stderr:?}"
        );
        assert!(
            stderr.contains(flag),
            "{args:?}: {stderr:?} does not name {flag}"
        );
    }
}

/// Without --manifests weir reads the Kubernetes API; with no configuration for it, it says so.
#[test]
fn no_kubernetes_configuration_is_one_clear_error() {
    let out = Command::new(WEIR)
        .arg("run")
        .env("KUBECONFIG", "/nonexistent/kubeconfig")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .output()
        .expect("run weir");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.contains("no Kubernetes configuration: pass --manifests, --kubeconfig"),
        "{stderr}"
    );
}

#[test]
fn missing_manifest_path_is_an_error() {
    let (code, stderr) = run_weir(&["run", "--manifests", "/nonexistent/weir.yaml"]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains("--manifests /nonexistent/weir.yaml"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_endpoints_and_404() {
    let backend = Backend::local("a").await;
    let dir = TempDir::new("admin");
    dir.write(
        "all.yaml",
        &docs(&[
            ingress_class(),
            service("default", "svc", None, &[backend.addr]),
            ingress("default", "app", "app.example.com", "/app", "Prefix", "svc"),
        ]),
    );
    let weir = Weir::start(WEIR, dir.path(), &[]).await;
    let miss = client::get(weir.http, "app.example.com", "/other")
        .await
        .unwrap();
    assert_eq!(miss.status, 404);
    assert_eq!(miss.text(), "weir: no route matches this host and path\n");
    let hit = client::get(weir.http, "app.example.com", "/app")
        .await
        .unwrap();
    assert_eq!(hit.status, 200);

    assert_eq!(
        client::get(weir.admin, "admin", "/healthz")
            .await
            .unwrap()
            .status,
        200
    );
    assert_eq!(
        client::get(weir.admin, "admin", "/readyz")
            .await
            .unwrap()
            .status,
        200
    );
    let routes = client::get(weir.admin, "admin", "/debug/routes")
        .await
        .unwrap();
    let table: serde_json::Value = serde_json::from_slice(&routes.body).unwrap();
    assert_eq!(
        table["exact_hosts"]["app.example.com"][0]["name"],
        "default/app"
    );
    assert_eq!(
        table["backends"][0]["endpoints"][0],
        backend.addr.to_string()
    );

    let metrics = weir.metrics().await;
    for series in [
        "weir_requests_total{code=\"404\",route=\"\",service=\"\"} 1",
        "weir_requests_total{code=\"200\",route=\"default/app\",service=\"default/svc:80\"} 1",
        "weir_request_duration_seconds_count{route=\"default/app\",service=\"default/svc:80\"} 1",
        "weir_config_generation 1",
        "weir_config_apply_duration_seconds_count 1",
    ] {
        assert!(metrics.contains(series), "missing {series:?} in\n{metrics}");
    }
}

/// SIGTERM: readiness turns off, no new connections, in-flight requests on HTTP/1.1 and HTTP/2
/// complete, and the process exits 0. With four event loops: the drain waits for every loop's
/// accept loops to stop before it counts the connections left to wait for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_in_flight_requests() {
    let backend = Backend::local("a").await;
    let dir = TempDir::new("drain");
    dir.write(
        "all.yaml",
        &docs(&[
            ingress_class(),
            service("default", "svc", None, &[backend.addr]),
            service(
                "default",
                "svc-h2c",
                Some("kubernetes.io/h2c"),
                &[backend.addr],
            ),
            ingress("default", "app", "app.example.com", "/", "Prefix", "svc"),
            ingress(
                "default",
                "app2",
                "h2c.example.com",
                "/",
                "Prefix",
                "svc-h2c",
            ),
        ]),
    );
    let mut weir = Weir::start(
        WEIR,
        dir.path(),
        &["--drain-timeout", "10s", "--workers", "4"],
    )
    .await;
    let pid = weir.child.id().expect("weir runs");
    let threads: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .unwrap()
        .filter_map(|t| std::fs::read_to_string(t.ok()?.path().join("comm")).ok())
        .map(|c| c.trim().to_string())
        .collect();
    for worker in ["weir-worker-1", "weir-worker-2", "weir-worker-3"] {
        assert!(
            threads.iter().any(|t| t == worker),
            "no {worker} in {threads:?}"
        );
    }
    let http = weir.http;
    let mut inflight = Vec::new();
    for host in ["app.example.com", "h2c.example.com"] {
        inflight.push(tokio::spawn(async move {
            client::get(http, host, "/slow/1000").await
        }));
        inflight.push(tokio::spawn(async move {
            client::get_h2(http, host, "/slow/1000").await
        }));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    weir.terminate();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let ready = client::get(weir.admin, "admin", "/readyz").await.unwrap();
    assert_eq!(ready.status, 503, "not ready while draining");
    assert!(
        tokio::net::TcpStream::connect(http).await.is_err(),
        "the proxy listener is closed while draining"
    );
    for request in inflight {
        let r = request
            .await
            .unwrap()
            .expect("in-flight request completes during drain");
        assert_eq!(r.status, 200);
    }
    let status = tokio::time::timeout(Duration::from_secs(10), weir.child.wait())
        .await
        .expect("weir exits after draining")
        .unwrap();
    assert!(status.success(), "exit status {status}");
}
