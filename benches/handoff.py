#!/usr/bin/env python3
"""Queues on leave: a node stopped with SIGTERM while 100,000 messages wait in its
queue hands them to its peer. How long it takes, and whether anything is lost.

Per round: a real etcd (Debian's etcd-server), a mock master that is down (probed
every 100 ms, so out of rotation), and two switchyard nodes (release build): `b` leads,
`a` takes N messages as `Prefer: respond-async` POSTs (each a durable 202). Then:

1. SIGTERM `a`; timed from the signal to its exit, and the hand-off itself as `a`
   logs it (`took_ms`); `b`'s queue must hold N, `a`'s log must say all were handed
   over;
2. `a` started again on its disk: its queue must be empty;
3. the master comes back: `b` delivers; the mock must have received N distinct
   Idempotency-Keys (one per message id), each once. The drain rate of `b` is the
   peer figure the hand-off rate is compared with (both move the same N messages
   off a disk, one to a peer, one to the master).

    cargo build --release && python3 benches/handoff.py [--messages 100000] [--rounds 3]
"""
import argparse
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import http.client

from benchlib import BIN, call_json, free_port, wait_port

BODY = '{"to": "+971500000001", "text": "hello"}'


def until(what, check, timeout=120, every=0.05):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every)
    sys.exit(f"timed out waiting for {what}")


