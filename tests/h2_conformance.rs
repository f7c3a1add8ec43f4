//! weir's HTTP/2 server against httpwg, an HTTP/2 conformance suite (RFC 9113 framing, streams,
//! flow control, HPACK, message rules), run as the client. Requests are routed to nghttpd over
//! h2c, which reads each request to its end before answering, so the suite's malformed frames
//! land on streams that are still open.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use weir_testkit::manifests::{docs, ingress, ingress_class, service};
use weir_testkit::{TempDir, Weir};

const WEIR: &str = env!("CARGO_BIN_EXE_weir");

fn httpwg_bin() -> PathBuf {
    let cache = std::env::var_os("WEIR_CACHE")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir")))
        .expect("HOME or WEIR_CACHE is set");
    let bin = cache.join("bin/httpwg");
    assert!(
        bin.exists(),
        "httpwg is missing at {}: run scripts/install-tools.sh",
        bin.display()
    );
    bin
}

/// nghttpd serving `dir` on a free loopback port; killed when dropped.
struct Nghttpd(Child, SocketAddr);

impl Drop for Nghttpd {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn nghttpd(docroot: &std::path::Path) -> Nghttpd {
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    let child = Command::new("nghttpd")
        .args(["--no-tls", "-a", "127.0.0.1", "-d"])
        .arg(docroot)
        .arg(port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("nghttpd is missing: install Debian's nghttp2-server (scripts/test.sh does)");
    let addr: SocketAddr = ([127, 0, 0, 1], port).into();
    let server = Nghttpd(child, addr);
    for _ in 0..200 {
        if tokio::net::TcpStream::connect(addr).await.is_ok() {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("nghttpd did not listen on {addr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn http2_server_passes_the_httpwg_suite() {
    let bin = httpwg_bin();
    let dir = TempDir::new("h2-conformance");
    let docroot = dir.path().join("htdocs");
    std::fs::create_dir_all(&docroot).expect("docroot");
    std::fs::write(docroot.join("index.html"), "hello, conformance\n").expect("index.html");
    let backend = nghttpd(&docroot).await;
    let manifests = dir.path().join("manifests");
    std::fs::create_dir_all(&manifests).expect("manifests dir");
    std::fs::write(
        manifests.join("all.yaml"),
        docs(&[
            ingress_class(),
            service("default", "files", Some("kubernetes.io/h2c"), &[backend.1]),
            ingress("default", "all", "", "/", "Prefix", "files"),
        ]),
    )
    .expect("manifest");
    let weir = Weir::start(WEIR, &manifests, &[]).await;
    let addr = weir.http.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(bin)
            .args(["-a", &addr])
            .env("NO_COLOR", "1")
            .output()
            .expect("run httpwg")
    })
    .await
    .expect("httpwg task");
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    let plain: String = strip_ansi(&text);
    let failed: Vec<&str> = plain
        .lines()
        .filter(|l| l.contains("Test failed"))
        .collect();
    // A case that panics inside httpwg prints no "Test failed", only its panic's message; the
    // invalid-preface case always makes its reader panic on weir's HTTP/1.1 400, harmlessly.
    let panics: Vec<&str> = plain
        .lines()
        .filter(|l| l.starts_with("Message:") || l.starts_with("Location:"))
        .collect();
    let summary = plain
        .lines()
        .find(|l| l.contains("Passed "))
        .unwrap_or_else(|| panic!("no summary from httpwg:\n{plain}"));
    assert!(
        failed.is_empty() && out.status.success(),
        "httpwg: {summary}\n{}\npanics in httpwg:\n{}",
        failed.join("\n"),
        panics.join("\n")
    );
    drop(backend);
    // "Passed N/M tests": every test ran and passed, and the suite is the size we know.
    let counts = summary
        .split_whitespace()
        .find(|w| w.contains('/'))
        .and_then(|w| w.split_once('/'))
        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u32>().ok()?)))
        .unwrap_or_else(|| panic!("unreadable summary: {summary}"));
    assert_eq!(counts.0, counts.1, "{summary}");
    assert!(
        counts.1 >= 100,
        "the suite ran {} tests: {summary}",
        counts.1
    );
}

fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}
