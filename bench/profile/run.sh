#!/usr/bin/env bash
# CPU profile of Corridor's passthrough path: starts a TLS origin (nginx), runs the release binary
# as the peers bench runs it (bench/corridor-candidate.sh: same config, one event loop) under `perf record` (cpu-clock samples, DWARF call graphs), drives
# it with h2load, and prints the gateway's CPU time per connection (or request), the split between
# kernel and user space, the costliest functions by self time, the samples by component
# (attribute.py, which reads any `perf script` output, the http listener's too), and the syscalls
# per connection (strace -c, in a second run: strace slows the gateway down). callgrind would give
# exact instruction counts, but valgrind 3.19 crashes here on the Swift runtime's first thread.
#
#   sudo bench/profile/run.sh [conn|ka|bulk] [N] conn: N new TLS connections (default 300)
#                                                ka:   N keep-alive requests on 4 connections (default 2000)
#                                                bulk: N MiB downloaded through the relay in 256 MiB
#                                                      files, one connection each (default 1024)
#   sudo bench/profile/run.sh mem N [BIN...]
#        resident memory per idle connection: N TLS connections held open through each binary
#        (../shared/bench/peers/tools/hold_conns.py), RSS after minus RSS before, divided by N.
#   sudo bench/profile/run.sh ab conn|ka|bulk N BIN_A BIN_B [REPS]
#        A/B of two release binaries without perf: REPS (default 5) interleaved runs each, 16
#        clients as in the peers harness; prints the gateway's CPU per connection (request, MiB) of
#        every run and the medians. Copy a binary aside first (cp .build/release/corridor /tmp/a).
#        A binary written BIN%NIO (or BIN%Splice, the default) runs the tls listener on that data plane;
#        one written BIN+stream runs with the admin listener and a client streaming every record from
#        /flows/stream meanwhile (what a connected console costs).
# Root: the gateway gets a private /etc/hosts (unshare -m), like the peers harness gives it.
# PROFILE_WORKERS=N runs the gateway with N event loops (default 1).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
mode="${1:-conn}"; n="${2:-}"
ab=0; bins=("$root/.build/release/corridor"); clients=4; reps=1; memory=0
if [ "$mode" = mem ]; then
    memory=1; n=${2:-2000}; shift 2 || true
    [ $# -gt 0 ] && bins=("$@")
    mode=conn
elif [ "$mode" = ab ]; then
    [ $# -ge 5 ] || { echo "usage: $0 ab conn|ka|bulk N BIN_A BIN_B [REPS]" >&2; exit 2; }
    ab=1; mode=$2; n=$3; bins=("$4" "$5"); reps=${6:-5}; clients=16
fi
case "$mode" in conn) n=${n:-300} ;; ka) n=${n:-2000} ;; bulk) n=${n:-1024} ;; *) echo "usage: $0 [conn|ka|bulk] [N]" >&2; exit 2 ;; esac
[ "$(id -u)" = 0 ] || { echo "run as root (private /etc/hosts via unshare -m)" >&2; exit 1; }
for tool in perf strace h2load nginx openssl; do
    command -v "$tool" >/dev/null || { echo "missing $tool (apt-get install linux-perf strace nghttp2-client nginx openssl)" >&2; exit 1; }
done
[ "$ab" = 1 ] || [ "$memory" = 1 ] || [ -n "${PROFILE_NO_BUILD:-}" ] || (cd "$root" && swift build -c release --static-swift-stdlib --product corridor >/dev/null)
run=$(mktemp -d /tmp/corridor-profile.XXXXXX)
origin_port=${PROFILE_ORIGIN_PORT:-19443}; gw_port=${PROFILE_GATEWAY_PORT:-19444}
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=api.allowed.test \
    -addext subjectAltName=DNS:api.allowed.test -keyout "$run/origin.key" -out "$run/origin.crt" 2>/dev/null
