#!/usr/bin/env bash
# Start a private containerd (no systemd, CRI plugin disabled) at the k3s socket path.
# usage: start-containerd.sh [BASEDIR]    (default: tests/env/cache/containerd)
#   root/ state/ config.toml containerd.log containerd.pid live in BASEDIR. BASEDIR must be on a
#   real filesystem (not overlayfs) for the overlayfs snapshotter: in the VM use /var/lib/containerd.
# env: CTR_SOCK (default /run/k3s/containerd/containerd.sock), CTR_START_TIMEOUT (s, default 30)
# Stop it with stop-containerd.sh BASEDIR.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
B=${1:-${TESTENV_CACHE:-$HERE/../cache}/containerd}
mkdir -p "$B"; B=$(cd "$B" && pwd)
SOCK=${CTR_SOCK:-/run/k3s/containerd/containerd.sock}
# (ctr waits 10 s for a socket that does not exist: check the file first, then dial briefly)
alive() { [ -S "$SOCK" ] && ctr --connect-timeout 2s -a "$SOCK" version >/dev/null 2>&1; }

if alive; then
  pid=$(cat "$B/containerd.pid" 2>/dev/null || true)
  if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = containerd ] &&
     tr '\0' '\n' < "/proc/$pid/cmdline" | grep -qxF "$B/config.toml"; then
    echo "containerd already running (pid $pid, $SOCK)"; exit 0
  fi
  echo "start-containerd: another containerd already serves $SOCK; stop it first" >&2; exit 1
fi
# a containerd of an earlier run on this BASEDIR (e.g. in another mount namespace) holds the
# metadata DB lock: stop it
pid=$(cat "$B/containerd.pid" 2>/dev/null || true)
if [ -n "$pid" ] && tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$B/config.toml"; then
  echo "start-containerd: stopping stale containerd $pid of an earlier run"
  kill "$pid"; for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done; kill -9 "$pid" 2>/dev/null || true
fi
rm -f "$SOCK" "$SOCK.ttrpc"
mkdir -p "$(dirname "$SOCK")"
cat > "$B/config.toml" <<EOT
version = 2
root = "$B/root"
state = "$B/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$SOCK"
[ttrpc]
  address = "$SOCK.ttrpc"
EOT
containerd --config "$B/config.toml" </dev/null >"$B/containerd.log" 2>&1 &
pid=$!
echo "$pid" > "$B/containerd.pid"
deadline=$((SECONDS + ${CTR_START_TIMEOUT:-30}))
until alive; do
  if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
    echo "start-containerd: containerd did not come up; tail of $B/containerd.log:" >&2
    tail -n 20 "$B/containerd.log" >&2; kill "$pid" 2>/dev/null || true; exit 1
  fi
  sleep 0.1
done
echo "containerd up (pid $pid, socket $SOCK, root $B/root)"
