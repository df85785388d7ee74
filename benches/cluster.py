#!/usr/bin/env python3
"""Cluster mode benchmark (SPEC section 11): a real etcd (Debian's `/usr/bin/etcd`, one
member), switchyard nodes in cluster mode and mock masters, all on loopback ports.

Parts (run one with --only NAME):

- `leader_kill`: three nodes (priorities 300/200/100, lease_ttl_ms 3000) under steady
  traffic to the two lower ones; the leader is killed with SIGKILL and the survivors'
  `GET /cluster/status` is polled every 10 ms until both name the same new leader in a
  newer term. Goal: <= lease_ttl_ms + 500 ms; client errors on the survivors: 0.
  Split in two: until etcd expired the killed node's lease (its record gone, read
  through etcd's JSON gateway), and from there until the survivors agree. The killed
  node is restarted and leads again before the next round; the kill falls 1 to 2.2 s
  after the traffic starts, anywhere in the leader's keep-alive cycle.
- `apply`: `POST /ha/masters/p/disable` (then `/enable`) on one node, and another
  node's `/ha/status` polled until it shows the change; p50/p99. Goal <= 100 ms. Also
  the `switchyard_cluster_apply_seconds` histogram (commit -> applied) of every node,
  counted over these actions only: the bucket bounds that hold p50 and p99.
- `two_leaders`: 20 leader disruptions, alternating SIGKILL (then a restart) and
  SIGSTOP past the lease (then SIGCONT), while master p's mock is killed and started
  every two seconds so that the leader keeps failing p over to the standby and back
  (the top node leads for --hold seconds between disruptions: decisions need a leader).
  Then every node's audit trail: the terms of applied decisions (failovers and
  failbacks, "decided by N, term T") must never go down in event-id order, and one
  term must have one decider.
  Goal: 0 violations.
- `etcd_down`: traffic on every node while etcd is killed for --etcd-down seconds;
  forwarding errors (goal 0), then etcd restarted and the time until every node is
  back (active or leader, one leader, cluster stable).
- `idempotency`: --keys keys, each sent to two nodes at once with the same
  Idempotency-Key; duplicates the mock master received (goal 0); and the latency of a
  keyed send against an unkeyed one on one node (medians, p99).

    cargo build --release && python3 benches/cluster.py [--rounds 5] [--only leader_kill]
        [--nodes 3] [--keys 10000] [--actions 50] [--disruptions 20] [--hold 4]
        [--etcd-down 30]

SWITCHYARD_BIN=path runs another build (a debug one, for a quick try of the script).
"""
import argparse
import base64
import http.client
import json
import os
import random
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time

from benchlib import BIN, free_port, wait_port

BIN = os.path.abspath(os.environ.get("SWITCHYARD_BIN", BIN))

ETCD = "/usr/bin/etcd"
LEASE_TTL_MS = 3000
BODY = '{"to": "+971500000001", "text": "cluster bench"}'
JSON = {"content-type": "application/json"}
HEALTH = ("[health]\ninterval_ms = 100\ntimeout_ms = 200\nunhealthy_threshold = 2\n"
          "[failover]\nrecovery_wait_ms = 200\nfailback_delay_ms = 500\nslow_start_ms = 500\n"
          "max_failovers = 1000\n")
RESULTS = []  # (part, figure, measured, goal, met or None)


def say(*a):
    print(*a, flush=True)


def result(part, figure, measured, goal, met):
    RESULTS.append((part, figure, measured, goal, met))
    say(f"  {figure}: {measured} (goal {goal}){'' if met is None else ' ok' if met else ' MISSED'}")


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


class Conn:
    """One keep-alive HTTP connection; reconnects after an error (and raises it)."""

    def __init__(self, port, timeout=10.0):
        self.port, self.timeout, self.c = port, timeout, None

    def call(self, method, path, body=None, headers=None):
        if self.c is None:
            self.c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout)
        try:
            self.c.request(method, path, body, headers or {})
            r = self.c.getresponse()
            return r.status, r.headers, r.read()
        except (OSError, http.client.HTTPException):
            self.c.close()
            self.c = None
            raise

    def json(self, path):
        status, _, data = self.call("GET", path)
        if status != 200:
            raise OSError(f"GET {path}: {status} {data[:200]!r}")
        return json.loads(data)


