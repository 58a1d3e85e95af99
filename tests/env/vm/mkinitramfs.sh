#!/usr/bin/env bash
# Build the test VM's initramfs: busybox-static + ./init + the kernel modules the tests need
# (dependencies resolved with modprobe --show-depends, loaded in that order by init).
# usage: mkinitramfs.sh KROOT KVER OUT.cpio.gz
#   KROOT: where the linux-image .deb was extracted (contains lib/modules/KVER, with modules.dep)
# env: MODS / DISK_MODS override the module lists.
#   MODS      loaded by init at every boot: what booting needs plus the qdiscs/veth every network
#             test uses (each insmod costs ~60 ms under TCG, so keep this short)
#   DISK_MODS loaded only when a --disk is attached
# Every other module of the kernel (nf_tables, ip_set, bridge, dummy, ifb, cls_*, ...) is loaded on
# demand: init bind-mounts the full module tree and points the kernel's module loader at the host
# root's modprobe, so e.g. `nft add table` or `ip link add type dummy` autoload as on a real node.
# needs: busybox-static, kmod, cpio, gzip
set -euo pipefail
[ $# -eq 3 ] || { sed -n '2,5s/^# \{0,1\}//p' "$0" >&2; exit 2; }
KROOT=$(realpath "$1"); KVER=$2; OUT=$3
HERE=$(cd "$(dirname "$0")" && pwd)
MODS=${MODS:-"virtio_pci 9pnet_virtio 9p overlay sch_netem sch_prio sch_tbf sch_htb sch_sfq sch_fq_codel veth"}
DISK_MODS=${DISK_MODS:-"virtio_blk ext4"}
[ -f "$KROOT/lib/modules/$KVER/modules.dep" ] || depmod -b "$KROOT" "$KVER"
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
mkdir -p "$W"/{bin,sbin,etc,dev,proc,sys,tmp,run,newroot,lower,upper}
cp /bin/busybox "$W/bin/busybox"
for a in $(/bin/busybox --list); do [ -e "$W/bin/$a" ] || ln -s busybox "$W/bin/$a"; done
# "insmod /path" lines in load order; built-ins ("builtin x") are skipped, unknown names warned
modlist() { # MODULES... -> module paths relative to /, copied into the initramfs
  for m in "$@"; do
    modprobe -d "$KROOT" -S "$KVER" --show-depends "$m" 2>/dev/null || echo "mkinitramfs: WARN no module $m" >&2
  done | awk '$1 == "insmod" && !seen[$2]++ { print $2 }' | while read -r p; do
    rel=${p#"$KROOT"/}; mkdir -p "$W/$(dirname "$rel")"; cp "$p" "$W/$rel"; echo "/$rel"
  done
}
# shellcheck disable=SC2086
modlist $MODS > "$W/etc/modules.load"
# shellcheck disable=SC2086
modlist $DISK_MODS > "$W/etc/modules.disk"
cp "$HERE/init" "$W/init"; chmod +x "$W/init"
mkdir -p "$(dirname "$OUT")"
(cd "$W" && find . -print0 | cpio --null -o -H newc --quiet | gzip -1) > "$OUT.tmp.$$"
mv -f "$OUT.tmp.$$" "$OUT"
echo "initramfs: $OUT ($(du -h "$OUT" | cut -f1), $(cat "$W"/etc/modules.* | wc -l) modules)"
