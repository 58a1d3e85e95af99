#!/bin/sh
# Lays out faultd's complete runtime filesystem under DEST. The Dockerfile runs it in a
# debian:bookworm-slim stage and copies DEST into an empty (`scratch`) image; the deploy tests run
# the same script on a Debian 12 host to list and measure the image without a container engine.
#
#   assemble-rootfs.sh FAULTD_BINARY DEST [BYTEMAN_DIR]
#
# DEST gets:
#   /usr/local/bin/faultd                the daemon
#   /usr/local/bin/chaos-daemon          -> faultd (the Chaos Mesh chart runs this path)
#   /lib*/...                            every shared library ldd reports for faultd, at the path
#                                        the loader asks for, plus the ELF interpreter
#   /etc/passwd, /etc/group              root only
#   /run/{containerd,k3s,crio,docker.sock,netns} -> /host-run/...   see below
#   /var/run -> /run, /tmp (1777), /var/lib/faultd (journal mount point)
#   /opt/faultd/byteman/                 with BYTEMAN_DIR: its *.jar and licence files (JVMChaos;
#                                        faultd's --byteman-dir default), nothing else of Java
#
# The /run links let faultd's runtime-socket discovery (which probes /run/containerd/...,
# /run/k3s/..., /var/run/crio/..., /var/run/docker.sock) find the host's sockets when the host's
# /run is mounted at /host-run, as the manifests in deploy/ do; /run/netns lets `faultd ctl doctor`
# see the host's named network namespaces. Where /host-run is the socket's own directory (the
# Chaos Mesh chart), the links dangle and faultd finds /host-run/<socket> instead.
set -eu
if [ $# -ne 2 ] && [ $# -ne 3 ]; then
  echo "usage: $0 FAULTD_BINARY DEST [BYTEMAN_DIR]" >&2
  exit 64
fi
bin=$1
dest=$2
byteman=${3:-}
[ -x "$bin" ] || { echo "assemble-rootfs: $bin is not an executable file" >&2; exit 1; }

mkdir -p "$dest/usr/local/bin" "$dest/etc" "$dest/run" "$dest/var/lib/faultd" "$dest/tmp"
chmod 1777 "$dest/tmp"
cp "$bin" "$dest/usr/local/bin/faultd"
chmod 0755 "$dest/usr/local/bin/faultd"
ln -sfn faultd "$dest/usr/local/bin/chaos-daemon"

# Shared libraries: "name => /path (addr)" lines and the interpreter's "/path (addr)" line.
# A "not found" dependency is an error: the image would not start.
libs=$(ldd "$bin" | awk '
  /not found/ { print "MISSING:" $1; next }
  $2 == "=>" && $3 ~ /^\// { print $3; next }
  $1 ~ /^\// { print $1 }' | sort -u)
for lib in $libs; do
  case $lib in
    MISSING:*) echo "assemble-rootfs: shared library ${lib#MISSING:} not found" >&2; exit 1 ;;
  esac
  mkdir -p "$dest$(dirname "$lib")"
  cp -L "$lib" "$dest$lib"
  chmod 0644 "$dest$lib"
done
chmod 0755 "$dest"/lib64/ld-linux-*.so.* 2>/dev/null || true

printf 'root:x:0:0:root:/root:/usr/sbin/nologin\n' > "$dest/etc/passwd"
printf 'root:x:0:\n' > "$dest/etc/group"

ln -sfn /host-run/containerd "$dest/run/containerd"
ln -sfn /host-run/k3s "$dest/run/k3s"
ln -sfn /host-run/crio "$dest/run/crio"
ln -sfn /host-run/docker.sock "$dest/run/docker.sock"
ln -sfn /host-run/netns "$dest/run/netns"
mkdir -p "$dest/var"
ln -sfn /run "$dest/var/run"

if [ -n "$byteman" ]; then
  [ -f "$byteman/byteman.jar" ] || { echo "assemble-rootfs: $byteman has no byteman.jar" >&2; exit 1; }
  mkdir -p "$dest/opt/faultd/byteman"
  for f in "$byteman"/*.jar "$byteman"/LICENSE* "$byteman"/COPYING*; do
    [ -f "$f" ] || continue
    cp "$f" "$dest/opt/faultd/byteman/"
    chmod 0644 "$dest/opt/faultd/byteman/$(basename "$f")"
  done
fi
