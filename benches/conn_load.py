#!/usr/bin/env python3
"""Connection limits under hostile clients (SPEC section 8), against the release build.

1. trickle: N connections (default 100) each declare `Content-Length: 4096` and then
   send one byte per packet (TCP_NODELAY, one byte every --every-ms per connection).
   Prints switchyard's RSS before and at its peak (VmRSS sampled every 50 ms), and
   when the server answered and closed each connection (median, max; how many got a
   408), against `server.read_timeout_ms`.
2. flood: M connections (default 10,000) each send one quick GET, never read the
   answer and stay open (idle, kept alive, once served), once per `max_connections`
   value given. Prints RSS and open fds of switchyard (/proc/PID/fd) with the flood in
   place, and the latency of normal POSTs: on a kept-alive connection opened before
   the flood (p50/p99 of --requests, before and during), and the time a new
   connection takes to get its first answer during the flood.

Everything on 127.0.0.1; one mock master; switchyard with its default runtime.
`ulimit -n` is raised for this script and the processes it starts.

    cargo build --release && python3 benches/conn_load.py [--trickle 100] \
        [--flood 10000] [--caps 10000,1000] [--bin PATH]
"""
import argparse
import http.client
import os
import resource
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import BIN, free_port, rss_kb, wait_port

BODY = '{"to": "+971500000001", "text": "hello"}'


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