printf '127.0.0.1 localhost\n127.0.0.1 api.allowed.test\n' > "$run/hosts"
mkdir -p "$run/tmp" "$run/www"
truncate -s 256M "$run/www/big.bin"
cat > "$run/origin.conf" <<NGINX
worker_processes 1; daemon off; master_process off; pid $run/origin.pid; error_log $run/origin.err warn;
events { worker_connections 4096; }
http { access_log off; client_body_temp_path $run/tmp; proxy_temp_path $run/tmp; fastcgi_temp_path $run/tmp;
  uwsgi_temp_path $run/tmp; scgi_temp_path $run/tmp; keepalive_requests 100000000;
  server { listen 127.0.0.1:$origin_port ssl; ssl_certificate $run/origin.crt; ssl_certificate_key $run/origin.key;
    ssl_session_tickets off; ssl_session_cache off; location = / { default_type text/plain; return 200 "ok\n"; }
    location = /big.bin { root $run/www; sendfile on; } } }
NGINX
nginx -p "$run" -e "$run/origin.err" -c "$run/origin.conf" & pids+=($!)
load() {   # load N: the workload against the gateway
    if [ "$mode" = bulk ]; then
        local start end
        start=$(date +%s.%N)
        for _ in $(seq 1 $(( $1 / 256 ))); do
            curl -sk -o /dev/null --connect-to "api.allowed.test:$origin_port:127.0.0.1:$gw_port" "https://api.allowed.test:$origin_port/big.bin"
        done
        end=$(date +%s.%N)
        awk -v n="$1" -v a="$start" -v b="$end" 'BEGIN {printf "finished in %.2fs, %.0f MiB/s (curl, %d MiB)\n", b - a, n / (b - a), n}'
    elif [ "$mode" = conn ]; then
        h2load --h1 -c "$clients" -n "$1" -H 'Connection: close' --connect-to=127.0.0.1:$gw_port https://api.allowed.test:$origin_port/
    else
        h2load --h1 -c "$clients" -n "$1" --connect-to=127.0.0.1:$gw_port https://api.allowed.test:$origin_port/
    fi | grep -E '^requests:|^finished in' | sed 's/^/  load: /'
}
bin=${bins[0]}
start_gateway() {   # start_gateway WRAPPER...: $bin as the peers bench's candidate (same config), with its own /etc/hosts
    # BIN%PLANE picks the tls listener's data plane (Splice, the default, or NIO).
    local plane=Splice stream=0 admin=""
    case "$bin" in *+stream) stream=1; bin=${bin%+stream}; admin="127.0.0.1:$((gw_port + 1))" ;; esac
    case "$bin" in *%*) plane=${bin##*%}; bin=${bin%\%*} ;; esac
    HOSTS="$run/hosts" BENCH_LISTEN="127.0.0.1:$gw_port" BENCH_ADMIN="$admin" BENCH_ALLOWED=api.allowed.test BENCH_UPSTREAM_PORT="$origin_port" \
        BENCH_RUN_DIR="$run" BENCH_WORKERS="${PROFILE_WORKERS:-1}" BENCH_MAX_CONNS=20000 CORRIDOR_BIN="$bin" CORRIDOR_DATA_PLANE="$plane" \
        unshare -m -- /bin/bash -c 'mount --bind "$HOSTS" /etc/hosts && exec "$@"' gateway \
        "$@" "$root/bench/corridor-candidate.sh" > "$run/gateway.out" 2>&1 &
    gw=$!; pids+=($gw)
    for _ in $(seq 1 100); do ss -Hltn "sport = :$gw_port" | grep -q . && break; sleep 0.1; done
    if [ "$stream" = 1 ]; then
        for _ in $(seq 1 100); do ss -Hltn "sport = :$((gw_port + 1))" | grep -q . && break; sleep 0.1; done
        curl -sN "http://$admin/flows/stream" > "$run/stream.out" & pids+=($!)
    fi
    # warm up: first connections, resolver cache (the bulk load's own unit is a 256 MiB download)
    if [ "$mode" = bulk ]; then
        h2load --h1 -c 4 -n 200 --connect-to=127.0.0.1:$gw_port https://api.allowed.test:$origin_port/ >/dev/null
    else
        load 200 >/dev/null
    fi
    gwpid=$(pgrep -f "^$bin run --config $run/corridor.yaml" | head -1)
    [ -n "$gwpid" ] || { echo "the gateway ($bin) did not start: $(tail -3 "$run/gateway.out")" >&2; exit 1; }
}
unit=$(case "$mode" in conn) echo connection ;; ka) echo request ;; bulk) echo MiB ;; esac)
ticks() { awk '{print $14, $15}' "/proc/$gwpid/stat"; }
hz=$(getconf CLK_TCK)