class Env:
    """The processes and files of one part; close() kills every process group."""

    def __init__(self, root, name):
        self.dir = os.path.join(root, name)
        os.makedirs(self.dir)
        self.procs = []

    def spawn(self, args, log, cwd=None):
        with open(os.path.join(self.dir, log), "ab") as out:
            p = subprocess.Popen(args, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                 start_new_session=True)
        self.procs.append(p)
        return p

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()


class Etcd:
    def __init__(self, env):
        self.env, self.client, self.peer = env, free_port(), free_port()
        self.data = os.path.join(env.dir, "etcd")
        self.url = f"http://127.0.0.1:{self.client}"
        self.start()

    def start(self):
        peer = f"http://127.0.0.1:{self.peer}"
        self.proc = self.env.spawn([
            ETCD, "--name", "m0", "--data-dir", self.data,
            "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
            "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
            "--initial-cluster", f"m0={peer}", "--initial-cluster-state", "new"], "etcd.log")
        deadline = time.time() + 30
        while True:
            try:
                if b'"true"' in Conn(self.client, 2).call("GET", "/health")[2]:
                    return
            except (OSError, http.client.HTTPException):
                pass
            if time.time() > deadline:
                sys.exit("etcd not healthy within 30 s")
            time.sleep(0.05)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def has(self, key):
        """Whether `key` exists, through etcd's JSON gateway."""
        body = json.dumps({"key": base64.b64encode(key.encode()).decode(), "count_only": True})
        return int(json.loads(Conn(self.client, 2).call("POST", "/v3/kv/range", body)[2])
                   .get("count", 0)) > 0


class Mock:
    def __init__(self, env, mid, extra=()):
        self.env, self.id, self.extra, self.port = env, mid, list(extra), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.start()

    def start(self):
        self.proc = self.env.spawn([BIN, "mock-master", "--listen", f"127.0.0.1:{self.port}",
                                    "--id", self.id, *self.extra], f"mock-{self.id}.log")
        wait_port(self.port)

    def kill(self):
        self.proc.kill()
        self.proc.wait()

    def toml(self, extra=""):
        return (f'\n[[masters]]\nid = "{self.id}"\nsend_url = "{self.url}/send"\n'
                f'health_url = "{self.url}/health"\n{extra}\n')


class Node:
    def __init__(self, env, nid, priority, etcd, rest):
        self.env, self.id = env, nid
        self.listen, self.admin = free_port(), free_port()
        self.dir = os.path.join(env.dir, nid)
        os.makedirs(self.dir)
        self.config = os.path.join(self.dir, "switchyard.toml")
        with open(self.config, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1:{self.listen}"\n'
                    f'admin_listen = "127.0.0.1:{self.admin}"\n'
                    f'[queue]\npath = "{self.dir}/queue"\n'
                    f'[cluster]\nenabled = true\nnode_id = "{nid}"\netcd = ["{etcd.url}"]\n'
                    f'prefix = "/bench"\npriority = {priority}\nlease_ttl_ms = {LEASE_TTL_MS}\n'
                    f'{rest}')
        self.conn = Conn(self.admin, 2)
        self.start()

    def start(self):
        self.proc = self.env.spawn([BIN, "run", "--config", self.config], f"{self.id}.log",
                                   cwd=self.dir)
        wait_port(self.admin, 30)
        wait_port(self.listen, 30)

    def kill9(self):
        self.proc.kill()
        self.proc.wait()

    def signal(self, sig):
        os.kill(self.proc.pid, sig)

    def status(self):
        return self.conn.json("/cluster/status")


def statuses(nodes):
    out = {}
    for n in nodes:
        try:
            out[n.id] = n.status()
        except (OSError, http.client.HTTPException, ValueError):
            out[n.id] = None
    return out


def agreed(views, stable=False):
    """(leader, term) when every view names the same leader in the same term."""
    seen = {(v["leader"], v["term"]) if v else None for v in views.values()}
    if len(seen) != 1 or None in seen:
        return None
    leader, term = seen.pop()
    settled = all(v["cluster_state"] == "stable" for v in views.values())
    return (leader, term) if leader and (settled or not stable) else None


def wait_leader(nodes, ok=lambda leader, term: True, within=60, stable=False):
    deadline = time.time() + within
    while True:
        views = statuses(nodes)
        got = agreed(views, stable)
        if got and ok(*got):
            return got
        if time.time() > deadline:
            seen = {k: v and (v["leader"], v["term"], v["state"]) for k, v in views.items()}
            sys.exit(f"nodes did not agree on a leader within {within}s: {seen}")
        time.sleep(0.01)


