//! The `weir` command line. Everything here is wiring: flags → sources → dataplane.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand, ValueEnum};
use prometheus::Registry;
use weir_controller::cluster;
use weir_controller::manifest::ManifestSource;
use weir_controller::{table_channel, CompileOptions, ConfigMetrics, ObjectKey, Publisher};
use weir_dataplane::{BackendPolicy, Dataplane, Listeners, Options};

#[derive(Parser, Debug)]
#[command(
    name = "weir",
    version,
    about = "A Kubernetes ingress controller that never reloads"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve traffic for Ingress objects: from the Kubernetes API, or from manifest files.
    Run(Box<RunArgs>),
    /// Print weir's CustomResourceDefinitions as YAML.
    Crds,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

fn duration(s: &str) -> Result<Duration, String> {
    weir_controller::duration::parse(s).map_err(|e| e.to_string())
}

fn object_key(s: &str) -> Result<ObjectKey, String> {
    ObjectKey::parse(s).ok_or_else(|| format!("{s:?} is not NAMESPACE/NAME"))
}

#[derive(Args, Debug)]
struct RunArgs {
    /// A manifest file or directory (multi-document YAML); repeatable. Files are watched.
    /// Without it, weir reads the Kubernetes API.
    #[arg(long = "manifests", value_name = "PATH")]
    manifests: Vec<PathBuf>,
    /// Kubeconfig for the Kubernetes API (default: $KUBECONFIG, then in-cluster config).
    #[arg(long, value_name = "PATH", conflicts_with = "manifests")]
    kubeconfig: Option<PathBuf>,
    /// Namespace to watch; repeatable. Default: all namespaces.
    #[arg(long = "watch-namespace", value_name = "NAMESPACE")]
    watch_namespaces: Vec<String>,
    /// Publish this Service's load-balancer addresses in Ingress status (NAMESPACE/NAME).
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = object_key, conflicts_with = "publish_address")]
    publish_service: Option<ObjectKey>,
    /// Publish this IP or host name in Ingress status; repeatable.
    #[arg(long = "publish-address", value_name = "ADDRESS")]
    publish_address: Vec<String>,
    /// Elect a leader (only the leader writes status) with a Lease. Off: this replica writes.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set, value_name = "BOOL")]
    leader_election: bool,
    /// Namespace of the leader-election Lease (default: $POD_NAMESPACE, else `default`).
    #[arg(long, value_name = "NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// Name of the leader-election Lease.
    #[arg(long, value_name = "NAME", default_value = "weir-leader")]
    leader_election_name: String,
    /// How long a leader's lease lasts without renewal.
    #[arg(long, value_name = "DURATION", default_value = "15s", value_parser = duration)]
    leader_election_lease_duration: Duration,
    /// Cleartext listener: HTTP/1.1 and HTTP/2 with prior knowledge.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8080")]
    http_listen: SocketAddr,
    /// TLS listener: HTTP/1.1 and HTTP/2 by ALPN, certificate chosen by SNI.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:8443")]
    https_listen: SocketAddr,
    /// Admin listener: /metrics, /healthz, /readyz, /debug/routes.
    #[arg(long, value_name = "ADDR", default_value = "0.0.0.0:9901")]
    admin_listen: SocketAddr,
    /// TLS Secret (NAMESPACE/NAME) served when the client's SNI matches no Ingress host.
    #[arg(long, value_name = "NAMESPACE/NAME", value_parser = object_key)]
    default_certificate: Option<ObjectKey>,
    /// How long in-flight requests may run after SIGTERM.
    #[arg(long, value_name = "DURATION", default_value = "30s", value_parser = duration)]
    drain_timeout: Duration,
    /// The IngressClass name weir serves (in addition to IngressClasses naming its controller).
    #[arg(long, value_name = "NAME", default_value = weir_controller::compile::DEFAULT_INGRESS_CLASS)]
    ingress_class: String,
    /// The `spec.controller` value of IngressClasses that weir serves.
    #[arg(long, value_name = "NAME", default_value = weir_controller::compile::DEFAULT_CONTROLLER_NAME)]
    controller_name: String,
    /// Timeout for connecting to a backend endpoint, unless a BackendPolicy sets `timeouts.connect`.
    #[arg(long, value_name = "DURATION", default_value = "5s", value_parser = duration)]
    upstream_connect_timeout: Duration,
    /// Threads serving traffic, each with its own event loop (default: one per CPU).
    #[arg(long, value_name = "N", env = "WEIR_WORKERS", value_parser = clap::value_parser!(u16).range(1..))]
    workers: Option<u16>,
    /// Write one JSON line per request to stdout.
    #[arg(long)]
    access_log: bool,
    /// Log filter, e.g. `info` or `weir_dataplane=debug` (RUST_LOG syntax).
    #[arg(long, value_name = "FILTER", default_value = "info", env = "WEIR_LOG")]
    log_level: String,
    #[arg(long, value_enum, default_value = "text")]
    log_format: LogFormat,
}

