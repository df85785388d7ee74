#!/usr/bin/env python3
"""Peer load benchmark: switchyard, nginx and haproxy in front of the same three
upstreams on loopback, in one run.

Each proxy runs with one worker pinned to one core (core 0); the upstreams (switchyard
mock masters) and wrk share the other cores. For each proxy it prints requests/s, p50,
p99, non-2xx answers and the proxy's CPU time per request (utime + stime from /proc over
the wrk run, divided by the requests served, and its user and kernel parts), and
switchyard's peak RSS (VmHWM).
Rounds alternate the proxies and the report gives the median of each figure, and the
median over rounds of each proxy's CPU per request and p99 over HAProxy's in the same
round ("by round"): on a shared machine whose load drifts over minutes, the paired
ratio is the steadier of the two. It then counts, against each other proxy, the rounds
in which switchyard's CPU per request and p99 were below that proxy's.

`--baseline PATH` adds another switchyard binary (an earlier build) as a fourth proxy
in the same rounds, reported as `baseline`, to measure a change against its peers.
`--rust-log LEVEL` sets both switchyard builds' RUST_LOG (default warn; `info` writes
the access log, to /dev/null); `--extra TOML` is appended to the config of the build
under test only (an older baseline may not know its keys), and `--master-extra TOML`
to each of its `[[masters]]` tables (e.g. a budget: `rate_per_sec = 1000000`).

`--floor PATH` adds the bare forwarder (`cargo build --release --example
bare_forwarder`, then `target/release/examples/bare_forwarder`), reported as `floor`: the
least a forwarder on the same runtime does per message, with none of switchyard's work.

`--tls` adds `switchyard-tls` and `haproxy-tls` to the same rounds: wrk speaks HTTPS
to them and they speak HTTPS to three more mock masters (`--tls-cert`), verifying the
masters' certificates against a CA made for the run with openssl. It then prints each
one's TLS-to-plain ratios of CPU per request and p99.

`--upstream fast` puts one nginx that answers `return 200` on three ports in place of
the mock masters (on the client cores): a slower upstream hides part of a proxy's own
cost, so the fast one shows it whole. `--upstream both` runs the rounds once with each
and reports both.

`--threads N` gives every proxy N workers (switchyard's tokio worker threads, HAProxy's
`nbthread`, nginx's `worker_processes`) on the cores `--proxy-core` names (e.g. `0,1`
with `--threads 2`): multi-core scaling, requests/s against the peers.

`--syscalls` adds one more wrk run per proxy under `strace -c -f` and prints its system
calls per request, in all and the most frequent.

Needs: nginx (Debian nginx-light), haproxy, wrk, taskset (and openssl for --tls, strace
for --syscalls); a release build is made.
    python3 benches/peer_load.py [--duration 10] [--connections 50] [--rounds 3] [--baseline PATH] [--tls]
                                 [--rust-log LEVEL] [--extra TOML] [--master-extra TOML]
                                 [--upstream mock|fast|both] [--threads N --proxy-core 0,1] [--syscalls]
"""
import argparse
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchlib import BIN, ROOT, free_port, parse_wrk, post_script, proc_status_kb, wait_port

BODY = '{"to": "+971500000001", "text": "hello from the load test"}'
TICK = os.sysconf("SC_CLK_TCK")


def cpu_ticks(pids):
    """(user, kernel) clock ticks the processes have used."""
    user = kernel = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            user, kernel = user + int(fields[11]), kernel + int(fields[12])  # utime, stime
        except FileNotFoundError:
            pass
    return user, kernel


