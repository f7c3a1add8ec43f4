#!/usr/bin/env python3
"""weir benchmark harness: runs every scenario, alternating proxies, and writes RESULTS.md.

Called by bench/run.sh (which installs the tools and builds weir first). Python 3 standard
library only. Every number written to RESULTS.md comes from a measurement in this run.
"""
import argparse
import atexit
import datetime
import json
import os
import re
import shutil
import signal
import socket
import statistics
import string
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import cluster_scale
import targets

BENCH = os.path.dirname(os.path.abspath(__file__))
TPL = os.path.join(BENCH, "templates")
CLK = os.sysconf("SC_CLK_TCK")

H1_BACKEND_PORT = 9100
H2_BACKEND_PORT = 9200
# nghttpd backends that allow 1 and 8 concurrent streams per connection (scenario c).
LIMITED_BACKENDS = {1: 9201, 8: 9208}
PORTS = {
    "weir": 8001, "haproxy-safe": 8002, "haproxy-always": 8003, "nghttpx": 8004,
    "nginx": 8005, "haproxy": 8002,
}
WEIR_ADMIN = 9901
WEIR_HTTPS = 8441

PROCS = []  # (name, Popen)
LOG = []    # commands run, for RESULTS.md


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def render(template, dest, **kv):
    with open(os.path.join(TPL, template)) as f:
        text = string.Template(f.read()).substitute(**{k: str(v) for k, v in kv.items()})
    tmp = os.path.join(os.path.dirname(dest), "." + os.path.basename(dest) + ".tmp")
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, dest)  # atomic: a watcher never sees half a file


class Ctx:
    def __init__(self, args):
        self.args = args
        self.quick = args.quick
        self.run = args.run_dir
        self.weir = args.weir
        self.oha = args.oha
        ncpu = os.cpu_count() or 1
        # Proxy under test on the last core; client and backends share the other ones.
        if ncpu >= 2:
            self.proxy_cpu = str(ncpu - 1)
            self.load_cpu = "0" if ncpu == 2 else f"0-{ncpu - 2}"
        else:
            self.proxy_cpu = self.load_cpu = "0"
        self.workers = 1
        self.results = {"meta": {}, "scenarios": {}}
        self.cmds = {}

    def pin(self, which):
        return ["taskset", "-c", self.proxy_cpu if which == "proxy" else self.load_cpu]


def spawn(ctx, name, argv, which="proxy", env=None):
    full = ctx.pin(which) + argv
    out = open(os.path.join(ctx.run, f"{name}.log"), "ab")
    e = dict(os.environ)
    if env:
        e.update(env)
    p = subprocess.Popen(full, stdout=out, stderr=subprocess.STDOUT, env=e, start_new_session=True)
    PROCS.append((name, p))
    envs = " ".join(f"{k}={v}" for k, v in (env or {}).items())
    ctx.cmds.setdefault(name, (envs + " " + " ".join(full)).strip())
    return p


def stop(p, sig=signal.SIGTERM, timeout=10):
    if p.poll() is not None:
        return
    try:
        os.killpg(p.pid, sig)  # its own session: only what we started
    except ProcessLookupError:
        return
    try:
        p.wait(timeout)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


def cleanup():
    for _, p in reversed(PROCS):
        try:
            stop(p, timeout=5)
        except Exception:
            pass


def wait_port(port, timeout=20):
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


def http_get(url, timeout=5):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.status, r.read().decode()


def proc_tree(pid):
    kids = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    s = f.read()
                ppid = int(s[s.rindex(")") + 2:].split()[1])
                kids.setdefault(ppid, []).append(int(d))
            except (OSError, ValueError):
                pass
    out, todo = [], [pid]
    while todo:
        x = todo.pop()
        out.append(x)
        todo.extend(kids.get(x, []))
    return out


def cpu_seconds(pid):
    """utime+stime of a process and its live descendants (all threads), in seconds."""
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/stat") as f:
                s = f.read()
            fields = s[s.rindex(")") + 2:].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, ValueError):
            pass
    return total / CLK


def vmrss_kib(pid):
    total = 0
    for p in proc_tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def threads_of(pid):
    names = {}
    for t in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{t}/comm") as f:
                n = f.read().strip()
            names[n] = names.get(n, 0) + 1
        except OSError:
            pass
    return names


# ---------------------------------------------------------------- load generators

def h2load(ctx, url, dur, clients, streams, extra=()):
    cmd = ctx.pin("load") + ["h2load", "-t1", "-c", str(clients), "-m", str(streams),
                             "-D", str(dur), *extra, url]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=dur + 120).stdout
    r = {"cmd": " ".join(cmd)}
    m = re.search(r"finished in ([\d.]+)s, ([\d.]+) req/s", out)
    r["rps"] = float(m.group(2)) if m else 0.0
    r["secs"] = float(m.group(1)) if m else 0.0
    m = re.search(r"requests: (\d+) total, (\d+) started, (\d+) done, (\d+) succeeded, "
                  r"(\d+) failed, (\d+) errored, (\d+) timeout", out)
    if m:
        r.update(zip(["total", "started", "done", "succeeded", "failed", "errored", "timeout"],
                     map(int, m.groups())))
    m = re.search(r"status codes: (\d+) 2xx, (\d+) 3xx, (\d+) 4xx, (\d+) 5xx", out)
    if m:
        r["2xx"], r["5xx"] = int(m.group(1)), int(m.group(4))
        r["non2xx"] = sum(map(int, m.groups()[1:]))
    if "done" not in r:
        r["raw"] = out[-2000:]
        r.update(done=0, succeeded=0, failed=0, errored=0, timeout=0, non2xx=0)
    return r


def wrk(ctx, url, dur, conns, headers=()):
    cmd = ctx.pin("load") + ["wrk", "-t1", "-c", str(conns), "-d", f"{dur}s"]
    for h in headers:
        cmd += ["-H", h]
    cmd.append(url)
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=dur + 120).stdout
    r = {"cmd": " ".join(cmd)}
    m = re.search(r"Requests/sec:\s+([\d.]+)", out)
    r["rps"] = float(m.group(1)) if m else 0.0
    m = re.search(r"(\d+) requests in ([\d.]+)(\w+)", out)
    r["done"] = int(m.group(1)) if m else 0
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    r["sockerr"] = sum(map(int, m.groups())) if m else 0
    if not r["done"]:
        r["raw"] = out[-2000:]
    return r


def oha(ctx, url, dur, rate, conns):
    cmd = ctx.pin("load") + [ctx.oha, "-z", f"{dur}s", "-q", str(rate), "-c", str(conns),
                             "--latency-correction", "--no-tui", "--output-format", "json", url]
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=dur + 120)
    r = {"cmd": " ".join(cmd)}
    try:
        j = json.loads(p.stdout)
        pc = j["latencyPercentiles"]
        r.update(p50=pc["p50"] * 1e3, p99=pc["p99"] * 1e3, p999=pc["p99.9"] * 1e3,
                 rps=j["summary"]["requestsPerSec"], ok=j["summary"]["successRate"],
                 codes=j.get("statusCodeDistribution", {}))
    except Exception as e:  # keep what oha said
        r["error"] = f"{e}: {p.stdout[-500:]} {p.stderr[-500:]}"
    return r