fn init_logging(args: &RunArgs) -> anyhow::Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&args.log_level)
        .with_context(|| format!("--log-level {:?}", args.log_level))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

async fn shutdown_signal() {
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = terminate => tracing::info!("SIGTERM received"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT received"),
    }
}

enum Source {
    Manifests(Box<ManifestSource>),
    Cluster(
        Box<(
            kube::Client,
            cluster::ClusterOptions,
            cluster::ClusterMetrics,
            Publisher,
        )>,
    ),
}

/// This replica's name in the leader lease: the pod name in a cluster, else host and pid.
fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
        format!("{}-{}", host.trim(), std::process::id())
    })
}

async fn cluster_source(
    args: &RunArgs,
    compile: CompileOptions,
    registry: &Registry,
) -> anyhow::Result<(
    kube::Client,
    cluster::ClusterOptions,
    cluster::ClusterMetrics,
)> {
    let config = match &args.kubeconfig {
        Some(path) => {
            let kubeconfig = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("--kubeconfig {}", path.display()))?;
            kube::Config::from_custom_kubeconfig(kubeconfig, &kube::config::KubeConfigOptions::default())
                .await
                .with_context(|| format!("--kubeconfig {}", path.display()))?
        }
        None => kube::Config::infer()
            .await
            .context("no Kubernetes configuration: pass --manifests, --kubeconfig, set KUBECONFIG, or run in a cluster")?,
    };
    let client = kube::Client::try_from(config).context("cannot build a Kubernetes client")?;
    let publish = match (&args.publish_service, args.publish_address.is_empty()) {
        (Some(service), _) => Some(cluster::PublishTarget::Service(service.clone())),
        (None, false) => Some(cluster::PublishTarget::Addresses(
            args.publish_address.clone(),
        )),
        (None, true) => None,
    };
    let leader = args.leader_election.then(|| cluster::LeaderOptions {
        namespace: args
            .leader_election_namespace
            .clone()
            .or_else(|| std::env::var("POD_NAMESPACE").ok())
            .unwrap_or_else(|| "default".to_string()),
        name: args.leader_election_name.clone(),
        identity: identity(),
        lease_duration: args.leader_election_lease_duration,
        renew_every: (args.leader_election_lease_duration / 5).max(Duration::from_millis(500)),
    });
    let options = cluster::ClusterOptions {
        namespaces: args.watch_namespaces.clone(),
        compile,
        publish,
        leader,
    };
    Ok((
        client,
        options,
        cluster::ClusterMetrics::register(registry)?,
    ))
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    let registry = Registry::new();
    let options = Options {
        access_log: args.access_log,
    };
    let dataplane = Dataplane::new(registry.clone(), options)?;
    let mut default_policy = BackendPolicy::default();
    default_policy.timeouts.connect = args.upstream_connect_timeout;
    let (tx, rx) = table_channel();
    let publisher = Publisher::new(tx, ConfigMetrics::register(&registry)?);
    let options = CompileOptions {
        controller_name: args.controller_name.clone(),
        ingress_class: args.ingress_class.clone(),
        default_certificate: args.default_certificate.clone(),
        default_policy,
        // For TLS backends without their own CA: read once, so compiling does no I/O.
        system_roots: weir_dataplane::system_roots(),
    };
    let source = if args.manifests.is_empty() {
        let (client, options, metrics) = cluster_source(&args, options, &registry).await?;
        Source::Cluster(Box::new((client, options, metrics, publisher)))
    } else {
        let source = ManifestSource::new(args.manifests.clone(), options, publisher)?;
        Source::Manifests(Box::new(source))
    };

    let listeners = Listeners {
        http: Some(weir_dataplane::bind("--http-listen", args.http_listen).await?),
        https: Some(weir_dataplane::bind("--https-listen", args.https_listen).await?),
    };
    let admin = weir_dataplane::bind("--admin-listen", args.admin_listen).await?;
    tracing::info!(
        http = %args.http_listen,
        https = %args.https_listen,
        admin = %args.admin_listen,
        "weir listening"
    );

    tokio::spawn(dataplane.clone().follow(rx));
    tokio::spawn(weir_dataplane::serve_admin(dataplane.clone(), admin));
    match source {
        Source::Manifests(source) => {
            tokio::spawn(async move {
                if let Err(error) = source.run().await {
                    tracing::error!(%error, "manifest source stopped; the last table keeps serving");
                }
            });
        }
        Source::Cluster(cluster) => {
            let (client, options, metrics, publisher) = *cluster;
            tokio::spawn(async move {
                if let Err(error) = cluster::run(client, options, publisher, metrics).await {
                    tracing::error!(%error, "Kubernetes source stopped; the last table keeps serving");
                }
            });
        }
    }
    let workers = match args.workers {
        Some(n) => usize::from(n),
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    tracing::info!(workers, "serving");
    weir_dataplane::serve(
        dataplane,
        listeners,
        workers,
        shutdown_signal(),
        args.drain_timeout,
    )
    .await;
    Ok(())
}

