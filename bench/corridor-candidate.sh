#!/usr/bin/env bash
# Corridor as the candidate of ../shared/bench/peers/run.sh: writes a config from the BENCH_*
# variables and runs the release binary in the foreground. Names are resolved by Corridor itself
# with the system resolver (run.sh gives the candidate a private /etc/hosts). The tls and connect
# listeners run on the splice plane unless CORRIDOR_DATA_PLANE=NIO.
set -euo pipefail
: "${BENCH_LISTEN:?run this from run.sh}" "${BENCH_ALLOWED:?}" "${BENCH_UPSTREAM_PORT:?}" "${BENCH_RUN_DIR:?}"
root="$(cd "$(dirname "$0")/.." && pwd)"
bin="${CORRIDOR_BIN:-$root/.build/release/corridor}"
cfg="$BENCH_RUN_DIR/corridor.yaml"
mode="${BENCH_MODE:-passthrough}"
listener="tls: $BENCH_LISTEN"
plane_line="tls: {upstreamPort: $BENCH_UPSTREAM_PORT, dataPlane: ${CORRIDOR_DATA_PLANE:-Splice}}"
if [ "$mode" = connect ]; then
    listener="connect: $BENCH_LISTEN"
    # (written only in this mode: binaries before spec.connect.dataPlane refuse the field)
    plane_line="$plane_line"$'\n'"  connect: {dataPlane: ${CORRIDOR_DATA_PLANE:-Splice}}"
fi
# BENCH_ADMIN=ADDRESS:PORT adds the admin listener (for a console streaming /flows/stream meanwhile).
[ -n "${BENCH_ADMIN:-}" ] && listener="$listener, admin: $BENCH_ADMIN"
hosts=$(echo "$BENCH_ALLOWED" | sed 's/,/, /g')
log_file="$BENCH_RUN_DIR/access.log"
[ "${BENCH_PEER_LOG:-1}" = 0 ] && log_file=/dev/null
cat > "$cfg" <<YAML
apiVersion: corridor.dev/v1alpha1
kind: GatewayConfig
metadata: {name: bench}
spec:
  listeners: {$listener}
  $plane_line
  destinations: {allowPrivate: [127.0.0.1/32]}   # the origin is on loopback here
  limits: {maxConnections: $(( ${BENCH_MAX_CONNS:-1000} + 200 )), idleTimeout: 600s}
  logging: {accessLog: {file: $log_file}}
---
apiVersion: corridor.dev/v1alpha1
kind: Workload
metadata: {name: bench-client, namespace: bench}
spec: {addresses: [127.0.0.0/8], serviceAccount: client, labels: {app: client}}
---
apiVersion: corridor.dev/v1alpha1
kind: ExternalService
metadata: {name: origin}
spec:
  hosts: [$hosts]
  ports: [{number: $BENCH_UPSTREAM_PORT, protocol: TLS}]
---
apiVersion: corridor.dev/v1alpha1
kind: EgressPolicy
metadata: {name: client-egress, namespace: bench}
spec:
  podSelector: {matchLabels: {app: client}}
  egress: [{to: [{externalService: origin}]}]
YAML
exec "$bin" run --config "$cfg" --workers "${BENCH_WORKERS:-1}" --log-level warning
