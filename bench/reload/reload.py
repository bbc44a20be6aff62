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
import argparse, os, random, signal, socket, ssl, subprocess, sys, tempfile, threading, time, urllib.request

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
a = p.parse_args()

run = tempfile.mkdtemp(prefix="corridor-reload-")
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


def write_config(services):
    parts = [f"""apiVersion: corridor.dev/v1alpha1
kind: GatewayConfig
metadata: {{name: reload-bench}}
spec:
  listeners: {{tls: 127.0.0.1:{a.tls_port}, admin: 127.0.0.1:{a.admin_port}}}
  tls: {{upstreamPort: {origin_port}}}
  resolver: {{static: {{"*.reload.test": [127.0.0.1]}}, system: false}}
  destinations: {{allowPrivate: [127.0.0.1/32]}}
  limits: {{maxConnections: 20000, idleTimeout: 600s}}
  logging: {{accessLog: {{file: {run}/access.log}}}}
---
apiVersion: corridor.dev/v1alpha1
kind: Workload
metadata: {{name: bench, namespace: bench}}
spec: {{addresses: [127.0.0.0/8], serviceAccount: client, labels: {{app: client}}}}
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


def one_connection(name, timeout=10):
    with socket.create_connection(("127.0.0.1", a.tls_port), timeout=timeout) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(b"ECHO\nping")
            got = b""
            while len(got) < 4:
                chunk = tls.recv(16)
                if not chunk:
                    raise ConnectionError("closed before the echo")
                got += chunk


try:
    write_config(a.services)
    log(f"{a.services} services: {os.path.getsize(config) / 1e6:.1f} MB of YAML")
    started = time.monotonic()
    gw = subprocess.Popen([a.bin, "run", "--config", config, "--workers", "1", "--log-level", "warning"],
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
                tls.sendall(b"tick")
                got = b""
                while len(got) < 4:
                    chunk = tls.recv(16)
                    if not chunk:
                        raise ConnectionError("closed")
                    got += chunk
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
    print(f"| services | ready after start | reload: new service live, median / max | reload: generation visible, median / max "
          f"| new connections during reloads: ok / failed | long-lived connections kept | RSS MiB |")
    print("|---|---|---|---|---|---|---|")
    print(f"| {a.services:,} | {ready_s:.2f} s | {lives[len(lives) // 2] * 1000:.0f} / {lives[-1] * 1000:.0f} ms "
          f"| {gens[len(gens) // 2] * 1000:.0f} / {gens[-1] * 1000:.0f} ms | {ok_during:,} / {failed_during} "
          f"| {a.long_lived - len(long_failed)} / {a.long_lived} | {rss} |")
    for e in stats["errors"][:5] + long_failed[:5]:
        print(f"  failure: {e}")
    sys.exit(1 if failed_during or long_failed else 0)
finally:
    stop_all()
