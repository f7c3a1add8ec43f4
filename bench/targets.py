"""The issue's performance targets, checked against one run's raw results (for RESULTS.md).

Each row: what the target asks, what this run measured, whether it is met, and by how much it
is missed. A target whose scenario did not run says so.
"""


def _ratio(a, b):
    return a / b if a is not None and b else None


def rows(sc):
    out = []

    def add(name, measured, goal, met, gap):
        out.append((name, measured, goal, met, gap))

    def skip(name, goal, scenario):
        add(name, f"scenario {scenario} not run", goal, None, "")

    a = sc.get("a", {}).get("summary")
    if a:
        w = a["weir"]
        for peer, want in (("haproxy-safe", 1.2), ("haproxy-always", 1.2), ("nghttpx", 1.0)):
            if peer not in a:
                continue
            r = _ratio(w["rps_median"], a[peer]["rps_median"])
            add(f"HTTP/2 req/s vs {peer}", f"{r:.2f}×", f"≥ {want}×", r >= want,
                "" if r >= want else f"{(want / r - 1) * 100:.0f}% more req/s needed")
        for peer in ("haproxy-safe", "haproxy-always"):
            if peer not in a:
                continue
            c = _ratio(w["cpu_per_100k_median"], a[peer]["cpu_per_100k_median"])
            if c is not None:
                add(f"HTTP/2 CPU per request vs {peer}", f"{c:.2f}×", "≤ 1.0×", c <= 1.0,
                    "" if c <= 1.0 else f"{(1 - 1 / c) * 100:.0f}% less CPU per request needed")
    else:
        skip("HTTP/2 throughput and CPU", "≥ 1.2× HAProxy, ≥ 1.0× nghttpx, CPU ≤ HAProxy", "a")

    b = sc.get("b", {}).get("summary")
    if b and "nginx" in b:
        r = _ratio(b["weir"]["rps_median"], b["nginx"]["rps_median"])
        add("HTTP/1.1 req/s vs nginx", f"{r:.2f}×", "≥ 1.0×", r >= 1.0,
            "" if r >= 1.0 else f"{(1 / r - 1) * 100:.0f}% more req/s needed")
    else:
        skip("HTTP/1.1 req/s vs nginx", "≥ 1.0×", "b")

    e = sc.get("e", {}).get("summary")
    if e and "direct" in e and "haproxy" in e:
        dv = e["direct"]["p99"]
        we, he = e["weir"]["p99"] - dv, e["haproxy"]["p99"] - dv
        measured = f"{we:.3f} ms vs {he:.3f} ms"
        if min(we, he) < 0:
            # A proxied p99 below the direct one: the tail is the machine's stalls, not the proxies.
            add("p99 added latency at 50% load vs HAProxy", measured, "≤ HAProxy's", None,
                f"inconclusive: a proxied p99 is below the direct p99 ({dv:.3f} ms); stalls dominate the tail")
        else:
            add("p99 added latency at 50% load vs HAProxy", measured, "≤ HAProxy's", we <= he,
                "" if we <= he else f"{we - he:.3f} ms over")
    else:
        skip("p99 added latency vs HAProxy", "≤ HAProxy's", "e")

    d = sc.get("d", {}).get("rows")
    if d and "weir" in d:
        r = d["weir"]
        bad = r["failed"] + r["non2xx"]
        add("failed requests over route changes", f"{bad} over {r['applied']} changes", "0 over 1000",
            bad == 0 and r["applied"] >= 1000, "" if bad == 0 else f"{bad} failed")
    else:
        skip("failed requests over 1000 route changes", "0", "d")

    for key, label in (("f", "manifests"), ("g", "API server")):
        rows_ = {r["ingresses"]: r for r in sc.get(key, {}).get("rows", [])}
        r = rows_.get(10000)
        if not r:
            skip(f"10k Ingresses ({label})", "p99 ≤ 100 ms, RSS ≤ 150 MiB, ready ≤ 2 s", key)
            continue
        p99 = r["p99_ms"]
        add(f"10k Ingresses ({label}): propagation p99", f"{p99:.1f} ms" if p99 is not None else "none applied",
            "≤ 100 ms", p99 is not None and p99 <= 100 and r["applied"] == r["edits"],
            "" if p99 is not None and p99 <= 100 else (f"{p99 - 100:.1f} ms over" if p99 else "no edit applied"))
        rss = max(r["rss_mib"], r["rss_after_edits_mib"])
        add(f"10k Ingresses ({label}): resident memory", f"{rss:.1f} MiB (max of after ready, after edits)",
            "≤ 150 MiB", rss <= 150, "" if rss <= 150 else f"{rss - 150:.1f} MiB over")
        add(f"10k Ingresses ({label}): first ready", f"{r['ready_s']:.2f} s", "≤ 2 s", r["ready_s"] <= 2,
            "" if r["ready_s"] <= 2 else f"{r['ready_s'] - 2:.2f} s over")

    c = sc.get("c", {}).get("rows")
    if c:
        safe = [r for r in c if r["proxy"] == "weir" and r["mode"] == "safe"]
        worst = max((r["per_request"] or 0) * 1000 for r in safe) if safe else None
        if worst is not None:
            add("upstream connections opened per 1000 requests (default `safe`)", f"{worst:.3f} (worst load)",
                "≤ 1", worst <= 1, "" if worst <= 1 else f"{worst - 1:.3f} over")
    else:
        skip("connection reuse", "≤ 1 per 1000 requests", "c")
    return out


def section(sc):
    L = ["## Targets\n",
         "The issue's targets against this run (computed from `results/raw.json` by `bench/targets.py`).\n",
         "| target | measured | goal | met | gap |", "|---|---|---|---|---|"]
    for name, measured, goal, met, gap in rows(sc):
        mark = "n/a" if met is None else ("yes" if met else "**no**")
        L.append(f"| {name} | {measured} | {goal} | {mark} | {gap} |")
    L.append("")
    return L
