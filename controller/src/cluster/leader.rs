//! Leader election on a `coordination.k8s.io/v1` Lease. Every replica serves traffic; only the
//! holder writes status. The holder renews every `renew_every`; another replica takes over
//! once `lease_duration` has passed without a renewal. Updates carry the resourceVersion they
//! read, so two replicas can never both win one takeover.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::Client;
use prometheus::IntGauge;
use tokio::sync::watch;

#[derive(Debug, Clone)]
pub struct LeaderOptions {
    pub namespace: String,
    pub name: String,
    /// This replica's identity in the lease (pod name, or host and pid).
    pub identity: String,
    pub lease_duration: Duration,
    pub renew_every: Duration,
}

fn expired(spec: &LeaseSpec, now: Timestamp) -> bool {
    let Some(renewed) = spec.renew_time.as_ref() else {
        return true;
    };
    let duration = spec.lease_duration_seconds.unwrap_or(15).max(1) as i64;
    match renewed.0.checked_add(jiff_seconds(duration)) {
        Ok(until) => until < now,
        Err(_) => true,
    }
}

fn jiff_seconds(s: i64) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(s)
}

/// One round: returns whether this replica holds the lease now.
async fn round(api: &Api<Lease>, opts: &LeaderOptions) -> Result<bool, kube::Error> {
    let now = Timestamp::now();
    let duration = opts.lease_duration.as_secs().max(1) as i32;
    let mine = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(opts.identity.clone()),
        lease_duration_seconds: Some(duration),
        acquire_time: acquired.or(Some(MicroTime(now))),
        renew_time: Some(MicroTime(now)),
        lease_transitions: Some(transitions),
        ..LeaseSpec::default()
    };
    let Some(mut lease) = api.get_opt(&opts.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(opts.name.clone()),
                namespace: Some(opts.namespace.clone()),
                ..ObjectMeta::default()
            },
            spec: Some(mine(0, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.clone().unwrap_or_default();
    let holder = spec.holder_identity.as_deref();
    let next = if holder == Some(opts.identity.as_str()) {
        mine(
            spec.lease_transitions.unwrap_or(0),
            spec.acquire_time.clone(),
        )
    } else if holder.is_none() || expired(&spec, now) {
        mine(spec.lease_transitions.unwrap_or(0) + 1, None)
    } else {
        return Ok(false);
    };
    lease.spec = Some(next);
    match api
        .replace(&opts.name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(true),
        // Someone else updated it first.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}

/// Campaigns forever, publishing leadership on `tx`.
pub(super) async fn run(
    client: Client,
    opts: LeaderOptions,
    tx: watch::Sender<bool>,
    gauge: IntGauge,
) {
    let api: Api<Lease> = Api::namespaced(client, &opts.namespace);
    let mut last_renewed: Option<tokio::time::Instant> = None;
    loop {
        let leader = match round(&api, &opts).await {
            Ok(true) => {
                last_renewed = Some(tokio::time::Instant::now());
                true
            }
            Ok(false) => false,
            Err(error) => {
                tracing::warn!(%error, lease = %opts.name, "leader election round failed");
                // Keep leading only while the lease we hold cannot have expired yet.
                last_renewed.is_some_and(|at| at.elapsed() < opts.lease_duration)
            }
        };
        if tx.send_if_modified(|current| std::mem::replace(current, leader) != leader) {
            tracing::info!(identity = %opts.identity, leader, "leadership changed");
        }
        gauge.set(i64::from(leader));
        tokio::time::sleep(opts.renew_every).await;
    }
}
