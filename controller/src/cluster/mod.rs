//! The Kubernetes source: watches feed the same index and the same pure `compile()` as the
//! manifest source (compiled on a blocking thread, off the workers that serve traffic); bursts of
//! events are coalesced; the elected leader writes status.

mod leader;
mod metrics;
mod status;
mod watch;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kube::api::{Api, DynamicObject};
use kube::core::ApiResource;
use kube::runtime::watcher;
use kube::Client;
use tokio::sync::{watch as channel, Notify};
use tokio::time::Instant;

pub use leader::LeaderOptions;
pub use metrics::ClusterMetrics;
pub use status::PublishTarget;

use crate::compile::TLS_SECRET_TYPE;
use crate::compile::{CompileOptions, Compiler};
use crate::crd::BackendPolicy;
use crate::diagnostic::Diagnostic;
use crate::index::Index;
use crate::object::{Kind, Object, ObjectKey};
use crate::publish::Publisher;

/// A burst of events ends after this long without one (a single update waits only this)...
const DEBOUNCE: Duration = Duration::from_millis(10);
/// ...but a steady stream of events never delays a compile longer than this.
const MAX_DELAY: Duration = Duration::from_millis(250);

#[derive(Debug, Clone)]
pub struct ClusterOptions {
    /// Namespaces to watch; empty: all.
    pub namespaces: Vec<String>,
    pub compile: CompileOptions,
    pub publish: Option<PublishTarget>,
    /// `None`: no leader election; this replica always writes status.
    pub leader: Option<LeaderOptions>,
}

#[derive(Default)]
struct State {
    index: Index,
    /// When the oldest change not yet compiled was seen.
    pending_since: Option<Instant>,
    /// Objects the watch could not read, by kind and key.
    unreadable: Vec<(Kind, ObjectKey, Diagnostic)>,
    synced: usize,
}

/// The index and what the compile loop needs to know about it.
pub(super) struct Shared {
    state: Mutex<State>,
    changed: Notify,
    metrics: ClusterMetrics,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn touched(&self, state: &mut State) {
        state.pending_since.get_or_insert_with(Instant::now);
        self.changed.notify_one();
    }

    fn apply(&self, kind: Kind, key: ObjectKey, object: Result<Object, Box<Diagnostic>>) {
        let mut state = self.lock();
        state
            .unreadable
            .retain(|(k, key2, _)| !(*k == kind && *key2 == key));
        match object {
            Ok(object) => state.index.apply(object, None),
            Err(diagnostic) => {
                diagnostic.log();
                state.index.delete(kind, &key);
                state.unreadable.push((kind, key, *diagnostic));
            }
        }
        self.touched(&mut state);
    }

    fn delete(&self, kind: Kind, key: &ObjectKey) {
        let mut state = self.lock();
        state
            .unreadable
            .retain(|(k, key2, _)| !(*k == kind && key2 == key));
        state.index.delete(kind, key);
        self.touched(&mut state);
    }

    /// After a relist: drops objects of `kind` (in `namespace`, if given) that were not seen.
    fn retain(&self, kind: Kind, namespace: Option<&str>, seen: &BTreeSet<ObjectKey>) {
        let mut state = self.lock();
        let gone: Vec<ObjectKey> = state
            .index
            .keys(kind)
            .into_iter()
            .filter(|k| namespace.is_none_or(|ns| k.namespace == ns) && !seen.contains(k))
            .collect();
        for key in &gone {
            state.index.delete(kind, key);
        }
        if !gone.is_empty() {
            self.touched(&mut state);
        }
    }

