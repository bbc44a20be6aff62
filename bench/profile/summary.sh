#!/usr/bin/env bash
# Prints what a `perf record --call-graph dwarf` profile of the gateway says: the costliest
# functions by self time (kernel symbols included), then the samples by component
# (attribute.py), in microseconds per unit when the CPU per unit under perf is given.
#
#   bench/profile/summary.sh PERF_DATA [US_PER_UNIT UNIT]
#
# bench/profile/run.sh (passthrough) and bench/origination/run.sh --profile (the http listener)
# both print their profiles with it.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
data=$1; us=${2:-}; unit=${3:-unit}
echo "--- self time, top 35 (kernel symbols included)"
perf report -i "$data" --no-children --sort symbol --stdio 2>/dev/null | grep -E '^ +[0-9.]+%' | head -35 \
    | swift demangle --simplified | cut -c1-200 || true
echo "--- by component (bench/profile/attribute.py: each sample to the innermost frame naming one)${us:+, per $unit under perf}"
perf script -i "$data" -F comm,tid,ip,sym --no-inline 2>/dev/null | swift demangle --simplified \
    | python3 "$here/attribute.py" $us || true
