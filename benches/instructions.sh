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
# Needs valgrind, nginx and wrk (`apt-get install -y valgrind nginx-light wrk`); binds
# 127.0.0.1:19100-19103.
set -euo pipefail
secs=8
if [[ ${1:-} =~ ^[0-9]+$ ]]; then
  secs=$1
  shift
fi
dir=$(mktemp -d /tmp/switchyard-instructions.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
cat > "$dir/nginx.conf" <<EOF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/body;
  server {
    listen 127.0.0.1:19101; listen 127.0.0.1:19102; listen 127.0.0.1:19103;
    location / { return 200 '{"ok":true}'; }
  }
}
EOF
mkdir "$dir/run"
{
  printf '[server]\nlisten = "127.0.0.1:19100"\nadmin_listen = "127.0.0.1:0"\n'
  printf '[queue]\npath = "%s/queue"\n' "$dir"
  for i in 1 2 3; do
    printf '[[masters]]\nid = "m%s"\nsend_url = "http://127.0.0.1:1910%s/send"\n' "$i" "$i"
  done
} > "$dir/run/switchyard.toml"
cat > "$dir/post.lua" <<'EOF'
wrk.method = "POST"
wrk.body = '{"to": "+971500000001", "text": "hello from the load test"}'
wrk.headers["Content-Type"] = "application/json"
EOF
nginx -c "$dir/nginx.conf" -p "$dir" &
sleep 0.5
url=http://127.0.0.1:19100/v1/messages
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