class Traffic:
    """Threads posting to the nodes' /v1/messages at about `rate` requests/s in all;
    anything but 200 (or a connection error) counts as an error of that node."""

    def __init__(self, nodes, rate=300, threads=4):
        self.nodes, self.rate, self.n = nodes, rate, threads
        self.sent = {n.id: 0 for n in nodes}
        self.errors = {n.id: 0 for n in nodes}
        self.examples = []
        self.lock, self.stop_ev = threading.Lock(), threading.Event()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(threads)]
        for t in self.threads:
            t.start()

    def run(self):
        conns = [(n.id, Conn(n.listen, 10)) for n in self.nodes]
        gap, due, i = self.n / self.rate, time.monotonic(), 0
        while not self.stop_ev.is_set():
            nid, conn = conns[i % len(conns)]
            i += 1
            try:
                status, _, data = conn.call("POST", "/v1/messages", BODY, JSON)
                bad = None if status == 200 else f"{nid}: {status} {data[:120]!r}"
            except (OSError, http.client.HTTPException) as e:
                bad = f"{nid}: {e!r}"
            with self.lock:
                self.sent[nid] += 1
                if bad:
                    self.errors[nid] += 1
                    if len(self.examples) < 5:
                        self.examples.append(bad)
            due += gap
            time.sleep(max(0.0, due - time.monotonic()))

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join()
        if self.examples:
            say(f"    client errors, first ones: {self.examples}")
        return sum(self.sent.values()), sum(self.errors.values())


def leader_kill(env, args):
    etcd = Etcd(env)
    masters = Mock(env, "m").toml()
    nodes = [Node(env, nid, prio, etcd, masters)
             for nid, prio in [("top", 300), ("mid", 200), ("low", 100)]]
    top, survivors = nodes[0], nodes[1:]
    took, lease_gone, sent, errors = [], [], 0, 0
    for r in range(args.rounds):
        _, term = wait_leader(nodes, lambda leader, _t: leader == "top", stable=True)
        traffic = Traffic(survivors)
        # Anywhere in the keep-alive cycle (one every lease_ttl / 3, on a 200 ms tick).
        time.sleep(random.uniform(1.0, 1.0 + LEASE_TTL_MS / 3000 + 0.2))
        top.kill9()
        killed = time.monotonic()
        gone = None
        while True:
            if gone is None and not etcd.has("/bench/nodes/top"):
                gone = time.monotonic() - killed
            views = statuses(survivors)
            got = agreed(views)
            if got and got[0] != "top" and got[1] > term:
                break
            if time.monotonic() - killed > 30:
                sys.exit(f"no new leader 30 s after the kill: {views}")
            time.sleep(0.01)
        took.append((time.monotonic() - killed) * 1000)
        lease_gone.append((gone if gone is not None else took[-1] / 1000) * 1000)
        time.sleep(1)
        s, e = traffic.stop()
        sent, errors = sent + s, errors + e
        say(f"  round {r + 1}: new leader {got[0]} (term {got[1]}) after {took[-1]:.0f} ms; "
            f"top's lease expired in etcd after {lease_gone[-1]:.0f} ms; {s} requests, {e} errors")
        top.start()
    goal = LEASE_TTL_MS + 500
    result("leader_kill", "kill -9 -> survivors agree on a new leader, median / max",
           f"{statistics.median(took):.0f} / {max(took):.0f} ms", f"<= {goal} ms",
           max(took) <= goal)
    result("leader_kill", "  of which until etcd expired its lease, median / max",
           f"{statistics.median(lease_gone):.0f} / {max(lease_gone):.0f} ms", "-", None)
    after = [t - g for t, g in zip(took, lease_gone)]
    result("leader_kill", "  then until the survivors agree, median / max",
           f"{statistics.median(after):.0f} / {max(after):.0f} ms", "-", None)
    result("leader_kill", "client errors on the survivors",
           f"{errors} of {sent}", "0", errors == 0)


APPLY_BUCKET = re.compile(r'^switchyard_cluster_apply_seconds_bucket\{le="([^"]+)"\} (\d+)', re.M)


def apply_buckets(node):
    _, _, text = node.conn.call("GET", "/metrics")
    return {le: int(n) for le, n in APPLY_BUCKET.findall(text.decode())}


def bucket_bound(cumulative, p):
    """The upper bound of the bucket holding the p-th percentile (cumulative counts)."""
    total = cumulative.get("+Inf", 0)
    for le, n in sorted(cumulative.items(), key=lambda kv: float(kv[0])):
        if total and n >= p / 100 * total:
            return le
    return "none"