def process_tree(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [pid] + [int(p) for p in out.split()]


def make_certs(tmp):
    """A CA and a certificate for 127.0.0.1 and localhost signed by it; returns the paths
    of the CA, the certificate, its key, and the two concatenated (for haproxy)."""
    ca_key, ca, key, csr, crt = (os.path.join(tmp, n) for n in ("ca.key", "ca.pem", "leaf.key", "leaf.csr", "leaf.crt"))
    run = lambda *cmd: subprocess.run(cmd, check=True, capture_output=True)
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", ca_key, "-out", ca, "-days", "2", "-subj", "/CN=bench ca")
    run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
        "-keyout", key, "-out", csr, "-subj", "/CN=localhost")
    ext = os.path.join(tmp, "san.ext")
    with open(ext, "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    run("openssl", "x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
        "-out", crt, "-days", "2", "-extfile", ext)
    both = os.path.join(tmp, "leaf-and-key.pem")
    with open(both, "w") as f:
        f.write(open(crt).read() + open(key).read())
    return {"ca": ca, "crt": crt, "key": key, "both": both}


def start_mock(port, name, args, certs=None):
    tls = ["--tls-cert", certs["crt"], "--tls-key", certs["key"]] if certs else []
    env = dict(os.environ, TOKIO_WORKER_THREADS="1")
    return subprocess.Popen(
        ["taskset", "-c", args.client_cores, BIN, "mock-master", "--listen", f"127.0.0.1:{port}", "--id", name] + tls,
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def run_wrk(port, path, args, script, scheme="http"):
    cmd = ["taskset", "-c", args.client_cores, "wrk", "-t", "1", "-c", str(args.connections),
           "-d", f"{args.duration}s", "--latency", "-s", script, f"{scheme}://127.0.0.1:{port}{path}"]
    return parse_wrk(subprocess.run(cmd, capture_output=True, text=True, check=True).stdout)


def start_switchyard(tmp, name, binary, upstreams, pin, certs=None, extra="", rust_log="warn",
                     master_extra="", threads=1):
    sy_port, sy_admin = free_port(), free_port()
    cfg = os.path.join(tmp, f"{name}.toml")
    with open(cfg, "w") as f:
        f.write(f'[server]\nlisten = "127.0.0.1:{sy_port}"\nadmin_listen = "127.0.0.1:{sy_admin}"\n')
        if certs:
            f.write(f'tls_cert = "{certs["crt"]}"\ntls_key = "{certs["key"]}"\n')
        f.write(f'[queue]\npath = "{tmp}/{name}/queue"\n')
        scheme = "https" if certs else "http"
        for i, port in enumerate(upstreams):
            f.write(f'[[masters]]\nid = "m{i}"\nsend_url = "{scheme}://127.0.0.1:{port}/send"\n')
            if certs:
                f.write(f'tls_ca = "{certs["ca"]}"\n')
            if master_extra:
                f.write(master_extra.replace("\\n", "\n") + "\n")
        if extra:
            f.write(extra.replace("\\n", "\n") + "\n")
    env = dict(os.environ, TOKIO_WORKER_THREADS=str(threads), RUST_LOG=rust_log)
    p = subprocess.Popen(pin + [binary, "run", "--config", cfg], env=env,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (p, sy_port, "/v1/messages", scheme)


def haproxy_config(port, upstreams, certs=None, threads=1):
    bind = f" ssl crt {certs['both']} alpn http/1.1" if certs else ""
    server_tls = (f" ssl verify required ca-file {certs['ca']} sni str(localhost) verifyhost localhost alpn http/1.1"
                  if certs else "")
    backends = "\n".join(f"  server m{i} 127.0.0.1:{p}{server_tls}" for i, p in enumerate(upstreams))
    return f"""global
  nbthread {threads}
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
  bind 127.0.0.1:{port}{bind}
  default_backend masters
backend masters
  balance roundrobin
  http-reuse always
  retry-on conn-failure empty-response response-timeout 502 503 504
  http-request set-path /send
{backends}
"""


def start_haproxy(tmp, name, upstreams, pin, certs=None, threads=1):
    port = free_port()
    conf = os.path.join(tmp, f"{name}.cfg")
    with open(conf, "w") as f:
        f.write(haproxy_config(port, upstreams, certs, threads))
    p = subprocess.Popen(pin + ["haproxy", "-db", "-f", conf], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (p, port, "/v1/messages", "https" if certs else "http")


def start_proxies(tmp, upstreams, args, tls_upstreams=None, certs=None):
    procs = {}
    pin = ["taskset", "-c", args.proxy_core]

    builds = [("switchyard", BIN)] + ([("baseline", args.baseline)] if args.baseline else [])
    for name, binary in builds:
        extra = args.extra if name == "switchyard" else ""
        master_extra = args.master_extra if name == "switchyard" else ""
        procs[name] = start_switchyard(tmp, name, binary, upstreams, pin, extra=extra, rust_log=args.rust_log,
                                       master_extra=master_extra, threads=args.threads)

    ng_port = free_port()
    servers = "\n".join(f"    server 127.0.0.1:{port};" for port in upstreams)
    ng_conf = os.path.join(tmp, "nginx.conf")
    with open(ng_conf, "w") as f:
        f.write(f"""worker_processes {args.threads};
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
    procs["nginx"] = (p, ng_port, "/v1/messages", "http")
    procs["haproxy"] = start_haproxy(tmp, "haproxy", upstreams, pin, threads=args.threads)
    if args.floor:
        port = free_port()
        env = dict(os.environ, TOKIO_WORKER_THREADS=str(args.threads))
        p = subprocess.Popen(pin + [args.floor, f"127.0.0.1:{port}"] + [f"127.0.0.1:{u}" for u in upstreams],
                             env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs["floor"] = (p, port, "/v1/messages", "http")
    if certs:
        procs["switchyard-tls"] = start_switchyard(tmp, "switchyard-tls", BIN, tls_upstreams, pin, certs)
        procs["haproxy-tls"] = start_haproxy(tmp, "haproxy-tls", tls_upstreams, pin, certs)
    for _, port, _, _ in procs.values():
        wait_port(port)
    return procs


def start_fast_upstreams(tmp, args):
    """One nginx, on the client cores, answering every request at once on three ports."""
    ports = [free_port() for _ in range(3)]
    listens = "\n".join(f"    listen 127.0.0.1:{p};" for p in ports)
    conf = os.path.join(tmp, "upstream-nginx.conf")
    with open(conf, "w") as f:
        f.write(f"""worker_processes 1;
daemon off;
pid {tmp}/upstream-nginx.pid;
error_log {tmp}/upstream-nginx-error.log warn;
events {{ worker_connections 4096; }}
http {{
  access_log off;
  client_body_temp_path {tmp}/up-body;
  keepalive_requests 1000000;
  server {{
{listens}
    location / {{
      default_type application/json;
      return 200 '{{"accepted": true}}';
    }}
  }}
}}
""")
    p = subprocess.Popen(["taskset", "-c", args.client_cores, "nginx", "-c", conf],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return p, ports


def run_mode(args, mode):
    """One full set of rounds with `mode` upstreams; returns the medians by proxy."""
    tmp = tempfile.mkdtemp(prefix="switchyard-peer-")
    children = []
    try:
        certs = make_certs(tmp) if args.tls else None
        upstreams, tls_upstreams = [], []
        if mode == "fast":
            p, upstreams = start_fast_upstreams(tmp, args)
            children.append(p)
        else:
            for i in range(3):
                port = free_port()
                children.append(start_mock(port, f"m{i}", args))
                upstreams.append(port)
        if certs:
            for i in range(3):
                port = free_port()
                children.append(start_mock(port, f"m{i}", args, certs))
                tls_upstreams.append(port)
        for port in upstreams + tls_upstreams:
            wait_port(port)
        procs = start_proxies(tmp, upstreams, args, tls_upstreams, certs)
        children += [p for p, _, _, _ in procs.values()]
        script = post_script(os.path.join(tmp, "post.lua"), BODY)

        results = {name: [] for name in procs}
        for name, (p, port, path, scheme) in procs.items():  # warm-up: open pools, fault in pages
            subprocess.run(["wrk", "-t", "1", "-c", str(args.connections), "-d", "2s", "-s", script,
                            f"{scheme}://127.0.0.1:{port}{path}"], capture_output=True, check=True)
        for r in range(args.rounds):
            order = list(procs.items())
            order = order[r % len(order):] + order[:r % len(order)]
            for name, (p, port, path, scheme) in order:
                pids = process_tree(p.pid)
                before = cpu_ticks(pids)
                res = run_wrk(port, path, args, script, scheme)
                after = cpu_ticks(pids)
                per_req = lambda ticks: ticks / TICK * 1e6 / max(res["requests"], 1)
                res["user_us"] = per_req(after[0] - before[0])
                res["kernel_us"] = per_req(after[1] - before[1])
                res["cpu_us"] = res["user_us"] + res["kernel_us"]
                results[name].append(res)
                print(f"{mode} round {r + 1} {name:<14} {res['rps']:>9.0f} req/s  p50 {res['p50']:.2f} ms  "
                      f"p99 {res['p99']:.2f} ms  cpu {res['cpu_us']:.1f} us/req  non-2xx {res['non2xx']}"
                      f"{'  socket errors: ' + res['socket_errors'] if res['socket_errors'] else ''}", flush=True)
        rss = proc_status_kb(procs["switchyard"][0].pid, "VmHWM") / 1024
        if args.syscalls:
            count_syscalls(procs, args, script, tmp)
        if any(x["non2xx"] for rs in results.values() for x in rs):
            print("warning: some answers were not 2xx")
        med = {n: {k: statistics.median(x[k] for x in rs)
                   for k in ("rps", "p50", "p99", "cpu_us", "user_us", "kernel_us")}
               for n, rs in results.items()}
        # Paired: each round's figure over HAProxy's in the same round, then the median.
        # Drift on a shared machine (a neighbour's load coming and going over minutes)
        # moves both runs of a round alike, so it cancels here and not in the medians.
        ha = results["haproxy"]
        sy = results["switchyard"]
        for n, rs in results.items():
            for k in ("cpu_us", "p99"):
                med[n][f"{k}_paired"] = statistics.median(x[k] / h[k] for x, h in zip(rs, ha))
                # Rounds in which switchyard's figure was below this proxy's.
                med[n][f"{k}_sy_below"] = sum(s[k] < x[k] for s, x in zip(sy, rs))
        return med, rss
    finally:
        for p in children:
            p.terminate()
        for p in children:
            try:
                p.wait(5)
            except subprocess.TimeoutExpired:
                p.kill()
        shutil.rmtree(tmp, ignore_errors=True)


def count_syscalls(procs, args, script, tmp):
    """One more wrk run per proxy under `strace -c -f`: system calls per request, in all
    and the most frequent. strace slows the proxy down; the counts per request hold."""
    print(f"\nsystem calls per request (strace -c -f over one {args.duration}s wrk run each)")
    for name, (p, port, path, scheme) in procs.items():
        out = os.path.join(tmp, f"{name}.strace")
        attach = [a for pid in process_tree(p.pid) for a in ("-p", str(pid))]
        st = subprocess.Popen(["strace", "-c", "-f", "-o", out] + attach,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
        res = run_wrk(port, path, args, script, scheme)
        st.send_signal(signal.SIGINT)
        st.wait(30)
        calls = {}
        with open(out) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 5 and parts[3].isdigit() and parts[-1] != "total":
                    calls[parts[-1]] = int(parts[3])
        n = max(res["requests"], 1)
        top = sorted(calls.items(), key=lambda kv: -kv[1])[:6]
        print(f"{name:<15}{sum(calls.values()) / n:>6.2f}  " + "  ".join(f"{k} {v / n:.2f}" for k, v in top))


def report(args, mode, med, rss):
    print(f"\n{mode} upstreams: medians of {args.rounds} rounds, {args.duration}s each, {args.connections} "
          f"connections, {args.threads} worker(s) per proxy on core(s) {args.proxy_core}, wrk + upstreams on "
          f"{args.client_cores}")
    print(f"{'proxy':<15}{'req/s':>10}{'p50 ms':>9}{'p99 ms':>9}{'cpu us/req':>12}{'user':>7}{'kernel':>8}"
          f"{'cpu vs haproxy':>16}{'p99 vs haproxy':>16}{'req/s vs haproxy':>18}"
          f"{'cpu vs haproxy by round':>25}{'p99 vs haproxy by round':>25}")
    h = med["haproxy"]
    for name, m in med.items():
        print(f"{name:<15}{m['rps']:>10.0f}{m['p50']:>9.2f}{m['p99']:>9.2f}{m['cpu_us']:>12.1f}"
              f"{m['user_us']:>7.1f}{m['kernel_us']:>8.1f}"
              f"{m['cpu_us'] / h['cpu_us']:>16.2f}{m['p99'] / h['p99']:>16.2f}{m['rps'] / h['rps']:>18.2f}"
              f"{m['cpu_us_paired']:>25.2f}{m['p99_paired']:>25.2f}")
    print(f"rounds of {args.rounds} with switchyard below: " + ", ".join(
        f"{name} (cpu {m['cpu_us_sy_below']}, p99 {m['p99_sy_below']})"
        for name, m in med.items() if name != "switchyard"))
    if args.tls:
        print(f"\nTLS on both sides vs plain (ratio of medians; lower is better)")
        print(f"{'proxy':<15}{'cpu tls/plain':>15}{'p99 tls/plain':>15}")
        for plain in ("switchyard", "haproxy"):
            t, m = med[f"{plain}-tls"], med[plain]
            print(f"{plain:<15}{t['cpu_us'] / m['cpu_us']:>15.2f}{t['p99'] / m['p99']:>15.2f}")
    print(f"switchyard peak RSS (VmHWM): {rss:.1f} MB")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--duration", type=int, default=10)
    ap.add_argument("--connections", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--proxy-core", default="0", help="the proxies' core(s), e.g. 0 or 0,1")
    ncpu = os.cpu_count() or 2
    rest = f"1-{ncpu - 1}" if ncpu > 2 else "1"
    ap.add_argument("--client-cores", default=rest, help="cores for wrk and the upstreams")
    ap.add_argument("--baseline", help="another switchyard binary to run in the same rounds")
    ap.add_argument("--floor", help="a bare forwarder binary (examples/bare_forwarder.rs) to run in the same rounds")
    ap.add_argument("--tls", action="store_true", help="also run switchyard and haproxy with TLS on both sides")
    ap.add_argument("--rust-log", default="warn", help="RUST_LOG of the switchyard builds")
    ap.add_argument("--extra", default="", help="TOML appended to the tested build's config (\\n for newlines)")
    ap.add_argument("--master-extra", default="",
                    help="TOML appended to each [[masters]] table of the tested build's config")
    ap.add_argument("--upstream", choices=["mock", "fast", "both"], default="mock",
                    help="mock masters, one nginx answering at once, or both in turn")
    ap.add_argument("--threads", type=int, default=1, help="workers per proxy")
    ap.add_argument("--syscalls", action="store_true",
                    help="after the rounds, count each proxy's system calls per request with strace")
    args = ap.parse_args()
    for tool in ["nginx", "haproxy", "wrk", "taskset"] + (["openssl"] if args.tls else []):
        if not shutil.which(tool):
            sys.exit(f"{tool} is missing: apt-get install -y nginx-light haproxy wrk util-linux")
    subprocess.run(["cargo", "build", "--release", "--quiet", "--bin", "switchyard"], cwd=ROOT, check=True)
    modes = ["mock", "fast"] if args.upstream == "both" else [args.upstream]
    done = [(mode, *run_mode(args, mode)) for mode in modes]
    for mode, med, rss in done:
        report(args, mode, med, rss)


if __name__ == "__main__":
    main()