# ---------------------------------------------------------------- processes under test

def base_ports():
    return dict(H1_BACKEND_PORT=H1_BACKEND_PORT, H2_BACKEND_PORT=H2_BACKEND_PORT,
                S1_BACKEND_PORT=LIMITED_BACKENDS[1], S8_BACKEND_PORT=LIMITED_BACKENDS[8])


def start_backends(ctx):
    docroot = os.path.join(ctx.run, "htdocs")
    os.makedirs(os.path.join(docroot, "h2c"), exist_ok=True)
    with open(os.path.join(docroot, "h2c", "index.html"), "w") as f:
        f.write("hello, bench\n")
    os.makedirs(os.path.join(ctx.run, "ngx-tmp"), exist_ok=True)
    spawn(ctx, "backend-h2c-nghttpd",
          ["nghttpd", "--no-tls", "-n", "1", "-d", docroot, str(H2_BACKEND_PORT)], which="load")
    for streams, port in LIMITED_BACKENDS.items():
        os.makedirs(os.path.join(docroot, f"s{streams}"), exist_ok=True)
        with open(os.path.join(docroot, f"s{streams}", "index.html"), "w") as f:
            f.write("hello, bench\n")
        spawn(ctx, f"backend-h2c-nghttpd-streams-{streams}",
              ["nghttpd", "--no-tls", "-n", "1", f"--max-concurrent-streams={streams}", "-d", docroot, str(port)],
              which="load")
    conf = os.path.join(ctx.run, "nginx-backend.conf")
    render("nginx-backend.conf", conf, RUN=ctx.run, H1_BACKEND_PORT=H1_BACKEND_PORT)
    spawn(ctx, "backend-h1-nginx", ["nginx", "-c", conf, "-p", ctx.run], which="load")
    wait_port(H2_BACKEND_PORT)
    wait_port(H1_BACKEND_PORT)
    for port in LIMITED_BACKENDS.values():
        wait_port(port)


def weir_metrics():
    _, text = http_get(f"http://127.0.0.1:{WEIR_ADMIN}/metrics")
    return text


