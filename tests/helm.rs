//! The Helm chart, with real Helm (built from its Go module by scripts/install-tools.sh) and a
//! real kube-apiserver: lint, template, schema validation, server-side dry-run of every rendered
//! object, install/upgrade/uninstall, weir running with the chart's ServiceAccount, and the
//! chart's alerts checked by promtool.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{Api, DynamicObject, PostParams};
use kube::core::GroupVersionKind;
use kube::discovery::{Discovery, Scope};
use kube::Client;
use serde::de::DeserializeOwned;
use weir_controller::crd::BackendPolicy;
use weir_testkit::client;
use weir_testkit::cluster::{ControlPlane, NetnsBackend};
use weir_testkit::Weir;

const WEIR: &str = env!("CARGO_BIN_EXE_weir");
const ROOT: &str = env!("CARGO_MANIFEST_DIR");
const VALUE_SETS: [&str; 3] = ["minimal", "monitoring", "restricted"];

fn helm_bin() -> PathBuf {
    let cache = std::env::var("WEIR_CACHE")
        .map(PathBuf::from)
        .unwrap_or_else(|_| {
            PathBuf::from(std::env::var("HOME").expect("HOME")).join(".cache/weir")
        });
    let helm = cache.join("bin/helm");
    assert!(
        helm.exists(),
        "helm is missing at {}: run scripts/install-tools.sh",
        helm.display()
    );
    helm
}

fn chart() -> PathBuf {
    Path::new(ROOT).join("charts/weir")
}

fn helm(args: &[&str]) -> Output {
    Command::new(helm_bin())
        .args(args)
        .output()
        .expect("run helm")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn values(set: &str) -> String {
    chart()
        .join(format!("ci/{set}-values.yaml"))
        .display()
        .to_string()
}

fn template(extra: &[&str]) -> String {
    let chart = chart();
    // Offline, helm assumes Kubernetes 1.20; render for the version the tests run.
    let mut args = vec![
        "template",
        "weir",
        chart.to_str().unwrap(),
        "--namespace",
        "weir-system",
        "--include-crds",
        "--kube-version",
        "1.33.13",
    ];
    args.extend_from_slice(extra);
    ok(helm(&args), &format!("helm template {extra:?}"))
}

fn documents(rendered: &str) -> Vec<serde_json::Value> {
    serde_yaml::Deserializer::from_str(rendered)
        .filter_map(|d| serde_yaml::Value::deserialize(d).ok())
        .filter(|v| !v.is_null())
        .map(|v| serde_json::to_value(v).unwrap())
        .collect()
}

use serde::Deserialize;

fn yaml<T: DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("test manifest: {e}\n{text}"))
}

#[test]
fn lint_and_template_default_and_three_value_sets() {
    ok(
        helm(&["lint", "--strict", chart().to_str().unwrap()]),
        "helm lint",
    );
    for set in VALUE_SETS {
        let v = values(set);
        ok(
            helm(&["lint", "--strict", chart().to_str().unwrap(), "-f", &v]),
            &format!("helm lint {set}"),
        );
        assert!(!documents(&template(&["-f", &v])).is_empty());
    }
    let monitoring = template(&["-f", &values("monitoring")]);
    for kind in [
        "ServiceMonitor",
        "PrometheusRule",
        "HorizontalPodAutoscaler",
        "ConfigMap",
    ] {
        assert!(
            monitoring.contains(&format!("kind: {kind}")),
            "monitoring values render a {kind}"
        );
    }
    let restricted = template(&["-f", &values("restricted")]);
    assert!(restricted.contains("@sha256:0000"), "image by digest");
    assert!(restricted.contains("--publish-address=edge.example.com"));
    assert!(restricted.contains("--watch-namespace=payments"));
    assert!(restricted.contains("requiredDuringSchedulingIgnoredDuringExecution"));
}

