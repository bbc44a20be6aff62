#!/usr/bin/env bash
# One command: build Corridor in release mode and measure it beside HAProxy, nginx and Squid
# with ../shared/bench/peers/run.sh (root needed; it installs the peers from Debian's packages).
#   bench/run.sh              # full run, ~6 min after the build
#   bench/run.sh --quick      # smoke run
# Extra arguments go to run.sh. The decision benchmark: swift run -c release corridor-decision-bench
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
peers="${PEERS_HARNESS:-$root/../shared/bench/peers/run.sh}"
cd "$root"
swift build -c release --static-swift-stdlib --product corridor
exec "$peers" --candidate-name corridor "$@" "$root/bench/corridor-candidate.sh"
