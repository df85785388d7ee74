#!/bin/bash
# A/B of switchyard builds' CPU per message, alternating runs in one invocation.
#
#   benches/ab_cpu.sh ROUNDS BINARY...
#
# Each round runs every BINARY in turn (one tokio worker pinned to core 0) in front of
# one nginx that answers `return 200` on three ports (core 1), warms it for 1 s, then
# loads it with wrk for 5 s (50 connections, the 58-byte JSON POST of peer_load.py, on
# core 1) and reads its user and kernel CPU time from /proc. It prints each run, then
# per binary the median and the least user and total µs per message over the rounds:
# on a shared machine the least is the figure its neighbours disturbed least. Needs
# nginx and wrk (`apt-get install -y nginx-light wrk`); binds 127.0.0.1:19100-19103.
set -euo pipefail
rounds=$1
shift
nginx_cores=1
# shellcheck source=benches/fast_upstream.sh
source "$(dirname "$0")/fast_upstream.sh"
for _ in $(seq "$rounds"); do
  for bin in "$@"; do
    rm -rf "$dir/queue"
    TOKIO_WORKER_THREADS=1 RUST_LOG=warn taskset -c 0 "$bin" run --config "$dir/run/switchyard.toml" \
      >/dev/null 2>&1 &
    sy=$!
    sleep 1
    taskset -c 1 wrk -t1 -c50 -d1s -s "$dir/post.lua" "$url" >/dev/null
    read -r u0 s0 < <(awk '{print $14, $15}' "/proc/$sy/stat")
    taskset -c 1 wrk -t1 -c50 -d5s -s "$dir/post.lua" "$url" > "$dir/wrk.txt"
    read -r u1 s1 < <(awk '{print $14, $15}' "/proc/$sy/stat")
    kill "$sy"
    wait "$sy" 2>/dev/null || true
    n=$(grep -oP '^\s+\K\d+(?= requests)' "$dir/wrk.txt")
    hz=$(getconf CLK_TCK)
    echo "$bin $n $(( (u1 - u0) * 1000000 / hz )) $(( (s1 - s0) * 1000000 / hz ))"
  done
done | tee "$dir/runs"
python3 - "$dir/runs" <<'EOF'
import collections, statistics, sys
runs = collections.defaultdict(list)
for line in open(sys.argv[1]):
    binary, n, user, kernel = line.split()
    n = int(n)
    runs[binary].append((int(user) / n, (int(user) + int(kernel)) / n))
for binary, r in runs.items():
    print(f"{binary}: user µs/msg median {statistics.median(u for u, _ in r):.2f} least "
          f"{min(u for u, _ in r):.2f}; total median {statistics.median(t for _, t in r):.2f} "
          f"least {min(t for _, t in r):.2f} ({len(r)} runs)")
EOF
