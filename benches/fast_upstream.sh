# Sourced by ab_cpu.sh and instructions.sh: makes "$dir" (a temporary directory, removed
# on exit with the jobs it started) holding switchyard.toml under "$dir/run" (three
# masters on 127.0.0.1:19101-19103, listen 127.0.0.1:19100, the queue in "$dir/queue")
# and post.lua (the 58-byte JSON POST of peer_load.py), and starts one nginx that answers
# `return 200` on the three ports, on the cores in "$nginx_cores" (default: any).
# The config sits in a directory of its own, so that files written beside "$dir" do
# not wake switchyard's config watcher.
dir=$(mktemp -d /tmp/switchyard-bench.XXXXXX)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$dir"' EXIT
cat > "$dir/nginx.conf" <<NGINX
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
NGINX
mkdir "$dir/run"
{
  printf '[server]\nlisten = "127.0.0.1:19100"\nadmin_listen = "127.0.0.1:0"\n'
  printf '[queue]\npath = "%s/queue"\n' "$dir"
  for i in 1 2 3; do
    printf '[[masters]]\nid = "m%s"\nsend_url = "http://127.0.0.1:1910%s/send"\n' "$i" "$i"
  done
} > "$dir/run/switchyard.toml"
cat > "$dir/post.lua" <<'LUA'
wrk.method = "POST"
wrk.body = '{"to": "+971500000001", "text": "hello from the load test"}'
wrk.headers["Content-Type"] = "application/json"
LUA
taskset -c "${nginx_cores:-0-$(($(nproc) - 1))}" nginx -c "$dir/nginx.conf" -p "$dir" &
sleep 0.5
url=http://127.0.0.1:19100/v1/messages
