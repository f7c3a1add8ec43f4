//! weir against a real kube-apiserver + etcd (started by the test), running with the
//! ServiceAccount token bound to the checked-in RBAC in `deploy/rbac.yaml` (never as admin),
//! and backends in network namespaces (the API server rejects loopback endpoints).

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::api::networking::v1::{Ingress, IngressClass};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, PostParams};
use kube::Client;
use serde::de::DeserializeOwned;
use weir_controller::crd::BackendPolicy;
use weir_testkit::certs::{tls_secret, Ca};
use weir_testkit::client;
use weir_testkit::cluster::{ControlPlane, NetnsBackend};
use weir_testkit::Weir;

const WEIR: &str = env!("CARGO_BIN_EXE_weir");
const LIMIT: Duration = Duration::from_secs(10);

fn yaml<T: DeserializeOwned>(text: &str) -> T {
    serde_yaml::from_str(text).unwrap_or_else(|e| panic!("test manifest: {e}\n{text}"))
}

/// Retries an async check until it passes or `LIMIT` runs out.
macro_rules! eventually {
    ($what:expr, $check:expr) => {{
        let start = Instant::now();
        loop {
            if $check {
                break start.elapsed();
            }
            assert!(start.elapsed() < LIMIT, "timed out: {}", $what);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }};
}

struct Cluster {
    cp: ControlPlane,
    client: Client,
    /// weir's own kubeconfig: the ServiceAccount `weir-system/weir`.
    kubeconfig: std::path::PathBuf,
}

/// A control plane with weir's CRDs, the checked-in RBAC bound to `weir-system/weir`, the
/// namespace `shop` and an IngressClass for weir.
async fn cluster(tag: &str) -> Cluster {
    let cp = ControlPlane::start(tag);
    let client = cp.admin_client().await;
    let pp = PostParams::default();
    for ns in ["weir-system", "shop"] {
        let ns: Namespace = yaml(&format!("metadata: {{name: {ns}}}"));
        Api::<Namespace>::all(client.clone())
            .create(&pp, &ns)
            .await
            .unwrap();
    }
    let crds = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/crds/weir.dev_crds.yaml"
    ))
    .unwrap();
    let crd_api = Api::<CustomResourceDefinition>::all(client.clone());
    for doc in serde_yaml::Deserializer::from_str(&crds) {
        let crd: CustomResourceDefinition = serde::Deserialize::deserialize(doc).unwrap();
        crd_api.create(&pp, &crd).await.unwrap();
    }
    let rbac =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/deploy/rbac.yaml")).unwrap();
    let mut docs = serde_yaml::Deserializer::from_str(&rbac);
    let role: ClusterRole = serde::Deserialize::deserialize(docs.next().unwrap()).unwrap();
    let lease_role: Role = serde::Deserialize::deserialize(docs.next().unwrap()).unwrap();
    Api::<ClusterRole>::all(client.clone())
        .create(&pp, &role)
        .await
        .unwrap();
    Api::<Role>::namespaced(client.clone(), "weir-system")
        .create(&pp, &lease_role)
        .await
        .unwrap();
    let subject = "subjects: [{kind: ServiceAccount, name: weir, namespace: weir-system}]";
    let crb: ClusterRoleBinding = yaml(&format!("metadata: {{name: weir}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: weir}}\n{subject}"));
    Api::<ClusterRoleBinding>::all(client.clone())
        .create(&pp, &crb)
        .await
        .unwrap();
    let rb: RoleBinding = yaml(&format!("metadata: {{name: weir-leader-election, namespace: weir-system}}\nroleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: weir-leader-election}}\n{subject}"));
    Api::<RoleBinding>::namespaced(client.clone(), "weir-system")
        .create(&pp, &rb)
        .await
        .unwrap();
    let class: IngressClass = yaml("metadata: {name: weir, annotations: {ingressclass.kubernetes.io/is-default-class: \"true\"}}\nspec: {controller: weir.dev/ingress-controller}");
    Api::<IngressClass>::all(client.clone())
        .create(&pp, &class)
        .await
        .unwrap();
    // Wait for the CRD to be served.
    let policies: Api<BackendPolicy> = Api::namespaced(client.clone(), "shop");
    eventually!(
        "BackendPolicy CRD served",
        policies.list(&Default::default()).await.is_ok()
    );
    let kubeconfig = cp.service_account_kubeconfig("weir-system", "weir");
    Cluster {
        cp,
        client,
        kubeconfig,
    }
}

