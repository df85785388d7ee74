#!/usr/bin/env python3
"""Pacing accuracy (SPEC section 10): a backlog posted at once to masters with
`rate_per_sec` and `burst`, drained by switchyard's delivery loop.

Three mock masters (release build, no limit of their own: what they count is what
switchyard sent), each with `rate_per_sec = RATE` and `burst = BURST`. N messages are
posted at once by 64 threads with `Prefer: respond-async`; the clock starts at the
first post. Printed per master: the largest count of sends in any one second (the
mock's `max_per_second`) against `RATE + BURST` (goal: never above); and the drain
time against the ideal N / (3 x RATE) (goal: within 5%).

    cargo build --release && python3 benches/pacing.py [--messages 3000] [--rate 25] [--burst 5]
"""
import argparse
import concurrent.futures
import json
import os
import subprocess
import tempfile
import time
import urllib.request

from benchlib import BIN, free_port, wait_port


def get(url):
    with urllib.request.urlopen(url, timeout=10) as r:
        return json.loads(r.read())


def post(url):
    req = urllib.request.Request(
        url, data=b'{"text": "hello"}', method="POST",
        headers={"content-type": "application/json", "prefer": "respond-async"})
    with urllib.request.urlopen(req, timeout=30) as r:
        return r.status


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--rate", type=float, default=25)
    ap.add_argument("--burst", type=int, default=5)
    args = ap.parse_args()
    procs, mocks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        try:
            for name in ("a", "b", "c"):
                port = free_port()
                procs.append(subprocess.Popen(
                    [BIN, "mock-master", "--listen", f"127.0.0.1:{port}", "--id", name],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
                wait_port(port)
                mocks.append((name, port))
            listen, admin = free_port(), free_port()
            cfg = os.path.join(tmp, "switchyard.toml")
            with open(cfg, "w") as f:
                f.write(f'[server]\nlisten = "127.0.0.1:{listen}"\n'
                        f'admin_listen = "127.0.0.1:{admin}"\n'
                        f'[queue]\npath = "{tmp}/queue"\nmax_attempts = 1000\n')
                for name, port in mocks:
                    f.write(f'[[masters]]\nid = "{name}"\n'
                            f'send_url = "http://127.0.0.1:{port}/send"\n'
                            f'rate_per_sec = {args.rate}\nburst = {args.burst}\n')
            procs.append(subprocess.Popen(
                [BIN, "run", "--config", cfg], cwd=tmp,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            wait_port(listen)
            url = f"http://127.0.0.1:{listen}/v1/messages"
            start = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(64) as pool:
                statuses = list(pool.map(lambda _: post(url), range(args.messages)))
            posted = time.monotonic() - start
            assert all(s == 202 for s in statuses), set(statuses)
            while True:
                counts = [get(f"http://127.0.0.1:{p}/received") for _, p in mocks]
                if sum(c["count"] for c in counts) >= args.messages:
                    break
                time.sleep(0.01)
            drain = time.monotonic() - start
            ideal = args.messages / (3 * args.rate)
            print(f"{args.messages} messages, 3 masters at rate_per_sec {args.rate} burst {args.burst}; "
                  f"posted in {posted:.2f} s")
            for (name, _), c in zip(mocks, counts):
                print(f"  {name}: {c['count']} sent, largest one-second count {c['max_per_second']}"
                      f" (limit rate + burst = {args.rate + args.burst:g})")
            print(f"drain {drain:.2f} s, ideal {ideal:.2f} s: {drain / ideal:.3f} x ideal")
        finally:
            for p in procs:
                p.terminate()
                p.wait()


if __name__ == "__main__":
    main()
