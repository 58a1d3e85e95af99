#!/usr/bin/env bash
# Reboot scenario (VM tier; run by tests/run-all.sh twice on one fresh persistent disk mounted at
# /var/lib/faultd). Boot 1: faultd applies two netem faults (one in a pod-like netns, one on the
# host side of its veth, i.e. host-scoped, over a configured htb root it captures as prior
# state), then the VM is hard-reset. Boot 2: the host veth comes back with another root (this
# boot's configuration); a new faultd on the same state dir must reconcile the journal before
# serving: both faults are boot-scoped, so both are recorded as ended by the reboot with no
# kernel call (this boot's root is left alone, not "restored" to the previous boot's), doctor
# finds no residue, and the metrics say why each fault ended.
set -euo pipefail
STATE=/var/lib/faultd
FAULTD=${FAULTD_BIN:-$PWD/target/debug/faultd}
CTL=("$FAULTD" ctl --socket "$STATE/faultd.sock")
fail() { echo "reboot-journal: FAIL: $*" >&2; exit 1; }
mountpoint -q "$STATE" || fail "$STATE is not the persistent disk (run via run-vm.sh --disk)"
[ -x "$FAULTD" ] || fail "no faultd binary at $FAULTD (cargo build first)"

start_daemon() {
  "$FAULTD" --insecure --listen-address 127.0.0.1 --state-dir "$STATE" --log-format json \
    >"/tmp/faultd-boot$FAULTD_BOOT.log" 2>&1 &
  for _ in $(seq 200); do
    "${CTL[@]}" list >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "/tmp/faultd-boot$FAULTD_BOOT.log" >&2
  fail "faultd did not become ready"
}

case "${FAULTD_BOOT:-}" in
  1)
    ip netns add pod1
    ip link add vhost1 type veth peer name eth0 netns pod1
    ip link set vhost1 up
    ip -n pod1 link set eth0 up
    ip netns exec pod1 sleep 3600 &
    HOLDER=$!
    sleep 0.2
    start_daemon
    tc qdisc add dev vhost1 root handle 1: htb default 10
    "${CTL[@]}" netem --pid "$HOLDER" --device eth0 --delay 100ms --ttl 10m
    "${CTL[@]}" netem --pid $$ --device vhost1 --delay 50ms --ttl 10m
    n=$("${CTL[@]}" --output json list | grep -c '"phase": "applied"')
    [ "$n" -eq 2 ] || fail "expected 2 applied faults, got $n"
    ip netns exec pod1 tc qdisc show dev eth0 | grep -q 'netem fa01:' || fail "netem not in pod netns"
    tc qdisc show dev vhost1 | grep -q 'netem fa01:' || fail "netem not on host veth"
    sync
    echo "reboot-journal: boot 1 applied 2 faults; hard reset now"
    echo b > /proc/sysrq-trigger
    sleep 60
    fail "still alive after the sysrq reset" ;;
  2)
    [ -s "$STATE/journal.log" ] || fail "journal lost across the reset"
    # this boot's configuration of the host device, with a root of its own
    ip link add vhost1 type veth peer name vpeer1
    ip link set vhost1 up
    tc qdisc add dev vhost1 root handle 2: htb default 20
    start_daemon
    json=$("${CTL[@]}" --output json list --all)
    echo "$json"
    n=$(grep -c '"end_reason": "reboot"' <<<"$json" || true)
    [ "$n" -eq 2 ] || fail "expected 2 faults ended by the reboot, got $n"
    active=$("${CTL[@]}" --output json list | grep -c '"phase": "applied"' || true)
    [ "$active" -eq 0 ] || fail "$active faults still active after reconciliation"
    # doctor exits 1 when any check fails (this VM has no container runtime): only its residue
    # verdict matters here
    doctor=$("${CTL[@]}" doctor || true)
    echo "$doctor"
    grep -q "no residue found" <<<"$doctor" || fail "doctor found residue"
    metrics=$(curl -fsS http://127.0.0.1:31766/metrics)
    grep -E '^faultd_rollbacks_total\{kind="netem",reason="reboot"\} 2$' <<<"$metrics" \
      || { grep faultd_rollbacks <<<"$metrics"; fail "metrics do not count 2 reboot rollbacks"; }
    ready=$(curl -fsS http://127.0.0.1:31766/readyz)
    echo "$ready"
    grep -q "0 rolled back, 2 gone with a reboot" <<<"$ready" || fail "readyz does not report the reconciliation"
    root=$(tc qdisc show dev vhost1)
    echo "$root"
    grep -q "htb 2: root" <<<"$root" || fail "this boot's root of vhost1 was replaced: $root"
    echo "reboot-journal: boot 2 OK" ;;
  *) fail "FAULTD_BOOT must be 1 or 2" ;;
esac
