#!/usr/bin/env bash
# A soak: mixed traffic through a release build for a long time, with the gateway's RSS,
# descriptors and CPU sampled every few seconds and plotted (bench/README "Soak").
#   bench/soak/run.sh [--minutes 60] [--sample 5] [--out DIR]
# 127.0.0.1 only; needs python3, openssl and curl, and matplotlib (installed from PyPI if missing).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
cd "$root"
[ -n "${SOAK_NO_BUILD:-}" ] || swift build -c release --static-swift-stdlib --product corridor
python3 -c "import matplotlib" 2>/dev/null || python3 -m pip install -q matplotlib
exec python3 "$root/bench/soak/soak.py" "$@"
