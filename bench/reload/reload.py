#!/usr/bin/env python3
"""Policy reload with 10,000 ExternalServices under load (issue: "no connection dropped, new
snapshot live in well under a second").

Run by bench/reload/run.sh after a release build. On 127.0.0.1 only:
  - a throwaway CA and a certificate for *.reload.test; the TLS echo origin (Tests/Support/tls_upstream.py);
  - corridor (release) with a config of N ExternalServices (svc-<i>.reload.test, one host each),
    one EgressPolicy per 100 services, a Workload for 127.0.0.0/8, static resolution to the origin;
  - load: T threads opening new TLS connections through the tls listener to random registered
    names (handshake verified, a few bytes echoed), and L long-lived connections that echo once a
    second for the whole run;
  - R reloads under that load: each rewrites the file with one more service and sends SIGHUP.

Measured: time to ready on N services, per reload the time from SIGHUP until a connection to the
new service succeeds (the new snapshot is live) and until /metrics shows the new generation, and
every connection that failed (new or long-lived) during the reloads. Prints a markdown table.
"""
import argparse, json, os, random, signal, socket, ssl, subprocess, sys, tempfile, threading, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
UPSTREAM = os.path.join(ROOT, "Tests", "Support", "tls_upstream.py")

p = argparse.ArgumentParser()
p.add_argument("--services", type=int, default=10000)
p.add_argument("--reloads", type=int, default=5)
p.add_argument("--threads", type=int, default=4)
p.add_argument("--long-lived", type=int, default=50)
p.add_argument("--bin", default=os.path.join(ROOT, ".build", "release", "corridor"))
p.add_argument("--tls-port", type=int, default=19543)
p.add_argument("--admin-port", type=int, default=19500)
p.add_argument("--kubernetes", action="store_true",
               help="Kubernetes mode: the services and policies come from the fake API server (Tests/Support/fake_apiserver.py); "
                    "each 'reload' applies one new ExternalService and EgressPolicy through the API")
a = p.parse_args()
FAKE = os.path.join(ROOT, "Tests", "Support", "fake_apiserver.py")

run = tempfile.mkdtemp(prefix="corridor-reload-")
print(f"run dir: {run}", file=sys.stderr)
procs = []


def log(msg):
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(*cmd):
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def stop_all():
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()


# ---------------------------------------------------------------- PKI and origin
ca_key, ca_crt = f"{run}/ca.key", f"{run}/ca.crt"
key, csr, crt, ext = f"{run}/origin.key", f"{run}/origin.csr", f"{run}/origin.crt", f"{run}/ext.cnf"
sh("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", ca_key,
   "-out", ca_crt, "-days", "2", "-subj", "/CN=corridor reload bench CA")
sh("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-keyout", key, "-out", csr,
   "-subj", "/CN=reload.test")
open(ext, "w").write("subjectAltName=DNS:*.reload.test\n")
sh("openssl", "x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial", "-out", crt, "-days", "2",
   "-extfile", ext)
origin = subprocess.Popen([sys.executable, UPSTREAM, "--cert", crt, "--key", key, "--log", "/dev/null"],
                          stdout=subprocess.PIPE, text=True)
procs.append(origin)
origin_port = int(origin.stdout.readline().split()[1])


# ---------------------------------------------------------------- config
config = f"{run}/corridor.yaml"


def service_object(i):
    return {"apiVersion": "corridor.dev/v1alpha1", "kind": "ExternalService", "metadata": {"name": f"svc-{i}", "generation": 1},
            "spec": {"hosts": [f"svc-{i}.reload.test"], "ports": [{"number": origin_port, "protocol": "TLS"}]}}


def policy_object(start, stop):
    return {"apiVersion": "corridor.dev/v1alpha1", "kind": "EgressPolicy",
            "metadata": {"name": f"grant-{start}", "namespace": "bench", "generation": 1},
            "spec": {"podSelector": {"matchLabels": {"app": "client"}},
                     "egress": [{"to": [{"externalService": f"svc-{i}"} for i in range(start, stop)]}]}}