impl Cluster {
    async fn weir(&self, extra: &[&str]) -> Weir {
        let mut args = vec![
            "--leader-election-namespace",
            "weir-system",
            "--leader-election-lease-duration",
            "3s",
        ];
        args.extend_from_slice(extra);
        Weir::start_cluster(WEIR, &self.kubeconfig, &args).await
    }

    async fn create<K>(&self, obj: K) -> K
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), "shop");
        api.create(&PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("create {obj:?}: {e}"))
    }

    async fn replace<K>(&self, name: &str, mut obj: K)
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        let api: Api<K> = Api::namespaced(self.client.clone(), "shop");
        let current = api.get(name).await.unwrap();
        obj.meta_mut().resource_version = current.meta().resource_version.clone();
        api.replace(name, &PostParams::default(), &obj)
            .await
            .unwrap_or_else(|e| panic!("replace {name}: {e}"));
    }
}

fn service(name: &str) -> Service {
    yaml(&format!("metadata: {{name: {name}, namespace: shop}}\nspec:\n  ports: [{{name: http, port: 80, targetPort: 8080}}]"))
}

fn slice(name: &str, service: &str, endpoints: &[(&NetnsBackend, bool)]) -> EndpointSlice {
    let eps: String = endpoints
        .iter()
        .map(|(b, ready)| {
            format!(
                "- addresses: [\"{}\"]\n  conditions: {{ready: {ready}}}\n",
                b.addr.ip()
            )
        })
        .collect();
    yaml(&format!(
        "metadata: {{name: {name}, namespace: shop, labels: {{kubernetes.io/service-name: {service}}}}}\naddressType: IPv4\nports: [{{name: http, port: 8080}}]\nendpoints:\n{eps}"
    ))
}

fn ingress(name: &str, host: &str, path: &str, service: &str, tls_secret: Option<&str>) -> Ingress {
    let tls = tls_secret
        .map(|s| format!("  tls: [{{hosts: [{host}], secretName: {s}}}]\n"))
        .unwrap_or_default();
    yaml(&format!(
        "metadata: {{name: {name}, namespace: shop}}\nspec:\n{tls}  rules:\n  - host: {host}\n    http: {{paths: [{{path: {path}, pathType: Prefix, backend: {{service: {{name: {service}, port: {{number: 80}}}}}}}}]}}"
    ))
}

