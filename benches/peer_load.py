#!/usr/bin/env python3
"""Peer load benchmark: switchyard, nginx and haproxy in front of the same three
upstreams on loopback, in one run.

Each proxy runs with one worker pinned to one core (core 0); the upstreams (switchyard
mock masters) and wrk share the other cores. For each proxy it prints requests/s, p50,
p99, non-2xx answers and the proxy's CPU time per request (utime + stime from /proc over
the wrk run, divided by the requests served), and switchyard's peak RSS (VmHWM).
Rounds alternate the proxies and the report gives the median of each figure.

`--baseline PATH` adds another switchyard binary (an earlier build) as a fourth proxy
in the same rounds, reported as `baseline`, to measure a change against its peers.
`--rust-log LEVEL` sets both switchyard builds' RUST_LOG (default warn; `info` writes
the access log, to /dev/null); `--extra TOML` is appended to the config of the build
under test only (an older baseline may not know its keys).

Needs: nginx (Debian nginx-light), haproxy, wrk, taskset; a release build is made.
    python3 benches/peer_load.py [--duration 10] [--connections 50] [--rounds 3] [--baseline PATH]
                                 [--rust-log LEVEL] [--extra TOML]
"""
import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import BIN, ROOT, free_port, parse_wrk, post_script, proc_status_kb, wait_port

BODY = '{"to": "+971500000001", "text": "hello from the load test"}'
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids):
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
        except FileNotFoundError:
            pass
    return total


