#!/usr/bin/env python3
"""A soak of Corridor (release build) under mixed traffic, on 127.0.0.1 only.

Traffic, all at once for the whole run, through the CONNECT and tls listeners:
  - allowed: small HTTPS requests through CONNECT (curl), and through the tls listener;
  - denied: a name no ExternalService registers (403 / access_denied);
  - slow: clients that send half a ClientHello and stall until the handshake timeout cuts them;
  - reset: clients that connect and reset at once (SO_LINGER 0), before and after a CONNECT;
  - large: 20 MiB downloads through a tunnel, one after another;
  - idle: 200 tunnels held open for the whole run (the interim records and idle bookkeeping);
and a policy reload every minute (the file rewritten with one ExternalService more or less, then
SIGHUP). Every SAMPLE seconds: the gateway's RSS, open descriptors and CPU time (from /proc).
Writes samples.csv and soak.png (RSS, descriptors and CPU per interval over time) to --out, and
prints the counts of each kind of traffic and the first and last samples.
"""
import argparse, csv, os, random, signal, socket, ssl, struct, subprocess, sys, tempfile, threading, time, urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
UPSTREAM = os.path.join(ROOT, "Tests", "Support", "https_upstream.py")

p = argparse.ArgumentParser()
p.add_argument("--minutes", type=float, default=60)
p.add_argument("--sample", type=float, default=5)
p.add_argument("--bin", default=os.path.join(ROOT, ".build", "release", "corridor"))
p.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "soak-" + time.strftime("%Y%m%d-%H%M%S")))
a = p.parse_args()
os.makedirs(a.out, exist_ok=True)
run = tempfile.mkdtemp(prefix="corridor-soak-")
procs = []


def cleanup(*_):
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


signal.signal(signal.SIGTERM, lambda *_: (cleanup(), sys.exit(1)))

cert, key = os.path.join(run, "cert.pem"), os.path.join(run, "key.pem")
subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "2",
                "-keyout", key, "-out", cert, "-subj", "/CN=api.soak.test",
                "-addext", "subjectAltName=DNS:api.soak.test,DNS:denied.soak.test"], check=True, capture_output=True)
