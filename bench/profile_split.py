#!/usr/bin/env python3
"""Where a proxy's CPU goes, by component, from `perf script -F ip,sym,dso` output of a
`perf record --call-graph dwarf` profile (standard input).

Each sample counts once. A kernel leaf counts as kernel; a user sample goes to the component
of the innermost frame whose own path belongs to one (so memcpy and inlined helpers count for
whoever called them). Used by bench/profile-split.sh.
"""
import collections
import sys

# Checked per frame, first match wins: weir's own code before the libraries it names.
COMPONENTS = [
    ("weir request path (weir_dataplane)", ("weir_dataplane::",)),
    ("hpack (h2 crate)", ("h2::hpack",)),
    ("hyper HTTP/1.1 server", ("hyper::proto::h1",)),
    ("hyper HTTP/2 server", ("hyper::proto::h2", "hyper::server::conn::http2")),
    ("h2 crate: frames, streams, flow control", ("h2::",)),
    ("tokio runtime and I/O driver", ("tokio::", "mio::")),
    ("allocator (mimalloc)", ("mi_", "_mi_", "mimalloc")),
]


def component(frames):
    for frame in frames:
        # The symbol's own path: `<a::B as c::D>::f` is a's; generic arguments (which name
        # the whole stack of types, weir's included) do not count, and a frame with no path
        # (an inlined `poll_inner<...>`) defers to its caller.
        path = frame.lstrip("<")
        for name, marks in COMPONENTS:
            if any(path.startswith(m) for m in marks):
                return name
    return "other user code (libc, std, bytes, http)"


def main():
    counts = collections.Counter()
    total = 0
    for sample in sys.stdin.read().split("\n\n"):
        lines = [l.strip() for l in sample.strip().splitlines() if l.strip()]
        if not lines:
            continue
        total += 1
        if "[kernel" in lines[0]:
            counts["kernel (system calls, loopback TCP)"] += 1
            continue
        counts[component([l.split(" ", 1)[-1] for l in lines])] += 1
    if not total:
        sys.exit("no samples on standard input")
    print(f"| component | share of the proxy's CPU |")
    print("|---|---|")
    for name, n in counts.most_common():
        print(f"| {name} | {100 * n / total:.1f}% |")
    print(f"\n{total} samples.")


if __name__ == "__main__":
    main()
