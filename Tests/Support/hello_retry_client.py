#!/usr/bin/env python3
"""A raw TLS 1.3 client that provokes a HelloRetryRequest, for Corridor's integration tests.

Connects to 127.0.0.1:PORT (optionally through `CONNECT host:port` first) and sends a first
ClientHello naming --first with an empty key_share, so the server must ask for a retry. It then
sends change_cipher_spec and a second ClientHello naming --second (same random and session id,
with an X25519 key share), unless --early is given: then the second hello goes right after the
first, before the server's answer (a HelloRetryRequest that comes back then is skipped).
Prints one JSON object:
  {"retry": true/false, "answer": "server_hello" | "alert:<description>" | "closed" | "record:<type>"}
where "retry" says whether the server's first answer was a HelloRetryRequest and "answer" what
came back after the second hello (change_cipher_spec records skipped).
"""
import argparse, json, os, socket, struct

RETRY_RANDOM = bytes.fromhex("CF21AD74E59A6111BE1D8C021E65B891C2A211167ABB8C5E079E09E2C8A8339C")

p = argparse.ArgumentParser()
p.add_argument("--port", type=int, required=True)
p.add_argument("--connect", help="host:port for an explicit CONNECT first")
p.add_argument("--first", required=True, help="server_name of the first ClientHello")
p.add_argument("--second", required=True, help="server_name of the second ClientHello")
p.add_argument("--early", action="store_true", help="send the second hello before the server answers")
a = p.parse_args()

random, session = os.urandom(32), os.urandom(32)

def ext(kind, data):
    return struct.pack("!HH", kind, len(data)) + data

def hello(name, key_share):
    n = name.encode()
    exts = ext(0x0000, struct.pack("!HBH", len(n) + 3, 0, len(n)) + n)
    exts += ext(0x000a, b"\x00\x02\x00\x1d")                      # supported_groups: x25519
    exts += ext(0x000d, b"\x00\x08\x04\x03\x08\x04\x08\x05\x08\x07")  # signature_algorithms
    exts += ext(0x002b, b"\x02\x03\x04")                          # supported_versions: TLS 1.3
    exts += ext(0x0010, b"\x00\x09\x08http/1.1")                  # ALPN
    exts += ext(0x0033, struct.pack("!H", len(key_share)) + key_share)
    body = b"\x03\x03" + random + bytes([len(session)]) + session + b"\x00\x02\x13\x01" + b"\x01\x00"
    body += struct.pack("!H", len(exts)) + exts
    message = b"\x01" + len(body).to_bytes(3, "big") + body
    return b"\x16\x03\x01" + struct.pack("!H", len(message)) + message

def read_exact(s, n):
    out = b""
    while len(out) < n:
        try:
            chunk = s.recv(n - len(out))
        except ConnectionResetError:
            return None
        if not chunk:
            return None
        out += chunk
    return out

def read_record(s):
    """The next record other than change_cipher_spec: (type, payload), or None at the end."""
    while True:
        header = read_exact(s, 5)
        if header is None:
            return None
        payload = read_exact(s, struct.unpack("!H", header[3:5])[0])
        if payload is None:
            return None
        if header[0] != 20:
            return header[0], payload

def describe(record):
    if record is None:
        return "closed"
    kind, payload = record
    if kind == 22 and payload[:1] == b"\x02":
        return "server_hello"
    if kind == 21 and len(payload) == 2:
        return f"alert:{payload[1]}"
    return f"record:{kind}"

s = socket.create_connection(("127.0.0.1", a.port), timeout=15)
if a.connect:
    s.sendall(f"CONNECT {a.connect} HTTP/1.1\r\nHost: {a.connect}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        if not chunk:
            break
        head += chunk
    if not head.startswith(b"HTTP/1.1 200"):
        print(json.dumps({"error": "CONNECT refused: " + head.decode(errors="replace")}))
        raise SystemExit(0)
key_share = struct.pack("!HH", 0x001d, 32) + os.urandom(32)
second = b"\x14\x03\x03\x00\x01\x01" + hello(a.second, key_share)
s.sendall(hello(a.first, b""))
def is_retry(record):
    return record is not None and record[0] == 22 and record[1][:1] == b"\x02" and record[1][6:38] == RETRY_RANDOM

if a.early:
    s.sendall(second)
    answer = read_record(s)
    retry = is_retry(answer)
    if retry:
        answer = read_record(s)
    print(json.dumps({"retry": retry, "answer": describe(answer)}))
    raise SystemExit(0)
first_answer = read_record(s)
retry = is_retry(first_answer)
if not retry:
    print(json.dumps({"retry": False, "answer": describe(first_answer)}))
    raise SystemExit(0)
s.sendall(second)
print(json.dumps({"retry": True, "answer": describe(read_record(s))}))
