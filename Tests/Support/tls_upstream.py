#!/usr/bin/env python3
"""A TLS upstream for Corridor's integration tests (127.0.0.1 only).

Prints "PORT <n>" on stdout once listening, and appends one line per accepted TLS
connection to --log: "<sni> <tls version> <alpn>". Per connection, the first line decides:
  ECHO\n            echo every byte back until the client shuts its side, then close
  SINK\n            read to EOF, then answer "<bytes> <sha256>\n" and close
  GET /...          HTTP/1.1: /size/N returns N deterministic bytes (see pattern()), else "ok\n"
"""
import argparse, hashlib, socket, ssl, sys, threading
from testproc import bind_to_parent

def pattern(n):
    block = bytes((i * 7 + 3) & 0xFF for i in range(65536))
    full, rest = divmod(n, len(block))
    return block * full + block[:rest]

def handle(conn, log, lock):
    try:
        sni = getattr(conn, "corridor_sni", None) or "-"
        with lock, open(log, "a") as f:
            f.write(f"{sni} {conn.version()} {conn.selected_alpn_protocol() or '-'}\n")
        first = b""
        while not first.endswith(b"\n") and len(first) < 8192:
            chunk = conn.recv(1)
            if not chunk:
                return
            first += chunk
        if first == b"ECHO\n":
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                conn.sendall(data)
            conn.close()
        elif first == b"SINK\n":
            h, total = hashlib.sha256(), 0
            while True:
                data = conn.recv(65536)
                if not data:
                    break
                h.update(data)
                total += len(data)
            conn.sendall(f"{total} {h.hexdigest()}\n".encode())
            conn.close()
        elif first.startswith(b"GET "):
            head = first
            while b"\r\n\r\n" not in head:
                data = conn.recv(4096)
                if not data:
                    return
                head += data
            path = first.split(b" ")[1].decode()
            body = pattern(int(path.split("/")[2])) if path.startswith("/size/") else b"ok\n"
            conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body))
            view = memoryview(body)
            for i in range(0, len(body), 1 << 20):
                conn.sendall(view[i:i + (1 << 20)])
            conn.close()
    except (OSError, ssl.SSLError):
        pass
    finally:
        try:
            conn.close()
        except OSError:
            pass

def main():
    bind_to_parent()
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1, or a test namespace's own address)")
    a = p.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    # A client that half-closes (TCP FIN, no close_notify) must still get its answer.
    ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(["http/1.1"])
    def on_sni(sslobj, name, _ctx):
        sslobj.corridor_sni = name
    ctx.sni_callback = on_sni
    srv = socket.socket(socket.AF_INET6 if ":" in a.host else socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((a.host, a.port))
    srv.listen(128)
    print(f"PORT {srv.getsockname()[1]}", flush=True)
    lock = threading.Lock()
    while True:
        raw, _ = srv.accept()
        raw.settimeout(30)
        def run(raw=raw):
            try:
                conn = ctx.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
                conn.do_handshake()
            except (OSError, ssl.SSLError):
                raw.close()
                return
            handle(conn, a.log, lock)
        threading.Thread(target=run, daemon=True).start()

if __name__ == "__main__":
    main()