def metric_sum(text, name, must=""):
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {") and must in line:
            total += float(line.rsplit(" ", 1)[1])
    return total


def latency_ms(lat, prefix=""):
    """p50, p99 and max of a list of seconds, in ms (None when empty), keyed `{prefix}p50_ms` etc."""
    lat = sorted(lat)
    at = lambda q: lat[min(len(lat) - 1, int(len(lat) * q))] * 1e3 if lat else None
    return {f"{prefix}p50_ms": lat[len(lat) // 2] * 1e3 if lat else None, f"{prefix}p99_ms": at(0.99),
            f"{prefix}max_ms": lat[-1] * 1e3 if lat else None}


def status_of(port, host, path):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_served(port, host, path, deadline):
    """Polls (every 2 ms) until weir routes host+path (anything but its own 404 for no route)."""
    while time.time() < deadline:
        if status_of(port, host, path) != 404:
            return True
        time.sleep(0.002)
    return False


def weir_generation():
    return metric_sum(weir_metrics(), "weir_config_generation")


class Weir:
    def __init__(self, ctx, name="weir", manifests=None, policy=None, port=None, source=None):
        self.ctx = ctx
        self.port = port or PORTS["weir"]
        self.dir = manifests or os.path.join(ctx.run, f"{name}-manifests")
        if source is None and manifests is None:
            shutil.rmtree(self.dir, ignore_errors=True)
            os.makedirs(self.dir)
            render("weir/00-base.yaml", os.path.join(self.dir, "00-base.yaml"), **base_ports())
            if policy:
                render("weir/policy.yaml", os.path.join(self.dir, "10-policy.yaml"), REUSE=policy)
        self.t0 = time.time()
        source = source or ["--manifests", self.dir]
        self.p = spawn(ctx, name, [ctx.weir, "run", *source,
                                   "--http-listen", f"127.0.0.1:{self.port}",
                                   "--https-listen", f"127.0.0.1:{WEIR_HTTPS}",
                                   "--admin-listen", f"127.0.0.1:{WEIR_ADMIN}",
                                   "--log-level", "warn", "--workers", str(ctx.workers)])
        self.ready_s = self.wait_ready()
        self.pid = self.p.pid

    def wait_ready(self, timeout=300):
        end = time.time() + timeout
        while time.time() < end:
            if self.p.poll() is not None:
                raise RuntimeError("weir exited; see its log in the run dir")
            try:
                if http_get(f"http://127.0.0.1:{WEIR_ADMIN}/readyz", 1)[0] == 200:
                    return time.time() - self.t0
            except Exception:
                pass
            time.sleep(0.01)
        raise RuntimeError("weir not ready")

    def stop(self):
        stop(self.p)


class Haproxy:
    def __init__(self, ctx, name, reuse, master_worker=False):
        self.ctx, self.name = ctx, name
        self.port = PORTS[name] if name in PORTS else PORTS["haproxy-safe"]
        self.cfg = os.path.join(ctx.run, f"{name}.cfg")
        self.sock = os.path.join(ctx.run, f"{name}.stats.sock")
        self.reuse = reuse
        self.write(0)
        argv = ["haproxy", "-f", self.cfg]
        if master_worker:
            self.msock = os.path.join(ctx.run, f"{name}.master.sock")
            argv = ["haproxy", "-W", "-db", "-S", self.msock, "-f", self.cfg]
        else:
            argv = ["haproxy", "-db", "-f", self.cfg]
        self.p = spawn(ctx, name, argv)
        self.pid = self.p.pid
        wait_port(self.port)

    def write(self, n):
        render("haproxy.cfg", self.cfg, WORKERS=self.ctx.workers, STATS_SOCK=self.sock,
               PORT=self.port, REUSE=self.reuse, N=n, **base_ports())

    def stat(self, backend):
        """`show stat` fields of server s1 in a backend (counts since start)."""
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.sock)
        s.sendall(b"show stat\n")
        data = b""
        while True:
            b = s.recv(65536)
            if not b:
                break
            data += b
        s.close()
        lines = data.decode().splitlines()
        head = lines[0].lstrip("# ").split(",")
        for line in lines[1:]:
            row = dict(zip(head, line.split(",")))
            if row.get("pxname") == backend and row.get("svname") == "s1":
                return row
        return {}

    def master_cli(self, cmd):
        s = socket.socket(socket.AF_UNIX)
        s.connect(self.msock)
        s.sendall(cmd.encode() + b"; quit\n")
        data = b""
        s.settimeout(5)
        try:
            while True:
                b = s.recv(65536)
                if not b:
                    break
                data += b
        except socket.timeout:
            pass
        s.close()
        return data.decode()

    def current_worker(self):
        try:
            out = self.master_cli("show proc")
        except OSError:  # the master re-executes itself during a reload
            return None
        sec = None
        for line in out.splitlines():
            if line.startswith("# workers"):
                sec = "w"
                continue
            if line.startswith("#"):
                sec = None
                continue
            if sec == "w" and line.split():
                return line.split()[0]
        return None

    def stop(self):
        stop(self.p)


class Nghttpx:
    def __init__(self, ctx):
        self.port = PORTS["nghttpx"]
        conf = os.path.join(ctx.run, "nghttpx.conf")
        render("nghttpx.conf", conf, PORT=self.port, H2_BACKEND_PORT=H2_BACKEND_PORT,
               WORKERS=ctx.workers, RUN=ctx.run)
        self.p = spawn(ctx, "nghttpx", ["nghttpx", f"--conf={conf}"])
        self.pid = self.p.pid
        wait_port(self.port)

    def stop(self):
        stop(self.p)


class NginxProxy:
    def __init__(self, ctx):
        self.port = PORTS["nginx"]
        conf = os.path.join(ctx.run, "nginx-proxy.conf")
        render("nginx-proxy.conf", conf, PORT=self.port, H1_BACKEND_PORT=H1_BACKEND_PORT,
               WORKERS=ctx.workers, RUN=ctx.run)
        self.p = spawn(ctx, "nginx", ["nginx", "-c", conf, "-p", ctx.run])
        self.pid = self.p.pid
        wait_port(self.port)

    def stop(self):
        stop(self.p)


# ---------------------------------------------------------------- scenarios

def throughput(ctx, key, title, proxies, url_path, direct_port, runner, dur, rounds):
    """Alternate proxies A B C A B C...; per run: warm-up, then CPU before/after."""
    names = ["direct"] + list(proxies)
    runs = {n: [] for n in names}
    for rnd in range(rounds):
        for n in names:
            port = direct_port if n == "direct" else proxies[n].port
            url = f"http://127.0.0.1:{port}{url_path}"
            runner(url, 1)  # warm-up (not measured)
            pid = None if n == "direct" else proxies[n].pid
            c0 = cpu_seconds(pid) if pid else 0
            r = runner(url, dur)
            c1 = cpu_seconds(pid) if pid else 0
            r["cpu_s"] = c1 - c0
            r["cpu_per_100k"] = (c1 - c0) / r["done"] * 1e5 if r["done"] and pid else None
            r["round"] = rnd + 1
            runs[n].append(r)
            log(f"{key} round {rnd + 1} {n}: {r['rps']:.0f} req/s, proxy cpu {r['cpu_s']:.2f}s, "
                f"errors {r.get('failed', 0) + r.get('errored', 0) + r.get('sockerr', 0)}, "
                f"non-2xx {r.get('non2xx', 0)}")
    summary = {}
    for n in names:
        rps = [r["rps"] for r in runs[n]]
        cpu = [r["cpu_per_100k"] for r in runs[n] if r["cpu_per_100k"] is not None]
        summary[n] = {"rps_median": statistics.median(rps), "rps_min": min(rps), "rps_max": max(rps),
                      "cpu_per_100k_median": statistics.median(cpu) if cpu else None,
                      "errors": sum(r.get("failed", 0) + r.get("errored", 0) + r.get("sockerr", 0)
                                    for r in runs[n]),
                      "non2xx": sum(r.get("non2xx", 0) for r in runs[n])}
    ctx.results["scenarios"][key] = {"title": title, "runs": runs, "summary": summary,
                                     "dur": dur, "rounds": rounds}
    return summary


def scenario_a(ctx):
    dur, rounds = (5, 1) if ctx.quick else (15, 3)
    c, m = 16, 10
    proxies = {"weir": Weir(ctx), "haproxy-safe": Haproxy(ctx, "haproxy-safe", "safe"),
               "haproxy-always": Haproxy(ctx, "haproxy-always", "always"), "nghttpx": Nghttpx(ctx)}
    try:
        w = proxies["weir"]
        ctx.results["meta"]["weir_threads"] = threads_of(w.pid)
        s = throughput(ctx, "a", "HTTP/2 client -> proxy -> h2c backend (h2load)", proxies,
                       "/h2c/index.html", H2_BACKEND_PORT,
                       lambda url, d: h2load(ctx, url, d, c, m), dur, rounds)
        ctx.results["scenarios"]["a"]["params"] = {"clients": c, "streams": m}
    finally:
        for p in proxies.values():
            p.stop()
    return s


def scenario_b(ctx):
    dur, rounds = (5, 1) if ctx.quick else (15, 3)
    conns = 32
    proxies = {"weir": Weir(ctx), "haproxy": Haproxy(ctx, "haproxy", "safe"),
               "nginx": NginxProxy(ctx)}
    try:
        s = throughput(ctx, "b", "HTTP/1.1 client -> proxy -> HTTP/1.1 backend (wrk)", proxies,
                       "/h1/", H1_BACKEND_PORT, lambda url, d: wrk(ctx, url, d, conns), dur, rounds)
        ctx.results["scenarios"]["b"]["params"] = {"connections": conns}
    finally:
        for p in proxies.values():
            p.stop()
    return s


def scenario_c(ctx):
    """Upstream connections opened per request, fresh proxy per measurement."""
    dur = 3 if ctx.quick else 10
    loads = {
        "h2-persistent": ("h2load -c16 -m10, persistent client connections",
                          lambda port: h2load(ctx, f"http://127.0.0.1:{port}/h2c/index.html", dur, 16, 10)),
        "h1-churn": ("wrk -c16 with `Connection: close` (a new client connection per request) to the h2c backend",
                     lambda port: wrk(ctx, f"http://127.0.0.1:{port}/h2c/index.html", dur, 16,
                                      headers=["Connection: close"])),
    }
    rows = []
    for load, (desc, run) in loads.items():
        for variant in ["weir:never", "weir:safe", "weir:aggressive", "weir:always",
                        "haproxy:never", "haproxy:safe", "haproxy:aggressive", "haproxy:always"]:
            kind, mode = variant.split(":")
            if kind == "weir":
                px = Weir(ctx, policy=mode)
                m0 = weir_metrics()
                o0 = metric_sum(m0, "weir_upstream_connections_opened_total", "bench-h2c:")
                r = run(px.port)
                m1 = weir_metrics()
                opened = metric_sum(m1, "weir_upstream_connections_opened_total", "bench-h2c:") - o0
            else:
                px = Haproxy(ctx, "haproxy", mode)
                s0 = px.stat("be_h2c")
                r = run(px.port)
                s1 = px.stat("be_h2c")
                if "connect" in s1 and s1["connect"] != "":
                    opened = int(s1["connect"]) - int(s0.get("connect") or 0)
                else:
                    opened = None
                r["haproxy_reuse"] = s1.get("reuse")
            px.stop()
            done = r["done"]
            row = {"load": load, "proxy": kind, "mode": mode, "requests": done, "opened": opened,
                   "per_request": (opened / done) if (opened is not None and done) else None,
                   "rps": r["rps"], "errors": r.get("failed", 0) + r.get("errored", 0) + r.get("sockerr", 0),
                   "non2xx": r.get("non2xx", 0), "cmd": r["cmd"]}
            rows.append(row)
            log(f"c {load} {variant}: {done} requests, {opened} upstream connections opened")
    limited = []
    for streams in LIMITED_BACKENDS:
        for variant in ["weir:safe", "haproxy:safe", "haproxy:always"]:
            kind, mode = variant.split(":")
            px = Weir(ctx, policy=mode) if kind == "weir" else Haproxy(ctx, "haproxy", mode)
            url = f"http://127.0.0.1:{px.port}/s{streams}/index.html"
            h2load(ctx, url, 1, 16, 10)  # warm-up: the pool grows to what the limit needs
            if kind == "weir":
                o0 = metric_sum(weir_metrics(), "weir_upstream_connections_opened_total", f"bench-h2c-s{streams}:")
            else:
                o0 = int(px.stat(f"be_s{streams}").get("connect") or 0)
            r = h2load(ctx, url, dur, 16, 10)
            if kind == "weir":
                opened = metric_sum(weir_metrics(), "weir_upstream_connections_opened_total",
                                    f"bench-h2c-s{streams}:") - o0
            else:
                opened = int(px.stat(f"be_s{streams}").get("connect") or 0) - o0
            px.stop()
            limited.append({"streams": streams, "proxy": kind, "mode": mode, "requests": r["done"],
                            "rps": r["rps"], "opened": opened,
                            "errors": r.get("failed", 0) + r.get("errored", 0), "non2xx": r.get("non2xx", 0),
                            "cmd": r["cmd"]})
            log(f"c streams={streams} {variant}: {r['rps']:.0f} req/s, {opened} connections opened after warm-up")
    ctx.results["scenarios"]["c"] = {"title": "Upstream connection reuse", "rows": rows, "limited": limited,
                                     "loads": {k: v[0] for k, v in loads.items()}, "dur": dur}


def scenario_d(ctx):
    """Reconfiguration under h2load: weir file edits vs HAProxy master-worker reloads."""
    edits = 50 if ctx.quick else ctx.args.reconfigs
    chunk = 5
    out = {}
    for kind in ["weir", "haproxy"]:
        if kind == "weir":
            px = Weir(ctx)
            churn = os.path.join(px.dir, "20-churn.yaml")
            render("weir/churn.yaml", churn, N=0)
            time.sleep(1)
        else:
            px = Haproxy(ctx, "haproxy-mw", "safe", master_worker=True)
            time.sleep(0.5)
        done = threading.Event()
        loads = []

        def loader():
            while not done.is_set():
                loads.append(h2load(ctx, f"http://127.0.0.1:{px.port}/h2c/index.html", chunk, 16, 10))

        t = threading.Thread(target=loader)
        t.start()
        time.sleep(1)
        lat, timeouts = [], 0
        t0 = time.time()
        for i in range(1, edits + 1):
            s = time.time()
            if kind == "weir":
                g0 = weir_generation()
                render("weir/churn.yaml", churn, N=i)
                ok = False
                while time.time() - s < 10:
                    if weir_generation() > g0:
                        ok = True
                        break
                    time.sleep(0.002)
            else:
                w0 = px.current_worker()
                px.write(i)
                os.kill(px.pid, signal.SIGUSR2)
                ok = False
                while time.time() - s < 10:
                    w = px.current_worker()
                    if w and w != w0:
                        ok = True
                        break
                    time.sleep(0.005)
            if ok:
                lat.append(time.time() - s)
            else:
                timeouts += 1
        elapsed = time.time() - t0
        time.sleep(1)
        done.set()
        t.join()
        px.stop()
        tot = {k: sum(r.get(k, 0) for r in loads)
               for k in ["done", "succeeded", "failed", "errored", "timeout", "non2xx", "total"]}
        out[kind] = {"edits": edits, "applied": len(lat), "not_applied_10s": timeouts,
                     "elapsed_s": elapsed, **latency_ms(lat, "apply_"),
                     "load_runs": len(loads), "cmd": loads[0]["cmd"] if loads else "",
                     "rps_mean": statistics.mean(r["rps"] for r in loads) if loads else 0, **tot}
        log(f"d {kind}: {len(lat)}/{edits} applied in {elapsed:.1f}s; requests {tot}")
    ctx.results["scenarios"]["d"] = {"title": "Reconfiguration under load", "rows": out,
                                     "chunk": chunk}


def scenario_e(ctx):
    dur, rounds = (5, 1) if ctx.quick else (6, 5)
    # Scenario b found the maximum with 32 connections; half its rate on 16 would keep each
    # connection as busy as at the maximum (Little's law), and oha's own queue for a free
    # connection would be the tail. 64 leave a quarter of them busy: the proxy is what waits.
    conns = 64
    b = ctx.results["scenarios"].get("b")
    if not b:
        return
    slowest = min(v["rps_median"] for k, v in b["summary"].items() if k != "direct")
    rate = int(slowest * 0.5)
    proxies = {"weir": Weir(ctx), "haproxy": Haproxy(ctx, "haproxy", "safe"),
               "nginx": NginxProxy(ctx)}
    names = ["direct"] + list(proxies)
    runs = {n: [] for n in names}
    try:
        for rnd in range(rounds):
            for n in names:
                port = H1_BACKEND_PORT if n == "direct" else proxies[n].port
                url = f"http://127.0.0.1:{port}/h1/"
                wrk(ctx, url, 1, conns)  # warm-up
                r = oha(ctx, url, dur, rate, conns)
                runs[n].append(r)
                log(f"e round {rnd + 1} {n}: {r}")
    finally:
        for p in proxies.values():
            p.stop()
    summary = {}
    for n in names:
        good = [r for r in runs[n] if "p50" in r]
        if good:
            summary[n] = {k: statistics.median(r[k] for r in good) for k in ["p50", "p99", "p999", "rps"]}
    ctx.results["scenarios"]["e"] = {"title": "Latency at fixed load (oha, HTTP/1.1)", "rate": rate,
                                     "runs": runs, "summary": summary, "dur": dur, "rounds": rounds,
                                     "conns": conns}


def perf_record(ctx, pid, dur, load):
    """Samples `pid` (cpu-clock) for `dur` s while `load()` runs; returns (perf.data path, load result)."""
    data = os.path.join(ctx.run, f"perf-{pid}.data")
    rec = subprocess.Popen(["perf", "record", "-e", "cpu-clock", "-F", "1999", "-g", "-p", str(pid),
                            "-o", data, "--", "sleep", str(dur)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    r = load()
    err = rec.communicate(timeout=dur + 60)[1]
    return data, r, err


def perf_lines(data, sort, limit=None):
    argv = ["perf", "report", "-i", data, "--stdio", "--no-children", "-g", "none", "--sort", sort]
    if limit:
        argv += ["--percent-limit", limit]
    rep = subprocess.run(argv, capture_output=True, text=True).stdout
    return [re.sub(r"(\s+-)*\s*$", "", l) for l in rep.splitlines() if l.strip() and not l.startswith("#")]


def kernel_share(lines):
    for l in lines:
        if "[kernel" in l:
            return float(l.split("%")[0])
    return 0.0


def scenario_p(ctx):
    """CPU profiles (perf, software cpu-clock event): weir's symbols under scenario a's load, and the
    kernel/user split of weir and a peer under the same load, with the CPU each spent per request."""
    if not shutil.which("perf"):
        ctx.results["meta"]["skipped"]["p"] = "perf not installed"
        return
    dur = 5 if ctx.quick else 10
    h2 = lambda port: (lambda: h2load(ctx, f"http://127.0.0.1:{port}/h2c/index.html", dur, 16, 10))
    h1 = lambda port: (lambda: wrk(ctx, f"http://127.0.0.1:{port}/h1/", dur, 32))
    splits = []
    symbols = {}
    for label, start, load in (("HTTP/2 (h2load -c16 -m10)", lambda: Weir(ctx), h2),
                               ("HTTP/2 (h2load -c16 -m10)", lambda: Haproxy(ctx, "haproxy-safe", "safe"), h2),
                               ("HTTP/1.1 (wrk -c32)", lambda: Weir(ctx), h1),
                               ("HTTP/1.1 (wrk -c32)", lambda: NginxProxy(ctx), h1)):
        px = start()
        name = "weir" if isinstance(px, Weir) else ("nginx" if isinstance(px, NginxProxy) else px.name)
        try:
            load(px.port)()  # warm-up
            # The process that serves: nginx's worker, not its master.
            served_by = proc_tree(px.pid)[-1]
            c0 = cpu_seconds(px.pid)
            data, r, err = perf_record(ctx, served_by, dur, load(px.port))
            cpu = cpu_seconds(px.pid) - c0
        finally:
            px.stop()
        dso = perf_lines(data, "dso")
        k = kernel_share(dso)
        splits.append((label, name, r["rps"], cpu / r["done"] * 1e5 if r["done"] else None, k, r["cmd"]))
        if name == "weir":
            symbols[label] = (perf_lines(data, "dso,symbol", "0.7"), dso, r, err)
    L = ["`perf record -e cpu-clock -F 1999 -g -p <proxy>` for each proxy in turn, "
         f"{dur} s each, under the load shown (req/s and CPU are under perf, so a little lower than in a and b). "
         "Hardware counters are not available on this VM, so these are sampled cpu-clock profiles.\n",
         "Where the CPU goes, per 100k requests (kernel = system calls and the loopback TCP stack; user = the "
         "proxy's own code and its libraries):\n",
         "| load | proxy | req/s | CPU s per 100k | kernel % | kernel s per 100k | user s per 100k |",
         "|---|---|---|---|---|---|---|"]
    for label, name, rps, c, k, _ in splits:
        ks = c * k / 100 if c is not None else None
        us = c - ks if c is not None else None
        L.append(f"| {label} | {name} | {rps:.0f} | {fmt(c, 3)} | {k:.1f} | {fmt(ks, 3)} | {fmt(us, 3)} |")
    for label, (lines, dso, r, err) in symbols.items():
        L.append(f"\nweir, {label}: `{r['cmd']}`. Self time by DSO and symbol (entries >= 0.7%):\n")
        L.append("```\n" + "\n".join(lines[:40]) + "\n```\n\nBy DSO:\n\n```\n" + "\n".join(dso[:8]) + "\n```")
        if not lines:
            L.append(f"\nperf produced no samples: {err[-500:]}")
    with open(os.path.join(ctx.out, "profile.md"), "w") as f:
        f.write("\n".join(L) + "\n")
    log("p: profile written")


def gen_scale(dirpath, n):
    shutil.rmtree(dirpath, ignore_errors=True)
    os.makedirs(dirpath)
    render("weir/00-base.yaml", os.path.join(dirpath, "00-base.yaml"), **base_ports())
    per_file = 500
    for f0 in range(0, n, per_file):
        docs = []
        for i in range(f0, min(n, f0 + per_file)):
            docs.append(f"""apiVersion: v1
kind: Service
metadata: {{name: svc-{i}, namespace: scale}}
spec:
  ports:
  - {{name: http, port: 80, targetPort: {H1_BACKEND_PORT}}}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: svc-{i}-1
  namespace: scale
  labels: {{kubernetes.io/service-name: svc-{i}}}
addressType: IPv4
ports:
- {{name: http, port: {H1_BACKEND_PORT}}}
endpoints:
- addresses: ["127.0.0.1"]
  conditions: {{ready: true}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: ing-{i}, namespace: scale}}
spec:
  ingressClassName: weir
  rules:
  - host: host-{i}.scale.example
    http:
      paths:
      - path: /
        pathType: Prefix
        backend:
          service: {{name: svc-{i}, port: {{name: http}}}}
""")
        with open(os.path.join(dirpath, f"scale-{f0 // per_file:04d}.yaml"), "w") as f:
            f.write("---\n".join(docs))


def write_edit(dirpath, i):
    tmp = os.path.join(dirpath, ".edit.tmp")
    with open(tmp, "w") as f:
        f.write(f"""apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {{name: edited, namespace: scale}}
spec:
  ingressClassName: weir
  rules:
  - host: edited.scale.example
    http:
      paths:
      - path: /edit-{i}
        pathType: Prefix
        backend:
          service: {{name: svc-0, port: {{name: http}}}}
""")
    os.replace(tmp, os.path.join(dirpath, "zz-edit.yaml"))


def scenario_f(ctx):
    sizes = [1000] if ctx.quick else [1000, 10000]
    n_edits = 20 if ctx.quick else 100
    rows = []
    for n in sizes:
        d = os.path.join(ctx.run, f"scale-{n}")
        gen_scale(d, n)
        write_edit(d, 0)
        w = Weir(ctx, name=f"weir-scale-{n}", manifests=d)
        ready = w.ready_s
        time.sleep(1)
        rss = vmrss_kib(w.pid)
        # check the routes are really there
        req = urllib.request.Request(f"http://127.0.0.1:{w.port}/", headers={"Host": f"host-{n - 1}.scale.example"})
        with urllib.request.urlopen(req, timeout=5) as r:
            last_status = r.status
        lat = []
        for i in range(1, n_edits + 1):
            s = time.time()
            write_edit(d, i)
            if wait_served(w.port, "edited.scale.example", f"/edit-{i}", s + 30):
                lat.append(time.time() - s)
        rss_after = vmrss_kib(w.pid)
        w.stop()
        row = {"ingresses": n, "ready_s": ready, "rss_mib": rss / 1024, "rss_after_edits_mib": rss_after / 1024,
               "edits": n_edits, "applied": len(lat), **latency_ms(lat), "last_host_status": last_status}
        rows.append(row)
        log(f"f {row}")
    ctx.results["scenarios"]["f"] = {"title": "Scale in manifest mode", "rows": rows}


# ---------------------------------------------------------------- charts and report

def chart(ctx, name, panels):
    """panels: [(title, ylabel, [(label, value)])] -> one PNG with one bar chart per panel."""
    if not shutil.which("gnuplot"):
        return None
    png = os.path.join(ctx.out, f"{name}.png")
    gp = [f"set terminal pngcairo size {520 * len(panels)},420 font ',9'" if has_cairo()
          else f"set terminal png size {520 * len(panels)},420",
          f"set output '{png}'", f"set multiplot layout 1,{len(panels)}",
          "set style data histograms", "set style fill solid 0.8 border -1", "set boxwidth 0.7",
          "set yrange [0:*]", "set xtics rotate by -30 nomirror", "set grid ytics", "unset key"]
    for i, (title, ylabel, data) in enumerate(panels):
        dat = os.path.join(ctx.out, f"{name}-{i}.dat")
        with open(dat, "w") as f:
            for lab, v in data:
                f.write(f"\"{lab}\" {v if v is not None else 0}\n")
        gp += [f"set title '{title}'", f"set ylabel '{ylabel}'",
               f"plot '{dat}' using 2:xtic(1) with histograms lc rgb '#4472c4', "
               f"'' using 0:2:(sprintf('%.3g',$2)) with labels offset 0,0.7"]
    gp.append("unset multiplot")
    script = os.path.join(ctx.out, f"{name}.gp")
    with open(script, "w") as f:
        f.write("\n".join(gp) + "\n")
    subprocess.run(["gnuplot", script], check=False)
    return os.path.basename(png)


_cairo = None


def has_cairo():
    global _cairo
    if _cairo is None:
        out = subprocess.run(["gnuplot", "-e", "set terminal"], capture_output=True, text=True)
        _cairo = "pngcairo" in (out.stdout + out.stderr)
    return _cairo


def fmt(v, nd=0):
    if v is None:
        return "n/a"
    return f"{v:,.{nd}f}"


def scale_chart(ctx, key, rows):
    """The chart of a scale scenario (f, g): ready time, memory and propagation p99 per size."""
    png = chart(ctx, f"scenario-{key}", [
        ("time to ready", "s", [(str(r["ingresses"]), r["ready_s"]) for r in rows]),
        ("VmRSS", "MiB", [(str(r["ingresses"]), r["rss_mib"]) for r in rows]),
        ("propagation p99", "ms", [(str(r["ingresses"]), r["p99_ms"]) for r in rows])])
    return [f"\n![scenario {key}](results/{png})\n"] if png else []


def report(ctx, started, finished):
    R = ctx.results
    sc = R["scenarios"]
    cpu = "unknown"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem = f.readline().split()[1]
    L = []
    L.append("# weir benchmark results\n")
    L.append(f"Generated by `bench/run.sh{' --quick' if ctx.quick else ''}` on {started:%Y-%m-%d}, "
             f"{started:%H:%M}–{finished:%H:%M} UTC. Every number below was measured in that run; "
             "raw per-run numbers are in `bench/results/raw.json`.\n")
    if ctx.quick:
        L.append("**This is a `--quick` run** (short durations, one round): treat the numbers as a smoke test, "
                 "not as a measurement to quote.\n")
    hl = []
    for key, label in [("a", "HTTP/2 → h2c (h2load)"), ("b", "HTTP/1.1 → HTTP/1.1 (wrk)")]:
        t = sc.get(key)
        if not t:
            continue
        wv = t["summary"]["weir"]
        for n, v in t["summary"].items():
            if n in ("weir", "direct") or not v["rps_median"]:
                continue
            cr = (wv["cpu_per_100k_median"] / v["cpu_per_100k_median"]
                  if v["cpu_per_100k_median"] and wv["cpu_per_100k_median"] else None)
            hl.append(f"| {label} | {n} | {fmt(wv['rps_median'])} | {fmt(v['rps_median'])} | "
                      f"{wv['rps_median'] / v['rps_median']:.2f} | {fmt(wv['cpu_per_100k_median'], 2)} | "
                      f"{fmt(v['cpu_per_100k_median'], 2)} | {fmt(cr, 2)} |")
    if hl:
        L.append("## Headline\n")
        L.append("Medians, one worker per proxy on the same core. Ratio > 1 in req/s favours weir; "
                 "ratio > 1 in CPU per request means weir spends more.\n")
        L.append("| scenario | peer | weir req/s | peer req/s | weir/peer req/s | weir CPU s/100k | peer CPU s/100k | weir/peer CPU per request |")
        L.append("|---|---|---|---|---|---|---|---|")
        L.extend(hl)
        L.append("")
    L.extend(targets.section(sc))
    L.append("## Machine and setup\n")
    L.append(f"- CPU: {os.cpu_count()} cores, `{cpu}`; memory {int(mem) // 1024} MiB; kernel `{os.uname().release}`")
    L.append(f"- Proxy under test pinned to CPU {ctx.proxy_cpu} (`taskset -c {ctx.proxy_cpu}`), "
             f"{ctx.workers} worker each: weir `--workers {ctx.workers}` "
             f"(threads seen in /proc: {R['meta'].get('weir_threads', {})}), HAProxy `nbthread {ctx.workers}`, "
             f"nghttpx `workers={ctx.workers}`, nginx `worker_processes {ctx.workers}`.")
    L.append(f"- Load generator (h2load / wrk / oha, one thread) and both backends pinned to CPU {ctx.load_cpu}. "
             "The backends are shared by every proxy: `nghttpd --no-tls -n 1` (h2c, 13-byte file) and "
             "nginx `worker_processes 1` (HTTP/1.1, `return 200` 13 bytes).")
    L.append("- Versions: " + "; ".join(f"{k} `{v}`" for k, v in R["meta"].get("versions", {}).items()))
    L.append("- Proxies are measured alternately (direct, A, B, C, direct, A, B, C, ...) with a 1 s unmeasured "
             "warm-up before each run, so drift on this shared machine (other builds may be running) "
             "affects every proxy alike; medians over rounds are reported with min–max.")
    L.append("- Proxy CPU = utime+stime from `/proc/PID/stat` (summed over the proxy's process tree, all threads) "
             "before/after the measured run, divided by the requests completed in it.\n")
    L.append("Commands that started the processes (configs rendered from `bench/templates/` into the run dir):\n")
    L.append("```")
    for k, v in ctx.cmds.items():
        L.append(f"{k}: {v}")
    L.append("```\n")

    def tp_section(key, peers_note):
        s = sc.get(key)
        if not s:
            return
        L.append(f"## {key}. {s['title']}\n")
        L.append(f"{s['rounds']} round(s) × {s['dur']} s per proxy, parameters {s.get('params')}. "
                 f"Client command (URL varies): `{s['runs']['weir'][0]['cmd']}`\n")
        L.append(peers_note + "\n")
        wv = s["summary"]["weir"]
        L.append("| target | req/s median (min–max) | proxy CPU s per 100k req | weir/peer req/s | weir/peer CPU per req | errors | non-2xx |")
        L.append("|---|---|---|---|---|---|---|")
        for n, v in s["summary"].items():
            ratio = wv["rps_median"] / v["rps_median"] if v["rps_median"] else None
            cr = (wv["cpu_per_100k_median"] / v["cpu_per_100k_median"]
                  if v["cpu_per_100k_median"] and wv["cpu_per_100k_median"] else None)
            L.append(f"| {n} | {fmt(v['rps_median'])} ({fmt(v['rps_min'])}–{fmt(v['rps_max'])}) | "
                     f"{fmt(v['cpu_per_100k_median'], 2)} | {fmt(ratio, 2) if n not in ('weir',) else '—'} | "
                     f"{fmt(cr, 2) if n not in ('weir', 'direct') else '—'} | {v['errors']} | {v['non2xx']} |")
        L.append("")
        L.append("Raw runs (req/s, proxy CPU s):\n")
        for n, rs in s["runs"].items():
            L.append(f"- {n}: " + ", ".join(f"r{r['round']} {r['rps']:.0f} req/s, {r['cpu_s']:.2f} s" for r in rs))
        unsat = [f"{n} r{r['round']} ({r['cpu_s']:.1f} s CPU in {s['dur']} s)" for n, rs in s["runs"].items()
                 if n != "direct" for r in rs if r["cpu_s"] < 0.9 * s["dur"]]
        if unsat:
            L.append("\nRuns where the proxy used < 90% of its core (another process on the machine, e.g. a "
                     "concurrent build or test run, took CPU, or the client was the limit); their req/s is "
                     "depressed, CPU per request is still comparable: " + "; ".join(unsat) + "\n")
        L.append("")
        for n, v in s["summary"].items():
            if n in ("weir", "direct") or not v["rps_median"]:
                continue
            d = (wv["rps_median"] / v["rps_median"] - 1) * 100
            c = ((wv["cpu_per_100k_median"] / v["cpu_per_100k_median"] - 1) * 100
                 if v["cpu_per_100k_median"] and wv["cpu_per_100k_median"] else None)
            L.append(f"- weir vs {n}: {'+' if d >= 0 else ''}{d:.0f}% req/s"
                     + (f", {'+' if c >= 0 else ''}{c:.0f}% CPU per request" if c is not None else "")
                     + (" (weir loses on throughput)" if d < 0 else ""))
        png = chart(ctx, f"scenario-{key}", [
            ("req/s (median)", "requests/s", [(n, v["rps_median"]) for n, v in s["summary"].items()]),
            ("proxy CPU per 100k requests", "CPU seconds", [(n, v["cpu_per_100k_median"])
                                                           for n, v in s["summary"].items() if n != "direct"])])
        if png:
            L.append(f"\n![scenario {key}](results/{png})\n")

    tp_section("a", "Peers: HAProxy with `proto h2` to the server and `http-reuse safe` / `always`; nghttpx with "
                    "`backend=...;;proto=h2` (h2c). `direct` = h2load straight to nghttpd (the ceiling of the "
                    "load core; its CPU column is empty because no proxy runs).")
    tp_section("b", "Peers: HAProxy (`http-reuse safe`, keep-alive to the server) and nginx "
                    "(`proxy_http_version 1.1`, upstream `keepalive 256`). `direct` = wrk straight to the nginx backend.")

    c = sc.get("c")
    if c:
        L.append("## c. Upstream connection reuse at steady load\n")
        L.append(f"Each row: a freshly started proxy, one {c['dur']} s run of the load, then upstream connections "
                 "opened during the run divided by requests completed. weir: delta of "
                 "`weir_upstream_connections_opened_total{service=~\".*bench-h2c.*\"}` with a BackendPolicy "
                 "`connectionPool.reuse` = mode. HAProxy: delta of the `connect` column of `show stat` for "
                 "server `be_h2c/s1` (stats socket) with `http-reuse` = mode.\n")
        for k, v in c["loads"].items():
            L.append(f"- `{k}`: {v}")
        L.append("")
        L.append("| load | proxy | reuse | requests | upstream conns opened | opened per request | req/s | errors | non-2xx |")
        L.append("|---|---|---|---|---|---|---|---|---|")
        for r in c["rows"]:
            pr = "n/a" if r["per_request"] is None else f"{r['per_request']:.5f}"
            L.append(f"| {r['load']} | {r['proxy']} | {r['mode']} | {r['requests']} | {fmt(r['opened'])} | "
                     f"{pr} | {fmt(r['rps'])} | {r['errors']} | {r['non2xx']} |")
        if c.get("limited"):
            L.append("\nBackends that allow 1 and 8 concurrent streams per connection (`nghttpd "
                     "--max-concurrent-streams=N`), h2load -c16 -m10 (160 streams in flight): requests/s, and "
                     "upstream connections opened during the measured run (after a 1 s warm-up).\n")
            L.append("| backend streams per connection | proxy | reuse | req/s | requests | conns opened | errors | non-2xx |")
            L.append("|---|---|---|---|---|---|---|---|")
            for r in c["limited"]:
                L.append(f"| {r['streams']} | {r['proxy']} | {r['mode']} | {fmt(r['rps'])} | {r['requests']} | "
                         f"{fmt(r['opened'])} | {r['errors']} | {r['non2xx']} |")
            L.append("")
        png = chart(ctx, "scenario-c", [
            (f"opened per 1000 req: {load}", "connections / 1000 requests",
             [(f"{r['proxy']}-{r['mode']}", (r['per_request'] or 0) * 1000) for r in c["rows"] if r["load"] == load])
            for load in c["loads"]])
        if png:
            L.append(f"\n![scenario c](results/{png})\n")

    d = sc.get("d")
    if d:
        L.append("## d. Reconfiguration under load\n")
        L.append(f"h2load (`{next(iter(d['rows'].values()))['cmd']}`) runs back to back in {d['chunk']} s chunks "
                 "while the routes are changed N times. weir: `20-churn.yaml` (an Ingress with a new host and path) "
                 "is rewritten atomically (temp file + rename), then the harness waits until "
                 "`weir_config_generation` advances. HAProxy: master-worker mode (`-W -S`), the config is rewritten "
                 "(a changed line) and the master gets SIGUSR2; the harness waits until `show proc` on the master "
                 "socket lists a new worker PID. Failed = h2load `failed` (includes `errored` and `timeout`).\n")
        L.append("| proxy | changes | applied | wall time s | apply p50 ms | apply p99 ms | requests done | succeeded | failed | errored | timeout | non-2xx | mean req/s |")
        L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for k, r in d["rows"].items():
            L.append(f"| {k} | {r['edits']} | {r['applied']} | {r['elapsed_s']:.1f} | {fmt(r['apply_p50_ms'], 1)} | "
                     f"{fmt(r['apply_p99_ms'], 1)} | {r['done']} | {r['succeeded']} | {r['failed']} | {r['errored']} | "
                     f"{r['timeout']} | {r['non2xx']} | {fmt(r['rps_mean'])} |")
        png = chart(ctx, "scenario-d", [
            ("failed+non-2xx requests during changes", "requests",
             [(k, r["failed"] + r["non2xx"]) for k, r in d["rows"].items()]),
            ("time to apply one change (p50)", "ms", [(k, r["apply_p50_ms"]) for k, r in d["rows"].items()])])
        if png:
            L.append(f"\n![scenario d](results/{png})\n")

    e = sc.get("e")
    if e and e["summary"]:
        L.append("## e. Latency at fixed load\n")
        L.append(f"oha at a fixed {e['rate']} req/s (50% of the slowest proxy's median in scenario b), "
                 f"{e['conns']} connections, HTTP/1.1, `--latency-correction`, {e['rounds']} round(s) × {e['dur']} s, "
                 f"alternating. Command: `{e['runs']['weir'][0]['cmd']}`. Added latency = proxy percentile − "
                 "direct percentile (medians over rounds). 64 connections, twice scenario b's 32: at half of b's rate "
                 "on 16, every connection would be as busy as at the maximum and oha's wait for a free connection would "
                 "make the tail.\n")
        dv = e["summary"].get("direct")
        L.append("| target | p50 ms | p99 ms | p99.9 ms | added p50 ms | added p99 ms | added p99.9 ms | achieved req/s |")
        L.append("|---|---|---|---|---|---|---|---|")
        for n, v in e["summary"].items():
            add = (lambda k: fmt(v[k] - dv[k], 3) if dv and n != "direct" else "—")
            L.append(f"| {n} | {v['p50']:.3f} | {v['p99']:.3f} | {v['p999']:.3f} | {add('p50')} | {add('p99')} | "
                     f"{add('p999')} | {fmt(v['rps'])} |")
        png = chart(ctx, "scenario-e", [
            (f"added latency {p} (ms)", "ms", [(n, v[k] - dv[k]) for n, v in e["summary"].items() if n != "direct"])
            for p, k in [("p50", "p50"), ("p99", "p99"), ("p99.9", "p999")]] if dv else [])
        if png:
            L.append(f"\n![scenario e](results/{png})\n")

    f = sc.get("f")
    if f:
        L.append("## f. Scale in manifest mode (weir only)\n")
        L.append("N Ingresses, each with its own Service and EndpointSlice (500 per file), plus the bench base file. "
                 "Ready = from process start to `/readyz` 200 (polled every 10 ms). RSS = VmRSS 1 s after ready. "
                 "Propagation = rewrite (temp + rename) of a one-Ingress file with a new path → the first request "
                 "to that path that weir routes (polled every 2 ms; before, weir answers 404 no route).\n")
        L.append("| Ingresses | ready s | VmRSS MiB | VmRSS after edits MiB | edits applied | propagation p50 ms | p99 ms | max ms |")
        L.append("|---|---|---|---|---|---|---|---|")
        for r in f["rows"]:
            L.append(f"| {r['ingresses']} | {r['ready_s']:.2f} | {r['rss_mib']:.1f} | {r['rss_after_edits_mib']:.1f} | "
                     f"{r['applied']}/{r['edits']} | {fmt(r['p50_ms'], 1)} | {fmt(r['p99_ms'], 1)} | {fmt(r['max_ms'], 1)} |")
        L.extend(scale_chart(ctx, "f", f["rows"]))

    g = sc.get("g")
    if g:
        L.extend(cluster_scale.report(g, fmt))
        L.extend(scale_chart(ctx, "g", g["rows"]))

    missing = [k for k in "abcdefg" if k not in sc]
    if missing:
        L.append("## Not measured in this run\n")
        for k in missing:
            L.append(f"- scenario {k}: {R['meta'].get('skipped', {}).get(k, 'not run')}")
        L.append("")
    if R["meta"].get("profile"):
        L.append("## Profile\n")
        L.append(R["meta"]["profile"])
    return "\n".join(L) + "\n"


def versions(ctx):
    def first(cmd):
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=10)
            return (p.stdout + p.stderr).strip().splitlines()[0]
        except Exception as e:
            return f"? ({e})"
    return {"weir": first([ctx.weir, "--version"]), "haproxy": first(["haproxy", "-v"]),
            "nghttpx": first(["nghttpx", "--version"]), "nghttpd/h2load": first(["h2load", "--version"]),
            "nginx": first(["nginx", "-v"]), "wrk": first(["wrk", "-v"]), "oha": first([ctx.oha, "--version"])}


def report_only(ctx):
    with open(os.path.join(ctx.out, "raw.json")) as f:
        ctx.results = json.load(f)
    meta = ctx.results["meta"]
    ctx.quick = meta.get("quick", ctx.quick)
    ctx.cmds = meta.get("cmds") or {}
    if not ctx.cmds:  # raw.json from before cmds were saved: take them from the last report
        with open(os.path.join(BENCH, "RESULTS.md")) as f:
            text = f.read()
        block = text.split("Commands that started the processes", 1)[1].split("```")[1]
        for line in block.strip().splitlines():
            k, v = line.split(": ", 1)
            ctx.cmds[k] = v
    prof = os.path.join(ctx.out, "profile.md")
    if os.path.exists(prof):
        with open(prof) as f:
            meta["profile"] = f.read()
    started = datetime.datetime.fromisoformat(meta["started"])
    if "finished" in meta:
        finished = datetime.datetime.fromisoformat(meta["finished"])
    else:  # the run ended when it last wrote raw.json
        finished = datetime.datetime.fromtimestamp(os.path.getmtime(os.path.join(ctx.out, "raw.json")),
                                                   datetime.timezone.utc)
    with open(os.path.join(BENCH, "RESULTS.md"), "w") as f:
        f.write(report(ctx, started, finished))
    log("rewrote bench/RESULTS.md from results/raw.json")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--weir")
    ap.add_argument("--oha")
    ap.add_argument("--run-dir")
    ap.add_argument("--out", default=os.path.join(BENCH, "results"))
    ap.add_argument("--only", default="abcdefgp", help="scenario letters to run, e.g. abc")
    ap.add_argument("--reconfigs", type=int, default=1000)
    ap.add_argument("--report-only", action="store_true",
                    help="rewrite RESULTS.md and charts from results/raw.json without measuring")
    args = ap.parse_args()
    ctx = Ctx(args)
    ctx.out = args.out
    if args.report_only:
        return report_only(ctx)
    if not (args.weir and args.oha and args.run_dir):
        ap.error("--weir, --oha and --run-dir are required (bench/run.sh passes them)")
    os.makedirs(ctx.out, exist_ok=True)
    for old in os.listdir(ctx.out):  # never report a number from an earlier run
        os.remove(os.path.join(ctx.out, old))
    shutil.rmtree(ctx.run, ignore_errors=True)
    os.makedirs(ctx.run)
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    started = datetime.datetime.now(datetime.timezone.utc)
    ctx.results["meta"]["versions"] = versions(ctx)
    ctx.results["meta"]["started"] = started.isoformat()
    ctx.results["meta"]["skipped"] = {}
    start_backends(ctx)
    fns = {"a": scenario_a, "b": scenario_b, "c": scenario_c, "d": scenario_d, "e": scenario_e, "f": scenario_f,
           "g": lambda ctx: cluster_scale.run(ctx, sys.modules[__name__]),
           "p": scenario_p}
    for k in args.only:
        log(f"scenario {k}")
        t = time.time()
        try:
            fns[k](ctx)
        except Exception as ex:  # keep going; the report says what failed
            import traceback
            traceback.print_exc()
            ctx.results["meta"]["skipped"][k] = f"failed: {ex!r}"
        log(f"scenario {k} took {time.time() - t:.0f}s")
        ctx.results["meta"]["cmds"] = ctx.cmds
        ctx.results["meta"]["quick"] = ctx.quick
        with open(os.path.join(ctx.out, "raw.json"), "w") as f:
            json.dump(ctx.results, f, indent=1, default=str)
    prof = os.path.join(ctx.out, "profile.md")
    if os.path.exists(prof):
        with open(prof) as f:
            ctx.results["meta"]["profile"] = f.read()
    finished = datetime.datetime.now(datetime.timezone.utc)
    ctx.results["meta"]["finished"] = finished.isoformat()
    with open(os.path.join(ctx.out, "raw.json"), "w") as f:
        json.dump(ctx.results, f, indent=1, default=str)
    text = report(ctx, started, finished)
    with open(os.path.join(BENCH, "RESULTS.md"), "w") as f:
        f.write(text)
    log("wrote bench/RESULTS.md")


if __name__ == "__main__":
    main()
