//! Status, written by the leader only: Ingress `status.loadBalancer.ingress` for weir's
//! Ingresses, and BackendPolicy `status.conditions`. A patch is sent only when something other
//! than a timestamp would change.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::networking::v1::{Ingress, IngressLoadBalancerIngress};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::ApiResource;
use kube::Client;
use serde_json::json;
use tokio::sync::watch;

use super::ClusterMetrics;
use crate::compile::PolicyStatus;
use crate::crd::BackendPolicy;
use crate::diagnostic::Diagnostic;
use crate::index::Index;
use crate::object::Kind;
use crate::object::ObjectKey;

/// Rewrites status even without changes this often, so a failed patch is retried.
const RESYNC: Duration = Duration::from_secs(30);

/// What weir publishes as its address in Ingress status.
#[derive(Debug, Clone)]
pub enum PublishTarget {
    /// IPs or host names, as given.
    Addresses(Vec<String>),
    /// Copy this Service's `status.loadBalancer.ingress`.
    Service(ObjectKey),
}

pub(super) struct Input {
    pub(super) index: Arc<Index>,
    pub(super) policy_status: BTreeMap<ObjectKey, PolicyStatus>,
    pub(super) owned_ingresses: Arc<[ObjectKey]>,
    /// Errors about objects, for Events.
    pub(super) diagnostics: Vec<Diagnostic>,
}

pub(super) async fn run(
    client: Client,
    publish: Option<PublishTarget>,
    mut input: watch::Receiver<Option<Arc<Input>>>,
    mut leader: watch::Receiver<bool>,
    metrics: ClusterMetrics,
) {
    let mut resync = tokio::time::interval(RESYNC);
    let mut reported = std::collections::BTreeSet::new();
    loop {
        tokio::select! {
            changed = input.changed() => if changed.is_err() { return },
            changed = leader.changed() => if changed.is_err() { return },
            _ = resync.tick() => {}
        }
        if !*leader.borrow_and_update() {
            continue;
        }
        let Some(current) = input.borrow_and_update().clone() else {
            continue;
        };
        write(&client, publish.as_ref(), &current, &metrics).await;
        events(&client, &current, &mut reported, &metrics).await;
    }
}