def start_etcd(data):
    client, peer = free_port(), free_port()
    p = subprocess.Popen(
        ["/usr/bin/etcd", "--name", "m0", "--data-dir", os.path.join(data, "etcd"),
         "--listen-client-urls", f"http://127.0.0.1:{client}",
         "--advertise-client-urls", f"http://127.0.0.1:{client}",
         "--listen-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer}",
         "--initial-cluster", f"m0=http://127.0.0.1:{peer}",
         "--initial-cluster-state", "new"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    until("etcd", lambda: b'"health":"true"' in
          urllib.request.urlopen(f"http://127.0.0.1:{client}/health", timeout=2).read()
          .replace(b" ", b"") if port_open(client) else False, timeout=30)
    return p, client


def port_open(port):
    try:
        import socket
        socket.create_connection(("127.0.0.1", port), 0.2).close()
        return True
    except OSError:
        return False


class Node:
    def __init__(self, data, name, priority, etcd, mport):
        self.name, self.listen, self.admin = name, free_port(), free_port()
        self.dir = os.path.join(data, name)
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "switchyard.toml")
        with open(self.config, "w") as f:
            f.write(
                f'[server]\nlisten = "127.0.0.1:{self.listen}"\n'
                f'admin_listen = "127.0.0.1:{self.admin}"\n'
                f'[log]\naccess = false\n'
                f'[cluster]\nenabled = true\nnode_id = "{name}"\n'
                f'etcd = ["http://127.0.0.1:{etcd}"]\nprefix = "/bench"\n'
                f'priority = {priority}\nlease_ttl_ms = 3000\nhandoff_timeout_ms = 300000\n'
                f'[health]\ninterval_ms = 100\ntimeout_ms = 300\n'
                f'healthy_threshold = 1\nunhealthy_threshold = 1\n'
                f'[queue]\npath = "{self.dir}/queue"\nmax_attempts = 1000\n'
                f'backoff_initial_ms = 100\nbackoff_max_ms = 1000\n'
                f'[[masters]]\nid = "m"\nsend_url = "http://127.0.0.1:{mport}/send"\n'
                f'health_url = "http://127.0.0.1:{mport}/health"\n')
        self.start()

    def start(self):
        self.log = open(os.path.join(self.dir, "log.txt"), "a")
        self.proc = subprocess.Popen([BIN, "run", "--config", self.config],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        wait_port(self.admin, timeout=30)

    def depth(self):
        return call_json(self.admin, "/admin/queue")["depth"]

    def log_text(self):
        with open(os.path.join(self.dir, "log.txt")) as f:
            return f.read()


def fill(port, n, threads=16):
    """n async POSTs over `threads` kept-alive connections; every answer must be 202."""
    bad = []

    def worker(count):
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for _ in range(count):
            c.request("POST", "/v1/messages", BODY,
                      {"Content-Type": "application/json", "Prefer": "respond-async"})
            r = c.getresponse()
            r.read()
            if r.status != 202:
                bad.append(r.status)
        c.close()

    share = [n // threads + (1 if i < n % threads else 0) for i in range(threads)]
    ts = [threading.Thread(target=worker, args=(k,)) for k in share]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not bad, f"{len(bad)} answers were not 202: {bad[:5]}"
    return n / (time.time() - t0)


def one_round(n):
    data = tempfile.mkdtemp(prefix="switchyard-handoff-")
    procs = []
    try:
        etcd, eport = start_etcd(data)
        procs.append(etcd)
        mport = free_port()
        mock = subprocess.Popen([BIN, "mock-master", "--listen", f"127.0.0.1:{mport}",
                                 "--id", "m", "--record-keys"],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs.append(mock)
        wait_port(mport)
        call_json(mport, "/control/down", "POST")
        b = Node(data, "b", 200, eport, mport)
        a = Node(data, "a", 100, eport, mport)
        procs += [b.proc, a.proc]

        def formed():
            v = call_json(b.admin, "/cluster/status")
            live = [x for x in v.get("nodes", []) if x["state"] in ("active", "leader")]
            return v.get("leader") == "b" and len(live) == 2
        until("a cluster of two", formed, timeout=60)
        fill_rps = fill(a.listen, n)
        assert a.depth() == n, a.depth()
        assert b.depth() == 0

        t0 = time.time()
        a.proc.send_signal(signal.SIGTERM)
        code = a.proc.wait(timeout=600)
        stop_s = time.time() - t0
        assert code == 0, f"a exited with {code}"
        text = a.log_text()
        line = next((l for l in text.splitlines()
                     if "queued messages handed over" in l), None)
        assert line, f"no hand-off line in a's log:\n{text[-3000:]}"
        handed = int(re.search(r"handed=(\d+)", line).group(1))
        took_ms = int(re.search(r"took_ms=(\d+)", line).group(1))
        assert "stay on this node's disk" not in text, text[-3000:]
        on_b = b.depth()
        assert handed == n and on_b == n, (handed, on_b)

        a.start()
        procs.append(a.proc)
        left_on_a = a.depth()
        assert left_on_a == 0, left_on_a

        t1 = time.time()
        call_json(mport, "/control/up", "POST")
        until("b's queue delivered", lambda: b.depth() == 0, timeout=600, every=0.2)
        drain_s = time.time() - t1
        keys = call_json(mport, "/received/keys")
        received = len(keys["order"])
        distinct = len(keys["keys"])
        once = all(c == 1 for c in keys["keys"].values())
        assert received == n and distinct == n and once, (received, distinct)
        return {"fill_rps": fill_rps, "handoff_s": took_ms / 1000, "stop_s": stop_s,
                "handoff_rate": n / (took_ms / 1000), "drain_s": drain_s,
                "drain_rate": n / drain_s, "lost": n - distinct}
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        shutil.rmtree(data, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=100_000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    rounds = []
    for i in range(args.rounds):
        r = one_round(args.messages)
        rounds.append(r)
        print(f"round {i + 1}: filled at {r['fill_rps']:.0f}/s; hand-off {r['handoff_s']:.2f} s "
              f"({r['handoff_rate']:.0f} msg/s), SIGTERM to exit {r['stop_s']:.2f} s; "
              f"b delivered all in {r['drain_s']:.1f} s ({r['drain_rate']:.0f} msg/s); "
              f"lost {r['lost']}", flush=True)
    med = {k: statistics.median(r[k] for r in rounds) for k in rounds[0]}
    print(f"\nmedian of {len(rounds)} rounds, {args.messages} messages queued on a:")
    print(f"  hand-off (a's log)    {med['handoff_s']:.2f} s  {med['handoff_rate']:>8.0f} msg/s")
    print(f"  SIGTERM to exit       {med['stop_s']:.2f} s")
    print(f"  b delivers them       {med['drain_s']:.2f} s  {med['drain_rate']:>8.0f} msg/s")
    print(f"  hand-off / delivery rate: {med['handoff_rate'] / med['drain_rate']:.2f}")
    print(f"  lost: {sum(r['lost'] for r in rounds)}")


if __name__ == "__main__":
    main()
