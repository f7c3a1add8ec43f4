//! A small echo backend for trying weir out: HTTP/1.1 and HTTP/2 (h2c) on one port.
//! Usage: weir-echo [ADDR] (default 127.0.0.1:9090)

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9090".into());
    let addr = match addr.parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("error: {addr:?} is not an address: {e}");
            std::process::exit(2);
        }
    };
    match weir_testkit::Backend::start("echo", addr).await {
        Ok(backend) => {
            eprintln!("weir-echo listening on {}", backend.addr);
            std::future::pending::<()>().await;
        }
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            std::process::exit(1);
        }
    }
}
