#!/usr/bin/env bash
# CONNECT proxies side by side: Corridor's connect listener (splice data plane, and the NIO plane
# for reference) beside Squid (squid-openssl: peek at the ClientHello, splice allowed SNI, as in
# ../shared/bench/peers) and tinyproxy (CONNECT host allowlist by filter; no SNI check), in one
# run, interleaved: each rep runs every test on every proxy before the next test, proxy order
# rotating between reps.
#
#   sudo bench/connect/run.sh [--quick]
#
# Per proxy (medians over reps; CPU: utime + stime of the proxy's process tree, proc_cpu.py):
#   new tunnels/s and CPU per 10k   connect_load.py: CONNECT, full TLS 1.3 handshake with the
#                                   origin inside the tunnel, GET /, close; 16 in flight
#   CPU per GiB                     curl -p -x through the tunnel: 256 MiB downloads (1 GiB per rep)
#   KiB per idle tunnel             ../shared/bench/peers/tools/hold_conns.py --connect: N tunnels
#                                   (CONNECT + handshake done) held idle; RSS after minus before, / N
# Every proxy writes one access-log line per tunnel. Everything listens on 127.0.0.1; the proxies
# resolve the names from a hosts file (Squid's hosts_file; Corridor and tinyproxy get a private
# /etc/hosts through unshare -m). Root: apt-get, unshare, Squid's user switch.
# CONNECT_BENCH_CONNS (4000), CONNECT_BENCH_REPS (3), CONNECT_BENCH_IDLE (2000), CORRIDOR_BIN;
# CORRIDOR_BIN_B adds a second Corridor binary (splice plane), "corridor-b", measured in the same
# interleaved run: an A/B with the peers as the yardstick.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/bench/connect"
peers="$root/../shared/bench/peers"
util="$peers/tools/benchutil.py"
conns=${CONNECT_BENCH_CONNS:-4000}; reps=${CONNECT_BENCH_REPS:-3}; idle=${CONNECT_BENCH_IDLE:-2000}; bulk_runs=4
if [ "${1:-}" = --quick ]; then conns=400; reps=1; idle=200; bulk_runs=1; fi
[ "$(id -u)" = 0 ] || { echo "run as root (apt-get, unshare -m, squid's user switch)" >&2; exit 1; }
[ -f "$util" ] || { echo "missing $util (../shared)" >&2; exit 1; }

missing=()
command -v nginx >/dev/null || missing+=(nginx-light)
squid -v 2>/dev/null | grep -q -- --with-openssl || missing+=(squid-openssl)
command -v tinyproxy >/dev/null || missing+=(tinyproxy)
command -v curl >/dev/null || missing+=(curl)
command -v ss >/dev/null || missing+=(iproute2)
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing: ${missing[*]}"
    # Keep the packages' postinst scripts from starting system-wide daemons.
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod +x /usr/sbin/policy-rc.d
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
    rm -f /usr/sbin/policy-rc.d
fi
bin="${CORRIDOR_BIN:-$root/.build/release/corridor}"
if [ -z "${CORRIDOR_BIN:-}" ]; then (cd "$root" && swift build -c release --static-swift-stdlib --product corridor >/dev/null); fi