if [ "$memory" = 1 ]; then
    hold="$root/../shared/bench/peers/tools/hold_conns.py"
    rss() { awk '/^VmRSS/ {print $2}' "/proc/$gwpid/status"; }
    for bin in "${bins[@]}"; do
        start_gateway
        sleep 1
        before=$(rss)
        python3 "$hold" --port "$gw_port" --sni api.allowed.test --count "$n" --hold 600 > "$run/hold.out" 2>&1 & holder=$!
        for _ in $(seq 1 600); do grep -q READY "$run/hold.out" && break; sleep 0.1; done
        sleep 1
        after=$(rss)
        echo "$(grep READY "$run/hold.out"): $bin: RSS $before -> $after KiB, $(awk -v a="$after" -v b="$before" -v n="$n" 'BEGIN {printf "%.2f", (a - b) / n}') KiB per idle connection"
        kill "$holder"; wait "$holder" 2>/dev/null || true
        kill "$gwpid"; wait "$gw" 2>/dev/null || true
    done
    exit 0
fi

if [ "$ab" = 1 ]; then
    declare -A runs
    for rep in $(seq 1 "$reps"); do
        for which in 0 1; do
            bin=${bins[$which]}
            start_gateway
            read -r u0 s0 < <(ticks)
            rate=$(load "$n" | sed -n 's/.*finished in [^,]*, \([0-9.]*\) [reqMiB]*\/s.*/\1/p')
            read -r u1 s1 < <(ticks)
            kill "$gwpid"; wait "$gw" 2>/dev/null || true
            us=$(( (u1 - u0 + s1 - s0) * 1000000 / hz / n ))
            runs[$which]+="$us "
            printf '  rep %d %s: %d us per %s (user %d, system %d), %s per second\n' "$rep" "$([ $which = 0 ] && echo A || echo B)" "$us" "$unit" \
                $(( (u1 - u0) * 1000000 / hz / n )) $(( (s1 - s0) * 1000000 / hz / n )) "$rate"
        done
    done
    median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
    a=$(echo "${runs[0]}" | median); b=$(echo "${runs[1]}" | median)
    echo "median CPU per $unit: A ${a} us (${bins[0]}), B ${b} us (${bins[1]}), B/A $(awk -v a="$a" -v b="$b" 'BEGIN {printf "%.3f", b / a}')"
    exit 0
fi

start_gateway
read -r u0 s0 < <(ticks)
perf record -F 999 --call-graph dwarf,32768 -p "$gwpid" -o "$run/perf.data" -- sleep 1000 >/dev/null 2>&1 & perf=$!
sleep 0.5
load "$n"
kill -INT $perf; wait $perf 2>/dev/null || true
read -r u1 s1 < <(ticks)
echo "gateway CPU under perf: user $(( (u1-u0) * 1000000 / hz / n )) us, system $(( (s1-s0) * 1000000 / hz / n )) us per $unit"
"$root/bench/profile/summary.sh" "$run/perf.data" "$(( (u1-u0+s1-s0) * 1000000 / hz / n ))" "$unit"
kill "$gw" 2>/dev/null; wait "$gw" 2>/dev/null || true

start_gateway strace -f -c -o "$run/strace.txt"
load "$n" >/dev/null
kill "$gwpid"; wait "$gw" 2>/dev/null || true
echo "--- syscalls per $unit (strace -c over $n, with the warm-up's)"
per=$([ "$mode" = bulk ] && echo "$n" || echo $((n + 200)))   # the bulk warm-up moves next to nothing
awk -v per="$per" 'NR>2 && $NF !~ /^-/ && $NF != "total" { printf "  %-16s %6.2f\n", $NF, $4/per }' "$run/strace.txt" | sort -k2 -nr | head -20
echo "run dir: $run"
