//! Runs the real `weir` binary as a child process on free loopback ports.

use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use std::sync::{Arc, Mutex};

use tokio::io::AsyncBufReadExt;
use tokio::process::{Child, Command};

use crate::client;

/// A running weir process; killed when dropped.
pub struct Weir {
    pub child: Child,
    pub http: SocketAddr,
    pub https: SocketAddr,
    pub admin: SocketAddr,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// Ports handed out by this process: the tests of one binary run at once, and a port released
/// by one start could otherwise be handed to another before the first weir binds it. Then the
/// second weir's `/readyz` would answer for a first one that failed to bind and is exiting.
static HANDED_OUT: std::sync::Mutex<std::collections::BTreeSet<u16>> =
    std::sync::Mutex::new(std::collections::BTreeSet::new());

fn free_port() -> SocketAddr {
    loop {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind an ephemeral loopback port");
        let addr = l.local_addr().expect("local address of a bound socket");
        let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
        if handed_out.insert(addr.port()) {
            return addr;
        }
    }
}

impl Weir {
    /// Starts `bin` (pass `env!("CARGO_BIN_EXE_weir")`) serving `manifests`, with `extra` flags,
    /// and waits until `/readyz` answers 200. Free ports are picked by binding port 0 and
    /// releasing it, which another test may race for: a start whose process exits is retried on
    /// new ports.
    pub async fn start(bin: &str, manifests: &Path, extra: &[&str]) -> Weir {
        let source = ["--manifests".to_string(), manifests.display().to_string()];
        Self::start_with(bin, &source, extra).await
    }

    /// Starts weir against the Kubernetes API described by `kubeconfig`.
    pub async fn start_cluster(bin: &str, kubeconfig: &Path, extra: &[&str]) -> Weir {
        let source = ["--kubeconfig".to_string(), kubeconfig.display().to_string()];
        Self::start_with(bin, &source, extra).await
    }

    async fn start_with(bin: &str, source: &[String], extra: &[&str]) -> Weir {
        let mut last = String::new();
        for _ in 0..3 {
            match Self::try_start(bin, source, extra).await {
                Ok(weir) => return weir,
                Err(reason) => last = reason,
            }
        }
        panic!("weir did not start: {last}");
    }

    async fn try_start(bin: &str, source: &[String], extra: &[&str]) -> Result<Weir, String> {
        let (http, https, admin) = (free_port(), free_port(), free_port());
        let mut child = Command::new(bin)
            .arg("run")
            .args(source)
            .args(["--http-listen", &http.to_string()])
            .args(["--https-listen", &https.to_string()])
            .args(["--admin-listen", &admin.to_string()])
            .args(extra)
            .env(
                "WEIR_LOG",
                std::env::var("WEIR_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start weir binary {bin}: {e}"));
        // Stdout is the access log: keep its lines for the test.
        let stdout = Arc::new(Mutex::new(Vec::new()));
        if let Some(out) = child.stdout.take() {
            let lines = stdout.clone();
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(out).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        // Stderr is the log: pass it through, and keep it for `assert_no_panic`.
        let stderr = Arc::new(Mutex::new(Vec::new()));
        if let Some(err) = child.stderr.take() {
            let lines = stderr.clone();
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(err).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    eprintln!("{line}");
                    lines.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let mut weir = Weir {
            child,
            http,
            https,
            admin,
            stdout,
            stderr,
        };
        weir.wait_ready(Duration::from_secs(20))
            .await
            .map(|()| weir)
    }

    async fn wait_ready(&mut self, limit: Duration) -> Result<(), String> {
        let start = Instant::now();
        loop {
            if let Ok(resp) = client::get(self.admin, "admin", "/readyz").await {
                if resp.status == 200 {
                    return Ok(());
                }
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                let log = self
                    .stderr
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .join("\n");
                return Err(format!("weir exited with {status}:\n{log}"));
            }
            if start.elapsed() > limit {
                return Err(format!("weir did not become ready within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Lines weir has written to stdout so far (the access log).
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Fails the test if weir logged a panic or its process exited.
    pub fn assert_no_panic(&mut self) {
        let lines = self
            .stderr
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        let panics: Vec<&String> = lines.iter().filter(|l| l.contains("panicked")).collect();
        assert!(panics.is_empty(), "weir panicked: {panics:?}");
        assert!(
            matches!(self.child.try_wait(), Ok(None)),
            "weir exited: {:?}",
            self.child.try_wait()
        );
    }

    /// `/debug/pools` as JSON.
    pub async fn pools(&self) -> serde_json::Value {
        let resp = client::get(self.admin, "admin", "/debug/pools")
            .await
            .expect("weir serves /debug/pools");
        serde_json::from_slice(&resp.body).expect("/debug/pools is JSON")
    }

    /// Waits until no upstream stream is active and no request waits for a connection:
    /// nothing leaked once the test's traffic is over.
    pub async fn assert_settled(&self, limit: Duration) {
        let start = Instant::now();
        loop {
            let pools = self.pools().await;
            let busy: Vec<String> = pools
                .as_array()
                .into_iter()
                .flatten()
                .flat_map(|pool| {
                    let pending = pool["pending"].as_u64().unwrap_or(0);
                    let streams: u64 = pool["endpoints"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .flat_map(|e| e["h2_connections"].as_array().into_iter().flatten())
                        .map(|c| c["active_streams"].as_u64().unwrap_or(0))
                        .sum();
                    (pending > 0 || streams > 0).then(|| {
                        format!(
                            "{}: {streams} active streams, {pending} pending",
                            pool["service"]
                        )
                    })
                })
                .collect();
            if busy.is_empty() {
                return;
            }
            assert!(start.elapsed() < limit, "leaked after {limit:?}: {busy:?}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The admin listener's `/metrics` text.
    pub async fn metrics(&self) -> String {
        let resp = client::get(self.admin, "admin", "/metrics")
            .await
            .expect("weir serves /metrics");
        resp.text()
    }

    /// The value of one sample (`name{labels}` exactly as exposed), or 0 if absent.
    pub async fn metric(&self, series: &str) -> f64 {
        sample(&self.metrics().await, series)
    }

    /// The current `weir_config_generation`.
    pub async fn generation(&self) -> u64 {
        self.metric("weir_config_generation").await as u64
    }

    /// Waits until the generation exceeds `after`.
    pub async fn wait_generation(&self, after: u64, limit: Duration) -> u64 {
        let start = Instant::now();
        loop {
            let g = self.generation().await;
            if g > after {
                return g;
            }
            assert!(
                start.elapsed() < limit,
                "no new table after generation {after} within {limit:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Sends SIGTERM.
    pub fn terminate(&self) {
        let pid = self.child.id().expect("weir is running") as i32;
        // SAFETY-free: kill(2) through the `kill` command keeps this crate free of libc.
        let status = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {pid} failed");
    }
}

/// Finds `series` in Prometheus text and returns its value (0 when absent).
pub fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, value) = l.rsplit_once(' ')?;
            (name == series).then(|| value.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// A temporary directory for manifests, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        // Tests in one process run in parallel and often share a tag; the clock alone does not
        // keep their directories apart (two of them once got the same one on a VM whose clock
        // is coarse, and one test's files vanished under the other), so a counter does.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let dir =
            std::env::temp_dir().join(format!("weir-{tag}-{}-{n}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `contents` to `name` atomically (write + rename), as editors and ConfigMaps do.
    pub fn write(&self, name: &str, contents: &str) {
        let tmp = self.0.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, contents).expect("write manifest");
        std::fs::rename(&tmp, self.0.join(name)).expect("rename manifest into place");
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