async fn backend_of(weir: &Weir, host: &str, path: &str) -> String {
    match client::get(weir.http, host, path).await {
        Ok(r) if r.status == 200 => r.header("x-backend").unwrap_or("").to_string(),
        Ok(r) => format!("status:{}", r.status.as_u16()),
        Err(e) => format!("error:{e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingress_lifecycle_endpoints_policy_and_status() {
    let c = cluster("lifecycle").await;
    let a = NetnsBackend::start("weir-t-la", 20, "a", 8080);
    let b = NetnsBackend::start("weir-t-lb", 21, "b", 8080);
    c.create(service("web")).await;
    c.create(slice("web-1", "web", &[(&a, true)])).await;
    c.create(ingress("web", "web.example.com", "/app", "web", None))
        .await;
    let mut weir = c.weir(&["--publish-address", "203.0.113.10"]).await;

    eventually!(
        "traffic flows to a",
        backend_of(&weir, "web.example.com", "/app").await == "a"
    );

    // Ingress status carries the published address.
    let ingresses: Api<Ingress> = Api::namespaced(c.client.clone(), "shop");
    eventually!("ingress status published", {
        let ing = ingresses.get("web").await.unwrap();
        ing.status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .is_some_and(|i| i.len() == 1 && i[0].ip.as_deref() == Some("203.0.113.10"))
    });

    // Edit the path: the new route serves within a second.
    let edited = Instant::now();
    c.replace("web", ingress("web", "web.example.com", "/v2", "web", None))
        .await;
    eventually!(
        "new path served",
        backend_of(&weir, "web.example.com", "/v2").await == "a"
    );
    let took = edited.elapsed();
    eprintln!("path edit served after {took:?}");
    assert!(
        took < Duration::from_secs(1),
        "the edit took {took:?} to serve"
    );
    assert_eq!(
        backend_of(&weir, "web.example.com", "/app").await,
        "status:404"
    );

    // Scale out: the new endpoint gets traffic.
    c.replace("web-1", slice("web-1", "web", &[(&a, true), (&b, true)]))
        .await;
    eventually!(
        "b reached",
        backend_of(&weir, "web.example.com", "/v2").await == "b"
    );
    // An endpoint marked not ready gets no requests.
    c.replace("web-1", slice("web-1", "web", &[(&a, false), (&b, true)]))
        .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..10 {
        assert_eq!(backend_of(&weir, "web.example.com", "/v2").await, "b");
    }

    // BackendPolicy: the API server rejects an invalid one with the CEL rule's message.
    let policies: Api<BackendPolicy> = Api::namespaced(c.client.clone(), "shop");
    let bad: BackendPolicy = yaml("metadata: {name: bad, namespace: shop}\nspec:\n  targetRefs: [{name: web}]\n  retry: {backoff: {base: 2s, max: 1s}}");
    let err = policies
        .create(&PostParams::default(), &bad)
        .await
        .expect_err("the API server rejects it");
    assert!(
        err.to_string()
            .contains("backoff.base must not exceed backoff.max"),
        "{err}"
    );
    let typo: BackendPolicy = yaml("metadata: {name: typo, namespace: shop}\nspec:\n  targetRefs: [{name: web}]\n  connectionPool: {idleTimeout: soon}");
    let err = policies
        .create(&PostParams::default(), &typo)
        .await
        .expect_err("pattern rejects it");
    assert!(err.to_string().contains("idleTimeout"), "{err}");
    // A valid one changes behaviour: 503s are retried.
    let good: BackendPolicy = yaml("metadata: {name: retry, namespace: shop}\nspec:\n  targetRefs: [{name: web}]\n  retry: {attempts: 2, when: [gateway-error], backoff: {base: 1ms, max: 1ms}}");
    policies
        .create(&PostParams::default(), &good)
        .await
        .unwrap();
    let series = "weir_retries_total{reason=\"status-503\",service=\"shop/web:80\"}";
    eventually!("policy applied: a 503 is retried", {
        let r = client::get(weir.http, "web.example.com", "/v2/status/503")
            .await
            .unwrap();
        assert_eq!(r.status, 503);
        weir.metric(series).await > 0.0
    });
    eventually!("policy status conditions", {
        let p = policies.get("retry").await.unwrap();
        let conditions = p.status.map(|s| s.conditions).unwrap_or_default();
        conditions
            .iter()
            .any(|c| c.type_ == "Accepted" && c.status == "True")
            && conditions
                .iter()
                .any(|c| c.type_ == "ResolvedRefs" && c.status == "True")
    });

    // Delete: 404.
    ingresses
        .delete("web", &DeleteParams::default())
        .await
        .unwrap();
    eventually!(
        "deleted route gone",
        backend_of(&weir, "web.example.com", "/v2").await == "status:404"
    );
    weir.assert_no_panic();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_secret_created_after_the_ingress_and_rotated() {
    let c = cluster("tls").await;
    let a = NetnsBackend::start("weir-t-ta", 24, "a", 8080);
    c.create(service("web")).await;
    c.create(slice("web-1", "web", &[(&a, true)])).await;
    c.create(ingress(
        "web",
        "secure.example.com",
        "/",
        "web",
        Some("web-tls"),
    ))
    .await;
    let weir = c.weir(&[]).await;
    eventually!(
        "plain HTTP serves",
        backend_of(&weir, "secure.example.com", "/").await == "a"
    );
    let ca = Ca::new("cluster test CA");
    let roots = [ca.der.clone()];
    // No Secret yet: no certificate for that name.
    assert!(
        client::tls_connect(weir.https, "secure.example.com", &roots, &[b"h2"])
            .await
            .is_err()
    );

    let first = ca.leaf(&["secure.example.com"]);
    c.create::<Secret>(yaml(&tls_secret("shop", "web-tls", &first)))
        .await;
    eventually!("HTTPS starts when the Secret appears", {
        matches!(client::tls_connect(weir.https, "secure.example.com", &roots, &[b"h2"]).await, Ok((_, _, leaf)) if leaf == first.der)
    });
    let (stream, _, _) = client::tls_connect(weir.https, "secure.example.com", &roots, &[b"h2"])
        .await
        .unwrap();
    let req = client::request(
        client::Proto::H2,
        "GET",
        "secure.example.com",
        "/",
        client::empty(),
    );
    let reply = client::send_on(stream, client::Proto::H2, req)
        .await
        .unwrap();
    assert_eq!(reply.header("x-backend"), Some("a"));

    // Rotation: the new certificate is served without a restart.
    let second = ca.leaf(&["secure.example.com"]);
    c.replace::<Secret>("web-tls", yaml(&tls_secret("shop", "web-tls", &second)))
        .await;
    eventually!("rotated certificate served", {
        matches!(client::tls_connect(weir.https, "secure.example.com", &roots, &[b"h2"]).await, Ok((_, _, leaf)) if leaf == second.der)
    });
    drop(c.cp);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_leader_writes_status_and_a_new_one_takes_over() {
    let c = cluster("leader").await;
    let a = NetnsBackend::start("weir-t-ea", 28, "a", 8080);
    c.create(service("web")).await;
    c.create(slice("web-1", "web", &[(&a, true)])).await;
    c.create(ingress("web", "web.example.com", "/", "web", None))
        .await;
    let first = c.weir(&["--publish-address", "203.0.113.20"]).await;
    let second = c.weir(&["--publish-address", "203.0.113.20"]).await;
    for w in [&first, &second] {
        eventually!(
            "every replica serves",
            backend_of(w, "web.example.com", "/").await == "a"
        );
    }
    eventually!("exactly one leader", {
        first.metric("weir_leader").await + second.metric("weir_leader").await == 1.0
    });
    let (mut leader, follower) = if first.metric("weir_leader").await == 1.0 {
        (first, second)
    } else {
        (second, first)
    };
    let ingresses: Api<Ingress> = Api::namespaced(c.client.clone(), "shop");
    eventually!("status written", {
        ingresses
            .get("web")
            .await
            .unwrap()
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .is_some()
    });
    let writes = "weir_status_updates_total{kind=\"Ingress\",result=\"ok\"}";
    assert!(leader.metric(writes).await >= 1.0);
    assert_eq!(
        follower.metric(writes).await,
        0.0,
        "only the leader writes status"
    );

    // The leader dies; the other takes over within the lease duration (3s) plus one renewal.
    leader.child.kill().await.unwrap();
    let died = Instant::now();
    eventually!(
        "follower takes over",
        follower.metric("weir_leader").await == 1.0
    );
    let took = died.elapsed();
    eprintln!("new leader after {took:?}");
    assert!(took < Duration::from_secs(5), "takeover took {took:?}");
    // And it writes status: a new Ingress gets its address.
    c.create(ingress("web2", "two.example.com", "/", "web", None))
        .await;
    eventually!("new leader writes status", {
        ingresses
            .get("web2")
            .await
            .unwrap()
            .status
            .and_then(|s| s.load_balancer)
            .and_then(|lb| lb.ingress)
            .is_some()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_server_restart_does_not_stop_traffic() {
    let mut c = cluster("restart").await;
    let a = NetnsBackend::start("weir-t-ra", 32, "a", 8080);
    c.create(service("web")).await;
    c.create(slice("web-1", "web", &[(&a, true)])).await;
    c.create(ingress("web", "web.example.com", "/", "web", None))
        .await;
    let mut weir = c.weir(&[]).await;
    eventually!(
        "traffic flows",
        backend_of(&weir, "web.example.com", "/").await == "a"
    );

    let http = weir.http;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let (mut ok, mut failed) = (0, 0);
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match client::get(http, "web.example.com", "/").await {
                    Ok(r) if r.status == 200 => ok += 1,
                    _ => failed += 1,
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            (ok, failed)
        })
    };
    let cp = &mut c.cp;
    tokio::task::block_in_place(|| cp.restart_apiserver(Duration::from_secs(3)));
    // While it was down, weir stayed ready and kept serving.
    assert_eq!(
        client::get(weir.admin, "admin", "/readyz")
            .await
            .unwrap()
            .status,
        200
    );
    // Changes after the restart are applied (the watches reconnected).
    c.create(ingress("late", "late.example.com", "/", "web", None))
        .await;
    eventually!(
        "change after restart applied",
        backend_of(&weir, "late.example.com", "/").await == "a"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (ok, failed) = load.await.unwrap();
    eprintln!("during the restart: {ok} requests ok, {failed} failed");
    assert!(ok > 100);
    assert_eq!(failed, 0, "no request failed while the API server was away");
    weir.assert_no_panic();
}
