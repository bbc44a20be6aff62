#!/usr/bin/env python3
"""Attributes a `perf script` profile to the gateway's components.

    perf script -i perf.data -F comm,tid,ip,sym --no-inline | swift demangle --simplified \
        | bench/profile/attribute.py [US_PER_UNIT]

Each sample goes to the innermost frame of its call stack that names a component below (a sample
in `malloc` called from the JSON writer counts for the access record), split by whether it was
taken in the kernel or in user space. Prints each component's share of the samples and, given
US_PER_UNIT (the gateway's CPU per connection or request under perf), its microseconds per unit.
Frames are those perf could unwind without inlining (`--no-inline`), so a function inlined into
its caller counts for the caller.
"""
import collections
import re
import sys

# (component, pattern on a frame's symbol), innermost match wins; order breaks ties within a frame.
COMPONENTS = [
    ("access record: JSON", r"AccessLog\.line|AccessLog\.openLine|JSONLine"),
    ("access record: write", r"AccessLogSink|AccessLog\.append"),
    ("flow table, signals", r"FlowRecorder|FlowTable|FlowStream|GeneratedNameCheck|DenyBurst"),
    ("metrics", r"ProxyMetrics|Counter\.|Histogram|Gauge|Prometheus"),
    ("record: finish", r"ConnectionRecord\.finish"),
    ("policy decision", r"ConnectionRecord\.decide|DecisionEngine|PolicySnapshot|HostTable|ServiceRoutes|SourceInventory|PolicyHint"),
    ("ClientHello parser", r"ClientHello"),
    ("CONNECT head parser", r"ConnectHeadParser"),
    ("connection state machine", r"ConnectionStateMachine"),
    ("http: target, fields", r"HTTPTarget|HopByHop|forwardedRequest|HTTPRequestHeadCheck|ASCIICase|FieldRole"),
    ("http: proxy handler, pool", r"HTTPProxyHandler|UpstreamHTTPHandler|UpstreamPool"),
    ("TLS (NIOSSL, BoringSSL)", r"NIOSSL|BoringSSL|SSLConnection"),
    ("NIO HTTP/1 decode", r"HTTPDecoder|BetterHTTPParser|llhttp|ByteToMessageHandler"),
    ("NIO HTTP/1 encode", r"HTTPRequestEncoder|HTTPResponseEncoder"),
    ("NIO socket I/O", r"PendingWritesManager|PendingStreamWrites|BaseStreamSocketChannel|BaseSocketChannel|Socket\."),
    ("NIO pipeline", r"ChannelHandlerContext|ChannelPipeline|NIOAny|HeadChannelHandler|TailChannelHandler"),
    ("NIO event loop", r"SelectableEventLoop|Selector\.|Scheduled|EventLoopFuture|EventLoopPromise"),
    ("splice: send", r"__libc_send\b|__send\b|sendto"),
    ("splice: recv", r"__libc_recv\b|recvfrom"),
    ("splice: connect", r"SpliceConnection\.dial|connectFinished|__libc_connect"),
    ("splice: accept", r"SpliceAcceptor|accept4"),
    ("splice: shutdown, close", r"shutdown|__close\b|closePending"),
    ("epoll_ctl", r"epoll_ctl"),
    ("epoll_wait", r"epoll_wait"),
    ("splice: connection, loop", r"SpliceConnection|EpollLoop"),
]
PATTERNS = [(name, re.compile(pattern)) for name, pattern in COMPONENTS]


def attribute(lines):
    counts = collections.Counter()
    total = 0
    stack = []

    def sample():
        nonlocal total
        if not stack:
            return
        total += 1
        where = "kernel" if stack[0][0].startswith("ffffffff") else "user"
        for _, symbol in stack:
            for name, pattern in PATTERNS:
                if pattern.search(symbol):
                    counts[(name, where)] += 1
                    return
        counts[("elsewhere", where)] += 1

    for line in lines:
        if not line.startswith("\t"):
            sample()
            stack = []
            continue
        parts = line.strip().split(" ", 1)
        if len(parts) == 2:
            stack.append((parts[0], parts[1]))
    sample()
    return counts, total


def main():
    per_unit = float(sys.argv[1]) if len(sys.argv) > 1 else None
    counts, total = attribute(sys.stdin)
    if total == 0:
        sys.exit("no samples on standard input")
    rows = collections.defaultdict(lambda: {"user": 0, "kernel": 0})
    for (name, where), n in counts.items():
        rows[name][where] += n
    for name, row in sorted(rows.items(), key=lambda item: -(item[1]["user"] + item[1]["kernel"])):
        share = lambda n: 100.0 * n / total
        line = f"  {name:28s} user {share(row['user']):5.1f} %   kernel {share(row['kernel']):5.1f} %"
        if per_unit:
            line += f"   {per_unit * (row['user'] + row['kernel']) / total:6.1f} us"
        print(line)
    print(f"  ({total} samples)")


if __name__ == "__main__":
    main()
