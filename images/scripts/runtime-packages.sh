#!/bin/sh
# Print the Debian packages that provide the shared libraries the given binaries need,
# so the runtime stage installs exactly those and none of the toolchain.
# usage: runtime-packages.sh PATH... (folders are searched for bin/* and *.so files)
set -eu
files=$(for p in "$@"; do
  if [ -d "$p" ]; then find "$p" -type f \( -name '*.so' -o -path '*/bin/*' \); else echo "$p"; fi
done)
libs=$(for f in $files; do
  ldd "$f" 2>/dev/null | awk '/=> \// { print $3 }'
done | sort -u)
for lib in $libs; do
  real=$(readlink -f "$lib")
  dpkg -S "$lib" 2>/dev/null || dpkg -S "$real" 2>/dev/null || true
done | cut -d: -f1 | sort -u | tr '\n' ' '
echo