def apply(env, args):
    etcd = Etcd(env)
    masters = Mock(env, "p").toml() + Mock(env, "q").toml()
    nodes = [Node(env, f"n{i + 1}", 100 * (args.nodes - i), etcd, masters)
             for i in range(args.nodes)]
    wait_leader(nodes, stable=True)
    before = [apply_buckets(n) for n in nodes]
    seen, answered = [], []
    for i in range(args.actions):
        a, b = nodes[i % len(nodes)], nodes[(i + 1) % len(nodes)]
        for action, state in [("disable", "disabled"), ("enable", "enabled")]:
            start = time.monotonic()
            status, _, data = a.conn.call("POST", f"/ha/masters/p/{action}")
            answered.append((time.monotonic() - start) * 1000)
            if status != 200:
                sys.exit(f"{action} on {a.id}: {status} {data!r}")
            while b.conn.json("/ha/status")["masters"][0]["admin"] != state:
                if time.monotonic() - start > 10:
                    sys.exit(f"{b.id} did not show p {state} within 10 s")
                time.sleep(0.002)
            seen.append((time.monotonic() - start) * 1000)
    say(f"  {len(seen)} actions on {len(nodes)} nodes; the action's own answer: "
        f"p50 {pct(answered, 50):.1f} ms, p99 {pct(answered, 99):.1f} ms")
    result("apply", "admin action on one node -> shown on another, p50 / p99",
           f"{pct(seen, 50):.1f} / {pct(seen, 99):.1f} ms", "<= 100 ms", pct(seen, 99) <= 100)
    diff = {}
    for n, old in zip(nodes, before):
        for le, count in apply_buckets(n).items():
            diff[le] = diff.get(le, 0) + count - old.get(le, 0)
    say(f"  switchyard_cluster_apply_seconds, all nodes, these actions only: {diff}")
    p50, p99 = bucket_bound(diff, 50), bucket_bound(diff, 99)
    met = p99 not in ("none", "+Inf") and float(p99) <= 0.1
    result("apply", "apply_seconds (commit -> applied) p50 / p99 bucket, upper bound",
           f"<= {p50} s / <= {p99} s ({diff.get('+Inf', 0)} applied)", "p99 <= 0.1 s", met)


DECIDED = re.compile(r"decided by (\S+), term (\d+)")
LEADS = re.compile(r"(\S+) leads, term (\d+)")


class Flapper:
    """Kills master p's mock and starts it again every `every` seconds."""

    def __init__(self, mock, every=2.0):
        self.mock, self.every, self.flips = mock, every, 0
        self.stop_ev = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop_ev.wait(self.every):
            if self.mock.proc.poll() is None:
                self.mock.kill()
            else:
                self.mock.start()
            self.flips += 1

    def stop(self):
        self.stop_ev.set()
        self.thread.join()


class Watcher:
    """Polls every node's view every 50 ms: which leader each names for which term."""

    def __init__(self, nodes):
        self.leaders_of = {}  # term -> set of leaders named for it
        self.stop_ev = threading.Event()
        self.conns = [(n.id, Conn(n.admin, 0.5)) for n in nodes]
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop_ev.wait(0.05):
            for _, conn in self.conns:
                try:
                    v = conn.json("/cluster/status")
                except (OSError, http.client.HTTPException, ValueError):
                    continue
                if v["leader"]:
                    self.leaders_of.setdefault(v["term"], set()).add(v["leader"])

    def stop(self):
        self.stop_ev.set()
        self.thread.join()


