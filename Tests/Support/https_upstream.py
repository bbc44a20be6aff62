#!/usr/bin/env python3
"""An HTTPS upstream for Corridor's TLS origination tests (127.0.0.1 only).

Prints "PORT <n>" on stdout once listening. HTTP/1.1 with keep-alive, TLS 1.2 at least, ALPN
http/1.1. With --client-ca, a client certificate signed by that CA is required.

For every request it appends one JSON line to --log:
  {"sni", "tlsVersion", "clientCert" (subject CN or null), "method", "path", "host",
   "bodyBytes", "bodySha256", "trailers" (the trailer lines of a chunked body, as sent),
   "contentLength", "transferEncoding" (the framing fields as received, or null)}
Routes:
  GET /size/N        N deterministic bytes (pattern(), the same as tls_upstream.py), streamed
  POST|PUT /sink     reads the body (Content-Length or chunked), answers "<bytes> <sha256>\\n"
  /twice             answers, and in the same write a second response nobody asked for
  /twice-later       answers, then 200 ms later a second response nobody asked for
  /then-drop         answers; the next request on that connection is dropped unanswered (not
                     recorded) and the connection closed, as a server closing an idle connection
                     at the moment a request arrives
  /interim-then-stall  answers 103 Early Hints at once, then nothing for 20 s
  /deaf              reads nothing (not even the body) and answers nothing for 20 s
  /early-partial     answers before reading the request body: the head and 5 of 10 body bytes at
                     once, the other 5 a second later, then closes
  /ignore-body       answers "ok /ignore-body" without reading the request body, and keeps the
                     connection: the body is read as the next request (a back end that ignores
                     bodies on some routes)
  /answer-then-stall answers "ok /answer-then-stall" without reading the request body, then
                     reads nothing more for 20 s (a back end that answered early and moved on)
  /chunked           answers "hello\nworld\n" in two chunks, no Content-Length; to HEAD, the head
                     alone, Transfer-Encoding: chunked and no Content-Length
  /chunked-trailers  answers "hello\n" chunked, with Connection: X-Hop, then trailers: X-Checksum,
                     and Cookie, Keep-Alive and X-Hop (which no forwarded trailer may carry)
  /broken-chunks     answers a chunked "hello\n", then bytes that are no chunk (the response breaks)
  /switch            answers 101 Switching Protocols (no request asks for it), then bytes that are
                     no HTTP
  /gzip-chunked      answers with Transfer-Encoding: gzip, chunked (a gzip coding under chunked)
  /te-comma          answers with Transfer-Encoding: "chunked," and a chunked body
  /many-interims     answers 20 interim responses (103 Early Hints), then nothing for 20 s
  anything else      reads any body, answers "ok <path>\\n"
"""
import argparse, hashlib, json, os, socket, ssl, sys, threading, time
from testproc import bind_to_parent
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BLOCK = bytes((i * 7 + 3) & 0xFF for i in range(65536))
CHUNK = BLOCK * 16  # 1 MiB, a whole number of blocks so the pattern continues across chunks


