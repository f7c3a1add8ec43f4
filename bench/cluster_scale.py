"""Scenario g: scale through a real kube-apiserver (weir's Kubernetes source).

The control plane is the test one (scripts/controlplane: etcd + kube-apiserver built from pinned
Go modules; `bench/run.sh` runs its install.sh). N Services, EndpointSlices and Ingresses are
created through the API, then weir starts with the admin kubeconfig and the harness measures
time to ready, resident memory, and the time from one Ingress update (a JSON merge patch) to
the first request weir routes by it.

Called by harness.py as `run(ctx, h)`, where `h` is the harness module (spawn, stop, logging).
"""
import http.client
import json
import os
import ssl
import subprocess
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPTS = os.path.join(ROOT, "scripts", "controlplane")
NS = "scale"


class Api:
    """A few verbs against the API server with the admin client certificate."""

    def __init__(self, env):
        self.host, self.port = env["APISERVER_URL"].split("//", 1)[1].rsplit(":", 1)
        self.ssl = ssl.create_default_context(cafile=env["CA_FILE"])
        self.ssl.load_cert_chain(env["ADMIN_CERT"], env["ADMIN_KEY"])
        self.local = threading.local()

    def conn(self):
        c = getattr(self.local, "c", None)
        if c is None:
            c = http.client.HTTPSConnection(self.host, int(self.port), context=self.ssl, timeout=60)
            self.local.c = c
        return c

    def call(self, method, path, body=None, ctype="application/json", ok=(200, 201)):
        data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
        for attempt in range(3):
            try:
                c = self.conn()
                c.request(method, path, body=data, headers={"Content-Type": ctype, "Accept": "application/json"})
                r = c.getresponse()
                text = r.read()
                break
            except (http.client.HTTPException, OSError):
                self.local.c = None
                if attempt == 2:
                    raise
        if r.status not in ok:
            raise RuntimeError(f"{method} {path}: HTTP {r.status}: {text[:300]!r}")
        return json.loads(text) if text else None


def objects(i, h1_port):
    svc = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": f"svc-{i}", "namespace": NS},
           "spec": {"ports": [{"name": "http", "port": 80, "targetPort": h1_port}]}}
    # EndpointSlices may not hold loopback addresses: 198.18.0.0/15 (benchmarking range); weir
    # never connects to them here (no request is sent through these routes).
    addr = f"198.18.{(i // 250) % 256}.{i % 250 + 1}"
    eps = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
           "metadata": {"name": f"svc-{i}-1", "namespace": NS, "labels": {"kubernetes.io/service-name": f"svc-{i}"}},
           "addressType": "IPv4", "ports": [{"name": "http", "port": h1_port}],
           "endpoints": [{"addresses": [addr], "conditions": {"ready": True}}]}
    ing = ingress(f"ing-{i}", f"host-{i}.scale.example", "/", f"svc-{i}")
    return [("/api/v1/namespaces/scale/services", svc),
            ("/apis/discovery.k8s.io/v1/namespaces/scale/endpointslices", eps),
            ("/apis/networking.k8s.io/v1/namespaces/scale/ingresses", ing)]


def ingress(name, host, path, service):
    return {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": name, "namespace": NS},
            "spec": {"ingressClassName": "weir", "rules": [{"host": host, "http": {"paths": [
                {"path": path, "pathType": "Prefix",
                 "backend": {"service": {"name": service, "port": {"name": "http"}}}}]}}]}}


def populate(api, n, h1_port, threads=6):
    todo = [o for i in range(n) for o in objects(i, h1_port)]
    errors = []

    def work(k):
        for path, body in todo[k::threads]:
            try:
                api.call("POST", path, body)
            except Exception as ex:  # collected; the scenario fails below
                errors.append(ex)
                return

    ts = [threading.Thread(target=work, args=(k,)) for k in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors:
        raise errors[0]


def setup(api):
    api.call("POST", "/api/v1/namespaces", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}})
    with open(os.path.join(ROOT, "crds", "weir.dev_crds.yaml")) as f:
        docs = [d for d in f.read().split("\n---\n") if d.strip() and "kind:" in d]
    for doc in docs:
        api.call("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", doc.encode(),
                 ctype="application/yaml")
    end = time.time() + 60
    while time.time() < end:  # served once Established
        try:
            api.call("GET", "/apis/weir.dev/v1alpha1/backendpolicies")
            break
        except RuntimeError:
            time.sleep(0.2)
    api.call("POST", "/apis/networking.k8s.io/v1/ingressclasses",
             {"apiVersion": "networking.k8s.io/v1", "kind": "IngressClass", "metadata": {"name": "weir"},
              "spec": {"controller": "weir.dev/ingress-controller"}})


