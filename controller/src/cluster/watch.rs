//! List+watch of every kind weir reads, into the shared index. A relist (after a watch
//! expired or the API server came back) removes objects that disappeared meanwhile.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kube::api::{Api, DynamicObject};
use kube::runtime::utils::ResetTimerBackoff;
use kube::runtime::watcher::{self, Event};
use kube::runtime::WatchStreamExt;
use kube::Resource;
use serde::de::DeserializeOwned;

use super::Shared;
use crate::compact;
use crate::crd::BackendPolicy;
use crate::diagnostic::Diagnostic;
use crate::object::{Kind, Object, ObjectKey, ObjectRef};

/// Reconnect quickly after an API server blip: 250 ms doubling to at most 5 s between tries,
/// jittered, reset after a minute of health. Traffic never waits for the API server, but
/// changes made while it was away should arrive soon after it is back.
fn backoff() -> ResetTimerBackoff<WatchBackoff> {
    ResetTimerBackoff::new(WatchBackoff::default(), Duration::from_secs(60))
}

pub(super) struct WatchBackoff {
    next: Duration,
}

const BACKOFF_MIN: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

impl Default for WatchBackoff {
    fn default() -> Self {
        Self { next: BACKOFF_MIN }
    }
}

impl Iterator for WatchBackoff {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        use std::hash::{BuildHasher, Hasher};
        let current = self.next;
        self.next = (current * 2).min(BACKOFF_MAX);
        // Jitter: between half and all of the step, so replicas do not reconnect in lockstep.
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let half = current / 2;
        Some(half + Duration::from_nanos(random % (half.as_nanos() as u64 + 1)))
    }
}

impl kube::runtime::utils::Backoff for WatchBackoff {
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }
}

/// One watch: a kind, in one namespace or all.
pub(super) struct Scope {
    pub(super) kind: Kind,
    pub(super) namespace: Option<String>,
}

fn key_of(meta: &kube::api::ObjectMeta) -> ObjectKey {
    ObjectKey::new(
        meta.namespace.clone().unwrap_or_default(),
        meta.name.clone().unwrap_or_default(),
    )
}

/// Runs one watch forever (the watcher backs off and reconnects on errors).
pub(super) async fn run<K>(
    api: Api<K>,
    config: watcher::Config,
    scope: Scope,
    shared: Arc<Shared>,
    into: fn(K) -> Result<Object, Box<Diagnostic>>,
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    let kind = scope.kind;
    let label = kind.to_string();
    let mut stream = watcher::watcher(api, config).backoff(backoff()).boxed();
    let mut relisted: Option<BTreeSet<ObjectKey>> = None;
    let mut synced = false;
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(kind = %label, %error, "watch failed; retrying with backoff");
                shared
                    .metrics
                    .watch_errors
                    .with_label_values(&[&label])
                    .inc();
                continue;
            }
        };
        shared
            .metrics
            .watch_events
            .with_label_values(&[&label])
            .inc();
        match event {
            Event::Init => relisted = Some(BTreeSet::new()),
            Event::InitApply(mut obj) | Event::Apply(mut obj) => {
                compact::metadata(obj.meta_mut());
                let key = key_of(obj.meta());
                if let Some(seen) = relisted.as_mut() {
                    seen.insert(key.clone());
                }
                shared.apply(kind, key, into(obj));
            }
            Event::Delete(obj) => shared.delete(kind, &key_of(obj.meta())),
            Event::InitDone => {
                if let Some(seen) = relisted.take() {
                    shared.retain(kind, scope.namespace.as_deref(), &seen);
                }
                if !synced {
                    synced = true;
                    shared.synced();
                }
            }
        }
    }
}

pub(super) fn ingress(
    o: k8s_openapi::api::networking::v1::Ingress,
) -> Result<Object, Box<Diagnostic>> {
    Ok(Object::Ingress(Arc::new(compact::ingress(o))))
}
pub(super) fn ingress_class(
    o: k8s_openapi::api::networking::v1::IngressClass,
) -> Result<Object, Box<Diagnostic>> {
    Ok(Object::IngressClass(Arc::new(o)))
}
pub(super) fn service(o: k8s_openapi::api::core::v1::Service) -> Result<Object, Box<Diagnostic>> {
    Ok(Object::Service(Arc::new(compact::service(o))))
}
pub(super) fn endpoint_slice(
    o: k8s_openapi::api::discovery::v1::EndpointSlice,
) -> Result<Object, Box<Diagnostic>> {
    Ok(Object::EndpointSlice(Arc::new(compact::endpoint_slice(o))))
}
pub(super) fn config_map(
    o: k8s_openapi::api::core::v1::ConfigMap,
) -> Result<Object, Box<Diagnostic>> {
    Ok(Object::ConfigMap(Arc::new(o)))
}
pub(super) fn secret(o: k8s_openapi::api::core::v1::Secret) -> Result<Object, Box<Diagnostic>> {
    Ok(Object::Secret(Arc::new(o)))
}

/// BackendPolicies are watched untyped: one that does not deserialize (say, written before a
/// schema change) is reported and skipped without breaking the watch.
pub(super) fn backend_policy(o: DynamicObject) -> Result<Object, Box<Diagnostic>> {
    let object = ObjectRef {
        kind: Kind::BackendPolicy,
        key: key_of(&o.metadata),
    };
    let value = serde_json::to_value(&o)
        .map_err(|e| Box::new(Diagnostic::error(Some(object.clone()), None, e.to_string())))?;
    serde_path_to_error::deserialize::<_, BackendPolicy>(value)
        .map(|p| Object::BackendPolicy(Arc::new(p)))
        .map_err(|e| {
            let field = e.path().to_string();
            Box::new(Diagnostic::error(
                Some(object),
                Some(field),
                format!("{}; the policy is skipped", e.into_inner()),
            ))
        })
}
