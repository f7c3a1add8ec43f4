//! BackendPolicy → the dataplane's policy for the Service ports it targets.
//!
//! The CRD schema rejects most bad values at the API server; manifest files have no API server,
//! so every rule is checked here too and reported with the field. A policy with an invalid value
//! is not applied at all (half a policy is worse than none).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use weir_dataplane as dp;

use crate::crd::{self, BackendPolicy};
use crate::diagnostic::Diagnostic;
use crate::duration;
use crate::index::{Entry, Index};
use crate::object::{Kind, ObjectKey, ObjectRef};

/// What compile found out about one BackendPolicy, for its status conditions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyStatus {
    /// `Err(message)`: not applied (invalid value, or lost a conflict).
    pub accepted: Result<(), String>,
    /// `Err(message)`: a target Service or port does not exist.
    pub resolved_refs: Result<(), String>,
}

impl Default for PolicyStatus {
    fn default() -> Self {
        Self {
            accepted: Ok(()),
            resolved_refs: Ok(()),
        }
    }
}

/// One policy applied to one Service (and maybe one port).
struct Applied {
    policy: Arc<dp::BackendPolicy>,
    protocol: Option<dp::Protocol>,
    tls: Option<crd::BackendTls>,
}

/// What a policy says about one backend.
pub(super) struct ForBackend {
    pub(super) policy: Arc<dp::BackendPolicy>,
    pub(super) protocol: Option<dp::Protocol>,
    pub(super) tls: Option<crd::BackendTls>,
}

/// Accepted policies by the Service and port name they target.
pub(super) struct Policies {
    /// namespace/service → (sectionName → policy); `None` section: every port.
    by_target: HashMap<ObjectKey, HashMap<Option<String>, Applied>>,
    pub(super) status: BTreeMap<ObjectKey, PolicyStatus>,
}

struct Fields<'a> {
    errors: Vec<(String, String)>,
    prefix: &'a str,
}

impl Fields<'_> {
    fn duration(&mut self, field: &str, value: &Option<String>) -> Option<Duration> {
        let value = value.as_ref()?;
        match duration::parse(value) {
            Ok(d) => Some(d),
            Err(e) => {
                self.errors
                    .push((format!("{}.{field}", self.prefix), e.to_string()));
                None
            }
        }
    }

    fn check(&mut self, ok: bool, field: &str, message: &str) {
        if !ok {
            self.errors
                .push((format!("{}.{field}", self.prefix), message.to_string()));
        }
    }
}