def two_leaders(env, args):
    etcd = Etcd(env)
    p, s = Mock(env, "p"), Mock(env, "s")
    masters = HEALTH + p.toml() + s.toml('role = "standby"')
    nodes = [Node(env, f"n{i + 1}", 100 * (3 - i), etcd, masters) for i in range(3)]
    wait_leader(nodes, stable=True)
    flapper, watcher = Flapper(p), Watcher(nodes)
    try:
        for i in range(args.disruptions):
            wait_leader(nodes, lambda leader, _t: leader == "n1", stable=True)
            time.sleep(args.hold)  # a live leader, deciding while p flaps
            leader, term = wait_leader(nodes)
            node = next(n for n in nodes if n.id == leader)
            others = [n for n in nodes if n is not node]
            how = "kill -9" if i % 2 == 0 else "SIGSTOP"
            if how == "kill -9":
                node.kill9()
            else:
                node.signal(signal.SIGSTOP)
            start = time.monotonic()
            new = wait_leader(others, lambda ld, t: ld != leader and t > term)
            if how == "kill -9":
                node.start()
            else:
                node.signal(signal.SIGCONT)
            say(f"  disruption {i + 1} ({how} {leader}, term {term}): {new[0]} leads, "
                f"term {new[1]}, after {(time.monotonic() - start) * 1000:.0f} ms")
    finally:
        flapper.stop()
        watcher.stop()
    wait_leader(nodes, stable=True)
    decisions, violations, deciders, kinds = 0, [], {}, {}
    for n in nodes:
        events = sorted(n.conn.json("/ha/events?limit=10000")["events"], key=lambda e: e["id"])
        for e in events:
            kinds[e["kind"]] = kinds.get(e["kind"], 0) + 1
        last = last_lead = 0
        for e in events:
            decided = e["kind"] in ("failover_started", "failback")
            m = DECIDED.search(e["reason"]) if decided else None
            if m:
                decisions += 1
                term = int(m.group(2))
                deciders.setdefault(term, set()).add(m.group(1))
                if term < last:
                    violations.append(f"{n.id}: event {e['id']} applies term {term} after {last}")
                last = max(last, term)
            m = LEADS.match(e["reason"]) if e["kind"] == "leader_changed" else None
            if m:
                if int(m.group(2)) < last_lead:
                    violations.append(f"{n.id}: event {e['id']} {e['reason']!r} after term "
                                      f"{last_lead}")
                last_lead = max(last_lead, int(m.group(2)))
    for term, who in deciders.items():
        if len(who) > 1:
            violations.append(f"term {term} decided by {sorted(who)}")
    named = {t: sorted(w) for t, w in watcher.leaders_of.items() if len(w) > 1}
    say(f"  mock p killed/started {flapper.flips} times; {len(deciders)} terms with decisions; "
        f"events on all nodes: {kinds}")
    for v in violations[:10]:
        say(f"    {v}")
    result("two_leaders", f"applied decisions on {len(nodes)} nodes / violations",
           f"{decisions} / {len(violations)}", "0 violations", not violations and decisions > 0)
    result("two_leaders", "terms for which two nodes named different leaders",
           f"{len(named)} {named if named else ''}", "0", not named)


def etcd_down(env, args):
    etcd = Etcd(env)
    masters = Mock(env, "m").toml()
    nodes = [Node(env, f"n{i + 1}", 100 * (args.nodes - i), etcd, masters)
             for i in range(args.nodes)]
    wait_leader(nodes, stable=True)
    traffic = Traffic(nodes)
    time.sleep(2)
    etcd.kill()
    killed, isolated = time.monotonic(), None
    while time.monotonic() - killed < args.etcd_down:
        views = statuses(nodes)
        if isolated is None and all(v and v["state"] == "isolated" for v in views.values()):
            isolated = time.monotonic() - killed
        time.sleep(0.1)
    s_out = sum(traffic.sent.values())
    e_out = sum(traffic.errors.values())
    restart = time.monotonic()
    etcd.start()
    back = time.monotonic()
    wait_leader(nodes, stable=True)
    rejoin = time.monotonic() - back
    time.sleep(2)
    sent, errors = traffic.stop()
    say(f"  every node isolated after "
        f"{'never' if isolated is None else f'{isolated:.1f} s'}; during the outage "
        f"{s_out} requests, {e_out} errors")
    result("etcd_down", f"forwarding errors, {args.etcd_down:.0f} s without etcd and the rejoin",
           f"{errors} of {sent}", "0", errors == 0)
    result("etcd_down", "etcd back -> every node active/leader, one leader, stable",
           f"{rejoin * 1000:.0f} ms after etcd was healthy again "
           f"({(back - restart) * 1000:.0f} ms after its start)", "rejoins", True)