upstream = subprocess.Popen([sys.executable, UPSTREAM, "--cert", cert, "--key", key, "--log", os.devnull],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
procs.append(upstream)
up_port = int(upstream.stdout.readline().split()[1])


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


tls_port, connect_port, admin_port = free_port(), free_port(), free_port()
config = os.path.join(run, "corridor.yaml")
access_log = os.path.join(run, "access.log")


def write_config(extra_service):
    extra = ""
    if extra_service:
        extra = f"""---
apiVersion: corridor.dev/v1alpha1
kind: ExternalService
metadata: {{name: extra}}
spec: {{hosts: [extra.soak.test], ports: [{{number: {up_port}, protocol: TLS}}]}}
"""
    text = f"""apiVersion: corridor.dev/v1alpha1
kind: GatewayConfig
metadata: {{name: soak}}
spec:
  listeners: {{tls: "127.0.0.1:{tls_port}", connect: "127.0.0.1:{connect_port}", admin: "127.0.0.1:{admin_port}"}}
  tls: {{upstreamPort: {up_port}}}
  resolver: {{static: {{api.soak.test: [127.0.0.1], denied.soak.test: [127.0.0.1], extra.soak.test: [127.0.0.1]}}, system: false}}
  destinations: {{allowPrivate: [127.0.0.1/32]}}
  limits: {{handshakeTimeout: 3s, idleTimeout: 2h}}
  logging: {{accessLog: {{file: {access_log}, interimInterval: 1m}}}}
---
apiVersion: corridor.dev/v1alpha1
kind: Workload
metadata: {{name: soak, namespace: soak}}
spec: {{addresses: [127.0.0.0/8], serviceAccount: soak, labels: {{app: soak}}}}
---
apiVersion: corridor.dev/v1alpha1
kind: ExternalService
metadata: {{name: api}}
spec: {{hosts: [api.soak.test], ports: [{{number: {up_port}, protocol: TLS}}]}}
---
apiVersion: corridor.dev/v1alpha1
kind: EgressPolicy
metadata: {{name: soak, namespace: soak}}
spec:
  podSelector: {{matchLabels: {{app: soak}}}}
  egress: [{{to: [{{externalService: api}}{", {externalService: extra}" if extra_service else ""}]}}]
{extra}"""
    with open(config + ".next", "w") as f:
        f.write(text)
    os.replace(config + ".next", config)


write_config(False)
gateway = subprocess.Popen([a.bin, "run", "--config", config], stdout=subprocess.DEVNULL, stderr=open(os.path.join(run, "gateway.err"), "w"))
procs.append(gateway)
for _ in range(100):
    try:
        urllib.request.urlopen(f"http://127.0.0.1:{admin_port}/readyz", timeout=1)
        break
    except OSError:
        if gateway.poll() is not None:
            cleanup()
            sys.exit("the gateway did not start:\n" + open(os.path.join(run, "gateway.err")).read())
        time.sleep(0.1)

stop = threading.Event()
counts, failures, reasons = {}, {}, []
lock = threading.Lock()


def count(kind, ok=True, why=""):
    if stop.is_set():
        return  # the end of the run cuts what is in flight: not a finding
    with lock:
        (counts if ok else failures)[kind] = (counts if ok else failures).get(kind, 0) + 1
        if not ok and len(reasons) < 10:
            reasons.append(f"{time.strftime('%H:%M:%S')} {kind}: {why.strip()[:200]}")


def curl(host, path, via_connect=True):
    args = ["curl", "-sS", "-o", os.devnull, "-w", "%{http_code}", "--max-time", "60", "--cacert", cert]
    if via_connect:
        args += ["-x", f"http://127.0.0.1:{connect_port}"]
    else:
        args += ["--connect-to", f"{host}:{up_port}:127.0.0.1:{tls_port}"]
    return subprocess.run(args + [f"https://{host}:{up_port}{path}"], capture_output=True, text=True)


def allowed():
    while not stop.is_set():
        result = curl("api.soak.test", "/small", via_connect=random.random() < 0.5)
        count("allowed", result.returncode == 0 and result.stdout == "200", result.stdout + " " + result.stderr)
        time.sleep(0.05)


def denied():
    while not stop.is_set():
        result = curl("denied.soak.test", "/", via_connect=random.random() < 0.5)
        count("denied", result.stdout != "200")
        time.sleep(0.2)


def large():
    while not stop.is_set():
        result = curl("api.soak.test", "/size/20971520")
        count("large", result.returncode == 0 and result.stdout == "200", result.stdout + " " + result.stderr)


def client_hello():
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(inc, out, server_hostname="api.soak.test")
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    return out.read()


HELLO = client_hello()


def slow():
    while not stop.is_set():
        try:
            with socket.create_connection(("127.0.0.1", tls_port), timeout=10) as s:
                s.sendall(HELLO[: len(HELLO) // 2])
                cut = s.recv(1) == b""  # the gateway cuts it at the handshake timeout
                count("slow", cut)
        except OSError:
            count("slow")


def reset():
    while not stop.is_set():
        try:
            s = socket.create_connection(("127.0.0.1", random.choice([tls_port, connect_port])), timeout=5)
            if random.random() < 0.5:
                s.sendall(b"CONNECT api.soak.test:%d HTTP/1.1\r\n\r\n" % up_port)
                time.sleep(0.01)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            s.close()
            count("reset")
        except OSError:
            count("reset", False)
        time.sleep(0.05)


held = []


def idle():
    """Tunnels with a finished TLS handshake that then carry nothing for the whole run."""
    ctx = ssl.create_default_context(cafile=cert)
    for _ in range(200):
        try:
            s = socket.create_connection(("127.0.0.1", connect_port), timeout=5)
            s.sendall(b"CONNECT api.soak.test:%d HTTP/1.1\r\n\r\n" % up_port)
            head = b""
            while b"\r\n\r\n" not in head:
                head += s.recv(1)
            held.append(ctx.wrap_socket(s, server_hostname="api.soak.test"))
            count("idle")
        except OSError as e:
            count("idle", False, str(e))


def reloads():
    extra = False
    while not stop.wait(60):
        extra = not extra
        write_config(extra)
        gateway.send_signal(signal.SIGHUP)
        count("reload")


def proc_stats(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    cpu = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    return rss, fds, cpu


threads = [threading.Thread(target=t, daemon=True) for t in (allowed, allowed, denied, large, slow, slow, reset, idle, reloads)]
for t in threads:
    t.start()
samples = []
start = time.time()
last_cpu = proc_stats(gateway.pid)[2]
try:
    while time.time() - start < a.minutes * 60:
        time.sleep(a.sample)
        if gateway.poll() is not None:
            print(f"the gateway exited ({gateway.returncode}) after {time.time() - start:.0f} s", file=sys.stderr)
            break
        rss, fds, cpu = proc_stats(gateway.pid)
        samples.append((round(time.time() - start, 1), round(rss, 1), fds, round(cpu - last_cpu, 3)))
        last_cpu = cpu
finally:
    stop.set()
    alive = gateway.poll() is None
    cleanup()

with open(os.path.join(a.out, "samples.csv"), "w", newline="") as f:
    w = csv.writer(f)
    w.writerow(["seconds", "rss_mib", "descriptors", "cpu_seconds_in_interval"])
    w.writerows(samples)

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
fig, axes = plt.subplots(3, 1, figsize=(9, 7), sharex=True)
minutes = [s[0] / 60 for s in samples]
for axis, column, label in zip(axes, (1, 2, 3), ("RSS (MiB)", "open descriptors", f"CPU s per {a.sample:g} s")):
    axis.plot(minutes, [s[column] for s in samples], linewidth=1)
    axis.set_ylabel(label)
    axis.set_ylim(bottom=0)
    axis.grid(alpha=0.3)
axes[-1].set_xlabel("minutes")
fig.suptitle(f"Corridor soak: {a.minutes:g} min of mixed traffic, a reload a minute")
fig.tight_layout()
fig.savefig(os.path.join(a.out, "soak.png"), dpi=100)

print(f"out: {a.out}")
print(f"gateway alive at the end: {alive}")
print("traffic:", ", ".join(f"{k} {v}" for k, v in sorted(counts.items())))
print("failures:", ", ".join(f"{k} {v}" for k, v in sorted(failures.items())) or "none")
for reason in reasons:
    print("  " + reason)
if samples:
    n = max(1, len(samples) // 10)
    first, last = samples[:n], samples[-n:]
    avg = lambda rows, i: sum(r[i] for r in rows) / len(rows)
    print(f"first tenth: RSS {avg(first, 1):.1f} MiB, {avg(first, 2):.0f} descriptors, {avg(first, 3):.3f} CPU s per sample")
    print(f"last tenth:  RSS {avg(last, 1):.1f} MiB, {avg(last, 2):.0f} descriptors, {avg(last, 3):.3f} CPU s per sample")
sys.exit(0 if alive else 1)