/// Converts a spec into the dataplane's policy on top of `base`, or lists what is invalid.
pub fn to_dataplane(
    spec: &crd::BackendPolicySpec,
    base: &dp::BackendPolicy,
) -> Result<dp::BackendPolicy, Vec<(String, String)>> {
    let mut out = base.clone();
    let mut f = Fields {
        errors: Vec::new(),
        prefix: "spec.connectionPool",
    };
    if let Some(pool) = &spec.connection_pool {
        let p = &mut out.pool;
        if let Some(reuse) = pool.reuse {
            p.reuse = match reuse {
                crd::Reuse::Never => dp::Reuse::Never,
                crd::Reuse::Safe => dp::Reuse::Safe,
                crd::Reuse::Aggressive => dp::Reuse::Aggressive,
                crd::Reuse::Always => dp::Reuse::Always,
            };
        }
        if let Some(n) = pool.max_connections_per_endpoint {
            f.check(n >= 1, "maxConnectionsPerEndpoint", "must be at least 1");
            p.max_connections_per_endpoint = Some(n);
        }
        if let Some(n) = pool.max_streams_per_connection {
            f.check(
                (1..=i32::MAX as u32).contains(&n),
                "maxStreamsPerConnection",
                "must be between 1 and 2147483647",
            );
            p.max_streams_per_connection = n;
        }
        if let Some(n) = pool.max_requests_per_connection {
            f.check(n >= 1, "maxRequestsPerConnection", "must be at least 1");
            p.max_requests_per_connection = Some(n);
        }
        if let Some(d) = f.duration("idleTimeout", &pool.idle_timeout) {
            p.idle_timeout = d;
        }
        p.max_connection_age = f
            .duration("maxConnectionAge", &pool.max_connection_age)
            .or(p.max_connection_age);
        if let Some(ka) = &pool.keepalive {
            let interval = f.duration("keepalive.interval", &Some(ka.interval.clone()));
            let timeout = f.duration("keepalive.timeout", &Some(ka.timeout.clone()));
            if let (Some(interval), Some(timeout)) = (interval, timeout) {
                f.check(
                    !interval.is_zero() && !timeout.is_zero(),
                    "keepalive",
                    "interval and timeout must be above zero",
                );
                p.keepalive = Some(dp::Keepalive { interval, timeout });
            }
        }
        if let Some(n) = pool.max_pending_requests {
            p.max_pending_requests = n;
        }
        if let Some(d) = f.duration("pendingTimeout", &pool.pending_timeout) {
            p.pending_timeout = d;
        }
    }
    f.prefix = "spec.retry";
    if let Some(retry) = &spec.retry {
        let r = &mut out.retry;
        if let Some(n) = retry.attempts {
            f.check(
                (1..=10).contains(&n),
                "attempts",
                "must be between 1 and 10",
            );
            r.attempts = n;
        }
        if let Some(when) = &retry.when {
            r.when = when
                .iter()
                .map(|c| match c {
                    crd::RetryCondition::Unprocessed => dp::RetryOn::Unprocessed,
                    crd::RetryCondition::Reset => dp::RetryOn::Reset,
                    crd::RetryCondition::EmptyResponse => dp::RetryOn::EmptyResponse,
                    crd::RetryCondition::ResponseTimeout => dp::RetryOn::ResponseTimeout,
                    crd::RetryCondition::GatewayError => dp::RetryOn::GatewayError,
                    crd::RetryCondition::ServerError => dp::RetryOn::ServerError,
                })
                .collect();
        }
        if let Some(codes) = &retry.codes {
            for (i, code) in codes.iter().enumerate() {
                f.check(
                    (100..=599).contains(code),
                    &format!("codes[{i}]"),
                    "must be an HTTP status code (100-599)",
                );
            }
            r.codes = codes.clone();
        }
        r.per_try_timeout = f
            .duration("perTryTimeout", &retry.per_try_timeout)
            .or(r.per_try_timeout);
        if let Some(b) = &retry.backoff {
            let base = f.duration("backoff.base", &Some(b.base.clone()));
            let max = f.duration("backoff.max", &Some(b.max.clone()));
            if let (Some(base), Some(max)) = (base, max) {
                f.check(
                    base <= max,
                    "backoff",
                    "backoff.base must not exceed backoff.max",
                );
                r.backoff = dp::Backoff { base, max };
            }
        }
        if let Some(b) = &retry.budget {
            f.check(
                (0.0..=10.0).contains(&b.ratio),
                "budget.ratio",
                "must be between 0 and 10",
            );
            r.budget.ratio = b.ratio;
            if let Some(window) = f.duration("budget.window", &b.window) {
                f.check(
                    window >= Duration::from_secs(1) && window <= Duration::from_secs(60),
                    "budget.window",
                    "must be between 1s and 1m",
                );
                r.budget.window = window;
            }
            if let Some(n) = b.min_per_second {
                r.budget.min_per_second = n;
            }
        }
        if let Some(n) = retry.max_replay_bytes {
            f.check(n <= 1 << 30, "maxReplayBytes", "must be at most 1073741824");
            r.max_replay_bytes = n;
        }
        if let Some(n) = retry.non_idempotent {
            r.non_idempotent = match n {
                crd::NonIdempotent::Never => dp::NonIdempotent::Never,
                crd::NonIdempotent::UnprocessedOnly => dp::NonIdempotent::UnprocessedOnly,
                crd::NonIdempotent::Always => dp::NonIdempotent::Always,
            };
        }
        if let Some(b) = retry.redispatch {
            r.redispatch = b;
        }
    }
    f.prefix = "spec.timeouts";
    if let Some(t) = &spec.timeouts {
        if let Some(d) = f.duration("connect", &t.connect) {
            f.check(!d.is_zero(), "connect", "must be above zero");
            out.timeouts.connect = d;
        }
        out.timeouts.request = f.duration("request", &t.request).or(out.timeouts.request);
        out.timeouts.idle = f.duration("idle", &t.idle).or(out.timeouts.idle);
    }
    if let (Some(per_try), Some(request)) = (out.retry.per_try_timeout, out.timeouts.request) {
        if per_try > request {
            f.errors.push((
                "spec.retry.perTryTimeout".into(),
                "must not exceed spec.timeouts.request".into(),
            ));
        }
    }
    if f.errors.is_empty() {
        Ok(out)
    } else {
        Err(f.errors)
    }
}

fn created(entry: &Entry<BackendPolicy>) -> (bool, Option<k8s_openapi::jiff::Timestamp>) {
    let t = entry
        .object
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0);
    (t.is_none(), t)
}

