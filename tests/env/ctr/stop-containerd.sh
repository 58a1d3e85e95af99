#!/usr/bin/env bash
# Tear down the containerd that start-containerd.sh BASEDIR started (and nothing else: a containerd
# not recorded in BASEDIR/containerd.pid is left alone). SIGKILLs all its tasks, deletes all its
# containers (every namespace), stops it, kills its leftover shims, unmounts leftovers under
# BASEDIR and deletes root/ and state/ (config.toml and containerd.log are kept for debugging).
# usage: stop-containerd.sh [BASEDIR]    (default: tests/env/cache/containerd)
# env: CTR_SOCK (default /run/k3s/containerd/containerd.sock)
set -uo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
B=${1:-${TESTENV_CACHE:-$HERE/../cache}/containerd}
[ -d "$B" ] || exit 0
B=$(cd "$B" && pwd)
SOCK=${CTR_SOCK:-/run/k3s/containerd/containerd.sock}
C=(ctr --connect-timeout 5s -a "$SOCK")

pid=$(cat "$B/containerd.pid" 2>/dev/null || true)
ours=
if [ -n "$pid" ] && [ "$(cat "/proc/$pid/comm" 2>/dev/null)" = containerd ] &&
   tr '\0' '\n' < "/proc/$pid/cmdline" | grep -qxF "$B/config.toml"; then
  ours=1
fi
if [ -n "$ours" ] && [ -S "$SOCK" ] && "${C[@]}" version >/dev/null 2>&1; then
  for ns in $("${C[@]}" namespaces ls -q 2>/dev/null); do
    for t in $("${C[@]}" -n "$ns" tasks ls -q 2>/dev/null); do
      timeout 10 "${C[@]}" -n "$ns" tasks kill -a -s SIGKILL "$t" >/dev/null 2>&1; done
    for _ in $(seq 50); do "${C[@]}" -n "$ns" tasks ls 2>/dev/null | grep -q RUNNING || break; sleep 0.1; done
    for c in $("${C[@]}" -n "$ns" containers ls -q 2>/dev/null); do
      timeout 10 "${C[@]}" -n "$ns" tasks delete -f "$c" >/dev/null 2>&1
      timeout 10 "${C[@]}" -n "$ns" containers delete "$c" >/dev/null 2>&1 || echo "stop-containerd: could not delete $ns/$c" >&2
    done
  done
fi
if [ -n "$ours" ]; then
  kill "$pid"
  for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  kill -9 "$pid" 2>/dev/null
fi
# containers whose bundle is still below BASEDIR/state (containerd died or could not delete them):
# kill and delete them with runc directly (containerd's runc root is /run/containerd/runc/<ns>)
for bundle in "$B"/state/io.containerd.runtime.v2.task/*/*; do
  [ -d "$bundle" ] || continue
  id=${bundle##*/}; ns=${bundle%/*}; ns=${ns##*/}
  echo "stop-containerd: leftover container $ns/$id: runc kill + delete"
  runc --root "/run/containerd/runc/$ns" kill --all "$id" KILL 2>/dev/null
  sleep 0.2
  runc --root "/run/containerd/runc/$ns" delete --force "$id" 2>/dev/null
done
# shims of this containerd outlive it by design; theirs run in a bundle dir below BASEDIR/state
for d in /proc/[0-9]*; do
  case "$(cat "$d/comm" 2>/dev/null)" in containerd-shim*) ;; *) continue;; esac
  case "$(readlink "$d/cwd" 2>/dev/null)" in "$B"/state/*) kill -9 "${d#/proc/}" 2>/dev/null;; esac
done
# the socket files, unless a containerd we did not start answers on them
if [ -n "$ours" ] || ! { [ -S "$SOCK" ] && "${C[@]}" version >/dev/null 2>&1; }; then
  rm -f "$SOCK" "$SOCK.ttrpc"
  rmdir "$(dirname "$SOCK")" "$(dirname "$(dirname "$SOCK")")" 2>/dev/null
else
  echo "stop-containerd: $SOCK is served by a containerd this script did not start; left alone"
fi
# leftover mounts (rootfs overlays, shm) below BASEDIR, deepest first
awk -v p="$B/" 'index($5, p) == 1 { print $5 }' /proc/self/mountinfo | sort -r | while read -r m; do umount -l "$m"; done
rm -rf "$B/root" "$B/state" "$B/containerd.pid"
exit 0
