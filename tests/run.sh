#!/usr/bin/env bash
# The test suite, on a fresh machine too: installs the system tools the tests run
# when they are missing (Debian/Ubuntu, as root), then runs every test target.
# Arguments replace `--all-targets` (e.g. `tests/run.sh --test edge`).
set -euo pipefail
cd "$(dirname "$0")/.."

# tool -> the Debian package that has it
declare -A needs=(
  [promtool]=prometheus # the /metrics contract test
  [prlimit]=util-linux  # the out-of-file-descriptors test
  [mount]=mount         # the full-disk tests mount a small tmpfs
  [docker-compose]=docker-compose # validates deploy/compose.yaml (no container engine needed)
  [systemd-analyze]=systemd       # verifies deploy/switchyard.service
  [etcd]=etcd-server              # the cluster tests run a real etcd
  [ip]=iproute2                   # tests/cluster_partition.rs: a node in its own network namespace
)
missing=()
for tool in "${!needs[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${needs[$tool]}")
done
if ((${#missing[@]})); then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    echo "installing ${missing[*]} for the tests" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "error: the tests need these Debian packages: ${missing[*]} (install them, or run this as root)" >&2
    exit 1
  fi
fi

if [[ $(id -u) != 0 ]]; then
  echo "warning: not root: the full-disk tests (tests/disk.rs) mount a tmpfs and will fail" >&2
fi

if (($#)); then
  exec cargo test "$@"
fi
exec cargo test --all-targets
