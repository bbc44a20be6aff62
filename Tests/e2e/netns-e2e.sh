#!/usr/bin/env bash
# End-to-end proof of transparent capture and bypass prevention, on real Linux networking.
# Needs root, iproute2, iptables, dnsmasq, curl, openssl, python3.
#
# Builds, with no route out of it:
#   pod A (10.77.1.2, payments/checkout) --\
#                                           node (Corridor, iptables capture) -- outside (10.88.9.2 real TLS + DNS,
#   pod B (10.77.2.2, shop/web) -----------/                                              10.88.9.3 decoy TLS)
# runs unmodified clients in the pods (no proxy settings) and checks what reaches the outside.
# Everything it creates is removed on exit, whatever happened. Prints "N passed, M failed".
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
BIN=${CORRIDOR_BIN:-$ROOT/.build/debug/corridor}
SUPPORT=$ROOT/Tests/Support
PREFIX=${E2E_PREFIX:-cor$$}
NS_A=${PREFIX}a NS_B=${PREFIX}b NS_C=${PREFIX}c NS_N=${PREFIX}n NS_O=${PREFIX}o
WORK=$(mktemp -d /tmp/corridor-e2e.XXXXXX)
PIDS=()
passed=0 failed=0

cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null; done
    sleep 0.2
    for pid in "${PIDS[@]}"; do kill -9 "$pid" 2>/dev/null; done
    for ns in "$NS_A" "$NS_B" "$NS_C" "$NS_N" "$NS_O"; do
        ip netns pids "$ns" 2>/dev/null | xargs -r kill -9 2>/dev/null
        ip netns del "$ns" 2>/dev/null
        rm -rf "/etc/netns/$ns"
    done
    [ -n "${KEEP_E2E_WORK:-}" ] || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

check() {  # check NAME COMMAND...: one assertion
    local name=$1; shift
    if "$@"; then passed=$((passed + 1)); echo "ok - $name"
    else failed=$((failed + 1)); echo "not ok - $name"; fi
}
in_ns() { local ns=$1; shift; ip netns exec "$ns" "$@"; }
bg_in_ns() { local ns=$1 log=$2; shift 2; ip netns exec "$ns" "$@" >"$log" 2>&1 & PIDS+=($!); }
# A record is written when its connection ends, which can be a moment after the client is done.
log_has_now() { grep -F -- "$1" "$WORK/access.log" | grep -qF -- "$2"; }
log_has() { local i; for i in $(seq 1 30); do log_has_now "$1" "$2" && return 0; sleep 0.1; done; return 1; }
lines() { [ -f "$1" ] && wc -l <"$1" || echo 0; }
wait_for() { local i; for i in $(seq 1 100); do "$@" && return 0; sleep 0.1; done; return 1; }

echo "# e2e prefix $PREFIX, work dir $WORK"

# --- topology -------------------------------------------------------------------------------
for ns in "$NS_A" "$NS_B" "$NS_C" "$NS_N" "$NS_O"; do
    ip netns add "$ns" || exit 1
    in_ns "$ns" ip link set lo up
