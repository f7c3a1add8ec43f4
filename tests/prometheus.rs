//! A real Prometheus server (Debian's, installed by scripts/install-tools.sh) scrapes weir's
//! admin listener; the test drives traffic (successes, 5xx, retries) and checks what Prometheus
//! answers through its HTTP API against the traffic sent.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use weir_testkit::client;
use weir_testkit::manifests::{backend_policy, docs, ingress, ingress_class, service};
use weir_testkit::{Backend, TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

struct Prometheus {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let config = format!(
            "global: {{scrape_interval: 1s, evaluation_interval: 1s}}\nscrape_configs:\n- job_name: weir\n  static_configs: [{{targets: ['{target}']}}]\n"
        );
        std::fs::write(dir.path().join("prometheus.yml"), config).unwrap();
        let addr = free_port();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the prometheus server is missing: run scripts/install-tools.sh");
        Prometheus {
            child,
            addr,
            _dir: dir,
        }
    }

    /// The value of an instant query returning one sample, if it has one yet.
    async fn query(&self, promql: &str) -> Option<f64> {
        let mut encoded = String::new();
        for b in promql.bytes() {
            match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    encoded.push(b as char)
                }
                _ => encoded.push_str(&format!("%{b:02X}")),
            }
        }
        let reply = client::get(
            self.addr,
            "localhost",
            &format!("/api/v1/query?query={encoded}"),
        )
        .await
        .ok()?;
        let json: serde_json::Value = serde_json::from_slice(&reply.body).ok()?;
        let value = json["data"]["result"].get(0)?["value"][1]
            .as_str()?
            .to_string();
        value.parse().ok()
    }

    /// Waits until `promql` gives `want` (Prometheus scrapes every second).
    async fn expect(&self, promql: &str, want: f64) {
        let start = Instant::now();
        loop {
            let got = self.query(promql).await;
            if got == Some(want) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "{promql}: want {want}, Prometheus says {got:?}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_sees_what_weir_served() {
    let backend = Backend::local("app").await;
    let dir = TempDir::new("prom-weir");
    dir.write(
        "all.yaml",
        &docs(&[
            ingress_class(),
            service("default", "app", None, &[backend.addr]),
            ingress("default", "app", "app.example.com", "/", "Prefix", "app"),
            backend_policy(
                "default",
                "app",
                "app",
                "retry:\n  attempts: 2\n  when: [gateway-error]\n  backoff: {base: 1ms, max: 1ms}",
            ),
        ]),
    );
    let weir = Weir::start(WEIR, dir.path(), &[]).await;
    let prometheus = Prometheus::start(weir.admin);

    let (ok, failing) = (40, 6);
    for _ in 0..ok {
        assert_eq!(
            client::get(weir.http, "app.example.com", "/")
                .await
                .unwrap()
                .status,
            200
        );
    }
    for _ in 0..failing {
        assert_eq!(
            client::get(weir.http, "app.example.com", "/status/503")
                .await
                .unwrap()
                .status,
            503
        );
    }
    let route = "route=\"default/app\",service=\"default/app:80\"";
    prometheus
        .expect(
            &format!("sum(weir_requests_total{{{route},code=\"200\"}})"),
            ok as f64,
        )
        .await;
    prometheus
        .expect(
            &format!("sum(weir_requests_total{{{route},code=\"503\"}})"),
            failing as f64,
        )
        .await;
    // Each failing request was tried twice: one retry each.
    prometheus
        .expect(
            "sum(weir_retries_total{reason=\"status-503\"})",
            failing as f64,
        )
        .await;
    prometheus
        .expect(
            "sum(weir_upstream_attempts_total{outcome=\"response\"})",
            (ok + 2 * failing) as f64,
        )
        .await;
    prometheus
        .expect(
            "sum(weir_request_duration_seconds_count)",
            (ok + failing) as f64,
        )
        .await;
    // Loopback requests all finish well under 250 ms: the p99 falls in the lower buckets.
    let p99 = prometheus
        .query("histogram_quantile(0.99, sum by (le) (weir_request_duration_seconds_bucket))")
        .await
        .expect("a p99 from the duration histogram");
    assert!(p99 > 0.0 && p99 <= 0.25, "p99 {p99}");
    prometheus.expect("weir_config_generation", 1.0).await;
}
