#!/usr/bin/env python3
"""Helpers for bench/origination/run.sh (standard library only).

  proc PID                  "<cpu_ns>" of PID and all its descendants (schedstat of every thread)
  h2load FILE               "<req_per_s> <succeeded> <failed> <errored>" from h2load's output
  latency FILE              "<count> <p50_ms> <p99_ms>" of curl -w '%{num_connects} %{http_code} %{time_total}'
                            lines, counting only 200s that reused the kept-alive connection
  accepts URL               nginx stub_status "accepts" counter
  summarize RESULTS META    the markdown table (medians over reps, ratios taken within a rep)
"""
import os
import re
import statistics
import sys
import urllib.request


def proc_cpu_ns(pid):
    children = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            children.setdefault(ppid, []).append(int(entry))
    todo, total = [pid], 0
    while todo:
        p = todo.pop()
        todo.extend(children.get(p, []))
        try:
            for tid in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{tid}/schedstat") as f:
                    total += int(f.read().split()[0])
        except (OSError, ValueError):
            continue
    return total


def percentile(values, q):
    """Nearest-rank percentile of an ascending list."""
    rank = max(1, -(-q * len(values) // 100))
    return values[min(rank, len(values)) - 1]


def h2load(path):
    text = open(path).read()
    rate = re.search(r"finished in [0-9.]+m?s, ([0-9.]+) req/s", text)
    counts = re.search(r"requests: \d+ total, \d+ started, \d+ done, (\d+) succeeded, (\d+) failed, (\d+) errored", text)
    if not rate or not counts:
        return "nan 0 0 0"
    return " ".join([rate.group(1), *counts.groups()])


def latency(path):
    values = []
    for line in open(path):
        parts = line.split()
        if len(parts) == 3 and parts[0] == "0" and parts[1] == "200":
            values.append(float(parts[2]) * 1000)
    values.sort()
    if not values:
        return "0 nan nan"
    return f"{len(values)} {percentile(values, 50):.3f} {percentile(values, 99):.3f}"


def accepts(url):
    text = urllib.request.urlopen(url, timeout=5).read().decode()
    return text.splitlines()[2].split()[0]  # "server accepts handled requests" / " a h r"


def summarize(results_path, meta_path):
    meta = dict(line.rstrip("\n").split("\t", 1) for line in open(meta_path) if "\t" in line)
    values = {}  # (path, metric) -> {rep: float}
    for line in open(results_path):
        rep, path, metric, value = line.rstrip("\n").split("\t")
        try:
            v = float(value)
        except ValueError:
            continue
        if v == v:
            values.setdefault((path, metric), {})[rep] = v

    def med(p, m):
        vals = list(values.get((p, m), {}).values())
        return statistics.median(vals) if vals else None

    def within_rep(p, m, op):
        mine, ref = values.get((p, m), {}), values.get(("direct", m), {})
        vals = [op(v, ref[r]) for r, v in mine.items() if r in ref and ref[r]]
        return statistics.median(vals) if vals else None

    def f(v, d):
        return "n/a" if v is None else f"{v:.{d}f}"

    paths = meta["paths"].split()
    out = [f"date={meta['date']}  nproc={meta['nproc']}  reps={meta['reps']}  keep-alive n={meta['ka_n']} c={meta['ka_c']}  "
           f"latency n={meta['req_n']} @{meta['req_rate']}/s  load avg start/end: {meta['load_start']} / {meta.get('load_end', '?')}",
           "",
           f"| path | keep-alive req/s (c={meta['ka_c']}) | request p50 / p99 ms @{meta['req_rate']}/s | added p50 ms "
           f"| proxy CPU us / req | origin TLS conns opened per keep-alive run |",
           "|---|---|---|---|---|---|"]
    for p in paths:
        rate = f(med(p, "ka_rate"), 0)
        lat = f"{f(med(p, 'req_p50_ms'), 2)} / {f(med(p, 'req_p99_ms'), 2)}"
        added, cpu = "", ""
        if p != "direct":
            r = within_rep(p, "ka_rate", lambda a, b: a / b)
            rate += f" ({r:.2f}x)" if r is not None else ""
            r50 = within_rep(p, "req_p50_ms", lambda a, b: a / b)
            r99 = within_rep(p, "req_p99_ms", lambda a, b: a / b)
            if r50 is not None and r99 is not None:
                lat += f" ({r50:.1f}x / {r99:.1f}x)"
            d = within_rep(p, "req_p50_ms", lambda a, b: a - b)
            added = "n/a" if d is None else f"+{d:.2f}" if d >= 0 else f"{d:.2f}"
            cpu = f(med(p, "cpu_us_per_req"), 1)
        out.append(f"| {p} | {rate} | {lat} | {added} | {cpu} | {f(med(p, 'origin_conns'), 0)} |")
    errors = [f"{p} {m}={','.join(str(int(v)) for v in vals.values())}"
              for (p, m), vals in sorted(values.items()) if m.endswith("_errors") and any(vals.values())]
    out.append("")
    out.append("Cells: medians over reps; (Nx) and added p50 are taken against direct within each rep, then the median.")
    if errors:
        out.append("Errors (per rep): " + "; ".join(errors))
    return "\n".join(out)


def main(argv):
    if len(argv) < 3:
        sys.exit(__doc__)
    cmd, arg = argv[1], argv[2]
    if cmd == "proc":
        print(proc_cpu_ns(int(arg)))
    elif cmd == "h2load":
        print(h2load(arg))
    elif cmd == "latency":
        print(latency(arg))
    elif cmd == "accepts":
        print(accepts(arg))
    elif cmd == "summarize":
        print(summarize(arg, argv[3]))
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