def gateway_yaml():
    return f"""apiVersion: corridor.dev/v1alpha1
kind: GatewayConfig
metadata: {{name: reload-bench}}
spec:
  listeners: {{tls: 127.0.0.1:{a.tls_port}, admin: 127.0.0.1:{a.admin_port}}}
  tls: {{upstreamPort: {origin_port}}}
  resolver: {{static: {{"*.reload.test": [127.0.0.1]}}, system: false}}
  destinations: {{allowPrivate: [127.0.0.1/32]}}
  limits: {{maxConnections: 20000, idleTimeout: 600s}}
  logging: {{accessLog: {{file: {run}/access.log}}}}
"""


def write_config(services):
    if a.kubernetes:
        # The file holds the GatewayConfig only; everything else is in the API.
        open(config, "w").write(gateway_yaml())
        return
    parts = [gateway_yaml(), """---
apiVersion: corridor.dev/v1alpha1
kind: Workload
metadata: {name: bench, namespace: bench}
spec: {addresses: [127.0.0.0/8], serviceAccount: client, labels: {app: client}}
"""]
    for i in range(services):
        parts.append(f"---\napiVersion: corridor.dev/v1alpha1\nkind: ExternalService\nmetadata: {{name: svc-{i}}}\n"
                     f"spec: {{hosts: [svc-{i}.reload.test], ports: [{{number: {origin_port}, protocol: TLS}}]}}\n")
    for start in range(0, services, 100):
        names = ", ".join(f"{{externalService: svc-{i}}}" for i in range(start, min(services, start + 100)))
        parts.append(f"---\napiVersion: corridor.dev/v1alpha1\nkind: EgressPolicy\nmetadata: {{name: grant-{start}, namespace: bench}}\n"
                     f"spec: {{podSelector: {{matchLabels: {{app: client}}}}, egress: [{{to: [{names}]}}]}}\n")
    tmp = config + ".tmp"
    open(tmp, "w").write("".join(parts))
    os.replace(tmp, config)


def admin(path):
    with urllib.request.urlopen(f"http://127.0.0.1:{a.admin_port}{path}", timeout=5) as r:
        return r.read().decode()


def generation():
    for line in admin("/metrics").splitlines():
        if line.startswith("corridor_policy_generation "):
            return int(float(line.split()[1]))
    return -1


ctx = ssl.create_default_context(cafile=ca_crt)


def echo(tls, payload):
    """Sends `payload` and reads it back from the echo origin."""
    tls.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = tls.recv(16)
        if not chunk:
            raise ConnectionError("closed before the echo")
        got += chunk


