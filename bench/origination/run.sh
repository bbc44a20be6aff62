#!/usr/bin/env bash
# TLS origination: plain HTTP in, verified TLS 1.3 out. Corridor's http listener beside an nginx
# reverse proxy doing the same job, and "direct" (the client speaking TLS to the origin itself).
#
#   sudo bench/origination/run.sh [--quick | --profile]
#
# Builds Corridor (release), makes a throwaway CA and an origin certificate for billing.example.test,
# starts on 127.0.0.1: the origin (nginx, TLS 1.3 only, no session tickets/cache, GET / -> "ok\n")
# on 19443 (stub_status on 19444), Corridor on 19080 and the nginx peer on 19081, checks each path
# answers "ok", measures them interleaved, stops what it started (by PID) and prints a markdown table.
# Scratch (configs, logs, raw tool output, results.tsv) goes to a mktemp -d run directory.
# CORRIDOR_BIN: the Corridor binary (default: build .build/release/corridor). CORRIDOR_BIN_B adds a
# second one, "corridor-b" on 19082, measured in the same interleaved reps: an A/B with nginx as the
# yardstick. ORIGINATION_BENCH_REPS overrides the number of reps (an A/B on a noisy machine wants 10+).
# --profile measures nothing else: `perf record` (cpu-clock, DWARF) of Corridor's http listener over
# one keep-alive run, printed as its CPU per request under perf, its costliest functions, and the
# samples by component (bench/profile/attribute.py); perf.data stays in the run directory.
set -uo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
PY=/usr/bin/python3
UTIL="$HERE/util.py"
BIN="${CORRIDOR_BIN:-$ROOT/.build/release/corridor}"
BIN_B="${CORRIDOR_BIN_B:-}"
HOST=billing.example.test
ORIGIN_PORT=19443; STATUS_PORT=19444
declare -A PORT=([direct]=$ORIGIN_PORT [corridor]=19080 [nginx]=19081 [corridor-b]=19082) PID=()
PATHS="direct corridor nginx"
[ -n "$BIN_B" ] && PATHS="$PATHS corridor-b"

REPS=3; KA_N=20000; KA_C=16; REQ_N=600; REQ_RATE=200
PROFILE=0
case "${1:-}" in
    --quick) REPS=1; KA_N=5000; REQ_N=200 ;;
    --profile) PROFILE=1 ;;
    "") ;;
    *) echo "usage: sudo $0 [--quick | --profile]" >&2; exit 2 ;;
esac
REPS=${ORIGINATION_BENCH_REPS:-$REPS}
[[ $REPS =~ ^[1-9][0-9]*$ ]] || { echo "ORIGINATION_BENCH_REPS must be a positive number, not '$REPS'" >&2; exit 2; }

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[ "$(id -u)" = 0 ] || die "run as root (apt-get for missing tools)"

