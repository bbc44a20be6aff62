#!/usr/bin/env bash
# Policy reload with 10,000 ExternalServices under load: one command.
#   bench/reload/run.sh [--services N] [--reloads R] [--threads T] [--long-lived L]
# Builds Corridor in release mode, then runs bench/reload/reload.py (127.0.0.1 only; needs
# python3 and openssl). Exits 1 if any connection failed during the reloads.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
swift build -c release --static-swift-stdlib --product corridor
exec python3 "$root/bench/reload/reload.py" "$@"
