#!/usr/bin/env python3
"""Writes N access records in the gateway's format to standard output: 200 workloads in 20
namespaces, 2,000 destinations (most allowed, some denied, a few audited), a month of timestamps,
some signals. Deterministic (seeded)."""
import json, random, sys
n = int(sys.argv[1])
r = random.Random(20261206)
workloads = [(f"ns{i % 20}", f"app{i}", f"sa{i}") for i in range(200)]
destinations = [f"api{i}.service{i % 50}.example.com" for i in range(2000)]
start = 1764547200  # 2025-12-01T00:00:00Z
out = sys.stdout
for i in range(n):
    ns, app, sa = workloads[r.randrange(200)]
    host = destinations[r.randrange(2000)]
    roll = r.random()
    decision = "allow" if roll < 0.9 else ("deny" if roll < 0.98 else "audit")
    t = start + i * (30 * 86400) // n
    record = {"time": f"2025-12-{1 + t // 86400 - start // 86400:02d}T{(t % 86400) // 3600:02d}:{(t % 3600) // 60:02d}:{t % 60:02d}.000Z",
              "id": i + 1, "listener": "tls", "src": f"10.{i % 200}.0.1:4{i % 10000:04d}",
              "identity": {"namespace": ns, "workload": app, "serviceAccount": sa, "labels": {"app": app}},
              "sni": host, "port": 443, "decision": decision}
    if decision == "allow":
        record.update(externalService="allowed-api", egressPolicy="payments/checkout-egress",
                      reason="EgressPolicy payments/checkout-egress grants ExternalService allowed-api")
    else:
        record["reason"] = f"no ExternalService matches {host}"
    record.update(bytesUp=r.randrange(500, 5000), bytesDown=r.randrange(1000, 100000), durationMs=12.5,
                  closeCause="completed" if decision != "deny" else "denied", policyGeneration=1, event="close")
    if r.random() < 0.001:
        record["signals"] = ["new_destination"]
    out.write(json.dumps(record, separators=(",", ":")) + "\n")