/// Posts a Warning Event for each error about an Ingress or BackendPolicy, once per distinct
/// (object, generation, field, message), so `kubectl describe` shows why weir rejected it.
async fn events(
    client: &Client,
    input: &Input,
    reported: &mut std::collections::BTreeSet<(String, String, Option<i64>, String)>,
    metrics: &ClusterMetrics,
) {
    use k8s_openapi::api::core::v1::ObjectReference;
    use k8s_openapi::api::events::v1::Event;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
    for d in input.diagnostics.iter().filter(|d| d.is_error()) {
        let Some(object) = &d.object else { continue };
        let (api_version, meta) = match object.kind {
            Kind::Ingress => (
                "networking.k8s.io/v1",
                input
                    .index
                    .ingresses
                    .get(&object.key)
                    .map(|e| &e.object.metadata),
            ),
            Kind::BackendPolicy => (
                "weir.dev/v1alpha1",
                input
                    .index
                    .backend_policies
                    .get(&object.key)
                    .map(|e| &e.object.metadata),
            ),
            _ => continue,
        };
        let Some(meta) = meta else { continue };
        let message = match &d.field {
            Some(field) => format!("{field}: {}", d.message),
            None => d.message.clone(),
        };
        let id = (
            object.to_string(),
            meta.uid.clone().unwrap_or_default(),
            meta.generation,
            message.clone(),
        );
        if reported.contains(&id) {
            continue;
        }
        let event = Event {
            metadata: kube::api::ObjectMeta {
                generate_name: Some(format!("{}.", object.key.name)),
                namespace: Some(object.key.namespace.clone()),
                ..Default::default()
            },
            event_time: Some(MicroTime(Timestamp::now())),
            action: Some("Compile".into()),
            reason: Some("Rejected".into()),
            type_: Some("Warning".into()),
            note: Some(message.chars().take(1000).collect()),
            reporting_controller: Some("weir.dev/ingress-controller".into()),
            reporting_instance: Some("weir".into()),
            regarding: Some(ObjectReference {
                api_version: Some(api_version.into()),
                kind: Some(object.kind.to_string()),
                name: Some(object.key.name.clone()),
                namespace: Some(object.key.namespace.clone()),
                uid: meta.uid.clone(),
                resource_version: meta.resource_version.clone(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let api: Api<Event> = Api::namespaced(client.clone(), &object.key.namespace);
        match api.create(&Default::default(), &event).await {
            Ok(_) => {
                reported.insert(id);
                metrics
                    .status_updates
                    .with_label_values(&["Event", "ok"])
                    .inc();
            }
            Err(error) => {
                tracing::warn!(object = %object, %error, "cannot post an Event");
                metrics
                    .status_updates
                    .with_label_values(&["Event", "error"])
                    .inc();
            }
        }
    }
}

fn desired_addresses(publish: &PublishTarget, index: &Index) -> Vec<IngressLoadBalancerIngress> {
    match publish {
        PublishTarget::Addresses(addrs) => addrs
            .iter()
            .map(|a| {
                if a.parse::<std::net::IpAddr>().is_ok() {
                    IngressLoadBalancerIngress {
                        ip: Some(a.clone()),
                        ..Default::default()
                    }
                } else {
                    IngressLoadBalancerIngress {
                        hostname: Some(a.clone()),
                        ..Default::default()
                    }
                }
            })
            .collect(),
        PublishTarget::Service(key) => index
            .services
            .get(key)
            .and_then(|s| s.object.status.as_ref())
            .and_then(|s| s.load_balancer.as_ref())
            .and_then(|lb| lb.ingress.as_ref())
            .into_iter()
            .flatten()
            .map(|i| IngressLoadBalancerIngress {
                ip: i.ip.clone(),
                hostname: i.hostname.clone(),
                ..Default::default()
            })
            .collect(),
    }
}

async fn write(
    client: &Client,
    publish: Option<&PublishTarget>,
    input: &Input,
    metrics: &ClusterMetrics,
) {
    let params = PatchParams::default();
    if let Some(publish) = publish {
        let desired = desired_addresses(publish, &input.index);
        for key in input.owned_ingresses.iter() {
            let Some(entry) = input.index.ingresses.get(key) else {
                continue;
            };
            let current = entry
                .object
                .status
                .as_ref()
                .and_then(|s| s.load_balancer.as_ref())
                .and_then(|lb| lb.ingress.clone())
                .unwrap_or_default();
            if current == desired {
                continue;
            }
            let api: Api<Ingress> = Api::namespaced(client.clone(), &key.namespace);
            let patch = json!({"status": {"loadBalancer": {"ingress": desired}}});
            let result = api
                .patch_status(&key.name, &params, &Patch::Merge(&patch))
                .await;
            record(metrics, "Ingress", key, result.map(|_| ()));
        }
    }
    let resource = ApiResource::erase::<BackendPolicy>(&());
    for (key, status) in &input.policy_status {
        let Some(entry) = input.index.backend_policies.get(key) else {
            continue;
        };
        let existing = entry
            .object
            .status
            .as_ref()
            .map(|s| s.conditions.clone())
            .unwrap_or_default();
        let generation = entry.object.metadata.generation;
        let desired = conditions(status, generation, &existing);
        if same_conditions(&existing, &desired) {
            continue;
        }
        let api: Api<DynamicObject> =
            Api::namespaced_with(client.clone(), &key.namespace, &resource);
        let patch = json!({"status": {"conditions": desired}});
        let result = api
            .patch_status(&key.name, &params, &Patch::Merge(&patch))
            .await;
        record(metrics, "BackendPolicy", key, result.map(|_| ()));
    }
}

fn record(metrics: &ClusterMetrics, kind: &str, key: &ObjectKey, result: Result<(), kube::Error>) {
    match result {
        Ok(()) => metrics
            .status_updates
            .with_label_values(&[kind, "ok"])
            .inc(),
        Err(error) => {
            tracing::warn!(kind, object = %key, %error, "status update failed; retried at the next change or resync");
            metrics
                .status_updates
                .with_label_values(&[kind, "error"])
                .inc();
        }
    }
}

fn condition(
    kind: &str,
    result: &Result<(), String>,
    ok_reason: &str,
    bad_reason: &str,
    generation: Option<i64>,
    existing: &[Condition],
) -> Condition {
    let (status, reason, message) = match result {
        Ok(()) => ("True", ok_reason, String::new()),
        Err(m) => ("False", bad_reason, m.clone()),
    };
    // The transition time changes only when the status does.
    let last = existing
        .iter()
        .find(|c| c.type_ == kind && c.status == status)
        .map(|c| c.last_transition_time.clone())
        .unwrap_or(Time(Timestamp::now()));
    Condition {
        type_: kind.to_string(),
        status: status.to_string(),
        reason: reason.to_string(),
        message,
        observed_generation: generation,
        last_transition_time: last,
    }
}

fn conditions(
    status: &PolicyStatus,
    generation: Option<i64>,
    existing: &[Condition],
) -> Vec<Condition> {
    vec![
        condition(
            "Accepted",
            &status.accepted,
            "Accepted",
            "Invalid",
            generation,
            existing,
        ),
        condition(
            "ResolvedRefs",
            &status.resolved_refs,
            "ResolvedRefs",
            "BackendNotFound",
            generation,
            existing,
        ),
    ]
}

/// Equal but for transition times.
fn same_conditions(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    let mut a: Vec<_> = a.iter().map(key).collect();
    let mut b: Vec<_> = b.iter().map(key).collect();
    a.sort();
    b.sort();
    a == b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unchanged_conditions_keep_their_transition_time() {
        let ok = PolicyStatus::default();
        let first = conditions(&ok, Some(1), &[]);
        let again = conditions(&ok, Some(1), &first);
        assert!(same_conditions(&first, &again));
        assert_eq!(first[0].last_transition_time, again[0].last_transition_time);
        let bad = PolicyStatus {
            accepted: Err("retry.attempts: must be between 1 and 10".into()),
            ..PolicyStatus::default()
        };
        let changed = conditions(&bad, Some(2), &first);
        assert!(!same_conditions(&first, &changed));
        assert_eq!(changed[0].status, "False");
        assert_eq!(changed[0].reason, "Invalid");
    }
}
