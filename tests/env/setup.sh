#!/usr/bin/env bash
# Prepare the integration-test environment (Debian 12, root). Idempotent: a no-op in ~1 s when
# everything is present. Produces, in tests/env/cache/ (git-ignored):
#   kernel/KVER, kernel/root/      Debian's stock linux-image-<KVER> (apt-get download + dpkg-deb -x:
#                                  NOT installed, so no initramfs-tools/systemd upgrade), with
#                                  modules.dep and boot/vmlinux-<KVER> (uncompressed, PVH boot)
#   initramfs-<KVER>.cpio.gz       busybox + tests/env/vm/init + qdisc/netfilter/veth/... modules
#   testbox.tar                    registry-free busybox OCI image (docker.io/library/testbox:latest)
#                                  with /bin/clockreport (tests/env/ctr/clockreport.c, gcc -static)
#   clockreport                    the same static binary, for the VM tier and the bench
#   ioprobe                        the IOChaos test target (tests/env/ctr/ioprobe.c), also /bin/ioprobe
#   byteman/byteman.jar            Byteman's self-contained agent jar (Debian's libbyteman-java: apt-get
#                                  download + dpkg-deb -x, NOT installed), for faultd --byteman-dir
#   java/Target.class              the JVMChaos test target (tests/env/java/Target.java, JDK 17 javac)
# and installs the apt packages the tiers need (only the missing ones; note: qemu-system-x86
# replaces a preinstalled bookworm-backports qemu-utils on some machines, which is fine). The
# packaged services (containerd, docker) are not started by the install: the tiers start private
# ones (tests/env/ctr, tests/env/docker), and a stock dockerd would rewrite the host's iptables.
# env: TESTENV_CACHE (default tests/env/cache)
set -euo pipefail
ENV_DIR=$(cd "$(dirname "$0")" && pwd)
CACHE=${TESTENV_CACHE:-$ENV_DIR/cache}
mkdir -p "$CACHE"; CACHE=$(cd "$CACHE" && pwd)
export DEBIAN_FRONTEND=noninteractive
T0=$SECONDS
log() { echo "setup: [$((SECONDS - T0))s] $*"; }

exec 8>"$CACHE/.setup.lock"
flock -n 8 || { log "waiting for another setup.sh"; flock 8; }

PACKAGES=(qemu-system-x86 busybox-static kmod cpio containerd runc stress-ng nftables iputils-ping
          iproute2 e2fsprogs python3 util-linux coreutils gzip curl openssl docker.io gcc libc6-dev
          openjdk-17-jdk-headless)
APT_UPDATED=
apt_update() { [ -n "$APT_UPDATED" ] || { apt-get update -qq; APT_UPDATED=1; }; }

missing=()
for p in "${PACKAGES[@]}"; do
  [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null)" = "install ok installed" ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || { echo "setup: missing packages (${missing[*]}); run as root" >&2; exit 1; }
  log "installing ${missing[*]}"
  apt_update
  # no service may start during the install (invoke-rc.d / deb-systemd-invoke ask policy-rc.d):
  # a temporary "deny all" policy unless the machine already has one (container images do)
  POLICY=/usr/sbin/policy-rc.d
  if [ ! -e "$POLICY" ]; then
    printf '#!/bin/sh\n# tests/env/setup.sh: no service starts during its apt-get install\nexit 101\n' > "$POLICY"
    chmod 755 "$POLICY"
    trap 'rm -f "$POLICY"' EXIT
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  if [ "$(trap -p EXIT)" ]; then rm -f "$POLICY"; trap - EXIT; fi
  log "apt done"
else
  log "apt packages present"
fi

# --- kernel: the stock generic flavour (has sch_netem/prio, 9p, /dev/port, PVH) ---------------
KDIR=$CACHE/kernel
KVER=$(cat "$KDIR/KVER" 2>/dev/null || true)
if [ -n "$KVER" ] && [ -f "$KDIR/root/boot/vmlinux-$KVER" ] && [ -f "$KDIR/root/lib/modules/$KVER/modules.dep" ]; then
  log "kernel $KVER cached"