#[test]
fn schema_rejects_bad_values_naming_the_field() {
    let chart = chart();
    let cases = [
        ("replicaCount=0", "replicaCount"),
        ("service.type=Ingress", "service/type"),
        ("controller.drainTimeout=soon", "controller/drainTimeout"),
        ("image.digest=latest", "image/digest"),
        ("podAntiAffinity=sometimes", "podAntiAffinity"),
    ];
    for (set, field) in cases {
        let out = helm(&[
            "template",
            "weir",
            chart.to_str().unwrap(),
            "--kube-version",
            "1.33.13",
            "--set",
            set,
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "--set {set} must be rejected");
        assert!(
            stderr.contains(field),
            "--set {set}: the error must name {field}: {stderr}"
        );
    }
    let out = helm(&[
        "template",
        "weir",
        chart.to_str().unwrap(),
        "--kube-version",
        "1.33.13",
        "--set",
        "noSuchValue=1",
    ]);
    assert!(!out.status.success(), "unknown values are rejected");
}

#[test]
fn chart_rbac_and_crds_are_the_checked_in_ones() {
    let docs = documents(&template(&[]));
    let rules_of = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"] == kind)
            .map(|d| d["rules"].clone())
            .unwrap_or_else(|| panic!("the chart renders a {kind}"))
    };
    let rbac = std::fs::read_to_string(Path::new(ROOT).join("deploy/rbac.yaml")).unwrap();
    let checked_in = documents(&rbac);
    assert_eq!(
        rules_of("ClusterRole"),
        checked_in[0]["rules"],
        "chart ClusterRole != deploy/rbac.yaml"
    );
    assert_eq!(
        rules_of("Role"),
        checked_in[1]["rules"],
        "chart Role != deploy/rbac.yaml"
    );
    let chart_crds = std::fs::read_to_string(chart().join("crds/weir.dev_crds.yaml")).unwrap();
    let crds = std::fs::read_to_string(Path::new(ROOT).join("crds/weir.dev_crds.yaml")).unwrap();
    assert!(
        chart_crds == crds,
        "charts/weir/crds differs from crds/: cp crds/weir.dev_crds.yaml charts/weir/crds/"
    );
}

/// CRDs of the Prometheus operator, reduced to what the API server needs to accept objects.
fn monitoring_crd(plural: &str, kind: &str) -> String {
    format!(
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: {plural}.monitoring.coreos.com}}\nspec:\n  group: monitoring.coreos.com\n  scope: Namespaced\n  names: {{plural: {plural}, kind: {kind}}}\n  versions:\n  - name: v1\n    served: true\n    storage: true\n    schema: {{openAPIV3Schema: {{type: object, x-kubernetes-preserve-unknown-fields: true}}}}\n"
    )
}

