#!/usr/bin/env python3
"""Extract the uncompressed ELF vmlinux from a Debian bzImage (xz or gzip payload).

qemu boots the ELF directly through the PVH entry point (CONFIG_PVH=y), which skips ~3.5 s of
in-guest decompression per boot under TCG.

usage: extract-vmlinux.py VMLINUZ OUT
"""
import lzma
import os
import sys
import zlib


def candidates(data):
    decoders = [
        (b"\xfd7zXZ\x00", lambda: lzma.LZMADecompressor(format=lzma.FORMAT_XZ)),
        (b"\x1f\x8b\x08", lambda: zlib.decompressobj(16 + zlib.MAX_WBITS)),
    ]
    for magic, make in decoders:
        pos = data.find(magic)
        while pos != -1:
            try:
                yield make().decompress(data[pos:])
            except (lzma.LZMAError, zlib.error, EOFError):
                pass
            pos = data.find(magic, pos + 1)


def main():
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    src, out = sys.argv[1], sys.argv[2]
    with open(src, "rb") as f:
        data = f.read()
    for payload in candidates(data):
        if payload[:4] == b"\x7fELF":
            tmp = f"{out}.tmp.{os.getpid()}"
            with open(tmp, "wb") as f:
                f.write(payload)
            os.replace(tmp, out)
            print(f"{out}: {len(payload)} bytes")
            return
    sys.exit(f"{src}: no ELF payload found (lz4/zstd kernels: boot the bzImage as is)")


if __name__ == "__main__":
    main()