def process_tree(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [pid] + [int(p) for p in out.split()]


def run_wrk(port, path, args, script):
    cmd = ["taskset", "-c", args.client_cores, "wrk", "-t", "1", "-c", str(args.connections),
           "-d", f"{args.duration}s", "--latency", "-s", script, f"http://127.0.0.1:{port}{path}"]
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def start_proxies(tmp, upstreams, args):
    procs = {}
    pin = ["taskset", "-c", args.proxy_core]

    builds = [("switchyard", BIN)] + ([("baseline", args.baseline)] if args.baseline else [])
    for name, binary in builds:
        sy_port, sy_admin = free_port(), free_port()
        cfg = os.path.join(tmp, f"{name}.toml")
        with open(cfg, "w") as f:
            f.write(f'[server]\nlisten = "127.0.0.1:{sy_port}"\nadmin_listen = "127.0.0.1:{sy_admin}"\n')
            f.write(f'[queue]\npath = "{tmp}/{name}/queue"\n')
            for i, port in enumerate(upstreams):
                f.write(f'[[masters]]\nid = "m{i}"\nsend_url = "http://127.0.0.1:{port}/send"\n')
            if name == "switchyard" and args.extra:
                f.write(args.extra.replace("\\n", "\n") + "\n")
        env = dict(os.environ, TOKIO_WORKER_THREADS="1", RUST_LOG=args.rust_log)
        p = subprocess.Popen(pin + [binary, "run", "--config", cfg], env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs[name] = (p, sy_port, "/v1/messages")

    ng_port = free_port()
    servers = "\n".join(f"    server 127.0.0.1:{port};" for port in upstreams)
    ng_conf = os.path.join(tmp, "nginx.conf")
    with open(ng_conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {tmp}/nginx.pid;
error_log {tmp}/nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/ng-body;
  proxy_temp_path {tmp}/ng-proxy;
  upstream masters {{
{servers}
    keepalive 128;
  }}
  server {{
    listen 127.0.0.1:{ng_port};
    location / {{
      proxy_pass http://masters/send;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_next_upstream error timeout http_502 http_503 http_504 http_429 non_idempotent;
    }}
  }}
}}
""")
    p = subprocess.Popen(pin + ["nginx", "-c", ng_conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs["nginx"] = (p, ng_port, "/v1/messages")

    hp_port = free_port()
    backends = "\n".join(f"  server m{i} 127.0.0.1:{port}" for i, port in enumerate(upstreams))
    hp_conf = os.path.join(tmp, "haproxy.cfg")
    with open(hp_conf, "w") as f:
        f.write(f"""global
  nbthread 1
  maxconn 4096
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 10s
  option http-keep-alive
  retries 2
  option redispatch
frontend fe
  bind 127.0.0.1:{hp_port}
  default_backend masters
backend masters
  balance roundrobin
  http-reuse always
  retry-on conn-failure empty-response response-timeout 502 503 504
  http-request set-path /send
{backends}
""")
    p = subprocess.Popen(pin + ["haproxy", "-db", "-f", hp_conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs["haproxy"] = (p, hp_port, "/v1/messages")
    for _, port, _ in procs.values():
        wait_port(port)
    return procs


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--proxy-core", default="0")
    ncpu = os.cpu_count() or 2
    rest = f"1-{ncpu - 1}" if ncpu > 2 else "1"
    ap.add_argument("--client-cores", default=rest, help="cores for wrk and the upstreams")
    ap.add_argument("--baseline", help="another switchyard binary to run in the same rounds")
    ap.add_argument("--rust-log", default="warn", help="RUST_LOG of the switchyard builds")
    ap.add_argument("--extra", default="", help="TOML appended to the tested build's config (\\n for newlines)")
    args = ap.parse_args()
    for tool in ["nginx", "haproxy", "wrk", "taskset"]:
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install -y nginx-light haproxy wrk util-linux")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "switchyard"], cwd=ROOT, check=True)

    tmp = tempfile.mkdtemp(prefix="switchyard-peer-")
    children = []
    try:
        upstreams = []
        for i in range(3):
            port = free_port()
            env = dict(os.environ, TOKIO_WORKER_THREADS="1")
            children.append(subprocess.Popen(
                ["taskset", "-c", args.client_cores, BIN, "mock-master", "--listen", f"127.0.0.1:{port}", "--id", f"m{i}"],
                env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
            upstreams.append(port)
        for port in upstreams:
            wait_port(port)
        procs = start_proxies(tmp, upstreams, args)
        children += [p for p, _, _ in procs.values()]
        script = post_script(os.path.join(tmp, "post.lua"), BODY)

        results = {name: [] for name in procs}
        for name, (p, port, path) in procs.items():  # warm-up: open pools, fault in pages
            subprocess.run(["wrk", "-t", "1", "-c", str(args.connections), "-d", "2s", "-s", script,
                            f"http://127.0.0.1:{port}{path}"], capture_output=True, check=True)
        for r in range(args.rounds):
            order = list(procs.items())
            order = order[r % len(order):] + order[:r % len(order)]
            for name, (p, port, path) in order:
                pids = process_tree(p.pid)
                before = cpu_ticks(pids)
                res = run_wrk(port, path, args, script)
                res["cpu_us"] = (cpu_ticks(pids) - before) / TICK * 1e6 / max(res["requests"], 1)
                results[name].append(res)
                print(f"round {r + 1} {name:<10} {res['rps']:>9.0f} req/s  p50 {res['p50']:.2f} ms  "
                      f"p99 {res['p99']:.2f} ms  cpu {res['cpu_us']:.1f} us/req  non-2xx {res['non2xx']}"
                      f"{'  socket errors: ' + res['socket_errors'] if res['socket_errors'] else ''}", flush=True)
        rss = proc_status_kb(procs["switchyard"][0].pid, "VmHWM") / 1024

        med = {n: {k: statistics.median(x[k] for x in rs) for k in ("rps", "p50", "p99", "cpu_us")}
               for n, rs in results.items()}
        print(f"\nmedians of {args.rounds} rounds, {args.duration}s each, {args.connections} connections, "
              f"proxy on core {args.proxy_core}, wrk + upstreams on {args.client_cores}")
        print(f"{'proxy':<11}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/req':>12}{'cpu vs haproxy':>16}{'p99 vs haproxy':>16}")
        h = med["haproxy"]
        for name, m in med.items():
            print(f"{name:<11}{m['rps']:>10.0f}{m['p50']:>9.2f}{m['p99']:>9.2f}{m['cpu_us']:>12.1f}"
                  f"{m['cpu_us'] / h['cpu_us']:>16.2f}{m['p99'] / h['p99']:>16.2f}")
        print(f"\nswitchyard peak RSS (VmHWM): {rss:.1f} MB")
        if any(x["non2xx"] for rs in results.values() for x in rs):
            print("warning: some answers were not 2xx")
    finally:
        for p in children:
            p.terminate()
        for p in children:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
