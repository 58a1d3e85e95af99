#!/usr/bin/env bash
# shellcheck disable=SC2054,SC2329  # commas in qemu arguments are qemu syntax; cleanup is a trap
# Run one command inside a throw-away VM booted from the stock Debian kernel that
# tests/env/setup.sh put in tests/env/cache/ (qemu TCG; KVM optional).
#
# usage: run-vm.sh [-m MiB] [-c CPUS] [--disk IMG:/guest/dir] [--] CMD [ARGS...]
#
#  The host's / is shared read-only over 9p with a tmpfs overlay on top ("hostroot"), so every
#  host binary (cargo test binaries, tc, containerd, stress-ng, ...) is usable in the guest and
#  every guest write is discarded. /run, /var/tmp, /var/log, /var/lib/{containerd,rancher,kubelet}
#  are fresh tmpfs. CMD runs as root in the guest with the caller's cwd, environment (plus
#  FAULTD_TEST_VM=1) and argv. $VMT_SHARE (a host dir, default: a temp dir removed afterwards) is
#  mounted read-write at the same path in the guest: write results there.
#  --disk IMG:/dir attaches a persistent ext4 image (created, 4 GiB sparse, if missing) at /dir,
#  for state that must survive a guest crash/reset (echo b > /proc/sysrq-trigger).
#
# Exit status: CMD's exit status (via isa-debug-exit); 124 on timeout; 125 if the guest ended
# without reporting one (reset, panic, poweroff) or qemu failed.
# env: VMT_CGROUP=v2|v1 (cgroup layout, default v2), VMT_TIMEOUT (seconds, default 900),
#      VMT_SHARE, ACCEL=tcg|kvm (default tcg: KVM does not work on the CI machines),
#      TESTENV_CACHE (default tests/env/cache), KVER (default: the one setup.sh fetched)
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
CACHE=${TESTENV_CACHE:-$(cd "$HERE/.." && pwd)/cache}
KROOT=$CACHE/kernel/root
KVER=${KVER:-$(cat "$CACHE/kernel/KVER" 2>/dev/null || true)}
[ -n "$KVER" ] && [ -d "$KROOT/lib/modules/$KVER" ] || {
  echo "run-vm: no kernel in $CACHE/kernel; run tests/env/setup.sh first" >&2; exit 125; }

MEM=2048; CPUS=$(nproc); DISK_IMG=; DISK_MNT=
while [ $# -gt 0 ]; do case "$1" in
  -m) MEM=$2; shift 2;;
  -c) CPUS=$2; shift 2;;
  --disk) DISK_IMG=${2%%:*}; DISK_MNT=${2#*:}; shift 2
          [ -n "$DISK_IMG" ] && [ "${DISK_MNT#/}" != "$DISK_MNT" ] || { echo "run-vm: --disk IMG:/abs/dir" >&2; exit 2; };;
  --) shift; break;;
  -*) echo "run-vm: unknown option $1" >&2; exit 2;;
  *) break;;
esac; done
[ $# -gt 0 ] || { grep -m1 '^# usage:' "$0" >&2; exit 2; }

INITRD=$CACHE/initramfs-$KVER.cpio.gz
if [ ! -f "$INITRD" ] || [ "$HERE/init" -nt "$INITRD" ] || [ "$HERE/mkinitramfs.sh" -nt "$INITRD" ]; then
  "$HERE/mkinitramfs.sh" "$KROOT" "$KVER" "$INITRD" >&2
fi
# the uncompressed ELF boots through PVH: skips ~3.5 s of xz decompression under TCG
KERNEL=$KROOT/boot/vmlinux-$KVER
[ -f "$KERNEL" ] || KERNEL=$KROOT/boot/vmlinuz-$KVER

if [ -n "${VMT_SHARE:-}" ]; then SHARE=$(mkdir -p "$VMT_SHARE" && cd "$VMT_SHARE" && pwd); KEEP_SHARE=1
else SHARE=$(mktemp -d -t vmt.XXXXXX); KEEP_SHARE=; fi
cleanup() { [ -n "$KEEP_SHARE" ] || rm -rf "$SHARE"; }
trap cleanup EXIT

# the guest command: same cwd, same environment (minus host-session variables), same argv
{ echo "#!/bin/bash"
  export -p | grep -vE '^declare -x (HOME|TERM|SHLVL|PWD|OLDPWD|_|SSH_[A-Z_]*|DISPLAY|TMUX[A-Z_]*)='
  echo "export HOME=/root FAULTD_TEST_VM=1"
  printf 'cd %q || exit 126\n' "$PWD"
  printf 'exec'; printf ' %q' "$@"; echo
} > "$SHARE/cmd.sh"
chmod +x "$SHARE/cmd.sh"

case "${ACCEL:-tcg}" in
  kvm) ACC=(-accel kvm -cpu host,-arch-capabilities);;
  *) ACC=(-accel tcg,thread=multi -cpu max);;
esac
QEMU=(qemu-system-x86_64 "${ACC[@]}" -smp "$CPUS" -m "$MEM" -nodefaults -display none -no-reboot
  -serial stdio -monitor none -device isa-debug-exit,iobase=0xf4,iosize=0x04
  -kernel "$KERNEL" -initrd "$INITRD"
  -fsdev local,id=hostroot,path=/,security_model=none,readonly=on,multidevs=remap
  -device virtio-9p-pci,fsdev=hostroot,mount_tag=hostroot
  -fsdev local,id=share,path="$SHARE",security_model=none,multidevs=remap
  -device virtio-9p-pci,fsdev=share,mount_tag=share)
APPEND="console=ttyS0 panic=-1 quiet vmt.cgroup=${VMT_CGROUP:-v2} vmt.cmd=$SHARE/cmd.sh vmt.share=$SHARE"
APPEND+=" vmt.modules=$KROOT/lib/modules/$KVER"
if [ -n "$DISK_IMG" ]; then
  if [ ! -f "$DISK_IMG" ]; then
    mkdir -p "$(dirname "$DISK_IMG")"; truncate -s 4G "$DISK_IMG"; mkfs.ext4 -q -F "$DISK_IMG"
  fi
  QEMU+=(-drive "file=$DISK_IMG,if=virtio,format=raw,cache=unsafe")
  APPEND+=" vmt.disk=$DISK_MNT"
fi

# the console is also kept in the share dir: "VMTEST_EXIT=" there proves the guest itself reported
# the status (qemu's own errors exit 1, which would otherwise decode as guest status 0)
TIMEOUT=${VMT_TIMEOUT:-900}
START=$SECONDS
set +e
timeout --foreground -k 5 "$TIMEOUT" "${QEMU[@]}" -append "$APPEND" </dev/null | tee "$SHARE/console.log"
rc=${PIPESTATUS[0]}
set -e
if [ "$rc" -eq 124 ] || { [ "$rc" -eq 137 ] && [ $((SECONDS - START)) -ge "$TIMEOUT" ]; }; then
  echo "run-vm: timed out after ${TIMEOUT}s (VMT_TIMEOUT)" >&2; exit 124
fi
if [ "$rc" -ne 0 ] && [ $((rc & 1)) -eq 1 ] && [ "$rc" -lt 256 ]; then
  code=$(( (rc - 1) / 2 ))
  if tr -d '\r' < "$SHARE/console.log" | grep -aqx "VMTEST_EXIT=$code"; then exit $code; fi
  echo "run-vm: qemu failed (rc=$rc) before the guest reported an exit status" >&2; exit 125
fi
echo "run-vm: guest did not report an exit status (qemu rc=$rc: reset, panic or poweroff)" >&2
exit 125
