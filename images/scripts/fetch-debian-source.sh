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
apt-get source --download-only "$pkg"
orig=$(ls ./*.orig.tar.* | grep -v '\.asc$' | head -n 1)
[ -n "$orig" ] || { echo "asanlab: no .orig tarball in source package $pkg" >&2; exit 1; }
mkdir -p "$dest"
tar -xf "$orig" -C "$dest" --strip-components=1
cd / && rm -rf /usr/src/debian-source /var/lib/apt/lists/*
