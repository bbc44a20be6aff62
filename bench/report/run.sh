#!/usr/bin/env bash
# corridor report over a large access log: records per second and peak memory (VmHWM).
#   bench/report/run.sh [MILLIONS]      default 10 (million records); needs the release binary
# Generates the log once (bench/report/generate.py: realistic records of 200 workloads, 2,000
# destinations, allow/deny/audit, signals, a month of timestamps) into $REPORT_BENCH_DIR (default
# /tmp/corridor-report-bench), then runs the report in each format and prints the figures.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
millions=${1:-10}
dir=${REPORT_BENCH_DIR:-/tmp/corridor-report-bench}
mkdir -p "$dir"
bin="$root/.build/release/corridor"
[ -x "$bin" ] || (cd "$root" && swift build -c release --static-swift-stdlib --product corridor >/dev/null)
log="$dir/access-${millions}m.log"
if [ ! -s "$log" ]; then
    echo "generating $millions million records into $log"
    python3 "$root/bench/report/generate.py" "$((millions * 1000000))" > "$log"
fi
size=$(stat -c %s "$log")
echo "log: $(awk -v s="$size" 'BEGIN {printf "%.2f GiB", s / 1073741824}'), $millions million records"
for format in ${REPORT_BENCH_FORMATS:-json html}; do
    start=$(date +%s.%N)
    /usr/bin/time -f "%M" -o "$dir/rss" "$bin" report --config "$root/examples/quickstart.yaml" --format "$format" -o "$dir/report.$format" "$log" 2>"$dir/err" || { cat "$dir/err"; exit 1; }
    end=$(date +%s.%N)
    awk -v s="$start" -v e="$end" -v n="$((millions * 1000000))" -v rss="$(tail -1 "$dir/rss")" -v f="$format" \
        'BEGIN {printf "%s: %.1f s, %.0f records/s, peak RSS %.1f MiB\n", f, e - s, n / (e - s), rss / 1024}'
done