done
ip link add va netns "$NS_A" type veth peer name na netns "$NS_N"
ip link add vb netns "$NS_B" type veth peer name nb netns "$NS_N"
ip link add vo netns "$NS_O" type veth peer name nout netns "$NS_N"
ip link add vc netns "$NS_C" type veth peer name nc netns "$NS_N"
in_ns "$NS_C" ip addr add 10.66.3.2/24 dev vc; in_ns "$NS_C" ip link set vc up
in_ns "$NS_N" ip addr add 10.66.3.1/24 dev nc; in_ns "$NS_N" ip link set nc up
in_ns "$NS_A" ip addr add 10.77.1.2/24 dev va; in_ns "$NS_A" ip link set va up
in_ns "$NS_B" ip addr add 10.77.2.2/24 dev vb; in_ns "$NS_B" ip link set vb up
in_ns "$NS_O" ip addr add 10.88.9.2/24 dev vo; in_ns "$NS_O" ip addr add 10.88.9.3/24 dev vo; in_ns "$NS_O" ip link set vo up
in_ns "$NS_N" ip addr add 10.77.1.1/24 dev na; in_ns "$NS_N" ip link set na up
in_ns "$NS_N" ip addr add 10.77.2.1/24 dev nb; in_ns "$NS_N" ip link set nb up
in_ns "$NS_N" ip addr add 10.88.9.1/24 dev nout; in_ns "$NS_N" ip link set nout up
in_ns "$NS_A" ip route add default via 10.77.1.1
in_ns "$NS_B" ip route add default via 10.77.2.1
in_ns "$NS_C" ip route add default via 10.66.3.1
# IPv6 for pod A and the outside (nodad: usable at once).
in_ns "$NS_A" ip -6 addr add fd77:1::2/64 dev va nodad
in_ns "$NS_N" ip -6 addr add fd77:1::1/64 dev na nodad
in_ns "$NS_O" ip -6 addr add fd88:9::2/64 dev vo nodad
in_ns "$NS_N" ip -6 addr add fd88:9::1/64 dev nout nodad
in_ns "$NS_A" ip -6 route add default via fd77:1::1
in_ns "$NS_O" ip -6 route add fd77::/16 via fd88:9::1
in_ns "$NS_N" sysctl -qw net.ipv6.conf.all.forwarding=1
in_ns "$NS_O" ip route add 10.77.0.0/16 via 10.88.9.1     # replies to the pods; nothing else
in_ns "$NS_O" ip route add 10.66.0.0/16 via 10.88.9.1
in_ns "$NS_N" sysctl -qw net.ipv4.ip_forward=1
for ns in "$NS_A" "$NS_B" "$NS_C" "$NS_N"; do
    mkdir -p "/etc/netns/$ns"
    echo "nameserver 10.88.9.2" >"/etc/netns/$ns/resolv.conf"
    printf '127.0.0.1 localhost\n' >"/etc/netns/$ns/hosts"
done

# --- the outside: DNS, the real service, a decoy, a plain port and a UDP port ------------------
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 -keyout "$WORK/ca.key" -out "$WORK/ca.pem" \
    -subj "/CN=Corridor e2e CA" 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/srv.key" -out "$WORK/srv.csr" \
    -subj /CN=api.outside.test 2>/dev/null
printf 'subjectAltName=DNS:api.outside.test,DNS:other.outside.test,DNS:api6.outside.test\n' >"$WORK/san.ext"
openssl x509 -req -in "$WORK/srv.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial -days 1 \
    -extfile "$WORK/san.ext" -out "$WORK/srv.pem" 2>/dev/null
bg_in_ns "$NS_O" "$WORK/dnsmasq.out" dnsmasq --keep-in-foreground --no-resolv --no-hosts --bind-interfaces \
    --listen-address=10.88.9.2 --user=root --pid-file="$WORK/dnsmasq.pid" \
    --address=/api.outside.test/10.88.9.2 --address=/other.outside.test/10.88.9.2 --address=/api6.outside.test/fd88:9::2
bg_in_ns "$NS_O" "$WORK/real.out" python3 "$SUPPORT/tls_upstream.py" --host 10.88.9.2 --port 443 \
    --cert "$WORK/srv.pem" --key "$WORK/srv.key" --log "$WORK/real.log"
bg_in_ns "$NS_O" "$WORK/real6.out" python3 "$SUPPORT/tls_upstream.py" --host fd88:9::2 --port 443 \
    --cert "$WORK/srv.pem" --key "$WORK/srv.key" --log "$WORK/real6.log"
bg_in_ns "$NS_O" "$WORK/decoy.out" python3 "$SUPPORT/tls_upstream.py" --host 10.88.9.3 --port 443 \
    --cert "$WORK/srv.pem" --key "$WORK/srv.key" --log "$WORK/decoy.log"
bg_in_ns "$NS_O" "$WORK/plain.out" python3 -c '
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("10.88.9.2", 8080)); s.listen()
while True:
    c, a = s.accept(); open(sys.argv[1], "a").write(f"{a}\n"); c.close()' "$WORK/plain.log"