# ------------------------------------------------------------------ tools, build
missing=()
command -v nginx >/dev/null || missing+=(nginx)
command -v h2load >/dev/null || missing+=(nghttp2-client)
command -v curl >/dev/null || missing+=(curl)
command -v openssl >/dev/null || missing+=(openssl)
[ -x "$PY" ] || missing+=(python3)
command -v ss >/dev/null || missing+=(iproute2)
[ "$PROFILE" = 1 ] && ! command -v perf >/dev/null && missing+=(linux-perf)
if [ ${#missing[@]} -gt 0 ]; then
    log "installing: ${missing[*]}"
    made_policy=0   # keep the postinst scripts from starting a system-wide nginx on port 80
    [ -e /usr/sbin/policy-rc.d ] || { printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d && made_policy=1; }
    apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
    rc=$?
    [ "$made_policy" = 1 ] && rm -f /usr/sbin/policy-rc.d
    [ $rc -eq 0 ] || die "apt-get install failed"
fi
if [ -z "${CORRIDOR_BIN:-}" ]; then
    log "building corridor (release)"
    (cd "$ROOT" && swift build -c release --static-swift-stdlib --product corridor >&2) || die "swift build failed"
fi
for bin in "$BIN" ${BIN_B:+"$BIN_B"}; do [ -x "$bin" ] || die "no Corridor binary at $bin"; done

for port in $ORIGIN_PORT $STATUS_PORT ${PORT[corridor]} ${PORT[nginx]} ${PORT[corridor-b]}; do
    ss -Hltn "sport = :$port" | grep -q . && die "port $port is already in use"
done
RUN=$(mktemp -d /tmp/corridor-origination.XXXXXX)
chmod 755 "$RUN"
mkdir -p "$RUN/tls" "$RUN/logs" "$RUN/raw" "$RUN/tmp"
: > "$RUN/results.tsv"; : > "$RUN/pids"
log "run dir: $RUN"

# ------------------------------------------------------------------ processes (stopped by PID on exit)
STARTED=()
start_proc() {      # start_proc NAME CMD... -> LAST_PID
    local name=$1; shift
    "$@" > "$RUN/logs/$name.out" 2>&1 &
    LAST_PID=$!; STARTED+=("$LAST_PID"); echo "$name $LAST_PID" >> "$RUN/pids"
}
alive() { local s; s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1; s=${s##*) }; [ "${s%% *}" != Z ]; }
stop_proc() {       # SIGTERM, up to 8 s, then SIGKILL it and its children
    local pid=$1 kids i k
    kids=$(ps -o pid= --ppid "$pid" 2>/dev/null)
    alive "$pid" && kill -TERM "$pid" 2>/dev/null
    for i in $(seq 1 80); do alive "$pid" || break; sleep 0.1; done
    for k in $pid $kids; do alive "$k" && kill -KILL "$k" 2>/dev/null; done
    wait "$pid" 2>/dev/null
}
cleanup() { local i; for (( i=${#STARTED[@]}-1; i>=0; i-- )); do stop_proc "${STARTED[$i]}"; done; STARTED=(); }
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT TERM
wait_port() {       # wait_port PORT PID SECONDS
    local i
    for i in $(seq 1 $(($3 * 10))); do
        ss -Hltn "sport = :$1" | grep -q . && return 0
        alive "$2" || return 1; sleep 0.1
    done
    return 1
}

# ------------------------------------------------------------------ CA, origin certificate, configs
log "making a throwaway CA and a certificate for $HOST"
T=$RUN/tls
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=corridor origination bench CA" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" \
    -keyout "$T/ca.key" -out "$T/ca.crt" 2>/dev/null || die "openssl (CA) failed"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=$HOST" \
    -keyout "$T/origin.key" -out "$T/origin.csr" 2>/dev/null || die "openssl (CSR) failed"
printf 'basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\nsubjectAltName=DNS:%s\n' \
    "$HOST" > "$T/origin.ext"
openssl x509 -req -in "$T/origin.csr" -CA "$T/ca.crt" -CAkey "$T/ca.key" -CAcreateserial -days 2 \
    -extfile "$T/origin.ext" -out "$T/origin.crt" 2>/dev/null || die "openssl (sign) failed"
chmod 644 "$T"/*

nginx_head() {      # nginx_head NAME: one worker, foreground, everything under the run dir
    cat <<EOF
worker_processes 1;
daemon off;
pid $RUN/$1.pid;
error_log $RUN/logs/$1.error.log warn;
events { worker_connections 4096; }
http {
    client_body_temp_path $RUN/tmp/$1-body; proxy_temp_path $RUN/tmp/$1-proxy;
    fastcgi_temp_path $RUN/tmp/$1-fcgi; uwsgi_temp_path $RUN/tmp/$1-uwsgi; scgi_temp_path $RUN/tmp/$1-scgi;
    keepalive_timeout 600s;
    keepalive_requests 100000000;   # the default (1000) would close h2load's connections mid-run
EOF
}
{ nginx_head origin; cat <<EOF
    access_log off;
    server {
        listen 127.0.0.1:$ORIGIN_PORT ssl backlog=4096;
        ssl_certificate $T/origin.crt;
        ssl_certificate_key $T/origin.key;
        ssl_protocols TLSv1.3;
        ssl_session_tickets off;    # every new connection is a full handshake
        ssl_session_cache off;
        location = / { default_type text/plain; return 200 "ok\n"; }
    }
    server {                        # new upstream connections = delta of "accepts"
        listen 127.0.0.1:$STATUS_PORT;
        location = /status { stub_status; }
    }
}
EOF
} > "$RUN/origin.conf"
{ nginx_head nginx; cat <<EOF
    upstream billing {
        server 127.0.0.1:$ORIGIN_PORT;
        keepalive 32;
        keepalive_requests 100000000;
        keepalive_timeout 600s;
    }
    server {
        listen 127.0.0.1:${PORT[nginx]};
        location / {
            proxy_pass https://billing;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $HOST;
            proxy_ssl_server_name on;
            proxy_ssl_name $HOST;
            proxy_ssl_verify on;
            proxy_ssl_trusted_certificate $T/ca.crt;
            proxy_ssl_session_reuse on;
            proxy_ssl_protocols TLSv1.2 TLSv1.3;   # nginx 1.22's default stops at TLS 1.2
            access_log $RUN/logs/nginx.access.log;
        }
    }
}
EOF
} > "$RUN/nginx.conf"
cat > "$RUN/corridor.yaml" <<EOF
apiVersion: corridor.dev/v1alpha1
kind: GatewayConfig
metadata: {name: bench}
spec:
  listeners: {http: 127.0.0.1:${PORT[corridor]}}
  resolver: {static: {$HOST: [127.0.0.1]}, system: false}
  destinations: {allowPrivate: [127.0.0.1/32]}   # the origin is on loopback here
  limits: {drainTimeout: 2s}
  logging: {accessLog: {file: $RUN/logs/corridor.access.log}}
---
apiVersion: corridor.dev/v1alpha1
kind: Workload
metadata: {name: bench-client, namespace: bench}
spec: {addresses: [127.0.0.0/8], serviceAccount: client, labels: {app: client}}
---
apiVersion: corridor.dev/v1alpha1
kind: ExternalService
metadata: {name: billing}
spec:
  hosts: [$HOST]
  ports: [{number: 80, protocol: HTTP, originateTLS: {port: $ORIGIN_PORT, caBundleFile: $T/ca.crt}}]
  access: All
EOF

# ------------------------------------------------------------------ start and check
nginx -t -q -p "$RUN" -c "$RUN/origin.conf" -e "$RUN/logs/origin.error.log" || die "origin config rejected"
nginx -t -q -p "$RUN" -c "$RUN/nginx.conf" -e "$RUN/logs/nginx.error.log" || die "nginx peer config rejected"
"$BIN" check --config "$RUN/corridor.yaml" > "$RUN/logs/corridor-check.out" 2>&1 || { cat "$RUN/logs/corridor-check.out" >&2; die "corridor check failed"; }
start_proc origin nginx -p "$RUN" -c "$RUN/origin.conf" -e "$RUN/logs/origin.error.log"
ORIGIN_PID=$LAST_PID
wait_port $ORIGIN_PORT "$ORIGIN_PID" 10 || die "origin did not start"
start_proc nginx nginx -p "$RUN" -c "$RUN/nginx.conf" -e "$RUN/logs/nginx.error.log"
PID[nginx]=$LAST_PID
start_proc corridor "$BIN" run --config "$RUN/corridor.yaml" --workers 1 --log-level warning
PID[corridor]=$LAST_PID
if [ -n "$BIN_B" ]; then
    # The same configuration on its own port, with its own access log.
    sed -e "s|127.0.0.1:${PORT[corridor]}|127.0.0.1:${PORT[corridor-b]}|" -e "s|corridor.access.log|corridor-b.access.log|" \
        "$RUN/corridor.yaml" > "$RUN/corridor-b.yaml"
    "$BIN_B" check --config "$RUN/corridor-b.yaml" > "$RUN/logs/corridor-b-check.out" 2>&1 \
        || { cat "$RUN/logs/corridor-b-check.out" >&2; die "corridor-b check failed"; }
    start_proc corridor-b "$BIN_B" run --config "$RUN/corridor-b.yaml" --workers 1 --log-level warning
    PID[corridor-b]=$LAST_PID
    wait_port "${PORT[corridor-b]}" "${PID[corridor-b]}" 30 || die "corridor-b did not start: $(tail -3 "$RUN/logs/corridor-b.out")"
fi
wait_port "${PORT[nginx]}" "${PID[nginx]}" 10 || die "nginx peer did not start"
wait_port "${PORT[corridor]}" "${PID[corridor]}" 30 || die "corridor did not start: $(tail -3 "$RUN/logs/corridor.out")"

# The client side of each path: direct speaks TLS (curl verifies with the CA); the proxies get plain
# HTTP with Host: billing.example.test. h2load/curl take the name from the URL and dial --connect-to,
# so exactly one Host header is sent (h2load -H 'Host: ...' would add a second one, which Corridor rightly refuses).
url() { if [ "$1" = direct ]; then echo "https://$HOST:$ORIGIN_PORT/"; else echo "http://$HOST/"; fi; }
curl_route() {
    if [ "$1" = direct ]; then echo "--cacert $T/ca.crt --connect-to $HOST:$ORIGIN_PORT:127.0.0.1:$ORIGIN_PORT"
    else echo "--connect-to $HOST:80:127.0.0.1:${PORT[$1]}"; fi
}
for p in $PATHS; do
    body=$(curl -sS -m 10 $(curl_route "$p") "$(url "$p")" 2>&1)
    [ "$body" = ok ] || die "path $p did not answer ok (got '${body:0:200}')"
    log "path $p answers ok on 127.0.0.1:${PORT[$p]}"
done
for p in corridor ${BIN_B:+corridor-b}; do
    grep -q '"decision":"allow"' "$RUN/logs/$p.access.log" || die "$p wrote no allow record"
done

# ------------------------------------------------------------------ measurement
record() { printf '%s\t%s\t%s\t%s\n' "$@" >> "$RUN/results.tsv"; }
cpu_ns() { [ -n "${PID[$1]:-}" ] && $PY "$UTIL" proc "${PID[$1]}"; }
accepts() { $PY "$UTIL" accepts "http://127.0.0.1:$STATUS_PORT/status"; }

t_ka() {            # keep-alive req/s, proxy CPU per request, origin connections opened
    local rep=$1 p=$2 f=$RUN/raw/ka-$1-$2.txt c0 c1 a0 a1 r ok fail err
    a0=$(accepts); c0=$(cpu_ns "$p")
    h2load --h1 -c "$KA_C" -n "$KA_N" --connect-to="127.0.0.1:${PORT[$p]}" "$(url "$p")" > "$f" 2>&1
    c1=$(cpu_ns "$p"); a1=$(accepts)
    read -r r ok fail err < <($PY "$UTIL" h2load "$f")
    record "$rep" "$p" ka_rate "$r"
    record "$rep" "$p" ka_errors "$((fail + err + KA_N - ok))"
    record "$rep" "$p" origin_conns "$((a1 - a0 - 1))"     # minus the status request's own connection
    [ -n "$c0" ] && [ "$ok" -gt 0 ] && record "$rep" "$p" cpu_us_per_req "$(awk -v d=$((c1 - c0)) -v n="$ok" 'BEGIN{printf "%.2f", d/1e3/n}')"
}

t_req() {           # latency at a fixed rate on one kept-alive client connection (as the peers harness)
    local rep=$1 p=$2 f=$RUN/raw/req-$1-$2.txt n p50 p99
    curl -s --rate "$REQ_RATE/s" $(curl_route "$p") -o /dev/null -w '%{num_connects} %{http_code} %{time_total}\n' \
        "$(url "$p")?req=[1-$REQ_N]" > "$f" 2>/dev/null
    read -r n p50 p99 < <($PY "$UTIL" latency "$f")   # 200s that reused the connection only
    record "$rep" "$p" req_p50_ms "$p50"
    record "$rep" "$p" req_p99_ms "$p99"
    record "$rep" "$p" req_errors "$((REQ_N - 1 - n))"
}

{
    printf 'date\t%s\nnproc\t%s\nreps\t%s\nka_n\t%s\nka_c\t%s\nreq_n\t%s\nreq_rate\t%s\npaths\t%s\n' \
        "$(date -u +%Y-%m-%dT%H:%MZ)" "$(nproc)" "$REPS" "$KA_N" "$KA_C" "$REQ_N" "$REQ_RATE" "$PATHS"
    printf 'load_start\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)"
} > "$RUN/meta.tsv"

log "warm-up"
for p in $PATHS; do
    h2load --h1 -c "$KA_C" -n 2000 --connect-to="127.0.0.1:${PORT[$p]}" "$(url "$p")" > "$RUN/raw/warm-$p.txt" 2>&1
done

if [ "$PROFILE" = 1 ]; then
    log "profiling corridor over $KA_N keep-alive requests (c=$KA_C)"
    perf record -F 1999 --call-graph dwarf,32768 -p "${PID[corridor]}" -o "$RUN/perf.data" -- sleep 1000 > "$RUN/logs/perf.out" 2>&1 &
    perf_pid=$!
    sleep 0.5
    c0=$(cpu_ns corridor)
    h2load --h1 -c "$KA_C" -n "$KA_N" --connect-to="127.0.0.1:${PORT[corridor]}" "$(url corridor)" > "$RUN/raw/profile-ka.txt" 2>&1
    c1=$(cpu_ns corridor)
    kill -INT "$perf_pid"; wait "$perf_pid" 2>/dev/null
    read -r r ok fail err < <($PY "$UTIL" h2load "$RUN/raw/profile-ka.txt")
    [ "$ok" -gt 0 ] || die "no request succeeded under perf ($(tail -3 "$RUN/raw/profile-ka.txt"))"
    us=$(( (c1 - c0) / 1000 / ok ))
    echo "corridor under perf: $us us of CPU per request ($ok requests, $fail failed)"
    "$ROOT/bench/profile/summary.sh" "$RUN/perf.data" "$us" request
    echo "run dir: $RUN   (perf.data, logs/, configs)"
    exit 0
fi

read -r -a path_arr <<< "$PATHS"
np=${#path_arr[@]}
for rep in $(seq 1 "$REPS"); do
    order=()
    for i in $(seq 0 $((np - 1))); do order+=("${path_arr[$(( (i + rep - 1) % np ))]}"); done
    for t in ka req; do
        log "rep $rep/$REPS: $t (${order[*]})"
        for p in "${order[@]}"; do "t_$t" "$rep" "$p"; done
    done
done
printf 'load_end\t%s\n' "$(cut -d' ' -f1-3 /proc/loadavg)" >> "$RUN/meta.tsv"

# ------------------------------------------------------------------ stop and report
trap - EXIT
cleanup
log "stopped everything this run started"
{
    $PY "$UTIL" summarize "$RUN/results.tsv" "$RUN/meta.tsv"
    records=""
    for p in corridor corridor-b; do
        [ -e "$RUN/logs/$p.access.log" ] && records+="$p $(grep -c '"status":200' "$RUN/logs/$p.access.log") with status 200 of $(wc -l < "$RUN/logs/$p.access.log"); "
    done
    echo "Access records: ${records}nginx $(grep -c '" 200 ' "$RUN/logs/nginx.access.log") of $(wc -l < "$RUN/logs/nginx.access.log")."
    echo
    echo "    corridor: $BIN, tree at $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null) ($(swift --version 2>/dev/null | head -1))"
    if [ -n "$BIN_B" ]; then echo "    corridor-b: $BIN_B"; fi
    echo "    nginx: $(nginx -v 2>&1 | sed 's/.*: //'), $(h2load --version | head -1), $(curl --version | head -1 | cut -d' ' -f1-2), $(openssl version)"
    echo "    cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
} | tee "$RUN/summary.md"
echo
echo "run dir: $RUN   (results.tsv, summary.md, raw/, logs/, configs)"
