#!/usr/bin/env python3
"""One connection through the gateway's tls listener whose both ends stop reading for a while.

Plays the upstream (listens on --upstream-port) and the client (connects to --gateway with a real
ClientHello for --sni). After the hello, the client sends --bytes of numbered data and the upstream
sends --bytes of its own, each in chunks of varying size; neither reads anything for --hold
seconds, so the gateway's sends to both of them fill their buffers and stop part-way. Then both
read to the end and check every byte arrived once, in order. With --client-bytes 0 and
--upstream-close, the client only shuts its side after the hello, and the upstream, once that
half-close has reached it, sends its bytes and closes at once, while most of them still wait in
the gateway for the client to read. Prints one JSON object:
{"hello": N, "helloRelayed": bool, "up": {...}, "down": {...}} with, per direction, the bytes received and whether they
matched.
"""
import argparse
import json
import socket
import ssl
import struct
import threading
import time


def pattern(tag, length):
    """`length` bytes of 4-byte big-endian sequence numbers XOR a per-direction tag: a lost,
    repeated or reordered chunk changes what follows it."""
    words = (length + 3) // 4
    data = b"".join(struct.pack(">I", (i * 2654435761 + tag) & 0xFFFFFFFF) for i in range(words))
    return data[:length]


def send_in_chunks(sock, data, close=False):
    # Chunk sizes cycle through 1.5 to 12 KiB: each below the gateway's 16 KiB scratch buffer.
    sizes = [1536, 12288, 4096, 9000, 2500, 7000]
    offset, i = 0, 0
    while offset < len(data):
        chunk = data[offset:offset + sizes[i % len(sizes)]]
        sock.sendall(chunk)
        offset += len(chunk)
        i += 1
    if close:
        sock.close()
    else:
        sock.shutdown(socket.SHUT_WR)


def read_to_end(sock, expected_length):
    received = bytearray()
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            break
        received += chunk
        if len(received) > expected_length + 65536:
            break
    return bytes(received)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--gateway", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    parser.add_argument("--sni", required=True)
    parser.add_argument("--bytes", type=int, default=262144)
    parser.add_argument("--hold", type=float, default=2.0)
    parser.add_argument("--rcvbuf", type=int, default=2048)
    parser.add_argument("--client-bytes", type=int, help="what the client sends (default: --bytes)")
    parser.add_argument("--upstream-close", action="store_true",
                        help="the upstream reads to the end first, then sends and closes")
    args = parser.parse_args()

    up_data = pattern(0x5550, args.bytes if args.client_bytes is None else args.client_bytes)
    down_data = pattern(0x444F, args.bytes)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    listener.bind(("127.0.0.1", args.upstream_port))
    listener.listen(4)
    listener.settimeout(30)

    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    tls = ctx.wrap_bio(incoming, outgoing, server_hostname=args.sni)
    try:
        tls.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()

    client = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, args.rcvbuf)
    client.settimeout(60)
    client.connect(("127.0.0.1", args.gateway))
    client.sendall(hello)
    upstream, _ = listener.accept()
    upstream.settimeout(60)
    listener.close()
    got_hello = b""
    while len(got_hello) < len(hello):
        chunk = upstream.recv(len(hello) - len(got_hello))
        if not chunk:
            break
        got_hello += chunk

    results = {"hello": len(hello), "helloRelayed": got_hello == hello}
    received = {}

    def reader(name, sock, expected):
        received[name] = read_to_end(sock, len(expected))

    def upstream_side():
        if args.upstream_close:
            reader("up", upstream, up_data)
        send_in_chunks(upstream, down_data, close=args.upstream_close)

    senders = [threading.Thread(target=send_in_chunks, args=(client, up_data)),
               threading.Thread(target=upstream_side)]
    for t in senders:
        t.start()
    time.sleep(args.hold)
    readers = [threading.Thread(target=reader, args=("down", client, down_data))]
    if not args.upstream_close:
        readers.append(threading.Thread(target=reader, args=("up", upstream, up_data)))
    for t in readers:
        t.start()
    for t in senders + readers:
        t.join(60)
    for name, expected in (("up", up_data), ("down", down_data)):
        got = received.get(name, b"")
        first_difference = next((i for i, (a, b) in enumerate(zip(got, expected)) if a != b), None)
        results[name] = {"received": len(got), "matches": got == expected, "firstDifference": first_difference}
    client.close()
    if not args.upstream_close:
        upstream.close()
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main()