class Proxy:
    """One mock master and switchyard with `server` lines added to `[server]`."""

    def __init__(self, binary, server=""):
        self.tmp = tempfile.mkdtemp(prefix="switchyard-conn-")
        self.mport, self.port, self.aport = free_port(), free_port(), free_port()
        self.mock = subprocess.Popen(
            [binary, "mock-master", "--listen", f"127.0.0.1:{self.mport}", "--id", "m"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cfg = os.path.join(self.tmp, "switchyard.toml")
        with open(cfg, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1:{self.port}"\n'
                    f'admin_listen = "127.0.0.1:{self.aport}"\n{server}\n'
                    f'[queue]\npath = "{self.tmp}/queue"\n'
                    f'[[masters]]\nid = "m"\nsend_url = "http://127.0.0.1:{self.mport}/send"\n')
        wait_port(self.mport)
        self.proc = subprocess.Popen([binary, "run", "--config", cfg],
                                     env=dict(os.environ, RUST_LOG="warn"),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_port(self.port)
        # Fault in the request path once.
        post(http.client.HTTPConnection("127.0.0.1", self.port, timeout=30))

    def stop(self):
        for p in (self.proc, self.mock):
            p.terminate()
        for p in (self.proc, self.mock):
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(self.tmp, ignore_errors=True)


def post(conn):
    conn.request("POST", "/v1/messages", BODY, {"Content-Type": "application/json"})
    r = conn.getresponse()
    r.read()
    if r.status != 200:
        sys.exit(f"a normal request got {r.status}")


def trickle(binary, n, every_ms, limit_s):
    px = Proxy(binary)
    try:
        pid = px.proc.pid
        time.sleep(0.5)
        base = rss_kb(pid)
        head = (b"POST /v1/messages HTTP/1.1\r\nhost: bench\r\ncontent-type: application/json\r\n"
                b"content-length: 4096\r\n\r\n")
        socks = []
        start = time.monotonic()
        for _ in range(n):
            s = socket.create_connection(("127.0.0.1", px.port))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            s.sendall(head)
            s.setblocking(False)
            socks.append(s)
        closed = {}      # socket -> seconds after start
        answers = {}     # socket -> first bytes received
        peak = base
        next_byte = time.monotonic()
        while len(closed) < n and time.monotonic() - start < limit_s:
            now = time.monotonic()
            if now >= next_byte:
                for s in socks:
                    if s in closed:
                        continue
                    try:
                        s.send(b" ")
                    except OSError:
                        pass  # the server closed it; the read below sees it
                next_byte += every_ms / 1000
            for s in socks:
                if s in closed:
                    continue
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if data:
                    answers.setdefault(s, data)
                    continue
                closed[s] = time.monotonic() - start
            peak = max(peak, rss_kb(pid))
            time.sleep(min(0.05, every_ms / 1000))
        for s in socks:
            s.close()
        got_408 = sum(1 for d in answers.values() if d.startswith(b"HTTP/1.1 408"))
        times = sorted(closed.values())
        return {
            "base_mb": base / 1024, "peak_mb": peak / 1024, "added_mb": (peak - base) / 1024,
            "closed": len(closed), "n": n, "got_408": got_408,
            "close_median_s": statistics.median(times) if times else None,
            "close_max_s": times[-1] if times else None,
        }
    finally:
        px.stop()


def latencies(port, count):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    out = []
    for _ in range(count):
        t = time.perf_counter()
        post(conn)
        out.append((time.perf_counter() - t) * 1000)
    conn.close()
    out.sort()
    return out[len(out) // 2], out[min(len(out) - 1, int(len(out) * 0.99))]


QUICK_GET = b"GET /v1/messages/unknown HTTP/1.1\r\nhost: bench\r\n\r\n"


def open_flood(port, m):
    """Opens `m` connections in batches (a burst of SYNs overflows the backlog and
    retries for seconds), each sending one quick GET whose answer is never read: once
    served, a connection is idle (kept alive); unserved, it waits in the backlog."""
    socks = []
    for i in range(0, m, 250):
        sel = selectors.DefaultSelector()
        batch = []
        for _ in range(min(250, m - i)):
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(("127.0.0.1", port))
            sel.register(s, selectors.EVENT_WRITE)
            batch.append(s)
        pending, deadline = len(batch), time.monotonic() + 1
        while pending and time.monotonic() < deadline:
            for key, _ in sel.select(0.1):
                sel.unregister(key.fileobj)
                try:
                    key.fileobj.send(QUICK_GET)
                except OSError:
                    pass
                pending -= 1
        for key in list(sel.get_map().values()):  # not connected yet: send when it is
            try:
                key.fileobj.send(QUICK_GET)
            except OSError:
                pass
        sel.close()
        socks += batch
    return socks


def flood(binary, m, cap, requests, wait_new):
    px = Proxy(binary, f"max_connections = {cap}")
    try:
        pid = px.proc.pid
        time.sleep(0.5)
        base_rss, base_fds = rss_kb(pid), fds(pid)
        before = latencies(px.port, requests)
        kept = http.client.HTTPConnection("127.0.0.1", px.port, timeout=60)
        post(kept)
        t0 = time.monotonic()
        socks = open_flood(px.port, m)
        # Until the server holds as many as it will: the cap (with `kept`), or all.
        want = base_fds + min(m + 1, cap)
        deadline = time.monotonic() + 30
        while fds(pid) < want and time.monotonic() < deadline:
            time.sleep(0.05)
        settled = time.monotonic() - t0
        time.sleep(1)  # let the served ones answer and settle idle
        held_rss, held_fds = rss_kb(pid), fds(pid)
        during = []
        for _ in range(requests):
            s = time.perf_counter()
            post(kept)
            during.append((time.perf_counter() - s) * 1000)
        during.sort()
        t = time.perf_counter()
        try:
            fresh = http.client.HTTPConnection("127.0.0.1", px.port, timeout=wait_new)
            post(fresh)
            new_conn = f"{(time.perf_counter() - t) * 1000:.1f} ms"
            fresh.close()
        except OSError:
            new_conn = f"not within {wait_new:.0f} s (waits in the backlog)"
        for s in socks:
            s.close()
        return {
            "cap": cap, "m": m, "settle_s": settled,
            "base_mb": base_rss / 1024, "held_mb": held_rss / 1024,
            "base_fds": base_fds, "held_fds": held_fds,
            "before_p50": before[0], "before_p99": before[1],
            "during_p50": during[len(during) // 2],
            "during_p99": during[min(len(during) - 1, int(len(during) * 0.99))],
            "new_conn": new_conn,
        }
    finally:
        px.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--trickle", type=int, default=100)
    ap.add_argument("--every-ms", type=int, default=100, help="per connection, between bytes")
    ap.add_argument("--limit", type=float, default=60, help="seconds to wait for the closes")
    ap.add_argument("--flood", type=int, default=10000)
    ap.add_argument("--caps", default="10000,1000")
    ap.add_argument("--requests", type=int, default=500)
    ap.add_argument("--wait-new", type=float, default=15,
                    help="seconds a new connection waits for its answer during a flood")
    ap.add_argument("--bin", default=BIN)
    args = ap.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = args.flood + 1000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard), hard))
    if resource.getrlimit(resource.RLIMIT_NOFILE)[0] < need:
        sys.exit(f"ulimit -n is {hard} at most here; {need} needed for --flood {args.flood}")

    if args.trickle:
        r = trickle(args.bin, args.trickle, args.every_ms, args.limit)
        print(f"trickle: {r['n']} connections, Content-Length 4096, 1 byte per packet every "
              f"{args.every_ms} ms each")
        print(f"  RSS {r['base_mb']:.1f} MB before, {r['peak_mb']:.1f} MB at peak: "
              f"+{r['added_mb']:.1f} MB")
        close = (f"median {r['close_median_s']:.2f} s, max {r['close_max_s']:.2f} s"
                 if r["closed"] else "none")
        print(f"  closed by the server: {r['closed']} of {r['n']} within {args.limit:.0f} s "
              f"({close}); answered 408: {r['got_408']}")
    for cap in [int(c) for c in args.caps.split(",") if c]:
        r = flood(args.bin, args.flood, cap, args.requests, args.wait_new)
        print(f"flood: {r['m']} idle connections, max_connections = {cap} "
              f"(held after {r['settle_s']:.1f} s)")
        print(f"  RSS {r['base_mb']:.1f} -> {r['held_mb']:.1f} MB; fds {r['base_fds']} -> {r['held_fds']}")
        print(f"  POST on a kept-alive connection: p50 {r['before_p50']:.2f} ms, p99 "
              f"{r['before_p99']:.2f} ms before; p50 {r['during_p50']:.2f} ms, p99 "
              f"{r['during_p99']:.2f} ms during")
        print(f"  a new connection's first answer during the flood: {r['new_conn']}")


if __name__ == "__main__":
    main()
