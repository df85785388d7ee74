#!/usr/bin/env python3
"""Cluster config push benchmark: how soon every node runs a config pushed on one.

Starts a real etcd (`/usr/bin/etcd`, Debian's etcd-server), a mock master and three
switchyard nodes in one cluster, then pushes --rounds configs to node a
(`POST /admin/config`, each based on the version before) while two threads poll
`/health` on nodes b and c over kept-alive connections until they report the new
`config_version`. Per push it records:

- answered: push sent -> 200 from node a (validated, stored by compare-and-swap in
  etcd, applied on a);
- applied: push sent -> b (and c) report the new version; an upper bound of commit ->
  applied, which the target puts at p99 <= 100 ms;
- after answer: a's 200 -> b (and c) report it (the commit was before the 200).

    cargo build --release && python3 benches/config_push.py [--rounds 100]
"""
import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import BIN, free_port, wait_port

ETCD = "/usr/bin/etcd"


def start_etcd(tmp):
    client, peer = free_port(), free_port()
    url, purl = f"http://127.0.0.1:{client}", f"http://127.0.0.1:{peer}"
    proc = subprocess.Popen(
        [ETCD, "--name", "m0", "--data-dir", os.path.join(tmp, "etcd"),
         "--listen-client-urls", url, "--advertise-client-urls", url,
         "--listen-peer-urls", purl, "--initial-advertise-peer-urls", purl,
         "--initial-cluster", f"m0={purl}", "--initial-cluster-state", "new"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_port(client)
    return proc, url


def start_node(tmp, name, priority, etcd, master_url):
    d = os.path.join(tmp, name)
    os.makedirs(d)
    listen, admin = free_port(), free_port()
    with open(os.path.join(d, "switchyard.toml"), "w") as f:
        f.write(f"""[server]
listen = "127.0.0.1:{listen}"
admin_listen = "127.0.0.1:{admin}"
[log]
access = false
[cluster]
enabled = true
node_id = "{name}"
etcd = ["{etcd}"]
prefix = "/bench/config"
priority = {priority}
[[masters]]
id = "m"
send_url = "{master_url}"
""")
    proc = subprocess.Popen([BIN, "run", "--config", "switchyard.toml"], cwd=d,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "RUST_LOG": "warn"})
    wait_port(admin)
    return proc, admin


def health_version(conn):
    conn.request("GET", "/health")
    resp = conn.getresponse()
    return json.loads(resp.read())["config_version"]


def wait_version(port, version, out, key):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    deadline = time.monotonic() + 10
    while health_version(conn) < version:
        if time.monotonic() > deadline:
            sys.exit(f"node on {port} did not reach version {version}")
        time.sleep(0.0005)
    out[key] = time.monotonic()


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def show(name, values):
    ms = [v * 1000 for v in values]
    print(f"{name:<28} median {statistics.median(ms):6.1f} ms  p90 {pct(ms, 90):6.1f}"
          f"  p99 {pct(ms, 99):6.1f}  max {max(ms):6.1f}")


def main():
    global BIN
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--bin", default=BIN, help="the switchyard binary (default: release)")
    args = ap.parse_args()
    BIN = os.path.abspath(args.bin)
    if not os.path.exists(BIN):
        sys.exit(f"{BIN} is missing: cargo build --release")
    if not os.path.exists(ETCD):
        sys.exit(f"{ETCD} is missing: apt-get install etcd-server")
    procs = []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            etcd, etcd_url = start_etcd(tmp)
            procs.append(etcd)
            mport = free_port()
            procs.append(subprocess.Popen(
                [BIN, "mock-master", "--listen", f"127.0.0.1:{mport}", "--id", "m"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(mport)
            master = f"http://127.0.0.1:{mport}/send"
            nodes = []
            for name, prio in [("a", 300), ("b", 200), ("c", 100)]:
                proc, admin = start_node(tmp, name, prio, etcd_url, master)
                procs.append(proc)
                nodes.append(admin)
            a, b, c = nodes
            conn = http.client.HTTPConnection("127.0.0.1", a, timeout=10)
            version = health_version(conn)
            answered, applied, after = [], [], []
            for i in range(args.rounds):
                body = (f"[routing]\nretry_attempts = {i % 3}\n"
                        f"[[masters]]\nid = \"m\"\nsend_url = \"{master}\"\n")
                seen = {}
                waiters = [threading.Thread(target=wait_version,
                                            args=(port, version + 1, seen, port))
                           for port in (b, c)]
                for w in waiters:
                    w.start()
                t0 = time.monotonic()
                conn.request("POST", "/admin/config", body,
                             {"If-Match": str(version), "Content-Type": "application/toml"})
                resp = conn.getresponse()
                text = resp.read()
                t1 = time.monotonic()
                if resp.status != 200:
                    sys.exit(f"push {i}: {resp.status} {text!r}")
                version = json.loads(text)["config_version"]
                for w in waiters:
                    w.join()
                answered.append(t1 - t0)
                for port in (b, c):
                    applied.append(seen[port] - t0)
                    after.append(seen[port] - t1)
            print(f"{args.rounds} pushes to a, applied by b and c (3 nodes, 1 etcd member)")
            show("answered (a)", answered)
            show("applied (b, c)", applied)
            show("applied after the answer", after)
        finally:
            for p in procs:
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
