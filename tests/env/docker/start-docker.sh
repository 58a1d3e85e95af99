#!/usr/bin/env bash
# Start a private Docker engine (Debian's docker.io) for the host tier and import the test image.
# usage: start-docker.sh [BASEDIR]    (default: tests/env/cache/docker)
#   BASEDIR/data (--data-root; must be on a real filesystem, not overlayfs, for overlay2),
#   daemon.json, dockerd.log, dockerd.pid, cli/ (DOCKER_CONFIG of the CLI calls) live in BASEDIR.
#   dockerd runs its own containerd (root under data/, state and socket under the exec root),
#   never the tier-2 containerd; no bridge, no iptables/ip6tables rules, no ip_forward or
#   masquerading changes (containers run with --network none).
# env: DOCKER_SOCK (default /run/faultd-test/docker.sock), DOCKER_EXEC_ROOT (default
#      <socket dir>/docker-exec), FAULTD_TEST_DOCKER_IMAGE (default faultd-testbox:latest),
#      FAULTD_TEST_IMAGE_TAR (default tests/env/cache/testbox.tar, built if missing),
#      DOCKER_START_TIMEOUT (s, default 60)
# Stop it with stop-docker.sh BASEDIR (same env).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${TESTENV_CACHE:-$HERE/../cache}
B=${1:-$CACHE/docker}
mkdir -p "$B"; B=$(cd "$B" && pwd)
SOCK=${DOCKER_SOCK:-/run/faultd-test/docker.sock}
EXEC_ROOT=${DOCKER_EXEC_ROOT:-$(dirname "$SOCK")/docker-exec}
IMAGE=${FAULTD_TEST_DOCKER_IMAGE:-faultd-testbox:latest}
TAR=${FAULTD_TEST_IMAGE_TAR:-$CACHE/testbox.tar}
DOCKER=/usr/bin/docker   # the CLI of the docker.io package (a newer one may come first in PATH)
[ -x "$DOCKER" ] || DOCKER=docker
export DOCKER_CONFIG=$B/cli DOCKER_HOST=unix://$SOCK
T0=$(date +%s.%N)
since() { awk -v a="$T0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }'; }

alive() { [ -S "$SOCK" ] && curl -sf --max-time 2 --unix-socket "$SOCK" http://docker/_ping >/dev/null 2>&1; }
ours() { # is PID the dockerd this script starts on BASEDIR?
  [ -n "$1" ] && [ "$(cat "/proc/$1/comm" 2>/dev/null)" = dockerd ] &&
    tr '\0' '\n' < "/proc/$1/cmdline" 2>/dev/null | grep -qxF "$B/daemon.json"
}

pid=$(cat "$B/dockerd.pid" 2>/dev/null || true)
if alive; then
  if ours "$pid"; then
    echo "dockerd already running (pid $pid, $SOCK)"
  else
    echo "start-docker: a dockerd this script did not start serves $SOCK; stop it first" >&2; exit 1
  fi
else
  # a dockerd of an earlier run on this BASEDIR (e.g. in another mount namespace): stop it
  if ours "$pid"; then
    echo "start-docker: stopping stale dockerd $pid of an earlier run"
    "$HERE/stop-docker.sh" "$B"
  fi
  rm -f "$SOCK" "$B/dockerd.pid"
  # dockerd creates /run/docker/plugins whatever its exec root: stop-docker.sh removes it (if
  # empty) when it was not there before
  [ -e /run/docker ] || touch "$B/created-run-docker"
  mkdir -p "$(dirname "$SOCK")" "$EXEC_ROOT" "$B/data" "$B/cli"
  # overlay2 needs a real filesystem below the data root (not overlayfs): vfs otherwise
  driver=overlay2
  [ "$(stat -f -c %T "$B/data")" != overlayfs ] || driver=vfs
  # everything in a private config file: nothing is read from or written to /etc/docker
  # (deprecated-key-path: the daemon's identity key, by default /etc/docker/key.json)
  cat > "$B/daemon.json" <<EOT
{
  "data-root": "$B/data",
  "exec-root": "$EXEC_ROOT",
  "pidfile": "$B/dockerd.pid",
  "hosts": ["unix://$SOCK"],
  "storage-driver": "$driver",
  "bridge": "none",
  "iptables": false,
  "ip6tables": false,
  "ip-forward": false,
  "ip-masq": false,
  "userland-proxy": false,
  "shutdown-timeout": 2,
  "deprecated-key-path": "$B/key.json",
  "log-level": "info"
}
EOT
  dockerd --config-file "$B/daemon.json" </dev/null >"$B/dockerd.log" 2>&1 &
  pid=$!
  deadline=$((SECONDS + ${DOCKER_START_TIMEOUT:-60}))
  until alive; do
    if ! kill -0 "$pid" 2>/dev/null || [ $SECONDS -ge $deadline ]; then
      echo "start-docker: dockerd did not come up; tail of $B/dockerd.log:" >&2
      tail -n 30 "$B/dockerd.log" >&2
      kill "$pid" 2>/dev/null || true
      exit 1
    fi
    sleep 0.1
  done
  echo "dockerd up in $(since) s (pid $pid, socket $SOCK, storage $driver, data root $B/data, exec root $EXEC_ROOT)"
fi

# the test image: the single layer of the OCI tarball, through `docker import` (no registry)
if [ -n "$("$DOCKER" image ls -q "$IMAGE")" ]; then
  echo "$IMAGE present"
else
  [ -f "$TAR" ] || "$HERE/../ctr/mk-oci-image.py" "$TAR"
  t=$(date +%s.%N)
  python3 - "$TAR" <<'PY' | "$DOCKER" import --change 'ENV PATH=/bin' --change 'CMD ["/bin/sh"]' - "$IMAGE" >/dev/null
import json, shutil, sys, tarfile
with tarfile.open(sys.argv[1]) as t:
    blob = lambda d: t.extractfile("blobs/sha256/" + d.split(":", 1)[1])
    index = json.load(t.extractfile("index.json"))
    manifest = json.load(blob(index["manifests"][0]["digest"]))
    layers = manifest["layers"]
    if len(layers) != 1:
        sys.exit(f"expected one layer in {sys.argv[1]}, found {len(layers)}")
    shutil.copyfileobj(blob(layers[0]["digest"]), sys.stdout.buffer)
PY
  [ -n "$("$DOCKER" image ls -q "$IMAGE")" ] || { echo "start-docker: $IMAGE not listed after the import" >&2; exit 1; }
  echo "imported $IMAGE from the layer of $TAR in $(awk -v a="$t" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }') s"
fi
