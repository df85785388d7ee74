#!/usr/bin/env python3
"""Queue benchmark: durable async 202s against synchronous forwarding, and the drain.

One mock master behind switchyard (release build, its default runtime), wrk with one
thread and 50 connections posting a 40-byte JSON message. Per round:

1. sync: plain POSTs, forwarded at once (req/s, p99);
2. async: `Prefer: respond-async` with the master disabled, so every request is only
   written to the queue with its fsync and answered 202 (req/s, p99);
3. drain: the master is enabled and the backlog left by step 2 is timed to empty
   (messages/s);
4. async+drain: async POSTs with the master up, accepting and delivering at once
   (req/s), then the queue must reach 0.

Targets (issue 4): async 202 throughput >= 0.8 x sync; drain >= 5,000 messages/s.
Rounds alternate; medians are printed.

    cargo build --release && python3 benches/queue_load.py [--rounds 3] [--duration 5]

With --backlog-fill SECONDS it instead fills a backlog (master disabled) for that long,
restarts switchyard with SIGTERM, and prints the time from start to serving and the RSS
with the backlog against an empty start (targets: <= 2 s and <= +10 MB at 1,000,000).
"""
import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import BIN, call_json, free_port, parse_wrk, post_script, rss_kb, wait_port

BODY = '{"to": "+971500000001", "text": "hello"}'


def admin(port, path, method="GET"):
    return call_json(port, path, method, timeout=10)


def wrk(port, script, duration):
    r = parse_wrk(subprocess.run(
        ["wrk", "-t1", "-c50", f"-d{duration}s", "--latency", "-s", script,
         f"http://127.0.0.1:{port}/v1/messages"],
        capture_output=True, text=True, check=True).stdout)
    return r["rps"], r["p99"], r["non2xx"]


def one_round(duration, scripts):
    data = tempfile.mkdtemp(prefix="switchyard-queue-")
    mport, listen, aport = free_port(), free_port(), free_port()
    mock = subprocess.Popen([BIN, "mock-master", "--listen", f"127.0.0.1:{mport}", "--id", "a"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    path = os.path.join(data, "switchyard.toml")
    with open(path, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{listen}"\nadmin_listen = "127.0.0.1:{aport}"\n'
                f'[queue]\npath = "{data}/queue"\n'
                f'[[masters]]\nid = "a"\nsend_url = "http://127.0.0.1:{mport}/send"\n')
    sy = subprocess.Popen([BIN, "run", "--config", path],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(mport)
        wait_port(listen)
        r = {}
        r["sync_rps"], r["sync_p99"], bad = wrk(listen, scripts["sync"], duration)
        assert bad == 0, f"{bad} sync answers were not 2xx"
        admin(aport, "/ha/masters/a/disable", "POST")
        r["async_rps"], r["async_p99"], bad = wrk(listen, scripts["async"], duration)
        assert bad == 0, f"{bad} async answers were not 2xx"
        backlog = admin(aport, "/health")["queue_depth"]
        start = time.time()
        admin(aport, "/ha/masters/a/enable", "POST")
        while admin(aport, "/health")["queue_depth"] > 0:
            time.sleep(0.05)
            if time.time() - start > 120:
                sys.exit("the backlog did not drain within 120 s")
        r["backlog"] = backlog
        r["drain_rate"] = backlog / (time.time() - start)
        r["both_rps"], _, bad = wrk(listen, scripts["async"], duration)
        assert bad == 0, f"{bad} async answers were not 2xx"
        start = time.time()
        while admin(aport, "/health")["queue_depth"] > 0:
            time.sleep(0.05)
            if time.time() - start > 120:
                sys.exit("the queue did not empty after the mixed run")
        r["catch_up_s"] = time.time() - start
        return r
    finally:
        for p in (sy, mock):
            p.kill()
            p.wait()
        subprocess.run(["rm", "-rf", data], check=False)


def backlog_run(fill_seconds, scripts):
    """Fills the queue with the master disabled, restarts switchyard with SIGTERM and
    times start to serving; RSS with the backlog against RSS of a fresh empty start."""
    data = tempfile.mkdtemp(prefix="switchyard-backlog-")
    listen, aport = free_port(), free_port()
    path = os.path.join(data, "switchyard.toml")
    with open(path, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{listen}"\nadmin_listen = "127.0.0.1:{aport}"\n'
                f'[queue]\npath = "{data}/queue"\n'
                f'[[masters]]\nid = "a"\nsend_url = "http://127.0.0.1:{free_port()}/send"\n')

    def start():
        t0 = time.time()
        p = subprocess.Popen([BIN, "run", "--config", path],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while True:
            try:
                admin(aport, "/health")
                return p, time.time() - t0
            except OSError:
                time.sleep(0.01)

    sy, _ = start()
    try:
        time.sleep(2)
        empty_rss = rss_kb(sy.pid)
        admin(aport, "/ha/masters/a/disable", "POST")
        rps, _, _ = wrk(listen, scripts["async"], fill_seconds)
        depth = admin(aport, "/health")["queue_depth"]
        sy.terminate()
        sy.wait()
        sy, took = start()
        time.sleep(2)
        return {"backlog": depth, "fill_rps": rps, "start_s": took,
                "rss_mb": rss_kb(sy.pid) / 1024, "empty_rss_mb": empty_rss / 1024}
    finally:
        sy.kill()
        sy.wait()
        subprocess.run(["rm", "-rf", data], check=False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--duration", type=int, default=5)
    ap.add_argument("--backlog-fill", type=int, default=0, metavar="SECONDS",
                    help="instead: fill a backlog for SECONDS, restart, time start and RSS")
    args = ap.parse_args()
    if not os.path.exists(BIN):
        sys.exit("build first: cargo build --release")
    tmp = tempfile.mkdtemp(prefix="switchyard-wrk-")
    scripts = {name: post_script(os.path.join(tmp, f"{name}.lua"), BODY, extra)
               for name, extra in [("sync", ""),
                                   ("async", 'wrk.headers["Prefer"] = "respond-async"\n')]}
    if args.backlog_fill:
        r = backlog_run(args.backlog_fill, scripts)
        print(f"backlog {r['backlog']} messages (filled at {r['fill_rps']:.0f}/s); "
              f"start to serving {r['start_s']:.2f} s; RSS {r['rss_mb']:.1f} MB "
              f"against {r['empty_rss_mb']:.1f} MB empty (+{r['rss_mb'] - r['empty_rss_mb']:.1f} MB)")
        return
    runs = []
    for i in range(args.rounds):
        r = one_round(args.duration, scripts)
        runs.append(r)
        print(f"round {i + 1}: " + ", ".join(f"{k} {v:.1f}" for k, v in r.items()))
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    print(f"\nmedians of {args.rounds} rounds, {args.duration}s each, wrk 1 thread 50 connections")
    print(f"sync forward        {med['sync_rps']:>9.0f} req/s   p99 {med['sync_p99']:.2f} ms")
    print(f"async 202 (durable) {med['async_rps']:>9.0f} req/s   p99 {med['async_p99']:.2f} ms"
          f"   ratio {med['async_rps'] / med['sync_rps']:.2f}")
    print(f"drain               {med['drain_rate']:>9.0f} msg/s   (backlog {med['backlog']:.0f})")
    print(f"async + delivery    {med['both_rps']:>9.0f} req/s   queue empty {med['catch_up_s']:.1f} s after")


if __name__ == "__main__":
    main()