bg_in_ns "$NS_O" "$WORK/udp.out" python3 -c '
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("10.88.9.2", 443))
while True:
    d, a = s.recvfrom(2048); open(sys.argv[1], "a").write(f"{a} {len(d)}\n")' "$WORK/udp.log"

# A server-speaks-first TCP service (like a database) on both outside addresses.
for ip in 10.88.9.2 10.88.9.3; do
    bg_in_ns "$NS_O" "$WORK/db-$ip.out" python3 -c '
import socket, sys, threading
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind((sys.argv[1], 5432)); s.listen()
def serve(c):
    c.sendall(b"HELLO\n"); f = c.makefile("rb")
    for line in f: c.sendall(line)
    c.close()
while True:
    c, a = s.accept(); open(sys.argv[2], "a").write(f"{a}\n"); threading.Thread(target=serve, args=(c,), daemon=True).start()' "$ip" "$WORK/db-$ip.log"
done

# --- the gateway on the node ------------------------------------------------------------------
write_config() {  # write_config MISMATCH_MODE [MODE [ALLOW_PRIVATE]]
cat >"$WORK/corridor.yaml" <<YAML
apiVersion: corridor.dev/v1alpha1
kind: GatewayConfig
metadata: {name: e2e}
spec:
  mode: ${2:-Enforce}
  destinations: {allowPrivate: [${3:-}]}
  listeners: {tls: "[::]:15443", http: "[::]:15080", admin: 127.0.0.1:15000}   # dual-stack
  transparent: {addressMismatch: $1}
  tls: {dataPlane: ${CORRIDOR_TEST_DATA_PLANE:-Splice}}
  resolver: {cacheTTL: 0s}
  logging: {accessLog: {file: $WORK/access.log}}
---
apiVersion: corridor.dev/v1alpha1
kind: Workload
metadata: {name: checkout, namespace: payments}
spec: {addresses: [10.77.1.2/32, fd77:1::2/128], serviceAccount: checkout, labels: {app: checkout}}
---
apiVersion: corridor.dev/v1alpha1
kind: Workload
metadata: {name: web, namespace: shop}
spec: {addresses: [10.77.2.2/32], serviceAccount: web, labels: {app: web}}
---
apiVersion: corridor.dev/v1alpha1
kind: ExternalService
metadata: {name: outside-api}
spec:
  hosts: [api.outside.test, api6.outside.test]
  addresses: [10.88.9.0/24, "fd88:9::/64"]   # the "outside" of this test lives in private ranges
  ports:
    - {number: 443, protocol: TLS}
    - {number: 80, protocol: HTTP, originateTLS: {port: 443, caBundleFile: $WORK/ca.pem}}
---
apiVersion: corridor.dev/v1alpha1
kind: EgressPolicy
metadata: {name: checkout-egress, namespace: payments}
spec:
  podSelector: {matchLabels: {app: checkout}}
  egress: [{to: [{externalService: outside-api}, {externalService: legacy-db}]}]
---
apiVersion: corridor.dev/v1alpha1
kind: ExternalService
metadata: {name: legacy-db}
spec:
  addresses: [10.88.9.2/32]     # TCP: no name to check, so only this address
  ports: [{number: 5432, protocol: TCP}]
YAML
}
write_config Log
bg_in_ns "$NS_N" "$WORK/corridor.err" "$BIN" run --config "$WORK/corridor.yaml" --workers 1
CORRIDOR_PID=${PIDS[-1]}
in_ns "$NS_N" "$BIN" iptables --config "$WORK/corridor.yaml" --topology node --pod-cidr 10.77.0.0/16 \
    --cluster-cidr 10.77.0.0/16 --dns 10.88.9.2 --apply || { echo "not ok - corridor iptables --apply"; exit 1; }
in_ns "$NS_N" "$BIN" iptables --config "$WORK/corridor.yaml" --topology node --pod-cidr 10.77.0.0/16 \
    --cluster-cidr 10.77.0.0/16 --dns 10.88.9.2 --apply   # twice: idempotent
in_ns "$NS_N" "$BIN" iptables --config "$WORK/corridor.yaml" --topology node --pod-cidr fd77::/16 \
    --cluster-cidr fd77::/16 --ipv6 --apply || { echo "not ok - corridor iptables --ipv6 --apply"; exit 1; }
