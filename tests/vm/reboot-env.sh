#!/usr/bin/env bash
# Reboot scenario (VM tier), run by tests/run-all.sh twice with the same fresh persistent disk at
# /var/lib/faultd: FAULTD_BOOT=1 must end in a hard reset (run-vm.sh rc 125), FAULTD_BOOT=2 must
# exit 0. Asserts what faultd's crash-recovery tests rely on: data synced to the disk survives a
# hard reset, and kernel state (here a netem qdisc on lo) does not.
# By hand: img=$(mktemp -u).img; for b in 1 2; do FAULTD_BOOT=$b tests/env/vm/run-vm.sh \
#            --disk "$img:/var/lib/faultd" -- tests/vm/reboot-env.sh; echo "rc=$?"; done; rm "$img"
set -euo pipefail
STATE=/var/lib/faultd
fail() { echo "reboot-env: FAIL: $*" >&2; exit 1; }
mountpoint -q "$STATE" || fail "$STATE is not the persistent disk (run via run-vm.sh --disk)"
case "${FAULTD_BOOT:-}" in
  1)
    [ ! -e "$STATE/reboot-env.marker" ] || fail "disk is not fresh"
    echo "written by boot 1" > "$STATE/reboot-env.marker"
    sync "$STATE/reboot-env.marker"
    /usr/sbin/tc qdisc add dev lo root netem delay 10ms
    /usr/sbin/tc qdisc show dev lo | grep -q netem || fail "netem not applied"
    echo "reboot-env: boot 1 state written, resetting"
    echo b > /proc/sysrq-trigger
    sleep 60; fail "still alive after sysrq reset" ;;
  2)
    grep -qx "written by boot 1" "$STATE/reboot-env.marker" || fail "marker lost across the reset"
    if /usr/sbin/tc qdisc show dev lo | grep -q netem; then fail "netem survived the reset"; fi
    echo "reboot-env: boot 2 OK (disk state kept, kernel state fresh)" ;;
  *) fail "FAULTD_BOOT must be 1 or 2" ;;
esac
