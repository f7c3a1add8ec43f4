//! weir's custom resources. The CRD YAML in `crds/` is generated from these types
//! (`weir crds`), and a test fails when it drifts.
//!
//! A field exists here only once the dataplane implements it. Durations are strings such as
//! `250ms`, `2s`, `1m`, `1h30m`. No field is named like a YAML 1.1 boolean (`on`, `off`, `yes`, `no`).

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// The duration format the schema enforces (a subset of Go's, so CEL's `duration()` reads it).
pub const DURATION_PATTERN: &str = "^([0-9]+(ms|s|m|h))+$";

/// Connection reuse and retry policy for the Services it targets.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "weir.dev",
    version = "v1alpha1",
    kind = "BackendPolicy",
    namespaced,
    status = "BackendPolicyStatus",
    shortname = "bpol",
    derive = "PartialEq",
    printcolumn = r#"{"name":"Accepted","type":"string","jsonPath":".status.conditions[?(@.type==\"Accepted\")].status"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.retry) || !has(self.retry.perTryTimeout) || !has(self.timeouts) || !has(self.timeouts.request) || duration(self.retry.perTryTimeout) <= duration(self.timeouts.request)").message("retry.perTryTimeout must not exceed timeouts.request"))]
pub struct BackendPolicySpec {
    /// The Services (optionally one port, by name) this policy applies to.
    #[schemars(length(min = 1, max = 16))]
    pub target_refs: Vec<TargetRef>,
    /// How weir speaks to the backend. Default: from the Service port's `appProtocol`
    /// (`kubernetes.io/h2c` → h2c), else HTTP/1.1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<BackendProtocol>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_pool: Option<ConnectionPool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<Retry>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
    /// TLS towards the backend, for `protocol: h2` and `https`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<BackendTls>,
}

/// How weir verifies a TLS backend. Verification is always on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendTls {
    /// CA certificates (PEM) that sign the backend's certificate, from Secrets or ConfigMaps
    /// in the policy's namespace. Default: the system's roots.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 8))]
    pub ca_certificate_refs: Vec<CaCertificateRef>,
    /// The name sent as SNI and verified in the backend's certificate.
    /// Default: `<service>.<namespace>.svc`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub hostname: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct CaCertificateRef {
    /// `Secret` (default) or `ConfigMap`.
    #[serde(default = "secret_kind")]
    #[schemars(extend("enum" = ["Secret", "ConfigMap"]))]
    pub kind: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The data key holding the PEM (default `ca.crt`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
}

fn secret_kind() -> String {
    "Secret".to_string()
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct TargetRef {
    /// Only `Service`.
    #[serde(default = "service_kind")]
    #[schemars(extend("enum" = ["Service"]))]
    pub kind: String,
    /// Empty or `core`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    #[schemars(extend("enum" = ["", "core"]))]
    pub group: String,
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The Service port's name; without it the policy applies to every port.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 63))]
    pub section_name: Option<String>,
}

fn service_kind() -> String {
    "Service".to_string()
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BackendProtocol {
    /// HTTP/1.1 over cleartext TCP.
    Http1,
    /// HTTP/2 over cleartext TCP with prior knowledge.
    H2c,
    /// HTTP/2 over TLS (ALPN `h2`, SNI and certificate verification).
    H2,
    /// HTTP/1.1 over TLS.
    Https,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema, Default)]
#[serde(rename_all = "lowercase")]
pub enum Reuse {
    Never,
    #[default]
    Safe,
    Aggressive,
    Always,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct ConnectionPool {
    /// Which connections a request may use (default `safe`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reuse: Option<Reuse>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_connections_per_endpoint: Option<u32>,
    /// Never above the peer's SETTINGS_MAX_CONCURRENT_STREAMS either (default 100).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 2147483647))]
    pub max_streams_per_connection: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_requests_per_connection: Option<u64>,
    /// Default 90s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max_connection_age: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub keepalive: Option<KeepaliveSpec>,
    /// Requests that may wait for a connection or stream slot (default 1024).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_pending_requests: Option<u32>,
    /// How long a request may wait for a connection or stream slot (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub pending_timeout: Option<String>,
}

/// HTTP/2 PING keepalive.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct KeepaliveSpec {
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub interval: String,
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub timeout: String,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum RetryCondition {
    #[serde(rename = "unprocessed")]
    Unprocessed,
    #[serde(rename = "reset")]
    Reset,
    #[serde(rename = "empty-response")]
    EmptyResponse,
    #[serde(rename = "response-timeout")]
    ResponseTimeout,
    #[serde(rename = "gateway-error")]
    GatewayError,
    #[serde(rename = "5xx")]
    ServerError,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum NonIdempotent {
    Never,
    UnprocessedOnly,
    Always,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Retry {
    /// Attempts in all, the first included (default 2; 1 disables retries).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 10))]
    pub attempts: Option<u32>,
    /// Conditions that are retried (default `[unprocessed]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub when: Option<Vec<RetryCondition>>,
    /// Response status codes that are retried, in addition to `when`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(inner(range(min = 100, max = 599)))]
    pub codes: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub per_try_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<BackoffSpec>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<BudgetSpec>,
    /// Request bodies up to this many bytes are kept for replay (default 65536); larger ones
    /// are not retried.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(max = 1073741824))]
    pub max_replay_bytes: Option<u64>,
    /// Retrying POST, PATCH and other non-idempotent methods (default `unprocessed-only`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub non_idempotent: Option<NonIdempotent>,
    /// Prefer an endpoint not tried yet (default true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub redispatch: Option<bool>,
}

/// Jittered exponential backoff between attempts.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("duration(self.base) <= duration(self.max)").message("backoff.base must not exceed backoff.max"))]
pub struct BackoffSpec {
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub base: String,
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub max: String,
}

/// Retries allowed: `ratio` per request over `window`, plus `minPerSecond`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSpec {
    #[schemars(range(min = 0.0, max = 10.0))]
    pub ratio: f64,
    /// Default 10s; at most 1m.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub window: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_per_second: Option<u32>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Connecting to an endpoint (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub connect: Option<String>,
    /// The whole request up to response headers, all attempts and backoff included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub request: Option<String>,
    /// A response body that sends nothing for this long is aborted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = DURATION_PATTERN))]
    pub idle: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, KubeSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackendPolicyStatus {
    /// `Accepted` and `ResolvedRefs`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// Every CRD weir defines, as YAML documents.
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let crd = serde_yaml::to_string(&BackendPolicy::crd())?;
    Ok(format!(
        "# Generated by `weir crds` from controller/src/crd.rs. Do not edit.\n---\n{crd}"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `crds/` must be exactly what the types generate. Regenerate with
    /// `cargo run -- crds > crds/weir.dev_crds.yaml`.
    #[test]
    fn checked_in_crds_are_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../crds/weir.dev_crds.yaml");
        let on_disk = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {path}: {e}"));
        assert!(
            on_disk == crds_yaml().unwrap(),
            "{path} is out of date: run `cargo run -- crds > crds/weir.dev_crds.yaml`"
        );
    }

    #[test]
    fn schema_carries_cel_rules_and_patterns() {
        let yaml = crds_yaml().unwrap();
        assert!(yaml.contains("duration(self.base) <= duration(self.max)"));
        assert!(yaml.contains("x-kubernetes-validations"));
        assert!(yaml.contains(DURATION_PATTERN));
        for word in ["on:", "off:", "yes:", "no:"] {
            assert!(
                !yaml.contains(&format!(" {word}")),
                "a YAML 1.1 boolean key: {word}"
            );
        }
    }
}
