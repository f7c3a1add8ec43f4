//! A real control plane (etcd + kube-apiserver, built by `scripts/controlplane/install.sh`)
//! and backends in network namespaces, for controller tests. Everything is torn down on drop,
//! also when a test panics.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The checkout's root. Cargo tells the running test where its package is; the path compiled
/// into this library is only a fallback, because a build cache shared between checkouts can
/// hold a copy of this library compiled in another one.
fn repo_root() -> PathBuf {
    let compiled = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let running = std::env::var_os("CARGO_MANIFEST_DIR").map(PathBuf::from);
    running
        .into_iter()
        .flat_map(|dir| [dir.clone(), dir.join("..")])
        .chain([compiled.clone()])
        .find(|dir| dir.join("testkit/support/backend.py").is_file())
        .unwrap_or(compiled)
}

fn scripts() -> PathBuf {
    repo_root().join("scripts/controlplane")
}

fn run(cmd: &mut Command, what: &str) -> String {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("{what}: cannot run: {e}"));
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A running etcd + kube-apiserver.
pub struct ControlPlane {
    pub dir: PathBuf,
    pub env: HashMap<String, String>,
    /// A kube-apiserver this process restarted (reaped on drop, after stop.sh killed it).
    restarted: Option<Child>,
}

impl ControlPlane {
    /// Starts one. Fails loudly (naming the install script) when the binaries are missing.
    pub fn start(tag: &str) -> ControlPlane {
        let dir = std::env::temp_dir().join(format!("weir-cp-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create control plane dir");
        let out = Command::new("bash")
            .arg(scripts().join("start.sh"))
            .arg(&dir)
            .stdin(Stdio::null())
            .output()
            .expect("run scripts/controlplane/start.sh");
        assert!(
            out.status.success(),
            "the test control plane did not start (run scripts/controlplane/install.sh first):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let env = std::fs::read_to_string(dir.join("env"))
            .expect("start.sh writes DIR/env")
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        ControlPlane {
            dir,
            env,
            restarted: None,
        }
    }

    pub fn admin_kubeconfig(&self) -> PathBuf {
        self.dir.join("admin.kubeconfig")
    }

    /// A client with the admin (system:masters) certificate.
    pub async fn admin_client(&self) -> kube::Client {
        let kubeconfig =
            kube::config::Kubeconfig::read_from(self.admin_kubeconfig()).expect("admin kubeconfig");
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .expect("admin client configuration");
        kube::Client::try_from(config).expect("admin client")
    }

    pub fn url(&self) -> &str {
        &self.env["APISERVER_URL"]
    }

    /// A kubeconfig for ServiceAccount `namespace/name`, with a token from the TokenRequest API.
    pub fn service_account_kubeconfig(&self, namespace: &str, name: &str) -> PathBuf {
        let token = run(
            Command::new("bash")
                .arg(scripts().join("token.sh"))
                .arg(&self.dir)
                .arg(namespace)
                .arg(name),
            "token.sh",
        );
        let path = self.dir.join(format!("{namespace}-{name}.kubeconfig"));
        let config = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: test\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {name}\n  user:\n    token: {}\ncontexts:\n- name: test\n  context: {{cluster: test, user: {name}}}\ncurrent-context: test\n",
            self.url(),
            self.env["CA_FILE"],
            token.trim()
        );
        std::fs::write(&path, config).expect("write kubeconfig");
        path
    }

    /// Kills kube-apiserver and starts it again with the same arguments (etcd keeps the data).
    // The new process is kept in `restarted` and reaped in `Drop`, which clippy cannot see.
    #[allow(clippy::zombie_processes)]
    /// Returns once it is ready again.
    pub fn restart_apiserver(&mut self, down_for: Duration) {
        let pid = self.env["APISERVER_PID"].clone();
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline"))
            .expect("read kube-apiserver's command line");
        let args: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        // SIGKILL: the API server crashes (a graceful stop waits for watches to drain).
        run(
            Command::new("kill").args(["-KILL", &pid]),
            "kill kube-apiserver",
        );
        let gone = Instant::now();
        while Path::new(&format!("/proc/{pid}/status")).exists()
            && std::fs::read_to_string(format!("/proc/{pid}/status"))
                .is_ok_and(|s| !s.contains("State:\tZ"))
        {
            assert!(
                gone.elapsed() < Duration::from_secs(20),
                "kube-apiserver did not stop"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        std::thread::sleep(down_for);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("kube-apiserver.restart.log"))
            .expect("log file");
        let child = Command::new(&args[0])
            .args(&args[1..])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .expect("restart kube-apiserver");
        self.env
            .insert("APISERVER_PID".into(), child.id().to_string());
        let pid_file = self.dir.join("env");
        let env: String = self.env.iter().map(|(k, v)| format!("{k}={v}\n")).collect();
        std::fs::write(pid_file, env).expect("update env");
        let start = Instant::now();
        loop {
            let ok = Command::new("curl")
                .args([
                    "-sf",
                    "--cacert",
                    &self.env["CA_FILE"],
                    "--cert",
                    &self.env["ADMIN_CERT"],
                    "--key",
                    &self.env["ADMIN_KEY"],
                ])
                .arg(format!("{}/readyz", self.url()))
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "kube-apiserver did not come back"
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = Command::new("bash")
            .arg(scripts().join("stop.sh"))
            .arg(&self.dir)
            .arg("--purge")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        if let Some(mut child) = self.restarted.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// An HTTP/1.1 backend inside its own network namespace, at an address in 198.18.0.0/15.
pub struct NetnsBackend {
    pub name: String,
    pub addr: SocketAddr,
    netns: String,
    child: Child,
}

impl NetnsBackend {
    /// `index` picks the /30 (0, 1, 2, ...); names must be unique on the machine.
    pub fn start(netns: &str, index: u32, name: &str, port: u16) -> NetnsBackend {
        let script = scripts().join("netns.sh");
        run(
            Command::new("bash").arg(&script).args(["down", netns]),
            "netns.sh down",
        );
        run(
            Command::new("bash")
                .arg(&script)
                .args(["up", netns, &index.to_string()]),
            "netns.sh up (needs root)",
        );
        let ips = run(
            Command::new("bash")
                .arg(&script)
                .args(["ip", &index.to_string()]),
            "netns.sh ip",
        );
        let ip: IpAddr = ips
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("netns.sh ip prints HOST_IP NS_IP");
        let backend = repo_root().join("testkit/support/backend.py");
        let child = Command::new("ip")
            .args(["netns", "exec", netns, "python3"])
            .arg(&backend)
            .args([name, &ip.to_string(), &port.to_string()])
            .stdin(Stdio::null())
            .spawn()
            .expect("start the backend in its network namespace");
        let addr = SocketAddr::new(ip, port);
        let start = Instant::now();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "backend {name} at {addr} did not come up"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        NetnsBackend {
            name: name.to_string(),
            addr,
            netns: netns.to_string(),
            child,
        }
    }
}

impl Drop for NetnsBackend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = Command::new("bash")
            .arg(scripts().join("netns.sh"))
            .args(["down", &self.netns])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}
