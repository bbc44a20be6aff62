#!/usr/bin/env python3
"""A TLS client for Corridor's integration tests: connects to 127.0.0.1:PORT (optionally
through `CONNECT host:port` first), verifies the upstream's certificate with --ca and the
name, then runs ECHO or SINK with --bytes of random data and prints a JSON result."""
import argparse, hashlib, json, os, socket, ssl, sys

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--host", default="127.0.0.1", help="address to connect to (127.0.0.1, or a test namespace's address)")
p.add_argument("--sni", required=True)
p.add_argument("--ca", required=True)
p.add_argument("--connect", help="host:port for an explicit CONNECT first")
p.add_argument("--mode", choices=["ECHO", "SINK"], default="ECHO")
p.add_argument("--bytes", type=int, default=1 << 20)
p.add_argument("--pipelined", action="store_true",
               help="send the ClientHello in the same write as the CONNECT request (ECHO only)")
a = p.parse_args()

def fail(message, code=3):
    print(json.dumps({"error": message}))
    sys.exit(code)

raw = socket.create_connection((a.host, a.port), timeout=30)
if a.pipelined:
    ctx = ssl.create_default_context(cafile=a.ca)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=a.sni)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    raw.sendall(f"CONNECT {a.connect} HTTP/1.1\r\nHost: {a.connect}\r\n\r\n".encode() + outgoing.read())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = raw.recv(4096)
        if not chunk:
            fail("closed during CONNECT")
        buf += chunk
    head, rest = buf.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        fail("CONNECT refused: " + head.decode(errors="replace"))
    incoming.write(rest)
    def pump_in():
        data = raw.recv(65536)
        if not data:
            fail("closed during handshake", 4)
        incoming.write(data)
    while True:
        try:
            tls.do_handshake()
            break
        except ssl.SSLWantReadError:
            pending = outgoing.read()
            if pending:
                raw.sendall(pending)
            pump_in()
        except ssl.SSLError as e:
            fail(f"handshake: {e}", 4)
    payload = os.urandom(a.bytes)
    tls.write(b"ECHO\n" + payload)
    raw.sendall(outgoing.read())
    got = b""
    while len(got) < len(payload):
        try:
            got += tls.read(65536)
        except ssl.SSLWantReadError:
            pump_in()
    print(json.dumps({"sent": a.bytes, "sentHash": hashlib.sha256(payload).hexdigest(), "received": len(got),
                      "receivedHash": hashlib.sha256(got).hexdigest(), "version": tls.version()}))
    sys.exit(0)
if a.connect:
    raw.sendall(f"CONNECT {a.connect} HTTP/1.1\r\nHost: {a.connect}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = raw.recv(1)
        if not chunk:
            print(json.dumps({"error": "closed during CONNECT", "head": head.decode(errors="replace")}))
            sys.exit(3)
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        print(json.dumps({"error": "CONNECT refused", "head": head.decode(errors="replace")}))
        sys.exit(3)
ctx = ssl.create_default_context(cafile=a.ca)
try:
    conn = ctx.wrap_socket(raw, server_hostname=a.sni)
except (ssl.SSLError, OSError) as e:
    print(json.dumps({"error": f"handshake: {e}"}))
    sys.exit(4)
data = os.urandom(a.bytes)
sent_hash = hashlib.sha256(data).hexdigest()
conn.sendall(a.mode.encode() + b"\n")
view = memoryview(data)
if a.mode == "SINK":
    for i in range(0, len(data), 1 << 16):
        conn.sendall(view[i:i + (1 << 16)])
    # Half-close: shut the TCP write side (no close_notify), keep reading the answer.
    # The gateway must pass the FIN on and still relay the answer back.
    socket.socket.shutdown(conn, socket.SHUT_WR)
    answer = b""
    while True:
        chunk = conn.recv(4096)
        if not chunk:
            break
        answer += chunk
    count, digest = answer.decode().split()
    print(json.dumps({"sent": a.bytes, "sentHash": sent_hash, "received": int(count), "receivedHash": digest, "version": conn.version()}))
else:
    # Lock-step windows of 256 KiB: one thread, since an SSLSocket must not be read and
    # written from two threads at once. The window stays far below the socket buffers.
    got = hashlib.sha256()
    total = 0
    window = 256 << 10
    for i in range(0, len(data), window):
        chunk = view[i:i + window]
        conn.sendall(chunk)
        want = len(chunk)
        while want > 0:
            part = conn.recv(min(want, 1 << 16))
            if not part:
                break
            got.update(part)
            total += len(part)
            want -= len(part)
        if want > 0:
            break
    socket.socket.shutdown(conn, socket.SHUT_WR)
    while conn.recv(1 << 16):
        pass
    print(json.dumps({"sent": a.bytes, "sentHash": sent_hash, "received": total, "receivedHash": got.hexdigest(), "version": conn.version()}))
