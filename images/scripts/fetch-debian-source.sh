#!/bin/sh
# Fetch a Debian source package's upstream tarball (its .orig.tar.*) and unpack it.
# apt verifies the download against the signed archive index, so no sha256 is needed here.
# usage: fetch-debian-source.sh PACKAGE DEST
set -eu
pkg="$1"; dest="$2"
# Mirror the image's binary sources as deb-src, in both the one-line and the deb822 formats.
if [ -f /etc/apt/sources.list ]; then
  sed -n 's/^deb /deb-src /p' /etc/apt/sources.list > /etc/apt/sources.list.d/asanlab-src.list
fi
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  sed 's/^Types: deb$/Types: deb deb-src/' "$f" > "$f.tmp" && mv "$f.tmp" "$f"
done
apt-get update
mkdir -p /usr/src/debian-source && cd /usr/src/debian-source
if ! apt-get source --download-only "$pkg"; then
  version=$(apt-cache showsrc "$pkg" 2>/dev/null | sed -n 's/^Version: //p' | head -n 1)
  if [ -z "$version" ]; then
    echo "asanlab: Debian's index for this base image has no source package $pkg (php.source.debian)" >&2
  else
    # Seen on trixie: the index named php8.4 8.4.27-1~deb13u1 for days while its files were not in the pool yet.
    echo "asanlab: Debian's index names $pkg $version, but the mirror did not serve its files (apt's error" \
         "above names the missing one): the index and the pool can disagree for days after an upload." \
         "Build from a PHP release instead: php.version \"X.Y.Z\" without php.source (php.net's tarball, or" \
         "ASANLAB_PHP_MIRROR), or try again later." >&2
  fi
  exit 1
fi
orig=$(ls ./*.orig.tar.* | grep -v '\.asc$' | head -n 1)
[ -n "$orig" ] || { echo "asanlab: no .orig tarball in source package $pkg" >&2; exit 1; }
mkdir -p "$dest"
tar -xf "$orig" -C "$dest" --strip-components=1
cd / && rm -rf /usr/src/debian-source /var/lib/apt/lists/*