check "applying the rules twice installs each jump once" \
    test "$(in_ns "$NS_N" iptables -t nat -S PREROUTING | grep -c CORRIDOR-CAPTURE)" = 1
wait_for in_ns "$NS_N" curl -sf -o /dev/null http://127.0.0.1:15000/readyz || { echo "not ok - gateway ready"; cat "$WORK/corridor.err"; exit 1; }
wait_for test -s "$WORK/dnsmasq.pid"
wait_for in_ns "$NS_O" python3 -c 'import socket; socket.create_connection(("10.88.9.2", 443), 1).close()'
wait_for in_ns "$NS_O" python3 -c 'import socket; socket.create_connection(("10.88.9.3", 443), 1).close()'
: >"$WORK/real.log"; : >"$WORK/decoy.log"

curl_a() { in_ns "$NS_A" curl -sS --max-time 10 --cacert "$WORK/ca.pem" "$@"; }
curl_b() { in_ns "$NS_B" curl -sS --max-time 10 --cacert "$WORK/ca.pem" "$@"; }

# --- allowed for the granted identity, refused for the other ----------------------------------
check "pod A (payments/checkout) reaches api.outside.test through the capture" test "$(curl_a https://api.outside.test/)" = "ok"
check "its record names the identity, the SNI, the rule and the original destination" \
    log_has '"sni":"api.outside.test"' '"namespace":"payments","workload":"checkout"'
check "... decided allow by payments/checkout-egress" log_has '"originalDst":"10.88.9.2:443"' '"egressPolicy":"payments/checkout-egress"'
check "pod B (shop/web) is refused the same name" test -z "$(curl_b https://api.outside.test/ 2>/dev/null)"
check "its record names shop/web and why" log_has '"namespace":"shop","workload":"web"' 'ExternalService outside-api is not granted to shop/sa:web'

# --- IPv6: captured and judged the same way -------------------------------------------------------
check "IPv6: pod A reaches api6.outside.test through the capture" test "$(curl_a -6 https://api6.outside.test/)" = "ok"
check "... recorded with the IPv6 original destination and pod A's identity" \
    log_has '"originalDst":"[fd88:9::2]:443"' '"namespace":"payments","workload":"checkout"'
check "IPv6: straight to the outside IPv6 address (no SNI) is refused" test -z "$(curl_a -6 -k 'https://[fd88:9::2]/' 2>/dev/null)"
check "IPv6: an unregistered port is refused" test -z "$(curl_a -6 'http://[fd88:9::2]:8080/' 2>/dev/null)"

# --- the ways around ------------------------------------------------------------------------
before=$(lines "$WORK/real.log")
check "straight to the outside IP (no SNI) is refused" test -z "$(curl_a -k https://10.88.9.2/ 2>/dev/null)"
check "... and logged as a ClientHello without SNI" log_has '"src":"10.77.1.2:' 'invalid ClientHello'
check "... and never reached the outside" test "$(lines "$WORK/real.log")" = "$before"
check "an unregistered port (8080) is refused" test -z "$(curl_a http://10.88.9.2:8080/ 2>/dev/null)"
check "... and never reached the outside" test "$(lines "$WORK/plain.log")" = 0
in_ns "$NS_A" python3 -c '
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in (443, 443, 8443):
    s.sendto(b"\x0c" + b"quic?" * 40, ("10.88.9.2", port))' 2>/dev/null
sleep 0.5
check "UDP 443 (QUIC) never reaches the outside" test "$(lines "$WORK/udp.log")" = 0
check "an allowed SNI sent to a forbidden address is served by the resolved address" \
    test "$(curl_a --resolve api.outside.test:443:10.88.9.3 https://api.outside.test/)" = "ok"
check "... the decoy address got nothing" test "$(lines "$WORK/decoy.log")" = 0
check "... the mismatch is recorded" log_has '"originalDst":"10.88.9.3:443"' '"addressMismatch":true'
check "... with the address_mismatch signal" log_has '"originalDst":"10.88.9.3:443"' '"address_mismatch"'

