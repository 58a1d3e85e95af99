#!/usr/bin/env bash
# Tear down the dockerd that start-docker.sh BASEDIR started (and nothing else: a dockerd not
# recorded in BASEDIR/dockerd.pid with BASEDIR/daemon.json on its command line is left alone).
# Removes all its containers, stops it (its containerd goes with it), kills leftover shims and
# container processes of its containerd, unmounts leftovers under the data and exec roots and
# deletes them (daemon.json and dockerd.log are kept for debugging).
# usage: stop-docker.sh [BASEDIR]    (default: tests/env/cache/docker)
# env: DOCKER_SOCK, DOCKER_EXEC_ROOT (as for start-docker.sh)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
B=${1:-${TESTENV_CACHE:-$HERE/../cache}/docker}
[ -d "$B" ] || exit 0
B=$(cd "$B" && pwd)
SOCK=${DOCKER_SOCK:-/run/faultd-test/docker.sock}
EXEC_ROOT=${DOCKER_EXEC_ROOT:-$(dirname "$SOCK")/docker-exec}
case "$EXEC_ROOT" in /|/run|/var/run|"") echo "stop-docker: refusing exec root '$EXEC_ROOT'" >&2; exit 1;; esac
DOCKER=/usr/bin/docker
[ -x "$DOCKER" ] || DOCKER=docker
export DOCKER_CONFIG=$B/cli DOCKER_HOST=unix://$SOCK
CTRD_SOCK=$EXEC_ROOT/containerd/containerd.sock

alive() { [ -S "$SOCK" ] && curl -sf --max-time 2 --unix-socket "$SOCK" http://docker/_ping >/dev/null 2>&1; }
pid=$(cat "$B/dockerd.pid" 2>/dev/null || true)
ours= dockerd_mntns=
if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = dockerd ] &&
   tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | grep -qxF "$B/daemon.json"; then
  ours=1
fi
if [ -z "$ours" ] && alive; then
  echo "stop-docker: $SOCK is served by a dockerd this script did not start; left alone"
  exit 0
fi
if [ -n "$ours" ] && alive; then
  ids=$(timeout 20 "$DOCKER" ps -aq 2>/dev/null)
  # shellcheck disable=SC2086  # one id a word
  [ -z "$ids" ] || timeout 60 "$DOCKER" rm -f $ids >/dev/null 2>&1 || echo "stop-docker: could not remove all containers" >&2
fi
if [ -n "$ours" ]; then
  dockerd_mntns=$(readlink "/proc/$pid/ns/mnt" 2>/dev/null)
  kill "$pid"
  for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
fi
# its containerd and shims outlive a SIGKILLed dockerd; they name its socket on their command line
# and run in its mount namespace (this one, or that of an earlier run's dockerd stopped above):
# the same path in another namespace is another run's
mntns=$(readlink /proc/self/ns/mnt)
for d in /proc/[0-9]*; do
  case "$(cat "$d/comm" 2>/dev/null)" in containerd|containerd-shim*) ;; *) continue;; esac
  ns=$(readlink "$d/ns/mnt" 2>/dev/null)
  [ "$ns" = "$mntns" ] || [ "$ns" = "${dockerd_mntns:-}" ] || continue
  if tr '\0' '\n' < "$d/cmdline" 2>/dev/null | grep -qxF -e "$EXEC_ROOT/containerd/containerd.toml" -e "$CTRD_SOCK"; then
    echo "stop-docker: leftover $(cat "$d/comm") ${d#/proc/}: SIGKILL"
    kill -9 "${d#/proc/}" 2>/dev/null
  fi
done
# container processes whose shim is gone: runc state of docker's containerd is below the exec root
for st in "$EXEC_ROOT"/runtime-runc/*/*/state.json; do
  [ -f "$st" ] || continue
  id=${st%/state.json}; root=${id%/*}; id=${id##*/}
  echo "stop-docker: leftover container $id: runc kill + delete"
  runc --root "$root" kill --all "$id" KILL 2>/dev/null
  sleep 0.2
  runc --root "$root" delete --force "$id" 2>/dev/null
done
# processes still in the cgroup of one of its containers (ids from its data root; the cgroupfs
# driver puts them in docker/<id>): after the above, only if a shim or dockerd was SIGKILLed
for c in "$B"/data/containers/*/; do
  id=$(basename "$c")
  for procs in /sys/fs/cgroup/*/docker/"$id"/cgroup.procs /sys/fs/cgroup/docker/"$id"/cgroup.procs; do
    [ -f "$procs" ] || continue
    while read -r p; do
      echo "stop-docker: leftover process $p of container $id: SIGKILL"; kill -9 "$p" 2>/dev/null
    done < "$procs"
  done
  for _ in 1 2 3 4 5; do
    rmdir /sys/fs/cgroup/*/docker/"$id" /sys/fs/cgroup/docker/"$id" 2>/dev/null
    ls -d /sys/fs/cgroup/*/docker/"$id" /sys/fs/cgroup/docker/"$id" >/dev/null 2>&1 || break
    sleep 0.1
  done
done
rm -f "$SOCK"
# leftover mounts (overlays, shm, netns) below the data and exec roots, deepest first
for root in "$B/data" "$EXEC_ROOT"; do
  awk -v p="$root/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
done
rm -rf "$B/data" "$EXEC_ROOT" "$B/dockerd.pid" "$B/key.json" "$B/cli"
if [ -e "$B/created-run-docker" ]; then
  rmdir /run/docker/plugins /run/docker 2>/dev/null
  rm -f "$B/created-run-docker"
fi
# (the socket's directory stays: it may be another mount namespace's mount point, and removing
# it from here would detach that mount)
exit 0
