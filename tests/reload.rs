//! Configuration changes are applied in place: no restart, no dropped request; a broken file or
//! object is reported and the last good configuration keeps serving.

use std::time::{Duration, Instant};

use weir_testkit::client;
use weir_testkit::manifests::{docs, ingress, ingress_class, service};
use weir_testkit::{Backend, TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");
const LIMIT: Duration = Duration::from_secs(5);

fn config(backend_service: &str, a: &Backend, b: &Backend) -> String {
    docs(&[
        ingress_class(),
        service("default", "svc-a", None, &[a.addr]),
        service("default", "svc-b", Some("kubernetes.io/h2c"), &[b.addr]),
        ingress(
            "default",
            "app",
            "app.example.com",
            "/",
            "Prefix",
            backend_service,
        ),
    ])
}

async fn backend_of(weir: &Weir, host: &str) -> String {
    let r = client::get(weir.http, host, "/").await.unwrap();
    r.header("x-backend")
        .map(str::to_string)
        .unwrap_or_else(|| format!("status:{}", r.status.as_u16()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_flight_request_survives_a_table_change() {
    let a = Backend::local("a").await;
    let b = Backend::local("b").await;
    let dir = TempDir::new("reload");
    dir.write("app.yaml", &config("svc-a", &a, &b));
    let weir = Weir::start(WEIR, dir.path(), &[]).await;
    assert_eq!(backend_of(&weir, "app.example.com").await, "a");
    let generation = weir.generation().await;

    // A slow request in flight on the old table, over HTTP/1.1 and HTTP/2.
    let http = weir.http;
    let slow_h1 =
        tokio::spawn(async move { client::get(http, "app.example.com", "/slow/1500").await });
    let slow_h2 =
        tokio::spawn(async move { client::get_h2(http, "app.example.com", "/slow/1500").await });
    tokio::time::sleep(Duration::from_millis(200)).await;

    let written = Instant::now();
    dir.write("app.yaml", &config("svc-b", &a, &b));
    weir.wait_generation(generation, LIMIT).await;
    eprintln!("change applied {:?} after the write", written.elapsed());
    assert_eq!(
        backend_of(&weir, "app.example.com").await,
        "b",
        "new requests use the new table"
    );

    for slow in [slow_h1, slow_h2] {
        let r = slow
            .await
            .unwrap()
            .expect("the in-flight request completes");
        assert_eq!(r.status, 200);
        assert_eq!(
            r.header("x-backend"),
            Some("a"),
            "in-flight requests finish on their table"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broken_file_keeps_the_last_good_table() {
    let a = Backend::local("a").await;
    let b = Backend::local("b").await;
    let dir = TempDir::new("broken");
    dir.write("app.yaml", &config("svc-a", &a, &b));
    let weir = Weir::start(WEIR, dir.path(), &[]).await;
    assert_eq!(backend_of(&weir, "app.example.com").await, "a");
    assert_eq!(
        weir.metric("weir_config_errors_total{stage=\"parse\"}")
            .await,
        0.0
    );

    // A YAML syntax error: the file's last good objects keep serving; the error is counted.
    dir.write("app.yaml", "apiVersion: v1\nkind: [unclosed\n");
    let start = Instant::now();
    while weir
        .metric("weir_config_errors_total{stage=\"parse\"}")
        .await
        == 0.0
    {
        assert!(start.elapsed() < LIMIT, "the broken file was not reported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(backend_of(&weir, "app.example.com").await, "a");

    // Another file with one valid and one invalid Ingress: the valid one applies.
    let generation = weir.generation().await;
    let bad = ingress("default", "bad", "bad.example.com", "/", "Prefix", "svc-b")
        .replace("number: 80", "number: eighty");
    dir.write(
        "more.yaml",
        &docs(&[
            ingress(
                "default",
                "good",
                "good.example.com",
                "/",
                "Prefix",
                "svc-b",
            ),
            bad,
        ]),
    );
    weir.wait_generation(generation, LIMIT).await;
    assert_eq!(backend_of(&weir, "good.example.com").await, "b");
    assert_eq!(backend_of(&weir, "bad.example.com").await, "status:404");
    assert_eq!(
        backend_of(&weir, "app.example.com").await,
        "a",
        "the broken file still serves"
    );

    // An object that compiles with an error (a path that does not start with "/").
    let errors = weir
        .metric("weir_config_errors_total{stage=\"compile\"}")
        .await;
    let generation = weir.generation().await;
    dir.write(
        "more.yaml",
        &docs(&[
            ingress(
                "default",
                "good",
                "good.example.com",
                "/",
                "Prefix",
                "svc-b",
            ),
            ingress(
                "default",
                "relative",
                "rel.example.com",
                "docs",
                "Prefix",
                "svc-b",
            ),
            ingress(
                "default",
                "later",
                "later.example.com",
                "/",
                "Prefix",
                "svc-a",
            ),
        ]),
    );
    weir.wait_generation(generation, LIMIT).await;
    assert!(
        weir.metric("weir_config_errors_total{stage=\"compile\"}")
            .await
            > errors
    );
    assert_eq!(backend_of(&weir, "later.example.com").await, "a");

    // Fixing the file applies it.
    let generation = weir.generation().await;
    dir.write("app.yaml", &config("svc-b", &a, &b));
    weir.wait_generation(generation, LIMIT).await;
    assert_eq!(backend_of(&weir, "app.example.com").await, "b");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoint_changes_apply_in_place() {
    let a = Backend::local("a").await;
    let b = Backend::local("b").await;
    let dir = TempDir::new("endpoints");
    let write = |endpoints: &[std::net::SocketAddr]| {
        dir.write(
            "app.yaml",
            &docs(&[
                ingress_class(),
                service("default", "svc", None, endpoints),
                ingress("default", "app", "app.example.com", "/", "Prefix", "svc"),
            ]),
        )
    };
    write(&[a.addr]);
    let weir = Weir::start(WEIR, dir.path(), &[]).await;
    assert_eq!(backend_of(&weir, "app.example.com").await, "a");
    let generation = weir.generation().await;
    write(&[]);
    weir.wait_generation(generation, LIMIT).await;
    assert_eq!(backend_of(&weir, "app.example.com").await, "status:503");
    let generation = weir.generation().await;
    write(&[b.addr]);
    weir.wait_generation(generation, LIMIT).await;
    assert_eq!(backend_of(&weir, "app.example.com").await, "b");
}
