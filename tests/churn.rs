//! 100k requests while the endpoint set changes underneath: no request fails, and afterwards
//! the only upstream connections left are to the endpoints that remain (nothing leaks).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::BodyExt;
use weir_testkit::client::{self, Proto};
use weir_testkit::h2peer::{Behaviour, H2Peer};
use weir_testkit::manifests::{docs, ingress, ingress_class};
use weir_testkit::{TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");
const REQUESTS: usize = 100_000;
const CLIENTS: usize = 8;

fn manifest(endpoints: &[SocketAddr]) -> String {
    let port = endpoints[0].port();
    let addrs: String = endpoints
        .iter()
        .map(|a| format!("- addresses: [\"{}\"]\n", a.ip()))
        .collect();
    let slice = format!(
        "apiVersion: v1\nkind: Service\nmetadata: {{name: app, namespace: default}}\nspec:\n  ports: [{{name: http, port: 80, appProtocol: kubernetes.io/h2c}}]\n---\napiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\nmetadata: {{name: app-1, namespace: default, labels: {{kubernetes.io/service-name: app}}}}\naddressType: IPv4\nports: [{{name: http, port: {port}}}]\nendpoints:\n{addrs}"
    );
    docs(&[
        ingress_class(),
        slice,
        ingress("default", "app", "app.example.com", "/", "Prefix", "app"),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_thousand_requests_over_churning_endpoints() {
    let first = H2Peer::start(Behaviour::default()).await;
    let port = first.addr.port();
    let mut peers = vec![first];
    for i in 2..=3u8 {
        let addr = SocketAddr::from(([127, 0, 0, i], port));
        peers.push(H2Peer::start_on(addr, Behaviour::default()).await.unwrap());
    }
    let addrs: Vec<SocketAddr> = peers.iter().map(|p| p.addr).collect();
    let dir = TempDir::new("churn");
    dir.write("app.yaml", &manifest(&addrs[..2]));
    let mut weir = Weir::start(WEIR, dir.path(), &[]).await;

    let done = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        let (http, done) = (weir.http, done.clone());
        clients.push(tokio::spawn(async move {
            let stream = tokio::net::TcpStream::connect(http).await.unwrap();
            let (mut tx, conn) = hyper::client::conn::http2::handshake(
                hyper_util::rt::TokioExecutor::new(),
                hyper_util::rt::TokioIo::new(stream),
            )
            .await
            .unwrap();
            tokio::spawn(conn);
            while done.fetch_add(1, Ordering::Relaxed) < REQUESTS {
                let req = client::request(
                    Proto::H2,
                    "GET",
                    "app.example.com",
                    "/",
                    client::body(Bytes::new()),
                );
                let resp = tx.send_request(req).await.expect("request through weir");
                assert_eq!(resp.status(), 200);
                resp.into_body().collect().await.expect("response body");
            }
        }));
    }
    // Churn the endpoint set while the load runs.
    let sets: [&[usize]; 4] = [&[1, 2], &[2, 0], &[0, 1, 2], &[0, 1]];
    let mut changes = 0;
    while done.load(Ordering::Relaxed) < REQUESTS {
        let set: Vec<SocketAddr> = sets[changes % sets.len()]
            .iter()
            .map(|&i| addrs[i])
            .collect();
        dir.write("app.yaml", &manifest(&set));
        changes += 1;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    for c in clients {
        c.await.unwrap();
    }
    eprintln!(
        "{REQUESTS} requests in {:?} with {changes} endpoint changes",
        started.elapsed()
    );
    assert!(changes >= 5, "the endpoint set changed during the load");

    // Settle on one endpoint: connections to the others close, and only a few remain.
    let generation = weir.generation().await;
    dir.write("app.yaml", &manifest(&addrs[..1]));
    weir.wait_generation(generation, Duration::from_secs(5))
        .await;
    weir.assert_settled(Duration::from_secs(5)).await;
    let limit = Instant::now() + Duration::from_secs(5);
    loop {
        let open: Vec<usize> = peers.iter().map(|p| p.stats().open_connections).collect();
        if open[1] == 0 && open[2] == 0 {
            assert!(
                open[0] <= CLIENTS,
                "connections to the remaining endpoint: {open:?}"
            );
            break;
        }
        assert!(
            Instant::now() < limit,
            "connections to removed endpoints still open: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let completed: usize = peers.iter().map(|p| p.stats().completed).sum();
    assert_eq!(
        completed, REQUESTS,
        "every request reached a backend exactly once"
    );
    let pools = weir.pools().await;
    let endpoints = pools[0]["endpoints"].as_array().unwrap();
    assert_eq!(endpoints.len(), 1);
    let opened = weir
        .metric("weir_upstream_connections_opened_total{service=\"default/app:80\"}")
        .await;
    let total_backend_connections: usize = peers.iter().map(|p| p.stats().connections).sum();
    assert_eq!(
        opened as usize, total_backend_connections,
        "weir's count matches what the backends accepted"
    );
    eprintln!(
        "connections opened: {opened}; reuse ratio {:.5}",
        opened / REQUESTS as f64
    );
    weir.assert_no_panic();
}
