#!/bin/sh
# Make a Debian base image locally, for machines that cannot pull from a registry:
# debootstrap a minimal root file system and import it with the official image's name, so that
# recipes saying `base_image: debian:bookworm` build unchanged here and elsewhere.
# usage: images/make-base-image.sh [SUITE] [IMAGE]   (defaults: bookworm debian:SUITE; needs root)
set -eu
suite="${1:-bookworm}"
image="${2:-debian:$suite}"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
if docker image inspect "$image" >/dev/null 2>&1; then
  echo "$image already exists"
  exit 0
fi
command -v debootstrap >/dev/null || { echo "needs debootstrap (apt-get install debootstrap)" >&2; exit 3; }
root=$(mktemp -d /var/tmp/asanlab-rootfs.XXXXXX)
trap 'rm -rf "$root"' EXIT
debootstrap --variant=minbase "$suite" "$root" "$mirror"
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
tar -C "$root" -c . | docker import -c 'CMD ["bash"]' - "$image"
echo "made $image"