else
  resolve() { apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" { print $2; exit }'; }
  PKG=$(resolve || true)
  [ -n "$PKG" ] || { apt_update; PKG=$(resolve); }
  KVER=${PKG#linux-image-}
  log "fetching $PKG"
  rm -rf "$KDIR.tmp"; mkdir -p "$KDIR.tmp"
  (cd "$KDIR.tmp" && apt-get download -qq -o APT::Sandbox::User=root "$PKG") || {
    apt_update; (cd "$KDIR.tmp" && apt-get download -qq -o APT::Sandbox::User=root "$PKG"); }
  dpkg-deb -x "$KDIR.tmp/${PKG}"_*.deb "$KDIR.tmp/root"
  rm -f "$KDIR.tmp/${PKG}"_*.deb
  depmod -b "$KDIR.tmp/root" "$KVER"
  "$ENV_DIR/vm/extract-vmlinux.py" "$KDIR.tmp/root/boot/vmlinuz-$KVER" "$KDIR.tmp/root/boot/vmlinux-$KVER"
  echo "$KVER" > "$KDIR.tmp/KVER"
  rm -rf "$KDIR"; mv "$KDIR.tmp" "$KDIR"
  log "kernel $KVER extracted"
fi

INITRD=$CACHE/initramfs-$KVER.cpio.gz
if [ ! -f "$INITRD" ] || [ "$ENV_DIR/vm/init" -nt "$INITRD" ] || [ "$ENV_DIR/vm/mkinitramfs.sh" -nt "$INITRD" ]; then
  "$ENV_DIR/vm/mkinitramfs.sh" "$KDIR/root" "$KVER" "$INITRD"
else
  log "initramfs cached"
fi

# --- test image ---------------------------------------------------------------------------------
IMG=$CACHE/testbox.tar
if [ ! -f "$IMG" ] || [ "$ENV_DIR/ctr/mk-oci-image.py" -nt "$IMG" ] || [ /bin/busybox -nt "$IMG" ] ||
   [ "$ENV_DIR/ctr/clockreport.c" -nt "$IMG" ] || [ ! -x "$CACHE/clockreport" ] ||
   [ "$ENV_DIR/ctr/ioprobe.c" -nt "$IMG" ] || [ ! -x "$CACHE/ioprobe" ]; then
  "$ENV_DIR/ctr/mk-oci-image.py" "$IMG.tmp" docker.io/library/testbox:latest
  mv -f "$IMG.tmp" "$IMG"
else
  log "test image cached"
fi

# --- JVMChaos: Byteman's agent jar and the Java test target --------------------------------------
BM=$CACHE/byteman
if [ -s "$BM/byteman.jar" ]; then
  log "byteman cached"
else
  log "fetching libbyteman-java"
  rm -rf "$BM.tmp"; mkdir -p "$BM.tmp"
  (cd "$BM.tmp" && apt-get download -qq -o APT::Sandbox::User=root libbyteman-java) || {
    apt_update; (cd "$BM.tmp" && apt-get download -qq -o APT::Sandbox::User=root libbyteman-java); }
  BMVER=$(dpkg-deb -f "$BM.tmp"/libbyteman-java_*.deb Version)
  dpkg-deb -x "$BM.tmp"/libbyteman-java_*.deb "$BM.tmp/root"
  # byteman.jar is the shaded agent (ASM and java_cup inside, Agent-Class in its manifest)
  JAR=$(find "$BM.tmp/root/usr/share/java" -name byteman.jar | head -n1)
  [ -n "$JAR" ] || { echo "setup: no byteman.jar in libbyteman-java" >&2; exit 1; }
  mkdir -p "$BM"
  cp -L "$JAR" "$BM/byteman.jar.tmp"; mv -f "$BM/byteman.jar.tmp" "$BM/byteman.jar"
  rm -rf "$BM.tmp"
  log "byteman $BMVER extracted"
fi

JDK=/usr/lib/jvm/java-17-openjdk-amd64
JCLS=$CACHE/java
if [ ! -f "$JCLS/Target.class" ] || [ "$ENV_DIR/java/Target.java" -nt "$JCLS/Target.class" ]; then
  rm -rf "$JCLS.tmp"; mkdir -p "$JCLS.tmp"
  "$JDK/bin/javac" -d "$JCLS.tmp" "$ENV_DIR/java/Target.java"
  rm -rf "$JCLS"; mv "$JCLS.tmp" "$JCLS"
  log "java test target compiled"
else
  log "java test target cached"
fi
log "done (kernel $KVER)"
