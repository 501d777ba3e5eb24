#!/bin/sh
# Lays out the container image's whole filesystem in DIR: the agent-tracer binary BINARY at
# /usr/local/bin/agent-tracer (debug information stripped) and exactly the shared libraries it
# links, each at the path its loader looks for it (as ldd resolves them on the building
# machine), so the image can start FROM scratch. A static binary gets no libraries.
#
# The one recipe for the image's contents: deploy/Dockerfile's build stage runs it on the binary
# it compiled; with a binary built on the host it fills the build context for
# `--build-arg ROOTFS=prebuilt` (deploy/README.md), which is how tests/e2e_image.rs builds it.
set -eu
if [ "$#" -ne 2 ]; then
  echo "usage: $0 BINARY DIR" >&2
  exit 2
fi
bin=$1
root=$2
if ldd "$bin" 2>/dev/null | grep -q 'not found'; then
  echo "$0: $bin links libraries this machine lacks:" >&2
  ldd "$bin" >&2
  exit 1
fi
mkdir -p "$root/usr/local/bin"
objcopy --strip-debug "$bin" "$root/usr/local/bin/agent-tracer"
# ldd prints `libc.so.6 => /lib/x86_64-linux-gnu/libc.so.6 (0x...)` per library and
# `/lib64/ld-linux-x86-64.so.2 (0x...)` for the loader; the vDSO has no file. It fails on a
# static binary: then there is nothing to copy.
libs=$(ldd "$bin" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3; next } $1 ~ /^\// { print $1 }') || true
for lib in $libs; do
  mkdir -p "$root$(dirname "$lib")"
  # -L: the file a symlink such as /lib64/ld-linux-x86-64.so.2 names, under the link's path.
  cp -L "$lib" "$root$lib"
done