# --- plain HTTP leaves as TLS ---------------------------------------------------------------------
tls_before=$(lines "$WORK/real.log")
check "plain HTTP from pod A to api.outside.test:80 is answered through TLS origination" \
    test "$(in_ns "$NS_A" curl -sS --max-time 10 http://api.outside.test/plain)" = "ok"
check "... the upstream got it over TLS, with the right SNI" \
    test "$(tail -n +$((tls_before + 1)) "$WORK/real.log" | grep -c '^api.outside.test TLSv1')" -ge 1
check "... one record per request, with method, host and status" log_has '"listener":"http"' '"method":"GET","host":"api.outside.test"'
check "... and where the redirected client dialled" log_has '"listener":"http"' '"originalDst":"10.88.9.2:80"'
check "plain HTTP from pod B is refused with 403" \
    test "$(in_ns "$NS_B" curl -s -o /dev/null -w '%{http_code}' --max-time 10 http://api.outside.test/plain)" = "403"
check "plain HTTP with an allowed Host sent to a forbidden address is served by the resolved address" \
    test "$(curl_a --resolve api.outside.test:80:10.88.9.3 http://api.outside.test/spoofed)" = "ok"
check "... the mismatch is recorded" log_has '"originalDst":"10.88.9.3:80"' '"addressMismatch":true'

# --- a TCP service declared by address -------------------------------------------------------
db_talk() {  # db_talk NS ADDRESS: prints what a banner-then-echo exchange got back
    in_ns "$1" python3 -c '
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], 5432), 5); f = s.makefile("rb")
    banner = f.readline(); s.sendall(b"ping\n"); echo = f.readline()
    print((banner + echo).decode().replace("\n", " ").strip())
except OSError as e:
    print("error", e)' "$2"
}
check "pod A reaches the TCP service at its declared address (server speaks first)" test "$(db_talk "$NS_A" 10.88.9.2)" = "HELLO ping"
check "... the record names the service and the rule" log_has '"originalDst":"10.88.9.2:5432"' 'grants ExternalService legacy-db (TCP 10.88.9.2 port 5432)'
check "pod B is refused the TCP service" test "$(db_talk "$NS_B" 10.88.9.2)" != "HELLO ping"
check "... the record says why" log_has '"namespace":"shop"' 'ExternalService legacy-db (TCP 10.88.9.2 port 5432) is not granted to shop/sa:web'
check "the same port at an address no service lists is refused" test "$(db_talk "$NS_A" 10.88.9.3)" != "HELLO ping"
check "... with the reason" log_has '"originalDst":"10.88.9.3:5432"' 'no ExternalService serves TCP 10.88.9.3 port 5432'
check "... and nothing reached that address" test "$(lines "$WORK/db-10.88.9.3.log")" = 0

# --- bytes relayed exactly, both ways, with half-close -------------------------------------------
echo_result=$(in_ns "$NS_A" python3 "$SUPPORT/tls_client.py" --host 10.88.9.2 --port 443 --sni api.outside.test \
    --ca "$WORK/ca.pem" --mode ECHO --bytes $((4 << 20)))
check "4 MiB echoed byte-exact through the capture" python3 -c '
import json, sys; r = json.loads(sys.argv[1]); sys.exit(0 if r.get("received") == 4 << 20 and r["receivedHash"] == r["sentHash"] else 1)' "$echo_result"
sink_result=$(in_ns "$NS_A" python3 "$SUPPORT/tls_client.py" --host 10.88.9.2 --port 443 --sni api.outside.test \
    --ca "$WORK/ca.pem" --mode SINK --bytes $((4 << 20)))
check "4 MiB uploaded then half-closed, the answer still comes back" python3 -c '
import json, sys; r = json.loads(sys.argv[1]); sys.exit(0 if r.get("received") == 4 << 20 and r["receivedHash"] == r["sentHash"] else 1)' "$sink_result"

# --- strict mode: the mismatch is denied after a reload ------------------------------------------
write_config Deny
kill -HUP "$CORRIDOR_PID"
wait_for grep -q "generation=2" "$WORK/corridor.err"
check "with addressMismatch: Deny, the spoofed address is refused" \
    test -z "$(curl_a --resolve api.outside.test:443:10.88.9.3 https://api.outside.test/ 2>/dev/null)"