impl Policies {
    pub(super) fn new(
        index: &Index,
        base: &dp::BackendPolicy,
        diagnostics: &mut Vec<Diagnostic>,
    ) -> Self {
        let mut policies = Policies {
            by_target: HashMap::new(),
            status: BTreeMap::new(),
        };
        // Oldest first, so the oldest policy wins a conflict.
        let mut entries: Vec<_> = index.backend_policies.iter().collect();
        entries.sort_by(|(ka, a), (kb, b)| (created(a), *ka).cmp(&(created(b), *kb)));
        for (key, entry) in entries {
            let object = ObjectRef {
                kind: Kind::BackendPolicy,
                key: key.clone(),
            };
            let report = |d: Diagnostic| d.at(entry.origin.clone());
            let spec = &entry.object.spec;
            let converted = match to_dataplane(spec, base) {
                Ok(mut p) => {
                    p.source = key.to_string();
                    Arc::new(p)
                }
                Err(errors) => {
                    let summary = errors
                        .iter()
                        .map(|(f, m)| format!("{f}: {m}"))
                        .collect::<Vec<_>>()
                        .join("; ");
                    for (field, message) in errors {
                        diagnostics.push(report(Diagnostic::error(
                            Some(object.clone()),
                            Some(field),
                            format!("{message}; the policy is not applied"),
                        )));
                    }
                    policies.status.insert(
                        key.clone(),
                        PolicyStatus {
                            accepted: Err(summary),
                            resolved_refs: Ok(()),
                        },
                    );
                    continue;
                }
            };
            let protocol = spec.protocol.map(|p| match p {
                crd::BackendProtocol::Http1 => dp::Protocol::Http1,
                crd::BackendProtocol::H2c => dp::Protocol::H2c,
                crd::BackendProtocol::H2 => dp::Protocol::H2,
                crd::BackendProtocol::Https => dp::Protocol::Https,
            });
            let mut status = PolicyStatus::default();
            let mut unresolved = Vec::new();
            for (i, target) in spec.target_refs.iter().enumerate() {
                let field = format!("spec.targetRefs[{i}]");
                if target.kind != "Service" || !matches!(target.group.as_str(), "" | "core") {
                    let message = format!(
                        "kind {:?} in group {:?} is not supported: only core Services",
                        target.kind, target.group
                    );
                    diagnostics.push(report(Diagnostic::error(
                        Some(object.clone()),
                        Some(field),
                        message.clone(),
                    )));
                    unresolved.push(message);
                    continue;
                }
                let svc_key = ObjectKey::new(key.namespace.clone(), target.name.clone());
                match index.services.get(&svc_key) {
                    None => unresolved.push(format!("service {svc_key} not found")),
                    Some(svc) => {
                        if let Some(section) = &target.section_name {
                            let has_port = svc
                                .object
                                .spec
                                .iter()
                                .flat_map(|s| s.ports.iter().flatten())
                                .any(|p| p.name.as_deref() == Some(section));
                            if !has_port {
                                unresolved.push(format!(
                                    "service {svc_key} has no port named {section:?}"
                                ));
                            }
                        }
                    }
                }
                let slots = policies.by_target.entry(svc_key.clone()).or_default();
                if let Some(winner) = slots.get(&target.section_name) {
                    let message = format!(
                        "service {svc_key}{} is already targeted by BackendPolicy {}; this target is ignored",
                        target.section_name.as_ref().map(|s| format!(" port {s:?}")).unwrap_or_default(),
                        winner.policy.source
                    );
                    diagnostics.push(report(Diagnostic::warning(
                        Some(object.clone()),
                        Some(field),
                        message.clone(),
                    )));
                    status.accepted = Err(message);
                    continue;
                }
                slots.insert(
                    target.section_name.clone(),
                    Applied {
                        policy: converted.clone(),
                        protocol,
                        tls: spec.tls.clone(),
                    },
                );
            }
            if !unresolved.is_empty() {
                let message = unresolved.join("; ");
                diagnostics.push(report(Diagnostic::warning(
                    Some(object.clone()),
                    Some("spec.targetRefs".into()),
                    message.clone(),
                )));
                status.resolved_refs = Err(message);
            }
            policies.status.insert(key.clone(), status);
        }
        policies
    }

    /// The policy for a Service port: one naming the port beats one for the whole Service.
    pub(super) fn lookup(
        &self,
        service: &ObjectKey,
        port_name: Option<&str>,
    ) -> Option<ForBackend> {
        let slots = self.by_target.get(service)?;
        let specific = port_name.and_then(|p| {
            slots
                .iter()
                .find_map(|(s, a)| (s.as_deref() == Some(p)).then_some(a))
        });
        specific.or_else(|| slots.get(&None)).map(|a| ForBackend {
            policy: a.policy.clone(),
            protocol: a.protocol,
            tls: a.tls.clone(),
        })
    }
}
