#!/usr/bin/env python3
"""New-connection load through an explicit (CONNECT) proxy: what h2load cannot do.

Each connection: TCP to the proxy, "CONNECT HOST:PORT", the 200, a full TLS handshake with the
origin inside the tunnel (the origin refuses resumption), "GET /" with Connection: close, the
response read to its end, close. `--concurrency` connections are in flight at once (16, as the
peers harness runs h2load). Talks to 127.0.0.1 only.

  connect_load.py --port P --target HOST:PORT --sni NAME --count N [--concurrency C]

Prints "ok=<n> failed=<m> seconds=<s>" and the first few errors on stderr.
"""
import argparse
import asyncio
import ssl
import sys
import time


async def one(args, ctx):
    reader, writer = await asyncio.open_connection("127.0.0.1", args.port)
    try:
        writer.write(f"CONNECT {args.target} HTTP/1.1\r\nHost: {args.target}\r\n\r\n".encode())
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        if b" 200" not in head.split(b"\r\n", 1)[0]:
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        await writer.start_tls(ctx, server_hostname=args.sni)
        writer.write(f"GET / HTTP/1.1\r\nHost: {args.sni}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        body = await reader.read()  # to the end: the origin closes after the response
        if not body.startswith(b"HTTP/1.1 200") or not body.endswith(b"ok\n"):
            raise ConnectionError(f"unexpected response: {body[:60]!r}")
    finally:
        writer.close()
        try:
            await writer.wait_closed()
        except (ConnectionError, ssl.SSLError):
            pass


async def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--target", required=True)
    ap.add_argument("--sni", required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--concurrency", type=int, default=16)
    args = ap.parse_args()
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    remaining = args.count
    ok = 0
    errors = []

    async def worker():
        nonlocal remaining, ok
        while remaining > 0:
            remaining -= 1
            try:
                await one(args, ctx)
                ok += 1
            except Exception as exc:  # count and keep going
                errors.append(repr(exc))

    started = time.monotonic()
    await asyncio.gather(*(worker() for _ in range(args.concurrency)))
    seconds = time.monotonic() - started
    print(f"ok={ok} failed={len(errors)} seconds={seconds:.3f}")
    for error in errors[:3]:
        print(error, file=sys.stderr)


if __name__ == "__main__":
    asyncio.run(main())