def pattern_chunks(n):
    """pattern(n) of tls_upstream.py, in chunks of at most 1 MiB."""
    while n > 0:
        take = min(n, len(CHUNK))
        yield memoryview(CHUNK)[:take]
        n -= take


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "corridor-https-upstream"
    sys_version = ""

    def version_string(self):
        return self.server_version

    def log_message(self, fmt, *args):  # quiet: the JSON log is the record
        pass

    def read_body(self):
        """Reads the request body; returns (bytes read, sha256 hex)."""
        h, total = hashlib.sha256(), 0
        self.trailers = []
        te = (self.headers.get("Transfer-Encoding") or "").lower()
        if "chunked" in te:
            while True:
                line = self.rfile.readline(65537)
                if not line:
                    raise ConnectionError("eof in chunk size")
                size = int(line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while True:  # trailers, up to the empty line
                        t = self.rfile.readline(65537)
                        if not t or t in (b"\r\n", b"\n"):
                            break
                        self.trailers.append(t.decode("latin-1").rstrip("\r\n"))
                    break
                left = size
                while left:
                    data = self.rfile.read(min(left, 1 << 20))
                    if not data:
                        raise ConnectionError("eof in chunk")
                    h.update(data)
                    total += len(data)
                    left -= len(data)
                self.rfile.readline(3)  # CRLF after the chunk
        else:
            left = int(self.headers.get("Content-Length") or 0)
            while left:
                data = self.rfile.read(min(left, 1 << 20))
                if not data:
                    raise ConnectionError("eof in body")
                h.update(data)
                total += len(data)
                left -= len(data)
        return total, h.hexdigest()

    def record(self, body_bytes, body_sha):
        conn = self.connection
        cn = None
        try:
            cert = conn.getpeercert()
            for rdn in (cert or {}).get("subject", ()):
                for key, value in rdn:
                    if key == "commonName":
                        cn = value
        except (ValueError, ssl.SSLError):
            pass
        line = {
            "sni": getattr(conn, "corridor_sni", None),
            "tlsVersion": conn.version(),
            "clientCert": cn,
            "method": self.command,
            "path": self.path,
            "host": self.headers.get("Host"),
            "bodyBytes": body_bytes,
            "bodySha256": body_sha,
            "trailers": getattr(self, "trailers", []),
            "contentLength": self.headers.get("Content-Length"),
            "transferEncoding": self.headers.get("Transfer-Encoding"),
            "peerPort": self.client_address[1],
        }
        with self.server.log_lock, open(self.server.log_path, "a") as f:
            f.write(json.dumps(line) + "\n")

    def answer(self, text):
        body = text.encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def handle_any(self):
        if getattr(self, "drop_next", False):
            self.close_connection = True
            return
        if self.path in ("/interim-then-stall", "/deaf"):
            self.record(None, None)
            self.close_connection = True
            if self.path == "/interim-then-stall":
                self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
                self.wfile.flush()
            time.sleep(20)
            return
        if self.path == "/early-partial":
            self.record(None, None)
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
            self.wfile.flush()
            time.sleep(1)
            self.wfile.write(b"67890")
            return
        if self.path == "/ignore-body":
            self.record(None, None)
            self.answer("ok /ignore-body\n")
            return
        if self.path == "/answer-then-stall":
            self.record(None, None)
            self.close_connection = True
            self.answer("ok /answer-then-stall\n")
            self.wfile.flush()
            time.sleep(20)
            return
        if self.path == "/many-interims":
            self.record(None, None)
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n" * 20)
            self.wfile.flush()
            time.sleep(20)
            return
        if self.path == "/switch":
            self.record(None, None)
            self.close_connection = True
            self.wfile.write(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: other\r\nConnection: Upgrade\r\n\r\nNOT HTTP\r\n\r\n")
            self.wfile.flush()
            time.sleep(1)
            return
        try:
            body_bytes, body_sha = self.read_body()
        except (ConnectionError, ValueError):
            self.close_connection = True
            return
        self.record(body_bytes, body_sha)
        path = self.path
        if self.command == "GET" and path.startswith("/size/"):
            n = int(path.split("/")[2].split("?")[0])
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Length", str(n))
            self.end_headers()
            for chunk in pattern_chunks(n):
                self.wfile.write(chunk)
        elif path.startswith("/stall/"):
            time.sleep(float(path.split("/")[2]))  # an upstream that takes its time to answer
            self.answer(f"ok {path}\n")
        elif path in ("/twice", "/twice-later"):
            extra = b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nunwanted\n"
            body = f"ok {path}\n".encode()
            head = f"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            if path == "/twice":
                self.wfile.write(head + body + extra)
            else:
                self.wfile.write(head + body)
                self.wfile.flush()
                time.sleep(0.2)
                self.wfile.write(extra)
        elif path == "/broken-chunks":
            self.close_connection = True
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self.wfile.write(b"6\r\nhello\n\r\nZZ\r\n")
        elif path == "/chunked-trailers":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Trailer", "X-Checksum")
            self.send_header("Connection", "X-Hop")
            self.end_headers()
            self.wfile.write(b"6\r\nhello\n\r\n0\r\nX-Checksum: abc\r\nCookie: a=b\r\nKeep-Alive: timeout=5\r\nX-Hop: 1\r\n\r\n")
        elif path == "/te-comma":
            self.send_response(200)
            self.send_header("Transfer-Encoding", "chunked,")
            self.end_headers()
            self.wfile.write(b"3\r\nok\n\r\n0\r\n\r\n")
        elif path == "/gzip-chunked":
            import gzip
            data = gzip.compress(b"hello\n")
            self.send_response(200)
            self.send_header("Transfer-Encoding", "gzip, chunked")
            self.end_headers()
            self.wfile.write(b"%x\r\n%s\r\n0\r\n\r\n" % (len(data), data))
        elif path == "/chunked":
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(b"6\r\nhello\n\r\n6\r\nworld\n\r\n0\r\n\r\n")
        elif path == "/then-drop":
            self.drop_next = True
            self.answer(f"ok {path}\n")
        elif self.command in ("POST", "PUT") and path.split("?")[0] == "/sink":
            self.answer(f"{body_bytes} {body_sha}\n")
        else:
            self.answer(f"ok {path}\n")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_TRACE = do_PROPFIND = handle_any


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128

    def __init__(self, address, ctx, log_path):
        self.ctx = ctx
        self.log_path = log_path
        self.log_lock = threading.Lock()
        super().__init__(address, Handler)

    def server_bind(self):
        self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.socket.bind(self.server_address)
        self.server_address = self.socket.getsockname()

    def process_request_thread(self, request, client_address):
        # The TLS handshake runs in the connection's own thread, never in the accept loop.
        request.settimeout(60)
        try:
            conn = self.ctx.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as e:
            print(f"handshake failed: {e}", file=sys.stderr, flush=True)
            try:
                request.close()
            except OSError:
                pass
            return
        super().process_request_thread(conn, client_address)


def main():
    bind_to_parent()
    p = argparse.ArgumentParser()
    p.add_argument("--cert", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--log", required=True)
    p.add_argument("--client-ca", help="require a client certificate signed by this CA")
    p.add_argument("--max-version", choices=["TLSv1.2", "TLSv1.3"], help="highest TLS version offered")
    p.add_argument("--port", type=int, default=0)
    a = p.parse_args()
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if a.max_version == "TLSv1.2":
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(a.cert, a.key)
    ctx.set_alpn_protocols(["http/1.1"])
    if a.client_ca:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(a.client_ca)

    def on_sni(sslobj, name, _ctx):
        sslobj.corridor_sni = name

    ctx.sni_callback = on_sni
    srv = Server(("127.0.0.1", a.port), ctx, a.log)
    print(f"PORT {srv.server_address[1]}", flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
