#!/usr/bin/env python3
"""The CONNECT bench's table: medians over reps per proxy, and Corridor's ratios to the better peer.

  summarize.py RESULTS.tsv CONNS

RESULTS.tsv rows: rep, proxy (corridor, corridor-b when a second binary is measured, corridor-nio,
squid, tinyproxy), test (conn | bulk | idle), count (connections ok, bytes, tunnels
held), failed, seconds, value (CPU ns for conn and bulk, RSS KiB growth for idle).
"""
import statistics
import sys

PEERS = ("squid", "tinyproxy")


def main():
    path, conns = sys.argv[1], int(sys.argv[2])
    rows = [line.rstrip("\n").split("\t") for line in open(path) if line.strip()]
    per = {}
    for rep, proxy, test, count, failed, seconds, value in rows:
        count, failed, seconds, value = int(count), int(failed), float(seconds), int(value)
        entry = per.setdefault(proxy, {"rate": [], "conn": [], "gib": [], "idle": [], "failed": 0})
        if test == "conn" and count > 0:
            entry["rate"].append(count / seconds)
            entry["conn"].append(value / 1e9 * 10_000 / count)
            entry["failed"] += failed
        elif test == "bulk" and count > 0:
            entry["gib"].append(value / 1e9 / (count / 2**30))
        elif test == "idle" and count > 0:
            entry["idle"].append(value / count)

    def median(values):
        return statistics.median(values) if values else float("nan")

    table = {p: {k: median(v) for k, v in e.items() if k != "failed"} | {"failed": e["failed"]} for p, e in per.items()}
    print(f"\n{conns} tunnels per rep; medians over reps\n")
    print("| proxy | new tunnels/s | CPU s / 10k tunnels | CPU s / GiB | KiB / idle tunnel | failed |")
    print("|---|---|---|---|---|---|")
    for proxy in ("corridor", "corridor-b", "corridor-nio", "squid", "tinyproxy"):
        if proxy not in table:
            continue
        t = table[proxy]
        print(f"| {proxy} | {t['rate']:.0f} | {t['conn']:.2f} | {t['gib']:.3f} | {t['idle']:.2f} | {t['failed']} |")
    peers = [table[p] for p in PEERS if p in table]
    if "corridor" in table and peers:
        best_conn = min(p["conn"] for p in peers)
        best_gib = min(p["gib"] for p in peers)
        c = table["corridor"]
        print(f"\ncorridor (splice) / better peer: CPU per 10k tunnels {c['conn'] / best_conn:.2f}x (target <= 0.5x), "
              f"CPU per GiB {c['gib'] / best_gib:.2f}x (target <= 0.5x), {c['idle']:.2f} KiB per idle tunnel (target <= 1.5)")
    if "corridor" in table and "corridor-b" in table:
        a, b = table["corridor"], table["corridor-b"]
        print(f"corridor-b / corridor (CORRIDOR_BIN_B against CORRIDOR_BIN): CPU per 10k tunnels {b['conn'] / a['conn']:.2f}x, "
              f"CPU per GiB {b['gib'] / a['gib']:.2f}x, idle tunnel {b['idle']:.2f} against {a['idle']:.2f} KiB")


if __name__ == "__main__":
    main()
