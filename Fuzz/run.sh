#!/usr/bin/env bash
# Coverage-guided fuzzing with libFuzzer (Swift's -sanitize=fuzzer, with AddressSanitizer):
#   Fuzz/run.sh TARGET [SECONDS]     one target, for SECONDS (default 60)
#   Fuzz/run.sh all [SECONDS]        every target in turn (what .ci/run does)
# TARGET: client-hello hello-retry connect-head connection-engine http-head config kube-objects kubeconfig.
# Builds into .build-fuzz, starts from Fuzz/corpus/TARGET (and examples/ for config), uses
# Fuzz/dictionaries/TARGET.dict where there is one. New inputs libFuzzer finds go to a scratch
# folder (add the interesting ones to Fuzz/corpus/TARGET by hand); a crash or a broken invariant
# stops the run, exits non-zero and leaves the input in Fuzz/crashes/, to be committed into
# Fuzz/corpus/TARGET as a regression input once fixed (the test suite replays every corpus).
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(client-hello hello-retry connect-head connection-engine http-head config kube-objects kubeconfig)
if [ $# -lt 1 ]; then sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 2; fi
target=$1
seconds=${2:-60}
case $seconds in ''|*[!0-9]*) echo "Fuzz/run.sh: SECONDS must be a whole number, got '$seconds'" >&2; exit 2 ;; esac
if [ "$target" = all ]; then
    for each in "${targets[@]}"; do "$0" "$each" "$seconds"; done
    exit 0
fi
case " ${targets[*]} " in *" $target "*) ;; *) echo "Fuzz/run.sh: unknown target '$target' (one of: ${targets[*]}, all)" >&2; exit 2 ;; esac

flags=(--scratch-path .build-fuzz -Xswiftc -sanitize=fuzzer,address -Xswiftc -DFUZZING -Xswiftc -parse-as-library)
swift build "${flags[@]}" --product "fuzz-$target" >&2
binary="$(swift build "${flags[@]}" --show-bin-path)/fuzz-$target"

scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
mkdir -p Fuzz/crashes
corpora=("$scratch" "Fuzz/corpus/$target")
[ "$target" = config ] && corpora+=(examples)
options=(-max_total_time="$seconds" -timeout=10 -rss_limit_mb=4096 -max_len=16384 -print_final_stats=1
         -artifact_prefix="Fuzz/crashes/$target-")
[ -f "Fuzz/dictionaries/$target.dict" ] && options+=(-dict="Fuzz/dictionaries/$target.dict")
echo "fuzzing $target for ${seconds}s"
# ASan: a leak at exit is not a finding here (the Swift runtime keeps metadata caches); the
# Swift backtracer is off (libFuzzer reports the crash, and the backtracer trips ASan itself).
# libFuzzer's running commentary goes to a log; its last lines are shown, all of them on failure.
log="$scratch.log"
if SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 "$binary" "${options[@]}" "${corpora[@]}" > "$log" 2>&1; then
    grep -E "^Done|stat::number_of_executed_units|stat::peak_rss_mb|cov: " "$log" | tail -n 3
    rm -f "$log"
else
    status=$?
    tail -n 80 "$log"
    echo "Fuzz/run.sh: $target failed (exit $status); the input is in Fuzz/crashes/ (full log: $log)" >&2
    exit $status
fi
