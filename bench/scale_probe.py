#!/usr/bin/env python3
"""Scenario f on its own, on non-default ports: weir in manifest mode with N Ingresses, then
100 rewrites of one small file, timing each until `weir_config_generation` increments.

Usage: bench/scale_probe.py WEIR_BINARY N [N ...] [--edits 100] [--dir DIR] [--cpu 1]

Reuses the manifest generator and edit writer of bench/harness.py (same files as scenario f)
and measures the same way: poll admin /metrics every 2 ms until the generation moves.
"""
import argparse
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from harness import gen_scale, write_edit  # noqa: E402

HTTP, HTTPS, ADMIN = 18001, 18441, 19901


def get(path, port=ADMIN, host=None, timeout=5):
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if host:
        req.add_header("Host", host)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, ""


def generation():
    _, text = get("/metrics")
    for line in text.splitlines():
        if line.startswith("weir_config_generation "):
            return float(line.split()[1])
    return 0.0


def rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def pct(values, q):
    values = sorted(values)
    return values[min(len(values) - 1, int(len(values) * q))] * 1e3 if values else None


def probe(weir, n, edits, base, cpu):
    d = os.path.join(base, f"scale-{n}")
    gen_scale(d, n)
    write_edit(d, 0)
    log = open(os.path.join(base, f"weir-{n}.log"), "wb")
    argv = ["taskset", "-c", cpu, weir, "run", "--manifests", d,
            "--http-listen", f"127.0.0.1:{HTTP}", "--https-listen", f"127.0.0.1:{HTTPS}",
            "--admin-listen", f"127.0.0.1:{ADMIN}", "--log-level", "warn"]
    env = dict(os.environ, TOKIO_WORKER_THREADS="1")
    t0 = time.time()
    p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        while True:
            if p.poll() is not None:
                raise RuntimeError(f"weir exited; see {log.name}")
            try:
                if get("/readyz", timeout=1)[0] == 200:
                    break
            except OSError:
                pass
            time.sleep(0.01)
        ready = time.time() - t0
        time.sleep(1)
        rss = rss_mib(p.pid)
        status, _ = get("/", port=HTTP, host=f"host-{n - 1}.scale.example")
        s = time.time()
        metrics_bytes = len(get("/metrics")[1])
        scrape_ms = (time.time() - s) * 1e3
        lat = []
        for i in range(1, edits + 1):
            g0 = generation()
            s = time.time()
            write_edit(d, i)
            while time.time() - s < 30:
                if generation() > g0:
                    lat.append(time.time() - s)
                    break
                time.sleep(0.002)
        time.sleep(2)
        rss_after = rss_mib(p.pid)
        edited, _ = get(f"/edit-{edits}", port=HTTP, host="edited.scale.example")
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(15)
    return {"ingresses": n, "ready_s": round(ready, 3), "rss_mib": round(rss, 1),
            "rss_after_edits_mib": round(rss_after, 1), "applied": len(lat), "edits": edits,
            "p50_ms": round(pct(lat, 0.5), 1), "p99_ms": round(pct(lat, 0.99), 1),
            "max_ms": round(max(lat) * 1e3, 1), "last_host_status": status,
            "edited_route_status": edited, "metrics_bytes": metrics_bytes,
            "scrape_ms": round(scrape_ms, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("weir")
    ap.add_argument("sizes", type=int, nargs="+")
    ap.add_argument("--edits", type=int, default=100)
    ap.add_argument("--dir", default=os.path.expanduser("~/.cache/weir/scale-probe"))
    ap.add_argument("--cpu", default="1")
    args = ap.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    for n in args.sizes:
        print(json.dumps(probe(args.weir, n, args.edits, args.dir, args.cpu)), flush=True)


if __name__ == "__main__":
    main()
