#!/usr/bin/env bash
# INSIDE the VM: start containerd (root/state on the guest's tmpfs /var/lib/containerd) at the k3s
# socket path and import the test image, i.e. the same contract the host tier provides:
#   FAULTD_TEST_CTR_SOCK=/run/k3s/containerd/containerd.sock
#   FAULTD_TEST_IMAGE=docker.io/library/testbox:latest (namespace k8s.io)
# Used by guest-suite.sh; reboot scenarios (tests/vm/reboot-*.sh) may call it too.
# Takes ~5 s under TCG. Everything is gone with the VM, so there is no stop step.
set -euo pipefail
[ "${FAULTD_TEST_VM:-}" = 1 ] || { echo "guest-containerd.sh: only inside the test VM" >&2; exit 2; }
HERE=$(cd "$(dirname "$0")" && pwd)
export CTR_SOCK=/run/k3s/containerd/containerd.sock   # the guest has no other containerd
"$HERE/../ctr/start-containerd.sh" /var/lib/containerd
"$HERE/../ctr/import-image.sh" ${FAULTD_TEST_IMAGE_TAR:+"$FAULTD_TEST_IMAGE_TAR"}