def idempotency(env, args):
    etcd = Etcd(env)
    mock = Mock(env, "m", ["--record-keys"])
    masters = mock.toml()
    nodes = [Node(env, f"n{i + 1}", 100 * (args.nodes - i), etcd, masters)
             for i in range(max(2, args.nodes))]
    wait_leader(nodes, stable=True)
    run_id = f"{int(time.time())}"
    work = iter(range(args.keys))
    lock, flagged, errors = threading.Lock(), [0], []

    def pair():
        """Two threads, one per node of the key, that send each key at the same moment."""
        barrier = threading.Barrier(2)
        todo = [None]
        conns = {n.id: Conn(n.listen, 10) for n in nodes}

        def side(k):
            while True:
                if k == 0:
                    with lock:
                        todo[0] = next(work, None)
                barrier.wait()
                i = todo[0]
                if i is None:
                    return
                node = nodes[(i + k) % len(nodes)]
                try:
                    status, headers, _ = conns[node.id].call(
                        "POST", "/v1/messages", BODY, {**JSON, "idempotency-key": f"b{run_id}-{i}"})
                    with lock:
                        flagged[0] += headers.get("x-switchyard-duplicate") == "true"
                        if status != 200:
                            errors.append(status)
                except (OSError, http.client.HTTPException) as e:
                    with lock:
                        errors.append(repr(e))
                barrier.wait()
        return [threading.Thread(target=side, args=(k,)) for k in (0, 1)]

    threads = [t for _ in range(8) for t in pair()]
    start = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    took = time.monotonic() - start
    keys = Conn(mock.port, 30).json("/received/keys")["keys"]
    ours = {k: c for k, c in keys.items() if k.startswith(f"b{run_id}-")}
    dups = sum(c - 1 for c in ours.values() if c > 1)
    say(f"  {args.keys} keys x 2 nodes in {took:.1f} s; {len(ours)} keys received, "
        f"answers flagged x-switchyard-duplicate: {flagged[0]}, errors: {len(errors)}")
    result("idempotency", "duplicates delivered to the master",
           f"{dups} of {args.keys} keys", "0", dups == 0)
    conn, keyed, plain = Conn(nodes[0].listen), [], []
    for i in range(2 * args.latency_sends + 100):
        headers = {**JSON, "idempotency-key": f"l{run_id}-{i}"} if i % 2 else JSON
        t0 = time.perf_counter()
        conn.call("POST", "/v1/messages", BODY, headers)
        if i >= 100:
            (keyed if i % 2 else plain).append((time.perf_counter() - t0) * 1000)
    result("idempotency", "send with a new key / without, median",
           f"{statistics.median(keyed):.2f} / {statistics.median(plain):.2f} ms "
           f"(+{statistics.median(keyed) - statistics.median(plain):.2f})", "-", None)
    result("idempotency", "send with a new key / without, p99",
           f"{pct(keyed, 99):.2f} / {pct(plain, 99):.2f} ms", "-", None)


PARTS = {"leader_kill": leader_kill, "apply": apply, "two_leaders": two_leaders,
         "etcd_down": etcd_down, "idempotency": idempotency}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="leader kills (leader_kill)")
    ap.add_argument("--only", choices=sorted(PARTS), help="run one part")
    ap.add_argument("--nodes", type=int, default=3, help="nodes (apply, etcd_down, idempotency)")
    ap.add_argument("--keys", type=int, default=10000, help="keys (idempotency)")
    ap.add_argument("--actions", type=int, default=50, help="disable+enable pairs (apply)")
    ap.add_argument("--disruptions", type=int, default=20, help="leader disruptions (two_leaders)")
    ap.add_argument("--hold", type=float, default=4,
                    help="seconds the top node leads between disruptions (two_leaders)")
    ap.add_argument("--etcd-down", type=float, default=30, help="seconds without etcd")
    ap.add_argument("--latency-sends", type=int, default=2000,
                    help="keyed and unkeyed sends each, for the latency (idempotency)")
    args = ap.parse_args()
    for path in (BIN, ETCD):
        if not os.path.exists(path):
            sys.exit(f"{path} is missing: cargo build --release; apt-get install etcd-server")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even when started in the background
    say(f"etcd: one member ({ETCD}); lease_ttl_ms = {LEASE_TTL_MS}; binary {BIN}")
    with tempfile.TemporaryDirectory(prefix="switchyard-cluster-") as root:
        for name, part in PARTS.items():
            if args.only and name != args.only:
                continue
            say(f"\n== {name}")
            env = Env(root, name)
            try:
                part(env, args)
            finally:
                env.close()
    say(f"\n{'part':<12} {'figure':<62} {'measured':<34} {'goal':<14} met")
    for part, figure, measured, goal, met in RESULTS:
        mark = "-" if met is None else "yes" if met else "NO"
        say(f"{part:<12} {figure:<62} {measured:<34} {goal:<14} {mark}")


if __name__ == "__main__":
    main()
