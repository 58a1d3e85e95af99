#!/usr/bin/env bash
# Import the registry-free test image into containerd namespace k8s.io.
# usage: import-image.sh [TAR]    (default: tests/env/cache/testbox.tar, built if missing)
# env: CTR_SOCK (default /run/k3s/containerd/containerd.sock),
#      FAULTD_TEST_IMAGE (default docker.io/library/testbox:latest)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
TAR=${1:-${TESTENV_CACHE:-$HERE/../cache}/testbox.tar}
SOCK=${CTR_SOCK:-/run/k3s/containerd/containerd.sock}
IMAGE=${FAULTD_TEST_IMAGE:-docker.io/library/testbox:latest}
[ -f "$TAR" ] || "$HERE/mk-oci-image.py" "$TAR" "$IMAGE"
ctr -a "$SOCK" -n k8s.io images import "$TAR" >/dev/null
ctr -a "$SOCK" -n k8s.io images ls -q | grep -qxF "$IMAGE" || {
  echo "import-image: $IMAGE not listed after importing $TAR" >&2; exit 1; }
echo "imported $IMAGE into k8s.io from $TAR"