run=$(mktemp -d /tmp/corridor-connect-bench.XXXXXX)
base=${CONNECT_BENCH_PORT_BASE:-18543}
origin_port=$base
declare -A port=([squid]=$((base + 1)) [tinyproxy]=$((base + 2)) [corridor]=$((base + 3)) [corridor-nio]=$((base + 4)) [corridor-b]=$((base + 5)))
declare -A binary=([corridor]="$bin" [corridor-nio]="$bin" [corridor-b]="${CORRIDOR_BIN_B:-}")
corridors=(corridor corridor-nio)
if [ -n "${CORRIDOR_BIN_B:-}" ]; then corridors+=(corridor-b); fi
names=("${corridors[@]}" squid tinyproxy)
declare -A pid=()
started=()
cleanup() { for p in "${started[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT
mkdir -p "$run/logs/squid" "$run/tls" "$run/www" "$run/nginx-tmp"

# ---- files: certificates, hosts, the bulk file, configs
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=api.allowed.test \
    -addext "subjectAltName=DNS:api.allowed.test,DNS:bulk.allowed.test" -keyout "$run/tls/origin.key" -out "$run/tls/origin.crt" 2>/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=squid bump CA (never used to sign)" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
    -keyout "$run/tls/squid-bump-ca.key" -out "$run/tls/squid-bump-ca.crt" 2>/dev/null
chmod 755 "$run" "$run/tls"; chmod 644 "$run"/tls/*
printf '127.0.0.1 localhost\n127.0.0.1 api.allowed.test bulk.allowed.test evil.denied.test\n' > "$run/hosts"
chmod 644 "$run/hosts"
truncate -s 256M "$run/www/big.bin"
chown proxy:proxy "$run/logs/squid"
common=(RUN="$run" NOFILE=65536 WORKERS=1 ORIGIN_WORKERS=1 ORIGIN_PORT="$origin_port" ORIGIN_ADDR="127.0.0.1:$origin_port"
        UPSTREAM_PORT="$origin_port" ALLOWED_SPACE="api.allowed.test bulk.allowed.test" NGINX_WORKER_CONNECTIONS=8192)
python3 "$util" render "$peers/conf/origin-nginx.conf.in" "$run/origin-nginx.conf" "${common[@]}"
python3 "$util" render "$peers/conf/squid.conf.in" "$run/squid.conf" "${common[@]}" PORT="${port[squid]}" \
    SQUID_ACCESS_LOG=$'logformat sni %ts.%03tu %6tr %>a %Ss/%03>Hs %<st %rm %ru sni=%ssl::>sni %Sh/%<a\n'"access_log stdio:$run/logs/squid/access.log sni"
printf '^api\\.allowed\\.test$\n^bulk\\.allowed\\.test$\n' > "$run/tinyproxy.filter"
touch "$run/logs/tinyproxy.log"; chown tinyproxy "$run/logs/tinyproxy.log" 2>/dev/null || chmod 666 "$run/logs/tinyproxy.log"
cat > "$run/tinyproxy.conf" <<CONF
User tinyproxy
Group tinyproxy
Port ${port[tinyproxy]}
Listen 127.0.0.1
Timeout 600
MaxClients 8192
Allow 127.0.0.1
ConnectPort $origin_port
LogFile "$run/logs/tinyproxy.log"
LogLevel Connect
Filter "$run/tinyproxy.filter"
FilterType ere
FilterDefaultDeny Yes
DisableViaHeader Yes
CONF

start() {   # start NAME CMD...
    local name=$1; shift
    "$@" > "$run/logs/$name.out" 2>&1 &
    pid[$name]=$!
    started+=($!)
}
# A command prefix: what follows runs with $run/hosts as its /etc/hosts.
private_hosts=(unshare -m -- /bin/bash -c 'mount --bind "$0" /etc/hosts && exec "$@"' "$run/hosts")
wait_port() {
    for _ in $(seq 1 150); do ss -Hltn "sport = :$1" | grep -q . && return 0; sleep 0.1; done
    echo "nothing listens on $1: $(tail -3 "$run"/logs/*.out 2>/dev/null)" >&2; return 1
}

start origin nginx -p "$run" -e "$run/logs/origin.err" -c "$run/origin-nginx.conf"
wait_port "$origin_port"
start squid squid -N -f "$run/squid.conf"
start tinyproxy "${private_hosts[@]}" tinyproxy -d -c "$run/tinyproxy.conf"
for name in "${corridors[@]}"; do
    plane=Splice; [ "$name" = corridor-nio ] && plane=NIO
    mkdir -p "$run/$name"
    start "$name" env BENCH_MODE=connect BENCH_LISTEN="127.0.0.1:${port[$name]}" BENCH_ALLOWED=api.allowed.test,bulk.allowed.test \
        BENCH_UPSTREAM_PORT="$origin_port" BENCH_RUN_DIR="$run/$name" BENCH_MAX_CONNS=$((idle + 1000)) CORRIDOR_DATA_PLANE=$plane \
        CORRIDOR_BIN="${binary[$name]}" "${private_hosts[@]}" "$root/bench/corridor-candidate.sh"
done
for name in "${names[@]}"; do wait_port "${port[$name]}"; done

# ---- each proxy relays an allowed name and refuses a denied one
through() { curl -sk -m 10 -p -x "http://127.0.0.1:$1" "${@:2}"; }
for name in "${names[@]}"; do
    [ "$(through "${port[$name]}" "https://api.allowed.test:$origin_port/")" = ok ] || { echo "$name did not relay" >&2; exit 1; }
    if through "${port[$name]}" -o /dev/null "https://evil.denied.test:$origin_port/"; then echo "$name did not refuse evil.denied.test" >&2; exit 1; fi
done
echo "proxies up: ${names[*]} (run dir $run)"

cpu() { python3 "$here/proc_cpu.py" "${pid[$1]}"; }
rss() { python3 "$util" proc "${pid[$1]}" | cut -d' ' -f2; }
results="$run/results.tsv"
: > "$results"
for rep in $(seq 1 "$reps"); do
    shift_by=$(( (rep - 1) % ${#names[@]} ))
    order=("${names[@]:$shift_by}" "${names[@]:0:$shift_by}")
    for name in "${order[@]}"; do
        before=$(cpu "$name")
        out=$(python3 "$here/connect_load.py" --port "${port[$name]}" --target "api.allowed.test:$origin_port" \
              --sni api.allowed.test --count "$conns" 2>"$run/logs/load-$name.err")
        after=$(cpu "$name")
        ok=$(echo "$out" | sed 's/.*ok=\([0-9]*\).*/\1/'); seconds=$(echo "$out" | sed 's/.*seconds=\([0-9.]*\).*/\1/')
        failed=$(echo "$out" | sed 's/.*failed=\([0-9]*\).*/\1/')
        echo -e "$rep\t$name\tconn\t$ok\t$failed\t$seconds\t$((after - before))" >> "$results"
    done
    for name in "${order[@]}"; do
        before=$(cpu "$name"); bytes=0
        for _ in $(seq 1 "$bulk_runs"); do
            size=$(through "${port[$name]}" -o /dev/null -w '%{size_download}' "https://bulk.allowed.test:$origin_port/big.bin")
            bytes=$((bytes + ${size%.*}))
        done
        after=$(cpu "$name")
        echo -e "$rep\t$name\tbulk\t$bytes\t0\t0\t$((after - before))" >> "$results"
    done
done
for name in "${names[@]}"; do
    sleep 1
    before=$(rss "$name")
    python3 "$peers/tools/hold_conns.py" --port "${port[$name]}" --sni api.allowed.test --count "$idle" \
        --connect "api.allowed.test:$origin_port" --hold 120 > "$run/logs/hold-$name.out" 2>&1 &
    holder=$!
    for _ in $(seq 1 600); do grep -q READY "$run/logs/hold-$name.out" && break; sleep 0.1; done
    sleep 2
    after=$(rss "$name")
    held=$(sed -n 's/.*READY ok=\([0-9]*\).*/\1/p' "$run/logs/hold-$name.out")
    kill "$holder" 2>/dev/null || true; wait "$holder" 2>/dev/null || true
    echo -e "0\t$name\tidle\t${held:-0}\t0\t0\t$((after - before))" >> "$results"
done
python3 "$here/summarize.py" "$results" "$conns"
echo "raw results: $results"