def run(ctx, h):
    sizes = [1000] if ctx.quick else [1000, 10000]
    n_edits = 20 if ctx.quick else 100
    rows = []
    for n in sizes:
        d = os.path.join(ctx.run, f"cp-{n}")
        subprocess.run(["bash", os.path.join(SCRIPTS, "stop.sh"), d, "--purge"], capture_output=True)
        # Creating the objects is not measured: etcd and kube-apiserver use every core for it,
        # then move to the load core before weir starts.
        started = subprocess.run(["bash", os.path.join(SCRIPTS, "start.sh"), d],
                                 capture_output=True, text=True)
        if started.returncode != 0:
            raise RuntimeError("the test control plane did not start (scripts/controlplane/install.sh builds it): "
                               + started.stderr[-800:])
        try:
            env = dict(line.split("=", 1) for line in open(os.path.join(d, "env")).read().splitlines() if "=" in line)
            api = Api(env)
            setup(api)
            t = time.time()
            populate(api, n, h.H1_BACKEND_PORT, threads=8)
            create_s = time.time() - t
            for pid in (env["APISERVER_PID"], env["ETCD_PID"]):
                subprocess.run(["taskset", "-a", "-p", "-c", ctx.load_cpu, pid], check=True, capture_output=True)
            # The edited Ingress's Service has no endpoints: once routed, weir answers 503 itself.
            api.call("POST", f"/api/v1/namespaces/{NS}/services",
                     {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "edited", "namespace": NS},
                      "spec": {"ports": [{"name": "http", "port": 80}]}})
            api.call("POST", f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses",
                     ingress("edited", "edited.scale.example", "/edit-0", "edited"))
            h.log(f"g: {n} Ingresses (+ Services, EndpointSlices) created in {create_s:.1f}s")
            w = h.Weir(ctx, name=f"weir-cluster-{n}",
                       source=["--kubeconfig", env["KUBECONFIG"], "--leader-election", "false"])
            ready = w.ready_s
            time.sleep(1)
            rss = h.vmrss_kib(w.pid)
            routes = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{h.WEIR_ADMIN}/debug/routes",
                                                       timeout=10).read())
            served = len(routes.get("exact_hosts", {}))
            lat = []
            for i in range(1, n_edits + 1):
                s = time.time()
                patch = {"spec": {"rules": [ingress("edited", "edited.scale.example", f"/edit-{i}", "edited")
                                            ["spec"]["rules"][0]]}}
                api.call("PATCH", f"/apis/networking.k8s.io/v1/namespaces/{NS}/ingresses/edited", patch,
                         ctype="application/merge-patch+json")
                if h.wait_served(w.port, "edited.scale.example", f"/edit-{i}", s + 30):
                    lat.append(time.time() - s)
            rss_after = h.vmrss_kib(w.pid)
            w.stop()
        finally:
            subprocess.run(["bash", os.path.join(SCRIPTS, "stop.sh"), d, "--purge"], capture_output=True)
        row = {"ingresses": n, "create_s": create_s, "ready_s": ready, "rss_mib": rss / 1024,
               "rss_after_edits_mib": rss_after / 1024, "edits": n_edits, "applied": len(lat),
               "hosts_in_table": served, **h.latency_ms(lat)}
        rows.append(row)
        h.log(f"g {row}")
    ctx.results["scenarios"]["g"] = {"title": "Scale through the real API server", "rows": rows}


def report(g, fmt):
    L = ["## g. Scale through the real API server (weir only)\n",
         "The test control plane (etcd v3.5.24 + kube-apiserver v1.33.13 from `scripts/controlplane/`; on every "
         "core while the objects are created, then moved to the load core) holds N Ingresses, each with its own Service and EndpointSlice, created through the API "
         "before weir starts. weir runs `--kubeconfig` (admin) `--leader-election false`, pinned like every proxy. "
         "Ready = process start to `/readyz` 200 (every kind listed, first table applied). Propagation = a JSON "
         "merge patch of one Ingress's path → the first request to the new path that weir routes (polled every "
         "2 ms; its Service has no endpoints, so a routed request gets weir's 503, an unrouted one 404).\n",
         "| Ingresses | create s | ready s | VmRSS MiB | VmRSS after edits MiB | hosts in /debug/routes | edits applied "
         "| propagation p50 ms | p99 ms | max ms |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for r in g["rows"]:
        L.append(f"| {r['ingresses']} | {r['create_s']:.1f} | {r['ready_s']:.2f} | {r['rss_mib']:.1f} | "
                 f"{r['rss_after_edits_mib']:.1f} | {r['hosts_in_table']} | {r['applied']}/{r['edits']} | "
                 f"{fmt(r['p50_ms'], 1)} | {fmt(r['p99_ms'], 1)} | {fmt(r['max_ms'], 1)} |")
    return L
