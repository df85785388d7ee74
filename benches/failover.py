#!/usr/bin/env python3
"""Failover benchmark: how fast switchyard takes a dead master out and promotes a
standby, and what clients see meanwhile.

For each health interval (200 ms and 5 s by default) and each case (steady traffic, and
idle) it starts three mock masters (two primaries and a standby, each with a
health_url) and switchyard, kills one primary's process, and reads the audit trail:

- detection: kill -> `degraded` event (out of rotation);
- promotion: kill -> `failover_completed` (standby serving), to compare with
  recovery_wait_ms + detection;
- execution: `failover_started` -> `failover_completed` (the event's duration_ms);
- client errors: non-200 answers to the traffic during the whole run.

Targets (issue 3): out of rotation <= 100 ms under traffic with 0 client-visible errors;
idle detection <= interval x unhealthy_threshold + timeout; promotion <= degraded +
recovery_wait_ms + 50 ms. Each case runs --rounds times; medians are printed.

    cargo build --release && python3 benches/failover.py [--rounds 3] [--intervals 200,5000]
"""
import argparse
import datetime
import http.client
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

from benchlib import BIN, free_port, wait_port

BODY = '{"to": "+971500000001", "text": "failover bench"}'
TIMEOUT_MS = 1000
UNHEALTHY = 3
RECOVERY_WAIT_MS = 1000


def epoch(rfc3339):
    return datetime.datetime.strptime(rfc3339, "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.timezone.utc
    ).timestamp()


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.load(r)


def traffic(port, stop, counts):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    while not stop.is_set():
        try:
            conn.request("POST", "/v1/messages", BODY, {"content-type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            counts["sent"] += 1
            if resp.status != 200:
                counts["errors"] += 1
        except OSError:
            counts["sent"] += 1
            counts["errors"] += 1
            conn.close()
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)


def one_run(interval_ms, with_traffic):
    data = tempfile.mkdtemp(prefix="switchyard-failover-")
    procs = []
    mocks = {}
    for mid in ["a", "b", "s"]:
        port = free_port()
        procs.append(subprocess.Popen(
            [BIN, "mock-master", "--listen", f"127.0.0.1:{port}", "--id", mid],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        mocks[mid] = (port, procs[-1])
        wait_port(port)
    listen, admin = free_port(), free_port()
    masters = ""
    for mid, role in [("a", "primary"), ("b", "primary"), ("s", "standby")]:
        port = mocks[mid][0]
        masters += (f'\n[[masters]]\nid = "{mid}"\nsend_url = "http://127.0.0.1:{port}/send"\n'
                    f'health_url = "http://127.0.0.1:{port}/health"\nrole = "{role}"\n')
    config = (f'[server]\nlisten = "127.0.0.1:{listen}"\nadmin_listen = "127.0.0.1:{admin}"\n'
              f'[health]\ninterval_ms = {interval_ms}\ntimeout_ms = {TIMEOUT_MS}\n'
              f'unhealthy_threshold = {UNHEALTHY}\n'
              f'[failover]\nrecovery_wait_ms = {RECOVERY_WAIT_MS}\n'
              f'[queue]\npath = "{data}/queue"\n{masters}')
    path = os.path.join(data, "switchyard.toml")
    with open(path, "w") as f:
        f.write(config)
    sy = subprocess.Popen([BIN, "run", "--config", path],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs.append(sy)
    try:
        wait_port(listen)
        wait_port(admin)
        # Let every master pass its first checks.
        time.sleep(max(0.5, 3 * interval_ms / 1000))
        stop = threading.Event()
        counts = {"sent": 0, "errors": 0}
        threads = []
        if with_traffic:
            threads = [threading.Thread(target=traffic, args=(listen, stop, counts))
                       for _ in range(4)]
            for t in threads:
                t.start()
            time.sleep(1)
        mocks["a"][1].kill()
        killed = time.time()
        deadline = killed + interval_ms / 1000 * (UNHEALTHY + 2) + TIMEOUT_MS / 1000 \
            + RECOVERY_WAIT_MS / 1000 + 10
        found = {}
        while time.time() < deadline and "failover_completed" not in found:
            for e in get_json(f"http://127.0.0.1:{admin}/ha/events?limit=50")["events"]:
                if e["master"] == "a" and e["kind"] not in found:
                    found[e["kind"]] = e
            time.sleep(0.01)
        time.sleep(0.5)  # traffic keeps flowing on the promoted standby
        stop.set()
        for t in threads:
            t.join()
        if "failover_completed" not in found:
            sys.exit(f"no failover within the deadline; events seen: {list(found)}")
        return {
            "detection_ms": (epoch(found["degraded"]["at"]) - killed) * 1000,
            "promotion_ms": (epoch(found["failover_completed"]["at"]) - killed) * 1000,
            "after_degraded_ms": (epoch(found["failover_completed"]["at"])
                                  - epoch(found["degraded"]["at"])) * 1000,
            "execution_ms": found["failover_completed"]["duration_ms"],
            "sent": counts["sent"],
            "errors": counts["errors"],
        }
    finally:
        for p in procs:
            p.kill()
            p.wait()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--intervals", default="200,5000")
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    print(f"timeout_ms={TIMEOUT_MS} unhealthy_threshold={UNHEALTHY} "
          f"recovery_wait_ms={RECOVERY_WAIT_MS} passive_failures=5 (defaults but two); "
          f"medians of {args.rounds} rounds")
    print(f"{'interval':>9} {'case':>8} {'detect ms':>10} {'idle bound':>10} "
          f"{'promote ms':>10} {'after degr.':>11} {'exec ms':>8} {'requests':>9} {'errors':>7}")
    for interval in [int(i) for i in args.intervals.split(",")]:
        for with_traffic in [True, False]:
            runs = [one_run(interval, with_traffic) for _ in range(args.rounds)]
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            bound = interval * UNHEALTHY + TIMEOUT_MS
            print(f"{interval:>9} {'traffic' if with_traffic else 'idle':>8} "
                  f"{med['detection_ms']:>10.0f} {bound:>10} {med['promotion_ms']:>10.0f} "
                  f"{med['after_degraded_ms']:>11.0f} {med['execution_ms']:>8.2f} "
                  f"{sum(r['sent'] for r in runs):>9} {sum(r['errors'] for r in runs):>7}")


if __name__ == "__main__":
    main()