async fn create_dynamic(
    client: &Client,
    discovery: &Discovery,
    doc: &serde_json::Value,
    dry_run: bool,
) -> Result<(), String> {
    let api_version = doc["apiVersion"].as_str().unwrap_or_default();
    let kind = doc["kind"].as_str().unwrap_or_default();
    let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
    let gvk = GroupVersionKind::gvk(group, version, kind);
    let (resource, caps) = discovery
        .resolve_gvk(&gvk)
        .ok_or_else(|| format!("{api_version} {kind} is not served"))?;
    let obj: DynamicObject = serde_json::from_value(doc.clone()).map_err(|e| e.to_string())?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => Api::namespaced_with(
            client.clone(),
            obj.metadata.namespace.as_deref().unwrap_or("weir-system"),
            &resource,
        ),
        Scope::Cluster => Api::all_with(client.clone(), &resource),
    };
    let pp = PostParams {
        dry_run,
        ..Default::default()
    };
    api.create(&pp, &obj)
        .await
        .map(|_| ())
        .map_err(|e| format!("{kind} {}: {e}", obj.metadata.name.unwrap_or_default()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_rendered_object_passes_server_side_dry_run() {
    let cp = ControlPlane::start("helm-dryrun");
    let client = cp.admin_client().await;
    let pp = PostParams::default();
    let ns: Namespace = yaml("metadata: {name: weir-system}");
    Api::<Namespace>::all(client.clone())
        .create(&pp, &ns)
        .await
        .unwrap();
    // CRDs first, for real: weir's and the Prometheus operator's.
    let mut crds = vec![
        monitoring_crd("servicemonitors", "ServiceMonitor"),
        monitoring_crd("prometheusrules", "PrometheusRule"),
    ];
    crds.push(std::fs::read_to_string(chart().join("crds/weir.dev_crds.yaml")).unwrap());
    let discovery = Discovery::new(client.clone()).run().await.unwrap();
    for text in &crds {
        for doc in documents(text) {
            create_dynamic(&client, &discovery, &doc, false)
                .await
                .unwrap();
        }
    }
    let start = Instant::now();
    let discovery = loop {
        let d = Discovery::new(client.clone()).run().await.unwrap();
        if d.has_group("monitoring.coreos.com") && d.has_group("weir.dev") {
            break d;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "CRDs not served");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let mut sets = vec![("default".to_string(), template(&[]))];
    for set in VALUE_SETS {
        sets.push((set.to_string(), template(&["-f", &values(set)])));
    }
    for (name, rendered) in sets {
        let mut checked = 0;
        for doc in documents(&rendered) {
            if doc["kind"] == "CustomResourceDefinition" {
                continue;
            }
            create_dynamic(&client, &discovery, &doc, true)
                .await
                .unwrap_or_else(|e| panic!("values {name}: the API server rejects {e}"));
            checked += 1;
        }
        eprintln!("values {name}: {checked} objects accepted by server-side dry-run");
        assert!(checked >= 8, "values {name}: only {checked} objects");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn install_run_weir_with_the_charts_rbac_upgrade_uninstall() {
    let cp = ControlPlane::start("helm-install");
    let kubeconfig = cp.admin_kubeconfig();
    let kc = kubeconfig.to_str().unwrap();
    let chart = chart();
    ok(
        helm(&[
            "install",
            "weir",
            chart.to_str().unwrap(),
            "--namespace",
            "weir-system",
            "--create-namespace",
            "--kubeconfig",
            kc,
            "--set",
            "ingressClassResource.default=true",
            "--set",
            "controller.publishAddresses={203.0.113.50}",
        ]),
        "helm install",
    );
    let client = cp.admin_client().await;
    // The chart installed the CRD and created the ServiceAccount weir runs as.
    let token_kubeconfig = cp.service_account_kubeconfig("weir-system", "weir");
    let ns: Namespace = yaml("metadata: {name: shop}");
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .unwrap();
    let backend = NetnsBackend::start("weir-t-ha", 36, "a", 8080);
    let pp = PostParams::default();
    let svc: Service = yaml("metadata: {name: web, namespace: shop}\nspec: {ports: [{name: http, port: 80, targetPort: 8080}]}");
    Api::<Service>::namespaced(client.clone(), "shop")
        .create(&pp, &svc)
        .await
        .unwrap();
    let slice: EndpointSlice = yaml(&format!(
        "metadata: {{name: web-1, namespace: shop, labels: {{kubernetes.io/service-name: web}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints: [{{addresses: [\"{}\"]}}]",
        backend.addr.ip()
    ));
    Api::<EndpointSlice>::namespaced(client.clone(), "shop")
        .create(&pp, &slice)
        .await
        .unwrap();
    let ing: Ingress = yaml("metadata: {name: web, namespace: shop}\nspec:\n  rules:\n  - host: web.example.com\n    http: {paths: [{path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}]}");
    Api::<Ingress>::namespaced(client.clone(), "shop")
        .create(&pp, &ing)
        .await
        .unwrap();
    let policy: BackendPolicy = yaml("metadata: {name: web, namespace: shop}\nspec: {targetRefs: [{name: web}], retry: {attempts: 2}}");
    let policies: Api<BackendPolicy> = Api::namespaced(client.clone(), "shop");
    let start = Instant::now();
    while policies.create(&pp, &policy).await.is_err() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the chart's CRD is not served"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    // weir as the chart deploys it (same flags), as the chart's ServiceAccount.
    let mut weir = Weir::start_cluster(
        WEIR,
        &token_kubeconfig,
        &[
            "--leader-election-namespace",
            "weir-system",
            "--leader-election-name",
            "weir-leader",
            "--publish-address",
            "203.0.113.50",
        ],
    )
    .await;
    let start = Instant::now();
    loop {
        let r = client::get(weir.http, "web.example.com", "/").await;
        if matches!(&r, Ok(r) if r.header("x-backend") == Some("a")) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no traffic through weir: {r:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let ingresses: Api<Ingress> = Api::namespaced(client.clone(), "shop");
    let start = Instant::now();
    loop {
        let status_written = ingresses
            .get("web")
            .await
            .unwrap()
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|l| l.ingress)
            .is_some();
        let conditions = policies
            .get("web")
            .await
            .unwrap()
            .status
            .map(|s| s.conditions.len())
            .unwrap_or(0);
        if status_written && conditions == 2 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "status not written with the chart's RBAC"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    weir.assert_no_panic();

    ok(
        helm(&[
            "upgrade",
            "weir",
            chart.to_str().unwrap(),
            "--namespace",
            "weir-system",
            "--kubeconfig",
            kc,
            "--reuse-values",
            "--set",
            "replicaCount=3",
        ]),
        "helm upgrade",
    );
    let deployments: Api<k8s_openapi::api::apps::v1::Deployment> =
        Api::namespaced(client.clone(), "weir-system");
    assert_eq!(
        deployments
            .get("weir")
            .await
            .unwrap()
            .spec
            .and_then(|s| s.replicas),
        Some(3)
    );
    ok(
        helm(&[
            "uninstall",
            "weir",
            "--namespace",
            "weir-system",
            "--kubeconfig",
            kc,
        ]),
        "helm uninstall",
    );
    assert!(
        deployments.get_opt("weir").await.unwrap().is_none(),
        "uninstall removed the Deployment"
    );
}

fn promtool(args: &[&str]) -> Output {
    Command::new("promtool")
        .args(args)
        .output()
        .expect("promtool is missing: run scripts/install-tools.sh")
}

/// Every alert fires when it should and stays quiet otherwise (`promtool test rules`).
#[test]
fn alerts_fire_when_they_should() {
    let rendered = template(&["-f", &values("monitoring")]);
    let rule = documents(&rendered)
        .into_iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let dir = std::env::temp_dir().join(format!("weir-promtool-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let rules = serde_json::json!({"groups": rule["spec"]["groups"]});
    std::fs::write(
        dir.join("rules.yaml"),
        serde_yaml::to_string(&rules).unwrap(),
    )
    .unwrap();
    ok(
        promtool(&["check", "rules", dir.join("rules.yaml").to_str().unwrap()]),
        "promtool check rules",
    );
    let tests = r#"rule_files: [rules.yaml]
evaluation_interval: 1m
tests:
- interval: 1m
  input_series:
  # route "bad": 10% errors; route "good": none.
  - {series: 'weir_requests_total{route="bad",code="200"}', values: '0+90x20'}
  - {series: 'weir_requests_total{route="bad",code="503"}', values: '0+10x20'}
  - {series: 'weir_requests_total{route="good",code="200"}', values: '0+100x20'}
  - {series: 'weir_retries_skipped_total{service="shop/web:80",reason="budget"}', values: '0+5x20'}
  - {series: 'weir_retries_skipped_total{service="shop/api:80",reason="budget"}', values: '0x20'}
  - {series: 'weir_config_errors_total{stage="compile"}', values: '0 0 0 0 0 0 0 0 0 0 1 1 1 1 1 1 1 1 1 1 1'}
  - {series: 'weir_leader{pod="a"}', values: '1 1 1 1 1 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0 0'}
  - {series: 'weir_leader{pod="b"}', values: '0x20'}
  # p99 of route "slow" is above 1 s, of route "fast" far below.
  - {series: 'weir_request_duration_seconds_bucket{route="slow",le="0.5"}', values: '0+1x20'}
  - {series: 'weir_request_duration_seconds_bucket{route="slow",le="2.5"}', values: '0+100x20'}
  - {series: 'weir_request_duration_seconds_bucket{route="slow",le="+Inf"}', values: '0+100x20'}
  - {series: 'weir_request_duration_seconds_bucket{route="fast",le="0.5"}', values: '0+100x20'}
  - {series: 'weir_request_duration_seconds_bucket{route="fast",le="2.5"}', values: '0+100x20'}
  - {series: 'weir_request_duration_seconds_bucket{route="fast",le="+Inf"}', values: '0+100x20'}
  alert_rule_test:
  - eval_time: 15m
    alertname: WeirHighErrorRatio
    exp_alerts: [{exp_labels: {severity: warning, route: bad}, exp_annotations: {summary: "More than 5% of requests to route bad fail"}}]
  - eval_time: 15m
    alertname: WeirRetryBudgetExhausted
    exp_alerts: [{exp_labels: {severity: warning, service: "shop/web:80"}, exp_annotations: {summary: "Retries to shop/web:80 are being skipped: the retry budget is exhausted"}}]
  - eval_time: 5m
    alertname: WeirConfigErrors
    exp_alerts: []
  - eval_time: 12m
    alertname: WeirConfigErrors
    exp_alerts: [{exp_labels: {severity: warning}, exp_annotations: {summary: "weir found errors in its configuration; see its logs, Events and BackendPolicy status"}}]
  - eval_time: 4m
    alertname: WeirNoLeader
    exp_alerts: []
  - eval_time: 15m
    alertname: WeirNoLeader
    exp_alerts: [{exp_labels: {severity: critical}, exp_annotations: {summary: "No weir replica holds the leader lease: status is not being written"}}]
  - eval_time: 15m
    alertname: WeirHighP99Latency
    exp_alerts: [{exp_labels: {severity: warning, route: slow}, exp_annotations: {summary: "p99 latency of route slow is above 1s"}}]
  - eval_time: 3m
    alertname: WeirHighP99Latency
    exp_alerts: []
"#;
    std::fs::write(dir.join("tests.yaml"), tests).unwrap();
    let out = promtool(&["test", "rules", dir.join("tests.yaml").to_str().unwrap()]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "promtool test rules:\n{text}");
    let _ = std::fs::remove_dir_all(&dir);
}
