#!/usr/bin/env bash
# INSIDE the VM (started by tests/run-all.sh through run-vm.sh): run every VM test binary
# sequentially with --ignored --test-threads=1.
# usage: guest-suite.sh OUTDIR NAME=EXECUTABLE...
#   OUTDIR (the run-vm share dir) receives NAME.out (test output) and NAME.rc (exit status) per
#   binary, plus guest-containerd.out/.rc and containerd.log.
# Before the tests, containerd is started in the guest and the test image imported
# (guest-containerd.sh), so VM tests see the same FAULTD_TEST_CTR_SOCK / FAULTD_TEST_IMAGE contract
# as host tests. FAULTD_VM_NO_CONTAINERD=1 skips that.
# env: FAULTD_VM_TEST_TIMEOUT: seconds per test binary (default 600)
set -uo pipefail
[ "${FAULTD_TEST_VM:-}" = 1 ] || { echo "guest-suite.sh: only inside the test VM" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$1; shift
failed=0
echo "guest-suite: kernel $(uname -r), cgroup: $(stat -fc %T /sys/fs/cgroup), $(nproc) cpus"

if [ "${FAULTD_VM_NO_CONTAINERD:-}" != 1 ]; then
  export FAULTD_TEST_CTR_SOCK=/run/k3s/containerd/containerd.sock
  export FAULTD_TEST_IMAGE=${FAULTD_TEST_IMAGE:-docker.io/library/testbox:latest}
  export FAULTD_TEST_IMAGE_TAR=${FAULTD_TEST_IMAGE_TAR:-$(cd "${TESTENV_CACHE:-$HERE/../cache}" && pwd)/testbox.tar}
  t0=$SECONDS
  "$HERE/guest-containerd.sh" > "$OUT/guest-containerd.out" 2>&1
  rc=$?
  echo "$rc" > "$OUT/guest-containerd.rc"
  cat "$OUT/guest-containerd.out"
  echo "guest-suite: containerd setup rc=$rc ($((SECONDS - t0))s)"
  [ "$rc" -eq 0 ] || failed=1
fi

for spec in "$@"; do
  name=${spec%%=*}; exe=${spec#*=}
  echo "guest-suite: === $name ($exe)"
  t0=$SECONDS
  timeout -k 10 "${FAULTD_VM_TEST_TIMEOUT:-600}" "$exe" --ignored --test-threads=1 2>&1 | tee "$OUT/$name.out"
  rc=${PIPESTATUS[0]}
  [ "$rc" -eq 124 ] && echo "guest-suite: $name timed out (FAULTD_VM_TEST_TIMEOUT)" | tee -a "$OUT/$name.out"
  echo "$rc" > "$OUT/$name.rc"
  echo "guest-suite: === $name rc=$rc ($((SECONDS - t0))s)"
  [ "$rc" -eq 0 ] || failed=1
done

[ -f /var/lib/containerd/containerd.log ] && cp /var/lib/containerd/containerd.log "$OUT/containerd.log"
exit $failed