/// mimalloc: the request path allocates many small, short-lived objects across tasks; glibc's
/// malloc spent about 10% of weir's CPU on them in the benchmark profile (`bench/results/`).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Transparent huge pages off for this process, before the runtime allocates its memory.
/// mimalloc asks for them on its arenas; with them, 10,000 Ingresses took 15 MiB more resident
/// memory (127 vs 112 MiB) and 1.3 s instead of 0.7 s to first ready (zeroing 2 MiB pages), and
/// a fault may wait for the kernel to compact memory on a busy machine.
#[cfg(target_os = "linux")]
fn no_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes integer arguments only and touches no memory of ours.
    let rc = unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
    if rc != 0 {
        // Only a kernel older than 3.15 says no; the process then runs as before.
        eprintln!(
            "weir: could not turn transparent huge pages off: {}",
            std::io::Error::last_os_error()
        );
    }
}

#[cfg(not(target_os = "linux"))]
fn no_transparent_huge_pages() {}

fn main() -> ExitCode {
    no_transparent_huge_pages();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            // One line: what is wrong with which flag (clap's first paragraph, folded).
            let rendered = e.to_string();
            let reason: Vec<&str> = rendered
                .lines()
                .take_while(|l| !l.trim().is_empty())
                .map(str::trim)
                .collect();
            eprintln!("{}", reason.join(" "));
            return ExitCode::from(2);
        }
    };
    let args = match cli.command {
        Command::Run(args) => *args,
        Command::Crds => {
            return match weir_controller::crd::crds_yaml() {
                Ok(yaml) => {
                    print!("{yaml}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: cannot render the CRDs: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    };
    if let Err(e) = init_logging(&args) {
        eprintln!("error: {e:#}");
        return ExitCode::from(2);
    }
    // The main thread's runtime is one of the serving workers and also runs the sources, the
    // admin listener and the pool housekeeping; `serve` starts the other workers.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
