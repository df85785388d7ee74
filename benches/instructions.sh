#!/bin/bash
# Instructions switchyard executes per message, counted by valgrind's callgrind.
#
#   benches/instructions.sh [SECONDS] BINARY...
#
# For each BINARY: runs it under callgrind (one tokio worker) in front of one nginx that
# answers `return 200` on three ports, warms it with wrk for 3 s, zeroes the counts,
# loads it with wrk for SECONDS (default 8; 50 connections, the 58-byte JSON POST of
# peer_load.py), dumps the counts and prints the instructions per message. Unlike CPU
# time on a shared machine, the count is the same from run to run within about 1%, so
# a change of a few hundred instructions per message shows; it does not weigh what an
# instruction costs (a cache miss, an atomic, a clock read). The dump is kept as
# instructions-N-NAME.out (N counting the binaries from 1) in the current directory,
# for `callgrind_annotate`.
# Needs valgrind, nginx, wrk and curl (`apt-get install -y valgrind nginx-light wrk curl`); binds
# 127.0.0.1:19100-19103.
set -euo pipefail
secs=8
if [[ ${1:-} =~ ^[0-9]+$ ]]; then
  secs=$1
  shift
fi
# shellcheck source=benches/fast_upstream.sh
source "$(dirname "$0")/fast_upstream.sh"
i=0
for bin in "$@"; do
  i=$((i + 1))
  name=$(basename "$bin")
  rm -rf "$dir/queue" "$dir"/cg.out*
  TOKIO_WORKER_THREADS=1 RUST_LOG=warn valgrind --tool=callgrind \
    --callgrind-out-file="$dir/cg.out" "$bin" run --config "$dir/run/switchyard.toml" \
    >/dev/null 2>"$dir/valgrind.log" &
  sy=$!
  for _ in $(seq 120); do
    curl -s -o /dev/null -m 2 -X POST -d '{}' "$url" && break
    sleep 0.5
  done
  wrk -t1 -c50 -d3s -s "$dir/post.lua" "$url" >/dev/null
  callgrind_control -z "$sy" >/dev/null 2>&1
  wrk -t1 -c50 -d"${secs}s" -s "$dir/post.lua" "$url" > "$dir/wrk.txt"
  callgrind_control -d "$sy" >/dev/null 2>&1
  kill "$sy"
  wait "$sy" 2>/dev/null || true
  n=$(awk '/requests in/ {print $1}' "$dir/wrk.txt")
  ir=$(awk '/^summary:/ {print $2}' "$dir/cg.out.1")
  cp "$dir/cg.out.1" "instructions-$i-$name.out"
  echo "$bin: $((ir / n)) instructions per message ($n messages)"
done
