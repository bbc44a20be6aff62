#!/usr/bin/env python3
"""One kept-alive plain-HTTP client connection, driven line by line (127.0.0.1 only).

Usage: http_session.py PORT. Connects once, prints {"connected": true}, then reads JSON lines
on stdin: {"send": "<raw request text>"} sends those bytes as they are and reads one response
(head, then a Content-Length body, or up to EOF), printing one JSON line:
  {"status": N, "headers": {lower-case name: value}, "body": "...", "closed": bool}
"status" is 0 when the gateway closed the connection without a response.
"""
import json, socket, sys


def read_response(s, buf):
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            return None, buf, True
        buf += chunk
    head, _, rest = buf.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ")[1])
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if status // 100 == 1:
        return read_response(s, rest)
    closed = False
    if "content-length" in headers:
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            rest += chunk
        body, buf = rest[:length], rest[length:]
    else:
        body = rest
        while True:
            chunk = s.recv(65536)
            if not chunk:
                closed = True
                break
            body += chunk
        buf = b""
    return {"status": status, "headers": headers, "body": body.decode("latin-1"), "closed": closed}, buf, closed


def main():
    s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
    print(json.dumps({"connected": True}), flush=True)
    buf = b""
    for line in sys.stdin:
        command = json.loads(line)
        try:
            s.sendall(command["send"].encode("latin-1"))
            response, buf, closed = read_response(s, buf)
        except OSError as e:
            response, closed = None, True
        if response is None:
            response = {"status": 0, "headers": {}, "body": "", "closed": True}
        print(json.dumps(response), flush=True)


if __name__ == "__main__":
    main()