    fn synced(&self) {
        let mut state = self.lock();
        state.synced += 1;
        self.touched(&mut state);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to the Kubernetes API: {0}")]
    Client(#[from] kube::Error),
    #[error("the compile thread failed: {0}")]
    Compile(#[from] tokio::task::JoinError),
}

/// Watches the cluster and publishes tables until the process ends.
pub async fn run(
    client: Client,
    options: ClusterOptions,
    mut publisher: Publisher,
    metrics: ClusterMetrics,
) -> Result<(), ClusterError> {
    let shared = Arc::new(Shared {
        state: Mutex::new(State::default()),
        changed: Notify::new(),
        metrics: metrics.clone(),
    });
    let watches = spawn_watches(&client, &options.namespaces, &shared);

    let (leader_tx, leader_rx) = channel::channel(options.leader.is_none());
    if let Some(leader) = options.leader.clone() {
        tokio::spawn(leader::run(
            client.clone(),
            leader,
            leader_tx,
            metrics.leader.clone(),
        ));
    } else {
        metrics.leader.set(1);
    }
    let (status_tx, status_rx) = channel::channel(None);
    tokio::spawn(status::run(
        client.clone(),
        options.publish.clone(),
        status_rx,
        leader_rx,
        metrics.clone(),
    ));

    // It moves to the compile thread and back with the publisher, keeping each Ingress's
    // compiled form.
    let mut compiler = Compiler::new(options.compile.clone());
    loop {
        let notified = shared.changed.notified();
        notified.await;
        // Coalesce a burst, bounded.
        let first = Instant::now();
        loop {
            let quiet = tokio::time::timeout(DEBOUNCE, shared.changed.notified())
                .await
                .is_err();
            if quiet || first.elapsed() >= MAX_DELAY {
                break;
            }
        }
        // Do not serve half a cluster: wait until every watch has listed.
        if shared.lock().synced < watches {
            continue;
        }
        // Copying the index, compiling, comparing with the current table and dropping the last
        // copy each take a while with a large cluster: all of it runs on a blocking thread, off
        // the runtime workers that serve traffic.
        let job_shared = shared.clone();
        let job_metrics = metrics.clone();
        let status;
        (compiler, publisher, status) = tokio::task::spawn_blocking(move || {
            let status =
                compile_and_publish(&job_shared, &mut compiler, &mut publisher, &job_metrics);
            (compiler, publisher, status)
        })
        .await?;
        if let Some(status) = status {
            let previous = status_tx.send_replace(Some(Arc::new(status)));
            // The previous input holds a copy of the whole index: free it off the runtime too.
            tokio::task::spawn_blocking(move || drop(previous));
        }
    }
}

/// One compile on the blocking thread: copies the index, compiles, publishes; returns what the
/// status writer needs, or nothing if the compile panicked (the last table keeps serving).
fn compile_and_publish(
    shared: &Shared,
    compiler: &mut Compiler,
    publisher: &mut Publisher,
    metrics: &ClusterMetrics,
) -> Option<status::Input> {
    let (index, pending_since, unreadable) = {
        let mut state = shared.lock();
        let unreadable: Vec<Diagnostic> =
            state.unreadable.iter().map(|(_, _, d)| d.clone()).collect();
        (state.index.clone(), state.pending_since.take(), unreadable)
    };
    let started = std::time::Instant::now();
    let compiled =
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| compiler.compile(&index))) {
            Ok(compiled) => compiled,
            Err(_) => {
                tracing::error!("compile panicked; the last table keeps serving");
                // Start the next one from scratch.
                *compiler = Compiler::new(compiler.options().clone());
                return None;
            }
        };
    metrics
        .compile_duration
        .observe(started.elapsed().as_secs_f64());
    publisher.metrics().count_errors("parse", unreadable.len());
    for d in &unreadable {
        d.log();
    }
    let mut diagnostics = compiled.diagnostics.clone();
    diagnostics.extend(unreadable);
    let status = status::Input {
        index: Arc::new(index),
        policy_status: compiled.policy_status.clone(),
        owned_ingresses: compiled.owned_ingresses.clone(),
        diagnostics,
    };
    let published = publisher.publish(compiled, started);
    if let (true, Some(since)) = (published, pending_since) {
        metrics.propagation.observe(since.elapsed().as_secs_f64());
    }
    Some(status)
}

/// Starts one watch per kind (per namespace for namespaced kinds); returns how many.
fn spawn_watches(client: &Client, namespaces: &[String], shared: &Arc<Shared>) -> usize {
    let mut count = 0;
    let scopes: Vec<Option<String>> = if namespaces.is_empty() {
        vec![None]
    } else {
        namespaces.iter().cloned().map(Some).collect()
    };
    macro_rules! watch_kind {
        ($ty:ty, $kind:expr, $into:path, $config:expr) => {
            for ns in &scopes {
                let api: Api<$ty> = match ns {
                    Some(ns) => Api::namespaced(client.clone(), ns),
                    None => Api::all(client.clone()),
                };
                let scope = watch::Scope {
                    kind: $kind,
                    namespace: ns.clone(),
                };
                tokio::spawn(watch::run(api, $config, scope, shared.clone(), $into));
                count += 1;
            }
        };
    }
    use k8s_openapi::api::core::v1::{Secret, Service};
    use k8s_openapi::api::discovery::v1::EndpointSlice;
    use k8s_openapi::api::networking::v1::Ingress;
    watch_kind!(
        Ingress,
        Kind::Ingress,
        watch::ingress,
        watcher::Config::default()
    );
    watch_kind!(
        Service,
        Kind::Service,
        watch::service,
        watcher::Config::default()
    );
    watch_kind!(
        EndpointSlice,
        Kind::EndpointSlice,
        watch::endpoint_slice,
        watcher::Config::default()
    );
    let tls_only = watcher::Config::default().fields(&format!("type={TLS_SECRET_TYPE}"));
    watch_kind!(Secret, Kind::Secret, watch::secret, tls_only.clone());
    // CA certificates for TLS backends come from `kubernetes.io/tls` Secrets (key `ca.crt`, as
    // cert-manager writes them) or from ConfigMaps.
    watch_kind!(
        k8s_openapi::api::core::v1::ConfigMap,
        Kind::ConfigMap,
        watch::config_map,
        watcher::Config::default()
    );
    // BackendPolicies, untyped so one unreadable object cannot break the watch.
    let resource = ApiResource::erase::<BackendPolicy>(&());
    for ns in &scopes {
        let api: Api<DynamicObject> = match ns {
            Some(ns) => Api::namespaced_with(client.clone(), ns, &resource),
            None => Api::all_with(client.clone(), &resource),
        };
        let scope = watch::Scope {
            kind: Kind::BackendPolicy,
            namespace: ns.clone(),
        };
        tokio::spawn(watch::run(
            api,
            watcher::Config::default(),
            scope,
            shared.clone(),
            watch::backend_policy,
        ));
        count += 1;
    }
    // IngressClasses are cluster-scoped: one watch.
    let api: Api<k8s_openapi::api::networking::v1::IngressClass> = Api::all(client.clone());
    let scope = watch::Scope {
        kind: Kind::IngressClass,
        namespace: None,
    };
    tokio::spawn(watch::run(
        api,
        watcher::Config::default(),
        scope,
        shared.clone(),
        watch::ingress_class,
    ));
    count + 1
}