check "... and logged as a denial naming the dialled address" log_has '"addressMismatch":true' 'the client dialled 10.88.9.3'
check "... while the honest client still gets through" test "$(curl_a https://api.outside.test/)" = "ok"
check "with addressMismatch: Deny, plain HTTP to the spoofed address gets 403" \
    test "$(curl_a -s -o /dev/null -w '%{http_code}' --resolve api.outside.test:80:10.88.9.3 http://api.outside.test/spoofed)" = "403"
check "... logged as a denial naming the dialled address" log_has '"listener":"http"' 'the client dialled 10.88.9.3'
check "an explicit proxy request (absolute form) reaching the gateway through another address is no mismatch" \
    test "$(curl_a -x http://10.88.9.3:80 http://api.outside.test/via-proxy)" = "ok"
check "the decoy never got a connection" test "$(lines "$WORK/decoy.log")" = 0

# --- gateway-wide Audit: what policy refuses goes through and is recorded; guards still refuse -----
write_config Deny Audit
kill -HUP "$CORRIDOR_PID"
wait_for grep -q "generation=3" "$WORK/corridor.err"
check "Audit: pod B reaches the TCP service it is not granted" test "$(db_talk "$NS_B" 10.88.9.2)" = "HELLO ping"
check "... recorded as audit with the reason it would be denied" \
    log_has '"decision":"audit"' 'would be denied (ExternalService legacy-db (TCP 10.88.9.2 port 5432) is not granted to shop/sa:web); the gateway is in Audit mode'
check "Audit: plain HTTP from pod B goes out through TLS origination" \
    test "$(in_ns "$NS_B" curl -sS --max-time 10 http://api.outside.test/plain)" = "ok"
check "... recorded as audit on the http listener" log_has '"listener":"http"' '"decision":"audit"'
check "Audit: an unlisted TCP address in a blocked range is still refused (a guard, not policy)" \
    test "$(db_talk "$NS_A" 10.88.9.3)" != "HELLO ping"
check "... and nothing reached it" test "$(lines "$WORK/db-10.88.9.3.log")" = 0
write_config Deny Audit 10.88.9.3/32
kill -HUP "$CORRIDOR_PID"
wait_for grep -q "generation=4" "$WORK/corridor.err"
check "Audit: the same address, no longer blocked, is reached though no service lists it" test "$(db_talk "$NS_A" 10.88.9.3)" = "HELLO ping"
check "... recorded as audit" log_has '"originalDst":"10.88.9.3:5432"' 'would be denied (no ExternalService serves TCP 10.88.9.3 port 5432)'
check "Audit: the spoofed-address guard still refuses" \
    test -z "$(curl_a --resolve api.outside.test:443:10.88.9.3 https://api.outside.test/ 2>/dev/null)"
write_config Deny
kill -HUP "$CORRIDOR_PID"
wait_for grep -q "generation=5" "$WORK/corridor.err"
check "back in Enforce, pod B is refused the TCP service again" test "$(db_talk "$NS_B" 10.88.9.2)" != "HELLO ping"

# --- per-pod topology: a gateway beside the app, the pod's own OUTPUT captured ---------------------
# Pod C (10.66.3.2, outside the node's captured pod CIDR) runs its own Corridor as root (the gateway
# user, exempt from capture) and the app as nobody.
chmod 755 "$WORK"; chmod 644 "$WORK/ca.pem"
cat >"$WORK/sidecar.yaml" <<YAML
apiVersion: corridor.dev/v1alpha1
kind: GatewayConfig
metadata: {name: sidecar}
spec:
  listeners: {tls: 127.0.0.1:15443, admin: 127.0.0.1:15000}
  tls: {dataPlane: ${CORRIDOR_TEST_DATA_PLANE:-Splice}}
  resolver: {cacheTTL: 0s}
  logging: {accessLog: {file: $WORK/sidecar-access.log}}