def one_connection(name, timeout=10):
    with socket.create_connection(("127.0.0.1", a.tls_port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(b"ECHO\n")
            echo(tls, b"ping")


def control(method, path, body=None):
    request = urllib.request.Request(f"http://127.0.0.1:{control_port}{path}", method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as r:
        return r.read()


try:
    write_config(a.services)
    extra = []
    if a.kubernetes:
        state = f"{run}/state.json"
        items = [service_object(i) for i in range(a.services)]
        items += [policy_object(s, min(a.services, s + 100)) for s in range(0, a.services, 100)]
        items.append({"apiVersion": "v1", "kind": "Pod",
                      "metadata": {"name": "client", "namespace": "bench", "labels": {"app": "client"}},
                      "spec": {"serviceAccountName": "client", "nodeName": "node-a", "containers": [{"name": "c", "image": "c"}]},
                      "status": {"phase": "Running", "podIP": "127.0.0.1", "podIPs": [{"ip": "127.0.0.1"}]}})
        json.dump({"items": items}, open(state, "w"))
        fake = subprocess.Popen([sys.executable, FAKE, "--state", state, "--bookmark-interval", "60"],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        procs.append(fake)
        ports = dict(kv.split("=") for kv in fake.stdout.readline().split()[1:])
        control_port = int(ports["control"])
        kubeconfig = f"{run}/kubeconfig"
        open(kubeconfig, "w").write(f"""apiVersion: v1
kind: Config
current-context: fake
clusters: [{{name: fake, cluster: {{server: "http://127.0.0.1:{ports['api']}"}}}}]
users: [{{name: u, user: {{}}}}]
contexts: [{{name: fake, context: {{cluster: fake, user: u}}}}]
""")
        extra = ["--kubeconfig", kubeconfig]
        log(f"{a.services} services and {len(items) - a.services - 1} policies in the fake API server")
    else:
        log(f"{a.services} services: {os.path.getsize(config) / 1e6:.1f} MB of YAML")
    started = time.monotonic()
    gw = subprocess.Popen([a.bin, "run", "--config", config, "--workers", "1", "--log-level", os.environ.get("CORRIDOR_LOG_LEVEL", "warning")] + extra,
                          stdout=subprocess.DEVNULL, stderr=open(f"{run}/corridor.err", "w"))
    procs.append(gw)
    while True:
        try:
            if admin("/readyz").startswith("ready"):
                break
        except OSError:
            pass
        if gw.poll() is not None:
            sys.exit(f"corridor exited: {open(run + '/corridor.err').read()}")
        time.sleep(0.01)
    ready_s = time.monotonic() - started
    log(f"ready in {ready_s:.2f} s")

    # ------------------------------------------------------------ load
    stop = threading.Event()
    stats = {"ok": 0, "failed": 0, "errors": []}
    lock = threading.Lock()

    def churn():
        rng = random.Random()
        while not stop.is_set():
            try:
                one_connection(f"svc-{rng.randrange(a.services)}.reload.test")
                with lock:
                    stats["ok"] += 1
            except Exception as e:  # noqa: BLE001 (every failure is the result)
                with lock:
                    stats["failed"] += 1
                    stats["errors"].append(repr(e))

    long_failed = []

    def long_lived(i):
        try:
            raw = socket.create_connection(("127.0.0.1", a.tls_port), timeout=10)
            tls = ctx.wrap_socket(raw, server_hostname=f"svc-{i}.reload.test")
            tls.sendall(b"ECHO\n")
            while not stop.is_set():
                echo(tls, b"tick")
                time.sleep(1)
            tls.close()
        except Exception as e:  # noqa: BLE001
            with lock:
                long_failed.append(repr(e))

    threads = [threading.Thread(target=churn) for _ in range(a.threads)]
    threads += [threading.Thread(target=long_lived, args=(i,)) for i in range(a.long_lived)]
    for t in threads:
        t.start()
    time.sleep(2)

    # ------------------------------------------------------------ reloads
    results = []
    for r in range(a.reloads):
        services = a.services + r + 1
        new_name = f"svc-{services - 1}.reload.test"
        before = generation()
        if a.kubernetes:
            t0 = time.monotonic()
            control("POST", "/objects", {"items": [service_object(services - 1), policy_object(services - 1, services)]})
        else:
            write_config(services)
            t0 = time.monotonic()
            gw.send_signal(signal.SIGHUP)
        live = gen = None
        while live is None or gen is None:
            now = time.monotonic() - t0
            if now > 30:
                break
            if gen is None and generation() > before:
                gen = now
            if live is None:
                try:
                    one_connection(new_name, timeout=2)
                    live = time.monotonic() - t0
                except Exception:  # noqa: BLE001 (not live yet: denied)
                    pass
            time.sleep(0.005)
        results.append((live, gen))
        log(f"reload {r + 1}: new service reachable after {live * 1000:.0f} ms, generation after {gen * 1000:.0f} ms")
        time.sleep(2)
    with lock:
        ok_during, failed_during = stats["ok"], stats["failed"]
    stop.set()
    for t in threads:
        t.join(30)

    lives = sorted(x[0] for x in results if x[0] is not None)
    gens = sorted(x[1] for x in results if x[1] is not None)
    rss = int(open(f"/proc/{gw.pid}/status").read().split("VmRSS:")[1].split()[0]) // 1024
    print(f"| mode | services | ready after start | reload: new service live, median / max | reload: generation visible, median / max "
          f"| new connections during reloads: ok / failed | long-lived connections kept | RSS MiB |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| {'kubernetes (one object applied)' if a.kubernetes else 'file (SIGHUP)'} | {a.services:,} | {ready_s:.2f} s | {lives[len(lives) // 2] * 1000:.0f} / {lives[-1] * 1000:.0f} ms "
          f"| {gens[len(gens) // 2] * 1000:.0f} / {gens[-1] * 1000:.0f} ms | {ok_during:,} / {failed_during} "
          f"| {a.long_lived - len(long_failed)} / {a.long_lived} | {rss} |")
    for e in stats["errors"][:5] + long_failed[:5]:
        print(f"  failure: {e}")
    sys.exit(1 if failed_during or long_failed else 0)
finally:
    stop_all()
