"""What the load scripts in this folder share: where the release binary is, loopback
ports, a JSON call to a local API, and wrk's scripts and output."""
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(ROOT, "target", "release", "switchyard")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def call_json(port, path, method="GET", timeout=30):
    """`method path` on 127.0.0.1:port with no body; the JSON answer, error statuses
    included (/health is 503 while no master is eligible)."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", method=method)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return json.load(r)
    except urllib.error.HTTPError as e:
        return json.load(e)


def post_script(path, body, extra=""):
    """Writes a wrk script that POSTs `body` as JSON; `extra` adds Lua lines."""
    with open(path, "w") as f:
        f.write(f"wrk.method = \"POST\"\nwrk.body = '{body}'\n"
                f"wrk.headers[\"Content-Type\"] = \"application/json\"\n{extra}")
    return path


def to_ms(value):
    m = re.match(r"([\d.]+)(us|ms|s)", value)
    n, unit = float(m.group(1)), m.group(2)
    return n / 1000 if unit == "us" else n * 1000 if unit == "s" else n


def parse_wrk(out):
    """Figures from the output of `wrk --latency`; latencies in ms."""
    if "Latency Distribution" not in out:
        sys.exit(f"wrk gave no latency figures:\n{out}")
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)
    return {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        "requests": int(re.search(r"(\d+) requests in", out).group(1)),
        "p50": to_ms(re.search(r"^\s+50%\s+(\S+)", out, re.M).group(1)),
        "p99": to_ms(re.search(r"^\s+99%\s+(\S+)", out, re.M).group(1)),
        "non2xx": int(bad.group(1)) if bad else 0,
        "socket_errors": errors.group(1) if errors else "",
    }


def wait_port(port, timeout=10):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.02)
    sys.exit(f"nothing listens on port {port} after {timeout}s")


def proc_status_kb(pid, field):
    """A figure in kB from /proc/PID/status: `VmRSS` (resident now), `VmHWM` (peak)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    return 0


def rss_kb(pid):
    return proc_status_kb(pid, "VmRSS")