---
apiVersion: corridor.dev/v1alpha1
kind: Workload
metadata: {name: reports, namespace: finance}
spec: {addresses: [10.66.3.2/32, 127.0.0.1/32], serviceAccount: reports, labels: {app: reports}}
---
apiVersion: corridor.dev/v1alpha1
kind: ExternalService
metadata: {name: outside-api}
spec: {hosts: [api.outside.test], addresses: [10.88.9.0/24], ports: [{number: 443, protocol: TLS}]}
---
apiVersion: corridor.dev/v1alpha1
kind: EgressPolicy
metadata: {name: reports-egress, namespace: finance}
spec: {egress: [{to: [{externalService: outside-api}]}]}
YAML
bg_in_ns "$NS_C" "$WORK/sidecar.err" "$BIN" run --config "$WORK/sidecar.yaml" --workers 1
in_ns "$NS_C" "$BIN" iptables --config "$WORK/sidecar.yaml" --topology pod --gateway-uid 0 --dns 10.88.9.2 --apply \
    || echo "not ok - corridor iptables --topology pod --apply"
wait_for in_ns "$NS_C" curl -sf -o /dev/null http://127.0.0.1:15000/readyz
as_app() { in_ns "$NS_C" setpriv --reuid=65534 --regid=65534 --clear-groups "$@"; }
sidecar_has_now() { grep -F -- "$1" "$WORK/sidecar-access.log" | grep -qF -- "$2"; }
sidecar_has() { local i; for i in $(seq 1 30); do sidecar_has_now "$1" "$2" && return 0; sleep 0.1; done; return 1; }
check "pod topology: the app (as nobody) reaches api.outside.test through its own gateway" \
    test "$(as_app curl -sS --max-time 10 --cacert "$WORK/ca.pem" https://api.outside.test/)" = "ok"
check "... recorded with the pod's identity and original destination" sidecar_has '"namespace":"finance"' '"originalDst":"10.88.9.2:443"'
check "pod topology: an unregistered name is refused" \
    test -z "$(as_app curl -sS --max-time 10 --cacert "$WORK/ca.pem" https://other.outside.test/ 2>/dev/null)"
check "... with the reason" sidecar_has '"sni":"other.outside.test"' 'no ExternalService matches other.outside.test'
plain_before=$(lines "$WORK/plain.log")
check "pod topology: an unregistered port is refused" test -z "$(as_app curl -sS --max-time 5 http://10.88.9.2:8080/ 2>/dev/null)"
check "... and never reached the outside" test "$(lines "$WORK/plain.log")" = "$plain_before"
check "pod topology: UDP 443 (QUIC) from the app is refused at once (the send fails)" \
    sh -c "! ip netns exec $NS_C setpriv --reuid=65534 --regid=65534 --clear-groups bash -c 'printf quic >/dev/udp/10.88.9.2/443' 2>/dev/null"
sleep 0.3
check "pod topology: UDP 443 never reaches the outside" test "$(lines "$WORK/udp.log")" = 0
in_ns "$NS_C" "$BIN" iptables --config "$WORK/sidecar.yaml" --topology pod --gateway-uid 0 --dns 10.88.9.2 --remove
check "pod topology: --remove leaves no corridor chain or jump" test -z "$(in_ns "$NS_C" iptables-save | grep -i corridor)"

# --- the rules come off cleanly ---------------------------------------------------------------
in_ns "$NS_N" "$BIN" iptables --config "$WORK/corridor.yaml" --topology node --pod-cidr 10.77.0.0/16 \
    --cluster-cidr 10.77.0.0/16 --dns 10.88.9.2 --remove
in_ns "$NS_N" "$BIN" iptables --config "$WORK/corridor.yaml" --topology node --pod-cidr fd77::/16 \
    --cluster-cidr fd77::/16 --ipv6 --remove
check "corridor iptables --remove leaves no corridor chain or jump" \
    test -z "$(in_ns "$NS_N" iptables-save | grep -i corridor)$(in_ns "$NS_N" ip6tables-save | grep -i corridor)"

if [ "$failed" -gt 0 ]; then
    echo "# access log:"; cat "$WORK/access.log"; echo "# gateway:"; tail -20 "$WORK/corridor.err"
fi
echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
